//! Models of the FAILED restart request's lifecycle on the code that ships
//! (adversarial reviews attack9, attack10, attack11): a normal restart's
//! completion before ACTIVE (`Member::finish_recovery`) racing a retry and a
//! handler; `requests::fail` racing a later death and a claim; the in-place
//! re-post (`requests::post_or_repost`, by `retry` and by a cleanup) racing
//! a due claim; a due claim racing a re-fail of the same epoch.

use super::harness::*;
use crate::connector::identity::ProcessId;
use crate::connector::slot_view;
use crate::events::{self, Completion, EventData};
use crate::ids::ConnectorId;
use crate::requests::{self, ClaimOutcome, FailOutcome, RequestState};
use crate::sync::Ordering;
use crate::{cleanup_member, CleanupOutcome, ConnectMode, Member, MemberState, Region};
use std::sync::atomic::AtomicUsize;

/// Connector id the handlers give as theirs (recorded only).
const HANDLER_ID: ConnectorId = ConnectorId::new(1);

/// A (process 5) died; process 1 cleaned it up (request e1 posted); handler
/// process 2 claimed e1 and marked it FAILED for the generation it judged.
/// Returns e1 and that generation.
fn a_failed_with_a_failed_request(r: &Arc<Region>) -> (u32, u32) {
    dies_holding(r, 5, "A", &[]);
    crate::connector::identity::model::enter(1);
    assert!(matches!(
        cleanup_member(r, cid(0)).unwrap(),
        CleanupOutcome::Cleaned(_)
    ));
    let (e1, judged) = a_request_claimed_by(r, 2);
    let me = ProcessId::current().unwrap();
    assert_eq!(
        requests::fail(r, cid(0), e1, &me, judged).unwrap(),
        FailOutcome::Marked
    );
    crate::connector::identity::model::enter(1);
    (e1, judged)
}

/// Process `pid` claims A's request (returns its epoch and the generation of
/// the failed-persistent slot it judged); the caller stays `pid`.
fn a_request_claimed_by(r: &Arc<Region>, pid: u32) -> (u32, u32) {
    crate::connector::identity::model::enter(pid);
    let me = ProcessId::current().unwrap();
    let ClaimOutcome::Claimed { epoch, .. } = requests::claim(r, cid(0), HANDLER_ID, &me).unwrap()
    else {
        panic!("setup: A's request is claimable")
    };
    let slot = slot_view(r, cid(0)).unwrap();
    assert_eq!(slot.state, MemberState::FailedPersistent);
    (epoch, slot.generation)
}

/// A handler (`Monitor::consider` + `handle`, cf-node/src/monitor.rs, the
/// branches that do not start a restart light): claim A's request; while it
/// is outstanding, complete it if A is free or active and alive, wait while
/// a live connection recovers A, and stop (it would clean up or start a
/// restart light, keeping the claim) otherwise. Returns the epoch claimed.
fn handler(r: &Arc<Region>) -> Option<u32> {
    let me = ProcessId::current().unwrap();
    let ClaimOutcome::Claimed { epoch, .. } = requests::claim(r, cid(0), HANDLER_ID, &me).unwrap()
    else {
        return None;
    };
    while requests::is_outstanding(r, cid(0), epoch).unwrap() {
        let slot = slot_view(r, cid(0)).unwrap();
        match slot.state {
            MemberState::Free => {
                requests::complete(r, cid(0), epoch, "A", "H").unwrap();
                break;
            }
            MemberState::Active if slot.is_alive() => {
                requests::complete(r, cid(0), epoch, "A", "H").unwrap();
                break;
            }
            MemberState::Recovering if slot.is_alive() => loom::thread::yield_now(),
            _ => break,
        }
    }
    Some(epoch)
}

/// The RecoveryCompleted events since `since`: (epoch, how).
fn completions(r: &Region, since: u64) -> Vec<(u32, Completion)> {
    events::read_since(r, since)
        .into_iter()
        .filter_map(|e| match e.data {
            EventData::RecoveryCompleted { epoch, how } => Some((epoch, how)),
            _ => None,
        })
        .collect()
}

