//! Adversarial models (review `attack13`) of the attack12 fixes: the poke
//! (`word::poke`) of a busy latch by a request that frees its record
//! without the latch, and the latch holder's checked unlatch
//! (`word::unlatch_checked`), on the code that ships. Each `#[ignore]`d
//! model fails on the code it was written against (ff8a62b); the others pin
//! what was checked and held.

use super::harness::*;
use crate::lock::entry;
use crate::lock::records::{self, TAG_FREE, TAG_HELD, TAG_PENDING};
use crate::lock::word::{self, Word};
use crate::sync::Ordering;
use crate::{Member, Mode, TryOutcome};
use std::mem::ManuallyDrop;

/// The setup of the poke models (a legal prefix, run sequentially): member
/// A holds nothing on entry E but `half_made` half-made requests (records
/// HELD, fast CAS failed, as `Holder::acquire` leaves them: each one a
/// sibling thread of A about to turn PENDING and latch), for R2 and R2'
/// (or both for R2, `same_resource`); E is mixed (B
/// holds Q there) and names A for those records. Returns the region, A's
/// id, E, the half-made slots and B's idle holder (for the raced request).
fn half_made_setup(
    half_made: usize,
    same_resource: bool,
) -> (
    Arc<crate::Region>,
    crate::ids::ConnectorId,
    crate::ids::EntryIndex,
    Vec<u32>,
    ManuallyDrop<crate::Holder>,
    Vec<Vec<u8>>,
) {
    let r = region(2, 2);
    let names = colliding(5);
    let e = entry_of(&names[0]);
    let a = Member::connect(r.clone(), "A").unwrap();
    let a_id = a.id();
    let mut h1 = a.holder().unwrap(); // block 0: slots 0 (R1) and 1
    let l1 = take(&mut h1, &names[0], Mode::Exclusive);
    let h2 = a.holder().unwrap(); // block 1: slots 2 and 3 (scanned)
    crate::connector::identity::model::enter(2);
    let b = Member::connect(r.clone(), "B").unwrap();
    let mut hq = b.holder().unwrap();
    let _lq = take(&mut hq, &names[1], Mode::Exclusive); // E is mixed
    let hb = b.holder().unwrap();
    crate::connector::identity::model::enter(1);
    // The half-made requests, in slots no holder of A uses now.
    let slots: Vec<u32> = [1u32, 2].into_iter().take(half_made).collect();
    for (i, &slot) in slots.iter().enumerate() {
        let body = &r.bodies(a_id).unwrap()[slot as usize];
        let res = if same_resource { 2 } else { 2 + i };
        records::write_body_and_hash(body, &names[res], Mode::Exclusive);
        let tag = records::tag(&r, a_id, slot).unwrap();
        tag.store(TAG_HELD | e.get(), Ordering::Release);
        assert!(!word::try_fast_exclusive(r.word(e).unwrap(), a_id));
    }
    // A's holder of R1 releases it: A's bit is kept for the half-made
    // records (`entry::release`; `recheck_own_bit` returns at once).
    h1.unlock(l1).unwrap();
    let w = Word(r.word(e).unwrap().load(Ordering::Relaxed));
    assert!(
        w.is_mixed() && w.named() & word::bit(a_id) != 0,
        "{:#x}",
        w.0
    );
    std::mem::forget((a, b, hq, h1, h2));
    (r, a_id, e, slots, ManuallyDrop::new(hb), names)
}

/// The rest of a half-made request of A whose latch wait timed out, as
/// `Holder::slow_acquire` runs it: PENDING, `free_record(true)` ->
/// `entry::abandon_unlatched` (the latch, or a poke of its busy holder),
/// FREE.
fn abandon(r: &crate::Region, a_id: crate::ids::ConnectorId, e: crate::ids::EntryIndex, slot: u32) {
    let tag = records::tag(r, a_id, slot).unwrap();
    tag.store(TAG_PENDING | e.get(), Ordering::Release);
    entry::abandon_unlatched(r, a_id, slot, e);
    tag.store(TAG_FREE, Ordering::Release);
}

