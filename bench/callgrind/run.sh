#!/usr/bin/env bash
# bench/callgrind/run.sh - user-space instructions per echoed message, counted
# by callgrind: deterministic where time-based benchmarks are noisy.
#
#   echo CASE [herald bench options]
#       `herald echo` under callgrind, driven by `herald bench` (not under
#       callgrind) for 2 s and for 6 s; the difference of the two totals over
#       the difference of the messages echoed (calls of on_message) is the
#       cost of one echo, with start-up and connection set-up cancelled out.
#       It includes the runtime (reads, writes, batching), so it moves a
#       little with how the messages were batched: compare builds in the same
#       session.
#   echo-tls CASE [herald bench options]
#       the same over wss://: herald echo with a P-256 certificate made for
#       the run, the load verifying it; OpenSSL's instructions count too.
#   echo-tls-window CASE [herald bench options]
#       over wss:// too, but one run: the counters are zeroed 15 s into the
#       load (the handshakes done) and dumped 6 s later, and the window's
#       total is divided by its echoes. Steadier than the difference of
#       two runs for large messages, of which callgrind lets few through.
#   fanout THREADS [herald bench options]
#       `herald serve --threads THREADS` under callgrind (every thread in one
#       total), driven by `herald bench --mode fanout` for 2 s and 6 s; the
#       difference of the totals over the difference of the deliveries
#       (calls of client.c's deliver) is the cost of one delivery, the
#       crossing of loops included.
#   core CASE SIZE COUNT CHUNK FRAGS [DEFLATE [STREAM [CLIENT [BUDGET]]]]
#       core_drive.c against the core library alone: exact and repeatable.
#       CORE_DRIVE_PLACED=1 reads large frames in place, as ws.c does.
#   (no arguments) the standard set of both kinds.
#
# Environment: HERALD=path/to/herald (default build/herald); the core
# library is libherald_core.a beside it.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
HERALD=${HERALD:-$ROOT/build/herald}
WORK=$(mktemp -d /tmp/herald-callgrind.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# echo_run's extra options: set by tls_setup for echo-tls.
SCHEME=ws
ECHO_EXTRA=()
BENCH_EXTRA=()
tls_setup() {
  (cd "$WORK" &&
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -keyout key.pem -out cert.pem -days 2 -subj /CN=127.0.0.1 \
      -addext subjectAltName=IP:127.0.0.1) >/dev/null 2>&1
  SCHEME=wss
  ECHO_EXTRA=(--tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem")
  BENCH_EXTRA=(--ca "$WORK/cert.pem")
}

total_ir() { grep -m1 -E '^(summary|totals):' "$1" | awk '{print $2}'; }

# Calls of the function named $2 in callgrind output $1.
calls_of() {
  awk -v want="$2" '
    /^c?fn=\(/ {
      id = $0; sub(/^c?fn=\(/, "", id); sub(/\).*/, "", id)
      name = $0; sub(/^c?fn=\([0-9]+\) ?/, "", name)
      if (name != "") names[id] = name
      cur = (substr($0, 1, 3) == "cfn") ? names[id] : ""
      next
    }
    /^calls=/ && cur == want { split($0, a, /[= ]/); n += a[2] }
    END { print n + 0 }' "$1"
}

echo_run() { # OUT SECONDS bench-options...
  local out=$1 secs=$2
  shift 2
  valgrind --tool=callgrind --callgrind-out-file="$out" \
    "$HERALD" echo --listen 127.0.0.1:0 "${ECHO_EXTRA[@]}" >"$out.log" \
    2>"$out.vg" &
  local pid=$!
  for _ in $(seq 100); do
    grep -q 'listening on' "$out.log" 2>/dev/null && break
    sleep 0.2
  done
  local port
  port=$(sed -n 's/.*:\([0-9]*\)$/\1/p' "$out.log" | head -1)
  "$HERALD" bench "$SCHEME://127.0.0.1:$port/" "${BENCH_EXTRA[@]}" "$@" \
    --duration "$secs" \
    --warmup 1 --json >/dev/null || true
  kill -INT "$pid"
  wait "$pid" || true
}

echo_case() { # NAME bench-options...
  local name=$1
  shift
  echo_run "$WORK/a" 2 "$@"
  echo_run "$WORK/b" 6 "$@"
  local ia ib ca cb
  ia=$(total_ir "$WORK/a") ib=$(total_ir "$WORK/b")
  ca=$(calls_of "$WORK/a" on_message) cb=$(calls_of "$WORK/b" on_message)
  awk -v n="$name" -v ia="$ia" -v ib="$ib" -v ca="$ca" -v cb="$cb" 'BEGIN {
    printf "echo %-14s %10.1f instructions per echo (%d echoes apart)\n",
      n, (ib - ia) / (cb - ca), cb - ca }'
}

echo_window() { # CASE bench-options...
  local name=$1
  shift
  valgrind --tool=callgrind --callgrind-out-file="$WORK/w" \
    "$HERALD" echo --listen 127.0.0.1:0 "${ECHO_EXTRA[@]}" >"$WORK/w.log" \
    2>"$WORK/w.vg" &
  local pid=$!
  for _ in $(seq 100); do
    grep -q 'listening on' "$WORK/w.log" 2>/dev/null && break
    sleep 0.2
  done
  local port
  port=$(sed -n 's/.*:\([0-9]*\)$/\1/p' "$WORK/w.log" | head -1)
  "$HERALD" bench "$SCHEME://127.0.0.1:$port/" "${BENCH_EXTRA[@]}" "$@" \
    --duration 23 --warmup 1 --json >/dev/null &
  local bpid=$!
  sleep 15
  callgrind_control -z "$pid" >/dev/null 2>&1
  sleep 6
  callgrind_control -d "$pid" >/dev/null 2>&1
  wait "$bpid" || true
  kill -INT "$pid"
  wait "$pid" || true
  local f
  f=$(ls "$WORK"/w.* | grep -v -e '\.log$' -e '\.vg$' | head -1)
  awk -v n="$name" -v ir="$(total_ir "$f")" -v c="$(calls_of "$f" on_message)" \
    'BEGIN { printf "echo %-14s %10.1f instructions per echo (%d echoes in the window)\n",
      n, ir / c, c }'
}

fanout_run() { # OUT SECONDS THREADS bench-options...
  local out=$1 secs=$2 threads=$3
  shift 3
  cat >"$WORK/serve.json" <<'JSON'
{"anonymous": true, "log_level": "warn", "max_channels_total": 0,
 "rate_limits": {"commands": {"per_s": 0}, "publishes": {"per_s": 0},
                 "subscribes": {"per_s": 0}, "connections_per_ip": {"per_s": 0}},
 "namespaces": [{"name": "bench", "publish": true, "presence": false,
                 "history_size": 100, "history_ttl": 60}]}
JSON
  valgrind --tool=callgrind --callgrind-out-file="$out" \
    "$HERALD" serve --config "$WORK/serve.json" --listen 127.0.0.1:0 \
    --threads "$threads" >"$out.log" 2>"$out.vg" &
  local pid=$!
  for _ in $(seq 150); do
    grep -q 'listening on' "$out.log" 2>/dev/null && break
    sleep 0.2
  done
  local port
  port=$(sed -n 's/.*:\([0-9]*\)$/\1/p' "$out.log" | head -1)
  "$HERALD" bench "ws://127.0.0.1:$port/" --mode fanout "$@" \
    --duration "$secs" --warmup 1 --json >"$out.json" || true
  kill -TERM "$pid"
  wait "$pid" || true
}

fanout_case() { # THREADS bench-options...
  local threads=$1
  shift
  fanout_run "$WORK/a" 2 "$threads" "$@"
  fanout_run "$WORK/b" 6 "$threads" "$@"
  local ia ib ca cb
  ia=$(total_ir "$WORK/a") ib=$(total_ir "$WORK/b")
  ca=$(calls_of "$WORK/a" deliver) cb=$(calls_of "$WORK/b" deliver)
  awk -v n="$threads" -v ia="$ia" -v ib="$ib" -v ca="$ca" -v cb="$cb" 'BEGIN {
    printf "fanout --threads %-3s %10.1f instructions per delivery (%d deliveries apart)\n",
      n, (ib - ia) / (cb - ca), cb - ca }'
}

