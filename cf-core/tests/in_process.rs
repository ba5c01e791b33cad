//! Lock semantics within one process: several connections, several threads,
//! false contention, and deaths simulated by faking a reused PID.

mod common;
use cf_core::{inspect, testing, CreateOptions, Member, Mode, Plex, Region, Sizes, TryOutcome};
use common::{colliding_pair, granted};
use std::sync::Arc;
use std::time::Duration;

fn region(entries: u32) -> (tempfile::TempDir, Arc<Region>) {
    let dir = tempfile::tempdir().unwrap();
    let plex = Plex {
        dir: dir.path().into(),
    };
    let opts = CreateOptions {
        sizes: Sizes {
            lock_entries: entries,
            members: 8,
            records_per_member: 256,
        },
        group_access: false,
    };
    let r = Arc::new(Region::create(&plex, &opts).unwrap());
    (dir, r)
}

#[test]
fn exclusive_and_share_compatibility_between_members() {
    let (_d, r) = region(1 << 10);
    let a = Member::connect(r.clone(), "A").unwrap();
    let b = Member::connect(r.clone(), "B").unwrap();
    let (mut ha, mut hb) = (a.holder().unwrap(), b.holder().unwrap());
    let x = granted(ha.try_lock(b"r1", Mode::Exclusive).unwrap());
    match hb.try_lock(b"r1", Mode::Share).unwrap() {
        TryOutcome::Contention(h) => {
            assert_eq!(h.len(), 1);
            assert_eq!(h[0].name, "A");
            assert_eq!(h[0].mode, Mode::Exclusive);
        }
        other => panic!("{other:?}"),
    }
    ha.unlock(x).unwrap();
    let s1 = granted(hb.try_lock(b"r1", Mode::Share).unwrap());
    let s2 = granted(ha.try_lock(b"r1", Mode::Share).unwrap());
    assert!(matches!(
        ha.try_lock(b"r1", Mode::Modify).unwrap(),
        TryOutcome::Contention(_)
    ));
    hb.unlock(s1).unwrap();
    ha.unlock(s2).unwrap();
    assert!(inspect::verify(&r).is_empty(), "{:?}", inspect::verify(&r));
    assert!(inspect::locks(&r).unwrap().is_empty());
    drop((ha, hb));
    a.disconnect().unwrap();
    b.disconnect().unwrap();
    assert!(inspect::members(&r).unwrap().is_empty());
}

#[test]
fn false_contention_is_granted_and_counted() {
    let (_d, r) = region(16);
    let (r1, r2) = colliding_pair(16);
    let a = Member::connect(r.clone(), "A").unwrap();
    let b = Member::connect(r.clone(), "B").unwrap();
    let (mut ha, mut hb) = (a.holder().unwrap(), b.holder().unwrap());
    let l1 = granted(ha.try_lock(&r1, Mode::Modify).unwrap());
    let l2 = granted(hb.try_lock(&r2, Mode::Modify).unwrap());
    assert_eq!(l1.entry, l2.entry);
    // A real conflict on either resource is still refused.
    assert!(matches!(
        hb.try_lock(&r1, Mode::Share).unwrap(),
        TryOutcome::Contention(_)
    ));
    assert!(matches!(
        ha.try_lock(&r2, Mode::Exclusive).unwrap(),
        TryOutcome::Contention(_)
    ));
    let c = inspect::counters(&r);
    assert!(c.false_contention >= 1, "{c:?}");
    assert_eq!(c.irlm_contention, 2);
    assert!(inspect::verify(&r).is_empty(), "{:?}", inspect::verify(&r));
    ha.unlock(l1).unwrap();
    hb.unlock(l2).unwrap();
    // The entry returns to fast mode once empty.
    assert_eq!(inspect::structures(&r)[1].entries_in_use, Some(0));
}

