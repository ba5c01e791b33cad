//! The buffer pool of a normal member: a private page cache of the accounts
//! file, sized by `--buffer-pool-mb`, allocated and touched at start so the
//! member carries its real memory cost (restart light has none: that is the
//! "minimal resources" of the method, and its peak RSS is measured beside a
//! normal member's).
//!
//! Pages are copied in on a miss and refreshed whenever the member is granted
//! a lock on a record in them (the lock is what makes the copy current: this
//! emulator has no cross-invalidation of cached pages between members yet),
//! and written through to the shared file on every update.

use std::collections::HashMap;

pub const PAGE: usize = 4096;

pub struct BufferPool {
    frames: Vec<u8>,
    nframes: usize,
    map: HashMap<u64, usize>,
    owner: Vec<Option<u64>>,
    clock: usize,
    pub hits: u64,
    pub misses: u64,
}

/// Why a buffer pool could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("buffer pool of {mib} MiB: {why}")]
    TooLarge { mib: u64, why: String },
    #[error("buffer pool of {mib} MiB: cannot allocate it")]
    NoMemory { mib: u64 },
}

/// Physical memory of this machine in bytes, if known.
fn physical_memory() -> Option<u64> {
    let pages = nix::unistd::sysconf(nix::unistd::SysconfVar::_PHYS_PAGES).ok()??;
    let size = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok()??;
    (pages as u64).checked_mul(size as u64)
}

impl BufferPool {
    /// A pool of `mib` MiB, checked before anything is allocated: the size
    /// must not overflow, nor be more than half of this machine's memory
    /// (a pool that large would only be killed by the OOM killer when
    /// touched), and the allocation itself must succeed.
    pub fn with_mib(mib: u64) -> Result<BufferPool, PoolError> {
        let too_large = |why: String| PoolError::TooLarge { mib, why };
        let bytes = mib
            .checked_mul(1 << 20)
            .ok_or_else(|| too_large("the size overflows".into()))?;
        if let Some(phys) = physical_memory() {
            if bytes > phys / 2 {
                return Err(too_large(format!(
                    "more than half of this machine's {} MiB of memory",
                    phys >> 20
                )));
            }
        }
        let bytes = usize::try_from(bytes).map_err(|_| too_large("the size overflows".into()))?;
        let nframes = (bytes / PAGE).max(1);
        let mut frames: Vec<u8> = Vec::new();
        frames
            .try_reserve_exact(nframes * PAGE)
            .map_err(|_| PoolError::NoMemory { mib })?;
        frames.resize(nframes * PAGE, 0);
        Ok(Self::from_frames(frames, nframes))
    }

    /// A pool of `bytes` (at least one page), every page touched.
    pub fn new(bytes: usize) -> BufferPool {
        let nframes = (bytes / PAGE).max(1);
        Self::from_frames(vec![0u8; nframes * PAGE], nframes)
    }

    fn from_frames(mut frames: Vec<u8>, nframes: usize) -> BufferPool {
        for f in frames.chunks_mut(PAGE) {
            f[0] = 1; // touch: make the pool resident, as a real one is
        }
        BufferPool {
            frames,
            nframes,
            map: HashMap::new(),
            owner: vec![None; nframes],
            clock: 0,
            hits: 0,
            misses: 0,
        }
    }

    pub fn bytes(&self) -> usize {
        self.frames.len()
    }

    /// The frame of `page`, filled by `fill` on a miss or when `refresh`.
    pub fn frame(&mut self, page: u64, refresh: bool, fill: impl FnOnce(&mut [u8])) -> &mut [u8] {
        let idx = match self.map.get(&page) {
            Some(&i) => {
                self.hits += 1;
                if refresh {
                    fill(&mut self.frames[i * PAGE..(i + 1) * PAGE]);
                }
                i
            }
            None => {
                self.misses += 1;
                let i = self.clock;
                self.clock = (self.clock + 1) % self.nframes;
                if let Some(old) = self.owner[i].take() {
                    self.map.remove(&old);
                }
                self.owner[i] = Some(page);
                self.map.insert(page, i);
                fill(&mut self.frames[i * PAGE..(i + 1) * PAGE]);
                i
            }
        };
        &mut self.frames[idx * PAGE..(idx + 1) * PAGE]
    }
}

/// A `kB` field of `/proc/self/status` (`VmHWM:`, `RssAnon:`...).
///
/// Read from `/proc` on purpose: no system call gives these. `getrusage`'s
/// `ru_maxrss` is not this process's peak: Linux keeps the high-water mark
/// of the process that spawned it across `execve`, so a restart light
/// started by a member with a 64 MiB pool reported 64 MiB.
fn status_kib(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Resident memory of this process that is not the shared region (or any
/// other shared-memory mapping): `RssAnon + RssFile`, in KiB. `VmHWM`
/// counts every page of the region the process touched.
pub fn rss_without_shmem_kib() -> Option<u64> {
    Some(status_kib("RssAnon:")? + status_kib("RssFile:")?)
}

/// Peak resident set size of this program in KiB (`VmHWM`, the kernel's
/// high-water mark of this process's memory since its `execve`).
pub fn peak_rss_kib() -> Option<u64> {
    status_kib("VmHWM:")
}
