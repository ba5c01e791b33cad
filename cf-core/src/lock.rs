//! Lock requests: the uncontended fast path on the lock word, and the latched
//! resource-level path that settles everything else from the record entries.
//!
//! # Invariants
//! 1. **The record covers the word.** A lock word names connector `c` (as its
//!    fast-mode exclusive holder or in its mask) only while `c` has a non-free
//!    record on that entry; `c` holds an entry's latch only while it has a
//!    record (pending or held) on it. So walking a member's records finds every
//!    word it may have touched, as the kernel's robust-futex list does.
//!    Hence the order: on acquire, the record (tag HELD) is written *before*
//!    the word's CAS; on release, the word (or the latch) is given up *before*
//!    the tag is set FREE.
//! 2. **Fast mode is settled by the word; mixed mode by the records.** A request
//!    that one CAS cannot settle turns its record PENDING (not holding), latches
//!    the entry and reads the HELD records of the connectors it names: a
//!    same-resource incompatible record is a conflict; a different resource is
//!    *false contention* and is granted (counted). Every decision on a mixed
//!    entry is made under its latch, so two decisions never race.
//! 3. **Retained locks answer at once.** A conflict with a member that is
//!    failed-persistent or recovering is answered "retained by MEMBER" without
//!    waiting. A conflict with a member whose process is dead triggers its
//!    cleanup (`recovery.rs`) before the request is answered.
//!
//! # Crash windows (see `crash::CRASH_POINTS`)
//! * `acquire.after_record`: tag HELD, word not changed. The word does not name
//!   the member for this record: cleanup frees it. (If the word names the member
//!   for another record on the same entry, cleanup keeps this one too unless a
//!   live holder conflicts with it: a lock that may have been granted is
//!   treated as granted.)
//! * `acquire.after_word`: a normal held lock.
//! * `release.after_word`: word released, tag still HELD: not named, freed.
//! * `slow.latched`: dead latch holder with a PENDING record: cleanup steals the
//!   latch, frees the record, recomputes the member's bit.
//! * `slow.granted_before_unlatch`: tag HELD under the latch, bit maybe unset:
//!   the grant was decided, so keeping it is safe (and the rule above decides).
//! * `slow_release.latched` / `slow_release.after_unlatch`: as above; the bit is
//!   recomputed from what the records say.

use crate::connector::{self, MemberState};
use crate::error::{CorruptError, LockError};
use crate::lockword::{self, Latch};
use crate::member::MemberInner;
use crate::records::{
    self, Mode, RecordView, Resource, BLK_CONTENTION, BLK_FALSE, BLK_REQUESTS, TAG_FREE, TAG_HELD,
    TAG_PENDING,
};
use crate::region::Region;
use crate::sync::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Spins on a changed word before sleeping in the kernel (a futex wake costs
/// microseconds here; a short hold is usually over within this many loads).
const SPINS: u32 = 2000;
/// Longest single futex sleep: a waiter re-checks its holders' liveness at
/// least this often, so a dead holder is found even with no monitor running.
const MAX_SLICE: Duration = Duration::from_millis(20);
/// Longest a try request waits for an entry's latch (normally held for
/// microseconds; longer means a stopped process or a damaged lock word). It
/// then answers "contention", naming the latch holder, instead of hanging.
const TRY_LATCH_WAIT: Duration = Duration::from_secs(1);
/// Longest a request without a deadline (a release, a cleanup) waits for a
/// latch held by a live connector while the word does not change at all: then
/// the word is taken as damaged (a typed error) instead of waiting forever.
const LATCH_STUCK: Duration = Duration::from_secs(30);

/// A lock held by a [`Holder`]: pass it back to [`Holder::unlock`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockId {
    pub slot: u32,
    pub entry: u32,
    pub mode: Mode,
}

/// A connector named in an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HolderInfo {
    pub id: u32,
    pub name: String,
    pub pid: u32,
    pub mode: Mode,
}

/// The answer to a try request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TryOutcome {
    Granted(LockId),
    /// Live holders of the same resource in an incompatible mode.
    Contention(Vec<HolderInfo>),
    /// The resource is retained by a failed member until its recovery ends.
    Retained(HolderInfo),
}

