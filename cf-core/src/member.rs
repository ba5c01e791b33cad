//! A connection to the region under a member name: connect, reconnect as a
//! failed-persistent member, take holders (one per thread), release retained
//! locks, disconnect.

use crate::connector::{self, ConnectLatch, MemberState, SlotChoice};
use crate::error::{ConnectError, LockError};
use crate::identity::ProcessId;
use crate::lock::{release_all, release_slow, Holder};
use crate::records::{self, RecordView, TAG_HELD};
use crate::recovery::{cleanup_member, CleanupOutcome};
use crate::region::Region;
use crate::sync::Ordering;
use std::sync::atomic::AtomicU64 as StdAtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a connection is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectMode {
    /// A normal member. Reconnecting under the name of a failed-persistent
    /// member takes its retained locks back as its own.
    Normal,
    /// Restart light: only a failed-persistent member may be reconnected this
    /// way; its locks stay "retained" to others until released.
    Recovery,
}

pub(crate) struct MemberInner {
    pub(crate) region: Arc<Region>,
    pub(crate) id: u32,
    pub(crate) generation: u32,
    pub(crate) name: String,
    next_holder: StdAtomicU64,
}

impl MemberInner {
    pub(crate) fn next_holder_token(&self) -> u64 {
        // Nonzero, unique within this process; block owners are compared only
        // with zero and with BLOCK_RETAINED.
        (std::process::id() as u64) << 24
            | (self.next_holder.fetch_add(1, Ordering::Relaxed) & 0xff_ffff)
            | 1
    }

    /// Is our connector still ours? (A member is cleaned up only if its
    /// process is dead or if someone tampered with the region.)
    pub(crate) fn check_still_connected(&self) -> Result<(), LockError> {
        let st = connector::load_state(&self.region, self.id)?;
        if st.generation == self.generation
            && matches!(st.state, MemberState::Active | MemberState::Recovering)
        {
            Ok(())
        } else {
            Err(LockError::Disconnected)
        }
    }
}

/// A connected member.
pub struct Member {
    inner: Arc<MemberInner>,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("name", &self.inner.name)
            .field("id", &self.inner.id)
            .finish()
    }
}

/// What a reconnect found and what a disconnect did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DisconnectReport {
    pub released: usize,
}

impl Member {
    /// Connect as `name`. A dead connector of the same name is cleaned up first;
    /// a failed-persistent one is reconnected (its retained locks become ours).
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
    pub fn connect(region: Arc<Region>, name: &str) -> Result<Member, ConnectError> {
        Self::connect_with(region, name, ConnectMode::Normal)
    }

    pub fn connect_with(
        region: Arc<Region>,
        name: &str,
        mode: ConnectMode,
    ) -> Result<Member, ConnectError> {
        connector::check_name(name)?;
        let me = ProcessId::current().map_err(ConnectError::Identity)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let latch = ConnectLatch::take(&region, &me, Duration::from_secs(30))?;
            let (id, generation) = match connector::choose_slot(&region, name)? {
                SlotChoice::Fresh(_) if mode == ConnectMode::Recovery => {
                    return Err(ConnectError::NotFailed(name.to_string()))
                }
                SlotChoice::Fresh(id) => (
                    id,
                    connector::occupy(&region, id, name, &me, MemberState::Active, true),
                ),
                SlotChoice::Reconnect(id) => {
                    let state = match mode {
                        ConnectMode::Normal => MemberState::Active,
                        ConnectMode::Recovery => MemberState::Recovering,
                    };
                    (id, connector::occupy(&region, id, name, &me, state, false))
                }
                SlotChoice::NeedsCleanup(id) => {
                    drop(latch);
                    if let CleanupOutcome::InProgress { .. } = cleanup_member(&region, id)? {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    if Instant::now() > deadline {
                        return Err(ConnectError::NameInUse {
                            name: name.into(),
                            pid: 0,
                        });
                    }
                    continue;
                }
            };
            drop(latch);
            return Ok(Member {
                inner: Arc::new(MemberInner {
                    region,
                    id,
                    generation,
                    name: name.to_string(),
                    next_holder: StdAtomicU64::new(1),
                }),
            });
        }
    }

    pub fn id(&self) -> u32 {
        self.inner.id
    }
    pub fn name(&self) -> &str {
        &self.inner.name
    }
    pub fn generation(&self) -> u32 {
        self.inner.generation
    }
    pub fn region(&self) -> &Arc<Region> {
        &self.inner.region
    }

    /// Count `n` transactions committed by this member's application (kept in
    /// the region, so they survive the member's death; `inspect::committed_total`).
    pub fn add_committed(&self, n: u64) {
        self.inner
            .region
            .connector_field(self.inner.id, connector::F_COMMITTED)
            .fetch_add(n, Ordering::Relaxed);
    }

    /// A holder for the calling thread (each thread takes its own).
    pub fn holder(&self) -> Result<Holder, LockError> {
        self.inner.check_still_connected()?;
        Holder::new(self.inner.clone())
    }

    /// The held records of this connector: after a reconnect, the retained
    /// locks taken back.
    pub fn held_records(&self) -> Result<Vec<RecordView>, LockError> {
        Ok(records::all_records(&self.inner.region, self.inner.id)?
            .into_iter()
            .filter(|r| r.held)
            .collect())
    }

    /// Release one held record of this connector by slot (for retained locks
    /// taken back by a reconnect; holders release their own with `unlock`).
    pub fn release_record(&self, slot: u32) -> Result<(), LockError> {
        self.inner.check_still_connected()?;
        let region = &self.inner.region;
        if slot >= region.records_per_member() {
            return Err(LockError::NotHeld(slot));
        }
        let tag = region.tag(self.inner.id, slot).load(Ordering::Acquire);
        if records::tag_state(tag) != TAG_HELD {
            return Err(LockError::NotHeld(slot));
        }
        release_slow(region, self.inner.id, slot, records::tag_entry(tag))
    }

    /// Release every lock this connector holds (after a reconnect: the retained
    /// locks taken back), entry by entry, in time linear in their number.
    /// `after_entry` runs after each lock table entry is done. Returns the
    /// number of locks released.
    /// No holder may be open (their locks would be released under them).
    pub fn release_all_held(&self, after_entry: impl FnMut()) -> Result<usize, LockError> {
        if Arc::strong_count(&self.inner) != 1 {
            return Err(LockError::HoldersOpen);
        }
        self.inner.check_still_connected()?;
        release_all(&self.inner.region, self.inner.id, after_entry)
    }

    /// Release everything this connector holds and free its slot. Every
    /// holder must have been dropped first.
    pub fn disconnect(self) -> Result<DisconnectReport, LockError> {
        if Arc::strong_count(&self.inner) != 1 {
            return Err(LockError::HoldersOpen);
        }
        self.inner.check_still_connected()?;
        let region = &self.inner.region;
        let id = self.inner.id;
        let report = DisconnectReport {
            released: release_all(region, id, || {
                crate::crash::point("disconnect.released_some")
            })?,
        };
        for b in 0..region.blocks_per_member() {
            if region
                .block_field(id, b, records::BLK_OWNER)
                .load(Ordering::Relaxed)
                != 0
            {
                records::release_block(region, id, b);
            }
        }
        let me = ProcessId::current().map_err(|_| LockError::Disconnected)?;
        let _latch = ConnectLatch::take(region, &me, Duration::from_secs(30))
            .map_err(|_| LockError::Disconnected)?;
        connector::vacate(region, id);
        Ok(report)
    }
}
