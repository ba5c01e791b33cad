//! The lock paths of `member/holder.rs` and `lock/entry.rs`: the fast CAS,
//! the conversion to mixed mode, the latched decision, false contention, and
//! threads of one member.

use super::harness::*;
use crate::lock::word;
use crate::sync::Ordering;
use crate::{Member, Mode, TryOutcome};
use loom::thread;

/// Members A and B take one resource exclusively (fast path, or conversion
/// and the latched grant and release): mutual exclusion (loom checks the
/// guarded data), both increments seen, the word back to 0, records free.
#[test]
fn exclusive_two_members() {
    check(3, || {
        let r = region(2, 1);
        let data = Arc::new(Guarded::new());
        let a = Member::connect(r.clone(), "A").unwrap();
        crate::connector::identity::model::enter(2);
        let b = Member::connect(r.clone(), "B").unwrap();
        let threads: Vec<_> = [(1, a), (2, b)]
            .into_iter()
            .map(|(pid, m)| {
                let data = data.clone();
                process(pid, move || {
                    let mut h = m.holder().unwrap();
                    let id = take(&mut h, b"acct", Mode::Exclusive);
                    data.bump();
                    h.unlock(id).unwrap();
                    drop(h);
                    m
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap().disconnect().unwrap();
        }
        assert_eq!(data.read(), 2);
        let w = r.word(entry_of(b"acct")).unwrap().load(Ordering::Relaxed);
        assert!(
            crate::lock::word::Word(w).is_free(),
            "word back to fast mode and free: {w:#x}"
        );
    });
}

/// S holds a share lock and releases it while X asks for the resource
/// exclusively: X never gets in while S is inside (loom checks the guarded
/// data: S reads, X writes).
#[test]
fn exclusive_waits_for_a_share_holder() {
    check(3, || {
        let r = region(2, 1);
        let data = Arc::new(Guarded::new());
        let s = Member::connect(r.clone(), "S").unwrap();
        let mut hs = s.holder().unwrap();
        let held = take(&mut hs, b"acct", Mode::Share);
        crate::connector::identity::model::enter(2);
        let x = Member::connect(r.clone(), "X").unwrap();
        let d = data.clone();
        let tx = process(2, move || {
            let mut h = x.holder().unwrap();
            let id = take(&mut h, b"acct", Mode::Exclusive);
            d.bump();
            h.unlock(id).unwrap();
            drop(h);
            x
        });
        let d = data.clone();
        let ts = process(1, move || {
            d.read();
            hs.unlock(held).unwrap();
            drop(hs);
            s
        });
        ts.join().unwrap().unwrap().disconnect().unwrap();
        tx.join().unwrap().unwrap().disconnect().unwrap();
        assert_eq!(data.read(), 1);
        assert!(crate::lock::word::Word(
            r.word(entry_of(b"acct")).unwrap().load(Ordering::Relaxed)
        )
        .is_free());
    });
}

/// Two members ask for one resource in share mode at once: both are granted
/// at their first request (shares never refuse each other), and both read.
#[test]
fn shares_never_refuse_each_other() {
    check(3, || {
        let r = region(2, 1);
        let data = Arc::new(Guarded::new());
        let a = Member::connect(r.clone(), "A").unwrap();
        crate::connector::identity::model::enter(2);
        let b = Member::connect(r.clone(), "B").unwrap();
        let threads: Vec<_> = [(1, a), (2, b)]
            .into_iter()
            .map(|(pid, m)| {
                let data = data.clone();
                process(pid, move || {
                    let mut h = m.holder().unwrap();
                    let out = h.try_lock(b"acct", Mode::Share).unwrap();
                    let TryOutcome::Granted(id) = out else {
                        panic!("share refused by share: {out:?}");
                    };
                    data.read();
                    h.unlock(id).unwrap();
                    drop(h);
                    m
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap().disconnect().unwrap();
        }
        assert!(crate::lock::word::Word(
            r.word(entry_of(b"acct")).unwrap().load(Ordering::Relaxed)
        )
        .is_free());
    });
}

/// False contention never refuses: B asks for a resource that only shares
/// A's entry while A releases its own; B's first try is granted.
#[test]
fn false_contention_is_granted_at_once() {
    check(3, || {
        let r = region(2, 1);
        let names = colliding(2);
        let a = Member::connect(r.clone(), "A").unwrap();
        let mut ha = a.holder().unwrap();
        let held = take(&mut ha, &names[0], Mode::Exclusive);
        crate::connector::identity::model::enter(2);
        let b = Member::connect(r.clone(), "B").unwrap();
        let other = names[1].clone();
        let tb = process(2, move || {
            let mut h = b.holder().unwrap();
            let out = h.try_lock(&other, Mode::Exclusive).unwrap();
            let TryOutcome::Granted(id) = out else {
                panic!("false contention refused: {out:?}");
            };
            h.unlock(id).unwrap();
            drop(h);
            b
        });
        let ta = process(1, move || {
            ha.unlock(held).unwrap();
            drop(ha);
            a
        });
        ta.join().unwrap().unwrap().disconnect().unwrap();
        tb.join().unwrap().unwrap().disconnect().unwrap();
        let w = r.word(entry_of(&names[0])).unwrap().load(Ordering::Relaxed);
        assert!(crate::lock::word::Word(w).is_free(), "{w:#x}");
    });
}

/// Two threads of one member (one process) on one resource: the second
/// holding goes through the latched path, which compares records holder by
/// holder, so the two exclude each other; the member's bit is cleared by the
/// last one out.
#[test]
fn two_threads_of_one_member() {
    check(3, || {
        let r = region(1, 2);
        let data = Arc::new(Guarded::new());
        let m = Arc::new(Member::connect(r.clone(), "A").unwrap());
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (m, data) = (m.clone(), data.clone());
                thread::spawn(move || {
                    let mut h = m.holder().unwrap();
                    let id = take(&mut h, b"acct", Mode::Exclusive);
                    data.bump();
                    h.unlock(id).unwrap();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(data.read(), 2);
        let w = r.word(entry_of(b"acct")).unwrap().load(Ordering::Relaxed);
        assert_eq!(w & word::MASK_BITS, 0, "no interest left: {w:#x}");
        assert!(crate::lock::word::Word(w).is_free(), "{w:#x}");
        Arc::into_inner(m).unwrap().disconnect().unwrap();
    });
}

/// Two members, or two threads of one member, ask for one resource in IX at
/// once: both modes take exclusive interest in the word, so the second meets
/// the first's fast holding (or its conversion) and is granted on the
/// latched path by the table (XES contention). Both are granted at their
/// first try, and the last one out leaves the word free (the member's bit
/// recomputed from records that are compatible holdings of a sibling).
fn intent_exclusive_twice(same_member: bool) {
    use crate::LockMode;
    check(3, move || {
        let r = region(2, 2);
        let a = Arc::new(Member::connect(r.clone(), "A").unwrap());
        let b = if same_member {
            a.clone()
        } else {
            crate::connector::identity::model::enter(2);
            Arc::new(Member::connect(r.clone(), "B").unwrap())
        };
        let threads: Vec<_> = [(1, a), (2, b)]
            .into_iter()
            .map(|(pid, m)| {
                let f = move || {
                    let mut h = m.holder().unwrap();
                    let out = h.try_lock(b"acct", Mode::lock(LockMode::IX)).unwrap();
                    let TryOutcome::Granted(id) = out else {
                        panic!("IX refused beside IX: {out:?}");
                    };
                    h.unlock(id).unwrap();
                    drop(h);
                    m
                };
                if same_member {
                    // Two threads of process 1.
                    thread::spawn(move || Some(f()))
                } else {
                    process(pid, f)
                }
            })
            .collect();
        let ms: Vec<_> = threads
            .into_iter()
            .map(|t| t.join().unwrap().unwrap())
            .collect();
        for m in ms {
            if let Some(m) = Arc::into_inner(m) {
                m.disconnect().unwrap();
            }
        }
        let w = r.word(entry_of(b"acct")).unwrap().load(Ordering::Relaxed);
        assert!(crate::lock::word::Word(w).is_free(), "{w:#x}");
    });
}

#[test]
fn intent_exclusive_beside_intent_exclusive_two_members() {
    intent_exclusive_twice(false);
}

#[test]
fn intent_exclusive_beside_intent_exclusive_two_threads() {
    intent_exclusive_twice(true);
}
