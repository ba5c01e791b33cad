//! Invariants 9 and 10 from the operator's side: a damaged, foreign or hostile
//! region file makes `cfctl` exit non-zero with exactly one line on stderr
//! that names the problem, nothing on stdout and no panic; `cfctl create`
//! never replaces an existing region and never follows a symlink.

use cf_core::layout::Header;
use cf_core::{testing, CreateOptions, Member, Mode, Plex, Region, Resource, Sizes, TryOutcome};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::mem::offset_of;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use cf_testkit::tools as common;

/// A fresh directory under /dev/shm (removed on drop) holding a plex `p`.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        Scratch {
            dir: tempfile::Builder::new()
                .prefix("cfctl-bad-input-")
                .tempdir_in(base)
                .unwrap(),
        }
    }
    fn plex(&self) -> PathBuf {
        self.dir.path().join("p")
    }
    fn region_path(&self) -> PathBuf {
        self.plex().join("region")
    }
    /// A small valid region in the plex.
    fn create(&self) -> PathBuf {
        drop(Region::create(&Plex { dir: self.plex() }, &small()).unwrap());
        self.region_path()
    }
}

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

fn cfctl(plex: &Path, args: &[&str]) -> Output {
    common::cfctl_in(plex, args)
}

/// The commands every damaged region is tried with.
const COMMANDS: &[&[&str]] = &[
    &["verify"],
    &["verify", "--json"],
    &["display", "members"],
    &["display", "structures", "--json"],
    &["try", "--member", "T", "--x", "res"],
];

/// `out` is a clean failure: status 1, nothing on stdout, one stderr line
/// containing `needle`, no panic.
fn assert_one_line_error(out: &Output, needle: &str, what: &str) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ctx = format!(
        "{what}: status {:?}\nstdout: {stdout:?}\nstderr: {stderr:?}",
        out.status
    );
    assert_eq!(out.status.code(), Some(1), "{ctx}");
    assert!(stdout.is_empty(), "nothing on stdout for an error; {ctx}");
    assert!(!stderr.contains("panicked"), "{ctx}");
    assert!(stderr.ends_with('\n'), "{ctx}");
    assert_eq!(stderr.lines().count(), 1, "exactly one line; {ctx}");
    assert!(stderr.starts_with("cfctl: "), "{ctx}");
    assert!(stderr.contains(needle), "expected {needle:?}; {ctx}");
}

/// Every command fails cleanly on `plex`, naming the problem with `needle`.
fn assert_refused(plex: &Path, needle: &str, case: &str) {
    for args in COMMANDS {
        let out = cfctl(plex, args);
        assert_one_line_error(&out, needle, &format!("{case}: cfctl {}", args.join(" ")));
    }
}

fn patch(path: &Path, offset: usize, bytes: &[u8]) {
    let mut f = OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(offset as u64)).unwrap();
    f.write_all(bytes).unwrap();
}

fn read_header(path: &Path) -> Vec<u8> {
    let mut raw = vec![0u8; std::mem::size_of::<Header>()];
    File::open(path).unwrap().read_exact(&mut raw).unwrap();
    raw
}

