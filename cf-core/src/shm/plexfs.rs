//! The files of a plex directory, and what this product trusts there.
//!
//! Everything in a plex directory (the region, the accounts file, the
//! members' logs and history files) is read by processes that act on it: a
//! log is *backed out into the data*. So a file is used only if it can only
//! have been written by someone the plex trusts:
//!
//! * **The directory** is not a symlink, is a directory, is owned by this
//!   user, and nobody else can write it (create, replace or rename files in
//!   it). The one exception is a plex made with the group mode
//!   (`cfctl create --group-mode`): its directory is `02770` (group-writable
//!   and set-group-ID, so every file made in it gets the plex's group). Then
//!   the directory may belong to another user of that group, and the group
//!   is trusted as much as the owner: any member of it can write every file.
//!   A group-writable directory without the set-group-ID bit was not made by
//!   `create --group-mode` and is refused; a directory that *others* can
//!   write (e.g. mode 1777) is always refused.
//! * **A file** is opened with `O_NOFOLLOW` (a symlink is refused),
//!   `O_NONBLOCK` (a FIFO planted at the name cannot hang the open),
//!   `O_CLOEXEC`, and created only with `O_CREAT|O_EXCL` (never over
//!   something that appeared meanwhile), its mode set explicitly whatever
//!   the umask (0600, or 0660 in a group-mode plex). Then the *opened
//!   descriptor* is checked: a regular file, exactly one link (a hard link
//!   to a file elsewhere is refused), owned by this user (or, in a
//!   group-mode plex, by the plex's group), and not writable by others (nor
//!   by the group outside the group mode).
//!
//! What is not checked: the directories above the plex directory (whoever
//! can rename those can replace the plex; `/dev/shm` is sticky, so only the
//! plex's owner can rename it there), and the *content* of the files, which
//! every reader checks on its own (layout, checksums, ranges).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode bits of a group-mode plex directory: set-group-ID and rwx for owner and group.
pub const GROUP_DIR_MODE: u32 = 0o2770;
/// Mode of a plex directory without the group mode.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

pub use crate::error::PlexFileError;

impl PlexFileError {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PlexFileError + '_ {
        move |err| PlexFileError::Io {
            path: path.into(),
            err,
        }
    }
}

