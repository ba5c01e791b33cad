//! attack6: the watcher's confirmation of a missing status update
//! (cf-node monitor.rs `check_status`, DESIGN §9 "The fence" step 2).
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
    let plex = TestPlex::with_history();
    liveness::set_settings(
        plex.region(),
        Settings {
            interval: Duration::from_millis(3000),
            isolate: Isolate::AtOnce,
        },
    )
    .unwrap();
    let mut v = plex.start("V", IDLE, &[]);
    let mut s = plex.start("S", IDLE, &[]);
    let since = plex.next_event();
    let id = plex.member("V").unwrap().id;
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
    // 4. (its liveness thread is late: stopped, as a scheduling delay would)
    v.signal(Signal::SIGSTOP);
    // 2. One damaged word: an old time.
    let old = (hb >> 8).saturating_sub(10_000).max(1);
    cf_core::testing::write_heartbeat(plex.region(), id, old << 8);
    std::thread::sleep(Duration::from_millis(1200));
    v.signal(Signal::SIGCONT);
    // V now beats again; watch a few more periods.
    std::thread::sleep(Duration::from_millis(1500));
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
        "a healthy member (beat gap 1.2 s, interval 3 s) was fenced because one word of \
         its heartbeat was damaged (fenced events {fenced}, alive {alive})\n{dump}"
    );
}

fn count(plex: &TestPlex, name: &str, since: u64, kind: EventKind) -> usize {
    plex.events()
        .iter()
        .filter(|e| e.seq >= since && e.member == name && e.kind == kind)
        .count()
}
