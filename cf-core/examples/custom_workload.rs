//! A workload of your own, in one process: `MEMBERS` members, one thread
//! each, move money between `ACCOUNTS` accounts. A transfer takes two modify
//! locks in a fixed order (no deadlock), changes both balances under them and
//! releases them. At the end the total is unchanged, and the structure's
//! counters say how many requests met contention (the same account, held by
//! another) and how many were granted after false contention (two accounts
//! hashed to one of the 64 lock entries, told apart by the record entries).
//!
//! ```text
//! cargo run --release -p cf-core --example custom_workload [-- TRANSFERS_PER_MEMBER]
//! ```
//!
//! Copy it and change the resource names, the modes, the lock table size
//! (`Sizes::lock_entries`) or the access pattern to study another design.

use cf_core::{inspect, CreateOptions, Member, Mode, Plex, Region, Sizes};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MEMBERS: usize = 4;
const ACCOUNTS: u64 = 256;

/// A small seeded generator (xorshift64*): the same seed, the same run.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("custom_workload: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let transfers: u64 = std::env::args().nth(1).map_or(Ok(20_000), |a| a.parse())?;
    let dir = tempfile_dir()?;
    let plex = Plex { dir: dir.clone() };
    let options = CreateOptions {
        sizes: Sizes {
            lock_entries: 64,
            members: MEMBERS as u32,
            records_per_member: 256,
        },
        group_access: false,
    };
    let region = Arc::new(Region::create(&plex, &options)?);
    let balances: Arc<Vec<AtomicI64>> = Arc::new((0..ACCOUNTS).map(|_| 1000.into()).collect());
    let started = Instant::now();
    let threads: Vec<_> = (0..MEMBERS)
        .map(|i| {
            let member = Member::connect(region.clone(), &format!("W{i}"))?;
            let balances = balances.clone();
            Ok(std::thread::spawn(move || -> Result<(), String> {
                let mut h = member.holder().map_err(|e| e.to_string())?;
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ i as u64);
                for _ in 0..transfers {
                    let (x, y) = (rng.below(ACCOUNTS), rng.below(ACCOUNTS));
                    if x == y {
                        continue;
                    }
                    // Always lock the lower account first.
                    let (lo, hi) = (x.min(y), x.max(y));
                    let mut take = |acct: u64| {
                        h.lock(
                            format!("acct:{acct}").as_bytes(),
                            Mode::Modify,
                            Duration::from_secs(30),
                        )
                        .map_err(|e| e.to_string())
                    };
                    let l1 = take(lo)?;
                    let l2 = take(hi)?;
                    let amount = rng.below(50) as i64;
                    // Read, then write: without the locks, updates would be lost.
                    let (bx, by) = (&balances[x as usize], &balances[y as usize]);
                    bx.store(bx.load(Ordering::Relaxed) - amount, Ordering::Relaxed);
                    by.store(by.load(Ordering::Relaxed) + amount, Ordering::Relaxed);
                    h.unlock(l2).map_err(|e| e.to_string())?;
                    h.unlock(l1).map_err(|e| e.to_string())?;
                }
                drop(h);
                member.disconnect().map_err(|e| e.to_string())?;
                Ok(())
            }))
        })
        .collect::<Result<_, cf_core::ConnectError>>()?;
    for t in threads {
        t.join().map_err(|_| "a member thread panicked")??;
    }
    let elapsed = started.elapsed();
    let total: i64 = balances.iter().map(|b| b.load(Ordering::Relaxed)).sum();
    let c = inspect::counters(&region);
    println!(
        "{} transfers in {:.2} s; total {total} (expected {}); {} requests, {} met contention, {} false contention",
        transfers * MEMBERS as u64,
        elapsed.as_secs_f64(),
        1000 * ACCOUNTS,
        c.requests,
        c.irlm_contention,
        c.false_contention
    );
    drop(region);
    std::fs::remove_dir_all(&dir)?;
    if total != 1000 * ACCOUNTS as i64 {
        return Err("the total changed: mutual exclusion was lost".into());
    }
    Ok(())
}

/// A fresh directory for the plex (removed at the end).
fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("cf-custom-workload-{}", std::process::id()));
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    Ok(dir)
}
