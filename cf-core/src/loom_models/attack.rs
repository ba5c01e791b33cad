//! Adversarial models (review `attack1`): each one asserts an invariant of
//! SPEC section 4 or of `lock/entry.rs` on the code that ships, and failed on
//! the code it was written against.

use super::harness::*;
use crate::lock::records;
use crate::lock::word;
use crate::sync::Ordering;
use crate::{Member, Mode};
use loom::thread;
use std::time::Duration;

/// A half-made request that gives up without ever latching (its latch wait
/// times out) leaves its member's bit behind.
///
/// Member A (one process, two threads) holds R1 on entry E, which is mixed.
/// Thread 1 releases R1 on the latched path: `entry::release` sees, in
/// `holds_other_on`, thread 2's record for R3 (same entry) HELD -- a
/// half-made request between its tag and its failed CAS -- and so unlatches
/// with A's bit kept. Thread 2's `lock(R3, .., 0)` then finds the latch busy,
/// times out in `entry::latch` and frees its record in `slow_acquire`
/// (`free_record()` on `LatchError::TimedOut`) without latching, so nobody
/// recomputes A's bit (rule 3 says half-made requests "always latch
/// afterwards": this one does not). At rest the word names A on an entry
/// where A holds nothing: `verify` reports it.
///
/// (Worse: in the same interleaving, a SIGKILL of A between thread 1's
/// `tag.store(TAG_FREE)` and its `unlatch` leaves E latched by A with no
/// record of A on E; A's cleanup never visits E, and every later request or
/// release on E fails with "is failed-persistent but holds the latch".)
#[test]
fn timed_out_half_made_request_leaves_a_stale_bit() {
    check(2, || {
        let r = region(1, 2);
        let names = colliding(3);
        let e = entry_of(&names[0]);
        let m = Arc::new(Member::connect(r.clone(), "A").unwrap());
        // R1 held by holder 1 (fast path), R2 taken and released by holder 2
        // (latched path): E is left mixed, naming A for R1.
        let mut h1 = m.holder().unwrap();
        let r1 = take(&mut h1, &names[0], Mode::Exclusive);
        let mut h2 = m.holder().unwrap();
        let r2 = take(&mut h2, &names[1], Mode::Exclusive);
        h2.unlock(r2).unwrap();
        let w = r.word(e).unwrap().load(Ordering::Relaxed);
        assert!(w & word::MIXED != 0, "setup: E is mixed ({w:#x})");
        let releaser = thread::spawn(move || {
            h1.unlock(r1).unwrap();
            h1
        });
        let r3 = names[2].clone();
        let asker = thread::spawn(move || {
            let answer = match h2.lock(&r3, Mode::Exclusive, Duration::ZERO) {
                Ok(id) => {
                    h2.unlock(id).unwrap();
                    format!("granted {id:?}")
                }
                Err(e @ (crate::WaitError::Timeout(_) | crate::WaitError::Retained(_))) => {
                    format!("{e:?}")
                }
                Err(e) => panic!("{e}"),
            };
            (h2, answer)
        });
        drop(releaser.join().unwrap());
        let (h2, answer) = asker.join().unwrap();
        drop(h2);
        // At rest: A holds nothing anywhere (`inspect::verify`, not built
        // under loom, reports "lock entry E names connector 0, which holds
        // nothing there").
        assert!(records::all_records(&r, cid(0)).unwrap().is_empty());
        let w = r.word(e).unwrap().load(Ordering::Relaxed);
        assert!(
            word::Word(w).is_free(),
            "A holds nothing on E, yet the word is {w:#x} (R3 answered {answer})"
        );
        Arc::into_inner(m).unwrap().disconnect().unwrap();
    });
}

