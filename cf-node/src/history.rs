//! The history of committed transactions, and a checker of every account
//! against it: stronger than the bank total, which cannot see a lost update
//! that another change happens to balance.
//!
//! When the plex directory holds a directory `history/` (`cfctl create
//! --history`, the simulation), every committed transaction is archived to
//! `history/<member>` before its log records are discarded: before a
//! checkpoint truncates the log ([`crate::wal::LogWriter::checkpoint`]) and
//! before a recovery does ([`crate::wal::LogWriter::truncate`]). At any
//! moment every committed transaction is therefore in its member's history
//! file, or in its member's log, or in both (a writer killed between
//! archiving and truncating archives it again next time: duplicates are
//! possible and [`check`] removes them by (member, txid)).
//!
//! A history file is append-only, little-endian:
//!
//! ```text
//! record  = len:u32 (payload bytes) | check:u32 (CRC-32C of payload) | payload
//! payload = txid:u64 | n:u32 | n x (account:u64 | before:i64 | after:i64)
//!           len = 12 + 24 n, 1 <= n <= 1024
//! ```
//! One record per committed transaction, with its UPDATEs in log order.
//!
//! **Torn tail.** Only the last record may be incomplete (shorter than its
//! 8-byte header, or than the length its header gives): a writer killed
//! inside its `write`. A reader ignores it; a writer cuts it before it
//! appends. Anything else that does not decode (a length out of range, a
//! checksum mismatch, a count that disagrees with the length, an account out
//! of range) makes the file bad: the writer refuses to append to it and the
//! checker fails, naming the file and the record's offset.

use crate::store::{Store, StoreError};
use crate::wal::{self, LogError, LogRecord};
use cf_core::plexfs::{PlexDir, PlexFileError};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The directory of history files in a plex.
pub const HISTORY_DIR: &str = "history";
/// Most updates one archived transaction may have.
pub const MAX_UPDATES: u32 = 1024;
const HEADER: usize = 8;
const FIXED: usize = 12;
const PER_UPDATE: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    /// The plex directory, `history/` or the file is not to be trusted.
    #[error(transparent)]
    Untrusted(PlexFileError),
    #[error("{0} is a symbolic link; refusing to follow it")]
    Symlink(PathBuf),
    #[error("{0} is not a regular file")]
    NotRegularFile(PathBuf),
    #[error("{0} is not a directory")]
    NotDirectory(PathBuf),
    #[error("{path}: not a member's file: {why}")]
    BadName { path: PathBuf, why: String },
    #[error("{path}: bad record at offset {offset}: {what}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        what: String,
    },
    #[error(
        "{path}: record at offset {offset}: account {account} out of range ({count} accounts)"
    )]
    AccountOutOfRange {
        path: PathBuf,
        offset: u64,
        account: u64,
        count: u64,
    },
    #[error("member {member}, transaction {txid}: {first} and {second} hold different copies")]
    Conflict {
        member: String,
        txid: u64,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("transaction {txid} has {n} updates, more than {MAX_UPDATES}")]
    TooLarge { txid: u64, n: usize },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("account {account}: the sum of its committed changes overflows")]
    Overflow { account: u64 },
}

impl From<PlexFileError> for HistoryError {
    fn from(e: PlexFileError) -> HistoryError {
        match e {
            PlexFileError::Symlink { path } => HistoryError::Symlink(path),
            PlexFileError::NotRegularFile { path, .. } => HistoryError::NotRegularFile(path),
            PlexFileError::NotDirectory { path } => HistoryError::NotDirectory(path),
            other => HistoryError::Untrusted(other),
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> HistoryError + '_ {
    move |err| HistoryError::Io {
        path: path.into(),
        err,
    }
}

/// One UPDATE of a committed transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Update {
    pub account: u64,
    pub before: i64,
    pub after: i64,
}

/// A committed transaction: its id and its updates in log order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedTx {
    pub txid: u64,
    pub updates: Vec<Update>,
}

/// The transactions of a log, as its records say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogTransactions {
    /// Committed (a COMMIT record), in the order of their COMMITs, with
    /// every UPDATE of theirs; those without updates are left out.
    pub committed: Vec<CommittedTx>,
    /// Transactions with an UPDATE and neither COMMIT nor ABORT (losers).
    pub unfinished: u64,
}

