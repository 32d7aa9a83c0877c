#!/usr/bin/env bash
# Counts the DNS lookups a generated PAC makes in a real engine (pactester,
# Debian libpacparser1) over 10,000 URLs, per category, and times the runs.
#
# Run from the repo root:   bash bench/pac/dns-count.sh
# Writes the report to stdout and to perf/runs/<UTC date>/pac-dns.txt.
#
# How lookups are counted: pacparser's dnsResolve calls getaddrinfo (the only
# resolver symbol libpacparser.so imports; `nm -D` shows it). An LD_PRELOAD
# shim (dns-count-shim.c, compiled here with gcc) logs every getaddrinfo and
# gethostbyname* call with the name asked, and answers from a fixed table via
# AI_NUMERICHOST, so no query leaves the machine, results are deterministic,
# and a count is exact (strace would only see packets, and cached or failed
# lookups differently). Each category runs in its own pactester process with
# its own log, so lookups are attributed without guessing.
#
# Targets: zero lookups for IP literals and bypassed hosts; at most one host
# lookup per remaining call, plus at most one of the on-premise indicator.
# Every step is bounded with `timeout`.
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$(pwd)
STEP_TIMEOUT=${STEP_TIMEOUT:-300}

for tool in pactester gcc timeout; do
  if ! command -v "$tool" >/dev/null; then
    echo "dns-count.sh: '$tool' not found (pactester: apt-get install libpacparser1; gcc: apt-get install gcc)" >&2
    exit 1
  fi
done

DATE=$(date -u +%Y-%m-%d)
OUT_DIR="$ROOT/perf/runs/$DATE"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

timeout "$STEP_TIMEOUT" cargo run -q --release -p msc-pac --example dns_fixture -- "$WORK" >&2
timeout "$STEP_TIMEOUT" gcc -O2 -Wall -Wextra -shared -fPIC -o "$WORK/shim.so" \
  bench/pac/dns-count-shim.c -ldl
INDICATOR=$(cat "$WORK/indicator.txt")
# On premise: the same table plus the indicator answering as expected.
cp "$WORK/fake-hosts.txt" "$WORK/fake-hosts-onprem.txt"
echo "$INDICATOR 10.9.9.9" >>"$WORK/fake-hosts-onprem.txt"
printf 'function FindProxyForURL(url, host) { return "DIRECT"; }\n' >"$WORK/empty.pac"

now() { date +%s.%N; }

# run NAME PAC URLS HOSTS -> sets RUN_SECS, RUN_CALLS, RUN_TOTAL, RUN_IND, RUN_HOST, RUN_MAXNAME
run() {
  local name=$1 pac=$2 urls=$3 hosts=$4
  local log="$WORK/log-$name.txt" out="$WORK/out-$name.txt"
  : >"$log"
  local t0 t1
  t0=$(now)
  timeout "$STEP_TIMEOUT" env LD_PRELOAD="$WORK/shim.so" MSC_DNS_LOG="$log" \
    MSC_DNS_HOSTS="$hosts" pactester -p "$pac" -f "$urls" >"$out"
  t1=$(now)
  RUN_SECS=$(echo "$t1 - $t0" | bc -l)
  RUN_CALLS=$(wc -l <"$out")
  local want
  want=$(wc -l <"$urls")
  if [ "$RUN_CALLS" -ne "$want" ]; then
    echo "dns-count.sh: pactester evaluated $RUN_CALLS of $want URLs in $name" >&2
    exit 1
  fi
  RUN_TOTAL=$(wc -l <"$log")
  RUN_IND=$(grep -c -x "getaddrinfo $INDICATOR" "$log" || true)
  RUN_HOST=$((RUN_TOTAL - RUN_IND))
  RUN_MAXNAME=$({ grep -v -x "getaddrinfo $INDICATOR" "$log" || true; } | sort | uniq -c |
    sort -rn | awk 'NR==1 {print $1} END {if (NR==0) print 0}')
}

