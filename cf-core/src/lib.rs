//! `cf-core`: a shared-memory coupling facility.
//!
//! A memory-mapped region ([`Region`]) stands in for the coupling facility of
//! a Parallel Sysplex. Member processes connect to it ([`Member`]), take locks
//! through atomic ownership words ([`Holder`]), and when one of them dies its
//! modify locks are *retained* until a peer recovers it ([`recovery`]).
//!
//! The parts, lowest first (each imports only from those above it; the test
//! `tests/layering.rs` checks it):
//! * [`ids`] and [`error`]: the index types ([`ConnectorId`], [`EntryIndex`],
//!   [`SlotIndex`]) and every error type, one per operation;
//! * `sync`: atomics, the clock and futexes (from loom under `--cfg loom`),
//!   and [`crash`], the named crash points;
//! * [`shm`]: the region's layout, its typed structures, the checked mapping
//!   ([`shm::mapping::SharedMap`]), the region file and the plex files;
//! * [`events`]: the event ring;
//! * [`connector`]: member slots, process identity, the connect latch, claims,
//!   liveness and fencing;
//! * [`lock`]: the lock word, record entries, and the latched entry protocol;
//! * [`deadlock`]: the waiting requests' wait records and the detector that
//!   breaks the cycles of the wait-for graph;
//! * [`requests`]: the restart-request list;
//! * [`recovery`]: cleaning up a dead member (retention), with its crash windows;
//! * [`member`]: the API: connect, holders (lock requests), disconnect;
//! * [`inspect`]: read-only views for the operator.
//!
//! # The life of a member
//!
//! Create a region, connect two members, take a modify lock and change the
//! data under it; the member dies before it commits; its lock is retained
//! (other members are answered "retained", never granted), a peer cleans it
//! up, and a recovery connection as the dead member backs its change out and
//! releases the lock, which the peer is then granted. (The death is faked in
//! one process with a hook for tests; `cf-node` does it for real, with a
//! write-ahead log and a separate restart-light process.)
//!
//! ```
//! use cf_core::{
//!     cleanup_member, CleanupOutcome, ConnectMode, CreateOptions, Member, MemberState, Mode,
//!     Plex, Region, TryOutcome,
//! };
//! use std::sync::Arc;
//!
//! # let dir = tempfile::tempdir().unwrap();
//! let plex = Plex { dir: dir.path().into() };
//! let region = Arc::new(Region::create(&plex, &CreateOptions::small_for_tests()).unwrap());
//! let mut balance = 100; // the data the lock protects (a file, in cf-node)
//!
//! // A takes `acct:1` to change it, changes it, and dies before committing.
//! let a = Member::connect(region.clone(), "A").unwrap();
//! let mut ha = a.holder().unwrap();
//! let TryOutcome::Granted(_) = ha.try_lock(b"acct:1", Mode::Modify).unwrap() else {
//!     panic!("free resource refused")
//! };
//! let before_image = balance;
//! balance -= 30; // uncommitted
//! let a_id = a.id();
//! cf_core::testing::fake_reused_pid(&region, a_id); // "SIGKILL"
//! std::mem::forget(ha); // a dead process runs no destructor
//! std::mem::forget(a);
//!
//! // B asks for it: the dead holder is cleaned up on the way, and its
//! // modify lock is retained, not granted.
//! let b = Member::connect(region.clone(), "B").unwrap();
//! let mut hb = b.holder().unwrap();
//! match hb.try_lock(b"acct:1", Mode::Modify).unwrap() {
//!     TryOutcome::Retained(by) => assert_eq!(by.name, "A"),
//!     other => panic!("{other:?}"),
//! }
//! assert_eq!(cleanup_member(&region, a_id).unwrap(), CleanupOutcome::AlreadyDone);
//! let state = cf_core::connector::slot_view(&region, a_id).unwrap().state;
//! assert_eq!(state, MemberState::FailedPersistent);
//!
//! // Restart light: reconnect as A in recovery mode (taking its retained
//! // locks back), back out, release, leave.
//! let light = Member::connect_with(region.clone(), "A", ConnectMode::Recovery).unwrap();
//! assert_eq!(light.held_records().unwrap().len(), 1);
//! balance = before_image;
//! assert_eq!(light.release_all_held(|| {}).unwrap(), 1);
//! light.disconnect().unwrap();
//!
//! // Now B is granted, and sees the committed value.
//! let TryOutcome::Granted(lock) = hb.try_lock(b"acct:1", Mode::Modify).unwrap() else {
//!     panic!("still refused after recovery")
//! };
//! assert_eq!(balance, 100);
//! hb.unlock(lock).unwrap();
//! drop(hb);
//! b.disconnect().unwrap();
//! ```

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
// The protocol modules' docs name the private functions that implement each
// step (read them with `cargo doc --document-private-items`).
#![allow(rustdoc::private_intra_doc_links)]

pub mod connector;
pub mod crash;
pub mod deadlock;
pub mod error;
pub mod events;
pub mod ids;
#[cfg(not(loom))]
pub mod inspect;
pub mod lock;
#[cfg(all(test, loom))]
mod loom_models;
pub mod member;
pub mod recovery;
pub mod requests;
pub mod shm;
pub(crate) mod sync;

