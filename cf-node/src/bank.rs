//! The bank workload: transfers between random accounts. Both legs are made
//! under modify locks (taken in account order, so members never deadlock), each
//! leg logged before the account changes, then a commit record, then the locks
//! are released. The total of all balances never changes; `--pause-us` pauses
//! between the legs so that a kill often lands inside a transaction.

use crate::bufpool::{BufferPool, PAGE};
use crate::store::Store;
use crate::wal::{LogRecord, LogWriter};
use cf_core::{Holder, Mode, WaitError};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Settings of the workload.
#[derive(Clone, Debug)]
pub struct BankConfig {
    pub pause: Duration,
    pub lock_timeout: Duration,
    pub max_amount: i64,
    /// Checkpoint (truncate) the log when it grows past this many bytes.
    pub checkpoint_bytes: u64,
}

/// Counters of one member's workload.
#[derive(Debug, Default)]
pub struct BankStats {
    pub committed: AtomicU64,
    /// Transfers not started because a lock was retained or timed out.
    pub skipped_retained: AtomicU64,
    pub skipped_timeout: AtomicU64,
}

/// What the worker threads of one member share.
pub struct Bank {
    pub store: Store,
    pub log: LogWriter,
    pub pool: Option<Mutex<BufferPool>>,
    pub config: BankConfig,
    pub stats: BankStats,
    pub stop: AtomicBool,
    next_txid: AtomicU64,
    /// A transfer failed inside its transaction (after its first leg): its
    /// worker kept its locks (they must be retained until a back-out).
    poisoned: AtomicBool,
}

/// A small xorshift generator (no need for cryptographic randomness here).
pub struct Rng(u64);

impl Rng {
    pub fn seeded(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

impl Bank {
    pub fn new(store: Store, log: LogWriter, pool: Option<BufferPool>, config: BankConfig) -> Bank {
        let seed = cf_core::connector::now_ns();
        Bank {
            store,
            log,
            pool: pool.map(Mutex::new),
            config,
            stats: BankStats::default(),
            stop: AtomicBool::new(false),
            next_txid: AtomicU64::new(seed),
            poisoned: AtomicBool::new(false),
        }
    }

    /// Did a transfer fail inside its transaction? Then the member must not
    /// disconnect normally (that would release half-changed accounts): it
    /// ends like a dead member, and its recovery backs the transaction out.
    pub fn poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Relaxed)
    }

    /// Read an account through the buffer pool, refreshing its page (we hold its lock).
    fn read(&self, account: u64) -> anyhow::Result<i64> {
        let value = self.store.balance(account)?;
        if let Some(pool) = &self.pool {
            let mut pool = pool.lock().unwrap_or_else(|p| p.into_inner());
            let page = account * 16 / PAGE as u64;
            let off = (account * 16 % PAGE as u64) as usize;
            let frame = pool.frame(page, true, |f| {
                f[off..off + 8].copy_from_slice(&value.to_le_bytes())
            });
            return Ok(i64::from_le_bytes(
                frame[off..off + 8].try_into().unwrap_or([0; 8]),
            ));
        }
        Ok(value)
    }

    /// Log and apply one leg (write-through the buffer pool).
    fn leg(
        &self,
        txid: u64,
        account: u64,
        before: i64,
        after: i64,
        first: bool,
    ) -> anyhow::Result<()> {
        self.log.append(
            &LogRecord::Update {
                txid,
                account,
                before,
                after,
            },
            first,
            false,
        )?;
        self.store.set(account, after, txid)?;
        if let Some(pool) = &self.pool {
            let mut pool = pool.lock().unwrap_or_else(|p| p.into_inner());
            let off = (account * 16 % PAGE as u64) as usize;
            let frame = pool.frame(account * 16 / PAGE as u64, false, |_| {});
            frame[off..off + 8].copy_from_slice(&after.to_le_bytes());
        }
        Ok(())
    }

