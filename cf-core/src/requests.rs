//! The restart-request list: a list structure in the region with one entry
//! per connector slot, so a failed member has at most one request at a time.
//!
//! An entry (`shm/slots.rs`, `RequestEntry`) has a state word
//! `[epoch:32][unused:24][state:8]` (FREE 0, PENDING 1, CLAIMED 2, FAILED 3), a claim
//! word (token of the member process handling it), a worker word (token of the
//! restart-light process it started), times, and who posted and claimed it.
//! The list header holds a 32-bit *sequence* word that every change bumps and
//! every member futex-waits on, so members react to a new request without
//! polling.
//!
//! # Protocol and crash windows
//! * **Post**: one CAS of the state word from FREE to PENDING with the next
//!   epoch, after the fields are written. Posts for one member are serialized
//!   by its cleanup claim (the cleanup posts while it holds it, before the
//!   member becomes failed-persistent, so no recovery can end before its
//!   request exists; any other poster takes the claim for its post), so a
//!   losing poster never writes over the request that won. A poster other
//!   than the cleanup (the sweep, which saw the member failed with no
//!   request) also takes the connect latch and posts only if the member is
//!   still failed-persistent: its restart light may have connected,
//!   recovered and left in between, and a request posted then would be
//!   for no failure (the attack2 loom model). Posting twice is
//!   harmless (the second finds it pending). A poster that dies before its
//!   CAS posted nothing: the next cleaner or the sweep of any member posts.
//! * **Claim**: `claim::try_claim` on the claim word, allowed only if the
//!   previous claimer *and* the restart-light process it started are both
//!   dead (a restart light orphaned by its claimer's death is left to finish);
//!   then one CAS of the state word from what was seen (the same epoch as
//!   before the claim) to CLAIMED. Exactly one claimer wins.
//! * **Every later step names the epoch** it works for: a restart light, a
//!   handler and a completion act only on the request they were started for.
//!   [`complete`] is one CAS from (PENDING or CLAIMED, that epoch) to FREE, so
//!   a late completion (a restart light or handler finishing after the request
//!   was completed and a new one posted for the slot's next occupant) changes
//!   nothing and records nothing: every request is completed, and
//!   `recovery_completed` recorded, exactly once.
//! * **A request is for one occupant of the slot** (its `incarnation`, which
//!   every fresh connect bumps). A restart light completes its request after
//!   it has disconnected; if meanwhile a new member took the slot and failed
//!   too, the poster of the new failure finds the old request outstanding for
//!   an earlier incarnation (already recovered: only a recovering connection
//!   vacates a failed slot), completes it, and posts its own.
//! * A restart light killed before completing leaves the entry CLAIMED with a
//!   dead worker: its claimer starts another, or, if the claimer is dead too,
//!   another member takes the claim over. A handler always looks at the
//!   member first: a member no longer failed-persistent needs no restart, and
//!   the request is completed.
//! * **Failed**: a handler whose restart lights keep failing for a reason
//!   that does not go away (a damaged accounts file, a log that is a
//!   directory) marks its request FAILED after its attempts ([`fail`]: under
//!   the connect latch, only if the member is still the failed-persistent
//!   connection it judged, one CAS from (CLAIMED, epoch) to (FAILED,
//!   epoch), then the claim is released), with the last exit status and the reason the restart light
//!   wrote ([`set_reason`]). A FAILED request keeps its epoch and stays
//!   outstanding (a completion still completes it: a normal restart of the
//!   member, or a restart light run by hand), but nobody claims it again
//!   until an operator re-posts it ([`retry`], `cfctl restart-light MEMBER`:
//!   a new epoch) or [`FAILED_RETRY`] has passed since it failed (then it is
//!   claimed again as it is, same epoch). So a persistent failure costs a
//!   handful of restart lights every [`FAILED_RETRY`], not thousands a second.
//!   A death of a later connection recovering the member (a normal
//!   restart, a restart light run by hand) is a fault, not the persistent
//!   reason: its cleanup finds the FAILED request of an earlier generation
//!   and makes it claimable again (re-posted in place: PENDING with the
//!   next epoch, the same request, counted once in the totals; attack6,
//!   attack9).
//!   A [`retry`] works under the connect latch and re-posts only for a member
//!   that is still failed-persistent: one recovering itself completes the
//!   request when it finishes, one already recovered gets it completed by
//!   the retry (the attack4 tests).
//! * **A normal restart completes before it is ACTIVE**: the member's own
//!   recovering connection completes its slot's outstanding request (any
//!   state) under the connect latch, just before it becomes ACTIVE
//!   ([`complete_outstanding`]). Killed before: the member died recovering,
//!   its cleanup finds no request and posts one (the recovery is redone).
//!   Killed after: the death of an ACTIVE member is a new failure with a
//!   request of its own, never blocked by the old one (a FAILED request of
//!   the previous life would otherwise stand for it until [`FAILED_RETRY`]).

