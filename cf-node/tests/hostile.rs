//! Hostile plex files and misuse, from `cf-node`'s side: a log nobody
//! trusted is never backed out into the data; a FIFO or a directory at a
//! log's name is refused with one line before the member connects; bad
//! arguments leave no connector; a recovery that fails for a persistent
//! reason ends in a FAILED request with its reason, not in thousands of
//! restart lights; a region truncated under a member is one line, not a
//! silent SIGBUS.

use cf_testkit::node as support;

use cf_core::events::EventKind;
use cf_core::requests::{self, RequestState};
use cf_core::{testing, Member, Mode, TryOutcome};
use cf_node::store::Store;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;
use support::{cf_node, serial, TestPlex};

/// One UPDATE record of the log format (wal.rs), checksummed: valid, but
/// forged (never committed): a back-out writes `before` into the account.
fn forged_update(account: u64, before: i64, after: i64) -> Vec<u8> {
    let mut p = vec![1u8];
    p.extend_from_slice(&77u64.to_le_bytes());
    p.extend_from_slice(&account.to_le_bytes());
    p.extend_from_slice(&before.to_le_bytes());
    p.extend_from_slice(&after.to_le_bytes());
    let mut rec = (p.len() as u32).to_le_bytes().to_vec();
    rec.extend_from_slice(&crc32c::crc32c(&p).to_le_bytes());
    rec.extend_from_slice(&p);
    rec
}

