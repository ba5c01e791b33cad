//! Named crash points. With the `crash-points` feature (tests only), a process
//! whose environment has `CF_CRASH_AT=<name>` (or `<name>@<n>`: the n-th time,
//! counting from 1) sends itself `SIGKILL` when it reaches that point, so a test
//! can kill a real process at an exact step of a protocol. Children inherit the
//! environment; with `CF_CRASH_ONCE=<path>` as well, only the first process to
//! reach the point (the one that creates `<path>`) is killed, so a retry by a
//! child of the same parent runs through. Without the feature every crash point
//! compiles to nothing.

/// Every crash point in the protocols, for tests to iterate over.
pub const CRASH_POINTS: &[&str] = &[
    // lock.rs: acquire (record written, then word) and release (word, then record)
    "acquire.after_record",
    "acquire.after_word",
    "release.after_word",
    // lock.rs: the latched resource-level path
    "slow.latched",
    "slow.granted_before_unlatch",
    "slow_release.latched",
    "slow_release.after_unlatch",
    // recovery.rs: cleanup of a dead member
    "cleanup.claimed",
    "cleanup.entry_latched",
    "cleanup.entry_unlatched",
    "cleanup.before_final_state",
    // connector.rs
    "connect.latched",
    "disconnect.released_some",
    // cf-node: restart light (restart_light.rs) and the request handler (monitor.rs)
    "restart_light.connected",
    "restart_light.backed_out_some",
    "restart_light.backed_out",
    "restart_light.released_some",
    "restart_light.disconnected",
    "handler.claimed",
    // cf-node: a transaction between its two legs (bank.rs)
    "bank.between_legs",
    // cf-node: inside a log append, half the record written (wal.rs)
    "wal.torn_append",
];

#[cfg(feature = "crash-points")]
mod imp {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static HITS: AtomicU64 = AtomicU64::new(0);

    fn target() -> &'static Option<(String, u64)> {
        TARGET.get_or_init(|| {
            let spec = std::env::var("CF_CRASH_AT").ok()?;
            match spec.split_once('@') {
                Some((name, n)) => Some((name.to_string(), n.parse().unwrap_or(1).max(1))),
                None => Some((spec, 1)),
            }
        })
    }

    /// With CF_CRASH_ONCE=<path>: true only for the process that creates <path>.
    fn first_process() -> bool {
        match std::env::var_os("CF_CRASH_ONCE") {
            None => true,
            Some(path) => std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .is_ok(),
        }
    }

    pub fn armed(name: &str) -> bool {
        target().as_ref().is_some_and(|(want, _)| want == name)
    }

    pub fn hit(name: &str) {
        if let Some((want, nth)) = target() {
            if want == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *nth && first_process() {
                // SAFETY: raise() has no memory-safety preconditions.
                unsafe {
                    libc::raise(libc::SIGKILL);
                }
            }
        }
    }
}

/// Is `CF_CRASH_AT` naming this point (whichever hit it names)? For a point
/// that needs a fault set up before it (a half-written record), so the fault
/// is made only when the point may fire. Always false without the feature.
#[inline(always)]
pub fn armed(name: &'static str) -> bool {
    debug_assert!(CRASH_POINTS.contains(&name), "unlisted crash point {name}");
    #[cfg(feature = "crash-points")]
    return imp::armed(name);
    #[cfg(not(feature = "crash-points"))]
    false
}

/// Mark a crash point. See the module docs.
#[inline(always)]
pub fn point(name: &'static str) {
    debug_assert!(CRASH_POINTS.contains(&name), "unlisted crash point {name}");
    #[cfg(feature = "crash-points")]
    imp::hit(name);
}
