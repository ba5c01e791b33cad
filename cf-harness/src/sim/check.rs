//! The checks of `cfctl sim` over what it saw: the events of the region and
//! the member processes it started (with how and when each one ended). Pure
//! functions of that history, so they are unit-tested on made-up histories.
//!
//! Every failed check says which member, which life or death, and which
//! events break it, so that a failed soak can be diagnosed from its report.

use cf_core::events::{Completion, Event, EventData, EventKind};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

/// Broken lives or deaths shown in full in a report (the rest are counted).
const SHOWN: usize = 5;
/// Events shown per broken life (its first and last ones).
const EVENTS_SHOWN: usize = 48;

/// How a member process the sim started came to an end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndHow {
    /// Killed by the sim, by a fault of this kind.
    Killed(&'static str),
    /// Died at its armed crash point (`name@n`).
    CrashPoint(String),
    /// Ended by itself otherwise (exit code or signal): a bug or a failed start.
    Exited(String),
    /// Stopped normally (SIGTERM, exit status 0).
    Stopped,
}

/// One member process started by the sim.
#[derive(Clone, Debug)]
pub struct ProcLife {
    pub name: String,
    pub pid: u32,
    pub started_ns: u64,
    /// It printed its "running" line, so it was connected.
    pub running: bool,
    /// A connector slot named its PID when it ended.
    pub had_slot: bool,
    /// When it ended (exact: the kill, or its crash point's marker file) and how.
    pub end: Option<(u64, EndHow)>,
}

impl ProcLife {
    fn died(&self) -> Option<(u64, &EndHow)> {
        match &self.end {
            Some((_, EndHow::Stopped)) | None => None,
            Some((t, how)) => Some((*t, how)),
        }
    }
}

/// The steps of a recovery, as events, in pipeline order, with the short
/// label tables and charts give them (`cfctl bench`, `cfctl sim --plot`);
/// reports name a step by its event kind (`EventKind::as_str`).
pub const STEPS: [(EventKind, &str); 8] = [
    (EventKind::Detected, "detected"),
    (EventKind::CleanedUp, "cleaned"),
    (EventKind::RequestPosted, "posted"),
    (EventKind::Claimed, "claimed"),
    (EventKind::RestartLightStarted, "RL start"),
    (EventKind::BackedOut, "backed out"),
    (EventKind::Released, "released"),
    (EventKind::TerminatedNormally, "terminated"),
];

fn how_str(h: &EndHow) -> String {
    match h {
        EndHow::Killed(k) => format!("killed ({k})"),
        EndHow::CrashPoint(p) => format!("died at crash point {p}"),
        EndHow::Exited(s) => format!("ended by itself ({s})"),
        EndHow::Stopped => "stopped".into(),
    }
}

/// Seconds since the sim started, for reports.
fn rel(t_ns: u64, t0_ns: u64) -> String {
    let d = t_ns as i128 - t0_ns as i128;
    format!("{:+.6}s", d as f64 / 1e9)
}

fn event_line(e: &Event, t0: u64) -> String {
    let by =
        e.by.as_deref()
            .map_or(String::new(), |b| format!(" by {b}"));
    let pid = match e.data {
        EventData::Detected { pid }
        | EventData::Connected { pid }
        | EventData::Claimed { pid, .. }
        | EventData::RestartLightStarted { pid } => format!(" pid {pid}"),
        _ => String::new(),
    };
    format!(
        "#{} {} {}{}{}",
        e.seq,
        e.kind().as_str(),
        rel(e.time_ns, t0),
        by,
        pid
    )
}

fn event_json(e: &Event, t0: u64) -> Value {
    let mut v = json!({
        "seq": e.seq, "kind": e.kind().as_str(), "t_s": (e.time_ns as f64 - t0 as f64) / 1e9,
        "by": e.by,
    });
    add_data_fields(&mut v, &e.data);
    v
}

/// Add the named fields of `data` (its `serde` form without its `kind`,
/// e.g. `"pid"` and `"taken_over"` of a claim) to the JSON object `v`: the
/// events of the sim's reports and of `--history-out`.
pub fn add_data_fields(v: &mut Value, data: &EventData) {
    let (Value::Object(o), Ok(Value::Object(fields))) = (v, serde_json::to_value(data)) else {
        return;
    };
    o.extend(fields.into_iter().filter(|(k, _)| k != "kind"));
}

/// The epoch of the request a `recovery_completed` completes.
fn completed_epoch(e: &Event) -> Option<u32> {
    match e.data {
        EventData::RecoveryCompleted { epoch, .. } => Some(epoch),
        _ => None,
    }
}

/// Sequence numbers below `head` that the sim never read (torn by a kill
/// mid-write, or overwritten in the ring before it read them).
pub fn missing_seqs(events: &BTreeMap<u64, Event>, head: u64) -> BTreeSet<u64> {
    (0..head).filter(|q| !events.contains_key(q)).collect()
}

