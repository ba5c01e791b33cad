//! The experimenter's harness of a coupling-facility plex, behind `cfctl sim`
//! and `cfctl stress`:
//!
//! * [`procs`]: `cf-node run` children (own process group, parent-death
//!   signal), a temporary plex;
//! * [`sim`]: many members as real processes, faults from a seeded schedule,
//!   and a report whose invariants are checked by pure functions over the
//!   events and process lives ([`sim::check`]);
//! * [`stress`]: mutual exclusion hammered from one process;
//! * [`out`]: printing that a closed pipe ends quietly.

pub mod out;
pub mod procs;
pub mod sim;
pub mod stress;
