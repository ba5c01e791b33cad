//! Loom models of the lock-word, claim and futex protocols.
//!
//! Run with `scripts/loom.sh` (`--cfg loom`). Every model drives the real
//! functions of `lockword.rs` and `claim.rs`, with loom's atomics (see
//! `sync.rs`) and loom's model of the kernel futex (see `futex.rs`), so loom
//! explores their interleavings and memory orderings exhaustively within a
//! preemption bound. What loom checks on its own: every thread ends (a lost
//! wake-up leaves a thread blocked in the futex model: a deadlock), and the
//! protected data, a `loom::cell::UnsafeCell`, is never accessed by two
//! threads without a happens-before edge between them (mutual exclusion *and*
//! the acquire/release orderings). Each model asserts its outcomes on top.
//!
//! The lock table entry is modelled as in `lock.rs`: a word plus one record
//! per connector (thread `i` is connector `i`, with one record, for a
//! resource fixed per model), written in the same order as `Holder::acquire`,
//! `slow_acquire`, `latch_entry` and `release_slow` write the tag and the
//! word. Decisions on a mixed entry are made under the latch from the records
//! of the connectors the word names.
//!
//! Some models also count, across all executions, how often an interesting
//! path was taken (std atomics, outside the model) and assert it was taken at
//! least once, so a model that silently stopped exercising a path fails.

use crate::claim::{self, Claim};
use crate::lockword::{self, Latch, Word};
use crate::sync::{AtomicU32, AtomicU64, Ordering};
use loom::cell::UnsafeCell;
use loom::sync::atomic::AtomicBool;
use loom::sync::{Condvar, Mutex};
use loom::thread;
use std::sync::atomic::AtomicUsize as StdCounter;
// std's Arc, not loom's: loom's Arc drop needs a live execution, so when loom
// reports a deadlock the unwinding would drop it, panic again and abort the
// whole test binary instead of failing the one model.
use std::sync::Arc;
use std::time::Duration;

/// The futex timeout is ignored by the loom futex model (a sleeper returns
/// only on a wake or a value mismatch), which is what makes a lost wake-up
/// visible as a deadlock.
const SLICE: Duration = Duration::from_millis(20);

/// Run `f` under loom with a preemption bound (`LOOM_MAX_PREEMPTIONS`
/// overrides it), as crossbeam-epoch does.
fn check<F>(preemptions: usize, f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(preemptions);
    }
    let executions = Arc::new(StdCounter::new(0));
    let counted = executions.clone();
    builder.check(move || {
        hit(&counted);
        f()
    });
    // Shown with `--nocapture`: how much the model explored.
    eprintln!(
        "{} executions (preemption bound {:?})",
        hits(&executions),
        builder.preemption_bound
    );
}

