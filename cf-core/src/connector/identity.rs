//! Process identity: a PID is not enough (PIDs are reused), so a process is
//! identified by its PID and its start time (field 22 of `/proc/<pid>/stat`,
//! in clock ticks since boot). A connector adds a generation number that
//! changes on every connect.
//!
//! **Dead means "can never run an instruction of its own again"**: every
//! thread of the process is a zombie or is inside the kernel's `do_exit`
//! (`PF_EXITING` in field 9 of `/proc/<pid>/task/<tid>/stat`, set at the top
//! of `do_exit`, before the thread releases its memory). A thread that is
//! not exiting yet (a SIGKILLed process's sibling still in user mode on
//! another CPU, its SIGKILL pending) keeps the process alive, so no thread of
//! a "dead" member can still write to the region. Waiting for the process to
//! be gone from `/proc` instead (or for its pidfd) would wait for the kernel
//! to tear down its address space, which grows with the memory it touched
//! (94 ms for 1 GiB here); `PF_EXITING` is set within microseconds of the
//! kill. A process that is dying keeps its PID (and its start time) until it
//! is reaped, so the identity check stays valid while it is exiting.
//!
//! Under `--cfg loom` processes are modelled (`model`): each model thread
//! says which process it is, and a crash point marks its process dead.

use std::io;

/// A process as identified by PID and start time.
///
/// One read from a connector slot is untrusted data. [`ProcessId::is_alive`]
/// answers for exactly the process it names (same PID *and* start time),
/// never for a later process that reused the PID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessId {
    /// The process ID (0: no process).
    pub pid: u32,
    /// The process's start time: field 22 of `/proc/<pid>/stat`, in clock
    /// ticks since boot (`sysconf(_SC_CLK_TCK)` per second).
    pub start_time: u64,
}

impl ProcessId {
    /// This process (its start time read from `/proc/<pid>/stat`).
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

    /// The process now running under `pid`, if any (`Ok(None)`: no such
    /// process). A zombie still counts as "running under" its PID here.
    #[cfg(not(loom))]
    pub fn of(pid: u32) -> io::Result<Option<ProcessId>> {
        Ok(read_stat(pid)?.map(|s| ProcessId {
            pid,
            start_time: s.start_time,
        }))
    }

    /// Is this exact process still running? A zombie (dead, not yet reaped)
    /// counts as dead; a different process with the same PID counts as dead;
    /// so does a process all of whose threads are exiting (see the module
    /// docs). PID 0 is never alive. If `/proc` cannot be read for another
    /// reason than the process being gone, the answer is `true`: a death it
    /// cannot see is never declared.
    #[cfg(not(loom))]
    pub fn is_alive(&self) -> bool {
        if self.pid == 0 {
            return false;
        }
        match read_stat(self.pid) {
            Ok(Some(stat)) => stat.start_time == self.start_time && can_run(self.pid, &stat),
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

    /// Is the process named by a token ([`ProcessId::token`]) still running?
    /// As [`ProcessId::is_alive`], comparing the low 32 bits of the start
    /// time; 0 names nobody (false).
    #[cfg(not(loom))]
    pub fn token_is_alive(token: u64) -> bool {
        let pid = token as u32;
        if pid == 0 {
            return false;
        }
        match read_stat(pid) {
            Ok(Some(stat)) if (stat.start_time & 0xffff_ffff) != token >> 32 => false,
            Ok(Some(stat)) => can_run(pid, &stat),
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

pub(crate) use crate::sync::current_pid;

/// Can some thread of process `pid` (whose leader's stat is `leader`) still
/// run user code? The leader alone answers when it is neither a zombie nor
/// exiting (one read: the common case of a live member); otherwise every
/// thread is looked at. A thread that cannot be read is gone.
#[cfg(not(loom))]
fn can_run(pid: u32, leader: &Stat) -> bool {
    if !leader.is_exiting() {
        return true;
    }
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    dir.flatten().any(|t| {
        let name = t.file_name();
        let Some(tid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            return false;
        };
        match std::fs::read(format!("/proc/{pid}/task/{tid}/stat")) {
            Ok(text) => parse_stat(&text).is_some_and(|s| !s.is_exiting()),
            Err(_) => false,
        }
    })
}

/// `PF_EXITING` (include/linux/sched.h): the task is in `do_exit`.
#[cfg(not(loom))]
const PF_EXITING: u64 = 0x4;

#[cfg(loom)]
pub use crate::sync::model;

#[cfg(not(loom))]
struct Stat {
    state: u8,
    /// The kernel's task flags (field 9).
    flags: u64,
    start_time: u64,
}

#[cfg(not(loom))]
impl Stat {
    /// A zombie, or a task inside `do_exit`: it runs no user code again.
    fn is_exiting(&self) -> bool {
        matches!(self.state, b'Z' | b'X' | b'x') || self.flags & PF_EXITING != 0
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
    // Field 3 is the state, field 9 the flags; field 22 (start time) is 13
    // fields after the flags.
    let state = *fields.next()?.as_bytes().first()?;
    let flags = fields.nth(5)?.parse().ok()?;
    let start_time = fields.nth(12)?.parse().ok()?;
    Some(Stat {
        state,
        flags,
        start_time,
    })
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let line =
            b"1234 (a) b (c)) S 1 2 3 4 5 4194308 7 8 9 10 11 12 13 14 15 16 17 18 987654 20 21";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.state, b'S');
        assert_eq!(s.flags, 4194308);
        assert!(s.is_exiting(), "PF_EXITING is bit 2");
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
