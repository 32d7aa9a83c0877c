#!/usr/bin/env bash
# Bulk transfer through the msc chain (client -> mTLS -> gateway -> origin) on
# 127.0.0.1, side by side with a direct download from the same origin.
# Pinning as in ../shared/bench-peers: curl + origin on CPU 0, client and
# gateway on CPU 1. Bounded: every curl has --max-time.
#
#   bash bench/transfer.sh            # 1 GiB, 5 runs each
#   SIZE=104857600 RUNS=3 bash bench/transfer.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-1073741824}
RUNS=${RUNS:-5}
OUT=${OUT:-perf/runs/$(date -u +%Y-%m-%d)}
mkdir -p "$OUT"
# shellcheck source=bench/lib.sh
. bench/lib.sh
setup

"$MSC" pki init --dir "$work" --gateway-listen 127.0.0.1:0 --http-port 0 --https-port 0 >/dev/null
sed -i 's/^workers = 0/workers = 1/' "$work/gateway.toml"

CPU=0 start origin origin --listen 127.0.0.1:0
origin=$(sed -n 's/.*listening on //p' "$work/origin.out")
CPU=1 start gateway gateway --config "$work/gateway.toml"
gw=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$work/gateway.out")
sed -e "s/127.0.0.1:0/$gw/" -e 's/^workers = 0/workers = 1/' "$work/client.toml" >"$work/client-run.toml"
printf '\n[control]\nlisten = "127.0.0.1:0"\n' >>"$work/client-run.toml"
CPU=1 start client run --config "$work/client-run.toml"
proxy=$(sed -n 's/.* http \([^ ]*\) https.*/\1/p' "$work/client.out")
gpid=${pids[1]}; cpid=${pids[2]}

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
measure() { # label curl-args...
  local label=$1; shift
  for i in $(seq 1 "$RUNS"); do
    local c0 g0; c0=$(cpu_ticks "$cpid"); g0=$(cpu_ticks "$gpid")
    local bps
    bps=$(taskset -c 0 curl -sS --max-time 120 -o /dev/null -w '%{speed_download}' "$@" "http://$origin/bytes/$SIZE")
    local c1 g1; c1=$(cpu_ticks "$cpid"); g1=$(cpu_ticks "$gpid")
    local hz; hz=$(getconf CLK_TCK)
    awk -v l="$label" -v i="$i" -v b="$bps" -v s="$SIZE" -v c=$((c1 - c0)) -v g=$((g1 - g0)) -v hz="$hz" \
      'BEGIN { gb = s / 1e9; printf "%s\t%d\t%.0f\t%.3f\t%.3f\n", l, i, b / 1e6, c / hz / gb, g / hz / gb }'
  done
}
{
  printf 'scenario\trun\tMB/s\tclient_cpu_s_per_GB\tgateway_cpu_s_per_GB\n'
  measure direct
  measure msc_connect -p -x "http://$proxy"
  measure msc_get -x "http://$proxy"
} | tee "$OUT/transfer.tsv"
python3 - "$OUT/transfer.tsv" <<'PY' | tee "$OUT/transfer-summary.md"
import sys, statistics as st, collections
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])][1:]
by = collections.defaultdict(list)
for r in rows: by[r[0]].append(r)
direct = st.median(float(r[2]) for r in by["direct"])
print("| scenario | MB/s (median) | vs direct | client CPU s/GB | gateway CPU s/GB |")
print("|---|---|---|---|---|")
for k, rs in by.items():
    mb = st.median(float(r[2]) for r in rs)
    c = st.median(float(r[3]) for r in rs); g = st.median(float(r[4]) for r in rs)
    cc = "-" if k == "direct" else f"{c:.3f}"; gg = "-" if k == "direct" else f"{g:.3f}"
    print(f"| {k} | {mb:.0f} | {mb/direct:.2f} | {cc} | {gg} |")
PY
echo "size=$SIZE runs=$RUNS commit=$(git rev-parse --short HEAD)" >>"$OUT/transfer-summary.md"
