//! The claim protocol: one atomic word that names the one process doing a job
//! (cleaning up a dead member; later, handling a restart request), and that
//! can be taken over when that process dies.
//!
//! The word holds 0 (unclaimed) or a process token (PID and start time, see
//! `identity.rs`). A claim is a single CAS from the value seen to our token,
//! allowed only if the value seen is 0 or names a dead process. Two claimers
//! that both see a dead token race on the same CAS, and only one wins. A
//! claimer that dies leaves its token, which the next claimer sees as dead.

use crate::sync::{AtomicU64, Ordering};

/// Result of a claim attempt ([`try_claim`]). Tokens are
/// [`ProcessId::token`](crate::ProcessId::token) values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// We hold the claim; `previous` is the dead claimer we took it from (0: none).
    Claimed {
        /// The token the word held before our CAS: a dead claimer's, or 0.
        previous: u64,
    },
    /// A live process (possibly this one) holds it; the value is its token.
    Busy(u64),
}

/// Try to claim `word` for `me` (nonzero). `is_alive` tells whether a token's
/// process still runs. A word already holding `me` is [`Claim::Busy`]: a
/// claim is not re-entrant.
///
/// ```
/// use cf_core::connector::claim::{release, try_claim, Claim};
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// let word = AtomicU64::new(0);
/// assert_eq!(try_claim(&word, 7, |_| true), Claim::Claimed { previous: 0 });
/// assert_eq!(try_claim(&word, 8, |_| true), Claim::Busy(7));
/// // Token 7's process died: 8 takes the claim over.
/// assert_eq!(try_claim(&word, 8, |t| t != 7), Claim::Claimed { previous: 7 });
/// release(&word, 7); // no effect: 7 no longer holds it
/// assert_eq!(word.load(Ordering::Relaxed), 8);
/// ```
pub fn try_claim(word: &AtomicU64, me: u64, is_alive: impl Fn(u64) -> bool) -> Claim {
    debug_assert!(me != 0);
    loop {
        let seen = word.load(Ordering::Acquire);
        if seen == me || (seen != 0 && is_alive(seen)) {
            return Claim::Busy(seen);
        }
        if word
            .compare_exchange(seen, me, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            return Claim::Claimed { previous: seen };
        }
    }
}

/// Give up a claim we hold (no effect if someone took it over).
pub fn release(word: &AtomicU64, me: u64) {
    let _ = word.compare_exchange(me, 0, Ordering::AcqRel, Ordering::Relaxed);
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn claim_takeover_and_release() {
        let w = AtomicU64::new(0);
        assert_eq!(try_claim(&w, 7, |_| true), Claim::Claimed { previous: 0 });
        assert_eq!(try_claim(&w, 8, |_| true), Claim::Busy(7));
        assert_eq!(try_claim(&w, 7, |_| true), Claim::Busy(7), "no re-entry");
        assert_eq!(try_claim(&w, 8, |t| t != 7), Claim::Claimed { previous: 7 });
        release(&w, 7);
        assert_eq!(w.load(Ordering::Relaxed), 8);
        release(&w, 8);
        assert_eq!(w.load(Ordering::Relaxed), 0);
    }
}
