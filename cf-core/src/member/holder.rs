//! Lock requests of one thread of a member: the uncontended fast path on the
//! lock word, and the policy around the latched entry protocol of
//! `lock/entry.rs` (which holds the invariants and crash windows): when to
//! wait, when to answer, and cleaning up a dead holder met on the way.
//!
//! * **Fast path**: write the record (HELD), one CAS on the word (the share
//!   CAS for a mode with share interest, IS and S, the exclusive one for the
//!   others: `Mode::is_exclusive`); release: mark the record PENDING (being
//!   released), one CAS back, then free the record. No system call, no
//!   shared counter.
//! * **Slow path**: a request one CAS cannot settle turns its record PENDING
//!   and latches the entry; the decision is `entry::Latched::decide`, by the
//!   modes' compatibility table (so compatible modes with exclusive interest,
//!   IX beside IX, are granted there).
//!   A conflict (a record in a mode incompatible with the request's) with a
//!   modify record, in any mode, of a member that is failed-persistent,
//!   recovering or being cleaned up (its named modify records are retained,
//!   `entry.rs`) is answered "retained by M" at once. A conflict with a live
//!   holder waits (a waiting `lock`) or is answered "contention" (a `try`),
//!   after checking that the holders still live: a dead one is cleaned up
//!   first, by this request if no one else is at it.
//! * **Deadlines**: a `try` answers within [`TRY_WAIT`] and a `lock` within
//!   its timeout, whatever latches or cleanups are in progress elsewhere; no
//!   step of a request waits for another process except on the lock word,
//!   under that deadline.

use crate::connector::{self, MemberState};
use crate::deadlock::{self, Waiter};
use crate::error::{AcquireError, CleanupError, CorruptError, HolderError, UnlockError};
use crate::ids::{ConnectorId, EntryIndex, SlotIndex};
use crate::lock::entry::{self, Contention, Decision, LatchError, LatchWait, Request};
use crate::lock::records::{self, Mode, RecordView, Resource, TAG_FREE, TAG_HELD, TAG_PENDING};
use crate::lock::{service, word};
use crate::member::connection::Connection;
use crate::recovery::{self, CleanupOutcome};
use crate::shm::layout::MAX_RESOURCE;
use crate::shm::region::Region;
use crate::shm::slots::RecordBody;
use crate::sync::{trace, AtomicU32, AtomicU64, Ordering};
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest a try request waits for anything (an entry's latch, normally held
/// for microseconds; another process's cleanup of a dead holder). Longer
/// means a stopped process or a damaged lock word: it then answers
/// "contention", naming the holder, instead of hanging.
pub const TRY_WAIT: Duration = Duration::from_secs(1);

/// How long a `lock` whose timeout the clock cannot add (`Duration::MAX`)
/// waits: a century.
const NO_END: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A lock held by a [`Holder`]: pass it back to [`Holder::unlock`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockId {
    /// The record slot (in the member's area) that holds the lock.
    pub slot: SlotIndex,
    /// The lock table entry the resource hashes to.
    pub entry: EntryIndex,
    /// The mode it was granted in.
    pub mode: Mode,
}

/// A connector named in an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HolderInfo {
    /// Its connector.
    pub id: ConnectorId,
    /// Its member name (as read from the region: escape it before printing).
    pub name: String,
    /// Its process, as recorded in its slot (0 if none).
    pub pid: u32,
    /// The mode that holder holds the resource in.
    pub mode: Mode,
}

/// The answer to a try request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TryOutcome {
    /// The lock is held: release it with [`Holder::unlock`].
    Granted(LockId),
    /// Live holders of the same resource in an incompatible mode.
    Contention(Vec<HolderInfo>),
    /// The resource is retained by a failed member until its recovery ends.
    Retained(HolderInfo),
}

/// Why a waiting request ([`Holder::lock`]) was not granted: one of the two
/// answers other than "granted", or an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WaitError {
    /// Live holders kept the resource past the timeout (they are named).
    #[error("timed out; held by {}", names(.0))]
    Timeout(Vec<HolderInfo>),
    /// A failed member retains the resource until its recovery ends.
    #[error("retained by {} (failed member, recovery pending)", .0.name)]
    Retained(HolderInfo),
    /// The request was a deadlock victim (`deadlock.rs`): it waited in a
    /// cycle of requests each waiting for the next, and the detector chose
    /// it to break the cycle. It gave up only its own request: the caller
    /// backs out and releases its locks, like any abort.
    #[error("deadlock victim; cycle: {}", names(.cycle))]
    Deadlock {
        /// The members in the cycle from the victim's on, each with the mode
        /// in which it holds what the one before it waits for (the victim
        /// holds what the last waits for); at most `deadlock::CYCLE_KEPT`.
        cycle: Vec<HolderInfo>,
    },
    /// The request could not be answered.
    #[error(transparent)]
    Failed(#[from] AcquireError),
}

