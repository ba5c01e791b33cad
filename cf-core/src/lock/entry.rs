//! The latched entry protocol: everything on a lock table entry that one
//! compare-and-swap of its word cannot settle. A request, a release and the
//! cleanup of a dead member all take the entry's latch (`word.rs`), decide
//! from the record entries of the connectors the word names (`records.rs`),
//! and drop the latch publishing the entry's new interest mask. This module is
//! the whole of that protocol; `member/holder.rs` (requests) and `recovery.rs`
//! (cleanup) only drive it, and the loom models drive it directly.
//!
//! # Invariants
//! 1. **The record covers the word.** A word names connector `c` (fast-mode
//!    exclusive holder or mask bit), or `c` holds the entry's latch, only
//!    while `c` has a non-free record on that entry. So walking a member's
//!    records finds every word it may have touched. Hence: a request writes
//!    its record (HELD) before its word CAS; a release first turns its record
//!    PENDING (*being released*: no longer a holding for anyone, still a
//!    cover), gives up the word or the latch, and only then frees the record.
//!    (A record is never freed under the latch on the strength of a sibling's
//!    record: that one may be a half-made request that gives up unlatched.)
//! 2. **A HELD record may not be granted yet.** Between its record and its
//!    word CAS a request's record says HELD although nothing is granted (its
//!    CAS may still fail, and on a mixed entry it will). Nothing may conclude
//!    from another connector's HELD record that it *holds* the resource in a
//!    way that frees something else: a HELD record only ever makes a decision
//!    more conservative (a conflict for a request, the member's bit kept, a
//!    lock kept as retained). (The hole this rule closes: a cleanup once freed
//!    a dead member's retained lock because a live member's half-made request
//!    for the same resource looked like a live incompatible holder.)
//! 3. **Outside a latch, bit `c` of a mixed word is set iff `c` has a HELD
//!    record on the entry**, up to the half-made requests of rule 2, which
//!    always latch afterwards and then recompute it. Every unlatch by a member
//!    recomputes that member's own bit from its records ([`Latched::give_up`],
//!    `Latched::step_out`, [`release`]), so the last one out clears it. (A
//!    released record is PENDING, so a sibling never keeps the bit for it.)
//!    A bit kept for a sibling's half-made request that then gives up without
//!    latching (its latch wait timed out) would be left behind: so every
//!    latched operation drops the bits of named connectors that have no held
//!    record on the entry at all ([`Latched::decide`], `heal`): nothing is
//!    held there.
//! 4. **Every decision on a mixed entry is made under its latch**, from the
//!    HELD records of the named connectors, so two decisions never race. A
//!    same-resource record in a mode incompatible with the request's (the
//!    table of `records::LockMode`) is a conflict; a compatible one is not,
//!    even if both modes take exclusive interest in the word (IX beside IX:
//!    the word could not tell, the records can); a different resource is
//!    *false contention*, resolved from the records and granted.
//! 5. **Bounded bypass.** A waiting request takes a *wait ticket* the first
//!    time it is refused (a counter in the lock header: tickets order
//!    requests by when they began to wait). Each time the holdings change
//!    while it waits and it is refused again, it has been *bypassed*; after
//!    [`BYPASS_LIMIT`] bypasses it turns its record URGENT under the latch.
//!    An URGENT record holds nothing, but it is its member's *interest*
//!    (rule 3 counts it: the bit stays set, the entry stays mixed, so no
//!    fast-path CAS can bypass it), and a decision treats it as a conflict
//!    for any incompatible request for the same resource with a younger
//!    ticket or none ([`Latched::decide`]). So once urgent, a request waits
//!    only for the holders of the moment and for older urgent requests,
//!    whose number is bounded by the threads that began to wait before it:
//!    it is granted after a bounded number of grants to others. An URGENT
//!    record that stops waiting (a timeout) turns PENDING under the latch and
//!    its unlatch wakes the holding waiters ([`Latched::give_up`],
//!    [`Latched::step_out_for_good`]); one that must leave unlatched (its
//!    latch wait timed out) latches at once if it can, and otherwise pokes
//!    the latch holder ([`abandon_unlatched`], `latch_or_poke`,
//!    [`word::poke`]): the holder's unlatch then heals the mask and wakes
//!    every holding waiter (attack12). An URGENT record
//!    never makes anything *less* conservative: it is never taken as held
//!    (not retained, not released by a cleanup, which frees it like a
//!    PENDING one). An urgent request waits for the holdings of the moment,
//!    so it never makes wait a request of a holder (thread) that already
//!    holds the resource (a second share, say): that one would wait for the
//!    urgent request, which waits for its own holding (the attack3 test
//!    `a_reader_asking_again_waits_for_the_urgent_writer_that_waits_for_it`).
//!    A sibling thread's holding does not exempt a request: the sibling lets
//!    go whatever this thread waits for, and siblings taking turns would
//!    otherwise bypass the urgent request forever (attack12).
//!    A bypass is counted whenever the holdings changed and the request is
//!    still refused, whoever changed them (conservative: a request may turn
//!    urgent without having been overtaken).
//! 6. **A half-made record's end wakes.** A decision may count another
//!    request's half-made HELD record as a conflict (rule 2) and wait for it
//!    to go. That request then turns PENDING and latches, and whatever it
//!    decides, its first unlatch is a holdings change (it wakes the holding
//!    waiters), or, if it must leave without the latch, it makes one attempt
//!    at it to the same end ([`abandon_unlatched`]). Otherwise such a waiter
//!    would sleep until its slice ended although it conflicts with nothing
//!    (the attack3 loom model
//!    `a_waiter_blocked_by_a_half_made_request_is_never_woken`).
//!
//! 7. **A holder never waits for itself.** A holder's own records (the
//!    records in its blocks, `records::slot_owner`) never conflict with its
//!    requests: a thread that holds S and asks X on the same resource gets
//!    X at once if nobody else holds the resource (as IRLM's owner, a
//!    transaction, is compatible with itself). A sibling thread's records
//!    conflict as anyone's. The deadlock detector draws no edge from a
//!    waiter to itself either (`deadlock.rs`).
//! 8. **Conversion in place.** A holder converts a held lock (promotion S
//!    to X, U to X, IX to SIX; demotion X to S) with a request for the same
//!    resource in the new mode, on its own PENDING record, always on the
//!    latched path (`member/holder.rs`, `Holder::convert`). It is decided,
//!    waits, turns URGENT, is told it is a deadlock victim or refused for a
//!    retained lock like any request; by rule 7 the lock it converts never
//!    conflicts with it. Granted ([`Latched::grant_conversion`]), the
//!    converted record takes the new mode in place under the latch and the
//!    request's record is freed; if the converted record is no longer HELD
//!    then (released under the waiting request by slot,
//!    `Member::release_record`, or damage), nothing is rewritten: the request
//!    gives up and answers "not held" (attack15). Refused or out of time,
//!    the request's record goes and the lock is still held in its old mode.
//!    The modify flag is kept: a conversion may add it, never drop it. Two
//!    holders of S that both convert to X wait for each other: a deadlock,
//!    whose victim keeps its S lock (its caller backs out and releases it).
//!
//! # Contention (what the counters say)
//! A request that cannot be settled by one CAS is decided here, and counted
//! at most once, as the z/OS and Db2 reports count global contention:
//! * **IRLM contention** (`contention`): a holding of the same resource by
//!   another holder in an incompatible mode (a conflict: the request
//!   waits, or is refused). Sibling threads' conflicts count too.
//! * **XES contention**: granted, but another member held the same
//!   resource in a compatible mode whose interest in the word conflicts
//!   with the request's (IX beside IX, U beside S): the lock table alone
//!   would have seen contention.
//! * **False contention**: granted, and no XES contention, but another
//!   member held another resource hashed to the entry with conflicting
//!   interest (exclusive against share or exclusive).
//!
//! A request refused because a failed member retains the resource is also
//! counted as a *retained refusal*. Requests that take the latched path for
//! a sibling's holding, or for another member's share beside a share, meet
//! no global contention.
//!
//! # Cleanup of a dead member `c` on an entry ([`settle_dead`])
//! Under the latch taken in `c`'s own name (a latch `c` died holding is then
//! already "its own"; a cleaner that dies holding it leaves it held by a dead
//! connector), each record of `c` on the entry is decided by what the word and
//! the record say, never by other members' records (rule 2):
//! * PENDING: a request not granted, or a lock being released: freed.
//! * HELD, `c` not named: `c` died between record and word on acquire, or
//!   between word and record on release, or after a decided grant but before
//!   its unlatch set the bit (that request never returned, so nothing used it):
//!   freed.
//! * HELD, named, not modify: released.
//! * HELD, named, modify: **retained**, always. If it was a half-made second
//!   request on an entry `c` was named on for another record, keeping it is an
//!   *extra* retained lock: it refuses requests for that resource until
//!   restart light releases it, which is safe (the dead member did nothing
//!   under it), whereas freeing a lock that was granted would let another
//!   member overwrite uncommitted data.
//!
//! # Crash windows (see `crash::CRASH_POINTS`)
//! * `acquire.after_record`: tag HELD, word not changed: `c` not named for it,
//!   freed by cleanup (or, if `c` is named for another record, kept if modify).
//! * `acquire.after_word`: a held lock.
//! * `release.marked`: tag PENDING, word still names `c`: the release is
//!   finished by the cleanup (record freed, `c`'s interest dropped).
//! * `release.after_word`: word released, tag PENDING: freed.
//! * `slow.latched`: a dead latch holder with a PENDING record: the cleaner
//!   takes the latch over (it latches in `c`'s name) and frees the record.
//! * `slow.granted_before_unlatch`: tag HELD under the latch, bit maybe unset:
//!   decided by whether `c` was already named, as above.
//! * `convert.mode_written`: under the latch, the converted record HELD in
//!   its new mode, the conversion request's record PENDING: the pending one
//!   is freed, the converted one released or retained in its new mode.
//! * `slow_release.latched`: the record is PENDING under the latch: freed,
//!   `c`'s bit recomputed from its held records. `slow_release.after_unlatch`:
//!   latch dropped with `c`'s bit recomputed; the PENDING record is freed.
//! * `cleanup.entry_latched`: the entry is latched in `c`'s name; the next
//!   cleaner of `c` takes it over. `cleanup.entry_unlatched`: the word is
//!   settled and the remaining tags of freed records are freed by the next
//!   cleanup (they are PENDING, or HELD and no longer named).

