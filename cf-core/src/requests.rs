//! The restart-request list: a list structure in the region with one entry
//! per connector slot, so a failed member has at most one request at a time.
//!
//! Entry words: `state` (FREE 0, PENDING 1, CLAIMED 2), `claim` (token of the
//! member process handling it), `worker` (token of the restart-light process
//! it started), times, and who posted and claimed it. The list header holds a
//! 32-bit *sequence* word that every change bumps and every member futex-waits
//! on, so members react to a new request without polling.
//!
//! # Protocol and crash windows
//! * **Post**: CAS state FREE → PENDING. Posting twice is harmless (the second
//!   finds it pending). A poster that dies before its CAS posted nothing; the
//!   member stays failed-persistent and the periodic sweep of any member posts
//!   again.
//! * **Claim**: `claim::try_claim` on the claim word, allowed only if the
//!   previous claimer *and* the restart-light process it started are both dead:
//!   a restart light orphaned by its claimer's death is left to finish.
//!   Exactly one claimer wins (one CAS).
//! * **Complete**: the restart-light process sets the entry FREE after its
//!   member is disconnected. A restart light killed before that leaves the
//!   entry CLAIMED with a dead worker: its claimer starts another, or, if the
//!   claimer is dead too, another member takes the claim over. A handler always
//!   looks at the member first: a member no longer failed-persistent needs no
//!   restart, and the request is completed.

use crate::claim::{self, Claim};
use crate::connector::now_ns;
use crate::error::CorruptError;
use crate::identity::ProcessId;
use crate::region::Region;
use crate::sync::Ordering;
use std::time::Duration;

const R_STATE: u32 = 0;
const R_CLAIM: u32 = 1;
const R_WORKER: u32 = 2;
const R_POSTED_NS: u32 = 3;
const R_CLAIMED_NS: u32 = 4;
const R_WHO: u32 = 5;
const R_ATTEMPTS: u32 = 6;
/// Four words: the member's name, kept with the request (its slot's name is
/// cleared when a restart light disconnects, before the request completes).
const R_NAME: u32 = 8;

/// Request states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestState {
    Free,
    Pending,
    Claimed,
}

impl RequestState {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Free => "free",
            RequestState::Pending => "pending",
            RequestState::Claimed => "claimed",
        }
    }
}

/// A request as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestView {
    /// Connector id of the member to restart.
    pub member_id: u32,
    pub state: RequestState,
    pub posted_unix_ns: u64,
    pub claimed_unix_ns: u64,
    /// Connector ids of the poster and the claimer, where known.
    pub posted_by: Option<u32>,
    pub claimed_by: Option<u32>,
    pub claimer_pid: u32,
    pub claimer_alive: bool,
    pub worker_pid: u32,
    pub worker_alive: bool,
    pub attempts: u64,
    /// The name of the member to restart.
    pub name: String,
}

fn store_name(region: &Region, id: u32, name: &str) {
    let mut bytes = [0u8; 32];
    let n = name.len().min(32);
    bytes[..n].copy_from_slice(&name.as_bytes()[..n]);
    for (i, chunk) in bytes.chunks(8).enumerate() {
        let w = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        region
            .request_field(id, R_NAME + i as u32)
            .store(w, Ordering::Relaxed);
    }
}

