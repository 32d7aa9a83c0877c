# shellcheck shell=bash disable=SC2034  # sourced: variables are used by the scripts and the config templates
# Shared by bench/latency.sh, bench/coldstart.sh and bench/tunnels.sh (sourced).
# Sets up the chains of bench/compare.sh (same certificates from `msc pki init`; the
# nginx origin, HAProxy and nginx chains from bench/chains.sh, which compare.sh uses too)
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

# shellcheck source=bench/proc.sh
. "$HERE/proc.sh"
# Ports (compare.sh's layout from PORT_BASE), ORIGIN, peer tuning (HA_BUFSIZE, NGX_BUF,
# peer_limits), check_ports, render and the chain starters: bench/chains.sh.
# shellcheck source=bench/chains.sh
. "$HERE/chains.sh"

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
# (the nginx origin, HAProxy and nginx chains: bench/chains.sh)
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
# the nginx chain, plus a check that its gateway refuses a TLS client without certificate
start_nginxproxy() {
  start_nginx_chain
  # nginx finishes the TLS 1.3 handshake without a client certificate and answers 400
  local code
  code=$(curl -sk --max-time 5 -o /dev/null -w '%{http_code}' "https://127.0.0.1:$P_NXS_HTTP/1k" || true)
  [ "$code" != 200 ] || die "nginx gateway served a TLS client without certificate"
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
