//! The peer monitor of a member: failure detection and restart requests.
//!
//! * **Watcher** (one thread): holds a pidfd for every other connected member,
//!   opened and then checked against the slot's recorded start time (so a
//!   reused PID is never taken for the member), and polls them all. When one
//!   polls readable, or a slot names a process that is gone, it runs the
//!   cf-core cleanup; the member that wins the cleanup claim records
//!   `detected` (with the moment it noticed) and `cleaned_up`, and posts the
//!   restart request. The slot table is re-read every poll timeout (20 ms), so
//!   new members are watched within that time.
//! * **Restarter** (one thread): sleeps on the request list's sequence word
//!   (futex), wakes on any change, claims each request that needs a handler
//!   (exactly one member wins each claim) and starts `cf-node restart-light`
//!   as its child, waiting for it. A restart light that fails is started
//!   again after an exponential back-off (`BACKOFF_FIRST`, doubling up to
//!   `BACKOFF_MAX`). After `MAX_ATTEMPTS` failures that were not a SIGKILL
//!   from outside (a recovery that fails for a persistent reason: one damaged
//!   byte in the accounts, a log that is a directory), the request is marked
//!   FAILED with the reason the restart light gave (`cf_core::requests::fail`):
//!   nobody claims it again until an operator re-posts it (`cfctl
//!   restart-light MEMBER`) or `requests::FAILED_RETRY` has passed. Each
//!   claim records at most `MAX_FAILURE_EVENTS` `restart_light_failed`
//!   events, so one failure never floods the event ring. The restarter
//!   also posts a request for any failed-persistent member that has none (its
//!   detector died before posting, or every member was dead at once).
//! * **Deadlock detector** (one thread): every deadlock interval of the plex
//!   (`cfctl create --deadlock-interval`), a round of
//!   `cf_core::deadlock::detect_if_due`: if no member ran one for that long,
//!   this one claims it, reads the members' wait records, and tells one
//!   victim in each cycle of the wait-for graph (its `lock` answers
//!   `Deadlock`).

use crate::pidfd;
use cf_core::connector::liveness::{self, Isolate, Settings, Status};
use cf_core::connector::{now_ns, slot_view};
use cf_core::deadlock;
use cf_core::events::{self, Completion, EventData};
use cf_core::requests::{self, ClaimOutcome, RequestState};
use cf_core::{cleanup_member_as, CleanupOutcome, ConnectorId, MemberState, ProcessId, Region};
use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(20);
/// Failures (not counting SIGKILLs from outside) before a request is FAILED.
const MAX_ATTEMPTS: u64 = 5;
/// Back-off before the second attempt; doubles with each failure.
const BACKOFF_FIRST: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// `restart_light_failed` events one claim records at most.
const MAX_FAILURE_EVENTS: u64 = 8;

/// Settings and identity of the monitoring member.
pub struct Monitor {
    pub region: Arc<Region>,
    pub plex_dir: PathBuf,
    pub me_id: ConnectorId,
    pub me_name: String,
    pub me: ProcessId,
    /// Wait this long after a request is posted before claiming it.
    pub claim_delay: Duration,
    /// The cf-node binary to start in restart-light mode.
    pub exe: PathBuf,
    pub stop: AtomicBool,
    pub detections: AtomicU64,
    pub restarts: AtomicU64,
    /// Connectors whose request names no member (reported once).
    pub nameless: std::sync::Mutex<std::collections::BTreeSet<ConnectorId>>,
}

impl Monitor {
    pub fn spawn(self: &Arc<Self>) -> std::io::Result<()> {
        let w = self.clone();
        std::thread::Builder::new()
            .name("watcher".into())
            .spawn(move || w.watch())?;
        let l = self.clone();
        std::thread::Builder::new()
            .name("live-watch".into())
            .spawn(move || l.watch_liveness())?;
        let r = self.clone();
        std::thread::Builder::new()
            .name("restarter".into())
            .spawn(move || r.restart_loop())?;
        let d = self.clone();
        std::thread::Builder::new()
            .name("deadlock".into())
            .spawn(move || d.detect_deadlocks())?;
        Ok(())
    }

    // ---- deadlocks ----

