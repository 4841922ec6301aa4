#!/usr/bin/env python3
"""Black-box tests of the limits of `herald echo` that no peer library can
provoke: --idle-timeout (a silent connection is closed with 1001),
--max-partial (the bytes all connections hold for unfinished messages; the
connection that would go past is closed with 1013 and no other is touched)
and --max-deflate (the compression state they hold; an offer past it is
declined).

usage: run.py path/to/herald

Standard library only; frames and handshakes come from
tests/conformance/wire.py. Exit status 0 when every check passed."""

import os
import select
import signal
import socket
import subprocess
import sys
import time
import zlib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "conformance"))
import wire  # noqa: E402

HERALD = None
failures = []


def check(name, cond, detail=""):
    print(("ok   " if cond else "FAIL ") + name +
          ("" if cond or not detail else "  -- " + str(detail)), flush=True)
    if not cond:
        failures.append(name)
    return cond


class Echo:
    """herald echo on 127.0.0.1:0 with extra arguments; stop() sends SIGTERM
    and expects exit 0."""

    def __init__(self, *args):
        self.p = subprocess.Popen([HERALD, "echo", "--listen", "127.0.0.1:0",
                                   *args], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        line = self.p.stdout.readline()
        if not line.startswith("listening on "):
            self.p.kill()
            raise RuntimeError("herald echo did not start: %r %r" %
                               (line, self.p.stderr.read()))
        self.port = int(line.rsplit(":", 1)[1])

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        try:
            rc = self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            rc = "killed"
        err = self.p.stderr.read()
        check("herald echo exits 0 on SIGTERM", rc == 0, "%s %s" % (rc, err))


class Conn:
    """A client connection with a frame parser over a raw socket."""

    def __init__(self, port, deflate=False):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.parser = wire.FrameParser()
        key = wire.new_key()
        ext = ["permessage-deflate; client_max_window_bits"] if deflate else []
        self.sock.sendall(wire.client_request("127.0.0.1", port, "/", key,
                                              ext))
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise RuntimeError("connection closed during the handshake")
            buf += chunk
        head, rest = wire.split_head(buf)
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError("handshake refused: %r" % head)
        self.deflate = b"permessage-deflate" in head
        self.parser.feed(rest)

    def send(self, opcode, payload, fin=True, rsv=0):
        self.sock.sendall(wire.build_frame(opcode, payload, fin, rsv))

    def frame(self, timeout):
        """The next frame, or None on EOF or after timeout seconds."""
        deadline = time.monotonic() + timeout
        while True:
            f = self.parser.next_frame()
            if f is not None:
                return f
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                return None
            try:
                data = self.sock.recv(65536)
            except OSError:
                return None
            if not data:
                return None
            self.parser.feed(data)

    def close_code(self, timeout):
        """(code, reason) of the next close frame, skipping other frames;
        (None, None) if none came."""
        deadline = time.monotonic() + timeout
        while True:
            f = self.frame(max(0.0, deadline - time.monotonic()))
            if f is None:
                return None, None
            if f.opcode == wire.OP_CLOSE:
                code, reason, _ = wire.parse_close_payload(f.payload)
                return code, reason

    def echo_of(self, timeout=5):
        """The payload of the next data frame (None if none came)."""
        f = self.frame(timeout)
        while f is not None and f.opcode not in (wire.OP_TEXT,
                                                 wire.OP_BINARY):
            f = self.frame(timeout)
        if f is None:
            return None
        if f.rsv & 4:
            return zlib.decompressobj(-15).decompress(f.payload +
                                                      b"\x00\x00\xff\xff")
        return f.payload

    def close(self):
        self.sock.close()


def compressed(data):
    """data as one permessage-deflate message body (RFC 7692 7.2.1)."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    return out[:-4]


# ---------------------------------------------------------------------------


def test_usage():
    out = subprocess.run([HERALD, "echo", "--help"], capture_output=True,
                         text=True).stdout
    check("--help documents --idle-timeout (default 60) and --max-partial "
          "(default 256M)",
          "--idle-timeout SECS" in out and "default 60" in out and
          "--max-partial SIZE" in out and "default 256M" in out, out)
    check("--help documents --max-deflate (default 1G)",
          "--max-deflate SIZE" in out and "default 1G" in out, out)
    for args in (["--idle-timeout", "x"], ["--idle-timeout", "86401"],
                 ["--idle-timeout", "-1"], ["--max-partial", "lots"],
                 ["--max-deflate", "lots"]):
        p = subprocess.run([HERALD, "echo", "--listen", "127.0.0.1:0", *args],
                           capture_output=True, text=True, timeout=10)
        check("herald echo %s: usage error (exit 2)" % " ".join(args),
              p.returncode == 2, (p.returncode, p.stderr))


def test_idle_timeout():
    e = Echo("--idle-timeout", "1")
    try:
        silent = Conn(e.port)
        t0 = time.monotonic()
        code, reason = silent.close_code(5)
        waited = time.monotonic() - t0
        check("--idle-timeout 1: a silent connection is closed with 1001 "
              "\"idle timeout\"",
              code == 1001 and reason == b"idle timeout", (code, reason))
        check("--idle-timeout 1: ... about a second after its last byte",
              0.8 <= waited <= 3.0, waited)
        silent.close()
        busy = Conn(e.port)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2.5:  # a ping every 0.3 s
            busy.send(wire.OP_PING, b"p")
            time.sleep(0.3)
        busy.send(wire.OP_TEXT, b"still here")
        check("--idle-timeout 1: a connection that keeps sending stays open",
              busy.echo_of() == b"still here")
        busy.close()
    finally:
        e.stop()
    e = Echo("--idle-timeout", "0")
    try:
        c = Conn(e.port)
        time.sleep(2.5)
        c.send(wire.OP_TEXT, b"after a pause")
        check("--idle-timeout 0: a silent connection stays open",
              c.echo_of() == b"after a pause")
        c.close()
    finally:
        e.stop()


def test_max_partial():
    e = Echo("--max-partial", "64K")
    try:
        a = Conn(e.port)
        a.send(wire.OP_BINARY, b"a" * 40000, fin=False)  # holds 64 KiB
        time.sleep(0.3)
        z = Conn(e.port)
        z.send(wire.OP_TEXT, b"z" * 50, fin=False)  # would need 256 more
        code, reason = z.close_code(3)
        check("--max-partial 64K: the connection that would go past it gets "
              "1013", code == 1013, (code, reason))
        a.send(wire.OP_CONT, b"!", fin=True)
        got = a.echo_of()
        check("--max-partial 64K: the connection within it is untouched and "
              "its message is echoed",
              got == b"a" * 40000 + b"!", None if got is None else len(got))
        c = Conn(e.port)
        c.send(wire.OP_BINARY, b"c" * 30000, fin=False)
        c.send(wire.OP_CONT, b"c" * 30000, fin=True)
        check("--max-partial 64K: delivered messages give their bytes back",
              c.echo_of() == b"c" * 60000)
        for x in (a, z, c):
            x.close()
    finally:
        e.stop()

    # The hardening finding: an unfinished compressed message (16 MiB of
    # zeros in about 16 KiB) would pin 16 MiB; with --max-partial 1M it is
    # refused once its buffer would pass 1 MiB.
    e = Echo("--max-partial", "1M")
    try:
        bomb = Conn(e.port, deflate=True)
        other = Conn(e.port, deflate=True)
        ok = check("permessage-deflate agreed", bomb.deflate and other.deflate)
        if ok:
            bomb.send(wire.OP_BINARY, compressed(bytes(16 << 20)), fin=False,
                      rsv=4)
            code, reason = bomb.close_code(10)
            check("--max-partial 1M: an unfinished compressed message that "
                  "inflates past it gets 1013", code == 1013, (code, reason))
            other.send(wire.OP_TEXT, compressed(b"fine " * 100), rsv=4)
            check("--max-partial 1M: another connection is untouched",
                  other.echo_of() == b"fine " * 100)
        bomb.close()
        other.close()
    finally:
        e.stop()


def test_max_deflate():
    """--max-deflate: room for one connection's compression state (about
    300 KiB): the second offer is declined and that connection is echoed
    uncompressed; when the first ends its room comes back."""
    e = Echo("--max-deflate", "400K")
    try:
        a = Conn(e.port, deflate=True)
        b = Conn(e.port, deflate=True)
        check("--max-deflate 400K: the first offer is accepted, the second "
              "declined", a.deflate and not b.deflate, (a.deflate, b.deflate))
        b.send(wire.OP_TEXT, b"plain " * 50)
        check("--max-deflate 400K: the connection without compression is "
              "echoed", b.echo_of() == b"plain " * 50)
        if a.deflate:
            a.send(wire.OP_TEXT, compressed(b"packed " * 100), rsv=4)
            check("--max-deflate 400K: the compressed connection is echoed",
                  a.echo_of() == b"packed " * 100)
        a.close()
        c = None
        for _ in range(50):  # the server frees A's state once it has closed
            c = Conn(e.port, deflate=True)
            if c.deflate:
                break
            c.close()
            time.sleep(0.1)
        check("--max-deflate 400K: the room comes back when a connection "
              "ends", c is not None and c.deflate)
        for x in (b, c):
            if x is not None:
                x.close()
    finally:
        e.stop()


def test_many_bytes_in_flight():
    """More bytes in flight at once than the io_uring backend's receive pool
    may hold (1 MiB; it starts at 64 KiB and doubles when a receive finds
    no buffer free): every echo still comes back whole and in order, on
    either backend."""
    import threading
    e = Echo()
    try:
        nconn, nmsg, size = 24, 2, 1 << 20
        conns = [Conn(e.port) for _ in range(nconn)]
        results = [None] * nconn

        def run(i):
            c = conns[i]
            msgs = [os.urandom(size) for _ in range(nmsg)]
            frames = b"".join(wire.build_frame(wire.OP_BINARY, m)
                              for m in msgs)
            t = threading.Thread(target=c.sock.sendall, args=(frames,))
            t.start()
            got = [c.echo_of(60) for _ in range(nmsg)]
            t.join(60)
            results[i] = got == msgs

        threads = [threading.Thread(target=run, args=(i,))
                   for i in range(nconn)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        check("%d connections x %d messages of %d bytes in flight at once: "
              "every echo whole and in order" % (nconn, nmsg, size),
              all(results), results)
        for c in conns:
            c.close()
    finally:
        e.stop()


def main():
    global HERALD
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    HERALD = sys.argv[1]
    for t in (test_usage, test_idle_timeout, test_max_partial,
              test_max_deflate, test_many_bytes_in_flight):
        try:
            t()
        except Exception as ex:  # report and go on with the next group
            check("%s ran to the end" % t.__name__, False, repr(ex))
    print("%d failed" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
