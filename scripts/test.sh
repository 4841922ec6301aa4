#!/usr/bin/env bash
# Everything `make test` checks, in order of cost. Any failure stops the run.
#   1. formatting against .clang-format
#   2. layer rules (scripts/check-layers.py): each layer includes only the
#      public headers of the layers below it, the core only libc and zlib,
#      and no two modules include each other, directly or around a cycle
#   3. gcc build with ASan+UBSan and -Werror, every CTest test
#   4. clang build with ASan+UBSan and -Werror, every CTest test but the
#      second runs of suites on io_uring (*_uring) and on two loops
#      (*_threads), and the multi-process Redis suites and the soak
#      (push_redis*, push_backend_redis, pusher_node-redis, soak_short):
#      the same code paths under the same sanitizers, which step 3 runs
#      (step 5 for the threads), so that `make test` stays within 30
#      minutes
#   5. clang build with ThreadSanitizer: the threaded push tests (label
#      "threads": herald serve --threads 2)
#   6. the libFuzzer targets, FUZZ_SECONDS (default 60) each
#   7. the release build (build/herald) that `make run` uses
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
step() { printf '\n== %s\n' "$*"; }

step "format (clang-format $(clang-format --version | grep -o '[0-9][0-9.]*' | head -1))"
files=$(git ls-files '*.c' '*.h' 2>/dev/null || find src include tests fuzz bench -name '*.[ch]')
clang-format --dry-run --Werror $files
echo "formatting ok"

step "layer check: include rules of core <- rt <- push <- app, no cycles"
/usr/bin/python3 scripts/check-layers.py

for cc in gcc clang; do
  step "$cc: ASan+UBSan, -Werror"
  dir=build/test-$cc
  CC=$cc cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Debug \
    -DHERALD_SANITIZE=ON -DHERALD_WERROR=ON >/dev/null
  cmake --build "$dir" -j "$jobs"
  skip=()
  [ "$cc" = clang ] &&
    skip=(-E '_(uring|threads)$|^push_redis|^push_backend_redis$|^pusher_node-redis$|^soak_short$')
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir "$dir" --output-on-failure -j "$jobs" "${skip[@]}"
done

step "clang: ThreadSanitizer, the threaded tests"
dir=build/test-tsan
CC=clang cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Debug \
  -DHERALD_TSAN=ON -DHERALD_WERROR=ON -DHERALD_BENCH=OFF >/dev/null
cmake --build "$dir" -j "$jobs" --target herald
TSAN_OPTIONS=halt_on_error=0 \
  ctest --test-dir "$dir" --output-on-failure -L threads -j 1

step "fuzz (${FUZZ_SECONDS:-60} s per target)"
scripts/fuzz.sh

step "release build"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$jobs"
build/herald --version

scripts/check-install.sh

step "all checks passed"
