//! `cfctl demo`: the product's main job, step by step. A fresh plex, three
//! members on the bank workload, one of them killed with SIGKILL inside a
//! transaction, and every step of its recovery shown as it happens.

use crate::recovery_view::event_text;
use anyhow::{bail, Result};
use cf_core::events::{self, Event, EventKind};
use cf_core::{inspect, CreateOptions, Member, Mode, Plex, Region, Sizes, TryOutcome};
use cf_harness::outln;
use cf_harness::procs::{cf_node_binary, MemberProc, TempPlex};
use cf_node::store::Store;
use cf_node::wal::{self, LogRecord};
use clap::Args;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct DemoArgs {
    /// Keep the plex afterwards (it is removed by default) to look at it with `cfctl display`.
    /// A Ctrl-C (SIGINT, SIGTERM) stops the demo early: a recovery under way finishes, the
    /// members are stopped normally, and the plex is removed unless kept
    #[arg(long)]
    keep: bool,
    /// Accounts in the bank
    #[arg(long, default_value_t = 1000)]
    accounts: u64,
    /// How long the surviving members wait before claiming the restart request,
    /// so that the retained locks can be seen (0 in normal operation)
    #[arg(long, default_value_t = 1000)]
    claim_delay_ms: u64,
}

fn ms(ns: u64) -> String {
    cf_harness::duration::human_ns(ns as f64)
}

/// Set by SIGINT or SIGTERM (a second one ends the demo at once).
static STOP: std::sync::OnceLock<cf_node::signals::StopFlag> = std::sync::OnceLock::new();

fn interrupted() -> bool {
    STOP.get().is_some_and(|f| f.is_set())
}

/// The demo was interrupted: wind down.
#[derive(Debug)]
struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "interrupted")
    }
}

impl std::error::Error for Interrupted {}

/// Sleep `d`, or end early (with [`Interrupted`]) on a stop signal.
fn nap(d: Duration) -> Result<()> {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if interrupted() {
            return Err(Interrupted.into());
        }
        std::thread::sleep(Duration::from_millis(5).min(until - Instant::now()));
    }
    Ok(())
}

