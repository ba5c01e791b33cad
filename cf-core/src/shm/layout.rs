//! The region's layout: the header, the structure directory and the offsets of
//! every area. Everything here is computed from the header's size fields, which
//! are covered by the header checksum; `Layout::from_header` checks that the
//! areas fit in the file before anything is mapped as an atomic.
//!
//! ```text
//! offset 0        header (this struct) + structure directory   one page, checksummed
//! connectors      [ConnectorSlot; members]                     320 bytes each
//! lock structure  LockStructHeader (counters)                  one page
//! lock table      [AtomicU64; lock_entries]                    the lock words
//! restart list    header + [RequestEntry; members]             256 bytes each
//! events          header page + [Event; EVENT_CAPACITY]        128 bytes each
//! member areas    per member: block headers, tags, records     see lock/records.rs
//! ```
//!
//! The structures inside the areas are typed (`slots.rs`), pinned by size and
//! offset assertions.

use crate::error::{HeaderError, SizesError};
use bytemuck::{Pod, Zeroable};

/// "CFEMUREG" in ASCII.
pub const MAGIC: [u8; 8] = *b"CFEMUREG";
/// Bump on any change of this file or of the slot layouts (`slots.rs`).
/// 2: restart requests carry an epoch in their state word.
/// 3: a request records the generation of the connection it is for.
/// 4: URGENT record state and wait tickets (bounded bypass).
/// 5: restart requests grew to 256 bytes: a FAILED state with its reason.
/// 6: connector slots gained the liveness word and the heartbeat, the lock
/// structure page the failure detection settings.
/// 7: connector slots gained the beat period, the retained-lock refusals and
/// the sampled service times.
/// 8: a record's mode code holds the lock manager's six modes (S 0 and X 1 as
/// before, IS 2, IX 3, U 4, SIX 5) and any of them may carry the modify flag
/// (`lock/records.rs`): a version-7 program would take such a record for
/// damage, so it must refuse the region instead.
/// 9: block headers grew to 128 bytes for a holder's wait record (deadlock
/// detection), the lock structure page gained the detector's interval,
/// claim, last round and victim count.
/// 10: connector slots grew to 320 bytes for the XES contention count; the
/// lock structure's totals gained XES contention and retained refusals.
pub const LAYOUT_VERSION: u32 = 10;
/// The header and the directory live in the first page.
pub const HEADER_PAGE: u64 = 4096;
/// Connector ids are bit positions in the 32-bit share/interest mask of a lock word.
pub const MAX_MEMBERS: u32 = 32;
/// Longest resource name, in bytes.
pub const MAX_RESOURCE: usize = 64;
/// Records are handed to holders (threads) in blocks of this many slots.
#[cfg(not(loom))]
pub const BLOCK_SLOTS: u32 = 64;
/// Under loom every tag a scan reads is a scheduling point: tiny blocks.
#[cfg(loom)]
pub const BLOCK_SLOTS: u32 = 2;
/// Size of one connector slot.
pub const CONNECTOR_SLOT_SIZE: u64 = 320;
/// Size of one record body: 9 words (meta + 64 bytes of resource name).
pub const RECORD_SIZE: u64 = 72;
/// Size of one block header (owner, counters, the holder's wait record).
pub const BLOCK_HEADER_SIZE: u64 = 128;
/// Largest lock table (the tag packs the entry index in 30 bits).
pub const MAX_LOCK_ENTRIES: u32 = 1 << 30;
/// Names in the directory.
pub const DIR_ENTRIES: usize = 6;
/// Size of one restart-request list entry, and of the list's header.
pub const REQUEST_SIZE: u64 = 256;
/// Events kept in the event ring (older ones are overwritten).
#[cfg(not(loom))]
pub const EVENT_CAPACITY: u64 = 4096;
/// Events kept in the event ring under loom (a smaller ring for the models).
#[cfg(loom)]
pub const EVENT_CAPACITY: u64 = 32;
/// Size of one event.
pub const EVENT_SIZE: u64 = 128;
/// Buckets of a connector's sampled service-time histogram (`lock/service.rs`).
pub const SERVICE_BUCKETS: usize = 12;

