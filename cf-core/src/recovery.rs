//! The retention protocol: cleaning up after a member whose process died.
//!
//! Cleanup marks the member failed-persistent, releases its non-modify locks,
//! keeps its modify locks as *retained* (held by the failed member, answered
//! "retained by MEMBER"), frees any request it had pending, and wakes waiters.
//! The member stays failed-persistent (even if it retains nothing) until a
//! process that recovers its log reconnects as it (restart light, or a normal
//! restart that backs out first), which frees its slot in the end.
//!
//! # Invariants
//! * **Exactly one cleaner.** The claim is one CAS on the member's `cleanup`
//!   word, from 0 (or the token of a dead cleaner) to the cleaner's process
//!   token (PID and start time). A second cleaner finds a live claim and
//!   leaves the job to it (it never waits here: requests wait on the lock
//!   word, bounded by their deadlines), or finds the state final.
//! * **Only a dead connection is cleaned, and only that one.** The cleaner
//!   judges a (state, generation) dead from a consistent snapshot of state
//!   and identity (`connector/slot.rs`), re-checks it under the claim, and
//!   moves the slot with one CAS from exactly that (state, generation) to
//!   CLEANING, and from CLEANING to FAILED_PERSISTENT: a slot reconnected
//!   meanwhile is never touched.
//! * **The cleaner acts as the dead member.** It latches entries in the dead
//!   member's own name, taking over a latch held in that name (it holds the
//!   member's claim), and decides each record by the rule of `lock/entry.rs`
//!   (`settle_dead`): pending or not named by the word: freed; held, named,
//!   not modify: released; held, named, modify: retained, always (never freed
//!   because of another member's record, which may be a half-made request).
//! * **Idempotent.** Every step re-reads the region and decides from what the
//!   records and words say, so a cleanup that dies halfway is finished by the
//!   next one with the same result.
//! * **No cleaner waits for another forever.** An entry whose latch another
//!   dead member holds is left for later in the walk (that member is cleaned
//!   up here, nested, if nobody else does it), so two cleaners each waiting
//!   for a latch on the other's path cannot deadlock.
//!
//! # Crash windows
//! * `cleanup.claimed`: the slot is CLEANING, nothing else changed: the next
//!   cleaner finds the claim's process dead, takes it over and walks.
//! * `cleanup.entry_latched`, `cleanup.entry_unlatched`: see `lock/entry.rs`.
//! * `cleanup.before_final_state`: all records settled and the restart
//!   request posted, state still CLEANING: the next cleanup walks again
//!   (finding nothing to change), finds the request posted for this
//!   connection's failure outstanding, so records no second `detected`/`cleaned_up` and posts
//!   nothing, and finishes. (The same window opens without the crash point
//!   when a sibling thread of the cleaner claims the request at once and the
//!   process is killed there.) A cleaner killed between its events and its
//!   post leaves those events recorded; the next one records them again.
//!
//! A cleanup run by a request (a dead holder met on the way) is bounded by the
//! request's deadline: out of time, it leaves the member CLEANING and its
//! claim free for the next cleaner, and the request answers from the records
//! (a modify record of a member being cleaned up is retained).

use crate::connector::claim::{self, Claim};
use crate::connector::identity::ProcessId;
use crate::connector::{self, MemberState, StateWord};
use crate::error::{CleanupError, CorruptError, Stuck};
use crate::events::{self, EventData};
use crate::ids::ConnectorId;
use crate::lock::entry::{self, LatchError, LatchWait};
use crate::lock::records::{self, BLOCK_RETAINED};
use crate::lock::word;
use crate::requests;
use crate::shm::region::Region;
use crate::sync::{trace, Ordering};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// What a cleanup call found or did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CleanupOutcome {
    /// The member's process is alive: nothing to do.
    NotDead,
    /// Already failed-persistent or free.
    AlreadyDone,
    /// Another live process (or this one, deeper in its call chain) holds the claim.
    InProgress {
        /// The PID of the process holding the cleanup claim.
        by_pid: u32,
    },
    /// This call cleaned it up.
    Cleaned(CleanupReport),
    /// This call ran out of its time (a request's deadline) before every entry
    /// could be settled: the member stays CLEANING, for the next cleaner.
    Unfinished,
}

/// The result of one cleanup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CleanupReport {
    /// The member cleaned up.
    pub member: ConnectorId,
    /// Its name.
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

/// A walk waits this long for an entry's latch before leaving the entry for
/// a later pass (another cleaner may need a latch this walk is in the way of).
const DEFER_AFTER: Duration = Duration::from_millis(5);
/// A walk that makes no progress for this long gives up with an error.
const WALK_STUCK: Duration = Duration::from_secs(30);

/// This process's token (PID and start time).
fn my_token() -> Result<u64, CleanupError> {
    let current = || {
        ProcessId::current()
            .map(|p| p.token())
            .map_err(CleanupError::Identity)
    };
    #[cfg(not(loom))]
    {
        static ME: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        if let Some(t) = ME.get() {
            return Ok(*t);
        }
        let t = current()?;
        Ok(*ME.get_or_init(|| t))
    }
    #[cfg(loom)]
    current()
}

