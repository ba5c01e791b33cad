//! attack15: conversion (rule 8) and a holder's own second lock (rule 7)
//! against the fast path, on the shipped code. Each lock the converter or
//! the other member took may have been taken on the fast path; the ids the
//! converter releases with are its *old* ones (their mode is the old mode,
//! which picks the fast release it tries).

use super::harness::*;
use crate::{Member, Mode};

/// A holds S (fast), B takes S (maybe fast too) and lets go while A promotes
/// to X, writes, and releases with its old S id: no overlap, word free.
#[test]
fn a_promotion_released_with_its_old_share_id() {
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
            let _x = convert(&mut ha, s, Mode::Exclusive);
            d.bump();
            ha.unlock(s).unwrap();
            drop(ha);
            a
        });
        tb.join().unwrap().unwrap().disconnect().unwrap();
        ta.join().unwrap().unwrap().disconnect().unwrap();
        assert!(word_is_free(&r, b"acct"));
        assert!(
            at_rest_problems(&r).is_empty(),
            "{:?}",
            at_rest_problems(&r)
        );
    });
}

/// (Preemption bound 1: at 2 it takes 7 minutes.)
/// A holds X (fast) and writes, asks S on the same resource (rule 7: granted
/// beside its own X), lets the X go with the old id and reads under S, while
/// B takes S: B reads only after A's write, A's read and B's share overlap
/// freely, the word is free at the end.
#[test]
fn an_own_share_beside_a_fast_exclusive_then_the_exclusive_goes() {
    check(1, || {
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
            assert_eq!(d.read(), 1, "B's S granted beside A's X");
            h.unlock(id).unwrap();
            drop(h);
            b
        });
        let d = data.clone();
        let ta = process(1, move || {
            d.bump();
            let s = take(&mut ha, b"acct", Mode::Share);
            ha.unlock(x).unwrap();
            d.read();
            ha.unlock(s).unwrap();
            drop(ha);
            a
        });
        tb.join().unwrap().unwrap().disconnect().unwrap();
        ta.join().unwrap().unwrap().disconnect().unwrap();
        assert!(word_is_free(&r, b"acct"));
        assert!(
            at_rest_problems(&r).is_empty(),
            "{:?}",
            at_rest_problems(&r)
        );
    });
}

/// A holds X (fast), writes, demotes to S and lets go with its old X id,
/// while B takes S (on the latched path once A's word is mixed): B reads
/// after the write, and the word is free at the end.
#[test]
fn a_demotion_released_with_its_old_exclusive_id() {
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
            assert_eq!(d.read(), 1);
            h.unlock(id).unwrap();
            drop(h);
            b
        });
        let d = data.clone();
        let ta = process(1, move || {
            d.bump();
            let _s = convert(&mut ha, x, Mode::Share);
            d.read();
            ha.unlock(x).unwrap();
            drop(ha);
            a
        });
        tb.join().unwrap().unwrap().disconnect().unwrap();
        ta.join().unwrap().unwrap().disconnect().unwrap();
        assert!(word_is_free(&r, b"acct"));
        assert!(
            at_rest_problems(&r).is_empty(),
            "{:?}",
            at_rest_problems(&r)
        );
    });
}

/// Siblings: thread 1 of A holds X (fast), writes, demotes to S, reads and
/// lets go with its old X id, while thread 2 of A (a sibling, whose
/// requests conflict with it as anyone's) takes S: the sibling reads only
/// after the write, and the word is free at the end.
#[test]
fn a_demotion_lets_a_sibling_in() {
    check(2, || {
        let r = region(1, 2);
        let data = Arc::new(Guarded::new());
        let a = Member::connect(r.clone(), "A").unwrap();
        let mut h1 = a.holder().unwrap();
        let mut h2 = a.holder().unwrap();
        let x = take(&mut h1, b"acct", Mode::Exclusive);
        let d = data.clone();
        let t2 = process(1, move || {
            let id = take(&mut h2, b"acct", Mode::Share);
            assert_eq!(d.read(), 1, "the sibling's S granted beside X");
            h2.unlock(id).unwrap();
            drop(h2);
        });
        let d = data.clone();
        let t1 = process(1, move || {
            d.bump();
            let _s = convert(&mut h1, x, Mode::Share);
            d.read();
            h1.unlock(x).unwrap();
            drop(h1);
        });
        t2.join().unwrap().unwrap();
        t1.join().unwrap().unwrap();
        assert!(word_is_free(&r, b"acct"));
        assert!(
            at_rest_problems(&r).is_empty(),
            "{:?}",
            at_rest_problems(&r)
        );
        a.disconnect().unwrap();
    });
}

/// D dies holding S (no modify flag); A holds S and promotes to X (its try
/// cleans D up itself, or finds it cleaned) while another process runs D's
/// cleanup: A ends with X, D's S is released (nothing retained), the word is
/// free once A lets go.
#[test]
fn a_promotion_racing_the_cleanup_of_a_dead_share_holder() {
    check(2, || {
        let r = region(3, 1);
        let d_id = dies_holding(&r, 3, "D", &[(b"acct", Mode::Share)]);
        crate::connector::identity::model::enter(1);
        let a = Member::connect(r.clone(), "A").unwrap();
        let mut ha = a.holder().unwrap();
        let s = take(&mut ha, b"acct", Mode::Share);
        let rc = r.clone();
        let tc = process(2, move || {
            let _ = crate::recovery::cleanup_member(&rc, d_id);
        });
        let ta = process(1, move || {
            let x = convert(&mut ha, s, Mode::Exclusive);
            assert_eq!(x.mode, Mode::Exclusive);
            ha.unlock(s).unwrap();
            drop(ha);
            a
        });
        tc.join().unwrap();
        ta.join().unwrap().unwrap().disconnect().unwrap();
        assert!(word_is_free(&r, b"acct"));
        assert!(crate::lock::records::all_records(&r, d_id)
            .unwrap()
            .is_empty());
    });
}
