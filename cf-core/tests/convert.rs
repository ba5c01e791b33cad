//! Lock conversion (`lock/entry.rs` rules 7 and 8, `Holder::convert`):
//! promotion and demotion without releasing, between members and between
//! threads of one member, with live and retained holders; two promotions
//! that wait for each other are a deadlock with one victim, which keeps its
//! old lock. And the contention counters (`lock/entry.rs`, "Contention"):
//! IRLM, XES and false contention and retained refusals, counted apart, per
//! connector and per structure. On a tiny lock table (16 entries), as the
//! bugs like it. Deaths are faked (a reused PID), as in `in_process.rs`.

mod common;
use common::{granted, held, tiny_region};

use cf_core::deadlock;
use cf_core::{
    connector, inspect, testing, AcquireError, EntryIndex, LockMode, Member, Mode, Region,
    TryOutcome, WaitError,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use LockMode::*;

/// Long enough never to end a wait in these tests: a hang, not a timeout.
const PATIENCE: Duration = Duration::from_secs(60);

fn at_rest(r: &Region) {
    assert!(deadlock::waits(r).is_empty(), "{:?}", deadlock::waits(r));
    assert!(inspect::locks(r).unwrap().is_empty(), "{:?}", held(r));
    assert!(inspect::verify(r).is_empty(), "{:?}", inspect::verify(r));
}

fn m(l: LockMode) -> Mode {
    Mode::lock(l)
}

#[test]
fn every_conversion_against_every_other_holding_is_decided_by_the_table() {
    // Holder A holds `from`, member B holds `other`: A's conversion to `to`
    // is granted iff `to` is compatible with `other` (A's own lock never
    // conflicts); refused, A still holds `from`. Both orders of the two
    // members are covered since B's holding is also tried as the converter.
    let (_d, r) = tiny_region();
    let a = Member::connect(r.clone(), "A").unwrap();
    let b = Member::connect(r.clone(), "B").unwrap();
    let (mut ha, mut hb) = (a.holder().unwrap(), b.holder().unwrap());
    for &other in &LockMode::ALL {
        for &from in LockMode::ALL.iter().filter(|f| f.compatible(other)) {
            for &to in &LockMode::ALL {
                let ob = granted(hb.try_lock(b"res", m(other)).unwrap());
                let fa = granted(ha.try_lock(b"res", m(from)).unwrap());
                let answer = ha.try_convert(fa, m(to)).unwrap();
                let expect = to.compatible(other);
                let now = match answer {
                    TryOutcome::Granted(id) => {
                        assert!(expect, "{from:?}->{to:?} beside {other:?} granted");
                        assert_eq!((id.slot, id.mode), (fa.slot, m(to)));
                        id
                    }
                    TryOutcome::Contention(h) => {
                        assert!(!expect, "{from:?}->{to:?} beside {other:?} refused");
                        assert_eq!(h.len(), 1);
                        assert_eq!((h[0].name.as_str(), h[0].mode), ("B", m(other)));
                        fa
                    }
                    other => panic!("{other:?}"),
                };
                let mut want = vec![
                    ("A".to_string(), "res".to_string(), now.mode),
                    ("B".to_string(), "res".to_string(), m(other)),
                ];
                want.sort_by(|a, b| (&a.0, a.2.as_str()).cmp(&(&b.0, b.2.as_str())));
                assert_eq!(held(&r), want, "{from:?}->{to:?} beside {other:?}");
                ha.unlock(now).unwrap();
                hb.unlock(ob).unwrap();
            }
        }
    }
    drop((ha, hb));
    at_rest(&r);
    a.disconnect().unwrap();
    b.disconnect().unwrap();
}

#[test]
fn a_promotion_waits_for_the_other_share_holder_and_a_demotion_lets_a_waiter_in() {
    let (_d, r) = tiny_region();
    let a = Member::connect(r.clone(), "A").unwrap();
    let b = Member::connect(r.clone(), "B").unwrap();
    let mut ha = a.holder().unwrap();
    let mut hb = b.holder().unwrap();
    let sa = ha.lock(b"acct", Mode::Share, PATIENCE).unwrap();
    let sb = hb.lock(b"acct", Mode::Share, PATIENCE).unwrap();
    // A's S to X waits for B's S; B lets go: A is promoted, same slot.
    let t = std::thread::spawn(move || {
        let x = ha.convert(sa, Mode::Modify, PATIENCE);
        (ha, sa, x)
    });
    let deadline = Instant::now() + PATIENCE;
    while deadlock::waits(&r).is_empty() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        held(&r),
        vec![
            ("A".into(), "acct".into(), Mode::Share),
            ("B".into(), "acct".into(), Mode::Share)
        ]
    );
    hb.unlock(sb).unwrap();
    let (mut ha, sa, x) = t.join().unwrap();
    let x = x.unwrap();
    assert_eq!((x.slot, x.mode), (sa.slot, Mode::Modify));
    assert_eq!(held(&r), vec![("A".into(), "acct".into(), Mode::Modify)]);
    // B waits for S behind A's X; A demotes to S (modify kept): B gets in.
    let t = std::thread::spawn(move || {
        let s = hb.lock(b"acct", Mode::Share, PATIENCE);
        (hb, s)
    });
    while deadlock::waits(&r).is_empty() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
    let down = ha.convert(x, Mode::Share, PATIENCE).unwrap();
    assert_eq!(down.mode, Mode::new(S, true), "the modify flag is kept");
    let (mut hb, sb) = t.join().unwrap();
    let sb = sb.unwrap();
    assert_eq!(
        held(&r),
        vec![
            ("A".into(), "acct".into(), Mode::new(S, true)),
            ("B".into(), "acct".into(), Mode::Share)
        ]
    );
    // The old id still names the lock (same slot): it releases it.
    ha.unlock(sa).unwrap();
    hb.unlock(sb).unwrap();
    drop((ha, hb));
    at_rest(&r);
    a.disconnect().unwrap();
    b.disconnect().unwrap();
}