use crate::connector::claim::{self, Claim};
use crate::connector::identity::ProcessId;
use crate::connector::latch::ConnectLatch;
use crate::connector::now_ns;
use crate::connector::MemberState;
use crate::error::{CorruptError, RestartRequestError, Stuck};
use crate::events::{Completion, EventData};
use crate::ids::ConnectorId;
use crate::shm::region::Region;
use crate::shm::slots::{self, RequestEntry};
use crate::sync::Ordering;
use std::time::Duration;

/// How long a FAILED request waits before it is claimed again by itself
/// (an operator's `cfctl restart-light MEMBER` re-posts it at once).
pub const FAILED_RETRY: Duration = Duration::from_secs(600);

/// Request states (the low 8 bits of an entry's state word).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestState {
    /// No request: the slot's member needs no restart (or it was completed).
    Free,
    /// Posted, waiting for a member to claim it and start a restart light.
    Pending,
    /// A member process holds the claim and handles it (starts restart
    /// lights); a dead claimer's request is taken over.
    Claimed,
    /// Its restart lights failed for a reason that did not go away: not
    /// claimed again until re-posted or [`FAILED_RETRY`] has passed.
    Failed,
}

impl RequestState {
    /// The state's name as displays print it (`"free"`, `"pending"`,
    /// `"claimed"`, `"failed"`).
    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Free => "free",
            RequestState::Pending => "pending",
            RequestState::Claimed => "claimed",
            RequestState::Failed => "failed",
        }
    }
    fn code(self) -> u64 {
        match self {
            RequestState::Free => 0,
            RequestState::Pending => 1,
            RequestState::Claimed => 2,
            RequestState::Failed => 3,
        }
    }
}

/// A decoded state word: the state and the epoch of the request it is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct StateWord {
    state: RequestState,
    epoch: u32,
}

impl StateWord {
    fn encode(self) -> u64 {
        self.state.code() | (self.epoch as u64) << 32
    }
}

/// A request as read back ([`list`]). Everything but `member_id`, `state`
/// and `epoch` is read from the region without further checks: times, ids
/// and text may be damaged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestView {
    /// Connector id of the member to restart.
    pub member_id: ConnectorId,
    /// The request's state (never [`RequestState::Free`] in [`list`]).
    pub state: RequestState,
    /// Which request of this slot it is (changes at every post).
    pub epoch: u32,
    /// When it was (last re-)posted: wall-clock ns since the Unix epoch.
    pub posted_unix_ns: u64,
    /// When it was last claimed: wall-clock ns since the Unix epoch (0: not
    /// claimed since it was posted).
    pub claimed_unix_ns: u64,
    /// Connector id of the member that posted it; `None` when no member
    /// did (a cleanup or `cfctl` run outside a member). Not checked against
    /// the region's size.
    pub posted_by: Option<ConnectorId>,
    /// Connector id of the member that claimed it last (`None`: never
    /// claimed since it was posted). Not checked against the region's size.
    pub claimed_by: Option<ConnectorId>,
    /// PID of the process holding the claim word (0: nobody).
    pub claimer_pid: u32,
    /// Is the process named by the claim word running (PID and start time)?
    pub claimer_alive: bool,
    /// PID of the restart-light process last started for it (0: none yet).
    pub worker_pid: u32,
    /// Is that restart-light process running (PID and start time)?
    pub worker_alive: bool,
    /// Restart lights started for it since it was posted.
    pub attempts: u64,
    /// The name of the member to restart.
    pub name: String,
    /// When it was marked FAILED (0: never).
    pub failed_unix_ns: u64,
    /// Exit status of the last restart light that failed (128 + signal).
    /// `None` if none was recorded.
    pub last_status: Option<u64>,
    /// Why the last restart light failed, as it said (raw: escape to print).
    pub reason: String,
}

impl RequestView {
    /// For a FAILED request: when it will be claimed again by itself
    /// (wall-clock ns since the Unix epoch: `failed_unix_ns` +
    /// [`FAILED_RETRY`]); `None` in any other state.
    pub fn retry_at_unix_ns(&self) -> Option<u64> {
        (self.state == RequestState::Failed).then(|| retry_at(self.failed_unix_ns))
    }
}

fn retry_at(failed_ns: u64) -> u64 {
    failed_ns.saturating_add(FAILED_RETRY.as_nanos() as u64)
}

