//! Deadlock detection with real processes and real SIGKILL (DESIGN §4,
//! `cf_core::deadlock`): the detector of a `cf-node` member killed at each
//! of its crash points, its claim taken over by the next member's, and
//! exactly one victim in the end; a member of a cycle SIGKILLed before any
//! detector runs: no victim, its modify lock retained until restart light.
//!
//! The waiters in a cycle are members of this test process (threads) or a
//! child process (this test binary run again as `child_x_...`). The tests
//! assert outcomes, never timing; they start processes, so they run one at
//! a time.

use cf_core::deadlock;
#[cfg(feature = "crash-points")]
use cf_core::events::EventData;
use cf_core::events::EventKind;
use cf_core::{Holder, Member, Mode, Plex, Region, WaitError};
use cf_testkit::node::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;

/// A member that only watches the others, handles restart requests and runs
/// the deadlock detector.
const IDLE: &[&str] = &["--workload", "idle"];

/// What a waiter's second request ended with.
#[derive(Debug, PartialEq, Eq)]
enum Out {
    Granted,
    Victim,
    Retained(String),
    Other(String),
}

/// A thread of holder `h`: take `first` in modify mode (then meet the
/// others at `go`), wait for `then`; release what it got, as a transaction
/// commits or backs out.
fn waiter(
    mut h: Holder,
    first: &'static [u8],
    then: &'static [u8],
    go: Arc<Barrier>,
) -> JoinHandle<Out> {
    std::thread::spawn(move || {
        let held = h.lock(first, Mode::Modify, PATIENCE).unwrap();
        go.wait();
        let out = match h.lock(then, Mode::Modify, PATIENCE) {
            Ok(id) => {
                h.unlock(id).unwrap();
                Out::Granted
            }
            Err(WaitError::Deadlock { .. }) => Out::Victim,
            Err(WaitError::Retained(by)) => Out::Retained(by.name),
            Err(e) => Out::Other(e.to_string()),
        };
        h.unlock(held).unwrap();
        out
    })
}

fn victim_events(plex: &TestPlex) -> Vec<cf_core::events::Event> {
    plex.events()
        .into_iter()
        .filter(|e| e.kind() == EventKind::DeadlockVictim)
        .collect()
}

#[cfg(feature = "crash-points")]
#[test]
fn a_detector_killed_at_its_crash_points_is_taken_over_and_one_victim_answers() {
    let _serial = serial();
    for point in ["deadlock.claimed", "deadlock.chosen", "deadlock.told"] {
        let plex = TestPlex::new();
        let r = plex.region().clone();
        let a = Member::connect(r.clone(), "A").unwrap();
        let b = Member::connect(r.clone(), "B").unwrap();
        let go = Arc::new(Barrier::new(2));
        let ta = waiter(a.holder().unwrap(), b"r1", b"r2", go.clone());
        let tb = waiter(b.holder().unwrap(), b"r2", b"r1", go);
        plex.wait("both requests waiting", || deadlock::waits(&r).len() == 2);

        // D's detector finds the cycle and is killed at the point.
        let mut d = plex.spawn("D", IDLE, &[("CF_CRASH_AT", point)]);
        let st = d.finish();
        assert_eq!(
            Node::signal_of(&st.status),
            Some(9),
            "{point}: D was not killed there (built without the crash-points feature?): {st:?}"
        );
        let claim = cf_core::testing::deadlock_claim(&r);
        assert_eq!(claim as u32, d.pid(), "{point}: D died holding the claim");
        let told = deadlock::victims_told(&r);
        if point == "deadlock.told" {
            assert_eq!(told, 1, "{point}");
        } else {
            assert_eq!(told, 0, "{point}");
            let w = deadlock::waits(&r);
            assert!(
                w.len() == 2 && w.iter().all(|w| !w.victim),
                "{point}: {w:?}"
            );
        }

        // E's detector takes the claim over (D is dead) and finishes.
        let mut e = plex.start("E", IDLE, &[]);
        let outs = [ta.join().unwrap(), tb.join().unwrap()];
        let victims = outs.iter().filter(|o| **o == Out::Victim).count();
        let granted = outs.iter().filter(|o| **o == Out::Granted).count();
        assert_eq!((victims, granted), (1, 1), "{point}: {outs:?}");
        assert_eq!(deadlock::victims_told(&r), 1, "{point}: a second victim");
        let ev = victim_events(&plex);
        assert_eq!(ev.len(), 1, "{point}: {ev:?}");
        // Told by E's detector; by D's, if D died after telling (whose slot
        // may have lost its name to D's recovery by the time the victim
        // answered).
        if point != "deadlock.told" {
            assert_eq!(ev[0].by.as_deref(), Some("E"), "{point}: {ev:?}");
        } else {
            assert!(ev[0].by.is_some(), "{point}: {ev:?}");
        }
        assert!(
            matches!(
                ev[0].data,
                EventData::DeadlockVictim {
                    cycle_length: 2,
                    ..
                }
            ),
            "{point}: {ev:?}"
        );
        plex.wait("E released the claim", || {
            cf_core::testing::deadlock_claim(&r) == 0
        });
        a.disconnect().unwrap();
        b.disconnect().unwrap();
        // D itself is recovered by E (restart light), like any dead member.
        plex.wait("D recovered", || plex.is_recovered("D", None));
        e.stop().assert_success();
        assert!(plex.locks().is_empty(), "{point}: {:?}", plex.locks());
    }
}

