//! Liveness: the kernel's word on a member's death, the survivors' wait on
//! all of them at once, the heartbeat, and the fence of a hung member.
//!
//! # The liveness word
//! Every connector slot has a 32-bit word (`ConnectorSlot::liveness`) and
//! the generation of the connection that registered it (`liveness_gen`).
//! A member registers it from a **dedicated liveness thread**
//! ([`register_this_thread`]): the thread stores the connection's generation,
//! then puts the word as the only entry of *its own* robust-futex list
//! (`set_robust_list`; the list head and entry live in the thread's private
//! memory, the entry's `futex_offset` points at the word in the shared
//! mapping), then stores its TID in the word. glibc installs a list head on
//! every thread for its robust pthread mutexes; the liveness thread takes no
//! pthread mutex, saves glibc's head and puts it back before it ends, so no
//! other thread's robust list is touched. When the thread dies (its process
//! is SIGKILLed), the kernel walks the list in `exit_mm`, *before* the
//! process's memory is torn down: it replaces the TID by `FUTEX_OWNER_DIED`
//! (keeping `FUTEX_WAITERS`) and, if `FUTEX_WAITERS` was set, wakes **one**
//! waiter. So a survivor learns of the death in microseconds whatever the
//! dead member's size (a pidfd polls readable only after the teardown).
//!
//! Word values: 0 none registered; `tid` alive; `tid | WAITERS` alive and
//! watched; `OWNER_DIED [| WAITERS]` its thread died. A word is the
//! connection's only if `liveness_gen` equals the slot's generation (a
//! connect resets both to 0 while the slot is FREE or FAILED_PERSISTENT,
//! before it publishes the new state, `slot.rs`).
//!
//! # The waiters: who cleans up when the kernel wakes only one
//! Each survivor's watcher [`survey`]s the slots, sets `WAITERS` in every
//! live peer's word (a CAS from the exact value read, so it never marks a
//! newer connection's word), and sleeps on all of them at once with
//! `futex_waitv` ([`wait_any`], at most 128 words, expecting the values it
//! wrote). The kernel wakes one sleeper per dead word. Rules:
//! * **Pass it on first.** Whoever sees `OWNER_DIED` in a word (woken or
//!   not) wakes every sleeper of that word ([`survey`] does it before it
//!   returns the death), so every watcher learns of it.
//! * **Everyone may try, one cleans.** Each watcher that sees a death runs
//!   the cleanup (`recovery.rs`); its claim is one CAS, so exactly one
//!   cleans up and the others find it in progress or done.
//! * **Death is confirmed, never assumed.** `OWNER_DIED` says the liveness
//!   thread died; the cleanup still checks the identity (PID, start time,
//!   generation) and that no thread of the process can run user code
//!   (`identity.rs`), so a damaged word never gets a live member cleaned up.
//!   A word that says dead while the process lives is not waited on (it
//!   would return at once) and is left to the pidfd backstop.
//! * **Crash windows.** A woken watcher killed before it passes the wake
//!   on: its own liveness word dies too, which wakes another watcher, whose
//!   survey sees both deaths. A woken watcher stopped (SIGSTOP) before it
//!   passes it on: the others' waits time out (20 ms) and their next survey
//!   sees the word; the stopped one is then fenced by the heartbeat rule.
//!   A member killed before it registered (word 0) or with a damaged word:
//!   the pidfd watcher (cf-node) is the backstop, with the same identity
//!   check. (loom: `loom_models/liveness.rs` kills the woken watcher at
//!   `liveness.woken`, before it passes the wake on.)
//!
//! # The heartbeat and status update missing
//! `ConnectorSlot::heartbeat` is `[ms of CLOCK_MONOTONIC:56][flags:8]`,
//! written every beat period (`interval / 6`) by the same liveness thread
//! ([`beat`]): it takes no lock and allocates nothing, so a workload cannot
//! block it. The beat also publishes the period it uses
//! (`ConnectorSlot::beat_period_ms`), and a member is judged by the longer
//! of the plex's interval and six of its periods ([`judged_interval`]): an
//! in-range damaged plex setting, or a damaged period, alone makes nobody
//! look missing. A beat writes the clock (a damaged time lasts one beat); a
//! time ahead of a watcher's clock by more than the interval counts as
//! missing (damage cannot switch fencing off). A survivor reads the clock
//! *first* and the word second (a watcher stopped between the two then sees
//! a newer beat, never an older one) and, when the beat is older than the
//! interval, marks the word `SUM` (status update missing) with a CAS from
//! the exact value it read. A member whose beat resumes clears `SUM` with
//! its next beat.
//!
//! # The fence
//! **Confirmed first**: a watcher fences only a `SUM` value that stood
//! unchanged for [`CONFIRM_PERIODS`] beat periods of the member (it
//! remembers the value and since when; the operator's [`fence`] sleeps that
//! long and reads again),
//! so a healthy member whose word was damaged, which beats within a
//! period, is never fenced. Then a CAS from that exact `(time, SUM)` value
//! to `(time, SUM | FENCED)` ([`mark_fenced`]), then SIGKILL through a
//! pidfd opened for the recorded PID and checked against the recorded start
//! time *after* it was opened ([`kill_verified`]): a PID that now names
//! another process is never signalled. Because the beat and the fence are
//! CASes on one word, they are ordered: a beat that lands first makes the
//! fence's CAS fail (a member that resumed is not fenced), and a beat that
//! comes after finds `FENCED` on the time it wrote last, older than its
//! interval by its own clock, and kills its own process ([`Beat::Fenced`])
//! in case the fencer died before its kill. `FENCED` anywhere else is
//! damage (or a forced fence, whose kill follows at once): the beat writes
//! over it ([`Beat::Repaired`]). A survivor that sees `FENCED` on an *old*
//! beat of a live process kills it again ([`refence`]; idempotent: the
//! same verified process). A connect resets the word, so a mark can never
//! reach a later connection. A fenced member's death then goes the normal
//! way (liveness word, cleanup, restart light).

use crate::connector::identity::ProcessId;
use crate::connector::snapshot;
#[cfg(not(loom))]
use crate::connector::MemberState;
use crate::error::{CorruptError, DeadlockIntervalError, IntervalError, SettingsError};
use crate::ids::ConnectorId;
use crate::shm::region::Region;
use crate::sync::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// `FUTEX_WAITERS`: a survivor may be sleeping on the word.
pub const WAITERS: u32 = 0x8000_0000;
/// `FUTEX_OWNER_DIED`: set by the kernel when the holding thread died.
pub const OWNER_DIED: u32 = 0x4000_0000;
/// `FUTEX_TID_MASK`.
pub const TID_MASK: u32 = 0x3fff_ffff;

/// Heartbeat flag: status update missing (marked by a survivor).
pub const HB_MISSING: u64 = 1;
/// Heartbeat flag: fenced (the member is being killed).
pub const HB_FENCED: u64 = 2;
const HB_FLAGS: u64 = 0xff;

