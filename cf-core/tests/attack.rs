//! Adversarial review `attack1`: consequences of interleavings found by the
//! loom models in `src/loom_models/attack.rs`. Each test builds, with the
//! library and then by writing the few words a killed process leaves, the
//! exact region a SIGKILL leaves at one instant of such an interleaving, and
//! asserts what must hold afterwards.

use cf_core::testing::forge;
use cf_core::testing::forge::{bit, holder_field, MIXED, TAG_HELD, TAG_PENDING};
use cf_core::EntryIndex;
use cf_core::{
    inspect, recovery, testing, CleanupOutcome, CreateOptions, Member, Mode, Plex, Region,
    Resource, TryOutcome,
};
use cf_core::{ConnectorId, SlotIndex};
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

const HANG: Duration = Duration::from_secs(60);

fn region() -> (tempfile::TempDir, Arc<Region>) {
    let base = if Path::new("/dev/shm").is_dir() {
        Path::new("/dev/shm").to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let dir = tempfile::Builder::new()
        .prefix("cf-attack-")
        .tempdir_in(base)
        .expect("a temporary directory");
    let plex = Plex {
        dir: dir.path().join("plex"),
    };
    let r = Arc::new(Region::create(&plex, &CreateOptions::small_for_tests()).expect("region"));
    (dir, r)
}

fn guarded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(HANG) {
        Ok(v) => {
            if let Err(p) = worker.join() {
                std::panic::resume_unwind(p);
            }
            v
        }
        Err(RecvTimeoutError::Timeout) => panic!("{what}: no answer within {HANG:?} (a hang)"),
        Err(RecvTimeoutError::Disconnected) => match worker.join() {
            Err(p) => std::panic::resume_unwind(p),
            Ok(()) => unreachable!(),
        },
    }
}

fn entry_of(r: &Region, res: &[u8]) -> EntryIndex {
    Resource::new(res).unwrap().entry(r.lock_entries())
}

fn colliding_with(r: &Region, res: &[u8], prefix: &str, not: &[&[u8]]) -> Vec<u8> {
    let e = entry_of(r, res);
    (0..)
        .map(|i| format!("{prefix}{i}").into_bytes())
        .find(|o| o.as_slice() != res && !not.contains(&o.as_slice()) && entry_of(r, o) == e)
        .unwrap()
}

/// The latch of an entry outlives every record that covered it.
///
/// Loom model `attack::timed_out_half_made_request_leaves_a_stale_bit`:
/// thread 1 of member A releases R1 on the latched path (`entry::release`);
/// `holds_other_on` sees thread 2's half-made request for R3 (same entry,
/// tag HELD before its failed CAS) and takes the branch "another held record
/// of ours covers the latch": it frees R1's tag *before* it unlatches.
/// Thread 2's `lock(R3, .., 0)` finds the latch busy, times out and frees
/// its record without latching. Just before thread 1's unlatch, the entry is
/// latched by A and A has no record on it (entry.rs invariant 1 broken). A
/// SIGKILL of A at that instant leaves this region: A's cleanup walks A's
/// records, none of which is on E, so nobody ever drops E's latch; once A is
/// failed-persistent (and later free), `check_latch_holder` turns every
/// request on E into a "damaged region" error, forever.
///
/// Required: after A's death and cleanup, R1 (being released when A died),
/// R3 and any other resource of E can be granted to a live member, and the
/// region verifies clean at rest.
#[test]
fn a_latch_left_with_no_record_under_it_is_never_released() {
    let (_dir, r) = region();
    guarded("stale latch", move || {
        let r1 = b"acct:R1".to_vec();
        let r2 = colliding_with(&r, &r1, "acct:R2-", &[]);
        let r3 = colliding_with(&r, &r1, "acct:R3-", &[&r2]);
        let e = entry_of(&r, &r1);
        let a = Member::connect(r.clone(), "A").unwrap();
        let mut h1 = a.holder().unwrap();
        let mut h2 = a.holder().unwrap();
        let l1 = match h1.try_lock(&r1, Mode::Exclusive).unwrap() {
            TryOutcome::Granted(l) => l,
            o => panic!("{o:?}"),
        };
        // R2 taken and released on the latched path: E is mixed, naming A.
        let l2 = match h2.try_lock(&r2, Mode::Exclusive).unwrap() {
            TryOutcome::Granted(l) => l,
            o => panic!("{o:?}"),
        };
        h2.unlock(l2).unwrap();
        assert!(
            inspect::verify(&r).is_empty(),
            "setup: {:?}",
            inspect::verify(&r)
        );
        // The instant of the kill: thread 1 holds E's latch and has freed
        // R1's tag; thread 2's request for R3 has timed out and freed its own.
        testing::write_lock_word(&r, e, MIXED | holder_field(a.id()) | bit(a.id()));
        testing::write_tag(&r, a.id(), l1.slot, 0);
        // SIGKILL: nothing of A runs any more.
        testing::fake_reused_pid(&r, a.id());
        std::mem::forget(h1);
        std::mem::forget(h2);
        let a_id = a.id();
        std::mem::forget(a);

        let out = recovery::cleanup_member(&r, a_id).unwrap();
        assert!(matches!(out, CleanupOutcome::Cleaned(_)), "{out:?}");
        let b = Member::connect(r.clone(), "B").unwrap();
        let mut hb = b.holder().unwrap();
        for res in [&r1, &r3] {
            match hb.try_lock(res, Mode::Exclusive) {
                Ok(TryOutcome::Granted(l)) => hb.unlock(l).unwrap(),
                other => panic!(
                    "A (dead, cleaned up) held nothing on entry {e}; {} answered {other:?}",
                    String::from_utf8_lossy(res)
                ),
            }
        }
        drop(hb);
        b.disconnect().unwrap();
        let problems = inspect::verify(&r);
        assert!(problems.is_empty(), "at rest: {problems:?}");
    });
}