    /// The deadlock detector: a round every deadlock interval, if none ran
    /// in the plex for that long (the claim makes it one member at a time).
    /// The interval is read again every round.
    fn detect_deadlocks(self: Arc<Self>) {
        let mut reported = false;
        while !self.stop.load(Ordering::Relaxed) {
            let interval = liveness::settings(&self.region).deadlock_interval;
            let wake = Instant::now() + interval;
            while !self.stop.load(Ordering::Relaxed) && Instant::now() < wake {
                std::thread::sleep(POLL.min(wake.saturating_duration_since(Instant::now())));
            }
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            if let Err(e) = deadlock::detect_if_due(&self.region, Some(self.me_id)) {
                // (Only a region that cannot be written, or a process that
                // cannot read its identity: say it once.)
                if !std::mem::replace(&mut reported, true) {
                    eprintln!("cf-node {}: deadlock detection: {e}", self.me_name);
                }
            }
        }
    }

    fn log_err<T>(&self, what: &str, r: anyhow::Result<T>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                eprintln!("cf-node {}: {what}: {e:#}", self.me_name);
                None
            }
        }
    }

    // ---- detection ----

    fn watch(self: Arc<Self>) {
        let mut peers: HashMap<ConnectorId, (u32, ProcessId, OwnedFd)> = HashMap::new();
        while !self.stop.load(Ordering::Relaxed) {
            self.rescan(&mut peers);
            let ids: Vec<ConnectorId> = peers.keys().copied().collect();
            let fds: Vec<&OwnedFd> = ids.iter().map(|i| &peers[i].2).collect();
            let ready = match pidfd::poll_readable(&fds, POLL) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("cf-node {}: poll: {e}", self.me_name);
                    std::thread::sleep(POLL);
                    continue;
                }
            };
            let seen = now_ns();
            for i in ready {
                let id = ids[i];
                let Some((generation, process, _)) = peers.remove(&id) else {
                    continue;
                };
                let dead = Some((generation, process));
                // Each cleanup on its own thread: a member that held a million
                // locks must not delay noticing the next death.
                let me = self.clone();
                let spawned = std::thread::Builder::new()
                    .name("cleanup".into())
                    .spawn(move || me.on_death(id, seen, dead));
                if spawned.is_err() {
                    self.on_death(id, seen, dead);
                }
            }
        }
    }

    /// The liveness watcher (`cf_core::connector::liveness`): sleeps on every
    /// peer's liveness word at once (futex_waitv); a word the kernel marked
    /// is passed on to the other sleepers by the survey, the death confirmed
    /// (no thread of the process can run) and cleaned up on a thread of its
    /// own. Every `interval / 6` it also checks the peers' heartbeats and
    /// declares status update missing, and fences at once if the plex says so.
    fn watch_liveness(self: Arc<Self>) {
        let settings = liveness::settings(&self.region);
        let period = liveness::beat_period(settings.interval);
        let mut handled: HashSet<(ConnectorId, u32)> = HashSet::new();
        let mut memory = StatusMemory::default();
        let mut next_status = Instant::now();
        let mut changed = 0u32;
        while !self.stop.load(Ordering::Relaxed) {
            let seen = now_ns();
            let survey = liveness::survey(&self.region, self.me_id);
            handled.retain(|k| survey.died.iter().any(|d| (d.id, d.generation) == *k));
            for d in survey.died {
                if !handled.insert((d.id, d.generation)) {
                    continue;
                }
                let me = self.clone();
                let run = move || {
                    if liveness::confirm_dead(&me.region, &d, Duration::from_secs(1)) {
                        me.on_death(d.id, seen, Some((d.generation, d.process)));
                    }
                    // Else the word says dead while a thread of the process
                    // still runs (damage): the pidfd watcher is the backstop.
                };
                if std::thread::Builder::new()
                    .name("cleanup".into())
                    .spawn(run)
                    .is_err()
                {
                    handled.remove(&(d.id, d.generation));
                }
            }
            if Instant::now() >= next_status {
                self.check_status(&settings, &mut memory);
                next_status = Instant::now() + period;
            }
            let timeout = POLL.min(next_status.saturating_duration_since(Instant::now()));
            match liveness::wait_any(&self.region, &survey.watch, timeout) {
                liveness::Woke::Changed => changed += 1,
                _ => changed = 0,
            }
            if changed > 16 {
                // A word that changes under every survey (damage, a hostile
                // writer): look again less eagerly rather than spin.
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        // Stopping: a kernel wake we took in our last wait must not end with
        // us. One more survey passes on the wake of any word marked dead.
        let _ = liveness::survey(&self.region, self.me_id);
    }

    /// Heartbeats: declare status update missing, fence (at once, or a
    /// member the operator fenced whose kill did not happen yet).
    ///
    /// What this watcher saw before counts (`memory`): a beat time older
    /// than one it already saw from the same connection, or ahead of the
    /// clock, is damage (a member's times only grow, and never pass the
    /// clock), and the member is judged by the newest one seen. A fence at
    /// once is confirmed first: only a marked value that stood unchanged for
    /// `CONFIRM_PERIODS` beat periods of that member (in which a healthy
    /// member beats and changes it) is fenced, by a CAS from exactly that
    /// value; a watcher that never saw the connection beat (it started
    /// after the damage, or the stall) confirms over a whole interval.
    fn check_status(&self, s: &Settings, memory: &mut StatusMemory) {
        let mut still = HashMap::new();
        let mut newest = HashMap::new();
        for id in self.region.connector_ids() {
            if id == self.me_id {
                continue;
            }
            let Ok(slot) = slot_view(&self.region, id) else {
                continue;
            };
            if !slot.state.has_process() {
                continue;
            }
            let Ok(st) = liveness::status(&self.region, id, s.interval) else {
                continue;
            };
            let key = (id, slot.generation);
            let judged = liveness::judged_interval(&self.region, id, s.interval);
            let now = liveness::monotonic_ms();
            let best = memory.newest.get(&key).copied();
            match st {
                Status::Fresh { seen, .. } => {
                    let t = (seen >> 8).min(now).max(best.unwrap_or(0));
                    newest.insert(key, t);
                }
                Status::Missing {
                    age_ms,
                    seen,
                    marked,
                } => {
                    if !slot.is_alive() {
                        continue;
                    }
                    if let Some(b) = best {
                        newest.insert(key, b);
                        let t = seen >> 8;
                        if (t < b || t > now) && now.saturating_sub(b) <= judged.as_millis() as u64
                        {
                            // Older than a beat we saw, or ahead of the
                            // clock: damage, not a gap; the member is judged
                            // by the newest beat seen (attack6, attack7).
                            continue;
                        }
                    }
                    if !marked && liveness::mark_missing(&self.region, id, seen) {
                        events::record(
                            &self.region,
                            &slot.name,
                            Some(&self.me_name),
                            EventData::StatusUpdateMissing {
                                heartbeat_age_ms: age_ms,
                            },
                        );
                    }
                    if s.isolate != Isolate::AtOnce {
                        continue;
                    }
                    let value = seen | liveness::HB_MISSING;
                    let since = match memory.missing.get(&key) {
                        Some(&(v, t)) if v == value => t,
                        _ => Instant::now(),
                    };
                    // A watcher that never saw this connection beat cannot
                    // tell a damaged time from a gap: it confirms over a
                    // whole interval (a healthy member beats in it).
                    let confirm = if best.is_some() {
                        liveness::CONFIRM_PERIODS * liveness::beat_period(judged)
                    } else {
                        judged
                    };
                    if since.elapsed() > confirm {
                        self.fence(&slot, value);
                    } else {
                        still.insert(key, (value, since));
                    }
                }
                // Marked by someone who may have died before the kill.
                Status::Fenced { .. } if slot.is_alive() => {
                    if let Err(e) =
                        liveness::refence(&self.region, slot.id, slot.generation, s.interval)
                    {
                        eprintln!("cf-node {}: fencing {}: {e}", self.me_name, slot.name);
                    }
                }
                _ => {}
            }
        }
        memory.missing = still;
        memory.newest = newest;
    }

    fn fence(&self, slot: &cf_core::connector::SlotView, seen: u64) {
        let r =
            liveness::fence_confirmed(&self.region, slot.id, slot.generation, seen, |age_ms, p| {
                events::record(
                    &self.region,
                    &slot.name,
                    Some(&self.me_name),
                    EventData::Fenced {
                        heartbeat_age_ms: age_ms,
                        pid: p.pid,
                        by_operator: false,
                    },
                )
            });
        if let Err(e) = r {
            eprintln!("cf-node {}: fencing {}: {e}", self.me_name, slot.name);
        }
    }

    /// Watch every slot with a process; notice the ones already dead.
    fn rescan(&self, peers: &mut HashMap<ConnectorId, (u32, ProcessId, OwnedFd)>) {
        for id in self.region.connector_ids() {
            if id == self.me_id {
                continue;
            }
            let Some(slot) = self.log_err(
                "reading the connector table",
                slot_view(&self.region, id).map_err(Into::into),
            ) else {
                continue;
            };
            if !slot.state.has_process() && slot.state != MemberState::Cleaning {
                peers.remove(&id);
                continue;
            }
            // Watched already, as the same connection of the same process? (A
            // slot whose recorded identity changed is checked again: the
            // pidfd we hold is for another process.)
            if peers
                .get(&id)
                .is_some_and(|(g, p, _)| *g == slot.generation && *p == slot.process)
            {
                continue;
            }
            let dead = Some((slot.generation, slot.process));
            if slot.state == MemberState::Cleaning {
                // A cleaner died halfway: finish its job.
                self.on_death(id, now_ns(), dead);
                continue;
            }
            match pidfd::open(slot.process.pid) {
                // Opened: the fd is tied to whatever process has that PID now,
                // so check it is the member's (same start time, not a zombie).
                Ok(fd) if slot.process.is_alive() => {
                    peers.insert(id, (slot.generation, slot.process, fd));
                }
                _ => self.on_death(id, now_ns(), dead),
            }
        }
    }

    /// Clean up connector `id`, whose process (as of generation and identity
    /// `dead`) was seen dead at `seen_ns`. If the slot names another
    /// connection by the time this runs (a cleanup thread can start late: the
    /// death was handled meanwhile and the slot reused), that one is not the
    /// death seen, and is left to its own detection: cleaning it up here would
    /// record its `detected` with the time of an earlier death.
    fn on_death(&self, id: ConnectorId, seen_ns: u64, dead: Option<(u32, ProcessId)>) {
        if let Some((generation, process)) = dead {
            match slot_view(&self.region, id) {
                Ok(s) if s.generation == generation && s.process == process => {}
                _ => return,
            }
        }
        // The cleanup records `detected`, `cleaned_up` and posts the request.
        match cleanup_member_as(&self.region, id, Some(self.me_id), Some(seen_ns)) {
            Ok(CleanupOutcome::Cleaned(_)) => {
                self.detections.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(e) => eprintln!("cf-node {}: cleaning up connector {id}: {e}", self.me_name),
        }
    }

    fn post(&self, id: ConnectorId, name: &str) {
        let _ = requests::post(&self.region, id, Some(self.me_id), |epoch| {
            events::record(
                &self.region,
                name,
                Some(&self.me_name),
                EventData::RequestPosted { epoch },
            )
        });
    }

    /// Our restart light was killed, and request `epoch` for `name` is no
    /// longer outstanding: the light completed it (a CAS of the request's
    /// state, then the event) and died before its event, or someone else
    /// completed it and recorded it. If no completion of `name` for `epoch`
    /// was recorded since our claim (`since`), record it for the light.
    fn record_lost_completion(&self, name: &str, epoch: u32, since: u64) {
        let recorded = events::read_since(&self.region, since).iter().any(|e| {
            e.member == name
                && matches!(e.data, EventData::RecoveryCompleted { epoch: done, .. } if done == epoch)
        });
        if !recorded {
            events::record(
                &self.region,
                name,
                Some(&self.me_name),
                EventData::RecoveryCompleted {
                    epoch,
                    how: Completion::ForKilledLight,
                },
            );
        }
    }

    // ---- restart requests ----

    fn restart_loop(&self) {
        while !self.stop.load(Ordering::Relaxed) {
            let seq = requests::sequence(&self.region);
            let mut soonest = Duration::from_millis(100);
            for id in self.region.connector_ids() {
                if self.stop.load(Ordering::Relaxed) {
                    return;
                }
                if let Some(wait) = self.consider(id) {
                    soonest = soonest.min(wait);
                }
            }
            requests::wait_for_change(&self.region, seq, soonest);
        }
    }

    /// Look at member `id`: post a missing request, claim and handle one that
    /// needs a handler. Returns how long to wait before looking again, if soon.
    fn consider(&self, id: ConnectorId) -> Option<Duration> {
        let slot = slot_view(&self.region, id).ok()?;
        let reqs = requests::list(&self.region).ok()?;
        let req = reqs.iter().find(|r| r.member_id == id);
        if slot.state == MemberState::FailedPersistent
            && req.is_none()
            && !cf_core::recovery::cleanup_in_progress(&self.region, id).unwrap_or(true)
        {
            self.post(id, &slot.name);
            return Some(Duration::ZERO);
        }
        let req = req?;
        if !requests::needs_handler(&self.region, id).ok()? {
            return None;
        }
        if req.state == RequestState::Pending {
            let ready_at = req
                .posted_unix_ns
                .saturating_add(self.claim_delay.as_nanos() as u64);
            let now = now_ns();
            if now < ready_at {
                return Some(Duration::from_nanos(ready_at - now));
            }
        }
        // The request keeps the member's name (its slot's may be cleared already).
        let name = if req.name.is_empty() {
            slot.name.clone()
        } else {
            req.name.clone()
        };
        if name.is_empty() {
            // A request that names no member (a damaged entry): no restart
            // light can connect as it. Say so once; restarting it over and
            // over would only flood the event ring.
            if self
                .nameless
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id)
            {
                eprintln!(
                    "cf-node {}: the restart request of connector {id} names no member: cannot restart it",
                    self.me_name
                );
            }
            return None;
        }
        match requests::claim(&self.region, id, self.me_id, &self.me) {
            Ok(ClaimOutcome::Claimed { taken_over, epoch }) => {
                events::record(
                    &self.region,
                    &name,
                    Some(&self.me_name),
                    EventData::Claimed {
                        pid: self.me.pid,
                        taken_over,
                    },
                );
                cf_core::crash::point("handler.claimed");
                self.handle(id, epoch, &name);
                Some(Duration::ZERO)
            }
            _ => None,
        }
    }

    /// Drive claimed request `epoch` of `id` until its member needs no restart.
    fn handle(&self, id: ConnectorId, epoch: u32, name: &str) {
        // Failures that count toward giving up, every failure (for the
        // back-off and the event budget), and the next back-off.
        let mut attempts = 0;
        let mut failures: u64 = 0;
        let mut backoff = BACKOFF_FIRST;
        let mut wait_first = false;
        let mut last_code = 0;
        // Events from our claim on, and did a restart light of ours fail?
        let since = events::next_seq(&self.region);
        let mut light_failed = false;
        // The failure our restart lights work on: the failed slot's
        // generation when the last one started, and that light's PID (a
        // light that connected and failed leaves the slot with its own
        // generation and PID). Any other connection since (a normal restart,
        // a light run by hand, killed while recovering) is a new death its
        // attempts must not be counted against.
        let mut ours: Option<(u32, u32)> = None;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                let _ = requests::unclaim(&self.region, id, epoch, &self.me);
                return;
            }
            if !requests::is_outstanding(&self.region, id, epoch).unwrap_or(false) {
                // Completed by someone else, or by our restart light: if that
                // one was killed between its completion and its event, record
                // the completion for it (once).
                if light_failed {
                    self.record_lost_completion(name, epoch, since);
                }
                return;
            }
            let Ok(slot) = slot_view(&self.region, id) else {
                return;
            };
            if slot.name != name || slot.state == MemberState::Free {
                // Recovered (and perhaps the slot reused): nothing left to do.
                let _ = requests::complete(&self.region, id, epoch, name, &self.me_name);
                return;
            }
            match slot.state {
                MemberState::FailedPersistent => {}
                MemberState::Active if slot.is_alive() => {
                    // Restarted normally: it recovers itself.
                    let _ = requests::complete(&self.region, id, epoch, name, &self.me_name);
                    return;
                }
                MemberState::Recovering if slot.is_alive() => {
                    // A restart light started by a claimer that died: let it finish.
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                }
                _ => {
                    // Dead but not cleaned up (e.g. a restart light killed): clean it.
                    if let Ok(CleanupOutcome::InProgress { .. }) =
                        cleanup_member_as(&self.region, id, Some(self.me_id), None)
                    {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    continue;
                }
            }
            if ours.is_some_and(|(g, pid)| slot.generation != g && slot.process.pid != pid) {
                attempts = 0;
                ours = None;
            }
            if attempts >= MAX_ATTEMPTS {
                // Marked failed only if it was still ours (it may have been
                // completed meanwhile) and the member is still the connection
                // judged here: the event says which.
                let out = requests::fail(&self.region, id, epoch, &self.me, slot.generation)
                    .unwrap_or(requests::FailOutcome::NotOutstanding);
                if out == requests::FailOutcome::MemberChanged {
                    // A later connection began meanwhile (recovered it, or
                    // died recovering: a fault, not the persistent reason).
                    attempts = 0;
                    continue;
                }
                let marked = out == requests::FailOutcome::Marked;
                if marked {
                    eprintln!(
                        "cf-node {}: restart light of {} failed {attempts} times; the request is \
                         marked failed (re-post it with `cfctl restart-light {}` once the cause \
                         is fixed)",
                        self.me_name,
                        cf_core::inspect::escape(name),
                        cf_core::inspect::escape(name)
                    );
                }
                events::record(
                    &self.region,
                    name,
                    Some(&self.me_name),
                    EventData::RestartLightFailed {
                        status: last_code,
                        failures,
                        gave_up: marked,
                    },
                );
                return;
            }
            if wait_first {
                wait_first = false;
                // Exponential back-off between attempts, still answering a stop.
                let until = std::time::Instant::now() + backoff;
                while std::time::Instant::now() < until && !self.stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(10).min(backoff));
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
            self.restarts.fetch_add(1, Ordering::Relaxed);
            let child = Command::new(&self.exe)
                .arg("restart-light")
                .arg("--plex")
                .arg(&self.plex_dir)
                .arg("--member")
                .arg(name)
                .arg("--by")
                .arg(&self.me_name)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .spawn();
            let mut child = match child {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("cf-node {}: starting restart light: {e}", self.me_name);
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            // Only the latest light's fate matters to a lost completion.
            light_failed = false;
            ours = Some((slot.generation, child.id()));
            if let Ok(Some(p)) = ProcessId::of(child.id()) {
                let _ = requests::set_worker(&self.region, id, epoch, &p);
            }
            match child.wait() {
                Ok(st) if st.success() => {}
                Ok(st) => {
                    light_failed = true;
                    failures += 1;
                    wait_first = true;
                    let code = st
                        .code()
                        .map_or_else(|| 128 + st.signal().unwrap_or(0) as u64, |c| c as u64);
                    last_code = code;
                    // A SIGKILL from outside (a fault injected into the
                    // restart light) is no reason to give recovery up.
                    if st.signal() != Some(libc::SIGKILL) {
                        attempts += 1;
                    }
                    let _ = requests::set_reason(&self.region, id, epoch, Some(code), None);
                    if failures <= MAX_FAILURE_EVENTS {
                        events::record(
                            &self.region,
                            name,
                            Some(&self.me_name),
                            EventData::RestartLightFailed {
                                status: code,
                                failures,
                                gave_up: false,
                            },
                        );
                    }
                }
                Err(e) => eprintln!("cf-node {}: waiting for restart light: {e}", self.me_name),
            }
        }
    }
}

/// What a liveness watcher remembers of the heartbeats between two status
/// checks, per connection `(slot, generation)`.
#[derive(Default)]
struct StatusMemory {
    /// A value marked MISSING, and since when this watcher has seen it.
    missing: HashMap<(ConnectorId, u32), (u64, Instant)>,
    /// The newest beat time (ms, not ahead of the clock) seen.
    newest: HashMap<(ConnectorId, u32), u64>,
}
