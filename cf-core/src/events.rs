//! The event ring: every step of a failure and its recovery is recorded in the
//! region (who died, who detected it and when, the restart request, the claim,
//! restart light, what it backed out and released), so that `cfctl display
//! events` can show it after the fact.
//!
//! A ring of `EVENT_CAPACITY` slots of 16 words; the header's word 0 counts
//! events ever written. A writer takes a sequence number with a CAS on it,
//! zeroes the slot's first word (marking it invalid), writes the fields, then
//! publishes `seq + 1` in the first word. A reader accepts a slot only if the
//! first word is the same nonzero value before and after it read the fields.
//! A writer killed halfway leaves a slot marked invalid: it is skipped.
//!
//! The counter is read from the (untrusted) region: a counter at or beyond
//! [`MAX_SEQ`] (2^62 events, which no run can write) is damage; nothing is
//! recorded on top of it (no `seq + 1` can overflow) and [`check`] reports it.
//!
//! # Typed data
//!
//! What an event says is an [`EventData`]: one variant per [`EventKind`],
//! with named, typed fields (a PID is a `u32`, a flag a `bool`, how a request
//! was completed a [`Completion`]). In the slot it is a kind word and three
//! payload words; [`EventData::encode`] and [`EventData::decode`] are the only
//! code that knows which word holds which field. Writers give [`record`] an
//! `EventData`; readers get one in [`Event::data`].
//!
//! Decoding is strict, because the region is untrusted: a PID or an epoch
//! above `u32::MAX`, a flag word other than 0 or 1, an unknown completion
//! code, or a nonzero word the kind does not use decodes to `None` (never a
//! panic, never a value clamped into range). Such a slot is handled like one
//! of an unknown kind: [`read_all`] and [`read_since`] skip it, and [`check`]
//! (so `cfctl verify` and `cfctl display events`) reports it as damage.

use crate::error::CorruptError;
use crate::shm::layout::EVENT_CAPACITY;
use crate::shm::region::Region;
use crate::shm::slots::{self, EventSlot};
use crate::sync::now_ns;
use crate::sync::Ordering;

/// Kinds of events: what an [`EventData`] is, without its fields (for
/// filtering and for names). Each variant's data is the [`EventData`]
/// variant of the same name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A member's death was noticed ([`EventData::Detected`]).
    Detected,
    /// The dead member was cleaned up ([`EventData::CleanedUp`]).
    CleanedUp,
    /// A restart request was posted ([`EventData::RequestPosted`]).
    RequestPosted,
    /// A request was claimed ([`EventData::Claimed`]).
    Claimed,
    /// Restart light started ([`EventData::RestartLightStarted`]).
    RestartLightStarted,
    /// Uncommitted work backed out ([`EventData::BackedOut`]).
    BackedOut,
    /// Retained locks released ([`EventData::Released`]).
    Released,
    /// Restart light disconnected and ended normally ([`EventData::TerminatedNormally`]).
    TerminatedNormally,
    /// A restart-light process failed or was killed ([`EventData::RestartLightFailed`]).
    RestartLightFailed,
    /// A member connected ([`EventData::Connected`]).
    Connected,
    /// A member disconnected normally ([`EventData::Disconnected`]).
    Disconnected,
    /// A member restarted normally and recovered itself ([`EventData::RecoveredAtRestart`]).
    RecoveredAtRestart,
    /// The restart request of a member was completed: its recovery is over
    /// (once per request; [`EventData::RecoveryCompleted`]).
    RecoveryCompleted,
    /// A member's heartbeat is older than the failure detection interval
    /// ([`EventData::StatusUpdateMissing`]).
    StatusUpdateMissing,
    /// A member whose status update was missing was fenced: SIGKILLed after
    /// the identity check ([`EventData::Fenced`]).
    Fenced,
    /// A member declared status-update-missing beat again before it was
    /// fenced ([`EventData::StatusUpdateResumed`]).
    StatusUpdateResumed,
    /// A waiting request of the member was a deadlock victim and answered
    /// `Deadlock` ([`EventData::DeadlockVictim`]).
    DeadlockVictim,
}

