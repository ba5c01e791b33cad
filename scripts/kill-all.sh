#!/usr/bin/env bash
# Shows: every member killed at once (nobody is left to recover anyone); the
# next member to start finds the dead, cleans them up, and runs a restart
# light for each: the work left undone is done.
# Run:   scripts/kill-all.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/target/release:$PATH"
export CF_PLEX=$(mktemp -d /dev/shm/cf-killall-XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$CF_PLEX"; }
trap cleanup EXIT
cfctl create --accounts 1000 --members 8 --lock-entries 65536 --records 1024 >/dev/null
for m in M0 M1 M2; do cf-node run --member $m --pause-us 5000 --buffer-pool-mb 8 >/dev/null & pids+=($!); done
sleep 1
kill -9 "${pids[@]}"; wait 2>/dev/null || true; pids=()
echo "killed every member; the region now says:"
cfctl display members
cf-node run --member NEW --workload idle >/dev/null & pids+=($!)
until [ "$(cfctl display members --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" = 1 ]; do sleep 0.05; done
echo "after NEW started:"
cfctl display events | grep -E "detected|terminated normally|backed out"
kill -TERM "${pids[0]}"; wait "${pids[0]}" || true; pids=()
cfctl display accounts
cfctl verify
