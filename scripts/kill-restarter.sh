#!/usr/bin/env bash
# Shows: the member that claimed a restart request, and the restart-light
# process it started, are both killed while they recover another member; the
# third member takes the claim over and finishes the job with the same result.
# The dead member holds 1,000,000 modify locks so its recovery lasts long enough
# to be interrupted from a script.
# Run:   scripts/kill-restarter.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/target/release:$PATH"
export CF_PLEX=$(mktemp -d /dev/shm/cf-restarter-XXXXXX)
declare -A pid
cleanup() { for p in "${pid[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$CF_PLEX"; }
trap cleanup EXIT
cfctl create --members 4 --lock-entries 4194304 --records 1048576 >/dev/null
for m in SYSB SYSC; do cf-node run --member $m --workload idle >/dev/null & pid[$m]=$!; done
cfctl hold --member BIG --modify-many 1000000 > "$CF_PLEX/hold.out" & pid[BIG]=$!
until grep -q holding "$CF_PLEX/hold.out" 2>/dev/null; do sleep 0.1; done
kill -9 "${pid[BIG]}"; unset "pid[BIG]"; echo "killed BIG, holding 1000000 modify locks"
# As soon as the request is claimed and its restart light named, kill both.
victims=$(python3 - <<'PY'
import json, subprocess, time
for _ in range(2000):
    reqs = json.loads(subprocess.run(["cfctl", "display", "requests", "--json"], capture_output=True).stdout)
    r = [x for x in reqs if x["member"] == "BIG" and x["claimed_by"] and x["worker_pid"]]
    if r:
        print(r[0]["claimed_by"], r[0]["worker_pid"]); break
    time.sleep(0.002)
PY
)
read -r claimer worker <<<"$victims"
kill -9 "${pid[$claimer]}" "$worker"; unset "pid[$claimer]"
echo "killed the claimer $claimer and its restart light (pid $worker)"
# Done when nothing is outstanding: no request, no retained lock, and the killed
# claimer itself recovered too (verify clean).
until [ "$(cfctl display requests --json)" = "[]" ] && [ "$(cfctl display retained --json)" = "[]" ] \
      && cfctl verify >/dev/null 2>&1; do sleep 0.1; done
cfctl display events | grep -E "BIG|$claimer" | grep -v "connected (pid"
for p in "${pid[@]}"; do kill -TERM "$p"; wait "$p" || true; done
pid=()
cfctl verify
