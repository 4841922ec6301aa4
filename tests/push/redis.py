#!/usr/bin/python3
"""Scale-out tests: several `herald serve` nodes over their own redis-server
instances (docs/scaling.md). Cross-node fan-out, presence, history and
recovery across nodes, a node killed and restarted, Redis killed and
restarted (with and without persistence) under a continuous publisher,
Redis down at start, several shards, AUTH, an SSE stream of several
channels.

usage: redis.py PATH/TO/herald [--threads N] [-k SUBSTRING ...]

--threads N: every node runs on N loops (docs/design.md, "Several loops").

Exits 77 (skipped) when redis-server is not installed. Every redis-server
listens on 127.0.0.1 on a free port, in its own temporary directory, and is
stopped by its PID.
"""

import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lib  # noqa: E402
from lib import R, Closed, Server, check, eq, http_req, short  # noqa: E402

REDIS_BIN = shutil.which("redis-server") or "/usr/bin/redis-server"
REDISES = []


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Redis:
    """A redis-server of our own. persist: True, an append-only file with
    fsync on every write, so a restart keeps the streams; "rdb", only the
    snapshots the test asks for (SAVE), which a restart loads; False,
    nothing. replicaof: the port of a master to follow. extra: more
    command-line arguments (a cluster node's); port: the port to use
    instead of a free one."""

    def __init__(self, persist=False, password=None, tls=None,
                 replicaof=None, extra=(), port=None):
        self.tls = tls  # (cert, key) files: TLS only
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="herald-redis-test-")
        self.persist = persist
        self.password = password
        self.replicaof = replicaof
        self.extra = list(extra)
        self.proc = None
        REDISES.append(self)
        self.start()

    def start(self):
        args = [REDIS_BIN, "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", self.dir, "--save", "", "--daemonize", "no",
                "--protected-mode", "no", "--loglevel", "warning"]
        if self.persist is True:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        if self.replicaof:
            args += ["--replicaof", "127.0.0.1", str(self.replicaof)]
        if self.password:
            args += ["--requirepass", self.password]
        args += self.extra
        if self.tls:
            args[1:3] = ["--port", "0", "--tls-port", str(self.port),
                         "--tls-cert-file", self.tls[0], "--tls-key-file",
                         self.tls[1], "--tls-auth-clients", "no"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL,
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.cmd("PING").startswith((b"+PONG", b"-NOAUTH")):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def cmd(self, *args):
        """One command over a fresh connection; the raw reply."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=2)
        if self.tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            s = ctx.wrap_socket(s)
        try:
            out = b""
            if self.password:
                out += b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (
                    len(self.password), self.password.encode())
            out += b"*%d\r\n" % len(args)
            for a in args:
                a = a.encode() if isinstance(a, str) else a
                out += b"$%d\r\n%s\r\n" % (len(a), a)
            s.sendall(out)
            time.sleep(0.05)
            data = s.recv(65536)
            if self.password:
                data = data.split(b"\r\n", 1)[1]
            return data
        finally:
            s.close()

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def stop_redises():
    for r in REDISES:
        r.stop()
    REDISES.clear()


class Proxy:
    """A TCP forwarder in front of Redis, standing for the address a
    failover moves (a virtual IP, a DNS name): switch() points it at
    another server and drops every connection it carries."""

    password = None
    tls = None

    def __init__(self, target):
        self.target = target
        self.lock = threading.Lock()
        self.conns = []
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(("127.0.0.1", self.target),
                                             timeout=2)
                u.settimeout(None)
            except OSError:
                c.close()
                continue
            with self.lock:
                self.conns += [c, u]
            for x, y in ((c, u), (u, c)):
                threading.Thread(target=self._pump, args=(x, y),
                                 daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while True:
                d = src.recv(65536)
                if not d:
                    break
                dst.sendall(d)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def switch(self, target):
        with self.lock:
            self.target = target
            old, self.conns = self.conns, []
        for s in old:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self):
        self.lsock.close()
        self.switch(None)


NS = [{"name": "chat", "publish": True, "presence": True, "join_leave": True,
       "history_size": 1000, "history_ttl": 600},
      {"name": "feed", "publish": True, "history_size": 2000,
       "history_ttl": 600}]


def node(redis_list, name, extra=None):
    cfg = {"anonymous": True, "engine": "redis", "namespaces": NS,
           "redis": {"addresses": [f"127.0.0.1:{r.port}" for r in
                                   redis_list],
                     "presence_ttl": 3, "ping_timeout_ms": 1000}}
    if redis_list and redis_list[0].password:
        cfg["redis"]["password"] = redis_list[0].password
    if extra:
        for k, v in extra.items():
            if k == "redis":
                cfg["redis"].update(v)
            else:
                cfg[k] = v
    return Server(cfg, args=["--node-name", name], name=f"node {name}")


def wait_healthy(srv, want=200, timeout=15):
    deadline = time.monotonic() + timeout
    st = None
    while time.monotonic() < deadline:
        st, _, _ = http_req(srv.port, "GET", "/health")
        if st == want:
            return True
        time.sleep(0.05)
    return False


def sub(srv, channel, since=None):
    w = srv.client()
    p = {"channel": channel}
    if since:
        p["since"] = since
    r = w.call("subscribe", p)
    if "result" not in r:
        raise RuntimeError(f"subscribe failed: {r}")
    return w, r["result"]


# --------------------------------------------------------------------------


def test_two_nodes_fanout():
    rd = Redis()
    a, b = node([rd], "a"), node([rd], "b")
    check("node a healthy", wait_healthy(a))
    check("node b healthy", wait_healthy(b))
    wa, ra = sub(a, "feed:x")
    wb, rb = sub(b, "feed:x")
    eq("both nodes give the same epoch", ra["epoch"], rb["epoch"])
    # Publish alternately through both nodes, over HTTP and WebSocket.
    pub = b.client()
    for i in range(20):
        if i % 2:
            a.publish("feed:x", {"i": i})
        else:
            r = pub.call("publish", {"channel": "feed:x", "data": {"i": i}})
            check(f"ws publish {i} accepted", "result" in r, short(r))
    ga = wa.pubs("feed:x", 20)
    gb = wb.pubs("feed:x", 20)
    eq("node a subscriber: every publication in order",
       [p["data"]["i"] for p in ga], list(range(20)))
    eq("node b subscriber: every publication in order",
       [p["data"]["i"] for p in gb], list(range(20)))
    eq("offsets are the same on both nodes", [p["offset"] for p in ga],
       [p["offset"] for p in gb])
    eq("offsets count from 1 without a hole", [p["offset"] for p in ga],
       list(range(1, 21)))
    st, js, _ = a.api("GET", "/api/info")
    names = sorted(n["name"] for n in js["result"]["nodes"]) if st == 200 \
        else (st, js)
    eq("/api/info lists both nodes", names, ["a", "b"])
    m = a.metrics()
    eq("metrics: engine healthy", m.get("herald_engine_healthy"), 1)
    eq("metrics: one shard up", m.get("herald_redis_shards_up"), 1)
    # Client ids carry the node name: unique across nodes.
    check("client ids are prefixed by the node",
          wa.client_id.startswith("a-") and wb.client_id.startswith("b-"),
          f"{wa.client_id} {wb.client_id}")
    a.stop()
    b.stop()


def test_sse_channels():
    """Several channels on one SSE stream over Redis: each channel is synced
    through the engine (asynchronously) before the stream starts, publications
    from another node arrive, and every channel recovers on either node."""
    import json
    from lib import SSE
    rd = Redis()
    a, b = node([rd], "a"), node([rd], "b")
    check("node a healthy", wait_healthy(a))
    check("node b healthy", wait_healthy(b))
    q = "channel=feed:s1&channel=chat:s2&channel=feed:s3"
    e = SSE(a.port, q)
    eq("SSE with three channels on node a: 200", e.status, 200)
    time.sleep(0.3)
    for ch, n in (("feed:s1", 2), ("chat:s2", 1), ("feed:s3", 1)):
        for i in range(n):
            b.publish(ch, {"c": ch, "i": i})
    evs = [e.event(timeout=5) for _ in range(4)]
    eq("publications through node b arrive, each naming its channel",
       sorted((json.loads(ev["data"])["channel"],
               json.loads(ev["data"])["pub"]["offset"]) for ev in evs),
       [("chat:s2", 1), ("feed:s1", 1), ("feed:s1", 2), ("feed:s3", 1)])
    last = evs[-1]["id"]
    e.close()
    b.publish("feed:s3", {"i": "missed"})
    b.publish("chat:s2", {"i": "missed"})
    for srv in (a, b):
        e = SSE(srv.port, q, last_event_id=last)
        got = [e.event(timeout=5) for _ in range(2)]
        # Each channel recovers on its own (under Redis, in the order its
        # load completes): the order across channels is not defined.
        eq(f"node {srv.name[-1]}: each channel recovers what it missed",
           sorted((json.loads(ev["data"])["channel"],
                   json.loads(ev["data"])["pub"]["offset"], ev["event"] or "")
                  for ev in got), [("chat:s2", 2, ""), ("feed:s3", 2, "")])
        e.close()
    rd.stop()
    e = SSE(a.port, "channel=feed:new1&channel=feed:new2", timeout=15)
    body = e.body_all(timeout=1)
    check("Redis down: the stream is refused with 503 (112)",
          e.status == 503 and b"112" in body, (e.status, body[:200]))
    e.close()
    a.stop()
    b.stop()


def test_three_nodes_presence():
    rd = Redis()
    nodes = [node([rd], n) for n in ("p1", "p2", "p3")]
    for n in nodes:
        wait_healthy(n)
    ws = []
    for i, n in enumerate(nodes):
        w, _ = sub(n, "chat:room")
        ws.append(w)
        # Everyone already there hears the join, whatever their node.
        for j in range(i):
            p = ws[j].push(lambda p: "join" in p and
                           p["join"]["client"] == w.client_id, timeout=5)
            check(f"join of node {i + 1}'s client reaches node {j + 1}",
                  p is not None)
    ids = sorted(w.client_id for w in ws)
    for i, n in enumerate(nodes):
        st, js, _ = n.api("GET", "/api/presence?channel=chat:room")
        eq(f"presence from node {i + 1} lists all three",
           sorted(js["result"]["clients"]) if st == 200 else st, ids)
    r = ws[0].call("presence", {"channel": "chat:room"})
    eq("presence command across nodes", sorted(r["result"]["clients"]), ids)
    # A client leaves: a leave push everywhere.
    gone = ws[2].client_id
    ws[2].close()
    for j in (0, 1):
        p = ws[j].push(lambda p: "leave" in p and
                       p["leave"]["client"] == gone, timeout=5)
        check(f"leave reaches node {j + 1}", p is not None)
    # A node dies without a word: its clients' entries expire with the
    # presence TTL (3 s here) since nobody refreshes them.
    w2 = nodes[1].client()
    w2.call("subscribe", {"channel": "chat:room"})
    nodes[1].kill()
    deadline = time.monotonic() + 12
    left = None
    while time.monotonic() < deadline:
        st, js, _ = nodes[0].api("GET", "/api/presence?channel=chat:room")
        left = sorted(js["result"]["clients"])
        if left == [ws[0].client_id]:
            break
        time.sleep(0.3)
    eq("a killed node's clients leave presence after the TTL", left,
       [ws[0].client_id])
    st, js, _ = nodes[0].api("GET", "/api/info")
    time.sleep(0)
    names = [n["name"] for n in js["result"]["nodes"]] if st == 200 else []
    check("/api/info still answers", st == 200, st)
    del names
    nodes[0].stop()
    nodes[2].stop()


def test_history_and_recovery_across_nodes():
    rd = Redis()
    a, b = node([rd], "ha"), node([rd], "hb")
    wait_healthy(a)
    wait_healthy(b)
    for i in range(10):
        a.publish("chat:h", {"i": i})
    st, js, _ = b.api("GET", "/api/history?channel=chat:h&limit=4")
    eq("history on the other node: the last 4",
       [p["data"]["i"] for p in js["result"]["publications"]] if st == 200
       else st, [6, 7, 8, 9])
    epoch = js["result"]["epoch"]
    w, r = sub(b, "chat:h", since={"epoch": epoch, "offset": 4})
    eq("recovered from the other node's publications", r.get("recovered"),
       True)
    eq("recovered publications 5..10",
       [p["offset"] for p in r.get("publications", [])], list(range(5, 11)))
    w2, r2 = sub(a, "chat:h", since={"epoch": "wrongepoch", "offset": 4})
    eq("another epoch: recovered false", r2.get("recovered"), False)
    eq("another epoch: no publications", r2.get("publications"), None)
    b.publish("chat:h", {"i": 10})
    eq("live after recovery", [p["offset"] for p in w.pubs("chat:h", 1)],
       [11])
    a.stop()
    b.stop()


def test_node_restart():
    rd = Redis()
    a, b = node([rd], "ra"), node([rd], "rb")
    wait_healthy(a)
    wait_healthy(b)
    w, r = sub(a, "feed:n")
    for i in range(5):
        b.publish("feed:n", {"i": i})
    got = w.pubs("feed:n", 5)
    last = {"epoch": r["epoch"], "offset": got[-1]["offset"]}
    a.kill()  # SIGKILL: no goodbye
    for i in range(5, 12):
        b.publish("feed:n", {"i": i})
    # The client reconnects elsewhere and recovers exactly what it missed.
    w2, r2 = sub(b, "feed:n", since=last)
    eq("recovered on another node", r2.get("recovered"), True)
    eq("exactly the missed publications",
       [p["data"]["i"] for p in r2.get("publications", [])],
       list(range(5, 12)))
    # The node comes back and serves the same stream.
    a2 = node([rd], "ra")
    check("restarted node healthy", wait_healthy(a2))
    w3, r3 = sub(a2, "feed:n", since={"epoch": r["epoch"], "offset": 0})
    eq("restarted node: the whole history",
       [p["offset"] for p in r3.get("publications", [])], list(range(1, 13)))
    a2.publish("feed:n", {"i": 12})
    eq("publication through the restarted node reaches the other",
       [p["offset"] for p in w2.pubs("feed:n", 1)], [13])
    a2.stop()
    b.stop()


class Subscriber(threading.Thread):
    """Follows a channel through one node, reconnecting and recovering
    (through the next node in turn) whenever it is disconnected. Records
    every publication and every explicit "recovered": false."""

    def __init__(self, nodes, channel, name):
        super().__init__(daemon=True)
        self.nodes = nodes
        self.channel = channel
        self.name = name
        self.got = []  # (epoch, offset, i)
        self.unrecovered = 0
        self.marks = set()  # len(got) at each "recovered": false
        self.reconnects = 0
        self.stop_flag = False
        self.pos = None
        self.errors = []

    def run(self):
        k = 0
        while not self.stop_flag:
            n = self.nodes[k % len(self.nodes)]
            k += 1
            try:
                w = n.ws(timeout=2)
                w.connect()
                p = {"channel": self.channel}
                if self.pos:
                    p["since"] = self.pos
                r = w.call("subscribe", p)
                if "result" not in r:
                    w.abort()
                    time.sleep(0.2)  # temporary: Redis is down
                    continue
                res = r["result"]
                if self.pos and not res.get("recovered"):
                    self.unrecovered += 1
                    self.marks.add(len(self.got))
                for pub in res.get("publications", []):
                    self.got.append((res["epoch"], pub["offset"],
                                     pub["data"]["i"]))
                self.pos = {"epoch": res["epoch"], "offset": res["offset"]}
                while not self.stop_flag:
                    try:
                        push = w.push(lambda p: "pub" in p, timeout=0.5)
                    except TimeoutError:
                        continue
                    pub = push["pub"]
                    self.got.append((self.pos["epoch"], pub["offset"],
                                     pub["data"]["i"]))
                    self.pos = {"epoch": self.pos["epoch"],
                                "offset": pub["offset"]}
                w.abort()
            except (Closed, OSError, TimeoutError, ValueError,
                    lib.Refused) as e:
                self.reconnects += 1
                self.errors.append(type(e).__name__)
                time.sleep(0.1)


def publisher(nodes, channel, stop, acked, failed):
    """Publishes i = 0, 1, ... round-robin through the nodes over HTTP
    until stop is set. acked: the i that got a position back."""
    i = 0
    while not stop.is_set():
        n = nodes[i % len(nodes)]
        try:
            st, js, _ = http_req(n.port, "POST", "/api/publish",
                                 {"channel": channel, "data": {"i": i}},
                                 key=n.api_key, timeout=3)
            if st == 200:
                acked.append(i)
            else:
                failed.append((i, st, (js.get("error") or {}).get("code")
                               if isinstance(js, dict) else js))
        except OSError:
            failed.append((i, "conn", None))
        i += 1
        time.sleep(0.004)


def check_streams(subs, acked, exact):
    """Each subscriber's stream: offsets strictly increasing by one within
    an epoch unless an explicit unrecovered was recorded, no publication
    twice, no acknowledged publication missing between two it received
    unless it was told "recovered": false in between, and (exact) every
    acknowledged publication present."""
    ack = sorted(acked)
    for s in subs:
        seen = [i for (_, _, i) in s.got]
        eq(f"{s.name}: no publication twice", len(seen), len(set(seen)))
        have = set(seen)
        silent = []
        for j in range(1, len(seen)):
            if j in s.marks:
                continue
            silent += [i for i in ack if seen[j - 1] < i < seen[j] and
                       i not in have]
        eq(f"{s.name}: no acknowledged publication missed silently",
           silent[:10], [])
        holes = 0
        for (e1, o1, _), (e2, o2, _) in zip(s.got, s.got[1:]):
            if e1 == e2 and o2 != o1 + 1:
                holes += 1
            if e1 != e2:
                holes += 1
        if exact:
            eq(f"{s.name}: no gap in offsets", holes, 0)
            missing = sorted(set(acked) - set(seen))
            eq(f"{s.name}: every acknowledged publication arrived",
               missing[:10], [])
            eq(f"{s.name}: no unrecovered", s.unrecovered, 0)
        else:
            check(f"{s.name}: every gap was announced (recovered: false)",
                  holes <= s.unrecovered, f"holes={holes} "
                  f"unrecovered={s.unrecovered}")
        order = [i for (_, _, i) in s.got]
        eq(f"{s.name}: in publication order", order, sorted(order))


def redis_restart(persist):
    rd = Redis(persist=persist)
    a, b = node([rd], "ka"), node([rd], "kb")
    wait_healthy(a)
    wait_healthy(b)
    ch = "feed:live"
    subs = [Subscriber([a, b], ch, "sub on a"), Subscriber([b, a], ch,
                                                            "sub on b")]
    for s in subs:
        s.start()
    time.sleep(0.5)
    stop = threading.Event()
    acked, failed = [], []
    t = threading.Thread(target=publisher, args=([a, b], ch, stop, acked,
                                                 failed), daemon=True)
    t.start()
    if persist == "rdb":
        time.sleep(0.5)
        eq("SAVE", rd.cmd("SAVE"), b"+OK\r\n")
        time.sleep(0.5)
    else:
        time.sleep(1.0)
    rd.kill()
    # While Redis is down: degraded health, 503 publishes, clients stay.
    check("node a reports degraded", wait_healthy(a, 503, 5))
    check("node b reports degraded", wait_healthy(b, 503, 5))
    time.sleep(0.5)
    st, js, _ = a.api("POST", "/api/publish",
                      {"channel": ch, "data": {"i": -1}})
    eq("publish while Redis is down: 503", st, 503)
    eq("publish while Redis is down: code 112",
       (js.get("error") or {}).get("code") if isinstance(js, dict) else js,
       112)
    m = a.metrics()
    eq("metrics: engine unhealthy", m.get("herald_engine_healthy"), 0)
    check("metrics: reconnects counted",
          (m.get("herald_redis_reconnects_total") or 0) >= 1, m)
    eq("clients stay connected while Redis is down",
       m.get("herald_connections", 0) >= 1, True)
    time.sleep(1.0)
    rd.start()
    check("node a healthy again", wait_healthy(a, 200, 15))
    check("node b healthy again", wait_healthy(b, 200, 15))
    time.sleep(1.5)
    stop.set()
    t.join(10)
    time.sleep(1.5)
    for s in subs:
        s.stop_flag = True
    for s in subs:
        s.join(10)
    check("publications acknowledged before and after the outage",
          len(acked) > 100, f"{len(acked)} acked, {len(failed)} failed")
    check("publications refused during the outage", len(failed) > 0,
          len(failed))
    codes = {c for (_, _, c) in failed}
    check("refusals are 503/112 or connection errors",
          codes <= {112, None}, codes)
    check_streams(subs, [i for i in acked if i >= 0], exact=persist is True)
    if persist is not True:
        check("Redis lost its data: subscribers were told recovered false",
              all(s.unrecovered >= 1 for s in subs),
              [s.unrecovered for s in subs])
    a.stop()
    b.stop()


def test_redis_restart_persistent():
    redis_restart(True)


def test_redis_restart_data_lost():
    redis_restart(False)


def test_redis_restart_snapshot():
    """Redis' default persistence: a snapshot, then acknowledged
    publications it does not hold, then kill -9. Every subscriber must be
    told (the positions after the snapshot are handed out again)."""
    redis_restart("rdb")


def drain(w, quiet=2.0):
    """The publications pushed to w until it is closed or quiet for `quiet`
    seconds, and the close code (None: still open)."""
    got = []
    while True:
        try:
            got.append(w.push(lambda p: "pub" in p, timeout=quiet)["pub"])
        except TimeoutError:
            return got, None
        except Closed as e:
            return got, e.code


def redis_loses(mode):
    """Redis goes away and comes back with all, some or none of the
    channel's publications (docs/scaling.md, "Epochs and data loss in
    Redis"). mode:
      "aof"      append-only file, fsync always, kill -9: nothing is lost;
      "rdb"      a snapshot (SAVE), 10 more acknowledged publications,
                 kill -9, restart from the snapshot: those 10 are gone;
      "none"     no persistence: everything is gone;
      "failover" a replica that stopped following (it lags by 10
                 acknowledged publications) takes over the address;
      "restore"  kill -9, and the append-only file is replaced by a copy
                 taken 10 publications earlier (a backup restored): the
                 server looks like a clean AOF restart.
    Node a is frozen (SIGSTOP) across it, so node b publishes 15 more on
    the new server before a notices anything: the positions that were
    lost are handed out again unless the epoch changed. a's subscriber,
    connected throughout, must get every acknowledged publication in
    order or be disconnected with 3010; clients resuming from positions
    taken before must be told "recovered": false when anything after
    their position is gone, and get everything when nothing is."""
    ch = "feed:loss"
    if mode == "failover":
        master = Redis(persist=True)
        replica = Redis(persist=True, replicaof=master.port)
        deadline = time.monotonic() + 10
        while (b"master_link_status:up" not in replica.cmd("INFO",
                                                           "replication")
               and time.monotonic() < deadline):
            time.sleep(0.1)
        target = Proxy(master.port)
    else:
        rd = Redis(persist={"aof": True, "restore": True, "rdb": "rdb",
                            "none": False}[mode])
        target = rd
    a, b = node([target], "xa"), node([target], "xb")
    check("node a healthy", wait_healthy(a))
    check("node b healthy", wait_healthy(b))
    w, r0 = sub(a, ch)
    epoch = r0["epoch"]
    for i in range(10):
        b.publish(ch, {"i": i})
    if mode == "rdb":
        eq("SAVE", rd.cmd("SAVE"), b"+OK\r\n")
    elif mode == "failover":
        eq("the replica has the first 10", master.cmd("WAIT", "1", "1000"),
           b":1\r\n")
        eq("it stops following", replica.cmd("REPLICAOF", "NO", "ONE"),
           b"+OK\r\n")
    elif mode == "restore":
        backup = tempfile.mkdtemp(prefix="herald-redis-backup-")
        shutil.copytree(os.path.join(rd.dir, "appendonlydir"),
                        os.path.join(backup, "appendonlydir"))
    for i in range(10, 20):
        r = b.publish(ch, {"i": i})
        eq(f"publication {i} acknowledged in the epoch", (r["epoch"],
                                                          r["offset"]),
           (epoch, i + 1))
    got = w.pubs(ch, 20)
    os.kill(a.proc.pid, signal.SIGSTOP)
    try:
        if mode == "failover":
            target.switch(replica.port)
            master.kill()
        else:
            rd.kill()
            if mode == "restore":
                shutil.rmtree(os.path.join(rd.dir, "appendonlydir"))
                shutil.copytree(os.path.join(backup, "appendonlydir"),
                                os.path.join(rd.dir, "appendonlydir"))
                shutil.rmtree(backup)
            rd.start()
        check("node b healthy again", wait_healthy(b, 200, 15))
        for i in range(20, 35):
            b.publish(ch, {"i": i})
    finally:
        os.kill(a.proc.pid, signal.SIGCONT)
    check("node a healthy again", wait_healthy(a, 200, 15))
    for i in range(35, 40):
        b.publish(ch, {"i": i})
    more, code = drain(w)
    seq = [p["data"]["i"] for p in got + more]
    lost = mode != "aof"
    if code is None:
        eq("connected subscriber: every acknowledged publication, in order",
           seq, list(range(40)))
    else:
        eq("connected subscriber: in order and nothing missing until the "
           "disconnect", seq, list(range(len(seq))))
    eq("connected subscriber: disconnected with 3010 if and only if "
       "publications were lost", code, 3010 if lost else None)
    # Positions taken before: one before the loss, one inside it.
    for off in (5, 15):
        w2, r2 = sub(b, ch, since={"epoch": epoch, "offset": off})
        if lost:
            eq(f"resume from offset {off}: recovered false",
               (r2.get("recovered"),
                [p["data"]["i"] for p in r2.get("publications", [])]),
               (False, []))
        else:
            eq(f"resume from offset {off}: recovered, everything after it",
               (r2.get("recovered"),
                [p["data"]["i"] for p in r2.get("publications", [])]),
               (True, list(range(off, 40))))
        w2.close()
    if lost:
        w3, r3 = sub(a, ch, since={"epoch": epoch, "offset": 20})
        eq("the disconnected subscriber resumes: recovered false",
           r3.get("recovered"), False)
        check("... in a new epoch", r3.get("epoch") != epoch, r3)
        b.publish(ch, {"i": 40})
        # From the position it was given: a's replica may still be
        # applying the last of b's publications when it answers (pub/sub
        # reaches each node on its own), so those may come first, in
        # order, then 40.
        got3 = []
        while len(got3) < 10 and (not got3 or got3[-1]["data"]["i"] != 40):
            got3 += w3.pubs(ch, 1)
        eq("... and follows the channel from there, no gap",
           ([p["offset"] for p in got3], got3[-1]["data"]["i"]),
           (list(range(r3["offset"] + 1, r3["offset"] + 1 + len(got3))),
            40))
    if mode == "failover":
        target.close()
    a.stop()
    b.stop()


def test_redis_loses_nothing_aof():
    redis_loses("aof")


def test_redis_loses_rdb_rollback():
    redis_loses("rdb")


def test_redis_loses_everything():
    redis_loses("none")


def test_redis_loses_failover_to_lagging_replica():
    redis_loses("failover")


def test_redis_loses_restored_backup():
    redis_loses("restore")


def test_node_killed_under_load():
    rd = Redis()
    a, b = node([rd], "la"), node([rd], "lb")
    wait_healthy(a)
    wait_healthy(b)
    ch = "feed:nk"
    s = Subscriber([a, b], ch, "sub first on a")
    s.start()
    time.sleep(0.5)
    stop = threading.Event()
    acked, failed = [], []
    t = threading.Thread(target=publisher, args=([b], ch, stop, acked,
                                                 failed), daemon=True)
    t.start()
    time.sleep(0.8)
    a.kill()
    time.sleep(1.0)
    a2 = node([rd], "la")
    wait_healthy(a2)
    time.sleep(0.8)
    stop.set()
    t.join(10)
    time.sleep(1.0)
    s.stop_flag = True
    s.join(10)
    check("the subscriber reconnected", s.reconnects >= 1, s.reconnects)
    eq("no publication refused", failed[:5], [])
    check_streams([s], acked, exact=True)
    a2.stop()
    b.stop()


def test_redis_down_at_start():
    rd = Redis()
    port = rd.port
    rd.kill()
    a = node([rd], "da")
    time.sleep(0.5)
    st, js, _ = http_req(a.port, "GET", "/health")
    eq("no Redis: /health 503", st, 503)
    eq("no Redis: says degraded",
       js.get("status") if isinstance(js, dict) else js, "degraded")
    w = a.client()
    r = w.call("subscribe", {"channel": "feed:d"})
    eq("subscribe without Redis: error 112", (r.get("error") or {}).get(
        "code"), 112)
    eq("... marked temporary", (r.get("error") or {}).get("temporary"), True)
    r = w.call("publish", {"channel": "feed:d", "data": 1})
    eq("publish without Redis: error 112", (r.get("error") or {}).get(
        "code"), 112)
    st, _, _ = a.api("GET", "/api/history?channel=feed:d")
    eq("history API without Redis: 503", st, 503)
    eq("metrics: each refusal counted once",
       a.metrics().get("herald_engine_unavailable_total"), 3)
    # The log names the connect's real error (SO_ERROR), not libuv's
    # EBADF for any POLLERR.
    down = [ln for ln in a.stderr().splitlines() if "ev=redis_down" in ln]
    check("a refused connection is logged as such",
          down and all("Connection refused" in ln for ln in down),
          down[-1:])
    rd.port = port
    rd.start()
    check("healthy once Redis is there", wait_healthy(a, 200, 15))
    r = w.call("subscribe", {"channel": "feed:d"})
    check("subscribe works then", "result" in r, short(r))
    a.stop()


def test_shards():
    r1, r2 = Redis(), Redis()
    a, b = node([r1, r2], "sa"), node([r1, r2], "sb")
    wait_healthy(a)
    wait_healthy(b)
    chans = [f"feed:s{i}" for i in range(24)]
    ws = []
    for c in chans:
        w, _ = sub(b, c)
        ws.append(w)
    for i, c in enumerate(chans):
        a.publish(c, {"i": i})
    ok = all(w.pubs(c, 1)[0]["data"]["i"] == i
             for i, (w, c) in enumerate(zip(ws, chans)))
    check("every channel crosses nodes with two shards", ok)

    def streams(r):
        out = r.cmd("KEYS", "herald.{feed:s*}.s")
        return out.count(b".s\r\n")
    n1, n2 = streams(r1), streams(r2)
    eq("channels are split over both shards", (n1 > 0, n2 > 0, n1 + n2),
       (True, True, 24))
    m = a.metrics()
    eq("metrics: two shards up", m.get("herald_redis_shards_up"), 2)
    a.stop()
    b.stop()


def test_auth():
    rd = Redis(password="pw-for-tests")
    a = node([rd], "aa")
    check("connects with the password", wait_healthy(a))
    w, _ = sub(a, "feed:auth")
    a.publish("feed:auth", {"i": 1})
    eq("works with AUTH", [p["data"]["i"] for p in w.pubs("feed:auth", 1)],
       [1])
    bad = node([rd], "ab", extra={"redis": {"password": "wrong"}})
    time.sleep(1.0)
    st, _, _ = http_req(bad.port, "GET", "/health")
    eq("a wrong password: not healthy", st, 503)
    check("a wrong password is logged",
          "WRONGPASS" in bad.stderr() or "invalid" in bad.stderr(),
          bad.stderr()[-300:])
    a.stop()
    bad.stop()


def test_tls():
    d = tempfile.mkdtemp(prefix="herald-redis-tls-")

    def run(*a):
        subprocess.run(["openssl", *a], check=True, capture_output=True,
                       cwd=d)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
        "-out", "ca.pem", "-days", "2", "-subj", "/CN=herald test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key", "-out",
        "srv.csr", "-subj", "/CN=redis.test")
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("subjectAltName=DNS:redis.test\n")
    run("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "srv.pem", "-days", "2", "-extfile",
        "ext.cnf")
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
        "other.key", "-out", "other.pem", "-days", "2", "-subj", "/CN=other")
    try:
        rd = Redis(tls=(os.path.join(d, "srv.pem"), os.path.join(d, "srv.key")))
    except RuntimeError:
        check("redis-server without TLS support: skipped", True)
        return
    tls = {"tls": True, "tls_ca": os.path.join(d, "ca.pem"),
           "tls_server_name": "redis.test"}
    a = node([rd], "ta", extra={"redis": tls})
    b = node([rd], "tb", extra={"redis": tls})
    check("node a healthy over TLS", wait_healthy(a))
    check("node b healthy over TLS", wait_healthy(b))
    w, _ = sub(b, "feed:tls")
    a.publish("feed:tls", {"i": 1})
    eq("cross-node delivery over TLS",
       [p["data"]["i"] for p in w.pubs("feed:tls", 1)], [1])
    bad = node([rd], "tc", extra={"redis": dict(
        tls, tls_ca=os.path.join(d, "other.pem"))})
    wrongname = node([rd], "td", extra={"redis": dict(
        tls, tls_server_name="not-redis.test")})
    time.sleep(1.0)
    eq("a foreign CA: not healthy", http_req(bad.port, "GET", "/health")[0],
       503)
    check("a foreign CA is logged", "TLS" in bad.stderr(),
          bad.stderr()[-300:])
    eq("a wrong server name: not healthy",
       http_req(wrongname.port, "GET", "/health")[0], 503)
    ins = node([rd], "te", extra={"redis": {"tls": True,
                                            "tls_insecure": True}})
    check("tls_insecure connects without verifying", wait_healthy(ins))
    for n in (a, b, bad, wrongname, ins):
        n.stop()
    shutil.rmtree(d, ignore_errors=True)


def test_scripts_flushed():
    """SCRIPT FLUSH (or a failover to a server without our scripts): the
    call that meets NOSCRIPT fails with 112, the node reconnects, loads the
    scripts again and works."""
    rd = Redis()
    a = node([rd], "fa")
    wait_healthy(a)
    w, _ = sub(a, "feed:f")
    a.publish("feed:f", {"i": 0})
    eq("works before", w.pubs("feed:f", 1)[0]["data"]["i"], 0)
    eq("SCRIPT FLUSH", rd.cmd("SCRIPT", "FLUSH"), b"+OK\r\n")
    st, js, _ = a.api("POST", "/api/publish",
                      {"channel": "feed:f", "data": {"i": 1}})
    eq("the publish that meets NOSCRIPT: 503", st, 503)
    eq("... code 112", (js.get("error") or {}).get("code")
       if isinstance(js, dict) else js, 112)
    check("the node is healthy again", wait_healthy(a, 200, 10))
    a.publish("feed:f", {"i": 2})
    eq("publishing works after the reload",
       w.pubs("feed:f", 1)[0]["data"]["i"], 2)
    check("NOSCRIPT is logged", "NOSCRIPT" in a.stderr(), a.stderr()[-300:])
    a.stop()


def test_config_errors():
    d = tempfile.mkdtemp()
    for what, conf in [
        ("engine redis without an address", '{"engine": "redis"}'),
        ("a bad engine", '{"engine": "mongo"}'),
        ("an unknown redis key", '{"redis": {"adress": []}}'),
        ("a bad redis address",
         '{"engine":"redis","redis":{"addresses":["nohost:99999"]}}'),
        ("a prefix with braces", '{"redis": {"prefix": "a{b}"}}'),
        ("a presence_ttl under 3 s", '{"redis": {"presence_ttl": 1}}'),
        ("a ping_timeout_ms under 100", '{"redis": {"ping_timeout_ms": 5}}'),
        ("a node name with a dash", '{"node_name": "a-b"}'),
        ("17 Redis shards", '{"redis": {"addresses": [%s]}}' %
         ",".join(['"127.0.0.1:1"'] * 17)),
    ]:
        p = os.path.join(d, "c.json")
        with open(p, "w") as f:
            f.write(conf)
        r = subprocess.run([lib.HERALD, "serve", "--config", p, "--listen",
                            "127.0.0.1:0"], capture_output=True, timeout=10)
        check(f"{what}: exit 2 with a message",
              r.returncode == 2 and len(r.stderr) > 0,
              f"rc={r.returncode} {r.stderr[-200:]!r}")
    shutil.rmtree(d, ignore_errors=True)


def test_gap_repair():
    """Publications that reach the stream but not pub/sub (as when a
    subscriber connection drops a message) are read from the stream before
    anything after them is delivered; ones the stream no longer has make
    the subscribers reconnect and learn "recovered": false."""
    rd = Redis()
    a = node([rd], "ga")
    wait_healthy(a)
    w, r = sub(a, "feed:g")
    for i in range(3):
        a.publish("feed:g", {"i": i})
    eq("before", [p["offset"] for p in w.pubs("feed:g", 3)], [1, 2, 3])
    silent = ("local o = redis.call('HINCRBY', KEYS[2], 'o', 1) "
              "local t = redis.call('TIME') "
              "if ARGV[2] == 'x' then redis.call('XADD', KEYS[1], o .. '-0', "
              "'t', t[1] * 1000, 'p', ARGV[1]) end return o")
    out = rd.cmd("EVAL", silent, "2", "herald.{feed:g}.s",
                 "herald.{feed:g}.m", ',"data":{"i":3}}', "x")
    eq("a publication behind pub/sub's back", out, b":4\r\n")
    a.publish("feed:g", {"i": 4})
    got = w.pubs("feed:g", 2)
    eq("the missed one is read from the stream, in order",
       [(p["offset"], p["data"]["i"]) for p in got], [(4, 3), (5, 4)])
    eq("metrics: one resync", a.metrics().get("herald_redis_resyncs_total"),
       1)
    # Now one the stream does not have either.
    rd.cmd("EVAL", silent, "2", "herald.{feed:g}.s", "herald.{feed:g}.m",
           "", "-")
    a.publish("feed:g", {"i": 6})
    code, msgs = w.wait_close(5)
    eq("unrecoverable gap: disconnected with 3010", code, 3010)
    w2, r2 = sub(a, "feed:g", since={"epoch": r["epoch"], "offset": 5})
    eq("... and resubscribing says recovered false", r2.get("recovered"),
       False)
    eq("metrics: one lost", a.metrics().get("herald_redis_lost_total"), 1)
    a.stop()


TESTS = [test_gap_repair, test_two_nodes_fanout, test_sse_channels, test_three_nodes_presence,
         test_history_and_recovery_across_nodes, test_node_restart,
         test_redis_restart_persistent, test_redis_restart_data_lost,
         test_redis_restart_snapshot,
         test_redis_loses_nothing_aof, test_redis_loses_rdb_rollback,
         test_redis_loses_everything,
         test_redis_loses_failover_to_lagging_replica,
         test_redis_loses_restored_backup,
         test_node_killed_under_load, test_redis_down_at_start, test_shards,
         test_auth, test_tls, test_scripts_flushed, test_config_errors]


def main():
    args = lib.take_threads(sys.argv[1:])
    if not args:
        print(__doc__)
        return 2
    lib.HERALD = os.path.abspath(args[0])
    only = args[2::2] if len(args) > 2 and args[1] == "-k" else []
    if not os.access(REDIS_BIN, os.X_OK):
        print("redis-server not found: skipped")
        return 77
    signal.signal(signal.SIGALRM, lambda *a: (print("FAIL over 400 s"),
                                              lib.kill_all(), stop_redises(),
                                              os._exit(1)))
    signal.alarm(400)
    t0 = time.monotonic()
    try:
        for t in TESTS:
            if only and not any(o in t.__name__ for o in only):
                continue
            try:
                lib.run_test(t)
            finally:
                stop_redises()
    finally:
        lib.kill_all()
        stop_redises()
    print(f"{R.passed} passed, {R.failed} failed "
          f"({time.monotonic() - t0:.1f}s)")
    if R.failed:
        print("failed:")
        for f in R.failures:
            print(f"  {f}")
    return 1 if R.failed else 0


if __name__ == "__main__":
    sys.exit(main())
