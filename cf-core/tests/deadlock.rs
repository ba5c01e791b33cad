//! Deadlock detection within one process (`deadlock.rs`): members and
//! threads that wait for each other in a cycle, one round of the detector
//! (`deadlock::detect_once`), exactly one victim per cycle, which answers
//! `WaitError::Deadlock` while the others go on; a cycle through a dead
//! member gets no victim; the detector's claim. Deaths are faked (a reused
//! PID), as in `in_process.rs`; real SIGKILLs are in `cf-node/tests/deadlock.rs`.

use cf_core::deadlock::{self, Detection};
use cf_core::events::{self, EventData, EventKind};
use cf_core::{
    inspect, testing, CreateOptions, Holder, HolderInfo, Member, Mode, Plex, ProcessId, Region,
    Sizes, TryOutcome, WaitError,
};
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Long enough never to end a wait in these tests: a hang, not a timeout.
const PATIENCE: Duration = Duration::from_secs(60);

fn region() -> (tempfile::TempDir, Arc<Region>) {
    let dir = tempfile::tempdir().unwrap();
    let plex = Plex {
        dir: dir.path().into(),
    };
    let opts = CreateOptions {
        sizes: Sizes {
            lock_entries: 1 << 10,
            members: 8,
            records_per_member: 256,
        },
        group_access: false,
    };
    let r = Arc::new(Region::create(&plex, &opts).unwrap());
    (dir, r)
}

#[derive(Debug)]
enum Out {
    Granted,
    Victim(Vec<HolderInfo>),
    Other(String),
}

/// A thread of holder `h`: take `first` (and say so at `go`), then wait for
/// `then`; release everything it got, like a transaction that commits or
/// backs out.
fn takes_then_waits(
    mut h: Holder,
    first: &'static [u8],
    then: &'static [u8],
    go: Arc<Barrier>,
) -> JoinHandle<Out> {
    std::thread::spawn(move || {
        let l1 = h.lock(first, Mode::Modify, PATIENCE).unwrap();
        go.wait();
        let out = match h.lock(then, Mode::Modify, PATIENCE) {
            Ok(l2) => {
                h.unlock(l2).unwrap();
                Out::Granted
            }
            Err(WaitError::Deadlock { cycle }) => Out::Victim(cycle),
            Err(e) => Out::Other(e.to_string()),
        };
        match out {
            Out::Other(_) => drop(h.unlock(l1)), // e.g. declared dead
            _ => h.unlock(l1).unwrap(),
        }
        out
    })
}

/// Wait until `n` requests wait (their wait records say so).
fn until_waiting(r: &Region, n: usize) {
    let deadline = Instant::now() + PATIENCE;
    while deadlock::waits(r).len() < n {
        assert!(Instant::now() < deadline, "{:?}", deadlock::waits(r));
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn victims_recorded(r: &Region) -> usize {
    events::read_all(r)
        .iter()
        .filter(|e| e.kind() == EventKind::DeadlockVictim)
        .count()
}

/// The threads' answers: exactly one victim, naming a cycle of `len`
/// members; every other thread was granted.
fn one_victim(d: &Detection, outs: Vec<Out>, len: usize) -> Vec<HolderInfo> {
    assert_eq!(d.victims.len(), 1, "{d:?}");
    let v = &d.victims[0];
    assert_eq!(v.cycle.len(), len, "{d:?}");
    assert_eq!(v.cycle[0], v.waiting);
    // The rule: the youngest wait of the cycle.
    assert!(v.cycle.iter().all(|w| w.since_ns <= v.waiting.since_ns));
    let mut victim = None;
    for o in outs {
        match o {
            Out::Granted => {}
            Out::Victim(c) => assert!(victim.replace(c).is_none(), "two victims"),
            Out::Other(e) => panic!("{e}"),
        }
    }
    let cycle = victim.expect("no victim answered Deadlock");
    assert_eq!(cycle.len(), len);
    assert_eq!(cycle[0].id, v.waiting.member);
    assert!(cycle.iter().all(|h| h.mode == Mode::Modify));
    cycle
}

fn clean(r: &Region) {
    assert!(deadlock::waits(r).is_empty(), "{:?}", deadlock::waits(r));
    assert!(inspect::locks(r).unwrap().is_empty());
    assert!(inspect::verify(r).is_empty(), "{:?}", inspect::verify(r));
}

#[test]
fn two_members_in_opposite_order_one_victim_the_other_proceeds() {
    let (_d, r) = region();
    let a = Member::connect(r.clone(), "A").unwrap();
    let b = Member::connect(r.clone(), "B").unwrap();
    let go = Arc::new(Barrier::new(2));
    let ta = takes_then_waits(a.holder().unwrap(), b"r1", b"r2", go.clone());
    let tb = takes_then_waits(b.holder().unwrap(), b"r2", b"r1", go);
    until_waiting(&r, 2);
    let d = deadlock::detect_once(&r, Some(a.id())).unwrap();
    assert!(d.busy.is_none() && !d.taken_over);
    assert_eq!(d.waiting, 2);
    let outs = vec![ta.join().unwrap(), tb.join().unwrap()];
    let cycle = one_victim(&d, outs, 2);
    let mut names: Vec<&str> = cycle.iter().map(|h| h.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["A", "B"]);
    // One event, by the member whose detector told it.
    let ev: Vec<_> = events::read_all(&r)
        .into_iter()
        .filter(|e| e.kind() == EventKind::DeadlockVictim)
        .collect();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].member, cycle[0].name);
    assert_eq!(ev[0].by.as_deref(), Some("A"));
    assert!(
        matches!(
            ev[0].data,
            EventData::DeadlockVictim {
                cycle_length: 2,
                ..
            }
        ),
        "{ev:?}"
    );
    assert_eq!(deadlock::victims_told(&r), 1);
    // Nothing is left: a second round finds nothing.
    let d = deadlock::detect_once(&r, None).unwrap();
    assert_eq!((d.waiting, d.victims.len()), (0, 0));
    clean(&r);
    a.disconnect().unwrap();
    b.disconnect().unwrap();
}

