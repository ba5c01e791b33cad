//! `cfctl fence MEMBER`: the operator's isolation of a hung member (the
//! plex's `--isolate prompt`): mark its heartbeat fenced, record `fenced`,
//! SIGKILL it through a pidfd checked against its recorded start time
//! (`cf_core::connector::liveness::fence`); its death then goes the normal
//! way (a live member detects it, cleans up, restart light recovers it).

use anyhow::{bail, Result};
use cf_core::connector::liveness::{self, Fence};
use cf_core::events::{self, EventData};
use cf_core::{inspect, Plex, Region};
use cf_harness::{exit, outln};
use clap::Args;
use serde_json::json;
use std::process::ExitCode;

#[derive(Args)]
pub struct FenceArgs {
    /// The member to fence
    member: String,
    /// Fence it even if its heartbeat is fresh (or it has none)
    #[arg(long)]
    force: bool,
    /// Print the result as JSON (also: cfctl --json fence)
    #[arg(long)]
    pub json: bool,
}

pub fn run(plex: &Plex, a: FenceArgs) -> Result<ExitCode> {
    let region = Region::open(plex)?;
    let Some(m) = inspect::members(&region)?
        .into_iter()
        .find(|m| m.name == a.member && m.state.has_process())
    else {
        bail!("no connected member named {}", a.member);
    };
    let interval = liveness::settings(&region).interval;
    let out = liveness::fence(&region, m.id, m.generation, interval, a.force, |age, p| {
        events::record(
            &region,
            &a.member,
            Some("operator"),
            EventData::Fenced {
                heartbeat_age_ms: age,
                pid: p.pid,
                by_operator: true,
            },
        )
    })?;
    let (word, code) = match out {
        Fence::Fenced { .. } => ("fenced", exit::SUCCESS),
        Fence::AlreadyFenced => ("already-fenced", exit::SUCCESS),
        // Like `try`'s contention: a live member is in the way.
        Fence::NotMissing => ("not-missing", exit::CONTENTION),
        Fence::Gone => ("gone", exit::ERROR),
    };
    if a.json {
        crate::print_json(&json!({"member": a.member, "pid": m.pid, "outcome": word}));
    } else {
        match out {
            Fence::Fenced { age_ms } => outln!(
                "{} (pid {}) fenced after {age_ms} ms without a heartbeat; a live member recovers it",
                a.member, m.pid
            ),
            Fence::AlreadyFenced => outln!("{} was already fenced (killed again)", a.member),
            Fence::NotMissing => outln!(
                "{}'s status update is not missing (heartbeat {}); use --force to fence it anyway",
                a.member,
                m.heartbeat_age_ms
                    .map_or_else(|| "none".into(), |x| format!("{x} ms old"))
            ),
            Fence::Gone => bail!("{}'s process is gone: nothing fenced", a.member),
        }
    }
    Ok(exit::code(code))
}
