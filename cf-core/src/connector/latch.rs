//! The connect latch: one word in the lock structure's header holding the
//! token (PID and start time) of the process changing the connector table.
//! Names and connections change only under it, so two members never take the
//! same name or slot. A latch whose owner is dead is taken over (one CAS from
//! the dead token); a process killed holding it therefore blocks nobody.

use crate::connector::identity::ProcessId;
use crate::error::ConnectError;
use crate::shm::region::Region;
use crate::sync::Ordering;
use std::time::Duration;

/// The connect latch, held for the life of this guard.
pub(crate) struct ConnectLatch<'a> {
    region: &'a Region,
    token: u64,
}

impl<'a> ConnectLatch<'a> {
    pub(crate) fn take(
        region: &'a Region,
        me: &ProcessId,
        timeout: Duration,
    ) -> Result<Self, LatchTakeError> {
        if region.is_read_only() {
            return Err(LatchTakeError::ReadOnly);
        }
        let latch = &region.lock_header().connect_latch;
        let token = me.token();
        let deadline = crate::sync::now() + timeout;
        let mut spins = 0u32;
        loop {
            let cur = latch.load(Ordering::Acquire);
            if cur == 0 || !ProcessId::token_is_alive(cur) {
                if latch
                    .compare_exchange(cur, token, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    crate::crash::point("connect.latched");
                    return Ok(ConnectLatch { region, token });
                }
                continue;
            }
            if crate::sync::now() > deadline {
                return Err(LatchTakeError::Timeout { pid: cur as u32 });
            }
            spins += 1;
            if spins < 64 {
                crate::sync::spin_hint();
            } else {
                crate::sync::pause(Duration::from_micros(200));
            }
        }
    }
}

/// Why the connect latch was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LatchTakeError {
    /// The region is read-only.
    ReadOnly,
    /// A live process kept it past the timeout.
    Timeout { pid: u32 },
}

impl From<LatchTakeError> for ConnectError {
    fn from(e: LatchTakeError) -> ConnectError {
        match e {
            LatchTakeError::ReadOnly => ConnectError::ReadOnly,
            LatchTakeError::Timeout { pid } => ConnectError::LatchTimeout(pid),
        }
    }
}

impl Drop for ConnectLatch<'_> {
    fn drop(&mut self) {
        if crate::crash::killed() {
            return; // a killed process runs no code: the latch stays with its dead token
        }
        // Only ours to drop (a taker-over may hold it if we were thought dead).
        let _ = self.region.lock_header().connect_latch.compare_exchange(
            self.token,
            0,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
    }
}
