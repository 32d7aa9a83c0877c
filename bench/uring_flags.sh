#!/usr/bin/env bash
# A/B of the io_uring setup flags with ONE msc binary: bench/env_ab.sh with
# MSC_URING_FLAGS = none | coop | defer (see io/src/runtime.rs and
# perf/levers.md) for both the client and the gateway.
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
variants=()
for f in $FLAGS; do
  case $f in none | coop | defer) ;; *) echo "unknown flag set $f (none, coop, defer)" >&2; exit 2 ;; esac
  variants+=("MSC_URING_FLAGS=$f")
done
echo "command: MSC=$MSC FLAGS=\"$FLAGS\" WORKLOADS=\"${WORKLOADS:-ka close connect dl}\" ROUNDS=${ROUNDS:-2} DUR=${DUR:-8} bash bench/uring_flags.sh"
VARIANTS="${variants[*]}" MSC=$MSC W=$W exec bash bench/env_ab.sh
