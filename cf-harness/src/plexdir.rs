//! A plex directory made the careful way: only its last component (a typo in
//! a parent is an error, not a new tree), and never a region larger than the
//! free space of its filesystem.

use anyhow::{bail, Context, Result};
use std::path::Path;

/// Create `dir` (mode 0700, 02770 with `group`, whatever the umask) if it does not exist; its
/// parent must. Returns whether it was created (so a failed create can take
/// it back). An existing directory is fine; anything else there is refused.
pub fn create_last(dir: &Path, group: bool) -> Result<bool> {
    use std::os::unix::fs::DirBuilderExt;
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => return Ok(false),
        Ok(m) if m.file_type().is_symlink() => bail!(
            "{} is a symbolic link: a plex directory is never followed through one",
            dir.display()
        ),
        Ok(_) => bail!("{} exists and is not a directory", dir.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => bail!("{}: {e}", dir.display()),
    }
    if !parent.is_dir() {
        bail!(
            "{}: its parent directory {} does not exist (only the last component is created)",
            dir.display(),
            parent.display()
        );
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    // Made 0700 under any umask; then the plex's real mode, as cf-core sets it.
    use cf_core::plexfs::{GROUP_DIR_MODE, PRIVATE_DIR_MODE};
    use std::os::unix::fs::PermissionsExt;
    let mode = if group {
        GROUP_DIR_MODE
    } else {
        PRIVATE_DIR_MODE
    };
    if let Err(e) = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)) {
        let _ = std::fs::remove_dir(dir);
        bail!("setting the mode of {}: {e}", dir.display());
    }
    Ok(true)
}

/// Bytes free to an unprivileged user on the filesystem of `dir`.
pub fn free_bytes(dir: &Path) -> Result<u64> {
    let st =
        nix::sys::statvfs::statvfs(dir).with_context(|| format!("statvfs {}", dir.display()))?;
    Ok((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
}

/// Refuse `bytes` of files in `dir` if its filesystem has less free space.
pub fn check_space(dir: &Path, bytes: u64, what: &str) -> Result<()> {
    let free = free_bytes(dir)?;
    if bytes > free {
        bail!(
            "{what} needs {} but the filesystem of {} has {} free",
            human_bytes(bytes),
            dir.display(),
            human_bytes(free)
        );
    }
    Ok(())
}

/// `49.9 GiB`, `512 KiB`, `100 B`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = b as f64;
    let mut u = 0;
    while x >= 1024.0 && u + 1 < UNITS.len() {
        x /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{x:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_last_component() {
        let t = tempfile::tempdir().unwrap();
        let deep = t.path().join("no/such/x");
        assert!(create_last(&deep, false).is_err());
        assert!(!t.path().join("no").exists());
        let one = t.path().join("x");
        assert!(create_last(&one, false).unwrap());
        assert!(!create_last(&one, false).unwrap());
    }

    #[test]
    fn sizes_for_people() {
        assert_eq!(human_bytes(100), "100 B");
        assert_eq!(human_bytes(53_578_000_000), "49.9 GiB");
    }
}
