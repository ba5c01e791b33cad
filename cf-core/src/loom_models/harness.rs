//! What the models share: a small region in loom's memory, modelled
//! processes, and the protected data.

use crate::ids::{ConnectorId, EntryIndex};
use crate::shm::layout::{Sizes, BLOCK_SLOTS};
use crate::shm::region::Region;
use crate::{Holder, LockId, Mode, Resource, TryOutcome};
use loom::cell::UnsafeCell;
use std::sync::atomic::AtomicUsize as StdCounter;
// std's Arc, not loom's: loom's Arc drop needs a live execution, so when loom
// reports a deadlock the unwinding would drop it, panic again and abort the
// whole test binary instead of failing the one model.
pub(super) use std::sync::Arc;

/// Lock table entries of the model region (the smallest a region may have:
/// resources collide easily).
pub(super) const ENTRIES: u32 = 16;

/// A region for `members` connectors, `blocks` record blocks each.
pub(super) fn region(members: u32, blocks: u32) -> Arc<Region> {
    Arc::new(Region::new_model(Sizes {
        lock_entries: ENTRIES,
        members,
        records_per_member: blocks * BLOCK_SLOTS,
    }))
}

/// Run `f` under loom with a preemption bound (`LOOM_MAX_PREEMPTIONS`
/// overrides it), as crossbeam-epoch does. Returns how many executions ran.
pub(super) fn check<F>(preemptions: usize, f: F) -> usize
where
    F: Fn() + Sync + Send + 'static,
{
    check_long(preemptions, 20_000, f)
}

/// [`check`] for a model whose executions are long (more than 20 000
/// branches each: several processes through several protocols).
pub(super) fn check_long<F>(preemptions: usize, branches: usize, f: F) -> usize
where
    F: Fn() + Sync + Send + 'static,
{
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(preemptions);
    }
    builder.max_branches = builder.max_branches.max(branches);
    let executions = Arc::new(StdCounter::new(0));
    let counted = executions.clone();
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        builder.check(move || {
            hit(&counted);
            crate::sync::TRACE
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
            // Every execution starts as model process 1.
            crate::connector::identity::model::enter(1);
            f()
        })
    }));
    if let Err(p) = run {
        // The protocol steps of the failing execution.
        for line in crate::sync::TRACE
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            eprintln!("{line}");
        }
        std::panic::resume_unwind(p);
    }
    let n = hits(&executions);
    // Shown with `--nocapture`: how much the model explored.
    eprintln!(
        "{n} executions (preemption bound {:?})",
        builder.preemption_bound
    );
    n
}

/// Count one event across executions (a std atomic: survives them).
pub(super) fn hit(counter: &StdCounter) {
    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

pub(super) fn hits(counter: &StdCounter) -> usize {
    counter.load(std::sync::atomic::Ordering::Relaxed)
}

/// Spawn a model thread playing process `pid`. Its closure returns `Some` if
/// it ran to the end, `None` if it was killed at its armed crash point.
pub(super) fn process<T: Send + 'static>(
    pid: u32,
    f: impl FnOnce() -> T + Send + 'static,
) -> loom::thread::JoinHandle<Option<T>> {
    loom::thread::spawn(move || {
        let mut out = None;
        let ran = crate::crash::model::run_as(pid, || out = Some(f()));
        if ran {
            out
        } else {
            None
        }
    })
}

/// Kill modelled process `pid` from outside (as `kill -9` would, at a point
/// where it runs no protocol step: its handles must then be forgotten, not
/// dropped).
pub(super) fn kill(pid: u32) {
    crate::connector::identity::model::kill(pid);
}

/// Member `name` of process `pid` connects, takes each of `locks` (a
/// try-loop) and is killed holding them (its connection and holder are
/// leaked, as a killed process leaves them). Returns its connector id. The
/// caller then enters the process it continues as.
pub(super) fn dies_holding(
    r: &Arc<Region>,
    pid: u32,
    name: &str,
    locks: &[(&[u8], Mode)],
) -> ConnectorId {
    crate::connector::identity::model::enter(pid);
    let m = crate::Member::connect(r.clone(), name).unwrap();
    let id = m.id();
    let mut h = m.holder().unwrap();
    for &(res, mode) in locks {
        take(&mut h, res, mode);
    }
    kill(pid);
    std::mem::forget(h);
    std::mem::forget(m);
    id
}

/// Connector `n` of the model region.
pub(super) fn cid(n: u32) -> ConnectorId {
    ConnectorId::new(n)
}

