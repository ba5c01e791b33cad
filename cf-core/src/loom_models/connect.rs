//! Connecting and disconnecting (`member/mod.rs`, `connector/slot.rs`) racing
//! cleanups.

use super::harness::*;
use crate::{cleanup_member, CleanupOutcome, Member, MemberState};

/// Hole 4. A member connects (and disconnects) in a free slot while another
/// process's watcher looks at that slot and tries to clean it up: a live
/// member is never taken for dead (no cleanup, no restart request), and its
/// connection keeps working.
#[test]
fn a_member_connecting_is_never_cleaned_up() {
    check(3, || {
        let r = region(1, 1);
        // The slot's previous occupant (process 7) left normally.
        crate::connector::identity::model::enter(7);
        Member::connect(r.clone(), "OLD")
            .unwrap()
            .disconnect()
            .unwrap();
        kill(7);
        let member = process(1, {
            let r = r.clone();
            move || {
                let m = Member::connect(r.clone(), "A").unwrap();
                let h = m.holder().expect("a live member keeps its connection");
                drop(h);
                m.disconnect().expect("and disconnects normally");
            }
        });
        let watcher = process(2, {
            let r = r.clone();
            move || {
                [
                    cleanup_member(&r, cid(0)).unwrap(),
                    cleanup_member(&r, cid(0)).unwrap(),
                ]
            }
        });
        member.join().unwrap().unwrap();
        for out in watcher.join().unwrap().unwrap() {
            assert!(
                matches!(out, CleanupOutcome::NotDead | CleanupOutcome::AlreadyDone),
                "a live member was cleaned up: {out:?}"
            );
        }
        let st = crate::connector::load_state(&r, cid(0)).unwrap().state;
        assert_eq!(st, MemberState::Free);
        assert!(crate::requests::list(&r).unwrap().is_empty());
    });
}
