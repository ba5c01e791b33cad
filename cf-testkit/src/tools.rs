//! Helpers for tests that run `cfctl` as real processes against a plex in
//! `/dev/shm`: a temporary plex removed on drop, a child-process guard that
//! SIGKILLs and reaps on drop (so a failing test leaves no process behind;
//! children also get SIGKILL if the test process itself is killed),
//! waiting for a `hold` to report its locks, and `--json` output parsed.
//!
//! Timeouts here are generous and only turn a hang into a test failure; no
//! test asserts how fast anything is.

use cf_core::ConnectorId;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use crate::{cf_node, cfctl};

/// `cfctl create` of a small plex: 16 lock entries, 4 members, 64 records each.
pub const SMALL_CREATE: &[&str] = &[
    "create",
    "--lock-entries",
    "16",
    "--members",
    "4",
    "--records",
    "64",
];

/// `cfctl --plex PLEX ARGS` to its end (no `CF_PLEX`, no crash point armed).
pub fn cfctl_in(plex: &Path, args: &[&str]) -> std::process::Output {
    Command::new(cfctl())
        .arg("--plex")
        .arg(plex)
        .args(args)
        .env_remove("CF_PLEX")
        .env_remove("CF_CRASH_AT")
        .output()
        .expect("running cfctl")
}

/// How long anything may take before the test gives up (a hang, not slowness).
pub use crate::PATIENCE;

/// A plex in a fresh directory under `/dev/shm`, removed on drop.
pub struct TestPlex {
    dir: tempfile::TempDir,
    entries: u32,
}

impl TestPlex {
    /// A plex with `entries` lock table entries (`None`: the default size).
    pub fn new(entries: Option<u32>) -> TestPlex {
        let dir = tempfile::Builder::new()
            .prefix("cf-test-")
            .tempdir_in("/dev/shm")
            .expect("temporary directory in /dev/shm");
        let mut plex = TestPlex { dir, entries: 0 };
        let mut args = vec!["create".to_string(), "--json".to_string()];
        if let Some(n) = entries {
            args.push("--lock-entries".into());
            args.push(n.to_string());
        }
        let v = plex.json_args(&args);
        plex.entries = v["lock_entries"].as_u64().expect("lock_entries") as u32;
        plex
    }

    /// A plex with a 16-entry lock table (false contention is easy).
    pub fn small() -> TestPlex {
        TestPlex::new(Some(16))
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn entries(&self) -> u32 {
        self.entries
    }

    /// A file path inside the plex directory (removed with it).
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The lock table entry of `resource` in this plex.
    pub fn entry_of(&self, resource: &str) -> u32 {
        entry_of(resource, self.entries)
    }

    /// `cfctl --plex DIR ARGS`, with no crash point and no `CF_PLEX` inherited.
    pub fn command<S: AsRef<str>>(&self, args: &[S]) -> Command {
        let mut c = Command::new(cfctl());
        c.arg("--plex").arg(self.dir.path());
        c.args(args.iter().map(|a| a.as_ref()));
        c.env_remove("CF_CRASH_AT")
            .env_remove("CF_CRASH_ONCE")
            .env_remove("CF_PLEX");
        c
    }

    /// Start `cfctl ARGS` with extra environment (e.g. `CF_CRASH_AT`).
    pub fn spawn_env<S: AsRef<str>>(&self, args: &[S], env: &[(&str, &str)]) -> Proc {
        let mut c = self.command(args);
        for (k, v) in env {
            c.env(k, v);
        }
        let what = format!(
            "{}cfctl {}",
            env.iter()
                .map(|(k, v)| format!("{k}={v} "))
                .collect::<String>(),
            args.iter()
                .map(|a| a.as_ref())
                .collect::<Vec<_>>()
                .join(" ")
        );
        Proc::spawn(c, what)
    }

    /// Start `cf-node SUB --plex DIR ARGS` (the binary built next to cfctl)
    /// with extra environment (e.g. `CF_CRASH_AT`), guarded like `cfctl`.
    pub fn spawn_node(&self, sub: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut c = Command::new(cf_node());
        c.arg(sub).arg("--plex").arg(self.dir.path()).args(args);
        c.env_remove("CF_CRASH_AT")
            .env_remove("CF_CRASH_ONCE")
            .env_remove("CF_PLEX");
        for (k, v) in env {
            c.env(k, v);
        }
        let what = format!("cf-node {sub} {}", args.join(" "));
        Proc::spawn(c, what)
    }

    pub fn spawn<S: AsRef<str>>(&self, args: &[S]) -> Proc {
        self.spawn_env(args, &[])
    }

    /// Start `cfctl ARGS` in a process group of its own, as a shell starts
    /// a foreground job (a Ctrl-C is then [`Proc::signal_group`]).
    pub fn spawn_in_group<S: AsRef<str>>(&self, args: &[S]) -> Proc {
        let mut c = self.command(args);
        c.process_group(0);
        let what = format!(
            "cfctl {}",
            args.iter()
                .map(|a| a.as_ref())
                .collect::<Vec<_>>()
                .join(" ")
        );
        Proc::spawn(c, what)
    }

    /// Run `cfctl ARGS` to completion.
    pub fn run<S: AsRef<str>>(&self, args: &[S]) -> Finished {
        self.spawn(args).finish()
    }

    /// Run `cfctl ARGS` (which must include `--json`), require exit 0, parse stdout.
    pub fn json_args<S: AsRef<str>>(&self, args: &[S]) -> Value {
        let f = self.run(args);
        assert!(f.status.success(), "{} failed: {f}", f.what);
        f.json()
    }

    /// Run `cfctl ARGS --json`, require exit 0, parse stdout.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut a: Vec<&str> = args.to_vec();
        a.push("--json");
        self.json_args(&a)
    }

