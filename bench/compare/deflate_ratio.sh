#!/usr/bin/env bash
# bench/compare/deflate_ratio.sh - bytes on the wire per message with
# permessage-deflate (context takeover, 15-bit windows), herald echo beside
# Bun and Node ws with the settings of `run.sh --variant deflate`: the
# compression-ratio side of that comparison. For each server, size and
# payload, deflate_ratio.mjs sends COUNT messages one at a time and counts
# the TCP bytes the echoes took. Payloads: `abc...z` repeated (herald
# bench's) and JSON chat events (bench/callgrind/chat_json.py).
#
# usage: bench/compare/deflate_ratio.sh [--count N] [--sizes 256,4096,65536]
#                                       [--only herald,bun,ws]
# Environment: HERALD=path/to/herald (default build/herald).
# Prints a Markdown table; changes no file. Servers listen on 127.0.0.1 and
# are stopped (by their PIDs) when the script ends.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
HERALD=${HERALD:-$ROOT/build/herald}
COUNT=200
SIZES=256,4096,65536
ONLY=herald,bun,ws
while [ $# -gt 0 ]; do
  case "$1" in
  --count) COUNT=$2; shift ;;
  --sizes) SIZES=$2; shift ;;
  --only) ONLY=$2; shift ;;
  -h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "deflate_ratio.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
command -v node >/dev/null || { echo "deflate_ratio.sh: node is needed" >&2; exit 1; }
[ -f "$HERE/node_modules/ws/package.json" ] ||
  { echo "deflate_ratio.sh: run bench/compare/run.sh once (npm install ws, bun)" >&2; exit 1; }
BUN=""
for b in "$HERE"/node_modules/@oven/bun-linux-*/bin/bun \
  "$HERE/node_modules/bun/bin/bun.exe"; do
  [ -x "$b" ] && "$b" --version >/dev/null 2>&1 && BUN=$b && break
done
[ -x "$HERALD" ] || { echo "deflate_ratio.sh: no herald at $HERALD" >&2; exit 1; }

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT
python3 "$ROOT/bench/callgrind/chat_json.py" 4000 >"$WORK/chat.json"

start() { # name -> URL on stdout, "" when it cannot start
  local name=$1 out="$WORK/$1.log" port=""
  case "$name" in
  herald) "$HERALD" echo --listen 127.0.0.1:0 >"$out" 2>&1 & ;;
  bun) [ -n "$BUN" ] || return 0
    (cd "$HERE" && DEFLATE=1 exec "$BUN" bun_echo.js 0) >"$out" 2>&1 & ;;
  ws) (cd "$HERE" && DEFLATE=1 exec node ws_echo.js 0) >"$out" 2>&1 & ;;
  esac
  PIDS+=($!)
  for _ in $(seq 100); do
    port=$(grep -o '127\.0\.0\.1:[0-9]*' "$out" 2>/dev/null | head -1 | cut -d: -f2)
    [ -n "$port" ] && break
    sleep 0.05
  done
  [ -n "$port" ] && echo "ws://127.0.0.1:$port/"
}

declare -A URL
for s in ${ONLY//,/ }; do
  URL[$s]=$(start "$s")
  [ -n "${URL[$s]}" ] || echo "deflate_ratio.sh: $s did not start; skipped" >&2
done

echo "| payload | size | server | wire bytes / payload bytes | wire bytes per message |"
echo "| --- | ---: | --- | ---: | ---: |"
for payload in abc chat; do
  for size in ${SIZES//,/ }; do
    for s in ${ONLY//,/ }; do
      [ -n "${URL[$s]:-}" ] || continue
      file=()
      [ "$payload" = chat ] && file=("$WORK/chat.json")
      line=$(node "$HERE/deflate_ratio.mjs" "${URL[$s]}" "$size" "$COUNT" "${file[@]}") || {
        echo "| $payload | $size | $s | failed | |"; continue; }
      # shellcheck disable=SC2016 # the Python program is quoted as is
      python3 -c '
import json, sys
d = json.loads(sys.argv[1])
names = {"herald": "herald echo", "bun": "Bun", "ws": "Node ws"}
pl = "`abc...z`" if d["payload"] == "abc...z" else "JSON chat"
per = d["wire_bytes"] / d["count"]
print("| %s | %s | %s | %.4f | %s |" % (pl, format(d["size"], ","),
      names[sys.argv[2]], d["ratio"], format(per, ",.1f")))' "$line" "$s"
    done
  done
done
