#!/usr/bin/python3
"""Interop with python3-websockets, both ways.

    run_python.py HERALD_BINARY

Part 1: a websockets client against `herald echo`.
Part 2: a websockets server (plus a raw socket server for the frames
websockets refuses to send) against `herald client`.
Then the same with permessage-deflate, and over TLS (wss://) both ways with
certificates made by the openssl CLI: a trusted chain, a wrong host name, an
expired and an untrusted certificate, plain HTTP to a TLS port and TLS to a
plain port.

Prints one line per check and ends with "N passed, N failed"; exits 1 on any
failure, 77 when python3-websockets is missing.
"""

import asyncio
import base64
import hashlib
import os
import shutil
import signal
import ssl
import struct
import subprocess
import sys
import tempfile

try:
    import websockets
    from websockets.exceptions import ConnectionClosed
except ImportError:
    print("SKIPPED: python3-websockets is not installed")
    sys.exit(77)

HERALD = None
CHECK_TIMEOUT = 30  # seconds for one check
SIZES = [0, 125, 126, 65535, 65536]
BIG = 16 << 20

passed = 0
failed = 0


def report(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok {name}")
    else:
        failed += 1
        print(f"FAIL {name}{': ' + detail if detail else ''}")
    sys.stdout.flush()


async def check(name, coro):
    """Runs one check with a timeout; an exception or False fails it."""
    try:
        res = await asyncio.wait_for(coro, CHECK_TIMEOUT)
    except asyncio.TimeoutError:
        report(name, False, "timeout")
        return
    except Exception as e:  # noqa: BLE001 - report every failure
        report(name, False, f"{type(e).__name__}: {e}")
        return
    if isinstance(res, tuple):
        report(name, res[0], res[1])
    else:
        report(name, res is not False)


def expect(cond, detail):
    if not cond:
        raise AssertionError(detail)


# ---- processes -------------------------------------------------------------


class Echo:
    """`herald echo` on 127.0.0.1, port 0; stopped by its PID."""

    def __init__(self, *args):
        self.args = args
        self.proc = None
        self.port = None

    async def start(self):
        self.proc = await asyncio.create_subprocess_exec(
            HERALD, "echo", "--listen", "127.0.0.1:0", *self.args,
            stdout=asyncio.subprocess.PIPE)
        line = await asyncio.wait_for(self.proc.stdout.readline(), 10)
        text = line.decode().strip()
        expect(text.startswith("listening on "), f"echo printed {text!r}")
        self.port = int(text.rsplit(":", 1)[1])
        self.url = f"ws://127.0.0.1:{self.port}"
        return self

    async def stop(self, sig=signal.SIGTERM, timeout=10):
        """Signals the server; returns its exit code (None: it had to be
        killed)."""
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except asyncio.TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            return None


class Client:
    """`herald client` with pipes on stdin, stdout and stderr."""

    def __init__(self, url, *args):
        self.argv = [HERALD, "client", url, *args]
        self.proc = None
        self.out = b""
        self.err = b""

    async def start(self):
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        self._readers = asyncio.gather(self._drain("out"), self._drain("err"))
        return self

    async def _drain(self, which):
        stream = self.proc.stdout if which == "out" else self.proc.stderr
        chunks = []
        while True:
            b = await stream.read(1 << 20)
            if not b:
                break
            chunks.append(b)
        setattr(self, which, b"".join(chunks))

    async def write(self, data):
        self.proc.stdin.write(data)
        await self.proc.stdin.drain()

    def close_stdin(self):
        if not self.proc.stdin.is_closing():
            self.proc.stdin.close()

    async def wait(self, timeout=15):
        """Waits for the exit; returns the exit code, or None after a
        kill on timeout."""
        try:
            rc = await asyncio.wait_for(self.proc.wait(), timeout)
        except asyncio.TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            rc = None
        self.close_stdin()
        await self._readers
        return rc

    def stderr(self):
        return self.err.decode(errors="replace").strip()


# ---- raw frames --------------------------------------------------------------


def frame(opcode, payload=b"", fin=True, mask=False, rsv=0):
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    n = len(payload)
    m = 0x80 if mask else 0
    if n < 126:
        head += bytes([m | n])
    elif n < 65536:
        head += bytes([m | 126]) + struct.pack("!H", n)
    else:
        head += bytes([m | 127]) + struct.pack("!Q", n)
    if mask:
        key = os.urandom(4)
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        head += key
    return head + payload


async def read_frame(reader):
    """Returns (fin, opcode, payload), unmasking as needed."""
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", await reader.readexactly(2))
    elif n == 127:
        (n,) = struct.unpack("!Q", await reader.readexactly(8))
    key = await reader.readexactly(4) if b1 & 0x80 else None
    payload = await reader.readexactly(n)
    if key:
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bool(b0 & 0x80), b0 & 0x0F, payload


async def read_close(reader):
    """Reads frames until a close frame; returns its code (1005: none)."""
    while True:
        _, op, payload = await read_frame(reader)
        if op == 8:
            return struct.unpack("!H", payload[:2])[0] if payload else 1005


ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class RawServer:
    """A hand-written WebSocket server for the frames websockets will not
    send; scenario(reader, writer) runs after the handshake."""

    def __init__(self, scenario):
        self.scenario = scenario
        self.result = asyncio.get_running_loop().create_future()

    async def start(self):
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/raw"
        return self

    async def _conn(self, reader, writer):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            key = b""
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"sec-websocket-key:"):
                    key = line.split(b":", 1)[1].strip()
            accept = base64.b64encode(
                hashlib.sha1(key + ACCEPT_GUID).digest())
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\n"
                         b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            await writer.drain()
            res = await self.scenario(reader, writer)
            if not self.result.done():
                self.result.set_result(res)
        except Exception as e:  # noqa: BLE001
            if not self.result.done():
                self.result.set_exception(e)
        finally:
            writer.close()

    def close(self):
        self.server.close()


