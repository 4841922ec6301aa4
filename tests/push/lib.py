"""Helpers of the push server black-box tests: a server under test, a small
synchronous WebSocket client, an SSE reader, an HTTP helper, JWT signing and
the check bookkeeping. Standard library only (plus the openssl CLI for RS256
and ES256 signatures)."""

import base64
import collections
import hashlib
import hmac
import http.client
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback

# --------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------


class Results:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.failures = []
        self.group = ""

    def check(self, name, cond, detail=""):
        full = f"{self.group}: {name}" if self.group else name
        if cond:
            self.passed += 1
            print(f"ok   {full}", flush=True)
        else:
            self.failed += 1
            self.failures.append(full)
            extra = f"  -- {detail}" if detail != "" else ""
            print(f"FAIL {full}{extra}", flush=True)
        return bool(cond)

    def eq(self, name, got, want):
        return self.check(name, got == want, f"got {got!r}, want {want!r}")


R = Results()
check = R.check
eq = R.eq


def short(x, n=300):
    s = repr(x)
    return s if len(s) <= n else s[:n] + "..."


# --------------------------------------------------------------------------
# The server under test
# --------------------------------------------------------------------------

HERALD = None  # set by run.py
# `--threads N` of run.py: every server that sets no "threads" of its own
# gets it. Without it servers run on one loop, so that the plain suites
# cover one loop and their `--threads 2` variants several; herald's own
# default (0: one loop per CPU) is what threads.py's
# test_default_one_loop_per_cpu covers (a config with "threads": None).
THREADS = 1
SERVERS = []  # every server started, so that a crash of the runner kills them


class Server:
    """herald serve with a config file in its own temporary directory,
    listening on 127.0.0.1:0. stop() sends SIGTERM and checks exit 0 and no
    sanitizer report."""

    def __init__(self, cfg=None, args=(), api_key="K", name="server"):
        self.name = name
        self.dir = tempfile.mkdtemp(prefix="herald-push-test-")
        conf = {"listen": ["127.0.0.1:0"], "log_level": "info"}
        if api_key is not None:
            conf["api_key"] = api_key
        conf.update(cfg or {})
        if THREADS is not None and "threads" not in conf and \
                not any(a == "--threads" for a in args):
            conf["threads"] = THREADS
        if "threads" in conf and conf["threads"] is None:
            del conf["threads"]  # herald's default, whatever THREADS says
        self.cfg = conf
        self.api_key = conf.get("api_key")
        self.conf_path = os.path.join(self.dir, "config.json")
        with open(self.conf_path, "w") as f:
            json.dump(conf, f, indent=1)
        self.out_path = os.path.join(self.dir, "stdout.log")
        self.err_path = os.path.join(self.dir, "stderr.log")
        out = open(self.out_path, "wb")
        err = open(self.err_path, "wb")
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        self.proc = subprocess.Popen(
            [HERALD, "serve", "--config", self.conf_path, *args],
            stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)
        out.close()
        err.close()
        SERVERS.append(self)
        self.port = None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with open(self.out_path, "rb") as f:
                m = re.search(rb"listening on 127\.0\.0\.1:(\d+)", f.read())
            if m:
                self.port = int(m.group(1))
                break
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        if self.port is None:
            self.kill()
            raise RuntimeError(f"{name} did not start: rc={self.proc.poll()} "
                               f"stderr={self.stderr()[-2000:]!r}")
        self.stopped = False
        self.term_sent = False

    def sigterm(self):
        """One SIGTERM (a second one during the graceful shutdown would
        kill the process)."""
        self.term_sent = True
        self.proc.send_signal(signal.SIGTERM)

    def stderr(self):
        try:
            with open(self.err_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def alive(self):
        return self.proc.poll() is None

    def stop(self, what=None, timeout=20):
        """SIGTERM, wait, check exit status 0 and a clean stderr."""
        if self.stopped:
            return self.proc.returncode
        self.stopped = True
        what = what or self.name
        if self.proc.poll() is None and not self.term_sent:
            self.sigterm()
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = "timeout"
        err = self.stderr()
        check(f"{what} exits 0 after SIGTERM", rc == 0,
              f"rc={rc} stderr tail={err[-300:]!r}")
        bad = re.search(r"(AddressSanitizer|LeakSanitizer|ThreadSanitizer|UndefinedBehavior"
                        r"Sanitizer|runtime error:)", err)
        check(f"{what} stderr has no sanitizer report", bad is None,
              err[max(0, bad.start() - 200):bad.start() + 1500] if bad else "")
        if rc == 0 and bad is None:
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            print(f"     (logs kept in {self.dir})", flush=True)
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.stopped = True

    # conveniences
    def ws(self, **kw):
        return WS(self.port, **kw)

    def client(self, token=None, **kw):
        """A connected WebSocket client."""
        w = WS(self.port, **kw)
        r = w.connect(token)
        if "result" not in r:
            raise RuntimeError(f"connect failed: {r}")
        return w

    def api(self, method, path, body=None, **kw):
        kw.setdefault("key", self.api_key)
        return http_req(self.port, method, path, body, **kw)

    def publish(self, channel, data=None, b64=None):
        body = {"channel": channel}
        if b64 is not None:
            body["b64"] = b64
        else:
            body["data"] = data
        st, js, _ = self.api("POST", "/api/publish", body)
        if st != 200:
            raise RuntimeError(f"publish failed: {st} {js}")
        return js["result"]

    def metrics(self):
        st, text, _ = http_req(self.port, "GET", "/metrics", raw_text=True)
        return parse_metrics(text)[0]


def kill_all():
    for s in SERVERS:
        try:
            s.kill()
        except Exception:
            pass


# --------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------


def http_req(port, method, path, body=None, key=None, headers=None,
             raw_body=None, raw_text=False, timeout=10, conn=None):
    """Returns (status, parsed JSON or text, headers dict lowercased)."""
    h = dict(headers or {})
    if key is not None:
        h.setdefault("Authorization", f"apikey {key}")
    data = raw_body
    if body is not None and data is None:
        data = json.dumps(body).encode()
        h.setdefault("Content-Type", "application/json")
    own = conn is None
    if own:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=data, headers=h)
        resp = conn.getresponse()
        payload = resp.read()
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
        status = resp.status
    finally:
        if own:
            conn.close()
    text = payload.decode("utf-8", "replace")
    if raw_text:
        return status, text, hdrs
    try:
        return status, json.loads(text), hdrs
    except ValueError:
        return status, text, hdrs


