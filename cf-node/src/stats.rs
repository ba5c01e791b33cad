//! The one statistics implementation of the sim, the benchmarks and the
//! displays: an HDR histogram (`hdrhistogram`, 3 significant digits) of
//! samples in one unit, summarised as count, mean, standard deviation,
//! min, p50, p90, p99, p99.9 and max in that same unit.
//!
//! Samples are `f64` in the summary's unit; they are recorded at a thousandth
//! of it (so `2.345 ns` keeps its digits), and the percentiles are the
//! histogram's: the lowest recorded value that at least that fraction of the
//! samples do not exceed.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Recorded at 1/SCALE of the unit.
const SCALE: f64 = 1000.0;

/// A summary of samples in `unit`. Empty: `count` 0 and no figures.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub unit: &'static str,
    pub count: u64,
    pub mean: Option<f64>,
    pub stdev: Option<f64>,
    pub min: Option<f64>,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub p999: Option<f64>,
    pub max: Option<f64>,
}

/// Samples being collected.
#[derive(Clone, Debug)]
pub struct Recorder {
    unit: &'static str,
    h: Histogram<u64>,
}

impl Recorder {
    pub fn new(unit: &'static str) -> Recorder {
        // 3 significant digits, resizing as larger samples come.
        let h = Histogram::new(3).unwrap_or_else(|_| unreachable_histogram());
        Recorder { unit, h }
    }

    /// Record one sample (negative or non-finite samples count as 0).
    pub fn record(&mut self, x: f64) {
        let v = if x.is_finite() && x > 0.0 {
            (x * SCALE).round() as u64
        } else {
            0
        };
        // Auto-resizing: only a value past u64 could fail, which `as` clamps.
        let _ = self.h.record(v);
    }

    /// Record `n` samples of `x`.
    pub fn record_n(&mut self, x: f64, n: u64) {
        let v = if x.is_finite() && x > 0.0 {
            (x * SCALE).round() as u64
        } else {
            0
        };
        let _ = self.h.record_n(v, n);
    }

    pub fn count(&self) -> u64 {
        self.h.len()
    }

    /// The recorded distribution as (value, count) pairs, to be merged into
    /// another recorder with [`Recorder::record_n`] (percentiles cannot be
    /// merged; histograms can).
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        self.h
            .iter_recorded()
            .map(|v| (v.value_iterated_to() as f64 / SCALE, v.count_at_value()))
            .collect()
    }

    pub fn summary(&self) -> Summary {
        let h = &self.h;
        if h.is_empty() {
            return Summary {
                unit: self.unit,
                count: 0,
                mean: None,
                stdev: None,
                min: None,
                p50: None,
                p90: None,
                p99: None,
                p999: None,
                max: None,
            };
        }
        let q = |p: f64| Some(h.value_at_quantile(p) as f64 / SCALE);
        Summary {
            unit: self.unit,
            count: h.len(),
            mean: Some(h.mean() / SCALE),
            stdev: Some(h.stdev() / SCALE),
            min: Some(h.min() as f64 / SCALE),
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            max: Some(h.max() as f64 / SCALE),
        }
    }
}

fn unreachable_histogram() -> Histogram<u64> {
    // `Histogram::new(3)` only fails for more than 5 significant digits.
    Histogram::new_with_bounds(1, u64::MAX / 2, 2).unwrap_or_else(|_| std::process::abort())
}

impl Summary {
    /// The summary of `samples` in `unit`.
    pub fn of(samples: impl IntoIterator<Item = f64>, unit: &'static str) -> Summary {
        let mut r = Recorder::new(unit);
        for x in samples {
            r.record(x);
        }
        r.summary()
    }

