#!/usr/bin/env bash
# compare.sh - msc side by side with HAProxy, nginx, squid and stunnel mTLS chains, on
# this machine, in one run, with the same CPU pinning. Prints a markdown table with
# msc/peer ratios and msc/best peer.
#
# Chains (every proxy process of a chain on PROXYCPU; wrk/oha/curl/python and the
# nginx origin on LOADCPU):
#   direct   wrk/oha/curl -> nginx
#   msc      msc run (1 worker) -> mTLS -> msc gateway (1 worker) -> nginx
#   haproxy  haproxy (http mode, pooled mTLS, http-reuse always) -> haproxy gw -> nginx
#            (+ tcp-mode tunnels: the analogue of CONNECT, one gateway TLS conn each)
#   nginx    nginx reverse proxy (pooled mTLS, upstream keepalive) -> nginx gw -> nginx
#            (+ stream-module tcp tunnels: the analogue of CONNECT)
#   squid    squid forward proxy -> TLS cache_peer with client cert -> squid gw (https_port,
#            client certificate required) -> nginx: real CONNECT through an mTLS parent
#   stunnel  stunnel client -> mTLS -> stunnel server -> nginx (a TCP tunnel)
# All gateways: TLS 1.3 only, ECDSA P-256 certificates from `msc pki init`, client
# certificate required (checked before measuring).
#
# Workloads (WORKLOADS): ka close connect dl mem probe  - see perf/compare.md.
# Peer tuning knobs: HA_BUFSIZE=65536 (HAProxy tune.bufsize), NGX_BUF=64k (nginx proxy
# buffers), PROBE_N=200 (requests per resumption probe phase).
# Every load loop is bounded (wrk -d, oha -z, curl --max-time, timeout(1)); all traffic
# is on 127.0.0.1; only processes started here are stopped, by PID.
#
# Usage (as root, from anywhere):  bash bench/compare.sh
#   quick subset:  DUR=3 REPS=1 SECTIONS="direct msc haproxy" bash bench/compare.sh
#   env knobs:     DUR=10 REPS=3 DL_REPS=2*REPS-1 CONNS=64 HOLD_N=1000
#                  SECTIONS="direct msc haproxy nginx squid stunnel"
#                  WORKLOADS="ka close connect dl mem probe" HA_BUFSIZE=65536 NGX_BUF=64k PROBE_N=200
#                  LOADCPU=0 PROXYCPU=1 PORT_BASE=19000
#                  FOREIGN_MAX=5 QUIET_WAIT=30 GUARD_BUDGET=300 RETRIES=2
#                  INSTALL=1 BUILD=1 BUILD_OHA=1 OHA=/opt/oha/bin/oha
#                  W=/tmp/msc-compare (scratch)  OUT=perf/runs/<UTC date>/compare
#                  MSC_ACCESS_LOG=off (client and gateway access logs; "-" = stderr)
#                  MSC_DRIVER=auto (msc runtime.driver: auto | io_uring | epoll)
set -euo pipefail

KNOBS="DUR REPS DL_REPS CONNS HOLD_N SECTIONS WORKLOADS LOADCPU PROXYCPU PORT_BASE FOREIGN_MAX QUIET_WAIT
GUARD_BUDGET RETRIES INSTALL BUILD BUILD_OHA OHA W OUT MSC MSC_ACCESS_LOG MSC_DRIVER HA_BUFSIZE NGX_BUF PROBE_N"
CMDLINE=""
for k in $KNOBS; do [ -n "${!k+x}" ] && CMDLINE+="$k=$(printf '%q' "${!k}") "; done
CMDLINE+="bash bench/compare.sh"

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
H=$HERE/compare                            # helpers and config templates
DUR=${DUR:-10}
REPS=${REPS:-3}
DL_REPS=${DL_REPS:-$((2 * REPS - 1))}
CONNS=${CONNS:-64}
HOLD_N=${HOLD_N:-1000}
SECTIONS=${SECTIONS:-"direct msc haproxy nginx squid stunnel"}
WORKLOADS=${WORKLOADS:-"ka close connect dl mem probe"}
LOADCPU=${LOADCPU:-0}
PROXYCPU=${PROXYCPU:-1}
PORT_BASE=${PORT_BASE:-19000}
FOREIGN_MAX=${FOREIGN_MAX:-5}
QUIET_WAIT=${QUIET_WAIT:-30}
GUARD_BUDGET=${GUARD_BUDGET:-300}
RETRIES=${RETRIES:-2}
INSTALL=${INSTALL:-1}
BUILD=${BUILD:-1}
BUILD_OHA=${BUILD_OHA:-1}
OHA=${OHA:-$(command -v oha || echo /opt/oha/bin/oha)}
W=${W:-/tmp/msc-compare}
OUT=${OUT:-$ROOT/perf/runs/$(date -u +%F)/compare}
MSC=${MSC:-${CARGO_TARGET_DIR:-$ROOT/target}/release/msc}
MSC_ACCESS_LOG=${MSC_ACCESS_LOG:-off}
MSC_DRIVER=${MSC_DRIVER:-auto}
PROBE_N=${PROBE_N:-200}
# TLS 1.3 only for squid: squid 5.7's tls-min-version=1.3 trips a parser bug (found for
# shared/bench-peers/peers.sh), so the older versions are switched off one by one
# shellcheck disable=SC2034  # used by render() through ${!v}
SQUID_TLS13="tls-options=NO_SSLv3,NO_TLSv1,NO_TLSv1_1,NO_TLSv1_2"

# shellcheck source=bench/proc.sh
. "$HERE/proc.sh"
# ports (PORT_BASE + offsets; none of peers.sh's defaults: 13128-13130 13443 14000-14444
# 15000-15444 18080 18443), ORIGIN, peer tuning (HA_BUFSIZE, NGX_BUF), render and the
# chain starters shared with bench/measure/lib.sh
# shellcheck source=bench/chains.sh
. "$HERE/chains.sh"
ALL_PORTS="$P_NGX $P_NGX_TLS $P_MSG $P_MSC_HTTP $P_MSC_HTTPS $P_HAC_HTTP $P_HAC_TCP $P_HAC_TCP_TLS $P_HAS_HTTP
  $P_HAS_TCP $P_HAS_TCP_TLS $P_STC $P_STC_TLS $P_STS $P_STS_TLS $P_NXC_HTTP $P_NXC_TCP $P_NXC_TCP_TLS $P_NXS_HTTP
  $P_NXS_TCP $P_NXS_TCP_TLS $P_SQC $P_SQS"
CLK_TCK=$(getconf CLK_TCK)
C=$W/certs
RAW=$OUT/raw.tsv