/// A request that meets a dead holder runs that holder's whole cleanup
/// itself, and the cleanup waits (up to `WALK_STUCK`, 30 s) for the latch of
/// *another* entry held by a live but stopped process: the request then
/// answers a "damaged region" error, after 30 s, instead of "retained".
///
/// Dead member C (not cleaned up yet: no monitor has noticed) holds R in
/// modify mode on entry F, and a share lock S on entry E. Live member X is
/// stopped (SIGSTOP: a fault of the failure model) in the middle of a
/// decision on E, holding E's latch (written into the word here, as in
/// `hole3`). Live member B tries R: the conflict is with C, whose process is
/// dead, so `slow_acquire` steps out and `clean_dead` runs
/// `recovery::try_clean(C)` in B's thread. C's walk settles F at once (R
/// retained) but cannot latch E; it defers E every 5 ms until `WALK_STUCK`
/// and then fails, and B's `try_lock` returns that error (and C is left
/// CLEANING). holder.rs promises that "a `try` answers within TRY_WAIT
/// whatever latches or cleanups are in progress elsewhere", and invariant 2
/// an immediate typed answer naming the retaining member.
///
/// Required: B's try for R answers "retained by C" (or, at worst,
/// contention naming C); never an error.
#[test]
fn a_try_that_cleans_a_dead_holder_up_is_not_held_by_another_entrys_stopped_latch_holder() {
    let (_dir, r) = region();
    guarded("try through a stuck cleanup", move || {
        let res_r = b"acct:R".to_vec();
        let e_f = entry_of(&r, &res_r);
        let res_s = (0..)
            .map(|i| format!("acct:S{i}").into_bytes())
            .find(|s| entry_of(&r, s) != e_f)
            .unwrap();
        let e_e = entry_of(&r, &res_s);
        let c = Member::connect(r.clone(), "C").unwrap();
        let x = Member::connect(r.clone(), "X").unwrap();
        let b = Member::connect(r.clone(), "B").unwrap();
        let mut hc = c.holder().unwrap();
        let mut hx = x.holder().unwrap();
        assert!(matches!(
            hc.try_lock(&res_r, Mode::Modify),
            Ok(TryOutcome::Granted(_))
        ));
        assert!(matches!(
            hc.try_lock(&res_s, Mode::Share),
            Ok(TryOutcome::Granted(_))
        ));
        assert!(matches!(
            hx.try_lock(&res_s, Mode::Share),
            Ok(TryOutcome::Granted(_))
        ));
        assert!(
            inspect::verify(&r).is_empty(),
            "setup: {:?}",
            inspect::verify(&r)
        );
        // X is stopped inside a decision on E: E latched by X (its share of S
        // covers the latch), C and X named.
        testing::write_lock_word(
            &r,
            e_e,
            MIXED | holder_field(x.id()) | bit(c.id()) | bit(x.id()),
        );
        // C dies.
        testing::fake_reused_pid(&r, c.id());
        let c_id = c.id();
        std::mem::forget(hc);
        std::mem::forget(c);
        let mut hb = b.holder().unwrap();
        let t0 = std::time::Instant::now();
        let out = hb.try_lock(&res_r, Mode::Modify);
        let took = t0.elapsed();
        // X resumes: its decision ends, E's latch is dropped as it was.
        testing::write_lock_word(&r, e_e, MIXED | bit(c_id) | bit(x.id()));
        std::mem::forget(hx);
        std::mem::forget(x);
        drop(hb);
        drop(b);
        match &out {
            Ok(TryOutcome::Retained(h)) if h.name == "C" => {}
            Ok(TryOutcome::Contention(hs)) if hs.iter().any(|h| h.name == "C") => {}
            other => panic!(
                "B's try for R (modify-locked by dead member C) answered {other:?} after \
                 {took:?}; C's cleanup was held up by E's latch, held by stopped member X"
            ),
        }
    });
}

