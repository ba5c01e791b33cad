//! Who cleans up when the kernel wakes only one waiter
//! (`connector/liveness.rs`): two survivors sleep on the liveness words of
//! every peer (the model's `futex_waitv`); the victim's death marks its word
//! `OWNER_DIED` and wakes *one* sleeper, as the kernel's robust-list walk
//! does. Whatever the interleaving, both survivors learn of the death (loom
//! reports a deadlock if one sleeps on), and exactly one cleans it up. With
//! the woken survivor killed before it passes the wake on, its own death
//! (its word marked, one sleeper woken) tells the other, which finds both.

use super::harness::*;
use crate::connector::liveness::{self, confirm_dead, survey, wait_any};
use crate::ids::ConnectorId;
use crate::{cleanup_member_as, CleanupOutcome, Member, MemberState};
use std::time::Duration;

const VICTIM: u32 = 5;

/// What a survivor ended with: did it see the victim's word marked (or the
/// victim already cleaned up), and did its own cleanup clean the victim?
#[derive(Debug, Default, Clone, Copy)]
struct Learned {
    saw_death: bool,
    cleaned: bool,
}

/// A survivor's watch loop, as cf-node's liveness watcher runs it.
fn watch(r: &crate::Region, me: ConnectorId, victim: ConnectorId) -> Learned {
    let mut out = Learned::default();
    loop {
        let s = survey(r, me);
        for d in &s.died {
            if d.id == victim && confirm_dead(r, d, Duration::ZERO) {
                out.saw_death = true;
                if let Ok(CleanupOutcome::Cleaned(_)) =
                    cleanup_member_as(r, victim, Some(me), Some(1))
                {
                    out.cleaned = true;
                }
            }
        }
        let st = crate::connector::load_state(r, victim).unwrap().state;
        if out.saw_death || !st.has_process() {
            out.saw_death = true;
            return out;
        }
        wait_any(r, &s.watch, Duration::from_millis(20));
    }
}

/// Run a survivor as model process `pid`; if it is killed at its armed crash
/// point, the kernel walks its robust list (its word marked, one sleeper woken).
fn survivor(
    r: Arc<crate::Region>,
    pid: u32,
    me: ConnectorId,
    victim: ConnectorId,
    arm: bool,
) -> loom::thread::JoinHandle<Option<Learned>> {
    loom::thread::spawn(move || {
        let mut out = None;
        let ran = crate::crash::model::run_as(pid, || {
            if arm {
                crate::crash::model::arm("liveness.woken", 1);
            }
            out = Some(watch(&r, me, victim));
        });
        if !ran {
            liveness::model_kernel_death(&r, me, pid);
        }
        out
    })
}

fn model(arm_first: bool, preemptions: usize) {
    check(preemptions, move || {
        let r = region(3, 1);
        // Three members, each with its liveness word registered (TID = pid).
        let mut ids = Vec::new();
        for (pid, name) in [(VICTIM, "V"), (2, "S1"), (3, "S2")] {
            crate::connector::identity::model::enter(pid);
            let m = Member::connect(r.clone(), name).unwrap();
            liveness::model_register(&r, m.id(), m.generation(), pid);
            ids.push(m.id());
            std::mem::forget(m);
        }
        let (v, s1, s2) = (ids[0], ids[1], ids[2]);
        let a = survivor(r.clone(), 2, s1, v, arm_first);
        let b = survivor(r.clone(), 3, s2, v, false);
        // The victim is SIGKILLed: the kernel walks its robust list.
        let rv = r.clone();
        let k = loom::thread::spawn(move || {
            kill(VICTIM);
            liveness::model_kernel_death(&rv, v, VICTIM);
        });
        k.join().unwrap();
        let la = a.join().unwrap();
        let lb = b.join().unwrap().expect("S2 is never killed");
        assert!(lb.saw_death, "S2 never learned of the death");
        if let Some(la) = la {
            assert!(la.saw_death, "S1 never learned of the death");
        }
        let cleaned = la.map_or(0, |l| l.cleaned as u32) + lb.cleaned as u32;
        assert_eq!(cleaned, 1, "cleaned up {cleaned} times: {la:?} {lb:?}");
        assert_eq!(
            crate::connector::load_state(&r, v).unwrap().state,
            MemberState::FailedPersistent
        );
    });
}

/// Both survivors live: the woken one passes the wake on.
#[test]
fn one_wake_reaches_every_survivor_and_one_cleans_up() {
    model(false, 1);
}

/// The woken survivor is killed before it passes the wake on.
#[test]
fn a_survivor_killed_before_passing_the_wake_on_is_covered_by_its_own_death() {
    model(true, 2);
}
