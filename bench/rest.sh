#!/usr/bin/env bash
# The client's cost at rest, as a laptop user feels it: a client with the
# default configuration (workers = 0: one per core), connected to a gateway,
# serving no traffic. Measured per variant (a binary and an environment each,
# one after the other, in one run):
#   - RSS at rest (VmRSS), of it anonymous huge pages and private dirty memory,
#     after SETTLE seconds;
#   - wake-ups per second over DUR seconds: context switches (voluntary +
#     involuntary) of every thread of the process, from /proc;
#   - CPU time of every thread over DUR seconds (schedstat), as ms per minute.
#
#   bash bench/rest.sh                    # DUR=600: the 10-minute figure
#   DUR=60 bash bench/rest.sh             # a quick look
#   VARIANTS="build:" bash bench/rest.sh  # only the build as it is
#   VARIANTS="before:BIN=/path/to/old/msc after:" bash bench/rest.sh
# VARIANTS: space-separated NAME:ENV entries (ENV: comma-separated K=V, may be
# empty; BIN=path runs that msc binary instead of this build's). The default
# is this build alone.
# Contention guard (bench/guard.sh): each DUR window waits for a quiet machine
# first and records the CPU used by other processes during it (column
# foreign_cpu_pct). RETRIES defaults to 0 here (a window is minutes long; the
# client's own wake-ups and CPU hardly depend on others' load): set RETRIES=1
# to repeat a window that was above FOREIGN_MAX.
# Bounded in time; 127.0.0.1 only; stops only the processes it started.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
CMD=$(cmdline bench/rest.sh DUR SETTLE VARIANTS OUT BUILD MSC FOREIGN_MAX QUIET_WAIT GUARD_BUDGET RETRIES)
RETRIES=${RETRIES:-0}
# shellcheck source=bench/guard.sh
. bench/guard.sh
DUR=${DUR:-600}
SETTLE=${SETTLE:-5}
VARIANTS=${VARIANTS:-"build:"}
OUT=${OUT:-perf/runs/$(date -u +%Y-%m-%d)}
mkdir -p "$OUT"
setup
GUARD_DIR=$work

"$MSC" pki init --dir "$work" --gateway-listen 127.0.0.1:0 --http-port 0 --https-port 0 >/dev/null
sed -i 's/^access = "-"/access = "off"/' "$work/gateway.toml"
start gateway gateway --config "$work/gateway.toml"
gw=$(listening_on gateway)
# The default client configuration; only the addresses are made free.
sed -e "s/127.0.0.1:0/$gw/" "$work/client.toml" >"$work/client-run.toml"
printf '\n[control]\nlisten = "127.0.0.1:0"\n' >>"$work/client-run.toml"

switches() { # total context switches of every thread of pid $1
  cat /proc/"$1"/task/*/status 2>/dev/null | awk '/^(voluntary|nonvoluntary)_ctxt_switches/ {s += $2} END {print s}'
}
cpu_ns() { # time on CPU of every thread of pid $1, in ns (schedstat)
  cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {printf "%d", s}'
}
kib() { awk -v k="$2" '$1 == k":" {print $2}' "$1"; }

# window PID: "SWITCHES CPU_NS" of PID over DUR seconds
window() {
  local s0 c0
  s0=$(switches "$1"); c0=$(cpu_ns "$1")
  sleep "$DUR"
  echo "$(($(switches "$1") - s0)) $(($(cpu_ns "$1") - c0))"
}

tsv=$OUT/rest.tsv
# (not in a pipeline: the guard's counters live in this shell)
printf 'variant\tthreads\trss_kib\tanon_huge_kib\tprivate_dirty_kib\twakeups_per_s\tcpu_ms_per_min\tforeign_cpu_pct\n' | tee "$tsv"
for v in $VARIANTS; do
  name=${v%%:*}
  envs=${v#*:}
  IFS=',' read -r -a all <<<"$envs"
  bin=$MSC
  kv=()
  for e in "${all[@]}"; do
    case $e in BIN=*) bin=${e#BIN=} ;; *) kv+=("$e") ;; esac
  done
  # env -C execs: the pid is the client's.
  env -C "$work" "${kv[@]}" "$bin" run --config client-run.toml >"$work/client-$name.out" 2>"$work/client-$name.err" &
  pid=$!
  pids+=("$pid")
  for _ in $(seq 1 200); do
    grep -q ready "$work/client-$name.out" 2>/dev/null && break
    sleep 0.05
  done
  grep -q ready "$work/client-$name.out" || { cat "$work/client-$name.err" >&2; exit 1; }
  sleep "$SETTLE"
  guard_run window "$pid"
  read -r ds dc <<<"$G_OUT"
  rss=$(kib /proc/"$pid"/status VmRSS)
  huge=$(kib /proc/"$pid"/smaps_rollup AnonHugePages)
  dirty=$(kib /proc/"$pid"/smaps_rollup Private_Dirty)
  threads=$(kib /proc/"$pid"/status Threads)
  awk -v n="$name" -v t="$threads" -v r="$rss" -v h="$huge" -v d="$dirty" -v s="$ds" \
    -v c="$dc" -v dur="$DUR" -v f="$G_FPCT" \
    'BEGIN { printf "%s\t%d\t%d\t%d\t%d\t%.2f\t%.1f\t%s\n", n, t, r, h, d, s / dur, c / 1e6 / dur * 60, f }' | tee -a "$tsv"
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
done
echo "command: $CMD; commit $(git rev-parse --short HEAD); $(nproc) cores; $(guard_totals)" | tee -a "$tsv"
