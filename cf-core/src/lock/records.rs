//! Record entries: every held lock has one in its holder's own member area,
//! naming the resource exactly. This is what `display locks` shows, what the
//! resource-level path reads to tell real from false contention, and what
//! recovery walks (so recovery costs what the member held, not the table size).
//!
//! A member area holds `records_per_member` slots, handed out to holders
//! (threads) in blocks of `BLOCK_SLOTS`, so the hot path allocates a slot from a
//! holder-local free list without any shared atomic. Each slot is a 32-bit
//! *tag* (state and lock table index, in a dense array that scans fast) and a
//! 72-byte *body* (length, mode, flags, resource bytes).
//!
//! Tag: `[state:2][entry:30]`, state FREE 0, PENDING 1 (a request waiting on
//! the resource-level path, or a lock being released: does not hold), HELD 2,
//! URGENT 3 (a waiting request bypassed too often: holds nothing, but counts
//! as its member's interest in the entry and makes later incompatible
//! requests for its resource wait behind it; `entry.rs`, bounded bypass). A
//! body is written before its tag is published (release) and is rewritten
//! only after the tag is FREE, except the *wait ticket* in the high half of
//! its meta word, which the request's own thread writes under the entry's
//! latch while the record is PENDING (read only under that latch).

use crate::error::CorruptError;
use crate::ids::{ConnectorId, EntryIndex, SlotIndex};
use crate::shm::layout::{BLOCK_SLOTS, MAX_RESOURCE};
use crate::shm::region::Region;
use crate::shm::slots::{BlockHeader, RecordBody};
use crate::sync::Ordering;

pub(crate) const TAG_FREE: u32 = 0;
pub(crate) const TAG_PENDING: u32 = 1 << 30;
pub(crate) const TAG_HELD: u32 = 2 << 30;
pub(crate) const TAG_URGENT: u32 = 3 << 30;
const TAG_STATE: u32 = 3 << 30;
const TAG_ENTRY: u32 = !TAG_STATE;

/// Block owner value for a block that holds retained records of a dead member.
pub(crate) const BLOCK_RETAINED: u64 = u64::MAX;

const FLAG_MODIFY: u64 = 1;

/// The lock manager's modes (IRLM's), from the weakest: what a holder may do
/// with the resource, and so which other holders it tolerates (see
/// [`LockMode::compatible`] for the table). A [`Mode`] is one of them and
/// the modify flag.
///
/// | held \ asked | IS | IX | S | U | SIX | X |
/// |---|---|---|---|---|---|---|
/// | **IS**  | yes | yes | yes | yes | yes | no |
/// | **IX**  | yes | yes | no  | no  | no  | no |
/// | **S**   | yes | no  | yes | yes | no  | no |
/// | **U**   | yes | no  | yes | no  | no  | no |
/// | **SIX** | yes | no  | no  | no  | no  | no |
/// | **X**   | no  | no  | no  | no  | no  | no |
///
/// In the lock word, IS and S take *share* interest (they are compatible
/// with each other and with themselves, so the word's share CAS may grant
/// them without reading any record); IX, U, SIX and X take *exclusive*
/// interest ([`LockMode::takes_exclusive_interest`]). Two compatible modes
/// with exclusive interest (IX beside IX, IS beside SIX) therefore meet on
/// the latched path, which grants them from the records by the table: *XES
/// contention*, the structure's interest conflicts but the modes do not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum LockMode {
    /// Intent share: the holder reads parts of the resource (locks them in
    /// S below it). Compatible with everything but X.
    IS = CODE_IS,
    /// Intent exclusive: the holder changes parts of the resource. Compatible
    /// with IS and IX.
    IX = CODE_IX,
    /// Share: the holder reads the whole resource. Compatible with IS, S, U.
    /// [`Mode::Share`] is S.
    S = CODE_S,
    /// Update: the holder reads and may upgrade to X; one at a time, beside
    /// readers. Compatible with IS and S.
    U = CODE_U,
    /// Share with intent exclusive: S on the whole and IX on parts.
    /// Compatible with IS only.
    SIX = CODE_SIX,
    /// Exclusive: compatible with nothing. [`Mode::Exclusive`] is X, and
    /// [`Mode::Modify`] is X with the modify flag.
    X = CODE_X,
}

/// The mode code a record stores (the row and column of [`COMPATIBLE`]): the
/// discriminant of [`LockMode`]. S and X keep the codes of layout 7's share
/// and exclusive, so their records read as they did. Adding a mode is a new
/// code, a row and a column of the table, and its word interest
/// ([`INTEREST_EXCLUSIVE`]); nothing else in the decision code changes. The
/// field is 8 bits of the record's meta word (`meta_word`): room for 256.
const CODE_S: u8 = 0;
const CODE_X: u8 = 1;
const CODE_IS: u8 = 2;
const CODE_IX: u8 = 3;
const CODE_U: u8 = 4;
const CODE_SIX: u8 = 5;
const CODES: usize = 6;

