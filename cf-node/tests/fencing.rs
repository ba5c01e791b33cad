//! Hung members (SPEC §4, DESIGN §9): a member that is alive but stopped
//! (SIGSTOP) is declared status-update-missing after the plex's failure
//! detection interval and fenced (SIGKILL after the identity check), at once
//! or by the operator, then recovered like a dead one; a member that is only
//! slow is never fenced; a fenced member that is resumed is dead; crash
//! points of the liveness protocol (`liveness.*`, `fence.marked`).
//!
//! Real processes, real SIGSTOP/SIGCONT/SIGKILL; every assertion is about
//! outcomes (events, who holds what, exit statuses, the data), never about
//! how fast anything happened.

use cf_testkit::node as support;

use cf_core::connector::liveness::{self, Isolate};
use cf_core::events::EventKind;
use cf_core::TryOutcome;
use nix::sys::signal::Signal;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;
use support::*;

/// A member inside a transaction most of the time (20 ms between legs).
const VICTIM: &[&str] = &["--workload", "bank", "--pause-us", "20000"];
const SURVIVOR: &[&str] = &["--workload", "bank", "--pause-us", "500"];

fn status_of(plex: &TestPlex, name: &str) -> Option<&'static str> {
    plex.member(name).map(|m| m.status)
}

/// A SIGSTOPped member holding two modify locks inside a transaction: until
/// it is fenced its locks are held by a live member (a request answers
/// "contention", never granted, never "retained"); it is declared
/// status-update-missing, fenced by a survivor (events in that order), and
/// recovered by restart light; resumed afterwards, it is dead (killed by
/// SIGKILL while stopped). Committed work is intact (history check).
#[test]
fn a_stopped_member_is_fenced_after_the_interval_and_recovered() {
    let _serial = serial();
    let plex = TestPlex::with_detection(Duration::from_millis(400), Isolate::AtOnce);
    let mut v = plex.start("V", VICTIM, &[]);
    let mut s = plex.start("S", SURVIVOR, &[]);
    let since = plex.next_event();
    let held = plex.freeze_inside_transaction(&[&v]).remove(0);
    // Until it is fenced, its locks stay V's: contention, never granted.
    while plex.count_any("V", since, EventKind::Fenced) == 0 {
        match plex.probe(&held[0]) {
            TryOutcome::Contention(_) | TryOutcome::Retained(_) => {}
            other => panic!(
                "a request for a hung member's lock got {other:?}\n{}",
                plex.dump()
            ),
        }
        if plex.count_any("V", since, EventKind::Fenced) == 0 {
            assert_eq!(plex.count_any("V", since, EventKind::Detected), 0);
        }
        std::thread::sleep(Duration::from_millis(5));
        assert!(plex.events().len() < 4000, "{}", plex.dump());
    }
    plex.wait("V's recovery to complete", || {
        plex.count_any("V", since, EventKind::RecoveryCompleted) == 1
    });
    let kinds: Vec<EventKind> = plex
        .events()
        .into_iter()
        .filter(|e| e.seq >= since && e.member == "V")
        .map(|e| e.kind())
        .filter(|k| {
            matches!(
                k,
                EventKind::StatusUpdateMissing
                    | EventKind::Fenced
                    | EventKind::Detected
                    | EventKind::TerminatedNormally
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            EventKind::StatusUpdateMissing,
            EventKind::Fenced,
            EventKind::Detected,
            EventKind::TerminatedNormally
        ],
        "{}",
        plex.dump()
    );
    plex.assert_clean_recovery("V", since, 1, Some(2));
    // Resumed after the fence: it is dead, killed by SIGKILL.
    v.signal(Signal::SIGCONT);
    let st = v.kill();
    assert_eq!(st.signal(), Some(libc::SIGKILL), "{st:?}");
    assert!(plex.member("V").is_none(), "{}", plex.dump());
    let f = s.stop();
    f.assert_success();
    plex.assert_balanced_and_clean();
    plex.assert_history_consistent();
}

/// `--isolate prompt`: the stopped member is shown as status-update-missing
/// and kept (its locks are not recovered) until the operator fences it.
#[test]
fn with_isolate_prompt_a_stopped_member_waits_for_the_operator() {
    let _serial = serial();
    let plex = TestPlex::with_detection(Duration::from_millis(300), Isolate::Prompt);
    let mut v = plex.start("V", VICTIM, &[]);
    let mut s = plex.start("S", SURVIVOR, &[]);
    let since = plex.next_event();
    let held = plex.freeze_inside_transaction(&[&v]).remove(0);
    plex.wait("V to be declared status-update-missing", || {
        status_of(&plex, "V") == Some("status-update-missing")
    });
    assert_eq!(
        plex.count_any("V", since, EventKind::StatusUpdateMissing),
        1
    );
    // Several intervals later, still not fenced: the operator decides.
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(status_of(&plex, "V"), Some("status-update-missing"));
        assert!(matches!(plex.probe(&held[0]), TryOutcome::Contention(_)));
    }
    assert_eq!(plex.count_any("V", since, EventKind::Fenced), 0);
    let m = plex.member("V").unwrap();
    let out = liveness::fence(
        plex.region(),
        m.id,
        m.generation,
        Duration::from_millis(300),
        false,
        |_, _| {},
    )
    .unwrap();
    assert!(matches!(out, liveness::Fence::Fenced { .. }), "{out:?}");
    plex.wait("V's recovery to complete", || {
        plex.count_any("V", since, EventKind::RecoveryCompleted) == 1
    });
    plex.assert_clean_recovery("V", since, 1, Some(2));
    assert_eq!(v.kill().signal(), Some(libc::SIGKILL));
    s.stop().assert_success();
    plex.assert_balanced_and_clean();
    plex.assert_history_consistent();
}

