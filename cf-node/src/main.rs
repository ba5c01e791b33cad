//! `cf-node`: one member process, in normal (`run`) or light (`restart-light`) mode.

use anyhow::{Context, Result};
use cf_core::events::{self, EventData, EventKind};
use cf_core::{Member, Plex, ProcessId, Region};
use cf_node::bank::{Bank, BankConfig, LockOrder, Skew, KINDS};
use cf_node::bufpool::{peak_rss_kib, BufferPool};
use cf_node::monitor::Monitor;
use cf_node::recover::recover;
use cf_node::store::Store;
use cf_node::wal::LogWriter;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "cf-node",
    version,
    about = "A member of a coupling-facility plex (normal or restart-light mode)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Connect as a member, watch the other members, handle restart requests, and run a workload until SIGTERM/SIGINT
    Run(RunArgs),
    /// Recover a failed member and end: reconnect as it, back out its unfinished work, release its retained locks
    RestartLight(LightArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// Transfers between random accounts under modify locks (the total never changes)
    Bank,
    /// No workload: only watch the other members and handle restart requests
    Idle,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Plex directory (default: $CF_PLEX, else /dev/shm/cf-plex-<uid>)
    #[arg(long, value_name = "DIR")]
    plex: Option<PathBuf>,
    /// Member name
    #[arg(long)]
    member: String,
    #[arg(long, value_enum, default_value_t = Workload::Bank)]
    workload: Workload,
    /// Worker threads running the workload, at least 1 (each takes a block of the region's
    /// record entries: at most as many as a member has blocks; checked before connecting)
    #[arg(long, default_value_t = 1)]
    threads: u32,
    /// Pause between the two legs of a transfer, in microseconds (a kill then often lands inside a transaction)
    #[arg(long, default_value_t = 0)]
    pause_us: u64,
    /// Buffer pool size in MiB (a private page cache of the data, allocated and touched at
    /// start; at most half of the machine's memory, refused before connecting)
    #[arg(long, default_value_t = 64)]
    buffer_pool_mb: u64,
    /// How long a transfer waits for a lock held by a live member, in milliseconds
    #[arg(long, default_value_t = 2000)]
    lock_timeout_ms: u64,
    /// Seed of the workload's choices (each worker thread draws its own stream from it);
    /// default: from the clock, printed in the closing summary
    #[arg(long)]
    seed: Option<u64>,
    /// Which accounts a transaction picks: uniform, zipf:S (exponent S, e.g. zipf:0.99),
    /// hot:K:P (the first K accounts take P percent of the accesses, e.g. hot:10:90)
    #[arg(long, default_value = "uniform")]
    skew: Skew,
    /// Percent of transactions that only read (share locks, no log record), 0 to 100
    #[arg(long, default_value_t = 0.0)]
    read_pct: f64,
    /// Accounts a transaction touches, 2 to 16 (a transfer moves money from the first to the others)
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(2..=16))]
    tx_size: u32,
    /// Pause between two transactions of a worker, in microseconds (or 10ms, 1.5s...)
    #[arg(long, default_value = "0", value_parser = cf_node::cli::micros)]
    think: Duration,
    /// Transactions per second of each worker thread, a fixed rate (open loop) instead of as
    /// fast as it goes (closed loop)
    #[arg(long)]
    rate: Option<f64>,
    /// The order in which a transaction takes its account locks: sorted (account order, no
    /// deadlocks) or random (drawn from the worker's stream: transactions deadlock on purpose;
    /// the victim the deadlock detector chooses gives its locks back before writing anything,
    /// is counted in `deadlocks` with its detection latency, and is not retried)
    #[arg(long, default_value = "sorted", value_name = "sorted|random")]
    lock_order: LockOrder,
    /// Lock like a data-sharing workload: a transfer takes IX (a modify lock, retained with its
    /// rows if the member dies; a retained IX refuses S, U, SIX and X on the table, never another
    /// member's IX or IS) on the table `bank.accounts`, then X modify on each account row; a read
    /// takes IS on the table, then S on the rows. Rows are released first, then the table
    #[arg(long)]
    hierarchy: bool,
    /// Checkpoint (truncate) the log when it grows past this many bytes (archiving its committed transactions first when the plex keeps history)
    #[arg(long, default_value_t = 1 << 20)]
    checkpoint_bytes: u64,
    /// Wait this long after a restart request is posted before claiming it (demos use it so the retained locks stay visible)
    #[arg(long, default_value_t = 0)]
    claim_delay_ms: u64,
    /// Print the final summary as one JSON line
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct LightArgs {
    /// Plex directory (default: $CF_PLEX, else /dev/shm/cf-plex-<uid>)
    #[arg(long, value_name = "DIR")]
    plex: Option<PathBuf>,
    /// The failed member to recover
    #[arg(long)]
    member: String,
    /// The member that started this restart (recorded in the events)
    #[arg(long)]
    by: Option<String>,
    /// Print the summary as one JSON line
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    // A region (or accounts file) truncated under us: one line, not a silent exit 135.
    let _ = cf_core::install_sigbus_handler("cf-node");
    let cli: Cli = match cf_node::cli::parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let r = match cli.cmd {
        Cmd::Run(a) => run(a),
        Cmd::RestartLight(a) => light(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cf-node: {}", cf_core::error::one_line(e.chain()));
            ExitCode::FAILURE
        }
    }
}

