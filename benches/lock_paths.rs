//! The uncontended lock paths beside the physical floor, and two contended
//! hand-offs. Run with `cargo bench -p cf-benches`; the figures are recorded
//! in `docs/BENCHMARKS.md`.
//!
//! Group `uncontended` (one thread, nothing else on the region):
//! * `cas_pair`: compare_exchange(0 -> 1, Acquire) + store(0, Release) on an
//!   `AtomicU64` in a `MAP_SHARED` mapping of a file in `/dev/shm`: the floor;
//! * `cas_cas_pair`: the same with a compare_exchange release (1 -> 0), the
//!   floor of a lock word whose release must be a read-modify-write;
//! * `cf_share`, `cf_exclusive`, `cf_exclusive_modify`: `Holder::try_lock` +
//!   `Holder::unlock` of one resource, in a region of the default size;
//! * `cf_exclusive_lock`: the same through the waiting `Holder::lock` (10 s
//!   timeout), the call the contended benchmarks make;
//! * `false_contention`: the same in a 16-entry table where another member holds
//!   a different resource on the same entry, so every request and release goes
//!   through the latched resource-level path.
//!
//! Group `recovery_scan`: cleanup of a dead member holding N modify locks.
//!
//! Group `contended_threads`: time per lock + unlock of a thread that takes one
//! resource exclusively (waiting up to 10 s) while a partner thread hammers the
//! same resource: `same_member_2_threads` (two holders of one member) and
//! `two_members` (two connections in one process).

use cf_benches::{
    cas_cas_pair, cas_pair, colliding_pair, default_sizes, lock_unlock, run_contended, try_granted,
    try_lock_unlock, Fixture, ShmDir, ShmWord,
};
use cf_core::{inspect, Mode, Sizes};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::time::Duration;

/// The resource of the uncontended benchmarks (a typical short name).
const RESOURCE: &[u8] = b"account:000042";

fn uncontended(c: &mut Criterion) {
    let dir = ShmDir::new().expect("temporary directory in /dev/shm");
    let floor = ShmWord::new(&dir).expect("floor word");
    let fx = Fixture::new(&dir, "uncontended", default_sizes()).expect("region");
    let bench = fx.connect("BENCH");
    let mut h = bench.holder().expect("holder");

    // The tiny table for false contention: OTHER holds `held` on the entry
    // `colliding` maps to, for the whole benchmark.
    let small = Sizes {
        lock_entries: 16,
        members: 4,
        records_per_member: 256,
    };
    let fx_false = Fixture::new(&dir, "false", small).expect("small region");
    let (held, colliding) = colliding_pair(small.lock_entries);
    let other = fx_false.connect("OTHER");
    let mut oh = other.holder().expect("holder");
    let held_id = try_granted(&mut oh, &held, Mode::Exclusive);
    let fbench = fx_false.connect("BENCH");
    let mut fh = fbench.holder().expect("holder");
    let before = inspect::counters(&fx_false.region);

    let mut g = c.benchmark_group("uncontended");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(100);

    g.bench_function("cas_pair", |b| {
        let w = floor.word();
        b.iter(|| cas_pair(black_box(w)))
    });
    g.bench_function("cas_cas_pair", |b| {
        let w = floor.word();
        b.iter(|| cas_cas_pair(black_box(w)))
    });
    for (name, mode) in [
        ("cf_share", Mode::Share),
        ("cf_exclusive", Mode::Exclusive),
        ("cf_exclusive_modify", Mode::Modify),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| try_lock_unlock(&mut h, black_box(RESOURCE), black_box(mode)))
        });
    }
    g.bench_function("cf_exclusive_lock", |b| {
        b.iter(|| lock_unlock(&mut h, black_box(RESOURCE), black_box(Mode::Exclusive)))
    });
    g.bench_function("false_contention", |b| {
        b.iter(|| try_lock_unlock(&mut fh, black_box(&colliding), black_box(Mode::Exclusive)))
    });
    g.finish();

    // The false-contention benchmark must really have taken the latched path:
    // every one of its grants is counted as false contention.
    drop(fh);
    let after = inspect::counters(&fx_false.region);
    let requests = after.requests - before.requests;
    let false_grants = after.false_contention - before.false_contention;
    if requests > 0 {
        // (zero when a filter on the command line skipped the benchmark)
        eprintln!(
            "false_contention: {requests} requests, {false_grants} granted as false contention"
        );
        assert_eq!(
            false_grants, requests,
            "false_contention bench did not always go through the latched path"
        );
    }

    oh.unlock(held_id).expect("unlock");
    drop(oh);
    other.disconnect().expect("disconnect OTHER");
    fbench.disconnect().expect("disconnect BENCH (false)");
    drop(h);
    bench.disconnect().expect("disconnect BENCH");
    drop((fx, fx_false, floor));
    dir.close().expect("remove the temporary directory");
}

