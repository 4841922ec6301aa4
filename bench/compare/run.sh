#!/usr/bin/env bash
# bench/compare/run.sh - `herald bench` against herald echo and other echo
# servers, side by side in one run: Node `ws`, Bun (uWebSockets inside),
# libwebsockets (lws_echo.c) and a minimal epoll WebSocket echo (raw_echo.c).
#
# Every server runs on 127.0.0.1, pinned to one core; the load generator is
# pinned to the other. Each case is run --runs times per server, the servers
# taking turns, and the medians go into a Markdown table on stdout and into
# docs/performance.md between <!-- compare:begin --> and <!-- compare:end -->.
#
# --variant deflate and --variant tls measure permessage-deflate and wss://
# the same way, against herald, Node ws and Bun with the same options, beside
# herald's own plain (ws://, uncompressed) figures in the same run.
#
# HERALD_BASE=path/to/an/older/herald adds that build as herald-base
# ("herald echo (before)"), run like herald, for before/after in one table.
#
# --io-backend both runs herald twice, `herald echo --io-backend epoll` and
# `--io-backend io_uring` (herald-uring), side by side in the same run, and
# adds two large-message shapes (64 KiB on 40 x 2, 200 KiB on 20 x 1).
# Where perf can count the raw_syscalls:sys_enter tracepoint of a process,
# each server's syscalls per message over the measured window are shown.
#
# usage: bench/compare/run.sh [--variant plain|deflate|tls] [--quick]
#                             [--runs N] [--duration S] [--warmup S]
#                             [--only a,b] [--io-backend both|epoll|io_uring]
#                             [--no-doc] [--threads N] [--cases RE]
set -u

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DOC="$ROOT/docs/performance.md"
RUNS=3
DURATION=4
WARMUP=1
ONLY=""
WRITE_DOC=1
QUICK=0
VARIANT=plain
THREADS=1
BACKEND=""
CASE_FILTER=""

usage() {
  sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'
  cat <<'EOF'

  --variant V   plain (default), deflate (every peer negotiates
                permessage-deflate) or tls (every peer serves wss://)
  --quick       one run of 2 s per case and server (about 2 minutes)
  --runs N      runs per case and server; the median is reported (3)
  --duration S  measured seconds per run (4)
  --warmup S    warm-up seconds per run, not measured (1)
  --only LIST   servers to run, of herald,herald-base,herald-uring,raw,
                lws,ws,bun (all), and herald-uring-base (see HERALD_BASE)
  --io-backend B  herald's backend: epoll, io_uring, or both (herald on
                epoll beside herald-uring); default: herald's own default
  --no-doc      do not update docs/performance.md
  --threads N   herald echo on N loops (1); above 1 nothing is pinned,
                since the server's loops need the cores the load uses
  --cases RE    only the cases whose name matches the extended regular
                expression RE (e.g. 'ping-pong|^32 B,')

Environment: HERALD=path/to/herald (default build/herald, built if missing).
HERALD_BASE=path/to/the herald of another commit adds it as "herald echo
(before)" (herald-base) and, with --io-backend both, its io_uring server
too (herald-uring-base), for before/after in one run (HERALD_BEFORE is
another name for it).
EOF
}

while [ $# -gt 0 ]; do
  case "$1" in
  --variant) VARIANT=$2; shift ;;
  --quick) QUICK=1; RUNS=1; DURATION=2; WARMUP=0.5 ;;
  --runs) RUNS=$2; shift ;;
  --duration) DURATION=$2; shift ;;
  --warmup) WARMUP=$2; shift ;;
  --only) ONLY=$2; shift ;;
  --io-backend) BACKEND=$2; shift ;;
  --no-doc) WRITE_DOC=0 ;;
  --threads) THREADS=$2; shift ;;
  --cases) CASE_FILTER=$2; shift ;;
  -h | --help) usage; exit 0 ;;
  *) echo "run.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

