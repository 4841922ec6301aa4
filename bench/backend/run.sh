#!/usr/bin/env bash
# bench/backend/run.sh - connect rate and subscribe latency with the backend
# proxy off beside on (bench/backend/bench.py has the details). Builds the
# release binary first.
#
# usage: bench/backend/run.sh [--conns N] [--subs N] [--workers N] [--no-doc]
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cmake -S "$ROOT" -B "$ROOT/build/rel" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DHERALD_TESTS=OFF >/dev/null
cmake --build "$ROOT/build/rel" --target herald >/dev/null
exec python3 "$ROOT/bench/backend/bench.py" --herald "$ROOT/build/rel/herald" "$@"
