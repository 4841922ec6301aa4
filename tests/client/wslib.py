"""Small blocking WebSocket peers for the tests of `herald client` and
`herald bench`: a server whose handler runs in a thread per connection,
a client, an HTTP CONNECT proxy, and a runner for the herald binary.

Standard library only; the frame and handshake code is
tests/conformance/wire.py.  Every server listens on 127.0.0.1 and every
wait has a timeout.
"""

import os
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "conformance"))
import wire  # noqa: E402

TIMEOUT = 10


class Closed(Exception):
    """The peer closed: code and reason of its close frame (or 1006)."""

    def __init__(self, code, reason=b""):
        super().__init__("closed %s %r" % (code, reason))
        self.code = code
        self.reason = reason


class Peer:
    """One WebSocket connection over a socket (server or client side)."""

    def __init__(self, sock, server, head=b"", rest=b""):
        self.sock = sock
        self.server = server  # our role: frames we send are unmasked
        self.head = head      # the other side's HTTP head
        self.parser = wire.FrameParser()
        self.parser.feed(rest)
        self.sock.settimeout(TIMEOUT)
        self.close_code = None
        self.pings = []

    def _frame(self):
        while True:
            f = self.parser.next_frame()
            if f is not None:
                return f
            data = self.sock.recv(65536)
            if not data:
                raise Closed(1006)
            self.parser.feed(data)

    def recv(self):
        """The next message as (opcode, payload); pings are answered."""
        op, parts = None, []
        while True:
            f = self._frame()
            if f.opcode == wire.OP_PING:
                self.pings.append(f.payload)
                self.send(wire.OP_PONG, f.payload)
                continue
            if f.opcode == wire.OP_PONG:
                continue
            if f.opcode == wire.OP_CLOSE:
                code, reason, _ = wire.parse_close_payload(f.payload)
                self.close_code = code
                try:
                    self.send(wire.OP_CLOSE, f.payload)
                except OSError:
                    pass
                raise Closed(code if code is not None else 1005, reason)
            if f.opcode != wire.OP_CONT:
                op = f.opcode
            parts.append(f.payload)
            if f.fin:
                return op, b"".join(parts)

    def recv_text(self):
        op, data = self.recv()
        assert op == wire.OP_TEXT, "got opcode %d" % op
        return data.decode()

    def send(self, op, payload=b""):
        self.sock.sendall(wire.build_frame(op, payload, mask=not self.server))

    def send_text(self, text):
        self.send(wire.OP_TEXT, text.encode())

    def close(self, code=1000, reason=b""):
        """Sends a close frame and waits for the answer (bounded)."""
        self.send(wire.OP_CLOSE, wire.close_payload(code, reason))
        try:
            while True:
                self.recv()
        except (Closed, OSError):
            pass
        self.sock.close()

    def wait_close(self):
        """Reads until the peer closes; returns its close code."""
        try:
            while True:
                self.recv()
        except Closed as e:
            return e.code
        except OSError:
            return 1006
        finally:
            self.sock.close()


def read_head(sock):
    buf = b""
    sock.settimeout(TIMEOUT)
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise Closed(1006)
        buf += data
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head, rest


class Server:
    """Accepts connections on 127.0.0.1; handler(peer) runs in a thread for
    each. With refuse=(status, body) the upgrade is answered with that
    status instead. With tls=(cert, key[, ca]) it speaks TLS (and, with a
    CA, asks for a client certificate)."""

    def __init__(self, handler, refuse=None, tls=None):
        self.handler = handler
        self.refuse = refuse
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.ctx = None
        if tls:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(tls[0], tls[1])
            if len(tls) > 2:
                self.ctx.verify_mode = ssl.CERT_REQUIRED
                self.ctx.load_verify_locations(tls[2])
        self.heads = []
        self.errors = []
        self.connections = 0
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path="/"):
        return "ws://127.0.0.1:%d%s" % (self.port, path)

    def _accept(self):
        while not self.stopped:
            try:
                sock, _ = self.lsock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(sock,),
                             daemon=True).start()

    def _serve(self, sock):
        try:
            if self.ctx:
                sock.settimeout(TIMEOUT)
                sock = self.ctx.wrap_socket(sock, server_side=True)
            head, rest = read_head(sock)
            self.heads.append(head)
            _, headers = wire.parse_head(head)
            if self.refuse:
                status, body = self.refuse
                sock.sendall(b"HTTP/1.1 %s\r\nContent-Length: %d\r\n"
                             b"Connection: close\r\n\r\n%s" %
                             (status.encode(), len(body), body))
                sock.close()
                return
            key = headers["sec-websocket-key"][0]
            sock.sendall(wire.server_response(key))
            self.handler(Peer(sock, True, head, rest))
        except (Closed, OSError, ssl.SSLError) as e:
            self.errors.append(e)
        except Exception as e:  # a failed assertion in a handler
            self.errors.append(e)
        finally:
            try:
                sock.close()
            except OSError:
                pass

    def stop(self):
        self.stopped = True
        self.lsock.close()


