//! End-to-end tests of the log's torn tail and of the history checker
//! (DESIGN §7) with real `cf-node` processes and real SIGKILL: a member
//! killed inside a log write (`wal.torn_append`), a restart light killed
//! before it truncated such a log, a member restarting over its own torn
//! log, and two members on the bank workload checked account by account
//! against the history of committed transactions (`history::check`).
//!
//! Like `recovery.rs`, every test asserts outcomes and waits for conditions
//! with a deadline that only turns a hang into a failure; processes are
//! killed and reaped, and the plex removed, on drop (also on failure).

use cf_core::events::{EventData, EventKind};
#[cfg(feature = "crash-points")]
use cf_core::{Member, Mode, TryOutcome};
use cf_node::history;
#[cfg(feature = "crash-points")]
use cf_node::wal;
use cf_node::wal::LogRecord;
use cf_testkit::node::*;

/// Why a crash point may not fire.
#[cfg(feature = "crash-points")]
const NO_CRASH: &str = "was target/release/cf-node built without the crash-points \
     feature? (a concurrent `cargo build --release` without --all-features in \
     the same target directory replaces the binary these tests run)";

/// A member that is inside a transaction most of the time, checkpointing its
/// log every 2 KiB (about 20 transfers): the history then gets archived
/// transactions and the logs keep the newest.
const VICTIM: &[&str] = &[
    "--workload",
    "bank",
    "--pause-us",
    "20000",
    "--checkpoint-bytes",
    "2048",
];

/// A busy member that claims restart requests after `claim_delay_ms`.
fn survivor(claim_delay_ms: &'static str) -> [&'static str; 8] {
    [
        "--workload",
        "bank",
        "--pause-us",
        "500",
        "--claim-delay-ms",
        claim_delay_ms,
        "--checkpoint-bytes",
        "2048",
    ]
}

#[cfg(feature = "crash-points")]
fn kinds(records: &[LogRecord]) -> Vec<&'static str> {
    records
        .iter()
        .map(|r| match r {
            LogRecord::Update { .. } => "U",
            LogRecord::Commit { .. } => "C",
            LogRecord::Abort { .. } => "A",
            LogRecord::Clr { .. } => "CLR",
        })
        .collect()
}

/// Wait for a node started with a crash point to die by it.
#[cfg(feature = "crash-points")]
fn assert_killed_by_crash_point(n: &mut Node, point: &str) {
    let f = n.finish();
    assert_eq!(
        Node::signal_of(&f.status),
        Some(libc::SIGKILL),
        "{} should die at {point}: {NO_CRASH}\n{f:?}",
        f.name
    );
}

/// A member killed inside a log append (half its record written) leaves a
/// torn tail; a survivor's restart light backs its unfinished transfer out
/// over it, releases its locks and archives its committed transfer; every
/// account then matches the history.
#[cfg(feature = "crash-points")]
#[test]
fn a_member_killed_inside_a_log_write_is_recovered_over_its_torn_tail() {
    let _serial = serial();
    let plex = TestPlex::with_history();
    let mut s1 = plex.start("S1", &survivor("1500"), &[]);
    let mut s2 = plex.start("S2", &survivor("1500"), &[]);
    let since = plex.next_event();
    // The 5th append: the second UPDATE of the second transfer.
    // (Not waiting for its `running` line: it may die before printing it.)
    let mut v = plex.spawn("V", VICTIM, &[("CF_CRASH_AT", "wal.torn_append@5")]);
    assert_killed_by_crash_point(&mut v, "wal.torn_append");
    let v_id = plex.member("V").expect("V's slot").id;

    let scan = wal::read_log(&wal::log_path(plex.path(), "V")).expect("V's log");
    let records: Vec<LogRecord> = scan.records.iter().map(|(_, r)| *r).collect();
    assert_eq!(
        plex.count_events("V", since, EventKind::BackedOut),
        0,
        "V was recovered before the test looked at its log (claim delay too short?)"
    );
    assert_eq!(kinds(&records), ["U", "U", "C", "U"], "{records:?}");
    let torn = scan.torn_bytes();
    assert!(
        torn > 0 && torn < 41,
        "half an UPDATE record after the last valid one: {scan:?}"
    );
    let committed = records[2].txid();

    plex.wait("V's locks to be retained", || {
        plex.retained_of("V").len() == 2
    });
    plex.wait("V's recovery to complete", || {
        plex.count_events("V", since, EventKind::RecoveryCompleted) == 1
    });
    plex.assert_clean_recovery("V", since, 1, Some(2));
    plex.wait("V to be gone", || plex.is_recovered("V", Some(v_id)));
    let log_len = std::fs::metadata(wal::log_path(plex.path(), "V"))
        .expect("V's log")
        .len();
    assert_eq!(log_len, 0, "V's log truncated, torn tail and all");
    let (archived, end) =
        history::read_history(&history::history_path(plex.path(), "V")).expect("V's history");
    assert_eq!(end.torn_bytes(), 0);
    let txids: Vec<u64> = archived.iter().map(|(_, t)| t.txid).collect();
    assert_eq!(txids, [committed], "V's committed transfer archived");

    assert_eq!(
        s1.stop().summary("restarts") + s2.stop().summary("restarts"),
        1
    );
    plex.assert_balanced_and_clean();
    let counts = plex.assert_history_consistent();
    assert!(counts.transactions > 1, "{counts:?}");
}

