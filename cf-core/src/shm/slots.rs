//! The typed structures of the region: every one is `#[repr(C)]`, made only of
//! atomics (another process, or a hostile one, may write any of them at any
//! time), and pinned by size and offset assertions so the file layout cannot
//! drift. `region.rs` is the only place that turns bytes of the mapping into
//! references to them. Under `--cfg loom` the same structures are built from
//! loom's atomics (and lose their padding), so the models run this code.

use crate::sync::{AtomicU32, AtomicU64};

/// One connector (member) slot: 256 bytes. See `connector/slot.rs`.
#[repr(C)]
#[derive(Default)]
pub(crate) struct ConnectorSlot {
    /// `[generation:32][unused:24][state:8]`.
    pub state: AtomicU64,
    /// Cleanup claim: token of the process cleaning this member up (0: none).
    pub cleanup: AtomicU64,
    /// PID of the connected process (a `u32`; 0 once the slot is vacated).
    pub pid: AtomicU64,
    /// Start time of the process (clock ticks since boot, `/proc/<pid>/stat` field 22).
    pub start_time: AtomicU64,
    /// Member name, NUL-padded, little-endian words.
    pub name: [AtomicU64; 4],
    /// Record high-water mark, in blocks.
    pub hwm: AtomicU64,
    /// Lock requests of this connection, folded in from its holders' blocks
    /// when they go back to the pool (live blocks count their own).
    pub requests: AtomicU64,
    /// Requests that met a real conflict, folded in likewise.
    pub contention: AtomicU64,
    /// Requests that met another resource on the same entry (false
    /// contention), folded in likewise.
    pub false_contention: AtomicU64,
    /// When the connection was made: wall-clock ns since the Unix epoch.
    pub connected_ns: AtomicU64,
    /// When a cleanup made the member failed-persistent: wall-clock ns since
    /// the Unix epoch (0: never, since the slot's last fresh connect).
    pub failed_ns: AtomicU64,
    /// Transactions the member's application reported committed.
    pub committed: AtomicU64,
    /// Bumped by every fresh connect (not by a reconnect that recovers a
    /// failed member): which occupant of the slot a restart request is for.
    pub incarnation: AtomicU64,
    /// The liveness word (`connector/liveness.rs`): the TID of the member's
    /// liveness thread, held in that thread's robust-futex list, so the
    /// kernel sets `FUTEX_OWNER_DIED` in it (and wakes a waiter) when the
    /// thread dies. 0: none registered.
    pub liveness: AtomicU32,
    /// The generation of the connection that registered `liveness`.
    pub liveness_gen: AtomicU32,
    /// `[milliseconds of CLOCK_MONOTONIC:56][flags:8]` (`liveness.rs`): the
    /// member's heartbeat, status-update-missing and fenced. 0: no heartbeat.
    pub heartbeat: AtomicU64,
    /// The beat period (ms) the connection's liveness thread uses, written by
    /// it with every beat (0: none): survivors judge its heartbeat by this,
    /// not by the plex's interval as they read it (`liveness.rs`).
    pub beat_period_ms: AtomicU64,
    /// Lock requests of this connection refused because a failed member
    /// retains the resource (`incompatible retained lock`).
    pub retained_refusals: AtomicU64,
    /// Sampled synchronous service times (`lock/service.rs`): how many of
    /// the sampled requests took each bucket's time.
    pub service_ns: [AtomicU64; crate::shm::layout::SERVICE_BUCKETS],
    /// Lock requests of this connection granted after *XES contention*: the
    /// lock word showed another connector's interest that conflicts with
    /// this request's (exclusive against share or exclusive), but every such
    /// holding of the same resource was in a compatible mode (IX beside IX).
    /// Counted on the latched path only, by one RMW.
    pub xes_contention: AtomicU64,
    #[cfg(not(loom))]
    _reserved: [AtomicU64; 7],
}

/// Indices of [`LockHeader::counters`].
pub(crate) const TOTAL_REQUESTS: usize = 0;
pub(crate) const TOTAL_CONTENTION: usize = 1;
pub(crate) const TOTAL_FALSE: usize = 2;
pub(crate) const TOTAL_COMMITTED: usize = 3;
pub(crate) const TOTAL_XES: usize = 4;
pub(crate) const TOTAL_RETAINED_REFUSALS: usize = 5;

