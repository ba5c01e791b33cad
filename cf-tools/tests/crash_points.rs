//! A real `cfctl` process killed (SIGKILL, by itself) at every named crash
//! point of the lock, cleanup and connect protocols, then the repaired outcome:
//! what is retained, what is free, what live holders still hold, that a
//! lock-only connect under the dead name is refused, that restart light
//! releases exactly the retained locks, and that `verify` is clean.
//!
//! The expected outcome of each window is the one documented in
//! `cf-core/src/lock/entry.rs` and `cf-core/src/recovery.rs`: a record the
//! word does not name is freed; a named modify record is always retained (a
//! lock that may have been granted is treated as granted, whatever other
//! members' records say).

#![cfg(feature = "crash-points")]

use cf_testkit::tools as common;

use common::{colliding, hold_args, Expect, Proc, TestPlex};
use serde_json::Value;
use std::os::unix::process::ExitStatusExt;

/// Every crash point with a scenario below.
const COVERED: &[&str] = &[
    "acquire.after_record",
    "acquire.after_word",
    "release.marked",
    "release.after_word",
    "slow.latched",
    "slow.granted_before_unlatch",
    "slow_release.latched",
    "slow_release.after_unlatch",
    "convert.mode_written",
    "cleanup.claimed",
    "cleanup.entry_latched",
    "cleanup.entry_unlatched",
    "cleanup.before_final_state",
    "connect.latched",
];

/// Crash points reached only by `cf-node` processes (restart light, its
/// request handler, its transactions): `cfctl` never reaches them, so their
/// scenarios belong with `cf-node`; and the deadlock detector's, whose
/// scenarios (a member's detector killed and taken over) are in
/// `cf-node/tests/deadlock.rs`.
const CF_NODE_PREFIXES: &[&str] = &[
    "restart_light.",
    "handler.",
    "bank.",
    "wal.",
    "liveness.",
    "fence.",
    "recovery.",
    "deadlock.",
];

#[test]
fn every_crash_point_of_the_protocols_has_a_scenario() {
    for p in cf_core::crash::CRASH_POINTS {
        if CF_NODE_PREFIXES.iter().any(|pre| p.starts_with(pre)) {
            continue;
        }
        assert!(
            COVERED.contains(p),
            "crash point {p} has no scenario in cf-tools/tests/crash_points.rs"
        );
    }
    for p in COVERED {
        assert!(
            cf_core::crash::CRASH_POINTS.contains(p),
            "{p} is no longer a crash point"
        );
    }
}

/// Fail at once, and clearly, if `cfctl` was built without crash points (as
/// when another build without `--all-features` replaced the binary).
fn require_crash_points() {
    static CHECKED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *CHECKED.get_or_init(|| {
        let plex = TestPlex::small();
        let f = plex
            .spawn_env(
                &["try", "--member", "CHECK", "--s", "r"],
                &[("CF_CRASH_AT", "connect.latched")],
            )
            .finish();
        f.status.signal() == Some(libc::SIGKILL)
    });
    assert!(
        ok,
        "{} has no crash points: build it with `--features crash-points` (or --all-features)",
        common::cfctl().display()
    );
}

/// Start `hold` with `CF_CRASH_AT=at` and require it to die by SIGKILL before
/// it reports holding anything.
fn hold_dies(plex: &TestPlex, member: &str, locks: &[(&str, &str)], at: &str) {
    require_crash_points();
    let mut p = plex.spawn_env(&hold_args(member, locks), &[("CF_CRASH_AT", at)]);
    if let Some(line) = p.wait_line_or_end(Proc::is_holding_line) {
        panic!("{} did not die at {at}: it printed {line:?}", p.what());
    }
    p.finish().assert_killed();
}

/// Start `hold` with `CF_CRASH_AT=at`, let it take its locks, SIGTERM it and
/// require it to die by SIGKILL while it lets them go.
fn hold_then_dies_on_release(plex: &TestPlex, member: &str, locks: &[(&str, &str)], at: &str) {
    require_crash_points();
    let p = plex.hold_env(member, locks, &[("CF_CRASH_AT", at)]);
    p.term();
    p.finish().assert_killed();
}

/// The one cleanup report of `member` in `cleanup --json` output.
fn report_of<'a>(reports: &'a [Value], member: &str) -> &'a Value {
    assert_eq!(reports.len(), 1, "one member cleaned up: {reports:?}");
    assert_eq!(reports[0]["member"], member, "{reports:?}");
    &reports[0]
}

