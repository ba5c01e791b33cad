//! The experimenter's and operator's side of cfctl, as a user meets it:
//! options checked before anything starts, Ctrl-C, closed pipes, a live
//! plex, resources checked before connecting, careful creates, the
//! displays, the report, the exit-status table, charts, completions.
//!
//! Every test asserts outcomes (files, processes, exit statuses, JSON), never
//! how fast anything is. Plexes live in temporary directories removed on
//! drop; every child is killed and reaped on drop.

use cf_testkit::tools::{self as common, processes_naming, Proc, TestPlex};
use nix::sys::signal::Signal;
use serde_json::Value;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn cfctl() -> Command {
    let mut c = Command::new(common::cfctl());
    c.env_remove("CF_PLEX")
        .env_remove("CF_CRASH_AT")
        .env_remove("CF_CRASH_ONCE");
    c
}

/// A fresh directory under /dev/shm, removed on drop.
fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("cf-ux-")
        .tempdir_in("/dev/shm")
        .expect("a directory under /dev/shm")
}

fn no_member_left_in(dir: &Path) {
    let needle = dir.display().to_string();
    common::eventually(&format!("no process naming {needle} left"), || {
        processes_naming(&needle).is_empty()
    });
}

fn json_lines(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// A test plex made again by `cfctl create ARGS` (accounts, history, sizes).
fn plex_made_with(create: &[&str]) -> TestPlex {
    let plex = TestPlex::small();
    let gone = plex.run(&["destroy"]);
    assert!(gone.status.success(), "{gone}");
    let mut args = vec!["create"];
    args.extend_from_slice(create);
    let made = plex.run(&args);
    assert!(made.status.success(), "{made}");
    plex
}

// --- cfctl sim: every option checked before anything starts ---------------

#[test]
fn sim_options_are_checked_before_anything_is_made() {
    let t = scratch();
    let plex = t.path().join("p");
    // 64: a value out of its range (clap's checks and the sim's own alike);
    // 1: an error (the directory for the charts does not exist).
    for (args, what, code) in [
        (
            vec!["--kill-every", "0", "--duration", "1"],
            "kill-every",
            64,
        ),
        (vec!["--duration", "0"], "duration", 64),
        (vec!["--members", "1"], "members", 64),
        (vec!["--members", "17"], "members", 64),
        (vec!["--threads", "0"], "threads", 64),
        (vec!["--lock-entries", "100"], "lock-entries", 64),
        (vec!["--read-pct", "101"], "read-pct", 64),
        (vec!["--tx-size", "17"], "tx-size", 64),
        (vec!["--skew", "pareto"], "skew", 64),
        (vec!["--duration", "soon"], "duration", 64),
        (vec!["--csv", "--json"], "--csv and --json", 64),
        (vec!["--plot", "/nonexistent/dir/charts"], "plot", 1),
    ] {
        let out = cfctl()
            .arg("--plex")
            .arg(&plex)
            .arg("sim")
            .args(&args)
            .output()
            .expect("cfctl runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.code() == Some(code),
            "{args:?}: {:?} {err}",
            out.status
        );
        assert!(
            err.contains(what),
            "{args:?}: the error names the option: {err}"
        );
        assert!(!plex.exists(), "{args:?}: nothing is created");
    }
    // The ranges are in --help.
    let help = cfctl().args(["sim", "--help"]).output().expect("help");
    let help = String::from_utf8_lossy(&help.stdout);
    for range in [
        "2 to 16",
        "1 to 16",
        "at least 1ms",
        "more than 0",
        "0 to 100",
        "Exit status",
    ] {
        assert!(help.contains(range), "sim --help shows {range:?}");
    }
}

// --- Ctrl-C ------------------------------------------------------------------

/// A plex directory with no region yet, for `cfctl sim --plex` (which makes
/// its own region); removed on drop.
struct EmptyPlex {
    dir: tempfile::TempDir,
}

impl EmptyPlex {
    fn new() -> EmptyPlex {
        EmptyPlex { dir: scratch() }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn command(&self, args: &[&str]) -> Command {
        let mut c = cfctl();
        c.arg("--plex").arg(self.path()).args(args);
        c
    }
}

#[test]
fn sigint_to_the_sims_process_group_stops_it_with_a_report() {
    let p = EmptyPlex::new();
    let mut c = p.command(&[
        "sim",
        "--members",
        "2",
        "--duration",
        "60s",
        "--kill-every",
        "300ms",
        "--json",
    ]);
    std::os::unix::process::CommandExt::process_group(&mut c, 0);
    let sim = Proc::spawn(c, "cfctl sim (Ctrl-C)".into());
    let view = ViewOf(p.path());
    common::eventually("members connected", || view.members() >= 2);
    std::thread::sleep(Duration::from_millis(800));
    sim.signal_group(Signal::SIGINT);
    let f = sim.finish();
    assert_eq!(f.status.code(), Some(130), "interrupted: {f}");
    let v = f.json();
    assert_eq!(v["interrupted"], true, "{f}");
    assert_eq!(v["invariants_ok"], true, "{f}");
    assert_eq!(v["plex"], p.path().display().to_string(), "--plex keeps it");
    no_member_left_in(p.path());
    // The members were stopped normally: no connector, no retained lock.
    assert_eq!(view.members(), 0, "no connector left");
}

#[test]
fn sigint_to_cfctl_alone_still_stops_its_members_and_sigkill_takes_them_along() {
    let p = EmptyPlex::new();
    let sim = Proc::spawn(
        p.command(&[
            "sim",
            "--members",
            "2",
            "--duration",
            "60s",
            "--kill-every",
            "1s",
        ]),
        "cfctl sim".into(),
    );
    let view = ViewOf(p.path());
    common::eventually("members connected", || view.members() >= 2);
    sim.signal(Signal::SIGINT);
    let f = sim.finish();
    assert_eq!(f.status.code(), Some(130), "{f}");
    assert!(
        f.stdout.contains("interrupted: the faults stopped early"),
        "{f}"
    );
    no_member_left_in(p.path());

    // SIGKILL cannot be handled: the members die by their parent-death signal.
    let p = EmptyPlex::new();
    let mut sim = Proc::spawn(
        p.command(&[
            "sim",
            "--members",
            "2",
            "--duration",
            "60s",
            "--kill-every",
            "1s",
        ]),
        "cfctl sim (SIGKILL)".into(),
    );
    let view = ViewOf(p.path());
    common::eventually("members connected", || view.members() >= 2);
    sim.kill_and_reap();
    no_member_left_in(p.path());
}

#[test]
fn sigint_to_the_demo_lets_the_recovery_finish_and_removes_its_plex() {
    let mut c = cfctl();
    c.args(["demo", "--claim-delay-ms", "3000"]);
    std::os::unix::process::CommandExt::process_group(&mut c, 0);
    let mut demo = Proc::spawn(c, "cfctl demo".into());
    let line = demo.wait_line(|l| l.starts_with("1. Created plex"));
    let dir = line
        .trim_start_matches("1. Created plex ")
        .split(" (the coupling facility)")
        .next()
        .expect("the plex directory")
        .to_string();
    // SYSB is dead and its locks retained (the claim waits 3 s).
    demo.wait_line(|l| l.contains("retained by SYSB"));
    demo.signal_group(Signal::SIGINT);
    let f = demo.finish();
    assert_eq!(f.status.code(), Some(130), "{f}");
    assert!(f.stdout.contains("Interrupted"), "{f}");
    assert!(
        !Path::new(&dir).exists(),
        "the demo's plex {dir} is removed"
    );
    no_member_left_in(Path::new(&dir));
}

/// Read-only views of a plex directory through `cfctl --json`.
struct ViewOf<'a>(&'a Path);

impl ViewOf<'_> {
    fn json(&self, args: &[&str]) -> Option<Value> {
        let out = cfctl().arg("--plex").arg(self.0).args(args).output().ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }
    fn members(&self) -> usize {
        self.json(&["--json", "display", "members"])
            .and_then(|v| v.as_array().map(|a| a.len()))
            .unwrap_or(0)
    }
}

