//! The bank workload. A *transfer* takes modify locks on its accounts (in
//! account order, so members never deadlock, unless `--lock-order random`
//! below), logs each leg before the account changes, then a commit record,
//! then releases the locks: the total of all balances never changes, and
//! `--pause-us` pauses between the legs so that a kill often lands inside a
//! transaction. A *read* (`--read-pct`)
//! takes share locks on its accounts (in the same order), reads them and
//! releases them: it writes no log record, so the committed-history archive
//! and recovery see only transfers.
//!
//! Which accounts a transaction touches is seeded (`--seed`; each worker
//! thread gets its own stream): uniform, Zipfian, or a hot set taking a share
//! of the accesses. `--tx-size` accounts per transaction, `--think` between
//! transactions, and `--rate` a fixed rate instead of a closed loop.
//!
//! `--lock-order random` takes a transaction's account locks in an order
//! drawn from the worker's stream instead of account order, so transactions
//! deadlock on purpose. Every lock is taken before the first leg, so a
//! [`WaitError::Deadlock`] answer (this worker's request was the victim the
//! detector chose) finds nothing written: the worker gives back the locks it
//! holds, counts a deadlock victim and its detection latency, and goes on
//! with its next transaction. A victim is not retried: like a transfer
//! skipped on a retained lock, it simply did not happen, and the next draw
//! picks new accounts (retrying the same order against the same survivor
//! would mostly meet it again).
//!
//! `--hierarchy` locks like a data-sharing workload: a transfer first takes
//! IX with the modify flag on the table ([`Store::table_resource`]), then X
//! with the modify flag on each account row; a read takes IS on the table
//! and S on its rows. Rows are released first, then the table. The table's
//! IX is a modify lock so that a killed member's table lock is retained with
//! its rows, as on Db2 (locks held for changes keep the modify flag): a
//! retained IX refuses only the modes incompatible with IX (S, U, SIX, X on
//! the whole table), never another member's IX or IS, so the other members'
//! transfers and reads go on while it waits for its restart light.

use crate::bufpool::{BufferPool, PAGE};
use crate::stats::{Recorder, Summary};
use crate::store::Store;
use crate::wal::{LogRecord, LogWriter};
use cf_core::{Holder, LockMode, Mode, WaitError};
use rand::{Rng as _, SeedableRng};
use rand_distr::Distribution;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Which accounts a transaction picks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Skew {
    /// Every account alike.
    Uniform,
    /// Zipfian with exponent `s` (> 0): account 0 the most popular.
    Zipf(f64),
    /// The first `accounts` accounts take `pct` percent of the accesses.
    Hot { accounts: u64, pct: f64 },
}

impl std::str::FromStr for Skew {
    type Err = String;
    /// `uniform`, `zipf:S` (S > 0, e.g. `zipf:0.99`), `hot:K:P` (K accounts
    /// taking P percent, e.g. `hot:10:90`).
    fn from_str(s: &str) -> Result<Skew, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let num = |x: &str| -> Result<f64, String> {
            x.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| format!("{x:?} is not a number"))
        };
        match parts.as_slice() {
            ["uniform"] => Ok(Skew::Uniform),
            ["zipf", e] => {
                let e = num(e)?;
                if !(e > 0.0 && e <= 10.0) {
                    return Err("zipf:S needs S in (0, 10]".into());
                }
                Ok(Skew::Zipf(e))
            }
            ["hot", k, p] => {
                let k: u64 = k.parse().map_err(|_| format!("{k:?} is not a count"))?;
                let p = num(p)?;
                if k == 0 || !(0.0..=100.0).contains(&p) {
                    return Err("hot:K:P needs K >= 1 accounts and P from 0 to 100".into());
                }
                Ok(Skew::Hot {
                    accounts: k,
                    pct: p,
                })
            }
            _ => Err(format!(
                "{s:?}: give uniform, zipf:S (e.g. zipf:0.99) or hot:K:P (e.g. hot:10:90)"
            )),
        }
    }
}

