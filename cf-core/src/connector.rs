//! The connector (member) table: one 256-byte slot per connector id.
//!
//! A slot's `state` word is `[generation:32][unused:24][state:8]`; the
//! generation changes on every connect, so a stale reference to a slot (a
//! cleanup claim, a reconnect) can tell that the slot was reused.
//! States: FREE, CONNECTING, ACTIVE, CLEANING (a dead member being cleaned up),
//! FAILED_PERSISTENT (dead, holding retained locks), RECOVERING (reconnected by
//! restart light to release its retained locks).
//!
//! Names and states change under the *connect latch*, a word in the lock
//! structure holding the token (PID and start time) of the process that owns
//! it; a latch whose owner is dead is taken over. The only state change made
//! without it is the cleanup claim (`recovery.rs`), which is its own atomic
//! word. Crash windows: dying with the connect latch (taken over), or in
//! CONNECTING (the slot is cleaned up like any dead member's).

use crate::error::{ConnectError, CorruptError};
use crate::identity::ProcessId;
use crate::region::Region;
use crate::sync::Ordering;
use std::time::{Duration, Instant};

// Word indices of a connector slot.
pub(crate) const F_STATE: u32 = 0;
pub(crate) const F_CLEANUP: u32 = 1;
pub(crate) const F_PID: u32 = 2;
pub(crate) const F_START: u32 = 3;
pub(crate) const F_NAME: u32 = 4; // 4 words: 32 bytes, NUL-padded
pub(crate) const F_HWM: u32 = 8;
pub(crate) const F_REQUESTS: u32 = 9;
pub(crate) const F_CONTENTION: u32 = 10;
pub(crate) const F_FALSE: u32 = 11;
pub(crate) const F_CONNECTED_NS: u32 = 12;
pub(crate) const F_FAILED_NS: u32 = 13;
/// Transactions the member's application reported committed (see `Member::add_committed`).
pub(crate) const F_COMMITTED: u32 = 14;

/// Longest member name.
pub const MAX_NAME: usize = 32;

/// Connector states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberState {
    Free,
    Connecting,
    Active,
    Cleaning,
    FailedPersistent,
    Recovering,
}

impl MemberState {
    fn code(self) -> u64 {
        match self {
            MemberState::Free => 0,
            MemberState::Connecting => 1,
            MemberState::Active => 2,
            MemberState::Cleaning => 3,
            MemberState::FailedPersistent => 4,
            MemberState::Recovering => 5,
        }
    }
    fn from_code(c: u64) -> Option<MemberState> {
        Some(match c {
            0 => MemberState::Free,
            1 => MemberState::Connecting,
            2 => MemberState::Active,
            3 => MemberState::Cleaning,
            4 => MemberState::FailedPersistent,
            5 => MemberState::Recovering,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Free => "free",
            MemberState::Connecting => "connecting",
            MemberState::Active => "active",
            MemberState::Cleaning => "cleaning",
            MemberState::FailedPersistent => "failed-persistent",
            MemberState::Recovering => "recovering",
        }
    }
    /// States whose locks are retained (requests get "retained by").
    pub fn retains(self) -> bool {
        matches!(
            self,
            MemberState::FailedPersistent | MemberState::Recovering
        )
    }
    /// States in which a live process is expected behind the slot.
    pub fn has_process(self) -> bool {
        matches!(
            self,
            MemberState::Connecting | MemberState::Active | MemberState::Recovering
        )
    }
}

/// A decoded state word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateWord {
    pub state: MemberState,
    pub generation: u32,
}

pub(crate) fn encode_state(state: MemberState, generation: u32) -> u64 {
    state.code() | (generation as u64) << 32
}

pub(crate) fn load_state(region: &Region, id: u32) -> Result<StateWord, CorruptError> {
    let raw = region.connector_field(id, F_STATE).load(Ordering::Acquire);
    let state = MemberState::from_code(raw & 0xff).ok_or_else(|| CorruptError::BadConnector {
        id,
        what: format!("unknown state {}", raw & 0xff),
    })?;
    Ok(StateWord {
        state,
        generation: (raw >> 32) as u32,
    })
}

pub(crate) fn store_state(region: &Region, id: u32, state: MemberState, generation: u32) {
    region
        .connector_field(id, F_STATE)
        .store(encode_state(state, generation), Ordering::Release);
}

/// The process recorded in a slot.
pub(crate) fn process_of(region: &Region, id: u32) -> ProcessId {
    ProcessId {
        pid: region.connector_field(id, F_PID).load(Ordering::Acquire) as u32,
        start_time: region.connector_field(id, F_START).load(Ordering::Acquire),
    }
}

/// Is the process behind connector `id` (as of this state) alive? Slots in a
/// state without a process are "not alive".
pub(crate) fn is_alive(region: &Region, id: u32, st: StateWord) -> bool {
    st.state.has_process() && process_of(region, id).is_alive()
}

pub(crate) fn name_of(region: &Region, id: u32) -> String {
    let mut bytes = Vec::with_capacity(MAX_NAME);
    for i in 0..4 {
        bytes.extend_from_slice(
            &region
                .connector_field(id, F_NAME + i)
                .load(Ordering::Relaxed)
                .to_le_bytes(),
        );
    }
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(MAX_NAME);
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn set_name(region: &Region, id: u32, name: &str) {
    let mut bytes = [0u8; MAX_NAME];
    bytes[..name.len()].copy_from_slice(name.as_bytes());
    for i in 0..4 {
        let w = u64::from_le_bytes(bytes[8 * i..8 * i + 8].try_into().unwrap_or([0; 8]));
        region
            .connector_field(id, F_NAME + i as u32)
            .store(w, Ordering::Relaxed);
    }
}

/// Wall-clock time in nanoseconds since the Unix epoch (event timestamps).
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass; CLOCK_REALTIME
    // always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

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

/// The connect latch, held for the life of this guard.
pub(crate) struct ConnectLatch<'a> {
    region: &'a Region,
}

