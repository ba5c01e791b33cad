//! `stress`: hammer resources from this process and check mutual exclusion in
//! a shared counter file.
//!
//! Every iteration takes a lock on each resource (in sorted order, so stress
//! processes never deadlock one another), updates the counter file, and
//! releases the locks. The counter file is 16 bytes, two native-endian `u64`
//! words mapped `MAP_SHARED` by every stress process that names it and touched
//! only through atomics:
//!
//! * word 0, `inside`: who is in the critical section now. An exclusive (or
//!   modify) holder adds [`WRITER`] and requires nobody else inside, both
//!   when it enters and when it leaves; a share holder adds 1 and requires no
//!   writer inside. Anything else is a mutual-exclusion violation: the run
//!   stops with exit status 5 (an invariant broke).
//! * word 1, `total`: iterations done by everyone. An exclusive holder updates
//!   it with a separate load and store (`--spin` pause instructions apart, to
//!   widen the window), as unprotected code would, so a lost update shows up
//!   as a total short of the sum of the iterations; share holders, which
//!   legitimately overlap, add atomically.

use anyhow::{bail, Context, Result};
use cf_core::shm::mapping::{Access, SharedMap};
use cf_core::{LockId, Member, Mode, Plex, Region, Resource};
use clap::{Args, ValueEnum};
use serde_json::json;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What an exclusive holder adds to `inside` (share holders add 1).
const WRITER: u64 = 1 << 32;
/// Size of the counter file: `inside` and `total`.
const COUNTER_LEN: u64 = 16;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StressMode {
    /// Exclusive (released if this process dies)
    X,
    /// Share: stress processes in this mode overlap each other, never a writer
    S,
    /// Exclusive for modification (retained if this process dies)
    Modify,
}

impl StressMode {
    fn mode(self) -> Mode {
        match self {
            StressMode::X => Mode::Exclusive,
            StressMode::S => Mode::Share,
            StressMode::Modify => Mode::Modify,
        }
    }
}

/// Example and exit status, shown by `-h` and `--help`.
macro_rules! example {
    () => {
        "Example: two processes that must never be inside together:
  cfctl stress --member A --resource acct-1 --resource acct-2 --iterations 20000 --counter /dev/shm/ctr &
  cfctl stress --member B --resource acct-1 --resource acct-2 --iterations 20000 --counter /dev/shm/ctr

Exit status: 0 done (a one-line summary with the counter total is printed), 1 error, \
5 mutual-exclusion violation (an invariant broke), 128+N stopped early by signal N (SIGTERM, SIGINT: locks released, \
disconnected, summary printed)."
    };
}

#[derive(Args)]
#[command(
    after_help = example!(),
    after_long_help = concat!(
        "Connects as a member and, N times: locks every --resource (in sorted order, waiting up \
to --timeout-ms for each), updates a shared counter file that only the lock holders may touch, \
unlocks. Run several stress processes on the same resources and counter file to test mutual \
exclusion across real processes, or on distinct resources that hash to one lock table entry to \
test false contention.

The counter file holds two 64-bit words, `inside` and `total`, mapped shared. A holder in \
exclusive or modify mode requires nobody else inside when it enters and when it leaves, and \
updates `total` with a plain load and store (--spin pauses apart), so an overlap shows as a \
violation and a lost update as a short total. A share holder only requires that no exclusive \
holder is inside.

A reconnect under the name of a failed member takes its retained locks back; stress keeps no \
log to recover from, so it releases them before it starts (and says so).

",
        example!()
    )
)]
pub struct StressArgs {
    /// Member name to connect as
    #[arg(long)]
    member: String,
    /// Resource to lock in every iteration (repeatable; taken in sorted order)
    #[arg(long = "resource", value_name = "RES", required = true)]
    resources: Vec<String>,
    /// Iterations: lock all, update the counter, unlock all
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    iterations: u64,
    /// Shared counter file (16 bytes; created 0600 if missing); give every stress process the same one
    #[arg(long, value_name = "FILE")]
    counter: PathBuf,
    /// Lock mode for every resource
    #[arg(long, value_enum, default_value_t = StressMode::X)]
    mode: StressMode,
    /// How long to wait for each lock held by a live member, in milliseconds
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    timeout_ms: u64,
    /// Pause instructions inside the critical section (widens the window an overlap needs)
    #[arg(long, value_name = "N", default_value_t = 32)]
    spin: u32,
    /// Print the summary as JSON
    #[arg(long)]
    pub json: bool,
}

