//! The write-ahead log: one file per member in the plex (`log.<member>`).
//!
//! ```text
//! record  = len:u32 LE (payload bytes) | check:u32 LE (FNV-1a 32 of payload) | payload
//! payload = kind:u8 | txid:u64 LE | body
//!   1 UPDATE  body = account:u64 | before:i64 | after:i64
//!   2 COMMIT  body = (none)
//!   3 ABORT   body = (none)            the transaction was backed out completely
//!   4 CLR     body = account:u64 | restored:i64 | undone_lsn:u64
//! ```
//! The LSN of a record is its byte offset in the file. Rules: an UPDATE is
//! written before the data changes; COMMIT before the locks are released; a
//! back-out restores the before image, *then* writes a CLR naming the undone
//! UPDATE, and finally an ABORT. A reader stops at the first torn or
//! unreadable record (a writer killed inside a `write`); it never trusts a
//! length it has not checked. The log is truncated only when no transaction is
//! in flight (a checkpoint), so CLRs never refer across a truncation.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const KIND_UPDATE: u8 = 1;
const KIND_COMMIT: u8 = 2;
const KIND_ABORT: u8 = 3;
const KIND_CLR: u8 = 4;
const MAX_PAYLOAD: u32 = 64;

/// One log record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogRecord {
    Update {
        txid: u64,
        account: u64,
        before: i64,
        after: i64,
    },
    Commit {
        txid: u64,
    },
    Abort {
        txid: u64,
    },
    Clr {
        txid: u64,
        account: u64,
        restored: i64,
        undone_lsn: u64,
    },
}

impl LogRecord {
    pub fn txid(&self) -> u64 {
        match *self {
            LogRecord::Update { txid, .. }
            | LogRecord::Commit { txid }
            | LogRecord::Abort { txid }
            | LogRecord::Clr { txid, .. } => txid,
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let mut p = Vec::with_capacity(40);
        let (kind, txid) = match *self {
            LogRecord::Update { txid, .. } => (KIND_UPDATE, txid),
            LogRecord::Commit { txid } => (KIND_COMMIT, txid),
            LogRecord::Abort { txid } => (KIND_ABORT, txid),
            LogRecord::Clr { txid, .. } => (KIND_CLR, txid),
        };
        p.push(kind);
        p.extend_from_slice(&txid.to_le_bytes());
        match *self {
            LogRecord::Update {
                account,
                before,
                after,
                ..
            } => {
                p.extend_from_slice(&account.to_le_bytes());
                p.extend_from_slice(&before.to_le_bytes());
                p.extend_from_slice(&after.to_le_bytes());
            }
            LogRecord::Clr {
                account,
                restored,
                undone_lsn,
                ..
            } => {
                p.extend_from_slice(&account.to_le_bytes());
                p.extend_from_slice(&restored.to_le_bytes());
                p.extend_from_slice(&undone_lsn.to_le_bytes());
            }
            _ => {}
        }
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        out.extend_from_slice(&fnv32(&p).to_le_bytes());
        out.extend_from_slice(&p);
    }

    fn decode(p: &[u8]) -> Option<LogRecord> {
        let u64_at = |o: usize| {
            p.get(o..o + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
        };
        let kind = *p.first()?;
        let txid = u64_at(1)?;
        Some(match (kind, p.len()) {
            (KIND_UPDATE, 33) => LogRecord::Update {
                txid,
                account: u64_at(9)?,
                before: u64_at(17)? as i64,
                after: u64_at(25)? as i64,
            },
            (KIND_COMMIT, 9) => LogRecord::Commit { txid },
            (KIND_ABORT, 9) => LogRecord::Abort { txid },
            (KIND_CLR, 33) => LogRecord::Clr {
                txid,
                account: u64_at(9)?,
                restored: u64_at(17)? as i64,
                undone_lsn: u64_at(25)?,
            },
            _ => return None,
        })
    }
}

fn fnv32(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in bytes {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} is a symbolic link; refusing to follow it")]
    Symlink(PathBuf),
}

/// The path of a member's log.
pub fn log_path(plex_dir: &Path, member: &str) -> PathBuf {
    plex_dir.join(format!("log.{member}"))
}

fn open_log(path: &Path, group_access: bool) -> Result<File, LogError> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(LogError::Symlink(path.into()));
    }
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(if group_access { 0o660 } else { 0o600 })
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| LogError::Io {
            path: path.into(),
            source,
        })
}

