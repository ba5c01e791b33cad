//! The mapped region and its typed areas. Creating, opening and validating the
//! file is `file.rs`; this module turns the validated mapping into slices of
//! the typed structures of `slots.rs` (the only place where bytes of the
//! mapping become references) and hands them out by checked index.
//!
//! The region is untrusted input: another process (or a person with a hex
//! editor) may write anything into it at any time. Everything in it is an
//! atomic, so concurrent writers are never a data race in this process, and
//! every index or id read from it is checked by the accessors below before it
//! is used. Under `--cfg loom` the areas are allocated from loom's atomics
//! instead of a file (`Region::new_model`), so the protocols that ship are the
//! ones the models explore.

use crate::error::CorruptError;
use crate::ids::{ConnectorId, EntryIndex};
use crate::shm::layout::{Header, Layout, Sizes};
use crate::shm::slots::{
    BlockHeader, ConnectorSlot, EventHeader, EventSlot, LockHeader, RecordBody, RequestEntry,
    RequestListHeader,
};
use crate::sync::{AtomicU32, AtomicU64};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

/// File name of the region inside a plex directory.
pub const REGION_FILE: &str = "region";

/// Options for creating a region.
#[derive(Clone, Copy, Debug, Default)]
pub struct CreateOptions {
    /// The region's sizes; checked by [`Region::create`] ([`Sizes::check`]).
    pub sizes: Sizes,
    /// Create files 0660 instead of 0600 (and the directory 02770:
    /// group-writable and set-group-ID; see [`plexfs`](crate::plexfs)).
    pub group_access: bool,
}

/// A plex directory: the region, the shared data and the logs.
#[derive(Clone, Debug)]
pub struct Plex {
    /// The directory's path; its region file is [`REGION_FILE`] in it
    /// ([`Plex::region_path`]). Nothing is checked until the region is
    /// created or opened.
    pub dir: PathBuf,
}

impl Plex {
    /// `--plex DIR`, else `$CF_PLEX`, else `/dev/shm/cf-plex-<uid>`.
    pub fn resolve(explicit: Option<&Path>) -> Plex {
        let dir = match explicit {
            Some(p) => p.to_path_buf(),
            None => match std::env::var_os("CF_PLEX") {
                Some(p) if !p.is_empty() => PathBuf::from(p),
                _ => PathBuf::from(format!("/dev/shm/cf-plex-{}", nix::unistd::geteuid())),
            },
        };
        Plex { dir }
    }

    /// The path of the region file: `dir/`[`REGION_FILE`].
    pub fn region_path(&self) -> PathBuf {
        self.dir.join(REGION_FILE)
    }
}

/// A slice of typed structures inside the backing memory.
pub(crate) struct Area<T> {
    ptr: NonNull<T>,
    len: usize,
}

impl<T> Area<T> {
    /// # Safety
    /// `ptr` must point to `len` valid, aligned `T`s that live as long as the
    /// `Region` holding this area (its mapping or its model allocation).
    pub(crate) unsafe fn new(ptr: *mut T, len: usize) -> Area<T> {
        Area {
            // SAFETY: the caller guarantees a valid pointer; a valid pointer is non-null.
            ptr: unsafe { NonNull::new_unchecked(ptr) },
            len,
        }
    }

    #[inline]
    fn get(&self) -> &[T] {
        // SAFETY: `new`'s contract: valid for `len` elements as long as the
        // region (which owns the memory and this area) lives; `&self` borrows it.
        // Every field of every T is an atomic, so shared references are sound
        // even while other processes write the same memory.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

/// One member's record area.
pub(crate) struct MemberArea {
    pub(crate) blocks: Area<BlockHeader>,
    pub(crate) tags: Area<AtomicU32>,
    pub(crate) bodies: Area<RecordBody>,
}

/// The typed areas of a region.
pub(crate) struct Areas {
    pub(crate) connectors: Area<ConnectorSlot>,
    pub(crate) lock_header: Area<LockHeader>,
    pub(crate) lock_table: Area<AtomicU64>,
    pub(crate) request_header: Area<RequestListHeader>,
    pub(crate) requests: Area<RequestEntry>,
    pub(crate) event_header: Area<EventHeader>,
    pub(crate) events: Area<EventSlot>,
    pub(crate) members: Vec<MemberArea>,
}

/// What keeps the memory of the areas alive.
enum Backing {
    #[cfg(not(loom))]
    File {
        _map: crate::shm::mapping::SharedMap,
    },
    #[cfg(loom)]
    Model {
        _mem: Box<crate::shm::model::ModelMemory>,
    },
}

/// A mapped, validated region.
///
/// Made by [`Region::create`], [`Region::open`], [`Region::open_path`] or
/// [`Region::open_read_only`]; share it between threads in an
/// [`Arc`](std::sync::Arc). The sizes and layout it returns were checked
/// when it was opened; the contents of the mapping are untrusted (any
/// process that can write the file may change them at any time) and are
/// checked by every reader.
pub struct Region {
    areas: Areas,
    layout: Layout,
    header: Header,
    path: PathBuf,
    read_only: bool,
    // Dropped last: the areas point into it.
    _backing: Backing,
}

// SAFETY: the areas are shared references to atomics (Sync) in memory the
// region owns; nothing in them is tied to one thread.
unsafe impl Send for Region {}
// SAFETY: as above; all access is through atomics.
unsafe impl Sync for Region {}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("path", &self.path)
            .field("layout", &self.layout)
            .finish()
    }
}

