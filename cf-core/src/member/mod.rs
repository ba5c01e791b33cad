//! A member's connection to the region: connect (fresh, or to recover a
//! failed member's log), take holders (one per thread, `holder.rs`), release
//! what a recovery took back, disconnect.
//!
//! # Who may take a failed member's retained locks back
//! Only a process that recovers the failed member's log: restart light
//! ([`ConnectMode::Recovery`]) or a normal restart that backs out first
//! ([`ConnectMode::Restart`]). Both reconnect to the failed-persistent slot in
//! the RECOVERING state, in which its modify locks still answer "retained" to
//! everyone. A lock-only connection ([`ConnectMode::Normal`], what `cfctl try`
//! and `hold` use) under a failed member's name is refused
//! ([`ConnectError::FailedPersistent`]): taking the locks back without
//! backing out the log would expose the dead member's uncommitted updates.

mod connection;
pub mod holder;

use crate::connector::identity::ProcessId;
use crate::connector::latch::ConnectLatch;
use crate::connector::latch::LatchTakeError;
use crate::connector::{self, MemberState, SlotChoice, StateWord};
use crate::error::{
    ConnectError, CorruptError, DisconnectError, HolderError, RecoveryStateError, UnlockError,
};
use crate::ids::{ConnectorId, SlotIndex};
use crate::lock::records::{self, RecordView, TAG_HELD};
use crate::recovery::{cleanup_member, CleanupOutcome};
use crate::shm::region::Region;
use crate::sync::Ordering;
use connection::Connection;
use holder::Holder;
use std::sync::Arc;
use std::time::Duration;

/// How a connection is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectMode {
    /// A lock-only member. Refused under the name of a failed-persistent
    /// member (its log must be recovered first).
    Normal,
    /// Restart light: only a failed-persistent member may be reconnected this
    /// way, in the RECOVERING state; it ends with a disconnect.
    Recovery,
    /// A normal member start that recovers its own log first: under the name
    /// of a failed-persistent member it reconnects RECOVERING (see
    /// [`Member::is_recovering`]) and becomes active with
    /// [`Member::finish_recovery`]; otherwise it connects as `Normal`.
    Restart,
}

/// A connected member.
pub struct Member {
    inner: Arc<Connection>,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("name", &self.inner.name)
            .field("id", &self.inner.id)
            .finish()
    }
}

/// What a disconnect did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DisconnectReport {
    /// Locks released by the disconnect (those its holders had not released).
    pub released: usize,
}

/// How long a connect waits for the connect latch, or for another process's
/// cleanup of a dead member of the same name.
const CONNECT_WAIT: Duration = Duration::from_secs(30);

impl Member {
    /// Connect as `name` (a lock-only member). A dead connector of the same
    /// name is cleaned up first; a failed-persistent one is refused.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// use cf_core::{CreateOptions, Member, Mode, Plex, Region, TryOutcome};
    /// use std::sync::Arc;
    /// let plex = Plex { dir: dir.path().into() };
    /// let region = Arc::new(Region::create(&plex, &CreateOptions::small_for_tests()).unwrap());
    /// let a = Member::connect(region.clone(), "A").unwrap();
    /// let mut h = a.holder().unwrap();
    /// let lock = match h.try_lock(b"account:1", Mode::Modify).unwrap() {
    ///     TryOutcome::Granted(l) => l,
    ///     other => panic!("{other:?}"),
    /// };
    /// h.unlock(lock).unwrap();
    /// drop(h);
    /// a.disconnect().unwrap();
    /// ```
    /// Connect as member `name` ([`ConnectMode::Normal`]): a fresh slot, or
    /// the slot of a dead member of that name once it is cleaned up. A
    /// failed-persistent member is refused (its locks stay retained until
    /// its log is recovered: connect with [`ConnectMode::Recovery`]).
    pub fn connect(region: Arc<Region>, name: &str) -> Result<Member, ConnectError> {
        Self::connect_with(region, name, ConnectMode::Normal)
    }

