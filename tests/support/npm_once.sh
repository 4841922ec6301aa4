# npm_once.sh - sourced by the test runners that need npm packages
# (tests/pusher/run.sh, tests/browser/run.sh).
#
# npm_install_once DIR WHAT: installs DIR's package.json dependencies once,
# even when several tests start at the same moment (ctest -j): the first
# takes a lock directory and installs, the others wait for it (at most
# 300 s), and a marker file says the install finished. Returns 0 when the
# packages are there, 1 when the install failed. WHAT names the packages
# in the message printed while installing.
npm_install_once() {
  _dir=$1
  _marker="$_dir/node_modules/.herald-installed"
  _lock="$_dir/.npm-install.lock"
  [ -f "$_marker" ] && return 0
  if mkdir "$_lock" 2>/dev/null; then
    echo "installing $2..."
    (cd "$_dir" && npm install --no-audit --no-fund --no-package-lock >/dev/null 2>&1) &&
      touch "$_marker"
    rmdir "$_lock"
  else
    _n=0
    while [ -d "$_lock" ] && [ $_n -lt 300 ]; do
      sleep 1
      _n=$((_n + 1))
    done
  fi
  [ -f "$_marker" ]
}
