//! The shared accounts file: the data that member transactions change under
//! modify locks. One file in the plex (`accounts`), mapped `MAP_SHARED` by
//! every member, little-endian throughout:
//!
//! ```text
//! offset  size  field
//! 0       8     magic "CFACCT01"
//! 8       4     version (1)
//! 12      4     record size (16)
//! 16      8     number of accounts N
//! 24      8     initial balance per account (i64)
//! 32      8     FNV-1a 64 checksum of bytes 0..32
//! 40      24    zero
//! 64      16*N  records: balance (i64), id of the last transaction that changed it (u64)
//! ```
//! The file is exactly `64 + 16 * N` bytes. Like the region, it is untrusted:
//! it is opened through [`cf_core::plexfs::PlexDir`] (no symlink, FIFO, hard
//! link or another user's file; created `O_EXCL` with its mode set), and every
//! account index is checked.

use cf_core::plexfs::{PlexDir, PlexFileError};
use cf_core::shm::mapping::{Access, InShared, SharedMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

pub const ACCOUNTS_FILE: &str = "accounts";
const MAGIC: &[u8; 8] = b"CFACCT01";
const VERSION: u32 = 1;
const HEADER: u64 = 64;
const RECORD: u64 = 16;
/// Most accounts a file may hold.
pub const MAX_ACCOUNTS: u64 = 1 << 26;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}: no accounts file (create one with `cfctl create --accounts N`)")]
    NotFound(PathBuf),
    #[error("{0} already exists")]
    Exists(PathBuf),
    #[error("{0} is a symbolic link; refusing to follow it")]
    Symlink(PathBuf),
    #[error("{path} is owned by uid {owner}, not by this user")]
    ForeignOwner { path: PathBuf, owner: u32 },
    /// The plex directory or the file is not to be trusted (links, mode, type).
    #[error(transparent)]
    Untrusted(PlexFileError),
    #[error("{0}: opened read-only")]
    ReadOnly(PathBuf),
    #[error("{path}: not an accounts file: {what}")]
    Bad { path: PathBuf, what: String },
    #[error("account {index} out of range ({count} accounts)")]
    OutOfRange { index: u64, count: u64 },
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
}

impl From<PlexFileError> for StoreError {
    fn from(e: PlexFileError) -> StoreError {
        match e {
            PlexFileError::NotFound { path } => StoreError::NotFound(path),
            PlexFileError::AlreadyExists { path } => StoreError::Exists(path),
            PlexFileError::Symlink { path } => StoreError::Symlink(path),
            PlexFileError::ForeignOwner { path, owner, .. } => {
                StoreError::ForeignOwner { path, owner }
            }
            other => StoreError::Untrusted(other),
        }
    }
}

/// The mapped accounts file.
pub struct Store {
    map: SharedMap,
    read_only: bool,
    count: u64,
    initial: i64,
    path: PathBuf,
}

/// FNV-1a 64 of the header's first 32 bytes. Kept hand-written on purpose:
/// it is a field of the accounts-file format (version 1; another function
/// would be a new version), and it only detects accidental damage to those
/// 32 bytes. The log and the history use CRC-32C (`crc32c`) for their records.
fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn header_bytes(count: u64, initial: i64) -> [u8; 64] {
    let mut h = [0u8; 64];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(RECORD as u32).to_le_bytes());
    h[16..24].copy_from_slice(&count.to_le_bytes());
    h[24..32].copy_from_slice(&initial.to_le_bytes());
    let sum = fnv(&h[..32]);
    h[32..40].copy_from_slice(&sum.to_le_bytes());
    h
}

impl Store {
    pub fn path_in(plex_dir: &Path) -> PathBuf {
        plex_dir.join(ACCOUNTS_FILE)
    }

