//! Adversarial models (review `attack3`): each one asserts an invariant of
//! SPEC section 4, or a claim of DESIGN section 4 ("a wake-up cannot be
//! missed"), on the code that ships, and failed on the code it was written
//! against.

use super::harness::*;
use crate::{Member, Mode, TryOutcome};
use std::time::Duration;

/// A waiter that conflicts only with a *half-made* request sleeps on after
/// that request has given up: a lost wake-up (DESIGN section 4, "A wake-up
/// cannot be missed"; SPEC invariant 3, no waiter misses a wake-up).
///
/// Member A holds R in share mode (its bit on entry E); member B holds Q,
/// another resource of E, so E is mixed. Then:
/// 1. thread X of A asks for R exclusively (`try_lock`): `acquire` writes its
///    record HELD and its fast CAS fails (E is mixed); before
///    `acquire_slow` turns the record PENDING,
/// 2. W (member B) asks for R in share mode (`lock`, a long timeout): its
///    decision reads A's records and finds X's HELD exclusive record of R
///    (rule 2: a HELD record may be half-made, and it is a conflict), so W
///    steps out (a look) and sleeps as a holding waiter until the epoch
///    changes;
/// 3. X turns its record PENDING, latches, conflicts with A's own share
///    holding, steps out for good (`Change::Look`: the epoch is kept and
///    holding waiters are not woken) and frees its record.
/// Nothing W conflicts with is left (A's share holding is compatible), yet no
/// unlatch that changes the epoch will come until A releases R: W sleeps for
/// nothing. With real futex sleeps it is saved only by its 20 ms slice (the
/// "backstop for a dead holder", which DESIGN says is not needed for
/// correctness); loom, whose futex ignores timeouts, reports the deadlock.
/// The same happens whenever the half-made request then waits (its
/// `step_out` is a look too).
#[test]
fn a_waiter_blocked_by_a_half_made_request_is_never_woken() {
    check(2, || {
        let r = region(2, 2);
        let names = colliding(2);
        let (res_r, res_q) = (names[0].clone(), names[1].clone());
        let a = Member::connect(r.clone(), "A").unwrap();
        let mut ha = a.holder().unwrap();
        let _held_r = take(&mut ha, &res_r, Mode::Share);
        let hx = a.holder().unwrap();
        crate::connector::identity::model::enter(2);
        let b = Member::connect(r.clone(), "B").unwrap();
        let mut hb = b.holder().unwrap();
        let _held_q = take(&mut hb, &res_q, Mode::Exclusive); // E is mixed
        let hw = b.holder().unwrap();
        crate::connector::identity::model::enter(1);
        // No holder is dropped while loom unwinds from the deadlock it
        // reports (a destructor touching loom atomics would abort the binary).
        std::mem::forget((ha, hb));
        let mut hx = std::mem::ManuallyDrop::new(hx);
        let mut hw = std::mem::ManuallyDrop::new(hw);
        let rx = res_r.clone();
        let x = process(1, move || {
            let out = hx.try_lock(&rx, Mode::Exclusive).unwrap();
            assert!(matches!(out, TryOutcome::Contention(_)), "{out:?}");
            hx
        });
        let rw = res_r.clone();
        let w = process(2, move || {
            let id = hw
                .lock(&rw, Mode::Share, Duration::from_secs(3600))
                .expect("R is held in share mode only: W is granted it");
            hw.unlock(id).unwrap();
            hw
        });
        let hx = x.join().unwrap().unwrap();
        let hw = w.join().unwrap().unwrap();
        std::mem::forget((hx, hw, a, b));
    });
}
