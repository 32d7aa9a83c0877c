#!/usr/bin/env bash
# coldstart.sh - cold start of the msc client. See perf/coldstart.md.
#  (a) `msc run` start to the first proxied response, the gateway already running:
#      REPS fresh client processes; per start the time to the `msc client ready` line
#      and to the first good answer (absolute-form GET of the 1 KiB file, polled on a new
#      connection every RETRY_MS ms, bench/measure/coldstart.py, monotonic clock). The same
#      for a HAProxy client (compare.sh's template, pooled mTLS to a running HAProxy
#      gateway) started the same way, interleaved, as a baseline.
#  (b) the first request after the pool went cold (no request for longer than
#      pool.warm_for and pool.idle_lifetime, set short here) vs a warm request GAP s
#      later, POOL_REPS times, each on a new browser connection.
# Pinning as compare.sh: proxies on PROXYCPU, driver and nginx origin on LOADCPU.
#
# Usage (as root):  bash bench/coldstart.sh
#   quick check:    REPS=3 POOL_REPS=2 BUILD=0 bash bench/coldstart.sh
#   knobs:          REPS=10 POOL_REPS=10 RETRY_MS=1 WARM_FOR=2s IDLE_LIFETIME=3s POOL_IDLE= GAP=1
#                   PARTS="start pool" PEERS=haproxy MSC_WORKERS=1 PORT_BASE=24000
#                   LOADCPU=0 PROXYCPU=1 FOREIGN_MAX=5 QUIET_WAIT=30 GUARD_BUDGET=300 GUARD=1
#                   INSTALL=1 BUILD=1 MSC=target/release/msc W=/tmp/msc-coldstart
#                   OUT=perf/runs/<UTC date>/coldstart
set -euo pipefail
NAME=coldstart
KNOBS="REPS POOL_REPS RETRY_MS WARM_FOR IDLE_LIFETIME POOL_IDLE GAP PARTS PEERS MSC_WORKERS PORT_BASE LOADCPU PROXYCPU
FOREIGN_MAX QUIET_WAIT GUARD_BUDGET GUARD INSTALL BUILD MSC W OUT HA_BUFSIZE"
REPS=${REPS:-10}
POOL_REPS=${POOL_REPS:-10}
RETRY_MS=${RETRY_MS:-1}
WARM_FOR=${WARM_FOR:-2s}
IDLE_LIFETIME=${IDLE_LIFETIME:-3s}
GAP=${GAP:-1}
PARTS=${PARTS:-"start pool"}
PEERS=${PEERS:-haproxy}
PORT_BASE=${PORT_BASE:-24000}
# shellcheck source=bench/measure/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/measure/lib.sh"
knob_cmdline bench/coldstart.sh $KNOBS

[ "$(id -u)" = 0 ] || die "run as root (apt-get, taskset)"
secs() { case $1 in *ms) awk -v v="${1%ms}" 'BEGIN{print v/1000}' ;; *s) echo "${1%s}" ;; *m) echo $(( ${1%m} * 60 )) ;; *) die "duration $1: use ms, s or m" ;; esac; }
# An idle tunnel is closed by the reaper, which wakes every idle_lifetime: at most
# 2 x idle_lifetime after its last use. Wait a second more, and longer than warm_for.
IDLE=$(awk -v w="$(secs "$WARM_FOR")" -v l="$(secs "$IDLE_LIFETIME")" 'BEGIN{v=2*l+1; if (w+1>v) v=w+1; print v}')
T_START=$SECONDS
mkdir -p "$W/logs"
install_pkgs nginx:nginx-light haproxy:haproxy curl:curl python3:python3 taskset:util-linux ss:iproute2
build_msc
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
check_ports $P_NGX $P_NGX_TLS $P_MSG $P_MSC_HTTP $P_MSC_HTTPS $P_HAC_HTTP $P_HAC_TCP $P_HAC_TCP_TLS \
  $P_HAS_HTTP $P_HAS_TCP $P_HAS_TCP_TLS
prepare
printf 'part\tchain\trep\tmetric\tvalue\tforeign_cpu_pct\tnote\n' >"$RAW"
write_env "knobs: REPS=$REPS POOL_REPS=$POOL_REPS RETRY_MS=$RETRY_MS WARM_FOR=$WARM_FOR IDLE_LIFETIME=$IDLE_LIFETIME POOL_IDLE=${POOL_IDLE:-default} (idle wait ${IDLE} s) GAP=${GAP}s PARTS=$PARTS PEERS=$PEERS msc workers=${MSC_WORKERS:-1}\npage cache: warm (the binaries were just run; this is a process start, not a boot)\n"
cat "$OUT/env.txt" >&2

