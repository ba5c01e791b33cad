#!/usr/bin/env bash
# Fuzz every reader of plex files (the targets of fuzz/, libFuzzer through
# cargo-fuzz on the stable toolchain), seeded from real plexes
# (scripts/fuzz-seeds.sh). Builds with overflow checks and debug assertions
# (-a) and AddressSanitizer. Prints each target's executions and the total;
# a crash stops the run with the target's reproducer in fuzz/artifacts/.
#
# Usage: scripts/fuzz.sh [--short] [SECONDS_PER_TARGET]
#   --short   about 50 s in all (10 s per target): what CI (.ci/run) runs
#   default   10 minutes per target
# Environment: FUZZ_JOBS (parallel targets, default 1), FUZZ_SANITIZER
# (address, default; "none" for a faster run).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=600
if [ "${1:-}" = "--short" ]; then SECS=10; shift; fi
if [ -n "${1:-}" ]; then SECS=$1; fi
SAN=${FUZZ_SANITIZER:-address}
TARGETS="region accounts log history recovery"
export RUSTC_BOOTSTRAP=1   # cargo-fuzz needs -Z flags; this is the stable toolchain
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
[ -d fuzz/corpus/region ] && [ -n "$(ls fuzz/corpus/region)" ] || scripts/fuzz-seeds.sh fuzz/corpus
for t in $TARGETS; do
  cargo fuzz build -O -a -s "$SAN" "$t" >/dev/null
done
LOG=$(mktemp)
# The per-process plex directories the targets made, and the run's log.
trap 'rm -rf /dev/shm/cf-fuzz-[0-9]* "$LOG" 2>/dev/null || true' EXIT
TOTAL=0
for t in $TARGETS; do
  mkdir -p "fuzz/corpus/$t" fuzz/artifacts/"$t"
  set +e
  cargo fuzz run -O -a -s "$SAN" "$t" "fuzz/corpus/$t" -- \
    -max_total_time="$SECS" -max_len=1048576 -timeout=20 -rss_limit_mb=4096 \
    -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$t/" >"$LOG" 2>&1
  rc=$?
  set -e
  RUNS=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$LOG" | grep -o '[0-9]*$' | tail -1)
  RUNS=${RUNS:-0}
  TOTAL=$((TOTAL + RUNS))
  echo "fuzz $t: $RUNS executions in ${SECS} s, exit $rc"
  if [ $rc -ne 0 ]; then
    tail -40 "$LOG" >&2
    echo "fuzz: $t failed; reproducer in fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
echo "fuzz: $TOTAL executions over all targets, no crash"