    /// `cfctl try --member M --FLAG RES --json`: the answer and the exit status.
    /// `flag` is `s`, `x` or `modify`.
    pub fn try_lock(&self, member: &str, flag: &str, resource: &str) -> TryAnswer {
        let f = self.run(&[
            "try",
            "--member",
            member,
            &format!("--{flag}"),
            resource,
            "--json",
        ]);
        let code = f.status.code();
        assert!(
            matches!(code, Some(0 | 2 | 3)),
            "try answered neither granted, contention nor retained: {f}"
        );
        let v = f.json();
        let result = v["result"].as_str().unwrap_or_default().to_string();
        let expected_code = match result.as_str() {
            "granted" => 0,
            "contention" => 2,
            "retained" => 3,
            _ => panic!("unknown try result: {f}"),
        };
        assert_eq!(code, Some(expected_code), "exit status vs answer: {f}");
        TryAnswer { result, json: v }
    }

    /// Require `try` to be granted.
    pub fn assert_granted(&self, member: &str, flag: &str, resource: &str) {
        let a = self.try_lock(member, flag, resource);
        assert_eq!(
            a.result, "granted",
            "try --{flag} {resource} as {member}: {}",
            a.json
        );
    }

    /// Require `try` to answer "retained by `by`".
    pub fn assert_retained_by(&self, member: &str, flag: &str, resource: &str, by: &str) {
        let a = self.try_lock(member, flag, resource);
        assert_eq!(
            a.result, "retained",
            "try --{flag} {resource} as {member}: {}",
            a.json
        );
        assert_eq!(a.json["member"], by, "retained by whom: {}", a.json);
    }

    /// Require `try` to answer "contention", naming exactly `holders`.
    pub fn assert_contention(&self, member: &str, flag: &str, resource: &str, holders: &[&str]) {
        let a = self.try_lock(member, flag, resource);
        assert_eq!(
            a.result, "contention",
            "try --{flag} {resource} as {member}: {}",
            a.json
        );
        let mut named: Vec<String> = a.json["holders"]
            .as_array()
            .expect("holders")
            .iter()
            .map(|h| h["member"].as_str().unwrap_or_default().to_string())
            .collect();
        named.sort();
        let mut want: Vec<&str> = holders.to_vec();
        want.sort();
        assert_eq!(named, want, "contention holders: {}", a.json);
    }

    /// `cfctl cleanup --json`: one report per member cleaned up.
    pub fn cleanup(&self) -> Vec<Value> {
        self.json(&["cleanup"])
            .as_array()
            .expect("cleanup --json prints an array")
            .clone()
    }

    /// `cfctl verify --json`: the problems found (the exit status must agree).
    pub fn verify(&self) -> Vec<String> {
        let f = self.run(&["verify", "--json"]);
        let v = f.json();
        let problems: Vec<String> = v["problems"]
            .as_array()
            .expect("problems")
            .iter()
            .map(|p| p.as_str().unwrap_or("?").to_string())
            .collect();
        assert_eq!(v["ok"], problems.is_empty(), "{f}");
        assert_eq!(
            f.status.success(),
            problems.is_empty(),
            "verify's exit status must say whether it found problems: {f}"
        );
        problems
    }