use crate::connector::{self, MemberState};
use crate::error::{CleanupError, CorruptError, Stuck};
use crate::ids::{ConnectorId, EntryIndex};
use crate::lock::records::{
    self, Mode, RecordView, Resource, TAG_FREE, TAG_HELD, TAG_PENDING, TAG_URGENT,
};
use crate::lock::word::{self, Change, Latch};
use crate::shm::region::Region;
use crate::sync::{trace, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Bypasses after which a waiting request turns URGENT (rule 5).
pub(crate) const BYPASS_LIMIT: u32 = 3;

/// Longest single futex sleep while waiting: a waiter re-checks its holders'
/// liveness at least this often, so a dead holder is found with no monitor
/// (with one, the holder's cleanup changes the word and wakes the waiter at
/// once). 100 ms keeps a waiter's own CPU near 0.1% of a core (each look
/// costs tens of µs: the latch, the holders' identity in /proc); 20 ms made
/// 8 waiters cost 2.9% (`cfctl bench` row `waiters_cpu_k8`, 2026-12-01).
pub(crate) const MAX_SLICE: Duration = Duration::from_millis(100);
/// First sleep slice (doubling up to [`MAX_SLICE`]).
pub(crate) const FIRST_SLICE: Duration = Duration::from_micros(50);
/// Longest a latch wait without a deadline (a release, a cleanup) accepts a
/// live latch holder whose word does not change at all; then the word is
/// taken as damaged (a typed error) instead of waiting forever.
const LATCH_STUCK: Duration = Duration::from_secs(30);

/// How a latch is waited for.
pub(crate) struct LatchWait<'a> {
    /// Give up (with [`LatchError::TimedOut`]) after this.
    pub deadline: Option<Instant>,
    /// The connectors (a bit set) whose cleanup claims the caller holds: a
    /// latch held in one of their names is taken over as the caller's own
    /// (they are dead, and only their cleaner may act for them). Empty for
    /// every request and release of a live member.
    pub steal: u64,
    /// Called with the latch holder when the word has not changed for a whole
    /// sleep slice: the caller checks whether it is dead and cleans it up.
    pub on_stuck: &'a mut dyn FnMut(ConnectorId) -> Result<(), CleanupError>,
    /// The caller's registration among the threads of its process that latch
    /// in its name ([`OwnLatches`]): a latch in its own name that none of them
    /// holds is taken over. `None`: every latch in its own name is waited for.
    pub own: Option<&'a OwnLatchesGuard<'a>>,
}

