//! Adversarial models (review `attack2`): each one asserts an invariant of
//! SPEC section 4 or of `lock/entry.rs` on the code that ships.

use super::harness::*;
use crate::lock::records;
use crate::lock::word::{self, Word};
use crate::sync::Ordering;
use crate::{cleanup_member, CleanupOutcome, ConnectMode, Member, MemberState, Mode, TryOutcome};
use loom::thread;

/// A restart light's release of a retained lock synchronizes with the grant
/// to the next requester: the light's back-out (a write of the data) happens
/// before the requester's write (loom checks the guarded data), and the
/// requester is answered "retained" until then.
#[test]
fn restart_light_release_happens_before_the_next_grant() {
    check(3, || {
        let r = region(3, 1);
        let data = Arc::new(Guarded::new());
        // C (process 5) takes R in modify mode and dies; process 1 cleans it up.
        dies_holding(&r, 5, "C", &[(b"r", Mode::Modify)]);
        crate::connector::identity::model::enter(1);
        assert!(matches!(
            cleanup_member(&r, cid(0)).unwrap(),
            CleanupOutcome::Cleaned(_)
        ));
        crate::connector::identity::model::enter(2);
        let x = Member::connect(r.clone(), "X").unwrap();
        let d = data.clone();
        let light = {
            let r = r.clone();
            process(3, move || {
                let m = Member::connect_with(r.clone(), "C", ConnectMode::Recovery).unwrap();
                d.bump(); // back-out
                m.release_all_held(|| {}).unwrap();
                m.disconnect().unwrap();
            })
        };
        let d = data.clone();
        let asker = process(2, move || {
            let mut h = x.holder().unwrap();
            loop {
                match h.try_lock(b"r", Mode::Modify).unwrap() {
                    TryOutcome::Granted(id) => {
                        d.bump();
                        h.unlock(id).unwrap();
                        break;
                    }
                    TryOutcome::Retained(_) | TryOutcome::Contention(_) => thread::yield_now(),
                }
            }
            drop(h);
            x
        });
        light.join().unwrap().unwrap();
        asker.join().unwrap().unwrap().disconnect().unwrap();
        assert_eq!(data.read(), 2);
        assert!(
            at_rest_problems(&r).is_empty(),
            "{:?}",
            at_rest_problems(&r)
        );
    });
}

/// Member A (one process, two threads): thread 1 asks for R, modify-held by
/// dead member C on entry E, and cleans C up itself (nested in its request);
/// thread 2 holds R2 on E and releases it meanwhile. R stays retained by C,
/// thread 1 is never granted it, and at rest the words agree with the records.
#[test]
fn a_request_cleans_up_while_a_sibling_releases_on_the_entry() {
    check(2, || {
        let r = region(2, 2);
        let names = colliding(2);
        let (res_r, res_2) = (names[0].clone(), names[1].clone());
        let c_id = dies_holding(&r, 5, "C", &[(&res_r, Mode::Modify)]);
        crate::connector::identity::model::enter(1);
        let a = Arc::new(Member::connect(r.clone(), "A").unwrap());
        let mut h2 = a.holder().unwrap();
        let l2 = take(&mut h2, &res_2, Mode::Exclusive);
        let mut h1 = a.holder().unwrap();
        let t1 = thread::spawn(move || {
            let out = h1.try_lock(&res_r, Mode::Modify).unwrap();
            assert!(!matches!(out, TryOutcome::Granted(_)), "{out:?}");
            drop(h1);
            out
        });
        let t2 = thread::spawn(move || {
            h2.unlock(l2).unwrap();
            drop(h2);
        });
        let out = t1.join().unwrap();
        t2.join().unwrap();
        // Whoever is left to finish C's cleanup (none here, unless t1 ran out of time).
        let _ = cleanup_member(&r, c_id).unwrap();
        assert_eq!(
            crate::connector::load_state(&r, c_id).unwrap().state,
            MemberState::FailedPersistent,
            "{out:?}"
        );
        let kept: Vec<_> = records::all_records(&r, c_id).unwrap();
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert!(
            at_rest_problems(&r).is_empty(),
            "{out:?}: {:?}",
            at_rest_problems(&r)
        );
        Arc::into_inner(a).unwrap().disconnect().unwrap();
    });
}

