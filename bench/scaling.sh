#!/usr/bin/env bash
# Scaling: msc with 2 workers vs 1, side by side in one run (interleaved rounds,
# contention guard). The question: does a second worker double what the client
# (or the gateway) can carry when it has a core of its own?
#
# This machine has 2 cores, and the load generator, nginx and the other half of
# the chain need CPU too, so "2 cores vs 1" cannot be run literally. Instead the
# side under test (SIDES: client, gateway) gets CAP of a core per worker: each
# worker thread (client-wN / gateway-wN) is put in its own cgroup (v1 cpu
# controller, which places single threads) with cpu.cfs_quota_us = CAP x
# cpu.cfs_period_us. With workers = 1 the side has one CAP-sized "core", with
# workers = 2 two of them; everything else (the other side with workers = 2,
# nginx, wrk) is uncapped and has the rest of the machine (2 - 2 x CAP cores at
# least), so the capped side is the bottleneck. The run proves it: the share of
# cfs periods in which the capped workers were throttled is reported per run.
# Reported per side and workload:
#   (a) requests/s at 1 and 2 workers and the ratio (the scaling factor with
#       one CAP-core per worker; linear = 2.0), client/gateway CPU per request;
#   (b) efficiency: requests per CPU-second of the side under test (whole
#       process), at 1 and 2 workers; a ratio of 1.0 means the second worker
#       costs nothing extra per request (no shared locks, no cross-worker
#       traffic); 2 x that ratio is the speedup two dedicated cores would give
#       if nothing else limits; and the busiest worker's share of the workers'
#       CPU (0.5 = an even split of the connections).
# With CAP=0 no cgroup is used: the side's workers compete with everything else
# on both cores, the request rate is what the whole 2-core machine gives, and
# only (b) is meaningful.
# A ">= 1.8x with 2 workers on 2 cores" claim needs a machine with >= 4 cores:
# 2 cores for the side under test alone (pinned), the rest for wrk, nginx and
# the other side (see perf/scaling.md). That run is this script with
# PIN_SIDE=2,3 PIN_REST=0,1 (CAP then defaults to 0): the side under test on one
# dedicated core with 1 worker, on two with 2 workers, everything else elsewhere.
#
#   bash bench/scaling.sh                          # SIDES="client gateway both" WORKLOADS="ka close" REPS=3 DUR=10
#   DUR=3 REPS=1 SIDES=client BUILD=0 bash bench/scaling.sh   # a quick check
#   knobs: SIDES="client gateway both" WORKLOADS="ka close" REPS=3 DUR=10 CONNS=64 WRK_THREADS=2
#          CAP=0.2 CAP_PERIOD_US=10000 PIN_SIDE= PIN_REST= PORT_BASE=22000 W=/tmp/msc-scaling BUILD=1 MSC=path
#          FOREIGN_MAX=5 QUIET_WAIT=30 GUARD_BUDGET=300 RETRIES=2 OUT=perf/runs/<UTC date>/scaling
# Workloads: ka (wrk, CONNS keep-alive connections, 1 KiB GET in absolute form,
# bench/compare/bench.lua), close (the same with Connection: close: a new
# browser connection per request).
# Bounded: wrk -d under timeout, every wait bounded; 127.0.0.1 only; stops only
# the processes it started, by PID; removes the cgroups it made.
# SIDES may also list "both": client and gateway together at 1+1 vs 2+2 workers,
# every worker capped (the chain's scaling; side CPU = client + gateway).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
CMD=$(cmdline bench/scaling.sh SIDES ENTERS WORKLOADS REPS DUR CONNS WRK_THREADS CAP CAP_PERIOD_US PIN_SIDE PIN_REST PORT_BASE W BUILD MSC \
  FOREIGN_MAX QUIET_WAIT GUARD_BUDGET RETRIES OUT)
