//! `display`: what the region holds now, in the shape of the z/OS operator
//! displays (`D XCF,STR`, `D XCF,STR,STRNAME=...,CONNAME=ALL`, `D GRS,C`),
//! once or every `--watch INTERVAL`.

use crate::counts;
use anyhow::{bail, Result};
use cf_core::inspect::{self, escape, Counters, LockView, MemberView};
use cf_core::ConnectorId;
use cf_core::{MemberState, Plex, Region};
use cf_harness::outln;
use cf_harness::table::table;
use clap::{Args, ValueEnum};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum What {
    /// Every structure with its usage (D XCF,STR): lock entries and record entries in use
    Structures,
    /// One structure and each connector's state and counts (D XCF,STR,STRNAME=NAME,CONNAME=ALL)
    Structure,
    /// The connector table: state, process, locks held and retained, lock activity
    Members,
    /// Every lock held (and request pending)
    Locks,
    /// Locks retained by failed members
    Retained,
    /// Resources in contention (D GRS,C): who holds, who waits, in which mode, for how long
    Contention,
    /// Outstanding restart requests
    Requests,
    /// The recorded steps of failures and recoveries, in time order
    Events,
    /// The shared accounts file: number of accounts and their total (transfers in flight shown)
    Accounts,
}

const WHATS: [(&str, &str); 9] = [
    (
        "structures",
        "every structure with its usage (D XCF,STR): lock entries and record entries in use",
    ),
    (
        "structure NAME",
        "one structure and each connector's state and counts (CONNAME=ALL)",
    ),
    (
        "members",
        "the connector table: state, process, locks held and retained, lock activity",
    ),
    ("locks", "every lock held (and request pending)"),
    ("retained", "locks retained by failed members"),
    (
        "contention",
        "resources in contention (D GRS,C): who holds, who waits, mode, for how long",
    ),
    ("requests", "outstanding restart requests"),
    (
        "events",
        "the recorded steps of failures and recoveries, in time order",
    ),
    (
        "accounts",
        "the shared accounts file: its total, with the transfers in flight",
    ),
];

#[derive(Args)]
#[command(
    after_help = "Displays: structures, structure NAME, members, locks, retained, contention, \
requests, events, accounts.\n\nExamples:\n  cfctl display structures\n  cfctl display structure lock\n  \
cfctl display contention --watch 1s\n  cfctl display locks --member SYSA --resource 'acct:*'"
)]
pub struct DisplayArgs {
    /// What to display (without it: the list of displays)
    #[arg(value_enum)]
    what: Option<What>,
    /// With `structure`: the structure's name (connectors, lock, lock-table, restart, events,
    /// member-areas)
    name: Option<String>,
    /// Only this member (members, locks, retained, contention, events, structure)
    #[arg(long, value_name = "NAME")]
    member: Option<String>,
    /// Only this resource; a trailing `*` matches a prefix (locks, retained, contention)
    #[arg(long, value_name = "RES")]
    resource: Option<String>,
    /// Display again every INTERVAL (1s, 500ms; a bare number is seconds) until Ctrl-C or a
    /// closed pipe
    #[arg(long, value_name = "INTERVAL", value_parser = cf_harness::duration::secs)]
    watch: Option<Duration>,
    /// Print one JSON document instead of a table (with --watch: one per interval)
    #[arg(long)]
    pub json: bool,
}

