//! FAILED restart requests under attack: attack4 (`requests::fail` racing
//! a newer request of the same slot), attack6 (a later connection's death
//! behind a FAILED request), attack7 (a handler's give-up after such a
//! death was cleaned up).

use cf_core::requests::{self, ClaimOutcome, RequestState};
use cf_core::ConnectorId;
use cf_core::{testing, CreateOptions, Member, Plex, ProcessId, Region};
use std::sync::Arc;

/// A late `fail` of a request that was completed meanwhile clobbers the newer
/// request of the same slot: two restart lights for one failure.
///
/// Interleaving (handler = cf-node monitor's `handle`):
/// 1. D dies; request e1 is posted; handler H1 (process P) claims it; its
///    restart lights keep failing. H1 passes its checks (`is_outstanding`,
///    slot failed-persistent) and reaches `attempts >= MAX_ATTEMPTS`.
/// 2. Meanwhile D is recovered (a restart light run by hand), e1 is
///    completed, D reconnects, dies again: request e2 is posted; handler H2
///    (another thread of the same process P) claims e2 and starts restart
///    light W2 (`set_worker`).
/// 3. H1 calls `fail(e1)`: its CAS (CLAIMED, e1) -> FAILED fails, but it
///    still stores `worker = 0` and `failed_ns` and releases P's claim,
///    which is now H2's claim of e2.
/// 4. e2 is CLAIMED with claim 0 and worker 0: `needs_handler` says yes and
///    any other member claims it and starts a second restart light while W2
///    still runs. Broken: one restart light per failure (and the claim of a
///    live handler is stolen).
#[test]
fn a_late_fail_of_a_completed_request_strips_the_newer_requests_claim_and_worker() {
    // 1. D dies; request e1; H1 claims it.
    let (_dir, r, me, id, e1) = d_died_and_its_request_is_claimed();
    let judged = cf_core::connector::slot_view(&r, id).unwrap().generation;

    // 2. D recovered by a restart light run by hand; e1 completed; D
    //    reconnects (same slot) and dies again: e2 posted by its cleanup.
    let light = Member::connect_with(r.clone(), "D", cf_core::ConnectMode::Recovery).unwrap();
    light.disconnect().unwrap();
    assert!(requests::complete(&r, id, e1, "D", "D").unwrap());
    let again = Member::connect(r.clone(), "D").unwrap();
    assert_eq!(again.id(), id, "the same slot");
    testing::fake_reused_pid(&r, id);
    std::mem::forget(again);
    cf_core::cleanup_member(&r, id).unwrap();
    //    H2 (same process) claims e2 and starts restart light W2.
    let e2 = match requests::claim(&r, id, ConnectorId::new(3), &me).unwrap() {
        ClaimOutcome::Claimed { epoch, .. } => epoch,
        other => panic!("{other:?}"),
    };
    assert_ne!(e1, e2);
    let mut w2 = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let w2_id = ProcessId::of(w2.id()).unwrap().unwrap();
    requests::set_worker(&r, id, e2, &w2_id).unwrap();
    assert!(
        !requests::needs_handler(&r, id).unwrap(),
        "e2 is being handled"
    );

    // 3. H1's late fail of e1.
    let failed = requests::fail(&r, id, e1, &me, judged).unwrap() == requests::FailOutcome::Marked;

    // 4. e2 must be untouched.
    let v = requests::list(&r).unwrap();
    let still_handled = !requests::needs_handler(&r, id).unwrap();
    let _ = w2.kill();
    let _ = w2.wait();
    assert!(!failed, "e1 was no longer claimed");
    assert_eq!((v[0].state, v[0].epoch), (RequestState::Claimed, e2));
    assert_eq!(
        (v[0].worker_pid, v[0].claimer_pid, v[0].failed_unix_ns),
        (w2.id(), me.pid, 0),
        "a late fail of e1 changed request e2: {v:?}"
    );
    assert!(
        still_handled,
        "e2 (claimed, restart light W2 running) looks abandoned: another member \
         would claim it and start a second restart light"
    );
}

/// A FAILED request left for a member's previous life blocks the restart of
/// its next failure for [`requests::FAILED_RETRY`] (600 s).
///
/// Interleaving:
/// 1. D dies; request e1 is posted, claimed, its restart lights fail: FAILED.
/// 2. D restarts normally (`ConnectMode::Restart`: the failed slot, RECOVERING,
///    not a fresh connect, so the slot's incarnation is unchanged), recovers
///    itself, `finish_recovery` (ACTIVE), and is SIGKILLed before cf-node's
///    `complete_for_name` (main.rs) completes e1.
/// 3. D's cleanup posts for the new failure: `post_claimed` finds e1
///    outstanding for the *same* incarnation, so it neither completes it nor
///    posts: the new failure's only request is FAILED e1, which nobody claims
///    until FAILED_RETRY has passed. Broken: a new failure gets a request of
///    its own (it never ran the restart lights that failed).
#[test]
fn a_failed_request_of_a_previous_life_blocks_the_restart_of_a_new_failure() {
    let (_dir, r, id) = d_failed_with_a_failed_request();

    // 2. A normal restart recovers itself and dies before completing e1.
    let restarted = Member::connect_with(r.clone(), "D", cf_core::ConnectMode::Restart).unwrap();
    assert_eq!(restarted.id(), id);
    assert!(restarted.is_recovering().unwrap());
    restarted.finish_recovery().unwrap();
    testing::fake_reused_pid(&r, id);
    std::mem::forget(restarted);

    // 3. Its cleanup posts for the new failure.
    cf_core::cleanup_member(&r, id).unwrap();
    let v = requests::list(&r).unwrap();
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(
        v[0].state != RequestState::Failed && requests::needs_handler(&r, id).unwrap(),
        "the new failure of D has no claimable request (the previous life's FAILED \
         request stands in for it until FAILED_RETRY): {v:?}"
    );
}

