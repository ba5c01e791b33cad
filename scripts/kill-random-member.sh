#!/usr/bin/env bash
# Shows: members dying at random while they work, and the plex recovering each
# time (retained locks released by restart light, bank total unchanged).
# Starts N members on the bank workload, then in a loop SIGKILLs a random one,
# waits for its recovery (cfctl display requests empty), restarts it, and
# checks the invariants at the end.
# Run:   scripts/kill-random-member.sh [MEMBERS=3] [KILLS=20]
# Needs cfctl and cf-node on PATH or in target/release (cargo build --release).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/target/release:$PATH"
members=${1:-3}; kills=${2:-20}
export CF_PLEX=$(mktemp -d /dev/shm/cf-kill-XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$CF_PLEX"; }
trap cleanup EXIT
cfctl create --accounts 1000 --members 16 --lock-entries 65536 --records 1024 >/dev/null
start() { cf-node run --member "M$1" --pause-us 2000 --buffer-pool-mb 8 >/dev/null & pids[$1]=$!; }
for i in $(seq 0 $((members - 1))); do start "$i"; done
sleep 1
for k in $(seq 1 "$kills"); do
  i=$((RANDOM % members))
  kill -9 "${pids[$i]}"; wait "${pids[$i]}" 2>/dev/null || true
  echo "kill $k: M$i (pid ${pids[$i]})"
  # Wait until its recovery is over: no slot and no restart request left for it.
  until ! cfctl display members | grep -q " M$i " && [ "$(cfctl display requests --json)" = "[]" ]; do sleep 0.01; done
  start "$i"; sleep 0.2
done
for p in "${pids[@]}"; do kill -TERM "$p"; wait "$p" || true; done
pids=()
cfctl display events | grep -c "terminated normally" | sed 's/^/restart lights that terminated normally: /'
cfctl display accounts
cfctl verify
