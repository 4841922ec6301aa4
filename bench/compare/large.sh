#!/usr/bin/env bash
# bench/compare/large.sh - large-message echo: server CPU and page faults per
# message, for one or more echo servers side by side, taking turns.
#
# usage: bench/compare/large.sh [--runs N] [--duration S] [--size SIZE]
#                               [--connections N] NAME=COMMAND...
#   COMMAND starts an echo server that prints "listening on HOST:PORT" (port
#   0 is fine: the line tells). Default: herald=build/herald echo and raw
#   (bench/compare/raw_echo.c).
#
# Each run of each server: start it (pinned to CPU 1), warm it up with one
# `herald bench` of 1 s (pinned to CPU 0), then measure a second one of
# --duration seconds (default 4): server CPU per message (utime + stime from
# /proc/PID/stat, as herald bench --server-pid reports it) and minor page
# faults per message (minflt of /proc/PID/stat over the measured bench). The
# medians of --runs (3) runs go to stdout as a Markdown table.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
HERALD=${HERALD:-$ROOT/build/herald}
RUNS=3 DURATION=4 SIZE=16M CONNS=2
SERVERS=()
while [ $# -gt 0 ]; do
  case "$1" in
  --runs) RUNS=$2; shift ;;
  --duration) DURATION=$2; shift ;;
  --size) SIZE=$2; shift ;;
  --connections) CONNS=$2; shift ;;
  -h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *=*) SERVERS+=("$1") ;;
  *) echo "large.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
WORK=$(mktemp -d /tmp/herald-large.XXXXXX)
SPID=""
cleanup() {
  [ -z "$SPID" ] || { kill "$SPID" 2>/dev/null; wait "$SPID" 2>/dev/null; }
  rm -rf "$WORK"
}
trap cleanup EXIT
if [ ${#SERVERS[@]} -eq 0 ]; then
  ${CC:-cc} -O2 -std=c17 -D_GNU_SOURCE -o "$WORK/raw_echo" "$HERE/raw_echo.c"
  SERVERS=("herald=$HERALD echo --listen 127.0.0.1:0" "raw=$WORK/raw_echo 0")
fi
PIN_S=() PIN_L=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  PIN_S=(taskset -c 1) PIN_L=(taskset -c 0)
fi
minflt() { awk '{print $10}' "/proc/$1/stat"; }
bench() { # PORT SECONDS
  timeout 120 "${PIN_L[@]}" "$HERALD" bench "ws://127.0.0.1:$1/" --binary \
    --size "$SIZE" --connections "$CONNS" --inflight 1 --duration "$2" \
    --warmup 0 --server-pid "$SPID" --json 2>/dev/null
}
for r in $(seq "$RUNS"); do
  for s in "${SERVERS[@]}"; do
    name=${s%%=*} cmd=${s#*=}
    # shellcheck disable=SC2086
    "${PIN_S[@]}" $cmd >"$WORK/log" 2>&1 &
    SPID=$!
    for _ in $(seq 100); do
      grep -q 'listening on' "$WORK/log" && break
      sleep 0.1
    done
    port=$(sed -n 's/.*listening on .*:\([0-9]*\)$/\1/p' "$WORK/log" | head -1)
    bench "$port" 1 >/dev/null || true
    f0=$(minflt "$SPID")
    line=$(bench "$port" "$DURATION" || echo null)
    f1=$(minflt "$SPID")
    kill "$SPID"
    wait "$SPID" 2>/dev/null || true
    SPID=""
    echo "{\"server\":\"$name\",\"faults\":$((f1 - f0)),\"r\":${line:-null}}" \
      >>"$WORK/results.jsonl"
    echo "large: run $r, $name done" >&2
  done
done
python3 - "$WORK/results.jsonl" "$SIZE" "$CONNS" "$RUNS" <<'PY'
import json, statistics, sys
path, size, conns, runs = sys.argv[1:5]
rows = [json.loads(l) for l in open(path)]
names = []
for r in rows:
    if r["server"] not in names:
        names.append(r["server"])
print(f"{size} binary echo, {conns} connections x 1 in flight; median of "
      f"{runs} run(s)\n")
print("| server | msgs/s | CPU ms/msg | minor faults/msg | CPU vs first |")
print("| --- | ---: | ---: | ---: | ---: |")
first = None
for n in names:
    rs = [r for r in rows if r["server"] == n and r["r"] and r["r"]["msgs"]]
    if not rs:
        print(f"| {n} | failed | | | |")
        continue
    cpu = statistics.median(r["r"]["server_cpu_us_per_msg"] / 1000 for r in rs)
    mps = statistics.median(r["r"]["msgs_per_s"] for r in rs)
    flt = statistics.median(r["faults"] / r["r"]["msgs"] for r in rs)
    first = first or cpu
    print(f"| {n} | {mps:.1f} | {cpu:.2f} | {flt:,.0f} | {cpu / first:.2f} |")
PY