/// The threads of one process that may hold latches in the name of one of
/// its connections (its holders' requests, its releases). Only they latch in
/// a live member's name (a cleaner latches in the name of a dead one), so a
/// latch in that name that none of them holds is stale: left by damage, or
/// from before the connect. Waiting for it as for a sibling thread's (whatever
/// the deadline) would wait for nobody until the stuck-latch limit.
///
/// Each latched operation registers for its whole length ([`OwnLatches::enter`],
/// before its first latch, until after its last unlatch). A thread that finds
/// an entry latched in its own name holds no latch itself (a thread latches
/// one entry at a time in its own name), so it steps out of the count and
/// looks at the word again while no thread is registered and none can
/// register ([`OwnLatchesGuard::alone`]): a latch in its name seen then is
/// nobody's, and it takes it over. If another thread is registered, it steps
/// back in and waits as for a sibling's latch.
///
/// Plain `std` atomics, also under loom: each thread's view of the count is
/// sequentially consistent there (one thread runs at a time), and the models
/// explore the lock words, not this count.
#[derive(Debug)]
pub(crate) struct OwnLatches {
    count: std::sync::atomic::AtomicU32,
    /// The generation of the connection (its slot is ours while it has it).
    generation: u32,
}

/// Set in [`OwnLatches`] while a thread looks at a latch alone.
const ALONE: u32 = 1 << 31;

/// A registration in [`OwnLatches`], dropped when the operation is over.
#[derive(Debug)]
pub(crate) struct OwnLatchesGuard<'a>(&'a OwnLatches);

impl OwnLatches {
    pub(crate) fn new(generation: u32) -> OwnLatches {
        OwnLatches {
            count: std::sync::atomic::AtomicU32::new(0),
            generation,
        }
    }

    /// Register a latched operation (waits while a thread looks alone).
    pub(crate) fn enter(&self) -> OwnLatchesGuard<'_> {
        self.register();
        OwnLatchesGuard(self)
    }

    fn register(&self) {
        use std::sync::atomic::Ordering as O;
        let mut cur = self.count.load(O::SeqCst);
        loop {
            if cur & ALONE != 0 {
                crate::sync::spin_hint();
                cur = self.count.load(O::SeqCst);
                continue;
            }
            match self
                .count
                .compare_exchange_weak(cur, cur + 1, O::SeqCst, O::SeqCst)
            {
                Ok(_) => return,
                Err(now) => cur = now,
            }
        }
    }
}

impl OwnLatchesGuard<'_> {
    fn generation(&self) -> u32 {
        self.0.generation
    }

    /// Run `f` while no other thread of the process is registered and none
    /// can register (the caller, which holds no latch now, steps out of the
    /// count meanwhile); `None` (without running it) if another is registered.
    fn alone<T>(&self, f: impl FnOnce() -> T) -> Option<T> {
        use std::sync::atomic::Ordering as O;
        let n = &self.0.count;
        n.fetch_sub(1, O::SeqCst);
        if n.compare_exchange(0, ALONE, O::SeqCst, O::SeqCst).is_err() {
            self.0.register();
            return None;
        }
        let out = f();
        // Nobody else was registered, and nobody could register since.
        n.store(1, O::SeqCst);
        Some(out)
    }
}

impl Drop for OwnLatchesGuard<'_> {
    fn drop(&mut self) {
        self.0
            .count
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Why a latch was not taken.
#[derive(Debug)]
pub(crate) enum LatchError {
    /// The wait's deadline passed (the latch holder is named).
    TimedOut { holder: ConnectorId },
    /// A wait without a deadline saw the latch unchanged for `LATCH_STUCK`.
    Stuck(Stuck),
    /// Cleaning up a dead latch holder failed.
    Cleanup(CleanupError),
    /// The region is damaged.
    Corrupt(CorruptError),
}

impl From<CorruptError> for LatchError {
    fn from(e: CorruptError) -> Self {
        LatchError::Corrupt(e)
    }
}

/// An entry latched by connector `as_id`. The latch is dropped only through
/// one of the methods below (a process killed holding it leaves it to the
/// cleanup of `as_id`), each of which publishes the new interest mask.
#[must_use = "an entry latch must be dropped with grant, give_up, wait or unlatch_unchanged"]
pub(crate) struct Latched<'r> {
    pub word: &'r AtomicU64,
    pub entry: EntryIndex,
    /// The connectors the word named when it was latched (a bit set).
    pub named: u64,
    /// The word's epoch when it was latched: a change while latched is a
    /// [`word::poke`] (holdings changed outside the latch).
    pub epoch: u64,
    /// The connector in whose name it is latched.
    pub me: ConnectorId,
}