/// The answer to a waiting request that was not granted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    #[error("timed out; held by {}", names(.0))]
    Timeout(Vec<HolderInfo>),
    #[error("retained by {} (failed member, recovery pending)", .0.name)]
    Retained(HolderInfo),
}

fn names(h: &[HolderInfo]) -> String {
    h.iter()
        .map(|h| h.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the latched path decided.
enum Decision {
    Grant { false_contention: bool },
    Conflict(Vec<RecordView>),
}

/// One thread's handle on a member: owns blocks of record slots so the fast
/// path allocates without shared atomics. `Send`, not `Sync`: one per thread.
pub struct Holder {
    m: Arc<MemberInner>,
    token: u64,
    blocks: Vec<u32>,
    free: Vec<u32>,
    requests: u64,
    contention: u64,
    false_contention: u64,
}

impl std::fmt::Debug for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Holder")
            .field("member", &self.m.id)
            .field("blocks", &self.blocks)
            .finish()
    }
}

impl Holder {
    pub(crate) fn new(m: Arc<MemberInner>) -> Result<Holder, LockError> {
        let token = m.next_holder_token();
        let mut h = Holder {
            m,
            token,
            blocks: Vec::new(),
            free: Vec::new(),
            requests: 0,
            contention: 0,
            false_contention: 0,
        };
        h.grow()?;
        Ok(h)
    }

    fn grow(&mut self) -> Result<(), LockError> {
        let region = &self.m.region;
        let b = records::claim_block(region, self.m.id, self.token)
            .ok_or(LockError::RecordsFull(region.records_per_member()))?;
        self.blocks.push(b);
        let first = b * crate::layout::BLOCK_SLOTS;
        self.free
            .extend((first..first + crate::layout::BLOCK_SLOTS).rev());
        Ok(())
    }

    #[inline]
    fn alloc_slot(&mut self) -> Result<u32, LockError> {
        match self.free.pop() {
            Some(s) => Ok(s),
            None => {
                self.grow()?;
                self.free
                    .pop()
                    .ok_or(LockError::RecordsFull(self.m.region.records_per_member()))
            }
        }
    }

    /// Publish the counters into this holder's first block (plain stores: only
    /// this holder writes them). The fast path does it every 64 requests.
    #[inline]
    fn publish_counters(&self) {
        let region = &self.m.region;
        let b = self.blocks[0];
        region
            .block_field(self.m.id, b, BLK_REQUESTS)
            .store(self.requests, Ordering::Relaxed);
        region
            .block_field(self.m.id, b, BLK_CONTENTION)
            .store(self.contention, Ordering::Relaxed);
        region
            .block_field(self.m.id, b, BLK_FALSE)
            .store(self.false_contention, Ordering::Relaxed);
    }

    /// The member this holder belongs to.
    pub fn member_id(&self) -> u32 {
        self.m.id
    }

    /// Count `n` transactions committed by this member (see `Member::add_committed`).
    pub fn add_committed(&self, n: u64) {
        self.m
            .region
            .connector_field(self.m.id, connector::F_COMMITTED)
            .fetch_add(n, Ordering::Relaxed);
    }

    /// Ask for `resource` in `mode` once: granted, contention (naming the
    /// holders) or retained (naming the retaining member). Never waits for a
    /// live holder; a dead one is cleaned up first.
    pub fn try_lock(&mut self, resource: &[u8], mode: Mode) -> Result<TryOutcome, LockError> {
        let res = Resource::new(resource).ok_or(LockError::BadResource {
            len: resource.len(),
            max: crate::layout::MAX_RESOURCE,
        })?;
        self.acquire(&res, mode, None)
    }

