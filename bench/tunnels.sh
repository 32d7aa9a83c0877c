#!/usr/bin/env bash
# tunnels.sh - N (10,000) concurrent CONNECT tunnels through the msc client -> mTLS ->
# msc gateway -> nginx, all active at once, every byte verified. See perf/tunnels.md.
#
# The driver (bench/measure/tunnels.py, Python asyncio, one process on LOADCPU) opens N
# tunnels through the client's https slot (the CONNECT port), then for DUR seconds every
# tunnel sends GET requests back to back (keep-alive inside the tunnel) for one of FILES
# random files of SIZE bytes on nginx and compares each body byte for byte. Tunnel i's j-th
# request asks for file (7 i + j) mod FILES, so crossed answers count as mismatches.
#
# Open files: a CONNECT tunnel costs the client two descriptors (browser side, gateway
# side) and the gateway two (client side, origin side). When N tunnels do not fit one
# client/gateway pair under the hard open-file limit (ulimit -Hn; 20000 on the project
# machine, not raisable there), INSTANCES pairs are started (all on PROXYCPU) and the
# tunnels spread evenly over them; summary.md says so. Gateway limits raised so that
# N/INSTANCES tunnels fit: limits.max_connections and limits.max_tunnels_per_identity
# (per worker) = tunnels per instance + 1000. `msc pki init`'s gateway.toml already allows
# CONNECT to 127.0.0.1, any port (egress.allow, egress.connect_ports); checked below.
#
# Usage (as root):  bash bench/tunnels.sh
#   quick check:    N=1000 DUR=5 BUILD=0 bash bench/tunnels.sh
#   knobs:          N=10000 DUR=30 FILES=64 SIZE=1024 OPEN_CONCURRENCY=200 OPEN_DEADLINE=180
#                   INSTANCES=auto MSC_WORKERS=1 PORT_BASE=23000 LOADCPU=0 PROXYCPU=1
#                   FOREIGN_MAX=5 QUIET_WAIT=30 GUARD_BUDGET=300 GUARD=1
#                   INSTALL=1 BUILD=1 MSC=target/release/msc W=/tmp/msc-tunnels
#                   OUT=perf/runs/<UTC date>/tunnels
set -euo pipefail
NAME=tunnels
KNOBS="N DUR FILES SIZE OPEN_CONCURRENCY OPEN_DEADLINE INSTANCES MSC_WORKERS PORT_BASE LOADCPU PROXYCPU
FOREIGN_MAX QUIET_WAIT GUARD_BUDGET GUARD INSTALL BUILD MSC W OUT"
N=${N:-10000}
DUR=${DUR:-30}
FILES=${FILES:-64}
SIZE=${SIZE:-1024}
OPEN_CONCURRENCY=${OPEN_CONCURRENCY:-200}
OPEN_DEADLINE=${OPEN_DEADLINE:-180}
INSTANCES=${INSTANCES:-auto}
PORT_BASE=${PORT_BASE:-23000}
# shellcheck source=bench/measure/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/measure/lib.sh"
knob_cmdline bench/tunnels.sh $KNOBS

[ "$(id -u)" = 0 ] || die "run as root (apt-get, taskset, ulimit)"
T_START=$SECONDS
mkdir -p "$W/logs"
install_pkgs nginx:nginx-light curl:curl python3:python3 taskset:util-linux
build_msc
ulimit -n "$(ulimit -Hn)"
HARD=$(ulimit -Hn)
[ "$HARD" = unlimited ] && HARD=1048576
FIT=$(( (HARD - 300) / 2 ))          # tunnels one client (or gateway) process can hold
[ "$INSTANCES" = auto ] && INSTANCES=$(( (N + FIT - 1) / FIT ))
PER=$(( (N + INSTANCES - 1) / INSTANCES ))
[ "$PER" -le "$FIT" ] || die "INSTANCES=$INSTANCES: $PER tunnels per instance need $((2 * PER + 300)) open files, the hard limit is $HARD"
[ "$N" -le $((HARD - 200)) ] || die "the driver needs N + 200 open files ($((N + 200))), the hard limit is $HARD"
[ "$INSTANCES" -le 9 ] || die "at most 9 instances"
ports=("$P_NGX")
for k in $(seq 0 $((INSTANCES - 1))); do ports+=($((P_MSG + 10 * k)) $((P_MSC_HTTP + 10 * k)) $((P_MSC_HTTPS + 10 * k))); done
check_ports "${ports[@]}"
prepare
mkdir -p "$W/www/t"
rm -f "$W/www/t/"*
for f in $(seq -f 'f%03g' 0 $((FILES - 1))); do head -c "$SIZE" /dev/urandom >"$W/www/t/$f"; done
chmod 755 "$W/www/t"; chmod 644 "$W/www/t/"*
printf 'metric\tvalue\tnote\n' >"$RAW"
write_env "knobs: N=$N DUR=${DUR}s FILES=$FILES SIZE=$SIZE OPEN_CONCURRENCY=$OPEN_CONCURRENCY OPEN_DEADLINE=${OPEN_DEADLINE}s msc workers=${MSC_WORKERS:-1}\ninstances: $INSTANCES client/gateway pair(s), $PER tunnels each (hard open-file limit $HARD: one process holds at most $FIT tunnels)\ngateway limits: max_connections = max_tunnels_per_identity = $((PER + 1000)) per worker\n"
cat "$OUT/env.txt" >&2