/// The verdict of `one_restart_per_death`.
#[derive(Debug, Default)]
pub struct LifeCheck {
    /// Member lives looked at (one per `connected` event, plus each name's first).
    pub lives: u64,
    /// Lives whose events span an event the sim could not read.
    pub unverifiable: u64,
    /// One line per broken life (all of them).
    pub broken: Vec<String>,
    /// The first few broken lives with their events.
    pub evidence: Vec<Value>,
}

/// Every death of a member incarnation is followed by exactly one completed
/// recovery, and at most one restart light that terminated normally, before
/// the member connects again; a life without a death has no completion. A
/// life of a member runs from one of its `connected` events to the next (a
/// member records `connected` after any recovery of its previous life), or
/// ends with the completion its own normal restart recorded
/// ([`Completion::OwnRestart`]: the member is ACTIVE from there, so a death
/// before its `connected` is a new life's).
pub fn check_lives(events: &BTreeMap<u64, Event>, head: u64, t0: u64) -> LifeCheck {
    let missing = missing_seqs(events, head);
    let gap_in = |a: u64, b: u64| missing.range(a..=b).next().is_some();
    let mut by_name: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
    for e in events.values() {
        by_name.entry(e.member.as_str()).or_default().push(e);
    }
    let mut out = LifeCheck::default();
    for (name, evs) in by_name {
        // Split at `connected`: each life's events, with the `connected` that opened it.
        let mut lives: Vec<(Option<&Event>, Vec<&Event>)> = vec![(None, Vec::new())];
        for e in evs {
            if e.kind() == EventKind::Connected {
                lives.push((Some(e), Vec::new()));
                continue;
            }
            if let Some(l) = lives.last_mut() {
                l.1.push(e);
            }
            if matches!(
                e.data,
                EventData::RecoveryCompleted {
                    how: Completion::OwnRestart,
                    ..
                }
            ) {
                lives.push((Some(e), Vec::new()));
            }
        }
        // A completion belongs to the life whose request it completes: its
        // event may come after the member's next `connected` (the completer
        // does its CAS, then records the event; a handler records the
        // completion its killed light could not, once it notices), so one
        // of an epoch posted in an earlier life, and not in this one, goes
        // back to that life.
        for i in 1..lives.len() {
            let (before, after) = lives.split_at_mut(i);
            let here = &mut after[0].1;
            let posted_here = |epoch: u32, evs: &[&Event]| {
                evs.iter()
                    .any(|e| e.data == EventData::RequestPosted { epoch })
            };
            let mut k = 0;
            while k < here.len() {
                let e = here[k];
                let owner = completed_epoch(e)
                    .filter(|&epoch| !posted_here(epoch, here))
                    .and_then(|epoch| {
                        before.iter_mut().rev().find(|l| {
                            posted_here(epoch, &l.1)
                                && !l.1.iter().any(|x| completed_epoch(x) == Some(epoch))
                        })
                    });
                match owner {
                    Some(l) => {
                        l.1.push(e);
                        here.remove(k);
                    }
                    None => k += 1,
                }
            }
        }
        let n_lives = lives.len();
        for (i, (opened, evs)) in lives.iter().enumerate() {
            if opened.is_none() && evs.is_empty() {
                continue;
            }
            out.lives += 1;
            let count = |k: EventKind| evs.iter().filter(|e| e.kind() == k).count();
            let deaths = count(EventKind::Detected);
            // A completion is one request (its epoch): recorded at
            // least once (a handler records the one a killed restart light
            // could not, and may race the light's own record), so the same
            // epoch twice is one completion.
            let done = evs
                .iter()
                .filter_map(|e| completed_epoch(e))
                .collect::<std::collections::BTreeSet<u32>>()
                .len();
            let ended = count(EventKind::TerminatedNormally);
            let ok = if deaths > 0 { done == 1 } else { done == 0 } && ended <= 1;
            if ok {
                continue;
            }
            // The life's span: from its opening event to the next life's
            // `connected` (or to the end, for the last life).
            let first = opened.map(|e| e.seq).or(evs.first().map(|e| e.seq));
            let last = if i + 1 < n_lives {
                lives[i + 1].0.map(|e| e.seq)
            } else {
                Some(head.saturating_sub(1))
            };
            if let (Some(a), Some(b)) = (first, last) {
                if gap_in(a, b) {
                    out.unverifiable += 1;
                    continue;
                }
            }
            let opened_s = match opened {
                Some(Event {
                    seq,
                    time_ns,
                    data: EventData::Connected { pid },
                    ..
                }) => format!("connected #{seq} {} pid {pid}", rel(*time_ns, t0)),
                Some(c) => format!(
                    "after its own restart's {} #{} {}",
                    c.kind().as_str(),
                    c.seq,
                    rel(c.time_ns, t0)
                ),
                None => "first life".into(),
            };
            let closed = lives.get(i + 1).and_then(|l| l.0);
            let closed_s = match closed {
                Some(Event {
                    seq,
                    time_ns,
                    data: EventData::Connected { pid },
                    ..
                }) => format!("next connected #{seq} {} pid {pid}", rel(*time_ns, t0)),
                // The next life opens at its own restart's completion.
                Some(c) => format!(
                    "next life at its own restart's {} #{} {}",
                    c.kind().as_str(),
                    c.seq,
                    rel(c.time_ns, t0)
                ),
                None => "no later connect".into(),
            };
            let mut shown: Vec<&&Event> = evs.iter().collect();
            if shown.len() > EVENTS_SHOWN {
                let tail = shown.split_off(shown.len() - EVENTS_SHOWN / 2);
                shown.truncate(EVENTS_SHOWN / 2);
                shown.extend(tail);
            }
            let lines: Vec<String> = shown.iter().map(|e| event_line(e, t0)).collect();
            out.broken.push(format!(
                "{name} life {i} ({opened_s}; {closed_s}): {deaths} detected, {done} recovery_completed, \
                 {ended} terminated_normally; events: {}",
                lines.join(", ")
            ));
            if out.evidence.len() < SHOWN {
                out.evidence.push(json!({
                    "member": name, "life": i,
                    "connected": opened.map(|e| event_json(e, t0)),
                    "next_connected": closed.map(|e| event_json(e, t0)),
                    "detected": deaths, "recovery_completed": done, "terminated_normally": ended,
                    "events": shown.iter().map(|e| event_json(e, t0)).collect::<Vec<_>>(),
                }));
            }
        }
    }
    out
}

