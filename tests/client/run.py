#!/usr/bin/env python3
"""Tests of `herald client` in a pipe, against small servers of our own
(tests/client/wslib.py): the end of stdin waiting for a slow server, -1,
binary input as whole messages, chunks and length-prefixed, the output
formats, --listen, an HTTP CONNECT proxy, --reconnect, TLS with client
certificates, -v, and what every failure says.

    run.py path/to/herald

Prints one line per test and "N passed, N failed"; exit 0 when all pass.
"""

import base64
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

from wslib import (Closed, Herald, Proxy, Results, Server, connect, expect,
                   u32, wire)

HERALD = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else "herald"


def client(*args, **kw):
    return Herald(HERALD, "client", *args, **kw)


# ---- the end of stdin ------------------------------------------------------

def slow_server_reply():
    """printf 'hi\\n' | herald client: the reply 0.4 s later is printed."""
    def handler(p):
        got = p.recv_text()
        time.sleep(0.4)
        p.send_text("re: " + got)
        p.wait_close()
    srv = Server(handler)
    c = client(srv.url(), stdin=b"hi\n")
    rc = c.wait()
    expect(rc == 0, "exit %d: %r" % (rc, c.err))
    expect(c.out == b"re: hi\n", "stdout %r" % c.out)
    srv.stop()


def linger_zero_closes_at_once():
    """--linger 0 closes at the end of stdin: the late reply is lost, and
    the server sees close 1000."""
    codes = []

    def handler(p):
        p.recv_text()
        codes.append(p.wait_close())
    srv = Server(handler)
    c = client("--linger", "0", srv.url(), stdin=b"hi\n")
    rc = c.wait()
    time.sleep(0.2)
    expect(rc == 0 and c.out == b"", "exit %d, stdout %r" % (rc, c.out))
    expect(codes == [1000], "server saw %r" % codes)
    srv.stop()


def linger_restarts_per_message():
    """Each reply restarts the linger: five replies 0.3 s apart, with
    --linger 0.6, all arrive although they take 1.5 s."""
    def handler(p):
        p.recv_text()
        for i in range(5):
            time.sleep(0.3)
            p.send_text("r%d" % i)
        p.wait_close()
    srv = Server(handler)
    c = client("--linger", "0.6", srv.url(), stdin=b"go\n")
    rc = c.wait()
    expect(rc == 0, "exit %d: %r" % (rc, c.err))
    expect(c.out == b"r0\nr1\nr2\nr3\nr4\n", "stdout %r" % c.out)
    srv.stop()


def no_close_waits_for_server():
    """--no-close: after stdin ends, the client stays until the server
    closes (here after 1.5 s, longer than the default linger)."""
    def handler(p):
        p.recv_text()
        time.sleep(1.5)
        p.send_text("late")
        p.close(1000, b"done")
    srv = Server(handler)
    t = time.time()
    c = client("--no-close", srv.url(), stdin=b"x\n")
    rc = c.wait()
    expect(rc == 0, "exit %d: %r" % (rc, c.err))
    expect(c.out == b"late\n", "stdout %r" % c.out)
    expect(time.time() - t >= 1.4, "left too early")
    srv.stop()


def one_shot():
    """-1 sends the first line only, prints the first reply, closes 1000."""
    seen, codes = [], []

    def handler(p):
        seen.append(p.recv_text())
        p.send_text("first")
        p.send_text("second")
        codes.append(p.wait_close())
    srv = Server(handler)
    c = client("-1", srv.url(), stdin=b"one\ntwo\n", close_stdin=False)
    rc = c.wait()
    time.sleep(0.2)
    expect(rc == 0, "exit %d: %r" % (rc, c.err))
    expect(c.out == b"first\n", "stdout %r" % c.out)
    expect(seen == ["one"], "server got %r" % seen)
    expect(codes == [1000], "server saw %r" % codes)
    srv.stop()


def execute_option():
    """-x sends its argument (stdin is not read)."""
    seen = []

    def handler(p):
        seen.append(p.recv_text())
        seen.append(p.recv_text())
        p.send_text("ok")
        p.wait_close()
    srv = Server(handler)
    c = client("-x", "a", "-x", "b", srv.url(), close_stdin=False)
    rc = c.wait()
    expect(rc == 0 and c.out == b"ok\n", "exit %d out %r" % (rc, c.out))
    expect(seen == ["a", "b"], "server got %r" % seen)
    srv.stop()


