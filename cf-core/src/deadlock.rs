//! Deadlock detection across members: the wait records, and the detector
//! that reads them, finds the cycles of the wait-for graph and tells one
//! victim per cycle.
//!
//! # The wait record
//! Every holder (one thread of a member) has one, in the header of its first
//! block of record slots (`shm/slots.rs`, `WaitRecord`). Its `state` word is
//! `[seq:32][flags:32]`, flags `WAITING` and `VICTIM`; the sequence number
//! changes at every start and every end of a wait, so a reader tells one wait
//! from the next. The holder's thread alone writes the record, except that
//! the detector may CAS `VICTIM` into a `WAITING` state (and writes `victim`
//! and `cycle` just before).
//!
//! * **Start** (`Waiter::waiting`, under the entry's latch, the first time a
//!   `lock` request is refused by live holders and will wait): the holder
//!   token, the request's `(entry, slot)`, the mask of the connectors it
//!   conflicts with and the time are stored (release), then `state` becomes
//!   `(seq + 1, WAITING)`. At every later look the mask is refreshed (a hint:
//!   the detector checks the records themselves); nothing else changes.
//! * **End** (`Waiter::clear`, after the request's last step, whatever the
//!   answer: granted, timed out, retained, an error): one swap to
//!   `(seq + 1, 0)`. A granted request's record is HELD *before* its wait
//!   record ends: the detector reads the record's tag (PENDING or URGENT, on
//!   the recorded entry) as well as the state.
//! * **Reading** (`read_wait`): `state`, the fields, an acquire fence,
//!   `state` again: the fields are written only while the state is not
//!   `WAITING`, with release stores after the swap that ended the previous
//!   wait, so equal states mean fields of that one wait. A record is taken
//!   only from a block whose owner is the token it names, of a member whose
//!   slot has a process, and whose request record is still waiting on the
//!   recorded entry; anything else (a record left by a dead holder, a
//!   damaged one) is not a waiter.
//!
//! # The wait-for graph
//! A node is a waiting holder, `(member, holder token)`. Waiter `W` has an
//! edge to holder `H` when a record of `H` on `W`'s entry, of a connector in
//! `W`'s conflict mask, names `W`'s resource in a mode incompatible with
//! `W`'s and is HELD, or is URGENT with an older wait ticket (unless `W`
//! itself already holds the resource: `lock/entry.rs` rule 5). The record's
//! holder is the owner of its block; a record of `W`'s own is no edge (a
//! holder never waits for itself, rule 7: a conversion waits only for the
//! others' holdings, not for the lock it converts). Only nodes have edges, so a waiter that
//! waits for a holder that does not wait is in no cycle, and so is a waiter
//! of a dead member (its slot has no process, or fails the identity check
//! below): a dead member's waiters are not read, and a waiter that waits for
//! a dead member's lock gets the retained answer as before.
//!
//! # Invariants
//! 1. **A victim is told only of a cycle that existed.** The detector reads
//!    every wait record (times `a_i`), then the edges, then, for the nodes of
//!    a cycle, each request's tag (still PENDING or URGENT on its entry:
//!    not granted by then), each member's identity (same generation, its
//!    process alive, so alive all along), and last each `state` again,
//!    unchanged. Each node therefore waited, not granted, over an interval
//!    that contains the reading of every edge; a waiting holder releases
//!    nothing (its thread is inside `lock`); so at the moment of each edge
//!    reading, every node of the cycle held what the previous one waits for.
//! 2. **At most one victim per cycle, once.** One round runs at a time (the
//!    claim, below), the victim is told by one CAS from the exact `(seq,
//!    WAITING)` it read, it is removed from the graph and the search goes on
//!    (another cycle without it gets its own victim). A told victim still
//!    waiting is out of the graph in later rounds (it is about to answer):
//!    a cycle through it gets no second victim; it is only woken again.
//! 3. **The victim rule**: the youngest wait in the cycle (the latest
//!    `since_ns`, when its request began to wait), ties broken by the larger
//!    connector id, then the larger holder token. The youngest has waited
//!    least, so it loses the least work, and all members agree on it.
//! 4. **A victim releases only its own request.** Told (`Waiter::told`, at
//!    its next look under the latch, after it is woken), it steps out of the
//!    entry, frees its waiting record, records `deadlock_victim` and answers
//!    `WaitError::Deadlock` with the cycle; its granted locks are the
//!    caller's, who backs out and releases them like any abort. If it is
//!    granted first, the grant wins and the flag is forgotten. If a member
//!    of the cycle the detector wrote (its first [`CYCLE_KEPT`]) is no
//!    longer alive (it died after the checks: its locks go, or become
//!    retained, and the cycle breaks), the flag is taken back (`untell`) and
//!    the request looks again, cleaning its dead holders up: no cycle
//!    through a dead member ends in a victim. A dead holder *outside* the
//!    cycle breaks nothing: the victim backs out all the same (attack14: any
//!    dead or cleaning holder it conflicted with used to save it, and the
//!    cycle then lasted as long as that cleanup). That check only reads the
//!    members' slots, under the latch, before the request gives anything
//!    up, so it waits on exactly as it was: an URGENT record stays urgent
//!    (attack14: it used to turn PENDING first, and the untold request then
//!    waited past its bypass limit as a plain one for ever).
//! 5. **No lost wake-up of a victim.** The waiter, after announcing itself
//!    on the word and before sleeping, reads its state (`word::
//!    wait_for_holdings`); the detector, after its CAS, clears the waiter
//!    bits of the entry's word with an RMW and wakes both classes
//!    ([`wake`]). Both RMWs are on that word: if the detector's comes later
//!    it finds the announcement (and the sleep ends); if it comes first, the
//!    announcement reads from it and the state read after it sees `VICTIM`.
//!    (The sleepers woken for nothing look again: they may do that anyway.)
//!
//! # The claim
//! `deadlock_claim` in the lock structure's page holds the token of the
//! process running a round (`connector/claim.rs`): taken with one CAS from
//! 0 or from a dead process's token, released at the end of the round. A
//! member's detector thread runs a round when the last one began an
//! interval ago (`deadlock_last_ms`, checked again under the claim), so the
//! plex gets about one round per interval whoever runs it.
//!
//! # Crash windows (see `crash::CRASH_POINTS`)
//! * **A waiter killed with its record set**: its member is dead; its slot
//!   fails the identity check, then becomes CLEANING, FAILED_PERSISTENT,
//!   free: its records are not read (and its cleanup frees its waiting
//!   record, so the tag check fails too). A new holder of the block starts
//!   its record at the next sequence number, `WAITING` clear.
//! * **A detector killed after claiming** (`deadlock.claimed`): its token
//!   is dead; the next round takes the claim over.
//! * **Killed after choosing a victim, before telling it**
//!   (`deadlock.chosen`): nothing was written but `victim` and `cycle`,
//!   which mean nothing without `VICTIM`; the next round finds the cycle
//!   again and tells its victim (the same one, by the rule).
//! * **Killed after telling, before the wake** (`deadlock.told`): the
//!   victim finds the flag at its next look (its sleep slice ends within
//!   `entry::MAX_SLICE`); the next round skips the told victim's cycle and
//!   wakes it again.
//! * **Two detectors racing**: only one holds the claim; were two to run
//!   (a claimer declared dead by damage), each victim is told by one CAS
//!   from one exact state, so a wait is told at most once.
//! * **A victim granted just before it is told**: its grant made its record
//!   HELD before its wait record ended; the CAS fails if the wait ended,
//!   and a flag that lands before the end is ignored by a granted request:
//!   it answers granted. (A cycle member that times out after the checks
//!   and before the victim looks can still make the victim abort in a cycle
//!   that has just broken: one abort too many, never a wrong grant.)
//! * **The victim killed after it was told**: a dead member, as above.

