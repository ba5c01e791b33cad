//! Helpers for the multi-process tests of cf-node: a temporary plex in
//! `/dev/shm` (region + accounts file) removed on drop, a guard for a
//! `cf-node` process that SIGKILLs and reaps it on drop (so a failing test
//! leaves no process behind), waiting for its `running` line, freezing members
//! inside a transaction, and read-only views of the region for assertions.
//!
//! Every wait has a generous deadline that only turns a hang into a failure
//! (with a dump of the plex); no test asserts how fast anything happens.

use cf_core::connector::liveness;
use cf_core::events::{self, Event, EventData, EventKind};
use cf_core::inspect::{self, LockView, MemberView};
use cf_core::requests::{self, RequestView};
use cf_core::ConnectorId;
use cf_core::{CreateOptions, Member, Mode, Plex, Region, Sizes, TryOutcome};
use cf_node::store::Store;
use cf_node::wal::{self, LogRecord};
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use crate::cf_node;

/// How long anything may take before a test gives up (a hang, not slowness).
pub use crate::PATIENCE;

/// Accounts in a test plex, and their initial balance.
pub const ACCOUNTS: u64 = 64;
pub const BALANCE: i64 = 1000;

/// The events of a failure and its recovery (the others are left out of
/// ordering checks).
pub const RECOVERY_KINDS: [EventKind; 10] = [
    EventKind::Detected,
    EventKind::CleanedUp,
    EventKind::RequestPosted,
    EventKind::Claimed,
    EventKind::RestartLightStarted,
    EventKind::BackedOut,
    EventKind::Released,
    EventKind::TerminatedNormally,
    EventKind::RestartLightFailed,
    EventKind::RecoveryCompleted,
];

