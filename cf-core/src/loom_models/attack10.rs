//! Adversarial models (review `attack10`): the in-place re-post of a FAILED
//! request (`requests::post_or_repost`, by `retry` and by a cleanup of a
//! later generation) racing a claim of the same FAILED request once
//! `FAILED_RETRY` has passed, on the code that ships.

use super::harness::*;
use crate::connector::identity::ProcessId;
use crate::requests::{self, ClaimOutcome, FailOutcome, RequestState};
use crate::sync::Ordering;
use crate::{cleanup_member, CleanupOutcome, ConnectMode, Member};

const HANDLER_ID: u32 = 1;

/// A (process 5) died; process 1 cleaned it up (e1 posted); handler process
/// 2 claimed e1 and marked it FAILED; then `FAILED_RETRY` passed (its
/// `failed_ns` is put far in the past). Returns e1.
fn a_failed_request_due_again(r: &Arc<Region>) -> u32 {
    dies_holding(r, 5, "A", &[]);
    crate::connector::identity::model::enter(1);
    assert!(matches!(
        cleanup_member(r, 0).unwrap(),
        CleanupOutcome::Cleaned(_)
    ));
    crate::connector::identity::model::enter(2);
    let me = ProcessId::current().unwrap();
    let ClaimOutcome::Claimed { epoch: e1, .. } = requests::claim(r, 0, HANDLER_ID, &me).unwrap()
    else {
        panic!("setup: claimable")
    };
    let judged = crate::connector::load_state(r, 0).unwrap().generation;
    assert_eq!(
        requests::fail(r, 0, e1, &me, judged).unwrap(),
        FailOutcome::Marked
    );
    // FAILED_RETRY has passed.
    r.request(0).unwrap().failed_ns.store(1, Ordering::Release);
    crate::connector::identity::model::enter(1);
    e1
}

use crate::Region;

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
            let second = requests::claim(r, 0, 2, &me).unwrap();
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
            move || requests::retry(&r, 0, None, |_| {}).unwrap()
        });
        let claimer = process(6, {
            let r = r.clone();
            move || {
                let me = ProcessId::current().unwrap();
                requests::claim(&r, 0, HANDLER_ID, &me).unwrap()
            }
        });
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
            move || cleanup_member(&r, 0).unwrap()
        });
        let claimer = process(6, {
            let r = r.clone();
            move || {
                let me = ProcessId::current().unwrap();
                requests::claim(&r, 0, HANDLER_ID, &me).unwrap()
            }
        });
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
    use crate::events::{self, EventKind};
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
            move || requests::retry(&r, 0, None, |_| {}).unwrap()
        });
        let claimer = process(6, {
            let r = r.clone();
            move || {
                let me = ProcessId::current().unwrap();
                requests::claim(&r, 0, HANDLER_ID, &me).unwrap()
            }
        });
        let at_active = restart.join().unwrap().unwrap();
        let reposted = operator.join().unwrap().unwrap();
        let claimed = claimer.join().unwrap().unwrap();
        assert!(
            at_active.is_empty(),
            "retry {reposted:?} claim {claimed:?}: {at_active:?}"
        );
        let done: Vec<u64> = events::read_since(&r, since)
            .into_iter()
            .filter(|e| e.kind == EventKind::RecoveryCompleted)
            .map(|e| e.a)
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