/// Is a FAILED request that failed at `failed_ns` due to be claimed again?
fn retry_due(failed_ns: u64) -> bool {
    now_ns() >= retry_at(failed_ns)
}

fn load(id: ConnectorId, e: &RequestEntry) -> Result<StateWord, CorruptError> {
    let raw = e.state.load(Ordering::Acquire);
    let state = match raw & 0xff {
        0 => RequestState::Free,
        1 => RequestState::Pending,
        2 => RequestState::Claimed,
        3 => RequestState::Failed,
        s => {
            return Err(CorruptError::BadConnector {
                id,
                what: format!("restart request state {s}"),
            })
        }
    };
    if raw & 0xffff_ff00 != 0 {
        return Err(CorruptError::BadConnector {
            id,
            what: format!("unknown bits in restart request state {raw:#018x}"),
        });
    }
    Ok(StateWord {
        state,
        epoch: (raw >> 32) as u32,
    })
}

fn cas(e: &RequestEntry, from: StateWord, to: StateWord) -> bool {
    e.state
        .compare_exchange(
            from.encode(),
            to.encode(),
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_ok()
}

fn load_name(e: &RequestEntry) -> String {
    String::from_utf8_lossy(&slots::load_name_bytes(&e.name)).into_owned()
}

fn bump(region: &Region) {
    let seq = &region.request_header().sequence;
    seq.fetch_add(1, Ordering::AcqRel);
    crate::sync::futex::wake_all_u32(seq);
}

/// The list's sequence word, to pass to [`wait_for_change`].
pub fn sequence(region: &Region) -> u32 {
    region.request_header().sequence.load(Ordering::Acquire)
}

/// Sleep until the list changes from `seen` (or `timeout` passes).
pub fn wait_for_change(region: &Region, seen: u32, timeout: Duration) {
    crate::sync::futex::wait_u32(&region.request_header().sequence, seen, timeout);
}

/// Post a request to restart member `id` (by connector `by`, if a member).
/// Returns the new request's epoch, or `None` if one was already pending or
/// claimed, if the member is no longer failed-persistent (its recovery
/// ended meanwhile), or if another live process is posting for (or cleaning
/// up) the member right now. `on_posted` runs once the request is posted and before
/// any member is woken for it (so an event recorded there comes before the
/// claim's).
///
/// Posts for one member are serialized by the member's cleanup claim (a
/// cleanup posts while it holds it; any other poster takes it for the post),
/// so a losing poster never writes over the fields of the request that won.
pub fn post(
    region: &Region,
    id: ConnectorId,
    by: Option<ConnectorId>,
    on_posted: impl FnOnce(u32),
) -> Result<Option<u32>, RestartRequestError> {
    under_cleanup_claim(region, id, || post_if_failed(region, id, by, on_posted))
}

/// `Err` if the region is read-only: `what` needs to write.
fn writable(region: &Region, what: &'static str) -> Result<(), RestartRequestError> {
    if region.is_read_only() {
        return Err(RestartRequestError::ReadOnly(what));
    }
    Ok(())
}

/// Run `f` (a post) under member `id`'s cleanup claim, which serializes posts
/// (see [`post`]); `Ok(None)` without running it if another live process
/// holds the claim.
fn under_cleanup_claim(
    region: &Region,
    id: ConnectorId,
    f: impl FnOnce() -> Result<Option<u32>, RestartRequestError>,
) -> Result<Option<u32>, RestartRequestError> {
    writable(region, "posting a restart request")?;
    let me = ProcessId::current()
        .map_err(RestartRequestError::Identity)?
        .token();
    let claim = &region.connector(id)?.cleanup;
    if let Claim::Busy(_) = claim::try_claim(claim, me, ProcessId::token_is_alive) {
        return Ok(None);
    }
    let out = f();
    claim::release(claim, me);
    out
}

/// [`post`] under the cleanup claim: only for a member that is still
/// failed-persistent. The poster saw it failed with no request, but its
/// restart light may have connected, recovered and disconnected since (it
/// takes no cleanup claim). The connect latch orders the two: a light that
/// connects after the post finds the request and completes it; one that
/// connected before leaves a state other than failed-persistent, and
/// nothing is posted.
fn post_if_failed(
    region: &Region,
    id: ConnectorId,
    by: Option<ConnectorId>,
    on_posted: impl FnOnce(u32),
) -> Result<Option<u32>, RestartRequestError> {
    with_connects_latched(region, id, |state| {
        if state != MemberState::FailedPersistent {
            return Ok(None);
        }
        post_claimed(region, id, by, on_posted)
    })
}

/// Run `f` with member `id`'s state, under the connect latch (so no
/// connection of the member begins or ends its recovery meanwhile);
/// `Ok(None)` without running it if connects are busy (or the latch is
/// stuck): the caller looks again.
fn with_connects_latched(
    region: &Region,
    id: ConnectorId,
    f: impl FnOnce(MemberState) -> Result<Option<u32>, RestartRequestError>,
) -> Result<Option<u32>, RestartRequestError> {
    let me = ProcessId::current().map_err(RestartRequestError::Identity)?;
    let Ok(_latch) = ConnectLatch::take(region, &me, POST_LATCH_WAIT) else {
        return Ok(None);
    };
    f(crate::connector::load_state(region, id)?.state)
}

/// How long [`post`] waits for the connect latch.
const POST_LATCH_WAIT: Duration = Duration::from_secs(1);

/// [`post`] by the holder of member `id`'s cleanup claim.
pub(crate) fn post_claimed(
    region: &Region,
    id: ConnectorId,
    by: Option<ConnectorId>,
    on_posted: impl FnOnce(u32),
) -> Result<Option<u32>, RestartRequestError> {
    post_or_repost(region, id, by, on_posted, false)
}

/// [`post_claimed`]; with `repost_failed`, a FAILED request of the member's
/// current failure is re-posted too ([`retry`]). A re-post turns the FAILED
/// request PENDING in place with the next epoch: the same request again,
/// not a new one (the totals count it once: posted = completed +
/// outstanding, attack9).
fn post_or_repost(
    region: &Region,
    id: ConnectorId,
    by: Option<ConnectorId>,
    on_posted: impl FnOnce(u32),
    repost_failed: bool,
) -> Result<Option<u32>, RestartRequestError> {
    let e = region.request(id)?;
    let incarnation = region.connector(id)?.incarnation.load(Ordering::Acquire);
    let mut now = load(id, e)?;
    if now.state != RequestState::Free && e.incarnation.load(Ordering::Acquire) != incarnation {
        // The outstanding request is for a previous occupant of the slot,
        // which was recovered (only its recovering connection vacates a
        // failed slot) but not yet completed: complete it now, so this
        // failure gets a request of its own.
        complete_stale(region, id, now.epoch, by)?;
        now = load(id, e)?;
    }
    let generation = crate::connector::load_state(region, id)?.generation;
    // A FAILED request stands for a failure whose restart lights kept
    // failing. A death of a later connection recovering it (a normal
    // restart, a restart light run by hand), killed, is a fault, not the
    // persistent reason: the request is claimable again at once (re-posted
    // in place; no completion: nothing was recovered), as a retry makes it.
    let repost = now.state == RequestState::Failed
        && (repost_failed || e.generation.load(Ordering::Acquire) != u64::from(generation));
    if now.state != RequestState::Free && !repost {
        return Ok(None);
    }
    // A re-post holds the claim word while it rewrites the request: a
    // claimer of the FAILED request (due after FAILED_RETRY) then either
    // finds it busy, or won first and the re-post finds it CLAIMED and
    // stops; it never loses its claim to the rewrite (attack10).
    let token = if repost {
        let me = ProcessId::current()
            .map_err(RestartRequestError::Identity)?
            .token();
        let alive = |t: u64| {
            ProcessId::token_is_alive(t)
                || ProcessId::token_is_alive(e.worker.load(Ordering::Acquire))
        };
        let mut tries = 0u32;
        while let Claim::Busy(_) = claim::try_claim(&e.claim, me, alive) {
            // A claimer of the FAILED request holds the word: one that wins
            // turns the request CLAIMED (it is handled: nothing to re-post),
            // one that backs off (not due yet) lets go at once (attack9).
            if load(id, e)? != now || tries >= REPOST_TRIES {
                return Ok(None);
            }
            tries += 1;
            crate::sync::pause(Duration::from_micros(50));
        }
        if load(id, e)? != now {
            claim::release(&e.claim, me);
            return Ok(None);
        }
        Some(me)
    } else {
        // FREE: nobody claims it (a claim needs it outstanding).
        e.claim.store(0, Ordering::Relaxed);
        None
    };
    // The request's fields are written before the state publishes it; a
    // reader sees them with the state (Release/Acquire).
    e.worker.store(0, Ordering::Relaxed);
    e.attempts.store(0, Ordering::Relaxed);
    e.failed_ns.store(0, Ordering::Relaxed);
    e.last_status.store(0, Ordering::Relaxed);
    slots::store_text(&e.reason, b"");
    slots::store_name(&e.name, crate::connector::name_of(region, id).as_bytes());
    e.claimed_ns.store(0, Ordering::Relaxed);
    e.posted_ns.store(now_ns(), Ordering::Relaxed);
    e.who
        .store(by.map_or(0, |b| b.get() as u64 + 1), Ordering::Relaxed);
    e.incarnation.store(incarnation, Ordering::Relaxed);
    e.generation.store(u64::from(generation), Ordering::Relaxed);
    let epoch = now.epoch.wrapping_add(1);
    let posted = StateWord {
        state: RequestState::Pending,
        epoch,
    };
    let published = cas(e, now, posted);
    if let Some(me) = token {
        claim::release(&e.claim, me);
    }
    if !published {
        return Ok(None);
    }
    if !repost {
        region
            .request_header()
            .posted
            .fetch_add(1, Ordering::Relaxed);
    }
    on_posted(epoch);
    bump(region);
    Ok(Some(epoch))
}

/// How often a re-post waits 50 µs for a claimer of the FAILED request to
/// decide (about 1 s: a claimer holds the word for microseconds).
#[cfg(not(loom))]
const REPOST_TRIES: u32 = 20_000;
/// Under loom a wait is a yield, and a long spin exceeds loom's branch
/// budget: a few yields let a backing-off claimer go (the same code, a
/// smaller bound; a re-post that gives up is the case it covers either way).
#[cfg(loom)]
const REPOST_TRIES: u32 = 4;

/// Complete request `epoch` of `id` for a member recovered meanwhile, on
/// behalf of connector `by` (or "cf-core"), under the name it was posted for.
fn complete_stale(
    region: &Region,
    id: ConnectorId,
    epoch: u32,
    by: Option<ConnectorId>,
) -> Result<bool, RestartRequestError> {
    let e = region.request(id)?;
    let by_name = by.map(|b| crate::connector::name_of(region, b));
    complete(
        region,
        id,
        epoch,
        &load_name(e),
        by_name.as_deref().unwrap_or("cf-core"),
    )
}

/// Is a request for `id` waiting for a (new) handler? Pending, or claimed by
/// a dead claimer whose restart light is dead too.
pub fn needs_handler(region: &Region, id: ConnectorId) -> Result<bool, CorruptError> {
    let e = region.request(id)?;
    Ok(match load(id, e)?.state {
        RequestState::Free => false,
        RequestState::Pending => true,
        RequestState::Claimed => {
            !ProcessId::token_is_alive(e.claim.load(Ordering::Acquire))
                && !ProcessId::token_is_alive(e.worker.load(Ordering::Acquire))
        }
        RequestState::Failed => {
            retry_due(e.failed_ns.load(Ordering::Acquire))
                && !ProcessId::token_is_alive(e.worker.load(Ordering::Acquire))
        }
    })
}

/// Outcome of a claim attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// We hold request `epoch`; `taken_over` if from a dead claimer.
    Claimed {
        /// The claim word named a dead claimer, whose claim we took over.
        taken_over: bool,
        /// The epoch of the request we claimed; pass it to the later steps.
        epoch: u32,
    },
    /// Nothing to claim, or someone alive holds it.
    NotClaimed,
}

