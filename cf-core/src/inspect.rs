//! Read-only views of a region for the operator (`cfctl display`, `verify`).
//! Nothing here changes the region (they work on a region opened with
//! [`Region::open_read_only`]); everything read is checked, and damage is
//! reported as a problem, never a panic.
//!
//! [`verify`] is at least as strict as every reader of the region: whatever
//! makes a display, a connect, a cleanup or a recovery refuse the region (or
//! stall on it) is one of its problems. Names and resources read from the
//! region are printed only through [`escape`].

use crate::connector::{self, MemberState};
use crate::error::CorruptError;
use crate::ids::{ConnectorId, EntryIndex, SlotIndex};
use crate::layout::StructureKind;
use crate::lock::entry::bits;
use crate::lock::records::{self, Mode, RecordView};
use crate::lock::word::{self as lockword, Word};
use crate::region::Region;
use crate::sync::Ordering;
use std::collections::HashMap;

pub use crate::error::escape;

/// Why a name read from the region is no member name (`check_name`'s reason).
fn name_problem(name: &str) -> Result<(), &'static str> {
    match connector::check_name(name) {
        Ok(()) => Ok(()),
        Err(crate::error::ConnectError::BadName(_, why)) => Err(why),
        Err(_) => Err("not a member name"),
    }
}

/// One connector slot that is not free ([`members`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberView {
    /// The slot's connector id.
    pub id: ConnectorId,
    /// The member name stored in the slot (raw: print it through [`escape`]).
    pub name: String,
    /// The slot's state (never [`MemberState::Free`]).
    pub state: MemberState,
    /// The generation of the slot's connection.
    pub generation: u32,
    /// PID of the recorded process.
    pub pid: u32,
    /// Start time of the recorded process (clock ticks since boot, as in
    /// [`ProcessId::start_time`](crate::ProcessId::start_time)).
    pub start_time: u64,
    /// Is the recorded process running (same PID and start time)? Always
    /// false in a state without a process (cleaning, failed-persistent).
    pub alive: bool,
    /// Records of the member that are held (not waiting).
    pub held: usize,
    /// Held modify records, which are retained: 0 unless the member is
    /// failed-persistent or recovering.
    pub retained: usize,
    /// When the slot was last connected: wall-clock ns since the Unix epoch.
    pub connected_unix_ns: u64,
    /// When a cleanup made the member failed-persistent: wall-clock ns since
    /// the Unix epoch (0: not since its last fresh connect).
    pub failed_unix_ns: u64,
    /// The operator's state: active, status-update-missing, fenced,
    /// cleaning, failed-persistent, recovering.
    pub status: &'static str,
    /// Age of the last heartbeat in ms (None: the member does not beat).
    pub heartbeat_age_ms: Option<u64>,
    /// The liveness word: "registered", "owner-died" or "none".
    pub liveness: &'static str,
}

/// One held (or pending) lock ([`locks`], [`retained`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockView {
    /// The name of the member whose record it is (raw: print it through
    /// [`escape`]).
    pub member: String,
    /// That member's connector id.
    pub member_id: ConnectorId,
    /// The resource in [`Resource::display`](crate::Resource::display) form
    /// (text or `0x` hex; print it through [`escape`]).
    pub resource: String,
    /// The mode held or asked for.
    pub mode: Mode,
    /// The lock table entry the record is on.
    pub entry: EntryIndex,
    /// The record's slot in the member's area.
    pub slot: SlotIndex,
    /// False for a request still waiting (pending or urgent record) or a
    /// lock being released.
    pub held: bool,
    /// Held by a failed-persistent or recovering member in modify mode.
    pub retained: bool,
}