/// State kept across the displays of one `--watch` (when a wait was first seen).
#[derive(Default)]
struct Seen {
    waits: HashMap<(ConnectorId, String, &'static str), Instant>,
}

pub fn run(plex: &Plex, a: DisplayArgs) -> Result<ExitCode> {
    let Some(what) = a.what else {
        outln!("cfctl display WHAT: what to display:");
        for (n, d) in WHATS {
            outln!("  {n:<16} {d}");
        }
        return Ok(cf_harness::exit::code(cf_harness::exit::USAGE));
    };
    if what == What::Structure && a.name.is_none() {
        bail!("display structure needs a NAME (see cfctl display structures)");
    }
    if what != What::Structure && a.name.is_some() {
        bail!("only `display structure` takes a NAME");
    }
    let Some(every) = a.watch else {
        let mut seen = Seen::default();
        return once(plex, &a, what, &mut seen);
    };
    if every.is_zero() {
        bail!("--watch needs an interval of more than 0");
    }
    let stop = cf_node::signals::StopFlag::install()
        .map_err(|e| anyhow::anyhow!("installing signal handlers: {e}"))?;
    let mut seen = Seen::default();
    loop {
        if !a.json {
            let now = jiff::Zoned::now();
            outln!(
                "--- {} (every {}) ---",
                now.strftime("%Y-%m-%d %H:%M:%S%.3f %Z"),
                cf_harness::duration::human(every)
            );
        }
        once(plex, &a, what, &mut seen)?;
        cf_harness::out::flush();
        let until = Instant::now() + every;
        while Instant::now() < until {
            if stop.is_set() || cf_harness::out::closed() {
                return Ok(ExitCode::SUCCESS);
            }
            std::thread::sleep(Duration::from_millis(20).min(until - Instant::now()));
        }
        if stop.is_set() || cf_harness::out::closed() {
            return Ok(ExitCode::SUCCESS);
        }
    }
}

fn once(plex: &Plex, a: &DisplayArgs, what: What, seen: &mut Seen) -> Result<ExitCode> {
    if let What::Accounts = what {
        return crate::recovery_view::accounts(plex, a.json);
    }
    // Nothing here writes: a read-only mapping (works on a region we may only read).
    let region = Region::open_read_only(plex)?;
    match what {
        What::Structures => structures(&region, a.json)?,
        What::Structure => structure(&region, a.name.as_deref().unwrap_or(""), a)?,
        What::Members => members(&region, a)?,
        What::Locks => {
            let l = filter(inspect::locks(&region)?, a);
            locks(l, a.json, "no locks held")
        }
        What::Retained => {
            let l = filter(inspect::retained(&region)?, a);
            locks(l, a.json, "no retained locks")
        }
        What::Contention => contention(&region, a, seen)?,
        What::Requests => crate::recovery_view::requests(&region, a.json)?,
        What::Events => crate::recovery_view::events(&region, a.json, a.member.as_deref())?,
        What::Accounts => unreachable!("handled above"),
    }
    Ok(ExitCode::SUCCESS)
}

fn resource_matches(pattern: &str, r: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => r.starts_with(prefix),
        None => r == pattern,
    }
}

fn filter(list: Vec<LockView>, a: &DisplayArgs) -> Vec<LockView> {
    list.into_iter()
        .filter(|l| a.member.as_deref().is_none_or(|m| l.member == m))
        .filter(|l| {
            a.resource
                .as_deref()
                .is_none_or(|r| resource_matches(r, &l.resource))
        })
        .collect()
}

/// Add the fields of object `from` to object `o`.
fn merge(o: &mut Value, from: Value) {
    if let (Some(o), Value::Object(from)) = (o.as_object_mut(), from) {
        o.extend(from);
    }
}

/// A connector's state as an operator reads it: `fenced` or
/// `status-update-missing` when its heartbeat says so; a slot still
/// `active` whose process is gone is `failing` (dead, not cleaned up yet).
pub fn state_text(m: &MemberView) -> &'static str {
    if m.status != m.state.as_str() {
        m.status
    } else if m.state == MemberState::Active && !m.alive {
        "failing"
    } else {
        m.state.as_str()
    }
}

/// Records in use per connector (held and pending), by connector id.
fn records_in_use(region: &Region) -> Result<HashMap<ConnectorId, usize>> {
    let mut m = HashMap::new();
    for l in inspect::locks(region)? {
        *m.entry(l.member_id).or_default() += 1;
    }
    Ok(m)
}

