#!/usr/bin/python3
"""Redis without a single point of failure: herald nodes over Redis
Sentinel and over a Redis Cluster (docs/scaling.md), with real servers
this script starts from Debian's redis-server: a master, a replica and
three sentinels (`redis-server --sentinel`); a cluster of three masters
with a replica each (created with `redis-cli --cluster create`).

In each, a master is killed with SIGKILL under a publisher and
sequence-checking subscribers on two nodes: delivery must resume by
itself, no acknowledged publication may be missed without the subscriber
being told (a 3010, then "recovered": false: the promoted replica may
lack the last writes, and in the Sentinel test it is made to), and the
nodes' health must return, naming the new master. Also: MOVED and ASK
followed while a channel's slot migrates under a publisher, and the
configuration's errors.

usage: redis_ha.py PATH/TO/herald [--long] [--threads N] [-k SUBSTRING ...]

--long: three failovers in a row in each set-up (the killed master comes
back as a replica, then its successor is killed), with longer traffic;
about three minutes. Without it (CTest push_redis_ha) about seventy seconds.

Exits 77 (skipped) when redis-server is not installed. Every server
listens on 127.0.0.1 on a free port in its own temporary directory and is
stopped by its PID.
"""

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import lib  # noqa: E402
from lib import R, Server, check, eq, http_req  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    "redis_suite", os.path.join(HERE, "redis.py"))
rs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rs)
Redis, Subscriber, check_streams, wait_healthy = (
    rs.Redis, rs.Subscriber, rs.check_streams, rs.wait_healthy)

REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
LONG = False
SENTINELS = []
MEASURED = []  # lines for the summary (docs/scaling.md quotes them)

NS = [{"name": "feed", "publish": True, "history_size": 2000,
       "history_ttl": 600}]


def node(redis_cfg, name):
    cfg = {"anonymous": True, "engine": "redis", "namespaces": NS,
           "redis": dict(redis_cfg, presence_ttl=3, ping_timeout_ms=1000)}
    return Server(cfg, args=["--node-name", name], name=f"node {name}")


def health(srv):
    st, js, _ = http_req(srv.port, "GET", "/health")
    return st, js if isinstance(js, dict) else {}