/// Wait for an event about `member` of `kind`, up to `limit`.
fn wait_event(
    region: &Region,
    from: u64,
    member: &str,
    kind: EventKind,
    limit: Duration,
) -> Result<Event> {
    let t = Instant::now();
    loop {
        if let Some(e) = events::read_since(region, from)
            .into_iter()
            .find(|e| e.kind() == kind && e.member == member)
        {
            return Ok(e);
        }
        if t.elapsed() > limit {
            bail!("no {} event for {member} within {:?}", kind.as_str(), limit);
        }
        if interrupted() {
            return Err(Interrupted.into());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

pub fn run(plex_arg: Option<&Path>, a: DemoArgs) -> Result<ExitCode> {
    let exe = cf_node_binary()?;
    let flag = cf_node::signals::StopFlag::install()
        .map_err(|e| anyhow::anyhow!("installing signal handlers: {e}"))?;
    let _ = STOP.set(flag);
    let mut tmp = match plex_arg {
        Some(p) => TempPlex::named(p)?,
        None => TempPlex::fresh("demo")?,
    };
    tmp.keep |= a.keep;
    let mut members: Vec<MemberProc> = Vec::new();
    let mut killed = false;
    let result = steps(&exe, &tmp.dir, &a, &mut members, &mut killed);
    let stopped_early = interrupted()
        || result
            .as_ref()
            .err()
            .is_some_and(|e| e.downcast_ref::<Interrupted>().is_some());
    if stopped_early {
        wind_down(&tmp.dir, &mut members, killed);
        outln!(
            "\nInterrupted: the faults stopped, the members were stopped normally; {}.",
            if tmp.keep {
                format!("the plex is kept at {}", tmp.dir.display())
            } else {
                "the plex is removed".to_string()
            }
        );
        return Ok(cf_harness::exit::code(cf_harness::exit::INTERRUPTED));
    }
    result
}

/// After an interrupt: let a recovery under way finish (so no lock stays
/// retained), then stop the surviving members normally.
fn wind_down(dir: &Path, members: &mut Vec<MemberProc>, killed: bool) {
    let plex = Plex {
        dir: dir.to_path_buf(),
    };
    if killed {
        if let Ok(region) = Region::open(&plex) {
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(30) {
                let retained = inspect::retained(&region).map(|r| r.len()).unwrap_or(0);
                let pending = cf_core::requests::list(&region)
                    .map(|r| r.len())
                    .unwrap_or(0);
                if retained == 0 && pending == 0 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
    for m in members.iter_mut() {
        if m.try_status().is_none() {
            let (line, _) = m.stop();
            if !line.is_empty() {
                outln!("   {line}");
            }
        }
    }
    members.clear();
}

fn steps(
    exe: &Path,
    dir: &Path,
    a: &DemoArgs,
    members: &mut Vec<MemberProc>,
    killed: &mut bool,
) -> Result<ExitCode> {
    let t_start = Instant::now();
    let dir = dir.to_path_buf();
    let plex = Plex { dir: dir.clone() };
    outln!("== cfctl demo: a member dies holding modify locks; a peer restarts it light ==\n");
    let opts = CreateOptions {
        sizes: Sizes {
            lock_entries: 1 << 16,
            members: 8,
            records_per_member: 1024,
        },
        group_access: false,
    };
    let region = Region::create(&plex, &opts)?;
    Store::create(&dir, a.accounts, 1000, false)?;
    let expected = a.accounts as i128 * 1000;
    outln!(
        "1. Created plex {} (the coupling facility) and {} accounts of 1000 (total {expected}).",
        dir.display(),
        a.accounts
    );

    for (name, pause) in [("SYSA", 200u64), ("SYSB", 20_000), ("SYSC", 200)] {
        let args = [
            "--threads".to_string(),
            "1".into(),
            "--pause-us".into(),
            pause.to_string(),
            "--claim-delay-ms".into(),
            a.claim_delay_ms.to_string(),
        ];
        if interrupted() {
            return Err(Interrupted.into());
        }
        members.push(MemberProc::start(exe, &dir, name, &args)?);
    }
    outln!("2. Started members SYSA, SYSB, SYSC (cf-node run --workload bank); each transfer takes two");
    outln!(
        "   modify locks, logs each leg, commits, releases. SYSB pauses 20 ms between its legs."
    );
    nap(Duration::from_millis(600))?;

    // Kill SYSB between the two legs of a transfer: its log ends with an UPDATE.
    let victim = "SYSB";
    let log_path = wal::log_path(&dir, victim);
    let deadline = Instant::now() + Duration::from_secs(10);
    let (held, t_kill) = loop {
        let log = wal::read_log(&log_path)?.records;
        let in_tx = matches!(log.last(), Some((_, LogRecord::Update { .. })));
        let locks: Vec<_> = inspect::locks(&region)?
            .into_iter()
            .filter(|l| l.member == victim && l.held && l.mode == Mode::Modify)
            .collect();
        if in_tx && locks.len() == 2 {
            let from = events::next_seq(&region);
            let t = cf_core::connector::now_ns();
            members[1].kill9();
            *killed = true;
            break ((locks, from), t);
        }
        if Instant::now() > deadline {
            bail!("SYSB never held two modify locks inside a transaction");
        }
        if interrupted() {
            return Err(Interrupted.into());
        }
        std::thread::sleep(Duration::from_micros(300));
    };
    let (locks, from) = held;
    outln!("\n3. SIGKILL to SYSB while inside a transfer, holding modify locks on:");
    for l in &locks {
        outln!("      {} (lock table entry {})", l.resource, l.entry);
    }

    let det = wait_event(
        &region,
        from,
        victim,
        EventKind::Detected,
        Duration::from_secs(10),
    )?;
    outln!(
        "\n4. {} (+{} after the kill)",
        event_text(&det),
        ms(det.time_ns.saturating_sub(t_kill))
    );
    let clean = wait_event(
        &region,
        from,
        victim,
        EventKind::CleanedUp,
        Duration::from_secs(10),
    )?;
    outln!(
        "   {} (+{})",
        event_text(&clean),
        ms(clean.time_ns.saturating_sub(t_kill))
    );
    outln!("\n5. Retained locks now (cfctl display retained):");
    for l in inspect::retained(&region)? {
        outln!(
            "      {:<12} {:<10} retained by {}",
            l.resource,
            l.mode.as_str(),
            l.member
        );
    }
    let probe = Member::connect(std::sync::Arc::new(Region::open(&plex)?), "PROBE")?;
    let mut h = probe.holder()?;
    let res = &locks[0].resource;
    match h.try_lock(res.as_bytes(), Mode::Modify)? {
        TryOutcome::Retained(who) => outln!(
            "   A request from another member for {res}: refused at once, \"retained by {}\".",
            who.name
        ),
        other => bail!("expected the request for {res} to be refused as retained, got {other:?}"),
    }
    drop(h);
    probe.disconnect()?;

    let done = wait_event(
        &region,
        from,
        victim,
        EventKind::TerminatedNormally,
        Duration::from_secs(30),
    )?;
    outln!("\n6. Recovery, as recorded in the region (cfctl display events):");
    for e in events::read_since(&region, from) {
        if e.member != victim || e.seq > done.seq {
            continue;
        }
        outln!(
            "   +{:>10}  {}",
            ms(e.time_ns.saturating_sub(t_kill)),
            event_text(&e)
        );
    }
    if a.claim_delay_ms > 0 {
        outln!(
            "   (the claim waited the demo's {} ms claim delay, so you could see step 5)",
            a.claim_delay_ms
        );
    }
    outln!(
        "\n   Retained locks left: {}",
        inspect::retained(&region)?.len()
    );

    // Stop the survivors normally, then check the bank.
    let mut summaries = Vec::new();
    for m in members.iter_mut().filter(|m| m.name != victim) {
        summaries.push(m.stop().0);
    }
    members.clear();
    let store = Store::open(&dir)?;
    let total = store.total();
    outln!(
        "\n7. Stopped SYSA and SYSC normally. Bank total: {total} (expected {expected}): {}.",
        if total == expected {
            "unchanged"
        } else {
            "CHANGED"
        }
    );
    for s in &summaries {
        outln!("   {s}");
    }
    let problems = inspect::verify(&region);
    outln!(
        "   Region check (cfctl verify): {}.",
        if problems.is_empty() {
            "consistent".to_string()
        } else {
            problems.join("; ")
        }
    );
    outln!(
        "\nDone in {:.1} s.{}",
        t_start.elapsed().as_secs_f64(),
        if a.keep {
            format!(" The plex is kept at {}.", dir.display())
        } else {
            String::new()
        }
    );
    if total != expected || !problems.is_empty() {
        eprintln!("cfctl: the demo found a broken invariant");
        return Ok(cf_harness::exit::code(cf_harness::exit::INVARIANT));
    }
    Ok(ExitCode::SUCCESS)
}
