//! Typed errors of the library. Binaries print them as one line (`Display`,
//! or [`one_line`] for a chain of causes).

use crate::ids::{ConnectorId, EntryIndex, SlotIndex};
use std::path::PathBuf;

/// One printable line for an error and its causes: each cause is added
/// (after `: `) only if its text is not already in the line (a wrapper that
/// prints its source would otherwise repeat it), and anything unprintable
/// (a newline or an escape code read from a file) is escaped.
pub fn one_line<'a>(
    chain: impl IntoIterator<Item = &'a (dyn std::error::Error + 'static)>,
) -> String {
    let mut line = String::new();
    for e in chain {
        let text = e.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    escape(&line)
}

/// Make text from the region (a name, a resource, an error message) safe to
/// print: printable ASCII stays as it is (a backslash is doubled); anything
/// else (newlines, escape codes, other control or non-ASCII characters) is
/// written as a Rust-style escape (`\n`, `\x1b`, `\u{202e}`). Valid member
/// names and resources made of printable ASCII are unchanged.
///
/// ```
/// use cf_core::inspect::escape;
///
/// assert_eq!(escape("bank-1"), "bank-1");
/// assert_eq!(escape("a\\b"), "a\\\\b");
/// assert_eq!(escape("x\n\x1b[2J"), "x\\n\\x1b[2J");
/// assert_eq!(escape("\u{202e}txt"), "\\u{202e}txt");
/// ```
pub fn escape(s: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
        }
    }
    out
}

/// Why a plex file or directory is not used.
#[derive(Debug, thiserror::Error)]
pub enum PlexFileError {
    /// The file or directory does not exist.
    #[error("{path}: no such file")]
    NotFound {
        /// The missing path.
        path: PathBuf,
    },
    /// A create found something at the name (`O_EXCL`), a dangling symlink
    /// included; or [`PlexDir::open_or_create`](crate::shm::plexfs::PlexDir::open_or_create) lost its race 8 times.
    #[error("{path} already exists")]
    AlreadyExists {
        /// The path that exists.
        path: PathBuf,
    },
    /// The name is a symbolic link (refused, never followed).
    #[error("{path} is a symbolic link; refusing to follow it")]
    Symlink {
        /// The symlink's path.
        path: PathBuf,
    },
    /// The opened file is not a regular file (a FIFO, a directory, a device...).
    #[error("{path} is not a regular file (it is a {kind})")]
    NotRegularFile {
        /// The file's path.
        path: PathBuf,
        /// What it is instead, in words (`"FIFO"`, `"directory"`, ...).
        kind: &'static str,
    },
    /// A plex directory path names something that is not a directory.
    #[error("{path} is not a directory")]
    NotDirectory {
        /// The path.
        path: PathBuf,
    },
    /// The file or directory belongs to another user (and the group mode
    /// does not admit it).
    #[error("{path} is owned by uid {owner}, not by this user (uid {me})")]
    ForeignOwner {
        /// The file's path.
        path: PathBuf,
        /// Its owner's uid.
        owner: u32,
        /// This process's effective uid.
        me: u32,
    },
    /// In a group-mode plex, a file of another user whose group is not the
    /// plex directory's group.
    #[error("{path} belongs to group {group}, not to the plex's group {plex_group}")]
    ForeignGroup {
        /// The file's path.
        path: PathBuf,
        /// The file's gid.
        group: u32,
        /// The plex directory's gid.
        plex_group: u32,
    },
    /// The file has more than one hard link (it may be a link to a file
    /// outside the plex).
    #[error("{path} has {links} hard links; a plex file must have exactly one")]
    HardLinks {
        /// The file's path.
        path: PathBuf,
        /// Its link count.
        links: u64,
    },
    /// Others (or the group, outside the group mode) may write the file or
    /// directory.
    #[error("{path} is writable by {who} (mode {mode:04o}); refusing to trust it")]
    Writable {
        /// The file's or directory's path.
        path: PathBuf,
        /// Its permission bits (`st_mode & 0o7777`).
        mode: u32,
        /// Who may write it, in words, for the message.
        who: &'static str,
    },
    /// Any other error of a system call on the path.
    #[error("{path}: {err}")]
    Io {
        /// The path the call was about.
        path: PathBuf,
        /// The error.
        err: std::io::Error,
    },
}