/// Most words one `futex_waitv` takes.
pub const MAX_WAITV: usize = 128;

// ---------------------------------------------------------------- settings

/// What a survivor does with a member whose status update is missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isolate {
    /// Fence it at once (SIGKILL after the identity check), then recover it.
    AtOnce,
    /// Show it as status-update-missing and wait for `cfctl fence`.
    Prompt,
}

impl Isolate {
    /// The action's name as `cfctl` spells it (`"at-once"`, `"prompt"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Isolate::AtOnce => "at-once",
            Isolate::Prompt => "prompt",
        }
    }
}

/// The plex's failure-detection settings, stored in the lock structure's
/// page ([`settings`], [`set_settings`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The failure detection interval: a member whose heartbeat is older
    /// than this is status-update-missing. [`MIN_INTERVAL`] to
    /// [`MAX_INTERVAL`], stored in whole milliseconds; members beat every
    /// [`beat_period`] of it.
    pub interval: Duration,
    /// What survivors do with a member whose status update is missing.
    pub isolate: Isolate,
    /// How often the deadlock detector runs (`deadlock.rs`): one round per
    /// interval in the whole plex, by whichever member claims it first.
    /// [`MIN_DEADLOCK_INTERVAL`] to [`MAX_DEADLOCK_INTERVAL`], stored in
    /// whole milliseconds.
    pub deadlock_interval: Duration,
}

/// Default failure detection interval: more than 100 times the longest
/// scheduling delay of a runnable thread on a loaded machine (tens of ms),
/// so a busy member is never declared missing, and short enough that a
/// hung member's locks come back within seconds.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(3);
/// Shortest interval a plex may have (100 ms).
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Longest interval a plex may have (one hour); also the cap of
/// [`judged_interval`].
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);

/// Default deadlock detection interval: a deadlock costs its waiters this
/// long at most (plus one look), while a round that finds nothing reads
/// only the wait records of the members' used blocks.
pub const DEFAULT_DEADLOCK_INTERVAL: Duration = Duration::from_millis(100);
/// Shortest deadlock detection interval a plex may have (10 ms).
pub const MIN_DEADLOCK_INTERVAL: Duration = Duration::from_millis(10);
/// Longest deadlock detection interval a plex may have (one hour).
pub const MAX_DEADLOCK_INTERVAL: Duration = Duration::from_secs(3600);

impl Default for Settings {
    fn default() -> Self {
        Settings {
            interval: DEFAULT_INTERVAL,
            isolate: Isolate::AtOnce,
            deadlock_interval: DEFAULT_DEADLOCK_INTERVAL,
        }
    }
}

/// Check a deadlock detection interval given by the user: from
/// [`MIN_DEADLOCK_INTERVAL`] to [`MAX_DEADLOCK_INTERVAL`], both included.
///
/// ```
/// use cf_core::connector::liveness::check_deadlock_interval;
/// use std::time::Duration;
///
/// assert!(check_deadlock_interval(Duration::from_millis(100)).is_ok());
/// assert!(check_deadlock_interval(Duration::from_millis(9)).is_err());
/// assert!(check_deadlock_interval(Duration::from_secs(3601)).is_err());
/// ```
pub fn check_deadlock_interval(d: Duration) -> Result<(), DeadlockIntervalError> {
    if d < MIN_DEADLOCK_INTERVAL || d > MAX_DEADLOCK_INTERVAL {
        return Err(DeadlockIntervalError {
            got: d,
            min: MIN_DEADLOCK_INTERVAL,
            max: MAX_DEADLOCK_INTERVAL,
        });
    }
    Ok(())
}

/// Check an interval given by the user: from [`MIN_INTERVAL`] to
/// [`MAX_INTERVAL`], both included. The error's text gives the range.
///
/// ```
/// use cf_core::connector::liveness::check_interval;
/// use std::time::Duration;
///
/// assert!(check_interval(Duration::from_secs(3)).is_ok());
/// assert!(check_interval(Duration::from_millis(99)).is_err());
/// assert!(check_interval(Duration::from_secs(3601)).is_err());
/// ```
pub fn check_interval(d: Duration) -> Result<(), IntervalError> {
    if d < MIN_INTERVAL || d > MAX_INTERVAL {
        return Err(IntervalError {
            got: d,
            min: MIN_INTERVAL,
            max: MAX_INTERVAL,
        });
    }
    Ok(())
}

/// The plex's settings. The page is writable by any member, so a value out
/// of range (damage) is read as the default: it can neither fence members
/// at once nor switch fencing off.
pub fn settings(region: &Region) -> Settings {
    let h = region.lock_header();
    let ms = h.failure_detection_ms.load(Ordering::Relaxed);
    let interval = Duration::from_millis(ms);
    let deadlock = Duration::from_millis(h.deadlock_interval_ms.load(Ordering::Relaxed));
    Settings {
        interval: if check_interval(interval).is_ok() {
            interval
        } else {
            DEFAULT_INTERVAL
        },
        isolate: if h.isolate.load(Ordering::Relaxed) == 1 {
            Isolate::Prompt
        } else {
            Isolate::AtOnce
        },
        deadlock_interval: if check_deadlock_interval(deadlock).is_ok() {
            deadlock
        } else {
            DEFAULT_DEADLOCK_INTERVAL
        },
    }
}

/// Store the plex's settings (`cfctl create`); the intervals are checked
/// ([`check_interval`], [`check_deadlock_interval`]) and stored in whole
/// milliseconds. Members that already beat keep their beat period until
/// they reconnect; detectors read the deadlock interval at every round.
pub fn set_settings(region: &Region, s: Settings) -> Result<(), SettingsError> {
    check_interval(s.interval)?;
    check_deadlock_interval(s.deadlock_interval)?;
    if region.is_read_only() {
        // Nothing to store into (`cfctl create` maps its new region writable).
        return Ok(());
    }
    let h = region.lock_header();
    h.failure_detection_ms
        .store(s.interval.as_millis() as u64, Ordering::Relaxed);
    h.isolate.store(
        match s.isolate {
            Isolate::AtOnce => 0,
            Isolate::Prompt => 1,
        },
        Ordering::Relaxed,
    );
    h.deadlock_interval_ms
        .store(s.deadlock_interval.as_millis() as u64, Ordering::Relaxed);
    Ok(())
}

// ---------------------------------------------------------------- the word

fn slot_words(region: &Region, id: ConnectorId) -> Result<(&AtomicU32, &AtomicU32), CorruptError> {
    let c = region.connector(id)?;
    Ok((&c.liveness, &c.liveness_gen))
}

/// A live peer's word as a watcher expects it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watched {
    /// The peer's connector id.
    pub id: ConnectorId,
    /// The generation of the peer's connection the word was registered for.
    pub generation: u32,
    /// The value the watcher sleeps on (TID | WAITERS).
    pub expected: u32,
}