/// FNV-1a 64 over the header with the checksum field zeroed: written out
/// again here on purpose, an oracle independent of `layout::checksum` (a
/// test that forged headers through the function under test would agree
/// with any change to it).
fn fnv1a(header: &[u8]) -> u64 {
    let at = offset_of!(Header, checksum);
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, &b) in header.iter().enumerate() {
        let b = if (at..at + 8).contains(&i) { 0 } else { b };
        hash ^= b as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Patch header fields, then store a checksum that matches the new header.
fn patch_with_valid_checksum(path: &Path, fields: &[(usize, &[u8])]) {
    for (offset, bytes) in fields {
        patch(path, *offset, bytes);
    }
    let sum = fnv1a(&read_header(path));
    patch(path, offset_of!(Header, checksum), &sum.to_le_bytes());
}

#[test]
fn our_checksum_is_the_layout_checksum() {
    let s = Scratch::new();
    let path = s.create();
    let raw = read_header(&path);
    let stored = u64::from_le_bytes(raw[offset_of!(Header, checksum)..][..8].try_into().unwrap());
    assert_eq!(fnv1a(&raw), stored);
    // And a valid region passes every command.
    for args in COMMANDS {
        let out = cfctl(&s.plex(), args);
        assert!(out.status.success(), "cfctl {}: {out:?}", args.join(" "));
        assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    }
}

#[test]
fn wrong_magic() {
    let s = Scratch::new();
    let path = s.create();
    patch(&path, offset_of!(Header, magic), b"NOTACF!!");
    assert_refused(&s.plex(), "wrong magic", "wrong magic");
    // A zeroed magic (a half-made region) too.
    patch(&path, offset_of!(Header, magic), &[0; 8]);
    assert_refused(&s.plex(), "wrong magic", "zero magic");
}

#[test]
fn wrong_layout_version() {
    let s = Scratch::new();
    let path = s.create();
    let current = cf_core::layout::LAYOUT_VERSION;
    for v in [0u32, current - 1, current + 1, 99, u32::MAX] {
        patch(&path, offset_of!(Header, version), &v.to_le_bytes());
        assert_refused(
            &s.plex(),
            &format!("layout version {v}, this program reads version"),
            &format!("version {v}"),
        );
    }
}

#[test]
fn truncated_file() {
    let s = Scratch::new();
    let path = s.create();
    let len = std::fs::metadata(&path).unwrap().len();
    for new_len in [len - 1, len / 2, 4096, 300] {
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(new_len)
            .unwrap();
        assert_refused(
            &s.plex(),
            &format!("file is {new_len} bytes but its header says {len} (truncated or extended)"),
            &format!("truncated to {new_len}"),
        );
    }
    // Shorter than a header.
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(100)
        .unwrap();
    assert_refused(&s.plex(), "file is 100 bytes", "truncated to 100");
}

#[test]
fn extended_file() {
    let s = Scratch::new();
    let path = s.create();
    let len = std::fs::metadata(&path).unwrap().len();
    for new_len in [len + 1, len + 4096, 2 * len] {
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(new_len)
            .unwrap();
        assert_refused(
            &s.plex(),
            &format!("file is {new_len} bytes but its header says {len}"),
            &format!("extended to {new_len}"),
        );
    }
}

#[test]
fn empty_file() {
    let s = Scratch::new();
    std::fs::create_dir(s.plex()).unwrap();
    File::create(s.region_path()).unwrap();
    assert_refused(&s.plex(), "file is 0 bytes", "empty file");
}

#[test]
fn checksum_mismatch() {
    let s = Scratch::new();
    let path = s.create();
    // A size field changed without fixing the checksum.
    patch(
        &path,
        offset_of!(Header, lock_entries),
        &32u32.to_le_bytes(),
    );
    assert_refused(&s.plex(), "header checksum mismatch", "lock entries");
    let s = Scratch::new();
    let path = s.create();
    patch(&path, offset_of!(Header, members), &3u32.to_le_bytes());
    assert_refused(&s.plex(), "header checksum mismatch", "members");
    let s = Scratch::new();
    let path = s.create();
    patch(&path, offset_of!(Header, checksum), &0u64.to_le_bytes());
    assert_refused(&s.plex(), "header checksum mismatch", "checksum zeroed");
}

#[test]
fn header_inconsistent_under_a_valid_checksum() {
    // total_size that does not match the sizes (the file grown to match it,
    // so the size check passes and the layout check must catch it).
    let s = Scratch::new();
    let path = s.create();
    let len = std::fs::metadata(&path).unwrap().len();
    let bigger = len + 4096;
    patch_with_valid_checksum(
        &path,
        &[(offset_of!(Header, total_size), &bigger.to_le_bytes())],
    );
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(bigger)
        .unwrap();
    assert_refused(
        &s.plex(),
        &format!("header is inconsistent: total size {bigger} does not match the sizes"),
        "total size",
    );

    // (field, value, what the message says)
    let cases: [(usize, u32, &str); 7] = [
        (offset_of!(Header, lock_entries), 1000, "power of two"),
        (offset_of!(Header, lock_entries), 0, "power of two"),
        (offset_of!(Header, members), 0, "members must be"),
        (offset_of!(Header, members), 33, "members must be"),
        (
            offset_of!(Header, records_per_member),
            100,
            "records per member",
        ),
        (offset_of!(Header, block_slots), 32, "block size 32"),
        (offset_of!(Header, header_size), 4096, "header size 4096"),
    ];
    for (field, value, needle) in cases {
        let s = Scratch::new();
        let path = s.create();
        patch_with_valid_checksum(&path, &[(field, &value.to_le_bytes())]);
        assert_refused(
            &s.plex(),
            "header is inconsistent: ",
            &format!("field at {field} = {value}"),
        );
        assert_refused(&s.plex(), needle, &format!("field at {field} = {value}"));
    }

    // Sizes and total size consistent with each other, but the structure
    // directory left as it was.
    let s = Scratch::new();
    let path = s.create();
    let other = cf_core::layout::Layout::compute(Sizes {
        lock_entries: 32,
        members: 4,
        records_per_member: 64,
    });
    patch_with_valid_checksum(
        &path,
        &[
            (offset_of!(Header, lock_entries), &32u32.to_le_bytes()),
            (
                offset_of!(Header, total_size),
                &other.total_size.to_le_bytes(),
            ),
        ],
    );
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(other.total_size)
        .unwrap();
    assert_refused(
        &s.plex(),
        "structure directory does not match the sizes",
        "directory",
    );
}

#[test]
fn region_file_that_is_a_symlink() {
    let s = Scratch::new();
    // A valid region elsewhere, linked in as the plex's region.
    let real = s.dir.path().join("real");
    drop(Region::create(&Plex { dir: real.clone() }, &small()).unwrap());
    std::fs::create_dir(s.plex()).unwrap();
    std::os::unix::fs::symlink(real.join("region"), s.region_path()).unwrap();
    assert_refused(
        &s.plex(),
        "is a symbolic link; refusing to follow it",
        "symlink",
    );
    // Dangling.
    let d = Scratch::new();
    std::fs::create_dir(d.plex()).unwrap();
    std::os::unix::fs::symlink(d.dir.path().join("nowhere"), d.region_path()).unwrap();
    assert_refused(&d.plex(), "symbolic link", "dangling symlink");
    assert!(!d.dir.path().join("nowhere").exists());
    // Nor does destroy remove anything through it.
    let out = cfctl(&s.plex(), &["destroy"]);
    assert_one_line_error(&out, "symbolic link", "destroy through a symlink");
    assert!(real.join("region").exists());
    assert!(Region::open(&Plex { dir: real }).is_ok());
}

#[test]
fn region_owned_by_another_user() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: chown to another user needs root");
        return;
    }
    let s = Scratch::new();
    let path = s.create();
    std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().uid(), 65534);
    assert_refused(
        &s.plex(),
        "is owned by uid 65534, not by this user",
        "foreign owner",
    );
    let out = cfctl(&s.plex(), &["destroy", "--force"]);
    assert_one_line_error(&out, "owned by uid 65534", "destroy a foreign region");
    assert!(path.exists());
}