/// The verdict of `every_kill_recovered`, with the detection and recovery
/// times of every member death.
#[derive(Debug, Default)]
pub struct KillCheck {
    /// Member processes that died while connected (they need a recovery).
    pub deaths: usize,
    /// Member processes that died before they had a connector slot.
    pub before_connect: usize,
    pub detection_us: Vec<f64>,
    pub recovery_ms: Vec<f64>,
    /// Of member deaths by a fault other than a stop: each step of the
    /// recovery after the death, µs (`STEPS`).
    pub steps_us: std::collections::BTreeMap<&'static str, Vec<f64>>,
    /// Members stopped by a fault (`--stop-members`): from the stop to the
    /// `fenced` event and to the `detected` event, ms.
    pub stop_to_fenced_ms: Vec<f64>,
    pub stop_to_detected_ms: Vec<f64>,
    /// Deaths whose detection or completion may be an event the sim could not read.
    pub unverifiable: u64,
    /// Deaths with no recovery_completed after them (one line each).
    pub unrecovered: Vec<String>,
    /// Deaths with a connector slot but no `detected` event for their PID.
    pub undetected: Vec<String>,
    /// `detected` events for a member process before it died, or for one
    /// that never died (a live member declared dead).
    pub declared_dead_alive: Vec<String>,
    /// Deaths whose `detected` time is before the death (the cleaner looked
    /// just before, and found the process dead just after).
    pub timed_before_death: u64,
    /// The slowest detections, with who detected them.
    pub slowest: Vec<Value>,
    pub evidence: Vec<Value>,
}

/// A process that may own a `detected` event of its PID: when it started,
/// and which member process it is (None: a restart light).
type Owner = (u64, Option<usize>);

