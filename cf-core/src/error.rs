//! Typed errors of the library. Binaries print them as one line (`Display`,
//! or [`one_line`] for a chain of causes).

use crate::shm::ids::{ConnectorId, SlotIndex};
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
    escape_line(&line)
}

/// Escape what is unprintable (see `inspect::escape`, the same rules).
fn escape_line(s: &str) -> String {
    #[cfg(not(loom))]
    return crate::inspect::escape(s);
    #[cfg(loom)]
    s.to_string()
}

/// Why a region could not be created or opened.
#[derive(Debug, thiserror::Error)]
pub enum RegionError {
    /// (The plex files are not compiled into the loom models.)
    #[cfg(not(loom))]
    #[error("plex directory: {0}")]
    PlexDirUntrusted(crate::shm::plexfs::PlexFileError),
    #[cfg(not(loom))]
    #[error(transparent)]
    Untrusted(crate::shm::plexfs::PlexFileError),
    #[error("{path} already exists (destroy the plex first)")]
    AlreadyExists { path: PathBuf },
    #[error("{path}: no region here (create one with `cfctl create`)")]
    NotFound { path: PathBuf },
    #[error("{path} is a symbolic link; refusing to follow it")]
    Symlink { path: PathBuf },
    #[error("{path} is not a regular file")]
    NotRegularFile { path: PathBuf },
    #[error("{path} is owned by uid {owner}, not by this user (uid {me})")]
    ForeignOwner { path: PathBuf, owner: u32, me: u32 },
    #[error("{path}: wrong magic number: not a coupling-facility region")]
    BadMagic { path: PathBuf },
    #[error("{path}: layout version {found}, this program reads version {expected}")]
    BadVersion {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error(
        "{path}: file is {actual} bytes but its header says {expected} (truncated or extended)"
    )]
    SizeMismatch {
        path: PathBuf,
        actual: u64,
        expected: u64,
    },
    #[error("{path}: header checksum mismatch (stored {stored:#018x}, computed {computed:#018x})")]
    BadChecksum {
        path: PathBuf,
        stored: u64,
        computed: u64,
    },
    #[error("{path}: header is inconsistent: {what}")]
    BadHeader { path: PathBuf, what: String },
    #[error("invalid size option: {0}")]
    BadOption(String),

    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
}

/// Something read from the shared region failed a bounds or consistency check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorruptError {
    #[error("lock table index {index} out of range (table has {len} entries)")]
    EntryOutOfRange { index: u64, len: u64 },
    #[error("connector id {id} out of range (table has {len} connectors)")]
    ConnectorOutOfRange { id: u64, len: u64 },
    #[error("record slot {slot} of connector {member}: {what}")]
    BadRecord {
        member: ConnectorId,
        slot: SlotIndex,
        what: String,
    },
    #[error("connector {id}: {what}")]
    BadConnector { id: ConnectorId, what: String },
    #[error("the region was opened read-only: {0} needs a writable region")]
    ReadOnly(&'static str),
    #[error("event ring: {0}")]
    BadEvents(String),
}

/// Errors of connect / disconnect.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("member name {0:?} is invalid: {1}")]
    BadName(String, &'static str),
    #[error("member {name:?} is already connected (pid {pid})")]
    NameInUse { name: String, pid: u32 },
    #[error("member {0:?} is not failed-persistent: nothing to recover")]
    NotFailed(String),
    #[error(
        "member {0:?} is failed-persistent: its locks stay retained until its log is recovered \
         (start `cf-node run --member {0}`, or post `cfctl restart-light {0}`)"
    )]
    FailedPersistent(String),
    #[error("all {0} connector slots are in use")]
    TableFull(u32),
    #[error("timed out waiting for the connect latch (held by pid {0})")]
    LatchTimeout(u32),
    #[error("the region was opened read-only: connecting needs a writable region")]
    ReadOnly,
    #[error("reading this process's identity: {0}")]
    Identity(std::io::Error),
    #[error("region is damaged: {0}")]
    Corrupt(#[from] CorruptError),
}

/// Errors of lock requests.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("resource is empty or longer than {max} bytes ({len})")]
    BadResource { len: usize, max: usize },
    #[error("record area of this member is full ({0} records)")]
    RecordsFull(u32),
    #[error("lock not held by this holder (slot {0})")]
    NotHeld(SlotIndex),
    #[error("holders (threads) of this member are still open: drop them first")]
    HoldersOpen,
    #[error("this connector is no longer active (it was cleaned up as dead)")]
    Disconnected,
    #[error("region is damaged: {0}")]
    Corrupt(#[from] CorruptError),
}