/// Try to claim the request for `id` as connector `by` in this process.
pub fn claim(
    region: &Region,
    id: ConnectorId,
    by: ConnectorId,
    me: &ProcessId,
) -> Result<ClaimOutcome, RestartRequestError> {
    writable(region, "claiming a restart request")?;
    let e = region.request(id)?;
    let seen = load(id, e)?;
    if seen.state == RequestState::Free
        || (seen.state == RequestState::Failed && !retry_due(e.failed_ns.load(Ordering::Acquire)))
    {
        return Ok(ClaimOutcome::NotClaimed);
    }
    let alive = |t: u64| {
        ProcessId::token_is_alive(t) || ProcessId::token_is_alive(e.worker.load(Ordering::Acquire))
    };
    let previous = match claim::try_claim(&e.claim, me.token(), alive) {
        Claim::Busy(_) => return Ok(ClaimOutcome::NotClaimed),
        Claim::Claimed { previous } => previous,
    };
    // Under the claim: completed (and perhaps reposted) since we looked? A
    // claim is for the request (epoch) its claimer judged.
    let now = load(id, e)?;
    let claimed = StateWord {
        state: RequestState::Claimed,
        epoch: now.epoch,
    };
    // A FAILED request is claimed only if it is due *now*: it may have been
    // claimed, failed again and stamped since we looked (the same state
    // word: a due claim keeps the epoch; attack11). A re-fail needs the
    // claim word, which we hold, so the stamp read here is the last one.
    let due_now =
        now.state != RequestState::Failed || retry_due(e.failed_ns.load(Ordering::Acquire));
    if now.state == RequestState::Free
        || now.state != seen.state && now.state == RequestState::Failed
        || now.epoch != seen.epoch
        || !due_now
        || !cas(e, now, claimed)
    {
        claim::release(&e.claim, me.token());
        return Ok(ClaimOutcome::NotClaimed);
    }
    e.worker.store(0, Ordering::Relaxed);
    e.claimed_ns.store(now_ns(), Ordering::Relaxed);
    let posted_by = e.who.load(Ordering::Relaxed) & 0xffff_ffff;
    e.who
        .store(posted_by | (by.get() as u64 + 1) << 32, Ordering::Relaxed);
    bump(region);
    Ok(ClaimOutcome::Claimed {
        taken_over: previous != 0,
        epoch: now.epoch,
    })
}

