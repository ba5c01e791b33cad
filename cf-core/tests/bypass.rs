//! Bounded bypass (`lock/entry.rs`, rule 5), shown with real processes.
//!
//! Member A holds R; member B (a child process: this test binary re-run as
//! `b_waits_for_r`) waits for it. Each round, once B sleeps in the kernel
//! waiting for the holdings to change, the parent stops B (SIGSTOP), releases
//! R and at once asks for it again, then lets B go on (SIGCONT). While B is
//! stopped it cannot take R, so without a bound on bypasses A would win every
//! round and B would starve. With the bound, after `BYPASS_LIMIT` rounds B's
//! request is urgent: A's next try is refused although nobody holds R, and B
//! is granted.

use cf_core::{testing, CreateOptions, Member, Mode, Plex, Region, Sizes, TryOutcome};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

const PLEX_ENV: &str = "CF_BYPASS_TEST_PLEX";

fn open_sizes() -> CreateOptions {
    CreateOptions {
        sizes: Sizes {
            lock_entries: 16,
            members: 4,
            records_per_member: 64,
        },
        group_access: false,
    }
}

/// The child's part: connect as B, wait for R, say so on stdout.
#[test]
fn b_waits_for_r() {
    let Some(dir) = std::env::var_os(PLEX_ENV) else {
        return; // only run as the child of the test below
    };
    let plex = Plex { dir: dir.into() };
    let r = Arc::new(Region::open(&plex).unwrap());
    let b = Member::connect(r, "B").unwrap();
    let mut h = b.holder().unwrap();
    println!("waiting");
    let id = h
        .lock(b"r", Mode::Exclusive, Duration::from_secs(600))
        .unwrap()
        .expect("B is granted R");
    println!("granted");
    h.unlock(id).unwrap();
    drop(h);
    b.disconnect().unwrap();
}

/// Kills the child when dropped (a failed assertion leaves no process).
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pid(c: &Child) -> Pid {
    Pid::from_raw(c.id() as i32)
}

/// Is every thread of `pid` inside a futex call (a stopped process: where it
/// stopped)? `/proc/PID/task/TID/syscall` starts with the syscall number.
fn all_threads_in_futex(pid: Pid) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|t| {
        std::fs::read_to_string(t.path().join("syscall"))
            .is_ok_and(|s| s.split_whitespace().next() == Some(&libc::SYS_futex.to_string()))
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

/// Stop B at a moment it sleeps waiting for the holdings of `entry` to
/// change (announced, and every thread in the kernel's futex call).
fn stop_while_asleep(r: &Region, b: Pid, entry: u32) {
    loop {
        if testing::holding_waiter_sleeps(r, entry) {
            kill(b, Signal::SIGSTOP).unwrap();
            while !is_stopped(b) {
                std::thread::yield_now();
            }
            if testing::holding_waiter_sleeps(r, entry) && all_threads_in_futex(b) {
                return;
            }
            kill(b, Signal::SIGCONT).unwrap();
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

#[test]
fn a_waiter_is_bypassed_a_bounded_number_of_times() {
    let dir = tempfile::tempdir().unwrap();
    let plex = Plex {
        dir: dir.path().into(),
    };
    let r = Arc::new(Region::create(&plex, &open_sizes()).unwrap());
    let a = Member::connect(r.clone(), "A").unwrap();
    let mut ha = a.holder().unwrap();
    let mut held = match ha.try_lock(b"r", Mode::Exclusive).unwrap() {
        TryOutcome::Granted(id) => id,
        other => panic!("{other:?}"),
    };
    let entry = held.entry;

    let mut child = ChildGuard(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "b_waits_for_r",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(PLEX_ENV, dir.path())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let b = pid(&child.0);
    let mut out = BufReader::new(child.0.stdout.take().unwrap());
    let mut line = String::new();
    // (libtest prints "test b_waits_for_r ... " before the test's own line.)
    while !line.trim_end().ends_with("waiting") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "B ended early");
    }

    let mut bypasses = 0u32;
    let refused = loop {
        stop_while_asleep(&r, b, entry);
        ha.unlock(held).unwrap();
        let answer = ha.try_lock(b"r", Mode::Exclusive).unwrap();
        kill(b, Signal::SIGCONT).unwrap();
        match answer {
            TryOutcome::Granted(id) => {
                held = id;
                bypasses += 1;
                assert!(
                    bypasses <= testing::BYPASS_LIMIT,
                    "B was bypassed {bypasses} times (limit {})",
                    testing::BYPASS_LIMIT
                );
            }
            other => break other,
        }
    };
    // Nobody held R, yet A was refused: B's urgent request comes first.
    assert_eq!(bypasses, testing::BYPASS_LIMIT);
    match refused {
        TryOutcome::Contention(h) => assert_eq!(h[0].name, "B", "{h:?}"),
        other => panic!("{other:?}"),
    }
    line.clear();
    while !line.trim_end().ends_with("granted") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "B ended without R");
    }
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status}");
    drop(ha);
    a.disconnect().unwrap();
}