/// The three racers of model 1: A's normal restart (process 3: connect in
/// Restart mode, back out, `finish_recovery`; `crash` arms its kill at
/// `recovery.completed_before_active`), an operator's `cfctl restart-light
/// A` (process 4: `requests::retry`) and a handler (process 6). Returns, for
/// the restart, what the request list held the moment it was ACTIVE.
fn restart_retry_handler(
    r: &Arc<Region>,
    crash: bool,
) -> (Option<Vec<requests::RequestView>>, Option<u32>, Option<u32>) {
    let restart = process(3, {
        let r = r.clone();
        move || {
            if crash {
                crate::crash::model::arm("recovery.completed_before_active", 1);
            }
            let m = Member::connect_with(r.clone(), "A", ConnectMode::Restart).unwrap();
            assert!(m.is_recovering().unwrap());
            m.finish_recovery().unwrap();
            // ACTIVE now: nothing can post for A until it dies.
            let at_active = requests::list(&r).unwrap();
            std::mem::forget(m);
            at_active
        }
    });
    let operator = process(4, {
        let r = r.clone();
        move || requests::retry(&r, cid(0), None, |_| {}).unwrap()
    });
    let handler = process(6, {
        let r = r.clone();
        move || handler(&r)
    });
    let at_active = restart.join().unwrap();
    let reposted = operator.join().unwrap().unwrap();
    let claimed = handler.join().unwrap().unwrap();
    (at_active, reposted, claimed)
}

/// Model 1: A's request e1 is FAILED; A restarts normally (its
/// `finish_recovery` completes the slot's request under the connect latch,
/// then A is ACTIVE) while an operator re-posts the request and a handler
/// claims whatever is pending and completes it once A is active.
///
/// Required (requests.rs "A normal restart completes before it is ACTIVE",
/// DESIGN section 2): the moment A is ACTIVE no request of its slot is
/// outstanding; at the end none is; every completed request's
/// `recovery_completed` is recorded once (one per epoch, as many as the
/// list's completed total grew by).
///
/// Found (bound 2, at once): the operator's retry runs first (A still
/// failed-persistent: FAILED e1 -> FREE -> PENDING e2, requests.rs:648);
/// A's restart connects RECOVERING; `finish_recovery` takes the latch and
/// `complete_outstanding` loads (PENDING, e2) (requests.rs:684) and calls
/// `complete_as`, which loads it again; the handler's `claim` CASes
/// (PENDING, e2) -> (CLAIMED, e2) (requests.rs:460, the claim is not under
/// the connect latch); `complete_as`'s CAS from PENDING fails
/// (requests.rs:732) and it returns false; `finish_recovery` ignores the
/// result (member/mod.rs:183) and sets A ACTIVE (member/mod.rs:185) with e2
/// CLAIMED. The handler completes e2 later (b = 0, after A is ACTIVE), or,
/// if A dies first, A's next cleanup finds e2 outstanding and posts nothing
/// (no `request_posted` for that death; e2 stands for it). Fix:
/// `complete_outstanding` retries while the slot's request is not FREE
/// (reload, `complete_as` the epoch it sees; under the latch nothing posts
/// meanwhile, only claim/unclaim move it) -- with that loop this model
/// passes (15,299 executions).
#[test]
fn a_normal_restart_racing_a_retry_and_a_handler_completes_once() {
    check(2, || {
        let r = region(2, 1);
        a_failed_with_a_failed_request(&r);
        let since = events::next_seq(&r);
        let (_, done0) = requests::totals(&r);
        let (at_active, reposted, claimed) = restart_retry_handler(&r, false);
        let at_active = at_active.expect("not armed");
        assert!(
            at_active.is_empty(),
            "A is ACTIVE with a request outstanding (retry {reposted:?}, handler claimed \
             {claimed:?}): {at_active:?}"
        );
        assert_eq!(
            crate::connector::load_state(&r, cid(0)).unwrap().state,
            MemberState::Active
        );
        let left = requests::list(&r).unwrap();
        assert!(left.is_empty(), "A is ACTIVE: {left:?}");
        let done = completions(&r, since);
        let (_, done1) = requests::totals(&r);
        let mut epochs: Vec<u32> = done.iter().map(|c| c.0).collect();
        epochs.dedup();
        assert_eq!(
            epochs.len(),
            done.len(),
            "an epoch completed twice: {done:?}"
        );
        assert_eq!(
            done.len() as u64,
            done1 - done0,
            "events {done:?} vs the completed total"
        );
        assert_eq!(done.len(), 1, "A's one failure, one completion: {done:?}");
    });
}

