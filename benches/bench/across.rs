//! Across processes: one or two worker processes (this binary, started with
//! a hidden `--worker` spec), each pinned to its own CPU, measuring
//!
//! * aggregate throughput of acquire + release on disjoint resources (one
//!   each) and on one shared resource, for the product (exclusive), the
//!   robust pthread mutex and fcntl OFD locks, and the one-process figure
//!   of the same loop;
//! * the hand-off latency of the product's exclusive lock passed back and
//!   forth between the two processes (ping-pong).
//!
//! The workers meet at barriers in a shared control file; each repetition
//! runs until worker 0 raises the stop word after the repetition time, so
//! both count operations over the same window. Repetition 0 is the warm-up.
//!
//! The ping-pong walks a ring of three locks: each worker holds one and
//! waits for the next, which the other holds, then releases its own. The two
//! can never pass each other, so every acquisition waits for a release by
//! the other process: hand-off time = elapsed / acquisitions of both.

use super::guard::{check_interrupted, last_line, pin_to_cpu, Proc, ShmFile};
use super::peers::{OfdLock, RobustMutex};
use super::stats::{Method, Stats};
use super::Row;
use anyhow::{bail, Context, Result};
use cf_core::{CreateOptions, Member, Mode, Plex, Region, Sizes};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Every waiting request times out after this: far beyond any hand-off.
const WAIT: Duration = Duration::from_secs(10);
/// Operations between two looks at the clock or the stop word.
const BATCH: u64 = 32;
/// Control file words (byte offsets, one cache line each).
const CTL_BARRIER: usize = 0;
const CTL_STOP: usize = 128;
/// The word the spinning floor passes back and forth.
const CTL_TURN: usize = 256;
/// Offsets of the robust mutexes in their file.
const MUTEX_STRIDE: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    Cf,
    Robust,
    Ofd,
    /// A bare word in a shared file, passed by spinning (ping-pong only).
    Spin,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Shape {
    /// Each worker its own resource (one worker: the one-process figure).
    Disjoint,
    /// Both workers the same resource.
    Shared,
    /// The three-lock ring (two workers, product only).
    PingPong,
}

/// What a worker process is told to do.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Spec {
    pub kind: Kind,
    pub shape: Shape,
    pub dir: PathBuf,
    /// The directory of this run's control file.
    pub ctl: PathBuf,
    pub index: u32,
    pub nprocs: u32,
    pub cpu: Option<usize>,
    pub warmup_ms: u64,
    pub rep_ms: u64,
    pub reps: usize,
}

/// What a worker reports: per measured repetition, operations and ns.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Out {
    pub ops: Vec<u64>,
    pub ns: Vec<u64>,
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Cf => "cf_exclusive",
        Kind::Robust => "pthread_robust_mutex",
        Kind::Ofd => "fcntl_ofd",
        Kind::Spin => "spin",
    }
}

/// Parent side: set up the shared files, run every configuration.
pub fn run(dir: &Path, m: &Method, cpus: &[usize]) -> Result<Vec<Row>> {
    let region = Region::create(
        &Plex {
            dir: dir.join("plex-across"),
        },
        &CreateOptions {
            sizes: Sizes {
                lock_entries: 1 << 20,
                members: 8,
                records_per_member: 16384,
            },
            group_access: false,
        },
    )?;
    drop(region);
    let mutexes = ShmFile::create(&dir.join("across-mutexes"), 4096)?;
    for i in 0..2 {
        RobustMutex::init(&mutexes, i * MUTEX_STRIDE)?;
    }
    std::fs::write(dir.join("across-ofd"), [0u8; 16]).context("creating the OFD lock file")?;

    let mut rows = Vec::new();
    let mut run_no = 0;
    for kind in [Kind::Cf, Kind::Robust, Kind::Ofd] {
        for (shape, nprocs, suffix, what) in [
            (
                Shape::Disjoint,
                1,
                "1p",
                "1 process, acquire + release (blocking call)",
            ),
            (
                Shape::Disjoint,
                2,
                "2p_disjoint",
                "2 processes, one resource each: aggregate",
            ),
            (
                Shape::Shared,
                2,
                "2p_shared",
                "2 processes, one shared resource: aggregate",
            ),
        ] {
            run_no += 1;
            let outs = run_workers(dir, run_no, kind, shape, nprocs, m, cpus)?;
            let ns: Vec<f64> = (0..m.reps)
                .map(|r| {
                    let rate: f64 = outs
                        .iter()
                        .map(|o| o.ops[r] as f64 / o.ns[r].max(1) as f64)
                        .sum();
                    1.0 / rate
                })
                .collect();
            rows.push(row(
                format!("{}_{suffix}", kind_name(kind)),
                what.to_string(),
                Stats::of(&ns),
                &outs,
            ));
        }
    }
    run_no += 1;
    let outs = run_workers(dir, run_no, Kind::Cf, Shape::PingPong, 2, m, cpus)?;
    rows.push(row(
        "cf_handoff_pingpong".into(),
        "exclusive lock passed between 2 processes (3-lock ring): time per hand-off".into(),
        Stats::of(&handoff_ns(m, &outs)),
        &outs,
    ));
    run_no += 1;
    let outs = run_workers(dir, run_no, Kind::Spin, Shape::PingPong, 2, m, cpus)?;
    rows.push(row(
        "handoff_spin_floor".into(),
        "a bare word passed between 2 processes by spinning: time per hand-off (the floor)".into(),
        Stats::of(&handoff_ns(m, &outs)),
        &outs,
    ));
    Ok(rows)
}

