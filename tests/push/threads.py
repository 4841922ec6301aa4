#!/usr/bin/python3
"""`herald serve --threads 2`: the guarantees of docs/protocol.md across loops.

usage: threads.py PATH/TO/herald [-k SUBSTRING ...]

Publishers and subscribers are placed on both loops (a client id's number
modulo the loop count is its loop: server.c), so every channel has
publishers and subscribers on a loop other than its owner's. Every
subscriber checks, per channel: offsets 1, 2, 3... with no gap and no
duplicate; every publication exactly once; each publisher's own messages in
the order it sent them. A subscriber that drops out recovers by {epoch,
offset} and must get exactly what it missed. Loads are bounded: a fixed
number of messages, and every wait has a timeout.

With redis-server installed, two nodes of two loops each over one Redis
(tests/push/redis.py's helpers): Redis is restarted under publishers and
subscribers on every loop of both nodes, with an fsync-always AOF or from
an older snapshot (a rollback); skipped without it.
"""

import os
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lib  # noqa: E402
from lib import Server, check, eq, short  # noqa: E402

THREADS = 2
NS = [{"name": "seq", "publish": True, "history_size": 10000,
       "history_ttl": 300,
       "presence": True, "join_leave": True}]


# The publishers here outrun the default rate_limits.publishes on purpose.
NO_LIMITS = {"commands": {"per_s": 0, "burst": 0},
             "publishes": {"per_s": 0, "burst": 0}}


def loop_of(w):
    return int(w.client_id.rsplit("-", 1)[1]) % THREADS


def clients_on_both_loops(s, want_each):
    """Connects until there are want_each clients on each loop (SO_REUSEPORT
    spreads them by the connection's hash); the rest are closed."""
    by_loop = {i: [] for i in range(THREADS)}
    spare = []
    for _ in range(200):
        if all(len(v) >= want_each for v in by_loop.values()):
            break
        w = s.client(timeout=20)
        lst = by_loop[loop_of(w)]
        (lst if len(lst) < want_each else spare).append(w)
    for w in spare:
        w.close()
    check(f"{want_each} clients on each of the {THREADS} loops",
          all(len(v) >= want_each for v in by_loop.values()),
          {k: len(v) for k, v in by_loop.items()})
    return by_loop


class Sub(threading.Thread):
    """Reads pushes until it has `want` publications of every channel."""

    def __init__(self, w, channels, want):
        super().__init__(daemon=True)
        self.w, self.channels, self.want = w, channels, want
        self.got = {c: [] for c in channels}
        self.error = None

    def run(self):
        try:
            deadline = time.monotonic() + 60
            while any(len(v) < self.want for v in self.got.values()):
                if time.monotonic() > deadline:
                    raise TimeoutError("publications missing after 60 s")
                p = self.w.push(lambda p: "pub" in p, 30)
                self.got[p["channel"]].append(p["pub"])
        except Exception as e:  # noqa: BLE001
            self.error = e


def check_stream(what, pubs, want, first_offset=1):
    offs = [p["offset"] for p in pubs]
    ok = offs == list(range(first_offset, first_offset + want))
    check(f"{what}: offsets {first_offset}..{first_offset + want - 1} "
          f"in order, none twice", ok, short(offs[:20]))
    last = {}
    for p in pubs:
        d = p["data"]
        if last.get(d["p"], -1) >= d["n"]:
            check(f"{what}: each publisher's order kept", False, short(d))
            return
        last[d["p"]] = d["n"]


