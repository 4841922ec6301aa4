#!/usr/bin/env bash
# bench/fanout/run.sh - push fan-out: `herald serve` beside Bun's pub/sub
# (uWebSockets topics, bun_pubsub.js) in the same run, under the same load
# from `herald bench --mode fanout`.
#
# Scenarios: 10,000 subscribers on one channel, and 1,000 channels x 10
# subscribers, each at a ladder of publish rates; every run starts a fresh
# server, so the first run of each scenario also gives the server's RSS per
# subscribed idle client. Medians of --runs runs go to stdout and into
# docs/performance.md between <!-- fanout:begin --> and <!-- fanout:end -->.
#
# usage: bench/fanout/run.sh [--quick] [--runs N] [--duration S] [--no-doc]
#                            [--only herald,bun] [--threads 1,2]
#                            [--scenario channels|broadcast] [--rates LIST]
#
# --threads 1,2 runs herald serve once per thread count (as "herald tN");
# with more than one count no process is pinned: the servers and the load
# generator share every core, as the table says.
set -u

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DOC="$ROOT/docs/performance.md"
RUNS=3
DURATION=3
WARMUP=1
WRITE_DOC=1
QUICK=0
ONLY=""
THREADS=1
ONLY_SCEN=""
RATES=""
while [ $# -gt 0 ]; do
  case "$1" in
  --threads) THREADS=$2; shift ;;
  --scenario) ONLY_SCEN=$2; shift ;;
  --rates) RATES=$2; shift ;;
  --quick) QUICK=1; RUNS=1; DURATION=2 ;;
  --runs) RUNS=$2; shift ;;
  --duration) DURATION=$2; shift ;;
  --only) ONLY=$2; shift ;;
  --no-doc) WRITE_DOC=0 ;;
  -h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
log() { echo "fanout: $*" >&2; }
want() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }

WORK=$(mktemp -d /tmp/herald-fanout.XXXXXX)
SERVER_PID=""
cleanup() {
  # Only the server this script started, by its PID.
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ulimit -n "$(ulimit -Hn)" 2>/dev/null

SERVER_PIN=()
LOAD_PIN=()
if [[ "$THREADS" == *,* ]]; then
  PIN_NOTE="not pinned: herald serve's loops and the load generator share all $(nproc) CPUs"
elif command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  SERVER_PIN=(taskset -c 1)
  LOAD_PIN=(taskset -c 0)
  PIN_NOTE="server pinned to CPU 1, load generator to CPU 0"
else
  PIN_NOTE="not pinned"
fi

HERALD=${HERALD:-$ROOT/build/herald}
if [ ! -x "$HERALD" ]; then
  (cmake -S "$ROOT" -B "$ROOT/build" -G Ninja -DCMAKE_BUILD_TYPE=Release &&
    cmake --build "$ROOT/build") >&2 || { log "cannot build herald"; exit 1; }
fi

SERVERS=()
if want herald; then
  if [ "$THREADS" = 1 ]; then
    SERVERS+=(herald)
  else
    for t in ${THREADS//,/ }; do SERVERS+=("herald-t$t"); done
  fi
fi
BUN=""
if want bun; then
  CMP="$ROOT/bench/compare"
  if [ ! -d "$CMP/node_modules/bun" ] && command -v npm >/dev/null; then
    log "npm install (bun) into bench/compare/node_modules"
    (cd "$CMP" && npm install --no-audit --no-fund) >"$WORK/npm.log" 2>&1
  fi
  # The native binary, not a wrapper, so that --server-pid sees its CPU.
  for b in "$CMP"/node_modules/@oven/bun-linux-*/bin/bun \
    "$CMP/node_modules/bun/bin/bun.exe"; do
    if [ -x "$b" ] && [ "$(head -c 4 "$b" | tail -c 3)" = ELF ] &&
      "$b" --version >/dev/null 2>&1; then
      BUN=$b
      break
    fi
  done
  if [ -n "$BUN" ]; then SERVERS+=(bun); else log "skipping bun: no binary"; fi
fi

cat >"$WORK/herald.json" <<'JSON'
{"anonymous": true, "log_level": "warn", "max_channels_total": 0,
 "rate_limits": {"commands": {"per_s": 0}, "publishes": {"per_s": 0},
                 "subscribes": {"per_s": 0}, "connections_per_ip": {"per_s": 0}},
 "namespaces": [{"name": "bench", "publish": true, "presence": false,
                 "history_size": 100, "history_ttl": 60}]}
JSON

start_server() { # name -> SERVER_PID, PORT
  local name=$1 out="$WORK/$1.log"
  case "$name" in
  herald) "${SERVER_PIN[@]}" "$HERALD" serve --config "$WORK/herald.json" \
    --listen 127.0.0.1:0 >"$out" 2>&1 & ;;
  herald-t*) "${SERVER_PIN[@]}" "$HERALD" serve --config "$WORK/herald.json" \
    --listen 127.0.0.1:0 --threads "${name#herald-t}" >"$out" 2>&1 & ;;
  bun) (cd "$HERE" && exec "${SERVER_PIN[@]}" "$BUN" bun_pubsub.js 0) >"$out" 2>&1 & ;;
  esac
  SERVER_PID=$!
  for _ in $(seq 100); do
    PORT=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$out" | head -1)
    [ -n "$PORT" ] && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  log "$name did not start: $(tail -2 "$out")"
  return 1
}
stop_server() {
  kill "$SERVER_PID" 2>/dev/null
  wait "$SERVER_PID" 2>/dev/null
  SERVER_PID=""
}

