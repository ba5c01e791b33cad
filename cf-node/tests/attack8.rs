//! attack8: the watcher's memory of the newest beat (cf-node monitor.rs
//! `check_status`, `StatusMemory`) is this watcher's alone and starts empty,
//! so a watcher that starts after the damage (a member that connects then)
//! judges by the damaged word alone.
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
#[ignore = "attack8: a watcher that starts after the damage fences a healthy stalled member"]
fn a_new_watcher_fences_a_healthy_member_on_one_damaged_word() {
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
    let id = plex.member("V").unwrap().id;
    std::thread::sleep(Duration::from_millis(1500));
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
    // 2. One damaged word: a time 100 s in the past.
    let past = (hb >> 8).saturating_sub(100_000).max(1);
    cf_core::testing::write_heartbeat(plex.region(), id, past << 8);
    // 3. A new watcher.
    let mut s = plex.start("S", IDLE, &[]);
    // Stalled at most 4.5 s (beat gap < 5.5 s < 6 s interval), less if fenced.
    while stopped.elapsed() < Duration::from_millis(4500)
        && count(&plex, "V", since, EventKind::Fenced) == 0
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let stall = stopped.elapsed();
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
        "a healthy member (stalled {stall:?} < 6 s interval) was fenced by a watcher that \
         started after one word of its heartbeat was damaged (fenced events {fenced}, alive \
         {alive})\n{dump}"
    );
}

fn count(plex: &TestPlex, name: &str, since: u64, kind: EventKind) -> usize {
    plex.events()
        .iter()
        .filter(|e| e.seq >= since && e.member == name && e.kind == kind)
        .count()
}