fn structures(region: &Region, json: bool) -> Result<()> {
    let list = inspect::structures(region);
    let members = inspect::members(region)?;
    let in_use = records_in_use(region)?;
    let (posted, done) = cf_core::requests::totals(region);
    let outstanding = cf_core::requests::list(region)?.len();
    let events = cf_core::events::next_seq(region);
    let cap = cf_core::layout::EVENT_CAPACITY;
    let per_member: Vec<Value> = members
        .iter()
        .map(|m| {
            json!({"member": escape(&m.name), "id": m.id, "state": state_text(m),
                   "records_in_use": in_use.get(&m.id).copied().unwrap_or(0)})
        })
        .collect();
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
                    merge(&mut o, counts::json(&c));
                }
                if let Some(m) = s.members {
                    o["members"] = json!(m);
                    o["connectors_in_use"] = json!(members.len());
                }
                if let Some(r) = s.records_per_member {
                    o["records_per_member"] = json!(r);
                    o["records_in_use"] = json!(per_member);
                }
                match s.kind {
                    "restart-request list" => {
                        o["outstanding"] = json!(outstanding);
                        o["posted"] = json!(posted);
                        o["completed"] = json!(done);
                    }
                    "event ring" => {
                        o["recorded"] = json!(events);
                        o["capacity"] = json!(cap);
                    }
                    _ => {}
                }
                o
            })
            .collect();
        cf_harness::out::print_json(&Value::Array(v));
        return Ok(());
    }
    let mut rows = Vec::new();
    for s in &list {
        let kind = s.kind;
        let usage = match (s.lock_entries, s.counters, s.members, s.records_per_member) {
            (Some(n), Some(c), _, _) => format!(
                "entries in use {} of {n}; {}",
                s.entries_in_use.unwrap_or(0),
                counts::text(&c)
            ),
            (_, _, Some(m), _) => format!("connectors in use {} of {m}", members.len()),
            (_, _, _, Some(r)) => {
                let used: Vec<String> = members
                    .iter()
                    .map(|m| {
                        format!(
                            "{} {}",
                            escape(&m.name),
                            in_use.get(&m.id).copied().unwrap_or(0)
                        )
                    })
                    .collect();
                format!(
                    "record entries in use of {r} per member: {}",
                    if used.is_empty() {
                        "none".to_string()
                    } else {
                        used.join(", ")
                    }
                )
            }
            _ => match kind {
                "restart-request list" => {
                    format!("{outstanding} outstanding; {posted} posted, {done} completed")
                }
                "event ring" => format!("{events} recorded, the last {cap} kept"),
                _ => String::new(),
            },
        };
        rows.push(vec![
            s.name.clone(),
            kind.to_string(),
            s.size.to_string(),
            usage,
        ]);
    }
    outln!("{}", table(&["STRUCTURE", "KIND", "SIZE", "USAGE"], rows));
    Ok(())
}

fn member_json(region: &Region, m: &MemberView, in_use: &HashMap<ConnectorId, usize>) -> Value {
    let act = cf_core::connector::activity(region, m.id).unwrap_or_default();
    let mut o = json!({
        "name": escape(&m.name), "id": m.id, "state": state_text(m), "connector_state": m.state.as_str(),
        "status": m.status, "heartbeat_age_ms": m.heartbeat_age_ms, "liveness": m.liveness,
        "pid": m.pid, "generation": m.generation, "alive": m.alive, "held": m.held, "retained": m.retained,
        "records_in_use": in_use.get(&m.id).copied().unwrap_or(0),
        "committed": act.committed,
        "connected_unix_ns": m.connected_unix_ns, "failed_unix_ns": m.failed_unix_ns,
    });
    merge(&mut o, counts::json(&Counters::from(&act)));
    o
}

fn connector_rows(
    region: &Region,
    list: &[MemberView],
    in_use: &HashMap<ConnectorId, usize>,
) -> Vec<Vec<String>> {
    list.iter()
        .map(|m| {
            let act = cf_core::connector::activity(region, m.id).unwrap_or_default();
            vec![
                m.id.to_string(),
                escape(&m.name),
                state_text(m).to_string(),
                m.pid.to_string(),
                if m.alive { "yes" } else { "no" }.to_string(),
                m.held.to_string(),
                m.retained.to_string(),
                in_use.get(&m.id).copied().unwrap_or(0).to_string(),
            ]
            .into_iter()
            .chain(counts::cells(&Counters::from(&act)))
            .chain([
                act.committed.to_string(),
                m.heartbeat_age_ms
                    .map_or_else(|| "-".to_string(), |a| format!("{:.1}s", a as f64 / 1000.0)),
                m.liveness.to_string(),
            ])
            .collect()
        })
        .collect()
}

