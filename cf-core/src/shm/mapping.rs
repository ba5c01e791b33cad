//! One checked shared mapping of a file (`MAP_SHARED`), the only place in
//! the workspace that maps a file: the region (`file.rs`), cf-node's
//! accounts file, the stress test's counter and the benchmarks' shared words
//! all go through [`SharedMap`].
//!
//! The memory is shared with other processes, which may write it at any time
//! (and a hostile one may shrink the file: an access then faults with
//! SIGBUS, which no mapping can prevent; the binaries install
//! [`install_sigbus_handler`](crate::install_sigbus_handler)). So this type
//! never hands out a reference to plain bytes: only references to
//! [`InShared`] types (atomics, and structures made of nothing but atomics),
//! each checked for bounds and alignment, and raw pointers for foreign
//! structures (a pthread mutex) that the caller passes to functions made for
//! shared memory.
//!
//! ```
//! use cf_core::shm::mapping::{Access, SharedMap};
//! use std::sync::atomic::{AtomicU64, Ordering};
//!
//! let file = tempfile::tempfile().unwrap();
//! file.set_len(4096).unwrap();
//! let map = SharedMap::map(&file, 4096, Access::ReadWrite).unwrap();
//! let w: &AtomicU64 = map.atomic(8).unwrap();
//! w.store(7, Ordering::Relaxed);
//! assert_eq!(map.atomics::<AtomicU64>(0, 2).unwrap()[1].load(Ordering::Relaxed), 7);
//! assert!(map.atomic::<AtomicU64>(4092).is_err(), "out of bounds");
//! assert!(map.atomic::<AtomicU64>(4).is_err(), "misaligned");
//! ```

use std::fs::File;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64};

/// Types that may be viewed in memory other processes write: every bit
/// pattern is a valid value, and every byte is accessed only through
/// atomics (interior mutability), so a shared reference stays sound while
/// the memory changes under it.
///
/// # Safety
/// Implement only for atomics and `#[repr(C)]` structures made of nothing
/// but atomics (no padding that is read, no plain fields).
pub unsafe trait InShared: Sync {}

// SAFETY: atomics are valid for any bits and accessed only atomically.
unsafe impl InShared for AtomicU64 {}
// SAFETY: as above.
unsafe impl InShared for AtomicU32 {}
// SAFETY: as above.
unsafe impl InShared for AtomicI64 {}

/// How a file is mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `PROT_READ | PROT_WRITE`.
    ReadWrite,
    /// `PROT_READ` only: a store through it faults, so only loads are made
    /// (the region refuses or skips every write on a read-only mapping).
    ReadOnly,
}

/// A request for memory outside the mapping or misaligned for its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "{size} bytes at offset {offset} (alignment {align}) are not inside a mapping of {len} bytes"
)]
pub struct OutOfBounds {
    /// The offset asked for.
    pub offset: usize,
    /// The number of bytes asked for.
    pub size: usize,
    /// The alignment the type needs.
    pub align: usize,
    /// The mapping's length.
    pub len: usize,
}

/// A `MAP_SHARED` mapping of the first `len` bytes of a file.
pub struct SharedMap {
    raw: memmap2::MmapRaw,
    len: usize,
    access: Access,
}

impl std::fmt::Debug for SharedMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedMap")
            .field("len", &self.len)
            .field("access", &self.access)
            .finish()
    }
}

impl SharedMap {
    /// Map the first `len` bytes of `file` (opened for reading, and for
    /// writing if `access` is [`Access::ReadWrite`]). The file must be at
    /// least `len` bytes long now (`InvalidData` otherwise); `len` must not
    /// be 0.
    pub fn map(file: &File, len: u64, access: Access) -> std::io::Result<SharedMap> {
        let actual = file.metadata()?.len();
        if len == 0 || actual < len {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("cannot map {len} bytes of a file of {actual} bytes"),
            ));
        }
        let len = usize::try_from(len).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "file too large to map")
        })?;
        let mut opts = memmap2::MmapOptions::new();
        opts.len(len);
        let raw = match access {
            Access::ReadWrite => opts.map_raw(file)?,
            Access::ReadOnly => opts.map_raw_read_only(file)?,
        };
        if raw.len() != len {
            return Err(std::io::Error::other(format!(
                "mapped {} of {len} bytes",
                raw.len()
            )));
        }
        Ok(SharedMap { raw, len, access })
    }

    /// The mapping's length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never: a mapping has at least one byte.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How it was mapped.
    pub fn access(&self) -> Access {
        self.access
    }

    /// A raw pointer to `size` bytes at `offset`, checked to lie inside the
    /// mapping and to be aligned to `align` (a power of two). For foreign
    /// structures only (a pthread mutex in shared memory): dereferencing it
    /// is the caller's `unsafe`, and valid as long as `self` lives.
    pub fn ptr(&self, offset: usize, size: usize, align: usize) -> Result<*mut u8, OutOfBounds> {
        let base = self.raw.as_mut_ptr();
        let oob = OutOfBounds {
            offset,
            size,
            align,
            len: self.len,
        };
        let end = offset.checked_add(size).ok_or(oob)?;
        if end > self.len || !align.is_power_of_two() {
            return Err(oob);
        }
        let p = base.wrapping_add(offset);
        if !(p as usize).is_multiple_of(align) {
            return Err(oob);
        }
        Ok(p)
    }

    /// `count` values of `T` at byte `offset`, checked for bounds and
    /// alignment; borrowed from the mapping.
    pub fn atomics<T: InShared>(&self, offset: usize, count: usize) -> Result<&[T], OutOfBounds> {
        let size = std::mem::size_of::<T>()
            .checked_mul(count)
            .ok_or(OutOfBounds {
                offset,
                size: usize::MAX,
                align: std::mem::align_of::<T>(),
                len: self.len,
            })?;
        let p = self.ptr(offset, size, std::mem::align_of::<T>())?;
        // SAFETY: `p` is aligned for T and `count` Ts fit in the mapping
        // (checked by `ptr`); the mapping lives as long as `&self`; T is
        // `InShared` (valid for any bits, accessed only atomically), so a
        // shared reference stays sound while other processes write it.
        Ok(unsafe { std::slice::from_raw_parts(p as *const T, count) })
    }

    /// One `T` at byte `offset` (see [`SharedMap::atomics`]).
    pub fn atomic<T: InShared>(&self, offset: usize) -> Result<&T, OutOfBounds> {
        Ok(&self.atomics::<T>(offset, 1)?[0])
    }

    /// Copy `bytes` to `offset` with plain stores: only for a file no other
    /// process uses yet (a region's header before its magic is written).
    /// Fails on a read-only mapping.
    pub fn write_new(&self, offset: usize, bytes: &[u8]) -> std::io::Result<()> {
        if self.access != Access::ReadWrite {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "the mapping is read-only",
            ));
        }
        let p = self
            .ptr(offset, bytes.len(), 1)
            .map_err(std::io::Error::other)?;
        // SAFETY: `bytes.len()` bytes at `p` are inside the writable mapping
        // (checked); the caller owns the new file, so no other process
        // reads or writes these bytes concurrently; `bytes` is not in the
        // mapping (it is a Rust value), so the ranges do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len()) };
        Ok(())
    }

    /// Flush `len` bytes at `offset` to the file (`msync`).
    pub fn flush(&self, offset: usize, len: usize) -> std::io::Result<()> {
        self.raw.flush_range(offset, len)
    }

    /// The mapping's first byte, for the region's typed areas (which check
    /// every area against the layout before use).
    pub(crate) fn base(&self) -> *mut u8 {
        self.raw.as_mut_ptr()
    }
}
