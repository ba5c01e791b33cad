//! `cfctl sim --crash-points`: which named crash point an armed member start
//! (and the restart lights it starts) dies at, and at which hit.
//!
//! Every point of `cf_core::crash::CRASH_POINTS` is drawn (they are all
//! reached by a member or a restart light), in a seeded shuffle that goes
//! round all of them before it repeats any, so that a run with as many armed
//! starts as there are points arms each once. The hit count `@n` is drawn
//! from the seed too, between 1 and about the number of times a member hits
//! that point in its expected life, so that a point reached on every lock
//! request fires in the middle of a member's run and not on its first request.

use rand::{Rng as _, SeedableRng};

/// Points not drawn (each has its scenario in cf-node/tests/fencing.rs or
/// deadlock.rs): `fence.marked` is reached only when a member is fenced,
/// which needs a stopped member (`--stop-members`); `liveness.before_word`
/// kills a start between its connect and its `connected` event, a death the
/// sim's accounting by lives (from one `connected` to the next) cannot
/// attribute; `deadlock.chosen` and `deadlock.told` only when a detector
/// finds a cycle, which the bank's transfers never make in account order
/// (they are drawn with `--lock-order random`: [`CYCLE_POINTS`]);
/// `convert.mode_written` only in a lock conversion, which the bank never
/// makes (its scenario is in cf-tools/tests/crash_points.rs).
pub const UNREACHED: &[&str] = &[
    "fence.marked",
    "liveness.before_word",
    "convert.mode_written",
    "deadlock.chosen",
    "deadlock.told",
];

/// The points of [`UNREACHED`] that a detector reaches when it finds a
/// cycle: drawn when the members deadlock on purpose (`--lock-order random`).
pub const CYCLE_POINTS: &[&str] = &["deadlock.chosen", "deadlock.told"];

/// How often a crash point is reached, to scale its hit count.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Reach {
    /// Every lock request (acquire: record, then the word).
    Request,
    /// Every request or release the word settles alone (fast path).
    Fast,
    /// Every request or release that goes through the latched path.
    Slow,
    /// Every transaction (between the two legs).
    Transaction,
    /// Every log append (three per transaction).
    LogAppend,
    /// Once per cleanup this member wins.
    Cleanup,
    /// Once per lock table entry of a member this member cleans up.
    CleanupEntry,
    /// A few times in a process's life (a connect, each cleanup's final state
    /// change under the connect latch, a disconnect, a claim).
    Few(u64),
}

fn reach(point: &str) -> Reach {
    match point {
        "acquire.after_record" => Reach::Request,
        "acquire.after_word" | "release.marked" | "release.after_word" => Reach::Fast,
        p if p.starts_with("slow.") || p.starts_with("slow_release.") => Reach::Slow,
        "bank.between_legs" => Reach::Transaction,
        p if p.starts_with("wal.") => Reach::LogAppend,
        "cleanup.claimed" | "cleanup.before_final_state" => Reach::Cleanup,
        // Every death a watcher sees on a liveness word.
        "liveness.woken" => Reach::Cleanup,
        p if p.starts_with("cleanup.") => Reach::CleanupEntry,
        // The member's own connect, then each cleanup it finishes.
        "connect.latched" => Reach::Few(3),
        // Per claim of a restart request.
        "handler.claimed" => Reach::Few(2),
        // Per entry released (restart light, or a member's own restart).
        "restart_light.released_some" => Reach::Few(2),
        // Once per restart-light process (and once in a member's own restart).
        _ => Reach::Few(1),
    }
}

/// What the hit counts are scaled by (from the options, so the draw is a
/// pure function of the seed and the options).
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    pub members: u32,
    pub threads: u32,
    pub lock_entries: u32,
    /// Mean time between faults (ms).
    pub kill_every_ms: u64,
    pub pause_us: u64,
}

impl Scale {
    /// Times a member reaches a point of this kind in its expected life.
    /// (Calibrated on sims of 3 and 4 members with 2 threads on 16 entries:
    /// the estimates are within a factor of two of what the runs did.)
    fn hits(&self, r: Reach) -> f64 {
        // A member is the victim of about one fault in `members`; restarter
        // faults kill two, and crash points end lives early.
        let life_ms = 0.6 * (self.kill_every_ms.max(1) * self.members as u64) as f64;
        // A worker thread does a transfer per pause plus about 200 µs of work.
        let tx = life_ms * self.threads as f64 * 1000.0 / (self.pause_us as f64 + 200.0);
        // Share of requests the latched path settles: about the locks held
        // (two per worker thread) over the table's entries.
        let held = (2 * self.members * self.threads) as f64;
        let slow = (held / self.lock_entries as f64).min(1.0);
        let fast = (1.0 - slow).max(0.05);
        let deaths_won =
            life_ms / self.kill_every_ms.max(1) as f64 / (self.members - 1).max(1) as f64;
        match r {
            Reach::Request => 2.0 * tx,
            Reach::Fast => 2.0 * tx * fast,
            Reach::Slow => 1.5 * tx * slow,
            Reach::Transaction => tx,
            Reach::LogAppend => 3.0 * tx,
            Reach::Cleanup => deaths_won,
            Reach::CleanupEntry => deaths_won * 2.0 * self.threads as f64,
            Reach::Few(n) => n as f64,
        }
    }
}

/// One armed start: die at the `nth` hit of `point`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arming {
    pub point: &'static str,
    pub nth: u64,
}