METRIC_LINE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"'
    r'(,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*")*)?\})? '
    r'([-+]?(?:[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?|NaN|\+?Inf))( -?[0-9]+)?$')


def parse_metrics(text):
    """Prometheus text: returns ({name or name{labels}: float}, bad lines)."""
    values, bad = {}, []
    for line in text.split("\n"):
        if line == "" or line.startswith("#"):
            continue
        m = METRIC_LINE.match(line)
        if not m:
            bad.append(line)
            continue
        key = m.group(1) + (m.group(2) or "")
        values[key] = float(m.group(5))
    return values, bad


# --------------------------------------------------------------------------
# WebSocket client (RFC 6455, client side, no extensions)
# --------------------------------------------------------------------------


class Refused(Exception):
    def __init__(self, status, head, body=b""):
        super().__init__(f"handshake refused with HTTP {status}")
        self.status = status
        self.head = head
        self.body = body


class Closed(Exception):
    def __init__(self, code, reason=""):
        super().__init__(f"closed code={code} reason={reason!r}")
        self.code = code
        self.reason = reason


class Msg(dict):
    """A message from the server; .raw is the frame's payload."""
    raw = b""


class WS:
    def __init__(self, port, path="/connection/websocket", origin=None,
                 timeout=5.0, rcvbuf=None, host=None, auto_pong=True,
                 headers=None):
        self.port = port
        self.auto_pong = auto_pong
        self.pings = 0
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET {path} HTTP/1.1",
                 f"Host: {host or f'127.0.0.1:{port}'}",
                 "Upgrade: websocket", "Connection: Upgrade",
                 f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
        if origin:
            lines.append(f"Origin: {origin}")
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        buf = b""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in buf:
            if time.monotonic() > deadline:
                raise TimeoutError("handshake timeout")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"EOF during handshake: {buf!r}")
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        self.head = head.decode("latin-1")
        if status != 101:
            self.sock.close()
            raise Refused(status, self.head, rest)
        want = base64.b64encode(hashlib.sha1(
            (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
        if want not in head:
            raise ConnectionError("bad Sec-WebSocket-Accept")
        self.buf = rest
        self.pending = collections.deque()
        self.next_id = 1
        self.close_code = None
        self.close_reason = None
        self.closed = False
        self.last_raw = None

    # sending
    def send_frame(self, op, payload, fin=True):
        if isinstance(payload, str):
            payload = payload.encode()
        n = len(payload)
        hdr = bytes([(0x80 if fin else 0) | op])
        if n < 126:
            hdr += bytes([0x80 | n])
        elif n < 65536:
            hdr += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            hdr += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        # XOR with the mask through int arithmetic (fast enough for MBs).
        m = (mask * (n // 4 + 1))[:n]
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes(m, "big")
                  ).to_bytes(n, "big") if n else b""
        self.sock.sendall(hdr + mask + masked)

    def send_text(self, s):
        self.send_frame(1, s)

    def send_json(self, obj):
        self.send_text(json.dumps(obj))

    def cmd(self, method, params=None, **extra):
        """Sends one command, returns its id."""
        cid = self.next_id
        self.next_id += 1
        obj = {"id": cid, method: {} if params is None else params}
        obj.update(extra)
        self.send_json(obj)
        return cid

    def call(self, method, params=None, timeout=None):
        cid = self.cmd(method, params)
        return self.reply(cid, timeout)

    def reply(self, cid, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        for i, m in enumerate(self.pending):
            if m.get("id") == cid:
                del self.pending[i]
                return m
        while True:
            m = self.recv_json(max(0.01, deadline - time.monotonic()))
            if m.get("id") == cid:
                return m
            self.pending.append(m)

    def connect(self, token=None, name=None):
        p = {}
        if token is not None:
            p["token"] = token
        if name is not None:
            p["name"] = name
        r = self.call("connect", p)
        if "result" in r:
            self.client_id = r["result"].get("client")
            self.user = r["result"].get("user")
        return r

    # receiving
    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out waiting for data")
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(1 << 18)
        except socket.timeout:
            raise TimeoutError("timed out waiting for data")
        except (ConnectionResetError, BrokenPipeError):
            chunk = b""
        if not chunk:
            self.closed = True
            raise Closed(None, "EOF without close frame")
        self.buf += chunk

    def _frame(self, deadline):
        while True:
            b = self.buf
            if len(b) >= 2:
                fin, op = b[0] & 0x80, b[0] & 0x0F
                n = b[1] & 0x7F
                i = 2
                if b[1] & 0x80:
                    raise ConnectionError("server frame is masked")
                if n == 126 and len(b) >= 4:
                    n = struct.unpack("!H", b[2:4])[0]
                    i = 4
                elif n == 127 and len(b) >= 10:
                    n = struct.unpack("!Q", b[2:10])[0]
                    i = 10
                elif n >= 126:
                    i = None
                if i is not None and len(b) >= i + n:
                    self.buf = b[i + n:]
                    return bool(fin), op, b[i:i + n]
            self._fill(deadline)

    def recv_msg(self, timeout=None):
        if self.closed:
            raise Closed(self.close_code, self.close_reason or "")
        deadline = time.monotonic() + (timeout or self.timeout)
        parts, mop = [], None
        while True:
            fin, op, payload = self._frame(deadline)
            if op == 9:
                self.pings += 1
                if self.auto_pong:
                    self.send_frame(10, payload)
                continue
            if op == 10:
                continue
            if op == 8:
                code = struct.unpack("!H", payload[:2])[0] if len(
                    payload) >= 2 else 1005
                self.close_code = code
                self.close_reason = payload[2:].decode("utf-8", "replace")
                try:
                    self.send_frame(8, payload[:2])
                    # The close handshake is over: end TCP as a browser
                    # does (the server waits for the FIN).
                    self.sock.close()
                except OSError:
                    pass
                self.closed = True
                raise Closed(code, self.close_reason)
            if op != 0:
                mop = op
            parts.append(payload)
            if fin:
                return mop, b"".join(parts)

    def recv_json(self, timeout=None):
        op, payload = self.recv_msg(timeout)
        self.last_raw = payload
        if op != 1:
            raise ValueError(f"server sent opcode {op}")
        m = json.loads(payload)
        if isinstance(m, dict):
            m = Msg(m)
            m.raw = payload
        return m

    def next(self, timeout=None):
        if self.pending:
            return self.pending.popleft()
        return self.recv_json(timeout)

    def push(self, pred=lambda m: True, timeout=None):
        """The first pending or incoming push for which pred holds; other
        messages stay pending."""
        for i, m in enumerate(self.pending):
            if "push" in m and pred(m["push"]):
                del self.pending[i]
                self.last_raw = m.raw
                return m["push"]
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            m = self.recv_json(max(0.01, deadline - time.monotonic()))
            if "push" in m and pred(m["push"]):
                self.last_raw = m.raw
                return m["push"]
            self.pending.append(m)

    def pubs(self, channel, count, timeout=None):
        out = []
        for _ in range(count):
            p = self.push(lambda p: p.get("channel") == channel and "pub" in p,
                          timeout)
            out.append(p["pub"])
        return out

    def sync(self):
        """A ping round trip: everything the server queued before the ping
        reply is then in self.pending."""
        r = self.call("ping")
        if r.get("result") != {}:
            raise RuntimeError(f"ping failed: {r}")

    def wait_close(self, timeout=None):
        """Reads until the close frame (or EOF); returns (code, messages)."""
        msgs = list(self.pending)
        self.pending.clear()
        deadline = time.monotonic() + (timeout or self.timeout)
        try:
            while True:
                op, payload = self.recv_msg(max(0.01,
                                                deadline - time.monotonic()))
                try:
                    msgs.append(json.loads(payload))
                except ValueError:
                    msgs.append(payload)
        except Closed as e:
            return e.code, msgs

    def close(self, code=1000):
        try:
            if not self.closed:
                self.send_frame(8, struct.pack("!H", code))
        except OSError:
            pass
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass

    def abort(self):
        """Drops the TCP connection without a close handshake."""
        self.closed = True
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                 struct.pack("ii", 1, 0))
            self.sock.close()
        except OSError:
            pass


# --------------------------------------------------------------------------
# SSE
# --------------------------------------------------------------------------


class SSE:
    def __init__(self, port, query, last_event_id=None, origin=None,
                 timeout=5.0, headers=None):
        self.sock = socket.create_connection(("127.0.0.1", port),
                                             timeout=timeout)
        self.timeout = timeout
        lines = [f"GET /sse?{query} HTTP/1.1", f"Host: 127.0.0.1:{port}",
                 "Accept: text/event-stream"]
        if last_event_id is not None:
            lines.append(f"Last-Event-ID: {last_event_id}")
        if origin:
            lines.append(f"Origin: {origin}")
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        buf = b""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in buf:
            if time.monotonic() > deadline:
                raise TimeoutError("SSE head timeout")
            c = self.sock.recv(65536)
            if not c:
                break
            buf += c
        head, _, rest = buf.partition(b"\r\n\r\n")
        self.head = head.decode("latin-1")
        self.status = int(self.head.split(" ", 2)[1]) if self.head else 0
        self.headers = {}
        for line in self.head.split("\r\n")[1:]:
            k, _, v = line.partition(":")
            self.headers[k.strip().lower()] = v.strip()
        self.chunked = "chunked" in self.headers.get("transfer-encoding",
                                                     "").lower()
        self.raw = rest
        self.text = b""
        self.eof = False

    def _decode(self):
        if not self.chunked:
            self.text += self.raw
            self.raw = b""
            return
        while True:
            i = self.raw.find(b"\r\n")
            if i < 0:
                return
            n = int(self.raw[:i].split(b";")[0], 16)
            if len(self.raw) < i + 2 + n + 2:
                return
            if n == 0:
                self.eof = True
            self.text += self.raw[i + 2:i + 2 + n]
            self.raw = self.raw[i + 2 + n + 2:]

    def body_all(self, timeout=None):
        """For error answers: reads what there is until EOF or timeout."""
        deadline = time.monotonic() + (timeout or 2)
        try:
            while time.monotonic() < deadline:
                self.sock.settimeout(max(0.01, deadline - time.monotonic()))
                c = self.sock.recv(65536)
                if not c:
                    break
                self.raw += c
        except (socket.timeout, OSError):
            pass
        self._decode()
        return self.text

    def event(self, timeout=None, comments=False):
        """The next event as {"id", "event", "data", "comments"}; None at
        EOF. Comment-only blocks are skipped unless comments=True."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            self._decode()
            sep = self.text.find(b"\n\n")
            if sep >= 0:
                block = self.text[:sep].decode("utf-8")
                self.text = self.text[sep + 2:]
                ev = {"id": None, "event": None, "data": None, "comments": [],
                      "retry": None}
                data = []
                for line in block.split("\n"):
                    if line.startswith(":"):
                        ev["comments"].append(line[1:].strip())
                        continue
                    k, _, v = line.partition(":")
                    if v.startswith(" "):
                        v = v[1:]
                    if k == "data":
                        data.append(v)
                    elif k in ("id", "event", "retry"):
                        ev[k] = v
                if data:
                    ev["data"] = "\n".join(data)
                if (ev["data"] is None and ev["event"] is None and
                        ev["id"] is None and not (comments and
                                                  ev["comments"])):
                    continue  # retry hints, keepalive comments
                return ev
            if self.eof:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("SSE event timeout")
            self.sock.settimeout(left)
            try:
                c = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError("SSE event timeout")
            except ConnectionResetError:
                c = b""
            if not c:
                self.eof = True
                self._decode()
                continue
            self.raw += c

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# --------------------------------------------------------------------------
# JWT
# --------------------------------------------------------------------------


def b64u(b):
    if isinstance(b, str):
        b = b.encode()
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def jwt_parts(claims, alg, header=None):
    h = {"alg": alg, "typ": "JWT"}
    if header:
        h.update(header)
    return b64u(json.dumps(h)) + "." + b64u(json.dumps(claims))


def jwt_hs256(claims, secret, alg="HS256", header=None):
    si = jwt_parts(claims, alg, header)
    if isinstance(secret, str):
        secret = secret.encode()
    return si + "." + b64u(hmac.new(secret, si.encode(), hashlib.sha256)
                           .digest())


def jwt_none(claims):
    return jwt_parts(claims, "none") + "."


def openssl_sign(keyfile, data):
    r = subprocess.run(["openssl", "dgst", "-sha256", "-sign", keyfile],
                       input=data, capture_output=True, timeout=30,
                       check=True)
    return r.stdout


def der_to_raw(der):
    """A DER ECDSA-Sig-Value to the 64-byte r || s of JWS ES256."""
    assert der[0] == 0x30
    i = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)
    assert der[i] == 2
    lr = der[i + 1]
    r = der[i + 2:i + 2 + lr]
    i += 2 + lr
    assert der[i] == 2
    ls = der[i + 1]
    s = der[i + 2:i + 2 + ls]
    return r.lstrip(b"\0").rjust(32, b"\0") + s.lstrip(b"\0").rjust(32, b"\0")


def jwt_rs256(claims, keyfile):
    si = jwt_parts(claims, "RS256")
    return si + "." + b64u(openssl_sign(keyfile, si.encode()))


def jwt_es256(claims, keyfile):
    si = jwt_parts(claims, "ES256")
    return si + "." + b64u(der_to_raw(openssl_sign(keyfile, si.encode())))


class Keys:
    """Key pairs generated with openssl at test time."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="herald-push-keys-")

        def gen(name, *opts):
            priv = os.path.join(self.dir, name + ".pem")
            pub = os.path.join(self.dir, name + ".pub.pem")
            subprocess.run(["openssl", "genpkey", *opts, "-out", priv],
                           check=True, capture_output=True, timeout=60)
            subprocess.run(["openssl", "pkey", "-in", priv, "-pubout", "-out",
                            pub], check=True, capture_output=True, timeout=60)
            return priv, pub

        self.rsa, self.rsa_pub = gen("rsa", "-algorithm", "RSA", "-pkeyopt",
                                     "rsa_keygen_bits:2048")
        self.rsa2, _ = gen("rsa2", "-algorithm", "RSA", "-pkeyopt",
                           "rsa_keygen_bits:2048")
        self.ec, self.ec_pub = gen("ec", "-algorithm", "EC", "-pkeyopt",
                                   "ec_paramgen_curve:P-256")
        self.ec2, _ = gen("ec2", "-algorithm", "EC", "-pkeyopt",
                          "ec_paramgen_curve:P-256")

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def now():
    return int(time.time())


def run_test(fn, *args):
    """Runs one test group; an exception is one failed check."""
    R.group = fn.__name__.replace("test_", "")
    t0 = time.monotonic()
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001
        check("completes without exception", False,
              f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
    finally:
        for s in list(SERVERS):
            if not s.stopped:
                s.stop()
        SERVERS.clear()
        print(f"---- {R.group}: {time.monotonic() - t0:.1f}s", flush=True)
        R.group = ""


def take_threads(args):
    """`--threads N` among args (after the herald path): every server that
    can runs on N loops (THREADS). Returns args without it."""
    global THREADS
    if "--threads" in args[1:-1]:
        i = args.index("--threads")
        THREADS = int(args[i + 1])
        args = args[:i] + args[i + 2:]
    return args


def main(tests, doc, limit_s=240):
    """The runner of a small black-box suite: `SCRIPT HERALD [-k SUBSTRING
    ...]`, a whole-suite alarm, one line per check, then "N passed, N
    failed". Returns the exit status."""
    global HERALD
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help"):
        print(doc)
        return 2
    HERALD = os.path.abspath(args[0])
    args = take_threads(args)
    only = args[2::2] if len(args) > 2 and args[1] == "-k" else []

    def on_alarm(signum, frame):
        print(f"FAIL the whole suite took over {limit_s} s", flush=True)
        kill_all()
        os._exit(1)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(limit_s)
    t0 = time.monotonic()
    try:
        for t in tests:
            if only and not any(o in t.__name__ for o in only):
                continue
            run_test(t)
    finally:
        kill_all()
    print(f"{R.passed} passed, {R.failed} failed "
          f"({time.monotonic() - t0:.1f}s)")
    for f in R.failures:
        print(f"  {f}")
    return 1 if R.failed else 0
