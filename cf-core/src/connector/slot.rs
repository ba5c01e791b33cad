//! The connector (member) table: one 256-byte slot per connector id
//! (`shm/slots.rs`, `ConnectorSlot`).
//!
//! A slot's `state` word is `[generation:32][unused:24][state:8]`; the
//! generation changes on every connect, so a stale reference to a slot (a
//! cleanup claim, a reconnect) can tell that the slot was reused.
//! States: FREE, ACTIVE, CLEANING (a dead member being cleaned up),
//! FAILED_PERSISTENT (dead, holding retained locks), RECOVERING (reconnected
//! to recover the failed member's log: by restart light, or by a normal
//! restart that backs out first).
//!
//! # Protocol
//! * **Identity first.** A connect (under the connect latch, `latch.rs`)
//!   writes the process identity (PID, start time), the name and the counters
//!   while the slot is FREE or FAILED_PERSISTENT (states in which no one looks
//!   at the identity), and only then publishes the new state and generation
//!   with one compare-and-swap from the state it found. So whoever sees a
//!   state with a process (ACTIVE, RECOVERING) sees that process's identity:
//!   a member still connecting can never be taken for a dead one. (The hole
//!   this closes: a state published before the PID let a watcher read the
//!   previous occupant's PID, declare the new member dead and write
//!   FAILED_PERSISTENT over its slot.)
//! * **Consistent reads.** [`snapshot`] reads the state, the identity and the
//!   state again, and retries if the state changed, so a state and an identity
//!   are always of the same connection.
//! * **Transitions by compare-and-swap.** A cleanup moves a slot from the
//!   exact (state, generation) it judged dead to CLEANING, and from CLEANING
//!   to FAILED_PERSISTENT, each with one CAS, so it can never overwrite a new
//!   connection; a connect moves it only from FREE or FAILED_PERSISTENT; a
//!   disconnect (under the connect latch) from its own state to FREE.
//!
//! Crash windows: dying with the connect latch (taken over, `latch.rs`);
//! dying after writing the identity and before publishing the state (the slot
//! is still FREE or FAILED_PERSISTENT: nothing happened).

use crate::connector::identity::ProcessId;
use crate::error::{ConnectError, CorruptError};
use crate::ids::ConnectorId;
use crate::shm::region::Region;
use crate::shm::slots::{self, ConnectorSlot};
use crate::sync::Ordering;

/// Longest member name, in bytes.
pub const MAX_NAME: usize = 32;

/// Connector states, as decoded from a slot's state word (see the module
/// docs for the transitions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberState {
    /// No member: the slot can be taken by a fresh connect.
    Free,
    /// A connected member. Its process may have died since: whoever finds
    /// it dead (identity check) cleans it up.
    Active,
    /// A dead member whose cleanup is in progress (by the holder of the
    /// slot's cleanup claim; a dead cleaner's claim is taken over).
    Cleaning,
    /// A dead member, cleaned up: its modify locks are retained until its
    /// log is recovered (by restart light or a normal restart).
    FailedPersistent,
    /// The failed member reconnected in recovery mode to back out its log;
    /// its modify locks are still retained.
    Recovering,
}

impl MemberState {
    fn code(self) -> u64 {
        match self {
            MemberState::Free => 0,
            MemberState::Active => 2,
            MemberState::Cleaning => 3,
            MemberState::FailedPersistent => 4,
            MemberState::Recovering => 5,
        }
    }
    fn from_code(c: u64) -> Option<MemberState> {
        Some(match c {
            0 => MemberState::Free,
            2 => MemberState::Active,
            3 => MemberState::Cleaning,
            4 => MemberState::FailedPersistent,
            5 => MemberState::Recovering,
            _ => return None,
        })
    }
    /// The state's name as displays print it (`"free"`, `"active"`,
    /// `"cleaning"`, `"failed-persistent"`, `"recovering"`).
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Free => "free",
            MemberState::Active => "active",
            MemberState::Cleaning => "cleaning",
            MemberState::FailedPersistent => "failed-persistent",
            MemberState::Recovering => "recovering",
        }
    }
    /// States whose modify locks are retained (requests get "retained by"):
    /// [`MemberState::FailedPersistent`] and [`MemberState::Recovering`].
    pub fn retains(self) -> bool {
        matches!(
            self,
            MemberState::FailedPersistent | MemberState::Recovering
        )
    }
    /// States in which a live process is expected behind the slot:
    /// [`MemberState::Active`] and [`MemberState::Recovering`].
    pub fn has_process(self) -> bool {
        matches!(self, MemberState::Active | MemberState::Recovering)
    }
}