impl Latched<'_> {
    /// Drop the latch publishing `mask` (see [`word::unlatch_checked`]): if
    /// a request changed the holdings outside the latch meanwhile (a poke),
    /// the mask is healed first (bits of connectors with nothing held on the
    /// entry dropped, `me`'s kept as computed) and every waiter is woken.
    fn unlatch(&self, region: &Region, mask: u32, change: Change) -> u64 {
        let (entry, me) = (self.entry, self.me);
        word::unlatch_checked(self.word, Some(self.epoch), mask, change, |m| {
            (m as u64 & heal(region, entry, m as u64, me)) as u32
        })
    }
}

/// Latch `entry` as connector `as_id`, waiting for a live latch holder.
pub(crate) fn latch<'r>(
    region: &'r Region,
    entry: EntryIndex,
    as_id: ConnectorId,
    how: &mut LatchWait,
) -> Result<Latched<'r>, LatchError> {
    let word = region.word(entry)?;
    let latched = |named, epoch| Latched {
        word,
        entry,
        named,
        epoch,
        me: as_id,
    };
    let mut slice = FIRST_SLICE;
    // The busy word (waiters bit aside) and since when it has not changed.
    let mut unchanged: Option<(u64, Instant)> = None;
    loop {
        let (holder, seen) = match word::try_latch(word, as_id) {
            Latch::Latched { named, epoch } => {
                trace!("latched {entry} as {as_id}, named {named:#x}");
                return Ok(latched(named, epoch));
            }
            Latch::Busy { holder, seen } => (region.check_member(holder)?, seen),
        };
        if how.steal & word::bit(holder) != 0 {
            // Held in the name of a dead member whose cleanup we run: by the
            // member itself or by one of its dead cleaners (never by us: a walk
            // drops each latch before the next). Its decision is abandoned;
            // while mixed and latched only the waiter bits can change, so the
            // mask seen is the entry's interest.
            return Ok(latched(seen.mask() as u64, seen.epoch()));
        }
        if holder == as_id {
            if let Some(own) = how.own {
                match own.alone(|| own_latch_is_stale(region, word, as_id, own.generation())) {
                    Some(OwnLatch::Stale(mask, epoch)) => {
                        trace!("took over the stale latch of {entry} in our own name {as_id}");
                        return Ok(latched(mask as u64, epoch));
                    }
                    Some(OwnLatch::Changed) => continue,
                    // A sibling's, or a cleaner's: waited for.
                    Some(OwnLatch::NotStale) | None => {}
                }
            }
        }
        if word::spin_for_change(word, seen.0, crate::sync::SPINS) {
            continue;
        }
        // A latch held in our own name is a sibling thread's (a process stops
        // or dies as a whole): it is dropped in a moment, so it is waited for
        // whatever the deadline. (A request that gave up on it with a record
        // that was HELD a moment ago could leave the sibling keeping our bit
        // for nothing.)
        let deadline = how.deadline.filter(|_| holder != as_id);
        if deadline.is_some_and(|d| crate::sync::now() >= d) {
            trace!("latch {entry} timed out (held by {holder})");
            return Err(LatchError::TimedOut { holder });
        }
        let key = seen.0 & !word::WAITER_BITS;
        match unchanged {
            Some((k, since)) if k == key => {
                if deadline.is_none() && crate::sync::since(since) >= LATCH_STUCK {
                    return Err(LatchError::Stuck(Stuck::Latch {
                        holder,
                        entry,
                        secs: LATCH_STUCK.as_secs(),
                    }));
                }
            }
            _ => unchanged = Some((key, crate::sync::now())),
        }
        if let Some(high) = word::announce_latch_waiter(word, seen) {
            trace!("sleep on latch of {entry} held by {holder}");
            let left = deadline.map_or(slice, |d| d.saturating_duration_since(crate::sync::now()));
            word::sleep_latch(word, high, slice.min(left));
        }
        if word.load(Ordering::Relaxed) == seen.0 | word::LATCH_WAITERS {
            if latch_is_stale(region, word, holder)? {
                // Nobody can ever drop it: take it over (the CAS fails if the
                // word changed meanwhile; then look again).
                let cur = word.load(Ordering::Acquire);
                let w = word::Word(cur);
                if w.is_mixed() && w.holder() == Some(holder) {
                    let new = (cur & !word::HOLDER_BITS) | word::holder_field(as_id);
                    if word
                        .compare_exchange(cur, new, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                    {
                        return Ok(latched(w.mask() as u64, w.epoch()));
                    }
                }
                continue;
            }
            (how.on_stuck)(holder).map_err(LatchError::Cleanup)?;
            slice = (slice * 2).min(MAX_SLICE);
        }
    }
}

/// What a latch in the caller's own name is, looked at alone.
enum OwnLatch {
    /// Nobody's: taken over, with this interest mask and epoch.
    Stale(u32, u64),
    /// The word is no longer latched in our name: look again.
    Changed,
    /// Maybe a cleaner's (our connection is no longer ours): waited for.
    NotStale,
}

