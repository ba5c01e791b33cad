//! A minimal member of your own: connect to a plex, take an exclusive lock
//! from several threads, change shared data under it, disconnect.
//!
//! ```text
//! cfctl create --plex /dev/shm/my-plex
//! cargo run --release -p cf-core --example custom_member -- /dev/shm/my-plex M1 10000 &
//! cargo run --release -p cf-core --example custom_member -- /dev/shm/my-plex M2 10000
//! ```
//!
//! Each process adds 1 to a counter file in the plex directory `iterations`
//! times from each of its two threads, each time under the exclusive lock
//! `example:counter`: with two processes running at once the counter ends at
//! exactly 4 x iterations more than it began. If a member is killed while it
//! holds the lock (an exclusive, not a modify lock), the lock is released
//! by the cleanup of the member that notices, and the others go on.

use cf_core::{Member, Mode, Plex, Region};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

const THREADS: usize = 2;

fn main() {
    if let Err(e) = run() {
        eprintln!("custom_member: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(name)) = (args.next(), args.next()) else {
        return Err("usage: custom_member PLEX_DIR MEMBER_NAME [ITERATIONS]".into());
    };
    let iterations: u64 = args.next().map_or(Ok(1000), |a| a.parse())?;
    let plex = Plex { dir: dir.into() };
    let region = Arc::new(Region::open(&plex)?);
    let counter = Arc::new(
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(plex.dir.join("example-counter"))?,
    );
    let member = Member::connect(region, &name)?;
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            // One holder per thread: each takes its own record slots.
            let mut holder = member.holder()?;
            let counter = counter.clone();
            Ok(std::thread::spawn(move || -> Result<(), String> {
                for _ in 0..iterations {
                    let lock = holder
                        .lock(b"example:counter", Mode::Exclusive, Duration::from_secs(30))
                        .map_err(|e| e.to_string())?;
                    let mut buf = [0u8; 8];
                    // A file shorter than 8 bytes reads as a counter of 0.
                    let n = counter.read_at(&mut buf, 0).map_err(|e| e.to_string())?;
                    let value = if n == 8 { u64::from_le_bytes(buf) } else { 0 };
                    counter
                        .write_at(&(value + 1).to_le_bytes(), 0)
                        .map_err(|e| e.to_string())?;
                    holder.unlock(lock).map_err(|e| e.to_string())?;
                }
                Ok(())
            }))
        })
        .collect::<Result<_, cf_core::HolderError>>()?;
    for w in workers {
        w.join().map_err(|_| "a worker panicked")??;
    }
    let mut buf = [0u8; 8];
    counter.read_exact_at(&mut buf, 0)?;
    println!("{name}: done; counter = {}", u64::from_le_bytes(buf));
    member.disconnect()?;
    Ok(())
}
