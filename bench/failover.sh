#!/usr/bin/env bash
# Fail-over under load: two gateways, a steady wrk load of new browser
# connections through the client, and the selected gateway killed (SIGKILL)
# mid-run. Reports the requests that failed and the time from the kill until
# new connections succeed through the other gateway (from the client's
# access log, which has a timestamp and the gateway of every request).
#
#   bash bench/failover.sh                 # DUR=12 s load, kill at KILL_AT=5 s
# Bounded: wrk -d, every wait has a limit. Only 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${DUR:-12}
KILL_AT=${KILL_AT:-5}
CONNS=${CONNS:-8}
OUT=${OUT:-perf/runs/$(date -u +%Y-%m-%d)}
mkdir -p "$OUT"
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --quiet
MSC=$PWD/target/release/msc
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
# shellcheck source=bench/lib.sh
. bench/lib.sh


"$MSC" pki init --dir "$work" --gateway-listen 127.0.0.1:0 --http-port 0 --https-port 0 >/dev/null
sed -i 's/^workers = 0/workers = 1/; s/^access = "-"/access = "off"/' "$work/gateway.toml"
start origin origin --listen 127.0.0.1:0 --workers 1
origin=$(sed -n 's/.*listening on //p' "$work/origin.out")
start gw-a gateway --config "$work/gateway.toml"; pid_a=${pids[-1]}
a=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$work/gw-a.out")
# A second gateway needs its own file: one msc per configuration file.
cp "$work/gateway.toml" "$work/gateway-b.toml"
start gw-b gateway --config "$work/gateway-b.toml"; pid_b=${pids[-1]}
b=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$work/gw-b.out")
cat >"$work/client-run.toml" <<TOML
workers = 1
[tls]
ca = "ca.pem"
cert = "client.pem"
key = "client-key.pem"
[control]
listen = "127.0.0.1:0"
[log]
access = "access.log"
[[servers]]
name = "a"
address = "$a"
server_name = "localhost"
http_port = 0
https_port = 0
[[servers]]
name = "b"
address = "$b"
server_name = "localhost"
http_port = 0
https_port = 0
TOML
start client run --config "$work/client-run.toml"
proxy=$(sed -n 's/.*slot 1 http \([^ ]*\) https.*/\1/p' "$work/client.out")

# Gateway "a" is selected at start-up (the default). Kill it mid-run.
wrk -t1 -c"$CONNS" -d"${DUR}s" --latency -s bench/failover/close.lua "http://$proxy" -- "$origin" >"$work/wrk.txt" 2>&1 &
wrk_pid=$!
sleep "$KILL_AT"
kill_ts=$(date -u +%s.%N)
kill -9 "$pid_a"
wait "$wrk_pid" || true

python3 - "$work/access.log" "$kill_ts" "$work/wrk.txt" "$work/client.err" <<'PY' | tee "$OUT/failover.txt"
import sys, datetime, re
log, kill_ts, wrk, err = sys.argv[1], float(sys.argv[2]), open(sys.argv[3]).read(), open(sys.argv[4]).read()
def ts(s):
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc).timestamp()
rows = []
for line in open(log):
    f = line.split()
    if len(f) >= 9:
        rows.append((ts(f[0]), f[4], f[8]))
before = [r for r in rows if r[0] < kill_ts]
after = [r for r in rows if r[0] >= kill_ts]
first_b = next((r[0] for r in after if r[2] == "gw:b" and r[1] == "200"), None)
bad = [r for r in rows if r[1] != "200"]
reqs = re.search(r"(\d+) requests in", wrk)
errs = re.search(r"Socket errors: (.*)", wrk)
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", wrk)
sw = [l for l in err.splitlines() if "gateway switch" in l]
print(f"requests (wrk): {reqs.group(1) if reqs else '?'}; via a before kill: {sum(1 for r in before if r[2]=='gw:a')}; after kill: {len(after)} (via b: {sum(1 for r in after if r[2]=='gw:b')})")
print(f"failed requests: wrk socket errors: {errs.group(1) if errs else 'none'}; non-2xx: {non2xx.group(1) if non2xx else 0}; non-200 in access log: {len(bad)}")
if first_b is not None:
    print(f"first success through b after the kill: {(first_b - kill_ts) * 1000:.1f} ms")
for l in sw:
    print("client:", l.strip())
PY
{ echo "command: DUR=$DUR KILL_AT=$KILL_AT CONNS=$CONNS bash bench/failover.sh"; echo "commit: $(git rev-parse --short HEAD)"; cat "$work/wrk.txt"; } >"$OUT/failover-wrk.txt"