fn assert_report(reports: &[Value], member: &str, retained: u64, released: u64, discarded: u64) {
    let r = report_of(reports, member);
    assert_eq!(r["retained"], retained, "{r}");
    assert_eq!(r["released"], released, "{r}");
    assert_eq!(r["discarded"], discarded, "{r}");
    assert_eq!(r["state"], "failed-persistent", "{r}");
}

/// `n` resource names on one lock table entry of `plex`.
fn colliding_names(plex: &TestPlex, n: usize) -> Vec<String> {
    let mut v = vec!["col-0".to_string()];
    while v.len() < n {
        let avoid: Vec<&str> = v.iter().map(|s| s.as_str()).collect();
        let next = colliding("col-0", plex.entries(), "col-", &avoid);
        v.push(next);
    }
    v
}

// ---------------------------------------------------------------- acquire

#[test]
fn acquire_after_record() {
    // Record HELD, word untouched: not named, so freed.
    let plex = TestPlex::small();
    hold_dies(&plex, "A", &[("modify", "r")], "acquire.after_record");
    assert!(
        !plex.verify().is_empty(),
        "a dead, uncleaned member is a problem"
    );
    assert_report(&plex.cleanup(), "A", 0, 0, 1);
    plex.check_repaired(&Expect {
        dead: "A",
        retained: &[],
        free: &["r"],
        live: &[],
    });
    plex.assert_empty_and_clean();

    // The word names the member for another record on the entry: a lock that
    // may have been granted is treated as granted, so the modify is retained.
    let plex = TestPlex::small();
    let n = colliding_names(&plex, 2);
    hold_dies(
        &plex,
        "A",
        &[("x", &n[0]), ("modify", &n[1])],
        "acquire.after_record@2",
    );
    assert_report(&plex.cleanup(), "A", 1, 1, 0);
    plex.check_repaired(&Expect {
        dead: "A",
        retained: &[&n[1]],
        free: &[&n[0]],
        live: &[],
    });
    plex.assert_empty_and_clean();

    // ... even when a live member holds that resource. The record may be a
    // half-made second request (never granted), but nothing may be concluded
    // from another member's record (it may itself be half-made): a named
    // modify record is always kept. That is an extra retained lock, which
    // only refuses requests until restart light releases it; the live holder
    // keeps its lock throughout.
    let plex = TestPlex::small();
    let n = colliding_names(&plex, 2);
    let mut b = plex.hold("B", &[("x", &n[1])]);
    hold_dies(
        &plex,
        "A",
        &[("x", &n[0]), ("modify", &n[1])],
        "acquire.after_record@2",
    );
    // This time a try request finds the death (no cleanup command).
    plex.assert_granted("C", "x", &n[0]);
    assert_eq!(plex.cleanup(), Vec::<Value>::new(), "already cleaned up");
    plex.assert_retained_by("C", "s", &n[1], "A");
    plex.assert_verify_clean();
    plex.recover_light("A", &[&n[1]]);
    plex.assert_contention("C", "s", &n[1], &["B"]);
    b.term();
    b.expect_exit_ok();
    plex.assert_empty_and_clean();
}

#[test]
fn acquire_after_word() {
    // A normal held lock: the modify one is retained, the exclusive released.
    // (crash point, locks taken, retained, released, free afterwards)
    type Case<'a> = (
        &'a str,
        &'a [(&'a str, &'a str)],
        &'a [&'a str],
        u64,
        &'a [&'a str],
    );
    let cases: &[Case] = &[
        ("acquire.after_word", &[("modify", "r")], &["r"], 0, &[]),
        (
            "acquire.after_word@1",
            &[("x", "q"), ("modify", "r")],
            &[],
            1,
            &["q", "r"],
        ),
        (
            "acquire.after_word@2",
            &[("x", "q"), ("modify", "r")],
            &["r"],
            1,
            &["q"],
        ),
    ];
    for &(at, locks, retained, released, free) in cases {
        let plex = TestPlex::small();
        hold_dies(&plex, "A", locks, at);
        assert_report(&plex.cleanup(), "A", retained.len() as u64, released, 0);
        plex.check_repaired(&Expect {
            dead: "A",
            retained,
            free,
            live: &[],
        });
        plex.assert_empty_and_clean();
    }
}

