//! Process identity: a PID is not enough (PIDs are reused), so a process is
//! identified by its PID and its start time (field 22 of `/proc/<pid>/stat`,
//! in clock ticks since boot). A connector adds a generation number that
//! changes on every connect.

use std::io;

/// A process as identified by PID and start time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessId {
    pub pid: u32,
    pub start_time: u64,
}

impl ProcessId {
    /// This process.
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

    /// The process now running under `pid`, if any.
    pub fn of(pid: u32) -> io::Result<Option<ProcessId>> {
        Ok(read_stat(pid)?.map(|s| ProcessId {
            pid,
            start_time: s.start_time,
        }))
    }

    /// Is this exact process still running? A zombie (dead, not yet reaped)
    /// counts as dead; a different process with the same PID counts as dead.
    pub fn is_alive(&self) -> bool {
        if self.pid == 0 {
            return false;
        }
        match read_stat(self.pid) {
            Ok(Some(stat)) => stat.start_time == self.start_time && !stat.is_dead(),
            Ok(None) => false,
            // /proc unreadable for another reason: do not declare a death we
            // cannot see.
            Err(_) => true,
        }
    }

    /// Pack into one word for atomic claims: PID in the low 32 bits, the low 32
    /// bits of the start time above. Zero means "nobody".
    pub fn token(&self) -> u64 {
        self.pid as u64 | (self.start_time & 0xffff_ffff) << 32
    }

    /// Is the process named by a token still running?
    pub fn token_is_alive(token: u64) -> bool {
        let pid = token as u32;
        if pid == 0 {
            return false;
        }
        match read_stat(pid) {
            Ok(Some(stat)) => (stat.start_time & 0xffff_ffff) == token >> 32 && !stat.is_dead(),
            Ok(None) => false,
            Err(_) => true,
        }
    }
}

struct Stat {
    state: u8,
    start_time: u64,
}

impl Stat {
    fn is_dead(&self) -> bool {
        matches!(self.state, b'Z' | b'X' | b'x')
    }
}

/// Parse `/proc/<pid>/stat`. `Ok(None)` if there is no such process.
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
fn parse_stat(text: &[u8]) -> Option<Stat> {
    let close = text.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(text.get(close + 1..)?).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    // Field 3 is the state; field 22 (start time) is 19 fields later.
    let state = *fields.next()?.as_bytes().first()?;
    let start_time = fields.nth(18)?.parse().ok()?;
    Some(Stat { state, start_time })
}

#[cfg(test)]
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
