//! No allocation on the lock and release paths: the uncontended fast path,
//! a second holding of one member on an entry, false contention (another
//! resource on the same entry, decided on the latched path) and their
//! releases. A counting allocator counts this thread's allocations while a
//! workload runs, after one warm-up round has grown the holder's lists.

mod common;
use cf_core::{CreateOptions, Member, Mode, Plex, Region, Sizes};
use common::{colliding_pair, granted};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counter is a relaxed atomic and the flag a const-initialized thread local,
// neither of which allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same layout contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by this thread while `f` runs.
fn allocations_in(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

#[test]
fn lock_and_release_paths_allocate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let plex = Plex {
        dir: dir.path().into(),
    };
    let opts = CreateOptions {
        sizes: Sizes {
            lock_entries: 16,
            members: 4,
            records_per_member: 256,
        },
        group_access: false,
    };
    let r = Arc::new(Region::create(&plex, &opts).unwrap());
    let a = Member::connect(r.clone(), "A").unwrap();
    let b = Member::connect(r.clone(), "B").unwrap();
    let (mut ha, mut hb) = (a.holder().unwrap(), b.holder().unwrap());
    let mut ha2 = a.holder().unwrap();
    let (r1, r2) = colliding_pair(16);

    let mut round = || {
        for mode in [Mode::Share, Mode::Exclusive, Mode::Modify] {
            // Uncontended: the fast path.
            let l = granted(ha.try_lock(&r1, mode).unwrap());
            ha.unlock(l).unwrap();
            // False contention between members: latched, granted, released.
            let l1 = granted(ha.try_lock(&r1, mode).unwrap());
            let l2 = granted(hb.try_lock(&r2, Mode::Exclusive).unwrap());
            hb.unlock(l2).unwrap();
            ha.unlock(l1).unwrap();
            // Two threads of one member on one entry.
            let l1 = granted(ha.try_lock(&r1, mode).unwrap());
            let l2 = granted(ha2.try_lock(&r2, mode).unwrap());
            ha.unlock(l1).unwrap();
            ha2.unlock(l2).unwrap();
        }
        // A waiting request granted at once (nobody holds the resource).
        let l = ha
            .lock(&r1, Mode::Exclusive, std::time::Duration::from_secs(5))
            .unwrap();
        ha.unlock(l).unwrap();
    };
    round(); // grows the holders' free lists
    let n = allocations_in(|| {
        for _ in 0..100 {
            round();
        }
    });
    assert_eq!(n, 0, "{n} allocations in 100 rounds of lock and release");
    drop((ha, hb, ha2));
    a.disconnect().unwrap();
    b.disconnect().unwrap();
}