has_wl() { [[ " $WORKLOADS " == *" $1 "* ]]; }

# ---------------------------------------------------------------- setup
install_pkgs() {
  local need=() b
  for b in nginx wrk haproxy stunnel4 curl python3 openssl taskset squid tcpdump tshark; do have "$b" || need+=("$b"); done
  [ -e "$NGX_STREAM_SO" ] || need+=(libnginx-mod-stream)
  # squid must be squid-openssl (Debian's default squid is built with GnuTLS: no clientca=)
  if have squid && ! squid -v 2>/dev/null | grep -q -- '--with-openssl'; then need+=(squid-openssl); fi
  [ ${#need[@]} -eq 0 ] && return 0
  log "installing Debian packages (missing: ${need[*]})"
  apt-get update -q >/dev/null
  # tshark asks whether non-root users may capture: answer no, non-interactively
  echo 'wireshark-common wireshark-common/install-setuid boolean false' | debconf-set-selections
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light libnginx-mod-stream wrk haproxy stunnel4 \
    squid-openssl tcpdump tshark curl python3 openssl util-linux >/dev/null
}

build() {
  if [ "$BUILD" = 1 ]; then
    log "building msc (cargo build --release)"
    (cd "$ROOT" && cargo build --release --quiet) || die "cargo build failed"
  fi
  [ -x "$MSC" ] || die "msc binary not found at $MSC (BUILD=1 or MSC=path)"
  if [ ! -x "$OHA" ] && [ "$BUILD_OHA" = 1 ] && has_wl connect; then
    log "building oha 1.16.0 into /opt/oha (about 6 min; BUILD_OHA=0 skips the CONNECT rows)"
    if timeout 1200 cargo install --locked oha --version 1.16.0 --root /opt/oha >"$W/logs/oha-build.log" 2>&1; then
      OHA=/opt/oha/bin/oha
    else
      log "oha build failed (see $W/logs/oha-build.log): CONNECT rows will be skipped"
    fi
  fi
}

prepare() {
  mkdir -p "$W"/{logs,www,conf,nginx-tmp,pcap} "$W"/nginx-{client,gw}-tmp/{body,proxy,fastcgi,uwsgi,scgi} "$OUT"
  rm -f "$W"/pcap/*.pcap
  # squid drops to its cache_effective_user (proxy) after reading its configuration:
  # its log/pid directories must be writable by that user
  mkdir -p "$W/squid-client" "$W/squid-gw"; rm -f "$W"/squid-*/cache.log
  chown proxy:proxy "$W/squid-client" "$W/squid-gw" 2>/dev/null || chmod 777 "$W/squid-client" "$W/squid-gw"
  chmod 755 "$W" "$W/www"
  [ "$(stat -c %s "$W/www/1k" 2>/dev/null)" = 1024 ] || head -c 1024 /dev/urandom >"$W/www/1k"
  [ "$(stat -c %s "$W/www/100m" 2>/dev/null)" = $((100 << 20)) ] || head -c $((100 << 20)) /dev/urandom >"$W/www/100m"
  chmod 644 "$W/www/"*
  find "$W/logs" -type f ! -name oha-build.log -delete   # logs of this run only (stunnel and nginx append)
  : >"$W/logs/stderr.log"; : >"$W/logs/wrk.log"; : >"$W/logs/oha.log"; : >"$W/logs/hold.log"
  # One PKI for every chain (ECDSA P-256): CA, gateway cert (SAN localhost, 127.0.0.1),
  # client cert, plus msc's client.toml/gateway.toml.
  rm -rf "$C"
  "$MSC" pki init --dir "$C" --gateway-listen "127.0.0.1:$P_MSG" --http-port "$P_MSC_HTTP" \
    --https-port "$P_MSC_HTTPS" >"$W/logs/pki.log" 2>&1 || die "msc pki init failed: $(cat "$W/logs/pki.log")"
  cat "$C/gateway.pem" "$C/gateway-key.pem" >"$C/gateway-combined.pem"
  cat "$C/client.pem" "$C/client-key.pem" >"$C/client-combined.pem"
  openssl x509 -in "$C/gateway.pem" -noout -text | grep -q 'ASN1 OID: prime256v1' || die "gateway key is not P-256"
  openssl x509 -in "$C/client.pem" -noout -text | grep -q 'ASN1 OID: prime256v1' || die "client key is not P-256"
}

# ---------------------------------------------------------------- processes
STARTED=()
save_logs() {  # keep the configs used and the last lines of the processes' logs with the results
  local f
  [ -d "$OUT" ] || return 0
  mkdir -p "$OUT/configs" "$OUT/logs"
  cp "$W/conf/"*.conf "$W/conf/"*.cfg "$W/conf/"*.toml "$OUT/configs/" 2>/dev/null || true
  for f in msc-client.err msc-gateway.err msc-client.out msc-gateway.out haproxy-client.err haproxy-server.err \
           stunnel-client.log stunnel-server.log nginx-error.log nginx-client-error.log nginx-gw-error.log \
           squid-client.err squid-gw.err hold.log probe.log stderr.log; do
    if [ -s "$W/logs/$f" ]; then tail -n 300 "$W/logs/$f" >"$OUT/logs/$f"; fi
  done
  for f in squid-client squid-gw; do
    if [ -s "$W/$f/cache.log" ]; then tail -n 300 "$W/$f/cache.log" >"$OUT/logs/$f-cache.log"; fi
  done
}
cleanup() {
  local p
  save_logs
  for p in "${STARTED[@]:-}"; do [ -n "$p" ] && stop_pid "$p"; done
  if [ -n "${HOLDER:-}" ]; then kill "$HOLDER" 2>/dev/null || true; fi
  if [ -n "${CAPPID:-}" ]; then kill -INT "$CAPPID" 2>/dev/null || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM


# ---------------------------------------------------------------- measurement primitives
emit() {  # emit CHAIN WORKLOAD REP METRIC VALUE [FOREIGN] [NOTE]
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "${6:--}" "${7:--}" >>"$RAW"
}
cpu_snap() {  # "busyLOAD totLOAD stealLOAD busyPROXY totPROXY stealPROXY" (ticks, /proc/stat)
  awk -v a="cpu$LOADCPU" -v b="cpu$PROXYCPU" '
    $1==a {la=$2+$3+$4+$7+$8; lt=la+$5+$6+$9; ls=$9}
    $1==b {pa=$2+$3+$4+$7+$8; pt=pa+$5+$6+$9; ps=$9}
    END {print la, lt, ls, pa, pt, ps}' /proc/stat
}
ha_info() {  # ha_info SOCKET KEY DEFAULT - one field of a haproxy stats socket's "show info"
  [ -n "${1:-}" ] || { echo "$3"; return; }
  python3 - "$1" "$2" "$3" <<'EOF' 2>/dev/null || echo "$3"
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b"show info\n")
buf = b""
while True:
    d = s.recv(65536)
    if not d: break
    buf += d
kv = dict(l.split(": ", 1) for l in buf.decode().splitlines() if ": " in l)
print(kv.get(sys.argv[2], sys.argv[3]))
EOF
}
# cumulative TLS connections accepted by the haproxy gateway
ha_cum() { ha_info "${1:-}" CumSslConns 0; }

# Contention guard (bench/guard.sh; method in perf/compare.md): guarded CMD... ->
# G_OUT (stdout), G_FOREIGN, plus per-run snapshots of the current chain (CH_ALL,
# CH_CLIENT, CH_HASOCK): G_C0/G_C1 (cpu_snap), G_T0/G_T1 (chain ticks),
# G_U0/G_U1 (client-side ticks), G_H0/G_H1 (haproxy gateway TLS conns)
# shellcheck source=bench/guard.sh
. "$HERE/guard.sh"
GUARD_DIR=$W; GUARD_ERR=$W/logs/stderr.log
GUARD_BEFORE=chain_snap0; GUARD_AFTER=chain_snap1
chain_snap0() { G_C0=$(cpu_snap); G_T0=$(proc_ticks "${CH_ALL_A[@]}"); G_U0=$(proc_ticks "${CH_CLIENT_A[@]}"); G_H0=$(ha_cum "$CH_HASOCK"); }
chain_snap1() { G_C1=$(cpu_snap); G_T1=$(proc_ticks "${CH_ALL_A[@]}"); G_U1=$(proc_ticks "${CH_CLIENT_A[@]}"); G_H1=$(ha_cum "$CH_HASOCK"); }
guarded() { guard_run "$@"; }
# cpu_stats NREQ -> "load% proxy% steal% us/req(all) us/req(client) gwconns/req"
cpu_stats() {
  awk -v c0="$G_C0" -v c1="$G_C1" -v t="$((G_T1 - G_T0))" -v u="$((G_U1 - G_U0))" -v h="$((G_H1 - G_H0))" \
      -v hz="$CLK_TCK" -v n="$1" 'BEGIN{
    split(c0,a," "); split(c1,b," "); if (n < 1) n = 1;
    dl=b[2]-a[2]; dp=b[5]-a[5];
    printf "%.0f %.0f %.1f %.1f %.1f %.3f\n", dl?100*(b[1]-a[1])/dl:0, dp?100*(b[4]-a[4])/dp:0,
      (dl+dp)?100*((b[3]-a[3])+(b[6]-a[6]))/(dl+dp):0, t*1e6/hz/n, u*1e6/hz/n, h/n }'
}

# ---------------------------------------------------------------- TLS captures (tcpdump + tshark)
# cap_start NAME PORT...  - capture loopback traffic of the gateway PORTs into $W/pcap/NAME.pcap
cap_start() {
  local name=$1 f="" p; shift
  for p in "$@"; do f+="${f:+ or }port $p"; done
  rm -f "$W/pcap/$name.pcap"
  taskset -c "$LOADCPU" tcpdump -i lo -n -U -B 8192 -w "$W/pcap/$name.pcap" "tcp and ($f)" 2>"$W/logs/tcpdump-$name.err" &
  CAPPID=$!
  for _ in $(seq 1 100); do
    grep -q 'listening on' "$W/logs/tcpdump-$name.err" 2>/dev/null && return 0
    kill -0 "$CAPPID" 2>/dev/null || die "tcpdump failed: $(cat "$W/logs/tcpdump-$name.err")"
    sleep 0.1
  done
  die "tcpdump printed no 'listening on' line in 10 s"
}
cap_stop() {
  [ -n "${CAPPID:-}" ] || return 0
  kill -INT "$CAPPID" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$CAPPID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$CAPPID" 2>/dev/null || true
  wait "$CAPPID" 2>/dev/null || true
  CAPPID=""
}
# SslFrontendSessionReuse_pct of a haproxy stats socket (HAProxy's own figure, last second)
ha_reuse_pct() { ha_info "$1" SslFrontendSessionReuse_pct "?"; }

# ---------------------------------------------------------------- chains
# Each chain sets: CH_ALL_<s> (all proxy PIDs), CH_CLIENT_<s> (laptop-side PIDs),
# PROXY_<s> (host:port for absolute-form and CONNECT), TUNNEL_<s> / TUNNEL_TLS_<s>
# (tcp tunnel ports standing in for CONNECT), HASOCK_<s>.
declare -A CHALL CHCLIENT PROXY TUNNEL TUNNEL_TLS HASOCK GWPORTS

check_mtls() {  # check_mtls LABEL PORT  - TLS 1.3, client certificate required, record handshake
  local label=$1 port=$2 nocert
  # refused = no TLS session, or (nginx http: the handshake completes and nginx answers
  # "400 No required SSL certificate was sent") no answer from the origin
  nocert=$(curl -sk --max-time 5 -o /dev/null -w '%{http_code}' "https://127.0.0.1:$port/1k" 2>/dev/null) || true
  case $nocert in 2??) die "$label gateway served a TLS client without certificate (HTTP $nocert)" ;; esac
  if echo | timeout 10 openssl s_client -connect "127.0.0.1:$port" -servername localhost -CAfile "$C/ca.pem" \
       -cert "$C/client.pem" -key "$C/client-key.pem" -tls1_2 2>&1 | grep -q 'Protocol *: TLSv1.2'; then
    die "$label gateway accepted TLS 1.2"
  fi
  {
    echo "== $label gateway 127.0.0.1:$port (openssl s_client with the client certificate)"
    echo | timeout 10 openssl s_client -connect "127.0.0.1:$port" -servername localhost -CAfile "$C/ca.pem" \
      -cert "$C/client.pem" -key "$C/client-key.pem" -brief 2>&1 | head -12 || true
    echo "-- without client certificate (the TLS 1.3 server's alert comes after the client's Finished):"
    sleep 1 | timeout 10 openssl s_client -connect "127.0.0.1:$port" -servername localhost -CAfile "$C/ca.pem" \
      -brief 2>&1 | grep -iE 'error|alert|certificate required' | head -3 || true
    echo "-- curl -k without client certificate: $(curl -sk --max-time 5 -o /dev/null -w '%{http_code}' \
      "https://127.0.0.1:$port/1k" 2>&1; echo " exit=$?")"
  } >>"$OUT/handshake.txt"
}