    /// Ask for `resource` in `mode`, waiting up to `timeout` for live holders.
    pub fn lock(
        &mut self,
        resource: &[u8],
        mode: Mode,
        timeout: Duration,
    ) -> Result<Result<LockId, WaitError>, LockError> {
        let res = Resource::new(resource).ok_or(LockError::BadResource {
            len: resource.len(),
            max: crate::layout::MAX_RESOURCE,
        })?;
        Ok(match self.acquire(&res, mode, Some(timeout))? {
            TryOutcome::Granted(id) => Ok(id),
            TryOutcome::Contention(h) => Err(WaitError::Timeout(h)),
            TryOutcome::Retained(h) => Err(WaitError::Retained(h)),
        })
    }

    #[inline]
    fn acquire(
        &mut self,
        res: &Resource,
        mode: Mode,
        timeout: Option<Duration>,
    ) -> Result<TryOutcome, LockError> {
        let slot = self.alloc_slot()?;
        let region = &*self.m.region;
        let me = self.m.id;
        let (entry, word) = region.word_for_hash(res.hash());
        records::write_body(region, me, slot, res, mode);
        let tag = region.tag(me, slot);
        tag.store(TAG_HELD | entry, Ordering::Release);
        crate::crash::point("acquire.after_record");
        let fast = if mode.is_exclusive() {
            lockword::try_fast_exclusive(word, me)
        } else {
            lockword::try_fast_share(word, me)
        };
        self.requests += 1;
        if fast {
            crate::crash::point("acquire.after_word");
            // The fast path publishes its count every 64 requests (and the
            // slow path and dropping the holder always do): readers of the
            // counters see a live holder's count at most 63 requests late.
            if self.requests % 64 == 0 {
                self.publish_counters();
            }
            return Ok(TryOutcome::Granted(LockId { slot, entry, mode }));
        }
        tag.store(TAG_PENDING | entry, Ordering::Release);
        // The clock is read only here: the fast path needs no deadline.
        let deadline = timeout.map(|t| Instant::now() + t);
        let out = self.slow_acquire(res, mode, slot, entry, deadline);
        if !matches!(out, Ok(TryOutcome::Granted(_))) {
            // The record was freed by slow_acquire after it dropped the latch;
            // an error on a damaged region may have left it pending: free it
            // (nothing is latched any more). Not if we were cleaned up: the
            // slot is no longer ours to write.
            if matches!(&out, Err(e) if !matches!(e, LockError::Disconnected)) {
                self.m
                    .region
                    .tag(me, slot)
                    .store(TAG_FREE, Ordering::Release);
            }
            self.free.push(slot);
        }
        self.publish_counters();
        out
    }

