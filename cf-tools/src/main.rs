//! `cfctl`: the operator's and experimenter's tool for a coupling-facility plex.

mod demo;
mod display;
mod locks;
mod plex;
mod recovery_view;

use cf_benches::bench;
use cf_harness::{sim, stress};

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "cfctl",
    version,
    about = "Operate a shared-memory coupling facility (a \"plex\")",
    long_about = "Operate a shared-memory coupling facility (a \"plex\"): a directory holding the \
region file that stands in for a Parallel Sysplex coupling facility. Member processes take locks \
in it; when one is killed its modify locks are retained until it is recovered.\n\n\
The plex is --plex DIR, else $CF_PLEX, else /dev/shm/cf-plex-<uid>."
)]
struct Cli {
    /// Plex directory (default: $CF_PLEX, else /dev/shm/cf-plex-<uid>)
    #[arg(long, global = true, value_name = "DIR")]
    plex: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the demo: three members, one killed inside a transaction, recovered by restart light
    Demo(demo::DemoArgs),
    /// Run N members, kill them from a seeded schedule, and report whether every invariant held
    Sim(sim::SimArgs),
    /// Create a plex: its directory (0700) and region file (0600, never over an existing one)
    Create(plex::CreateArgs),
    /// Remove a plex's region (refuses while live members are connected, unless --force)
    Destroy(plex::DestroyArgs),
    /// Check the region's integrity and the invariants that hold at rest
    Verify(plex::VerifyArgs),
    /// Show what the region holds now
    Display(display::DisplayArgs),
    /// Connect as a member, take locks, and hold them until SIGTERM/SIGINT
    Hold(locks::HoldArgs),
    /// Connect as a member, make one try request, print the answer, disconnect
    ///
    /// Exit status: 0 granted, 2 contention, 3 retained, 1 error.
    Try(locks::TryArgs),
    /// Clean up every member whose process is dead (retaining its modify locks)
    Cleanup(locks::CleanupArgs),
    /// Post a restart request for a failed-persistent member by hand
    RestartLight {
        /// The failed member
        member: String,
    },
    /// Hammer resources from this process and check mutual exclusion in a shared counter file
    Stress(stress::StressArgs),
    /// Measure the lock paths beside their peers (bare CAS, robust mutex, fcntl, flock, SysV
    /// semaphore), across two processes, and recovery after SIGKILL; print a table or --json
    ///
    /// Works in a fresh directory under /dev/shm (not the plex), removed at the end.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let plex = cf_core::Plex::resolve(cli.plex.as_deref());
    let result = match cli.cmd {
        Cmd::Demo(a) => demo::run(cli.plex.as_deref(), a),
        Cmd::Sim(a) => sim::run(cli.plex.as_deref(), a),
        Cmd::Create(a) => plex::create(&plex, a),
        Cmd::Destroy(a) => plex::destroy(&plex, a),
        Cmd::Verify(a) => plex::verify(&plex, a),
        Cmd::Display(a) => display::run(&plex, a),
        Cmd::Hold(a) => locks::hold(&plex, a),
        Cmd::Try(a) => locks::try_once(&plex, a),
        Cmd::Cleanup(a) => locks::cleanup(&plex, a),
        Cmd::Stress(a) => stress::run(&plex, a),
        Cmd::Bench(a) => bench::run(a),
        Cmd::RestartLight { member } => {
            recovery_view::post(&plex, &member).map(|()| ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cfctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) use cf_harness::out::print_json;
