//! The wait-record protocol of deadlock detection (`deadlock.rs`), through
//! the real `Holder::lock` and `deadlock::detect_once`. Tiny on purpose: one
//! holder that holds R in share mode and asks for it exclusively (no
//! promotion: it waits for itself, a cycle of one, and under loom its wait
//! never times out). A round of the detector must tell it and wake it (a
//! lost wake-up is a loom deadlock: the sleep never ends by itself), and it
//! answers `Deadlock`, giving up only its own request. The cross-member and
//! two-thread cycles are in `cf-core/tests/deadlock.rs` and, with real
//! processes, `cf-node/tests/deadlock.rs`.

use super::harness::*;
use crate::{deadlock, Member, Mode, WaitError};
use std::time::Duration;

/// The member's thread: take R (share), ask for it exclusively, back out.
fn waits_for_itself(r: &Arc<crate::Region>) -> loom::thread::JoinHandle<Option<Member>> {
    let m = Member::connect(r.clone(), "A").unwrap();
    let mut h = m.holder().unwrap();
    let s = take(&mut h, b"r", Mode::Share);
    process(1, move || {
        match h.lock(b"r", Mode::Exclusive, Duration::from_secs(3600)) {
            Err(WaitError::Deadlock { cycle }) => {
                assert_eq!(cycle.len(), 1, "{cycle:?}");
                assert_eq!(cycle[0].mode, Mode::Share);
            }
            other => panic!("{other:?}"),
        }
        h.unlock(s).unwrap();
        drop(h);
        m
    })
}

/// Wait (yielding) until the request has published its wait.
fn until_it_waits(r: &crate::Region) {
    while deadlock::waits(r).is_empty() {
        loom::thread::yield_now();
    }
}

fn finish(r: &crate::Region, t: loom::thread::JoinHandle<Option<Member>>) {
    t.join().unwrap().unwrap().disconnect().unwrap();
    assert!(deadlock::waits(r).is_empty());
    assert_eq!(deadlock::victims_told(r), 1);
}

#[test]
fn a_deadlock_victim_is_told_woken_and_backs_out() {
    check(2, || {
        let r = region(1, 1);
        let t = waits_for_itself(&r);
        crate::connector::identity::model::enter(2);
        until_it_waits(&r);
        let d = deadlock::detect_once(&r, None).unwrap();
        assert_eq!(d.victims.len(), 1, "{d:?}");
        finish(&r, t);
    });
}

/// The detector is killed after telling the victim, before its wake
/// (`deadlock.told`): the next round takes its claim over and wakes the
/// told victim again (else it would sleep for ever); no second victim.
#[test]
fn a_detector_killed_before_its_wake_is_finished_by_the_next_round() {
    check(1, || {
        let r = region(1, 1);
        let t = waits_for_itself(&r);
        until_it_waits(&r);
        let survived = crate::crash::model::run_as(2, || {
            crate::crash::model::arm("deadlock.told", 1);
            let _ = deadlock::detect_once(&r, None);
        });
        assert!(!survived, "killed at deadlock.told");
        crate::connector::identity::model::enter(3);
        let d = deadlock::detect_once(&r, None).unwrap();
        assert!(d.taken_over && d.victims.is_empty(), "{d:?}");
        finish(&r, t);
    });
}

/// Two members in a cycle (A holds R1 and waits for R2, B the other way):
/// exactly one is told; it backs out, and the other is granted.
#[test]
fn of_two_members_in_a_cycle_one_backs_out_and_the_other_is_granted() {
    check(1, || {
        let r = region(2, 1);
        let a = Member::connect(r.clone(), "A").unwrap();
        let mut ha = a.holder().unwrap();
        let la = take(&mut ha, b"r1", Mode::Exclusive);
        crate::connector::identity::model::enter(2);
        let b = Member::connect(r.clone(), "B").unwrap();
        let mut hb = b.holder().unwrap();
        let lb = take(&mut hb, b"r2", Mode::Exclusive);
        let waiter = |pid, mut h: crate::Holder, held, want: &'static [u8], m: Member| {
            process(pid, move || {
                let granted = match h.lock(want, Mode::Exclusive, Duration::from_secs(3600)) {
                    Ok(id) => {
                        h.unlock(id).unwrap();
                        true
                    }
                    Err(WaitError::Deadlock { cycle }) => {
                        assert_eq!(cycle.len(), 2, "{cycle:?}");
                        false
                    }
                    Err(e) => panic!("{e:?}"),
                };
                h.unlock(held).unwrap();
                drop(h);
                (m, granted)
            })
        };
        let ta = waiter(1, ha, la, b"r2", a);
        let tb = waiter(2, hb, lb, b"r1", b);
        crate::connector::identity::model::enter(3);
        while deadlock::waits(&r).len() < 2 {
            loom::thread::yield_now();
        }
        let d = deadlock::detect_once(&r, None).unwrap();
        assert_eq!(d.victims.len(), 1, "{d:?}");
        let mut granted = 0;
        for t in [ta, tb] {
            let (m, g) = t.join().unwrap().unwrap();
            granted += usize::from(g);
            m.disconnect().unwrap();
        }
        assert_eq!(granted, 1);
        assert!(deadlock::waits(&r).is_empty());
    });
}