# shellcheck source=bench/guard.sh
. bench/guard.sh
SIDES=${SIDES:-"client gateway both"}
ENTERS=${ENTERS:-0}     # 1: count the side's io_uring_enter calls per run (perf stat), in OUT/enters.tsv
WORKLOADS=${WORKLOADS:-"ka close"}
REPS=${REPS:-3}
DUR=${DUR:-10}
CONNS=${CONNS:-64}
WRK_THREADS=${WRK_THREADS:-2}
PIN_SIDE=${PIN_SIDE:-}
PIN_REST=${PIN_REST:-}
if [ -n "$PIN_SIDE" ]; then CAP=${CAP:-0}; else CAP=${CAP:-0.2}; fi
CAP_PERIOD_US=${CAP_PERIOD_US:-10000}
PORT_BASE=${PORT_BASE:-22000}
W=${W:-/tmp/msc-scaling}
OUT=${OUT:-perf/runs/$(date -u +%Y-%m-%d)/scaling}
CG_ROOT=/sys/fs/cgroup/cpu
CG=$CG_ROOT/msc-scaling-$$
ORIGIN=127.0.0.1:$((PORT_BASE + 80))
HZ=$(getconf CLK_TCK)

[ "$(id -u)" = 0 ] || { echo "scaling.sh: run as root (cgroups)" >&2; exit 1; }
for b in nginx wrk curl python3; do command -v "$b" >/dev/null || { echo "scaling.sh: $b missing (apt-get install nginx-light wrk curl python3)" >&2; exit 1; }; done
CAPPED=$(awk -v c="$CAP" 'BEGIN{print (c > 0) ? 1 : 0}')
if [ -n "$PIN_SIDE" ]; then
  [[ $PIN_SIDE =~ ^[0-9]+,[0-9]+$ ]] && [ -n "$PIN_REST" ] ||
    { echo "scaling.sh: PIN_SIDE is two CPUs (e.g. 2,3) and PIN_REST the others (e.g. 0,1,4-7)" >&2; exit 2; }
fi
# side_cpus N: the CPUs of the side under test with N workers (PIN_SIDE: 1 worker on its first CPU)
side_cpus() { if [ -z "$PIN_SIDE" ]; then echo ""; elif [ "$1" = 1 ]; then echo "${PIN_SIDE%%,*}"; else echo "$PIN_SIDE"; fi; }
PIN_REST_CMD=()
[ -n "$PIN_REST" ] && PIN_REST_CMD=(taskset -c "$PIN_REST")
if [ "$CAPPED" = 1 ]; then
  [ -w "$CG_ROOT" ] && [ -e "$CG_ROOT/cpu.cfs_quota_us" ] ||
    { echo "scaling.sh: needs the cgroup v1 cpu controller at $CG_ROOT (or CAP=0: efficiency only)" >&2; exit 1; }
  QUOTA=$(awk -v c="$CAP" -v p="$CAP_PERIOD_US" 'BEGIN{printf "%d", c * p}')
fi
rm -rf "$W"; mkdir -p "$W/www" "$W/tmp" "$OUT"
head -c 1024 /dev/urandom >"$W/www/1k"
setup
GUARD_DIR=$work
ulimit -n "$(ulimit -Hn)"

