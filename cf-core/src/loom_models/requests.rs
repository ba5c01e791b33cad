//! The restart-request list (`requests.rs`).

use super::harness::cid;
use super::harness::*;
use crate::events::{self, EventKind};
use crate::{cleanup_member, CleanupOutcome, ConnectMode, Member};
use std::sync::atomic::AtomicUsize;

/// The request-completion race (hole 6a). A failed (request posted); its
/// restart light recovered it and disconnected, but completes the request
/// late; meanwhile B took the freed slot and died. B's cleanup (posting B's
/// request) races A's late completion: A's request is completed exactly once
/// (by one of them: `recovery_completed` once, for A), and B's failure has a
/// request of its own that stays outstanding.
#[test]
fn a_late_completion_never_completes_a_newer_request() {
    static LATE: AtomicUsize = AtomicUsize::new(0);
    check(3, || {
        let r = region(1, 1);
        crate::connector::identity::model::enter(5);
        let a = Member::connect(r.clone(), "A").unwrap();
        kill(5);
        std::mem::forget(a);
        crate::connector::identity::model::enter(1);
        assert!(matches!(
            cleanup_member(&r, cid(0)).unwrap(),
            CleanupOutcome::Cleaned(_)
        ));
        // A's restart light (process 3): recovers A, disconnects...
        crate::connector::identity::model::enter(3);
        let light = Member::connect_with(r.clone(), "A", ConnectMode::Recovery).unwrap();
        let (id, epoch) = crate::requests::find(&r, "A")
            .unwrap()
            .expect("A's request");
        light.disconnect().unwrap();
        // ... B (process 4) takes the slot and dies.
        crate::connector::identity::model::enter(4);
        let b = Member::connect(r.clone(), "B").unwrap();
        assert_eq!(b.id(), cid(0));
        kill(4);
        std::mem::forget(b);
        let since = events::next_seq(&r);
        let late = process(3, {
            let r = r.clone();
            move || crate::requests::complete(&r, id, epoch, "A", "A").unwrap()
        });
        let watcher = process(6, {
            let r = r.clone();
            move || cleanup_member(&r, cid(0)).unwrap()
        });
        let completed_late = late.join().unwrap().unwrap();
        assert!(matches!(
            watcher.join().unwrap().unwrap(),
            CleanupOutcome::Cleaned(_)
        ));
        let completions: Vec<String> = events::read_since(&r, since)
            .into_iter()
            .filter(|e| e.kind() == EventKind::RecoveryCompleted)
            .map(|e| e.member)
            .collect();
        assert_eq!(completions, ["A"], "A's recovery completed exactly once");
        let reqs = crate::requests::list(&r).unwrap();
        assert_eq!(reqs.len(), 1, "{reqs:?}");
        assert_eq!(
            reqs[0].name, "B",
            "B's failure has its own request: {reqs:?}"
        );
        if !completed_late {
            // B's poster found A's request outstanding and completed it.
            hit(&LATE);
        }
    });
    assert!(
        hits(&LATE) > 0,
        "the stale request was never completed by the poster"
    );
}