/// A decoded state word (`[generation:32][unused:24][state:8]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateWord {
    /// The slot's state (the low 8 bits).
    pub state: MemberState,
    /// The connection's generation (the high 32 bits): changed by every
    /// connect of the slot, and kept by the other transitions.
    pub generation: u32,
}

impl StateWord {
    fn encode(self) -> u64 {
        self.state.code() | (self.generation as u64) << 32
    }
}

fn decode(id: ConnectorId, raw: u64) -> Result<StateWord, CorruptError> {
    let state = MemberState::from_code(raw & 0xff).ok_or_else(|| CorruptError::BadConnector {
        id,
        what: format!("unknown state {}", raw & 0xff),
    })?;
    if raw & 0xffff_ff00 != 0 {
        return Err(CorruptError::BadConnector {
            id,
            what: format!("unknown bits in state word {raw:#018x}"),
        });
    }
    Ok(StateWord {
        state,
        generation: (raw >> 32) as u32,
    })
}

pub(crate) fn load_state(region: &Region, id: ConnectorId) -> Result<StateWord, CorruptError> {
    let raw = region.connector(id)?.state.load(Ordering::Acquire);
    decode(id, raw)
}

/// Move slot `id` from exactly `from` to `to`; false if it was not `from`.
pub(crate) fn cas_state(region: &Region, id: ConnectorId, from: StateWord, to: StateWord) -> bool {
    region.connector(id).is_ok_and(|c| {
        c.state
            .compare_exchange(
                from.encode(),
                to.encode(),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    })
}

/// A state and the identity of the same connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub st: StateWord,
    pub process: ProcessId,
}

impl Snapshot {
    /// Is the process behind this connection alive? Slots in a state without
    /// a process are "not alive".
    pub(crate) fn is_alive(&self) -> bool {
        self.st.state.has_process() && self.process.is_alive()
    }
}

fn identity(c: &ConnectorSlot) -> ProcessId {
    ProcessId {
        pid: c.pid.load(Ordering::Acquire) as u32,
        start_time: c.start_time.load(Ordering::Acquire),
    }
}

/// Read the state and the identity of slot `id` consistently (see the module docs).
pub(crate) fn snapshot(region: &Region, id: ConnectorId) -> Result<Snapshot, CorruptError> {
    let c = region.connector(id)?;
    let mut raw = c.state.load(Ordering::Acquire);
    // A hostile writer could change the state forever: after a few tries the
    // last reading is as good as any.
    for _ in 0..16 {
        let process = identity(c);
        crate::sync::fence_acquire();
        let again = c.state.load(Ordering::Relaxed);
        if again == raw {
            return Ok(Snapshot {
                st: decode(id, raw)?,
                process,
            });
        }
        raw = again;
    }
    Ok(Snapshot {
        st: decode(id, raw)?,
        process: identity(c),
    })
}

/// The process recorded in a slot (for displays and events).
pub(crate) fn process_of(region: &Region, id: ConnectorId) -> ProcessId {
    region.connector(id).map_or(
        ProcessId {
            pid: 0,
            start_time: 0,
        },
        identity,
    )
}

pub(crate) fn name_of(region: &Region, id: ConnectorId) -> String {
    region.connector(id).map_or_else(
        |_| String::new(),
        |c| String::from_utf8_lossy(&slots::load_name_bytes(&c.name)).into_owned(),
    )
}

pub use crate::sync::now_ns;

/// Check a member name: 1 to [`MAX_NAME`] bytes of ASCII letters, digits,
/// `-`, `_` and `.`. The error ([`ConnectError::BadName`]) says why not.
///
/// ```
/// use cf_core::connector::check_name;
///
/// assert!(check_name("bank-1.a_b").is_ok());
/// assert!(check_name("").is_err());
/// assert!(check_name("has space").is_err());
/// assert!(check_name(&"x".repeat(33)).is_err());
/// ```
pub fn check_name(name: &str) -> Result<(), ConnectError> {
    let bad = |why| Err(ConnectError::BadName(name.to_string(), why));
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_NAME {
        return bad("longer than 32 bytes");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return bad("only letters, digits, '-', '_' and '.' are allowed");
    }
    Ok(())
}

/// What `choose_slot` found for a name.
pub(crate) enum SlotChoice {
    /// A free slot for a new member.
    Fresh(ConnectorId),
    /// The failed-persistent slot of this name (its log needs recovery).
    Failed(ConnectorId),
    /// A slot of this name whose process is dead but not yet cleaned up.
    NeedsCleanup(ConnectorId),
}