/// Match every death of a member process to the `detected` event of its PID
/// and the first `recovery_completed` of its name after that, and every
/// `detected` event of a member process to its death.
pub fn check_kills(
    procs: &[ProcLife],
    events: &BTreeMap<u64, Event>,
    head: u64,
    t0: u64,
) -> KillCheck {
    let missing = missing_seqs(events, head);
    // Each `detected` belongs to the process of its PID and member name that
    // started last before it: a member process, or a restart light (PIDs are
    // reused over a long run).
    let mut owners: BTreeMap<(u32, &str), Vec<Owner>> = BTreeMap::new();
    for (i, p) in procs.iter().enumerate() {
        owners
            .entry((p.pid, p.name.as_str()))
            .or_default()
            .push((p.started_ns, Some(i)));
    }
    for e in events.values() {
        if let EventData::RestartLightStarted { pid } = e.data {
            owners
                .entry((pid, e.member.as_str()))
                .or_default()
                .push((e.time_ns, None));
        }
    }
    let mut detected: Vec<Vec<&Event>> = vec![Vec::new(); procs.len()];
    for (e, pid) in events.values().filter_map(|e| match e.data {
        EventData::Detected { pid } => Some((e, pid)),
        _ => None,
    }) {
        let owner = owners
            .get(&(pid, e.member.as_str()))
            .and_then(|v| {
                v.iter()
                    .filter(|(start, _)| *start <= e.time_ns)
                    .max_by_key(|(start, _)| *start)
            })
            .and_then(|(_, i)| *i);
        if let Some(i) = owner {
            detected[i].push(e);
        }
    }
    let mut out = KillCheck::default();
    let mut slow: Vec<(f64, Value)> = Vec::new();
    for (i, p) in procs.iter().enumerate() {
        let mine = &detected[i];
        let Some((t, how)) = p.died() else {
            for d in mine {
                out.declared_dead_alive.push(format!(
                    "{} pid {} (started {}, {}) was detected dead while it ran: {}",
                    p.name,
                    p.pid,
                    rel(p.started_ns, t0),
                    p.end
                        .as_ref()
                        .map_or("still running at the end".into(), |(t, h)| format!(
                            "{} {}",
                            how_str(h),
                            rel(*t, t0)
                        )),
                    event_line(d, t0)
                ));
            }
            continue;
        };
        let died = format!("{} pid {} {} {}", p.name, p.pid, how_str(how), rel(t, t0));
        // The first `detected` of the process is its death's. Its time is when
        // the cleaner looked, which may be just before the death (the cleaner
        // read the clock, was preempted, and found the process dead when it
        // ran again); but a cleanup that ended (`cleaned_up`) before the
        // death declared a live process dead.
        let det = mine.first().copied();
        if let Some(d) = det {
            if d.time_ns < t {
                out.timed_before_death += 1;
            }
            let cleaned = events
                .range(d.seq + 1..)
                .map(|(_, e)| e)
                .find(|e| e.kind() == EventKind::CleanedUp && e.member == d.member && e.by == d.by);
            if let Some(c) = cleaned.filter(|c| c.time_ns + 1_000_000 < t) {
                out.declared_dead_alive.push(format!(
                    "{died} was cleaned up as dead before that: {}, {}",
                    event_line(d, t0),
                    event_line(c, t0)
                ));
            }
        }
        let connected = p.running || p.had_slot || det.is_some();
        if !connected {
            out.before_connect += 1;
            continue;
        }
        out.deaths += 1;
        let completion = events.values().find(|e| {
            e.kind() == EventKind::RecoveryCompleted
                && e.member == p.name
                && match det {
                    Some(d) => e.seq > d.seq,
                    None => e.time_ns >= t,
                }
        });
        let last_events = || -> Vec<String> {
            let v: Vec<&Event> = events
                .values()
                .filter(|e| e.member == p.name && e.time_ns + 1_000_000 >= t)
                .take(12)
                .collect();
            v.iter().map(|e| event_line(e, t0)).collect()
        };
        let stopped = matches!(how, EndHow::Killed("stop"));
        if let (Some(d), Some(c)) = (det, completion) {
            if stopped {
                let fenced = events
                    .range(..d.seq)
                    .rev()
                    .map(|(_, e)| e)
                    .find(|e| e.kind() == EventKind::Fenced && e.member == p.name);
                if let Some(f) = fenced.filter(|f| f.time_ns >= t) {
                    out.stop_to_fenced_ms.push((f.time_ns - t) as f64 / 1e6);
                }
                out.stop_to_detected_ms
                    .push((d.time_ns as f64 - t as f64).max(0.0) / 1e6);
            } else {
                for (kind, _) in STEPS {
                    let at = events
                        .range(d.seq..=c.seq)
                        .map(|(_, e)| e)
                        .find(|e| e.kind() == kind && e.member == p.name);
                    if let Some(e) = at {
                        out.steps_us
                            .entry(kind.as_str())
                            .or_default()
                            .push((e.time_ns as f64 - t as f64).max(0.0) / 1e3);
                    }
                }
            }
        }
        match det {
            Some(_) if stopped => {}
            Some(d) => {
                let us = (d.time_ns as f64 - t as f64).max(0.0) / 1e3;
                out.detection_us.push(us);
                slow.push((
                    us,
                    json!({"member": p.name, "pid": p.pid, "how": how_str(how), "died_s": (t as f64 - t0 as f64) / 1e9,
                           "detection_us": us, "detected": event_json(d, t0)}),
                ));
            }
            None => {
                // A `detected` torn by a kill mid-write cannot be matched: if
                // the cleanup's `cleaned_up` is there and an event before it
                // is missing, that is not a broken invariant.
                let from = events
                    .values()
                    .find(|e| e.time_ns + 1_000_000 >= t)
                    .map_or(head, |e| e.seq);
                let cleaned = events
                    .range(from..)
                    .map(|(_, e)| e)
                    .find(|e| e.member == p.name && e.kind() == EventKind::CleanedUp);
                let torn = cleaned.is_some_and(|c| missing.range(from..c.seq).next().is_some());
                if torn {
                    out.unverifiable += 1;
                } else {
                    out.undetected.push(format!(
                        "{died}: no detected event for pid {} (events of {} after it: {})",
                        p.pid,
                        p.name,
                        last_events().join(", ")
                    ));
                }
            }
        }
        match completion {
            Some(_) if stopped => {}
            Some(c) => out
                .recovery_ms
                .push((c.time_ns as f64 - t as f64).max(0.0) / 1e6),
            None => {
                // Missing events between the detection and the member's next
                // connect (or the end): the completion may be one of them.
                let from = det.map_or(head, |d| d.seq);
                let until = events
                    .range(from..)
                    .map(|(_, e)| e)
                    .find(|e| e.member == p.name && e.kind() == EventKind::Connected)
                    .map_or(head, |e| e.seq);
                if det.is_some() && missing.range(from..until).next().is_some() {
                    out.unverifiable += 1;
                    continue;
                }
                out.unrecovered.push(format!(
                    "{died}: {}, no recovery_completed after it (events of {} after it: {})",
                    det.map_or("not detected".into(), |d| event_line(d, t0)),
                    p.name,
                    last_events().join(", ")
                ));
                if out.evidence.len() < SHOWN {
                    out.evidence.push(json!({
                        "member": p.name, "pid": p.pid, "how": how_str(how),
                        "died_s": (t as f64 - t0 as f64) / 1e9,
                        "detected": det.map(|d| event_json(d, t0)),
                    }));
                }
            }
        }
    }
    slow.sort_by(|a, b| b.0.total_cmp(&a.0));
    out.slowest = slow.into_iter().take(3).map(|(_, v)| v).collect();
    out
}