/// Time per hand-off of each repetition: the mean elapsed over the
/// hand-offs of both workers.
fn handoff_ns(m: &Method, outs: &[Out]) -> Vec<f64> {
    (0..m.reps)
        .map(|r| {
            let ops: u64 = outs.iter().map(|o| o.ops[r]).sum();
            let el: f64 = outs.iter().map(|o| o.ns[r] as f64).sum::<f64>() / outs.len() as f64;
            el / ops.max(1) as f64
        })
        .collect()
}

fn row(name: String, what: String, ns: Stats, outs: &[Out]) -> Row {
    let iters = outs
        .iter()
        .map(|o| {
            let s: u64 = o.ops.iter().sum();
            s / o.ops.len().max(1) as u64
        })
        .sum();
    Row {
        group: "across",
        name,
        what,
        ops_per_s: 1e9 / ns.median,
        ns,
        iters_per_rep: iters,
    }
}

fn run_workers(
    dir: &Path,
    run_no: u32,
    kind: Kind,
    shape: Shape,
    nprocs: u32,
    m: &Method,
    cpus: &[usize],
) -> Result<Vec<Out>> {
    let ctl_dir = dir.join(format!("across-run-{run_no}"));
    std::fs::create_dir(&ctl_dir).context("creating a control directory")?;
    let _ctl = ShmFile::create(&ctl_dir.join("ctl"), 4096)?;
    let exe = std::env::current_exe().context("finding the cfctl binary")?;
    let mut procs = Vec::new();
    for index in 0..nprocs {
        let spec = super::WorkerSpec::Across(Spec {
            kind,
            shape,
            dir: dir.to_path_buf(),
            ctl: ctl_dir.clone(),
            index,
            nprocs,
            // One worker per CPU when there are enough; else let them float.
            cpu: (cpus.len() >= nprocs as usize).then(|| cpus[index as usize]),
            warmup_ms: m.warmup.as_millis() as u64,
            rep_ms: m.rep_time.as_millis() as u64,
            reps: m.reps,
        });
        let mut cmd = Command::new(&exe);
        cmd.arg("bench")
            .arg("--worker")
            .arg(serde_json::to_string(&spec)?)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        procs.push(Proc::spawn(
            cmd,
            &format!("bench worker {} {shape:?} #{index}", kind_name(kind)),
        )?);
    }
    let budget = m.warmup + m.rep_time * m.reps as u32 + Duration::from_secs(60);
    let deadline = Instant::now() + budget;
    let mut done = vec![false; procs.len()];
    while done.iter().any(|d| !d) {
        check_interrupted()?;
        for (i, p) in procs.iter_mut().enumerate() {
            if done[i] {
                continue;
            }
            if let Some(st) = p.try_wait()? {
                if !st.success() {
                    let tail = p.stderr_tail();
                    bail!("{} failed ({st}): {tail}", p.what);
                }
                done[i] = true;
            }
        }
        if Instant::now() > deadline {
            bail!("bench workers did not finish within {} s", budget.as_secs());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut outs = Vec::new();
    for p in procs.iter_mut() {
        let mut s = String::new();
        if let Some(o) = p.child.stdout.as_mut() {
            std::io::Read::read_to_string(o, &mut s)?;
        }
        let out: Out = serde_json::from_str(s.trim())
            .with_context(|| format!("{}: bad report {:?}", p.what, last_line(&s)))?;
        if out.ops.len() != m.reps || out.ns.len() != m.reps {
            bail!(
                "{}: {} repetitions reported, {} expected",
                p.what,
                out.ops.len(),
                m.reps
            );
        }
        outs.push(out);
    }
    drop(_ctl);
    std::fs::remove_dir_all(&ctl_dir).context("removing a control directory")?;
    Ok(outs)
}

// ---- worker side ----

/// The shared control words of one run.
struct Ctl {
    file: ShmFile,
    n: u64,
    passed: std::cell::Cell<u64>,
}

impl Ctl {
    fn open(dir: &Path, n: u32) -> Result<Ctl> {
        Ok(Ctl {
            file: ShmFile::open(&dir.join("ctl"))?,
            n: n as u64,
            passed: std::cell::Cell::new(0),
        })
    }

    /// Wait until every worker has arrived here as often as we have.
    fn barrier(&self) -> Result<()> {
        let w = self.file.word(CTL_BARRIER)?;
        self.passed.set(self.passed.get() + 1);
        w.fetch_add(1, Ordering::AcqRel);
        let target = self.n * self.passed.get();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut spins = 0u32;
        while w.load(Ordering::Acquire) < target {
            spins += 1;
            if spins < 256 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
                if spins.is_multiple_of(4096) && Instant::now() > deadline {
                    bail!("the other bench worker never arrived");
                }
            }
        }
        Ok(())
    }

    fn stop_word(&self) -> Result<&std::sync::atomic::AtomicU64> {
        self.file.word(CTL_STOP)
    }
}

/// Worker process entry: run the spec, return the report.
pub fn worker(spec: &Spec) -> Result<Out> {
    if let Some(cpu) = spec.cpu {
        pin_to_cpu(cpu)?;
    }
    let ctl = Ctl::open(&spec.ctl, spec.nprocs)?;
    let i = spec.index as usize;
    match (spec.kind, spec.shape) {
        (Kind::Cf, shape) => {
            let region = Arc::new(Region::open(&Plex {
                dir: spec.dir.join("plex-across"),
            })?);
            let member = Member::connect(region, &format!("X{i}"))?;
            let mut h = member.holder()?;
            let out = if shape == Shape::PingPong {
                pingpong(spec, &ctl, &mut h)?
            } else {
                let res = resource(shape, i);
                timed_loop(spec, &ctl, || {
                    match h.lock(res.as_bytes(), Mode::Exclusive, WAIT) {
                        Ok(id) => h.unlock(id)?,
                        Err(e) => bail!("{res}: {e}"),
                    }
                    Ok(())
                })?
            };
            drop(h);
            member.disconnect()?;
            Ok(out)
        }
        (Kind::Spin, Shape::PingPong) => spin_pingpong(spec, &ctl),
        (Kind::Spin, shape) => bail!("the spinning floor is a ping-pong, not {shape:?}"),
        (Kind::Robust, shape) => {
            let file = ShmFile::open(&spec.dir.join("across-mutexes"))?;
            let slot = if shape == Shape::Shared { 0 } else { i };
            let mutex = RobustMutex::attach(&file, slot * MUTEX_STRIDE)?;
            timed_loop(spec, &ctl, || {
                mutex.lock()?;
                mutex.unlock()
            })
        }
        (Kind::Ofd, shape) => {
            let byte = if shape == Shape::Shared { 0 } else { i as i64 };
            let lock = OfdLock::open(&spec.dir.join("across-ofd"), byte)?;
            timed_loop(spec, &ctl, || {
                lock.lock(true)?;
                lock.unlock()
            })
        }
    }
}

fn resource(shape: Shape, i: usize) -> String {
    match shape {
        Shape::Shared => "across-shared".into(),
        _ => format!("across-disjoint-{i}"),
    }
}

/// Repetition 0 is the warm-up (not reported).
fn rep_time(spec: &Spec, rep: usize) -> Duration {
    Duration::from_millis(if rep == 0 {
        spec.warmup_ms
    } else {
        spec.rep_ms
    })
}

fn timed_loop(spec: &Spec, ctl: &Ctl, mut op: impl FnMut() -> Result<()>) -> Result<Out> {
    let mut out = Out::default();
    for rep in 0..=spec.reps {
        ctl.barrier()?;
        let stop = ctl.stop_word()?;
        let limit = rep_time(spec, rep);
        let t = Instant::now();
        let mut ops = 0u64;
        loop {
            for _ in 0..BATCH {
                op()?;
            }
            ops += BATCH;
            if spec.index == 0 {
                if t.elapsed() >= limit {
                    stop.store(rep as u64 + 1, Ordering::Release);
                    break;
                }
            } else if stop.load(Ordering::Acquire) > rep as u64 {
                break;
            }
        }
        let ns = t.elapsed().as_nanos() as u64;
        if rep > 0 {
            out.ops.push(ops);
            out.ns.push(ns);
        }
    }
    ctl.barrier()?;
    Ok(out)
}

fn pingpong(spec: &Spec, ctl: &Ctl, h: &mut cf_core::Holder) -> Result<Out> {
    if spec.nprocs != 2 {
        bail!("the ping-pong needs 2 workers");
    }
    let ring = ["pingpong-0", "pingpong-1", "pingpong-2"];
    let take = |h: &mut cf_core::Holder, r: &str| -> Result<cf_core::LockId> {
        match h.lock(r.as_bytes(), Mode::Exclusive, WAIT) {
            Ok(id) => Ok(id),
            Err(e) => bail!("{r}: {e}"),
        }
    };
    let mut out = Out::default();
    ctl.barrier()?;
    for rep in 0..=spec.reps {
        let stop = ctl.stop_word()?;
        let limit = rep_time(spec, rep);
        // Worker i starts on lock i: the other worker holds the next one.
        let mut cur = spec.index as usize;
        let mut cur_id = take(h, ring[cur])?;
        ctl.barrier()?;
        let t = Instant::now();
        let mut ops = 0u64;
        loop {
            let next = (cur + 1) % 3;
            let next_id = take(h, ring[next])?;
            h.unlock(cur_id)?;
            cur = next;
            cur_id = next_id;
            ops += 1;
            if spec.index == 0 {
                if ops.is_multiple_of(16) && t.elapsed() >= limit {
                    stop.store(rep as u64 + 1, Ordering::Release);
                    break;
                }
            } else if stop.load(Ordering::Acquire) > rep as u64 {
                break;
            }
        }
        let ns = t.elapsed().as_nanos() as u64;
        h.unlock(cur_id)?;
        // Both have released everything before either starts the next round.
        ctl.barrier()?;
        if rep > 0 {
            out.ops.push(ops);
            out.ns.push(ns);
        }
    }
    Ok(out)
}

/// The spinning hand-off floor: the word says whose turn it is; each worker
/// waits for its turn by spinning, then gives the turn to the other. Every
/// pass is one cache line moving between the two CPUs and back.
fn spin_pingpong(spec: &Spec, ctl: &Ctl) -> Result<Out> {
    if spec.nprocs != 2 {
        bail!("the ping-pong needs 2 workers");
    }
    let turn = ctl.file.word(CTL_TURN)?;
    let me = spec.index as u64;
    let mut out = Out::default();
    for rep in 0..=spec.reps {
        turn.store(0, Ordering::Release);
        ctl.barrier()?;
        let stop = ctl.stop_word()?;
        let limit = rep_time(spec, rep);
        let t = Instant::now();
        let mut ops = 0u64;
        'rep: loop {
            let mut spins = 0u32;
            while turn.load(Ordering::Acquire) != me {
                std::hint::spin_loop();
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(1024) && stop.load(Ordering::Acquire) > rep as u64 {
                    break 'rep;
                }
            }
            turn.store(1 - me, Ordering::Release);
            ops += 1;
            if spec.index == 0 {
                if ops.is_multiple_of(64) && t.elapsed() >= limit {
                    stop.store(rep as u64 + 1, Ordering::Release);
                    break;
                }
            } else if stop.load(Ordering::Acquire) > rep as u64 {
                break;
            }
        }
        let ns = t.elapsed().as_nanos() as u64;
        // Both have stopped before either resets the word for the next round.
        ctl.barrier()?;
        if rep > 0 {
            out.ops.push(ops);
            out.ns.push(ns);
        }
    }
    Ok(out)
}