def test_order_across_loops():
    s = Server({"namespaces": NS, "threads": THREADS, "anonymous": True,
                "rate_limits": NO_LIMITS})
    by_loop = clients_on_both_loops(s, 3)
    subs_w = by_loop[0][:2] + by_loop[1][:2]
    pubs_w = [by_loop[0][2], by_loop[1][2]]
    channels = [f"seq:c{i}" for i in range(6)]
    per_pub = 150  # per publisher per channel
    for w in subs_w:
        for c in channels:
            r = w.call("subscribe", {"channel": c})
            check(f"subscribe {c} on loop {loop_of(w)}", "result" in r,
                  short(r))
    want = per_pub * len(pubs_w) + per_pub  # + the API's
    readers = [Sub(w, channels, want) for w in subs_w]
    for r in readers:
        r.start()

    def publish_ws(w, tag):
        ids = []
        for n in range(per_pub):
            for c in channels:
                ids.append(w.cmd("publish", {"channel": c,
                                             "data": {"p": tag, "n": n}}))
            if n % 25 == 24:  # bounded in flight
                for cid in ids:
                    rep = w.reply(cid, 30)
                    if "result" not in rep:
                        raise RuntimeError(f"publish failed: {rep}")
                ids = []
        for cid in ids:
            w.reply(cid, 30)

    def publish_api():
        for n in range(per_pub):
            for c in channels:
                st, js, _ = s.api("POST", "/api/publish",
                                  {"channel": c, "data": {"p": "api", "n": n}})
                if st != 200:
                    raise RuntimeError(f"API publish: {st} {js}")

    errors = []

    def guard(fn, *a):
        try:
            fn(*a)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    pts = [threading.Thread(target=guard, args=(publish_ws, w, f"ws{i}"))
           for i, w in enumerate(pubs_w)]
    pts.append(threading.Thread(target=guard, args=(publish_api,)))
    t0 = time.monotonic()
    for t in pts:
        t.start()
    for t in pts:
        t.join(90)
    check("publishers finished without error", not errors, short(errors))
    for r in readers:
        r.join(90)
    print(f"     ({want * len(channels)} publications to {len(readers)} "
          f"subscribers in {time.monotonic() - t0:.2f}s)")
    for r in readers:
        check(f"subscriber on loop {loop_of(r.w)} read everything",
              r.error is None, short(repr(r.error)))
        for c in channels:
            check_stream(f"loop {loop_of(r.w)} {c}", r.got[c], want)

    # History on either loop is the same stream, and recovery from any
    # position gives exactly what came after it.
    st, js, _ = s.api("GET", f"/api/history?channel={channels[0]}&limit=0")
    hist = js["result"]["publications"]
    eq("history has every publication", len(hist), want)
    epoch = js["result"]["epoch"]
    for w in by_loop[0][:1] + by_loop[1][:1]:
        w2 = s.client()
        r = w2.call("subscribe", {"channel": channels[0],
                                  "since": {"epoch": epoch,
                                            "offset": want - 40}})
        res = r.get("result", {})
        offs = [p["offset"] for p in res.get("publications", [])]
        check(f"recovery on loop {loop_of(w2)}: recovered, the last 40 in "
              "order", res.get("recovered") is True and
              offs == list(range(want - 39, want + 1)), short(r))
        w2.close()
    for w in sum(by_loop.values(), []):
        w.close()
    s.stop()


