//! The lock-word protocol: one atomic `u64` per lock table entry.
//!
//! ```text
//!  63      41  40         39     38           37..32        31 .. 0
//! [  epoch  ] [LATCH_W.] [MIXED][HOLDINGS_W.][ holder+1 ] [ connector mask ]
//! ```
//!
//! The word has two modes.
//!
//! * **Fast mode** (`MIXED` clear): the word alone decides. `holder` is the one
//!   connector holding the entry exclusively (0: none); the mask holds one bit per
//!   connector holding it in share mode. Invariants: `holder != 0` implies
//!   `mask == 0`; every named connector has exactly the holding that put it
//!   there; no waiter bit is set (waiters always put the entry in mixed mode).
//!   Acquire and release are one compare-and-swap each ([`try_fast_exclusive`],
//!   [`try_fast_share`], [`try_fast_release_exclusive`],
//!   [`try_fast_release_share`]), which keep the epoch, and touch nothing else.
//! * **Mixed mode** (`MIXED` set): the truth is in the record entries of the
//!   connectors named in the mask (their *interest*); `holder` is the connector
//!   holding the entry's *latch* (0: unlatched). Every change on a mixed entry is
//!   made under the latch by the resource-level path in `entry.rs`, which reads
//!   the named connectors' records to tell a real conflict (same resource) from
//!   false contention (another resource hashed to the same entry). Invariant:
//!   outside a latch, bit `c` is set iff connector `c` has a held record on the
//!   entry. Any request that cannot be settled by one fast CAS latches the entry
//!   ([`try_latch`]); latching a fast-mode word converts it, naming its exclusive
//!   holder in the mask. The last unlatch that leaves the mask empty returns the
//!   entry to fast mode (free: nothing but the epoch).
//!
//! **The epoch** (23 bits) counts the changes of the entry's holdings: it is
//! bumped by every unlatch that changed them (a release, a cleanup's settle,
//! an entry left with no interest) and kept by every other change, so a word
//! never returns to a value it had before a holdings change: a holding
//! waiter's expected value cannot repeat across the change it waits for (no
//! ABA on the high half, which is what a futex compares).
//!
//! **Waiting.** Two classes of sleepers (`futex.rs`): *holding waiters*, whose
//! request conflicts with a holding, and *latch waiters*, waiting for the
//! latch. A holding waiter spins, then sleeps, until the *epoch* changes
//! ([`wait_for_holdings`]): other waiters' looks (latch, same conflict,
//! unlatch) change only the latch field, which it ignores, so K waiters on a
//! held lock sleep until the holder lets go instead of waking each other
//! round and round. Each sleeper announces itself just before it sleeps, with
//! a CAS that sets its class's bit on the very value it saw
//! ([`announce_latch_waiter`]), and sleeps on the high half expecting the
//! value it wrote; so a release that finds no sleeper makes no futex call. An
//! unlatch that changed the holdings ([`Change::Holdings`]) clears both bits
//! and wakes both classes; one that only looked ([`Change::Look`]: a waiter
//! finding the same conflict, a grant, a request giving up) keeps the holding
//! waiters' bit and wakes only latch waiters. A request that changes the
//! holdings *without* the latch (a record freed after its latch wait timed
//! out) pokes a busy latch ([`poke`]: the latched word's epoch moves and the
//! holding waiters wake), and the latch holder's unlatch, seeing its epoch
//! moved ([`unlatch_checked`]), heals the mask and counts as a holdings
//! change; a waiter never announces itself on a fast-mode word (nobody
//! would wake it: it looks again instead). Sleeps are bounded slices (at
//! most `entry::MAX_SLICE`, 100 ms), a backstop for a dead holder only.
//!
//! **Crash windows.** A process can die holding a word in any state: as the
//! fast-mode holder, in the mask, or holding the latch. All are repaired by the
//! recovery protocol (`recovery.rs`), which latches the entry in the dead
//! connector's name (taking over a latch held in that name) and recomputes
//! its bit from its records. The order of word and record writes that makes
//! that possible is described in `entry.rs`.

use crate::ids::ConnectorId;
use crate::sync::{spin_hint, AtomicU64, Ordering};
use std::time::Duration;