/// Why a region could not be created or opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegionError {
    /// The plex directory fails the checks of `PlexDir::check` (its type,
    /// owner or mode). (The plex files are not compiled into the loom models.)
    #[cfg(not(loom))]
    #[error("plex directory: {0}")]
    PlexDirUntrusted(PlexFileError),
    /// The region file fails the checks of the plex directory (a link, a
    /// FIFO, a foreign owner, a writable mode...).
    #[cfg(not(loom))]
    #[error(transparent)]
    Untrusted(PlexFileError),
    /// `create` found a region file already there.
    #[error("{path} already exists (destroy the plex first)")]
    AlreadyExists {
        /// The region file.
        path: PathBuf,
    },
    /// `open` found no region file.
    #[error("{path}: no region here (create one with `cfctl create`)")]
    NotFound {
        /// The region file looked for.
        path: PathBuf,
    },
    /// The region file is a symbolic link (never followed).
    #[error("{path} is a symbolic link; refusing to follow it")]
    Symlink {
        /// The link.
        path: PathBuf,
    },
    /// The region file is not a regular file.
    #[error("{path} is not a regular file")]
    NotRegularFile {
        /// The file.
        path: PathBuf,
    },
    /// The region file belongs to another user.
    #[error("{path} is owned by uid {owner}, not by this user (uid {me})")]
    ForeignOwner {
        /// The file.
        path: PathBuf,
        /// Its owner's uid.
        owner: u32,
        /// This process's effective uid.
        me: u32,
    },
    /// The file does not start with [`MAGIC`](crate::layout::MAGIC).
    #[error("{path}: wrong magic number: not a coupling-facility region")]
    BadMagic {
        /// The file.
        path: PathBuf,
    },
    /// The file's layout version is not this program's.
    #[error("{path}: layout version {found}, this program reads version {expected}")]
    BadVersion {
        /// The file.
        path: PathBuf,
        /// The version in its header.
        found: u32,
        /// [`LAYOUT_VERSION`](crate::layout::LAYOUT_VERSION).
        expected: u32,
    },
    /// The file is shorter than a region header: nothing in it can be read.
    #[error("{path}: file is {actual} bytes, shorter than a region header ({header} bytes)")]
    TooShort {
        /// The file.
        path: PathBuf,
        /// Its size in bytes.
        actual: u64,
        /// The size of the header, in bytes.
        header: u64,
    },
    /// The file's size is not the one its header gives.
    #[error(
        "{path}: file is {actual} bytes but its header says {expected} (truncated or extended)"
    )]
    SizeMismatch {
        /// The file.
        path: PathBuf,
        /// Its size in bytes.
        actual: u64,
        /// The size it must have, in bytes.
        expected: u64,
    },
    /// The header's checksum does not match its contents.
    #[error("{path}: header checksum mismatch (stored {stored:#018x}, computed {computed:#018x})")]
    BadChecksum {
        /// The file.
        path: PathBuf,
        /// The checksum in the header.
        stored: u64,
        /// The checksum of the header as read.
        computed: u64,
    },
    /// The header's fields disagree with each other.
    #[error("{path}: header is inconsistent: {what}")]
    BadHeader {
        /// The file.
        path: PathBuf,
        /// What disagrees.
        what: HeaderError,
    },
    /// `create` was given sizes out of range.
    #[error("invalid size option: {0}")]
    BadOption(SizesError),
    /// A system call on the file failed.
    #[error("{path}: {err}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        err: std::io::Error,
    },
}

/// A size option out of range (`Sizes::check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SizesError {
    /// The lock table must have a power of two of entries, from 16 to 2^30.
    #[error("lock entries must be a power of two from 16 to 2^30, got {0}")]
    LockEntries(u32),
    /// The region holds 1 to `max` (`MAX_MEMBERS`) connectors.
    #[error("members must be 1 to {max}, got {got}")]
    Members {
        /// The value asked for.
        got: u32,
        /// `MAX_MEMBERS`.
        max: u32,
    },
    /// Records per member: a multiple of `block` (`BLOCK_SLOTS`), up to 2^24.
    #[error("records per member must be a multiple of {block} from {block} to 2^24, got {got}")]
    RecordsPerMember {
        /// The value asked for.
        got: u32,
        /// `BLOCK_SLOTS`.
        block: u32,
    },
}