    #[cold]
    fn slow_acquire(
        &mut self,
        res: &Resource,
        mode: Mode,
        slot: u32,
        entry: u32,
        deadline: Option<Instant>,
    ) -> Result<TryOutcome, LockError> {
        let region = &*self.m.region;
        let me = self.m.id;
        let word = region.word(entry)?;
        let tag = region.tag(me, slot);
        let mut counted_contention = false;
        let mut slice = Duration::from_micros(50);
        let give_up = |tag: &crate::sync::AtomicU32| tag.store(TAG_FREE, Ordering::Release);
        // A try does not wait for the latch forever either.
        let latch_deadline = deadline.unwrap_or_else(|| Instant::now() + TRY_LATCH_WAIT);
        loop {
            self.m.check_still_connected()?;
            let named = match latch_entry(region, entry, me, Some(latch_deadline), Some(me)) {
                Ok(named) => named,
                Err(LatchWait::TimedOut(holder)) => {
                    give_up(tag);
                    return Ok(TryOutcome::Contention(vec![holder_info(
                        region,
                        holder,
                        Mode::Exclusive,
                    )]));
                }
                Err(LatchWait::Corrupt(e)) => {
                    give_up(tag);
                    return Err(e.into());
                }
            };
            crate::crash::point("slow.latched");
            let decision = match decide(region, entry, named, res, mode, me, slot) {
                Ok(d) => d,
                Err(e) => {
                    lockword::unlatch(word, named as u32);
                    give_up(tag);
                    return Err(e.into());
                }
            };
            let conflicts = match decision {
                Decision::Grant { false_contention } => {
                    tag.store(TAG_HELD | entry, Ordering::Release);
                    crate::crash::point("slow.granted_before_unlatch");
                    lockword::unlatch(word, (named | lockword::bit(me)) as u32);
                    if false_contention {
                        self.false_contention += 1;
                    }
                    return Ok(TryOutcome::Granted(LockId { slot, entry, mode }));
                }
                Decision::Conflict(c) => c,
            };
            if !counted_contention {
                counted_contention = true;
                self.contention += 1;
            }
            // Classify the conflicting holders by their connector state.
            let mut retained = None;
            let mut maybe_dead = Vec::new();
            for r in &conflicts {
                let st = match connector::load_state(region, r.member) {
                    Ok(st) => st,
                    Err(e) => {
                        lockword::unlatch(word, named as u32);
                        give_up(tag);
                        return Err(e.into());
                    }
                };
                if st.state.retains() && r.mode.is_modify() {
                    retained = Some(holder_info(region, r.member, r.mode));
                } else if st.state == MemberState::Cleaning || !st.state.has_process() {
                    maybe_dead.push(r.member);
                }
            }
            if let Some(h) = retained {
                lockword::unlatch(word, named as u32);
                give_up(tag);
                return Ok(TryOutcome::Retained(h));
            }
            let out_of_time = deadline.is_none_or(|d| Instant::now() >= d);
            if !maybe_dead.is_empty() || out_of_time {
                lockword::unlatch(word, named as u32);
                // Check the holders' processes before answering "contention".
                let mut cleaned = false;
                for r in &conflicts {
                    cleaned |= crate::recovery::clean_if_dead(region, r.member, Some(me))?;
                }
                if cleaned {
                    continue;
                }
                if out_of_time {
                    give_up(tag);
                    let holders = dedup_holders(region, &conflicts);
                    return Ok(TryOutcome::Contention(holders));
                }
                // Holders in cleanup by someone else: give them a moment.
                std::thread::sleep(Duration::from_micros(100));
                continue;
            }
            // Wait: announce ourselves, spin, then sleep in the kernel.
            let high = lockword::unlatch_to_wait(word, named as u32);
            let seen = word.load(Ordering::Relaxed);
            if !lockword::spin_for_change(word, seen, SPINS) {
                let left = deadline.map_or(slice, |d| d.saturating_duration_since(Instant::now()));
                lockword::sleep(word, high, slice.min(left));
                if word.load(Ordering::Relaxed) == seen {
                    // Nothing changed for a whole slice: are the holders alive?
                    for r in &conflicts {
                        crate::recovery::clean_if_dead(region, r.member, Some(me))?;
                    }
                    slice = (slice * 2).min(MAX_SLICE);
                }
            }
        }
    }

    /// Release a lock this holder took.
    #[inline]
    pub fn unlock(&mut self, id: LockId) -> Result<(), LockError> {
        let region = &*self.m.region;
        let me = self.m.id;
        if id.slot >= region.records_per_member() || !self.owns_slot(id.slot) {
            return Err(LockError::NotHeld(id.slot));
        }
        let tag = region.tag(me, id.slot);
        if tag.load(Ordering::Relaxed) != TAG_HELD | id.entry {
            return Err(LockError::NotHeld(id.slot));
        }
        let word = region.word(id.entry)?;
        let fast = if id.mode.is_exclusive() {
            lockword::try_fast_release_exclusive(word, me)
        } else {
            lockword::try_fast_release_share(word, me)
        };
        if fast {
            crate::crash::point("release.after_word");
            tag.store(TAG_FREE, Ordering::Release);
        } else {
            // A process declared dead must not release what is now retained.
            self.m.check_still_connected()?;
            release_slow(region, me, id.slot, id.entry)?;
        }
        self.free.push(id.slot);
        Ok(())
    }

    #[inline]
    fn owns_slot(&self, slot: u32) -> bool {
        self.blocks.contains(&(slot / crate::layout::BLOCK_SLOTS))
    }