/// A stopped member that is resumed before the operator fences it beats
/// again: back to active, nothing recovered, its work goes on.
#[test]
fn a_missing_member_that_resumes_before_the_fence_is_active_again() {
    let _serial = serial();
    let plex = TestPlex::with_detection(Duration::from_millis(300), Isolate::Prompt);
    let mut v = plex.start("V", VICTIM, &[]);
    let mut s = plex.start("S", SURVIVOR, &[]);
    let since = plex.next_event();
    plex.freeze_inside_transaction(&[&v]);
    plex.wait("V to be declared status-update-missing", || {
        status_of(&plex, "V") == Some("status-update-missing")
    });
    v.signal(Signal::SIGCONT);
    plex.wait("V to beat again", || {
        status_of(&plex, "V") == Some("active")
    });
    assert_eq!(
        plex.count_any("V", since, EventKind::StatusUpdateResumed),
        1
    );
    assert_eq!(plex.count_any("V", since, EventKind::Detected), 0);
    let fv = v.stop();
    fv.assert_success();
    assert!(fv.summary("committed") > 0);
    s.stop().assert_success();
    plex.assert_balanced_and_clean();
    plex.assert_history_consistent();
}

/// Slow is not hung: a member that holds its modify locks for longer than
/// the interval (a long pause between the legs of each transfer) beside a
/// busy one is never declared missing or fenced.
#[test]
fn a_slow_member_is_never_fenced() {
    let _serial = serial();
    let plex = TestPlex::with_detection(Duration::from_millis(200), Isolate::AtOnce);
    let since = plex.next_event();
    let mut slow = plex.start("SLOW", &["--workload", "bank", "--pause-us", "500000"], &[]);
    let mut busy = plex.start("BUSY", &["--workload", "bank", "--threads", "2"], &[]);
    // Until SLOW has committed a few transfers, each holding its locks 2.5
    // intervals.
    plex.wait("SLOW to commit three transfers", || {
        plex.log("SLOW")
            .iter()
            .filter(|r| matches!(r, cf_node::wal::LogRecord::Commit { .. }))
            .count()
            >= 3
    });
    for k in [
        EventKind::StatusUpdateMissing,
        EventKind::Fenced,
        EventKind::Detected,
    ] {
        assert_eq!(plex.count_any("SLOW", since, k), 0, "{}", plex.dump());
        assert_eq!(plex.count_any("BUSY", since, k), 0, "{}", plex.dump());
    }
    slow.stop().assert_success();
    busy.stop().assert_success();
    plex.assert_balanced_and_clean();
}

