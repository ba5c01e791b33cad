//! Real processes, real SIGKILL: mutual exclusion and false contention between
//! `cfctl stress` processes, retention of a killed holder's modify locks,
//! reused PIDs, and waiters on a dead holder.
//!
//! Every test asserts outcomes (who holds what, what the counter file says),
//! never timing. Every process is killed and reaped and every plex removed on
//! drop, also when a test fails.

use cf_testkit::tools as common;

use common::{colliding, eventually, TestPlex};

/// The counter file of `cfctl stress`: (`inside`, `total`).
fn read_counter(path: &std::path::Path) -> (u64, u64) {
    let b = std::fs::read(path).expect("counter file");
    assert_eq!(b.len(), 16, "counter file size");
    let word = |i: usize| u64::from_ne_bytes(b[8 * i..8 * i + 8].try_into().expect("8 bytes"));
    (word(0), word(1))
}

fn stress_args(member: &str, resources: &[&str], n: u64, counter: &str, mode: &str) -> Vec<String> {
    let mut a = vec![
        "stress".to_string(),
        "--member".into(),
        member.into(),
        "--iterations".into(),
        n.to_string(),
        "--counter".into(),
        counter.into(),
        "--mode".into(),
        mode.into(),
        "--json".into(),
    ];
    for r in resources {
        a.push("--resource".into());
        a.push(r.to_string());
    }
    a
}

/// Wait until `members` all have a pending request on `resource`.
fn wait_pending(plex: &TestPlex, resource: &str, members: &[&str]) {
    eventually(&format!("{members:?} waiting for {resource}"), || {
        let locks = plex.locks();
        members.iter().all(|m| {
            locks
                .iter()
                .any(|l| l.member == *m && l.resource == resource && l.state == "pending")
        })
    });
}

/// Let stress processes finish and check each did all its iterations.
fn expect_stress_done(p: common::Proc, n: u64) -> serde_json::Value {
    let f = p.finish();
    assert!(f.status.success(), "stress failed: {f}");
    let v = f.json();
    assert_eq!(v["iterations"], n, "{f}");
    assert_eq!(v["violations"], 0, "{f}");
    assert!(v["interrupted"].is_null(), "{f}");
    v
}

#[test]
fn stress_processes_on_the_same_resources_exclude_each_other() {
    const N: u64 = 20_000;
    let plex = TestPlex::new(None);
    let counter = plex.file("counter");
    let ctr = counter.to_str().expect("utf-8 path");
    let (r1, r2) = ("acct-1", "acct-2");
    assert_ne!(
        plex.entry_of(r1),
        plex.entry_of(r2),
        "test needs no false contention here"
    );

    // A gate holds the first resource (stress takes them in sorted order) so
    // that both stress processes wait and then start together.
    let mut gate = plex.hold("GATE", &[("x", r1)]);
    let a = plex.spawn(&stress_args("A", &[r2, r1], N, ctr, "x"));
    let b = plex.spawn(&stress_args("B", &[r1, r2], N, ctr, "x"));
    wait_pending(&plex, r1, &["A", "B"]);
    gate.term();
    gate.expect_exit_ok();

    expect_stress_done(a, N);
    let vb = expect_stress_done(b, N);
    assert_eq!(vb["resources"], serde_json::json!([r1, r2]), "sorted order");
    assert_eq!(
        read_counter(&counter),
        (0, 2 * N),
        "nobody inside at the end, and no lost update"
    );
    let c = plex.counters();
    assert_eq!(c.requests, 2 * 2 * N + 1, "every lock call is one request");
    assert!(c.irlm_contention >= 2, "both waited for the gate: {c:?}");
    assert_eq!(c.false_contention, 0, "{c:?}");
    plex.assert_empty_and_clean();
}

