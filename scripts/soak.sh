#!/usr/bin/env bash
# A long soak: runs `cfctl sim` round after round (each with its own seed,
# starting from SEED) for DURATION seconds in all, with restarters,
# restart-light processes and whole-plex kills, and stops at the first round
# whose invariants do not all hold, keeping that plex for inspection (its
# path is in the report).
# Run:   scripts/soak.sh [DURATION_SECONDS=3600] [SEED=1] [MEMBERS=4]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/target/release:$PATH"
duration=${1:-3600}; seed=${2:-1}; members=${3:-4}
end=$(( $(date +%s) + duration ))
round=0
while [ "$(date +%s)" -lt "$end" ]; do
  s=$((seed + round))
  if ! cfctl sim --members "$members" --duration 60 --kill-every 50 --kill-restarters \
       --kill-all-every 5000 --seed "$s" > /tmp/cf-soak-report.txt; then
    cat /tmp/cf-soak-report.txt
    echo "soak: round $round (seed $s) broke an invariant; plex kept (see above)" >&2
    exit 1
  fi
  round=$((round + 1))
  echo "round $round (seed $s): $(grep -E '^  kills' /tmp/cf-soak-report.txt)"
done
echo "soak: $round rounds, every invariant held"
