# shellcheck shell=bash
# Contention guard, shared by the bench scripts (sourced, not run).
#
# Other sessions may share the machine: before each measured run, wait (at most
# QUIET_WAIT s) until processes that are not descendants of this script use less
# than FOREIGN_MAX % of one core; measure that foreign CPU during the run and
# repeat the run (at most RETRIES times) if it was higher. Waiting and repeating
# stop once GUARD_BUDGET seconds have been spent on them in total; later runs are
# kept and their foreign CPU is recorded (the summaries flag them).
#
# Foreign CPU = busy ticks of all CPUs (/proc/stat) - ticks of this script's
# process tree - kernel threads (bench/compare/pstat.py), in % of one core, so
# short-lived compiler jobs count too. Processes the script starts must stay its
# descendants (no daemonizing: nginx with -g 'daemon off;'), or their CPU counts
# as foreign.
#
# Knobs (environment): FOREIGN_MAX=5 QUIET_WAIT=30 GUARD_BUDGET=300 RETRIES=2
# Set before use: GUARD_DIR (scratch directory for snapshots, e.g. the script's
# own; default: a new /tmp/msc-guard.*), GUARD_ERR (where a run's stderr goes; default stderr).
#
#   guard_run CMD...   runs CMD (a command or a shell function, in this shell)
#                      under the guard. Afterwards: G_OUT (its stdout), G_FOREIGN
#                      ("PCT top1:ticks,top2:ticks" of the kept run), G_FPCT (PCT),
#                      G_TRIES (runs made), G_DIRTY (1 if the kept run is above
#                      FOREIGN_MAX), G_RC (CMD's exit status; a failing CMD does
#                      not stop the script: set -e does not apply inside it, so a
#                      shell function must return non-zero itself on failure). Optional hooks: GUARD_BEFORE and GUARD_AFTER
#                      name functions called right before and after each run of
#                      CMD, inside the measured window (per-run CPU snapshots).
#   guard_knobs        one line with the knobs, for env.txt
#   guard_totals       one line: guard time spent, runs discarded, runs kept dirty

FOREIGN_MAX=${FOREIGN_MAX:-5}
QUIET_WAIT=${QUIET_WAIT:-30}
GUARD_BUDGET=${GUARD_BUDGET:-300}
RETRIES=${RETRIES:-2}
GUARD_SPENT=0
GUARD_DISCARDED=0
GUARD_KEPT_DIRTY=0
GUARD_PSTAT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/compare/pstat.py

guard_log() {
  if declare -F log >/dev/null; then log "$@"; else printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; fi
}
guard_dir() {
  [ -n "${GUARD_DIR:-}" ] || GUARD_DIR=$(mktemp -d /tmp/msc-guard.XXXXXX)
  mkdir -p "$GUARD_DIR"
}
fsnap() { python3 "$GUARD_PSTAT" snap "$1"; }
fdiff() { python3 "$GUARD_PSTAT" diff "$1" "$2" $$; }
is_dirty() { awk -v f="${1%% *}" -v m="$FOREIGN_MAX" 'BEGIN{exit !(f >= m)}'; }
budget_left() { [ "$GUARD_SPENT" -lt "$GUARD_BUDGET" ]; }
wait_quiet() {
  local t0=$SECONDS f="" waited=0
  guard_dir
  while budget_left && [ $((SECONDS - t0)) -lt "$QUIET_WAIT" ] && [ $((GUARD_SPENT + SECONDS - t0)) -lt "$GUARD_BUDGET" ]; do
    fsnap "$GUARD_DIR/q0"; sleep 1.5; fsnap "$GUARD_DIR/q1"; f=$(fdiff "$GUARD_DIR/q0" "$GUARD_DIR/q1")
    if ! is_dirty "$f"; then
      [ $waited = 1 ] && guard_log "  quiet again ($f)"
      GUARD_SPENT=$((GUARD_SPENT + SECONDS - t0)); return 0
    fi
    [ $waited = 0 ] && guard_log "  waiting for foreign CPU to drop: $f"
    waited=1
  done
  GUARD_SPENT=$((GUARD_SPENT + SECONDS - t0))
  [ $waited = 1 ] && guard_log "  not quiet ($f); measuring anyway (guard time spent ${GUARD_SPENT}s of ${GUARD_BUDGET}s)"
  return 0
}
# shellcheck disable=SC2034 # G_* are read by the scripts that source this file
guard_run() {
  local try t0
  guard_dir
  for try in $(seq 0 "$RETRIES"); do
    wait_quiet
    t0=$SECONDS
    fsnap "$GUARD_DIR/f0"
    if [ -n "${GUARD_BEFORE:-}" ]; then "$GUARD_BEFORE"; fi
    G_RC=0
    "$@" >"$GUARD_DIR/out" 2>>"${GUARD_ERR:-/dev/stderr}" || G_RC=$?
    if [ -n "${GUARD_AFTER:-}" ]; then "$GUARD_AFTER"; fi
    fsnap "$GUARD_DIR/f1"
    G_OUT=$(cat "$GUARD_DIR/out")
    G_FOREIGN=$(fdiff "$GUARD_DIR/f0" "$GUARD_DIR/f1")
    G_FPCT=${G_FOREIGN%% *}
    G_TRIES=$((try + 1))
    G_DIRTY=0
    if is_dirty "$G_FOREIGN"; then
      G_DIRTY=1
      if [ "$try" -lt "$RETRIES" ] && budget_left; then
        GUARD_SPENT=$((GUARD_SPENT + SECONDS - t0))
        GUARD_DISCARDED=$((GUARD_DISCARDED + 1))
        guard_log "  foreign CPU during run: $G_FOREIGN -> discarded, repeating"
        continue
      fi
      GUARD_KEPT_DIRTY=$((GUARD_KEPT_DIRTY + 1))
    fi
    return 0
  done
}
guard_knobs() {
  echo "contention guard: FOREIGN_MAX=$FOREIGN_MAX% QUIET_WAIT=${QUIET_WAIT}s GUARD_BUDGET=${GUARD_BUDGET}s RETRIES=$RETRIES"
}
guard_totals() {
  echo "contention guard: ${GUARD_SPENT}s spent waiting and repeating, $GUARD_DISCARDED runs discarded, $GUARD_KEPT_DIRTY runs kept above FOREIGN_MAX=$FOREIGN_MAX%"
}