#[test]
fn false_contention_between_colliding_resources_is_granted_and_counted() {
    const N: u64 = 3_000;
    let plex = TestPlex::small();
    let r1 = "fc-base";
    let r2 = colliding(r1, plex.entries(), "fc-other-", &[]);
    let r3 = colliding(r1, plex.entries(), "fc-gate-", &[&r2]);
    let (c1, c2) = (plex.file("counter-1"), plex.file("counter-2"));

    // A holder of a third colliding resource keeps the entry contended for the
    // whole run: every request has to be settled from the record entries.
    let mut gate = plex.hold("GATE", &[("x", &r3)]);
    // Real contention on the same entry is still refused.
    plex.assert_contention("PROBE", "s", &r3, &["GATE"]);
    let p1 = plex.spawn(&stress_args("P1", &[r1], N, c1.to_str().unwrap(), "x"));
    let p2 = plex.spawn(&stress_args("P2", &[r1], N, c1.to_str().unwrap(), "x"));
    let p3 = plex.spawn(&stress_args(
        "P3",
        &[&r2],
        N,
        c2.to_str().unwrap(),
        "modify",
    ));
    for p in [p1, p2, p3] {
        expect_stress_done(p, N);
    }
    assert_eq!(
        read_counter(&c1),
        (0, 2 * N),
        "P1 and P2 excluded each other"
    );
    assert_eq!(read_counter(&c2), (0, N), "P3 was never refused");
    let locks = plex.locks();
    assert_eq!(locks.len(), 1, "{locks:?}");
    assert_eq!(
        (locks[0].member.as_str(), locks[0].resource.as_str()),
        ("GATE", r3.as_str())
    );

    // A live holder publishes its fast-path request count every 64 requests:
    // read the counters once GATE has disconnected (which publishes them).
    gate.term();
    gate.expect_exit_ok();
    let c = plex.counters();
    assert_eq!(c.requests, 3 * N + 2, "{c:?}");
    // Every request of P1, P2 and P3 was decided next to GATE's record of
    // another resource: false contention, unless it met a real conflict
    // (P1 against P2), which is IRLM contention (once per request), as is
    // PROBE's.
    assert_eq!(c.false_contention + c.irlm_contention, 3 * N + 1, "{c:?}");
    assert!(c.false_contention >= N, "P3's at least: {c:?}");
    assert_eq!(c.xes_contention, 0, "{c:?}");
    let c = plex.counters();
    assert!(c.false_contention > 0, "display structures shows it: {c:?}");
    plex.assert_empty_and_clean();
}

#[test]
fn share_stress_processes_overlap_but_never_with_a_writer() {
    const N: u64 = 5_000;
    let plex = TestPlex::new(None);
    let counter = plex.file("counter");
    let ctr = counter.to_str().unwrap();
    let r = "shared-table";
    let s1 = plex.spawn(&stress_args("S1", &[r], N, ctr, "s"));
    let s2 = plex.spawn(&stress_args("S2", &[r], N, ctr, "s"));
    let x = plex.spawn(&stress_args("X", &[r], N, ctr, "x"));
    for p in [s1, s2, x] {
        expect_stress_done(p, N);
    }
    assert_eq!(read_counter(&counter), (0, 3 * N));
    plex.assert_empty_and_clean();
}

