//! The recovery protocol: cleaning up after a member whose process died.
//!
//! Cleanup marks the member failed-persistent, releases its non-modify locks,
//! keeps its modify locks as *retained* (held by the failed member, answered
//! "retained by MEMBER"), frees any request it had pending, and wakes waiters.
//! The member stays failed-persistent (even if it retains nothing) until it is
//! restarted, light or normally, which frees its slot.
//!
//! # Invariants
//! * **Exactly one cleaner.** The claim is one CAS on the member's `cleanup`
//!   word, from 0 (or the token of a dead cleaner) to the cleaner's process
//!   token (PID and start time). A second cleaner finds a live claim and waits
//!   for it, or finds the state final and does nothing.
//! * **The cleaner acts as the dead member.** It latches entries with the dead
//!   member's own connector id, so a latch the member died holding is already
//!   "its own" and a latch the cleaner dies holding is still held by a dead
//!   connector. Only the holder of a member's claim may take over a latch held
//!   in that member's name ([`may_steal_latch`]).
//! * **Idempotent.** Every step re-reads the region and decides from what the
//!   records and words say, so a cleanup that dies halfway is finished by the
//!   next one with the same result.
//!
//! # What cleanup decides for each record of the dead member on an entry
//! (under the entry's latch; see the invariants of `lock.rs`)
//! * PENDING: not held: freed.
//! * HELD, but the word does not name the member: the member died between
//!   record and word on acquire, or between word and record on release: freed.
//! * HELD, named, not modify: released.
//! * HELD, named, modify: retained, unless a live holder holds the same
//!   resource incompatibly (then it can never have been granted: freed).
//!
//! # Crash windows
//! * `cleanup.claimed`: claim taken, nothing changed: the next cleaner finds
//!   the claim's process dead and takes it over.
//! * `cleanup.entry_latched`: the entry is latched in the dead member's name:
//!   waiters find the latch holder dead and clean it up again, stealing the
//!   latch.
//! * `cleanup.entry_unlatched`: the word no longer names freed records whose
//!   tags are still set: the next cleanup frees them (rule 2 above).
//! * `cleanup.before_final_state`: all records settled, state still CLEANING:
//!   the next cleanup walks again (finding nothing to change) and finishes.

use crate::claim::{self, Claim};
use crate::connector::{self, ConnectLatch, MemberState, F_CLEANUP, F_FAILED_NS};
use crate::error::CorruptError;
use crate::events::{self, EventKind};
use crate::identity::ProcessId;
use crate::lock::{bits, latch_entry, LatchWait};
use crate::lockword;
use crate::records::{self, BLK_OWNER, BLOCK_RETAINED, TAG_FREE};
use crate::region::Region;
use crate::requests;
use crate::sync::Ordering;
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// What a cleanup call found or did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CleanupOutcome {
    /// The member's process is alive: nothing to do.
    NotDead,
    /// Already failed-persistent or free.
    AlreadyDone,
    /// Another live process holds the claim.
    InProgress { by_pid: u32 },
    /// This call cleaned it up.
    Cleaned(CleanupReport),
}

/// The result of one cleanup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CleanupReport {
    pub member: u32,
    pub name: String,
    /// Locks released (non-modify held locks).
    pub released: usize,
    /// Modify locks kept as retained.
    pub retained: usize,
    /// Pending requests and half-made records freed.
    pub discarded: usize,
    /// Final state (failed-persistent).
    pub state: MemberState,
}

thread_local! {
    /// Connectors this thread is cleaning up right now.
    static CLEANING: RefCell<BTreeSet<u32>> = const { RefCell::new(BTreeSet::new()) };
}

fn my_token() -> u64 {
    static ME: OnceLock<u64> = OnceLock::new();
    *ME.get_or_init(|| ProcessId::current().map(|p| p.token()).unwrap_or(0))
}

/// May this thread take over a latch held in `holder`'s name? Only while it is
/// cleaning `holder` up.
pub(crate) fn may_steal_latch(region: &Region, holder: u32) -> bool {
    CLEANING.with(|s| s.borrow().contains(&holder))
        && region
            .connector_field(holder, F_CLEANUP)
            .load(Ordering::Acquire)
            == my_token()
}

/// If connector `c`'s process is dead, make sure it is cleaned up (by us or by
/// the cleaner already at work). True if its state changed so that a request
/// should look again.
pub(crate) fn clean_if_dead(
    region: &Region,
    c: u32,
    by: Option<u32>,
) -> Result<bool, CorruptError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match cleanup_member_as(region, c, by, None)? {
            CleanupOutcome::Cleaned(_) => return Ok(true),
            CleanupOutcome::NotDead | CleanupOutcome::AlreadyDone => return Ok(false),
            CleanupOutcome::InProgress { .. } => {
                if Instant::now() > deadline {
                    return Ok(false);
                }
                std::thread::sleep(Duration::from_micros(100));
                let st = connector::load_state(region, c)?;
                if !matches!(st.state, MemberState::Cleaning) && !st.state.has_process() {
                    return Ok(true);
                }
            }
        }
    }
}