stop_everything() {
  local d
  stop_pids
  if [ -d "$CG" ]; then
    for d in "$CG"/*/; do [ -d "$d" ] && rmdir "$d" 2>/dev/null; done
    rmdir "$CG" 2>/dev/null || echo "scaling.sh: could not remove $CG" >&2
  fi
  rm -rf "$work"
}
trap stop_everything EXIT

# nginx as the origin, a child of this script (the guard counts it as ours).
origin_conf "$W" "$ORIGIN" 0   # http only, sendfile off (1 KiB answers)
"${PIN_REST_CMD[@]}" nginx -c "$W/nginx.conf" -g 'daemon off;' 2>"$W/nginx.err" &
pids+=($!)
for _ in $(seq 1 100); do curl -sf -o /dev/null --max-time 1 "http://$ORIGIN/1k" && break; sleep 0.1; done
curl -sf -o /dev/null --max-time 2 "http://$ORIGIN/1k" || { echo "scaling.sh: nginx did not start: $(cat "$W/nginx.err")" >&2; exit 1; }

# chain NAME INDEX CLIENT_WORKERS GATEWAY_WORKERS CLIENT_CPUS GATEWAY_CPUS: a client + gateway pair with
# its own PKI and ports (CPUS: taskset list, empty = unpinned); sets CPID_<NAME>, GPID_<NAME>, PORT_<NAME>
declare -A CPID GPID PORT
chain() {
  local name=$1 i=$2 cw=$3 gw=$4 ccpu=$5 gcpu=$6 d=$W/$1 b=$((PORT_BASE + 100 + 10 * $2))
  "$MSC" pki init --dir "$d" --gateway-listen "127.0.0.1:$b" --http-port $((b + 1)) --https-port $((b + 2)) >/dev/null
  sed -i "s/^workers = .*/workers = $gw/; s/^access = .*/access = \"off\"/" "$d/gateway.toml"
  sed -i "s/^workers = .*/workers = $cw/" "$d/client.toml"
  printf '\n[control]\nlisten = "127.0.0.1:0"\n[log]\naccess = "off"\n' >>"$d/client.toml"
  grep -q "^workers = $gw" "$d/gateway.toml" && grep -q "^workers = $cw" "$d/client.toml" ||
    { echo "scaling.sh: could not set workers in $d" >&2; exit 1; }
  CPU=$gcpu start "$name-gateway" gateway --config "$d/gateway.toml"; GPID[$name]=${pids[-1]}
  CPU=$ccpu start "$name-client" run --config "$d/client.toml"; CPID[$name]=${pids[-1]}
  PORT[$name]=$((b + 1))
  grep -q "$cw workers\\?," "$work/$name-client.out" && grep -q "($gw workers\\?," "$work/$name-gateway.out" ||
    { echo "scaling.sh: $name: unexpected worker counts: $(cat "$work/$name-client.out" "$work/$name-gateway.out")" >&2; exit 1; }
  curl -sf -o /dev/null --max-time 5 -x "http://127.0.0.1:${PORT[$name]}" "http://$ORIGIN/1k" ||
    { echo "scaling.sh: $name: no 200 through the chain" >&2; exit 1; }
}
# cap PID PREFIX NAME: each worker thread (comm PREFIX-wN) of PID in its own cgroup with CAP of a core
cap() {
  local pid=$1 prefix=$2 name=$3 t comm n=0
  [ "$CAPPED" = 1 ] || return 0
  mkdir -p "$CG"
  for t in /proc/"$pid"/task/*; do
    comm=$(cat "$t/comm" 2>/dev/null) || continue
    case $comm in "$prefix"-w*) ;; *) continue ;; esac
    mkdir "$CG/$name-$comm"
    echo "$CAP_PERIOD_US" >"$CG/$name-$comm/cpu.cfs_period_us"
    echo "$QUOTA" >"$CG/$name-$comm/cpu.cfs_quota_us"
    echo "${t##*/}" >"$CG/$name-$comm/tasks"
    n=$((n + 1))
  done
  [ "$n" -ge 1 ] || { echo "scaling.sh: no $prefix-w* threads in pid $pid" >&2; exit 1; }
}

# The chains: for each side, one with 1 worker and one with 2 on that side; the other side has 2 workers.
CHAINS=()
i=0
for side in $SIDES; do
  for n in 1 2; do
    name=$side-w$n
    case $side in
      client) chain "$name" $i "$n" 2 "$(side_cpus "$n")" "$PIN_REST"; cap "${CPID[$name]}" client "$name" ;;
      gateway) chain "$name" $i 2 "$n" "$PIN_REST" "$(side_cpus "$n")"; cap "${GPID[$name]}" gateway "$name" ;;
      both) chain "$name" $i "$n" "$n" "$(side_cpus "$n")" "$(side_cpus "$n")"
            cap "${CPID[$name]}" client "$name"; cap "${GPID[$name]}" gateway "$name" ;;
      *) echo "scaling.sh: unknown side $side" >&2; exit 2 ;;
    esac
    CHAINS+=("$name")
    i=$((i + 1))
  done
done