# ---- binary ----------------------------------------------------------------

def binary_whole_roundtrip():
    """--binary: 3000 random bytes are one message, and the echo comes back
    as exactly those bytes."""
    got = []

    def handler(p):
        op, data = p.recv()
        got.append((op, len(data)))
        p.send(op, data)
        p.wait_close()
    srv = Server(handler)
    data = os.urandom(3000)
    c = client("--binary", srv.url(), stdin=data)
    rc = c.wait()
    expect(rc == 0, "exit %d: %r" % (rc, c.err))
    expect(got == [(wire.OP_BINARY, 3000)], "server got %r" % got)
    expect(c.out == data, "stdout %d bytes, not the 3000 sent" % len(c.out))
    srv.stop()


def binary_chunks_and_formats():
    """--chunk 1000: 2500 bytes are 1000, 1000, 500; --binary-output hex and
    base64 print one line each."""
    got = []

    def handler(p):
        for _ in range(3):
            op, data = p.recv()
            got.append(len(data))
            p.send(op, data)
        p.wait_close()
    data = os.urandom(2500)
    for fmt, enc in (("hex", lambda b: b.hex()),
                     ("base64", lambda b: base64.b64encode(b).decode())):
        got.clear()
        srv = Server(handler)
        c = client("--binary", "--chunk", "1000", "--binary-output", fmt,
                   srv.url(), stdin=data)
        rc = c.wait()
        expect(rc == 0, "exit %d: %r" % (rc, c.err))
        expect(got == [1000, 1000, 500], "server got %r" % got)
        want = "".join(enc(data[i:i + 1000]) + "\n"
                       for i in range(0, 2500, 1000))
        expect(c.out.decode() == want, "%s stdout %r" % (fmt, c.out[:80]))
        srv.stop()


def length_prefixed():
    """--length-prefixed: 4-byte big-endian lengths cut the messages; a
    stream cut inside one is an error."""
    got = []

    def handler(p):
        try:
            while True:
                got.append(p.recv()[1])
        except Closed:
            pass
    srv = Server(handler)
    msgs = [b"", b"a", os.urandom(70000)]
    c = client("--binary", "--length-prefixed", "--linger", "0", srv.url(),
               stdin=b"".join(u32(len(m)) + m for m in msgs))
    rc = c.wait()
    time.sleep(0.2)
    expect(rc == 0, "exit %d: %r" % (rc, c.err))
    expect(got == msgs, "server got %r" % [len(m) for m in got])
    c = client("--binary", "--length-prefixed", "--linger", "0", srv.url(),
               stdin=u32(10) + b"abc")
    rc = c.wait()
    expect(rc == 2 and b"inside a length-prefixed" in c.err,
           "exit %d: %r" % (rc, c.err))
    srv.stop()


def pretty_and_timestamps():
    def handler(p):
        p.send_text('{"a":[1,2],"b":{"c":"x"}}')
        p.send_text("not json")
        p.close()
    srv = Server(handler)
    c = client("--pretty", "--timestamps", srv.url(), close_stdin=False)
    rc = c.wait()
    out = c.out.decode()
    expect(rc == 0, "exit %d: %r" % (rc, c.err))
    lines = out.splitlines()
    expect(len(lines) == 7, "lines %r" % lines)
    expect(lines[0][2] == ":" and lines[0][12] == " " and
           lines[0].endswith("{"), "first line %r" % lines[0])
    expect(lines[1] == '  "a": [1, 2],', "second line %r" % lines[1])
    expect(lines[-1].endswith(" not json"), "last line %r" % lines[-1])
    srv.stop()


# ---- --listen --------------------------------------------------------------

