//! Adversarial models (review `attack12`): the waiting protocol (DESIGN
//! section 4, "Waiting and waking": no wake-up may be missed, the sleep
//! slice is only a backstop for dead holders) and bounded bypass
//! (`lock/entry.rs` rule 5), on the code that ships. Each `#[ignore]`d model
//! failed on the code it was written against; the others pin what was
//! checked and held.

use super::harness::*;
use crate::lock::records;
use crate::lock::word::{self, Word};
use crate::sync::Ordering;
use crate::{Member, Mode, TryOutcome};
use loom::thread;
use std::mem::ManuallyDrop;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(3600);

/// Finding 1. A sibling hand-off loses the waiter's wake-up: the waiter
/// announces itself on a *fast-mode* word, and the sibling's latch, which
/// converts that word, erases the announcement (`word::try_latch`: "a
/// fast-mode word has no waiters").
///
/// Member A, one process, two threads; T1 holds R exclusively on the fast
/// path (word = holder A). Then:
/// 1. T2 asks for R (`lock`, long timeout): its fast CAS fails, it latches
///    (converting the word: mixed, mask {A}) and decides: T1's HELD record
///    of R conflicts;
/// 2. T1 unlocks: the word is mixed, so `release_slow` -> `entry::release`
///    turns T1's record PENDING and waits for the latch (its sibling's);
/// 3. T2 steps out: `mask_recomputed` finds no HELD record of A any more
///    (T1's is PENDING, T2's own is PENDING), so the mask is empty and the
///    unlatch returns the entry to fast mode, free, epoch e+1; `left` is
///    that word;
/// 4. T2 `wait_for_holdings(left)`: the epoch is still e+1, the word is not
///    latched, so it announces `HOLDING_WAITERS` on the free fast-mode word
///    (a malformed word) and sleeps on it;
/// 5. T1 latches: `try_latch` converts the fast word to
///    `epoch | MIXED | holder | named`, dropping `HOLDING_WAITERS`; its
///    unlatch (mask empty: epoch e+2) sees no waiter bit and makes no
///    futex call.
/// R is free and T2 sleeps: with real futexes until its slice ends (up to
/// `MAX_SLICE`); here (sleeps never time out) a loom deadlock. The same
/// loss happens if any fast-path request takes the entry meanwhile (a fast
/// share CAS does not even look at the waiter bits).
///
/// Hole: `word::wait_for_holdings` announces and sleeps on a fast-mode word.
/// Fix: a waiter that sees a fast-mode word must not sleep on it (return
/// `Changed` and look again: a fast word has no latch and no waiters, and
/// a request can settle it itself); or `try_latch`'s conversion must keep
/// (and the unlatch honour) waiter bits.
#[test]
fn a_sibling_waiter_announced_on_a_fast_word_is_never_woken() {
    check(2, || {
        let r = region(1, 2);
        let m = Member::connect(r.clone(), "A").unwrap();
        let mut h1 = m.holder().unwrap();
        let l1 = take(&mut h1, b"r", Mode::Exclusive);
        let h2 = m.holder().unwrap();
        // Nothing that touches loom atomics is dropped while loom unwinds
        // from the deadlock it reports.
        std::mem::forget(m);
        let mut h1 = ManuallyDrop::new(h1);
        let mut h2 = ManuallyDrop::new(h2);
        let t1 = thread::spawn(move || {
            h1.unlock(l1).unwrap();
            h1
        });
        let t2 = thread::spawn(move || {
            let id = h2
                .lock(b"r", Mode::Exclusive, LONG)
                .expect("T1 releases R: T2 is granted it");
            h2.unlock(id).unwrap();
            h2
        });
        let h1 = t1.join().unwrap();
        let h2 = t2.join().unwrap();
        let problems = at_rest_problems(&r);
        assert!(problems.is_empty(), "{problems:?}");
        std::mem::forget((h1, h2));
    });
}