start_origin
msc_configs "" "$P_MSG" "$P_MSC_HTTP" "$P_MSC_HTTPS"
# the client for part (b): short pool timers
cp "$W/conf/msc-client.toml" "$W/conf/msc-client-cold.toml"
printf '[pool]\nwarm_for = "%s"\nidle_lifetime = "%s"\n' "$WARM_FOR" "$IDLE_LIFETIME" >>"$W/conf/msc-client-cold.toml"
[ -z "${POOL_IDLE:-}" ] || printf 'idle = %s\n' "$POOL_IDLE" >>"$W/conf/msc-client-cold.toml"
"$MSC" check-config "$W/conf/msc-client-cold.toml" >/dev/null || die "msc-client-cold.toml invalid"
start_msc_gateway ""
MSC_GW=$GW_PID
if [[ " $PEERS " == *" haproxy "* ]]; then
  haproxy_configs        # bench/chains.sh; the client is started per rep by the driver
  start_haproxy_gateway
fi
DRV=(taskset -c "$LOADCPU" python3 "$M/coldstart.py")
COMMON=(--target "$ORIGIN" --expect "$W/www/1k")

emit_rows() {  # emit_rows PART CHAIN  (driver TSV on stdin -> raw.tsv)
  local part=$1 ch=$2
  grep -v '^label' | while IFS=$'\t' read -r _ rep a b c d e f; do
    if [ "$part" = start ]; then
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' start "$ch" "$R" ready_ms "$a" "${FOREIGN%% *}" - \
        start "$ch" "$R" first_ms "$b" "${FOREIGN%% *}" "refused=$d bad=$e" \
        start "$ch" "$R" first_req_ms "$c" "${FOREIGN%% *}" - >>"$RAW"
      log "start $ch #$R: ready ${a} ms, first answer ${b} ms (that request ${c} ms; refused $d, bad $e) foreign=$FOREIGN"
    else
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' pool "$ch" "$rep" "${a}_ms" "$b" "${FOREIGN%% *}" "tunnels_before=$c ok=$d handshakes/resumed=$e" >>"$RAW"
      log "pool $a #$rep: $b ms (tunnels in the pool before: $c, ok=$d, TLS handshakes/resumed until the next request: $e)"
    fi
  done
}

if [[ " $PARTS " == *" start "* ]]; then
  log "== (a) start to first proxied response, $REPS fresh processes per chain (interleaved)"
  for R in $(seq 1 "$REPS"); do
    guard_begin
    "${DRV[@]}" start --label msc --reps 1 --port "$P_MSC_HTTP" "${COMMON[@]}" --retry-ms "$RETRY_MS" \
      --ready-regex '^msc client ready' --stderr "$W/logs/msc-client-start.err" -- \
      taskset -c "$PROXYCPU" "$MSC" run --config "$W/conf/msc-client.toml" >"$W/start.tsv" || die "driver failed (msc)"
    guard_end
    emit_rows start msc <"$W/start.tsv"
    if [[ " $PEERS " == *" haproxy "* ]]; then
      guard_begin
      "${DRV[@]}" start --label haproxy --reps 1 --port "$P_HAC_HTTP" "${COMMON[@]}" --retry-ms "$RETRY_MS" \
        --stderr "$W/logs/haproxy-client-start.err" -- \
        taskset -c "$PROXYCPU" haproxy -db -f "$W/conf/haproxy-client.cfg" >"$W/start.tsv" || die "driver failed (haproxy)"
      guard_end
      emit_rows start haproxy <"$W/start.tsv"
    fi
    alive "$MSC_GW" || die "msc gateway died"
  done
fi

if [[ " $PARTS " == *" pool "* ]]; then
  log "== (b) first request after the pool went cold (idle ${IDLE} s: warm_for $WARM_FOR, idle_lifetime $IDLE_LIFETIME) vs warm, $POOL_REPS times"
  start_msc_client -cold
  CL=$CL_PID
  check_200 msc-cold-client -x "http://127.0.0.1:$P_MSC_HTTP" "http://$ORIGIN/1k"
  guard_begin
  ctl=$(sed -n 's#.*control \(http://[0-9.:]*\)/proxy.pac.*#\1#p' "$W/logs/msc-client-cold.out")
  [ -n "$ctl" ] || log "no control URL in the client's ready line: handshake counts not recorded"
  "${DRV[@]}" pool --label msc --reps "$POOL_REPS" --port "$P_MSC_HTTP" "${COMMON[@]}" --gw-port "$P_MSG" \
    --idle "$IDLE" --gap "$GAP" ${ctl:+--metrics "$ctl/metrics"} >"$W/pool.tsv" || die "driver failed (pool)"
  guard_end
  emit_rows pool msc <"$W/pool.tsv"
  alive "$CL" "$MSC_GW" || die "an msc process died during the pool part"
fi

echo "loadavg at end: $(cat /proc/loadavg)" >>"$OUT/env.txt"
echo "duration: $((SECONDS - T_START)) s (guard waits: ${GUARD_SPENT} s)" >>"$OUT/env.txt"
on_exit; trap - EXIT
python3 "$M/coldstart_summary.py" "$RAW" "$OUT/env.txt" --foreign-max "$FOREIGN_MAX" >"$OUT/summary.md"
cat "$OUT/summary.md"
log "done in $((SECONDS - T_START)) s; results in $OUT"