/// The region's layout (kept at the crate root for its users).
pub use shm::layout;
/// What the product trusts in a plex directory; opening its files.
#[cfg(not(loom))]
pub use shm::plexfs;
/// The region file and its plex directory.
pub use shm::region;
/// One line instead of a silent death when a mapped file shrinks.
#[cfg(not(loom))]
pub use shm::sigbus::install_sigbus_handler;

pub use {
    connector::identity::ProcessId,
    connector::MemberState,
    error::{
        AcquireError, CleanupError, ConnectError, CorruptError, DisconnectError, HolderError,
        RecoveryStateError, RegionError, RestartRequestError, Stuck, UnlockError,
    },
    ids::{ConnectorId, EntryIndex, SlotIndex},
    layout::Sizes,
    lock::records::{BadLockMode, LockMode, Mode, Resource},
    member::holder::{Holder, HolderInfo, LockId, TryOutcome, WaitError, TRY_WAIT},
    member::{ConnectMode, DisconnectReport, Member},
    recovery::{cleanup_member, cleanup_member_as, CleanupOutcome, CleanupReport},
    region::{CreateOptions, Plex, Region},
};

impl CreateOptions {
    /// A tiny region (16 lock entries, 4 members, 256 records each) for
    /// examples and tests.
    pub fn small_for_tests() -> CreateOptions {
        CreateOptions {
            sizes: Sizes {
                lock_entries: 16,
                members: 4,
                records_per_member: 4 * layout::BLOCK_SLOTS,
            },
            group_access: false,
        }
    }
}

/// Hooks for tests that simulate what only another process (or damage) could do.
#[cfg(not(loom))]
#[doc(hidden)]
pub mod testing {
    use crate::ids::{ConnectorId, EntryIndex, SlotIndex};
    use crate::region::Region;
    use crate::sync::Ordering;

    /// Make connector `id` look like a different process with the same PID
    /// (a reused PID): its identity check then fails, as after a death.
    pub fn fake_reused_pid(region: &Region, id: ConnectorId) {
        if let Ok(c) = region.connector(id) {
            c.start_time.fetch_xor(0x5a5a_5a5a, Ordering::Relaxed);
        }
    }

    /// Has a holding waiter announced itself on `entry` (it sleeps, or is
    /// about to, until the holdings change)?
    pub fn holding_waiter_sleeps(region: &Region, entry: EntryIndex) -> bool {
        region
            .word(entry)
            .is_ok_and(|w| w.load(Ordering::Acquire) & crate::lock::word::HOLDING_WAITERS != 0)
    }

    /// The words a damage-injection test forges, from the real definitions
    /// (`lock/word.rs`, `lock/records.rs`), so tests never redefine bits.
    pub mod forge {
        use crate::ids::{ConnectorId, EntryIndex};
        use crate::lock::{records, word};

        /// Tag state: a free record slot.
        pub const TAG_FREE: u32 = records::TAG_FREE;
        /// Tag state: a record being acquired or released.
        pub const TAG_PENDING: u32 = records::TAG_PENDING;
        /// Tag state: a held record.
        pub const TAG_HELD: u32 = records::TAG_HELD;
        /// Tag state: a waiting record that may no longer be bypassed.
        pub const TAG_URGENT: u32 = records::TAG_URGENT;
        /// Lock word: mixed (latched-protocol) mode.
        pub const MIXED: u64 = word::MIXED;
        /// Lock word: a holding waiter sleeps.
        pub const HOLDING_WAITERS: u64 = word::HOLDING_WAITERS;
        /// Lock word: a latch waiter sleeps.
        pub const LATCH_WAITERS: u64 = word::LATCH_WAITERS;
        /// Lock word: the epoch's lowest bit.
        pub const EPOCH_SHIFT: u32 = word::EPOCH_SHIFT;

        /// The holder field naming connector `c` (exclusive owner in fast
        /// mode, latch holder in mixed mode).
        pub fn holder_field(c: ConnectorId) -> u64 {
            crate::lock::word::holder_field(c)
        }

        /// Connector `c`'s bit in the share / interest mask.
        pub fn bit(c: ConnectorId) -> u64 {
            crate::lock::word::bit(c)
        }

        /// A record tag: `state` (one of the `TAG_*`) on `entry`.
        pub fn tag(state: u32, entry: EntryIndex) -> u32 {
            state | entry.get()
        }

        /// The first word of a record body (length, mode code, modify flag;
        /// no wait ticket) for a resource of `len` bytes held in `mode`.
        pub fn record_meta(len: usize, mode: crate::Mode) -> u64 {
            records::meta_word(len, mode)
        }
    }

    /// The lock word of `entry` as it is now (0 if out of range).
    pub fn read_lock_word(region: &Region, entry: EntryIndex) -> crate::lock::word::Word {
        crate::lock::word::Word(region.word(entry).map_or(0, |w| w.load(Ordering::Acquire)))
    }