/// Record `worker` (a restart-light process) as working on request `epoch`
/// of `id`. Returns the number of attempts so far, or `None` if that request
/// is no longer outstanding (then nothing is recorded).
pub fn set_worker(
    region: &Region,
    id: ConnectorId,
    epoch: u32,
    worker: &ProcessId,
) -> Result<Option<u64>, RestartRequestError> {
    writable(region, "recording a restart light")?;
    let e = region.request(id)?;
    let now = load(id, e)?;
    if now.state == RequestState::Free || now.epoch != epoch {
        return Ok(None);
    }
    e.worker.store(worker.token(), Ordering::Release);
    Ok(Some(
        e.attempts.fetch_add(1, Ordering::AcqRel).wrapping_add(1),
    ))
}

/// Give claimed request `epoch` of `id` back (pending again) so another
/// member may take it.
pub fn unclaim(
    region: &Region,
    id: ConnectorId,
    epoch: u32,
    me: &ProcessId,
) -> Result<(), RestartRequestError> {
    writable(region, "giving up a claim")?;
    let e = region.request(id)?;
    let _ = cas(
        e,
        StateWord {
            state: RequestState::Claimed,
            epoch,
        },
        StateWord {
            state: RequestState::Pending,
            epoch,
        },
    );
    claim::release(&e.claim, me.token());
    bump(region);
    Ok(())
}