#[test]
fn directory_where_the_region_should_be() {
    let s = Scratch::new();
    std::fs::create_dir_all(s.region_path()).unwrap();
    assert_refused(&s.plex(), "is not a regular file", "directory");
}

#[test]
fn missing_region() {
    let s = Scratch::new();
    std::fs::create_dir(s.plex()).unwrap();
    assert_refused(&s.plex(), "no region here", "missing");
}

fn create_args() -> Vec<&'static str> {
    common::SMALL_CREATE.to_vec()
}

#[test]
fn create_never_replaces_a_region() {
    let s = Scratch::new();
    let out = cfctl(&s.plex(), &create_args());
    assert!(out.status.success(), "{out:?}");
    let before = std::fs::read(s.region_path()).unwrap();
    let ino = std::fs::metadata(s.region_path()).unwrap().ino();
    for args in [create_args(), vec!["create"]] {
        let out = cfctl(&s.plex(), &args);
        assert_one_line_error(&out, "already exists", "second create");
    }
    assert_eq!(std::fs::metadata(s.region_path()).unwrap().ino(), ino);
    assert_eq!(std::fs::read(s.region_path()).unwrap(), before);
    // Still a good region.
    let out = cfctl(&s.plex(), &["verify"]);
    assert!(out.status.success(), "{out:?}");
    // Not over a damaged one either.
    patch(&s.region_path(), 0, b"NOTACF!!");
    let out = cfctl(&s.plex(), &create_args());
    assert_one_line_error(&out, "already exists", "create over damage");
}

#[test]
fn create_never_follows_a_symlink() {
    // A dangling symlink at the region path: its target must not be created.
    let s = Scratch::new();
    std::fs::create_dir(s.plex()).unwrap();
    let target = s.dir.path().join("target");
    std::os::unix::fs::symlink(&target, s.region_path()).unwrap();
    let out = cfctl(&s.plex(), &create_args());
    assert_one_line_error(&out, "already exists", "create over a dangling symlink");
    assert!(!target.exists(), "create followed the symlink");
    assert!(std::fs::symlink_metadata(s.region_path())
        .unwrap()
        .file_type()
        .is_symlink());

    // A symlink to an existing file: the file is left alone.
    let victim = s.dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    std::fs::remove_file(s.region_path()).unwrap();
    std::os::unix::fs::symlink(&victim, s.region_path()).unwrap();
    let out = cfctl(&s.plex(), &create_args());
    assert_one_line_error(&out, "already exists", "create over a symlink to a file");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");

    // The plex directory itself a symlink: refused, nothing made in its target.
    let t = Scratch::new();
    let elsewhere = t.dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, t.plex()).unwrap();
    let out = cfctl(&t.plex(), &create_args());
    assert_one_line_error(&out, "symbolic link", "create in a symlinked plex");
    assert!(!elsewhere.join("region").exists());
}