/// Clean up connector `c` if its process is dead. See the module docs.
pub fn cleanup_member(region: &Region, c: u32) -> Result<CleanupOutcome, CorruptError> {
    cleanup_member_as(region, c, None, None)
}

/// Clean up connector `c` if its process is dead, on behalf of member `by`
/// (recorded in the events with `seen_ns`, the moment the death was noticed,
/// or now). The cleaner that wins records `detected` and `cleaned_up` and
/// posts the restart request (`request_posted`).
pub fn cleanup_member_as(
    region: &Region,
    c: u32,
    by: Option<u32>,
    seen_ns: Option<u64>,
) -> Result<CleanupOutcome, CorruptError> {
    let seen_ns = seen_ns.unwrap_or_else(connector::now_ns);
    let dead_pid = connector::process_of(region, region.check_member(c)?).pid;
    cleanup_claimed(region, c, by, |rep| {
        announce(region, c, by, rep, dead_pid, seen_ns)
    })
}

/// Record `detected` and `cleaned_up` and post the restart request (with its
/// `request_posted`), while the cleanup claim is still held: no other member's
/// sweep can post for this member before these events are recorded.
fn announce(
    region: &Region,
    c: u32,
    by: Option<u32>,
    rep: &CleanupReport,
    dead_pid: u32,
    seen_ns: u64,
) -> Result<(), CorruptError> {
    let by_name = by
        .and_then(|b| connector::slot_view(region, b).ok())
        .map(|s| s.name);
    let by_name = by_name.as_deref();
    events::record_at(
        region,
        EventKind::Detected,
        &rep.name,
        by_name,
        [dead_pid as u64, 0, 0],
        seen_ns,
    );
    events::record(
        region,
        EventKind::CleanedUp,
        &rep.name,
        by_name,
        [
            rep.released as u64,
            rep.retained as u64,
            rep.discarded as u64,
        ],
    );
    requests::post(region, c, by, || {
        events::record(
            region,
            EventKind::RequestPosted,
            &rep.name,
            by_name,
            [0, 0, 0],
        )
    })?;
    Ok(())
}

fn cleanup_claimed(
    region: &Region,
    c: u32,
    by: Option<u32>,
    on_cleaned: impl FnOnce(&CleanupReport) -> Result<(), CorruptError>,
) -> Result<CleanupOutcome, CorruptError> {
    let c = region.check_member(c)?;
    let st = connector::load_state(region, c)?;
    match st.state {
        MemberState::Free | MemberState::FailedPersistent => {
            return Ok(CleanupOutcome::AlreadyDone)
        }
        s if s.has_process() && connector::is_alive(region, c, st) => {
            return Ok(CleanupOutcome::NotDead)
        }
        _ => {}
    }
    let me = my_token();
    let claim = region.connector_field(c, F_CLEANUP);
    if let Claim::Busy(t) = claim::try_claim(claim, me, ProcessId::token_is_alive) {
        return Ok(CleanupOutcome::InProgress { by_pid: t as u32 });
    }
    // Re-check under the claim: the slot may have been finished or reused.
    let now = connector::load_state(region, c)?;
    let reused = now.generation != st.generation;
    let final_state = matches!(now.state, MemberState::Free | MemberState::FailedPersistent);
    if reused || final_state || (now.state.has_process() && connector::is_alive(region, c, now)) {
        claim::release(claim, me);
        return Ok(if final_state {
            CleanupOutcome::AlreadyDone
        } else {
            CleanupOutcome::NotDead
        });
    }
    connector::store_state(region, c, MemberState::Cleaning, st.generation);
    crate::crash::point("cleanup.claimed");
    CLEANING.with(|s| s.borrow_mut().insert(c));
    let result = walk(region, c, st.generation, by);
    CLEANING.with(|s| s.borrow_mut().remove(&c));
    let result = result.and_then(|rep| on_cleaned(&rep).map(|()| rep));
    // Success or a damaged region: either way this process stops cleaning.
    claim::release(claim, me);
    Ok(CleanupOutcome::Cleaned(result?))
}

