//! Recovering a failed member: back out its unfinished work from its log and
//! release its retained locks. Restart light does this as the failed member's
//! only job; a member restarting normally does it for itself first.
//!
//! Order and crash windows (each step is safe to repeat):
//! 1. connected as the failed member (its retained locks are ours);
//! 2. back out losers (`backout.rs`: data, then CLR, then ABORT);
//! 3. release the retained locks one by one (a death here leaves the rest
//!    retained; the next recovery releases them);
//! 4. truncate the log (everything in it is now committed or aborted),
//!    archiving its committed transactions first if the plex keeps history
//!    (`history.rs`).
//!
//! Restart light then disconnects and completes the restart request.

use crate::backout::{backout, BackoutReport};
use crate::store::{Store, StoreError};
use crate::wal::LogWriter;
use cf_core::Member;
use std::path::Path;

/// What a recovery did.
#[derive(Clone, Copy, Debug, Default)]
pub struct RecoveryReport {
    pub backout: BackoutReport,
    pub released: u64,
}

pub fn recover(
    member: &Member,
    plex_dir: &Path,
    mut progress: impl FnMut(Step),
) -> anyhow::Result<RecoveryReport> {
    let mut report = RecoveryReport::default();
    let log = LogWriter::open(plex_dir, member.name(), false)?;
    match Store::open(plex_dir) {
        Ok(store) => {
            report.backout = backout(&log, &store, || {
                cf_core::crash::point("restart_light.backed_out_some")
            })?;
        }
        // No data file: nothing was ever changed, so nothing to back out.
        Err(StoreError::NotFound(_)) if log.scan()?.records.is_empty() => {}
        Err(e) => return Err(e.into()),
    }
    progress(Step::BackedOut(report.backout));
    cf_core::crash::point("restart_light.backed_out");
    report.released =
        member.release_all_held(|| cf_core::crash::point("restart_light.released_some"))? as u64;
    progress(Step::Released(report.released));
    // Archives the committed transactions first if the plex keeps history.
    log.truncate()?;
    Ok(report)
}

/// Progress of a recovery, for events.
#[derive(Clone, Copy, Debug)]
pub enum Step {
    BackedOut(BackoutReport),
    Released(u64),
}
