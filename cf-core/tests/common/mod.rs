//! Test machinery shared by cf-core's integration tests: answers and
//! colliding names (`in_process.rs`, `no_alloc.rs`), and a waiting member in
//! a child process that the test stops (SIGSTOP) while it sleeps, so the
//! parent wins every race for the resource it waits for (`bypass.rs`,
//! `attack3.rs`).
// Each test binary uses a part of it.
#![allow(dead_code)]

use cf_core::{
    testing, CreateOptions, EntryIndex, LockId, Member, Mode, Plex, Region, Resource, Sizes,
    TryOutcome,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// A small region: 16 lock entries, 4 members, 64 records each.
pub fn small_region(dir: &Path) -> Arc<Region> {
    region_with(dir, 16, 64)
}

/// A region of `lock_entries` entries and 4 members of `records` records
/// each (a holder takes a block of 64: 256 records for up to 4 holders).
pub fn region_with(dir: &Path, lock_entries: u32, records: u32) -> Arc<Region> {
    let opts = CreateOptions {
        sizes: Sizes {
            lock_entries,
            members: 4,
            records_per_member: records,
        },
        group_access: false,
    };
    Arc::new(Region::create(&Plex { dir: dir.into() }, &opts).unwrap())
}

/// A tiny table (16 entries), 4 members of 256 records, in a temporary
/// directory removed on drop.
pub fn tiny_region() -> (tempfile::TempDir, Arc<Region>) {
    let dir = tempfile::tempdir().unwrap();
    let r = region_with(dir.path(), 16, 256);
    (dir, r)
}

/// Every lock held now, as (member, resource, mode), sorted.
pub fn held(r: &Region) -> Vec<(String, String, Mode)> {
    let mut v: Vec<_> = cf_core::inspect::locks(r)
        .unwrap()
        .into_iter()
        .filter(|l| l.held)
        .map(|l| (l.member, l.resource, l.mode))
        .collect();
    v.sort_by(|a, b| (&a.0, &a.1, a.2.as_str()).cmp(&(&b.0, &b.1, b.2.as_str())));
    v
}

/// The child's part, run by a `#[test]` of the calling file when `env` names
/// a plex: connect as B, wait for `r` exclusively, say "waiting" then
/// "granted" on stdout, release, disconnect. Without `env`, nothing.
pub fn child_b_waits_for_r(env: &str) {
    let Some(dir) = std::env::var_os(env) else {
        return; // only run as the child of another test
    };
    let r = Arc::new(Region::open(&Plex { dir: dir.into() }).unwrap());
    let b = Member::connect(r, "B").unwrap();
    let mut h = b.holder().unwrap();
    println!("waiting");
    let id = h
        .lock(b"r", Mode::Exclusive, Duration::from_secs(600))
        .expect("B is granted R");
    println!("granted");
    h.unlock(id).unwrap();
    drop(h);
    b.disconnect().unwrap();
}

/// The child process B (killed when dropped: a failed assertion leaves no
/// process) and its stdout.
pub struct ChildB {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl ChildB {
    /// Start this test binary again as test `child_test`, with `env` naming
    /// the plex in `dir`, and wait until B says it is waiting.
    pub fn start(child_test: &str, env: &str, dir: &Path) -> ChildB {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", child_test, "--nocapture", "--test-threads=1"])
            .env(env, dir)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let mut b = ChildB { child, out };
        b.wait_for_line("waiting");
        b
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Read B's stdout up to a line ending with `word` (libtest prints
    /// "test NAME ... " before the test's own first line).
    pub fn wait_for_line(&mut self, word: &str) {
        let mut line = String::new();
        while !line.trim_end().ends_with(word) {
            line.clear();
            assert!(
                self.out.read_line(&mut line).unwrap() > 0,
                "B ended before saying {word:?}"
            );
        }
    }

    /// Let B go on.
    pub fn resume(&self) {
        kill(self.pid(), Signal::SIGCONT).unwrap();
    }

    /// Stop B at a moment it sleeps waiting for the holdings of `entry` to
    /// change (announced, and every thread in the kernel's futex call).
    pub fn stop_while_asleep(&self, r: &Region, entry: EntryIndex) {
        let b = self.pid();
        loop {
            if testing::holding_waiter_sleeps(r, entry) {
                kill(b, Signal::SIGSTOP).unwrap();
                while !is_stopped(b) {
                    std::thread::yield_now();
                }
                if testing::holding_waiter_sleeps(r, entry) && all_threads_in_futex(b) {
                    return;
                }
                self.resume();
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Wait for B to say it was granted R and to end well.
    pub fn finish(mut self) {
        self.wait_for_line("granted");
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status}");
    }
}

impl Drop for ChildB {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Is every thread of `pid` inside a futex call (a stopped process: where it
/// stopped)? `/proc/PID/task/TID/syscall` starts with the syscall number.
fn all_threads_in_futex(pid: Pid) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    let futex = libc::SYS_futex.to_string();
    tasks.flatten().all(|t| {
        std::fs::read_to_string(t.path().join("syscall"))
            .is_ok_and(|s| s.split_whitespace().next() == Some(futex.as_str()))
    })
}

/// Is `pid` stopped (state T in /proc/PID/stat)?
fn is_stopped(pid: Pid) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(|x| x == "T"))
        })
        .unwrap_or(false)
}

/// The lock of a granted answer (panics with the answer otherwise).
pub fn granted(o: TryOutcome) -> LockId {
    match o {
        TryOutcome::Granted(id) => id,
        other => panic!("expected granted, got {other:?}"),
    }
}

/// Two resource names that hash to the same entry of a table of `entries`.
pub fn colliding_pair(entries: u32) -> (Vec<u8>, Vec<u8>) {
    let first = b"res-0".to_vec();
    let e = Resource::new(&first).unwrap().entry(entries);
    let other = (1..)
        .map(|i| format!("res-{i}").into_bytes())
        .find(|n| Resource::new(n).unwrap().entry(entries) == e)
        .unwrap();
    (first, other)
}
