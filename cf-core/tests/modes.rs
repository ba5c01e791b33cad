//! The lock manager's modes (IS, IX, S, U, SIX, X, each with or without the
//! modify flag) on real members and holders in a tiny region: the
//! compatibility table, every pair in both orders, between two members,
//! between two threads of one member, and against a failed member's
//! retained lock. The table itself is unit-tested in `lock/records.rs`; here
//! the requests go through the shipped fast path (share interest for IS and
//! S, exclusive for the others), the latched decision and the releases.

mod common;
use cf_core::{
    cleanup_member, inspect, testing, CleanupOutcome, ConnectMode, CreateOptions, EntryIndex,
    Holder, LockMode, Member, MemberState, Mode, Plex, Region, TryOutcome, WaitError,
};
use common::{colliding_pair, granted};
use proptest::prelude::*;
use std::sync::Arc;
use std::time::Duration;

fn region() -> (tempfile::TempDir, Arc<Region>) {
    let dir = tempfile::tempdir().unwrap();
    let plex = Plex {
        dir: dir.path().into(),
    };
    let r = Arc::new(Region::create(&plex, &CreateOptions::small_for_tests()).unwrap());
    (dir, r)
}

/// The table as the issue states it, written out independently of cf-core's.
fn expected(held: LockMode, asked: LockMode) -> bool {
    use LockMode::*;
    let with: &[LockMode] = match held {
        IS => &[IS, IX, S, U, SIX],
        IX => &[IS, IX],
        S => &[IS, S, U],
        U => &[IS, S],
        SIX => &[IS],
        X => &[],
    };
    with.contains(&asked)
}

fn entry_of(r: &Region, res: &[u8]) -> EntryIndex {
    cf_core::Resource::new(res).unwrap().entry(r.lock_entries())
}

/// Nothing held, nothing damaged: every record freed, every word back to
/// "nothing but the epoch".
fn assert_all_free(r: &Region, what: &str) {
    let problems = inspect::verify(r);
    assert!(problems.is_empty(), "{what}: {problems:#?}");
    assert!(
        inspect::locks(r).unwrap().is_empty(),
        "{what}: records left"
    );
    for e in r.entry_indices() {
        let w = testing::read_lock_word(r, e);
        assert!(w.is_free(), "{what}: entry {e} left {:#x}", w.0);
    }
}

/// The answer to `asked` beside a live holding in `held` by `holder_name`:
/// granted iff compatible, else contention naming exactly that holder in
/// its mode. Returns the lock if granted.
fn check_live_answer(
    out: TryOutcome,
    held: Mode,
    asked: Mode,
    holder_name: &str,
    what: &str,
) -> Option<cf_core::LockId> {
    let ok = expected(held.lock_mode(), asked.lock_mode());
    match out {
        TryOutcome::Granted(id) if ok => {
            assert_eq!(id.mode, asked, "{what}");
            Some(id)
        }
        TryOutcome::Contention(hs) if !ok => {
            assert_eq!(hs.len(), 1, "{what}: {hs:?}");
            assert_eq!(
                (hs[0].name.as_str(), hs[0].mode),
                (holder_name, held),
                "{what}"
            );
            None
        }
        other => panic!("{what}: {other:?} (compatible: {ok})"),
    }
}

