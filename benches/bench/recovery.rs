//! Recovery: how long from `SIGKILL` of a member holding N modify locks until
//! its death is noticed, and until all its retained locks are released
//! (restart light included), measured through the region's own events.
//!
//! A monitoring member (`cf-node run --workload idle --member MON`) watches
//! the plex. For each repetition a holder process (this binary, hidden
//! `--worker`) connects as HOLD, takes N distinct modify locks, says
//! "ready" and waits. It is killed at t0 (`now_ns()` just before `kill`);
//! MON's `detected` event (time it noticed) - t0 is the detection time, and
//! restart light's `terminated_normally` event - t0 the release time.
//!
//! Beside them, two floors: `pidfd_floor` (SIGKILL of a bare child to its
//! pidfd polling readable: the kernel's part of detection) and
//! `spawn_floor` (start and reap `cf-node restart-light` for a member that
//! needs none: it maps and validates the region and ends, the fixed cost of
//! starting restart light).

use super::guard::{check_interrupted, last_line, Proc};
use super::stats::Stats;
use super::Row;
use anyhow::{bail, Context, Result};
use cf_core::connector::now_ns;
use cf_core::events::{self, EventData, EventKind};
use cf_core::{CreateOptions, Member, Mode, Plex, Region, Sizes};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MONITOR: &str = "MON";
const HOLDER: &str = "HOLD";
/// The monitor re-reads the connector table every 20 ms; after this long it
/// is certainly watching a newly connected member through a pidfd.
const SETTLE: Duration = Duration::from_millis(60);

/// Victims: how many locks, how big a buffer pool (MiB, allocated and
/// touched before the locks are taken), how many repetitions of each.
pub struct Plan {
    pub sizes: Vec<(u64, usize, usize)>,
    pub floor_reps: usize,
}

/// The steps of a recovery, as events of the region, in pipeline order
/// (the harness's list: the sim reports the same steps).
pub use cf_harness::sim::check::STEPS;

/// One line of the recovery table (all times in ns).
#[derive(Debug, Serialize)]
pub struct RecoveryRow {
    pub n: u64,
    /// The victim's buffer pool, MiB.
    pub pool_mib: usize,
    pub reps: usize,
    /// To the holder's pidfd polling readable in this process: the kernel
    /// has finished the dead process's exit (it tears down its mappings
    /// first, so this grows with the pages it touched).
    pub exited: Stats,
    pub detect: Stats,
    /// To `cleaned_up`: the dead member's non-modify locks released, the
    /// modify ones marked retained, by the member that noticed.
    pub cleaned: Stats,
    /// To `restart_light_started`.
    pub started: Stats,
    pub released: Stats,
    /// Every step of [`STEPS`], after SIGKILL.
    pub steps: Vec<(&'static str, Stats)>,
    /// Restart light's peak RSS (`VmHWM`, KiB), from `terminated_normally`.
    pub light_rss_kib: Stats,
    /// Its resident memory at the end without the shared region (KiB).
    pub light_own_kib: Stats,
    /// (released median - previous N's) / (N - previous N), same pool.
    pub marginal_ns_per_lock: Option<f64>,
}

/// What the hidden holder worker is told.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HoldSpec {
    pub plex: PathBuf,
    pub member: String,
    pub count: u64,
    /// A buffer pool of this many MiB, touched before the locks are taken.
    #[serde(default)]
    pub pool_mib: usize,
}

