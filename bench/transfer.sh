#!/usr/bin/env bash
# Bulk transfer through the msc chain (client -> mTLS -> gateway -> origin) on
# 127.0.0.1, side by side with a direct download from the same origin.
# Pinning as in bench/compare.sh: curl + origin on LOADCPU, client and gateway
# (workers = 1) on PROXYCPU. Rounds interleave the scenarios (direct, CONNECT,
# absolute-form GET), so a drift of the machine affects all alike. Every
# download runs under the contention guard (bench/guard.sh): it waits for a
# quiet machine, records the foreign CPU, and is repeated when that was above
# FOREIGN_MAX. Bounded: every curl has --max-time, every wait a limit.
#
#   bash bench/transfer.sh            # 1 GiB, 5 runs each
#   SIZE=104857600 RUNS=3 bash bench/transfer.sh
#   knobs: SIZE=1073741824 RUNS=5 LOADCPU=0 PROXYCPU=1 BUILD=1 MSC=path
#          FOREIGN_MAX=5 QUIET_WAIT=30 GUARD_BUDGET=300 RETRIES=2
#          OUT=perf/runs/<UTC date>/transfer
# Output: OUT/raw.tsv (one row per kept download, with its foreign CPU),
# OUT/summary.md, OUT/env.txt, OUT/command.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
# shellcheck source=bench/guard.sh
. bench/guard.sh
CMD=$(cmdline bench/transfer.sh SIZE RUNS LOADCPU PROXYCPU BUILD MSC FOREIGN_MAX QUIET_WAIT GUARD_BUDGET RETRIES OUT)
SIZE=${SIZE:-1073741824}
RUNS=${RUNS:-5}
LOADCPU=${LOADCPU:-0}
PROXYCPU=${PROXYCPU:-1}
OUT=${OUT:-perf/runs/$(date -u +%Y-%m-%d)/transfer}
mkdir -p "$OUT"
setup
GUARD_DIR=$work

"$MSC" pki init --dir "$work" --gateway-listen 127.0.0.1:0 --http-port 0 --https-port 0 >/dev/null
sed -i 's/^workers = 0/workers = 1/; s/^access = "-"/access = "off"/' "$work/gateway.toml"

CPU=$LOADCPU start origin origin --listen 127.0.0.1:0
origin=$(sed -n 's/.*listening on //p' "$work/origin.out")
CPU=$PROXYCPU start gateway gateway --config "$work/gateway.toml"
gw=$(listening_on gateway)
sed -e "s/127.0.0.1:0/$gw/" -e 's/^workers = 0/workers = 1/' "$work/client.toml" >"$work/client-run.toml"
printf '\n[control]\nlisten = "127.0.0.1:0"\n[log]\naccess = "off"\n' >>"$work/client-run.toml"
CPU=$PROXYCPU start client run --config "$work/client-run.toml"
proxy=$(sed -n 's/.* http \([^ ]*\) https.*/\1/p' "$work/client.out")
gpid=${pids[1]}; cpid=${pids[2]}
record_env "$OUT" "$CMD" "pinning: curl + origin on cpu$LOADCPU; msc client and gateway (workers = 1) on cpu$PROXYCPU" \
  "knobs: SIZE=$SIZE RUNS=$RUNS"
cat "$OUT/env.txt" >&2

hz=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
# one_download CURL-ARGS...: "MB/s client_ticks gateway_ticks bytes http_code"
one_download() {
  local c0 g0 r
  c0=$(cpu_ticks "$cpid"); g0=$(cpu_ticks "$gpid")
  r=$(taskset -c "$LOADCPU" curl -sS --max-time 120 -o /dev/null -w '%{speed_download} %{size_download} %{http_code}' \
    "$@" "http://$origin/bytes/$SIZE") || true
  echo "$r $(($(cpu_ticks "$cpid") - c0)) $(($(cpu_ticks "$gpid") - g0))"
}
measure() { # label round curl-args...
  local label=$1 i=$2 bps size code c g; shift 2
  guard_run one_download "$@"
  read -r bps size code c g <<<"$G_OUT"
  if [ "$code" != 200 ] || [ "$size" != "$SIZE" ]; then
    echo "transfer.sh: $label #$i failed: '$G_OUT' (curl $*)" >&2; exit 1
  fi
  awk -v l="$label" -v i="$i" -v b="$bps" -v s="$SIZE" -v c="$c" -v g="$g" -v hz="$hz" -v f="$G_FPCT" -v t="$G_TRIES" \
    'BEGIN { gb = s / 1e9; printf "%s\t%d\t%.0f\t%.3f\t%.3f\t%s\t%d\n", l, i, b / 1e6, c / hz / gb, g / hz / gb, f, t }' |
    tee -a "$OUT/raw.tsv"
}
# (not in a pipeline: the guard's counters live in this shell)
printf 'scenario\trun\tMB/s\tclient_cpu_s_per_GB\tgateway_cpu_s_per_GB\tforeign_cpu_pct\ttries\n' | tee "$OUT/raw.tsv"
for i in $(seq 1 "$RUNS"); do
  measure direct "$i"
  measure msc_connect "$i" -p -x "http://$proxy"
  measure msc_get "$i" -x "http://$proxy"
done
echo "loadavg at end: $(cat /proc/loadavg)" >>"$OUT/env.txt"
guard_totals >>"$OUT/env.txt"
python3 - "$OUT/raw.tsv" "$FOREIGN_MAX" <<'PY' | tee "$OUT/summary.md"
import sys, statistics as st, collections
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])][1:]
fmax = float(sys.argv[2])
by = collections.defaultdict(list)
for r in rows: by[r[0]].append(r)
direct = st.median(float(r[2]) for r in by["direct"])
print("| scenario | MB/s (median) | min–max | vs direct | client CPU s/GB | gateway CPU s/GB | runs | max foreign CPU % | runs with foreign ≥ max |")
print("|---|---|---|---|---|---|---|---|---|")
for k, rs in by.items():
    v = [float(r[2]) for r in rs]
    mb = st.median(v)
    c = st.median(float(r[3]) for r in rs); g = st.median(float(r[4]) for r in rs)
    cc = "-" if k == "direct" else f"{c:.3f}"; gg = "-" if k == "direct" else f"{g:.3f}"
    f = [float(r[5]) for r in rs]
    print(f"| {k} | {mb:.0f} | {min(v):.0f}–{max(v):.0f} | {mb/direct:.2f} | {cc} | {gg} | {len(rs)} | {max(f):.1f} | {sum(x >= fmax for x in f)} |")
PY
{ echo; echo "command: \`$CMD\`"; grep -E '^(commit|contention guard)' "$OUT/env.txt"; } | tee -a "$OUT/summary.md"
