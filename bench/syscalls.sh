#!/usr/bin/env bash
# System calls per request through the chain (client and gateway), counted
# with `strace -f -c`: N sequential requests on one keep-alive curl
# connection to `msc origin`, through `msc run` and `msc gateway` (one worker
# each). On the epoll driver every socket operation is a system call; on
# io_uring the count that matters is io_uring_enter (operations themselves
# are not system calls: use the io_uring tracepoints for those). Counts, not
# times: immune to a busy machine (strace slows the processes down).
#
#   bash bench/syscalls.sh                                   # GET 1 KiB, epoll, target/release/msc
#   MODE=post DRIVER=io_uring MSC_URING_FLAGS=defer N=500 bash bench/syscalls.sh
#
# MODE: get (GET /bytes/1024) or post (POST /sha256 with a 1 KiB body).
# DRIVER: epoll (MONOIO_FORCE_LEGACY_DRIVER=1) or io_uring. Output:
# OUT/summary.md (calls per request per process and syscall), OUT/*.strace,
# OUT/command.txt, OUT/env.txt. Needs strace and curl (apt-get install -y
# strace curl). Loopback only; every wait is bounded; stops only its PIDs.
set -euo pipefail
cd "$(dirname "$0")/.."
MSC=${MSC:-target/release/msc}
MODE=${MODE:-get}
DRIVER=${DRIVER:-epoll}
N=${N:-200}
PORT_BASE=${PORT_BASE:-19800}
W=${W:-/tmp/msc-syscalls}
OUT=${OUT:-perf/runs/$(date -u +%Y-%m-%d)/syscalls-$MODE-$DRIVER${MSC_URING_FLAGS:+-$MSC_URING_FLAGS}}
for t in strace curl; do command -v $t >/dev/null || { echo "needs $t (apt-get install -y $t)" >&2; exit 2; }; done
[ -x "$MSC" ] || { echo "no msc binary at $MSC" >&2; exit 2; }
case $DRIVER in epoll) export MONOIO_FORCE_LEGACY_DRIVER=1 ;; io_uring) unset MONOIO_FORCE_LEGACY_DRIVER ;; *) echo "DRIVER: epoll or io_uring" >&2; exit 2 ;; esac
case $MODE in get | post) ;; *) echo "MODE: get or post" >&2; exit 2 ;; esac
cmd="MSC=$MSC MODE=$MODE DRIVER=$DRIVER N=$N${MSC_URING_FLAGS:+ MSC_URING_FLAGS=$MSC_URING_FLAGS} bash bench/syscalls.sh"
echo "command: $cmd"
mkdir -p "$W" "$OUT"
ORIGIN=127.0.0.1:$((PORT_BASE + 80)); GW=127.0.0.1:$((PORT_BASE + 100)); P_HTTP=$((PORT_BASE + 101))
rm -rf "$W/pki"
"$MSC" pki init --dir "$W/pki" --gateway-listen "$GW" --http-port "$P_HTTP" --https-port $((PORT_BASE + 102)) >/dev/null
sed -i 's/^workers = .*/workers = 1/' "$W/pki/client.toml" "$W/pki/gateway.toml"
sed -i 's/^access = .*/access = "off"/' "$W/pki/gateway.toml"
printf '\n[control]\nlisten = "127.0.0.1:0"\n[log]\naccess = "off"\n' >>"$W/pki/client.toml"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
wait_line() { for _ in $(seq 1 150); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done; echo "no '$2' in $1" >&2; cat "$1" >&2; return 1; }
"$MSC" origin --listen "$ORIGIN" >"$W/origin.out" 2>&1 & pids+=($!)
wait_line "$W/origin.out" ready
strace -f -c -o "$OUT/gateway.strace" "$MSC" gateway --config "$W/pki/gateway.toml" >"$W/gw.out" 2>&1 & gs=$!
wait_line "$W/gw.out" ready
pids+=("$(pgrep -P "$gs")")
strace -f -c -o "$OUT/client.strace" "$MSC" run --config "$W/pki/client.toml" >"$W/cl.out" 2>&1 & cs=$!
wait_line "$W/cl.out" ready
pids+=("$(pgrep -P "$cs")")
head -c 1024 /dev/urandom >"$W/body"
args=()
for i in $(seq "$N"); do
  [ "$i" -gt 1 ] && args+=(--next)
  # Options apply per --next group: each request gets its own.
  args+=(-s -o /dev/null -w '%{http_code}\n' -x "http://127.0.0.1:$P_HTTP")
  if [ "$MODE" = post ]; then args+=(--data-binary "@$W/body" "http://$ORIGIN/sha256"); else args+=("http://$ORIGIN/bytes/1024"); fi
done
ok=$(timeout 120 curl "${args[@]}" | grep -c '^200$' || true)
# SIGTERM to msc itself (not strace): it stops, strace writes its summary.
kill "$(pgrep -P "$cs")" "$(pgrep -P "$gs")" 2>/dev/null || true
for p in $cs $gs; do for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done; done
{
  echo "# System calls per request: $MODE, $DRIVER${MSC_URING_FLAGS:+, MSC_URING_FLAGS=$MSC_URING_FLAGS}"
  echo
  echo "$ok of $N requests answered 200. Includes start-up and shutdown (a few hundred calls): use N >= 200."
  echo
  echo "| process | syscall | calls | per request |"
  echo "|---|---|---|---|"
  for p in client gateway; do
    awk -v p=$p -v n="$N" '$NF ~ /^(io_uring_enter|sendto|recvfrom|sendmsg|recvmsg|writev|readv|write|read|epoll_wait|epoll_ctl|accept4|close)$/ {
      printf "| %s | %s | %s | %.2f |\n", p, $NF, $4, $4 / n }' "$OUT/$p.strace"
  done
} >"$OUT/summary.md"
echo "$cmd" >"$OUT/command.txt"
{ uname -r; "$MSC" --version; date -u +%FT%TZ; git rev-parse --short HEAD; } >"$OUT/env.txt" 2>&1
cat "$OUT/summary.md"
[ "$ok" = "$N" ] || { echo "only $ok of $N requests succeeded" >&2; exit 1; }