/// What [`fail`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailOutcome {
    /// The request is FAILED and the claim released.
    Marked,
    /// The request was no longer claimed (completed meanwhile): nothing done.
    NotOutstanding,
    /// The member is no longer the failed-persistent connection the handler
    /// judged (a later connection recovered it, or died recovering it: a
    /// new death, which a FAILED request would swallow): nothing done; the
    /// handler goes on handling the request (or looks again, if connects
    /// were busy).
    MemberChanged,
}

/// Give claimed request `epoch` of `id` up: its restart lights failed for a
/// reason that does not go away. It becomes FAILED (same epoch, still
/// outstanding) and the claim is released; see the module docs. Only if
/// the member is still the failed-persistent connection `judged` (the
/// generation the handler saw when it counted its failed restart lights),
/// checked under the connect latch, so no later connection of the member
/// can begin in between (attack7).
pub fn fail(
    region: &Region,
    id: ConnectorId,
    epoch: u32,
    me: &ProcessId,
    judged: u32,
) -> Result<FailOutcome, RestartRequestError> {
    let Ok(_latch) = ConnectLatch::take(region, me, POST_LATCH_WAIT) else {
        return Ok(FailOutcome::MemberChanged);
    };
    let st = crate::connector::load_state(region, id)?;
    if st.state != MemberState::FailedPersistent || st.generation != judged {
        return Ok(FailOutcome::MemberChanged);
    }
    let e = region.request(id)?;
    // Written before the CAS publishes FAILED (a reader of FAILED reads it,
    // and must never see the request as failed long ago); put back if the
    // CAS fails, unless someone wrote it since.
    let stamp = now_ns().max(1);
    let before = e.failed_ns.swap(stamp, Ordering::Relaxed);
    let done = cas(
        e,
        StateWord {
            state: RequestState::Claimed,
            epoch,
        },
        StateWord {
            state: RequestState::Failed,
            epoch,
        },
    );
    if !done {
        // Completed meanwhile (and maybe posted again, claimed by a thread
        // of this very process): its fields, worker and claim are not ours.
        let _ = e
            .failed_ns
            .compare_exchange(stamp, before, Ordering::Relaxed, Ordering::Relaxed);
        return Ok(FailOutcome::NotOutstanding);
    }
    e.worker.store(0, Ordering::Relaxed);
    claim::release(&e.claim, me.token());
    bump(region);
    Ok(FailOutcome::Marked)
}

