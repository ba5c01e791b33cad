//! `cfctl sim`: many members as real processes, faults injected from a seeded
//! schedule, and a report with a verdict per invariant that can be checked
//! after the fact.

use crate::procs::{cf_node_binary, MemberProc, TempPlex};
use anyhow::{bail, Result};
use cf_core::events::{self, Event, EventKind};
use cf_core::{inspect, requests, CreateOptions, Plex, Region, Sizes};
use cf_node::bank::Rng;
use cf_node::store::Store;
use clap::Args;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct SimArgs {
    /// Members to run (kept at this number: a killed member is restarted after its recovery)
    #[arg(long, default_value_t = 3)]
    members: u32,
    /// Longest run time in seconds (the run also ends after --kills faults)
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Mean time between faults, in milliseconds
    #[arg(long, default_value_t = 500)]
    kill_every: u64,
    /// Stop after this many faults
    #[arg(long)]
    kills: Option<u64>,
    /// Seed of the fault schedule (same seed, same schedule)
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
    /// Accounts in the bank
    #[arg(long, default_value_t = 1000)]
    accounts: u64,
    /// Buffer pool of each member, in MiB
    #[arg(long, default_value_t = 16)]
    buffer_pool_mb: u64,
    /// Keep the plex afterwards (it is always kept when an invariant breaks)
    #[arg(long)]
    keep: bool,
    /// Also let members die at named crash points inside the protocols: one member start in
    /// four (and the restart lights it starts) dies once at a point drawn from the seed
    /// (bank.between_legs, handler.claimed, restart_light.*). Needs a build with the
    /// `crash-points` feature; without it the points are inert
    #[arg(long)]
    crash_points: bool,
    /// Print the report as one JSON document
    #[arg(long)]
    json: bool,
}

/// The crash points `--crash-points` draws from (cf-node's recovery and workload).
const SIM_CRASH_POINTS: &[&str] = &[
    "bank.between_legs",
    "handler.claimed",
    "restart_light.connected",
    "restart_light.backed_out_some",
    "restart_light.backed_out",
    "restart_light.released_some",
    "restart_light.disconnected",
];

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
    let mut rng = Rng::seeded(a.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5eed);
    let mut out = Vec::new();
    let mut t = Duration::ZERO;
    let mut next_all = a.kill_all_every.map(Duration::from_millis);
    let limit = a.kills.unwrap_or(u64::MAX);
    while (out.len() as u64) < limit && t.as_secs_f64() < a.duration {
        let gap = a.kill_every / 2 + rng.below(a.kill_every.max(1));
        t += Duration::from_millis(gap);
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

struct Sim<'a> {
    region: Region,
    dir: &'a Path,
    exe: std::path::PathBuf,
    args: Vec<String>,
    members: Vec<Option<MemberProc>>,
    events: Vec<Event>,
    cursor: u64,
    /// Per kill: member name, kill time.
    kills: Vec<(String, u64)>,
    kinds: HashMap<&'static str, u64>,
    /// Restart-light processes killed (their member's death is already in `kills`).
    light_kills: u64,
    normal_rss: Vec<u64>,
    /// `--crash-points`: a seeded generator for the points, and how many starts so far.
    crash_rng: Option<Rng>,
    starts: u64,
    /// The faults are over: members are started unarmed.
    final_phase: bool,
    /// When each member was last seen running (a crash-point death happened after).
    last_seen: Vec<u64>,
    clean_stops: u64,
    failed_stops: u64,
}