def connect(port, path="/"):
    """A client Peer connected to 127.0.0.1:port."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    key = wire.new_key()
    sock.sendall(wire.client_request("127.0.0.1", port, path, key))
    head, rest = read_head(sock)
    assert head.startswith(b"HTTP/1.1 101"), head
    return Peer(sock, False, head, rest)


class Proxy:
    """An HTTP proxy that takes CONNECT to 127.0.0.1 only and tunnels the
    bytes. With auth (b"user:password") it wants Proxy-Authorization."""

    def __init__(self, auth=None):
        self.auth = auth
        self.requests = []
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(8)
        self.port = self.lsock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                sock, _ = self.lsock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,),
                             daemon=True).start()

    def _serve(self, sock):
        try:
            head, rest = read_head(sock)
            self.requests.append(head)
            start, headers = wire.parse_head(head)
            method, target, _ = start.split(" ", 2)
            if self.auth is not None:
                import base64
                want = "Basic " + base64.b64encode(self.auth).decode()
                if headers.get("proxy-authorization", [""])[0] != want:
                    sock.sendall(b"HTTP/1.1 407 Proxy Authentication "
                                 b"Required\r\nContent-Length: 0\r\n\r\n")
                    return
            host, port = target.rsplit(":", 1)
            if method != "CONNECT" or host not in ("127.0.0.1", "localhost"):
                sock.sendall(b"HTTP/1.1 403 Forbidden\r\n"
                             b"Content-Length: 0\r\n\r\n")
                return
            up = socket.create_connection(("127.0.0.1", int(port)),
                                          timeout=TIMEOUT)
            sock.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            if rest:
                up.sendall(rest)
            t = threading.Thread(target=self._pipe, args=(up, sock),
                                 daemon=True)
            t.start()
            self._pipe(sock, up)
            t.join(TIMEOUT)
        except (OSError, Closed, ValueError):
            pass
        finally:
            sock.close()

    @staticmethod
    def _pipe(src, dst):
        try:
            src.settimeout(TIMEOUT * 3)
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def stop(self):
        self.lsock.close()


class Herald:
    """`herald ARGS` with stdin from a pipe; output collected."""

    def __init__(self, binary, *args, stdin=b"", close_stdin=True, env=None):
        e = dict(os.environ)
        for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY",
                  "no_proxy", "NO_PROXY"):
            e.pop(k, None)
        e.update(env or {})
        self.p = subprocess.Popen([binary] + list(args),
                                  stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env=e)
        self.out = b""
        self.err = b""
        try:
            if stdin:
                self.p.stdin.write(stdin)
                self.p.stdin.flush()
            if close_stdin:
                self.p.stdin.close()
        except BrokenPipeError:
            pass  # it exited before reading: its output says why

    def write(self, data):
        self.p.stdin.write(data)
        self.p.stdin.flush()

    def close_stdin(self):
        self.p.stdin.close()
        self.p.stdin = None

    def wait(self, timeout=TIMEOUT):
        if self.p.stdin and self.p.stdin.closed:
            self.p.stdin = None  # communicate() would flush it
        try:
            self.out, self.err = self.p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.out, self.err = self.p.communicate()
            raise AssertionError("herald did not exit in %ss; stderr %r" %
                                 (timeout, self.err[-500:]))
        return self.p.returncode

    def read_stderr_line(self, text, timeout=TIMEOUT):
        """Reads stderr until a line holds text; returns that line."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            line = self.p.stderr.readline()
            if not line:
                break
            self.err += line
            if text.encode() in line:
                return line.decode()
        raise AssertionError("no %r on stderr: %r" % (text, self.err))


class Results:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def run(self, name, fn, *args):
        t = time.time()
        try:
            fn(*args)
        except Exception as e:  # report and go on to the next test
            self.failed += 1
            print("FAIL %s: %s: %s" % (name, type(e).__name__, e), flush=True)
            return
        self.passed += 1
        print("ok %s (%.1f s)" % (name, time.time() - t), flush=True)

    def summary(self):
        print("%d passed, %d failed" % (self.passed, self.failed))
        return 0 if self.failed == 0 else 1


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


def u32(n):
    return struct.pack("!I", n)
