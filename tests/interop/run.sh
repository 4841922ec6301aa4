#!/bin/sh
# run.sh PEER HERALD_BINARY - runs the interop tests against one real peer.
#   PEER: python (python3-websockets) or node (the npm ws package)
# Exits 77 (CTest's SKIP_RETURN_CODE) with a SKIPPED line when the peer is
# not available on this machine; otherwise the test script's own status.
set -u
here=$(cd "$(dirname "$0")" && pwd)
if [ $# -ne 2 ]; then
  echo "usage: run.sh python|node HERALD_BINARY" >&2
  exit 2
fi
peer=$1
herald=$2

skip() {
  echo "SKIPPED: $*"
  exit 77
}

case $peer in
python)
  [ -x /usr/bin/python3 ] || skip "/usr/bin/python3 not found"
  /usr/bin/python3 -c "import websockets" 2>/dev/null ||
    skip "python3-websockets is not installed (apt-get install python3-websockets)"
  exec timeout 900 /usr/bin/python3 "$here/run_python.py" "$herald"
  ;;
node)
  command -v node >/dev/null 2>&1 || skip "node not found"
  if [ ! -f "$here/node_modules/ws/package.json" ]; then
    command -v npm >/dev/null 2>&1 || skip "npm not found to install ws"
    echo "installing ws into $here/node_modules"
    (cd "$here" && timeout 180 npm install --no-audit --no-fund \
      --no-package-lock) ||
      skip "npm install failed (offline?); run npm install in $here"
  fi
  exec timeout 900 node "$here/run_node.mjs" "$herald"
  ;;
*)
  echo "run.sh: unknown peer '$peer'" >&2
  exit 2
  ;;
esac
