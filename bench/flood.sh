#!/usr/bin/env bash
# Unauthenticated flood of the gateway: SILENT TCP connections that never send
# a byte plus STALLED ClientHellos (record header + 64 bytes, then nothing),
# each re-opened as the gateway drops it, for SECONDS. Meanwhile a legitimate
# client does TCP + mTLS handshake + probe request every 0.2 s (bench/flood.py
# legit); reports its times, failures, attempts over 1 s, and the gateway's RSS.
#
#   bash bench/flood.sh                      # defaults: SILENT=1500 STALLED=5000 FLOOD_SECONDS=20
#   OLD_MSC=path/to/older/msc bash bench/flood.sh   # adds a run of an older build, same config
#
# Variants: "defended" (default [limits] and timeouts), "limits-off" (limits
# raised out of reach, first_byte = handshake = 10s), "old" if OLD_MSC is set,
# and "defended-nofileN" / "old-nofileN": the same with the gateway's
# open-file limit at NOFILE (default 4096, below the flood's 6,500
# connections, as on a host with a small limit). One gateway worker.
# 127.0.0.1 only; every loop is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
SILENT=${SILENT:-1500}
STALLED=${STALLED:-5000}
SECONDS_FLOOD=${FLOOD_SECONDS:-20}
NOFILE=${NOFILE:-4096}
OUT=${OUT:-perf/runs/$(date -u +%Y-%m-%d)/flood}
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)"
# shellcheck source=bench/lib.sh
. bench/lib.sh
setup
NEW_MSC=$MSC

"$MSC" pki init --dir "$work" --gateway-listen 127.0.0.1:0 --http-port 0 --https-port 0 >/dev/null
sed -i 's/^workers = 0/workers = 1/; s/^access = "-"/access = "off"/' "$work/gateway.toml"
cp "$work/gateway.toml" "$work/gateway-old.toml"
cp "$work/gateway.toml" "$work/gateway-off.toml"
printf '\n[limits]\nmax_connections = 1000000\nmax_handshakes = 1000000\n[timeouts]\nfirst_byte = "10s"\n' >>"$work/gateway-off.toml"

# low_nofile BINARY: a wrapper that runs BINARY with the open-file limit at $NOFILE.
low_nofile() {
  local w; w=$work/nofile-$(basename "$1")-$RANDOM
  printf '#!/bin/sh\nexec prlimit --nofile=%s:%s %s "$@"\n' "$NOFILE" "$NOFILE" "$1" >"$w"
  chmod +x "$w"
  echo "$w"
}

run() { # NAME BINARY CONFIG
  local name=$1 bin=$2 cfg=$3
  MSC=$bin
  start "gw-$name" gateway --config "$cfg"; local gpid=${pids[-1]}
  local gw; gw=$(listening_on "gw-$name")
  local legit=(python3 bench/flood.py legit --gw "$gw" --ca "$work/ca.pem" --cert "$work/client.pem"
    --key "$work/client-key.pem" --pid "$gpid")
  "${legit[@]}" --seconds 3 >"$OUT/$name-baseline.tsv"
  python3 bench/flood.py flood --gw "$gw" --silent "$SILENT" --stalled "$STALLED" --seconds "$SECONDS_FLOOD" \
    >"$OUT/$name-flood.txt" 2>&1 &
  local fpid=$!
  # Measure from 3 s into the flood (ramp-up) to its end.
  sleep 3
  "${legit[@]}" --seconds "$((SECONDS_FLOOD - 4))" >"$OUT/$name-during.tsv"
  wait "$fpid" || true
  kill "$gpid" 2>/dev/null || true
  wait "$gpid" 2>/dev/null || true
  cp "$work/gw-$name.err" "$OUT/$name-gateway.log"
  printf '%s\tbaseline\t%s\n' "$name" "$(tail -1 "$OUT/$name-baseline.tsv")"
  printf '%s\tduring\t%s\n' "$name" "$(tail -1 "$OUT/$name-during.tsv")"
  printf '%s\tflood\t%s\n' "$name" "$(tail -1 "$OUT/$name-flood.txt")"
}

{
  run defended "$NEW_MSC" "$work/gateway.toml"
  run limits-off "$NEW_MSC" "$work/gateway-off.toml"
  run "defended-nofile$NOFILE" "$(low_nofile "$NEW_MSC")" "$work/gateway.toml"
  if [ -n "${OLD_MSC:-}" ]; then
    run old "$OLD_MSC" "$work/gateway-old.toml"
    run "old-nofile$NOFILE" "$(low_nofile "$OLD_MSC")" "$work/gateway-old.toml"
  fi
  echo "command: SILENT=$SILENT STALLED=$STALLED FLOOD_SECONDS=$SECONDS_FLOOD NOFILE=$NOFILE${OLD_MSC:+ OLD_MSC=<msc built from an older commit>} bash bench/flood.sh; commit $(git rev-parse --short HEAD)"
} | tee "$OUT/summary.txt"
