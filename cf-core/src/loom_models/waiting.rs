//! Waiting and waking on the lock word (`lock/word.rs`, `futex.rs`), through
//! the real `Holder::lock`.

use super::harness::*;
use crate::sync::Ordering;
use crate::{Member, Mode};
use std::time::Duration;

/// B waits (`lock` with a long timeout) for a resource A holds; A releases:
/// B is woken (no lost wake-up: loom would report a deadlock) and granted.
#[test]
fn waiter_is_woken_by_the_release() {
    check(3, || {
        let r = region(2, 1);
        let data = Arc::new(Guarded::new());
        let a = Member::connect(r.clone(), "A").unwrap();
        let mut ha = a.holder().unwrap();
        let held = take(&mut ha, b"acct", Mode::Exclusive);
        crate::connector::identity::model::enter(2);
        let b = Member::connect(r.clone(), "B").unwrap();
        let d = data.clone();
        let tb = process(2, move || {
            let mut h = b.holder().unwrap();
            let id = h
                .lock(b"acct", Mode::Exclusive, Duration::from_secs(3600))
                .unwrap();
            d.bump();
            h.unlock(id).unwrap();
            drop(h);
            b
        });
        let d = data.clone();
        let ta = process(1, move || {
            d.bump();
            ha.unlock(held).unwrap();
            drop(ha);
            a
        });
        ta.join().unwrap().unwrap().disconnect().unwrap();
        tb.join().unwrap().unwrap().disconnect().unwrap();
        assert_eq!(data.read(), 2);
        assert!(crate::lock::word::Word(
            r.word(entry_of(b"acct")).unwrap().load(Ordering::Relaxed)
        )
        .is_free());
    });
}