/// Every mode held by member A, every mode asked by member B, on one
/// resource (so both orders of each pair), with the entry in fast mode at
/// first (`third` = None: A's lock is the word's alone) or already mixed by
/// a third member's lock on a colliding resource (every request and release
/// decided on the latched path, beside false contention).
fn two_members(third: bool) {
    let (_d, r) = region();
    let (res, other) = colliding_pair(r.lock_entries());
    let a = Member::connect(r.clone(), "A").unwrap();
    let b = Member::connect(r.clone(), "B").unwrap();
    let c = Member::connect(r.clone(), "C").unwrap();
    let (mut ha, mut hb, mut hc) = (
        a.holder().unwrap(),
        b.holder().unwrap(),
        c.holder().unwrap(),
    );
    let e = entry_of(&r, &res);
    let mut n = 0;
    for held in Mode::all() {
        for asked in Mode::all() {
            let what = format!("A holds {held}, B asks {asked}, third {third}");
            let cl = third.then(|| granted(hc.try_lock(&other, Mode::Modify).unwrap()));
            let la = granted(ha.try_lock(&res, held).unwrap());
            if !third {
                // Alone on a free entry: the fast path, share or exclusive
                // interest as the mode takes.
                let w = testing::read_lock_word(&r, e);
                assert!(!w.is_mixed(), "{what}: {:#x}", w.0);
                assert_eq!(w.mask() != 0, !held.is_exclusive(), "{what}: {:#x}", w.0);
            }
            let lb = check_live_answer(hb.try_lock(&res, asked).unwrap(), held, asked, "A", &what);
            if lb.is_some() {
                // Two holdings: the word stays as share bits only if both
                // take share interest; otherwise the entry went mixed (XES
                // contention when both are compatible, exclusive interest).
                let w = testing::read_lock_word(&r, e);
                assert_eq!(
                    w.is_mixed(),
                    third || held.is_exclusive() || asked.is_exclusive(),
                    "{what}: {:#x}",
                    w.0
                );
                let problems = inspect::verify(&r);
                assert!(problems.is_empty(), "{what}: {problems:#?}");
            }
            // Release in both orders, alternately.
            n += 1;
            if n % 2 == 0 {
                ha.unlock(la).unwrap();
                if let Some(lb) = lb {
                    hb.unlock(lb).unwrap();
                }
            } else {
                if let Some(lb) = lb {
                    hb.unlock(lb).unwrap();
                }
                ha.unlock(la).unwrap();
            }
            if let Some(cl) = cl {
                hc.unlock(cl).unwrap();
            }
            assert_all_free(&r, &what);
        }
    }
    drop((ha, hb, hc));
    for m in [a, b, c] {
        m.disconnect().unwrap();
    }
}

#[test]
fn two_members_every_pair_on_a_fast_entry() {
    two_members(false);
}

#[test]
fn two_members_every_pair_on_a_mixed_entry() {
    two_members(true);
}

/// Two threads of one member (two holders, the second asking from a thread
/// of its own while the first holds): granted iff compatible; a conflict
/// names the member itself, in the first holder's mode.
#[test]
fn two_threads_of_one_member_every_pair() {
    let (_d, r) = region();
    let a = Member::connect(r.clone(), "A").unwrap();
    let mut h1 = a.holder().unwrap();
    let mut h2 = a.holder().unwrap();
    for (n, held) in Mode::all().enumerate() {
        for asked in Mode::all() {
            let what = format!("thread 1 holds {held}, thread 2 asks {asked}");
            let l1 = granted(h1.try_lock(b"T", held).unwrap());
            // The second request from a thread of its own.
            let out = std::thread::scope(|s| {
                s.spawn(|| h2.try_lock(b"T", asked).unwrap())
                    .join()
                    .unwrap()
            });
            let l2 = check_live_answer(out, held, asked, "A", &what);
            if n % 2 == 0 {
                h1.unlock(l1).unwrap();
            }
            if let Some(l2) = l2 {
                h2.unlock(l2).unwrap();
            }
            if n % 2 == 1 {
                h1.unlock(l1).unwrap();
            }
            assert_all_free(&r, &format!("thread 1 held {held}, thread 2 asked {asked}"));
        }
    }
    drop((h1, h2));
    a.disconnect().unwrap();
}

/// A waiting request for an incompatible mode waits for the holder and is
/// granted when it lets go; one for a compatible mode is granted at once.
#[test]
fn waiting_requests_follow_the_table() {
    let (_d, r) = region();
    let a = Member::connect(r.clone(), "A").unwrap();
    let b = Member::connect(r.clone(), "B").unwrap();
    let (mut ha, mut hb) = (a.holder().unwrap(), b.holder().unwrap());
    use LockMode::*;
    let ix = granted(ha.try_lock(b"T", Mode::lock(IX)).unwrap());
    // Compatible with exclusive interest: met on the latched path, granted.
    let ix2 = hb
        .lock(b"T", Mode::lock(IX), Duration::from_secs(10))
        .unwrap();
    hb.unlock(ix2).unwrap();
    // Incompatible: times out naming A in IX.
    match hb.lock(b"T", Mode::Share, Duration::from_millis(50)) {
        Err(WaitError::Timeout(hs)) => {
            assert_eq!((hs[0].name.as_str(), hs[0].mode), ("A", Mode::lock(IX)));
        }
        other => panic!("{other:?}"),
    }
    // And is granted once A lets go.
    let sl = std::thread::scope(|s| {
        let waiter = s.spawn(|| hb.lock(b"T", Mode::lock(S), Duration::from_secs(30)));
        while !testing::holding_waiter_sleeps(&r, entry_of(&r, b"T")) {
            std::thread::sleep(Duration::from_millis(1));
        }
        ha.unlock(ix).unwrap();
        let sl = waiter.join().unwrap().unwrap();
        assert_eq!(sl.mode, Mode::Share);
        sl
    });
    hb.unlock(sl).unwrap();
    assert_all_free(&r, "after the wait");
    drop((ha, hb));
    a.disconnect().unwrap();
    b.disconnect().unwrap();
}

