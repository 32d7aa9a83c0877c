#!/usr/bin/env bash
# Side-by-side A/B of msc builds on the same chain, same run, same pinning:
# for each binary, client and gateway (workers = 1) on PROXYCPU, nginx and the
# load generator on LOADCPU, as in bench/compare.sh. Rounds alternate the
# binaries so a drift of the machine affects all alike.
#
#   bash bench/ab.sh OLD_MSC NEW_MSC [MORE...]        # binaries to compare
#   REV_A=c8906b5 bash bench/ab.sh                    # builds that commit (git worktree) against this tree
#   WORKLOADS="ka close connect dl" ROUNDS=2 DUR=8 bash bench/ab.sh A B
#
# Workloads: ka (wrk, 64 keep-alive connections, 1 KiB, absolute-form),
# close (same with Connection: close), connect (oha, a new CONNECT + TLS per
# request), dl (5 x 100 MiB absolute-form GET with curl), dlc (same through
# CONNECT). Output: one TSV row per binary, round and workload (requests/s or
# MB/s, p99, client and gateway CPU per request or per GB from /proc ticks,
# TLS handshakes and resumed ones for connect), in OUT/ab.tsv; medians, ratios
# to the first binary and the contention per cell in OUT/summary.md.
# Every measured run is under the contention guard (bench/guard.sh, knobs
# FOREIGN_MAX=5 QUIET_WAIT=30 GUARD_BUDGET=300 RETRIES=2): it waits for a quiet
# machine, records the CPU used by other processes during the run (column
# foreign_cpu_pct) and is repeated when that was above FOREIGN_MAX.
# TRACE=1 also counts the client's io_uring operations per request on the ka
# and close workloads (perf stat on io_uring tracepoints and io_uring_enter;
# needs perf and tracefs) into the note column: submit, complete, poll_arm,
# task_add, enter per request.
# Needs: nginx, wrk, curl, oha (bench/compare.sh installs them). Bounded:
# every run has a duration or --max-time; every wait is bounded.
set -euo pipefail
# A failing command under `set -e` must not end the run without a word.
trap 'echo "ab.sh: stopped at line $LINENO: $BASH_COMMAND (status $?)" >&2' ERR
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
CMD=$(cmdline bench/ab.sh REV_A LOADCPU PROXYCPU DUR ROUNDS WORKLOADS OHA W OUT PORT_BASE FOREIGN_MAX QUIET_WAIT \
  GUARD_BUDGET RETRIES TRACE -- "$@")
# shellcheck source=bench/guard.sh
. bench/guard.sh

LOADCPU=${LOADCPU:-0}
PROXYCPU=${PROXYCPU:-1}
DUR=${DUR:-8}
ROUNDS=${ROUNDS:-2}
WORKLOADS=${WORKLOADS:-"ka close connect dl"}
OHA=${OHA:-/opt/oha/bin/oha}
W=${W:-/tmp/msc-ab}
OUT=${OUT:-perf/runs/$(date -u +%Y-%m-%d)/ab}
PORT_BASE=${PORT_BASE:-19500}
ORIGIN=127.0.0.1:$((PORT_BASE + 80))
ORIGIN_TLS=127.0.0.1:$((PORT_BASE + 443))
GW=127.0.0.1:$((PORT_BASE + 100))
P_HTTP=$((PORT_BASE + 101))
P_HTTPS=$((PORT_BASE + 102))

bins=("$@")
if [ -n "${REV_A:-}" ]; then
  wt=$W/rev-$REV_A
  if [ ! -x "$wt/target/release/msc" ]; then
    rm -rf "$wt"; git worktree add -f --detach "$wt" "$REV_A" >/dev/null
    (cd "$wt" && cargo build --release -q)
  fi
  cargo build --release -q
  bins=("$wt/target/release/msc" "$PWD/target/release/msc")
fi
[ "${#bins[@]}" -ge 1 ] || { echo "usage: bench/ab.sh MSC_A MSC_B ... (or REV_A=commit)" >&2; exit 2; }