/// A member restarted normally never gets back the record blocks that held
/// its retained locks.
///
/// Cleanup marks every block holding a retained record `BLOCK_RETAINED`
/// (`recovery::walk`). A normal restart (`ConnectMode::Restart`) reconnects
/// RECOVERING, releases the retained locks (`release_all_held`, which frees
/// the tags only) and becomes ACTIVE (`finish_recovery`); nothing gives those
/// blocks back (only `disconnect` and a later cleanup do), and
/// `claim_block` takes only blocks whose owner is 0. Here member X had four
/// threads (a block each, the whole area of `small_for_tests`), each holding
/// one modify lock, when it died: once restarted and recovered it has no
/// block left, and every `holder()` fails with "records full" although X
/// holds nothing at all.
///
/// Required: after its normal restart has released everything, X can take a
/// holder and lock.
#[test]
fn a_normal_restart_gets_back_the_blocks_of_its_retained_locks() {
    use cf_core::ConnectMode;
    let (_dir, r) = region();
    guarded("normal restart", move || {
        let x = Member::connect(r.clone(), "X").unwrap();
        let blocks = r.blocks_per_member();
        let mut holders: Vec<_> = (0..blocks).map(|_| x.holder().unwrap()).collect();
        for (i, h) in holders.iter_mut().enumerate() {
            let res = format!("acct:{i}");
            assert!(matches!(
                h.try_lock(res.as_bytes(), Mode::Modify),
                Ok(TryOutcome::Granted(_))
            ));
        }
        // X dies; a peer cleans it up: its modify locks are retained.
        testing::fake_reused_pid(&r, x.id());
        for h in holders {
            std::mem::forget(h);
        }
        let id = x.id();
        std::mem::forget(x);
        assert!(matches!(
            recovery::cleanup_member(&r, id).unwrap(),
            CleanupOutcome::Cleaned(_)
        ));
        assert_eq!(inspect::retained(&r).unwrap().len(), blocks as usize);
        // X restarts normally: reconnects RECOVERING, (backs out its log),
        // releases what it took back, becomes active.
        let x = Member::connect_with(r.clone(), "X", ConnectMode::Restart).unwrap();
        assert!(x.is_recovering().unwrap());
        assert_eq!(x.release_all_held(|| {}).unwrap(), blocks as usize);
        x.finish_recovery().unwrap();
        assert!(inspect::retained(&r).unwrap().is_empty());
        let mut h = match x.holder() {
            Ok(h) => h,
            Err(e) => panic!("X, restarted and holding nothing, cannot take a holder: {e}"),
        };
        let l = match h.try_lock(b"acct:0", Mode::Modify) {
            Ok(TryOutcome::Granted(l)) => l,
            other => panic!("{other:?}"),
        };
        h.unlock(l).unwrap();
        drop(h);
        x.disconnect().unwrap();
        assert!(inspect::verify(&r).is_empty(), "{:?}", inspect::verify(&r));
    });
}

