//! The write-ahead log: one file per member in the plex (`log.<member>`).
//!
//! ```text
//! record  = len:u32 LE (payload bytes) | check:u32 LE (CRC-32C of payload) | payload
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
//!
//! **Torn tail.** Whoever opens a log for writing ([`LogWriter::open`]: a
//! member starting, restart light, a member recovering itself) first cuts it
//! back to the end of its last valid record ([`LogScan::valid_end`]) and only
//! then appends. Appending after torn bytes would hide the new records (a
//! back-out's CLRs and ABORT) from every reader, and the next back-out would
//! undo the same transaction again, over changes committed meanwhile.
//!
//! **Trust.** A log is backed out into the shared data, so it is read only if
//! nobody but the plex's owner (or its group, in a group-mode plex) can have
//! written it: it is opened through [`cf_core::plexfs::PlexDir`] (the plex
//! directory checked; `O_NOFOLLOW`, `O_NONBLOCK`, created `O_EXCL`; the
//! opened descriptor a regular file with one link, of the right owner and
//! mode). A FIFO, a symlink, a directory, a hard link or another user's file
//! at `log.<member>` is refused with one error, before anything waits on it.

use crate::history::{self, HistoryError, HistoryWriter};
use cf_core::plexfs::{PlexDir, PlexFileError};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
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
        out.extend_from_slice(&crc32c::crc32c(&p).to_le_bytes());
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

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{0} is a symbolic link; refusing to follow it")]
    Symlink(PathBuf),
    #[error("{0} is not a regular file")]
    NotRegularFile(PathBuf),
    /// The plex directory or the log is not to be trusted (owner, links, mode).
    #[error(transparent)]
    Untrusted(PlexFileError),
    #[error("archiving committed transactions: {0}")]
    History(Box<HistoryError>),
}

impl From<PlexFileError> for LogError {
    fn from(e: PlexFileError) -> LogError {
        match e {
            PlexFileError::Symlink { path } => LogError::Symlink(path),
            PlexFileError::NotRegularFile { path, .. } => LogError::NotRegularFile(path),
            other => LogError::Untrusted(other),
        }
    }
}

impl From<HistoryError> for LogError {
    fn from(e: HistoryError) -> LogError {
        LogError::History(Box::new(e))
    }
}

/// The path of a member's log.
pub fn log_path(plex_dir: &Path, member: &str) -> PathBuf {
    plex_dir.join(format!("log.{member}"))
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |err| LogError::Io {
        path: path.into(),
        err,
    }
}

/// The plex directory a log lives in (its parent), checked.
fn log_dir(path: &Path) -> Result<PlexDir, LogError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Ok(PlexDir::check(dir)?)
}

/// Open (or create, `O_EXCL`) a log for reading and appending, checked.
fn open_log(plex_dir: &Path, path: &Path) -> Result<File, LogError> {
    let dir = PlexDir::check(plex_dir)?;
    let mut file = dir.open_or_create(path)?;
    file.seek(SeekFrom::End(0)).map_err(io_err(path))?;
    Ok(file)
}

/// What a log holds: its readable records, and where they end.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogScan {
    /// Every readable record with its LSN, in order.
    pub records: Vec<(u64, LogRecord)>,
    /// The end of the last valid record: where the next append must go.
    pub valid_end: u64,
    /// The length of the file (more than `valid_end` if the tail is torn).
    pub len: u64,
}

impl LogScan {
    /// Bytes after the last valid record (a torn or unreadable tail).
    pub fn torn_bytes(&self) -> u64 {
        self.len - self.valid_end
    }

    /// Parse a log's bytes, stopping at the first torn or unreadable record.
    pub fn parse(bytes: &[u8]) -> LogScan {
        let mut records = Vec::new();
        let mut off = 0usize;
        while let Some(header) = bytes.get(off..off + 8) {
            let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
            let check = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
            if len == 0 || len > MAX_PAYLOAD {
                break;
            }
            let Some(payload) = bytes.get(off + 8..off + 8 + len as usize) else {
                break;
            };
            if crc32c::crc32c(payload) != check {
                break;
            }
            match LogRecord::decode(payload) {
                Some(r) => records.push((off as u64, r)),
                None => break,
            }
            off += 8 + len as usize;
        }
        LogScan {
            records,
            valid_end: off as u64,
            len: bytes.len() as u64,
        }
    }
}

