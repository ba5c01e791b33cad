//! The event ring: every step of a failure and its recovery is recorded in the
//! region (who died, who detected it and when, the restart request, the claim,
//! restart light, what it backed out and released), so that `cfctl display
//! events` can show it after the fact.
//!
//! A ring of `EVENT_CAPACITY` slots of 16 words; the header's word 0 counts
//! events ever written. A writer takes a sequence number with one fetch_add,
//! zeroes the slot's first word (marking it invalid), writes the fields, then
//! publishes `seq + 1` in the first word. A reader accepts a slot only if the
//! first word is the same nonzero value before and after it read the fields.
//! A writer killed halfway leaves a slot marked invalid: it is skipped.
//!
//! The counter is read from the (untrusted) region: a counter at or beyond
//! [`MAX_SEQ`] (2^62 events, which no run can write) is damage; nothing is
//! recorded on top of it (no `seq + 1` can overflow) and [`check`] reports it.

use crate::error::CorruptError;
use crate::shm::layout::EVENT_CAPACITY;
use crate::shm::region::Region;
use crate::shm::slots;
use crate::sync::now_ns;
use crate::sync::Ordering;

/// Kinds of events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A member's death was noticed (`a`: the dead process's PID).
    Detected,
    /// The dead member was cleaned up (`a` released, `b` retained, `c` discarded).
    CleanedUp,
    /// A restart request was posted.
    RequestPosted,
    /// A request was claimed (`a`: the claimer's PID; `b`: 1 if taken over from a dead claimer).
    Claimed,
    /// Restart light started (`a`: its PID).
    RestartLightStarted,
    /// Uncommitted work backed out (`a` transactions, `b` updates undone).
    BackedOut,
    /// Retained locks released (`a` locks).
    Released,
    /// Restart light disconnected and ended normally (`a` peak RSS in KiB, `b` its run time in ns, `c` its resident memory at the end without the shared region, KiB).
    TerminatedNormally,
    /// A restart-light process failed or was killed (`a`: exit code, or 128 + signal).
    RestartLightFailed,
    /// A member connected (`a`: PID).
    Connected,
    /// A member disconnected normally.
    Disconnected,
    /// A member restarted normally and recovered itself (`a` transactions backed out, `b` locks released).
    RecoveredAtRestart,
    /// The restart request of a member was completed: its recovery is over (once per request).
    RecoveryCompleted,
    /// A member's heartbeat is older than the failure detection interval (`a`: its age in ms).
    StatusUpdateMissing,
    /// A member whose status update was missing was fenced: SIGKILLed after the identity check (`a`: heartbeat age in ms, `b`: its PID, `c`: 1 by the operator).
    Fenced,
    /// A member declared status-update-missing beat again before it was fenced (`a`: how long it was missing, ms).
    StatusUpdateResumed,
    /// A waiting request of the member was a deadlock victim and answered
    /// `Deadlock` (`by`: the member whose detector told it; `a`: the cycle's
    /// length, `b`: how long it had waited, ns, `c`: the lock table entry).
    DeadlockVictim,
}

const KINDS: [EventKind; 17] = [
    EventKind::Detected,
    EventKind::CleanedUp,
    EventKind::RequestPosted,
    EventKind::Claimed,
    EventKind::RestartLightStarted,
    EventKind::BackedOut,
    EventKind::Released,
    EventKind::TerminatedNormally,
    EventKind::RestartLightFailed,
    EventKind::Connected,
    EventKind::Disconnected,
    EventKind::RecoveredAtRestart,
    EventKind::RecoveryCompleted,
    EventKind::StatusUpdateMissing,
    EventKind::Fenced,
    EventKind::StatusUpdateResumed,
    EventKind::DeadlockVictim,
];

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Detected => "detected",
            EventKind::CleanedUp => "cleaned_up",
            EventKind::RequestPosted => "request_posted",
            EventKind::Claimed => "claimed",
            EventKind::RestartLightStarted => "restart_light_started",
            EventKind::BackedOut => "backed_out",
            EventKind::Released => "released",
            EventKind::TerminatedNormally => "terminated_normally",
            EventKind::RestartLightFailed => "restart_light_failed",
            EventKind::Connected => "connected",
            EventKind::Disconnected => "disconnected",
            EventKind::RecoveredAtRestart => "recovered_at_restart",
            EventKind::RecoveryCompleted => "recovery_completed",
            EventKind::StatusUpdateMissing => "status_update_missing",
            EventKind::Fenced => "fenced",
            EventKind::StatusUpdateResumed => "status_update_resumed",
            EventKind::DeadlockVictim => "deadlock_victim",
        }
    }
    fn code(self) -> u64 {
        KINDS
            .iter()
            .position(|k| *k == self)
            .map_or(0, |i| i as u64 + 1)
    }
    fn from_code(c: u64) -> Option<EventKind> {
        KINDS.get((c as usize).checked_sub(1)?).copied()
    }
}

