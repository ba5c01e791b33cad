#!/usr/bin/env bash
# Command-level mutation fuzzer: a damaged copy of a real plex, every command
# run on it with a timeout, every outcome classified.
#
# Each round copies one of three real plexes (made with the binaries: a
# clean one; one with member D SIGKILLed inside a transaction, its modify
# locks held and an UPDATE in its log; the same after `cfctl cleanup`:
# failed-persistent with retained locks and a pending restart request), damages
# the copy once (random bytes in a plex file; a random word in one of the
# region's structures; a file truncated; a file replaced by a FIFO, a symlink,
# a directory or a hard link; a directory or file made writable by others;
# a file given to another user), then runs on it: verify (text and JSON),
# every display (text and JSON), try, cleanup, cfctl restart-light,
# cf-node restart-light, verify again, destroy --force.
#
# Outcomes: ok (exit 0, or a documented answer: 2 contention, 3 retained,
# 4 timed out), refused (exit 1 with one line on stderr, or 5: verify or
# display accounts found damage, said on stdout and in at most one line on
# stderr), and the failures:
#   panic     "panicked" on stderr or exit 101
#   signal    killed by a signal
#   hang      still running after the timeout
#   multiline an error of more than one line (or none) on stderr
#   silent    a reader and verify disagree on the same damage: verify finds
#             the region clean but a reader refuses it as damaged, or verify
#             cannot open the region while a display of it succeeds
# Every failure is printed with the round's seed and kept in the work
# directory (printed at the end) with its damaged plex.
#
# Usage: scripts/fuzz-commands.sh [COMMANDS] [SEED]   (default 10000, random seed)
# Environment: FUZZ_TIMEOUT (seconds a command may take, default 10);
# FUZZ_CHECKED=1 runs an overflow-checked build (release with overflow checks
# and debug assertions, in target/checked) instead of the release binaries.
set -uo pipefail
cd "$(dirname "$0")/.."
WANT=${1:-10000}
SEED=${2:-$((RANDOM << 15 | RANDOM))}
TIMEOUT=${FUZZ_TIMEOUT:-10}
if [ "${FUZZ_CHECKED:-0}" = 1 ]; then
  BIN=$PWD/target/checked/release
  CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=true CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=true \
    cargo build --release --workspace --all-features --target-dir target/checked -q || exit 1
else
  BIN=$PWD/target/release
  [ -x "$BIN/cfctl" ] && [ -x "$BIN/cf-node" ] || cargo build --release --workspace --all-features
fi
WORK=$(mktemp -d /dev/shm/cf-cmdfuzz-XXXXXX)
KEEP=$WORK/failures
mkdir -p "$KEEP"
NODE=
finish() {
  [ -n "$NODE" ] && kill -9 "$NODE" 2>/dev/null
  rm -rf "$WORK/base" "$WORK/p" "$WORK/out" "$WORK/err"
  if [ -z "$(ls -A "$KEEP")" ]; then rm -rf "$WORK"; else echo "failures kept in $KEEP" >&2; fi
}
trap finish EXIT
RANDOM=$SEED
echo "fuzz-commands: seed $SEED, $WANT commands, timeout ${TIMEOUT}s, binaries in $BIN"

# ---- the base plexes
mkdir -p "$WORK/base"   # cfctl create makes only the last component of a plex directory
mkbase() {
  local p=$WORK/base/$1
  "$BIN/cfctl" --plex "$p" create --lock-entries 16 --members 3 --records 64 --accounts 16 \
    --history >/dev/null || { echo "fuzz-commands: cannot make the base plex $1" >&2; exit 1; }
}
mkbase clean
mkbase dead
"$BIN/cf-node" run --plex "$WORK/base/dead" --member D --buffer-pool-mb 1 --pause-us 300000 \
  --checkpoint-bytes 1 >/dev/null 2>&1 &
NODE=$!
sleep 1.2
kill -9 "$NODE"; wait "$NODE" 2>/dev/null; NODE=
cp -a "$WORK/base/dead" "$WORK/base/retained"
"$BIN/cfctl" --plex "$WORK/base/retained" cleanup >/dev/null
BASES=(clean dead retained)
# The region's structures (offset size) from the layout.
mapfile -t STRUCTS < <("$BIN/cfctl" --plex "$WORK/base/clean" display structures --json |
  tr -d ' \n' | grep -o '"offset":[0-9]*,"size":[0-9]*' | sed 's/"offset":\([0-9]*\),"size":\([0-9]*\)/\1 \2/')