impl std::fmt::Display for Skew {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Skew::Uniform => write!(f, "uniform"),
            Skew::Zipf(e) => write!(f, "zipf:{e}"),
            Skew::Hot { accounts, pct } => write!(f, "hot:{accounts}:{pct}"),
        }
    }
}

/// In which order a transaction takes its account locks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LockOrder {
    /// Account order: transactions never wait for each other in a cycle.
    #[default]
    Sorted,
    /// An order drawn from the worker's stream: transactions deadlock, and
    /// the deadlock detector breaks each cycle.
    Random,
}

impl std::str::FromStr for LockOrder {
    type Err = String;
    /// `sorted` or `random`.
    fn from_str(s: &str) -> Result<LockOrder, String> {
        match s {
            "sorted" => Ok(LockOrder::Sorted),
            "random" => Ok(LockOrder::Random),
            _ => Err(format!("{s:?}: give sorted or random")),
        }
    }
}

impl std::fmt::Display for LockOrder {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(match self {
            LockOrder::Sorted => "sorted",
            LockOrder::Random => "random",
        })
    }
}

/// The table lock of `--hierarchy` for a transfer: IX, modify (retained
/// with the rows when its member dies; a retained IX refuses S, U, SIX and
/// X, not another member's IX or IS).
pub const TABLE_WRITE: Mode = Mode::modify(LockMode::IX);
/// The table lock of `--hierarchy` for a read: IS.
pub const TABLE_READ: Mode = Mode::lock(LockMode::IS);
/// A transfer's row lock: X, modify (the same as [`Mode::Modify`]).
pub const ROW_WRITE: Mode = Mode::modify(LockMode::X);
/// A read's row lock: S (the same as [`Mode::Share`]).
pub const ROW_READ: Mode = Mode::lock(LockMode::S);

/// Settings of the workload.
#[derive(Clone, Debug)]
pub struct BankConfig {
    pub pause: Duration,
    pub lock_timeout: Duration,
    pub max_amount: i64,
    /// Checkpoint (truncate) the log when it grows past this many bytes.
    pub checkpoint_bytes: u64,
    pub skew: Skew,
    /// Percent of transactions that are reads (share locks, no log).
    pub read_pct: f64,
    /// Accounts per transaction (2 or more).
    pub tx_size: u32,
    /// Pause between two transactions of a worker.
    pub think: Duration,
    /// Transactions per second of each worker (None: closed loop).
    pub rate: Option<f64>,
    /// The order of a transaction's account locks.
    pub lock_order: LockOrder,
    /// Take IX (IS for a read) on the table before the rows.
    pub hierarchy: bool,
}

impl Default for BankConfig {
    fn default() -> BankConfig {
        BankConfig {
            pause: Duration::ZERO,
            lock_timeout: Duration::from_secs(2),
            max_amount: 100,
            checkpoint_bytes: 1 << 20,
            skew: Skew::Uniform,
            read_pct: 0.0,
            tx_size: 2,
            think: Duration::ZERO,
            rate: None,
            lock_order: LockOrder::Sorted,
            hierarchy: false,
        }
    }
}

/// The kinds of transaction, for counts and latencies.
pub const KINDS: [&str; 2] = ["transfer", "read"];

/// Counters of one member's workload.
#[derive(Debug, Default)]
pub struct BankStats {
    pub committed: AtomicU64,
    /// Read-only transactions done.
    pub reads: AtomicU64,
    /// Transfers not started because a lock was retained or timed out.
    pub skipped_retained: AtomicU64,
    pub skipped_timeout: AtomicU64,
    /// Transactions that were a deadlock victim (not retried).
    pub deadlocks: AtomicU64,
    /// Latency (lock to release) of each kind, in µs.
    latency: Mutex<Option<[Recorder; 2]>>,
    /// Detection latency of each deadlock victim, in ms: from just before
    /// the `lock` call that answered `Deadlock` to the answer. The victim is
    /// the youngest wait of its cycle, so its wait began when the cycle
    /// formed.
    detection: Mutex<Option<Recorder>>,
}