fn walk(
    region: &Region,
    c: u32,
    generation: u32,
    by: Option<u32>,
) -> Result<CleanupReport, CorruptError> {
    let mut report = CleanupReport {
        member: c,
        name: connector::name_of(region, c),
        released: 0,
        retained: 0,
        discarded: 0,
        state: MemberState::FailedPersistent,
    };
    // Every entry the member may have touched has one of its records on it.
    // The member is dead, so only its cleaner changes its records: read them
    // once, grouped by entry (one pass: cost linear in what it held).
    let slots = records::slots_by_entry(region, c);
    for group in slots.chunk_by(|a, b| a.0 == b.0) {
        let recs = group
            .iter()
            .map(|&(_, slot, tag)| records::read_record(region, c, slot, tag))
            .collect::<Result<Vec<_>, _>>()?;
        settle_entry(region, c, group[0].0, &recs, &mut report, by)?;
    }
    crate::crash::point("cleanup.before_final_state");
    let left = records::all_records(region, c)?;
    report.retained = left.len();
    let used_blocks: BTreeSet<u32> = left
        .iter()
        .map(|r| r.slot / crate::layout::BLOCK_SLOTS)
        .collect();
    for b in 0..region.blocks_per_member() {
        let used = used_blocks.contains(&b);
        let owner = region.block_field(c, b, BLK_OWNER);
        if owner.load(Ordering::Relaxed) != 0 || used {
            records::fold_block_counters(region, c, b);
            owner.store(if used { BLOCK_RETAINED } else { 0 }, Ordering::Release);
        }
    }
    let me = ProcessId::current().map_err(|e| CorruptError::BadConnector {
        id: c,
        what: e.to_string(),
    })?;
    let _latch = ConnectLatch::take(region, &me, Duration::from_secs(30)).map_err(|e| {
        CorruptError::BadConnector {
            id: c,
            what: e.to_string(),
        }
    })?;
    // Failed-persistent even with nothing retained: the member is restarted
    // (light or normally) all the same, since its log may hold work to back
    // out, and that restart frees the slot.
    region
        .connector_field(c, F_FAILED_NS)
        .store(connector::now_ns(), Ordering::Relaxed);
    connector::store_state(region, c, MemberState::FailedPersistent, generation);
    Ok(report)
}

/// Settle every record of dead member `c` on entry `e`, under the latch.
fn settle_entry(
    region: &Region,
    c: u32,
    e: u32,
    recs: &[records::RecordView],
    report: &mut CleanupReport,
    by: Option<u32>,
) -> Result<(), CorruptError> {
    let word = region.word(e)?;
    let named = match latch_entry(region, e, c, None, by) {
        Ok(n) => n,
        Err(LatchWait::Corrupt(err)) => return Err(err),
        Err(LatchWait::TimedOut(_)) => unreachable!("no deadline"),
    };
    crate::crash::point("cleanup.entry_latched");
    let c_named = named & lockword::bit(c) != 0;
    let mut free = Vec::new();
    let mut keep = 0usize;
    let outcome = (|| -> Result<(), CorruptError> {
        for r in recs {
            if !r.held || !c_named {
                report.discarded += 1;
                free.push(r.slot);
            } else if !r.mode.is_modify() {
                report.released += 1;
                free.push(r.slot);
            } else if conflicts_with_other(region, named, c, r)? {
                report.discarded += 1;
                free.push(r.slot);
            } else {
                keep += 1;
            }
        }
        Ok(())
    })();
    let mask = if outcome.is_err() {
        // Damaged: nothing was decided (no record is freed), so the word keeps
        // the interest it had; dropping c's bit would later free a retained lock.
        named
    } else if keep > 0 {
        named | lockword::bit(c)
    } else {
        named & !lockword::bit(c)
    };
    lockword::unlatch(word, mask as u32);
    outcome?;
    crate::crash::point("cleanup.entry_unlatched");
    for slot in free {
        region.tag(c, slot).store(TAG_FREE, Ordering::Release);
    }
    Ok(())
}

fn conflicts_with_other(
    region: &Region,
    named: u64,
    c: u32,
    r: &records::RecordView,
) -> Result<bool, CorruptError> {
    for x in bits(named) {
        let x = region.check_member(x)?;
        if x == c {
            continue;
        }
        for o in records::records_on(region, x, r.entry, false)? {
            if o.resource == r.resource && !o.mode.compatible(r.mode) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Clean up every dead member of the region. Returns the reports of the
/// cleanups this call performed.
pub fn cleanup_all_dead(region: &Region) -> Result<Vec<CleanupReport>, CorruptError> {
    let mut out = Vec::new();
    for c in 0..region.members() {
        if let CleanupOutcome::Cleaned(r) = cleanup_member(region, c)? {
            out.push(r);
        }
    }
    Ok(out)
}

/// Is a live process cleaning member `c` up right now? (Its cleaner posts the
/// restart request when done; others should not post for it meanwhile.)
pub fn cleanup_in_progress(region: &Region, c: u32) -> Result<bool, CorruptError> {
    let c = region.check_member(c)?;
    let t = region.connector_field(c, F_CLEANUP).load(Ordering::Acquire);
    Ok(t != 0 && ProcessId::token_is_alive(t))
}