fn contended_threads(c: &mut Criterion) {
    let dir = ShmDir::new().expect("temporary directory in /dev/shm");
    let fx = Fixture::new(&dir, "contended", default_sizes()).expect("region");
    let a = fx.connect("A");
    let b = fx.connect("B");
    let resource: &[u8] = b"hot:resource";

    let mut g = c.benchmark_group("contended_threads");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .sample_size(30);

    let cases = [
        ("same_member_2_threads", (&a, &a)),
        ("two_members", (&a, &b)),
    ];
    for (name, (mm, pm)) in cases {
        let mut measured = mm.holder().expect("holder");
        let mut partner = pm.holder().expect("holder");
        let (mut ops, mut partner_ops) = (0u64, 0u64);
        let before = inspect::counters(&fx.region);
        g.bench_function(name, |bch| {
            bch.iter_custom(|iters| {
                let r = run_contended(&mut measured, &mut partner, resource, iters);
                ops += iters;
                partner_ops += r.partner_ops;
                r.elapsed
            })
        });
        drop((measured, partner)); // publishes the holders' counters
        let after = inspect::counters(&fx.region);
        eprintln!(
            "{name}: measured thread {ops} lock+unlock, partner {partner_ops} meanwhile; \
             {} requests, {} met contention",
            after.requests - before.requests,
            after.irlm_contention - before.irlm_contention
        );
    }
    g.finish();

    a.disconnect().expect("disconnect A");
    b.disconnect().expect("disconnect B");
    drop(fx);
    dir.close().expect("remove the temporary directory");
}

/// Group `recovery_scan`: the cleanup of a dead member holding N modify locks
/// (in one process: the death is simulated by faking a reused PID), i.e. the
/// walk that marks its locks retained, for N = 100, 1,000 and 10,000. Each
/// iteration's setup recovers the failed member (a recovery connect, as restart light),
/// disconnects it, connects again and takes N locks on distinct entries.
fn recovery_scan(c: &mut Criterion) {
    let dir = ShmDir::new().expect("temporary directory in /dev/shm");
    let sizes = Sizes {
        lock_entries: 1 << 20,
        members: 4,
        records_per_member: 16384,
    };
    let fx = Fixture::new(&dir, "recovery", sizes).expect("region");
    let mut g = c.benchmark_group("recovery_scan");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(20);
    for n in [100usize, 1_000, 10_000] {
        // Names on distinct entries (see `cfctl hold --modify-many`).
        let mut used = std::collections::HashSet::new();
        let names: Vec<Vec<u8>> = (0..)
            .map(|i| format!("rec:{i}").into_bytes())
            .filter(|r| {
                used.insert(
                    cf_core::Resource::new(r)
                        .expect("name")
                        .entry(sizes.lock_entries),
                )
            })
            .take(n)
            .collect();
        g.bench_function(format!("cleanup_{n}_modify_locks"), |bch| {
            bch.iter_batched(
                || {
                    // Leave no failed member behind from the previous iteration:
                    // recover it as restart light does (a lock-only connect
                    // under its name is refused).
                    if let Ok(m) = cf_core::Member::connect_with(
                        fx.region.clone(),
                        "DEAD",
                        cf_core::ConnectMode::Recovery,
                    ) {
                        m.disconnect().expect("disconnect the recovered member");
                    }
                    let m = fx.connect("DEAD");
                    let mut h = m.holder().expect("holder");
                    for r in &names {
                        try_granted(&mut h, r, Mode::Modify);
                    }
                    let id = m.id();
                    cf_core::testing::fake_reused_pid(&fx.region, id);
                    // The "dead process" keeps its handles: never released.
                    std::mem::forget(h);
                    std::mem::forget(m);
                    id
                },
                |id| {
                    let out = cf_core::cleanup_member(&fx.region, id).expect("cleanup");
                    assert!(
                        matches!(out, cf_core::CleanupOutcome::Cleaned(ref r) if r.retained == n)
                    );
                },
                criterion::BatchSize::PerIteration,
            )
        });
    }
    g.finish();
    drop(fx);
    dir.close().expect("remove the temporary directory");
}

criterion_group!(benches, uncontended, contended_threads, recovery_scan);
criterion_main!(benches);