/// Sort a log's records into committed and unfinished transactions, the way
/// a back-out sees them (a transaction is committed iff its COMMIT is there).
pub fn transactions(records: &[(u64, LogRecord)]) -> LogTransactions {
    let mut updates: BTreeMap<u64, Vec<Update>> = BTreeMap::new();
    let mut commits: Vec<u64> = Vec::new();
    let mut finished: BTreeSet<u64> = BTreeSet::new();
    for (_, r) in records {
        match *r {
            LogRecord::Update {
                txid,
                account,
                before,
                after,
            } => updates.entry(txid).or_default().push(Update {
                account,
                before,
                after,
            }),
            LogRecord::Commit { txid } => {
                if finished.insert(txid) {
                    commits.push(txid);
                }
            }
            LogRecord::Abort { txid } => {
                finished.insert(txid);
            }
            LogRecord::Clr { .. } => {}
        }
    }
    let unfinished = updates.keys().filter(|t| !finished.contains(t)).count() as u64;
    let committed = commits
        .into_iter()
        .filter_map(|txid| {
            let u = updates.remove(&txid)?;
            Some(CommittedTx { txid, updates: u })
        })
        .collect();
    LogTransactions {
        committed,
        unfinished,
    }
}

/// The history directory of a plex.
pub fn history_dir(plex_dir: &Path) -> PathBuf {
    plex_dir.join(HISTORY_DIR)
}

/// The history file of a member.
pub fn history_path(plex_dir: &Path, member: &str) -> PathBuf {
    history_dir(plex_dir).join(member)
}

/// Is history kept in this plex (is there a directory `history/`)? A
/// symlink or a file of that name is an error.
pub fn enabled(plex_dir: &Path) -> Result<bool, HistoryError> {
    Ok(checked_dir(plex_dir)?.is_some())
}

/// `history/` of a plex, checked like the plex directory (`cf_core::plexfs`),
/// if there is one.
fn checked_dir(plex_dir: &Path) -> Result<Option<PlexDir>, HistoryError> {
    Ok(PlexDir::check(plex_dir)?.subdir(HISTORY_DIR)?)
}

/// Create `history/` in a plex (mode 0700, or 02770 in a group-mode plex,
/// set whatever the umask), so that committed transactions are archived
/// from now on. An existing directory is checked and left as it is.
/// `group_access` is kept for callers: the plex directory's mode decides.
pub fn create_dir(plex_dir: &Path, _group_access: bool) -> Result<(), HistoryError> {
    PlexDir::check(plex_dir)?.ensure_subdir(HISTORY_DIR)?;
    Ok(())
}

fn check_member_name(name: &str, path: &Path) -> Result<(), HistoryError> {
    cf_core::connector::check_name(name).map_err(|e| HistoryError::BadName {
        path: path.into(),
        why: e.to_string(),
    })?;
    if name == "." || name == ".." {
        return Err(HistoryError::BadName {
            path: path.into(),
            why: "'.' and '..' are not member names".into(),
        });
    }
    Ok(())
}

fn encode(tx: &CommittedTx, out: &mut Vec<u8>) -> Result<(), HistoryError> {
    let n = tx.updates.len();
    if n == 0 || n > MAX_UPDATES as usize {
        return Err(HistoryError::TooLarge { txid: tx.txid, n });
    }
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    out.extend_from_slice(&tx.txid.to_le_bytes());
    out.extend_from_slice(&(n as u32).to_le_bytes());
    for u in &tx.updates {
        out.extend_from_slice(&u.account.to_le_bytes());
        out.extend_from_slice(&u.before.to_le_bytes());
        out.extend_from_slice(&u.after.to_le_bytes());
    }
    let payload = &out[start + HEADER..];
    let len = (payload.len() as u32).to_le_bytes();
    let crc = crc32c::crc32c(payload).to_le_bytes();
    out[start..start + 4].copy_from_slice(&len);
    out[start + 4..start + 8].copy_from_slice(&crc);
    Ok(())
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[o..o + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

/// Read until `buf` is full or the end of the file; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8], path: &Path) -> Result<usize, HistoryError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => {
                return Err(HistoryError::Io {
                    path: path.into(),
                    err,
                })
            }
        }
    }
    Ok(got)
}

/// Where a history file's valid records end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistoryEnd {
    /// The end of the last complete record.
    pub valid_end: u64,
    /// The length of the file (more than `valid_end` if the tail is torn).
    pub len: u64,
}

impl HistoryEnd {
    pub fn torn_bytes(&self) -> u64 {
        self.len - self.valid_end
    }
}