/// Lock-structure activity, summed over live holders, connectors and the
/// past. The three kinds of global contention are counted apart, once per
/// request, as z/OS and Db2 reports do (`lock/entry.rs`, "Contention"):
/// `irlm_contention`, `xes_contention` and `false_contention`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Lock requests made.
    pub requests: u64,
    /// IRLM contention: requests that met a real conflict (a holding of the
    /// same resource in an incompatible mode, by another holder), counted
    /// once per request.
    pub irlm_contention: u64,
    /// XES contention: requests granted after the lock word showed another
    /// member's conflicting interest (exclusive against share or exclusive)
    /// while its holdings of the resource were in compatible modes.
    pub xes_contention: u64,
    /// False contention: requests granted after meeting another member's
    /// holding of another resource hashed to the same lock entry, with
    /// conflicting interest in the word.
    pub false_contention: u64,
    /// Requests refused because a failed member retains the resource
    /// ("incompatible retained lock").
    pub retained_refusals: u64,
}

impl Counters {
    /// All global contention: IRLM, XES and false.
    pub fn global_contention(&self) -> u64 {
        self.irlm_contention
            .saturating_add(self.xes_contention)
            .saturating_add(self.false_contention)
    }
}

impl From<&crate::connector::Activity> for Counters {
    fn from(a: &crate::connector::Activity) -> Counters {
        Counters {
            requests: a.requests,
            irlm_contention: a.irlm_contention,
            xes_contention: a.xes_contention,
            false_contention: a.false_contention,
            retained_refusals: a.retained_refusals,
        }
    }
}

/// One structure of the directory ([`structures`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StructureView {
    /// The directory entry's name ([`StructureKind::name`]).
    pub name: String,
    /// What it is, in words: `"connector table"`, `"lock structure"`,
    /// `"lock table"`, `"record areas"`, or `"unknown"` for the other kinds.
    pub kind: &'static str,
    /// Byte offset of the structure in the region file.
    pub offset: u64,
    /// Size of the structure in bytes.
    pub size: u64,
    /// Lock structure only: the number of lock table entries.
    pub lock_entries: Option<u32>,
    /// Lock structure only: entries whose word is not free (something held
    /// or latched) at the time of the read.
    pub entries_in_use: Option<u64>,
    /// Lock structure only: its activity ([`counters`]).
    pub counters: Option<Counters>,
    /// Connectors only: the number of connector slots.
    pub members: Option<u32>,
    /// Record areas only: record slots per member.
    pub records_per_member: Option<u32>,
}

/// Every connector slot that is not free, in connector id order, with its
/// process, records and liveness. An error if a slot's state word, or one
/// of its records, is damaged.
pub fn members(region: &Region) -> Result<Vec<MemberView>, CorruptError> {
    let mut out = Vec::new();
    for id in region.connector_ids() {
        let snap = connector::snapshot(region, id)?;
        let st = snap.st;
        if st.state == MemberState::Free {
            continue;
        }
        let p = snap.process;
        let slot = region.connector(id)?;
        let recs = records::all_records(region, id)?;
        let held = recs.iter().filter(|r| r.held).count();
        let retained = if st.state.retains() {
            recs.iter().filter(|r| r.held && r.mode.is_modify()).count()
        } else {
            0
        };
        let interval = crate::connector::liveness::settings(region).interval;
        let hb = crate::connector::liveness::status(region, id, interval)?;
        use crate::connector::liveness::{Status, OWNER_DIED, TID_MASK};
        let heartbeat_age_ms = match hb {
            Status::NoHeartbeat => None,
            Status::Fresh { age_ms, .. }
            | Status::Missing { age_ms, .. }
            | Status::Fenced { age_ms, .. } => Some(age_ms),
        };
        let status = match (st.state, hb) {
            (MemberState::Active | MemberState::Recovering, Status::Fenced { .. }) => "fenced",
            (
                MemberState::Active | MemberState::Recovering,
                Status::Missing { marked: true, .. },
            ) => "status-update-missing",
            (s, _) => s.as_str(),
        };
        let word = slot.liveness.load(Ordering::Relaxed);
        let liveness = if slot.liveness_gen.load(Ordering::Relaxed) != st.generation || word == 0 {
            "none"
        } else if word & OWNER_DIED != 0 {
            "owner-died"
        } else if word & TID_MASK != 0 {
            "registered"
        } else {
            "none"
        };
        out.push(MemberView {
            status,
            heartbeat_age_ms,
            liveness,
            id,
            name: connector::name_of(region, id),
            state: st.state,
            generation: st.generation,
            pid: p.pid,
            start_time: p.start_time,
            alive: snap.is_alive(),
            held,
            retained,
            connected_unix_ns: slot.connected_ns.load(Ordering::Relaxed),
            failed_unix_ns: slot.failed_ns.load(Ordering::Relaxed),
        });
    }
    Ok(out)
}