/// Pick the slot for `name` (under the connect latch).
pub(crate) fn choose_slot(region: &Region, name: &str) -> Result<SlotChoice, ConnectError> {
    let mut free = None;
    for id in region.connector_ids() {
        let snap = snapshot(region, id)?;
        if snap.st.state == MemberState::Free {
            free = free.or(Some(id));
            continue;
        }
        if name_of(region, id) != name {
            continue;
        }
        return match snap.st.state {
            MemberState::FailedPersistent => Ok(SlotChoice::Failed(id)),
            MemberState::Cleaning => Ok(SlotChoice::NeedsCleanup(id)),
            _ if snap.is_alive() => Err(ConnectError::NameInUse {
                name: name.to_string(),
                pid: snap.process.pid,
            }),
            _ => Ok(SlotChoice::NeedsCleanup(id)),
        };
    }
    free.map(SlotChoice::Fresh)
        .ok_or(ConnectError::TableFull(region.members()))
}

/// Fill in slot `id` (FREE, or FAILED_PERSISTENT when `fresh` is false) for
/// this process and publish `state` with a new generation (under the connect
/// latch). Returns the generation.
pub(crate) fn occupy(
    region: &Region,
    id: ConnectorId,
    name: &str,
    me: &ProcessId,
    state: MemberState,
    fresh: bool,
) -> Result<u32, ConnectError> {
    let c = region.connector(id)?;
    let old = load_state(region, id)?;
    let expected = if fresh {
        MemberState::Free
    } else {
        MemberState::FailedPersistent
    };
    let changed = || {
        ConnectError::Corrupt(CorruptError::BadConnector {
            id,
            what: format!(
                "changed under the connect latch (found {}, expected {})",
                old.state.as_str(),
                expected.as_str()
            ),
        })
    };
    if old.state != expected {
        return Err(changed());
    }
    // Identity first (nobody reads it in this state), state last.
    c.pid.store(me.pid as u64, Ordering::Relaxed);
    c.start_time.store(me.start_time, Ordering::Relaxed);
    c.connected_ns.store(now_ns(), Ordering::Relaxed);
    // No liveness word and no heartbeat until the new connection registers
    // them (`liveness.rs`): a word the previous connection's death marked,
    // or a heartbeat a fencer marked, belongs to that connection.
    c.liveness_gen.store(0, Ordering::Relaxed);
    c.liveness.store(0, Ordering::Relaxed);
    c.heartbeat.store(0, Ordering::Relaxed);
    c.beat_period_ms.store(0, Ordering::Relaxed);
    if fresh {
        c.incarnation.fetch_add(1, Ordering::Relaxed);
        slots::store_name(&c.name, name.as_bytes());
        for f in [
            &c.hwm,
            &c.requests,
            &c.contention,
            &c.false_contention,
            &c.xes_contention,
            &c.failed_ns,
            &c.committed,
            &c.retained_refusals,
        ]
        .into_iter()
        .chain(&c.service_ns)
        {
            f.store(0, Ordering::Relaxed);
        }
    }
    let generation = old.generation.wrapping_add(1).max(1);
    let new = StateWord { state, generation };
    if !cas_state(region, id, old, new) {
        return Err(changed());
    }
    Ok(generation)
}

/// Change a connected slot's state within its generation (under the connect
/// latch): a normal restart that has recovered itself becomes ACTIVE.
pub(crate) fn set_state(
    region: &Region,
    id: ConnectorId,
    from: StateWord,
    to: MemberState,
) -> bool {
    cas_state(
        region,
        id,
        from,
        StateWord {
            state: to,
            generation: from.generation,
        },
    )
}

/// Return a slot to FREE, folding its counters into the structure's totals
/// (under the connect latch, by the slot's own connection).
pub(crate) fn vacate(
    region: &Region,
    id: ConnectorId,
    from: StateWord,
) -> Result<(), CorruptError> {
    let c = region.connector(id)?;
    let free = StateWord {
        state: MemberState::Free,
        generation: from.generation,
    };
    if !cas_state(region, id, from, free) {
        return Err(CorruptError::BadConnector {
            id,
            what: "changed under its own connection while disconnecting".into(),
        });
    }
    let totals = &region.lock_header().counters;
    for (i, f) in [
        (slots::TOTAL_REQUESTS, &c.requests),
        (slots::TOTAL_CONTENTION, &c.contention),
        (slots::TOTAL_FALSE, &c.false_contention),
        (slots::TOTAL_COMMITTED, &c.committed),
        (slots::TOTAL_XES, &c.xes_contention),
        (slots::TOTAL_RETAINED_REFUSALS, &c.retained_refusals),
    ] {
        totals[i].fetch_add(f.swap(0, Ordering::Relaxed), Ordering::Relaxed);
    }
    c.hwm.store(0, Ordering::Relaxed);
    slots::store_name(&c.name, b"");
    c.pid.store(0, Ordering::Relaxed);
    Ok(())
}

