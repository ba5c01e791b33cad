//! attack14: a deadlock victim whose cycle lost a member after the
//! detector's checks (`deadlock.rs`, invariant 4). The state that
//! interleaving leaves is set up directly: D holds R in share mode and is
//! dead (killed right after the checks); V waits for R exclusively and is
//! told, as a detector would tell it (the cycle words, `VICTIM` by CAS from
//! its exact state, the wake), of the cycle V -> D -> V. V must take the
//! flag back (no cycle through a dead member ends in a victim), clean D up
//! and be granted: a lost wake-up is a loom deadlock (the model's sleeps
//! never end by themselves).

use super::harness::*;
use crate::shm::layout::BLOCK_SLOTS;
use crate::sync::Ordering;
use crate::{deadlock, Member, Mode};
use std::time::Duration;

#[test]
fn a_victim_whose_cycle_lost_a_member_takes_the_flag_back_and_is_granted() {
    check(2, || {
        let r = region(2, 1);
        let d = dies_holding(&r, 2, "D", &[(b"r", Mode::Share)]);
        crate::connector::identity::model::enter(1);
        let m = Member::connect(r.clone(), "V").unwrap();
        let v = m.id();
        let mut h = m.holder().unwrap();
        let t = process(1, move || {
            let id = h
                .lock(b"r", Mode::Exclusive, Duration::from_secs(3600))
                .unwrap();
            h.unlock(id).unwrap();
            drop(h);
            m
        });
        crate::connector::identity::model::enter(3);
        let w = loop {
            if let Some(w) = deadlock::waits(&r).pop() {
                break w;
            }
            loom::thread::yield_now();
        };
        // V's wait record: in its (only) block.
        let b = crate::lock::records::block(&r, v, 0).unwrap();
        assert_eq!(b.owner.load(Ordering::Relaxed), w.holder);
        let rec = &b.wait;
        let state = rec.state.load(Ordering::Acquire);
        rec.victim.store(2 << 32, Ordering::Relaxed);
        let pack =
            |c: crate::ConnectorId, slot: u32| (u64::from(c.get()) + 1) << 24 | u64::from(slot);
        rec.cycle[0].store(
            pack(v, w.slot.get()) | pack(d, BLOCK_SLOTS - 1) << 32,
            Ordering::Relaxed,
        );
        if rec
            .state
            .compare_exchange(state, state | 2, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            deadlock::wake(&r, w.entry);
        }
        t.join().unwrap().unwrap().disconnect().unwrap();
        assert!(deadlock::waits(&r).is_empty());
        assert_eq!(deadlock::victims_told(&r), 0);
    });
}
