#!/usr/bin/env bash
# bench/redis/run.sh - fan-out across nodes over Redis, beside the memory
# engine, in the same run and under the same load (`herald bench --mode
# fanout`).
#
# Five set-ups, each with fresh redis-servers (own ports, no persistence)
# and fresh nodes for every run:
#   memory        one node, memory engine: subscribers and publisher on it
#   redis, 1 node one node, Redis engine: subscribers and publisher on it
#   redis, 2 nodes  subscribers on node B, publisher on node A
#   cluster, 1 master   as "2 nodes", over a Redis Cluster of one master
#   cluster, 3 masters  as "2 nodes", over a Redis Cluster of three masters
#                       (the channels spread over them by hash slot)
# Medians of --runs runs go to stdout and into docs/performance.md between
# <!-- redis:begin --> and <!-- redis:end -->.
#
# usage: bench/redis/run.sh [--quick] [--runs N] [--duration S] [--no-doc]
#                           [--setups "memory redis1 redis2 cluster1 cluster3"]
#                           [--rates "1000 4000 8000 16000 32000"]
set -u

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DOC="$ROOT/docs/performance.md"
RUNS=3
DURATION=4
WARMUP=1
WRITE_DOC=1
QUICK=0
SETUPS="memory redis1 redis2 cluster1 cluster3"
RATES=""
while [ $# -gt 0 ]; do
  case "$1" in
  --quick) QUICK=1; RUNS=1; DURATION=2 ;;
  --runs) RUNS=$2; shift ;;
  --duration) DURATION=$2; shift ;;
  --no-doc) WRITE_DOC=0 ;;
  --setups) SETUPS=$2; shift ;;
  --rates) RATES=$2; shift ;;
  -h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
log() { echo "redis-bench: $*" >&2; }