fn view(region: &Region, r: &RecordView, name: &str, state: MemberState) -> LockView {
    let _ = region;
    LockView {
        member: name.to_string(),
        member_id: r.member,
        resource: r.resource.display(),
        mode: r.mode,
        entry: r.entry,
        slot: r.slot,
        held: r.held,
        retained: r.held && r.mode.is_modify() && state.retains(),
    }
}

/// Every record (held, pending or urgent) of every non-free member, in
/// connector and slot order. An error at the first damaged state word or
/// record.
pub fn locks(region: &Region) -> Result<Vec<LockView>, CorruptError> {
    let mut out = Vec::new();
    for id in region.connector_ids() {
        let st = connector::load_state(region, id)?;
        if st.state == MemberState::Free {
            continue;
        }
        let name = connector::name_of(region, id);
        for r in records::all_records(region, id)? {
            out.push(view(region, &r, &name, st.state));
        }
    }
    Ok(out)
}

/// The retained locks only: held modify records of failed-persistent or
/// recovering members.
pub fn retained(region: &Region) -> Result<Vec<LockView>, CorruptError> {
    Ok(locks(region)?.into_iter().filter(|l| l.retained).collect())
}

/// The lock structure's activity: the totals folded in from connections
/// that left, plus every connector slot's, plus the blocks in use. Counters
/// are summed saturating: they are read from the (untrusted) region.
pub fn counters(region: &Region) -> Counters {
    use crate::shm::slots::{
        TOTAL_CONTENTION, TOTAL_FALSE, TOTAL_REQUESTS, TOTAL_RETAINED_REFUSALS, TOTAL_XES,
    };
    let t = &region.lock_header().counters;
    let mut c = Counters {
        requests: t[TOTAL_REQUESTS].load(Ordering::Relaxed),
        irlm_contention: t[TOTAL_CONTENTION].load(Ordering::Relaxed),
        xes_contention: t[TOTAL_XES].load(Ordering::Relaxed),
        false_contention: t[TOTAL_FALSE].load(Ordering::Relaxed),
        retained_refusals: t[TOTAL_RETAINED_REFUSALS].load(Ordering::Relaxed),
    };
    for id in region.connector_ids() {
        let Ok(a) = crate::connector::activity(region, id) else {
            continue;
        };
        c.requests = c.requests.saturating_add(a.requests);
        c.irlm_contention = c.irlm_contention.saturating_add(a.irlm_contention);
        c.xes_contention = c.xes_contention.saturating_add(a.xes_contention);
        c.false_contention = c.false_contention.saturating_add(a.false_contention);
        c.retained_refusals = c.retained_refusals.saturating_add(a.retained_refusals);
    }
    c
}

/// Transactions applications reported committed (`Member::add_committed`),
/// over every member past and present.
pub fn committed_total(region: &Region) -> u64 {
    let mut n =
        region.lock_header().counters[crate::shm::slots::TOTAL_COMMITTED].load(Ordering::Relaxed);
    for id in region.connector_ids() {
        if let Ok(slot) = region.connector(id) {
            n = n.saturating_add(slot.committed.load(Ordering::Relaxed));
        }
    }
    n
}

