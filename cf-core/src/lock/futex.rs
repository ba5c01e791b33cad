//! Cross-process futex wait and wake on the high half of a lock word.
//!
//! The region is mapped `MAP_SHARED` by several processes, so these are the
//! *shared* futex operations (no `FUTEX_PRIVATE_FLAG`): the kernel keys the wait
//! queue by the page and offset, not by the address in one process.
//!
//! Under `--cfg loom` the kernel is replaced by a mutex and a condition variable
//! with the same contract: the value check and the enqueue are atomic with
//! respect to a wake, so a waker that changes the word and then wakes can never
//! be missed. A lost wake-up then shows up as a loom deadlock.

use crate::sync::AtomicU64;
use std::time::Duration;

#[cfg(not(target_endian = "little"))]
compile_error!("the lock word layout assumes a little-endian machine");

/// Sleep while the high 32 bits of `word` equal `expected`, at most `timeout`.
/// Returns early on a wake, a signal, or a value mismatch; callers re-check.
#[cfg(not(loom))]
pub(crate) fn wait_high(word: &AtomicU64, expected: u32, timeout: Duration) {
    // The high half of a little-endian u64 is the second u32.
    let addr = (word as *const AtomicU64 as *const u32).wrapping_add(1);
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `addr` points into a live, 8-aligned AtomicU64 (so the u32 is
    // 4-aligned and inside it); FUTEX_WAIT only reads it atomically. `ts` lives
    // across the call. The return value is deliberately ignored: every caller
    // loops and re-reads the word (EAGAIN, EINTR, ETIMEDOUT are all "re-check").
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            addr,
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
        );
    }
}

/// Wake every process sleeping on the high half of `word`.
#[cfg(not(loom))]
pub(crate) fn wake_all_high(word: &AtomicU64) {
    let addr = (word as *const AtomicU64 as *const u32).wrapping_add(1);
    // SAFETY: as in `wait_high`; FUTEX_WAKE does not access the memory.
    unsafe {
        libc::syscall(libc::SYS_futex, addr, libc::FUTEX_WAKE, i32::MAX);
    }
}

#[cfg(loom)]
mod model {
    use loom::sync::{Condvar, Mutex};
    loom::lazy_static! {
        pub static ref BUCKET: (Mutex<()>, Condvar) = (Mutex::new(()), Condvar::new());
    }
}

#[cfg(loom)]
pub(crate) fn wait_high(word: &AtomicU64, expected: u32, _timeout: Duration) {
    use crate::sync::Ordering;
    let (lock, cv) = &*model::BUCKET;
    let guard = lock.lock().unwrap();
    if (word.load(Ordering::SeqCst) >> 32) as u32 == expected {
        drop(cv.wait(guard).unwrap());
    }
}

#[cfg(loom)]
pub(crate) fn wake_all_high(_word: &AtomicU64) {
    let (lock, cv) = &*model::BUCKET;
    let _guard = lock.lock().unwrap();
    cv.notify_all();
}

#[cfg(loom)]
pub(crate) fn wait_u32(word: &crate::sync::AtomicU32, expected: u32, _timeout: Duration) {
    use crate::sync::Ordering;
    let (lock, cv) = &*model::BUCKET;
    let guard = lock.lock().unwrap();
    if word.load(Ordering::SeqCst) == expected {
        drop(cv.wait(guard).unwrap());
    }
}

#[cfg(loom)]
pub(crate) fn wake_all_u32(_word: &crate::sync::AtomicU32) {
    let (lock, cv) = &*model::BUCKET;
    let _guard = lock.lock().unwrap();
    cv.notify_all();
}

/// Sleep while a 32-bit word in the shared mapping equals `expected`.
#[cfg(not(loom))]
pub(crate) fn wait_u32(word: &crate::sync::AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: as in `wait_high`: a live, aligned 32-bit atomic; the kernel
    // only reads it. The result is ignored because callers re-check.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word as *const crate::sync::AtomicU32,
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
        );
    }
}

/// Wake every process sleeping on a 32-bit word.
#[cfg(not(loom))]
pub(crate) fn wake_all_u32(word: &crate::sync::AtomicU32) {
    // SAFETY: FUTEX_WAKE does not access the memory.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word as *const crate::sync::AtomicU32,
            libc::FUTEX_WAKE,
            i32::MAX,
        );
    }
}