#[test]
fn two_promotions_waiting_for_each_other_are_a_deadlock_with_one_victim() {
    let (_d, r) = tiny_region();
    let a = Member::connect(r.clone(), "A").unwrap();
    let b = Member::connect(r.clone(), "B").unwrap();
    let go = Arc::new(std::sync::Barrier::new(2));
    // A holds U, B holds S (compatible); each asks X: A waits for B's S,
    // B for A's U.
    let mut ha = a.holder().unwrap();
    let ua = ha.lock(b"page", Mode::lock(U), PATIENCE).unwrap();
    let mut hb = b.holder().unwrap();
    let sb = hb.lock(b"page", Mode::Share, PATIENCE).unwrap();
    let ga = go.clone();
    let ta = std::thread::spawn(move || {
        ga.wait();
        let out = ha.convert(ua, Mode::Modify, PATIENCE);
        (ha, ua, out)
    });
    let tb = std::thread::spawn(move || {
        go.wait();
        let out = hb.convert(sb, Mode::Modify, PATIENCE);
        (hb, sb, out)
    });
    let deadline = Instant::now() + PATIENCE;
    while deadlock::waits(&r).len() < 2 {
        assert!(Instant::now() < deadline, "{:?}", deadlock::waits(&r));
        std::thread::sleep(Duration::from_millis(1));
    }
    let d = deadlock::detect_once(&r, None).unwrap();
    assert_eq!(d.victims.len(), 1, "{d:?}");
    assert_eq!(d.victims[0].cycle.len(), 2, "{d:?}");
    // The victim (the youngest wait) keeps its old lock; when it lets go,
    // the other is promoted.
    let mut outs = vec![("A", ta), ("B", tb)];
    let victim_name = inspect::members(&r)
        .unwrap()
        .into_iter()
        .find(|v| v.id == d.victims[0].waiting.member)
        .unwrap()
        .name;
    outs.sort_by_key(|(n, _)| *n != victim_name);
    let (vn, vt) = outs.remove(0);
    let (mut vh, vold, vout) = vt.join().unwrap();
    match vout {
        Err(WaitError::Deadlock { cycle }) => assert_eq!(cycle.len(), 2),
        other => panic!("{vn}: {other:?}"),
    }
    let vmode = if vn == "A" {
        Mode::lock(U)
    } else {
        Mode::Share
    };
    assert!(
        held(&r).contains(&(vn.to_string(), "page".into(), vmode)),
        "{:?}",
        held(&r)
    );
    vh.unlock(vold).unwrap();
    let (wn, wt) = outs.remove(0);
    let (mut wh, _wold, wout) = wt.join().unwrap();
    let x = wout.unwrap();
    assert_eq!(
        held(&r),
        vec![(wn.to_string(), "page".into(), Mode::Modify)]
    );
    wh.unlock(x).unwrap();
    drop((vh, wh));
    at_rest(&r);
    a.disconnect().unwrap();
    b.disconnect().unwrap();
}

