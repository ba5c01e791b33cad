//! Adversarial models (review `attack1`): each one asserts an invariant of
//! SPEC section 4 or of `lock/entry.rs` on the code that ships, and failed on
//! the code it was written against.

use super::harness::*;
use crate::lock::records;
use crate::lock::word;
use crate::sync::Ordering;
use crate::{Member, Mode};
use loom::thread;
use std::time::Duration;

/// A half-made request that gives up without ever latching (its latch wait
/// times out) leaves its member's bit behind.
///
/// Member A (one process, two threads) holds R1 on entry E, which is mixed.
/// Thread 1 releases R1 on the latched path: `entry::release` sees, in
/// `holds_other_on`, thread 2's record for R3 (same entry) HELD -- a
/// half-made request between its tag and its failed CAS -- and so unlatches
/// with A's bit kept. Thread 2's `lock(R3, .., 0)` then finds the latch busy,
/// times out in `entry::latch` and frees its record in `slow_acquire`
/// (`free_record()` on `LatchError::TimedOut`) without latching, so nobody
/// recomputes A's bit (rule 3 says half-made requests "always latch
/// afterwards": this one does not). At rest the word names A on an entry
/// where A holds nothing: `verify` reports it.
///
/// (Worse: in the same interleaving, a SIGKILL of A between thread 1's
/// `tag.store(TAG_FREE)` and its `unlatch` leaves E latched by A with no
/// record of A on E; A's cleanup never visits E, and every later request or
/// release on E fails with "is failed-persistent but holds the latch".)
#[test]
fn timed_out_half_made_request_leaves_a_stale_bit() {
    check(2, || {
        let r = region(1, 2);
        let names = colliding(3);
        let e = entry_of(&names[0]);
        let m = Arc::new(Member::connect(r.clone(), "A").unwrap());
        // R1 held by holder 1 (fast path), R2 taken and released by holder 2
        // (latched path): E is left mixed, naming A for R1.
        let mut h1 = m.holder().unwrap();
        let r1 = take(&mut h1, &names[0], Mode::Exclusive);
        let mut h2 = m.holder().unwrap();
        let r2 = take(&mut h2, &names[1], Mode::Exclusive);
        h2.unlock(r2).unwrap();
        let w = r.word(e).unwrap().load(Ordering::Relaxed);
        assert!(w & word::MIXED != 0, "setup: E is mixed ({w:#x})");
        let releaser = thread::spawn(move || {
            h1.unlock(r1).unwrap();
            h1
        });
        let r3 = names[2].clone();
        let asker = thread::spawn(move || {
            let out = h2.lock(&r3, Mode::Exclusive, Duration::ZERO).unwrap();
            if let Ok(id) = out {
                h2.unlock(id).unwrap();
            }
            (h2, format!("{out:?}"))
        });
        drop(releaser.join().unwrap());
        let (h2, answer) = asker.join().unwrap();
        drop(h2);
        // At rest: A holds nothing anywhere (`inspect::verify`, not built
        // under loom, reports "lock entry E names connector 0, which holds
        // nothing there").
        assert!(records::all_records(&r, 0).unwrap().is_empty());
        let w = r.word(e).unwrap().load(Ordering::Relaxed);
        assert_eq!(w, 0, "A holds nothing on E, yet the word is {w:#x} (R3 answered {answer})");
        Arc::into_inner(m).unwrap().disconnect().unwrap();
    });
}