/// C retains R1 (entry E1) and R2 (entry E2). Its restart light (process 3)
/// is killed after releasing one entry; a cleaner (process 4) cleans the
/// light up while X (process 2) asks for both. Whatever the order, X is
/// never granted a lock still retained, and at rest: C failed-persistent,
/// what the light did not release still retained, the words agree.
#[test]
fn a_light_killed_between_entries_is_cleaned_up_while_requests_race() {
    check(2, || {
        let r = region(3, 1);
        let (r1, r2) = (b"m".to_vec(), b"s".to_vec());
        assert_ne!(entry_of(&r1), entry_of(&r2));
        dies_holding(&r, 5, "C", &[(&r1, Mode::Modify), (&r2, Mode::Modify)]);
        crate::connector::identity::model::enter(1);
        assert!(matches!(
            cleanup_member(&r, cid(0)).unwrap(),
            CleanupOutcome::Cleaned(_)
        ));
        crate::connector::identity::model::enter(3);
        let light = Member::connect_with(r.clone(), "C", ConnectMode::Recovery).unwrap();
        crate::connector::identity::model::enter(2);
        let x = Member::connect(r.clone(), "X").unwrap();
        let l = process(3, move || {
            crate::crash::model::arm("restart_light.released_some", 1);
            light
                .release_all_held(|| crate::crash::point("restart_light.released_some"))
                .unwrap();
        });
        assert!(l.join().unwrap().is_none());
        let cleaner = {
            let r = r.clone();
            process(4, move || cleanup_member(&r, cid(0)).unwrap())
        };
        let asker = process(2, move || {
            let mut h = x.holder().unwrap();
            let mut got = Vec::new();
            for res in [b"m".to_vec(), b"s".to_vec()] {
                match h.try_lock(&res, Mode::Modify).unwrap() {
                    TryOutcome::Granted(id) => {
                        h.unlock(id).unwrap();
                        got.push(res);
                    }
                    _ => {}
                }
            }
            drop(h);
            (x, got)
        });
        let _ = cleaner.join().unwrap().unwrap();
        let (x, got) = asker.join().unwrap().unwrap();
        let _ = cleanup_member(&r, cid(0)).unwrap();
        assert_eq!(
            crate::connector::load_state(&r, cid(0)).unwrap().state,
            MemberState::FailedPersistent
        );
        let kept: Vec<Vec<u8>> = records::all_records(&r, cid(0))
            .unwrap()
            .into_iter()
            .map(|x| x.resource.bytes())
            .collect();
        assert_eq!(kept.len(), 1, "one entry released by the light: {kept:?}");
        assert!(
            !got.contains(&kept[0]),
            "X granted {:?}, still retained",
            kept[0]
        );
        assert!(
            at_rest_problems(&r).is_empty(),
            "{:?}",
            at_rest_problems(&r)
        );
        x.disconnect().unwrap();
    });
}

/// A fast share release clears its member's bit in whatever word it finds,
/// even one whose bit was set since by another holding of the same member:
/// mutual exclusion is lost.
///
/// `Holder::unlock` of a fast share lock reads the word
/// (`word::fast_release_possible`: fast mode, A's bit set), marks its record
/// PENDING, and then `word::try_fast_release_share` loads the word *again*
/// and clears A's bit if the word is in fast mode with A's bit set, whatever
/// the epoch (the exclusive release CASes from the word it saw, epoch
/// included; the share release does not). Between the two, with thread 1's
/// record PENDING:
/// 1. member B asks for R exclusively: its latch converts the word, its
///    decision finds no held record of A on the entry (thread 1's is being
///    released) and drops A's bit; B is granted R, then releases it: the
///    entry is free again (fast mode, a newer epoch);
/// 2. thread 2 of A takes R in share mode on the fast path: A's bit is set
///    again, for thread 2's holding;
/// 3. thread 1 resumes: fast mode, A's bit set: it clears it.
/// Thread 2 holds R in share mode and the word names nobody: B's next
/// exclusive request for R is granted on the fast path (SPEC invariant 1).
#[test]
fn a_fast_share_release_clears_a_bit_set_since_by_a_sibling() {
    check(2, || {
        let r = region(2, 2);
        let res = b"r".to_vec();
        let a = Member::connect(r.clone(), "A").unwrap();
        let mut h1 = a.holder().unwrap();
        let l1 = take(&mut h1, &res, Mode::Share);
        let mut h2 = a.holder().unwrap();
        crate::connector::identity::model::enter(2);
        let b = Member::connect(r.clone(), "B").unwrap();
        let mut hb = b.holder().unwrap();
        crate::connector::identity::model::enter(1);
        let t1 = process(1, move || {
            h1.unlock(l1).unwrap();
            h1
        });
        let t2 = process(2, move || {
            // B: one exclusive request for R (granted only once thread 1's
            // record is PENDING), released at once.
            if let TryOutcome::Granted(id) = hb.try_lock(b"r", Mode::Exclusive).unwrap() {
                hb.unlock(id).unwrap();
            }
            // Thread 2 of A: R in share mode (compatible with anything left).
            let l2 = match h2.try_lock(b"r", Mode::Share).unwrap() {
                TryOutcome::Granted(id) => id,
                other => panic!("a share refused: {other:?}"),
            };
            (hb, h2, l2)
        });
        let h1 = t1.join().unwrap().unwrap();
        let (mut hb, mut h2, l2) = t2.join().unwrap().unwrap();
        drop(h1);
        let w = r.word(entry_of(&res)).unwrap().load(Ordering::Relaxed);
        let problems = at_rest_problems(&r);
        // Thread 2 of A holds R in share mode: B is refused R exclusively.
        let out = hb.try_lock(b"r", Mode::Exclusive).unwrap();
        assert!(
            !matches!(out, TryOutcome::Granted(_)),
            "A holds R in share mode (word {w:#x}: {problems:?}), yet B was granted it exclusively"
        );
        assert!(problems.is_empty(), "{problems:?}");
        h2.unlock(l2).unwrap();
        drop(h2);
        drop(hb);
        std::mem::forget((a, b));
    });
}

