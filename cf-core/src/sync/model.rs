//! The processes of a loom model: which one each model thread plays, and
//! which are dead (the models' stand-in for PIDs and SIGKILL).

use loom::sync::atomic::{AtomicBool, Ordering};

/// Processes a model may have (PIDs 1 to MAX).
pub const MAX: u32 = 8;

loom::lazy_static! {
    static ref DEAD: Vec<AtomicBool> = (0..=MAX).map(|_| AtomicBool::new(false)).collect();
}
loom::thread_local! {
    static CURRENT: std::cell::Cell<u32> = std::cell::Cell::new(1);
}

/// This model thread plays process `pid` (1 to MAX).
pub fn enter(pid: u32) {
    assert!((1..=MAX).contains(&pid));
    CURRENT.with(|c| c.set(pid));
}

/// The process this model thread plays (1 unless it called [`enter`]).
pub fn current() -> u32 {
    CURRENT.with(|c| c.get())
}

/// Process `pid` is dead from now on.
pub fn kill(pid: u32) {
    DEAD[pid as usize].store(true, Ordering::SeqCst);
}

/// Is modelled process `pid` (at most [`MAX`]) not killed yet?
pub fn is_alive(pid: u32) -> bool {
    pid <= MAX && !DEAD[pid as usize].load(Ordering::SeqCst)
}
