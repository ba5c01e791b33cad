//! `cf-node restart-light`: the failed member's identity, started by a peer,
//! that only recovers and then ends. It allocates no buffer pool and starts
//! no workload or worker thread: it reconnects as the failed member (taking
//! its retained locks), backs out its unfinished transactions, releases the
//! retained locks, disconnects normally, completes the restart request, and
//! reports its peak RSS.

use crate::recover::{recover, Step};
use cf_core::events::{self, EventKind};
use cf_core::{ConnectError, ConnectMode, Member, Plex, Region};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// What restart light did.
#[derive(Clone, Debug)]
pub struct Summary {
    pub member: String,
    pub transactions: u64,
    pub updates_undone: u64,
    pub released: u64,
    pub peak_rss_kib: u64,
    pub elapsed_ns: u64,
    /// False if the member did not need recovery (already done by someone).
    pub recovered: bool,
}

pub fn run(plex_dir: &Path, member: &str, by: Option<&str>) -> anyhow::Result<Summary> {
    let t0 = Instant::now();
    let region = Arc::new(Region::open(&Plex {
        dir: plex_dir.into(),
    })?);
    events::record(
        &region,
        EventKind::RestartLightStarted,
        member,
        by,
        [std::process::id() as u64, 0, 0],
    );
    // Name ourselves as the request's worker at once (our claimer may die
    // before it does), so no other member starts a second restart light.
    if let (Ok(Some((id, epoch))), Ok(me)) = (
        cf_core::requests::find(&region, member),
        cf_core::ProcessId::current(),
    ) {
        let _ = cf_core::requests::set_worker(&region, id, epoch, &me);
    }
    let m = match Member::connect_with(region.clone(), member, ConnectMode::Recovery) {
        Ok(m) => m,
        // Not failed-persistent (recovered already), or running again under
        // its name (restarted normally, it recovers itself; or another
        // restart light of it, started by a claimer that died, is at work).
        Err(ConnectError::NotFailed(_)) | Err(ConnectError::NameInUse { pid: 1.., .. }) => {
            return Ok(Summary {
                member: member.into(),
                transactions: 0,
                updates_undone: 0,
                released: 0,
                peak_rss_kib: crate::bufpool::peak_rss_kib().unwrap_or(0),
                elapsed_ns: t0.elapsed().as_nanos() as u64,
                recovered: false,
            })
        }
        Err(e) => return Err(e.into()),
    };
    cf_core::crash::point("restart_light.connected");
    let report = recover(&m, plex_dir, |step| match step {
        Step::BackedOut(b) => events::record(
            &region,
            EventKind::BackedOut,
            member,
            Some(member),
            [b.transactions, b.updates_undone, 0],
        ),
        Step::Released(n) => events::record(
            &region,
            EventKind::Released,
            member,
            Some(member),
            [n, 0, 0],
        ),
    })?;
    // The request this recovery completes: the one outstanding now, while we
    // hold the member's slot (no newer failure of it can be posted meanwhile).
    let request = cf_core::requests::find(&region, member)?;
    m.disconnect()?;
    cf_core::crash::point("restart_light.disconnected");
    let peak = crate::bufpool::peak_rss_kib().unwrap_or(0);
    let own = crate::bufpool::rss_without_shmem_kib().unwrap_or(0);
    let elapsed = t0.elapsed().as_nanos() as u64;
    events::record(
        &region,
        EventKind::TerminatedNormally,
        member,
        Some(member),
        [peak, elapsed, own],
    );
    if let Some((id, epoch)) = request {
        cf_core::requests::complete(&region, id, epoch, member, member)?;
    }
    Ok(Summary {
        member: member.into(),
        transactions: report.backout.transactions,
        updates_undone: report.backout.updates_undone,
        released: report.released,
        peak_rss_kib: peak,
        elapsed_ns: elapsed,
        recovered: true,
    })
}
