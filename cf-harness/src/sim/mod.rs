//! `cfctl sim`: many members as real processes, faults injected from a seeded
//! schedule, and a report with a verdict per invariant that can be checked
//! after the fact.
//!
//! The sim keeps a record of every member process it starts (PID, start,
//! armed crash point, and when and how it ended: killed by a fault, dead at
//! its crash point, ended by itself, stopped), reads the region's events as
//! they come (re-reading an event slot that was still being written), and
//! checks both against each other at the end (`check.rs`): a death is matched
//! to the `detected` event of its PID, not to the member's name.
//!
//! With `--stop-members` a fault may SIGSTOP a member instead of killing it
//! (never the last one running): it keeps its name until a survivor declares
//! its status update missing and fences it (after the plex's failure
//! detection interval, `--failure-detection-interval`); its death is the
//! stop, and the report gives stop-to-fenced and stop-to-detected apart from
//! the detection times of kills. The report also shows each step of the
//! recoveries (`check::STEPS`), from the kill.

pub mod check;
pub mod points;

use crate::outln;
use crate::procs::{cf_node_binary, MemberProc, TempPlex};
use anyhow::{bail, Result};
use cf_core::events::{self, Event, EventData, EventKind};
use cf_core::{inspect, requests, CreateOptions, Plex, Region, Sizes};
use cf_node::stats::Summary;
use cf_node::store::Store;
use check::{EndHow, ProcLife};
use clap::Args;
use points::{Arming, Planner, Scale};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, ExitStatus};
use std::time::{Duration, Instant};

/// Set by SIGINT or SIGTERM: stop injecting faults, let the recoveries
/// finish, stop the members and report (a second signal ends the sim at once;
/// its members die with it by their parent-death signal).
static STOP: std::sync::OnceLock<cf_node::signals::StopFlag> = std::sync::OnceLock::new();

fn catch_stop_signals() -> Result<()> {
    let flag = cf_node::signals::StopFlag::install()
        .map_err(|e| anyhow::anyhow!("installing signal handlers: {e}"))?;
    let _ = STOP.set(flag);
    Ok(())
}

fn interrupted() -> bool {
    STOP.get().is_some_and(|f| f.is_set())
}

/// Lock table entries of the sim's region unless told.
const DEFAULT_LOCK_ENTRIES: u32 = 1 << 16;
/// An event slot still being written is read again for this long before it
/// is taken as torn (its writer was killed mid-write).
const TORN_AFTER: Duration = Duration::from_millis(500);

#[derive(Args, Serialize)]
#[command(after_help = crate::exit::TABLE)]
pub struct SimArgs {
    /// Members to run, 2 to 16 (kept at this number: a killed member is restarted after its recovery)
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(2..=16))]
    pub members: u32,
    /// Worker threads of each member running the workload, 1 to 16 (cf-node run --threads)
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub threads: u32,
    /// Lock table entries of the sim's region: a power of two from 16 to 1073741824 (2^30).
    /// A small table puts false contention and the latched path on most requests
    #[arg(long, default_value_t = DEFAULT_LOCK_ENTRIES)]
    pub lock_entries: u32,
    /// Record entries per member: a multiple of 64, at least 64 × (threads + 2), at most 2^24
    #[arg(long, default_value_t = 1024)]
    pub records_per_member: u32,
    /// Longest run time, more than 0: 30s, 1.5s, 2m (a bare number is seconds). The run also
    /// ends after --kills faults
    #[arg(long, default_value = "10", value_parser = crate::duration::secs)]
    #[serde(serialize_with = "ser_secs")]
    pub duration: Duration,
    /// Mean time between faults, at least 1ms: 200ms, 1.5s (a bare number is milliseconds)
    #[arg(long, default_value = "500", value_parser = crate::duration::millis)]
    #[serde(serialize_with = "ser_secs")]
    pub kill_every: Duration,
    /// Stop after this many faults
    #[arg(long)]
    pub kills: Option<u64>,
    /// Seed of the fault schedule, the crash points and the members' workloads (same seed,
    /// same schedule and the same choices of accounts)
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Pause between the two legs of a transfer: 500us, 2ms (a bare number is microseconds)
    #[arg(long, default_value = "500", value_parser = crate::duration::micros)]
    #[serde(serialize_with = "ser_secs", rename = "pause")]
    pub pause_us: Duration,
    /// Also kill restarters: the member that claimed a restart request, or the restart-light process
    #[arg(long)]
    pub kill_restarters: bool,
    /// Every this long, kill every member at once, at least 1ms: 5s (a bare number is milliseconds)
    #[arg(long, value_parser = crate::duration::millis)]
    #[serde(serialize_with = "ser_opt_secs")]
    pub kill_all_every: Option<Duration>,
    /// Also stop members (SIGSTOP) as faults, one fault in three: each must be declared
    /// status-update-missing after the failure detection interval, fenced by a survivor
    /// (SIGKILL after the identity check) and recovered like a killed one
    #[arg(long)]
    pub stop_members: bool,
    /// The plex's failure detection interval, 100ms to 1h (cfctl create
    /// --failure-detection-interval; a bare number is seconds)
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = crate::duration::secs)]
    #[serde(serialize_with = "ser_secs")]
    pub failure_detection_interval: Duration,
    /// Accounts in the bank, at least 2 and at least --tx-size (fewer accounts, more real contention)
    #[arg(long, default_value_t = 1000)]
    pub accounts: u64,
    /// Buffer pool of each member, in MiB, 0 to 65536
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(0..=65536))]
    pub buffer_pool_mb: u64,
    /// Which accounts a transaction picks: uniform, zipf:S (e.g. zipf:0.99), hot:K:P (K accounts
    /// take P percent of the accesses, e.g. hot:10:90)
    #[arg(long, default_value = "uniform")]
    #[serde(serialize_with = "ser_display")]
    pub skew: cf_node::bank::Skew,
    /// Percent of transactions that only read (share locks, no log record), 0 to 100
    #[arg(long, default_value_t = 0.0)]
    pub read_pct: f64,
    /// Accounts a transaction touches, 2 to 16
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(2..=16))]
    pub tx_size: u32,
    /// Pause of each worker between transactions: 1ms (a bare number is microseconds)
    #[arg(long, default_value = "0", value_parser = crate::duration::micros)]
    #[serde(serialize_with = "ser_secs")]
    pub think: Duration,
    /// Transactions per second of each worker thread (a fixed rate, open loop; default: closed loop)
    #[arg(long)]
    pub rate: Option<f64>,
    /// The order of a transaction's account locks (cf-node run --lock-order): sorted, or random
    /// (transactions deadlock on purpose; each cycle's victim gives its locks back before
    /// writing and is counted in `deadlocks`, with its detection latency)
    #[arg(long, default_value = "sorted", value_name = "sorted|random")]
    #[serde(serialize_with = "ser_display")]
    pub lock_order: cf_node::bank::LockOrder,
    /// Members lock like a data-sharing workload (cf-node run --hierarchy): IX modify on the
    /// table, then X modify on the rows; IS then S for reads. A killed member's table IX is
    /// retained with its rows and refuses no other member's IX or IS
    #[arg(long)]
    pub hierarchy: bool,
    /// Keep the plex afterwards (it is always kept when an invariant breaks)
    #[arg(long)]
    pub keep: bool,
    /// Also let members die at named crash points inside the protocols: one member start in
    /// --arm-one-in (and the restart lights it starts) dies once at a point of
    /// cf_core::crash::CRASH_POINTS (lock word and latch windows, cleanup of another member,
    /// connect, disconnect, restart light, request handler, transactions, log writes), at a
    /// hit count drawn with it from the seed. Needs a build with the `crash-points` feature;
    /// without it the points are inert
    #[arg(long)]
    pub crash_points: bool,
    /// With --crash-points: draw only the points whose names start with one of these
    /// (comma-separated, e.g. `restart_light.,handler.`)
    #[arg(long, value_delimiter = ',')]
    pub crash_point_names: Vec<String>,
    /// With --crash-points: arm one member start in this many (1: every start)
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..))]
    pub arm_one_in: u64,
    /// Also write every event read and every member process started (PID, start, end and
    /// how it ended, armed crash point) to FILE, one JSON document per line, for analysis
    #[arg(long, value_name = "FILE")]
    pub history_out: Option<PathBuf>,
    /// Write SVG charts to DIR (created if missing; its parent must exist): throughput over time
    /// with every fault marked, detection and recovery latency histograms, and a timeline of
    /// each recovery
    #[arg(long, value_name = "DIR")]
    pub plot: Option<PathBuf>,
    /// Print the report as CSV: a header line and one row (configuration, then results)
    #[arg(long)]
    pub csv: bool,
    /// Print the report as one JSON document (also: cfctl --json sim)
    #[arg(long)]
    pub json: bool,
}

fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn ser_opt_secs<S: serde::Serializer>(
    d: &Option<Duration>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64(d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

fn ser_display<S: serde::Serializer, T: std::fmt::Display>(
    v: &T,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(v)
}

impl SimArgs {
    /// Every option checked before anything is created, connected or
    /// spawned; the error names it (a value out of its range is a usage
    /// error, exit status 64; a missing directory for an output is an error).
    pub fn check(&self) -> Result<()> {
        if !(2..=16).contains(&self.members) {
            crate::usage!("--members must be 2 to 16, got {}", self.members);
        }
        if !(1..=16).contains(&self.threads) {
            crate::usage!("--threads must be 1 to 16, got {}", self.threads);
        }
        let e = self.lock_entries;
        if !(16..=cf_core::layout::MAX_LOCK_ENTRIES).contains(&e) || !e.is_power_of_two() {
            crate::usage!("--lock-entries must be a power of two from 16 to 2^30, got {e}");
        }
        let r = self.records_per_member;
        let least = 64 * (self.threads + 2);
        if !r.is_multiple_of(64) || r < least || r > 1 << 24 {
            crate::usage!(
                "--records-per-member must be a multiple of 64 from {least} (64 × (threads + 2)) to 2^24, got {r}"
            );
        }
        // With --hierarchy each worker also holds the table's lock.
        if (self.threads * (self.tx_size + self.hierarchy as u32)) as u64 > r as u64 {
            crate::usage!(
                "--threads {} × --tx-size {}{} locks at once need more than --records-per-member {r}",
                self.threads,
                self.tx_size,
                if self.hierarchy { " (+ 1 for --hierarchy's table lock)" } else { "" }
            );
        }
        if self.accounts < 2 || self.accounts < self.tx_size as u64 {
            crate::usage!(
                "--accounts must be at least 2 and at least --tx-size {}, got {}",
                self.tx_size,
                self.accounts
            );
        }
        if self.kill_every < Duration::from_millis(1) {
            crate::usage!("--kill-every must be at least 1ms");
        }
        if self
            .kill_all_every
            .is_some_and(|d| d < Duration::from_millis(1))
        {
            crate::usage!("--kill-all-every must be at least 1ms");
        }
        if self.crash_points {
            for n in &self.crash_point_names {
                if !cf_core::crash::CRASH_POINTS
                    .iter()
                    .any(|p| p.starts_with(n.as_str()))
                {
                    crate::usage!("--crash-point-names: no crash point starts with {n:?}");
                }
            }
        }
        if let Err(e) =
            cf_core::connector::liveness::check_interval(self.failure_detection_interval)
        {
            crate::usage!("--failure-detection-interval: {e}");
        }
        if self.csv && self.json {
            crate::usage!("--csv and --json: give one");
        }
        if self.arm_one_in == 0 {
            crate::usage!("--arm-one-in must be at least 1");
        }
        if self.duration.is_zero() {
            crate::usage!("--duration must be more than 0 (e.g. 10s)");
        }
        if !(self.read_pct.is_finite() && (0.0..=100.0).contains(&self.read_pct)) {
            crate::usage!("--read-pct must be 0 to 100, got {}", self.read_pct);
        }
        if let Some(r) = self.rate {
            if !(r.is_finite() && r > 0.0 && r <= 1e7) {
                crate::usage!(
                    "--rate must be a positive number of transactions per second, got {r}"
                );
            }
        }
        for (flag, p) in [("--history-out", &self.history_out), ("--plot", &self.plot)] {
            if let Some(p) = p {
                let parent = p.parent().filter(|q| !q.as_os_str().is_empty());
                if parent.is_some_and(|q| !q.is_dir()) {
                    bail!("{flag} {}: its directory does not exist", p.display());
                }
            }
        }
        Ok(())
    }
}

/// What a scheduled fault kills.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Member(u64),
    /// SIGSTOP a member: fenced by a survivor after the interval.
    Stop(u64),
    Claimer(u64),
    RestartLight(u64),
    All,
}

impl Fault {
    fn kind(self) -> &'static str {
        match self {
            Fault::Member(_) => "member",
            Fault::Stop(_) => "stop",
            Fault::Claimer(_) => "restarter",
            Fault::RestartLight(_) => "restart_light",
            Fault::All => "all_members",
        }
    }
}

/// The fault schedule: a pure function of the seed and the options.
fn schedule(a: &SimArgs) -> Vec<(Duration, Fault)> {
    let mut rng = points::Rng::stream(a.seed, 0x5eed);
    let mut out = Vec::new();
    let mut t = Duration::ZERO;
    let mut next_all = a.kill_all_every;
    let limit = a.kills.unwrap_or(u64::MAX);
    let every_us = a.kill_every.as_micros() as u64;
    while (out.len() as u64) < limit {
        let gap = every_us / 2 + rng.below(every_us.max(1));
        t += Duration::from_micros(gap);
        if t >= a.duration {
            break;
        }
        if let Some(all) = next_all {
            if t >= all {
                out.push((t, Fault::All));
                next_all = a.kill_all_every.map(|e| all + e);
                continue;
            }
        }
        let target = rng.next_u64();
        let f = match (a.kill_restarters, rng.below(3)) {
            (true, 1) => Fault::Claimer(target),
            (true, 2) => Fault::RestartLight(target),
            // Drawn only with --stop-members, so other schedules stay as they were.
            _ if a.stop_members && rng.below(3) == 0 => Fault::Stop(target),
            _ => Fault::Member(target),
        };
        out.push((t, f));
    }
    out
}

fn now_ns() -> u64 {
    cf_core::connector::now_ns()
}

fn describe(st: ExitStatus) -> String {
    match (st.code(), st.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (_, Some(s)) => format!("signal {s}"),
        _ => "unknown status".into(),
    }
}

/// A member process the sim started, with its crash point if armed.
struct ProcRec {
    life: ProcLife,
    armed: Option<(Arming, PathBuf)>,
}

impl ProcRec {
    /// Has its crash point fired (in it, or in a restart light it started)?
    fn fired(&self) -> bool {
        self.armed.as_ref().is_some_and(|(_, p)| p.exists())
    }
}

/// A running member: its process and its record.
struct Live {
    proc: MemberProc,
    rec: usize,
}

/// Restart-light processes orphaned by the death of the member that started
/// them are re-parented to the sim (a child subreaper): reaped as they end,
/// and killed if any is left at the end, also when the sim fails.
struct Orphans {
    last_reap: Instant,
}

impl Orphans {
    fn new() -> Orphans {
        // Without it (an old kernel) orphans go to init: only the final sweep is lost.
        let _ = nix::sys::prctl::set_child_subreaper(true);
        Orphans {
            last_reap: Instant::now(),
        }
    }