// --- a closed pipe --------------------------------------------------------------

/// Run cfctl with stdout a pipe whose reading end is already closed.
fn into_closed_pipe(args: &[&str], plex: Option<&Path>) -> std::process::Output {
    let (r, w) = nix::unistd::pipe().expect("pipe");
    drop(r);
    let mut c = cfctl();
    if let Some(p) = plex {
        c.arg("--plex").arg(p);
    }
    c.args(args)
        .stdout(Stdio::from(w))
        .stderr(Stdio::piped())
        .output()
        .expect("cfctl runs")
}

#[test]
fn a_closed_pipe_ends_the_command_quietly() {
    let plex = TestPlex::small();
    let mut hold = plex.hold("A", &[("modify", "r1"), ("s", "r2")]);
    for args in [
        vec!["display", "members"],
        vec!["display", "locks"],
        vec!["--json", "display", "structures"],
        vec!["display", "events"],
        vec!["display", "members", "--watch", "100ms"],
        vec!["report", "--interval", "100ms"],
        vec!["man"],
        vec!["verify"],
    ] {
        let out = into_closed_pipe(&args, Some(plex.path()));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {:?} {err}", out.status);
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{args:?}: {err}"
        );
    }
    hold.term();
    hold.expect_exit_ok();
}

// --- a live plex -------------------------------------------------------------------