/// Record why a restart light of request `epoch` of `id` failed: its exit
/// status (`Some`, by its handler) and/or its error line (`reason`, by the
/// restart light itself; at most 112 bytes are kept). Nothing is recorded
/// for a request no longer outstanding.
pub fn set_reason(
    region: &Region,
    id: ConnectorId,
    epoch: u32,
    status: Option<u64>,
    reason: Option<&str>,
) -> Result<(), RestartRequestError> {
    writable(region, "recording a restart failure")?;
    let e = region.request(id)?;
    let now = load(id, e)?;
    if now.state == RequestState::Free || now.epoch != epoch {
        return Ok(());
    }
    if let Some(s) = status {
        e.last_status.store(s.saturating_add(1), Ordering::Relaxed);
    }
    if let Some(r) = reason {
        let max = slots::REASON_WORDS * 8;
        let mut end = r.len().min(max);
        while !r.is_char_boundary(end) {
            end -= 1;
        }
        slots::store_text(&e.reason, &r.as_bytes()[..end]);
    }
    Ok(())
}

/// Re-post a FAILED request for member `id` by hand (`cfctl restart-light`):
/// it becomes PENDING with a new epoch, so a member claims it at once.
/// Returns the new epoch, or `None` if nothing was re-posted: the request
/// was not FAILED (then [`post`] is what to call), the member is recovering
/// itself (its connection completes the request), or the member was
/// recovered already (the request is completed now).
///
/// All of it happens under the connect latch: a normal restart that began
/// before the retry completes the request when it finishes recovering
/// ([`complete_outstanding`], under the same latch), and one that begins
/// after it finds the new request and completes that; so a retry never
/// frees a request that nobody will complete.
pub fn retry(
    region: &Region,
    id: ConnectorId,
    by: Option<ConnectorId>,
    on_posted: impl FnOnce(u32),
) -> Result<Option<u32>, RestartRequestError> {
    under_cleanup_claim(region, id, || {
        with_connects_latched(region, id, |state| {
            let e = region.request(id)?;
            let now = load(id, e)?;
            if now.state != RequestState::Failed {
                return Ok(None);
            }
            match state {
                // Re-posted in place: PENDING with the next epoch.
                MemberState::FailedPersistent => post_or_repost(region, id, by, on_posted, true),
                // A restart light recovered it and left, and was killed
                // before it completed the request.
                MemberState::Free => {
                    complete_stale(region, id, now.epoch, by)?;
                    Ok(None)
                }
                // Recovering (its connection completes the request), or
                // being cleaned up (a new failure: its cleanup re-posts).
                _ => Ok(None),
            }
        })
    })
}

/// The recovering connection of member `id` (named `by`) has finished:
/// complete the slot's outstanding request, whatever its state (pending,
/// claimed, or failed: the member recovered itself). Called under the
/// connect latch, before the member becomes ACTIVE. Returns whether a
/// request was completed.
pub(crate) fn complete_outstanding(
    region: &Region,
    id: ConnectorId,
    by: &str,
) -> Result<bool, RestartRequestError> {
    let e = region.request(id)?;
    // Under the connect latch nothing posts for the member, but a claim (or
    // an unclaim) may change the state word between the load and the
    // completion's CAS (attack9): load again until the request is free.
    for _ in 0..COMPLETE_TRIES {
        let now = load(id, e)?;
        if now.state == RequestState::Free {
            return Ok(false);
        }
        if complete_as(region, id, now.epoch, by, by, Completion::OwnRestart)? {
            return Ok(true);
        }
    }
    Err(Stuck::Request {
        id,
        tries: COMPLETE_TRIES,
    }
    .into())
}

/// How often [`complete_outstanding`] tries (a claim changes the state word
/// once per claimer; only damage changes it forever).
const COMPLETE_TRIES: u32 = 64;

/// Request `epoch` of `id` (member `member`) is done: the member is no longer
/// failed-persistent. Records `recovery_completed` (by `by`) if this call
/// completed it and returns true; a request already completed, or a newer
/// one, is left alone (false).
pub fn complete(
    region: &Region,
    id: ConnectorId,
    epoch: u32,
    member: &str,
    by: &str,
) -> Result<bool, RestartRequestError> {
    writable(region, "completing a restart request")?;
    complete_as(region, id, epoch, member, by, Completion::Completed)
}