/// Every kind, in the order of their codes in the slot's kind word (1-based).
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
    /// Every kind, in the order of their codes.
    pub const ALL: [EventKind; 17] = KINDS;

    /// The kind's name as `display events --json` and the sim's reports
    /// print it (`snake_case`, e.g. `recovery_completed`).
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

/// How a restart request came to be completed, in
/// [`EventData::RecoveryCompleted`] (the slot holds its code, 0 to 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "snake_case")
)]
pub enum Completion {
    /// Completed by `requests::complete` and recorded at once by its
    /// completer: a restart light after it disconnected, a handler that
    /// found the member already recovered, the poster of a newer failure of
    /// the slot, a member restarting normally for a request left for its
    /// previous life (code 0).
    Completed,
    /// Recorded by the handler whose restart light was killed between the
    /// completion and its event: the request is no longer outstanding and
    /// no completion of its epoch was recorded since the claim (code 1).
    ForKilledLight,
    /// Completed by the member's own normal restart, just before it became
    /// ACTIVE (`requests::complete_outstanding`): a death after it is a new
    /// failure, so the sim's checker starts a new life of the member at this
    /// event (code 2).
    OwnRestart,
}

impl Completion {
    fn code(self) -> u64 {
        match self {
            Completion::Completed => 0,
            Completion::ForKilledLight => 1,
            Completion::OwnRestart => 2,
        }
    }
    fn from_code(c: u64) -> Option<Completion> {
        match c {
            0 => Some(Completion::Completed),
            1 => Some(Completion::ForKilledLight),
            2 => Some(Completion::OwnRestart),
            _ => None,
        }
    }
}

/// What an event says: its kind with the data of that kind. Converted to and
/// from the slot's words only by [`encode`](EventData::encode) and
/// [`decode`](EventData::decode) (the module documentation has the rules).
///
/// With the `serde` feature it serializes as an object tagged by `kind`
/// (the [`EventKind::as_str`] name) with the variant's fields, e.g.
/// `{"kind": "claimed", "pid": 41, "taken_over": false}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(tag = "kind", rename_all = "snake_case")
)]
pub enum EventData {
    /// A member's death was noticed (recorded at the moment it was seen).
    Detected {
        /// The dead process's PID.
        pid: u32,
    },
    /// The dead member was cleaned up: its records settled.
    CleanedUp {
        /// Non-modify locks released.
        released: u64,
        /// Modify locks retained (until its recovery backs its work out).
        retained: u64,
        /// Pending requests and half-made records freed.
        discarded: u64,
    },
    /// A restart request was posted.
    RequestPosted {
        /// The request's epoch (its [`RecoveryCompleted`](EventData::RecoveryCompleted) has the same).
        epoch: u32,
    },
    /// A request was claimed by the member in [`Event::by`].
    Claimed {
        /// The claimer's PID.
        pid: u32,
        /// Taken over from a dead claimer (not a pending request).
        taken_over: bool,
    },
    /// Restart light started.
    RestartLightStarted {
        /// The restart light's PID.
        pid: u32,
    },
    /// Uncommitted work backed out (by a restart light).
    BackedOut {
        /// Transactions backed out.
        transactions: u64,
        /// Updates undone (before images restored).
        updates_undone: u64,
    },
    /// Retained locks released (by a restart light).
    Released {
        /// Locks released.
        locks: u64,
    },
    /// Restart light disconnected and ended normally.
    TerminatedNormally {
        /// Its peak resident memory (`VmHWM`), KiB.
        peak_rss_kib: u64,
        /// Its run time, ns.
        elapsed_ns: u64,
        /// Its resident memory at the end without the shared region, KiB.
        rss_without_region_kib: u64,
    },
    /// A restart-light process failed or was killed.
    RestartLightFailed {
        /// Its exit code, or 128 + the signal that killed it.
        status: u64,
        /// Failures of restart lights for this claim so far.
        failures: u64,
        /// The claimer gave up: the request is marked FAILED (the event a
        /// claim records once, after its last attempt).
        gave_up: bool,
    },
    /// A member connected.
    Connected {
        /// The member process's PID.
        pid: u32,
    },
    /// A member disconnected normally.
    Disconnected,
    /// A member restarted normally and recovered itself.
    RecoveredAtRestart {
        /// Transactions backed out.
        transactions: u64,
        /// Retained locks released.
        locks: u64,
    },
    /// The restart request of a member was completed: its recovery is over
    /// (once per request; a handler may record it for its killed restart
    /// light, so the same epoch can be recorded twice).
    RecoveryCompleted {
        /// The epoch of the request completed (as in its [`RequestPosted`](EventData::RequestPosted)).
        epoch: u32,
        /// Who completed it, and how.
        how: Completion,
    },
    /// A member's heartbeat is older than the failure detection interval.
    StatusUpdateMissing {
        /// The heartbeat's age, ms.
        heartbeat_age_ms: u64,
    },
    /// A member whose status update was missing was fenced: SIGKILLed after
    /// the identity check.
    Fenced {
        /// The heartbeat's age when it was fenced, ms.
        heartbeat_age_ms: u64,
        /// The fenced process's PID.
        pid: u32,
        /// Fenced by the operator (`cfctl fence`), not by a liveness watcher.
        by_operator: bool,
    },
    /// A member declared status-update-missing beat again before it was fenced.
    StatusUpdateResumed {
        /// How long its status update was missing, ms.
        missing_ms: u64,
    },
    /// A waiting request of the member was a deadlock victim and answered
    /// `Deadlock` (`deadlock.rs`); [`Event::by`] is the member whose
    /// detector told it (none: a tool).
    DeadlockVictim {
        /// Requests in the cycle.
        cycle_length: u64,
        /// How long the victim had waited, ns.
        waited_ns: u64,
        /// The lock table entry it waited on.
        entry: u32,
    },
}