log() { echo "compare: $*" >&2; }
case "$VARIANT" in
plain | deflate | tls) ;;
*) echo "run.sh: --variant takes plain, deflate or tls" >&2; exit 2 ;;
esac
case "$BACKEND" in
"" | epoll | io_uring | both) ;;
*) echo "run.sh: --io-backend takes epoll, io_uring or both" >&2; exit 2 ;;
esac

WORK=$(mktemp -d /tmp/herald-compare.XXXXXX)
SERVER_PIDS=()
cleanup() {
  # Only the servers this script started, by their PIDs.
  for p in "${SERVER_PIDS[@]}"; do
    kill "$p" 2>/dev/null
  done
  for p in "${SERVER_PIDS[@]}"; do
    wait "$p" 2>/dev/null
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

want() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }

# ---- pinning ---------------------------------------------------------------
SERVER_PIN=()
LOAD_PIN=()
NCPU=$(nproc 2>/dev/null || echo 1)
if [ "$THREADS" != 1 ]; then
  PIN_NOTE="not pinned: herald echo runs $THREADS loops beside the load generator"
elif command -v taskset >/dev/null && [ "$NCPU" -ge 2 ]; then
  SERVER_PIN=(taskset -c 1)
  LOAD_PIN=(taskset -c 0)
  PIN_NOTE="server pinned to CPU 1, load generator to CPU 0"
else
  PIN_NOTE="not pinned (taskset missing or one CPU)"
  log "warning: $PIN_NOTE"
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null

# ---- herald ----------------------------------------------------------------
HERALD=${HERALD:-$ROOT/build/herald}
if [ ! -x "$HERALD" ]; then
  log "building herald"
  (cmake -S "$ROOT" -B "$ROOT/build" -G Ninja -DCMAKE_BUILD_TYPE=Release &&
    cmake --build "$ROOT/build") >&2 || { log "cannot build herald"; exit 1; }
fi
CC=${CC:-cc}

# ---- peers: install and build what they need, or skip them -----------------
as_root() {
  if [ "$(id -u)" = 0 ]; then
    "$@"
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo "$@"
  else
    return 1
  fi
}

HERALD_BASE="${HERALD_BASE:-${HERALD_BEFORE:-}}"
PEERS=()
PEER_NOTE=()
want herald && PEERS+=(herald)
if [ -n "${HERALD_BASE:-}" ] && want herald-base; then
  if [ -x "$HERALD_BASE" ]; then
    PEERS+=(herald-base)
  else
    log "skipping herald-base: $HERALD_BASE is not executable"
  fi
fi
HERALD_BACKEND=()
if [ "$BACKEND" = both ]; then
  HERALD_BACKEND=(--io-backend epoll)
  want herald-uring && PEERS+=(herald-uring)
  # A before/after pair in one run: HERALD_BASE names another build, whose
  # io_uring server runs beside this one's as herald-uring-base.
  if [ -n "${HERALD_BASE:-}" ] && [ -x "$HERALD_BASE" ] &&
    want herald-uring-base; then
    PEERS+=(herald-uring-base)
    PEER_NOTE+=("herald-uring-base: $HERALD_BASE")
  fi
elif [ -n "$BACKEND" ]; then
  HERALD_BACKEND=(--io-backend "$BACKEND")
fi
if [ "$VARIANT" != plain ]; then
  # herald's own plain figures, in the same run; no raw or lws variant.
  want herald && PEERS+=(herald-plain)
  ONLY=${ONLY:-herald,ws,bun}
  ONLY=$(echo ",$ONLY," | sed 's/,raw,/,/; s/,lws,/,/; s/^,//; s/,$//')
fi

if want raw; then
  if $CC -O2 -std=c17 -D_GNU_SOURCE -o "$WORK/raw_echo" "$HERE/raw_echo.c"; then
    PEERS+=(raw)
  else
    log "skipping raw: raw_echo.c does not build"
  fi
fi

