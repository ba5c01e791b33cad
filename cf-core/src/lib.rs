//! `cf-core`: a shared-memory coupling facility.
//!
//! A memory-mapped region ([`Region`]) stands in for the coupling facility of
//! a Parallel Sysplex. Member processes connect to it ([`Member`]), take locks
//! through atomic ownership words ([`Holder`]), and when one of them dies its
//! modify locks are *retained* until a peer recovers it ([`recovery`]).
//!
//! The parts, lowest first (each imports only from those above it):
//! * [`shm`]: the region's layout, its typed structures, the file and mapping;
//! * [`connector`]: member slots, process identity, the connect latch, claims;
//! * [`lock`]: the lock word, record entries, and the latched entry protocol;
//! * [`recovery`]: cleaning up a dead member (retention), with its crash windows;
//! * [`requests`] and [`events`]: the restart-request list and the event ring;
//! * [`member`]: the API: connect, holders (lock requests), disconnect;
//! * [`inspect`]: read-only views for the operator.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod connector;
pub mod crash;
pub mod error;
pub mod events;
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
/// The region file and its plex directory.
pub use shm::region;

pub use {
    connector::identity::ProcessId,
    connector::MemberState,
    error::{ConnectError, CorruptError, LockError, RegionError},
    layout::Sizes,
    lock::records::{Mode, Resource},
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
    use crate::region::Region;
    use crate::sync::Ordering;

    /// Make connector `id` look like a different process with the same PID
    /// (a reused PID): its identity check then fails, as after a death.
    pub fn fake_reused_pid(region: &Region, id: u32) {
        if let Ok(c) = region.connector(id) {
            c.start_time.fetch_xor(0x5a5a_5a5a, Ordering::Relaxed);
        }
    }

    /// Has a holding waiter announced itself on `entry` (it sleeps, or is
    /// about to, until the holdings change)?
    pub fn holding_waiter_sleeps(region: &Region, entry: u32) -> bool {
        region
            .word(entry)
            .is_ok_and(|w| w.load(Ordering::Acquire) & crate::lock::word::HOLDING_WAITERS != 0)
    }

    /// The lock word of `entry` as it is now (0 if out of range).
    pub fn lock_word(region: &Region, entry: u32) -> u64 {
        region.word(entry).map_or(0, |w| w.load(Ordering::Acquire))
    }

    /// How often a waiting request may be bypassed before it turns urgent.
    pub const BYPASS_LIMIT: u32 = crate::lock::entry::BYPASS_LIMIT;

    /// Overwrite a lock word (damage injection).
    pub fn write_lock_word(region: &Region, entry: u32, value: u64) {
        if let Ok(w) = region.word(entry) {
            w.store(value, Ordering::Relaxed);
        }
    }

    /// Overwrite the tag of a record slot (damage injection).
    pub fn write_tag(region: &Region, member: u32, slot: u32, value: u32) {
        if let Ok(t) = crate::lock::records::tag(region, member, slot) {
            t.store(value, Ordering::Relaxed);
        }
    }

    /// Overwrite a connector's state word (damage injection).
    pub fn write_connector_state(region: &Region, member: u32, value: u64) {
        if let Ok(c) = region.connector(member) {
            c.state.store(value, Ordering::Relaxed);
        }
    }

    /// Overwrite word `i` (< 9; 0 is length/mode/flags, 1.. the resource bytes)
    /// of the body of record slot `slot` of `member` (damage injection).
    pub fn write_record_word(region: &Region, member: u32, slot: u32, i: u32, value: u64) {
        let Ok(bodies) = region.bodies(member) else {
            return;
        };
        if let Some(b) = bodies.get(slot as usize) {
            match i {
                0 => b.meta.store(value, Ordering::Relaxed),
                1..=8 => b.name[i as usize - 1].store(value, Ordering::Relaxed),
                _ => {}
            }
        }
    }

    /// Set connector `id`'s cleanup claim word to `token` (a process
    /// `ProcessId::token`): simulates a cleaner at work.
    pub fn set_cleanup_claim(region: &Region, id: u32, token: u64) {
        if let Ok(c) = region.connector(id) {
            c.cleanup.store(token, Ordering::Relaxed);
        }
    }
}
