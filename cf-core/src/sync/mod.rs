//! Atomics, spinning, sleeping, futexes and the clock, from `loom` when the
//! crate is model-checked (`--cfg loom`) and from `std` (and the kernel)
//! otherwise. Every protocol module uses only these, so the code that ships is
//! the code loom explores. The lowest layer of the crate: it imports nothing
//! from it.

pub(crate) mod futex;
#[cfg(loom)]
pub mod model;

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use std::time::Duration;

/// Hint to the CPU that we are spinning (under loom: let another thread run).
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}

/// Wait a little before looking again (under loom: let another thread run;
/// loom does not model time).
pub(crate) fn pause(d: Duration) {
    #[cfg(loom)]
    {
        let _ = d;
        loom::thread::yield_now();
    }
    #[cfg(not(loom))]
    std::thread::sleep(d);
}

/// The clock every protocol reads. Under loom time stands still (loom does
/// not model it, and a real clock would make executions differ): a deadline
/// in the future never passes and a sleep slice never ends by itself, so
/// each execution is deterministic and a wait that only a timeout could end
/// shows up as a loom deadlock. (A deadline of "now" has passed at once.)
#[inline]
pub(crate) fn now() -> std::time::Instant {
    #[cfg(loom)]
    {
        static FROZEN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        *FROZEN.get_or_init(std::time::Instant::now)
    }
    #[cfg(not(loom))]
    std::time::Instant::now()
}

/// Wall-clock time in nanoseconds since the Unix epoch (event timestamps,
/// connection and failure times in the region).
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// This process's PID (modelled under loom: the model process this thread
/// plays).
pub(crate) fn current_pid() -> u32 {
    #[cfg(loom)]
    return model::current();
    #[cfg(not(loom))]
    std::process::id()
}

/// Time passed since `t` by [`now`].
#[inline]
pub(crate) fn since(t: std::time::Instant) -> Duration {
    now().saturating_duration_since(t)
}

/// A release fence (seqlock-style writes: mark invalid, fence, the fields).
#[inline]
pub(crate) fn fence_release() {
    #[cfg(loom)]
    loom::sync::atomic::fence(Ordering::Release);
    #[cfg(not(loom))]
    std::sync::atomic::fence(Ordering::Release);
}

/// An acquire fence (seqlock-style reads: fields, fence, re-read the sequence).
#[inline]
pub(crate) fn fence_acquire() {
    #[cfg(loom)]
    loom::sync::atomic::fence(Ordering::Acquire);
    #[cfg(not(loom))]
    std::sync::atomic::fence(Ordering::Acquire);
}

/// How many times a loop spins on a word before it sleeps: a futex wake costs
/// microseconds here, and a short hold is usually over within this many loads.
/// Under loom every load is a scheduling point, so the models spin once.
#[cfg(not(loom))]
pub(crate) const SPINS: u32 = 2000;
#[cfg(loom)]
pub(crate) const SPINS: u32 = 1;

/// Under loom, a trace of protocol steps of the current execution, printed
/// by the models when one fails (`loom_models/harness.rs`). A no-op otherwise.
#[cfg(loom)]
pub(crate) static TRACE: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

macro_rules! trace {
    ($($arg:tt)*) => {
        #[cfg(loom)]
        {
            let line = format!("[t{:?} p{}] {}", loom::thread::current().id(),
                crate::sync::current_pid(), format!($($arg)*));
            crate::sync::TRACE.lock().unwrap_or_else(|p| p.into_inner()).push(line);
        }
    };
}
pub(crate) use trace;