start_direct() { CHALL[direct]=""; CHCLIENT[direct]=""; PROXY[direct]=""; HASOCK[direct]=""; GWPORTS[direct]=""; }

start_msc() {
  sed -e 's/^workers = 0/workers = 1/' -e "s#^access = .*#access = \"$MSC_ACCESS_LOG\"#" "$C/gateway.toml" >"$W/conf/msc-gateway.toml"
  sed -e 's/^workers = 0/workers = 1/' "$C/client.toml" >"$W/conf/msc-client.toml"
  printf '\n[control]\nlisten = "127.0.0.1:0"\n[log]\naccess = "%s"\n[runtime]\ndriver = "%s"\n' "$MSC_ACCESS_LOG" "$MSC_DRIVER" >>"$W/conf/msc-client.toml"
  # The peers have no per-identity cap; msc's (512 tunnels per client certificate by
  # default) would answer 429 past 512 of the HOLD_N idle CONNECT tunnels.
  printf '\n[runtime]\ndriver = "%s"\n[limits]\nmax_tunnels_per_identity = 100000\n' "$MSC_DRIVER" >>"$W/conf/msc-gateway.toml"
  sed -i "s#\"\\([a-z-]*\\.pem\\)\"#\"$C/\\1\"#" "$W/conf/msc-gateway.toml" "$W/conf/msc-client.toml"
  grep -q '^workers = 1' "$W/conf/msc-gateway.toml" || die "could not set workers = 1 in msc-gateway.toml"
  grep -q '^workers = 1' "$W/conf/msc-client.toml" || die "could not set workers = 1 in msc-client.toml"
  "$MSC" check-config "$W/conf/msc-gateway.toml" >/dev/null || die "msc gateway config invalid"
  "$MSC" check-config "$W/conf/msc-client.toml" >/dev/null || die "msc client config invalid"
  start_bg msc-gateway "$PROXYCPU" "$MSC" gateway --config "$W/conf/msc-gateway.toml"; local g=$LASTPID
  wait_line "$W/logs/msc-gateway.out" '^msc gateway ready' "$g"
  start_bg msc-client "$PROXYCPU" "$MSC" run --config "$W/conf/msc-client.toml"; local c=$LASTPID
  wait_line "$W/logs/msc-client.out" '^msc client ready' "$c"
  log "  $(cat "$W/logs/msc-gateway.out")"; log "  $(cat "$W/logs/msc-client.out")"
  grep -q "http 127.0.0.1:$P_MSC_HTTP https 127.0.0.1:$P_MSC_HTTPS" "$W/logs/msc-client.out" \
    || die "msc client is not on the expected ports: $(cat "$W/logs/msc-client.out")"
  CHALL[msc]="$c $g"; CHCLIENT[msc]=$c; PROXY[msc]=127.0.0.1:$P_MSC_HTTP; HASOCK[msc]=""; GWPORTS[msc]=$P_MSG
  check_200 msc-get -x "http://127.0.0.1:$P_MSC_HTTP" "http://$ORIGIN/1k"
  check_200 msc-connect -p -x "http://127.0.0.1:$P_MSC_HTTPS" "http://$ORIGIN/1k"
  check_200 msc-connect-tls -k -x "http://127.0.0.1:$P_MSC_HTTPS" "https://$ORIGIN_TLS/1k"
  check_mtls msc "$P_MSG"
}