# scenario|bench options|rates
if [ "$QUICK" = 1 ]; then
  SCEN=(
    "10,000 subscribers, 1 channel|--connections 10000 --channels 1|0 50 200"
    "1,000 channels x 10 subscribers|--connections 10000 --channels 1000|0 5000 20000"
  )
else
  SCEN=(
    "10,000 subscribers, 1 channel|--connections 10000 --channels 1|0 50 100 200 300 400"
    "1,000 channels x 10 subscribers|--connections 10000 --channels 1000|0 2500 10000 40000 80000 120000 160000 200000"
  )
fi
if [ -n "$ONLY_SCEN" ]; then
  keep=()
  for sc in "${SCEN[@]}"; do
    case "$ONLY_SCEN:$sc" in
    channels:1,000*|broadcast:10,000*) keep+=("$sc") ;;
    esac
  done
  SCEN=("${keep[@]}")
fi
if [ -n "$RATES" ]; then
  for i in "${!SCEN[@]}"; do
    SCEN[$i]="${SCEN[$i]%|*}|0 ${RATES//,/ }"
  done
fi
RESULTS="$WORK/results.jsonl"
: >"$RESULTS"
limit=$((DURATION + WARMUP + 60))
for sc in "${SCEN[@]}"; do
  IFS='|' read -r sname sopts rates <<<"$sc"
  for rate in $rates; do
    for r in $(seq "$RUNS"); do
      for s in "${SERVERS[@]}"; do
        start_server "$s" || continue
        sleep 0.3
        # shellcheck disable=SC2086
        line=$(timeout "$limit" "${LOAD_PIN[@]}" "$HERALD" bench \
          "ws://127.0.0.1:$PORT/" --mode fanout $sopts --rate "$rate" \
          --size 100 --duration "$DURATION" --warmup "$WARMUP" \
          --server-pid "$SERVER_PID" --json 2>>"$WORK/bench.err" | tail -1)
        rc=$?
        stop_server
        [ -n "$line" ] || line=null
        printf '{"scenario":"%s","rate":%s,"server":"%s","run":%d,"rc":%d,"r":%s}\n' \
          "$sname" "$rate" "$s" "$r" "$rc" "$line" >>"$RESULTS"
        log "$sname, rate $rate, run $r, $s: $(echo "$line" | python3 -c '
import json,sys
d=json.loads(sys.stdin.read() or "null")
print("no result" if not d else "%.0f delivered/s, p50 %.1f ms, p99 %.1f ms, %s B/sub, errors %d" % (d["delivered_per_s"], d["latency_us"]["p50"]/1e3, d["latency_us"]["p99"]/1e3, d.get("server_bytes_per_subscriber"), d["errors"]))' 2>/dev/null)"
      done
    done
  done
done

HVER=$("$HERALD" --version | awk '{print $2}')
HCOMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")
BVER=""
[ -n "$BUN" ] && BVER="; Bun $("$BUN" --version)"
TABLE="$WORK/table.md"
python3 - "$RESULTS" "$RUNS" "$DURATION" "$WARMUP" "$PIN_NOTE" \
  "herald $HVER (commit $HCOMMIT)$BVER" "$QUICK" >"$TABLE" <<'PY'
import json, statistics, sys, datetime, platform, os
path, runs, dur, warm, pin, versions, quick = sys.argv[1:8]
rows = [json.loads(l) for l in open(path)]
names = {"herald": "herald serve", "bun": "Bun pub/sub",
         **{f"herald-t{t}": f"herald serve --threads {t}" for t in range(1, 257)}}
scen, servers = [], []
for r in rows:
    if r["scenario"] not in scen: scen.append(r["scenario"])
    if r["server"] not in servers: servers.append(r["server"])
def runs_of(sc, rate, s):
    return [r["r"] for r in rows if r["scenario"] == sc and r["rate"] == rate
            and r["server"] == s and r["r"]]
def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None
out = ["## Push fan-out (bench/fanout)", ""]
when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
out.append(f"Generated by `bench/fanout/run.sh{' --quick' if quick == '1' else ''}` on {when}, "
           f"{os.cpu_count()} CPUs, Linux {platform.release()}; {pin}. Load: "
           "`herald bench --mode fanout` (one thread): 10,000 subscriber "
           "WebSockets that `connect` and `subscribe`, one publisher "
           "WebSocket sending `publish` commands of about 100 bytes at a "
           "fixed rate (open loop), each carrying its send time. Every run "
           f"starts a fresh server; median of {runs} run(s) of {dur} s after "
           f"{warm} s of warm-up. Bun runs bench/fanout/bun_pubsub.js, the "
           "same protocol subset on `server.publish()` (uWebSockets topics), "
           "with the same 4 MiB per-client output cap; herald serve runs one "
           "thread (or --threads N, as named) with a namespace `bench` (client publishing on, history "
           "100, no presence).")