/// A peer whose liveness word says its thread died. Not yet confirmed: see
/// [`confirm_dead`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Died {
    /// The peer's connector id.
    pub id: ConnectorId,
    /// The generation of the connection whose word says it died.
    pub generation: u32,
    /// The process recorded in the slot with that generation.
    pub process: ProcessId,
}

/// What a survey found.
#[derive(Clone, Debug, Default)]
pub struct Survey {
    /// Live words to sleep on.
    pub watch: Vec<Watched>,
    /// Words the kernel marked (their sleepers already woken).
    pub died: Vec<Died>,
    /// Slots with a process but no word of theirs (not registered yet, a
    /// restart light, a library user, damage): the pidfd backstop's.
    pub unregistered: Vec<ConnectorId>,
}

/// Read every other slot's liveness word (see the module docs): mark live
/// words `WAITERS`, pass on the wake of every word the kernel marked.
pub fn survey(region: &Region, me: ConnectorId) -> Survey {
    let mut out = Survey::default();
    for id in region.connector_ids() {
        if id == me {
            continue;
        }
        let Ok(snap) = snapshot(region, id) else {
            continue;
        };
        if !snap.st.state.has_process() {
            continue;
        }
        let Ok((word, gen)) = slot_words(region, id) else {
            continue;
        };
        let v = word.load(Ordering::Acquire);
        if v == 0 || gen.load(Ordering::Acquire) != snap.st.generation {
            out.unregistered.push(id);
            continue;
        }
        if v & OWNER_DIED != 0 {
            // Pass the kernel's single wake on to every other sleeper.
            crate::crash::point("liveness.woken");
            wake_all(word);
            out.died.push(Died {
                id,
                generation: snap.st.generation,
                process: snap.process,
            });
            continue;
        }
        if v & TID_MASK == 0 {
            // WAITERS alone: not a registration (damage): the backstop's.
            out.unregistered.push(id);
            continue;
        }
        let expected = v | WAITERS;
        if v != expected
            && word
                .compare_exchange(v, expected, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            // Changed under us (died, or a new registration): look again soon.
            out.watch.push(Watched {
                id,
                generation: snap.st.generation,
                expected: v,
            });
            continue;
        }
        out.watch.push(Watched {
            id,
            generation: snap.st.generation,
            expected,
        });
    }
    crate::sync::trace!("survey: {:?} died, {} watched", out.died, out.watch.len());
    out
}

/// Why [`wait_any`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Woke {
    /// A wake on one of the words (index into the slice).
    Word(usize),
    /// A word no longer had its expected value.
    Changed,
    /// The timeout passed (also with nothing to wait on).
    Timeout,
    /// A signal, or an error of the call: look again.
    Other,
}

/// Sleep on the words of `watch` (only the first [`MAX_WAITV`]) until one is
/// woken or changes, at most `timeout`. With nothing to wait on, or on a
/// kernel without `futex_waitv` (before 5.16), it sleeps the whole timeout.
pub fn wait_any(region: &Region, watch: &[Watched], timeout: Duration) -> Woke {
    let words: Vec<(&AtomicU32, u32)> = watch
        .iter()
        .take(MAX_WAITV)
        .filter_map(|w| slot_words(region, w.id).ok().map(|(a, _)| (a, w.expected)))
        .collect();
    sys::waitv(&words, timeout)
}

/// Wake every sleeper on a liveness word.
fn wake_all(word: &AtomicU32) {
    sys::wake(word, i32::MAX);
}

/// The process behind a died word can run no more user code (its threads
/// are all exiting)? Waits up to `patience` for its other threads to reach
/// `do_exit` (a SIGKILLed process's siblings on another CPU may still be on
/// their way), then answers.
pub fn confirm_dead(region: &Region, d: &Died, patience: Duration) -> bool {
    const STEP: Duration = Duration::from_micros(20);
    let mut waited = Duration::ZERO;
    loop {
        match snapshot(region, d.id) {
            Ok(s) if s.st.generation == d.generation && s.process == d.process => {}
            // The slot moved on: whoever changed it saw the death.
            _ => return true,
        }
        if !d.process.is_alive() {
            return true;
        }
        if waited >= patience {
            return false;
        }
        crate::sync::pause(STEP);
        waited += STEP;
    }
}

// ---------------------------------------------------------------- registration

/// The member's liveness thread registers the word of connection
/// `(id, generation)` for itself. Only call it on a thread that uses no
/// robust pthread mutex (its robust list is replaced until
/// [`Registration`] is dropped, on the same thread).
#[cfg(not(loom))]
pub fn register_this_thread(
    region: &std::sync::Arc<Region>,
    id: ConnectorId,
    generation: u32,
) -> Result<Registration, std::io::Error> {
    if region.is_read_only() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "the region was opened read-only: a liveness word needs a writable region",
        ));
    }
    let (word, gen) = slot_words(region, id).map_err(std::io::Error::other)?;
    let tid = sys::gettid();
    if tid == 0 || tid & !TID_MASK != 0 {
        return Err(std::io::Error::other(format!(
            "thread id {tid} does not fit a futex word"
        )));
    }
    // The generation first, so a watcher that sees the TID sees whose it is.
    gen.store(generation, Ordering::Release);
    let robust = sys::RobustList::install(word)?;
    crate::crash::point("liveness.before_word");
    word.store(tid, Ordering::Release);
    Ok(Registration {
        word: word as *const AtomicU32,
        tid,
        robust: Some(robust),
        _region: region.clone(),
    })
}

/// A registered liveness word; dropping it (on the registering thread)
/// withdraws the word and gives the thread's robust list back to glibc.
#[cfg(not(loom))]
pub struct Registration {
    word: *const AtomicU32,
    tid: u32,
    robust: Option<sys::RobustList>,
    /// Keeps the mapping `word` points into (and the kernel's robust list
    /// entry) alive until this registration is dropped.
    _region: std::sync::Arc<Region>,
}

#[cfg(not(loom))]
impl Drop for Registration {
    fn drop(&mut self) {
        // SAFETY: the word is in the mapping of `self._region`, which this
        // registration keeps alive (it is dropped after this function).
        let word = unsafe { &*self.word };
        // Withdraw the word first (the kernel then finds no TID of ours in
        // it, so the thread's exit marks nothing), then the list.
        let _ = word.compare_exchange(self.tid, 0, Ordering::AcqRel, Ordering::Acquire);
        let _ = word.compare_exchange(self.tid | WAITERS, 0, Ordering::AcqRel, Ordering::Acquire);
        wake_all(word);
        drop(self.robust.take());
    }
}

