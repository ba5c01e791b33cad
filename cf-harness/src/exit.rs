//! Exit statuses of `cfctl`, one table for every command.
//!
//! `try`'s answers keep the numbers they always had (2 contention, 3
//! retained), so a command line that does not parse gets its own status,
//! `EX_USAGE` of sysexits.h (64), instead of clap's 2.

use std::process::ExitCode;

/// Done; every invariant that was checked held.
pub const SUCCESS: u8 = 0;
/// An error (one line on stderr): bad plex, no resources, a dead peer...
pub const ERROR: u8 = 1;
/// The lock is held by a live member in an incompatible mode (`try`); a
/// live member is in the way (`fence` of a member whose status update is
/// not missing).
pub const CONTENTION: u8 = 2;
/// The lock is retained by a failed member (`try`, `hold`).
pub const RETAINED: u8 = 3;
/// A wait ran out (`hold --timeout`).
pub const TIMED_OUT: u8 = 4;
/// The request was chosen as a deadlock victim to break a cycle of waits
/// (`hold`, its conversions included).
pub const DEADLOCK: u8 = 6;
/// An invariant broke: `verify` found damage, `sim`, `demo` or `stress`
/// saw a broken invariant (the plex is kept for a look).
pub const INVARIANT: u8 = 5;
/// A usage error: a command line that does not parse, an unknown option, or
/// a value out of its range (`EX_USAGE`, the status of cf-node's too).
pub const USAGE: u8 = cf_node::cli::USAGE_EXIT;
/// Stopped early by SIGINT or SIGTERM (128 + SIGINT): the faults stopped,
/// members were stopped normally, the partial report was printed.
pub const INTERRUPTED: u8 = 130;

/// The table, for `--help` and the README.
pub const TABLE: &str = "Exit status:
  0    success (every invariant checked held)
  1    error (one line on stderr)
  2    contention: the lock is held by a live member in an incompatible mode
       (fence: the member's status update is not missing)
  3    retained: the lock is retained by a failed member
  4    timed out waiting for a lock
  5    an invariant broke (verify found damage; sim, demo or stress saw a violation)
  6    deadlock: the request was chosen as the victim of a cycle of waits (hold)
  64   usage: a command line that does not parse, a value out of its range
  130  interrupted by SIGINT/SIGTERM (partial report printed, members stopped normally)";

pub fn code(c: u8) -> ExitCode {
    ExitCode::from(c)
}

/// An option value that parsed but is out of its range or contradicts
/// another option, found before anything is created, connected or spawned:
/// exit status [`USAGE`], like clap's own range errors.
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// Return a [`Usage`] error from the enclosing function (`anyhow::Result`).
#[macro_export]
macro_rules! usage {
    ($($t:tt)*) => {
        return Err($crate::exit::Usage(format!($($t)*)).into())
    };
}

/// The exit status of an error: [`USAGE`] for a [`Usage`] error anywhere in
/// its chain, else [`ERROR`].
pub fn of_error(e: &anyhow::Error) -> u8 {
    if e.chain().any(|c| c.is::<Usage>()) {
        USAGE
    } else {
        ERROR
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sized(n: u32) -> anyhow::Result<u32> {
        if n == 0 {
            usage!("--n must be at least 1, got {n}");
        }
        Ok(n)
    }

    #[test]
    fn a_usage_error_is_told_from_an_error() {
        let e = sized(0).unwrap_err();
        assert_eq!(of_error(&e), USAGE);
        assert_eq!(e.to_string(), "--n must be at least 1, got 0");
        assert_eq!(of_error(&e.context("checking the options")), USAGE);
        assert_eq!(of_error(&anyhow::anyhow!("no such plex")), ERROR);
    }

    #[test]
    fn the_table_has_every_status() {
        for c in [
            SUCCESS,
            ERROR,
            CONTENTION,
            RETAINED,
            TIMED_OUT,
            INVARIANT,
            USAGE,
            INTERRUPTED,
        ] {
            assert!(TABLE.contains(&format!("\n  {c:<4} ")), "{c}");
        }
    }
}