# ---- part 1: websockets client -> herald echo ----------------------------------


async def client_vs_echo():
    echo = await Echo().start()
    small = await Echo("--max-message", "1K").start()
    print(f"herald echo listening on 127.0.0.1:{echo.port} "
          f"(and :{small.port} with --max-message 1K)")
    url = echo.url + "/"

    async def roundtrip(msgs):
        async with websockets.connect(url, max_size=None) as ws:
            for m in msgs:
                await ws.send(m)
                got = await ws.recv()
                expect(type(got) is type(m) and got == m,
                       f"sent {type(m).__name__} of {len(m)}, "
                       f"got {type(got).__name__} of {len(got)}")

    await check("py->echo text", roundtrip(["hello", "h\u00e9llo \U0001F600"]))
    await check("py->echo binary", roundtrip([b"\x00\x01\xfe\xff"]))
    await check("py->echo empty text and binary", roundtrip(["", b""]))
    await check("py->echo text sizes 0/125/126/65535/65536",
                roundtrip(["a" * n for n in SIZES]))
    await check("py->echo binary sizes 0/125/126/65535/65536",
                roundtrip([os.urandom(n) for n in SIZES]))
    await check("py->echo 16 MiB binary", roundtrip([os.urandom(BIG)]))
    await check("py->echo 16 MiB text", roundtrip(["x" * BIG]))

    async def fragmented():
        async with websockets.connect(url) as ws:
            await ws.send(["fra", "gmen", "ted \u00e9"])
            got = await ws.recv()
            expect(got == "fragmented \u00e9", f"text got {got!r}")

            async def parts():
                for i in range(5):
                    yield bytes([i]) * 1000
            await ws.send(parts())
            got = await ws.recv()
            want = b"".join(bytes([i]) * 1000 for i in range(5))
            expect(got == want, f"binary got {len(got)} bytes")
    await check("py->echo fragmented text and binary", fragmented())

    async def ping():
        async with websockets.connect(url) as ws:
            for payload in [b"", b"ping-data", b"x" * 125]:
                waiter = await ws.ping(payload)
                await asyncio.wait_for(waiter, 5)
    await check("py->echo ping gets pong (0, 9, 125 bytes)", ping())

    async def close_with(code, reason):
        ws = await websockets.connect(url)
        await ws.send("before close")
        await ws.recv()
        await ws.close(code, reason)
        expect(ws.close_code == code,
               f"server answered {ws.close_code}, want {code}")
    await check("py->echo peer closes 1000 with reason",
                close_with(1000, "bye now"))
    await check("py->echo peer closes 4000", close_with(4000, "custom"))

    async def abort():
        ws = await websockets.connect(url)
        await ws.send("x" * 100000)
        ws.transport.abort()
        await asyncio.sleep(0.2)
        expect(echo.proc.returncode is None, "echo died after a TCP reset")
        await roundtrip(["still alive"])
    await check("py->echo peer aborts TCP; server survives", abort())

    async def raw_bad(frames, want_code, port=echo.port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16))
        writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: " + key + b"\r\n"
                     b"Sec-WebSocket-Version: 13\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        expect(head.startswith(b"HTTP/1.1 101"), f"handshake {head[:40]!r}")
        for f in frames:
            writer.write(f)
        code = await read_close(reader)
        writer.close()
        expect(code == want_code, f"close {code}, want {want_code}")
    await check("py->echo reserved opcode -> 1002",
                raw_bad([frame(3, b"x", mask=True)], 1002))
    await check("py->echo unmasked frame -> 1002",
                raw_bad([frame(1, b"x", mask=False)], 1002))
    await check("py->echo RSV1 without extension -> 1002",
                raw_bad([frame(1, b"x", mask=True, rsv=4)], 1002))
    await check("py->echo fragmented ping -> 1002",
                raw_bad([frame(9, b"x", fin=False, mask=True)], 1002))
    await check("py->echo invalid UTF-8 -> 1007",
                raw_bad([frame(1, b"\xff\xfe", mask=True)], 1007))

    async def too_big():
        async with websockets.connect(small.url + "/") as ws:
            await ws.send("ok")
            expect(await ws.recv() == "ok", "small message")
            await ws.send("y" * 2000)
            try:
                await ws.recv()
            except ConnectionClosed:
                pass
            expect(ws.close_code == 1009, f"close {ws.close_code}, want 1009")
    await check("py->echo message over --max-message -> 1009", too_big())

    async def shutdown():
        ws = await websockets.connect(url)
        await ws.send("hi")
        await ws.recv()
        rc = await echo.stop(signal.SIGTERM)
        await asyncio.wait_for(ws.wait_closed(), 5)
        expect(ws.close_code == 1001, f"close {ws.close_code}, want 1001")
        expect(rc == 0, f"herald echo exit {rc}, want 0")
    await check("py->echo SIGTERM -> peer sees 1001, echo exits 0",
                shutdown())

    rc = await small.stop()
    report("py->echo second echo exits 0 on SIGTERM", rc == 0, f"exit {rc}")