/// Stream through a history file (memory: one record), passing each record
/// with its offset to `each`. A torn tail ends the walk; a bad record is an
/// error (see the module docs).
fn walk(
    r: &mut impl Read,
    path: &Path,
    mut each: impl FnMut(u64, CommittedTx) -> Result<(), HistoryError>,
) -> Result<HistoryEnd, HistoryError> {
    let mut off: u64 = 0;
    let mut header = [0u8; HEADER];
    let mut payload = Vec::new();
    let corrupt = |offset: u64, what: String| HistoryError::Corrupt {
        path: path.into(),
        offset,
        what,
    };
    loop {
        let got = read_full(r, &mut header, path)?;
        if got < HEADER {
            return Ok(HistoryEnd {
                valid_end: off,
                len: off + got as u64,
            });
        }
        let len = u32_at(&header, 0) as usize;
        let check = u32_at(&header, 4);
        let max = FIXED + PER_UPDATE * MAX_UPDATES as usize;
        if len < FIXED + PER_UPDATE || len > max || !(len - FIXED).is_multiple_of(PER_UPDATE) {
            return Err(corrupt(off, format!("length {len}")));
        }
        payload.resize(len, 0);
        let got = read_full(r, &mut payload, path)?;
        if got < len {
            return Ok(HistoryEnd {
                valid_end: off,
                len: off + (HEADER + got) as u64,
            });
        }
        if crc32c::crc32c(&payload) != check {
            return Err(corrupt(off, "checksum mismatch".into()));
        }
        let txid = u64_at(&payload, 0);
        let n = u32_at(&payload, 8) as usize;
        if FIXED + PER_UPDATE * n != len {
            return Err(corrupt(off, format!("{n} updates in {len} bytes")));
        }
        let updates = (0..n)
            .map(|i| {
                let o = FIXED + PER_UPDATE * i;
                Update {
                    account: u64_at(&payload, o),
                    before: u64_at(&payload, o + 8) as i64,
                    after: u64_at(&payload, o + 16) as i64,
                }
            })
            .collect();
        each(off, CommittedTx { txid, updates })?;
        off += (HEADER + len) as u64;
    }
}

fn open_existing(path: &Path) -> Result<Option<File>, HistoryError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Ok(PlexDir::check(dir)?.open(path, false)?)
}

/// Read a history file: its transactions with their offsets (a torn tail
/// ignored), and where its valid records end. A missing file is empty.
pub fn read_history(path: &Path) -> Result<(Vec<(u64, CommittedTx)>, HistoryEnd), HistoryError> {
    let Some(file) = open_existing(path)? else {
        return Ok((Vec::new(), HistoryEnd::default()));
    };
    let mut out = Vec::new();
    let end = walk(&mut BufReader::new(file), path, |off, tx| {
        out.push((off, tx));
        Ok(())
    })?;
    Ok((out, end))
}

/// The appender of one member's history file (its only writer: the process
/// connected as the member, or its restart light).
pub struct HistoryWriter {
    file: File,
    path: PathBuf,
    buf: Vec<u8>,
    cut: u64,
}