/// One attempt to clean up connector `c` if its process is dead, never
/// waiting for another cleaner. `held` are the connectors whose claims the
/// caller's chain already holds (nested cleanups take over their latches).
/// Used as the `on_stuck` of a latch wait and by requests that meet a dead
/// holder.
pub(crate) fn try_clean(
    region: &Region,
    c: ConnectorId,
    by: Option<ConnectorId>,
    held: u64,
    deadline: Option<Instant>,
) -> Result<CleanupOutcome, CleanupError> {
    if held & word::bit(c) != 0 {
        return Ok(CleanupOutcome::InProgress {
            by_pid: std::process::id(),
        });
    }
    cleanup(region, c, by, None, held, deadline)
}

/// Clean up connector `c` if its process is dead. See the module docs.
pub fn cleanup_member(region: &Region, c: ConnectorId) -> Result<CleanupOutcome, CleanupError> {
    cleanup(region, c, None, None, 0, None)
}

/// Clean up connector `c` if its process is dead, on behalf of member `by`
/// (recorded in the events with `seen_ns`, the moment the death was noticed,
/// or now). The cleaner that wins records `detected` and `cleaned_up` and
/// posts the restart request (`request_posted`).
pub fn cleanup_member_as(
    region: &Region,
    c: ConnectorId,
    by: Option<ConnectorId>,
    seen_ns: Option<u64>,
) -> Result<CleanupOutcome, CleanupError> {
    cleanup(region, c, by, seen_ns, 0, None)
}

fn cleanup(
    region: &Region,
    c: ConnectorId,
    by: Option<ConnectorId>,
    seen_ns: Option<u64>,
    held: u64,
    deadline: Option<Instant>,
) -> Result<CleanupOutcome, CleanupError> {
    let seen_ns = seen_ns.unwrap_or_else(connector::now_ns);
    if region.is_read_only() {
        return Err(CleanupError::ReadOnly);
    }
    let c = region.check_member(c)?;
    let snap = connector::snapshot(region, c)?;
    match snap.st.state {
        MemberState::Free | MemberState::FailedPersistent => {
            return Ok(CleanupOutcome::AlreadyDone)
        }
        _ if snap.is_alive() => return Ok(CleanupOutcome::NotDead),
        _ => {}
    }
    let me = my_token()?;
    let claim = &region.connector(c)?.cleanup;
    if let Claim::Busy(t) = claim::try_claim(claim, me, ProcessId::token_is_alive) {
        trace!("cleanup of {c}: in progress by {t:#x}");
        return Ok(CleanupOutcome::InProgress { by_pid: t as u32 });
    }
    trace!("cleanup of {c}: claimed");
    let result = (|| {
        // Re-check under the claim: the slot may have been finished or reused.
        let now = connector::snapshot(region, c)?;
        if now.st.generation != snap.st.generation {
            return Ok(CleanupOutcome::NotDead);
        }
        match now.st.state {
            MemberState::Free | MemberState::FailedPersistent => {
                return Ok(CleanupOutcome::AlreadyDone)
            }
            MemberState::Cleaning => {} // a dead cleaner's job: finish it
            _ if now.is_alive() => return Ok(CleanupOutcome::NotDead),
            _ => {
                let cleaning = StateWord {
                    state: MemberState::Cleaning,
                    generation: now.st.generation,
                };
                if !connector::cas_state(region, c, now.st, cleaning) {
                    return Ok(CleanupOutcome::NotDead);
                }
            }
        }
        crate::crash::point("cleanup.claimed");
        let dead_pid = now.process.pid;
        let Some(rep) = walk(region, c, by, held | word::bit(c), deadline)? else {
            return Ok(CleanupOutcome::Unfinished);
        };
        // Announced (and the request posted) while the slot is still
        // CLEANING: nobody can reconnect as the member before its request
        // exists, so no recovery can end before its request is posted.
        announce(region, c, by, &rep, dead_pid, seen_ns)?;
        crate::crash::point("cleanup.before_final_state");
        let cleaning = StateWord {
            state: MemberState::Cleaning,
            generation: now.st.generation,
        };
        let failed = StateWord {
            state: MemberState::FailedPersistent,
            generation: now.st.generation,
        };
        if !connector::cas_state(region, c, cleaning, failed) {
            return Err(CorruptError::BadConnector {
                id: c,
                what: "state changed while it was being cleaned up".into(),
            }
            .into());
        }
        Ok(CleanupOutcome::Cleaned(rep))
    })();
    // Success or a damaged region: either way this process stops cleaning.
    claim::release(claim, me);
    result
}