impl Region {
    /// Build a region over a validated mapping.
    #[cfg(not(loom))]
    pub(crate) fn from_mapping(
        map: crate::shm::mapping::SharedMap,
        layout: Layout,
        header: Header,
        path: PathBuf,
    ) -> Region {
        let read_only = map.access() == crate::shm::mapping::Access::ReadOnly;
        // A read-only mapping is never written through (see `is_read_only`):
        // the pointer is `*mut` only because the areas are shared with writers.
        let base = map.base();
        assert_eq!(
            map.len() as u64,
            layout.total_size,
            "internal error: mapping size"
        );
        /// # Safety: `offset + len * size_of::<T>()` within the mapping, aligned.
        unsafe fn at<T>(base: *mut u8, offset: u64, len: u64) -> Area<T> {
            // SAFETY: the caller checked the bounds against the layout, and the
            // layout aligns every area (page or 64-byte boundaries, see
            // `Layout::compute`); T is made of atomics, valid for any bits.
            unsafe { Area::new(base.add(offset as usize) as *mut T, len as usize) }
        }
        let l = &layout;
        let s = l.sizes;
        let check = |offset: u64, bytes: u64, align: u64| {
            assert!(
                offset.is_multiple_of(align) && offset + bytes <= l.total_size,
                "internal error: area at {offset} outside the region"
            );
        };
        let sz = |n: usize| n as u64;
        use std::mem::size_of;
        check(
            l.connectors,
            s.members as u64 * sz(size_of::<ConnectorSlot>()),
            64,
        );
        check(l.lock_struct, sz(size_of::<LockHeader>()), 64);
        check(l.lock_table, 8 * s.lock_entries as u64, 64);
        check(
            l.restart_list,
            (1 + s.members as u64) * sz(size_of::<RequestEntry>()),
            64,
        );
        check(
            l.events,
            4096 + crate::shm::layout::EVENT_CAPACITY * sz(size_of::<EventSlot>()),
            64,
        );
        let bpm = l.blocks_per_member() as u64;
        let rpm = s.records_per_member as u64;
        let members = (0..s.members as u64)
            .map(|m| {
                let area = l.member_areas + l.member_area_size * m;
                check(area + l.area_blocks, bpm * sz(size_of::<BlockHeader>()), 64);
                check(area + l.area_tags, rpm * 4, 64);
                check(area + l.area_records, rpm * sz(size_of::<RecordBody>()), 8);
                // SAFETY: bounds and alignment checked just above.
                unsafe {
                    MemberArea {
                        blocks: at(base, area + l.area_blocks, bpm),
                        tags: at(base, area + l.area_tags, rpm),
                        bodies: at(base, area + l.area_records, rpm),
                    }
                }
            })
            .collect();
        // SAFETY: every area's bounds and alignment were checked above.
        let areas = unsafe {
            Areas {
                connectors: at(base, l.connectors, s.members as u64),
                lock_header: at(base, l.lock_struct, 1),
                lock_table: at(base, l.lock_table, s.lock_entries as u64),
                request_header: at(base, l.restart_list, 1),
                requests: at(
                    base,
                    l.restart_list + crate::shm::layout::REQUEST_SIZE,
                    s.members as u64,
                ),
                event_header: at(base, l.events, 1),
                events: at(base, l.events + 4096, crate::shm::layout::EVENT_CAPACITY),
                members,
            }
        };
        Region {
            areas,
            layout,
            header,
            path,
            read_only,
            _backing: Backing::File { _map: map },
        }
    }

    /// A region in loom's memory, for the models (zeroed, as a new file is).
    #[cfg(loom)]
    pub fn new_model(sizes: Sizes) -> Region {
        let layout = Layout::compute(sizes);
        let header = layout.header(0);
        let mut mem = Box::new(crate::shm::model::ModelMemory::new(&layout));
        let areas = mem.areas();
        Region {
            areas,
            layout,
            header,
            path: PathBuf::from("(loom model)"),
            read_only: false,
            _backing: Backing::Model { _mem: mem },
        }
    }