/// A member's liveness thread: registers the connection's liveness word,
/// then beats its heartbeat every `interval / 6` until stopped. It takes no
/// lock and allocates nothing in its loop, so the member's workload cannot
/// block it. On finding itself fenced it SIGKILLs its own process (the
/// fencer may have died before its kill).
#[cfg(not(loom))]
pub struct LivenessThread {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

#[cfg(not(loom))]
impl LivenessThread {
    /// Start it for connection `(id, generation)` and wait until the word is
    /// registered and the first beat written.
    pub fn start(
        region: std::sync::Arc<Region>,
        id: ConnectorId,
        generation: u32,
        name: String,
    ) -> std::io::Result<LivenessThread> {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
        let st = stop.clone();
        let period = beat_period(settings(&region).interval);
        let period_ms = period.as_millis() as u64;
        let handle = std::thread::Builder::new()
            .name("liveness".into())
            .spawn(move || {
                let reg = match register_this_thread(&region, id, generation) {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let mut ready = Some(tx);
                let mut last: Option<u64> = None;
                while !st.load(std::sync::atomic::Ordering::Acquire) {
                    let now = monotonic_ms();
                    match beat(&region, id, generation, now, last, period_ms) {
                        Ok(Beat::Fenced) => {
                            // SAFETY: raise() has no memory-safety preconditions.
                            unsafe { libc::raise(libc::SIGKILL) };
                        }
                        Ok(Beat::Resumed) => crate::events::record(
                            &region,
                            &name,
                            None,
                            crate::events::EventData::StatusUpdateResumed {
                                missing_ms: last.map_or(0, |l| now.saturating_sub(l)),
                            },
                        ),
                        Ok(Beat::Ok) | Ok(Beat::Repaired) | Ok(Beat::Gone) | Err(_) => {}
                    }
                    last = Some(now.clamp(1, u64::MAX >> 8));
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(Ok(()));
                    }
                    std::thread::park_timeout(period);
                }
                stop_beating(&region, id, generation);
                drop(reg);
            })?;
        match rx.recv() {
            Ok(Ok(())) => Ok(LivenessThread {
                stop,
                handle: Some(handle),
            }),
            Ok(Err(e)) => {
                let _ = handle.join();
                Err(e)
            }
            Err(_) => {
                let _ = handle.join();
                Err(std::io::Error::other(
                    "the liveness thread ended at its start",
                ))
            }
        }
    }

    /// Stop beating and withdraw the word (before a normal disconnect).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        if let Some(h) = self.handle.take() {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

#[cfg(not(loom))]
impl Drop for LivenessThread {
    fn drop(&mut self) {
        self.halt();
    }
}

// ---------------------------------------------------------------- heartbeat

/// Milliseconds of CLOCK_MONOTONIC (the same clock for every process of the host).
#[cfg(not(loom))]
pub fn monotonic_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

fn heartbeat_word(region: &Region, id: ConnectorId) -> Result<&AtomicU64, CorruptError> {
    Ok(&region.connector(id)?.heartbeat)
}

/// What a beat found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Beat {
    /// Beat written; nothing else to report.
    Ok,
    /// Our status update had been declared missing; it is no longer.
    Resumed,
    /// We are fenced: the caller must end its process now.
    Fenced,
    /// The word held what no fence and no beat of ours leaves (damage):
    /// written over.
    Repaired,
    /// The slot is no longer our connection's (we were declared dead, e.g.
    /// a faked start time, and the slot moved on): nothing written.
    Gone,
}

/// Connection `(id, generation)`'s heartbeat at `now_ms`, beating every
/// `period_ms` (published with the beat, so survivors judge this connection
/// by its own period). `last_ms` is the time this connection's previous beat
/// wrote (`None` before its first). A CAS loop; it writes `now_ms`, so a
/// damaged time (even one far in the future) lasts one beat at most.
///
/// `FENCED` ends the process ([`Beat::Fenced`]) only if it is what a fence
/// leaves: on the time this connection wrote last, and older than the
/// interval by the member's own clock (a fencer marks only a beat older than
/// the interval). Anything else is damage: the beat writes over it
/// ([`Beat::Repaired`]), so one damaged bit never kills a healthy member.
///
/// The word is read *before* the generation is checked: a connect resets the
/// word before it publishes its generation, so if the generation is still
/// ours after the read, a CAS from the value read can only land on our word.
pub fn beat(
    region: &Region,
    id: ConnectorId,
    generation: u32,
    now_ms: u64,
    last_ms: Option<u64>,
    period_ms: u64,
) -> Result<Beat, CorruptError> {
    if region.is_read_only() {
        return Ok(Beat::Gone); // no member of this process is connected through it
    }
    let c = region.connector(id)?;
    let w = &c.heartbeat;
    let interval_ms = period_ms.saturating_mul(BEATS_PER_INTERVAL);
    let mut cur = w.load(Ordering::Acquire);
    loop {
        if crate::connector::load_state(region, id)?.generation != generation {
            return Ok(Beat::Gone);
        }
        let fenced = cur & HB_FENCED != 0;
        if fenced && last_ms == Some(cur >> 8) && now_ms.saturating_sub(cur >> 8) > interval_ms {
            return Ok(Beat::Fenced);
        }
        c.beat_period_ms.store(period_ms, Ordering::Relaxed);
        let new = now_ms.clamp(1, u64::MAX >> 8) << 8;
        match w.compare_exchange(cur, new, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) if fenced || last_ms.is_some_and(|l| l != cur >> 8) && cur != 0 => {
                return Ok(Beat::Repaired)
            }
            Ok(_) if cur & HB_MISSING != 0 => return Ok(Beat::Resumed),
            Ok(_) => return Ok(Beat::Ok),
            Err(v) => cur = v,
        }
    }
}

/// Beat periods a MISSING mark must stand unchanged before a fence (a
/// healthy member beats at least once in them).
pub const CONFIRM_PERIODS: u32 = 2;

/// Beats per failure detection interval: a member beats every
/// `interval / 6`.
pub const BEATS_PER_INTERVAL: u64 = 6;

/// The beat period for an interval (at least 10 ms).
pub fn beat_period(interval: Duration) -> Duration {
    (interval / BEATS_PER_INTERVAL as u32).max(Duration::from_millis(10))
}

/// The member stops beating (a normal disconnect): no heartbeat, so no
/// survivor will declare it missing. A fence already marked stays.
pub fn stop_beating(region: &Region, id: ConnectorId, generation: u32) {
    if region.is_read_only() {
        return;
    }
    if let Ok(w) = heartbeat_word(region, id) {
        let mut cur = w.load(Ordering::Acquire);
        // Read before the generation check, as in `beat`.
        while cur & HB_FENCED == 0
            && crate::connector::load_state(region, id).is_ok_and(|s| s.generation == generation)
        {
            match w.compare_exchange(cur, 0, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return,
                Err(v) => cur = v,
            }
        }
    }
}

/// A member's status as a survivor sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// No heartbeat (not beating yet, a restart light, a library user).
    NoHeartbeat,
    /// Beat `age_ms` ago, within the interval; `seen` is the word read.
    Fresh {
        /// How far the beat's time is from the clock, in ms (either way).
        age_ms: u64,
        /// The heartbeat word as read.
        seen: u64,
    },
    /// Older than the interval (or ahead of the clock by more than it);
    /// `marked` if the word says so already.
    Missing {
        /// How far the beat's time is from the clock, in ms (either way).
        age_ms: u64,
        /// The heartbeat word as read (to pass to [`mark_missing`] or
        /// [`mark_fenced`]).
        seen: u64,
        /// The word has [`HB_MISSING`] set.
        marked: bool,
    },
    /// Marked fenced.
    Fenced {
        /// How far the beat's time is from the clock, in ms (either way).
        age_ms: u64,
        /// The heartbeat word as read.
        seen: u64,
    },
}

