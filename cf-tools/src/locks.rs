//! `hold`, `try`, `cleanup`: lock requests from the command line.

use anyhow::{bail, Context, Result};
use cf_core::{HolderInfo, LockId, LockMode, Member, Mode, Plex, Region, TryOutcome, WaitError};
use cf_harness::outln;
use clap::Args;
use serde_json::{json, Value};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args)]
pub struct HoldArgs {
    /// Member name to connect as
    #[arg(long)]
    member: String,
    /// Resource to hold in share mode (repeatable)
    #[arg(long = "s", value_name = "RES")]
    share: Vec<String>,
    /// Resource to hold exclusively (repeatable; released if this member dies)
    #[arg(long = "x", value_name = "RES")]
    exclusive: Vec<String>,
    /// Resource to hold exclusively for modification (repeatable; retained if this member dies)
    #[arg(long = "modify", value_name = "RES")]
    modify: Vec<String>,
    /// Resource to hold in lock mode MODE: is, ix, s, u, six or x (repeatable; released if this
    /// member dies). The modes and their table are below
    #[arg(long = "lock", value_name = "MODE:RES", value_parser = mode_and_resource)]
    lock: Vec<(LockMode, String)>,
    /// Resource to hold in lock mode MODE with the modify flag (repeatable; retained if this
    /// member dies, refusing what MODE is incompatible with)
    #[arg(long = "modify-lock", value_name = "MODE:RES", value_parser = mode_and_resource)]
    modify_lock: Vec<(LockMode, String)>,
    /// Once every lock is taken, convert the lock held on RES to MODE without releasing it
    /// (repeatable, in order): promotion (s to x, u to x, ix to six) or demotion (x to s),
    /// waiting like a request; the modify flag is kept. RES must be one this command holds
    #[arg(long = "convert", value_name = "MODE:RES", value_parser = mode_and_resource)]
    convert: Vec<(LockMode, String)>,
    /// Also hold N modify locks named <MEMBER>:<i>, each on its own lock table entry (names
    /// that would share an entry are skipped); the region needs N records per member
    #[arg(long, value_name = "N", default_value_t = 0)]
    modify_many: u64,
    /// How long to wait for each lock held by a live member: 30s, 500ms (a bare number is
    /// milliseconds). Running out exits with status 4 (timed out), a retained lock with 3
    #[arg(long, alias = "timeout", default_value = "30000", value_parser = cf_harness::duration::millis)]
    timeout_ms: Duration,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

/// `MODE:RESOURCE` of `--lock` and `--modify-lock` (the resource is what
/// follows the first colon, and may hold colons of its own).
fn mode_and_resource(s: &str) -> Result<(LockMode, String), String> {
    let Some((mode, res)) = s.split_once(':') else {
        return Err(format!(
            "{s:?} is not MODE:RESOURCE (MODE one of {})",
            mode_names()
        ));
    };
    let mode = mode.parse::<LockMode>().map_err(|e| e.to_string())?;
    Ok((mode, res.to_string()))
}

fn mode_names() -> String {
    LockMode::ALL.map(LockMode::as_str).join(", ")
}

/// The help of `hold` and `try` after their options: the lock modes and
/// their table (printed from cf-core's, so it cannot drift), and what is
/// retained.
pub fn modes_help() -> String {
    let mut t = String::from(
        "Lock modes (--lock MODE:RES, --modify-lock MODE:RES):\n  \
         is intent share, ix intent exclusive, s share, u update, six share with intent \
         exclusive, x exclusive.\n  \
         --s RES is --lock s:RES, --x RES is --lock x:RES, --modify RES is --modify-lock x:RES.\n\n\
         Which modes may be held on one resource at once (by two members, or two threads of \
         one; symmetric):\n      ",
    );
    let mut header = String::new();
    for m in LockMode::ALL {
        header.push_str(&format!(" {:<4}", m.as_str()));
    }
    t.push_str(header.trim_end());
    for held in LockMode::ALL {
        let mut row = format!("\n  {:<4}", held.as_str());
        for asked in LockMode::ALL {
            let yes = if held.compatible(asked) { "yes" } else { "-" };
            row.push_str(&format!(" {yes:<4}"));
        }
        t.push_str(row.trim_end());
    }
    t.push_str(
        "\n\nA modify lock (--modify, --modify-lock) is retained if its member dies: until the \
         member is recovered it refuses every request its mode is incompatible with (a retained \
         ix refuses s, u, six and x, and grants is and ix). Other locks are released at the \
         death.\nIn the lock word, is and s take share interest and the others exclusive \
         interest: compatible modes with exclusive interest (ix beside ix) are granted from the \
         record entries (XES contention).",
    );
    t
}

fn requests(a: &HoldArgs, entries: u32) -> Result<Vec<(String, Mode)>> {
    let mut v: Vec<(String, Mode)> = Vec::new();
    v.extend(a.share.iter().map(|r| (r.clone(), Mode::Share)));
    v.extend(a.exclusive.iter().map(|r| (r.clone(), Mode::Exclusive)));
    v.extend(a.modify.iter().map(|r| (r.clone(), Mode::Modify)));
    v.extend(a.lock.iter().map(|(m, r)| (r.clone(), Mode::lock(*m))));
    v.extend(
        a.modify_lock
            .iter()
            .map(|(m, r)| (r.clone(), Mode::modify(*m))),
    );
    let asked = v.len() as u64;
    if a.modify_many > entries as u64 {
        bail!(
            "--modify-many {} is more than the {entries} lock table entries",
            a.modify_many
        );
    }
    // Distinct entries, so that acquiring them never goes through the
    // resource-level path (whose cost grows with what the member holds).
    let mut used = vec![false; entries as usize];
    let mut i = 0u64;
    while (v.len() as u64) < a.modify_many + asked {
        let name = format!("{}:{i}", a.member);
        i += 1;
        let e = cf_core::Resource::new(name.as_bytes()).map_or(0, |r| r.entry(entries).index());
        if !used[e] {
            used[e] = true;
            v.push((name, Mode::Modify));
        }
    }
    Ok(v)
}

fn holder_json(h: &HolderInfo) -> Value {
    json!({ "member": h.name, "id": h.id, "pid": h.pid, "mode": h.mode.as_str(),
            "lock_mode": h.mode.lock_mode().as_str(), "modify": h.mode.is_modify() })
}

/// Why a lock could not be taken, for the exit status.
#[derive(Debug)]
struct NotTaken {
    text: String,
    code: u8,
}

impl std::fmt::Display for NotTaken {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for NotTaken {}

/// Refuse a resource name no lock request would take (before connecting).
fn check_resource(res: &str) -> Result<()> {
    if cf_core::Resource::new(res.as_bytes()).is_none() {
        bail!(
            "bad resource {:?}: a resource name has 1 to {} bytes ({} given)",
            cf_core::inspect::escape(res),
            cf_core::layout::MAX_RESOURCE,
            res.len()
        );
    }
    Ok(())
}

pub fn hold(plex: &Plex, a: HoldArgs) -> Result<ExitCode> {
    let signals = cf_node::signals::StopWait::install().context("installing signal handlers")?;
    // Every argument is checked before connecting: an error leaves no connector.
    cf_core::connector::check_name(&a.member)?;
    let region = Arc::new(Region::open(plex)?);
    let wanted = requests(&a, region.lock_entries())?;
    if wanted.is_empty() {
        bail!("nothing to hold: give --s, --x, --modify, --lock, --modify-lock or --modify-many");
    }
    for (res, _) in &wanted {
        check_resource(res)?;
    }
    for (mode, res) in &a.convert {
        if !wanted.iter().any(|(r, _)| r == res) {
            cf_harness::usage!(
                "--convert {mode}:{res}: {res} is not one of the locks this command takes"
            );
        }
    }
    // What the member will hold must fit its record area: checked before
    // connecting, so a refusal leaves no connector behind.
    if wanted.len() as u64 > region.records_per_member() as u64 {
        bail!(
            "{} locks asked for, but a member of this region holds at most {} (its record entries; cfctl create --records)",
            wanted.len(),
            region.records_per_member()
        );
    }
    let member = Member::connect(region, &a.member)?;
    // Whatever happens after the connect, the connector is given back.
    let held = take_and_hold(&member, &a, &wanted, signals);
    let report = member.disconnect();
    let (sig, n) = match held {
        Ok(x) => x,
        Err(e) => {
            if let Some(nt) = e.downcast_ref::<NotTaken>() {
                eprintln!("cfctl: {nt}");
                return Ok(cf_harness::exit::code(nt.code));
            }
            return Err(e);
        }
    };
    let report = report?;
    if !a.json {
        outln!(
            "{sig}: released {n} lock(s), disconnected ({} more released at disconnect)",
            report.released
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Take `wanted`, report them, hold them until a stop signal, release them.
/// Returns the signal and how many were held.
fn take_and_hold(
    member: &Member,
    a: &HoldArgs,
    wanted: &[(String, Mode)],
    mut signals: cf_node::signals::StopWait,
) -> Result<(&'static str, usize)> {
    let mut holder = member.holder()?;
    let mut held: Vec<(LockId, String)> = Vec::new();
    let steps = wanted
        .iter()
        .map(|(res, mode)| (res, *mode, false))
        .chain(a.convert.iter().map(|(m, res)| (res, Mode::lock(*m), true)));
    for (res, mode, convert) in steps {
        let answer = if convert {
            // Checked before connecting: the resource is held.
            let i = held.iter().rposition(|(_, r)| r == res).unwrap_or_default();
            holder
                .convert(held[i].0, mode, a.timeout_ms)
                .map(|id| held[i].0 = id)
        } else {
            holder
                .lock(res.as_bytes(), mode, a.timeout_ms)
                .map(|id| held.push((id, res.clone())))
        };
        if let Err(e) = answer {
            for (id, _) in std::mem::take(&mut held) {
                let _ = holder.unlock(id);
            }
            let code = match e {
                WaitError::Retained(_) => cf_harness::exit::RETAINED,
                WaitError::Timeout(_) => cf_harness::exit::TIMED_OUT,
                WaitError::Deadlock { .. } => cf_harness::exit::DEADLOCK,
                e => return Err(e.into()),
            };
            let what = if convert { "convert" } else { "take" };
            return Err(NotTaken {
                text: format!("could not {what} {res} ({mode}): {e}"),
                code,
            }
            .into());
        }
    }
    if a.json {
        let locks: Vec<Value> = held
            .iter()
            .map(|(id, r)| json!({ "resource": r, "mode": id.mode.as_str(), "entry": id.entry }))
            .collect();
        outln!(
            "{}",
            json!({ "holding": locks, "member": member.name(), "id": member.id(), "pid": std::process::id() })
        );
    } else {
        outln!(
            "holding {} lock(s) as {} (connector {}, pid {}); SIGTERM or Ctrl-C releases them",
            held.len(),
            member.name(),
            member.id(),
            std::process::id()
        );
    }
    cf_harness::out::flush();
    let sig = signals.wait();
    let n = held.len();
    for (id, _) in held {
        holder.unlock(id)?;
    }
    Ok((sig, n))
}

#[derive(Args)]
pub struct TryArgs {
    /// Member name to connect as
    #[arg(long)]
    member: String,
    /// Ask for a share lock
    #[arg(long = "s", value_name = "RES", group = "request")]
    share: Option<String>,
    /// Ask for an exclusive lock
    #[arg(long = "x", value_name = "RES", group = "request")]
    exclusive: Option<String>,
    /// Ask for an exclusive modify lock
    #[arg(long = "modify", value_name = "RES", group = "request")]
    modify: Option<String>,
    /// Ask for a lock in lock mode MODE: is, ix, s, u, six or x (the modes and their table are
    /// below)
    #[arg(long = "lock", value_name = "MODE:RES", group = "request", value_parser = mode_and_resource)]
    lock: Option<(LockMode, String)>,
    /// Ask for a lock in lock mode MODE with the modify flag
    #[arg(long = "modify-lock", value_name = "MODE:RES", group = "request", value_parser = mode_and_resource)]
    modify_lock: Option<(LockMode, String)>,
    /// Print the answer as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn try_once(plex: &Plex, a: TryArgs) -> Result<ExitCode> {
    let asked: Vec<(String, Mode)> = [
        a.share.clone().map(|r| (r, Mode::Share)),
        a.exclusive.clone().map(|r| (r, Mode::Exclusive)),
        a.modify.clone().map(|r| (r, Mode::Modify)),
        a.lock.clone().map(|(m, r)| (r, Mode::lock(m))),
        a.modify_lock.clone().map(|(m, r)| (r, Mode::modify(m))),
    ]
    .into_iter()
    .flatten()
    .collect();
    let [(res, mode)] = &asked[..] else {
        bail!("give exactly one of --s, --x, --modify, --lock, --modify-lock");
    };
    let (res, mode) = (res.clone(), *mode);
    // Every argument is checked before connecting: an error leaves no connector.
    cf_core::connector::check_name(&a.member)?;
    check_resource(&res)?;
    let region = Arc::new(Region::open(plex)?);
    let member = Member::connect(region, &a.member)?;
    // Whatever happens after the connect, the connector is given back.
    let answer = ask_once(&member, &res, mode);
    let disconnected = member.disconnect();
    let (doc, text, code) = answer?;
    disconnected?;
    if a.json {
        crate::print_json(&doc);
    } else {
        outln!("{text}");
    }
    Ok(code)
}

/// One try request (released at once if granted): the answer as JSON, text
/// and exit status.
fn ask_once(member: &Member, res: &str, mode: Mode) -> Result<(Value, String, ExitCode)> {
    let mut holder = member.holder()?;
    let outcome = holder.try_lock(res.as_bytes(), mode)?;
    let answer = match &outcome {
        TryOutcome::Granted(id) => (
            json!({ "result": "granted", "resource": res, "requested_mode": mode.as_str(), "mode": mode.as_str(), "entry": id.entry }),
            format!("granted: {res} ({mode}) on lock entry {}", id.entry),
            ExitCode::SUCCESS,
        ),
        TryOutcome::Contention(hs) => (
            json!({ "result": "contention", "resource": res, "requested_mode": mode.as_str(),
                    "holders": hs.iter().map(holder_json).collect::<Vec<_>>() }),
            format!(
                "contention: {res} is held by {}",
                WaitError::Timeout(hs.clone())
                    .to_string()
                    .trim_start_matches("timed out; held by ")
            ),
            cf_harness::exit::code(cf_harness::exit::CONTENTION),
        ),
        TryOutcome::Retained(h) => (
            json!({ "result": "retained", "resource": res, "requested_mode": mode.as_str(),
                    "member": h.name, "id": h.id, "holder_mode": h.mode.as_str() }),
            format!(
                "retained: {res} is retained ({}) by failed member {} until its recovery ends",
                h.mode, h.name
            ),
            cf_harness::exit::code(cf_harness::exit::RETAINED),
        ),
    };
    if let TryOutcome::Granted(id) = outcome {
        holder.unlock(id)?;
    }
    Ok(answer)
}

#[derive(Args)]
pub struct CleanupArgs {
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn cleanup(plex: &Plex, a: CleanupArgs) -> Result<ExitCode> {
    let region = Region::open(plex)?;
    let done = cf_core::recovery::cleanup_all_dead(&region)?;
    if a.json {
        let v: Vec<Value> = done
            .iter()
            .map(|r| json!({ "member": r.name, "id": r.member, "released": r.released,
                             "retained": r.retained, "discarded": r.discarded, "state": r.state.as_str() }))
            .collect();
        crate::print_json(&Value::Array(v));
    } else if done.is_empty() {
        outln!("no dead member to clean up");
    } else {
        for r in &done {
            outln!(
                "cleaned up {}: {} released, {} retained, {} discarded; now {}",
                r.name,
                r.released,
                r.retained,
                r.discarded,
                r.state.as_str()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
