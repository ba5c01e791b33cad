//! `cfctl sim` with the bank's lock shapes: `--lock-order random` (members
//! deadlock on purpose, the detectors break the cycles, SIGKILLs keep
//! coming) and `--hierarchy` (IX on the table, X on the rows; a killed
//! member's table IX is retained beside the others' IX). Every invariant
//! must hold (the accounts are checked one by one against the committed
//! history), no member may end by itself (a deadlock answer is never an
//! error), and the report counts the deadlocks.
//!
//! The tests assert outcomes, never timing; they run one sim at a time.

use serde_json::Value;
use std::process::Command;
use std::sync::Mutex;

/// One sim at a time (2 cores).
static SERIAL: Mutex<()> = Mutex::new(());

/// Run `cfctl --plex DIR sim ARGS --json` in a fresh directory under
/// /dev/shm (removed on drop, also when the test fails) and return its
/// report; panics if an invariant broke.
fn sim(what: &str, args: &[&str]) -> Value {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        std::path::PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let plex = tempfile::Builder::new()
        .prefix(&format!("cf-sim-{what}-"))
        .tempdir_in(base)
        .expect("a directory for the plex");
    let out = Command::new(env!("CARGO_BIN_EXE_cfctl"))
        .arg("--plex")
        .arg(plex.path())
        .arg("sim")
        .args(args)
        .arg("--json")
        .output()
        .expect("run cfctl sim");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "sim printed no JSON ({e}); stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(out.status.success(), "sim failed: {doc:#}");
    doc
}

/// Every invariant held, every member death was a kill (none ended by
/// itself: an error), and the deadlock figures are in the report.
fn check(doc: &Value) {
    assert_eq!(doc["invariants_ok"], Value::Bool(true), "{doc:#}");
    for inv in doc["invariants"].as_array().expect("invariants") {
        assert_eq!(inv["ok"], Value::Bool(true), "{inv}");
    }
    let names: Vec<&str> = doc["invariants"]
        .as_array()
        .expect("invariants")
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert!(names.contains(&"accounts_match_history"), "{names:?}");
    assert!(names.contains(&"bank_total"), "{names:?}");
    let causes = doc["deaths"]["by_cause"].as_object().expect("by_cause");
    for (cause, n) in causes {
        assert!(
            cause == "killed" || n.as_u64() == Some(0),
            "a member ended by itself ({cause}: {n}): {doc:#}"
        );
    }
    assert!(
        doc["kills"]["total"].as_u64().expect("kills") > 0,
        "{doc:#}"
    );
    assert!(doc["transactions_committed"].as_u64().expect("committed") > 0);
    let deadlocks = doc["deadlocks"].as_u64().expect("deadlocks");
    let d = &doc["deadlock_detection_ms"];
    assert_eq!(d["unit"], "ms", "{doc:#}");
    assert_eq!(d["count"].as_u64(), Some(deadlocks), "{doc:#}");
    assert!(doc["deadlock_victim_events"].as_u64().is_some(), "{doc:#}");
}

/// Random lock order on 8 accounts and a 16-entry table, three members of
/// two threads, a SIGKILL every half second or so.
#[test]
fn random_lock_order_with_kills_keeps_every_invariant_and_reports_deadlocks() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let doc = sim(
        "random",
        &[
            "--members",
            "3",
            "--threads",
            "2",
            "--accounts",
            "8",
            "--lock-entries",
            "16",
            "--lock-order",
            "random",
            "--duration",
            "6s",
            "--kill-every",
            "500ms",
            "--seed",
            "11",
        ],
    );
    check(&doc);
    assert_eq!(doc["config"]["lock_order"], "random");
    let events = doc["deadlock_victim_events"].as_u64().unwrap_or(0);
    assert!(events > 0, "no deadlock victim: {doc:#}");
    // The members stopped normally at the end counted theirs; a killed
    // member's count dies with it, its events stay.
    let counted = doc["deadlocks"].as_u64().unwrap_or(0);
    assert!(counted <= events, "{doc:#}");
    let waits = &doc["deadlock_victim_waits_ms"];
    assert_eq!(waits["count"].as_u64(), Some(events), "{doc:#}");
}

/// `--hierarchy` with reads, random lock order and kills: the table's IX
/// (retained when its member is killed) and IS never block each other.
#[test]
fn hierarchy_with_kills_keeps_every_invariant() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let doc = sim(
        "hierarchy",
        &[
            "--members",
            "3",
            "--threads",
            "2",
            "--accounts",
            "16",
            "--lock-entries",
            "16",
            "--hierarchy",
            "--read-pct",
            "20",
            "--lock-order",
            "random",
            "--duration",
            "5s",
            "--kill-every",
            "500ms",
            "--seed",
            "12",
        ],
    );
    check(&doc);
    assert_eq!(doc["config"]["hierarchy"], true);
    let reads = doc["by_kind"]["read"]["count"].as_u64().unwrap_or(0);
    assert!(reads > 0, "{doc:#}");
}

/// With `--lock-order random` the detector's crash points are reached:
/// every start armed with one of `deadlock.*` (a detector killed after its
/// claim, after choosing a victim, after telling it), and every invariant
/// still holds (the next member's detector takes the claim over).
#[cfg(feature = "crash-points")]
#[test]
fn detectors_killed_at_their_crash_points_under_random_lock_order() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let doc = sim(
        "cycle-points",
        &[
            "--members",
            "3",
            "--threads",
            "2",
            "--accounts",
            "8",
            "--lock-entries",
            "16",
            "--lock-order",
            "random",
            "--duration",
            "6s",
            "--kill-every",
            "1s",
            "--crash-points",
            "--crash-point-names",
            "deadlock.",
            "--arm-one-in",
            "1",
            "--seed",
            "4",
        ],
    );
    assert_eq!(doc["invariants_ok"], Value::Bool(true), "{doc:#}");
    let by_point = doc["crash_points"]["by_point"]
        .as_object()
        .expect("by_point");
    for p in ["deadlock.chosen", "deadlock.told"] {
        assert!(
            by_point[p]["armed"].as_u64() > Some(0),
            "{p} never armed: {doc:#}"
        );
    }
    let fired: u64 = ["deadlock.chosen", "deadlock.told"]
        .iter()
        .filter_map(|p| by_point[*p]["fired"].as_u64())
        .sum();
    assert!(fired > 0, "{doc:#}");
}

/// A lock order that is not one is a usage error (exit status 64), before
/// anything is created; so is one given to cf-node.
#[test]
fn a_bad_lock_order_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_cfctl"))
        .args(["sim", "--lock-order", "backwards"])
        .output()
        .expect("run cfctl sim");
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sorted or random"), "{err}");
    let out = Command::new(cf_testkit::cf_node())
        .args(["run", "--member", "A", "--lock-order", "backwards"])
        .output()
        .expect("run cf-node");
    assert_eq!(out.status.code(), Some(64), "{out:?}");
}