/// Default number of lock table entries (2^20) for `cfctl create` and
/// [`Sizes::default`].
pub const DEFAULT_LOCK_ENTRIES: u32 = 1 << 20;
/// Default number of connector slots (the maximum, [`MAX_MEMBERS`]) for
/// `cfctl create` and [`Sizes::default`].
pub const DEFAULT_MEMBERS: u32 = 32;
/// Default number of record slots per member (256 blocks of
/// [`BLOCK_SLOTS`]) for `cfctl create` and [`Sizes::default`].
pub const DEFAULT_RECORDS_PER_MEMBER: u32 = 16384;

/// Kinds of named structures in the directory; the discriminant is the
/// value stored in [`DirEntry::kind`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StructureKind {
    /// The connector table: one [`CONNECTOR_SLOT_SIZE`]-byte slot per member.
    Connectors = 1,
    /// The lock structure's header page (counters, connect latch, wait
    /// ticket, failure-detection settings).
    Lock = 2,
    /// The lock table: one 8-byte lock word per entry.
    LockTable = 3,
    /// The members' record areas (block headers, tags and record bodies).
    MemberAreas = 4,
    /// The restart-request list: a header and one entry per member, each
    /// [`REQUEST_SIZE`] bytes.
    RestartList = 5,
    /// The event ring: a header page and [`EVENT_CAPACITY`] events of
    /// [`EVENT_SIZE`] bytes.
    Events = 6,
}

impl StructureKind {
    /// The name this kind has in the directory (`"connectors"`, `"lock"`,
    /// `"lock-table"`, `"member-areas"`, `"restart"`, `"events"`).
    pub fn name(self) -> &'static str {
        match self {
            StructureKind::Connectors => "connectors",
            StructureKind::Lock => "lock",
            StructureKind::LockTable => "lock-table",
            StructureKind::MemberAreas => "member-areas",
            StructureKind::RestartList => "restart",
            StructureKind::Events => "events",
        }
    }
}

/// One entry of the structure directory (40 bytes, in the header).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq, Eq)]
pub struct DirEntry {
    /// The structure's name ([`StructureKind::name`]), NUL-padded ASCII.
    pub name: [u8; 16],
    /// The structure's [`StructureKind`], as its `u32` discriminant.
    pub kind: u32,
    /// Padding; always 0.
    pub _pad: u32,
    /// Byte offset of the structure from the start of the region file.
    pub offset: u64,
    /// Size of the structure in bytes.
    pub size: u64,
}

impl DirEntry {
    /// The name up to its first NUL (all 16 bytes if there is none), with
    /// any invalid UTF-8 replaced by U+FFFD.
    pub fn name_str(&self) -> String {
        let end = self.name.iter().position(|&b| b == 0).unwrap_or(16);
        String::from_utf8_lossy(&self.name[..end]).into_owned()
    }
}

/// The region header, at offset 0 of the file. Immutable after creation;
/// covered by `checksum`. Fields are stored little-endian (the crate builds
/// only for little-endian targets).
///
/// A header read from a file is untrusted until [`Layout::from_header`]
/// accepted it (after the magic, version and checksum were checked, as
/// [`Region::open`](crate::Region::open) does).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq, Eq)]
pub struct Header {
    /// [`MAGIC`]; written last at creation, so a half-made region has zeros here.
    pub magic: [u8; 8],
    /// The layout version the region was made with ([`LAYOUT_VERSION`]).
    pub version: u32,
    /// Size of this struct in bytes (`size_of::<Header>()`).
    pub header_size: u32,
    /// Size of the whole region file in bytes ([`Layout::total_size`]).
    pub total_size: u64,
    /// Number of lock table entries ([`Sizes::lock_entries`]).
    pub lock_entries: u32,
    /// Number of connector slots ([`Sizes::members`]).
    pub members: u32,
    /// Record slots per member ([`Sizes::records_per_member`]).
    pub records_per_member: u32,
    /// Record slots per block ([`BLOCK_SLOTS`] of the program that made it).
    pub block_slots: u32,
    /// When the region was created: wall-clock nanoseconds since the Unix
    /// epoch (0 if the clock was before the epoch).
    pub created_unix_ns: u64,
    /// The structure directory: where each area is and how big it is.
    pub dir: [DirEntry; DIR_ENTRIES],
    /// [`checksum`] of this header with this field zeroed.
    pub checksum: u64,
}