/// Classify a heartbeat word read after the clock (`now_ms` first!),
/// judged by `interval`. A time *ahead* of the clock by more than the
/// interval is damage (a member writes its own clock, and a beat written
/// between the reads is ahead by a scheduling delay at most): it counts as
/// missing too, so damage cannot switch fencing off.
pub fn classify(word: u64, now_ms: u64, interval: Duration) -> Status {
    if word == 0 {
        return Status::NoHeartbeat;
    }
    let age_ms = now_ms.abs_diff(word >> 8);
    if word & HB_FENCED != 0 {
        return Status::Fenced { age_ms, seen: word };
    }
    if age_ms > interval.as_millis() as u64 {
        Status::Missing {
            age_ms,
            seen: word,
            marked: word & HB_MISSING != 0,
        }
    } else {
        Status::Fresh { age_ms, seen: word }
    }
}

/// The interval member `id`'s heartbeat is judged by: the plex's
/// `interval`, or the one its own beat period says if that is longer. So
/// damage to either alone never makes a healthy member look missing: the
/// plex's setting read after the member started (in range, yet not what
/// it beats by) or the published period (rewritten by every beat).
pub fn judged_interval(region: &Region, id: ConnectorId, interval: Duration) -> Duration {
    let period = region
        .connector(id)
        .map_or(0, |c| c.beat_period_ms.load(Ordering::Relaxed));
    let own = Duration::from_millis(period.saturating_mul(BEATS_PER_INTERVAL));
    interval.max(own.min(MAX_INTERVAL))
}

/// Member `id`'s status now (the clock read before the word), judged by
/// [`judged_interval`] of the plex's `interval`.
#[cfg(not(loom))]
pub fn status(
    region: &Region,
    id: ConnectorId,
    interval: Duration,
) -> Result<Status, CorruptError> {
    let interval = judged_interval(region, id, interval);
    let now = monotonic_ms();
    let w = heartbeat_word(region, id)?.load(Ordering::Acquire);
    Ok(classify(w, now, interval))
}

