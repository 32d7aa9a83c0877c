# shellcheck shell=bash disable=SC2034  # sourced: variables are used by the scripts and the config templates
# Shared by bench/latency.sh, bench/coldstart.sh and bench/tunnels.sh (sourced).
# Sets up the chains of bench/compare.sh (same certificates from `msc pki init`, the
# same nginx origin and HAProxy templates from bench/compare/, rendered the same way)
# on ports of their own, so these scripts can run while compare.sh runs.
#
# Before sourcing set: NAME (results go to perf/runs/<UTC date>/NAME), PORT_BASE.
# Knobs common to all three: LOADCPU PROXYCPU INSTALL BUILD MSC OHA W OUT
#                            FOREIGN_MAX QUIET_WAIT GUARD_BUDGET (contention guard)
# Every wait is bounded; only processes started here are stopped, by PID.

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)   # bench/
ROOT=$(cd "$HERE/.." && pwd)
H=$HERE/compare          # compare.sh's templates and helpers (nginx, HAProxy, pstat.py)
M=$HERE/measure          # ours
LOADCPU=${LOADCPU:-0}
PROXYCPU=${PROXYCPU:-1}
INSTALL=${INSTALL:-1}
BUILD=${BUILD:-1}
MSC=${MSC:-${CARGO_TARGET_DIR:-$ROOT/target}/release/msc}
OHA=${OHA:-$(command -v oha || echo /opt/oha/bin/oha)}
W=${W:-/tmp/msc-$NAME}
OUT=${OUT:-$ROOT/perf/runs/$(date -u +%F)/$NAME}
FOREIGN_MAX=${FOREIGN_MAX:-5}
QUIET_WAIT=${QUIET_WAIT:-30}
GUARD_BUDGET=${GUARD_BUDGET:-300}
C=$W/certs
RAW=$OUT/raw.tsv

# Ports (the names compare.sh's templates use).
P_NGX=$((PORT_BASE + 80)); P_NGX_TLS=$((PORT_BASE + 443))
P_MSG=$((PORT_BASE + 100)); P_MSC_HTTP=$((PORT_BASE + 101)); P_MSC_HTTPS=$((PORT_BASE + 102))
P_HAC_HTTP=$((PORT_BASE + 200)); P_HAC_TCP=$((PORT_BASE + 201)); P_HAC_TCP_TLS=$((PORT_BASE + 202))
P_HAS_HTTP=$((PORT_BASE + 210)); P_HAS_TCP=$((PORT_BASE + 211)); P_HAS_TCP_TLS=$((PORT_BASE + 212))
P_NXC=$((PORT_BASE + 400)); P_NXS=$((PORT_BASE + 410))
# the same ports under the names bench/compare's own nginx chain templates use
P_NXC_HTTP=$P_NXC; P_NXC_TCP=$((PORT_BASE + 401)); P_NXC_TCP_TLS=$((PORT_BASE + 402))
P_NXS_HTTP=$P_NXS; P_NXS_TCP=$((PORT_BASE + 411)); P_NXS_TCP_TLS=$((PORT_BASE + 412))
ORIGIN=127.0.0.1:$P_NGX
# Peer tuning, as compare.sh sets it for its templates (HAProxy tune.bufsize, nginx proxy
# buffers); the descriptor-derived values are set by peer_limits once ulimit -n is final.
HA_BUFSIZE=${HA_BUFSIZE:-65536}
NGX_BUF=${NGX_BUF:-64k}
[[ $NGX_BUF =~ ^[1-9][0-9]*k$ ]] || { echo "NGX_BUF must be a size in KiB such as 64k (got '$NGX_BUF')" >&2; exit 2; }
NGX_BUSY=$(( 2 * ${NGX_BUF%k} ))k
peer_limits() {
  FDLIM=$(ulimit -n)
  HA_MAXCONN=$(( (FDLIM - 100) / 2 < 20000 ? (FDLIM - 100) / 2 : 20000 ))
  NGX_WCONN=$(( FDLIM - 100 < 40000 ? FDLIM - 100 : 40000 ))
}

# shellcheck source=bench/proc.sh
. "$HERE/proc.sh"