/// The cleanup of a killed restart light posts a restart request after the
/// member's recovery has already ended.
///
/// X failed; its request is outstanding; its first restart light (process 3)
/// reconnected and was killed (`restart_light.connected`). A cleaner
/// (process 6) cleans the dead restart light up: `walk` ends with the CAS to
/// FAILED_PERSISTENT, and only then does `announce` call `requests::post`.
/// In between, X's request handler (process 4, which keeps looking at the
/// slot) starts a second restart light: it reconnects (the slot is
/// failed-persistent), releases, disconnects (the slot is FREE) and completes
/// the request. The cleaner's `post` then finds the entry FREE and posts a
/// new request, for a member whose recovery is over, under the empty name of
/// the vacated slot (or the name of whoever took the slot since). A handler
/// will complete it and record a second `recovery_completed` for one failure
/// (or one for a member that never failed).
///
/// Required: once the restart light has completed X's request, nothing is
/// outstanding and exactly one request was ever posted for X.
#[test]
fn a_cleanup_posts_after_the_recovery_it_announces_has_ended() {
    use crate::{cleanup_member, CleanupOutcome, ConnectMode, MemberState};
    check(2, || {
        let r = region(1, 1);
        // X (process 5) fails; process 1 cleans it up and posts its request.
        crate::connector::identity::model::enter(5);
        let x = Member::connect(r.clone(), "X").unwrap();
        kill(5);
        std::mem::forget(x);
        crate::connector::identity::model::enter(1);
        assert!(matches!(
            cleanup_member(&r, cid(0)).unwrap(),
            CleanupOutcome::Cleaned(_)
        ));
        assert_eq!(crate::requests::totals(&r).0, 1);
        // The first restart light (process 3) reconnects and is killed.
        crate::connector::identity::model::enter(3);
        let light = Member::connect_with(r.clone(), "X", ConnectMode::Recovery).unwrap();
        kill(3);
        std::mem::forget(light);
        let since = crate::events::next_seq(&r);
        let cleaner = {
            let r = r.clone();
            process(6, move || cleanup_member(&r, cid(0)).unwrap())
        };
        // The handler's second restart light (process 4), started as soon as
        // the slot is failed-persistent again.
        let second = {
            let r = r.clone();
            process(4, move || {
                while crate::connector::load_state(&r, cid(0)).unwrap().state
                    != MemberState::FailedPersistent
                {
                    thread::yield_now();
                }
                let m = Member::connect_with(r.clone(), "X", ConnectMode::Recovery).unwrap();
                m.release_all_held(|| {}).unwrap();
                let req = crate::requests::find(&r, "X").unwrap();
                m.disconnect().unwrap();
                let (id, epoch) = req.expect("X's request is outstanding");
                assert!(crate::requests::complete(&r, id, epoch, "X", "X").unwrap());
            })
        };
        assert!(matches!(
            cleaner.join().unwrap().unwrap(),
            CleanupOutcome::Cleaned(_)
        ));
        second.join().unwrap().unwrap();
        let completed = crate::events::read_since(&r, since)
            .into_iter()
            .filter(|e| e.kind() == crate::events::EventKind::RecoveryCompleted)
            .count();
        assert_eq!(completed, 1);
        let reqs = crate::requests::list(&r).unwrap();
        assert!(
            reqs.is_empty(),
            "X's recovery is over, yet a request is outstanding: {reqs:?}"
        );
        assert_eq!(
            crate::requests::totals(&r).0,
            1,
            "one failure of X, one request"
        );
    });
}

/// Two posters of one restart request: the loser's field writes land on
/// the winner's request after it was claimed, and clear its claim.
///
/// `requests::post` writes the entry's fields (`claim`, `worker`, `who`,
/// name, incarnation...) and only then CASes the state from the FREE it
/// loaded. Two posters that both loaded FREE both write; the loser writes
/// after the winner's CAS, possibly after the request was claimed, storing 0
/// into `claim` (and `worker`). The claimed request then looks abandoned
/// (`needs_handler`: claimer and worker both "dead"), and a second member
/// claims it while the first handler is alive and at work: two restarters
/// (two `claimed` events, two restart lights started) for one failure.
/// Concurrent posters are ordinary: every member's restarter sweep posts for
/// a failed-persistent member with no request and no cleanup in progress
/// (its cleaner died before posting).
///
/// Required: while its claimer lives, a claimed request is claimed by nobody
/// else.
#[test]
fn a_losing_poster_clears_the_winners_claim() {
    use crate::requests::{self, ClaimOutcome};
    use crate::ProcessId;
    check(2, || {
        let r = region(1, 1);
        let me = |pid| ProcessId { pid, start_time: 1 };
        // Monitor of member 2: its sweep posts, its restarter claims.
        let first = {
            let r = r.clone();
            process(2, move || {
                let _ = requests::post(&r, cid(0), None, |_| {}).unwrap();
                requests::claim(&r, cid(0), cid(0), &me(2)).unwrap()
            })
        };
        // Monitor of member 3: its sweep posts too.
        let second = {
            let r = r.clone();
            process(3, move || {
                let _ = requests::post(&r, cid(0), None, |_| {}).unwrap();
            })
        };
        let claimed = first.join().unwrap().unwrap();
        second.join().unwrap().unwrap();
        if !matches!(claimed, ClaimOutcome::Claimed { .. }) {
            return; // the second poster's request was posted after the claim attempt
        }
        assert!(
            !requests::needs_handler(&r, cid(0)).unwrap(),
            "a request claimed by a live member needs no new handler"
        );
        // Member 4's restarter looks at it.
        crate::connector::identity::model::enter(4);
        let again = requests::claim(&r, cid(0), cid(0), &me(4)).unwrap();
        assert_eq!(
            again,
            ClaimOutcome::NotClaimed,
            "claimed twice while its first claimer (process 2) lives"
        );
    });
}