/// Mark a heartbeat seen as `seen` status-update-missing; true if this call did.
pub fn mark_missing(region: &Region, id: ConnectorId, seen: u64) -> bool {
    !region.is_read_only()
        && seen & HB_FLAGS == 0
        && heartbeat_word(region, id).is_ok_and(|w| {
            w.compare_exchange(seen, seen | HB_MISSING, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        })
}

/// Mark a heartbeat seen as `seen` (status update missing) fenced; true if
/// this call did. After it, no beat of the member can succeed.
pub fn mark_fenced(region: &Region, id: ConnectorId, seen: u64) -> bool {
    !region.is_read_only()
        && seen & HB_MISSING != 0
        && seen & HB_FENCED == 0
        && heartbeat_word(region, id).is_ok_and(|w| {
            w.compare_exchange(seen, seen | HB_FENCED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        })
}

/// What a fence attempt did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fence {
    /// This call marked it fenced and killed it (`age_ms`: heartbeat age).
    Fenced {
        /// The heartbeat's age when it was marked, in ms.
        age_ms: u64,
    },
    /// Already marked by someone else; the process was killed (again).
    AlreadyFenced,
    /// Its heartbeat is fresh, or it has none: not fenced.
    NotMissing,
    /// The slot holds no live process of that connection (nothing signalled).
    Gone,
}

/// Fence member `id` (the operator's `cfctl fence`): mark the heartbeat
/// FENCED, call `on_marked` with the heartbeat's age (the caller records the
/// event: before the kill, so a fencer killed in between leaves the event
/// and a mark that any survivor finishes), then SIGKILL the recorded process
/// after the identity check. `generation` is the connection judged (a later
/// one is left alone).
///
/// Without `force`, only a member whose status update is missing, and only
/// once that is confirmed: the word marked missing still holds the same
/// value [`CONFIRM_PERIODS`] beat periods later (a healthy member whose word
/// was damaged beats meanwhile and changes it). With `force`, whatever its
/// heartbeat says (fresh, or none): the mark is set on the exact value read,
/// and the kill follows at once (the member writes over a fence on a fresh
/// beat as damage, so a forcer killed before its kill fences nothing).
#[cfg(not(loom))]
pub fn fence(
    region: &Region,
    id: ConnectorId,
    generation: u32,
    interval: Duration,
    force: bool,
    on_marked: impl FnOnce(u64, &ProcessId),
) -> Result<Fence, CorruptError> {
    let Some(snap) = fenceable(region, id, generation)? else {
        return Ok(Fence::Gone);
    };
    let w = heartbeat_word(region, id)?;
    let judged = judged_interval(region, id, interval);
    let mut confirmed = false;
    // Bounded: a hostile writer could change the word forever.
    for _ in 0..64 {
        let now = monotonic_ms();
        let seen = w.load(Ordering::Acquire);
        let st = classify(seen, now, judged);
        if force {
            if let Status::Fenced { .. } = st {
                kill_if(region, id, generation, &snap.process);
                return Ok(Fence::AlreadyFenced);
            }
            let age_ms = match st {
                Status::Fresh { age_ms, .. } | Status::Missing { age_ms, .. } => age_ms,
                _ => 0,
            };
            let base = if seen == 0 { now.max(1) << 8 } else { seen };
            if w.compare_exchange(
                seen,
                base | HB_MISSING | HB_FENCED,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
            {
                return Ok(finish_fence(
                    region,
                    id,
                    generation,
                    &snap.process,
                    age_ms,
                    on_marked,
                ));
            }
            continue;
        }
        match st {
            // Marked by a fencer; killed again only if the mark is on a
            // beat older than the interval (one on a fresh beat is damage).
            Status::Fenced { age_ms, .. } if age_ms > judged.as_millis() as u64 => {
                kill_if(region, id, generation, &snap.process);
                return Ok(Fence::AlreadyFenced);
            }
            Status::Missing {
                seen,
                marked: true,
                age_ms,
            } if confirmed => {
                if mark_fenced(region, id, seen) {
                    let process = &snap.process;
                    return Ok(finish_fence(
                        region, id, generation, process, age_ms, on_marked,
                    ));
                }
            }
            Status::Missing { seen, marked, .. } => {
                if !marked && !mark_missing(region, id, seen) {
                    continue;
                }
                // Confirm: the same value two beat periods later (a healthy
                // member beats at least once meanwhile).
                let marked_value = seen | HB_MISSING;
                std::thread::sleep(CONFIRM_PERIODS * beat_period(judged));
                if w.load(Ordering::Acquire) != marked_value {
                    return Ok(Fence::NotMissing);
                }
                confirmed = true;
            }
            _ => return Ok(Fence::NotMissing),
        }
    }
    Ok(Fence::NotMissing)
}

/// Fence member `id`'s connection `generation` whose status update a
/// survivor has seen missing, marked, at exactly `seen` (with `HB_MISSING`)
/// for [`CONFIRM_PERIODS`] beat periods (the caller's confirmation): mark it
/// FENCED from that exact value, `on_marked`, SIGKILL. Nothing happens if the
/// word changed since (the member beat) or the slot moved on.
#[cfg(not(loom))]
pub fn fence_confirmed(
    region: &Region,
    id: ConnectorId,
    generation: u32,
    seen: u64,
    on_marked: impl FnOnce(u64, &ProcessId),
) -> Result<Fence, CorruptError> {
    let Some(snap) = fenceable(region, id, generation)? else {
        return Ok(Fence::Gone);
    };
    if !mark_fenced(region, id, seen) {
        return Ok(Fence::NotMissing);
    }
    let age_ms = monotonic_ms().abs_diff(seen >> 8);
    Ok(finish_fence(
        region,
        id,
        generation,
        &snap.process,
        age_ms,
        on_marked,
    ))
}

/// Slot `id` as it is, if it still holds connection `generation` with a
/// live process that is not being cleaned up: the only one a fence may mark.
#[cfg(not(loom))]
fn fenceable(
    region: &Region,
    id: ConnectorId,
    generation: u32,
) -> Result<Option<crate::connector::slot::Snapshot>, CorruptError> {
    let snap = snapshot(region, id)?;
    Ok((snap.st.generation == generation
        && snap.st.state.has_process()
        && snap.st.state != MemberState::Cleaning
        && snap.process.is_alive())
    .then_some(snap))
}

/// After the FENCED mark: record (`on_marked`), then the kill.
#[cfg(not(loom))]
fn finish_fence(
    region: &Region,
    id: ConnectorId,
    generation: u32,
    process: &ProcessId,
    age_ms: u64,
    on_marked: impl FnOnce(u64, &ProcessId),
) -> Fence {
    on_marked(age_ms, process);
    crate::crash::point("fence.marked");
    if kill_if(region, id, generation, process) {
        Fence::Fenced { age_ms }
    } else {
        Fence::Gone
    }
}

/// Kill again a member marked FENCED on a beat older than the interval
/// (its fencer may have died before the kill). A mark on a fresh beat is
/// left alone (damage: the member's next beat writes over it).
#[cfg(not(loom))]
pub fn refence(
    region: &Region,
    id: ConnectorId,
    generation: u32,
    interval: Duration,
) -> Result<Fence, CorruptError> {
    let snap = snapshot(region, id)?;
    if snap.st.generation != generation || !snap.process.is_alive() {
        return Ok(Fence::Gone);
    }
    match status(region, id, interval)? {
        Status::Fenced { age_ms, .. }
            if age_ms > judged_interval(region, id, interval).as_millis() as u64 =>
        {
            kill_if(region, id, generation, &snap.process);
            Ok(Fence::AlreadyFenced)
        }
        _ => Ok(Fence::NotMissing),
    }
}

/// SIGKILL `process` if slot `id` still names it in `generation`. True if
/// the signal was sent.
#[cfg(not(loom))]
fn kill_if(region: &Region, id: ConnectorId, generation: u32, process: &ProcessId) -> bool {
    match snapshot(region, id) {
        Ok(s) if s.st.generation == generation && s.process == *process => {
            kill_verified(process).unwrap_or(false)
        }
        _ => false,
    }
}

/// SIGKILL exactly `process`: open a pidfd for its PID, check *after*
/// opening that the process behind it has the recorded start time (the PID
/// may have been reused), then signal through the pidfd. `Ok(false)`: the
/// PID names no such process now; nothing was signalled.
#[cfg(not(loom))]
pub fn kill_verified(process: &ProcessId) -> std::io::Result<bool> {
    let Some(fd) = sys::pidfd_open(process.pid)? else {
        return Ok(false);
    };
    if ProcessId::of(process.pid)? != Some(*process) {
        return Ok(false);
    }
    sys::pidfd_kill(&fd)?;
    Ok(true)
}

// ---------------------------------------------------------------- the kernel

#[cfg(not(loom))]
mod sys {
    use super::*;
    use std::os::fd::{FromRawFd, OwnedFd};

    pub(super) fn gettid() -> u32 {
        // SAFETY: gettid has no arguments and cannot fail.
        unsafe { libc::syscall(libc::SYS_gettid) as u32 }
    }

    /// `struct robust_list` / `struct robust_list_head` (linux/futex.h).
    #[repr(C)]
    struct Entry {
        next: *mut Entry,
    }
    #[repr(C)]
    struct Head {
        list: Entry,
        futex_offset: libc::c_long,
        list_op_pending: *mut Entry,
    }
    #[repr(C)]
    struct Lists {
        head: Head,
        entry: Entry,
    }

    /// This thread's robust list holding only the liveness word; glibc's
    /// head is put back when it is dropped (on the same thread).
    pub(crate) struct RobustList {
        lists: Box<Lists>,
        saved_head: *mut libc::c_void,
        saved_len: libc::size_t,
    }

    impl RobustList {
        pub(super) fn install(word: &AtomicU32) -> std::io::Result<RobustList> {
            let mut saved_head: *mut libc::c_void = std::ptr::null_mut();
            let mut saved_len: libc::size_t = 0;
            // SAFETY: get_robust_list(0, ..) writes this thread's head pointer
            // and length into the two locals we pass.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_get_robust_list,
                    0,
                    &mut saved_head as *mut *mut libc::c_void,
                    &mut saved_len as *mut libc::size_t,
                )
            };
            if r != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut lists = Box::new(Lists {
                head: Head {
                    list: Entry {
                        next: std::ptr::null_mut(),
                    },
                    futex_offset: 0,
                    list_op_pending: std::ptr::null_mut(),
                },
                entry: Entry {
                    next: std::ptr::null_mut(),
                },
            });
            let head: *mut Entry = &mut lists.head.list;
            let entry: *mut Entry = &mut lists.entry;
            lists.head.list.next = entry;
            lists.entry.next = head;
            lists.head.futex_offset =
                (word as *const AtomicU32 as isize).wrapping_sub(entry as isize) as libc::c_long;
            // SAFETY: the head and its one entry are in a Box that lives
            // until `drop` has put glibc's head back; the entry's futex is
            // the liveness word, inside the region's mapping, which stays
            // mapped while this thread runs. The kernel reads the list only
            // at this thread's exit.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_set_robust_list,
                    &lists.head as *const Head,
                    std::mem::size_of::<Head>(),
                )
            };
            if r != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(RobustList {
                lists,
                saved_head,
                saved_len,
            })
        }
    }

    impl Drop for RobustList {
        fn drop(&mut self) {
            // SAFETY: puts back the head glibc registered for this thread
            // (still valid: it is in the thread's descriptor); after this the
            // kernel no longer looks at `lists`, which is then freed.
            unsafe {
                libc::syscall(libc::SYS_set_robust_list, self.saved_head, self.saved_len);
            }
            let _ = &self.lists;
        }
    }

    /// `struct futex_waitv` (linux/futex.h).
    #[repr(C)]
    struct FutexWaitv {
        val: u64,
        uaddr: u64,
        flags: u32,
        reserved: u32,
    }
    const FUTEX2_SIZE_U32: u32 = 0x02;

    pub(super) fn waitv(words: &[(&AtomicU32, u32)], timeout: Duration) -> Woke {
        if words.is_empty() {
            std::thread::sleep(timeout);
            return Woke::Timeout;
        }
        let v: Vec<FutexWaitv> = words
            .iter()
            .map(|(w, e)| FutexWaitv {
                val: *e as u64,
                uaddr: *w as *const AtomicU32 as u64,
                // Shared (no FUTEX2_PRIVATE): the key is the page, so the
                // kernel's wake from another process reaches us.
                flags: FUTEX2_SIZE_U32,
                reserved: 0,
            })
            .collect();
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into the timespec we pass.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
        let nanos = now.tv_nsec as u64 + timeout.subsec_nanos() as u64;
        let ts = libc::timespec {
            tv_sec: now.tv_sec
                + timeout.as_secs().min(i32::MAX as u64) as libc::time_t
                + (nanos / 1_000_000_000) as libc::time_t,
            tv_nsec: (nanos % 1_000_000_000) as libc::c_long,
        };
        // SAFETY: `v` holds `v.len()` (<= 128) well-formed entries whose
        // addresses are live, aligned 32-bit atomics in the shared mapping
        // (the kernel only reads them); `ts` lives across the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_futex_waitv,
                v.as_ptr(),
                v.len() as libc::c_uint,
                0 as libc::c_uint,
                &ts as *const libc::timespec,
                libc::CLOCK_MONOTONIC,
            )
        };
        if r >= 0 {
            return Woke::Word(r as usize);
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN) => Woke::Changed,
            Some(libc::ETIMEDOUT) => Woke::Timeout,
            Some(libc::EINTR) => Woke::Other,
            // ENOSYS (a kernel before 5.16) or anything else: no wait at
            // all; sleep the timeout rather than spin (the pidfd watcher
            // still detects deaths).
            _ => {
                std::thread::sleep(timeout);
                Woke::Other
            }
        }
    }

    pub(super) fn wake(word: &AtomicU32, n: i32) {
        // SAFETY: FUTEX_WAKE (shared) does not access the memory.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word as *const AtomicU32,
                libc::FUTEX_WAKE,
                n,
            );
        }
    }

    pub(super) fn pidfd_open(pid: u32) -> std::io::Result<Option<OwnedFd>> {
        if pid == 0 || pid > i32::MAX as u32 {
            return Ok(None);
        }
        // SAFETY: pidfd_open takes a pid and flags, no memory.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ESRCH) => Ok(None),
                _ => Err(e),
            };
        }
        // SAFETY: the kernel just returned this descriptor; nothing else owns it.
        Ok(Some(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }

    pub(super) fn pidfd_kill(fd: &OwnedFd) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        // SAFETY: pidfd_send_signal with a null siginfo and no flags; the
        // descriptor is ours and open.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ESRCH) {
                return Ok(());
            }
            return Err(e);
        }
        Ok(())
    }
}