start_haproxy() {  # bench/chains.sh's HAProxy chain, then its tunnels and the mTLS checks
  # the chain's own client first (handshake.txt describes its first gateway connection)
  start_haproxy_chain
  CHALL[haproxy]="$HAC_PID $HAS_PID"; CHCLIENT[haproxy]=$HAC_PID; PROXY[haproxy]=127.0.0.1:$P_HAC_HTTP
  TUNNEL[haproxy]=127.0.0.1:$P_HAC_TCP; TUNNEL_TLS[haproxy]=127.0.0.1:$P_HAC_TCP_TLS; HASOCK[haproxy]=$W/ha-server.sock
  GWPORTS[haproxy]="$P_HAS_HTTP $P_HAS_TCP $P_HAS_TCP_TLS"
  check_200 haproxy-tunnel "http://127.0.0.1:$P_HAC_TCP/1k"
  check_200 haproxy-tunnel-tls -k "https://127.0.0.1:$P_HAC_TCP_TLS/1k"
  check_mtls haproxy "$P_HAS_HTTP"
}

start_stunnel() {
  render "$H/stunnel-server.conf.in" "$W/conf/stunnel-server.conf"
  render "$H/stunnel-client.conf.in" "$W/conf/stunnel-client.conf"
  start_bg stunnel-server "$PROXYCPU" stunnel4 "$W/conf/stunnel-server.conf"; local s=$LASTPID
  start_bg stunnel-client "$PROXYCPU" stunnel4 "$W/conf/stunnel-client.conf"; local c=$LASTPID
  wait_port "$P_STS"; wait_port "$P_STC"; wait_port "$P_STC_TLS"
  CHALL[stunnel]="$c $s"; CHCLIENT[stunnel]=$c; PROXY[stunnel]=127.0.0.1:$P_STC
  TUNNEL[stunnel]=127.0.0.1:$P_STC; TUNNEL_TLS[stunnel]=127.0.0.1:$P_STC_TLS; HASOCK[stunnel]=""
  GWPORTS[stunnel]="$P_STS $P_STS_TLS"
  check_200 stunnel-get -x "http://127.0.0.1:$P_STC" "http://$ORIGIN/1k"
  check_200 stunnel-tunnel "http://127.0.0.1:$P_STC/1k"
  check_200 stunnel-tunnel-tls -k "https://127.0.0.1:$P_STC_TLS/1k"
  check_mtls stunnel "$P_STS"
}

start_nginxchain() {  # section "nginx": bench/chains.sh's nginx chain, then its tunnels and the mTLS checks
  start_nginx_chain
  local sw cw; sw=$(nginx_worker "$NXS_PID"); cw=$(nginx_worker "$NXC_PID")
  # master + worker of each side (the master holds the configuration and the listening sockets)
  CHALL[nginx]="$NXC_PID $cw $NXS_PID $sw"; CHCLIENT[nginx]="$NXC_PID $cw"; PROXY[nginx]=127.0.0.1:$P_NXC_HTTP
  TUNNEL[nginx]=127.0.0.1:$P_NXC_TCP; TUNNEL_TLS[nginx]=127.0.0.1:$P_NXC_TCP_TLS; HASOCK[nginx]=""
  GWPORTS[nginx]="$P_NXS_HTTP $P_NXS_TCP $P_NXS_TCP_TLS"
  check_200 nginx-tunnel "http://127.0.0.1:$P_NXC_TCP/1k"
  check_200 nginx-tunnel-tls -k "https://127.0.0.1:$P_NXC_TCP_TLS/1k"
  check_mtls nginx "$P_NXS_HTTP"
  check_mtls nginx-stream "$P_NXS_TCP"
}