impl<'a> ConnectLatch<'a> {
    pub(crate) fn take(
        region: &'a Region,
        me: &ProcessId,
        timeout: Duration,
    ) -> Result<Self, ConnectError> {
        let latch = region.connect_latch();
        let token = me.token();
        let deadline = Instant::now() + timeout;
        let mut spins = 0u32;
        loop {
            let cur = latch.load(Ordering::Acquire);
            if cur == 0 || !ProcessId::token_is_alive(cur) {
                if latch
                    .compare_exchange(cur, token, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    crate::crash::point("connect.latched");
                    return Ok(ConnectLatch { region });
                }
                continue;
            }
            if Instant::now() > deadline {
                return Err(ConnectError::LatchTimeout(cur as u32));
            }
            spins += 1;
            if spins < 64 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }
}

impl Drop for ConnectLatch<'_> {
    fn drop(&mut self) {
        self.region.connect_latch().store(0, Ordering::Release);
    }
}

/// What `claim_slot` found for a name.
pub(crate) enum SlotChoice {
    /// A free slot for a new member.
    Fresh(u32),
    /// The failed-persistent slot of this name: reconnect, taking its retained locks.
    Reconnect(u32),
    /// A slot of this name whose process is dead but not yet cleaned up.
    NeedsCleanup(u32),
}

/// Pick the slot for `name` (under the connect latch).
pub(crate) fn choose_slot(region: &Region, name: &str) -> Result<SlotChoice, ConnectError> {
    let mut free = None;
    for id in 0..region.members() {
        let st = load_state(region, id)?;
        if st.state == MemberState::Free {
            free = free.or(Some(id));
            continue;
        }
        if name_of(region, id) != name {
            continue;
        }
        return match st.state {
            MemberState::FailedPersistent => Ok(SlotChoice::Reconnect(id)),
            MemberState::Cleaning => Ok(SlotChoice::NeedsCleanup(id)),
            _ if is_alive(region, id, st) => Err(ConnectError::NameInUse {
                name: name.to_string(),
                pid: process_of(region, id).pid,
            }),
            _ => Ok(SlotChoice::NeedsCleanup(id)),
        };
    }
    free.map(SlotChoice::Fresh)
        .ok_or(ConnectError::TableFull(region.members()))
}

/// Fill in a slot for this process and publish `state` (under the connect latch).
pub(crate) fn occupy(
    region: &Region,
    id: u32,
    name: &str,
    me: &ProcessId,
    state: MemberState,
    fresh: bool,
) -> u32 {
    let old = load_state(region, id).map(|s| s.generation).unwrap_or(0);
    let generation = old.wrapping_add(1).max(1);
    store_state(region, id, MemberState::Connecting, generation);
    region
        .connector_field(id, F_PID)
        .store(me.pid as u64, Ordering::Relaxed);
    region
        .connector_field(id, F_START)
        .store(me.start_time, Ordering::Relaxed);
    region
        .connector_field(id, F_CLEANUP)
        .store(0, Ordering::Relaxed);
    region
        .connector_field(id, F_CONNECTED_NS)
        .store(now_ns(), Ordering::Relaxed);
    if fresh {
        set_name(region, id, name);
        for f in [
            F_HWM,
            F_REQUESTS,
            F_CONTENTION,
            F_FALSE,
            F_FAILED_NS,
            F_COMMITTED,
        ] {
            region.connector_field(id, f).store(0, Ordering::Relaxed);
        }
    }
    store_state(region, id, state, generation);
    generation
}

/// Return a slot to FREE, folding its counters into the structure's totals
/// (under the connect latch).
pub(crate) fn vacate(region: &Region, id: u32) {
    for (i, f) in [F_REQUESTS, F_CONTENTION, F_FALSE, F_COMMITTED]
        .into_iter()
        .enumerate()
    {
        let v = region.connector_field(id, f).swap(0, Ordering::Relaxed);
        region
            .lock_counter(i as u32)
            .fetch_add(v, Ordering::Relaxed);
    }
    region
        .connector_field(id, F_HWM)
        .store(0, Ordering::Relaxed);
    set_name(region, id, "");
    region
        .connector_field(id, F_PID)
        .store(0, Ordering::Relaxed);
    let generation = load_state(region, id).map(|s| s.generation).unwrap_or(0);
    store_state(region, id, MemberState::Free, generation);
}

/// A light, public view of one connector slot (for monitors that poll the
/// table often; `inspect::members` also reads every record).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotView {
    pub id: u32,
    pub state: MemberState,
    pub generation: u32,
    pub process: ProcessId,
    pub name: String,
}

/// Read connector slot `id` (checked).
pub fn slot_view(region: &Region, id: u32) -> Result<SlotView, CorruptError> {
    let id = region.check_member(id)?;
    let st = load_state(region, id)?;
    Ok(SlotView {
        id,
        state: st.state,
        generation: st.generation,
        process: process_of(region, id),
        name: name_of(region, id),
    })
}

impl SlotView {
    /// Is the recorded process of a slot that should have one still running?
    pub fn is_alive(&self) -> bool {
        self.state.has_process() && self.process.is_alive()
    }
}