/// A light, public view of one connector slot (for monitors that poll the
/// table often; `inspect::members` also reads every record).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotView {
    /// The connector id read (checked against the region's size).
    pub id: ConnectorId,
    /// The slot's state.
    pub state: MemberState,
    /// The generation of the slot's current (or last) connection.
    pub generation: u32,
    /// The process recorded in the slot, read consistently with `state`
    /// (meaningful only in a state with a process; PID 0 once vacated).
    pub process: ProcessId,
    /// The member name stored in the slot (lossy UTF-8; empty when free).
    /// Untrusted: print it through [`escape`](crate::inspect::escape).
    pub name: String,
}

/// Read connector slot `id` (checked, state and identity consistent).
pub fn slot_view(region: &Region, id: ConnectorId) -> Result<SlotView, CorruptError> {
    let id = region.check_member(id)?;
    let snap = snapshot(region, id)?;
    Ok(SlotView {
        id,
        state: snap.st.state,
        generation: snap.st.generation,
        process: snap.process,
        name: name_of(region, id),
    })
}

impl SlotView {
    /// Is the recorded process of a slot that should have one still running?
    pub fn is_alive(&self) -> bool {
        self.state.has_process() && self.process.is_alive()
    }
}

/// Lock activity of one connector (for `cfctl display structure` and
/// `cfctl report`): what its slot and the record blocks its holders own
/// have counted, and the transactions it reported committed. Counters of
/// blocks that went back to the pool were folded into the slot's; those of
/// connections that disconnected are in the lock header's totals only
/// ([`inspect::counters`](crate::inspect::counters)). Holders publish their
/// counts every 64 uncontended requests (and after each contended one), so a
/// live connection's counts may lag a little.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Activity {
    /// Lock requests made (the slot's folded count plus its blocks' in use).
    pub requests: u64,
    /// IRLM contention: requests that met a real conflict (an incompatible
    /// holding of the same resource by another holder, retained ones
    /// included), counted once per request.
    pub irlm_contention: u64,
    /// Requests granted after meeting another member's holding of another
    /// resource hashed to the same lock entry, in a mode whose interest in
    /// the word conflicts (false contention).
    pub false_contention: u64,
    /// Requests granted after the lock word showed another member's
    /// conflicting interest while every holding of the same resource was in
    /// a compatible mode (XES contention: IX beside IX, S beside U).
    pub xes_contention: u64,
    /// Transactions the member's application reported committed
    /// ([`Member::add_committed`](crate::Member::add_committed)).
    pub committed: u64,
    /// Requests refused because a failed member retains the resource.
    pub retained_refusals: u64,
    /// Sampled synchronous service times: how many sampled requests fell in
    /// each bucket of [`bucket_bounds_ns`](crate::lock::service::bucket_bounds_ns).
    pub service_ns: [u64; crate::shm::layout::SERVICE_BUCKETS],
}

/// Read the [`Activity`] of connector `id` (checked). The counts come from
/// the region and may be damaged; sums saturate.
pub fn activity(region: &Region, id: ConnectorId) -> Result<Activity, CorruptError> {
    use crate::sync::Ordering::Relaxed;
    let id = region.check_member(id)?;
    let slot = region.connector(id)?;
    let mut a = Activity {
        requests: slot.requests.load(Relaxed),
        irlm_contention: slot.contention.load(Relaxed),
        false_contention: slot.false_contention.load(Relaxed),
        xes_contention: slot.xes_contention.load(Relaxed),
        committed: slot.committed.load(Relaxed),
        retained_refusals: slot.retained_refusals.load(Relaxed),
        service_ns: std::array::from_fn(|i| slot.service_ns[i].load(Relaxed)),
    };
    for b in region.blocks(id)? {
        if b.owner.load(Relaxed) != 0 {
            a.requests = a.requests.saturating_add(b.requests.load(Relaxed));
            a.irlm_contention = a.irlm_contention.saturating_add(b.contention.load(Relaxed));
            a.false_contention = a
                .false_contention
                .saturating_add(b.false_contention.load(Relaxed));
        }
    }
    Ok(a)
}
