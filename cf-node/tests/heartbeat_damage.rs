//! The heartbeat / fence protocol (DESIGN §9) under attack (attack5 to
//! attack8): the operator's forced fence, and damage to the heartbeat word
//! and to the plex's failure detection interval (region content is
//! untrusted), alone or with a stall of the member shorter than the interval.
//!
//! Real processes, real SIGSTOP/SIGKILL. Each test asserts an outcome (who
//! was fenced or killed); an absence (nobody fenced) is observed over a
//! bounded number of the watchers' status periods.

use cf_testkit::node as support;

use cf_core::connector::liveness::{self, Fence, Isolate, Settings, HB_FENCED};
use cf_core::events::EventKind;
use nix::sys::signal::Signal;
use std::time::{Duration, Instant};
use support::*;

const WORKLOAD: &[&str] = &["--workload", "bank", "--pause-us", "2000"];
const IDLE: &[&str] = &["--workload", "idle"];

/// `cfctl fence --force` (`liveness::fence(.., force = true, ..)`) is the
/// operator's word that a member whose heartbeat is fresh must be fenced.
/// It never fences it: the forced branch marks `MISSING`, but `classify`
/// ignores `MISSING` on a fresh beat, so the loop sees `Fresh` again, finds
/// the flag already set, and after 64 turns answers `NotMissing`.
#[test]
fn a_forced_fence_of_a_fresh_member_fences_it() {
    let _serial = serial();
    let plex = TestPlex::with_detection(Duration::from_millis(3000), Isolate::Prompt);
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
        plex.count_any("V", since, EventKind::RecoveryCompleted) == 1
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
    let plex = TestPlex::with_detection(Duration::from_millis(600), Isolate::AtOnce);
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
    let plex = TestPlex::with_detection(Duration::from_millis(300), Isolate::AtOnce);
    let mut v = plex.start("V", &["--workload", "bank", "--pause-us", "20000"], &[]);
    let mut s = plex.start("S", WORKLOAD, &[]);
    let since = plex.next_event();
    let id = plex.member("V").unwrap().id;
    cf_core::testing::write_heartbeat(plex.region(), id, (u64::MAX >> 8) << 8);
    plex.freeze_inside_transaction(&[&v]);
    // Twenty intervals: a hung member is fenced within about one.
    let fenced = happens_within(Duration::from_secs(6), || {
        plex.count_any("V", since, EventKind::Fenced) > 0
    });
    let dump = plex.dump();
    v.kill();
    if fenced {
        plex.wait("V's recovery to complete", || {
            plex.count_any("V", since, EventKind::RecoveryCompleted) == 1
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
    let plex = TestPlex::with_detection(Duration::from_millis(3000), Isolate::AtOnce);
    let mut a = plex.start("A", WORKLOAD, &[]);
    let mut b = plex.start("B", WORKLOAD, &[]);
    let since = plex.next_event();
    // Damage (any member may write the page): in range, so taken as is.
    liveness::set_settings(
        plex.region(),
        Settings {
            interval: Duration::from_millis(100),
            isolate: Isolate::AtOnce,
            ..Default::default()
        },
    )
    .unwrap();
    let mut c = plex.start("C", WORKLOAD, &[]);
    let fenced = happens_within(Duration::from_millis(1500), || {
        plex.count_any("A", since, EventKind::Fenced)
            + plex.count_any("B", since, EventKind::Fenced)
            > 0
    });
    let dump = plex.dump();
    // Let whatever was fenced be recovered before stopping the rest.
    if fenced {
        plex.wait("the fenced members' recoveries", || {
            ["A", "B"].iter().all(|n| {
                plex.count_any(n, since, EventKind::Fenced)
                    == plex.count_any(n, since, EventKind::RecoveryCompleted)
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

/// When the watcher S starts, in the stall scenarios below.
enum Watcher {
    /// Before the damage, having watched V beat for this long.
    Before(Duration),
    /// Right after the damage (it never saw V beat).
    After,
}

/// V (idle) stalls (SIGSTOP) right after a beat for `stall` (less if it is
/// fenced meanwhile), one word of its heartbeat damaged to `damage(time)`;
/// then it runs on, watched for 2.5 s more. Returns how often V was fenced,
/// whether it still runs, and the plex as it was, after every process
/// ended (a fenced V's recovery awaited).
fn stall_with_damage(
    interval: Duration,
    watcher: Watcher,
    damage: impl Fn(u64) -> u64,
    stall: Duration,
) -> (usize, bool, String) {
    let plex = TestPlex::with_detection(interval, Isolate::AtOnce);
    let mut v = plex.start("V", IDLE, &[]);
    let id = plex.member("V").unwrap().id;
    let mut s = match watcher {
        Watcher::Before(warm) => {
            let s = plex.start("S", IDLE, &[]);
            std::thread::sleep(warm);
            Some(s)
        }
        Watcher::After => {
            std::thread::sleep(Duration::from_millis(1500));
            None
        }
    };
    let since = plex.next_event();
    let hb = plex.next_beat(id);
    v.signal(Signal::SIGSTOP);
    let stopped = Instant::now();
    cf_core::testing::write_heartbeat(plex.region(), id, damage(hb >> 8).max(1) << 8);
    let mut s = s.take().unwrap_or_else(|| plex.start("S", IDLE, &[]));
    while stopped.elapsed() < stall && plex.count_any("V", since, EventKind::Fenced) == 0 {
        std::thread::sleep(Duration::from_millis(20));
    }
    v.signal(Signal::SIGCONT);
    std::thread::sleep(Duration::from_millis(2500));
    let fenced = plex.count_any("V", since, EventKind::Fenced);
    let dump = plex.dump();
    let alive = v.is_running();
    if fenced > 0 {
        plex.wait("V's recovery to complete", || {
            plex.count_any("V", since, EventKind::RecoveryCompleted) >= 1
        });
    }
    if alive {
        v.stop().assert_success();
    }
    s.stop().assert_success();
    (fenced, alive, dump)
}

/// "A healthy member whose word was damaged, which beats within a period,
/// is never fenced": the watcher's confirmation window is measured from
/// the moment *it first saw* the damaged value, not from the member's last
/// beat, and has no margin at all (`since.elapsed() > beat_period(judged)`,
/// monitor.rs:240, checked on the watcher's next status pass, one period
/// later). So the member's next beat must land within
/// `period - (first sighting - last beat)`: any lateness of the liveness
/// thread beyond that (scheduling) fences it, although its heartbeat is
/// far within the failure-detection interval.
///
/// Interleaving (interval 3 s, beat period 500 ms):
/// 1. V beats at b (liveness.rs `beat`), its liveness thread parks 500 ms.
/// 2. One damaged word: V's heartbeat is overwritten with an old time.
/// 3. S's status pass at t0 in (b, b + 500 ms] sees it missing, marks it,
///    remembers (value, t0).
/// 4. V's liveness thread is late (here: stopped 1.2 s in all, 40% of the
///    interval; without the damage this never fences anyone).
/// 5. S's next pass, t0 + 500 ms + ε < b + 1.2 s: value unchanged,
///    `since.elapsed() > 500 ms` -> `fence_confirmed` -> SIGKILL.
///
/// Broken: a healthy member (beat gap 1.2 s < 3 s interval) is fenced
/// because of one damaged word. With no stall at all it is a race of V's
/// beat jitter against S's pass jitter (probability ~ lateness / period).
/// Now a watcher judges by the newest beat it saw (an older time is damage)
/// and confirms over two beat periods.
#[test]
fn one_damaged_word_and_a_stall_within_the_interval_fence_a_healthy_member() {
    let _serial = serial();
    let (fenced, alive, dump) = stall_with_damage(
        Duration::from_millis(3000),
        Watcher::Before(Duration::ZERO),
        |t| t.saturating_sub(10_000),
        Duration::from_millis(1200),
    );
    assert!(
        fenced == 0 && alive,
        "a healthy member (beat gap 1.2 s, interval 3 s) was fenced because one word of \
         its heartbeat was damaged (fenced events {fenced}, alive {alive})\n{dump}"
    );
}

/// DESIGN §9 step 2: "a damaged word plus a stall shorter than the interval
/// fences nobody (attack6)". Only for a damaged time *older* than the
/// newest the watcher saw (monitor.rs:233 skips `b > seen >> 8`). A damaged
/// time far *ahead* of the clock (more than the interval) is `Missing` by
/// `classify` (liveness.rs:664, `abs_diff`), is newer than the remembered
/// beat, so it is marked and confirmed over two beat periods from the
/// watcher's first sighting (monitor.rs:251): a member whose liveness thread
/// is late by two to three periods (here 4.5 s of a 6 s interval; its real
/// beat gap stays below the interval) is fenced for one damaged word.
///
/// Interleaving (interval 6 s, period 1 s):
/// 1. V beats at b; stopped right after (a scheduling stall).
/// 2. One damaged word: a time 100 s in the future.
/// 3. S's pass at t0 <= b + 1 s: Missing (ahead by > interval), not older
///    than S's newest (b) -> `mark_missing`, remembered (value, t0).
/// 4. S's pass at t0 + 2 s + ε: the same value -> `fence_confirmed`,
///    SIGKILL, while V's beat gap is at most 3.x s < 6 s.
///
/// Suggested fix: judge a time ahead of the clock by the newest beat seen
/// (skip while `now - best <= judged`), as an older one is.
#[test]
fn a_damaged_future_time_and_a_stall_within_the_interval_fence_a_healthy_member() {
    let _serial = serial();
    let (fenced, alive, dump) = stall_with_damage(
        Duration::from_millis(6000),
        Watcher::Before(Duration::from_millis(2500)),
        |t| t + 100_000,
        Duration::from_millis(4500),
    );
    assert!(
        fenced == 0 && alive,
        "a healthy member (stalled < 4.5 s, interval 6 s) was fenced because one word of its \
         heartbeat was damaged to a future time (fenced events {fenced}, alive {alive})\n{dump}"
    );
}

/// DESIGN §9: one damaged heartbeat word plus a stall shorter than the
/// interval fences nobody (attack6, attack7). Only for a watcher that saw
/// the member beat before (monitor.rs `check_status`: `best` is `None` for
/// a connection this watcher has no memory of, so the damage skip is not
/// taken and the value is marked and confirmed over two beat periods from
/// the watcher's first sighting).
///
/// Interleaving (interval 6 s, period 1 s):
/// 1. V (alone, nobody watching it) beats at b; stalled right after.
/// 2. One damaged word: a time 100 s in the past.
/// 3. S connects now; its first status pass: Missing, no memory ->
///    `mark_missing`, remembered (value, t0).
/// 4. S's pass at t0 + 2 s + ε: the same value -> `fence_confirmed`,
///    SIGKILL, while V's real beat gap is well under 6 s.
///
/// Suggested fix: a watcher fences a connection only once it has watched
/// it for the judged interval (no memory -> the confirmation lasts until
/// first sighting + interval), or keep the newest beat in the region (per
/// slot, max-updated by every watcher) rather than per watcher.
#[test]
fn a_new_watcher_fences_a_healthy_member_on_one_damaged_word() {
    let _serial = serial();
    let (fenced, alive, dump) = stall_with_damage(
        Duration::from_millis(6000),
        Watcher::After,
        |t| t.saturating_sub(100_000),
        Duration::from_millis(4500),
    );
    assert!(
        fenced == 0 && alive,
        "a healthy member (stalled < 4.5 s, interval 6 s) was fenced by a watcher that \
         started after one word of its heartbeat was damaged (fenced events {fenced}, alive \
         {alive})\n{dump}"
    );
}
