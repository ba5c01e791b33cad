//! Member processes started by `cfctl demo` and `cfctl sim`: `cf-node run`
//! children whose stdout we keep, killed and reaped when dropped.

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};

/// The cf-node binary, which is built next to cfctl.
pub fn cf_node_binary() -> Result<PathBuf> {
    let me = std::env::current_exe().context("finding cfctl's own path")?;
    let p = me.with_file_name("cf-node");
    if !p.exists() {
        bail!(
            "cf-node not found next to cfctl ({}): build the whole workspace",
            p.display()
        );
    }
    Ok(p)
}

/// Make a child die with us (SIGKILL when this process ends, however it
/// ends), in a process group of its own (a Ctrl-C at the terminal reaches
/// only us, and we stop the members in order).
fn tie_to_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id();
    // SAFETY: the closure runs in the child between fork and exec and calls
    // only async-signal-safe functions (prctl, getppid, setpgid).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent died before the prctl: nobody is left to stop us.
            if libc::getppid() as u32 != parent {
                return Err(std::io::Error::other("parent ended"));
            }
            if libc::setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// One running `cf-node run`.
pub struct MemberProc {
    pub name: String,
    pub child: Child,
    out: BufReader<ChildStdout>,
}

impl MemberProc {
    /// Start `cf-node run --plex DIR --member NAME ARGS...` and wait for its
    /// "running" line.
    pub fn start(exe: &Path, plex: &Path, name: &str, args: &[String]) -> Result<MemberProc> {
        Self::start_with_env(exe, plex, name, args, &[])
    }

    /// As [`MemberProc::start`], with extra environment variables.
    pub fn start_with_env(
        exe: &Path,
        plex: &Path,
        name: &str,
        args: &[String],
        env: &[(String, String)],
    ) -> Result<MemberProc> {
        let mut m = Self::spawn(exe, plex, name, args, env)?;
        if let Err(e) = m.wait_running() {
            m.kill9();
            return Err(e);
        }
        Ok(m)
    }

    /// Start `cf-node run --plex DIR --member NAME ARGS...` without waiting
    /// for it (see [`MemberProc::wait_running`]).
    pub fn spawn(
        exe: &Path,
        plex: &Path,
        name: &str,
        args: &[String],
        env: &[(String, String)],
    ) -> Result<MemberProc> {
        let mut cmd = Command::new(exe);
        cmd.arg("run")
            .arg("--plex")
            .arg(plex)
            .arg("--member")
            .arg(name)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        tie_to_parent(&mut cmd);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let out = match child.stdout.take() {
            Some(o) => BufReader::new(o),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("member {name}: no stdout");
            }
        };
        Ok(MemberProc {
            name: name.to_string(),
            child,
            out,
        })
    }

    /// Wait for the member's "running" line (it has connected, recovered
    /// itself if needed, and started its workload). An error if it ended or
    /// printed something else first; the process is left as it is.
    pub fn wait_running(&mut self) -> Result<()> {
        let mut line = String::new();
        self.out.read_line(&mut line)?;
        if !line.contains("running") {
            bail!("member {} did not start", self.name);
        }
        Ok(())
    }

    /// The member's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if the process has ended (reaping it).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Wait for the process to end, up to `limit`; its status if it did.
    pub fn wait_for(&mut self, limit: std::time::Duration) -> Option<ExitStatus> {
        let t = std::time::Instant::now();
        loop {
            if let Some(s) = self.try_status() {
                return Some(s);
            }
            if t.elapsed() >= limit {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, read the final summary line, reap. Returns the line and whether
    /// the member exited with status 0.
    pub fn stop(&mut self) -> (String, bool) {
        let (line, status) = self.stop_status();
        (line, status.is_some_and(|s| s.success()))
    }

    /// As [`MemberProc::stop`], returning the exit status (None if it could
    /// not be read).
    pub fn stop_status(&mut self) -> (String, Option<ExitStatus>) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let mut line = String::new();
        let _ = self.out.read_line(&mut line);
        let status = self.child.wait().ok();
        (line.trim().to_string(), status)
    }
}

impl Drop for MemberProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill9();
        }
    }
}

/// A plex directory removed on drop unless kept: a fresh one (`tempfile`)
/// or one the user named (never removed).
pub struct TempPlex {
    pub dir: PathBuf,
    pub keep: bool,
    guard: Option<tempfile::TempDir>,
}

impl TempPlex {
    /// A fresh directory `cf-WHAT-XXXXXX` under /dev/shm (or the temp dir).
    pub fn fresh(what: &str) -> Result<TempPlex> {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let guard = tempfile::Builder::new()
            .prefix(&format!("cf-{what}-"))
            .tempdir_in(&base)
            .with_context(|| format!("creating a directory under {}", base.display()))?;
        Ok(TempPlex {
            dir: guard.path().to_path_buf(),
            keep: false,
            guard: Some(guard),
        })
    }

    /// The directory the user named: its last component is created if
    /// missing (never its parents), and it is kept.
    pub fn named(dir: &Path) -> Result<TempPlex> {
        crate::plexdir::create_last(dir, false)?;
        Ok(TempPlex {
            dir: dir.to_path_buf(),
            keep: true,
            guard: None,
        })
    }
}

impl Drop for TempPlex {
    fn drop(&mut self) {
        if self.keep {
            if let Some(g) = self.guard.take() {
                let _ = g.keep();
            }
        }
    }
}