impl BankStats {
    fn record(&self, kind: usize, took: Duration) {
        let mut l = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        let r = l.get_or_insert_with(|| [Recorder::new("µs"), Recorder::new("µs")]);
        r[kind].record(took.as_nanos() as f64 / 1e3);
    }

    fn record_deadlock(&self, waited: Duration) {
        self.deadlocks.fetch_add(1, Ordering::Relaxed);
        let mut d = self.detection.lock().unwrap_or_else(|p| p.into_inner());
        d.get_or_insert_with(|| Recorder::new("ms"))
            .record(waited.as_nanos() as f64 / 1e6);
    }

    /// The detection latency of the deadlock victims (ms).
    pub fn deadlock_detection(&self) -> Summary {
        let d = self.detection.lock().unwrap_or_else(|p| p.into_inner());
        match &*d {
            Some(r) => r.summary(),
            None => Summary::of([], "ms"),
        }
    }

    /// The detection latency distribution as (ms, count) pairs.
    pub fn deadlock_detection_buckets(&self) -> Vec<(f64, u64)> {
        let d = self.detection.lock().unwrap_or_else(|p| p.into_inner());
        d.as_ref().map(|r| r.buckets()).unwrap_or_default()
    }

    /// The latency distribution of each kind (`KINDS` order), as
    /// (µs, count) pairs.
    pub fn latency_buckets(&self) -> [Vec<(f64, u64)>; 2] {
        let l = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        match &*l {
            Some([a, b]) => [a.buckets(), b.buckets()],
            None => [Vec::new(), Vec::new()],
        }
    }

    /// The latency of each kind of transaction (`KINDS` order).
    pub fn latency(&self) -> [Summary; 2] {
        let l = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        match &*l {
            Some([a, b]) => [a.summary(), b.summary()],
            None => [Summary::of([], "µs"), Summary::of([], "µs")],
        }
    }
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

/// The workload's seeded generator: PCG (`rand_pcg::Pcg64`), whose stream is
/// fixed by its seed across platforms and versions.
pub struct Rng(rand_pcg::Pcg64);

impl Rng {
    pub fn seeded(seed: u64) -> Rng {
        Rng(rand_pcg::Pcg64::seed_from_u64(seed))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0.random()
    }
    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.0.random_range(0..n)
        }
    }
    /// True with probability `pct` percent.
    pub fn percent(&mut self, pct: f64) -> bool {
        pct > 0.0 && self.0.random::<f64>() * 100.0 < pct
    }
    /// Shuffle `v` in place (Fisher-Yates over this stream).
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

/// Draws accounts for one worker.
pub struct Picker {
    n: u64,
    skew: Skew,
    zipf: Option<rand_distr::Zipf<f64>>,
}

impl Picker {
    pub fn new(n: u64, skew: Skew) -> Picker {
        let zipf = match skew {
            Skew::Zipf(s) => rand_distr::Zipf::new(n.max(1) as f64, s).ok(),
            _ => None,
        };
        Picker { n, skew, zipf }
    }

    /// One account.
    pub fn one(&self, rng: &mut Rng) -> u64 {
        match self.skew {
            Skew::Uniform => rng.below(self.n),
            Skew::Zipf(_) => match &self.zipf {
                // Zipf samples ranks 1..=n.
                Some(z) => (z.sample(&mut rng.0) as u64)
                    .saturating_sub(1)
                    .min(self.n - 1),
                None => rng.below(self.n),
            },
            Skew::Hot { accounts, pct } => {
                let k = accounts.min(self.n);
                if k >= self.n || rng.percent(pct) {
                    rng.below(k)
                } else {
                    k + rng.below(self.n - k)
                }
            }
        }
    }