/// The shared counter file, mapped.
struct Counter {
    map: SharedMap,
}

impl Counter {
    /// Open (or create, mode 0600, never through a symlink) the counter file
    /// and map it shared.
    fn open(path: &Path) -> Result<Counter> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .with_context(|| format!("opening counter file {}", path.display()))?;
        let meta = file
            .metadata()
            .with_context(|| format!("reading counter file {}", path.display()))?;
        if !meta.is_file() {
            bail!("counter file {} is not a regular file", path.display());
        }
        match meta.len() {
            // Fresh (or being made by another stress process: extending a file
            // to the length it already has changes nothing).
            0 => file
                .set_len(COUNTER_LEN)
                .with_context(|| format!("sizing counter file {}", path.display()))?,
            COUNTER_LEN => {}
            n => bail!(
                "{} is not a counter file: it has {n} bytes, a counter file has {COUNTER_LEN}",
                path.display()
            ),
        }
        let map = SharedMap::map(&file, COUNTER_LEN, Access::ReadWrite)
            .with_context(|| format!("mapping counter file {}", path.display()))?;
        Ok(Counter { map })
    }

    /// Word `i` (< 2) of the file, which is mapped whole (`COUNTER_LEN` =
    /// 16 bytes): a failed check is a bug here, not bad input.
    fn word(&self, i: usize) -> &AtomicU64 {
        match self.map.atomic(8 * i) {
            Ok(w) => w,
            Err(e) => panic!("internal: counter word {i}: {e}"),
        }
    }

    fn inside(&self) -> &AtomicU64 {
        self.word(0)
    }

    fn total(&self) -> &AtomicU64 {
        self.word(1)
    }

    /// Enter the critical section; `Err(seen)` (after stepping out again) if
    /// someone incompatible was inside.
    fn enter(&self, exclusive: bool) -> Result<(), u64> {
        let add = if exclusive { WRITER } else { 1 };
        let seen = self.inside().fetch_add(add, Ordering::AcqRel);
        let violated = if exclusive { seen != 0 } else { seen >= WRITER };
        if violated {
            self.inside().fetch_sub(add, Ordering::AcqRel);
            return Err(seen);
        }
        Ok(())
    }

    /// Count one iteration: a plain load and store for an exclusive holder
    /// (lost updates would show), `spin` pause instructions apart to widen
    /// the window an overlap needs; an atomic add for a share holder.
    fn count(&self, exclusive: bool, spin: u32) {
        if exclusive {
            let t = self.total().load(Ordering::Relaxed);
            for _ in 0..spin {
                std::hint::spin_loop();
            }
            self.total().store(t + 1, Ordering::Relaxed);
        } else {
            self.total().fetch_add(1, Ordering::Relaxed);
            for _ in 0..spin {
                std::hint::spin_loop();
            }
        }
    }

    /// Leave the critical section; `Err(seen)` if someone incompatible came
    /// in while we were inside.
    fn leave(&self, exclusive: bool) -> Result<(), u64> {
        let add = if exclusive { WRITER } else { 1 };
        let seen = self.inside().fetch_sub(add, Ordering::AcqRel);
        let violated = if exclusive {
            seen != WRITER
        } else {
            seen >= WRITER
        };
        if violated {
            Err(seen - add)
        } else {
            Ok(())
        }
    }
}

/// Describe an `inside` value for a violation message.
fn describe_inside(v: u64) -> String {
    let writers = v / WRITER;
    let readers = v % WRITER;
    format!("{writers} exclusive and {readers} share holder(s) were inside")
}

/// Stop cleanly between iterations (locks released, disconnected) on
/// SIGTERM or SIGINT: the workspace's one signal helper.
fn stop_on_signals() -> Result<cf_node::signals::StopFlag> {
    cf_node::signals::StopFlag::install().context("installing signal handlers")
}

/// A mutual-exclusion violation: an invariant broke (exit status 5).
#[derive(Debug)]
struct Violation(String);

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Violation {}

/// What a run did.
struct Run {
    iterations: u64,
    interrupted: Option<i32>,
}

