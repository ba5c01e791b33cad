//! The bank workload's lock shapes with real `cf-node` processes:
//! `--lock-order random` (transactions deadlock on purpose; every victim is
//! an answer the worker backs out of, never an error) and `--hierarchy` (IX
//! modify on the table, then X modify on the rows; a killed member's table
//! IX is retained and refuses S, not another member's IX or IS).
//!
//! Like the other multi-process tests, they assert outcomes and wait for
//! conditions with a deadline that only turns a hang into a failure;
//! processes are killed and reaped, and the plex removed, on drop.

use cf_core::events::{EventData, EventKind};
use cf_core::{LockMode, Member, Mode, TryOutcome};
use cf_node::store::Store;
use cf_testkit::node::*;
use serde_json::Value;

/// Every transaction on the first 4 accounts, two worker threads, locks in
/// a random order: cycles between the threads of one member and across
/// members.
const RANDOM: &[&str] = &[
    "--workload",
    "bank",
    "--threads",
    "2",
    "--skew",
    "hot:4:100",
    "--lock-order",
    "random",
];

/// The closing JSON summary of a member stopped normally.
fn summary(f: &Finished) -> Value {
    f.assert_success();
    let line = f
        .stdout
        .iter()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("{}: no JSON summary: {f:?}", f.name));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{}: {e}: {line}", f.name))
}

fn victim_events(plex: &TestPlex) -> usize {
    plex.events()
        .iter()
        .filter(|e| e.kind() == EventKind::DeadlockVictim)
        .count()
}

/// Two members, two threads each, on 4 accounts with random lock order:
/// the detector breaks cycles (deadlocks reported, each with its detection
/// latency), no member ends in error, the total holds and every account
/// matches the committed history.
#[test]
fn random_lock_order_deadlocks_are_answered_and_backed_out() {
    let _serial = serial();
    let plex = TestPlex::with_history();
    let mut a = plex.start("A", RANDOM, &[]);
    let mut b = plex.start("B", RANDOM, &[]);
    // A few victims (the detector runs every 100 ms by default).
    plex.wait("deadlock victims", || victim_events(&plex) >= 4);
    let fa = a.stop();
    let fb = b.stop();
    let (sa, sb) = (summary(&fa), summary(&fb));
    let mut deadlocks = 0;
    for s in [&sa, &sb] {
        let n = s["deadlocks"].as_u64().expect("deadlocks");
        let d = &s["deadlock_detection_ms"];
        assert_eq!(d["unit"], "ms", "{s}");
        assert_eq!(d["count"].as_u64(), Some(n), "one latency per victim: {s}");
        if n > 0 {
            assert!(d["p50"].is_number() && d["max"].is_number(), "{s}");
        }
        assert!(s["committed"].as_u64().expect("committed") > 0, "{s}");
        deadlocks += n;
    }
    assert!(deadlocks > 0, "{sa}\n{sb}");
    // Every victim's answer was counted by its worker (each answer records
    // one event, from the holder, before it answers).
    assert_eq!(deadlocks as usize, victim_events(&plex), "{sa}\n{sb}");
    for e in plex.events() {
        if let EventData::DeadlockVictim { cycle_length, .. } = e.data {
            assert!(cycle_length >= 2, "{e:?}");
        }
    }
    for f in [&fa, &fb] {
        assert!(
            !f.stderr.iter().any(|l| l.contains("deadlock")),
            "{}: {:?}",
            f.name,
            f.stderr
        );
    }
    plex.assert_balanced_and_clean();
    let c = plex.assert_history_consistent();
    assert!(c.transactions > 0, "{c:?}");
}