/// The defect a torn tail caused: V dies inside the write of its COMMIT
/// (both legs applied); restart light #1 backs the transfer out, releases
/// one of V's two locks and is killed before truncating the log; member T
/// then commits a transfer onto the released account; restart light #2
/// finishes. If #1's CLRs and ABORT had gone after the torn bytes, #2 would
/// not see them and would undo V's transfer again, over T's committed
/// change. The whole sequence is driven by this test (no monitor runs).
#[cfg(feature = "crash-points")]
#[test]
fn a_restart_light_killed_before_truncating_a_torn_log_is_not_undone_twice() {
    let _serial = serial();
    let plex = TestPlex::with_history();
    let mut v = plex.spawn(
        "V",
        &["--workload", "bank"],
        &[("CF_CRASH_AT", "wal.torn_append@3")],
    );
    assert_killed_by_crash_point(&mut v, "wal.torn_append");
    let v_id = plex.member("V").expect("V's slot").id;
    let scan = wal::read_log(&wal::log_path(plex.path(), "V")).expect("V's log");
    let records: Vec<LogRecord> = scan.records.iter().map(|(_, r)| *r).collect();
    assert_eq!(kinds(&records), ["U", "U"], "{scan:?}");
    assert!(scan.torn_bytes() > 0, "a torn COMMIT: {scan:?}");
    let touched: Vec<u64> = records
        .iter()
        .map(|r| match *r {
            LogRecord::Update { account, .. } => account,
            _ => unreachable!(),
        })
        .collect();

    // Nobody else is running: clean V up by hand; its locks are retained.
    let cleaned = cf_core::recovery::cleanup_all_dead(plex.region()).expect("cleanup");
    assert_eq!(cleaned.len(), 1, "{}", plex.dump());
    let mut held: Vec<String> = touched
        .iter()
        .map(|&a| cf_node::store::Store::resource(a))
        .collect();
    held.sort();
    assert_eq!(plex.retained_of("V"), held);

    // Restart light #1 dies after releasing one lock, before truncating.
    let f = plex.restart_light("V", &[("CF_CRASH_AT", "restart_light.released_some")]);
    assert_eq!(
        Node::signal_of(&f.status),
        Some(libc::SIGKILL),
        "restart light #1 should die at restart_light.released_some: {NO_CRASH}\n{f:?}"
    );
    let left = plex.retained_of("V");
    assert_eq!(left.len(), 1, "{}", plex.dump());
    let released = touched
        .iter()
        .copied()
        .find(|&a| cf_node::store::Store::resource(a) != left[0])
        .expect("one account released");
    let store = cf_node::store::Store::open(plex.path()).expect("accounts");
    let other = (0..ACCOUNTS)
        .find(|a| !touched.contains(a))
        .expect("an account V never touched");
    assert_eq!(store.balance(released).unwrap(), BALANCE, "backed out");

    // T commits a transfer of 7 from `other` onto the released account.
    let t = Member::connect(plex.region().clone(), "T").expect("T connects");
    let mut h = t.holder().expect("holder");
    let mut locks = Vec::new();
    let (lo, hi) = (released.min(other), released.max(other));
    for a in [lo, hi] {
        match h
            .try_lock(cf_node::store::Store::resource(a).as_bytes(), Mode::Modify)
            .expect("lock request")
        {
            TryOutcome::Granted(id) => locks.push(id),
            other => panic!("account {a}: {other:?}\n{}", plex.dump()),
        }
    }
    let log = wal::LogWriter::open(plex.path(), "T", false).expect("T's log");
    let txid = 1;
    for (i, (a, d)) in [(other, -7), (released, 7)].into_iter().enumerate() {
        let before = store.balance(a).unwrap();
        log.append(
            &LogRecord::Update {
                txid,
                account: a,
                before,
                after: before + d,
            },
            i == 0,
            false,
        )
        .expect("log");
        store.set(a, before + d, txid).unwrap();
    }
    log.append(&LogRecord::Commit { txid }, false, true)
        .expect("log");
    for id in locks {
        h.unlock(id).expect("unlock");
    }
    drop(h);
    t.disconnect().expect("T disconnects");

    // The dead restart light is cleaned up; restart light #2 finishes.
    cf_core::recovery::cleanup_all_dead(plex.region()).expect("cleanup");
    let f = plex.restart_light("V", &[]);
    f.assert_success();
    assert_eq!(
        store.balance(released).unwrap(),
        BALANCE + 7,
        "T's committed transfer onto account {released} was undone by a second back-out\n{f:?}"
    );
    assert_eq!(
        (
            f.summary("transactions"),
            f.summary("updates_undone"),
            f.summary("released")
        ),
        (0, 0, 1),
        "nothing left to back out, one lock left to release: {f:?}"
    );
    assert!(plex.is_recovered("V", Some(v_id)), "{}", plex.dump());
    assert!(plex.requests().is_empty(), "{}", plex.dump());
    plex.assert_balanced_and_clean();
    let counts = plex.assert_history_consistent();
    assert_eq!(counts.transactions, 1, "T's transfer (V's never committed)");
}

