#!/usr/bin/env bash
# latency.sh - added latency at low load, open loop: p50/p99 of a 1 KiB GET through each
# chain minus direct, at fixed request rates (10, 100, 1000/s; not saturation), all
# chains in one run, interleaved. See perf/latency.md.
#
# Chains (proxies on PROXYCPU; oha and the nginx origin on LOADCPU, as bench/compare.sh):
#   direct   oha -> nginx
#   msc      oha -> msc run (http slot) -> mTLS -> msc gateway -> nginx
#   haproxy  oha -> haproxy (http mode, pooled mTLS) -> haproxy gateway -> nginx
#            (bench/compare/haproxy-*.cfg.in, rendered as compare.sh does)
#   nginx    oha -> nginx proxy (upstream keepalive, proxy_ssl_certificate) -> nginx mTLS -> nginx
# Every chain gets the same bytes: oha -x PROXY http://ORIGIN/1k (absolute-form; direct
# sends it to nginx itself, which accepts absolute-form).
#
# Open loop: `oha -q RATE --latency-correction` schedules request i at start + i/RATE
# whatever the answers do, over CONNS keep-alive connections; a request's latency counts
# from its scheduled time, so a stall shows up in every request it delays (no coordinated
# omission). Per-request latencies (oha --output-format csv) are pooled per chain.
#
# MODES: idle = the machine as it is (cores go idle between requests: each request wakes
# them); busy = a SCHED_IDLE spinner on each of LOADCPU and PROXYCPU keeps the cores out
# of idle (any real task preempts it at once), which shows what the idle-core wake-ups cost.
#
# Usage (as root):  bash bench/latency.sh
#   quick check:    DUR=4 ROUNDS=1 RATES="100" MODES=idle BUILD=0 bash bench/latency.sh
#   knobs:          RATES="10 100 1000" DUR=16 WARMUP=1 ROUNDS=2 CONNS=4 MODES="idle busy"
#                   SECTIONS="direct msc haproxy nginx" MSC_WORKERS=1 OPENLOOP_CHECK=1 PORT_BASE=21000
#                   LOADCPU=0 PROXYCPU=1 FOREIGN_MAX=5 QUIET_WAIT=30 GUARD_BUDGET=300 GUARD=1
#                   HA_BUFSIZE=65536 NGX_BUF=64k (peer tuning, where compare's templates use it)
#                   INSTALL=1 BUILD=1 BUILD_OHA=1 OHA=/opt/oha/bin/oha MSC=target/release/msc
#                   W=/tmp/msc-latency OUT=perf/runs/<UTC date>/latency
set -euo pipefail
NAME=latency
KNOBS="RATES DUR WARMUP ROUNDS CONNS MODES SECTIONS MSC_WORKERS OPENLOOP_CHECK PORT_BASE LOADCPU PROXYCPU FOREIGN_MAX QUIET_WAIT
GUARD_BUDGET GUARD INSTALL BUILD BUILD_OHA OHA MSC W OUT HA_BUFSIZE NGX_BUF"
RATES=${RATES:-"10 100 1000"}
DUR=${DUR:-16}
WARMUP=${WARMUP:-1}
ROUNDS=${ROUNDS:-2}
CONNS=${CONNS:-4}
MODES=${MODES:-"idle busy"}
SECTIONS=${SECTIONS:-"direct msc haproxy nginx"}
PORT_BASE=${PORT_BASE:-21000}
BUILD_OHA=${BUILD_OHA:-1}
# shellcheck source=bench/measure/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/measure/lib.sh"
knob_cmdline bench/latency.sh $KNOBS

[ "$(id -u)" = 0 ] || die "run as root (apt-get, taskset, chrt)"
for m in $MODES; do case $m in idle|busy) ;; *) die "unknown mode $m (idle, busy)" ;; esac; done
for s in $SECTIONS; do case $s in direct|msc|haproxy|nginx) ;; *) die "unknown section $s" ;; esac; done
[[ " $SECTIONS " == *" direct "* ]] || die "SECTIONS must include direct (the baseline the others are compared with)"
T_START=$SECONDS
mkdir -p "$W/logs"
install_pkgs nginx:nginx-light haproxy:haproxy curl:curl python3:python3 taskset:util-linux chrt:util-linux
build_msc
if [ ! -x "$OHA" ]; then
  [ "$BUILD_OHA" = 1 ] || die "oha not found at $OHA (BUILD_OHA=1 builds it)"
  log "building oha 1.16.0 into /opt/oha (6-8 min)"
  timeout 1500 cargo install --locked oha --version 1.16.0 --root /opt/oha >"$W/logs/oha-build.log" 2>&1 \
    || die "oha build failed (see $W/logs/oha-build.log)"
  OHA=/opt/oha/bin/oha