    /// One transfer. Returns false if it was skipped (a lock retained or busy).
    pub fn transfer(&self, h: &mut Holder, rng: &mut Rng) -> anyhow::Result<bool> {
        let n = self.store.count();
        if n < 2 {
            anyhow::bail!("the bank needs at least two accounts");
        }
        let from = rng.below(n);
        let to = (from + 1 + rng.below(n - 1)) % n;
        let (lo, hi) = (from.min(to), from.max(to));
        let mut held = Vec::with_capacity(2);
        for acct in [lo, hi] {
            match h.lock(
                Store::resource(acct).as_bytes(),
                Mode::Modify,
                self.config.lock_timeout,
            )? {
                Ok(id) => held.push(id),
                Err(e) => {
                    for id in held {
                        h.unlock(id)?;
                    }
                    match e {
                        WaitError::Retained(_) => {
                            self.stats.skipped_retained.fetch_add(1, Ordering::Relaxed);
                            // The retaining member is being recovered: give it a moment.
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        WaitError::Timeout(_) => {
                            self.stats.skipped_timeout.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    return Ok(false);
                }
            }
        }
        let txid = self.next_txid.fetch_add(1, Ordering::Relaxed);
        let amount = 1 + rng.below(self.config.max_amount.max(1) as u64) as i64;
        let a = self.read(from)?;
        let b = self.read(to)?;
        // Balances come from a shared file (and a forged log's back-out may
        // have put anything there): never wrap.
        let (Some(a_after), Some(b_after)) = (a.checked_sub(amount), b.checked_add(amount)) else {
            for id in held {
                h.unlock(id)?;
            }
            anyhow::bail!(
                "account {from} ({a}) or {to} ({b}) would overflow by a transfer of {amount}: \
                 the accounts file holds impossible balances"
            );
        };
        // From the first leg on, a failure leaves the transaction in flight.
        let poison = |e: anyhow::Error| {
            self.poisoned.store(true, Ordering::Relaxed);
            e
        };
        self.leg(txid, from, a, a_after, true).map_err(poison)?;
        cf_core::crash::point("bank.between_legs");
        if !self.config.pause.is_zero() {
            std::thread::sleep(self.config.pause);
        }
        self.leg(txid, to, b, b_after, false).map_err(poison)?;
        self.log
            .append(&LogRecord::Commit { txid }, false, true)
            .map_err(|e| poison(e.into()))?;
        for id in held {
            h.unlock(id)?;
        }
        self.stats.committed.fetch_add(1, Ordering::Relaxed);
        h.add_committed(1);
        self.log.checkpoint(self.config.checkpoint_bytes)?;
        Ok(true)
    }

    /// A worker thread's loop: transfer until told to stop.
    /// A worker thread's loop: transfer until told to stop. A transfer that
    /// failed inside its transaction keeps its locks (the holder is not
    /// dropped, which would release them over half-changed accounts).
    pub fn run_worker(&self, mut h: Holder, seed: u64) -> anyhow::Result<()> {
        let mut rng = Rng::seeded(seed);
        while !self.stop.load(Ordering::Relaxed) {
            if let Err(e) = self.transfer(&mut h, &mut rng) {
                if self.poisoned() {
                    std::mem::forget(h);
                }
                return Err(e);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Balances from a forged log's back-out: a transfer must refuse to wrap
    /// (and give its locks back), never write a wrapped balance.
    #[test]
    fn a_transfer_that_would_overflow_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let plex = cf_core::Plex {
            dir: dir.path().into(),
        };
        let region = Arc::new(
            cf_core::Region::create(&plex, &cf_core::CreateOptions::small_for_tests()).unwrap(),
        );
        let store = Store::create(dir.path(), 2, 0, false).unwrap();
        store.set(0, i64::MIN, 1).unwrap();
        store.set(1, i64::MIN, 1).unwrap();
        let log = LogWriter::open(dir.path(), "A", false).unwrap();
        let cfg = BankConfig {
            pause: Duration::ZERO,
            lock_timeout: Duration::from_secs(1),
            max_amount: 100,
            checkpoint_bytes: 1 << 20,
        };
        let bank = Bank::new(store, log, None, cfg);
        let m = cf_core::Member::connect(region, "A").unwrap();
        let mut h = m.holder().unwrap();
        let e = bank.transfer(&mut h, &mut Rng::seeded(7)).unwrap_err();
        assert!(e.to_string().contains("would overflow"), "{e}");
        assert!(!bank.poisoned(), "refused before its first leg");
        assert_eq!(bank.store.balance(0).unwrap(), i64::MIN);
        assert_eq!(bank.store.balance(1).unwrap(), i64::MIN);
        assert!(m.held_records().unwrap().is_empty(), "locks given back");
        drop(h);
        m.disconnect().unwrap();
    }
}