/// Under loom the kernel is a list of sleepers with the same contract:
/// the value check and the enqueue are atomic with respect to a wake, the
/// kernel's death wakes one sleeper of the word, timeouts are ignored (a
/// lost wake-up shows as a deadlock).
#[cfg(loom)]
pub(crate) mod sys {
    use super::*;
    use loom::sync::{Condvar, Mutex};

    struct Sleeper {
        ticket: u64,
        words: Vec<usize>,
        woken: Option<usize>,
    }
    loom::lazy_static! {
        static ref Q: (Mutex<(u64, Vec<Sleeper>)>, Condvar) = (Mutex::new((0, Vec::new())), Condvar::new());
    }

    pub(super) fn waitv(words: &[(&AtomicU32, u32)], _timeout: Duration) -> Woke {
        let (lock, cv) = &*Q;
        let mut q = lock.lock().unwrap();
        for (w, e) in words {
            if w.load(Ordering::SeqCst) != *e {
                return Woke::Changed;
            }
        }
        if words.is_empty() {
            return Woke::Timeout;
        }
        q.0 += 1;
        let ticket = q.0;
        q.1.push(Sleeper {
            ticket,
            words: words
                .iter()
                .map(|(w, _)| *w as *const AtomicU32 as usize)
                .collect(),
            woken: None,
        });
        loop {
            let pos = q.1.iter().position(|s| s.ticket == ticket).unwrap();
            if let Some(i) = q.1[pos].woken {
                q.1.remove(pos);
                return Woke::Word(i);
            }
            q = cv.wait(q).unwrap();
        }
    }

    pub(super) fn wake(word: &AtomicU32, n: i32) {
        let (lock, cv) = &*Q;
        let mut q = lock.lock().unwrap();
        let addr = word as *const AtomicU32 as usize;
        let mut left = n;
        for s in q.1.iter_mut() {
            if left == 0 {
                break;
            }
            if s.woken.is_none() {
                if let Some(i) = s.words.iter().position(|&a| a == addr) {
                    s.woken = Some(i);
                    left -= 1;
                }
            }
        }
        cv.notify_all();
    }

    /// The kernel's `handle_futex_death` for a thread `tid` that held `word`.
    /// (It retries a failed cmpxchg, as the kernel does.)
    pub(crate) fn kernel_death(word: &AtomicU32, tid: u32) {
        let mut v = word.load(Ordering::SeqCst);
        loop {
            if v & TID_MASK != tid {
                return;
            }
            let m = (v & WAITERS) | OWNER_DIED;
            match word.compare_exchange(v, m, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => break,
                Err(now) => v = now,
            }
        }
        if v & WAITERS != 0 {
            wake(word, 1);
        }
    }
}

/// Loom: register connection `(id, generation)`'s word for modelled thread
/// `tid` (the model's stand-in for [`register_this_thread`]).
#[cfg(loom)]
pub(crate) fn model_register(region: &Region, id: ConnectorId, generation: u32, tid: u32) {
    let (word, gen) = slot_words(region, id).unwrap();
    gen.store(generation, Ordering::Release);
    word.store(tid, Ordering::Release);
}

