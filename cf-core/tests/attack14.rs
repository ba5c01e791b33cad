//! attack14: the deadlock detector and the wait-record protocol
//! (`deadlock.rs`), attacked with real threads on the shipped code. Deaths
//! are faked (a reused PID), as in `deadlock.rs` and `in_process.rs`.

use cf_core::deadlock;
use cf_core::{
    inspect, testing, CreateOptions, Member, Mode, Plex, ProcessId, Region, Sizes, TryOutcome,
    WaitError,
};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// Long enough never to end a wait in these tests: a hang, not a timeout.
const PATIENCE: Duration = Duration::from_secs(60);

fn region_with(lock_entries: u32) -> (tempfile::TempDir, Arc<Region>) {
    let dir = tempfile::tempdir().unwrap();
    let plex = Plex {
        dir: dir.path().into(),
    };
    let opts = CreateOptions {
        sizes: Sizes {
            lock_entries,
            members: 8,
            records_per_member: 256,
        },
        group_access: false,
    };
    let r = Arc::new(Region::create(&plex, &opts).unwrap());
    (dir, r)
}

/// Wait until `f` holds (a hang is a failure, not a timing assertion).
fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !f() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn until_waiting(r: &Region, n: usize) {
    until(&format!("{n} waiting"), || deadlock::waits(r).len() >= n);
}

/// A deadlock victim whose request is urgent (`entry.rs` rule 5) and whose
/// flag is taken back (`Waiter::untell`: a holder it conflicts with is dead
/// and being cleaned up) goes on waiting: it must still be urgent. The
/// victim path gave its URGENT record up for good *before* deciding whether
/// to abort, so after the untell the request waited on as a plain PENDING
/// one, past its bypass limit for ever: any later request could overtake it.
///
/// V holds r2 and waits for r (exclusive); H holds r (share) and waits for
/// r2: a cycle, V the youngest. D (dead, cleanup claimed by a live cleaner)
/// also holds r in share mode. E's tries of r in share mode make V urgent,
/// then show whether it still is.
#[test]
fn an_untold_urgent_victim_stays_urgent() {
    let (_d, r) = region_with(1 << 10);
    let mv = Member::connect(r.clone(), "V").unwrap();
    let mh = Member::connect(r.clone(), "H").unwrap();
    let md = Member::connect(r.clone(), "D").unwrap();
    let me = Member::connect(r.clone(), "E").unwrap();
    let (v_id, d_id) = (mv.id(), md.id());
    let mut hd = md.holder().unwrap();
    let _d_r = hd.lock(b"r", Mode::Share, PATIENCE).unwrap();

    let v_has_r2 = Arc::new(Barrier::new(3));
    let v_go = Arc::new(Barrier::new(2));
    let mut hv = mv.holder().unwrap();
    let (b1, b2) = (v_has_r2.clone(), v_go.clone());
    let tv = std::thread::spawn(move || {
        let r2 = hv.lock(b"r2", Mode::Exclusive, PATIENCE).unwrap();
        b1.wait();
        b2.wait();
        let out = hv.lock(b"r", Mode::Exclusive, PATIENCE);
        if let Ok(id) = &out {
            hv.unlock(*id).unwrap();
        }
        hv.unlock(r2).unwrap();
        out.map(|_| ())
    });
    let mut hh = mh.holder().unwrap();
    let b1 = v_has_r2.clone();
    let th = std::thread::spawn(move || {
        let s = hh.lock(b"r", Mode::Share, PATIENCE).unwrap();
        b1.wait();
        let out = hh.lock(b"r2", Mode::Exclusive, PATIENCE);
        if let Ok(id) = &out {
            hh.unlock(*id).unwrap();
        }
        hh.unlock(s).unwrap();
        out.map(|_| ())
    });
    v_has_r2.wait();
    until_waiting(&r, 1); // H waits first: V will be the youngest.
    v_go.wait();
    until_waiting(&r, 2);

    // E's tries (each a holdings change V wakes for and is refused after)
    // make V urgent: then E's share try is refused although share holders
    // only hold r.
    let mut he = me.holder().unwrap();
    let mut urgent = 0;
    until("V urgent", || {
        match he.try_lock(b"r", Mode::Share).unwrap() {
            TryOutcome::Granted(id) => {
                he.unlock(id).unwrap();
                false
            }
            TryOutcome::Contention(h) => {
                assert_eq!(h[0].id, v_id, "{h:?}");
                urgent += 1;
                urgent == 2
            }
            other => panic!("{other:?}"),
        }
    });

    // D dies; a live process (this one) is at its cleanup.
    testing::fake_reused_pid(&r, d_id);
    testing::set_cleanup_claim(&r, d_id, ProcessId::current().unwrap().token());
    let d = deadlock::detect_once(&r, None).unwrap();
    assert_eq!(d.victims.len(), 1, "{d:?}");
    assert_eq!(d.victims[0].waiting.member, v_id);
    // V looks, finds D being cleaned up, takes the flag back and waits on.
    until("V untold", || {
        deadlock::waits(&r)
            .iter()
            .any(|w| w.member == v_id && !w.victim)
    });
    match he.try_lock(b"r", Mode::Share).unwrap() {
        TryOutcome::Contention(h) => assert_eq!(h[0].id, v_id, "{h:?}"),
        TryOutcome::Granted(id) => {
            he.unlock(id).unwrap();
            panic!("V's request lost its urgency when its victim flag was taken back");
        }
        other => panic!("{other:?}"),
    }

    // D's cleanup can go on now (V's next look does it); then the cycle
    // gets its victim: V backs out, H is granted.
    testing::set_cleanup_claim(&r, d_id, 0);
    until("V answered", || {
        let _ = deadlock::detect_once(&r, None).unwrap();
        tv.is_finished()
    });
    match tv.join().unwrap() {
        Err(WaitError::Deadlock { cycle }) => assert_eq!(cycle.len(), 2, "{cycle:?}"),
        other => panic!("{other:?}"),
    }
    th.join().unwrap().unwrap();
    assert!(deadlock::waits(&r).is_empty());
    std::mem::forget(hd);
    std::mem::forget(md);
    drop(he);
    assert!(
        inspect::locks(&r).unwrap().is_empty(),
        "{:?}",
        inspect::locks(&r)
    );
    for m in [mv, mh, me] {
        m.disconnect().unwrap();
    }
}