#[test]
fn verify_and_display_accounts_are_honest_on_a_live_plex() {
    let plex = plex_made_with(&["--accounts", "20", "--lock-entries", "16"]);
    let mut members: Vec<Proc> = ["A", "B"]
        .iter()
        .map(|m| {
            let mut p = plex.spawn_node(
                "run",
                &["--member", m, "--threads", "2", "--buffer-pool-mb", "1"],
                &[],
            );
            p.wait_line(|l| l.contains("running"));
            p
        })
        .collect();
    for _ in 0..15 {
        let f = plex.run(&["verify", "--json"]);
        assert!(f.status.success(), "verify on a live plex: {f}");
        assert_eq!(f.json()["ok"], true, "{f}");
        let a = plex.run(&["display", "accounts", "--json"]);
        assert!(a.status.success(), "{a}");
        assert_eq!(a.json()["balanced"], true, "{a}");
    }
    for m in &mut members {
        m.term();
        m.expect_exit_ok();
    }
    let a = plex.run(&["display", "accounts"]);
    assert!(a.stdout.contains("(expected 20000: balanced)"), "{a}");
}

// --- resources checked before connecting ---------------------------------------------

#[test]
fn failures_before_connecting_leave_no_connector() {
    // 100 modify locks do not fit a 64-record area (the default is larger).
    let plex = plex_made_with(&[
        "--accounts",
        "10",
        "--lock-entries",
        "1024",
        "--records",
        "64",
    ]);
    let f = plex.run(&["hold", "--member", "A", "--modify-many", "100"]);
    assert_eq!(f.status.code(), Some(1), "{f}");
    assert!(f.stderr.contains("record entries"), "{f}");
    assert_eq!(f.stderr.lines().count(), 1, "one line: {f}");
    for (args, code) in [
        (vec!["--buffer-pool-mb", "100000"], 1),
        (vec!["--buffer-pool-mb", "17592186044416"], 1),
        (vec!["--threads", "0"], 1),
        (vec!["--threads", "8", "--tx-size", "16"], 1),
        (vec!["--tx-size", "11"], 1),
        (vec!["--read-pct", "101"], 1),
    ] {
        let mut all = vec!["--member", "N"];
        all.extend(args.iter().copied());
        let p = plex.spawn_node("run", &all, &[]);
        let f = p.finish();
        assert_eq!(f.status.code(), Some(code), "cf-node run {args:?}: {f}");
        assert!(!f.stderr.contains("panicked"), "{f}");
        assert_eq!(f.stderr.trim().lines().count().min(1), 1, "{f}");
    }
    let m = plex.json(&["display", "members"]);
    assert_eq!(m, Value::Array(vec![]), "no connector left behind");
}

/// A member's log (and history file) has one writer: the process connected
/// as the member. Checking resources before the connect must not open them
/// for writing: `LogWriter::open` cuts a torn tail, which on a log another
/// process is writing (the running member, or the restart light of the
/// previous life the new one waits for) is a record being written.
#[test]
fn a_member_refused_at_connect_leaves_the_running_ones_log_alone() {
    use std::os::unix::fs::OpenOptionsExt;
    let plex = plex_made_with(&["--accounts", "10", "--history", "--lock-entries", "16"]);
    let mut a = plex.hold("A", &[("x", "r")]);
    // A record being written by A: the first bytes of a length prefix.
    let partial = [7u8, 0, 0];
    let log = plex.path().join("log.A");
    let history = plex.path().join("history").join("A");
    for f in [&log, &history] {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(f)
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        std::io::Write::write_all(&mut file, &partial).unwrap();
    }
    let second = plex.spawn_node("run", &["--member", "A", "--buffer-pool-mb", "1"], &[]);
    let f = second.finish();
    assert_eq!(f.status.code(), Some(1), "{f}");
    assert!(f.stderr.contains("already running"), "{f}");
    for file in [&log, &history] {
        assert_eq!(
            std::fs::read(file).unwrap(),
            partial,
            "{} is the running member's: untouched by a start that could not connect",
            file.display()
        );
    }
    a.term();
    a.expect_exit_ok();
}

// --- create ---------------------------------------------------------------------------------

