//! `stress`: hammer one resource from this process (placeholder, being written).
use anyhow::Result;
use clap::Args;
use std::process::ExitCode;

#[derive(Args)]
pub struct StressArgs {}

pub fn run(_plex: &cf_core::Plex, _a: StressArgs) -> Result<ExitCode> {
    anyhow::bail!("not yet written")
}