/// The lock structure's header (the rest of its page is reserved).
#[repr(C)]
#[derive(Default)]
pub(crate) struct LockHeader {
    /// Folded in from connectors that left: requests, contention, false
    /// contention, transactions committed, XES contention, retained
    /// refusals (the `TOTAL_*` indices).
    pub counters: [AtomicU64; 6],
    #[cfg(not(loom))]
    _reserved: [AtomicU64; 2],
    /// The connect latch: token of the process changing the connector table.
    pub connect_latch: AtomicU64,
    /// The next wait ticket (`lock/records.rs`): taken by a request the first
    /// time it has to wait, so urgent requests go in the order they began
    /// to wait.
    pub wait_ticket: AtomicU64,
    /// Plex settings (`connector/liveness.rs`): the failure detection
    /// interval in milliseconds (0: the default) and the isolate action.
    pub failure_detection_ms: AtomicU64,
    /// The isolate action: 1 prompt (wait for `cfctl fence`), anything else
    /// at once.
    pub isolate: AtomicU64,
    /// Plex setting (`connector/liveness.rs`): how often the deadlock
    /// detector runs, in milliseconds (0: the default).
    pub deadlock_interval_ms: AtomicU64,
    /// The deadlock detector's claim (`deadlock.rs`): token of the process
    /// running a round of it (0: none).
    pub deadlock_claim: AtomicU64,
    /// When the last round of the detector began: milliseconds of
    /// CLOCK_MONOTONIC (0: never).
    pub deadlock_last_ms: AtomicU64,
    /// Deadlock victims told since the region was created.
    pub deadlock_victims: AtomicU64,
}

/// One block header of a member area: 128 bytes. See `lock/records.rs`.
#[repr(C)]
#[derive(Default)]
pub(crate) struct BlockHeader {
    /// The holder owning the block (0: free; `BLOCK_RETAINED`: retained records).
    pub owner: AtomicU64,
    /// The owning holder's request count, published by it (plain stores:
    /// only the owner writes them) every 64 uncontended requests, after each
    /// contended one, and when it is dropped.
    pub requests: AtomicU64,
    /// The owning holder's requests that met a real conflict, published likewise.
    pub contention: AtomicU64,
    /// The owning holder's false contentions, published likewise.
    pub false_contention: AtomicU64,
    /// The wait record of the holder whose *first* block this is (unused in
    /// its other blocks): what its waiting request waits for (`deadlock.rs`).
    pub wait: WaitRecord,
}

/// Words of a wait record's cycle: two cycle members in each.
pub(crate) const CYCLE_WORDS: usize = 6;

/// A holder's wait record: 96 bytes, in its first block's header. Written
/// by the holder's own thread, except `victim` and `cycle` (and the
/// `VICTIM` flag of `state`), which the deadlock detector writes. See
/// `deadlock.rs` for the protocol.
#[repr(C)]
#[derive(Default)]
pub(crate) struct WaitRecord {
    /// `[seq:32][flags:32]`, flags `WAITING` 1 and `VICTIM` 2. Every start
    /// and every end of a wait bumps the sequence number.
    pub state: AtomicU64,
    /// The token of the holder that wrote the record (its block's owner).
    pub holder: AtomicU64,
    /// `[entry:32][slot:32]`: the waiting request's record slot and its lock
    /// table entry.
    pub request: AtomicU64,
    /// The connectors (a bit each) holding what the request conflicts with,
    /// refreshed at every look (a hint: the detector checks their records).
    pub conflicts: AtomicU64,
    /// When the request began to wait: nanoseconds of CLOCK_MONOTONIC.
    pub since_ns: AtomicU64,
    /// The detector's: `[cycle length:32][its connector + 1:32]` (0: a tool
    /// with no connector), valid while `state` has `VICTIM`.
    pub victim: AtomicU64,
    /// The detector's: the cycle from the victim on, `[connector + 1:8]
    /// [slot:24]` per member (the record in which it holds what the one
    /// before it waits for), two per word, the first twelve members.
    pub cycle: [AtomicU64; CYCLE_WORDS],
}

