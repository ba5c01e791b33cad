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

pub mod check;
pub mod points;

use crate::procs::{cf_node_binary, MemberProc, TempPlex};
use anyhow::{bail, Result};
use cf_core::events::{self, Event, EventKind};
use cf_core::{inspect, requests, CreateOptions, Plex, Region, Sizes};
use cf_node::bank::Rng;
use cf_node::store::Store;
use check::{EndHow, ProcLife};
use clap::Args;
use points::{Arming, Planner, Scale};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Set by SIGINT or SIGTERM: stop injecting faults, let the recoveries
/// finish, stop the members and report (a second signal ends the sim at once;
/// its members die with it).
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn catch_stop_signals() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let act = SigAction::new(
        SigHandler::Handler(on_stop_signal),
        SaFlags::SA_RESETHAND,
        SigSet::empty(),
    );
    for s in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe.
        let _ = unsafe { sigaction(s, &act) };
    }
}

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// Lock table entries of the sim's region unless told.
const DEFAULT_LOCK_ENTRIES: u32 = 1 << 16;
/// An event slot still being written is read again for this long before it
/// is taken as torn (its writer was killed mid-write).
const TORN_AFTER: Duration = Duration::from_millis(500);

#[derive(Args)]
pub struct SimArgs {
    /// Members to run, 2 to 16 (kept at this number: a killed member is restarted after its recovery)
    #[arg(long, default_value_t = 3)]
    members: u32,
    /// Worker threads of each member running the workload, 1 to 16 (cf-node run --threads)
    #[arg(long, default_value_t = 1)]
    threads: u32,
    /// Lock table entries of the sim's region: a power of two from 16 to 1073741824 (2^30).
    /// A small table puts false contention and the latched path on most requests
    #[arg(long, default_value_t = DEFAULT_LOCK_ENTRIES)]
    lock_entries: u32,
    /// Record entries per member: a multiple of 64, at least 64 × (threads + 2), at most 2^24
    #[arg(long, default_value_t = 1024)]
    records_per_member: u32,
    /// Longest run time in seconds (the run also ends after --kills faults)
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Mean time between faults, in milliseconds
    #[arg(long, default_value_t = 500)]
    kill_every: u64,
    /// Stop after this many faults
    #[arg(long)]
    kills: Option<u64>,
    /// Seed of the fault schedule and of the crash points (same seed, same schedule)
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Pause between the two legs of a transfer, in microseconds
    #[arg(long, default_value_t = 500)]
    pause_us: u64,
    /// Also kill restarters: the member that claimed a restart request, or the restart-light process
    #[arg(long)]
    kill_restarters: bool,
    /// Every this many milliseconds, kill every member at once
    #[arg(long)]
    kill_all_every: Option<u64>,
    /// Accounts in the bank (at least 2; fewer accounts, more real contention)
    #[arg(long, default_value_t = 1000)]
    accounts: u64,
    /// Buffer pool of each member, in MiB
    #[arg(long, default_value_t = 16)]
    buffer_pool_mb: u64,
    /// Keep the plex afterwards (it is always kept when an invariant breaks)
    #[arg(long)]
    keep: bool,
    /// Also let members die at named crash points inside the protocols: one member start in
    /// --arm-one-in (and the restart lights it starts) dies once at a point of
    /// cf_core::crash::CRASH_POINTS (lock word and latch windows, cleanup of another member,
    /// connect, disconnect, restart light, request handler, transactions, log writes), at a
    /// hit count drawn with it from the seed. Needs a build with the `crash-points` feature;
    /// without it the points are inert
    #[arg(long)]
    crash_points: bool,
    /// With --crash-points: draw only the points whose names start with one of these
    /// (comma-separated, e.g. `restart_light.,handler.`)
    #[arg(long, value_delimiter = ',')]
    crash_point_names: Vec<String>,
    /// With --crash-points: arm one member start in this many (1: every start)
    #[arg(long, default_value_t = 4)]
    arm_one_in: u64,
    /// Also write every event read and every member process started (PID, start, end and
    /// how it ended, armed crash point) to FILE, one JSON document per line, for analysis
    #[arg(long, value_name = "FILE")]
    history_out: Option<PathBuf>,
    /// Print the report as one JSON document
    #[arg(long)]
    json: bool,
}