/// Member A holds `held` on T, then "dies" (its PID looks reused; no
/// destructor runs). Returns A's connector.
fn dies_holding(r: &Arc<Region>, held: Mode) -> cf_core::ConnectorId {
    let a = Member::connect(r.clone(), "A").unwrap();
    let mut ha = a.holder().unwrap();
    granted(ha.try_lock(b"T", held).unwrap());
    let id = a.id();
    testing::fake_reused_pid(r, id);
    std::mem::forget(ha);
    std::mem::forget(a);
    id
}

/// Restart light for A: reconnect in recovery mode, release what it retains
/// (`expect` locks), leave.
fn recover(r: &Arc<Region>, expect: usize) {
    let light = Member::connect_with(r.clone(), "A", ConnectMode::Recovery).unwrap();
    assert_eq!(light.release_all_held(|| {}).unwrap(), expect);
    light.disconnect().unwrap();
}

/// B's answer for `asked` while A retains `held`: retained (naming A and its
/// mode) iff the two are incompatible, granted (and released) otherwise.
fn check_retained_answer(hb: &mut Holder, held: Mode, asked: Mode, what: &str) {
    let ok = expected(held.lock_mode(), asked.lock_mode());
    match hb.try_lock(b"T", asked).unwrap() {
        TryOutcome::Granted(id) if ok => hb.unlock(id).unwrap(),
        TryOutcome::Retained(h) if !ok => {
            assert_eq!((h.name.as_str(), h.mode), ("A", held), "{what}");
        }
        other => panic!("{what}: {other:?} (compatible: {ok})"),
    }
}

/// A failed member's modify lock in every mode M against every mode N asked
/// by B: answered "retained" iff M and N are incompatible, granted
/// otherwise; asked right after the death (B's request cleans A up on the
/// way, or never needs to), after the cleanup, and while restart light is
/// connected; after the recovery, everything is granted.
#[test]
fn a_retained_lock_refuses_exactly_the_incompatible_modes() {
    let (_d, r) = region();
    let b = Member::connect(r.clone(), "B").unwrap();
    let mut hb = b.holder().unwrap();
    for lock in LockMode::ALL {
        let held = Mode::modify(lock);
        for asked in Mode::all() {
            for cleaned_first in [false, true] {
                let what = format!("A retains {held}, B asks {asked}, cleaned {cleaned_first}");
                let a_id = dies_holding(&r, held);
                if cleaned_first {
                    assert!(matches!(
                        cleanup_member(&r, a_id).unwrap(),
                        CleanupOutcome::Cleaned(_)
                    ));
                }
                check_retained_answer(&mut hb, held, asked, &what);
                // However the answer came, A is cleaned up now (a compatible
                // request needs no cleanup: do it), and retains its lock.
                let _ = cleanup_member(&r, a_id).unwrap();
                let st = cf_core::connector::slot_view(&r, a_id).unwrap().state;
                assert_eq!(st, MemberState::FailedPersistent, "{what}");
                let retained = inspect::retained(&r).unwrap();
                assert_eq!(retained.len(), 1, "{what}: {retained:?}");
                assert_eq!(retained[0].mode, held, "{what}");
                check_retained_answer(&mut hb, held, asked, &what);
                // Restart light connected: still retained.
                let light = Member::connect_with(r.clone(), "A", ConnectMode::Recovery).unwrap();
                check_retained_answer(&mut hb, held, asked, &format!("{what}, recovering"));
                assert_eq!(light.release_all_held(|| {}).unwrap(), 1, "{what}");
                light.disconnect().unwrap();
                // Recovered: granted.
                let id = granted(hb.try_lock(b"T", asked).unwrap());
                hb.unlock(id).unwrap();
                assert_all_free(&r, &what);
            }
        }
    }
    drop(hb);
    b.disconnect().unwrap();
}