out.append("")
out.append("- **delivered/s**: pushes received by all subscribers per "
           "second; **%**: of the deliveries the publications sent in the "
           "window call for (below 100: the server fell behind, or cut "
           "slow subscribers off).")
out.append("- **p50/p99 ms**: publish-to-delivery latency, from the "
           "publisher's send call to a subscriber's receipt, over every "
           "delivery in the window.")
out.append("- **CPU**: the server's CPU time over the window, as a share of "
           "one core. On two cores the load generator (one thread) "
           "receives every delivery itself, so past a point it is the "
           "bottleneck for both servers.")
out.append("")
for sc in scen:
    out.append(f"### {sc}")
    out.append("")
    mem = []
    for s in servers:
        b = med([d.get("server_bytes_per_subscriber") for d in runs_of(sc, 0, s)])
        if b is not None:
            mem.append(f"{names.get(s, s)} {b:,.0f} bytes")
    if mem:
        out.append("Server RSS per subscribed idle client (rate 0; RSS after "
                   "10,000 subscribed minus before the first): " +
                   ", ".join(mem) + ".")
        out.append("")
    out.append("| publish rate /s | server | delivered/s | % | p50 ms | p99 ms | CPU | CPU ns/delivery | errors |")
    out.append("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    per_delivery = {}
    rates = sorted({r["rate"] for r in rows if r["scenario"] == sc and r["rate"] > 0})
    peak = {}
    for rate in rates:
        for s in servers:
            rs = runs_of(sc, rate, s)
            if not rs:
                out.append(f"| {rate:,} | {names.get(s, s)} | failed | | | | | | |")
                continue
            dl = med([d["delivered_per_s"] for d in rs])
            ratio = med([d["delivery_ratio"] for d in rs])
            p50 = med([d["latency_us"]["p50"] for d in rs])
            p99 = med([d["latency_us"]["p99"] for d in rs])
            cpu = med([d["server_cpu_s"] / d["duration_s"] if d.get("server_cpu_s") is not None and d["duration_s"] else None for d in rs])
            err = med([d["errors"] for d in rs])
            if ratio is not None and ratio >= 0.99:
                peak[s] = max(peak.get(s, 0), dl)
            cpd = med([d["server_cpu_s"] / (d["delivered_per_s"] * d["duration_s"]) * 1e9
                       if d.get("server_cpu_s") and d["delivered_per_s"] else None for d in rs])
            if cpd is not None:
                per_delivery.setdefault(rate, {})[s] = cpd
            out.append(f"| {rate:,} | {names.get(s, s)} | {dl:,.0f} | {ratio*100:.1f} | "
                       f"{p50/1e3:.2f} | {p99/1e3:.2f} | "
                       f"{'n/a' if cpu is None else f'{cpu*100:.0f} %'} | "
                       f"{'n/a' if cpd is None else f'{cpd:,.0f}'} | {err:.0f} |")
    out.append("")
    if peak:
        parts = [f"{names.get(s, s)} {v:,.0f}/s" for s, v in peak.items()]
        line = "Highest delivered rate with at least 99 % delivered: " + ", ".join(parts)
        if "herald" in peak and "bun" in peak and peak["bun"]:
            line += f" (herald / Bun = {peak['herald'] / peak['bun']:.2f})"
        out.append(line + ".")
        out.append("")
    ratios = [v["herald-t2"] / v["herald-t1"] for v in per_delivery.values()
              if v.get("herald-t1") and v.get("herald-t2")]
    if ratios:
        out.append("Server CPU per delivery, --threads 2 / --threads 1 "
                   f"(median over the rates): {statistics.median(ratios):.2f}.")
        out.append("")
out.append(f"Versions: {versions}.")
print("\n".join(out))
PY
cat "$TABLE"
if [ "$WRITE_DOC" = 1 ]; then
  python3 - "$DOC" "$TABLE" <<'PY'
import os, sys
doc, table = sys.argv[1], sys.argv[2]
begin, end = "<!-- fanout:begin -->", "<!-- fanout:end -->"
block = begin + "\n" + open(table).read().rstrip("\n") + "\n" + end
text = open(doc).read()
if begin in text and end in text:
    a, b = text.index(begin), text.index(end) + len(end)
    text = text[:a] + block + text[b:]
else:
    text = text.rstrip("\n") + "\n\n" + block + "\n"
open(doc + ".tmp", "w").write(text)
os.replace(doc + ".tmp", doc)
PY
  log "table written to docs/performance.md"
fi
