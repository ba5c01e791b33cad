//! Test support shared by the workspace's multi-process tests (a dev-only
//! crate): [`node`] for the tests of `cf-node` (a test plex with accounts,
//! member processes, freezing members inside a transaction, views of the
//! region), [`tools`] for the tests of `cfctl` (a test plex, `cfctl` and
//! `cf-node` children killed and reaped on drop, `--json` answers parsed).
//!
//! The binaries are the ones the workspace build puts beside the test
//! executable (`target/<profile>/cfctl`, `target/<profile>/cf-node`).
//! Timeouts only turn a hang into a failure; no test asserts how fast
//! anything is.

pub mod node;
pub mod tools;

use std::path::PathBuf;
use std::time::Duration;

/// How long anything may take before a test gives up (a hang, not slowness).
pub const PATIENCE: Duration = Duration::from_secs(60);

/// `target/<profile>/NAME`: a binary of the workspace, beside the test
/// executable's `deps/` directory.
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join(name)
}

/// The `cfctl` binary under test.
pub fn cfctl() -> PathBuf {
    workspace_binary("cfctl")
}

/// The `cf-node` binary under test.
pub fn cf_node() -> PathBuf {
    workspace_binary("cf-node")
}