use crate::connector::claim::{self, Claim};
use crate::connector::identity::ProcessId;
use crate::connector::{self, liveness};
use crate::error::DeadlockError;
use crate::events::{self, EventData};
use crate::ids::{ConnectorId, EntryIndex, SlotIndex};
use crate::lock::records::{
    self, Mode, RecordView, Resource, BLOCK_RETAINED, TAG_FREE, TAG_HELD, TAG_PENDING, TAG_URGENT,
};
use crate::lock::{futex, word};
use crate::shm::layout::BLOCK_SLOTS;
use crate::shm::region::Region;
use crate::shm::slots::{WaitRecord, CYCLE_WORDS};
use crate::sync::{AtomicU64, Ordering};
use std::collections::HashMap;
use std::time::Duration;

/// State flag: the holder waits (the other fields are this wait's).
const WAITING: u64 = 1;
/// State flag: the detector chose this wait as a deadlock victim.
const VICTIM: u64 = 2;

/// Cycle members a victim's wait record (and its answer) names at most.
pub const CYCLE_KEPT: usize = 2 * CYCLE_WORDS;

fn state(seq: u32, flags: u64) -> u64 {
    u64::from(seq) << 32 | flags
}

fn seq_of(s: u64) -> u32 {
    (s >> 32) as u32
}

