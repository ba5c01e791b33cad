//! Adversarial models (review `attack11`) of the claim path around a FAILED
//! request, on the code that ships (after f85444a's re-post under the claim
//! word).

use super::harness::*;
use crate::connector::identity::ProcessId;
use crate::requests::{self, ClaimOutcome, FailOutcome};
use crate::sync::Ordering;
use crate::{cleanup_member, CleanupOutcome, Region};

/// FAILED e1 of A, due again (as attack10's setup).
fn a_failed_request_due_again(r: &Arc<Region>) -> u32 {
    dies_holding(r, 5, "A", &[]);
    crate::connector::identity::model::enter(1);
    assert!(matches!(
        cleanup_member(r, 0).unwrap(),
        CleanupOutcome::Cleaned(_)
    ));
    crate::connector::identity::model::enter(2);
    let me = ProcessId::current().unwrap();
    let ClaimOutcome::Claimed { epoch: e1, .. } = requests::claim(r, 0, 1, &me).unwrap() else {
        panic!("setup: claimable")
    };
    let judged = crate::connector::load_state(r, 0).unwrap().generation;
    assert_eq!(
        requests::fail(r, 0, e1, &me, judged).unwrap(),
        FailOutcome::Marked
    );
    r.request(0).unwrap().failed_ns.store(1, Ordering::Release);
    crate::connector::identity::model::enter(1);
    e1
}

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
        let judged = crate::connector::load_state(&r, 0).unwrap().generation;
        let refail = process(8, {
            let r = r.clone();
            move || {
                let me = ProcessId::current().unwrap();
                match requests::claim(&r, 0, 1, &me).unwrap() {
                    ClaimOutcome::Claimed { epoch, .. } => {
                        Some(requests::fail(&r, 0, epoch, &me, judged).unwrap())
                    }
                    ClaimOutcome::NotClaimed => None,
                }
            }
        });
        let claimer = process(6, {
            let r = r.clone();
            move || {
                let me = ProcessId::current().unwrap();
                requests::claim(&r, 0, 2, &me).unwrap()
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
            move || cleanup_member(&r, 0).unwrap()
        });
        let claimer = process(6, {
            let r = r.clone();
            move || {
                let me = ProcessId::current().unwrap();
                requests::claim(&r, 0, 2, &me).unwrap()
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