/// Record `detected` and `cleaned_up` and post the restart request (with its
/// `request_posted`), while the cleanup claim is still held: no other member's
/// sweep can post for this member before these events are recorded.
fn announce(
    region: &Region,
    c: ConnectorId,
    by: Option<ConnectorId>,
    rep: &CleanupReport,
    dead_pid: u32,
    seen_ns: u64,
) -> Result<(), CleanupError> {
    if requests::is_posted_for_connection(region, c)? {
        // A cleaner that died after announcing (its process may have been
        // killed by a sibling thread that claimed the request at once).
        return Ok(());
    }
    let by_name = by.map(|b| connector::name_of(region, b));
    let by_name = by_name.as_deref();
    events::record_at(
        region,
        &rep.name,
        by_name,
        EventData::Detected { pid: dead_pid },
        seen_ns,
    );
    events::record(
        region,
        &rep.name,
        by_name,
        EventData::CleanedUp {
            released: rep.released as u64,
            retained: rep.retained as u64,
            discarded: rep.discarded as u64,
        },
    );
    requests::post_claimed(region, c, by, |epoch| {
        events::record(
            region,
            &rep.name,
            by_name,
            EventData::RequestPosted { epoch },
        )
    })?;
    Ok(())
}

/// Settle every record of dead member `c` and mark its blocks. `None` if the
/// deadline passed first (the member then stays CLEANING).
fn walk(
    region: &Region,
    c: ConnectorId,
    by: Option<ConnectorId>,
    held: u64,
    deadline: Option<Instant>,
) -> Result<Option<CleanupReport>, CleanupError> {
    let mut report = CleanupReport {
        member: c,
        name: connector::name_of(region, c),
        released: 0,
        retained: 0,
        discarded: 0,
        state: MemberState::FailedPersistent,
    };
    // Every entry the member may have touched has one of its records on it.
    // The member is dead, so only its cleaners change its records: read them
    // once, grouped by entry (one pass: cost linear in what it held).
    let slots = records::slots_by_entry(region, c);
    let mut todo = Vec::new();
    for group in slots.chunk_by(|a, b| a.0 == b.0) {
        let recs = group
            .iter()
            .map(|&(_, slot, tag)| records::read_record(region, c, slot, tag))
            .collect::<Result<Vec<_>, _>>()?;
        todo.push((group[0].0, recs));
    }
    let mut last_progress = crate::sync::now();
    while !todo.is_empty() {
        let before = todo.len();
        let mut deferred = Vec::new();
        for (e, recs) in todo {
            let mut on_stuck =
                |x: ConnectorId| try_clean(region, x, by, held, deadline).map(|_| ());
            let defer_at = crate::sync::now() + DEFER_AFTER;
            let mut how = LatchWait {
                deadline: Some(deadline.map_or(defer_at, |d| d.min(defer_at))),
                steal: held,
                on_stuck: &mut on_stuck,
                own: None,
            };
            match entry::settle_dead(region, c, e, &recs, &mut how) {
                Ok(s) => {
                    report.released += s.released;
                    report.discarded += s.discarded;
                }
                Err(LatchError::TimedOut { .. }) => deferred.push((e, recs)),
                Err(LatchError::Corrupt(err)) => return Err(err.into()),
                Err(LatchError::Stuck(err)) => return Err(err.into()),
                Err(LatchError::Cleanup(err)) => return Err(err),
            }
        }
        if !deferred.is_empty() && deadline.is_some_and(|d| crate::sync::now() >= d) {
            return Ok(None);
        }
        if deferred.len() < before {
            last_progress = crate::sync::now();
        } else if crate::sync::since(last_progress) > WALK_STUCK {
            return Err(Stuck::Cleanup {
                id: c,
                entries: deferred.len(),
                secs: WALK_STUCK.as_secs(),
            }
            .into());
        } else {
            crate::sync::pause(Duration::from_micros(200));
        }
        todo = deferred;
    }
    let left = records::all_records(region, c)?;
    report.retained = left.len();
    let used_blocks: BTreeSet<u32> = left
        .iter()
        .map(|r| r.slot.get() / crate::shm::layout::BLOCK_SLOTS)
        .collect();
    for b in 0..region.blocks_per_member() {
        let used = used_blocks.contains(&b);
        if let Some(h) = records::block(region, c, b) {
            if h.owner.load(Ordering::Relaxed) != 0 || used {
                records::fold_block_counters(region, c, b);
                h.owner
                    .store(if used { BLOCK_RETAINED } else { 0 }, Ordering::Release);
            }
        }
    }
    // Failed-persistent even with nothing retained: the member is restarted
    // (light or normally) all the same, since its log may hold work to back
    // out, and that restart frees the slot.
    region
        .connector(c)?
        .failed_ns
        .store(connector::now_ns(), Ordering::Relaxed);
    Ok(Some(report))
}

/// Clean up every dead member of the region. Returns the reports of the
/// cleanups this call performed.
pub fn cleanup_all_dead(region: &Region) -> Result<Vec<CleanupReport>, CleanupError> {
    let mut out = Vec::new();
    for c in region.connector_ids() {
        if let CleanupOutcome::Cleaned(r) = cleanup_member(region, c)? {
            out.push(r);
        }
    }
    Ok(out)
}

/// Is a live process cleaning member `c` up right now? (Its cleaner posts the
/// restart request when done; others should not post for it meanwhile.)
pub fn cleanup_in_progress(region: &Region, c: ConnectorId) -> Result<bool, CorruptError> {
    let t = region.connector(c)?.cleanup.load(Ordering::Acquire);
    Ok(t != 0 && ProcessId::token_is_alive(t))
}