/// Looked at while no other thread of our process is registered
/// ([`OwnLatchesGuard::alone`]): is the latch in our name (`as_id`) stale?
/// Besides our threads, only a cleaner latches in our name, after it moved
/// our slot from our (state, generation) to CLEANING (a SIGKILLed process's
/// threads may run on for a moment while it is cleaned up). So a latch seen
/// before our slot is seen still ours (the latch's CAS would have made the
/// CLEANING visible) is nobody's. While mixed and latched only the waiter
/// bits of the word can change, so the mask seen is the entry's interest.
fn own_latch_is_stale(
    region: &Region,
    word: &AtomicU64,
    as_id: ConnectorId,
    generation: u32,
) -> OwnLatch {
    // A compare-and-swap of the word with itself reads its latest value (a
    // plain load may return an older one): the latch is there now.
    let cur = word.load(Ordering::Acquire);
    let w = word::Word(cur);
    if !(w.is_mixed() && w.holder() == Some(as_id))
        || word
            .compare_exchange(cur, cur, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
    {
        return OwnLatch::Changed;
    }
    match connector::load_state(region, as_id) {
        Ok(st)
            if st.generation == generation
                && matches!(st.state, MemberState::Active | MemberState::Recovering) =>
        {
            OwnLatch::Stale(w.mask(), w.epoch())
        }
        _ => OwnLatch::NotStale,
    }
}

/// Is the latch held in `holder`'s name stale? A latch in the name of a
/// connector that is free or failed-persistent can never be dropped by
/// anyone: only a connected member latches in its own name, and a cleaner in
/// the name of the member it cleans, which stays CLEANING until every entry
/// is settled (a state a crash cannot leave behind, since a release never
/// frees the record that covers its latch; only damage can). Seen with the
/// state word unchanged around the reading of the lock word (a reconnect
/// changes the generation), the latch is taken over by whoever finds it.
fn latch_is_stale(
    region: &Region,
    word: &AtomicU64,
    holder: ConnectorId,
) -> Result<bool, CorruptError> {
    let before = connector::load_state(region, holder)?;
    if !matches!(
        before.state,
        MemberState::Free | MemberState::FailedPersistent
    ) {
        return Ok(false);
    }
    let w = word::load(word);
    let after = connector::load_state(region, holder)?;
    Ok(before == after && w.is_mixed() && w.holder() == Some(holder))
}

/// A request being decided on the resource-level path.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Request<'a> {
    pub resource: &'a Resource,
    pub mode: Mode,
    pub member: ConnectorId,
    /// The request's own (PENDING or URGENT) record slot.
    pub slot: u32,
    /// The token of the holder (thread) asking: the owner of its record
    /// blocks (`records::claim_block`).
    pub holder: u64,
    /// Its wait ticket (0: it has not waited yet; `records::take_wait_ticket`).
    pub ticket: u32,
    /// Its record is URGENT (rule 5; the request's own thread keeps this).
    pub urgent: bool,
    /// Its record was HELD before its failed fast CAS (every slow request's
    /// was), and it has not unlatched since: a decision made meanwhile may
    /// have counted that half-made record as a conflict (rule 2) and be
    /// waiting for it to go, so its first unlatch wakes holding waiters.
    pub half_made: bool,
}

/// The kind of global contention a granted request met on the latched path
/// (see "Contention" in the module docs). A request that met a real
/// conflict answers [`Decision::Conflict`] instead: IRLM contention.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Contention {
    /// Another member's interest in the word conflicts with the request's,
    /// but every holding of the same resource is in a compatible mode.
    Xes,
    /// Another member holds another resource hashed to the entry, with
    /// conflicting interest in the word (and nothing made it XES).
    False,
}

/// What the latched path decided.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Granted; `contention` says what global contention the request met.
    Grant { contention: Option<Contention> },
    /// The records that conflict (left in the caller's buffer): HELD records
    /// of the same resource in an incompatible mode, and URGENT requests
    /// for it in an incompatible mode that began to wait before this one.
    Conflict,
}

/// A look, unless it is the first unlatch of a request whose record was
/// half-made (see [`Request::half_made`]): then a holdings change, which
/// wakes the holding waiters that may wait for that record to go.
fn first_unlatch_change(req: &Request) -> Change {
    if req.half_made {
        Change::Holdings
    } else {
        Change::Look
    }
}

/// Does mode `to` admit a mode that `from` refuses (so a conversion from
/// `from` to `to` lets a waiter in)?
fn admits_more(to: Mode, from: Mode) -> bool {
    records::LockMode::ALL
        .iter()
        .any(|&m| to.lock_mode().compatible(m) && !from.lock_mode().compatible(m))
}

/// Iterate the set bits of a connector mask.
pub(crate) fn bits(mask: u64) -> impl Iterator<Item = ConnectorId> {
    (0..64u32)
        .filter(move |i| mask & (1u64 << i) != 0)
        .map(ConnectorId::new)
}

/// Does record `r` (another request's, on the entry) make `req` wait?
/// Rule 2: a HELD record always does when it conflicts. Rule 5: an URGENT
/// one does when it conflicts and is older (a request that has not waited
/// yet is younger than every urgent one).
fn blocks(r: &RecordView, req: &Request) -> bool {
    r.held || req.ticket == 0 || records::ticket_older(r.ticket, req.ticket)
}