if want lws; then
  if ! pkg-config --exists libwebsockets 2>/dev/null; then
    log "installing libwebsockets-dev"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y \
      libwebsockets-dev >"$WORK/apt.log" 2>&1 ||
      { as_root apt-get update >>"$WORK/apt.log" 2>&1 &&
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y \
          libwebsockets-dev >>"$WORK/apt.log" 2>&1; }
  fi
  if pkg-config --exists libwebsockets 2>/dev/null &&
    $CC -O2 -std=c17 -D_GNU_SOURCE -o "$WORK/lws_echo" "$HERE/lws_echo.c" \
      $(pkg-config --cflags --libs libwebsockets); then
    PEERS+=(lws)
    PEER_NOTE+=("libwebsockets $(pkg-config --modversion libwebsockets | sed "s/-$//")")
  else
    log "skipping lws: libwebsockets-dev cannot be installed or lws_echo.c" \
      "does not build (see apt-get install libwebsockets-dev)"
  fi
fi

BUN=""
if want ws || want bun; then
  if command -v npm >/dev/null &&
    { [ ! -d "$HERE/node_modules/ws" ] || [ ! -d "$HERE/node_modules/bun" ]; }; then
    log "npm install (ws, bun) into bench/compare/node_modules"
    (cd "$HERE" && npm install --no-audit --no-fund) >"$WORK/npm.log" 2>&1 ||
      log "npm install failed: $(tail -3 "$WORK/npm.log")"
  fi
fi
if want ws; then
  if command -v node >/dev/null && [ -d "$HERE/node_modules/ws" ]; then
    PEERS+=(ws)
    WSV=$(node -p "require('$HERE/node_modules/ws/package.json').version")
    PEER_NOTE+=("Node $(node --version) with ws $WSV")
  else
    log "skipping ws: node or the npm package ws is missing"
  fi
fi
if want bun; then
  # The native binary, not a wrapper, so that --server-pid sees its CPU.
  for b in "$HERE"/node_modules/@oven/bun-linux-*/bin/bun \
    "$HERE/node_modules/bun/bin/bun.exe"; do
    if [ -x "$b" ] && [ "$(head -c 4 "$b" | tail -c 3)" = ELF ] &&
      "$b" --version >/dev/null 2>&1; then
      BUN=$b
      break
    fi
  done
  if [ -n "$BUN" ]; then
    PEERS+=(bun)
    PEER_NOTE+=("Bun $("$BUN" --version)")
  else
    log "skipping bun: the npm package bun did not provide a working binary"
  fi
fi

# ---- variant options ---------------------------------------------------------
# BENCH_OPTS go to every `herald bench` but herald-plain's; SCHEME is ws or wss.
SCHEME=ws
BENCH_OPTS=()
HERALD_OPTS=()
VARIANT_NOTE=""
if [ "$VARIANT" = tls ]; then
  SCHEME=wss
  ( cd "$WORK" &&
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -keyout ca.key -out ca.pem -days 2 -subj /CN=bench-ca \
      -addext basicConstraints=critical,CA:TRUE &&
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -keyout srv.key -out srv.csr -subj /CN=127.0.0.1 &&
    printf 'subjectAltName=IP:127.0.0.1\n' >san.ext &&
    openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
      -days 2 -extfile san.ext -out srv.pem ) >"$WORK/openssl.log" 2>&1 ||
    { log "openssl cannot make the certificates"; exit 1; }
  export TLS_CERT="$WORK/srv.pem" TLS_KEY="$WORK/srv.key"
  BENCH_OPTS=(--ca "$WORK/ca.pem")
  HERALD_OPTS=(--tls-cert "$TLS_CERT" --tls-key "$TLS_KEY")
  VARIANT_NOTE="Every server serves wss:// with the same P-256 ECDSA certificate (OpenSSL picks TLS 1.3 with its default suites); the load verifies it against its CA. herald (plain) is ws:// in the same run."
elif [ "$VARIANT" = deflate ]; then
  export DEFLATE=1
  BENCH_OPTS=(--deflate)
  VARIANT_NOTE="Every server accepts permessage-deflate with context takeover, window 15, zlib level 3 (herald's default; ws and Bun are set to match as far as they allow: ws threshold 64 and level 3; Bun's dedicated compressor, whose level uWebSockets fixes) and the load (herald bench --deflate, level 3) compresses too; herald (and its load) compress messages of 4 KiB and more with ISA-L's igzip level 2 instead of zlib (\`deflate.fast_min_size\`, its default; a herald built before 2026-12-07 has zlib only). The payload is \`abc...z\` repeated, very compressible. herald (plain) is uncompressed, in the same run."
fi

# ---- servers ---------------------------------------------------------------
free_port() {
  python3 -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

declare -A PID PORT
start_server() { # name: starts it, fills PID[name] and PORT[name]
  local name=$1 port
  port=$(free_port)
  local out="$WORK/$name.log"
  case "$name" in
  herald) "${SERVER_PIN[@]}" "$HERALD" echo --listen 127.0.0.1:0 \
    --threads "$THREADS" "${HERALD_BACKEND[@]}" "${HERALD_OPTS[@]}" >"$out" 2>&1 & ;;
  herald-base) "${SERVER_PIN[@]}" "$HERALD_BASE" echo --listen 127.0.0.1:0 \
    --threads "$THREADS" "${HERALD_BACKEND[@]}" "${HERALD_OPTS[@]}" >"$out" 2>&1 & ;;
  herald-uring) "${SERVER_PIN[@]}" "$HERALD" echo --listen 127.0.0.1:0 \
    --threads "$THREADS" --io-backend io_uring "${HERALD_OPTS[@]}" >"$out" 2>&1 & ;;
  herald-uring-base) "${SERVER_PIN[@]}" "$HERALD_BASE" echo --listen \
    127.0.0.1:0 --threads "$THREADS" --io-backend io_uring \
    "${HERALD_OPTS[@]}" >"$out" 2>&1 & ;;
  herald-plain) "${SERVER_PIN[@]}" "$HERALD" echo --listen 127.0.0.1:0 \
    "${HERALD_BACKEND[@]}" --no-deflate >"$out" 2>&1 & ;;
  raw) "${SERVER_PIN[@]}" "$WORK/raw_echo" "$port" >"$out" 2>&1 & ;;
  lws) "${SERVER_PIN[@]}" "$WORK/lws_echo" "$port" >"$out" 2>&1 & ;;
  ws) (cd "$HERE" && exec "${SERVER_PIN[@]}" node ws_echo.js "$port") >"$out" 2>&1 & ;;
  bun) (cd "$HERE" && exec "${SERVER_PIN[@]}" "$BUN" bun_echo.js "$port") >"$out" 2>&1 & ;;
  esac
  local pid=$!
  SERVER_PIDS+=("$pid")
  for _ in $(seq 100); do
    if grep -q "listening on" "$out" 2>/dev/null; then
      PID[$name]=$pid
      PORT[$name]=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$out" | head -1)
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  log "skipping $name: it did not start ($(tail -2 "$out" | tr '\n' ' '))"
  kill "$pid" 2>/dev/null
  return 1
}