record_env "$OUT" "$CMD" \
  "pinning: $(if [ -n "$PIN_SIDE" ]; then echo "side under test on cpu ${PIN_SIDE%%,*} (1 worker) / cpus $PIN_SIDE (2 workers); the rest (wrk, nginx, the other side) on cpus $PIN_REST"; else echo "none (every process may run on every core)"; fi)" \
  "caps: $(if [ "$CAPPED" = 1 ]; then echo "each worker thread of the side under test in a cgroup with cpu.cfs_quota_us=$QUOTA per cpu.cfs_period_us=$CAP_PERIOD_US (CAP=$CAP of a core)"; else echo none; fi)" \
  "knobs: SIDES=$SIDES WORKLOADS=$WORKLOADS REPS=$REPS DUR=${DUR}s CONNS=$CONNS WRK_THREADS=$WRK_THREADS" \
  "chains: ${CHAINS[*]} (NAME-wN: N workers on the side under test, 2 on the other side)"
cat "$OUT/env.txt" >&2

wrk_cmd() { # PORT CLOSE DUR
  WRK_PATH="http://$ORIGIN/1k" WRK_HOST="$ORIGIN" WRK_CLOSE=$2 timeout $(($3 + 30)) \
    "${PIN_REST_CMD[@]}" wrk -t"$WRK_THREADS" -c"$CONNS" -d"$3s" --timeout 5s -s bench/compare/bench.lua "http://127.0.0.1:$1/"
}
# ticks PID...: utime + stime of the processes (all threads), summed
ticks() { local p t=0; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
# worker thread ticks of PID...: "w0 w1 ..." (space separated, in name order)
wticks() { local t; for t in $(printf '/proc/%s/task/* ' "$@"); do case $(cat "$t/comm") in *-w[0-9]*) echo "$(cat "$t/comm") $(awk '{print $14 + $15}' "$t/stat")" ;; esac; done | sort | awk '{printf "%s ", $2}'; }
# throttling of NAME's cgroups: "periods throttled"
throttle() {
  local d p=0 t=0 a b
  [ "$CAPPED" = 1 ] || { echo "0 0"; return; }
  for d in "$CG/$1"-*; do
    a=$(awk '$1 == "nr_periods" {print $2}' "$d/cpu.stat"); b=$(awk '$1 == "nr_throttled" {print $2}' "$d/cpu.stat")
    p=$((p + a)); t=$((t + b))
  done
  echo "$p $t"
}
# run NAME CLOSE: one wrk run; prints "requests duration_us p50_us p99_us errors side_ticks other_ticks periods throttled wticks..."
run() {
  local name=$1 close=$2 side=${1%-w*} sp op s0 o0 w0 th0 res s1 o1 w1 th1
  case $side in
    client) sp=("${CPID[$name]}"); op=("${GPID[$name]}") ;;
    gateway) sp=("${GPID[$name]}"); op=("${CPID[$name]}") ;;
    both) sp=("${CPID[$name]}" "${GPID[$name]}"); op=() ;;
  esac
  local pf="" perfpid="" enters
  if [ "$ENTERS" = 1 ]; then  # io_uring_enter calls of the side under test, counted by the kernel
    pf=$GUARD_DIR/enters.$name
    perf stat -x, -e syscalls:sys_enter_io_uring_enter -p "$(IFS=,; echo "${sp[*]}")" -o "$pf" &
    perfpid=$!
  fi
  s0=$(ticks "${sp[@]}"); o0=$(ticks "${op[@]}"); w0=$(wticks "${sp[@]}"); th0=$(throttle "$name")
  res=$(wrk_cmd "${PORT[$name]}" "$close" "$DUR" | grep '^RESULT' || true)
  s1=$(ticks "${sp[@]}"); o1=$(ticks "${op[@]}"); w1=$(wticks "${sp[@]}"); th1=$(throttle "$name")
  if [ -n "$perfpid" ]; then
    kill -INT "$perfpid" 2>/dev/null; wait "$perfpid" 2>/dev/null || true
    enters=$(awk -F, '/io_uring_enter/ {print $1}' "$pf")
    printf '%s\tclose=%s\tio_uring_enter=%s\t%s\n' "$name" "$close" "${enters:-?}" "$res" >>"$OUT/enters.tsv"
  fi
  [ -n "$res" ] || { echo "no wrk result"; return 0; }
  awk -v res="$res" -v s=$((s1 - s0)) -v o=$((o1 - o0)) -v th0="$th0" -v th1="$th1" -v w0="$w0" -v w1="$w1" 'BEGIN {
    n = split(res, kv, " "); for (i = 2; i <= n; i++) { split(kv[i], x, "="); v[x[1]] = x[2] }
    split(th0, a, " "); split(th1, b, " ")
    k = split(w0, c, " "); split(w1, d, " "); ws = ""; for (i = 1; i <= k; i++) ws = ws " " (d[i] - c[i])
    printf "%d %d %d %d %d %d %d %d %d%s\n", v["requests"], v["duration_us"], v["p50_us"], v["p99_us"],
      v["err_connect"] + v["err_read"] + v["err_write"] + v["err_status"] + v["err_timeout"], s, o, b[1] - a[1], b[2] - a[2], ws }'
}