/// The structures of the region's directory, in directory order, as its
/// validated header describes them.
pub fn structures(region: &Region) -> Vec<StructureView> {
    let h = region.header();
    let mut out = Vec::new();
    for d in h.dir.iter() {
        let mut v = StructureView {
            name: d.name_str(),
            kind: "",
            offset: d.offset,
            size: d.size,
            lock_entries: None,
            entries_in_use: None,
            counters: None,
            members: None,
            records_per_member: None,
        };
        match d.kind {
            k if k == StructureKind::Connectors as u32 => {
                v.kind = "connector table";
                v.members = Some(region.members());
            }
            k if k == StructureKind::Lock as u32 => {
                v.kind = "lock structure";
                v.lock_entries = Some(region.lock_entries());
                v.entries_in_use = Some(
                    region
                        .entry_indices()
                        .filter(|&e| {
                            region
                                .word(e)
                                .map(|w| !Word(w.load(Ordering::Relaxed)).is_free())
                                .unwrap_or(false)
                        })
                        .count() as u64,
                );
                v.counters = Some(counters(region));
            }
            k if k == StructureKind::LockTable as u32 => v.kind = "lock table",
            k if k == StructureKind::MemberAreas as u32 => {
                v.kind = "record areas";
                v.records_per_member = Some(region.records_per_member());
            }
            k if k == StructureKind::RestartList as u32 => {
                v.kind = "restart-request list";
                v.members = Some(region.members());
            }
            k if k == StructureKind::Events as u32 => v.kind = "event ring",
            _ => v.kind = "unknown",
        }
        out.push(v);
    }
    out
}