/// `COMPATIBLE[held][asked]`: may `asked` be granted beside `held` on the
/// same resource? Indexed by code. (Symmetric: a unit test checks it.)
const COMPATIBLE: [[bool; CODES]; CODES] = {
    const T: bool = true;
    const F: bool = false;
    [
        //           S  X  IS IX U  SIX
        /* S   */ [T, F, T, F, T, F],
        /* X   */ [F, F, F, F, F, F],
        /* IS  */ [T, F, T, T, T, T],
        /* IX  */ [F, F, T, T, F, F],
        /* U   */ [T, F, T, F, F, F],
        /* SIX */ [F, F, T, F, F, F],
    ]
};

/// Which codes take exclusive interest in the lock word (the rest: share).
/// The share ones must be compatible with each other and themselves: the
/// word's share CAS grants them beside each other without a record read.
const INTEREST_EXCLUSIVE: [bool; CODES] = {
    let mut t = [true; CODES];
    t[CODE_S as usize] = false;
    t[CODE_IS as usize] = false;
    t
};

impl LockMode {
    /// Every mode, weakest first (the order of the table above).
    pub const ALL: [LockMode; 6] = [
        LockMode::IS,
        LockMode::IX,
        LockMode::S,
        LockMode::U,
        LockMode::SIX,
        LockMode::X,
    ];

    #[inline]
    const fn code(self) -> usize {
        self as usize
    }

    /// The mode of a record's code (`None`: no such mode).
    fn from_code(code: u64) -> Option<LockMode> {
        Some(match u8::try_from(code).ok()? {
            CODE_S => LockMode::S,
            CODE_X => LockMode::X,
            CODE_IS => LockMode::IS,
            CODE_IX => LockMode::IX,
            CODE_U => LockMode::U,
            CODE_SIX => LockMode::SIX,
            _ => return None,
        })
    }

    /// May `self` and `other` be held on one resource at once (by different
    /// members, or by two threads of one)? The table of [`LockMode`];
    /// symmetric.
    ///
    /// ```
    /// use cf_core::LockMode::{self, *};
    ///
    /// assert!(IX.compatible(IX) && IX.compatible(IS) && IS.compatible(SIX));
    /// assert!(!IX.compatible(S) && !U.compatible(U) && !SIX.compatible(SIX));
    /// assert!(LockMode::ALL.iter().all(|m| !X.compatible(*m)));
    /// ```
    #[inline]
    pub fn compatible(self, other: LockMode) -> bool {
        COMPATIBLE[self.code()][other.code()]
    }

    /// Does the mode take exclusive interest in the lock word (IX, U, SIX,
    /// X), or share interest (IS, S)? See [`LockMode`].
    #[inline]
    pub fn takes_exclusive_interest(self) -> bool {
        INTEREST_EXCLUSIVE[self.code()]
    }

    /// The mode's name in lower case: `"is"`, `"ix"`, `"s"`, `"u"`, `"six"`,
    /// `"x"` (what `cfctl --lock MODE:RESOURCE` takes).
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::IS => "is",
            LockMode::IX => "ix",
            LockMode::S => "s",
            LockMode::U => "u",
            LockMode::SIX => "six",
            LockMode::X => "x",
        }
    }
}

impl std::fmt::Display for LockMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a [`LockMode`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no lock mode {0:?} (one of is, ix, s, u, six, x)")]
pub struct BadLockMode(pub String);

impl std::str::FromStr for LockMode {
    type Err = BadLockMode;
    /// A mode from its name, in any case (`"ix"`, `"IX"`).
    fn from_str(s: &str) -> Result<LockMode, BadLockMode> {
        LockMode::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| BadLockMode(s.to_string()))
    }
}

/// The mode of a lock request or holding: a [`LockMode`] and the *modify*
/// flag. A modify lock is taken to change the data it protects: when its
/// holder dies it is **retained** (it keeps refusing every request
/// incompatible with its lock mode until the holder's recovery ends); every
/// other lock is released at the death. Any lock mode may carry the flag.
///
/// The three modes of the first API are constants of this type, with their
/// meaning and names unchanged: [`Mode::Share`] is S, [`Mode::Exclusive`] is
/// X, [`Mode::Modify`] is X with the modify flag. Every other mode is made
/// with [`Mode::new`] (or [`Mode::lock`], [`Mode::modify`]).
///
/// ```
/// use cf_core::{LockMode, Mode};
///
/// assert_eq!(Mode::new(LockMode::S, false), Mode::Share);
/// assert_eq!(Mode::modify(LockMode::X), Mode::Modify);
/// let ix = Mode::lock(LockMode::IX);
/// assert!(ix.compatible(Mode::modify(LockMode::IX)));
/// assert!(!ix.compatible(Mode::Share));
/// assert_eq!((ix.as_str(), Mode::modify(LockMode::IX).as_str()), ("ix", "ix+modify"));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mode {
    lock: LockMode,
    modify: bool,
}