/// One record body: 72 bytes (meta + 64 bytes of resource name).
#[repr(C)]
#[derive(Default)]
pub(crate) struct RecordBody {
    /// `len | mode << 8 | flags << 16`.
    pub meta: AtomicU64,
    /// The resource's bytes in little-endian words, zero-padded.
    pub name: [AtomicU64; 8],
}

/// The restart-request list's header: 256 bytes.
#[repr(C)]
#[derive(Default)]
pub(crate) struct RequestListHeader {
    /// Requests posted since the region was created (a re-post of a FAILED
    /// request is not counted again).
    pub posted: AtomicU64,
    /// Requests completed since the region was created.
    pub completed: AtomicU64,
    #[cfg(not(loom))]
    _reserved: [AtomicU64; 5],
    /// Bumped by every change; every member's restarter futex-waits on it.
    pub sequence: AtomicU32,
    #[cfg(not(loom))]
    _pad: AtomicU32,
    #[cfg(not(loom))]
    _reserved2: [AtomicU64; 24],
}

/// One restart request: 256 bytes. See `requests.rs`.
#[repr(C)]
#[derive(Default)]
pub(crate) struct RequestEntry {
    /// `[epoch:32][unused:24][state:8]`; the epoch changes at every post.
    pub state: AtomicU64,
    /// Token of the member process handling it.
    pub claim: AtomicU64,
    /// Token of the restart-light process it started.
    pub worker: AtomicU64,
    /// When it was posted: wall-clock ns since the Unix epoch.
    pub posted_ns: AtomicU64,
    /// When it was last claimed: wall-clock ns since the Unix epoch (0: not
    /// since it was posted).
    pub claimed_ns: AtomicU64,
    /// Poster and claimer connector ids + 1 (`claimer << 32 | poster`).
    pub who: AtomicU64,
    /// Restart lights started for it since it was posted.
    pub attempts: AtomicU64,
    /// The incarnation of the slot's occupant whose failure it is for.
    pub incarnation: AtomicU64,
    /// The member's name (its slot's name is cleared when restart light disconnects).
    pub name: [AtomicU64; 4],
    /// The generation of the connection whose failure it is for.
    pub generation: AtomicU64,
    #[cfg(not(loom))]
    _reserved2: [AtomicU64; 3],
    /// When the request was marked FAILED (0: never).
    pub failed_ns: AtomicU64,
    /// Exit status of the last failed restart light (128 + signal), + 1 (0: none).
    pub last_status: AtomicU64,
    /// Why the last restart light failed: its error line, NUL-padded.
    pub reason: [AtomicU64; REASON_WORDS],
}

/// Words of a request's failure reason (112 bytes).
pub(crate) const REASON_WORDS: usize = 14;

/// The event ring's header (the rest of its page is reserved).
#[repr(C)]
#[derive(Default)]
pub(crate) struct EventHeader {
    /// Events ever written (the next sequence number).
    pub head: AtomicU64,
}

/// One event: 128 bytes. See `events.rs`.
#[repr(C)]
#[derive(Default)]
pub(crate) struct EventSlot {
    /// `seq + 1` once complete, 0 while being written.
    pub seq: AtomicU64,
    /// `kind | has_by << 32`.
    pub kind: AtomicU64,
    /// When it happened: wall-clock ns since the Unix epoch.
    pub time_ns: AtomicU64,
    /// The event's numbers `[a, b, c]` (their meaning depends on the kind).
    pub payload: [AtomicU64; 3],
    /// The name of the member it is about, NUL-padded.
    pub member: [AtomicU64; 4],
    /// The name of the member that caused it (if `has_by`), NUL-padded.
    pub by: [AtomicU64; 4],
    #[cfg(not(loom))]
    _reserved: [AtomicU64; 2],
}

#[cfg(not(loom))]
mod pinned {
    use super::*;
    use crate::shm::layout::{
        BLOCK_HEADER_SIZE, CONNECTOR_SLOT_SIZE, EVENT_SIZE, RECORD_SIZE, REQUEST_SIZE,
    };
    use std::mem::{offset_of, size_of};