# Warm every chain (pool, origin connections) before measuring.
for name in "${CHAINS[@]}"; do wrk_cmd "${PORT[$name]}" 0 2 >/dev/null; done

raw=$OUT/raw.tsv
printf 'side\tworkers\tworkload\trep\trps\tp50_ms\tp99_ms\terrors\tside_cpu_us_per_req\tother_side_cpu_us_per_req\treq_per_side_cpu_s\tthrottled_period_pct\tcap_use_pct\tbusiest_worker_share\tworker_ticks\tforeign_cpu_pct\ttries\n' >"$raw"
# (not in a pipeline: the guard's counters live in this shell)
for rep in $(seq 1 "$REPS"); do
  for wl in $WORKLOADS; do
    case $wl in ka) close=0 ;; close) close=1 ;; *) echo "scaling.sh: unknown workload $wl" >&2; exit 2 ;; esac
    for name in "${CHAINS[@]}"; do
      guard_run run "$name" "$close"
      [ "$G_OUT" != "no wrk result" ] && [ -n "$G_OUT" ] || { echo "scaling.sh: $name $wl: wrk gave no result" >&2; exit 1; }
      read -r req dus p50 p99 errs s o periods thr wt <<<"$G_OUT"
      awk -v side="${name%-w*}" -v w="${name##*-w}" -v wl="$wl" -v rep="$rep" -v req="$req" -v dus="$dus" -v p50="$p50" \
        -v p99="$p99" -v errs="$errs" -v s="$s" -v o="$o" -v per="$periods" -v thr="$thr" -v wt="$wt" -v hz="$HZ" \
        -v f="$G_FPCT" -v tries="$G_TRIES" -v cap="$CAP" 'BEGIN {
        n = req > 0 ? req : 1; k = split(wt, x, " "); tot = 0; mx = 0
        for (i = 1; i <= k; i++) { tot += x[i]; if (x[i] > mx) mx = x[i] }
        gsub(/ /, ",", wt)
        use = (cap > 0 && k > 0) ? 100 * tot / (k * cap * dus / 1e6 * hz) : 0
        printf "%s\t%d\t%s\t%d\t%.0f\t%.3f\t%.3f\t%d\t%.1f\t%.1f\t%.0f\t%.0f\t%.0f\t%.2f\t%s\t%s\t%d\n", side, w, wl, rep,
          req / (dus / 1e6), p50 / 1000, p99 / 1000, errs, s * 1e6 / hz / n, o * 1e6 / hz / n, (s > 0 ? n * hz / s : 0),
          (per > 0 ? 100 * thr / per : 0), use, (tot > 0 ? mx / tot : 0), wt, f, tries }' | tee -a "$raw"
    done
  done