#[test]
fn stress_fails_loudly_on_a_violation_and_on_bad_input() {
    let plex = TestPlex::new(None);
    // Someone is "inside" already: the first iteration must see it.
    let counter = plex.file("counter");
    let mut bytes = (1u64 << 32).to_ne_bytes().to_vec();
    bytes.extend_from_slice(&7u64.to_ne_bytes());
    std::fs::write(&counter, &bytes).unwrap();
    let f = plex.run(&stress_args(
        "V",
        &["r"],
        10,
        counter.to_str().unwrap(),
        "x",
    ));
    assert_eq!(f.status.code(), Some(5), "5: an invariant broke: {f}");
    assert!(f.stderr.contains("MUTUAL EXCLUSION VIOLATED"), "{f}");
    assert!(f.stderr.contains("iteration 1"), "{f}");
    assert_eq!(
        read_counter(&counter),
        (1 << 32, 7),
        "the failing process took back its own step and counted nothing"
    );
    // It released its lock and disconnected before failing.
    assert_eq!(plex.members(), vec![]);
    assert_eq!(plex.locks(), vec![]);

    // Not a counter file: refused, untouched.
    let other = plex.file("notes.txt");
    std::fs::write(&other, b"hello").unwrap();
    let f = plex.run(&stress_args("V", &["r"], 10, other.to_str().unwrap(), "x"));
    assert_eq!(f.status.code(), Some(1), "{f}");
    assert!(f.stderr.contains("not a counter file"), "{f}");
    assert_eq!(std::fs::read(&other).unwrap(), b"hello");

    // Bad resource name, zero iterations: one clear line, no panic.
    let long = "x".repeat(65);
    let ctr = plex.file("c2");
    for args in [
        stress_args("V", &[&long], 10, ctr.to_str().unwrap(), "x"),
        stress_args("V", &["r"], 0, ctr.to_str().unwrap(), "x"),
    ] {
        let f = plex.run(&args);
        assert_ne!(f.status.code(), Some(0), "{f}");
        assert!(f.status.code().is_some(), "exited, not killed: {f}");
        assert!(!f.stderr.contains("panicked"), "{f}");
        assert!(!f.stderr.trim().is_empty(), "says why: {f}");
    }
    plex.assert_empty_and_clean();
}

#[test]
fn stress_stops_cleanly_on_sigterm() {
    let plex = TestPlex::new(None);
    let counter = plex.file("counter");
    let p = plex.spawn(&stress_args(
        "LONG",
        &["a", "b"],
        u64::MAX / 2,
        counter.to_str().unwrap(),
        "modify",
    ));
    eventually("stress connected and counting", || {
        std::fs::metadata(&counter).map(|m| m.len()).unwrap_or(0) == 16
            && read_counter(&counter).1 > 0
    });
    p.term();
    let f = p.finish();
    assert_eq!(f.status.code(), Some(128 + libc::SIGTERM), "{f}");
    let v = f.json();
    assert_eq!(v["interrupted"], "SIGTERM", "{f}");
    let done = v["iterations"].as_u64().expect("iterations");
    assert_eq!(read_counter(&counter), (0, done), "{f}");
    // Modify locks and all: released, since it ended normally.
    plex.assert_empty_and_clean();
}

#[test]
fn killed_holder_modify_locks_are_retained_and_the_rest_released() {
    let plex = TestPlex::small();
    let mut a = plex.hold(
        "A",
        &[("s", "a"), ("x", "b"), ("modify", "c"), ("modify", "d")],
    );
    let held = plex.locks();
    assert_eq!(held.len(), 4, "{held:?}");
    assert!(held.iter().all(|l| l.member == "A" && l.state == "held"));
    a.kill_and_reap();

    // No cleanup command and no monitor: the requests find the death.
    plex.assert_granted("B", "x", "a");
    plex.assert_granted("B", "x", "b");
    plex.assert_retained_by("B", "s", "c", "A");
    plex.assert_retained_by("B", "modify", "d", "A");
    let mut retained = plex.retained();
    retained.sort_by(|x, y| x.resource.cmp(&y.resource));
    assert_eq!(retained.len(), 2, "{retained:?}");
    for (l, res) in retained.iter().zip(["c", "d"]) {
        assert_eq!(l.resource, res);
        assert_eq!(l.member, "A");
        assert_eq!(l.mode, "modify");
        assert_eq!(l.state, "retained");
        assert_eq!(l.entry, plex.entry_of(res), "a valid entry for {res}");
    }
    assert_eq!(plex.locks(), retained, "nothing but the retained locks");
    let m = plex.member("A").expect("A is listed");
    assert_eq!(
        (m.state.as_str(), m.alive, m.retained),
        ("failed-persistent", false, 2)
    );
    // A neighbour of c on the same lock table entry is not refused.
    let neighbour = colliding("c", plex.entries(), "near-c-", &["a", "b", "d"]);
    plex.assert_granted("B", "x", &neighbour);
    plex.assert_granted("B", "modify", &neighbour);
    plex.assert_verify_clean();

    // Only restart light (or a normal restart that backs out first) may take
    // the retained locks back: a lock-only connect is refused, and restart
    // light releases exactly them.
    plex.recover_light("A", &["c", "d"]);
    plex.assert_empty_and_clean();
    for r in ["a", "b", "c", "d"] {
        plex.assert_granted("B", "modify", r);
    }
    plex.assert_empty_and_clean();
}

