//! Command-line parsing shared by the binaries (`cf-node`, `cfctl`): usage
//! errors, and durations (`30s`, `300ms`, `1.5s`, `2m` through `jiff`'s
//! friendly format, or ISO 8601; a bare number in the option's historical
//! unit: `--duration 10` is 10 s, `--kill-every 200` is 200 ms).

use std::process::ExitCode;
use std::time::Duration;

/// Exit status of a command line that does not parse (`EX_USAGE` of
/// sysexits.h): apart from every answer a command gives (`cfctl try`: 2
/// contention, 3 retained) and from its errors (1).
pub const USAGE_EXIT: u8 = 64;

/// Parse the command line: `--help` and `--version` print and exit 0, a
/// usage error prints clap's message and exits [`USAGE_EXIT`] (`Err`).
pub fn parse<C: clap::Parser>() -> Result<C, ExitCode> {
    C::try_parse().map_err(|e| {
        let _ = e.print();
        if e.use_stderr() {
            ExitCode::from(USAGE_EXIT)
        } else {
            ExitCode::SUCCESS
        }
    })
}

/// The unit of a bare number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bare {
    Seconds,
    Millis,
    Micros,
}

/// Parse `s` as a human duration, or a bare number in `bare` units.
pub fn parse_duration(s: &str, bare: Bare) -> Result<Duration, String> {
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
    parse_duration(s, Bare::Seconds)
}

/// A clap value parser for a duration whose bare numbers are milliseconds.
pub fn millis(s: &str) -> Result<Duration, String> {
    parse_duration(s, Bare::Millis)
}

/// A clap value parser for a duration whose bare numbers are microseconds.
pub fn micros(s: &str) -> Result<Duration, String> {
    parse_duration(s, Bare::Micros)
}

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
}