/// One event as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub seq: u64,
    pub kind: EventKind,
    /// The member the event is about.
    pub member: String,
    /// The member that acted, where one did.
    pub by: Option<String>,
    pub time_ns: u64,
    pub a: u64,
    pub b: u64,
    pub c: u64,
}

fn words_name(w: &[crate::sync::AtomicU64; 4]) -> String {
    String::from_utf8_lossy(&slots::load_name_bytes(w)).into_owned()
}

/// Sequence numbers stay below this; a larger counter is damage.
pub const MAX_SEQ: u64 = 1 << 62;

/// Record an event now. `payload` is `[a, b, c]`.
pub fn record(region: &Region, kind: EventKind, member: &str, by: Option<&str>, payload: [u64; 3]) {
    record_at(region, kind, member, by, payload, now_ns());
}

/// Record an event with an explicit time (e.g. the moment a death was seen).
pub fn record_at(
    region: &Region,
    kind: EventKind,
    member: &str,
    by: Option<&str>,
    payload: [u64; 3],
    time_ns: u64,
) {
    if region.is_read_only() {
        return;
    }
    // Take a sequence number, never from a damaged counter (no overflow).
    let head = &region.event_header().head;
    let mut seq = head.load(Ordering::Acquire);
    loop {
        if seq >= MAX_SEQ {
            return;
        }
        match head.compare_exchange(seq, seq + 1, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => break,
            Err(now) => seq = now,
        }
    }
    let Some(e) = region.event_slots().get((seq % EVENT_CAPACITY) as usize) else {
        return;
    };
    e.seq.store(0, Ordering::Release);
    e.kind
        .store(kind.code() | (by.is_some() as u64) << 32, Ordering::Relaxed);
    e.time_ns.store(time_ns, Ordering::Relaxed);
    for (w, v) in e.payload.iter().zip(payload) {
        w.store(v, Ordering::Relaxed);
    }
    slots::store_name(&e.member, member.as_bytes());
    slots::store_name(&e.by, by.unwrap_or("").as_bytes());
    e.seq.store(seq + 1, Ordering::Release);
}

/// Check the event ring as the readers see it: the counter below
/// [`MAX_SEQ`], and every complete slot (first word nonzero) holding an
/// event of its own position, not from the future, of a known kind. A
/// reader skips a slot that fails; `display events` and `verify` report it.
pub fn check(region: &Region) -> Result<(), CorruptError> {
    let head = region.event_header().head.load(Ordering::Acquire);
    if head >= MAX_SEQ {
        return Err(CorruptError::BadEvents(format!(
            "event counter {head} is beyond any run ({MAX_SEQ} events)"
        )));
    }
    for (i, e) in region.event_slots().iter().enumerate() {
        let s = e.seq.load(Ordering::Acquire);
        if s == 0 {
            continue;
        }
        let seq = s - 1;
        if seq % EVENT_CAPACITY != i as u64 || seq >= head {
            return Err(CorruptError::BadEvents(format!(
                "slot {i} holds event {seq}, which cannot be there (counter {head})"
            )));
        }
        let kind = e.kind.load(Ordering::Relaxed);
        if EventKind::from_code(kind & 0xffff_ffff).is_none() || kind >> 33 != 0 {
            return Err(CorruptError::BadEvents(format!(
                "slot {i} (event {seq}): unknown kind word {kind:#x}"
            )));
        }
    }
    Ok(())
}

/// Every readable event still in the ring, oldest first.
pub fn read_all(region: &Region) -> Vec<Event> {
    read_since(region, 0)
}

/// Events with sequence number >= `from`, oldest first.
pub fn read_since(region: &Region, from: u64) -> Vec<Event> {
    let head = region.event_header().head.load(Ordering::Acquire);
    if head >= MAX_SEQ {
        return Vec::new(); // damaged: `check` says so
    }
    let start = head.saturating_sub(EVENT_CAPACITY).max(from);
    let mut out = Vec::new();
    for seq in start..head {
        let e = &region.event_slots()[(seq % EVENT_CAPACITY) as usize];
        let s1 = e.seq.load(Ordering::Acquire);
        if s1 != seq + 1 {
            continue;
        }
        let kind_word = e.kind.load(Ordering::Relaxed);
        let time_ns = e.time_ns.load(Ordering::Relaxed);
        let abc = [0, 1, 2].map(|i| e.payload[i].load(Ordering::Relaxed));
        let name = words_name(&e.member);
        let by = words_name(&e.by);
        crate::sync::fence_acquire();
        if e.seq.load(Ordering::Relaxed) != s1 {
            continue;
        }
        let Some(kind) = EventKind::from_code(kind_word & 0xffff_ffff) else {
            continue;
        };
        out.push(Event {
            seq,
            kind,
            member: name,
            by: (kind_word >> 32 & 1 == 1).then_some(by),
            time_ns,
            a: abc[0],
            b: abc[1],
            c: abc[2],
        });
    }
    out
}

/// Sequence number the next event will get.
pub fn next_seq(region: &Region) -> u64 {
    region.event_header().head.load(Ordering::Acquire)
}