/// Nanoseconds of CLOCK_MONOTONIC (the same clock for every process of the
/// host). Under loom time stands still: 0.
fn clock_ns() -> u64 {
    #[cfg(loom)]
    return 0;
    #[cfg(not(loom))]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into the timespec we pass.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }
}

fn wait_record(region: &Region, member: ConnectorId, block: u32) -> Option<&WaitRecord> {
    records::block(region, member, block).map(|b| &b.wait)
}

// ------------------------------------------------------------ the waiter

/// A holder's wait record, as its own thread writes it.
#[derive(Debug)]
pub(crate) struct Waiter {
    member: ConnectorId,
    /// The holder's first block (`u32::MAX`: none yet).
    block: u32,
    token: u64,
    /// The sequence number of the state as we last wrote it.
    seq: u32,
    /// The request in progress has published its wait.
    set: bool,
    mask: u32,
}

/// What a told victim answers with (`Waiter::victim_answer`).
#[derive(Debug)]
pub(crate) struct Told {
    /// Each member of the cycle from the victim on, with the mode in which it
    /// holds what the one before it waits for (as its record says now; at
    /// most [`CYCLE_KEPT`]).
    pub cycle: Vec<(ConnectorId, Mode)>,
}

impl Waiter {
    /// No record yet (before the holder's first block is claimed).
    pub(crate) fn detached(member: ConnectorId, token: u64) -> Waiter {
        Waiter {
            member,
            block: u32::MAX,
            token,
            seq: 0,
            set: false,
            mask: 0,
        }
    }

    /// Take the wait record of `block`, the holder's first: it continues the
    /// sequence of the record's earlier users, with no wait.
    pub(crate) fn attach(&mut self, region: &Region, block: u32) {
        self.block = block;
        if let Some(r) = wait_record(region, self.member, block) {
            let old = r.state.load(Ordering::Acquire);
            self.seq = seq_of(old).wrapping_add(1);
            r.state.swap(state(self.seq, 0), Ordering::AcqRel);
        }
    }

