//! attack7: the watcher's memory of the newest beat (cf-node monitor.rs
//! `check_status`, a4dd1db) covers a damaged *older* time only.
//!
//! Real processes, real SIGSTOP. Asserts an outcome: whether the healthy
//! member was fenced.

use cf_testkit::node as support;

use cf_core::connector::liveness::{self, Isolate, Settings};
use cf_core::events::EventKind;
use nix::sys::signal::Signal;
use std::time::{Duration, Instant};
use support::*;

const IDLE: &[&str] = &["--workload", "idle"];

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
    let plex = TestPlex::with_history();
    liveness::set_settings(
        plex.region(),
        Settings {
            interval: Duration::from_millis(6000),
            isolate: Isolate::AtOnce,
        },
    )
    .unwrap();
    let mut v = plex.start("V", IDLE, &[]);
    let mut s = plex.start("S", IDLE, &[]);
    let id = plex.member("V").unwrap().id;
    // Let S see V beat a few times (its newest-beat memory is filled).
    std::thread::sleep(Duration::from_millis(2500));
    let since = plex.next_event();
    // 1. Right after a beat of V.
    let first = cf_core::testing::read_heartbeat(plex.region(), id);
    let deadline = Instant::now() + Duration::from_secs(5);
    let hb = loop {
        let hb = cf_core::testing::read_heartbeat(plex.region(), id);
        if hb != first {
            break hb;
        }
        assert!(Instant::now() < deadline, "V does not beat");
        std::thread::sleep(Duration::from_micros(200));
    };
    v.signal(Signal::SIGSTOP);
    let stopped = Instant::now();
    // 2. One damaged word: a time 100 s ahead.
    let future = (hb >> 8) + 100_000;
    cf_core::testing::write_heartbeat(plex.region(), id, future << 8);
    // Stalled at most 4.5 s (beat gap < 5.5 s < 6 s interval), less if fenced.
    while stopped.elapsed() < Duration::from_millis(4500)
        && count(&plex, "V", since, EventKind::Fenced) == 0
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    v.signal(Signal::SIGCONT);
    std::thread::sleep(Duration::from_millis(2500));
    let fenced = count(&plex, "V", since, EventKind::Fenced);
    let dump = plex.dump();
    let alive = v.is_running();
    if fenced > 0 {
        plex.wait("V's recovery to complete", || {
            count(&plex, "V", since, EventKind::RecoveryCompleted) >= 1
        });
    }
    if alive {
        v.stop().assert_success();
    }
    s.stop().assert_success();
    assert!(
        fenced == 0 && alive,
        "a healthy member (stalled < 4.5 s, interval 6 s) was fenced because one word of its \
         heartbeat was damaged to a future time (fenced events {fenced}, alive {alive})\n{dump}"
    );
}

fn count(plex: &TestPlex, name: &str, since: u64, kind: EventKind) -> usize {
    plex.events()
        .iter()
        .filter(|e| e.seq >= since && e.member == name && e.kind == kind)
        .count()
}