/// A failure detection interval out of range (`liveness::check_interval`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "failure detection interval must be from {} ms to {} s, got {} ms",
    .min.as_millis(),
    .max.as_secs(),
    .got.as_millis()
)]
pub struct IntervalError {
    /// The interval asked for.
    pub got: std::time::Duration,
    /// `MIN_INTERVAL`.
    pub min: std::time::Duration,
    /// `MAX_INTERVAL`.
    pub max: std::time::Duration,
}

/// A deadlock detection interval out of range
/// (`liveness::check_deadlock_interval`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "deadlock detection interval must be from {} ms to {} s, got {} ms",
    .min.as_millis(),
    .max.as_secs(),
    .got.as_millis()
)]
pub struct DeadlockIntervalError {
    /// The interval asked for.
    pub got: std::time::Duration,
    /// `MIN_DEADLOCK_INTERVAL`.
    pub min: std::time::Duration,
    /// `MAX_DEADLOCK_INTERVAL`.
    pub max: std::time::Duration,
}

/// Plex settings that cannot be stored (`liveness::set_settings`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// The failure detection interval is out of range.
    #[error(transparent)]
    Interval(#[from] IntervalError),
    /// The deadlock detection interval is out of range.
    #[error(transparent)]
    DeadlockInterval(#[from] DeadlockIntervalError),
}

/// Why a round of the deadlock detector could not run
/// (`deadlock::detect_once`). A damaged wait record or record is not an
/// error: that waiter is left out of the round.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeadlockError {
    /// The region was opened read-only.
    #[error("the region was opened read-only: the deadlock detector needs a writable region")]
    ReadOnly,
    /// This process could not read its own identity (`/proc/self/stat`).
    #[error("reading this process's identity: {0}")]
    Identity(std::io::Error),
}

/// A region header whose fields disagree with each other (`Layout::from_header`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// A size field is out of range.
    #[error(transparent)]
    Sizes(#[from] SizesError),
    /// The record block size is not this program's.
    #[error("block size {found} (expected {expected})")]
    BlockSize {
        /// As stored.
        found: u32,
        /// This program's `BLOCK_SLOTS`.
        expected: u32,
    },
    /// The header size field is not this program's header size.
    #[error("header size {0}")]
    HeaderSize(u32),
    /// The total size does not follow from the sizes.
    #[error("total size {found} does not match the sizes (expected {expected})")]
    TotalSize {
        /// As stored.
        found: u64,
        /// As computed from the sizes.
        expected: u64,
    },
    /// The structure directory does not follow from the sizes.
    #[error("structure directory does not match the sizes")]
    Directory,
}

/// Something read from the shared region failed a bounds or consistency
/// check: the region is damaged (or was written by a foreign program). Only
/// damage is reported this way; a step that waits too long is [`Stuck`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CorruptError {
    /// A lock table index read from the region is out of range.
    #[error("lock table index {index} out of range (table has {len} entries)")]
    EntryOutOfRange {
        /// The index read.
        index: u64,
        /// The table's length.
        len: u64,
    },
    /// A connector id read from the region is out of range.
    #[error("connector id {id} out of range (table has {len} connectors)")]
    ConnectorOutOfRange {
        /// The id read.
        id: u64,
        /// The number of connector slots.
        len: u64,
    },
    /// A record slot holds something no protocol step writes.
    #[error("record slot {slot} of connector {member}: {what}")]
    BadRecord {
        /// Whose record area.
        member: ConnectorId,
        /// Which slot.
        slot: SlotIndex,
        /// What is wrong with it.
        what: String,
    },
    /// A connector slot holds something no protocol step writes.
    #[error("connector {id}: {what}")]
    BadConnector {
        /// Which connector.
        id: ConnectorId,
        /// What is wrong with it.
        what: String,
    },
    /// The event ring's counter or a slot is damaged.
    #[error("event ring: {0}")]
    BadEvents(String),
}

