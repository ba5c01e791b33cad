//! `display accounts|requests|events` and `restart-light`: the recovery side.

use anyhow::{bail, Result};
use cf_core::events::{Event, EventKind};
use cf_core::{inspect, requests, MemberState, Plex, Region};
use cf_harness::outln;
use cf_node::store::Store;
use serde_json::{json, Value};

pub fn accounts(plex: &Plex, as_json: bool) -> Result<()> {
    let store = Store::open(&plex.dir)?;
    let total = store.total();
    let expected = store.expected_total();
    if as_json {
        crate::print_json(&json!({
            "accounts": store.count(), "total": total as i64, "expected_total": expected as i64,
            "initial_balance": store.initial_balance(),
        }));
    } else {
        outln!(
            "{} accounts, total {} (expected {}: {})",
            store.count(),
            total,
            expected,
            if total == expected {
                "balanced"
            } else {
                "NOT BALANCED"
            }
        );
    }
    Ok(())
}

fn name_of(region: &Region, id: u32) -> String {
    cf_core::connector::slot_view(region, id)
        .map(|s| s.name)
        .unwrap_or_else(|_| format!("#{id}"))
}

pub fn requests(region: &Region, as_json: bool) -> Result<()> {
    let list = requests::list(region)?;
    let (posted, done) = requests::totals(region);
    if as_json {
        let v: Vec<Value> = list
            .iter()
            .map(|r| {
                json!({
                    "member": if r.name.is_empty() { name_of(region, r.member_id) } else { r.name.clone() }, "member_id": r.member_id, "state": r.state.as_str(),
                    "posted_unix_ns": r.posted_unix_ns, "claimed_unix_ns": r.claimed_unix_ns,
                    "posted_by": r.posted_by.map(|i| name_of(region, i)),
                    "claimed_by": r.claimed_by.map(|i| name_of(region, i)),
                    "claimer_pid": r.claimer_pid, "claimer_alive": r.claimer_alive,
                    "worker_pid": r.worker_pid, "worker_alive": r.worker_alive, "attempts": r.attempts,
                })
            })
            .collect();
        crate::print_json(&Value::Array(v));
        return Ok(());
    }
    outln!("{posted} restart request(s) posted, {done} completed since the region was created");
    if list.is_empty() {
        outln!("no restart request outstanding");
        return Ok(());
    }
    outln!(
        "{:<20} {:<8} {:<16} {:<16} {:>8} {:>8}",
        "MEMBER",
        "STATE",
        "POSTED BY",
        "CLAIMED BY",
        "WORKER",
        "ATTEMPTS"
    );
    for r in &list {
        outln!(
            "{:<20} {:<8} {:<16} {:<16} {:>8} {:>8}",
            if r.name.is_empty() {
                name_of(region, r.member_id)
            } else {
                r.name.clone()
            },
            r.state.as_str(),
            r.posted_by
                .map(|i| name_of(region, i))
                .unwrap_or_else(|| "-".into()),
            r.claimed_by
                .map(|i| name_of(region, i))
                .unwrap_or_else(|| "-".into()),
            if r.worker_pid == 0 {
                "-".to_string()
            } else {
                r.worker_pid.to_string()
            },
            r.attempts
        );
    }
    Ok(())
}

/// An event as JSON: `kind`, `member`, `by`, `time_ns`, and named payload fields.
pub fn event_json(e: &Event) -> Value {
    let mut o = json!({ "seq": e.seq, "kind": e.kind.as_str(), "member": e.member, "by": e.by, "time_ns": e.time_ns });
    match e.kind {
        EventKind::Detected | EventKind::Connected => o["pid"] = json!(e.a),
        EventKind::CleanedUp => {
            o["released"] = json!(e.a);
            o["retained"] = json!(e.b);
            o["discarded"] = json!(e.c);
        }
        EventKind::Claimed => {
            o["claimer_pid"] = json!(e.a);
            o["taken_over"] = json!(e.b == 1);
        }
        EventKind::RestartLightStarted => o["pid"] = json!(e.a),
        EventKind::BackedOut => {
            o["transactions"] = json!(e.a);
            o["updates"] = json!(e.b);
        }
        EventKind::Released => o["locks"] = json!(e.a),
        EventKind::TerminatedNormally => {
            o["peak_rss_kib"] = json!(e.a);
            o["elapsed_ns"] = json!(e.b);
        }
        EventKind::RestartLightFailed => o["status"] = json!(e.a),
        EventKind::RecoveredAtRestart => {
            o["transactions"] = json!(e.a);
            o["locks"] = json!(e.b);
        }
        EventKind::RequestPosted | EventKind::Disconnected | EventKind::RecoveryCompleted => {}
    }
    o
}

