//! The kill torture test: `cfctl sim` with at least 200 kills of members,
//! restarters, restart-light processes and every member at once, some at
//! named crash points (`--crash-points`), on three members, and every
//! invariant checked. A longer run is `#[ignore]`d (run it
//! with `cargo test --release -p cf-tools --test torture -- --ignored`, or use
//! the soak script).

use serde_json::Value;
use std::process::Command;

fn sim(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_cfctl"))
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
    assert!(
        out.status.success(),
        "sim reported a broken invariant: {doc:#}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    doc
}

fn check(doc: &Value, min_kills: u64) {
    assert_eq!(doc["invariants_ok"], Value::Bool(true), "{doc:#}");
    for inv in doc["invariants"].as_array().expect("invariants") {
        assert_eq!(inv["ok"], Value::Bool(true), "{inv}");
    }
    assert_eq!(doc["bank_total_expected"], doc["bank_total_actual"]);
    let kills = doc["kills"].as_u64().expect("kills");
    assert!(kills >= min_kills, "only {kills} kills: {doc:#}");
    assert!(doc["recoveries"].as_u64().expect("recoveries") >= min_kills / 2);
    assert!(doc["transactions_committed"].as_u64().expect("committed") > 0);
    assert!(doc["recovery_ms"]["max"].is_number(), "{doc:#}");
    assert!(doc["detection_us"]["p50"].is_number(), "{doc:#}");
}

#[test]
fn two_hundred_kills_keep_every_invariant() {
    let doc = sim(&[
        "--members",
        "3",
        "--kills",
        "200",
        "--kill-every",
        "30",
        "--kill-restarters",
        "--kill-all-every",
        "1500",
        "--duration",
        "600",
        "--seed",
        "20261125",
        "--pause-us",
        "300",
        "--buffer-pool-mb",
        "4",
        "--crash-points",
    ]);
    check(&doc, 200);
    let kinds = &doc["kills_by_kind"];
    // Crash points need the crash-points feature (the test command enables it).
    let kinds_wanted: &[&str] = if cfg!(feature = "crash-points") {
        &[
            "member",
            "restarter",
            "restart_light",
            "all_members",
            "crash_point",
        ]
    } else {
        &["member", "restarter", "restart_light", "all_members"]
    };
    for k in kinds_wanted {
        assert!(kinds[k].as_u64().unwrap_or(0) > 0, "no {k} fault: {kinds}");
    }
}

#[test]
fn same_seed_same_schedule() {
    let a = sim(&[
        "--members",
        "2",
        "--kills",
        "6",
        "--kill-every",
        "40",
        "--seed",
        "9",
        "--kill-restarters",
    ]);
    let b = sim(&[
        "--members",
        "2",
        "--kills",
        "6",
        "--kill-every",
        "40",
        "--seed",
        "9",
        "--kill-restarters",
    ]);
    check(&a, 6);
    check(&b, 6);
    assert_eq!(a["kills_by_kind"], b["kills_by_kind"]);
}

#[test]
#[ignore = "long: about 2000 kills"]
fn long_torture() {
    let doc = sim(&[
        "--members",
        "4",
        "--kills",
        "2000",
        "--kill-every",
        "30",
        "--kill-restarters",
        "--kill-all-every",
        "3000",
        "--duration",
        "3600",
        "--seed",
        "7",
    ]);
    check(&doc, 2000);
}