/// A word holding a PID or an epoch: `None` above `u32::MAX`.
fn word_u32(w: u64) -> Option<u32> {
    u32::try_from(w).ok()
}

/// A word holding a flag: 0 or 1, anything else is `None`.
fn word_bool(w: u64) -> Option<bool> {
    match w {
        0 => Some(false),
        1 => Some(true),
        _ => None,
    }
}

/// Words a kind does not use must be zero.
fn unused(words: &[u64]) -> Option<()> {
    words.iter().all(|w| *w == 0).then_some(())
}

impl EventData {
    /// The kind of this data.
    pub fn kind(&self) -> EventKind {
        match self {
            EventData::Detected { .. } => EventKind::Detected,
            EventData::CleanedUp { .. } => EventKind::CleanedUp,
            EventData::RequestPosted { .. } => EventKind::RequestPosted,
            EventData::Claimed { .. } => EventKind::Claimed,
            EventData::RestartLightStarted { .. } => EventKind::RestartLightStarted,
            EventData::BackedOut { .. } => EventKind::BackedOut,
            EventData::Released { .. } => EventKind::Released,
            EventData::TerminatedNormally { .. } => EventKind::TerminatedNormally,
            EventData::RestartLightFailed { .. } => EventKind::RestartLightFailed,
            EventData::Connected { .. } => EventKind::Connected,
            EventData::Disconnected => EventKind::Disconnected,
            EventData::RecoveredAtRestart { .. } => EventKind::RecoveredAtRestart,
            EventData::RecoveryCompleted { .. } => EventKind::RecoveryCompleted,
            EventData::StatusUpdateMissing { .. } => EventKind::StatusUpdateMissing,
            EventData::Fenced { .. } => EventKind::Fenced,
            EventData::StatusUpdateResumed { .. } => EventKind::StatusUpdateResumed,
            EventData::DeadlockVictim { .. } => EventKind::DeadlockVictim,
        }
    }