/// Write the body of record `slot` of `member` for `res` in `mode` and its
/// tag (encoding of `records.rs`, as `holes.rs` forges it).
fn forge_record(
    r: &Region,
    member: ConnectorId,
    slot: SlotIndex,
    res: &[u8],
    mode: Mode,
    state: u32,
) {
    testing::write_record_word(r, member, slot, 0, forge::record_meta(res.len(), mode));
    for (i, chunk) in res.chunks(8).enumerate() {
        let mut b = [0u8; 8];
        b[..chunk.len()].copy_from_slice(chunk);
        testing::write_record_word(r, member, slot, 1 + i as u32, u64::from_le_bytes(b));
    }
    testing::write_tag(r, member, slot, forge::tag(state, entry_of(r, res)));
}

/// A release that fails puts its record back to HELD after another member
/// was granted the lock on the strength of that record being PENDING.
///
/// `entry::release` marks the record PENDING ("no longer a holding for
/// anyone") before it waits for the latch; a decision made meanwhile drops
/// the releaser (`decide`: named without a held record) and may grant the
/// resource to someone else. If the latch wait then fails (here
/// `LATCH_STUCK`: the latch holder, live member X, is stopped for over 30 s
/// between its grant and its unlatch), `release` stores HELD again and
/// `unlock` returns an error: the releaser's lock is "held" again, by a
/// member the word no longer names, while X holds the same resource
/// exclusively. X's steps (its latch, its decision, its unlatch) are written
/// into the region here; A's are the library's.
///
/// Required: no two live members hold R incompatibly, whatever `unlock`
/// answered.
#[test]
fn a_failed_release_never_takes_back_a_lock_granted_to_another() {
    let (_dir, r) = region();
    guarded("failed release", move || {
        let res = b"acct:R".to_vec();
        let e = entry_of(&r, &res);
        let a = Member::connect(r.clone(), "A").unwrap();
        let x = Member::connect(r.clone(), "X").unwrap();
        let mut ha = a.holder().unwrap();
        let hx = x.holder().unwrap(); // X's thread; its record is forged in slot 63
        let la = match ha.try_lock(&res, Mode::Exclusive).unwrap() {
            TryOutcome::Granted(l) => l,
            o => panic!("{o:?}"),
        };
        // X asks for R: its record PENDING, E latched by X (converted: A named).
        forge_record(
            &r,
            x.id(),
            SlotIndex::new(63),
            &res,
            Mode::Exclusive,
            TAG_PENDING,
        );
        testing::write_lock_word(&r, e, MIXED | holder_field(x.id()) | bit(a.id()));
        // A releases R: its record turns PENDING and it waits for E's latch.
        let releaser = std::thread::spawn(move || {
            let out = ha.unlock(la);
            (ha, out)
        });
        let a_id = a.id();
        let a_pending = || {
            inspect::locks(&r)
                .unwrap()
                .iter()
                .any(|l| l.member_id == a_id && l.slot == la.slot && !l.held)
        };
        while !a_pending() {
            std::thread::sleep(Duration::from_millis(1));
        }
        // X decides: A has no held record on E (it is being released), so R
        // is granted to X; X is stopped before its unlatch.
        forge_record(
            &r,
            x.id(),
            SlotIndex::new(63),
            &res,
            Mode::Exclusive,
            TAG_HELD,
        );
        let (ha, out) = releaser.join().unwrap();
        // X resumes and unlatches, naming itself only (A was dropped).
        testing::write_lock_word(&r, e, MIXED | bit(x.id()));
        let problems = inspect::verify(&r);
        let both: Vec<_> = inspect::locks(&r)
            .unwrap()
            .into_iter()
            .filter(|l| l.held && l.resource == "acct:R")
            .map(|l| (l.member, l.mode))
            .collect();
        // Tidy up (A's holder releases what its record says it holds).
        drop(ha);
        testing::write_tag(&r, x.id(), SlotIndex::new(63), 0);
        testing::write_lock_word(&r, e, 0);
        drop(hx);
        assert!(
            both.len() <= 1 && problems.is_empty(),
            "A's unlock answered {out:?}; then R is held by {both:?}; verify: {problems:?}"
        );
    });
}