    /// PIDs of our children that are not `members`.
    fn list(members: &BTreeSet<u32>) -> Vec<u32> {
        let me = std::process::id();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| !members.contains(pid))
            .filter(|&pid| parent_of(pid) == Some(me))
            .collect()
    }

    /// Reap the orphans that ended (every 100 ms at most).
    fn reap(&mut self, members: &BTreeSet<u32>) {
        if self.last_reap.elapsed() < Duration::from_millis(100) {
            return;
        }
        self.last_reap = Instant::now();
        for pid in Self::list(members) {
            let _ = nix::sys::wait::waitpid(
                nix::unistd::Pid::from_raw(pid as i32),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            );
        }
    }

    /// Wait up to `limit` for the orphans to end, then kill and reap the rest.
    /// Returns how many had to be killed.
    fn finish(&mut self, members: &BTreeSet<u32>, limit: Duration) -> usize {
        let t = Instant::now();
        loop {
            self.last_reap = Instant::now() - Duration::from_secs(1);
            self.reap(members);
            let left = Self::list(members);
            if left.is_empty() {
                return 0;
            }
            if t.elapsed() >= limit {
                for &pid in &left {
                    let p = nix::unistd::Pid::from_raw(pid as i32);
                    let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGKILL);
                    let _ = nix::sys::wait::waitpid(p, None);
                }
                return left.len();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Orphans {
    fn drop(&mut self) {
        self.finish(&BTreeSet::new(), Duration::ZERO);
    }
}

/// Is process `pid` a zombie, or exiting (PF_EXITING in field 9 of
/// /proc/PID/stat)? A process that sent itself SIGKILL is one of these
/// until it is reaped.
fn exiting(pid: u32) -> bool {
    const PF_EXITING: u64 = 0x4;
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    let Some(close) = text.rfind(')') else {
        return false;
    };
    let mut f = text[close + 1..].split_ascii_whitespace();
    let state = f.next().unwrap_or("");
    let flags: u64 = f.nth(5).and_then(|x| x.parse().ok()).unwrap_or(0);
    matches!(state, "Z" | "X" | "x") || flags & PF_EXITING != 0
}

/// The parent PID of `pid` (field 4 of /proc/PID/stat), if it exists.
fn parent_of(pid: u32) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    rest.split_ascii_whitespace().nth(1)?.parse().ok()
}

struct Sim<'a> {
    region: Region,
    dir: &'a Path,
    exe: PathBuf,
    args: Vec<String>,
    /// Running members by index (member `i` is named `M<i>`). Declared before
    /// `orphans`, so members are killed first when the sim fails.
    members: Vec<Option<Live>>,
    orphans: Orphans,
    procs: Vec<ProcRec>,
    events: BTreeMap<u64, Event>,
    /// Lowest event sequence number not read yet (or being re-read).
    cursor: u64,
    /// Event slots seen still being written, and since when.
    unpublished: BTreeMap<u64, Instant>,
    kinds: BTreeMap<&'static str, u64>,
    /// Restart-light processes killed (their member's death is already counted).
    light_kills: u64,
    /// Members stopped (SIGSTOP) by a fault and not yet ended (by process
    /// record), with the time of the stop.
    stopped: BTreeMap<usize, u64>,
    /// Stopped members that ended by a SIGKILL (their fence).
    stops_fenced: u64,
    /// Stopped members never fenced (killed by the sim at the end).
    stops_unfenced: Vec<String>,
    normal_rss: Vec<u64>,
    planner: Option<Planner>,
    arm_one_in: u64,
    armings: u64,
    /// The faults are over: members are started unarmed.
    final_phase: bool,
    clean_stops: u64,
    failed_stops: Vec<String>,
    start_failures: u64,
    /// Why the run stopped waiting for a recovery, if it did.
    liveness: Vec<String>,
    t0_ns: u64,
    /// Seed of the run (the members' workload seeds are drawn from it).
    seed: u64,
    /// Member starts so far (each start's workload seed differs).
    starts: u64,
    /// Committed transactions over time: (seconds since the start, total).
    samples: Vec<(f64, u64)>,
    last_sample: Instant,
    /// Faults injected: (seconds since the start, kind).
    fault_times: Vec<(f64, &'static str)>,
    /// Transactions by kind from the closing summaries of members stopped
    /// normally (a killed member's counts die with it): count and latency.
    by_kind: BTreeMap<String, (u64, cf_node::stats::Recorder)>,
    /// Deadlock victims in the closing summaries of the members stopped
    /// normally, and their detection latency (ms).
    deadlocks: u64,
    deadlock_detection: cf_node::stats::Recorder,
    progress: indicatif::ProgressBar,
}

impl Sim<'_> {
    /// Read new events; a slot still being written is read again on the
    /// next pumps, until it is published or taken as torn.
    fn pump(&mut self) {
        let head = events::next_seq(&self.region);
        for e in events::read_since(&self.region, self.cursor) {
            self.unpublished.remove(&e.seq);
            self.events.insert(e.seq, e);
        }
        let oldest_kept = head.saturating_sub(cf_core::layout::EVENT_CAPACITY);
        let now = Instant::now();
        for q in self.cursor..head {
            if !self.events.contains_key(&q) {
                self.unpublished.entry(q).or_insert(now);
            }
        }
        self.unpublished
            .retain(|&q, since| q >= oldest_kept && now.duration_since(*since) < TORN_AFTER);
        self.cursor = self.unpublished.keys().next().copied().unwrap_or(head);
        if self.last_sample.elapsed() >= Duration::from_millis(100) {
            self.last_sample = Instant::now();
            let t = now_ns().saturating_sub(self.t0_ns) as f64 / 1e9;
            let committed = inspect::committed_total(&self.region);
            self.samples.push((t, committed));
            let retained = inspect::retained(&self.region)
                .map(|r| r.len())
                .unwrap_or(0);
            let ended = self.procs.iter().filter(|p| p.life.end.is_some()).count();
            let done = self
                .events
                .values()
                .filter(|e| e.kind() == EventKind::RecoveryCompleted)
                .count();
            self.progress.set_message(format!(
                "{t:6.1}s  transactions {committed:>8}  faults {:>5}  ended {ended:>5}  recoveries {done:>5}  retained now {retained:>3}",
                self.fault_times.len()
            ));
        }
    }

    fn name(i: usize) -> String {
        format!("M{i}")
    }

    fn member_pids(&self) -> BTreeSet<u32> {
        self.members
            .iter()
            .flatten()
            .map(|l| l.proc.pid())
            .collect()
    }

    /// Does a connector slot name this PID?
    fn has_slot(&self, pid: u32) -> bool {
        (self.region.connector_ids()).any(|id| {
            cf_core::connector::slot_view(&self.region, id)
                .is_ok_and(|s| s.state != cf_core::MemberState::Free && s.process.pid == pid)
        })
    }

    /// Record how process `rec`, which ended by itself with `st`, ended.
    fn ended_by_itself(&mut self, rec: usize, st: ExitStatus) {
        let now = now_ns();
        let had_slot = self.has_slot(self.procs[rec].life.pid);
        let r = &mut self.procs[rec];
        r.life.had_slot |= had_slot;
        let crash = match &r.armed {
            Some((a, marker)) if st.signal() == Some(libc::SIGKILL) => std::fs::metadata(marker)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| (d.as_nanos() as u64, a.spec())),
            _ => None,
        };
        // The marker's time may be kept at timer-tick granularity (a few ms
        // early); the death is after any event the process recorded itself.
        let pid = r.life.pid;
        let name = r.life.name.clone();
        let crash = crash.map(|(t, spec)| {
            let own = self
                .events
                .values()
                .rev()
                .take_while(|e| e.time_ns + 20_000_000 >= t)
                .filter(|e| match e.data {
                    EventData::Connected { pid: p } => p == pid && e.member == name,
                    EventData::Claimed { pid: p, .. } => {
                        p == pid && e.by.as_deref() == Some(name.as_str())
                    }
                    _ => false,
                })
                .map(|e| e.time_ns)
                .max()
                .unwrap_or(0);
            (t.max(own), spec)
        });
        let r = &mut self.procs[rec];
        r.life.end = Some(match crash {
            Some((t, spec)) => (t, EndHow::CrashPoint(spec)),
            None => (now, EndHow::Exited(describe(st))),
        });
    }

    /// Start member `i` (armed with a crash point drawn from the seed, with
    /// --crash-points) and wait for it to run.
    fn start(&mut self, i: usize) -> Result<()> {
        let mut env = Vec::new();
        let mut armed = None;
        if !self.final_phase {
            if let Some(p) = self.planner.as_mut() {
                if p.armed(self.arm_one_in) {
                    if let Some(a) = p.draw() {
                        self.armings += 1;
                        let marker = self.dir.join(format!("crash-once-{}", self.armings));
                        env.push(("CF_CRASH_AT".to_string(), a.spec()));
                        env.push(("CF_CRASH_ONCE".to_string(), marker.display().to_string()));
                        armed = Some((a, marker));
                    }
                }
            }
        }
        let started_ns = now_ns();
        // The member's workload seed: from the run's seed, the member and its start.
        self.starts += 1;
        let wseed =
            points::Rng::stream(self.seed ^ ((i as u64) << 40) ^ self.starts, 0x3011).next_u64();
        let mut args = self.args.clone();
        args.extend(["--seed".to_string(), wseed.to_string()]);
        let mut p = MemberProc::spawn(&self.exe, self.dir, &Self::name(i), &args, &env)?;
        let rec = self.procs.len();
        self.procs.push(ProcRec {
            life: ProcLife {
                name: Self::name(i),
                pid: p.pid(),
                started_ns,
                running: false,
                had_slot: false,
                end: None,
            },
            armed,
        });
        match p.wait_running() {
            Ok(()) => {
                self.procs[rec].life.running = true;
                self.members[i] = Some(Live { proc: p, rec });
                Ok(())
            }
            Err(e) => {
                self.start_failures += 1;
                match p.wait_for(Duration::from_secs(10)) {
                    Some(st) => self.ended_by_itself(rec, st),
                    None => {
                        let t = now_ns();
                        p.kill9();
                        self.procs[rec].life.end = Some((t, EndHow::Killed("start_timeout")));
                    }
                }
                Err(e)
            }
        }
    }

    /// Members (and orphaned restart lights) that ended by themselves.
    fn reap(&mut self) {
        for i in 0..self.members.len() {
            let Some(st) = self.members[i].as_mut().and_then(|l| l.proc.try_status()) else {
                continue;
            };
            if let Some(live) = self.members[i].take() {
                match self.stopped.remove(&live.rec) {
                    // A stopped member ends by its fence: the fault was the stop.
                    Some(t) if st.signal() == Some(libc::SIGKILL) => {
                        self.stops_fenced += 1;
                        self.procs[live.rec].life.end = Some((t, EndHow::Killed("stop")));
                    }
                    _ => self.ended_by_itself(live.rec, st),
                }
            }
        }
        let pids = self.member_pids();
        self.orphans.reap(&pids);
    }

    /// Running members that are not stopped.
    fn alive_indices(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&i| {
                self.members[i]
                    .as_ref()
                    .is_some_and(|l| !self.stopped.contains_key(&l.rec))
            })
            .collect()
    }

    /// SIGSTOP member `i`: it stays in `members` (its name is taken until
    /// its fence ends it) and is reaped as a stop fault.
    fn stop_member(&mut self, i: usize) {
        let Some(live) = self.members[i].as_mut() else {
            return;
        };
        if live.proc.try_status().is_some() {
            return;
        }
        let t = now_ns();
        if nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(live.proc.pid() as i32),
            nix::sys::signal::Signal::SIGSTOP,
        )
        .is_ok()
        {
            self.stopped.insert(live.rec, t);
        }
    }

    /// Stopped members not fenced by `limit` are SIGKILLed and reported.
    fn finish_stopped(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.stopped.is_empty() && Instant::now() < deadline {
            self.pump();
            self.reap();
            std::thread::sleep(Duration::from_millis(5));
        }
        for i in 0..self.members.len() {
            let Some(rec) = self.members[i].as_ref().map(|l| l.rec) else {
                continue;
            };
            if let Some(t) = self.stopped.remove(&rec) {
                if let Some(mut live) = self.members[i].take() {
                    self.stops_unfenced.push(format!(
                        "{} (pid {})",
                        Self::name(i),
                        live.proc.pid()
                    ));
                    live.proc.kill9();
                    self.procs[live.rec].life.end = Some((t, EndHow::Killed("stop")));
                }
            }
        }
    }

    /// SIGKILL member `i` (unless it already ended by itself).
    fn kill(&mut self, i: usize, kind: &'static str) {
        let Some(mut live) = self.members[i].take() else {
            return;
        };
        if let Some(st) = live.proc.try_status() {
            self.ended_by_itself(live.rec, st);
            return;
        }
        // Already on its way out (at its crash point): not our kill.
        if exiting(live.proc.pid()) {
            if let Some(st) = live.proc.wait_for(Duration::from_secs(10)) {
                self.ended_by_itself(live.rec, st);
                return;
            }
        }
        let t = now_ns();
        live.proc.kill9();
        self.procs[live.rec].life.end = Some((t, EndHow::Killed(kind)));
    }

    /// SIGKILL a restart-light process of this plex, if it still runs.
    fn kill_light(&mut self, pid: u32) -> bool {
        if !cf_core::ProcessId::of(pid).is_ok_and(|p| p.is_some_and(|p| p.is_alive())) {
            return false;
        }
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if !cmd.contains("restart-light") || !cmd.contains(&self.dir.display().to_string()) {
            return false;
        }
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .is_ok()
    }

    /// Wait for an event matching `f` from sequence number `from`, pumping;
    /// None on timeout.
    fn wait_event(
        &mut self,
        from: u64,
        limit: Duration,
        f: impl Fn(&Event) -> bool,
    ) -> Option<Event> {
        let t = Instant::now();
        while t.elapsed() < limit {
            self.pump();
            if let Some((_, e)) = self.events.range(from..).find(|(_, e)| f(e)) {
                return Some(e.clone());
            }
            // Nobody left to do it (the others died at crash points meanwhile).
            self.reap();
            if self.alive_indices().is_empty() {
                return None;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        None
    }

    /// Is member `name` fully recovered (slot free, no request)?
    fn recovered(&self, name: &str) -> Result<bool> {
        let busy = inspect::members(&self.region)?
            .iter()
            .any(|m| m.name == name);
        let req = requests::list(&self.region)?;
        let pending = req.iter().any(|r| r.name == name);
        Ok(!busy && !pending)
    }

    /// What the region says about member `name` (for a liveness failure).
    fn state_of(&self, name: &str) -> String {
        let slots: Vec<String> = inspect::members(&self.region)
            .unwrap_or_default()
            .iter()
            .filter(|m| m.name == name)
            .map(|m| {
                format!(
                    "slot {} {} pid {} alive {} held {} retained {}",
                    m.id,
                    m.state.as_str(),
                    m.pid,
                    m.alive,
                    m.held,
                    m.retained
                )
            })
            .collect();
        let reqs: Vec<String> = requests::list(&self.region)
            .unwrap_or_default()
            .iter()
            .filter(|r| r.name == name)
            .map(|r| {
                format!(
                    "request {} {} claimer pid {} alive {} worker pid {} alive {} attempts {}",
                    r.member_id,
                    r.state.as_str(),
                    r.claimer_pid,
                    r.claimer_alive,
                    r.worker_pid,
                    r.worker_alive,
                    r.attempts
                )
            })
            .collect();
        format!(
            "{}; {}",
            if slots.is_empty() {
                "no slot".into()
            } else {
                slots.join(", ")
            },
            if reqs.is_empty() {
                "no request".into()
            } else {
                reqs.join(", ")
            }
        )
    }

    /// Start every dead member again, each once its recovery is over (or at
    /// once if no member is alive to recover it). Returns why not, if it
    /// could not within `limit`.
    fn restart_dead(&mut self, limit: Duration) -> Result<Option<String>> {
        let t = Instant::now();
        let dead: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.members[i].is_none())
            .collect();
        for i in dead {
            let name = Self::name(i);
            // Wait for its recovery, unless nobody is left alive to recover it
            // (every member dead, also by crash points meanwhile): then start it
            // back at once, and it recovers the others and itself.
            loop {
                self.reap();
                if self.alive_indices().is_empty() || self.recovered(&name)? {
                    break;
                }
                if t.elapsed() > limit {
                    return Ok(Some(format!(
                        "{name} not recovered within {} s: {}",
                        limit.as_secs(),
                        self.state_of(&name)
                    )));
                }
                self.pump();
                std::thread::sleep(Duration::from_millis(1));
            }
            // A start can race with a restart light of the same name still
            // finishing, or die at its crash point before it runs; try again.
            let mut last = None;
            for _ in 0..20 {
                match self.start(i) {
                    Ok(()) => {
                        last = None;
                        break;
                    }
                    Err(e) => {
                        last = Some(e);
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
            if let Some(e) = last {
                return Ok(Some(format!(
                    "{name} could not be restarted ({e:#}): {}",
                    self.state_of(&name)
                )));
            }
        }
        Ok(None)
    }

    fn inject(&mut self, f: Fault) -> Result<()> {
        self.reap();
        let alive = self.alive_indices();
        if alive.is_empty() {
            return Ok(());
        }
        *self.kinds.entry(f.kind()).or_default() += 1;
        let t = now_ns().saturating_sub(self.t0_ns) as f64 / 1e9;
        self.fault_times.push((t, f.kind()));
        match f {
            Fault::All => {
                for i in alive {
                    self.kill(i, f.kind());
                }
            }
            Fault::Member(t) => self.kill(alive[(t % alive.len() as u64) as usize], f.kind()),
            // A stop leaves at least one member running to fence it.
            Fault::Stop(t) if alive.len() >= 2 => {
                self.stop_member(alive[(t % alive.len() as u64) as usize])
            }
            Fault::Stop(t) => self.kill(alive[(t % alive.len() as u64) as usize], "member"),
            Fault::Claimer(t) | Fault::RestartLight(t) => {
                let victim = alive[(t % alive.len() as u64) as usize];
                let from = events::next_seq(&self.region);
                let vname = Self::name(victim);
                self.kill(victim, "member");
                if alive.len() == 1 {
                    // No member left to claim its restart: a member kill.
                    return Ok(());
                }
                let kind = if matches!(f, Fault::Claimer(_)) {
                    EventKind::Claimed
                } else {
                    EventKind::RestartLightStarted
                };
                let seen = self.wait_event(from, Duration::from_secs(5), |e| {
                    e.kind() == kind && e.member == vname
                });
                match (f, seen.map(|e| (e.by, e.data))) {
                    (Fault::Claimer(_), Some((by, EventData::Claimed { pid, .. }))) => {
                        // The member that claimed, if the process that claimed still runs.
                        let claimer = (0..self.members.len()).find(|&i| {
                            by.as_deref() == Some(Self::name(i).as_str())
                                && self.members[i]
                                    .as_ref()
                                    .is_some_and(|l| l.proc.pid() == pid)
                        });
                        if let Some(i) = claimer {
                            self.kill(i, f.kind());
                        }
                    }
                    // Harmless if it already ended.
                    (Fault::RestartLight(_), Some((_, EventData::RestartLightStarted { pid })))
                        if self.kill_light(pid) =>
                    {
                        self.light_kills += 1;
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Add a stopped member's transactions by kind (`cf-node run --json`'s
    /// closing line: counts, and latency buckets in µs), and its deadlock
    /// victims with their detection latency (buckets in ms).
    fn add_closing_summary(&mut self, v: &Value) {
        self.deadlocks += v["deadlocks"].as_u64().unwrap_or(0);
        if let Some(b) = v["deadlock_detection_buckets_ms"].as_array() {
            for pair in b {
                if let (Some(x), Some(n)) = (pair[0].as_f64(), pair[1].as_u64()) {
                    self.deadlock_detection.record_n(x, n);
                }
            }
        }
        for (kind, key) in [("transfer", "committed"), ("read", "reads")] {
            let e = self
                .by_kind
                .entry(kind.to_string())
                .or_insert_with(|| (0, cf_node::stats::Recorder::new("µs")));
            e.0 += v[key].as_u64().unwrap_or(0);
            if let Some(b) = v["latency_buckets_us"][kind].as_array() {
                for pair in b {
                    if let (Some(x), Some(n)) = (pair[0].as_f64(), pair[1].as_u64()) {
                        e.1.record_n(x, n);
                    }
                }
            }
        }
    }

    /// A running member still armed with a crash point that has not fired.
    fn armed_member(&self) -> Option<usize> {
        (0..self.members.len()).find(|&i| {
            self.members[i].as_ref().is_some_and(|l| {
                let r = &self.procs[l.rec];
                r.armed.is_some() && !r.fired()
            })
        })
    }

    /// Stop member `i` normally (SIGTERM). A member that dies at its crash
    /// point on the way out is a crash-point death, not a failed stop.
    fn stop(&mut self, i: usize) {
        let Some(mut live) = self.members[i].take() else {
            return;
        };
        let (line, st) = live.proc.stop_status();
        match st {
            Some(st) if st.success() => {
                self.clean_stops += 1;
                self.procs[live.rec].life.end = Some((now_ns(), EndHow::Stopped));
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    self.normal_rss.extend(v["peak_rss_kib"].as_u64());
                    self.add_closing_summary(&v);
                }
            }
            Some(st) if st.signal() == Some(libc::SIGKILL) && self.procs[live.rec].fired() => {
                self.ended_by_itself(live.rec, st);
            }
            other => {
                let how = other.map_or("no exit status".into(), describe);
                self.failed_stops.push(format!(
                    "{} pid {}: {how}",
                    live.proc.name,
                    live.proc.pid()
                ));
                self.procs[live.rec].life.end = Some((now_ns(), EndHow::Exited(how)));
            }
        }
    }
}

pub fn run(plex_arg: Option<&Path>, a: SimArgs) -> Result<ExitCode> {
    a.check()?;
    let exe = cf_node_binary()?;
    catch_stop_signals()?;
    let mut tmp = match plex_arg {
        Some(p) => TempPlex::named(p)?,
        None => TempPlex::fresh("sim")?,
    };
    tmp.keep |= a.keep;
    let dir = tmp.dir.clone();
    let plex = Plex { dir: dir.clone() };
    let opts = CreateOptions {
        sizes: Sizes {
            lock_entries: a.lock_entries,
            members: 32,
            records_per_member: a.records_per_member,
        },
        group_access: false,
    };
    let region = Region::create(&plex, &opts)?;
    cf_core::connector::liveness::set_settings(
        &region,
        cf_core::connector::liveness::Settings {
            interval: a.failure_detection_interval,
            isolate: cf_core::connector::liveness::Isolate::AtOnce,
            ..Default::default()
        },
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    // Members archive committed transactions here when it exists.
    {
        use std::os::unix::fs::DirBuilderExt;
        let history = dir.join("history");
        match std::fs::DirBuilder::new().mode(0o700).create(&history) {
            Ok(()) => {}
            // Left by an earlier run in a --plex directory: a directory, not a link, is fine.
            Err(e)
                if e.kind() == std::io::ErrorKind::AlreadyExists
                    && std::fs::symlink_metadata(&history).is_ok_and(|m| m.is_dir()) => {}
            Err(e) => bail!("creating {}: {e}", history.display()),
        }
    }
    let store = Store::create(&dir, a.accounts, 1000, false)?;
    let plan = schedule(&a);
    let mut args = vec![
        "--pause-us".to_string(),
        a.pause_us.as_micros().to_string(),
        "--buffer-pool-mb".into(),
        a.buffer_pool_mb.to_string(),
        "--threads".into(),
        a.threads.to_string(),
        "--skew".into(),
        a.skew.to_string(),
        "--read-pct".into(),
        a.read_pct.to_string(),
        "--tx-size".into(),
        a.tx_size.to_string(),
        "--think".into(),
        a.think.as_micros().to_string(),
        "--lock-order".into(),
        a.lock_order.to_string(),
        "--json".into(),
    ];
    if let Some(r) = a.rate {
        args.extend(["--rate".to_string(), r.to_string()]);
    }
    if a.hierarchy {
        args.push("--hierarchy".into());
    }
    let scale = Scale {
        members: a.members,
        threads: a.threads,
        lock_entries: a.lock_entries,
        kill_every_ms: a.kill_every.as_millis().max(1) as u64,
        pause_us: a.pause_us.as_micros() as u64,
    };
    let sim_points: Vec<&'static str> = cf_core::crash::CRASH_POINTS
        .iter()
        .copied()
        .filter(|p| {
            a.crash_point_names.is_empty()
                || a.crash_point_names
                    .iter()
                    .any(|n| p.starts_with(n.as_str()))
        })
        .collect();
    let mut sim = Sim {
        region,
        dir: &dir,
        exe,
        args,
        members: (0..a.members).map(|_| None).collect(),
        orphans: Orphans::new(),
        procs: Vec::new(),
        events: BTreeMap::new(),
        cursor: 0,
        unpublished: BTreeMap::new(),
        kinds: BTreeMap::new(),
        light_kills: 0,
        stopped: BTreeMap::new(),
        stops_fenced: 0,
        stops_unfenced: Vec::new(),
        normal_rss: Vec::new(),
        planner: a.crash_points.then(|| {
            // Random lock order makes cycles: the detector's points are reached.
            let cycles = a.lock_order == cf_node::bank::LockOrder::Random;
            Planner::with_cycles(a.seed, scale, &sim_points, cycles)
        }),
        arm_one_in: a.arm_one_in,
        armings: 0,
        final_phase: false,
        clean_stops: 0,
        failed_stops: Vec::new(),
        start_failures: 0,
        liveness: Vec::new(),
        t0_ns: now_ns(),
        seed: a.seed,
        starts: 0,
        samples: Vec::new(),
        last_sample: Instant::now(),
        fault_times: Vec::new(),
        by_kind: BTreeMap::new(),
        deadlocks: 0,
        deadlock_detection: cf_node::stats::Recorder::new("ms"),
        // Drawn on stderr only when it is a terminal (indicatif hides it otherwise).
        progress: if a.json || a.csv {
            indicatif::ProgressBar::hidden()
        } else {
            let p = indicatif::ProgressBar::new_spinner();
            p.enable_steady_tick(Duration::from_millis(200));
            p
        },
    };
    if let Some(why) = sim.restart_dead(Duration::from_secs(30))? {
        bail!("the members did not start: {why}");
    }
    let t0 = Instant::now();
    sim.t0_ns = now_ns();
    'faults: for (at, fault) in &plan {
        while t0.elapsed() < *at {
            if interrupted() {
                break 'faults;
            }
            sim.pump();
            sim.reap();
            // Members that died at crash points meanwhile start again.
            if sim.members.iter().any(|m| m.is_none()) {
                if let Some(why) = sim.restart_dead(Duration::from_secs(30))? {
                    sim.liveness.push(why);
                    break 'faults;
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        sim.inject(*fault)?;
        if let Some(why) = sim.restart_dead(Duration::from_secs(30))? {
            sim.liveness.push(why);
            break;
        }
    }
    while sim.liveness.is_empty()
        && !interrupted()
        && t0.elapsed() < a.duration
        && a.kills.is_none()
    {
        sim.pump();
        sim.reap();
        if sim.members.iter().any(|m| m.is_none()) {
            if let Some(why) = sim.restart_dead(Duration::from_secs(30))? {
                sim.liveness.push(why);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // Let the last recoveries finish (restarting, unarmed, any member that
    // died at a crash point meanwhile, and replacing the members still armed,
    // so that none dies on its way out), then stop everyone normally.
    sim.final_phase = true;
    // Stopped members are fenced within the interval (and a survivor's
    // status check period); one that is not by then is a failure.
    sim.finish_stopped(a.failure_detection_interval * 4 + Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(60);
    while sim.liveness.is_empty() {
        sim.pump();
        sim.reap();
        if sim.members.iter().any(|m| m.is_none()) {
            if let Some(why) = sim.restart_dead(Duration::from_secs(30))? {
                sim.liveness.push(why);
            }
            continue;
        }
        if let Some(i) = sim.armed_member() {
            sim.stop(i);
            continue;
        }
        let left = requests::list(&sim.region)?;
        if left.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            let names: BTreeSet<String> = left.iter().map(|r| r.name.clone()).collect();
            let states: Vec<String> = names
                .iter()
                .map(|n| format!("{n}: {}", sim.state_of(n)))
                .collect();
            sim.liveness.push(format!(
                "requests left after the faults: {}",
                states.join("; ")
            ));
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let elapsed = t0.elapsed();
    for i in 0..sim.members.len() {
        sim.stop(i);
    }
    let leftover = sim.orphans.finish(&BTreeSet::new(), Duration::from_secs(5));
    if leftover > 0 {
        sim.liveness.push(format!(
            "{leftover} restart-light process(es) still running at the end (killed)"
        ));
    }
    sim.progress.finish_and_clear();
    sim.pump();
    // Slots still being written at the end are read once more after a pause.
    if !sim.unpublished.is_empty() {
        std::thread::sleep(Duration::from_millis(50));
        sim.pump();
    }
    report(&a, &sim, &store, elapsed, &mut tmp)
}

/// `--plot DIR`: throughput over time with every fault marked, histograms
/// of detection and recovery, and a timeline of each recovery.
fn charts(
    dir: &Path,
    sim: &Sim,
    procs: &[ProcLife],
    kills: &check::KillCheck,
) -> Result<Vec<PathBuf>> {
    use crate::plot;
    plot::ensure_dir(dir)?;
    let mut out = Vec::new();
    let f = plot::file(dir, "throughput.svg");
    let marks: Vec<(f64, String)> = sim
        .fault_times
        .iter()
        .map(|(t, k)| (*t, k.to_string()))
        .collect();
    plot::line_chart(
        &f,
        &format!(
            "cfctl sim, seed {}: committed transactions per second",
            sim.seed
        ),
        "seconds",
        "transactions/s",
        &[("committed", plot::rates(&sim.samples))],
        &marks,
    )?;
    out.push(f);
    let f = plot::file(dir, "detection.svg");
    plot::histogram(&f, "death to detected", "µs", &kills.detection_us)?;
    out.push(f);
    let f = plot::file(dir, "recovery.svg");
    plot::histogram(
        &f,
        "kill to all retained locks released",
        "ms",
        &kills.recovery_ms,
    )?;
    out.push(f);
    let rows: Vec<(String, Vec<(&'static str, f64)>)> = procs
        .iter()
        .filter(|p| p.had_slot || p.running)
        .filter_map(|p| match &p.end {
            Some((t, h)) if *h != EndHow::Stopped => Some((p, *t)),
            _ => None,
        })
        .map(|(p, t)| {
            let at = t.saturating_sub(sim.t0_ns) as f64 / 1e9;
            (
                format!("{} pid {} at {at:.2}s", p.name, p.pid),
                plot::recovery_steps(&sim.events, &p.name, t),
            )
        })
        .filter(|(_, steps)| steps.len() > 1)
        .take(40)
        .collect();
    let f = plot::file(dir, "recoveries.svg");
    plot::timeline(&f, "each recovery, step by step (first 40)", &rows)?;
    out.push(f);
    Ok(out)
}

/// Every event and every member process, one JSON document per line.
fn write_history(path: &Path, sim: &Sim) -> Result<()> {
    use std::io::Write;
    let f = std::fs::File::create(path)
        .map_err(|e| anyhow::anyhow!("creating {}: {e}", path.display()))?;
    let mut w = std::io::BufWriter::new(f);
    let t0 = sim.t0_ns as f64;
    let io = |e: std::io::Error| anyhow::anyhow!("writing {}: {e}", path.display());
    for p in &sim.procs {
        let l = &p.life;
        let (end_s, how) = match &l.end {
            Some((t, h)) => (Some((*t as f64 - t0) / 1e9), Some(format!("{h:?}"))),
            None => (None, None),
        };
        let v = json!({"process": {
            "name": l.name, "pid": l.pid, "started_s": (l.started_ns as f64 - t0) / 1e9,
            "running": l.running, "had_slot": l.had_slot, "end_s": end_s, "how": how,
            "armed": p.armed.as_ref().map(|(a, _)| a.spec()), "fired": p.fired(),
        }});
        writeln!(w, "{v}").map_err(io)?;
    }
    for e in sim.events.values() {
        let mut v = json!({
            "seq": e.seq, "kind": e.kind().as_str(), "member": e.member, "by": e.by,
            "t_s": (e.time_ns as f64 - t0) / 1e9,
        });
        check::add_data_fields(&mut v, &e.data);
        writeln!(w, "{}", json!({ "event": v })).map_err(io)?;
    }
    w.flush().map_err(io)
}

fn report(
    a: &SimArgs,
    sim: &Sim,
    store: &Store,
    elapsed: Duration,
    tmp: &mut TempPlex,
) -> Result<ExitCode> {
    let region = &sim.region;
    let ev = &sim.events;
    let head = events::next_seq(region);
    let t0 = sim.t0_ns;
    let count = |k: EventKind| ev.values().filter(|e| e.kind() == k).count() as u64;
    let procs: Vec<ProcLife> = sim.procs.iter().map(|p| p.life.clone()).collect();
    if let Some(path) = &a.history_out {
        write_history(path, sim)?;
    }
    let kills = check::check_kills(&procs, ev, head, t0);
    let lives = check::check_lives(ev, head, t0);
    let lost = check::missing_seqs(ev, head).len();
    let total = store.total();
    let expected = store.expected_total();
    // Every account against what the committed transactions did (the bank
    // total cannot see a lost update that moved money between two accounts).
    let (history_ok, history_detail) = match cf_node::history::check(&tmp.dir) {
        Ok(c) => (c.is_consistent(), c.to_string()),
        Err(e) => (false, format!("the history could not be checked: {e}")),
    };
    let locks = inspect::locks(region)?;
    let members_left = inspect::members(region)?;
    let reqs = requests::list(region)?;
    let problems = inspect::verify(region);
    let recovered = kills.recovery_ms.len();
    let mut kill_problems = sim.liveness.clone();
    kill_problems.extend(kills.undetected.iter().cloned());
    kill_problems.extend(kills.unrecovered.iter().cloned());
    let show_locks: Vec<String> = locks
        .iter()
        .take(5)
        .map(|l| {
            format!(
                "{} {} {:?}{} entry {}",
                l.member,
                l.resource,
                l.mode,
                if l.retained { " retained" } else { "" },
                l.entry
            )
        })
        .collect();
    let show_members: Vec<String> = members_left
        .iter()
        .map(|m| {
            format!(
                "{} slot {} {} pid {} alive {}",
                m.name,
                m.id,
                m.state.as_str(),
                m.pid,
                m.alive
            )
        })
        .collect();
    let show_reqs: Vec<String> = reqs
        .iter()
        .map(|r| {
            format!(
                "{} {} claimer pid {} worker pid {}",
                r.name,
                r.state.as_str(),
                r.claimer_pid,
                r.worker_pid
            )
        })
        .collect();
    let with = |n: usize, what: &str, list: &[String]| {
        if list.is_empty() {
            format!("{n} {what}")
        } else {
            format!("{n} {what}: {}", check::summarize(list))
        }
    };
    let invariants: Vec<(&str, bool, String, Value)> = vec![
        (
            "bank_total",
            total == expected,
            format!("total {total}, expected {expected}"),
            Value::Null,
        ),
        (
            "accounts_match_history",
            history_ok,
            history_detail,
            Value::Null,
        ),
        (
            "no_retained_or_records_left",
            locks.is_empty(),
            with(locks.len(), "records left", &show_locks),
            Value::Null,
        ),
        (
            "no_connector_left",
            members_left.is_empty(),
            with(members_left.len(), "connectors left", &show_members),
            Value::Null,
        ),
        (
            "no_request_or_claim_left",
            reqs.is_empty(),
            with(reqs.len(), "requests left", &show_reqs),
            Value::Null,
        ),
        ("verify_clean", problems.is_empty(), problems.join("; "), Value::Null),
        (
            "one_restart_per_death",
            lives.broken.is_empty(),
            format!(
                "{} of {} member lives broken ({} unverifiable: an event lost to a kill mid-write){}{}",
                lives.broken.len(),
                lives.lives,
                lives.unverifiable,
                if lives.broken.is_empty() { "" } else { ": " },
                check::summarize(&lives.broken)
            ),
            json!(lives.evidence),
        ),
        (
            "every_kill_recovered",
            kill_problems.is_empty(),
            format!(
                "{recovered} of {} member deaths recovered ({} died before connecting, {} unverifiable){}{}",
                kills.deaths,
                kills.before_connect,
                kills.unverifiable,
                if kill_problems.is_empty() { "" } else { ": " },
                check::summarize(&kill_problems)
            ),
            json!(kills.evidence),
        ),
        (
            "no_live_member_declared_dead",
            kills.declared_dead_alive.is_empty(),
            with(
                kills.declared_dead_alive.len(),
                "member processes detected dead while they ran",
                &kills.declared_dead_alive,
            ),
            Value::Null,
        ),
        (
            "stopped_members_fenced",
            sim.stops_unfenced.is_empty(),
            with(
                sim.stops_unfenced.len(),
                "stopped members never fenced",
                &sim.stops_unfenced,
            ),
            Value::Null,
        ),
        (
            "members_stopped_normally",
            sim.failed_stops.is_empty(),
            with(sim.failed_stops.len(), "did not exit 0", &sim.failed_stops),
            Value::Null,
        ),
    ];
    let ok = invariants.iter().all(|(_, ok, _, _)| *ok);
    let c = inspect::counters(region);
    let committed = inspect::committed_total(region);
    let backed_out: u64 = ev
        .values()
        .filter_map(|e| match e.data {
            EventData::BackedOut { transactions, .. }
            | EventData::RecoveredAtRestart { transactions, .. } => Some(transactions),
            _ => None,
        })
        .sum();
    let light_rss = Summary::of(
        ev.values().filter_map(|e| match e.data {
            EventData::TerminatedNormally { peak_rss_kib, .. } => Some(peak_rss_kib as f64),
            _ => None,
        }),
        "KiB",
    );
    let member_rss = Summary::of(sim.normal_rss.iter().map(|&x| x as f64), "KiB");
    let deadlock_detection = sim.deadlock_detection.summary();
    // Every victim of the run, killed members' included (their closing
    // counts die with them), as far as the event ring kept them.
    let victim_events = count(EventKind::DeadlockVictim);
    // Their waits as the lock manager timed them (from the wait's start).
    let victim_waits = Summary::of(
        ev.values().filter_map(|e| match e.data {
            EventData::DeadlockVictim { waited_ns, .. } => Some(waited_ns as f64 / 1e6),
            _ => None,
        }),
        "ms",
    );
    let detection = Summary::of(kills.detection_us.iter().copied(), "µs");
    let recovery = Summary::of(kills.recovery_ms.iter().copied(), "ms");
    let rate = |n: u64| {
        if c.requests == 0 {
            0.0
        } else {
            n as f64 / c.requests as f64
        }
    };
    // Crash points armed and fired, by point (fired: in the member, or in a
    // restart light it started).
    let mut by_point: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for p in &sim.procs {
        if let Some((arm, _)) = &p.armed {
            let e = by_point.entry(arm.point).or_default();
            e.0 += 1;
            e.1 += p.fired() as u64;
        }
    }
    let fired: u64 = by_point.values().map(|v| v.1).sum();
    let armed: u64 = by_point.values().map(|v| v.0).sum();
    if !ok {
        tmp.keep = true;
    }
    // Kills: member processes the sim killed, by the fault that killed
    // them, and restart-light processes; they add up to the total.
    let mut kills_by_kind: BTreeMap<&str, u64> = BTreeMap::new();
    // Every member process that ended other than by a normal stop, by cause.
    let mut deaths_by_cause: BTreeMap<&str, u64> = BTreeMap::new();
    for p in &procs {
        match &p.end {
            Some((_, EndHow::Killed(k))) => {
                *kills_by_kind.entry(k).or_default() += 1;
                *deaths_by_cause.entry("killed").or_default() += 1;
            }
            Some((_, EndHow::CrashPoint(_))) => {
                *deaths_by_cause
                    .entry(if p.running {
                        "crash_point"
                    } else {
                        "crash_point_at_start"
                    })
                    .or_default() += 1;
            }
            Some((_, EndHow::Exited(_))) => {
                *deaths_by_cause
                    .entry(if p.running {
                        "exited"
                    } else {
                        "exited_at_start"
                    })
                    .or_default() += 1;
            }
            Some((_, EndHow::Stopped)) | None => {}
        }
    }
    if sim.light_kills > 0 {
        kills_by_kind.insert("restart_light", sim.light_kills);
    }
    let kills_total: u64 = kills_by_kind.values().sum();
    let deaths_total: u64 = deaths_by_cause.values().sum();
    let faults_total: u64 = sim.kinds.values().sum();
    let secs = elapsed.as_secs_f64().max(1e-9);
    let by_kind: Vec<(String, u64, Summary)> = sim
        .by_kind
        .iter()
        .map(|(k, (n, r))| (k.clone(), *n, r.summary()))
        .collect();
    let config = serde_json::to_value(a).unwrap_or(Value::Null);
    let mut doc = json!({
        "program": {"name": "cfctl sim", "version": env!("CARGO_PKG_VERSION")},
        "seed": a.seed,
        "config": config,
        "elapsed_s": elapsed.as_secs_f64(),
        "interrupted": interrupted(),
        "faults": {"total": faults_total, "by_kind": sim.kinds},
        "stops_fenced": sim.stops_fenced,
        "kills": {"total": kills_total, "by_kind": kills_by_kind},
        "deaths": {"total": deaths_total, "by_cause": deaths_by_cause,
                   "connected": kills.deaths, "before_connect": kills.before_connect},
        "start_failures": sim.start_failures,
        "recoveries": count(EventKind::RecoveryCompleted),
        "restart_lights_terminated_normally": count(EventKind::TerminatedNormally),
        "restart_light_failures": count(EventKind::RestartLightFailed),
        "lives_unverifiable_lost_events": lives.unverifiable,
        "events": head, "events_lost": lost,
        "crash_points": {
            "armed": armed, "fired": fired,
            "by_point": by_point.iter().map(|(k, v)| (k.to_string(), json!({"armed": v.0, "fired": v.1}))).collect::<serde_json::Map<_, _>>(),
        },
        "transactions_committed": committed, "transactions_backed_out": backed_out,
        "throughput_tps": committed as f64 / secs,
        "by_kind": by_kind.iter().map(|(k, n, l)| (k.clone(), json!({
            "count": n, "per_s": *n as f64 / secs, "latency": l,
        }))).collect::<serde_json::Map<_, _>>(),
        "by_kind_source": "closing summaries of the members stopped normally (a killed member's counts die with it)",
        "lock_requests": c.requests, "irlm_contention_rate": rate(c.irlm_contention), "xes_contention_rate": rate(c.xes_contention),
        "false_contention_rate": rate(c.false_contention), "global_contention_rate": rate(c.global_contention()),
        "retained_refusals": c.retained_refusals,
        "detection": detection, "recovery": recovery,
        "slowest_detections": kills.slowest, "detections_timed_before_death": kills.timed_before_death,
        "restart_light_peak_rss": light_rss, "member_peak_rss": member_rss,
        "bank_total_expected": expected as i64, "bank_total_actual": total as i64,
        "invariants": invariants.iter().map(|(n, ok, d, ev)| {
            let mut v = json!({"name": n, "ok": ok, "detail": d});
            if !ok && !ev.is_null() {
                v["evidence"] = ev.clone();
            }
            v
        }).collect::<Vec<_>>(),
        "invariants_ok": ok,
        "plex": if tmp.keep { Some(tmp.dir.display().to_string()) } else { None },
    });
    // (Beside the json! above: one more key there exceeds its recursion limit.)
    doc["recovery_steps"] = check::STEPS
        .iter()
        .map(|(k, _)| k.as_str())
        .map(|n| {
            (
                n.to_string(),
                json!(Summary::of(
                    kills.steps_us.get(n).cloned().unwrap_or_default(),
                    "µs"
                )),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into();
    doc["deadlocks"] = json!(sim.deadlocks);
    doc["deadlock_detection_ms"] = json!(deadlock_detection);
    doc["deadlocks_source"] = json!(
        "closing summaries of the members stopped normally; deadlock_victim_events and deadlock_victim_waits_ms: every victim's event (killed members' included)"
    );
    doc["deadlock_victim_events"] = json!(victim_events);
    doc["deadlock_victim_waits_ms"] = json!(victim_waits);
    doc["stop_to_fenced"] = json!(Summary::of(kills.stop_to_fenced_ms.iter().copied(), "ms"));
    doc["stop_to_detected"] = json!(Summary::of(kills.stop_to_detected_ms.iter().copied(), "ms"));
    if let Some(dir) = &a.plot {
        let written = charts(dir, sim, &procs, &kills)?;
        if !a.json && !a.csv {
            for f in written {
                eprintln!("cfctl sim: wrote {}", f.display());
            }
        }
    }
    if a.json {
        crate::out::print_json(&doc);
    } else if a.csv {
        crate::csvout::print_flat(&doc)?;
    } else {
        outln!(
            "sim: {} members × {} thread(s), {} lock entries, seed {}, {} (cfctl {})",
            a.members,
            a.threads,
            a.lock_entries,
            a.seed,
            crate::duration::human(elapsed),
            env!("CARGO_PKG_VERSION")
        );
        outln!(
            "  workload: {} skew, {}% reads, {} accounts per transaction, think {}, {}, locks {}{}",
            a.skew,
            a.read_pct,
            a.tx_size,
            crate::duration::human(a.think),
            a.rate
                .map_or("closed loop".to_string(), |r| format!("{r}/s per worker")),
            a.lock_order,
            if a.hierarchy { ", table then rows" } else { "" }
        );
        outln!(
            "  transactions: {committed} committed ({:.0}/s), {backed_out} backed out",
            committed as f64 / secs
        );
        if !by_kind.is_empty() {
            outln!("    by kind, from the members stopped normally (a killed member's counts die with it):");
        }
        for (k, n, l) in &by_kind {
            outln!(
                "    {k:<8} {n} ({:.0}/s) latency {}",
                *n as f64 / secs,
                l.line()
            );
        }
        outln!(
            "  deadlocks: {} victims in the members' closing summaries, detection {}",
            sim.deadlocks,
            deadlock_detection.line()
        );
        outln!(
            "    {victim_events} deadlock_victim events (killed members' too), waited {}",
            victim_waits.line()
        );
        outln!(
            "  lock requests: {}, contention IRLM {:.3}%, XES {:.3}%, false {:.3}%; retained refusals {}",
            c.requests,
            100.0 * rate(c.irlm_contention),
            100.0 * rate(c.xes_contention),
            100.0 * rate(c.false_contention),
            c.retained_refusals
        );
        let list = |m: &BTreeMap<&str, u64>| {
            m.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        outln!("  faults injected: {faults_total} ({})", list(&sim.kinds));
        outln!("  kills: {kills_total} ({})", list(&kills_by_kind));
        outln!(
            "  member deaths: {deaths_total} ({})",
            list(&deaths_by_cause)
        );
        if a.crash_points {
            outln!("  crash points: {armed} armed, {fired} fired");
        }
        outln!(
            "  recoveries: {} (restart light failures: {}); events {} ({} lost)",
            doc["recoveries"],
            doc["restart_light_failures"],
            head,
            lost
        );
        outln!("  detection: {}", detection.line());
        outln!("  kill to all retained locks released: {}", recovery.line());
        outln!("  where the time goes (each step after the kill):");
        for n in check::STEPS.map(|(k, _)| k.as_str()) {
            let s = Summary::of(kills.steps_us.get(n).cloned().unwrap_or_default(), "µs");
            outln!("    {n:<22} {}", s.line());
        }
        if !kills.stop_to_fenced_ms.is_empty() {
            let s = Summary::of(kills.stop_to_fenced_ms.iter().copied(), "ms");
            outln!("  stop to fenced: {}", s.line());
            let s = Summary::of(kills.stop_to_detected_ms.iter().copied(), "ms");
            outln!("  stop to detected: {}", s.line());
        }
        outln!("  restart light peak RSS: {}", light_rss.line());
        outln!("  normal member peak RSS: {}", member_rss.line());
        outln!("  invariants:");
        for (n, ok, d, _) in &invariants {
            outln!(
                "    {:<30} {}{}",
                n,
                if *ok { "ok" } else { "BROKEN" },
                if *ok { String::new() } else { format!("  {d}") }
            );
        }
        if interrupted() {
            outln!("  interrupted: the faults stopped early");
        }
        if tmp.keep {
            outln!("  plex kept at {}", tmp.dir.display());
        }
    }
    Ok(crate::exit::code(if !ok {
        crate::exit::INVARIANT
    } else if interrupted() {
        crate::exit::INTERRUPTED
    } else {
        crate::exit::SUCCESS
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        sim: SimArgs,
    }

    fn parse(extra: &[&str]) -> Result<SimArgs, clap::Error> {
        Cmd::try_parse_from(["sim"].iter().chain(extra)).map(|c| c.sim)
    }

    #[test]
    fn lock_order_and_hierarchy_parse_and_reach_the_config() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.lock_order, cf_node::bank::LockOrder::Sorted);
        assert!(!a.hierarchy);
        let a = parse(&["--lock-order", "random", "--hierarchy"]).unwrap();
        assert_eq!(a.lock_order, cf_node::bank::LockOrder::Random);
        assert!(a.hierarchy);
        a.check().unwrap();
        let config = serde_json::to_value(&a).unwrap();
        assert_eq!(config["lock_order"], "random");
        assert_eq!(config["hierarchy"], true);
        assert!(parse(&["--lock-order", "backwards"]).is_err());
    }
}
