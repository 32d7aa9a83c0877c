# shellcheck shell=bash disable=SC2034  # sourced: the variables are used by the callers and the config templates
# Chain set-up shared by bench/compare.sh and bench/measure/lib.sh (latency.sh,
# coldstart.sh, tunnels.sh); sourced, not run, after bench/proc.sh. Holds what both
# start the same way: the port layout and peer tuning that the bench/compare/*.in
# templates use, render, the nginx origin, the HAProxy chain and the nginx proxy chain.
# Before sourcing set PORT_BASE; before calling the starters: H (bench/compare), W
# (scratch: conf/, logs/), C (certificates), LOADCPU, PROXYCPU, STARTED=() (proc.sh).
# Every wait is bounded; only processes started here are stopped, by PID (by the caller).

# Ports: one layout for every script (each script has its own PORT_BASE).
: "${PORT_BASE:?set PORT_BASE before sourcing bench/chains.sh}"
P_NGX=$((PORT_BASE + 80)); P_NGX_TLS=$((PORT_BASE + 443))
P_MSG=$((PORT_BASE + 100)); P_MSC_HTTP=$((PORT_BASE + 101)); P_MSC_HTTPS=$((PORT_BASE + 102))
P_HAC_HTTP=$((PORT_BASE + 200)); P_HAC_TCP=$((PORT_BASE + 201)); P_HAC_TCP_TLS=$((PORT_BASE + 202))
P_HAS_HTTP=$((PORT_BASE + 210)); P_HAS_TCP=$((PORT_BASE + 211)); P_HAS_TCP_TLS=$((PORT_BASE + 212))
P_STC=$((PORT_BASE + 300)); P_STC_TLS=$((PORT_BASE + 301)); P_STS=$((PORT_BASE + 310)); P_STS_TLS=$((PORT_BASE + 311))
P_NXC_HTTP=$((PORT_BASE + 400)); P_NXC_TCP=$((PORT_BASE + 401)); P_NXC_TCP_TLS=$((PORT_BASE + 402))
P_NXS_HTTP=$((PORT_BASE + 410)); P_NXS_TCP=$((PORT_BASE + 411)); P_NXS_TCP_TLS=$((PORT_BASE + 412))
P_SQC=$((PORT_BASE + 500)); P_SQS=$((PORT_BASE + 510))
ORIGIN=127.0.0.1:$P_NGX
ORIGIN_TLS=127.0.0.1:$P_NGX_TLS

# Peer tuning knobs (HAProxy tune.bufsize, nginx proxy buffers); the descriptor-derived
# values are set by peer_limits once ulimit -n is final.
HA_BUFSIZE=${HA_BUFSIZE:-65536}
NGX_BUF=${NGX_BUF:-64k}
[[ $NGX_BUF =~ ^[1-9][0-9]*k$ ]] || { echo "NGX_BUF must be a size in KiB such as 64k (got '$NGX_BUF')" >&2; exit 2; }
NGX_BUSY=$(( 2 * ${NGX_BUF%k} ))k          # proxy_busy_buffers_size: two buffers
NGX_STREAM_SO=/usr/lib/nginx/modules/ngx_stream_module.so
# peer_limits: FDLIM (ulimit -n) and what follows from it. HAProxy needs 2 descriptors
# per connection (maxconn) plus its listeners; nginx's worker_connections and squid's
# max_filedescriptors count descriptors themselves.
peer_limits() {
  FDLIM=$(ulimit -n)
  HA_MAXCONN=$(( (FDLIM - 100) / 2 < 20000 ? (FDLIM - 100) / 2 : 20000 ))
  NGX_WCONN=$(( FDLIM - 100 < 40000 ? FDLIM - 100 : 40000 ))
}

