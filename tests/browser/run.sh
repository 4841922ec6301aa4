#!/bin/sh
# run.sh - runs the headless Chromium test of the demo page.
#
#   tests/browser/run.sh [path/to/herald]     (default: build/herald)
#
# Installs playwright-core (npm) when node_modules is missing, and Debian's
# chromium when /usr/bin/chromium is missing (apt-get as root, sudo
# otherwise). Exit status: 0 passed, 1 failed, 77 skipped ("SKIPPED:" says
# why). The screenshot goes to build/test-artifacts/demo.png.
set -u

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
herald=${1:-$root/build/herald}
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

if ! /usr/bin/chromium --version >/dev/null 2>&1; then
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

# browser_demo and browser_demo_threads start at once (ctest -j): one
# installs, the other waits for it.
. "$here/../support/npm_once.sh"
npm_install_once "$here" "playwright-core" ||
  skip "npm install of playwright-core failed"

cd "$here" || exit 1
exec node demo.test.mjs "$herald" "$root/build/test-artifacts"