/// Model 1, the list's totals: after the same race (and nothing left
/// outstanding) every request posted was completed once, so the totals
/// `cfctl display structures` prints ("N outstanding; P posted, C
/// completed") balance: P = C + N.
///
/// Found (every execution where the retry runs before the restart): the
/// retry's FAILED e1 -> FREE (requests.rs:648, "no completion: nothing was
/// recovered") removes e1 from the list without counting it; e2 is posted
/// and completed: 0 outstanding, 2 posted, 1 completed. The cleanup's
/// attack6 reset (requests.rs:363) does the same. Fix: count the dropped
/// request (a third total, "withdrawn", or `completed` with no event), or
/// re-post in place (FAILED -> PENDING with the next epoch, counting no
/// new post).
#[test]
fn the_request_totals_balance_after_a_retry_and_a_normal_restart() {
    check(2, || {
        let r = region(2, 1);
        a_failed_with_a_failed_request(&r);
        let (at_active, reposted, claimed) = restart_retry_handler(&r, false);
        assert!(at_active.is_some());
        let (posted, done) = requests::totals(&r);
        let outstanding = requests::list(&r).unwrap().len() as u64;
        assert_eq!(
            posted,
            done + outstanding,
            "retry {reposted:?}, handler {claimed:?}: {outstanding} outstanding, \
             {posted} posted, {done} completed"
        );
    });
}

/// Model 1, killed: the same race with A's restart killed at
/// `recovery.completed_before_active` (its request completed, A still
/// RECOVERING). After A's cleanup, A is failed-persistent with a request a
/// handler can claim (pending), or one a live handler holds; and no epoch is
/// completed twice.
#[test]
fn a_normal_restart_killed_after_completing_leaves_a_claimable_request() {
    static REPOSTED: AtomicUsize = AtomicUsize::new(0);
    check(2, || {
        let r = region(2, 1);
        a_failed_with_a_failed_request(&r);
        let since = events::next_seq(&r);
        let (at_active, reposted, claimed) = restart_retry_handler(&r, true);
        assert!(at_active.is_none(), "killed at its crash point");
        crate::connector::identity::model::enter(1);
        assert!(matches!(
            cleanup_member(&r, cid(0)).unwrap(),
            CleanupOutcome::Cleaned(_)
        ));
        assert_eq!(
            crate::connector::load_state(&r, cid(0)).unwrap().state,
            MemberState::FailedPersistent
        );
        let reqs = requests::list(&r).unwrap();
        assert_eq!(reqs.len(), 1, "{reqs:?}");
        let q = &reqs[0];
        assert!(
            q.state == RequestState::Pending || q.state == RequestState::Claimed && q.claimer_alive,
            "A died recovering (retry {reposted:?}, handler claimed {claimed:?}), yet its \
             request is not claimable: {q:?}"
        );
        let done = completions(&r, since);
        let mut epochs: Vec<u32> = done.iter().map(|c| c.0).collect();
        epochs.dedup();
        assert_eq!(
            epochs.len(),
            done.len(),
            "an epoch completed twice: {done:?}"
        );
        assert!(
            !epochs.contains(&q.epoch),
            "the outstanding request was completed already: {done:?} {q:?}"
        );
        if reposted.is_some() {
            hit(&REPOSTED);
        }
    });
    assert!(
        hits(&REPOSTED) > 0,
        "the retry never re-posted before the restart"
    );
}