#[test]
fn threads_of_one_member_count_their_own_holders() {
    let (_d, r) = region(16);
    let (r1, r2) = colliding_pair(16);
    let a = Member::connect(r.clone(), "A").unwrap();
    let (mut t1, mut t2) = (a.holder().unwrap(), a.holder().unwrap());
    let s1 = granted(t1.try_lock(&r1, Mode::Share).unwrap());
    let s2 = granted(t2.try_lock(&r1, Mode::Share).unwrap());
    // Same member, other thread, exclusive on the same resource: contention.
    assert!(matches!(
        t2.try_lock(&r1, Mode::Exclusive).unwrap(),
        TryOutcome::Contention(_)
    ));
    // Another resource on the same entry: granted.
    let x = granted(t2.try_lock(&r2, Mode::Exclusive).unwrap());
    t1.unlock(s1).unwrap();
    // t2 still holds r1 in share: another member cannot take it exclusively.
    let b = Member::connect(r.clone(), "B").unwrap();
    let mut hb = b.holder().unwrap();
    assert!(matches!(
        hb.try_lock(&r1, Mode::Exclusive).unwrap(),
        TryOutcome::Contention(_)
    ));
    t2.unlock(s2).unwrap();
    let got = granted(hb.try_lock(&r1, Mode::Exclusive).unwrap());
    hb.unlock(got).unwrap();
    t2.unlock(x).unwrap();
    assert!(inspect::verify(&r).is_empty(), "{:?}", inspect::verify(&r));
}

#[test]
fn waiting_request_is_woken_by_release_in_another_thread() {
    let (_d, r) = region(1 << 10);
    let a = Member::connect(r.clone(), "A").unwrap();
    let b = Member::connect(r.clone(), "B").unwrap();
    let mut ha = a.holder().unwrap();
    let held = granted(ha.try_lock(b"hot", Mode::Exclusive).unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let mut hb = b.holder().unwrap();
        tx.send(()).unwrap();
        let got = hb.lock(b"hot", Mode::Exclusive, Duration::from_secs(60));
        let id = got.expect("granted after release");
        hb.unlock(id).unwrap();
    });
    rx.recv().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    ha.unlock(held).unwrap();
    waiter.join().unwrap();
    assert!(inspect::locks(&r).unwrap().is_empty());
}

#[test]
fn wait_times_out_naming_the_holder() {
    let (_d, r) = region(1 << 10);
    let a = Member::connect(r.clone(), "A").unwrap();
    let b = Member::connect(r.clone(), "B").unwrap();
    let mut ha = a.holder().unwrap();
    let _held = granted(ha.try_lock(b"hot", Mode::Exclusive).unwrap());
    let mut hb = b.holder().unwrap();
    match hb.lock(b"hot", Mode::Share, Duration::from_millis(30)) {
        Err(cf_core::WaitError::Timeout(h)) => assert_eq!(h[0].name, "A"),
        other => panic!("{other:?}"),
    }
    assert!(inspect::locks(&r).unwrap().iter().all(|l| l.member == "A"));
}