#[test]
fn a_reused_pid_is_not_taken_for_the_member() {
    let plex = TestPlex::new(None);
    let mut a = plex.spawn(&[
        "hold", "--member", "A", "--modify", "m", "--x", "e", "--json",
    ]);
    let line = a.wait_holding();
    let v: serde_json::Value = serde_json::from_str(&line).expect("hold --json line");
    let id = cf_core::ConnectorId::new(v["id"].as_u64().expect("connector id") as u32);
    assert_eq!(plex.member("A").map(|m| m.alive), Some(true));

    // The slot now names another process with A's PID (as after PID reuse).
    let region = cf_core::Region::open(&cf_core::Plex {
        dir: plex.path().into(),
    })
    .expect("open the region");
    cf_core::testing::fake_reused_pid(&region, id);
    drop(region);
    let m = plex.member("A").expect("A listed");
    assert_eq!(m.pid, a.pid(), "same PID");
    assert!(!m.alive, "but not the same process");

    plex.assert_retained_by("B", "s", "m", "A");
    plex.assert_granted("B", "x", "e");
    assert!(a.running(), "the process with A's PID still runs");
    let m = plex.member("A").expect("A listed");
    assert_eq!((m.state.as_str(), m.retained), ("failed-persistent", 1));
    assert_eq!(plex.retained().len(), 1);
    a.kill_and_reap();

    plex.recover_light("A", &["m"]);
    plex.assert_empty_and_clean();
}

#[test]
fn a_waiter_on_a_killed_holder_gets_the_lock() {
    let plex = TestPlex::new(None);
    let mut a = plex.hold("A", &[("x", "r")]);
    let mut b = plex.spawn(&[
        "hold",
        "--member",
        "B",
        "--x",
        "r",
        "--timeout-ms",
        "600000",
    ]);
    wait_pending(&plex, "r", &["B"]);
    a.kill_and_reap();
    // No cleanup command, no monitor: the waiter finds its holder dead.
    let line = b.wait_holding();
    assert!(line.contains(" as B "), "{line}");
    let locks = plex.locks();
    assert_eq!(locks.len(), 1, "{locks:?}");
    assert_eq!(
        (
            locks[0].member.as_str(),
            locks[0].resource.as_str(),
            locks[0].mode.as_str(),
            locks[0].state.as_str()
        ),
        ("B", "r", "exclusive", "held")
    );
    let dead = plex.member("A");
    assert!(
        dead.as_ref()
            .is_none_or(|m| m.state == "failed-persistent" && m.retained == 0),
        "{dead:?}"
    );
    b.term();
    b.expect_exit_ok();
    plex.recover_light("A", &[]);
    plex.assert_empty_and_clean();
}

#[test]
fn a_waiter_on_a_killed_modify_holder_is_told_it_is_retained() {
    let plex = TestPlex::new(None);
    let mut a = plex.hold("A", &[("modify", "r")]);
    let b = plex.spawn(&[
        "hold",
        "--member",
        "B",
        "--s",
        "r",
        "--timeout-ms",
        "600000",
    ]);
    wait_pending(&plex, "r", &["B"]);
    a.kill_and_reap();
    let f = b.finish();
    assert_eq!(f.status.code(), Some(3), "3: retained: {f}");
    assert!(f.stderr.contains("retained by A"), "{f}");
    let r = plex.retained();
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!((r[0].member.as_str(), r[0].resource.as_str()), ("A", "r"));
    assert!(plex.member("B").is_none(), "B gave up and disconnected");
    plex.recover_light("A", &["r"]);
    plex.assert_empty_and_clean();
}