/// Model 2: handler H (process 2) claimed A's request e1 and judged A's
/// failed-persistent generation g1 (its lights kept failing); it now marks
/// the request FAILED (`requests::fail`, under the connect latch, for g1)
/// while a restart light run by hand connects as A (process 3, a later
/// connection: generation g2) and is killed, its cleanup (process 4, the
/// same model thread: `post_claimed`, which resets a FAILED request of an
/// earlier generation) runs, and another handler (process 6) tries to claim.
///
/// Required: A ends failed-persistent with a request that is pending
/// (claimable), or claimed by a live handler; never FAILED, since no
/// restart light of a handler has tried the death of g2.
#[test]
fn a_fail_racing_a_later_death_and_a_claim_leaves_it_claimable() {
    static RESET: AtomicUsize = AtomicUsize::new(0);
    static CHANGED: AtomicUsize = AtomicUsize::new(0);
    check(3, || {
        let r = region(2, 1);
        dies_holding(&r, 5, "A", &[]);
        crate::connector::identity::model::enter(1);
        assert!(matches!(
            cleanup_member(&r, cid(0)).unwrap(),
            CleanupOutcome::Cleaned(_)
        ));
        let (e1, g1) = a_request_claimed_by(&r, 2);
        crate::connector::identity::model::enter(1);
        let failer = process(2, {
            let r = r.clone();
            move || {
                let me = ProcessId::current().unwrap();
                requests::fail(&r, cid(0), e1, &me, g1).unwrap()
            }
        });
        let later = process(3, {
            let r = r.clone();
            move || {
                let light = Member::connect_with(r.clone(), "A", ConnectMode::Recovery).unwrap();
                let g2 = light.generation();
                kill(3);
                std::mem::forget(light);
                crate::connector::identity::model::enter(4);
                let out = cleanup_member(&r, cid(0)).unwrap();
                (g2, out)
            }
        });
        let claimer = claimer(&r, 6);
        let failed = failer.join().unwrap().unwrap();
        let (g2, cleaned) = later.join().unwrap().unwrap();
        let claimed = claimer.join().unwrap().unwrap();
        assert!(matches!(cleaned, CleanupOutcome::Cleaned(_)), "{cleaned:?}");
        let st = crate::connector::load_state(&r, cid(0)).unwrap();
        assert_eq!(
            (st.state, st.generation),
            (MemberState::FailedPersistent, g2)
        );
        let reqs = requests::list(&r).unwrap();
        assert_eq!(reqs.len(), 1, "{reqs:?}");
        let q = &reqs[0];
        assert!(
            q.state == RequestState::Pending || q.state == RequestState::Claimed && q.claimer_alive,
            "A's death of g2 has no claimable request (fail {failed:?}, claim {claimed:?}): {q:?}"
        );
        if q.state == RequestState::Claimed {
            // A live handler holds it: the one whose fail saw A changed
            // (it goes on handling), or the claimer that won.
            assert!(
                failed == FailOutcome::MemberChanged && q.epoch == e1
                    || matches!(claimed, ClaimOutcome::Claimed { epoch, .. } if epoch == q.epoch),
                "claimed by whom? fail {failed:?}, claim {claimed:?}: {q:?}"
            );
        }
        match failed {
            // Marked FAILED, then the cleanup of g2 made it claimable again.
            FailOutcome::Marked => hit(&RESET),
            FailOutcome::MemberChanged => hit(&CHANGED),
            FailOutcome::NotOutstanding => {}
        }
    });
    assert!(
        hits(&RESET) > 0,
        "never marked FAILED before the later death"
    );
    assert!(
        hits(&CHANGED) > 0,
        "the fail never saw the later connection"
    );
}

/// [`a_failed_with_a_failed_request`], then `FAILED_RETRY` passed (its
/// `failed_ns` put far in the past): a due claim takes it as it is.
/// Returns e1.
fn a_failed_request_due_again(r: &Arc<Region>) -> u32 {
    let (e1, _) = a_failed_with_a_failed_request(r);
    r.request(cid(0))
        .unwrap()
        .failed_ns
        .store(1, Ordering::Release);
    e1
}

/// A handler process `pid` claiming A's request (as it is).
fn claimer(r: &Arc<Region>, pid: u32) -> loom::thread::JoinHandle<Option<ClaimOutcome>> {
    let r = r.clone();
    process(pid, move || {
        let me = ProcessId::current().unwrap();
        requests::claim(&r, cid(0), HANDLER_ID, &me).unwrap()
    })
}

// --- attack10: the in-place re-post against a due claim -------------------

/// After the race: whoever holds the request CLAIMED must be named by its
/// claim word, so no other live member can claim it too.
fn one_claimer(r: &Arc<Region>, claimed: ClaimOutcome, what: &str) {
    let reqs = requests::list(r).unwrap();
    let Some(q) = reqs.first() else { return };
    if let ClaimOutcome::Claimed { epoch, .. } = claimed {
        if q.state == RequestState::Claimed && q.epoch == epoch {
            // Process 6 is alive and holds it: a second claimer must lose.
            crate::connector::identity::model::enter(7);
            let me = ProcessId::current().unwrap();
            let second = requests::claim(r, cid(0), cid(2), &me).unwrap();
            assert_eq!(
                second,
                ClaimOutcome::NotClaimed,
                "{what}: request e{epoch} claimed by live process 6, yet its claim word is \
                 {:#x} and process 7 claimed it too: {q:?}",
                q.claimer_pid
            );
        }
    }
}

