//! The three kinds of global contention and the retained refusals as
//! `display` and `report` show them: counts, and rates per request (what
//! cf-core counts: `inspect::Counters`, `lock/entry.rs` "Contention").
//!
//! * IRLM contention: the modes really conflict on the same resource.
//! * XES contention: the lock word saw exclusive interest against another
//!   member's, but the modes were compatible (IX beside IX).
//! * False contention: another resource hashed to the same lock entry.
//! * Retained refusals ("incompatible retained lock"): refused because a
//!   failed member retains the resource.
//!
//! Operators aim for global contention (the three together) under 1% of
//! requests, and false contention a small part of that.

use cf_core::inspect::Counters;
use serde_json::{json, Value};

/// The kinds, as (JSON key, column, count), in the order they are shown.
fn kinds(c: &Counters) -> [(&'static str, &'static str, u64); 5] {
    [
        ("irlm_contention", "IRLM", c.irlm_contention),
        ("xes_contention", "XES", c.xes_contention),
        ("false_contention", "FALSE", c.false_contention),
        ("global_contention", "GLOBAL", c.global_contention()),
        ("retained_refusals", "RETREF", c.retained_refusals),
    ]
}

/// `n` of `of` as a fraction (0 when nothing was asked).
pub fn rate(n: u64, of: u64) -> f64 {
    if of == 0 {
        0.0
    } else {
        n as f64 / of as f64
    }
}

/// What happened between two readings (counters only grow; a reading
/// from a damaged region may not, hence saturating).
pub fn since(after: &Counters, before: &Counters) -> Counters {
    Counters {
        requests: after.requests.saturating_sub(before.requests),
        irlm_contention: after.irlm_contention.saturating_sub(before.irlm_contention),
        xes_contention: after.xes_contention.saturating_sub(before.xes_contention),
        false_contention: after
            .false_contention
            .saturating_sub(before.false_contention),
        retained_refusals: after
            .retained_refusals
            .saturating_sub(before.retained_refusals),
    }
}

/// Counts and rates: `requests`, then for each kind `KIND` and
/// `KIND_rate` (a fraction of the requests).
pub fn json(c: &Counters) -> Value {
    let mut o = json!({ "requests": c.requests });
    for (key, _, n) in kinds(c) {
        o[key] = json!(n);
        o[format!("{key}_rate")] = json!(rate(n, c.requests));
    }
    o
}

/// Rates over an interval of `secs`: `requests_per_s`, then for each kind
/// `KIND_per_s` and `KIND_pct` (percent of the interval's requests).
pub fn per_second_json(d: &Counters, secs: f64) -> Value {
    let mut o = json!({ "requests_per_s": d.requests as f64 / secs });
    for (key, _, n) in kinds(d) {
        o[format!("{key}_per_s")] = json!(n as f64 / secs);
        o[format!("{key}_pct")] = json!(100.0 * rate(n, d.requests));
    }
    o
}

/// One line: `requests 1200; contention IRLM 3 (0.250%), XES 1 (0.083%),
/// FALSE 0 (0.000%), GLOBAL 4 (0.333%); retained refusals 0`.
pub fn text(c: &Counters) -> String {
    let k = kinds(c);
    let shown: Vec<String> = k[..4]
        .iter()
        .map(|(_, col, n)| format!("{col} {n} ({:.3}%)", 100.0 * rate(*n, c.requests)))
        .collect();
    format!(
        "requests {}; contention {}; retained refusals {}",
        c.requests,
        shown.join(", "),
        c.retained_refusals
    )
}

/// The columns of [`cells`].
pub const COLUMNS: [&str; 6] = ["REQUESTS", "IRLM", "XES", "FALSE", "GLOBAL%", "RETREF"];

/// Table cells under [`COLUMNS`].
pub fn cells(c: &Counters) -> Vec<String> {
    vec![
        c.requests.to_string(),
        c.irlm_contention.to_string(),
        c.xes_contention.to_string(),
        c.false_contention.to_string(),
        format!("{:.3}", 100.0 * rate(c.global_contention(), c.requests)),
        c.retained_refusals.to_string(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Counters {
        Counters {
            requests: 1000,
            irlm_contention: 3,
            xes_contention: 2,
            false_contention: 5,
            retained_refusals: 1,
        }
    }

    #[test]
    fn every_kind_has_its_count_and_rate() {
        let j = json(&sample());
        assert_eq!(j["irlm_contention"], 3);
        assert_eq!(j["global_contention"], 10);
        assert_eq!(j["false_contention_rate"], 0.005);
        assert_eq!(j["retained_refusals_rate"], 0.001);
        let p = per_second_json(&sample(), 2.0);
        assert_eq!(p["requests_per_s"], 500.0);
        assert_eq!(p["xes_contention_per_s"], 1.0);
        assert_eq!(p["global_contention_pct"], 1.0);
    }

    #[test]
    fn the_line_and_the_cells_name_each_kind() {
        assert_eq!(
            text(&sample()),
            "requests 1000; contention IRLM 3 (0.300%), XES 2 (0.200%), FALSE 5 (0.500%), \
             GLOBAL 10 (1.000%); retained refusals 1"
        );
        assert_eq!(cells(&sample()), ["1000", "3", "2", "5", "1.000", "1"]);
        assert_eq!(cells(&sample()).len(), COLUMNS.len());
        // No requests: rates are 0, not NaN.
        assert_eq!(json(&Counters::default())["irlm_contention_rate"], 0.0);
    }

    #[test]
    fn an_interval_is_the_difference_and_never_negative() {
        let before = sample();
        let mut after = sample();
        after.requests += 10;
        after.xes_contention += 1;
        let d = since(&after, &before);
        assert_eq!(
            (d.requests, d.xes_contention, d.irlm_contention),
            (10, 1, 0)
        );
        assert_eq!(since(&before, &after).requests, 0);
    }
}
