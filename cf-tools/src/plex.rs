//! `create`, `destroy`, `verify`.

use anyhow::{bail, Context, Result};
use cf_core::{inspect, CreateOptions, Plex, Region, Sizes};
use cf_harness::outln;
use clap::Args;
use serde_json::json;
use std::process::ExitCode;

#[derive(Args)]
pub struct CreateArgs {
    /// Lock table entries (a power of two; 16 makes false contention easy to provoke)
    #[arg(long, default_value_t = cf_core::layout::DEFAULT_LOCK_ENTRIES)]
    lock_entries: u32,
    /// Connector slots (1 to 32)
    #[arg(long, default_value_t = cf_core::layout::DEFAULT_MEMBERS)]
    members: u32,
    /// Record entries per member: how many locks one member can hold at once (multiple of 64)
    #[arg(long, default_value_t = cf_core::layout::DEFAULT_RECORDS_PER_MEMBER)]
    records: u32,
    /// Let the owning group read and write the plex (files 0660, directory 0770)
    #[arg(long)]
    group_mode: bool,
    /// Also create the shared accounts file with this many accounts (for the bank workload)
    #[arg(long, value_name = "N")]
    accounts: Option<u64>,
    /// Initial balance of every account
    #[arg(long, default_value_t = 1000, requires = "accounts")]
    balance: i64,
    /// Keep the history of committed transactions (directory `history/`), so
    /// every account can be checked against it (cf_node::history::check)
    #[arg(long)]
    history: bool,
    /// Failure detection interval: a member whose heartbeat is older than
    /// this is declared status-update-missing (e.g. 500ms, 2s, 1m)
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = parse_interval)]
    failure_detection_interval: std::time::Duration,
    /// What happens to a status-update-missing member: fenced (SIGKILL after
    /// the identity check) and recovered at once, or shown until `cfctl fence`
    #[arg(long, value_enum, default_value_t = IsolateArg::AtOnce)]
    isolate: IsolateArg,
    /// How often the deadlock detector runs (one member at a time breaks
    /// each cycle of waiting lock requests by answering one of them
    /// "deadlock"), from 10ms to 1h (e.g. 100ms, 1s; a bare number is milliseconds)
    #[arg(long, value_name = "DURATION", default_value = "100ms", value_parser = parse_deadlock_interval)]
    deadlock_interval: std::time::Duration,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum IsolateArg {
    /// Fence and recover a status-update-missing member at once (ISOLATETIME(0))
    AtOnce,
    /// Show it as status-update-missing and wait for `cfctl fence MEMBER`
    Prompt,
}

fn parse_deadlock_interval(s: &str) -> Result<std::time::Duration, String> {
    let d = cf_harness::duration::millis(s)?;
    cf_core::connector::liveness::check_deadlock_interval(d).map_err(|e| e.to_string())?;
    Ok(d)
}

fn parse_interval(s: &str) -> Result<std::time::Duration, String> {
    let d = cf_harness::duration::secs(s)?;
    cf_core::connector::liveness::check_interval(d).map_err(|e| e.to_string())?;
    Ok(d)
}

