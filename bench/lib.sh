# shellcheck shell=bash
# Shared by the bench scripts (sourced, not run, from the repository root).
# setup: builds the release binary (unless BUILD=0 or MSC names a binary) and
# sets MSC (the msc binary), work (a scratch directory, removed at exit) and pids
# (processes stopped at exit).

setup() {
  if [ -z "${MSC:-}" ]; then
    [ "${BUILD:-1}" = 0 ] || cargo build --release --quiet
    MSC=$PWD/target/release/msc
  fi
  work=$(mktemp -d)
  pids=()
  trap cleanup EXIT
}

cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}

# start NAME ARGS...: runs `msc ARGS...` in the background (pinned to CPU
# $CPU when set), output in $work/NAME.out/.err, and waits (bounded, 10 s)
# for its ready line.
start() {
  local name=$1; shift
  if [ -n "${CPU:-}" ]; then
    taskset -c "$CPU" "$MSC" "$@" >"$work/$name.out" 2>"$work/$name.err" &
  else
    "$MSC" "$@" >"$work/$name.out" 2>"$work/$name.err" &
  fi
  pids+=($!)
  for _ in $(seq 1 200); do
    grep -q ready "$work/$name.out" 2>/dev/null && return
    sleep 0.05
  done
  echo "$name did not start" >&2
  cat "$work/$name.err" >&2
  exit 1
}

# The address printed after "listening on" in NAME's ready line.
listening_on() { sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$work/$1.out"; }

# cmdline SCRIPT KNOB... [-- ARG...]: the reproducing command, with every knob
# that is set in the environment (e.g. "DUR=3 RUNS=1 bash bench/transfer.sh").
cmdline() {
  local script=$1 k line=""; shift
  while [ $# -gt 0 ] && [ "$1" != -- ]; do
    k=$1; shift
    [ -n "${!k+x}" ] && line+="$k=$(printf '%q' "${!k}") "
  done
  [ "${1:-}" = -- ] && shift
  line+="bash $script"
  for k in "$@"; do line+=" $(printf '%q' "$k")"; done
  echo "$line"
}

# record_env DIR COMMAND [EXTRA...]: DIR/command.txt and DIR/env.txt (date,
# command, commit, binary, machine, contention guard knobs, extra lines).
record_env() {
  local dir=$1 cmd=$2 l; shift 2
  mkdir -p "$dir"
  echo "$cmd" >"$dir/command.txt"
  {
    echo "date: $(date -u +%FT%TZ)"
    echo "command: $cmd"
    echo "commit: $(git rev-parse HEAD 2>/dev/null)$(git status --porcelain 2>/dev/null | grep -qv '^??' && echo ' (tracked files modified)')"
    echo "msc: $("$MSC" --version 2>/dev/null) ($MSC, built $(date -u -r "$MSC" +%FT%TZ))"
    echo "kernel: $(uname -r); cpus: $(nproc); model: $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)"
    echo "loadavg at start: $(cat /proc/loadavg)"
    declare -F guard_knobs >/dev/null && guard_knobs
    for l in "$@"; do echo "$l"; done
  } >"$dir/env.txt"
}

# origin_conf DIR ADDR SENDFILE [TLS_ADDR CERT KEY]: writes DIR/nginx.conf, an nginx
# origin for the load scripts (1 worker, no access log, long keep-alive) serving DIR/www
# on ADDR and, with TLS_ADDR, over TLS there with CERT and KEY; temporary files in
# DIR/tmp (the caller makes it), pid and error log in DIR. SENDFILE=1 turns sendfile
# and tcp_nopush on (bench/ab.sh's 100 MiB downloads); 0 leaves them off.
origin_conf() {
  local dir=$1 addr=$2 sendfile=$3 tls=${4:-} cert=${5:-} key=${6:-} opts="" tlssrv=""
  case $sendfile in 1) opts=" sendfile on; tcp_nopush on;" ;; 0) ;; *) echo "origin_conf: SENDFILE is 0 or 1" >&2; return 2 ;; esac
  if [ -n "$tls" ]; then
    tlssrv="
  server { listen $tls ssl; root $dir/www;
           ssl_certificate $cert; ssl_certificate_key $key; }"
  fi
  cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;$opts tcp_nodelay on;
  keepalive_timeout 300s; keepalive_requests 10000000;
  default_type application/octet-stream;
  client_body_temp_path $dir/tmp; proxy_temp_path $dir/tmp; fastcgi_temp_path $dir/tmp;
  uwsgi_temp_path $dir/tmp; scgi_temp_path $dir/tmp;
  server { listen $addr; root $dir/www; }$tlssrv
}
EOF
}

# stop_pids: SIGTERM to every process in pids, SIGKILL to those still alive
# 10 s later, then forget them (bounded: at most 10 s per process).
stop_pids() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
    wait "$p" 2>/dev/null || true
  done
  pids=()
}
