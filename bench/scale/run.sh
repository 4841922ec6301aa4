#!/usr/bin/env bash
# bench/scale/run.sh - idle connections held by one `herald echo`, and the
# server memory they cost.
#
# For each target count (default 10000, then as many as the descriptor limit
# allows, 19000 here) a fresh `herald echo` on 127.0.0.1 is started, several
# `herald bench --mode idle` processes open the connections over source
# addresses 127.0.0.1-127.0.0.8 and hold them, and the server's VmRSS
# (/proc/PID/status) is read before, while they are held, and after they
# closed. Bytes per connection = (RSS held - RSS before) / connections held.
# The table goes to stdout and into docs/performance.md between
# <!-- scale:begin --> and <!-- scale:end -->.
#
# usage: bench/scale/run.sh [--connections N[,N...]] [--procs P] [--hold S]
#                           [--no-doc]
set -u

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DOC="$ROOT/docs/performance.md"
HERALD=${HERALD:-$ROOT/build/herald}
TARGETS=""
PROCS=4
HOLD=8
SOURCES=127.0.0.1-127.0.0.8
WRITE_DOC=1

while [ $# -gt 0 ]; do
  case "$1" in
  --connections) TARGETS=$2; shift ;;
  --procs) PROCS=$2; shift ;;
  --hold) HOLD=$2; shift ;;
  --no-doc) WRITE_DOC=0 ;;
  -h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "scale: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

log() { echo "scale: $*" >&2; }

HARD=$(ulimit -Hn)
[ "$HARD" = unlimited ] && HARD=1048576
ulimit -n "$HARD" 2>/dev/null
# The server needs one descriptor per connection plus a few of its own.
MAXCONN=$((HARD - 200))
[ "$MAXCONN" -gt 19000 ] && MAXCONN=19000
if [ -z "$TARGETS" ]; then
  TARGETS="10000,$MAXCONN"
  [ "$MAXCONN" -le 10000 ] && TARGETS=$MAXCONN
fi

if [ ! -x "$HERALD" ]; then
  log "building herald"
  (cmake -S "$ROOT" -B "$ROOT/build" -G Ninja -DCMAKE_BUILD_TYPE=Release &&
    cmake --build "$ROOT/build") >&2 || { log "cannot build herald"; exit 1; }
fi

WORK=$(mktemp -d /tmp/herald-scale.XXXXXX)
MY_PIDS=()
cleanup() {
  # Only the processes this script started, by their PIDs.
  for p in "${MY_PIDS[@]}"; do
    kill "$p" 2>/dev/null
  done
  for p in "${MY_PIDS[@]}"; do
    wait "$p" 2>/dev/null
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
nfds() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }

