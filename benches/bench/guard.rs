//! Resources a benchmark run creates, each released by a guard, so that an
//! error (or Ctrl-C) anywhere still removes the temporary directory and kills
//! and reaps every child process.

use anyhow::{bail, Context, Result};
use cf_core::shm::mapping::{Access, SharedMap};
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

/// A `MAP_SHARED` mapping of a whole file in the temporary directory: the
/// memory the peers' lock words and mutexes live in, and the control words of
/// the multi-process benchmarks.
pub struct ShmFile {
    map: SharedMap,
}

impl ShmFile {
    /// Create `path` (it must not exist) with `len` zero bytes and map it.
    pub fn create(path: &Path, len: u64) -> Result<ShmFile> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .with_context(|| format!("creating {}", path.display()))?;
        file.set_len(len)
            .with_context(|| format!("sizing {}", path.display()))?;
        Self::map(&file, path)
    }

    /// Map an existing file made by [`ShmFile::create`] in another process.
    pub fn open(path: &Path) -> Result<ShmFile> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        Self::map(&file, path)
    }

    fn map(file: &std::fs::File, path: &Path) -> Result<ShmFile> {
        // The file lives in our private temporary directory and is never
        // truncated while mapped; every access to the mapping that another
        // process may make at the same time goes through atomics or through
        // the pthread functions made for shared memory.
        let len = file
            .metadata()
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        if len < 4096 {
            bail!("{} is shorter than a page", path.display());
        }
        let map = SharedMap::map(file, len, Access::ReadWrite)
            .with_context(|| format!("mapping {}", path.display()))?;
        Ok(ShmFile { map })
    }

    /// A raw pointer to byte `off`, checked to leave `size` bytes in the
    /// mapping and to be aligned to 8.
    pub fn ptr(&self, off: usize, size: usize) -> Result<*mut u8> {
        Ok(self.map.ptr(off, size, 8)?)
    }

    /// The atomic word at byte `off`.
    pub fn word(&self, off: usize) -> Result<&AtomicU64> {
        Ok(self.map.atomic(off)?)
    }
}

/// A child process that is killed (SIGKILL) and reaped when dropped, unless
/// it was reaped already.
pub struct Proc {
    pub child: Child,
    pub what: String,
    reaped: bool,
}

