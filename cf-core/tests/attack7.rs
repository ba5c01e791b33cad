//! attack7: FAILED requests after a4dd1db (a later connection's death makes
//! a FAILED request claimable again).

use cf_core::requests::{self, ClaimOutcome, RequestState};
use cf_core::{testing, CreateOptions, Member, Plex, ProcessId, Region};
use std::sync::Arc;

/// The re-post of a4dd1db (requests.rs:350, `post_claimed`) resets only a
/// request that is FAILED *when the cleanup looks*. A handler on its way to
/// `requests::fail` (cf-node monitor.rs:541: it saw the member
/// failed-persistent at monitor.rs:500 and counted 5 failed restart lights)
/// turns the request FAILED *after* a later connection's death was cleaned
/// up, so that death (a fault: a normal restart SIGKILLed while recovering)
/// is swallowed by the FAILED state, exactly the attack6 hole.
///
/// Interleaving (now `fail` refuses: it checks under the connect latch
/// that the member is still the connection the handler judged):
/// 1. D dies (generation g1); request e1 posted, claimed by handler H; its
///    restart lights fail 5 times; H reads the slot: FAILED_PERSISTENT
///    (monitor.rs:500), attempts >= MAX_ATTEMPTS (monitor.rs:529), and is
///    descheduled (or blocks in its `eprintln!` on a full stderr pipe).
/// 2. The operator restarts D normally (RECOVERING, generation g2).
/// 3. D is SIGKILLed before `finish_recovery`.
/// 4. The cleanup of g2 calls `post_claimed` (requests.rs:349): e1 is
///    CLAIMED, not FAILED: nothing is reset, `None` returned; the slot is
///    FAILED_PERSISTENT again.
/// 5. H runs on: `requests::fail` CASes (CLAIMED, e1) -> (FAILED, e1).
///
/// Broken: a new failure (g2's death, with retained locks) has no claimable
/// request until FAILED_RETRY (10 min).
#[test]
fn a_fail_after_a_killed_restart_was_cleaned_up_leaves_a_failed_request() {
    let t = tempfile::tempdir().unwrap();
    let plex = Plex {
        dir: t.path().join("p"),
    };
    let r = Arc::new(Region::create(&plex, &CreateOptions::small_for_tests()).unwrap());
    let me = ProcessId::current().unwrap();
    // 1. D dies; the handler claims its request.
    let dead = Member::connect(r.clone(), "D").unwrap();
    let id = dead.id();
    testing::fake_reused_pid(&r, id);
    std::mem::forget(dead);
    cf_core::cleanup_member(&r, id).unwrap();
    let e1 = match requests::claim(&r, id, 3, &me).unwrap() {
        ClaimOutcome::Claimed { epoch, .. } => epoch,
        other => panic!("{other:?}"),
    };
    let judged = cf_core::connector::slot_view(&r, id).unwrap().generation;
    // 2.-4. A normal restart, killed while recovering, cleaned up.
    let restarted = Member::connect_with(r.clone(), "D", cf_core::ConnectMode::Restart).unwrap();
    assert_eq!(restarted.id(), id);
    assert!(restarted.is_recovering().unwrap());
    testing::fake_reused_pid(&r, id);
    std::mem::forget(restarted);
    cf_core::cleanup_member(&r, id).unwrap();
    assert_eq!(
        cf_core::connector::slot_view(&r, id).unwrap().state,
        cf_core::MemberState::FailedPersistent
    );
    // 5. The handler, which judged before step 2, gives up: refused, the
    //    member is not the connection it judged; it goes on handling.
    assert_eq!(
        requests::fail(&r, id, e1, &me, judged).unwrap(),
        requests::FailOutcome::MemberChanged
    );
    let v = requests::list(&r).unwrap();
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(
        v[0].state == RequestState::Claimed && v[0].claimer_pid == me.pid,
        "D's normal restart died recovering (a new death: new generation, retained locks): \
         its request must stay with its live handler, not turn FAILED: {v:?}"
    );
}