/// Finding 2. A waiter blocked by a half-made request that leaves without
/// the latch sleeps on nothing (`entry.rs` rule 6 concedes that
/// `abandon_unlatched` only "does its best", but DESIGN section 4 says a
/// wake-up cannot be missed and the slice is not needed for correctness).
///
/// Member A's holder HA holds P exclusively on entry E (fast: word =
/// holder A). Then:
/// 1. X (another thread of A) asks for R, on E, exclusively with
///    `lock(.., 0)`: its record is HELD, its fast CAS fails;
/// 2. W (member B) asks for R in share mode (`lock`, long timeout): it
///    latches E (converting the word) and its decision finds X's half-made
///    HELD record of R: a conflict (rule 2);
/// 3. X turns its record PENDING and tries the latch: held by B (not a
///    sibling), its deadline (now) has passed: `LatchError::TimedOut`.
///    `free_record(true)` -> `abandon_unlatched`: one attempt at the latch
///    (`latch_at_once`), which B still holds: nothing; X frees its record
///    and answers "contention";
/// 4. W steps out (its first unlatch: a holdings change, epoch e+1) and
///    waits for the epoch to move from e+1.
/// Nothing W conflicts with is left (A holds only P), but no unlatch will
/// move the epoch until A releases P: W sleeps for nothing (loom deadlock;
/// with real futexes, until its slice ends).
///
/// Hole: `entry::abandon_unlatched` gives up when the latch is busy.
/// Fix: when the latch cannot be had, make the holdings change visible
/// anyway: a CAS that bumps the epoch of the latched word (the latch
/// holder's unlatch computes its new word from the current one, so it
/// carries the bump), clears `HOLDING_WAITERS` and wakes that class; or a
/// flag in the word that turns the latch holder's unlatch into
/// `Change::Holdings`.
#[test]
fn a_waiter_blocked_by_an_abandoned_half_made_request_is_never_woken() {
    check(3, || {
        let r = region(2, 2);
        let names = colliding(2);
        let (res_p, res_r) = (names[0].clone(), names[1].clone());
        let a = Member::connect(r.clone(), "A").unwrap();
        let mut ha = a.holder().unwrap();
        let _held_p = take(&mut ha, &res_p, Mode::Exclusive);
        let hx = a.holder().unwrap();
        crate::connector::identity::model::enter(2);
        let b = Member::connect(r.clone(), "B").unwrap();
        let hw = b.holder().unwrap();
        crate::connector::identity::model::enter(1);
        std::mem::forget((ha, a, b));
        let mut hx = ManuallyDrop::new(hx);
        let mut hw = ManuallyDrop::new(hw);
        let rx = res_r.clone();
        let x = process(1, move || {
            match hx.lock(&rx, Mode::Exclusive, Duration::ZERO) {
                Ok(id) => hx.unlock(id).unwrap(),
                Err(crate::WaitError::Timeout(_)) => {}
                Err(e) => panic!("{e}"),
            }
            hx
        });
        let rw = res_r.clone();
        let w = process(2, move || {
            let id = hw
                .lock(&rw, Mode::Share, LONG)
                .expect("nobody holds R once X has given up: W is granted it");
            hw.unlock(id).unwrap();
            hw
        });
        let hx = x.join().unwrap().unwrap();
        let hw = w.join().unwrap().unwrap();
        std::mem::forget((hx, hw));
    });
}

