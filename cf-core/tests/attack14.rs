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

/// The block holding `holder`'s wait record (its first: the lowest it owns).
fn wait_block(r: &Region, m: cf_core::ConnectorId, holder: u64) -> u32 {
    (0..r.blocks_per_member())
        .find(|&b| testing::block_owner(r, m, b) == holder)
        .unwrap()
}

/// Tell the waiting holder `holder` of `m` it is a victim of `cycle`
/// (`(member, slot)` from it on), as a detector would: the cycle words,
/// then `VICTIM` into its exact state.
fn tell(r: &Region, m: cf_core::ConnectorId, holder: u64, cycle: &[(cf_core::ConnectorId, u32)]) {
    let b = wait_block(r, m, holder);
    testing::write_wait_word(r, m, b, 5, (cycle.len() as u64) << 32);
    for (k, pair) in cycle.chunks(2).enumerate() {
        let mut w = 0u64;
        for (half, &(c, slot)) in pair.iter().enumerate() {
            w |= ((u64::from(c.get()) + 1) << 24 | u64::from(slot)) << (32 * half);
        }
        testing::write_wait_word(r, m, b, 6 + k as u32, w);
    }
    let s = testing::read_wait_word(r, m, b, 0);
    assert_eq!(s & 3, 1, "waiting, not told");
    testing::write_wait_word(r, m, b, 0, s | 2);
}

/// A deadlock victim whose request is urgent (`entry.rs` rule 5) and whose
/// flag is taken back (`Waiter::untell`: a member of its cycle died after
/// the detector checked it, and is being cleaned up) goes on waiting: it
/// must still be urgent. The victim path gave its URGENT record up for good
/// *before* deciding whether to abort, so after the untell the request
/// waited on as a plain PENDING one, past its bypass limit for ever: any
/// later request could overtake it.
///
/// D and H hold r in share mode; V waits for it exclusively. E's tries of r
/// in share mode make V urgent, then show whether it still is. D dies (its
/// cleanup claimed by a live cleaner) just after V was told of a cycle
/// through D: forged here, as that interleaving leaves it.
#[test]
fn an_untold_urgent_victim_stays_urgent() {
    let (_d, r) = region_with(1 << 10);
    let mv = Member::connect(r.clone(), "V").unwrap();
    let mh = Member::connect(r.clone(), "H").unwrap();
    let md = Member::connect(r.clone(), "D").unwrap();
    let me = Member::connect(r.clone(), "E").unwrap();
    let (v_id, d_id) = (mv.id(), md.id());
    let mut hd = md.holder().unwrap();
    let d_r = hd.lock(b"r", Mode::Share, PATIENCE).unwrap();
    let mut hh = mh.holder().unwrap();
    let h_r = hh.lock(b"r", Mode::Share, PATIENCE).unwrap();
    let mut hv = mv.holder().unwrap();
    let tv = std::thread::spawn(move || {
        let out = hv.lock(b"r", Mode::Exclusive, PATIENCE);
        if let Ok(id) = &out {
            hv.unlock(*id).unwrap();
        }
        out.map(|_| ())
    });
    until_waiting(&r, 1);

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

    // V was told of the cycle V -> D -> V, and D died just after the
    // detector's checks; a live process (this one) is at its cleanup. (D
    // dies first here: V, looking in between, waits on for the cleanup.)
    testing::set_cleanup_claim(&r, d_id, ProcessId::current().unwrap().token());
    testing::fake_reused_pid(&r, d_id);
    let v_holder = deadlock::waits(&r)[0].holder;
    tell(&r, v_id, v_holder, &[(v_id, 0), (d_id, d_r.slot.get())]);
    // V looks (its slice ends), finds D dead, takes the flag back, waits on.
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

    // D's cleanup can go on now (V's next look does it); H lets go: V is
    // granted.
    testing::set_cleanup_claim(&r, d_id, 0);
    hh.unlock(h_r).unwrap();
    tv.join().unwrap().unwrap();
    assert!(deadlock::waits(&r).is_empty());
    assert_eq!(deadlock::victims_told(&r), 0);
    std::mem::forget(hd);
    std::mem::forget(md);
    drop((he, hh));
    assert!(
        inspect::locks(&r).unwrap().is_empty(),
        "{:?}",
        inspect::locks(&r)
    );
    for m in [mv, mh, me] {
        m.disconnect().unwrap();
    }
}