impl Sim<'_> {
    fn pump(&mut self) {
        let new = events::read_since(&self.region, self.cursor);
        if let Some(last) = new.last() {
            self.cursor = last.seq + 1;
        }
        self.events.extend(new);
    }

    fn name(i: usize) -> String {
        format!("M{i}")
    }

    /// Start member `i` (armed with a crash point drawn from the seed, with --crash-points).
    fn start(&mut self, i: usize) -> Result<MemberProc> {
        let mut env = Vec::new();
        // One start in four is armed, and none once the faults are over.
        let armed = !self.final_phase && self.crash_rng.as_mut().is_some_and(|r| r.below(4) == 0);
        if let Some(rng) = self.crash_rng.as_mut().filter(|_| armed) {
            let point = SIM_CRASH_POINTS[rng.below(SIM_CRASH_POINTS.len() as u64) as usize];
            self.starts += 1;
            let once = self.dir.join(format!("crash-once-{}", self.starts));
            env.push(("CF_CRASH_AT".to_string(), point.to_string()));
            env.push(("CF_CRASH_ONCE".to_string(), once.display().to_string()));
        }
        self.last_seen[i] = cf_core::connector::now_ns();
        MemberProc::start_with_env(&self.exe, self.dir, &Self::name(i), &self.args, &env)
    }

    /// Members that died by themselves (at a crash point) count as kills.
    fn reap_crashed(&mut self) {
        let now = cf_core::connector::now_ns();
        for i in 0..self.members.len() {
            let ended = self.members[i].as_mut().is_some_and(|m| m.ended());
            if ended {
                self.members[i] = None;
                self.kills.push((Self::name(i), self.last_seen[i]));
                *self.kinds.entry("crash_point").or_default() += 1;
            } else {
                self.last_seen[i] = now;
            }
        }
    }

    fn alive_indices(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&i| self.members[i].is_some())
            .collect()
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut m) = self.members[i].take() {
            let t = cf_core::connector::now_ns();
            m.kill9();
            self.kills.push((m.name.clone(), t));
        }
    }

    /// Wait for an event matching `f` after `from`, pumping; None on timeout.
    fn wait_event(
        &mut self,
        from: u64,
        limit: Duration,
        f: impl Fn(&Event) -> bool,
    ) -> Option<Event> {
        let t = Instant::now();
        while t.elapsed() < limit {
            self.pump();
            if let Some(e) = self.events.iter().find(|e| e.seq >= from && f(e)) {
                return Some(e.clone());
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

    fn restart_dead(&mut self, limit: Duration) -> Result<bool> {
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
                self.reap_crashed();
                if self.alive_indices().is_empty() || self.recovered(&name)? {
                    break;
                }
                if t.elapsed() > limit {
                    return Ok(false);
                }
                self.pump();
                std::thread::sleep(Duration::from_millis(1));
            }
            // A start can race with a restart light of the same name still
            // finishing; try a few times.
            let mut started = None;
            for _ in 0..20 {
                match self.start(i) {
                    Ok(m) => {
                        started = Some(m);
                        break;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
            match started {
                Some(m) => self.members[i] = Some(m),
                None => bail!("member {name} could not be restarted"),
            }
        }
        Ok(true)
    }

    fn inject(&mut self, f: Fault) -> Result<()> {
        let alive = self.alive_indices();
        if alive.is_empty() {
            return Ok(());
        }
        *self.kinds.entry(f.kind()).or_default() += 1;
        match f {
            Fault::All => {
                for i in alive {
                    self.kill(i);
                }
            }
            Fault::Member(t) => self.kill(alive[(t % alive.len() as u64) as usize]),
            Fault::Claimer(t) | Fault::RestartLight(t) => {
                let victim = alive[(t % alive.len() as u64) as usize];
                let from = events::next_seq(&self.region);
                let vname = Self::name(victim);
                self.kill(victim);
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
                        if let Some(i) =
                            e.by.as_deref()
                                .and_then(|b| (0..self.members.len()).find(|&i| Self::name(i) == b))
                        {
                            self.kill(i);
                        }
                    }
                    (Fault::RestartLight(_), Some(e)) => {
                        // The restart-light process (PID in the event); harmless if it already ended.
                        let pid = nix::unistd::Pid::from_raw(e.a as i32);
                        if let Ok(Some(p)) = cf_core::ProcessId::of(e.a as u32) {
                            if p.is_alive() {
                                let _ =
                                    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                                self.light_kills += 1;
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

pub fn run(plex_arg: Option<&Path>, a: SimArgs) -> Result<ExitCode> {
    if a.members < 2 || a.members > 16 {
        bail!("--members must be 2 to 16");
    }
    let exe = cf_node_binary()?;
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
            lock_entries: 1 << 16,
            members: 32,
            records_per_member: 1024,
        },
        group_access: false,
    };
    let region = Region::create(&plex, &opts)?;
    let store = Store::create(&dir, a.accounts, 1000, false)?;
    let plan = schedule(&a);
    let tty = std::io::stdout().is_terminal();
    let args = vec![
        "--pause-us".to_string(),
        a.pause_us.to_string(),
        "--buffer-pool-mb".into(),
        a.buffer_pool_mb.to_string(),
        "--json".into(),
    ];
    let mut sim = Sim {
        region,
        dir: &dir,
        exe,
        args,
        members: Vec::new(),
        events: Vec::new(),
        cursor: 0,
        kills: Vec::new(),
        kinds: HashMap::new(),
        light_kills: 0,
        normal_rss: Vec::new(),
        crash_rng: a.crash_points.then(|| Rng::seeded(a.seed ^ 0xc0ffee)),
        starts: 0,
        final_phase: false,
        last_seen: vec![0; a.members as usize],
        clean_stops: 0,
        failed_stops: 0,
    };
    for i in 0..a.members as usize {
        sim.members.push(None);
        let m = sim.start(i)?;
        sim.members[i] = Some(m);
    }
    let t0 = Instant::now();
    let mut liveness_ok = true;
    for (at, fault) in &plan {
        while t0.elapsed() < *at {
            sim.pump();
            sim.reap_crashed();
            std::thread::sleep(Duration::from_millis(2));
        }
        sim.inject(*fault)?;
        if !sim.restart_dead(Duration::from_secs(30))? {
            liveness_ok = false;
            break;
        }
        if tty {
            let retained = inspect::retained(&sim.region).map(|r| r.len()).unwrap_or(0);
            eprint!(
                "\r{:6.1}s  transactions {:>8}  kills {:>4}  recoveries {:>4}  retained now {:>3}   ",
                t0.elapsed().as_secs_f64(),
                inspect::committed_total(&sim.region),
                sim.kills.len(),
                sim.events.iter().filter(|e| e.kind == EventKind::TerminatedNormally).count(),
                retained
            );
        }
    }
    while t0.elapsed().as_secs_f64() < a.duration && a.kills.is_none() {
        sim.pump();
        std::thread::sleep(Duration::from_millis(5));
    }
    // Let the last recoveries finish (restarting, unarmed, any member that
    // died at a crash point meanwhile), then stop everyone normally.
    sim.final_phase = true;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        sim.pump();
        sim.reap_crashed();
        if sim.members.iter().any(|m| m.is_none()) {
            if !sim.restart_dead(Duration::from_secs(30))? {
                liveness_ok = false;
                break;
            }
            continue;
        }
        if requests::list(&sim.region)?.is_empty() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let elapsed = t0.elapsed();
    for m in sim.members.iter_mut().flatten() {
        let (line, ok) = m.stop();
        if ok {
            sim.clean_stops += 1
        } else {
            sim.failed_stops += 1
        }
        if let Ok(v) = serde_json::from_str::<Value>(&line) {
            sim.normal_rss.extend(v["peak_rss_kib"].as_u64());
        }
    }
    sim.members.clear();
    if tty {
        eprintln!();
    }
    sim.pump();
    report(&a, &sim, &store, elapsed, liveness_ok, &mut tmp)
}

fn report(
    a: &SimArgs,
    sim: &Sim,
    store: &Store,
    elapsed: Duration,
    liveness_ok: bool,
    tmp: &mut TempPlex,
) -> Result<ExitCode> {
    let region = &sim.region;
    let ev = &sim.events;
    let count = |k: EventKind| ev.iter().filter(|e| e.kind == k).count() as u64;
    // Detection and recovery times per kill: first `detected` and first
    // completion of that member after the kill.
    let mut detection_us = Vec::new();
    let mut recovery_ms = Vec::new();
    for (name, t) in &sim.kills {
        let after = |k: EventKind| {
            ev.iter()
                .find(|e| e.member == *name && e.kind == k && e.time_ns >= *t)
        };
        if let Some(d) = after(EventKind::Detected) {
            detection_us.push((d.time_ns - t) as f64 / 1e3);
        }
        let done = ev.iter().find(|e| {
            e.member == *name && e.time_ns >= *t && e.kind == EventKind::RecoveryCompleted
        });
        if let Some(d) = done {
            recovery_ms.push((d.time_ns - t) as f64 / 1e6);
        }
    }
    // Every death of a member incarnation is followed by exactly one completed
    // recovery, and at most one restart light that terminated normally, before
    // the member connects again. (A restart light killed after it disconnected
    // leaves the recovery complete without its `terminated_normally`.)
    // A process killed while it wrote an event leaves that event unreadable
    // (a gap in the sequence numbers): a life of a member whose events span
    // such a gap cannot be checked, and is counted apart.
    let seqs: std::collections::BTreeSet<u64> = ev.iter().map(|e| e.seq).collect();
    let gap_in = |from: u64, to: u64| (from..=to).any(|q| !seqs.contains(&q));
    let mut one_restart_each = true;
    let mut unverifiable = 0u64;
    let names: std::collections::BTreeSet<&str> = ev.iter().map(|e| e.member.as_str()).collect();
    for n in names {
        let (mut died, mut done, mut ended, mut first) = (false, 0, 0, None);
        let mut ok = |died: bool, done: u32, ended: u32, span: Option<(u64, u64)>| {
            if (died && done != 1) || (!died && done != 0) || ended > 1 {
                match span {
                    Some((a, b)) if gap_in(a, b) => unverifiable += 1,
                    _ => one_restart_each = false,
                }
            }
        };
        let mut last = 0;
        for e in ev.iter().filter(|e| e.member == n) {
            first.get_or_insert(e.seq);
            last = e.seq;
            match e.kind {
                EventKind::Detected => died = true,
                EventKind::RecoveryCompleted => done += 1,
                EventKind::TerminatedNormally => ended += 1,
                EventKind::Connected => {
                    ok(died, done, ended, first.map(|f| (f, e.seq)));
                    (died, done, ended, first) = (false, 0, 0, None);
                }
                _ => {}
            }
        }
        ok(
            died,
            done,
            ended,
            first.map(|f| (f, last.max(seqs.last().copied().unwrap_or(0)))),
        );
    }
    let total = store.total();
    let expected = store.expected_total();
    let locks = inspect::locks(region)?;
    let members_left = inspect::members(region)?;
    let reqs = requests::list(region)?;
    let problems = inspect::verify(region);
    let invariants = vec![
        (
            "bank_total",
            total == expected,
            format!("total {total}, expected {expected}"),
        ),
        (
            "no_retained_or_records_left",
            locks.is_empty(),
            format!("{} records left", locks.len()),
        ),
        (
            "no_connector_left",
            members_left.is_empty(),
            format!("{} connectors left", members_left.len()),
        ),
        (
            "no_request_or_claim_left",
            reqs.is_empty(),
            format!("{} requests left", reqs.len()),
        ),
        ("verify_clean", problems.is_empty(), problems.join("; ")),
        ("one_restart_per_death", one_restart_each, String::new()),
        (
            "every_kill_recovered",
            liveness_ok && recovery_ms.len() == sim.kills.len(),
            format!(
                "{} of {} member kills recovered",
                recovery_ms.len(),
                sim.kills.len()
            ),
        ),
        (
            "members_stopped_normally",
            sim.failed_stops == 0,
            format!("{} did not exit 0", sim.failed_stops),
        ),
    ];
    let ok = invariants.iter().all(|(_, ok, _)| *ok);
    let c = inspect::counters(region);
    let committed = inspect::committed_total(region);
    let backed_out: u64 = ev
        .iter()
        .filter(|e| matches!(e.kind, EventKind::BackedOut | EventKind::RecoveredAtRestart))
        .map(|e| e.a)
        .sum();
    let light_rss: Vec<f64> = ev
        .iter()
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
    if !ok {
        tmp.keep = true;
    }
    let doc = json!({
        "seed": a.seed, "members": a.members, "elapsed_s": elapsed.as_secs_f64(),
        "kills": sim.kills.len() as u64 + sim.light_kills, "member_kills": sim.kills.len(),
        "restart_light_kills": sim.light_kills, "kills_by_kind": sim.kinds,
        "recoveries": count(EventKind::RecoveryCompleted),
        "restart_lights_terminated_normally": count(EventKind::TerminatedNormally),
        "restart_light_failures": count(EventKind::RestartLightFailed),
        "lives_unverifiable_lost_events": unverifiable,
        "transactions_committed": committed, "transactions_backed_out": backed_out,
        "throughput_tps": committed as f64 / elapsed.as_secs_f64(),
        "lock_requests": c.requests, "contention_rate": rate(c.contention), "false_contention_rate": rate(c.false_contention),
        "detection_us": stats(detection_us), "recovery_ms": stats(recovery_ms),
        "restart_light_peak_rss_kib": stats(light_rss), "member_peak_rss_kib": stats(sim.normal_rss.iter().map(|&x| x as f64).collect()),
        "bank_total_expected": expected as i64, "bank_total_actual": total as i64,
        "invariants": invariants.iter().map(|(n, ok, d)| json!({"name": n, "ok": ok, "detail": d})).collect::<Vec<_>>(),
        "invariants_ok": ok,
        "plex": if tmp.keep { Some(tmp.dir.display().to_string()) } else { None },
    });
    if a.json {
        crate::print_json(&doc);
    } else {
        println!(
            "sim: {} members, seed {}, {:.1} s",
            a.members,
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
            "  kills: {} members, {} restart-light processes (faults: {})",
            sim.kills.len(),
            sim.light_kills,
            sim.kinds
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "  recoveries: {} (restart light failures: {})",
            doc["recoveries"], doc["restart_light_failures"]
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
        for (n, ok, d) in &invariants {
            println!(
                "    {:<30} {}  {}",
                n,
                if *ok { "ok" } else { "BROKEN" },
                if *ok { "" } else { d.as_str() }
            );
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