/// The child's part, run by `a_cycle_whose_member_is_killed_...` when
/// `CF_DEADLOCK_CHILD` names a plex: connect as X, take `r1` in modify mode,
/// say `X-HOLDING`, and after a line on stdin wait for `r2` (until killed).
#[test]
fn child_x_holds_r1_then_waits_for_r2() {
    let Some(dir) = std::env::var_os("CF_DEADLOCK_CHILD") else {
        return; // only run as the child of the test below
    };
    let r = Arc::new(Region::open(&Plex { dir: dir.into() }).unwrap());
    let x = Member::connect(r, "X").unwrap();
    let mut h = x.holder().unwrap();
    let _held = h.lock(b"r1", Mode::Modify, PATIENCE).unwrap();
    println!("\nX-HOLDING");
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    let out = h.lock(b"r2", Mode::Modify, PATIENCE);
    panic!("X was not killed while it waited: {out:?}");
}

/// A child process, SIGKILLed and reaped on drop (a failed assertion leaves
/// no process behind).
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_cycle_whose_member_is_killed_before_the_detector_runs_gets_no_victim() {
    let _serial = serial();
    let plex = TestPlex::new();
    let r = plex.region().clone();
    // X (a process of its own) holds r1.
    let mut x = Child(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "child_x_holds_r1_then_waits_for_r2",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("CF_DEADLOCK_CHILD", plex.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(x.0.stdout.take().unwrap()).lines();
    assert!(
        lines.any(|l| l.is_ok_and(|l| l.contains("X-HOLDING"))),
        "X did not start"
    );
    // B holds r2 and waits for r1; then X waits for r2: a cycle.
    let b = Member::connect(r.clone(), "B").unwrap();
    let go = Arc::new(Barrier::new(2));
    let tb = waiter(b.holder().unwrap(), b"r2", b"r1", go.clone());
    go.wait();
    writeln!(x.0.stdin.take().unwrap(), "go").unwrap();
    plex.wait("both requests waiting", || deadlock::waits(&r).len() == 2);

    // X dies before any detector runs.
    x.0.kill().unwrap();
    x.0.wait().unwrap();
    let d = deadlock::detect_once(&r, None).unwrap();
    assert!(d.victims.is_empty(), "{d:?}");
    // A member's detector, cleanup and restart light run too.
    let mut e = plex.start("E", IDLE, &[]);
    // B is answered "retained by X" (X's modify lock on r1), not "deadlock".
    assert_eq!(tb.join().unwrap(), Out::Retained("X".into()));
    assert!(victim_events(&plex).is_empty());
    assert_eq!(deadlock::victims_told(&r), 0);
    // Restart light releases the retained lock; nothing is left.
    plex.wait("X recovered", || plex.is_recovered("X", None));
    b.disconnect().unwrap();
    e.stop().assert_success();
    assert!(plex.locks().is_empty(), "{:?}", plex.locks());
    assert!(deadlock::waits(&r).is_empty());
}
