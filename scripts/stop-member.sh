#!/usr/bin/env bash
# Shows: a hung member (SIGSTOP) is declared "status update missing" once its
# heartbeat is older than the plex's failure detection interval, then fenced
# (SIGKILL after the identity check) and recovered like a dead member: its
# modify locks are retained only from the fence until restart light ends.
# First with --isolate prompt (the operator fences it with `cfctl fence`),
# then with --isolate at-once (a survivor fences it by itself).
# Run:   scripts/stop-member.sh [INTERVAL=1s]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/target/release:$PATH"
interval=${1:-1s}
pids=()
plex=""
cleanup() {
  for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill -9 "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -n "$plex" ] && rm -rf "$plex"
  return 0
}
trap cleanup EXIT

run() { # isolate
  plex=$(mktemp -d /dev/shm/cf-stop-XXXXXX); export CF_PLEX=$plex; pids=()
  cfctl create --lock-entries 1024 --members 8 --records 256 --accounts 100 \
    --failure-detection-interval "$interval" --isolate "$1"
  cf-node run --member WATCHER --workload idle >/dev/null & pids+=($!)
  cf-node run --member HUNG --pause-us 20000 --buffer-pool-mb 4 >/dev/null & pids+=($!)
  sleep 0.5
  kill -STOP "${pids[1]}"; echo "--- SIGSTOP to HUNG (isolate $1)"
  sleep 0.2; cfctl display members
  if [ "$1" = prompt ]; then
    until cfctl display members | grep -q 'status-update-missing'; do sleep 0.1; done
    cfctl display members
    echo "--- the operator fences it"
    cfctl fence HUNG
  fi
  until cfctl display events | grep -q 'restart request for HUNG completed'; do sleep 0.1; done
  cfctl display events | grep -E 'HUNG' | grep -vE 'connected'
  kill -CONT "${pids[1]}" 2>/dev/null || true
  wait "${pids[1]}" 2>/dev/null && echo "HUNG exited?!" || echo "HUNG resumed after its fence: it is dead (exit $?)"
  kill -TERM "${pids[0]}"; wait "${pids[0]}" || true; pids=()
  cfctl verify
  rm -rf "$plex"; plex=""
}
run prompt
run at-once