pub(crate) const MASK_BITS: u64 = 0xffff_ffff;
pub(crate) const HOLDER_SHIFT: u32 = 32;
pub(crate) const HOLDER_BITS: u64 = 0x3f << HOLDER_SHIFT;
/// A holding waiter sleeps on the entry.
pub(crate) const HOLDING_WAITERS: u64 = 1 << 38;
pub(crate) const MIXED: u64 = 1 << 39;
/// A latch waiter sleeps on the entry.
pub(crate) const LATCH_WAITERS: u64 = 1 << 40;
pub(crate) const WAITER_BITS: u64 = HOLDING_WAITERS | LATCH_WAITERS;
pub(crate) const EPOCH_SHIFT: u32 = 41;
pub(crate) const EPOCH_BITS: u64 = !0 << EPOCH_SHIFT;

/// What an unlatch did to the entry, which decides whom it wakes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// Holdings changed (a record released or freed, a member's state
    /// settled): every sleeper may proceed.
    Holdings,
    /// Only looked (or granted, which frees nothing): holding waiters sleep
    /// on; latch waiters may take the latch.
    Look,
}

/// A decoded lock word: `.0` is the raw value as loaded from the lock table
/// (see the module docs for its fields). The region is untrusted, so any
/// bits may be set: [`Word::is_malformed`] tells a value no protocol step
/// writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Word(pub u64);

impl Word {
    /// Connector mask: share holders (fast mode) or interest (mixed mode).
    #[inline]
    pub fn mask(self) -> u32 {
        (self.0 & MASK_BITS) as u32
    }
    /// Holder field as a connector id: exclusive owner (fast) or latch holder (mixed).
    /// `Some(id)` may be out of range if the region is damaged: callers check it.
    #[inline]
    pub fn holder(self) -> Option<ConnectorId> {
        let h = ((self.0 & HOLDER_BITS) >> HOLDER_SHIFT) as u32;
        h.checked_sub(1).map(ConnectorId::new)
    }
    /// Is the word in mixed mode (the records decide, under the latch)?
    #[inline]
    pub fn is_mixed(self) -> bool {
        self.0 & MIXED != 0
    }
    /// Is either waiter bit set (a holding waiter or a latch waiter may
    /// sleep on the word)?
    #[inline]
    pub fn has_waiters(self) -> bool {
        self.0 & WAITER_BITS != 0
    }
    /// Nothing held, nothing latched (whatever the epoch).
    #[inline]
    pub fn is_free(self) -> bool {
        self.0 & !EPOCH_BITS == 0
    }
    /// Every connector the word names as having an interest in the entry, as
    /// a bit set (bit `c` for connector `c`): the mask, plus the exclusive
    /// holder in fast mode. In a damaged word a bit may be beyond the
    /// region's connectors.
    #[inline]
    pub fn named(self) -> u64 {
        let mut named = self.mask() as u64;
        if !self.is_mixed() {
            if let Some(h) = self.holder() {
                named |= 1u64.checked_shl(h.get()).unwrap_or(0);
            }
        }
        named
    }
    #[inline]
    fn high(self) -> u32 {
        (self.0 >> 32) as u32
    }
    #[inline]
    pub(crate) fn epoch(self) -> u64 {
        self.0 & EPOCH_BITS
    }
    /// A word no protocol step writes (the region is damaged): fast mode with
    /// a waiter bit set, or with both an exclusive holder and share holders.
    pub fn is_malformed(self) -> bool {
        !self.is_mixed() && (self.has_waiters() || (self.0 & HOLDER_BITS != 0 && self.mask() != 0))
    }
}

#[inline]
pub(crate) fn holder_field(id: ConnectorId) -> u64 {
    ((id.get() as u64 + 1) << HOLDER_SHIFT) & HOLDER_BITS
}

#[inline]
pub(crate) fn bit(id: ConnectorId) -> u64 {
    1u64 << id.get()
}

/// The next epoch after that of `w` (wrapping in its 23 bits).
#[inline]
fn next_epoch(w: Word) -> u64 {
    w.epoch().wrapping_add(1 << EPOCH_SHIFT)
}

