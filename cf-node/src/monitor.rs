//! The peer monitor of a member: failure detection and restart requests.
//!
//! * **Watcher** (one thread): holds a pidfd for every other connected member,
//!   opened and then checked against the slot's recorded start time (so a
//!   reused PID is never taken for the member), and polls them all. When one
//!   polls readable, or a slot names a process that is gone, it runs the
//!   cf-core cleanup; the member that wins the cleanup claim records
//!   `detected` (with the moment it noticed) and `cleaned_up`, and posts the
//!   restart request. A cleanup that starts late and finds the slot naming
//!   another connection leaves it alone (that is not the death it saw). The slot table is re-read every poll timeout (20 ms), so
//!   new members are watched within that time.
//! * **Restarter** (one thread): sleeps on the request list's sequence word
//!   (futex), wakes on any change, claims each request that needs a handler
//!   (exactly one member wins each claim) and starts `cf-node restart-light`
//!   as its child, waiting for it. A restart light that fails is started
//!   again (up to `MAX_ATTEMPTS`, then the claim is given back). The restarter
//!   also posts a request for any failed-persistent member that has none (its
//!   detector died before posting, or every member was dead at once), and
//!   records the member's `detected` if its dead cleaner had not.
//!   A handler completes a request only while it still holds that request's
//!   claim for that member: the request may have been completed by someone
//!   else meanwhile (its restart light, the member restarting normally) and
//!   posted again for the next death of a member in the same slot, which a
//!   late completion would lose.

use crate::pidfd;
use cf_core::connector::{now_ns, slot_view};
use cf_core::events::{self, EventKind};
use cf_core::requests::{self, ClaimOutcome, RequestState};
use cf_core::{cleanup_member_as, CleanupOutcome, MemberState, ProcessId, Region};
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const POLL: Duration = Duration::from_millis(20);
const MAX_ATTEMPTS: u64 = 5;
/// How long a request whose member's slot no longer names it at the first
/// look of a fresh claim must stay the same request before it is completed
/// (see [`Suspects`]).
const SUSPECT_CONFIRM: Duration = Duration::from_millis(100);

/// Requests claimed fresh (not taken over) whose member's slot did not name
/// it in a failed state at the first look, by connector id: the posted time
/// and name of the request, and when it was first seen so. Such a request may
/// be a new one read while it was being posted (the entry still held its
/// previous request's name and time, which the poster overwrites next): it is
/// given back, and completed only if a later look, `SUSPECT_CONFIRM` on,
/// finds the very same request (then its member was recovered some other
/// way, and nobody else will complete it).
#[derive(Default)]
pub struct Suspects(std::sync::Mutex<HashMap<u32, (u64, String, std::time::Instant)>>);

impl Suspects {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, (u64, String, std::time::Instant)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long until request `key` of `id`, seen suspect, may be looked at again.
    fn wait(&self, id: u32, key: (u64, &str)) -> Option<Duration> {
        match self.lock().get(&id) {
            Some((p, n, since)) if (*p, n.as_str()) == key => SUSPECT_CONFIRM
                .checked_sub(since.elapsed())
                .filter(|d| !d.is_zero()),
            _ => None,
        }
    }

    /// Seen suspect again: true if it is the same request as long enough ago.
    fn confirmed(&self, id: u32, key: (u64, &str)) -> bool {
        let mut m = self.lock();
        match m.get(&id) {
            Some((p, n, since)) if (*p, n.as_str()) == key => {
                if since.elapsed() >= SUSPECT_CONFIRM {
                    m.remove(&id);
                    return true;
                }
                false
            }
            _ => {
                m.insert(id, (key.0, key.1.to_string(), std::time::Instant::now()));
                false
            }
        }
    }
}

/// Is there a `detected` event for the death of process `pid` as member
/// `name` (in what the event ring still holds)?
pub fn death_recorded(region: &Region, name: &str, pid: u32) -> bool {
    events::read_all(region)
        .iter()
        .any(|e| e.kind == EventKind::Detected && e.member == name && e.a == pid as u64)
}

/// Whose is a claimed request?
enum Ours {
    /// Claimed by this member, for the member we handle.
    Yes,
    /// Claimed by this member, but for another member's name.
    OtherName,
    /// Not (or no longer) claimed by this member.
    No,
}