/// Tests that start several processes run one at a time (2 cores).
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Wait until `cond` gives `Some`, or panic after [`PATIENCE`] with `what` and
/// the diagnostics `diag` produces.
pub fn wait_until<T>(
    what: &str,
    mut cond: impl FnMut() -> Option<T>,
    diag: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("gave up waiting for {what}\n{}", diag());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A plex in a fresh directory under `/dev/shm`: a region (4096 lock
/// entries, 8 members, 256 records each) and an accounts file. Removed on
/// drop (declare it before the processes that use it, so they go first).
pub struct TestPlex {
    region: Arc<Region>,
    dir: tempfile::TempDir,
}

impl Default for TestPlex {
    fn default() -> TestPlex {
        TestPlex::new()
    }
}

impl TestPlex {
    pub fn new() -> TestPlex {
        let dir = tempfile::Builder::new()
            .prefix("cf-node-test-")
            .tempdir_in("/dev/shm")
            .expect("a temporary directory in /dev/shm");
        let plex = Plex {
            dir: dir.path().into(),
        };
        let region = Region::create(
            &plex,
            &CreateOptions {
                sizes: Sizes {
                    lock_entries: 1 << 12,
                    members: 8,
                    records_per_member: 256,
                },
                group_access: false,
            },
        )
        .expect("creating the region");
        Store::create(dir.path(), ACCOUNTS, BALANCE, false).expect("creating the accounts");
        TestPlex {
            region: Arc::new(region),
            dir,
        }
    }

    /// Like [`TestPlex::new`], keeping the history of committed
    /// transactions (`history/`), so [`TestPlex::assert_history_consistent`]
    /// can check every account.
    pub fn with_history() -> TestPlex {
        let plex = TestPlex::new();
        cf_node::history::create_dir(plex.path(), false).expect("creating history/");
        plex
    }

    /// [`TestPlex::with_history`] with these failure-detection settings.
    pub fn with_detection(interval: Duration, isolate: liveness::Isolate) -> TestPlex {
        let plex = TestPlex::with_history();
        liveness::set_settings(
            plex.region(),
            liveness::Settings {
                interval,
                isolate,
                ..Default::default()
            },
        )
        .expect("failure detection settings");
        plex
    }

    /// Events of `kind` about `name` since `since`, of any kind (unlike
    /// [`TestPlex::count_events`], which counts recovery events only).
    pub fn count_any(&self, name: &str, since: u64, kind: EventKind) -> usize {
        self.events()
            .iter()
            .filter(|e| e.seq >= since && e.member == name && e.kind() == kind)
            .count()
    }

    /// Wait for connector `id`'s next beat; its heartbeat word then.
    pub fn next_beat(&self, id: ConnectorId) -> u64 {
        let first = cf_core::testing::read_heartbeat(self.region(), id);
        wait_until(
            "a member to beat",
            || {
                let hb = cf_core::testing::read_heartbeat(self.region(), id);
                (hb != first).then_some(hb)
            },
            || format!("connector {id}"),
        )
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn region(&self) -> &Arc<Region> {
        &self.region
    }

    /// A file path inside the plex directory (removed with it).
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    // ---- processes ----

    /// Start `cf-node run --plex DIR --member NAME --buffer-pool-mb 1 --json ARGS`
    /// with extra environment, and wait for its `running` line.
    pub fn start(&self, name: &str, args: &[&str], env: &[(&str, &str)]) -> Node {
        let node = self.spawn(name, args, env);
        node.wait_running();
        node
    }

    /// Run `cf-node restart-light --plex DIR --member NAME --json` to its end.
    pub fn restart_light(&self, name: &str, env: &[(&str, &str)]) -> Finished {
        let mut c = Command::new(cf_node());
        c.arg("restart-light")
            .arg("--plex")
            .arg(self.path())
            .arg("--member")
            .arg(name)
            .arg("--json")
            .env_remove("CF_CRASH_AT")
            .env_remove("CF_CRASH_ONCE")
            .env_remove("CF_PLEX");
        for (k, v) in env {
            c.env(k, v);
        }
        Node::spawn(c, name).finish()
    }

    /// Like [`TestPlex::start`], without waiting.
    pub fn spawn(&self, name: &str, args: &[&str], env: &[(&str, &str)]) -> Node {
        let mut c = Command::new(cf_node());
        c.arg("run")
            .arg("--plex")
            .arg(self.path())
            .arg("--member")
            .arg(name)
            .args(["--buffer-pool-mb", "1", "--json"])
            .args(args)
            .env_remove("CF_CRASH_AT")
            .env_remove("CF_CRASH_ONCE")
            .env_remove("CF_PLEX");
        for (k, v) in env {
            c.env(k, v);
        }
        Node::spawn(c, name)
    }

    // ---- views ----

    pub fn events(&self) -> Vec<Event> {
        events::read_all(&self.region)
    }

    /// The sequence number the next event will get (to look only at what follows).
    pub fn next_event(&self) -> u64 {
        events::next_seq(&self.region)
    }

    /// Recovery events about member `name` since sequence number `since`.
    pub fn recovery_events(&self, name: &str, since: u64) -> Vec<Event> {
        events::read_since(&self.region, since)
            .into_iter()
            .filter(|e| e.member == name && RECOVERY_KINDS.contains(&e.kind()))
            .collect()
    }

    pub fn count_events(&self, name: &str, since: u64, kind: EventKind) -> usize {
        self.recovery_events(name, since)
            .iter()
            .filter(|e| e.kind() == kind)
            .count()
    }

    pub fn members(&self) -> Vec<MemberView> {
        inspect::members(&self.region).expect("reading the connector table")
    }

    /// The connector slot of member `name`, if it has one.
    pub fn member(&self, name: &str) -> Option<MemberView> {
        self.members().into_iter().find(|m| m.name == name)
    }

    pub fn locks(&self) -> Vec<LockView> {
        inspect::locks(&self.region).expect("reading the locks")
    }

    /// Every record (held or pending) of member `name`.
    pub fn locks_of(&self, name: &str) -> Vec<LockView> {
        self.locks()
            .into_iter()
            .filter(|l| l.member == name)
            .collect()
    }

    /// The held modify locks of member `name`, by resource.
    pub fn modify_locks_of(&self, name: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .locks_of(name)
            .into_iter()
            .filter(|l| l.held && l.mode == Mode::Modify)
            .map(|l| l.resource)
            .collect();
        v.sort();
        v
    }

    /// The retained locks of member `name`, by resource.
    pub fn retained_of(&self, name: &str) -> Vec<String> {
        let mut v: Vec<String> = inspect::retained(&self.region)
            .expect("reading the retained locks")
            .into_iter()
            .filter(|l| l.member == name)
            .map(|l| l.resource)
            .collect();
        v.sort();
        v
    }

    pub fn requests(&self) -> Vec<RequestView> {
        requests::list(&self.region).expect("reading the restart requests")
    }

    /// The readable records of member `name`'s log.
    pub fn log(&self, name: &str) -> Vec<LogRecord> {
        wal::read_log(&wal::log_path(self.path(), name))
            .expect("reading a log")
            .records
            .into_iter()
            .map(|(_, r)| r)
            .collect()
    }

    /// Is `name` inside a transaction (its log ends with an UPDATE)?
    pub fn in_transaction(&self, name: &str) -> bool {
        matches!(self.log(name).last(), Some(LogRecord::Update { .. }))
    }

    /// Is member `name` completely gone: no slot, no record, nothing
    /// retained, and no restart request outstanding for its former slot
    /// `id` (if known)?
    pub fn is_recovered(&self, name: &str, id: Option<ConnectorId>) -> bool {
        self.member(name).is_none()
            && self.locks_of(name).is_empty()
            && id.is_none_or(|id| !self.requests().iter().any(|r| r.member_id == id))
    }

    /// Connect in this process as `PROBE`, ask for `resource` in modify mode
    /// once (releasing it if granted), disconnect, and return the answer.
    pub fn probe(&self, resource: &str) -> TryOutcome {
        let m = Member::connect(self.region.clone(), "PROBE").expect("probe connects");
        let mut h = m.holder().expect("probe holder");
        let out = h
            .try_lock(resource.as_bytes(), Mode::Modify)
            .expect("probe request");
        if let TryOutcome::Granted(id) = out {
            h.unlock(id).expect("probe unlock");
        }
        drop(h);
        m.disconnect().expect("probe disconnects");
        out
    }

    /// The data adds up and `verify` finds nothing wrong (call when quiet).
    pub fn assert_balanced_and_clean(&self) {
        let problems = inspect::verify(&self.region);
        assert!(
            problems.is_empty(),
            "verify: {problems:#?}\n{}",
            self.dump()
        );
        let store = Store::open(self.path()).expect("opening the accounts");
        assert_eq!(
            store.total(),
            store.expected_total(),
            "the total of the balances changed\n{}",
            self.dump()
        );
    }

    /// Every account holds exactly the effect of the committed transactions
    /// (archived in `history/` or still in the logs), and nothing is left
    /// unfinished (call when quiet). Returns what the checker read.
    pub fn assert_history_consistent(&self) -> cf_node::history::Counts {
        let c = cf_node::history::check(self.path())
            .unwrap_or_else(|e| panic!("the history check failed: {e}\n{}", self.dump()));
        assert!(c.is_consistent(), "{c}\n{}", self.dump());
        assert_eq!(c.counts().unfinished, 0, "{c}\n{}", self.dump());
        c.counts().clone()
    }

    /// Everything a failing test wants to see.
    pub fn dump(&self) -> String {
        let mut s = String::from("--- members\n");
        for m in inspect::members(&self.region).unwrap_or_default() {
            s += &format!(
                "  {} #{} {} pid {} alive {} held {} retained {}\n",
                m.name,
                m.id,
                m.state.as_str(),
                m.pid,
                m.alive,
                m.held,
                m.retained
            );
        }
        s += "--- locks\n";
        for l in inspect::locks(&self.region).unwrap_or_default() {
            s += &format!(
                "  {} {} {} held {} retained {}\n",
                l.member, l.resource, l.mode, l.held, l.retained
            );
        }
        s += "--- requests\n";
        for r in requests::list(&self.region).unwrap_or_default() {
            s += &format!("  {r:?}\n");
        }
        s += "--- events\n";
        for e in events::read_all(&self.region) {
            s += &format!(
                "  #{} {} {} by {:?} {:?}\n",
                e.seq,
                e.kind().as_str(),
                e.member,
                e.by,
                e.data
            );
        }
        s
    }

    /// Wait until `cond` holds (panics with a dump after [`PATIENCE`]).
    pub fn wait(&self, what: &str, mut cond: impl FnMut() -> bool) {
        wait_until(what, || cond().then_some(()), || self.dump());
    }

    /// Stop every node in `nodes` (SIGSTOP) at a moment when each is inside a
    /// transaction (log ending with an UPDATE) holding exactly two modify
    /// locks: stop, look, and if not, continue and try again. Returns the
    /// modify locks each holds.
    pub fn freeze_inside_transaction(&self, nodes: &[&Node]) -> Vec<Vec<String>> {
        wait_until(
            "the members to be inside a transaction",
            || {
                for n in nodes {
                    n.signal(Signal::SIGSTOP);
                }
                for n in nodes {
                    n.wait_stopped();
                }
                let held: Vec<Vec<String>> = nodes
                    .iter()
                    .map(|n| self.modify_locks_of(&n.name))
                    .collect();
                let inside = nodes
                    .iter()
                    .zip(&held)
                    .all(|(n, h)| h.len() == 2 && self.in_transaction(&n.name));
                if inside {
                    return Some(held);
                }
                for n in nodes {
                    n.signal(Signal::SIGCONT);
                }
                std::thread::sleep(Duration::from_millis(3));
                None
            },
            || self.dump(),
        )
    }

    /// Check the recovery events of `name` since `since`: exactly
    /// detected → cleaned_up → request_posted → claimed → restart_light_started
    /// → backed_out → released → terminated_normally → recovery_completed
    /// (one claim, one restart light, no failure), by survivors, with at
    /// least `min_backed_out` transactions backed out and (if given) `released`
    /// locks released. Returns the events.
    pub fn assert_clean_recovery(
        &self,
        name: &str,
        since: u64,
        min_backed_out: u64,
        released: Option<u64>,
    ) -> Vec<Event> {
        let ev = self.recovery_events(name, since);
        let kinds: Vec<EventKind> = ev.iter().map(|e| e.kind()).collect();
        assert_eq!(
            kinds,
            [
                EventKind::Detected,
                EventKind::CleanedUp,
                EventKind::RequestPosted,
                EventKind::Claimed,
                EventKind::RestartLightStarted,
                EventKind::BackedOut,
                EventKind::Released,
                EventKind::TerminatedNormally,
                EventKind::RecoveryCompleted,
            ],
            "recovery events of {name}\n{}",
            self.dump()
        );
        let by = |k: EventKind| ev.iter().find(|e| e.kind() == k).unwrap();
        let claimer = by(EventKind::Claimed)
            .by
            .clone()
            .expect("claimed by someone");
        assert_ne!(claimer, name, "a member cannot claim its own death");
        assert!(
            matches!(
                by(EventKind::Claimed).data,
                EventData::Claimed {
                    taken_over: false,
                    ..
                }
            ),
            "not a takeover"
        );
        assert_eq!(
            by(EventKind::RestartLightStarted).by.as_deref(),
            Some(claimer.as_str()),
            "restart light started by its claimer"
        );
        assert!(by(EventKind::Detected).by.is_some());
        let EventData::BackedOut { transactions, .. } = by(EventKind::BackedOut).data else {
            unreachable!("found by its kind")
        };
        assert!(
            transactions >= min_backed_out,
            "{name}: backed out {transactions} transactions, expected at least {min_backed_out}"
        );
        if let Some(n) = released {
            assert_eq!(
                by(EventKind::Released).data,
                EventData::Released { locks: n },
                "{name}: locks released"
            );
        }
        ev
    }
}

/// A running `cf-node` process: SIGKILLed and reaped on drop.
pub struct Node {
    pub name: String,
    child: Option<Child>,
    pid: u32,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    stdout_reader: Option<JoinHandle<()>>,
}

/// A node that ended.
#[derive(Debug)]
pub struct Finished {
    pub name: String,
    pub status: ExitStatus,
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
}

impl Finished {
    /// A number field of the JSON summary line (the last line of stdout).
    pub fn summary(&self, key: &str) -> u64 {
        let line = self
            .stdout
            .iter()
            .rev()
            .find(|l| l.starts_with('{'))
            .unwrap_or_else(|| panic!("{}: no JSON summary: {self:?}", self.name));
        json_u64(line, key).unwrap_or_else(|| panic!("{}: no {key} in {line}", self.name))
    }

    pub fn assert_success(&self) {
        assert!(self.status.success(), "{} failed: {self:?}", self.name);
    }
}

/// Read the number after `"key":` in a one-line JSON object.
pub fn json_u64(line: &str, key: &str) -> Option<u64> {
    let pat = format!("\"{key}\":");
    let rest = &line[line.find(&pat)? + pat.len()..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn read_lines(
    r: impl std::io::Read + Send + 'static,
    into: Arc<Mutex<Vec<String>>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            match line {
                Ok(l) => into.lock().unwrap_or_else(|p| p.into_inner()).push(l),
                Err(_) => break,
            }
        }
    })
}

impl Node {
    fn spawn(mut c: Command, name: &str) -> Node {
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("starting cf-node");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let out = read_lines(child.stdout.take().expect("stdout"), stdout.clone());
        // The stderr reader is never joined: restart-light children inherit
        // the pipe and may outlive a killed member.
        read_lines(child.stderr.take().expect("stderr"), stderr.clone());
        Node {
            name: name.into(),
            pid: child.id(),
            child: Some(child),
            stdout,
            stderr,
            stdout_reader: Some(out),
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn stdout(&self) -> Vec<String> {
        self.stdout
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn stderr(&self) -> Vec<String> {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Send a signal (only while the process is not reaped, so its PID is still its own).
    pub fn signal(&self, sig: Signal) {
        if self.child.is_some() {
            let _ = signal::kill(Pid::from_raw(self.pid as i32), sig);
        }
    }

    /// Is the process still running (not exited)?
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Wait for the `member NAME running:` line.
    pub fn wait_running(&self) {
        let want = format!("member {} running:", self.name);
        let deadline = Instant::now() + PATIENCE;
        loop {
            if self.stdout().iter().any(|l| l.starts_with(&want)) {
                return;
            }
            let exited = {
                // try_wait needs &mut; peek through /proc instead.
                let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid));
                stat.map_or(true, |s| proc_state(&s) == Some('Z'))
            };
            if exited || Instant::now() > deadline {
                panic!(
                    "{} did not start (exited: {exited}): stdout {:?} stderr {:?}",
                    self.name,
                    self.stdout(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Wait until a SIGSTOP has taken effect in every thread.
    pub fn wait_stopped(&self) {
        wait_until(
            "a process to stop",
            || all_threads_stopped(self.pid).then_some(()),
            || format!("{} pid {}", self.name, self.pid),
        );
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("node already ended");
        let _ = child.kill();
        child.wait().expect("reaping cf-node")
    }

    /// SIGTERM, wait for the exit (and the summary on stdout).
    pub fn stop(&mut self) -> Finished {
        self.signal(Signal::SIGCONT);
        self.signal(Signal::SIGTERM);
        self.finish()
    }

    /// Wait for the process to end by itself.
    pub fn finish(&mut self) -> Finished {
        let mut child = self.child.take().expect("node already ended");
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(st) = child.try_wait().expect("waiting for cf-node") {
                break st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} did not exit: stdout {:?} stderr {:?}",
                    self.name,
                    self.stdout(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        // Nothing else holds its stdout (restart-light children get /dev/null).
        if let Some(r) = self.stdout_reader.take() {
            let _ = r.join();
        }
        // Give the stderr reader a moment to drain what was written before the exit.
        std::thread::sleep(Duration::from_millis(20));
        Finished {
            name: self.name.clone(),
            status,
            stdout: self.stdout(),
            stderr: self.stderr(),
        }
    }

    /// The exit signal of a finished status, if any.
    pub fn signal_of(st: &ExitStatus) -> Option<i32> {
        st.signal()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Is every thread of `pid` stopped (or the process gone)?
pub fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return true;
    };
    tasks.flatten().all(|t| {
        std::fs::read_to_string(t.path().join("stat")).map_or(true, |s| {
            matches!(proc_state(&s), Some('T' | 't' | 'Z' | 'X'))
        })
    })
}

/// Field 3 (state) of a `/proc/<pid>/stat` line.
pub fn proc_state(stat: &str) -> Option<char> {
    let close = stat.rfind(')')?;
    stat[close + 1..]
        .split_ascii_whitespace()
        .next()?
        .chars()
        .next()
}

/// Stop a process that is not our child (a restart light) through a pidfd,
/// so a reused PID is never hit; if it was still alive then, kill it and
/// return true. `want` must occur in its command line.
pub fn stop_and_kill(pid: u32, want: &[&str]) -> bool {
    let Ok(fd) = cf_node::pidfd::open(pid) else {
        return false;
    };
    // The pidfd now pins one process; make sure it is the one we mean.
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if !want.iter().all(|w| args.iter().any(|a| a == w)) {
        return false;
    }
    // Through the pidfd (`rustix`): a reused PID is never hit.
    let send = |sig: rustix::process::Signal| rustix::process::pidfd_send_signal(&fd, sig);
    if send(rustix::process::Signal::STOP).is_err() {
        return false;
    }
    // Stopped (alive) or already exiting?
    let alive = wait_until(
        "a restart light to stop",
        || match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => Some(false),
            Ok(s) => match proc_state(&s) {
                Some('T' | 't') => Some(true),
                Some('Z' | 'X') | None => Some(false),
                _ => None,
            },
        },
        || format!("pid {pid}"),
    );
    let r = send(rustix::process::Signal::KILL);
    assert!(
        r.is_ok() || !alive,
        "SIGKILL to a stopped restart light failed: {r:?}"
    );
    alive
}

/// Watch for `d`, returning early (true) as soon as `bad` holds: for
/// asserting that something does *not* happen within a bounded number of
/// a protocol's periods.
pub fn happens_within(d: Duration, mut bad: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if bad() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bad()
}
