//! How long the cleanup of a dead member holding N modify locks takes, in one
//! process (the member's death faked by a changed start time), and the
//! release of the retained locks by a recovery connection. For profiling:
//! `perf record -g target/release/examples/cleanup_cost 200000`.

use cf_core::{CreateOptions, Member, Mode, Plex, Region, Sizes};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::Builder::new()
        .prefix("cf-cleanup-")
        .tempdir_in("/dev/shm")
        .unwrap();
    let plex = Plex {
        dir: dir.path().into(),
    };
    let records = (n.div_ceil(64) * 64).max(64) as u32;
    let entries = (n * 64).next_power_of_two().clamp(1 << 16, 1 << 26) as u32;
    let region = Arc::new(
        Region::create(
            &plex,
            &CreateOptions {
                sizes: Sizes {
                    lock_entries: entries,
                    members: 4,
                    records_per_member: records,
                },
                group_access: false,
            },
        )
        .unwrap(),
    );
    let m = Member::connect(region.clone(), "V").unwrap();
    let id = m.id();
    let mut h = m.holder().unwrap();
    let t = Instant::now();
    for i in 0..n {
        h.lock(
            format!("r{i}").as_bytes(),
            Mode::Modify,
            Duration::from_secs(10),
        )
        .unwrap();
    }
    eprintln!(
        "took {n} locks in {:.0} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    std::mem::forget(h);
    std::mem::forget(m);
    cf_core::testing::fake_reused_pid(&region, id);
    let t = Instant::now();
    let out = cf_core::cleanup_member(&region, id).unwrap();
    let cleanup = t.elapsed();
    let t = Instant::now();
    let r = Member::connect_with(region.clone(), "V", cf_core::ConnectMode::Recovery).unwrap();
    let released = r.release_all_held(|| {}).unwrap();
    let release = t.elapsed();
    r.disconnect().unwrap();
    println!(
        "{n} locks: cleanup {:.1} ms ({:.0} ns/lock), release {released} in {:.1} ms ({:.0} ns/lock); {:?}",
        cleanup.as_secs_f64() * 1e3,
        cleanup.as_nanos() as f64 / n as f64,
        release.as_secs_f64() * 1e3,
        release.as_nanos() as f64 / n as f64,
        matches!(out, cf_core::CleanupOutcome::Cleaned(_))
    );
}
