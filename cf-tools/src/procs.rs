//! Member processes started by `cfctl demo` and `cfctl sim`: `cf-node run`
//! children whose stdout we keep, killed and reaped when dropped.

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};

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
        let mut child = Command::new(exe)
            .arg("run")
            .arg("--plex")
            .arg(plex)
            .arg("--member")
            .arg(name)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let out = child.stdout.take().context("member stdout")?;
        let mut out = BufReader::new(out);
        let mut line = String::new();
        out.read_line(&mut line)?;
        if !line.contains("running") {
            let _ = child.kill();
            let _ = child.wait();
            bail!("member {name} did not start");
        }
        Ok(MemberProc {
            name: name.to_string(),
            child,
            out,
        })
    }

    /// Has the process ended by itself (e.g. at a crash point)? Reaps it if so.
    pub fn ended(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, read the final summary line, reap. Returns the line and whether
    /// the member exited with status 0.
    pub fn stop(&mut self) -> (String, bool) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let mut line = String::new();
        let _ = self.out.read_line(&mut line);
        let ok = self.child.wait().map(|s| s.success()).unwrap_or(false);
        (line.trim().to_string(), ok)
    }
}

impl Drop for MemberProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill9();
        }
    }
}

/// A plex directory removed on drop unless kept.
pub struct TempPlex {
    pub dir: PathBuf,
    pub keep: bool,
}

impl TempPlex {
    /// A fresh directory for `what` under /dev/shm (or the temp dir).
    pub fn fresh(what: &str) -> TempPlex {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        TempPlex {
            dir: base.join(format!("cf-{what}-{}", std::process::id())),
            keep: false,
        }
    }
}

impl Drop for TempPlex {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