/// A protocol step waited longer than any live process needs: another
/// process is stopped (SIGSTOP, a debugger), or a word it waits on is
/// damaged. The step was abandoned without changing anything it had not
/// finished; it can be retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Stuck {
    /// A lock entry's latch stayed with one holder.
    #[error(
        "connector {holder} has held the latch of lock entry {entry} for over {secs} s \
         (a stopped process, or a damaged lock word)"
    )]
    Latch {
        /// The latch holder named by the word.
        holder: ConnectorId,
        /// The entry.
        entry: EntryIndex,
        /// How long it was waited for, in seconds.
        secs: u64,
    },
    /// A cleanup could not latch some of the dead member's entries.
    #[error(
        "the cleanup of connector {id} could not latch {entries} lock entr{plural} for {secs} s \
         (stopped processes or damaged lock words)",
        plural = if *entries == 1 { "y" } else { "ies" }
    )]
    Cleanup {
        /// The member being cleaned up.
        id: ConnectorId,
        /// How many entries are left.
        entries: usize,
        /// How long it tried, in seconds.
        secs: u64,
    },
    /// A restart request's state kept changing under a completion.
    #[error("the restart request of connector {id} kept changing for {tries} tries")]
    Request {
        /// Whose request.
        id: ConnectorId,
        /// How often it was tried.
        tries: u32,
    },
}