fi
"$OHA" --help | grep -q -- '--latency-correction' || die "$OHA has no --latency-correction (oha >= 1.0 needed)"
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
check_ports $P_NGX $P_NGX_TLS $P_MSG $P_MSC_HTTP $P_MSC_HTTPS $P_HAC_HTTP $P_HAC_TCP $P_HAC_TCP_TLS \
  $P_HAS_HTTP $P_HAS_TCP $P_HAS_TCP_TLS $P_NXC_HTTP $P_NXS_HTTP $P_NXC_TCP $P_NXC_TCP_TLS $P_NXS_TCP $P_NXS_TCP_TLS
prepare
mkdir -p "$OUT/samples"
rm -f "$OUT/samples/"*.gz
printf 'mode\trate\tround\tchain\tscheduled\tsamples\tnon200\tp50_us\tp99_us\tmax_us\tsend_lag_p99_us\tproxy_cpu_us_per_req\tproxy_wakeups_per_req\tforeign_cpu_pct\n' >"$RAW"
write_env "oha: $("$OHA" --version 2>/dev/null)\nknobs: RATES=$RATES DUR=${DUR}s WARMUP=${WARMUP}s ROUNDS=$ROUNDS CONNS=$CONNS MODES=$MODES SECTIONS=$SECTIONS msc workers=${MSC_WORKERS:-1}\ncpuidle: driver $(cat /sys/devices/system/cpu/cpuidle/current_driver 2>/dev/null || echo none) governor $(cat /sys/devices/system/cpu/cpuidle/current_governor_ro 2>/dev/null || cat /sys/devices/system/cpu/cpuidle/current_governor 2>/dev/null || echo none)\n"
cat "$OUT/env.txt" >&2

start_origin
declare -A PROXY PIDS
for s in $SECTIONS; do
  case $s in
    direct) PROXY[direct]=$ORIGIN; PIDS[direct]="" ;;
    msc) start_msc; PROXY[msc]=127.0.0.1:$P_MSC_HTTP; PIDS[msc]=$MSC_PIDS ;;
    haproxy) start_haproxy_chain; PROXY[haproxy]=127.0.0.1:$P_HAC_HTTP; PIDS[haproxy]="$HAC_PID $HAS_PID" ;;
    nginx) start_nginxproxy; PROXY[nginx]=127.0.0.1:$P_NXC_HTTP; PIDS[nginx]="$NXC_PID $NXS_PID" ;;
  esac
done
log "chains up: $SECTIONS ($((SECONDS - T_START)) s)"
{
  [[ " $SECTIONS " != *" haproxy "* ]] || echo "haproxy: compare's templates; HA_BUFSIZE=$HA_BUFSIZE (where the template uses it), maxconn $HA_MAXCONN"
  [[ " $SECTIONS " != *" nginx "* ]] || echo "nginx proxy chain templates: bench/compare/nginx-client.conf.in bench/compare/nginx-gw.conf.in (NGX_BUF=$NGX_BUF where used)"
} >>"$OUT/env.txt"

# Open-loop check: direct at 100 requests/s for 4 s with the nginx worker stopped
# (SIGSTOP) for 0.5 s from t = 1.5 s. Open loop with latency correction, the ~50
# requests scheduled during the stall all wait for it (a ramp up to 500 ms) and the
# count stays at 400; a closed loop would show the stall only in its CONNS in-flight ones.
openloop_check() {
  local wk csv="$W/openloop.csv" res op
  wk=$(pgrep -P "$NGINX_PID" | head -1)
  [ -n "$wk" ] || die "open-loop check: no nginx worker found"
  taskset -c "$LOADCPU" "$OHA" -q 100 --latency-correction -z 4s -c "$CONNS" --worker-threads 1 --no-tui \
    --output-format csv -x "http://$ORIGIN" "http://$ORIGIN/1k" >"$csv" 2>>"$W/logs/oha.err" &
  op=$!
  sleep 1.5; kill -STOP "$wk"; sleep 0.5; kill -CONT "$wk"
  wait "$op" || true
  res=$(python3 - "$csv" <<'PY'
import sys
d = [float(l.split(",")[4]) for l in open(sys.argv[1]) if l[:1].isdigit()]
print(len(d), sum(1 for v in d if v > 0.1), f"{max(d) * 1000:.0f}" if d else 0)
PY
)
  read -r n slow mx <<<"$res"
  echo "open-loop check (100/s for 4 s, origin stopped 0.5 s): $n answers, $slow over 100 ms, max $mx ms (open loop: ~400, ~40, ~500)" >>"$OUT/env.txt"
  log "open-loop check: $n answers, $slow over 100 ms, max $mx ms"
  [ "$n" -ge 380 ] && [ "$slow" -ge 25 ] || die "oha did not behave as an open-loop generator (expected ~400 answers, ~40 over 100 ms)"
}
[ "${OPENLOOP_CHECK:-1}" = 1 ] && openloop_check