pub fn create(plex: &Plex, a: CreateArgs) -> Result<ExitCode> {
    let sizes = Sizes {
        lock_entries: a.lock_entries,
        members: a.members,
        records_per_member: a.records,
    };
    // Every check before anything is made.
    sizes.check().map_err(|e| anyhow::anyhow!("{e}"))?;
    let opts = CreateOptions {
        sizes,
        group_access: a.group_mode,
    };
    let region_bytes = cf_core::layout::Layout::compute(sizes).total_size;
    let accounts_bytes = a.accounts.map_or(0, |n| 64 + 16 * n);
    // Only the last component of the plex directory is made; a failed
    // create takes back everything it made, the directory too.
    let made_dir = cf_harness::plexdir::create_last(&plex.dir, a.group_mode)?;
    let undo_dir = |made: bool| {
        if made {
            let _ = std::fs::remove_dir(&plex.dir);
        }
    };
    if let Err(e) = cf_harness::plexdir::check_space(
        &plex.dir,
        region_bytes.saturating_add(accounts_bytes),
        &format!(
            "the region ({}){}",
            cf_harness::plexdir::human_bytes(region_bytes),
            if accounts_bytes > 0 {
                format!(
                    " and the accounts ({})",
                    cf_harness::plexdir::human_bytes(accounts_bytes)
                )
            } else {
                String::new()
            }
        ),
    ) {
        undo_dir(made_dir);
        return Err(e);
    }
    let region = match Region::create(plex, &opts) {
        Ok(r) => r,
        Err(e) => {
            undo_dir(made_dir);
            return Err(e.into());
        }
    };
    let settings = cf_core::connector::liveness::Settings {
        interval: a.failure_detection_interval,
        isolate: match a.isolate {
            IsolateArg::AtOnce => cf_core::connector::liveness::Isolate::AtOnce,
            IsolateArg::Prompt => cf_core::connector::liveness::Isolate::Prompt,
        },
        deadlock_interval: a.deadlock_interval,
    };
    if let Err(e) = cf_core::connector::liveness::set_settings(&region, settings) {
        let _ = std::fs::remove_file(region.path());
        undo_dir(made_dir);
        bail!("{e}");
    }
    if let Some(n) = a.accounts {
        if let Err(e) = cf_node::store::Store::create(&plex.dir, n, a.balance, a.group_mode) {
            let _ = std::fs::remove_file(region.path());
            undo_dir(made_dir);
            return Err(e.into());
        }
    }
    if a.history {
        if let Err(e) = cf_node::history::create_dir(&plex.dir, a.group_mode) {
            let _ = std::fs::remove_file(region.path());
            if a.accounts.is_some() {
                let _ = std::fs::remove_file(cf_node::store::Store::path_in(&plex.dir));
            }
            undo_dir(made_dir);
            return Err(e.into());
        }
    }
    let l = region.layout();
    if a.json {
        crate::print_json(&json!({
            "plex": plex.dir, "region": region.path(), "size": l.total_size,
            "lock_entries": a.lock_entries, "members": a.members, "records_per_member": a.records,
            "accounts": a.accounts, "balance": a.accounts.map(|_| a.balance),
            "history": a.history,
            "failure_detection_interval_ms": settings.interval.as_millis() as u64,
            "isolate": settings.isolate.as_str(),
            "deadlock_interval_ms": settings.deadlock_interval.as_millis() as u64,
        }));
    } else {
        outln!(
            "created plex {}: region {} bytes, {} lock entries, {} members, {} records per member",
            plex.dir.display(),
            l.total_size,
            a.lock_entries,
            a.members,
            a.records
        );
        if let Some(n) = a.accounts {
            outln!("created {n} accounts of {} each", a.balance);
        }
        outln!(
            "failure detection interval {} ms, isolate {}",
            settings.interval.as_millis(),
            settings.isolate.as_str()
        );
        outln!(
            "deadlock detection every {} ms",
            settings.deadlock_interval.as_millis()
        );
        if a.history {
            outln!(
                "keeping the history of committed transactions in {}",
                cf_node::history::history_dir(&plex.dir).display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct DestroyArgs {
    /// Destroy even if live members are connected (they will fail)
    #[arg(long)]
    force: bool,
}

pub fn destroy(plex: &Plex, a: DestroyArgs) -> Result<ExitCode> {
    let path = plex.region_path();
    // Never through a symlinked (or otherwise untrusted) plex directory.
    cf_core::plexfs::PlexDir::check(&plex.dir)?;
    match Region::open_read_only(plex) {
        Ok(region) => {
            // Who is live, from the connector slots alone (a damaged record
            // must not stop a forced destroy).
            let mut live = Vec::new();
            for id in region.connector_ids() {
                match cf_core::connector::slot_view(&region, id) {
                    Ok(s) if s.is_alive() => live.push(s),
                    Ok(_) => {}
                    Err(e) if !a.force => {
                        bail!("cannot tell whether members are live ({e}); use --force")
                    }
                    Err(_) => {}
                }
            }
            if !live.is_empty() && !a.force {
                let names: Vec<_> = live
                    .iter()
                    .map(|m| format!("{} (pid {})", inspect::escape(&m.name), m.process.pid))
                    .collect();
                bail!(
                    "live members are connected: {}; stop them or use --force",
                    names.join(", ")
                );
            }
        }
        Err(cf_core::RegionError::NotFound { .. }) => {
            // A plex directory left empty (by hand, or by an old failed
            // create) is removed; anything else in it is left alone.
            if std::fs::read_dir(&plex.dir).is_ok_and(|mut d| d.next().is_none())
                && std::fs::remove_dir(&plex.dir).is_ok()
            {
                outln!("removed the empty plex directory {}", plex.dir.display());
                return Ok(ExitCode::SUCCESS);
            }
            bail!("no region at {}", path.display())
        }
        // A damaged region can still be destroyed, but never through a symlink
        // or another user's file.
        Err(
            e @ (cf_core::RegionError::Symlink { .. } | cf_core::RegionError::ForeignOwner { .. }),
        ) => return Err(e.into()),
        Err(_) => {}
    }
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    // The shared data and the members' logs.
    let _ = std::fs::remove_file(cf_node::store::Store::path_in(&plex.dir));
    if let Ok(dir) = std::fs::read_dir(&plex.dir) {
        for entry in dir.flatten() {
            let is_log = entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with("log."));
            if is_log && entry.file_type().is_ok_and(|t| t.is_file()) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    // The history of committed transactions: regular files in a real
    // directory (never through a symlink).
    let history = cf_node::history::history_dir(&plex.dir);
    if std::fs::symlink_metadata(&history).is_ok_and(|m| m.is_dir()) {
        if let Ok(dir) = std::fs::read_dir(&history) {
            for entry in dir.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_file()) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        let _ = std::fs::remove_dir(&history);
    }
    // Remove the directory if nothing else is left in it.
    let _ = std::fs::remove_dir(&plex.dir);
    outln!("destroyed plex {}", plex.dir.display());
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct VerifyArgs {
    /// How long a discrepancy may take to clear before it is damage: a live member between
    /// its record and its lock word (acquire, release) shows one for a moment. 500ms, 2s (a
    /// bare number is seconds); 0 reports every discrepancy of the first look
    #[arg(long, default_value = "500ms", value_parser = cf_harness::duration::secs)]
    settle: std::time::Duration,
    /// Print the result as JSON: {"ok": bool, "problems": [...], "in_flight": [...]}
    #[arg(long)]
    pub json: bool,
}

/// Tell damage from in-flight states: `first` (the problems of a first
/// look) are looked at again with `look` until `settle` has passed; a
/// problem that is gone in any later look was in flight. Returns (damage,
/// in flight).
pub fn settle(
    first: Vec<String>,
    settle: std::time::Duration,
    mut look: impl FnMut() -> Vec<String>,
) -> (Vec<String>, Vec<String>) {
    let mut left = first;
    let mut cleared = Vec::new();
    let t = std::time::Instant::now();
    while !left.is_empty() && t.elapsed() < settle {
        std::thread::sleep(std::time::Duration::from_millis(5));
        let now = look();
        let (still, gone): (Vec<String>, Vec<String>) =
            left.into_iter().partition(|p| now.contains(p));
        cleared.extend(gone);
        left = still;
    }
    (left, cleared)
}

/// Problems of the plex's other files, as their readers see them: the
/// accounts file, every member's log and history file.
fn file_problems(plex: &Plex) -> Vec<String> {
    let mut problems = Vec::new();
    let say = |e: &dyn std::error::Error| inspect::escape(&e.to_string());
    match cf_node::store::Store::open_read_only(&plex.dir) {
        Ok(_) | Err(cf_node::store::StoreError::NotFound(_)) => {}
        Err(e) => problems.push(say(&e)),
    }
    if let Ok(dir) = std::fs::read_dir(&plex.dir) {
        let mut logs: Vec<_> = dir
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("log."))
            .map(|e| e.path())
            .collect();
        logs.sort();
        for path in logs {
            if let Err(e) = cf_node::wal::read_log(&path) {
                problems.push(say(&e));
            }
        }
    }
    match cf_node::history::enabled(&plex.dir) {
        Ok(false) => {}
        Ok(true) => {
            if let Ok(dir) = std::fs::read_dir(cf_node::history::history_dir(&plex.dir)) {
                let mut files: Vec<_> = dir.flatten().map(|e| e.path()).collect();
                files.sort();
                for path in files {
                    if let Err(e) = cf_node::history::read_history(&path) {
                        problems.push(say(&e));
                    }
                }
            }
        }
        Err(e) => problems.push(say(&e)),
    }
    problems
}

pub fn verify(plex: &Plex, a: VerifyArgs) -> Result<ExitCode> {
    // Nothing is changed: a read-only mapping (works on a region we may only read).
    let region = Region::open_read_only(plex)?;
    let check = || {
        let mut p = inspect::verify(&region);
        p.extend(file_problems(plex));
        p
    };
    // Only a live member moves between its record and its lock word: with
    // none alive, the first look is the last.
    let live = inspect::members(&region).is_ok_and(|ms| ms.iter().any(|m| m.alive));
    let wait = if live {
        a.settle
    } else {
        std::time::Duration::ZERO
    };
    let (problems, in_flight) = settle(check(), wait, check);
    if a.json {
        crate::print_json(&json!({ "ok": problems.is_empty(), "problems": problems,
                                   "in_flight": in_flight, "settle_s": a.settle.as_secs_f64() }));
    } else if problems.is_empty() {
        outln!("region {} is consistent", region.path().display());
        if !in_flight.is_empty() {
            outln!(
                "  {} in-flight state(s) seen and cleared within {} (a live member between its record and its lock word):",
                in_flight.len(),
                cf_harness::duration::human(a.settle)
            );
            for p in in_flight.iter().take(5) {
                outln!("    {p}");
            }
        }
    } else {
        for p in &problems {
            outln!("problem: {p}");
        }
    }
    if problems.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        if !a.json {
            eprintln!(
                "cfctl: verify found {} problem(s) that did not clear within {}",
                problems.len(),
                cf_harness::duration::human(a.settle)
            );
        }
        Ok(cf_harness::exit::code(cf_harness::exit::INVARIANT))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_discrepancy_that_clears_is_in_flight() {
        let mut looks = vec![
            vec!["b".to_string(), "damage".into()],
            vec!["damage".into()],
        ]
        .into_iter();
        let (damage, in_flight) = settle(
            vec!["a".into(), "damage".into()],
            std::time::Duration::from_millis(100),
            || looks.next().unwrap_or_else(|| vec!["damage".into()]),
        );
        assert_eq!(damage, ["damage"]);
        assert_eq!(in_flight, ["a"]);
    }

    #[test]
    fn nothing_to_settle() {
        let (d, f) = settle(Vec::new(), std::time::Duration::from_secs(5), Vec::new);
        assert!(d.is_empty() && f.is_empty());
    }
}
