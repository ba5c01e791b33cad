//! `cf-node`: one member process, in normal (`run`) or light (`restart-light`) mode.

use anyhow::{Context, Result};
use cf_core::events::{self, EventKind};
use cf_core::{Member, Plex, ProcessId, Region};
use cf_node::bank::{Bank, BankConfig};
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

#[derive(Clone, Copy, ValueEnum)]
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
    /// Worker threads running the workload
    #[arg(long, default_value_t = 1)]
    threads: u32,
    /// Pause between the two legs of a transfer, in microseconds (a kill then often lands inside a transaction)
    #[arg(long, default_value_t = 0)]
    pause_us: u64,
    /// Buffer pool size in MiB (a private page cache of the data, allocated and touched at start)
    #[arg(long, default_value_t = 64)]
    buffer_pool_mb: usize,
    /// How long a transfer waits for a lock held by a live member, in milliseconds
    #[arg(long, default_value_t = 2000)]
    lock_timeout_ms: u64,
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
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Run(a) => run(a),
        Cmd::RestartLight(a) => light(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cf-node: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn light(a: LightArgs) -> Result<()> {
    let plex = Plex::resolve(a.plex.as_deref());
    let s = cf_node::restart_light::run(&plex.dir, &a.member, a.by.as_deref())?;
    if a.json {
        println!(
            "{{\"member\":\"{}\",\"recovered\":{},\"transactions\":{},\"updates_undone\":{},\"released\":{},\"peak_rss_kib\":{},\"elapsed_ns\":{}}}",
            s.member, s.recovered, s.transactions, s.updates_undone, s.released, s.peak_rss_kib, s.elapsed_ns
        );
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

fn block_stop_signals() -> Result<nix::sys::signal::SigSet> {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
        .context("blocking signals")?;
    Ok(set)
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

fn run(a: RunArgs) -> Result<()> {
    // Signals first, so every thread inherits the mask and SIGTERM waits for us.
    let signals = block_stop_signals()?;
    let plex = Plex::resolve(a.plex.as_deref());
    let region = Arc::new(Region::open(&plex)?);
    let member = connect(&region, &a.member)?;
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
    // Reconnected as a failed member: recover ourselves first (a normal
    // restart; our retained locks answer "retained" to others until then).
    let recovering = member.is_recovering()?;
    if recovering
        || !member.held_records()?.is_empty()
        || !cf_node::wal::read_log(&cf_node::wal::log_path(&plex.dir, &a.member))?
            .records
            .is_empty()
    {
        let rep = recover(&member, &plex.dir, |_| {})?;
        if rep.backout.transactions > 0 || rep.released > 0 {
            events::record(
                &region,
                EventKind::RecoveredAtRestart,
                &a.member,
                Some(&a.member),
                [rep.backout.transactions, rep.released, 0],
            );
        }
    }
    if recovering {
        member.finish_recovery()?;
    }
    // A restart request left for our previous life is over: we are restarted.
    let _ = cf_core::requests::complete_for_name(&region, &a.member, &a.member);
    // Recorded after any self-recovery, so the events of the previous life come first.
    events::record(
        &region,
        EventKind::Connected,
        &a.member,
        None,
        [std::process::id() as u64, 0, 0],
    );
    let monitor = Arc::new(Monitor {
        region: region.clone(),
        plex_dir: plex.dir.clone(),
        me_id: member.id(),
        me_name: a.member.clone(),
        me: ProcessId::current()?,
        claim_delay: Duration::from_millis(a.claim_delay_ms),
        exe: std::env::current_exe().context("finding the cf-node binary")?,
        stop: AtomicBool::new(false),
        detections: AtomicU64::new(0),
        restarts: AtomicU64::new(0),
        nameless: Default::default(),
    });
    monitor.spawn()?;
    let mut workers = Vec::new();
    let bank = match a.workload {
        Workload::Idle => None,
        Workload::Bank => {
            let store = Store::open(&plex.dir)?;
            let log = LogWriter::open(&plex.dir, &a.member, false)?;
            let pool = BufferPool::new(a.buffer_pool_mb << 20);
            let cfg = BankConfig {
                pause: Duration::from_micros(a.pause_us),
                lock_timeout: Duration::from_millis(a.lock_timeout_ms),
                max_amount: 100,
                checkpoint_bytes: a.checkpoint_bytes,
            };
            let bank = Arc::new(Bank::new(store, log, Some(pool), cfg));
            for t in 0..a.threads.max(1) {
                let (b, h) = (bank.clone(), member.holder()?);
                let seed =
                    cf_core::connector::now_ns() ^ ((t as u64) << 48) ^ std::process::id() as u64;
                workers.push(std::thread::spawn(move || b.run_worker(h, seed)));
            }
            Some(bank)
        }
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
    std::io::stdout().flush()?;
    let sig = signals.wait().context("waiting for a signal")?;
    if let Some(b) = &bank {
        b.stop.store(true, Ordering::Relaxed);
    }
    monitor.stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join()
            .map_err(|_| anyhow::anyhow!("a worker thread panicked"))??;
    }
    let id = member.id();
    liveness.stop();
    member.disconnect()?;
    events::record(&region, EventKind::Disconnected, &a.member, None, [0, 0, 0]);
    let _ = id;
    let committed = bank
        .as_ref()
        .map_or(0, |b| b.stats.committed.load(Ordering::Relaxed));
    let skipped = bank
        .as_ref()
        .map_or(0, |b| b.stats.skipped_retained.load(Ordering::Relaxed));
    let rss = peak_rss_kib().unwrap_or(0);
    let mut out = std::io::stdout().lock();
    let _ = if a.json {
        writeln!(
            out,
            "{{\"member\":\"{}\",\"committed\":{committed},\"skipped_retained\":{skipped},\"detections\":{},\"restarts\":{},\"peak_rss_kib\":{rss}}}",
            a.member,
            monitor.detections.load(Ordering::Relaxed),
            monitor.restarts.load(Ordering::Relaxed)
        )
    } else {
        writeln!(
            out,
            "member {} stopped by {sig}: {committed} transfers committed, {skipped} skipped on retained locks, {} deaths detected, {} restarts run; peak RSS {rss} KiB",
            a.member,
            monitor.detections.load(Ordering::Relaxed),
            monitor.restarts.load(Ordering::Relaxed)
        )
    };
    Ok(())
}