#[test]
fn a_conversion_among_sibling_threads_waits_for_the_sibling_not_for_itself() {
    let (_d, r) = tiny_region();
    let a = Member::connect(r.clone(), "A").unwrap();
    let mut h1 = a.holder().unwrap();
    let mut h2 = a.holder().unwrap();
    let ix1 = h1.lock(b"table", Mode::lock(IX), PATIENCE).unwrap();
    let ix2 = h2.lock(b"table", Mode::lock(IX), PATIENCE).unwrap();
    // IX to SIX conflicts with the sibling's IX.
    assert!(matches!(
        h1.try_convert(ix1, Mode::lock(SIX)).unwrap(),
        TryOutcome::Contention(_)
    ));
    h2.unlock(ix2).unwrap();
    let six = granted(h1.try_convert(ix1, Mode::lock(SIX)).unwrap());
    // Its own IS beside its SIX is no conflict (rule 7); a sibling's is fine
    // too (IS and SIX are compatible), a sibling's IX is not.
    let is1 = granted(h1.try_lock(b"table", Mode::lock(IS)).unwrap());
    let is2 = granted(h2.try_lock(b"table", Mode::lock(IS)).unwrap());
    assert!(matches!(
        h2.try_lock(b"table", Mode::lock(IX)).unwrap(),
        TryOutcome::Contention(_)
    ));
    h1.unlock(six).unwrap();
    h1.unlock(is1).unwrap();
    h2.unlock(is2).unwrap();
    drop((h1, h2));
    at_rest(&r);
    a.disconnect().unwrap();
}

#[test]
fn a_conversion_refused_by_a_retained_lock_keeps_the_old_mode() {
    let (_d, r) = tiny_region();
    let a = Member::connect(r.clone(), "A").unwrap();
    let b = Member::connect(r.clone(), "B").unwrap();
    let mut ha = a.holder().unwrap();
    let mut hb = b.holder().unwrap();
    // B holds S with the modify flag (retained when it dies), A holds IS.
    let _sb = hb.lock(b"row", Mode::modify(S), PATIENCE).unwrap();
    let is = ha.lock(b"row", Mode::lock(IS), PATIENCE).unwrap();
    let b_id = b.id();
    std::mem::forget(hb);
    std::mem::forget(b);
    testing::fake_reused_pid(&r, b_id);
    // IS to S is compatible with the retained S: granted.
    let s = ha.convert(is, Mode::Share, PATIENCE).unwrap();
    assert_eq!(s.mode, Mode::Share);
    // S to X is not: refused as retained, S kept.
    match ha.convert(s, Mode::Exclusive, PATIENCE) {
        Err(WaitError::Retained(h)) => {
            assert_eq!((h.name.as_str(), h.mode), ("B", Mode::modify(S)))
        }
        other => panic!("{other:?}"),
    }
    assert!(held(&r).contains(&("A".into(), "row".into(), Mode::Share)));
    let act = connector::activity(&r, a.id()).unwrap();
    assert_eq!(act.retained_refusals, 1);
    ha.unlock(s).unwrap();
    drop(ha);
    a.disconnect().unwrap();
    assert_eq!(inspect::counters(&r).retained_refusals, 1, "folded in");
}

