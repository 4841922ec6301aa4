#!/usr/bin/env python3
"""Tests of what `herald bench` says when a run fails, and of --rate, p90,
p95, the progress line and the `limit` line, against `herald echo`,
`herald serve` and small servers of our own. Runs are short (about a
second each) and every server listens on 127.0.0.1.

    bench.py path/to/herald

Prints one line per test and "N passed, N failed"; exit 0 when all pass.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

from wslib import Closed, Results, Server, expect

HERALD = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else "herald"
SHORT = ["--duration", "1", "--warmup", "0.2"]


def bench(*args, timeout=30):
    p = subprocess.run([HERALD, "bench"] + list(args), capture_output=True,
                       text=True, timeout=timeout)
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    result = json.loads(lines[-1]) if lines else None
    return p.returncode, p.stdout, p.stderr, result


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Proc:
    """A herald server of ours; waits for its "listening on" line."""

    def __init__(self, *args):
        self.p = subprocess.Popen([HERALD] + list(args),
                                  stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 10
        self.port = None
        while time.time() < deadline:
            line = self.p.stdout.readline()
            if not line:
                break
            if "listening on" in line:
                self.port = int(line.strip().rsplit(":", 1)[1].split()[0])
                break
        expect(self.port, "the server did not start")

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


def nothing_listening():
    """No server: exit 1, no latency figure (n/a, null), no throughput."""
    port = free_port()
    rc, out, err, r = bench("ws://127.0.0.1:%d/" % port, *SHORT)
    expect(rc == 1, "exit %d" % rc)
    expect("p50 n/a" in out and "throughput    n/a (no connection opened)"
           in out, out)
    expect(" 0.0 us" not in out, "a zero latency is printed:\n" + out)
    expect(r["valid"] is False and r["latency_us"]["p50"] is None and
           r["msgs_per_s"] is None, r)
    expect("connect failed" in err, err)


def wrong_answers():
    """A server that answers with other bytes: an error, not a speed."""
    def handler(p):
        try:
            while True:
                op, data = p.recv()
                p.send(op, data[::-1] + b"!")
        except Closed:
            pass
    srv = Server(handler)
    rc, out, err, r = bench(srv.url(), *SHORT)
    expect(rc == 1, "exit %d" % rc)
    expect("not an echo" in err, err)
    expect("throughput    n/a (the server's replies were not echoes)" in out,
           out)
    expect(r["valid"] is False and r["msgs_per_s"] is None and
           r["bad_echoes"] > 0, r)
    srv.stop()


def rate_and_limit():
    """--rate 300: open loop, the rate is reached, p90/p95 are there and
    the limit is "none"; --server-pid gives the server's CPU."""
    echo = Proc("echo", "--listen", "127.0.0.1:0")
    try:
        rc, out, err, r = bench("ws://127.0.0.1:%d/" % echo.port, "--rate",
                                "300", "--connections", "3",
                                "--server-pid", str(echo.p.pid), *SHORT)
    finally:
        echo.stop()
    expect(rc == 0, "exit %d: %s" % (rc, err))
    expect(270 <= r["msgs_per_s"] <= 330, "rate %s" % r["msgs_per_s"])
    lat = r["latency_us"]
    expect(lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"], lat)
    expect(r["limit"] == "none", r["limit"])
    expect(r["server_cpu_s"] is not None, r)
    expect("open loop at 300/s" in out and "limit         none" in out, out)


def closed_loop_limit():
    """A closed-loop run names a limit (client, server, machine or round
    trips), never "n/a"."""
    echo = Proc("echo", "--listen", "127.0.0.1:0")
    try:
        rc, out, err, r = bench("ws://127.0.0.1:%d/" % echo.port,
                                "--server-pid", str(echo.p.pid), *SHORT)
    finally:
        echo.stop()
    expect(rc == 0, "exit %d: %s" % (rc, err))
    expect(r["limit"] in ("client", "server", "machine", "latency"), r)
    expect("  limit         " in out, out)


def progress_on_a_terminal():
    """Under a pseudo-terminal (script(1)) a progress line is redrawn on
    stderr; in a pipe there is none."""
    if shutil.which("script") is None:
        print("  (script(1) missing: the terminal half is not checked)")
        return
    echo = Proc("echo", "--listen", "127.0.0.1:0")
    try:
        cmd = "%s bench ws://127.0.0.1:%d/ --duration 2 --warmup 0.2" % (
            HERALD, echo.port)
        # Bytes, not text: universal newlines would turn "\r" into "\n".
        p = subprocess.run(["script", "-qec", cmd, "/dev/null"],
                           capture_output=True, timeout=30)
        rc, out, err, r = bench("ws://127.0.0.1:%d/" % echo.port, *SHORT)
    finally:
        echo.stop()
    expect(p.returncode == 0, "under script: exit %d" % p.returncode)
    expect(b"\r\x1b[K" in p.stdout and b"msgs/s, p50" in p.stdout,
           "no progress line: %r" % p.stdout[:300])
    expect("\r" not in err, "progress in a pipe: %r" % err)


def fanout_default_serve():
    """Against herald serve without --demo the default prefix's namespace
    does not exist: every subscribe is refused, and the run says why (the
    default prefix needs --demo) and stops."""
    srv = Proc("serve", "--listen", "127.0.0.1:0")
    try:
        url = "ws://127.0.0.1:%d/connection/websocket" % srv.port
        rc, out, err, r = bench(url, "--mode", "fanout", "--connections",
                                "10", *SHORT)
    finally:
        srv.stop()
    expect(rc == 1, "exit %d" % rc)
    expect(r["valid"] is False, r)
    expect("subscribe to bench:c0 refused (102" in out and
           "--demo" in out, out)
    expect(r["latency_us"]["p50"] is None, r)


def fanout_publish_refused():
    """A namespace without client publishing: subscribes are accepted, the
    publish is refused, and the run says what to change."""
    srv = Proc("serve", "--listen", "127.0.0.1:0")
    try:
        url = "ws://127.0.0.1:%d/connection/websocket" % srv.port
        rc, out, err, r = bench(url, "--mode", "fanout", "--connections",
                                "10", "--prefix", "bench-", *SHORT)
    finally:
        srv.stop()
    expect(rc == 1, "exit %d" % rc)
    expect(r["subscribed"] == 10, "subscribed %s" % r["subscribed"])
    # The run stops publishing at the first refusal; the publishes already
    # on their way (one per 10 ms at the default rate) are refused too, and
    # on a loaded machine the first answer can take several periods.
    expect(1 <= r["refused"] <= 20 and r["valid"] is False, r)
    expect("publish to bench-0 refused (103" in out and
           '"publish": true' in out, out)
    expect(r["setup_s"] is not None and 0 <= r["setup_s"] < 10, r)


def fanout_all_refused():
    """Every subscribe refused: the setup never ends, so there is no setup
    time (not 18446742137 s), and the reason names the namespace."""
    srv = Proc("serve", "--listen", "127.0.0.1:0")
    try:
        url = "ws://127.0.0.1:%d/connection/websocket" % srv.port
        rc, out, err, r = bench(url, "--mode", "fanout", "--connections",
                                "5", "--prefix", "nope:x", *SHORT)
    finally:
        srv.stop()
    expect(rc == 1, "exit %d" % rc)
    expect(r["setup_s"] is None and "setup         n/a" in out, out)
    expect("18446" not in out, out)
    expect("(102 unknown namespace)" in out, out)


def fanout_demo_works():
    """With --demo the default prefix (namespace "bench") takes publishes:
    a valid run with no options but the load."""
    srv = Proc("serve", "--listen", "127.0.0.1:0", "--demo")
    try:
        url = "ws://127.0.0.1:%d/connection/websocket" % srv.port
        rc, out, err, r = bench(url, "--mode", "fanout", "--connections",
                                "10", "--rate", "50", *SHORT)
    finally:
        srv.stop()
    expect(rc == 0, "exit %d: %s %s" % (rc, out, err))
    expect(r["valid"] is True and r["delivered_per_s"] > 0, r)
    expect(r["latency_us"]["p95"] is not None, r)


def main():
    res = Results()
    for name, fn in [
        ("echo: nothing listening -> n/a, exit 1", nothing_listening),
        ("echo: wrong answers are an error, not a throughput", wrong_answers),
        ("echo --rate: open loop, p90/p95, limit none", rate_and_limit),
        ("echo: a closed-loop run names its limit", closed_loop_limit),
        ("a progress line on a terminal only", progress_on_a_terminal),
        ("fanout vs herald serve defaults: refused subscribe explained",
         fanout_default_serve),
        ("fanout: a namespace without publishing explained",
         fanout_publish_refused),
        ("fanout: all subscribes refused -> no setup time",
         fanout_all_refused),
        ("fanout vs herald serve --demo: the default prefix works",
         fanout_demo_works),
    ]:
        res.run(name, fn)
    return res.summary()


if __name__ == "__main__":
    sys.exit(main())