class Sentinel:
    """redis-server --sentinel of our own, monitoring master_port as
    "herald" with a quorum of 2 and a 1 s down-after."""

    def __init__(self, master_port):
        self.port = rs.free_port()
        self.dir = tempfile.mkdtemp(prefix="herald-sentinel-test-")
        self.conf = os.path.join(self.dir, "sentinel.conf")
        with open(self.conf, "w") as f:
            f.write(f"port {self.port}\nbind 127.0.0.1\ndaemonize no\n"
                    f"protected-mode no\ndir {self.dir}\n"
                    f"sentinel monitor herald 127.0.0.1 {master_port} 2\n"
                    "sentinel down-after-milliseconds herald 1000\n"
                    "sentinel failover-timeout herald 10000\n"
                    "sentinel parallel-syncs herald 1\n")
        self.proc = subprocess.Popen(
            [rs.REDIS_BIN, self.conf, "--sentinel", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL)
        SENTINELS.append(self)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.cmd("PING").startswith(b"+PONG"):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server --sentinel did not start")

    cmd = Redis.cmd
    password = None
    tls = None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def stop_all():
    for s in SENTINELS:
        s.stop()
    SENTINELS.clear()
    rs.stop_redises()


class FreezableProxy(rs.Proxy):
    """The replica's link to its master: freeze() stops carrying bytes, so
    the replica lags by every write made meanwhile while both ends still
    see the link up."""

    def __init__(self, target):
        self.gate = threading.Event()
        self.gate.set()
        super().__init__(target)

    def _pump(self, src, dst):
        try:
            while True:
                d = src.recv(65536)
                if not d:
                    break
                self.gate.wait()
                dst.sendall(d)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(2)
            except OSError:
                pass

    def freeze(self):
        self.gate.clear()

    def thaw(self):
        self.gate.set()


def publisher(nodes, channel, stop, log):
    """Publishes i = 0, 1, ... round-robin through the nodes over HTTP
    until stop is set. log: (time, i, HTTP status, error code)."""
    i = 0
    while not stop.is_set():
        n = nodes[i % len(nodes)]
        t = time.monotonic()
        try:
            st, js, _ = http_req(n.port, "POST", "/api/publish",
                                 {"channel": channel, "data": {"i": i}},
                                 key=n.api_key, timeout=3)
            code = None
            if st != 200 and isinstance(js, dict):
                code = (js.get("error") or {}).get("code")
            log.append((t, i, st, code))
        except OSError:
            log.append((t, i, "conn", None))
        i += 1
        time.sleep(0.004)


def acked(log):
    return [i for (_, i, st, _) in log if st == 200]


def outage(log, t_kill):
    """(seconds from the kill to the first acknowledged publish after the
    last refusal, refusals, their codes)."""
    after = [e for e in log if e[0] >= t_kill]
    fails = [e for e in after if e[2] != 200]
    if not fails:
        return 0.0, 0, set()
    last_fail = max(e[0] for e in fails)
    ok = [e[0] for e in after if e[2] == 200 and e[0] > last_fail]
    back = (min(ok) if ok else time.monotonic()) - t_kill
    return back, len(fails), {e[3] for e in fails}


def events(srv):
    """How many times each ev=redis_*/sentinel_* appears in srv's log."""
    out = {}
    for m in re.finditer(r"ev=((?:redis|sentinel)_\w+)", srv.stderr()):
        out[m.group(1)] = out.get(m.group(1), 0) + 1
    return " ".join(f"{k}={v}" for k, v in sorted(out.items()))


def stream_items(rd, channel):
    """The i of each publication rd's stream of channel holds."""
    r = subprocess.run([REDIS_CLI, "-p", str(rd.port), "--raw", "XRANGE",
                        f"herald.{{{channel}}}.s", "-", "+"],
                       capture_output=True, timeout=20, text=True)
    return {int(m.group(1)) for m in re.finditer(r'"i":\s*(\d+)', r.stdout)}


def watch_promotion(rd):
    """Starts timing how long rd (a replica) takes to say ROLE master: the
    part of a failover that is Redis' own. Returns a dict whose "s" is set
    (seconds after the call) once it does."""
    out = {"s": None}
    t0 = time.monotonic()

    def run():
        while time.monotonic() - t0 < 60:
            try:
                if rd.cmd("ROLE").startswith(b"*3\r\n$6\r\nmaster"):
                    out["s"] = time.monotonic() - t0
                    return
            except OSError:
                pass
            time.sleep(0.02)
    threading.Thread(target=run, daemon=True).start()
    return out


def promoted(w):
    return f"{w['s']:.1f}s" if w["s"] is not None else "?"


def wait_until(fn, timeout, step=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if fn():
                return True
        except OSError:
            pass
        time.sleep(step)
    return False


def run_traffic(nodes, channels, warmup):
    """Starts, per channel, two subscribers (first on nodes[0] and on
    nodes[1]) and a publisher; returns (subs, stop, logs, threads)."""
    subs, logs, threads = {}, {}, []
    stop = threading.Event()
    for ch in channels:
        subs[ch] = [Subscriber(nodes, ch, f"{ch} sub on {nodes[0].name}"),
                    Subscriber(nodes[::-1], ch,
                               f"{ch} sub on {nodes[1].name}")]
        for s in subs[ch]:
            s.start()
    time.sleep(0.5)
    for ch in channels:
        logs[ch] = []
        t = threading.Thread(target=publisher, args=(nodes, ch, stop,
                                                     logs[ch]), daemon=True)
        t.start()
        threads.append(t)
    time.sleep(warmup)
    return subs, stop, logs, threads


def end_traffic(subs, stop, threads):
    stop.set()
    for t in threads:
        t.join(10)
    time.sleep(1.5)
    for ss in subs.values():
        for s in ss:
            s.stop_flag = True
    for ss in subs.values():
        for s in ss:
            s.join(10)


def check_resumed(name, subs, log):
    """Every subscriber has the channel's last acknowledged publication:
    delivery resumed by itself after the failover."""
    a = acked(log)
    last = max(a) if a else None
    for s in subs:
        check(f"{name}: {s.name} got the last acknowledged publication "
              "(delivery resumed)", last is not None and
              last in {i for (_, _, i) in s.got},
              f"last={last} got up to {s.got[-1:]}")


# --------------------------------------------------------------------------
# Sentinel
# --------------------------------------------------------------------------


def sentinel_setup():
    master = Redis()
    proxy = FreezableProxy(master.port)
    replica = Redis(replicaof=proxy.port)
    sentinels = [Sentinel(master.port) for _ in range(3)]

    def ready():
        link = b"master_link_status:up" in replica.cmd("INFO", "replication")
        known = all(str(replica.port).encode() in
                    s.cmd("SENTINEL", "replicas", "herald")
                    for s in sentinels)
        peers = all(b"num-other-sentinels\r\n$1\r\n2" in
                    s.cmd("SENTINEL", "master", "herald") for s in sentinels)
        return link and known and peers
    check("sentinels see the master, the replica and each other",
          wait_until(ready, 30, 0.2))
    return master, proxy, replica, sentinels


def sentinel_cfg(sentinels):
    return {"sentinel": {"master_name": "herald", "addresses": [
        f"127.0.0.1:{s.port}" for s in sentinels]}}


def shard_addrs(srv):
    st, js = health(srv)
    return [sh.get("address") for sh in
            (js.get("redis") or {}).get("shards", [])]


def test_sentinel_failover():
    """A master, a replica, three sentinels; nodes a and b find the master
    through the sentinels. The replica's link is frozen (it lags by every
    publication acknowledged meanwhile), then the master is killed: the
    sentinels promote the replica, the nodes follow (+switch-master, or
    re-asking on reconnect), and every subscriber is told that
    publications are gone."""
    rounds = 3 if LONG else 1
    master, proxy, replica, sentinels = sentinel_setup()
    a, b = node(sentinel_cfg(sentinels), "sa"), node(sentinel_cfg(sentinels),
                                                     "sb")
    check("node a healthy", wait_healthy(a))
    check("node b healthy", wait_healthy(b))
    st, js = health(a)
    eq("/health names the master the sentinels gave",
       (js.get("redis") or {}).get("shards"),
       [{"kind": "sentinel", "address": f"127.0.0.1:{master.port}",
         "up": True, "master_name": "herald"}])
    ch = "feed:sentinel"
    subs, stop, logs, threads = run_traffic([a, b], [ch], 1.0)
    servers = {master.port: master, replica.port: replica}
    cur, nxt = master, replica
    for rnd in range(rounds):
        if rnd == 0:
            # The replica stops receiving: whatever is acknowledged now
            # exists only on the master about to die.
            proxy.freeze()
            time.sleep(0.6)
        before = len(acked(logs[ch]))
        t_kill = time.monotonic()
        cur.kill()
        prom = watch_promotion(nxt)
        if rnd == 0:
            first_after = max(acked(logs[ch]) or [0]) + 1
        ok_a = wait_healthy(a, 200, 30)
        ok_b = wait_healthy(b, 200, 30)
        t_back = time.monotonic() - t_kill
        check(f"round {rnd + 1}: node a healthy again", ok_a)
        check(f"round {rnd + 1}: node b healthy again", ok_b)
        eq(f"round {rnd + 1}: /health names the promoted replica",
           (shard_addrs(a), shard_addrs(b)),
           ([f"127.0.0.1:{nxt.port}"], [f"127.0.0.1:{nxt.port}"]))
        time.sleep(3.0 if LONG else 1.5)
        back, nfail, codes = outage(logs[ch], t_kill)
        check(f"round {rnd + 1}: publishing resumed",
              len(acked(logs[ch])) > before + 50,
              f"{len(acked(logs[ch])) - before} acked since")
        check(f"round {rnd + 1}: refusals are 112 (temporary)",
              codes <= {112, None}, codes)
        MEASURED.append(f"sentinel round {rnd + 1}: replica promoted after "
                        f"{promoted(prom)}, health back after "
                        f"{t_back:.1f}s, publishes refused for {back:.1f}s "
                        f"({nfail} refusals, codes {sorted(map(str, codes))})")
        if rnd + 1 < rounds:
            # The dead master comes back; the sentinels make it a replica
            # of the new one, which is killed next.
            cur.start()
            if rnd == 0:
                proxy.close()
            servers[cur.port] = cur

            def follows(r=cur, m=nxt):
                info = r.cmd("INFO", "replication")
                return (b"role:slave" in info and
                        b"master_link_status:up" in info and
                        f"master_port:{m.port}".encode() in info)
            check(f"round {rnd + 1}: the old master follows the new one",
                  wait_until(follows, 30, 0.2))
            time.sleep(1.0)
            cur, nxt = nxt, cur
    end_traffic(subs, stop, threads)
    a_ok = acked(logs[ch])
    check_streams(subs[ch], a_ok, exact=False)
    check_resumed("sentinel", subs[ch], logs[ch])
    if rounds == 1:
        missing = sorted(set(i for i in a_ok if i < first_after) -
                         stream_items(nxt, ch))
        check("the promoted replica lacks publications acknowledged while "
              "it lagged", len(missing) > 0, missing[:5])
        MEASURED.append(f"sentinel: the promoted replica lacked {len(missing)}"
                        " acknowledged publications")
    delivered = set()
    for s in subs[ch]:
        delivered |= {i for (_, _, i) in s.got}
    lost = sorted(set(a_ok) - delivered)
    check("... and every subscriber was told (recovered: false)",
          all(s.unrecovered >= 1 for s in subs[ch]),
          [s.unrecovered for s in subs[ch]])
    MEASURED.append(f"sentinel: {len(a_ok)} acknowledged, {len(lost)} never "
                    "delivered, subscribers told "
                    f"{[s.unrecovered for s in subs[ch]]} time(s), "
                    f"reconnected {[s.reconnects for s in subs[ch]]}; "
                    f"node a: {events(a)}")
    m = a.metrics()
    check("metrics: failovers counted",
          (m.get("herald_redis_failovers_total") or 0) >= 1, m.get(
              "herald_redis_failovers_total"))
    final = nxt  # the last one promoted
    check("metrics: the shard's line names the new master",
          m.get('herald_redis_shard_up{shard="0",address="127.0.0.1:%d"}'
                % final.port) == 1,
          [k for k in m if k.startswith("herald_redis_shard_up")])
    st, js, _ = a.api("GET", "/api/info")
    entry = [n for n in js["result"]["nodes"] if n["name"] == "sa"] \
        if st == 200 else []
    check("/api/info: each node says which server its shard uses",
          entry and entry[0].get("redis", {}).get("shards", [{}])[0].get(
              "address") == f"127.0.0.1:{final.port}", entry)
    check("a node logged the switch", "ev=sentinel_switch_master" in
          a.stderr() or "ev=redis_failover" in a.stderr(),
          a.stderr()[-400:])
    a.stop()
    b.stop()
    proxy.close()


def test_sentinel_never_writes_to_replica():
    """The sentinels say the replica is the master (a stale answer): ROLE
    shows otherwise, so the shard stays down and no publish is accepted;
    a READONLY reply takes a shard down too."""
    master = Redis()
    replica = Redis(replicaof=master.port)
    check("the replica follows", wait_until(
        lambda: b"master_link_status:up" in replica.cmd("INFO",
                                                        "replication"), 20))
    # A lone sentinel that names the replica: it monitors it as the master
    # called "herald" (alone, under its quorum of 2, it changes nothing).
    bogus = Sentinel(replica.port)
    a = node({"sentinel": {"master_name": "herald", "addresses": [
        f"127.0.0.1:{bogus.port}"]}}, "ra")
    time.sleep(2.5)
    st, js = health(a)
    eq("a replica named as master: not healthy", st, 503)
    st, body, _ = a.api("POST", "/api/publish",
                        {"channel": "feed:ro", "data": {"i": 1}})
    eq("... and nothing is published there", st, 503)
    check("ROLE refusal is logged", "not a master" in a.stderr(),
          a.stderr()[-400:])
    eq("the replica holds no channel", replica.cmd("DBSIZE"), b":0\r\n")
    a.stop()


def test_master_demoted():
    """A shard's master becomes a replica while nodes are connected to it
    (REPLICAOF, as a failover does to an old master that comes back):
    the next write meets READONLY, or the ROLE check within a second sees
    it; either way the shard goes down, publishes are refused (112/503)
    rather than sent to a replica, and it comes back when the server is a
    master again."""
    other = Redis()
    rd = Redis()
    a = node({"addresses": [f"127.0.0.1:{rd.port}"]}, "da")
    check("node healthy", wait_healthy(a))
    w, _ = rs.sub(a, "feed:d")
    a.publish("feed:d", {"i": 0})
    eq("works before", [p["data"]["i"] for p in w.pubs("feed:d", 1)], [0])
    eq("REPLICAOF", rd.cmd("REPLICAOF", "127.0.0.1", str(other.port)),
       b"+OK\r\n")
    st, _, _ = a.api("POST", "/api/publish",
                     {"channel": "feed:d", "data": {"i": 1}})
    eq("a publish after the demotion is refused", st, 503)
    check("the node turns unhealthy", wait_healthy(a, 503, 5))
    err = a.stderr()
    check("READONLY or ROLE is logged",
          "READONLY" in err or "not a master" in err, err[-400:])
    eq("REPLICAOF NO ONE", rd.cmd("REPLICAOF", "NO", "ONE"), b"+OK\r\n")
    check("healthy again once it is a master", wait_healthy(a, 200, 15))
    a.publish("feed:d", {"i": 2})
    st, js, _ = a.api("GET", "/api/history?channel=feed:d")
    check("publishing works again", st == 200, js)
    # Demoted again, and nothing written: the ROLE check alone notices.
    n_role = a.stderr().count("not a master")
    rd.cmd("REPLICAOF", "127.0.0.1", str(other.port))
    check("without a write, the ROLE check takes the shard down",
          wait_healthy(a, 503, 5) and
          a.stderr().count("not a master") > n_role, a.stderr()[-300:])
    rd.cmd("REPLICAOF", "NO", "ONE")
    check("and it comes back", wait_healthy(a, 200, 15))
    a.stop()


def test_sentinel_mixed_shards():
    """redis.shards: a sentinel-backed shard next to a plain address."""
    master, proxy, replica, sentinels = sentinel_setup()
    proxy.close()
    plain = Redis()
    cfg = {"shards": [sentinel_cfg(sentinels),
                      {"address": f"127.0.0.1:{plain.port}"}]}
    a, b = node(cfg, "ma"), node(cfg, "mb")
    check("node a healthy", wait_healthy(a))
    check("node b healthy", wait_healthy(b))
    eq("/health lists both shards", shard_addrs(a),
       [f"127.0.0.1:{master.port}", f"127.0.0.1:{plain.port}"])
    chans = [f"feed:m{i}" for i in range(12)]
    ws = [rs.sub(b, c)[0] for c in chans]
    for i, c in enumerate(chans):
        a.publish(c, {"i": i})
    ok = all(w.pubs(c, 1)[0]["data"]["i"] == i
             for i, (w, c) in enumerate(zip(ws, chans)))
    check("every channel crosses nodes", ok)
    n1 = master.cmd("KEYS", "herald.{feed:m*}.s").count(b".s\r\n")
    n2 = plain.cmd("KEYS", "herald.{feed:m*}.s").count(b".s\r\n")
    eq("channels are on both shards", (n1 > 0, n2 > 0, n1 + n2),
       (True, True, 12))
    a.stop()
    b.stop()


# --------------------------------------------------------------------------
# Redis Cluster
# --------------------------------------------------------------------------

CLUSTER_ARGS = ["--cluster-enabled", "yes", "--cluster-config-file",
                "nodes.conf", "--cluster-node-timeout", "1000"]


def cluster_nodes(rd):
    """CLUSTER NODES of rd: [{"id", "port", "flags", "master", "slots"}]."""
    raw = rd.cmd("CLUSTER", "NODES").decode("utf-8", "replace")
    out = []
    for line in raw.split("\r\n", 1)[-1].split("\n"):
        f = line.split()
        if len(f) < 8:
            continue
        out.append({"id": f[0], "port": int(f[1].split("@")[0].split(":")[1]),
                    "flags": f[2], "master": f[3], "link": f[7],
                    "slots": f[8:]})
    return out


def cluster_port():
    """A free port whose cluster bus port (+10000) is free too: below the
    ephemeral range, so that the bus port exists."""
    import random
    import socket
    for _ in range(200):
        p = random.randrange(20000, 30000)
        socks = []
        try:
            for q in (p, p + 10000):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", q))
            return p
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port pair")


def make_cluster():
    rds = [Redis(extra=CLUSTER_ARGS, port=cluster_port()) for _ in range(6)]
    r = subprocess.run([REDIS_CLI, "--cluster", "create",
                        *[f"127.0.0.1:{x.port}" for x in rds],
                        "--cluster-replicas", "1", "--cluster-yes"],
                       capture_output=True, timeout=60)
    eq("redis-cli --cluster create", r.returncode, 0)

    def ready():
        for x in rds:
            if b"cluster_state:ok" not in x.cmd("CLUSTER", "INFO"):
                return False
            ns = cluster_nodes(x)
            if (len(ns) != 6 or
                    sum("master" in n["flags"] for n in ns) != 3 or
                    any(n["link"] != "connected" or "fail" in n["flags"]
                        for n in ns)):
                return False
        for x in rds:
            info = x.cmd("INFO", "replication")
            if b"role:master" in info and b"state=online" not in info:
                return False
        return True
    check("cluster of 3 masters with a replica each is ready",
          wait_until(ready, 60, 0.3))
    return rds


def master_of(rds, port_of_any, channel):
    """The Redis of the master serving channel's slot, and its replica."""
    slot = int(port_of_any.cmd("CLUSTER", "KEYSLOT", channel)[1:-2])
    ns = cluster_nodes(port_of_any)
    by_port = {x.port: x for x in rds}
    for n in ns:
        if "master" not in n["flags"] or "fail" in n["flags"]:
            continue
        for rg in n["slots"]:
            if rg.startswith("["):
                continue
            lo, _, hi = rg.partition("-")
            if int(lo) <= slot <= int(hi or lo):
                rep = [m for m in ns if m["master"] == n["id"] and
                       "fail" not in m["flags"]]
                return by_port[n["port"]], (by_port[rep[0]["port"]]
                                            if rep else None), slot
    raise RuntimeError(f"no master for slot {slot}")


def cluster_cfg(rds):
    return {"cluster": {"addresses": [f"127.0.0.1:{x.port}"
                                      for x in rds[:2]]}}


def test_cluster_failover():
    """Three masters with a replica each; nodes a and b read the slot map
    from two seeds. Channel X lives on the master that is killed, channel
    Y on another. X's subscribers are told their publications may be gone
    (the promoted replica is another data history: a new epoch); Y's get
    every acknowledged publication, exactly."""
    rounds = 3 if LONG else 1
    rds = make_cluster()
    a, b = node(cluster_cfg(rds), "ca"), node(cluster_cfg(rds), "cb")
    check("node a healthy", wait_healthy(a, 200, 20))
    check("node b healthy", wait_healthy(b, 200, 20))
    st, js = health(a)
    red = js.get("redis") or {}
    eq("/health: cluster mode, three masters up, every slot served",
       (red.get("mode"), len(red.get("shards", [])),
        all(s["up"] for s in red.get("shards", [])),
        sum(s.get("slots", 0) for s in red.get("shards", []))),
       ("cluster", 3, True, 16384))
    # Two channels on two different masters.
    x, y = "feed:cx", None
    vm, _, xslot = master_of(rds, rds[0], x)
    for k in range(100):
        cand = f"feed:cy{k}"
        if master_of(rds, rds[0], cand)[0] is not vm:
            y = cand
            break
    subs, stop, logs, threads = run_traffic([a, b], [x, y], 1.5)
    for rnd in range(rounds):
        victim, heir, _ = master_of(rds, rds[0] if rds[0].proc.poll() is None
                                    else rds[1], x)
        before = len(acked(logs[x]))
        t_kill = time.monotonic()
        victim.kill()
        prom = watch_promotion(heir)
        ok_a = wait_healthy(a, 200, 40)
        ok_b = wait_healthy(b, 200, 40)
        t_back = time.monotonic() - t_kill
        check(f"round {rnd + 1}: node a healthy again", ok_a)
        check(f"round {rnd + 1}: node b healthy again", ok_b)
        addrs = shard_addrs(a)
        check(f"round {rnd + 1}: /health lists the promoted replica, not "
              "the dead master",
              f"127.0.0.1:{heir.port}" in addrs and
              f"127.0.0.1:{victim.port}" not in addrs, addrs)
        time.sleep(3.0 if LONG else 2.0)
        for ch in (x, y):
            back, nfail, codes = outage(logs[ch], t_kill)
            check(f"round {rnd + 1}: {ch}: refusals are 112 (temporary)",
                  codes <= {112, None}, codes)
            MEASURED.append(
                f"cluster round {rnd + 1}: {ch} ({'on the killed master' if ch == x else 'on another master'}): "
                f"publishes refused for {back:.1f}s ({nfail} refusals); "
                f"replica promoted after {promoted(prom)}, "
                f"health back after {t_back:.1f}s")
        check(f"round {rnd + 1}: publishing on X resumed",
              len(acked(logs[x])) > before + 50,
              f"{len(acked(logs[x])) - before} acked since")
        if rnd + 1 < rounds:
            victim.start()  # comes back as a replica of its successor

            def rejoined(v=victim):
                info = v.cmd("INFO", "replication")
                return (b"role:slave" in info and
                        b"master_link_status:up" in info and
                        all(b"cluster_state:ok" in r.cmd("CLUSTER", "INFO")
                            for r in rds if r.proc.poll() is None))
            check(f"round {rnd + 1}: the killed master rejoins as a replica",
                  wait_until(rejoined, 40, 0.3))
            time.sleep(1.0)
    end_traffic(subs, stop, threads)
    check_streams(subs[x], acked(logs[x]), exact=False)
    check("X: every subscriber was told (recovered: false) at the failover",
          all(s.unrecovered >= 1 for s in subs[x]),
          [s.unrecovered for s in subs[x]])
    check_resumed("X", subs[x], logs[x])
    check_streams(subs[y], acked(logs[y]), exact=True)
    m = a.metrics()
    check("metrics: failovers counted",
          (m.get("herald_redis_failovers_total") or 0) >= rounds,
          m.get("herald_redis_failovers_total"))
    eq("metrics: three shards up", m.get("herald_redis_shards_up"), 3)
    check("the failover is logged", "ev=redis_failover" in a.stderr(),
          a.stderr()[-400:])
    MEASURED.append(f"cluster: X subscribers told "
                    f"{[s.unrecovered for s in subs[x]]} time(s), "
                    f"reconnected {[s.reconnects for s in subs[x]]}; "
                    f"node a: {events(a)}")
    del xslot
    a.stop()
    b.stop()


def test_cluster_slot_migration():
    """A channel's slot moves to another master while it is published to
    and followed on two nodes: the publishes that meet ASK (keys already
    moved) or MOVED (slot handed over) are sent on to the master named,
    and the subscribers follow the slot (the keys now live on another
    server: a new epoch, so they are told)."""
    rds = make_cluster()
    a, b = node(cluster_cfg(rds), "ma"), node(cluster_cfg(rds), "mb")
    check("node a healthy", wait_healthy(a, 200, 20))
    check("node b healthy", wait_healthy(b, 200, 20))
    ch = "feed:mig"
    src, _, slot = master_of(rds, rds[0], ch)
    dst = next(r for r in rds if r is not src and
               any(n["port"] == r.port and "master" in n["flags"]
                   for n in cluster_nodes(rds[0])))
    ids = {n["port"]: n["id"] for n in cluster_nodes(rds[0])}
    subs, stop, logs, threads = run_traffic([a, b], [ch], 1.0)
    eq("IMPORTING on the target",
       dst.cmd("CLUSTER", "SETSLOT", str(slot), "IMPORTING", ids[src.port]),
       b"+OK\r\n")
    eq("MIGRATING on the source",
       src.cmd("CLUSTER", "SETSLOT", str(slot), "MIGRATING", ids[dst.port]),
       b"+OK\r\n")
    time.sleep(0.5)  # publishes still go to the source, which has the keys
    keys = [f"herald.{{{ch}}}.{s}" for s in "smpz"]
    out = src.cmd("MIGRATE", "127.0.0.1", str(dst.port), "", "0", "5000",
                  "KEYS", *keys)
    check("MIGRATE the channel's keys", out.startswith((b"+OK", b"+NOKEY")),
          out)
    time.sleep(0.7)  # publishes now meet ASK: sent on with ASKING
    # The target first, then the source, as redis-cli does.
    for r in [dst, src] + [r for r in rds if r not in (dst, src)]:
        r.cmd("CLUSTER", "SETSLOT", str(slot), "NODE", ids[dst.port])
    time.sleep(2.0)  # then MOVED: the slot is the target's
    end_traffic(subs, stop, threads)
    a_ok = acked(logs[ch])
    check_streams(subs[ch], a_ok, exact=False)
    check_resumed("migrated", subs[ch], logs[ch])
    fails = [e for e in logs[ch] if e[2] != 200]
    check("few publishes refused during the migration",
          len(fails) <= 20 and {e[3] for e in fails} <= {112, None},
          f"{len(fails)} of {len(logs[ch])}: {fails[:5]}")
    red = sum((srv.metrics().get("herald_redis_redirects_total") or 0)
              for srv in (a, b))
    check("MOVED or ASK followed (herald_redis_redirects_total)", red >= 1,
          red)
    eq("the target holds the stream now", dst.cmd("EXISTS", keys[0]),
       b":1\r\n")
    MEASURED.append(f"slot migration: {len(a_ok)} acknowledged, "
                    f"{len(fails)} refused, {red:.0f} commands redirected, "
                    f"subscribers told {[s.unrecovered for s in subs[ch]]} "
                    f"time(s); node a: {events(a)}")
    a.stop()
    b.stop()


def test_cluster_backend_features():
    """The backend features that act on the whole cluster
    (tests/push/backend_redis.py) over a Redis Cluster of three masters:
    idempotency keys, user connection counts, control messages between
    nodes and channel occupancy each live in their own slot."""
    import backend_redis
    rds = make_cluster()
    backend_redis.CLUSTER = lambda: cluster_cfg(rds)
    try:
        for t in backend_redis.TESTS:
            print(f"-- {t.__name__} over the cluster")
            t()
            for srv in list(lib.SERVERS):
                if not srv.stopped:
                    srv.stop()
    finally:
        backend_redis.CLUSTER = None


def test_config_errors():
    d = tempfile.mkdtemp()
    for what, conf in [
        ("addresses and cluster together",
         {"redis": {"addresses": ["127.0.0.1:1"],
                    "cluster": {"addresses": ["127.0.0.1:2"]}}}),
        ("a sentinel without master_name",
         {"redis": {"sentinel": {"addresses": ["127.0.0.1:1"]}}}),
        ("a sentinel without addresses",
         {"redis": {"sentinel": {"master_name": "m"}}}),
        ("a sentinel with an unknown key",
         {"redis": {"sentinel": {"master_name": "m", "addresses": [],
                                 "master": 1}}}),
        ("a bad sentinel address",
         {"engine": "redis", "redis": {"sentinel": {
             "master_name": "m", "addresses": ["nohost:99999"]}}}),
        ("a shard with two kinds",
         {"redis": {"shards": [{"address": "127.0.0.1:1", "sentinel": {
             "master_name": "m", "addresses": ["127.0.0.1:2"]}}]}}),
        ("an empty shards list", {"redis": {"shards": []}}),
        ("a cluster without addresses", {"redis": {"cluster": {}}}),
        ("a bad cluster address",
         {"engine": "redis",
          "redis": {"cluster": {"addresses": ["127.0.0.1:0"]}}}),
        ("17 seed nodes",
         {"redis": {"cluster": {"addresses": ["127.0.0.1:1"] * 17}}}),
    ]:
        p = os.path.join(d, "c.json")
        with open(p, "w") as f:
            json.dump(conf, f)
        r = subprocess.run([lib.HERALD, "serve", "--config", p, "--listen",
                            "127.0.0.1:0"], capture_output=True, timeout=10)
        check(f"{what}: exit 2 with a message",
              r.returncode == 2 and len(r.stderr) > 0,
              f"rc={r.returncode} {r.stderr[-200:]!r}")
    shutil.rmtree(d, ignore_errors=True)


TESTS = [test_config_errors, test_master_demoted,
         test_sentinel_never_writes_to_replica,
         test_sentinel_mixed_shards, test_sentinel_failover,
         test_cluster_failover, test_cluster_slot_migration,
         test_cluster_backend_features]


def main():
    global LONG
    args = lib.take_threads(sys.argv[1:])
    if not args:
        print(__doc__)
        return 2
    lib.HERALD = os.path.abspath(args[0])
    rest = args[1:]
    if "--long" in rest:
        LONG = True
        rest.remove("--long")
    only = rest[1::2] if rest and rest[0] == "-k" else []
    if not os.access(rs.REDIS_BIN, os.X_OK):
        print("redis-server not found: skipped")
        return 77
    limit = 900 if LONG else 420
    signal.signal(signal.SIGALRM, lambda *a: (print(f"FAIL over {limit} s"),
                                              lib.kill_all(), stop_all(),
                                              os._exit(1)))
    signal.alarm(limit)
    t0 = time.monotonic()
    try:
        for t in TESTS:
            if only and not any(o in t.__name__ for o in only):
                continue
            try:
                lib.run_test(t)
            finally:
                stop_all()
    finally:
        lib.kill_all()
        stop_all()
    for m in MEASURED:
        print(f"measured: {m}")
    print(f"{R.passed} passed, {R.failed} failed "
          f"({time.monotonic() - t0:.1f}s)")
    if R.failed:
        print("failed:")
        for f in R.failures:
            print(f"  {f}")
    return 1 if R.failed else 0


if __name__ == "__main__":
    sys.exit(main())