def test_recovery_while_publishing():
    """A subscriber on one loop drops out while a publisher on the other
    keeps publishing, comes back with {epoch, offset} and gets exactly the
    publications it missed, then the live stream: no gap, no duplicate."""
    s = Server({"namespaces": NS, "threads": THREADS, "anonymous": True,
                "rate_limits": NO_LIMITS})
    by_loop = clients_on_both_loops(s, 2)
    ch = "seq:recover"
    total = 1200
    for sub_loop in range(THREADS):
        pub = by_loop[1 - sub_loop][sub_loop]
        sub = by_loop[sub_loop][sub_loop]
        chan = f"{ch}{sub_loop}"
        r = sub.call("subscribe", {"channel": chan})
        epoch = r["result"]["epoch"]
        seen = []
        stop = threading.Event()
        err = []

        def publisher():
            try:
                ids = []
                for n in range(total):
                    ids.append(pub.cmd("publish", {"channel": chan,
                                                   "data": {"p": "x",
                                                            "n": n}}))
                    if n % 50 == 49 or n == total - 1:
                        for cid in ids:
                            rep = pub.reply(cid, 30)
                            if "result" not in rep:
                                raise RuntimeError(f"publish: {rep}")
                        ids = []
                        time.sleep(0.01)  # paced: the reader drops out
            except Exception as e:  # noqa: BLE001
                err.append(e)
            stop.set()

        t = threading.Thread(target=publisher, daemon=True)
        t.start()
        reconnects = 0
        w = sub
        deadline = time.monotonic() + 60
        while len(seen) < total and time.monotonic() < deadline:
            for _ in range(60):
                if len(seen) >= total:
                    break
                try:
                    p = w.push(lambda p: "pub" in p and p["channel"] == chan,
                               20)
                except TimeoutError:
                    raise TimeoutError(f"no publication after {len(seen)} "
                                       f"({reconnects} reconnects, last "
                                       f"{seen[-3:]}, publisher done "
                                       f"{stop.is_set()}, {err})")
                seen.append(p["pub"]["offset"])
            if len(seen) >= total:
                break
            w.abort()
            reconnects += 1
            time.sleep(0.02)
            w = s.client(timeout=20)
            r = w.call("subscribe", {"channel": chan,
                                     "since": {"epoch": epoch,
                                               "offset": seen[-1]}})
            res = r.get("result", {})
            if res.get("recovered") is not True:
                check("recovered is true (history holds everything)", False,
                      short(r))
                break
            seen += [p["offset"] for p in res.get("publications", [])]
        t.join(30)
        w.close()
        check(f"subscriber on loop {sub_loop}, publisher on loop "
              f"{1 - sub_loop}: publisher ok", not err, short(err))
        check(f"subscriber on loop {sub_loop}: reconnected {reconnects} "
              "times while publishing", reconnects >= 3, reconnects)
        check(f"subscriber on loop {sub_loop}: offsets 1..{total} exactly "
              "once, in order", seen == list(range(1, total + 1)),
              short(seen[:10]) + f" len={len(seen)}")
    for w in sum(by_loop.values(), []):
        w.close()
    s.stop()


def test_presence_and_api_across_loops():
    s = Server({"namespaces": NS, "threads": THREADS, "anonymous": True})
    by_loop = clients_on_both_loops(s, 1)
    a, b = by_loop[0][0], by_loop[1][0]
    ch = "seq:room"
    a.call("subscribe", {"channel": ch})
    b.call("subscribe", {"channel": ch})
    j = a.push(lambda p: "join" in p and p["join"]["client"] == b.client_id)
    check("join of a client on the other loop", j["channel"] == ch, short(j))
    for w in (a, b):
        r = w.call("presence", {"channel": ch})
        got = sorted((r.get("result") or {}).get("clients", {}).keys())
        eq(f"presence asked on loop {loop_of(w)} lists both", got,
           sorted([a.client_id, b.client_id]))
    st, js, _ = s.api("GET", f"/api/presence?channel={ch}")
    eq("/api/presence lists both", sorted(js["result"]["clients"].keys()),
       sorted([a.client_id, b.client_id]))
    b.call("unsubscribe", {"channel": ch})
    lv = a.push(lambda p: "leave" in p)
    eq("leave of a client on the other loop", lv["leave"]["client"],
       b.client_id)
    # The API's disconnect reaches a client whatever its loop.
    st, js, _ = s.api("POST", "/api/disconnect", {"client": b.client_id})
    code, _ = b.wait_close(5)
    check("/api/disconnect reaches the other loop", code is not None,
          f"{st} {js} close={code}")
    a.close()
    s.stop()


def test_shutdown_across_loops():
    s = Server({"namespaces": NS, "threads": THREADS, "anonymous": True})
    by_loop = clients_on_both_loops(s, 2)
    s.sigterm()
    for w in sum(by_loop.values(), []):
        code, msgs = w.wait_close(10)
        d = [m for m in msgs if isinstance(m, dict) and "push" in m and
             "disconnect" in m["push"]]
        check(f"client on loop {loop_of(w)}: disconnect 3001 on SIGTERM",
              d and d[0]["push"]["disconnect"]["code"] == 3001, short(msgs))
    s.stop()