/// Model 1: an operator's `cfctl restart-light A` (process 4,
/// `requests::retry`: re-posts FAILED e1 in place as PENDING e2) races a
/// handler (process 6) claiming FAILED e1 as it is (FAILED_RETRY passed).
/// Required (requests.rs "Claim": exactly one claimer wins): if process 6
/// holds the request CLAIMED, its claim word names it.
///
/// Found (bound 2, at once; passes on 7b0928a): process 6's `claim` loads
/// (FAILED, e1), due (requests.rs:461), and takes the claim word
/// (requests.rs:468); the retry's `post_or_repost` then writes the fields
/// with the state still FAILED e1, among them `claim = 0`
/// (requests.rs:373); process 6 reloads (FAILED, e1), unchanged, and CASes
/// it to (CLAIMED, e1) (requests.rs:482); the retry's CAS fails
/// (requests.rs:391, returns None). e1 is CLAIMED with claim word 0 (and
/// attempts, failed_ns, reason, generation rewritten): `needs_handler` says
/// it needs one, and process 7 claims e1 too (two live handlers, two restart
/// lights). Before the commit the retry CASed FAILED -> FREE before writing.
#[test]
fn a_retry_racing_a_due_claim_keeps_one_claimer() {
    check(2, || {
        let r = region(2, 1);
        a_failed_request_due_again(&r);
        let operator = process(4, {
            let r = r.clone();
            move || requests::retry(&r, cid(0), None, |_| {}).unwrap()
        });
        let claimer = claimer(&r, 6);
        let reposted = operator.join().unwrap().unwrap();
        let claimed = claimer.join().unwrap().unwrap();
        one_claimer(&r, claimed, &format!("retry {reposted:?}"));
    });
}

/// Model 2: the same with the cleanup's re-post: a restart light run by
/// hand connects as A (a later generation) and is killed; its cleanup
/// (process 4) re-posts the FAILED request of the earlier generation in
/// place while handler process 6 claims it as it is (FAILED_RETRY passed).
///
/// Found: the same interleaving through the cleanup's re-post
/// (`post_claimed` -> `post_or_repost`, requests.rs:366-391).
#[test]
fn a_cleanup_repost_racing_a_due_claim_keeps_one_claimer() {
    check(2, || {
        let r = region(2, 1);
        a_failed_request_due_again(&r);
        crate::connector::identity::model::enter(3);
        let light = Member::connect_with(r.clone(), "A", ConnectMode::Recovery).unwrap();
        kill(3);
        std::mem::forget(light);
        crate::connector::identity::model::enter(1);
        let cleaner = process(4, {
            let r = r.clone();
            move || cleanup_member(&r, cid(0)).unwrap()
        });
        let claimer = claimer(&r, 6);
        let cleaned = cleaner.join().unwrap().unwrap();
        let claimed = claimer.join().unwrap().unwrap();
        one_claimer(&r, claimed, &format!("cleanup {cleaned:?}"));
    });
}

/// Model 3: A's normal restart (process 3: `finish_recovery`, whose
/// `complete_outstanding` retries until the slot's request is free) races an
/// operator's retry (process 4) and a due claim of the FAILED request
/// (process 6). Required: A is ACTIVE with nothing outstanding, every
/// completed epoch recorded once, and the totals balance (posted =
/// completed + outstanding).
#[test]
fn a_normal_restart_racing_a_retry_and_a_due_claim_completes_once() {
    use crate::events::{self, EventData};
    check(2, || {
        let r = region(2, 1);
        a_failed_request_due_again(&r);
        let since = events::next_seq(&r);
        let restart = process(3, {
            let r = r.clone();
            move || {
                let m = Member::connect_with(r.clone(), "A", ConnectMode::Restart).unwrap();
                m.finish_recovery().unwrap();
                let at_active = requests::list(&r).unwrap();
                std::mem::forget(m);
                at_active
            }
        });
        let operator = process(4, {
            let r = r.clone();
            move || requests::retry(&r, cid(0), None, |_| {}).unwrap()
        });
        let claimer = claimer(&r, 6);
        let at_active = restart.join().unwrap().unwrap();
        let reposted = operator.join().unwrap().unwrap();
        let claimed = claimer.join().unwrap().unwrap();
        assert!(
            at_active.is_empty(),
            "retry {reposted:?} claim {claimed:?}: {at_active:?}"
        );
        let done: Vec<u32> = events::read_since(&r, since)
            .into_iter()
            .filter_map(|e| match e.data {
                EventData::RecoveryCompleted { epoch, .. } => Some(epoch),
                _ => None,
            })
            .collect();
        assert_eq!(done.len(), 1, "{done:?}");
        let (posted, completed) = requests::totals(&r);
        let outstanding = requests::list(&r).unwrap().len() as u64;
        assert_eq!(
            posted,
            completed + outstanding,
            "retry {reposted:?} claim {claimed:?}"
        );
    });
}