    /// The path of the region file, as it was given to create or open it
    /// (`"(loom model)"` under loom).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Was this region opened with a read-only mapping
    /// ([`Region::open_read_only`])? Then nothing may be stored into it: the
    /// operations that write (connect, cleanup, posting a request) refuse it
    /// with an error, and recording an event is skipped.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// The byte offsets of every area, computed from the header at open.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }
    /// The header as it was read and validated at open (or built at
    /// creation): a copy, so later writes to the file's header do not show.
    pub fn header(&self) -> &Header {
        &self.header
    }
    /// The sizes the region was made with (from its validated header).
    pub fn sizes(&self) -> Sizes {
        self.layout.sizes
    }

    // ---- the lock structure ----

    /// Number of lock table entries (a power of two).
    #[inline]
    pub fn lock_entries(&self) -> u32 {
        self.layout.sizes.lock_entries
    }

    /// Every entry index of the lock table.
    pub fn entry_indices(&self) -> impl Iterator<Item = EntryIndex> {
        (0..self.lock_entries()).map(EntryIndex::new)
    }

    /// The lock word of entry `e`, checked.
    #[inline]
    pub(crate) fn word(&self, e: EntryIndex) -> Result<&AtomicU64, CorruptError> {
        self.areas
            .lock_table
            .get()
            .get(e.index())
            .ok_or_else(|| CorruptError::EntryOutOfRange {
                index: e.get() as u64,
                len: self.lock_entries() as u64,
            })
    }

    /// The whole lock table (its length is a power of two).
    #[inline]
    pub(crate) fn lock_table(&self) -> &[AtomicU64] {
        self.areas.lock_table.get()
    }

    pub(crate) fn lock_header(&self) -> &LockHeader {
        &self.areas.lock_header.get()[0]
    }

    // ---- the restart-request list and the event ring ----

    pub(crate) fn request_header(&self) -> &RequestListHeader {
        &self.areas.request_header.get()[0]
    }

    /// The restart request of connector `id` (checked).
    pub(crate) fn request(&self, id: ConnectorId) -> Result<&RequestEntry, CorruptError> {
        self.areas
            .requests
            .get()
            .get(id.index())
            .ok_or_else(|| self.bad_member(id))
    }

    pub(crate) fn event_header(&self) -> &EventHeader {
        &self.areas.event_header.get()[0]
    }

    /// The event ring's slots.
    pub(crate) fn event_slots(&self) -> &[EventSlot] {
        self.areas.events.get()
    }

    // ---- connectors ----

    /// Number of connector slots (1 to
    /// [`MAX_MEMBERS`](crate::layout::MAX_MEMBERS)): connector ids are
    /// `0..members()`.
    #[inline]
    pub fn members(&self) -> u32 {
        self.layout.sizes.members
    }

    /// Every connector id of this region.
    #[inline]
    pub fn connector_ids(&self) -> impl Iterator<Item = ConnectorId> {
        ConnectorId::all(self.members())
    }

    fn bad_member(&self, id: impl Into<u32>) -> CorruptError {
        CorruptError::ConnectorOutOfRange {
            id: id.into() as u64,
            len: self.members() as u64,
        }
    }

    /// Check a connector id read from the region.
    #[inline]
    pub(crate) fn check_member(&self, id: impl Into<u32>) -> Result<ConnectorId, CorruptError> {
        let id = id.into();
        if id < self.members() {
            Ok(ConnectorId::new(id))
        } else {
            Err(self.bad_member(id))
        }
    }

    /// Connector slot `id`, checked.
    #[inline]
    pub(crate) fn connector(&self, id: ConnectorId) -> Result<&ConnectorSlot, CorruptError> {
        self.areas
            .connectors
            .get()
            .get(id.index())
            .ok_or_else(|| self.bad_member(id))
    }

    // ---- member areas ----

    /// Record slots in each member's area: slot indices are
    /// `0..records_per_member()`.
    #[inline]
    pub fn records_per_member(&self) -> u32 {
        self.layout.sizes.records_per_member
    }

    /// Record blocks in each member's area (`records_per_member()` /
    /// [`BLOCK_SLOTS`](crate::layout::BLOCK_SLOTS)).
    #[inline]
    pub fn blocks_per_member(&self) -> u32 {
        self.layout.blocks_per_member()
    }

    #[inline]
    fn member_area(&self, id: ConnectorId) -> Result<&MemberArea, CorruptError> {
        self.areas
            .members
            .get(id.index())
            .ok_or_else(|| self.bad_member(id))
    }

    /// The block headers of member `id`.
    #[inline]
    pub(crate) fn blocks(&self, id: ConnectorId) -> Result<&[BlockHeader], CorruptError> {
        Ok(self.member_area(id)?.blocks.get())
    }

    /// The record tags of member `id`.
    #[inline]
    pub(crate) fn tags(&self, id: ConnectorId) -> Result<&[AtomicU32], CorruptError> {
        Ok(self.member_area(id)?.tags.get())
    }

    /// The record bodies of member `id`.
    #[inline]
    pub(crate) fn bodies(&self, id: ConnectorId) -> Result<&[RecordBody], CorruptError> {
        Ok(self.member_area(id)?.bodies.get())
    }
}
