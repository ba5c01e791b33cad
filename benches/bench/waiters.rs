//! What waiting costs: K processes (K = 1, 4, 8) each wait for an exclusive
//! lock that this process holds and keeps, and the row is the CPU time all K
//! use per second of the hold (`ns_per_op`: ns of CPU per second held). The
//! target is under 2% of one core in total (20,000,000 ns per second).
//!
//! Each waiter (this binary with a hidden `--worker` spec) connects as a
//! member, counts itself in the control file and calls `Holder::lock`. Once
//! every waiter has counted itself and had time to go to sleep, the CPU time
//! of each (the sum over its threads of `/proc/PID/task/TID/schedstat`'s
//! first field, ns on a CPU) is read before and after each repetition of the
//! hold. Then the lock is released; each waiter gets it in turn, releases
//! it and exits.

use super::guard::{check_interrupted, last_line, Proc, ShmFile};
use super::stats::{Method, Stats};
use super::Row;
use anyhow::{bail, Context, Result};
use cf_core::{CreateOptions, Member, Mode, Plex, Region, Sizes, TryOutcome};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

const RESOURCE: &[u8] = b"bench-waiters-held";
/// A waiter gives up after this: far beyond the whole row.
const WAIT: Duration = Duration::from_secs(120);
/// Control word: waiters that are about to wait.
const CTL_WAITING: usize = 0;
/// After the last waiter counted itself, before the first measurement:
/// time for it to get from the count into its sleep.
const SETTLE: Duration = Duration::from_millis(100);

/// What a waiter process is told.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Spec {
    pub plex: PathBuf,
    pub ctl: PathBuf,
    pub index: u32,
}

pub fn run(dir: &Path, m: &Method) -> Result<Vec<Row>> {
    let plex = Plex {
        dir: dir.join("plex-waiters"),
    };
    let region = Arc::new(Region::create(
        &plex,
        &CreateOptions {
            sizes: Sizes {
                lock_entries: 1 << 16,
                members: 16,
                records_per_member: 64,
            },
            group_access: false,
        },
    )?);
    let holder_member = Member::connect(region.clone(), "WH")?;
    let mut rows = Vec::new();
    for k in [1u32, 4, 8] {
        let mut h = holder_member.holder()?;
        let id = match h.try_lock(RESOURCE, Mode::Exclusive)? {
            TryOutcome::Granted(id) => id,
            other => bail!("waiters: the held lock was not granted: {other:?}"),
        };
        let measured = Waiters::start(dir, &plex, k).and_then(|w| {
            let s = w.sample(m)?;
            Ok((w, s))
        });
        // Released whatever happened, so the waiters can end.
        h.unlock(id)?;
        let (w, ns) = measured?;
        w.reap()?;
        rows.push(Row {
            group: "across",
            name: format!("waiters_cpu_k{k}"),
            what: format!(
                "{k} process(es) waiting for a held exclusive lock: ns of CPU (all of them) per second held"
            ),
            ops_per_s: 0.0,
            ns: Stats::of(&ns),
            iters_per_rep: 1,
        });
    }
    holder_member.disconnect()?;
    Ok(rows)
}

/// K waiter processes (killed and reaped if dropped before [`Waiters::reap`]).
struct Waiters {
    procs: Vec<Proc>,
    ctl_dir: PathBuf,
    _ctl: ShmFile,
}

