#!/usr/bin/env bash
# Runs the loom models of cf-core's concurrency protocols (lock word, latch,
# futex wait/wake, cleanup claim: cf-core/src/loom_models.rs). Builds with
# `--cfg loom` into its own target dir so the normal build is not invalidated.
# Each model sets its own preemption bound; LOOM_MAX_PREEMPTIONS overrides it.
# About 1.5 minutes from cold on a 2-core machine (build ~50 s, models ~45 s).
# Usage: scripts/loom.sh [libtest options, e.g. --nocapture to see how many
#        executions each model explored, or --ignored for the known-failing ones]
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
  cargo test -p cf-core --release --lib loom_models -- --test-threads=1 "$@"