#[test]
fn release_marked() {
    // Record turned PENDING (being released), word still names A: the
    // cleanup finishes the release (record freed, A's interest dropped),
    // even for a modify lock: the member had decided to give it up.
    let plex = TestPlex::small();
    hold_then_dies_on_release(&plex, "A", &[("modify", "r")], "release.marked");
    let locks = plex.locks();
    assert_eq!(locks.len(), 1, "the record outlived its holder: {locks:?}");
    assert_eq!(locks[0].state, "pending", "being released: {locks:?}");
    assert_report(&plex.cleanup(), "A", 0, 0, 1);
    plex.check_repaired(&Expect {
        dead: "A",
        retained: &[],
        free: &["r"],
        live: &[],
    });
    plex.assert_empty_and_clean();
}

#[test]
fn release_after_word() {
    // Word released, record PENDING (being released): freed.
    let plex = TestPlex::small();
    hold_then_dies_on_release(&plex, "A", &[("modify", "r")], "release.after_word");
    let locks = plex.locks();
    assert_eq!(locks.len(), 1, "the record outlived the word: {locks:?}");
    assert_report(&plex.cleanup(), "A", 0, 0, 1);
    plex.check_repaired(&Expect {
        dead: "A",
        retained: &[],
        free: &["r"],
        live: &[],
    });
    plex.assert_empty_and_clean();
}

// ------------------------------------------------- the latched (slow) path

#[test]
fn slow_latched() {
    // Died holding the entry's latch with a PENDING record: the latch is
    // stolen, the record freed; the live neighbour keeps its lock.
    let plex = TestPlex::small();
    let n = colliding_names(&plex, 2);
    let (q, r) = (n[0].as_str(), n[1].as_str());
    let mut b = plex.hold("B", &[("x", q)]);
    hold_dies(&plex, "A", &[("modify", r)], "slow.latched");
    let problems = plex.verify();
    assert!(
        problems.iter().any(|p| p.contains("latched")),
        "the entry is left latched: {problems:?}"
    );
    // A request on the latched entry repairs it (no cleanup command).
    plex.assert_granted("C", "x", r);
    assert_eq!(plex.cleanup(), Vec::<Value>::new(), "already cleaned up");
    plex.check_repaired(&Expect {
        dead: "A",
        retained: &[],
        free: &[r],
        live: &[("B", q)],
    });
    b.term();
    b.expect_exit_ok();
    plex.assert_empty_and_clean();
}

#[test]
fn slow_latched_with_a_sleeping_waiter() {
    // A waiter sleeps on the entry when its latch holder dies: the holder's
    // release gets through the dead latch, and the waiter is woken and granted.
    let plex = TestPlex::small();
    let n = colliding_names(&plex, 2);
    let (q, r) = (n[0].as_str(), n[1].as_str());
    let mut b = plex.hold("B", &[("x", q)]);
    let mut w = plex.spawn(&["hold", "--member", "W", "--x", q, "--timeout-ms", "600000"]);
    common::eventually("W waits for q", || {
        plex.locks()
            .iter()
            .any(|l| l.member == "W" && l.state == "pending")
    });
    hold_dies(&plex, "A", &[("modify", r)], "slow.latched");
    b.term();
    b.expect_exit_ok();
    let line = w.wait_holding();
    assert!(line.contains(" as W "), "{line}");
    assert_eq!(plex.cleanup(), Vec::<Value>::new(), "already cleaned up");
    plex.check_repaired(&Expect {
        dead: "A",
        retained: &[],
        free: &[r],
        live: &[("W", q)],
    });
    w.term();
    w.expect_exit_ok();
    plex.assert_empty_and_clean();
}

#[test]
fn slow_granted_before_unlatch() {
    // Granted under the latch, bit not yet set, member named by nothing else
    // on the entry: the rule frees it.
    let plex = TestPlex::small();
    let n = colliding_names(&plex, 3);
    let (q, r, r2) = (n[0].as_str(), n[1].as_str(), n[2].as_str());
    let mut b = plex.hold("B", &[("x", q)]);
    hold_dies(&plex, "A", &[("modify", r)], "slow.granted_before_unlatch");
    assert_report(&plex.cleanup(), "A", 0, 0, 1);
    plex.check_repaired(&Expect {
        dead: "A",
        retained: &[],
        free: &[r],
        live: &[("B", q)],
    });

    // The member is already named on the entry (its share of r2): the
    // granted modify lock may have been seen as granted, so it is retained.
    hold_dies(
        &plex,
        "A",
        &[("s", r2), ("modify", r)],
        "slow.granted_before_unlatch@2",
    );
    assert_report(&plex.cleanup(), "A", 1, 1, 0);
    plex.check_repaired(&Expect {
        dead: "A",
        retained: &[r],
        free: &[r2],
        live: &[("B", q)],
    });
    b.term();
    b.expect_exit_ok();
    plex.assert_empty_and_clean();
}