    pub fn assert_verify_clean(&self) {
        let p = self.verify();
        assert!(p.is_empty(), "verify found problems: {p:#?}");
    }

    /// `display locks --json`.
    pub fn locks(&self) -> Vec<LockRow> {
        rows(&self.json(&["display", "locks"]))
    }

    /// `display retained --json`.
    pub fn retained(&self) -> Vec<LockRow> {
        rows(&self.json(&["display", "retained"]))
    }

    /// `display members --json`.
    pub fn members(&self) -> Vec<MemberRow> {
        self.json(&["display", "members"])
            .as_array()
            .expect("members array")
            .iter()
            .map(|m| MemberRow {
                name: m["name"].as_str().unwrap_or_default().into(),
                id: ConnectorId::new(m["id"].as_u64().unwrap_or(u64::MAX) as u32),
                state: m["state"].as_str().unwrap_or_default().into(),
                pid: m["pid"].as_u64().unwrap_or(0) as u32,
                alive: m["alive"].as_bool().unwrap_or(false),
                held: m["held"].as_u64().unwrap_or(0),
                retained: m["retained"].as_u64().unwrap_or(0),
            })
            .collect()
    }

    pub fn member(&self, name: &str) -> Option<MemberRow> {
        self.members().into_iter().find(|m| m.name == name)
    }

    /// The lock structure's counters from `display structures --json`.
    pub fn counters(&self) -> Counters {
        let v = self.json(&["display", "structures"]);
        let lock = v
            .as_array()
            .expect("structures array")
            .iter()
            .find(|s| s["kind"] == "lock structure")
            .expect("a lock structure")
            .clone();
        Counters {
            requests: lock["requests"].as_u64().expect("requests"),
            irlm_contention: lock["irlm_contention"].as_u64().expect("irlm_contention"),
            xes_contention: lock["xes_contention"].as_u64().expect("xes_contention"),
            false_contention: lock["false_contention"].as_u64().expect("false_contention"),
            retained_refusals: lock["retained_refusals"]
                .as_u64()
                .expect("retained_refusals"),
        }
    }

    /// Start `hold --member M --FLAG RES ...` and wait until it holds them.
    /// `locks` are `(flag, resource)` with flag `s`, `x` or `modify`.
    pub fn hold(&self, member: &str, locks: &[(&str, &str)]) -> Proc {
        self.hold_env(member, locks, &[])
    }

    pub fn hold_env(&self, member: &str, locks: &[(&str, &str)], env: &[(&str, &str)]) -> Proc {
        let mut p = self.spawn_env(&hold_args(member, locks), env);
        p.wait_holding();
        p
    }

    /// Recover failed member `member` as restart light does: first check that
    /// a lock-only connection under its name is refused (only a process that
    /// recovers its log may take its retained locks back), then run
    /// `cf-node restart-light` and check it released exactly
    /// `expect_released` and left nothing of the member behind.
    pub fn recover_light(&self, member: &str, expect_released: &[&str]) {
        let probe = unique_resource("lock-only-probe");
        let f = self.run(&["try", "--member", member, "--s", &probe]);
        assert_eq!(
            f.status.code(),
            Some(1),
            "lock-only connect as {member}: {f}"
        );
        assert!(
            f.stderr.contains("failed-persistent"),
            "lock-only connect as {member}: {f}"
        );
        let mut retained: Vec<String> = self
            .retained()
            .into_iter()
            .filter(|l| l.member == member)
            .map(|l| l.resource)
            .collect();
        retained.sort();
        let mut want: Vec<String> = expect_released.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(retained, want, "locks {member} retains before its recovery");
        let mut c = Command::new(cf_node());
        c.args(["restart-light", "--json", "--member", member, "--plex"])
            .arg(self.path())
            .env_remove("CF_CRASH_AT")
            .env_remove("CF_CRASH_ONCE")
            .env_remove("CF_PLEX");
        let f = Proc::spawn(c, format!("cf-node restart-light --member {member}")).finish();
        assert!(f.status.success(), "{f}");
        let v = f.json();
        assert_eq!(v["recovered"], true, "{f}");
        assert_eq!(v["released"], want.len() as u64, "{f}");
        assert!(
            self.locks().iter().all(|l| l.member != member),
            "{member} still holds something after its recovery: {:?}",
            self.locks()
        );
        assert!(
            self.member(member).is_none(),
            "{member} still has a connector after its recovery"
        );
    }