RUNNING=()
for p in "${PEERS[@]}"; do
  start_server "$p" && RUNNING+=("$p")
done
[ ${#RUNNING[@]} -gt 0 ] || { log "no server to measure"; exit 1; }
log "servers: ${RUNNING[*]}; $RUNS run(s) of ${DURATION}s per case; $PIN_NOTE"

# ---- runs ------------------------------------------------------------------
# name|herald bench options
# 64 KiB messages run with 4 in flight: 16 x 64 KiB per connection overflows
# the caches and every server, the raw baseline too, loses about half.
# 16 MiB messages: 2 connections with 1 in flight each (bench/compare/large.sh
# measures the same shape with page faults).
case "$VARIANT" in
plain)
  CASES=(
    "32 B ping-pong, 1 conn x 1|--size 32 --connections 1 --inflight 1"
    "32 B, 1 conn x 16|--size 32 --connections 1 --inflight 16"
    "32 B, 100 conns x 16|--size 32 --connections 100 --inflight 16"
    "32 B, 1000 conns x 16|--size 32 --connections 1000 --inflight 16"
    "64 KiB text, 1 conn x 4|--size 64K --connections 1 --inflight 4"
    "64 KiB text, 10 conns x 4|--size 64K --connections 10 --inflight 4"
    "64 KiB binary, 10 conns x 4|--size 64K --binary --connections 10 --inflight 4"
    "16 MiB binary, 2 conns x 1|--size 16M --binary --connections 2 --inflight 1"
  )
  if [ "$BACKEND" = both ]; then
    # Two shapes where io_uring's receive pool (1 MiB at most) holds less
    # than the bytes in flight: large frames arrive over several passes.
    CASES+=(
      "64 KiB binary, 40 conns x 2|--size 64K --binary --connections 40 --inflight 2"
      "200 KiB binary, 20 conns x 1|--size 200K --binary --connections 20 --inflight 1"
    )
  fi ;;
deflate)
  CASES=(
    "256 B text, 100 conns x 8|--size 256 --connections 100 --inflight 8"
    "4 KiB text, 10 conns x 8|--size 4K --connections 10 --inflight 8"
    "16 KiB text, 10 conns x 8|--size 16K --connections 10 --inflight 8"
    "64 KiB text, 1 conn x 4|--size 64K --connections 1 --inflight 4"
  ) ;;
