//! The one timing method every path is measured with, and the summary of a
//! set of samples.
//!
//! Method: warm up each path (which also calibrates how many operations fill
//! one repetition), then time several repetitions of that many operations,
//! taking the paths in turn within each round so that a slow drift of the
//! machine (frequency, a noisy neighbour) hits every path alike. The figure
//! is the median over repetitions; the spread is min..max.

use super::guard::check_interrupted;
use anyhow::Result;
use serde::Serialize;
use std::time::{Duration, Instant};

/// How long to warm up, how long one repetition lasts, how many repetitions.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Method {
    #[serde(serialize_with = "ser_ms", rename = "warmup_ms")]
    pub warmup: Duration,
    #[serde(serialize_with = "ser_ms", rename = "rep_time_ms")]
    pub rep_time: Duration,
    pub reps: usize,
}

fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1e3)
}

/// Median, extremes and p99 of a set of samples: the workspace's one
/// statistics implementation ([`cf_node::stats::Summary`], an HDR
/// histogram), under the names the tables use.
#[derive(Clone, Debug, Serialize)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub p99: f64,
    pub n: usize,
    /// The full summary (mean, stdev, p50, p90, p99, p99.9, max).
    pub summary: cf_node::stats::Summary,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats::of(&[])
    }
}

impl Stats {
    pub fn of(samples: &[f64]) -> Stats {
        let summary =
            cf_node::stats::Summary::of(samples.iter().copied().filter(|x| x.is_finite()), "ns");
        Stats {
            median: summary.p50.unwrap_or(0.0),
            min: summary.min.unwrap_or(0.0),
            max: summary.max.unwrap_or(0.0),
            p99: summary.p99.unwrap_or(0.0),
            n: summary.count as usize,
            summary,
        }
    }

    /// (max - min) / median, in percent.
    pub fn spread_pct(&self) -> f64 {
        if self.median > 0.0 {
            (self.max - self.min) / self.median * 100.0
        } else {
            0.0
        }
    }
}

/// One path to time: `run(n)` performs `n` operations.
pub struct Path<'a> {
    pub name: &'static str,
    pub run: Box<dyn FnMut(u64) -> Result<()> + 'a>,
}

/// The result for one path: ns per operation over the repetitions, and how
/// many operations each repetition timed.
pub struct Timed {
    pub ns: Stats,
    pub iters: u64,
}

/// Time every path with `m` (see the module doc).
pub fn measure_all(m: &Method, paths: &mut [Path<'_>]) -> Result<Vec<Timed>> {
    let mut iters = Vec::with_capacity(paths.len());
    for p in paths.iter_mut() {
        iters.push(calibrate(m, &mut *p.run)?);
    }
    let mut samples = vec![Vec::with_capacity(m.reps); paths.len()];
    for _ in 0..m.reps {
        for (i, p) in paths.iter_mut().enumerate() {
            check_interrupted()?;
            let t = Instant::now();
            (p.run)(iters[i])?;
            let dt = t.elapsed();
            samples[i].push(dt.as_nanos() as f64 / iters[i] as f64);
        }
    }
    Ok(samples
        .iter()
        .zip(iters)
        .map(|(s, iters)| Timed {
            ns: Stats::of(s),
            iters,
        })
        .collect())
}

/// Warm up for `m.warmup` with doubling batches; return how many operations
/// take about `m.rep_time`.
fn calibrate(m: &Method, run: &mut dyn FnMut(u64) -> Result<()>) -> Result<u64> {
    let start = Instant::now();
    let mut n: u64 = 1;
    let mut per_op;
    loop {
        check_interrupted()?;
        let t = Instant::now();
        run(n)?;
        let dt = t.elapsed();
        per_op = dt.as_nanos().max(1) as f64 / n as f64;
        if start.elapsed() >= m.warmup {
            break;
        }
        if dt < m.warmup / 10 {
            n = n.saturating_mul(2);
        }
    }
    Ok(((m.rep_time.as_nanos() as f64 / per_op) as u64).max(1))
}

/// Format nanoseconds with a unit that keeps three or four digits.
pub fn fmt_ns(ns: f64) -> String {
    if !ns.is_finite() {
        "-".into()
    } else if ns < 100.0 {
        format!("{ns:.1} ns")
    } else if ns < 10_000.0 {
        format!("{ns:.0} ns")
    } else if ns < 10_000_000.0 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{:.1} ms", ns / 1e6)
    }
}

/// Format a rate (per second) compactly.
pub fn fmt_rate(r: f64) -> String {
    if !r.is_finite() {
        "-".into()
    } else if r >= 1e9 {
        format!("{:.2} G/s", r / 1e9)
    } else if r >= 1e6 {
        format!("{:.2} M/s", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1} k/s", r / 1e3)
    } else {
        format!("{r:.1} /s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Within the histogram's resolution (3 significant digits: a value is
    /// reported as the highest of its bucket, at most 0.1% above it).
    fn near(got: f64, want: f64) -> bool {
        got >= want && got <= want * 1.001
    }

    #[test]
    fn median_and_p99_are_the_histograms() {
        let s = Stats::of(&[5.0, 1.0, 3.0]);
        for (got, want) in [(s.median, 3.0), (s.min, 1.0), (s.max, 5.0), (s.p99, 5.0)] {
            assert!(near(got, want), "{got} for {want}: {s:?}");
        }
        // One definition: the lowest sample that half the samples do not exceed.
        let s = Stats::of(&[4.0, 1.0, 3.0, 2.0]);
        assert!(near(s.median, 2.0), "{s:?}");
        let v: Vec<f64> = (1..=200).map(f64::from).collect();
        let p99 = Stats::of(&v).p99;
        assert!(near(p99, 198.0), "{p99}");
        assert_eq!(Stats::of(&[]).n, 0);
    }
}