impl Proc {
    /// Spawn `cmd`; the child gets SIGKILL if this process dies first.
    pub fn spawn(mut cmd: Command, what: &str) -> Result<Proc> {
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: in the child only async-signal-safe calls (prctl, getppid)
        // run between fork and exec; nothing is allocated and no memory but
        // the copied `parent` is touched.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            })
        };
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {what} ({:?})", cmd.get_program()))?;
        Ok(Proc {
            child,
            what: what.to_string(),
            reaped: false,
        })
    }

    /// Spawn `cmd` as the standard library does (posix_spawn, no hook in
    /// the child): for the short-lived children whose start is timed.
    pub fn spawn_plain(mut cmd: Command, what: &str) -> Result<Proc> {
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {what} ({:?})", cmd.get_program()))?;
        Ok(Proc {
            child,
            what: what.to_string(),
            reaped: false,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) -> Result<()> {
        if self.reaped {
            return Ok(());
        }
        let _ = self.child.kill();
        self.child
            .wait()
            .with_context(|| format!("reaping {}", self.what))?;
        self.reaped = true;
        Ok(())
    }

    /// Has it exited? (Reaps it if so.)
    pub fn try_wait(&mut self) -> Result<Option<std::process::ExitStatus>> {
        let st = self
            .child
            .try_wait()
            .with_context(|| format!("waiting for {}", self.what))?;
        if st.is_some() {
            self.reaped = true;
        }
        Ok(st)
    }

    /// Wait up to `grace` for it to exit by itself (woken by its pidfd, so
    /// the moment it ends is seen at once), then kill it.
    pub fn wait_or_kill(&mut self, grace: Duration) -> Result<Option<std::process::ExitStatus>> {
        if self.reaped {
            return Ok(None);
        }
        // The child is not reaped, so its PID still names it.
        let fd = cf_node::pidfd::open(self.pid())
            .with_context(|| format!("pidfd_open for {}", self.what))?;
        let deadline = Instant::now() + grace;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.kill()?;
                return Ok(None);
            }
            let ready =
                cf_node::pidfd::poll_readable(&[&fd], left.min(Duration::from_millis(100)))?;
            if !ready.is_empty() {
                let st = self
                    .child
                    .wait()
                    .with_context(|| format!("reaping {}", self.what))?;
                self.reaped = true;
                return Ok(Some(st));
            }
            check_interrupted()?;
        }
    }

    /// SIGTERM, then wait up to `grace`, then SIGKILL.
    pub fn terminate(&mut self, grace: Duration) -> Result<()> {
        if self.reaped {
            return Ok(());
        }
        // SAFETY: kill takes a PID and a signal number; the child is not
        // reaped yet, so its PID still names it.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        self.wait_or_kill(grace).map(|_| ())
    }

    /// The last non-empty line of what it wrote to its piped stderr.
    pub fn stderr_tail(&mut self) -> String {
        let mut s = String::new();
        if let Some(e) = self.child.stderr.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        last_line(&s)
    }

    /// One line from its piped stdout, waiting up to `timeout`.
    pub fn read_line(&mut self, timeout: Duration) -> Result<String> {
        let what = self.what.clone();
        let out = self
            .child
            .stdout
            .as_mut()
            .with_context(|| format!("{what}: no stdout pipe"))?;
        read_line_timeout(out, timeout).with_context(|| format!("reading from {what}"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn last_line(s: &str) -> String {
    s.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("(no message)")
        .trim()
        .to_string()
}

/// Read up to a newline (byte by byte, so nothing after it is consumed),
/// polling so that a silent child cannot hang us.
fn read_line_timeout(r: &mut (impl Read + AsFd), timeout: Duration) -> Result<String> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let deadline = Instant::now() + timeout;
    let mut line = Vec::new();
    loop {
        check_interrupted()?;
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("no answer within {} s", timeout.as_secs());
        }
        let ms = left.as_millis().min(100) as u16;
        let ready = {
            let mut fds = [PollFd::new(r.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(n) => n > 0,
                Err(nix::errno::Errno::EINTR) => false,
                Err(e) => return Err(e).context("poll"),
            }
        };
        if !ready {
            continue;
        }
        let mut b = [0u8; 1];
        match r.read(&mut b) {
            Ok(0) => bail!("it exited before answering"),
            Ok(_) if b[0] == b'\n' => return Ok(String::from_utf8_lossy(&line).into_owned()),
            Ok(_) => line.push(b[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// The CPUs this process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data, all-zero is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: we pass the size of the set we own; the kernel writes into it.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return vec![0];
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: CPU_ISSET reads bit `i` of the set; `i < CPU_SETSIZE`.
        .filter(|&i| unsafe { libc::CPU_ISSET(i, &set) })
        .collect()
}

/// Run this process (all its threads that start later) on CPU `cpu` only.
pub fn pin_to_cpu(cpu: usize) -> Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        bail!("cpu {cpu} out of range");
    }
    // SAFETY: cpu_set_t is plain data, all-zero is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu < CPU_SETSIZE` (checked), so the bit is inside the set.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: we pass the size of the set we own; the kernel only reads it.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context(format!("pinning to cpu {cpu}"));
    }
    Ok(())
}

/// Turn SIGINT and SIGTERM into a flag that the benchmark loops check, so
/// that the guards still run (children killed, directory removed).
pub fn catch_interrupts() -> Result<()> {
    let flag = cf_node::signals::StopFlag::install().context("catching SIGINT and SIGTERM")?;
    let _ = STOP.set(flag);
    Ok(())
}

/// Set by SIGINT or SIGTERM (the workspace's one signal helper).
static STOP: std::sync::OnceLock<cf_node::signals::StopFlag> = std::sync::OnceLock::new();

pub fn check_interrupted() -> Result<()> {
    if STOP.get().is_some_and(|f| f.is_set()) {
        bail!("interrupted");
    }
    Ok(())
}