#[test]
fn converting_what_is_not_held_is_an_error() {
    let (_d, r) = tiny_region();
    let a = Member::connect(r.clone(), "A").unwrap();
    let mut h = a.holder().unwrap();
    let mut other = a.holder().unwrap();
    let s = h.lock(b"r", Mode::Share, PATIENCE).unwrap();
    // A sibling's lock is not this holder's.
    assert!(matches!(
        other.try_convert(s, Mode::Exclusive),
        Err(AcquireError::NotHeld(_))
    ));
    h.unlock(s).unwrap();
    assert!(matches!(
        h.convert(s, Mode::Exclusive, PATIENCE),
        Err(WaitError::Failed(AcquireError::NotHeld(_)))
    ));
    // A conversion to the mode held is granted at once.
    let s = h.lock(b"r", Mode::Share, PATIENCE).unwrap();
    assert_eq!(
        h.try_convert(s, Mode::Share).unwrap(),
        TryOutcome::Granted(s)
    );
    h.unlock(s).unwrap();
    drop((h, other));
    at_rest(&r);
    a.disconnect().unwrap();
}

/// Two resource names that hash to one entry of the region's table.
fn same_entry(r: &Region, h: &mut cf_core::Holder) -> (Vec<u8>, Vec<u8>, EntryIndex) {
    let mut seen: Vec<(EntryIndex, Vec<u8>)> = Vec::new();
    for i in 0..=r.lock_entries() {
        let name = format!("res{i}").into_bytes();
        let id = granted(h.try_lock(&name, Mode::Share).unwrap());
        h.unlock(id).unwrap();
        if let Some((e, other)) = seen.iter().find(|(e, _)| *e == id.entry) {
            return (other.clone(), name, *e);
        }
        seen.push((id.entry, name));
    }
    unreachable!("more names than entries")
}

#[test]
fn irlm_xes_and_false_contention_are_counted_apart() {
    let (_d, r) = tiny_region();
    let a = Member::connect(r.clone(), "A").unwrap();
    let b = Member::connect(r.clone(), "B").unwrap();
    let mut ha = a.holder().unwrap();
    let mut hb = b.holder().unwrap();
    let (r1, r2, _) = same_entry(&r, &mut ha);
    let before = connector::activity(&r, b.id()).unwrap();
    // XES: IX beside IX on one resource (exclusive interest both).
    let a1 = granted(ha.try_lock(&r1, Mode::lock(IX)).unwrap());
    let b1 = granted(hb.try_lock(&r1, Mode::lock(IX)).unwrap());
    hb.unlock(b1).unwrap();
    // False: X on another resource of the entry.
    let b2 = granted(hb.try_lock(&r2, Mode::Exclusive).unwrap());
    hb.unlock(b2).unwrap();
    // IRLM: S against A's IX on the same resource.
    assert!(matches!(
        hb.try_lock(&r1, Mode::Share).unwrap(),
        TryOutcome::Contention(_)
    ));
    // XES again: IS (share interest) beside IX (exclusive interest) is
    // compatible, but the word alone would see contention.
    let b3 = granted(hb.try_lock(&r1, Mode::lock(IS)).unwrap());
    hb.unlock(b3).unwrap();
    ha.unlock(a1).unwrap();
    // None: S beside S on another resource of the entry (share interest).
    let a2 = granted(ha.try_lock(&r1, Mode::Share).unwrap());
    let b4 = granted(hb.try_lock(&r2, Mode::Share).unwrap());
    hb.unlock(b4).unwrap();
    ha.unlock(a2).unwrap();
    drop((ha, hb)); // publishes the holders' counts
    let after = connector::activity(&r, b.id()).unwrap();
    assert_eq!(after.requests - before.requests, 5);
    assert_eq!(after.xes_contention - before.xes_contention, 2);
    assert_eq!(after.false_contention - before.false_contention, 1);
    assert_eq!(after.irlm_contention - before.irlm_contention, 1);
    assert_eq!(after.retained_refusals, 0);
    let total = inspect::counters(&r);
    assert_eq!(total.xes_contention, 2);
    assert_eq!(total.global_contention(), 4);
    // The structure's totals keep B's counts after it leaves.
    b.disconnect().unwrap();
    assert_eq!(inspect::counters(&r), total);
    a.disconnect().unwrap();
    at_rest(&r);
}
