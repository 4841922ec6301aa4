#!/usr/bin/python3
"""bench/soak/soak.py - the driver of bench/soak/run.sh.

Proves, under faults, the promise of docs/protocol.md: every acknowledged
publication is delivered exactly once, in order, or the client is told.

usage: soak.py PATH/TO/herald        (settings from the environment, below)

Starts redis-server shards and `herald serve` nodes (engine "redis") on
127.0.0.1, WebSocket and SSE subscribers that reconnect at random to random
nodes and resume from their last position, HTTP and WebSocket publishers
whose publications carry a sequence number, and a fault injector that
SIGKILLs and restarts Redis shards (same port, same data directory) and
nodes (same port). After the run it checks every subscriber's stream
against the acknowledged publications and writes a report (stdout and
JSON). Exit status: 0 all checks passed, 1 a check failed, 2 bad setup.

Environment (defaults in brackets):
  SOAK_SECONDS      length of the run, faults included [600]
  SOAK_NODES        herald nodes [3]
  SOAK_SHARDS       Redis shards [2]
  SOAK_PERSIST      aof | none | rdb | mixed (shard i: aof if i even, none
                    if odd) [mixed]; aof = appendfsync always, rdb = save 1 1
  SOAK_CHANNELS     channels [6]; the last one has a history of 25 only
  SOAK_RATE         publications per second, all publishers together [150]
  SOAK_WS_SUBS      WebSocket subscribers, 2 channels each [8]
  SOAK_SSE_SUBS     SSE subscribers, 1 channel each [4]
  SOAK_FAULT_EVERY  mean seconds between faults [6]
  SOAK_STABLE_NODE  1: node n0 is never killed, so its memory figures span
                    the whole run [1]
  SOAK_SEED         random seed [random]
  SOAK_REPORT       JSON report path [./soak-report.json]
  SOAK_WORK         directory for data and logs [a new temporary one]
  SOAK_KEEP         1: keep SOAK_WORK even when every check passed [0]
"""

import bisect
import collections
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "push"))
import lib  # noqa: E402
from lib import SSE, WS, Closed, Refused  # noqa: E402


def env_int(name, default):
    v = os.environ.get(name, "")
    return int(v) if v.strip() else default


def env_float(name, default):
    v = os.environ.get(name, "")
    return float(v) if v.strip() else default


SECONDS = env_float("SOAK_SECONDS", 600)
NODES = env_int("SOAK_NODES", 3)
SHARDS = env_int("SOAK_SHARDS", 2)
PERSIST = os.environ.get("SOAK_PERSIST", "") or "mixed"
CHANNELS = env_int("SOAK_CHANNELS", 6)
RATE = env_float("SOAK_RATE", 150)
WS_SUBS = env_int("SOAK_WS_SUBS", 8)
SSE_SUBS = env_int("SOAK_SSE_SUBS", 4)
FAULT_EVERY = env_float("SOAK_FAULT_EVERY", 6)
STABLE_NODE = env_int("SOAK_STABLE_NODE", 1)
SEED = env_int("SOAK_SEED", random.SystemRandom().randrange(1 << 30))
REPORT = os.environ.get("SOAK_REPORT", "") or os.path.abspath(
    "soak-report.json")
KEEP = env_int("SOAK_KEEP", 0)
API_KEY = "soak-key"
HISTORY = 1000
TIGHT_HISTORY = 25
REDIS_BIN = shutil.which("redis-server") or "/usr/bin/redis-server"

T0 = time.monotonic()


def now():
    return time.monotonic() - T0


def say(msg):
    print(f"soak [{now():7.1f}s] {msg}", flush=True)


# --------------------------------------------------------------------------
# Processes: every one is recorded (PID file for run.sh's trap too) and
# stopped by its PID at the end.
# --------------------------------------------------------------------------

WORK = None
CRASHES = []  # servers found dead that nobody killed
PROCS = []  # Popen objects started here
PROCS_LOCK = threading.Lock()


def spawn(args, out, err):
    with open(out, "ab") as o, open(err, "ab") as e:
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        p = subprocess.Popen(args, stdout=o, stderr=e,
                             stdin=subprocess.DEVNULL, env=env)
    with PROCS_LOCK:
        PROCS.append(p)
        with open(os.path.join(WORK, "pids"), "a") as f:
            f.write(f"{p.pid}\n")
    return p


def kill_everything():
    """SIGKILL by PID whatever is still running of ours."""
    with PROCS_LOCK:
        for p in PROCS:
            if p.poll() is None:
                try:
                    p.kill()
                except OSError:
                    pass
        for p in PROCS:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


def free_port():
    """A free port below the ephemeral range, so that no outgoing
    connection can be holding it when a killed server binds it again."""
    lo, hi = 20000, 32000
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            eph = int(f.read().split()[0])
        if eph - 2000 < hi:
            lo, hi = max(1024, eph - 12000), eph - 1
    except (OSError, ValueError, IndexError):
        pass
    for _ in range(200):
        p = random.SystemRandom().randrange(lo, hi)
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", p))
            return p
        except OSError:
            continue
        finally:
            s.close()
    raise RuntimeError("no free port")