REPORT="$WORK/report.txt"
{
  echo "# PAC DNS lookup count ($DATE UTC)"
  echo "command: bash bench/pac/dns-count.sh   (commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
  echo "engine: pactester from Debian libpacparser1 $(dpkg-query -W -f='${Version}' libpacparser1 2>/dev/null || echo '?'); $(nproc) cores; kernel $(uname -r)"
  echo "config: 1,000 bypass entries (400 exact, 250 *.domain, 50 host globs, 50 URL patterns,"
  echo "        150 IPv4 CIDR, 100 IPv6 CIDR), 2 slots, on-premise indicator '$INDICATOR' -> 10.9.9.9"
  echo "PAC size: $(wc -c <"$WORK/proxy.pac") bytes (sequential-bypass comparison PAC: $(wc -c <"$WORK/naive.pac") bytes)"
  echo
  printf '%-20s %7s %9s %12s %10s %14s %9s  %s\n' category calls seconds "host lookups" indicator "max/same name" "us/call" "target"
  FAIL=0
  for cat in ip-literal-v4 ip-literal-v6 bypassed non-routable-name public-name; do
    run "$cat" "$WORK/proxy.pac" "$WORK/urls-$cat.txt" "$WORK/fake-hosts.txt"
    case $cat in
      ip-literal-*) ok=$([ "$RUN_HOST" -eq 0 ] && [ "$RUN_IND" -le "$RUN_CALLS" ] && echo ok || echo FAIL)
        target="0 host lookups" ;;
      bypassed) ok=$([ "$RUN_TOTAL" -eq 0 ] && echo ok || echo FAIL)
        target="0 lookups at all" ;;
      *) ok=$([ "$RUN_HOST" -le "$RUN_CALLS" ] && [ "$RUN_MAXNAME" -le 1 ] && [ "$RUN_IND" -le "$RUN_CALLS" ] && echo ok || echo FAIL)
        target="<=1 host lookup/call (+<=1 indicator)" ;;
    esac
    [ "$ok" = ok ] || FAIL=1
    printf '%-20s %7d %9.3f %12d %10d %14d %9.1f  %s: %s\n' "$cat" "$RUN_CALLS" "$RUN_SECS" \
      "$RUN_HOST" "$RUN_IND" "$RUN_MAXNAME" "$(echo "$RUN_SECS * 1000000 / $RUN_CALLS" | bc -l)" "$ok" "$target"
  done
  echo
  echo "mixed 10,000 URLs (the five categories interleaved), one pactester process each:"
  printf '%-34s %7s %9s %12s %10s %9s\n' run calls seconds "host lookups" indicator "us/call"
  for variant in off-premise on-premise naive empty-pac; do
    case $variant in
      off-premise) run mixed-off "$WORK/proxy.pac" "$WORK/urls-all.txt" "$WORK/fake-hosts.txt"; label="off premise (indicator unresolved)" ;;
      on-premise) run mixed-on "$WORK/proxy.pac" "$WORK/urls-all.txt" "$WORK/fake-hosts-onprem.txt"; label="on premise (indicator -> 10.9.9.9)" ;;
      naive) run mixed-naive "$WORK/naive.pac" "$WORK/urls-all.txt" "$WORK/fake-hosts.txt"; label="off premise, sequential bypass PAC" ;;
      empty-pac) run mixed-empty "$WORK/empty.pac" "$WORK/urls-all.txt" "$WORK/fake-hosts.txt"; label="baseline: PAC returning DIRECT" ;;
    esac
    printf '%-34s %7d %9.3f %12d %10d %9.1f\n' "$label" "$RUN_CALLS" "$RUN_SECS" "$RUN_HOST" "$RUN_IND" \
      "$(echo "$RUN_SECS * 1000000 / $RUN_CALLS" | bc -l)"
  done
  echo
  echo "lookups are counted by an LD_PRELOAD shim on getaddrinfo/gethostbyname*; answers come from a"
  echo "fixed table (no DNS traffic). seconds = wall time of the whole pactester process (start-up,"
  echo "PAC parse, 2,000 or 10,000 evaluations)."
  if [ "$FAIL" -ne 0 ]; then echo "RESULT: FAIL (a category missed its target)"; else echo "RESULT: all targets met"; fi
} | tee "$REPORT"

mkdir -p "$OUT_DIR"
cp "$REPORT" "$OUT_DIR/pac-dns.txt"
echo "written: perf/runs/$DATE/pac-dns.txt" >&2
grep -q '^RESULT: all targets met' "$REPORT"
