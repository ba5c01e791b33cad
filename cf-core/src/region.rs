//! The region file: create, open and validate it, and hand out references to
//! the atomics inside it. This is the only module that turns bytes of the
//! mapping into typed references; every such conversion goes through
//! [`Region::atomic_at`], which checks bounds and alignment.
//!
//! The region is untrusted input: another process (or a person with a hex
//! editor) may write anything into it at any time. Everything in it is accessed
//! through atomics, so concurrent writers are never a data race; indices and
//! ids read from it are checked by the accessors below before they are used.

use crate::error::{CorruptError, RegionError};
use crate::layout::{
    self, Header, Layout, Sizes, BLOCK_HEADER_SIZE, CONNECTOR_SLOT_SIZE, RECORD_SIZE,
};
use crate::sync::{AtomicU32, AtomicU64};
use memmap2::MmapMut;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// File name of the region inside a plex directory.
pub const REGION_FILE: &str = "region";

/// Options for creating a region.
#[derive(Clone, Copy, Debug, Default)]
pub struct CreateOptions {
    pub sizes: Sizes,
    /// Create files 0660 instead of 0600 (and the directory 0770).
    pub group_access: bool,
}

/// A plex directory: the region, and later the shared data and the logs.
#[derive(Clone, Debug)]
pub struct Plex {
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

    pub fn region_path(&self) -> PathBuf {
        self.dir.join(REGION_FILE)
    }
}

/// A mapped, validated region.
pub struct Region {
    map: MmapMut,
    layout: Layout,
    header: Header,
    path: PathBuf,
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("path", &self.path)
            .field("layout", &self.layout)
            .finish()
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RegionError + '_ {
    move |source| RegionError::Io {
        path: path.to_path_buf(),
        err: source,
    }
}

/// Make the plex directory (0700, or 0770 with group access) if it is missing;
/// refuse a symlink or another user's directory.
fn ensure_plex_dir(dir: &Path, group_access: bool) -> Result<(), RegionError> {
    use std::os::unix::fs::DirBuilderExt;
    let mode = if group_access { 0o770 } else { 0o700 };
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
    {
        Ok(()) => {}
        Err(source) => {
            return Err(RegionError::PlexDir {
                path: dir.into(),
                err: source,
            })
        }
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|source| RegionError::PlexDir {
        path: dir.into(),
        err: source,
    })?;
    if meta.file_type().is_symlink() {
        return Err(RegionError::Symlink { path: dir.into() });
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(RegionError::ForeignOwner {
            path: dir.into(),
            owner: meta.uid(),
            me,
        });
    }
    Ok(())
}