/// Read a log: every readable record with its LSN, stopping at a torn tail,
/// and the offset where the valid records end. A missing log is empty.
///
/// Refuses, without waiting on it, anything that is not a trusted regular
/// file (see the module docs); a plex directory others can write too.
pub fn read_log(path: &Path) -> Result<LogScan, LogError> {
    let dir = log_dir(path)?;
    match dir.open(path, false)? {
        None => Ok(LogScan::default()),
        Some(mut file) => read_all(&mut file, path),
    }
}

/// The longest log a reader loads (a log is truncated at every checkpoint,
/// 1 MiB by default; a larger file is refused rather than read into memory).
pub const MAX_LOG_BYTES: u64 = 1 << 30;

fn read_all(file: &mut File, path: &Path) -> Result<LogScan, LogError> {
    let len = file.metadata().map_err(io_err(path))?.len();
    if len > MAX_LOG_BYTES {
        return Err(LogError::Io {
            path: path.into(),
            err: std::io::Error::other(format!(
                "{len} bytes, more than a log may hold ({MAX_LOG_BYTES})"
            )),
        });
    }
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0)).map_err(io_err(path))?;
    file.read_to_end(&mut bytes).map_err(io_err(path))?;
    // Leave the offset at the end, where the writer's appends go (its
    // descriptor is opened O_APPEND anyway; this keeps reads and writes on
    // one descriptor in step).
    file.seek(SeekFrom::End(0)).map_err(io_err(path))?;
    Ok(LogScan::parse(&bytes))
}

fn write_all(file: &mut File, bytes: &[u8], path: &Path) -> Result<(), LogError> {
    file.write_all(bytes).map_err(io_err(path))
}

struct Inner {
    file: File,
    /// The end of the valid records (the next LSN).
    end: u64,
    /// Transactions begun and not yet committed or aborted.
    active: u64,
    buf: Vec<u8>,
    /// The member's history file, if the plex keeps history.
    history: Option<HistoryWriter>,
}

/// The writer of one member's log (shared by its worker threads).
pub struct LogWriter {
    path: PathBuf,
    inner: Mutex<Inner>,
    /// Torn bytes cut from the end of the log when it was opened.
    cut: u64,
}

impl LogWriter {
    /// Open (or create) a member's log for appending. A torn or unreadable
    /// tail is cut first, so what is appended follows the last valid record
    /// (see the module docs). The caller must be the only writer of this log
    /// (the process connected as the member, or its restart light). If the
    /// plex keeps history (`history/`), the member's history file is opened
    /// too (its own torn tail cut), to archive committed transactions before
    /// the log is truncated. New files get the plex's mode (0600, or 0660 in
    /// a group-mode plex, whatever the umask): `group_access` is kept for
    /// callers and changes nothing, the plex directory decides.
    pub fn open(plex_dir: &Path, member: &str, _group_access: bool) -> Result<LogWriter, LogError> {
        let path = log_path(plex_dir, member);
        let mut file = open_log(plex_dir, &path)?;
        let scan = read_all(&mut file, &path)?;
        if scan.torn_bytes() > 0 {
            file.set_len(scan.valid_end).map_err(io_err(&path))?;
            file.seek(SeekFrom::End(0)).map_err(io_err(&path))?;
        }
        let history = HistoryWriter::open(plex_dir, member, false)?;
        Ok(LogWriter {
            cut: scan.torn_bytes(),
            inner: Mutex::new(Inner {
                file,
                end: scan.valid_end,
                active: 0,
                buf: Vec::with_capacity(64),
                history,
            }),
            path,
        })
    }