    fn record<'r>(&self, region: &'r Region) -> Option<&'r WaitRecord> {
        wait_record(region, self.member, self.block)
    }

    /// Under the entry's latch, after a conflict with live holders, before
    /// the request waits: publish the wait (the first time) or refresh the
    /// connectors it conflicts with.
    pub(crate) fn waiting(
        &mut self,
        region: &Region,
        slot: u32,
        entry: EntryIndex,
        conflicts: &[RecordView],
    ) {
        let Some(r) = self.record(region) else {
            return;
        };
        let mask = conflicts.iter().fold(0u64, |m, c| m | word::bit(c.member)) & word::MASK_BITS;
        let mask = mask as u32;
        if self.set {
            if mask != self.mask {
                r.conflicts.store(u64::from(mask), Ordering::Release);
                self.mask = mask;
            }
            return;
        }
        r.holder.store(self.token, Ordering::Release);
        r.request.store(
            u64::from(entry.get()) << 32 | u64::from(slot),
            Ordering::Release,
        );
        r.conflicts.store(u64::from(mask), Ordering::Release);
        r.since_ns.store(clock_ns(), Ordering::Release);
        self.seq = self.seq.wrapping_add(1);
        r.state.store(state(self.seq, WAITING), Ordering::Release);
        self.set = true;
        self.mask = mask;
    }

    /// Has the detector told this wait it is a deadlock victim?
    pub(crate) fn told(&self, region: &Region) -> bool {
        self.set
            && self.record(region).is_some_and(|r| {
                r.state.load(Ordering::Acquire) == state(self.seq, WAITING | VICTIM)
            })
    }

    /// Take the victim flag back: a holder in the cycle died (its locks are
    /// released or retained), so it is not a deadlock any more.
    pub(crate) fn untell(&self, region: &Region) {
        if let Some(r) = self.record(region) {
            let _ = r.state.compare_exchange(
                state(self.seq, WAITING | VICTIM),
                state(self.seq, WAITING),
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
    }

    /// The word whose change ends a sleep slice at once, and its value now
    /// (`word::wait_for_holdings`): the state of the published wait.
    pub(crate) fn interrupt<'r>(&self, region: &'r Region) -> Option<(&'r AtomicU64, u64)> {
        if !self.set {
            return None;
        }
        self.record(region)
            .map(|r| (&r.state, state(self.seq, WAITING)))
    }

    /// A told victim gives up: records `deadlock_victim` and returns the
    /// cycle the detector wrote. The wait still ends with [`Waiter::clear`].
    pub(crate) fn victim_answer(&self, region: &Region) -> Told {
        let Some(r) = self.record(region) else {
            return Told { cycle: Vec::new() };
        };
        let v = r.victim.load(Ordering::Relaxed);
        let len = (v >> 32) as usize;
        let by = (v & 0xffff_ffff) as u32;
        let cycle = told_cycle(region, r)
            .into_iter()
            .filter_map(|(c, slot)| held_mode(region, c, slot).map(|mode| (c, mode)))
            .collect();
        let waited = clock_ns().saturating_sub(r.since_ns.load(Ordering::Relaxed));
        let entry = (r.request.load(Ordering::Relaxed) >> 32) as u32;
        let by = by
            .checked_sub(1)
            .and_then(|b| region.check_member(b).ok())
            .map(|b| connector::name_of(region, b));
        events::record(
            region,
            &connector::name_of(region, self.member),
            by.as_deref(),
            EventData::DeadlockVictim {
                cycle_length: len as u64,
                waited_ns: waited,
                entry,
            },
        );
        Told { cycle }
    }

    /// Is a member of the cycle this wait was told of (as far as the
    /// detector wrote it) no longer alive? Then its locks go or become
    /// retained: the cycle breaks without a victim (invariant 4).
    pub(crate) fn cycle_lost_a_member(&self, region: &Region) -> bool {
        self.record(region).is_some_and(|r| {
            told_cycle(region, r)
                .into_iter()
                .any(|(c, _)| !connector::snapshot(region, c).is_ok_and(|s| s.is_alive()))
        })
    }

    /// The request is over (whatever its answer): the wait ends.
    pub(crate) fn clear(&mut self, region: &Region) {
        if !self.set {
            return;
        }
        self.set = false;
        self.mask = 0;
        self.seq = self.seq.wrapping_add(1);
        if let Some(r) = self.record(region) {
            r.state.swap(state(self.seq, 0), Ordering::AcqRel);
        }
    }
}

/// The cycle the detector wrote into a victim's record: `(member, slot)`
/// from the victim on, the members it names (at most [`CYCLE_KEPT`]; the
/// record is untrusted: a member out of range is left out).
fn told_cycle(region: &Region, r: &WaitRecord) -> Vec<(ConnectorId, u32)> {
    let len = (r.victim.load(Ordering::Relaxed) >> 32) as usize;
    let mut cycle = Vec::new();
    for i in 0..len.min(CYCLE_KEPT) {
        let w = r.cycle[i / 2].load(Ordering::Relaxed) >> (32 * (i % 2)) & 0xffff_ffff;
        let Some(c) = ((w >> 24) as u32).checked_sub(1) else {
            continue;
        };
        if let Ok(c) = region.check_member(c) {
            cycle.push((c, (w & 0xff_ffff) as u32));
        }
    }
    cycle
}

/// The mode of a cycle member's record, as it says now (a record released
/// meanwhile still names its last lock until it is reused).
fn held_mode(region: &Region, c: ConnectorId, slot: u32) -> Option<Mode> {
    let tag = records::tag(region, c, slot).ok()?.load(Ordering::Acquire);
    let tag = if records::tag_state(tag) == TAG_FREE {
        TAG_HELD
    } else {
        tag
    };
    records::read_record(region, c, slot, tag)
        .ok()
        .map(|r| r.mode)
}

