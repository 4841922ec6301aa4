#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan+UBSan) and runs each for
# FUZZ_SECONDS seconds (default 60) from its seed corpus. New inputs go to a
# scratch copy, so the checked-in corpus only changes by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECONDS:-60}
dir=build/fuzz
CC=clang cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DHERALD_FUZZ=ON -DHERALD_TESTS=OFF -DHERALD_BENCH=OFF >/dev/null
cmake --build "$dir" -j "$(nproc)"
for bin in "$dir"/fuzz_*; do
  [ -x "$bin" ] || continue
  name=$(basename "$bin")
  work=$(mktemp -d)
  seeds=fuzz/corpus/${name#fuzz_}
  [ -d "$seeds" ] && cp -r "$seeds"/. "$work"/
  echo "-- $name: ${secs}s"
  dict=()
  [ -f fuzz/$name.dict ] && dict=(-dict="$PWD/fuzz/$name.dict")
  log=$(mktemp)
  status=0
  (cd "$work" && "$OLDPWD/$bin" . "${dict[@]}" -max_total_time="$secs" \
    -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$OLDPWD/build/fuzz/$name-") >"$log" 2>&1 || status=$?
  grep -E 'stat::number_of_executed_units|ERROR|SUMMARY' "$log" || true
  if [ "$status" -ne 0 ]; then
    tail -n 60 "$log" >&2
    echo "$name failed (exit $status); the input is in build/fuzz/" >&2
    exit 1
  fi
  rm -f "$log"
  rm -rf "$work"
done