#[allow(non_upper_case_globals)]
impl Mode {
    /// Share (read) interest: S. Compatible with other share holders (and
    /// with IS and U). Displayed `"share"`.
    pub const Share: Mode = Mode::new(LockMode::S, false);
    /// Exclusive, not modify: X, released when its holder dies. Displayed
    /// `"exclusive"`.
    pub const Exclusive: Mode = Mode::new(LockMode::X, false);
    /// Exclusive, taken to change the data it protects: X with the modify
    /// flag, retained when its holder dies. Displayed `"modify"`.
    pub const Modify: Mode = Mode::new(LockMode::X, true);
}

impl Mode {
    /// Lock mode `lock`, with the modify flag if `modify`.
    #[inline]
    pub const fn new(lock: LockMode, modify: bool) -> Mode {
        Mode { lock, modify }
    }

    /// Lock mode `lock` without the modify flag (released when its holder dies).
    #[inline]
    pub const fn lock(lock: LockMode) -> Mode {
        Mode::new(lock, false)
    }

    /// Lock mode `lock` with the modify flag (retained when its holder dies).
    #[inline]
    pub const fn modify(lock: LockMode) -> Mode {
        Mode::new(lock, true)
    }

    /// The lock mode (the modify flag aside).
    #[inline]
    pub const fn lock_mode(self) -> LockMode {
        self.lock
    }

    /// The mode's code (its row in the compatibility table) and modify flag.
    #[inline]
    fn encoded(self) -> (u8, bool) {
        (self.lock as u8, self.modify)
    }

    /// The mode of a record's code and modify flag (`None`: no such mode).
    fn decoded(code: u64, modify: bool) -> Option<Mode> {
        LockMode::from_code(code).map(|l| Mode::new(l, modify))
    }

    /// Does the mode take exclusive interest in the lock word (IX, U, SIX,
    /// X, with or without the modify flag)? Share interest: IS and S.
    #[inline]
    pub fn is_exclusive(self) -> bool {
        self.lock.takes_exclusive_interest()
    }
    /// Is it taken to change the data (retained when its holder dies)?
    #[inline]
    pub fn is_modify(self) -> bool {
        self.modify
    }
    /// May `self` and `other` be held on one resource at once? The table of
    /// their lock modes ([`LockMode::compatible`]; the modify flag does not
    /// matter); symmetric.
    ///
    /// ```
    /// use cf_core::Mode;
    ///
    /// assert!(Mode::Share.compatible(Mode::Share));
    /// assert!(!Mode::Share.compatible(Mode::Exclusive));
    /// assert!(!Mode::Modify.compatible(Mode::Share));
    /// assert!(!Mode::Exclusive.compatible(Mode::Modify));
    /// ```
    #[inline]
    pub fn compatible(self, other: Mode) -> bool {
        self.lock.compatible(other.lock)
    }
    /// The mode's name as displays print it: `"share"`, `"exclusive"`,
    /// `"modify"` for [`Mode::Share`], [`Mode::Exclusive`], [`Mode::Modify`]
    /// (S, X, X with the modify flag), and for the others the lock mode's
    /// name (`"is"`, `"ix"`, `"u"`, `"six"`), followed by `"+modify"` with the
    /// modify flag (`"ix+modify"`, `"s+modify"`). Also its
    /// [`Display`](std::fmt::Display) form; [`Mode::from_name`] reads it back.
    pub fn as_str(self) -> &'static str {
        match (self.lock, self.modify) {
            (LockMode::S, false) => "share",
            (LockMode::X, false) => "exclusive",
            (LockMode::X, true) => "modify",
            (LockMode::IS, false) => "is",
            (LockMode::IX, false) => "ix",
            (LockMode::U, false) => "u",
            (LockMode::SIX, false) => "six",
            (LockMode::IS, true) => "is+modify",
            (LockMode::IX, true) => "ix+modify",
            (LockMode::S, true) => "s+modify",
            (LockMode::U, true) => "u+modify",
            (LockMode::SIX, true) => "six+modify",
        }
    }

    /// Every mode: each lock mode without and with the modify flag.
    pub fn all() -> impl Iterator<Item = Mode> {
        [false, true]
            .into_iter()
            .flat_map(|m| LockMode::ALL.into_iter().map(move |l| Mode::new(l, m)))
    }

    /// The mode [`Mode::as_str`] names (`None`: no mode has that name).
    pub fn from_name(name: &str) -> Option<Mode> {
        Mode::all().find(|m| m.as_str() == name)
    }
}

impl std::fmt::Debug for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Mode::Share => f.write_str("Share"),
            Mode::Exclusive => f.write_str("Exclusive"),
            Mode::Modify => f.write_str("Modify"),
            Mode { lock, modify } => {
                write!(f, "Mode({lock:?}{})", ["", "+modify"][modify as usize])
            }
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A resource name: 1 to [`MAX_RESOURCE`] (64) bytes of any value, padded
/// into words. Two resources are equal if their bytes are (trailing zero
/// bytes count). Its [`hash`](Resource::hash) picks its lock table entry.
/// Made by [`Resource::new`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Resource {
    len: u8,
    words: [u64; 8],
}

