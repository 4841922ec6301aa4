#!/bin/sh
# bench/pusher/run.sh - Pusher Channels beside herald's own protocol, in one
# run (bench.mjs says what is measured): memory per idle connection and
# fan-out through the HTTP API. Writes the tables into docs/performance.md
# between <!-- pusher:begin --> and <!-- pusher:end --> (--no-doc: only
# print them). Other options go to bench.mjs.
#
#   bench/pusher/run.sh [--no-doc] [--connections N] [--subscribers S]
#                       [--events P] [--inflight C] [--rate R]
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
herald=${HERALD:-$root/build/herald}
doc=1
if [ "${1:-}" = --no-doc ]; then
  doc=0
  shift
fi
[ -x "$herald" ] || { echo "pusher bench: no herald at $herald (make first)" >&2; exit 1; }
if [ ! -d "$here/node_modules/ws" ]; then
  (cd "$here" && npm install --no-audit --no-fund --no-package-lock >/dev/null 2>&1) ||
    { echo "pusher bench: npm install of ws failed" >&2; exit 1; }
fi
out=$(cd "$here" && node bench.mjs "$herald" "$@") || { echo "$out"; exit 1; }
echo "$out"
if [ $doc = 1 ]; then
  machine="$(nproc) cores, $(uname -m), $(date -u +%Y-%m-%d)"
  python3 - "$root/docs/performance.md" "$machine" <<PY
import sys
path, machine = sys.argv[1], sys.argv[2]
body = """$out"""
s = open(path).read()
a, b = "<!-- pusher:begin -->", "<!-- pusher:end -->"
block = a + "\n\nMeasured with \`bench/pusher/run.sh\` (" + machine + "; the load generator, Node with \`ws\`, shares the machine).\n\n" + body + "\n\n" + b
if a in s:
    s = s[:s.index(a)] + block + s[s.index(b) + len(b):]
else:
    s = s.rstrip("\n") + "\n\n## Pusher protocol beside herald's own (bench/pusher)\n\n" + block + "\n"
open(path, "w").write(s)
PY
fi