# ---- part 2: websockets server -> herald client -------------------------------


class PyServer:
    """A websockets server whose handler is picked by the request path."""

    def __init__(self):
        self.handlers = {}

    async def start(self):
        async def process_request(path, headers):
            if path == "/forbidden":
                return 403, [], b"no\n"
            return None

        self.server = await websockets.serve(
            self._handler, "127.0.0.1", 0, max_size=None,
            subprotocols=["chat2", "chat3"], process_request=process_request)
        self.port = self.server.sockets[0].getsockname()[1]
        print(f"python server listening on 127.0.0.1:{self.port}")
        return self

    def url(self, path):
        return f"ws://127.0.0.1:{self.port}{path}"

    def on(self, path, fn):
        """Registers fn(ws) for path; returns a future for its result."""
        fut = asyncio.get_running_loop().create_future()
        self.handlers[path] = (fn, fut)
        return fut

    async def _handler(self, ws, path=None):
        fn, fut = self.handlers[ws.path]
        try:
            res = await fn(ws)
            if not fut.done():
                fut.set_result(res)
        except Exception as e:  # noqa: BLE001
            if not fut.done():
                fut.set_exception(e)

    async def close(self):
        self.server.close()
        await self.server.wait_closed()


async def closed_code(ws):
    await ws.wait_closed()
    return ws.close_code