/// Fast exclusive acquire: free entry to "held exclusively by `me`".
#[inline]
pub(crate) fn try_fast_exclusive(word: &AtomicU64, me: ConnectorId) -> bool {
    let cur = word.load(Ordering::Relaxed);
    cur & !EPOCH_BITS == 0
        && word
            .compare_exchange(
                cur,
                cur | holder_field(me),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok()
}

/// Fast exclusive release: only if the word is exactly "held exclusively by
/// me" (`seen`, as read by [`fast_release_possible`]).
#[inline]
pub(crate) fn try_fast_release_exclusive(word: &AtomicU64, seen: u64) -> bool {
    word.compare_exchange(
        seen,
        seen & EPOCH_BITS,
        Ordering::Release,
        Ordering::Relaxed,
    )
    .is_ok()
}

/// Could a fast release by `me` succeed now? (Fast mode and naming `me` as
/// the exclusive holder, or in the share mask.) Returns the word seen.
#[inline]
pub(crate) fn fast_release_possible(
    word: &AtomicU64,
    me: ConnectorId,
    exclusive: bool,
) -> Option<u64> {
    let w = word.load(Ordering::Relaxed);
    let ok = if exclusive {
        w & !EPOCH_BITS == holder_field(me)
    } else {
        w & MIXED == 0 && w & bit(me) != 0
    };
    ok.then_some(w)
}

/// Fast share acquire: fast mode, no exclusive holder, my bit not yet set.
#[inline]
pub(crate) fn try_fast_share(word: &AtomicU64, me: ConnectorId) -> bool {
    let mut cur = word.load(Ordering::Relaxed);
    loop {
        if cur & (MIXED | HOLDER_BITS | bit(me)) != 0 {
            return false;
        }
        match word.compare_exchange_weak(cur, cur | bit(me), Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return true,
            Err(now) => cur = now,
        }
    }
}

/// Fast share release: fast mode, my bit set, and the epoch of `seen` (the
/// word [`fast_release_possible`] saw before the caller marked its record
/// PENDING). Other connectors' share bits may come and go meanwhile; but a
/// word that went through mixed mode since came back to fast mode only by an
/// unlatch that left it empty, which moved the epoch: my bit, if set again,
/// is then a sibling thread's new holding (set on the fast path once the
/// latched decision had dropped mine), not mine to clear. The caller then
/// releases on the latched path, which recomputes the bit from the records.
/// (Only an epoch that wraps, 2^23 holdings changes while the releaser is
/// preempted between its two loads, could fool this.)
#[inline]
pub(crate) fn try_fast_release_share(word: &AtomicU64, me: ConnectorId, seen: u64) -> bool {
    let mut cur = word.load(Ordering::Relaxed);
    loop {
        if cur & MIXED != 0 || cur & bit(me) == 0 || cur & EPOCH_BITS != seen & EPOCH_BITS {
            return false;
        }
        match word.compare_exchange_weak(cur, cur & !bit(me), Ordering::Release, Ordering::Relaxed)
        {
            Ok(_) => return true,
            Err(now) => cur = now,
        }
    }
}

/// Outcome of one latch attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Latch {
    /// Latched; `named` is the set of connectors the word named (as a bit
    /// set), `epoch` the word's epoch when it was latched.
    Latched { named: u64, epoch: u64 },
    /// Another connector holds the latch; the word as seen.
    Busy { holder: ConnectorId, seen: Word },
}

/// Try once to latch the entry for `me` (converting a fast-mode word).
pub(crate) fn try_latch(word: &AtomicU64, me: ConnectorId) -> Latch {
    let mut cur = word.load(Ordering::Acquire);
    loop {
        let w = Word(cur);
        let new = if w.is_mixed() {
            match w.holder() {
                Some(h) => return Latch::Busy { holder: h, seen: w },
                None => cur | holder_field(me),
            }
        } else {
            // Conversion: the exclusive holder joins the mask. (A fast-mode
            // word has no waiters.)
            w.epoch() | MIXED | holder_field(me) | (w.named() & MASK_BITS)
        };
        match word.compare_exchange(cur, new, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                return Latch::Latched {
                    named: Word(new).mask() as u64,
                    epoch: Word(new).epoch(),
                }
            }
            Err(now) => cur = now,
        }
    }
}

/// Drop the latch, publishing `mask` as the entry's interest (an empty mask
/// returns the entry to fast mode), with the next epoch, and wake whom the
/// `change` concerns (see the module docs). Returns the word as this unlatch
/// left it. (The protocol unlatches through [`unlatch_checked`]; this is
/// the plain step, for the tests of the word.)
#[cfg(all(test, not(loom)))]
pub(crate) fn unlatch(word: &AtomicU64, mask: u32, change: Change) -> u64 {
    unlatch_checked(word, None, mask, change, |m| m)
}

