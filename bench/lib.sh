# Shared by the bench scripts (sourced, not run, from the repository root).
# setup: builds the release binary and sets MSC (the msc binary), work (a
# scratch directory, removed at exit) and pids (processes stopped at exit).

setup() {
  [ "${BUILD:-1}" = 0 ] || cargo build --release --quiet
  MSC=$PWD/target/release/msc
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