/// `--hierarchy`: while a transfer pauses between its legs, its member
/// holds IX modify on the table and X modify on two rows. Killed there, its
/// table IX is retained: another member's IX and IS on the table are
/// granted beside it, S is refused as retained; restart light backs the
/// transfer out and releases everything.
#[test]
fn hierarchy_takes_ix_on_the_table_then_x_on_the_rows() {
    let _serial = serial();
    let plex = TestPlex::with_history();
    let table = Store::table_resource();
    let mut v = plex.start(
        "V",
        &["--workload", "bank", "--hierarchy", "--pause-us", "200000"],
        &[],
    );
    let modes = |name: &str| {
        let mut m: Vec<(String, Mode)> = plex
            .locks_of(name)
            .into_iter()
            .filter(|l| l.held)
            .map(|l| (l.resource, l.mode))
            .collect();
        m.sort_by(|x, y| x.0.cmp(&y.0));
        m
    };
    // Stopped between the legs: the table and two rows (its log ends with
    // an UPDATE; the two rows are its X modify locks).
    plex.freeze_inside_transaction(&[&v]);
    let held = modes("V");
    let t = held
        .iter()
        .find(|(r, _)| r == table)
        .unwrap_or_else(|| panic!("no table lock: {held:?}"));
    assert_eq!(t.1, Mode::modify(LockMode::IX), "{held:?}");
    let rows: Vec<&(String, Mode)> = held.iter().filter(|(r, _)| r != table).collect();
    assert_eq!(rows.len(), 2, "{held:?}");
    assert!(
        rows.iter()
            .all(|(r, m)| r.starts_with("acct:") && *m == Mode::Modify),
        "{held:?}"
    );

    // Killed inside the transfer; nobody else runs to recover it.
    v.kill();
    // Cleaned up (as a survivor would): its modify locks are retained, the
    // table's IX with the rows.
    let cleaned = cf_core::recovery::cleanup_all_dead(plex.region()).expect("cleanup");
    assert_eq!(cleaned.len(), 1, "{cleaned:?}");
    let retained = plex.retained_of("V");
    assert!(
        retained.iter().any(|r| r == table) && retained.len() == 3,
        "{retained:?}\n{}",
        plex.dump()
    );
    let p = Member::connect(plex.region().clone(), "P").expect("probe connects");
    let mut h = p.holder().expect("probe holder");
    match h
        .try_lock(table.as_bytes(), Mode::modify(LockMode::IX))
        .expect("IX request")
    {
        TryOutcome::Granted(id) => h.unlock(id).expect("unlock IX"),
        other => panic!("IX beside a retained IX: {other:?}\n{}", plex.dump()),
    }
    match h
        .try_lock(table.as_bytes(), Mode::lock(LockMode::IS))
        .expect("IS request")
    {
        TryOutcome::Granted(id) => h.unlock(id).expect("unlock IS"),
        other => panic!("IS beside a retained IX: {other:?}"),
    }
    for m in [LockMode::S, LockMode::X] {
        match h
            .try_lock(table.as_bytes(), Mode::lock(m))
            .expect("request")
        {
            TryOutcome::Retained(by) => assert_eq!(by.name, "V"),
            other => panic!("{m} beside a retained IX: {other:?}"),
        }
    }
    drop(h);
    p.disconnect().expect("probe disconnects");

    let light = plex.restart_light("V", &[]);
    light.assert_success();
    assert_eq!(light.summary("released"), 3, "{light:?}");
    assert_eq!(light.summary("transactions"), 1, "{light:?}");
    plex.wait("V recovered", || plex.is_recovered("V", None));
    plex.assert_balanced_and_clean();
    plex.assert_history_consistent();
}

/// `--hierarchy` with reads and several members on a few accounts: the
/// table's IX and IS never block each other, transfers and reads commit,
/// and the accounts match the history.
#[test]
fn hierarchy_with_reads_runs_and_keeps_the_invariants() {
    let _serial = serial();
    let plex = TestPlex::with_history();
    let args = [
        "--workload",
        "bank",
        "--hierarchy",
        "--threads",
        "2",
        "--read-pct",
        "30",
        "--skew",
        "hot:8:100",
    ];
    let mut a = plex.start("A", &args, &[]);
    let mut b = plex.start("B", &args, &[]);
    plex.wait("transfers committed", || {
        cf_core::inspect::committed_total(plex.region()) >= 200
    });
    let (sa, sb) = (summary(&a.stop()), summary(&b.stop()));
    for s in [&sa, &sb] {
        assert!(s["committed"].as_u64() > Some(0), "{s}");
        assert!(s["reads"].as_u64() > Some(0), "{s}");
        assert_eq!(s["deadlocks"].as_u64(), Some(0), "sorted rows: {s}");
        assert_eq!(s["skipped_timeout"].as_u64(), Some(0), "{s}");
    }
    plex.assert_balanced_and_clean();
    plex.assert_history_consistent();
}