#[test]
fn create_makes_only_the_last_component_and_nothing_on_failure() {
    let t = scratch();
    let deep = t.path().join("no/such/x");
    let out = cfctl()
        .arg("--plex")
        .arg(&deep)
        .arg("create")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(!t.path().join("no").exists(), "no parent created");
    // Larger than the free space of /dev/shm: refused, nothing left.
    let big = t.path().join("big");
    let out = cfctl()
        .arg("--plex")
        .arg(&big)
        .args([
            "create",
            "--lock-entries",
            "1073741824",
            "--records",
            "16777216",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("free"), "says why: {err}");
    assert!(!big.exists(), "nothing left after a failed create");
    // A bad size: refused before the directory is made.
    let bad = t.path().join("bad");
    let out = cfctl()
        .arg("--plex")
        .arg(&bad)
        .args(["create", "--lock-entries", "100"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(!bad.exists());
    // A plex directory left empty is removed by destroy.
    let empty = t.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = cfctl()
        .arg("--plex")
        .arg(&empty)
        .arg("destroy")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!empty.exists());
    // The one level that is missing is made.
    let one = t.path().join("one");
    let out = cfctl()
        .arg("--plex")
        .arg(&one)
        .arg("create")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(one.join("region").exists() || std::fs::read_dir(&one).unwrap().next().is_some());
}

// --- small but visible -------------------------------------------------------------------------

#[test]
fn try_answers_name_both_modes_and_exit_statuses_follow_the_table() {
    let plex = TestPlex::small();
    let mut hold = plex.hold("A", &[("modify", "r1"), ("x", "r2")]);
    let f = plex.run(&["try", "--member", "B", "--s", "r2", "--json"]);
    assert_eq!(f.status.code(), Some(2), "contention: {f}");
    assert_eq!(f.json()["requested_mode"], "share");
    assert_eq!(f.json()["holders"][0]["mode"], "exclusive");
    hold.kill_and_reap();
    let f = plex.run(&["try", "--member", "B", "--s", "r1", "--json"]);
    assert_eq!(f.status.code(), Some(3), "retained: {f}");
    let v = f.json();
    assert_eq!(v["requested_mode"], "share", "{v}");
    assert_eq!(v["holder_mode"], "modify", "{v}");
    assert!(v.get("mode").is_none(), "no ambiguous mode: {v}");
    // The dead member: failing until cleaned up, then failed-persistent.
    let m = plex.json(&["display", "members"]);
    let a = &m.as_array().unwrap()[0];
    assert_ne!(
        a["state"], "active",
        "a dead member is not shown active: {m}"
    );
    // hold timing out on a live holder: 5.
    let mut h2 = plex.hold("C", &[("x", "r9")]);
    let f = plex.run(&["hold", "--member", "D", "--x", "r9", "--timeout", "200ms"]);
    assert_eq!(f.status.code(), Some(4), "timed out: {f}");
    let f = plex.run(&["hold", "--member", "D", "--s", "r1", "--timeout", "200ms"]);
    assert_eq!(f.status.code(), Some(3), "retained: {f}");
    h2.term();
    h2.expect_exit_ok();
}

#[test]
fn lock_modes_on_the_command_line_follow_the_table() {
    let plex = TestPlex::small();
    // IX beside IX: granted (XES contention, decided from the records).
    let mut hold = plex.hold("A", &[("lock", "ix:T")]);
    let f = plex.run(&["try", "--member", "B", "--lock", "ix:T", "--json"]);
    assert_eq!(f.status.code(), Some(0), "granted: {f}");
    let v = f.json();
    assert_eq!(
        (&v["result"], &v["mode"]),
        (&"granted".into(), &"ix".into()),
        "{v}"
    );
    // S against IX: contention, naming A and its mode.
    let f = plex.run(&["try", "--member", "B", "--lock", "s:T", "--json"]);
    assert_eq!(f.status.code(), Some(2), "contention: {f}");
    let v = f.json();
    assert_eq!(v["result"], "contention", "{v}");
    assert_eq!(v["requested_mode"], "share", "--lock s is --s: {v}");
    let h = &v["holders"][0];
    assert_eq!(
        (&h["member"], &h["mode"]),
        (&"A".into(), &"ix".into()),
        "{v}"
    );
    assert_eq!(
        (&h["lock_mode"], &h["modify"]),
        (&"ix".into(), &false.into()),
        "{v}"
    );
    // The text answer names the mode too; display locks prints it.
    let f = plex.run(&["try", "--member", "B", "--lock", "six:T"]);
    assert_eq!(f.status.code(), Some(2), "contention: {f}");
    let locks = plex.json(&["display", "locks"]);
    assert!(
        locks
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["member"] == "A" && l["mode"] == "ix"),
        "{locks}"
    );
    hold.term();
    hold.expect_exit_ok();

    // A modify lock in IX, retained after a SIGKILL: refuses S, grants IS and IX.
    let mut hold = plex.hold("A", &[("modify-lock", "ix:T"), ("lock", "u:U")]);
    hold.kill_and_reap();
    let f = plex.run(&["try", "--member", "B", "--lock", "s:T", "--json"]);
    assert_eq!(f.status.code(), Some(3), "retained: {f}");
    let v = f.json();
    assert_eq!(
        (&v["member"], &v["holder_mode"]),
        (&"A".into(), &"ix+modify".into()),
        "{v}"
    );
    for ok in ["is:T", "ix:T"] {
        let f = plex.run(&["try", "--member", "B", "--lock", ok]);
        assert_eq!(f.status.code(), Some(0), "{ok} beside a retained ix: {f}");
    }
    // Its U lock (no modify flag) was released at the death.
    let f = plex.run(&["try", "--member", "B", "--x", "U"]);
    assert_eq!(f.status.code(), Some(0), "{f}");
    let r = plex.json(&["display", "retained"]);
    let r = r.as_array().unwrap();
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(
        (&r[0]["resource"], &r[0]["mode"]),
        (&"T".into(), &"ix+modify".into())
    );
    plex.recover_light("A", &["T"]);

    // A mode that is not one, and the help that lists them.
    let f = plex.run(&["try", "--member", "B", "--lock", "q:T"]);
    assert_eq!(f.status.code(), Some(64), "{f}");
    assert!(f.stderr.contains("one of is, ix, s, u, six, x"), "{f}");
    let f = plex.run(&["hold", "--member", "B", "--lock", "T"]);
    assert_eq!(f.status.code(), Some(64), "{f}");
    let f = plex.run(&["try", "--member", "B", "--lock", "ix:T", "--s", "T"]);
    assert_eq!(f.status.code(), Some(64), "one request: {f}");
    for cmd in ["hold", "try"] {
        let help = plex.run(&[cmd, "--help"]).stdout;
        for w in [
            "--lock <MODE:RES>",
            "--modify-lock <MODE:RES>",
            "intent exclusive",
            "retained ix",
        ] {
            assert!(help.contains(w), "{cmd} --help: {w:?} in {help}");
        }
        assert!(
            help.lines().all(|l| l == l.trim_end()),
            "no trailing spaces: {help:?}"
        );
        // The table's row of IX: compatible with IS and IX only.
        assert!(
            help.lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>()
                    == ["ix", "yes", "yes", "-", "-", "-", "-"]),
            "{cmd} --help: {help}"
        );
    }
}