/// `create --history` makes `history/` (0700) beside the accounts; `destroy`
/// removes it with its files. A symlink planted at `history` is refused and
/// leaves no region behind.
#[test]
fn create_history_makes_the_directory_and_destroy_removes_it() {
    use std::os::unix::fs::PermissionsExt;
    let s = Scratch::new();
    let mut args = create_args();
    args.extend(["--accounts", "8", "--history"]);
    let out = cfctl(&s.plex(), &args);
    assert!(out.status.success(), "{out:?}");
    let history = s.plex().join("history");
    let meta = std::fs::symlink_metadata(&history).unwrap();
    assert!(meta.is_dir());
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    std::fs::write(history.join("A"), b"").unwrap();
    let out = cfctl(&s.plex(), &["destroy"]);
    assert!(out.status.success(), "{out:?}");
    assert!(!s.plex().exists(), "the plex directory is gone");

    let t = Scratch::new();
    std::fs::create_dir(t.plex()).unwrap();
    let elsewhere = t.dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, t.plex().join("history")).unwrap();
    let out = cfctl(&t.plex(), &args);
    assert_one_line_error(&out, "symbolic link", "create --history over a symlink");
    assert!(!t.region_path().exists(), "no region left behind");
    assert!(
        !t.plex().join("accounts").exists(),
        "no accounts left behind"
    );
}

// ---------------------------------------------------------------------------
// Damage inside a valid region (written through cf_core::testing)
// ---------------------------------------------------------------------------

fn live_region(s: &Scratch) -> Arc<Region> {
    Arc::new(Region::create(&Plex { dir: s.plex() }, &small()).unwrap())
}

#[test]
fn unknown_connector_state() {
    let s = Scratch::new();
    let r = live_region(&s);
    let a = Member::connect(r.clone(), "A").unwrap();
    testing::write_connector_state(&r, a.id(), 0x77 | (a.generation() as u64) << 32);
    let needle = format!("connector {}: unknown state 119", a.id());
    for args in [
        &["display", "members"][..],
        &["display", "locks"],
        &["display", "retained", "--json"],
        &["try", "--member", "T", "--s", "res"],
        &["cleanup"],
    ] {
        let out = cfctl(&s.plex(), args);
        assert_one_line_error(&out, &needle, &format!("cfctl {}", args.join(" ")));
    }
    // verify reports it as a finding (stdout) and fails.
    let out = cfctl(&s.plex(), &["verify"]);
    assert_eq!(out.status.code(), Some(5), "{out:?}"); // 5: an invariant broke (damage)
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&needle),
        "{out:?}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!stderr.contains("panicked"));
    let out = cfctl(&s.plex(), &["verify", "--json"]);
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert!(v["problems"].to_string().contains(&needle), "{v}");
}

#[test]
fn lock_word_naming_a_connector_beyond_the_table() {
    let s = Scratch::new();
    let r = live_region(&s);
    let e = Resource::new(b"res").unwrap().entry(r.lock_entries());
    // Mixed mode (bit 39), interest of connector 10 in a table of 4.
    testing::write_lock_word(&r, e, 1 << 39 | 1 << 10);
    let out = cfctl(&s.plex(), &["try", "--member", "T", "--x", "res"]);
    assert_one_line_error(&out, "connector id 10 out of range (table has 4", "try");
    let out = cfctl(&s.plex(), &["verify"]);
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!(
            "lock entry {e} names connector 10, beyond the table of 4"
        )),
        "{out:?}"
    );
    // Latch "held" by connector 39 (holder field 40).
    testing::write_lock_word(&r, e, 1 << 39 | 40 << 32);
    let out = cfctl(&s.plex(), &["try", "--member", "T", "--s", "res"]);
    assert_one_line_error(&out, "connector id 39 out of range", "try (latch)");
    let out = cfctl(&s.plex(), &["display", "structures"]);
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn record_tag_out_of_range() {
    let s = Scratch::new();
    let r = live_region(&s);
    let a = Member::connect(r.clone(), "A").unwrap();
    let mut h = a.holder().unwrap();
    let x = match h.try_lock(b"acct:1", Mode::Modify).unwrap() {
        TryOutcome::Granted(x) => x,
        other => panic!("{other:?}"),
    };
    testing::write_tag(&r, a.id(), x.slot, 2 << 30 | 16);
    let needle = format!(
        "record slot {} of connector {}: lock table index 16 out of range",
        x.slot,
        a.id()
    );
    for args in [
        &["display", "members"][..],
        &["display", "locks", "--json"],
        &["display", "retained"],
    ] {
        let out = cfctl(&s.plex(), args);
        assert_one_line_error(&out, &needle, &format!("cfctl {}", args.join(" ")));
    }
    let out = cfctl(&s.plex(), &["verify"]);
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&needle),
        "{out:?}"
    );
    std::mem::forget(h);
}