/// A lock without the modify flag, in any mode, is released at its holder's
/// death: every mode is then granted to B.
#[test]
fn a_dead_members_other_locks_are_released_in_every_mode() {
    let (_d, r) = region();
    let b = Member::connect(r.clone(), "B").unwrap();
    let mut hb = b.holder().unwrap();
    for lock in LockMode::ALL {
        let held = Mode::lock(lock);
        let a_id = dies_holding(&r, held);
        assert!(matches!(
            cleanup_member(&r, a_id).unwrap(),
            CleanupOutcome::Cleaned(_)
        ));
        assert!(inspect::retained(&r).unwrap().is_empty(), "{held}");
        for asked in Mode::all() {
            let id = granted(hb.try_lock(b"T", asked).unwrap());
            hb.unlock(id).unwrap();
        }
        // Nothing retained: a normal restart takes the slot back at once.
        recover(&r, 0);
        assert_all_free(&r, &format!("A held {held}"));
    }
    drop(hb);
    b.disconnect().unwrap();
}

/// A random sequence of try requests and releases by two holders of member A
/// and one of member B, on two resources on one entry, in every mode: each
/// answer is what the table says against the holdings of the moment (of any
/// other holder: a holder never waits for itself), `verify` finds nothing wrong after
/// each step, and releasing everything leaves every word free.
fn random_case(ops: Vec<(u8, u8, u8, bool)>) {
    let (_d, r) = region();
    let (r0, r1) = colliding_pair(r.lock_entries());
    let names = [r0, r1];
    let a = Member::connect(r.clone(), "A").unwrap();
    let b = Member::connect(r.clone(), "B").unwrap();
    let mut hs = [
        a.holder().unwrap(),
        a.holder().unwrap(),
        b.holder().unwrap(),
    ];
    let member_of = ["A", "A", "B"];
    let modes: Vec<Mode> = Mode::all().collect();
    // (holder, resource, lock)
    let mut held: Vec<(usize, usize, cf_core::LockId)> = Vec::new();
    for (step, (h, res, m, release)) in ops.into_iter().enumerate() {
        let (h, res) = (h as usize % 3, res as usize % 2);
        if release {
            if let Some(i) = held.iter().position(|&(hh, _, _)| hh == h) {
                let (_, _, id) = held.remove(i);
                hs[h].unlock(id).unwrap();
            }
        } else {
            let mode = modes[m as usize % modes.len()];
            let blockers: Vec<&(usize, usize, cf_core::LockId)> = held
                .iter()
                .filter(|(hh, rr, id)| {
                    *hh != h && *rr == res && !expected(id.mode.lock_mode(), mode.lock_mode())
                })
                .collect();
            match hs[h].try_lock(&names[res], mode).unwrap() {
                TryOutcome::Granted(id) => {
                    assert!(
                        blockers.is_empty(),
                        "step {step}: {mode} granted beside {blockers:?}"
                    );
                    held.push((h, res, id));
                }
                TryOutcome::Contention(who) => {
                    assert!(!blockers.is_empty(), "step {step}: {mode} refused: {who:?}");
                    for w in &who {
                        assert!(
                            blockers
                                .iter()
                                .any(|(bh, _, id)| member_of[*bh] == w.name && id.mode == w.mode),
                            "step {step}: {w:?} named, blockers {blockers:?}"
                        );
                    }
                }
                other => panic!("step {step}: {other:?}"),
            }
        }
        let problems = inspect::verify(&r);
        assert!(problems.is_empty(), "step {step}: {problems:#?}");
    }
    for (h, _, id) in held {
        hs[h].unlock(id).unwrap();
    }
    assert_all_free(&r, "after the random sequence");
    drop(hs);
    a.disconnect().unwrap();
    b.disconnect().unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_requests_in_every_mode_follow_the_table(
        ops in prop::collection::vec((0u8..3, 0u8..2, 0u8..12, prop::bool::weighted(0.35)), 1..40),
    ) {
        random_case(ops);
    }
}