start_squid() {  # squid forward proxy -> TLS cache_peer with client certificate -> squid gateway -> origin
  render "$H/squid-gw.conf.in" "$W/conf/squid-gw.conf"
  render "$H/squid-client.conf.in" "$W/conf/squid-client.conf"
  squid -k parse -f "$W/conf/squid-gw.conf" >>"$W/logs/stderr.log" 2>&1 || die "squid gateway config invalid"
  squid -k parse -f "$W/conf/squid-client.conf" >>"$W/logs/stderr.log" 2>&1 || die "squid client config invalid"
  # -N: no daemon, no kid processes (workers 1): one process per side, as root at start,
  # -n: a service name per instance (squid names its shared-memory segments after it),
  # then cache_effective_user (proxy)
  start_bg squid-gw "$PROXYCPU" squid -N -n mscsqgw -f "$W/conf/squid-gw.conf"; local s=$LASTPID
  start_bg squid-client "$PROXYCPU" squid -N -n mscsqcl -f "$W/conf/squid-client.conf"; local c=$LASTPID
  wait_port "$P_SQS"; wait_port "$P_SQC"
  CHALL[squid]="$c $s"; CHCLIENT[squid]=$c; PROXY[squid]=127.0.0.1:$P_SQC; HASOCK[squid]=""
  GWPORTS[squid]=$P_SQS
  check_200 squid-get -x "http://127.0.0.1:$P_SQC" "http://$ORIGIN/1k"
  check_200 squid-connect -p -x "http://127.0.0.1:$P_SQC" "http://$ORIGIN/1k"
  check_200 squid-connect-tls -k -x "http://127.0.0.1:$P_SQC" "https://$ORIGIN_TLS/1k"
  check_mtls squid "$P_SQS"
  # the gateway is a forward proxy on a TLS port: with the certificate it forwards, without it refuses
  check_200 squid-gw-with-cert --proxy-cacert "$C/ca.pem" --proxy-cert "$C/client.pem" --proxy-key "$C/client-key.pem" \
    -x "https://localhost:$P_SQS" "http://$ORIGIN/1k"
  if curl -s --max-time 5 -o /dev/null --proxy-insecure -x "https://127.0.0.1:$P_SQS" "http://$ORIGIN/1k"; then
    die "squid gateway forwarded for a client without certificate"
  fi
}

use_chain() {
  CH=$1; CH_ALL=${CHALL[$1]}; CH_CLIENT=${CHCLIENT[$1]}; CH_HASOCK=${HASOCK[$1]}
  read -ra CH_ALL_A <<<"$CH_ALL"; read -ra CH_CLIENT_A <<<"$CH_CLIENT"
}

# ---------------------------------------------------------------- workloads
# run_wrk WORKLOAD REP CLOSE  - 1 KiB GET, absolute-form, CONNS connections, DUR seconds
run_wrk() {
  local wl=$1 rep=$2 close=$3 target res rps p50 p99 errs req loadpct proxypct steal uspr cuspr gwpr
  target=${PROXY[$CH]:-$ORIGIN}
  guarded env WRK_PATH="http://$ORIGIN/1k" WRK_HOST="$ORIGIN" WRK_CLOSE="$close" \
    timeout $((DUR + 30)) taskset -c "$LOADCPU" wrk -t1 -c"$CONNS" -d"${DUR}s" --timeout 5s -s "$H/bench.lua" "http://$target/"
  { echo "== $CH $wl rep $rep foreign=$G_FOREIGN"; echo "$G_OUT"; } >>"$W/logs/wrk.log"
  res=$(echo "$G_OUT" | grep '^RESULT' || true)
  if [ -z "$res" ]; then
    log "wrk $CH $wl #$rep: no result"; emit "$CH" "$wl" "$rep" failed 1 "${G_FOREIGN%% *}" "wrk printed no result"; return 0
  fi
  read -r rps p50 p99 errs req < <(awk -v res="$res" 'BEGIN{
      n=split(res,kv," "); for(i=2;i<=n;i++){split(kv[i],x,"="); v[x[1]]=x[2]}
      printf "%.0f %.3f %.3f %d %d\n", v["requests"]/(v["duration_us"]/1e6), v["p50_us"]/1000, v["p99_us"]/1000,
        v["err_connect"]+v["err_read"]+v["err_write"]+v["err_status"]+v["err_timeout"], v["requests"] }')
  read -r loadpct proxypct steal uspr cuspr gwpr < <(cpu_stats "$req")
  emit_run "$wl" "$rep" "$rps" "$p50" "$p99" "$errs" "$req" "$loadpct" "$proxypct" "$steal" "$uspr" "$cuspr" "$gwpr" \
    "$(echo "$res" | grep -oE 'err_[a-z]+=[1-9][0-9]*' | tr '\n' ' ')"
}
emit_run() {  # WL REP RPS P50 P99 ERRS REQ LOAD% PROXY% STEAL% US/REQ CLIENTUS/REQ GW/REQ NOTE
  local f=${G_FOREIGN%% *}
  emit "$CH" "$1" "$2" rps "$3" "$f"; emit "$CH" "$1" "$2" p50_ms "$4" "$f"; emit "$CH" "$1" "$2" p99_ms "$5" "$f"
  emit "$CH" "$1" "$2" errors "$6" "$f" "${14:--}"; emit "$CH" "$1" "$2" requests "$7" "$f"
  emit "$CH" "$1" "$2" loadcpu_busy_pct "$8" "$f"; emit "$CH" "$1" "$2" proxycpu_busy_pct "$9" "$f"
  emit "$CH" "$1" "$2" steal_pct "${10}" "$f"
  if [ -n "$CH_ALL" ]; then
    emit "$CH" "$1" "$2" cpu_us_per_req "${11}" "$f"; emit "$CH" "$1" "$2" client_cpu_us_per_req "${12}" "$f"
  fi
  [ -n "$CH_HASOCK" ] && emit "$CH" "$1" "$2" gw_tls_conns_per_req "${13}" "$f"
  log "$CH $1 #$2: rps=$3 p50=${4}ms p99=${5}ms errors=$6 cpu$LOADCPU=$8% cpu$PROXYCPU=$9% proxy=${11}us/req client=${12}us/req foreign=$G_FOREIGN${14:+ (${14})}"
  alive "${CH_ALL_A[@]}" || die "$CH: a proxy process died during $1 (logs in $W/logs)"
}

