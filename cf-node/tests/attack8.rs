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

/// attack7's fix (requests.rs `fail`, under the connect latch, only for the
/// generation `judged`) is handed the generation the handler reads at the
/// top of the loop iteration that gives up (monitor.rs `handle`:
/// `requests::fail(.., slot.generation)`), not the one its failed restart
/// lights were counted against. A later connection's death that is cleaned
/// up before that read (the request is CLAIMED, so its cleanup's
/// `post_claimed` posts nothing) is judged as the connection that failed
/// five times: the request turns FAILED for a death no restart light ever
/// tried, and nobody claims it until FAILED_RETRY (10 min).
///
/// Interleaving:
/// 1. X dies (generation g1), its log a directory (a persistent reason);
///    S claims; restart lights 1-4 fail; light 5 is started (S in
///    `child.wait`).
/// 2. (S descheduled / slow to be woken: here SIGSTOP.) Light 5 fails and
///    exits: attempts = 5.
/// 3. The operator fixes the log and restarts X normally (RECOVERING, g2);
///    it is SIGKILLed while recovering; cleaned up (post_claimed: CLAIMED ->
///    nothing posted); X is FAILED_PERSISTENT, generation g2.
/// 4. S runs on: top of the loop reads FAILED_PERSISTENT g2, attempts >= 5
///    -> `fail(.., g2)`: the latch check passes -> FAILED.
///
/// Suggested fix: remember the generation the attempts were counted
/// against (set when a restart light is started) and reset the count, or
/// pass that generation to `fail`, when the slot's generation differs.
#[test]
fn a_death_after_the_fifth_failed_light_is_swallowed_by_failed() {
    use cf_core::requests::RequestState;
    use cf_core::{testing, Member};
    use cf_core::{Mode, TryOutcome};
    let _serial = serial();
    let plex = TestPlex::new();
    let log = cf_node::wal::log_path(plex.path(), "X");
    std::fs::create_dir(&log).unwrap();
    let mut s = plex.start("S", IDLE, &[]);
    // 1. X holds a modify lock and "dies".
    let x = Member::connect(plex.region().clone(), "X").unwrap();
    let id = x.id();
    let mut h = x.holder().unwrap();
    assert!(matches!(
        h.try_lock(b"acct:1", Mode::Modify).unwrap(),
        TryOutcome::Granted(_)
    ));
    std::mem::forget(h);
    std::mem::forget(x);
    testing::fake_reused_pid(plex.region(), id);
    let g1 = cf_core::connector::slot_view(plex.region(), id)
        .unwrap()
        .generation;
    // Light 5 started: H's set_worker and each light's own count attempts
    // twice per light.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = cf_core::requests::list(plex.region()).unwrap();
        if r.iter().any(|r| r.member_id == id && r.attempts >= 9) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no fifth restart light\n{}",
            plex.dump()
        );
        std::hint::spin_loop();
    }
    // 2. S stopped while it waits for light 5.
    s.signal(Signal::SIGSTOP);
    let before = plex.requests();
    let r = before.iter().find(|r| r.member_id == id).unwrap().clone();
    assert_eq!(r.state, RequestState::Claimed, "lost the race: {r:?}");
    plex.wait("light 5 to end", || {
        plex.requests()
            .iter()
            .find(|r| r.member_id == id)
            .is_some_and(|r| !r.worker_alive)
    });
    // 3. Fixed; restarted normally; killed while recovering; cleaned up.
    std::fs::remove_dir(&log).unwrap();
    let since = plex.next_event();
    let restarted =
        Member::connect_with(plex.region().clone(), "X", cf_core::ConnectMode::Restart).unwrap();
    assert_eq!(restarted.id(), id);
    assert!(restarted.is_recovering().unwrap());
    let g2 = cf_core::connector::slot_view(plex.region(), id)
        .unwrap()
        .generation;
    assert_ne!(g1, g2);
    testing::fake_reused_pid(plex.region(), id);
    std::mem::forget(restarted);
    cf_core::cleanup_member(plex.region(), id).unwrap();
    assert_eq!(
        cf_core::connector::slot_view(plex.region(), id)
            .unwrap()
            .state,
        cf_core::MemberState::FailedPersistent
    );
    // 4. S runs on.
    s.signal(Signal::SIGCONT);
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline && count(&plex, "X", since, EventKind::RecoveryCompleted) == 0 {
        std::thread::sleep(Duration::from_millis(50));
    }
    let done = count(&plex, "X", since, EventKind::RecoveryCompleted);
    let dump = plex.dump();
    let reqs = plex.requests();
    s.stop().assert_success();
    assert!(
        done == 1,
        "X's normal restart (generation {g2}) died recovering after the fifth failed light of \
         generation {g1} (its log since fixed): a new death, yet its request is {:?} and it was \
         not recovered in 15 s\n{dump}",
        reqs.iter().find(|r| r.member_id == id).map(|r| r.state)
    );
}

fn count(plex: &TestPlex, name: &str, since: u64, kind: EventKind) -> usize {
    plex.events()
        .iter()
        .filter(|e| e.seq >= since && e.member == name && e.kind == kind)
        .count()
}
