//! Creating, opening and validating the region file. Each failed check on
//! open is its own error ([`RegionError`]); nothing of the file is mapped as
//! an atomic before its header, checksum and size have been checked.

use crate::error::RegionError;
use crate::shm::layout::{self, Header, Layout};
use crate::shm::region::{CreateOptions, Plex, Region};
use memmap2::MmapMut;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

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
        Ok(Region::from_mapping(map, layout, header, path))
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
        Ok(Region::from_mapping(map, layout, header, path.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm::layout::Sizes;
    use crate::shm::region::REGION_FILE;
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
