//! Exit statuses of `cfctl`, one table for every command.

use std::process::ExitCode;

/// Done; every invariant that was checked held.
pub const SUCCESS: u8 = 0;
/// An error (one line on stderr): bad plex, no resources, a dead peer...
pub const ERROR: u8 = 1;
/// A usage error: an unknown option or a value out of its range (clap's code).
pub const USAGE: u8 = 2;
/// The lock is retained by a failed member (`try`, `hold`).
pub const RETAINED: u8 = 3;
/// The lock is held by a live member in an incompatible mode (`try`).
pub const CONTENTION: u8 = 4;
/// A wait ran out (`hold --timeout`, a recovery that never ended).
pub const TIMED_OUT: u8 = 5;
/// An invariant broke: `verify` found damage, `sim`, `demo` or `stress`
/// saw a broken invariant (the plex is kept for a look).
pub const INVARIANT: u8 = 6;
/// Stopped early by SIGINT or SIGTERM (128 + SIGINT): the faults stopped,
/// members were stopped normally, the partial report was printed.
pub const INTERRUPTED: u8 = 130;

/// The table, for `--help` and the README.
pub const TABLE: &str = "Exit status:
  0    success (every invariant checked held)
  1    error (one line on stderr)
  2    usage: unknown option, value out of range
  3    retained: the lock is retained by a failed member
  4    contention: the lock is held by a live member in an incompatible mode
  5    timed out waiting (a lock, a recovery)
  6    an invariant broke (verify found damage; sim, demo or stress saw a violation)
  130  interrupted by SIGINT/SIGTERM (partial report printed, members stopped normally)";

pub fn code(c: u8) -> ExitCode {
    ExitCode::from(c)
}