fn light(a: LightArgs) -> Result<()> {
    let plex = Plex::resolve(a.plex.as_deref());
    let s = cf_node::restart_light::run(&plex.dir, &a.member, a.by.as_deref())?;
    if a.json {
        let v = serde_json::json!({
            "member": s.member, "recovered": s.recovered, "transactions": s.transactions,
            "updates_undone": s.updates_undone, "released": s.released,
            "peak_rss_kib": s.peak_rss_kib, "elapsed_ns": s.elapsed_ns,
        });
        println!("{v}");
    } else if s.recovered {
        println!(
            "restart light of {}: backed out {} transaction(s) ({} updates), released {} retained lock(s), terminated normally; peak RSS {} KiB",
            s.member, s.transactions, s.updates_undone, s.released, s.peak_rss_kib
        );
    } else {
        println!("restart light of {}: nothing to recover", s.member);
    }
    Ok(())
}

/// Connect, waiting while a restart light of the same name is still running.
fn connect(region: &Arc<Region>, name: &str) -> Result<Member> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match Member::connect_with(region.clone(), name, cf_core::ConnectMode::Restart) {
            Ok(m) => return Ok(m),
            Err(cf_core::ConnectError::NameInUse { .. })
                if std::time::Instant::now() < deadline =>
            {
                // Wait out a restart light of this name; refuse a running member.
                let running = cf_core::inspect::members(region)?
                    .iter()
                    .any(|m| m.name == name && m.state == cf_core::MemberState::Active && m.alive);
                if running {
                    anyhow::bail!("member {name} is already running");
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// What `run` checked and made before connecting.
struct Prepared {
    plex: Plex,
    region: Arc<Region>,
    store: Option<Store>,
    pool: Option<BufferPool>,
    threads: u32,
    exe: PathBuf,
    me: ProcessId,
}

/// Everything that can be refused is refused here, before the member
/// connects: a bad argument, a plex file that cannot be trusted (the log,
/// the accounts, the history file: a FIFO, a symlink, another user's file),
/// a buffer pool that cannot be allocated, more worker threads than the
/// record area has blocks for. So an error leaves no connector behind.
fn prepare(a: &RunArgs) -> Result<Prepared> {
    cf_core::connector::check_name(&a.member)?;
    let plex = Plex::resolve(a.plex.as_deref());
    let region = Arc::new(Region::open(&plex)?);
    // Each worker thread's holder claims a block of record entries at once.
    if a.threads == 0 {
        anyhow::bail!("--threads 0: a member runs at least one worker thread");
    }
    let threads = a.threads;
    let blocks = region.blocks_per_member();
    if a.workload == Workload::Bank && threads > blocks {
        anyhow::bail!(
            "--threads {}: each worker needs a block of {} record entries and this region has \
             {} per member (at most {blocks} threads)",
            a.threads,
            cf_core::layout::BLOCK_SLOTS,
            region.records_per_member()
        );
    }
    if !(a.read_pct.is_finite() && (0.0..=100.0).contains(&a.read_pct)) {
        anyhow::bail!("--read-pct must be 0 to 100, got {}", a.read_pct);
    }
    if let Some(r) = a.rate {
        if !(r.is_finite() && r > 0.0 && r <= 1e7) {
            anyhow::bail!("--rate must be a positive number of transactions per second, got {r}");
        }
    }
    if a.workload == Workload::Bank {
        // Each worker holds up to --tx-size locks at once, and the table's with --hierarchy.
        let per = region.records_per_member() as u64;
        let need = threads as u64 * (a.tx_size as u64 + a.hierarchy as u64);
        if need > per {
            anyhow::bail!(
                "--threads {} × --tx-size {}{} needs {need} record entries, the region has {per} per member",
                a.threads,
                a.tx_size,
                if a.hierarchy { " (+ 1 for --hierarchy's table lock)" } else { "" }
            );
        }
    }
    // Read-only checks of this member's plex files (the log is opened for
    // writing only once we are connected as the member, its only writer:
    // opening it cuts a torn tail, which may be a record the running member
    // of this name, or the restart light of our previous life, is writing).
    cf_node::wal::read_log(&cf_node::wal::log_path(&plex.dir, &a.member))?;
    cf_node::history::precheck(&plex.dir, &a.member)?;
    let (store, pool) = match a.workload {
        Workload::Idle => (None, None),
        Workload::Bank => {
            let store = Store::open(&plex.dir)?;
            if (a.tx_size as u64) > store.count() {
                anyhow::bail!(
                    "--tx-size {} is more than the {} accounts",
                    a.tx_size,
                    store.count()
                );
            }
            (Some(store), Some(BufferPool::with_mib(a.buffer_pool_mb)?))
        }
    };
    Ok(Prepared {
        plex,
        region,
        store,
        pool,
        threads,
        exe: std::env::current_exe().context("finding the cf-node binary")?,
        me: ProcessId::current()?,
    })
}

fn run(a: RunArgs) -> Result<()> {
    // Signals first, so that a stop signal is always handled.
    let mut signals =
        cf_node::signals::StopWait::install().context("installing signal handlers")?;
    let p = prepare(&a)?;
    let member = connect(&p.region, &a.member)?;
    let first_event = events::next_seq(&p.region);
    let region = p.region.clone();
    let name = a.member.clone();
    // The liveness word and the heartbeat, from a thread of their own.
    let liveness = match cf_core::connector::liveness::LivenessThread::start(
        region.clone(),
        member.id(),
        member.generation(),
        a.member.clone(),
    ) {
        Ok(l) => l,
        Err(e) => {
            let _ = member.disconnect();
            anyhow::bail!("starting the liveness thread: {e}");
        }
    };
    match run_connected(&a, p, &member, &mut signals, first_event) {
        Ok(stopped) => {
            liveness.stop();
            member.disconnect()?;
            events::record(&region, &name, None, EventData::Disconnected);
            print_summary(&a, &region, &stopped);
            Ok(())
        }
        // A transaction was in flight (or our own recovery did not finish):
        // the member must be recovered like a dead one, its modify locks
        // retained until its log is backed out. Exit without disconnecting.
        Err(Failure::Abandon(e)) => Err(e.context(format!(
            "leaving {name} to be recovered as a failed member (its modify locks stay retained \
             until its log is backed out)"
        ))),
        // Anything else: give the connector back.
        Err(Failure::Disconnect(e)) => {
            liveness.stop();
            member.disconnect()?;
            Err(e)
        }
    }
}

/// How a failure after the connect ends.
enum Failure {
    /// Disconnect normally (nothing half-done is held).
    Disconnect(anyhow::Error),
    /// Exit without disconnecting: recovery must back out what we did.
    Abandon(anyhow::Error),
}

fn disconnect_on<E: Into<anyhow::Error>>(e: E) -> Failure {
    Failure::Disconnect(e.into())
}

fn run_connected(
    a: &RunArgs,
    p: Prepared,
    member: &Member,
    signals: &mut cf_node::signals::StopWait,
    first_event: u64,
) -> std::result::Result<Stopped, Failure> {
    let Prepared {
        plex,
        region,
        store,
        pool,
        threads,
        exe,
        me,
    } = p;
    // Reconnected as a failed member: recover ourselves first (a normal
    // restart; our retained locks answer "retained" to others until then).
    let recovering = member.is_recovering().map_err(disconnect_on)?;
    // Until our own recovery is over, a failure leaves the member to be
    // recovered by someone else (never released without its back-out).
    let abandon = |e: anyhow::Error| {
        if recovering {
            Failure::Abandon(e)
        } else {
            Failure::Disconnect(e)
        }
    };
    let needs_recovery = recovering
        || !member.held_records().map_err(disconnect_on)?.is_empty()
        || !cf_node::wal::read_log(&cf_node::wal::log_path(&plex.dir, &a.member))
            .map_err(disconnect_on)?
            .records
            .is_empty();
    if needs_recovery {
        let rep = recover(member, &plex.dir, |_| {}).map_err(|e| {
            // A back-out half done must be finished by a recovery.
            Failure::Abandon(e)
        })?;
        if rep.backout.transactions > 0 || rep.released > 0 {
            events::record(
                &region,
                &a.member,
                Some(&a.member),
                EventData::RecoveredAtRestart {
                    transactions: rep.backout.transactions,
                    locks: rep.released,
                },
            );
        }
    }
    if recovering {
        member.finish_recovery().map_err(|e| abandon(e.into()))?;
    }
    // A restart request left for our previous life is over: we are restarted.
    let _ = cf_core::requests::complete_for_name(&region, &a.member, &a.member);
    // Recorded after any self-recovery, so the events of the previous life come first.
    events::record(
        &region,
        &a.member,
        None,
        EventData::Connected {
            pid: std::process::id(),
        },
    );
    let monitor = Arc::new(Monitor {
        region: region.clone(),
        plex_dir: plex.dir.clone(),
        me_id: member.id(),
        me_name: a.member.clone(),
        me,
        claim_delay: Duration::from_millis(a.claim_delay_ms),
        exe,
        stop: AtomicBool::new(false),
        detections: AtomicU64::new(0),
        restarts: AtomicU64::new(0),
        nameless: Default::default(),
    });
    let stop_monitor = |e: Failure| {
        monitor.stop.store(true, Ordering::Relaxed);
        e
    };
    monitor.spawn().map_err(disconnect_on)?;
    let mut workers = Vec::new();
    let seed = a
        .seed
        .unwrap_or_else(|| cf_core::connector::now_ns() ^ std::process::id() as u64);
    let bank = match (store, pool) {
        (Some(store), Some(pool)) => {
            let log = LogWriter::open(&plex.dir, &a.member, false)
                .map_err(|e| stop_monitor(disconnect_on(e)))?;
            let cfg = BankConfig {
                pause: Duration::from_micros(a.pause_us),
                lock_timeout: Duration::from_millis(a.lock_timeout_ms),
                max_amount: 100,
                checkpoint_bytes: a.checkpoint_bytes,
                skew: a.skew,
                read_pct: a.read_pct,
                tx_size: a.tx_size,
                think: a.think,
                rate: a.rate,
                lock_order: a.lock_order,
                hierarchy: a.hierarchy,
            };
            let bank = Arc::new(Bank::new(store, log, Some(pool), cfg));
            // Every holder first (each claims a block: checked in `prepare`),
            // then the threads, so a failure here leaves nothing running.
            let mut holders = Vec::new();
            for _ in 0..threads {
                holders.push(
                    member
                        .holder()
                        .map_err(|e| stop_monitor(disconnect_on(e)))?,
                );
            }
            for (t, h) in holders.into_iter().enumerate() {
                let b = bank.clone();
                // Each worker its own stream, fixed by the seed.
                let wseed = seed ^ (t as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                workers.push(std::thread::spawn(move || b.run_worker(h, wseed)));
            }
            Some(bank)
        }
        _ => None,
    };
    println!(
        "member {} running: connector {}, pid {}, workload {}, {} thread(s)",
        a.member,
        member.id(),
        std::process::id(),
        if bank.is_some() { "bank" } else { "idle" },
        workers.len()
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
    // Wait for a stop signal, or for a worker that ends by itself (an error).
    let sig = wait_for_stop(signals, &workers, bank.as_deref());
    if let Some(b) = &bank {
        b.stop.store(true, Ordering::Relaxed);
    }
    monitor.stop.store(true, Ordering::Relaxed);
    let mut failed = None;
    for w in workers {
        let r = w
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("a worker thread panicked")));
        if let Err(e) = r {
            failed.get_or_insert(e);
        }
    }
    if let Some(e) = failed {
        // A worker that failed inside a transaction kept its locks (bank.rs).
        return Err(if bank.as_ref().is_some_and(|b| b.poisoned()) {
            Failure::Abandon(e)
        } else {
            Failure::Disconnect(e)
        });
    }
    Ok(Stopped {
        sig,
        bank,
        monitor,
        seed,
        first_event,
    })
}

/// A member that stopped on a signal, ready to disconnect.
struct Stopped {
    sig: &'static str,
    bank: Option<Arc<Bank>>,
    monitor: Arc<Monitor>,
    /// The workload's seed (printed: a run can be repeated).
    seed: u64,
    /// The first event after our connect (for the deaths we detected).
    first_event: u64,
}

/// Wait until SIGTERM/SIGINT, or until a worker thread has ended by itself
/// (it failed: the member stops, as if told to).
fn wait_for_stop(
    signals: &mut cf_node::signals::StopWait,
    workers: &[std::thread::JoinHandle<Result<()>>],
    bank: Option<&Bank>,
) -> &'static str {
    if workers.is_empty() || bank.is_none() {
        return signals.wait();
    }
    signals
        .wait_or(Duration::from_millis(50), || {
            workers.iter().any(|w| w.is_finished())
        })
        .unwrap_or("SIGTERM")
}

/// Print the summary of a member that stopped normally (and disconnected).
fn print_summary(a: &RunArgs, region: &Region, s: &Stopped) {
    use std::io::Write;
    // Deaths this member detected: by its monitor, or through the lock path
    // (a request that found a dead holder and cleaned it up); both record
    // `detected` with this member as `by`.
    let detected_events = events::read_since(region, s.first_event)
        .iter()
        .filter(|e| e.kind() == EventKind::Detected && e.by.as_deref() == Some(a.member.as_str()))
        .count() as u64;
    let detections = detected_events.max(s.monitor.detections.load(Ordering::Relaxed));
    let stats = s.bank.as_ref().map(|b| &b.stats);
    let get = |f: fn(&cf_node::bank::BankStats) -> &AtomicU64| {
        stats.map_or(0, |s| f(s).load(Ordering::Relaxed))
    };
    let committed = get(|s| &s.committed);
    let reads = get(|s| &s.reads);
    let skipped = get(|s| &s.skipped_retained);
    let timeouts = get(|s| &s.skipped_timeout);
    let deadlocks = get(|s| &s.deadlocks);
    let restarts = s.monitor.restarts.load(Ordering::Relaxed);
    let rss = peak_rss_kib().unwrap_or(0);
    let (sig, seed) = (s.sig, s.seed);
    let line = if a.json {
        let latency: serde_json::Map<String, serde_json::Value> = match stats {
            Some(s) => KINDS
                .iter()
                .zip(s.latency())
                .map(|(k, l)| (k.to_string(), serde_json::json!(l)))
                .collect(),
            None => Default::default(),
        };
        let buckets: serde_json::Map<String, serde_json::Value> = match stats {
            Some(s) => KINDS
                .iter()
                .zip(s.latency_buckets())
                .map(|(k, b)| (k.to_string(), serde_json::json!(b)))
                .collect(),
            None => Default::default(),
        };
        let detection = stats.map_or_else(
            || cf_node::stats::Summary::of([], "ms"),
            |s| s.deadlock_detection(),
        );
        let detection_buckets = stats
            .map(|s| s.deadlock_detection_buckets())
            .unwrap_or_default();
        serde_json::json!({
            "member": a.member, "seed": seed, "committed": committed, "reads": reads,
            "skipped_retained": skipped, "skipped_timeout": timeouts,
            "deadlocks": deadlocks, "deadlock_detection_ms": detection,
            "deadlock_detection_buckets_ms": detection_buckets,
            "detections": detections, "restarts": restarts, "peak_rss_kib": rss,
            "latency_us": latency, "latency_buckets_us": buckets,
        })
        .to_string()
    } else {
        format!(
            "member {} stopped by {sig}: {committed} transfers committed, {reads} reads, {skipped} skipped on retained locks, {deadlocks} deadlock victims{}, {detections} deaths detected, {restarts} restarts run; peak RSS {rss} KiB; seed {seed}",
            a.member,
            match stats {
                Some(s) if deadlocks > 0 => format!(
                    " (detected in {})",
                    s.deadlock_detection().line()
                ),
                _ => String::new(),
            }
        )
    };
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(extra: &[&str]) -> Result<RunArgs, clap::Error> {
        let argv = ["cf-node", "run", "--member", "A"].iter().chain(extra);
        Cli::try_parse_from(argv).map(|c| match c.cmd {
            Cmd::Run(a) => a,
            Cmd::RestartLight(_) => unreachable!("parsed run"),
        })
    }

    #[test]
    fn lock_order_and_hierarchy_parse() {
        let a = run_args(&[]).unwrap();
        assert_eq!(a.lock_order, LockOrder::Sorted);
        assert!(!a.hierarchy);
        let a = run_args(&["--lock-order", "random", "--hierarchy"]).unwrap();
        assert_eq!(a.lock_order, LockOrder::Random);
        assert!(a.hierarchy);
        let a = run_args(&["--lock-order", "sorted"]).unwrap();
        assert_eq!(a.lock_order, LockOrder::Sorted);
        for bad in [
            &["--lock-order", "shuffled"][..],
            &["--lock-order"],
            &["--hierarchy", "yes"],
        ] {
            assert!(run_args(bad).is_err(), "{bad:?}");
        }
    }
}
