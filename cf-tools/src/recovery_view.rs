//! `display accounts|requests|events` and `restart-light`: the recovery side.

use anyhow::{bail, Result};
use cf_core::events::{Event, EventData};
use cf_core::inspect::escape;
use cf_core::ConnectorId;
use cf_core::{inspect, requests, MemberState, Plex, Region};
use cf_harness::outln;
use cf_node::store::Store;
use serde_json::{json, Value};
use std::process::ExitCode;

/// A 128-bit integer as a JSON number, exactly as the text shows it (never
/// wrapped into 64 bits; beyond 64 bits, a string of its digits).
fn big(n: i128) -> Value {
    if let Ok(v) = i64::try_from(n) {
        json!(v)
    } else if let Ok(v) = u64::try_from(n) {
        json!(v)
    } else {
        json!(n.to_string())
    }
}

/// A transfer in flight: logged legs without a commit record.
struct InFlight {
    member: String,
    txid: u64,
    /// (account, before, after) of each leg logged.
    legs: Vec<(u64, i64, i64)>,
    /// Its member has failed: the transfer waits for its backout.
    failed: bool,
}

/// The uncommitted transfers in every member's log (`log.NAME` files).
fn in_flight(plex: &Plex, failed: &[String]) -> Vec<InFlight> {
    use cf_node::wal::{self, LogRecord};
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(&plex.dir) else {
        return out;
    };
    let mut names: Vec<String> = dir
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("log.")
                .map(String::from)
        })
        .collect();
    names.sort();
    for name in names {
        let Ok(scan) = wal::read_log(&wal::log_path(&plex.dir, &name)) else {
            continue;
        };
        let mut open: std::collections::BTreeMap<u64, Vec<(u64, i64, i64)>> = Default::default();
        for (_, r) in scan.records {
            match r {
                LogRecord::Update {
                    txid,
                    account,
                    before,
                    after,
                } => open.entry(txid).or_default().push((account, before, after)),
                LogRecord::Commit { txid } => {
                    open.remove(&txid);
                }
                #[allow(unreachable_patterns)]
                _ => {}
            }
        }
        for (txid, legs) in open {
            out.push(InFlight {
                failed: failed.contains(&name),
                member: name.clone(),
                txid,
                legs,
            });
        }
    }
    out
}

