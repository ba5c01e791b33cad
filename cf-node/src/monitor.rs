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
                peers.remove(&id);
                // Each cleanup on its own thread: a member that held a million
                // locks must not delay noticing the next death.
                let me = self.clone();
                let spawned = std::thread::Builder::new()
                    .name("cleanup".into())
                    .spawn(move || me.on_death(id, seen));
                if spawned.is_err() {
                    self.on_death(id, seen);
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
            if slot.state == MemberState::Cleaning {
                // A cleaner died halfway: finish its job.
                self.on_death(id, now_ns());
                continue;
            }
            match pidfd::open(slot.process.pid) {
                // Opened: the fd is tied to whatever process has that PID now,
                // so check it is the member's (same start time, not a zombie).
                Ok(fd) if slot.process.is_alive() => {
                    peers.insert(id, (slot.generation, slot.process, fd));
                }
                _ => self.on_death(id, now_ns()),
            }
        }
    }

    fn on_death(&self, id: u32, seen_ns: u64) {
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
        let announced = events::read_all(&self.region)
            .iter()
            .any(|e| e.kind == EventKind::Detected && e.member == slot.name && e.a == pid);
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
                self.handle(id, &name);
                Some(Duration::ZERO)
            }
            _ => None,
        }
    }

    /// Drive the claimed request for `id` until its member needs no restart.
    fn handle(&self, id: u32, name: &str) {
        let mut attempts = 0;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                let _ = requests::unclaim(&self.region, id, &self.me);
                return;
            }
            match self.ours(id, name) {
                Ours::Yes => {}
                // Completed by someone else (its restart light, or the member
                // restarting normally), perhaps posted again since: not ours.
                Ours::No => return,
                Ours::OtherName => {
                    let _ = requests::unclaim(&self.region, id, &self.me);
                    return;
                }
            }
            let Ok(slot) = slot_view(&self.region, id) else {
                return;
            };
            if slot.name != name || slot.state == MemberState::Free {
                // Recovered (and perhaps the slot reused): nothing left to do.
                self.finish(id, name);
                return;
            }
            match slot.state {
                MemberState::FailedPersistent => {}
                MemberState::Active if slot.is_alive() => {
                    // Restarted normally: it recovers itself.
                    self.finish(id, name);
                    return;
                }
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
}