async def server_vs_client():
    srv = await PyServer().start()

    async def lines_then_eof():
        async def handler(ws):
            got = [await ws.recv() for _ in range(3)]
            await ws.send("reply one")
            await ws.send(b"\x01\x02raw")
            got.append(await ws.recv())  # the unterminated line, at EOF
            return got, await closed_code(ws)
        fut = srv.on("/lines", handler)
        cl = await Client(srv.url("/lines")).start()
        await cl.write(b"hello\nh\xc3\xa9llo\n\nlast line")
        await asyncio.sleep(0.3)
        cl.close_stdin()
        got, code = await fut
        rc = await cl.wait()
        expect(got == ["hello", "h\u00e9llo", "", "last line"],
               f"server got {got!r}")
        expect(code == 1000, f"server saw close {code}, want 1000")
        # A binary message is written raw, with nothing added.
        expect(cl.out == b"reply one\n\x01\x02raw", f"stdout {cl.out!r}")
        expect(rc == 0, f"exit {rc}: {cl.stderr()}")
    await check("client stdin lines -> text, EOF -> close 1000, exit 0",
                lines_then_eof())

    async def binary_lines():
        async def handler(ws):
            return [await ws.recv() for _ in range(2)]
        fut = srv.on("/binary", handler)
        cl = await Client(srv.url("/binary"), "--binary", "--lines").start()
        await cl.write(b"ab\xff\n\n")
        cl.close_stdin()
        got = await fut
        rc = await cl.wait()
        expect(got == [b"ab\xff", b""], f"server got {got!r}")
        expect(rc == 0, f"exit {rc}: {cl.stderr()}")
    await check("client --binary --lines sends lines as binary (and empty)",
                binary_lines())

    async def big_line():
        async def handler(ws):
            return await ws.recv()
        fut = srv.on("/bigline", handler)
        cl = await Client(srv.url("/bigline")).start()
        await cl.write(b"z" * BIG + b"\n")
        got = await fut
        cl.close_stdin()
        rc = await cl.wait()
        expect(got == "z" * BIG, f"server got {len(got)} chars")
        expect(rc == 0, f"exit {rc}: {cl.stderr()}")
    await check("client 16 MiB stdin line -> one message", big_line())

    async def print_sizes():
        async def handler(ws):
            for n in SIZES:
                await ws.send("a" * n)
            await ws.send(["frag", "ment", "ed"])
            await ws.send(b"B" * 70000)
            await ws.close(1000, "done")
        srv.on("/sizes", handler)
        cl = await Client(srv.url("/sizes")).start()
        rc = await cl.wait()
        want = b"".join(b"a" * n + b"\n" for n in SIZES)
        want += b"fragmented\n" + b"B" * 70000
        expect(cl.out == want, f"stdout {len(cl.out)} bytes, want {len(want)}")
        expect(rc == 0, f"exit {rc}: {cl.stderr()}")
    await check("client prints sizes 0..65536, fragmented, binary; "
                "server close 1000 -> exit 0", print_sizes())

    async def echo_mode():
        async def handler(ws):
            for m in (["", b"", "h\u00e9llo"] + ["t" * n for n in SIZES] +
                      [os.urandom(n) for n in SIZES] + [os.urandom(BIG)]):
                await ws.send(m)
                got = await ws.recv()
                expect(type(got) is type(m) and got == m,
                       f"echo of {type(m).__name__} {len(m)}: "
                       f"{type(got).__name__} {len(got)}")
            await ws.send(["fr", "ag"])
            expect(await ws.recv() == "frag", "fragmented text")

            async def parts():
                for i in range(4):
                    yield bytes([65 + i]) * 30000
            await ws.send(parts())
            got = await ws.recv()
            expect(got == b"A" * 30000 + b"B" * 30000 + b"C" * 30000 +
                   b"D" * 30000, "fragmented binary")
            waiter = await ws.ping(b"are you there")
            await asyncio.wait_for(waiter, 5)
            await ws.close(1000, "thanks")
            return ws.close_code
        fut = srv.on("/echo", handler)
        cl = await Client(srv.url("/echo"), "--echo").start()
        code = await fut
        rc = await cl.wait()
        expect(code == 1000, f"close {code}")
        expect(rc == 0, f"exit {rc}: {cl.stderr()}")
        expect(cl.out == b"", f"--echo printed {len(cl.out)} bytes")
    await check("client --echo: text/binary/empty, sizes, 16 MiB, "
                "fragments, ping->pong", echo_mode())

    async def negotiation():
        async def handler(ws):
            h = ws.request_headers
            await ws.send(f"{ws.subprotocol}|{h.get('X-Test')}|"
                          f"{h.get('Origin')}")
            await ws.close(1000)
        srv.on("/nego", handler)
        cl = await Client(srv.url("/nego"), "-H", "X-Test:  some value ",
                          "--subprotocol", "chat1", "--subprotocol", "chat2",
                          "--origin", "http://example.test").start()
        rc = await cl.wait()
        expect(cl.out == b"chat2|some value|http://example.test\n",
               f"stdout {cl.out!r}")
        expect(rc == 0, f"exit {rc}: {cl.stderr()}")
    await check("client -H, --subprotocol, --origin", negotiation())

    async def peer_close(code, reason, want_rc):
        async def handler(ws):
            await ws.close(code, reason)
        srv.on(f"/close{code}", handler)
        cl = await Client(srv.url(f"/close{code}")).start()
        rc = await cl.wait()
        expect(rc == want_rc, f"exit {rc}, want {want_rc}: {cl.stderr()}")
        if want_rc == 4:
            expect(str(code) in cl.stderr() and reason in cl.stderr(),
                   f"stderr {cl.stderr()!r}")
    await check("client: server closes 1000 'bye' -> exit 0",
                peer_close(1000, "bye", 0))
    await check("client: server closes 1001 -> exit 0",
                peer_close(1001, "going", 0))
    await check("client: server closes 4000 'custom' -> exit 4, printed",
                peer_close(4000, "custom", 4))

    async def peer_abort():
        async def handler(ws):
            await ws.send("about to vanish")
            await asyncio.sleep(0.2)
            ws.transport.abort()
        srv.on("/abort", handler)
        cl = await Client(srv.url("/abort")).start()
        rc = await cl.wait()
        expect(cl.out == b"about to vanish\n", f"stdout {cl.out!r}")
        expect(rc == 3, f"exit {rc}, want 3: {cl.stderr()}")
    await check("client: server aborts TCP -> exit 3", peer_abort())

    async def sigterm():
        opened = asyncio.get_running_loop().create_future()

        async def handler(ws):
            opened.set_result(True)
            return await closed_code(ws)
        fut = srv.on("/sigterm", handler)
        cl = await Client(srv.url("/sigterm")).start()
        await opened
        cl.proc.send_signal(signal.SIGTERM)
        code = await fut
        rc = await cl.wait()
        expect(code == 1001, f"server saw {code}, want 1001")
        expect(rc == 0, f"exit {rc}: {cl.stderr()}")
    await check("client: SIGTERM -> close 1001, exit 0", sigterm())

    async def too_big():
        async def handler(ws):
            await ws.send("x" * 1000)
            await ws.send("x" * 2000)
            return await closed_code(ws)
        fut = srv.on("/toobig", handler)
        cl = await Client(srv.url("/toobig"), "--max-message", "1K").start()
        code = await fut
        rc = await cl.wait()
        expect(code == 1009, f"server saw {code}, want 1009")
        expect(cl.out == b"x" * 1000 + b"\n", f"stdout {len(cl.out)} bytes")
        expect(rc == 4, f"exit {rc}, want 4: {cl.stderr()}")
    await check("client: message over --max-message -> 1009, exit 4",
                too_big())

    async def refused_handshake():
        cl = await Client(srv.url("/forbidden")).start()
        rc = await cl.wait()
        expect(rc == 1, f"exit {rc}, want 1: {cl.stderr()}")
        expect(cl.stderr() != "", "no error printed")
    await check("client: handshake refused (403) -> exit 1",
                refused_handshake())

    async def connect_refused():
        s = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = s.sockets[0].getsockname()[1]
        s.close()
        await s.wait_closed()
        cl = await Client(f"ws://127.0.0.1:{port}/").start()
        rc = await cl.wait()
        expect(rc == 1, f"exit {rc}, want 1: {cl.stderr()}")
        expect("refused" in cl.stderr(), f"stderr {cl.stderr()!r}")
    await check("client: connection refused -> exit 1", connect_refused())

    async def usage():
        cl = await Client("--no-such-option").start()
        rc = await cl.wait()
        expect(rc == 2, f"exit {rc}, want 2")
        cl = await Client("--help").start()
        rc = await cl.wait()
        expect(rc == 0 and b"exit codes" in cl.out, f"--help exit {rc}")
    await check("client: usage error -> exit 2, --help documents exit codes",
                usage())

    await srv.close()
    await raw_server_vs_client()