    /// How often a waiting request may be bypassed before it turns urgent.
    pub const BYPASS_LIMIT: u32 = crate::lock::entry::BYPASS_LIMIT;

    /// Overwrite a lock word (damage injection).
    pub fn write_lock_word(region: &Region, entry: EntryIndex, value: u64) {
        if let Ok(w) = region.word(entry) {
            w.store(value, Ordering::Relaxed);
        }
    }

    /// Overwrite the tag of a record slot (damage injection).
    pub fn write_tag(region: &Region, member: ConnectorId, slot: SlotIndex, value: u32) {
        if let Ok(t) = crate::lock::records::tag(region, member, slot.get()) {
            t.store(value, Ordering::Relaxed);
        }
    }

    /// Overwrite a connector's heartbeat word (damage injection).
    pub fn write_heartbeat(region: &Region, member: ConnectorId, value: u64) {
        if let Ok(c) = region.connector(member) {
            c.heartbeat.store(value, Ordering::Relaxed);
        }
    }

    /// A connector's heartbeat word as stored.
    pub fn read_heartbeat(region: &Region, member: ConnectorId) -> u64 {
        region
            .connector(member)
            .map_or(0, |c| c.heartbeat.load(Ordering::Relaxed))
    }

    /// Overwrite a connector's state word (damage injection).
    pub fn write_connector_state(region: &Region, member: ConnectorId, value: u64) {
        if let Ok(c) = region.connector(member) {
            c.state.store(value, Ordering::Relaxed);
        }
    }

    /// Overwrite word `i` (< 9; 0 is length/mode/flags, 1.. the resource bytes)
    /// of the body of record slot `slot` of `member` (damage injection).
    pub fn write_record_word(
        region: &Region,
        member: ConnectorId,
        slot: SlotIndex,
        i: u32,
        value: u64,
    ) {
        let Ok(bodies) = region.bodies(member) else {
            return;
        };
        if let Some(b) = bodies.get(slot.index()) {
            match i {
                0 => b.meta.store(value, Ordering::Relaxed),
                1..=8 => b.name[i as usize - 1].store(value, Ordering::Relaxed),
                _ => {}
            }
        }
    }

    /// The word `i` of the wait record in block `block` of `member`
    /// (`shm/slots.rs`, `WaitRecord`): 0 state, 1 holder, 2 request, 3
    /// conflicts, 4 since_ns, 5 victim, 6..12 cycle; `None` out of range.
    fn wait_word(
        region: &Region,
        member: ConnectorId,
        block: u32,
        i: u32,
    ) -> Option<&crate::sync::AtomicU64> {
        let w = &crate::lock::records::block(region, member, block)?.wait;
        Some(match i {
            0 => &w.state,
            1 => &w.holder,
            2 => &w.request,
            3 => &w.conflicts,
            4 => &w.since_ns,
            5 => &w.victim,
            6..=11 => &w.cycle[i as usize - 6],
            _ => return None,
        })
    }

    /// Overwrite word `i` (< 12, see [`read_wait_word`]) of the wait record
    /// in block `block` of `member` (damage injection).
    pub fn write_wait_word(region: &Region, member: ConnectorId, block: u32, i: u32, value: u64) {
        if let Some(w) = wait_word(region, member, block, i) {
            w.store(value, Ordering::Release);
        }
    }

    /// Word `i` of the wait record in block `block` of `member`: 0 state, 1
    /// holder, 2 request (`[entry:32][slot:32]`), 3 conflicts, 4 since_ns, 5
    /// victim, 6..12 cycle (0 if out of range).
    pub fn read_wait_word(region: &Region, member: ConnectorId, block: u32, i: u32) -> u64 {
        wait_word(region, member, block, i).map_or(0, |w| w.load(Ordering::Acquire))
    }

    /// The owner token of block `block` of `member` (0: free).
    pub fn block_owner(region: &Region, member: ConnectorId, block: u32) -> u64 {
        crate::lock::records::block(region, member, block)
            .map_or(0, |b| b.owner.load(Ordering::Acquire))
    }

    /// Set the connect latch to `token` (a process `ProcessId::token`, 0: free).
    pub fn set_connect_latch(region: &Region, token: u64) {
        region
            .lock_header()
            .connect_latch
            .store(token, Ordering::Relaxed);
    }

    /// Set the deadlock detector's claim word to `token` (a process
    /// `ProcessId::token`, 0: free): simulates a detector at work, or one
    /// that died in its round.
    pub fn set_deadlock_claim(region: &Region, token: u64) {
        region
            .lock_header()
            .deadlock_claim
            .store(token, Ordering::Relaxed);
    }

    /// The deadlock detector's claim word (0: free).
    pub fn deadlock_claim(region: &Region) -> u64 {
        region.lock_header().deadlock_claim.load(Ordering::Relaxed)
    }

    /// Set connector `id`'s cleanup claim word to `token` (a process
    /// `ProcessId::token`): simulates a cleaner at work.
    pub fn set_cleanup_claim(region: &Region, id: ConnectorId, token: u64) {
        if let Ok(c) = region.connector(id) {
            c.cleanup.store(token, Ordering::Relaxed);
        }
    }
}
