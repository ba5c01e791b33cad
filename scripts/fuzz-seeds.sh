#!/usr/bin/env bash
# Seed corpora for the fuzz targets (fuzz/), taken from real plexes made with
# the real binaries:
#   clean      a fresh plex (region, accounts, history/)
#   dead       a member SIGKILLed inside a transaction: ACTIVE with a dead
#              process, modify locks held, an uncommitted UPDATE in its log
#   retained   the same after `cfctl cleanup`: failed-persistent with
#              retained locks and a pending restart request (no live member
#              to claim it), its committed transactions in history/
#   recovered  the same after `cf-node restart-light`: back-out in the data,
#              CLRs and ABORT in the log, request completed
# Each becomes one seed of every target, in that target's input format
# (see fuzz/fuzz_targets/*.rs). Usage: scripts/fuzz-seeds.sh [OUT_DIR]
# (default fuzz/corpus). Needs target/release/{cfctl,cf-node}.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-fuzz/corpus}
BIN=target/release
[ -x "$BIN/cfctl" ] && [ -x "$BIN/cf-node" ] || cargo build --release --workspace --all-features
WORK=$(mktemp -d /dev/shm/cf-fuzz-seeds-XXXXXX)
NODE=
cleanup() {
  [ -n "$NODE" ] && kill -9 "$NODE" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
P=$WORK/p
mkdir -p "$OUT"/{region,accounts,log,history,recovery}

# One seed of every target from the plex as it is now.
seed() {
  local tag=$1
  local log=$P/log.D
  [ -f "$log" ] || log=/dev/null
  { printf '\x03'; cat "$P/region"; } >"$OUT/region/seed-$tag"
  { printf '\x00'; cat "$P/accounts"; } >"$OUT/accounts/seed-$tag"
  cp "$log" "$OUT/log/seed-$tag"
  if [ -f "$P/history/D" ]; then cp "$P/history/D" "$OUT/history/seed-$tag"; fi
  # option byte, log length (u32 little-endian), log, region
  local n
  n=$(stat -c %s "$log")
  {
    printf '\x00'
    printf "\\x$(printf %02x $((n & 255)))\\x$(printf %02x $((n >> 8 & 255)))\\x$(printf %02x $((n >> 16 & 255)))\\x$(printf %02x $((n >> 24 & 255)))"
    cat "$log" "$P/region"
  } >"$OUT/recovery/seed-$tag"
}

"$BIN/cfctl" --plex "$P" create --lock-entries 16 --members 3 --records 64 --accounts 16 --history >/dev/null
seed clean

# A member that commits a few transfers (archived at each checkpoint), then
# pauses 300 ms between the two legs of each transfer: killed in the pause.
"$BIN/cf-node" run --plex "$P" --member D --buffer-pool-mb 1 --pause-us 300000 --checkpoint-bytes 1 >/dev/null 2>&1 &
NODE=$!
sleep 1.2
kill -9 "$NODE"
wait "$NODE" 2>/dev/null || true
NODE=
seed dead

"$BIN/cfctl" --plex "$P" cleanup >/dev/null
seed retained

"$BIN/cf-node" restart-light --plex "$P" --member D >/dev/null
seed recovered

# A history file with some records (another member's committed transfers).
"$BIN/cf-node" run --plex "$P" --member E --buffer-pool-mb 1 --checkpoint-bytes 1 >/dev/null 2>&1 &
NODE=$!
sleep 0.3
kill -TERM "$NODE"
wait "$NODE" 2>/dev/null || true
NODE=
# (the first 20 records: a bank transfer's record is 68 bytes)
[ -f "$P/history/E" ] && head -c $((68 * 20)) "$P/history/E" >"$OUT/history/seed-committed"
ls "$OUT"/* | wc -l | xargs echo "seeds in $OUT:" >&2