impl std::fmt::Debug for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Resource({})", self.display())
    }
}

impl Resource {
    /// A resource from its bytes; `None` if empty or longer than 64 bytes.
    ///
    /// ```
    /// use cf_core::Resource;
    ///
    /// let r = Resource::new(b"acct:1").unwrap();
    /// assert_eq!(r.len(), 6);
    /// assert_eq!(r.bytes(), b"acct:1");
    /// assert_eq!(r.display(), "acct:1");
    /// assert!(r.entry(16).get() < 16);
    /// assert_eq!(Resource::new(&[0, 0xff]).unwrap().display(), "0x00ff");
    ///
    /// assert!(Resource::new(b"").is_none());
    /// assert!(Resource::new(&[b'x'; 65]).is_none());
    /// ```
    #[inline]
    pub fn new(bytes: &[u8]) -> Option<Resource> {
        if bytes.is_empty() || bytes.len() > MAX_RESOURCE {
            return None;
        }
        let mut buf = [0u8; MAX_RESOURCE];
        buf[..bytes.len()].copy_from_slice(bytes);
        let words: [u64; 8] = bytemuck::cast(buf);
        // Little-endian words (the layout is little-endian; see futex.rs).
        Some(Resource {
            len: bytes.len() as u8,
            words,
        })
    }

    /// The name's length in bytes (1 to 64).
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Always `false`: a resource has at least one byte.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The name's bytes (a copy).
    pub fn bytes(&self) -> Vec<u8> {
        let mut out: Vec<u8> = self.words.iter().flat_map(|w| w.to_le_bytes()).collect();
        out.truncate(self.len as usize);
        out
    }

    /// Printable form: the text if it is UTF-8 without control characters,
    /// else `0x` and hex. Not escaped: other characters (bidirectional
    /// overrides, for one) pass, so print a resource read from the region
    /// through [`escape`](crate::inspect::escape).
    pub fn display(&self) -> String {
        let b = self.bytes();
        match std::str::from_utf8(&b) {
            Ok(s) if s.chars().all(|c| !c.is_control()) => s.to_string(),
            _ => format!(
                "0x{}",
                b.iter().map(|x| format!("{x:02x}")).collect::<String>()
            ),
        }
    }

    /// A fixed (unseeded) hash: every member must map a resource to the same
    /// entry. The same as [`hash_bytes`] of the resource's bytes.
    #[inline]
    pub fn hash(&self) -> u64 {
        let n = (self.len as usize).div_ceil(8);
        hash_words(self.len as usize, self.words[..n].iter().copied())
    }

    /// The lock table entry this resource maps to in a table of `entries`
    /// (a nonzero power of two, as [`Region::lock_entries`] is): the low bits
    /// of [`Resource::hash`].
    pub fn entry(&self, entries: u32) -> EntryIndex {
        EntryIndex::new((self.hash() & (entries as u64 - 1)) as u32)
    }
}

const HASH_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

#[inline(always)]
fn mix(h: u64, w: u64) -> u64 {
    let h = (h ^ w).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^ (h >> 31)
}

#[inline(always)]
fn finish(h: u64) -> u64 {
    let h = h ^ (h >> 29);
    let h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 32)
}

#[inline]
fn hash_words(len: usize, words: impl Iterator<Item = u64>) -> u64 {
    finish(words.fold(HASH_SEED ^ len as u64, mix))
}

/// The last, partial word of a name (`tail` bytes, 1 to 7, at its end),
/// zero-padded. No copy: a name of 8 bytes or more reads its last 8 bytes and
/// shifts the ones of the previous word out.
#[inline(always)]
fn tail_word(bytes: &[u8], tail: usize) -> u64 {
    let len = bytes.len();
    if let Some(last) = len.checked_sub(8).and_then(|s| bytes.get(s..)) {
        return read8(last) >> (8 * (8 - tail));
    }
    // A name shorter than 8 bytes.
    if len >= 4 {
        let lo = u32::from_le_bytes(bytes[..4].try_into().unwrap_or([0; 4])) as u64;
        let hi = u32::from_le_bytes(bytes[len - 4..].try_into().unwrap_or([0; 4])) as u64;
        lo | hi << (8 * (len - 4))
    } else if len > 0 {
        bytes[0] as u64
            | (bytes[len / 2] as u64) << (8 * (len / 2))
            | (bytes[len - 1] as u64) << (8 * (len - 1))
    } else {
        0
    }
}

#[inline(always)]
fn read8(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.get(..8).and_then(|b| b.try_into().ok()).unwrap_or([0; 8]))
}

