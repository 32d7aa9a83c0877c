#!/usr/bin/env bash
# Soak (issue 15): DURATION seconds (default 600) of mixed load through
# client -> two gateways -> origin: keep-alive GETs, a new connection per
# request (Content-Length and chunked), CONNECT tunnels, uploads with a
# sha256 check, 8-32 MiB downloads with a sha256 check. Every KILL_EVERY
# seconds (default 60) one gateway is killed (SIGKILL) and restarted on the
# same port DOWN_FOR seconds (default 15) later, alternating. The client's
# RSS and descriptor count are sampled every 5 s.
#
#   bash bench/soak.sh                    # 10 minutes
#   DURATION=120 bash bench/soak.sh       # a short run
# Writes $OUT/soak.json (counts, events, samples) and soak-status.json.
# Exits 1 if any response arrived with wrong bytes. Only 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-600}
OUT=${OUT:-perf/runs/$(date -u +%Y-%m-%d)/soak}
cargo build --release --quiet
python3 bench/soak.py "$PWD/target/release/msc" "$OUT" "$DURATION"