pub fn run(dir: &Path, plan: &Plan) -> Result<(Vec<Row>, Vec<RecoveryRow>)> {
    let exe = std::env::current_exe().context("finding the cfctl binary")?;
    let cf_node = exe.with_file_name("cf-node");
    if !cf_node.is_file() {
        bail!(
            "{} not found next to cfctl (build the workspace: cargo build --release)",
            cf_node.display()
        );
    }
    let max_n = plan.sizes.iter().map(|s| s.0).max().unwrap_or(64);
    let records = max_n.div_ceil(64) * 64;
    let records = u32::try_from(records.max(64)).context("too many locks for one member")?;
    // A table far larger than N: the holder's own locks then rarely share
    // an entry (a request on an entry this member already holds takes the
    // latched path, which today scans all of the member's records, so
    // taking N locks in a small table costs O(N^2)). Not larger than needed:
    // every table page the holder touched is torn down when it is killed.
    let lock_entries = (max_n * 64).next_power_of_two().clamp(1 << 16, 1 << 26) as u32;
    let plex = Plex {
        dir: dir.join("plex-recovery"),
    };
    let region = Arc::new(Region::create(
        &plex,
        &CreateOptions {
            sizes: Sizes {
                lock_entries,
                members: 4,
                records_per_member: records,
            },
            group_access: false,
        },
    )?);

    let mut rows = Vec::new();
    rows.push(floor_row(
        "pidfd_floor",
        "SIGKILL of a bare child (sleep) to its pidfd polling readable",
        &pidfd_floor(plan.floor_reps)?,
    ));
    rows.push(floor_row(
        "spawn_floor",
        "start + reap cf-node restart-light for a member needing none (maps the region)",
        &spawn_floor(&cf_node, &plex.dir, plan.floor_reps)?,
    ));

    let mon_err = dir.join("monitor.stderr");
    let mut mon = start_monitor(&cf_node, &plex.dir, &mon_err)?;
    let mut table: Vec<RecoveryRow> = Vec::new();
    for &(n, pool_mib, reps) in &plan.sizes {
        let (mut exited, mut detect, mut cleaned, mut started, mut released) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut steps: Vec<Vec<f64>> = vec![Vec::new(); STEPS.len()];
        let mut rss = Vec::new();
        let mut own = Vec::new();
        for _ in 0..reps {
            check_interrupted()?;
            if let Some(st) = mon.try_wait()? {
                bail!(
                    "the monitoring member exited ({st}): {}",
                    last_line(&std::fs::read_to_string(&mon_err).unwrap_or_default())
                );
            }
            let t = one(&exe, &region, &plex.dir, n, pool_mib)?;
            rss.push(t.light_rss_kib as f64);
            own.push(t.light_own_kib as f64);
            for (i, v) in t.steps.iter().enumerate() {
                steps[i].push(*v as f64);
            }
            exited.push(t.exited as f64);
            detect.push(t.detected as f64);
            cleaned.push(t.cleaned as f64);
            started.push(t.started as f64);
            released.push(t.released as f64);
        }
        let released = Stats::of(&released);
        let marginal = table
            .iter()
            .rev()
            .find(|p: &&RecoveryRow| p.pool_mib == pool_mib && p.n < n)
            .map(|p| (released.median - p.released.median) / (n as f64 - p.n as f64));
        table.push(RecoveryRow {
            n,
            pool_mib,
            reps,
            light_rss_kib: Stats::of(&rss),
            light_own_kib: Stats::of(&own),
            steps: STEPS
                .iter()
                .zip(&steps)
                .map(|((_, name), v)| (*name, Stats::of(v)))
                .collect(),
            exited: Stats::of(&exited),
            detect: Stats::of(&detect),
            cleaned: Stats::of(&cleaned),
            started: Stats::of(&started),
            released,
            marginal_ns_per_lock: marginal,
        });
    }
    mon.terminate(Duration::from_secs(5))?;

    for r in &table {
        rows.push(recovery_row(
            format!("recovery_detect_n{}_pool{}m", r.n, r.pool_mib),
            format!(
                "{} modify locks, {} MiB pool: SIGKILL to `detected`",
                r.n, r.pool_mib
            ),
            r.detect.clone(),
        ));
        rows.push(recovery_row(
            format!("recovery_released_n{}_pool{}m", r.n, r.pool_mib),
            format!(
                "{} modify locks, {} MiB pool: SIGKILL to `terminated_normally` (all released)",
                r.n, r.pool_mib
            ),
            r.released.clone(),
        ));
    }
    Ok((rows, table))
}

fn recovery_row(name: String, what: String, ns: Stats) -> Row {
    Row {
        group: "recovery",
        name,
        what,
        ops_per_s: 1e9 / ns.median,
        ns,
        iters_per_rep: 1,
    }
}

fn floor_row(name: &str, what: &str, samples: &[f64]) -> Row {
    let ns = Stats::of(samples);
    Row {
        group: "floor",
        name: name.into(),
        what: what.into(),
        ops_per_s: 1e9 / ns.median,
        ns,
        iters_per_rep: 1,
    }
}