/// Loom: the kernel's walk of a dead thread `tid`'s robust list.
#[cfg(loom)]
pub(crate) fn model_kernel_death(region: &Region, id: ConnectorId, tid: u32) {
    if let Ok((word, _)) = slot_words(region, id) {
        sys::kernel_death(word, tid);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::{CreateOptions, Member, Plex};

    fn region() -> (tempfile::TempDir, std::sync::Arc<Region>) {
        let dir = tempfile::tempdir().unwrap();
        let plex = Plex {
            dir: dir.path().into(),
        };
        let r = Region::create(&plex, &CreateOptions::small_for_tests()).unwrap();
        (dir, std::sync::Arc::new(r))
    }

    /// A beat and a fence are ordered on one word: a beat after the member
    /// was declared missing clears the mark and the fence's CAS fails; a
    /// beat after the fence finds it and answers `Fenced`.
    #[test]
    fn a_beat_and_a_fence_never_both_win() {
        let (_d, r) = region();
        let m = Member::connect(r.clone(), "A").unwrap();
        let (id, g) = (m.id(), m.generation());
        let iv = Duration::from_millis(100);
        assert_eq!(beat(&r, id, g, 1000, None, 16).unwrap(), Beat::Ok);
        let Status::Missing { seen, marked, .. } = classify(
            r.connector(id).unwrap().heartbeat.load(Ordering::Relaxed),
            1200,
            iv,
        ) else {
            panic!("200 ms old with a 100 ms interval is missing")
        };
        assert!(!marked);
        assert!(mark_missing(&r, id, seen));
        // The member beats again before the fence: resumed, fence refused.
        assert_eq!(
            beat(&r, id, g, 1201, Some(1000), 16).unwrap(),
            Beat::Resumed
        );
        assert!(!mark_fenced(&r, id, seen | HB_MISSING));
        // Declared missing again, fenced: the next beat finds it.
        let w = r.connector(id).unwrap().heartbeat.load(Ordering::Relaxed);
        assert!(mark_missing(&r, id, w));
        assert!(mark_fenced(&r, id, w | HB_MISSING));
        assert_eq!(beat(&r, id, g, 1500, Some(1201), 16).unwrap(), Beat::Fenced);
        // A stop leaves the fence mark; a beat of an older connection writes nothing.
        stop_beating(&r, id, g);
        assert_ne!(
            r.connector(id).unwrap().heartbeat.load(Ordering::Relaxed) & HB_FENCED,
            0
        );
        assert_eq!(
            beat(&r, id, g.wrapping_add(1), 2000, Some(1500), 16).unwrap(),
            Beat::Gone
        );
        m.disconnect().unwrap();
    }

    /// Damage to the heartbeat word never kills a healthy member and never
    /// lasts beyond its next beat: a FENCED bit on a fresh beat, or on a
    /// time it did not write, is written over; a time far in the future is
    /// replaced by the clock (and counts as missing until then).
    #[test]
    fn damage_to_the_heartbeat_is_written_over_by_the_next_beat() {
        let (_d, r) = region();
        let m = Member::connect(r.clone(), "A").unwrap();
        let (id, g) = (m.id(), m.generation());
        let hb = |v: Option<u64>| {
            let w = &r.connector(id).unwrap().heartbeat;
            if let Some(v) = v {
                w.store(v, Ordering::Relaxed);
            }
            w.load(Ordering::Relaxed)
        };
        assert_eq!(beat(&r, id, g, 1000, None, 16).unwrap(), Beat::Ok);
        // FENCED on the member's own fresh beat: damage.
        hb(Some(1000 << 8 | HB_FENCED));
        assert_eq!(
            beat(&r, id, g, 1010, Some(1000), 16).unwrap(),
            Beat::Repaired
        );
        assert_eq!(hb(None), 1010 << 8);
        // FENCED on an old time the member never wrote: damage.
        hb(Some(5 << 8 | HB_MISSING | HB_FENCED));
        assert_eq!(
            beat(&r, id, g, 1500, Some(1010), 16).unwrap(),
            Beat::Repaired
        );
        // A time far ahead: missing to a watcher, then replaced by the clock.
        hb(Some((u64::MAX >> 8) << 8));
        assert!(matches!(
            classify(hb(None), 1510, Duration::from_millis(100)),
            Status::Missing { .. }
        ));
        assert_eq!(
            beat(&r, id, g, 1516, Some(1500), 16).unwrap(),
            Beat::Repaired
        );
        assert_eq!(hb(None), 1516 << 8);
        assert_eq!(
            r.connector(id)
                .unwrap()
                .beat_period_ms
                .load(Ordering::Relaxed),
            16
        );
        m.disconnect().unwrap();
    }

    /// The interval a heartbeat is judged by is the longer of the plex's and
    /// the member's own (six beat periods), capped at the longest interval.
    #[test]
    fn a_member_is_judged_by_the_longer_of_its_own_interval_and_the_plexs() {
        let (_d, r) = region();
        let m = Member::connect(r.clone(), "A").unwrap();
        let id = m.id();
        let p = &r.connector(id).unwrap().beat_period_ms;
        let ms = Duration::from_millis;
        assert_eq!(judged_interval(&r, id, ms(100)), ms(100), "none published");
        p.store(500, Ordering::Relaxed);
        assert_eq!(judged_interval(&r, id, ms(100)), ms(3000));
        assert_eq!(judged_interval(&r, id, ms(6000)), ms(6000));
        p.store(u64::MAX, Ordering::Relaxed);
        assert_eq!(judged_interval(&r, id, ms(100)), MAX_INTERVAL);
        m.disconnect().unwrap();
    }

    /// A process with the recorded PID but another start time is never
    /// signalled.
    #[test]
    fn a_reused_pid_is_never_signalled() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let real = ProcessId::of(child.id()).unwrap().unwrap();
        let other = ProcessId {
            pid: real.pid,
            start_time: real.start_time + 1,
        };
        assert!(!kill_verified(&other).unwrap(), "not the recorded process");
        std::thread::sleep(Duration::from_millis(20));
        assert!(child.try_wait().unwrap().is_none(), "sleep still runs");
        assert!(kill_verified(&real).unwrap());
        let st = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(st.signal(), Some(libc::SIGKILL));
    }

    /// The robust-list registration: a thread that ends with the word
    /// registered has it marked OWNER_DIED by the kernel; a thread that drops
    /// its registration first leaves 0.
    #[test]
    fn the_kernel_marks_the_word_of_a_thread_that_ends_registered() {
        let (_d, r) = region();
        let m = Member::connect(r.clone(), "A").unwrap();
        let (id, g) = (m.id(), m.generation());
        let r2 = r.clone();
        std::thread::spawn(move || {
            let reg = register_this_thread(&r2, id, g).unwrap();
            std::mem::forget(reg); // ends registered: as if killed
        })
        .join()
        .unwrap();
        let w = r.connector(id).unwrap().liveness.load(Ordering::Acquire);
        assert_eq!(w & OWNER_DIED, OWNER_DIED, "{w:#x}");
        assert_eq!(w & TID_MASK, 0);
        let r2 = r.clone();
        std::thread::spawn(move || drop(register_this_thread(&r2, id, g).unwrap()))
            .join()
            .unwrap();
        assert_eq!(r.connector(id).unwrap().liveness.load(Ordering::Acquire), 0);
        m.disconnect().unwrap();
    }
}