/// Finding 2b. The same abandoned half-made request leaves its member's bit
/// behind at rest when a third party holds the latch at the attempt meant
/// to recompute it (attack1's hole, closed by `recheck_own_bit` and
/// `abandon_unlatched` only for a latch that is free or a sibling's).
///
/// Member A holds R1 on entry E, which is mixed (B holds Q there).
/// Sequentially (the setup, a legal prefix):
/// 1. thread T2 of A asks for R2 (on E): its record is HELD, its fast CAS
///    fails (here written as `acquire` writes it);
/// 2. thread T1 of A releases R1 on the latched path: T2's HELD record
///    keeps A's bit (`entry::release`), and `recheck_own_bit` returns at
///    once (T2's record is still HELD).
/// Then, raced (T2's thread runs the rest of its `lock(R2, .., 0)` as
/// `slow_acquire` does: PENDING, the latch with its deadline passed, and
/// on `TimedOut` `abandon_unlatched` and FREE):
/// 3. B asks for R3 (on E): it latches, and its decision reads T2's HELD
///    record, so A stays named;
/// 4. T2 turns PENDING, times out on B's latch, `abandon_unlatched` finds
///    it still busy, and T2 frees its record;
/// 5. B is granted R3 (false contention) and unlatches with A's bit.
/// At rest the word names A, which holds nothing on E (`verify`: "names
/// connector 0, which holds nothing there"), until the next latched
/// operation on E heals it.
///
/// Hole: `abandon_unlatched` (and `recheck_own_bit`) give up on a busy
/// latch. Fix: hand the recomputation to the latch holder (e.g. a
/// "recheck" bit set in the latched word, which makes its unlatch `heal`
/// the mask it publishes and count as a holdings change: this closes
/// finding 2 too), or let a record that must go wait for a non-sibling
/// latch past its deadline for as long as a latch is normally held.
#[test]
fn an_abandoned_half_made_request_leaves_a_bit_behind_a_third_party_latch() {
    use crate::lock::entry::{self, Decision, LatchError, LatchWait, Request};
    use crate::lock::records::{TAG_FREE, TAG_HELD, TAG_PENDING};
    use crate::Resource;
    check(3, || {
        let r = region(2, 2);
        let names = colliding(4);
        let e = entry_of(&names[0]);
        let a = Member::connect(r.clone(), "A").unwrap();
        let a_id = a.id();
        let mut h1 = a.holder().unwrap();
        let l1 = take(&mut h1, &names[0], Mode::Exclusive);
        crate::connector::identity::model::enter(2);
        let b = Member::connect(r.clone(), "B").unwrap();
        let mut hq = b.holder().unwrap();
        let _lq = take(&mut hq, &names[1], Mode::Exclusive); // E is mixed
        let hb = b.holder().unwrap();
        crate::connector::identity::model::enter(1);
        // 1. T2's half-made request for R2, in a slot of A's first block
        // that H1 does not use.
        let slot = 1;
        let body = &r.bodies(a_id).unwrap()[slot as usize];
        records::write_body_and_hash(body, &names[2], Mode::Exclusive);
        let tag = records::tag(&r, a_id, slot).unwrap();
        tag.store(TAG_HELD | e.get(), Ordering::Release);
        assert!(!word::try_fast_exclusive(r.word(e).unwrap(), a_id));
        // 2. T1 releases R1: A's bit is kept for T2's record.
        h1.unlock(l1).unwrap();
        let w = Word(r.word(e).unwrap().load(Ordering::Relaxed));
        assert!(
            w.is_mixed() && w.named() & word::bit(a_id) != 0,
            "{:#x}",
            w.0
        );
        std::mem::forget((a, b, hq, h1));
        let mut hb = ManuallyDrop::new(hb);
        let (r2, n2) = (r.clone(), names[2].clone());
        let t2 = process(1, move || {
            let tag = records::tag(&r2, a_id, slot).unwrap();
            tag.store(TAG_PENDING | e.get(), Ordering::Release);
            let res = Resource::new(&n2).unwrap();
            let req = Request {
                resource: &res,
                mode: Mode::Exclusive,
                member: a_id,
                slot,
                holder: records::slot_owner(&r2, a_id, slot).unwrap_or(0),
                ticket: 0,
                urgent: false,
                half_made: true,
            };
            let mut on_stuck = |_| Ok(());
            let mut how = LatchWait {
                deadline: Some(crate::sync::now()),
                steal: 0,
                on_stuck: &mut on_stuck,
                own: None,
            };
            match entry::latch(&r2, e, a_id, &mut how) {
                Ok(mut l) => {
                    let mut conflicts = Vec::new();
                    match l.decide(&r2, &req, &mut conflicts).unwrap() {
                        // T2 holds R2 (A's bit is then its own).
                        Decision::Grant { .. } => l.grant(&r2, &req).unwrap(),
                        Decision::Conflict => panic!("R2 is free: {conflicts:?}"),
                    }
                }
                Err(LatchError::TimedOut { .. }) => {
                    entry::abandon_unlatched(&r2, a_id, slot, e);
                    tag.store(TAG_FREE, Ordering::Release);
                }
                Err(other) => panic!("{other:?}"),
            }
        });
        let n3 = names[3].clone();
        let tb = process(2, move || {
            let id = match hb.try_lock(&n3, Mode::Exclusive).unwrap() {
                TryOutcome::Granted(id) => id,
                other => panic!("false contention refused: {other:?}"),
            };
            (hb, id)
        });
        t2.join().unwrap().unwrap();
        let (hb, _r3) = tb.join().unwrap().unwrap();
        // At rest: B holds Q and R3; A holds R2 or nothing.
        let problems = at_rest_problems(&r);
        assert!(problems.is_empty(), "{problems:?}");
        std::mem::forget(hb);
    });
}