/// Names `n` resources on one lock table entry of the model region.
pub(super) fn colliding(n: usize) -> Vec<Vec<u8>> {
    let first = Resource::new(b"r0").map(|r| r.entry(ENTRIES));
    let mut out = vec![b"r0".to_vec()];
    let mut i = 1u32;
    while out.len() < n {
        let name = format!("r{i}").into_bytes();
        if Resource::new(&name).map(|r| r.entry(ENTRIES)) == first {
            out.push(name);
        }
        i += 1;
    }
    out
}

/// The entry of resource `name` in the model region.
pub(super) fn entry_of(name: &[u8]) -> EntryIndex {
    Resource::new(name).map_or(EntryIndex::new(0), |r| r.entry(ENTRIES))
}

/// Ask until granted (a try-loop: a model that must not depend on the
/// waiting protocol's sleeps).
pub(super) fn take(h: &mut Holder, res: &[u8], mode: Mode) -> LockId {
    loop {
        match h.try_lock(res, mode) {
            Ok(TryOutcome::Granted(id)) => return id,
            Ok(TryOutcome::Contention(_)) => loom::thread::yield_now(),
            other => panic!("{} {mode}: {other:?}", String::from_utf8_lossy(res)),
        }
    }
}

/// Convert `id` to `to` (a try-loop, like [`take`]).
pub(super) fn convert(h: &mut Holder, id: LockId, to: Mode) -> LockId {
    loop {
        match h.try_convert(id, to) {
            Ok(TryOutcome::Granted(id)) => return id,
            Ok(TryOutcome::Contention(_)) => loom::thread::yield_now(),
            other => panic!("convert to {to}: {other:?}"),
        }
    }
}

/// Is the lock word of `name`'s entry free (fast mode, nothing held)?
pub(super) fn word_is_free(r: &Region, name: &[u8]) -> bool {
    crate::lock::word::Word(
        r.word(entry_of(name))
            .unwrap()
            .load(crate::sync::Ordering::Relaxed),
    )
    .is_free()
}

/// Data protected by a lock: loom checks that no two threads access it
/// without a happens-before edge between them.
pub(super) struct Guarded(UnsafeCell<u64>);

// SAFETY: the cell is only accessed under the lock the models check; loom
// reports any access not ordered by it, which is the point of the models.
unsafe impl Sync for Guarded {}

impl Guarded {
    pub(super) fn new() -> Guarded {
        Guarded(UnsafeCell::new(0))
    }
    /// Write, holding the resource exclusively.
    pub(super) fn bump(&self) {
        // SAFETY: loom checks that no other access is concurrent.
        self.0.with_mut(|p| unsafe { *p += 1 });
    }
    /// Read, holding the resource in share mode (or exclusively).
    pub(super) fn read(&self) -> u64 {
        // SAFETY: loom checks that no write is concurrent.
        self.0.with(|p| unsafe { *p })
    }
}

/// What `inspect::verify` checks of the lock words at rest :
/// no latch held, no waiter bit in fast mode, every named connector has an
/// interest (a held or urgent record) on the entry, every held record's
/// connector is named.
pub(super) fn at_rest_problems(r: &crate::Region) -> Vec<String> {
    let mut out = Vec::new();
    for e in r.entry_indices() {
        let w = crate::lock::word::Word(r.word(e).unwrap().load(crate::sync::Ordering::Relaxed));
        if w.is_mixed() && w.holder().is_some() {
            out.push(format!("entry {e} latched at rest: {:#x}", w.0));
        }
        if w.is_malformed() {
            out.push(format!("entry {e} malformed: {:#x}", w.0));
        }
        for c in crate::lock::entry::bits(w.named()) {
            if !crate::lock::records::holds_other_on(r, c, e, None) {
                out.push(format!(
                    "entry {e} names {c}, which holds nothing there ({:#x})",
                    w.0
                ));
            }
        }
    }
    for c in r.connector_ids() {
        for rec in crate::lock::records::all_records(r, c).unwrap() {
            let w = crate::lock::word::Word(
                r.word(rec.entry)
                    .unwrap()
                    .load(crate::sync::Ordering::Relaxed),
            );
            if rec.held && w.named() & crate::lock::word::bit(c) == 0 {
                out.push(format!(
                    "{c} holds {:?} on {} unnamed ({:#x})",
                    rec.resource, rec.entry, w.0
                ));
            }
        }
    }
    out
}