    /// Release every lock this holder still holds (slow path, any order).
    pub fn unlock_all(&mut self) -> Result<usize, LockError> {
        let region = self.m.region.clone();
        let me = self.m.id;
        let mut n = 0;
        for &b in &self.blocks.clone() {
            let first = b * crate::layout::BLOCK_SLOTS;
            for slot in first..first + crate::layout::BLOCK_SLOTS {
                let tag = region.tag(me, slot).load(Ordering::Acquire);
                if records::tag_state(tag) == TAG_HELD {
                    release_slow(&region, me, slot, records::tag_entry(tag))?;
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
        // Locks still held are released, then the blocks go back. If the
        // member was cleaned up under us, there is nothing left to release.
        if self.m.check_still_connected().is_ok() {
            let _ = self.unlock_all();
            if !self.blocks.is_empty() {
                self.publish_counters();
            }
            for &b in &self.blocks {
                records::release_block(&self.m.region, self.m.id, b);
            }
        }
    }
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

pub(crate) fn holder_info(region: &Region, id: u32, mode: Mode) -> HolderInfo {
    HolderInfo {
        id,
        name: connector::name_of(region, id),
        pid: connector::process_of(region, id).pid,
        mode,
    }
}

/// Why `latch_entry` gave up.
pub(crate) enum LatchWait {
    TimedOut(u32),
    Corrupt(CorruptError),
}

impl From<CorruptError> for LatchWait {
    fn from(e: CorruptError) -> Self {
        LatchWait::Corrupt(e)
    }
}

/// Latch `entry` as connector `as_id`, waiting for a live latch holder and
/// cleaning up a dead one (on behalf of member `by`, for the events). Returns
/// the connectors the word named.
pub(crate) fn latch_entry(
    region: &Region,
    entry: u32,
    as_id: u32,
    deadline: Option<Instant>,
    by: Option<u32>,
) -> Result<u64, LatchWait> {
    let word = region.word(entry)?;
    let mut slice = Duration::from_micros(50);
    // The busy word (waiters bit aside) and since when it has not changed.
    let mut unchanged: Option<(u64, Instant)> = None;
    loop {
        match lockword::try_latch(word, as_id) {
            Latch::Latched { named } => return Ok(named),
            Latch::Busy { holder, seen } => {
                let holder = region.check_member(holder)?;
                if crate::recovery::may_steal_latch(region, holder) {
                    if let Some(named) = lockword::try_steal_latch(word, holder, as_id) {
                        return Ok(named);
                    }
                    continue;
                }
                if lockword::spin_for_change(word, seen.0, SPINS) {
                    continue;
                }
                if let Some(d) = deadline {
                    if Instant::now() >= d {
                        return Err(LatchWait::TimedOut(holder));
                    }
                }
                let key = seen.0 & !lockword::WAITERS;
                match unchanged {
                    Some((k, since)) if k == key => {
                        if deadline.is_none() && since.elapsed() >= LATCH_STUCK {
                            return Err(LatchWait::Corrupt(CorruptError::BadConnector {
                                id: holder,
                                what: format!(
                                    "has held the latch of lock entry {entry} for over {} s \
                                     (damaged lock word, or a stopped process)",
                                    LATCH_STUCK.as_secs()
                                ),
                            }));
                        }
                    }
                    _ => unchanged = Some((key, Instant::now())),
                }
                if let Some(high) = lockword::announce_waiter(word, seen) {
                    lockword::sleep(word, high, slice);
                }
                if word.load(Ordering::Relaxed) == seen.0 | lockword::WAITERS {
                    crate::recovery::clean_if_dead(region, holder, by)?;
                    check_latch_holder(region, entry, word, holder)?;
                    slice = (slice * 2).min(MAX_SLICE);
                }
            }
        }
    }
}

/// A latch held in the name of a connector that is free or failed-persistent
/// can never be dropped: only a connected member latches in its own name, and
/// a cleaner in the name of the member it cleans, which stays CLEANING until
/// every entry is settled. Seen with the state word unchanged around the
/// reading of the lock word (a reconnect changes the generation), it is damage.
fn check_latch_holder(
    region: &Region,
    entry: u32,
    word: &crate::sync::AtomicU64,
    holder: u32,
) -> Result<(), CorruptError> {
    let before = connector::load_state(region, holder)?;
    if !matches!(
        before.state,
        MemberState::Free | MemberState::FailedPersistent
    ) {
        return Ok(());
    }
    let w = lockword::load(word);
    let after = connector::load_state(region, holder)?;
    if before == after && w.is_mixed() && w.holder() == Some(holder) {
        return Err(CorruptError::BadConnector {
            id: holder,
            what: format!(
                "is {} but holds the latch of lock entry {entry}",
                before.state.as_str()
            ),
        });
    }
    Ok(())
}

/// Under the latch: does `res` in `mode` conflict with a held record of a
/// connector in `named` (other than our own pending `my_slot`)?
fn decide(
    region: &Region,
    entry: u32,
    named: u64,
    res: &Resource,
    mode: Mode,
    me: u32,
    my_slot: u32,
) -> Result<Decision, CorruptError> {
    let mut conflicts = Vec::new();
    let mut false_contention = false;
    for c in bits(named) {
        let c = region.check_member(c)?;
        for r in records::records_on(region, c, entry, false)? {
            if c == me && r.slot == my_slot {
                continue;
            }
            if mode.compatible(r.mode) {
                continue;
            }
            if r.resource == *res {
                conflicts.push(r);
            } else {
                false_contention = true;
            }
        }
    }
    Ok(if conflicts.is_empty() {
        Decision::Grant { false_contention }
    } else {
        Decision::Conflict(conflicts)
    })
}

/// Iterate the set bits of a connector mask.
pub(crate) fn bits(mask: u64) -> impl Iterator<Item = u32> {
    (0..64u32).filter(move |i| mask & (1u64 << i) != 0)
}

/// Release record `slot` of `member` on `entry` under the latch: recompute the
/// member's bit from its other held records, drop the latch, then free the tag.
pub(crate) fn release_slow(
    region: &Region,
    member: u32,
    slot: u32,
    entry: u32,
) -> Result<(), LockError> {
    let word = region.word(entry)?;
    let named = match latch_entry(region, entry, member, None, Some(member)) {
        Ok(n) => n,
        Err(LatchWait::Corrupt(e)) => return Err(e.into()),
        Err(LatchWait::TimedOut(_)) => unreachable!("no deadline"),
    };
    crate::crash::point("slow_release.latched");
    let others = match records::records_on(region, member, entry, false) {
        Ok(recs) => recs.iter().any(|r| r.slot != slot),
        Err(e) => {
            // Damaged: decide nothing, drop the latch, keep the record.
            lockword::unlatch(word, named as u32);
            return Err(e.into());
        }
    };
    let mask = if others {
        named | lockword::bit(member)
    } else {
        named & !lockword::bit(member)
    };
    lockword::unlatch(word, mask as u32);
    crate::crash::point("slow_release.after_unlatch");
    region.tag(member, slot).store(TAG_FREE, Ordering::Release);
    Ok(())
}

/// Release every record of `member` (held or pending), entry by entry: one
/// latch per entry, the member's bit cleared (it keeps nothing there), the
/// latch dropped, then the tags freed (the record covers the word until the
/// end). One pass over the member's records: cost linear in what it held.
/// `after_entry` runs after each entry (a crash point for restart light).
/// Returns the number of held locks released.
pub(crate) fn release_all(
    region: &Region,
    member: u32,
    mut after_entry: impl FnMut(),
) -> Result<usize, LockError> {
    let recs = records::slots_by_entry(region, member);
    let mut released = 0;
    for group in recs.chunk_by(|a, b| a.0 == b.0) {
        let entry = group[0].0;
        let word = region.word(entry)?;
        let named = match latch_entry(region, entry, member, None, Some(member)) {
            Ok(n) => n,
            Err(LatchWait::Corrupt(e)) => return Err(e.into()),
            Err(LatchWait::TimedOut(_)) => unreachable!("no deadline"),
        };
        lockword::unlatch(word, (named & !lockword::bit(member)) as u32);
        for &(_, slot, tag) in group {
            region.tag(member, slot).store(TAG_FREE, Ordering::Release);
            released += (records::tag_state(tag) == TAG_HELD) as usize;
        }
        after_entry();
    }
    Ok(released)
}