tls)
  CASES=(
    "32 B, 100 conns x 16|--size 32 --connections 100 --inflight 16"
    "256 B, 100 conns x 16|--size 256 --connections 100 --inflight 16"
    "4 KiB binary, 10 conns x 8|--size 4K --binary --connections 10 --inflight 8"
    "16 KiB binary, 10 conns x 8|--size 16K --binary --connections 10 --inflight 8"
    "64 KiB text, 10 conns x 4|--size 64K --connections 10 --inflight 4"
  ) ;;
esac
RESULTS="$WORK/results.jsonl"
: >"$RESULTS"
# Syscalls of a server over the measured window: perf counts the
# raw_syscalls:sys_enter tracepoint of its process (all threads), starting
# after the warm-up. Empty when perf cannot.
PERF_OK=0
if command -v perf >/dev/null &&
  perf stat -x, -e raw_syscalls:sys_enter -- true >/dev/null 2>&1; then
  PERF_OK=1
fi
count_syscalls() { # pid out-file: in the background
  [ "$PERF_OK" = 1 ] || return 0
  ( sleep "$WARMUP"; perf stat -x, -e raw_syscalls:sys_enter -p "$1" \
      -- sleep "$DURATION" 2>"$2" >/dev/null ) &
}
limit=$(python3 -c "print(int($DURATION + $WARMUP + 30))")
for c in "${CASES[@]}"; do
  cname=${c%%|*}
  opts=${c#*|}
  if [ -n "$CASE_FILTER" ] && ! grep -qE -- "$CASE_FILTER" <<<"$cname"; then
    continue
  fi
  for r in $(seq "$RUNS"); do
    for s in "${RUNNING[@]}"; do
      if ! kill -0 "${PID[$s]}" 2>/dev/null; then
        log "$s is gone; no more runs against it"
        continue
      fi
      # shellcheck disable=SC2086
      url="$SCHEME://127.0.0.1:${PORT[$s]}/"
      vopts=("${BENCH_OPTS[@]}")
      if [ "$s" = herald-plain ]; then
        url="ws://127.0.0.1:${PORT[$s]}/"
        vopts=()
      fi
      count_syscalls "${PID[$s]}" "$WORK/perf.out"
      perfpid=$!
      line=$(timeout "$limit" "${LOAD_PIN[@]}" "$HERALD" bench \
        "$url" "${vopts[@]}" $opts --duration "$DURATION" \
        --warmup "$WARMUP" --server-pid "${PID[$s]}" --json 2>>"$WORK/bench.err")
      rc=$?
      [ -n "$line" ] || line=null
      sysc=null
      if [ "$PERF_OK" = 1 ]; then
        wait "$perfpid" 2>/dev/null
        sysc=$(awk -F, '/raw_syscalls:sys_enter/ && $1 ~ /^[0-9]+$/ {print $1}' \
          "$WORK/perf.out" 2>/dev/null | head -1)
        [ -n "$sysc" ] || sysc=null
      fi
      printf '{"case":"%s","server":"%s","run":%d,"rc":%d,"sys":%s,"r":%s}\n' \
        "$cname" "$s" "$r" "$rc" "$sysc" "$line" >>"$RESULTS"
      log "$cname, run $r, $s: rc $rc $(echo "$line" | python3 -c \
        'import json,sys
d=json.loads(sys.stdin.read() or "null")
print("" if not d else "%.0f msgs/s, %s us/msg" % (d["msgs_per_s"], d.get("server_cpu_us_per_msg")))' 2>/dev/null)"
    done
  done
done

# ---- table -----------------------------------------------------------------
HVER=$("$HERALD" --version 2>/dev/null | awk '{print $2}')
HCOMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")
NOTE=$(printf '%s; ' "${PEER_NOTE[@]}")
TABLE="$WORK/table.md"
python3 - "$RESULTS" "$RUNS" "$DURATION" "$WARMUP" "$PIN_NOTE" \
  "herald $HVER (commit $HCOMMIT); ${NOTE%; }" "$QUICK" "$VARIANT" \
  "$VARIANT_NOTE" >"$TABLE" <<'EOF'
import json, statistics, sys, platform, datetime, os
path, runs, dur, warm, pin, versions, quick, variant, vnote = sys.argv[1:10]
rows = [json.loads(l) for l in open(path)]
cases, servers = [], []
for r in rows:
    if r["case"] not in cases:
        cases.append(r["case"])
    if r["server"] not in servers:
        servers.append(r["server"])
names = {"herald": "herald echo", "herald-plain": "herald (plain)",
         "herald-base": "herald echo (before)",
         "herald-uring": "herald echo, io_uring",
         "herald-uring-base": "herald echo, io_uring (HERALD_BASE)",
         "raw": "raw epoll (baseline)",
         "lws": "libwebsockets", "ws": "Node ws", "bun": "Bun"}

def med(case, server, key, sub=None):
    vals = []
    for r in rows:
        if r["case"] != case or r["server"] != server or not r["r"]:
            continue
        d = r["r"]
        if d.get("errors", 0) or r["rc"] != 0:
            continue
        v = d[key] if sub is None else d[key][sub]
        if v is not None:
            vals.append(v)
    return (statistics.median(vals), len(vals)) if vals else (None, 0)

def syscalls_per_msg(case, server):
    vals = []
    for r in rows:
        if r["case"] != case or r["server"] != server or not r["r"]:
            continue
        d = r["r"]
        if d.get("errors", 0) or r["rc"] != 0 or r.get("sys") is None:
            continue
        if d.get("msgs"):
            # perf's window is the bench's measured one, started from here.
            vals.append(r["sys"] / (d["msgs_per_s"] * float(dur)))
    return statistics.median(vals) if vals else None

have_sys = any(r.get("sys") is not None for r in rows)

def fmt(v, digits=0):
    if v is None:
        return "n/a"
    return f"{v:,.{digits}f}"

out = []
title = {"plain": "Echo servers compared (bench/compare)",
         "deflate": "Echo servers compared with permessage-deflate "
                    "(bench/compare --variant deflate)",
         "tls": "Echo servers compared over TLS (bench/compare --variant tls)"}
out.append("## " + title[variant])
out.append("")
flag = (" --quick" if quick == "1" else "") + \
    (f" --variant {variant}" if variant != "plain" else "")
when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
out.append(f"Generated by `bench/compare/run.sh{flag}` "
           f"on {when}, {os.cpu_count()} CPUs, Linux {platform.release()}; "
           f"{pin}. Load: `herald bench` (one thread); a case \"N conns x M\" "
           f"keeps M messages in flight on each of N connections. Median of {runs} run(s) of {dur} s each after "
           f"{warm} s of warm-up; the servers take turns within each run.")
out.append("")
out.append("- **msgs/s**: messages echoed back per second. **MB/s**: payload "
           "bytes echoed back per second, each message counted once (not "
           "sent + received), MB = 10^6 bytes.")
out.append("- **CPU µs/msg**: the server's user + system CPU time over the "
           "measured window (/proc/PID/stat) divided by the messages echoed. "
           "On this 2-core machine the load generator is often the "
           "bottleneck, so this is the robust comparison; msgs/s mostly "
           "shows which side saturates first.")
out.append("- **vs herald**: msgs/s ratio = peer / herald (above 1: the peer "
           "moved more); CPU ratio = peer / herald (above 1: the peer spent "
           "more CPU per message than herald).")
if variant == "plain":
    out.append("- raw epoll is `bench/compare/raw_echo.c`: handshake, then one "
               "read, unmask into server frames, one write per readable "
               "socket; no validation at all. It is the floor, not a usable "
               "server.")
else:
    out.append("- " + vnote)
if have_sys:
    out.append("- **syscalls/msg**: the server's system calls (perf's count of "
               "the raw_syscalls:sys_enter tracepoint for its process, over "
               "the measured window) divided by the messages echoed.")
out.append("")
sys_h, sys_a = (" syscalls/msg |", " ---: |") if have_sys else ("", "")
out.append("| case | server | msgs/s | MB/s | CPU µs/msg |" + sys_h +
           " p50 µs | msgs/s vs herald | CPU vs herald |")
out.append("| --- | --- | ---: | ---: | ---: |" + sys_a +
           " ---: | ---: | ---: |")
for c in cases:
    hm, _ = med(c, "herald", "msgs_per_s")
    hc, _ = med(c, "herald", "server_cpu_us_per_msg")
    for s in servers:
        m, n = med(c, s, "msgs_per_s")
        if n == 0:
            fails = [r for r in rows if r["case"] == c and r["server"] == s]
            out.append(f"| {c} | {names.get(s, s)} | failed ({len(fails)} "
                       f"run(s) with errors) | | | |" +
                       (" |" if have_sys else "") + " | | |")
            continue
        mb, _ = med(c, s, "mb_per_s")
        cpu, _ = med(c, s, "server_cpu_us_per_msg")
        p50, _ = med(c, s, "latency_us", "p50")
        rm = f"{m / hm:.2f}" if hm and m is not None else "n/a"
        rc = f"{cpu / hc:.2f}" if hc and cpu is not None else "n/a"
        mbd = 1 if mb is not None and mb < 100 else 0
        sc = (f" {fmt(syscalls_per_msg(c, s), 3)} |") if have_sys else ""
        out.append(f"| {c} | {names.get(s, s)} | {fmt(m)} | {fmt(mb, mbd)} | "
                   f"{fmt(cpu, 3)} |{sc} {fmt(p50, 0)} | {rm} | {rc} |")
out.append("")
out.append(f"Versions: {versions}.")
print("\n".join(out))
EOF
cat "$TABLE"

if [ "$WRITE_DOC" = 1 ]; then
  python3 - "$DOC" "$TABLE" "$VARIANT" <<'EOF'
import os, sys
doc, table, variant = sys.argv[1], sys.argv[2], sys.argv[3]
tag = "compare" if variant == "plain" else "compare-" + variant
begin, end = f"<!-- {tag}:begin -->", f"<!-- {tag}:end -->"
block = begin + "\n" + open(table).read().rstrip("\n") + "\n" + end
text = open(doc).read() if os.path.exists(doc) else "# Performance\n"
if begin in text and end in text and text.index(begin) < text.index(end):
    a = text.index(begin)
    b = text.index(end) + len(end)
    text = text[:a] + block + text[b:]
else:
    text = text.rstrip("\n") + "\n\n" + block + "\n"
tmp = doc + ".compare.tmp"
open(tmp, "w").write(text)
os.replace(tmp, doc)
EOF
  log "table written to docs/performance.md"
fi
