//! Named crash points. With the `crash-points` feature (tests only), a process
//! whose environment has `CF_CRASH_AT=<name>` (or `<name>@<n>`: the n-th time,
//! counting from 1) sends itself `SIGKILL` when it reaches that point, so a test
//! can kill a real process at an exact step of a protocol. Children inherit the
//! environment; with `CF_CRASH_ONCE=<path>` as well, only the first process to
//! reach the point (the one that creates `<path>`) is killed, so a retry by a
//! child of the same parent runs through. Without the feature every crash point
//! compiles to nothing.
//!
//! Under `--cfg loom` a model thread arms a point with `model::arm`; reaching
//! it marks the thread's modelled process dead and unwinds the thread (caught
//! by the model), and [`killed`] tells destructors not to act: a SIGKILLed
//! process runs no more code.

/// Every crash point in the protocols, for tests to iterate over.
pub const CRASH_POINTS: &[&str] = &[
    // member/holder.rs: acquire (record written, then word) and release (word, then record)
    "acquire.after_record",
    "acquire.after_word",
    "release.marked",
    "release.after_word",
    // member/holder.rs and lock/entry.rs: the latched resource-level path
    "slow.latched",
    "slow.granted_before_unlatch",
    "slow_release.latched",
    "slow_release.after_unlatch",
    "convert.mode_written",
    // recovery.rs: cleanup of a dead member
    "cleanup.claimed",
    "cleanup.entry_latched",
    "cleanup.entry_unlatched",
    "cleanup.before_final_state",
    // connector/latch.rs
    "connect.latched",
    // member/mod.rs: a normal restart's request completed, not yet ACTIVE
    "recovery.completed_before_active",
    // connector/liveness.rs: registration, the pass-on of a kernel wake, the fence
    "liveness.before_word",
    "liveness.woken",
    "fence.marked",
    // deadlock.rs: a round of the detector (claim, victim chosen, told)
    "deadlock.claimed",
    "deadlock.chosen",
    "deadlock.told",
    // cf-node: restart light (restart_light.rs; backing out and releasing in
    // recover.rs) and the request handler (monitor.rs)
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

#[cfg(all(feature = "crash-points", not(loom)))]
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
    #[cfg(all(feature = "crash-points", not(loom)))]
    return imp::armed(name);
    #[cfg(not(all(feature = "crash-points", not(loom))))]
    false
}

/// Mark a crash point. See the module docs.
#[inline(always)]
pub fn point(name: &'static str) {
    debug_assert!(CRASH_POINTS.contains(&name), "unlisted crash point {name}");
    #[cfg(all(feature = "crash-points", not(loom)))]
    imp::hit(name);
    #[cfg(loom)]
    model::hit(name);
}

/// Was this thread killed at a crash point? (Only under loom: a real SIGKILL
/// leaves no thread to ask.)
#[inline(always)]
pub(crate) fn killed() -> bool {
    #[cfg(loom)]
    return model::killed();
    #[cfg(not(loom))]
    false
}

/// Crash points in the loom models.
#[cfg(loom)]
pub mod model {
    use std::cell::{Cell, RefCell};

    /// The payload a killed model thread unwinds with.
    #[derive(Debug)]
    pub struct Killed;

    loom::thread_local! {
        static ARMED: RefCell<Option<(&'static str, u32)>> = RefCell::new(None);
        static KILLED: Cell<bool> = Cell::new(false);
    }

    /// Kill this model thread's process at the `nth` hit (from 1) of `name`.
    pub fn arm(name: &'static str, nth: u32) {
        assert!(
            super::CRASH_POINTS.contains(&name),
            "unlisted crash point {name}"
        );
        ARMED.with(|a| *a.borrow_mut() = Some((name, nth.max(1))));
    }

    pub(super) fn killed() -> bool {
        KILLED.with(|k| k.get())
    }

    pub(super) fn hit(name: &'static str) {
        let fire = ARMED.with(|a| {
            let mut a = a.borrow_mut();
            match a.as_mut() {
                Some((n, left)) if *n == name => {
                    *left -= 1;
                    let fire = *left == 0;
                    if fire {
                        *a = None; // fired: a later hit of the point is no kill
                    }
                    fire
                }
                _ => false,
            }
        });
        if fire {
            KILLED.with(|k| k.set(true));
            crate::sync::model::kill(crate::sync::model::current());
            std::panic::resume_unwind(Box::new(Killed));
        }
    }

    /// Run `f` as model process `pid`; true if it ran to the end, false if it
    /// was killed at its armed crash point.
    pub fn run_as(pid: u32, f: impl FnOnce()) -> bool {
        crate::sync::model::enter(pid);
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            Ok(()) => true,
            Err(p) if p.is::<Killed>() => {
                // The killed process's destructors ran (acting as killed);
                // the thread goes on as another process, whose destructors
                // act (attack14: a connect latch was never let go by the
                // thread's later disconnect, and the next one spun on it).
                KILLED.with(|k| k.set(false));
                false
            }
            Err(p) => std::panic::resume_unwind(p),
        }
    }
}
