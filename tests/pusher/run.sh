#!/bin/sh
# run.sh - the Pusher Channels compatibility tests with the real npm
# packages (pusher-js, pusher, laravel-echo).
#
#   tests/pusher/run.sh node [path/to/herald]          pusher-js in Node
#   tests/pusher/run.sh node-redis [path/to/herald]    the same, two nodes
#                                                      over Redis
#   tests/pusher/run.sh browser [path/to/herald]       pusher-js and
#                                                      laravel-echo in
#                                                      headless Chromium
#
# Installs the packages of package.json when node_modules is missing, and
# Debian's chromium for the browser test when /usr/bin/chromium is missing.
# Exit status: 0 passed, 1 failed, 77 skipped ("SKIPPED:" says why: no
# node or npm, npm could not install, no Chromium, no redis-server).
set -u

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
what=${1:-node}
herald=${2:-$root/build/herald}
case $herald in
  /*) ;;
  *) herald=$(pwd)/$herald ;;
esac

skip() {
  echo "SKIPPED: $*"
  exit 77
}

if [ ! -x "$herald" ]; then
  echo "FAIL: no herald binary at $herald (build it first: make)"
  exit 1
fi

command -v node >/dev/null 2>&1 || skip "node is not installed"
command -v npm >/dev/null 2>&1 || skip "npm is not installed"

if [ "$what" = browser ] && ! /usr/bin/chromium --version >/dev/null 2>&1; then
  echo "installing Debian's chromium..."
  if [ "$(id -u)" = 0 ]; then
    apt-get install -y chromium >/dev/null 2>&1 ||
      { apt-get update >/dev/null 2>&1 && apt-get install -y chromium >/dev/null 2>&1; }
  elif command -v sudo >/dev/null 2>&1; then
    sudo -n apt-get install -y chromium >/dev/null 2>&1 ||
      { sudo -n apt-get update >/dev/null 2>&1 && sudo -n apt-get install -y chromium >/dev/null 2>&1; }
  fi
  /usr/bin/chromium --version >/dev/null 2>&1 || skip "Chromium is not available (apt-get install chromium failed)"
fi

# Several tests may start at once (ctest -j): one installs, the others
# wait for it.
. "$here/../support/npm_once.sh"
npm_install_once "$here" "pusher-js, pusher, laravel-echo, ws, playwright-core" ||
  skip "npm install of the test packages failed"

cd "$here" || exit 1
case $what in
  node) exec node node.test.mjs "$herald" ;;
  node-redis) exec node node.test.mjs "$herald" --redis ;;
  browser) exec node browser.test.mjs "$herald" "$root/build/test-artifacts" ;;
  *) echo "usage: run.sh node|node-redis|browser [herald]"; exit 1 ;;
esac
