//! attack5: the heartbeat / fence protocol (DESIGN §9) against the operator's
//! forced fence and against damage to the heartbeat word and to the plex's
//! failure detection interval (region content is untrusted).
//!
//! Real processes, real SIGSTOP/SIGKILL. Each test asserts an outcome (who
//! was fenced or killed); an absence (nobody fenced) is observed over a
//! bounded number of the watchers' status periods.

use cf_testkit::node as support;

use cf_core::connector::liveness::{self, Fence, Isolate, Settings, HB_FENCED};
use cf_core::events::EventKind;
use std::time::{Duration, Instant};
use support::*;

const WORKLOAD: &[&str] = &["--workload", "bank", "--pause-us", "2000"];

fn plex_with(interval_ms: u64, isolate: Isolate) -> TestPlex {
    let plex = TestPlex::with_history();
    liveness::set_settings(
        plex.region(),
        Settings {
            interval: Duration::from_millis(interval_ms),
            isolate,
        },
    )
    .unwrap();
    plex
}

fn count(plex: &TestPlex, name: &str, since: u64, kind: EventKind) -> usize {
    plex.events()
        .iter()
        .filter(|e| e.seq >= since && e.member == name && e.kind == kind)
        .count()
}

/// Watch for `d`, returning early if `bad` holds (then true).
fn happens_within(d: Duration, mut bad: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if bad() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bad()
}

/// `cfctl fence --force` (`liveness::fence(.., force = true, ..)`) is the
/// operator's word that a member whose heartbeat is fresh must be fenced.
/// It never fences it: the forced branch marks `MISSING`, but `classify`
/// ignores `MISSING` on a fresh beat, so the loop sees `Fresh` again, finds
/// the flag already set, and after 64 turns answers `NotMissing`.
#[test]
fn a_forced_fence_of_a_fresh_member_fences_it() {
    let _serial = serial();
    let plex = plex_with(3000, Isolate::Prompt);
    let mut v = plex.start("V", WORKLOAD, &[]);
    let mut s = plex.start("S", WORKLOAD, &[]);
    let since = plex.next_event();
    let m = plex.member("V").unwrap();
    let out = liveness::fence(
        plex.region(),
        m.id,
        m.generation,
        Duration::from_millis(3000),
        true,
        |_, _| {},
    )
    .unwrap();
    assert!(
        matches!(out, Fence::Fenced { .. }),
        "forced fence of a fresh member answered {out:?}\n{}",
        plex.dump()
    );
    plex.wait("V's recovery to complete", || {
        count(&plex, "V", since, EventKind::RecoveryCompleted) == 1
    });
    v.kill();
    s.stop().assert_success();
    plex.assert_balanced_and_clean();
}

/// One damaged bit (`HB_FENCED`) in a healthy member's heartbeat word kills
/// it: its own next beat answers `Beat::Fenced` and it raises SIGKILL, and a
/// survivor's `check_status` finds `Status::Fenced` on a live process and
/// kills it "again". Nothing confirms the fence (the beat is fresh, nobody
/// judged it missing): the liveness word's rule "death is confirmed, never
/// assumed" has no counterpart for the heartbeat.
#[test]
fn a_damaged_fenced_bit_never_kills_a_healthy_member() {
    let _serial = serial();
    let plex = plex_with(600, Isolate::AtOnce);
    let mut v = plex.start("V", WORKLOAD, &[]);
    let mut s = plex.start("S", WORKLOAD, &[]);
    let id = plex.member("V").unwrap().id;
    let hb = cf_core::testing::read_heartbeat(plex.region(), id);
    assert_ne!(hb, 0, "V beats");
    cf_core::testing::write_heartbeat(plex.region(), id, hb | HB_FENCED);
    // Ten beat periods of V (100 ms each) and of S's status check.
    let died = happens_within(Duration::from_millis(1000), || !v.is_running());
    assert!(
        !died,
        "a healthy member was killed by one damaged bit of its heartbeat: {:?}\n{}",
        v.finish().status,
        plex.dump()
    );
    v.stop().assert_success();
    s.stop().assert_success();
    plex.assert_balanced_and_clean();
}

/// A damaged heartbeat time far in the future switches fencing off for
/// that member for good: a beat never moves time backwards
/// (`(cur >> 8).max(now)`), so its age stays 0 whatever it does, and once
/// it hangs (SIGSTOP) it is never declared missing nor fenced; its modify
/// locks are held by a hung process forever.
#[test]
fn a_damaged_future_heartbeat_never_switches_fencing_off() {
    let _serial = serial();
    let plex = plex_with(300, Isolate::AtOnce);
    let mut v = plex.start("V", &["--workload", "bank", "--pause-us", "20000"], &[]);
    let mut s = plex.start("S", WORKLOAD, &[]);
    let since = plex.next_event();
    let id = plex.member("V").unwrap().id;
    cf_core::testing::write_heartbeat(plex.region(), id, (u64::MAX >> 8) << 8);
    plex.freeze_inside_transaction(&[&v]);
    // Twenty intervals: a hung member is fenced within about one.
    let fenced = happens_within(Duration::from_secs(6), || {
        count(&plex, "V", since, EventKind::Fenced) > 0
    });
    let dump = plex.dump();
    v.kill();
    if fenced {
        plex.wait("V's recovery to complete", || {
            count(&plex, "V", since, EventKind::RecoveryCompleted) == 1
        });
    }
    s.stop().assert_success();
    assert!(
        fenced,
        "a hung member with a damaged (future) heartbeat was never fenced\n{dump}"
    );
}

/// "A value out of range (damage) is read as the default: it can neither
/// fence members at once nor switch fencing off" (liveness.rs `settings`).
/// An in-range damaged value does: members beat every `interval / 6` as
/// read *when they started* (3 s: every 500 ms), while a watcher started
/// after the damage judges them with its own reading (100 ms), declares
/// every one of them missing and fences them all at once.
#[test]
fn in_range_damage_to_the_interval_fences_no_healthy_member() {
    let _serial = serial();
    let plex = plex_with(3000, Isolate::AtOnce);
    let mut a = plex.start("A", WORKLOAD, &[]);
    let mut b = plex.start("B", WORKLOAD, &[]);
    let since = plex.next_event();
    // Damage (any member may write the page): in range, so taken as is.
    liveness::set_settings(
        plex.region(),
        Settings {
            interval: Duration::from_millis(100),
            isolate: Isolate::AtOnce,
        },
    )
    .unwrap();
    let mut c = plex.start("C", WORKLOAD, &[]);
    let fenced = happens_within(Duration::from_millis(1500), || {
        count(&plex, "A", since, EventKind::Fenced) + count(&plex, "B", since, EventKind::Fenced)
            > 0
    });
    let dump = plex.dump();
    // Let whatever was fenced be recovered before stopping the rest.
    if fenced {
        plex.wait("the fenced members' recoveries", || {
            ["A", "B"].iter().all(|n| {
                count(&plex, n, since, EventKind::Fenced)
                    == count(&plex, n, since, EventKind::RecoveryCompleted)
            })
        });
    }
    for n in [&mut a, &mut b] {
        if n.is_running() {
            n.stop().assert_success();
        }
    }
    c.stop().assert_success();
    assert!(
        !fenced,
        "healthy members beating as their interval says were fenced after an in-range damage\n{dump}"
    );
}