mkdir -p "$W/www" "$W/tmp" "$W/guard" "$OUT"
GUARD_DIR=$W/guard
[ "$(stat -c %s "$W/www/1k" 2>/dev/null)" = 1024 ] || head -c 1024 /dev/urandom >"$W/www/1k"
[ "$(stat -c %s "$W/www/100m" 2>/dev/null)" = $((100 << 20)) ] || head -c $((100 << 20)) /dev/urandom >"$W/www/100m"
rm -rf "$W/pki"
"${bins[0]}" pki init --dir "$W/pki" --gateway-listen "$GW" --http-port "$P_HTTP" --https-port "$P_HTTPS" >/dev/null
sed -i 's/^workers = .*/workers = 1/' "$W/pki/client.toml" "$W/pki/gateway.toml"
sed -i 's/^access = .*/access = "off"/' "$W/pki/gateway.toml"
printf '\n[control]\nlisten = "127.0.0.1:0"\n[log]\naccess = "off"\n' >>"$W/pki/client.toml"
# Builds with an egress policy refuse loopback origins unless allowed; builds
# before it refuse the [egress] table. One gateway config for each kind.
awk '/^\[egress\]/ {skip = 1; next} /^\[/ {skip = 0} !skip' "$W/pki/gateway.toml" >"$W/pki/gateway-base.toml"
cp "$W/pki/gateway-base.toml" "$W/pki/gateway-egress.toml"
printf '\n[egress]\nallow = ["127.0.0.0/8"]\nconnect_ports = ["*"]\n' >>"$W/pki/gateway-egress.toml"
gateway_config() {
  if "$1" check-config "$W/pki/gateway-egress.toml" >/dev/null 2>&1; then
    echo "$W/pki/gateway-egress.toml"
  else
    echo "$W/pki/gateway-base.toml"
  fi
}
# nginx origin: http on ORIGIN, https on ORIGIN_TLS (the CONNECT workload), sendfile on
origin_conf "$W" "$ORIGIN" 1 "$ORIGIN_TLS" "$W/pki/gateway.pem" "$W/pki/gateway-key.pem"

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "${ngx:-}" ] && kill "$ngx" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT
# In the foreground (a child of this script): the guard counts its CPU as ours.
taskset -c "$LOADCPU" nginx -c "$W/nginx.conf" -g 'daemon off;' 2>"$W/nginx.err" &
ngx=$!
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/${ORIGIN%:*}/${ORIGIN#*:}") 2>/dev/null && break; sleep 0.1; done

# TLS handshakes and resumed ones of the client so far (from its status).
tls_counts() {
  curl -s --max-time 5 "$control/status" | python3 -c \
    'import json, sys; t = json.load(sys.stdin)["tls"]; print(t["handshakes"], t["resumed"])'
}
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TRACE_EVENTS=io_uring:io_uring_submit_req,io_uring:io_uring_complete,io_uring:io_uring_poll_arm,io_uring:io_uring_task_add,syscalls:sys_enter_io_uring_enter
if [ "${TRACE:-0}" = 1 ]; then
  perf stat -x, -e "$TRACE_EVENTS" -o /dev/null -- true 2>/dev/null || { echo "TRACE=1: perf cannot count $TRACE_EVENTS here" >&2; exit 2; }
fi
wait_line() { for _ in $(seq 1 150); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done; echo "no '$2' in $1" >&2; cat "$1" >&2; return 1; }

start_chain() {
  local bin=$1
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
  taskset -c "$PROXYCPU" "$bin" gateway --config "$(gateway_config "$bin")" >"$W/gw.out" 2>&1 &
  gpid=$!; pids+=("$gpid")
  wait_line "$W/gw.out" ready
  taskset -c "$PROXYCPU" "$bin" run --config "$W/pki/client.toml" >"$W/cl.out" 2>&1 &
  cpid=$!; pids+=("$cpid")
  wait_line "$W/cl.out" ready
  control=$(grep '^msc client ready' "$W/cl.out" | sed -n 's/.*control \(http:\/\/[^/]*\)\/.*/\1/p')
}

wrk_run() {
  WRK_PATH="http://$ORIGIN/1k" WRK_HOST="$ORIGIN" WRK_CLOSE=$1 timeout $((DUR + 30)) \
    taskset -c "$LOADCPU" wrk -t1 -c64 -d"${DUR}s" -s bench/compare/bench.lua "http://127.0.0.1:$P_HTTP" | grep RESULT
}

# measure WORKLOAD: one run of WORKLOAD against the running chain ($bin, $round); prints its row
measure() {
  local wl=$1
  c0=$(ticks "$cpid"); g0=$(ticks "$gpid")
  case $wl in
    ka | close)
      local tp=""
      if [ "${TRACE:-0}" = 1 ]; then
        perf stat -x, -e "$TRACE_EVENTS" -p "$cpid" -o "$W/trace.csv" -- sleep "$DUR" 2>/dev/null &
        tp=$!
      fi
      r=$(wrk_run "$([ "$wl" = close ] && echo 1 || echo 0)") || { echo "wrk gave no result" >&2; return 1; }
      req=$(sed 's/.*requests=\([0-9]*\).*/\1/' <<<"$r")
      p99=$(sed 's/.*p99_us=\([0-9]*\).*/\1/' <<<"$r")
      c1=$(ticks "$cpid"); g1=$(ticks "$gpid")
      local note=""
      if [ -n "$tp" ]; then
        wait "$tp" || { echo "perf stat failed (TRACE=1 needs perf and tracefs)" >&2; return 1; }
        note=$(awk -F, -v n="$req" '$3 ~ /:/ { k = $3; sub(/.*:(io_uring_|sys_enter_io_uring_)?/, "", k); printf "%s%s=%.2f", sep, k, $1 / n; sep = " " }' "$W/trace.csv")
      fi
      awk -v b="$bin" -v r="$round" -v w="$wl" -v n="$req" -v d="$DUR" -v p="$p99" \
        -v c="$((c1 - c0))" -v g="$((g1 - g0))" -v t="$note" 'BEGIN {
          printf "%s\t%d\t%s\t%.0f\trequests/s\t%.2f\t%.1f\t%.1f\tus/req\t%s\n", b, r, w, n / d, p / 1000, c * 10000 / n, g * 10000 / n, t }'
      ;;
    connect)
      tls0=$(tls_counts) || { echo "no TLS counts from $control/status" >&2; return 1; }
      o=$(timeout $((DUR + 30)) taskset -c "$LOADCPU" "$OHA" -z "${DUR}s" -c 64 --disable-keepalive \
        --insecure --no-tui -x "http://127.0.0.1:$P_HTTPS" "https://$ORIGIN_TLS/1k" 2>&1)
      rps=$(sed -n 's/.*Requests\/sec:[[:space:]]*\([0-9.]*\).*/\1/p' <<<"$o")
      n=$(grep -o '\[200\] [0-9]* responses' <<<"$o" | awk '{s += $2} END {print s + 0}')
      c1=$(ticks "$cpid"); g1=$(ticks "$gpid")
      sleep 2.5 # workers report to the control plane every second
      tls1=$(tls_counts) || { echo "no TLS counts from $control/status" >&2; return 1; }
      read -r h1 r1 <<<"$tls1"
      read -r h0 r0 <<<"$tls0"
      tls="new tunnels=$((h1 - h0)) resumed=$((r1 - r0)) requests=$n"

      awk -v b="$bin" -v r="$round" -v x="$rps" -v n="$n" -v c="$((c1 - c0))" -v g="$((g1 - g0))" -v t="$tls" 'BEGIN {
          printf "%s\t%d\tconnect\t%.0f\trequests/s\t\t%.1f\t%.1f\tus/req\t%s\n", b, r, x, c * 10000 / n, g * 10000 / n, t }'
      ;;
    dl | dlc)
      flag=(); port=$P_HTTP
      [ "$wl" = dlc ] && flag=(-p) && port=$P_HTTPS
      speeds=""
      for _ in 1 2 3 4 5; do
        s=$(taskset -c "$LOADCPU" curl -s --max-time 60 -o /dev/null -w '%{speed_download}' "${flag[@]}" \
          -x "http://127.0.0.1:$port" "http://$ORIGIN/100m")
        speeds="$speeds $s"
      done
      c1=$(ticks "$cpid"); g1=$(ticks "$gpid")
      med=$(tr ' ' '\n' <<<"$speeds" | grep . | sort -n | sed -n 3p)
      awk -v b="$bin" -v r="$round" -v w="$wl" -v m="$med" -v c="$((c1 - c0))" -v g="$((g1 - g0))" -v s="$speeds" 'BEGIN {
          gb = 5 * 104857600 / 1e9
          printf "%s\t%d\t%s\t%.0f\tMB/s (median of 5)\t\t%.3f\t%.3f\ts/GB\truns:%s\n", b, r, w, m / 1e6, c / 100 / gb, g / 100 / gb, s }'
      ;;
  esac
}