/// Settings and identity of the monitoring member.
pub struct Monitor {
    pub region: Arc<Region>,
    pub plex_dir: PathBuf,
    pub me_id: u32,
    pub me_name: String,
    pub me: ProcessId,
    /// Wait this long after a request is posted before claiming it.
    pub claim_delay: Duration,
    /// The cf-node binary to start in restart-light mode.
    pub exe: PathBuf,
    pub stop: AtomicBool,
    pub detections: AtomicU64,
    pub restarts: AtomicU64,
    /// Requests being confirmed before completion (see [`Suspects`]).
    pub suspects: Suspects,
    /// Connectors whose request names no member (reported once).
    pub nameless: std::sync::Mutex<std::collections::BTreeSet<u32>>,
}

impl Monitor {
    pub fn spawn(self: &Arc<Self>) -> std::io::Result<()> {
        let w = self.clone();
        std::thread::Builder::new()
            .name("watcher".into())
            .spawn(move || w.watch())?;
        let r = self.clone();
        std::thread::Builder::new()
            .name("restarter".into())
            .spawn(move || r.restart_loop())?;
        Ok(())
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
        let mut peers: HashMap<u32, (u32, ProcessId, OwnedFd)> = HashMap::new();
        while !self.stop.load(Ordering::Relaxed) {
            self.rescan(&mut peers);
            let ids: Vec<u32> = peers.keys().copied().collect();
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

    /// Watch every slot with a process; notice the ones already dead.
    fn rescan(&self, peers: &mut HashMap<u32, (u32, ProcessId, OwnedFd)>) {
        for id in 0..self.region.members() {
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

    /// Clean up connector `id`, whose process (as of generation and
    /// identity `dead`) was seen dead at `seen_ns`. If the slot names another
    /// connection by the time this runs (a cleanup thread can start late: the
    /// death was handled meanwhile and the slot reused), that one is not the
    /// death seen, and is left to its own detection: cleaning it up here would
    /// record its `detected` with the time of an earlier death.
    fn on_death(&self, id: u32, seen_ns: u64, dead: Option<(u32, ProcessId)>) {
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

    /// The sweep for one member: post the missing request of a
    /// failed-persistent member that has none and whose cleanup claim no live
    /// process holds (its cleaner died before posting, or every member died at
    /// once). Returns true if this call posted it. The cleaner may have died
    /// after it marked the member failed-persistent but before it recorded
    /// `detected`: then the poster records it, so that every death has its
    /// `detected` event (once: only the poster that wins the post does).
    pub fn post_missing_request(&self, slot: &cf_core::connector::SlotView) -> bool {
        let id = slot.id;
        if slot.state != MemberState::FailedPersistent
            || cf_core::recovery::cleanup_in_progress(&self.region, id).unwrap_or(true)
            || requests::list(&self.region).map_or(true, |r| r.iter().any(|r| r.member_id == id))
        {
            return false;
        }
        let pid = slot.process.pid as u64;
        let announced = death_recorded(&self.region, &slot.name, slot.process.pid);
        requests::post(&self.region, id, Some(self.me_id), || {
            if !announced {
                events::record(
                    &self.region,
                    EventKind::Detected,
                    &slot.name,
                    Some(&self.me_name),
                    [pid, 0, 0],
                );
            }
            events::record(
                &self.region,
                EventKind::RequestPosted,
                &slot.name,
                Some(&self.me_name),
                [0, 0, 0],
            )
        })
        .unwrap_or(false)
    }

    // ---- restart requests ----

    /// Is the request for `id` still the one this member claimed for `name`?
    /// (It may have been completed by someone else meanwhile, and a new one
    /// posted for a new death of a member in the same slot.)
    fn ours(&self, id: u32, name: &str) -> Ours {
        let Ok(reqs) = requests::list(&self.region) else {
            return Ours::No;
        };
        match reqs.iter().find(|r| r.member_id == id) {
            Some(r)
                if r.state == RequestState::Claimed
                    && r.claimer_pid == self.me.pid
                    && r.claimer_alive =>
            {
                if r.name.is_empty() || r.name == name {
                    Ours::Yes
                } else {
                    Ours::OtherName
                }
            }
            _ => Ours::No,
        }
    }

    /// Our restart light failed (was killed) and the request we claimed for
    /// `id` is no longer ours: it completed the request and died before it
    /// recorded `recovery_completed` (the completion is a swap of the
    /// request's state, then the event), or someone else completed it (and
    /// recorded it). If the entry is free and no completion of `name` was
    /// recorded since our claim (`since`), record it for the restart light
    /// (`b` = 1). (An entry not free holds a request: ours with its claim
    /// lost, or a new one; neither is a completion.)
    fn record_lost_completion(&self, id: u32, name: &str, since: u64) {
        let free = requests::list(&self.region).is_ok_and(|r| r.iter().all(|r| r.member_id != id));
        let recorded = events::read_since(&self.region, since)
            .iter()
            .any(|e| e.kind == EventKind::RecoveryCompleted && e.member == name);
        if free && !recorded {
            events::record(
                &self.region,
                EventKind::RecoveryCompleted,
                name,
                Some(&self.me_name),
                [0, 1, 0],
            );
        }
    }

    /// Is the request for `id` the same one as a while ago (see [`Suspects`])?
    fn confirmed(&self, id: u32) -> bool {
        let Ok(reqs) = requests::list(&self.region) else {
            return false;
        };
        reqs.iter()
            .find(|r| r.member_id == id)
            .is_some_and(|r| self.suspects.confirmed(id, (r.posted_unix_ns, &r.name)))
    }

    /// The member of the request we claimed for `id` needs no restart any
    /// more: complete the request if it is still ours. Never complete a
    /// request that is not (a late completion would complete the request of
    /// the member's next death, or of another member in the slot, and that
    /// member would never be restarted for it).
    fn finish(&self, id: u32, name: &str) {
        match self.ours(id, name) {
            Ours::Yes => {
                let _ = requests::complete(&self.region, id, name, &self.me_name);
            }
            // Claimed under a name read while its request was being posted:
            // give it back, so that it is claimed again under its own name.
            Ours::OtherName => {
                let _ = requests::unclaim(&self.region, id, &self.me);
            }
            Ours::No => {}
        }
    }

    fn restart_loop(&self) {
        while !self.stop.load(Ordering::Relaxed) {
            let seq = requests::sequence(&self.region);
            let mut soonest = Duration::from_millis(100);
            for id in 0..self.region.members() {
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
    fn consider(&self, id: u32) -> Option<Duration> {
        let slot = slot_view(&self.region, id).ok()?;
        let reqs = requests::list(&self.region).ok()?;
        let req = reqs.iter().find(|r| r.member_id == id);
        if req.is_none() && self.post_missing_request(&slot) {
            return Some(Duration::ZERO);
        }
        let req = req?;
        if !requests::needs_handler(&self.region, id).ok()? {
            return None;
        }
        if req.state == RequestState::Pending {
            let ready_at = req.posted_unix_ns + self.claim_delay.as_nanos() as u64;
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
            // A slot without a name (its last process was killed inside its
            // disconnect, after the name was cleared): no restart light can
            // connect as it. Say so once; restarting it over and over would
            // only flood the event ring.
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
        if let Some(wait) = self.suspects.wait(id, (req.posted_unix_ns, &req.name)) {
            return Some(wait);
        }
        match requests::claim(&self.region, id, self.me_id, &self.me) {
            Ok(ClaimOutcome::Claimed { taken_over }) => {
                events::record(
                    &self.region,
                    EventKind::Claimed,
                    &name,
                    Some(&self.me_name),
                    [self.me.pid as u64, taken_over as u64, 0],
                );
                cf_core::crash::point("handler.claimed");
                self.handle(id, &name, taken_over);
                Some(Duration::ZERO)
            }
            _ => None,
        }
    }

    /// Drive the claimed request for `id` until its member needs no restart.
    fn handle(&self, id: u32, name: &str, taken_over: bool) {
        let mut attempts = 0;
        // Has the slot been seen naming the member in a failed state (or was
        // the request taken over from a dead claimer, whose restart light may
        // have finished)? Only then is a member found gone really recovered.
        let mut saw_failed = taken_over;
        // Events from our claim on, and did a restart light of ours fail?
        let since = events::next_seq(&self.region);
        let mut light_failed = false;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                let _ = requests::unclaim(&self.region, id, &self.me);
                return;
            }
            match self.ours(id, name) {
                Ours::Yes => {}
                // Completed by someone else (its restart light, or the member
                // restarting normally), perhaps posted again since: not ours.
                Ours::No => {
                    if light_failed {
                        self.record_lost_completion(id, name, since);
                    }
                    return;
                }
                Ours::OtherName => {
                    let _ = requests::unclaim(&self.region, id, &self.me);
                    return;
                }
            }
            let Ok(slot) = slot_view(&self.region, id) else {
                return;
            };
            let gone = slot.name != name || slot.state == MemberState::Free;
            // Restarted normally: it recovers itself.
            let running = slot.state == MemberState::Active && slot.is_alive();
            if gone || running {
                // Recovered (and perhaps the slot reused): nothing left to
                // do, if this is really the request of a member we saw failed.
                if saw_failed || self.confirmed(id) {
                    self.finish(id, name);
                } else {
                    let _ = requests::unclaim(&self.region, id, &self.me);
                }
                return;
            }
            saw_failed = true;
            match slot.state {
                MemberState::FailedPersistent => {}
                MemberState::Recovering | MemberState::Connecting if slot.is_alive() => {
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
            if attempts >= MAX_ATTEMPTS {
                eprintln!("cf-node {}: restart light of {name} failed {attempts} times; giving the request back", self.me_name);
                let _ = requests::unclaim(&self.region, id, &self.me);
                return;
            }
            attempts += 1;
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
            if let Ok(Some(p)) = ProcessId::of(child.id()) {
                let _ = requests::set_worker(&self.region, id, &p);
            }
            match child.wait() {
                Ok(st) if st.success() => {}
                Ok(st) => {
                    light_failed = true;
                    let code = st
                        .code()
                        .map_or_else(|| 128 + st.signal().unwrap_or(0) as u64, |c| c as u64);
                    events::record(
                        &self.region,
                        EventKind::RestartLightFailed,
                        name,
                        Some(&self.me_name),
                        [code, 0, 0],
                    );
                }
                Err(e) => eprintln!("cf-node {}: waiting for restart light: {e}", self.me_name),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cf_core::{CreateOptions, Member, Plex};

    fn monitor(region: &Arc<Region>, me_id: u32) -> Monitor {
        Monitor {
            region: region.clone(),
            plex_dir: PathBuf::new(),
            me_id,
            me_name: "T".into(),
            me: ProcessId::current().unwrap(),
            claim_delay: Duration::ZERO,
            exe: PathBuf::new(),
            stop: AtomicBool::new(false),
            detections: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            suspects: Default::default(),
            nameless: Default::default(),
        }
    }

    fn state(region: &Region, id: u32) -> Option<RequestState> {
        requests::list(region)
            .unwrap()
            .iter()
            .find(|r| r.member_id == id)
            .map(|r| r.state)
    }

    #[test]
    fn a_handler_completes_only_the_request_it_claimed() {
        let dir = tempfile::tempdir().unwrap();
        let plex = Plex {
            dir: dir.path().into(),
        };
        let region = Arc::new(Region::create(&plex, &CreateOptions::small_for_tests()).unwrap());
        // Slot 0 is named A (the request keeps the name of its slot).
        let a = Member::connect(region.clone(), "A").unwrap();
        let id = a.id();
        let m = monitor(&region, 1);
        requests::post(&region, id, None, || {}).unwrap();
        assert!(matches!(
            requests::claim(&region, id, 1, &m.me),
            Ok(ClaimOutcome::Claimed { .. })
        ));
        assert!(matches!(m.ours(id, "A"), Ours::Yes));
        // Its restart light completed it; A died again and a new request was
        // posted for the same slot before the handler looked: the handler's
        // late completion must not complete the new request.
        requests::complete(&region, id, "A", "A").unwrap();
        requests::post(&region, id, None, || {}).unwrap();
        assert!(matches!(m.ours(id, "A"), Ours::No));
        m.finish(id, "A");
        assert_eq!(state(&region, id), Some(RequestState::Pending));
        // Claimed under a stale name (read while the request was being
        // posted): given back, not completed.
        assert!(matches!(
            requests::claim(&region, id, 1, &m.me),
            Ok(ClaimOutcome::Claimed { .. })
        ));
        assert!(matches!(m.ours(id, "B"), Ours::OtherName));
        m.finish(id, "B");
        assert_eq!(state(&region, id), Some(RequestState::Pending));
        assert!(requests::needs_handler(&region, id).unwrap());
        // Its own claim under its own name is completed.
        assert!(matches!(
            requests::claim(&region, id, 1, &m.me),
            Ok(ClaimOutcome::Claimed { .. })
        ));
        m.finish(id, "A");
        assert_eq!(state(&region, id), None);
        a.disconnect().unwrap();
    }

    #[test]
    fn a_late_cleanup_leaves_the_slots_next_connection_alone() {
        let dir = tempfile::tempdir().unwrap();
        let plex = Plex {
            dir: dir.path().into(),
        };
        let region = Arc::new(Region::create(&plex, &CreateOptions::small_for_tests()).unwrap());
        let a = Member::connect(region.clone(), "A").unwrap();
        let id = a.id();
        // A's process now looks dead (same PID, another start time).
        cf_core::testing::fake_reused_pid(&region, id);
        let slot = slot_view(&region, id).unwrap();
        let detected = || {
            cf_core::events::read_all(&region)
                .into_iter()
                .filter(|e| e.kind == EventKind::Detected)
                .collect::<Vec<_>>()
        };
        let m = monitor(&region, 1);
        // A death seen of an earlier connection of the slot: not this one.
        m.on_death(id, 5, Some((slot.generation.wrapping_sub(1), slot.process)));
        assert_eq!(slot_view(&region, id).unwrap().state, MemberState::Active);
        assert!(detected().is_empty());
        // The death of this connection, seen at 7: cleaned up, detected at 7.
        m.on_death(id, 7, Some((slot.generation, slot.process)));
        assert_eq!(
            slot_view(&region, id).unwrap().state,
            MemberState::FailedPersistent
        );
        let d = detected();
        assert_eq!(
            (d.len(), d[0].time_ns, d[0].a),
            (1, 7, slot.process.pid as u64)
        );
    }

    #[test]
    fn a_completion_lost_with_its_restart_light_is_recorded_once() {
        let dir = tempfile::tempdir().unwrap();
        let plex = Plex {
            dir: dir.path().into(),
        };
        let region = Arc::new(Region::create(&plex, &CreateOptions::small_for_tests()).unwrap());
        let m = monitor(&region, 1);
        let since = cf_core::events::next_seq(&region);
        // The entry still holds a request: not a completion.
        requests::post(&region, 0, None, || {}).unwrap();
        m.record_lost_completion(0, "A", since);
        assert_eq!(completions_of(&region, "A"), 0);
        // Free, nothing recorded since the claim: recorded for the restart light.
        requests::complete(&region, 0, "", "").unwrap();
        let since = cf_core::events::next_seq(&region);
        m.record_lost_completion(0, "A", since);
        assert_eq!(completions_of(&region, "A"), 1);
        // Recorded already (by it, or by whoever completed it): not again.
        m.record_lost_completion(0, "A", since);
        assert_eq!(completions_of(&region, "A"), 1);
    }

    fn completions_of(region: &Region, name: &str) -> usize {
        cf_core::events::read_all(region)
            .iter()
            .filter(|e| e.kind == EventKind::RecoveryCompleted && e.member == name)
            .count()
    }

    fn completions(region: &Region) -> usize {
        cf_core::events::read_all(region)
            .iter()
            .filter(|e| e.kind == EventKind::RecoveryCompleted)
            .count()
    }

    #[test]
    fn a_request_for_a_member_gone_at_the_first_look_is_completed_only_once_confirmed() {
        let dir = tempfile::tempdir().unwrap();
        let plex = Plex {
            dir: dir.path().into(),
        };
        let region = Arc::new(Region::create(&plex, &CreateOptions::small_for_tests()).unwrap());
        // A request naming A whose slot is free: what a claimer sees of a new
        // request read while it is being posted (the entry still holds the
        // previous request's name), or of a request whose member was
        // recovered some other way.
        let post_for_a = || {
            let a = Member::connect(region.clone(), "A").unwrap();
            let id = a.id();
            requests::post(&region, id, None, || {}).unwrap();
            a.disconnect().unwrap();
            id
        };
        let id = post_for_a();
        let m = monitor(&region, 1);
        assert_eq!(m.consider(id), Some(Duration::ZERO));
        assert_eq!(
            state(&region, id),
            Some(RequestState::Pending),
            "given back"
        );
        assert_eq!(completions(&region), 0);
        // Not claimed again before it is confirmed.
        assert!(m.consider(id).is_some_and(|d| d > Duration::ZERO));
        assert_eq!(state(&region, id), Some(RequestState::Pending));
        // Meanwhile the poster finished: another request (another time).
        std::thread::sleep(Duration::from_millis(2));
        requests::complete(&region, id, "A", "test").unwrap();
        assert_eq!(post_for_a(), id);
        let done = completions(&region);
        std::thread::sleep(SUSPECT_CONFIRM);
        assert_eq!(m.consider(id), Some(Duration::ZERO));
        assert_eq!(
            state(&region, id),
            Some(RequestState::Pending),
            "a new suspect"
        );
        assert_eq!(completions(&region), done);
        // The same request a while later: its member needs nothing, completed.
        std::thread::sleep(SUSPECT_CONFIRM);
        assert_eq!(m.consider(id), Some(Duration::ZERO));
        assert_eq!(state(&region, id), None);
        assert_eq!(completions(&region), done + 1);
    }
}