async def raw_server_vs_client():
    async def bad_frame(scenario_frames, want_close, args=(), want_rc=4):
        async def scenario(reader, writer):
            for f in scenario_frames:
                writer.write(f)
            await writer.drain()
            code = await read_close(reader)
            writer.write(frame(8, struct.pack("!H", code)))
            await writer.drain()
            return code
        raw = await RawServer(scenario).start()
        cl = await Client(raw.url, *args).start()
        try:
            code = await raw.result
        finally:
            rc = await cl.wait()
            raw.close()
        expect(code == want_close, f"client sent close {code}, "
               f"want {want_close}")
        expect(rc == want_rc, f"exit {rc}, want {want_rc}: {cl.stderr()}")
    await check("client: reserved opcode from server -> 1002",
                bad_frame([frame(3, b"x")], 1002))
    await check("client: masked frame from server -> 1002",
                bad_frame([frame(1, b"x", mask=True)], 1002))
    await check("client: RSV1 from server -> 1002",
                bad_frame([frame(2, b"x", rsv=4)], 1002))
    await check("client: continuation without start -> 1002",
                bad_frame([frame(0, b"x")], 1002))
    await check("client: invalid UTF-8 from server -> 1007",
                bad_frame([frame(1, b"\xc3\x28")], 1007))
    await check("client: raw fragments reassembled, then close 1000",
                raw_fragments())
    await check("client --ping-interval sends pings; no pong -> exit 3",
                ping_interval())


async def raw_fragments():
    async def scenario(reader, writer):
        writer.write(frame(1, b"one ", fin=False) + frame(9, b"mid-ping") +
                     frame(0, b"two ", fin=False) + frame(0, b"three"))
        await writer.drain()
        fin, op, payload = await read_frame(reader)
        expect((op, payload) == (10, b"mid-ping"), f"got op {op} {payload!r}")
        writer.write(frame(8, struct.pack("!H", 1000) + b"done"))
        await writer.drain()
        return await read_close(reader)
    raw = await RawServer(scenario).start()
    cl = await Client(raw.url).start()
    try:
        code = await raw.result
    finally:
        rc = await cl.wait()
        raw.close()
    expect(cl.out == b"one two three\n", f"stdout {cl.out!r}")
    expect(code == 1000, f"client answered close {code}")
    expect(rc == 0, f"exit {rc}: {cl.stderr()}")


async def ping_interval():
    async def scenario(reader, writer):
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        try:
            fin, op, payload = await asyncio.wait_for(read_frame(reader), 3)
        except asyncio.TimeoutError:
            raise AssertionError("no ping within 3 s of --ping-interval 0.5")
        expect(op == 9, f"first frame op {op}, want a ping")
        dt = loop.time() - t0
        # Ignore it: the client must give up after the pong timeout.
        try:
            while await reader.read(65536):
                pass
        except ConnectionError:
            pass
        return dt, loop.time() - t0
    raw = await RawServer(scenario).start()
    cl = await Client(raw.url, "--ping-interval", "0.5").start()
    try:
        first, gone = await raw.result
    finally:
        rc = await cl.wait()
        raw.close()
    expect(first < 2, f"first ping after {first:.2f}s")
    expect(gone < 5, f"dropped after {gone:.2f}s")
    expect(rc == 3, f"exit {rc}, want 3: {cl.stderr()}")