/// What kind of file a mode names (for messages).
fn kind_of(ft: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_dir() {
        "directory"
    } else if ft.is_symlink() {
        "symbolic link"
    } else if ft.is_fifo() {
        "FIFO"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_char_device() {
        "character device"
    } else if ft.is_file() {
        "regular file"
    } else {
        "special file"
    }
}

/// Is this process a member of group `gid`?
fn in_group(gid: u32) -> bool {
    if nix::unistd::getegid().as_raw() == gid {
        return true;
    }
    nix::unistd::getgroups().is_ok_and(|g| g.iter().any(|g| g.as_raw() == gid))
}

/// A checked plex directory: every file of the plex is opened through it.
/// It remembers the directory's group and whether it is a group-mode plex,
/// which decide the modes of new files and what an opened file may be.
#[derive(Clone, Debug)]
pub struct PlexDir {
    path: PathBuf,
    gid: u32,
    group_mode: bool,
}

impl PlexDir {
    /// Check an existing plex directory (see the module docs): not a
    /// symlink, a directory, not writable by others, group-writable only
    /// with the set-group-ID bit (the group mode), and owned by this user
    /// (in group mode, owned by anyone if its group is one this process is in).
    pub fn check(dir: &Path) -> Result<PlexDir, PlexFileError> {
        let meta = match std::fs::symlink_metadata(dir) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(PlexFileError::NotFound { path: dir.into() })
            }
            Err(e) => return Err(PlexFileError::io(dir)(e)),
        };
        if meta.file_type().is_symlink() {
            return Err(PlexFileError::Symlink { path: dir.into() });
        }
        if !meta.is_dir() {
            return Err(PlexFileError::NotDirectory { path: dir.into() });
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o002 != 0 {
            return Err(PlexFileError::Writable {
                path: dir.into(),
                mode,
                who: "every user",
            });
        }
        let group_mode = mode & 0o2020 == 0o2020;
        if mode & 0o020 != 0 && !group_mode {
            return Err(PlexFileError::Writable {
                path: dir.into(),
                mode,
                who: "its group, but it was not made with --group-mode (mode 2770)",
            });
        }
        let me = nix::unistd::geteuid().as_raw();
        if meta.uid() != me && !(group_mode && in_group(meta.gid())) {
            return Err(PlexFileError::ForeignOwner {
                path: dir.into(),
                owner: meta.uid(),
                me,
            });
        }
        Ok(PlexDir {
            path: dir.into(),
            gid: meta.gid(),
            group_mode,
        })
    }

    /// Make the plex directory if it is missing (parents too), mode 0700 or
    /// 02770 set explicitly whatever the umask, then check it. An existing
    /// directory is checked as it is (a group-mode request does not change it).
    pub fn ensure(dir: &Path, group_mode: bool) -> Result<PlexDir, PlexFileError> {
        use std::os::unix::fs::DirBuilderExt;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .map_err(PlexFileError::io(parent))?;
        }
        let mode = if group_mode {
            GROUP_DIR_MODE
        } else {
            PRIVATE_DIR_MODE
        };
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {
                // Made by us just now (0700 under any umask): set the real mode.
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
                    .map_err(PlexFileError::io(dir))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(PlexFileError::io(dir)(e)),
        }
        Self::check(dir)
    }

    /// The directory's path, as given to [`PlexDir::check`] or
    /// [`PlexDir::ensure`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Was the plex made with the group mode (directory 02770)?
    pub fn group_mode(&self) -> bool {
        self.group_mode
    }

    /// The mode new files of this plex get: 0660 in group mode, else 0600.
    pub fn file_mode(&self) -> u32 {
        if self.group_mode {
            0o660
        } else {
            0o600
        }
    }

    /// The mode new directories of this plex (`history/`) get.
    pub fn dir_mode(&self) -> u32 {
        if self.group_mode {
            GROUP_DIR_MODE
        } else {
            PRIVATE_DIR_MODE
        }
    }

    /// A directory inside the plex (`history/`), checked by the same rules
    /// (its group mode is the plex's). `None` if it does not exist.
    pub fn subdir(&self, name: &str) -> Result<Option<PlexDir>, PlexFileError> {
        let path = self.path.join(name);
        match PlexDir::check(&path) {
            // A group-writable directory in a private plex would let the
            // group rename or delete the files a private plex trusts.
            Ok(d) if d.group_mode && !self.group_mode => Err(PlexFileError::Writable {
                path,
                mode: d.dir_mode(),
                who: "its group, in a private plex",
            }),
            Ok(d) => Ok(Some(d)),
            Err(PlexFileError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Make a directory inside the plex (mode set explicitly), or check the
    /// existing one.
    pub fn ensure_subdir(&self, name: &str) -> Result<PlexDir, PlexFileError> {
        use std::os::unix::fs::DirBuilderExt;
        let path = self.path.join(name);
        match std::fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(self.dir_mode()))
                    .map_err(PlexFileError::io(&path))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(PlexFileError::io(&path)(e)),
        }
        self.subdir(name)?.ok_or(PlexFileError::NotFound { path })
    }

    /// Check an opened descriptor of plex file `path` (see the module docs);
    /// returns its metadata. `path` is only used in the error.
    pub fn check_file(&self, file: &File, path: &Path) -> Result<std::fs::Metadata, PlexFileError> {
        let meta = file.metadata().map_err(PlexFileError::io(path))?;
        if !meta.file_type().is_file() {
            return Err(PlexFileError::NotRegularFile {
                path: path.into(),
                kind: kind_of(meta.file_type()),
            });
        }
        if meta.nlink() != 1 {
            return Err(PlexFileError::HardLinks {
                path: path.into(),
                links: meta.nlink(),
            });
        }
        let me = nix::unistd::geteuid().as_raw();
        if meta.uid() != me {
            if !self.group_mode {
                return Err(PlexFileError::ForeignOwner {
                    path: path.into(),
                    owner: meta.uid(),
                    me,
                });
            }
            if meta.gid() != self.gid {
                return Err(PlexFileError::ForeignGroup {
                    path: path.into(),
                    group: meta.gid(),
                    plex_group: self.gid,
                });
            }
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o002 != 0 {
            return Err(PlexFileError::Writable {
                path: path.into(),
                mode,
                who: "every user",
            });
        }
        if mode & 0o020 != 0 && !self.group_mode {
            return Err(PlexFileError::Writable {
                path: path.into(),
                mode,
                who: "its group in a plex made without --group-mode",
            });
        }
        Ok(meta)
    }

    fn options(write: bool) -> OpenOptions {
        let mut o = OpenOptions::new();
        o.read(true)
            .write(write)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK);
        o
    }

    fn append_options() -> OpenOptions {
        let mut o = Self::options(true);
        o.append(true);
        o
    }

    fn map_open_err(path: &Path, e: std::io::Error) -> PlexFileError {
        match e.raw_os_error() {
            Some(libc::ELOOP) => PlexFileError::Symlink { path: path.into() },
            Some(libc::ENOENT) => PlexFileError::NotFound { path: path.into() },
            Some(libc::EEXIST) => PlexFileError::AlreadyExists { path: path.into() },
            // Opening a directory for writing.
            Some(libc::EISDIR) => PlexFileError::NotRegularFile {
                path: path.into(),
                kind: "directory",
            },
            _ => PlexFileError::Io {
                path: path.into(),
                err: e,
            },
        }
    }

    /// Open existing plex file `path` (read-only, or read-write), checked.
    /// `Ok(None)` if there is none.
    pub fn open(&self, path: &Path, write: bool) -> Result<Option<File>, PlexFileError> {
        self.open_with(path, Self::options(write))
    }

    fn open_with(&self, path: &Path, o: OpenOptions) -> Result<Option<File>, PlexFileError> {
        match o.open(path) {
            Ok(f) => {
                self.check_file(&f, path)?;
                Ok(Some(f))
            }
            Err(e) => match Self::map_open_err(path, e) {
                PlexFileError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    /// Create plex file `path` (`O_CREAT|O_EXCL|O_NOFOLLOW`, read-write), its
    /// mode set explicitly to [`PlexDir::file_mode`] whatever the umask.
    pub fn create_new(&self, path: &Path) -> Result<File, PlexFileError> {
        self.create_with(path, Self::options(true))
    }

    fn create_with(&self, path: &Path, mut o: OpenOptions) -> Result<File, PlexFileError> {
        let f = o
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| Self::map_open_err(path, e))?;
        f.set_permissions(std::fs::Permissions::from_mode(self.file_mode()))
            .map_err(PlexFileError::io(path))?;
        self.check_file(&f, path)?;
        Ok(f)
    }

    /// Open plex file `path` for reading and appending (`O_APPEND`: every
    /// write goes to the end), creating it (`O_EXCL`) if missing.
    pub fn open_or_create(&self, path: &Path) -> Result<File, PlexFileError> {
        for _ in 0..8 {
            if let Some(f) = self.open_with(path, Self::append_options())? {
                return Ok(f);
            }
            match self.create_with(path, Self::append_options()) {
                Ok(f) => return Ok(f),
                // Made by someone else in between: open theirs (checked).
                Err(PlexFileError::AlreadyExists { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(PlexFileError::AlreadyExists { path: path.into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plex() -> (tempfile::TempDir, PlexDir) {
        let t = tempfile::tempdir().unwrap();
        let d = PlexDir::ensure(&t.path().join("p"), false).unwrap();
        (t, d)
    }

    #[test]
    fn world_or_group_writable_directories_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("p");
        std::fs::create_dir(&p).unwrap();
        for (mode, ok) in [
            (0o1777, false),
            (0o777, false),
            (0o770, false),
            (0o2770, true),
            (0o755, true),
        ] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            let r = PlexDir::check(&p);
            assert_eq!(r.is_ok(), ok, "mode {mode:o}: {r:?}");
        }
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o2770)).unwrap();
        assert!(PlexDir::check(&p).unwrap().group_mode());
    }

    #[test]
    fn a_group_subdirectory_of_a_private_plex_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("p");
        std::fs::create_dir(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
        let sub = p.join("history");
        std::fs::create_dir(&sub).unwrap();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o2770)).unwrap();
        let plex = PlexDir::check(&p).unwrap();
        assert!(!plex.group_mode());
        let r = plex.subdir("history");
        assert!(matches!(r, Err(PlexFileError::Writable { .. })), "{r:?}");
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(!plex.subdir("history").unwrap().unwrap().group_mode());
    }

    #[test]
    fn created_modes_ignore_the_umask() {
        let t = tempfile::tempdir().unwrap();
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
        let d = PlexDir::ensure(&t.path().join("g"), true);
        let f = d
            .as_ref()
            .map(|d| d.create_new(&d.path().join("f")).is_ok());
        nix::sys::stat::umask(old);
        assert!(f.unwrap());
        let d = d.unwrap();
        let m = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(m(d.path()), 0o2770);
        assert_eq!(m(&d.path().join("f")), 0o660);
        assert_eq!(m(d.ensure_subdir("h").unwrap().path()), 0o2770);
    }

    #[test]
    fn links_fifos_and_symlinks_are_refused_on_the_descriptor() {
        let (_t, d) = plex();
        let f = d.path().join("f");
        d.create_new(&f).unwrap();
        std::fs::hard_link(&f, d.path().join("g")).unwrap();
        assert!(matches!(
            d.open(&f, false),
            Err(PlexFileError::HardLinks { links: 2, .. })
        ));
        let fifo = d.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(matches!(
            d.open(&fifo, false),
            Err(PlexFileError::NotRegularFile { kind: "FIFO", .. })
        ));
        assert!(matches!(
            d.open_or_create(&fifo),
            Err(PlexFileError::NotRegularFile { kind: "FIFO", .. })
        ));
        let link = d.path().join("l");
        std::os::unix::fs::symlink("/etc/passwd", &link).unwrap();
        assert!(matches!(
            d.open(&link, false),
            Err(PlexFileError::Symlink { .. })
        ));
        assert!(matches!(
            d.create_new(&link),
            Err(PlexFileError::AlreadyExists { .. })
        ));
        assert!(d.open(&d.path().join("missing"), false).unwrap().is_none());
    }

    #[test]
    fn a_file_of_another_user_is_refused() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: chown needs root");
            return;
        }
        let (_t, d) = plex();
        let f = d.path().join("f");
        d.create_new(&f).unwrap();
        nix::unistd::chown(&f, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
        assert!(matches!(
            d.open(&f, false),
            Err(PlexFileError::ForeignOwner { owner: 65534, .. })
        ));
    }
}