    /// The slot's form: the kind and the three payload words, fields in
    /// declaration order from the first word, unused words zero, a flag 0 or
    /// 1, a [`Completion`] its code. The only place that lays fields out in
    /// words; [`decode`](EventData::decode) is its exact inverse.
    pub fn encode(&self) -> (EventKind, [u64; 3]) {
        let words = match *self {
            EventData::Detected { pid }
            | EventData::RestartLightStarted { pid }
            | EventData::Connected { pid } => [u64::from(pid), 0, 0],
            EventData::CleanedUp {
                released,
                retained,
                discarded,
            } => [released, retained, discarded],
            EventData::RequestPosted { epoch } => [u64::from(epoch), 0, 0],
            EventData::Claimed { pid, taken_over } => [u64::from(pid), u64::from(taken_over), 0],
            EventData::BackedOut {
                transactions,
                updates_undone,
            } => [transactions, updates_undone, 0],
            EventData::Released { locks } => [locks, 0, 0],
            EventData::TerminatedNormally {
                peak_rss_kib,
                elapsed_ns,
                rss_without_region_kib,
            } => [peak_rss_kib, elapsed_ns, rss_without_region_kib],
            EventData::RestartLightFailed {
                status,
                failures,
                gave_up,
            } => [status, failures, u64::from(gave_up)],
            EventData::Disconnected => [0, 0, 0],
            EventData::RecoveredAtRestart {
                transactions,
                locks,
            } => [transactions, locks, 0],
            EventData::RecoveryCompleted { epoch, how } => [u64::from(epoch), how.code(), 0],
            EventData::StatusUpdateMissing { heartbeat_age_ms } => [heartbeat_age_ms, 0, 0],
            EventData::Fenced {
                heartbeat_age_ms,
                pid,
                by_operator,
            } => [heartbeat_age_ms, u64::from(pid), u64::from(by_operator)],
            EventData::StatusUpdateResumed { missing_ms } => [missing_ms, 0, 0],
            EventData::DeadlockVictim {
                cycle_length,
                waited_ns,
                entry,
            } => [cycle_length, waited_ns, u64::from(entry)],
        };
        (self.kind(), words)
    }

    /// The data a slot of `kind` with payload `words` holds, or `None` if
    /// the words are no data of that kind: a PID or an epoch above
    /// `u32::MAX`, a flag other than 0 or 1, an unknown [`Completion`] code,
    /// a nonzero word the kind does not use. Never panics, whatever the
    /// words (they come from the untrusted region). `decode(k, w) ==
    /// Some(d)` exactly when `d.encode() == (k, w)`.
    pub fn decode(kind: EventKind, words: [u64; 3]) -> Option<EventData> {
        let [a, b, c] = words;
        Some(match kind {
            EventKind::Detected => {
                unused(&[b, c])?;
                EventData::Detected { pid: word_u32(a)? }
            }
            EventKind::CleanedUp => EventData::CleanedUp {
                released: a,
                retained: b,
                discarded: c,
            },
            EventKind::RequestPosted => {
                unused(&[b, c])?;
                EventData::RequestPosted {
                    epoch: word_u32(a)?,
                }
            }
            EventKind::Claimed => {
                unused(&[c])?;
                EventData::Claimed {
                    pid: word_u32(a)?,
                    taken_over: word_bool(b)?,
                }
            }
            EventKind::RestartLightStarted => {
                unused(&[b, c])?;
                EventData::RestartLightStarted { pid: word_u32(a)? }
            }
            EventKind::BackedOut => {
                unused(&[c])?;
                EventData::BackedOut {
                    transactions: a,
                    updates_undone: b,
                }
            }
            EventKind::Released => {
                unused(&[b, c])?;
                EventData::Released { locks: a }
            }
            EventKind::TerminatedNormally => EventData::TerminatedNormally {
                peak_rss_kib: a,
                elapsed_ns: b,
                rss_without_region_kib: c,
            },
            EventKind::RestartLightFailed => EventData::RestartLightFailed {
                status: a,
                failures: b,
                gave_up: word_bool(c)?,
            },
            EventKind::Connected => {
                unused(&[b, c])?;
                EventData::Connected { pid: word_u32(a)? }
            }
            EventKind::Disconnected => {
                unused(&[a, b, c])?;
                EventData::Disconnected
            }
            EventKind::RecoveredAtRestart => {
                unused(&[c])?;
                EventData::RecoveredAtRestart {
                    transactions: a,
                    locks: b,
                }
            }
            EventKind::RecoveryCompleted => {
                unused(&[c])?;
                EventData::RecoveryCompleted {
                    epoch: word_u32(a)?,
                    how: Completion::from_code(b)?,
                }
            }
            EventKind::StatusUpdateMissing => {
                unused(&[b, c])?;
                EventData::StatusUpdateMissing {
                    heartbeat_age_ms: a,
                }
            }
            EventKind::Fenced => EventData::Fenced {
                heartbeat_age_ms: a,
                pid: word_u32(b)?,
                by_operator: word_bool(c)?,
            },
            EventKind::StatusUpdateResumed => {
                unused(&[b, c])?;
                EventData::StatusUpdateResumed { missing_ms: a }
            }
            EventKind::DeadlockVictim => EventData::DeadlockVictim {
                cycle_length: a,
                waited_ns: b,
                entry: word_u32(c)?,
            },
        })
    }
}