# ---- permessage-deflate (RFC 7692) ----------------------------------------

# Counts the compressed frames websockets decodes (RSV1 set), per
# connection, by wrapping PerMessageDeflate.decode: proof that herald really
# compressed, not just agreed to.
from websockets.extensions import permessage_deflate as _pmd  # noqa: E402

COMPRESSED_IN = {"n": 0}
_orig_decode = _pmd.PerMessageDeflate.decode


def _counting_decode(self, frame, *args, **kw):
    if frame.rsv1:
        COMPRESSED_IN["n"] += 1
    return _orig_decode(self, frame, *args, **kw)


_pmd.PerMessageDeflate.decode = _counting_decode


def deflate_msgs():
    """Small/large, text/binary, compressible and not."""
    js = ('{"id": %d, "channel": "news", "text": "hello world"}, ' * 4000)
    return ["hi", "h\u00e9llo \U0001F600" * 20, js % tuple(range(4000)),
            b"\x00\x01" * 50, bytes(300000), os.urandom(70000), "", b""]


def pmd_agreed(ws):
    return [e for e in ws.extensions if e.name == "permessage-deflate"]


async def deflate_checks():
    echo = await Echo().start()
    plain = await Echo("--no-deflate").start()
    url = echo.url + "/"

    async def py_to_echo(**params):
        ext = None
        if params:
            ext = [_pmd.ClientPerMessageDeflateFactory(**params)]
        COMPRESSED_IN["n"] = 0
        kw = {"extensions": ext} if ext else {"compression": "deflate"}
        async with websockets.connect(url, max_size=None, **kw) as ws:
            agreed = pmd_agreed(ws)
            expect(len(agreed) == 1, f"extensions {ws.extensions!r}")
            for m in deflate_msgs():
                await ws.send(m)
                got = await ws.recv()
                expect(type(got) is type(m) and got == m,
                       f"sent {type(m).__name__} of {len(m)}, got "
                       f"{type(got).__name__} of {len(got)}")
            hdr = ws.response_headers.get("Sec-WebSocket-Extensions", "")
        # The compressible messages at or above the threshold came back
        # compressed (random bytes may go either way).
        expect(COMPRESSED_IN["n"] >= 4, f"{COMPRESSED_IN['n']} compressed "
               "frames from herald echo")
        return True, f"herald answered {hdr!r}"

    await check("deflate: py->echo negotiated, 8 messages round-trip "
                "compressed", py_to_echo())
    await check("deflate: py->echo no_context_takeover both ways, windows "
                "10/10", py_to_echo(server_no_context_takeover=True,
                                    client_no_context_takeover=True,
                                    server_max_window_bits=10,
                                    client_max_window_bits=10))
    await check("deflate: py->echo server_max_window_bits=9, "
                "client_max_window_bits=9",
                py_to_echo(server_max_window_bits=9,
                           client_max_window_bits=9))

    async def py_to_plain_echo():
        async with websockets.connect(plain.url + "/", max_size=None,
                                      compression="deflate") as ws:
            expect(pmd_agreed(ws) == [], f"extensions {ws.extensions!r}")
            await ws.send("x" * 1000)
            expect(await ws.recv() == "x" * 1000, "echo")
    await check("deflate: echo --no-deflate declines the offer",
                py_to_plain_echo())

    srv = await PyServer().start()

    async def echo_client(args, want):
        async def handler(ws):
            COMPRESSED_IN["n"] = 0
            agreed = pmd_agreed(ws)
            for m in deflate_msgs():
                await ws.send(m)
                got = await ws.recv()
                expect(type(got) is type(m) and got == m,
                       f"sent {type(m).__name__} of {len(m)}, got "
                       f"{type(got).__name__} of {len(got)}")
            offer = ws.request_headers.get("Sec-WebSocket-Extensions")
            n = COMPRESSED_IN["n"]
            await ws.close(1000)
            return agreed, offer, n
        fut = srv.on("/deflate", handler)
        cl = await Client(srv.url("/deflate"), "--echo", *args).start()
        agreed, offer, n = await fut
        rc = await cl.wait()
        expect(rc == 0, f"exit {rc}: {cl.stderr()}")
        if want:
            expect(len(agreed) == 1, f"no permessage-deflate; offer {offer!r}")
            expect(n >= 4, f"{n} compressed frames from herald client")
        else:
            expect(agreed == [] and offer is None, f"offer {offer!r}")
            expect(n == 0, f"{n} compressed frames")
        return True, f"herald offered {offer!r}"
    await check("deflate: client --deflate --echo <- py server, negotiated, "
                "8 messages round-trip compressed",
                echo_client(["--deflate"], True))
    await check("deflate: client without --deflate offers nothing",
                echo_client([], False))
    await srv.close()
    for e in (echo, plain):
        rc = await e.stop()
        expect(rc == 0, f"echo exit {rc}")