/// The iterations. Any lock still held when this returns is released by the
/// holder's drop.
fn hammer(
    holder: &mut cf_core::Holder,
    resources: &[String],
    a: &StressArgs,
    counter: &Counter,
    stop: &cf_node::signals::StopFlag,
) -> Result<Run> {
    let mode = a.mode.mode();
    let exclusive = mode.is_exclusive();
    let timeout = Duration::from_millis(a.timeout_ms);
    let mut ids: Vec<LockId> = Vec::with_capacity(resources.len());
    for i in 0..a.iterations {
        let sig = stop.signal();
        if sig != 0 {
            return Ok(Run {
                iterations: i,
                interrupted: Some(sig),
            });
        }
        for r in resources {
            match holder.lock(r.as_bytes(), mode, timeout) {
                Ok(id) => ids.push(id),
                Err(e) => bail!("iteration {}: could not take {r} ({mode}): {e}", i + 1),
            }
        }
        let violation = match counter.enter(exclusive) {
            Err(seen) => Some(("entering", seen)),
            Ok(()) => {
                counter.count(exclusive, a.spin);
                counter.leave(exclusive).err().map(|seen| ("leaving", seen))
            }
        };
        if let Some((when, seen)) = violation {
            return Err(Violation(format!(
                "MUTUAL EXCLUSION VIOLATED in iteration {}: holding {} ({mode}) as {}, found on \
                 {when} that {} (counter word `inside`: {seen:#x} besides us)",
                i + 1,
                resources.join(", "),
                a.member,
                describe_inside(seen)
            ))
            .into());
        }
        for id in ids.drain(..).rev() {
            holder.unlock(id)?;
        }
    }
    Ok(Run {
        iterations: a.iterations,
        interrupted: None,
    })
}

pub fn run(plex: &Plex, a: StressArgs) -> Result<ExitCode> {
    let mut resources = a.resources.clone();
    for r in &resources {
        if Resource::new(r.as_bytes()).is_none() {
            bail!(
                "bad resource {r:?}: a resource name has 1 to {} bytes",
                cf_core::layout::MAX_RESOURCE
            );
        }
    }
    // One order for everyone: no deadlock between stress processes. A member
    // asking twice for one resource would wait for itself: once is enough.
    resources.sort();
    resources.dedup();
    cf_core::connector::check_name(&a.member)?;
    let counter = Counter::open(&a.counter)?;
    let stop = stop_on_signals()?;
    let region = Arc::new(Region::open(plex)?);
    if resources.len() as u64 > region.records_per_member() as u64 {
        bail!(
            "{} resources, but a member of this region holds at most {} locks",
            resources.len(),
            region.records_per_member()
        );
    }
    // A lock-only connection: refused under a failed member's name.
    let member = Member::connect(region, &a.member)?;
    let started = Instant::now();
    let outcome = member
        .holder()
        .map_err(anyhow::Error::from)
        .and_then(|mut holder| hammer(&mut holder, &resources, &a, &counter, &stop));
    let elapsed = started.elapsed().as_secs_f64();
    let disconnected = member.disconnect();
    let run = match outcome {
        Ok(r) => r,
        Err(e) => {
            if let Some(v) = e.downcast_ref::<Violation>() {
                eprintln!("cfctl: {v}");
                return Ok(crate::exit::code(crate::exit::INVARIANT));
            }
            return Err(e);
        }
    };
    disconnected.context("disconnecting")?;
    let total = counter.total().load(Ordering::Relaxed);
    let per_second = if elapsed > 0.0 {
        run.iterations as f64 / elapsed
    } else {
        0.0
    };
    let signal_name = run.interrupted.map(|s| {
        nix::sys::signal::Signal::try_from(s)
            .map(|s| s.as_str().to_string())
            .unwrap_or_else(|_| format!("signal {s}"))
    });
    if a.json {
        crate::out::print_json(&json!({
            "member": a.member,
            "pid": std::process::id(),
            "mode": a.mode.mode().as_str(),
            "resources": resources,
            "iterations_requested": a.iterations,
            "iterations": run.iterations,
            "seconds": elapsed,
            "iterations_per_second": per_second,
            "counter": a.counter.display().to_string(),
            "counter_total": total,
            "violations": 0,
            "interrupted": signal_name,
        }));
    } else {
        let mut line = format!(
            "stress: {} did {} of {} iteration(s) on {} resource(s) in {} mode in {:.3} s \
             ({:.0}/s); counter total now {total}; no mutual-exclusion violation",
            a.member,
            run.iterations,
            a.iterations,
            resources.len(),
            a.mode.mode(),
            elapsed,
            per_second
        );
        if let Some(s) = &signal_name {
            line.push_str(&format!("; stopped by {s}"));
        }
        crate::outln!("{line}");
    }
    Ok(match run.interrupted {
        Some(sig) => ExitCode::from(128u8.saturating_add(sig.clamp(0, 127) as u8)),
        None => ExitCode::SUCCESS,
    })
}