MSC=${bins[0]}
record_env "$OUT" "$CMD" "pinning: nginx + load generator on cpu$LOADCPU; msc client and gateway (workers = 1) on cpu$PROXYCPU" \
  "knobs: DUR=${DUR}s ROUNDS=$ROUNDS WORKLOADS=$WORKLOADS" \
  "$(for b in "${bins[@]}"; do echo "binary: $b ($("$b" --version 2>/dev/null || true), built $(date -u -r "$b" +%FT%TZ))"; done)"
printf 'binary\tround\tworkload\tvalue\tunit\tp99_ms\tclient_cpu\tgateway_cpu\tcpu_unit\tnote\tforeign_cpu_pct\ttries\n' >"$OUT/ab.tsv"
for round in $(seq 1 "$ROUNDS"); do
  for bin in "${bins[@]}"; do
    start_chain "$bin"
    # Warm the pool and the origin connections.
    WRK_PATH="http://$ORIGIN/1k" WRK_HOST="$ORIGIN" timeout 30 taskset -c "$LOADCPU" \
      wrk -t1 -c64 -d2s -s bench/compare/bench.lua "http://127.0.0.1:$P_HTTP" >/dev/null
    for wl in $WORKLOADS; do
      guard_run measure "$wl"
      [ "$G_RC" = 0 ] && [ -n "$G_OUT" ] || { echo "ab.sh: the $wl run of $bin failed (status $G_RC): $G_OUT" >&2; exit 1; }
      printf '%s\t%s\t%s\n' "$G_OUT" "$G_FPCT" "$G_TRIES" | tee -a "$OUT/ab.tsv"
    done
  done