def listen_mode():
    """--listen 127.0.0.1:0 accepts one client: stdin goes to it, its
    messages to stdout; a second client finds the port closed."""
    c = client("--listen", "127.0.0.1:0", "--no-close", close_stdin=False)
    line = c.read_stderr_line("listening on")
    port = int(line.rsplit(":", 1)[1])
    peer = connect(port, "/any")
    peer.send_text("from peer")
    c.write(b"from stdin\n")
    got = peer.recv_text()
    expect(got == "from stdin", "peer got %r" % got)
    try:
        connect(port)
        raise AssertionError("a second connection was accepted")
    except (ConnectionRefusedError, Closed, AssertionError) as e:
        if isinstance(e, AssertionError) and "second" in str(e):
            raise
    peer.close(1000, b"bye")
    c.close_stdin()
    rc = c.wait()
    expect(rc == 0, "exit %d: %r" % (rc, c.err))
    expect(c.out == b"from peer\n", "stdout %r" % c.out)


def listen_ignores_plain_http():
    """--listen answers a plain HTTP request with 426 and keeps waiting."""
    import socket
    c = client("--listen", "127.0.0.1:0", "--linger", "0", "-x", "hello")
    port = int(c.read_stderr_line("listening on").rsplit(":", 1)[1])
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    resp = s.recv(4096)
    s.close()
    expect(resp.startswith(b"HTTP/1.1 426"), "got %r" % resp[:40])
    peer = connect(port)
    expect(peer.recv_text() == "hello", "no hello")
    code = peer.wait_close()
    rc = c.wait()
    expect(rc == 0 and code == 1000, "exit %d, close %s" % (rc, code))


# ---- proxy -----------------------------------------------------------------

def proxy_option_and_env():
    """--proxy and http_proxy tunnel through CONNECT; NO_PROXY and
    --no-proxy go direct."""
    def handler(p):
        p.send_text("via " + p.recv_text())
        p.wait_close()
    srv = Server(handler)
    px = Proxy()
    c = client("--proxy", "http://127.0.0.1:%d" % px.port, srv.url(),
               stdin=b"option\n")
    rc = c.wait()
    expect(rc == 0 and c.out == b"via option\n", "exit %d out %r err %r" %
           (rc, c.out, c.err))
    expect(len(px.requests) == 1 and px.requests[0].startswith(
        b"CONNECT 127.0.0.1:%d HTTP/1.1" % srv.port), "proxy saw %r" %
        px.requests)
    env = {"http_proxy": "http://127.0.0.1:%d" % px.port}
    c = client(srv.url(), stdin=b"env\n", env=env)
    rc = c.wait()
    expect(rc == 0 and c.out == b"via env\n", "env: %r %r" % (c.out, c.err))
    expect(len(px.requests) == 2, "proxy saw %d" % len(px.requests))
    env["NO_PROXY"] = "localhost,127.0.0.1"
    c = client(srv.url(), stdin=b"direct\n", env=env)
    rc = c.wait()
    expect(rc == 0 and c.out == b"via direct\n", "no_proxy: %r" % c.err)
    expect(len(px.requests) == 2, "NO_PROXY still used the proxy")
    px.stop()
    srv.stop()


def proxy_auth_and_refusal():
    """user:password@ in the proxy URL becomes Proxy-Authorization; a 407
    is reported with its status."""
    def handler(p):
        p.send_text(p.recv_text())
        p.wait_close()
    srv = Server(handler)
    px = Proxy(auth=b"ann:s3cret")
    c = client("--proxy", "http://ann:s3cret@127.0.0.1:%d" % px.port,
               srv.url(), stdin=b"hi\n")
    rc = c.wait()
    expect(rc == 0 and c.out == b"hi\n", "with auth: %r" % c.err)
    c = client("--proxy", "http://127.0.0.1:%d" % px.port, srv.url(),
               stdin=b"hi\n")
    rc = c.wait()
    expect(rc == 1 and b"refused CONNECT" in c.err and b"407" in c.err,
           "exit %d: %r" % (rc, c.err))
    px.stop()
    srv.stop()


# ---- reconnect -------------------------------------------------------------