#[test]
fn a_three_member_cycle_gets_one_victim() {
    let (_d, r) = region();
    let ms: Vec<Member> = ["A", "B", "C"]
        .iter()
        .map(|n| Member::connect(r.clone(), n).unwrap())
        .collect();
    let go = Arc::new(Barrier::new(3));
    let res: [&'static [u8]; 3] = [b"r1", b"r2", b"r3"];
    let ts: Vec<_> = (0..3)
        .map(|i| {
            takes_then_waits(
                ms[i].holder().unwrap(),
                res[i],
                res[(i + 1) % 3],
                go.clone(),
            )
        })
        .collect();
    until_waiting(&r, 3);
    let d = deadlock::detect_once(&r, None).unwrap();
    let outs = ts.into_iter().map(|t| t.join().unwrap()).collect();
    let cycle = one_victim(&d, outs, 3);
    // In wait-for order: each waits for the next (A for B, B for C, C for A).
    let order: Vec<&str> = cycle.iter().map(|h| h.name.as_str()).collect();
    let start = ["A", "B", "C"].iter().position(|n| *n == order[0]).unwrap();
    let expected: Vec<&str> = (0..3).map(|k| ["A", "B", "C"][(start + k) % 3]).collect();
    assert_eq!(order, expected);
    assert_eq!(victims_recorded(&r), 1);
    clean(&r);
    for m in ms {
        m.disconnect().unwrap();
    }
}

#[test]
fn a_cycle_through_two_threads_of_one_member_gets_one_victim() {
    let (_d, r) = region();
    let m = Member::connect(r.clone(), "M").unwrap();
    let go = Arc::new(Barrier::new(2));
    let t1 = takes_then_waits(m.holder().unwrap(), b"r1", b"r2", go.clone());
    let t2 = takes_then_waits(m.holder().unwrap(), b"r2", b"r1", go);
    until_waiting(&r, 2);
    let w = deadlock::waits(&r);
    assert_ne!(w[0].holder, w[1].holder, "two holders of one member");
    let d = deadlock::detect_once(&r, None).unwrap();
    let outs = vec![t1.join().unwrap(), t2.join().unwrap()];
    let cycle = one_victim(&d, outs, 2);
    assert!(cycle.iter().all(|h| h.name == "M"));
    assert_eq!(victims_recorded(&r), 1);
    clean(&r);
    m.disconnect().unwrap();
}

#[test]
fn waiters_without_a_cycle_are_left_alone() {
    // B and C both wait for A, which waits for nobody: no victim.
    let (_d, r) = region();
    let a = Member::connect(r.clone(), "A").unwrap();
    let b = Member::connect(r.clone(), "B").unwrap();
    let mut ha = a.holder().unwrap();
    let held = ha.lock(b"r1", Mode::Modify, PATIENCE).unwrap();
    let go = Arc::new(Barrier::new(2));
    let tb = takes_then_waits(b.holder().unwrap(), b"r2", b"r1", go.clone());
    let hc = b.holder().unwrap();
    let tc = std::thread::spawn(move || {
        let mut hc = hc;
        go.wait();
        let l = hc.lock(b"r1", Mode::Share, PATIENCE).unwrap();
        hc.unlock(l).unwrap();
    });
    until_waiting(&r, 2);
    let d = deadlock::detect_once(&r, None).unwrap();
    assert_eq!(d.waiting, 2);
    assert!(d.victims.is_empty() && d.abandoned == 0, "{d:?}");
    ha.unlock(held).unwrap();
    assert!(matches!(tb.join().unwrap(), Out::Granted));
    tc.join().unwrap();
    assert_eq!(victims_recorded(&r), 0);
    drop(ha);
    clean(&r);
    a.disconnect().unwrap();
    b.disconnect().unwrap();
}

#[test]
fn a_wait_for_a_sibling_threads_lock_is_no_deadlock() {
    // Holders are told apart by their blocks' owner tokens: several holders
    // of one member (once, the second and third shared a token, and a
    // thread waiting for its sibling looked like one waiting for itself).
    let (_d, r) = region();
    let m = Member::connect(r.clone(), "M").unwrap();
    let mut hs: Vec<Holder> = (0..4).map(|_| m.holder().unwrap()).collect();
    for (i, j) in [(0, 1), (1, 2), (2, 3), (3, 0)] {
        let held = hs[i].lock(b"r", Mode::Modify, PATIENCE).unwrap();
        let mut waiter = hs.remove(j);
        let t = std::thread::spawn(move || {
            let id = waiter.lock(b"r", Mode::Modify, PATIENCE);
            (waiter, id)
        });
        until_waiting(&r, 1);
        let d = deadlock::detect_once(&r, None).unwrap();
        assert!(
            d.victims.is_empty() && d.waiting == 1,
            "holders {i} and {j}: {d:?}"
        );
        hs[if i < j { i } else { i - 1 }].unlock(held).unwrap();
        let (mut waiter, id) = t.join().unwrap();
        waiter.unlock(id.unwrap()).unwrap();
        hs.insert(j, waiter);
    }
    drop(hs);
    clean(&r);
    m.disconnect().unwrap();
}

#[test]
fn a_holder_never_waits_for_itself() {
    // Rule 7: a share holder asking for the resource exclusively is granted
    // at once when nobody else holds it (it used to wait for itself, a
    // cycle of one); a sibling thread's share still makes it wait.
    let (_d, r) = region();
    let m = Member::connect(r.clone(), "M").unwrap();
    let mut h = m.holder().unwrap();
    let s = h.lock(b"r", Mode::Share, PATIENCE).unwrap();
    let x = h.lock(b"r", Mode::Exclusive, PATIENCE).unwrap();
    assert!(deadlock::waits(&r).is_empty());
    assert!(deadlock::detect_once(&r, None).unwrap().victims.is_empty());
    let mut sibling = m.holder().unwrap();
    assert!(matches!(
        sibling.try_lock(b"r", Mode::Share).unwrap(),
        TryOutcome::Contention(_)
    ));
    h.unlock(x).unwrap();
    assert!(matches!(
        sibling.try_lock(b"r", Mode::Share).unwrap(),
        TryOutcome::Granted(_)
    ));
    drop(sibling);
    h.unlock(s).unwrap();
    drop(h);
    clean(&r);
    m.disconnect().unwrap();
}

#[test]
fn a_cycle_through_a_dead_member_gets_no_victim_and_its_locks_are_retained() {
    let (_d, r) = region();
    let a = Member::connect(r.clone(), "A").unwrap();
    let b = Member::connect(r.clone(), "B").unwrap();
    let a_id = a.id();
    let go = Arc::new(Barrier::new(2));
    let ta = takes_then_waits(a.holder().unwrap(), b"r1", b"r2", go.clone());
    let mut hb = b.holder().unwrap();
    let hb_r2 = hb.lock(b"r2", Mode::Modify, PATIENCE).unwrap();
    let tb = std::thread::spawn(move || {
        go.wait();
        let out = hb.lock(b"r1", Mode::Modify, PATIENCE).map(|_| ());
        hb.unlock(hb_r2).unwrap();
        out
    });
    until_waiting(&r, 2);
    // "A" dies before any detector runs: its PID is now another process's.
    testing::fake_reused_pid(&r, a_id);
    let d = deadlock::detect_once(&r, None).unwrap();
    assert!(d.victims.is_empty(), "{d:?}");
    // B is answered "retained by A" (its next look cleans A up); A, declared
    // dead while it runs, is disconnected.
    match tb.join().unwrap() {
        Err(WaitError::Retained(h)) => assert_eq!(h.name, "A"),
        other => panic!("{other:?}"),
    }
    let d = deadlock::detect_once(&r, None).unwrap();
    assert!(d.victims.is_empty(), "{d:?}");
    assert_eq!(victims_recorded(&r), 0);
    let ret = inspect::retained(&r).unwrap();
    assert_eq!(ret.len(), 1, "{ret:?}");
    assert_eq!(ret[0].resource.as_bytes(), b"r1");
    // A's thread: its request fails, its connection was cleaned up.
    match ta.join().unwrap() {
        Out::Other(e) => assert!(e.contains("no longer active"), "{e}"),
        other => panic!("{other:?}"),
    }
    std::mem::forget(a);
    b.disconnect().unwrap();
}

#[test]
fn the_detector_claim_is_taken_over_from_a_dead_detector_only() {
    let (_d, r) = region();
    let me = ProcessId::current().unwrap();
    testing::set_deadlock_claim(&r, me.token());
    // A live process (here: this one) runs a round: nothing is read.
    let d = deadlock::detect_once(&r, None).unwrap();
    assert_eq!(d.busy, Some(me.pid));
    // A detector that died in its round: taken over, then released.
    let dead = ProcessId {
        pid: me.pid,
        start_time: me.start_time ^ 0x5a5a,
    };
    testing::set_deadlock_claim(&r, dead.token());
    let d = deadlock::detect_once(&r, None).unwrap();
    assert!(d.taken_over && d.busy.is_none(), "{d:?}");
    assert_eq!(testing::deadlock_claim(&r), 0);
    // Due only once per interval.
    assert!(deadlock::detect_if_due(&r, None).unwrap().is_none());
}