# run_oha WORKLOAD REP oha-args...  - new connection (+CONNECT) + TLS to nginx per request
run_oha() {
  local wl=$1 rep=$2 parsed rps p50 p99 errs req loadpct proxypct steal uspr cuspr gwpr note; shift 2
  guarded timeout $((DUR + 30)) taskset -c "$LOADCPU" "$OHA" -z "${DUR}s" -c "$CONNS" --no-tui --output-format json "$@"
  { echo "== $CH $wl rep $rep foreign=$G_FOREIGN: oha $*"; echo "$G_OUT"; } >>"$W/logs/oha.log"
  # requests cut off by the -z deadline are not errors; non-200 answers are
  parsed=$(echo "$G_OUT" | python3 "$H/oha_parse.py") || true
  read -r rps p50 p99 errs req note <<<"$parsed"
  read -r loadpct proxypct steal uspr cuspr gwpr < <(cpu_stats "$req")
  [ "$note" = - ] && note=""
  emit_run "$wl" "$rep" "$rps" "$p50" "$p99" "$errs" "$req" "$loadpct" "$proxypct" "$steal" "$uspr" "$cuspr" "$gwpr" "${note//_/ }"
}

# run_dl WORKLOAD REP curl-args...  - one 100 MiB download
run_dl() {
  local wl=$1 rep=$2 code size speed f; shift 2
  guarded taskset -c "$LOADCPU" curl -s --max-time 60 -o /dev/null -w '%{http_code} %{size_download} %{speed_download}' "$@"
  read -r code size speed <<<"$G_OUT"
  f=${G_FOREIGN%% *}
  if [ "$code" != 200 ] || [ "$size" != $((100 << 20)) ]; then
    log "$CH $wl #$rep FAILED: '$G_OUT' (curl $*)"
    emit "$CH" "$wl" "$rep" failed 1 "$f" "curl: ${G_OUT:-no output} (curl $*)"; return 0
  fi
  emit "$CH" "$wl" "$rep" mb_per_s "$(awk -v s="$speed" 'BEGIN{printf "%.0f", s/1e6}')" "$f"
  emit "$CH" "$wl" "$rep" bytes "$size" "$f"
  if [ -n "$CH_ALL" ]; then
    emit "$CH" "$wl" "$rep" cpu_ticks $((G_T1 - G_T0)) "$f"; emit "$CH" "$wl" "$rep" client_cpu_ticks $((G_U1 - G_U0)) "$f"
  fi
  log "$CH $wl #$rep: $(awk -v s="$speed" 'BEGIN{printf "%.0f", s/1e6}') MB/s, chain cpu $((G_T1 - G_T0)) ticks, client $((G_U1 - G_U0)) ticks, foreign $G_FOREIGN"
  alive "${CH_ALL_A[@]}" || die "$CH: a proxy process died during $wl"
}

gw_pids() {  # the chain's PIDs that are not client-side
  local p
  for p in "${CH_ALL_A[@]}"; do [[ " ${CH_CLIENT_A[*]} " == *" $p "* ]] || echo "$p"; done
}
mem_emit() {  # mem_emit WORKLOAD [NOTE]  - VmRSS of client side and gateway side (summed over processes)
  local c g gpids=()
  mapfile -t gpids < <(gw_pids)
  c=$(mem_of VmRSS "${CH_CLIENT_A[@]}"); g=$(mem_of VmRSS "${gpids[@]}")
  emit "$CH" "$1" 1 rss_client_kib "$c" - "${2:--}"; emit "$CH" "$1" 1 rss_gateway_kib "$g" - "${2:--}"
  log "$CH $1: RSS client=${c} KiB gateway=${g} KiB ${2:-}"
}
mem_peak() {
  local gpids=()
  mapfile -t gpids < <(gw_pids)
  emit "$CH" mem_peak 1 rss_client_kib "$(mem_of VmHWM "${CH_CLIENT_A[@]}")"; emit "$CH" mem_peak 1 rss_gateway_kib "$(mem_of VmHWM "${gpids[@]}")"
}
# hold WORKLOAD PORT MODE  - HOLD_N idle connections, each carried one request first
hold() {
  local wl=$1 port=$2 mode=$3 got alivecnt
  rm -f "$W/hold.ready" "$W/hold.ready.alive"
  echo "== $CH $wl port=$port mode=$mode" >>"$W/logs/hold.log"
  taskset -c "$LOADCPU" python3 "$H/hold_conns.py" --port "$port" --mode "$mode" --target "$ORIGIN" \
    --n "$HOLD_N" --open-deadline 90 --hold 150 --ready "$W/hold.ready" 2>>"$W/logs/hold.log" &
  HOLDER=$!
  for _ in $(seq 1 1000); do [ -s "$W/hold.ready" ] && break; kill -0 "$HOLDER" 2>/dev/null || break; sleep 0.1; done
  got=$(cat "$W/hold.ready" 2>/dev/null || echo "0 0")
  sleep 3   # let both processes settle (buffers returned, handshakes finished)
  kill -USR1 "$HOLDER" 2>/dev/null || true
  for _ in $(seq 1 50); do [ -s "$W/hold.ready.alive" ] && break; sleep 0.1; done
  alivecnt=$(cat "$W/hold.ready.alive" 2>/dev/null || echo "? ?")
  mem_emit "$wl" "opened ok/err=${got/ //} still open/closed by proxy=${alivecnt/ //}"
  emit "$CH" "$wl" 1 conns_ok "${got%% *}" - "errors=${got##* }; still open at sampling=${alivecnt%% *}"
  kill "$HOLDER" 2>/dev/null || true; wait "$HOLDER" 2>/dev/null || true; HOLDER=""
  sleep 3   # let the proxies notice the closes, then record what they kept
  mem_emit "${wl}_after"
  alive "${CH_ALL_A[@]}" || die "$CH: a proxy process died while holding $HOLD_N connections"
}