# knob_cmdline SCRIPT KNOB... -> CMDLINE (the exact reproducing command)
knob_cmdline() {
  local s=$1 k; shift
  CMDLINE=""
  for k in "$@"; do [ -n "${!k+x}" ] && CMDLINE+="$k=$(printf '%q' "${!k}") "; done
  CMDLINE+="bash $s"
}

install_pkgs() {  # install_pkgs BIN:PACKAGE...
  local need=() pkgs=() bp
  for bp in "$@"; do have "${bp%%:*}" || { need+=("${bp%%:*}"); pkgs+=("${bp#*:}"); }; done
  [ ${#need[@]} -eq 0 ] && return 0
  [ "$INSTALL" = 1 ] || die "missing: ${need[*]} (INSTALL=1 installs them)"
  log "installing Debian packages (missing: ${need[*]})"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${pkgs[@]}" >/dev/null
}

build_msc() {
  if [ "$BUILD" = 1 ]; then
    log "building msc (cargo build --release)"
    (cd "$ROOT" && cargo build --release --quiet) || die "cargo build failed"
  fi
  [ -x "$MSC" ] || die "msc binary not found at $MSC (BUILD=1 or MSC=path)"
}

check_ports() {
  local p busy=()
  for p in "$@"; do [ -n "$(ss -Htln "sport = :$p")" ] && busy+=("$p"); done
  [ ${#busy[@]} -eq 0 ] || die "ports already in use: ${busy[*]} (set PORT_BASE to move all ports)"
}

render() {  # render TEMPLATE OUTFILE - every @VAR@ becomes the shell variable VAR (which must be set)
  local v args=()
  for v in $(grep -oE '@[A-Z_]+@' "$1" | tr -d @ | sort -u); do
    [ -n "${!v+x}" ] || die "$1 uses @$v@, which is not set"
    args+=(-e "s#@$v@#${!v}#g")
  done
  sed "${args[@]}" "$1" >"$2"
}

# prepare: scratch dirs, the 1 KiB file, one PKI for every chain (ECDSA P-256).
prepare() {
  mkdir -p "$W"/{logs,www,conf,nginx-tmp} "$W"/nginx-{client,gw}-tmp/{body,proxy,fastcgi,uwsgi,scgi} "$OUT"
  chmod 755 "$W" "$W/www"
  [ "$(stat -c %s "$W/www/1k" 2>/dev/null)" = 1024 ] || head -c 1024 /dev/urandom >"$W/www/1k"
  chmod 644 "$W/www/"*
  find "$W/logs" -type f -delete
  rm -rf "$C"
  "$MSC" pki init --dir "$C" --gateway-listen "127.0.0.1:$P_MSG" --http-port "$P_MSC_HTTP" \
    --https-port "$P_MSC_HTTPS" >"$W/logs/pki.log" 2>&1 || die "msc pki init failed: $(cat "$W/logs/pki.log")"
  cat "$C/gateway.pem" "$C/gateway-key.pem" >"$C/gateway-combined.pem"
  cat "$C/client.pem" "$C/client-key.pem" >"$C/client-combined.pem"
}

STARTED=()
save_logs() {
  [ -d "$OUT" ] || return 0
  mkdir -p "$OUT/configs" "$OUT/logs"
  cp "$W/conf/"* "$OUT/configs/" 2>/dev/null || true
  local f
  for f in "$W/logs/"*; do [ -s "$f" ] && tail -n 200 "$f" >"$OUT/logs/$(basename "$f")"; done
  return 0
}
stop_all() { local p; for p in "${STARTED[@]:-}"; do [ -n "$p" ] && stop_pid "$p"; done; STARTED=(); }
on_exit() { save_logs; stop_all; }
trap on_exit EXIT
trap 'exit 130' INT TERM


# ---------------------------------------------------------------- chains
start_origin() {  # nginx from compare.sh's template, on LOADCPU
  render "$H/nginx.conf.in" "$W/conf/nginx.conf"
  start_bg nginx "$LOADCPU" nginx -c "$W/conf/nginx.conf" -g 'daemon off;'
  NGINX_PID=$LASTPID
  wait_port "$P_NGX"
  check_200 nginx "http://$ORIGIN/1k"
  check_200 nginx-absolute-form -x "http://$ORIGIN" "http://$ORIGIN/1k"
}

# msc_configs SUFFIX GWPORT HTTP HTTPS [CLIENT-EXTRA] [GATEWAY-EXTRA]: writes
# $W/conf/msc-client$SUFFIX.toml and msc-gateway$SUFFIX.toml from pki init's files
# (workers = MSC_WORKERS, access logs off, control API on a free port, no control socket).
msc_configs() {
  local sfx=$1 gw=$2 http=$3 https=$4 cx=${5:-} gx=${6:-}
  local cf=$W/conf/msc-client$sfx.toml gf=$W/conf/msc-gateway$sfx.toml
  sed -e "s/^workers = 0/workers = ${MSC_WORKERS:-1}/" -e 's#^access = .*#access = "off"#' \
      -e "s#^listen = .*#listen = \"127.0.0.1:$gw\"#" "$C/gateway.toml" >"$gf"
  sed -e "s/^workers = 0/workers = ${MSC_WORKERS:-1}/" -e "s#^address = .*#address = \"127.0.0.1:$gw\"#" \
      -e "s#^http_port = .*#http_port = $http#" -e "s#^https_port = .*#https_port = $https#" "$C/client.toml" >"$cf"
  printf '\n[control]\nlisten = "127.0.0.1:0"\nsocket = ""\n[log]\naccess = "off"\n%b' "$cx" >>"$cf"
  printf '\n%b' "$gx" >>"$gf"
  sed -i "s#\"\\([a-z-]*\\.pem\\)\"#\"$C/\\1\"#" "$gf" "$cf"
  "$MSC" check-config "$gf" >/dev/null || die "msc gateway config $gf invalid"
  "$MSC" check-config "$cf" >/dev/null || die "msc client config $cf invalid"
}
start_msc_gateway() {  # start_msc_gateway SUFFIX -> GW_PID
  start_bg "msc-gateway$1" "$PROXYCPU" "$MSC" gateway --config "$W/conf/msc-gateway$1.toml"; GW_PID=$LASTPID
  wait_line "$W/logs/msc-gateway$1.out" '^msc gateway ready' "$GW_PID"
}
start_msc_client() {  # start_msc_client SUFFIX -> CL_PID
  start_bg "msc-client$1" "$PROXYCPU" "$MSC" run --config "$W/conf/msc-client$1.toml"; CL_PID=$LASTPID
  wait_line "$W/logs/msc-client$1.out" '^msc client ready' "$CL_PID"
}
start_msc() {  # the compare.sh msc chain: client (http slot P_MSC_HTTP) -> gateway P_MSG -> nginx
  msc_configs "" "$P_MSG" "$P_MSC_HTTP" "$P_MSC_HTTPS" "${MSC_CLIENT_EXTRA:-}" "${MSC_GATEWAY_EXTRA:-}"
  start_msc_gateway ""; start_msc_client ""
  MSC_PIDS="$CL_PID $GW_PID"
  check_200 msc-get -x "http://127.0.0.1:$P_MSC_HTTP" "http://$ORIGIN/1k"
  check_200 msc-connect -p -x "http://127.0.0.1:$P_MSC_HTTPS" "http://$ORIGIN/1k"
}
start_haproxy() {  # compare.sh's HAProxy templates, rendered the same way
  peer_limits
  render "$H/haproxy-server.cfg.in" "$W/conf/haproxy-server.cfg"
  render "$H/haproxy-client.cfg.in" "$W/conf/haproxy-client.cfg"
  haproxy -c -f "$W/conf/haproxy-server.cfg" >/dev/null || die "haproxy server config invalid"
  haproxy -c -f "$W/conf/haproxy-client.cfg" >/dev/null || die "haproxy client config invalid"
  start_bg haproxy-server "$PROXYCPU" haproxy -db -f "$W/conf/haproxy-server.cfg"; local s=$LASTPID
  start_bg haproxy-client "$PROXYCPU" haproxy -db -f "$W/conf/haproxy-client.cfg"; local c=$LASTPID
  wait_port "$P_HAS_HTTP"; wait_port "$P_HAC_HTTP"
  HAPROXY_PIDS="$c $s"
  check_200 haproxy-get -x "http://127.0.0.1:$P_HAC_HTTP" "http://$ORIGIN/1k"
}
# nginx reverse proxy (pooled mTLS upstream) -> nginx mTLS terminator -> origin, from
# bench/compare's nginx chain templates (tuned with the peers). NGINX_TEMPLATES says which.
start_nginxproxy() {
  local tc=$H/nginx-client.conf.in tg=$H/nginx-gw.conf.in
  NGINX_TEMPLATES="$tc $tg"
  peer_limits
  render "$tg" "$W/conf/nginx-gateway.conf"
  render "$tc" "$W/conf/nginx-client.conf"
  nginx -t -q -c "$W/conf/nginx-gateway.conf" -g 'daemon off;' || die "nginx gateway config invalid ($tg)"
  nginx -t -q -c "$W/conf/nginx-client.conf" -g 'daemon off;' || die "nginx client config invalid ($tc)"
  start_bg nginx-gateway "$PROXYCPU" nginx -c "$W/conf/nginx-gateway.conf" -g 'daemon off;'; local s=$LASTPID
  start_bg nginx-client "$PROXYCPU" nginx -c "$W/conf/nginx-client.conf" -g 'daemon off;'; local c=$LASTPID
  wait_port "$P_NXS"; wait_port "$P_NXC"
  NGINXPROXY_PIDS="$c $s"
  # nginx finishes the TLS 1.3 handshake without a client certificate and answers 400
  local code
  code=$(curl -sk --max-time 5 -o /dev/null -w '%{http_code}' "https://127.0.0.1:$P_NXS/1k" || true)
  [ "$code" != 200 ] || die "nginx gateway served a TLS client without certificate"
  check_200 nginxproxy-get -x "http://127.0.0.1:$P_NXC" "http://$ORIGIN/1k"
}

# ---------------------------------------------------------------- contention guard
# bench/guard.sh (shared with compare.sh and the other scripts; method in perf/compare.md):
# before a measured run wait (at most QUIET_WAIT s, GUARD_BUDGET s in all) until CPU used
# by processes outside this script's tree and kernel threads is below FOREIGN_MAX % of
# one core; measure that foreign CPU during the run (guard_begin / guard_end -> FOREIGN).
# These runs are recorded and flagged, not repeated (a latency or tunnel phase is long).
# shellcheck source=bench/guard.sh
. "$HERE/guard.sh"
guard_begin() { GUARD_DIR=$W; [ "${GUARD:-1}" = 1 ] && wait_quiet; fsnap "$W/f0"; }
guard_end() { fsnap "$W/f1"; FOREIGN=$(fdiff "$W/f0" "$W/f1"); }

write_env() {  # write_env EXTRA-LINES
  {
    echo "date: $(date -u +%FT%TZ)"
    echo "command: $CMDLINE"
    local dirty=""
    if git -C "$ROOT" status --porcelain 2>/dev/null | grep -qv '^??'; then dirty="(tracked files modified)"; fi
    echo "commit: $(git -C "$ROOT" rev-parse HEAD 2>/dev/null) $dirty"
    echo "msc: $("$MSC" --version 2>/dev/null) ($MSC, built $(date -u -r "$MSC" +%FT%TZ))"
    echo "kernel: $(uname -r); cpus: $(nproc); model: $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)"
    echo "memory: $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo); open files: soft $(ulimit -Sn) hard $(ulimit -Hn)"
    echo "pinning: load generator + nginx origin on cpu$LOADCPU; proxy processes on cpu$PROXYCPU"
    echo "guard: FOREIGN_MAX=$FOREIGN_MAX% QUIET_WAIT=${QUIET_WAIT}s GUARD_BUDGET=${GUARD_BUDGET}s (figures with foreign CPU above FOREIGN_MAX are contended)"
    echo "loadavg at start: $(cat /proc/loadavg)"
    local p
    for p in nginx-light haproxy curl python3; do echo "pkg $p $(dpkg-query -W -f='${Version}' "$p" 2>/dev/null || echo '?')"; done
    printf '%b' "${1:-}"
  } >"$OUT/env.txt"
  echo "$CMDLINE" >"$OUT/command.txt"
}