#[test]
fn displays_an_operator_knows() {
    let plex = TestPlex::small();
    // display alone lists the displays (a usage error).
    let f = plex.run(&["display"]);
    assert_eq!(f.status.code(), Some(64), "{f}");
    for w in ["structures", "structure NAME", "contention", "accounts"] {
        assert!(f.stdout.contains(w), "{w}: {f}");
    }
    // No structure of unknown kind; usage shown.
    let s = plex.json(&["display", "structures"]);
    for st in s.as_array().unwrap() {
        assert_ne!(st["kind"], "unknown", "{st}");
    }
    let text = plex.run(&["display", "structures"]).stdout;
    assert!(text.contains("entries in use"), "{text}");
    assert!(
        text.lines().all(|l| l == l.trim_end()),
        "no trailing spaces: {text:?}"
    );
    // Holder and waiter: contention shows both, with modes.
    let mut a = plex.hold("A", &[("x", "r1")]);
    let mut b = plex.spawn(&["hold", "--member", "B", "--s", "r1", "--timeout", "60s"]);
    common::eventually("B waits", || {
        plex.json(&["display", "contention"])["contention"]
            .as_array()
            .is_some_and(|c| {
                c.iter()
                    .any(|w| w["status"] == "WAIT" && w["member"] == "B")
            })
    });
    let c = plex.json(&["display", "contention", "--resource", "r*"]);
    let rows = c["contention"].as_array().unwrap();
    assert!(
        rows.iter()
            .any(|r| r["member"] == "A" && r["status"] == "OWN" && r["mode"] == "exclusive"),
        "{c}"
    );
    assert!(
        rows.iter()
            .any(|r| r["member"] == "B" && r["status"] == "WAIT" && r["mode"] == "share"),
        "{c}"
    );
    let only_a = plex.json(&["display", "locks", "--member", "A"]);
    assert!(
        only_a
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["member"] == "A"),
        "{only_a}"
    );
    // One structure, each connector with its counts.
    let lock = plex.json(&["display", "structure", "lock"]);
    let conns = lock["connectors"].as_array().unwrap();
    assert!(
        conns.iter().any(|c| c["name"] == "A"
            && c["held"] == 1
            && c["state"] == "active"
            && c["requests"].is_u64()
            && c["false_contention"].is_u64()),
        "{lock}"
    );
    // --json before the subcommand works too.
    let out = plex
        .command(&["--json", "display", "members"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .is_array());
    // The activity report: one document per interval.
    let r = plex.run(&["report", "--interval", "100ms", "--count", "2", "--json"]);
    assert!(r.status.success(), "{r}");
    let docs: Vec<Value> = r.stdout.lines().map(json_lines).collect();
    assert_eq!(docs.len(), 2, "{r}");
    assert!(docs[0]["connectors"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["connector"] == "A"));
    for c in docs[0]["connectors"].as_array().unwrap() {
        let st = &c["service_time"];
        assert_eq!(st["buckets"].as_array().map(|b| b.len()), Some(12), "{c}");
        assert!(c["retained_refusals_per_s"].is_number(), "{c}");
        // A percentile is given exactly when something was sampled.
        assert_eq!(st["sampled"] == 0, st["p50_ns_at_most"].is_null(), "{c}");
    }
    a.term();
    a.expect_exit_ok();
    b.term();
    b.expect_exit_ok();
}

