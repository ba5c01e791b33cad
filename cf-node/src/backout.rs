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
use crate::wal::{LogRecord, LogWriter};
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
    let records = log.scan()?.records;
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

    /// A torn tail (a member killed inside a log write) must not hide the
    /// CLRs and ABORT of a first back-out from the next one: restart light
    /// #1 backs out a loser, then dies before truncating the log; another
    /// member commits a change to the same account; restart light #2 backs
    /// out again. The committed change must survive.
    #[test]
    fn a_second_backout_after_a_torn_tail_keeps_a_later_committed_change() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path(), 4, 100, false).unwrap();
        {
            // The member: tx 7 logs and applies its first leg, then dies
            // inside the write of the next record (half of it on disk).
            let log = LogWriter::open(dir.path(), "A", false).unwrap();
            log.append(
                &LogRecord::Update {
                    txid: 7,
                    account: 1,
                    before: 100,
                    after: 60,
                },
                true,
                false,
            )
            .unwrap();
            store.set(1, 60, 7).unwrap();
        }
        let path = crate::wal::log_path(dir.path(), "A");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(&[33, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 1, 7, 0, 0])
            .unwrap();
        drop(f);

        // Restart light #1: backs out tx 7 (and dies before truncating).
        let log = LogWriter::open(dir.path(), "A", false).unwrap();
        let r = backout(&log, &store, || {}).unwrap();
        assert_eq!((r.transactions, r.updates_undone), (1, 1));
        assert_eq!(store.balance(1).unwrap(), 100);
        drop(log);

        // Account 1 was released: member B commits 100 -> 130 on it.
        store.set(1, 130, 99).unwrap();

        // Restart light #2 finds tx 7 backed out already.
        let log = LogWriter::open(dir.path(), "A", false).unwrap();
        let r = backout(&log, &store, || {}).unwrap();
        assert_eq!(
            store.balance(1).unwrap(),
            130,
            "a second back-out undid tx 7 again, over B's committed change"
        );
        assert_eq!((r.transactions, r.updates_undone), (0, 0));
    }
}