// --- attack11: a due claim against a re-fail of the same epoch -------------

/// Model 1: handler process 8 claims the due FAILED e1 and, its lights
/// failing again, marks it FAILED again (same epoch e1, `failed_ns` now:
/// not due for FAILED_RETRY); handler process 6 claims concurrently.
/// Required (requests.rs module docs, "Failed": nobody claims a FAILED
/// request again until it is re-posted or FAILED_RETRY has passed since it
/// failed): process 6 never ends holding e1 CLAIMED after process 8's
/// fail, i.e. if 8 marked it FAILED and 6 claimed it, 6's claim came first
/// (then 8 could not have claimed it: exactly one claimer).
///
/// Found (bound 2, at once): process 6's `claim` loads (FAILED, e1)
/// (requests.rs:508) and the old `failed_ns` (due, requests.rs:510);
/// process 8 claims e1, and `fail` stamps `failed_ns` and CASes it back to
/// (FAILED, e1) (requests.rs:629-640): the same state word, same epoch (a
/// due claim keeps the epoch). Process 6 then takes the free claim word
/// (requests.rs:517), reloads (FAILED, e1) == seen (ABA), and CASes it to
/// CLAIMED: a request marked FAILED a moment ago is claimed again without
/// FAILED_RETRY (another round of restart lights). Fix: check `retry_due`
/// again after `try_claim` (under the claim word: a re-fail needs the word),
/// or bump the epoch on a due claim.
#[test]
fn a_due_claim_does_not_claim_a_request_that_failed_again_meanwhile() {
    check(2, || {
        let r = region(2, 1);
        a_failed_request_due_again(&r);
        let judged = crate::connector::load_state(&r, cid(0)).unwrap().generation;
        let refail = process(8, {
            let r = r.clone();
            move || {
                let me = ProcessId::current().unwrap();
                match requests::claim(&r, cid(0), cid(1), &me).unwrap() {
                    ClaimOutcome::Claimed { epoch, .. } => {
                        Some(requests::fail(&r, cid(0), epoch, &me, judged).unwrap())
                    }
                    ClaimOutcome::NotClaimed => None,
                }
            }
        });
        let claimer = process(6, {
            let r = r.clone();
            move || {
                let me = ProcessId::current().unwrap();
                requests::claim(&r, cid(0), cid(2), &me).unwrap()
            }
        });
        let refailed = refail.join().unwrap().unwrap();
        let claimed = claimer.join().unwrap().unwrap();
        let q = requests::list(&r).unwrap();
        assert!(
            !(refailed == Some(FailOutcome::Marked)
                && matches!(claimed, ClaimOutcome::Claimed { .. })),
            "process 8 claimed due e1 and marked it FAILED again (not due for FAILED_RETRY), \
             yet process 6 claimed it too ({claimed:?}): {:?}",
            q.first()
                .map(|q| (q.state, q.epoch, q.failed_unix_ns, q.claimer_pid))
        );
    });
}

/// Model 2: a cleanup re-post of the FAILED request (a later generation,
/// killed) that may give up after REPOST_TRIES while a due claimer holds
/// the claim word. Required: afterwards the death has a claimable or
/// claimed request (PENDING, or CLAIMED by the live claimer).
#[test]
fn a_repost_that_gives_up_leaves_the_request_handled() {
    use crate::{ConnectMode, Member};
    check(2, || {
        let r = region(2, 1);
        a_failed_request_due_again(&r);
        crate::connector::identity::model::enter(3);
        let light = Member::connect_with(r.clone(), "A", ConnectMode::Recovery).unwrap();
        kill(3);
        std::mem::forget(light);
        crate::connector::identity::model::enter(1);
        let cleaner = process(4, {
            let r = r.clone();
            move || cleanup_member(&r, cid(0)).unwrap()
        });
        let claimer = process(6, {
            let r = r.clone();
            move || {
                let me = ProcessId::current().unwrap();
                requests::claim(&r, cid(0), cid(2), &me).unwrap()
            }
        });
        let cleaned = cleaner.join().unwrap().unwrap();
        let claimed = claimer.join().unwrap().unwrap();
        let q = requests::list(&r).unwrap();
        let q = q.first().expect("a request");
        assert!(
            q.state == crate::requests::RequestState::Pending
                || q.state == crate::requests::RequestState::Claimed
                    && matches!(claimed, ClaimOutcome::Claimed { .. }),
            "cleanup {cleaned:?} claim {claimed:?}: {q:?}"
        );
    });
}