fn names(h: &[HolderInfo]) -> String {
    h.iter()
        .map(|h| h.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// One thread's handle on a member: owns blocks of record slots so the fast
/// path allocates without shared atomics. `Send`, not `Sync`: one per thread.
pub struct Holder {
    m: Arc<Connection>,
    /// The member's record tags and bodies and the lock table, resolved once.
    area: Area,
    token: u64,
    blocks: Vec<u32>,
    free: Vec<u32>,
    requests: u64,
    contention: u64,
    false_contention: u64,
    /// The conflicting records of the request being decided (kept between
    /// requests, so waiting allocates nothing once it has grown).
    conflicts: Vec<RecordView>,
    /// The request being decided slept (a wait, not a synchronous answer).
    slept: bool,
    /// This holder's wait record (`deadlock.rs`).
    wait: Waiter,
    /// The request that just ended was a deadlock victim (`lock` answers
    /// `WaitError::Deadlock` instead of a timeout).
    victim: Option<deadlock::Told>,
}

/// Where a request on the latched path lives: its own record slot, its
/// lock table entry, and for a conversion the slot of the lock it converts
/// with that lock's mode (`lock/entry.rs` rule 8).
#[derive(Clone, Copy)]
struct Place {
    slot: u32,
    entry: EntryIndex,
    converts: Option<(u32, Mode)>,
}

/// Where a holder's hot path reads and writes: slices of the region, which
/// the holder's connection keeps mapped as long as the holder lives.
struct Area {
    tags: NonNull<[AtomicU32]>,
    bodies: NonNull<[RecordBody]>,
    table: NonNull<[AtomicU64]>,
}

// SAFETY: the slices are of atomics (Sync) in the region, which the holder's
// `Arc<Connection>` keeps alive; moving the holder to another thread moves
// nothing they point to.
unsafe impl Send for Area {}

impl std::fmt::Debug for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Holder")
            .field("member", &self.m.id)
            .field("blocks", &self.blocks)
            .finish()
    }
}

impl Holder {
    pub(crate) fn new(m: Arc<Connection>) -> Result<Holder, HolderError> {
        let token = m.next_holder_token().ok_or(HolderError::TokensExhausted)?;
        let region = &*m.region;
        let area = Area {
            tags: NonNull::from(region.tags(m.id)?),
            bodies: NonNull::from(region.bodies(m.id)?),
            table: NonNull::from(region.lock_table()),
        };
        let id = m.id;
        let mut h = Holder {
            m,
            area,
            token,
            blocks: Vec::new(),
            free: Vec::new(),
            requests: 0,
            contention: 0,
            false_contention: 0,
            conflicts: Vec::new(),
            slept: false,
            wait: Waiter::detached(id, token),
            victim: None,
        };
        if !h.grow() {
            return Err(HolderError::RecordsFull(h.m.region.records_per_member()));
        }
        h.wait.attach(&h.m.region, h.blocks[0]);
        Ok(h)
    }

    /// The holder's resolved slices: its member's tags and bodies, the lock table.
    #[inline]
    fn area(&self) -> (&[AtomicU32], &[RecordBody], &[AtomicU64]) {
        // SAFETY: the pointers were taken from the region this holder's
        // connection (`self.m`) owns and keeps alive for as long as `self`;
        // the slices are of atomics, so shared references are sound while
        // other threads and processes write them; the lifetimes are tied to
        // `&self`.
        unsafe {
            (
                self.area.tags.as_ref(),
                self.area.bodies.as_ref(),
                self.area.table.as_ref(),
            )
        }
    }

    /// Claim one more block of record slots; `false` if none is free.
    fn grow(&mut self) -> bool {
        let Some(b) = records::claim_block(&self.m.region, self.m.id, self.token) else {
            return false;
        };
        self.blocks.push(b);
        let first = b * crate::shm::layout::BLOCK_SLOTS;
        self.free
            .extend((first..first + crate::shm::layout::BLOCK_SLOTS).rev());
        true
    }

    #[inline]
    fn alloc_slot(&mut self) -> Result<u32, AcquireError> {
        match self.free.pop() {
            Some(s) => Ok(s),
            None => {
                let full = AcquireError::RecordsFull(self.m.region.records_per_member());
                if !self.grow() {
                    return Err(full);
                }
                self.free.pop().ok_or(full)
            }
        }
    }