/// Wake the sleepers on `entry`'s word, whatever they wait for: clear both
/// waiter bits with one RMW (see invariant 5), then wake the classes that
/// were announced. Every sleeper looks again and announces itself anew.
pub(crate) fn wake(region: &Region, entry: EntryIndex) {
    let Ok(w) = region.word(entry) else {
        return;
    };
    let old = w.fetch_and(!word::WAITER_BITS, Ordering::AcqRel);
    let mut classes = 0;
    if old & word::HOLDING_WAITERS != 0 {
        classes |= futex::HOLDINGS;
    }
    if old & word::LATCH_WAITERS != 0 {
        classes |= futex::LATCH;
    }
    if classes != 0 {
        futex::wake_high(w, classes);
    }
}

// ------------------------------------------------------------ the reader

/// A waiting request, as its wait record and its record say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    /// The waiting holder's member.
    pub member: ConnectorId,
    /// Its member name, as its slot said when the wait was read (untrusted:
    /// print it through [`escape`](crate::inspect::escape)).
    pub name: String,
    /// The waiting holder: its token (the owner of its blocks).
    pub holder: u64,
    /// The waiting request's record slot.
    pub slot: SlotIndex,
    /// The lock table entry it waits on.
    pub entry: EntryIndex,
    /// The mode it asks for.
    pub mode: Mode,
    /// The resource it asks for.
    pub resource: Resource,
    /// The connectors holding what it conflicts with, at its last look.
    pub conflicts: Vec<ConnectorId>,
    /// When it began to wait: nanoseconds of CLOCK_MONOTONIC.
    pub since_ns: u64,
    /// It was told it is a deadlock victim and has not answered yet.
    pub victim: bool,
}

/// One wait as the detector read it.
#[derive(Clone, Debug)]
struct Node {
    view: Waiting,
    generation: u32,
    block: u32,
    /// The state word as read (`WAITING`, maybe `VICTIM`).
    state: u64,
    ticket: u32,
}

/// Is `member`'s record `slot` a request still waiting on `entry` (PENDING
/// or URGENT there)? Then it was not granted yet.
fn request_waits(region: &Region, member: ConnectorId, slot: u32, entry: EntryIndex) -> bool {
    records::tag(region, member, slot).is_ok_and(|t| {
        let tag = t.load(Ordering::Acquire);
        tag == TAG_PENDING | entry.get() || tag == TAG_URGENT | entry.get()
    })
}

/// Read the wait record of `member`'s block `block` (owned by `owner`):
/// `None` unless it is a wait in progress of that owner (module docs).
fn read_wait(
    region: &Region,
    member: ConnectorId,
    generation: u32,
    block: u32,
    owner: u64,
) -> Option<Node> {
    let r = wait_record(region, member, block)?;
    let s1 = r.state.load(Ordering::Acquire);
    if s1 & WAITING == 0 {
        return None;
    }
    let holder = r.holder.load(Ordering::Relaxed);
    let request = r.request.load(Ordering::Relaxed);
    let mask = r.conflicts.load(Ordering::Relaxed);
    let since_ns = r.since_ns.load(Ordering::Relaxed);
    crate::sync::fence_acquire();
    if r.state.load(Ordering::Relaxed) != s1 || holder != owner {
        return None;
    }
    let (entry, slot) = (EntryIndex::new((request >> 32) as u32), request as u32);
    if entry.get() >= region.lock_entries() {
        return None;
    }
    let tag = records::tag(region, member, slot)
        .ok()?
        .load(Ordering::Acquire);
    if tag != TAG_PENDING | entry.get() && tag != TAG_URGENT | entry.get() {
        return None;
    }
    let rec = records::read_record(region, member, slot, tag).ok()?;
    Some(Node {
        view: Waiting {
            member,
            name: connector::name_of(region, member),
            holder,
            slot: SlotIndex::new(slot),
            entry,
            mode: rec.mode,
            resource: rec.resource,
            conflicts: (0..region.members())
                .filter(|c| mask & (1u64 << c) != 0)
                .map(ConnectorId::new)
                .collect(),
            since_ns,
            victim: s1 & VICTIM != 0,
        },
        generation,
        block,
        state: s1,
        ticket: rec.ticket,
    })
}