fn start_monitor(cf_node: &Path, plex: &Path, err: &Path) -> Result<Proc> {
    let err_file = std::fs::File::create(err).context("creating the monitor's stderr file")?;
    let mut cmd = Command::new(cf_node);
    cmd.arg("run")
        .arg("--workload")
        .arg("idle")
        .arg("--plex")
        .arg(plex)
        .arg("--member")
        .arg(MONITOR)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(err_file);
    let mut mon = Proc::spawn(cmd, "the monitoring member (cf-node run)")?;
    let line = mon
        .read_line(Duration::from_secs(10))
        .with_context(|| last_line(&std::fs::read_to_string(err).unwrap_or_default()))?;
    if !line.contains("running") {
        bail!("the monitoring member said {line:?}");
    }
    Ok(mon)
}

/// Times of one kill, in ns after t0.
struct Times {
    exited: u64,
    detected: u64,
    cleaned: u64,
    started: u64,
    released: u64,
    /// Every step of [`STEPS`].
    steps: Vec<u64>,
    light_rss_kib: u64,
    light_own_kib: u64,
}

/// One kill of a holder of `n` modify locks with a `pool_mib` buffer pool.
fn one(exe: &Path, region: &Region, plex: &Path, n: u64, pool_mib: usize) -> Result<Times> {
    let spec = super::WorkerSpec::Hold(HoldSpec {
        plex: plex.to_path_buf(),
        member: HOLDER.into(),
        count: n,
        pool_mib,
    });
    let mut cmd = Command::new(exe);
    cmd.arg("bench")
        .arg("--worker")
        .arg(serde_json::to_string(&spec)?)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut holder = Proc::spawn(cmd, "the holder (bench worker)")?;
    let ready = holder.read_line(Duration::from_secs(60) + Duration::from_micros(200 * n));
    let line = match ready {
        Ok(l) => l,
        Err(e) => {
            holder.kill()?;
            bail!("{e:#}: {}", holder.stderr_tail());
        }
    };
    if line.trim() != format!("ready {n}") {
        bail!("the holder said {line:?}");
    }
    std::thread::sleep(SETTLE);
    // Our own pidfd on the holder: when the kernel has finished its exit.
    let fd = cf_node::pidfd::open(holder.pid()).context("pidfd_open on the holder")?;
    let from = events::next_seq(region);
    let t0 = now_ns();
    // SAFETY: kill takes a PID and a signal; the holder is not reaped yet,
    // so its PID still names it.
    if unsafe { libc::kill(holder.pid() as libc::pid_t, libc::SIGKILL) } != 0 {
        return Err(std::io::Error::last_os_error()).context("killing the holder");
    }
    let mut exited = None;
    let exit_deadline = Instant::now() + Duration::from_secs(60);
    while exited.is_none() && Instant::now() < exit_deadline {
        if !cf_node::pidfd::poll_readable(&[&fd], Duration::from_millis(100))?.is_empty() {
            exited = Some(now_ns().saturating_sub(t0));
        }
    }
    let exited = exited.context("the killed holder did not exit within 60 s")?;
    holder.kill()?;

    let deadline = Instant::now() + Duration::from_secs(60) + Duration::from_micros(50 * n);
    loop {
        check_interrupted()?;
        let evs = events::read_since(region, from);
        let mine = |k: EventKind| evs.iter().find(|e| e.kind() == k && e.member == HOLDER);
        if let Some(EventData::RestartLightFailed { status, .. }) =
            mine(EventKind::RestartLightFailed).map(|e| e.data)
        {
            bail!("restart light of {HOLDER} failed (status {status})");
        }
        let ended = mine(EventKind::TerminatedNormally).and_then(|e| match e.data {
            EventData::TerminatedNormally {
                peak_rss_kib,
                rss_without_region_kib,
                ..
            } => Some((e.time_ns, peak_rss_kib, rss_without_region_kib)),
            _ => None,
        });
        if let Some((ended_ns, peak_rss_kib, rss_without_region_kib)) = ended {
            let at = |k: EventKind| {
                mine(k)
                    .map(|e| e.time_ns.saturating_sub(t0))
                    .with_context(|| {
                        format!(
                            "restart light ended but no `{}` event was recorded",
                            k.as_str()
                        )
                    })
            };
            let released = match mine(EventKind::Released).map(|e| e.data) {
                Some(EventData::Released { locks }) => locks,
                _ => 0,
            };
            if released != n {
                bail!("restart light released {released} retained locks, expected {n}");
            }
            let mut steps = Vec::with_capacity(STEPS.len());
            for (k, _) in STEPS {
                steps.push(at(k)?);
            }
            return Ok(Times {
                steps,
                light_rss_kib: peak_rss_kib,
                light_own_kib: rss_without_region_kib,
                exited,
                detected: at(EventKind::Detected)?,
                cleaned: at(EventKind::CleanedUp)?,
                started: at(EventKind::RestartLightStarted)?,
                released: ended_ns.saturating_sub(t0),
            });
        }
        if Instant::now() > deadline {
            bail!("{HOLDER} with {n} locks was not recovered within the time allowed");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Hidden worker: connect as the holder, take the locks, say so, wait.
pub fn hold(spec: &HoldSpec) -> Result<()> {
    let region = Arc::new(Region::open(&Plex {
        dir: spec.plex.clone(),
    })?);
    // The victim's memory: what the kernel tears down after its death.
    let mut pool = vec![0u8; spec.pool_mib << 20];
    for page in pool.chunks_mut(4096) {
        page[0] = 1;
    }
    std::hint::black_box(&pool);
    let member = Member::connect(region.clone(), &spec.member)?;
    // Its liveness word, as a cf-node member has it.
    let liveness = match cf_core::connector::liveness::LivenessThread::start(
        region,
        member.id(),
        member.generation(),
        spec.member.clone(),
    ) {
        Ok(l) => l,
        Err(e) => {
            let _ = member.disconnect();
            bail!("starting the liveness thread: {e}");
        }
    };
    let mut h = member.holder()?;
    for i in 0..spec.count {
        let r = format!("r{i}");
        if let Err(e) = h.lock(r.as_bytes(), Mode::Modify, Duration::from_secs(10)) {
            bail!("{r}: {e}");
        }
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready {}", spec.count)?;
    out.flush()?;
    // Wait to be killed (or for the parent to close our stdin).
    let mut buf = [0u8; 64];
    loop {
        match std::io::stdin().read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    drop(h);
    liveness.stop();
    member.disconnect()?;
    drop(pool);
    Ok(())
}

fn pidfd_floor(reps: usize) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(reps);
    for _ in 0..reps {
        check_interrupted()?;
        let mut cmd = Command::new("sleep");
        cmd.arg("100")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut p = Proc::spawn_plain(cmd, "sleep")?;
        let fd = cf_node::pidfd::open(p.pid()).context("pidfd_open")?;
        // Let it reach its sleep.
        std::thread::sleep(Duration::from_millis(2));
        let t = Instant::now();
        // SAFETY: kill takes a PID and a signal; the child is not reaped
        // yet, so the PID still names it.
        if unsafe { libc::kill(p.pid() as libc::pid_t, libc::SIGKILL) } != 0 {
            return Err(std::io::Error::last_os_error()).context("kill");
        }
        let ready = cf_node::pidfd::poll_readable(&[&fd], Duration::from_secs(5))?;
        let dt = t.elapsed();
        p.kill()?;
        if ready.is_empty() {
            bail!("a killed child's pidfd did not poll readable within 5 s");
        }
        out.push(dt.as_nanos() as f64);
    }
    Ok(out)
}

fn spawn_floor(cf_node: &Path, plex: &Path, reps: usize) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(reps);
    for _ in 0..reps {
        check_interrupted()?;
        let mut cmd = Command::new(cf_node);
        cmd.arg("restart-light")
            .arg("--plex")
            .arg(plex)
            .arg("--member")
            .arg("NOSUCH")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let t = Instant::now();
        let mut p = Proc::spawn_plain(cmd, "cf-node restart-light")?;
        let st = p.wait_or_kill(Duration::from_secs(10))?;
        let dt = t.elapsed();
        match st {
            Some(st) if st.success() => out.push(dt.as_nanos() as f64),
            Some(st) => bail!("cf-node restart-light failed ({st}): {}", p.stderr_tail()),
            None => bail!("cf-node restart-light did not end within 10 s"),
        }
    }
    Ok(out)
}
