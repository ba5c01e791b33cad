//! Adversarial tests (review `attack13`) of the attack12 fixes, with real
//! threads in one process. Each `#[ignore]`d test fails on the code it was
//! written against (ff8a62b). (The loom models of the same review are in
//! `src/loom_models/attack13.rs`.)

mod common;

use cf_core::lock::records;
use cf_core::{testing, CreateOptions, Member, Mode, Plex, Region, Sizes, TryOutcome};
use common::granted;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn region() -> (tempfile::TempDir, Arc<Region>) {
    let dir = tempfile::tempdir().unwrap();
    let opts = CreateOptions {
        sizes: Sizes {
            lock_entries: 16,
            members: 4,
            records_per_member: 256,
        },
        group_access: false,
    };
    let r = Arc::new(
        Region::create(
            &Plex {
                dir: dir.path().into(),
            },
            &opts,
        )
        .unwrap(),
    );
    (dir, r)
}

fn urgent_records(r: &Region) -> usize {
    r.connector_ids()
        .flat_map(|c| records::all_records(r, c).unwrap())
        .filter(|rec| rec.urgent)
        .count()
}

/// Wait (at most 20 s) until `f` holds.
fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let since = Instant::now();
    while !f() {
        assert!(since.elapsed() < Duration::from_secs(20), "never: {what}");
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Finding 1. The attack12 fix 3 (an urgent conflict is dropped only if the
/// requesting *holder* holds the resource: `records::slot_owner(..) ==
/// Request::holder`) relies on holder tokens being unique, but
/// `Connection::next_holder_token` is `pid << 24 | (n & 0xff_ffff) | 1`:
/// the `| 1` maps counters 2k and 2k+1 to one token. A member's 2nd and 3rd
/// holders (4th and 5th, ...) share a token, so each counts the other's
/// holding as its own, and attack12's finding 3 is back for them: an URGENT
/// writer is bypassed forever by two sibling readers taking turns.
///
/// This is attack12's test `an_urgent_writer_is_bypassed_forever_by_sibling_
/// readers_taking_turns` with one holder made (and kept) before the two
/// that take turns (attack12's test itself, holders 1 and 2 with tokens
/// `..|1` and `..|3`, passes).
///
/// Hole: `member/connection.rs` `next_holder_token` (the comment "block
/// owners are compared only with zero and with BLOCK_RETAINED" is no
/// longer true). Fix: `(pid << 32) | n` with `n` starting at 1 (nonzero
/// without the `| 1`), and refuse to make a holder when the counter would
/// wrap (or widen it): tokens must be unique among the member's live
/// holders now that `decide` compares them.
#[test]
fn siblings_with_one_token_bypass_an_urgent_writer_forever() {
    let (_d, r) = region();
    let a = Member::connect(r.clone(), "A").unwrap();
    let b = Member::connect(r.clone(), "B").unwrap();
    // Holder 1: token pid<<24 | 1. Holders 2 and 3: pid<<24 | 3, both.
    let _first = a.holder().unwrap();
    let mut hs = [a.holder().unwrap(), a.holder().unwrap()];
    let mut held = granted(hs[0].try_lock(b"r", Mode::Share).unwrap());
    let mut cur = 0;
    let entry = held.entry;
    let w = std::thread::spawn(move || {
        let mut h = b.holder().unwrap();
        let id = h
            .lock(b"r", Mode::Exclusive, Duration::from_secs(120))
            .expect("W is granted R");
        h.unlock(id).unwrap();
        drop(h);
        b.disconnect().unwrap();
    });
    let turn = |hs: &mut [cf_core::Holder; 2], held: &mut cf_core::LockId, cur: &mut usize| {
        let other = 1 - *cur;
        match hs[other].try_lock(b"r", Mode::Share).unwrap() {
            TryOutcome::Granted(id) => {
                hs[*cur].unlock(*held).unwrap();
                *held = id;
                *cur = other;
                true
            }
            TryOutcome::Contention(h) => {
                assert_eq!(h[0].name, "B", "{h:?}");
                false
            }
            other => panic!("{other:?}"),
        }
    };
    wait_until("W sleeps", || testing::holding_waiter_sleeps(&r, entry));
    let since = Instant::now();
    while urgent_records(&r) == 0 {
        assert!(since.elapsed() < Duration::from_secs(20), "W never urgent");
        assert!(
            turn(&mut hs, &mut held, &mut cur),
            "refused before W is urgent"
        );
        wait_until("W sleeps again", || {
            testing::holding_waiter_sleeps(&r, entry) || urgent_records(&r) > 0
        });
    }
    let mut grants = 0;
    let refused = loop {
        if grants == 100 {
            break false;
        }
        if !turn(&mut hs, &mut held, &mut cur) {
            break true;
        }
        grants += 1;
        std::thread::sleep(Duration::from_millis(1));
    };
    let still_urgent = urgent_records(&r);
    hs[cur].unlock(held).unwrap();
    w.join().unwrap();
    assert!(
        refused,
        "W's request was URGENT ({still_urgent} urgent record(s) after the turns), yet A's \
         holders 2 and 3 were granted R in share mode {grants} times in a row"
    );
    drop(hs);
    drop(_first);
    a.disconnect().unwrap();
}

fn epoch(r: &Region, entry: cf_core::EntryIndex) -> u64 {
    testing::read_lock_word(r, entry).0 >> testing::forge::EPOCH_SHIFT
}

/// Finding 4. Attack12 fix 4 makes every `step_out_for_good` a holdings
/// change (next epoch, holding waiters woken). A `try_lock` that meets a
/// holder being cleaned up by someone else waits for that cleanup
/// (`waiting_for_cleanup` in `slow_acquire`), and each of its looks ends
/// with `step_out_for_good`: two such requests wake each other round and
/// round until their `TRY_WAIT` ends (DESIGN section 4 / `word.rs`: "K
/// waiters on a held lock sleep until the holder lets go instead of waking
/// each other round and round").
///
/// D holds R in share mode and is being cleaned up (its state CLEANING, as
/// a cleaner leaves it while it walks; here forged, with the cleanup claim
/// held by a live process, so every `try_clean` of D is "in progress"). A and B each `try_lock(R,
/// Exclusive)`: each finds D's record (`classify`: `being_cleaned`),
/// steps out for good (epoch + 1, the other woken), finds the cleanup in
/// progress (`clean_dead`: `cleaning`), and waits for the holdings to change from its
/// own unlatch, which the other's next step-out does at once. Over the
/// second they wait, the epoch of R's entry moves tens of thousands of
/// times (two cores busy) instead of a few (one try alone moves it about
/// once per sleep slice).
///
/// Hole: `Latched::step_out_for_good` counts every step-out as a holdings
/// change, including that of a try that goes on waiting (the
/// `waiting_for_cleanup` path of `slow_acquire` uses it before it knows
/// whether it will answer). Checked: with `step_out_for_good`'s change back
/// to `end_urgency`'s (as before ff8a62b) this test passes. Fix: a holdings
/// change only when it ends an urgency or a half-made record (as before;
/// attack12's finding 4, one futex call for a stale announcement, is far
/// cheaper than this loop); or keep fix 4 only for a request that really
/// leaves: step out with a look (`step_out`) on this path, and if the
/// request then answers, clear the announcement with one more latch.
#[test]
fn two_tries_waiting_for_a_cleanup_do_not_wake_each_other_round_and_round() {
    let (_d, r) = region();
    let d = Member::connect(r.clone(), "D").unwrap();
    let mut hd = d.holder().unwrap();
    let held = granted(hd.try_lock(b"r", Mode::Share).unwrap());
    let entry = held.entry;
    let cleaning = 3 | (d.generation() as u64) << 32;
    let active = 2 | (d.generation() as u64) << 32;
    testing::write_connector_state(&r, d.id(), cleaning);
    // A live cleaner (this process) holds D's cleanup claim: every
    // `try_clean` of D answers "in progress".
    let me = cf_core::ProcessId::current().unwrap().token();
    testing::set_cleanup_claim(&r, d.id(), me);
    let alone = {
        let a = Member::connect(r.clone(), "A").unwrap();
        let mut h = a.holder().unwrap();
        let e0 = epoch(&r, entry);
        match h.try_lock(b"r", Mode::Exclusive).unwrap() {
            TryOutcome::Contention(c) => assert_eq!(c[0].name, "D"),
            other => panic!("{other:?}"),
        }
        let moved = epoch(&r, entry).wrapping_sub(e0);
        drop(h);
        a.disconnect().unwrap();
        moved
    };
    let e0 = epoch(&r, entry);
    let tries: Vec<_> = ["A", "B"]
        .into_iter()
        .map(|name| {
            let r = r.clone();
            std::thread::spawn(move || {
                let m = Member::connect(r, name).unwrap();
                let mut h = m.holder().unwrap();
                let out = h.try_lock(b"r", Mode::Exclusive).unwrap();
                drop(h);
                m.disconnect().unwrap();
                out
            })
        })
        .collect();
    for t in tries {
        match t.join().unwrap() {
            TryOutcome::Contention(c) => assert_eq!(c[0].name, "D"),
            other => panic!("{other:?}"),
        }
    }
    let moved = epoch(&r, entry).wrapping_sub(e0) & ((1 << 23) - 1);
    testing::set_cleanup_claim(&r, d.id(), 0);
    testing::write_connector_state(&r, d.id(), active);
    hd.unlock(held).unwrap();
    drop(hd);
    d.disconnect().unwrap();
    assert!(
        moved < 20 * alone.max(1) + 50,
        "two tries waiting one second for D's cleanup moved the epoch {moved} times \
         (one alone: {alone}): they woke each other round and round"
    );
}
