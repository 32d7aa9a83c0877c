#!/usr/bin/env bash
# A/B of the io_uring setup flags with ONE msc binary: bench/ab.sh over
# wrappers that set MSC_URING_FLAGS (none | coop | defer, see
# io/src/runtime.rs and perf/levers.md) for both the client and the gateway.
# The wrappers `exec` msc, so ab.sh's PIDs, pinning and CPU ticks are msc's.
#
#   bash bench/uring_flags.sh                                   # target/release/msc, none vs coop vs defer
#   MSC=/path/to/msc FLAGS="none defer" WORKLOADS="ka close" bash bench/uring_flags.sh
#
# Everything else (ROUNDS, DUR, WORKLOADS, OUT, ...) is bench/ab.sh's; the
# TSV's binary column names the wrapper, i.e. the flag set. Each process logs
# the flags in effect at debug level ("io_uring setup flags: ...").
set -euo pipefail
cd "$(dirname "$0")/.."
MSC=${MSC:-target/release/msc}
FLAGS=${FLAGS:-"none coop defer"}
W=${W:-/tmp/msc-ab}
[ -x "$MSC" ] || { echo "no msc binary at $MSC (cargo build --release, or MSC=...)" >&2; exit 2; }
bin=$(realpath "$MSC")
mkdir -p "$W"
wrappers=()
for f in $FLAGS; do
  case $f in none | coop | defer) ;; *) echo "unknown flag set $f (none, coop, defer)" >&2; exit 2 ;; esac
  w="$W/msc-uring-$f"
  printf '#!/bin/sh\nMSC_URING_FLAGS=%s exec %s "$@"\n' "$f" "$bin" >"$w"
  chmod +x "$w"
  wrappers+=("$w")
done
echo "command: MSC=$MSC FLAGS=\"$FLAGS\" WORKLOADS=\"${WORKLOADS:-ka close connect dl}\" ROUNDS=${ROUNDS:-2} DUR=${DUR:-8} bash bench/uring_flags.sh"
exec bash bench/ab.sh "${wrappers[@]}"
