#!/usr/bin/env bash
# Runs bench/core_bench.c (release build) and writes its table into
# docs/performance.md between the core-bench markers.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build --target core_bench >/dev/null
table=$(mktemp)
{
  echo "Measured $(date -u +%Y-%m-%d) on $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; \`make bench\` (build/core_bench)."
  echo
  build/core_bench
} >"$table"
cat "$table"
doc=docs/performance.md
if grep -q '<!-- core-bench:begin -->' "$doc"; then
  awk -v f="$table" '
    /<!-- core-bench:begin -->/ { print; while ((getline l < f) > 0) print l; skip=1; next }
    /<!-- core-bench:end -->/ { skip=0 }
    !skip { print }' "$doc" >"$doc.tmp" && mv "$doc.tmp" "$doc"
fi
rm -f "$table"