/// Why a dead member could not be cleaned up (`recovery::cleanup_member`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CleanupError {
    /// The region is damaged.
    #[error("region is damaged: {0}")]
    Corrupt(#[from] CorruptError),
    /// The cleanup waited too long for another process.
    #[error(transparent)]
    Stuck(#[from] Stuck),
    /// The region was opened read-only.
    #[error("the region was opened read-only: cleaning up needs a writable region")]
    ReadOnly,
    /// This process could not read its own identity (`/proc/self/stat`).
    #[error("reading this process's identity: {0}")]
    Identity(std::io::Error),
    /// Posting the member's restart request failed.
    #[error("posting the restart request: {0}")]
    Request(#[from] RestartRequestError),
}

/// Why a step on the restart-request list failed (`requests::post`, `claim`,
/// `fail`, `retry`, `complete` and the others that write).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestartRequestError {
    /// The region is damaged.
    #[error("region is damaged: {0}")]
    Corrupt(#[from] CorruptError),
    /// The step waited too long for another process.
    #[error(transparent)]
    Stuck(#[from] Stuck),
    /// The region was opened read-only: the step needs to write.
    #[error("the region was opened read-only: {0} needs a writable region")]
    ReadOnly(&'static str),
    /// This process could not read its own identity (`/proc/self/stat`).
    #[error("reading this process's identity: {0}")]
    Identity(std::io::Error),
}

/// Errors of connect.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The name is empty, too long, or has bytes a name may not have.
    #[error("member name {0:?} is invalid: {1}")]
    BadName(String, &'static str),
    /// A live member has this name.
    #[error("member {name:?} is already connected (pid {pid})")]
    NameInUse {
        /// The name asked for.
        name: String,
        /// The process that has it.
        pid: u32,
    },
    /// A recovery connection was asked for a member that is not failed-persistent.
    #[error("member {0:?} is not failed-persistent: nothing to recover")]
    NotFailed(String),
    /// A normal connection was asked for a member whose locks are retained.
    #[error(
        "member {0:?} is failed-persistent: its locks stay retained until its log is recovered \
         (start `cf-node run --member {0}`, or post `cfctl restart-light {0}`)"
    )]
    FailedPersistent(String),
    /// Every connector slot is taken.
    #[error("all {0} connector slots are in use")]
    TableFull(u32),
    /// Another process kept the connect latch longer than a connect waits.
    #[error("timed out waiting for the connect latch (held by pid {0})")]
    LatchTimeout(u32),
    /// The region was opened read-only.
    #[error("the region was opened read-only: connecting needs a writable region")]
    ReadOnly,
    /// This process could not read its own identity (`/proc/self/stat`).
    #[error("reading this process's identity: {0}")]
    Identity(std::io::Error),
    /// Cleaning up the dead previous holder of the slot failed.
    #[error(transparent)]
    Cleanup(#[from] CleanupError),
    /// The region is damaged.
    #[error("region is damaged: {0}")]
    Corrupt(#[from] CorruptError),
}

/// Why a member could not open a holder (`Member::holder`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HolderError {
    /// This connection made 2^32 - 1 holders: reconnect for more.
    #[error("this connection has made all the holders it can (2^32 - 1): reconnect")]
    TokensExhausted,
    /// The member's record area has no free block.
    #[error("record area of this member is full ({0} records)")]
    RecordsFull(u32),
    /// The connection was cleaned up as dead.
    #[error("this connector is no longer active (it was cleaned up as dead)")]
    Disconnected,
    /// The region is damaged.
    #[error("region is damaged: {0}")]
    Corrupt(#[from] CorruptError),
}

/// Why a lock request could not be answered (`Holder::try_lock`; inside
/// [`WaitError::Failed`](crate::WaitError::Failed) for `Holder::lock`).
/// Granted, contention and retained are answers, not errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcquireError {
    /// The resource name is empty or too long.
    #[error("resource is empty or longer than {max} bytes ({len})")]
    BadResource {
        /// Its length.
        len: usize,
        /// `MAX_RESOURCE`.
        max: usize,
    },
    /// The member's record area has no free slot.
    #[error("record area of this member is full ({0} records)")]
    RecordsFull(u32),
    /// A conversion (`Holder::convert`) of a lock this holder does not hold
    /// in that slot.
    #[error("lock to convert not held by this holder (slot {0})")]
    NotHeld(SlotIndex),
    /// The connection was cleaned up as dead.
    #[error("this connector is no longer active (it was cleaned up as dead)")]
    Disconnected,
    /// A waiting lock waited too long for an entry's latch.
    #[error(transparent)]
    Stuck(#[from] Stuck),
    /// Cleaning up a dead holder met on the way failed.
    #[error("cleaning up a dead holder: {0}")]
    Cleanup(#[from] CleanupError),
    /// The region is damaged.
    #[error("region is damaged: {0}")]
    Corrupt(#[from] CorruptError),
}

/// Why a lock could not be released (`Holder::unlock`, `unlock_all`,
/// `Member::release_record`, `release_all_held`). A release that failed
/// leaves the lock being released; releasing it again finishes it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnlockError {
    /// The lock is not held by this holder (or member) in that slot.
    #[error("lock not held by this holder (slot {0})")]
    NotHeld(SlotIndex),
    /// `Member::release_all_held` with holders (threads) still open.
    #[error("holders (threads) of this member are still open: drop them first")]
    HoldersOpen,
    /// The connection was cleaned up as dead: its locks are now retained
    /// (or released) by the cleanup, not by this process.
    #[error("this connector is no longer active (it was cleaned up as dead)")]
    Disconnected,
    /// The release waited too long for an entry's latch.
    #[error(transparent)]
    Stuck(#[from] Stuck),
    /// Cleaning up a dead holder met on the way failed.
    #[error("cleaning up a dead holder: {0}")]
    Cleanup(#[from] CleanupError),
    /// The region is damaged.
    #[error("region is damaged: {0}")]
    Corrupt(#[from] CorruptError),
}

/// Why a member could not disconnect (`Member::disconnect`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DisconnectError {
    /// Holders (threads) of the member are still open: drop them first.
    #[error("holders (threads) of this member are still open: drop them first")]
    HoldersOpen,
    /// The connection was cleaned up as dead (its slot is no longer ours).
    #[error("this connector is no longer active (it was cleaned up as dead)")]
    Disconnected,
    /// Another process kept the connect latch longer than a disconnect waits.
    #[error("timed out waiting for the connect latch (held by pid {0})")]
    LatchTimeout(u32),
    /// This process could not read its own identity (`/proc/self/stat`).
    #[error("reading this process's identity: {0}")]
    Identity(std::io::Error),
    /// Releasing the member's remaining locks failed.
    #[error("releasing its locks: {0}")]
    Release(#[from] UnlockError),
    /// Completing the member's restart request failed.
    #[error("completing its restart request: {0}")]
    Request(#[from] RestartRequestError),
    /// The region is damaged.
    #[error("region is damaged: {0}")]
    Corrupt(#[from] CorruptError),
}

/// Why a recovering connection could not change its recovery state
/// (`Member::is_recovering`, `Member::finish_recovery`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecoveryStateError {
    /// The connection was cleaned up as dead.
    #[error("this connector is no longer active (it was cleaned up as dead)")]
    Disconnected,
    /// Another process kept the connect latch longer than this step waits.
    #[error("timed out waiting for the connect latch (held by pid {0})")]
    LatchTimeout(u32),
    /// This process could not read its own identity (`/proc/self/stat`).
    #[error("reading this process's identity: {0}")]
    Identity(std::io::Error),
    /// Completing the member's restart request failed.
    #[error("completing its restart request: {0}")]
    Request(#[from] RestartRequestError),
    /// The region is damaged.
    #[error("region is damaged: {0}")]
    Corrupt(#[from] CorruptError),
}