/// Checked and held: a waiter of another member behind a sibling's holding
/// on a mixed entry is woken by that holding's release and granted, while
/// the other sibling's holding (false contention) keeps the entry mixed.
///
/// Member A: holder H1 holds R in share mode (fast path), holder H2 holds Q
/// (another resource of R's entry) in share mode (latched path: the entry
/// is mixed, A named once for both). W (member B) asks for R exclusively
/// (`lock`, long timeout) while H1 releases R. Every interleaving: W is
/// granted R (no lost wake-up: loom would report a deadlock), and at rest,
/// once H2 and W have released, the word is free and nothing is left.
#[test]
fn a_waiter_behind_one_of_two_sibling_holdings_is_woken_by_its_release() {
    check(3, || {
        let r = region(2, 2);
        let names = colliding(2);
        let (res_r, res_q) = (names[0].clone(), names[1].clone());
        let data = Arc::new(Guarded::new());
        let a = Member::connect(r.clone(), "A").unwrap();
        let mut h1 = a.holder().unwrap();
        let l1 = take(&mut h1, &res_r, Mode::Share);
        let mut h2 = a.holder().unwrap();
        let l2 = take(&mut h2, &res_q, Mode::Share);
        let w0 = Word(r.word(entry_of(&res_r)).unwrap().load(Ordering::Relaxed));
        assert!(w0.is_mixed(), "{:#x}", w0.0);
        crate::connector::identity::model::enter(2);
        let b = Member::connect(r.clone(), "B").unwrap();
        let hw = b.holder().unwrap();
        crate::connector::identity::model::enter(1);
        let mut h1 = ManuallyDrop::new(h1);
        let mut hw = ManuallyDrop::new(hw);
        let d = data.clone();
        let t1 = process(1, move || {
            d.read();
            h1.unlock(l1).unwrap();
            h1
        });
        let (d, rw) = (data.clone(), res_r.clone());
        let w = process(2, move || {
            let id = hw.lock(&rw, Mode::Exclusive, LONG).expect("W is granted R");
            d.bump();
            hw.unlock(id).unwrap();
            hw
        });
        let h1 = t1.join().unwrap().unwrap();
        let hw = w.join().unwrap().unwrap();
        assert_eq!(data.read(), 1);
        h2.unlock(l2).unwrap();
        let problems = at_rest_problems(&r);
        assert!(problems.is_empty(), "{problems:?}");
        let w = Word(r.word(entry_of(&res_r)).unwrap().load(Ordering::Relaxed));
        assert!(w.is_free(), "{:#x}", w.0);
        drop((
            ManuallyDrop::into_inner(h1),
            ManuallyDrop::into_inner(hw),
            h2,
        ));
        a.disconnect().unwrap();
        b.disconnect().unwrap();
    });
}
