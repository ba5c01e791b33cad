//! Retention (`recovery.rs`, `lock/entry.rs::settle_dead`) racing requests,
//! and cleanups killed at their crash points.

use super::harness::*;
use crate::ids::ConnectorId;
use crate::lock::records;
use crate::{cleanup_member, CleanupOutcome, Member, MemberState, Mode, TryOutcome};

/// The modify records `member` keeps (as resource names).
fn modify_records(r: &crate::Region, member: ConnectorId) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = records::all_records(r, member)
        .unwrap()
        .into_iter()
        .filter(|x| x.held && x.mode.is_modify())
        .map(|x| x.resource.bytes())
        .collect();
    v.sort();
    v
}

/// Hole 1. Dead member C holds R in modify mode on entry E; live member X
/// holds Q on E (so E is mixed and X is named). A thread of X asks for R
/// (its record is HELD before its CAS fails: a half-made request) while C's
/// cleaner runs. Whatever the interleaving, X is never granted R, and C's
/// cleanup keeps R retained.
#[test]
fn retained_lock_survives_a_half_made_request() {
    check(2, || {
        let r = region(3, 2);
        let names = colliding(2);
        let (res_r, res_q) = (names[0].clone(), names[1].clone());
        // C (process 5) takes R and dies.
        let c_id = dies_holding(&r, 5, "C", &[(&res_r, Mode::Modify)]);
        // X (process 2) holds Q on the same entry: false contention, mixed.
        crate::connector::identity::model::enter(2);
        let x = Member::connect(r.clone(), "X").unwrap();
        let mut hq = x.holder().unwrap();
        take(&mut hq, &res_q, Mode::Exclusive);
        let asker = {
            let x_holder = x.holder().unwrap();
            let res_r = res_r.clone();
            process(2, move || {
                let mut h = x_holder;
                let out = h.try_lock(&res_r, Mode::Modify).unwrap();
                assert!(
                    !matches!(out, TryOutcome::Granted(_)),
                    "X was granted a lock C retains: {out:?}"
                );
                out
            })
        };
        let cleaner = {
            let r = r.clone();
            process(3, move || cleanup_member(&r, c_id).unwrap())
        };
        let out = asker.join().unwrap().unwrap();
        let cleaned = cleaner.join().unwrap().unwrap();
        assert!(
            matches!(
                cleaned,
                CleanupOutcome::Cleaned(_)
                    | CleanupOutcome::AlreadyDone
                    | CleanupOutcome::InProgress { .. }
            ),
            "{cleaned:?}"
        );
        // Whoever cleaned C up (the cleaner or X's request), R is retained.
        let st = crate::connector::load_state(&r, c_id).unwrap().state;
        assert_eq!(st, MemberState::FailedPersistent, "answer {out:?}");
        assert_eq!(
            modify_records(&r, c_id),
            vec![res_r.clone()],
            "answer {out:?}"
        );
        drop(hq);
        std::mem::forget(x);
    });
}

/// A cleaner killed at each point of its walk, then a second cleaner: the
/// outcome is the one of an uninterrupted cleanup (the modify lock retained,
/// the share lock released), and a live requester racing them is never
/// granted the retained resource and always granted the released one.
#[test]
fn cleanup_killed_in_its_walk_is_finished_by_the_next() {
    for point in [
        "cleanup.claimed",
        "cleanup.entry_latched",
        "cleanup.entry_unlatched",
        "cleanup.before_final_state",
    ] {
        check(1, move || {
            let r = region(3, 1);
            // C (process 5) holds M (modify) and S (share), on different entries.
            crate::connector::identity::model::enter(5);
            let c = Member::connect(r.clone(), "C").unwrap();
            let c_id = c.id();
            let mut hc = c.holder().unwrap();
            take(&mut hc, b"m", Mode::Modify);
            take(&mut hc, b"s", Mode::Share);
            assert_ne!(entry_of(b"m"), entry_of(b"s"));
            kill(5);
            std::mem::forget(hc);
            std::mem::forget(c);
            crate::connector::identity::model::enter(2);
            let x = Member::connect(r.clone(), "X").unwrap();
            let first = {
                let r = r.clone();
                process(3, move || {
                    crate::crash::model::arm(point, 1);
                    cleanup_member(&r, c_id).unwrap()
                })
            };
            assert!(first.join().unwrap().is_none(), "killed at {point}");
            let second = {
                let r = r.clone();
                process(4, move || cleanup_member(&r, c_id).unwrap())
            };
            let asker = process(2, move || {
                let mut h = x.holder().unwrap();
                let m = h.try_lock(b"m", Mode::Share).unwrap();
                assert!(!matches!(m, TryOutcome::Granted(_)), "{m:?} at {point}");
                let s = loop {
                    match h.try_lock(b"s", Mode::Exclusive).unwrap() {
                        TryOutcome::Contention(_) => loom::thread::yield_now(),
                        other => break other,
                    }
                };
                let TryOutcome::Granted(id) = s else {
                    panic!("the released share lock: {s:?} at {point}");
                };
                h.unlock(id).unwrap();
                drop(h);
                x
            });
            let _ = second.join().unwrap().unwrap();
            std::mem::forget(asker.join().unwrap().unwrap());
            let st = crate::connector::load_state(&r, c_id).unwrap().state;
            assert_eq!(st, MemberState::FailedPersistent, "at {point}");
            assert_eq!(modify_records(&r, c_id), vec![b"m".to_vec()], "at {point}");
            assert_eq!(
                records::all_records(&r, c_id).unwrap().len(),
                1,
                "only the modify lock is left, at {point}"
            );
        });
    }
}
