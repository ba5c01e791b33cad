//! `cf-node restart-light`: the failed member's identity, started by a peer,
//! that only recovers and then ends. It allocates no buffer pool and starts
//! no workload or worker thread: it reconnects as the failed member (taking
//! its retained locks), backs out its unfinished transactions, releases the
//! retained locks, disconnects normally, completes the restart request, and
//! reports its peak RSS.

use crate::recover::{recover, Step};
use cf_core::events::{self, EventData};
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

/// Recover failed member `member` of the plex in `plex_dir` (see the module
/// docs). If it fails once the region is open, the reason (one line) is
/// written into the member's restart request for `cfctl display requests`.
pub fn run(plex_dir: &Path, member: &str, by: Option<&str>) -> anyhow::Result<Summary> {
    cf_core::connector::check_name(member)?;
    let region = Arc::new(Region::open(&Plex {
        dir: plex_dir.into(),
    })?);
    match run_on(&region, plex_dir, member, by) {
        Ok(s) => Ok(s),
        Err(e) => {
            if let Ok(Some((id, epoch))) = cf_core::requests::find(&region, member) {
                let mut line = cf_core::error::one_line(e.chain());
                // The plex directory is known to the reader: keep the room
                // for what went wrong.
                let prefix = format!("{}/", plex_dir.display());
                line = line.replace(&prefix, "");
                let _ = cf_core::requests::set_reason(&region, id, epoch, None, Some(&line));
            }
            Err(e)
        }
    }
}

fn run_on(
    region: &Arc<Region>,
    plex_dir: &Path,
    member: &str,
    by: Option<&str>,
) -> anyhow::Result<Summary> {
    let t0 = Instant::now();
    events::record(
        region,
        member,
        by,
        EventData::RestartLightStarted {
            pid: std::process::id(),
        },
    );
    // Name ourselves as the request's worker at once (our claimer may die
    // before it does), so no other member starts a second restart light.
    if let (Ok(Some((id, epoch))), Ok(me)) = (
        cf_core::requests::find(region, member),
        cf_core::ProcessId::current(),
    ) {
        let _ = cf_core::requests::set_worker(region, id, epoch, &me);
    }
    // The files recovery needs are checked before connecting (a FIFO, a
    // symlink, a directory or another user's file at the log's name is
    // refused here, with the member left as it is: failed-persistent).
    let scan = crate::wal::read_log(&crate::wal::log_path(plex_dir, member))?;
    if !scan.records.is_empty() {
        crate::store::Store::open(plex_dir)?;
    }
    crate::history::precheck(plex_dir, member)?;
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
            region,
            member,
            Some(member),
            EventData::BackedOut {
                transactions: b.transactions,
                updates_undone: b.updates_undone,
            },
        ),
        Step::Released(n) => events::record(
            region,
            member,
            Some(member),
            EventData::Released { locks: n },
        ),
    })?;
    // The request this recovery completes: the one outstanding now, while we
    // hold the member's slot (no newer failure of it can be posted meanwhile).
    let request = cf_core::requests::find(region, member)?;
    m.disconnect()?;
    cf_core::crash::point("restart_light.disconnected");
    let peak = crate::bufpool::peak_rss_kib().unwrap_or(0);
    let own = crate::bufpool::rss_without_shmem_kib().unwrap_or(0);
    let elapsed = t0.elapsed().as_nanos() as u64;
    events::record(
        region,
        member,
        Some(member),
        EventData::TerminatedNormally {
            peak_rss_kib: peak,
            elapsed_ns: elapsed,
            rss_without_region_kib: own,
        },
    );
    if let Some((id, epoch)) = request {
        cf_core::requests::complete(region, id, epoch, member, member)?;
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