#[test]
fn stress_killed_at_random_times_leaves_only_its_retained_modify_locks() {
    const ROUNDS: usize = 30;
    let (mut rng, seed) = common::Rng::from_env_or_clock();
    eprintln!("random kills: CF_TEST_SEED={seed}");
    let plex = TestPlex::small();
    // One pair on a single entry (the latched path on every iteration), one
    // pair on two entries (the fast path).
    let same = (
        "kill-a".to_string(),
        colliding("kill-a", 16, "kill-b-", &[]),
    );
    let apart = {
        let a = "kill-c".to_string();
        let b = (0..)
            .map(|i| format!("kill-d-{i}"))
            .find(|r| plex.entry_of(r) != plex.entry_of(&a))
            .expect("a resource on another entry");
        (a, b)
    };
    let mut with_retained = 0;
    for round in 0..ROUNDS {
        let (r1, r2) = if round % 2 == 0 { &same } else { &apart };
        let mode = if round % 3 == 2 { "x" } else { "modify" };
        let counter = plex.file(&format!("counter-{round}"));
        let mut p = plex.spawn(&stress_args(
            "S",
            &[r1, r2],
            u64::MAX / 2,
            counter.to_str().unwrap(),
            mode,
        ));
        let delay = rng.below(25_000);
        std::thread::sleep(std::time::Duration::from_micros(delay));
        p.kill();
        p.expect_killed();
        let ctx =
            format!("round {round} ({mode} on {r1}, {r2}; killed after {delay} us; seed {seed})");

        let reports = plex.cleanup();
        assert!(reports.len() <= 1, "{ctx}: {reports:?}");
        plex.assert_verify_clean();
        let locks = plex.locks();
        for l in &locks {
            assert_eq!(
                (l.member.as_str(), l.mode.as_str(), l.state.as_str()),
                ("S", "modify", "retained"),
                "{ctx}: only the dead member's modify locks may be left: {locks:?}"
            );
            assert!(l.resource == *r1 || l.resource == *r2, "{ctx}: {l:?}");
        }
        if mode == "x" {
            assert_eq!(locks, vec![], "{ctx}: exclusive locks are released");
        }
        let retained: Vec<&str> = locks.iter().map(|l| l.resource.as_str()).collect();
        if !retained.is_empty() {
            with_retained += 1;
        }
        let members = plex.members();
        assert!(
            members.is_empty()
                || (members.len() == 1
                    && members[0].name == "S"
                    && members[0].state == "failed-persistent"),
            "{ctx}: {members:?}"
        );
        let free: Vec<&str> = [r1.as_str(), r2.as_str()]
            .into_iter()
            .filter(|r| !retained.contains(r))
            .collect();
        plex.check_repaired(&common::Expect {
            dead: "S",
            retained: &retained,
            free: &free,
            live: &[],
        });
        plex.assert_empty_and_clean();
    }
    eprintln!("random kills: {with_retained} of {ROUNDS} rounds left retained locks");
}

#[test]
fn a_killed_waiter_leaves_nothing_behind() {
    let plex = TestPlex::new(None);
    let mut a = plex.hold("A", &[("modify", "r")]);
    let mut b = plex.spawn(&[
        "hold",
        "--member",
        "B",
        "--modify",
        "r",
        "--timeout-ms",
        "600000",
    ]);
    wait_pending(&plex, "r", &["B"]);
    b.kill_and_reap();
    // Its request was pending, so it held nothing: discarded, nothing retained.
    let reports = plex.cleanup();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0]["member"], "B");
    assert_eq!(reports[0]["discarded"], 1, "{reports:?}");
    assert_eq!(reports[0]["retained"], 0, "{reports:?}");
    plex.check_repaired(&common::Expect {
        dead: "B",
        retained: &[],
        free: &[],
        live: &[("A", "r")],
    });
    a.term();
    a.expect_exit_ok();
    plex.assert_empty_and_clean();
}

