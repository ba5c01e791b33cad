#!/usr/bin/env bash
# Shows: a hung member (SIGSTOP) is NOT taken for dead while its process
# exists. Its locks stay held (requests get "contention", not "retained"),
# nothing is cleaned up or restarted; after SIGCONT it goes on as before.
# This is deliberate: a member that might still run and write cannot be
# recovered behind its back; the operator decides (kill it, and recovery follows).
# Run:   scripts/stop-member.sh [SECONDS=3]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/target/release:$PATH"
export CF_PLEX=$(mktemp -d /dev/shm/cf-stop-XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill -9 "$p" 2>/dev/null || true; done; rm -rf "$CF_PLEX"; }
trap cleanup EXIT
cfctl create --lock-entries 1024 --members 8 --records 256 >/dev/null
cf-node run --member WATCHER --workload idle >/dev/null & pids+=($!)
cfctl hold --member HUNG --modify acct:1 >/dev/null & pids+=($!)
sleep 0.5
kill -STOP "${pids[1]}"; echo "SIGSTOP to HUNG for ${1:-3} s"
sleep "${1:-3}"
cfctl display members
cfctl try --member PROBE --x acct:1 || echo "(exit $?: contention, not retained)"
[ "$(cfctl display requests --json)" = "[]" ] && echo "no restart request: HUNG is not taken for dead"
kill -CONT "${pids[1]}"; echo "SIGCONT"
kill -TERM "${pids[1]}"; wait "${pids[1]}" || true
kill -TERM "${pids[0]}"; wait "${pids[0]}" || true; pids=()
cfctl verify