    /// One line: `n=12 mean 3.4ms ±0.5 p50 3.1ms p90 … max 9ms`, with `fmt`
    /// printing a value of the unit.
    pub fn line_with(&self, fmt: impl Fn(f64) -> String) -> String {
        if self.count == 0 {
            return "none".into();
        }
        let f = |v: Option<f64>| v.map(&fmt).unwrap_or_else(|| "-".into());
        format!(
            "n={} mean {} ±{} | p50 {} p90 {} p99 {} p99.9 {} max {}",
            self.count,
            f(self.mean),
            f(self.stdev),
            f(self.p50),
            f(self.p90),
            f(self.p99),
            f(self.p999),
            f(self.max)
        )
    }

    /// One line with the values printed in the unit (durations in ns, µs,
    /// ms or s are printed for people).
    pub fn line(&self) -> String {
        let scale = match self.unit {
            "ns" => Some(1.0),
            "µs" | "us" => Some(1e3),
            "ms" => Some(1e6),
            "s" => Some(1e9),
            _ => None,
        };
        match scale {
            Some(k) => self.line_with(|v| human_ns(v * k)),
            None => {
                let unit = self.unit;
                self.line_with(|v| format!("{v:.0} {unit}"))
            }
        }
    }

    /// The CSV columns of a summary, prefixed with `name_`.
    pub fn csv_header(name: &str) -> Vec<String> {
        [
            "count", "mean", "stdev", "min", "p50", "p90", "p99", "p999", "max",
        ]
        .iter()
        .map(|k| format!("{name}_{k}"))
        .collect()
    }

    /// The CSV values of [`Summary::csv_header`] (empty cells when empty).
    pub fn csv_values(&self) -> Vec<String> {
        let f = |v: Option<f64>| v.map(|x| format!("{x}")).unwrap_or_default();
        vec![
            self.count.to_string(),
            f(self.mean),
            f(self.stdev),
            f(self.min),
            f(self.p50),
            f(self.p90),
            f(self.p99),
            f(self.p999),
            f(self.max),
        ]
    }
}

/// A duration in nanoseconds for people: `812ns`, `12.3µs`, `4.56ms`,
/// `1.5s`, `2m 30s`.
pub fn human_ns(ns: f64) -> String {
    let trim = |x: f64, unit: &str| {
        let s = if x >= 100.0 {
            format!("{x:.0}")
        } else if x >= 10.0 {
            format!("{x:.1}")
        } else {
            format!("{x:.2}")
        };
        let s = if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        };
        format!("{s}{unit}")
    };
    if !ns.is_finite() {
        return "-".into();
    }
    if ns < 1e3 {
        trim(ns, "ns")
    } else if ns < 1e6 {
        trim(ns / 1e3, "µs")
    } else if ns < 1e9 {
        trim(ns / 1e6, "ms")
    } else if ns < 60e9 {
        trim(ns / 1e9, "s")
    } else {
        let s = (ns / 1e9).round() as u64;
        format!("{}m {}s", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_one_to_a_thousand() {
        let s = Summary::of((1..=1000).map(|x| x as f64), "µs");
        assert_eq!(s.count, 1000);
        let near = |v: Option<f64>, want: f64| (v.unwrap() - want).abs() <= want * 0.002;
        assert!(near(s.p50, 500.0), "{s:?}");
        assert!(near(s.p90, 900.0), "{s:?}");
        assert!(near(s.p99, 990.0), "{s:?}");
        assert!(near(s.p999, 999.0), "{s:?}");
        assert!(near(s.max, 1000.0), "{s:?}");
        assert!(near(s.mean, 500.5), "{s:?}");
        assert!(near(s.min, 1.0), "{s:?}");
    }

    #[test]
    fn fractions_of_the_unit_are_kept() {
        let s = Summary::of([2.345, 2.345], "ns");
        assert!((s.p50.unwrap() - 2.345).abs() < 0.01);
        assert_eq!(s.stdev, Some(0.0));
    }

    #[test]
    fn empty_has_no_figures() {
        let s = Summary::of([], "ms");
        assert_eq!(s.count, 0);
        assert_eq!(s.p99, None);
        assert_eq!(s.line(), "none");
    }
}
