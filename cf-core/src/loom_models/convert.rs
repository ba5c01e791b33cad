//! Lock conversion (`lock/entry.rs` rules 7 and 8, `Holder::convert`) on
//! the shipped code: a promotion racing another member's share request, a
//! demotion letting a share in while the lock stays held, and a promotion
//! whose holder is killed with the new mode written (`convert.mode_written`).

use super::harness::*;
use crate::recovery::cleanup_member;
use crate::{LockMode, Member, Mode, TryOutcome};

/// A holds S and promotes it to X (waiting for B's S to go) while B takes S,
/// reads and lets go: A's X never overlaps B's S (loom checks the guarded
/// data: B reads, A writes), both finish, the word is free at the end.
#[test]
fn a_promotion_never_overlaps_another_share() {
    check(2, || {
        let r = region(2, 1);
        let data = Arc::new(Guarded::new());
        let a = Member::connect(r.clone(), "A").unwrap();
        let mut ha = a.holder().unwrap();
        let s = take(&mut ha, b"acct", Mode::Share);
        crate::connector::identity::model::enter(2);
        let b = Member::connect(r.clone(), "B").unwrap();
        let d = data.clone();
        let tb = process(2, move || {
            let mut h = b.holder().unwrap();
            let id = take(&mut h, b"acct", Mode::Share);
            d.read();
            h.unlock(id).unwrap();
            drop(h);
            b
        });
        let d = data.clone();
        let ta = process(1, move || {
            let x = convert(&mut ha, s, Mode::Modify);
            assert_eq!((x.slot, x.mode), (s.slot, Mode::Modify));
            d.bump();
            ha.unlock(x).unwrap();
            drop(ha);
            a
        });
        tb.join().unwrap().unwrap().disconnect().unwrap();
        ta.join().unwrap().unwrap().disconnect().unwrap();
        assert_eq!(data.read(), 1);
        assert!(word_is_free(&r, b"acct"));
    });
}

/// A holds X and writes; it demotes to S and reads on; B's share request is
/// granted only after the demotion (the write happens before B's read), while
/// A still holds S.
#[test]
fn a_demotion_lets_a_share_in() {
    check(2, || {
        let r = region(2, 1);
        let data = Arc::new(Guarded::new());
        let a = Member::connect(r.clone(), "A").unwrap();
        let mut ha = a.holder().unwrap();
        let x = take(&mut ha, b"acct", Mode::Exclusive);
        crate::connector::identity::model::enter(2);
        let b = Member::connect(r.clone(), "B").unwrap();
        let d = data.clone();
        let tb = process(2, move || {
            let mut h = b.holder().unwrap();
            let id = take(&mut h, b"acct", Mode::Share);
            assert_eq!(d.read(), 1, "granted before A's write");
            h.unlock(id).unwrap();
            drop(h);
            b
        });
        let d = data.clone();
        let ta = process(1, move || {
            d.bump();
            let s = convert(&mut ha, x, Mode::Share);
            assert_eq!(s.mode, Mode::Share);
            d.read();
            ha.unlock(s).unwrap();
            drop(ha);
            a
        });
        tb.join().unwrap().unwrap().disconnect().unwrap();
        ta.join().unwrap().unwrap().disconnect().unwrap();
        assert!(word_is_free(&r, b"acct"));
    });
}

/// A holds IX with the modify flag and is killed promoting it to SIX, right
/// after the new mode is written under the latch (`convert.mode_written`),
/// while B asks IX: the cleanup retains A's lock in SIX (which refuses B's
/// IX), frees the conversion's own record, and leaves nothing latched.
#[test]
fn a_holder_killed_in_its_promotion_is_retained_in_the_new_mode() {
    check(2, || {
        let r = region(2, 1);
        let a = Member::connect(r.clone(), "A").unwrap();
        let a_id = a.id();
        let mut ha = a.holder().unwrap();
        let ix = take(&mut ha, b"acct", Mode::modify(LockMode::IX));
        crate::connector::identity::model::enter(2);
        let b = Member::connect(r.clone(), "B").unwrap();
        let ta = process(1, move || {
            crate::crash::model::arm("convert.mode_written", 1);
            let _ = ha.try_convert(ix, Mode::modify(LockMode::SIX));
            unreachable!("killed at convert.mode_written");
        });
        assert!(ta.join().unwrap().is_none(), "A was killed");
        std::mem::forget(a);
        cleanup_member(&r, a_id).unwrap();
        let tb = process(2, move || {
            let mut h = b.holder().unwrap();
            let out = h.try_lock(b"acct", Mode::lock(LockMode::IX)).unwrap();
            assert!(
                matches!(out, TryOutcome::Retained(ref w)
                    if w.name == "A" && w.mode == Mode::modify(LockMode::SIX)),
                "{out:?}"
            );
            let is = take(&mut h, b"acct", Mode::lock(LockMode::IS));
            h.unlock(is).unwrap();
            drop(h);
            b
        });
        tb.join().unwrap().unwrap().disconnect().unwrap();
    });
}

/// B sleeps waiting for S behind A's X (the real wait: announce, futex);
/// A's demotion to S must wake it (loom's futex ignores timeouts, so a
/// demotion whose unlatch is a mere look leaves B asleep: a loom deadlock).
#[test]
fn a_demotion_wakes_a_sleeping_share_waiter() {
    check(2, || {
        let r = region(2, 1);
        let a = Member::connect(r.clone(), "A").unwrap();
        let mut ha = a.holder().unwrap();
        let x = take(&mut ha, b"acct", Mode::Exclusive);
        crate::connector::identity::model::enter(2);
        let b = Member::connect(r.clone(), "B").unwrap();
        let tb = process(2, move || {
            let mut h = b.holder().unwrap();
            let id = h
                .lock(b"acct", Mode::Share, std::time::Duration::from_secs(3600))
                .unwrap();
            h.unlock(id).unwrap();
            drop(h);
            b
        });
        let ta = process(1, move || {
            let s = convert(&mut ha, x, Mode::Share);
            // Held in S until B is through: only the demotion lets B in.
            (ha, s, a)
        });
        let b = tb.join().unwrap().unwrap();
        let (mut ha, s, a) = ta.join().unwrap().unwrap();
        ha.unlock(s).unwrap();
        drop(ha);
        a.disconnect().unwrap();
        b.disconnect().unwrap();
        assert!(word_is_free(&r, b"acct"));
    });
}
