#!/usr/bin/env bash
# bench/callgrind/deflate_engines.sh - instructions per message (callgrind)
# and bytes out / bytes in of permessage-deflate's compressor with zlib
# (levels 1 and 3, mem_level 8) and ISA-L's igzip (levels 0-3), with
# context takeover, window 15, at 256 B, 4 KiB and 64 KiB, on two
# payloads: `abc...z` repeated (bench/compare's) and JSON chat events
# (chat_json.py). Prints a markdown table. See deflate_engines.c.
#
# Columns: "Ir/msg" counts as callgrind does by default, where glibc's
# memcpy and memset of a few KiB and more are `rep movsb` and `rep stosb`,
# which callgrind counts once per byte; "Ir/msg, vector copies" runs with
# both glibc.cpu.x86_rep_movsb_threshold and x86_rep_stosb_threshold
# raised (GLIBC_TUNABLES) so that such copies and fills go through AVX
# loops, counted per 32-byte step, closer to what they cost. igzip copies
# its 32 KiB history after every call, and zlib's deflateReset clears its
# hash table, so the two columns differ most there. "CPU ns" is the median of 9 timed
# rounds (thread CPU clock): noisy on a shared machine, a sanity check.
#
# Environment: NOCTX=1 resets the stream after every message (no context
# takeover) instead. Needs valgrind and libisal-dev (not in deps.sh: herald
# does not link it).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d /tmp/herald-deflate-engines.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
cc -O2 -g -std=c17 -Wall -Wextra -Werror -o "$WORK/de" \
  "$HERE/deflate_engines.c" -lisal -lz
/usr/bin/python3 "$HERE/chat_json.py" >"$WORK/chat.json"
NOCTX=${NOCTX:-0}
VEC=glibc.cpu.x86_rep_movsb_threshold=1000000000:glibc.cpu.x86_rep_stosb_threshold=1000000000

count() { # NAME=VALUE: total Ir of measure() for ARGS in that environment
  local out="$WORK/cg.$$.$RANDOM"
  env "$@" valgrind --tool=callgrind --callgrind-out-file="$out" \
    --toggle-collect=measure "$WORK/de" "${ARGS[@]}" >/dev/null 2>&1
  callgrind_annotate "$out" 2>/dev/null |
    awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }'
  rm -f "$out"
}

echo "| payload | size | engine | level | Ir/msg | Ir/msg, vector copies | CPU ns/msg | out/in | compressor state |"
echo "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
for payload in abc chat; do
  file=-
  [ $payload = chat ] && file="$WORK/chat.json"
  for sc in "256 2000" "4096 500" "65536 50"; do
    read -r size n <<<"$sc"
    for el in "zlib 1" "zlib 3" "isal 0" "isal 1" "isal 2" "isal 3"; do
      read -r engine level <<<"$el"
      ARGS=("$engine" "$level" "$size" "$n" "$file" 15 "$NOCTX")
      line=$("$WORK/de" "${ARGS[@]}") # verifies: every message inflates back
      t=$(TIME=9 "$WORK/de" "${ARGS[@]}" | sed -n 's/.*median \([0-9]*\).*/\1/p')
      ir=$(count X=1)
      irv=$(count GLIBC_TUNABLES=$VEC)
      ratio=$(echo "$line" | sed -n 's/.*out\/in \([0-9.]*\).*/\1/p')
      st=$(echo "$line" | sed -n 's/.*state \([0-9]*\) bytes.*/\1/p')
      printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s KB |\n" \
        "$payload" "$size" "$engine" "$level" $((ir / n)) $((irv / n)) "$t" \
        "$ratio" $((st / 1000))
    done
  done
done