/// Count one execution (std atomic: survives across loom executions).
fn hit(counter: &StdCounter) {
    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

fn hits(counter: &StdCounter) -> usize {
    counter.load(std::sync::atomic::Ordering::Relaxed)
}

// ---------------------------------------------------------------------------
// The entry model: word, records, protected data.

/// Record states (the tag of `records.rs`; the resource a connector asks for
/// is fixed per model, in `Entry::resource`).
const FREE: u32 = 0;
const PENDING: u32 = 1;
const HELD_S: u32 = 2;
const HELD_X: u32 = 3;

/// Connectors in the models (thread `i` is connector `i`).
const N: usize = 4;

struct Entry {
    word: AtomicU64,
    /// Record of connector `i` on this entry.
    recs: [AtomicU32; N],
    /// The resource connector `i` asks for (all 0 unless a model needs two
    /// resources hashed to this entry: false contention).
    resource: [u32; N],
    /// The resource the entry protects.
    data: UnsafeCell<u64>,
    /// Exclusive and share holders inside their critical sections. Relaxed
    /// on purpose: they must not add happens-before edges of their own, or
    /// they would hide a missing Acquire/Release in the protocol from loom's
    /// check of `data`.
    inside_x: AtomicU32,
    inside_s: AtomicU32,
    /// Spin (`spin_for_change`) between `unlatch_to_wait` and `sleep`, as
    /// `slow_acquire` does. Under loom the spin yields, which tells loom the
    /// waiter needs another thread to make progress; without it loom also
    /// explores schedules where the holder never runs again (see
    /// `waiters_do_not_wake_each_other_forever`).
    spin_before_sleep: bool,
}

// SAFETY: `data` is only accessed under the lock the models check; loom
// reports any access not ordered by it, which is the point of the models.
unsafe impl Sync for Entry {}

impl Entry {
    fn new(word: u64) -> Entry {
        Entry {
            word: AtomicU64::new(word),
            recs: std::array::from_fn(|_| AtomicU32::new(FREE)),
            resource: [0; N],
            data: UnsafeCell::new(0),
            inside_x: AtomicU32::new(0),
            inside_s: AtomicU32::new(0),
            spin_before_sleep: true,
        }
    }

    /// An entry on which connector `me` already holds the lock exclusively in
    /// fast mode (record HELD, word naming it), as after `Holder::acquire`.
    fn held_fast_by(me: u32) -> Entry {
        let e = Entry::new(lockword::holder_field(me));
        e.recs[me as usize].store(HELD_X, Ordering::Relaxed);
        e
    }

    /// An entry in mixed mode on which connector `me` holds the lock
    /// exclusively (record HELD, bit in the mask, unlatched).
    fn held_mixed_by(me: u32) -> Entry {
        let e = Entry::new(lockword::MIXED | lockword::bit(me));
        e.recs[me as usize].store(HELD_X, Ordering::Relaxed);
        e
    }

    fn word(&self) -> Word {
        lockword::load(&self.word)
    }

    /// Under the latch: the connectors named in `named` whose HELD record
    /// conflicts with a request of `me` (same resource, incompatible mode).
    /// (`decide` in lock.rs.)
    fn conflicts(&self, named: u64, me: u32, exclusive: bool) -> u64 {
        (0..N as u32)
            .filter(|&c| c != me && named & lockword::bit(c) != 0)
            .filter(|&c| self.resource[c as usize] == self.resource[me as usize])
            .filter(|&c| match self.recs[c as usize].load(Ordering::Acquire) {
                HELD_X => true,
                HELD_S => exclusive,
                _ => false,
            })
            .fold(0, |m, c| m | lockword::bit(c))
    }

    /// The exclusive critical section.
    fn exclusive_section(&self) {
        assert_eq!(
            self.inside_x.fetch_add(1, Ordering::Relaxed),
            0,
            "two exclusive holders"
        );
        assert_eq!(
            self.inside_s.load(Ordering::Relaxed),
            0,
            "exclusive beside share"
        );
        // SAFETY: loom checks that no other access to `data` is concurrent.
        self.data.with_mut(|p| unsafe { *p += 1 });
        self.inside_x.fetch_sub(1, Ordering::Relaxed);
    }

    /// The share critical section; returns how many share holders were
    /// inside (this one included) when it entered.
    fn share_section(&self) -> u32 {
        let n = self.inside_s.fetch_add(1, Ordering::Relaxed) + 1;
        assert_eq!(
            self.inside_x.load(Ordering::Relaxed),
            0,
            "share beside exclusive"
        );
        // SAFETY: loom checks that no write to `data` is concurrent.
        self.data.with(|p| unsafe { std::ptr::read(p) });
        self.inside_s.fetch_sub(1, Ordering::Relaxed);
        n
    }

    fn data(&self) -> u64 {
        // SAFETY: called after every thread was joined.
        self.data.with(|p| unsafe { *p })
    }

    /// The entry is back to its idle state: fast mode, nobody named, no
    /// waiters, every record free.
    fn assert_idle(&self) {
        assert_eq!(self.word(), Word(0), "word not back to 0");
        for (i, r) in self.recs.iter().enumerate() {
            assert_eq!(r.load(Ordering::Relaxed), FREE, "record {i} not free");
        }
    }
}

/// How a request or release went.
#[derive(Clone, Copy, Debug, Default)]
struct Trace {
    /// Settled by the fast CAS.
    fast: bool,
    /// Slept after `unlatch_to_wait` (conflict under the latch).
    waited: u32,
    /// Slept after `announce_waiter` (busy latch).
    announced: u32,
    /// Union of the connectors named by the word at each of our latches.
    named: u64,
    /// Per connector: how many times we latched and found it in conflict.
    blocked_by: [u32; N],
}

/// `latch_entry` of lock.rs, without stealing (every latch holder is alive):
/// announce ourselves and sleep on the busy latch. (`latch_entry` spins
/// first; under loom a spin yields to the latch holder, which then always
/// unlatches before we announce, so the spin would hide the announce path.)
fn latch(e: &Entry, me: u32, t: &mut Trace) -> u64 {
    loop {
        match lockword::try_latch(&e.word, me) {
            Latch::Latched { named } => {
                t.named |= named;
                return named;
            }
            Latch::Busy { holder, seen } => {
                assert_ne!(holder, me, "latch busy with ourselves");
                assert!(seen.is_mixed(), "a fast-mode word has no latch");
                if let Some(high) = lockword::announce_waiter(&e.word, seen) {
                    t.announced += 1;
                    lockword::sleep(&e.word, high, SLICE);
                }
            }
        }
    }
}

/// `Holder::acquire` + `slow_acquire` of lock.rs, waiting until granted.
fn acquire(e: &Entry, me: u32, exclusive: bool) -> Trace {
    let mut t = Trace::default();
    let rec = &e.recs[me as usize];
    let held = if exclusive { HELD_X } else { HELD_S };
    // The record before the word (invariant 1 of lock.rs).
    rec.store(held, Ordering::Release);
    let fast = if exclusive {
        lockword::try_fast_exclusive(&e.word, me)
    } else {
        lockword::try_fast_share(&e.word, me)
    };
    if fast {
        t.fast = true;
        return t;
    }
    rec.store(PENDING, Ordering::Release);
    loop {
        let named = latch(e, me, &mut t);
        let conflicts = e.conflicts(named, me, exclusive);
        if conflicts == 0 {
            rec.store(held, Ordering::Release);
            lockword::unlatch(&e.word, (named | lockword::bit(me)) as u32);
            return t;
        }
        for c in 0..N {
            if conflicts & lockword::bit(c as u32) != 0 {
                t.blocked_by[c] += 1;
            }
        }
        let high = lockword::unlatch_to_wait(&e.word, named as u32);
        if e.spin_before_sleep {
            let seen = e.word.load(Ordering::Relaxed);
            if lockword::spin_for_change(&e.word, seen, 1) {
                continue;
            }
        }
        t.waited += 1;
        lockword::sleep(&e.word, high, SLICE);
    }
}

/// `Holder::unlock` (+ `release_slow`) of lock.rs.
fn release(e: &Entry, me: u32, exclusive: bool) -> Trace {
    let mut t = Trace::default();
    let fast = if exclusive {
        lockword::try_fast_release_exclusive(&e.word, me)
    } else {
        lockword::try_fast_release_share(&e.word, me)
    };
    if fast {
        t.fast = true;
    } else {
        let named = latch(e, me, &mut t);
        assert!(
            named & lockword::bit(me) != 0,
            "a holder is named by the word it holds: {named:#x}"
        );
        // The word (or latch) before the record (invariant 1 of lock.rs).
        lockword::unlatch(&e.word, (named & !lockword::bit(me)) as u32);
    }
    e.recs[me as usize].store(FREE, Ordering::Release);
    t
}

/// A thread of the lock models: acquire, critical section, release.
fn lock_once(e: &Entry, me: u32, exclusive: bool) -> (Trace, Trace) {
    let a = acquire(e, me, exclusive);
    if exclusive {
        e.exclusive_section();
    } else {
        e.share_section();
    }
    (a, release(e, me, exclusive))
}

// ---------------------------------------------------------------------------
// a. Lock-word acquire and release.

/// Two threads each take the entry exclusively twice (fast path, conversion,
/// latched grant, waiting, latched release): mutual exclusion, every
/// increment seen, the word back to 0.
#[test]
fn exclusive_two_threads_twice() {
    static SLOW_GRANT: StdCounter = StdCounter::new(0);
    static SLOW_RELEASE: StdCounter = StdCounter::new(0);
    check(3, || {
        let e = Arc::new(Entry::new(0));
        let handles: Vec<_> = (0..2u32)
            .map(|me| {
                let e = e.clone();
                thread::spawn(move || {
                    for _ in 0..2 {
                        let (a, r) = lock_once(&e, me, true);
                        if !a.fast {
                            hit(&SLOW_GRANT);
                        }
                        if !r.fast {
                            hit(&SLOW_RELEASE);
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(e.data(), 4);
        e.assert_idle();
    });
    assert!(hits(&SLOW_GRANT) > 0, "latched grant never explored");
    assert!(hits(&SLOW_RELEASE) > 0, "latched release never explored");
}

/// Three threads contend once each for the entry exclusively.
#[test]
fn exclusive_three_threads() {
    check(2, || {
        let e = Arc::new(Entry::new(0));
        let handles: Vec<_> = (0..3u32)
            .map(|me| {
                let e = e.clone();
                thread::spawn(move || {
                    lock_once(&e, me, true);
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(e.data(), 3);
        e.assert_idle();
    });
}

/// Connector 0 holds the entry in fast mode and releases it while connector 1
/// converts the word to mixed mode to wait for it. Once converted, the fast
/// release CAS must fail and the holder must release through the latch.
#[test]
fn fast_release_races_conversion() {
    static RELEASED_FAST: StdCounter = StdCounter::new(0);
    static RELEASED_LATCHED: StdCounter = StdCounter::new(0);
    check(3, || {
        let e = Arc::new(Entry::held_fast_by(0));
        let holder = {
            let e = e.clone();
            thread::spawn(move || {
                e.exclusive_section();
                release(&e, 0, true)
            })
        };
        let requester = {
            let e = e.clone();
            thread::spawn(move || lock_once(&e, 1, true).0)
        };
        let released = holder.join().unwrap();
        let requested = requester.join().unwrap();
        if requested.fast {
            assert!(released.fast, "fast grant on an entry still held");
        }
        // Connector 0 is named in a mixed word only if a latch converted
        // its fast-mode word: the fast release must then have failed.
        if requested.named & lockword::bit(0) != 0 {
            assert!(
                !released.fast,
                "fast release succeeded on a word converted to mixed mode"
            );
        }
        hit(if released.fast {
            &RELEASED_FAST
        } else {
            &RELEASED_LATCHED
        });
        assert_eq!(e.data(), 2);
        e.assert_idle();
    });
    assert!(hits(&RELEASED_FAST) > 0);
    assert!(
        hits(&RELEASED_LATCHED) > 0,
        "conversion race never explored"
    );
}

// ---------------------------------------------------------------------------
// b. Share mode.

/// Two share holders (fast share, or latched when the word is mixed) and one
/// exclusive requester: no exclusive holder ever overlaps a share holder,
/// both shares can be inside at once, the word returns to 0.
#[test]
fn share_and_exclusive() {
    static BOTH_SHARES_INSIDE: StdCounter = StdCounter::new(0);
    static SHARE_LATCHED: StdCounter = StdCounter::new(0);
    check(2, || {
        let e = Arc::new(Entry::new(0));
        let shares: Vec<_> = (0..2u32)
            .map(|me| {
                let e = e.clone();
                thread::spawn(move || {
                    let a = acquire(&e, me, false);
                    if !a.fast {
                        hit(&SHARE_LATCHED);
                    }
                    if e.share_section() == 2 {
                        hit(&BOTH_SHARES_INSIDE);
                    }
                    release(&e, me, false);
                })
            })
            .collect();
        let writer = {
            let e = e.clone();
            thread::spawn(move || {
                lock_once(&e, 2, true);
            })
        };
        for h in shares {
            h.join().unwrap();
        }
        writer.join().unwrap();
        assert_eq!(e.data(), 1);
        e.assert_idle();
    });
    assert!(hits(&BOTH_SHARES_INSIDE) > 0, "shares never overlapped");
    assert!(hits(&SHARE_LATCHED) > 0, "latched share never explored");
}

/// False contention: connectors 0 and 2 want resource 0, connector 1 wants
/// resource 1, all on one entry. Connector 1 is never refused or made to wait
/// for the others (its resource is free); 0 and 2 still exclude each other.
#[test]
fn false_contention_never_waits() {
    check(2, || {
        let mut entry = Entry::new(0);
        entry.resource[1] = 1;
        let e = Arc::new(entry);
        let same: Vec<_> = [0u32, 2]
            .into_iter()
            .map(|me| {
                let e = e.clone();
                thread::spawn(move || {
                    lock_once(&e, me, true);
                })
            })
            .collect();
        let other = {
            let e = e.clone();
            thread::spawn(move || {
                let a = acquire(&e, 1, true);
                release(&e, 1, true);
                a
            })
        };
        for h in same {
            h.join().unwrap();
        }
        let a = other.join().unwrap();
        assert_eq!(a.blocked_by, [0; N], "false contention made a waiter");
        assert_eq!(a.waited, 0);
        assert_eq!(e.data(), 2);
        e.assert_idle();
    });
}

// ---------------------------------------------------------------------------
// c. The cleanup claim.

/// A process token per thread, and whether its process is alive.
struct Claimers {
    word: AtomicU64,
    alive: [AtomicBool; N],
}

impl Claimers {
    fn new(word: u64) -> Claimers {
        Claimers {
            word: AtomicU64::new(word),
            alive: std::array::from_fn(|_| AtomicBool::new(true)),
        }
    }

    /// Token of thread `i` (nonzero).
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

// ---------------------------------------------------------------------------
// d. Futex wait and wake.

/// Connector 0 holds the entry in mixed mode; connector 1 latches, sees the
/// conflict, `unlatch_to_wait`s and sleeps, re-checking in a loop, while
/// connector 0 releases through the latch (waking it if WAITERS is set).
/// No lost wake-up (loom deadlock), the waiter ends up granted, and the
/// busy-latch path (`announce_waiter`) and a real sleep are both explored.
#[test]
fn futex_wait_wake() {
    static WAITED: StdCounter = StdCounter::new(0);
    static ANNOUNCED: StdCounter = StdCounter::new(0);
    check(3, || {
        let e = Arc::new(Entry::held_mixed_by(0));
        let releaser = {
            let e = e.clone();
            thread::spawn(move || {
                e.exclusive_section();
                release(&e, 0, true)
            })
        };
        let waiter = {
            let e = e.clone();
            thread::spawn(move || {
                let t = acquire(&e, 1, true);
                // Granted: the word names us, and only us (fast or mixed).
                let w = e.word();
                if t.fast {
                    assert_eq!(w, Word(lockword::holder_field(1)));
                } else {
                    assert!(w.is_mixed() && w.mask() == 1 << 1, "{w:?}");
                }
                e.exclusive_section();
                (t, release(&e, 1, true))
            })
        };
        let r = releaser.join().unwrap();
        let (a, _) = waiter.join().unwrap();
        assert!(!r.fast, "a mixed-mode holder releases through the latch");
        if a.waited > 0 {
            hit(&WAITED);
        }
        if a.announced > 0 {
            hit(&ANNOUNCED);
        }
        assert_eq!(e.data(), 2);
        e.assert_idle();
    });
    assert!(hits(&WAITED) > 0, "unlatch_to_wait + sleep never explored");
    assert!(
        hits(&ANNOUNCED) > 0,
        "announce_waiter + sleep never explored"
    );
}

/// Two waiters on an entry held in mixed mode: every release wakes everyone
/// (WAITERS is one bit for all), no waiter is left asleep.
#[test]
fn futex_two_waiters() {
    check(2, || {
        let e = Arc::new(Entry::held_mixed_by(0));
        let releaser = {
            let e = e.clone();
            thread::spawn(move || {
                e.exclusive_section();
                release(&e, 0, true);
            })
        };
        let waiters: Vec<_> = (1..3u32)
            .map(|me| {
                let e = e.clone();
                thread::spawn(move || {
                    lock_once(&e, me, true);
                })
            })
            .collect();
        releaser.join().unwrap();
        for h in waiters {
            h.join().unwrap();
        }
        assert_eq!(e.data(), 3);
        e.assert_idle();
    });
}

/// A latch holder died holding the latch (connector 3); connector 1 waits on
/// the busy latch (`announce_waiter` + sleep) while the recovery (connector 2)
/// steals the latch, drops the dead connector's interest and unlatches: the
/// waiter is woken and gets the latch.
#[test]
fn steal_latch_wakes_waiter() {
    check(3, || {
        let dead = 3;
        let e = Arc::new(Entry::new(
            lockword::MIXED | lockword::holder_field(dead) | lockword::bit(dead),
        ));
        e.recs[dead as usize].store(PENDING, Ordering::Relaxed);
        let recovery = {
            let e = e.clone();
            thread::spawn(move || {
                // As `latch_entry` does: the CAS fails if a waiter
                // announced itself meanwhile; retry.
                let named = loop {
                    if let Some(named) = lockword::try_steal_latch(&e.word, dead, 2) {
                        break named;
                    }
                    let w = e.word();
                    assert_eq!(w.holder(), Some(dead), "latch lost: {w:?}");
                };
                assert_eq!(named, lockword::bit(dead));
                assert_eq!(e.word().holder(), Some(2));
                e.recs[dead as usize].store(FREE, Ordering::Release);
                lockword::unlatch(&e.word, (named & !lockword::bit(dead)) as u32);
            })
        };
        let waiter = {
            let e = e.clone();
            thread::spawn(move || {
                let mut t = Trace::default();
                let named = latch(&e, 1, &mut t);
                assert_eq!(named, 0, "the dead connector's interest is gone");
                lockword::unlatch(&e.word, 0);
            })
        };
        recovery.join().unwrap();
        waiter.join().unwrap();
        e.assert_idle();
    });
}

// ---------------------------------------------------------------------------
// Known weaknesses of the waiting protocol, kept as failing models (ignored).
// Run them with `scripts/loom.sh --ignored`. Neither breaks mutual exclusion,
// and neither hangs the real code: the holder runs in parallel, and every
// sleep there is bounded by its slice (`MAX_SLICE` in lock.rs), which loom's
// futex model ignores. They cost CPU and latency.

/// Waiters wake each other forever while the holder holds: every waiter's
/// re-check ends in `unlatch_to_wait`, which wakes all sleepers because
/// WAITERS is already set (by the other waiters), and each of them re-checks
/// in turn. Holder 0 never needs to run: W1 sleeps, W2 latches, conflicts,
/// `unlatch_to_wait` wakes W1, W2 sleeps, W1 latches, conflicts,
/// `unlatch_to_wait` wakes W2, and so on. (The spin before sleeping is left
/// out: under loom it yields to the holder, which hides this.) Measured with
/// real threads, three or more waiters on a held lock each burn ~10-25% of a
/// core for as long as it is held.
#[test]
#[ignore = "fails: the waiting protocol lets waiters wake each other forever"]
fn waiters_do_not_wake_each_other_forever() {
    check(2, || {
        let e = Arc::new(Entry {
            spin_before_sleep: false,
            ..Entry::held_mixed_by(0)
        });
        let releaser = {
            let e = e.clone();
            thread::spawn(move || {
                release(&e, 0, true);
            })
        };
        let waiters: Vec<_> = (1..3u32)
            .map(|me| {
                let e = e.clone();
                thread::spawn(move || {
                    let a = acquire(&e, me, true);
                    // Found holder 0 in conflict at arrival, perhaps once more
                    // when the other waiter arrived; more is a wake-up storm.
                    assert!(
                        a.blocked_by[0] <= 3,
                        "waiter {me} re-checked {} times while 0 still held",
                        a.blocked_by[0]
                    );
                    release(&e, me, true);
                })
            })
            .collect();
        releaser.join().unwrap();
        for h in waiters {
            h.join().unwrap();
        }
    });
}

/// A wake-up is missed when the high half of the word repeats (ABA): the
/// futex value is the high half only, and the mask is not in it. Holder 0
/// holds resource 0 and holder 3 resource 1 (false contention, mask {0,3}).
/// W1 wants resource 0: `unlatch_to_wait` leaves high = MIXED|WAITERS. Before
/// W1 sleeps, 0 releases (latch, `unlatch(mask {3})`: WAITERS cleared, the
/// wake finds no sleeper) and W2, wanting resource 1, latches, conflicts with
/// 3 and `unlatch_to_wait`s: high = MIXED|WAITERS again, and no wake (WAITERS
/// was clear). W1 now sleeps on a matching value although its conflict is
/// gone, until some later unlatch or its slice. Here W2 stops after
/// announcing itself (standing for a waiter in a long timed sleep, or killed)
/// and loom reports W1 asleep forever.
#[test]
#[ignore = "fails: a waiter can sleep through the release it waits for"]
fn sleeper_is_woken_by_the_release_it_waits_for() {
    check(3, || {
        let mut entry = Entry::held_mixed_by(0);
        entry.word = AtomicU64::new(lockword::MIXED | lockword::bit(0) | lockword::bit(3));
        entry.recs[3].store(HELD_X, Ordering::Relaxed);
        entry.resource[2] = 1;
        entry.resource[3] = 1;
        entry.spin_before_sleep = false;
        let e = Arc::new(entry);
        let releaser = {
            let e = e.clone();
            thread::spawn(move || {
                release(&e, 0, true);
            })
        };
        let w1 = {
            let e = e.clone();
            thread::spawn(move || {
                acquire(&e, 1, true);
                release(&e, 1, true);
            })
        };
        let w2 = {
            let e = e.clone();
            thread::spawn(move || {
                let mut t = Trace::default();
                let named = latch(&e, 2, &mut t);
                if e.conflicts(named, 2, true) != 0 {
                    lockword::unlatch_to_wait(&e.word, named as u32);
                } else {
                    lockword::unlatch(&e.word, named as u32);
                }
            })
        };
        releaser.join().unwrap();
        w1.join().unwrap();
        w2.join().unwrap();
    });
}