/// A restart light reports its own peak memory, not the peak of the member
/// that started it: `getrusage`'s `ru_maxrss` keeps the spawning process's
/// high-water mark across `execve` (a light started by a member with a
/// 64 MiB buffer pool reported 64 MiB), `VmHWM` is this program's.
#[test]
fn a_restart_light_reports_its_own_peak_memory() {
    let plex = plex_made_with(&["--accounts", "10", "--lock-entries", "16"]);
    let mut m = plex.spawn_node("run", &["--member", "BIG", "--buffer-pool-mb", "64"], &[]);
    m.wait_line(|l| l.contains("running"));
    let mut h = plex.hold("A", &[("modify", "acct:1")]);
    h.kill_and_reap();
    let light = || {
        plex.json(&["display", "events"]).as_array().and_then(|e| {
            e.iter()
                .find(|e| e["kind"] == "terminated_normally" && e["member"] == "A")
                .cloned()
        })
    };
    common::eventually("A's restart light to end", || light().is_some());
    let peak = light()
        .and_then(|e| e["peak_rss_kib"].as_u64())
        .unwrap_or(0);
    assert!(peak > 0, "a peak is reported");
    assert!(
        peak < 32 * 1024,
        "the light's own peak ({peak} KiB), not its 64 MiB starter's"
    );
    m.term();
    assert!(m.finish().status.success());
}