DRIVE=""
core_case() { # NAME SIZE COUNT CHUNK FRAGS [DEFLATE [STREAM [CLIENT [BUDGET]]]]
  local name=$1
  shift
  if [ -z "$DRIVE" ]; then
    DRIVE=$WORK/core_drive
    ${CC:-cc} -O2 -std=c17 -I"$ROOT/include" -o "$DRIVE" \
      "$HERE/core_drive.c" "$(dirname "$HERALD")/libherald_core.a" -lz \
      $(pkg-config --libs libisal 2>/dev/null)
  fi
  local line msgs
  line=$(valgrind --tool=callgrind --toggle-collect=measure \
    --toggle-collect=kernel_copy \
    --callgrind-out-file="$WORK/core" "$DRIVE" "$@" 2>/dev/null)
  msgs=$(echo "$line" | awk '{print $2}')
  awk -v n="$name" -v ir="$(total_ir "$WORK/core")" -v m="$msgs" 'BEGIN {
    printf "core %-14s %10.1f instructions per message\n", n, ir / m }'
}

case "${1:-all}" in
echo) shift; echo_case "$@" ;;
echo-tls) shift; tls_setup; echo_case "$@" ;;
echo-tls-window) shift; tls_setup; echo_window "$@" ;;
fanout) shift; fanout_case "$@" ;;
core) shift; core_case "$@" ;;
all)
  echo_case t32 --inflight 16 --size 32
  echo_case b32 --inflight 16 --size 32 --binary
  echo_case t32-c100 --connections 100 --inflight 16 --size 32
  echo_case t200 --inflight 16 --size 200
  echo_case d1k --inflight 16 --size 1K --deflate
  core_case t32 32 20000 65536 1
  core_case t32-reads100 32 20000 100 1
  core_case t32-r100-budget 32 20000 100 1 0 0 0 1
  core_case t125 125 20000 65536 1
  core_case t200 200 20000 65536 1
  core_case t4k 4096 2000 65536 1
  core_case t64k 65536 200 262144 1
  core_case t64k-reads4k 65536 200 4096 1
  core_case t64k-r4k-budget 65536 200 4096 1 0 0 0 1
  core_case frag4x1k 4096 2000 65536 4
  core_case t32-stream 32 20000 65536 1 0 1
  core_case t64k-stream 65536 200 16384 1 0 1
  core_case d1k 1024 2000 65536 1 1
  core_case d1k-budget 1024 2000 65536 1 1 0 0 1
  core_case d64k 65536 100 262144 1 1
  core_case client-t32 32 20000 65536 1 0 0 1
  core_case client-t32-r100 32 20000 100 1 0 0 1
  core_case client-d1k 1024 2000 65536 1 1 0 1
  ;;
*) sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