impl Arming {
    /// The `CF_CRASH_AT` value.
    pub fn spec(&self) -> String {
        format!("{}@{}", self.point, self.nth)
    }
}

/// The seeded sequence of armings.
pub struct Planner {
    rng: Rng,
    scale: Scale,
    points: Vec<&'static str>,
    order: Vec<&'static str>,
}

/// The sim's seeded generator: PCG (`rand_pcg::Pcg64`), one stream per
/// purpose. `seed_from_u64` expands the seed, so that nearby seeds (2k and
/// 2k+1 too) give unrelated streams.
pub struct Rng(rand_pcg::Pcg64);

impl Rng {
    /// The stream of `seed` for `purpose` (a constant per use).
    pub fn stream(seed: u64, purpose: u64) -> Rng {
        let mut base = rand_pcg::Pcg64::seed_from_u64(seed);
        let salt: u64 = base.random();
        Rng(rand_pcg::Pcg64::seed_from_u64(salt ^ purpose))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0.random()
    }
    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.0.random_range(0..n)
        }
    }
}

impl Planner {
    pub fn new(seed: u64, scale: Scale, points: &[&'static str]) -> Planner {
        Planner::with_cycles(seed, scale, points, false)
    }

    /// Like [`Planner::new`]; with `cycles` (the members' transactions
    /// deadlock) the [`CYCLE_POINTS`] of `points` are drawn too.
    pub fn with_cycles(seed: u64, scale: Scale, points: &[&'static str], cycles: bool) -> Planner {
        Planner {
            rng: Rng::stream(seed, 0x00c0_ffee),
            scale,
            points: points
                .iter()
                .copied()
                .filter(|p| !UNREACHED.contains(p) || (cycles && CYCLE_POINTS.contains(p)))
                .collect(),
            order: Vec::new(),
        }
    }

    /// Should this start be armed? (One in `one_in`.)
    pub fn armed(&mut self, one_in: u64) -> bool {
        self.rng.below(one_in.max(1)) == 0
    }

    /// The next arming.
    pub fn draw(&mut self) -> Option<Arming> {
        if self.points.is_empty() {
            return None;
        }
        if self.order.is_empty() {
            // A fresh shuffle (Fisher-Yates), taken from the back.
            self.order = self.points.clone();
            for i in (1..self.order.len()).rev() {
                let j = self.rng.below(i as u64 + 1) as usize;
                self.order.swap(i, j);
            }
        }
        let point = self.order.pop()?;
        let most = self.scale.hits(reach(point)).round().max(1.0) as u64;
        let nth = 1 + self.rng.below(most);
        Some(Arming { point, nth })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCALE: Scale = Scale {
        members: 3,
        threads: 2,
        lock_entries: 32,
        kill_every_ms: 30,
        pause_us: 300,
    };

    #[test]
    fn every_point_is_armed_once_per_round() {
        let pts = cf_core::crash::CRASH_POINTS;
        let mut p = Planner::new(7, SCALE, pts);
        let n = pts.len() - UNREACHED.len();
        let mut seen: Vec<&str> = (0..n).filter_map(|_| p.draw()).map(|a| a.point).collect();
        seen.sort();
        let mut want: Vec<&str> = pts
            .iter()
            .copied()
            .filter(|p| !UNREACHED.contains(p))
            .collect();
        want.sort();
        assert_eq!(seen, want);
    }

    #[test]
    fn cycle_points_are_drawn_only_when_members_deadlock() {
        let pts = cf_core::crash::CRASH_POINTS;
        let n = pts.len() - UNREACHED.len() + CYCLE_POINTS.len();
        let mut p = Planner::with_cycles(7, SCALE, pts, true);
        let seen: Vec<&str> = (0..n).filter_map(|_| p.draw()).map(|a| a.point).collect();
        for c in CYCLE_POINTS {
            assert!(pts.contains(c), "{c} is no crash point");
            assert!(seen.contains(c), "{c}: {seen:?}");
        }
        let mut p = Planner::with_cycles(7, SCALE, pts, false);
        let seen: Vec<&str> = (0..n).filter_map(|_| p.draw()).map(|a| a.point).collect();
        assert!(CYCLE_POINTS.iter().all(|c| !seen.contains(c)), "{seen:?}");
    }

    #[test]
    fn neighbouring_seeds_draw_differently() {
        let pts = cf_core::crash::CRASH_POINTS;
        for k in [0u64, 1, 10, 20261201 / 2] {
            let draw = |s| {
                let mut p = Planner::new(s, SCALE, pts);
                (0..8).filter_map(|_| p.draw()).collect::<Vec<_>>()
            };
            assert_ne!(
                draw(2 * k),
                draw(2 * k + 1),
                "seeds {} and {}",
                2 * k,
                2 * k + 1
            );
        }
    }

    #[test]
    fn points_hit_on_every_request_fire_mid_run() {
        let mut p = Planner::new(
            3,
            SCALE,
            &["acquire.after_record", "restart_light.connected"],
        );
        let mut nths = Vec::new();
        for _ in 0..40 {
            if let Some(a) = p.draw() {
                if a.point == "acquire.after_record" {
                    nths.push(a.nth);
                } else {
                    assert_eq!(a.nth, 1, "a restart light connects once");
                }
            }
        }
        assert!(
            nths.iter().filter(|&&n| n > 10).count() > nths.len() / 2,
            "{nths:?}"
        );
    }
}
