//! `cfctl bench`: the lock paths and their peers, measured side by side in
//! one run with one method (`stats.rs`), in a fresh directory under
//! `/dev/shm` that is removed at the end.
//!
//! * `uncontended.rs`: acquire + release of one free lock in one process;
//! * `across.rs`: two processes, one per CPU: throughput on disjoint and on
//!   shared resources, and the hand-off latency of the product's lock;
//! * `recovery.rs`: SIGKILL of a member holding N modify locks, to the
//!   death being noticed and to all its retained locks being released.
//!
//! The multi-process parts start this binary again with a hidden
//! `--worker SPEC` argument (a JSON [`WorkerSpec`]).

mod across;
mod guard;
mod peers;
mod recovery;
mod stats;
mod uncontended;
mod waiters;

use anyhow::{Context, Result};
use cf_harness::outln;
use cf_harness::table::table;
use serde::{Deserialize, Serialize};
use serde_json::json;
use stats::{fmt_ns, fmt_rate, Method, Stats};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// A short run (under 30 s on 2 cores): fewer, shorter repetitions; recovery up to 100,000 locks
    #[arg(long)]
    quick: bool,
    /// Print one JSON document instead of the tables
    #[arg(long)]
    pub json: bool,
    /// Print the results as CSV: a header line and one row per measured path
    #[arg(long)]
    pub csv: bool,
    /// Write SVG charts to DIR (created if missing; its parent must exist): ns per operation of
    /// every path, and recovery time against the number of locks held
    #[arg(long, value_name = "DIR")]
    pub plot: Option<std::path::PathBuf>,
    /// Run only these groups (comma-separated)
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Group>,
    /// Internal: run as a worker process of a benchmark
    #[arg(long, hide = true, value_name = "SPEC")]
    worker: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Group {
    /// Acquire + release of one free lock in one process
    Uncontended,
    /// Two processes: disjoint and shared resources, hand-off
    Across,
    /// SIGKILL of a lock holder to detection and to release
    Recovery,
}

/// What a worker process is started to do.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum WorkerSpec {
    Across(across::Spec),
    Hold(recovery::HoldSpec),
    Waiter(waiters::Spec),
}

/// One measured path.
pub(crate) struct Row {
    pub group: &'static str,
    pub name: String,
    pub what: String,
    /// ns per operation over the repetitions.
    pub ns: Stats,
    /// Of the median.
    pub ops_per_s: f64,
    pub iters_per_rep: u64,
}

/// A row this build or machine cannot measure, and why.
pub(crate) struct Skipped {
    pub group: &'static str,
    pub name: &'static str,
    pub reason: String,
}

/// A ratio (or a figure) a target is about.
struct Check {
    name: String,
    value: f64,
    unit: &'static str,
    target: String,
    met: Option<bool>,
}

struct Config {
    uncontended: Method,
    across: Method,
    recovery: recovery::Plan,
}

fn config(quick: bool) -> Config {
    if quick {
        Config {
            uncontended: Method {
                warmup: Duration::from_millis(50),
                rep_time: Duration::from_millis(20),
                reps: 5,
            },
            across: Method {
                warmup: Duration::from_millis(50),
                rep_time: Duration::from_millis(40),
                reps: 5,
            },
            recovery: recovery::Plan {
                sizes: vec![
                    (10, 1, 9),
                    (10, 64, 5),
                    (10, 1024, 3),
                    (1_000, 64, 5),
                    (100_000, 64, 3),
                ],
                floor_reps: 20,
            },
        }
    } else {
        Config {
            uncontended: Method {
                warmup: Duration::from_millis(300),
                rep_time: Duration::from_millis(100),
                reps: 11,
            },
            across: Method {
                warmup: Duration::from_millis(200),
                rep_time: Duration::from_millis(150),
                reps: 9,
            },
            recovery: recovery::Plan {
                sizes: vec![
                    (10, 1, 31),
                    (10, 64, 21),
                    (10, 1024, 15),
                    (1_000, 64, 15),
                    (100_000, 64, 7),
                    (1_000_000, 64, 5),
                ],
                floor_reps: 100,
            },
        }
    }
}