/// One line describing an event, for people.
pub fn event_text(e: &Event) -> String {
    let by = e.by.as_deref().unwrap_or("-");
    let m = &e.member;
    match e.kind {
        EventKind::Detected => format!("death of {m} (pid {}) detected by {by}", e.a),
        EventKind::CleanedUp => format!(
            "{by} cleaned up {m}: {} non-modify lock(s) released, {} modify lock(s) retained",
            e.a, e.b
        ),
        EventKind::RequestPosted => format!("restart request for {m} posted by {by}"),
        EventKind::Claimed => format!(
            "restart request for {m} claimed by {by}{}",
            if e.b == 1 { " (taken over from a dead claimer)" } else { "" }
        ),
        EventKind::RestartLightStarted => format!("restart light of {m} started by {by} (pid {})", e.a),
        EventKind::BackedOut => format!("{m}: {} transaction(s) backed out ({} update(s) undone)", e.a, e.b),
        EventKind::Released => format!("{m}: {} retained lock(s) released", e.a),
        EventKind::TerminatedNormally => format!(
            "restart light of {m} terminated normally (peak RSS {} KiB, {:.1} ms)",
            e.a,
            e.b as f64 / 1e6
        ),
        EventKind::RestartLightFailed => format!("restart light of {m} failed (status {})", e.a),
        EventKind::Connected => format!("{m} connected (pid {})", e.a),
        EventKind::Disconnected => format!("{m} disconnected normally"),
        EventKind::RecoveryCompleted => format!("restart request for {m} completed by {by}: recovery over"),
        EventKind::RecoveredAtRestart => format!("{m} restarted normally and recovered itself: {} transaction(s) backed out, {} lock(s) released", e.a, e.b),
    }
}

pub fn events(region: &Region, as_json: bool) -> Result<()> {
    let list = cf_core::events::read_all(region);
    if as_json {
        crate::print_json(&Value::Array(list.iter().map(event_json).collect()));
        return Ok(());
    }
    if list.is_empty() {
        outln!("no events");
    }
    for e in &list {
        let secs = e.time_ns / 1_000_000_000;
        let t = format!(
            "{:02}:{:02}:{:02}.{:06}",
            secs / 3600 % 24,
            secs / 60 % 60,
            secs % 60,
            e.time_ns % 1_000_000_000 / 1000
        );
        outln!("{t}  {}", event_text(e));
    }
    Ok(())
}

/// `cfctl restart-light MEMBER`: post a restart request by hand.
pub fn post(plex: &Plex, member: &str) -> Result<()> {
    let region = Region::open(plex)?;
    let Some(m) = inspect::members(&region)?
        .into_iter()
        .find(|m| m.name == member)
    else {
        bail!("no member named {member} in the connector table");
    };
    if m.state != MemberState::FailedPersistent {
        bail!(
            "member {member} is {}, not failed-persistent: there is nothing to restart",
            m.state.as_str()
        );
    }
    if requests::post(&region, m.id, None, || {
        cf_core::events::record(
            &region,
            EventKind::RequestPosted,
            member,
            Some("cfctl"),
            [0, 0, 0],
        )
    })?
    .is_some()
    {
        outln!("restart request for {member} posted; a live member will claim it");
    } else {
        outln!("a restart request for {member} is already outstanding");
    }
    Ok(())
}