/// The columns of [`connector_rows`].
fn connector_header() -> Vec<&'static str> {
    [
        "ID", "NAME", "STATE", "PID", "ALIVE", "HELD", "RETAINED", "RECORDS",
    ]
    .into_iter()
    .chain(counts::COLUMNS)
    .chain(["COMMITTED", "HEARTBEAT", "LIVENESS"])
    .collect()
}

fn members(region: &Region, a: &DisplayArgs) -> Result<()> {
    let list: Vec<MemberView> = inspect::members(region)?
        .into_iter()
        .filter(|m| a.member.as_deref().is_none_or(|n| m.name == n))
        .collect();
    let in_use = records_in_use(region)?;
    if a.json {
        let v: Vec<Value> = list
            .iter()
            .map(|m| member_json(region, m, &in_use))
            .collect();
        cf_harness::out::print_json(&Value::Array(v));
        return Ok(());
    }
    if list.is_empty() {
        outln!("no members connected");
        return Ok(());
    }
    outln!(
        "{}",
        table(&connector_header(), connector_rows(region, &list, &in_use))
    );
    Ok(())
}

fn structure(region: &Region, name: &str, a: &DisplayArgs) -> Result<()> {
    let list = inspect::structures(region);
    let Some(s) = list.iter().find(|s| s.name.eq_ignore_ascii_case(name)) else {
        let names: Vec<&str> = list.iter().map(|s| s.name.as_str()).collect();
        bail!(
            "no structure named {name:?}; the region has: {}",
            names.join(", ")
        );
    };
    let kind = s.kind;
    let conns: Vec<MemberView> = inspect::members(region)?
        .into_iter()
        .filter(|m| a.member.as_deref().is_none_or(|n| m.name == n))
        .collect();
    let in_use = records_in_use(region)?;
    if a.json {
        let mut o = json!({"name": s.name, "kind": kind, "offset": s.offset, "size": s.size});
        if let Some(n) = s.lock_entries {
            o["lock_entries"] = json!(n);
            o["entries_in_use"] = json!(s.entries_in_use);
        }
        if let Some(c) = s.counters {
            merge(&mut o, counts::json(&c));
        }
        o["connectors"] = Value::Array(
            conns
                .iter()
                .map(|m| member_json(region, m, &in_use))
                .collect(),
        );
        cf_harness::out::print_json(&o);
        return Ok(());
    }
    outln!(
        "STRNAME: {}  KIND: {kind}  SIZE: {} bytes at offset {}",
        s.name,
        s.size,
        s.offset
    );
    if let (Some(n), Some(c)) = (s.lock_entries, s.counters) {
        outln!(
            "  LOCK ENTRIES: {n}, IN USE: {}; {}",
            s.entries_in_use.unwrap_or(0),
            counts::text(&c).to_uppercase()
        );
    }
    if let Some(r) = s.records_per_member {
        outln!("  RECORD ENTRIES PER MEMBER: {r}");
    }
    if let Some(m) = s.members {
        outln!("  CONNECTOR SLOTS: {m}, IN USE: {}", conns.len());
    }
    if conns.is_empty() {
        outln!("  no connectors");
    } else {
        outln!("  CONNECTORS (CONNAME=ALL):");
        outln!(
            "{}",
            table(&connector_header(), connector_rows(region, &conns, &in_use))
        );
    }
    Ok(())
}

fn lock_state(l: &LockView) -> &'static str {
    if l.retained {
        "retained"
    } else if l.held {
        "held"
    } else {
        "pending"
    }
}

fn locks(list: Vec<LockView>, json: bool, empty: &str) {
    if json {
        let v: Vec<Value> = list
            .iter()
            .map(|l| {
                json!({
                    "member": escape(&l.member), "member_id": l.member_id, "resource": escape(&l.resource),
                    "mode": l.mode.as_str(), "lock_mode": l.mode.lock_mode().as_str(),
                    "modify": l.mode.is_modify(), "entry": l.entry, "slot": l.slot,
                    "state": lock_state(l),
                })
            })
            .collect();
        cf_harness::out::print_json(&Value::Array(v));
        return;
    }
    if list.is_empty() {
        outln!("{empty}");
        return;
    }
    let rows = list
        .iter()
        .map(|l| {
            vec![
                escape(&l.member),
                escape(&l.resource),
                l.mode.as_str().to_string(),
                l.entry.to_string(),
                lock_state(l).to_string(),
            ]
        })
        .collect();
    outln!(
        "{}",
        table(&["MEMBER", "RESOURCE", "MODE", "ENTRY", "STATE"], rows)
    );
}