    /// Publish the counters into this holder's first block (plain stores: only
    /// this holder writes them). The fast path does it every 64 requests.
    #[inline]
    fn publish_counters(&self) {
        let Some(b) = records::block(&self.m.region, self.m.id, self.blocks[0]) else {
            return;
        };
        b.requests.store(self.requests, Ordering::Relaxed);
        b.contention.store(self.contention, Ordering::Relaxed);
        b.false_contention
            .store(self.false_contention, Ordering::Relaxed);
    }

    /// The member this holder belongs to.
    pub fn member_id(&self) -> ConnectorId {
        self.m.id
    }

    /// Count `n` transactions committed by this member (see `Member::add_committed`).
    pub fn add_committed(&self, n: u64) {
        self.m.add_committed(n);
    }

    /// Ask for `resource` in `mode` once: granted, contention (naming the
    /// holders) or retained (naming the retaining member). Never waits for a
    /// live holder; a dead one is cleaned up first. Answers within [`TRY_WAIT`].
    #[inline]
    pub fn try_lock(&mut self, resource: &[u8], mode: Mode) -> Result<TryOutcome, AcquireError> {
        self.acquire(resource, mode, None)
    }

    /// Ask for `resource` in `mode`, waiting up to `timeout` for live holders
    /// (`Duration::MAX`: no end).
    #[inline]
    pub fn lock(
        &mut self,
        resource: &[u8],
        mode: Mode,
        timeout: Duration,
    ) -> Result<LockId, WaitError> {
        let out = self.acquire(resource, mode, Some(timeout))?;
        self.wait_answer(out)
    }

    /// A waiting request's answer: a conflict out of time is a timeout,
    /// unless the request was a deadlock victim.
    fn wait_answer(&mut self, out: TryOutcome) -> Result<LockId, WaitError> {
        match out {
            TryOutcome::Granted(id) => Ok(id),
            TryOutcome::Contention(h) => Err(match self.victim.take() {
                Some(told) => self.deadlock_answer(told),
                None => WaitError::Timeout(h),
            }),
            TryOutcome::Retained(h) => Err(WaitError::Retained(h)),
        }
    }

    /// The uncontended path: the record from the caller's bytes, then one CAS.
    #[inline]
    fn acquire(
        &mut self,
        resource: &[u8],
        mode: Mode,
        timeout: Option<Duration>,
    ) -> Result<TryOutcome, AcquireError> {
        if resource.is_empty() || resource.len() > MAX_RESOURCE {
            return Err(bad_resource(resource.len()));
        }
        // One request in SAMPLE_EVERY is timed (`lock/service.rs`).
        let t0 = (self.requests & (service::SAMPLE_EVERY - 1) == service::SAMPLE_EVERY - 1)
            .then(crate::sync::now);
        let slot = self.alloc_slot()?;
        let me = self.m.id;
        let (tags, bodies, table) = self.area();
        let (Some(body), Some(tag)) = (bodies.get(slot as usize), tags.get(slot as usize)) else {
            return Err(AcquireError::RecordsFull(tags.len() as u32));
        };
        let hash = records::write_body_and_hash(body, resource, mode);
        // The table's length is a power of two (checked when the region opened).
        let entry = EntryIndex::new((hash & (table.len() as u64 - 1)) as u32);
        let word = &table[entry.index()];
        tag.store(TAG_HELD | entry.get(), Ordering::Release);
        crate::crash::point("acquire.after_record");
        let fast = if mode.is_exclusive() {
            word::try_fast_exclusive(word, me)
        } else {
            word::try_fast_share(word, me)
        };
        self.requests += 1;
        trace!("acquire slot {slot} entry {entry} fast {fast}");
        if fast {
            crate::crash::point("acquire.after_word");
            // The fast path publishes its count every 64 requests (and the
            // slow path and dropping the holder always do): readers of the
            // counters see a live holder's count at most 63 requests late.
            if self.requests.is_multiple_of(64) {
                self.publish_counters();
            }
            if let Some(t0) = t0 {
                self.record_service(t0);
            }
            return Ok(TryOutcome::Granted(LockId {
                slot: SlotIndex::new(slot),
                entry,
                mode,
            }));
        }
        let at = Place {
            slot,
            entry,
            converts: None,
        };
        self.acquire_slow(resource, mode, at, timeout, t0)
    }