/// Finding 2. The latch holder's unlatch rechecks the mask only once, at
/// the first poke it sees (`word::unlatch_checked`: `if !rechecked && ..`):
/// a second poke that lands between that recheck and its CAS makes the CAS
/// fail, and the retry publishes the mask healed *before* the second
/// record went. The poker, having poked, returns (`latch_or_poke`): its
/// member's bit is left at rest with nothing held (invariant 3), the very
/// state attack12's finding 2b was about.
///
/// Setup (`half_made_setup(2)`): A is named on mixed entry E only for two
/// half-made requests (slots 1 and 2, two sibling threads of A). Then,
/// raced:
/// 1. B asks for R3 (on E, false contention): it latches at epoch e; its
///    decision sees A's HELD records: A stays named;
/// 2. A's first request turns PENDING and, B's latch being busy, pokes it
///    (epoch e+1) and frees its record;
/// 3. B grants R3 and unlatches: the epoch moved, so it heals the mask:
///    A still has slot 2 HELD, A's bit is kept;
/// 4. A's second request turns PENDING and pokes (epoch e+2), frees;
/// 5. B's CAS fails (the word changed); the retry does not recheck
///    (`rechecked` is set) and publishes the mask with A's bit.
/// At rest E names A, which holds nothing there.
///
/// Hole: `word::unlatch_checked` rechecks once. Fix: recheck whenever the
/// epoch of `cur` differs from the last epoch rechecked at (keep
/// `last = latched` and compare with it on every iteration; `recheck`
/// recomputes from the mask as computed, not from the healed one). (The
/// loads feeding the recheck must also acquire the poke: see finding 3.)
#[test]
fn a_second_poke_after_the_recheck_leaves_a_bit_behind() {
    check(3, || {
        let (r, a_id, e, slots, mut hb, names) = half_made_setup(2, false);
        let r2 = r.clone();
        let t = process(1, move || {
            for &slot in &slots {
                abandon(&r2, a_id, e, slot);
            }
        });
        let n3 = names[4].clone();
        let tb = process(2, move || {
            let id = match hb.try_lock(&n3, Mode::Exclusive).unwrap() {
                TryOutcome::Granted(id) => id,
                other => panic!("false contention refused: {other:?}"),
            };
            (hb, id)
        });
        t.join().unwrap().unwrap();
        let (hb, _r3) = tb.join().unwrap().unwrap();
        let problems = at_rest_problems(&r);
        assert!(problems.is_empty(), "{problems:?}");
        std::mem::forget(hb);
    });
}

/// Finding 3 (weak memory). The recheck reads the records without having
/// acquired the poke: `unlatch_checked` loads the word `Relaxed` (and its
/// CAS fails `Relaxed`), so the latch holder can see the poked epoch and
/// still read the poker's record as it was before the poke (HELD): the
/// poker's `Release` store of PENDING and its `AcqRel` poke are not
/// ordered before the heal's tag loads. The heal then keeps the poker's
/// member's bit, and nothing rechecks it again.
///
/// One half-made request (`half_made_setup(1)`) and B's false-contention
/// request, raced as in attack12's finding 2b: A's request turns PENDING,
/// pokes B's latch, frees its record; B sees the poke and heals from a
/// stale tag.
///
/// Hole: `word::unlatch_checked`'s load and CAS failure ordering.
/// Fix: `Ordering::Acquire` for the initial load and the CAS failure (or
/// an acquire fence before `recheck`).
///
/// (Checked: with `Acquire` there this model passes, 540 executions; with
/// the fix of finding 2 as well, so does finding 2's, 10237 executions.)
#[test]
fn one_poke_is_seen_by_the_recheck() {
    check(3, || {
        let (r, a_id, e, slots, mut hb, names) = half_made_setup(1, false);
        let r2 = r.clone();
        let t = process(1, move || {
            for &slot in &slots {
                abandon(&r2, a_id, e, slot);
            }
        });
        let n3 = names[4].clone();
        let tb = process(2, move || {
            let id = match hb.try_lock(&n3, Mode::Exclusive).unwrap() {
                TryOutcome::Granted(id) => id,
                other => panic!("false contention refused: {other:?}"),
            };
            (hb, id)
        });
        t.join().unwrap().unwrap();
        let (hb, _r3) = tb.join().unwrap().unwrap();
        let problems = at_rest_problems(&r);
        assert!(problems.is_empty(), "{problems:?}");
        std::mem::forget(hb);
    });
}

/// Checked and held: a waiter blocked by two half-made requests that both
/// leave without the latch (each poking the waiter's latch, or latching
/// after it) is woken and granted in every interleaving, whatever the
/// recheck of finding 2 leaves in the mask (a poked unlatch is a holdings
/// change, and the poke itself wakes the holding waiters).
///
/// `half_made_setup(2, true)`: A's two half-made requests are both for R2
/// (exclusive). W (member B) asks for R2 in share mode (`lock`, long
/// timeout) while A's requests are abandoned (`abandon`). (13390
/// executions at bound 2; `LOOM_MAX_PREEMPTIONS=3`: 105419, 47 s, 0.8 GB.)
#[test]
fn a_waiter_blocked_by_two_abandoned_half_made_requests_is_woken() {
    check(2, || {
        let (r, a_id, e, slots, mut hw, names) = half_made_setup(2, true);
        let r2 = r.clone();
        let t = process(1, move || {
            for &slot in &slots {
                abandon(&r2, a_id, e, slot);
            }
        });
        let n2 = names[2].clone();
        let w = process(2, move || {
            let id = hw
                .lock(&n2, Mode::Share, std::time::Duration::from_secs(3600))
                .expect("nobody holds R2 once A's requests are gone: W is granted it");
            (hw, id)
        });
        t.join().unwrap().unwrap();
        let (hw, _id) = w.join().unwrap().unwrap();
        std::mem::forget(hw);
    });
}