pub fn run(a: BenchArgs) -> Result<ExitCode> {
    if let Some(w) = &a.worker {
        return worker(w);
    }
    if a.csv && a.json {
        cf_harness::usage!("--csv and --json: give one");
    }
    if let Some(p) = &a.plot {
        let parent = p.parent().filter(|q| !q.as_os_str().is_empty());
        if parent.is_some_and(|q| !q.is_dir()) {
            anyhow::bail!("--plot {}: its directory does not exist", p.display());
        }
    }
    guard::catch_interrupts()?;
    let started = Instant::now();
    let when = utc_now();
    let load_at_start = loadavg();
    let cfg = config(a.quick);
    let want = |g: Group| a.only.is_empty() || a.only.contains(&g);
    let tmp = crate::ShmDir::new().context("creating a directory under /dev/shm")?;
    let cpus = guard::allowed_cpus();
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let progress = |s: &str| {
        if tty {
            eprintln!("bench: {s}");
        }
    };

    let mut rows: Vec<Row> = Vec::new();
    let mut skipped: Vec<Skipped> = Vec::new();
    let mut recovery_table = Vec::new();
    if want(Group::Uncontended) {
        progress("uncontended paths");
        let (r, s) = uncontended::run(tmp.path(), &cfg.uncontended)?;
        rows.extend(r);
        skipped.extend(s);
    }
    if want(Group::Across) {
        progress("two processes");
        rows.extend(across::run(tmp.path(), &cfg.across, &cpus)?);
        progress("waiting processes");
        rows.extend(waiters::run(tmp.path(), &cfg.across)?);
    }
    if want(Group::Recovery) {
        progress("recovery");
        let (r, t) = recovery::run(tmp.path(), &cfg.recovery)?;
        rows.extend(r);
        recovery_table = t;
    }
    let checks = checks(&rows, &recovery_table);
    let elapsed = started.elapsed();
    let command = format!(
        "cfctl bench{}{}",
        if a.quick { " --quick" } else { "" },
        if a.only.is_empty() {
            String::new()
        } else {
            let g: Vec<String> = a
                .only
                .iter()
                .map(|g| format!("{g:?}").to_lowercase())
                .collect();
            format!(" --only {}", g.join(","))
        }
    );
    let mut machine = machine(cpus.len());
    machine["loadavg_1min_at_start"] = json!(load_at_start);
    machine["loadavg_1min_at_end"] = json!(loadavg());
    if let Some(dir) = &a.plot {
        charts(dir, &rows, &recovery_table)?;
    }
    if a.csv {
        let flat: Vec<Vec<(String, String)>> = rows
            .iter()
            .map(|r| {
                let mut v = vec![
                    ("program".to_string(), "cfctl bench".to_string()),
                    ("version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
                    ("date_utc".to_string(), when.clone()),
                    ("quick".to_string(), a.quick.to_string()),
                    ("group".to_string(), r.group.to_string()),
                    ("name".to_string(), r.name.clone()),
                    ("ops_per_s".to_string(), r.ops_per_s.to_string()),
                    ("ops_per_rep".to_string(), r.iters_per_rep.to_string()),
                ];
                let s = &r.ns.summary;
                for (k, x) in cf_node::stats::Summary::csv_header("ns")
                    .into_iter()
                    .zip(s.csv_values())
                {
                    v.push((k, x));
                }
                v
            })
            .collect();
        cf_harness::out!("{}", cf_harness::csvout::to_csv(&flat)?);
        drop(tmp);
        return Ok(ExitCode::SUCCESS);
    }
    if a.json {
        cf_harness::out::print_json(&json!({
            "program": {"name": "cfctl bench", "version": env!("CARGO_PKG_VERSION")},
            "config": {"quick": a.quick, "only": a.only.iter().map(|g| format!("{g:?}").to_lowercase()).collect::<Vec<_>>()},
            "command": command,
            "date_utc": when,
            "quick": a.quick,
            "machine": machine,
            "method": {
                "uncontended": cfg.uncontended,
                "across": cfg.across,
                "note": "ns_per_op and ops_per_s are of the median repetition (p50 of an HDR histogram of the repetitions, 3 significant digits); ns has the full summary",
            },
            "results": rows.iter().map(|r| json!({
                "group": r.group,
                "name": r.name,
                "what": r.what,
                "ns_per_op": r.ns.median,
                "ops_per_s": r.ops_per_s,
                "min_ns": r.ns.min,
                "max_ns": r.ns.max,
                "p99_ns": r.ns.p99,
                "spread_pct": r.ns.spread_pct(),
                "reps": r.ns.n,
                "ops_per_rep": r.iters_per_rep,
                "ns": r.ns.summary,
            })).collect::<Vec<_>>(),
            "skipped": skipped.iter().map(|s| json!({
                "group": s.group,
                "name": s.name,
                "reason": s.reason,
            })).collect::<Vec<_>>(),
            "checks": checks.iter().map(|c| json!({
                "name": c.name,
                "value": c.value,
                "unit": c.unit,
                "target": c.target,
                "met": c.met,
            })).collect::<Vec<_>>(),
            "recovery": recovery_table.iter().map(|r| json!({
                "n": r.n,
                "pool_mib": r.pool_mib,
                "restart_light_peak_rss_kib_median": r.light_rss_kib.median,
                "restart_light_peak_rss_kib_max": r.light_rss_kib.max,
                "restart_light_rss_without_region_kib_max": r.light_own_kib.max,
                "reps": r.reps,
                "steps_median_ns": r.steps.iter().map(|(k, s)| (k.to_string(), json!(s.median))).collect::<serde_json::Map<_, _>>(),
                "steps_p99_ns": r.steps.iter().map(|(k, s)| (k.to_string(), json!(s.p99))).collect::<serde_json::Map<_, _>>(),
                "exit_median_ns": r.exited.median,
                "detect_median_ns": r.detect.median,
                "detect_p99_ns": r.detect.p99,
                "cleaned_up_median_ns": r.cleaned.median,
                "restart_light_started_median_ns": r.started.median,
                "released_median_ns": r.released.median,
                "released_p99_ns": r.released.p99,
                "marginal_ns_per_lock": r.marginal_ns_per_lock,
            })).collect::<Vec<_>>(),
            "elapsed_s": elapsed.as_secs_f64(),
        }));
    } else {
        print_tables(
            &command,
            &when,
            &machine,
            &cfg,
            &rows,
            &skipped,
            &checks,
            &recovery_table,
            elapsed,
        );
    }
    drop(tmp);
    Ok(ExitCode::SUCCESS)
}

/// `--plot DIR`: ns per operation of every path, and recovery against N.
fn charts(dir: &std::path::Path, rows: &[Row], recovery: &[recovery::RecoveryRow]) -> Result<()> {
    use cf_harness::plot;
    plot::ensure_dir(dir)?;
    let bars: Vec<(String, f64)> = rows
        .iter()
        .filter(|r| r.group != "recovery")
        .map(|r| (format!("{} {}", r.group, r.name), r.ns.median))
        .collect();
    plot::bar_chart(
        &dir.join("paths.svg"),
        "cfctl bench: ns per operation (median repetition)",
        "ns",
        &bars,
    )?;
    if !recovery.is_empty() {
        let series = |f: fn(&recovery::RecoveryRow) -> f64| -> Vec<(f64, f64)> {
            recovery.iter().map(|r| (r.n as f64, f(r) / 1e6)).collect()
        };
        plot::line_chart(
            &dir.join("recovery.svg"),
            "cfctl bench: SIGKILL of a holder of N modify locks, to each step (ms)",
            "modify locks held",
            "ms",
            &[
                ("detected", series(|r| r.detect.median)),
                ("cleaned up", series(|r| r.cleaned.median)),
                ("restart light started", series(|r| r.started.median)),
                ("released", series(|r| r.released.median)),
            ],
            &[],
        )?;
    }
    eprintln!("cfctl bench: wrote charts to {}", dir.display());
    Ok(())
}

fn worker(spec: &str) -> Result<ExitCode> {
    let spec: WorkerSpec = serde_json::from_str(spec).context("bad worker spec")?;
    match spec {
        WorkerSpec::Across(s) => {
            let out = across::worker(&s)?;
            outln!("{}", serde_json::to_string(&out)?);
        }
        WorkerSpec::Hold(s) => recovery::hold(&s)?,
        WorkerSpec::Waiter(s) => waiters::worker(&s)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn checks(rows: &[Row], rec: &[recovery::RecoveryRow]) -> Vec<Check> {
    let ns = |n: &str| rows.iter().find(|r| r.name == n).map(|r| r.ns.median);
    let rate = |n: &str| rows.iter().find(|r| r.name == n).map(|r| r.ops_per_s);
    let mut out = Vec::new();
    let mut at_most = |name: String, v: Option<f64>, max: f64| {
        if let Some(v) = v {
            out.push(Check {
                name,
                value: v,
                unit: "x",
                target: format!("<= {max}x"),
                met: Some(v <= max),
            });
        }
    };
    let ratio = |a: &str, b: &str| Some(ns(a)? / ns(b)?);
    for cf in ["cf_share", "cf_exclusive", "cf_exclusive_modify"] {
        at_most(
            format!("{cf} / pthread_robust_mutex"),
            ratio(cf, "pthread_robust_mutex"),
            0.8,
        );
        at_most(
            format!("{cf} / cas_cas_pair"),
            ratio(cf, "cas_cas_pair"),
            2.5,
        );
    }
    at_most(
        "cf_exclusive_2p_shared / pthread_robust_mutex_2p_shared".into(),
        ratio("cf_exclusive_2p_shared", "pthread_robust_mutex_2p_shared"),
        1.0,
    );
    at_most(
        "cf_handoff_pingpong / handoff_spin_floor".into(),
        ratio("cf_handoff_pingpong", "handoff_spin_floor"),
        4.0,
    );
    for k in [1, 4, 8] {
        if let Some(v) = ns(&format!("waiters_cpu_k{k}")) {
            out.push(Check {
                name: format!("waiters_cpu_k{k}: CPU of {k} waiter(s) while the lock is held"),
                value: v / 1e7,
                unit: "% of a core",
                target: "< 2% of a core".into(),
                met: Some(v < 2e7),
            });
        }
    }
    for (peer, min) in [
        ("fcntl_ofd", 20.0),
        ("flock", 12.0),
        ("sysv_sem_undo", 12.0),
    ] {
        for cf in ["cf_share", "cf_exclusive", "cf_exclusive_modify"] {
            if let Some(v) = ratio(peer, cf) {
                out.push(Check {
                    name: format!("{peer} / {cf}"),
                    value: v,
                    unit: "x",
                    target: format!(">= {min}x"),
                    met: Some(v >= min),
                });
            }
        }
    }
    for (kind, target) in [
        ("cf_exclusive", Some(1.9)),
        ("pthread_robust_mutex", None),
        ("fcntl_ofd", None),
    ] {
        let v = (|| Some(rate(&format!("{kind}_2p_disjoint"))? / rate(&format!("{kind}_1p"))?))();
        if let Some(v) = v {
            out.push(Check {
                name: format!("{kind}: 2-process disjoint / 1-process throughput"),
                value: v,
                unit: "x",
                target: target.map_or("(peer)".into(), |t| format!(">= {t}x")),
                met: target.map(|t| v >= t),
            });
        }
    }
    // The targets: detection whatever the victim's memory, recovery
    // in milliseconds.
    let row = |n: u64, pool: usize| rec.iter().find(|r| r.n == n && r.pool_mib == pool);
    let small = row(10, 1).map(|r| &r.detect);
    if let Some(d) = small {
        out.push(Check {
            name: "detection p50, 1 MiB victim".into(),
            value: d.median,
            unit: "ns",
            target: "<= 100 µs".into(),
            met: Some(d.median <= 100e3),
        });
    }
    for pool in [64usize, 1024] {
        if let (Some(r), Some(d)) = (row(10, pool), small) {
            out.push(Check {
                name: format!("detection p50, {pool} MiB victim / 1 MiB victim"),
                value: r.detect.median / d.median,
                unit: "x",
                target: "<= 3x".into(),
                met: Some(r.detect.median <= 3.0 * d.median),
            });
        }
    }
    for (n, pool) in [(10, 1), (10, 64), (10, 1024)] {
        if let Some(r) = row(n, pool) {
            out.push(Check {
                name: format!("detection p99, {pool} MiB victim ({} reps)", r.reps),
                value: r.detect.p99,
                unit: "ns",
                target: "<= 1 ms".into(),
                met: Some(r.detect.p99 <= 1e6),
            });
        }
    }
    for (n, limit, text) in [(1_000u64, 3e6, "<= 3 ms"), (1_000_000, 200e6, "<= 200 ms")] {
        if let Some(r) = row(n, 64) {
            out.push(Check {
                name: format!("SIGKILL to all released p50, {n} locks, 64 MiB victim"),
                value: r.released.median,
                unit: "ns",
                target: text.into(),
                met: Some(r.released.median <= limit),
            });
        }
    }
    for r in rec.iter().filter(|r| r.pool_mib == 64) {
        out.push(Check {
            name: format!("restart light peak RSS (max), {} locks", r.n),
            value: r.light_rss_kib.max * 1024.0,
            unit: "B",
            target: "<= 4 MiB".into(),
            met: Some(r.light_rss_kib.max <= 4096.0),
        });
        out.push(Check {
            name: format!("  ... without the region's pages (max), {} locks", r.n),
            value: r.light_own_kib.max * 1024.0,
            unit: "B",
            target: "<= 4 MiB".into(),
            met: Some(r.light_own_kib.max <= 4096.0),
        });
    }
    // Marginal cost per retained lock over each interval of N. Per-lock
    // cost falling with N (fixed costs amortised) is fine; rising by more
    // than 2x from one interval to the next is worse than linear.
    let same_pool: Vec<&recovery::RecoveryRow> = rec.iter().filter(|r| r.pool_mib == 64).collect();
    let marg: Vec<(u64, u64, f64)> = same_pool
        .windows(2)
        .filter_map(|w| Some((w[0].n, w[1].n, w[1].marginal_ns_per_lock?)))
        .collect();
    if let [.., (a0, a1, m1), (_, b1, m2)] = marg[..] {
        let v = m2 / m1;
        out.push(Check {
            name: format!("recovery: ns/lock for N {a1}->{b1} / for N {a0}->{a1}"),
            value: v,
            unit: "x",
            target: "<= 2x (not worse than linear)".into(),
            met: Some(v <= 2.0),
        });
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn print_tables(
    command: &str,
    when: &str,
    machine: &serde_json::Value,
    cfg: &Config,
    rows: &[Row],
    skipped: &[Skipped],
    checks: &[Check],
    rec: &[recovery::RecoveryRow],
    elapsed: Duration,
) {
    outln!("{command}");
    outln!(
        "{} UTC; {}, {} CPU(s), Linux {}; load average (1 min) {} at start, {} at end",
        when,
        machine["cpu"].as_str().unwrap_or("?"),
        machine["cpus"],
        machine["kernel"].as_str().unwrap_or("?"),
        machine["loadavg_1min_at_start"],
        machine["loadavg_1min_at_end"],
    );
    let m = |m: &Method| {
        format!(
            "warm-up {} ms, {} repetitions of ~{} ms",
            m.warmup.as_millis(),
            m.reps,
            m.rep_time.as_millis()
        )
    };
    outln!(
        "method: uncontended: {} (paths interleaved); across: {}; figures: median [min .. max] over repetitions",
        m(&cfg.uncontended),
        m(&cfg.across)
    );
    outln!();
    let paths = rows
        .iter()
        .map(|r| {
            vec![
                r.group.to_string(),
                r.name.clone(),
                fmt_ns(r.ns.median),
                fmt_rate(r.ops_per_s),
                format!("[{} .. {}]", fmt_ns(r.ns.min), fmt_ns(r.ns.max)),
                format!("{:.0}%", r.ns.spread_pct()),
            ]
        })
        .collect();
    outln!(
        "{}",
        table(
            &[
                "group",
                "name",
                "median/op",
                "ops/s",
                "[min .. max]",
                "spread"
            ],
            paths
        )
    );
    for s in skipped {
        outln!("{} {}: skipped: {}", s.group, s.name, s.reason);
    }
    if !checks.is_empty() {
        outln!();
        outln!("Targets");
        let targets = checks
            .iter()
            .map(|c| {
                let v = if c.unit == "ns" {
                    fmt_ns(c.value)
                } else if c.unit == "B" {
                    format!("{:.1} MiB", c.value / 1048576.0)
                } else if c.unit == "% of a core" {
                    format!("{:.2}%", c.value)
                } else {
                    format!("{:.2}x", c.value)
                };
                let verdict = match c.met {
                    Some(true) => "met",
                    Some(false) => "MISSED",
                    None => "-",
                };
                vec![c.name.to_string(), v, c.target.to_string(), verdict.into()]
            })
            .collect();
        outln!(
            "{}",
            table(&["ratio", "value", "target", "verdict"], targets)
        );
    }
    if !rec.is_empty() {
        outln!();
        outln!("Recovery: times after SIGKILL (t0) of a member holding N modify locks with a buffer pool, from the region's events:");
        outln!("exit = its pidfd readable here (kernel exit done); detected = death noticed by the monitoring member (liveness word);");
        outln!("cleaned = its locks marked retained; posted/claimed = restart request; RL start = restart light started;");
        outln!("backed out, released = its steps; terminated = restart light ended normally, every retained lock released");
        outln!("(medians, each step from t0; p99 where marked)");
        let mut header = vec!["N locks", "pool", "reps", "exit", "detect p99"];
        header.extend(recovery::STEPS.iter().map(|(_, name)| *name));
        header.extend(["term p99", "marginal/lock", "RL RSS", "w/o reg"]);
        let steps = rec
            .iter()
            .map(|r| {
                let mut row = vec![
                    r.n.to_string(),
                    format!("{}M", r.pool_mib),
                    r.reps.to_string(),
                    fmt_ns(r.exited.median),
                    fmt_ns(r.detect.p99),
                ];
                row.extend(r.steps.iter().map(|(_, s)| fmt_ns(s.median)));
                row.extend([
                    fmt_ns(r.released.p99),
                    r.marginal_ns_per_lock.map_or("-".into(), fmt_ns),
                    format!("{:.1}M", r.light_rss_kib.max / 1024.0),
                    format!("{:.1}M", r.light_own_kib.max / 1024.0),
                ]);
                row
            })
            .collect();
        outln!("{}", table(&header, steps));
        outln!("(p99 is the HDR histogram's: with fewer than 100 repetitions it is the maximum)");
    }
    outln!();
    outln!("total run time {:.1} s", elapsed.as_secs_f64());
}

fn machine(cpus: usize) -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    json!({ "cpu": cpu, "cpus": cpus, "kernel": kernel })
}

/// The 1-minute load average (other work on the machine skews every figure).
fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// "YYYY-MM-DD HH:MM:SS" (UTC) from the realtime clock (`jiff`).
fn utc_now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string()
}