/// `display accounts`: the total, honest on a live plex. The total is read
/// again (for up to a settle interval) until it adds up once the legs of
/// the transfers in flight (logged, not committed) that are in the accounts
/// are set aside; only a total that never adds up is NOT BALANCED.
pub fn accounts(plex: &Plex, as_json: bool) -> Result<ExitCode> {
    let store = Store::open_read_only(&plex.dir)?;
    let expected = store.expected_total();
    let failed: Vec<String> = Region::open_read_only(plex)
        .ok()
        .and_then(|r| inspect::members(&r).ok())
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.state != MemberState::Active || !m.alive)
        .map(|m| m.name)
        .collect();
    let settle = std::time::Duration::from_secs(1);
    let t = std::time::Instant::now();
    let (total, flights, adjusted) = loop {
        let flights = in_flight(plex, &failed);
        let total = store.total();
        // A leg is in the accounts if the account shows its after-image
        // (its lock is still held by the transfer, so nobody else moved it).
        let applied: i128 = flights
            .iter()
            .flat_map(|f| f.legs.iter())
            .filter(|(acct, _, after)| store.balance(*acct).is_ok_and(|b| b == *after))
            .map(|(_, before, after)| *after as i128 - *before as i128)
            .sum();
        let adjusted = total - applied;
        if total == expected || adjusted == expected || t.elapsed() >= settle {
            break (total, flights, adjusted);
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    };
    let balanced = total == expected || adjusted == expected;
    let shown: Vec<Value> = flights
        .iter()
        .map(|f| {
            json!({"member": escape(&f.member), "txid": f.txid, "failed_member": f.failed,
                   "accounts": f.legs.iter().map(|l| l.0).collect::<Vec<_>>()})
        })
        .collect();
    if as_json {
        crate::print_json(&json!({
            "accounts": store.count(), "total": big(total), "expected_total": big(expected),
            "balanced": balanced, "total_without_in_flight": big(adjusted),
            "in_flight": shown, "initial_balance": store.initial_balance(),
        }));
    } else {
        let verdict = if total == expected {
            "balanced".to_string()
        } else if balanced {
            format!(
                "balanced once the {} transfer(s) in flight are set aside",
                flights.len()
            )
        } else {
            "NOT BALANCED".to_string()
        };
        outln!(
            "{} accounts, total {} (expected {}: {verdict})",
            store.count(),
            total,
            expected
        );
        for f in &flights {
            outln!(
                "  in flight: {} transaction {} on accounts {}{}",
                escape(&f.member),
                f.txid,
                f.legs
                    .iter()
                    .map(|l| l.0.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                if f.failed {
                    " (member failed: backed out by its recovery)"
                } else {
                    ""
                }
            );
        }
    }
    Ok(if balanced {
        ExitCode::SUCCESS
    } else {
        cf_harness::exit::code(cf_harness::exit::INVARIANT)
    })
}

fn name_of(region: &Region, id: ConnectorId) -> String {
    cf_core::connector::slot_view(region, id)
        .map(|s| escape(&s.name))
        .unwrap_or_else(|_| format!("#{id}"))
}

/// The member a request is for, printable.
fn request_member(region: &Region, r: &requests::RequestView) -> String {
    if r.name.is_empty() {
        name_of(region, r.member_id)
    } else {
        escape(&r.name)
    }
}

/// Why a FAILED request failed (or why its last restart light did), printable.
fn failure_text(r: &requests::RequestView) -> Option<String> {
    if r.state != requests::RequestState::Failed && r.last_status.is_none() && r.reason.is_empty() {
        return None;
    }
    let mut s = match r.last_status {
        Some(st) => format!("last restart light exited with status {st}"),
        None => "restart light failed".to_string(),
    };
    if !r.reason.is_empty() {
        s.push_str(": ");
        s.push_str(&escape(&r.reason));
    }
    Some(s)
}

pub fn requests(region: &Region, as_json: bool) -> Result<()> {
    let list = requests::list(region)?;
    let (posted, done) = requests::totals(region);
    if as_json {
        let v: Vec<Value> = list
            .iter()
            .map(|r| {
                json!({
                    "member": request_member(region, r), "member_id": r.member_id, "state": r.state.as_str(),
                    "posted_unix_ns": r.posted_unix_ns, "claimed_unix_ns": r.claimed_unix_ns,
                    "posted_by": r.posted_by.map(|i| name_of(region, i)),
                    "claimed_by": r.claimed_by.map(|i| name_of(region, i)),
                    "claimer_pid": r.claimer_pid, "claimer_alive": r.claimer_alive,
                    "worker_pid": r.worker_pid, "worker_alive": r.worker_alive, "attempts": r.attempts,
                    "failed_unix_ns": (r.failed_unix_ns != 0).then_some(r.failed_unix_ns),
                    "retry_at_unix_ns": r.retry_at_unix_ns(),
                    "last_status": r.last_status,
                    "reason": (!r.reason.is_empty()).then(|| escape(&r.reason)),
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
    let rows = list
        .iter()
        .map(|r| {
            vec![
                request_member(region, r),
                r.state.as_str().to_string(),
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
                r.attempts.to_string(),
            ]
        })
        .collect();
    outln!(
        "{}",
        cf_harness::table::table(
            &[
                "MEMBER",
                "STATE",
                "POSTED BY",
                "CLAIMED BY",
                "WORKER",
                "ATTEMPTS"
            ],
            rows
        )
    );
    for r in &list {
        if let Some(why) = failure_text(r) {
            outln!("{}: {why}", request_member(region, r));
        }
        if r.state == requests::RequestState::Failed {
            outln!(
                "{}: not claimed again until `cfctl restart-light {}` re-posts it, or {} s after it failed",
                request_member(region, r),
                request_member(region, r),
                requests::FAILED_RETRY.as_secs()
            );
        }
    }
    Ok(())
}

/// An event as JSON: `kind`, `member`, `by`, `time_ns`, and named payload fields.
pub fn event_json(e: &Event) -> Value {
    let mut o = json!({ "seq": e.seq, "kind": e.kind().as_str(), "member": escape(&e.member),
                        "by": e.by.as_deref().map(escape), "time_ns": e.time_ns });
    match e.data {
        EventData::Detected { pid } | EventData::Connected { pid } => o["pid"] = json!(pid),
        EventData::CleanedUp {
            released,
            retained,
            discarded,
        } => {
            o["released"] = json!(released);
            o["retained"] = json!(retained);
            o["discarded"] = json!(discarded);
        }
        EventData::Claimed { pid, taken_over } => {
            o["claimer_pid"] = json!(pid);
            o["taken_over"] = json!(taken_over);
        }
        EventData::RestartLightStarted { pid } => o["pid"] = json!(pid),
        EventData::BackedOut {
            transactions,
            updates_undone,
        } => {
            o["transactions"] = json!(transactions);
            o["updates"] = json!(updates_undone);
        }
        EventData::Released { locks } => o["locks"] = json!(locks),
        EventData::TerminatedNormally {
            peak_rss_kib,
            elapsed_ns,
            rss_without_region_kib,
        } => {
            o["peak_rss_kib"] = json!(peak_rss_kib);
            o["elapsed_ns"] = json!(elapsed_ns);
            o["rss_without_region_kib"] = json!(rss_without_region_kib);
        }
        EventData::RestartLightFailed {
            status,
            failures,
            gave_up,
        } => {
            o["status"] = json!(status);
            o["failures"] = json!(failures);
            o["gave_up"] = json!(gave_up);
        }
        EventData::RecoveredAtRestart {
            transactions,
            locks,
        } => {
            o["transactions"] = json!(transactions);
            o["locks"] = json!(locks);
        }
        EventData::StatusUpdateMissing { heartbeat_age_ms } => {
            o["heartbeat_age_ms"] = json!(heartbeat_age_ms)
        }
        EventData::Fenced {
            heartbeat_age_ms,
            pid,
            by_operator,
        } => {
            o["heartbeat_age_ms"] = json!(heartbeat_age_ms);
            o["pid"] = json!(pid);
            o["by_operator"] = json!(by_operator);
        }
        EventData::StatusUpdateResumed { missing_ms } => o["missing_ms"] = json!(missing_ms),
        EventData::DeadlockVictim {
            cycle_length,
            waited_ns,
            entry,
        } => {
            o["cycle_length"] = json!(cycle_length);
            o["waited_ns"] = json!(waited_ns);
            o["entry"] = json!(entry);
        }
        EventData::RequestPosted { .. }
        | EventData::Disconnected
        | EventData::RecoveryCompleted { .. } => {}
    }
    o
}

/// One line describing an event, for people.
pub fn event_text(e: &Event) -> String {
    let by = &escape(e.by.as_deref().unwrap_or("-"));
    let m = &escape(&e.member);
    match e.data {
        EventData::Detected { pid } => format!("death of {m} (pid {pid}) detected by {by}"),
        EventData::CleanedUp {
            released, retained, ..
        } => format!(
            "{by} cleaned up {m}: {released} non-modify lock(s) released, {retained} modify lock(s) retained"
        ),
        EventData::RequestPosted { .. } => format!("restart request for {m} posted by {by}"),
        EventData::Claimed { taken_over, .. } => format!(
            "restart request for {m} claimed by {by}{}",
            if taken_over { " (taken over from a dead claimer)" } else { "" }
        ),
        EventData::RestartLightStarted { pid } => {
            format!("restart light of {m} started by {by} (pid {pid})")
        }
        EventData::BackedOut {
            transactions,
            updates_undone,
        } => format!(
            "{m}: {transactions} transaction(s) backed out ({updates_undone} update(s) undone)"
        ),
        EventData::Released { locks } => format!("{m}: {locks} retained lock(s) released"),
        EventData::TerminatedNormally {
            peak_rss_kib,
            elapsed_ns,
            rss_without_region_kib,
        } => format!(
            "restart light of {m} terminated normally (peak RSS {peak_rss_kib} KiB, {rss_without_region_kib} KiB without the region, {:.1} ms)",
            elapsed_ns as f64 / 1e6
        ),
        EventData::RestartLightFailed {
            failures,
            gave_up: true,
            ..
        } => format!(
            "restart light of {m} failed {failures} time(s): request marked failed by {by}"
        ),
        EventData::RestartLightFailed { status, .. } => {
            format!("restart light of {m} failed (status {status})")
        }
        EventData::Connected { pid } => format!("{m} connected (pid {pid})"),
        EventData::Disconnected => format!("{m} disconnected normally"),
        EventData::RecoveryCompleted { .. } => {
            format!("restart request for {m} completed by {by}: recovery over")
        }
        EventData::RecoveredAtRestart {
            transactions,
            locks,
        } => format!(
            "{m} restarted normally and recovered itself: {transactions} transaction(s) backed out, {locks} lock(s) released"
        ),
        EventData::StatusUpdateMissing { heartbeat_age_ms } => format!(
            "status update missing for {m}: no heartbeat for {heartbeat_age_ms} ms (seen by {by})"
        ),
        EventData::Fenced {
            heartbeat_age_ms,
            pid,
            ..
        } => format!("{m} (pid {pid}) fenced by {by} after {heartbeat_age_ms} ms without a heartbeat"),
        EventData::StatusUpdateResumed { missing_ms } => {
            format!("{m} beats again after {missing_ms} ms of status update missing")
        }
        EventData::DeadlockVictim {
            cycle_length,
            waited_ns,
            entry,
        } => format!(
            "a request of {m} was a deadlock victim (told by {by}): a cycle of {cycle_length} waiting request(s), it had waited {:.1} ms on entry {entry}",
            waited_ns as f64 / 1e6
        ),
    }
}

/// The events in time order (a writer takes its time before its sequence
/// number, so sequence order can differ by a little); equal times keep
/// their sequence order.
pub fn in_time_order(mut list: Vec<Event>) -> Vec<Event> {
    list.sort_by_key(|e| (e.time_ns, e.seq));
    list
}

/// An event's time for people, in the local time zone (`jiff`).
pub fn event_time(ns: u64) -> String {
    match jiff::Timestamp::from_nanosecond(ns as i128) {
        Ok(t) => t
            .to_zoned(jiff::tz::TimeZone::system())
            .strftime("%Y-%m-%d %H:%M:%S%.6f")
            .to_string(),
        Err(_) => format!("@{ns}ns"),
    }
}

pub fn events(region: &Region, as_json: bool, member: Option<&str>) -> Result<()> {
    // A damaged ring (a counter beyond any run, a slot out of place) is an
    // error here as in `verify`, not an empty list.
    cf_core::events::check(region)?;
    let list: Vec<Event> = in_time_order(cf_core::events::read_all(region))
        .into_iter()
        .filter(|e| member.is_none_or(|m| e.member == m || e.by.as_deref() == Some(m)))
        .collect();
    if as_json {
        crate::print_json(&Value::Array(list.iter().map(event_json).collect()));
        return Ok(());
    }
    if list.is_empty() {
        outln!("no events");
    }
    for e in &list {
        outln!("{}  {}", event_time(e.time_ns), event_text(e));
    }
    Ok(())
}

/// `cfctl restart-light MEMBER`: post a restart request by hand.
pub fn post(plex: &Plex, member: &str) -> Result<()> {
    cf_core::connector::check_name(member)?;
    let region = Region::open(plex)?;
    let Some(m) = inspect::members(&region)?
        .into_iter()
        .find(|m| m.name == member)
    else {
        bail!("no member named {member} in the connector table");
    };
    let posted = |epoch: u32| {
        cf_core::events::record(
            &region,
            member,
            Some("cfctl"),
            EventData::RequestPosted { epoch },
        )
    };
    // A request that FAILED (its restart lights kept failing) is re-posted.
    if requests::retry(&region, m.id, None, posted)?.is_some() {
        outln!(
            "the failed restart request for {member} is posted again; a live member will claim it"
        );
        return Ok(());
    }
    if m.state != MemberState::FailedPersistent {
        bail!(
            "member {member} is {}, not failed-persistent: there is nothing to restart",
            m.state.as_str()
        );
    }
    if requests::post(&region, m.id, None, posted)?.is_some() {
        outln!("restart request for {member} posted; a live member will claim it");
    } else {
        outln!("a restart request for {member} is already outstanding");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64, time_ns: u64) -> Event {
        Event {
            seq,
            member: "M".into(),
            by: None,
            time_ns,
            data: EventData::Connected { pid: 0 },
        }
    }

    #[test]
    fn events_print_in_time_order() {
        // A writer takes its time before its sequence number: 2 is earlier than 1.
        let list = in_time_order(vec![ev(0, 10), ev(1, 30), ev(2, 20), ev(3, 30)]);
        let seqs: Vec<u64> = list.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [0, 2, 1, 3]);
    }

    /// `display events` prints each kind's data under the names (JSON) and
    /// in the words (text) it printed before the data was typed.
    #[test]
    fn every_kind_prints_its_named_fields() {
        use cf_core::events::Completion;
        use EventData::*;
        let cases = [
            (Detected { pid: 7 }, json!({"pid": 7}), "death of M (pid 7) detected by B"),
            (
                CleanedUp {
                    released: 1,
                    retained: 2,
                    discarded: 3,
                },
                json!({"released": 1, "retained": 2, "discarded": 3}),
                "B cleaned up M: 1 non-modify lock(s) released, 2 modify lock(s) retained",
            ),
            (
                RequestPosted { epoch: 9 },
                json!({}),
                "restart request for M posted by B",
            ),
            (
                Claimed {
                    pid: 8,
                    taken_over: true,
                },
                json!({"claimer_pid": 8, "taken_over": true}),
                "restart request for M claimed by B (taken over from a dead claimer)",
            ),
            (
                Claimed {
                    pid: 8,
                    taken_over: false,
                },
                json!({"claimer_pid": 8, "taken_over": false}),
                "restart request for M claimed by B",
            ),
            (
                RestartLightStarted { pid: 4 },
                json!({"pid": 4}),
                "restart light of M started by B (pid 4)",
            ),
            (
                BackedOut {
                    transactions: 2,
                    updates_undone: 5,
                },
                json!({"transactions": 2, "updates": 5}),
                "M: 2 transaction(s) backed out (5 update(s) undone)",
            ),
            (
                Released { locks: 4 },
                json!({"locks": 4}),
                "M: 4 retained lock(s) released",
            ),
            (
                TerminatedNormally {
                    peak_rss_kib: 1,
                    elapsed_ns: 2_500_000,
                    rss_without_region_kib: 3,
                },
                json!({"peak_rss_kib": 1, "elapsed_ns": 2_500_000, "rss_without_region_kib": 3}),
                "restart light of M terminated normally (peak RSS 1 KiB, 3 KiB without the region, 2.5 ms)",
            ),
            (
                RestartLightFailed {
                    status: 137,
                    failures: 3,
                    gave_up: true,
                },
                json!({"status": 137, "failures": 3, "gave_up": true}),
                "restart light of M failed 3 time(s): request marked failed by B",
            ),
            (
                RestartLightFailed {
                    status: 137,
                    failures: 1,
                    gave_up: false,
                },
                json!({"status": 137, "failures": 1, "gave_up": false}),
                "restart light of M failed (status 137)",
            ),
            (Connected { pid: 1 }, json!({"pid": 1}), "M connected (pid 1)"),
            (Disconnected, json!({}), "M disconnected normally"),
            (
                RecoveredAtRestart {
                    transactions: 1,
                    locks: 2,
                },
                json!({"transactions": 1, "locks": 2}),
                "M restarted normally and recovered itself: 1 transaction(s) backed out, 2 lock(s) released",
            ),
            (
                RecoveryCompleted {
                    epoch: 3,
                    how: Completion::OwnRestart,
                },
                json!({}),
                "restart request for M completed by B: recovery over",
            ),
            (
                StatusUpdateMissing {
                    heartbeat_age_ms: 1500,
                },
                json!({"heartbeat_age_ms": 1500}),
                "status update missing for M: no heartbeat for 1500 ms (seen by B)",
            ),
            (
                Fenced {
                    heartbeat_age_ms: 2000,
                    pid: 6,
                    by_operator: true,
                },
                json!({"heartbeat_age_ms": 2000, "pid": 6, "by_operator": true}),
                "M (pid 6) fenced by B after 2000 ms without a heartbeat",
            ),
            (
                StatusUpdateResumed { missing_ms: 30 },
                json!({"missing_ms": 30}),
                "M beats again after 30 ms of status update missing",
            ),
        ];
        for (data, fields, text) in cases {
            let e = Event {
                seq: 4,
                member: "M".into(),
                by: Some("B".into()),
                time_ns: 5,
                data,
            };
            let mut want = json!({"seq": 4, "kind": data.kind().as_str(), "member": "M",
                                  "by": "B", "time_ns": 5});
            want.as_object_mut()
                .unwrap()
                .extend(fields.as_object().unwrap().clone());
            let got = event_json(&e);
            assert_eq!(got, want, "{data:?}");
            // The same keys in the same order as before.
            let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
            assert_eq!(keys(&got), keys(&want), "{data:?}");
            assert_eq!(event_text(&e), text, "{data:?}");
        }
    }

    #[test]
    fn event_times_are_dates() {
        let t = event_time(1_700_000_000_123_456_789);
        assert!(t.starts_with("2023-11-1"), "{t}");
        assert!(t.ends_with(".123456"), "{t}");
    }
}