def test_default_one_loop_per_cpu():
    """No `threads` in the config: one loop per CPU this process may run on
    (its affinity, which the server inherits), and clients on every loop
    get the same publications."""
    cpus = len(os.sched_getaffinity(0))
    s = Server({"namespaces": NS, "threads": None, "anonymous": True})
    logs = ""
    deadline = time.monotonic() + 5
    while "ev=start" not in logs and time.monotonic() < deadline:
        with open(s.out_path, "rb") as f:
            logs = f.read().decode("utf-8", "replace") + s.stderr()
        time.sleep(0.02)
    line = next((x for x in logs.splitlines() if "ev=start" in x), "")
    check(f"default threads: one loop per CPU ({cpus})",
          f" threads={cpus} " in line, line)
    subs = [s.client(timeout=20) for _ in range(4 * cpus)]
    for w in subs:
        r = w.call("subscribe", {"channel": "seq:default"})
        check("default threads: subscribed", "result" in r, short(r))
    s.publish("seq:default", {"p": "x", "n": 1})
    got = 0
    for w in subs:
        p = w.push(lambda p: "pub" in p, 10)
        got += p["pub"]["data"] == {"p": "x", "n": 1}
    check(f"default threads: all {len(subs)} subscribers got the "
          f"publication", got == len(subs), got)
    for w in subs:
        w.close()
    s.stop()


# ---- two nodes on two loops each, over Redis ---------------------------------


def redis_suite():
    """tests/push/redis.py (its Redis, node and wait_healthy), or None
    without redis-server."""
    import importlib.util
    here = os.path.dirname(os.path.abspath(__file__))
    spec = importlib.util.spec_from_file_location(
        "redis_suite", os.path.join(here, "redis.py"))
    rs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rs)
    return rs if os.access(rs.REDIS_BIN, os.X_OK) else None


class LoopSub(threading.Thread):
    """A client subscribed to several channels on one node: it records
    every publication per channel as (epoch, offset, publisher, n), and when
    it is disconnected (3010, or its subscribes refused while Redis is
    down) it reconnects to the same node, on whichever loop, and recovers
    each channel from its last position, noting every "recovered": false
    (marks: the index in got where it was told)."""

    def __init__(self, srv, w, channels, name):
        super().__init__(daemon=True)
        self.srv, self.channels, self.name = srv, channels, name
        self.got = {c: [] for c in channels}
        self.marks = {c: set() for c in channels}
        self.unrecovered = {c: 0 for c in channels}
        self.pos = {c: None for c in channels}
        self.loops = [loop_of(w)]
        self.closes = []
        self.stop_flag = False
        self.w = w
        self.subscribe_all(w)

    def subscribe_all(self, w):
        for c in self.channels:
            p = {"channel": c}
            if self.pos[c]:
                p["since"] = self.pos[c]
            r = w.call("subscribe", p)
            if "result" not in r:
                raise RuntimeError(f"subscribe {c}: {r}")
            res = r["result"]
            if self.pos[c] and not res.get("recovered"):
                self.unrecovered[c] += 1
                self.marks[c].add(len(self.got[c]))
            for pub in res.get("publications", []):
                d = pub["data"]
                self.got[c].append((res["epoch"], pub["offset"], d["p"],
                                    d["n"]))
            self.pos[c] = {"epoch": res["epoch"], "offset": res["offset"]}

    def run(self):
        w = self.w
        while not self.stop_flag:
            try:
                if w is None:
                    w = self.srv.client(timeout=5)
                    self.loops.append(loop_of(w))
                    self.subscribe_all(w)
                while not self.stop_flag:
                    try:
                        p = w.push(lambda p: "pub" in p, 0.5)
                    except TimeoutError:
                        continue
                    c, pub = p["channel"], p["pub"]
                    d = pub["data"]
                    self.got[c].append((self.pos[c]["epoch"], pub["offset"],
                                        d["p"], d["n"]))
                    self.pos[c] = {"epoch": self.pos[c]["epoch"],
                                   "offset": pub["offset"]}
            except (lib.Closed, OSError, TimeoutError, ValueError,
                    RuntimeError, lib.Refused) as e:
                self.closes.append(getattr(e, "code", type(e).__name__))
                if w is not None:
                    w.abort()
                w = None
                time.sleep(0.2)
        if w is not None:
            w.close()