    /// Connect as member `name` in `mode`: [`ConnectMode::Recovery`] takes
    /// over a failed-persistent member and its retained locks.
    pub fn connect_with(
        region: Arc<Region>,
        name: &str,
        mode: ConnectMode,
    ) -> Result<Member, ConnectError> {
        connector::check_name(name)?;
        let me = ProcessId::current().map_err(ConnectError::Identity)?;
        let deadline = crate::sync::now() + CONNECT_WAIT;
        loop {
            let latch = ConnectLatch::take(&region, &me, CONNECT_WAIT)?;
            let (id, generation) = match connector::choose_slot(&region, name)? {
                SlotChoice::Fresh(_) if mode == ConnectMode::Recovery => {
                    return Err(ConnectError::NotFailed(name.to_string()))
                }
                SlotChoice::Fresh(id) => (
                    id,
                    connector::occupy(&region, id, name, &me, MemberState::Active, true)?,
                ),
                SlotChoice::Failed(_) if mode == ConnectMode::Normal => {
                    return Err(ConnectError::FailedPersistent(name.to_string()))
                }
                SlotChoice::Failed(id) => (
                    id,
                    connector::occupy(&region, id, name, &me, MemberState::Recovering, false)?,
                ),
                SlotChoice::NeedsCleanup(id) => {
                    drop(latch);
                    if let CleanupOutcome::InProgress { .. } = cleanup_member(&region, id)? {
                        crate::sync::pause(Duration::from_millis(1));
                    }
                    if crate::sync::now() > deadline {
                        return Err(ConnectError::NameInUse {
                            name: name.into(),
                            pid: connector::process_of(&region, id).pid,
                        });
                    }
                    continue;
                }
            };
            drop(latch);
            return Ok(Member {
                inner: Arc::new(Connection::new(region, id, generation, name)),
            });
        }
    }

    /// This connection's connector slot (its bit in the lock words).
    pub fn id(&self) -> ConnectorId {
        self.inner.id
    }
    /// The member's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }
    /// This connection's generation (the slot's count of connections, which
    /// tells this connection from an earlier or later one of the slot).
    pub fn generation(&self) -> u32 {
        self.inner.generation
    }
    /// The region this member is connected to.
    pub fn region(&self) -> &Arc<Region> {
        &self.inner.region
    }

    /// Did this connection take over a failed member (RECOVERING: its modify
    /// locks still answer "retained" until it finishes or disconnects)?
    pub fn is_recovering(&self) -> Result<bool, CorruptError> {
        Ok(
            connector::load_state(&self.inner.region, self.inner.id)?.state
                == MemberState::Recovering,
        )
    }

    /// A normal restart has backed out its log and released what it took
    /// back: become an active member.
    pub fn finish_recovery(&self) -> Result<(), RecoveryStateError> {
        let connected = || match self.inner.still_connected()? {
            true => Ok(()),
            false => Err(RecoveryStateError::Disconnected),
        };
        connected()?;
        let region = &self.inner.region;
        let from = StateWord {
            state: MemberState::Recovering,
            generation: self.inner.generation,
        };
        let me = ProcessId::current().map_err(RecoveryStateError::Identity)?;
        let _latch = ConnectLatch::take(region, &me, CONNECT_WAIT).map_err(|e| match e {
            // A connected member's region is writable.
            LatchTakeError::ReadOnly => RecoveryStateError::Disconnected,
            LatchTakeError::Timeout { pid } => RecoveryStateError::LatchTimeout(pid),
        })?;
        if connector::load_state(region, self.inner.id)? != from {
            return connected();
        }
        // The failure this connection recovered is done: its request is
        // completed before the member is ACTIVE, so a death after this point
        // is a new failure that gets a request of its own, and a death
        // before it finds the request completed and posts again (the
        // recovery is redone by a restart light).
        crate::requests::complete_outstanding(region, self.inner.id, self.name())?;
        crate::crash::point("recovery.completed_before_active");
        if connector::set_state(region, self.inner.id, from, MemberState::Active) {
            Ok(())
        } else {
            connected()
        }
    }

