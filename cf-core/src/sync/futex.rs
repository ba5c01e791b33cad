//! Cross-process futex wait and wake on the high half of a lock word, and on
//! the 32-bit sequence word of the restart-request list.
//!
//! The region is mapped `MAP_SHARED` by several processes, so these are the
//! *shared* futex operations (no `FUTEX_PRIVATE_FLAG`): the kernel keys the wait
//! queue by the page and offset, not by the address in one process.
//!
//! Sleepers on a lock word belong to a *class* (a bit of the futex bitset):
//! those waiting for the entry's holdings to change ([`HOLDINGS`]) and those
//! waiting for its latch ([`LATCH`]). A wake names the classes it wakes
//! (`FUTEX_WAKE_BITSET`), so a waiter that looks at the entry and finds the
//! same conflict wakes only latch waiters, never the other holding waiters.
//!
//! Under `--cfg loom` the kernel is replaced by a mutex and a condition variable
//! with the same contract: the value check and the enqueue are atomic with
//! respect to a wake, a wake wakes only its classes, and timeouts are ignored
//! (a sleeper returns only when woken), so a lost wake-up shows up as a loom
//! deadlock.

use crate::sync::{AtomicU32, AtomicU64};
use std::time::Duration;

#[cfg(not(target_endian = "little"))]
compile_error!("the lock word layout assumes a little-endian machine");

/// Sleepers waiting for the holdings of an entry to change.
pub(crate) const HOLDINGS: u32 = 1;
/// Sleepers waiting for the latch of an entry.
pub(crate) const LATCH: u32 = 2;

/// The high half of a little-endian u64 is the second u32.
#[cfg(not(loom))]
fn high_half(word: &AtomicU64) -> *const u32 {
    (word as *const AtomicU64 as *const u32).wrapping_add(1)
}

/// An absolute CLOCK_MONOTONIC time `timeout` from now (FUTEX_WAIT_BITSET
/// takes an absolute timeout).
#[cfg(not(loom))]
fn deadline_after(timeout: Duration) -> libc::timespec {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass; CLOCK_MONOTONIC
    // always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let nanos = now.tv_nsec as u64 + timeout.subsec_nanos() as u64;
    libc::timespec {
        tv_sec: now
            .tv_sec
            .saturating_add(timeout.as_secs().min(i32::MAX as u64) as libc::time_t)
            .saturating_add((nanos / 1_000_000_000) as libc::time_t),
        tv_nsec: (nanos % 1_000_000_000) as libc::c_long,
    }
}

/// Sleep as a member of `class` while the high 32 bits of `word` equal
/// `expected`, at most `timeout`. Returns early on a wake of the class, a
/// signal, or a value mismatch; callers re-check.
#[cfg(not(loom))]
pub(crate) fn wait_high(word: &AtomicU64, expected: u32, timeout: Duration, class: u32) {
    let ts = deadline_after(timeout);
    // SAFETY: the address points into a live, 8-aligned AtomicU64 (so the u32
    // is 4-aligned and inside it); FUTEX_WAIT_BITSET only reads it atomically.
    // `ts` lives across the call. The result is deliberately ignored: every
    // caller loops and re-reads the word (EAGAIN, EINTR, ETIMEDOUT are all
    // "re-check").
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            high_half(word),
            libc::FUTEX_WAIT_BITSET,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            class,
        );
    }
}

/// Wake every sleeper of the classes in `classes` on the high half of `word`.
#[cfg(not(loom))]
pub(crate) fn wake_high(word: &AtomicU64, classes: u32) {
    // SAFETY: as in `wait_high`; FUTEX_WAKE_BITSET does not access the memory.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            high_half(word),
            libc::FUTEX_WAKE_BITSET,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            classes,
        );
    }
}

/// Sleep while a 32-bit word in the shared mapping equals `expected`.
#[cfg(not(loom))]
pub(crate) fn wait_u32(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: a live, aligned 32-bit atomic; the kernel only reads it. The
    // result is ignored because callers re-check.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word as *const AtomicU32,
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
        );
    }
}

/// Wake every process sleeping on a 32-bit word.
#[cfg(not(loom))]
pub(crate) fn wake_all_u32(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE does not access the memory.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word as *const AtomicU32,
            libc::FUTEX_WAKE,
            i32::MAX,
        );
    }
}

#[cfg(loom)]
mod model {
    use loom::sync::{Condvar, Mutex};
    loom::lazy_static! {
        /// Wakes so far per class (index = class bit), and the condition
        /// variable every sleeper waits on.
        pub static ref BUCKET: (Mutex<[u64; 3]>, Condvar) = (Mutex::new([0; 3]), Condvar::new());
    }
}

#[cfg(loom)]
pub(crate) fn wait_high(word: &AtomicU64, expected: u32, _timeout: Duration, class: u32) {
    use crate::sync::Ordering;
    let (lock, cv) = &*model::BUCKET;
    let mut wakes = lock.lock().unwrap();
    if (word.load(Ordering::SeqCst) >> 32) as u32 != expected {
        return;
    }
    let seen = wakes[class as usize];
    while wakes[class as usize] == seen {
        wakes = cv.wait(wakes).unwrap();
    }
}

#[cfg(loom)]
pub(crate) fn wake_high(_word: &AtomicU64, classes: u32) {
    let (lock, cv) = &*model::BUCKET;
    let mut wakes = lock.lock().unwrap();
    for class in [HOLDINGS, LATCH] {
        if classes & class != 0 {
            wakes[class as usize] += 1;
        }
    }
    cv.notify_all();
}

#[cfg(loom)]
pub(crate) fn wait_u32(word: &AtomicU32, expected: u32, _timeout: Duration) {
    use crate::sync::Ordering;
    let (lock, cv) = &*model::BUCKET;
    let mut wakes = lock.lock().unwrap();
    if word.load(Ordering::SeqCst) != expected {
        return;
    }
    let seen = wakes[0];
    while wakes[0] == seen {
        wakes = cv.wait(wakes).unwrap();
    }
}

#[cfg(loom)]
pub(crate) fn wake_all_u32(_word: &AtomicU32) {
    let (lock, cv) = &*model::BUCKET;
    let mut wakes = lock.lock().unwrap();
    wakes[0] += 1;
    cv.notify_all();
}
