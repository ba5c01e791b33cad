//! attack15: lock conversion (rule 8), a holder never waiting for itself
//! (rule 7) and the contention counters, attacked on the fast path's
//! edges, with siblings, urgent requests, the detector and damage. On a
//! tiny lock table (16 entries); deaths are faked (a reused PID).

mod common;
use common::{granted, held, tiny_region};

use cf_core::deadlock;
use cf_core::{
    connector, inspect, testing, LockId, LockMode, Member, Mode, Region, TryOutcome, WaitError,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use LockMode::*;

const PATIENCE: Duration = Duration::from_secs(20);

fn contention(o: TryOutcome) {
    assert!(matches!(o, TryOutcome::Contention(_)), "{o:?}");
}

fn clean(r: &Region) {
    assert!(inspect::verify(r).is_empty(), "{:?}", inspect::verify(r));
}

fn at_rest(r: &Region) {
    assert!(deadlock::waits(r).is_empty(), "{:?}", deadlock::waits(r));
    assert!(inspect::locks(r).unwrap().is_empty(), "{:?}", held(r));
    clean(r);
    for e in r.entry_indices() {
        let w = testing::read_lock_word(r, e);
        assert!(w.is_free(), "entry {e}: {:#x}", w.0);
    }
}

/// S taken on the fast path, promoted to X, released with the *old* id (whose
/// mode is S): the fast share release must not apply to the mixed word.
#[test]
fn s_taken_fast_promoted_and_unlocked_with_the_old_id() {
    let (_d, r) = tiny_region();
    let a = Member::connect(r.clone(), "A").unwrap();
    let b = Member::connect(r.clone(), "B").unwrap();
    let (mut ha, mut hb) = (a.holder().unwrap(), b.holder().unwrap());
    let s = granted(ha.try_lock(b"acct", Mode::Share).unwrap());
    assert!(!testing::read_lock_word(&r, s.entry).is_mixed(), "fast");
    let x = granted(ha.try_convert(s, Mode::Exclusive).unwrap());
    assert_eq!(x.slot, s.slot);
    contention(hb.try_lock(b"acct", Mode::Share).unwrap());
    clean(&r);
    ha.unlock(s).unwrap();
    let sb = granted(hb.try_lock(b"acct", Mode::Share).unwrap());
    // The stale id is gone now.
    assert!(ha.unlock(x).is_err());
    hb.unlock(sb).unwrap();
    drop((ha, hb));
    at_rest(&r);
    a.disconnect().unwrap();
    b.disconnect().unwrap();
}

/// X taken on the fast path, demoted to S, another member takes S beside it;
/// released with the old id (X) or the new one (S), in both orders.
#[test]
fn x_taken_fast_demoted_then_shared_then_unlocked_with_either_id() {
    let (_d, r) = tiny_region();
    let a = Member::connect(r.clone(), "A").unwrap();
    let b = Member::connect(r.clone(), "B").unwrap();
    let (mut ha, mut hb) = (a.holder().unwrap(), b.holder().unwrap());
    for (old_id, a_first) in [(true, true), (true, false), (false, true), (false, false)] {
        let x = granted(ha.try_lock(b"acct", Mode::Exclusive).unwrap());
        let w = testing::read_lock_word(&r, x.entry);
        assert!(!w.is_mixed() && w.holder() == Some(a.id()), "{:#x}", w.0);
        let s = granted(ha.try_convert(x, Mode::Share).unwrap());
        let sb = granted(hb.try_lock(b"acct", Mode::Share).unwrap());
        contention(hb.try_lock(b"acct", Mode::Exclusive).unwrap());
        clean(&r);
        let mine = if old_id { x } else { s };
        if a_first {
            ha.unlock(mine).unwrap();
            clean(&r);
            hb.unlock(sb).unwrap();
        } else {
            hb.unlock(sb).unwrap();
            clean(&r);
            // B's S is gone: A's S is alone, a fast exclusive must not slip in.
            let w = testing::read_lock_word(&r, x.entry);
            assert!(w.is_mixed(), "{:#x}", w.0);
            contention(hb.try_lock(b"acct", Mode::Exclusive).unwrap());
            ha.unlock(mine).unwrap();
        }
        at_rest(&r);
    }
    drop((ha, hb));
    a.disconnect().unwrap();
    b.disconnect().unwrap();
}

/// Rule 7 on the fast path: X held fast, the same holder asks S and X again
/// (granted on the latched path); released in every order, the word stays
/// right and another member gets in exactly when it should.
#[test]
fn own_second_locks_beside_a_fast_x_released_in_any_order() {
    let (_d, r) = tiny_region();
    let a = Member::connect(r.clone(), "A").unwrap();
    let b = Member::connect(r.clone(), "B").unwrap();
    let (mut ha, mut hb) = (a.holder().unwrap(), b.holder().unwrap());
    for order in 0..6usize {
        let x = granted(ha.try_lock(b"page", Mode::Exclusive).unwrap());
        let s = granted(ha.try_lock(b"page", Mode::Share).unwrap());
        let x2 = granted(ha.try_lock(b"page", Mode::Exclusive).unwrap());
        clean(&r);
        let mut ids = vec![x, s, x2];
        // A permutation of the three.
        let perm = [
            [0, 1, 2],
            [0, 2, 1],
            [1, 0, 2],
            [1, 2, 0],
            [2, 0, 1],
            [2, 1, 0],
        ][order];
        let ordered: Vec<LockId> = perm.iter().map(|&i| ids[i]).collect();
        ids.clear();
        for (k, id) in ordered.iter().enumerate() {
            ha.unlock(*id).unwrap();
            clean(&r);
            let left: Vec<_> = ordered[k + 1..].to_vec();
            let any_x = left.iter().any(|l| l.mode == Mode::Exclusive);
            match hb.try_lock(b"page", Mode::Share).unwrap() {
                TryOutcome::Granted(sb) => {
                    assert!(!any_x, "S granted beside A's X: {:?}", held(&r));
                    hb.unlock(sb).unwrap();
                }
                TryOutcome::Contention(_) => assert!(any_x, "{:?}", held(&r)),
                other => panic!("{other:?}"),
            }
            clean(&r);
        }
        at_rest(&r);
    }
    drop((ha, hb));
    a.disconnect().unwrap();
    b.disconnect().unwrap();
}

/// Two sibling threads of one member both hold S and both promote to X: a
/// deadlock between threads of one member, one victim, which keeps its S.
#[test]
fn two_sibling_promotions_are_a_deadlock_with_one_victim() {
    let (_d, r) = tiny_region();
    let a = Member::connect(r.clone(), "A").unwrap();
    let (mut h1, mut h2) = (a.holder().unwrap(), a.holder().unwrap());
    let s1 = h1.lock(b"page", Mode::Share, PATIENCE).unwrap();
    let s2 = h2.lock(b"page", Mode::Share, PATIENCE).unwrap();
    let t1 = std::thread::spawn(move || {
        let out = h1.convert(s1, Mode::Exclusive, PATIENCE);
        (h1, s1, out)
    });
    let t2 = std::thread::spawn(move || {
        let out = h2.convert(s2, Mode::Exclusive, PATIENCE);
        (h2, s2, out)
    });
    let deadline = Instant::now() + PATIENCE;
    while deadlock::waits(&r).len() < 2 {
        assert!(Instant::now() < deadline, "{:?}", deadlock::waits(&r));
        std::thread::sleep(Duration::from_millis(1));
    }
    let d = deadlock::detect_once(&r, None).unwrap();
    assert_eq!(d.victims.len(), 1, "{d:?}");
    let victim_holder = d.victims[0].waiting.holder;
    let (r1, r2) = (t1, t2);
    // Whichever was told: it answers Deadlock and keeps S, then lets go.
    let mut joined = Vec::new();
    for t in [r1, r2] {
        joined.push(t);
    }
    let mut results = Vec::new();
    let mut pending = joined;
    // The victim answers first; the other waits for the victim's S.
    let start = Instant::now();
    while !pending.is_empty() {
        let mut i = 0;
        while i < pending.len() {
            if pending[i].is_finished() {
                let (mut h, old, out) = pending.remove(i).join().unwrap();
                match out {
                    Err(WaitError::Deadlock { .. }) => {
                        assert!(held(&r).contains(&("A".into(), "page".into(), Mode::Share)));
                        h.unlock(old).unwrap();
                        results.push(("victim", h, None));
                    }
                    Ok(x) => results.push(("winner", h, Some(x))),
                    Err(e) => panic!("{e}"),
                }
            } else {
                i += 1;
            }
        }
        assert!(start.elapsed() < PATIENCE, "hang");
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = victim_holder;
    assert_eq!(results.iter().filter(|r| r.0 == "victim").count(), 1);
    for (_, mut h, x) in results {
        if let Some(x) = x {
            h.unlock(x).unwrap();
        }
        drop(h);
    }
    at_rest(&r);
    a.disconnect().unwrap();
}

/// A promotion that waits long enough to turn URGENT (the holdings of the
/// entry change under it: a third member's IS comes and goes) and then times
/// out leaves no urgent record, no wait record and no stray bit, and the old
/// S lock is intact.
#[test]
fn an_urgent_promotion_that_times_out_leaves_nothing_behind() {
    let (_d, r) = tiny_region();
    let a = Member::connect(r.clone(), "A").unwrap();
    let b = Member::connect(r.clone(), "B").unwrap();
    let c = Member::connect(r.clone(), "C").unwrap();
    let (mut ha, mut hb) = (a.holder().unwrap(), b.holder().unwrap());
    let sa = ha.lock(b"row", Mode::Share, PATIENCE).unwrap();
    let sb = hb.lock(b"row", Mode::Share, PATIENCE).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let st = stop.clone();
    let churn = std::thread::spawn(move || {
        let mut hc = c.holder().unwrap();
        while !st.load(std::sync::atomic::Ordering::Relaxed) {
            if let TryOutcome::Granted(id) = hc.try_lock(b"row", Mode::lock(IS)).unwrap() {
                hc.unlock(id).unwrap();
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        drop(hc);
        c
    });
    let out = ha.convert(sa, Mode::Exclusive, Duration::from_millis(600));
    assert!(matches!(out, Err(WaitError::Timeout(_))), "{out:?}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let c = churn.join().unwrap();
    assert!(deadlock::waits(&r).is_empty());
    assert_eq!(
        held(&r),
        vec![
            ("A".into(), "row".into(), Mode::Share),
            ("B".into(), "row".into(), Mode::Share)
        ]
    );
    assert!(inspect::locks(&r).unwrap().iter().all(|l| l.held));
    clean(&r);
    // The old id still works; so does a later promotion.
    hb.unlock(sb).unwrap();
    let x = granted(ha.try_convert(sa, Mode::Exclusive).unwrap());
    ha.unlock(x).unwrap();
    drop((ha, hb));
    at_rest(&r);
    for m in [a, b, c] {
        m.disconnect().unwrap();
    }
}

/// The counters of conversions: XES for a promotion beside another member's
/// compatible holding, nothing for a sibling's, IRLM once for a promotion
/// that waits and is then granted.
#[test]
fn conversions_are_counted_once_in_one_class() {
    let (_d, r) = tiny_region();
    let a = Member::connect(r.clone(), "A").unwrap();
    let b = Member::connect(r.clone(), "B").unwrap();
    let (mut ha, mut hb) = (a.holder().unwrap(), b.holder().unwrap());
    let mut ha2 = a.holder().unwrap();
    let before = connector::activity(&r, a.id()).unwrap();
    // B holds IX; A's IS promoted to IX: compatible, exclusive interest
    // both: XES.
    let ixb = granted(hb.try_lock(b"t", Mode::lock(IX)).unwrap());
    let isa = granted(ha.try_lock(b"t", Mode::lock(IS)).unwrap()); // XES (IS beside IX)
    let ixa = granted(ha.try_convert(isa, Mode::lock(IX)).unwrap()); // XES
    hb.unlock(ixb).unwrap();
    // A sibling's IX beside it: no global contention.
    let ix2 = granted(ha2.try_lock(b"t", Mode::lock(IX)).unwrap());
    ha2.unlock(ix2).unwrap();
    // Demotion with nobody else: none.
    let isa = granted(ha.try_convert(ixa, Mode::lock(IS)).unwrap());
    // B holds S; A's IS to X waits for it: IRLM once, then granted.
    let sb = granted(hb.try_lock(b"t", Mode::Share).unwrap());
    let t = std::thread::spawn(move || {
        let out = ha.convert(isa, Mode::Exclusive, PATIENCE);
        (ha, out)
    });
    let deadline = Instant::now() + PATIENCE;
    while deadlock::waits(&r).is_empty() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(20));
    hb.unlock(sb).unwrap();
    let (mut ha, out) = t.join().unwrap();
    let x = out.unwrap();
    ha.unlock(x).unwrap();
    drop((ha, ha2, hb));
    let after = connector::activity(&r, a.id()).unwrap();
    assert_eq!(after.requests - before.requests, 5, "{after:?}");
    assert_eq!(after.xes_contention - before.xes_contention, 2, "{after:?}");
    assert_eq!(
        after.false_contention - before.false_contention,
        0,
        "{after:?}"
    );
    assert_eq!(
        after.irlm_contention - before.irlm_contention,
        1,
        "{after:?}"
    );
    at_rest(&r);
    a.disconnect().unwrap();
    b.disconnect().unwrap();
}

/// Damage: the converted record's meta word is garbage (length 0, or a bad
/// mode): the conversion is a typed error, never a panic or a grant, and
/// nothing is left latched.
#[test]
fn a_conversion_of_a_damaged_record_is_a_typed_error() {
    for meta in [0u64, 0xff, 4 | 0xee << 8, 4 | 3 << 8 | 0x7 << 16] {
        let (_d, r) = tiny_region();
        let a = Member::connect(r.clone(), "A").unwrap();
        let mut ha = a.holder().unwrap();
        let s = granted(ha.try_lock(b"acct", Mode::Share).unwrap());
        testing::write_record_word(&r, a.id(), s.slot, 0, meta);
        let out = ha.try_convert(s, Mode::Exclusive);
        assert!(out.is_err(), "{meta:#x}: {out:?}");
        let w = testing::read_lock_word(&r, s.entry);
        assert!(!w.is_mixed() || w.holder().is_none(), "latched: {:#x}", w.0);
        std::mem::forget(ha);
        std::mem::forget(a);
    }
}

/// The lock a conversion converts is released under it while it waits
/// (`Member::release_record` by slot did it when it checked only that the
/// record is held; it now refuses a holder's lock, so damage does it here:
/// the lock is gone, and another member may take it). Granted, the
/// conversion would rewrite the mode of a freed record, answer "granted" for
/// a lock nobody holds and publish its member's bit with nothing held.
#[test]
fn a_conversion_whose_lock_is_released_under_it_is_not_granted() {
    let (_d, r) = tiny_region();
    let a = Member::connect(r.clone(), "A").unwrap();
    let b = Member::connect(r.clone(), "B").unwrap();
    let (mut ha, mut hb) = (a.holder().unwrap(), b.holder().unwrap());
    let sa = ha.lock(b"row", Mode::Share, PATIENCE).unwrap();
    let sb = hb.lock(b"row", Mode::Share, PATIENCE).unwrap();
    let t = std::thread::spawn(move || {
        let out = ha.convert(sa, Mode::Exclusive, PATIENCE);
        (ha, out)
    });
    let deadline = Instant::now() + PATIENCE;
    while deadlock::waits(&r).is_empty() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
    // A live holder's lock is its own to release.
    assert!(matches!(
        a.release_record(sa.slot),
        Err(cf_core::UnlockError::NotHeld(_))
    ));
    testing::write_tag(&r, a.id(), sa.slot, testing::forge::TAG_FREE);
    hb.unlock(sb).unwrap();
    let (mut ha, out) = t.join().unwrap();
    assert!(out.is_err(), "granted a lock nobody holds: {out:?}");
    assert!(held(&r).is_empty(), "{:?}", held(&r));
    // B can have it exclusively: nothing is held.
    let xb = granted(hb.try_lock(b"row", Mode::Exclusive).unwrap());
    hb.unlock(xb).unwrap();
    assert!(ha.unlock(sa).is_err());
    drop((ha, hb));
    at_rest(&r);
    a.disconnect().unwrap();
    b.disconnect().unwrap();
}

/// A sequential random walk over try requests, conversions and releases of
/// two holders in each of two members (so siblings and other members), on
/// resources of which two share an entry: every answer is what the
/// compatibility table says (a holder's own locks never conflict, rule 7;
/// a conversion is judged against everyone else's locks, rule 8), a
/// conversion keeps the slot, a release is made with the lock's id from
/// before or after its conversions, and `inspect::verify` is clean after
/// every step. The lock words' fast and mixed modes are all crossed.
#[test]
fn a_random_walk_of_conversions_and_own_locks_matches_the_table() {
    let (_d, r) = tiny_region();
    let a = Member::connect(r.clone(), "A").unwrap();
    let b = Member::connect(r.clone(), "B").unwrap();
    let mut hs = vec![
        a.holder().unwrap(),
        a.holder().unwrap(),
        b.holder().unwrap(),
        b.holder().unwrap(),
    ];
    // Two names on one entry, one elsewhere.
    let mut names: Vec<Vec<u8>> = Vec::new();
    {
        let mut by_entry: std::collections::HashMap<u32, Vec<Vec<u8>>> = Default::default();
        for i in 0..200 {
            let n = format!("r{i}").into_bytes();
            let id = granted(hs[0].try_lock(&n, Mode::Share).unwrap());
            hs[0].unlock(id).unwrap();
            by_entry.entry(id.entry.get()).or_default().push(n);
        }
        let mut groups: Vec<_> = by_entry.into_values().collect();
        groups.sort_by_key(|g| std::cmp::Reverse(g.len()));
        names.push(groups[0][0].clone());
        names.push(groups[0][1].clone());
        names.push(groups[1][0].clone());
    }
    let modes = [IS, IX, S, SIX, U, X];
    // Per holder: (resource index, mode held, id as first granted, id now).
    let mut held_by: Vec<Vec<(usize, Mode, LockId, LockId)>> = vec![Vec::new(); 4];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let compatible_with_others =
        |held_by: &Vec<Vec<(usize, Mode, LockId, LockId)>>, me: usize, res: usize, mode: Mode| {
            held_by.iter().enumerate().all(|(h, hl)| {
                h == me
                    || hl
                        .iter()
                        .all(|&(rr, m, _, _)| rr != res || m.compatible(mode))
            })
        };
    for step in 0..4000 {
        let h = rnd(4);
        let op = rnd(3);
        if op == 0 || held_by[h].is_empty() {
            let res = rnd(3);
            let mode = Mode::new(modes[rnd(6)], rnd(2) == 0);
            let ok = compatible_with_others(&held_by, h, res, mode);
            match hs[h].try_lock(&names[res], mode).unwrap() {
                TryOutcome::Granted(id) => {
                    assert!(
                        ok,
                        "step {step}: {h} granted {mode} on {res}: {:?}",
                        held(&r)
                    );
                    held_by[h].push((res, mode, id, id));
                }
                TryOutcome::Contention(_) => {
                    assert!(
                        !ok,
                        "step {step}: {h} refused {mode} on {res}: {:?}",
                        held(&r)
                    )
                }
                other => panic!("{other:?}"),
            }
        } else if op == 1 {
            let i = rnd(held_by[h].len());
            let (res, from, first, now) = held_by[h][i];
            let to = Mode::new(modes[rnd(6)], rnd(2) == 0);
            let want = Mode::new(to.lock_mode(), to.is_modify() || from.is_modify());
            let ok = compatible_with_others(&held_by, h, res, want);
            let id = if rnd(2) == 0 { first } else { now };
            match hs[h].try_convert(id, to).unwrap() {
                TryOutcome::Granted(c) => {
                    assert!(
                        ok || want == from,
                        "step {step}: {h} converted {from} to {want} on {res}: {:?}",
                        held(&r)
                    );
                    assert_eq!((c.slot, c.mode), (first.slot, want));
                    held_by[h][i] = (res, want, first, c);
                }
                TryOutcome::Contention(_) => {
                    assert!(!ok, "step {step}: {h} refused {from}->{want} on {res}")
                }
                other => panic!("{other:?}"),
            }
        } else {
            let i = rnd(held_by[h].len());
            let (_, _, first, now) = held_by[h].swap_remove(i);
            hs[h].unlock(if rnd(2) == 0 { first } else { now }).unwrap();
        }
        assert!(
            inspect::verify(&r).is_empty(),
            "step {step}: {:?}",
            inspect::verify(&r)
        );
        let n: usize = held_by.iter().map(|v| v.len()).sum();
        assert_eq!(held(&r).len(), n, "step {step}");
    }
    for (h, hl) in held_by.into_iter().enumerate() {
        for (_, _, first, _) in hl {
            hs[h].unlock(first).unwrap();
        }
    }
    drop(hs);
    at_rest(&r);
    a.disconnect().unwrap();
    b.disconnect().unwrap();
}

/// The random walk, then member B dies (its holders' conversions and own
/// second locks among what it holds): the cleanup keeps exactly B's modify
/// locks, each in the mode its last conversion gave it, and A's requests
/// are then refused as retained exactly where a kept lock conflicts.
#[test]
fn a_member_dying_after_a_random_walk_keeps_its_modify_locks_in_their_last_mode() {
    for seed0 in [1u64, 7, 42, 1234, 99_999] {
        let (_d, r) = tiny_region();
        let a = Member::connect(r.clone(), "A").unwrap();
        let b = Member::connect(r.clone(), "B").unwrap();
        let mut hs = vec![
            a.holder().unwrap(),
            b.holder().unwrap(),
            b.holder().unwrap(),
        ];
        let names: Vec<Vec<u8>> = (0..3).map(|i| format!("q{i}").into_bytes()).collect();
        let modes = [IS, IX, S, SIX, U, X];
        let mut held_by: Vec<Vec<(usize, Mode, LockId)>> = vec![Vec::new(); 3];
        let mut seed = seed0.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut rnd = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for _ in 0..300 {
            let h = rnd(3);
            match rnd(3) {
                0 => {
                    let res = rnd(3);
                    let mode = Mode::new(modes[rnd(6)], rnd(2) == 0);
                    if let TryOutcome::Granted(id) = hs[h].try_lock(&names[res], mode).unwrap() {
                        held_by[h].push((res, mode, id));
                    }
                }
                1 if !held_by[h].is_empty() => {
                    let i = rnd(held_by[h].len());
                    let (res, _, id) = held_by[h][i];
                    let to = Mode::new(modes[rnd(6)], rnd(2) == 0);
                    if let TryOutcome::Granted(c) = hs[h].try_convert(id, to).unwrap() {
                        held_by[h][i] = (res, c.mode, c);
                    }
                }
                _ if !held_by[h].is_empty() => {
                    let i = rnd(held_by[h].len());
                    let (_, _, id) = held_by[h].swap_remove(i);
                    hs[h].unlock(id).unwrap();
                }
                _ => {}
            }
        }
        clean(&r);
        // B dies.
        let b_id = b.id();
        let hb2 = hs.pop().unwrap();
        let hb1 = hs.pop().unwrap();
        std::mem::forget((hb1, hb2, b));
        testing::fake_reused_pid(&r, b_id);
        cf_core::recovery::cleanup_all_dead(&r).unwrap();
        let mut want: Vec<(String, String, Mode)> = held_by[0]
            .iter()
            .map(|&(res, m, _)| ("A".into(), format!("q{res}"), m))
            .chain(
                held_by[1..]
                    .iter()
                    .flatten()
                    .filter(|l| l.1.is_modify())
                    .map(|&(res, m, _)| ("B".into(), format!("q{res}"), m)),
            )
            .collect();
        want.sort_by(|a, b| (&a.0, &a.1, a.2.as_str()).cmp(&(&b.0, &b.1, b.2.as_str())));
        assert_eq!(held(&r), want, "seed {seed0}");
        assert!(
            inspect::verify(&r).is_empty(),
            "seed {seed0}: {:?}",
            inspect::verify(&r)
        );
        // A's requests against B's kept locks.
        let kept: Vec<(usize, Mode)> = held_by[1..]
            .iter()
            .flatten()
            .filter(|l| l.1.is_modify())
            .map(|l| (l.0, l.1))
            .collect();
        for (res, name) in names.iter().enumerate() {
            for &m in &modes {
                let mode = Mode::lock(m);
                let retained = kept
                    .iter()
                    .any(|&(r2, km)| r2 == res && !km.compatible(mode));
                match hs[0].try_lock(name, mode).unwrap() {
                    TryOutcome::Granted(id) => {
                        assert!(
                            !retained,
                            "seed {seed0}: {m:?} on q{res} granted: {:?}",
                            held(&r)
                        );
                        hs[0].unlock(id).unwrap();
                    }
                    TryOutcome::Retained(_) => assert!(retained, "seed {seed0}"),
                    other => panic!("seed {seed0}: {other:?}"),
                }
            }
        }
        std::mem::forget(hs);
        std::mem::forget(a);
    }
}

/// An urgent writer (rule 5) waits for two share holders that both promote
/// to X (each waiting for the other's S, bypassing the urgent writer, which
/// waits for their holdings anyway) while a reader waits behind the urgent
/// writer: the detector breaks the promotions' cycle (one victim, which
/// keeps its S and lets go), and then everyone is granted in turn: the
/// promotion, the writer, the reader. Nothing is left behind.
#[test]
fn two_promotions_beside_an_urgent_writer_and_a_reader_behind_it_all_end() {
    let (_d, r) = tiny_region();
    let a = Member::connect(r.clone(), "A").unwrap();
    let b = Member::connect(r.clone(), "B").unwrap();
    let c = Member::connect(r.clone(), "C").unwrap();
    let d = Member::connect(r.clone(), "D").unwrap();
    let (mut ha, mut hb) = (a.holder().unwrap(), b.holder().unwrap());
    let (mut hc, mut hd) = (c.holder().unwrap(), d.holder().unwrap());
    let sa = ha.lock(b"page", Mode::Share, PATIENCE).unwrap();
    let sb = hb.lock(b"page", Mode::Share, PATIENCE).unwrap();
    let tc = std::thread::spawn(move || {
        let x = hc.lock(b"page", Mode::Exclusive, PATIENCE).unwrap();
        hc.unlock(x).unwrap();
        hc
    });
    let deadline = Instant::now() + PATIENCE;
    while deadlock::waits(&r).is_empty() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
    // D's IS comes and goes (each a holdings change that bypasses C) until
    // C is urgent and D is refused.
    loop {
        assert!(Instant::now() < deadline, "C never turned urgent");
        match hd.try_lock(b"page", Mode::lock(IS)).unwrap() {
            TryOutcome::Granted(id) => hd.unlock(id).unwrap(),
            TryOutcome::Contention(_) => break,
            other => panic!("{other:?}"),
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let td = std::thread::spawn(move || {
        let is = hd.lock(b"page", Mode::lock(IS), PATIENCE).unwrap();
        hd.unlock(is).unwrap();
        hd
    });
    let ta = std::thread::spawn(move || {
        let out = ha.convert(sa, Mode::Exclusive, PATIENCE);
        (ha, sa, out)
    });
    let tb = std::thread::spawn(move || {
        let out = hb.convert(sb, Mode::Exclusive, PATIENCE);
        (hb, sb, out)
    });
    while deadlock::waits(&r).len() < 4 {
        assert!(Instant::now() < deadline, "{:?}", deadlock::waits(&r));
        std::thread::sleep(Duration::from_millis(1));
    }
    let det = deadlock::detect_once(&r, None).unwrap();
    assert_eq!(det.victims.len(), 1, "{det:?}");
    let mut finished = Vec::new();
    for t in [ta, tb] {
        finished.push(t);
    }
    let mut left = finished;
    let mut winner = None;
    while !left.is_empty() {
        assert!(Instant::now() < deadline, "promotions hang: {:?}", held(&r));
        let mut i = 0;
        while i < left.len() {
            if left[i].is_finished() {
                let (mut h, old, out) = left.remove(i).join().unwrap();
                match out {
                    Err(WaitError::Deadlock { .. }) => {
                        h.unlock(old).unwrap();
                        drop(h);
                    }
                    Ok(x) => winner = Some((h, x)),
                    Err(e) => panic!("{e}"),
                }
            } else {
                i += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let (mut h, x) = winner.expect("one promotion granted");
    assert_eq!(held(&r).len(), 1, "{:?}", held(&r));
    h.unlock(x).unwrap();
    drop(h);
    drop(tc.join().unwrap());
    drop(td.join().unwrap());
    at_rest(&r);
    for m in [a, b, c, d] {
        m.disconnect().unwrap();
    }
}

/// A holds X; B waits for S, C waits for X. A's demotion to S lets B in at
/// once (B's S beside A's S) and C still waits; A's promotion back to X then
/// waits for B (not for C's request, which holds nothing) and C waits on;
/// B lets go, A is promoted, lets go, and C is granted. Nothing is left.
#[test]
fn a_demotion_and_a_promotion_among_waiters() {
    let (_d, r) = tiny_region();
    let a = Member::connect(r.clone(), "A").unwrap();
    let b = Member::connect(r.clone(), "B").unwrap();
    let c = Member::connect(r.clone(), "C").unwrap();
    let mut ha = a.holder().unwrap();
    let (mut hb, mut hc) = (b.holder().unwrap(), c.holder().unwrap());
    let x = ha.lock(b"row", Mode::Exclusive, PATIENCE).unwrap();
    let (btx, brx) = std::sync::mpsc::channel::<()>();
    let tb = std::thread::spawn(move || {
        let s = hb.lock(b"row", Mode::Share, PATIENCE).unwrap();
        brx.recv().unwrap();
        hb.unlock(s).unwrap();
        hb
    });
    let deadline = Instant::now() + PATIENCE;
    while deadlock::waits(&r).is_empty() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
    let tc = std::thread::spawn(move || {
        let x = hc.lock(b"row", Mode::Exclusive, PATIENCE).unwrap();
        hc.unlock(x).unwrap();
        hc
    });
    while deadlock::waits(&r).len() < 2 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
    let s = ha.convert(x, Mode::Share, PATIENCE).unwrap();
    while !held(&r).iter().any(|h| h.0 == "B") {
        assert!(Instant::now() < deadline, "B not let in: {:?}", held(&r));
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(deadlock::waits(&r).len(), 1, "C waits on");
    clean(&r);
    let ta = std::thread::spawn(move || {
        let out = ha.convert(s, Mode::Exclusive, PATIENCE);
        (ha, out)
    });
    while deadlock::waits(&r).len() < 2 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
    btx.send(()).unwrap();
    let hb = tb.join().unwrap();
    let (mut ha, out) = ta.join().unwrap();
    let x = out.unwrap();
    assert_eq!(
        held(&r),
        vec![("A".to_string(), "row".to_string(), Mode::Exclusive)]
    );
    ha.unlock(x).unwrap();
    let hc = tc.join().unwrap();
    drop((ha, hb, hc));
    at_rest(&r);
    for m in [a, b, c] {
        m.disconnect().unwrap();
    }
}

/// Threads of two members (two holders each) lock, convert and release at
/// random with short waits, the deadlock detector running beside them; a
/// victim backs out (releases everything). Each grant is checked against a
/// registry of what every other holder holds: no two holders ever hold one
/// resource in incompatible modes (a holder's own locks excepted, rule 7).
/// A demotion is registered before it is asked for, a promotion once
/// granted, a release before it is made. At the end nothing is left.
#[test]
fn concurrent_conversions_with_the_detector_never_overlap_incompatible_modes() {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering as O};
    use std::sync::Mutex;
    let (_d, r) = tiny_region();
    let a = Member::connect(r.clone(), "A").unwrap();
    let b = Member::connect(r.clone(), "B").unwrap();
    // Two names on one entry, one elsewhere.
    let names: Arc<Vec<Vec<u8>>> = {
        let mut h = a.holder().unwrap();
        let mut by: HashMap<u32, Vec<Vec<u8>>> = HashMap::new();
        for i in 0..200 {
            let n = format!("c{i}").into_bytes();
            let id = granted(h.try_lock(&n, Mode::Share).unwrap());
            h.unlock(id).unwrap();
            by.entry(id.entry.get()).or_default().push(n);
        }
        let mut g: Vec<_> = by.into_values().collect();
        g.sort_by_key(|g| std::cmp::Reverse(g.len()));
        Arc::new(vec![g[0][0].clone(), g[0][1].clone(), g[1][0].clone()])
    };
    // resource -> (holder, slot, mode)
    type Reg = Mutex<HashMap<usize, Vec<(usize, u32, LockMode)>>>;
    let reg: Arc<Reg> = Arc::new(Mutex::new(HashMap::new()));
    let rr = r.clone();
    let check_in = move |reg: &Reg, who: usize, res: usize, slot: u32, m: LockMode, how: &str| {
        let mut g = reg.lock().unwrap();
        let v = g.entry(res).or_default();
        for &(h, _, om) in v.iter() {
            assert!(
                h == who || om.compatible(m),
                "holder {who} got {m:?} on {res} ({how}) beside holder {h}'s {om:?}: {:?}",
                held(&rr)
            );
        }
        v.retain(|&(h, s, _)| !(h == who && s == slot));
        v.push((who, slot, m));
    };
    let check_out = |reg: &Reg, who: usize, res: usize, slot: u32| {
        let mut g = reg.lock().unwrap();
        g.entry(res)
            .or_default()
            .retain(|&(h, s, _)| !(h == who && s == slot));
    };
    let weaker = |from: LockMode, to: LockMode| {
        LockMode::ALL
            .iter()
            .all(|&m| !from.compatible(m) || to.compatible(m))
    };
    let stop = Arc::new(AtomicBool::new(false));
    let told = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let st = stop.clone();
    let rd = r.clone();
    let detector = std::thread::spawn(move || {
        let (mut victims, mut rounds, mut rewoken, mut abandoned) = (0, 0, 0, 0);
        while !st.load(O::Relaxed) {
            let d = deadlock::detect_once(&rd, None).unwrap();
            victims += d.victims.len();
            for v in &d.victims {
                // A cycle is of distinct waiting holders, at least two (no
                // holder waits for itself, rule 7).
                let mut ids: Vec<_> = v.cycle.iter().map(|w| (w.member, w.holder)).collect();
                assert!(ids.len() >= 2, "{v:?}");
                ids.sort();
                ids.dedup();
                assert_eq!(ids.len(), v.cycle.len(), "{v:?}");
            }
            rewoken += d.rewoken;
            abandoned += d.abandoned;
            rounds += 1;
            std::thread::sleep(Duration::from_millis(3));
        }
        (victims, rounds, rewoken, abandoned)
    });
    let mut threads = Vec::new();
    for who in 0..4usize {
        let mut h = if who < 2 {
            a.holder().unwrap()
        } else {
            b.holder().unwrap()
        };
        let (reg, names, check_in) = (reg.clone(), names.clone(), check_in.clone());
        let (rr2, me) = (r.clone(), h.member_id());
        let told = told.clone();
        threads.push(std::thread::spawn(move || {
            let mut seed = (who as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let mut rnd = move |n: usize| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed % n as u64) as usize
            };
            let modes = LockMode::ALL;
            let wait = Duration::from_millis(20);
            let mut mine: Vec<(usize, LockId)> = Vec::new();
            let end = Instant::now() + Duration::from_secs(3);
            let back_out = |h: &mut cf_core::Holder, mine: &mut Vec<(usize, LockId)>| {
                for (res, id) in mine.drain(..) {
                    check_out(&reg, who, res, id.slot.get());
                    h.unlock(id).unwrap();
                }
            };
            let mut last = String::new();
            while Instant::now() < end {
                // Every lock this thread believes it holds is held, as it
                // believes.
                let locks = inspect::locks(&rr2).unwrap();
                for &(res, id) in &mine {
                    let ok = locks.iter().any(|l| {
                        l.member_id == me
                            && l.slot == id.slot
                            && l.held
                            && l.mode == id.mode
                            && l.resource.as_bytes() == names[res].as_slice()
                    });
                    assert!(
                        ok,
                        "holder {who} lost {id:?} on {res} after {last}: {:?}",
                        held(&rr2)
                    );
                }
                let op = rnd(3);
                if mine.is_empty() || (op == 0 && mine.len() < 3) {
                    let res = rnd(3);
                    let m = modes[rnd(modes.len())];
                    last = format!("lock {m:?} on {res}");
                    match h.lock(&names[res], Mode::lock(m), wait) {
                        Ok(id) => {
                            check_in(&reg, who, res, id.slot.get(), m, "lock");
                            mine.push((res, id));
                        }
                        Err(WaitError::Timeout(_)) => {}
                        Err(WaitError::Deadlock { .. }) => {
                            told.fetch_add(1, O::Relaxed);
                            last += " (victim)";
                            back_out(&mut h, &mut mine)
                        }
                        Err(e) => panic!("{e}"),
                    }
                } else if op == 1 {
                    let i = rnd(mine.len());
                    let (res, id) = mine[i];
                    let from = id.mode.lock_mode();
                    let to = modes[rnd(modes.len())];
                    let demotion = weaker(from, to);
                    // A lateral conversion (U to IX, IX to S) lets in what
                    // the new mode admits before its holder can register
                    // it: the registry would cry wolf. Only comparable ones.
                    if !demotion && !weaker(to, from) {
                        continue;
                    }
                    if demotion {
                        check_in(
                            &reg,
                            who,
                            res,
                            id.slot.get(),
                            to,
                            &format!("demoting {from:?}"),
                        );
                    }
                    last = format!("convert {id:?} to {to:?}");
                    match h.convert(id, Mode::lock(to), wait) {
                        Ok(c) => {
                            assert_eq!(c.slot, id.slot);
                            if !demotion {
                                check_in(
                                    &reg,
                                    who,
                                    res,
                                    id.slot.get(),
                                    to,
                                    &format!("promoted {from:?}"),
                                );
                            }
                            mine[i] = (res, c);
                        }
                        Err(WaitError::Timeout(_)) => {
                            assert!(!demotion, "a demotion waited");
                        }
                        Err(WaitError::Deadlock { .. }) => {
                            told.fetch_add(1, O::Relaxed);
                            assert!(!demotion, "a demotion was a victim");
                            back_out(&mut h, &mut mine)
                        }
                        Err(e) => panic!("{e}"),
                    }
                } else {
                    let i = rnd(mine.len());
                    let (res, id) = mine.swap_remove(i);
                    last = format!("unlock {id:?}");
                    check_out(&reg, who, res, id.slot.get());
                    h.unlock(id).unwrap();
                }
            }
            back_out(&mut h, &mut mine);
            drop(h);
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
    stop.store(true, O::Relaxed);
    let victims = detector.join().unwrap();
    eprintln!(
        "deadlock (victims, rounds, rewoken, abandoned): {victims:?}, answered {}",
        told.load(O::Relaxed)
    );
    at_rest(&r);
    a.disconnect().unwrap();
    b.disconnect().unwrap();
}
