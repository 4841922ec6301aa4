#!/usr/bin/python3
"""bench/backend/bench.py - what asking the application's backend costs:
connect rate and subscribe latency of `herald serve` with the proxy off
(a JWT at connect, no subscribe proxy) beside on (connect_url and a
namespace's subscribe_proxy_url answered by a local backend), in one run
under the same load.

The backend is a small threaded HTTP server (Python's standard library)
that answers at once, so the numbers show herald's own cost per proxied
request (a libcurl request on the loop, JSON in and out) plus the
backend's; a real backend adds its own latency to the proxied rows.

usage: bench/backend/run.sh [--herald PATH] [--conns N] [--subs N]
                            [--workers N] [--no-doc]
Writes the table to stdout and into docs/performance.md between
<!-- backend:begin --> and <!-- backend:end -->.
"""

import argparse
import os
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(ROOT, "tests", "push"))
import lib  # noqa: E402
import backend as btest  # noqa: E402

SECRET = btest.SECRET


def run(srv, tokens, nconns, nsubs, workers):
    """Connects nconns clients from `workers` threads (connect rate), then
    each worker's first client times nsubs subscribe round trips."""
    lat = []
    done = [0]
    lock = threading.Lock()
    per = nconns // workers

    def worker(k):
        mine = []
        for i in range(per):
            w = lib.WS(srv.port)
            r = w.connect(tokens[k * per + i] if tokens else None)
            if "result" not in r:
                raise RuntimeError(f"connect failed: {r}")
            mine.append(w)
        with lock:
            done[0] += len(mine)
        t = []
        for j in range(nsubs // workers):
            t0 = time.perf_counter()
            r = mine[0].call("subscribe", {"channel": f"pub:b{k}x{j}"})
            t.append(time.perf_counter() - t0)
            if "result" not in r:
                raise RuntimeError(f"subscribe failed: {r}")
        with lock:
            lat.extend(t)
        for w in mine:
            w.abort()

    th = [threading.Thread(target=worker, args=(k,)) for k in range(workers)]
    t0 = time.perf_counter()
    for x in th:
        x.start()
    for x in th:
        x.join()
    total = time.perf_counter() - t0
    return done[0], lat, total


def measure(herald, proxy, nconns, nsubs, workers):
    lib.HERALD = herald
    b = btest.Backend() if proxy else None
    ns = [dict(n) for n in btest.NS]
    cfg = {"anonymous": False, "jwt": {"hmac_secret": SECRET},
           "namespaces": ns, "log_level": "warn", "max_channels": 100000,
           "rate_limits": {k: {"per_s": 0} for k in
                           ("commands", "publishes", "subscribes",
                            "connections_per_ip")}}
    tokens = None
    if proxy:
        cfg["proxy"] = {"connect_url": b.url("connect"), "timeout_ms": 5000}
        ns[0]["subscribe_proxy_url"] = b.url("subscribe")
        b.answers["connect"] = {"result": {"user": "bench"}}
        b.answers["subscribe"] = {"result": {}}
    else:
        tok = lib.jwt_hs256({"sub": "bench", "exp": lib.now() + 3600}, SECRET)
        tokens = [tok] * nconns
    srv = lib.Server(cfg)
    try:
        # Subscribe latency, then the connect rate alone (a second round
        # without subscribes: from the first handshake to the last reply).
        _, lat, _ = run(srv, tokens, nconns, nsubs, workers)
        n, _, t_conn = run(srv, tokens, nconns, 0, workers)
        rate = n / t_conn
    finally:
        srv.stop()
        if b:
            b.close()
    lat.sort()
    return {"rate": rate, "p50": lat[len(lat) // 2] * 1e3,
            "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3,
            "mean": statistics.mean(lat) * 1e3}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--herald", default=os.path.join(ROOT, "build", "rel",
                                                     "herald"))
    ap.add_argument("--conns", type=int, default=2000)
    ap.add_argument("--subs", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-doc", action="store_true")
    a = ap.parse_args()
    got = {False: [], True: []}
    for _ in range(a.runs):  # alternated, so drift hits both alike
        for proxy in (False, True):
            r = measure(os.path.abspath(a.herald), proxy, a.conns, a.subs,
                        a.workers)
            got[proxy].append(r)
            print(f"proxy {'on ' if proxy else 'off'}: connect "
                  f"{r['rate']:.0f}/s, subscribe p50 {r['p50']:.2f} ms "
                  f"p99 {r['p99']:.2f} ms", flush=True)
    rows = [(p, {k: statistics.median(r[k] for r in got[p])
                 for k in got[p][0]}) for p in (False, True)]
    table = ["| proxy | connects/s | subscribe p50 | subscribe p99 | "
             "subscribe mean |", "| --- | --- | --- | --- | --- |"]
    for proxy, r in rows:
        table.append(f"| {'on (connect + subscribe)' if proxy else 'off (JWT)'}"
                     f" | {r['rate']:.0f} | {r['p50']:.2f} ms | "
                     f"{r['p99']:.2f} ms | {r['mean']:.2f} ms |")
    text = "\n".join(table)
    text += (f"\n\nMedians of {a.runs} alternated runs. {a.conns} "
             f"connections from {a.workers} client threads (Python, one "
             f"WebSocket handshake and `connect` each), then {a.subs} "
             f"subscribes, one at a time per thread; "
             f"`bench/backend/run.sh`.\n")
    print(text)
    if not a.no_doc:
        doc = os.path.join(ROOT, "docs", "performance.md")
        s = open(doc).read()
        begin, end = "<!-- backend:begin -->", "<!-- backend:end -->"
        if begin in s:
            s = s[:s.index(begin) + len(begin)] + "\n" + text + \
                s[s.index(end):]
            open(doc, "w").write(s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