#[test]
fn convert_mode_written() {
    // Died promoting IX (modify) to SIX under the latch, the new mode
    // written, the conversion's own record still PENDING: the pending record
    // is discarded and the lock retained in SIX, which refuses IX and grants
    // IS, until restart light releases it.
    let plex = TestPlex::small();
    hold_dies(
        &plex,
        "A",
        &[("modify-lock", "ix:r"), ("convert", "six:r")],
        "convert.mode_written",
    );
    assert_report(&plex.cleanup(), "A", 1, 0, 1);
    plex.assert_verify_clean();
    let ret = plex.retained();
    assert_eq!(ret.len(), 1, "{ret:?}");
    assert_eq!(
        (
            ret[0].member.as_str(),
            ret[0].resource.as_str(),
            ret[0].mode.as_str()
        ),
        ("A", "r", "six+modify")
    );
    plex.assert_retained_by("B", "lock", "ix:r", "A");
    plex.assert_granted("B", "lock", "is:r");
    plex.recover_light("A", &["r"]);
    plex.assert_empty_and_clean();
}

#[test]
fn slow_release_latched() {
    // Died releasing under the latch: the record is PENDING (being released),
    // so the release is finished by the cleanup: nothing is retained.
    let plex = TestPlex::small();
    let n = colliding_names(&plex, 2);
    let (q, r) = (n[0].as_str(), n[1].as_str());
    let mut b = plex.hold("B", &[("x", q)]);
    hold_then_dies_on_release(&plex, "A", &[("modify", r)], "slow_release.latched");
    // B's own release has to get through the dead latch holder later on.
    assert_report(&plex.cleanup(), "A", 0, 0, 1);
    plex.check_repaired(&Expect {
        dead: "A",
        retained: &[],
        free: &[r],
        live: &[("B", q)],
    });
    b.term();
    b.expect_exit_ok();
    plex.assert_empty_and_clean();

    // Without any cleanup command, the neighbour's release repairs the entry.
    let plex = TestPlex::small();
    let mut b = plex.hold("B", &[("x", q)]);
    hold_then_dies_on_release(&plex, "A", &[("modify", r)], "slow_release.latched");
    b.term();
    b.expect_exit_ok();
    assert_eq!(
        plex.cleanup(),
        Vec::<Value>::new(),
        "B's release cleaned A up"
    );
    plex.check_repaired(&Expect {
        dead: "A",
        retained: &[],
        free: &[q, r],
        live: &[],
    });
    plex.assert_empty_and_clean();
}

#[test]
fn slow_release_after_unlatch() {
    // The word no longer names the member; the tag is still HELD: freed.
    let plex = TestPlex::small();
    let n = colliding_names(&plex, 2);
    let (q, r) = (n[0].as_str(), n[1].as_str());
    let mut b = plex.hold("B", &[("x", q)]);
    hold_then_dies_on_release(&plex, "A", &[("modify", r)], "slow_release.after_unlatch");
    assert_report(&plex.cleanup(), "A", 0, 0, 1);
    plex.check_repaired(&Expect {
        dead: "A",
        retained: &[],
        free: &[r],
        live: &[("B", q)],
    });
    b.term();
    b.expect_exit_ok();
    plex.assert_empty_and_clean();
}

// ----------------------------------------------------------------- cleanup

/// The holder of the cleanup scenarios: two non-modify and two modify locks,
/// each on its own entry of a 16-entry table.
const HOLDER: &[(&str, &str)] = &[("s", "a"), ("x", "b"), ("modify", "c"), ("modify", "d")];

/// A plex where `A` held [`HOLDER`] and was killed (not yet cleaned up).
fn killed_holder() -> TestPlex {
    let plex = TestPlex::small();
    let mut entries: Vec<u32> = HOLDER.iter().map(|(_, r)| plex.entry_of(r)).collect();
    entries.sort();
    entries.dedup();
    assert_eq!(entries.len(), HOLDER.len(), "one entry per resource");
    let mut a = plex.hold("A", HOLDER);
    a.kill_and_reap();
    plex
}

