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

impl BufferPool {
    /// A pool of `bytes` (at least one page), every page touched.
    pub fn new(bytes: usize) -> BufferPool {
        let nframes = (bytes / PAGE).max(1);
        let mut frames = vec![0u8; nframes * PAGE];
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

/// Peak resident set size of this process in KiB (`getrusage`'s
/// `ru_maxrss`, the kernel's high-water mark, the same as `VmHWM`).
pub fn peak_rss_kib() -> Option<u64> {
    use nix::sys::resource::{getrusage, UsageWho};
    let u = getrusage(UsageWho::RUSAGE_SELF).ok()?;
    u64::try_from(u.max_rss()).ok()
}