#[test]
fn concurrent_cleanups_clean_a_death_exactly_once() {
    let plex = TestPlex::new(None);
    let mut a = plex.hold("A", &[("x", "b"), ("modify", "c"), ("modify", "d")]);
    a.kill_and_reap();
    let cleaners: Vec<_> = (0..4).map(|_| plex.spawn(&["cleanup", "--json"])).collect();
    let mut reports = Vec::new();
    for c in cleaners {
        let f = c.finish();
        assert!(f.status.success(), "{f}");
        reports.extend(f.json().as_array().expect("array").clone());
    }
    assert_eq!(reports.len(), 1, "exactly one cleaner: {reports:?}");
    let r = &reports[0];
    assert_eq!(
        (
            &r["member"],
            &r["released"],
            &r["retained"],
            &r["discarded"]
        ),
        (&"A".into(), &1.into(), &2.into(), &0.into()),
        "{r}"
    );
    plex.check_repaired(&common::Expect {
        dead: "A",
        retained: &["c", "d"],
        free: &["b"],
        live: &[],
    });
    plex.assert_empty_and_clean();
}

#[test]
fn a_contender_killed_at_random_times_never_stalls_the_other() {
    const ROUNDS: usize = 10;
    const N: u64 = 20_000;
    let (mut rng, seed) = common::Rng::from_env_or_clock();
    eprintln!("random contender kills: CF_TEST_SEED={seed}");
    let plex = TestPlex::small();
    let same = (
        "duel-a".to_string(),
        colliding("duel-a", 16, "duel-b-", &[]),
    );
    let apart = {
        let a = "duel-c".to_string();
        let b = (0..)
            .map(|i| format!("duel-d-{i}"))
            .find(|r| plex.entry_of(r) != plex.entry_of(&a))
            .expect("a resource on another entry");
        (a, b)
    };
    for round in 0..ROUNDS {
        let (r1, r2) = if round % 2 == 0 { &same } else { &apart };
        // Separate counters: the victim's exclusive locks are released when
        // it dies, possibly inside its critical section.
        let cv = plex.file(&format!("victim-{round}"));
        let cs = plex.file(&format!("survivor-{round}"));
        let mut victim = plex.spawn(&stress_args(
            "VICTIM",
            &[r1, r2],
            u64::MAX / 2,
            cv.to_str().unwrap(),
            "x",
        ));
        let survivor = plex.spawn(&stress_args(
            "SURVIVOR",
            &[r1, r2],
            N,
            cs.to_str().unwrap(),
            "x",
        ));
        let delay = rng.below(20_000);
        std::thread::sleep(std::time::Duration::from_micros(delay));
        victim.kill();
        victim.expect_killed();
        let ctx = format!("round {round}, victim killed after {delay} us, seed {seed}");
        let f = survivor.finish();
        assert!(f.status.success(), "{ctx}: {f}");
        assert_eq!(read_counter(&cs), (0, N), "{ctx}");
        // The survivor may have cleaned the victim up already.
        let reports = plex.cleanup();
        assert!(reports.len() <= 1, "{ctx}: {reports:?}");
        plex.check_repaired(&common::Expect {
            dead: "VICTIM",
            retained: &[],
            free: &[r1, r2],
            live: &[],
        });
        plex.assert_empty_and_clean();
    }
}

