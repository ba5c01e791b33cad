//! Durations on the command line and in reports.
//!
//! An option takes a human duration (`30s`, `300ms`, `1.5s`, `2m`, parsed by
//! `jiff`'s friendly format, or ISO 8601) or a bare number in the option's
//! historical unit (`--duration 10` is 10 s, `--kill-every 200` is 200 ms).

use std::time::Duration;

pub use cf_node::cli::{micros, millis, parse_duration as parse, secs, Bare};

/// A duration for people: `812ns`, `12.3µs`, `4.56ms`, `1.5s`, `2m 30s`.
pub fn human(d: Duration) -> String {
    human_ns(d.as_nanos() as f64)
}

pub use cf_node::stats::human_ns;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_for_people() {
        assert_eq!(human(Duration::from_millis(300)), "300ms");
        assert_eq!(human(Duration::from_millis(1500)), "1.5s");
        assert_eq!(human(Duration::from_secs(30)), "30s");
        assert_eq!(human(Duration::from_nanos(12_345)), "12.3µs");
        assert_eq!(human(Duration::from_secs(150)), "2m 30s");
    }
}