def ws_publisher(w, tag, channels, stop, acked, failed):
    """Publishes n = 0, 1, ... to every channel through w until stop;
    acked[channel][tag]: the n that got a position back."""
    n = 0
    while not stop.is_set():
        ids = [(c, w.cmd("publish", {"channel": c,
                                     "data": {"p": tag, "n": n}}))
               for c in channels]
        for c, cid in ids:
            try:
                rep = w.reply(cid, 10)
            except (TimeoutError, lib.Closed, OSError) as e:
                failed.append((tag, n, type(e).__name__))
                return
            if "result" in rep:
                acked[c].setdefault(tag, set()).add(n)
            else:
                failed.append((tag, n, (rep.get("error") or {}).get("code")))
        n += 1
        time.sleep(0.01)


def check_loop_streams(subs, channels, acked, exact):
    """Per subscriber and channel: no publication twice, each publisher's
    order kept, offsets one by one within an epoch except where the
    subscriber was told "recovered": false, no acknowledged publication
    missing between two it got unless told so; exact: every acknowledged
    publication arrived and nothing was lost."""
    for s in subs:
        for c in channels:
            got, marks = s.got[c], s.marks[c]
            what = f"{s.name} {c}"
            keys = [(t, n) for (_, _, t, n) in got]
            eq(f"{what}: no publication twice", len(keys), len(set(keys)))
            last, order_ok, silent = {}, True, []
            for j, (t, n) in enumerate(keys):
                if t in last:
                    j0, n0 = last[t]
                    if n <= n0:
                        order_ok = False
                    told = any(j0 < m <= j for m in marks)
                    if not told:
                        silent += [k for k in acked[c].get(t, ())
                                   if n0 < k < n]
                last[t] = (j, n)
            check(f"{what}: each publisher's order kept", order_ok)
            eq(f"{what}: no acknowledged publication missed silently",
               sorted(silent)[:10], [])
            holes = sum(1 for j in range(1, len(got)) if j not in marks and
                        (got[j][0] != got[j - 1][0] or
                         got[j][1] != got[j - 1][1] + 1))
            eq(f"{what}: offsets one by one but where told", holes, 0)
            if exact:
                have = set(keys)
                missing = [(t, n) for t, ns in acked[c].items() for n in ns
                           if (t, n) not in have]
                eq(f"{what}: every acknowledged publication arrived",
                   sorted(missing)[:10], [])
                eq(f"{what}: nothing announced lost", s.unrecovered[c], 0)