/// A victim also conflicts with a dead holder outside its cycle, whose
/// cleanup is under way elsewhere (and stalls): that death breaks nothing,
/// so the victim backs out. It took its flag back whenever *any* holder it
/// conflicted with was dead or being cleaned up, so the cycle stayed for as
/// long as that cleanup lasted (here: until the victim's timeout).
///
/// V holds r2 and waits for r (exclusive); H holds r (share) and waits for
/// r2: a cycle. D (dead, its cleanup claimed by a live process that does
/// not finish it) also holds r in share mode.
#[test]
fn a_dead_holder_outside_the_cycle_does_not_save_the_victim() {
    let (_d, r) = region_with(1 << 10);
    let mv = Member::connect(r.clone(), "V").unwrap();
    let mh = Member::connect(r.clone(), "H").unwrap();
    let md = Member::connect(r.clone(), "D").unwrap();
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
        // Not for ever: the answer says which way it went.
        let out = hv.lock(b"r", Mode::Exclusive, Duration::from_secs(5));
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

    testing::set_cleanup_claim(&r, d_id, ProcessId::current().unwrap().token());
    testing::fake_reused_pid(&r, d_id);
    let d = deadlock::detect_once(&r, None).unwrap();
    assert_eq!(d.victims.len(), 1, "{d:?}");
    assert_eq!(d.victims[0].waiting.member, v_id);
    let out = tv.join().unwrap();
    assert!(matches!(out, Err(WaitError::Deadlock { .. })), "{out:?}");
    th.join().unwrap().unwrap();
    assert!(deadlock::waits(&r).is_empty());
    // D's cleanup, finished at last.
    testing::set_cleanup_claim(&r, d_id, 0);
    cf_core::cleanup_member(&r, d_id).unwrap();
    std::mem::forget(hd);
    std::mem::forget(md);
    assert!(
        inspect::locks(&r).unwrap().is_empty(),
        "{:?}",
        inspect::locks(&r)
    );
    for m in [mv, mh] {
        m.disconnect().unwrap();
    }
}

/// A small xorshift generator: the same hostile values every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Untrusted region content: wait records, tags and bodies of any value
/// (a record naming its block's owner, so that it is read, with a request
/// slot whose tag says it waits) never make the detector or `waits` panic,
/// index out of bounds or loop for ever; each round ends.
#[test]
fn hostile_wait_records_never_break_the_detector() {
    use cf_core::testing::forge;
    use cf_core::{EntryIndex, SlotIndex};
    let (_d, r) = region_with(16);
    let m = Member::connect(r.clone(), "M").unwrap();
    let n = Member::connect(r.clone(), "N").unwrap();
    let holders: Vec<_> = (0..3)
        .map(|i| if i == 0 { n.holder() } else { m.holder() }.unwrap())
        .collect();
    let ids = [m.id(), n.id()];
    let slots = r.records_per_member() as u64;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut read, mut told) = (0, 0);
    for round in 0..3000 {
        let who = ids[rng.below(2) as usize];
        let block = rng.below(4) as u32;
        let owner = testing::block_owner(&r, who, block);
        let entry = if rng.below(8) == 0 {
            rng.next() >> 32
        } else {
            rng.below(16)
        };
        let slot = if rng.below(8) == 0 {
            rng.next() & 0xffff_ffff
        } else {
            rng.below(slots)
        };
        let flags = [1, 3, 2, 0, rng.next()][rng.below(5) as usize];
        let words = [
            (rng.next() << 32) | (flags & 0xffff_ffff),
            if rng.below(4) == 0 { rng.next() } else { owner },
            entry << 32 | slot,
            rng.next(),
            if rng.below(2) == 0 { rng.next() } else { 0 },
            rng.next(),
        ];
        for (i, w) in words.iter().enumerate() {
            testing::write_wait_word(&r, who, block, i as u32, *w);
        }
        for i in 6..12 {
            testing::write_wait_word(&r, who, block, i, rng.next());
        }
        // The request's tag and body, and some other records on the entry.
        for _ in 0..3 {
            let s = if rng.below(2) == 0 {
                slot
            } else {
                rng.below(slots)
            };
            let c = ids[rng.below(2) as usize];
            let state =
                [forge::TAG_PENDING, forge::TAG_URGENT, forge::TAG_HELD][rng.below(3) as usize];
            let e = EntryIndex::new(if rng.below(16) == 0 {
                rng.next() as u32 & 0x3fff_ffff
            } else {
                entry as u32 & 0xf
            });
            testing::write_tag(&r, c, SlotIndex::new(s as u32), forge::tag(state, e));
            let modes = [Mode::Share, Mode::Exclusive, Mode::Modify];
            let meta = if rng.below(4) == 0 {
                rng.next()
            } else {
                forge::record_meta(1 + rng.below(2) as usize, modes[rng.below(3) as usize])
                    | rng.below(4) << 32
            };
            testing::write_record_word(&r, c, SlotIndex::new(s as u32), 0, meta);
            testing::write_record_word(&r, c, SlotIndex::new(s as u32), 1, rng.below(3));
        }
        let _ = deadlock::waits(&r);
        let d = deadlock::detect_once(&r, None).unwrap();
        assert!(d.victims.len() <= d.waiting, "round {round}: {d:?}");
        read += d.waiting;
        told += d.victims.len();
    }
    // The forgeries were read as waits (a few may even have made cycles).
    assert!(read > 100, "{read} waits read, {told} told");
    // Not released: the records are forged.
    std::mem::forget(holders);
    std::mem::forget(m);
    std::mem::forget(n);
}