/// Every wait in progress of a member whose slot has a process.
fn read_all(region: &Region) -> Vec<Node> {
    let mut out = Vec::new();
    for c in region.connector_ids() {
        let Ok(snap) = connector::snapshot(region, c) else {
            continue;
        };
        if !snap.st.state.has_process() {
            continue;
        }
        let Ok(blocks) = region.blocks(c) else {
            continue;
        };
        let used = (records::scan_limit(region, c) / BLOCK_SLOTS) as usize;
        for (b, h) in blocks.iter().enumerate().take(used) {
            let owner = h.owner.load(Ordering::Acquire);
            if owner == 0 || owner == BLOCK_RETAINED {
                continue;
            }
            if let Some(n) = read_wait(region, c, snap.st.generation, b as u32, owner) {
                out.push(n);
            }
        }
    }
    out
}

/// The requests waiting now, as their wait records say (members whose slot
/// has a process; a read-only region will do).
pub fn waits(region: &Region) -> Vec<Waiting> {
    read_all(region).into_iter().map(|n| n.view).collect()
}

// ------------------------------------------------------------ the detector

/// A victim told by a round of the detector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Victim {
    /// Its wait.
    pub waiting: Waiting,
    /// How long it had waited when it was chosen.
    pub waited: Duration,
    /// The cycle from the victim on: each waits for the next, the last for
    /// the victim.
    pub cycle: Vec<Waiting>,
}

/// What one round of the detector found and did ([`detect_once`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Detection {
    /// Another live process runs a round (its PID): this call read nothing.
    pub busy: Option<u32>,
    /// The claim was taken over from a detector that died.
    pub taken_over: bool,
    /// Waits in progress read.
    pub waiting: usize,
    /// The victims told, one per cycle broken.
    pub victims: Vec<Victim>,
    /// Victims told before (by a detector that may have died before its
    /// wake) that still wait: woken again.
    pub rewoken: usize,
    /// Cycles found that got no victim: a wait in it ended, or a member of
    /// it died, before it was checked.
    pub abandoned: usize,
}

/// Run one round of the deadlock detector now, as connector `me` (named
/// in the victims' events; `None` for a tool), unless another live process
/// is running one ([`Detection::busy`]). See the module docs for the rules.
pub fn detect_once(region: &Region, me: Option<ConnectorId>) -> Result<Detection, DeadlockError> {
    round(region, me, false).map(|d| d.unwrap_or_default())
}

/// Run a round if the last one in the plex began at least the plex's
/// deadlock interval ago (`liveness::Settings::deadlock_interval`); `None`
/// if it is not due yet. A member's detector thread calls it every interval.
pub fn detect_if_due(
    region: &Region,
    me: Option<ConnectorId>,
) -> Result<Option<Detection>, DeadlockError> {
    round(region, me, true)
}

fn due(region: &Region, now_ms: u64) -> bool {
    let interval = liveness::settings(region).deadlock_interval.as_millis() as u64;
    let last = region
        .lock_header()
        .deadlock_last_ms
        .load(Ordering::Acquire);
    // A time ahead of the clock is damage: due.
    last == 0 || last > now_ms || now_ms - last >= interval
}

fn round(
    region: &Region,
    me: Option<ConnectorId>,
    when_due: bool,
) -> Result<Option<Detection>, DeadlockError> {
    if region.is_read_only() {
        return Err(DeadlockError::ReadOnly);
    }
    let now_ms = clock_ns() / 1_000_000;
    if when_due && !due(region, now_ms) {
        return Ok(None);
    }
    let token = ProcessId::current()
        .map_err(DeadlockError::Identity)?
        .token();
    let word = &region.lock_header().deadlock_claim;
    let taken_over = match claim::try_claim(word, token, ProcessId::token_is_alive) {
        Claim::Busy(t) => {
            return Ok(Some(Detection {
                busy: Some(t as u32),
                ..Detection::default()
            }))
        }
        Claim::Claimed { previous } => previous != 0,
    };
    crate::crash::point("deadlock.claimed");
    // Under the claim: another member may have run the round meanwhile.
    if when_due && !due(region, now_ms) {
        claim::release(word, token);
        return Ok(None);
    }
    region
        .lock_header()
        .deadlock_last_ms
        .store(now_ms.max(1), Ordering::Release);
    let mut out = detect(region, me);
    out.taken_over = taken_over;
    claim::release(word, token);
    Ok(Some(out))
}