/// `cf-node ARGS --plex P` to its end: (exit code, stderr).
fn node(plex: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(cf_node())
        .args(args)
        .arg("--plex")
        .arg(plex)
        .env_remove("CF_PLEX")
        .env_remove("CF_CRASH_AT")
        .output()
        .expect("running cf-node");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn run_member(plex: &TestPlex, name: &str, extra: &[&str]) -> (Option<i32>, String) {
    let mut args = vec!["run", "--member", name, "--buffer-pool-mb", "1"];
    args.extend_from_slice(extra);
    let (code, err, _) = node(plex.path(), &args);
    (code, err)
}

fn assert_one_line(err: &str, needle: &str) {
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    assert!(err.starts_with("cf-node: "), "{err:?}");
    assert!(err.contains(needle), "expected {needle:?} in {err:?}");
    assert!(!err.contains("panicked"), "{err:?}");
}

#[test]
fn a_log_anyone_could_have_written_is_never_backed_out() {
    let _s = serial();
    let plex = TestPlex::new();
    let log = cf_node::wal::log_path(plex.path(), "W");
    // Read straight from the file (the store refuses an untrusted plex).
    let balance = || {
        let b = std::fs::read(Store::path_in(plex.path())).unwrap();
        i64::from_le_bytes(b[64..72].try_into().unwrap())
    };
    assert_eq!(balance(), support::BALANCE);

    // In a world-writable plex directory, user nobody plants a checksummed
    // UPDATE in `log.W`: the directory itself is refused.
    std::fs::set_permissions(plex.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::write(&log, forged_update(0, 5_000_000, 1000)).unwrap();
    if nix::unistd::geteuid().is_root() {
        nix::unistd::chown(&log, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    }
    let (code, err) = run_member(&plex, "W", &["--workload", "idle"]);
    assert_eq!(code, Some(1), "{err}");
    assert_one_line(&err, "writable by every user");
    assert_eq!(
        balance(),
        support::BALANCE,
        "the forged update was backed out"
    );
    std::fs::set_permissions(plex.path(), std::fs::Permissions::from_mode(0o700)).unwrap();

    // In a private plex, a log of another user is refused.
    if nix::unistd::geteuid().is_root() {
        let (code, err) = run_member(&plex, "W", &["--workload", "idle"]);
        assert_eq!(code, Some(1), "{err}");
        assert_one_line(&err, "owned by uid 65534");
        assert_eq!(balance(), support::BALANCE);
        nix::unistd::chown(&log, Some(nix::unistd::geteuid()), None).unwrap();
    }
    // A log with a second link (to a file elsewhere) is refused.
    std::fs::hard_link(&log, plex.file("elsewhere")).unwrap();
    let (code, err) = run_member(&plex, "W", &["--workload", "idle"]);
    assert_eq!(code, Some(1), "{err}");
    assert_one_line(&err, "2 hard links");
    assert_eq!(balance(), support::BALANCE);
    assert!(
        plex.member("W").is_none(),
        "no connector left: {}",
        plex.dump()
    );
}

#[test]
fn a_fifo_or_a_directory_at_the_log_is_refused_before_connecting() {
    let _s = serial();
    let plex = TestPlex::new();
    nix::unistd::mkfifo(
        &cf_node::wal::log_path(plex.path(), "N"),
        nix::sys::stat::Mode::S_IRWXU,
    )
    .unwrap();
    std::fs::create_dir(cf_node::wal::log_path(plex.path(), "M")).unwrap();
    // A symlink to /dev/zero used to be read until memory ran out.
    std::os::unix::fs::symlink("/dev/zero", cf_node::wal::log_path(plex.path(), "Z")).unwrap();
    for (name, why) in [
        ("N", "is not a regular file"),
        ("M", "is not a regular file"),
        ("Z", "is a symbolic link"),
    ] {
        let (code, err) = run_member(&plex, name, &[]);
        assert_eq!(code, Some(1), "{err}");
        assert_one_line(&err, why);
        assert!(
            plex.member(name).is_none(),
            "the refusal must come before the connect: {}",
            plex.dump()
        );
        let (code, err, _) = node(plex.path(), &["restart-light", "--member", name]);
        assert_eq!(code, Some(1), "{err}");
        assert_one_line(&err, why);
        assert!(!err.contains("(os error 21): Is a directory"), "{err}");
    }
    assert!(plex.members().is_empty(), "{}", plex.dump());
}

#[test]
fn bad_arguments_leave_no_connector() {
    let _s = serial();
    let plex = TestPlex::new();
    let (code, err) = run_member(&plex, "T", &["--threads", "100000"]);
    assert_eq!(code, Some(1), "{err}");
    assert_one_line(&err, "--threads 100000");
    let (code, err, _) = node(
        plex.path(),
        &["run", "--member", "T", "--buffer-pool-mb", "17592186044416"],
    );
    assert_eq!(code, Some(1), "{err}");
    assert_one_line(&err, "buffer pool of 17592186044416 MiB");
    let (code, err) = run_member(&plex, "bad\nname", &[]);
    assert_eq!(code, Some(1), "{err}");
    assert_one_line(&err, "is invalid");
    assert!(plex.members().is_empty(), "{}", plex.dump());
    plex.assert_balanced_and_clean();
}

#[test]
fn a_recovery_that_keeps_failing_ends_in_a_failed_request_with_its_reason() {
    let _s = serial();
    let plex = TestPlex::new();
    // X's log is a directory: every restart light of X fails the same way.
    std::fs::create_dir(cf_node::wal::log_path(plex.path(), "X")).unwrap();
    let mut s = plex.start("S", &["--workload", "idle"], &[]);
    // X holds a modify lock and "dies" (its identity no longer matches).
    let x = Member::connect(plex.region().clone(), "X").unwrap();
    let id = x.id();
    let mut h = x.holder().unwrap();
    assert!(matches!(
        h.try_lock(b"acct:1", Mode::Modify).unwrap(),
        TryOutcome::Granted(_)
    ));
    let since = plex.next_event();
    std::mem::forget(h);
    std::mem::forget(x);
    testing::fake_reused_pid(plex.region(), id);

    plex.wait("X's request to be marked failed", || {
        plex.requests()
            .iter()
            .any(|r| r.member_id == id && r.state == RequestState::Failed)
    });
    let r = plex
        .requests()
        .into_iter()
        .find(|r| r.member_id == id)
        .unwrap();
    assert!(r.reason.contains("log.X"), "{r:?}");
    assert!(r.reason.contains("not a regular file"), "{r:?}");
    assert_eq!(r.last_status, Some(1), "{r:?}");
    let started = plex.count_events("X", since, EventKind::RestartLightStarted);
    let failed = plex.count_events("X", since, EventKind::RestartLightFailed);
    assert!(
        (1..=6).contains(&started),
        "{started} restart lights\n{}",
        plex.dump()
    );
    assert!(
        failed <= started + 1,
        "{failed} failures recorded\n{}",
        plex.dump()
    );
    // Given up: no restart light is started again by itself.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        plex.count_events("X", since, EventKind::RestartLightStarted),
        started,
        "a failed request was claimed again\n{}",
        plex.dump()
    );
    assert_eq!(plex.retained_of("X"), vec!["acct:1".to_string()]);

    // The cause is removed and the operator re-posts it: X is recovered.
    std::fs::remove_dir(cf_node::wal::log_path(plex.path(), "X")).unwrap();
    requests::retry(plex.region(), id, None, |_| {})
        .unwrap()
        .expect("re-posted");
    plex.wait("X to be recovered", || plex.is_recovered("X", Some(id)));
    s.stop().assert_success();
    plex.assert_balanced_and_clean();
}

#[test]
fn a_region_truncated_under_a_running_member_is_one_line_and_an_exit() {
    let _s = serial();
    let plex = TestPlex::new();
    let mut t = plex.start("T", &["--workload", "idle"], &[]);
    let region = plex.file("region");
    // From here on this process must not touch its own mapping of the region.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&region)
        .unwrap()
        .set_len(4096)
        .unwrap();
    let f = t.finish();
    assert_eq!(f.status.code(), Some(1), "{f:?}");
    assert!(
        f.stderr
            .iter()
            .any(|l| l.contains("was truncated under this process (SIGBUS)")),
        "{f:?}"
    );
}
