#!/usr/bin/env bash
# record.sh - the run of record of issue #13: every side-by-side measurement, one
# after the other, on one build, into one folder, so the targets table in
# perf/round2.md can be checked against a single run.
#
#   bash bench/record.sh                         # everything (about 45-60 min on 2 quiet cores)
#   PARTS="compare ab" bash bench/record.sh      # only some parts
#   BASE=/path/to/old/msc bash bench/record.sh   # the "ab" part compares BASE with this build
#
# Parts (PARTS, in this order by default):
#   compare   bench/compare.sh, all chains and workloads (msc, HAProxy, nginx, squid, stunnel)
#   latency   bench/latency.sh, open-loop added latency at 10/100/1,000 requests/s
#   coldstart bench/coldstart.sh, start to first answer; cold pool vs warm
#   idle      bench/idle_rss.sh, memory per idle connection at 1,000 and 10,000 (fresh processes)
#   tunnels   bench/tunnels.sh, 10,000 active CONNECT tunnels, every byte verified
#   scaling   bench/scaling.sh, 2 workers vs 1
#   ab        bench/ab.sh BASE NEW: no regression of the existing rows (needs BASE)
# Each part keeps its own knobs (environment) and writes OUT/<part>/ with its
# summary.md, raw data, env.txt and command.txt; OUT/record.txt lists the parts, their
# commands, exit status and durations. A failing part is recorded and the next runs.
set -uo pipefail
cd "$(dirname "$0")/.."
PARTS=${PARTS:-"compare latency coldstart idle tunnels scaling ab"}
OUT=${OUT:-perf/runs/$(date -u +%F)/record}
BUILD=${BUILD:-1}
BASE=${BASE:-}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
[ "$(id -u)" = 0 ] || { echo "run as root (apt-get, taskset, cgroups, ulimit)" >&2; exit 2; }
if [ "$BUILD" = 1 ]; then cargo build --release --quiet || exit 1; fi
export BUILD=0
LOG=$OUT/record.txt
{
  echo "date: $(date -u +%FT%TZ)"
  echo "commit: $(git rev-parse HEAD) ($(git log -1 --format=%s | cut -c1-80))"
  echo "command: PARTS=\"$PARTS\"${BASE:+ BASE=<old build>} bash bench/record.sh"
  echo "cpu: $(nproc) x $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo); kernel $(uname -r)"
} >"$LOG"

part() {  # part NAME CMD...
  local name=$1 t0=$SECONDS rc; shift
  echo "[$(date -u +%T)] == $name: $*" >&2
  OUT=$OUT/$name "$@" >"$OUT/$name.log" 2>&1
  rc=$?
  printf '%s\trc=%s\t%ss\t%s\n' "$name" "$rc" "$((SECONDS - t0))" "$*" >>"$LOG"
  echo "[$(date -u +%T)] == $name done: rc=$rc in $((SECONDS - t0)) s (log $OUT/$name.log)" >&2
}

for p in $PARTS; do
  case $p in
    compare) part compare bash bench/compare.sh ;;
    latency) part latency bash bench/latency.sh ;;
    coldstart) part coldstart bash bench/coldstart.sh ;;
    idle) part idle bash bench/idle_rss.sh ;;
    tunnels) part tunnels bash bench/tunnels.sh ;;
    scaling) part scaling bash bench/scaling.sh ;;
    ab)
      if [ -z "$BASE" ]; then
        printf 'ab\tskipped\t0s\tBASE=<old msc binary> not set\n' >>"$LOG"
      else
        part ab bash bench/ab.sh "$BASE" "$PWD/target/release/msc"
      fi ;;
    *) echo "unknown part $p" >&2; exit 2 ;;
  esac
done
echo "[$(date -u +%T)] record done: $LOG" >&2
cat "$LOG"
