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


TESTS = [test_order_across_loops, test_recovery_while_publishing,
         test_presence_and_api_across_loops, test_shutdown_across_loops]

if __name__ == "__main__":
    sys.exit(lib.main(TESTS, __doc__, limit_s=400))
