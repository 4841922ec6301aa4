#!/usr/bin/python3
"""Black-box tests of `herald serve` as a production server: no demo page
unless asked, a static_dir served safely, placeholder secrets refused,
configuration and listen errors that name what is wrong.

usage: production.py PATH/TO/herald
Prints one line per check and "N passed, N failed"; exits 1 on a failure.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lib  # noqa: E402
from lib import Server, check, eq, http_req, short  # noqa: E402


def serve_fails(conf_text, *args, name="config.json"):
    """Runs herald serve with a config file that should stop it; returns
    (exit status, stderr)."""
    d = tempfile.mkdtemp(prefix="herald-prod-test-")
    try:
        path = os.path.join(d, name)
        if conf_text is not None:
            with open(path, "w") as f:
                f.write(conf_text)
        p = subprocess.run([lib.HERALD, "serve", "--config", path, *args],
                           capture_output=True, timeout=20,
                           stdin=subprocess.DEVNULL)
        return p.returncode, p.stderr.decode("utf-8", "replace"), path
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_no_demo_by_default():
    s = Server({})
    for path in ("/", "/herald.js", "/index.html"):
        st, _, _ = http_req(s.port, "GET", path, raw_text=True)
        eq(f"GET {path} without demo: 404", st, 404)
    s.stop()


def test_static_dir():
    root = tempfile.mkdtemp(prefix="herald-static-")
    outside = tempfile.mkdtemp(prefix="herald-outside-")
    try:
        os.makedirs(os.path.join(root, "sub"))
        with open(os.path.join(root, "index.html"), "w") as f:
            f.write("<html>home</html>")
        with open(os.path.join(root, "sub", "a b.css"), "w") as f:
            f.write("body{}")
        with open(os.path.join(root, ".secret"), "w") as f:
            f.write("hidden")
        with open(os.path.join(outside, "passwd"), "w") as f:
            f.write("outside")
        os.symlink(os.path.join(outside, "passwd"),
                   os.path.join(root, "link.txt"))
        os.symlink(outside, os.path.join(root, "linkdir"))
        s = Server({"static_dir": root})
        st, text, hd = http_req(s.port, "GET", "/", raw_text=True)
        check("GET / serves static_dir/index.html",
              st == 200 and text == "<html>home</html>" and
              hd.get("content-type", "").startswith("text/html"),
              short((st, text, hd)))
        st, text, hd = http_req(s.port, "GET", "/sub/a%20b.css",
                                raw_text=True)
        check("a percent-encoded path is decoded; CSS has its type",
              st == 200 and text == "body{}" and
              hd.get("content-type", "").startswith("text/css"),
              short((st, text, hd)))
        for bad in ("/../" + os.path.basename(outside) + "/passwd",
                    "/sub/../../" + os.path.basename(outside) + "/passwd",
                    "/%2e%2e/%2e%2e/etc/passwd", "/.secret", "/link.txt",
                    "/linkdir/passwd", "/sub/%00x", "/sub\\..\\index.html",
                    "/nope.html", "/sub"):
            # http.client normalises nothing: the path goes out as written.
            sock = socket.create_connection(("127.0.0.1", s.port), timeout=5)
            sock.sendall(f"GET {bad} HTTP/1.1\r\nHost: x\r\n"
                         f"Connection: close\r\n\r\n".encode())
            data = b""
            while True:
                c = sock.recv(65536)
                if not c:
                    break
                data += c
            sock.close()
            status = int(data.split(b" ", 2)[1]) if data else 0
            check(f"GET {bad}: not served (404)",
                  status == 404 and b"outside" not in data and
                  b"hidden" not in data, short(data))
        s.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(outside, ignore_errors=True)


def test_placeholder_secrets():
    for key, conf in (
            ("api_key", '{"api_key": "change-me"}'),
            ("jwt.hmac_secret",
             '{"jwt": {"hmac_secret": "CHANGE-ME-hs256-secret-at-least-32-'
             'bytes"}}')):
        rc, err, _ = serve_fails(conf)
        check(f"{key} left as a placeholder: the server does not start",
              rc != 0 and key in err and "placeholder" in err, (rc, err))
    s = Server({"jwt": {"hmac_secret": "short"}})
    time.sleep(0.2)
    err = s.stderr()
    check("an HS256 secret under 32 bytes is warned about",
          "ev=weak_secret" in err and "jwt.hmac_secret" in err, err[-400:])
    s.stop()


def test_config_errors():
    rc, err, path = serve_fails('{"listen": ["127.0.0.1:0"],\n "anonymous": ]}')
    check("a syntax error names the line and column",
          rc != 0 and ":2:15: not valid JSON" in err, err)
    rc, err, _ = serve_fails('{"anonymous": true,\n  "anonymous": false}')
    check("a repeated key is named with its place",
          rc != 0 and ':2:3: key "anonymous" appears twice' in err, err)
    rc, err, path = serve_fails(None)
    check("a missing file says why",
          rc != 0 and "No such file or directory" in err, err)
    rc, err, _ = serve_fails('{"jwt": {"require_exp": "yes"}}')
    check("a bad value inside jwt names the key",
          rc != 0 and 'bad value for "jwt.require_exp"' in err, err)
    for bad in ("0", "257", '"many"'):
        rc, err, _ = serve_fails('{"max_sse_channels": %s}' % bad)
        check(f"max_sse_channels {bad}: the server does not start, naming it",
              rc != 0 and 'bad value for "max_sse_channels"' in err, err)
    rc, err, _ = serve_fails('{"listen": ["nonsense"]}')
    check("an invalid listen address is echoed",
          rc != 0 and "nonsense" in err, err)
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    rc, err, _ = serve_fails(f'{{"listen": ["127.0.0.1:{port}"]}}')
    busy.close()
    check("an address in use is named",
          rc != 0 and f"127.0.0.1:{port}" in err, err)
    rc, err, _ = serve_fails('{"threads": 257}')
    check("threads over 256 is refused", rc == 2 and "threads" in err, err)
    rc, err, _ = serve_fails('{"anonymous": true}', "--threads", "two")
    check("--threads two is refused", rc == 2 and "--threads" in err, err)
    # threads 2 with the Redis engine runs (docs/design.md, "Several loops
    # over Redis"): with Redis unreachable it serves, unhealthy.
    s = Server({"anonymous": True, "threads": 2}, args=["--redis",
                                                        "127.0.0.1:1"])
    st, js, _ = http_req(s.port, "GET", "/health")
    eq("threads 2 with an unreachable Redis: /health 503 naming redis",
       (st, js.get("engine") if isinstance(js, dict) else js), (503, "redis"))
    s.stop()


def test_threads_zero():
    """threads 0: one loop per core; the log says how many."""
    s = Server({"anonymous": True, "threads": 0})
    w = s.client()
    r = w.call("ping")
    eq("a client of a server with threads 0 gets its ping answered",
       r.get("result"), {})
    w.close()
    log = s.stderr()  # before stop(), which removes the directory
    s.stop()
    m = re.search(r"ev=start .*threads=(\d+)", log)
    check("threads 0 runs one loop per core",
          m is not None and int(m.group(1)) == len(os.sched_getaffinity(0)),
          log[-500:])


TESTS = [test_no_demo_by_default, test_static_dir, test_placeholder_secrets,
         test_config_errors, test_threads_zero]


if __name__ == "__main__":
    sys.exit(lib.main(TESTS, __doc__, 120))