ROWS="$WORK/rows.txt"
: >"$ROWS"
status=0
IFS=, read -r -a TLIST <<<"$TARGETS"
for N in "${TLIST[@]}"; do
  if [ "$N" -gt "$MAXCONN" ]; then
    log "$N connections exceed the descriptor limit ($HARD); using $MAXCONN"
    N=$MAXCONN
  fi
  out="$WORK/server-$N.log"
  "$HERALD" echo --listen 127.0.0.1:0 >"$out" 2>&1 &
  spid=$!
  MY_PIDS+=("$spid")
  port=""
  for _ in $(seq 100); do
    port=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$out" | head -1)
    [ -n "$port" ] && break
    sleep 0.1
  done
  if [ -z "$port" ]; then
    log "herald echo did not start: $(cat "$out")"
    exit 1
  fi
  sleep 0.5
  rss0=$(rss_kb "$spid")
  # Split N over the load processes.
  per=$(((N + PROCS - 1) / PROCS))
  left=$N
  bpids=()
  t0=$(date +%s.%N)
  for i in $(seq "$PROCS"); do
    n=$per
    [ "$n" -gt "$left" ] && n=$left
    [ "$n" -le 0 ] && break
    left=$((left - n))
    timeout $((HOLD + 120)) "$HERALD" bench "ws://127.0.0.1:$port/" \
      --mode idle --connections "$n" --duration "$HOLD" \
      --source "$SOURCES" --json >"$WORK/b-$N-$i.json" \
      2>"$WORK/b-$N-$i.err" &
    bpids+=($!)
    MY_PIDS+=($!)
  done
  # Wait until every load process holds its connections (or gave up).
  ready=0
  for _ in $(seq 600); do
    ready=0
    for i in $(seq ${#bpids[@]}); do
      if grep -q "holding" "$WORK/b-$N-$i.err" 2>/dev/null ||
        ! kill -0 "${bpids[$((i - 1))]}" 2>/dev/null; then
        ready=$((ready + 1))
      fi
    done
    [ "$ready" -eq ${#bpids[@]} ] && break
    sleep 0.1
  done
  t1=$(date +%s.%N)
  sleep 1 # let the server settle
  rss1=$(rss_kb "$spid")
  fds=$(nfds "$spid")
  alive=1
  kill -0 "$spid" 2>/dev/null || alive=0
  for p in "${bpids[@]}"; do
    wait "$p"
  done
  sleep 1
  rss2=$(rss_kb "$spid")
  kill "$spid" 2>/dev/null
  wait "$spid" 2>/dev/null
  # Sum the load processes' results.
  read -r opened failed lost held < <(cat "$WORK"/b-"$N"-*.json |
    python3 -c 'import json, sys
o = f = l = h = 0
for line in sys.stdin:
    line = line.strip()
    if line.startswith("{"):
        d = json.loads(line)
        o += d["opened"]; f += d["failed"]; l += d["lost"]; h += d["held"]
print(o, f, l, h)')
  setup=$(python3 -c "print(f'{$t1 - $t0:.1f}')")
  per_conn=$(python3 -c "print(round(($rss1 - $rss0) * 1024 / $held) if $held else 'n/a')")
  log "$N: opened $opened, failed $failed, lost $lost, held $held;" \
    "server fds $fds, RSS ${rss0} -> ${rss1} -> ${rss2} kB, $per_conn B/conn"
  [ "$failed" -eq 0 ] && [ "$lost" -eq 0 ] && [ "$held" -eq "$N" ] &&
    [ "$alive" -eq 1 ] || status=1
  echo "$N|$held|$((failed + lost))|$setup|$rss0|$rss1|$rss2|$per_conn" >>"$ROWS"
done

TABLE="$WORK/table.md"
{
  echo "## Idle connections (bench/scale)"
  echo
  echo "Generated by \`bench/scale/run.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC')," \
    "Linux $(uname -r), descriptor limit $HARD per process. One \`herald echo\`" \
    "(one thread) on 127.0.0.1; the connections come from $PROCS" \
    "\`herald bench --mode idle\` processes over source addresses $SOURCES" \
    "and are held ${HOLD} s. RSS is VmRSS of /proc/PID/status: before any" \
    "connection, while all are held (1 s after the last opened), and 1 s" \
    "after they closed. Bytes per connection = (held - before) / held."
  echo
  echo "| connections | held | errors | open time s | RSS before KiB | RSS held KiB | RSS after close KiB | bytes per connection |"
  echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
  while IFS='|' read -r n h e s r0 r1 r2 b; do
    echo "| $n | $h | $e | $s | $r0 | $r1 | $r2 | $b |"
  done <"$ROWS"
} >"$TABLE"
cat "$TABLE"

if [ "$WRITE_DOC" = 1 ]; then
  python3 - "$DOC" "$TABLE" <<'EOF'
import os, sys
doc, table = sys.argv[1], sys.argv[2]
begin, end = "<!-- scale:begin -->", "<!-- scale:end -->"
block = begin + "\n" + open(table).read().rstrip("\n") + "\n" + end
text = open(doc).read() if os.path.exists(doc) else "# Performance\n"
if begin in text and end in text and text.index(begin) < text.index(end):
    a = text.index(begin)
    b = text.index(end) + len(end)
    text = text[:a] + block + text[b:]
else:
    text = text.rstrip("\n") + "\n\n" + block + "\n"
tmp = doc + ".scale.tmp"
open(tmp, "w").write(text)
os.replace(tmp, doc)
EOF
  log "table written to docs/performance.md"
fi
exit $status