    /// Does this log archive its committed transactions (history kept)?
    pub fn keeps_history(&self) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .history
            .is_some()
    }

    /// How many torn bytes [`LogWriter::open`] cut from the end of the log.
    pub fn cut_at_open(&self) -> u64 {
        self.cut
    }

    /// Read the log through this writer's descriptor.
    pub fn scan(&self) -> Result<LogScan, LogError> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        read_all(&mut g.file, &self.path)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one record with one `write`; returns its LSN. (With the
    /// `wal.torn_append` crash point armed, in two: see the body.) `begins`/`ends`
    /// keep the count of transactions in flight for checkpoints.
    pub fn append(&self, rec: &LogRecord, begins: bool, ends: bool) -> Result<u64, LogError> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let inner = &mut *g;
        inner.buf.clear();
        rec.encode(&mut inner.buf);
        if cf_core::crash::armed("wal.torn_append") {
            // Fault injection (crash-points builds only): the first half of
            // the record with one write, then the crash point; a process
            // that survives it (not the chosen hit) writes the rest.
            let half = inner.buf.len() / 2;
            write_all(&mut inner.file, &inner.buf[..half], &self.path)?;
            cf_core::crash::point("wal.torn_append");
            write_all(&mut inner.file, &inner.buf[half..], &self.path)?;
        } else {
            write_all(&mut inner.file, &inner.buf, &self.path)?;
        }
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
    /// `threshold` bytes, archiving its committed transactions first (if
    /// history is kept). Returns true if it truncated.
    pub fn checkpoint(&self, threshold: u64) -> Result<bool, LogError> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if g.active != 0 || g.end < threshold {
            return Ok(false);
        }
        self.archive_and_truncate(&mut g)?;
        Ok(true)
    }

    /// Truncate the log after a recovery (nothing in it is in flight: every
    /// transaction is committed or backed out and aborted), archiving its
    /// committed transactions first (if history is kept).
    pub fn truncate(&self) -> Result<(), LogError> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        self.archive_and_truncate(&mut g)
    }

    /// Archive, *then* truncate: a death in between leaves the transactions
    /// in both places (the checker counts each once), never in neither.
    fn archive_and_truncate(&self, inner: &mut Inner) -> Result<(), LogError> {
        if let Some(h) = &mut inner.history {
            let scan = read_all(&mut inner.file, &self.path)?;
            h.archive(&history::transactions(&scan.records).committed)?;
        }
        inner.file.set_len(0).map_err(io_err(&self.path))?;
        inner
            .file
            .seek(SeekFrom::Start(0))
            .map_err(io_err(&self.path))?;
        inner.end = 0;
        inner.active = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

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
            .records
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        assert_eq!(read, recs);
        // A torn tail (half a record) is ignored.
        let mut f = OpenOptions::new().append(true).open(w.path()).unwrap();
        f.write_all(&[33, 0, 0, 0, 1, 2]).unwrap();
        let scan = read_log(w.path()).unwrap();
        assert_eq!(scan.records.len(), 4);
        assert_eq!(scan.torn_bytes(), 6);
        // A flipped byte ends the readable log there.
        let mut bytes = std::fs::read(w.path()).unwrap();
        bytes[8 + 3] ^= 0xff;
        std::fs::write(w.path(), &bytes).unwrap();
        assert_eq!(read_log(w.path()).unwrap().records.len(), 0);
    }

    #[test]
    fn open_cuts_a_torn_tail_before_appending() {
        let dir = tempfile::tempdir().unwrap();
        let w = LogWriter::open(dir.path(), "A", false).unwrap();
        let u = LogRecord::Update {
            txid: 1,
            account: 3,
            before: 10,
            after: 5,
        };
        w.append(&u, true, false).unwrap();
        let end = read_log(w.path()).unwrap().valid_end;
        assert_eq!(end, 41);
        drop(w);
        // Half a record (a writer killed inside its write).
        let mut half = Vec::new();
        LogRecord::Commit { txid: 1 }.encode(&mut half);
        half.truncate(half.len() / 2);
        let path = log_path(dir.path(), "A");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&half).unwrap();
        drop(f);
        let scan = read_log(&path).unwrap();
        assert_eq!((scan.valid_end, scan.len), (41, 41 + half.len() as u64));

        let w = LogWriter::open(dir.path(), "A", false).unwrap();
        assert_eq!(w.cut_at_open(), half.len() as u64);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 41);
        let lsn = w
            .append(&LogRecord::Abort { txid: 1 }, false, true)
            .unwrap();
        assert_eq!(lsn, 41, "appended right after the last valid record");
        let scan = read_log(&path).unwrap();
        assert_eq!(scan.torn_bytes(), 0);
        assert_eq!(
            scan.records,
            vec![(0, u), (41, LogRecord::Abort { txid: 1 })]
        );
    }

    #[test]
    fn a_fifo_or_a_symlink_at_the_log_path_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(dir.path(), "F");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(matches!(read_log(&path), Err(LogError::NotRegularFile(_))));
        assert!(matches!(
            LogWriter::open(dir.path(), "F", false),
            Err(LogError::NotRegularFile(_))
        ));
        std::os::unix::fs::symlink("/etc/passwd", log_path(dir.path(), "S")).unwrap();
        assert!(matches!(
            LogWriter::open(dir.path(), "S", false),
            Err(LogError::Symlink(_))
        ));
    }
}