    const _: () = assert!(size_of::<ConnectorSlot>() as u64 == CONNECTOR_SLOT_SIZE);
    const _: () = assert!(offset_of!(ConnectorSlot, name) == 32);
    const _: () = assert!(offset_of!(ConnectorSlot, hwm) == 64);
    const _: () = assert!(offset_of!(ConnectorSlot, committed) == 112);
    const _: () = assert!(offset_of!(ConnectorSlot, liveness) == 128);
    const _: () = assert!(offset_of!(ConnectorSlot, heartbeat) == 136);
    const _: () = assert!(offset_of!(ConnectorSlot, beat_period_ms) == 144);
    const _: () = assert!(offset_of!(ConnectorSlot, service_ns) == 160);
    const _: () = assert!(offset_of!(ConnectorSlot, xes_contention) == 256);
    const _: () = assert!(size_of::<LockHeader>() <= 4096);
    const _: () = assert!(offset_of!(LockHeader, connect_latch) == 64);
    const _: () = assert!(offset_of!(LockHeader, wait_ticket) == 72);
    const _: () = assert!(offset_of!(LockHeader, isolate) == 88);
    const _: () = assert!(offset_of!(LockHeader, deadlock_interval_ms) == 96);
    const _: () = assert!(offset_of!(LockHeader, deadlock_claim) == 104);
    const _: () = assert!(offset_of!(LockHeader, deadlock_victims) == 120);
    const _: () = assert!(size_of::<BlockHeader>() as u64 == BLOCK_HEADER_SIZE);
    const _: () = assert!(offset_of!(BlockHeader, wait) == 32);
    const _: () = assert!(size_of::<WaitRecord>() == 96);
    const _: () = assert!(offset_of!(WaitRecord, since_ns) == 32);
    const _: () = assert!(offset_of!(WaitRecord, cycle) == 48);
    const _: () = assert!(size_of::<RecordBody>() as u64 == RECORD_SIZE);
    const _: () = assert!(size_of::<RequestListHeader>() as u64 == REQUEST_SIZE);
    const _: () = assert!(offset_of!(RequestListHeader, sequence) == 56);
    const _: () = assert!(size_of::<RequestEntry>() as u64 == REQUEST_SIZE);
    const _: () = assert!(offset_of!(RequestEntry, name) == 64);
    const _: () = assert!(offset_of!(RequestEntry, failed_ns) == 128);
    const _: () = assert!(offset_of!(RequestEntry, reason) == 144);
    const _: () = assert!(size_of::<EventHeader>() <= 4096);
    const _: () = assert!(size_of::<EventSlot>() as u64 == EVENT_SIZE);
    const _: () = assert!(offset_of!(EventSlot, member) == 48);
    const _: () = assert!(offset_of!(EventSlot, by) == 80);
}

/// Pack a name of at most 32 bytes into four little-endian words, NUL-padded.
pub(crate) fn name_to_words(name: &[u8]) -> [u64; 4] {
    let mut bytes = [0u8; 32];
    let n = name.len().min(32);
    bytes[..n].copy_from_slice(&name[..n]);
    let words: [u64; 4] = bytemuck::cast(bytes);
    words.map(u64::from_le)
}

/// Store a name (at most 32 bytes) into four words.
pub(crate) fn store_name(dst: &[AtomicU64; 4], name: &[u8]) {
    for (w, v) in dst.iter().zip(name_to_words(name)) {
        w.store(v, crate::sync::Ordering::Relaxed);
    }
}

/// Store up to `8 * N` bytes of text into `N` words, NUL-padded.
pub(crate) fn store_text<const N: usize>(dst: &[AtomicU64; N], text: &[u8]) {
    for (i, w) in dst.iter().enumerate() {
        let mut b = [0u8; 8];
        let from = (i * 8).min(text.len());
        let to = (from + 8).min(text.len());
        b[..to - from].copy_from_slice(&text[from..to]);
        w.store(u64::from_le_bytes(b), crate::sync::Ordering::Relaxed);
    }
}

/// The bytes of a text stored in `N` words, up to the first NUL.
pub(crate) fn load_text<const N: usize>(src: &[AtomicU64; N]) -> Vec<u8> {
    let mut bytes: Vec<u8> = src
        .iter()
        .flat_map(|w| w.load(crate::sync::Ordering::Relaxed).to_le_bytes())
        .collect();
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    bytes.truncate(end);
    bytes
}

/// The raw bytes of a name stored in four words, up to the first NUL.
pub(crate) fn load_name_bytes(src: &[AtomicU64; 4]) -> Vec<u8> {
    load_text(src)
}
