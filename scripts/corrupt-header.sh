#!/usr/bin/env bash
# Shows: a damaged region is refused with one clear line, never a panic or a
# hang. Flips one byte of the region header (a size field covered by the
# checksum), then runs `cfctl verify` and `cf-node run`, which both refuse it;
# then overwrites the magic number and shows the different error.
# Run:   scripts/corrupt-header.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/target/release:$PATH"
export CF_PLEX=$(mktemp -d /dev/shm/cf-corrupt-XXXXXX)
trap 'rm -rf "$CF_PLEX"' EXIT
cfctl create --lock-entries 1024 --members 8 --records 256 >/dev/null
# Byte 24 is the low byte of the lock-entries field (docs/DESIGN.md, layout.rs).
printf '\x11' | dd of="$CF_PLEX/region" bs=1 seek=24 conv=notrunc status=none
echo "--- header byte 24 flipped"
cfctl verify; echo "cfctl verify: exit $?"
cf-node run --member A --workload idle; echo "cf-node run: exit $?"
printf 'GARBAGE!' | dd of="$CF_PLEX/region" bs=1 seek=0 conv=notrunc status=none
echo "--- magic overwritten"
cfctl display members; echo "cfctl display: exit $?"
