#!/usr/bin/env bash
# bench/soak/run.sh - the soak of "every acknowledged publication is
# delivered exactly once, in order, or the client is told".
#
# Redis shards and `herald serve` nodes on 127.0.0.1 (random free ports, a
# temporary directory), WebSocket and SSE subscribers that reconnect at
# random to random nodes and resume, HTTP and WebSocket publishers, and
# SIGKILL + restart of Redis shards and nodes at random for the whole run.
# Then every subscriber's stream is checked against the acknowledged
# publications; the report goes to stdout and to a JSON file.
#
# usage: bench/soak/run.sh [PATH/TO/herald]
#   herald defaults to $HERALD, then build/rel/herald, then build/herald.
#   SOAK_SECONDS (default 600) bounds the run; the other SOAK_* settings
#   are listed in bench/soak/soak.py. The JSON report goes to SOAK_REPORT
#   (default ./soak-report.json).
# Exit status: 0 every check passed, 1 a check failed (silent losses,
# duplicates, ...), 2 setup error, 77 redis-server not installed.
set -u

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
case "${1:-}" in -h | --help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac

HERALD=${1:-${HERALD:-}}
if [ -z "$HERALD" ]; then
  for c in "$ROOT/build/rel/herald" "$ROOT/build/herald"; do
    if [ -x "$c" ]; then HERALD=$c; break; fi
  done
fi
if [ -z "$HERALD" ] || [ ! -x "$HERALD" ]; then
  echo "soak: no herald binary (give its path, or build build/rel)" >&2
  exit 2
fi
if ! command -v redis-server >/dev/null 2>&1; then
  echo "soak: redis-server not installed: skipped"
  exit 77
fi
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3)

# A checker that cannot see a loss proves nothing: test it first.
if ! "$PY" "$ROOT/tests/push/soak_check.py" >/tmp/herald-soak-check.$$ 2>&1; then
  cat /tmp/herald-soak-check.$$
  rm -f /tmp/herald-soak-check.$$
  echo "soak: FAIL: the checker's self-test (tests/push/soak_check.py) fails" >&2
  exit 1
fi
echo "soak: checker self-test: $(tail -1 /tmp/herald-soak-check.$$)"
rm -f /tmp/herald-soak-check.$$

WORK=$(mktemp -d /tmp/herald-soak.XXXXXX)
export SOAK_WORK=$WORK
PYPID=

# Everything stops with this script: the driver first (it stops its own
# servers), then any server whose PID it recorded and that still runs -
# checked to be ours by its command line, never by name alone.
cleanup() {
  trap - EXIT INT TERM
  if [ -n "$PYPID" ] && kill -0 "$PYPID" 2>/dev/null; then
    kill -TERM "$PYPID" 2>/dev/null
    for _ in $(seq 100); do
      kill -0 "$PYPID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$PYPID" 2>/dev/null
    wait "$PYPID" 2>/dev/null
  fi
  if [ -f "$WORK/pids" ]; then
    while read -r pid; do
      [ -r "/proc/$pid/cmdline" ] || continue
      if tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -e "$WORK" -e "$HERALD serve"; then
        kill -KILL "$pid" 2>/dev/null
      fi
    done <"$WORK/pids"
  fi
  if [ -f "$WORK/KEEP" ]; then
    echo "soak: kept $WORK" >&2
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$PY" "$HERE/soak.py" "$HERALD" &
PYPID=$!
wait "$PYPID"
rc=$?
PYPID=
exit "$rc"