/// [`unlatch`] by a latch holder that latched at epoch `latched`: if the
/// epoch moved meanwhile, a request outside the latch changed the holdings
/// ([`poke`]: a record freed without the latch), so the mask is `recheck`ed
/// (bits of connectors that hold nothing any more are dropped), the unlatch
/// counts as a holdings change (next epoch, every waiter woken), and the word
/// returned carries the latched epoch: a caller that waits on it looks again
/// at once instead of waiting for a change that already happened.
pub(crate) fn unlatch_checked(
    word: &AtomicU64,
    latched: Option<u64>,
    mut mask: u32,
    mut change: Change,
    recheck: impl Fn(u32) -> u32,
) -> u64 {
    let computed = mask;
    let mut last = latched;
    let mut rechecked = false;
    // Acquire: a poke seen here (its epoch) comes with the record stores
    // made before it, which the recheck then reads (attack13).
    let mut cur = word.load(Ordering::Acquire);
    loop {
        if last.is_some_and(|e| Word(cur).epoch() != e) {
            // Every poke seen, not only the first: one may land between a
            // recheck and the CAS, which then fails (attack13).
            last = Some(Word(cur).epoch());
            rechecked = true;
            mask = recheck(computed);
            change = Change::Holdings;
        }
        // An entry left with no interest has nothing anyone could wait for.
        if mask == 0 {
            change = Change::Holdings;
        }
        let keep = match change {
            Change::Holdings => 0,
            Change::Look => cur & HOLDING_WAITERS,
        };
        let body = if mask == 0 {
            0
        } else {
            MIXED | keep | mask as u64
        };
        let epoch = match change {
            Change::Holdings => next_epoch(Word(cur)),
            Change::Look => Word(cur).epoch(),
        };
        let new = epoch | body;
        // Only the latch holder changes a latched word, but a waiter may set
        // its bit (or a poker move the epoch) meanwhile: retry on that.
        match word.compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                let woken = match change {
                    Change::Holdings => cur & WAITER_BITS,
                    Change::Look => cur & LATCH_WAITERS,
                };
                let mut classes = 0;
                if woken & HOLDING_WAITERS != 0 {
                    classes |= crate::lock::futex::HOLDINGS;
                }
                if woken & LATCH_WAITERS != 0 {
                    classes |= crate::lock::futex::LATCH;
                }
                if classes != 0 {
                    crate::lock::futex::wake_high(word, classes);
                }
                return match latched {
                    Some(e) if rechecked => (new & !EPOCH_BITS) | e,
                    _ => new,
                };
            }
            Err(now) => cur = now,
        }
    }
}

/// What a [`poke`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Poke {
    /// The word is latched: its epoch moved, so the latch holder rechecks
    /// at its unlatch ([`unlatch_checked`]), and holding waiters were woken.
    Poked,
    /// The word is not latched (fast, or mixed and free): latch it instead.
    NotLatched,
}

/// A request that changed the holdings of an entry without its latch (a
/// record freed because its latch wait timed out) tells the latch holder:
/// the epoch of the latched word moves (nothing else of it), and the holding
/// waiters are woken (they look again: what they waited for may be gone).
pub(crate) fn poke(word: &AtomicU64) -> Poke {
    let mut cur = word.load(Ordering::Acquire);
    loop {
        let w = Word(cur);
        if !w.is_mixed() || w.holder().is_none() {
            return Poke::NotLatched;
        }
        let new = next_epoch(w) | (cur & !EPOCH_BITS & !HOLDING_WAITERS);
        match word.compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                if cur & HOLDING_WAITERS != 0 {
                    crate::lock::futex::wake_high(word, crate::lock::futex::HOLDINGS);
                }
                return Poke::Poked;
            }
            Err(now) => cur = now,
        }
    }
}

/// How a [`wait_for_holdings`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HoldingsWait {
    /// The holdings changed: look again.
    Changed,
    /// A whole slice passed with nothing changed.
    SliceEnded,
}