impl HistoryWriter {
    /// Open `history/<member>` for appending, if the plex keeps history
    /// (`Ok(None)` if it does not). The file is checked record by record
    /// (streamed: memory stays one record); a torn tail is cut; a bad record
    /// is an error.
    pub fn open(
        plex_dir: &Path,
        member: &str,
        _group_access: bool,
    ) -> Result<Option<HistoryWriter>, HistoryError> {
        let Some(dir) = checked_dir(plex_dir)? else {
            return Ok(None);
        };
        let path = history_path(plex_dir, member);
        check_member_name(member, &path)?;
        let mut file = dir.open_or_create(&path)?;
        let end = walk(&mut BufReader::new(&file), &path, |_, _| Ok(()))?;
        if end.torn_bytes() > 0 {
            file.set_len(end.valid_end).map_err(io_err(&path))?;
        }
        // Appends go after the last valid record.
        file.seek(SeekFrom::Start(end.valid_end))
            .map_err(io_err(&path))?;
        Ok(Some(HistoryWriter {
            file,
            path,
            buf: Vec::new(),
            cut: end.torn_bytes(),
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Torn bytes cut from the end of the file when it was opened.
    pub fn cut_at_open(&self) -> u64 {
        self.cut
    }

    /// Append these transactions (one `write` of all their records).
    pub fn archive(&mut self, txs: &[CommittedTx]) -> Result<(), HistoryError> {
        self.buf.clear();
        for tx in txs {
            encode(tx, &mut self.buf)?;
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        self.file.write_all(&self.buf).map_err(io_err(&self.path))
    }
}

/// Check, without reading it, that `history/<member>` can be trusted (if the
/// plex keeps history): a member checks it before it connects.
pub fn precheck(plex_dir: &Path, member: &str) -> Result<(), HistoryError> {
    let Some(dir) = checked_dir(plex_dir)? else {
        return Ok(());
    };
    let path = history_path(plex_dir, member);
    check_member_name(member, &path)?;
    dir.open(&path, false)?;
    Ok(())
}

// ---------------------------------------------------------------- checker

/// What [`check`] read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Accounts compared.
    pub accounts: u64,
    /// Distinct committed transactions, by (member, txid).
    pub transactions: u64,
    /// Their updates.
    pub updates: u64,
    /// Copies of a transaction seen more than once (archived twice, or both
    /// archived and still in the log), left out.
    pub duplicates: u64,
    /// Transactions in the logs with neither COMMIT nor ABORT: not counted.
    /// Non-zero means the check was run while work was in flight or a failed
    /// member was not yet recovered; a difference is then expected.
    pub unfinished: u64,
    /// History files and logs whose last record was torn (ignored).
    pub torn_tails: u64,
    /// Members whose history file or log was read.
    pub members: u64,
}

/// A committed transaction that changed the account that differs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Involved {
    pub member: String,
    pub txid: u64,
    /// What it added to the account (the sum of its after - before there).
    pub delta: i128,
}

/// The first account whose balance is not what the committed transactions say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    pub account: u64,
    /// Initial balance + the deltas of every committed update of it.
    pub expected: i128,
    /// The balance in the accounts file.
    pub actual: i64,
    /// Every committed transaction that changed it, by member and txid.
    pub transactions: Vec<Involved>,
}

/// The verdict of [`check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// Every account holds exactly the effect of the committed transactions.
    Consistent(Counts),
    /// An account differs (the first, by index).
    Differs { counts: Counts, mismatch: Mismatch },
}

impl Check {
    pub fn is_consistent(&self) -> bool {
        matches!(self, Check::Consistent(_))
    }
    pub fn counts(&self) -> &Counts {
        match self {
            Check::Consistent(c) | Check::Differs { counts: c, .. } => c,
        }
    }
    pub fn mismatch(&self) -> Option<&Mismatch> {
        match self {
            Check::Consistent(_) => None,
            Check::Differs { mismatch, .. } => Some(mismatch),
        }
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} accounts, {} committed transactions ({} updates, {} duplicates left out) of {} members, {} unfinished, {} torn tails",
            self.accounts,
            self.transactions,
            self.updates,
            self.duplicates,
            self.members,
            self.unfinished,
            self.torn_tails
        )
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Check::Consistent(c) => write!(f, "every account matches its history: {c}"),
            Check::Differs {
                counts,
                mismatch: m,
            } => {
                write!(
                    f,
                    "account {} holds {}, its committed transactions say {} (off by {}); {} transaction(s) changed it:",
                    m.account,
                    m.actual,
                    m.expected,
                    m.actual as i128 - m.expected,
                    m.transactions.len()
                )?;
                const SHOWN: usize = 20;
                for t in m.transactions.iter().take(SHOWN) {
                    write!(f, " {}:{} {:+}", t.member, t.txid, t.delta)?;
                }
                if m.transactions.len() > SHOWN {
                    write!(f, " ... ({} more)", m.transactions.len() - SHOWN)?;
                }
                write!(f, "; read {counts}")
            }
        }
    }
}

/// Every committed transaction seen, by (member, txid), with the file it was
/// first read from.
#[derive(Default)]
struct Seen {
    txs: BTreeMap<(String, u64), (CommittedTx, PathBuf)>,
    counts: Counts,
}

impl Seen {
    fn add(
        &mut self,
        member: &str,
        tx: CommittedTx,
        path: &Path,
        offset: u64,
        count: u64,
    ) -> Result<(), HistoryError> {
        if let Some(u) = tx.updates.iter().find(|u| u.account >= count) {
            return Err(HistoryError::AccountOutOfRange {
                path: path.into(),
                offset,
                account: u.account,
                count,
            });
        }
        match self.txs.entry((member.to_string(), tx.txid)) {
            std::collections::btree_map::Entry::Occupied(e) => {
                let (first, first_path) = e.get();
                if *first != tx {
                    return Err(HistoryError::Conflict {
                        member: member.into(),
                        txid: tx.txid,
                        first: first_path.clone(),
                        second: path.into(),
                    });
                }
                self.counts.duplicates += 1;
            }
            std::collections::btree_map::Entry::Vacant(e) => {
                self.counts.transactions += 1;
                self.counts.updates += tx.updates.len() as u64;
                e.insert((tx, path.into()));
            }
        }
        Ok(())
    }
}

