//! The experimenter's harness of a coupling-facility plex, behind `cfctl sim`
//! and `cfctl stress`, and what `cfctl` and the benchmarks share with it:
//!
//! * [`procs`]: `cf-node run` children (own process group, parent-death
//!   signal), a temporary plex;
//! * [`sim`]: many members as real processes, faults from a seeded schedule,
//!   and a report whose invariants are checked by pure functions over the
//!   events and process lives ([`sim::check`]);
//! * [`stress`]: mutual exclusion hammered from one process;
//! * [`stats`]: the one statistics implementation (an HDR histogram);
//! * [`duration`]: human durations on the command line and in reports;
//! * [`exit`]: the exit-status table;
//! * [`out`]: printing that a closed pipe ends quietly.

pub mod csvout;
pub mod duration;
pub mod exit;
pub mod out;
pub mod plexdir;
pub mod plot;
pub mod procs;
pub mod sim;
pub use cf_node::stats;
pub mod stress;
pub mod table;