rand() { echo $(((RANDOM << 15 | RANDOM) % $1)); }
byte() { printf "\\x$(printf %02x "$1")"; }
# Write 8 bytes (u64 little-endian $2) at offset $1 of file $3.
put64() {
  local v=$2 s="" i
  for i in 0 1 2 3 4 5 6 7; do s+="\\x$(printf %02x $(((v >> (8 * i)) & 255)))"; done
  printf "$s" | dd of="$3" bs=1 seek="$1" conv=notrunc status=none 2>/dev/null
}
interesting() {
  case $(rand 9) in
    0) echo 0 ;; 1) echo 1 ;; 2) echo 255 ;; 3) echo -1 ;; 4) echo $((1 << 32)) ;;
    5) echo $(((RANDOM << 30) | (RANDOM << 15) | RANDOM)) ;; 6) echo $(rand 64) ;;
    7) echo $(((1 << 62) + $(rand 4))) ;; *) echo $(((RANDOM << 40) | (RANDOM << 20) | RANDOM)) ;;
  esac
}

FILES=(region accounts log.D history/D)
# Damage the plex in $1 once; prints what was done.
mutate() {
  local p=$1 f file size off n
  f=${FILES[$(rand ${#FILES[@]})]}
  file=$p/$f
  [ -e "$file" ] || { file=$p/region; f=region; }
  size=$(stat -c %s "$file" 2>/dev/null || echo 0)
  case $(rand 12) in
    0|1|2)
      n=$((1 + $(rand 8)))
      for _ in $(seq "$n"); do
        if [ "$f" = region ] && [ $(rand 2) = 0 ]; then off=$(rand 4096); else off=$(rand $((size > 0 ? size : 1))); fi
        byte $(rand 256) | dd of="$file" bs=1 seek="$off" conv=notrunc status=none 2>/dev/null
      done
      echo "$n random bytes in $f" ;;
    3|4|5|6)
      local s=${STRUCTS[$(rand ${#STRUCTS[@]})]}
      local so=${s% *} ss=${s#* } v
      off=$((so + 8 * $(rand $((ss / 8 > 0 ? ss / 8 : 1)))))
      v=$(interesting)
      put64 "$off" "$v" "$p/region"
      echo "word $v at region offset $off" ;;
    7) n=$(rand $((size + 1))); truncate -s "$n" "$file"; echo "$f truncated to $n" ;;
    8)
      rm -rf "$file"
      case $(rand 4) in
        0) mkfifo "$file"; echo "$f is a FIFO" ;;
        1) ln -s /etc/passwd "$file"; echo "$f is a symlink" ;;
        2) mkdir "$file"; echo "$f is a directory" ;;
        *) echo x >"$WORK/outside"; ln "$WORK/outside" "$file"; echo "$f is a hard link" ;;
      esac ;;
    9) chmod "$(if [ $(rand 2) = 0 ]; then echo 1777; else echo 0770; fi)" "$p"; echo "plex directory writable by others" ;;
    10) chmod 0666 "$file"; echo "$f writable by others" ;;
    *) chown 65534 "$file"; echo "$f owned by uid 65534" ;;
  esac
}

