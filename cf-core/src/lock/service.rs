//! Sampled synchronous service time of lock requests, as an activity report
//! (`cfctl report`, like RMF's CF activity report) shows it.
//!
//! One request in [`SAMPLE_EVERY`] of each holder is timed from the call to
//! its answer, if it was answered without sleeping (a grant by the word's
//! CAS, or a decision on the latched path: granted, contention, retained).
//! Requests that slept are waits, counted apart. The time goes into the
//! connection's histogram in its connector slot: [`BUCKETS`] counters whose
//! bounds grow by 4x from 32 ns ([`bucket_bounds_ns`]), incremented with one
//! relaxed `fetch_add` (a shared line only between the member's own threads,
//! once in 64 requests). Percentiles read from it are upper bounds of the
//! bucket they fall in ([`percentile_bound_ns`]).
//!
//! Not sampled: requests that waited (their time is the holder's, not the
//! structure's), releases.

/// Buckets of the histogram.
pub const BUCKETS: usize = crate::shm::layout::SERVICE_BUCKETS;
/// One request in this many is timed (a power of two).
pub const SAMPLE_EVERY: u64 = 64;

/// The bucket of a service time: below 32 ns, below 128 ns, ..., and the
/// last one for the rest (about 33.6 ms and more).
pub fn bucket(ns: u64) -> usize {
    if ns < 32 {
        return 0;
    }
    let log2 = 63 - ns.leading_zeros() as usize;
    ((log2 - 5) / 2 + 1).min(BUCKETS - 1)
}

/// The upper bound (exclusive) of each bucket, ns; `None` for the last.
pub fn bucket_bounds_ns() -> [Option<u64>; BUCKETS] {
    let mut out = [None; BUCKETS];
    for (i, b) in out.iter_mut().enumerate().take(BUCKETS - 1) {
        *b = Some(32u64 << (2 * i));
    }
    out
}

/// The upper bound of the bucket holding percentile `p` (0 to 100) of the
/// samples counted in `counts`; `None` if there are none, `Some(None)` if
/// it falls in the open last bucket.
///
/// ```
/// use cf_core::lock::service::{bucket, percentile_bound_ns, BUCKETS};
/// let mut counts = [0u64; BUCKETS];
/// for ns in [20, 40, 50, 60, 100, 3_000] {
///     counts[bucket(ns)] += 1;
/// }
/// assert_eq!(percentile_bound_ns(&counts, 50.0), Some(Some(128)));
/// assert_eq!(percentile_bound_ns(&counts, 99.0), Some(Some(8_192)));
/// ```
pub fn percentile_bound_ns(counts: &[u64; BUCKETS], p: f64) -> Option<Option<u64>> {
    // Counts come from the region: a damaged one must not overflow.
    let total = counts.iter().fold(0u64, |a, &c| a.saturating_add(c));
    if total == 0 {
        return None;
    }
    // p is clamped to 0..=100 (a rank beyond the total names no bucket).
    let rank = ((p.clamp(0.0, 100.0) / 100.0) * total as f64)
        .ceil()
        .max(1.0) as u64;
    let bounds = bucket_bounds_ns();
    let mut seen = 0u64;
    for (i, c) in counts.iter().enumerate() {
        seen = seen.saturating_add(*c);
        if seen >= rank {
            return Some(bounds[i]);
        }
    }
    Some(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_grow_by_four_from_32_ns() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(31), 0);
        assert_eq!(bucket(32), 1);
        assert_eq!(bucket(127), 1);
        assert_eq!(bucket(128), 2);
        assert_eq!(bucket(511), 2);
        assert_eq!(bucket(512), 3);
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
        let b = bucket_bounds_ns();
        assert_eq!(b[0], Some(32));
        assert_eq!(b[1], Some(128));
        assert_eq!(b[BUCKETS - 2], Some(32 << (2 * (BUCKETS - 2))));
        assert_eq!(b[BUCKETS - 1], None);
        for ns in [1u64, 33, 1000, 40_000, 9_000_000] {
            let i = bucket(ns);
            assert!(b[i].is_none_or(|hi| ns < hi), "{ns} below its bound");
            assert!(
                i == 0 || b[i - 1].is_some_and(|lo| ns >= lo),
                "{ns} above the last"
            );
        }
    }

    #[test]
    fn damaged_counts_do_not_overflow() {
        let c = [u64::MAX; BUCKETS];
        assert_eq!(percentile_bound_ns(&c, 99.0), Some(Some(32)));
    }

    #[test]
    fn no_samples_no_percentile() {
        assert_eq!(percentile_bound_ns(&[0; BUCKETS], 50.0), None);
        let mut c = [0; BUCKETS];
        c[BUCKETS - 1] = 3;
        assert_eq!(percentile_bound_ns(&c, 50.0), Some(None));
    }

    #[test]
    fn a_percentile_beyond_100_is_the_maximum() {
        let mut c = [0; BUCKETS];
        c[0] = 1;
        c[2] = 1;
        assert_eq!(percentile_bound_ns(&c, 100.0), Some(Some(512)));
        assert_eq!(percentile_bound_ns(&c, 250.0), Some(Some(512)));
        assert_eq!(percentile_bound_ns(&c, -5.0), Some(Some(32)));
    }
}
