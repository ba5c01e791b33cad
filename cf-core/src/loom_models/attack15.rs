//! attack15: conversion (rule 8) and a holder's own second lock (rule 7)
//! against the fast path, on the shipped code. Each lock the converter or
//! the other member took may have been taken on the fast path; the ids the
//! converter releases with are its *old* ones (their mode is the old mode,
//! which picks the fast release it tries).

use super::harness::*;
use crate::lock::word::Word;
use crate::sync::Ordering;
use crate::{LockId, Member, Mode, TryOutcome};

fn convert(h: &mut crate::Holder, id: LockId, to: Mode) -> LockId {
    loop {
        match h.try_convert(id, to) {
            Ok(TryOutcome::Granted(id)) => return id,
            Ok(TryOutcome::Contention(_)) => loom::thread::yield_now(),
            other => panic!("convert to {to}: {other:?}"),
        }
    }
}

fn word_is_free(r: &crate::Region) -> bool {
    Word(r.word(entry_of(b"acct")).unwrap().load(Ordering::Relaxed)).is_free()
}

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
        assert!(word_is_free(&r));
        assert!(
            at_rest_problems(&r).is_empty(),
            "{:?}",
            at_rest_problems(&r)
        );
    });
}

/// A holds X (fast) and writes, asks S on the same resource (rule 7: granted
/// beside its own X), lets the X go with the old id and reads under S, while
/// B takes S: B reads only after A's write, A's read and B's share overlap
/// freely, the word is free at the end.
#[test]
fn an_own_share_beside_a_fast_exclusive_then_the_exclusive_goes() {
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
        assert!(word_is_free(&r));
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
        assert!(word_is_free(&r));
        assert!(
            at_rest_problems(&r).is_empty(),
            "{:?}",
            at_rest_problems(&r)
        );
    });
}
