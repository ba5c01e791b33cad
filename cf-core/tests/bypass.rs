//! Bounded bypass (`lock/entry.rs`, rule 5), shown with real processes.
//!
//! Member A holds R; member B (a child process: this test binary re-run as
//! `b_waits_for_r`) waits for it. Each round, once B sleeps in the kernel
//! waiting for the holdings to change, the parent stops B (SIGSTOP), releases
//! R and at once asks for it again, then lets B go on (SIGCONT). While B is
//! stopped it cannot take R, so without a bound on bypasses A would win every
//! round and B would starve. With the bound, after `BYPASS_LIMIT` rounds B's
//! request is urgent: A's next try is refused although nobody holds R, and B
//! is granted.

mod common;

use cf_core::{testing, Member, Mode, TryOutcome};
use common::ChildB;

const PLEX_ENV: &str = "CF_BYPASS_TEST_PLEX";

/// The child's part (B), when run by the test below.
#[test]
fn b_waits_for_r() {
    common::child_b_waits_for_r(PLEX_ENV);
}

#[test]
fn a_waiter_is_bypassed_a_bounded_number_of_times() {
    let dir = tempfile::tempdir().unwrap();
    let r = common::small_region(dir.path());
    let a = Member::connect(r.clone(), "A").unwrap();
    let mut ha = a.holder().unwrap();
    let mut held = match ha.try_lock(b"r", Mode::Exclusive).unwrap() {
        TryOutcome::Granted(id) => id,
        other => panic!("{other:?}"),
    };
    let entry = held.entry;
    let child = ChildB::start("b_waits_for_r", PLEX_ENV, dir.path());

    let mut bypasses = 0u32;
    let refused = loop {
        child.stop_while_asleep(&r, entry);
        ha.unlock(held).unwrap();
        let answer = ha.try_lock(b"r", Mode::Exclusive).unwrap();
        child.resume();
        match answer {
            TryOutcome::Granted(id) => {
                held = id;
                bypasses += 1;
                assert!(
                    bypasses <= testing::BYPASS_LIMIT,
                    "B was bypassed {bypasses} times (limit {})",
                    testing::BYPASS_LIMIT
                );
            }
            other => break other,
        }
    };
    // Nobody held R, yet A was refused: B's urgent request comes first.
    assert_eq!(bypasses, testing::BYPASS_LIMIT);
    match refused {
        TryOutcome::Contention(h) => assert_eq!(h[0].name, "B", "{h:?}"),
        other => panic!("{other:?}"),
    }
    child.finish();
    drop(ha);
    a.disconnect().unwrap();
}