    /// Create the accounts file with `count` accounts of `balance` each.
    pub fn create(
        plex_dir: &Path,
        count: u64,
        balance: i64,
        group_access: bool,
    ) -> Result<Store, StoreError> {
        let path = Self::path_in(plex_dir);
        if count == 0 || count > MAX_ACCOUNTS {
            return Err(StoreError::Bad {
                path,
                what: format!("account count {count} (1 to {MAX_ACCOUNTS})"),
            });
        }
        let _ = group_access; // the plex directory's mode decides (plexfs)
        let file = PlexDir::check(plex_dir)?.create_new(&path)?;
        let io = |err| StoreError::Io {
            path: path.clone(),
            err,
        };
        file.set_len(HEADER + RECORD * count).map_err(io)?;
        let map = SharedMap::map(&file, HEADER + RECORD * count, Access::ReadWrite).map_err(io)?;
        let store = Store {
            map,
            read_only: false,
            count,
            initial: balance,
            path,
        };
        for i in 0..count {
            store.balance_cell(i).store(balance, Ordering::Relaxed);
        }
        // Header (magic included) last: a half-made file is refused by open.
        let header = header_bytes(count, balance);
        for (i, chunk) in header.chunks(8).enumerate().skip(1) {
            store.header_word(i).store(
                u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8])),
                Ordering::Relaxed,
            );
        }
        std::sync::atomic::fence(Ordering::SeqCst);
        store
            .header_word(0)
            .store(u64::from_le_bytes(*MAGIC), Ordering::Release);
        Ok(store)
    }

    /// Header word `i` (< 8) of the mapping.
    fn header_word(&self, i: usize) -> &AtomicU64 {
        assert!(i < 8, "internal: the header has 8 words");
        self.cell(8 * i)
    }

    /// The atomic at byte `off` of the mapping. Every caller's offset lies in
    /// the header or in record `i < count`, and the mapping is exactly the
    /// header plus `count` records (checked at open and create): a failed
    /// check is a bug here, not bad input.
    fn cell<T: InShared>(&self, off: usize) -> &T {
        match self.map.atomic(off) {
            Ok(c) => c,
            Err(e) => panic!("internal: accounts file cell: {e}"),
        }
    }

    /// Open and validate the accounts file of a plex.
    pub fn open(plex_dir: &Path) -> Result<Store, StoreError> {
        Self::open_with(plex_dir, true)
    }

    /// Open and validate the accounts file of a plex with a read-only
    /// mapping (`display accounts`, the checker): [`Store::set`] then fails.
    pub fn open_read_only(plex_dir: &Path) -> Result<Store, StoreError> {
        Self::open_with(plex_dir, false)
    }

    fn open_with(plex_dir: &Path, write: bool) -> Result<Store, StoreError> {
        use std::io::Read;
        let path = Self::path_in(plex_dir);
        let mut file = PlexDir::check(plex_dir)?
            .open(&path, write)?
            .ok_or_else(|| StoreError::NotFound(path.clone()))?;
        let io = |err| StoreError::Io {
            path: path.clone(),
            err,
        };
        let len = file.metadata().map_err(io)?.len();
        let bad = |what: String| StoreError::Bad {
            path: path.clone(),
            what,
        };
        if len < HEADER {
            return Err(bad(format!("{len} bytes, shorter than the header")));
        }
        // The header is read with read(2), not through the mapping: nothing
        // of the mapping is touched before the size is known to match.
        let mut h = [0u8; HEADER as usize];
        file.read_exact(&mut h).map_err(|err| StoreError::Io {
            path: path.clone(),
            err,
        })?;
        if &h[..8] != MAGIC {
            return Err(bad("wrong magic".into()));
        }
        let u32_at = |o: usize| u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
        let u64_at = |o: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&h[o..o + 8]);
            u64::from_le_bytes(a)
        };
        if u32_at(8) != VERSION || u32_at(12) != RECORD as u32 {
            return Err(bad(format!(
                "version {} record size {}",
                u32_at(8),
                u32_at(12)
            )));
        }
        if fnv(&h[..32]) != u64_at(32) {
            return Err(bad("header checksum mismatch".into()));
        }
        let count = u64_at(16);
        if count == 0 || count > MAX_ACCOUNTS || len != HEADER + RECORD * count {
            return Err(bad(format!("{len} bytes for {count} accounts")));
        }
        let initial = u64_at(24) as i64;
        let access = if write {
            Access::ReadWrite
        } else {
            Access::ReadOnly
        };
        let map = SharedMap::map(&file, len, access).map_err(|err| StoreError::Io {
            path: path.clone(),
            err,
        })?;
        Ok(Store {
            map,
            read_only: !write,
            count,
            initial,
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn count(&self) -> u64 {
        self.count
    }
    pub fn initial_balance(&self) -> i64 {
        self.initial
    }
    /// The total the bank must always add up to.
    pub fn expected_total(&self) -> i128 {
        self.initial as i128 * self.count as i128
    }

    fn balance_cell(&self, i: u64) -> &AtomicI64 {
        assert!(i < self.count, "internal: account index checked by callers");
        // A read-only mapping is only loaded from (`set` refuses it).
        self.cell((HEADER + RECORD * i) as usize)
    }

    fn txid_cell(&self, i: u64) -> &AtomicU64 {
        assert!(i < self.count, "internal: account index checked by callers");
        self.cell((HEADER + RECORD * i + 8) as usize)
    }

    fn check(&self, i: u64) -> Result<u64, StoreError> {
        if i < self.count {
            Ok(i)
        } else {
            Err(StoreError::OutOfRange {
                index: i,
                count: self.count,
            })
        }
    }

    pub fn balance(&self, i: u64) -> Result<i64, StoreError> {
        Ok(self.balance_cell(self.check(i)?).load(Ordering::Acquire))
    }

    /// Set a balance (the caller holds the account's modify lock and has
    /// logged the change).
    pub fn set(&self, i: u64, value: i64, txid: u64) -> Result<(), StoreError> {
        if self.read_only {
            return Err(StoreError::ReadOnly(self.path.clone()));
        }
        let i = self.check(i)?;
        self.txid_cell(i).store(txid, Ordering::Relaxed);
        self.balance_cell(i).store(value, Ordering::Release);
        Ok(())
    }

    /// Sum of all balances (exact while no transaction is in flight).
    pub fn total(&self) -> i128 {
        (0..self.count)
            .map(|i| self.balance_cell(i).load(Ordering::Acquire) as i128)
            .sum()
    }

    /// The resource name of an account's lock.
    pub fn resource(i: u64) -> String {
        format!("acct:{i}")
    }

    /// The resource name of the accounts table's lock (the bank's
    /// `--hierarchy`: IX or IS on it before X or S on the rows).
    pub fn table_resource() -> &'static str {
        "bank.accounts"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_open_and_refuse_damage() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::create(dir.path(), 10, 100, false).unwrap();
        assert_eq!(s.total(), 1000);
        s.set(3, 150, 7).unwrap();
        assert!(matches!(
            s.set(10, 1, 1),
            Err(StoreError::OutOfRange { .. })
        ));
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.balance(3).unwrap(), 150);
        assert_eq!(s.expected_total(), 1000);
        assert!(matches!(
            Store::create(dir.path(), 10, 100, false),
            Err(StoreError::Exists(_))
        ));
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(Store::path_in(dir.path()))
            .unwrap();
        f.set_len(64 + 16 * 9).unwrap();
        assert!(matches!(
            Store::open(dir.path()),
            Err(StoreError::Bad { .. })
        ));
    }
}