/// The words of a name: 8 bytes each, little-endian, the last zero-padded.
#[inline(always)]
fn for_each_word(bytes: &[u8], mut f: impl FnMut(usize, u64)) {
    let mut chunks = bytes.chunks_exact(8);
    let mut i = 0;
    for c in &mut chunks {
        f(i, read8(c));
        i += 1;
    }
    let tail = chunks.remainder().len();
    if tail != 0 {
        f(i, tail_word(bytes, tail));
    }
}

/// [`Resource::hash`] of a resource's bytes (1 to 64 of them), without
/// building the resource: the uncontended path hashes the caller's bytes.
#[inline]
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = HASH_SEED ^ bytes.len() as u64;
    for_each_word(bytes, |_, w| h = mix(h, w));
    finish(h)
}

/// Write a record body from a resource's bytes (1 to 64, checked by the
/// caller), before its tag is published, and return the resource's hash
/// ([`hash_bytes`]): one pass over the bytes.
#[inline]
pub(crate) fn write_body_and_hash(body: &RecordBody, bytes: &[u8], mode: Mode) -> u64 {
    body.meta
        .store(meta_word(bytes.len(), mode), Ordering::Relaxed);
    let mut h = HASH_SEED ^ bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    let mut dst = body.name.iter();
    for (c, d) in (&mut chunks).zip(&mut dst) {
        let w = read8(c);
        d.store(w, Ordering::Relaxed);
        h = mix(h, w);
    }
    let tail = chunks.remainder().len();
    if tail != 0 {
        let w = tail_word(bytes, tail);
        if let Some(d) = dst.next() {
            d.store(w, Ordering::Relaxed);
        }
        h = mix(h, w);
    }
    finish(h)
}

/// Where a record's wait ticket lives in its meta word.
const TICKET_SHIFT: u32 = 32;

/// Write the wait ticket of `member`'s PENDING record `slot` (its own
/// thread, under the entry's latch).
pub(crate) fn set_wait_ticket(
    region: &Region,
    member: ConnectorId,
    slot: u32,
    ticket: u32,
) -> Result<(), CorruptError> {
    let body = body_of(region, member, slot)?;
    let meta = body.meta.load(Ordering::Relaxed) & ((1 << TICKET_SHIFT) - 1);
    body.meta
        .store(meta | u64::from(ticket) << TICKET_SHIFT, Ordering::Relaxed);
    Ok(())
}

/// The body of `member`'s record `slot` (checked to be in its area).
fn body_of(region: &Region, member: ConnectorId, slot: u32) -> Result<&RecordBody, CorruptError> {
    region
        .bodies(member)?
        .get(slot as usize)
        .ok_or_else(|| CorruptError::BadRecord {
            member,
            slot: SlotIndex::new(slot),
            what: format!("slot out of range ({} slots)", region.records_per_member()),
        })
}

/// Change the mode of `member`'s HELD record `slot` in place (a conversion,
/// granted under the entry's latch by the record's own thread): the length
/// and the wait ticket stay. Readers without the latch see the old mode or
/// the new one (one store of the meta word).
pub(crate) fn set_mode(
    region: &Region,
    member: ConnectorId,
    slot: u32,
    mode: Mode,
) -> Result<(), CorruptError> {
    let body = body_of(region, member, slot)?;
    let meta = body.meta.load(Ordering::Relaxed);
    let len = (meta & 0xff) as usize;
    let kept = meta & !((1 << TICKET_SHIFT) - 1);
    body.meta
        .store(kept | meta_word(len, mode), Ordering::Release);
    Ok(())
}

/// A new wait ticket (never 0, which means "has not waited").
pub(crate) fn take_wait_ticket(region: &Region) -> u32 {
    let t = region
        .lock_header()
        .wait_ticket
        .fetch_add(1, Ordering::Relaxed)
        .wrapping_add(1) as u32;
    t.max(1)
}

/// Is ticket `a` older than ticket `b`? (Tickets wrap: compared as the
/// distance between them, which is far below 2^31 for requests waiting at
/// the same time.)
#[inline]
pub(crate) fn ticket_older(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

#[inline]
pub(crate) fn meta_word(len: usize, mode: Mode) -> u64 {
    let (code, modify) = mode.encoded();
    let flags = if modify { FLAG_MODIFY } else { 0 };
    len as u64 | u64::from(code) << 8 | flags << 16
}

#[inline]
pub(crate) fn tag_state(tag: u32) -> u32 {
    tag & TAG_STATE
}
#[inline]
pub(crate) fn tag_entry(tag: u32) -> EntryIndex {
    EntryIndex::new(tag & TAG_ENTRY)
}

/// A record as read from the region, checked: its entry is in the lock
/// table, its state, length and mode are valid. The region is untrusted, so
/// it is what the record said when read, not proof of a holding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordView {
    /// The member whose area holds the record.
    pub member: ConnectorId,
    /// The record's slot in that member's area.
    pub slot: SlotIndex,
    /// The lock table entry it is on (checked to be in range).
    pub entry: EntryIndex,
    /// Held (tag HELD); `false` for a request that waits or a lock being
    /// released (PENDING), or an urgent request.
    pub held: bool,
    /// A waiting request that was bypassed too often (not held).
    pub urgent: bool,
    /// When the request first waited (a [`take_wait_ticket`] value; 0 if it
    /// never did). Orders urgent requests: the older goes first.
    pub ticket: u32,
    /// The mode held or asked for.
    pub mode: Mode,
    /// The resource, exactly as the record names it.
    pub resource: Resource,
}

