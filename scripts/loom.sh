#!/usr/bin/env bash
# Runs the loom models of cf-core's protocols on the code that ships (the
# region in loom's memory: lock paths, the latched entry protocol, retention
# racing requests and killed cleaners, connect against a watcher, restart
# requests, waiting, the claim: cf-core/src/loom_models/). Builds with
# `--cfg loom` into its own target dir so the normal build is not invalidated.
# Each model sets its own preemption bound; LOOM_MAX_PREEMPTIONS overrides it.
# About 2 minutes from cold on a 2-core machine (build ~60 s, models ~55 s).
# Usage: scripts/loom.sh [libtest options, e.g. --nocapture to see how many
#        executions each model explored, or --ignored for the known-failing ones]
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
  cargo test -p cf-core --release --lib loom_models -- --test-threads=2 "$@"