/// Check the invariants that can be checked at rest. Returns the problems
/// found (empty: clean). Meant for a quiet region: a lock being taken while
/// `verify` runs may show as a passing inconsistency.
pub fn verify(region: &Region) -> Vec<String> {
    let mut problems = Vec::new();
    let mut held: Vec<(RecordView, MemberState)> = Vec::new();
    let mut urgent_on: std::collections::HashSet<(ConnectorId, EntryIndex)> =
        std::collections::HashSet::new();
    let mut states = Vec::new();
    for id in region.connector_ids() {
        let st = match connector::load_state(region, id) {
            Ok(s) => s,
            Err(e) => {
                problems.push(e.to_string());
                states.push(None);
                continue;
            }
        };
        states.push(Some(st.state));
        let raw_name = connector::name_of(region, id);
        let name = escape(&raw_name);
        if st.state != MemberState::Free {
            if let Err(why) = name_problem(&raw_name) {
                problems.push(format!(
                    "connector {id} ({}) has an invalid member name \"{name}\": {why}; nothing \
                     can connect (or recover) under it",
                    st.state.as_str(),
                ));
            }
        }
        let hwm = region
            .connector(id)
            .map_or(0, |c| c.hwm.load(Ordering::Relaxed));
        if hwm > region.blocks_per_member() as u64 {
            problems.push(format!(
                "connector {id}: record high-water mark {hwm} beyond {} blocks",
                region.blocks_per_member()
            ));
        }
        let recs = match records::all_records(region, id) {
            Ok(r) => r,
            Err(e) => {
                problems.push(e.to_string());
                continue;
            }
        };
        match st.state {
            MemberState::Free => {
                if !recs.is_empty() {
                    problems.push(format!(
                        "connector {id} is free but has {} records",
                        recs.len()
                    ));
                }
                continue;
            }
            s if s.has_process()
                && !connector::snapshot(region, id).is_ok_and(|s| s.is_alive()) =>
            {
                problems.push(format!(
                    "member {name} (connector {id}, pid {}) is {} but its process is dead: not yet cleaned up",
                    connector::process_of(region, id).pid,
                    s.as_str()
                ));
            }
            MemberState::Cleaning => {
                problems.push(format!(
                    "member {name} (connector {id}) is being cleaned up"
                ));
            }
            MemberState::FailedPersistent => {
                if let Some(r) = recs.iter().find(|r| !r.mode.is_modify() || !r.held) {
                    problems.push(format!(
                        "failed-persistent member {name} has a {} {} record on {}",
                        if r.held {
                            "held"
                        } else if r.urgent {
                            "urgent"
                        } else {
                            "pending"
                        },
                        r.mode,
                        escape(&r.resource.display())
                    ));
                }
            }
            _ => {}
        }
        for r in recs {
            if !r.held {
                if r.urgent {
                    // A waiting request bypassed too often: its member's
                    // interest in the entry (`lock/entry.rs` rule 5).
                    urgent_on.insert((id, r.entry));
                }
                continue;
            }
            let word = match region.word(r.entry) {
                Ok(w) => lockword::load(w),
                Err(e) => {
                    problems.push(e.to_string());
                    continue;
                }
            };
            if word.named() & lockword::bit(id) == 0 {
                problems.push(format!(
                    "member {name} holds {} ({}) on entry {} but the lock word does not name it",
                    escape(&r.resource.display()),
                    r.mode,
                    r.entry
                ));
            }
            held.push((r, st.state));
        }
    }
    // Lock words: known bits, named connectors hold something there, no stale latch.
    let mut holds_on: HashMap<(ConnectorId, EntryIndex), usize> = HashMap::new();
    for (r, _) in &held {
        *holds_on.entry((r.member, r.entry)).or_default() += 1;
    }
    for e in region.entry_indices() {
        let Ok(w) = region.word(e) else { continue };
        let w = Word(w.load(Ordering::Relaxed));
        if w.is_free() {
            continue;
        }
        if w.is_malformed() {
            problems.push(format!(
                "lock entry {e}: malformed word {:#018x} (waiters or an exclusive holder \
                 beside share holders, in fast mode)",
                w.0
            ));
        }
        if w.is_mixed() {
            if let Some(h) = w.holder() {
                problems.push(format!(
                    "lock entry {e} is latched by connector {h} at rest"
                ));
            }
        }
        for c in bits(w.named()) {
            if c.get() >= region.members() {
                problems.push(format!(
                    "lock entry {e} names connector {c}, beyond the table of {}",
                    region.members()
                ));
            } else if !holds_on.contains_key(&(c, e)) && !urgent_on.contains(&(c, e)) {
                problems.push(format!(
                    "lock entry {e} names connector {c}, which holds nothing there"
                ));
            }
        }
    }
    // Mutual exclusion on each resource, between live holders. A retained
    // record beside a live holder of the same resource is not damage: a
    // member that died inside a second request on an entry it was named on
    // keeps that record (it may have been granted), which only refuses
    // requests until its recovery releases it (`lock/entry.rs`).
    let mut by_res: HashMap<Vec<u8>, Vec<&RecordView>> = HashMap::new();
    for (r, st) in &held {
        if !st.retains() {
            by_res.entry(r.resource.bytes()).or_default().push(r);
        }
    }
    for (res, rs) in by_res {
        for (i, a) in rs.iter().enumerate() {
            for b in &rs[i + 1..] {
                // Two holdings of one holder never conflict (`lock/entry.rs`
                // rule 7).
                let one_holder = a.member == b.member
                    && records::holder_token(region, a.member, a.slot.get()).is_some_and(|o| {
                        records::holder_token(region, b.member, b.slot.get()) == Some(o)
                    });
                if !a.mode.compatible(b.mode) && !one_holder {
                    problems.push(format!(
                        "resource {} held {} by connector {} and {} by connector {}",
                        escape(&String::from_utf8_lossy(&res)),
                        a.mode,
                        a.member,
                        b.mode,
                        b.member
                    ));
                }
            }
        }
    }
    // The connect latch at rest: a live holder makes every connect wait for
    // it and fail (a dead one is taken over by the next connect).
    let latch = region.lock_header().connect_latch.load(Ordering::Acquire);
    if latch != 0 && crate::connector::identity::ProcessId::token_is_alive(latch) {
        problems.push(format!(
            "the connect latch is held by pid {}, a live process: every connect waits for it \
             and fails",
            latch as u32
        ));
    }
    // The restart-request list, as `display requests` and the restarters read it.
    match crate::requests::list(region) {
        Err(e) => problems.push(escape(&e.to_string())),
        Ok(list) => {
            for r in list {
                if let Err(why) = name_problem(&r.name) {
                    problems.push(format!(
                        "the restart request of connector {} names an invalid member \"{}\": {why}",
                        r.member_id,
                        escape(&r.name)
                    ));
                }
            }
        }
    }
    // The event ring, as `display events` reads it.
    if let Err(e) = crate::events::check(region) {
        problems.push(escape(&e.to_string()));
    }
    problems
}
