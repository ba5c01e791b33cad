//! Atomics and threads, from `loom` when the crate is model-checked (`--cfg loom`)
//! and from `std` otherwise. The protocol modules (`lockword`, `claim`, `futex`)
//! use only these, so the same code runs in the region and under loom.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Hint to the CPU that we are spinning.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}

/// An acquire fence (seqlock-style reads: fields, fence, re-read the sequence).
#[cfg(not(loom))]
#[inline]
pub(crate) fn fence_acquire() {
    std::sync::atomic::fence(Ordering::Acquire);
}
