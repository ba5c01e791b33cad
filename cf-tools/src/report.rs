//! `cfctl report`: an activity report in the manner of RMF's CF activity
//! report, per interval and per connector.
//!
//! What cf-core counts, and so what is reported: lock requests and the
//! three kinds of global contention, IRLM, XES and false (`counts.rs`),
//! per connector (its slot and the record blocks it owns) and for the lock
//! structure, requests refused because a failed member retains the resource,
//! the synchronous service time of one request in 64 (`lock::service`: a
//! histogram with buckets 4x apart, so a percentile is shown as the upper
//! bound of its bucket, `<=`), transactions reported committed, locks held
//! and retained, and requests waiting (PENDING records) at the end of the
//! interval.

use crate::counts;
use anyhow::{bail, Result};
use cf_core::connector::Activity;
use cf_core::inspect::{self, Counters, MemberView};
use cf_core::lock::service::{bucket_bounds_ns, percentile_bound_ns, BUCKETS};
use cf_core::ConnectorId;
use cf_core::{Plex, Region};
use cf_harness::outln;
use cf_harness::table::table;
use clap::Args;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct ReportArgs {
    /// Length of an interval: 1s, 500ms, 1m (a bare number is seconds)
    #[arg(long, default_value = "1s", value_parser = cf_harness::duration::secs)]
    interval: Duration,
    /// Stop after this many intervals (default: until Ctrl-C or a closed pipe)
    #[arg(long)]
    count: Option<u64>,
    /// Only this connector
    #[arg(long, value_name = "NAME")]
    member: Option<String>,
    /// Print one JSON document per interval (one line each)
    #[arg(long)]
    pub json: bool,
}

/// One connector at one moment.
#[derive(Clone)]
struct Sample {
    view: MemberView,
    act: Activity,
    waits: usize,
}

fn sample(region: &Region, only: Option<&str>) -> Result<BTreeMap<(ConnectorId, u32), Sample>> {
    let mut waits: BTreeMap<ConnectorId, usize> = BTreeMap::new();
    for l in inspect::locks(region)? {
        if !l.held {
            *waits.entry(l.member_id).or_default() += 1;
        }
    }
    let mut out = BTreeMap::new();
    for m in inspect::members(region)? {
        if only.is_some_and(|n| n != m.name) {
            continue;
        }
        let act = cf_core::connector::activity(region, m.id).unwrap_or_default();
        out.insert(
            (m.id, m.generation),
            Sample {
                waits: waits.get(&m.id).copied().unwrap_or(0),
                view: m,
                act,
            },
        );
    }
    Ok(out)
}

