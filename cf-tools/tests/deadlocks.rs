//! `cfctl detect-deadlocks` and `cfctl create --deadlock-interval` as a user
//! meets them: a cycle of two members (threads of this test process) broken
//! by one round run from the command line, and the interval checked and kept.
//! Outcomes only, never timing.

use cf_core::{deadlock, Member, Mode, Plex, Region, WaitError};
use cf_testkit::tools::{self as common, TestPlex};
use std::sync::{Arc, Barrier};
use std::time::Duration;

#[test]
fn detect_deadlocks_tells_one_victim_and_the_other_request_is_granted() {
    let plex = TestPlex::new(None);
    let r = Arc::new(
        Region::open(&Plex {
            dir: plex.path().into(),
        })
        .unwrap(),
    );
    let go = Arc::new(Barrier::new(2));
    let waiter = |name: &str, first: &'static [u8], then: &'static [u8]| {
        let m = Member::connect(r.clone(), name).unwrap();
        let mut h = m.holder().unwrap();
        let go = go.clone();
        std::thread::spawn(move || {
            let patience = Duration::from_secs(60);
            let held = h.lock(first, Mode::Modify, patience).unwrap();
            go.wait();
            let out = h.lock(then, Mode::Modify, patience);
            if let Ok(id) = out {
                h.unlock(id).unwrap();
            }
            h.unlock(held).unwrap();
            drop(h);
            m.disconnect().unwrap();
            matches!(out, Err(WaitError::Deadlock { .. }))
        })
    };
    let ta = waiter("A", b"r1", b"r2");
    let tb = waiter("B", b"r2", b"r1");
    common::eventually("both requests waiting", || deadlock::waits(&r).len() == 2);
    let v = plex.json(&["detect-deadlocks"]);
    assert_eq!(v["waiting"], 2, "{v}");
    let victims = v["victims"].as_array().unwrap();
    assert_eq!(victims.len(), 1, "{v}");
    assert_eq!(victims[0]["cycle"].as_array().unwrap().len(), 2, "{v}");
    let told = [ta.join().unwrap(), tb.join().unwrap()];
    assert_eq!(told.iter().filter(|t| **t).count(), 1, "{told:?}");
    let name = victims[0]["member"].as_str().unwrap();
    assert!(told[usize::from(name == "B")], "{v} {told:?}");
    // The event is shown.
    let text = plex.run(&["display", "events"]).stdout;
    assert!(
        text.contains(&format!("a request of {name} was a deadlock victim")),
        "{text}"
    );
    // Nothing waits any more.
    let v = plex.json(&["detect-deadlocks"]);
    assert_eq!(
        (v["waiting"].as_u64(), v["victims"].as_array().map(Vec::len)),
        (Some(0), Some(0))
    );
}

#[test]
fn create_checks_and_keeps_the_deadlock_interval() {
    let dir = tempfile::Builder::new()
        .prefix("cf-dl-")
        .tempdir_in("/dev/shm")
        .unwrap();
    let plex = dir.path().join("p");
    let p = plex.to_str().unwrap();
    let out = common::cfctl_in(&plex, &["create", "--deadlock-interval", "5ms"]);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("deadlock detection interval must be from 10 ms"),
        "{out:?}"
    );
    assert!(!plex.join("region").exists());
    let out = common::cfctl_in(&plex, &["create", "--deadlock-interval", "250", "--json"]);
    assert!(out.status.success(), "{out:?} {p}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["deadlock_interval_ms"], 250);
    let r = Region::open(&Plex { dir: plex.clone() }).unwrap();
    assert_eq!(
        cf_core::connector::liveness::settings(&r).deadlock_interval,
        Duration::from_millis(250)
    );
}
