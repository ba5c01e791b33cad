//! `cfctl bench --quick` as a user runs it: every row the lock-engine
//! issue's targets need is there, each with a figure, and a peer this build
//! cannot run is listed as skipped with its reason. No figure is judged
//! here (the machines are shared): the ratios are what `cfctl bench`
//! prints, and `docs/BENCHMARKS.md` records them with machine and date.

use serde_json::Value;
use std::process::Command;

#[test]
fn a_quick_bench_has_every_row_its_targets_need() {
    let out = Command::new(env!("CARGO_BIN_EXE_cfctl"))
        .args(["bench", "--quick", "--only", "uncontended,across", "--json"])
        .output()
        .expect("running cfctl bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    let doc: Value = serde_json::from_slice(&out.stdout).expect("bench --json is JSON");
    let rows = doc["results"].as_array().expect("results");
    let row = |name: &str| rows.iter().find(|r| r["name"] == name);
    for name in [
        "cas_pair",
        "cas_cas_pair",
        "cf_share",
        "cf_exclusive",
        "cf_exclusive_modify",
        "pthread_robust_mutex",
        "cf_exclusive_2p_shared",
        "pthread_robust_mutex_2p_shared",
        "cf_handoff_pingpong",
        "handoff_spin_floor",
    ] {
        let r = row(name).unwrap_or_else(|| panic!("no row {name}"));
        let ns = r["ns_per_op"].as_f64().unwrap_or(0.0);
        assert!(ns > 0.0, "{name}: {r}");
    }
    // CPU of waiters per second held: a figure (0 is possible: nobody spun).
    for k in [1, 4, 8] {
        let r = row(&format!("waiters_cpu_k{k}")).unwrap_or_else(|| panic!("no waiters row {k}"));
        assert!(r["ns_per_op"].as_f64().is_some_and(|v| v >= 0.0), "{r}");
        assert_eq!(r["reps"], doc["method"]["across"]["reps"], "{r}");
    }
    // Berkeley DB: measured, or skipped with a reason.
    let skipped = doc["skipped"].as_array().expect("skipped");
    match row("bdb_lock") {
        Some(r) => assert!(r["ns_per_op"].as_f64().is_some_and(|v| v > 0.0), "{r}"),
        None => {
            assert!(
                skipped.iter().any(|s| s["name"] == "bdb_lock"
                    && s["reason"].as_str().is_some_and(|r| !r.is_empty())),
                "bdb_lock is neither measured nor skipped with a reason: {skipped:?}"
            )
        }
    }
    // The targets of the issue are checked by name.
    let checks = doc["checks"].as_array().expect("checks");
    for name in [
        "cf_exclusive / pthread_robust_mutex",
        "cf_exclusive / cas_cas_pair",
        "cf_handoff_pingpong / handoff_spin_floor",
        "cf_exclusive_2p_shared / pthread_robust_mutex_2p_shared",
    ] {
        assert!(
            checks.iter().any(|c| c["name"] == name),
            "no check {name}: {checks:?}"
        );
    }
}