run_mem() {
  case $CH in
    direct) return 0 ;;
    msc) hold mem_ka "$P_MSC_HTTP" absolute; hold mem_tunnel "$P_MSC_HTTPS" connect ;;
    haproxy) hold mem_ka "$P_HAC_HTTP" absolute; hold mem_tunnel "$P_HAC_TCP" origin ;;
    stunnel) hold mem_ka "$P_STC" absolute; hold mem_tunnel "$P_STC" origin ;;
    nginx) hold mem_ka "$P_NXC_HTTP" absolute; hold mem_tunnel "$P_NXC_TCP" origin ;;
    squid) hold mem_ka "$P_SQC" absolute; hold mem_tunnel "$P_SQC" connect ;;
  esac
}
run_connect() {  # new tunnel + TLS to nginx per request
  local rep=$1
  [ -x "$OHA" ] || { emit "$CH" connect_tls_close "$rep" skipped 1 - "oha not installed (BUILD_OHA=1 builds it)"; return 0; }
  case $CH in
    direct) run_oha connect_tls_close "$rep" --insecure --disable-keepalive "https://$ORIGIN_TLS/1k" ;;
    msc) run_oha connect_tls_close "$rep" --insecure --disable-keepalive -x "http://127.0.0.1:$P_MSC_HTTPS" "https://$ORIGIN_TLS/1k" ;;
    squid) run_oha connect_tls_close "$rep" --insecure --disable-keepalive -x "http://${PROXY[squid]}" "https://$ORIGIN_TLS/1k" ;;
    *) run_oha connect_tls_close "$rep" --insecure --disable-keepalive "https://${TUNNEL_TLS[$CH]}/1k" ;;
  esac
}
# Resumption probe: PROBE_N requests, each on a new browser connection (one after the
# other), while tcpdump captures the chain's client -> gateway hop; tshark then counts the
# gateway's ServerHellos (new gateway TLS connections) and those with the pre_shared_key
# extension (resumed). Phase "close": absolute-form GET with Connection: close on the
# chain's proxy port. Phase "tunnel": CONNECT + GET (msc, squid) or a GET through the
# chain's tcp tunnel port (HAProxy, nginx, stunnel). A chain that serves new browser
# connections from pooled gateway connections shows (close to) 0 new gateway TLS
# connections per request: that is what happened, and the resumption rate is then n/a.
probe_phase() {  # probe_phase WORKLOAD PORT MODE
  local wl=$1 port=$2 mode=$3 got ok hs res offered hapct="" note h0=0 h1=0
  # shellcheck disable=SC2086
  cap_start "probe-$CH-$wl" ${GWPORTS[$CH]}
  [ -n "$CH_HASOCK" ] && h0=$(ha_cum "$CH_HASOCK")
  got=$(taskset -c "$LOADCPU" python3 "$H/probe.py" --port "$port" --mode "$mode" --target "$ORIGIN" --n "$PROBE_N" \
        --deadline 60 2>>"$W/logs/probe.log") || got="0 $PROBE_N"
  if [ -n "$CH_HASOCK" ]; then
    # HAProxy's figure covers the last second; it means something only if the gateway
    # accepted TLS connections during the probe
    h1=$(ha_cum "$CH_HASOCK")
    if [ "$h1" -gt "$h0" ]; then hapct=$(ha_reuse_pct "$CH_HASOCK"); else hapct="n/a (no new TLS connection)"; fi
  fi
  sleep 1   # handshakes the chain starts right after the requests (pool refills) are counted too
  cap_stop
  # shellcheck disable=SC2086
  read -r hs res offered < <(python3 "$H/tlscap.py" count "$W/pcap/probe-$CH-$wl.pcap" ${GWPORTS[$CH]} 2>>"$W/logs/probe.log" || echo "? ? ?")
  ok=${got%% *}
  note="$PROBE_N requests on new connections to port $port ($mode): ${ok} ok, ${got##* } errors; gateway ServerHellos=$hs, resumed=$res; ClientHellos offering a session (pre_shared_key)=$offered"
  echo "== $CH $wl: $note${hapct:+; HAProxy SslFrontendSessionReuse_pct=$hapct}" >>"$W/logs/probe.log"
  emit "$CH" "$wl" 1 requests "$ok" - "$note"
  emit "$CH" "$wl" 1 gw_tls_handshakes "$hs" - "$note"
  emit "$CH" "$wl" 1 gw_tls_resumed "$res" - "$note"
  emit "$CH" "$wl" 1 gw_tls_psk_offered "$offered" - "$note"
  if [[ "$hs" =~ ^[0-9]+$ ]] && [ "$ok" -gt 0 ]; then
    emit "$CH" "$wl" 1 gw_tls_per_req "$(awk -v h="$hs" -v n="$ok" 'BEGIN{printf "%.2f", h/n}')" - "$note"
    if [ "$hs" -gt 0 ]; then
      emit "$CH" "$wl" 1 resumed_pct "$(awk -v h="$hs" -v r="$res" 'BEGIN{printf "%.1f", 100*r/h}')" - "$note"
    else
      emit "$CH" "$wl" 1 resumed_pct_na 1 - "no new gateway TLS connection: pooled gateway connections served every request"
    fi
  fi
  if [[ "$hapct" =~ ^[0-9]+$ ]]; then
    emit "$CH" "$wl" 1 ha_reuse_pct "$hapct" - "HAProxy gateway SslFrontendSessionReuse_pct right after the probe ($((h1 - h0)) TLS connections accepted)"
  fi
  log "$CH $wl probe: $note${hapct:+ (HAProxy SslFrontendSessionReuse_pct=$hapct)}"
}
run_probe() {
  case $CH in
    direct) return 0 ;;
    msc) probe_phase probe_close "$P_MSC_HTTP" absolute; probe_phase probe_tunnel "$P_MSC_HTTPS" connect ;;
    squid) probe_phase probe_close "$P_SQC" absolute; probe_phase probe_tunnel "$P_SQC" connect ;;
    *) probe_phase probe_close "${PROXY[$CH]##*:}" absolute; probe_phase probe_tunnel "${TUNNEL[$CH]##*:}" origin ;;
  esac
}
# handshake.txt: the first connection each chain's own client made to its gateway
# (captured while the chains started; the s_client checks ran after the chain's requests)
describe_first_handshakes() {
  local s p
  {
    echo
    echo "== the chains' client -> gateway hop, from a capture taken while the chains started (tcpdump + tshark)"
    echo "   (the first TLS connection on each gateway port was made by the chain's own client)"
    for s in $SECTIONS; do
      [ -n "${GWPORTS[$s]:-}" ] || continue
      echo "-- $s"
      for p in ${GWPORTS[$s]}; do python3 "$H/tlscap.py" first "$W/pcap/startup.pcap" "$p" 2>&1 || true; done
    done
  } >>"$OUT/handshake.txt"
}