done
{
  echo "command: $CMD"
  echo "date: $(date -u +%FT%TZ); tree: $(git rev-parse --short HEAD)"
  for b in "${bins[@]}"; do echo "binary: $b ($("$b" --version 2>/dev/null || true))"; done
} >>"$OUT/ab.tsv"
echo "loadavg at end: $(cat /proc/loadavg)" >>"$OUT/env.txt"
guard_totals >>"$OUT/env.txt"
python3 - "$OUT/ab.tsv" "$FOREIGN_MAX" <<'PY' | tee "$OUT/summary.md"
import collections, statistics as st, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if "\t" in l][1:]
fmax = float(sys.argv[2])
cell = collections.defaultdict(list)
bins, wls = [], []
for r in rows:
    b, w = r[0], r[2]
    if b not in bins: bins.append(b)
    if w not in wls: wls.append(w)
    cell[b, w].append(r)
def med(rs, i):
    v = [float(r[i]) for r in rs if r[i] not in ("", "nan", "-nan", "inf")]
    return st.median(v) if v else float("nan")
print(f"| workload | binary | value (median) | unit | vs first | client CPU | gateway CPU | cpu unit | runs | max foreign CPU % | runs with foreign ≥ {fmax:g}% |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for w in wls:
    base = med(cell.get((bins[0], w), []), 3)
    for b in bins:
        rs = cell.get((b, w), [])
        if not rs: continue
        v = med(rs, 3); f = [float(r[10]) for r in rs]
        ratio = f"{v / base:.3f}" if base == base and base else "-"
        print(f"| {w} | {b} | {v:.0f} | {rs[0][4]} | {ratio} | {med(rs, 6):g} | {med(rs, 7):g} | {rs[0][8]} | {len(rs)} | {max(f):.1f} | {sum(x >= fmax for x in f)} |")
PY
{ echo; echo "command: \`$CMD\`"; guard_totals; } | tee -a "$OUT/summary.md"