pub fn run(plex: &Plex, a: ReportArgs) -> Result<ExitCode> {
    if a.interval.is_zero() {
        bail!("--interval must be more than 0");
    }
    if a.count == Some(0) {
        bail!("--count must be at least 1");
    }
    let region = Region::open(plex)?;
    let stop = cf_node::signals::StopFlag::install()
        .map_err(|e| anyhow::anyhow!("installing signal handlers: {e}"))?;
    if !a.json {
        outln!(
            "cfctl report: {} every {}; service time: 1 request in 64 sampled, percentiles as the \
upper bound of a 4x bucket",
            region.path().display(),
            cf_harness::duration::human(a.interval)
        );
    }
    let mut before = sample(&region, a.member.as_deref())?;
    let mut totals_before = inspect::counters(&region);
    let mut t_before = Instant::now();
    let mut wall_before = jiff::Zoned::now();
    let mut n = 0u64;
    loop {
        let until = t_before + a.interval;
        while Instant::now() < until {
            if stop.is_set() || cf_harness::out::closed() {
                return Ok(ExitCode::SUCCESS);
            }
            std::thread::sleep(Duration::from_millis(10).min(until - Instant::now()));
        }
        let after = sample(&region, a.member.as_deref())?;
        let totals = inspect::counters(&region);
        let t = Instant::now();
        let wall = jiff::Zoned::now();
        let secs = t.duration_since(t_before).as_secs_f64().max(1e-9);
        let per_s = |x: u64, y: u64| x.saturating_sub(y) as f64 / secs;
        let pct = |x: u64, of: u64| {
            if of == 0 {
                0.0
            } else {
                100.0 * x as f64 / of as f64
            }
        };
        let mut rows = Vec::new();
        let mut docs = Vec::new();
        for (key, s) in &after {
            // A connector new in this interval counts from zero.
            let zero = Activity::default();
            let b = before.get(key).map_or(&zero, |b| &b.act);
            let d = counts::since(&Counters::from(&s.act), &Counters::from(b));
            let req = d.requests;
            let service: [u64; BUCKETS] =
                std::array::from_fn(|i| s.act.service_ns[i].saturating_sub(b.service_ns[i]));
            let bound = |p: f64| percentile_bound_ns(&service, p);
            let state = crate::display::state_text(&s.view);
            let mut doc = json!({
                "connector": s.view.name, "id": s.view.id, "state": state,
                "committed_per_s": per_s(s.act.committed, b.committed),
                "held": s.view.held, "retained": s.view.retained, "waits": s.waits,
                "service_time": {
                    "sampled": service.iter().fold(0u64, |a, &c| a.saturating_add(c)),
                    "p50_ns_at_most": bound(50.0).flatten(),
                    "p90_ns_at_most": bound(90.0).flatten(),
                    "p99_ns_at_most": bound(99.0).flatten(),
                    "buckets": service.iter().zip(bucket_bounds_ns()).map(|(c, hi)| json!({"below_ns": hi, "count": c})).collect::<Vec<_>>(),
                },
            });
            if let (Some(o), Value::Object(r)) =
                (doc.as_object_mut(), counts::per_second_json(&d, secs))
            {
                o.extend(r);
            }
            docs.push(doc);
            rows.push(vec![
                s.view.name.clone(),
                state.to_string(),
                format!("{:.0}", req as f64 / secs),
                format!("{:.2}", pct(d.irlm_contention, req)),
                format!("{:.2}", pct(d.xes_contention, req)),
                format!("{:.2}", pct(d.false_contention, req)),
                format!("{:.2}", pct(d.global_contention(), req)),
                show_bound(bound(50.0)),
                show_bound(bound(99.0)),
                format!("{:.0}", d.retained_refusals as f64 / secs),
                format!("{:.0}", per_s(s.act.committed, b.committed)),
                s.view.held.to_string(),
                s.view.retained.to_string(),
                s.waits.to_string(),
            ]);
        }
        let all = counts::since(&totals, &totals_before);
        let structure = counts::per_second_json(&all, secs);
        if a.json {
            let doc: Value = json!({
                "start": wall_before.strftime("%Y-%m-%dT%H:%M:%S%.3f%:z").to_string(),
                "end": wall.strftime("%Y-%m-%dT%H:%M:%S%.3f%:z").to_string(),
                "seconds": secs, "lock_structure": structure, "connectors": docs,
            });
            outln!("{doc}");
        } else {
            outln!(
                "\nINTERVAL {} - {} ({})  LOCK STRUCTURE: {:.0} req/s; contention IRLM {:.2}%, XES {:.2}%, FALSE {:.2}%, GLOBAL {:.2}%; retained refusals {:.0}/s",
                wall_before.strftime("%H:%M:%S%.3f"),
                wall.strftime("%H:%M:%S%.3f"),
                cf_harness::duration::human(Duration::from_secs_f64(secs)),
                all.requests as f64 / secs,
                pct(all.irlm_contention, all.requests),
                pct(all.xes_contention, all.requests),
                pct(all.false_contention, all.requests),
                pct(all.global_contention(), all.requests),
                all.retained_refusals as f64 / secs
            );
            if rows.is_empty() {
                outln!("no connectors");
            } else {
                outln!(
                    "{}",
                    table(
                        &[
                            "CONNECTOR",
                            "STATE",
                            "REQ/S",
                            "IRLM%",
                            "XES%",
                            "FALSE%",
                            "GLOBAL%",
                            "SYNC P50",
                            "SYNC P99",
                            "RETREF/S",
                            "COMMIT/S",
                            "HELD",
                            "RETAINED",
                            "WAITS",
                        ],
                        rows
                    )
                );
            }
        }
        cf_harness::out::flush();
        n += 1;
        if a.count.is_some_and(|c| n >= c) || stop.is_set() || cf_harness::out::closed() {
            return Ok(ExitCode::SUCCESS);
        }
        before = after;
        totals_before = totals;
        t_before = t;
        wall_before = wall;
    }
}

/// A percentile bound as the table shows it: `<=128ns`, `>33.6ms` (open
/// last bucket), `-` (no samples).
fn show_bound(b: Option<Option<u64>>) -> String {
    match b {
        None => "-".into(),
        Some(Some(ns)) => format!(
            "<={}",
            cf_harness::duration::human(Duration::from_nanos(ns))
        ),
        Some(None) => {
            let last = bucket_bounds_ns()[BUCKETS - 2].unwrap_or(0);
            format!(
                ">{}",
                cf_harness::duration::human(Duration::from_nanos(last))
            )
        }
    }
}