/// How a cleanup interrupted at `at` is finished.
#[derive(Clone, Copy, Debug)]
enum Finisher {
    Cleanup,
    Try,
}

/// Kill a `cfctl cleanup` at `at`, finish the job, and require the same
/// result as an uninterrupted cleanup.
fn interrupted_cleanup(at: &str, finisher: Finisher) {
    // The reference: a cleanup nobody interrupted.
    let reference = killed_holder();
    assert_report(&reference.cleanup(), "A", 2, 2, 0);
    let want = reference.snapshot();
    drop(reference);

    require_crash_points();
    let plex = killed_holder();
    let f = plex
        .spawn_env(&["cleanup", "--json"], &[("CF_CRASH_AT", at)])
        .finish();
    f.assert_killed();
    let a = plex.member("A").expect("A is listed");
    assert!(!a.alive);
    assert!(
        !plex.verify().is_empty(),
        "an interrupted cleanup leaves work (at {at})"
    );
    match finisher {
        Finisher::Cleanup => {
            let reports = plex.cleanup();
            let r = report_of(&reports, "A");
            assert_eq!(r["retained"], 2, "{r} (at {at})");
            assert_eq!(r["state"], "failed-persistent", "{r}");
        }
        Finisher::Try => {
            // A try request for a lock A retains meets the dead member being
            // cleaned up (or the dead cleaner's latch): it answers "retained"
            // and, the cleaner being dead, finishes the cleanup itself.
            plex.assert_retained_by("B", "s", "c", "A");
            assert_eq!(plex.cleanup(), Vec::<Value>::new(), "already done");
        }
    }
    assert_eq!(
        plex.snapshot(),
        want,
        "same result as an uninterrupted cleanup (crash at {at}, finished by {finisher:?})"
    );
    plex.check_repaired(&Expect {
        dead: "A",
        retained: &["c", "d"],
        free: &["a", "b"],
        live: &[],
    });
    plex.assert_empty_and_clean();
}

#[test]
fn cleanup_claimed() {
    interrupted_cleanup("cleanup.claimed", Finisher::Cleanup);
    interrupted_cleanup("cleanup.claimed", Finisher::Try);
}

#[test]
fn cleanup_entry_latched() {
    // At each of the four entries in turn.
    for n in 1..=HOLDER.len() {
        interrupted_cleanup(&format!("cleanup.entry_latched@{n}"), Finisher::Cleanup);
    }
    interrupted_cleanup("cleanup.entry_latched@1", Finisher::Try);
    interrupted_cleanup("cleanup.entry_latched@3", Finisher::Try);
}

#[test]
fn cleanup_entry_unlatched() {
    for n in 1..=HOLDER.len() {
        interrupted_cleanup(&format!("cleanup.entry_unlatched@{n}"), Finisher::Cleanup);
    }
    interrupted_cleanup("cleanup.entry_unlatched@2", Finisher::Try);
}

#[test]
fn cleanup_before_final_state() {
    interrupted_cleanup("cleanup.before_final_state", Finisher::Cleanup);
    interrupted_cleanup("cleanup.before_final_state", Finisher::Try);
}

// ------------------------------------------------- connect and disconnect

#[test]
fn connect_latched() {
    // In connect: the connect latch is left to a dead process; the next
    // connect takes it over.
    let plex = TestPlex::small();
    hold_dies(&plex, "A", &[("modify", "r")], "connect.latched");
    assert_eq!(plex.members(), vec![], "it died before taking a slot");
    let mut a = plex.hold("A", &[("modify", "r")]);
    plex.assert_contention("B", "s", "r", &["A"]);
    a.term();
    a.expect_exit_ok();
    plex.assert_empty_and_clean();

    // In disconnect (its second connect latch): everything released, slot
    // not yet freed.
    hold_then_dies_on_release(&plex, "A", &[("modify", "r")], "connect.latched@2");
    plex.assert_granted("B", "x", "r");
    assert_report(&plex.cleanup(), "A", 0, 0, 0);
    plex.check_repaired(&Expect {
        dead: "A",
        retained: &[],
        free: &["r"],
        live: &[],
    });
    plex.assert_empty_and_clean();

    // (A cleanup moves the slot to failed-persistent with one CAS and takes
    // no connect latch: `cleanup.before_final_state` covers its last window.)
}
