#!/usr/bin/env bash
# Builds the Debian packages libherald0, libherald-dev and herald with CPack
# (cmake/Install.cmake) in their own build tree, configured for /usr so that
# the libraries go to the multiarch directory, then checks them with
# lintian (no error allowed; warnings are printed).
#
#   scripts/build-debs.sh [BUILD_DIR]     (default build/deb)
#
# Prints the paths of the three .debs on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build/deb}
jobs=$(nproc)

cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_INSTALL_PREFIX=/usr -DHERALD_TESTS=OFF -DHERALD_BENCH=OFF \
  -DHERALD_SANITIZE=OFF >/dev/null
cmake --build "$dir" -j "$jobs" >/dev/null
rm -f "$dir"/*.deb
(cd "$dir" && cpack -G DEB >cpack.log 2>&1) ||
  { cat "$dir/cpack.log" >&2; echo "build-debs: cpack failed" >&2; exit 1; }
debs=()
for pkg in libherald0 libherald-dev herald; do
  f=$(ls "$dir"/${pkg}_*.deb 2>/dev/null | head -1)
  [ -n "$f" ] || { echo "build-debs: no $pkg package" >&2; exit 1; }
  debs+=("$(realpath "$f")")
done

if command -v lintian >/dev/null; then
  # --tag-display-limit 0: every tag, each once per file.
  out=$(lintian --tag-display-limit 0 "${debs[@]}" 2>&1 || true)
  if [ -n "$out" ]; then
    echo "$out" | sed 's/^/lintian: /'
  fi
  if grep -q '^E: ' <<<"$out"; then
    echo "build-debs: lintian reports errors" >&2
    exit 1
  fi
  echo "lintian: no errors"
else
  echo "lintian: not installed (scripts/deps.sh installs it); not checked"
fi
echo "${debs[*]}"