impl SimArgs {
    /// Every option checked before anything is created; the error names it.
    fn check(&self) -> Result<()> {
        if !(2..=16).contains(&self.members) {
            bail!("--members must be 2 to 16, got {}", self.members);
        }
        if !(1..=16).contains(&self.threads) {
            bail!("--threads must be 1 to 16, got {}", self.threads);
        }
        let e = self.lock_entries;
        if !(16..=cf_core::layout::MAX_LOCK_ENTRIES).contains(&e) || !e.is_power_of_two() {
            bail!("--lock-entries must be a power of two from 16 to 2^30, got {e}");
        }
        let r = self.records_per_member;
        let least = 64 * (self.threads + 2);
        if !r.is_multiple_of(64) || r < least || r > 1 << 24 {
            bail!(
                "--records-per-member must be a multiple of 64 from {least} (64 × (threads + 2)) to 2^24, got {r}"
            );
        }
        if self.accounts < 2 {
            bail!("--accounts must be at least 2, got {}", self.accounts);
        }
        if self.kill_every == 0 {
            bail!("--kill-every must be at least 1 ms");
        }
        if self.kill_all_every == Some(0) {
            bail!("--kill-all-every must be at least 1 ms");
        }
        if self.crash_points {
            for n in &self.crash_point_names {
                if !cf_core::crash::CRASH_POINTS
                    .iter()
                    .any(|p| p.starts_with(n.as_str()))
                {
                    bail!("--crash-point-names: no crash point starts with {n:?}");
                }
            }
        }
        if self.arm_one_in == 0 {
            bail!("--arm-one-in must be at least 1");
        }
        if !(self.duration.is_finite() && self.duration > 0.0) {
            bail!("--duration must be a positive number of seconds");
        }
        Ok(())
    }
}

/// What a scheduled fault kills.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Member(u64),
    Claimer(u64),
    RestartLight(u64),
    All,
}

impl Fault {
    fn kind(self) -> &'static str {
        match self {
            Fault::Member(_) => "member",
            Fault::Claimer(_) => "restarter",
            Fault::RestartLight(_) => "restart_light",
            Fault::All => "all_members",
        }
    }
}

/// The fault schedule: a pure function of the seed and the options.
fn schedule(a: &SimArgs) -> Vec<(Duration, Fault)> {
    let mut rng = Rng::seeded(points::mix(a.seed) ^ 0x5eed);
    let mut out = Vec::new();
    let mut t = Duration::ZERO;
    let mut next_all = a.kill_all_every.map(Duration::from_millis);
    let limit = a.kills.unwrap_or(u64::MAX);
    while (out.len() as u64) < limit {
        let gap = a.kill_every / 2 + rng.below(a.kill_every.max(1));
        t += Duration::from_millis(gap);
        if t.as_secs_f64() >= a.duration {
            break;
        }
        if let Some(all) = next_all {
            if t >= all {
                out.push((t, Fault::All));
                next_all = a.kill_all_every.map(|e| all + Duration::from_millis(e));
                continue;
            }
        }
        let target = rng.next_u64();
        let f = match (a.kill_restarters, rng.below(3)) {
            (true, 1) => Fault::Claimer(target),
            (true, 2) => Fault::RestartLight(target),
            _ => Fault::Member(target),
        };
        out.push((t, f));
    }
    out
}