SPIN=()
spin_start() {  # a SCHED_IDLE busy loop per core (bounded by timeout)
  local cpu
  for cpu in $LOADCPU $PROXYCPU; do
    timeout 7200 chrt -i 0 taskset -c "$cpu" bash -c 'while :; do :; done' &
    SPIN+=($!); STARTED+=($!)
  done
  log "busy mode: SCHED_IDLE spinners ${SPIN[*]} on cpu$LOADCPU and cpu$PROXYCPU"
}
spin_stop() { local p; for p in "${SPIN[@]:-}"; do [ -n "$p" ] && stop_pid "$p"; done; SPIN=(); }

run_one() {  # run_one MODE RATE ROUND CHAIN
  local mode=$1 rate=$2 round=$3 ch=$4 csv="$W/run.csv" res per
  local -a pids
  read -ra pids <<<"${PIDS[$ch]}"
  local st0="0 0" st1="0 0"
  guard_begin
  [ ${#pids[@]} -eq 0 ] || st0=$(python3 "$M/taskstat.py" "${pids[@]}")
  timeout $((DUR + 30)) taskset -c "$LOADCPU" "$OHA" -q "$rate" --latency-correction -z "${DUR}s" -c "$CONNS" \
    --worker-threads 1 --no-tui --output-format csv -x "http://${PROXY[$ch]}" "http://$ORIGIN/1k" >"$csv" \
    2>>"$W/logs/oha.err" || log "oha exited with $? ($ch, rate $rate)"
  [ ${#pids[@]} -eq 0 ] || st1=$(python3 "$M/taskstat.py" "${pids[@]}")
  guard_end
  res=$(python3 "$M/latency_samples.py" "$csv" "$rate" "$DUR" "$WARMUP" "$OUT/samples/$mode-$rate-$round-$ch.gz")
  # proxy CPU and wake-ups (voluntary context switches) per request, every thread of
  # the chain's processes, over all requests of the run (warm-up included)
  per=$(awk -v a="$st0" -v b="$st1" -v n="$(grep -c '^[0-9]' "$csv" || true)" -v has=${#pids[@]} 'BEGIN{
    if (!has || n < 1) { print "-\t-"; exit }
    split(a, x, " "); split(b, y, " "); printf "%.1f\t%.2f\n", (y[1]-x[1])/1000/n, (y[2]-x[2])/n }')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$rate" "$round" "$ch" "$res" "$per" "${FOREIGN%% *}" >>"$RAW"
  log "$mode rate=$rate round=$round $ch: $res $per foreign=$FOREIGN"
  [ ${#pids[@]} -eq 0 ] || alive "${pids[@]}" || die "$ch: a proxy process died (logs in $W/logs)"
}

set -- $SECTIONS; NCH=$#
for mode in $MODES; do
  [ "$mode" = busy ] && spin_start
  for rate in $RATES; do
    for round in $(seq 1 "$ROUNDS"); do
      # rotate the order every round so that no chain always runs first
      read -ra order <<<"$SECTIONS"
      k=$(( (round - 1) % NCH ))
      for i in $(seq 0 $((NCH - 1))); do run_one "$mode" "$rate" "$round" "${order[$(( (i + k) % NCH ))]}"; done
    done
  done
  [ "$mode" = busy ] && spin_stop
done
echo "loadavg at end: $(cat /proc/loadavg)" >>"$OUT/env.txt"
echo "duration: $((SECONDS - T_START)) s (guard waits: ${GUARD_SPENT} s)" >>"$OUT/env.txt"
on_exit; trap - EXIT
python3 "$M/latency_summary.py" "$RAW" "$OUT/samples" "$OUT/env.txt" --foreign-max "$FOREIGN_MAX" >"$OUT/summary.md"
cat "$OUT/summary.md"
log "done in $((SECONDS - T_START)) s; results in $OUT"
