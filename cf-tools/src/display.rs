//! `display structures|members|locks|retained`.

use anyhow::Result;
use cf_core::inspect::{self, LockView};
use cf_core::{Plex, Region};
use cf_harness::outln;
use clap::{Args, ValueEnum};
use serde_json::{json, Value};
use std::process::ExitCode;

#[derive(Clone, Copy, ValueEnum)]
pub enum What {
    /// The structures of the region, with lock activity counters
    Structures,
    /// The connector table
    Members,
    /// Every lock held (and request pending)
    Locks,
    /// Locks retained by failed members
    Retained,
    /// Outstanding restart requests
    Requests,
    /// The recorded steps of failures and recoveries
    Events,
    /// The shared accounts file: number of accounts and their total
    Accounts,
}

#[derive(Args)]
pub struct DisplayArgs {
    #[arg(value_enum)]
    what: What,
    /// Print one JSON document instead of a table
    #[arg(long)]
    json: bool,
}

pub fn run(plex: &Plex, a: DisplayArgs) -> Result<ExitCode> {
    if let What::Accounts = a.what {
        crate::recovery_view::accounts(plex, a.json)?;
        return Ok(ExitCode::SUCCESS);
    }
    let region = Region::open(plex)?;
    match a.what {
        What::Structures => structures(&region, a.json),
        What::Members => members(&region, a.json)?,
        What::Locks => locks(inspect::locks(&region)?, a.json, "no locks held"),
        What::Retained => locks(inspect::retained(&region)?, a.json, "no retained locks"),
        What::Requests => crate::recovery_view::requests(&region, a.json)?,
        What::Events => crate::recovery_view::events(&region, a.json)?,
        What::Accounts => unreachable!("handled above"),
    }
    Ok(ExitCode::SUCCESS)
}

fn rate(n: u64, of: u64) -> f64 {
    if of == 0 {
        0.0
    } else {
        n as f64 / of as f64
    }
}

fn structures(region: &Region, json: bool) {
    let list = inspect::structures(region);
    if json {
        let v: Vec<Value> = list
            .iter()
            .map(|s| {
                let mut o =
                    json!({ "name": s.name, "kind": s.kind, "offset": s.offset, "size": s.size });
                if let Some(n) = s.lock_entries {
                    o["lock_entries"] = json!(n);
                    o["entries_in_use"] = json!(s.entries_in_use);
                }
                if let Some(c) = s.counters {
                    o["requests"] = json!(c.requests);
                    o["contention"] = json!(c.contention);
                    o["false_contention"] = json!(c.false_contention);
                    o["contention_rate"] = json!(rate(c.contention, c.requests));
                    o["false_contention_rate"] = json!(rate(c.false_contention, c.requests));
                }
                if let Some(m) = s.members {
                    o["members"] = json!(m);
                }
                if let Some(r) = s.records_per_member {
                    o["records_per_member"] = json!(r);
                }
                o
            })
            .collect();
        crate::print_json(&Value::Array(v));
        return;
    }
    outln!(
        "{:<14} {:<16} {:>12} {:>12}",
        "STRUCTURE",
        "KIND",
        "OFFSET",
        "SIZE"
    );
    for s in &list {
        outln!(
            "{:<14} {:<16} {:>12} {:>12}",
            s.name,
            s.kind,
            s.offset,
            s.size
        );
        if let (Some(n), Some(c)) = (s.lock_entries, s.counters) {
            outln!(
                "    lock entries {n}, in use {}; requests {}, contention {} ({:.3}%), false contention {} ({:.3}%)",
                s.entries_in_use.unwrap_or(0),
                c.requests,
                c.contention,
                100.0 * rate(c.contention, c.requests),
                c.false_contention,
                100.0 * rate(c.false_contention, c.requests)
            );
        }
        if let Some(m) = s.members {
            outln!("    {m} connector slots");
        }
        if let Some(r) = s.records_per_member {
            outln!("    {r} record entries per member");
        }
    }
}

fn members(region: &Region, json: bool) -> Result<()> {
    let list = inspect::members(region)?;
    if json {
        let v: Vec<Value> = list
            .iter()
            .map(|m| {
                json!({
                    "name": m.name, "id": m.id, "state": m.state.as_str(), "pid": m.pid,
                    "generation": m.generation, "alive": m.alive, "held": m.held, "retained": m.retained,
                    "connected_unix_ns": m.connected_unix_ns, "failed_unix_ns": m.failed_unix_ns,
                })
            })
            .collect();
        crate::print_json(&Value::Array(v));
        return Ok(());
    }
    if list.is_empty() {
        outln!("no members connected");
        return Ok(());
    }
    outln!(
        "{:>3} {:<20} {:<18} {:>8} {:>5} {:>6} {:>8}",
        "ID",
        "NAME",
        "STATE",
        "PID",
        "ALIVE",
        "HELD",
        "RETAINED"
    );
    for m in &list {
        outln!(
            "{:>3} {:<20} {:<18} {:>8} {:>5} {:>6} {:>8}",
            m.id,
            m.name,
            m.state.as_str(),
            m.pid,
            if m.alive { "yes" } else { "no" },
            m.held,
            m.retained
        );
    }
    Ok(())
}

fn locks(list: Vec<LockView>, json: bool, empty: &str) {
    if json {
        let v: Vec<Value> = list
            .iter()
            .map(|l| {
                json!({
                    "member": l.member, "member_id": l.member_id, "resource": l.resource,
                    "mode": l.mode.as_str(), "entry": l.entry, "slot": l.slot,
                    "state": if l.retained { "retained" } else if l.held { "held" } else { "pending" },
                })
            })
            .collect();
        crate::print_json(&Value::Array(v));
        return;
    }
    if list.is_empty() {
        outln!("{empty}");
        return;
    }
    outln!(
        "{:<20} {:<32} {:<10} {:>10} {:<9}",
        "MEMBER",
        "RESOURCE",
        "MODE",
        "ENTRY",
        "STATE"
    );
    for l in &list {
        outln!(
            "{:<20} {:<32} {:<10} {:>10} {:<9}",
            l.member,
            l.resource,
            l.mode.as_str(),
            l.entry,
            if l.retained {
                "retained"
            } else if l.held {
                "held"
            } else {
                "pending"
            }
        );
    }
}
