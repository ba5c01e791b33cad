//! What the fuzz targets share: a private plex directory per process (in
//! `/dev/shm` when there is one), the input written to a plex file, and
//! every read-only view of a region run on it.

use cf_core::{inspect, Region};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The fuzzing process's own plex directory (0700, made once, removed at exit
/// by nobody: it is tiny and named after the PID).
pub fn plex_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("cf-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        cf_core::plexfs::PlexDir::ensure(&dir, false).expect("the fuzz plex directory");
        dir
    })
}

/// Replace plex file `name` with `bytes` (a new file: mode 0600, one link).
pub fn put(name: &str, bytes: &[u8]) -> PathBuf {
    let path = plex_dir().join(name);
    let _ = std::fs::remove_file(&path);
    if let Some(parent) = path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let dir = cf_core::plexfs::PlexDir::check(path.parent().unwrap_or(plex_dir()))
        .expect("the fuzz plex directory");
    let mut f = dir.create_new(&path).expect("a fuzz plex file");
    use std::io::Write;
    f.write_all(bytes).expect("writing a fuzz plex file");
    path
}

/// Input option bit 0: store a valid checksum in the region header, so the
/// mutations of its fields reach the layout checks and everything after.
pub fn fix_region_checksum(bytes: &mut [u8]) {
    use cf_core::layout::Header;
    let n = std::mem::size_of::<Header>();
    if bytes.len() < n {
        return;
    }
    let mut h: Header = bytemuck::pod_read_unaligned(&bytes[..n]);
    h.checksum = cf_core::layout::checksum(&h);
    let at = std::mem::offset_of!(Header, checksum);
    bytes[at..at + 8].copy_from_slice(&h.checksum.to_le_bytes());
}

/// Every view `cfctl display` and `verify` take of a region; none may panic.
pub fn every_view(region: &Region) {
    let _ = inspect::members(region).map(|m| m.iter().map(|m| inspect::escape(&m.name)).count());
    let _ = inspect::locks(region).map(|l| l.iter().map(|l| inspect::escape(&l.resource)).count());
    let _ = inspect::retained(region);
    let _ = inspect::structures(region);
    let _ = inspect::counters(region);
    let _ = inspect::committed_total(region);
    let problems = inspect::verify(region);
    let _ = problems.iter().map(|p| inspect::escape(p)).count();
    let _ = cf_core::requests::list(region).map(|r| {
        r.iter()
            .map(|r| (inspect::escape(&r.name), inspect::escape(&r.reason), r.retry_at_unix_ns()))
            .count()
    });
    let _ = cf_core::requests::totals(region);
    let _ = cf_core::events::check(region);
    let _ = cf_core::events::read_all(region)
        .iter()
        .map(|e| inspect::escape(&e.member))
        .count();
    for id in region.connector_ids() {
        let _ = cf_core::connector::slot_view(region, id).map(|s| s.is_alive());
    }
}

/// `verify` is at least as strict as every reader: a region it finds clean
/// is read by every display without an error (the region target asserts it;
/// the reverse, verify refusing what the readers accept, is a verify finding
/// more than a reader checks, which is allowed).
pub fn assert_verify_is_as_strict_as_the_readers(region: &Region) {
    let problems = inspect::verify(region);
    if !problems.is_empty() {
        return;
    }
    if let Err(e) = inspect::members(region) {
        panic!("verify finds the region clean, display members refuses it: {e}");
    }
    if let Err(e) = inspect::locks(region) {
        panic!("verify finds the region clean, display locks refuses it: {e}");
    }
    if let Err(e) = inspect::retained(region) {
        panic!("verify finds the region clean, display retained refuses it: {e}");
    }
    if let Err(e) = cf_core::requests::list(region) {
        panic!("verify finds the region clean, display requests refuses it: {e}");
    }
    if let Err(e) = cf_core::events::check(region) {
        panic!("verify finds the region clean, display events refuses it: {e}");
    }
}

/// Could a cleanup or a connect on this region wait out one of its documented
/// deadlines (30 s) instead of answering? Only when a *live* process is named
/// in it: the connect latch, or a connector slot (a member at work). The
/// recovery target skips such inputs (they are bounded waits, not hangs;
/// `verify` reports the latch case).
pub fn names_a_live_process(region: &Region) -> bool {
    if let Ok(list) = inspect::members(region) {
        if list.iter().any(|m| m.alive) {
            return true;
        }
    }
    for id in region.connector_ids() {
        if cf_core::connector::slot_view(region, id).is_ok_and(|s| s.is_alive()) {
            return true;
        }
    }
    inspect::verify(region)
        .iter()
        .any(|p| p.starts_with("the connect latch is held by"))
}