def reconnect_after_loss():
    """--reconnect: the server drops the first connection without a close
    frame; the client connects again and goes on reading stdin."""
    seen = []

    def handler(p):
        n = len(seen)
        seen.append(n)
        p.send_text("hello %d" % n)
        if n == 0:
            p.sock.close()  # lost, no close frame
            return
        got = p.recv_text()
        p.send_text("got " + got)
        p.wait_close()
    srv = Server(handler)
    c = client("--reconnect=0.2", srv.url(), close_stdin=False)
    deadline = time.time() + 8
    while len(seen) < 2 and time.time() < deadline:
        time.sleep(0.05)
    expect(len(seen) == 2, "connections: %r" % seen)
    time.sleep(0.2)
    c.write(b"after\n")
    time.sleep(0.5)
    c.p.send_signal(signal.SIGTERM)
    rc = c.wait()
    expect(c.out == b"hello 0\nhello 1\ngot after\n", "stdout %r" % c.out)
    expect(b"reconnecting in 0.2 s" in c.err, "stderr %r" % c.err)
    expect(rc == 0, "exit %d: %r" % (rc, c.err))
    srv.stop()


def reconnect_when_refused():
    """--reconnect also retries a server that is not there yet."""
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    c = client("--reconnect=0.2", "ws://127.0.0.1:%d/" % port,
               close_stdin=False)
    time.sleep(0.7)
    c.p.send_signal(signal.SIGTERM)
    rc = c.wait()
    expect(c.err.count(b"reconnecting in") >= 2, "stderr %r" % c.err)
    expect(rc == 1, "exit %d" % rc)


# ---- TLS ---------------------------------------------------------------------

