//! Process identity: a PID is not enough (PIDs are reused), so a process is
//! identified by its PID and its start time (field 22 of `/proc/<pid>/stat`,
//! in clock ticks since boot). A connector adds a generation number that
//! changes on every connect.
//!
//! A SIGKILLed process's thread-group leader shows as a zombie as soon as it
//! has exited, while its sibling threads may still be on their way out. The
//! process is taken for dead only once no thread of it is left but the
//! zombie leader (`/proc/<pid>/task` has one entry), so no thread of a
//! "dead" member can still write to the region.
//!
//! Under `--cfg loom` processes are modelled (`model`): each model thread
//! says which process it is, and a crash point marks its process dead.

use std::io;

/// A process as identified by PID and start time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessId {
    pub pid: u32,
    pub start_time: u64,
}

impl ProcessId {
    /// This process.
    #[cfg(not(loom))]
    pub fn current() -> io::Result<ProcessId> {
        let pid = std::process::id();
        match read_stat(pid)? {
            Some(stat) => Ok(ProcessId {
                pid,
                start_time: stat.start_time,
            }),
            None => Err(io::Error::other("no /proc entry for this process")),
        }
    }

    /// This (modelled) process.
    #[cfg(loom)]
    pub fn current() -> io::Result<ProcessId> {
        Ok(ProcessId {
            pid: model::current(),
            start_time: 1,
        })
    }

    /// The process now running under `pid`, if any.
    #[cfg(not(loom))]
    pub fn of(pid: u32) -> io::Result<Option<ProcessId>> {
        Ok(read_stat(pid)?.map(|s| ProcessId {
            pid,
            start_time: s.start_time,
        }))
    }

    /// Is this exact process still running? A zombie (dead, not yet reaped)
    /// counts as dead; a different process with the same PID counts as dead.
    #[cfg(not(loom))]
    pub fn is_alive(&self) -> bool {
        if self.pid == 0 {
            return false;
        }
        match read_stat(self.pid) {
            Ok(Some(stat)) => {
                stat.start_time == self.start_time && (!stat.is_dead() || threads_left(self.pid))
            }
            Ok(None) => false,
            // /proc unreadable for another reason: do not declare a death we
            // cannot see.
            Err(_) => true,
        }
    }

    /// Is this exact (modelled) process still running?
    #[cfg(loom)]
    pub fn is_alive(&self) -> bool {
        Self::token_is_alive(self.token())
    }

    /// Pack into one word for atomic claims: PID in the low 32 bits, the low 32
    /// bits of the start time above. Zero means "nobody".
    pub fn token(&self) -> u64 {
        self.pid as u64 | (self.start_time & 0xffff_ffff) << 32
    }

    /// Is the process named by a token still running?
    #[cfg(not(loom))]
    pub fn token_is_alive(token: u64) -> bool {
        let pid = token as u32;
        if pid == 0 {
            return false;
        }
        match read_stat(pid) {
            Ok(Some(stat)) if (stat.start_time & 0xffff_ffff) != token >> 32 => false,
            Ok(Some(stat)) => !stat.is_dead() || threads_left(pid),
            Ok(None) => false,
            // /proc unreadable for another reason: do not declare a death we
            // cannot see.
            Err(_) => true,
        }
    }

    /// Is the process named by a token still running? (Modelled.)
    #[cfg(loom)]
    pub fn token_is_alive(token: u64) -> bool {
        let pid = token as u32;
        pid != 0 && model::is_alive(pid)
    }
}

/// This process's PID (modelled under loom).
pub(crate) fn current_pid() -> u32 {
    #[cfg(loom)]
    return model::current();
    #[cfg(not(loom))]
    std::process::id()
}

/// Does a process whose leader is a zombie still have other threads on their
/// way out? (Then it may still run user code for a moment: not dead yet.)
#[cfg(not(loom))]
fn threads_left(pid: u32) -> bool {
    match std::fs::read_dir(format!("/proc/{pid}/task")) {
        Ok(d) => d.take(2).count() > 1,
        Err(_) => false,
    }
}

/// Modelled processes for the loom models: a model thread names the process
/// it plays with [`model::enter`]; a crash point kills it ([`model::kill`]).
#[cfg(loom)]
pub mod model {
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

    pub fn current() -> u32 {
        CURRENT.with(|c| c.get())
    }

    /// Process `pid` is dead from now on.
    pub fn kill(pid: u32) {
        DEAD[pid as usize].store(true, Ordering::SeqCst);
    }

    pub fn is_alive(pid: u32) -> bool {
        pid <= MAX && !DEAD[pid as usize].load(Ordering::SeqCst)
    }
}

#[cfg(not(loom))]
struct Stat {
    state: u8,
    start_time: u64,
}

#[cfg(not(loom))]
impl Stat {
    fn is_dead(&self) -> bool {
        matches!(self.state, b'Z' | b'X' | b'x')
    }
}

/// Parse `/proc/<pid>/stat`. `Ok(None)` if there is no such process.
#[cfg(not(loom))]
fn read_stat(pid: u32) -> io::Result<Option<Stat>> {
    let text = match std::fs::read(format!("/proc/{pid}/stat")) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(None),
        Err(e) => return Err(e),
    };
    parse_stat(&text)
        .map(Some)
        .ok_or_else(|| io::Error::other(format!("cannot parse /proc/{pid}/stat")))
}

/// The command name (field 2) is in parentheses and may contain spaces and
/// parentheses itself, so fields are counted after the *last* ')'.
#[cfg(not(loom))]
fn parse_stat(text: &[u8]) -> Option<Stat> {
    let close = text.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(text.get(close + 1..)?).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    // Field 3 is the state; field 22 (start time) is 19 fields later.
    let state = *fields.next()?.as_bytes().first()?;
    let start_time = fields.nth(18)?.parse().ok()?;
    Some(Stat { state, start_time })
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let line = b"1234 (a) b (c)) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 987654 20 21";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.state, b'S');
        assert_eq!(s.start_time, 987654);
        assert!(parse_stat(b"garbage").is_none());
    }

    #[test]
    fn this_process_is_alive_and_a_fake_start_time_is_not() {
        let me = ProcessId::current().unwrap();
        assert!(me.is_alive());
        assert!(ProcessId::token_is_alive(me.token()));
        let reused = ProcessId {
            pid: me.pid,
            start_time: me.start_time + 1,
        };
        assert!(
            !reused.is_alive(),
            "same pid, other start time: not the same process"
        );
        assert!(!ProcessId {
            pid: 0,
            start_time: 0
        }
        .is_alive());
        assert!(!ProcessId::token_is_alive(0));
    }
}
