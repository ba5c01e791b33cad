//! The wait-record protocol of deadlock detection (`deadlock.rs`), through
//! the real `Holder::lock` and `deadlock::detect_once`. Tiny on purpose: two
//! members in a cycle (A holds R1 and asks for R2, B the other way; under
//! loom their waits never time out; a holder never waits for itself, rule 7,
//! so a cycle of one no longer is one). A round of the detector must tell one
//! and wake it (a lost wake-up is a loom deadlock: the sleep never ends by
//! itself), and it answers `Deadlock`, giving up only its own request. The
//! cycles of threads and of three members are in `cf-core/tests/deadlock.rs`
//! and, with real processes, `cf-node/tests/deadlock.rs`.

use super::harness::*;
use crate::{deadlock, Member, Mode, WaitError};
use std::time::Duration;

/// A (process 1) holds R1 and asks for R2, B (process 2) the other way;
/// each backs out (releases what it holds) whatever its answer. Each
/// thread returns its member and whether it was granted.
type Waiter = loom::thread::JoinHandle<Option<(Member, bool)>>;

fn two_in_a_cycle(r: &Arc<crate::Region>) -> [Waiter; 2] {
    let a = Member::connect(r.clone(), "A").unwrap();
    let mut ha = a.holder().unwrap();
    let la = take(&mut ha, b"r1", Mode::Exclusive);
    crate::connector::identity::model::enter(2);
    let b = Member::connect(r.clone(), "B").unwrap();
    let mut hb = b.holder().unwrap();
    let lb = take(&mut hb, b"r2", Mode::Exclusive);
    let waiter = |pid, mut h: crate::Holder, held, want: &'static [u8], m: Member| {
        process(pid, move || {
            let ans = h.lock(want, Mode::Exclusive, Duration::from_secs(3600));
            let granted = match ans {
                Ok(id) => {
                    h.unlock(id).unwrap();
                    true
                }
                Err(WaitError::Deadlock { cycle }) => {
                    assert_eq!(cycle.len(), 2, "{cycle:?}");
                    assert!(cycle.iter().all(|h| h.mode == Mode::Exclusive), "{cycle:?}");
                    false
                }
                Err(e) => panic!("{e:?}"),
            };
            h.unlock(held).unwrap();
            drop(h);
            (m, granted)
        })
    };
    [waiter(1, ha, la, b"r2", a), waiter(2, hb, lb, b"r1", b)]
}

/// Wait (yielding) until both requests have published their waits.
fn until_both_wait(r: &crate::Region) {
    while deadlock::waits(r).len() < 2 {
        loom::thread::yield_now();
    }
}

/// Exactly one backed out, the other was granted; nothing waits.
fn finish(r: &crate::Region, ts: [Waiter; 2]) {
    let mut granted = 0;
    for t in ts {
        let (m, g) = t.join().unwrap().unwrap();
        granted += usize::from(g);
        m.disconnect().unwrap();
    }
    assert_eq!(granted, 1);
    assert!(deadlock::waits(r).is_empty());
    assert_eq!(deadlock::victims_told(r), 1);
}

#[test]
fn a_deadlock_victim_is_told_woken_and_backs_out() {
    check(1, || {
        let r = region(2, 1);
        let ts = two_in_a_cycle(&r);
        crate::connector::identity::model::enter(3);
        until_both_wait(&r);
        let d = deadlock::detect_once(&r, None).unwrap();
        assert_eq!(d.victims.len(), 1, "{d:?}");
        finish(&r, ts);
    });
}

/// The detector is killed after telling the victim, before its wake
/// (`deadlock.told`): the next round takes its claim over and wakes the
/// told victim again (else it would sleep for ever); no second victim.
#[test]
fn a_detector_killed_before_its_wake_is_finished_by_the_next_round() {
    // Two rounds of the detector and two waiters: long executions.
    check_long(1, 200_000, || {
        let r = region(2, 1);
        let ts = two_in_a_cycle(&r);
        crate::connector::identity::model::enter(3);
        until_both_wait(&r);
        let survived = crate::crash::model::run_as(3, || {
            crate::crash::model::arm("deadlock.told", 1);
            let _ = deadlock::detect_once(&r, None);
        });
        assert!(!survived, "killed at deadlock.told");
        crate::connector::identity::model::enter(4);
        let d = deadlock::detect_once(&r, None).unwrap();
        assert!(d.taken_over && d.victims.is_empty(), "{d:?}");
        finish(&r, ts);
    });
}
