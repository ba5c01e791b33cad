//! Model-based tests of the lock protocol and of recovery, in one process.
//!
//! A property test runs random sequences of operations: lock requests (try,
//! or waiting 1 ms) by several holders (threads) of several members, unlocks,
//! holders ending, deaths (simulated by faking a reused PID, the handles then
//! forgotten), explicit cleanups, reconnections (normal, or in recovery mode
//! as restart light does), `release_all_held` and disconnections. Every answer
//! is checked against a simple model of who holds what, in which mode, and
//! what is retained; after every step so is the whole region: the locks
//! (`inspect::locks`, with their retained flags), the members and their states
//! (`inspect::members`), mutual exclusion on every resource, the request
//! counters (`inspect::counters`, false contention included), and
//! `inspect::verify` (clean whenever no member is dead and not yet cleaned
//! up). The lock table has 16 entries and the eight resource names are chosen
//! so that several share an entry: false contention happens all the time.
//!
//! The model (SPEC.md section 4, DESIGN.md sections 3-6, 8):
//! * Share is compatible only with Share; compatibility is per resource, never
//!   per lock table entry; every holding counts, whoever holds it (another
//!   member, another holder of the same member, or a lock a reconnected
//!   member took back), except the requesting holder's own: a holder never
//!   waits for itself.
//! * False contention is counted for a granted request when another member
//!   holds another resource of the entry in an incompatible mode.
//! * A request that meets a retained modify lock (of a failed-persistent
//!   member, or of a recovering one, alive or dead) is answered "retained by
//!   M" at once. Otherwise the members in conflict that died and are not yet
//!   cleaned up are cleaned up first (as an explicit cleanup or a reconnect
//!   under their name does): their modify locks become retained, their share
//!   and exclusive locks are released, they become failed-persistent. Then:
//!   granted if nothing conflicts, "retained by M" if M retains the resource,
//!   else "contention" naming each conflicting member once.
//! * A lock-only (normal) connect under a dead member's name cleans it up and
//!   is refused: only a connection that recovers the member's log may take its
//!   retained locks back (SPEC invariant 5). A recovery connect (restart
//!   light) or a restart connect (a normal start that backs out first) takes
//!   them back in the RECOVERING state: its modify locks still answer
//!   "retained" (to its own holders as well), and if it dies they stay
//!   retained. A restart connect that finishes its recovery becomes active:
//!   what it took back is then held by the member (plain contention).
//! * Dropping a holder releases its locks; `release_all_held` releases every
//!   lock of the connection once no holder is open (it is refused before);
//!   disconnecting releases everything and frees the slot.

use cf_core::EntryIndex;
use cf_core::{
    cleanup_member, inspect, testing, CleanupOutcome, ConnectError, ConnectMode, CreateOptions,
    Holder, LockId, Member, MemberState, Mode, Plex, Region, Resource, Sizes, TryOutcome,
    WaitError,
};
use cf_core::{ConnectorId, SlotIndex};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Member names the operations choose from.
const NAMES: [&str; 4] = ["M0", "M1", "M2", "M3"];
/// Holders (threads) per member.
const HOLDERS: usize = 2;
/// Lock table entries: small, so that resources collide.
const ENTRIES: u32 = 16;
/// Record slots per member: 32 blocks of 64, so that repeated deaths and
/// reconnections that keep retained blocks never run a member out of blocks
/// within one case.
const RECORDS: u32 = 2048;

type Res = Result<(), TestCaseError>;

/// Eight resource names: three on one lock table entry, three on a second,
/// and two alone on a third and a fourth. Short and long names (up to the
/// 64-byte limit) mixed, the long ones differing only in their last bytes.
fn resources() -> &'static [String] {
    static R: OnceLock<Vec<String>> = OnceLock::new();
    R.get_or_init(|| {
        let quotas = [3usize, 3, 1, 1];
        let mut entries: Vec<(EntryIndex, usize)> = Vec::new(); // (entry, names still wanted)
        let mut out = Vec::new();
        for i in 0.. {
            if out.len() == quotas.iter().sum::<usize>() {
                break;
            }
            let name = match i % 3 {
                0 => format!("r{i}"),
                1 => format!("resource:{i:06}"),
                _ => format!("{}{i:04}", "p".repeat(60)),
            };
            let e = entry_of(&name);
            if let Some(slot) = entries.iter_mut().find(|(x, _)| *x == e) {
                if slot.1 > 0 {
                    slot.1 -= 1;
                    out.push(name);
                }
            } else if entries.len() < quotas.len() {
                entries.push((e, quotas[entries.len()] - 1));
                out.push(name);
            }
        }
        out
    })
}

/// The model's own compatibility rule (not the library's): Share with Share only.
fn compatible(a: Mode, b: Mode) -> bool {
    a == Mode::Share && b == Mode::Share
}

fn entry_of(name: &str) -> EntryIndex {
    Resource::new(name.as_bytes()).unwrap().entry(ENTRIES)
}