/// `D GRS,C`: every resource that someone waits for (a pending record) or
/// that is retained, with its owners and waiters. cf-core keeps no start
/// time in a record, so "for how long" is how long this display has seen the
/// wait (with `--watch`); on a single look it is unknown.
fn contention(region: &Region, a: &DisplayArgs, seen: &mut Seen) -> Result<()> {
    let all = filter(inspect::locks(region)?, a);
    let mut by_res: std::collections::BTreeMap<&str, Vec<&LockView>> = Default::default();
    for l in &all {
        by_res.entry(l.resource.as_str()).or_default().push(l);
    }
    by_res.retain(|_, v| {
        v.iter().any(|l| !l.held || l.retained)
            || v.iter()
                .enumerate()
                .any(|(i, a)| v[i + 1..].iter().any(|b| !a.mode.compatible(b.mode)))
    });
    let now = Instant::now();
    let mut keep = HashMap::new();
    let mut rows = Vec::new();
    let mut docs = Vec::new();
    for (res, ls) in &by_res {
        for l in ls {
            let status = if l.retained {
                "RETAINED"
            } else if l.held {
                "OWN"
            } else {
                "WAIT"
            };
            let key = (l.member_id, l.resource.clone(), status);
            let first = seen.waits.get(&key).copied().unwrap_or(now);
            keep.insert(key, first);
            let age = now.duration_since(first);
            let for_how_long = if age.is_zero() {
                "-".to_string()
            } else {
                format!("≥{}", cf_harness::duration::human(age))
            };
            docs.push(json!({"resource": escape(res), "member": escape(&l.member), "mode": l.mode.as_str(),
                             "status": status, "entry": l.entry,
                             "seen_for_s": if age.is_zero() { Value::Null } else { json!(age.as_secs_f64()) }}));
            rows.push(vec![
                escape(res),
                escape(&l.member),
                l.mode.as_str().to_string(),
                status.to_string(),
                l.entry.to_string(),
                for_how_long,
            ]);
        }
    }
    seen.waits = keep;
    // The counts of the three kinds of global contention (and retained
    // refusals), for the structure and each connector shown.
    let total = inspect::counters(region);
    let conns: Vec<(MemberView, Counters)> = inspect::members(region)?
        .into_iter()
        .filter(|m| a.member.as_deref().is_none_or(|n| m.name == n))
        .map(|m| {
            let act = cf_core::connector::activity(region, m.id).unwrap_or_default();
            (m, Counters::from(&act))
        })
        .collect();
    if a.json {
        let per_conn: Vec<Value> = conns
            .iter()
            .map(|(m, c)| {
                let mut o = json!({"member": escape(&m.name), "id": m.id});
                merge(&mut o, counts::json(c));
                o
            })
            .collect();
        cf_harness::out::print_json(&json!({
            "contention": docs,
            "lock_structure": counts::json(&total),
            "connectors": per_conn,
            "note": "records carry no start time: seen_for_s is how long this display (--watch) has seen it",
        }));
        return Ok(());
    }
    outln!("LOCK STRUCTURE: {}", counts::text(&total));
    if !conns.is_empty() {
        let header: Vec<&str> = ["CONNECTOR"].into_iter().chain(counts::COLUMNS).collect();
        let crows = conns
            .iter()
            .map(|(m, c)| {
                std::iter::once(escape(&m.name))
                    .chain(counts::cells(c))
                    .collect()
            })
            .collect();
        outln!("{}", table(&header, crows));
    }
    if rows.is_empty() {
        outln!("no resource in contention");
        return Ok(());
    }
    outln!(
        "{}",
        table(
            &["RESOURCE", "MEMBER", "MODE", "STATUS", "ENTRY", "FOR"],
            rows
        )
    );
    outln!("(cf-core records no request start time: FOR is how long this display has seen it, with --watch)");
    Ok(())
}