/// Sizes chosen at creation. [`Sizes::check`] says whether a region can be
/// made with them; the default is `cfctl create`'s (2^20 entries, 32
/// members, 16384 records each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizes {
    /// Number of lock table entries: a power of two from 16 to 2^30
    /// ([`MAX_LOCK_ENTRIES`]). Resources hash onto them.
    pub lock_entries: u32,
    /// Number of connector slots, i.e. of members connected at once: 1 to
    /// [`MAX_MEMBERS`].
    pub members: u32,
    /// Record slots in each member's area, i.e. the most locks (held or
    /// waited for) one member can have at once: a multiple of
    /// [`BLOCK_SLOTS`] from [`BLOCK_SLOTS`] to 2^24.
    pub records_per_member: u32,
}

impl Default for Sizes {
    fn default() -> Self {
        Sizes {
            lock_entries: DEFAULT_LOCK_ENTRIES,
            members: DEFAULT_MEMBERS,
            records_per_member: DEFAULT_RECORDS_PER_MEMBER,
        }
    }
}

impl Sizes {
    /// Check the sizes against the ranges documented on each field; the
    /// error names the first bad one and its value.
    ///
    /// ```
    /// use cf_core::Sizes;
    ///
    /// assert_eq!(Sizes::default().check(), Ok(()));
    /// let ok = Sizes { lock_entries: 16, members: 1, records_per_member: 64 };
    /// assert_eq!(ok.check(), Ok(()));
    ///
    /// // Lock entries must be a power of two; the error names the bad option.
    /// let bad = Sizes { lock_entries: 1000, ..ok };
    /// assert!(bad.check().unwrap_err().to_string().contains("lock entries"));
    /// let none = Sizes { members: 0, ..ok };
    /// assert!(none.check().unwrap_err().to_string().contains("members"));
    /// assert!(Sizes { members: 33, ..ok }.check().is_err());
    /// assert!(Sizes { records_per_member: 100, ..ok }.check().is_err());
    /// ```
    pub fn check(&self) -> Result<(), SizesError> {
        let e = self.lock_entries;
        if !(16..=MAX_LOCK_ENTRIES).contains(&e) || !e.is_power_of_two() {
            return Err(SizesError::LockEntries(e));
        }
        if !(1..=MAX_MEMBERS).contains(&self.members) {
            return Err(SizesError::Members {
                got: self.members,
                max: MAX_MEMBERS,
            });
        }
        let r = self.records_per_member;
        if r < BLOCK_SLOTS || !r.is_multiple_of(BLOCK_SLOTS) || r > (1 << 24) {
            return Err(SizesError::RecordsPerMember {
                got: r,
                block: BLOCK_SLOTS,
            });
        }
        Ok(())
    }
}

/// Byte offsets of every area, derived from the sizes ([`Layout::compute`]).
/// Offsets are from the start of the region file, in bytes; areas start on
/// 4096-byte pages (the ones inside a member area on 64-byte lines).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The sizes the layout was computed from.
    pub sizes: Sizes,
    /// The connector table: `members` slots of [`CONNECTOR_SLOT_SIZE`]
    /// bytes (always [`HEADER_PAGE`], right after the header page).
    pub connectors: u64,
    /// The lock structure's header page (4096 bytes).
    pub lock_struct: u64,
    /// The lock table: `lock_entries` 8-byte lock words.
    pub lock_table: u64,
    /// The restart-request list: a header, then one entry per connector.
    pub restart_list: u64,
    /// The event ring: a header page, then `EVENT_CAPACITY` events.
    pub events: u64,
    /// The first member's area; member `m`'s is at
    /// `member_areas + m * member_area_size`.
    pub member_areas: u64,
    /// Bytes of one member's area (a multiple of 4096).
    pub member_area_size: u64,
    /// Offsets inside one member area: the block headers
    /// ([`BLOCK_HEADER_SIZE`] bytes per block of [`BLOCK_SLOTS`] records;
    /// always 0).
    pub area_blocks: u64,
    /// Offset inside one member area of the record tags (4 bytes per record).
    pub area_tags: u64,
    /// Offset inside one member area of the record bodies ([`RECORD_SIZE`]
    /// bytes per record).
    pub area_records: u64,
    /// Size of the whole region file in bytes (a multiple of 4096).
    pub total_size: u64,
}

const fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

impl Layout {
    /// Number of record blocks in one member's area
    /// (`records_per_member / BLOCK_SLOTS`).
    pub fn blocks_per_member(&self) -> u32 {
        self.sizes.records_per_member / BLOCK_SLOTS
    }

    /// The layout for `sizes`. It does not check them: call [`Sizes::check`]
    /// first (out-of-range sizes give a layout no region is made with).
    ///
    /// ```
    /// use cf_core::layout::{Layout, HEADER_PAGE};
    /// use cf_core::Sizes;
    ///
    /// let l = Layout::compute(Sizes { lock_entries: 16, members: 4, records_per_member: 256 });
    /// assert_eq!(l.connectors, HEADER_PAGE);
    /// assert_eq!(l.blocks_per_member(), 4);
    /// assert_eq!(l.total_size % 4096, 0);
    /// assert_eq!(l.total_size, l.member_areas + 4 * l.member_area_size);
    /// ```
    pub fn compute(sizes: Sizes) -> Layout {
        let connectors = HEADER_PAGE;
        let lock_struct = align_up(
            connectors + CONNECTOR_SLOT_SIZE * sizes.members as u64,
            4096,
        );
        let lock_table = lock_struct + 4096;
        let restart_list = align_up(lock_table + 8 * sizes.lock_entries as u64, 4096);
        let events = align_up(
            restart_list + REQUEST_SIZE * (1 + sizes.members as u64),
            4096,
        );
        let member_areas = events + 4096 + EVENT_SIZE * EVENT_CAPACITY;
        let r = sizes.records_per_member as u64;
        let blocks = r / BLOCK_SLOTS as u64;
        let area_blocks = 0;
        let area_tags = align_up(blocks * BLOCK_HEADER_SIZE, 64);
        let area_records = align_up(area_tags + 4 * r, 64);
        let member_area_size = align_up(area_records + RECORD_SIZE * r, 4096);
        let total_size = member_areas + member_area_size * sizes.members as u64;
        Layout {
            sizes,
            connectors,
            lock_struct,
            lock_table,
            restart_list,
            events,
            member_areas,
            member_area_size,
            area_blocks,
            area_tags,
            area_records,
            total_size,
        }
    }

    /// Build the header for these sizes, checksum included; `created_unix_ns`
    /// is stored as [`Header::created_unix_ns`].
    pub fn header(&self, created_unix_ns: u64) -> Header {
        let mut h = Header::zeroed();
        h.magic = MAGIC;
        h.version = LAYOUT_VERSION;
        h.header_size = std::mem::size_of::<Header>() as u32;
        h.total_size = self.total_size;
        h.lock_entries = self.sizes.lock_entries;
        h.members = self.sizes.members;
        h.records_per_member = self.sizes.records_per_member;
        h.block_slots = BLOCK_SLOTS;
        h.created_unix_ns = created_unix_ns;
        let dir = [
            (
                StructureKind::Connectors,
                self.connectors,
                self.lock_struct - self.connectors,
            ),
            (StructureKind::Lock, self.lock_struct, 4096),
            (
                StructureKind::LockTable,
                self.lock_table,
                8 * self.sizes.lock_entries as u64,
            ),
            (
                StructureKind::RestartList,
                self.restart_list,
                REQUEST_SIZE * (1 + self.sizes.members as u64),
            ),
            (
                StructureKind::Events,
                self.events,
                4096 + EVENT_SIZE * EVENT_CAPACITY,
            ),
            (
                StructureKind::MemberAreas,
                self.member_areas,
                self.total_size - self.member_areas,
            ),
        ];
        for (slot, (kind, offset, size)) in h.dir.iter_mut().zip(dir) {
            let mut name = [0u8; 16];
            name[..kind.name().len()].copy_from_slice(kind.name().as_bytes());
            *slot = DirEntry {
                name,
                kind: kind as u32,
                _pad: 0,
                offset,
                size,
            };
        }
        h.checksum = checksum(&h);
        h
    }