fn load_name(region: &Region, id: u32) -> String {
    let bytes: Vec<u8> = (0..4)
        .flat_map(|i| {
            region
                .request_field(id, R_NAME + i)
                .load(Ordering::Relaxed)
                .to_le_bytes()
        })
        .collect();
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(32);
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn state(region: &Region, id: u32) -> Result<RequestState, CorruptError> {
    match region.request_field(id, R_STATE).load(Ordering::Acquire) {
        0 => Ok(RequestState::Free),
        1 => Ok(RequestState::Pending),
        2 => Ok(RequestState::Claimed),
        s => Err(CorruptError::BadConnector {
            id,
            what: format!("restart request state {s}"),
        }),
    }
}

fn bump(region: &Region) {
    region.list_sequence().fetch_add(1, Ordering::AcqRel);
    crate::futex::wake_all_u32(region.list_sequence());
}

/// The list's sequence word, to pass to [`wait_for_change`].
pub fn sequence(region: &Region) -> u32 {
    region.list_sequence().load(Ordering::Acquire)
}

/// Sleep until the list changes from `seen` (or `timeout` passes).
pub fn wait_for_change(region: &Region, seen: u32, timeout: Duration) {
    crate::futex::wait_u32(region.list_sequence(), seen, timeout);
}

/// Post a request to restart member `id` (by connector `by`, if a member).
/// Returns false if one was already pending or claimed. `on_posted` runs once
/// the request is posted and before any member is woken for it (so an event
/// recorded there comes before the claim's).
pub fn post(
    region: &Region,
    id: u32,
    by: Option<u32>,
    on_posted: impl FnOnce(),
) -> Result<bool, CorruptError> {
    let id = region.check_member(id)?;
    state(region, id)?;
    let st = region.request_field(id, R_STATE);
    if st.load(Ordering::Acquire) != 0 {
        return Ok(false);
    }
    if st
        .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return Ok(false);
    }
    region
        .request_field(id, R_CLAIM)
        .store(0, Ordering::Relaxed);
    region
        .request_field(id, R_WORKER)
        .store(0, Ordering::Relaxed);
    region
        .request_field(id, R_ATTEMPTS)
        .store(0, Ordering::Relaxed);
    store_name(region, id, &crate::connector::name_of(region, id));
    region
        .request_field(id, R_CLAIMED_NS)
        .store(0, Ordering::Relaxed);
    region
        .request_field(id, R_POSTED_NS)
        .store(now_ns(), Ordering::Relaxed);
    region
        .request_field(id, R_WHO)
        .store(by.map_or(0, |b| b as u64 + 1), Ordering::Release);
    region.list_header(0).fetch_add(1, Ordering::Relaxed);
    on_posted();
    bump(region);
    Ok(true)
}

/// Is a request for `id` waiting for a (new) handler? Pending, or claimed by
/// a dead claimer whose restart light is dead too.
pub fn needs_handler(region: &Region, id: u32) -> Result<bool, CorruptError> {
    Ok(match state(region, id)? {
        RequestState::Free => false,
        RequestState::Pending => true,
        RequestState::Claimed => {
            let c = region.request_field(id, R_CLAIM).load(Ordering::Acquire);
            let w = region.request_field(id, R_WORKER).load(Ordering::Acquire);
            !ProcessId::token_is_alive(c) && !ProcessId::token_is_alive(w)
        }
    })
}

/// Outcome of a claim attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// We hold the request; `taken_over` if from a dead claimer.
    Claimed { taken_over: bool },
    /// Nothing to claim, or someone alive holds it.
    NotClaimed,
}

/// Try to claim the request for `id` as connector `by` in this process.
pub fn claim(
    region: &Region,
    id: u32,
    by: u32,
    me: &ProcessId,
) -> Result<ClaimOutcome, CorruptError> {
    let id = region.check_member(id)?;
    if state(region, id)? == RequestState::Free {
        return Ok(ClaimOutcome::NotClaimed);
    }
    let worker = region.request_field(id, R_WORKER);
    let alive = |t: u64| {
        ProcessId::token_is_alive(t) || ProcessId::token_is_alive(worker.load(Ordering::Acquire))
    };
    match claim::try_claim(region.request_field(id, R_CLAIM), me.token(), alive) {
        Claim::Busy(_) => Ok(ClaimOutcome::NotClaimed),
        Claim::Claimed { previous } => {
            // Completed between our look and our claim? Then give it back.
            if state(region, id)? == RequestState::Free {
                claim::release(region.request_field(id, R_CLAIM), me.token());
                return Ok(ClaimOutcome::NotClaimed);
            }
            worker.store(0, Ordering::Relaxed);
            region
                .request_field(id, R_CLAIMED_NS)
                .store(now_ns(), Ordering::Relaxed);
            let who = region.request_field(id, R_WHO);
            let posted_by = who.load(Ordering::Relaxed) & 0xffff_ffff;
            who.store(posted_by | (by as u64 + 1) << 32, Ordering::Relaxed);
            region
                .request_field(id, R_STATE)
                .store(2, Ordering::Release);
            bump(region);
            Ok(ClaimOutcome::Claimed {
                taken_over: previous != 0,
            })
        }
    }
}