def make_certs(d):
    """A CA, a server certificate for 127.0.0.1 and a client certificate,
    with the openssl CLI."""
    def run(*args):
        subprocess.run(["openssl"] + list(args), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    j = lambda n: os.path.join(d, n)  # noqa: E731
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", "/CN=test ca", "-keyout", j("ca.key"), "-out", j("ca.pem"))
    with open(j("ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=" + name,
            "-keyout", j(name + ".key"), "-out", j(name + ".csr"))
        run("x509", "-req", "-in", j(name + ".csr"), "-CA", j("ca.pem"),
            "-CAkey", j("ca.key"), "-CAcreateserial", "-days", "2",
            "-extfile", j("ext"), "-out", j(name + ".pem"))
    return j


def tls_client_certificate():
    """wss:// with --ca and --cert/--key against a server that wants a
    client certificate; without --cert the handshake fails; without --ca
    the error names the certificate problem and -k; ws:// to the TLS port
    and wss:// to a plain port say which scheme to use."""
    with tempfile.TemporaryDirectory() as d:
        j = make_certs(d)

        def handler(p):
            p.send_text("tls " + p.recv_text())
            p.wait_close()
        srv = Server(handler, tls=(j("server.pem"), j("server.key"),
                                   j("ca.pem")))
        url = "wss://127.0.0.1:%d/" % srv.port
        c = client("--ca", j("ca.pem"), "--cert", j("client.pem"), "--key",
                   j("client.key"), url, stdin=b"hi\n")
        rc = c.wait()
        expect(rc == 0 and c.out == b"tls hi\n", "exit %d %r" % (rc, c.err))
        c = client("--ca", j("ca.pem"), url, stdin=b"hi\n")
        rc = c.wait()
        expect(rc in (1, 3) and c.out == b"", "no cert: exit %d" % rc)
        c = client(url, stdin=b"hi\n")
        rc = c.wait()
        expect(rc == 1 and b"did not verify" in c.err and b"-k" in c.err,
               "no ca: %r" % c.err)
        c = client("ws://127.0.0.1:%d/" % srv.port, stdin=b"hi\n")
        rc = c.wait()
        expect(rc == 1 and b"wss://" in c.err, "ws to tls: %r" % c.err)
        srv.stop()
        # A plain HTTP server answers the ClientHello with a 400.
        import socket
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        ls.listen(1)

        def plain_http():
            s, _ = ls.accept()
            s.recv(4096)
            s.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0"
                      b"\r\n\r\n")
            s.close()
        threading.Thread(target=plain_http, daemon=True).start()
        c = client("wss://127.0.0.1:%d/" % ls.getsockname()[1],
                   stdin=b"hi\n")
        rc = c.wait()
        ls.close()
        expect(rc == 1 and b"did not answer in TLS" in c.err and
               b"ws://" in c.err, "wss to plain: %r" % c.err)
        c = client("--cert", j("nope.pem"), url, stdin=b"")
        rc = c.wait()
        expect(rc == 2 and b"nope.pem" in c.err, "bad cert: %r" % c.err)


# ---- what is said ------------------------------------------------------------

def verbose_heads_and_headers():
    """-v shows both heads; the URL's user:password becomes Basic auth and
    a User-Agent is sent."""
    srv = Server(lambda p: p.wait_close())
    c = client("-v", "ws://ann:p%40ss@127.0.0.1:" + str(srv.port) +
               "/path?q=1", stdin=b"")
    rc = c.wait()
    err = c.err.decode()
    expect(rc == 0, "exit %d: %s" % (rc, err))
    expect("> GET /path?q=1 HTTP/1.1" in err, "request head: %s" % err)
    expect("< HTTP/1.1 101 Switching Protocols" in err, "response: %s" % err)
    expect("p%40ss" not in err.split("connected to", 1)[-1],
           "password shown: %s" % err)
    _, headers = wire.parse_head(srv.heads[0])
    want = "Basic " + base64.b64encode(b"ann:p@ss").decode()
    expect(headers["authorization"] == [want], "auth %r" % headers)
    expect(headers["user-agent"][0].startswith("herald-client/"),
           "user agent %r" % headers.get("user-agent"))
    srv.stop()


def errors_name_the_problem():
    srv = Server(None, refuse=("403 Forbidden", b"token required"))
    cases = [
        (["http://127.0.0.1:1/"], 2, b"use ws://"),
        (["https://127.0.0.1:1/"], 2, b"use wss://"),
        (["127.0.0.1:9001"], 2, b"write ws://127.0.0.1:9001"),
        (["ws://127.0.0.1:70000/"], 2, b"port '70000'"),
        (["ws://[::1/"], 2, b"without a ']'"),
        (["ftp://x/"], 2, b"unknown scheme 'ftp://'"),
        (["--proxy", "socks5://127.0.0.1:1", "ws://127.0.0.1:1/"], 2,
         b"must be http://"),
        ([srv.url()], 1, b"refused the WebSocket handshake: 403 Forbidden "
         b"(\"token required\")"),
        (["--listen", "127.0.0.1:notaport"], 2, b"'notaport'"),
    ]
    for args, want_rc, want in cases:
        c = client(*args, stdin=b"")
        rc = c.wait()
        expect(rc == want_rc and want in c.err,
               "%s: exit %d, stderr %r" % (args, rc, c.err))
    srv.stop()


def main():
    r = Results()
    tests = [
        ("pipe: a slow server's reply is printed before the close",
         slow_server_reply),
        ("pipe: --linger 0 closes at once with 1000", linger_zero_closes_at_once),
        ("pipe: every reply restarts --linger", linger_restarts_per_message),
        ("pipe: --no-close waits for the server", no_close_waits_for_server),
        ("-1: one message, the first reply, close 1000", one_shot),
        ("-x: messages from the command line", execute_option),
        ("--binary: stdin is one message; raw output is the bytes",
         binary_whole_roundtrip),
        ("--chunk: fixed-size messages; hex and base64 output",
         binary_chunks_and_formats),
        ("--length-prefixed: messages and a cut stream", length_prefixed),
        ("--pretty and --timestamps", pretty_and_timestamps),
        ("--listen: one connection, both ways", listen_mode),
        ("--listen: plain HTTP gets 426, the next upgrade works",
         listen_ignores_plain_http),
        ("proxy: --proxy, http_proxy, NO_PROXY", proxy_option_and_env),
        ("proxy: Proxy-Authorization and a 407", proxy_auth_and_refusal),
        ("--reconnect after a lost connection", reconnect_after_loss),
        ("--reconnect while the server is down", reconnect_when_refused),
        ("TLS: --ca, --cert/--key, and the scheme mix-ups",
         tls_client_certificate),
        ("-v heads, Basic auth from the URL, User-Agent",
         verbose_heads_and_headers),
        ("errors name the URL part, the status and the reason",
         errors_name_the_problem),
    ]
    only = sys.argv[2] if len(sys.argv) > 2 else None
    for name, fn in tests:
        if only and only not in name:
            continue
        r.run(name, fn)
    threading.Event().wait(0.1)
    return r.summary()


if __name__ == "__main__":
    sys.exit(main())