/// One step of a sequence.
#[derive(Clone, Debug)]
enum Op {
    /// Connect `NAMES[m]` lock-only: fresh; refused if live or failed.
    Connect(usize),
    /// `try_lock` (or, if `wait`, `lock` with a 1 ms timeout) by holder `h`
    /// of the `m`-th live member (in name order; a no-op if none is live).
    Lock {
        m: usize,
        h: usize,
        r: usize,
        mode: Mode,
        wait: bool,
    },
    /// Release lock `k` (modulo their number) of member `NAMES[m]`, or of the
    /// next live member holding something: by a holder's `unlock`, or by
    /// `release_record` for a lock taken back by a reconnect.
    Unlock { m: usize, k: usize },
    /// The member's process dies (its holders and handle are forgotten).
    Die(usize),
    /// `cleanup_member` on the member's connector.
    Cleanup(usize),
    /// Connect under the name of one of the dead members in recovery mode
    /// (restart light) or restart mode (a normal start that recovers first).
    Reconnect { pick: usize, recovery: bool },
    /// A member reconnected in restart mode finishes its recovery.
    FinishRecovery(usize),
    /// Drop the member's holders (releasing their locks), then disconnect.
    Disconnect(usize),
    /// `Member::release_all_held` on the `m`-th live member (what restart
    /// light does after its recovery connect): every lock of the connection,
    /// its holders' included, is released.
    ReleaseAll(usize),
    /// Drop holder `h` of the `m`-th live member (a thread ends): its locks
    /// are released and its blocks given back; a later `Lock` by holder `h`
    /// takes a new holder.
    DropHolder { m: usize, h: usize },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Life {
    Live,
    /// Reconnected in recovery mode: alive, its modify locks still retained.
    Recovering,
    /// Dead, not yet cleaned up (its connector still says active, or
    /// recovering if it died in recovery mode).
    Dead {
        recovering: bool,
    },
    /// Cleaned up: failed-persistent.
    Failed,
}

impl Life {
    fn alive(self) -> bool {
        matches!(self, Life::Live | Life::Recovering)
    }
    fn dead_uncleaned(self) -> bool {
        matches!(self, Life::Dead { .. })
    }
    /// Do its modify locks answer "retained"? (Also those of a member that
    /// died in recovery mode, before its cleanup: its state still retains.)
    fn retains(self) -> bool {
        matches!(
            self,
            Life::Failed | Life::Recovering | Life::Dead { recovering: true }
        )
    }
    fn state(self) -> MemberState {
        match self {
            Life::Live | Life::Dead { recovering: false } => MemberState::Active,
            Life::Recovering | Life::Dead { recovering: true } => MemberState::Recovering,
            Life::Failed => MemberState::FailedPersistent,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    /// Taken by holder `.0` of the member.
    Holder(usize, LockId),
    /// Retained by a dead incarnation, taken back by a reconnect.
    TakenBack,
}

#[derive(Clone, Copy, Debug)]
struct Hold {
    owner: Owner,
    res: usize,
    mode: Mode,
    slot: SlotIndex,
}

#[derive(Clone, Debug)]
struct MemberModel {
    id: ConnectorId,
    life: Life,
    holds: Vec<Hold>,
}

impl MemberModel {
    /// Cleanup: modify locks retained, the others released. Returns
    /// (released, retained).
    fn clean(&mut self) -> (usize, usize) {
        assert!(self.life.dead_uncleaned());
        let before = self.holds.len();
        self.holds.retain(|h| h.mode == Mode::Modify);
        self.life = Life::Failed;
        (before - self.holds.len(), self.holds.len())
    }
}

/// A live member's handles.
struct Conn {
    member: Member,
    holders: Vec<Option<Holder>>,
}

/// The region under test, the model, and the live handles.
struct World {
    region: Arc<Region>,
    model: Vec<Option<MemberModel>>,
    /// Requests made, requests that met a conflict, requests granted with
    /// false contention (an incompatible lock on another resource of the
    /// entry): what `inspect::counters` must say.
    counters: inspect::Counters,
    conns: Vec<Option<Conn>>,
    _dir: tempfile::TempDir,
}

/// What the model expects of a request.
#[derive(Debug)]
enum Expect {
    Granted,
    /// Conflicting members and, for each, the modes in which they conflict.
    Contention(BTreeMap<String, BTreeSet<&'static str>>),
    Retained(String),
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let plex = Plex {
            dir: dir.path().into(),
        };
        let opts = CreateOptions {
            sizes: Sizes {
                lock_entries: ENTRIES,
                members: 8,
                records_per_member: RECORDS,
            },
            group_access: false,
        };
        let region = Arc::new(Region::create(&plex, &opts).unwrap());
        World {
            region,
            model: vec![None; NAMES.len()],
            counters: inspect::Counters::default(),
            conns: (0..NAMES.len()).map(|_| None).collect(),
            _dir: dir,
        }
    }

    fn life(&self, m: usize) -> Option<Life> {
        self.model[m].as_ref().map(|mm| mm.life)
    }

    fn alive(&self, m: usize) -> bool {
        self.life(m).is_some_and(Life::alive)
    }

    /// Every holding of `r` incompatible with `mode` but those of holder
    /// `me` (a holder never waits for itself): (member, its mode).
    fn conflicts(&self, me: (usize, usize), r: usize, mode: Mode) -> Vec<(usize, Mode)> {
        let mut out = Vec::new();
        for (m, mm) in self.model.iter().enumerate() {
            for h in mm.iter().flat_map(|mm| &mm.holds) {
                let own = matches!(h.owner, Owner::Holder(x, _) if (m, x) == me);
                if h.res == r && !own && !compatible(h.mode, mode) {
                    out.push((m, h.mode));
                }
            }
        }
        out
    }

    fn apply(&mut self, op: &Op) -> Result<Option<TryOutcome>, TestCaseError> {
        match *op {
            Op::Connect(m) => self.connect(m, ConnectMode::Normal)?,
            Op::Lock {
                m,
                h,
                r,
                mode,
                wait,
            } => {
                // The m-th live member (so that few steps are wasted).
                let live: Vec<usize> = (0..NAMES.len()).filter(|&x| self.alive(x)).collect();
                if live.is_empty() {
                    return Ok(None);
                }
                return self.lock(live[m % live.len()], h, r, mode, wait);
            }
            Op::Unlock { m, k } => self.unlock(m, k)?,
            Op::Die(m) => self.die(m),
            Op::Cleanup(m) => self.cleanup(m)?,
            Op::Reconnect { pick, recovery } => {
                let dead: Vec<usize> = (0..NAMES.len())
                    .filter(|&m| matches!(self.life(m), Some(Life::Dead { .. } | Life::Failed)))
                    .collect();
                let mode = if recovery {
                    ConnectMode::Recovery
                } else {
                    ConnectMode::Restart
                };
                if !dead.is_empty() {
                    self.connect(dead[pick % dead.len()], mode)?;
                }
            }
            Op::Disconnect(m) => self.disconnect(m)?,
            Op::FinishRecovery(m) => self.finish_recovery(m)?,
            Op::ReleaseAll(m) => {
                let live: Vec<usize> = (0..NAMES.len()).filter(|&x| self.alive(x)).collect();
                if !live.is_empty() {
                    self.release_all(live[m % live.len()])?;
                }
            }
            Op::DropHolder { m, h } => {
                let live: Vec<usize> = (0..NAMES.len()).filter(|&x| self.alive(x)).collect();
                if !live.is_empty() {
                    let m = live[m % live.len()];
                    drop(self.conns[m].as_mut().unwrap().holders[h].take());
                    let mm = self.model[m].as_mut().unwrap();
                    mm.holds
                        .retain(|x| !matches!(x.owner, Owner::Holder(o, _) if o == h));
                }
            }
        }
        Ok(None)
    }

    fn connect(&mut self, m: usize, mode: ConnectMode) -> Res {
        let name = NAMES[m];
        let connect = || Member::connect_with(self.region.clone(), name, mode);
        match self.life(m) {
            Some(Life::Live | Life::Recovering) => match connect() {
                Err(ConnectError::NameInUse { .. }) => {}
                Err(e) => prop_assert!(false, "connect {name} while live: {e}"),
                Ok(_) => prop_assert!(false, "connect {name} while live succeeded"),
            },
            None if mode == ConnectMode::Recovery => match connect() {
                Err(ConnectError::NotFailed(_)) => {}
                Err(e) => prop_assert!(false, "recovery connect of new {name}: {e}"),
                Ok(_) => prop_assert!(false, "recovery connect of new {name} succeeded"),
            },
            None => {
                let member =
                    connect().map_err(|e| TestCaseError::fail(format!("connect {name}: {e}")))?;
                let id = member.id();
                for (o, mm) in self.model.iter().enumerate() {
                    if let Some(mm) = mm {
                        prop_assert_ne!(mm.id, id, "{} got the slot of {}", name, NAMES[o]);
                    }
                }
                self.model[m] = Some(MemberModel {
                    id,
                    life: Life::Live,
                    holds: Vec::new(),
                });
                self.conns[m] = Some(Conn {
                    member,
                    holders: (0..HOLDERS).map(|_| None).collect(),
                });
            }
            Some(Life::Dead { .. } | Life::Failed) if mode == ConnectMode::Normal => {
                let out = connect();
                let mm = self.model[m].as_mut().unwrap();
                if mm.life.dead_uncleaned() {
                    mm.clean();
                }
                match out {
                    Err(ConnectError::FailedPersistent(n)) => prop_assert_eq!(n, name),
                    Err(e) => prop_assert!(false, "lock-only connect of failed {name}: {e}"),
                    Ok(_) => prop_assert!(false, "lock-only connect of failed {name} succeeded"),
                }
            }
            Some(Life::Dead { .. } | Life::Failed) => {
                let member =
                    connect().map_err(|e| TestCaseError::fail(format!("reconnect {name}: {e}")))?;
                let mm = self.model[m].as_mut().unwrap();
                if mm.life.dead_uncleaned() {
                    mm.clean();
                }
                prop_assert_eq!(member.id(), mm.id, "reconnect {} in another slot", name);
                mm.life = Life::Recovering;
                for h in &mut mm.holds {
                    h.owner = Owner::TakenBack;
                }
                let mut want: Vec<_> = mm
                    .holds
                    .iter()
                    .map(|h| (h.slot, resources()[h.res].clone(), h.mode.as_str()))
                    .collect();
                want.sort();
                let held = member
                    .held_records()
                    .map_err(|e| TestCaseError::fail(format!("held_records: {e}")))?;
                let mut got: Vec<_> = held
                    .iter()
                    .map(|r| (r.slot, r.resource.display(), r.mode.as_str()))
                    .collect();
                got.sort();
                prop_assert_eq!(got, want, "locks taken back by reconnecting {}", name);
                self.conns[m] = Some(Conn {
                    member,
                    holders: (0..HOLDERS).map(|_| None).collect(),
                });
            }
        }
        Ok(())
    }

    fn lock(
        &mut self,
        m: usize,
        h: usize,
        r: usize,
        mode: Mode,
        wait: bool,
    ) -> Result<Option<TryOutcome>, TestCaseError> {
        if !self.alive(m) {
            return Ok(None);
        }
        // The model: a retained holding answers at once; otherwise the dead
        // members in conflict are cleaned up first; then decide.
        let retained = |w: &World, conflicts: &[(usize, Mode)]| {
            conflicts
                .iter()
                .find(|&&(x, xm)| xm == Mode::Modify && w.life(x).is_some_and(Life::retains))
                .map(|&(x, _)| x)
        };
        let mut conflicts = self.conflicts((m, h), r, mode);
        self.counters.requests += 1;
        // A request is counted in one class of contention at most: a real
        // conflict (even with a dead holder cleaned up on the way) is not
        // counted as false contention too.
        let met_conflict = !conflicts.is_empty();
        if met_conflict {
            self.counters.irlm_contention += 1;
        }
        if retained(self, &conflicts).is_none() {
            let dead: BTreeSet<usize> = conflicts
                .iter()
                .map(|&(x, _)| x)
                .filter(|&x| self.life(x).is_some_and(Life::dead_uncleaned))
                .collect();
            for &x in &dead {
                self.model[x].as_mut().unwrap().clean();
            }
            conflicts = self.conflicts((m, h), r, mode);
        }
        let expect = if conflicts.is_empty() {
            let e = entry_of(&resources()[r]);
            // Global: another member's holding (share and exclusive only,
            // so an incompatible mode is a conflicting interest).
            let false_contention = self.model.iter().enumerate().any(|(x, mm)| {
                x != m
                    && mm.iter().flat_map(|mm| &mm.holds).any(|h| {
                        h.res != r
                            && entry_of(&resources()[h.res]) == e
                            && !compatible(h.mode, mode)
                    })
            });
            if false_contention && !met_conflict {
                self.counters.false_contention += 1;
            }
            Expect::Granted
        } else if let Some(x) = retained(self, &conflicts) {
            // A modify holding excludes every other holding of its resource
            // but its own holder's.
            prop_assert!(
                conflicts.iter().all(|&(y, _)| y == x),
                "model: {:?}",
                conflicts
            );
            self.counters.retained_refusals += 1;
            Expect::Retained(NAMES[x].to_string())
        } else {
            let mut c: BTreeMap<String, BTreeSet<&'static str>> = BTreeMap::new();
            for &(x, xm) in &conflicts {
                c.entry(NAMES[x].to_string())
                    .or_default()
                    .insert(xm.as_str());
            }
            Expect::Contention(c)
        };

        let conn = self.conns[m].as_mut().unwrap();
        if conn.holders[h].is_none() {
            let holder = conn
                .member
                .holder()
                .map_err(|e| TestCaseError::fail(format!("holder of {}: {e}", NAMES[m])))?;
            conn.holders[h] = Some(holder);
        }
        let holder = conn.holders[h].as_mut().unwrap();
        let res = &resources()[r];
        let out = if wait {
            // A waiting request answers like a try once its time is up.
            match holder.lock(res.as_bytes(), mode, Duration::from_millis(1)) {
                Ok(id) => TryOutcome::Granted(id),
                Err(WaitError::Timeout(h)) => TryOutcome::Contention(h),
                Err(WaitError::Retained(h)) => TryOutcome::Retained(h),
                Err(e) => return Err(TestCaseError::fail(format!("lock: {e}"))),
            }
        } else {
            holder
                .try_lock(res.as_bytes(), mode)
                .map_err(|e| TestCaseError::fail(format!("try_lock: {e}")))?
        };
        match (&expect, &out) {
            (Expect::Granted, TryOutcome::Granted(id)) => {
                prop_assert_eq!(id.mode, mode);
                prop_assert_eq!(id.entry, entry_of(res));
                let mm = self.model[m].as_mut().unwrap();
                prop_assert!(
                    !mm.holds.iter().any(|x| x.slot == id.slot),
                    "slot {} granted twice",
                    id.slot
                );
                mm.holds.push(Hold {
                    owner: Owner::Holder(h, *id),
                    res: r,
                    mode,
                    slot: id.slot,
                });
            }
            (Expect::Contention(want), TryOutcome::Contention(got)) => {
                let names: Vec<&str> = got.iter().map(|i| i.name.as_str()).collect();
                let unique: BTreeSet<&str> = names.iter().copied().collect();
                prop_assert_eq!(unique.len(), names.len(), "names repeated: {:?}", got);
                let want_names: BTreeSet<&str> = want.keys().map(|s| s.as_str()).collect();
                prop_assert_eq!(
                    unique,
                    want_names,
                    "contention on {} {}: {:?}",
                    res,
                    mode,
                    got
                );
                for i in got {
                    prop_assert!(
                        want[&i.name].contains(i.mode.as_str()),
                        "{} named in {}, not a conflicting mode: {:?}",
                        i.name,
                        i.mode,
                        want
                    );
                    let x = NAMES.iter().position(|n| *n == i.name).unwrap();
                    prop_assert_eq!(i.id, self.model[x].as_ref().unwrap().id);
                }
            }
            (Expect::Retained(want), TryOutcome::Retained(got)) => {
                prop_assert_eq!(&got.name, want);
                prop_assert_eq!(got.mode, Mode::Modify);
            }
            _ => prop_assert!(
                false,
                "{} holder {} asks {} {} (wait: {}): expected {:?}, got {:?}",
                NAMES[m],
                h,
                res,
                mode,
                wait,
                expect,
                out
            ),
        }
        Ok(Some(out))
    }

    fn unlock(&mut self, m: usize, k: usize) -> Res {
        let holding = |x: &usize| {
            self.model[*x]
                .as_ref()
                .is_some_and(|mm| mm.life.alive() && !mm.holds.is_empty())
        };
        let Some(m) = (m..m + NAMES.len()).map(|x| x % NAMES.len()).find(holding) else {
            return Ok(());
        };
        let mm = self.model[m].as_mut().unwrap();
        let hold = mm.holds.remove(k % mm.holds.len());
        let conn = self.conns[m].as_mut().unwrap();
        let done = match hold.owner {
            Owner::Holder(h, id) => conn.holders[h].as_mut().unwrap().unlock(id),
            Owner::TakenBack => conn.member.release_record(hold.slot),
        };
        done.map_err(|e| TestCaseError::fail(format!("release {hold:?} of {}: {e}", NAMES[m])))
    }

    fn die(&mut self, m: usize) {
        if !self.alive(m) {
            return;
        }
        let mm = self.model[m].as_mut().unwrap();
        testing::fake_reused_pid(&self.region, mm.id);
        mm.life = Life::Dead {
            recovering: mm.life == Life::Recovering,
        };
        // Its handles belong to the dead process: never dropped.
        let conn = self.conns[m].take().unwrap();
        for h in conn.holders.into_iter().flatten() {
            std::mem::forget(h);
        }
        std::mem::forget(conn.member);
    }

    fn cleanup(&mut self, m: usize) -> Res {
        let Some(mm) = self.model[m].as_mut() else {
            return Ok(());
        };
        let out = cleanup_member(&self.region, mm.id)
            .map_err(|e| TestCaseError::fail(format!("cleanup: {e}")))?;
        match (mm.life, out) {
            (Life::Live | Life::Recovering, CleanupOutcome::NotDead) => {}
            (Life::Failed, CleanupOutcome::AlreadyDone) => {}
            (Life::Dead { .. }, CleanupOutcome::Cleaned(rep)) => {
                let (released, retained) = mm.clean();
                prop_assert_eq!(rep.member, mm.id);
                prop_assert_eq!(&rep.name, NAMES[m]);
                prop_assert_eq!(rep.released, released, "released: {:?}", rep);
                prop_assert_eq!(rep.retained, retained, "retained: {:?}", rep);
                prop_assert_eq!(rep.discarded, 0, "discarded: {:?}", rep);
                prop_assert_eq!(rep.state, MemberState::FailedPersistent);
            }
            (life, out) => prop_assert!(false, "cleanup of {} ({:?}): {:?}", NAMES[m], life, out),
        }
        Ok(())
    }

    fn release_all(&mut self, m: usize) -> Res {
        let conn = self.conns[m].as_ref().unwrap();
        if conn.holders.iter().any(|h| h.is_some()) {
            // Refused while a holder (thread) is open: nothing changes.
            let out = conn.member.release_all_held(|| {});
            prop_assert!(
                matches!(out, Err(cf_core::UnlockError::HoldersOpen)),
                "release_all_held with holders open: {:?}",
                out
            );
            return Ok(());
        }
        let n = conn
            .member
            .release_all_held(|| {})
            .map_err(|e| TestCaseError::fail(format!("release_all_held: {e}")))?;
        let mm = self.model[m].as_mut().unwrap();
        prop_assert_eq!(n, mm.holds.len(), "released by release_all_held");
        // The holders' lock ids are stale now: never unlocked again.
        mm.holds.clear();
        Ok(())
    }

    fn finish_recovery(&mut self, m: usize) -> Res {
        if !self.alive(m) {
            return Ok(());
        }
        let conn = self.conns[m].as_ref().unwrap();
        conn.member
            .finish_recovery()
            .map_err(|e| TestCaseError::fail(format!("finish_recovery {}: {e}", NAMES[m])))?;
        self.model[m].as_mut().unwrap().life = Life::Live;
        Ok(())
    }

    fn disconnect(&mut self, m: usize) -> Res {
        if !self.alive(m) {
            return Ok(());
        }
        let conn = self.conns[m].take().unwrap();
        // Dropping a holder releases what it holds.
        drop(conn.holders);
        let mm = self.model[m].as_mut().unwrap();
        mm.holds.retain(|h| h.owner == Owner::TakenBack);
        let taken_back = mm.holds.len();
        self.check()
            .map_err(|e| TestCaseError::fail(format!("after dropping the holders: {e}")))?;
        let rep = conn
            .member
            .disconnect()
            .map_err(|e| TestCaseError::fail(format!("disconnect {}: {e}", NAMES[m])))?;
        prop_assert_eq!(rep.released, taken_back, "released by disconnect");
        self.model[m] = None;
        Ok(())
    }

    /// The region agrees with the model, and its invariants hold.
    fn check(&self) -> Res {
        let region = &*self.region;
        // Locks: exactly the model's holdings.
        let locks = inspect::locks(region).map_err(|e| TestCaseError::fail(e.to_string()))?;
        if let Some(p) = locks.iter().find(|l| !l.held) {
            prop_assert!(false, "a pending record at rest: {:?}", p);
        }
        let mut got: Vec<_> = locks
            .iter()
            .map(|l| {
                (
                    l.member.clone(),
                    l.member_id,
                    l.slot,
                    l.resource.clone(),
                    l.mode.as_str(),
                    l.retained,
                )
            })
            .collect();
        got.sort();
        let mut want = Vec::new();
        for (m, mm) in self.model.iter().enumerate() {
            for h in mm.iter().flat_map(|mm| &mm.holds) {
                let mm = mm.as_ref().unwrap();
                want.push((
                    NAMES[m].to_string(),
                    mm.id,
                    h.slot,
                    resources()[h.res].clone(),
                    h.mode.as_str(),
                    mm.life.retains() && h.mode == Mode::Modify,
                ));
            }
        }
        want.sort();
        prop_assert_eq!(got, want, "inspect::locks (left) vs the model (right)");
        // Mutual exclusion on each resource (whoever holds it, but for two
        // holdings of one holder).
        // (Locks taken back by a reconnect came from one holder too.)
        let holder_of = |l: &inspect::LockView| {
            self.model.iter().flatten().find_map(|mm| {
                mm.holds.iter().find_map(|h| {
                    (mm.id == l.member_id && h.slot == l.slot).then_some(match h.owner {
                        Owner::Holder(x, _) => Some(x),
                        Owner::TakenBack => None,
                    })
                })
            })
        };
        for (i, a) in locks.iter().enumerate() {
            for b in &locks[i + 1..] {
                let one_holder = a.member_id == b.member_id
                    && holder_of(a).is_some()
                    && holder_of(a) == holder_of(b);
                prop_assert!(
                    a.resource != b.resource || compatible(a.mode, b.mode) || one_holder,
                    "{} held {} by {} and {} by {}",
                    a.resource,
                    a.mode,
                    a.member,
                    b.mode,
                    b.member
                );
            }
        }
        // Members and their states.
        let members = inspect::members(region).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut got: Vec<_> = members
            .iter()
            .map(|v| {
                (
                    v.name.clone(),
                    v.id,
                    v.state.as_str(),
                    v.alive,
                    v.held,
                    v.retained,
                )
            })
            .collect();
        got.sort();
        let mut want = Vec::new();
        for (m, mm) in self.model.iter().enumerate() {
            let Some(mm) = mm else { continue };
            let state = mm.life.state();
            let retained = if mm.life.retains() {
                mm.holds.iter().filter(|h| h.mode == Mode::Modify).count()
            } else {
                0
            };
            want.push((
                NAMES[m].to_string(),
                mm.id,
                state.as_str(),
                mm.life.alive(),
                mm.holds.len(),
                retained,
            ));
        }
        want.sort();
        prop_assert_eq!(got, want, "inspect::members (left) vs the model (right)");
        // Contention and false contention are published by every slow-path
        // request; the request count of a holder's fast path every 64 requests,
        // so the region may lag behind (and a dead holder's last few are lost).
        let c = inspect::counters(region);
        prop_assert_eq!(
            c.irlm_contention,
            self.counters.irlm_contention,
            "contention"
        );
        // Share and exclusive only: compatible modes never both take
        // exclusive interest, so no XES contention.
        prop_assert_eq!(c.xes_contention, 0, "XES contention");
        prop_assert_eq!(
            c.retained_refusals,
            self.counters.retained_refusals,
            "retained refusals"
        );
        prop_assert_eq!(
            c.false_contention,
            self.counters.false_contention,
            "false contention"
        );
        prop_assert!(
            c.requests <= self.counters.requests,
            "requests {:?} vs {:?}",
            c,
            self.counters
        );
        // verify: clean, except for reporting members not yet cleaned up.
        let problems = inspect::verify(region);
        let dead = self
            .model
            .iter()
            .flatten()
            .any(|mm| mm.life.dead_uncleaned());
        if dead {
            let other: Vec<_> = problems
                .iter()
                .filter(|p| !p.contains("not yet cleaned up"))
                .collect();
            prop_assert!(other.is_empty(), "verify: {:?}", other);
        } else {
            prop_assert!(problems.is_empty(), "verify: {:?}", problems);
        }
        Ok(())
    }

    /// Run `ops` from three connected members, checking after every step,
    /// then shut everything down (reconnecting the dead) and check the region
    /// is empty.
    fn run(&mut self, ops: &[Op]) -> Res {
        for m in 0..3 {
            self.connect(m, ConnectMode::Normal)?;
        }
        self.check()?;
        for (i, op) in ops.iter().enumerate() {
            let step = |e: TestCaseError| TestCaseError::fail(format!("step {i} {op:?}: {e}"));
            self.apply(op).map_err(step)?;
            self.check().map_err(step)?;
        }
        self.shut_down()
    }

    fn shut_down(&mut self) -> Res {
        for m in 0..NAMES.len() {
            if matches!(self.life(m), Some(Life::Dead { .. } | Life::Failed)) {
                self.connect(m, ConnectMode::Restart)?;
                self.check()?;
            }
            self.disconnect(m)?;
            self.check()?;
        }
        prop_assert!(inspect::locks(&self.region).unwrap().is_empty());
        prop_assert!(inspect::members(&self.region).unwrap().is_empty());
        prop_assert!(inspect::verify(&self.region).is_empty());
        Ok(())
    }

    /// `lock` by member `NAMES[m]` and `check`, panicking on a mismatch
    /// (deterministic tests).
    fn lock_now(&mut self, m: usize, h: usize, r: usize, mode: Mode) -> Option<TryOutcome> {
        let what = format!("{} holder {h} asks {} {mode}", NAMES[m], resources()[r]);
        let out = self
            .lock(m, h, r, mode, false)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        self.check().unwrap_or_else(|e| panic!("after {what}: {e}"));
        out
    }

    /// `apply` and `check`, panicking on a mismatch (deterministic tests).
    fn step(&mut self, op: Op) -> Option<TryOutcome> {
        let out = self.apply(&op).unwrap_or_else(|e| panic!("{op:?}: {e}"));
        self.check().unwrap_or_else(|e| panic!("after {op:?}: {e}"));
        out
    }
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![Just(Mode::Share), Just(Mode::Exclusive), Just(Mode::Modify)]
}

fn op() -> impl Strategy<Value = Op> {
    let n = NAMES.len();
    prop_oneof![
        12 => (0..n, 0..HOLDERS, 0..resources().len(), mode(), prop::bool::weighted(0.2))
            .prop_map(|(m, h, r, mode, wait)| Op::Lock { m, h, r, mode, wait }),
        3 => (0..n, 0..16usize).prop_map(|(m, k)| Op::Unlock { m, k }),
        1 => (0..n).prop_map(Op::Connect),
        3 => (0..n).prop_map(Op::Die),
        1 => (0..n).prop_map(Op::Cleanup),
        1 => (0..n, prop::bool::weighted(0.4))
            .prop_map(|(pick, recovery)| Op::Reconnect { pick, recovery }),
        1 => (0..n).prop_map(Op::FinishRecovery),
        1 => (0..n).prop_map(Op::Disconnect),
        1 => (0..n).prop_map(Op::ReleaseAll),
        1 => (0..n, 0..HOLDERS).prop_map(|(m, h)| Op::DropHolder { m, h }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        // PROPTEST_CASES overrides the default for longer runs.
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(128),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_lock_sequences_match_the_model(ops in prop::collection::vec(op(), 5..=40)) {
        World::new().run(&ops)?;
    }
}

// ---------------------------------------------------------------------------
// Deterministic sequences for the trickiest cases.

/// Indices into `resources()` of the three names on one entry.
fn colliding() -> [usize; 3] {
    let rs = resources();
    let e = entry_of(&rs[0]);
    let v: Vec<usize> = (0..rs.len()).filter(|&i| entry_of(&rs[i]) == e).collect();
    [v[0], v[1], v[2]]
}

fn is_granted(o: Option<TryOutcome>) -> bool {
    matches!(o, Some(TryOutcome::Granted(_)))
}

fn contention_names(o: Option<TryOutcome>) -> Vec<String> {
    match o {
        Some(TryOutcome::Contention(h)) => h.into_iter().map(|h| h.name).collect(),
        other => panic!("expected contention, got {other:?}"),
    }
}

fn retained_by(o: Option<TryOutcome>) -> String {
    match o {
        Some(TryOutcome::Retained(h)) => h.name,
        other => panic!("expected retained, got {other:?}"),
    }
}

#[test]
fn resources_collide_as_intended() {
    let rs = resources();
    assert_eq!(rs.len(), 8);
    assert!(rs.iter().any(|r| r.len() <= 8));
    assert!(rs.iter().filter(|r| r.len() == 64).count() >= 2);
    let mut per_entry: BTreeMap<EntryIndex, usize> = BTreeMap::new();
    for r in rs {
        *per_entry.entry(entry_of(r)).or_default() += 1;
    }
    let mut sizes: Vec<usize> = per_entry.into_values().collect();
    sizes.sort();
    assert_eq!(sizes, [1, 1, 3, 3]);
}

/// M0 dies holding share on `a` and modify on `b` (one entry), while M1 holds
/// share on `a` and exclusive on the colliding neighbour `c`; then requests,
/// the cleanup they trigger, a reconnect and disconnects.
#[test]
fn death_with_share_and_modify_on_colliding_resources() {
    let [a, b, c] = colliding();
    let mut w = World::new();
    for m in 0..3 {
        w.connect(m, ConnectMode::Normal).unwrap();
    }
    assert!(is_granted(w.lock_now(0, 0, a, Mode::Share)));
    assert!(is_granted(w.lock_now(0, 1, b, Mode::Modify)));
    assert!(is_granted(w.lock_now(1, 0, a, Mode::Share)));
    assert!(is_granted(w.lock_now(1, 0, c, Mode::Exclusive)));
    w.step(Op::Die(0));
    // A compatible request does not clean M0 up.
    assert!(is_granted(w.lock_now(2, 0, a, Mode::Share)));
    assert_eq!(w.life(0), Some(Life::Dead { recovering: false }));
    // Exclusive on `a`: conflicts with dead M0 (cleaned up first) and live M1, M2.
    assert_eq!(
        contention_names(w.lock_now(2, 1, a, Mode::Exclusive)),
        ["M1", "M2"]
    );
    assert_eq!(w.life(0), Some(Life::Failed));
    // M0's modify lock on `b` is retained; its neighbours are not affected.
    assert_eq!(retained_by(w.lock_now(2, 0, b, Mode::Share)), "M0");
    assert_eq!(retained_by(w.lock_now(1, 1, b, Mode::Modify)), "M0");
    assert_eq!(contention_names(w.lock_now(2, 0, c, Mode::Share)), ["M1"]);
    assert_eq!(inspect::retained(&w.region).unwrap().len(), 1);
    // A lock-only connect under M0's name is refused: its log is not recovered.
    w.step(Op::Connect(0));
    assert_eq!(w.life(0), Some(Life::Failed));
    assert_eq!(retained_by(w.lock_now(2, 0, b, Mode::Share)), "M0");
    // A restart (a normal start that recovers first) takes `b` back, still
    // retained until it finishes its recovery; then plain contention.
    w.step(Op::Reconnect {
        pick: 0,
        recovery: false,
    });
    assert_eq!(retained_by(w.lock_now(2, 0, b, Mode::Share)), "M0");
    w.step(Op::FinishRecovery(0));
    assert!(inspect::retained(&w.region).unwrap().is_empty());
    assert_eq!(contention_names(w.lock_now(2, 0, b, Mode::Share)), ["M0"]);
    // M0's own holder contends with the lock it took back.
    assert_eq!(contention_names(w.lock_now(0, 0, b, Mode::Share)), ["M0"]);
    assert_eq!(contention_names(w.lock_now(0, 0, c, Mode::Share)), ["M1"]);
    w.step(Op::Disconnect(1));
    assert!(is_granted(w.lock_now(0, 0, c, Mode::Share)));
    w.step(Op::Disconnect(0));
    assert!(is_granted(w.lock_now(2, 0, b, Mode::Modify)));
    w.shut_down().unwrap();
}

/// A member reconnected before anyone cleaned it up takes back only its modify
/// locks; it dies again holding those and new ones; an explicit cleanup
/// retains both; a second reconnect takes both back; disconnect frees all.
#[test]
fn reconnect_uncleaned_member_then_die_again() {
    let [a, b, c] = colliding();
    let alone = (0..resources().len())
        .find(|&i| {
            let e = entry_of(&resources()[i]);
            resources().iter().filter(|r| entry_of(r) == e).count() == 1
        })
        .unwrap();
    let mut w = World::new();
    for m in 0..2 {
        w.connect(m, ConnectMode::Normal).unwrap();
    }
    assert!(is_granted(w.lock_now(0, 0, a, Mode::Modify)));
    assert!(is_granted(w.lock_now(0, 1, b, Mode::Exclusive)));
    assert!(is_granted(w.lock_now(0, 1, alone, Mode::Share)));
    assert!(is_granted(w.lock_now(1, 0, alone, Mode::Share)));
    w.step(Op::Die(0));
    // A lock-only connect under the dead name cleans it up first, then is refused.
    w.step(Op::Connect(0));
    assert_eq!(w.life(0), Some(Life::Failed));
    restart(&mut w, 0);
    assert_eq!(
        w.conns[0]
            .as_ref()
            .unwrap()
            .member
            .held_records()
            .unwrap()
            .len(),
        1
    );
    assert!(is_granted(w.lock_now(1, 0, b, Mode::Modify)));
    assert!(is_granted(w.lock_now(1, 0, alone, Mode::Share)));
    assert!(is_granted(w.lock_now(0, 0, c, Mode::Modify)));
    assert!(is_granted(w.lock_now(0, 1, alone, Mode::Share)));
    w.step(Op::Die(0));
    // A request on another resource of the entry does not clean M0 up.
    w.step(unlock_op(&w, 1, b));
    assert!(is_granted(w.lock_now(1, 0, b, Mode::Exclusive)));
    assert_eq!(w.life(0), Some(Life::Dead { recovering: false }));
    w.step(Op::Cleanup(0));
    w.step(Op::Cleanup(0));
    assert_eq!(inspect::retained(&w.region).unwrap().len(), 2);
    assert_eq!(retained_by(w.lock_now(1, 1, a, Mode::Share)), "M0");
    assert_eq!(retained_by(w.lock_now(1, 1, c, Mode::Exclusive)), "M0");
    assert_eq!(
        contention_names(w.lock_now(1, 1, alone, Mode::Exclusive)),
        ["M1"]
    );
    restart(&mut w, 0);
    assert_eq!(
        w.conns[0]
            .as_ref()
            .unwrap()
            .member
            .held_records()
            .unwrap()
            .len(),
        2
    );
    // Release one taken-back lock by slot; disconnect releases the other.
    w.step(unlock_op(&w, 0, a));
    assert!(is_granted(w.lock_now(1, 1, a, Mode::Modify)));
    w.step(Op::Disconnect(0));
    assert!(is_granted(w.lock_now(1, 1, c, Mode::Modify)));
    w.shut_down().unwrap();
}

/// Holders (threads) of one member contend on one resource, never on a
/// colliding one; a dead member holding the colliding neighbour is not
/// cleaned up by a false-contention request, but is by a real conflict.
#[test]
fn holders_of_one_member_and_false_contention_with_the_dead() {
    let [a, b, c] = colliding();
    let mut w = World::new();
    for m in 0..3 {
        w.connect(m, ConnectMode::Normal).unwrap();
    }
    assert!(is_granted(w.lock_now(0, 0, a, Mode::Exclusive)));
    assert_eq!(contention_names(w.lock_now(0, 1, a, Mode::Share)), ["M0"]);
    // The holder's own lock does not conflict (it never waits for itself).
    assert!(is_granted(w.lock_now(0, 0, a, Mode::Share)));
    w.step(unlock_op(&w, 0, a));
    assert!(is_granted(w.lock_now(0, 1, b, Mode::Exclusive)));
    assert!(is_granted(w.lock_now(1, 0, c, Mode::Exclusive)));
    assert_eq!(contention_names(w.lock_now(1, 1, c, Mode::Share)), ["M1"]);
    assert_eq!(contention_names(w.lock_now(2, 0, c, Mode::Share)), ["M1"]);
    w.step(Op::Die(1));
    w.step(unlock_op(&w, 0, a));
    assert_eq!(w.life(1), Some(Life::Dead { recovering: false }));
    assert!(is_granted(w.lock_now(2, 0, a, Mode::Modify)));
    assert_eq!(w.life(1), Some(Life::Dead { recovering: false }));
    // A real conflict cleans it up: its exclusive lock is released.
    assert!(is_granted(w.lock_now(2, 1, c, Mode::Share)));
    assert_eq!(w.life(1), Some(Life::Failed));
    assert!(inspect::retained(&w.region).unwrap().is_empty());
    w.shut_down().unwrap();
}

/// Restart dead member `m` (the only dead one) as a normal start does: a
/// restart connect, then the end of its recovery.
fn restart(w: &mut World, m: usize) {
    w.step(Op::Reconnect {
        pick: 0,
        recovery: false,
    });
    assert_eq!(w.life(m), Some(Life::Recovering));
    w.step(Op::FinishRecovery(m));
}

/// The `Op::Unlock` that releases the (first) holding of member `m` on `r`.
fn unlock_op(w: &World, m: usize, r: usize) -> Op {
    let mm = w.model[m].as_ref().unwrap();
    assert!(mm.life.alive());
    let k = mm.holds.iter().position(|h| h.res == r).unwrap();
    Op::Unlock { m, k }
}

/// Restart light: a recovery connect takes the dead member's modify locks
/// back but they still answer "retained" (to everyone, its own holders
/// included); killed, it is cleaned up again and they stay retained; a second
/// one releases them all and disconnects.
#[test]
fn restart_light_killed_then_redone() {
    let [a, b, c] = colliding();
    let mut w = World::new();
    for m in 0..2 {
        w.connect(m, ConnectMode::Normal).unwrap();
    }
    assert!(is_granted(w.lock_now(0, 0, a, Mode::Modify)));
    assert!(is_granted(w.lock_now(0, 1, b, Mode::Share)));
    assert!(is_granted(w.lock_now(1, 0, b, Mode::Share)));
    w.step(Op::Die(0));
    // A recovery connect of a name that never failed is refused.
    w.connect(3, ConnectMode::Recovery).unwrap();
    w.step(Op::Reconnect {
        pick: 0,
        recovery: true,
    });
    assert_eq!(w.life(0), Some(Life::Recovering));
    assert_eq!(retained_by(w.lock_now(1, 0, a, Mode::Share)), "M0");
    assert_eq!(retained_by(w.lock_now(0, 0, a, Mode::Share)), "M0");
    // Its share lock was released by the cleanup: only M1's own share is left.
    assert_eq!(
        contention_names(w.lock_now(1, 1, b, Mode::Exclusive)),
        ["M1"]
    );
    // A modify lock it takes while recovering is retained too.
    assert!(is_granted(w.lock_now(0, 0, c, Mode::Modify)));
    assert_eq!(retained_by(w.lock_now(1, 1, c, Mode::Exclusive)), "M0");
    // Restart light is killed: still retained, before and after the cleanup.
    w.step(Op::Die(0));
    assert_eq!(retained_by(w.lock_now(1, 1, a, Mode::Modify)), "M0");
    assert_eq!(w.life(0), Some(Life::Dead { recovering: true }));
    w.step(Op::Cleanup(0));
    assert_eq!(inspect::retained(&w.region).unwrap().len(), 2);
    // The second restart light releases everything and disconnects.
    w.step(Op::Reconnect {
        pick: 0,
        recovery: true,
    });
    w.step(Op::ReleaseAll(0)); // the first live member: M0
    w.step(Op::Disconnect(0));
    assert!(is_granted(w.lock_now(1, 1, a, Mode::Modify)));
    assert!(is_granted(w.lock_now(1, 1, c, Mode::Modify)));
    w.shut_down().unwrap();
}