fn stats(mut v: Vec<f64>) -> Value {
    if v.is_empty() {
        return json!({ "count": 0, "min": null, "p50": null, "p99": null, "max": null });
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    json!({ "count": v.len(), "min": v[0], "p50": q(0.5), "p99": q(0.99), "max": v[v.len() - 1] })
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
        (0..self.region.members()).any(|id| {
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
        let pid = r.life.pid as u64;
        let name = r.life.name.clone();
        let crash = crash.map(|(t, spec)| {
            let own = self
                .events
                .values()
                .rev()
                .take_while(|e| e.time_ns + 20_000_000 >= t)
                .filter(|e| {
                    e.a == pid
                        && match e.kind {
                            EventKind::Connected => e.member == name,
                            EventKind::Claimed => e.by.as_deref() == Some(name.as_str()),
                            _ => false,
                        }
                })
                .map(|e| e.time_ns)
                .max()
                .unwrap_or(0);
            (t.max(own), spec)
        });
        let r = &mut self.procs[rec];
        let kind = match crash {
            Some((t, spec)) => {
                r.life.end = Some((t, EndHow::CrashPoint(spec)));
                "crash_point"
            }
            None => {
                r.life.end = Some((now, EndHow::Exited(describe(st))));
                "exited"
            }
        };
        // A start that failed before its "running" line is counted apart.
        let kind = if r.life.running {
            kind
        } else if kind == "crash_point" {
            "crash_point_at_start"
        } else {
            "exited_at_start"
        };
        *self.kinds.entry(kind).or_default() += 1;
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
        let mut p = MemberProc::spawn(&self.exe, self.dir, &Self::name(i), &self.args, &env)?;
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
                        *self.kinds.entry("start_timeout").or_default() += 1;
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
                self.ended_by_itself(live.rec, st);
            }
        }
        let pids = self.member_pids();
        self.orphans.reap(&pids);
    }

    fn alive_indices(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&i| self.members[i].is_some())
            .collect()
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
        match f {
            Fault::All => {
                for i in alive {
                    self.kill(i, f.kind());
                }
            }
            Fault::Member(t) => self.kill(alive[(t % alive.len() as u64) as usize], f.kind()),
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
                    e.kind == kind && e.member == vname
                });
                match (f, seen) {
                    (Fault::Claimer(_), Some(e)) => {
                        // The member that claimed, if the process that claimed still runs.
                        let claimer = (0..self.members.len()).find(|&i| {
                            e.by.as_deref() == Some(Self::name(i).as_str())
                                && self.members[i]
                                    .as_ref()
                                    .is_some_and(|l| l.proc.pid() as u64 == e.a)
                        });
                        if let Some(i) = claimer {
                            self.kill(i, f.kind());
                        }
                    }
                    // Harmless if it already ended.
                    (Fault::RestartLight(_), Some(e)) if self.kill_light(e.a as u32) => {
                        self.light_kills += 1;
                    }
                    _ => {}
                }
            }
        }
        Ok(())
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
    catch_stop_signals();
    let mut tmp = TempPlex::fresh("sim");
    if let Some(p) = plex_arg {
        tmp.dir = p.to_path_buf();
        tmp.keep = true;
    }
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
    let tty = std::io::stdout().is_terminal() && !a.json;
    let args = vec![
        "--pause-us".to_string(),
        a.pause_us.to_string(),
        "--buffer-pool-mb".into(),
        a.buffer_pool_mb.to_string(),
        "--threads".into(),
        a.threads.to_string(),
        "--json".into(),
    ];
    let scale = Scale {
        members: a.members,
        threads: a.threads,
        lock_entries: a.lock_entries,
        kill_every_ms: a.kill_every,
        pause_us: a.pause_us,
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
        normal_rss: Vec::new(),
        planner: a
            .crash_points
            .then(|| Planner::new(a.seed, scale, &sim_points)),
        arm_one_in: a.arm_one_in,
        armings: 0,
        final_phase: false,
        clean_stops: 0,
        failed_stops: Vec::new(),
        start_failures: 0,
        liveness: Vec::new(),
        t0_ns: now_ns(),
    };
    if let Some(why) = sim.restart_dead(Duration::from_secs(30))? {
        bail!("the members did not start: {why}");
    }
    let t0 = Instant::now();
    sim.t0_ns = now_ns();
    let progress = |sim: &Sim, t0: Instant| {
        let retained = inspect::retained(&sim.region).map(|r| r.len()).unwrap_or(0);
        let deaths = sim.procs.iter().filter(|p| p.life.end.is_some()).count();
        let done = sim
            .events
            .values()
            .filter(|e| e.kind == EventKind::RecoveryCompleted)
            .count();
        eprint!(
            "\r{:6.1}s  transactions {:>8}  ended {:>5}  recoveries {:>5}  retained now {:>3}   ",
            t0.elapsed().as_secs_f64(),
            inspect::committed_total(&sim.region),
            deaths,
            done,
            retained
        );
    };
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
        if tty {
            progress(&sim, t0);
        }
    }
    while sim.liveness.is_empty()
        && !interrupted()
        && t0.elapsed().as_secs_f64() < a.duration
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
    if tty {
        progress(&sim, t0);
        eprintln!();
    }
    sim.pump();
    // Slots still being written at the end are read once more after a pause.
    if !sim.unpublished.is_empty() {
        std::thread::sleep(Duration::from_millis(50));
        sim.pump();
    }
    report(&a, &sim, &store, elapsed, &mut tmp)
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
        let v = json!({"event": {
            "seq": e.seq, "kind": e.kind.as_str(), "member": e.member, "by": e.by,
            "t_s": (e.time_ns as f64 - t0) / 1e9, "a": e.a, "b": e.b, "c": e.c,
        }});
        writeln!(w, "{v}").map_err(io)?;
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
    let count = |k: EventKind| ev.values().filter(|e| e.kind == k).count() as u64;
    let procs: Vec<ProcLife> = sim.procs.iter().map(|p| p.life.clone()).collect();
    if let Some(path) = &a.history_out {
        write_history(path, sim)?;
    }
    let kills = check::check_kills(&procs, ev, head, t0);
    let lives = check::check_lives(ev, head, t0);
    let lost = check::missing_seqs(ev, head).len();
    let member_deaths = procs
        .iter()
        .filter(|p| matches!(p.end, Some((_, ref h)) if *h != EndHow::Stopped))
        .count();
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
        .filter(|e| matches!(e.kind, EventKind::BackedOut | EventKind::RecoveredAtRestart))
        .map(|e| e.a)
        .sum();
    let light_rss: Vec<f64> = ev
        .values()
        .filter(|e| e.kind == EventKind::TerminatedNormally)
        .map(|e| e.a as f64)
        .collect();
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
    if !ok {
        tmp.keep = true;
    }
    let doc = json!({
        "seed": a.seed, "members": a.members, "threads": a.threads, "lock_entries": a.lock_entries,
        "records_per_member": a.records_per_member, "accounts": a.accounts,
        "elapsed_s": elapsed.as_secs_f64(),
        "kills": member_deaths as u64 + sim.light_kills, "member_kills": member_deaths,
        "member_deaths_connected": kills.deaths, "member_deaths_before_connect": kills.before_connect,
        "restart_light_kills": sim.light_kills, "kills_by_kind": sim.kinds,
        "start_failures": sim.start_failures,
        "recoveries": count(EventKind::RecoveryCompleted),
        "restart_lights_terminated_normally": count(EventKind::TerminatedNormally),
        "restart_light_failures": count(EventKind::RestartLightFailed),
        "lives_unverifiable_lost_events": lives.unverifiable,
        "events": head, "events_lost": lost,
        "crash_points": {
            "armed": by_point.values().map(|v| v.0).sum::<u64>(), "fired": fired,
            "by_point": by_point.iter().map(|(k, v)| (k.to_string(), json!({"armed": v.0, "fired": v.1}))).collect::<serde_json::Map<_, _>>(),
        },
        "transactions_committed": committed, "transactions_backed_out": backed_out,
        "throughput_tps": committed as f64 / elapsed.as_secs_f64(),
        "lock_requests": c.requests, "contention_rate": rate(c.contention), "false_contention_rate": rate(c.false_contention),
        "detection_us": stats(kills.detection_us.clone()), "recovery_ms": stats(kills.recovery_ms.clone()),
        "slowest_detections": kills.slowest, "detections_timed_before_death": kills.timed_before_death,
        "restart_light_peak_rss_kib": stats(light_rss), "member_peak_rss_kib": stats(sim.normal_rss.iter().map(|&x| x as f64).collect()),
        "bank_total_expected": expected as i64, "bank_total_actual": total as i64,
        "invariants": invariants.iter().map(|(n, ok, d, ev)| {
            let mut v = json!({"name": n, "ok": ok, "detail": d});
            if !ok && !ev.is_null() {
                v["evidence"] = ev.clone();
            }
            v
        }).collect::<Vec<_>>(),
        "invariants_ok": ok,
        "interrupted": interrupted(),
        "plex": if tmp.keep { Some(tmp.dir.display().to_string()) } else { None },
    });
    if a.json {
        crate::out::print_json(&doc);
    } else {
        println!(
            "sim: {} members × {} thread(s), {} lock entries, seed {}, {:.1} s",
            a.members,
            a.threads,
            a.lock_entries,
            a.seed,
            elapsed.as_secs_f64()
        );
        println!(
            "  transactions: {committed} committed ({:.0}/s), {backed_out} backed out",
            doc["throughput_tps"].as_f64().unwrap_or(0.0)
        );
        println!(
            "  lock requests: {}, contention {:.3}%, false contention {:.3}%",
            c.requests,
            100.0 * rate(c.contention),
            100.0 * rate(c.false_contention)
        );
        println!(
            "  kills: {} members, {} restart-light processes (by kind: {})",
            member_deaths,
            sim.light_kills,
            sim.kinds
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if a.crash_points {
            println!(
                "  crash points: {} armed, {} fired",
                doc["crash_points"]["armed"], fired
            );
        }
        println!(
            "  recoveries: {} (restart light failures: {}); events {} ({} lost)",
            doc["recoveries"], doc["restart_light_failures"], head, lost
        );
        let line = |label: &str, v: &Value, unit: &str| {
            println!(
                "  {label}: min {} / p50 {} / p99 {} / max {} {unit} (n={})",
                v["min"], v["p50"], v["p99"], v["max"], v["count"]
            );
        };
        line("detection", &doc["detection_us"], "µs");
        line(
            "kill to all retained locks released",
            &doc["recovery_ms"],
            "ms",
        );
        line(
            "restart light peak RSS",
            &doc["restart_light_peak_rss_kib"],
            "KiB",
        );
        line("normal member peak RSS", &doc["member_peak_rss_kib"], "KiB");
        println!("  invariants:");
        for (n, ok, d, _) in &invariants {
            println!(
                "    {:<30} {}  {}",
                n,
                if *ok { "ok" } else { "BROKEN" },
                if *ok { "" } else { d.as_str() }
            );
        }
        if interrupted() {
            println!("  interrupted: the faults stopped early");
        }
        if tmp.keep {
            println!("  plex kept at {}", tmp.dir.display());
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