    /// `size` distinct accounts in the order drawn (a skewed draw that keeps
    /// repeating itself falls back to the next unused account).
    pub fn distinct(&self, rng: &mut Rng, size: usize) -> Vec<u64> {
        let mut v: Vec<u64> = Vec::with_capacity(size);
        let size = size.min(self.n as usize);
        while v.len() < size {
            let mut a = self.one(rng);
            let mut tries = 0;
            while v.contains(&a) {
                tries += 1;
                a = if tries < 32 {
                    self.one(rng)
                } else {
                    (a + 1) % self.n
                };
            }
            v.push(a);
        }
        v
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

    /// Release `held` (on the way out of a transaction that could not take
    /// all its locks), rows before the table, and count why. `waited`: how
    /// long the request that answered `e` took.
    fn give_up(
        &self,
        h: &mut Holder,
        held: Vec<cf_core::LockId>,
        e: WaitError,
        waited: Duration,
    ) -> anyhow::Result<()> {
        Self::release(h, held)?;
        match e {
            WaitError::Retained(_) => {
                self.stats.skipped_retained.fetch_add(1, Ordering::Relaxed);
                // The retaining member is being recovered: give it a moment.
                std::thread::sleep(Duration::from_millis(1));
            }
            WaitError::Timeout(_) => {
                self.stats.skipped_timeout.fetch_add(1, Ordering::Relaxed);
            }
            // An answer: the detector chose this request to break a cycle.
            // Nothing was written yet (every lock comes before the first
            // leg), so giving the locks back is the whole back-out.
            WaitError::Deadlock { .. } => self.stats.record_deadlock(waited),
            e => return Err(e.into()),
        }
        Ok(())
    }

    /// Release `held` in the reverse of the order taken (rows, then the
    /// table of `--hierarchy`).
    fn release(h: &mut Holder, held: Vec<cf_core::LockId>) -> anyhow::Result<()> {
        for id in held.into_iter().rev() {
            h.unlock(id)?;
        }
        Ok(())
    }

    /// The order in which a transaction on `accounts` takes its row locks:
    /// account order, or with `--lock-order random` an order drawn from
    /// `rng` (which then draws nothing in sorted mode, so its stream is
    /// today's).
    pub fn lock_order(&self, accounts: &[u64], rng: &mut Rng) -> Vec<u64> {
        let mut order = accounts.to_vec();
        match self.config.lock_order {
            LockOrder::Sorted => order.sort_unstable(),
            LockOrder::Random => rng.shuffle(&mut order),
        }
        order
    }

    /// Lock `table` (with `--hierarchy`), then `rows` in this order in
    /// `mode`; None (locks given back) if one was retained, busy, or the
    /// request was a deadlock victim.
    fn lock_all(
        &self,
        h: &mut Holder,
        table: Option<Mode>,
        rows: &[u64],
        mode: Mode,
    ) -> anyhow::Result<Option<Vec<cf_core::LockId>>> {
        let mut held = Vec::with_capacity(rows.len() + 1);
        let requests = table
            .map(|m| (Store::table_resource().to_string(), m))
            .into_iter()
            .chain(rows.iter().map(|&a| (Store::resource(a), mode)));
        for (resource, mode) in requests {
            let asked = Instant::now();
            match h.lock(resource.as_bytes(), mode, self.config.lock_timeout) {
                Ok(id) => held.push(id),
                Err(
                    e @ (WaitError::Retained(_)
                    | WaitError::Timeout(_)
                    | WaitError::Deadlock { .. }),
                ) => {
                    self.give_up(h, held, e, asked.elapsed())?;
                    return Ok(None);
                }
                Err(e) => {
                    // An error, not an answer: give back what was taken, then fail.
                    for id in held.into_iter().rev() {
                        let _ = h.unlock(id);
                    }
                    return Err(e.into());
                }
            }
        }
        Ok(Some(held))
    }

    /// One transfer from the first of `accounts` to the others. Returns
    /// false if it was skipped (a lock retained or busy).
    pub fn transfer_between(
        &self,
        h: &mut Holder,
        accounts: &[u64],
        rng: &mut Rng,
    ) -> anyhow::Result<bool> {
        if accounts.len() < 2 {
            anyhow::bail!("a transfer needs at least two accounts");
        }
        let order = self.lock_order(accounts, rng);
        let table = self.config.hierarchy.then_some(TABLE_WRITE);
        let Some(held) = self.lock_all(h, table, &order, ROW_WRITE)? else {
            return Ok(false);
        };
        let txid = self.next_txid.fetch_add(1, Ordering::Relaxed);
        let amount = 1 + rng.below(self.config.max_amount.max(1) as u64) as i64;
        let from = accounts[0];
        let before: Vec<i64> = accounts
            .iter()
            .map(|&a| self.read(a))
            .collect::<Result<_, _>>()?;
        // Balances come from a shared file (and a forged log's back-out may
        // have put anything there): never wrap.
        let debit = amount * (accounts.len() as i64 - 1);
        let after: Option<Vec<i64>> = before
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if i == 0 {
                    b.checked_sub(debit)
                } else {
                    b.checked_add(amount)
                }
            })
            .collect();
        let Some(after) = after else {
            Self::release(h, held)?;
            anyhow::bail!(
                "accounts {accounts:?} ({before:?}) would overflow by a transfer of {amount} \
                 to each: the accounts file holds impossible balances"
            );
        };
        // From the first leg on, a failure leaves the transaction in flight.
        let poison = |e: anyhow::Error| {
            self.poisoned.store(true, Ordering::Relaxed);
            e
        };
        self.leg(txid, from, before[0], after[0], true)
            .map_err(poison)?;
        cf_core::crash::point("bank.between_legs");
        if !self.config.pause.is_zero() {
            std::thread::sleep(self.config.pause);
        }
        for (i, &to) in accounts.iter().enumerate().skip(1) {
            self.leg(txid, to, before[i], after[i], false)
                .map_err(poison)?;
        }
        self.log
            .append(&LogRecord::Commit { txid }, false, true)
            .map_err(|e| poison(e.into()))?;
        Self::release(h, held)?;
        self.stats.committed.fetch_add(1, Ordering::Relaxed);
        h.add_committed(1);
        self.log.checkpoint(self.config.checkpoint_bytes)?;
        Ok(true)
    }

    /// One uniform two-account transfer. Returns false if it was skipped.
    pub fn transfer(&self, h: &mut Holder, rng: &mut Rng) -> anyhow::Result<bool> {
        let n = self.store.count();
        if n < 2 {
            anyhow::bail!("the bank needs at least two accounts");
        }
        let accounts = Picker::new(n, Skew::Uniform).distinct(rng, 2);
        self.transfer_between(h, &accounts, rng)
    }

    /// One read-only transaction: share locks on `accounts` (IS on the
    /// table first with `--hierarchy`), read, release. No log record.
    /// Returns false if it was skipped.
    pub fn read_only(
        &self,
        h: &mut Holder,
        accounts: &[u64],
        rng: &mut Rng,
    ) -> anyhow::Result<bool> {
        let order = self.lock_order(accounts, rng);
        let table = self.config.hierarchy.then_some(TABLE_READ);
        let Some(held) = self.lock_all(h, table, &order, ROW_READ)? else {
            return Ok(false);
        };
        for &a in &order {
            self.read(a)?;
        }
        Self::release(h, held)?;
        self.stats.reads.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// A worker thread's loop: transactions until told to stop. A transfer
    /// that failed inside its transaction keeps its locks (the holder is not
    /// dropped, which would release them over half-changed accounts).
    pub fn run_worker(&self, mut h: Holder, seed: u64) -> anyhow::Result<()> {
        let mut rng = Rng::seeded(seed);
        let n = self.store.count();
        if n < 2 {
            anyhow::bail!("the bank needs at least two accounts");
        }
        let picker = Picker::new(n, self.config.skew);
        let size = (self.config.tx_size.max(2) as usize).min(n as usize);
        let start = Instant::now();
        let mut started = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            if let Some(rate) = self.config.rate {
                // Open loop: transaction i starts at i / rate.
                let due = start + Duration::from_secs_f64(started as f64 / rate);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep((due - now).min(Duration::from_millis(50)));
                    continue;
                }
            }
            started += 1;
            let accounts = picker.distinct(&mut rng, size);
            let read = rng.percent(self.config.read_pct);
            let t = Instant::now();
            let done = if read {
                self.read_only(&mut h, &accounts, &mut rng)
            } else {
                self.transfer_between(&mut h, &accounts, &mut rng)
            };
            match done {
                Ok(true) => self.stats.record(read as usize, t.elapsed()),
                Ok(false) => {}
                Err(e) => {
                    if self.poisoned() {
                        std::mem::forget(h);
                    }
                    return Err(e);
                }
            }
            if !self.config.think.is_zero() {
                std::thread::sleep(self.config.think);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn seeded_streams_differ_by_seed_and_repeat() {
        let draw = |s| {
            let mut r = Rng::seeded(s);
            (0..8).map(|_| r.next_u64()).collect::<Vec<_>>()
        };
        assert_eq!(draw(2), draw(2));
        assert_ne!(draw(2), draw(3), "seeds 2k and 2k+1 must differ");
    }

    #[test]
    fn skews_parse_and_pick_in_range() {
        for s in ["uniform", "zipf:0.99", "hot:10:90"] {
            let skew: Skew = s.parse().unwrap();
            assert_eq!(skew.to_string(), s);
            let p = Picker::new(100, skew);
            let mut r = Rng::seeded(7);
            for _ in 0..1000 {
                let v = p.distinct(&mut r, 4);
                assert_eq!(v.len(), 4);
                assert!(v.iter().all(|&a| a < 100));
                let mut d = v.clone();
                d.sort();
                d.dedup();
                assert_eq!(d.len(), 4, "{v:?}");
            }
        }
        for bad in ["zipf:0", "hot:0:50", "hot:5:101", "pareto", "zipf:x"] {
            assert!(bad.parse::<Skew>().is_err(), "{bad}");
        }
    }

    #[test]
    fn lock_orders_parse_and_print() {
        for s in ["sorted", "random"] {
            let o: LockOrder = s.parse().unwrap();
            assert_eq!(o.to_string(), s);
        }
        assert_eq!(LockOrder::default(), LockOrder::Sorted);
        for bad in ["", "Sorted", "rand", "reverse"] {
            assert!(bad.parse::<LockOrder>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_shuffle_is_a_permutation_and_seeded() {
        let mut r = Rng::seeded(3);
        let mut seen_unsorted = false;
        for _ in 0..100 {
            let mut v: Vec<u64> = (0..5).collect();
            r.shuffle(&mut v);
            let mut d = v.clone();
            d.sort();
            assert_eq!(d, (0..5).collect::<Vec<_>>());
            seen_unsorted |= v != d;
        }
        assert!(seen_unsorted);
        let draw = |s| {
            let mut v: Vec<u64> = (0..8).collect();
            Rng::seeded(s).shuffle(&mut v);
            v
        };
        assert_eq!(draw(9), draw(9));
    }

    #[test]
    fn the_hierarchy_modes_are_compatible_as_documented() {
        use LockMode::*;
        // Transfers beside transfers and reads on the table; a retained
        // (modify) IX refuses exactly S, U, SIX and X.
        assert!(TABLE_WRITE.is_modify() && TABLE_WRITE.lock_mode() == IX);
        assert!(TABLE_WRITE.compatible(TABLE_WRITE) && TABLE_WRITE.compatible(TABLE_READ));
        for m in [S, U, SIX, X] {
            assert!(!TABLE_WRITE.compatible(Mode::lock(m)), "{m}");
        }
        assert_eq!(ROW_WRITE, Mode::Modify);
        assert_eq!(ROW_READ, Mode::Share);
        assert!(!TABLE_READ.is_modify());
    }

    #[test]
    fn a_hot_set_takes_its_share() {
        let p = Picker::new(1000, "hot:10:90".parse().unwrap());
        let mut r = Rng::seeded(1);
        let hot = (0..10_000).filter(|_| p.one(&mut r) < 10).count();
        assert!((8_500..9_500).contains(&hot), "{hot}");
    }

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
            ..BankConfig::default()
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
