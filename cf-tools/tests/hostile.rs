//! Hostile plex files and misuse from the operator's side (`cfctl`): errors
//! after a connect leave no dead connector; displays escape what they read;
//! numbers are printed as they are; `display` and `verify` need no write
//! permission; `destroy` never follows a symlinked plex and `--force` removes
//! a damaged region; a region truncated under `cfctl hold` is one line;
//! `--group-mode` delivers the modes it documents.

use cf_core::ConnectorId;
use cf_testkit::tools as common;

use common::TestPlex;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

fn cfctl(plex: &Path, args: &[&str]) -> Output {
    common::cfctl_in(plex, args)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn poke(path: &Path, offset: u64, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(bytes).unwrap();
}

fn small_plex(dir: &Path, extra: &[&str]) {
    let mut args = common::SMALL_CREATE.to_vec();
    args.extend_from_slice(extra);
    let out = cfctl(dir, &args);
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn errors_after_arguments_leave_no_connector() {
    let plex = TestPlex::small();
    let long = "r".repeat(65);
    for args in [
        vec!["try", "--member", "U1", "--s", long.as_str()],
        vec!["hold", "--member", "U1", "--x", long.as_str()],
        vec!["hold", "--member", "U1", "--modify-many", "65"],
        vec!["try", "--member", "bad name", "--s", "r"],
    ] {
        let f = plex.run(&args);
        assert_eq!(f.status.code(), Some(1), "{f}");
        assert_eq!(f.stderr.lines().count(), 1, "{f}");
        assert!(
            plex.members().is_empty(),
            "{:?} left {:?}",
            args,
            plex.members()
        );
    }
}

#[test]
fn names_from_the_region_are_escaped_and_errors_not_repeated() {
    let s = tempfile::tempdir().unwrap();
    let p = s.path().join("p");
    small_plex(&p, &[]);
    let region = cf_core::Region::open(&cf_core::Plex { dir: p.clone() }).unwrap();
    let hold_region = std::sync::Arc::new(region);
    let m = cf_core::Member::connect(hold_region.clone(), "B").unwrap();
    let at = hold_region.layout().connectors + 256 * m.id().get() as u64 + 32;
    poke(&p.join("region"), at, b"B\nproblem: \x1b[2J");
    for args in [
        &["display", "members"][..],
        &["display", "members", "--json"],
        &["verify"],
    ] {
        let out = cfctl(&p, args);
        let all = text(&out.stdout) + &text(&out.stderr);
        assert!(
            !all.contains('\x1b'),
            "raw escape code from {args:?}: {all:?}"
        );
        assert!(
            !text(&out.stdout)
                .lines()
                .any(|l| l.starts_with("problem: \\x1b") || l == "problem: "),
            "{all:?}"
        );
        if args.contains(&"--json") {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(v[0]["name"], "B\\nproblem: \\x1b[2J", "{v}");
        } else {
            assert!(all.contains("B\\nproblem: \\x1b[2J"), "{args:?}: {all:?}");
        }
    }
    let out = cfctl(&p, &["verify"]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "5: verify found damage: {out:?}"
    );
    assert!(text(&out.stdout).contains("invalid member name"), "{out:?}");
    std::mem::forget(m);

    // A damaged state word: the cause is printed once.
    let t = tempfile::tempdir().unwrap();
    let q = t.path().join("p");
    small_plex(&q, &[]);
    let r = std::sync::Arc::new(cf_core::Region::open(&cf_core::Plex { dir: q.clone() }).unwrap());
    let a = cf_core::Member::connect(r.clone(), "A").unwrap();
    cf_core::testing::write_connector_state(&r, a.id(), 0x77);
    let out = cfctl(&q, &["try", "--member", "T", "--s", "x"]);
    let err = text(&out.stderr);
    assert_eq!(err.matches("unknown state 119").count(), 1, "{err}");
    std::mem::forget(a);
}

#[test]
fn display_accounts_json_shows_the_total_the_text_shows() {
    let s = tempfile::tempdir().unwrap();
    let p = s.path().join("p");
    // 3 accounts of 2^62: total 13835058055282163712, more than i64::MAX.
    small_plex(&p, &["--accounts", "3", "--balance", "4611686018427387904"]);
    let out = cfctl(&p, &["display", "accounts"]);
    assert!(
        text(&out.stdout).contains("13835058055282163712"),
        "{out:?}"
    );
    let out = cfctl(&p, &["display", "accounts", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["total"].to_string(), "13835058055282163712", "{v}");
}

#[test]
fn display_and_verify_work_on_a_region_they_may_only_read() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to run cfctl as another user");
        return;
    }
    // A plex of user nobody, its region 0400: nobody may read, not write.
    let s = tempfile::Builder::new()
        .prefix("cfctl-ro-")
        .tempdir_in("/dev/shm")
        .unwrap();
    std::fs::set_permissions(s.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let p = s.path().join("p");
    small_plex(&p, &["--accounts", "4"]);
    let nobody = nix::unistd::Uid::from_raw(65534);
    for f in [p.clone(), p.join("region"), p.join("accounts")] {
        nix::unistd::chown(&f, Some(nobody), Some(nix::unistd::Gid::from_raw(65534))).unwrap();
    }
    std::fs::set_permissions(p.join("region"), std::fs::Permissions::from_mode(0o400)).unwrap();
    std::fs::set_permissions(p.join("accounts"), std::fs::Permissions::from_mode(0o400)).unwrap();
    for args in [
        &["display", "members"][..],
        &["display", "structures", "--json"],
        &["display", "events"],
        &["display", "accounts"],
        &["verify"],
    ] {
        use std::os::unix::process::CommandExt;
        let out = Command::new(common::cfctl())
            .arg("--plex")
            .arg(&p)
            .args(args)
            .env_remove("CF_PLEX")
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
    }
}

#[test]
fn destroy_never_follows_a_symlinked_plex_and_forces_through_damage() {
    let s = tempfile::tempdir().unwrap();
    let real = s.path().join("real");
    small_plex(&real, &[]);
    let link = s.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    for args in [&["destroy", "--force"][..], &["display", "members"]] {
        let out = cfctl(&link, args);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(text(&out.stderr).contains("symbolic link"), "{out:?}");
    }
    assert!(real.join("region").exists());

    // One bad record tag: readers refuse, but `destroy --force` removes it.
    let r =
        std::sync::Arc::new(cf_core::Region::open(&cf_core::Plex { dir: real.clone() }).unwrap());
    let a = cf_core::Member::connect(r.clone(), "A").unwrap();
    let mut h = a.holder().unwrap();
    let x = match h.try_lock(b"r", cf_core::Mode::Modify).unwrap() {
        cf_core::TryOutcome::Granted(x) => x,
        o => panic!("{o:?}"),
    };
    cf_core::testing::write_tag(&r, a.id(), x.slot, 3 << 30);
    std::mem::forget(h);
    std::mem::forget(a);
    drop(r);
    let out = cfctl(&real, &["destroy", "--force"]);
    assert!(out.status.success(), "{out:?}");
    assert!(!real.join("region").exists());
}

#[test]
fn a_region_truncated_under_hold_is_one_line() {
    let plex = TestPlex::small();
    let mut h = plex.hold("H", &[("x", "a")]);
    std::fs::OpenOptions::new()
        .write(true)
        .open(plex.file("region"))
        .unwrap()
        .set_len(4096)
        .unwrap();
    // hold notices at its next touch of the region: its release on SIGTERM.
    h.term();
    let st = h.wait();
    assert_eq!(st.code(), Some(1), "{st:?}");
    let f = h.finish();
    assert!(
        f.stderr
            .contains("was truncated under this process (SIGBUS)"),
        "{f}"
    );
    assert_eq!(f.stderr.lines().count(), 1, "{f}");
}

#[test]
fn group_mode_delivers_group_access_whatever_the_umask() {
    let s = tempfile::tempdir().unwrap();
    let p = s.path().join("p");
    small_plex(&p, &["--group-mode", "--accounts", "4", "--history"]);
    let mode = |f: &Path| std::fs::metadata(f).unwrap().mode() & 0o7777;
    assert_eq!(mode(&p), 0o2770);
    assert_eq!(mode(&p.join("region")), 0o660);
    assert_eq!(mode(&p.join("accounts")), 0o660);
    assert_eq!(mode(&p.join("history")), 0o2770);
    // A member's log and history file get the group mode too.
    let log = cf_node::wal::LogWriter::open(&p, "G", false).unwrap();
    drop(log);
    assert_eq!(mode(&p.join("log.G")), 0o660);
    assert_eq!(mode(&p.join("history/G")), 0o660);
    if nix::unistd::geteuid().is_root() {
        // A region of another user of the plex's group is accepted.
        let gid = std::fs::metadata(&p).unwrap().gid();
        nix::unistd::chown(
            &p.join("region"),
            Some(nix::unistd::Uid::from_raw(65534)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .unwrap();
        let out = cfctl(&p, &["verify"]);
        assert!(out.status.success(), "{out:?}");
    }
}

#[test]
fn a_failed_request_shows_its_reason_in_display_requests() {
    let s = tempfile::tempdir().unwrap();
    let p = s.path().join("p");
    small_plex(&p, &[]);
    let r = std::sync::Arc::new(cf_core::Region::open(&cf_core::Plex { dir: p.clone() }).unwrap());
    let d = cf_core::Member::connect(r.clone(), "D").unwrap();
    let id = d.id();
    std::mem::forget(d);
    cf_core::testing::fake_reused_pid(&r, id);
    cf_core::cleanup_member(&r, id).unwrap();
    let me = cf_core::ProcessId::current().unwrap();
    let epoch = match cf_core::requests::claim(&r, id, ConnectorId::new(3), &me).unwrap() {
        cf_core::requests::ClaimOutcome::Claimed { epoch, .. } => epoch,
        o => panic!("{o:?}"),
    };
    cf_core::requests::set_reason(
        &r,
        id,
        epoch,
        Some(1),
        Some("log.D is not a regular file\x1b"),
    )
    .unwrap();
    let judged = cf_core::connector::slot_view(&r, id).unwrap().generation;
    cf_core::requests::fail(&r, id, epoch, &me, judged).unwrap();
    let out = cfctl(&p, &["display", "requests"]);
    let t = text(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(t.contains("failed"), "{t}");
    assert!(t.contains("log.D is not a regular file\\x1b"), "{t}");
    assert!(t.contains("cfctl restart-light D"), "{t}");
    let out = cfctl(&p, &["display", "requests", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["state"], "failed", "{v}");
    assert_eq!(v[0]["reason"], "log.D is not a regular file\\x1b", "{v}");
    assert_eq!(v[0]["last_status"], 1, "{v}");
    // The operator re-posts it.
    let out = cfctl(&p, &["restart-light", "D"]);
    assert!(out.status.success(), "{out:?}");
    assert!(text(&out.stdout).contains("posted again"), "{out:?}");
    let out = cfctl(&p, &["display", "requests", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["state"], "pending", "{v}");
}

/// A command line that does not parse is not an answer: it exits 64, never 2
/// (`try`'s "contention") or 3 ("retained"); `--help` still exits 0.
#[test]
fn usage_errors_have_their_own_exit_status() {
    let s = tempfile::tempdir().unwrap();
    let p = s.path().join("p");
    for args in [
        &["try", "--member", "A", "--bogus", "x"][..],
        &["try", "--member"],
        &["no-such-command"],
        &["display", "nothing"],
    ] {
        let out = cfctl(&p, args);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {out:?}");
        assert!(
            text(&out.stderr).starts_with("error: "),
            "{args:?}: {out:?}"
        );
    }
    let out = cfctl(&p, &["try", "--help"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = Command::new(common::cf_node())
        .args(["run", "--bogus"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    // A real contention is still 2.
    let plex = TestPlex::small();
    let _h = plex.hold("H", &[("x", "a")]);
    let f = plex.run(&["try", "--member", "T", "--x", "a"]);
    assert_eq!(f.status.code(), Some(2), "{f}");
}
