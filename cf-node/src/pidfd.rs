//! Process file descriptors: a pidfd is tied to one process (not to its PID
//! number) and polls readable when that process exits.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

/// Open a pidfd for `pid` (`rustix`'s `pidfd_open`). The caller must then
/// check that the process is the one it means (start time), since the PID
/// may already have been reused.
pub fn open(pid: u32) -> io::Result<OwnedFd> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))?;
    Ok(rustix::process::pidfd_open(
        pid,
        rustix::process::PidfdFlags::empty(),
    )?)
}

/// Wait up to `timeout` for any of `fds` to become readable; returns the
/// indices of the readable ones (empty on timeout or EINTR).
pub fn poll_readable(fds: &[&OwnedFd], timeout: Duration) -> io::Result<Vec<usize>> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut pfds: Vec<PollFd> = fds
        .iter()
        .map(|f| PollFd::new(f.as_fd(), PollFlags::POLLIN))
        .collect();
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    match poll(
        &mut pfds,
        PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
    ) {
        Ok(_) => {}
        Err(nix::errno::Errno::EINTR) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    }
    Ok(pfds
        .iter()
        .enumerate()
        .filter(|(_, p)| p.revents().is_some_and(|r| !r.is_empty()))
        .map(|(i, _)| i)
        .collect())
}