/// Read and check the body of a slot whose tag was just read as `tag`.
pub(crate) fn read_record(
    region: &Region,
    member: ConnectorId,
    slot: u32,
    tag: u32,
) -> Result<RecordView, CorruptError> {
    let bad = |what: String| CorruptError::BadRecord {
        member,
        slot: SlotIndex::new(slot),
        what,
    };
    let entry = tag_entry(tag);
    if entry.get() >= region.lock_entries() {
        return Err(bad(format!(
            "lock table index {entry} out of range ({} entries)",
            region.lock_entries()
        )));
    }
    let (held, urgent) = match tag_state(tag) {
        TAG_HELD => (true, false),
        TAG_PENDING => (false, false),
        TAG_URGENT => (false, true),
        s => return Err(bad(format!("state {:#x} is not a record state", s >> 30))),
    };
    let body = region.bodies(member)?.get(slot as usize).ok_or_else(|| {
        bad(format!(
            "slot out of range ({} slots)",
            region.records_per_member()
        ))
    })?;
    let meta = body.meta.load(Ordering::Relaxed);
    let len = (meta & 0xff) as usize;
    if len == 0 || len > MAX_RESOURCE {
        return Err(bad(format!("resource length {len}")));
    }
    let (code, flags) = ((meta >> 8) & 0xff, (meta >> 16) & 0xff);
    let mode = match flags {
        0 | FLAG_MODIFY => Mode::decoded(code, flags == FLAG_MODIFY),
        _ => None,
    }
    .ok_or_else(|| bad(format!("mode {code} flags {flags}")))?;
    let mut words = [0u64; 8];
    for (w, src) in words.iter_mut().zip(&body.name).take(len.div_ceil(8)) {
        *w = src.load(Ordering::Relaxed);
    }
    // Bytes past the length must not leak into comparisons.
    let tail = len % 8;
    if tail != 0 {
        words[len / 8] &= (1u64 << (8 * tail)) - 1;
    }
    Ok(RecordView {
        member,
        slot: SlotIndex::new(slot),
        entry,
        held,
        urgent,
        ticket: (meta >> TICKET_SHIFT) as u32,
        mode,
        resource: Resource {
            len: len as u8,
            words,
        },
    })
}

/// How many slots of `member` may be in use (high-water mark in blocks, checked).
pub(crate) fn scan_limit(region: &Region, member: ConnectorId) -> u32 {
    let Ok(slot) = region.connector(member) else {
        return 0;
    };
    let hwm = slot
        .hwm
        .load(Ordering::Acquire)
        .min(region.blocks_per_member() as u64) as u32;
    hwm * BLOCK_SLOTS
}

/// Every non-free tag of `member` below its high-water mark, as `(slot, tag)`.
fn live_tags(region: &Region, member: ConnectorId) -> impl Iterator<Item = (u32, u32)> + '_ {
    let tags = region.tags(member).unwrap_or(&[]);
    let limit = (scan_limit(region, member) as usize).min(tags.len());
    tags[..limit]
        .iter()
        .enumerate()
        .map(|(slot, t)| (slot as u32, t.load(Ordering::Acquire)))
        .filter(|&(_, tag)| tag_state(tag) != TAG_FREE)
}

/// Call `f` with every held or urgent record of `member` on `entry` (no
/// allocation), stopping at the first error.
pub(crate) fn for_each_interest_on(
    region: &Region,
    member: ConnectorId,
    entry: EntryIndex,
    mut f: impl FnMut(RecordView),
) -> Result<(), CorruptError> {
    let member = region.check_member(member)?;
    // Anything but PENDING is read, so a tag in an unknown state is
    // reported (by `read_record`), not skipped.
    for (slot, tag) in live_tags(region, member) {
        if tag_entry(tag) == entry && tag_state(tag) != TAG_PENDING {
            f(read_record(region, member, slot, tag)?);
        }
    }
    Ok(())
}

/// Does `member` have an *interest* in `entry` other than slot `except`: a
/// held record there, or an urgent request? (Reads only the tags: the bodies
/// do not matter for the member's interest.)
pub(crate) fn holds_other_on(
    region: &Region,
    member: ConnectorId,
    entry: EntryIndex,
    except: Option<u32>,
) -> bool {
    live_tags(region, member).any(|(slot, tag)| {
        (tag == TAG_HELD | entry.get() || tag == TAG_URGENT | entry.get()) && Some(slot) != except
    })
}