    /// Count the global contention a granted request met without a real
    /// conflict (`lock/entry.rs`, "Contention").
    fn count_global(&mut self, region: &Region, contention: Option<Contention>) {
        match contention {
            Some(Contention::False) => self.false_contention += 1,
            Some(Contention::Xes) => {
                if let Ok(c) = region.connector(self.m.id) {
                    c.xes_contention.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => {}
        }
    }

    /// Convert a lock this holder holds to `to` without releasing it:
    /// promotion (S to X, U to X, IX to SIX) or demotion (X to S), waiting
    /// up to `timeout` for live holders that conflict with the new mode
    /// (`lock/entry.rs` rule 8). The answers are those of [`Holder::lock`]:
    /// a conflict out of time, a retained lock or a deadlock leaves the lock
    /// held in its old mode. The lock keeps its id but for the mode, which
    /// the returned id carries; the modify flag is kept (a conversion may add
    /// it, never drop it). The holder's own other locks never conflict.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// use cf_core::{CreateOptions, LockMode, Member, Mode, Plex, Region};
    /// use std::{sync::Arc, time::Duration};
    /// let plex = Plex { dir: dir.path().into() };
    /// let region = Arc::new(Region::create(&plex, &CreateOptions::small_for_tests())?);
    /// let m = Member::connect(region, "SYSA")?;
    /// let mut h = m.holder()?;
    /// let s = h.lock(b"acct:1", Mode::Share, Duration::from_secs(1))?;
    /// let x = h.convert(s, Mode::modify(LockMode::X), Duration::from_secs(1))?;
    /// assert_eq!(x.mode, Mode::Modify);
    /// let back = h.convert(x, Mode::Share, Duration::from_secs(1))?;
    /// assert_eq!(back.mode, Mode::new(LockMode::S, true)); // modify is kept
    /// h.unlock(back)?;
    /// drop(h);
    /// m.disconnect()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn convert(
        &mut self,
        id: LockId,
        to: Mode,
        timeout: Duration,
    ) -> Result<LockId, WaitError> {
        let out = self.convert_once(id, to, Some(timeout))?;
        self.wait_answer(out)
    }

    /// Convert a held lock to `to` once, never waiting for a live holder:
    /// granted (the id with its new mode), contention or retained (the lock
    /// still held in its old mode). See [`Holder::convert`].
    pub fn try_convert(&mut self, id: LockId, to: Mode) -> Result<TryOutcome, AcquireError> {
        self.convert_once(id, to, None)
    }

    fn convert_once(
        &mut self,
        id: LockId,
        to: Mode,
        timeout: Option<Duration>,
    ) -> Result<TryOutcome, AcquireError> {
        let old = id.slot.get();
        let held = records::tag(&self.m.region, self.m.id, old)
            .map(|t| t.load(Ordering::Acquire))
            .ok();
        if !self.owns_slot(old) || held != Some(TAG_HELD | id.entry.get()) {
            return Err(AcquireError::NotHeld(id.slot));
        }
        let view = records::read_record(&self.m.region, self.m.id, old, TAG_HELD | id.entry.get())?;
        let to = Mode::new(to.lock_mode(), to.is_modify() || view.mode.is_modify());
        if to == view.mode {
            return Ok(TryOutcome::Granted(LockId { mode: to, ..id }));
        }
        let slot = self.alloc_slot()?;
        let (tags, bodies, _) = self.area();
        let (Some(body), Some(tag)) = (bodies.get(slot as usize), tags.get(slot as usize)) else {
            return Err(AcquireError::RecordsFull(tags.len() as u32));
        };
        let resource = view.resource.bytes();
        records::write_body_and_hash(body, &resource, to);
        tag.store(TAG_PENDING | id.entry.get(), Ordering::Release);
        self.requests += 1;
        let at = Place {
            slot,
            entry: id.entry,
            converts: Some((old, view.mode)),
        };
        self.acquire_slow(&resource, to, at, timeout, None)
    }

    /// Count a sampled request's service time since `t0` in this
    /// connection's histogram.
    #[cold]
    fn record_service(&self, t0: Instant) {
        let ns = u64::try_from(crate::sync::since(t0).as_nanos()).unwrap_or(u64::MAX);
        if let Ok(c) = self.m.region.connector(self.m.id) {
            c.service_ns[service::bucket(ns)].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The word could not be settled by one CAS: the latched path.
    #[cold]
    #[inline(never)]
    fn acquire_slow(
        &mut self,
        resource: &[u8],
        mode: Mode,
        at: Place,
        timeout: Option<Duration>,
        t0: Option<Instant>,
    ) -> Result<TryOutcome, AcquireError> {
        let Place {
            slot,
            entry,
            converts,
        } = at;
        let m = self.m.clone();
        self.slept = false;
        let tag = records::tag(&m.region, m.id, slot)?;
        tag.store(TAG_PENDING | entry.get(), Ordering::Release);
        let res = Resource::new(resource).ok_or(AcquireError::BadResource {
            len: resource.len(),
            max: MAX_RESOURCE,
        })?;
        // The clock is read only here: the fast path needs no deadline.
        let mut conflicts = std::mem::take(&mut self.conflicts);
        let out = self.slow_acquire(&res, mode, at, timeout, &mut conflicts);
        self.conflicts = conflicts;
        // The wait is over, whatever the answer (not ours to write if we
        // were cleaned up).
        if !matches!(out, Err(AcquireError::Disconnected)) {
            self.wait.clear(&m.region);
        }
        if converts.is_some() && matches!(out, Ok(TryOutcome::Granted(_))) {
            // Granted in place: the request's record was freed under the
            // latch (`Latched::grant_conversion`).
            self.free.push(slot);
        } else if !matches!(out, Ok(TryOutcome::Granted(_))) {
            // The record was freed by slow_acquire; an error may have left it
            // pending: free it (nothing is latched any more). Not if we were
            // cleaned up: the slot is no longer ours to write.
            if matches!(&out, Err(e) if !matches!(e, AcquireError::Disconnected)) {
                tag.store(TAG_FREE, Ordering::Release);
            }
            self.free.push(slot);
        }
        self.publish_counters();
        if let (Some(t0), Ok(_), false) = (t0, &out, self.slept) {
            self.record_service(t0);
        }
        out
    }

    #[cold]
    fn slow_acquire(
        &mut self,
        res: &Resource,
        mode: Mode,
        at: Place,
        timeout: Option<Duration>,
        conflicts: &mut Vec<RecordView>,
    ) -> Result<TryOutcome, AcquireError> {
        let Place {
            slot,
            entry,
            converts,
        } = at;
        let m = self.m.clone();
        let region = &*m.region;
        let me = m.id;
        // Registered until the last unlatch of this request (`OwnLatches`).
        let own = m.own_latches.enter();
        let word = region.word(entry)?;
        let tag = records::tag(region, me, slot)?;
        let mut req = Request {
            resource: res,
            mode,
            member: me,
            slot,
            holder: self.token,
            ticket: 0,
            urgent: false,
            // A conversion's record was never HELD (rule 8).
            half_made: converts.is_none(),
        };
        // Bounded bypass (`entry.rs` rule 5): how often the holdings changed
        // while we waited and we were still refused.
        let mut bypassed = 0u32;
        let mut woken_by_change = false;
        let wait_for_live = timeout.is_some();
        // A timeout past what the clock can say (`Duration::MAX`: none) is
        // a century: `now + timeout` would panic (attack14).
        let now = crate::sync::now();
        let deadline = now
            .checked_add(timeout.unwrap_or(TRY_WAIT))
            .unwrap_or_else(|| now + NO_END);
        let mut counted_contention = false;
        let mut slice = entry::FIRST_SLICE;
        // The last sleep passed a whole slice without the word changing:
        // check the holders' processes before waiting again.
        let mut stale = false;
        // Unlatched, an urgent or half-made record may have requests waiting
        // behind it or for it: they are woken.
        let free_record = |wakes: bool| {
            if wakes {
                entry::abandon_unlatched(region, me, slot, entry);
            }
            tag.store(TAG_FREE, Ordering::Release)
        };
        loop {
            if !self.m.still_connected()? {
                return Err(AcquireError::Disconnected);
            }
            let mut on_stuck = |x: ConnectorId| {
                recovery::try_clean(region, x, Some(me), 0, Some(deadline)).map(|_| ())
            };
            let mut how = LatchWait {
                deadline: Some(deadline),
                steal: 0,
                on_stuck: &mut on_stuck,
                own: Some(&own),
            };
            let mut l = match entry::latch(region, entry, me, &mut how) {
                Ok(l) => l,
                // (A wait with a deadline is never stuck: it times out.)
                Err(
                    LatchError::TimedOut { holder }
                    | LatchError::Stuck(crate::error::Stuck::Latch { holder, .. }),
                ) => {
                    free_record(req.urgent || req.half_made);
                    return Ok(TryOutcome::Contention(vec![holder_info(
                        region,
                        holder,
                        Mode::Exclusive,
                    )]));
                }
                Err(LatchError::Corrupt(e)) => {
                    free_record(req.urgent || req.half_made);
                    return Err(e.into());
                }
                Err(LatchError::Cleanup(e)) => {
                    free_record(req.urgent || req.half_made);
                    return Err(e.into());
                }
                Err(LatchError::Stuck(e)) => {
                    free_record(req.urgent || req.half_made);
                    return Err(CleanupError::Stuck(e).into());
                }
            };
            crate::crash::point("slow.latched");
            match l.decide(region, &req, conflicts) {
                Ok(Decision::Grant { contention }) => {
                    let granted = match converts {
                        Some((old, from)) => {
                            // The lock converted must still be ours, held
                            // (`Member::release_record` by slot, or damage,
                            // may have let it go while we waited): else its
                            // mode is not rewritten in a freed record, and
                            // our bit is recomputed without it.
                            let still =
                                records::tag(region, me, old).map(|t| t.load(Ordering::Acquire));
                            if still.ok() != Some(TAG_HELD | entry.get()) {
                                l.give_up(region, &req)?;
                                return Err(AcquireError::NotHeld(SlotIndex::new(old)));
                            }
                            l.grant_conversion(region, &req, old, from)?;
                            old
                        }
                        None => {
                            l.grant(region, &req)?;
                            slot
                        }
                    };
                    if !counted_contention {
                        self.count_global(region, contention);
                    }
                    return Ok(TryOutcome::Granted(LockId {
                        slot: SlotIndex::new(granted),
                        entry,
                        mode,
                    }));
                }
                Ok(Decision::Conflict) => {}
                Err(e) => {
                    l.unlatch_unchanged(region);
                    free_record(req.urgent || req.half_made);
                    return Err(e.into());
                }
            }
            if !counted_contention {
                counted_contention = true;
                self.contention += 1;
            }
            let conflicts: &[RecordView] = conflicts;
            let class = match classify(region, conflicts) {
                Ok(c) => c,
                Err(e) => {
                    l.unlatch_unchanged(region);
                    free_record(req.urgent || req.half_made);
                    return Err(e.into());
                }
            };
            trace!("conflict on {entry}: {} records", conflicts.len());
            if let Some(h) = class.retained {
                l.give_up(region, &req)?;
                if class.retained_cleaning {
                    // Its cleanup is under way, or its cleaner died: finish it
                    // if nobody else is at it (never waiting for another).
                    recovery::try_clean(region, h.id, Some(me), 0, Some(deadline))?;
                }
                if let Ok(c) = region.connector(me) {
                    c.retained_refusals.fetch_add(1, Ordering::Relaxed);
                }
                return Ok(TryOutcome::Retained(h));
            }
            if wait_for_live && self.wait.told(region) {
                // Deadlock detection (`deadlock.rs`): a victim gives up its
                // request, unless a member of its cycle died meanwhile (no
                // cycle through a dead member): then the flag is taken back
                // and the request waits on as it was (urgent if it was), its
                // look cleaning a dead holder up first. A dead holder outside
                // the cycle breaks nothing: the victim still backs out
                // (attack14: it waited on as long as that cleanup lasted).
                if self.wait.cycle_lost_a_member(region) {
                    self.wait.untell(region);
                    stale = true;
                } else {
                    // (Its unlatch wakes those behind an URGENT record.)
                    l.step_out_for_good(region, &req)?;
                    free_record(false);
                    self.victim = Some(self.wait.victim_answer(region));
                    return Ok(TryOutcome::Contention(dedup_holders(region, conflicts)));
                }
            }
            let out_of_time = crate::sync::now() >= deadline;
            if wait_for_live && !out_of_time {
                // The wait record says what we wait for (`deadlock.rs`).
                self.wait.waiting(region, slot, entry, conflicts);
                if req.ticket == 0 {
                    // First wait: the ticket orders us among urgent requests.
                    req.ticket = records::take_wait_ticket(region);
                    if let Err(e) = records::set_wait_ticket(region, me, slot, req.ticket) {
                        l.unlatch_unchanged(region);
                        free_record(req.urgent || req.half_made);
                        return Err(e.into());
                    }
                }
                bypassed += u32::from(std::mem::take(&mut woken_by_change));
                if bypassed == entry::BYPASS_LIMIT {
                    if let Err(e) = l.make_urgent(region, &req) {
                        l.unlatch_unchanged(region);
                        free_record(req.urgent || req.half_made);
                        return Err(e.into());
                    }
                    req.urgent = true;
                }
            }
            if stale || out_of_time || !wait_for_live {
                // Before answering or waiting on: are the holders alive?
                // (Without the latch: their cleanup needs it.)
                let left = if out_of_time || !wait_for_live {
                    let left = l.step_out_for_good(region, &req)?;
                    req.urgent = false;
                    left
                } else {
                    l.step_out(region, &req)
                };
                req.half_made = false;
                let dead = clean_dead(region, me, conflicts, deadline)?;
                if dead.changed {
                    // Cleaned up now: look again.
                    stale = false;
                    continue;
                }
                let waiting_for_cleanup = class.being_cleaned || dead.cleaning;
                if out_of_time || (!wait_for_live && !waiting_for_cleanup) {
                    free_record(req.urgent || req.half_made);
                    return Ok(TryOutcome::Contention(dedup_holders(region, conflicts)));
                }
                // Wait for the holdings to change from what our unlatch left
                // (a release, a cleanup's settle: a change since is not missed).
                let time_left = deadline.saturating_duration_since(crate::sync::now());
                self.slept = true;
                let told = self.wait.interrupt(region);
                stale = word::wait_for_holdings(word, left, 0, slice.min(time_left), told)
                    == word::HoldingsWait::SliceEnded;
                woken_by_change = !stale;
                slice = (slice * 2).min(entry::MAX_SLICE);
                continue;
            }
            // Wait: step out (a look, after the first: the other holding
            // waiters sleep on),
            // then wait for the holdings to change (spinning first: a hand-off
            // is usually over within the spin).
            trace!("wait on {entry}");
            let left = l.step_out(region, &req);
            req.half_made = false;
            let time_left = deadline.saturating_duration_since(crate::sync::now());
            self.slept = true;
            let told = self.wait.interrupt(region);
            let end =
                word::wait_for_holdings(word, left, crate::sync::SPINS, slice.min(time_left), told);
            stale = end == word::HoldingsWait::SliceEnded;
            woken_by_change = !stale;
            if stale {
                slice = (slice * 2).min(entry::MAX_SLICE);
            }
        }
    }

    /// Release a lock this holder took. A release that failed (a damaged
    /// region) leaves the lock being released; calling `unlock` again with the
    /// same id finishes it.
    #[inline]
    pub fn unlock(&mut self, id: LockId) -> Result<(), UnlockError> {
        let me = self.m.id;
        let slot = id.slot.get();
        if !self.owns_slot(slot) {
            return Err(UnlockError::NotHeld(id.slot));
        }
        let (tags, _, table) = self.area();
        let (Some(tag), Some(word)) = (tags.get(slot as usize), table.get(id.entry.index())) else {
            return Err(UnlockError::NotHeld(id.slot));
        };
        let now = tag.load(Ordering::Relaxed);
        if now == TAG_PENDING | id.entry.get() {
            // A release of ours that failed (its latch could not be had):
            // finish it on the latched path.
            if !self.m.still_connected()? {
                return Err(UnlockError::Disconnected);
            }
            self.m.release_slow(slot, id.entry)?;
            self.free.push(slot);
            return Ok(());
        }
        if now != TAG_HELD | id.entry.get() {
            return Err(UnlockError::NotHeld(id.slot));
        }
        if let Some(seen) = word::fast_release_possible(word, me, id.mode.is_exclusive()) {
            // The record turns PENDING first: the lock is being given up, and
            // no one (a sibling thread least of all) counts it as held any
            // more; it still covers the word until it is freed (`entry.rs`).
            tag.store(TAG_PENDING | id.entry.get(), Ordering::Release);
            crate::crash::point("release.marked");
            let fast = if id.mode.is_exclusive() {
                word::try_fast_release_exclusive(word, seen)
            } else {
                word::try_fast_release_share(word, me, seen)
            };
            if fast {
                crate::crash::point("release.after_word");
                tag.store(TAG_FREE, Ordering::Release);
                self.free.push(slot);
                return Ok(());
            }
        }
        // A process declared dead must not release what is now retained (a
        // retained lock's word is always mixed, so it comes here unmarked; a
        // record marked above while the word was still fast is its cleanup's
        // to free).
        if !self.m.still_connected()? {
            return Err(UnlockError::Disconnected);
        }
        self.m.release_slow(slot, id.entry)?;
        self.free.push(slot);
        Ok(())
    }

    /// The answer of a deadlock victim: the cycle the detector saw.
    #[cold]
    fn deadlock_answer(&self, told: deadlock::Told) -> WaitError {
        let region = &self.m.region;
        WaitError::Deadlock {
            cycle: told
                .cycle
                .into_iter()
                .map(|(id, mode)| holder_info(region, id, mode))
                .collect(),
        }
    }

    #[inline]
    fn owns_slot(&self, slot: u32) -> bool {
        let b = slot / crate::shm::layout::BLOCK_SLOTS;
        // Most holders own one block: look at the first before the rest.
        self.blocks.first() == Some(&b) || self.blocks.contains(&b)
    }

    /// Release every lock this holder still holds (slow path, any order).
    pub fn unlock_all(&mut self) -> Result<usize, UnlockError> {
        let m = self.m.clone();
        let tags = m.region.tags(m.id)?;
        let mut n = 0;
        for i in 0..self.blocks.len() {
            let first = self.blocks[i] * crate::shm::layout::BLOCK_SLOTS;
            for slot in first..first + crate::shm::layout::BLOCK_SLOTS {
                let Some(t) = tags.get(slot as usize) else {
                    continue;
                };
                let tag = t.load(Ordering::Acquire);
                // HELD, or PENDING from a release that failed (outside a
                // request, this holder's records are never pending otherwise).
                if records::tag_state(tag) != TAG_FREE {
                    m.release_slow(slot, records::tag_entry(tag))?;
                    self.free.push(slot);
                    n += 1;
                }
            }
        }
        Ok(n)
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        if crate::crash::killed() {
            return; // a killed process runs no more code
        }
        // Locks still held are released, then the blocks go back. If the
        // member was cleaned up under us, there is nothing left to release.
        if self.m.still_connected().unwrap_or(false) {
            let _ = self.unlock_all();
            if !self.blocks.is_empty() {
                self.publish_counters();
            }
            // A block that still has a non-free record (a release that failed
            // on a damaged region) stays claimed: handing it to another holder
            // would overwrite a record that may still be held. The member's
            // disconnect releases what is left.
            for &b in &self.blocks {
                if records::block_is_empty(&self.m.region, self.m.id, b) {
                    records::release_block(&self.m.region, self.m.id, b);
                }
            }
        }
    }
}

#[cold]
fn bad_resource(len: usize) -> AcquireError {
    AcquireError::BadResource {
        len,
        max: MAX_RESOURCE,
    }
}

/// The conflicting holders sorted by what they are.
struct Classified {
    /// A modify record of a member whose modify locks are retained (or are
    /// being made so by its cleanup): answered at once. The conflicts are
    /// only records whose mode the table says is incompatible with the
    /// request's, so a retained lock refuses exactly those (a retained IX
    /// refuses S and X, never IS or IX), whatever its mode.
    retained: Option<HolderInfo>,
    /// The retaining member is still being cleaned up.
    retained_cleaning: bool,
    /// A non-modify record of a member being cleaned up (it will be released).
    being_cleaned: bool,
}

fn classify(region: &Region, conflicts: &[RecordView]) -> Result<Classified, CorruptError> {
    let mut out = Classified {
        retained: None,
        retained_cleaning: false,
        being_cleaned: false,
    };
    for r in conflicts {
        let st = connector::load_state(region, r.member)?.state;
        let cleaning = st == MemberState::Cleaning;
        if r.held && r.mode.is_modify() && (st.retains() || cleaning) {
            out.retained = Some(holder_info(region, r.member, r.mode));
            out.retained_cleaning = cleaning;
        } else if cleaning {
            out.being_cleaned = true;
        }
    }
    Ok(out)
}

/// What [`clean_dead`] found.
struct DeadHolders {
    /// A conflicting holder was cleaned up (by us, or just now by someone).
    changed: bool,
    /// A conflicting holder is dead and being cleaned up by someone else (or
    /// left CLEANING when our time ran out).
    cleaning: bool,
}

/// A member whose process is dead (its slot says otherwise) or that is
/// being cleaned up.
fn is_dead(snap: &connector::Snapshot) -> bool {
    snap.st.state == MemberState::Cleaning || (snap.st.state.has_process() && !snap.is_alive())
}

/// Clean up the conflicting holders whose processes are dead, within the
/// request's deadline, never waiting for another cleaner.
fn clean_dead(
    region: &Region,
    me: ConnectorId,
    conflicts: &[RecordView],
    deadline: Instant,
) -> Result<DeadHolders, CleanupError> {
    let mut out = DeadHolders {
        changed: false,
        cleaning: false,
    };
    let mut seen = 0u64;
    for r in conflicts {
        if seen & word::bit(r.member) != 0 {
            continue;
        }
        seen |= word::bit(r.member);
        if !is_dead(&connector::snapshot(region, r.member)?) {
            continue;
        }
        match recovery::try_clean(region, r.member, Some(me), 0, Some(deadline))? {
            CleanupOutcome::Cleaned(_) | CleanupOutcome::AlreadyDone => out.changed = true,
            CleanupOutcome::Unfinished | CleanupOutcome::InProgress { .. } => out.cleaning = true,
            CleanupOutcome::NotDead => {}
        }
    }
    Ok(out)
}

fn dedup_holders(region: &Region, conflicts: &[RecordView]) -> Vec<HolderInfo> {
    let mut out: Vec<HolderInfo> = Vec::new();
    for r in conflicts {
        if !out.iter().any(|h| h.id == r.member) {
            out.push(holder_info(region, r.member, r.mode));
        }
    }
    out
}

pub(crate) fn holder_info(region: &Region, id: ConnectorId, mode: Mode) -> HolderInfo {
    HolderInfo {
        id,
        name: connector::name_of(region, id),
        pid: connector::process_of(region, id).pid,
        mode,
    }
}
