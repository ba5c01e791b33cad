//! Backing out a member's unfinished transactions from its log: what restart
//! light does (and a member restarting normally does for itself).
//!
//! A *loser* is a transaction with an UPDATE and neither COMMIT nor ABORT.
//! Every UPDATE of a loser that no CLR names is undone, newest first: the
//! before image is written to the account, then a CLR naming the UPDATE is
//! appended; when all of a loser's updates are undone, an ABORT is appended.
//! Restoring a before image is idempotent, so a back-out killed anywhere
//! (including between the data write and its CLR) is finished by the next
//! one with the same result. The accounts touched are protected by the dead
//! member's retained modify locks until the caller releases them.

use crate::store::Store;
use crate::wal::{read_log, LogRecord, LogWriter};
use std::collections::{BTreeMap, HashSet};

/// What a back-out did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackoutReport {
    /// Transactions backed out (losers found).
    pub transactions: u64,
    /// Updates undone by this run.
    pub updates_undone: u64,
    /// Committed transactions seen (left as they are).
    pub committed: u64,
}

/// Back out every loser in `log`'s file, writing to `store`. `on_undo` runs
/// after each undone update (a crash point in restart light).
pub fn backout(
    log: &LogWriter,
    store: &Store,
    mut on_undo: impl FnMut(),
) -> anyhow::Result<BackoutReport> {
    let records = read_log(log.path())?;
    let mut updates: BTreeMap<u64, Vec<(u64, u64, i64)>> = BTreeMap::new(); // txid -> (lsn, account, before)
    let mut undone: HashSet<u64> = HashSet::new();
    let mut finished: HashSet<u64> = HashSet::new();
    let mut report = BackoutReport::default();
    for (lsn, r) in &records {
        match *r {
            LogRecord::Update {
                txid,
                account,
                before,
                ..
            } => updates
                .entry(txid)
                .or_default()
                .push((*lsn, account, before)),
            LogRecord::Clr { undone_lsn, .. } => {
                undone.insert(undone_lsn);
            }
            LogRecord::Commit { txid } => {
                report.committed += 1;
                finished.insert(txid);
            }
            LogRecord::Abort { txid } => {
                finished.insert(txid);
            }
        }
    }
    let mut todo: Vec<(u64, u64, u64, i64)> = Vec::new(); // lsn, txid, account, before
    let losers: Vec<u64> = updates
        .keys()
        .copied()
        .filter(|t| !finished.contains(t))
        .collect();
    for t in &losers {
        for &(lsn, account, before) in &updates[t] {
            if !undone.contains(&lsn) {
                todo.push((lsn, *t, account, before));
            }
        }
    }
    todo.sort_by_key(|t| std::cmp::Reverse(t.0));
    for (lsn, txid, account, before) in todo {
        store.set(account, before, txid)?;
        log.append(
            &LogRecord::Clr {
                txid,
                account,
                restored: before,
                undone_lsn: lsn,
            },
            false,
            false,
        )?;
        report.updates_undone += 1;
        on_undo();
    }
    for t in losers {
        log.append(&LogRecord::Abort { txid: t }, false, false)?;
        report.transactions += 1;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_out_losers_only_and_twice_is_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path(), 4, 100, false).unwrap();
        let log = LogWriter::open(dir.path(), "A", false).unwrap();
        // tx 1 committed: 0 -> 1 moves 10.
        log.append(
            &LogRecord::Update {
                txid: 1,
                account: 0,
                before: 100,
                after: 90,
            },
            true,
            false,
        )
        .unwrap();
        store.set(0, 90, 1).unwrap();
        log.append(
            &LogRecord::Update {
                txid: 1,
                account: 1,
                before: 100,
                after: 110,
            },
            false,
            false,
        )
        .unwrap();
        store.set(1, 110, 1).unwrap();
        log.append(&LogRecord::Commit { txid: 1 }, false, true)
            .unwrap();
        // tx 2 died after its first leg.
        log.append(
            &LogRecord::Update {
                txid: 2,
                account: 2,
                before: 100,
                after: 70,
            },
            true,
            false,
        )
        .unwrap();
        store.set(2, 70, 2).unwrap();
        assert_eq!(store.total(), 370);
        let r = backout(&log, &store, || {}).unwrap();
        assert_eq!(
            r,
            BackoutReport {
                transactions: 1,
                updates_undone: 1,
                committed: 1
            }
        );
        assert_eq!(store.total(), 400);
        assert_eq!(store.balance(0).unwrap(), 90);
        assert_eq!(store.balance(2).unwrap(), 100);
        // Again: nothing left to do, same data.
        let r = backout(&log, &store, || {}).unwrap();
        assert_eq!(r.transactions, 0);
        assert_eq!(store.total(), 400);
    }
}
