#!/usr/bin/env bash
# A/B of environment settings with ONE msc binary: bench/ab.sh over wrappers
# that set the variables of each variant for both the client and the gateway.
# The wrappers `exec` msc, so ab.sh's PIDs, pinning and CPU ticks are msc's.
#
#   VARIANTS="MSC_MULTISHOT=0 MSC_MULTISHOT=1" bash bench/env_ab.sh
#   MSC=/path/to/msc VARIANTS="MSC_URING_FLAGS=none MSC_URING_FLAGS=defer" WORKLOADS="ka close" bash bench/env_ab.sh
#
# A variant is one or more VAR=value settings joined with commas
# ("MSC_MULTISHOT=0,MSC_URING_FLAGS=none"). Everything else (ROUNDS, DUR,
# WORKLOADS, OUT, ...) is bench/ab.sh's; the TSV's binary column names the
# wrapper, i.e. the variant.
set -euo pipefail
cd "$(dirname "$0")/.."
MSC=${MSC:-target/release/msc}
VARIANTS=${VARIANTS:?"set VARIANTS, e.g. VARIANTS=\"MSC_MULTISHOT=0 MSC_MULTISHOT=1\""}
W=${W:-/tmp/msc-ab}
[ -x "$MSC" ] || { echo "no msc binary at $MSC (cargo build --release, or MSC=...)" >&2; exit 2; }
bin=$(realpath "$MSC")
mkdir -p "$W"
wrappers=()
for v in $VARIANTS; do
  settings=${v//,/ }
  for kv in $settings; do
    [[ $kv =~ ^[A-Z_][A-Z0-9_]*=[A-Za-z0-9_.:-]*$ ]] || { echo "bad setting '$kv' in variant '$v' (VAR=value)" >&2; exit 2; }
  done
  w="$W/msc-${v//[=,]/-}"
  printf '#!/bin/sh\n%s exec %s "$@"\n' "$settings" "$bin" >"$w"
  chmod +x "$w"
  wrappers+=("$w")
done
echo "command: MSC=$MSC VARIANTS=\"$VARIANTS\" WORKLOADS=\"${WORKLOADS:-ka close connect dl}\" ROUNDS=${ROUNDS:-2} DUR=${DUR:-8} bash bench/env_ab.sh"
exec bash bench/ab.sh "${wrappers[@]}"