impl<'r> Latched<'r> {
    /// Under the latch: does the request conflict with a HELD record of a
    /// named connector (other than its own record), or must it wait behind
    /// an older URGENT request (rule 5)? A conflict is always reported as one
    /// (rule 2: a HELD record may be half-made, which only makes the requester
    /// wait). The conflicting records are left in `conflicts` (cleared
    /// first); nothing is allocated unless a conflict is found.
    pub(crate) fn decide(
        &mut self,
        region: &Region,
        req: &Request,
        conflicts: &mut Vec<RecordView>,
    ) -> Result<Decision, CorruptError> {
        conflicts.clear();
        let (mut xes, mut false_contention) = (false, false);
        // Does the requesting holder (thread) already hold the resource
        // (another request of its own, granted, or the lock it converts)?
        // Then an urgent request waits for that holding, and must not make
        // this one wait for it in turn (rule 5). A *sibling's* holding does
        // not count: the sibling releases it whatever this thread waits for,
        // and counting it let siblings taking turns bypass an urgent request
        // forever (attack12).
        let mut member_holds = false;
        for c in bits(self.named) {
            let c = region.check_member(c)?;
            let mut any = false;
            records::for_each_interest_on(region, c, self.entry, |r| {
                any = true;
                if c == req.member {
                    // The member's records of other resources neither
                    // conflict nor count as global contention.
                    if r.resource != *req.resource {
                        return;
                    }
                    // Rule 7: a holder's own records never conflict with
                    // its requests (the lock it converts among them).
                    if r.slot.get() == req.slot
                        || records::slot_owner(region, c, r.slot.get()) == Some(req.holder)
                    {
                        member_holds |= r.held;
                        return;
                    }
                } else if r.held && (req.mode.is_exclusive() || r.mode.is_exclusive()) {
                    // Another member's interest conflicts in the word: the
                    // lock table alone would see contention here.
                    if r.resource != *req.resource {
                        false_contention = true;
                    } else if req.mode.compatible(r.mode) {
                        xes = true;
                    }
                }
                if r.resource == *req.resource && !req.mode.compatible(r.mode) && blocks(&r, req) {
                    conflicts.push(r);
                }
            })?;
            if !any {
                // Named without a held record: an interest left behind (a
                // thread that read a sibling's record in the instant between
                // its release and its free). Nothing is held: drop it.
                self.named &= !word::bit(c);
            }
        }
        if member_holds {
            conflicts.retain(|r| r.held);
        }
        Ok(if !conflicts.is_empty() {
            Decision::Conflict
        } else if xes {
            Decision::Grant {
                contention: Some(Contention::Xes),
            }
        } else {
            Decision::Grant {
                contention: false_contention.then_some(Contention::False),
            }
        })
    }

    /// Under the latch, after a conflict: the request has been bypassed too
    /// often and becomes URGENT (rule 5): its record keeps its member's bit
    /// (the entry stays mixed, so no fast path bypasses it) and later
    /// incompatible requests for its resource wait behind it.
    pub(crate) fn make_urgent(&self, region: &Region, req: &Request) -> Result<(), CorruptError> {
        records::tag(region, req.member, req.slot)?
            .store(TAG_URGENT | self.entry.get(), Ordering::Release);
        Ok(())
    }

    /// The mask with `member`'s bit recomputed from its HELD records on the
    /// entry other than `except` (rule 3).
    fn mask_recomputed(&self, region: &Region, member: ConnectorId, except: Option<u32>) -> u32 {
        let bit = word::bit(member);
        let mask = if records::holds_other_on(region, member, self.entry, except) {
            self.named | bit
        } else {
            self.named & !bit
        };
        mask as u32
    }

    /// Grant the request: its record becomes HELD, then the latch is dropped
    /// with the member's bit set.
    pub(crate) fn grant(self, region: &Region, req: &Request) -> Result<(), CorruptError> {
        records::tag(region, req.member, req.slot)?
            .store(TAG_HELD | self.entry.get(), Ordering::Release);
        crate::crash::point("slow.granted_before_unlatch");
        // A grant frees nothing: holding waiters sleep on (unless one waits
        // for our half-made record, which is now a real holding: it wakes
        // and sleeps again).
        self.unlatch(
            region,
            (self.named | word::bit(req.member)) as u32,
            first_unlatch_change(req),
        );
        Ok(())
    }

    /// Grant a conversion (rule 8): the holder's HELD record `converted`
    /// takes the request's mode in place (the lock keeps its slot and its
    /// id), then the request's own record is freed (the converted one still
    /// covers the member's bit and the latch) and the latch dropped with the
    /// member's bit set. A conversion that admits a mode the old one refused
    /// (a demotion: X to S, SIX to IX) frees something: the unlatch wakes
    /// the holding waiters, as does the end of an URGENT request.
    pub(crate) fn grant_conversion(
        self,
        region: &Region,
        req: &Request,
        converted: u32,
        from: Mode,
    ) -> Result<(), CorruptError> {
        // (An error leaves nothing latched: the caller frees the request's
        // record.)
        let tag = match records::set_mode(region, req.member, converted, req.mode)
            .and_then(|()| records::tag(region, req.member, req.slot))
        {
            Ok(t) => t,
            Err(e) => {
                self.unlatch_unchanged(region);
                return Err(e);
            }
        };
        crate::crash::point("convert.mode_written");
        tag.store(TAG_FREE, Ordering::Release);
        let change = if req.urgent || admits_more(req.mode, from) {
            Change::Holdings
        } else {
            first_unlatch_change(req)
        };
        self.unlatch(region, (self.named | word::bit(req.member)) as u32, change);
        Ok(())
    }

    /// The request is not granted and will not wait: drop the latch with the
    /// member's bit recomputed, then free its PENDING record.
    pub(crate) fn give_up(self, region: &Region, req: &Request) -> Result<(), CorruptError> {
        // Requests may wait behind an URGENT one (rule 5): its end wakes them.
        let change = self.end_urgency(region, req)?;
        let mask = self.mask_recomputed(region, req.member, Some(req.slot));
        let (word, entry) = (self.word, self.entry);
        self.unlatch(region, mask, change);
        if mask as u64 & word::bit(req.member) != 0 {
            recheck_own_bit(region, word, entry, req.member, req.slot);
        }
        records::tag(region, req.member, req.slot)?.store(TAG_FREE, Ordering::Release);
        Ok(())
    }

