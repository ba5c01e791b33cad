//! The uncontended hot path in a loop, for profiling:
//! `cargo build --release --example hot_path -p cf-core &&
//!  valgrind --tool=callgrind target/release/examples/hot_path`
//! (instruction counts do not depend on the machine's load). Prints ns/op.
use cf_core::{CreateOptions, Member, Mode, Plex, Region, Sizes, TryOutcome};
use std::sync::Arc;
fn main() {
    let dir = std::path::PathBuf::from("/dev/shm/cf-hot-path");
    let _ = std::fs::remove_dir_all(&dir);
    let r = Arc::new(
        Region::create(
            &Plex { dir: dir.clone() },
            &CreateOptions {
                sizes: Sizes::default(),
                group_access: false,
            },
        )
        .unwrap(),
    );
    let m = Member::connect(r.clone(), "H").unwrap();
    let mut h = m.holder().unwrap();
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let t = std::time::Instant::now();
    for _ in 0..n {
        if let TryOutcome::Granted(id) = h
            .try_lock(std::hint::black_box(b"account:00042"), Mode::Exclusive)
            .unwrap()
        {
            h.unlock(id).unwrap();
        }
    }
    println!("{:.1} ns/op", t.elapsed().as_nanos() as f64 / n as f64);
    drop(h);
    m.disconnect().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