/// Wait, as a holding waiter, for the holdings of the entry to change from
/// what they were when `left` (the word our own unlatch left) was written:
/// spin `spins` loads on the epoch, then announce ourselves and sleep at most
/// `slice`. A busy latch (another waiter looking) is waited out as a latch
/// waiter, without looking again at the entry.
///
/// `told`: a word and the value it had when the wait began (the waiter's
/// wait record, `deadlock.rs`); once it differs the slice ends at once. It
/// is read after each announcement and before the sleep: whoever changes it
/// then clears the waiter bits with an RMW on this word and wakes
/// (`deadlock::wake`), so either the read sees the change or the RMW comes
/// after the announcement and the sleep does not last.
pub(crate) fn wait_for_holdings(
    word: &AtomicU64,
    left: u64,
    spins: u32,
    slice: Duration,
    told: Option<(&AtomicU64, u64)>,
) -> HoldingsWait {
    let told = || told.is_some_and(|(w, v)| w.load(Ordering::Acquire) != v);
    let epoch = Word(left).epoch();
    for _ in 0..spins {
        if Word(word.load(Ordering::Relaxed)).epoch() != epoch {
            return HoldingsWait::Changed;
        }
        spin_hint();
    }
    let start = crate::sync::now();
    loop {
        let cur = word.load(Ordering::Acquire);
        let w = Word(cur);
        if w.epoch() != epoch {
            return HoldingsWait::Changed;
        }
        let time_left = slice.saturating_sub(crate::sync::since(start));
        if time_left.is_zero() {
            return HoldingsWait::SliceEnded;
        }
        if !w.is_mixed() {
            // Back in fast mode with the epoch we left (our own step-out
            // found nothing held): no one would wake a waiter announced
            // here (a fast word has no waiter bits): look again (attack12).
            return HoldingsWait::Changed;
        }
        if w.holder().is_some() {
            // Someone looks (or releases): wait for its unlatch.
            if let Some(high) = announce(word, cur, LATCH_WAITERS) {
                if told() {
                    return HoldingsWait::SliceEnded;
                }
                sleep_latch(word, high, time_left);
            }
            continue;
        }
        if let Some(high) = announce(word, cur, HOLDING_WAITERS) {
            if told() {
                return HoldingsWait::SliceEnded;
            }
            sleep_holding(word, high, time_left);
            return if Word(word.load(Ordering::Acquire)).epoch() != epoch {
                HoldingsWait::Changed
            } else {
                HoldingsWait::SliceEnded
            };
        }
    }
}

/// Announce a latch waiter on a word whose latch is busy, as seen.
pub(crate) fn announce_latch_waiter(word: &AtomicU64, seen: Word) -> Option<u32> {
    announce(word, seen.0, LATCH_WAITERS)
}

fn announce(word: &AtomicU64, seen: u64, bit: u64) -> Option<u32> {
    let new = seen | bit;
    match word.compare_exchange(seen, new, Ordering::AcqRel, Ordering::Relaxed) {
        Ok(_) => Some(Word(new).high()),
        Err(_) => None,
    }
}

/// Spin up to `spins` times for the word to differ from `seen`; true if it did.
pub(crate) fn spin_for_change(word: &AtomicU64, seen: u64, spins: u32) -> bool {
    for _ in 0..spins {
        if word.load(Ordering::Relaxed) != seen {
            return true;
        }
        spin_hint();
    }
    false
}

/// Sleep as a holding waiter on the word's high half while it equals
/// `expected_high` (announced by [`wait_for_holdings`]).
fn sleep_holding(word: &AtomicU64, expected_high: u32, slice: Duration) {
    crate::lock::futex::wait_high(word, expected_high, slice, crate::lock::futex::HOLDINGS);
}

/// Sleep as a latch waiter (see [`announce_latch_waiter`]).
pub(crate) fn sleep_latch(word: &AtomicU64, expected_high: u32, slice: Duration) {
    crate::lock::futex::wait_high(word, expected_high, slice, crate::lock::futex::LATCH);
}

