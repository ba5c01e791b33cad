//! The benchmarks of the lock paths: [`bench`] is `cfctl bench` (the product
//! beside its peers in one run), and the rest of this file is the shared
//! set-up of the criterion benchmarks in `lock_paths.rs`.
//!
//! Everything a benchmark maps lives in one fresh temporary directory under
//! `/dev/shm` ([`ShmDir`]), removed when it is dropped: the bare word of the
//! `cas_pair` floor ([`ShmWord`]) and the regions ([`Fixture`]), so the floor
//! and the lock paths are measured on the same kind of memory (a `MAP_SHARED`
//! mapping of a tmpfs file).

pub mod bench;

use cf_core::shm::mapping::{Access, SharedMap};
use cf_core::{
    CreateOptions, Holder, LockId, Member, Mode, Plex, Region, Resource, Sizes, TryOutcome,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// Where the benchmarks put their files.
pub const SHM: &str = "/dev/shm";

/// Timeout of every waiting request in the contended benchmarks: far longer
/// than any hand-off, so hitting it means something is broken.
pub const WAIT: Duration = Duration::from_secs(10);

/// A fresh temporary directory under `/dev/shm`, removed on drop.
pub struct ShmDir {
    dir: tempfile::TempDir,
}

impl ShmDir {
    pub fn new() -> std::io::Result<ShmDir> {
        let dir = tempfile::Builder::new()
            .prefix("cf-bench-")
            .tempdir_in(SHM)?;
        Ok(ShmDir { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A sub-directory name for one plex (created by `Region::create`).
    pub fn plex(&self, name: &str) -> Plex {
        Plex {
            dir: self.path().join(name),
        }
    }

    /// Remove the directory now, reporting any error (drop would ignore it).
    pub fn close(self) -> std::io::Result<()> {
        self.dir.close()
    }
}

/// One `AtomicU64` at the start of a `MAP_SHARED` mapping of a file in a
/// [`ShmDir`]: the memory a lock word lives in, without the lock protocol.
pub struct ShmWord {
    map: SharedMap,
}

impl ShmWord {
    pub fn new(dir: &ShmDir) -> std::io::Result<ShmWord> {
        let path: PathBuf = dir.path().join("word");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        file.set_len(4096)?;
        let map = SharedMap::map(&file, 4096, Access::ReadWrite)?;
        map.atomic::<AtomicU64>(0).map_err(std::io::Error::other)?;
        Ok(ShmWord { map })
    }

    /// The word (checked when mapped: a failure here is a bug).
    #[inline]
    pub fn word(&self) -> &AtomicU64 {
        match self.map.atomic(0) {
            Ok(w) => w,
            Err(e) => panic!("internal: the floor word: {e}"),
        }
    }
}

/// The physical floor: one compare-and-swap acquire and one release store.
#[inline]
pub fn cas_pair(word: &AtomicU64) {
    let ok = word
        .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
        .is_ok();
    assert!(ok, "the floor word is never contended");
    word.store(0, Ordering::Release);
}

/// The floor of a lock whose release must also be a read-modify-write (as
/// the lock word's is: another connector may convert the word meanwhile):
/// compare_exchange(0 -> 1, Acquire) + compare_exchange(1 -> 0, Release).
#[inline]
pub fn cas_cas_pair(word: &AtomicU64) {
    let ok = word
        .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
        .is_ok();
    let released = word
        .compare_exchange(1, 0, Ordering::Release, Ordering::Relaxed)
        .is_ok();
    assert!(ok && released, "the floor word is never contended");
}

/// The default production sizes (those `cfctl create` uses).
pub fn default_sizes() -> Sizes {
    Sizes {
        lock_entries: 1 << 20,
        members: 32,
        records_per_member: 16384,
    }
}

/// A region in its own plex directory inside a [`ShmDir`].
pub struct Fixture {
    pub region: Arc<Region>,
}

impl Fixture {
    pub fn new(dir: &ShmDir, name: &str, sizes: Sizes) -> Result<Fixture, cf_core::RegionError> {
        let opts = CreateOptions {
            sizes,
            group_access: false,
        };
        let region = Region::create(&dir.plex(name), &opts)?;
        Ok(Fixture {
            region: Arc::new(region),
        })
    }

    pub fn connect(&self, name: &str) -> Member {
        Member::connect(self.region.clone(), name).unwrap_or_else(|e| panic!("connect {name}: {e}"))
    }
}

/// Take `resource` in `mode` with one try, expecting a grant.
#[inline]
pub fn try_granted(h: &mut Holder, resource: &[u8], mode: Mode) -> LockId {
    match h.try_lock(resource, mode) {
        Ok(TryOutcome::Granted(id)) => id,
        other => panic!("expected a grant of {resource:?} in {mode}: {other:?}"),
    }
}

/// One uncontended try_lock + unlock: what the `cf_*` benchmarks measure.
#[inline]
pub fn try_lock_unlock(h: &mut Holder, resource: &[u8], mode: Mode) {
    let id = try_granted(h, resource, mode);
    h.unlock(std::hint::black_box(id)).expect("unlock");
}

/// One waiting lock + unlock (the contended benchmarks).
#[inline]
pub fn lock_unlock(h: &mut Holder, resource: &[u8], mode: Mode) {
    let id = match h.lock(resource, mode, WAIT) {
        Ok(id) => id,
        other => panic!("lock {resource:?} in {mode} within {WAIT:?}: {other:?}"),
    };
    h.unlock(std::hint::black_box(id)).expect("unlock");
}

/// Two different resource names that map to the same entry of a table of
/// `entries` (a power of two): false contention by construction.
pub fn colliding_pair(entries: u32) -> (Vec<u8>, Vec<u8>) {
    let name = |i: u32| format!("bench:collide:{i}").into_bytes();
    let entry = |n: &[u8]| Resource::new(n).expect("valid name").entry(entries);
    let first = name(0);
    let target = entry(&first);
    let second = (1..)
        .map(name)
        .find(|n| entry(n) == target)
        .expect("a collision exists in a finite table");
    (first, second)
}

/// What one contended measurement saw.
#[derive(Clone, Copy, Debug, Default)]
pub struct Contended {
    /// Time of the measured thread's `iters` lock + unlock pairs.
    pub elapsed: Duration,
    /// Lock + unlock pairs the partner completed meanwhile.
    pub partner_ops: u64,
}

/// Run `iters` waiting lock + unlock pairs of `resource` (exclusive) on
/// `measured` while a partner thread hammers the same resource through
/// `partner` until the measured thread is done. Only the measured thread's
/// loop is timed; the partner is running before the clock starts.
pub fn run_contended(
    measured: &mut Holder,
    partner: &mut Holder,
    resource: &[u8],
    iters: u64,
) -> Contended {
    let stop = AtomicBool::new(false);
    let started = Barrier::new(2);
    std::thread::scope(|s| {
        let p = s.spawn(|| {
            let mut n = 0u64;
            started.wait();
            while !stop.load(Ordering::Relaxed) {
                lock_unlock(partner, resource, Mode::Exclusive);
                n += 1;
            }
            n
        });
        started.wait();
        let t0 = Instant::now();
        for _ in 0..iters {
            lock_unlock(measured, std::hint::black_box(resource), Mode::Exclusive);
        }
        let elapsed = t0.elapsed();
        stop.store(true, Ordering::Relaxed);
        let partner_ops = p.join().expect("partner thread");
        Contended {
            elapsed,
            partner_ops,
        }
    })
}
