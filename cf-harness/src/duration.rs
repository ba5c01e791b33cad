//! Durations on the command line and in reports.
//!
//! An option takes a human duration (`30s`, `300ms`, `1.5s`, `2m`, parsed by
//! `jiff`'s friendly format, or ISO 8601) or a bare number in the option's
//! historical unit (`--duration 10` is 10 s, `--kill-every 200` is 200 ms).

use std::time::Duration;

/// The unit of a bare number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bare {
    Seconds,
    Millis,
    Micros,
}

/// Parse `s` as a human duration, or a bare number in `bare` units.
pub fn parse(s: &str, bare: Bare) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(x) = s.parse::<f64>() {
        if !x.is_finite() || x < 0.0 {
            return Err(format!("{s:?} is not a duration"));
        }
        let secs = match bare {
            Bare::Seconds => x,
            Bare::Millis => x / 1e3,
            Bare::Micros => x / 1e6,
        };
        return Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"));
    }
    let d: jiff::SignedDuration = s.parse().map_err(|e| {
        format!("{s:?} is not a duration (e.g. 30s, 300ms, 1.5s, 2m; a bare number: {bare:?}): {e}")
    })?;
    Duration::try_from(d).map_err(|_| format!("{s:?} is negative"))
}

/// A clap value parser for a duration whose bare numbers are seconds.
pub fn secs(s: &str) -> Result<Duration, String> {
    parse(s, Bare::Seconds)
}

/// A clap value parser for a duration whose bare numbers are milliseconds.
pub fn millis(s: &str) -> Result<Duration, String> {
    parse(s, Bare::Millis)
}

/// A clap value parser for a duration whose bare numbers are microseconds.
pub fn micros(s: &str) -> Result<Duration, String> {
    parse(s, Bare::Micros)
}

/// A duration for people: `812ns`, `12.3µs`, `4.56ms`, `1.5s`, `2m 30s`.
pub fn human(d: Duration) -> String {
    human_ns(d.as_nanos() as f64)
}

pub use cf_node::stats::human_ns;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_and_bare() {
        assert_eq!(secs("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(secs("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(secs("300ms").unwrap(), Duration::from_millis(300));
        assert_eq!(secs("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(secs("10").unwrap(), Duration::from_secs(10));
        assert_eq!(millis("200").unwrap(), Duration::from_millis(200));
        assert_eq!(micros("500").unwrap(), Duration::from_micros(500));
        assert!(secs("-1").is_err());
        assert!(secs("soon").is_err());
        assert!(secs("-2s").is_err());
    }

    #[test]
    fn printed_for_people() {
        assert_eq!(human(Duration::from_millis(300)), "300ms");
        assert_eq!(human(Duration::from_millis(1500)), "1.5s");
        assert_eq!(human(Duration::from_secs(30)), "30s");
        assert_eq!(human(Duration::from_nanos(12_345)), "12.3µs");
        assert_eq!(human(Duration::from_secs(150)), "2m 30s");
    }
}