start_origin
grep -q '^connect_ports = \["\*"\]' "$C/gateway.toml" && grep -q '"127.0.0.0/8"' "$C/gateway.toml" \
  || die "msc pki init's gateway.toml no longer allows CONNECT to 127.0.0.1 (egress.allow / egress.connect_ports)"
CPIDS=""; GPIDS=""; PORTLIST=""
for k in $(seq 0 $((INSTANCES - 1))); do
  msc_configs "-$k" $((P_MSG + 10 * k)) $((P_MSC_HTTP + 10 * k)) $((P_MSC_HTTPS + 10 * k)) "" \
    "[limits]\nmax_connections = $((PER + 1000))\nmax_tunnels_per_identity = $((PER + 1000))\n"
  start_msc_gateway "-$k"; GPIDS+="$GW_PID "
  if grep -qi 'lower' "$W/logs/msc-gateway-$k.err"; then log "gateway $k: $(grep -i lower "$W/logs/msc-gateway-$k.err" | head -1)"; fi
done
for k in $(seq 0 $((INSTANCES - 1))); do
  start_msc_client "-$k"; CPIDS+="$CL_PID "
  PORTLIST+="${PORTLIST:+,}$((P_MSC_HTTPS + 10 * k))"
  check_200 "msc-connect-$k" -p -x "http://127.0.0.1:$((P_MSC_HTTPS + 10 * k))" "http://$ORIGIN/1k"
done
sleep 2   # let the pools settle (background refills after the checks) before the idle RSS sample
log "chains up: $INSTANCES pair(s); client pids $CPIDS; gateway pids $GPIDS"

guard_begin
timeout $((OPEN_DEADLINE + DUR + 180)) taskset -c "$LOADCPU" python3 "$M/tunnels.py" --ports "$PORTLIST" \
  --target "$ORIGIN" --files "$W/www/t" --n "$N" --dur "$DUR" --open-concurrency "$OPEN_CONCURRENCY" \
  --open-deadline "$OPEN_DEADLINE" --client-pids "$CPIDS" --gateway-pids "$GPIDS" --out "$W/result.json" \
  2> >(tee -a "$W/logs/driver.err" >&2) || log "driver exited with $?"
guard_end
[ -s "$W/result.json" ] || die "the driver wrote no result (see $W/logs/driver.err)"
read -ra cp <<<"$CPIDS"; read -ra gp <<<"$GPIDS"
alive "${cp[@]}" "${gp[@]}" || log "WARNING: an msc process died during the run"
cp "$W/result.json" "$OUT/result.json"
echo "foreign CPU during the run: $FOREIGN" >>"$OUT/env.txt"
echo "loadavg at end: $(cat /proc/loadavg)" >>"$OUT/env.txt"
echo "duration: $((SECONDS - T_START)) s (guard waits: ${GUARD_SPENT} s)" >>"$OUT/env.txt"
on_exit; trap - EXIT
python3 "$M/tunnels_summary.py" "$W/result.json" "$OUT/env.txt" "$RAW" "${FOREIGN%% *}" --foreign-max "$FOREIGN_MAX" >"$OUT/summary.md"
cat "$OUT/summary.md"
log "done in $((SECONDS - T_START)) s; results in $OUT"