/// A member killed inside a log write and restarted normally (no other
/// member alive) recovers itself: cuts the torn tail, backs out, goes on.
#[cfg(feature = "crash-points")]
#[test]
fn a_member_restarted_over_its_own_torn_log_recovers_itself() {
    let _serial = serial();
    let plex = TestPlex::with_history();
    let since = plex.next_event();
    let mut v = plex.spawn("V", VICTIM, &[("CF_CRASH_AT", "wal.torn_append@2")]);
    assert_killed_by_crash_point(&mut v, "wal.torn_append");
    let scan = wal::read_log(&wal::log_path(plex.path(), "V")).expect("V's log");
    assert_eq!(scan.records.len(), 1, "{scan:?}");
    assert!(scan.torn_bytes() > 0, "{scan:?}");

    let mut v = plex.start("V", VICTIM, &[]);
    let ev: Vec<_> = plex
        .events()
        .into_iter()
        .filter(|e| e.seq >= since && e.kind() == EventKind::RecoveredAtRestart)
        .collect();
    assert_eq!(ev.len(), 1, "{}", plex.dump());
    assert_eq!(
        ev[0].data,
        EventData::RecoveredAtRestart {
            transactions: 1,
            locks: 2
        },
        "one transfer backed out, two locks released"
    );
    plex.wait("V to commit after its restart", || {
        plex.log("V")
            .iter()
            .any(|r| matches!(r, LogRecord::Commit { .. }))
    });
    v.stop().assert_success();
    assert_eq!(
        wal::read_log(&wal::log_path(plex.path(), "V"))
            .expect("V's log")
            .torn_bytes(),
        0
    );
    plex.assert_balanced_and_clean();
    plex.assert_history_consistent();
}

/// Two members on the bank workload, checkpointing often; one is killed
/// between the legs of a transfer and recovered by the other's restart
/// light, then restarted; both are stopped. Every account matches the
/// committed transactions, archived and still logged.
#[test]
fn two_members_with_one_killed_mid_transfer_match_their_history() {
    let _serial = serial();
    let plex = TestPlex::with_history();
    let mut a = plex.start("A", VICTIM, &[]);
    let mut b = plex.start("B", &survivor("0"), &[]);
    let a_id = plex.member("A").expect("A's slot").id;
    let archived = |name: &str| {
        history::read_history(&history::history_path(plex.path(), name))
            .expect("a history file")
            .0
            .len()
    };
    plex.wait("both members to have checkpointed", || {
        archived("A") > 0 && archived("B") > 0
    });
    let since = plex.next_event();
    plex.freeze_inside_transaction(&[&a]);
    a.kill();
    plex.wait("A's recovery to complete", || {
        plex.count_events("A", since, EventKind::RecoveryCompleted) == 1
            && plex.is_recovered("A", Some(a_id))
    });
    plex.assert_clean_recovery("A", since, 1, Some(2));
    // The check is for a plex at rest: restart A, let it commit, then stop
    // both.
    let mut a = plex.start("A", VICTIM, &[]);
    plex.wait("A to commit after its restart", || {
        plex.log("A")
            .iter()
            .any(|r| matches!(r, LogRecord::Commit { .. }))
    });
    a.stop().assert_success();
    assert_eq!(b.stop().summary("restarts"), 1);
    plex.assert_balanced_and_clean();
    let counts = plex.assert_history_consistent();
    assert_eq!(counts.members, 2, "{counts:?}");
    assert!(counts.transactions > 2, "{counts:?}");
}