/// A hostile writer that sets `VICTIM` itself, with any cycle words: the
/// waiter answers `Deadlock`, naming at most `CYCLE_KEPT` members, no panic.
#[test]
fn a_forged_victim_flag_with_a_garbage_cycle_is_answered() {
    let (_d, r) = region_with(16);
    let m = Member::connect(r.clone(), "M").unwrap();
    let n = Member::connect(r.clone(), "N").unwrap();
    let mut hn = n.holder().unwrap();
    let held = hn.lock(b"r", Mode::Exclusive, PATIENCE).unwrap();
    let mut h = m.holder().unwrap();
    let t = std::thread::spawn(move || {
        let out = h.lock(b"r", Mode::Exclusive, PATIENCE).map(|_| ());
        (h, out)
    });
    until_waiting(&r, 1);
    let w = deadlock::waits(&r)[0].clone();
    let block = wait_block(&r, m.id(), w.holder);
    testing::write_wait_word(&r, m.id(), block, 5, u64::MAX);
    for i in 6..12 {
        testing::write_wait_word(&r, m.id(), block, i, 0x01ff_ffff_7fff_ffff ^ i as u64);
    }
    let s = testing::read_wait_word(&r, m.id(), block, 0);
    assert_eq!(s & 3, 1, "waiting, not told");
    testing::write_wait_word(&r, m.id(), block, 0, s | 2);
    let (h, out) = t.join().unwrap();
    match out {
        Err(WaitError::Deadlock { cycle }) => {
            assert!(cycle.len() <= deadlock::CYCLE_KEPT, "{cycle:?}")
        }
        other => panic!("{other:?}"),
    }
    hn.unlock(held).unwrap();
    drop((h, hn));
    assert!(deadlock::waits(&r).is_empty());
    assert!(inspect::locks(&r).unwrap().is_empty());
    m.disconnect().unwrap();
    n.disconnect().unwrap();
}

/// Two resource names of the same entry of a table of `entries`.
fn colliding_pair(entries: u32) -> (Vec<u8>, Vec<u8>) {
    let first = b"res-0".to_vec();
    let e = cf_core::Resource::new(&first).unwrap().entry(entries);
    let other = (1..)
        .map(|i| format!("res-{i}").into_bytes())
        .find(|n| cf_core::Resource::new(n).unwrap().entry(entries) == e)
        .unwrap();
    (first, other)
}

/// A 16-entry table: B holds q, whose entry is also q2's; A waits for q2
/// (held by C, which waits for nothing) and B for A's p. B's record of q on
/// A's entry is false contention, not a wait: no edge A -> B, no cycle, no
/// victim; each is granted in turn.
#[test]
fn false_contention_on_a_tiny_table_is_no_edge() {
    let (_d, r) = region_with(16);
    let (q, q2) = colliding_pair(16);
    let (q, q2): (&'static [u8], &'static [u8]) = (q.leak(), q2.leak());
    let ma = Member::connect(r.clone(), "A").unwrap();
    let mb = Member::connect(r.clone(), "B").unwrap();
    let mc = Member::connect(r.clone(), "C").unwrap();
    let mut hc = mc.holder().unwrap();
    let c_q2 = hc.lock(q2, Mode::Exclusive, PATIENCE).unwrap();
    let go = Arc::new(Barrier::new(2));
    let (mut ha, mut hb) = (ma.holder().unwrap(), mb.holder().unwrap());
    let g = go.clone();
    let ta = std::thread::spawn(move || {
        let p = ha.lock(b"p", Mode::Exclusive, PATIENCE).unwrap();
        g.wait();
        let out = ha.lock(q2, Mode::Exclusive, PATIENCE);
        if let Ok(id) = &out {
            ha.unlock(*id).unwrap();
        }
        ha.unlock(p).unwrap();
        out.map(|_| ())
    });
    let tb = std::thread::spawn(move || {
        let l = hb.lock(q, Mode::Exclusive, PATIENCE).unwrap();
        go.wait();
        let out = hb.lock(b"p", Mode::Exclusive, PATIENCE);
        if let Ok(id) = &out {
            hb.unlock(*id).unwrap();
        }
        hb.unlock(l).unwrap();
        out.map(|_| ())
    });
    until_waiting(&r, 2);
    for _ in 0..3 {
        let d = deadlock::detect_once(&r, None).unwrap();
        assert!(d.victims.is_empty() && d.abandoned == 0, "{d:?}");
    }
    hc.unlock(c_q2).unwrap();
    ta.join().unwrap().unwrap();
    tb.join().unwrap().unwrap();
    assert_eq!(deadlock::victims_told(&r), 0);
    drop(hc);
    assert!(inspect::locks(&r).unwrap().is_empty());
    for m in [ma, mb, mc] {
        m.disconnect().unwrap();
    }
}