/// Read every readable record with its LSN, stopping at a torn tail.
pub fn read_log(path: &Path) -> Result<Vec<(u64, LogRecord)>, LogError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(LogError::Io {
                path: path.into(),
                source,
            })
        }
    };
    let mut out = Vec::new();
    let mut off = 0usize;
    while off + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[off..off + 4].try_into().unwrap_or([0; 4]));
        let check = u32::from_le_bytes(bytes[off + 4..off + 8].try_into().unwrap_or([0; 4]));
        if len == 0 || len > MAX_PAYLOAD || off + 8 + len as usize > bytes.len() {
            break;
        }
        let payload = &bytes[off + 8..off + 8 + len as usize];
        if fnv32(payload) != check {
            break;
        }
        match LogRecord::decode(payload) {
            Some(r) => out.push((off as u64, r)),
            None => break,
        }
        off += 8 + len as usize;
    }
    Ok(out)
}

struct Inner {
    file: File,
    /// Bytes written so far (the next LSN).
    end: u64,
    /// Transactions begun and not yet committed or aborted.
    active: u64,
    buf: Vec<u8>,
}

/// The writer of one member's log (shared by its worker threads).
pub struct LogWriter {
    path: PathBuf,
    inner: Mutex<Inner>,
}

impl LogWriter {
    pub fn open(plex_dir: &Path, member: &str, group_access: bool) -> Result<LogWriter, LogError> {
        let path = log_path(plex_dir, member);
        let file = open_log(&path, group_access)?;
        let end = file
            .metadata()
            .map_err(|source| LogError::Io {
                path: path.clone(),
                source,
            })?
            .len();
        Ok(LogWriter {
            path,
            inner: Mutex::new(Inner {
                file,
                end,
                active: 0,
                buf: Vec::with_capacity(64),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one record with one `write`; returns its LSN. `begins`/`ends`
    /// keep the count of transactions in flight for checkpoints.
    pub fn append(&self, rec: &LogRecord, begins: bool, ends: bool) -> Result<u64, LogError> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let inner = &mut *g;
        inner.buf.clear();
        rec.encode(&mut inner.buf);
        inner
            .file
            .write_all(&inner.buf)
            .map_err(|source| LogError::Io {
                path: self.path.clone(),
                source,
            })?;
        let lsn = inner.end;
        inner.end += inner.buf.len() as u64;
        if begins {
            inner.active += 1;
        }
        if ends {
            inner.active = inner.active.saturating_sub(1);
        }
        Ok(lsn)
    }

    /// Truncate the log if no transaction is in flight and it is longer than
    /// `threshold` bytes. Returns true if it truncated.
    pub fn checkpoint(&self, threshold: u64) -> Result<bool, LogError> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if g.active != 0 || g.end < threshold {
            return Ok(false);
        }
        g.file.set_len(0).map_err(|source| LogError::Io {
            path: self.path.clone(),
            source,
        })?;
        g.end = 0;
        Ok(true)
    }
}

/// Truncate a member's log (after its recovery: nothing in it is in flight).
pub fn truncate(plex_dir: &Path, member: &str) -> Result<(), LogError> {
    let path = log_path(plex_dir, member);
    match OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
    {
        Ok(f) => f.set_len(0).map_err(|source| LogError::Io { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(LogError::Io { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let w = LogWriter::open(dir.path(), "A", false).unwrap();
        let recs = [
            LogRecord::Update {
                txid: 1,
                account: 3,
                before: 10,
                after: 5,
            },
            LogRecord::Clr {
                txid: 1,
                account: 3,
                restored: 10,
                undone_lsn: 0,
            },
            LogRecord::Abort { txid: 1 },
            LogRecord::Commit { txid: 2 },
        ];
        for r in &recs {
            w.append(r, false, false).unwrap();
        }
        let read: Vec<_> = read_log(w.path())
            .unwrap()
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        assert_eq!(read, recs);
        // A torn tail (half a record) is ignored.
        let mut f = OpenOptions::new().append(true).open(w.path()).unwrap();
        f.write_all(&[33, 0, 0, 0, 1, 2]).unwrap();
        assert_eq!(read_log(w.path()).unwrap().len(), 4);
        // A flipped byte ends the readable log there.
        let mut bytes = std::fs::read(w.path()).unwrap();
        bytes[8 + 3] ^= 0xff;
        std::fs::write(w.path(), &bytes).unwrap();
        assert_eq!(read_log(w.path()).unwrap().len(), 0);
    }
}