WORK=$(mktemp -d /tmp/herald-redis-bench.XXXXXX)
PIDS=()
cleanup() {
  # Only what this script started, by PID.
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ulimit -n "$(ulimit -Hn)" 2>/dev/null

HERALD=${HERALD:-$ROOT/build/herald}
if [ ! -x "$HERALD" ]; then
  (cmake -S "$ROOT" -B "$ROOT/build" -G Ninja -DCMAKE_BUILD_TYPE=Release &&
    cmake --build "$ROOT/build") >&2 || { log "cannot build herald"; exit 1; }
fi
REDIS=$(command -v redis-server) || { log "redis-server not installed"; exit 1; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start_redis() { # -> RPORT
  RPORT=$(free_port)
  "$REDIS" --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$WORK" --daemonize no --loglevel warning >"$WORK/redis.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do
    redis-cli -p "$RPORT" ping >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  log "redis-server did not start"
  return 1
}

# A port whose cluster bus port (+10000) exists and is free too.
cluster_port() {
  python3 -c '
import random, socket
while True:
    p = random.randrange(20000, 30000)
    try:
        for q in (p, p + 10000):
            s = socket.socket(); s.bind(("127.0.0.1", q)); s.close()
        print(p); break
    except OSError:
        pass'
}

start_cluster() { # masters -> CPORTS (seed list "127.0.0.1:p,...")
  local n=$1 ports=() p
  for _ in $(seq "$n"); do
    p=$(cluster_port)
    mkdir -p "$WORK/c$p"
    "$REDIS" --port "$p" --bind 127.0.0.1 --save '' --appendonly no \
      --dir "$WORK/c$p" --daemonize no --loglevel warning \
      --cluster-enabled yes --cluster-config-file nodes.conf \
      --cluster-node-timeout 5000 >"$WORK/c$p.log" 2>&1 &
    PIDS+=($!)
    ports+=("$p")
  done
  for p in "${ports[@]}"; do
    for _ in $(seq 100); do
      redis-cli -p "$p" ping >/dev/null 2>&1 && break
      sleep 0.05
    done
  done
  if [ "$n" = 1 ]; then
    redis-cli -p "${ports[0]}" cluster addslotsrange 0 16383 >/dev/null
  else
    redis-cli --cluster create $(printf '127.0.0.1:%s ' "${ports[@]}") \
      --cluster-replicas 0 --cluster-yes >"$WORK/create.log" 2>&1 ||
      { log "cluster create failed: $(tail -2 "$WORK/create.log")"; return 1; }
  fi
  for p in "${ports[@]}"; do
    for _ in $(seq 200); do
      redis-cli -p "$p" cluster info 2>/dev/null | grep -q 'cluster_state:ok' &&
        break
      sleep 0.05
    done
  done
  CPORTS=$(printf '"127.0.0.1:%s",' "${ports[@]}")
  CPORTS=${CPORTS%,}
}

start_node() { # name engine -> NODE_PID NODE_PORT
  local name=$1 engine=$2 out="$WORK/$1.log" cfg="$WORK/$1.json"
  if [ "$engine" = redis ]; then
    printf '{"anonymous":true,"log_level":"warn","rate_limits":{"commands":{"per_s":0},"publishes":{"per_s":0},"subscribes":{"per_s":0},"connections_per_ip":{"per_s":0}},"engine":"redis","redis":{"addresses":["127.0.0.1:%s"]},"namespaces":[{"name":"bench","publish":true,"history_size":100,"history_ttl":60}]}' "$RPORT" >"$cfg"
  elif [ "$engine" = cluster ]; then
    printf '{"anonymous":true,"log_level":"warn","rate_limits":{"commands":{"per_s":0},"publishes":{"per_s":0},"subscribes":{"per_s":0},"connections_per_ip":{"per_s":0}},"engine":"redis","redis":{"cluster":{"addresses":[%s]}},"namespaces":[{"name":"bench","publish":true,"history_size":100,"history_ttl":60}]}' "$CPORTS" >"$cfg"
  else
    printf '{"anonymous":true,"log_level":"warn","rate_limits":{"commands":{"per_s":0},"publishes":{"per_s":0},"subscribes":{"per_s":0},"connections_per_ip":{"per_s":0}},"namespaces":[{"name":"bench","publish":true,"history_size":100,"history_ttl":60}]}' >"$cfg"
  fi
  "$HERALD" serve --config "$cfg" --listen 127.0.0.1:0 --node-name "$name" \
    >"$out" 2>&1 &
  NODE_PID=$!
  PIDS+=("$NODE_PID")
  for _ in $(seq 100); do
    NODE_PORT=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$out" | head -1)
    if [ -n "$NODE_PORT" ]; then
      # Ready when healthy (Redis connected).
      for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$NODE_PORT/health" >/dev/null && return 0
        sleep 0.05
      done
    fi
    sleep 0.05
  done
  log "node $name did not start: $(tail -2 "$out")"
  return 1
}

stop_all() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
  PIDS=()
}

if [ -n "${RATES:-}" ]; then
  :
elif [ "$QUICK" = 1 ]; then
  RATES="1000 8000"
else
  RATES="1000 4000 8000 16000 32000"
fi
OPTS="--connections 1000 --channels 100 --size 100"
RESULTS="$WORK/results.jsonl"
: >"$RESULTS"
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
limit=$((DURATION + WARMUP + 60))
for rate in $RATES; do
  for r in $(seq "$RUNS"); do
    for setup in $SETUPS; do
      extra=()
      case $setup in
      memory)
        start_node m memory || continue
        SUB_PORT=$NODE_PORT; SUB_PID=$NODE_PID ;;
      redis1)
        start_redis || continue
        start_node a redis || continue
        SUB_PORT=$NODE_PORT; SUB_PID=$NODE_PID ;;
      redis2)
        start_redis || continue
        start_node a redis || continue
        PUB_PORT=$NODE_PORT
        start_node b redis || continue
        SUB_PORT=$NODE_PORT; SUB_PID=$NODE_PID
        extra=(--publish-url "ws://127.0.0.1:$PUB_PORT/") ;;
      cluster1 | cluster3)
        start_cluster "${setup#cluster}" || { stop_all; continue; }
        start_node a cluster || { stop_all; continue; }
        PUB_PORT=$NODE_PORT
        start_node b cluster || { stop_all; continue; }
        SUB_PORT=$NODE_PORT; SUB_PID=$NODE_PID
        extra=(--publish-url "ws://127.0.0.1:$PUB_PORT/") ;;
      esac
      # shellcheck disable=SC2086
      line=$(timeout "$limit" "$HERALD" bench "ws://127.0.0.1:$SUB_PORT/" \
        --mode fanout $OPTS "${extra[@]}" --rate "$rate" \
        --duration "$DURATION" --warmup "$WARMUP" --server-pid "$SUB_PID" \
        --json 2>>"$WORK/bench.err" | tail -1)
      rc=$?
      stop_all
      [ -n "$line" ] || line=null
      printf '{"setup":"%s","rate":%s,"run":%d,"rc":%d,"r":%s}\n' \
        "$setup" "$rate" "$r" "$rc" "$line" >>"$RESULTS"
      log "rate $rate, run $r, $setup: $(echo "$line" | python3 -c '
