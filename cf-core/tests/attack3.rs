//! Adversarial tests (review `attack3`) of bounded bypass (`lock/entry.rs`,
//! rule 5) with real processes, on the machinery of `bypass.rs`: member B (a
//! child process, this test binary re-run as `b_waits_for_r_attack3`) waits
//! for R exclusively while the parent (member A) holds it in share mode; the
//! parent stops B (SIGSTOP) each time it sleeps, releases R and takes it
//! again in share mode, so that after `BYPASS_LIMIT` bypasses B's request is
//! URGENT while A holds R in share mode. Each test then checks one thing.

mod common;

use cf_core::lock::records;
use cf_core::{testing, LockId, Member, Mode, Region, TryOutcome};
use common::ChildB;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PLEX_ENV: &str = "CF_ATTACK3_TEST_PLEX";

/// The child's part (B), when run by the tests below.
#[test]
fn b_waits_for_r_attack3() {
    common::child_b_waits_for_r(PLEX_ENV);
}

/// What the tests share: the region, A's holder (holding R in share mode),
/// B's child process, whose request for R is URGENT (B runs, asleep).
struct Setup {
    _dir: tempfile::TempDir,
    r: Arc<Region>,
    a: Member,
    ha: cf_core::Holder,
    held: LockId,
    child: ChildB,
}

fn b_urgent_while_a_shares_r() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let r = common::small_region(dir.path());
    let a = Member::connect(r.clone(), "A").unwrap();
    let mut ha = a.holder().unwrap();
    let mut held = match ha.try_lock(b"r", Mode::Share).unwrap() {
        TryOutcome::Granted(id) => id,
        other => panic!("{other:?}"),
    };
    let entry = held.entry;
    let child = ChildB::start("b_waits_for_r_attack3", PLEX_ENV, dir.path());
    for _ in 0..testing::BYPASS_LIMIT {
        child.stop_while_asleep(&r, entry);
        ha.unlock(held).unwrap();
        held = match ha.try_lock(b"r", Mode::Share).unwrap() {
            TryOutcome::Granted(id) => id,
            other => panic!("B is stopped, yet A was refused R: {other:?}"),
        };
        child.resume();
    }
    // B wakes, is refused a third time, turns URGENT and sleeps again.
    let since = Instant::now();
    loop {
        let urgent = (r.connector_ids())
            .flat_map(|c| records::all_records(&r, c).unwrap())
            .any(|rec| rec.urgent);
        if urgent && testing::holding_waiter_sleeps(&r, entry) {
            break;
        }
        assert!(since.elapsed() < Duration::from_secs(20), "B never urgent");
        std::thread::sleep(Duration::from_millis(1));
    }
    Setup {
        _dir: dir,
        r,
        a,
        ha,
        held,
        child,
    }
}

impl Setup {
    /// A lets R go; B is granted it and ends.
    fn finish(mut self) {
        self.ha.unlock(self.held).unwrap();
        self.child.finish();
        drop(self.ha);
        self.a.disconnect().unwrap();
    }
}

/// A reader that asks again for a resource it holds in share mode waits for
/// an urgent writer that waits for the reader's first holding: the two wait
/// for each other until one times out (SPEC invariant 3: no waiter starves;
/// DESIGN section 4: "an urgent request waits only for the holders of the
/// moment and for older urgent requests").
///
/// 1. A holds R in share mode; B asks for R exclusively and waits;
/// 2. B is bypassed `BYPASS_LIMIT` times (A releases R and takes it again in
///    share mode while B is stopped), and its record turns URGENT: B waits
///    for A's share holding;
/// 3. A asks for R in share mode once more (a second share holding, which
///    is compatible with everything *held*): `Latched::decide` finds B's
///    URGENT exclusive record, incompatible, older than A's request (which
///    has no ticket yet, then a younger one), and `blocks()` makes A wait
///    behind it;
/// 4. B can be granted only once A's first holding goes, and A's thread, in
///    `lock`, waits for B: neither moves until A's request times out (with
///    a long timeout, B and A both hang that long).
///
/// Before bounded bypass the second share was granted at once; it is again
/// (`lock/entry.rs` rule 5: an urgent request never makes wait a member that
/// already holds the resource).
#[test]
fn a_reader_asking_again_waits_for_the_urgent_writer_that_waits_for_it() {
    let mut s = b_urgent_while_a_shares_r();
    let t0 = Instant::now();
    let again = s.ha.lock(b"r", Mode::Share, Duration::from_secs(2));
    let waited = t0.elapsed();
    assert!(
        again.is_ok(),
        "A holds R in share mode and asked for it again in share mode: refused after {waited:?} \
         ({again:?}), having waited for B, whose urgent request waits for A's first holding"
    );
    if let Ok(id) = again {
        s.ha.unlock(id).unwrap();
    }
    s.finish();
}

/// `verify` takes an urgent request for damage: it reports that the lock
/// word names B "which holds nothing there" on a healthy region, where the
/// same request, waiting but not yet urgent, passes (SPEC section 5, `cfctl
/// verify` checks the invariants checkable at rest; DESIGN section 4: an
/// URGENT record is its member's interest, and the bit stays set for it).
///
/// 1. A holds R in share mode; B waits for R exclusively (its record is
///    PENDING, its bit not kept: `verify` is clean);
/// 2. B is bypassed `BYPASS_LIMIT` times and its record turns URGENT: its
///    step-out keeps B's bit for it (`holds_other_on` counts URGENT);
/// 3. `inspect::verify` counts only HELD records as what a named connector
///    has on an entry, and reports B's bit as a connector that holds nothing
///    there (`cfctl verify` exits 1 on a region where nothing is wrong).
#[test]
fn verify_takes_an_urgent_request_for_damage() {
    let s = b_urgent_while_a_shares_r();
    let problems = cf_core::inspect::verify(&s.r);
    assert!(
        problems.is_empty(),
        "B waits (urgent) for R, which A holds in share mode; nothing is damaged, yet: {problems:?}"
    );
    s.finish();
}
