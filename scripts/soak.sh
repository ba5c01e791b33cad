#!/usr/bin/env bash
# A long soak where the bugs live: `cfctl sim` round after round (each with
# its own seed, starting from SEED) on a small lock table (false contention
# and the latched path on most requests), several worker threads per member,
# with members, restarters, restart-light processes and every member at once
# killed, and member starts armed with named crash points in every window,
# until FAULTS faults have been injected in all. It stops at the first round
# whose invariants do not all hold, keeping that round's plex and report for
# inspection (the report's details name the member, the death and the events
# that break each invariant).
#
# Run:   scripts/soak.sh [FAULTS=10000] [SEED=1] [MEMBERS=4]
# Knobs (environment): LOCK_ENTRIES=64 THREADS=3 ROUND_FAULTS=500 KILL_EVERY=40
#        KILL_ALL_EVERY=3000 ARM_ONE_IN=2 OUT=/tmp/cf-soak-$$ (reports)
#        LOCK_ORDER=sorted (random: the members deadlock on purpose and the
#        detector's crash points are armed too) HIERARCHY= (1: --hierarchy)
# Needs the binaries built with the crash points:
#        cargo build --release --workspace --all-features
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/target/release:$PATH"
faults=${1:-10000}; seed=${2:-1}; members=${3:-4}
lock_entries=${LOCK_ENTRIES:-64}; threads=${THREADS:-3}
round_faults=${ROUND_FAULTS:-500}; kill_every=${KILL_EVERY:-40}
kill_all_every=${KILL_ALL_EVERY:-3000}; arm_one_in=${ARM_ONE_IN:-2}
lock_order=${LOCK_ORDER:-sorted}; hierarchy=()
if [ -n "${HIERARCHY:-}" ]; then hierarchy=(--hierarchy); fi
out=${OUT:-/tmp/cf-soak-$$}
base=/dev/shm; [ -d "$base" ] || base=${TMPDIR:-/tmp}
mkdir -p "$out"

plex=""
keep=""
cleanup() {
  # The plex of an interrupted or failed-to-run round goes; a broken one stays.
  if [ -n "$plex" ] && [ -z "$keep" ]; then rm -rf "$plex"; fi
}
trap cleanup EXIT
trap 'echo "soak: interrupted" >&2; exit 130' INT TERM

# A number field of the JSON report ("kills": 512,).
field() { sed -n "s/^  \"$1\": \([0-9]*\),*$/\1/p" "$2" | head -n 1; }
# A number inside a top-level object of the report: sub OBJECT KEY FILE.
sub() { sed -n "/^  \"$1\": {/,/^  }/s/^    \"$2\": \([0-9.]*\),*$/\1/p" "$3" | head -n 1; }

done_faults=0; round=0
while [ "$done_faults" -lt "$faults" ]; do
  s=$((seed + round))
  plex="$base/cf-soak-$$-$s"
  report="$out/round-$round-seed-$s.json"
  status=0
  cfctl --plex "$plex" sim --members "$members" --threads "$threads" \
    --lock-entries "$lock_entries" --kills "$round_faults" --duration 3600 \
    --kill-every "$kill_every" --kill-restarters --kill-all-every "$kill_all_every" \
    --crash-points --arm-one-in "$arm_one_in" --pause-us 300 --buffer-pool-mb 4 \
    --lock-order "$lock_order" ${hierarchy[@]+"${hierarchy[@]}"} \
    --seed "$s" --json > "$report" || status=$?
  kills=$(sub kills total "$report")
  if [ -z "$kills" ]; then
    echo "soak: round $round (seed $s): cfctl sim failed (exit status $status), no report" >&2
    exit 1
  fi
  if [ "$status" -ne 0 ] && [ "$status" -ne 5 ]; then
    echo "soak: round $round (seed $s): cfctl sim ended with exit status $status (5 is a broken invariant)" >&2
    exit 1
  fi
  if [ "$status" -eq 5 ]; then
    keep=yes
    echo "soak: round $round (seed $s) broke an invariant after $done_faults earlier faults:" >&2
    awk '/^      "detail": /{d=$0} /^      "name": /{n=$0}
         /^      "ok": false/{sub(/^ */,"",n); sub(/^ */,"",d); print "  " n "\n    " d}' \
      "$report" >&2 || true
    echo "soak: report $report (its invariants' evidence lists the events); plex kept at $plex" >&2
    echo "soak: the round again: cfctl --plex DIR sim --members $members --threads $threads" \
      "--lock-entries $lock_entries --kills $round_faults --duration 3600 --kill-every $kill_every" \
      "--kill-restarters --kill-all-every $kill_all_every --crash-points --arm-one-in $arm_one_in" \
      "--pause-us 300 --buffer-pool-mb 4 --seed $s (the same schedule; timing differs)" >&2
    exit 1
  fi
  rm -rf "$plex"; plex=""
  done_faults=$((done_faults + kills)); round=$((round + 1))
  echo "round $round (seed $s): $kills faults ($done_faults of $faults)," \
    "$(field recoveries "$report") recoveries," \
    "crash points fired $(sed -n 's/^    "fired": \([0-9]*\)$/\1/p' "$report" | head -n 1)," \
    "detection max $(sub detection max "$report") µs"
done
echo "soak: $round rounds, $done_faults faults, every invariant held"
