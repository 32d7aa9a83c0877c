#!/usr/bin/env bash
# Memory per idle connection at scale: RSS of the msc client and gateway
# with N idle keep-alive browser connections and with N idle CONNECT tunnels
# (each carried one request first), for N in N_LIST. Uses the built-in
# origin and bench/compare/hold_conns.py. Bounded in time; 127.0.0.1 only.
#
#   bash bench/idle_rss.sh                       # N_LIST="1000 10000" (CONNECT capped, see below)
# The open-file limit here is 20000 (hard, not raisable): a CONNECT tunnel
# costs the client two descriptors, so CONNECT runs use at most 9000.
set -euo pipefail
cd "$(dirname "$0")/.."
N_LIST=${N_LIST:-"1000 10000"}
OUT=${OUT:-perf/runs/$(date -u +%Y-%m-%d)}
DRIVER=${DRIVER:-auto}
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)"
# shellcheck source=bench/lib.sh
. bench/lib.sh
setup
rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

"$MSC" pki init --dir "$work" --gateway-listen 127.0.0.1:0 --http-port 0 --https-port 0 >/dev/null
sed -i 's/^workers = 0/workers = 1/; s/^access = "-"/access = "off"/' "$work/gateway.toml"
printf '\n[runtime]\ndriver = "%s"\n' "$DRIVER" >>"$work/gateway.toml"
start origin origin --listen 127.0.0.1:0 --workers 1
origin=$(sed -n 's/.*listening on //p' "$work/origin.out")
start gateway gateway --config "$work/gateway.toml"; gpid=${pids[-1]}
gw=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$work/gateway.out")
sed -e "s/127.0.0.1:0/$gw/" -e 's/^workers = 0/workers = 1/' "$work/client.toml" >"$work/client-run.toml"
printf '\n[control]\nlisten = "127.0.0.1:0"\n[log]\naccess = "off"\n[runtime]\ndriver = "%s"\n' "$DRIVER" >>"$work/client-run.toml"
start client run --config "$work/client-run.toml"; cpid=${pids[-1]}
proxy_port=$(sed -n 's/.*slot 1 http [^:]*:\([0-9]*\) https.*/\1/p' "$work/client.out")
sleep 1
{
  printf 'mode\tn\tclient_idle_kib\tclient_held_kib\tclient_kib_per_conn\tgateway_idle_kib\tgateway_held_kib\tgateway_kib_per_conn\tclient_after_close_kib\tgateway_after_close_kib\n'
  for mode in absolute connect; do
    for n in $N_LIST; do
      [ "$mode" = connect ] && [ "$n" -gt 9000 ] && n=9000
      c0=$(rss "$cpid"); g0=$(rss "$gpid")
      rm -f "$work/ready"
      python3 bench/compare/hold_conns.py --port "$proxy_port" --mode "$mode" --target "$origin" --path /bytes/1024 \
        --n "$n" --hold 180 --open-deadline 150 --ready "$work/ready" 2>"$work/hold.err" &
      hold=$!
      for _ in $(seq 1 1800); do [ -s "$work/ready" ] && break; sleep 0.1; done
      sleep 2
      c1=$(rss "$cpid"); g1=$(rss "$gpid")
      kill "$hold" 2>/dev/null || true; wait "$hold" 2>/dev/null || true
      sleep 3
      c2=$(rss "$cpid"); g2=$(rss "$gpid")
      ok=$(cut -d' ' -f1 "$work/ready" 2>/dev/null || echo 0)
      awk -v m="$mode" -v n="$ok" -v c0="$c0" -v c1="$c1" -v g0="$g0" -v g1="$g1" -v c2="$c2" -v g2="$g2" \
        'BEGIN { printf "%s\t%d\t%d\t%d\t%.2f\t%d\t%d\t%.2f\t%d\t%d\n", m, n, c0, c1, (c1-c0)/n, g0, g1, (g1-g0)/n, c2, g2 }'
    done
  done
} | tee "$OUT/idle-rss-$DRIVER.tsv"
echo "command: N_LIST=\"$N_LIST\" DRIVER=$DRIVER bash bench/idle_rss.sh; commit $(git rev-parse --short HEAD)" >>"$OUT/idle-rss-$DRIVER.tsv"