# ---------------------------------------------------------------- main
[ "$(id -u)" = 0 ] || die "run as root (apt-get, taskset, ulimit)"
T_START=$SECONDS
mkdir -p "$W/logs"
[ "$INSTALL" = 1 ] && install_pkgs
for b in nginx wrk haproxy stunnel4 curl python3 openssl taskset ss squid tcpdump tshark; do have "$b" || die "$b not installed (INSTALL=1)"; done
build
# inherited by every process started here: room for 10,000+ connections on both sides of
# every proxy where the hard limit allows it (without CAP_SYS_RESOURCE it cannot be raised)
ulimit -n 100000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
peer_limits   # FDLIM, HA_MAXCONN, NGX_WCONN (bench/chains.sh)
# shellcheck disable=SC2086
check_ports $ALL_PORTS
prepare
: >"$RAW"
printf 'chain\tworkload\trep\tmetric\tvalue\tforeign_cpu_pct\tnote\n' >"$RAW"
: >"$OUT/handshake.txt"
echo "$CMDLINE" >"$OUT/command.txt"
{
  echo "date: $(date -u +%FT%TZ)"
  echo "command: $CMDLINE"
  dirty=""
  if git -C "$ROOT" status --porcelain 2>/dev/null | grep -qv '^??'; then dirty="(tracked files modified)"; fi
  echo "commit: $(git -C "$ROOT" rev-parse HEAD 2>/dev/null) $dirty"
  echo "branch: $(git -C "$ROOT" rev-parse --abbrev-ref HEAD 2>/dev/null)"
  echo "msc code: last commit outside bench/ and perf/: $(git -C "$ROOT" log -1 --format='%h %s' -- . ':!bench' ':!perf' 2>/dev/null)"
  echo "msc: $("$MSC" --version 2>/dev/null) ($MSC, built $(date -u -r "$MSC" +%FT%TZ))"
  echo "rustc: $(rustc --version 2>/dev/null || echo '?')"
  echo "kernel: $(uname -r); cpus: $(nproc); model: $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)"
  echo "memory: $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "pinning: load generator + nginx on cpu$LOADCPU; all proxy processes on cpu$PROXYCPU"
  echo "knobs: DUR=${DUR}s REPS=$REPS DL_REPS=$DL_REPS CONNS=$CONNS HOLD_N=$HOLD_N PORT_BASE=$PORT_BASE"
  echo "  SECTIONS=$SECTIONS; WORKLOADS=$WORKLOADS; FOREIGN_MAX=$FOREIGN_MAX% QUIET_WAIT=${QUIET_WAIT}s GUARD_BUDGET=${GUARD_BUDGET}s RETRIES=$RETRIES"
  echo "  msc: workers = 1 (client and gateway), access logs = $MSC_ACCESS_LOG, runtime.driver = $MSC_DRIVER, MONOIO_FORCE_LEGACY_DRIVER=${MONOIO_FORCE_LEGACY_DRIVER:-unset}"
  echo "  peers: ulimit -n $FDLIM; HAProxy maxconn $HA_MAXCONN, tune.bufsize $HA_BUFSIZE; nginx worker_connections $NGX_WCONN, proxy buffers 8 x $NGX_BUF; squid max_filedescriptors $FDLIM; probe $PROBE_N requests per phase"
  echo "loadavg at start: $(cat /proc/loadavg)"
  for p in nginx-light libnginx-mod-stream wrk haproxy stunnel4 squid-openssl openssl libssl3 curl python3 tcpdump tshark; do
    echo "pkg $p $(dpkg-query -W -f='${Version}' "$p" 2>/dev/null || echo '?')"
  done
  echo "oha: $("$OHA" --version 2>/dev/null || echo 'not installed')"
} >"$OUT/env.txt"
cat "$OUT/env.txt" >&2

start_origin
# shellcheck disable=SC2086
cap_start startup $P_MSG $P_HAS_HTTP $P_HAS_TCP $P_HAS_TCP_TLS $P_STS $P_STS_TLS $P_NXS_HTTP $P_NXS_TCP $P_NXS_TCP_TLS $P_SQS
for s in $SECTIONS; do
  case $s in direct|msc|haproxy|stunnel|squid) "start_$s" ;; nginx) start_nginxchain ;; *) die "unknown section $s" ;; esac
done
cap_stop
describe_first_handshakes
for s in $SECTIONS; do use_chain "$s"; [ -n "$CH_ALL" ] && mem_emit mem_idle; done
log "all chains up; sanity checks passed ($((SECONDS - T_START)) s)"

# Memory first, on fresh processes (load tests grow buffer pools).
if has_wl mem; then
  for s in $SECTIONS; do use_chain "$s"; run_mem; done
fi
# Load: interleaved, so that slow drifts of the machine hit every chain alike.
for wl in ka close connect; do
  has_wl "$wl" || continue
  log "== workload $wl"
  for r in $(seq 1 "$REPS"); do
    for s in $SECTIONS; do
      use_chain "$s"
      case $wl in
        ka) run_wrk get_ka "$r" 0 ;;
        close) run_wrk get_close "$r" 1 ;;
        connect) run_connect "$r" ;;
      esac
    done
  done
done
if has_wl dl; then
  log "== workload dl (100 MiB)"
  for r in $(seq 1 "$DL_REPS"); do
    for s in $SECTIONS; do
      use_chain "$s"
      case $s in
        direct) run_dl dl_get "$r" "http://$ORIGIN/100m" ;;
        msc) run_dl dl_get "$r" -x "http://127.0.0.1:$P_MSC_HTTP" "http://$ORIGIN/100m"
             run_dl dl_connect "$r" -p -x "http://127.0.0.1:$P_MSC_HTTPS" "http://$ORIGIN/100m" ;;
        squid) run_dl dl_get "$r" -x "http://${PROXY[squid]}" "http://$ORIGIN/100m"
               run_dl dl_connect "$r" -p -x "http://${PROXY[squid]}" "http://$ORIGIN/100m" ;;
        *) run_dl dl_get "$r" -x "http://${PROXY[$s]}" "http://$ORIGIN/100m"
           run_dl dl_connect "$r" "http://${TUNNEL[$s]}/100m" ;;
      esac
    done
  done
fi
if has_wl probe; then
  log "== resumption probe ($PROBE_N new connections per phase)"
  for s in $SECTIONS; do use_chain "$s"; run_probe; done
fi
for s in $SECTIONS; do use_chain "$s"; [ -n "$CH_ALL" ] && mem_peak; done

echo "loadavg at end: $(cat /proc/loadavg)" >>"$OUT/env.txt"
echo "duration: $((SECONDS - T_START)) s (guard waits and repeats: ${GUARD_SPENT} s)" >>"$OUT/env.txt"
cleanup; STARTED=()

python3 "$H/summarize.py" "$RAW" "$OUT/env.txt" --foreign-max "$FOREIGN_MAX" >"$OUT/summary.md"
cat "$OUT/summary.md"
log "done in $((SECONDS - T_START)) s; raw: $RAW  summary: $OUT/summary.md  scratch/logs: $W"