def vmrss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class RedisShard:
    def __init__(self, idx, persist):
        self.idx = idx
        self.persist = persist
        self.port = free_port()
        self.dir = os.path.join(WORK, f"redis{idx}")
        os.makedirs(self.dir)
        self.proc = None
        self.spawns = []  # times (s since start) each process was started
        self.kills = []

    def start(self):
        args = [REDIS_BIN, "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", self.dir, "--daemonize", "no", "--protected-mode",
                "no", "--loglevel", "notice", "--logfile",
                os.path.join(self.dir, "redis.log")]
        if self.persist == "aof":
            args += ["--appendonly", "yes", "--appendfsync", "always",
                     "--save", ""]
        elif self.persist == "rdb":
            args += ["--appendonly", "no", "--save", "1 1"]
        else:
            args += ["--appendonly", "no", "--save", ""]
        for attempt in range(5):
            self.spawns.append(now())
            self.proc = spawn(args, os.path.join(self.dir, "stdout.log"),
                              os.path.join(self.dir, "stderr.log"))
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and self.proc.poll() is None:
                if self.ping():
                    return
                time.sleep(0.05)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            time.sleep(0.5)
        raise RuntimeError(f"redis shard {self.idx} does not start")

    def ping(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port),
                                          timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def cmd(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a.encode() if isinstance(a, str) else a
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        with socket.create_connection(("127.0.0.1", self.port),
                                      timeout=2) as s:
            s.sendall(out)
            return s.recv(65536)

    def kill9(self):
        self.kills.append(now())
        if self.proc and self.proc.poll() is not None:
            CRASHES.append(f"redis{self.idx} (pid {self.proc.pid}) had "
                           f"exited by itself with {self.proc.returncode}")
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


class Node:
    def __init__(self, idx, herald, shards):
        self.idx = idx
        self.name = f"n{idx}"
        self.herald = herald
        self.port = free_port()
        self.dir = os.path.join(WORK, self.name)
        os.makedirs(self.dir)
        cfg = {
            "listen": [f"127.0.0.1:{self.port}"],
            "anonymous": True,
            "api_key": API_KEY,
            "log_level": "info",
            "engine": "redis",
            "redis": {"addresses": [f"127.0.0.1:{s.port}" for s in shards],
                      "ping_timeout_ms": 1000},
            "namespaces": [
                {"name": "soak", "publish": True, "history_size": HISTORY,
                 "history_ttl": 3600},
                {"name": "tight", "publish": True,
                 "history_size": TIGHT_HISTORY, "history_ttl": 3600}],
            "rate_limits": {"commands": {"per_s": 0},
                            "publishes": {"per_s": 0},
                            "subscribes": {"per_s": 0},
                            "connections_per_ip": {"per_s": 0}},
        }
        self.cfg_path = os.path.join(self.dir, "config.json")
        with open(self.cfg_path, "w") as f:
            json.dump(cfg, f, indent=1)
        self.proc = None
        self.lives = []  # one dict per process: pid, logs, times, rss, rc

    def start(self):
        for attempt in range(5):
            k = len(self.lives) + 1
            out = os.path.join(self.dir, f"stdout.{k}.log")
            err = os.path.join(self.dir, f"stderr.{k}.log")
            life = {"pid": None, "out": out, "err": err, "started": now(),
                    "ended": None, "how": None, "rc": None,
                    "rss_start_kb": None, "rss_end_kb": None}
            self.lives.append(life)
            self.proc = spawn([self.herald, "serve", "--config",
                               self.cfg_path, "--node-name", self.name],
                              out, err)
            life["pid"] = self.proc.pid
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and self.proc.poll() is None:
                with open(out, "rb") as f:
                    if b"listening on 127.0.0.1:%d" % self.port in f.read():
                        return
                time.sleep(0.02)
            # Did not come up (the port still held?): try again.
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            life["ended"] = now()
            life["how"] = "failed to start"
            life["rc"] = self.proc.returncode
            time.sleep(0.5)
        raise RuntimeError(f"node {self.name} does not start")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        life = self.lives[-1]
        if self.proc.poll() is not None:
            CRASHES.append(f"{self.name} (pid {self.proc.pid}) had exited "
                           f"by itself with {self.proc.returncode}")
        life["rss_end_kb"] = vmrss_kb(self.proc.pid)
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        life["ended"] = now()
        life["how"] = "SIGKILL"
        life["rc"] = self.proc.returncode

    def stop(self, grace=20):
        """SIGTERM, as an operator would; returns the exit status."""
        life = self.lives[-1]
        if self.proc.poll() is None:
            life["rss_end_kb"] = vmrss_kb(self.proc.pid)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                life["how"] = "SIGTERM timed out, SIGKILL"
        life["ended"] = now()
        life["how"] = life["how"] or "SIGTERM"
        life["rc"] = self.proc.returncode
        return self.proc.returncode

    def healthy(self):
        try:
            st, _, _ = lib.http_req(self.port, "GET", "/health", timeout=2)
            return st == 200
        except (OSError, http.client.HTTPException):
            return False


# --------------------------------------------------------------------------
# What the clients saw
# --------------------------------------------------------------------------

STOP = threading.Event()      # subscribers end
PUB_STOP = threading.Event()  # publishers end
CALM = threading.Event()      # subscribers stop disconnecting on purpose

ACKS = []       # (channel, epoch, offset, ident, publisher, seq, t_sent,
                #  t_ack, transport)
SENT = {}       # ident -> t_sent, every publication attempted


def ident_of(data):
    if isinstance(data, dict) and "p" in data and "s" in data:
        return f"{data['p']}:{data['s']}"
    return None


class Track:
    """One subscriber's view of one channel.

    receipts: (epoch, offset, ident, notices before it, time, the
    subscriber's position just before it)
    notices: (kind, from position, to position, time) - the subscriber was
    told that it may have missed publications (a subscribe reply with
    "recovered": false, a 3010 disconnect, an SSE "unrecovered" event)."""

    def __init__(self, sub, channel):
        self.sub = sub
        self.channel = channel
        self.receipts = []
        self.notices = []
        self.start = None  # (epoch, offset, time) of the first subscribe
        self.pos = None

    def begin(self, epoch, offset):
        self.start = (epoch, offset, now())
        self.pos = (epoch, offset)

    def recv(self, epoch, offset, ident):
        self.receipts.append((epoch, offset, ident, len(self.notices), now(),
                              self.pos))
        self.pos = (epoch, offset)

    def notice(self, kind, to):
        self.notices.append((kind, self.pos, to, now()))
        if to is not None:
            self.pos = to


class Counters:
    def __init__(self):
        self.c = collections.Counter()

    def __getitem__(self, k):
        return self.c[k]

    def add(self, k, n=1):
        self.c[k] += n


STATS = Counters()  # GIL-protected increments from every thread


class Retry(Exception):
    pass


def pick_node(nodes):
    return random.choice(nodes)


def offline_pause():
    """How long a subscriber stays away before it reconnects: mostly a
    moment, sometimes seconds (so that it misses a fault entirely and
    finds the stream moved on when it comes back)."""
    if CALM.is_set() or random.random() < 0.8:
        return random.uniform(0.02, 0.4)
    return random.uniform(1.0, 6.0)


class WsSubscriber(threading.Thread):
    def __init__(self, name, nodes, channels):
        super().__init__(daemon=True, name=name)
        self.nodes = nodes
        self.tracks = [Track(name, c) for c in channels]
        self.by_channel = {t.channel: t for t in self.tracks}
        self.connections = 0
        self.errors = collections.Counter()
        self.told_3010 = False

    def run(self):
        while not STOP.is_set():
            node = pick_node(self.nodes)
            w = None
            try:
                w = WS(node.port, timeout=3)
                self.connections += 1
                self.session(w)
            except Retry:
                self.errors["retry"] += 1
            except Closed as e:
                self.closed(e.code)
            except (OSError, TimeoutError, ValueError, Refused,
                    KeyError) as e:
                self.errors[type(e).__name__] += 1
            finally:
                if w is not None:
                    w.abort()
            if not STOP.is_set():
                time.sleep(offline_pause())

    def closed(self, code):
        self.errors[f"close {code}"] += 1
        if code == 3010 and not self.told_3010:
            for t in self.tracks:
                t.notice("3010", None)
            STATS.add("notices 3010")

    def handle(self, m, subscribed):
        """A message that is not the reply awaited."""
        p = m.get("push")
        if p is None:
            self.errors["unexpected reply"] += 1
            return
        if "disconnect" in p:
            code = p["disconnect"].get("code")
            if code == 3010 and not self.told_3010:
                self.told_3010 = True
                for t in self.tracks:
                    t.notice("3010", None)
                STATS.add("notices 3010")
            return
        if "pub" in p:
            t = self.by_channel.get(p.get("channel"))
            if t is None:
                STATS.add("push for a channel never subscribed")
                return
            if p["channel"] not in subscribed or t.pos is None:
                STATS.add("push before its subscribe reply")
                if t.pos is None:
                    return
            t.recv(t.pos[0], p["pub"]["offset"], ident_of(p["pub"].get(
                "data")))

    def session(self, w):
        self.told_3010 = False
        r = w.call("connect", {"name": self.name})
        if "result" not in r:
            raise Retry()
        subscribed = set()
        for t in self.tracks:
            params = {"channel": t.channel}
            if t.pos is not None:
                params["since"] = {"epoch": t.pos[0], "offset": t.pos[1]}
            cid = w.cmd("subscribe", params)
            deadline = time.monotonic() + 5
            while True:
                m = w.recv_json(max(0.05, deadline - time.monotonic()))
                if m.get("id") == cid:
                    break
                self.handle(m, subscribed)
            if "error" in m:
                STATS.add(f"subscribe error {m['error'].get('code')}")
                raise Retry()
            res = m["result"]
            pos = (res["epoch"], res["offset"])
            if t.pos is None:
                t.begin(*pos)
            elif res.get("recovered"):
                for pub in res.get("publications", []):
                    t.recv(pos[0], pub["offset"], ident_of(pub.get("data")))
                t.pos = pos
            else:
                t.notice("recovered false", pos)
                STATS.add("notices recovered false")
            subscribed.add(t.channel)
        if not CALM.is_set():
            end = time.monotonic() + max(0.2, random.expovariate(1 / 4.0))
        else:
            end = None
        while not STOP.is_set():
            if end is not None and time.monotonic() > end and \
                    not CALM.is_set():
                # On purpose: half of the time a clean close, else TCP cut.
                if random.random() < 0.5:
                    w.close()
                STATS.add("subscriber disconnects on purpose")
                return
            try:
                m = w.recv_json(0.5)
            except TimeoutError:
                continue
            self.handle(m, subscribed)


class SseSubscriber(threading.Thread):
    def __init__(self, name, nodes, channel):
        super().__init__(daemon=True, name=name)
        self.nodes = nodes
        self.tracks = [Track(name, channel)]
        self.channel = channel
        self.connections = 0
        self.errors = collections.Counter()

    def run(self):
        t = self.tracks[0]
        while not STOP.is_set():
            node = pick_node(self.nodes)
            s = None
            try:
                if t.pos is None:
                    st, js, _ = lib.http_req(
                        node.port, "GET",
                        "/api/history?limit=1&channel=" +
                        urllib.parse.quote(self.channel), key=API_KEY,
                        timeout=3)
                    if st != 200:
                        raise Retry()
                    t.begin(js["result"]["epoch"], js["result"]["offset"])
                s = SSE(node.port, "channel=" + urllib.parse.quote(
                    self.channel), last_event_id=f"{t.pos[0]}:{t.pos[1]}",
                    timeout=3)
                self.connections += 1
                if s.status != 200:
                    STATS.add(f"sse status {s.status}")
                    raise Retry()
                self.session(s, t)
            except Retry:
                self.errors["retry"] += 1
            except (OSError, TimeoutError, ValueError, KeyError,
                    http.client.HTTPException) as e:
                self.errors[type(e).__name__] += 1
            finally:
                if s is not None:
                    s.close()
            if not STOP.is_set():
                time.sleep(offline_pause())

    def session(self, s, t):
        end = None if CALM.is_set() else \
            time.monotonic() + max(0.2, random.expovariate(1 / 4.0))
        while not STOP.is_set():
            if end is not None and time.monotonic() > end and \
                    not CALM.is_set():
                STATS.add("subscriber disconnects on purpose")
                return
            try:
                ev = s.event(timeout=0.5)
            except TimeoutError:
                continue
            if ev is None:
                self.errors["EOF"] += 1
                return
            if ev["id"] is None:
                STATS.add("sse event without id")
                continue
            epoch, _, off = ev["id"].rpartition(":")
            pos = (epoch, int(off))
            if ev["event"] == "unrecovered":
                t.notice("unrecovered", pos)
                STATS.add("notices unrecovered")
                continue
            d = json.loads(ev["data"])
            pub = d.get("pub", {})
            if d.get("channel") != self.channel or \
                    pub.get("offset") != pos[1]:
                STATS.add("sse event id and data disagree")
            t.recv(epoch, pos[1], ident_of(pub.get("data")))


class Pacer:
    def __init__(self, rate):
        self.gap = 1.0 / rate
        self.next = time.monotonic()

    def wait(self):
        t = time.monotonic()
        if self.next < t - 1.0:
            self.next = t  # fell behind (a stall): do not burst
        if self.next > t:
            time.sleep(self.next - t)
        self.next += self.gap * random.uniform(0.5, 1.5)


def payload(pid, seq):
    # Some padding of varying size, so that frames are not all alike.
    return {"p": pid, "s": seq, "pad": "x" * random.choice((0, 8, 64, 300))}


class HttpPublisher(threading.Thread):
    def __init__(self, pid, nodes, channels, rate):
        super().__init__(daemon=True, name=pid)
        self.pid = pid
        self.nodes = nodes
        self.channels = channels
        self.pacer = Pacer(rate)
        self.seq = 0
        self.failed = collections.Counter()
        self.conns = {}

    def run(self):
        while not PUB_STOP.is_set():
            self.pacer.wait()
            node = pick_node(self.nodes)
            ch = random.choice(self.channels)
            self.seq += 1
            ident = f"{self.pid}:{self.seq}"
            body = json.dumps({"channel": ch,
                               "data": payload(self.pid, self.seq)})
            conn = self.conns.get(node.idx)
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", node.port,
                                                  timeout=5)
                self.conns[node.idx] = conn
            t_sent = now()
            SENT[ident] = t_sent
            try:
                conn.request("POST", "/api/publish", body=body, headers={
                    "Authorization": f"apikey {API_KEY}",
                    "Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                status = resp.status
            except (OSError, http.client.HTTPException):
                conn.close()
                del self.conns[node.idx]
                self.failed["connection error"] += 1
                continue
            if status == 200:
                res = json.loads(data)["result"]
                ACKS.append((ch, res["epoch"], res["offset"], ident,
                             self.pid, self.seq, t_sent, now(), "http"))
            else:
                self.failed[f"HTTP {status}"] += 1
        for c in self.conns.values():
            c.close()


class WsPublisher(threading.Thread):
    """Publishes over WebSocket with up to WINDOW commands in flight."""
    WINDOW = 4

    def __init__(self, pid, nodes, channels, rate):
        super().__init__(daemon=True, name=pid)
        self.pid = pid
        self.nodes = nodes
        self.channels = channels
        self.pacer = Pacer(rate)
        self.seq = 0
        self.failed = collections.Counter()
        self.connections = 0

    def run(self):
        while not PUB_STOP.is_set():
            node = pick_node(self.nodes)
            inflight = {}
            w = None
            try:
                w = WS(node.port, timeout=3)
                self.connections += 1
                r = w.call("connect", {"name": self.pid})
                if "result" not in r:
                    raise Retry()
                self.session(w, inflight)
            except (Retry, Closed, OSError, TimeoutError, ValueError,
                    Refused, KeyError):
                pass
            finally:
                if w is not None:
                    w.abort()
            # Whatever had no reply: outcome unknown, not acknowledged.
            self.failed["no reply (connection lost)"] += len(inflight)
            if not PUB_STOP.is_set():
                time.sleep(random.uniform(0.02, 0.3))

    def session(self, w, inflight):
        end = time.monotonic() + max(0.5, random.expovariate(1 / 5.0))
        while True:
            stopping = PUB_STOP.is_set() or time.monotonic() > end
            if stopping and not inflight:
                w.close()
                return
            if not stopping and len(inflight) < self.WINDOW and \
                    time.monotonic() >= self.pacer.next:
                self.pacer.wait()
                ch = random.choice(self.channels)
                self.seq += 1
                ident = f"{self.pid}:{self.seq}"
                t_sent = now()
                SENT[ident] = t_sent
                cid = w.cmd("publish", {"channel": ch,
                                        "data": payload(self.pid, self.seq)})
                inflight[cid] = (ch, ident, self.seq, t_sent)
                continue
            wait = 0.2 if inflight else max(
                0.005, min(0.2, self.pacer.next - time.monotonic()))
            try:
                m = w.recv_json(wait)
            except TimeoutError:
                if inflight and min(x[3] for x in inflight.values()) < \
                        now() - 10:
                    raise Retry()  # a reply overdue: give up the connection
                continue
            cid = m.get("id")
            if cid not in inflight:
                continue  # a push (disconnect), not for us
            ch, ident, seq, t_sent = inflight.pop(cid)
            if "result" in m:
                ACKS.append((ch, m["result"]["epoch"], m["result"]["offset"],
                             ident, self.pid, seq, t_sent, now(), "ws"))
            else:
                self.failed[f"error {m.get('error', {}).get('code')}"] += 1


# --------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------

FAULTS = []  # (time, kind, target, detail)
FAULT_COUNTS = collections.Counter()


class FaultInjector(threading.Thread):
    def __init__(self, shards, nodes, until):
        super().__init__(daemon=True, name="faults")
        self.shards = shards
        self.nodes = nodes
        self.until = until
        self.error = None

    def run(self):
        try:
            self.loop()
        except Exception as e:  # noqa: BLE001
            self.error = f"{type(e).__name__}: {e}"
            say(f"fault injector failed: {self.error}")

    def loop(self):
        killable = self.nodes[1:] if STABLE_NODE and len(self.nodes) > 1 \
            else self.nodes
        while True:
            gap = min(random.expovariate(1 / FAULT_EVERY), 3 * FAULT_EVERY)
            if now() + gap >= self.until:
                return
            time.sleep(max(0.5, gap))
            r = random.random()
            if r < 0.4:
                self.redis_fault(random.choice(self.shards))
            elif r < 0.85:
                self.node_fault(random.choice(killable))
            else:
                # Both at once: a node dies while a shard is down.
                sh = random.choice(self.shards)
                nd = random.choice(killable)
                t = now()
                sh.kill9()
                time.sleep(random.uniform(0.1, 0.8))
                nd.kill9()
                down = random.uniform(0.3, 2.5)
                time.sleep(down)
                sh.start()
                nd.start()
                FAULT_COUNTS["redis_kill9"] += 1
                FAULT_COUNTS["node_kill9"] += 1
                FAULT_COUNTS["redis_and_node_together"] += 1
                FAULTS.append((round(t, 2), "redis_and_node_kill9",
                               f"redis{sh.idx}+{nd.name}",
                               f"back after {now() - t:.1f}s"))
                say(f"fault: SIGKILL redis{sh.idx} and {nd.name}, "
                    f"restarted after {now() - t:.1f}s")

    def redis_fault(self, sh):
        t = now()
        sh.kill9()
        time.sleep(random.uniform(0.3, 3.0))
        sh.start()
        FAULT_COUNTS["redis_kill9"] += 1
        FAULTS.append((round(t, 2), "redis_kill9", f"redis{sh.idx}",
                       f"back after {now() - t:.1f}s"))
        say(f"fault: SIGKILL redis{sh.idx} ({sh.persist}), restarted "
            f"after {now() - t:.1f}s")

    def node_fault(self, nd):
        t = now()
        nd.kill9()
        time.sleep(random.uniform(0.2, 2.0))
        nd.start()
        FAULT_COUNTS["node_kill9"] += 1
        FAULTS.append((round(t, 2), "node_kill9", nd.name,
                       f"back after {now() - t:.1f}s"))
        say(f"fault: SIGKILL {nd.name}, restarted after {now() - t:.1f}s")


# --------------------------------------------------------------------------
# The check
# --------------------------------------------------------------------------


def analyze(channels, tracks, shard_of, shards):
    """Every subscriber's stream against the acknowledged publications.

    A publication is identified by its (publisher, sequence number), so two
    publications that got the same (epoch, offset) - as when a Redis comes
    back from an older snapshot - are told apart. Positions are ordered by
    (epoch, offset), epochs by when they were first seen; on a channel
    where two publications share a position, by (Redis incarnation that
    took it, epoch, offset), the incarnation known from when the
    publication was sent and when the channel's shard was restarted.

    For each subscriber and channel:
      - duplicates: a publication received more than once;
      - unannounced gaps: two receipts with no notice between them that
        are not (same epoch, offset + 1);
      - order violations: a receipt not after the one before it;
      - misplaced: a publication received at another position than the
        one its publisher was given;
      - every acknowledged publication after the subscriber's first
        position either received, or missing with a notice covering it
        ("told": between the receipts it belongs between there is a
        recovered false or unrecovered that announced a position at or
        past it, or a 3010), or missing without one ("silent loss")."""
    out = collections.Counter()
    evidence = {"silent": [], "duplicates": [], "gaps": [], "order": [],
                "misplaced": [], "publisher_order": [], "only_3010": []}
    by_ch = collections.defaultdict(list)
    ack_pos = {}
    for a in ACKS:
        by_ch[a[0]].append(a)
        ack_pos[a[3]] = (a[0], a[1], a[2])
    # Epochs by first sight; positions taken twice.
    first_seen = collections.defaultdict(dict)
    at_pos = collections.defaultdict(lambda: collections.defaultdict(set))

    def seen(ch, e, t):
        if e is not None and (e not in first_seen[ch] or
                              t < first_seen[ch][e]):
            first_seen[ch][e] = t
    for a in ACKS:
        seen(a[0], a[1], a[7])
        at_pos[a[0]][(a[1], a[2])].add(a[3])
    for t in tracks:
        if t.start:
            seen(t.channel, t.start[0], t.start[2])
        for (e, o, ident, _, tm, _) in t.receipts:
            seen(t.channel, e, tm)
            if ident:
                at_pos[t.channel][(e, o)].add(ident)
        for (_, _, to, tm) in t.notices:
            if to:
                seen(t.channel, to[0], tm)
    rank = {ch: {e: i for i, e in enumerate(sorted(first_seen[ch],
                                                   key=first_seen[ch].get))}
            for ch in channels}
    collided = {}
    for ch in channels:
        n = sum(1 for ids in at_pos[ch].values() if len(ids) > 1)
        collided[ch] = n
        out["positions taken by two publications"] += n
        out["acked positions taken twice"] += sum(
            1 for ids in at_pos[ch].values()
            if len([i for i in ids if i in ack_pos]) > 1)
    spawns = {ch: shards[shard_of[ch]].spawns[1:] for ch in channels
              if shard_of.get(ch) is not None}

    def gen(ch, t):
        return bisect.bisect_left(spawns.get(ch, []), t)

    def key(ch, e, o, ident, t=None):
        r = rank[ch].get(e, 1 << 30)
        if collided[ch]:
            ts = SENT.get(ident, t) if ident else t
            return (gen(ch, ts), r, o)
        return (r, o)

    # The publishers: their acknowledgements in the order they sent.
    for pid_ch, lst in _group(ACKS, lambda a: (a[4], a[0])).items():
        lst.sort(key=lambda a: a[5])
        for a, b in zip(lst, lst[1:]):
            if key(a[0], a[1], a[2], a[3]) >= key(b[0], b[1], b[2], b[3]):
                out["publisher order violations"] += 1
                if len(evidence["publisher_order"]) < 10:
                    evidence["publisher_order"].append(
                        {"publisher": pid_ch[0], "channel": pid_ch[1],
                         "earlier": a[1:4], "later": b[1:4]})

    told_gaps = set()
    for t in tracks:
        ch = t.channel
        if t.start is None:
            out["subscribers that never subscribed"] += 1
            continue
        rec = t.receipts
        out["deliveries"] += len(rec)
        start_key = key(ch, t.start[0], t.start[1], None, t.start[2])
        counts = collections.Counter(r[2] for r in rec)
        dup_seen = set()
        prev = (t.start[0], t.start[1], None, 0, t.start[2], None)
        prev_key = start_key
        for r in rec:
            e, o, ident, nc, tm, before = r
            k = key(ch, e, o, ident, tm)
            if ident is None:
                out["deliveries of foreign data"] += 1
            elif ident in dup_seen:
                out["duplicates"] += 1
                if len(evidence["duplicates"]) < 20:
                    evidence["duplicates"].append(
                        {"subscriber": t.sub, "channel": ch, "ident": ident,
                         "at": [e, o], "time": round(tm, 3),
                         "received": counts[ident]})
                continue
            dup_seen.add(ident)
            if ident in ack_pos and ack_pos[ident] != (ch, e, o):
                out["misplaced"] += 1
                if len(evidence["misplaced"]) < 10:
                    evidence["misplaced"].append(
                        {"subscriber": t.sub, "ident": ident,
                         "acked": ack_pos[ident], "received": [ch, e, o]})
            # With no notice since the last receipt, the next offset;
            # after one, the one after the position the client then held
            # (what a notice said, or where a recovery left it).
            if nc == prev[3]:
                gap = e != prev[0] or o != prev[1] + 1
            else:
                gap = before is None or e != before[0] or o != before[1] + 1
            if gap:
                out["unannounced gaps"] += 1
                if len(evidence["gaps"]) < 20:
                    evidence["gaps"].append(
                        {"subscriber": t.sub, "channel": ch,
                         "after": [prev[0], prev[1], round(prev[4], 3)],
                         "then": [e, o, round(tm, 3)]})
            if k <= prev_key:
                out["order violations"] += 1
                if len(evidence["order"]) < 20:
                    evidence["order"].append(
                        {"subscriber": t.sub, "channel": ch,
                         "after": [prev[0], prev[1]], "then": [e, o],
                         "time": round(tm, 3)})
            prev, prev_key = r, k
        # The acknowledged publications this subscriber owes an account of.
        got = set(counts)
        order = sorted((key(ch, r[0], r[1], r[2], r[4]), r[3], r)
                       for r in rec)
        keys = [x[0] for x in order]
        ncs = [x[1] for x in order]
        total = len(t.notices)
        silent_here = []
        for a in by_ch[ch]:
            if a[3] in got:
                continue
            k = key(ch, a[1], a[2], a[3])
            if k <= start_key:
                continue
            i = bisect.bisect_left(keys, k)
            lo = ncs[i - 1] if i > 0 else 0
            hi = ncs[i] if i < len(ncs) else total
            # Told: a notice between the receipts it belongs between that
            # announced a position at or past it (recovered false, SSE
            # unrecovered), or a 3010 (which names no position).
            here = t.notices[lo:hi]
            covered = any(n[2] is not None and
                          k <= key(ch, n[2][0], n[2][1], None, n[3])
                          for n in here)
            by_3010 = any(n[0] == "3010" for n in here)
            if covered or by_3010:
                out["told losses"] += 1
                out["told losses on " + ch] += 1
                told_gaps.add((t.sub, ch, lo, hi))
                if not covered:
                    out["told losses covered only by a 3010"] += 1
                    if len(evidence["only_3010"]) < 10:
                        evidence["only_3010"].append(
                            {"subscriber": t.sub, "channel": ch,
                             "missing": [a[1], a[2], a[3]],
                             "notices": [[n[0], n[1], n[2], round(n[3], 3)]
                                         for n in t.notices[lo:hi]],
                             "received_after": None if i >= len(order) else
                             [order[i][2][0], order[i][2][1],
                              round(order[i][2][4], 3)]})
            else:
                out["silent losses"] += 1
                out["silent losses on " + ch] += 1
                silent_here.append((i, a))
        # Evidence: one entry per run of silent losses between two receipts.
        runs = _group(silent_here, lambda x: x[0])
        for i, lst in sorted(runs.items()):
            if len(evidence["silent"]) >= 20:
                break
            lst = sorted((x[1] for x in lst), key=lambda a: (a[1], a[2]))
            before = order[i - 1][2] if i > 0 else None
            after = order[i][2] if i < len(order) else None
            tb = before[4] if before else t.start[2]
            ta = after[4] if after else now()
            evidence["silent"].append({
                "subscriber": t.sub, "channel": ch,
                "shard": shard_of.get(ch),
                "missing": len(lst),
                "first_missing": {"epoch": lst[0][1], "offset": lst[0][2],
                                  "ident": lst[0][3],
                                  "sent": round(lst[0][6], 3),
                                  "acked": round(lst[0][7], 3)},
                "last_missing": {"epoch": lst[-1][1], "offset": lst[-1][2],
                                 "ident": lst[-1][3],
                                 "sent": round(lst[-1][6], 3),
                                 "acked": round(lst[-1][7], 3)},
                "received_before": None if before is None else
                [before[0], before[1], before[2], round(before[4], 3)],
                "received_after": None if after is None else
                [after[0], after[1], after[2], round(after[4], 3)],
                "notices_of_subscriber": [
                    [n[0], n[1], n[2], round(n[3], 3)] for n in t.notices
                    if tb - 10 <= n[3] <= ta + 10],
                "faults_around": [f for f in FAULTS
                                  if tb - 10 <= f[0] <= ta + 2],
            })
    out["told gaps"] = len(told_gaps)
    out["channels ordered by Redis incarnation"] = sum(
        1 for ch in channels if collided[ch])
    return out, evidence


def _group(items, keyf):
    g = collections.defaultdict(list)
    for x in items:
        g[keyf(x)].append(x)
    return g


# --------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------


def wait_for(cond, timeout, step=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


def stream_position(nodes, ch):
    for n in nodes:
        try:
            st, js, _ = lib.http_req(
                n.port, "GET", "/api/history?limit=1&channel=" +
                urllib.parse.quote(ch), key=API_KEY, timeout=3)
            if st == 200:
                return (js["result"]["epoch"], js["result"]["offset"])
        except (OSError, http.client.HTTPException, ValueError):
            pass
    return None


def persist_of(i):
    if PERSIST == "mixed":
        return "aof" if i % 2 == 0 else "none"
    return PERSIST


def main():
    global WORK
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    herald = os.path.abspath(sys.argv[1])
    if not os.access(herald, os.X_OK):
        print(f"soak: {herald} is not an executable")
        return 2
    if not os.access(REDIS_BIN, os.X_OK):
        print("soak: redis-server not found: skipped")
        return 77
    if PERSIST not in ("aof", "none", "rdb", "mixed") or NODES < 1 or \
            SHARDS < 1 or CHANNELS < 1:
        print("soak: bad SOAK_* settings")
        return 2
    random.seed(SEED)
    WORK = os.environ.get("SOAK_WORK") or tempfile.mkdtemp(
        prefix="herald-soak-")
    os.makedirs(WORK, exist_ok=True)

    def on_term(signum, frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_term)

    def on_alarm(signum, frame):
        print("soak: FAIL: over the time bound, stopping everything",
              flush=True)
        kill_everything()
        os._exit(1)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(SECONDS) + 240)
    ok = False
    try:
        rc, ok = run(herald)
        return rc
    finally:
        kill_everything()
        if ok and not KEEP and not os.environ.get("SOAK_WORK"):
            shutil.rmtree(WORK, ignore_errors=True)
        elif not ok or KEEP:
            print(f"soak: logs and data kept in {WORK}", flush=True)
            open(os.path.join(WORK, "KEEP"), "w").close()


def run(herald):
    say(f"herald {herald}; {NODES} nodes, {SHARDS} shard(s) "
        f"({', '.join(persist_of(i) for i in range(SHARDS))}), "
        f"{SECONDS:.0f}s, seed {SEED}, work {WORK}")
    shards = [RedisShard(i, persist_of(i)) for i in range(SHARDS)]
    for s in shards:
        s.start()
    nodes = [Node(i, herald, shards) for i in range(NODES)]
    for n in nodes:
        n.start()
    if not wait_for(lambda: all(n.healthy() for n in nodes), 20):
        say("FAIL: nodes not healthy at start")
        return 2, False
    channels = [f"soak:c{i}" for i in range(CHANNELS - 1)] + \
        [f"tight:c{CHANNELS - 1}"] if CHANNELS > 1 else ["soak:c0"]

    subs = []
    for i in range(WS_SUBS):
        chs = [channels[(2 * i) % len(channels)],
               channels[(2 * i + 1) % len(channels)]]
        subs.append(WsSubscriber(f"ws{i}", nodes, sorted(set(chs))))
    for i in range(SSE_SUBS):
        subs.append(SseSubscriber(f"sse{i}", nodes,
                                  channels[(3 * i + 1) % len(channels)]))
    tracks = [t for s in subs for t in s.tracks]
    for s in subs:
        s.start()
    if not wait_for(lambda: all(t.start for t in tracks), 30):
        say("FAIL: subscribers could not subscribe")
        return 2, False
    # Which shard holds each channel (its meta key exists there now).
    shard_of = {}
    for ch in channels:
        for s in shards:
            if s.cmd("EXISTS", f"herald.{{{ch}}}.m").startswith(b":1"):
                shard_of[ch] = s.idx
    for n in nodes:
        n.lives[-1]["rss_start_kb"] = vmrss_kb(n.proc.pid)
    say(f"{len(tracks)} subscriptions ({WS_SUBS} WebSocket subscribers, "
        f"{SSE_SUBS} SSE); channels on shards {shard_of}")

    n_pub = 4
    pubs = [HttpPublisher("h0", nodes, channels, RATE / n_pub),
            HttpPublisher("h1", nodes, channels, RATE / n_pub),
            WsPublisher("w0", nodes, channels, RATE / n_pub),
            WsPublisher("w1", nodes, channels, RATE / n_pub)]
    t_pub = now()
    for p in pubs:
        p.start()
    settle = min(20.0, max(8.0, SECONDS * 0.1))
    fault_end = T0 + SECONDS - settle
    faults = FaultInjector(shards, nodes, fault_end - T0)
    faults.start()
    rss_samples = collections.defaultdict(list)
    while time.monotonic() < fault_end:
        time.sleep(min(5.0, max(0.05, fault_end - time.monotonic())))
        for n in nodes:
            if n.alive():
                r = vmrss_kb(n.proc.pid)
                if r:
                    rss_samples[n.name].append((round(now(), 1), r))
        say(f"acked {len(ACKS)}, deliveries "
            f"{sum(len(t.receipts) for t in tracks)}, "
            f"faults "
            f"{FAULT_COUNTS['redis_kill9'] + FAULT_COUNTS['node_kill9']}")
    faults.join(30)
    # Settle: everything up, publishing goes on a little, then stops.
    CALM.set()
    for s in shards:
        if s.proc.poll() is not None:
            CRASHES.append(f"redis{s.idx} (pid {s.proc.pid}) had exited by "
                           f"itself with {s.proc.returncode}")
            s.start()
    for n in nodes:
        if not n.alive():
            CRASHES.append(f"{n.name} (pid {n.proc.pid}) had exited by "
                           f"itself with {n.proc.returncode}")
            n.start()
    healthy = wait_for(lambda: all(n.healthy() for n in nodes), 20)
    time.sleep(3)
    PUB_STOP.set()
    for p in pubs:
        p.join(15)
    t_pub_end = now()
    finals = {ch: stream_position(nodes, ch) for ch in channels}

    def caught_up():
        return all(t.pos == finals[t.channel] for t in tracks)
    caught = wait_for(caught_up, 30, 0.2)
    lagging = [f"{t.sub}/{t.channel} at {t.pos}, stream at "
               f"{finals[t.channel]}" for t in tracks
               if t.pos != finals[t.channel]]
    STOP.set()
    for s in subs:
        s.join(10)
    for n in nodes:
        n.lives[-1]["rss_end_kb"] = vmrss_kb(n.proc.pid)
    exit_codes = {n.name: n.stop() for n in nodes}
    for s in shards:
        s.stop()
    say("stopped; checking the streams")

    res, evidence = analyze(channels, tracks, shard_of, shards)
    sanitizer = []
    for n in nodes:
        for life in n.lives:
            try:
                with open(life["err"], "rb") as f:
                    err = f.read().decode("utf-8", "replace")
            except OSError:
                continue
            m = re.search(r"(AddressSanitizer|LeakSanitizer|Undefined"
                          r"BehaviorSanitizer|runtime error:)", err)
            if m:
                sanitizer.append({"log": life["err"],
                                  "excerpt": err[max(0, m.start() - 200):
                                                 m.start() + 1500]})
    failed = collections.Counter()
    for p in pubs:
        failed.update(p.failed)
    notices = collections.Counter()
    for t in tracks:
        notices.update(n[0] for n in t.notices)
    anomalies = {k: v for k, v in STATS.c.items()
                 if k.startswith(("push ", "sse event"))}
    report = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "herald": herald,
        "seconds": round(now(), 1),
        "soak_seconds": SECONDS,
        "seed": SEED,
        "setup": {
            "nodes": NODES, "stable_node": "n0" if STABLE_NODE else None,
            "redis_shards": [{"port": s.port, "persistence": s.persist}
                             for s in shards],
            "channels": {ch: {"shard": shard_of.get(ch),
                              "history_size": TIGHT_HISTORY
                              if ch.startswith("tight:") else HISTORY}
                         for ch in channels},
            "publish_rate_per_s": RATE,
            "ws_subscribers": WS_SUBS, "sse_subscribers": SSE_SUBS,
            "subscriptions": len(tracks),
            "mean_seconds_between_faults": FAULT_EVERY,
        },
        "publications_attempted": len(SENT),
        "publications_acked": len(ACKS),
        "acked_by_transport": dict(collections.Counter(a[8] for a in ACKS)),
        "publications_not_acked": dict(failed),
        "publish_seconds": round(t_pub_end - t_pub, 1),
        "deliveries": res["deliveries"],
        "deliveries_by_transport": {
            "ws": sum(len(t.receipts) for s in subs
                      if isinstance(s, WsSubscriber) for t in s.tracks),
            "sse": sum(len(t.receipts) for s in subs
                       if isinstance(s, SseSubscriber) for t in s.tracks)},
        "reconnects": sum(max(0, s.connections - 1) for s in subs),
        "reconnects_on_purpose": STATS["subscriber disconnects on purpose"],
        "publisher_ws_connections": sum(p.connections for p in pubs
                                        if isinstance(p, WsPublisher)),
        "subscriber_errors": dict(sum((s.errors for s in subs),
                                      collections.Counter())),
        "faults": {k: v for k, v in FAULT_COUNTS.items()},
        "fault_log": FAULTS,
        "fault_injector_error": faults.error,
        "notices": dict(notices),
        "silent_losses": res["silent losses"],
        "duplicates": res["duplicates"],
        "told_losses": res["told losses"],
        "told_gaps": res["told gaps"],
        "told_losses_covered_only_by_3010":
            res["told losses covered only by a 3010"],
        "by_channel": {ch: {
            "shard": shard_of.get(ch),
            "persistence": None if shard_of.get(ch) is None else
            shards[shard_of[ch]].persist,
            "history_size": TIGHT_HISTORY if ch.startswith("tight:")
            else HISTORY,
            "subscriptions": sum(1 for t in tracks if t.channel == ch),
            "acked": sum(1 for a in ACKS if a[0] == ch),
            "told_losses": res["told losses on " + ch],
            "silent_losses": res["silent losses on " + ch]}
            for ch in channels},
        "unannounced_gaps": res["unannounced gaps"],
        "order_violations": res["order violations"],
        "misplaced": res["misplaced"],
        "publisher_order_violations": res["publisher order violations"],
        "acked_positions_taken_twice": res["acked positions taken twice"],
        "positions_taken_by_two_publications":
            res["positions taken by two publications"],
        "channels_ordered_by_redis_incarnation":
            res["channels ordered by Redis incarnation"],
        "deliveries_of_foreign_data": res["deliveries of foreign data"],
        "protocol_anomalies": anomalies,
        "caught_up_at_end": caught,
        "lagging_at_end": lagging[:20],
        "healthy_before_settle": healthy,
        "memory_kb": {n.name: {
            "restarts": len(n.lives) - 1,
            "rss_start": n.lives[0]["rss_start_kb"],
            "rss_end": n.lives[-1]["rss_end_kb"],
            "rss_max_sampled": max((x[1] for x in rss_samples[n.name]),
                                   default=None),
            "rss_samples": rss_samples[n.name],
            "last_process_up_s": round(n.lives[-1]["ended"] -
                                       n.lives[-1]["started"], 1)}
            for n in nodes},
        "node_exit_codes": exit_codes,
        "sanitizer_reports": sanitizer,
        "crashes": CRASHES,
        "evidence": evidence,
        "work_dir": WORK,
    }
    checks = [
        ("silent losses", report["silent_losses"] == 0),
        ("duplicates", report["duplicates"] == 0),
        ("unannounced gaps", report["unannounced_gaps"] == 0),
        ("order violations", report["order_violations"] == 0),
        ("misplaced publications", report["misplaced"] == 0),
        ("publisher order", report["publisher_order_violations"] == 0),
        ("protocol anomalies", not anomalies),
        ("sanitizer reports", not sanitizer),
        ("no server exited by itself", not CRASHES),
        ("nodes exit 0 on SIGTERM", all(v == 0 for v in exit_codes.values())),
        ("the run did something", len(ACKS) > 0 and res["deliveries"] > 0),
        ("faults injected", faults.error is None and (
            sum(FAULT_COUNTS.values()) > 0 or SECONDS < 30)),
    ]
    report["checks"] = {name: ("ok" if good else "FAIL")
                        for name, good in checks}
    ok = all(good for _, good in checks)
    report["result"] = "pass" if ok else "fail"
    with open(REPORT, "w") as f:
        json.dump(report, f, indent=1, default=str)
    print_report(report)
    print(f"soak: report written to {REPORT}", flush=True)
    return (0 if ok else 1), ok


def print_report(r):
    def kb(v):
        return "-" if v is None else f"{v / 1024:.1f} MiB"
    lines = [
        "",
        f"== herald soak: {r['result'].upper()} ({r['seconds']}s, "
        f"seed {r['seed']})",
        f"setup              {r['setup']['nodes']} nodes, Redis "
        + ", ".join(f"{s['persistence']}" for s in
                    r["setup"]["redis_shards"])
        + f", {len(r['setup']['channels'])} channels, "
        f"{r['setup']['subscriptions']} subscriptions "
        f"({r['setup']['ws_subscribers']} ws, "
        f"{r['setup']['sse_subscribers']} sse)",
        f"publications acked {r['publications_acked']} of "
        f"{r['publications_attempted']} "
        "(" + ", ".join(f"{k} {v}" for k, v in
                        r["acked_by_transport"].items()) + ")"
        f"; not acked: {r['publications_not_acked']}",
        f"deliveries         {r['deliveries']} "
        f"(ws {r['deliveries_by_transport']['ws']}, "
        f"sse {r['deliveries_by_transport']['sse']})",
        f"reconnects         {r['reconnects']} "
        f"({r['reconnects_on_purpose']} on purpose)",
        f"faults             {r['faults']}",
        f"notices            {r['notices']}",
        f"silent losses      {r['silent_losses']}",
        f"duplicates         {r['duplicates']}",
        f"told losses        {r['told_losses']} in {r['told_gaps']} gaps "
        f"({r['told_losses_covered_only_by_3010']} covered only by a 3010)",
        f"unannounced gaps   {r['unannounced_gaps']}; order violations "
        f"{r['order_violations']}; misplaced {r['misplaced']}; publisher "
        f"order {r['publisher_order_violations']}",
        f"acked positions taken twice {r['acked_positions_taken_twice']}",
        f"caught up at end   {r['caught_up_at_end']}",
    ]
    for ch, c in r["by_channel"].items():
        lines.append(f"  {ch:<10} shard {c['shard']} ({c['persistence']}), "
                     f"history {c['history_size']}: acked {c['acked']}, "
                     f"{c['subscriptions']} subscriptions, told losses "
                     f"{c['told_losses']}, silent {c['silent_losses']}")
    for name, m in r["memory_kb"].items():
        lines.append(f"memory {name:<11} VmRSS start {kb(m['rss_start'])}, "
                     f"end {kb(m['rss_end'])}, max sampled "
                     f"{kb(m['rss_max_sampled'])} ({m['restarts']} restarts)")
    lines.append(f"node exit codes    {r['node_exit_codes']}")
    for name, v in r["checks"].items():
        lines.append(f"check {v:<4} {name}")
    if r["evidence"]["silent"]:
        lines.append("first silent losses:")
        for e in r["evidence"]["silent"][:5]:
            lines.append("  " + json.dumps(e, default=str))
    for k in ("duplicates", "gaps", "order", "misplaced", "publisher_order"):
        for e in r["evidence"][k][:3]:
            lines.append(f"  {k}: " + json.dumps(e, default=str))
    if r["lagging_at_end"]:
        lines.append(f"lagging at end: {r['lagging_at_end'][:5]}")
    for s in r["sanitizer_reports"][:2]:
        lines.append(f"sanitizer report in {s['log']}:\n{s['excerpt']}")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    sys.exit(main())
