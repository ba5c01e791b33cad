//! `cf-node`: a member of a coupling-facility plex.
//!
//! * `store.rs`: the shared accounts file (the data protected by locks);
//! * `wal.rs`: the per-member write-ahead log;
//! * `history.rs`: the archive of committed transactions and a checker of
//!   every account against it;
//! * `bufpool.rs`: a normal member's buffer pool;
//! * `bank.rs`: the bank workload (transfers under modify locks);
//! * `backout.rs`, `recover.rs`: backing out unfinished work, releasing retained locks;
//! * `monitor.rs`: failure detection (pidfds) and restart requests;
//! * `restart_light.rs`: the minimal recovery-only mode;
//! * `cli.rs`: command-line parsing shared by the binaries (usage errors exit 64).

pub mod backout;
pub mod bank;
pub mod bufpool;
pub mod cli;
pub mod history;
pub mod monitor;
pub mod pidfd;
pub mod recover;
pub mod restart_light;
pub mod signals;
pub mod stats;
pub mod store;
pub mod wal;