check_ports() {  # check_ports PORT...  - dies if any is already listening
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

# start_origin -> NGINX_PID: the nginx origin (bench/compare/nginx.conf.in, $W/www over
# http on ORIGIN and https on ORIGIN_TLS) on LOADCPU, checked with a GET of each kind.
start_origin() {
  render "$H/nginx.conf.in" "$W/conf/nginx.conf"
  start_bg nginx "$LOADCPU" nginx -c "$W/conf/nginx.conf" -g 'daemon off;'
  NGINX_PID=$LASTPID
  wait_port "$P_NGX"; wait_port "$P_NGX_TLS"
  check_200 nginx "http://$ORIGIN/1k"
  check_200 nginx-absolute-form --request-target "http://$ORIGIN/1k" "http://$ORIGIN/"
  check_200 nginx-tls -k "https://$ORIGIN_TLS/1k"
}

# HAProxy: client (http mode, pooled mTLS, http-reuse always; + tcp-mode tunnels) ->
# HAProxy mTLS gateway -> origin, from bench/compare/haproxy-{client,server}.cfg.in.
haproxy_configs() {  # $W/conf/haproxy-{server,client}.cfg, checked with haproxy -c
  peer_limits
  render "$H/haproxy-server.cfg.in" "$W/conf/haproxy-server.cfg"
  render "$H/haproxy-client.cfg.in" "$W/conf/haproxy-client.cfg"
  haproxy -c -f "$W/conf/haproxy-server.cfg" >/dev/null || die "haproxy server config invalid"
  haproxy -c -f "$W/conf/haproxy-client.cfg" >/dev/null || die "haproxy client config invalid"
}
start_haproxy_gateway() {  # -> HAS_PID (after haproxy_configs)
  start_bg haproxy-server "$PROXYCPU" haproxy -db -f "$W/conf/haproxy-server.cfg"; HAS_PID=$LASTPID
  wait_port "$P_HAS_HTTP"
}
start_haproxy_chain() {  # -> HAC_PID (client) HAS_PID (gateway); checks a GET through the chain
  haproxy_configs
  start_haproxy_gateway
  start_bg haproxy-client "$PROXYCPU" haproxy -db -f "$W/conf/haproxy-client.cfg"; HAC_PID=$LASTPID
  wait_port "$P_HAC_HTTP"; wait_port "$P_HAC_TCP_TLS"
  check_200 haproxy-get -x "http://127.0.0.1:$P_HAC_HTTP" "http://$ORIGIN/1k"
}

# nginx: reverse proxy (pooled mTLS upstream, upstream keepalive; + stream-module tcp
# tunnels) -> nginx mTLS gateway -> origin, from bench/compare/nginx-{client,gw}.conf.in.
nginx_worker() {  # nginx_worker MASTERPID -> the worker's PID (worker_processes 1), max 15 s
  local m=$1 w
  for _ in $(seq 1 150); do
    w=$(pgrep -P "$m" | head -1 || true)
    [ -n "$w" ] && { echo "$w"; return 0; }
    sleep 0.1
  done
  die "nginx master $m started no worker"
}
start_nginx_chain() {  # -> NXC_PID NXS_PID (the masters); checks a GET through the chain
  [ -e "$NGX_STREAM_SO" ] || die "$NGX_STREAM_SO missing (apt-get install libnginx-mod-stream)"
  peer_limits
  render "$H/nginx-gw.conf.in" "$W/conf/nginx-gw.conf"
  render "$H/nginx-client.conf.in" "$W/conf/nginx-client.conf"
  nginx -t -q -c "$W/conf/nginx-gw.conf" -g 'daemon off;' || die "nginx gateway config invalid"
  nginx -t -q -c "$W/conf/nginx-client.conf" -g 'daemon off;' || die "nginx client config invalid"
  start_bg nginx-gw "$PROXYCPU" nginx -c "$W/conf/nginx-gw.conf" -g 'daemon off;'; NXS_PID=$LASTPID
  start_bg nginx-client "$PROXYCPU" nginx -c "$W/conf/nginx-client.conf" -g 'daemon off;'; NXC_PID=$LASTPID
  wait_port "$P_NXS_HTTP"; wait_port "$P_NXC_HTTP"; wait_port "$P_NXC_TCP"; wait_port "$P_NXC_TCP_TLS"
  check_200 nginx-get -x "http://127.0.0.1:$P_NXC_HTTP" "http://$ORIGIN/1k"
}