/// The entries of a directory, sorted by name: (name, path). A name that is
/// not UTF-8 is an error.
fn entries(dir: &Path) -> Result<Vec<(String, PathBuf)>, HistoryError> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let e = e.map_err(io_err(dir))?;
        let path = e.path();
        let name = e
            .file_name()
            .into_string()
            .map_err(|_| HistoryError::BadName {
                path: path.clone(),
                why: "not UTF-8".into(),
            })?;
        out.push((name, path));
    }
    out.sort();
    Ok(out)
}

/// Check every account of a plex against its committed transactions: those
/// archived in `history/*` and those still in the members' logs (`log.*`),
/// each counted once by (member, txid). For each account, expected =
/// initial balance + the sum of after - before of its committed updates;
/// the first account (by index) whose balance differs is reported with
/// every transaction that changed it.
///
/// Run it at rest: no transaction in flight and every failed member
/// recovered ([`Counts::unfinished`] says if not). Every file read is
/// untrusted: a file that does not decode, an account out of range or two
/// different copies of one transaction is an error naming the file.
pub fn check(plex_dir: &Path) -> Result<Check, HistoryError> {
    let store = Store::open(plex_dir)?;
    let count = store.count();
    let mut seen = Seen::default();
    let mut members: BTreeSet<String> = BTreeSet::new();
    if enabled(plex_dir)? {
        for (name, path) in entries(&history_dir(plex_dir))? {
            check_member_name(&name, &path)?;
            let (txs, end) = read_history(&path)?;
            if end.torn_bytes() > 0 {
                seen.counts.torn_tails += 1;
            }
            for (off, tx) in txs {
                seen.add(&name, tx, &path, off, count)?;
            }
            members.insert(name);
        }
    }
    for (name, path) in entries(plex_dir)? {
        let Some(member) = name.strip_prefix("log.") else {
            continue;
        };
        check_member_name(member, &path)?;
        let scan = wal::read_log(&path)?;
        if scan.torn_bytes() > 0 {
            seen.counts.torn_tails += 1;
        }
        for (lsn, r) in &scan.records {
            if let LogRecord::Update { account, .. } | LogRecord::Clr { account, .. } = *r {
                if account >= count {
                    return Err(HistoryError::AccountOutOfRange {
                        path,
                        offset: *lsn,
                        account,
                        count,
                    });
                }
            }
        }
        let t = transactions(&scan.records);
        seen.counts.unfinished += t.unfinished;
        for tx in t.committed {
            seen.add(member, tx, &path, 0, count)?;
        }
        members.insert(member.to_string());
    }
    seen.counts.members = members.len() as u64;
    seen.counts.accounts = count;

    let initial = store.initial_balance() as i128;
    let mut expected = vec![initial; count as usize];
    for (tx, _) in seen.txs.values() {
        for u in &tx.updates {
            // In range: checked in `Seen::add`.
            let slot = expected
                .get_mut(u.account as usize)
                .ok_or(HistoryError::Overflow { account: u.account })?;
            *slot = slot
                .checked_add(u.after as i128 - u.before as i128)
                .ok_or(HistoryError::Overflow { account: u.account })?;
        }
    }
    for (i, want) in expected.iter().enumerate() {
        let actual = store.balance(i as u64)?;
        if actual as i128 == *want {
            continue;
        }
        let transactions = seen
            .txs
            .iter()
            .filter_map(|((member, txid), (tx, _))| {
                let mut touched = false;
                let mut delta = 0i128;
                for u in tx.updates.iter().filter(|u| u.account == i as u64) {
                    touched = true;
                    delta += u.after as i128 - u.before as i128;
                }
                touched.then(|| Involved {
                    member: member.clone(),
                    txid: *txid,
                    delta,
                })
            })
            .collect();
        return Ok(Check::Differs {
            counts: seen.counts,
            mismatch: Mismatch {
                account: i as u64,
                expected: *want,
                actual,
                transactions,
            },
        });
    }
    Ok(Check::Consistent(seen.counts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::LogWriter;

    fn tx(txid: u64, updates: &[(u64, i64, i64)]) -> CommittedTx {
        CommittedTx {
            txid,
            updates: updates
                .iter()
                .map(|&(account, before, after)| Update {
                    account,
                    before,
                    after,
                })
                .collect(),
        }
    }

    /// A plex directory with 4 accounts of 100 and history kept.
    fn plex() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path(), 4, 100, false).unwrap();
        create_dir(dir.path(), false).unwrap();
        (dir, store)
    }

    /// A committed transfer of `amount` from `from` to `to`, logged and applied.
    fn transfer(log: &LogWriter, store: &Store, txid: u64, from: u64, to: u64, amount: i64) {
        let mut first = true;
        for (acct, d) in [(from, -amount), (to, amount)] {
            let before = store.balance(acct).unwrap();
            log.append(
                &LogRecord::Update {
                    txid,
                    account: acct,
                    before,
                    after: before + d,
                },
                first,
                false,
            )
            .unwrap();
            store.set(acct, before + d, txid).unwrap();
            first = false;
        }
        log.append(&LogRecord::Commit { txid }, false, true)
            .unwrap();
    }

    #[test]
    fn archive_round_trip_and_torn_tail_cut_on_open() {
        let (dir, _store) = plex();
        let path = history_path(dir.path(), "A");
        let txs = [tx(1, &[(0, 100, 90), (1, 100, 110)]), tx(2, &[(3, 5, -7)])];
        let mut w = HistoryWriter::open(dir.path(), "A", false)
            .unwrap()
            .unwrap();
        w.archive(&txs).unwrap();
        drop(w);
        let (read, end) = read_history(&path).unwrap();
        assert_eq!(read, vec![(0, txs[0].clone()), (68, txs[1].clone())]);
        assert_eq!(
            end,
            HistoryEnd {
                valid_end: 112,
                len: 112
            }
        );

        // A torn record at the end: ignored by readers, cut by the next writer.
        for keep in [3usize, 8, 20] {
            let mut rec = Vec::new();
            encode(&tx(3, &[(2, 1, 2)]), &mut rec).unwrap();
            rec.truncate(keep);
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            f.write_all(&rec).unwrap();
            drop(f);
            let (read, end) = read_history(&path).unwrap();
            assert_eq!(read.len(), 2);
            assert_eq!(end.torn_bytes(), keep as u64);
            let mut w = HistoryWriter::open(dir.path(), "A", false)
                .unwrap()
                .unwrap();
            assert_eq!(w.cut_at_open(), keep as u64);
            assert_eq!(std::fs::metadata(&path).unwrap().len(), 112);
            w.archive(&[]).unwrap();
        }
        let mut w = HistoryWriter::open(dir.path(), "A", false)
            .unwrap()
            .unwrap();
        w.archive(&[tx(4, &[(1, 0, 1)])]).unwrap();
        let (read, end) = read_history(&path).unwrap();
        assert_eq!(read.len(), 3);
        assert_eq!(read[2], (112, tx(4, &[(1, 0, 1)])));
        assert_eq!(end.torn_bytes(), 0);
    }

    #[test]
    fn no_history_directory_means_no_writer() {
        let dir = tempfile::tempdir().unwrap();
        assert!(HistoryWriter::open(dir.path(), "A", false)
            .unwrap()
            .is_none());
        std::fs::write(history_dir(dir.path()), b"not a directory").unwrap();
        assert!(matches!(
            HistoryWriter::open(dir.path(), "A", false),
            Err(HistoryError::NotDirectory(_))
        ));
    }

    #[test]
    fn bad_records_are_errors_naming_the_file_and_offset() {
        let (dir, _store) = plex();
        let path = history_path(dir.path(), "A");
        let mut w = HistoryWriter::open(dir.path(), "A", false)
            .unwrap()
            .unwrap();
        w.archive(&[tx(1, &[(0, 100, 90)]), tx(2, &[(1, 100, 110)])])
            .unwrap();
        drop(w);
        let good = std::fs::read(&path).unwrap();
        let corrupt_at = |bytes: &[u8]| {
            std::fs::write(&path, bytes).unwrap();
            let e = read_history(&path).unwrap_err();
            assert!(
                matches!(
                    HistoryWriter::open(dir.path(), "A", false),
                    Err(HistoryError::Corrupt { .. })
                ),
                "the writer refuses a bad file too"
            );
            assert!(e.to_string().contains(path.to_str().unwrap()), "{e}");
            match e {
                HistoryError::Corrupt { offset, what, .. } => (offset, what),
                other => panic!("{other:?}"),
            }
        };
        // A flipped byte in the second record's payload.
        let mut b = good.clone();
        b[44 + 8 + 13] ^= 1;
        assert_eq!(corrupt_at(&b), (44, "checksum mismatch".into()));
        // A length out of range, and one not 12 + 24 n.
        let mut b = good.clone();
        b[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(corrupt_at(&b).0, 0);
        let mut b = good.clone();
        b[0..4].copy_from_slice(&37u32.to_le_bytes());
        assert_eq!(corrupt_at(&b).0, 0);
        // A count that disagrees with the length (checksum recomputed).
        let mut b = good.clone();
        b[8 + 8..8 + 12].copy_from_slice(&2u32.to_le_bytes());
        let crc = crc32c::crc32c(&b[8..44]).to_le_bytes();
        b[4..8].copy_from_slice(&crc);
        assert_eq!(corrupt_at(&b), (0, "2 updates in 36 bytes".into()));
        // The checker fails on it the same way.
        assert!(matches!(
            check(dir.path()),
            Err(HistoryError::Corrupt { offset: 0, .. })
        ));
        // A symlink is refused.
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", &path).unwrap();
        assert!(matches!(read_history(&path), Err(HistoryError::Symlink(_))));
        assert!(matches!(
            HistoryWriter::open(dir.path(), "A", false),
            Err(HistoryError::Symlink(_))
        ));
    }

    #[test]
    fn log_transactions_committed_aborted_and_unfinished() {
        let u = |txid, account| LogRecord::Update {
            txid,
            account,
            before: 1,
            after: 2,
        };
        let recs: Vec<(u64, LogRecord)> = [
            u(1, 0),
            u(2, 1),
            u(1, 2),
            LogRecord::Commit { txid: 1 },
            u(3, 3),
            LogRecord::Clr {
                txid: 3,
                account: 3,
                restored: 1,
                undone_lsn: 4,
            },
            LogRecord::Abort { txid: 3 },
            LogRecord::Commit { txid: 4 }, // no updates: nothing to archive
        ]
        .into_iter()
        .enumerate()
        .map(|(i, r)| (i as u64, r))
        .collect();
        let t = transactions(&recs);
        assert_eq!(t.unfinished, 1, "tx 2");
        assert_eq!(t.committed, vec![tx(1, &[(0, 1, 2), (2, 1, 2)])]);
    }

    #[test]
    fn checkpoint_and_recovery_truncation_archive_first() {
        let (dir, store) = plex();
        let log = LogWriter::open(dir.path(), "A", false).unwrap();
        assert!(log.keeps_history());
        transfer(&log, &store, 10, 0, 1, 5);
        transfer(&log, &store, 11, 1, 2, 7);
        assert!(!log.checkpoint(1 << 20).unwrap(), "below the threshold");
        assert!(log.checkpoint(0).unwrap());
        assert!(crate::wal::read_log(log.path()).unwrap().records.is_empty());
        transfer(&log, &store, 12, 3, 0, 1);
        // Recovery's truncation archives too; a loser (backed out) is not archived.
        log.append(
            &LogRecord::Update {
                txid: 13,
                account: 2,
                before: 107,
                after: 0,
            },
            true,
            false,
        )
        .unwrap();
        store.set(2, 0, 13).unwrap();
        crate::backout::backout(&log, &store, || {}).unwrap();
        log.truncate().unwrap();
        let (read, _) = read_history(&history_path(dir.path(), "A")).unwrap();
        let txids: Vec<u64> = read.iter().map(|(_, t)| t.txid).collect();
        assert_eq!(txids, [10, 11, 12]);
        assert_eq!(
            read[1].1,
            tx(11, &[(1, 105, 98), (2, 100, 107)]),
            "before and after images as logged"
        );
        let c = check(dir.path()).unwrap();
        assert!(c.is_consistent(), "{c}");
        assert_eq!(c.counts().transactions, 3);
        assert_eq!(c.counts().unfinished, 0);
    }

    #[test]
    fn the_checker_dedups_archived_and_logged_copies() {
        let (dir, store) = plex();
        let a = LogWriter::open(dir.path(), "A", false).unwrap();
        let b = LogWriter::open(dir.path(), "B", false).unwrap();
        transfer(&a, &store, 1, 0, 1, 10);
        transfer(&b, &store, 1, 1, 2, 20); // same txid, another member
        transfer(&a, &store, 2, 2, 3, 30);
        // A killed between archiving and truncating: archived, still logged.
        let mut h = HistoryWriter::open(dir.path(), "A", false)
            .unwrap()
            .unwrap();
        let scan = a.scan().unwrap();
        h.archive(&transactions(&scan.records).committed).unwrap();
        // ... and the next checkpoint archives them again, then truncates.
        assert!(a.checkpoint(0).unwrap());
        transfer(&a, &store, 3, 3, 0, 40);
        let c = check(dir.path()).unwrap();
        assert_eq!(
            c,
            Check::Consistent(Counts {
                accounts: 4,
                transactions: 4,
                updates: 8,
                duplicates: 2,
                unfinished: 0,
                torn_tails: 0,
                members: 2,
            })
        );
    }

    #[test]
    fn a_lost_committed_update_is_reported_with_its_account_and_transactions() {
        let (dir, store) = plex();
        let a = LogWriter::open(dir.path(), "A", false).unwrap();
        let b = LogWriter::open(dir.path(), "B", false).unwrap();
        transfer(&a, &store, 7, 0, 2, 10); // 2: 100 -> 110
        assert!(a.checkpoint(0).unwrap()); // tx 7 only in the history now
        transfer(&b, &store, 9, 1, 2, 25); // 2: 110 -> 135, 1: 100 -> 75
        transfer(&b, &store, 10, 3, 1, 5); // 1: 75 -> 80
        assert!(check(dir.path()).unwrap().is_consistent());
        assert_eq!(store.total(), 400);
        // B's update of account 2 is lost: overwritten with its old before
        // image (as a second back-out of an old transaction would do), and
        // the difference hidden from the total by a change elsewhere.
        store.set(2, 110, 7).unwrap();
        store.set(3, 95 + 25, 7).unwrap();
        assert_eq!(store.total(), 400, "the bank total cannot see it");
        let c = check(dir.path()).unwrap();
        let m = c.mismatch().expect("a difference").clone();
        assert_eq!((m.account, m.expected, m.actual), (2, 135, 110));
        assert_eq!(
            m.transactions,
            vec![
                Involved {
                    member: "A".into(),
                    txid: 7,
                    delta: 10
                },
                Involved {
                    member: "B".into(),
                    txid: 9,
                    delta: 25
                },
            ]
        );
        let text = c.to_string();
        assert!(text.contains("account 2 holds 110"), "{text}");
        assert!(text.contains("B:9 +25"), "{text}");
    }

    #[test]
    fn the_checker_refuses_what_it_cannot_trust() {
        let (dir, store) = plex();
        let a = LogWriter::open(dir.path(), "A", false).unwrap();
        transfer(&a, &store, 1, 0, 1, 10);
        // Two different copies of one transaction.
        let mut h = HistoryWriter::open(dir.path(), "A", false)
            .unwrap()
            .unwrap();
        h.archive(&[tx(1, &[(0, 100, 91), (1, 100, 109)])]).unwrap();
        assert!(matches!(
            check(dir.path()),
            Err(HistoryError::Conflict { txid: 1, .. })
        ));
        std::fs::remove_file(history_path(dir.path(), "A")).unwrap();
        // An account out of range, in a history file and in a log.
        let mut h = HistoryWriter::open(dir.path(), "C", false)
            .unwrap()
            .unwrap();
        h.archive(&[tx(5, &[(4, 0, 1)])]).unwrap();
        let e = check(dir.path()).unwrap_err();
        assert!(
            matches!(
                e,
                HistoryError::AccountOutOfRange {
                    account: 4,
                    count: 4,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("history/C"), "{e}");
        std::fs::remove_file(history_path(dir.path(), "C")).unwrap();
        let d = LogWriter::open(dir.path(), "D", false).unwrap();
        d.append(
            &LogRecord::Update {
                txid: 1,
                account: 1 << 40,
                before: 0,
                after: 1,
            },
            true,
            false,
        )
        .unwrap();
        let e = check(dir.path()).unwrap_err();
        assert!(e.to_string().contains("log.D"), "{e}");
        std::fs::remove_file(crate::wal::log_path(dir.path(), "D")).unwrap();
        // A file that is not a member's, and a directory where a file should be.
        std::fs::write(history_dir(dir.path()).join("bad name"), b"").unwrap();
        assert!(matches!(
            check(dir.path()),
            Err(HistoryError::BadName { .. })
        ));
        std::fs::remove_file(history_dir(dir.path()).join("bad name")).unwrap();
        std::fs::create_dir(history_path(dir.path(), "E")).unwrap();
        assert!(matches!(
            check(dir.path()),
            Err(HistoryError::NotRegularFile(_))
        ));
        std::fs::remove_dir(history_path(dir.path(), "E")).unwrap();
        assert!(check(dir.path()).unwrap().is_consistent());
    }
}