/// Record the restart-light process working on the request for `id`.
pub fn set_worker(region: &Region, id: u32, worker: &ProcessId) -> Result<u64, CorruptError> {
    let id = region.check_member(id)?;
    region
        .request_field(id, R_WORKER)
        .store(worker.token(), Ordering::Release);
    Ok(region
        .request_field(id, R_ATTEMPTS)
        .fetch_add(1, Ordering::AcqRel)
        + 1)
}

/// Give a claimed request back (pending again) so another member may take it.
pub fn unclaim(region: &Region, id: u32, me: &ProcessId) -> Result<(), CorruptError> {
    let id = region.check_member(id)?;
    let st = region.request_field(id, R_STATE);
    let _ = st.compare_exchange(2, 1, Ordering::AcqRel, Ordering::Relaxed);
    claim::release(region.request_field(id, R_CLAIM), me.token());
    bump(region);
    Ok(())
}

/// The request for `id` (member `member`) is done: the member is no longer failed-persistent.
/// Records `recovery_completed` (by `by`) if this call completed it, so every
/// request is completed, and recorded, exactly once.
pub fn complete(region: &Region, id: u32, member: &str, by: &str) -> Result<(), CorruptError> {
    let id = region.check_member(id)?;
    let st = region.request_field(id, R_STATE);
    if st.swap(0, Ordering::AcqRel) != 0 {
        region.list_header(1).fetch_add(1, Ordering::Relaxed);
        let stored = load_name(region, id);
        let name = if stored.is_empty() {
            member
        } else {
            stored.as_str()
        };
        crate::events::record(
            region,
            crate::events::EventKind::RecoveryCompleted,
            name,
            Some(by),
            [0, 0, 0],
        );
    }
    region
        .request_field(id, R_CLAIM)
        .store(0, Ordering::Release);
    region
        .request_field(id, R_WORKER)
        .store(0, Ordering::Release);
    bump(region);
    Ok(())
}

/// Every request that is not free.
pub fn list(region: &Region) -> Result<Vec<RequestView>, CorruptError> {
    let mut out = Vec::new();
    for id in 0..region.members() {
        let state = state(region, id)?;
        if state == RequestState::Free {
            continue;
        }
        let who = region.request_field(id, R_WHO).load(Ordering::Relaxed);
        let ids = |v: u64| (v & 0xffff_ffff).checked_sub(1).map(|x| x as u32);
        let claim = region.request_field(id, R_CLAIM).load(Ordering::Relaxed);
        let worker = region.request_field(id, R_WORKER).load(Ordering::Relaxed);
        out.push(RequestView {
            member_id: id,
            state,
            posted_unix_ns: region
                .request_field(id, R_POSTED_NS)
                .load(Ordering::Relaxed),
            claimed_unix_ns: region
                .request_field(id, R_CLAIMED_NS)
                .load(Ordering::Relaxed),
            posted_by: ids(who),
            claimed_by: ids(who >> 32),
            claimer_pid: claim as u32,
            claimer_alive: ProcessId::token_is_alive(claim),
            worker_pid: worker as u32,
            worker_alive: ProcessId::token_is_alive(worker),
            attempts: region.request_field(id, R_ATTEMPTS).load(Ordering::Relaxed),
            name: load_name(region, id),
        });
    }
    Ok(out)
}

/// Requests posted and completed since the region was created.
pub fn totals(region: &Region) -> (u64, u64) {
    (
        region.list_header(0).load(Ordering::Relaxed),
        region.list_header(1).load(Ordering::Relaxed),
    )
}

/// Complete every outstanding request for the member named `name` (it was
/// restarted normally, perhaps in another slot than the one it died in).
pub fn complete_for_name(region: &Region, name: &str, by: &str) -> Result<(), CorruptError> {
    for id in 0..region.members() {
        if state(region, id)? != RequestState::Free && load_name(region, id) == name {
            complete(region, id, name, by)?;
        }
    }
    Ok(())
}
