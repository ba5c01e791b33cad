//! attack6: restart requests after 1a37083 (a normal restart completes its
//! slot's request just before it is ACTIVE).

use cf_core::requests::{self, ClaimOutcome, RequestState};
use cf_core::{testing, CreateOptions, Member, Plex, ProcessId, Region};
use std::sync::Arc;

/// A normal restart that dies *while recovering* (SIGKILLed, or fenced
/// because it hung) is a new failure with retained locks, yet its slot is
/// left with the previous life's FAILED request: nobody claims it until
/// `FAILED_RETRY` (10 min) has passed, so the member's retained locks stay
/// for ten minutes with no restart light.
///
/// Interleaving:
/// 1. D dies; request e1 posted, claimed, marked FAILED (`requests::fail`).
/// 2. The operator fixes the cause and restarts D normally
///    (`ConnectMode::Restart`, member/mod.rs `connect_with`): RECOVERING,
///    a new generation, the same incarnation.
/// 3. D is killed before `finish_recovery` (member/mod.rs:183, the only
///    place that completes e1 for it).
/// 4. The cleanup (CLEANING, under the cleanup claim) calls `post_claimed`
///    (requests.rs:345): e1 is not FREE and has the same incarnation, so it
///    returns `None`: nothing is posted, e1 stays FAILED.
///
/// Broken: a new failure is left without a claimable request (the
/// SIGKILLed restart is treated as one more failing restart light, which
/// the handler itself never counts: "a SIGKILL from outside is no reason to
/// give recovery up").
#[test]
fn a_normal_restart_killed_while_recovering_leaves_a_failed_request() {
    let (_dir, r, id) = d_failed_with_a_failed_request();
    let restarted = Member::connect_with(r.clone(), "D", cf_core::ConnectMode::Restart).unwrap();
    assert_eq!(restarted.id(), id);
    assert!(restarted.is_recovering().unwrap());
    // Killed halfway through its own recovery.
    testing::fake_reused_pid(&r, id);
    std::mem::forget(restarted);
    cf_core::cleanup_member(&r, id).unwrap();
    let v = requests::list(&r).unwrap();
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(
        v[0].state != RequestState::Failed && requests::needs_handler(&r, id).unwrap(),
        "D died recovering (a new death: new generation, retained locks) and has no \
         claimable request until FAILED_RETRY: {v:?}"
    );
}

fn d_failed_with_a_failed_request() -> (tempfile::TempDir, Arc<Region>, u32) {
    let t = tempfile::tempdir().unwrap();
    let plex = Plex {
        dir: t.path().join("p"),
    };
    let r = Arc::new(Region::create(&plex, &CreateOptions::small_for_tests()).unwrap());
    let me = ProcessId::current().unwrap();
    let dead = Member::connect(r.clone(), "D").unwrap();
    let id = dead.id();
    testing::fake_reused_pid(&r, id);
    std::mem::forget(dead);
    cf_core::cleanup_member(&r, id).unwrap();
    let e1 = match requests::claim(&r, id, 3, &me).unwrap() {
        ClaimOutcome::Claimed { epoch, .. } => epoch,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        requests::fail(
            &r,
            id,
            e1,
            &me,
            cf_core::connector::slot_view(&r, id).unwrap().generation
        )
        .unwrap(),
        requests::FailOutcome::Marked
    );
    (t, r, id)
}