impl Region {
    /// Create a new region in `plex`. Fails if one exists (`O_EXCL`), never
    /// follows a symlink, and writes the header last so a half-made region is
    /// refused by `open` (its magic is still zero).
    pub fn create(plex: &Plex, opts: &CreateOptions) -> Result<Region, RegionError> {
        opts.sizes.check().map_err(RegionError::BadOption)?;
        ensure_plex_dir(&plex.dir, opts.group_access)?;
        let path = plex.region_path();
        let mode = if opts.group_access { 0o660 } else { 0o600 };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => {
                    RegionError::AlreadyExists { path: path.clone() }
                }
                _ => RegionError::Io {
                    path: path.clone(),
                    err: e,
                },
            })?;
        let layout = Layout::compute(opts.sizes);
        file.set_len(layout.total_size).map_err(io_err(&path))?;
        // SAFETY: the file was just created by us with O_EXCL and has the right
        // length; other processes may map it too, which is why every access to
        // the mapping after the header is through atomics.
        let mut map = unsafe { MmapMut::map_mut(&file) }.map_err(io_err(&path))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let header = layout.header(now);
        let bytes = bytemuck::bytes_of(&header);
        // Magic last: write everything after it, then the magic.
        map[8..bytes.len()].copy_from_slice(&bytes[8..]);
        map.flush_range(0, bytes.len()).map_err(io_err(&path))?;
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        map[..8].copy_from_slice(&bytes[..8]);
        Ok(Region {
            map,
            layout,
            header,
            path,
        })
    }

    /// Open and validate the region of `plex`.
    pub fn open(plex: &Plex) -> Result<Region, RegionError> {
        Self::open_path(&plex.region_path())
    }

    /// Open and validate a region file. Each failed check is its own error.
    pub fn open_path(path: &Path) -> Result<Region, RegionError> {
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RegionError::NotFound { path: path.into() })
            }
            Err(e) => {
                return Err(RegionError::Io {
                    path: path.into(),
                    err: e,
                })
            }
        };
        if meta.file_type().is_symlink() {
            return Err(RegionError::Symlink { path: path.into() });
        }
        if !meta.file_type().is_file() {
            return Err(RegionError::NotRegularFile { path: path.into() });
        }
        let mut file: File = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::ELOOP) {
                    RegionError::Symlink { path: path.into() }
                } else {
                    RegionError::Io {
                        path: path.into(),
                        err: e,
                    }
                }
            })?;
        // Check the file we opened, not the name (it may have been swapped).
        let meta = file.metadata().map_err(io_err(path))?;
        if !meta.file_type().is_file() {
            return Err(RegionError::NotRegularFile { path: path.into() });
        }
        let me = nix::unistd::geteuid().as_raw();
        if meta.uid() != me {
            return Err(RegionError::ForeignOwner {
                path: path.into(),
                owner: meta.uid(),
                me,
            });
        }
        let actual = meta.len();
        let mut raw = vec![0u8; std::mem::size_of::<Header>()];
        if actual < raw.len() as u64 {
            return Err(RegionError::SizeMismatch {
                path: path.into(),
                actual,
                expected: layout::HEADER_PAGE,
            });
        }
        file.read_exact(&mut raw).map_err(io_err(path))?;
        let header: Header = bytemuck::pod_read_unaligned(&raw);
        if header.magic != layout::MAGIC {
            return Err(RegionError::BadMagic { path: path.into() });
        }
        if header.version != layout::LAYOUT_VERSION {
            return Err(RegionError::BadVersion {
                path: path.into(),
                found: header.version,
                expected: layout::LAYOUT_VERSION,
            });
        }
        let computed = layout::checksum(&header);
        if computed != header.checksum {
            return Err(RegionError::BadChecksum {
                path: path.into(),
                stored: header.checksum,
                computed,
            });
        }
        if actual != header.total_size {
            return Err(RegionError::SizeMismatch {
                path: path.into(),
                actual,
                expected: header.total_size,
            });
        }
        let layout = Layout::from_header(&header).map_err(|what| RegionError::BadHeader {
            path: path.into(),
            what,
        })?;
        // SAFETY: the file is a regular file of ours whose size matches the
        // layout. It may be shared with other processes and even shrunk by a
        // hostile one (then an access faults with SIGBUS, which no mapping can
        // prevent); within this process every access is bounds-checked against
        // the layout and goes through atomics.
        let map = unsafe { MmapMut::map_mut(&file) }.map_err(io_err(path))?;
        if (map.len() as u64) != layout.total_size {
            return Err(RegionError::SizeMismatch {
                path: path.into(),
                actual: map.len() as u64,
                expected: layout.total_size,
            });
        }
        Ok(Region {
            map,
            layout,
            header,
            path: path.into(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn layout(&self) -> &Layout {
        &self.layout
    }
    pub fn header(&self) -> &Header {
        &self.header
    }
    pub fn sizes(&self) -> Sizes {
        self.layout.sizes
    }
    pub fn base_ptr(&self) -> *const u8 {
        self.map.as_ptr()
    }

    /// The one place where bytes of the mapping become an atomic. Panics only on
    /// an internal bug (offsets come from the checked layout, never from the
    /// region's contents).
    #[inline]
    fn atomic_at<T>(&self, offset: u64) -> &T {
        let size = std::mem::size_of::<T>() as u64;
        assert!(
            offset % size == 0 && offset + size <= self.map.len() as u64,
            "internal error: atomic at {offset} outside the region"
        );
        // SAFETY: the offset is in bounds and aligned for T (the mapping is
        // page-aligned and offset is a multiple of T's size, which equals its
        // alignment for AtomicU32/AtomicU64). T is an atomic integer, valid for
        // any bit pattern, and the mapping lives as long as &self.
        unsafe { &*(self.map.as_ptr().add(offset as usize) as *const T) }
    }

    // ---- the lock structure ----

    /// Number of lock table entries (a power of two).
    #[inline]
    pub fn lock_entries(&self) -> u32 {
        self.layout.sizes.lock_entries
    }

    /// The lock word of entry `e`, checked.
    #[inline]
    pub(crate) fn word(&self, e: u32) -> Result<&AtomicU64, CorruptError> {
        if e >= self.lock_entries() {
            return Err(CorruptError::EntryOutOfRange {
                index: e as u64,
                len: self.lock_entries() as u64,
            });
        }
        Ok(self.atomic_at(self.layout.lock_table + 8 * e as u64))
    }

    /// The lock word of the entry for a hash (masked into range, so infallible).
    #[inline]
    pub(crate) fn word_for_hash(&self, hash: u64) -> (u32, &AtomicU64) {
        let e = (hash & (self.lock_entries() as u64 - 1)) as u32;
        (e, self.atomic_at(self.layout.lock_table + 8 * e as u64))
    }

    /// Structure-wide counter `i` (0 requests, 1 contention, 2 false contention,
    /// 3 transactions committed by applications)
    /// folded in from connectors that disconnected.
    pub(crate) fn lock_counter(&self, i: u32) -> &AtomicU64 {
        assert!(i < 4);
        self.atomic_at(self.layout.lock_struct + 8 * i as u64)
    }

    /// The connect latch: token of the process changing the connector table.
    pub(crate) fn connect_latch(&self) -> &AtomicU64 {
        self.atomic_at(self.layout.lock_struct + 64)
    }

    // ---- the restart-request list and the event ring ----

    /// Word `field` (< 8) of the restart list header.
    #[inline]
    pub(crate) fn list_header(&self, field: u32) -> &AtomicU64 {
        assert!(field < 8);
        self.atomic_at(self.layout.restart_list + 8 * field as u64)
    }

    /// The list's 32-bit sequence word (futex-waited on by every member).
    #[inline]
    pub(crate) fn list_sequence(&self) -> &AtomicU32 {
        self.atomic_at(self.layout.restart_list + 8 * 7)
    }

    /// Word `field` (< 8) of the restart request for connector `id` (checked by caller).
    #[inline]
    pub(crate) fn request_field(&self, id: u32, field: u32) -> &AtomicU64 {
        assert!(id < self.members() && field < 16);
        self.atomic_at(
            self.layout.restart_list + layout::REQUEST_SIZE * (1 + id as u64) + 8 * field as u64,
        )
    }

    /// Word `field` (< 8) of the event ring header.
    #[inline]
    pub(crate) fn events_header(&self, field: u32) -> &AtomicU64 {
        assert!(field < 8);
        self.atomic_at(self.layout.events + 8 * field as u64)
    }

    /// Word `field` (< 16) of event ring slot `slot` (< EVENT_CAPACITY).
    #[inline]
    pub(crate) fn event_field(&self, slot: u64, field: u32) -> &AtomicU64 {
        assert!(slot < layout::EVENT_CAPACITY && (field as u64) < layout::EVENT_SIZE / 8);
        self.atomic_at(self.layout.events + 4096 + layout::EVENT_SIZE * slot + 8 * field as u64)
    }

    // ---- connectors ----

    #[inline]
    pub fn members(&self) -> u32 {
        self.layout.sizes.members
    }

    /// Check a connector id read from the region.
    #[inline]
    pub(crate) fn check_member(&self, id: u32) -> Result<u32, CorruptError> {
        if id < self.members() {
            Ok(id)
        } else {
            Err(CorruptError::ConnectorOutOfRange {
                id: id as u64,
                len: self.members() as u64,
            })
        }
    }

    /// Field `field` (a word index < 32) of connector slot `id`; `id` must be checked.
    #[inline]
    pub(crate) fn connector_field(&self, id: u32, field: u32) -> &AtomicU64 {
        assert!(id < self.members() && (field as u64) < CONNECTOR_SLOT_SIZE / 8);
        self.atomic_at(self.layout.connectors + CONNECTOR_SLOT_SIZE * id as u64 + 8 * field as u64)
    }

    // ---- member areas ----

    #[inline]
    pub fn records_per_member(&self) -> u32 {
        self.layout.sizes.records_per_member
    }

    #[inline]
    pub fn blocks_per_member(&self) -> u32 {
        self.layout.blocks_per_member()
    }

    #[inline]
    fn area(&self, id: u32) -> u64 {
        assert!(id < self.members());
        self.layout.member_areas + self.layout.member_area_size * id as u64
    }

    /// Word `field` (< 8) of block header `block` of member `id`.
    #[inline]
    pub(crate) fn block_field(&self, id: u32, block: u32, field: u32) -> &AtomicU64 {
        assert!(block < self.blocks_per_member() && field < 8);
        self.atomic_at(
            self.area(id)
                + self.layout.area_blocks
                + BLOCK_HEADER_SIZE * block as u64
                + 8 * field as u64,
        )
    }

    /// The tag of record slot `slot` of member `id`.
    #[inline]
    pub(crate) fn tag(&self, id: u32, slot: u32) -> &AtomicU32 {
        assert!(slot < self.records_per_member());
        self.atomic_at(self.area(id) + self.layout.area_tags + 4 * slot as u64)
    }

    /// Word `i` (< 9) of the body of record slot `slot` of member `id`.
    #[inline]
    pub(crate) fn record_word(&self, id: u32, slot: u32, i: u32) -> &AtomicU64 {
        assert!(slot < self.records_per_member() && (i as u64) < RECORD_SIZE / 8);
        self.atomic_at(
            self.area(id) + self.layout.area_records + RECORD_SIZE * slot as u64 + 8 * i as u64,
        )
    }

    /// Raw bytes of the header page (for tests that damage a region).
    pub fn header_bytes(&self) -> &[u8] {
        &self.map[..std::mem::size_of::<Header>()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};

    fn small() -> CreateOptions {
        CreateOptions {
            sizes: Sizes {
                lock_entries: 16,
                members: 4,
                records_per_member: 64,
            },
            group_access: false,
        }
    }

    #[test]
    fn create_then_open_and_refuse_second_create() {
        let dir = tempfile::tempdir().unwrap();
        let plex = Plex {
            dir: dir.path().join("p"),
        };
        let r = Region::create(&plex, &small()).unwrap();
        assert_eq!(r.lock_entries(), 16);
        let meta = std::fs::metadata(plex.region_path()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        drop(r);
        let r = Region::open(&plex).unwrap();
        assert_eq!(r.members(), 4);
        assert!(matches!(
            Region::create(&plex, &small()),
            Err(RegionError::AlreadyExists { .. })
        ));
    }

    fn damaged(f: impl FnOnce(&mut File)) -> RegionError {
        let dir = tempfile::tempdir().unwrap();
        let plex = Plex {
            dir: dir.path().to_path_buf(),
        };
        drop(Region::create(&plex, &small()).unwrap());
        let mut file = OpenOptions::new()
            .write(true)
            .open(plex.region_path())
            .unwrap();
        f(&mut file);
        drop(file);
        Region::open(&plex).unwrap_err()
    }

    #[test]
    fn each_damage_has_its_own_error() {
        let e = damaged(|f| f.write_all(b"NOTACF!!").unwrap());
        assert!(matches!(e, RegionError::BadMagic { .. }), "{e}");
        let e = damaged(|f| {
            f.seek(SeekFrom::Start(8)).unwrap();
            f.write_all(&99u32.to_le_bytes()).unwrap();
        });
        assert!(
            matches!(e, RegionError::BadVersion { found: 99, .. }),
            "{e}"
        );
        let e = damaged(|f| {
            // lock_entries lives at offset 24.
            f.seek(SeekFrom::Start(24)).unwrap();
            f.write_all(&32u32.to_le_bytes()).unwrap();
        });
        assert!(matches!(e, RegionError::BadChecksum { .. }), "{e}");
        let e = damaged(|f| {
            let len = f.metadata().unwrap().len();
            f.set_len(len / 2).unwrap();
        });
        assert!(matches!(e, RegionError::SizeMismatch { .. }), "{e}");
        let e = damaged(|f| f.set_len(10).unwrap());
        assert!(matches!(e, RegionError::SizeMismatch { .. }), "{e}");
    }

    #[test]
    fn symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let real = Plex {
            dir: dir.path().join("real"),
        };
        drop(Region::create(&real, &small()).unwrap());
        let fake = dir.path().join("fake");
        std::fs::create_dir(&fake).unwrap();
        std::os::unix::fs::symlink(real.region_path(), fake.join(REGION_FILE)).unwrap();
        let e = Region::open(&Plex { dir: fake.clone() }).unwrap_err();
        assert!(matches!(e, RegionError::Symlink { .. }), "{e}");
        // Nor does create follow a dangling symlink.
        let dangling = dir.path().join("d");
        std::fs::create_dir(&dangling).unwrap();
        std::os::unix::fs::symlink(dir.path().join("nowhere"), dangling.join(REGION_FILE)).unwrap();
        let e = Region::create(&Plex { dir: dangling }, &small()).unwrap_err();
        assert!(
            matches!(
                e,
                RegionError::AlreadyExists { .. } | RegionError::Io { .. }
            ),
            "{e}"
        );
        assert!(!dir.path().join("nowhere").exists());
    }

    #[test]
    fn missing_region_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let e = Region::open(&Plex {
            dir: dir.path().into(),
        })
        .unwrap_err();
        assert!(matches!(e, RegionError::NotFound { .. }));
    }
}