/// An edge: the node waited for, and the slot of its record in which it
/// holds what the waiter asks for.
type Edge = (usize, u32);

fn detect(region: &Region, me: Option<ConnectorId>) -> Detection {
    let nodes = read_all(region);
    let mut out = Detection {
        waiting: nodes.len(),
        ..Detection::default()
    };
    let adj = edges(region, &nodes);
    // A told victim is leaving: out of the graph, woken again.
    let mut gone: Vec<bool> = nodes.iter().map(|n| n.view.victim).collect();
    for n in nodes.iter().filter(|n| n.view.victim) {
        wake(region, n.view.entry);
        out.rewoken += 1;
    }
    while let Some(mut cycle) = find_cycle(&adj, &gone) {
        let Some(v) = (0..cycle.len()).max_by_key(|&k| {
            let n = &nodes[cycle[k].0].view;
            (n.since_ns, n.member, n.holder)
        }) else {
            break;
        };
        cycle.rotate_left(v);
        if let Err(bad) = verify(region, &nodes, &cycle) {
            gone[bad] = true;
            out.abandoned += 1;
            continue;
        }
        crate::crash::point("deadlock.chosen");
        let victim = cycle[0].0;
        gone[victim] = true;
        if tell(region, me, &nodes, &cycle) {
            let n = &nodes[victim];
            out.victims.push(Victim {
                waiting: n.view.clone(),
                waited: Duration::from_nanos(clock_ns().saturating_sub(n.view.since_ns)),
                cycle: cycle.iter().map(|&(i, _)| nodes[i].view.clone()).collect(),
            });
        } else {
            out.abandoned += 1;
        }
    }
    out
}

/// The edges of every node (module docs, "The wait-for graph").
fn edges(region: &Region, nodes: &[Node]) -> Vec<Vec<Edge>> {
    let index: HashMap<(ConnectorId, u64), usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| ((n.view.member, n.view.holder), i))
        .collect();
    nodes
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let v = &w.view;
            let mut cands: Vec<RecordView> = Vec::new();
            for &c in &v.conflicts {
                let _ = records::for_each_interest_on(region, c, v.entry, |r| {
                    if (c == v.member && r.slot == v.slot)
                        || r.resource != v.resource
                        || v.mode.compatible(r.mode)
                    {
                        return;
                    }
                    // An urgent request makes wait only younger ones (rule 5).
                    if r.held || w.ticket == 0 || records::ticket_older(r.ticket, w.ticket) {
                        cands.push(r);
                    }
                });
            }
            if cands.iter().any(|r| !r.held) && holder_holds(region, v) {
                cands.retain(|r| r.held);
            }
            cands
                .iter()
                .filter_map(|r| {
                    let owner = records::slot_owner(region, r.member, r.slot.get())?;
                    let &t = index.get(&(r.member, owner))?;
                    // A holder never waits for itself (`entry.rs` rule 7).
                    (t != i).then_some((t, r.slot.get()))
                })
                .collect()
        })
        .collect()
}

/// Does the waiting holder (thread) hold its resource already (another
/// record of its own, HELD)? Then urgent requests do not make it wait (the
/// decision's rule, `entry.rs` rule 5; a sibling's holding does not count).
fn holder_holds(region: &Region, v: &Waiting) -> bool {
    let mut holds = false;
    let _ = records::for_each_interest_on(region, v.member, v.entry, |r| {
        holds |= r.held
            && r.slot != v.slot
            && r.resource == v.resource
            && records::slot_owner(region, v.member, r.slot.get()) == Some(v.holder);
    });
    holds
}