#[test]
fn a_member_counts_the_deaths_it_detected() {
    let plex = plex_made_with(&["--accounts", "10", "--lock-entries", "16"]);
    let mut m = plex.spawn_node(
        "run",
        &["--member", "SYSB", "--json", "--buffer-pool-mb", "1"],
        &[],
    );
    m.wait_line(|l| l.contains("running"));
    let mut h = plex.hold("A", &[("modify", "acct:1"), ("x", "acct:2")]);
    h.kill_and_reap();
    common::eventually("A's death detected", || {
        plex.json(&["display", "events"])
            .as_array()
            .is_some_and(|e| {
                e.iter()
                    .any(|e| e["kind"] == "detected" && e["member"] == "A")
            })
    });
    let by_sysb = plex
        .json(&["display", "events"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "detected" && e["by"] == "SYSB")
        .count() as u64;
    m.term();
    let f = m.finish();
    assert!(f.status.success(), "{f}");
    let last = json_lines(f.stdout.lines().last().unwrap());
    assert_eq!(last["detections"].as_u64(), Some(by_sysb), "{f}");
    assert!(by_sysb >= 1, "SYSB was the only one left to detect it");
}

#[test]
fn sim_report_adds_up_honours_cf_plex_and_writes_csv_and_charts() {
    let p = EmptyPlex::new();
    let charts = scratch();
    let out = cfctl()
        .env("CF_PLEX", p.path())
        .args([
            "sim",
            "--members",
            "3",
            "--duration",
            "2s",
            "--kill-every",
            "250ms",
            "--seed",
            "7",
            "--read-pct",
            "30",
            "--tx-size",
            "3",
            "--skew",
            "hot:5:80",
            "--kill-restarters",
            "--json",
            "--plot",
        ])
        .arg(charts.path().join("c"))
        .output()
        .unwrap();
    let v = json_lines(&String::from_utf8_lossy(&out.stdout));
    assert!(out.status.success(), "{v}");
    assert_eq!(
        v["plex"],
        p.path().display().to_string(),
        "$CF_PLEX is the sim's plex"
    );
    assert_eq!(v["seed"], 7);
    assert_eq!(v["config"]["tx_size"], 3);
    // Durations in the configuration are seconds, under names without a unit.
    assert_eq!(v["config"]["kill_every"], 0.25, "{v}");
    assert_eq!(
        v["config"]["pause"], 0.0005,
        "--pause-us 500 (the default): {v}"
    );
    assert!(v["config"].get("pause_us").is_none(), "{v}");
    assert_eq!(v["program"]["version"], env!("CARGO_PKG_VERSION"));
    for k in ["faults", "kills"] {
        let by: u64 = v[k]["by_kind"]
            .as_object()
            .unwrap()
            .values()
            .map(|x| x.as_u64().unwrap())
            .sum();
        assert_eq!(v[k]["total"].as_u64(), Some(by), "{k} add up: {v}");
    }
    let by: u64 = v["deaths"]["by_cause"]
        .as_object()
        .unwrap()
        .values()
        .map(|x| x.as_u64().unwrap())
        .sum();
    assert_eq!(v["deaths"]["total"].as_u64(), Some(by), "{v}");
    assert!(v["kills"]["total"].as_u64() >= Some(1), "{v}");
    assert!(
        v["by_kind"]["read"]["count"].as_u64() >= Some(1),
        "reads ran: {v}"
    );
    assert!(
        v["detection"]["p99"].is_number() || v["detection"]["count"] == 0,
        "{v}"
    );
    for f in [
        "throughput.svg",
        "detection.svg",
        "recovery.svg",
        "recoveries.svg",
    ] {
        let svg = std::fs::read_to_string(charts.path().join("c").join(f)).unwrap();
        assert!(svg.contains("<svg"), "{f}");
    }
    // Each row of the recovery timeline is named (member, PID, time of death).
    if v["recoveries"].as_u64() >= Some(1) {
        let svg = std::fs::read_to_string(charts.path().join("c/recoveries.svg")).unwrap();
        assert!(svg.contains(" pid "), "rows named: {svg}");
    }
    // The README shows charts of these names, committed beside it.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let linked: Vec<&str> = readme
        .split("](docs/charts/")
        .skip(1)
        .filter_map(|rest| rest.split(')').next())
        .collect();
    assert!(!linked.is_empty(), "the README links charts");
    for f in linked {
        assert!(
            [
                "throughput.svg",
                "detection.svg",
                "recovery.svg",
                "recoveries.svg"
            ]
            .contains(&f),
            "the README links {f}, which --plot does not write"
        );
        let svg = std::fs::read_to_string(root.join("docs/charts").join(f)).unwrap();
        assert!(svg.contains("<svg"), "{f}");
    }
    // The key order is stable: the same run's keys in the same order.
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys[0], "program");
    assert_eq!(keys[1], "seed");
    assert_eq!(keys[2], "config");

    let out = cfctl()
        .args([
            "sim",
            "--members",
            "2",
            "--duration",
            "500ms",
            "--kill-every",
            "200ms",
            "--csv",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "a header and one row: {text}");
    assert!(
        lines[0].starts_with("program.name,program.version,seed,config.members"),
        "{text}"
    );
}

#[test]
fn completions_and_man_page_come_from_the_definitions() {
    for shell in ["bash", "zsh", "fish"] {
        let out = cfctl().args(["completions", shell]).output().unwrap();
        assert!(out.status.success());
        let s = String::from_utf8_lossy(&out.stdout);
        assert!(s.contains("display") && s.contains("sim"), "{shell}");
    }
    let out = cfctl().arg("man").output().unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains(".TH cfctl"), "{s}");
    let help = cfctl().arg("--help").output().unwrap();
    let h = String::from_utf8_lossy(&help.stdout);
    for line in [
        "2    contention",
        "3    retained",
        "4    timed out",
        "5    an invariant broke",
        "64   usage",
    ] {
        assert!(h.contains(line), "the exit-status table in --help: {h}");
    }
}

#[test]
fn a_seeded_workload_of_every_shape_keeps_the_history() {
    let plex = plex_made_with(&["--accounts", "50", "--history", "--lock-entries", "16"]);
    let mut m = plex.spawn_node(
        "run",
        &[
            "--member",
            "W",
            "--json",
            "--seed",
            "5",
            "--skew",
            "zipf:1.1",
            "--read-pct",
            "40",
            "--tx-size",
            "3",
            "--think",
            "100us",
            "--rate",
            "2000",
            "--threads",
            "2",
            "--buffer-pool-mb",
            "1",
        ],
        &[],
    );
    m.wait_line(|l| l.contains("running"));
    let t = Instant::now();
    common::eventually("transactions", || t.elapsed() > Duration::from_millis(500));
    m.term();
    let f = m.finish();
    assert!(f.status.success(), "{f}");
    let v = json_lines(f.stdout.lines().last().unwrap());
    assert_eq!(v["seed"], 5);
    assert!(v["committed"].as_u64() >= Some(1), "{v}");
    assert!(v["reads"].as_u64() >= Some(1), "{v}");
    assert!(v["latency_us"]["read"]["p50"].is_number(), "{v}");
    let c = cf_node::history::check(plex.path()).expect("history readable");
    assert!(c.is_consistent(), "{c}");
    let a = plex.run(&["display", "accounts", "--json"]);
    assert_eq!(a.json()["balanced"], true, "{a}");
    let _ = ExitStatusExt::signal(&f.status);
}