# ---- TLS (wss://), both ways ---------------------------------------------------


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def make_certs(d):
    """A CA, a server certificate it signed for localhost/127.0.0.1, an
    expired one and a self-signed (untrusted) one; returns their paths."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem",
            "-days", "2", "-subj", "/CN=Herald Interop CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign", cwd=d)
    with open(os.path.join(d, "san.ext"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name, days in (("good", "2"), ("expired", "-1")):
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", "/CN=localhost", cwd=d)
        # A negative -days puts notAfter in the past (openssl x509 allows it).
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem",
                "-CAkey", "ca.key", "-CAcreateserial", "-days", days,
                "-extfile", "san.ext", "-out", f"{name}.pem", cwd=d)
    openssl("req", "-x509", *ec, "-keyout", "self.key", "-out", "self.pem",
            "-days", "2", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", cwd=d)
    return {n: os.path.join(d, n) for n in os.listdir(d)}


async def tls_checks():
    if shutil.which("openssl") is None:
        report("tls: openssl CLI", False, "not installed")
        return
    tmp = tempfile.mkdtemp(prefix="herald-tls-")
    try:
        await tls_checks_in(make_certs(tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def tls_checks_in(c):
    echo = await Echo("--tls-cert", c["good.pem"], "--tls-key",
                      c["good.key"]).start()
    plain = await Echo().start()
    wss = f"wss://localhost:{echo.port}/"
    trust = ssl.create_default_context(cafile=c["ca.pem"])

    async def py_to_echo():
        async with websockets.connect(wss, ssl=trust, max_size=None,
                                      compression="deflate") as ws:
            tls = ws.transport.get_extra_info("ssl_object")
            msgs = ["hello over TLS", b"\x00\xff" * 40000,
                    "é" * 300000, b""]
            for m in msgs:
                await ws.send(m)
                got = await ws.recv()
                expect(type(got) is type(m) and got == m,
                       f"sent {type(m).__name__} of {len(m)}")
            ver = tls.version()
            alpn = tls.selected_alpn_protocol()
            await ws.close(1000, "bye")
            expect(ws.close_code == 1000, f"close {ws.close_code}")
        expect(ver in ("TLSv1.2", "TLSv1.3"), f"version {ver}")
        return True, f"{ver}, deflate, ALPN {alpn}"
    await check("tls: py (verifying) -> echo --tls-cert: text, binary, "
                "600 KB UTF-8, empty, close", py_to_echo())

    async def py_tls12():
        ctx = ssl.create_default_context(cafile=c["ca.pem"])
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_alpn_protocols(["http/1.1"])
        async with websockets.connect(wss, ssl=ctx) as ws:
            await ws.send("twelve")
            expect(await ws.recv() == "twelve", "echo")
            tls = ws.transport.get_extra_info("ssl_object")
            expect(tls.version() == "TLSv1.2", tls.version())
            expect(tls.selected_alpn_protocol() == "http/1.1",
                   f"ALPN {tls.selected_alpn_protocol()}")
    await check("tls: py -> echo over TLS 1.2 with ALPN http/1.1", py_tls12())

    async def py_old_tls_refused():
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        try:
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        except (ValueError, ssl.SSLError):
            return True, "this OpenSSL cannot even offer TLS 1.1"
        try:
            async with websockets.connect(wss, ssl=ctx, open_timeout=5):
                pass
        except (ssl.SSLError, OSError) as e:
            return True, f"refused: {type(e).__name__}"
        return False, "TLS 1.1 accepted"
    await check("tls: echo refuses TLS 1.0/1.1", py_old_tls_refused())

    async def py_plain_http_to_tls():
        reader, writer = await asyncio.open_connection("127.0.0.1", echo.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        await writer.drain()
        got = await asyncio.wait_for(reader.read(4096), 10)
        writer.close()
        # Not an HTTP answer: a TLS alert record (0x15) or a plain close.
        expect(not got.startswith(b"HTTP/"), f"answered {got[:40]!r}")
        expect(echo.proc.returncode is None, "echo died")
        async with websockets.connect(wss, ssl=trust) as ws:
            await ws.send("after")
            expect(await ws.recv() == "after", "echo after the bad peer")
        return True, f"got {len(got)} bytes, then EOF"
    await check("tls: plain HTTP to the TLS port is dropped; server goes on",
                py_plain_http_to_tls())

    async def py_tls_to_plain():
        try:
            async with websockets.connect(f"wss://127.0.0.1:{plain.port}/",
                                          ssl=trust, open_timeout=5):
                pass
        except (ssl.SSLError, OSError, websockets.InvalidMessage,
                websockets.InvalidHandshake) as e:
            expect(plain.proc.returncode is None, "plain echo died")
            return True, f"{type(e).__name__}"
        return False, "handshake succeeded"
    await check("tls: TLS to a plain port fails cleanly", py_tls_to_plain())

    # herald client -> a websockets server over TLS.
    servers = []

    async def py_server(cert, key):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(c[cert], c[key])
        srv = PyServer()
        srv.server = await websockets.serve(srv._handler, "127.0.0.1", 0,
                                            max_size=None, ssl=ctx)
        srv.port = srv.server.sockets[0].getsockname()[1]
        servers.append(srv)
        return srv

    good = await py_server("good.pem", "good.key")
    expired = await py_server("expired.pem", "expired.key")
    untrusted = await py_server("self.pem", "self.key")

    async def client_ok(args, host="localhost"):
        async def handler(ws):
            tls = ws.transport.get_extra_info("ssl_object")
            sni = tls.server_hostname if tls else None
            for m in ("one", b"\x01" * 70000, "ünïcode"):
                await ws.send(m)
                got = await ws.recv()
                expect(got == m, f"echo of {type(m).__name__} {len(m)}")
            await ws.close(1000)
            return sni
        fut = good.on("/tls", handler)
        cl = await Client(f"wss://{host}:{good.port}/tls", "--echo",
                          *args).start()
        sni = await fut
        rc = await cl.wait()
        expect(rc == 0, f"exit {rc}: {cl.stderr()}")
        return True, f"SNI {sni!r}"
    await check("tls: client --ca -> py wss server, echo, close 1000",
                client_ok(["--ca", c["ca.pem"], "--deflate"]))
    await check("tls: client --ca --server-name localhost via 127.0.0.1",
                client_ok(["--ca", c["ca.pem"], "--server-name", "localhost"],
                          host="127.0.0.1"))

    async def client_fails(srv, args, want_err, host="localhost"):
        cl = await Client(f"wss://{host}:{srv.port}/tls", "--echo",
                          *args).start()
        rc = await cl.wait()
        err = cl.stderr()
        expect(rc == 1, f"exit {rc} (want 1, connect failed): {err}")
        expect(any(w in err.lower() for w in want_err),
               f"stderr {err!r} names none of {want_err}")
        return True, err
    await check("tls: client refuses a certificate for another host",
                client_fails(good, ["--ca", c["ca.pem"], "--server-name",
                                    "wrong.example"],
                             ["hostname", "host name", "mismatch"]))
    await check("tls: client refuses an expired certificate",
                client_fails(expired, ["--ca", c["ca.pem"]], ["expired"]))
    await check("tls: client refuses an untrusted (self-signed) certificate",
                client_fails(untrusted, [], ["self-signed", "self signed",
                                             "issuer", "verify"]))
    await check("tls: client refuses a chain its --ca does not sign",
                client_fails(untrusted, ["--ca", c["ca.pem"]],
                             ["self-signed", "self signed", "issuer",
                              "verify"]))

    async def client_insecure():
        async def handler(ws):
            await ws.send("insecure but asked for")
            await ws.close(1000)
        untrusted.on("/tls", handler)
        cl = await Client(f"wss://localhost:{untrusted.port}/tls",
                          "--insecure").start()
        cl.close_stdin()
        rc = await cl.wait()
        expect(rc == 0, f"exit {rc}: {cl.stderr()}")
        expect(cl.out == b"insecure but asked for\n", f"stdout {cl.out!r}")
    await check("tls: client --insecure accepts an untrusted certificate",
                client_insecure())

    async def client_wss_to_plain_server():
        plain_srv = PyServer()
        plain_srv.server = await websockets.serve(plain_srv._handler,
                                                  "127.0.0.1", 0)
        port = plain_srv.server.sockets[0].getsockname()[1]
        servers.append(plain_srv)
        cl = await Client(f"wss://127.0.0.1:{port}/tls", "--insecure",
                          "--connect-timeout", "5").start()
        rc = await cl.wait()
        expect(rc == 1, f"exit {rc}: {cl.stderr()}")
        return True, cl.stderr()
    await check("tls: client wss:// to a plain server fails with a reason",
                client_wss_to_plain_server())

    for srv in servers:
        await srv.close()
    for e in (echo, plain):
        rc = await e.stop()
        expect(rc == 0, f"echo exit {rc}")


async def main():
    await client_vs_echo()
    await server_vs_client()
    await deflate_checks()
    await tls_checks()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: run_python.py HERALD_BINARY", file=sys.stderr)
        sys.exit(2)
    HERALD = os.path.abspath(sys.argv[1])
    print(f"python3-websockets {websockets.__version__}, herald {HERALD}")
    try:
        asyncio.run(asyncio.wait_for(main(), 600))
    except Exception as e:  # noqa: BLE001
        report("run", False, f"{type(e).__name__}: {e}")
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
