//! `cfctl demo`: the product's main job, step by step. A fresh plex, three
//! members on the bank workload, one of them killed with SIGKILL inside a
//! transaction, and every step of its recovery shown as it happens.

use crate::recovery_view::event_text;
use anyhow::{bail, Result};
use cf_core::events::{self, Event, EventKind};
use cf_core::{inspect, CreateOptions, Member, Mode, Plex, Region, Sizes, TryOutcome};
use cf_harness::procs::{cf_node_binary, MemberProc, TempPlex};
use cf_node::store::Store;
use cf_node::wal::{self, LogRecord};
use clap::Args;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct DemoArgs {
    /// Keep the plex afterwards (it is removed by default) to look at it with `cfctl display`
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
    if ns < 1_000_000 {
        format!("{:.0} µs", ns as f64 / 1e3)
    } else {
        format!("{:.2} ms", ns as f64 / 1e6)
    }
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
            .find(|e| e.kind == kind && e.member == member)
        {
            return Ok(e);
        }
        if t.elapsed() > limit {
            bail!("no {} event for {member} within {:?}", kind.as_str(), limit);
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

pub fn run(plex_arg: Option<&Path>, a: DemoArgs) -> Result<ExitCode> {
    let t_start = Instant::now();
    let exe = cf_node_binary()?;
    let mut tmp = TempPlex::fresh("demo");
    if let Some(p) = plex_arg {
        tmp.dir = p.to_path_buf();
    }
    tmp.keep = a.keep || plex_arg.is_some();
    let dir = tmp.dir.clone();
    let plex = Plex { dir: dir.clone() };
    println!("== cfctl demo: a member dies holding modify locks; a peer restarts it light ==\n");
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
    println!(
        "1. Created plex {} (the coupling facility) and {} accounts of 1000 (total {expected}).",
        dir.display(),
        a.accounts
    );

    let mut members = Vec::new();
    for (name, pause) in [("SYSA", 200u64), ("SYSB", 20_000), ("SYSC", 200)] {
        let args = [
            "--threads".to_string(),
            "1".into(),
            "--pause-us".into(),
            pause.to_string(),
            "--claim-delay-ms".into(),
            a.claim_delay_ms.to_string(),
        ];
        members.push(MemberProc::start(&exe, &dir, name, &args)?);
    }
    println!("2. Started members SYSA, SYSB, SYSC (cf-node run --workload bank); each transfer takes two");
    println!(
        "   modify locks, logs each leg, commits, releases. SYSB pauses 20 ms between its legs."
    );
    std::thread::sleep(Duration::from_millis(600));

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
            break ((locks, from), t);
        }
        if Instant::now() > deadline {
            bail!("SYSB never held two modify locks inside a transaction");
        }
        std::thread::sleep(Duration::from_micros(300));
    };
    let (locks, from) = held;
    println!("\n3. SIGKILL to SYSB while inside a transfer, holding modify locks on:");
    for l in &locks {
        println!("      {} (lock table entry {})", l.resource, l.entry);
    }

    let det = wait_event(
        &region,
        from,
        victim,
        EventKind::Detected,
        Duration::from_secs(10),
    )?;
    println!(
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
    println!(
        "   {} (+{})",
        event_text(&clean),
        ms(clean.time_ns.saturating_sub(t_kill))
    );
    println!("\n5. Retained locks now (cfctl display retained):");
    for l in inspect::retained(&region)? {
        println!(
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
        TryOutcome::Retained(who) => println!(
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
    println!("\n6. Recovery, as recorded in the region (cfctl display events):");
    for e in events::read_since(&region, from) {
        if e.member != victim || e.seq > done.seq {
            continue;
        }
        println!(
            "   +{:>10}  {}",
            ms(e.time_ns.saturating_sub(t_kill)),
            event_text(&e)
        );
    }
    if a.claim_delay_ms > 0 {
        println!(
            "   (the claim waited the demo's {} ms claim delay, so you could see step 5)",
            a.claim_delay_ms
        );
    }
    println!(
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
    println!(
        "\n7. Stopped SYSA and SYSC normally. Bank total: {total} (expected {expected}): {}.",
        if total == expected {
            "unchanged"
        } else {
            "CHANGED"
        }
    );
    for s in &summaries {
        println!("   {s}");
    }
    let problems = inspect::verify(&region);
    println!(
        "   Region check (cfctl verify): {}.",
        if problems.is_empty() {
            "consistent".to_string()
        } else {
            problems.join("; ")
        }
    );
    println!(
        "\nDone in {:.1} s.{}",
        t_start.elapsed().as_secs_f64(),
        if a.keep {
            format!(" The plex is kept at {}.", dir.display())
        } else {
            String::new()
        }
    );
    if total != expected || !problems.is_empty() {
        bail!("the demo found a broken invariant");
    }
    Ok(ExitCode::SUCCESS)
}