/// A restarter's sweep posts a restart request for a member whose recovery
/// has already ended.
///
/// The sweep of every member's restarter (`cf-node` `Monitor::consider`,
/// replayed here call for call) reads the slot (`slot_view`: failed-
/// persistent), then the request list (`requests::list`), and posts
/// (`requests::post`) if it finds no request and no cleanup in progress.
/// Between the two reads, X's restart light reconnects, recovers,
/// disconnects (the slot is FREE) and completes X's request: the sweep finds
/// no request and posts one, for a free slot, with an empty name.
/// `requests::post` takes the member's cleanup claim but never looks at the
/// member's state under it. A handler later claims it, names it after
/// whoever occupies the slot by then (`consider` falls back to the slot's
/// name), finds that member active and records `recovery_completed` for a
/// member that never failed (or, with the slot still free, logs "names no
/// member" and leaves the request outstanding for good).
///
/// Required: once X's recovery is over and nothing failed since, no request
/// is outstanding.
#[test]
fn a_sweep_posts_for_a_member_whose_recovery_has_ended() {
    use crate::connector::slot_view;
    use crate::requests;
    check(2, || {
        let r = region(2, 1);
        // X (process 5) fails; process 1 cleans it up and posts its request.
        dies_holding(&r, 5, "X", &[]);
        crate::connector::identity::model::enter(1);
        assert!(matches!(
            cleanup_member(&r, cid(0)).unwrap(),
            CleanupOutcome::Cleaned(_)
        ));
        // M (process 2) runs a restarter.
        crate::connector::identity::model::enter(2);
        let m = Member::connect(r.clone(), "M").unwrap();
        let m_id = m.id();
        let sweep = {
            let r = r.clone();
            process(2, move || {
                // Monitor::consider(0), its posting branch.
                let slot = slot_view(&r, cid(0)).unwrap();
                let reqs = requests::list(&r).unwrap();
                let req = reqs.iter().find(|q| q.member_id == cid(0));
                if slot.state == MemberState::FailedPersistent
                    && req.is_none()
                    && !crate::recovery::cleanup_in_progress(&r, cid(0)).unwrap()
                {
                    let _ = requests::post(&r, cid(0), Some(m_id), |_| {}).unwrap();
                }
            })
        };
        // X's restart light (process 3), as restart_light::run.
        let light = {
            let r = r.clone();
            process(3, move || {
                let l = Member::connect_with(r.clone(), "X", ConnectMode::Recovery).unwrap();
                l.release_all_held(|| {}).unwrap();
                let req = requests::find(&r, "X").unwrap();
                l.disconnect().unwrap();
                let (id, epoch) = req.expect("X's request is outstanding");
                requests::complete(&r, id, epoch, "X", "X").unwrap();
            })
        };
        sweep.join().unwrap().unwrap();
        light.join().unwrap().unwrap();
        let reqs = requests::list(&r).unwrap();
        assert!(
            reqs.is_empty(),
            "X's recovery is over and nothing failed since, yet a request is outstanding: {reqs:?}"
        );
        std::mem::forget(m);
    });
}

/// Member A (two threads) and member B on one entry: B holds R2 there; A's
/// thread 1 releases R1 on the latched path while A's thread 2 takes and
/// releases another resource of the entry. No request times out, so at rest
/// the word names B alone (no bit of A left behind by `recheck_own_bit`, heal
/// or a give-up). (B's holding is taken before the threads start: with a
/// third thread the model takes over 15 minutes.)
#[test]
fn no_bit_is_left_behind_by_siblings_and_another_member() {
    check(2, || {
        let r = region(2, 2);
        let names = colliding(4);
        let a = Arc::new(Member::connect(r.clone(), "A").unwrap());
        let mut h1 = a.holder().unwrap();
        let l1 = take(&mut h1, &names[0], Mode::Exclusive);
        let mut h2 = a.holder().unwrap();
        crate::connector::identity::model::enter(2);
        let b = Member::connect(r.clone(), "B").unwrap();
        let mut hb = b.holder().unwrap();
        let lb = take(&mut hb, &names[2], Mode::Exclusive); // E is mixed
        crate::connector::identity::model::enter(1);
        let n1 = names[1].clone();
        let t1 = process(1, move || {
            h1.unlock(l1).unwrap();
            h1
        });
        let t2 = process(1, move || {
            if let TryOutcome::Granted(id) = h2.try_lock(&n1, Mode::Exclusive).unwrap() {
                h2.unlock(id).unwrap();
            }
            h2
        });
        let (h1, h2) = (t1.join().unwrap().unwrap(), t2.join().unwrap().unwrap());
        drop((h1, h2));
        let problems = at_rest_problems(&r);
        assert!(problems.is_empty(), "{problems:?}");
        let w = Word(r.word(entry_of(&names[0])).unwrap().load(Ordering::Relaxed));
        assert_eq!(w.named(), word::bit(b.id()), "{:#x}", w.0);
        hb.unlock(lb).unwrap();
        drop(hb);
        std::mem::forget((a, b));
    });
}
