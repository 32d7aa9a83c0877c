#!/usr/bin/env bash
# Recovery after a gateway outage: origin, ONE gateway and the client (default
# selection settings), all on 127.0.0.1. A prober sends a new browser
# connection (GET /echo, Connection: close) every 50 ms. Each round kills the
# gateway with SIGKILL, keeps it down for OUTAGE seconds, restarts it on the
# same port and measures the time from the restart (the moment the new
# gateway process is launched: conservative) until the first request is
# served through it again. Meanwhile every answer is classified: DIRECT
# (fail-open), 503 (fail-closed), 502, or a failed connection.
# Rounds run for fail-open and for fail-closed. Each round starts a fresh
# client (an independent outage); FRESH_CLIENT=0 keeps one client for all
# rounds of a mode, so the gateway is back for only seconds between outages:
# a flapping gateway, whose re-admission needs twice the good probes each time.
#
#   bash bench/recovery.sh                    # ROUNDS=3 OUTAGE=15 LIMIT=60 FRESH_CLIENT=1
#   MSC_BIN=/path/to/old/msc bash bench/recovery.sh   # a baseline build
# Bounded: every wait has a limit (LIMIT seconds for the recovery itself).
# Only 127.0.0.1. Output: $OUT/recovery.txt (per round) and a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
OUTAGE=${OUTAGE:-15}
LIMIT=${LIMIT:-60}
FRESH_CLIENT=${FRESH_CLIENT:-1}
OUT=${OUT:-perf/runs/$(date -u +%Y-%m-%d)}
LABEL=${LABEL:-$(git rev-parse --short HEAD)}
mkdir -p "$OUT"
# shellcheck source=bench/lib.sh
. bench/lib.sh
if [ -n "${MSC_BIN:-}" ]; then
  MSC=$MSC_BIN
  work=$(mktemp -d)
  pids=()
  trap cleanup EXIT
else
  setup
fi

"$MSC" pki init --dir "$work" --gateway-listen 127.0.0.1:0 --http-port 0 --https-port 0 >/dev/null
sed -i 's/^workers = 0/workers = 1/; s/^access = "-"/access = "off"/' "$work/gateway.toml"
start origin origin --listen 127.0.0.1:0 --workers 1
origin=$(sed -n 's/.*listening on //p' "$work/origin.out")
start gw gateway --config "$work/gateway.toml"
gw_pid=${pids[-1]}
gw=$(listening_on gw)
# Restarts listen on the same port.
sed -i "s/^listen = \"127.0.0.1:0\"/listen = \"$gw\"/" "$work/gateway.toml"

cat >"$work/prober.py" <<'PY'
import os, socket, sys, time
proxy_host, proxy_port = sys.argv[1].rsplit(":", 1)
origin, out, stop = sys.argv[2], sys.argv[3], sys.argv[4]
req = f"GET http://{origin}/echo HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n".encode()
with open(out, "w") as f:
    deadline = time.time() + 600
    while not os.path.exists(stop) and time.time() < deadline:
        t0 = time.time()
        try:
            s = socket.create_connection((proxy_host, int(proxy_port)), timeout=10)
            s.settimeout(10)
            s.sendall(req)
            data = b""
            while True:
                b = s.recv(65536)
                if not b:
                    break
                data += b
            s.close()
            status = int(data[9:12])
            via = b"msc-gateway" in data
        except Exception:
            status, via = 0, False
        f.write(f"{t0:.3f} {time.time():.3f} {status} {int(via)}\n")
        f.flush()
        time.sleep(0.05)
PY

summary="$OUT/recovery-$LABEL.txt"
{
  echo "command: ROUNDS=$ROUNDS OUTAGE=$OUTAGE LIMIT=$LIMIT FRESH_CLIENT=$FRESH_CLIENT${MSC_BIN:+ MSC_BIN=$MSC_BIN} bash bench/recovery.sh"
  echo "build: $LABEL ($("$MSC" --version))"
} >"$summary"

for mode in open closed; do
  fail_open=$([ "$mode" = open ] && echo true || echo false)
  cat >"$work/client-$mode.toml" <<TOML
workers = 1
[tls]
ca = "ca.pem"
cert = "client.pem"
key = "client-key.pem"
[pac]
fail_open = $fail_open
[control]
listen = "127.0.0.1:0"
[log]
access = "off"
[[servers]]
name = "only"
address = "$gw"
server_name = "localhost"
http_port = 0
https_port = 0
TOML
  client_pid=
  for round in $(seq 1 "$ROUNDS"); do
    if [ -z "$client_pid" ] || [ "$FRESH_CLIENT" = 1 ]; then
      if [ -n "$client_pid" ]; then
        kill "$client_pid" 2>/dev/null || true
        wait "$client_pid" 2>/dev/null || true
      fi
      start "client-$mode-$round" run --config "$work/client-$mode.toml"
      client_pid=${pids[-1]}
      proxy=$(sed -n 's/.*slot 1 http \([^ ]*\) https.*/\1/p' "$work/client-$mode-$round.out")
    fi
    log="$work/probe-$mode-$round.txt"
    rm -f "$work/stop"
    python3 "$work/prober.py" "$proxy" "$origin" "$log" "$work/stop" &
    prober=$!
    # Through the gateway before the kill (bounded).
    for _ in $(seq 1 200); do
      grep -q ' 200 1$' "$log" 2>/dev/null && break
      sleep 0.05
    done
    kill_ts=$(date +%s.%N)
    kill -9 "$gw_pid"
    wait "$gw_pid" 2>/dev/null || true
    sleep "$OUTAGE"
    restart_ts=$(date +%s.%N)
    start "gw-$mode-$round" gateway --config "$work/gateway.toml"
    gw_pid=${pids[-1]}
    # Until a request is served through the gateway again (bounded).
    end=$(( $(date +%s) + LIMIT ))
    while [ "$(date +%s)" -lt "$end" ]; do
      awk -v r="$restart_ts" '$1 >= r && $3 == 200 && $4 == 1 { found = 1 } END { exit !found }' "$log" && break
      sleep 0.1
    done
    touch "$work/stop"
    wait "$prober" || true
    python3 - "$log" "$kill_ts" "$restart_ts" "$mode" "$round" "$LIMIT" <<'PY' | tee -a "$summary"
import sys
log, kill_ts, restart_ts, mode, rnd, limit = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
rows = [l.split() for l in open(log)]
rows = [(float(a), float(b), int(c), int(d)) for a, b, c, d in rows]
during = [r for r in rows if r[0] >= kill_ts and not (r[0] >= restart_ts and r[2] == 200 and r[3] == 1)]
back = next((r for r in rows if r[0] >= restart_ts and r[2] == 200 and r[3] == 1), None)
first = f"{back[1] - restart_ts:.2f} s" if back else f"> {limit} s (not back)"
direct = sum(1 for r in during if r[2] == 200 and r[3] == 0)
c503 = sum(1 for r in during if r[2] == 503)
c502 = sum(1 for r in during if r[2] == 502)
err = sum(1 for r in during if r[2] == 0)
other = len(during) - direct - c503 - c502 - err
print(f"fail-{mode} round {rnd}: back through the gateway {first} after the restart; "
      f"kill to back: {len(during)} requests: {direct} DIRECT, {c503} x 503, {c502} x 502, {err} failed connections, {other} other")
PY
  done
  kill "$client_pid" 2>/dev/null || true
  wait "$client_pid" 2>/dev/null || true
done
echo "summary: $summary"