    /// Count `n` transactions committed by this member's application (kept in
    /// the region, so they survive the member's death; `inspect::committed_total`).
    pub fn add_committed(&self, n: u64) {
        self.inner.add_committed(n);
    }

    /// A holder for the calling thread (each thread takes its own).
    pub fn holder(&self) -> Result<Holder, HolderError> {
        if !self.inner.still_connected()? {
            return Err(HolderError::Disconnected);
        }
        Holder::new(self.inner.clone())
    }

    /// The held records of this connector: after a reconnect, the retained
    /// locks taken back.
    pub fn held_records(&self) -> Result<Vec<RecordView>, CorruptError> {
        Ok(records::all_records(&self.inner.region, self.inner.id)?
            .into_iter()
            .filter(|r| r.held)
            .collect())
    }

    /// Release one held record of this connector by slot: a retained lock
    /// taken back by a reconnect. A lock that a holder (thread) of this
    /// connection owns is refused ([`UnlockError::NotHeld`]): it is the
    /// holder's to release with `unlock`, and releasing it under the holder
    /// (a conversion of it waiting, say) would free a lock still in use.
    pub fn release_record(&self, slot: SlotIndex) -> Result<(), UnlockError> {
        if !self.inner.still_connected()? {
            return Err(UnlockError::Disconnected);
        }
        let region = &self.inner.region;
        let tag = records::tag(region, self.inner.id, slot.get())
            .map_err(|_| UnlockError::NotHeld(slot))?
            .load(Ordering::Acquire);
        if records::tag_state(tag) != TAG_HELD
            || records::holder_token(region, self.inner.id, slot.get()).is_some()
        {
            return Err(UnlockError::NotHeld(slot));
        }
        self.inner.release_slow(slot.get(), records::tag_entry(tag))
    }

    /// Release every lock this connector holds (after a reconnect: the retained
    /// locks taken back), entry by entry, in time linear in their number.
    /// `after_entry` runs after each lock table entry is done. Returns the
    /// number of locks released.
    /// No holder may be open (their locks would be released under them).
    pub fn release_all_held(&self, after_entry: impl FnMut()) -> Result<usize, UnlockError> {
        if Arc::strong_count(&self.inner) != 1 {
            return Err(UnlockError::HoldersOpen);
        }
        if !self.inner.still_connected()? {
            return Err(UnlockError::Disconnected);
        }
        self.inner.release_all(after_entry)
    }

    /// Release everything this connector holds and free its slot. Every
    /// holder must have been dropped first.
    pub fn disconnect(self) -> Result<DisconnectReport, DisconnectError> {
        if Arc::strong_count(&self.inner) != 1 {
            return Err(DisconnectError::HoldersOpen);
        }
        if !self.inner.still_connected()? {
            return Err(DisconnectError::Disconnected);
        }
        let region = &self.inner.region;
        let id = self.inner.id;
        // (Its windows are those of `restart_light.released_some`: the same walk.)
        let report = DisconnectReport {
            released: self.inner.release_all(|| {})?,
        };
        for b in 0..region.blocks_per_member() {
            if records::block(region, id, b).is_some_and(|h| h.owner.load(Ordering::Relaxed) != 0) {
                records::release_block(region, id, b);
            }
        }
        let me = ProcessId::current().map_err(DisconnectError::Identity)?;
        let _latch = ConnectLatch::take(region, &me, CONNECT_WAIT).map_err(|e| match e {
            // A connected member's region is writable.
            LatchTakeError::ReadOnly => DisconnectError::Disconnected,
            LatchTakeError::Timeout { pid } => DisconnectError::LatchTimeout(pid),
        })?;
        let st = connector::load_state(region, id)?;
        if st.generation != self.inner.generation {
            return Err(DisconnectError::Disconnected);
        }
        connector::vacate(region, id, st)?;
        Ok(report)
    }
}