    /// Drop the latch to wait or to look elsewhere (the request's record
    /// stays, the member's bit recomputed: kept for an URGENT record; a look:
    /// holding waiters are not woken); the request will latch again. Returns
    /// the word as this unlatch left it: any later change is someone else's,
    /// which a waiter announces itself against
    /// (`word::announce_holding_waiter`).
    pub(crate) fn step_out(self, region: &Region, req: &Request) -> u64 {
        let mask = self.mask_recomputed(region, req.member, None);
        self.unlatch(region, mask, first_unlatch_change(req))
    }

    /// Drop the latch as a request that stops waiting (out of time) and will
    /// free its record without latching again: an URGENT record turns
    /// PENDING first, the member's bit is recomputed without it, and, since
    /// requests may have been waiting behind it, the unlatch wakes holding
    /// waiters. (A plain waiter's unlatch is a look: making it a holdings
    /// change to clear the holding-waiter bit it may have set made tries
    /// waiting for a cleanup wake each other round and round, attack13; so
    /// the bit may outlive the last sleeper, and the next release makes one
    /// futex call with nobody asleep.)
    pub(crate) fn step_out_for_good(
        self,
        region: &Region,
        req: &Request,
    ) -> Result<u64, CorruptError> {
        let change = self.end_urgency(region, req)?;
        let mask = self.mask_recomputed(region, req.member, Some(req.slot));
        Ok(self.unlatch(region, mask, change))
    }

    /// An URGENT request that stops waiting turns PENDING under the latch;
    /// the unlatch must then wake the holding waiters (some may wait behind
    /// it). Returns the kind of change that unlatch makes.
    fn end_urgency(&self, region: &Region, req: &Request) -> Result<Change, CorruptError> {
        if !req.urgent {
            return Ok(first_unlatch_change(req));
        }
        records::tag(region, req.member, req.slot)?
            .store(TAG_PENDING | self.entry.get(), Ordering::Release);
        Ok(Change::Holdings)
    }

    /// Drop the latch publishing the mask as it was latched (nothing decided:
    /// an error on a damaged region).
    pub(crate) fn unlatch_unchanged(self, region: &Region) {
        self.unlatch(region, self.named as u32, Change::Look);
    }
}

/// Release record `slot` of `member` on `entry` on the latched path (the fast
/// release CAS failed: the entry is mixed, or a second holding of the member).
pub(crate) fn release(
    region: &Region,
    member: ConnectorId,
    slot: u32,
    entry: EntryIndex,
    how: &mut LatchWait,
) -> Result<(), LatchError> {
    let tag = records::tag(region, member, slot)?;
    // Being released: no longer counted as held by anyone; it still covers
    // the word and the latch until it is freed.
    tag.store(TAG_PENDING | entry.get(), Ordering::Release);
    // If the latch cannot be had (a damaged word, a stopped latch holder),
    // the record stays PENDING: while it was, another request may have been
    // granted the resource, so it must never become HELD again. The next
    // decision on the entry drops the member's bit if nothing else is held.
    let l = latch(region, entry, member, how)?;
    crate::crash::point("slow_release.latched");
    let bit = word::bit(member);
    let named = l.named & heal(region, entry, l.named, member);
    // The (PENDING) record covers the latch until the unlatch, whatever the
    // member's other records on the entry are (a sibling's HELD record may be
    // a half-made request that gives up without ever latching).
    let mask = if records::holds_other_on(region, member, entry, Some(slot)) {
        named | bit
    } else {
        named & !bit
    };
    l.unlatch(region, mask as u32, Change::Holdings);
    crate::crash::point("slow_release.after_unlatch");
    if mask & bit != 0 {
        recheck_own_bit(region, l.word, entry, member, slot);
    }
    tag.store(TAG_FREE, Ordering::Release);
    Ok(())
}

/// The member's bit was kept for its other held records on the entry; if
/// they are gone now (a sibling's half-made request that gave up without
/// latching: its latch wait timed out), latch once more and recompute it, so
/// the bit is not left behind. `slot` is the caller's own (PENDING) record,
/// which covers the latch. A latch that cannot be had at once is left alone
/// (its holder, or the next decision on the entry, drops the interest).
fn recheck_own_bit(
    region: &Region,
    word: &AtomicU64,
    entry: EntryIndex,
    member: ConnectorId,
    slot: u32,
) {
    if records::holds_other_on(region, member, entry, Some(slot)) {
        return;
    }
    latch_or_poke(region, word, entry, member, |l| {
        let mask = l.mask_recomputed(region, member, Some(slot));
        l.unlatch(region, mask, Change::Look);
    });
}

/// A request whose record must go without the latch (its latch wait timed
/// out, or an error) while it is URGENT or still half-made: the record turns
/// PENDING, then one attempt at the latch recomputes the member's bit and
/// wakes the holding waiters that may wait behind it or for it. If the latch
/// cannot be had at once, its holder is poked ([`latch_or_poke`]): its
/// unlatch heals the mask and wakes them. The caller frees the record
/// afterwards.
pub(crate) fn abandon_unlatched(
    region: &Region,
    member: ConnectorId,
    slot: u32,
    entry: EntryIndex,
) {
    let Ok(tag) = records::tag(region, member, slot) else {
        return;
    };
    tag.store(TAG_PENDING | entry.get(), Ordering::Release);
    let Ok(word) = region.word(entry) else {
        return;
    };
    latch_or_poke(region, word, entry, member, |l| {
        let mask = l.mask_recomputed(region, member, Some(slot));
        l.unlatch(region, mask, Change::Holdings);
    });
}

