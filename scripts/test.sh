#!/usr/bin/env bash
# Runs every test of the project: the whole workspace in release mode with the
# named crash points compiled in (multi-process tests kill real processes at
# each of them), then the loom models of the lock-word and claim protocols.
# Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release --workspace --all-features
scripts/loom.sh