/// A cycle of the graph without the `gone` nodes, as `(node, slot)` in
/// wait-for order (each waits for the next, the last for the first), `slot`
/// the record in which the node holds what the one before it waits for.
fn find_cycle(adj: &[Vec<Edge>], gone: &[bool]) -> Option<Vec<Edge>> {
    let mut color = vec![0u8; adj.len()]; // 0 new, 1 on the path, 2 done
    for start in 0..adj.len() {
        if gone[start] || color[start] != 0 {
            continue;
        }
        // The path: (node, next edge to follow, slot of the edge into it).
        let mut path: Vec<(usize, usize, u32)> = vec![(start, 0, u32::MAX)];
        color[start] = 1;
        while let Some(top) = path.len().checked_sub(1) {
            let (v, i, _) = path[top];
            let Some(&(w, slot)) = adj[v].get(i) else {
                color[v] = 2;
                path.pop();
                continue;
            };
            path[top].1 += 1;
            if gone[w] {
                continue;
            }
            match color[w] {
                0 => {
                    color[w] = 1;
                    path.push((w, 0, slot));
                }
                1 => {
                    let from = path.iter().position(|p| p.0 == w)?;
                    let mut cycle = vec![(w, slot)];
                    cycle.extend(path[from + 1..].iter().map(|p| (p.0, p.2)));
                    return Some(cycle);
                }
                _ => {}
            }
        }
    }
    None
}

/// Check a cycle just before its victim is told (invariant 1): every
/// request still waits on its entry, every member is the same live
/// connection, and, read last, every wait record is unchanged. `Err` names
/// a node that fails.
fn verify(region: &Region, nodes: &[Node], cycle: &[Edge]) -> Result<(), usize> {
    let mut alive: HashMap<ConnectorId, bool> = HashMap::new();
    for &(i, _) in cycle {
        let n = &nodes[i];
        let v = &n.view;
        if !request_waits(region, v.member, v.slot.get(), v.entry) {
            return Err(i);
        }
        let live = *alive.entry(v.member).or_insert_with(|| {
            connector::snapshot(region, v.member)
                .is_ok_and(|s| s.st.generation == n.generation && s.is_alive())
        });
        if !live {
            return Err(i);
        }
    }
    for &(i, _) in cycle {
        let n = &nodes[i];
        let now =
            wait_record(region, n.view.member, n.block).map(|r| r.state.load(Ordering::Acquire));
        if now != Some(n.state) {
            return Err(i);
        }
    }
    Ok(())
}

/// Tell the cycle's first node it is the victim: the cycle into its
/// record, then one CAS from the state read, then the wake. False if its
/// wait ended meanwhile.
fn tell(region: &Region, me: Option<ConnectorId>, nodes: &[Node], cycle: &[Edge]) -> bool {
    let n = &nodes[cycle[0].0];
    let Some(r) = wait_record(region, n.view.member, n.block) else {
        return false;
    };
    let by = me.map_or(0, |m| u64::from(m.get()) + 1);
    r.victim
        .store((cycle.len() as u64) << 32 | by, Ordering::Relaxed);
    for (k, w) in r.cycle.iter().enumerate() {
        let mut packed = 0u64;
        for half in 0..2 {
            if let Some(&(i, slot)) = cycle.get(2 * k + half) {
                let m = u64::from(nodes[i].view.member.get()) + 1;
                packed |= (m << 24 | u64::from(slot) & 0xff_ffff) << (32 * half);
            }
        }
        w.store(packed, Ordering::Relaxed);
    }
    if r.state
        .compare_exchange(
            n.state,
            n.state | VICTIM,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_err()
    {
        return false;
    }
    region
        .lock_header()
        .deadlock_victims
        .fetch_add(1, Ordering::Relaxed);
    crate::crash::point("deadlock.told");
    wake(region, n.view.entry);
    true
}

/// Deadlock victims told since the region was created.
pub fn victims_told(region: &Region) -> u64 {
    region
        .lock_header()
        .deadlock_victims
        .load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_are_found_in_wait_for_order() {
        // 0 -> 1 -> 2 -> 0, and 3 -> 0 (not in the cycle).
        let adj = vec![vec![(1, 11)], vec![(2, 12)], vec![(0, 10)], vec![(0, 99)]];
        let c = find_cycle(&adj, &[false; 4]).unwrap();
        assert_eq!(c, vec![(0, 10), (1, 11), (2, 12)]);
        assert_eq!(find_cycle(&adj, &[false, true, false, false]), None);
        // A self-loop: a holder waiting for its own lock.
        let adj = vec![vec![(0, 5)]];
        assert_eq!(find_cycle(&adj, &[false]), Some(vec![(0, 5)]));
        // No cycle.
        let adj = vec![vec![(1, 1)], vec![(2, 2)], vec![]];
        assert_eq!(find_cycle(&adj, &[false; 3]), None);
    }
}
