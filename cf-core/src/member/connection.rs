//! One connection of a member to the region, shared by the member handle and
//! its holders (threads): its connector id and generation, and the few
//! operations both need.

use crate::connector::{self, MemberState};
use crate::error::{CorruptError, Stuck, UnlockError};
use crate::ids::{ConnectorId, EntryIndex};
use crate::lock::entry::{self, LatchError, LatchWait, OwnLatches};
use crate::recovery;
use crate::shm::region::Region;
use crate::sync::Ordering;
use std::sync::atomic::AtomicU64 as StdAtomicU64;
use std::sync::Arc;

pub(crate) struct Connection {
    pub(crate) region: Arc<Region>,
    pub(crate) id: ConnectorId,
    pub(crate) generation: u32,
    pub(crate) name: String,
    next_holder: StdAtomicU64,
    /// This process's threads in a latched operation in our name.
    pub(crate) own_latches: OwnLatches,
}

impl Connection {
    pub(crate) fn new(
        region: Arc<Region>,
        id: ConnectorId,
        generation: u32,
        name: &str,
    ) -> Connection {
        Connection {
            region,
            id,
            generation,
            name: name.to_string(),
            next_holder: StdAtomicU64::new(1),
            own_latches: OwnLatches::new(generation),
        }
    }

    /// A token for a new holder: the owner word of its record blocks.
    /// Unique among the live holders of the region (the PID in the high
    /// half, a per-connection count from 1 in the low half), never 0 (a free
    /// block) nor `BLOCK_RETAINED`; a decision compares it with a record's
    /// block owner to tell a request's own holdings from a sibling's
    /// (`entry.rs` rule 5), so two holders may never share one. `None` once
    /// 2^32 - 1 holders were made by this connection.
    pub(crate) fn next_holder_token(&self) -> Option<u64> {
        let n = self
            .next_holder
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let n = u32::try_from(n).ok().filter(|&n| n != 0)?;
        Some((crate::connector::identity::current_pid() as u64) << 32 | n as u64)
    }

    /// Is our connector still ours? (A member is cleaned up only if its
    /// process is dead or if someone tampered with the region.)
    pub(crate) fn still_connected(&self) -> Result<bool, CorruptError> {
        let st = connector::load_state(&self.region, self.id)?;
        Ok(st.generation == self.generation
            && matches!(st.state, MemberState::Active | MemberState::Recovering))
    }

    /// Count `n` transactions committed by this member's application.
    pub(crate) fn add_committed(&self, n: u64) {
        if let Ok(c) = self.region.connector(self.id) {
            c.committed.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Release record `slot` on `entry` on the latched path.
    pub(crate) fn release_slow(&self, slot: u32, entry: EntryIndex) -> Result<(), UnlockError> {
        let region = &*self.region;
        let me = self.id;
        let mut on_stuck =
            |x: ConnectorId| recovery::try_clean(region, x, Some(me), 0, None).map(|_| ());
        let own = self.own_latches.enter();
        let mut how = LatchWait {
            deadline: None,
            steal: 0,
            on_stuck: &mut on_stuck,
            own: Some(&own),
        };
        entry::release(region, me, slot, entry, &mut how).map_err(|e| latch_error(e, entry))
    }

    /// Release every record of this connector (held or pending), entry by
    /// entry: cost linear in what it held. `after_entry` runs after each
    /// entry (a crash point for restart light). Returns how many were held.
    pub(crate) fn release_all(&self, mut after_entry: impl FnMut()) -> Result<usize, UnlockError> {
        let region = &*self.region;
        let me = self.id;
        let recs = crate::lock::records::slots_by_entry(region, me);
        let mut released = 0;
        let own = self.own_latches.enter();
        for group in recs.chunk_by(|a, b| a.0 == b.0) {
            let mut on_stuck =
                |x: ConnectorId| recovery::try_clean(region, x, Some(me), 0, None).map(|_| ());
            let mut how = LatchWait {
                deadline: None,
                steal: 0,
                on_stuck: &mut on_stuck,
                own: Some(&own),
            };
            released += entry::release_entry(region, me, group[0].0, group, &mut how)
                .map_err(|e| latch_error(e, group[0].0))?;
            after_entry();
        }
        // Blocks that held retained records (marked by the cleanup of this
        // member's previous life) are free again once empty.
        for b in 0..region.blocks_per_member() {
            if let Some(h) = crate::lock::records::block(region, me, b) {
                if h.owner.load(Ordering::Acquire) == crate::lock::records::BLOCK_RETAINED
                    && crate::lock::records::block_is_empty(region, me, b)
                {
                    crate::lock::records::release_block(region, me, b);
                }
            }
        }
        Ok(released)
    }
}

fn latch_error(e: LatchError, entry: EntryIndex) -> UnlockError {
    match e {
        LatchError::Corrupt(c) => c.into(),
        LatchError::Stuck(s) => s.into(),
        LatchError::Cleanup(c) => c.into(),
        // Only waits with a deadline time out; these have none.
        LatchError::TimedOut { holder } => Stuck::Latch {
            holder,
            entry,
            secs: 0,
        }
        .into(),
    }
}
