//! `cf-core`: a shared-memory coupling facility.
//!
//! A memory-mapped region ([`Region`]) stands in for the coupling facility of
//! a Parallel Sysplex. Member processes connect to it ([`Member`]), take locks
//! through atomic ownership words ([`Holder`]), and when one of them dies its
//! modify locks are *retained* until a peer recovers it ([`recovery`]).
//!
//! Where to read the protocols:
//! * `lockword.rs`: the lock word, its fast and mixed modes, latch, waiting;
//! * `lock.rs`: requests (fast path, the resource-level path, false contention);
//! * `recovery.rs`: cleaning up a dead member (retention), with its crash windows;
//! * `claim.rs`: the one-word claim that survives its claimer's death;
//! * `layout.rs` / `region.rs`: the region file and how it is validated.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod claim;
pub(crate) mod futex;
pub mod lockword;
#[cfg(all(test, loom))]
mod loom_models;
pub(crate) mod sync;

#[cfg(not(loom))]
pub mod connector;
#[cfg(not(loom))]
pub mod crash;
#[cfg(not(loom))]
pub mod error;
#[cfg(not(loom))]
pub mod events;
#[cfg(not(loom))]
pub mod identity;
#[cfg(not(loom))]
pub mod inspect;
#[cfg(not(loom))]
pub mod layout;
#[cfg(not(loom))]
pub mod lock;
#[cfg(not(loom))]
pub mod member;
#[cfg(not(loom))]
pub mod records;
#[cfg(not(loom))]
pub mod recovery;
#[cfg(not(loom))]
pub mod region;
#[cfg(not(loom))]
pub mod requests;

#[cfg(not(loom))]
pub use {
    connector::MemberState,
    error::{ConnectError, CorruptError, LockError, RegionError},
    identity::ProcessId,
    layout::Sizes,
    lock::Holder,
    lock::{HolderInfo, LockId, TryOutcome, WaitError},
    member::{ConnectMode, DisconnectReport, Member},
    records::{Mode, Resource},
    recovery::{cleanup_member, cleanup_member_as, CleanupOutcome, CleanupReport},
    region::{CreateOptions, Plex, Region},
};

#[cfg(not(loom))]
impl CreateOptions {
    /// A tiny region (16 lock entries, 4 members, 256 records each) for
    /// examples and tests.
    pub fn small_for_tests() -> CreateOptions {
        CreateOptions {
            sizes: Sizes {
                lock_entries: 16,
                members: 4,
                records_per_member: 256,
            },
            group_access: false,
        }
    }
}

/// Hooks for tests that simulate what only another process could do.
#[cfg(not(loom))]
#[doc(hidden)]
pub mod testing {
    use crate::region::Region;
    use crate::sync::Ordering;

    /// Make connector `id` look like a different process with the same PID
    /// (a reused PID): its identity check then fails, as after a death.
    pub fn fake_reused_pid(region: &Region, id: u32) {
        let f = region.connector_field(id, crate::connector::F_START);
        f.store(f.load(Ordering::Relaxed) ^ 0x5a5a_5a5a, Ordering::Relaxed);
    }

    /// Overwrite a lock word (damage injection).
    pub fn write_lock_word(region: &Region, entry: u32, value: u64) {
        if let Ok(w) = region.word(entry) {
            w.store(value, Ordering::Relaxed);
        }
    }

    /// Overwrite the tag of a record slot (damage injection).
    pub fn write_tag(region: &Region, member: u32, slot: u32, value: u32) {
        region.tag(member, slot).store(value, Ordering::Relaxed);
    }

    /// Overwrite a connector's state word (damage injection).
    pub fn write_connector_state(region: &Region, member: u32, value: u64) {
        region
            .connector_field(member, crate::connector::F_STATE)
            .store(value, Ordering::Relaxed);
    }

    /// Overwrite word `i` (< 9; 0 is length/mode/flags, 1.. the resource bytes)
    /// of the body of record slot `slot` of `member` (damage injection).
    pub fn write_record_word(region: &Region, member: u32, slot: u32, i: u32, value: u64) {
        region
            .record_word(member, slot, i)
            .store(value, Ordering::Relaxed);
    }
}