/// An operator's `retry` of a FAILED request whose member is recovering
/// itself used to free the request with no completion: the request was never
/// completed and `recovery_completed` never recorded.
///
/// Interleaving:
/// 1. D dies; request e1 is posted, claimed, marked FAILED.
/// 2. D restarts normally (`ConnectMode::Restart`) and is recovering.
/// 3. The operator runs `cfctl restart-light D` (`requests::retry`): it used
///    to turn FAILED e1 into FREE (no completion: "nothing was recovered"),
///    then `post_if_failed` found D no longer failed-persistent and posted
///    nothing.
/// 4. D finishes its recovery and finds no request. Broken: every request is
///    completed (and `recovery_completed` recorded) exactly once.
///
/// Now the retry leaves a request of a member recovering itself alone, and
/// the recovering connection completes it before it is ACTIVE.
#[test]
fn a_retry_racing_a_self_recovery_loses_the_completion() {
    use cf_core::events::{self, EventKind};
    let (_dir, r, id) = d_failed_with_a_failed_request();
    let since = events::next_seq(&r);

    let restarted = Member::connect_with(r.clone(), "D", cf_core::ConnectMode::Restart).unwrap();
    let reposted = requests::retry(&r, id, None, |_| {}).unwrap();
    let failed_still = requests::list(&r).unwrap();
    restarted.finish_recovery().unwrap();
    let completed_late = requests::complete_for_name(&r, "D", "D").unwrap();

    let completions = events::read_since(&r, since)
        .into_iter()
        .filter(|e| e.kind() == EventKind::RecoveryCompleted)
        .count();
    let (posted, done) = requests::totals(&r);
    let outstanding = requests::list(&r).unwrap();
    drop(restarted);
    assert_eq!(
        reposted, None,
        "nothing re-posted for a member recovering itself"
    );
    assert_eq!(
        failed_still.iter().map(|v| v.state).collect::<Vec<_>>(),
        [RequestState::Failed],
        "the retry left the request alone"
    );
    assert_eq!(completed_late, 0, "completed before D was active");
    assert!(
        completions == 1 && posted == done && outstanding.is_empty(),
        "request e1 of D was not completed exactly once: recovery_completed \
         recorded {completions} times, totals posted {posted} completed {done}, \
         outstanding {outstanding:?}"
    );
}

/// A retry of a FAILED request whose member a restart light recovered (it
/// left the slot free and was killed before it completed the request)
/// completes the request instead of re-posting it for no failure.
#[test]
fn a_retry_of_a_request_whose_member_was_recovered_completes_it() {
    let (_dir, r, id) = d_failed_with_a_failed_request();
    let light = Member::connect_with(r.clone(), "D", cf_core::ConnectMode::Recovery).unwrap();
    light.disconnect().unwrap();

    let reposted = requests::retry(&r, id, None, |_| {}).unwrap();
    let (posted, done) = requests::totals(&r);
    assert_eq!(reposted, None);
    assert!(requests::list(&r).unwrap().is_empty());
    assert_eq!((posted, done), (1, 1));
}

/// A retry of a FAILED request whose member is still failed re-posts it: a
/// new epoch, pending, claimable at once.
#[test]
fn a_retry_of_a_failed_request_reposts_it() {
    let (_dir, r, id) = d_failed_with_a_failed_request();
    let before = requests::list(&r).unwrap()[0].epoch;
    let reposted = requests::retry(&r, id, None, |_| {}).unwrap();
    let v = requests::list(&r).unwrap();
    assert_eq!(reposted, Some(before.wrapping_add(1)));
    assert_eq!(
        (v[0].state, v[0].epoch),
        (RequestState::Pending, before.wrapping_add(1))
    );
    assert!(requests::needs_handler(&r, id).unwrap());
}

// --- attack6 ---------------------------------------------------------------

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

// --- attack7 ---------------------------------------------------------------

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
    // 1. D dies; the handler claims its request.
    let (_dir, r, me, id, e1) = d_died_and_its_request_is_claimed();
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

/// D (connector `id`) died, was cleaned up, and its request `e1` was claimed
/// and marked FAILED (its restart lights kept failing).
fn d_failed_with_a_failed_request() -> (tempfile::TempDir, Arc<Region>, ConnectorId) {
    let (t, r, me, id, e1) = d_died_and_its_request_is_claimed();
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

/// D (connector `id`) died and was cleaned up; its request `e1` is claimed
/// by this process (as handler connector 3).
fn d_died_and_its_request_is_claimed(
) -> (tempfile::TempDir, Arc<Region>, ProcessId, ConnectorId, u32) {
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
    let e1 = match requests::claim(&r, id, ConnectorId::new(3), &me).unwrap() {
        ClaimOutcome::Claimed { epoch, .. } => epoch,
        other => panic!("{other:?}"),
    };
    (t, r, me, id, e1)
}