/// [`complete`], recording `how` in the event (the member's own normal
/// restart, [`complete_outstanding`], records [`Completion::OwnRestart`]).
fn complete_as(
    region: &Region,
    id: ConnectorId,
    epoch: u32,
    member: &str,
    by: &str,
    how: Completion,
) -> Result<bool, RestartRequestError> {
    let e = region.request(id)?;
    let now = load(id, e)?;
    if now.state == RequestState::Free || now.epoch != epoch {
        return Ok(false);
    }
    // Read the name before the entry can be reposted.
    let stored = load_name(e);
    let free = StateWord {
        state: RequestState::Free,
        epoch,
    };
    if !cas(e, now, free) {
        return Ok(false);
    }
    region
        .request_header()
        .completed
        .fetch_add(1, Ordering::Relaxed);
    let name = if stored.is_empty() {
        member
    } else {
        stored.as_str()
    };
    crate::events::record(
        region,
        name,
        Some(by),
        EventData::RecoveryCompleted { epoch, how },
    );
    bump(region);
    Ok(true)
}

/// Is request `epoch` of `id` still outstanding (pending, claimed, or
/// FAILED: a failed request waits to be retried, it is not over)?
pub fn is_outstanding(region: &Region, id: ConnectorId, epoch: u32) -> Result<bool, CorruptError> {
    let e = region.request(id)?;
    let st = load(id, e)?;
    Ok(st.state != RequestState::Free && st.epoch == epoch)
}

/// Was the outstanding request of slot `id` posted for the failure of its
/// current connection? A cleanup that finds one finishes the job of a
/// cleaner that died after announcing, and announces nothing twice. (A
/// request for an earlier connection is for a failure this connection was
/// recovering.) Called under the member's cleanup claim, which serializes
/// posts.
pub(crate) fn is_posted_for_connection(
    region: &Region,
    id: ConnectorId,
) -> Result<bool, CorruptError> {
    let e = region.request(id)?;
    let generation = crate::connector::load_state(region, id)?.generation;
    let st = load(id, e)?;
    Ok(st.state != RequestState::Free
        && e.generation.load(Ordering::Acquire) == u64::from(generation))
}

/// The outstanding request (id, epoch) for the member named `name`, if any.
pub fn find(region: &Region, name: &str) -> Result<Option<(ConnectorId, u32)>, CorruptError> {
    for id in region.connector_ids() {
        let e = region.request(id)?;
        let st = load(id, e)?;
        if st.state != RequestState::Free && load_name(e) == name {
            return Ok(Some((id, st.epoch)));
        }
    }
    Ok(None)
}

/// Every request that is not free.
pub fn list(region: &Region) -> Result<Vec<RequestView>, CorruptError> {
    let mut out = Vec::new();
    for id in region.connector_ids() {
        let e = region.request(id)?;
        let st = load(id, e)?;
        if st.state == RequestState::Free {
            continue;
        }
        let who = e.who.load(Ordering::Relaxed);
        let ids = |v: u64| {
            (v & 0xffff_ffff)
                .checked_sub(1)
                .map(|x| ConnectorId::new(x as u32))
        };
        let claim = e.claim.load(Ordering::Relaxed);
        let worker = e.worker.load(Ordering::Relaxed);
        out.push(RequestView {
            member_id: id,
            state: st.state,
            epoch: st.epoch,
            posted_unix_ns: e.posted_ns.load(Ordering::Relaxed),
            claimed_unix_ns: e.claimed_ns.load(Ordering::Relaxed),
            posted_by: ids(who),
            claimed_by: ids(who >> 32),
            claimer_pid: claim as u32,
            claimer_alive: ProcessId::token_is_alive(claim),
            worker_pid: worker as u32,
            worker_alive: ProcessId::token_is_alive(worker),
            attempts: e.attempts.load(Ordering::Relaxed),
            name: load_name(e),
            failed_unix_ns: e.failed_ns.load(Ordering::Relaxed),
            last_status: e.last_status.load(Ordering::Relaxed).checked_sub(1),
            reason: String::from_utf8_lossy(&slots::load_text(&e.reason)).into_owned(),
        });
    }
    Ok(out)
}

/// Requests posted and completed since the region was created.
pub fn totals(region: &Region) -> (u64, u64) {
    let h = region.request_header();
    (
        h.posted.load(Ordering::Relaxed),
        h.completed.load(Ordering::Relaxed),
    )
}

/// Complete every outstanding request for the member named `name` (it
/// restarted normally and recovered itself, perhaps in another slot than the
/// one it died in). Returns how many it completed.
pub fn complete_for_name(
    region: &Region,
    name: &str,
    by: &str,
) -> Result<usize, RestartRequestError> {
    writable(region, "completing a restart request")?;
    let mut n = 0;
    for r in list(region)? {
        if r.name == name && complete(region, r.member_id, r.epoch, name, by)? {
            n += 1;
        }
    }
    Ok(n)
}
