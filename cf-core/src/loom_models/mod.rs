//! Loom models of the protocols, run on the code that ships.
//!
//! Run with `scripts/loom.sh` (`--cfg loom`). Under loom the region lives in
//! loom's memory (`shm/model.rs`): the same typed areas, built from loom's
//! atomics, so every model below calls the real `Member`, `Holder`,
//! `cleanup_member`, `requests` and `claim` functions, and loom explores
//! their interleavings and memory orderings within a preemption bound.
//! Processes are modelled (`connector/identity.rs`, `model`): each model
//! thread plays one process, and a crash point armed in a thread kills its
//! process there (`crash.rs`, `model`), as SIGKILL would, with no destructor
//! running. The kernel futex is a loom condition variable that ignores
//! timeouts, so a lost wake-up shows as a loom deadlock.
//!
//! What loom checks on its own: every thread ends, and the protected data (a
//! `loom::cell::UnsafeCell` per resource) is never accessed by two threads
//! without a happens-before edge between them (mutual exclusion *and* the
//! acquire/release orderings). Each model asserts its outcomes on top.

mod harness;

mod attack;
mod attack12;
mod attack13;
mod attack14;
mod attack15;
mod attack2;
mod attack3;
mod claim;
mod connect;
mod convert;
mod deadlock;
mod failed_requests;
mod liveness;
mod locks;
mod requests;
mod retention;
mod waiting;
