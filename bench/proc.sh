# shellcheck shell=bash
# Process and /proc helpers shared by bench/compare.sh and bench/measure/lib.sh
# (sourced, not run). Callers set W (scratch: logs in $W/logs) and STARTED=() (PIDs
# that start_bg started; the caller stops them at exit).

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }
start_bg() {  # start_bg NAME CPU CMD...  -> LASTPID; stdout NAME.out, stderr NAME.err
  local name=$1 cpu=$2; shift 2
  taskset -c "$cpu" "$@" >"$W/logs/$name.out" 2>"$W/logs/$name.err" &
  LASTPID=$!
  STARTED+=("$LASTPID")
  log "started $name pid=$LASTPID on cpu$cpu: $*"
}
stop_pid() {
  local p=$1
  kill -0 "$p" 2>/dev/null || return 0
  kill -TERM "$p" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$p" 2>/dev/null; then log "pid $p still alive 10 s after SIGTERM: SIGKILL"; kill -KILL "$p" 2>/dev/null || true; fi
  wait "$p" 2>/dev/null || true
}
wait_port() {  # wait_port PORT  (max 15 s)
  for _ in $(seq 1 150); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  die "port $1 did not open"
}
wait_line() {  # wait_line FILE REGEX PID  (max 15 s)
  for _ in $(seq 1 150); do
    grep -qE "$2" "$1" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || die "process $3 exited before printing its ready line: $(tail -5 "${1%.out}.err")"
    sleep 0.1
  done
  die "no ready line in $1 after 15 s"
}
alive() { local p; for p in "$@"; do kill -0 "$p" 2>/dev/null || return 1; done; }
check_200() {  # check_200 LABEL curl-args...  (1 KiB, status 200)
  local out
  out=$(curl -s --max-time 10 -o /dev/null -w '%{http_code} %{size_download}' "${@:2}") || true
  [ "$out" = "200 1024" ] || die "sanity check $1 failed: '$out' (curl ${*:2})"
}
proc_ticks() {  # utime+stime of the PIDs (all threads, also exited ones)
  local t=0 p v
  for p in "$@"; do
    v=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12+$13}') || v=0
    t=$((t + ${v:-0}))
  done
  echo "$t"
}
mem_of() {  # mem_of FIELD PID...  (KiB, summed)
  local f=$1 t=0 p v; shift
  for p in "$@"; do v=$(awk -v f="$f:" '$1==f{print $2}' "/proc/$p/status" 2>/dev/null); t=$((t + ${v:-0})); done
  echo "$t"
}