    /// Recompute the layout from a header already checked for magic, version and
    /// checksum, and check that it is the layout this program would build
    /// (sizes in range, same block size and header size, same total size and
    /// directory). The error says what does not match. It does not look at
    /// the file: the caller checks that the file is `total_size` bytes.
    pub fn from_header(h: &Header) -> Result<Layout, HeaderError> {
        let sizes = Sizes {
            lock_entries: h.lock_entries,
            members: h.members,
            records_per_member: h.records_per_member,
        };
        sizes.check()?;
        if h.block_slots != BLOCK_SLOTS {
            return Err(HeaderError::BlockSize {
                found: h.block_slots,
                expected: BLOCK_SLOTS,
            });
        }
        if h.header_size as usize != std::mem::size_of::<Header>() {
            return Err(HeaderError::HeaderSize(h.header_size));
        }
        let layout = Layout::compute(sizes);
        if layout.total_size != h.total_size {
            return Err(HeaderError::TotalSize {
                found: h.total_size,
                expected: layout.total_size,
            });
        }
        let expected = layout.header(h.created_unix_ns);
        if expected.dir != h.dir {
            return Err(HeaderError::Directory);
        }
        Ok(layout)
    }
}

/// FNV-1a 64 over the header's bytes with the checksum field zeroed (the
/// value of [`Header::checksum`]).
///
/// Kept hand-written on purpose: it is a field of the region format (a
/// different function is a new layout version), it guards one small header
/// against accidental damage rather than an adversary (the directory and
/// file checks do that), and it is five lines with no dependency in a crate
/// that is also built for loom.
pub fn checksum(h: &Header) -> u64 {
    let mut copy = *h;
    copy.checksum = 0;
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytemuck::bytes_of(&copy) {
        hash ^= b as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_layout_is_consistent() {
        let l = Layout::compute(Sizes::default());
        assert!(l.connectors >= HEADER_PAGE);
        assert!(l.lock_table >= l.lock_struct + 4096);
        assert_eq!(l.member_areas % 4096, 0);
        assert_eq!(l.total_size % 4096, 0);
        let h = l.header(7);
        assert_eq!(Layout::from_header(&h).unwrap(), l);
        assert_eq!(checksum(&h), h.checksum);
        assert!(std::mem::size_of::<Header>() as u64 <= HEADER_PAGE);
    }

    #[test]
    fn sizes_are_checked() {
        let s = Sizes {
            lock_entries: 1000,
            ..Default::default()
        };
        assert_eq!(s.check(), Err(SizesError::LockEntries(1000)));
        assert!(s.check().unwrap_err().to_string().contains("power of two"));
        let s = Sizes {
            members: 33,
            ..Default::default()
        };
        assert_eq!(
            s.check(),
            Err(SizesError::Members {
                got: 33,
                max: MAX_MEMBERS
            })
        );
        let s = Sizes {
            records_per_member: 100,
            ..Default::default()
        };
        assert_eq!(
            s.check(),
            Err(SizesError::RecordsPerMember {
                got: 100,
                block: BLOCK_SLOTS
            })
        );
    }

    #[test]
    fn tampered_header_is_rejected() {
        let l = Layout::compute(Sizes::default());
        let mut h = l.header(1);
        h.total_size += 4096;
        assert!(matches!(
            Layout::from_header(&h),
            Err(HeaderError::TotalSize { .. })
        ));
    }
}