/// The first few lines of a list, and how many more there are.
pub fn summarize(lines: &[String]) -> String {
    let mut s: Vec<String> = lines.iter().take(SHOWN).cloned().collect();
    if lines.len() > SHOWN {
        s.push(format!("and {} more", lines.len() - SHOWN));
    }
    s.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64, member: &str, by: Option<&str>, t_ms: u64, data: EventData) -> Event {
        Event {
            seq,
            member: member.into(),
            by: by.map(Into::into),
            time_ns: t_ms * 1_000_000,
            data,
        }
    }

    fn cleaned() -> EventData {
        EventData::CleanedUp {
            released: 0,
            retained: 0,
            discarded: 0,
        }
    }

    fn claimed(pid: u32) -> EventData {
        EventData::Claimed {
            pid,
            taken_over: false,
        }
    }

    fn terminated() -> EventData {
        EventData::TerminatedNormally {
            peak_rss_kib: 0,
            elapsed_ns: 0,
            rss_without_region_kib: 0,
        }
    }

    /// Request `epoch` completed by its completer (a restart light, a handler).
    fn completed(epoch: u32) -> EventData {
        EventData::RecoveryCompleted {
            epoch,
            how: Completion::Completed,
        }
    }

    fn map(v: Vec<Event>) -> (BTreeMap<u64, Event>, u64) {
        let head = v.iter().map(|e| e.seq + 1).max().unwrap_or(0);
        (v.into_iter().map(|e| (e.seq, e)).collect(), head)
    }

    /// M1 connects (pid 10), dies, is recovered, connects again (pid 11).
    fn one_death() -> Vec<Event> {
        use EventData::*;
        vec![
            ev(0, "M1", None, 1, Connected { pid: 10 }),
            ev(1, "M1", Some("M0"), 5, Detected { pid: 10 }),
            ev(2, "M1", Some("M0"), 5, cleaned()),
            ev(3, "M1", Some("M0"), 5, RequestPosted { epoch: 0 }),
            ev(4, "M1", Some("M0"), 6, claimed(20)),
            ev(5, "M1", Some("M0"), 6, RestartLightStarted { pid: 30 }),
            ev(6, "M1", Some("M1"), 8, terminated()),
            ev(7, "M1", Some("M1"), 8, completed(0)),
            ev(8, "M1", None, 9, Connected { pid: 11 }),
        ]
    }

    #[test]
    fn a_death_with_one_completion_is_a_good_life() {
        let (m, head) = map(one_death());
        let c = check_lives(&m, head, 0);
        assert!(c.broken.is_empty(), "{:?}", c.broken);
        assert_eq!(c.lives, 2);
    }

    #[test]
    fn a_second_completion_in_a_life_is_named_with_its_events() {
        // A late completion (by M0, a handler finishing after a new request
        // was posted for the reused slot) completes the next life's request.
        use EventData::*;
        let mut v = one_death();
        v.extend([
            ev(9, "M1", Some("M2"), 20, Detected { pid: 11 }),
            ev(10, "M1", Some("M2"), 20, RequestPosted { epoch: 0 }),
            ev(11, "M1", Some("M0"), 21, completed(1)),
            ev(12, "M1", Some("M2"), 120, RequestPosted { epoch: 0 }),
            ev(13, "M1", Some("M1"), 130, completed(2)),
        ]);
        let (m, head) = map(v);
        let c = check_lives(&m, head, 0);
        assert_eq!(c.broken.len(), 1, "{:?}", c.broken);
        let line = &c.broken[0];
        assert!(line.starts_with("M1 life 2"), "{line}");
        assert!(line.contains("1 detected, 2 recovery_completed"), "{line}");
        assert!(
            line.contains("#11 recovery_completed +0.021000s by M0"),
            "{line}"
        );
        assert!(line.contains("connected #8"), "{line}");
        assert_eq!(c.evidence[0]["events"].as_array().map(|a| a.len()), Some(5));
        // The evidence names each event's fields.
        assert_eq!(
            c.evidence[0]["events"][2],
            json!({"seq": 11, "kind": "recovery_completed", "t_s": 0.021, "by": "M0",
                   "epoch": 1, "how": "completed"})
        );
        assert_eq!(
            c.evidence[0]["connected"],
            json!({"seq": 8, "kind": "connected", "t_s": 0.009, "by": null, "pid": 11})
        );
    }

    #[test]
    fn a_death_after_a_self_recovery_is_a_failure_of_its_own() {
        // M1 dies; its normal restart completes the request and is killed
        // before its `connected`: a second failure in the same life, with a
        // request and a completion of its own.
        use EventData::*;
        let mut v = one_death();
        v.truncate(4);
        v.extend([
            ev(
                4,
                "M1",
                Some("M1"),
                6,
                RecoveredAtRestart {
                    transactions: 1,
                    locks: 0,
                },
            ),
            ev(
                5,
                "M1",
                Some("M1"),
                6,
                RecoveryCompleted {
                    epoch: 1,
                    how: Completion::OwnRestart,
                },
            ),
            ev(6, "M1", None, 7, Detected { pid: 12 }),
            ev(7, "M1", None, 7, cleaned()),
            ev(8, "M1", None, 7, RequestPosted { epoch: 0 }),
            ev(9, "M1", Some("M1"), 9, completed(2)),
            ev(10, "M1", None, 9, Connected { pid: 13 }),
        ]);
        let (m, head) = map(v.clone());
        let c = check_lives(&m, head, 0);
        assert!(c.broken.is_empty(), "{:?}", c.broken);
        // Without the second completion, the second death is not recovered.
        v.retain(|e| e.seq != 9);
        v.last_mut().unwrap().seq = 9;
        let (m, head) = map(v);
        assert_eq!(check_lives(&m, head, 0).broken.len(), 1);
    }

    #[test]
    fn the_same_request_completed_twice_is_one_completion() {
        // A handler records the completion its killed restart light could
        // not, racing a light that lived and records it too: one request (the
        // same epoch), at least once.
        use EventData::*;
        let mut v = one_death();
        v.extend([
            ev(9, "M1", Some("M2"), 20, Detected { pid: 11 }),
            ev(10, "M1", Some("M2"), 20, RequestPosted { epoch: 0 }),
            ev(11, "M1", Some("M1"), 21, completed(3)),
            ev(12, "M1", Some("M2"), 21, completed(3)),
        ]);
        let (m, head) = map(v);
        let c = check_lives(&m, head, 0);
        assert!(c.broken.is_empty(), "{:?}", c.broken);
    }

    #[test]
    fn a_death_without_completion_is_broken_unless_an_event_is_missing() {
        let mut v = one_death();
        v.retain(|e| e.seq != 7);
        let (m, head) = map(v.clone());
        // seq 7 is missing: the life spans a torn event, so it is unverifiable.
        let c = check_lives(&m, head, 0);
        assert!(c.broken.is_empty());
        assert_eq!(c.unverifiable, 1);
        // Renumbered without a gap, the same history is broken.
        let v: Vec<Event> = v
            .into_iter()
            .enumerate()
            .map(|(i, mut e)| {
                e.seq = i as u64;
                e
            })
            .collect();
        let (m, head) = map(v);
        let c = check_lives(&m, head, 0);
        assert_eq!(c.broken.len(), 1);
        assert!(c.broken[0].contains("1 detected, 0 recovery_completed"));
    }

    fn proc(name: &str, pid: u32, end: Option<(u64, EndHow)>) -> ProcLife {
        ProcLife {
            name: name.into(),
            pid,
            started_ns: 0,
            running: true,
            had_slot: false,
            end,
        }
    }

    #[test]
    fn kills_are_matched_to_the_detection_of_their_pid() {
        // The first life (pid 10) is killed at 4 ms; a later `detected` of
        // another pid must not be taken for it.
        use EventData::*;
        let mut v = one_death();
        v.push(ev(9, "M1", Some("M0"), 900, Detected { pid: 11 }));
        v.push(ev(10, "M1", Some("M1"), 950, completed(0)));
        let (m, head) = map(v);
        let procs = vec![
            proc("M1", 10, Some((4_000_000, EndHow::Killed("member")))),
            proc(
                "M1",
                11,
                Some((899_000_000, EndHow::CrashPoint("x@1".into()))),
            ),
        ];
        let k = check_kills(&procs, &m, head, 0);
        assert_eq!(k.deaths, 2);
        assert!(k.unrecovered.is_empty() && k.undetected.is_empty(), "{k:?}");
        assert_eq!(k.detection_us, vec![1000.0, 1000.0]);
        assert_eq!(k.recovery_ms, vec![4.0, 51.0]);
    }

    #[test]
    fn an_unrecovered_kill_names_member_pid_and_time() {
        use EventData::*;
        let (m, head) = map(vec![
            ev(0, "M2", None, 1, Connected { pid: 12 }),
            ev(1, "M2", Some("M0"), 5, Detected { pid: 12 }),
        ]);
        let procs = vec![proc(
            "M2",
            12,
            Some((4_000_000, EndHow::Killed("all_members"))),
        )];
        let k = check_kills(&procs, &m, head, 0);
        assert_eq!(k.unrecovered.len(), 1);
        let l = &k.unrecovered[0];
        assert!(
            l.starts_with("M2 pid 12 killed (all_members) +0.004000s"),
            "{l}"
        );
        assert!(l.contains("#1 detected +0.005000s by M0 pid 12"), "{l}");
    }

    #[test]
    fn a_live_member_declared_dead_is_reported() {
        use EventData::*;
        let (m, head) = map(vec![
            ev(0, "M1", None, 1, Connected { pid: 10 }),
            ev(1, "M1", Some("M0"), 5, Detected { pid: 10 }),
        ]);
        let k = check_kills(
            &[proc("M1", 10, Some((9_000_000, EndHow::Stopped)))],
            &m,
            head,
            0,
        );
        assert_eq!(k.declared_dead_alive.len(), 1, "{k:?}");
        // Detected at 5 ms but killed at 90 ms: declared dead only if its
        // cleanup ended before the death.
        let killed = [proc("M1", 10, Some((90_000_000, EndHow::Killed("member"))))];
        let k = check_kills(&killed, &m, head, 0);
        assert!(k.declared_dead_alive.is_empty(), "{k:?}");
        assert_eq!(k.timed_before_death, 1);
        let (m, head) = map(vec![
            ev(0, "M1", None, 1, Connected { pid: 10 }),
            ev(1, "M1", Some("M0"), 5, Detected { pid: 10 }),
            ev(2, "M1", Some("M0"), 6, cleaned()),
        ]);
        let k = check_kills(&killed, &m, head, 0);
        assert_eq!(k.declared_dead_alive.len(), 1, "{k:?}");
        assert!(k.declared_dead_alive[0].contains("cleaned up as dead before"));
    }

    #[test]
    fn a_reused_pid_is_not_taken_for_an_earlier_process() {
        // pid 10 is M1's first life (killed at 4 ms), then a restart light of
        // M1 (started at 20 ms, killed), then M1 again (started at 50 ms,
        // stopped normally): each `detected` of pid 10 is its own process's.
        use EventData::*;
        let (m, head) = map(vec![
            ev(0, "M1", None, 1, Connected { pid: 10 }),
            ev(1, "M1", Some("M0"), 5, Detected { pid: 10 }),
            ev(2, "M1", Some("M0"), 20, RestartLightStarted { pid: 10 }),
            ev(3, "M1", Some("M0"), 25, Detected { pid: 10 }),
            ev(4, "M1", Some("M1"), 30, completed(0)),
            ev(5, "M1", None, 51, Connected { pid: 10 }),
        ]);
        let mut later = proc("M1", 10, Some((90_000_000, EndHow::Stopped)));
        later.started_ns = 50_000_000;
        let procs = vec![
            proc("M1", 10, Some((4_000_000, EndHow::Killed("member")))),
            later,
        ];
        let k = check_kills(&procs, &m, head, 0);
        assert!(k.declared_dead_alive.is_empty(), "{k:?}");
        assert_eq!((k.deaths, k.detection_us.clone()), (1, vec![1000.0]));
        assert!(k.unrecovered.is_empty() && k.undetected.is_empty(), "{k:?}");
    }

    #[test]
    fn a_death_before_connecting_needs_no_recovery() {
        let mut p = proc(
            "M1",
            10,
            Some((4_000_000, EndHow::CrashPoint("connect.latched@1".into()))),
        );
        p.running = false;
        let k = check_kills(&[p], &BTreeMap::new(), 0, 0);
        assert_eq!((k.deaths, k.before_connect), (0, 1));
        assert!(k.unrecovered.is_empty());
    }

    /// attack7: `failures_each_completed_once` (a4dd1db) lets any later
    /// `detected` open a "new failure", so a completion that followed no
    /// recovery (no `terminated_normally`, no `recovered_at_restart`) passes
    /// as long as a death follows it. Here the request is completed by M0
    /// while M1's restart light (pid 30) is still recovering (the bug: the
    /// retained locks are still held, nobody recovered anything); the light
    /// is then killed, and that death gets a request and a recovery of its
    /// own. The check before a4dd1db (`done == 1` per life) rejected it.
    #[test]
    fn a_completion_with_no_recovery_followed_by_a_death_is_broken() {
        use EventData::*;
        let mut v = one_death();
        v.truncate(6); // connected, detected, cleaned_up, posted, claimed, light started
        v.extend([
            // Completed while the light recovers: no recovery ended.
            ev(6, "M1", Some("M0"), 7, completed(0)),
            // The light (still RECOVERING) killed: cleaned up, posted again.
            ev(7, "M1", Some("M0"), 8, Detected { pid: 30 }),
            ev(8, "M1", Some("M0"), 8, cleaned()),
            ev(9, "M1", Some("M0"), 8, RequestPosted { epoch: 0 }),
            ev(10, "M1", Some("M0"), 9, claimed(20)),
            ev(11, "M1", Some("M0"), 9, RestartLightStarted { pid: 31 }),
            ev(12, "M1", Some("M1"), 10, terminated()),
            ev(13, "M1", Some("M1"), 10, completed(1)),
            ev(14, "M1", None, 11, Connected { pid: 11 }),
        ]);
        let (m, head) = map(v);
        let c = check_lives(&m, head, 0);
        assert_eq!(
            c.broken.len(),
            1,
            "request 0 was completed with no recovery ended before it (its restart light was \
             still recovering, then killed), yet the life passes"
        );
    }

    /// attack7: the restart lights that ended normally are counted per
    /// "failure" and the count is reset by any `detected`, so two restart
    /// lights for one death pass if the second is killed after the first
    /// completed (a second light that connected as the member at all is
    /// the bug). The check before a4dd1db (`ended <= 1` per life) rejected it.
    #[test]
    fn two_restart_lights_for_one_death_are_broken() {
        use EventData::*;
        let mut v = one_death();
        v.truncate(8); // ... light 30 terminated normally, completed epoch 0
        v.extend([
            // A second light (31), started for the same death, killed.
            ev(8, "M1", Some("M2"), 8, RestartLightStarted { pid: 31 }),
            ev(9, "M1", Some("M0"), 9, Detected { pid: 31 }),
            ev(10, "M1", Some("M0"), 9, cleaned()),
            ev(11, "M1", Some("M0"), 9, RequestPosted { epoch: 0 }),
            ev(12, "M1", Some("M0"), 9, claimed(20)),
            ev(13, "M1", Some("M0"), 9, RestartLightStarted { pid: 32 }),
            ev(14, "M1", Some("M1"), 10, terminated()),
            ev(15, "M1", Some("M1"), 10, completed(1)),
            ev(16, "M1", None, 11, Connected { pid: 11 }),
        ]);
        let (m, head) = map(v);
        let c = check_lives(&m, head, 0);
        assert_eq!(
            c.broken.len(),
            1,
            "M1 died once and had three restart lights, two of which ended normally, yet the \
             life passes"
        );
    }

    /// attack8: a legal history the life check fails. M1's restart light
    /// (pid 30) disconnects (the slot is FREE), records
    /// `terminated_normally` and completes its request: `requests::complete`
    /// is one CAS, then the event (requests.rs `complete_as`). Between the two
    /// (or: the light is killed after its CAS and its handler records the lost
    /// completion, [`Completion::ForKilledLight`], once `child.wait` returns: monitor.rs
    /// `record_lost_completion`), M1 restarts normally: it connects to the
    /// FREE slot as a fresh connection, `complete_for_name` finds nothing
    /// outstanding, and it records `connected` (cf-node main.rs
    /// `run_connected`). The completion's event lands after that
    /// `connected`: the death's life has no completion and the new life has
    /// one with no death; both are reported broken although every request
    /// was completed exactly once, after its recovery.
    #[test]
    fn a_completion_event_after_the_next_connected_is_legal() {
        use EventData::*;
        let mut v = one_death();
        v.truncate(7); // ... light 30 terminated normally (after its disconnect)
        v.extend([
            // M1 restarts normally into the FREE slot (nothing outstanding:
            // the light's CAS completed it) and records `connected`.
            ev(7, "M1", None, 8, Connected { pid: 11 }),
            // The light's completion event (CAS done before M1 connected).
            ev(8, "M1", Some("M1"), 8, completed(0)),
        ]);
        let (m, head) = map(v);
        let c = check_lives(&m, head, 0);
        assert!(
            c.broken.is_empty(),
            "request 0 was completed once, after its recovery; only its event came after M1's \
             next `connected`: {:?}",
            c.broken
        );
    }

    /// attack8: the same with the handler recording the completion of its
    /// killed light ([`Completion::ForKilledLight`]) after M1's normal restart connected.
    #[test]
    fn a_lost_completion_recorded_after_the_next_connected_is_legal() {
        use EventData::*;
        let mut v = one_death();
        v.truncate(7);
        let lost = ev(
            8,
            "M1",
            Some("M0"),
            9,
            RecoveryCompleted {
                epoch: 0,
                how: Completion::ForKilledLight,
            },
        );
        v.extend([ev(7, "M1", None, 8, Connected { pid: 11 }), lost]);
        let (m, head) = map(v);
        let c = check_lives(&m, head, 0);
        assert!(c.broken.is_empty(), "{:?}", c.broken);
    }
}