impl Waiters {
    /// Start `k` waiters on the held lock; return once each is about to
    /// wait and `SETTLE` has passed.
    fn start(dir: &Path, plex: &Plex, k: u32) -> Result<Waiters> {
        let ctl_dir = dir.join(format!("waiters-{k}"));
        std::fs::create_dir(&ctl_dir).context("creating a control directory")?;
        let ctl = ShmFile::create(&ctl_dir.join("ctl"), 4096)?;
        let mut w = Waiters {
            procs: Vec::new(),
            ctl_dir,
            _ctl: ctl,
        };
        let exe = std::env::current_exe().context("finding the cfctl binary")?;
        for index in 0..k {
            let spec = super::WorkerSpec::Waiter(Spec {
                plex: plex.dir.clone(),
                ctl: w.ctl_dir.clone(),
                index,
            });
            let mut cmd = Command::new(&exe);
            cmd.arg("bench")
                .arg("--worker")
                .arg(serde_json::to_string(&spec)?)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            w.procs
                .push(Proc::spawn(cmd, &format!("bench waiter {index} of {k}"))?);
        }
        let waiting = w._ctl.word(CTL_WAITING)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while waiting.load(Ordering::Acquire) < k as u64 {
            check_interrupted()?;
            for p in w.procs.iter_mut() {
                if let Some(st) = p.try_wait()? {
                    let tail = p.stderr_tail();
                    bail!("{} ended before waiting ({st}): {tail}", p.what);
                }
            }
            if Instant::now() > deadline {
                bail!("the bench waiters did not start within 30 s");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(SETTLE);
        Ok(w)
    }

    /// CPU of all waiters per second held, per repetition.
    fn sample(&self, m: &Method) -> Result<Vec<f64>> {
        let pids: Vec<u32> = self.procs.iter().map(|p| p.child.id()).collect();
        let mut samples = Vec::with_capacity(m.reps);
        for _ in 0..m.reps {
            check_interrupted()?;
            let before = cpu_ns(&pids)?;
            let t = Instant::now();
            std::thread::sleep(m.rep_time);
            let after = cpu_ns(&pids)?;
            samples.push(after.saturating_sub(before) as f64 / t.elapsed().as_secs_f64());
        }
        Ok(samples)
    }

    /// After the release: every waiter gets the lock in turn and exits 0.
    fn reap(mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        for p in self.procs.iter_mut() {
            loop {
                check_interrupted()?;
                if let Some(st) = p.try_wait()? {
                    if !st.success() {
                        let tail = p.stderr_tail();
                        bail!("{} failed ({st}): {tail}", p.what);
                    }
                    break;
                }
                if Instant::now() > deadline {
                    bail!("{} did not get the released lock within 60 s", p.what);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        Ok(())
    }
}

impl Drop for Waiters {
    fn drop(&mut self) {
        // The processes are killed by their `Proc`s if still running.
        let _ = std::fs::remove_dir_all(&self.ctl_dir);
    }
}

/// CPU time so far (ns) of every thread of every process in `pids`.
fn cpu_ns(pids: &[u32]) -> Result<u64> {
    let mut total = 0u64;
    for pid in pids {
        let tasks = format!("/proc/{pid}/task");
        for t in std::fs::read_dir(&tasks).with_context(|| format!("reading {tasks}"))? {
            let path = t?.path().join("schedstat");
            // A thread that ended meanwhile has no file: it runs no more.
            let Ok(s) = std::fs::read_to_string(&path) else {
                continue;
            };
            let ns: u64 = s
                .split_whitespace()
                .next()
                .and_then(|x| x.parse().ok())
                .with_context(|| format!("{}: {:?}", path.display(), last_line(&s)))?;
            total += ns;
        }
    }
    Ok(total)
}

/// Waiter process entry.
pub fn worker(spec: &Spec) -> Result<()> {
    let ctl = ShmFile::open(&spec.ctl.join("ctl"))?;
    let region = Arc::new(Region::open(&Plex {
        dir: spec.plex.clone(),
    })?);
    let member = Member::connect(region, &format!("WW{}", spec.index))?;
    let mut h = member.holder()?;
    ctl.word(CTL_WAITING)?.fetch_add(1, Ordering::AcqRel);
    match h.lock(RESOURCE, Mode::Exclusive, WAIT) {
        Ok(id) => h.unlock(id)?,
        Err(e) => bail!("waiting for the held lock: {e}"),
    }
    drop(h);
    member.disconnect()?;
    Ok(())
}