/// Every non-free record of `member` (held, pending or urgent) below its
/// high-water mark, in slot order; the first damaged record is the error.
pub fn all_records(region: &Region, member: ConnectorId) -> Result<Vec<RecordView>, CorruptError> {
    let member = region.check_member(member)?;
    live_tags(region, member)
        .map(|(slot, tag)| read_record(region, member, slot, tag))
        .collect()
}

/// The tag of slot `slot` of `member` (a slot this process owns or checked).
#[inline]
pub(crate) fn tag(
    region: &Region,
    member: ConnectorId,
    slot: u32,
) -> Result<&crate::sync::AtomicU32, CorruptError> {
    region
        .tags(member)?
        .get(slot as usize)
        .ok_or_else(|| CorruptError::BadRecord {
            member,
            slot: SlotIndex::new(slot),
            what: format!("slot out of range ({} slots)", region.records_per_member()),
        })
}

/// Claim a free block of `member`'s area for a holder identified by `token`.
pub(crate) fn claim_block(region: &Region, member: ConnectorId, token: u64) -> Option<u32> {
    let blocks = region.blocks(member).ok()?;
    for (b, h) in blocks.iter().enumerate() {
        if h.owner.load(Ordering::Relaxed) == 0
            && h.owner
                .compare_exchange(0, token, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            region
                .connector(member)
                .ok()?
                .hwm
                .fetch_max(b as u64 + 1, Ordering::AcqRel);
            return Some(b as u32);
        }
    }
    None
}

/// Does block `block` of `member` hold only free tags?
/// The owner token of the block that holds record `slot` of `member` (the
/// holder that claimed it), as stored; `None` if out of range.
pub(crate) fn slot_owner(region: &Region, member: ConnectorId, slot: u32) -> Option<u64> {
    block(region, member, slot / BLOCK_SLOTS).map(|b| b.owner.load(Ordering::Relaxed))
}

/// The holder (thread) token owning `member`'s record `slot`: its block's
/// owner, unless the block is free or holds retained records.
pub(crate) fn holder_token(region: &Region, member: ConnectorId, slot: u32) -> Option<u64> {
    slot_owner(region, member, slot).filter(|&o| o != 0 && o != BLOCK_RETAINED)
}

pub(crate) fn block_is_empty(region: &Region, member: ConnectorId, block: u32) -> bool {
    let first = (block * BLOCK_SLOTS) as usize;
    region.tags(member).is_ok_and(|tags| {
        tags.get(first..first + BLOCK_SLOTS as usize)
            .is_some_and(|t| t.iter().all(|t| t.load(Ordering::Acquire) == TAG_FREE))
    })
}

/// The header of block `block` of `member`.
pub(crate) fn block(region: &Region, member: ConnectorId, block: u32) -> Option<&BlockHeader> {
    region.blocks(member).ok()?.get(block as usize)
}

/// Give a block back, folding its counters into the connector's totals.
pub(crate) fn release_block(region: &Region, member: ConnectorId, b: u32) {
    fold_block_counters(region, member, b);
    if let Some(h) = block(region, member, b) {
        h.owner.store(0, Ordering::Release);
    }
}

/// Fold block `b`'s counters into its connector's totals.
pub(crate) fn fold_block_counters(region: &Region, member: ConnectorId, b: u32) {
    let (Some(h), Ok(c)) = (block(region, member, b), region.connector(member)) else {
        return;
    };
    for (from, to) in [
        (&h.requests, &c.requests),
        (&h.contention, &c.contention),
        (&h.false_contention, &c.false_contention),
    ] {
        to.fetch_add(from.swap(0, Ordering::Relaxed), Ordering::Relaxed);
    }
}