declare -A COUNT=([ok]=0 [refused]=0 [panic]=0 [signal]=0 [hang]=0 [multiline]=0 [silent]=0)
TOTAL=0
ROUND=0
fail() { # kind round what
  COUNT[$1]=$((COUNT[$1] + 1))
  echo "FAIL $1 (round $ROUND, seed $SEED): $2" >&2
  local d=$KEEP/round-$ROUND
  [ -d "$d" ] || { cp -a "$WORK/p" "$d" 2>/dev/null; echo "$MUT" >"$d/MUTATION"; }
  echo "$1: $2" >>"$d/FAILURES"
}
# Run one command; sets RC, OUT, ERR; classifies it.
run() {
  local what="$*"
  timeout -k 2 "$TIMEOUT" "$@" >"$WORK/out" 2>"$WORK/err" </dev/null
  RC=$?
  OUT=$(head -c 20000 "$WORK/out"); ERR=$(head -c 20000 "$WORK/err")
  TOTAL=$((TOTAL + 1))
  if [ $RC = 124 ] || [ $RC = 137 ]; then fail hang "$what"; return; fi
  if grep -q panicked "$WORK/err" || [ $RC = 101 ]; then fail panic "$what: $ERR"; return; fi
  if [ $RC -gt 128 ]; then fail signal "$what: exit $RC $ERR"; return; fi
  case $RC in
    0|2|3|4) COUNT[ok]=$((COUNT[ok] + 1)) ;;
    1|5)
      local lines
      lines=$(grep -c '' "$WORK/err")
      # `verify --json` that found problems says so on stdout only.
      if [ "$lines" = 1 ] || { [ "$lines" = 0 ] && [ -n "$OUT" ]; }; then
        COUNT[refused]=$((COUNT[refused] + 1))
      else
        fail multiline "$what: $ERR"
      fi ;;
    *) fail signal "$what: exit $RC" ;;
  esac
}
damage_error() { grep -qiE "damaged|corrupt|out of range|inconsistent|unknown (state|bits)|malformed|event ring" "$WORK/err"; }

C="$BIN/cfctl"
while [ "$TOTAL" -lt "$WANT" ]; do
  ROUND=$((ROUND + 1))
  rm -rf "$WORK/p"
  cp -a "$WORK/base/${BASES[$(rand 3)]}" "$WORK/p"
  P=$WORK/p
  MUT=$(mutate "$P")
  # verify first, on the damage as it is.
  run "$C" --plex "$P" verify
  VRC=$RC; VOUT=$OUT
  verify_clean=$([ $VRC = 0 ] && echo 1 || echo 0)
  verify_unopened=$([ $VRC = 1 ] && [ -z "$VOUT" ] && echo 1 || echo 0)
  run "$C" --plex "$P" verify --json
  for what in structures members locks retained requests events accounts; do
    for json in "" --json; do
      run "$C" --plex "$P" display $what $json
      if [ $RC = 1 ] && [ "$verify_clean" = 1 ] && damage_error; then
        fail silent "verify finds the region clean, display $what $json refuses it: $ERR ($MUT)"
      fi
      if [ $RC = 0 ] && [ "$verify_unopened" = 1 ] && [ $what != accounts ] &&
        ! grep -q "accounts\|log\.\|history" <<<"$VOUT$(cat "$WORK/out")"; then
        # verify could not open the region, yet a display of it worked.
        "$C" --plex "$P" verify >/dev/null 2>"$WORK/verr"
        if ! grep -qE "accounts|log\.|history" "$WORK/verr"; then
          fail silent "verify refuses the region, display $what $json shows it ($MUT): $(cat "$WORK/verr")"
        fi
      fi
    done
  done
  run "$C" --plex "$P" try --member FZ --x acct:3
  if [ $RC = 1 ] && [ "$verify_clean" = 1 ] && damage_error; then
    fail silent "verify finds the region clean, try refuses it: $ERR ($MUT)"
  fi
  run "$C" --plex "$P" cleanup
  if [ $RC = 1 ] && [ "$verify_clean" = 1 ] && damage_error; then
    fail silent "verify finds the region clean, cleanup refuses it: $ERR ($MUT)"
  fi
  run "$C" --plex "$P" restart-light D
  run "$BIN/cf-node" restart-light --plex "$P" --member D
  run "$C" --plex "$P" verify
  run "$C" --plex "$P" destroy --force
  if [ $((ROUND % 50)) = 0 ]; then
    echo "round $ROUND: $TOTAL commands: ok ${COUNT[ok]} refused ${COUNT[refused]} panic ${COUNT[panic]} signal ${COUNT[signal]} hang ${COUNT[hang]} multiline ${COUNT[multiline]} silent ${COUNT[silent]}"
  fi
done
BAD=$((COUNT[panic] + COUNT[signal] + COUNT[hang] + COUNT[multiline] + COUNT[silent]))
echo "fuzz-commands: seed $SEED: $ROUND rounds, $TOTAL commands: ok ${COUNT[ok]}, refused ${COUNT[refused]}, panic ${COUNT[panic]}, signal ${COUNT[signal]}, hang ${COUNT[hang]}, multiline ${COUNT[multiline]}, silent ${COUNT[silent]}"
[ "$BAD" = 0 ]