/// One event as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Its sequence number (0 for the first event ever recorded).
    pub seq: u64,
    /// The member the event is about.
    pub member: String,
    /// The member that acted, where one did.
    pub by: Option<String>,
    /// When it happened (the writer's clock, ns since the Unix epoch).
    pub time_ns: u64,
    /// What it says: its kind and the typed data of that kind.
    pub data: EventData,
}

impl Event {
    /// The event's kind (of its [`data`](Event::data)).
    pub fn kind(&self) -> EventKind {
        self.data.kind()
    }
}

fn name_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Sequence numbers stay below this; a larger counter is damage.
pub const MAX_SEQ: u64 = 1 << 62;

/// Record an event about `member` (by `by`, where a member acted) now.
pub fn record(region: &Region, member: &str, by: Option<&str>, data: EventData) {
    record_at(region, member, by, data, now_ns());
}

/// Record an event with an explicit time (e.g. the moment a death was seen).
/// Nothing is recorded on a read-only region or on a damaged counter.
pub fn record_at(region: &Region, member: &str, by: Option<&str>, data: EventData, time_ns: u64) {
    if region.is_read_only() {
        return;
    }
    let (kind, payload) = data.encode();
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
    e.seq.store(0, Ordering::Relaxed);
    // The fields' stores may not be seen before the slot is marked invalid:
    // a reader that sees a new field then sees 0 (or the new number) on its
    // second read of `seq` and rejects (or accepts) the whole slot.
    crate::sync::fence_release();
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

/// A consistent copy of one complete slot, its words not yet interpreted.
struct RawSlot {
    /// The first word: `seq + 1`.
    published: u64,
    kind_word: u64,
    time_ns: u64,
    payload: [u64; 3],
    member: Vec<u8>,
    by: Vec<u8>,
}

/// Copy slot `e` if it is complete and was not rewritten while it was read
/// (the same nonzero first word before and after); `None` otherwise (empty,
/// or a writer at work: a torn copy is never interpreted).
fn load_slot(e: &EventSlot) -> Option<RawSlot> {
    let published = e.seq.load(Ordering::Acquire);
    if published == 0 {
        return None;
    }
    let kind_word = e.kind.load(Ordering::Relaxed);
    let time_ns = e.time_ns.load(Ordering::Relaxed);
    let payload = [0, 1, 2].map(|i| e.payload[i].load(Ordering::Relaxed));
    let member = slots::load_name_bytes(&e.member);
    let by = slots::load_name_bytes(&e.by);
    crate::sync::fence_acquire();
    if e.seq.load(Ordering::Relaxed) != published {
        return None;
    }
    Some(RawSlot {
        published,
        kind_word,
        time_ns,
        payload,
        member,
        by,
    })
}

impl RawSlot {
    /// The kind named by the kind word, if it is one and no bit beyond the
    /// "has by" flag is set.
    fn kind(&self) -> Option<EventKind> {
        if self.kind_word >> 33 != 0 {
            return None;
        }
        EventKind::from_code(self.kind_word & 0xffff_ffff)
    }

    /// The slot as an event: `None` for an unknown kind word or a payload
    /// that is no data of its kind ([`EventData::decode`]).
    fn event(self, seq: u64) -> Option<Event> {
        let data = EventData::decode(self.kind()?, self.payload)?;
        Some(Event {
            seq,
            member: name_of(&self.member),
            by: (self.kind_word >> 32 & 1 == 1).then(|| name_of(&self.by)),
            time_ns: self.time_ns,
            data,
        })
    }
}

/// Check the event ring as the readers see it: the counter below
/// [`MAX_SEQ`], and every complete slot (first word nonzero, not being
/// rewritten) holding an event of its own position, not from the future, of
/// a known kind, with a payload that is data of that kind
/// ([`EventData::decode`]). A reader skips a slot that fails; `display
/// events` and `verify` report it.
pub fn check(region: &Region) -> Result<(), CorruptError> {
    let head = region.event_header().head.load(Ordering::Acquire);
    if head >= MAX_SEQ {
        return Err(CorruptError::BadEvents(format!(
            "event counter {head} is beyond any run ({MAX_SEQ} events)"
        )));
    }
    for (i, e) in region.event_slots().iter().enumerate() {
        let Some(raw) = load_slot(e) else {
            continue;
        };
        let seq = raw.published - 1;
        // An event recorded during the scan is newer than the counter read
        // before it: read the counter again before calling it damage.
        let head = if seq >= head {
            region.event_header().head.load(Ordering::Acquire)
        } else {
            head
        };
        if seq % EVENT_CAPACITY != i as u64 || seq >= head {
            return Err(CorruptError::BadEvents(format!(
                "slot {i} holds event {seq}, which cannot be there (counter {head})"
            )));
        }
        let Some(kind) = raw.kind() else {
            return Err(CorruptError::BadEvents(format!(
                "slot {i} (event {seq}): unknown kind word {:#x}",
                raw.kind_word
            )));
        };
        if EventData::decode(kind, raw.payload).is_none() {
            let [a, b, c] = raw.payload;
            return Err(CorruptError::BadEvents(format!(
                "slot {i} (event {seq}): payload [{a:#x}, {b:#x}, {c:#x}] is no {} data",
                kind.as_str()
            )));
        }
    }
    Ok(())
}

/// Every readable event still in the ring, oldest first.
pub fn read_all(region: &Region) -> Vec<Event> {
    read_since(region, 0)
}

/// Events with sequence number >= `from`, oldest first. A slot being
/// written, torn, overwritten, of an unknown kind or with a payload that is
/// no data of its kind is skipped ([`check`] reports the last two).
pub fn read_since(region: &Region, from: u64) -> Vec<Event> {
    let head = region.event_header().head.load(Ordering::Acquire);
    if head >= MAX_SEQ {
        return Vec::new(); // damaged: `check` says so
    }
    let start = head.saturating_sub(EVENT_CAPACITY).max(from);
    let mut out = Vec::new();
    for seq in start..head {
        let e = &region.event_slots()[(seq % EVENT_CAPACITY) as usize];
        let Some(raw) = load_slot(e) else {
            continue;
        };
        if raw.published != seq + 1 {
            continue;
        }
        if let Some(ev) = raw.event(seq) {
            out.push(ev);
        }
    }
    out
}

/// Sequence number the next event will get.
pub fn next_seq(region: &Region) -> u64 {
    region.event_header().head.load(Ordering::Acquire)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn completion() -> impl Strategy<Value = Completion> {
        prop_oneof![
            Just(Completion::Completed),
            Just(Completion::ForKilledLight),
            Just(Completion::OwnRestart),
        ]
    }

    /// Any data of any kind.
    fn data() -> impl Strategy<Value = EventData> {
        use EventData::*;
        prop_oneof![
            any::<u32>().prop_map(|pid| Detected { pid }),
            any::<(u64, u64, u64)>().prop_map(|(released, retained, discarded)| CleanedUp {
                released,
                retained,
                discarded
            }),
            any::<u32>().prop_map(|epoch| RequestPosted { epoch }),
            any::<(u32, bool)>().prop_map(|(pid, taken_over)| Claimed { pid, taken_over }),
            any::<u32>().prop_map(|pid| RestartLightStarted { pid }),
            any::<(u64, u64)>().prop_map(|(transactions, updates_undone)| BackedOut {
                transactions,
                updates_undone
            }),
            any::<u64>().prop_map(|locks| Released { locks }),
            any::<(u64, u64, u64)>().prop_map(
                |(peak_rss_kib, elapsed_ns, rss_without_region_kib)| TerminatedNormally {
                    peak_rss_kib,
                    elapsed_ns,
                    rss_without_region_kib
                }
            ),
            any::<(u64, u64, bool)>().prop_map(|(status, failures, gave_up)| {
                RestartLightFailed {
                    status,
                    failures,
                    gave_up,
                }
            }),
            any::<u32>().prop_map(|pid| Connected { pid }),
            Just(Disconnected),
            any::<(u64, u64)>().prop_map(|(transactions, locks)| RecoveredAtRestart {
                transactions,
                locks
            }),
            (any::<u32>(), completion()).prop_map(|(epoch, how)| RecoveryCompleted { epoch, how }),
            any::<u64>().prop_map(|heartbeat_age_ms| StatusUpdateMissing { heartbeat_age_ms }),
            any::<(u64, u32, bool)>().prop_map(|(heartbeat_age_ms, pid, by_operator)| Fenced {
                heartbeat_age_ms,
                pid,
                by_operator
            }),
            any::<u64>().prop_map(|missing_ms| StatusUpdateResumed { missing_ms }),
            any::<(u64, u64, u32)>().prop_map(|(cycle_length, waited_ns, entry)| {
                DeadlockVictim {
                    cycle_length,
                    waited_ns,
                    entry,
                }
            }),
        ]
    }

    /// Payload words near the edges of every field's range.
    fn word() -> impl Strategy<Value = u64> {
        prop_oneof![
            0u64..4,
            Just(u64::from(u32::MAX)),
            Just(u64::from(u32::MAX) + 1),
            Just(u64::MAX),
            any::<u64>(),
        ]
    }

    fn kind() -> impl Strategy<Value = EventKind> {
        proptest::sample::select(EventKind::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn every_data_round_trips(d in data()) {
            let (k, w) = d.encode();
            prop_assert_eq!(k, d.kind());
            prop_assert_eq!(EventData::decode(k, w), Some(d));
        }

        /// Whatever the words, decoding does not panic, and what it accepts
        /// encodes back to the same words: no two slots decode alike, and
        /// nothing out of range is clamped into a value.
        #[test]
        fn decode_accepts_only_what_encode_writes(k in kind(), w in [word(), word(), word()]) {
            if let Some(d) = EventData::decode(k, w) {
                prop_assert_eq!(d.encode(), (k, w));
            }
        }
    }

    /// One example of each kind's data, in the order of [`EventKind::ALL`].
    fn one_of_each() -> Vec<EventData> {
        use EventData::*;
        vec![
            Detected { pid: 7 },
            CleanedUp {
                released: 1,
                retained: 2,
                discarded: 3,
            },
            RequestPosted { epoch: 9 },
            Claimed {
                pid: 8,
                taken_over: true,
            },
            RestartLightStarted { pid: u32::MAX },
            BackedOut {
                transactions: 2,
                updates_undone: 5,
            },
            Released { locks: 4 },
            TerminatedNormally {
                peak_rss_kib: 1,
                elapsed_ns: 2,
                rss_without_region_kib: 3,
            },
            RestartLightFailed {
                status: 137,
                failures: 3,
                gave_up: true,
            },
            Connected { pid: 1 },
            Disconnected,
            RecoveredAtRestart {
                transactions: 1,
                locks: 2,
            },
            RecoveryCompleted {
                epoch: 3,
                how: Completion::OwnRestart,
            },
            StatusUpdateMissing {
                heartbeat_age_ms: 1500,
            },
            Fenced {
                heartbeat_age_ms: 2000,
                pid: 6,
                by_operator: true,
            },
            StatusUpdateResumed { missing_ms: 30 },
            DeadlockVictim {
                cycle_length: 2,
                waited_ns: 100,
                entry: 5,
            },
        ]
    }

    #[test]
    fn every_kind_has_its_data_and_the_words_of_today() {
        let all = one_of_each();
        let kinds: Vec<EventKind> = all.iter().map(EventData::kind).collect();
        assert_eq!(kinds, EventKind::ALL);
        // The slot layout of the words, as writers before typed data wrote
        // them (regions are shared with them: no layout version change).
        let words: Vec<[u64; 3]> = all.iter().map(|d| d.encode().1).collect();
        assert_eq!(
            words,
            [
                [7, 0, 0],
                [1, 2, 3],
                [9, 0, 0],
                [8, 1, 0],
                [u64::from(u32::MAX), 0, 0],
                [2, 5, 0],
                [4, 0, 0],
                [1, 2, 3],
                [137, 3, 1],
                [1, 0, 0],
                [0, 0, 0],
                [1, 2, 0],
                [3, 2, 0],
                [1500, 0, 0],
                [2000, 6, 1],
                [30, 0, 0],
                [2, 100, 5],
            ]
        );
        for (c, code) in [
            (Completion::Completed, 0),
            (Completion::ForKilledLight, 1),
            (Completion::OwnRestart, 2),
        ] {
            let d = EventData::RecoveryCompleted { epoch: 1, how: c };
            assert_eq!(d.encode().1, [1, code, 0]);
        }
    }

    #[test]
    fn damaged_payloads_decode_to_none() {
        use EventKind::*;
        let big = u64::from(u32::MAX) + 1;
        for (k, w) in [
            // A PID or an epoch above u32::MAX.
            (Detected, [big, 0, 0]),
            (RequestPosted, [u64::MAX, 0, 0]),
            (Claimed, [big, 0, 0]),
            (RestartLightStarted, [big, 0, 0]),
            (Connected, [u64::MAX, 0, 0]),
            (RecoveryCompleted, [big, 0, 0]),
            (Fenced, [10, big, 0]),
            // A flag word not 0 or 1.
            (Claimed, [1, 2, 0]),
            (RestartLightFailed, [137, 1, 2]),
            (Fenced, [10, 1, u64::MAX]),
            // An unknown completion code.
            (RecoveryCompleted, [1, 3, 0]),
            (RecoveryCompleted, [1, u64::MAX, 0]),
            // A word the kind does not use, nonzero.
            (Detected, [1, 1, 0]),
            (Disconnected, [0, 0, 1]),
            (BackedOut, [1, 1, 1]),
            (StatusUpdateResumed, [5, 0, 9]),
        ] {
            assert_eq!(EventData::decode(k, w), None, "{k:?} {w:?}");
        }
    }

    fn region() -> (tempfile::TempDir, crate::Plex, Region) {
        let dir = tempfile::tempdir().unwrap();
        let plex = crate::Plex {
            dir: dir.path().join("p"),
        };
        let r = Region::create(&plex, &crate::CreateOptions::small_for_tests()).unwrap();
        (dir, plex, r)
    }

    #[test]
    fn recorded_data_is_read_back() {
        let (_t, _plex, r) = region();
        let all = one_of_each();
        for (i, d) in all.iter().enumerate() {
            let by = (i % 2 == 0).then_some("B");
            record_at(&r, "A", by, *d, 1000 + i as u64);
        }
        check(&r).unwrap();
        let got = read_all(&r);
        assert_eq!(got.len(), all.len());
        for (i, (e, d)) in got.iter().zip(&all).enumerate() {
            assert_eq!(e.seq, i as u64);
            assert_eq!(e.data, *d);
            assert_eq!(e.kind(), d.kind());
            assert_eq!(e.member, "A");
            assert_eq!(e.by.as_deref(), (i % 2 == 0).then_some("B"));
            assert_eq!(e.time_ns, 1000 + i as u64);
        }
    }

    #[test]
    fn a_slot_with_a_damaged_payload_is_skipped_and_reported() {
        let (_t, _plex, r) = region();
        record(&r, "A", None, EventData::Connected { pid: 1 });
        record(
            &r,
            "A",
            Some("B"),
            EventData::Claimed {
                pid: 2,
                taken_over: false,
            },
        );
        record(&r, "A", None, EventData::Disconnected);
        // Another process writes a flag word of 7 into the claim (the mapping
        // is shared: damage comes through the region, not through `record`).
        r.event_slots()[1].payload[1].store(7, Ordering::Relaxed);
        let got = read_all(&r);
        let seqs: Vec<u64> = got.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [0, 2], "the damaged claim is skipped");
        let err = check(&r).unwrap_err().to_string();
        assert!(
            err.contains("slot 1 (event 1)") && err.contains("no claimed data"),
            "{err}"
        );
        // Put back, the slot reads again.
        r.event_slots()[1].payload[1].store(0, Ordering::Relaxed);
        check(&r).unwrap();
        assert_eq!(read_all(&r).len(), 3);
    }
}
