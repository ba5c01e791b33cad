//! The one-word claim (`connector/claim.rs`), as the cleanup and the restart
//! requests use it.

use super::harness::*;
use crate::connector::claim::{self, Claim};
use crate::sync::{AtomicU64, Ordering};
use loom::sync::atomic::AtomicBool;
use loom::sync::{Condvar, Mutex};
use loom::thread;

/// A claim word and which claimers (by token) are alive.
struct Claimers {
    word: AtomicU64,
    alive: [AtomicBool; 3],
}

impl Claimers {
    fn new(word: u64) -> Claimers {
        Claimers {
            word: AtomicU64::new(word),
            alive: std::array::from_fn(|_| AtomicBool::new(true)),
        }
    }

    /// Token of claimer `i` (nonzero).
    fn token(i: usize) -> u64 {
        0x1000 + i as u64
    }

    fn is_alive(&self, token: u64) -> bool {
        self.alive[(token - 0x1000) as usize].load(Ordering::Acquire)
    }

    fn try_claim(&self, i: usize) -> Claim {
        claim::try_claim(&self.word, Self::token(i), |t| self.is_alive(t))
    }
}

/// Three live processes claim one job: exactly one wins, the others see it.
#[test]
fn claim_exactly_one() {
    check(3, || {
        let c = Arc::new(Claimers::new(0));
        let handles: Vec<_> = (0..3)
            .map(|i| {
                let c = c.clone();
                thread::spawn(move || c.try_claim(i))
            })
            .collect();
        let results: Vec<Claim> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let winners: Vec<usize> = (0..3)
            .filter(|&i| results[i] == Claim::Claimed { previous: 0 })
            .collect();
        assert_eq!(winners.len(), 1, "{results:?}");
        let winner = Claimers::token(winners[0]);
        for r in &results {
            assert!(
                *r == Claim::Claimed { previous: 0 } || *r == Claim::Busy(winner),
                "{results:?}"
            );
        }
        assert_eq!(c.word.load(Ordering::Relaxed), winner);
    });
}

/// Claimer 0 holds the claim and dies (without releasing) while claimers 1
/// and 2 try to claim; a claimer that finds it alive waits for the death
/// notice (a loom condvar, not a spin, so the model stays finite) and tries
/// again. Exactly one takes it over from the dead one, the other then sees
/// the new, live claimer.
#[test]
fn claim_takeover_after_death() {
    check(3, || {
        let c = Arc::new(Claimers::new(Claimers::token(0)));
        let notice = Arc::new((Mutex::new(false), Condvar::new()));
        let dying = {
            let (c, notice) = (c.clone(), notice.clone());
            thread::spawn(move || {
                c.alive[0].store(false, Ordering::Release);
                *notice.0.lock().unwrap() = true;
                notice.1.notify_all();
            })
        };
        let handles: Vec<_> = (1..3)
            .map(|i| {
                let (c, notice) = (c.clone(), notice.clone());
                thread::spawn(move || loop {
                    match c.try_claim(i) {
                        Claim::Busy(t) if t == Claimers::token(0) => {
                            let mut dead = notice.0.lock().unwrap();
                            while !*dead {
                                dead = notice.1.wait(dead).unwrap();
                            }
                        }
                        other => return other,
                    }
                })
            })
            .collect();
        dying.join().unwrap();
        let results: Vec<Claim> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let dead = Claimers::token(0);
        let winners: Vec<usize> = (0..2)
            .filter(|&k| results[k] == Claim::Claimed { previous: dead })
            .collect();
        assert_eq!(winners.len(), 1, "{results:?}");
        let winner = Claimers::token(winners[0] + 1);
        let loser = results[1 - winners[0]];
        assert_eq!(loser, Claim::Busy(winner), "{results:?}");
        assert_eq!(c.word.load(Ordering::Relaxed), winner);
    });
}

/// A claimer taken for dead releases late, racing the one taking over: the
/// late release never clears the new claim.
#[test]
fn claim_late_release_keeps_takeover() {
    check(3, || {
        let c = Arc::new(Claimers::new(Claimers::token(0)));
        c.alive[0].store(false, Ordering::Relaxed);
        let late = {
            let c = c.clone();
            thread::spawn(move || claim::release(&c.word, Claimers::token(0)))
        };
        let taker = {
            let c = c.clone();
            thread::spawn(move || c.try_claim(1))
        };
        late.join().unwrap();
        let got = taker.join().unwrap();
        assert!(
            got == Claim::Claimed { previous: 0 }
                || got
                    == Claim::Claimed {
                        previous: Claimers::token(0)
                    },
            "{got:?}"
        );
        assert_eq!(c.word.load(Ordering::Relaxed), Claimers::token(1));
    });
}
