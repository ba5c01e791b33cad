//! `cfctl`: the operator's and experimenter's tool for a coupling-facility plex.

mod counts;
mod deadlocks;
mod demo;
mod display;
mod fence;
mod locks;
mod plex;
mod recovery_view;
mod report;

use cf_benches::bench;
use cf_harness::{sim, stress};
use clap::{CommandFactory, Parser, Subcommand};
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
The plex is --plex DIR, else $CF_PLEX, else /dev/shm/cf-plex-<uid>.",
    after_help = cf_harness::exit::TABLE
)]
pub(crate) struct Cli {
    /// Plex directory (default: $CF_PLEX, else /dev/shm/cf-plex-<uid>)
    #[arg(long, global = true, value_name = "DIR")]
    plex: Option<PathBuf>,
    /// Print one JSON document (the same as the command's own --json)
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the demo: three members, one killed inside a transaction, recovered by restart light
    Demo(demo::DemoArgs),
    /// Run N members, kill them from a seeded schedule, and report whether every invariant held
    ///
    /// Runs in a fresh directory under /dev/shm, removed at the end unless kept; with --plex DIR
    /// or $CF_PLEX, in that directory (its last component is created; it must hold no region),
    /// which is kept. A Ctrl-C (SIGINT, SIGTERM) stops the faults, lets the recoveries finish,
    /// stops the members normally and prints the partial report; a second one ends it at once.
    Sim(sim::SimArgs),
    /// Create a plex: its directory (0700, only the last component) and region file (0600,
    /// never over an existing one), refused if larger than the free space of its filesystem
    Create(plex::CreateArgs),
    /// Remove a plex's region (refuses while live members are connected, unless --force)
    Destroy(plex::DestroyArgs),
    /// Check the region's integrity and the invariants that hold at rest; on a live plex, a
    /// discrepancy that clears within the settle interval is an in-flight state, not damage
    Verify(plex::VerifyArgs),
    /// Show what the region holds now (without WHAT: the list of displays)
    Display(display::DisplayArgs),
    /// An activity report like RMF's CF activity: per interval and connector, request and
    /// contention rates, retained locks, waits
    Report(report::ReportArgs),
    /// Connect as a member, take locks, and hold them until SIGTERM/SIGINT
    #[command(after_help = locks::modes_help())]
    Hold(locks::HoldArgs),
    /// Connect as a member, make one try request, print the answer, disconnect
    ///
    /// Exit status: 0 granted, 2 contention, 3 retained, 1 error, 64 a command line that does not
    /// parse.
    #[command(after_help = locks::modes_help())]
    Try(locks::TryArgs),
    /// Clean up every member whose process is dead (retaining its modify locks)
    Cleanup(locks::CleanupArgs),
    /// Run one round of the deadlock detector now: in each cycle of lock requests waiting for
    /// each other, tell the youngest wait it is the victim (its request answers "deadlock")
    DetectDeadlocks(deadlocks::DetectArgs),
    /// Fence a member whose status update is missing: SIGKILL after the identity check, then normal recovery
    ///
    /// Exit status: 0 fenced (or already fenced), 2 not missing (a live member in the way, as
    /// try's contention: use --force), 1 error.
    Fence(fence::FenceArgs),
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
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    ///
    /// e.g. `cfctl completions bash > ~/.local/share/bash-completion/completions/cfctl`
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), generated from these definitions: `cfctl man | man -l -`
    Man,
}

fn main() -> ExitCode {
    // A region truncated under us: one line, not a silent exit 135.
    let _ = cf_core::install_sigbus_handler("cfctl");
    let cli: Cli = match cf_node::cli::parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let plex = cf_core::Plex::resolve(cli.plex.as_deref());
    // The sim and the demo make a fresh plex unless told where: --plex, and
    // for the sim $CF_PLEX too (the demo's embedded default stays fresh).
    let sim_plex = cli
        .plex
        .clone()
        .or_else(|| std::env::var_os("CF_PLEX").map(PathBuf::from));
    let j = cli.json;
    let result = match cli.cmd {
        Cmd::Demo(a) => demo::run(cli.plex.as_deref(), a),
        Cmd::Sim(mut a) => {
            a.json |= j;
            sim::run(sim_plex.as_deref(), a)
        }
        Cmd::Create(mut a) => {
            a.json |= j;
            plex::create(&plex, a)
        }
        Cmd::Destroy(a) => plex::destroy(&plex, a),
        Cmd::Verify(mut a) => {
            a.json |= j;
            plex::verify(&plex, a)
        }
        Cmd::Display(mut a) => {
            a.json |= j;
            display::run(&plex, a)
        }
        Cmd::Report(mut a) => {
            a.json |= j;
            report::run(&plex, a)
        }
        Cmd::Hold(mut a) => {
            a.json |= j;
            locks::hold(&plex, a)
        }
        Cmd::Try(mut a) => {
            a.json |= j;
            locks::try_once(&plex, a)
        }
        Cmd::Cleanup(mut a) => {
            a.json |= j;
            locks::cleanup(&plex, a)
        }
        Cmd::DetectDeadlocks(mut a) => {
            a.json |= j;
            deadlocks::detect(&plex, a)
        }
        Cmd::Fence(mut a) => {
            a.json |= j;
            fence::run(&plex, a)
        }
        Cmd::Stress(mut a) => {
            a.json |= j;
            stress::run(&plex, a)
        }
        Cmd::Bench(mut a) => {
            a.json |= j;
            bench::run(a)
        }
        Cmd::RestartLight { member } => {
            recovery_view::post(&plex, &member).map(|()| ExitCode::SUCCESS)
        }
        Cmd::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "cfctl", &mut out);
            cf_harness::out!("{}", String::from_utf8_lossy(&out));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Man => {
            let mut out = Vec::new();
            match clap_mangen::Man::new(Cli::command()).render(&mut out) {
                Ok(()) => {
                    cf_harness::out!("{}", String::from_utf8_lossy(&out));
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => Err(anyhow::anyhow!("rendering the man page: {e}")),
            }
        }
    };
    cf_harness::out::flush();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cfctl: {}", cf_core::error::one_line(e.chain()));
            cf_harness::exit::code(cf_harness::exit::of_error(&e))
        }
    }
}

pub(crate) use cf_harness::out::print_json;