#[test]
fn stress_under_a_failed_members_name_is_refused() {
    let plex = TestPlex::new(None);
    let mut a = plex.hold("S", &[("modify", "a"), ("x", "b")]);
    a.kill_and_reap();
    plex.assert_retained_by("P", "s", "a", "S");
    let counter = plex.file("counter");
    let f = plex.run(&stress_args(
        "S",
        &["a", "b"],
        10,
        counter.to_str().unwrap(),
        "modify",
    ));
    assert_eq!(f.status.code(), Some(1), "{f}");
    assert!(f.stderr.contains("failed-persistent"), "{f}");
    assert_eq!(read_counter(&counter), (0, 0));
    plex.assert_retained_by("P", "s", "a", "S");
    plex.recover_light("S", &["a"]);
    plex.assert_empty_and_clean();
}

#[test]
fn two_members_killed_at_once_on_one_entry_each_retain_their_own() {
    let plex = TestPlex::small();
    let ra = "pair-a";
    let rb = colliding(ra, plex.entries(), "pair-b-", &[]);
    let rc = colliding(ra, plex.entries(), "pair-c-", &[&rb]);
    let mut a = plex.hold("A", &[("modify", ra), ("s", &rc)]);
    let mut b = plex.hold("B", &[("modify", &rb), ("s", &rc)]);
    a.kill();
    b.kill();
    a.expect_killed();
    b.expect_killed();
    let mut reports = plex.cleanup();
    reports.sort_by_key(|r| r["member"].as_str().unwrap_or_default().to_string());
    assert_eq!(reports.len(), 2, "{reports:?}");
    for (r, name) in reports.iter().zip(["A", "B"]) {
        assert_eq!(
            (&r["member"], &r["retained"], &r["released"]),
            (&name.into(), &1.into(), &1.into()),
            "{r}"
        );
    }
    plex.assert_verify_clean();
    plex.assert_retained_by("P", "x", ra, "A");
    plex.assert_retained_by("P", "s", &rb, "B");
    plex.assert_granted("P", "x", &rc);
    // Recovering one does not free the other's.
    plex.recover_light("A", &[ra]);
    plex.assert_retained_by("P", "x", &rb, "B");
    plex.assert_granted("P", "x", ra);
    plex.recover_light("B", &[&rb]);
    plex.assert_empty_and_clean();
}

#[test]
fn a_restart_light_killed_after_connecting_leaves_the_locks_retained() {
    let plex = TestPlex::new(None);
    let mut a = plex.hold("A", &[("modify", "old"), ("x", "gone")]);
    a.kill_and_reap();
    assert_eq!(plex.cleanup().len(), 1);
    // A lock-only connect is refused; a restart light that takes the locks
    // back and dies before releasing them leaves them retained.
    let f = plex.run(&["hold", "--member", "A", "--s", "read"]);
    assert_eq!(f.status.code(), Some(1), "{f}");
    let mut c = std::process::Command::new(common::cf_node());
    c.args(["restart-light", "--member", "A", "--plex"])
        .arg(plex.path())
        .env("CF_CRASH_AT", "restart_light.connected")
        .env_remove("CF_CRASH_ONCE")
        .env_remove("CF_PLEX");
    let f = common::Proc::spawn(c, "cf-node restart-light (killed)".into()).finish();
    if cfg!(feature = "crash-points") {
        f.assert_killed();
        assert_eq!(
            plex.member("A").map(|m| (m.state, m.alive)),
            Some(("recovering".into(), false))
        );
        plex.assert_retained_by("P", "s", "old", "A");
        let reports = plex.cleanup();
        assert_eq!(reports.len(), 1, "{reports:?}");
        assert_eq!(
            (&reports[0]["retained"], &reports[0]["released"]),
            (&1.into(), &0.into()),
            "{reports:?}"
        );
        plex.check_repaired(&common::Expect {
            dead: "A",
            retained: &["old"],
            free: &["gone", "read"],
            live: &[],
        });
    } else {
        assert!(f.status.success(), "{f}");
    }
    plex.assert_empty_and_clean();
}