/// Read the word.
#[inline]
pub(crate) fn load(word: &AtomicU64) -> Word {
    Word(word.load(Ordering::Acquire))
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn c(n: u32) -> ConnectorId {
        ConnectorId::new(n)
    }

    #[test]
    fn fast_exclusive_round_trip() {
        let w = AtomicU64::new(0);
        assert!(try_fast_exclusive(&w, c(3)));
        assert_eq!(load(&w).holder(), Some(c(3)));
        assert!(!try_fast_exclusive(&w, c(4)));
        assert!(!try_fast_share(&w, c(4)));

        assert_eq!(fast_release_possible(&w, c(4), true), None);
        let seen = fast_release_possible(&w, c(3), true).unwrap();
        assert!(try_fast_release_exclusive(&w, seen));
        assert!(load(&w).is_free());
    }

    #[test]
    fn fast_share_counts_members_once() {
        let w = AtomicU64::new(0);
        assert!(try_fast_share(&w, c(0)));
        assert!(try_fast_share(&w, c(31)));
        assert!(
            !try_fast_share(&w, c(0)),
            "a second share by one member goes slow"
        );
        assert!(!try_fast_exclusive(&w, c(5)));
        assert_eq!(load(&w).mask(), 1 | 1 << 31);
        let seen = w.load(Ordering::Relaxed);
        assert!(try_fast_release_share(&w, c(0), seen));
        assert!(!try_fast_release_share(&w, c(0), seen));
        assert!(try_fast_release_share(&w, c(31), seen));
        assert!(load(&w).is_free());
    }

    #[test]
    fn a_fast_share_release_refuses_a_word_of_another_epoch() {
        // Seen with my bit; since then the word went mixed (my bit dropped
        // by a decision), back to fast mode with the next epoch, and a
        // sibling's fast share set my bit again: not mine to clear.
        let w = AtomicU64::new(0);
        assert!(try_fast_share(&w, c(3)));
        let seen = w.load(Ordering::Relaxed);
        assert!(matches!(try_latch(&w, c(1)), Latch::Latched { .. }));
        unlatch(&w, 0, Change::Look);
        assert!(try_fast_share(&w, c(3)));
        assert!(!try_fast_release_share(&w, c(3), seen));
        assert_eq!(load(&w).mask(), 1 << 3);
    }

    #[test]
    fn latch_converts_and_names_the_exclusive_holder() {
        let w = AtomicU64::new(0);
        assert!(try_fast_exclusive(&w, c(7)));
        assert!(matches!(try_latch(&w, c(2)), Latch::Latched { named, .. } if named == 1 << 7));
        let seen = load(&w);
        assert!(seen.is_mixed());
        assert_eq!(seen.holder(), Some(c(2)));
        // The fast paths are closed while mixed.
        assert_eq!(fast_release_possible(&w, c(7), true), None);
        assert!(!try_fast_share(&w, c(1)));
        assert!(matches!(try_latch(&w, c(1)), Latch::Busy { holder, .. } if holder == c(2)));
        unlatch(&w, 1 << 7, Change::Look);
        assert_eq!(load(&w), Word(MIXED | 1 << 7));
        assert!(matches!(try_latch(&w, c(7)), Latch::Latched { named, .. } if named == 1 << 7));
        unlatch(&w, 0, Change::Holdings);
        assert_eq!(
            load(&w),
            Word(1 << EPOCH_SHIFT),
            "free, one holdings change later"
        );
        // The fast paths keep the epoch.
        assert!(try_fast_exclusive(&w, c(1)));
        assert_eq!(load(&w), Word(1 << EPOCH_SHIFT | holder_field(c(1))));
    }

    #[test]
    fn only_a_holdings_change_moves_the_epoch() {
        let w = AtomicU64::new(0);
        assert!(matches!(try_latch(&w, c(0)), Latch::Latched { .. }));
        let left = unlatch(&w, 1 << 3, Change::Look);
        assert_eq!(Word(left).epoch(), 0, "a look keeps the epoch");
        // A holding waiter whose slice ends with nothing changed.
        assert_eq!(
            wait_for_holdings(&w, left, 10, Duration::from_millis(1), None),
            HoldingsWait::SliceEnded
        );
        assert!(load(&w).0 & HOLDING_WAITERS != 0, "announced");
        // Another waiter looks: the holding waiter's bit and the epoch stay.
        assert!(matches!(try_latch(&w, c(1)), Latch::Latched { .. }));
        unlatch(&w, 1 << 3, Change::Look);
        assert!(load(&w).0 & HOLDING_WAITERS != 0);
        assert_eq!(load(&w).epoch(), 0);
        // A release changes the holdings: the bit goes, the epoch moves.
        assert!(matches!(try_latch(&w, c(3)), Latch::Latched { .. }));
        unlatch(&w, 1 << 3, Change::Holdings);
        assert!(!load(&w).has_waiters());
        assert_eq!(load(&w).epoch(), 1 << EPOCH_SHIFT);
        assert_eq!(
            wait_for_holdings(&w, left, 0, Duration::from_secs(5), None),
            HoldingsWait::Changed
        );
    }
}
