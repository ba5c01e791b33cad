//! `detect-deadlocks`: one round of the deadlock detector now
//! (`cf_core::deadlock::detect_once`), as the members' monitors run it every
//! deadlock interval.

use anyhow::Result;
use cf_core::deadlock::{self, Waiting};
use cf_core::inspect::escape;
use cf_core::{Plex, Region};
use cf_harness::outln;
use clap::Args;
use serde_json::{json, Value};
use std::process::ExitCode;

#[derive(Args)]
pub struct DetectArgs {
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

fn waiting_json(w: &Waiting) -> Value {
    json!({ "member": escape(&w.name), "id": w.member, "holder": w.holder,
            "resource": escape(&w.resource.display()), "mode": w.mode.as_str(), "entry": w.entry })
}

pub fn detect(plex: &Plex, a: DetectArgs) -> Result<ExitCode> {
    let region = Region::open(plex)?;
    let d = deadlock::detect_once(&region, None)?;
    if a.json {
        let victims: Vec<Value> = d
            .victims
            .iter()
            .map(|v| {
                let mut o = waiting_json(&v.waiting);
                o["waited_ns"] = json!(v.waited.as_nanos() as u64);
                o["cycle"] = v.cycle.iter().map(waiting_json).collect();
                o
            })
            .collect();
        crate::print_json(&json!({
            "busy_pid": d.busy, "taken_over": d.taken_over, "waiting": d.waiting,
            "victims": victims, "rewoken": d.rewoken, "abandoned": d.abandoned,
        }));
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(pid) = d.busy {
        outln!("a round of the detector is running in process {pid}: nothing done");
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{} waiting request(s), {} deadlock victim(s) told{}",
        d.waiting,
        d.victims.len(),
        if d.taken_over {
            " (the claim was taken over from a dead detector)"
        } else {
            ""
        }
    );
    for v in &d.victims {
        let cycle: Vec<String> = v
            .cycle
            .iter()
            .map(|w| {
                format!(
                    "{} ({} {})",
                    escape(&w.name),
                    w.mode,
                    escape(&w.resource.display())
                )
            })
            .collect();
        outln!(
            "victim {}: waited {} ms; cycle {}",
            escape(&v.waiting.name),
            v.waited.as_millis(),
            cycle.join(" -> ")
        );
    }
    if d.rewoken + d.abandoned > 0 {
        outln!(
            "{} told victim(s) woken again, {} cycle(s) broken before they were checked",
            d.rewoken,
            d.abandoned
        );
    }
    Ok(ExitCode::SUCCESS)
}