/// `fence.marked`: the only survivor marks the stopped member fenced,
/// records `fenced`, and is killed before its SIGKILL. The hung member stays
/// stopped, marked; the next member to start finds the mark on a live
/// process, kills it (identity checked), and both dead members are recovered.
#[cfg(feature = "crash-points")]
#[test]
fn a_fencer_killed_between_its_mark_and_its_kill_is_finished_by_the_next_member() {
    let _serial = serial();
    let plex = TestPlex::with_detection(Duration::from_millis(300), Isolate::AtOnce);
    let mut v = plex.start("V", VICTIM, &[]);
    let mut s1 = plex.start("S1", SURVIVOR, &[("CF_CRASH_AT", "fence.marked")]);
    let since = plex.next_event();
    plex.freeze_inside_transaction(&[&v]);
    let f = s1.finish();
    assert_eq!(
        f.status.signal(),
        Some(libc::SIGKILL),
        "S1 died at fence.marked: {f:?}"
    );
    assert_eq!(plex.count_any("V", since, EventKind::Fenced), 1);
    assert!(v.is_running(), "V is marked fenced but was never signalled");
    assert_eq!(status_of(&plex, "V"), Some("fenced"));
    let mut s2 = plex.start("S2", SURVIVOR, &[]);
    plex.wait("V and S1 to be recovered", || {
        plex.count_any("V", since, EventKind::RecoveryCompleted) == 1
            && plex.count_any("S1", since, EventKind::RecoveryCompleted) == 1
    });
    assert_eq!(v.kill().signal(), Some(libc::SIGKILL));
    assert_eq!(
        plex.count_any("V", since, EventKind::Fenced),
        1,
        "one fenced event"
    );
    s2.stop().assert_success();
    plex.assert_balanced_and_clean();
    plex.assert_history_consistent();
}

/// `liveness.woken`: a watcher killed when it first sees a death on a
/// liveness word, before it passes the kernel's wake on. The other watcher
/// learns of both deaths; both are recovered once each.
#[cfg(feature = "crash-points")]
#[test]
fn a_watcher_killed_before_passing_a_wake_on_leaves_nothing_undetected() {
    let _serial = serial();
    let plex = TestPlex::with_history();
    let mut v = plex.start("V", VICTIM, &[]);
    let mut s1 = plex.start("S1", SURVIVOR, &[("CF_CRASH_AT", "liveness.woken")]);
    let mut s2 = plex.start("S2", SURVIVOR, &[]);
    let since = plex.next_event();
    plex.freeze_inside_transaction(&[&v]);
    v.kill();
    plex.wait("V to be recovered", || {
        plex.count_any("V", since, EventKind::RecoveryCompleted) == 1
    });
    // S1 dies at `liveness.woken` if its watcher woke for V before V was
    // recovered; it may also get there after (S2 was quicker), even while
    // it is being stopped: then it ends by SIGKILL, not by its SIGTERM.
    let stopped = s1.is_running().then(|| s1.stop());
    match stopped {
        Some(f) if f.status.signal() != Some(libc::SIGKILL) => f.assert_success(),
        _ => {
            plex.wait("S1 to be recovered", || {
                plex.count_any("S1", since, EventKind::RecoveryCompleted) == 1
            });
            assert_eq!(plex.count_any("S1", since, EventKind::Detected), 1);
        }
    }
    assert_eq!(plex.count_any("V", since, EventKind::Detected), 1);
    assert_eq!(plex.count_any("V", since, EventKind::CleanedUp), 1);
    s2.stop().assert_success();
    plex.assert_balanced_and_clean();
    plex.assert_history_consistent();
}

/// `liveness.before_word`: a member killed after its robust list is
/// installed and before its word holds its TID (no word to mark): the pidfd
/// watcher is the backstop; it is detected and recovered.
#[cfg(feature = "crash-points")]
#[test]
fn a_member_killed_before_its_liveness_word_is_detected_by_the_backstop() {
    let _serial = serial();
    let plex = TestPlex::new();
    let mut s = plex.start("S", SURVIVOR, &[]);
    let since = plex.next_event();
    let mut v = plex.spawn("V", VICTIM, &[("CF_CRASH_AT", "liveness.before_word")]);
    let f = v.finish();
    assert_eq!(f.status.signal(), Some(libc::SIGKILL), "{f:?}");
    plex.wait("V to be recovered", || {
        plex.count_any("V", since, EventKind::RecoveryCompleted) == 1
    });
    let d: Vec<_> = plex
        .events()
        .into_iter()
        .filter(|e| e.seq >= since && e.member == "V" && e.kind() == EventKind::Detected)
        .collect();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].by.as_deref(), Some("S"));
    s.stop().assert_success();
    plex.assert_balanced_and_clean();
}