/// How often [`latch_or_poke`] tries before it leaves the entry to the next
/// latched operation (each try either latches or finds the latch taken and
/// pokes it: failing all of them needs the latch to change hands that often).
const POKE_TRIES: u32 = 64;

/// Run `f` under the latch of `entry` if it can be had at once; if it is
/// busy, poke the latch holder instead ([`word::poke`]): its unlatch then
/// rechecks the interest (the bit `f` would have recomputed) and wakes every
/// waiter. A waiter that counted a record this caller frees without the
/// latch is thus woken either way, and no bit is left behind at rest.
fn latch_or_poke(
    region: &Region,
    word: &AtomicU64,
    entry: EntryIndex,
    member: ConnectorId,
    f: impl FnOnce(&Latched<'_>),
) {
    for _ in 0..POKE_TRIES {
        if let Some(l) = latch_at_once(region, entry, member) {
            f(&l);
            return;
        }
        if word::poke(word) == word::Poke::Poked {
            return;
        }
    }
}

/// One attempt at the latch of `entry` as `member`, waiting for nobody
/// (except a sibling thread's latch, which is always waited for).
fn latch_at_once(region: &Region, entry: EntryIndex, member: ConnectorId) -> Option<Latched<'_>> {
    let mut on_stuck = |_: ConnectorId| Ok(());
    let mut how = LatchWait {
        deadline: Some(crate::sync::now()),
        steal: 0,
        on_stuck: &mut on_stuck,
        own: None,
    };
    latch(region, entry, member, &mut how).ok()
}

/// Under a latch: the connectors of `named` (other than `me`, whose bit the
/// caller computes) that have no HELD record on `entry`, and so hold nothing
/// there, are dropped from the mask. A bit can be left behind only by a
/// thread that kept its member's bit for a sibling's half-made request which
/// then gave up without latching (its latch wait timed out): every latched
/// operation drops such interests. Returns the mask of the bits to keep.
fn heal(region: &Region, entry: EntryIndex, named: u64, me: ConnectorId) -> u64 {
    let mut keep = u64::MAX;
    for c in bits(named) {
        if c != me
            && region.check_member(c).is_ok()
            && !records::holds_other_on(region, c, entry, None)
        {
            keep &= !word::bit(c);
        }
    }
    keep
}

/// Release every record of `member` on `entry` (held or pending; `slots` as
/// `(entry, slot, tag)` from `records::slots_by_entry`): one latch, the
/// member's bit cleared, the latch dropped, then the tags freed. Returns how
/// many were held. No other thread of the member may use the entry meanwhile.
pub(crate) fn release_entry(
    region: &Region,
    member: ConnectorId,
    entry: EntryIndex,
    slots: &[(EntryIndex, u32, u32)],
    how: &mut LatchWait,
) -> Result<usize, LatchError> {
    let l = latch(region, entry, member, how)?;
    let named = l.named & heal(region, entry, l.named, member);
    l.unlatch(
        region,
        (named & !word::bit(member)) as u32,
        Change::Holdings,
    );
    let tags = region.tags(member)?;
    let mut held = 0;
    for &(_, slot, tag) in slots {
        if let Some(t) = tags.get(slot as usize) {
            t.store(TAG_FREE, Ordering::Release);
        }
        held += (records::tag_state(tag) == TAG_HELD) as usize;
    }
    Ok(held)
}

/// What [`settle_dead`] did on one entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Settled {
    /// Non-modify held locks released.
    pub released: usize,
    /// Modify locks kept as retained.
    pub retained: usize,
    /// Pending requests and records not named by the word, freed.
    pub discarded: usize,
}

/// Settle every record of dead member `c` on `entry` (see the module docs).
/// The caller holds `c`'s cleanup claim (`how.steal` has `c`'s bit, so it
/// takes over a latch held in `c`'s name) and has read `recs` from `c`'s
/// area; `c` being dead, only its cleaners change them.
pub(crate) fn settle_dead(
    region: &Region,
    c: ConnectorId,
    entry: EntryIndex,
    recs: &[RecordView],
    how: &mut LatchWait,
) -> Result<Settled, LatchError> {
    let tags = region.tags(c)?;
    debug_assert!(how.steal & word::bit(c) != 0);
    let mut l = latch(region, entry, c, how)?;
    crate::crash::point("cleanup.entry_latched");
    l.named &= heal(region, entry, l.named, c);
    let c_named = l.named & word::bit(c) != 0;
    let mut out = Settled::default();
    let mut free = Vec::new();
    for r in recs {
        if !r.held || !c_named {
            out.discarded += 1;
            free.push(r.slot.get());
        } else if !r.mode.is_modify() {
            out.released += 1;
            free.push(r.slot.get());
        } else {
            out.retained += 1;
        }
    }
    let free_tags = |slots: &[u32]| {
        for &s in slots {
            if let Some(t) = tags.get(s as usize) {
                t.store(TAG_FREE, Ordering::Release);
            }
        }
    };
    if out.retained > 0 {
        // The retained records cover the latch: free the others before the
        // unlatch, so waiters never see a record that is no longer held.
        free_tags(&free);
        l.unlatch(region, (l.named | word::bit(c)) as u32, Change::Holdings);
        crate::crash::point("cleanup.entry_unlatched");
    } else {
        l.unlatch(region, (l.named & !word::bit(c)) as u32, Change::Holdings);
        crate::crash::point("cleanup.entry_unlatched");
        free_tags(&free);
    }
    Ok(out)
}