/// Two share holders of r both ask for it exclusively: each waits for the
/// other's share lock (never for its own, `entry.rs` rule 7): one cycle, one
/// victim; it backs out, the other is granted, nothing is left.
#[test]
fn two_share_holders_asking_for_exclusive_one_backs_out() {
    let (_d, r) = region_with(1 << 10);
    let ms: Vec<Member> = ["A", "B"]
        .iter()
        .map(|n| Member::connect(r.clone(), n).unwrap())
        .collect();
    let go = Arc::new(Barrier::new(2));
    let ts: Vec<_> = ms
        .iter()
        .map(|m| {
            let mut h = m.holder().unwrap();
            let go = go.clone();
            std::thread::spawn(move || {
                let s = h.lock(b"r", Mode::Share, PATIENCE).unwrap();
                go.wait();
                let out = h.lock(b"r", Mode::Exclusive, PATIENCE);
                if let Ok(id) = &out {
                    h.unlock(*id).unwrap();
                }
                h.unlock(s).unwrap();
                out.map(|_| ())
            })
        })
        .collect();
    until_waiting(&r, 2);
    let d = deadlock::detect_once(&r, None).unwrap();
    assert_eq!(d.victims.len(), 1, "{d:?}");
    let outs: Vec<_> = ts.into_iter().map(|t| t.join().unwrap()).collect();
    let victims = outs
        .iter()
        .filter(|o| matches!(o, Err(WaitError::Deadlock { .. })))
        .count();
    assert_eq!(victims, 1, "{outs:?}");
    assert_eq!(outs.iter().filter(|o| o.is_ok()).count(), 1, "{outs:?}");
    assert!(deadlock::waits(&r).is_empty());
    assert!(inspect::locks(&r).unwrap().is_empty());
    for m in ms {
        m.disconnect().unwrap();
    }
}

/// A request that waits for ever (`Duration::MAX`, "no timeout") under
/// contention: it waits (a node of the detector's graph like any other) and
/// is granted when the holder lets go. The deadline `now + timeout`
/// overflowed: a panic that left the request's record pending.
#[test]
fn a_wait_without_end_waits_and_is_granted() {
    let (_d, r) = region_with(1 << 10);
    let m = Member::connect(r.clone(), "M").unwrap();
    let n = Member::connect(r.clone(), "N").unwrap();
    let mut hn = n.holder().unwrap();
    let held = hn.lock(b"r", Mode::Exclusive, PATIENCE).unwrap();
    let mut h = m.holder().unwrap();
    let t = std::thread::spawn(move || {
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            h.lock(b"r", Mode::Exclusive, Duration::MAX)
                .map(|id| h.unlock(id).unwrap())
        }));
        (h, out.map_err(|_| "lock panicked"))
    });
    until("the request waits (or its thread ended)", || {
        !deadlock::waits(&r).is_empty() || t.is_finished()
    });
    let d = deadlock::detect_once(&r, None).unwrap();
    assert!(d.victims.is_empty(), "{d:?}");
    hn.unlock(held).unwrap();
    let (h, out) = t.join().unwrap();
    assert!(matches!(out, Ok(Ok(()))), "{out:?}");
    drop((h, hn));
    assert!(inspect::locks(&r).unwrap().is_empty());
    m.disconnect().unwrap();
    n.disconnect().unwrap();
}