    /// The region is at rest with nothing in it: no member, no lock, clean.
    pub fn assert_empty_and_clean(&self) {
        assert_eq!(self.members(), vec![], "no member may be left");
        assert_eq!(self.locks(), vec![], "no lock may be left");
        self.assert_verify_clean();
    }
}

/// `hold` arguments for `(flag, resource)` pairs.
pub fn hold_args(member: &str, locks: &[(&str, &str)]) -> Vec<String> {
    let mut args = vec!["hold".to_string(), "--member".into(), member.into()];
    for (flag, res) in locks {
        args.push(format!("--{flag}"));
        args.push(res.to_string());
    }
    args
}

/// The lock table entry of `resource` in a table of `entries`.
pub fn entry_of(resource: &str, entries: u32) -> u32 {
    cf_core::Resource::new(resource.as_bytes())
        .expect("valid resource name")
        .entry(entries)
        .get()
}

/// A resource `{prefix}{n}` that hashes to the same entry as `other` in a
/// table of `entries` (and is not `other`, nor any of `avoid`).
pub fn colliding(other: &str, entries: u32, prefix: &str, avoid: &[&str]) -> String {
    let e = entry_of(other, entries);
    (0..100_000)
        .map(|i| format!("{prefix}{i}"))
        .find(|r| r != other && !avoid.contains(&r.as_str()) && entry_of(r, entries) == e)
        .expect("a colliding resource name")
}

/// A resource name not used elsewhere in this process.
pub fn unique_resource(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// Parse `display locks|retained --json`.
fn rows(v: &Value) -> Vec<LockRow> {
    v.as_array()
        .expect("locks array")
        .iter()
        .map(|l| LockRow {
            member: l["member"].as_str().unwrap_or_default().into(),
            resource: l["resource"].as_str().unwrap_or_default().into(),
            mode: l["mode"].as_str().unwrap_or_default().into(),
            entry: l["entry"].as_u64().unwrap_or(u64::MAX) as u32,
            state: l["state"].as_str().unwrap_or_default().into(),
        })
        .collect()
}

/// One row of `display locks --json`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockRow {
    pub member: String,
    pub resource: String,
    pub mode: String,
    pub entry: u32,
    pub state: String,
}

/// One row of `display members --json`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberRow {
    pub name: String,
    pub id: ConnectorId,
    pub state: String,
    pub pid: u32,
    pub alive: bool,
    pub held: u64,
    pub retained: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counters {
    pub requests: u64,
    pub irlm_contention: u64,
    pub xes_contention: u64,
    pub false_contention: u64,
    pub retained_refusals: u64,
}

/// The answer of `cfctl try --json`.
#[derive(Clone, Debug)]
pub struct TryAnswer {
    pub result: String,
    pub json: Value,
}

/// A finished process: status and everything it printed.
pub struct Finished {
    pub what: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// Stdout parsed as one JSON document.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("{}: stdout is not JSON ({e}): {self}", self.what))
    }

    pub fn assert_killed(&self) {
        assert_eq!(
            self.status.signal(),
            Some(libc::SIGKILL),
            "{} should have died by SIGKILL: {self}",
            self.what
        );
    }
}