import json,sys
d=json.loads(sys.stdin.read() or "null")
print("no result" if not d else "%.0f delivered/s, p50 %.2f ms, p99 %.2f ms, errors %d" % (d["delivered_per_s"], d["latency_us"]["p50"]/1e3, d["latency_us"]["p99"]/1e3, d["errors"]))' 2>/dev/null)"
    done
  done
done

HVER=$("$HERALD" --version | awk '{print $2}')
HCOMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")
RVER=$("$REDIS" --version | sed -n 's/.*v=\([0-9.]*\).*/\1/p')
TABLE="$WORK/table.md"
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)
python3 - "$RESULTS" "$RUNS" "$DURATION" "$WARMUP" \
  "herald $HVER (commit $HCOMMIT), Redis $RVER" "$QUICK" "$LOAD0" "$LOAD1" \
  >"$TABLE" <<'PY'
import json, statistics, sys, datetime, platform, os
path, runs, dur, warm, versions, quick, load0, load1 = sys.argv[1:9]
rows = [json.loads(l) for l in open(path)]
names = {"memory": "memory, 1 node", "redis1": "Redis, 1 node",
         "redis2": "Redis, 2 nodes (across)",
         "cluster1": "Redis Cluster, 1 master, 2 nodes (across)",
         "cluster3": "Redis Cluster, 3 masters, 2 nodes (across)"}
def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None
out = ["## Scale-out over Redis (bench/redis)", ""]
when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
out.append(f"Generated by `bench/redis/run.sh{' --quick' if quick == '1' else ''}` on {when}, "
           f"{os.cpu_count()} CPUs, Linux {platform.release()}; {versions}; "
           "nothing pinned: redis-server, the nodes and the load generator "
           "share the two cores. Load: `herald bench --mode fanout`, 1,000 "
           "subscribers over 100 channels (10 each), one publisher sending "
           "~100-byte `publish` commands at a fixed rate round-robin over the "
           "channels. **memory**: one node with the memory engine. **Redis, "
           "1 node**: the same through Redis (every publish is a Lua script "
           "call, every delivery comes back over sharded pub/sub). **Redis, "
           "2 nodes**: the publisher on node A, the subscribers on node B. "
           "**Redis Cluster**: the same two nodes over a cluster of one "
           "master (every slot) or three (the 100 channels spread over them "
           "by hash slot; no replicas), `redis.cluster` seeded with every "
           "master. "
           f"Median of {runs} run(s) of {dur} s after {warm} s of warm-up, "
           "fresh processes for each; set-ups alternate within each rate and "
           "run, so they share the machine's conditions. Load average "
           f"(1, 5, 15 min) before the run {load0}, after it {load1}: "
           "anything above ~0 is other work on the machine. CPU: the "
           "subscribers' node, as a share of one core.")
out.append("")
out.append("| publish rate /s | set-up | delivered/s | % | p50 ms | p99 ms | CPU | errors |")
out.append("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
rates = sorted({r["rate"] for r in rows})
for rate in rates:
    for s in ("memory", "redis1", "redis2", "cluster1", "cluster3"):
        rs = [r["r"] for r in rows if r["rate"] == rate and r["setup"] == s and r["r"]]
        if not rs:
            continue
        d = med([x["delivered_per_s"] for x in rs])
        pct = f"{100*med([x['delivery_ratio'] for x in rs]):.1f}"
        p50 = med([x["latency_us"]["p50"] for x in rs]) / 1e3
        p99 = med([x["latency_us"]["p99"] for x in rs]) / 1e3
        cpu = med([x["server_cpu_s"] / x["duration_s"]
                   if x.get("server_cpu_s") is not None and x["duration_s"]
                   else None for x in rs])
        cpu = f"{100*cpu:.0f}%" if cpu is not None else "-"
        err = max(x["errors"] for x in rs)
        out.append(f"| {rate:,} | {names[s]} | {d:,.0f} | {pct} | {p50:.2f} | {p99:.2f} | {cpu} | {err} |")
print("\n".join(out))
PY
cat "$TABLE"
if [ "$WRITE_DOC" = 1 ] && grep -q '<!-- redis:begin -->' "$DOC"; then
  python3 - "$DOC" "$TABLE" <<'PY'
import sys
doc, table = sys.argv[1:3]
s = open(doc).read()
a = s.index("<!-- redis:begin -->") + len("<!-- redis:begin -->")
b = s.index("<!-- redis:end -->")
s = s[:a] + "\n" + open(table).read() + "\n" + s[b:]
open(doc, "w").write(s)
PY
  log "docs/performance.md updated"
fi