#[test]
fn the_three_kinds_of_contention_are_displayed_and_reported_apart() {
    let plex = TestPlex::small();
    let t2 = common::colliding("T", plex.entries(), "T-other-", &[]);
    let mut hold = plex.hold("A", &[("lock", "ix:T")]);
    // XES: IX beside IX. False: X on another resource of T's entry. IRLM:
    // S against IX. A retained refusal needs a failed member: below.
    plex.assert_granted("B", "lock", "ix:T");
    plex.assert_granted("B", "x", &t2);
    plex.assert_contention("B", "s", "T", &["A"]);
    hold.term();
    hold.expect_exit_ok();
    let mut dead = plex.hold("C", &[("modify", "R")]);
    dead.kill_and_reap();
    plex.assert_retained_by("B", "s", "R", "C");
    let c = plex.counters();
    assert_eq!(
        (
            c.irlm_contention,
            c.xes_contention,
            c.false_contention,
            c.retained_refusals
        ),
        (2, 1, 1, 1),
        "{c:?}"
    );
    // display contention: the structure's counts and rates, per connector
    // too (C's refused request was B's), and the retained resource.
    let v = plex.json(&["display", "contention"]);
    let s = &v["lock_structure"];
    assert_eq!(
        (
            &s["irlm_contention"],
            &s["xes_contention"],
            &s["false_contention"],
            &s["global_contention"]
        ),
        (&2.into(), &1.into(), &1.into(), &4.into()),
        "{v}"
    );
    let rate = s["xes_contention_rate"].as_f64().unwrap();
    let requests = s["requests"].as_u64().unwrap();
    assert!((rate - 1.0 / requests as f64).abs() < 1e-12, "{v}");
    let f = plex.run(&["display", "contention"]);
    assert!(f.stdout.contains("XES 1 ("), "{f}");
    assert!(f.stdout.contains("retained refusals 1"), "{f}");
    assert!(f.stdout.contains("RETAINED"), "the retained resource: {f}");
    // display structures and structure NAME show the same counts.
    let f = plex.run(&["display", "structures"]);
    assert!(f.stdout.contains("IRLM 2 ("), "{f}");
    let v = plex.json(&["display", "structure", "LOCK"]);
    assert_eq!(v["retained_refusals"], 1, "{v}");
    // The activity report names each kind per second and in percent.
    let f = plex.run(&["report", "--count", "1", "--interval", "100ms", "--json"]);
    assert!(f.status.success(), "{f}");
    let doc: Value = serde_json::from_str(f.stdout.lines().next().unwrap()).unwrap();
    for key in [
        "irlm_contention_pct",
        "xes_contention_per_s",
        "false_contention_pct",
        "global_contention_pct",
        "retained_refusals_per_s",
    ] {
        assert!(doc["lock_structure"][key].is_number(), "{key}: {doc}");
    }
    plex.recover_light("C", &["R"]);
}

#[test]
fn hold_converts_a_lock_it_holds() {
    let plex = TestPlex::small();
    // S then X on one resource: promoted in place; the JSON shows the mode.
    let mut p = plex.spawn(&[
        "hold",
        "--member",
        "A",
        "--s",
        "acct",
        "--convert",
        "x:acct",
        "--json",
    ]);
    let line = p.wait_holding();
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["holding"][0]["mode"], "exclusive", "{v}");
    assert_eq!(v["holding"].as_array().unwrap().len(), 1, "{v}");
    plex.assert_contention("B", "s", "acct", &["A"]);
    p.term();
    p.expect_exit_ok();
    // A promotion that has to wait for another member's S times out: exit 4,
    // and the S it held is given back.
    let mut other = plex.hold("B", &[("s", "acct")]);
    let f = plex.run(&[
        "hold",
        "--member",
        "A",
        "--s",
        "acct",
        "--convert",
        "x:acct",
        "--timeout",
        "200ms",
    ]);
    assert_eq!(f.status.code(), Some(4), "timed out: {f}");
    assert!(f.stderr.contains("could not convert acct"), "{f}");
    assert_eq!(
        plex.locks().len(),
        1,
        "only B's S is left: {:?}",
        plex.locks()
    );
    other.term();
    other.expect_exit_ok();
    // A resource the command does not take: a usage error, nothing connected.
    let f = plex.run(&[
        "hold",
        "--member",
        "A",
        "--s",
        "acct",
        "--convert",
        "x:other",
    ]);
    assert_eq!(f.status.code(), Some(64), "{f}");
    assert!(f.stderr.contains("not one of the locks"), "{f}");
    assert!(plex.members().is_empty());
    plex.assert_empty_and_clean();
}
