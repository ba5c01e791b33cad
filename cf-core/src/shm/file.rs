//! Creating, opening and validating the region file. Each failed check on
//! open is its own error ([`RegionError`]); nothing of the file is mapped as
//! an atomic before its header, checksum and size have been checked.

use crate::error::RegionError;
use crate::shm::layout::{self, Header, Layout};
use crate::shm::mapping::{Access, SharedMap};
use crate::shm::plexfs::{PlexDir, PlexFileError};
use crate::shm::region::{CreateOptions, Plex, Region};
use std::fs::File;
use std::io::Read;
use std::path::Path;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RegionError + '_ {
    move |source| RegionError::Io {
        path: path.to_path_buf(),
        err: source,
    }
}

impl From<PlexFileError> for RegionError {
    fn from(e: PlexFileError) -> RegionError {
        match e {
            PlexFileError::NotFound { path } => RegionError::NotFound { path },
            PlexFileError::AlreadyExists { path } => RegionError::AlreadyExists { path },
            PlexFileError::Symlink { path } => RegionError::Symlink { path },
            PlexFileError::NotRegularFile { path, .. } => RegionError::NotRegularFile { path },
            PlexFileError::ForeignOwner { path, owner, me } => {
                RegionError::ForeignOwner { path, owner, me }
            }
            other => RegionError::Untrusted(other),
        }
    }
}

/// The plex directory of a region file (its parent).
fn plex_dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Check the plex directory of a region file; a missing one means no region.
fn checked_dir(path: &Path) -> Result<PlexDir, RegionError> {
    match PlexDir::check(plex_dir_of(path)) {
        Ok(d) => Ok(d),
        Err(PlexFileError::NotFound { .. }) => Err(RegionError::NotFound { path: path.into() }),
        Err(e) => Err(RegionError::PlexDirUntrusted(e)),
    }
}

impl Region {
    /// Create a new region in `plex`. Fails if one exists (`O_EXCL`), never
    /// follows a symlink, and writes the header last so a half-made region is
    /// refused by `open` (its magic is still zero). The plex directory is
    /// made 0700 (02770 with group access) if missing, and must pass the
    /// checks of [`PlexDir::check`] (`plexfs.rs`). Sizes out of range
    /// ([`Sizes::check`](crate::Sizes::check)) are [`RegionError::BadOption`].
    pub fn create(plex: &Plex, opts: &CreateOptions) -> Result<Region, RegionError> {
        opts.sizes.check().map_err(RegionError::BadOption)?;
        let dir =
            PlexDir::ensure(&plex.dir, opts.group_access).map_err(RegionError::PlexDirUntrusted)?;
        let path = plex.region_path();
        let file = dir.create_new(&path)?;
        let layout = Layout::compute(opts.sizes);
        file.set_len(layout.total_size).map_err(io_err(&path))?;
        // The file was just created by us with O_EXCL and has the right
        // length; other processes may map it too, which is why every access
        // to the mapping after the header is through atomics.
        let map =
            SharedMap::map(&file, layout.total_size, Access::ReadWrite).map_err(io_err(&path))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let header = layout.header(now);
        let bytes = bytemuck::bytes_of(&header);
        // Magic last: write everything after it, then the magic.
        map.write_new(8, &bytes[8..]).map_err(io_err(&path))?;
        map.flush(0, bytes.len()).map_err(io_err(&path))?;
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        map.write_new(0, &bytes[..8]).map_err(io_err(&path))?;
        Ok(Region::from_mapping(map, layout, header, path))
    }

    /// Open and validate the region of `plex` ([`Plex::region_path`]) with a
    /// read-write mapping; see [`Region::open_path`].
    pub fn open(plex: &Plex) -> Result<Region, RegionError> {
        Self::open_path(&plex.region_path())
    }

    /// Open and validate the region of `plex` with a read-only mapping, for
    /// views that change nothing (`display`, `verify`): works on a region
    /// this process may only read. Any write through such a region is refused
    /// (connect, cleanup, posts) or skipped (events); see [`Region::is_read_only`].
    pub fn open_read_only(plex: &Plex) -> Result<Region, RegionError> {
        Self::open_path_with(&plex.region_path(), false)
    }

    /// Open and validate a region file with a read-write mapping. Each failed
    /// check is its own error: the plex directory (the file's parent) and
    /// the opened file must pass the [`PlexDir`] checks, then the header's
    /// magic, version and checksum, the file's size and the layout the
    /// header describes ([`Layout::from_header`]) are checked, in that
    /// order. A missing file or directory is [`RegionError::NotFound`].
    pub fn open_path(path: &Path) -> Result<Region, RegionError> {
        Self::open_path_with(path, true)
    }

    fn open_path_with(path: &Path, write: bool) -> Result<Region, RegionError> {
        let dir = checked_dir(path)?;
        // O_NOFOLLOW, O_NONBLOCK (a FIFO cannot hang us); then the opened
        // descriptor is checked: regular, one link, owner, mode.
        let mut file: File = dir
            .open(path, write)?
            .ok_or_else(|| RegionError::NotFound { path: path.into() })?;
        let actual = file.metadata().map_err(io_err(path))?.len();
        let mut raw = vec![0u8; std::mem::size_of::<Header>()];
        if actual < raw.len() as u64 {
            return Err(RegionError::TooShort {
                path: path.into(),
                actual,
                header: raw.len() as u64,
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
        // The file is a regular file of ours whose size matches the layout.
        // It may be shared with other processes and even shrunk by a hostile
        // one (`mapping.rs`); within this process every access is
        // bounds-checked against the layout and goes through atomics. A
        // read-only mapping is only loaded from (atomic loads on read-only
        // memory are allowed for lock-free sizes, see `std::sync::atomic`).
        let access = if write {
            Access::ReadWrite
        } else {
            Access::ReadOnly
        };
        let map = SharedMap::map(&file, layout.total_size, access).map_err(io_err(path))?;
        if (map.len() as u64) != layout.total_size {
            return Err(RegionError::SizeMismatch {
                path: path.into(),
                actual: map.len() as u64,
                expected: layout.total_size,
            });
        }
        Ok(Region::from_mapping(map, layout, header, path.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm::layout::Sizes;
    use crate::shm::region::REGION_FILE;
    use std::fs::OpenOptions;
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
        assert!(matches!(e, RegionError::TooShort { actual: 10, .. }), "{e}");
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