def loops_nodes_redis_restart(persist):
    """Two nodes, two loops each, over one Redis: a subscriber on each loop
    of each node follows four channels (owned by either loop) published to
    by a publisher on each loop of each node, while Redis is killed and
    restarted: with an fsync-always AOF (nothing may be lost: every
    acknowledged publication reaches every subscriber exactly once, in
    order), or from an older snapshot (a rollback: the epoch changes and
    every subscriber, whatever its loop, is cut and told "recovered":
    false, never left with a silent gap)."""
    rs = redis_suite()
    if rs is None:
        print("     (redis-server not found: skipped)")
        return
    rd = rs.Redis(persist=persist)
    extra = {"threads": THREADS, "rate_limits": NO_LIMITS}
    try:
        a, b = rs.node([rd], "la", extra), rs.node([rd], "lb", extra)
        check("both nodes healthy", rs.wait_healthy(a) and rs.wait_healthy(b))
        channels = [f"feed:t{i}" for i in range(4)]
        subs, pubw = [], []
        for srv in (a, b):
            by_loop = clients_on_both_loops(srv, 2)
            for lp, ws in by_loop.items():
                subs.append(LoopSub(srv, ws[0], channels,
                                    f"sub {srv.name[-2:]}/loop{lp}"))
                pubw.append((ws[1], f"{srv.name[-2:]}{lp}"))
        for s in subs:
            s.start()
        stop = threading.Event()
        acked = {c: {} for c in channels}
        failed = []
        pts = [threading.Thread(target=ws_publisher, daemon=True,
                                args=(w, tag, channels, stop, acked, failed))
               for w, tag in pubw]
        for t in pts:
            t.start()
        time.sleep(1.0)
        if persist == "rdb":
            eq("SAVE", rd.cmd("SAVE"), b"+OK\r\n")
            time.sleep(0.5)
        rd.kill()
        check("node a degraded while Redis is down", rs.wait_healthy(a, 503, 5))
        check("node b degraded while Redis is down", rs.wait_healthy(b, 503, 5))
        time.sleep(1.0)
        rd.start()
        check("node a healthy again", rs.wait_healthy(a, 200, 15))
        check("node b healthy again", rs.wait_healthy(b, 200, 15))
        time.sleep(1.5)
        stop.set()
        for t in pts:
            t.join(15)
        time.sleep(2.0)
        for s in subs:
            s.stop_flag = True
        for s in subs:
            s.join(10)
        n_acked = sum(len(v) for c in channels for v in acked[c].values())
        check("publications acknowledged before and after the outage",
              n_acked > 200, f"{n_acked} acked, {len(failed)} failed")
        check("publications refused while Redis was down (112)",
              failed and {f[2] for f in failed} <= {112}, short(failed[:5]))
        check_loop_streams(subs, channels, acked, exact=persist is True)
        if persist is not True:
            check("the rollback reached every subscriber on every loop and "
                  "node (recovered: false)",
                  all(s.unrecovered[c] >= 1 for s in subs for c in channels),
                  [(s.name, s.unrecovered) for s in subs])
        # One node per process in the node list, its figures summed over
        # its loops.
        st, js, _ = a.api("GET", "/api/info")
        names = sorted(n["name"] for n in js["result"]["nodes"])
        eq("/api/info: one entry per node", names, ["la", "lb"])
        for srv in (a, b):
            # The subscribers have left: the publishers, one on each loop.
            clients = sum(1 for _, tag in pubw if tag[:2] == srv.name[-2:])
            deadline = time.monotonic() + 5
            entry = None
            while time.monotonic() < deadline:
                st, js, _ = a.api("GET", "/api/info")
                entry = [n for n in js["result"]["nodes"]
                         if n["name"] == srv.name[-2:]]
                if entry and entry[0]["connections"] == clients:
                    break
                time.sleep(0.3)
            check(f"/api/info: {srv.name[-2:]}'s connections summed over "
                  f"its loops ({clients})",
                  entry and entry[0]["connections"] == clients, short(entry))
        for w, _ in pubw:
            w.close()
        a.stop()
        b.stop()
    finally:
        rs.stop_redises()


def test_redis_loops_nodes_restart_aof():
    loops_nodes_redis_restart(True)


def test_redis_loops_nodes_rollback():
    loops_nodes_redis_restart("rdb")


TESTS = [test_order_across_loops, test_recovery_while_publishing,
         test_presence_and_api_across_loops, test_shutdown_across_loops,
         test_default_one_loop_per_cpu,
         test_redis_loops_nodes_restart_aof, test_redis_loops_nodes_rollback]

if __name__ == "__main__":
    sys.exit(lib.main(TESTS, __doc__, limit_s=400))
