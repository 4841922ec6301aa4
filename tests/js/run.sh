#!/bin/sh
# run.sh [path/to/herald] - tests web/herald.js in Node.js (node:test) with
# the `ws` package, against a real `herald serve`. Installs ws and
# typescript (test-only) into tests/js/node_modules when missing. Exit 77
# (CTest's skip) when node or the npm packages cannot be had.
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
herald=${1:-$root/build/herald}

skip() {
  echo "SKIPPED: $*"
  exit 77
}

command -v node >/dev/null 2>&1 || skip "node is not installed"
[ -x "$herald" ] || { echo "FAIL: no herald binary at $herald"; exit 1; }
if [ ! -f "$here/node_modules/ws/package.json" ] ||
  [ ! -f "$here/node_modules/typescript/package.json" ]; then
  command -v npm >/dev/null 2>&1 || skip "npm not found to install ws and typescript"
  echo "installing ws and typescript into $here/node_modules"
  (cd "$here" && timeout 300 npm install --no-audit --no-fund \
    --no-package-lock) ||
    skip "npm install failed (offline?); run npm install in $here"
fi
HERALD=$herald exec timeout 600 node --test "$here/herald.test.mjs"