/// Every non-free slot of `member` as `(entry, slot, tag)`, sorted by entry:
/// one pass over the tags, 12 bytes per record, for walks that handle a
/// member's records entry by entry (recovery, release of everything).
pub(crate) fn slots_by_entry(region: &Region, member: ConnectorId) -> Vec<(EntryIndex, u32, u32)> {
    let mut out: Vec<(EntryIndex, u32, u32)> = live_tags(region, member)
        .map(|(slot, tag)| (tag_entry(tag), slot, tag))
        .collect();
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_round_trip_and_hash_is_stable() {
        let r = Resource::new(b"account:000042").unwrap();
        assert_eq!(r.bytes(), b"account:000042");
        assert_eq!(r.display(), "account:000042");
        assert_eq!(r.hash(), Resource::new(b"account:000042").unwrap().hash());
        assert_ne!(r.hash(), Resource::new(b"account:000043").unwrap().hash());
        assert!(Resource::new(b"").is_none());
        assert!(Resource::new(&[1u8; 65]).is_none());
        assert!(Resource::new(&[1u8; 64]).is_some());
        assert_eq!(Resource::new(&[0, 1]).unwrap().display(), "0x0001");
        for name in [
            &b"a"[..],
            b"ab",
            b"abc",
            b"abcd",
            b"abcde",
            b"abcdefg",
            b"account:000042",
            b"exactly8",
            b"exactly8+",
            &[7u8; 64],
            &[0, 1],
        ] {
            let r = Resource::new(name).unwrap();
            assert_eq!(hash_bytes(name), r.hash(), "{name:?}");
            let body = RecordBody::default();
            assert_eq!(write_body_and_hash(&body, name, Mode::Share), r.hash());
            let words: Vec<u64> = body
                .name
                .iter()
                .map(|w| w.load(Ordering::Relaxed))
                .collect();
            let n = name.len().div_ceil(8);
            assert_eq!(words[..n], r.words[..n], "{name:?}");
        }
        // Trailing zero bytes are part of the name.
        assert_ne!(Resource::new(b"a").unwrap(), Resource::new(b"a\0").unwrap());
    }

    #[test]
    fn mode_compatibility() {
        assert!(Mode::Share.compatible(Mode::Share));
        for m in [Mode::Exclusive, Mode::Modify] {
            assert!(!m.compatible(Mode::Share));
            assert!(!Mode::Share.compatible(m));
            assert!(!m.compatible(m));
        }
    }

    /// The lock manager's table, written out pair by pair as the issue
    /// states it: IS with IS, IX, S, U, SIX; IX with IS, IX; S with IS, S,
    /// U; U with IS, S; SIX with IS; X with nothing.
    fn expected(a: LockMode, b: LockMode) -> bool {
        use LockMode::*;
        let with = |m: LockMode| -> &'static [LockMode] {
            match m {
                IS => &[IS, IX, S, U, SIX],
                IX => &[IS, IX],
                S => &[IS, S, U],
                U => &[IS, S],
                SIX => &[IS],
                X => &[],
            }
        };
        with(a).contains(&b)
    }

    #[test]
    fn the_table_is_the_lock_managers_every_pair_both_orders() {
        for a in LockMode::ALL {
            for b in LockMode::ALL {
                assert_eq!(a.compatible(b), expected(a, b), "{a} held, {b} asked");
                assert_eq!(a.compatible(b), b.compatible(a), "{a}/{b}: not symmetric");
                // The modify flag never changes compatibility.
                for (ma, mb) in [(false, false), (false, true), (true, false), (true, true)] {
                    assert_eq!(
                        Mode::new(a, ma).compatible(Mode::new(b, mb)),
                        expected(a, b),
                        "{a}{ma} / {b}{mb}"
                    );
                }
            }
        }
    }

    #[test]
    fn share_interest_is_only_for_modes_compatible_with_each_other() {
        use LockMode::*;
        let share: Vec<LockMode> = LockMode::ALL
            .into_iter()
            .filter(|m| !m.takes_exclusive_interest())
            .collect();
        assert_eq!(share, [IS, S]);
        // The fast share CAS grants these beside each other unread.
        for a in &share {
            for b in &share {
                assert!(a.compatible(*b), "{a}/{b}");
            }
        }
        assert!(Mode::Modify.is_exclusive() && Mode::Exclusive.is_exclusive());
        assert!(!Mode::Share.is_exclusive());
        assert!(Mode::modify(IX).is_exclusive() && !Mode::modify(IS).is_exclusive());
    }

    #[test]
    fn the_old_three_keep_their_codes_and_names() {
        assert_eq!(Mode::Share.encoded(), (0, false));
        assert_eq!(Mode::Exclusive.encoded(), (1, false));
        assert_eq!(Mode::Modify.encoded(), (1, true));
        assert_eq!(
            [Mode::Share, Mode::Exclusive, Mode::Modify].map(Mode::as_str),
            ["share", "exclusive", "modify"]
        );
        assert_eq!(format!("{:?}", Mode::Modify), "Modify");
        assert_eq!(
            format!("{:?}", Mode::modify(LockMode::IX)),
            "Mode(IX+modify)"
        );
    }

    #[test]
    fn every_mode_round_trips_through_the_record_and_its_name() {
        let all: Vec<Mode> = Mode::all().collect();
        assert_eq!(all.len(), 12);
        let mut names = std::collections::HashSet::new();
        for m in all {
            let (code, modify) = m.encoded();
            assert_eq!(Mode::decoded(code.into(), modify), Some(m));
            assert_eq!(Mode::from_name(m.as_str()), Some(m));
            assert!(names.insert(m.as_str()), "{m}: name used twice");
            let body = RecordBody::default();
            write_body_and_hash(&body, b"r", m);
            let meta = body.meta.load(Ordering::Relaxed);
            assert_eq!(
                ((meta >> 8) & 0xff, (meta >> 16) & 0xff),
                (code.into(), modify as u64)
            );
            assert_eq!(m.is_modify(), modify);
        }
        assert_eq!(Mode::decoded(CODES as u64, false), None);
        assert_eq!(Mode::decoded(256, false), None);
        for l in LockMode::ALL {
            assert_eq!(l.as_str().parse::<LockMode>(), Ok(l));
            assert_eq!(l.as_str().to_uppercase().parse::<LockMode>(), Ok(l));
        }
        assert!("sx".parse::<LockMode>().is_err());
    }
}