done
echo "loadavg at end: $(cat /proc/loadavg)" >>"$OUT/env.txt"
guard_totals >>"$OUT/env.txt"
python3 - "$raw" "$FOREIGN_MAX" "$CAP" "$PIN_SIDE" "$PIN_REST" <<'PY' | tee "$OUT/summary.md"
import collections, statistics as st, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
head, rows = rows[0], rows[1:]
fmax, cap, pin, rest = float(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
c = {k: i for i, k in enumerate(head)}
cell = collections.defaultdict(list)
for r in rows:
    cell[r[c["side"]], r[c["workload"]], int(r[c["workers"]])].append(r)
notes = []
def med(rs, k):
    return st.median(float(r[c[k]]) for r in rs)
wlname = {"ka": "1 KiB GET keep-alive", "close": "1 KiB GET, new connection per request"}
if pin:
    print(f"Side under test pinned: 1 worker on cpu {pin.split(',')[0]}, 2 workers on cpus {pin}; wrk, nginx and the other side on cpus {rest}."
          + (f" Each worker also capped at {cap:g} of a core." if cap > 0 else ""))
elif cap > 0:
    print(f"Side under test: each worker thread capped at {cap:g} of a core; no pinning")
else:
    print("No cap, no pinning (CAP=0): request rates are what the shared machine gives; read the efficiency columns")
print()
BOUND = 85  # cap use % from which a capped run counts as bound by the side under test
print(f"| side | workload | req/s 1 worker | req/s 2 workers | **ratio** | side CPU µs/req 1 → 2 | req per side CPU-s 1 → 2 | **efficiency ratio** | 2 × efficiency | busiest worker share (2 w.) | cap use % 1 / 2 | runs used (of) 1 / 2 | max foreign CPU % |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for side in dict.fromkeys(r[c["side"]] for r in rows):
    for wl in dict.fromkeys(r[c["workload"]] for r in rows):
        a, b = cell.get((side, wl, 1)), cell.get((side, wl, 2))
        if not a or not b:
            continue
        na, nb = len(a), len(b)
        if cap > 0:
            # Only runs in which the capped workers were the bottleneck measure their scaling (as the guard
            # leaves contended runs out); if either worker count has none, all runs are used and flagged.
            ba = [r for r in a if float(r[c["cap_use_pct"]]) >= BOUND]
            bb = [r for r in b if float(r[c["cap_use_pct"]]) >= BOUND]
            if ba and bb:
                a, b = ba, bb
            else:
                notes.append(f"{side} / {wl}: no run with cap use ≥ {BOUND} % for 1 or for 2 workers: all runs are used, "
                             "but the side under test was not the only bottleneck (the rest of the chain or other load was), "
                             "so the req/s ratio does not measure the workers' scaling.")
        r1, r2 = med(a, "rps"), med(b, "rps")
        e1, e2 = med(a, "req_per_side_cpu_s"), med(b, "req_per_side_cpu_s")
        f = [float(r[c["foreign_cpu_pct"]]) for r in a + b]
        dirty = sum(x >= fmax for x in f)
        print(f"| {side} | {wlname.get(wl, wl)} | {r1:.0f} | {r2:.0f} | **{r2 / r1:.2f}×** | "
              f"{med(a, 'side_cpu_us_per_req'):.1f} → {med(b, 'side_cpu_us_per_req'):.1f} | {e1:.0f} → {e2:.0f} | **{e2 / e1:.2f}** | {2 * e2 / e1:.2f}× | "
              f"{med(b, 'busiest_worker_share'):.2f} | {med(a, 'cap_use_pct'):.0f} / {med(b, 'cap_use_pct'):.0f} | "
              f"{len(a)} ({na}) / {len(b)} ({nb}) | {max(f):.1f}{' (%d ≥ %g)' % (dirty, fmax) if dirty else ''} |")
for n in notes:
    print()
    print("Note: " + n)
PY
{
  echo
  echo "ratio = median req/s with 2 workers / with 1 (each worker capped at CAP of a core, the rest of the chain uncapped);"
  echo "efficiency = requests per CPU-second of the side under test (all its threads); 2 × efficiency ratio = the"
  echo "speedup two dedicated cores would give if nothing else limits. Busiest worker share: even = 1 / workers (0.50; 0.25 for both sides together, whose 4 workers are counted as one set)."
  echo "Cap use = the workers' CPU / (workers x CAP x run time): about 100 % when the capped side is the bottleneck;"
  echo "with caps, medians use only the runs with cap use >= 85 % (runs used), when there are such runs for both counts."
  echo
  echo "command: \`$CMD\`"
  grep -E '^(commit|msc|pinning|contention guard)' "$OUT/env.txt"
} | tee -a "$OUT/summary.md"