#[test]
fn dead_member_modify_locks_are_retained_others_released() {
    let (_d, r) = region(16);
    let (r1, r2) = colliding_pair(16);
    let a = Member::connect(r.clone(), "A").unwrap();
    let mut ha = a.holder().unwrap();
    granted(ha.try_lock(&r1, Mode::Modify).unwrap());
    granted(ha.try_lock(b"plain-x", Mode::Exclusive).unwrap());
    granted(ha.try_lock(b"plain-s", Mode::Share).unwrap());
    // "A" dies: its PID now belongs to another process.
    testing::fake_reused_pid(&r, a.id());
    std::mem::forget(ha);
    std::mem::forget(a);
    let b = Member::connect(r.clone(), "B").unwrap();
    let mut hb = b.holder().unwrap();
    match hb.try_lock(&r1, Mode::Share).unwrap() {
        TryOutcome::Retained(h) => assert_eq!(h.name, "A"),
        other => panic!("{other:?}"),
    }
    let m = inspect::members(&r).unwrap();
    let dead = m.iter().find(|m| m.name == "A").unwrap();
    assert_eq!(dead.state, cf_core::MemberState::FailedPersistent);
    assert_eq!(dead.retained, 1);
    // Non-modify locks were released; the false-contention neighbour is granted.
    granted(hb.try_lock(b"plain-x", Mode::Exclusive).unwrap());
    granted(hb.try_lock(b"plain-s", Mode::Exclusive).unwrap());
    granted(hb.try_lock(&r2, Mode::Modify).unwrap());
    // Waiting for a retained resource answers at once.
    match hb.lock(&r1, Mode::Exclusive, Duration::from_secs(600)) {
        Err(cf_core::WaitError::Retained(h)) => assert_eq!(h.name, "A"),
        other => panic!("{other:?}"),
    }
    let ret = inspect::retained(&r).unwrap();
    assert_eq!(ret.len(), 1);
    assert_eq!(ret[0].resource.as_bytes(), &r1[..]);
    assert!(inspect::verify(&r).is_empty(), "{:?}", inspect::verify(&r));
    // A lock-only reconnect as A is refused; a recovery connect (restart
    // light) takes the retained lock back, still retained; disconnect frees it.
    assert!(matches!(
        Member::connect(r.clone(), "A"),
        Err(cf_core::ConnectError::FailedPersistent(_))
    ));
    let a2 = Member::connect_with(r.clone(), "A", cf_core::ConnectMode::Recovery).unwrap();
    assert_eq!(a2.id(), dead.id);
    match hb.try_lock(&r1, Mode::Share).unwrap() {
        TryOutcome::Retained(h) => assert_eq!(h.name, "A"),
        other => panic!("{other:?}"),
    }
    assert_eq!(a2.held_records().unwrap().len(), 1);
    // Every refusal because of A's retained lock was counted (the report's
    // "incompatible retained lock").
    assert_eq!(
        cf_core::connector::activity(&r, b.id())
            .unwrap()
            .retained_refusals,
        3
    );
    a2.disconnect().unwrap();
    assert!(inspect::retained(&r).unwrap().is_empty());
    granted(hb.try_lock(&r1, Mode::Exclusive).unwrap());
    assert!(inspect::verify(&r).is_empty(), "{:?}", inspect::verify(&r));
}

#[test]
fn hammering_threads_never_overlap() {
    let (_d, r) = region(16);
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let inside = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut threads = Vec::new();
    for (i, name) in ["A", "B", "C"].iter().enumerate() {
        let m = Arc::new(Member::connect(r.clone(), name).unwrap());
        for t in 0..2 {
            let (m, counter, inside) = (m.clone(), counter.clone(), inside.clone());
            threads.push(std::thread::spawn(move || {
                let mut h = m.holder().unwrap();
                for n in 0..2000u32 {
                    let res: &[u8] = if (n + t + i as u32).is_multiple_of(3) {
                        b"other"
                    } else {
                        b"shared"
                    };
                    let id = h
                        .lock(b"shared", Mode::Exclusive, Duration::from_secs(60))
                        .unwrap();
                    assert_eq!(inside.fetch_add(1, std::sync::atomic::Ordering::SeqCst), 0);
                    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    inside.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    h.unlock(id).unwrap();
                    let s = h.lock(res, Mode::Share, Duration::from_secs(60)).unwrap();
                    h.unlock(s).unwrap();
                }
            }));
        }
    }
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(counter.load(std::sync::atomic::Ordering::Relaxed), 6 * 2000);
    assert!(
        inspect::locks(&r).unwrap().is_empty(),
        "{:?}",
        inspect::locks(&r)
    );
    assert!(inspect::verify(&r).is_empty(), "{:?}", inspect::verify(&r));
}

/// One request in 64 is timed into the connection's service-time
/// histogram: 128 uncontended requests give two samples.
#[test]
fn one_request_in_64_is_timed_for_the_service_time() {
    let (_d, r) = region(16);
    let a = Member::connect(r.clone(), "A").unwrap();
    let mut h = a.holder().unwrap();
    for _ in 0..128 {
        let id = granted(h.try_lock(b"timed", Mode::Exclusive).unwrap());
        h.unlock(id).unwrap();
    }
    let act = cf_core::connector::activity(&r, a.id()).unwrap();
    assert_eq!(act.service_ns.iter().sum::<u64>(), 2, "{act:?}");
    assert_eq!(act.retained_refusals, 0);
    drop(h);
    a.disconnect().unwrap();
}