impl std::fmt::Display for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` ended with {}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.what, self.status, self.stdout, self.stderr
        )
    }
}

/// A running `cfctl`. Dropping it SIGKILLs and reaps the process if it is
/// still there, so a failing test leaves nothing behind.
pub struct Proc {
    what: String,
    child: Child,
    lines: Receiver<String>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

impl Proc {
    pub fn spawn(mut c: Command, what: String) -> Proc {
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // If the test process itself is killed (no destructor runs), its
        // children go with it instead of holding locks forever.
        // SAFETY: the closure runs in the child between fork and exec and
        // only calls prctl(2), which is async-signal-safe, and reads errno.
        unsafe {
            c.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = c
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let out = child.stdout.take().expect("piped stdout");
        let mut err = child.stderr.take().expect("piped stderr");
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, lines) = mpsc::channel();
        let so = stdout.clone();
        let r1 = std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(mut s) = so.lock() {
                    s.push_str(&line);
                    s.push('\n');
                }
                let _ = tx.send(line);
            }
        });
        let se = stderr.clone();
        let r2 = std::thread::spawn(move || {
            let mut buf = String::new();
            let _ = err.read_to_string(&mut buf);
            if let Ok(mut s) = se.lock() {
                s.push_str(&buf);
            }
        });
        Proc {
            what,
            child,
            lines,
            stdout,
            stderr,
            readers: vec![r1, r2],
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send `sig` to the process group the process leads (a terminal's
    /// Ctrl-C); see [`TestPlex::spawn_in_group`].
    pub fn signal_group(&self, sig: Signal) {
        let _ = nix::sys::signal::killpg(Pid::from_raw(self.child.id() as i32), sig);
    }

    pub fn what(&self) -> &str {
        &self.what
    }

    fn output_so_far(&self) -> String {
        format!(
            "--- stdout ---\n{}--- stderr ---\n{}",
            self.stdout.lock().map(|s| s.clone()).unwrap_or_default(),
            self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
        )
    }

    /// Wait for a stdout line that satisfies `pred`; panics if the process
    /// ends first or nothing comes within [`PATIENCE`].
    pub fn wait_line(&mut self, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if pred(&line) => return line,
                Ok(_) => continue,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("{}: no such line yet\n{}", self.what, self.output_so_far())
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let st = self.wait();
                    panic!(
                        "{}: ended ({st}) before printing the line\n{}",
                        self.what,
                        self.output_so_far()
                    )
                }
            }
        }
    }

    /// Like [`Proc::wait_line`], but `None` if the process ends first.
    pub fn wait_line_or_end(&mut self, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if pred(&line) => return Some(line),
                Ok(_) => continue,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("{}: no such line yet\n{}", self.what, self.output_so_far())
                }
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Is this a `hold` "holding" line (text or JSON)?
    pub fn is_holding_line(line: &str) -> bool {
        line.starts_with("holding ") || line.starts_with("{\"holding\"")
    }

    /// Wait for `hold`'s "holding" line (text or JSON).
    pub fn wait_holding(&mut self) -> String {
        self.wait_line(Proc::is_holding_line)
    }

    pub fn signal(&self, sig: Signal) {
        if self.status.is_none() {
            // Not reaped yet, so the PID is still this process (or its zombie).
            let _ = nix::sys::signal::kill(Pid::from_raw(self.child.id() as i32), sig);
        }
    }

    pub fn term(&self) {
        self.signal(Signal::SIGTERM);
    }

    pub fn kill(&self) {
        self.signal(Signal::SIGKILL);
    }

    /// Is the process still running (not exited)?
    pub fn running(&mut self) -> bool {
        if self.status.is_some() {
            return false;
        }
        match self.child.try_wait() {
            Ok(Some(st)) => {
                self.status = Some(st);
                false
            }
            Ok(None) => true,
            Err(e) => panic!("{}: wait failed: {e}", self.what),
        }
    }

    /// Wait for the process to end (panics after [`PATIENCE`]; the drop then
    /// kills it).
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        let mut nap = Duration::from_micros(200);
        while self.running() {
            if Instant::now() > deadline {
                panic!(
                    "{}: still running after {PATIENCE:?}\n{}",
                    self.what,
                    self.output_so_far()
                );
            }
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(20));
        }
        self.status.expect("status after wait")
    }

    /// Wait for the end and collect everything it printed.
    pub fn finish(mut self) -> Finished {
        let status = self.wait();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        Finished {
            what: self.what.clone(),
            status,
            stdout: self.stdout.lock().map(|s| s.clone()).unwrap_or_default(),
            stderr: self.stderr.lock().map(|s| s.clone()).unwrap_or_default(),
        }
    }

    /// Wait for the end and require exit status 0.
    pub fn expect_exit_ok(&mut self) {
        let st = self.wait();
        assert!(
            st.success(),
            "{} should have exited 0, got {st}\n{}",
            self.what,
            self.output_so_far()
        );
    }

    /// Wait for the end and require death by SIGKILL.
    pub fn expect_killed(&mut self) {
        let st = self.wait();
        assert_eq!(
            st.signal(),
            Some(libc::SIGKILL),
            "{} should have died by SIGKILL, got {st}\n{}",
            self.what,
            self.output_so_far()
        );
    }

    /// SIGKILL it now and reap it.
    pub fn kill_and_reap(&mut self) -> ExitStatus {
        self.kill();
        self.wait()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The tests' seeded generator (PCG, `rand_pcg`) for random delays; print
/// the seed so a failure can be replayed.
pub struct Rng(rand_pcg::Pcg64);

impl Rng {
    /// Seeded from `CF_TEST_SEED` if set, else from the clock.
    pub fn from_env_or_clock() -> (Rng, u64) {
        use rand::SeedableRng;
        let seed = std::env::var("CF_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        (Rng(rand_pcg::Pcg64::seed_from_u64(seed)), seed)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        use rand::Rng as _;
        if n == 0 {
            0
        } else {
            self.0.random_range(0..n)
        }
    }
}

/// PIDs of the running processes whose command line contains `needle`
/// (e.g. a plex directory: the members a harness started in it).
pub fn processes_naming(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // A zombie is gone already (waiting for its parent to reap it).
            let zombie = stat
                .rfind(')')
                .is_some_and(|i| stat[i + 1..].trim_start().starts_with('Z'));
            !zombie
                && String::from_utf8_lossy(&cmd)
                    .replace('\0', " ")
                    .contains(needle)
        })
        .collect()
}

/// Poll `cond` until it holds (panics after [`PATIENCE`] with `what`).
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "gave up waiting for: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What a repaired plex must look like after a member died.
pub struct Expect<'a> {
    /// The dead member's name.
    pub dead: &'a str,
    /// Resources it must retain (modify locks), and nothing else.
    pub retained: &'a [&'a str],
    /// Resources that must be free (grantable exclusively at once).
    pub free: &'a [&'a str],
    /// `(member, resource)` held by live members, untouched by the repair.
    pub live: &'a [(&'a str, &'a str)],
}

impl TestPlex {
    /// Check the repaired outcome of a death: verify is clean; exactly the
    /// expected locks are retained (by the dead member, in modify mode, on
    /// their own entries) and answer "retained"; the free ones are granted;
    /// the live holders still hold theirs; then restart light recovers the
    /// dead member, releasing exactly the retained locks. Leaves only the live holders' locks.
    pub fn check_repaired(&self, e: &Expect) {
        self.assert_verify_clean();
        let mut retained = self.retained();
        retained.sort_by(|x, y| x.resource.cmp(&y.resource));
        let mut want: Vec<&str> = e.retained.to_vec();
        want.sort();
        let got: Vec<&str> = retained.iter().map(|l| l.resource.as_str()).collect();
        assert_eq!(got, want, "retained locks (all: {:?})", self.locks());
        for l in &retained {
            assert_eq!(l.member, e.dead, "{l:?}");
            assert_eq!(l.mode, "modify", "{l:?}");
            assert_eq!(l.state, "retained", "{l:?}");
            assert_eq!(l.entry, self.entry_of(&l.resource), "{l:?}");
        }
        // Nothing else is held but the live holders' locks.
        let mut others: Vec<(String, String)> = self
            .locks()
            .into_iter()
            .filter(|l| l.state != "retained")
            .map(|l| {
                assert_eq!(l.state, "held", "no pending request at rest: {l:?}");
                (l.member, l.resource)
            })
            .collect();
        others.sort();
        let mut live: Vec<(String, String)> = e
            .live
            .iter()
            .map(|(m, r)| (m.to_string(), r.to_string()))
            .collect();
        live.sort();
        assert_eq!(others, live, "locks other than the retained ones");
        match self.member(e.dead) {
            Some(m) => {
                assert_eq!(m.state, "failed-persistent", "{m:?}");
                assert!(!m.alive, "{m:?}");
                assert_eq!(m.retained as usize, e.retained.len(), "{m:?}");
                assert_eq!(m.held as usize, e.retained.len(), "{m:?}");
            }
            None => assert!(
                e.retained.is_empty(),
                "a member retaining locks keeps its connector"
            ),
        }
        for r in e.retained {
            self.assert_retained_by("PROBE", "s", r, e.dead);
        }
        for r in e.free {
            self.assert_granted("PROBE", "x", r);
        }
        for (m, r) in e.live {
            self.assert_contention("PROBE", "x", r, &[m]);
        }
        if self.member(e.dead).is_some() {
            self.recover_light(e.dead, e.retained);
        }
        self.assert_verify_clean();
        for r in e.retained.iter().chain(e.free) {
            self.assert_granted("PROBE", "modify", r);
        }
    }

    /// The region's lasting state, without process ids and times: for
    /// comparing two runs of one scenario.
    pub fn snapshot(&self) -> Snapshot {
        let mut locks = self.locks();
        locks.sort_by(|x, y| (&x.member, &x.resource).cmp(&(&y.member, &y.resource)));
        let mut members: Vec<_> = self
            .members()
            .into_iter()
            .map(|m| (m.name, m.state, m.held, m.retained))
            .collect();
        members.sort();
        Snapshot { locks, members }
    }
}

/// See [`TestPlex::snapshot`]: locks, and members as (name, state, held, retained).
#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub locks: Vec<LockRow>,
    pub members: Vec<(String, String, u64, u64)>,
}
