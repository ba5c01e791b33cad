//! Stopping on SIGINT or SIGTERM, the one way every process of the workspace
//! does it (`signal-hook`): a flag that work loops poll ([`StopFlag`]), or a
//! wait ([`StopWait`]). Install either first thing, so that no stop signal
//! can kill the process before it is handled.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;

pub use signal_hook::consts::{SIGINT, SIGTERM};

/// Set once SIGINT or SIGTERM has come. A second stop signal ends the
/// process at once with the default action (a stuck run can still be stopped
/// from the terminal; children die with it by their parent-death signal).
#[derive(Clone)]
pub struct StopFlag {
    flag: Arc<AtomicBool>,
    signal: Arc<AtomicI32>,
}

impl StopFlag {
    pub fn install() -> std::io::Result<StopFlag> {
        let flag = Arc::new(AtomicBool::new(false));
        let signal = Arc::new(AtomicI32::new(0));
        for sig in [SIGINT, SIGTERM] {
            // Checked before the flag is set below: only a second signal.
            signal_hook::flag::register_conditional_default(sig, flag.clone())?;
            let (f, s) = (flag.clone(), signal.clone());
            // SAFETY: the action only stores to atomics (async-signal-safe).
            unsafe {
                signal_hook::low_level::register(sig, move || {
                    s.store(sig, Ordering::Relaxed);
                    f.store(true, Ordering::Relaxed);
                })?;
            }
        }
        Ok(StopFlag { flag, signal })
    }

    /// Has a stop signal come?
    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }

    /// The signal that came (0: none yet).
    pub fn signal(&self) -> i32 {
        self.signal.load(Ordering::Relaxed)
    }
}

/// A wait for SIGINT or SIGTERM, installed before the work starts.
pub struct StopWait(signal_hook::iterator::Signals);

impl StopWait {
    pub fn install() -> std::io::Result<StopWait> {
        Ok(StopWait(signal_hook::iterator::Signals::new([
            SIGINT, SIGTERM,
        ])?))
    }

    /// Wait for the signal and return its name (`SIGINT`, `SIGTERM`).
    pub fn wait(&mut self) -> &'static str {
        name(self.0.forever().next().unwrap_or(SIGTERM))
    }

    /// Wait for the signal (`Some(name)`), looking every `every` whether
    /// `done()` says to stop waiting (`None`): a worker that ended by itself.
    pub fn wait_or(
        &mut self,
        every: std::time::Duration,
        done: impl Fn() -> bool,
    ) -> Option<&'static str> {
        loop {
            if let Some(sig) = self.0.pending().next() {
                return Some(name(sig));
            }
            if done() {
                return None;
            }
            std::thread::sleep(every);
        }
    }
}

/// The name of a stop signal.
pub fn name(sig: i32) -> &'static str {
    match sig {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}
