#!/usr/bin/python3
"""Black-box tests of `herald serve` with the application's backend in the
loop (docs/backend.md): a real backend (an HTTP server of Python's standard
library that each test starts) answering the proxy, allowing, refusing,
disconnecting, timing out, answering garbage, or not listening at all; a
webhook receiver checking signatures, down for a while, and the queue's
bound; token refresh over a long connection and without it; server-side
subscriptions; the API's subscribe, unsubscribe and disconnect;
user_connection_limit; idempotent publishing.

usage: backend.py PATH/TO/herald [-k SUBSTRING ...]
Prints one line per check and "N passed, N failed"; exits 1 on a failure.
"""

import hashlib
import hmac
import http.server
import json
import os
import signal
import socket
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lib  # noqa: E402
from lib import R, Closed, Server, check, eq, jwt_hs256, now, short  # noqa

SECRET = "s3cret-for-backend-tests-0123456789ab"
HOOK_SECRET = "hook-secret-for-tests"
NS = [{"name": "pub", "publish": True, "presence": True, "history_size": 10,
       "history_ttl": 60},
      {"name": "priv", "private": True, "history_size": 10,
       "history_ttl": 60}]
OFF = {"per_s": 0}


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Backend:
    """The application's backend: POST /<kind> answers with what
    self.answers[kind] says: a dict (sent as JSON), "slow" (sleeps past
    the proxy's timeout), "garbage", "500", or a function of the request
    body. Every request is recorded as (path, headers, body)."""

    def __init__(self, port=None):
        self.answers = {}
        self.requests = []
        self.hooks = []  # webhook bodies and their signature headers
        self.hook_status = 200
        self.lock = threading.Lock()
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # The head and the body leave in two writes: without this,
            # Nagle holds the body for the client's delayed ACK (40 ms).
            disable_nagle_algorithm = True

            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                kind = self.path.strip("/")
                with outer.lock:
                    outer.requests.append((kind, dict(self.headers), body))
                if kind == "hook":
                    with outer.lock:
                        st = outer.hook_status
                        if st == 200:
                            outer.hooks.append(
                                (body, self.headers.get("X-Herald-Signature")))
                    self.reply(st, b"{}")
                    return
                ans = outer.answers.get(kind, {"result": {}})
                if callable(ans):
                    ans = ans(json.loads(body))
                if ans == "slow":
                    time.sleep(1.5)
                    ans = {"result": {}}
                if ans == "garbage":
                    self.reply(200, b"<html>not json")
                elif ans == "500":
                    self.reply(500, b"{}")
                else:
                    self.reply(200, json.dumps(ans).encode())

            def reply(self, status, body):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:
                    pass

        self.port = port or free_port()
        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), H)
        self.srv.daemon_threads = True
        self.thread = threading.Thread(target=self.srv.serve_forever,
                                       daemon=True)
        self.thread.start()

    def url(self, kind):
        return f"http://127.0.0.1:{self.port}/{kind}"

    def reqs(self, kind):
        with self.lock:
            return [(h, json.loads(b)) for k, h, b in self.requests
                    if k == kind]

    def events(self):
        out = []
        with self.lock:
            for body, _ in self.hooks:
                out += json.loads(body)["events"]
        return out

    def wait_events(self, pred, count=1, timeout=5):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = [e for e in self.events() if pred(e)]
            if len(got) >= count:
                return got
            time.sleep(0.02)
        return [e for e in self.events() if pred(e)]

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def cfg(backend=None, **kw):
    c = {"anonymous": False, "jwt": {"hmac_secret": SECRET},
         "namespaces": [dict(n) for n in NS],
         "rate_limits": {"commands": OFF, "publishes": OFF,
                         "subscribes": OFF, "connections_per_ip": OFF}}
    if backend:
        c["proxy"] = {"connect_url": backend.url("connect"),
                      "refresh_url": backend.url("refresh"),
                      "rpc_url": backend.url("rpc"), "timeout_ms": 500,
                      "headers": ["Cookie", "Authorization"]}
    c.update(kw)
    return c


def token(sub, exp_in=3600, **claims):
    c = {"sub": sub, "exp": now() + exp_in}
    c.update(claims)
    return jwt_hs256(c, SECRET)


def err(m):
    return (m.get("error") or {}).get("code")


# --------------------------------------------------------------------------
# The connect proxy
# --------------------------------------------------------------------------


def test_connect_proxy_allows():
    b = Backend()
    b.answers["connect"] = {"result": {"user": "ann", "info": {"role": "x"},
                                       "expire_at": now() + 3600,
                                       "channels": ["pub:news"]}}
    s = Server(cfg(b))
    w = s.ws(headers={"Cookie": "session=abc", "X-Other": "no"})
    r = w.call("connect", {"name": "Ann", "data": {"k": 1}})
    eq("connect proxy: the backend's user", (r.get("result") or {}).get("user"),
       "ann")
    check("connect result says it expires",
          (r.get("result") or {}).get("expires") is True, short(r))
    hdrs, req = b.reqs("connect")[0]
    eq("the request carries the client", req.get("client"),
       r["result"]["client"])
    eq("transport/protocol/encoding", (req.get("transport"),
       req.get("protocol"), req.get("encoding")),
       ("websocket", "json", "json"))
    eq("the command's data is passed on", req.get("data"), {"k": 1})
    eq("the command's name is passed on", req.get("name"), "Ann")
    eq("a listed header is forwarded", hdrs.get("Cookie"), "session=abc")
    check("an unlisted one is not", "X-Other" not in hdrs, short(hdrs))
    p = w.push(lambda p: "subscribe" in p)
    eq("server-side subscription from the answer's channels",
       p.get("channel"), "pub:news")
    s.publish("pub:news", {"n": 1})
    eq("it delivers", w.pubs("pub:news", 1)[0]["data"], {"n": 1})
    st, js, _ = s.api("GET", "/api/presence?channel=pub:news")
    info = list(js["result"]["clients"].values())
    eq("presence shows the backend's user and info",
       info and (info[0]["user"], info[0].get("info")), ("ann", {"role": "x"}))
    m = s.metrics()
    eq("metrics count the connect requests",
       m.get('herald_proxy_requests_total{kind="connect"}'), 1.0)
    s.stop()
    b.close()


def test_connect_proxy_refuses_and_disconnects():
    b = Backend()
    s = Server(cfg(b))
    b.answers["connect"] = {"error": {"code": 403, "message": "go away"}}
    w = s.ws()
    r = w.call("connect")
    eq("an error answer reaches the client", (err(r), r["error"]["message"]),
       (403, "go away"))
    code, _ = w.wait_close()
    eq("and the connection closes 3500", code, 3500)
    b.answers["connect"] = {"disconnect": {"code": 4001, "reason": "banned"}}
    w = s.ws()
    w.cmd("connect")
    code, msgs = w.wait_close()
    eq("a disconnect answer closes with its code", code, 4001)
    check("with the disconnect push and its reason",
          any(isinstance(m, dict) and m.get("push", {}).get("disconnect", {})
              .get("reason") == "banned" for m in msgs), short(msgs))
    m = s.metrics()
    eq("refusals counted", m.get('herald_proxy_refused_total{kind="connect"}'),
       2.0)
    s.stop()
    b.close()


def unavailable_case(s, b, answer, what):
    b.answers["connect"] = answer
    w = s.ws()
    t0 = time.monotonic()
    r = w.call("connect", timeout=5)
    took = time.monotonic() - t0
    eq(f"{what}: 113", err(r), 113)
    check(f"{what}: temporary", r.get("error", {}).get("temporary") is True,
          short(r))
    check(f"{what}: answered within the timeout, never a hang", took < 1.5,
          f"{took:.2f}s")
    code, _ = w.wait_close()
    eq(f"{what}: closed with 3007 (reconnect)", code, 3007)


def test_connect_proxy_unavailable():
    b = Backend()
    s = Server(cfg(b))
    unavailable_case(s, b, "slow", "a backend slower than timeout_ms")
    unavailable_case(s, b, "garbage", "a backend answering garbage")
    unavailable_case(s, b, "500", "a backend answering 500")
    unavailable_case(s, b, {"result": {"user": 5}}, "a result of wrong types")
    unavailable_case(s, b, {"error": {"code": 7}}, "an error code out of range")
    m = s.metrics()
    eq("unavailable counted",
       m.get('herald_proxy_unavailable_total{kind="connect"}'), 5.0)
    check("latency histogram has them",
          m.get('herald_proxy_latency_seconds_count{kind="connect"}') == 5.0,
          short({k: v for k, v in m.items() if "latency" in k and "connect"
                 in k}))
    s.stop()
    b.close()


def test_connect_proxy_refused_connection():
    port = free_port()  # nobody listens there
    c = cfg()
    c["proxy"] = {"connect_url": f"http://127.0.0.1:{port}/connect",
                  "timeout_ms": 500}
    s = Server(c)
    w = s.ws()
    r = w.call("connect")
    eq("connection refused: 113", err(r), 113)
    code, _ = w.wait_close()
    eq("connection refused: 3007", code, 3007)
    # A token still works without the backend (connect_always is off).
    w = s.client(token("bob"))
    eq("a token connects without asking the backend", w.user, "bob")
    s.stop()


def test_connect_proxy_in_flight_limit():
    b = Backend()
    b.answers["connect"] = "slow"
    c = cfg(b)
    c["proxy"]["max_in_flight"] = 2
    c["proxy"]["timeout_ms"] = 3000
    s = Server(c)
    ws = [s.ws() for _ in range(4)]
    ids = [w.cmd("connect") for w in ws]
    rs = [w.reply(i, timeout=6) for w, i in zip(ws, ids)]
    over = [r for r in rs if err(r) == 113]
    eq("past max_in_flight: refused at once with 113", len(over), 2)
    eq("the others are answered by the backend",
       sum(1 for r in rs if "result" in r), 2)
    eq("metric", s.metrics().get("herald_proxy_overloaded_total"), 2.0)
    s.stop()
    b.close()


# --------------------------------------------------------------------------
# subscribe, publish, rpc
# --------------------------------------------------------------------------


def proxied_ns(b):
    ns = [dict(n) for n in NS]
    ns[0]["subscribe_proxy_url"] = b.url("subscribe")
    ns[0]["publish_proxy_url"] = b.url("publish")
    return ns


def test_subscribe_proxy():
    b = Backend()
    s = Server(cfg(b, namespaces=proxied_ns(b)))
    b.answers["connect"] = {"result": {"user": "ann"}}
    w = s.client()
    b.answers["subscribe"] = {"result": {}}
    r = w.call("subscribe", {"channel": "pub:a"})
    check("subscribe allowed by the backend", "result" in r, short(r))
    _, req = b.reqs("subscribe")[0]
    eq("the subscribe request", (req.get("channel"), req.get("user")),
       ("pub:a", "ann"))
    b.answers["subscribe"] = {"error": {"code": 403, "message": "not yours"}}
    r = w.call("subscribe", {"channel": "pub:b"})
    eq("subscribe refused", (err(r), r["error"]["message"]),
       (403, "not yours"))
    b.answers["subscribe"] = "slow"
    r = w.call("subscribe", {"channel": "pub:c"}, timeout=5)
    eq("subscribe timed out: 113", err(r), 113)
    b.answers["subscribe"] = "garbage"
    r = w.call("subscribe", {"channel": "pub:d"})
    eq("subscribe garbage: 113", err(r), 113)
    r = w.call("subscribe", {"channel": "pub:e"})
    eq("the connection stays", err(r), 113)
    b.answers["subscribe"] = {"result": {}}
    r = w.call("subscribe", {"channel": "priv:x"})
    eq("a namespace without the proxy still needs its token", err(r), 103)
    b.answers["subscribe"] = {"disconnect": {"code": 4002, "reason": "no"}}
    w.cmd("subscribe", {"channel": "pub:f"})
    code, _ = w.wait_close()
    eq("subscribe disconnect answer", code, 4002)
    s.stop()
    b.close()


def test_publish_proxy():
    b = Backend()
    s = Server(cfg(b, namespaces=proxied_ns(b)))
    b.answers["connect"] = {"result": {"user": "ann"}}
    b.answers["subscribe"] = {"result": {}}
    w = s.client()
    w.call("subscribe", {"channel": "pub:p"})
    b.answers["publish"] = {"result": {}}
    r = w.call("publish", {"channel": "pub:p", "data": {"t": "hi"}})
    check("publish allowed", "result" in r, short(r))
    eq("published as sent", w.pubs("pub:p", 1)[0]["data"], {"t": "hi"})
    _, req = b.reqs("publish")[0]
    eq("the publish request has the data", (req.get("channel"),
       req.get("data")), ("pub:p", {"t": "hi"}))
    b.answers["publish"] = {"result": {"data": {"t": "HI", "checked": True}}}
    r = w.call("publish", {"channel": "pub:p", "data": {"t": "hi"}})
    eq("the backend replaced the data", w.pubs("pub:p", 1)[0]["data"],
       {"t": "HI", "checked": True})
    b.answers["publish"] = {"result": {"b64": "AAEC/w=="}}
    r = w.call("publish", {"channel": "pub:p", "data": {"t": "hi"}})
    eq("the backend replaced JSON with binary", w.pubs("pub:p", 1)[0].get(
        "b64"), "AAEC/w==")
    b.answers["publish"] = {"result": {"data": [1]}}
    r = w.call("publish", {"channel": "pub:p", "b64": "AAEC"})
    eq("and binary with JSON", w.pubs("pub:p", 1)[0].get("data"), [1])
    for bad in ({"b64": "not base64!"}, {"data": 1, "b64": "AAEC"},
                {"b64": 5}):
        b.answers["publish"] = {"result": bad}
        r = w.call("publish", {"channel": "pub:p", "data": 1})
        eq(f"a result that is not a publication {bad}: 113", err(r), 113)
    b.answers["publish"] = {"error": {"code": 1000, "message": "spam"}}
    r = w.call("publish", {"channel": "pub:p", "data": 1})
    eq("publish refused", err(r), 1000)
    b.answers["publish"] = "slow"
    r = w.call("publish", {"channel": "pub:p", "data": 1}, timeout=5)
    eq("publish timed out: 113", err(r), 113)
    b.answers["publish"] = "500"
    r = w.call("publish", {"channel": "pub:p", "data": 1})
    eq("publish 500: 113", err(r), 113)
    st, js, _ = s.api("GET", "/api/history?channel=pub:p")
    eq("nothing refused was published", len(js["result"]["publications"]), 4)
    s.stop()
    b.close()


def test_rpc():
    b = Backend()
    s = Server(cfg(b))
    b.answers["connect"] = {"result": {"user": "ann"}}
    w = s.client()
    b.answers["rpc"] = lambda req: {"result": {"data": {
        "echo": req.get("data"), "method": req.get("method"),
        "user": req.get("user")}}}
    r = w.call("rpc", {"method": "sum", "data": [1, 2]})
    eq("rpc result", r.get("result"), {"data": {"echo": [1, 2],
                                                "method": "sum",
                                                "user": "ann"}})
    b.answers["rpc"] = {"error": {"code": 404, "message": "no such method"}}
    eq("rpc error", err(w.call("rpc", {"method": "x"})), 404)
    b.answers["rpc"] = "garbage"
    eq("rpc garbage: 113", err(w.call("rpc", {"method": "x"})), 113)
    b.answers["rpc"] = "slow"
    eq("rpc timeout: 113", err(w.call("rpc", {"method": "x"}, timeout=5)), 113)
    eq("rpc without method: 107", err(w.call("rpc", {"data": 1})), 107)
    s.stop()
    s2 = Server(cfg(None, anonymous=True))
    w = s2.client()
    eq("rpc not configured: 108", err(w.call("rpc", {"method": "x"})), 108)
    s2.stop()
    port = free_port()
    c = cfg(None, anonymous=True)
    c["proxy"] = {"rpc_url": f"http://127.0.0.1:{port}/rpc"}
    s3 = Server(c)
    w = s3.client()
    eq("rpc backend refusing connections: 113",
       err(w.call("rpc", {"method": "x"})), 113)
    s3.stop()
    b.close()


# --------------------------------------------------------------------------
# Refresh
# --------------------------------------------------------------------------


def test_refresh_over_a_long_connection():
    s = Server(cfg(None, refresh_ahead=2))
    w = s.client(token("ann", exp_in=3))
    p = w.push(lambda p: "refresh" in p, timeout=4)
    check("a refresh push comes ahead of exp", p["refresh"]["ttl"] <= 2,
          short(p))
    r = w.call("refresh", {"token": token("ann", exp_in=4)})
    check("refresh accepted", (r.get("result") or {}).get("expires") is True,
          short(r))
    p = w.push(lambda p: "refresh" in p, timeout=5)
    r = w.call("refresh", {"token": token("ann", exp_in=60)})
    check("refreshed again", "result" in r, short(r))
    time.sleep(2.5)
    r = w.call("ping")
    check("still connected past the first two exps", "result" in r, short(r))
    r = w.call("refresh", {"token": token("bob", exp_in=60)})
    eq("a token for another user: 101", err(r), 101)
    code, _ = w.wait_close()
    eq("and the connection ends 3500", code, 3500)
    eq("metrics", s.metrics().get("herald_refreshes_total"), 2.0)
    s.stop()


def test_expiry_without_refresh():
    s = Server(cfg(None, refresh_ahead=1))
    w = s.client(token("ann", exp_in=2))
    code, msgs = w.wait_close(timeout=5)
    eq("without a refresh, expiry disconnects with 3006", code, 3006)
    check("after a refresh push", any(isinstance(m, dict) and "refresh" in
                                      m.get("push", {}) for m in msgs),
          short(msgs))
    w = s.client(token("ann", exp_in=60))
    r = w.call("refresh", {"token": token("ann", exp_in=-5)})
    eq("an expired refresh token: 109", err(r), 109)
    s.stop()


def test_sub_refresh():
    s = Server(cfg(None, refresh_ahead=2))
    w = s.client(token("ann"))
    sub_tok = jwt_hs256({"sub": "ann", "channel": "priv:x",
                         "exp": now() + 3}, SECRET)
    r = w.call("subscribe", {"channel": "priv:x", "token": sub_tok})
    check("subscribed with a subscription token", "result" in r, short(r))
    p = w.push(lambda p: "sub_refresh" in p, timeout=4)
    eq("sub_refresh push for the channel", p.get("channel"), "priv:x")
    r = w.call("sub_refresh", {"channel": "priv:x", "token": jwt_hs256(
        {"sub": "ann", "channel": "priv:x", "exp": now() + 3}, SECRET)})
    check("sub_refresh accepted", "result" in r, short(r))
    r = w.call("sub_refresh", {"channel": "priv:x", "token": jwt_hs256(
        {"sub": "ann", "channel": "priv:other", "exp": now() + 60}, SECRET)})
    eq("a token for another channel: 103", err(r), 103)
    p = w.push(lambda p: "unsubscribe" in p, timeout=6)
    eq("without another refresh the subscription ends",
       (p.get("channel"), p["unsubscribe"].get("reason")),
       ("priv:x", "subscription expired"))
    eq("the connection stays", w.call("ping").get("result"), {})
    s.stop()


def test_refresh_proxy():
    b = Backend()
    # The server checks credentials once a second; asking two seconds
    # ahead leaves the backend a full tick to answer even on a loaded
    # machine (one second ahead left it at most one tick).
    b.answers["connect"] = {"result": {"user": "ann",
                                       "expire_at": now() + 3}}
    b.answers["refresh"] = lambda req: {"result": {"expire_at": now() + 3}}
    s = Server(cfg(b, refresh_ahead=2))
    w = s.client()
    time.sleep(4)
    eq("the backend keeps the connection alive", w.call("ping").get("result"),
       {})
    check("it was asked to refresh", len(b.reqs("refresh")) >= 2,
          len(b.reqs("refresh")))
    _, req = b.reqs("refresh")[0]
    eq("refresh request", (req.get("user"), req.get("client")),
       ("ann", w.client_id))
    b.answers["refresh"] = {"result": {"expired": True}}
    code, _ = w.wait_close(timeout=5)
    eq("expired: true ends it with 3006", code, 3006)
    b.answers["refresh"] = "slow"
    b.answers["connect"] = {"result": {"user": "ann",
                                       "expire_at": now() + 3}}
    w = s.client()
    code, _ = w.wait_close(timeout=7)
    eq("a backend that does not answer: 3006 at exp", code, 3006)
    s.stop()
    b.close()


# --------------------------------------------------------------------------
# Server-side subscriptions and the API
# --------------------------------------------------------------------------


def test_token_subs_and_api_subscribe():
    s = Server(cfg(None))
    w = s.client(token("ann", subs=["pub:s1"]))
    p = w.push(lambda p: "subscribe" in p)
    eq("the token's subs claim subscribes", p.get("channel"), "pub:s1")
    w2 = s.client(token("ann"))
    other = s.client(token("bob"))
    st, js, _ = s.api("POST", "/api/subscribe", {"user": "ann",
                                                 "channel": "pub:s2"})
    eq("/api/subscribe", (st, js.get("result")), (200, {"connections": 2}))
    for x in (w, w2):
        p = x.push(lambda p: "subscribe" in p and p["channel"] == "pub:s2")
        check("each of the user's connections gets the subscribe push",
              "epoch" in p["subscribe"], short(p))
    s.publish("pub:s2", {"v": 1})
    eq("and the publication", w2.pubs("pub:s2", 1)[0]["data"], {"v": 1})
    other.sync()
    check("another user's connection got nothing",
          not any("push" in m for m in other.pending), short(other.pending))
    st, js, _ = s.api("POST", "/api/unsubscribe", {"user": "ann",
                                                   "channel": "pub:s2"})
    eq("/api/unsubscribe", (st, js.get("result")), (200, {"connections": 2}))
    p = w.push(lambda p: "unsubscribe" in p)
    eq("unsubscribe push", p.get("channel"), "pub:s2")
    for bad, want in (({"channel": "pub:x"}, 400),
                      ({"user": "ann"}, 400),
                      ({"user": "ann", "channel": "zz:x"}, 404),
                      ({"user": "ann", "channel": "bad chan"}, 400),
                      ({"user": 5, "channel": "pub:x"}, 400)):
        st, js, _ = s.api("POST", "/api/subscribe", bad)
        eq(f"/api/subscribe {bad}: {want}", st, want)
    st, js, _ = s.api("POST", "/api/disconnect", {"user": "ann"})
    eq("/api/disconnect counts the user's connections",
       js.get("result"), {"disconnected": 2})
    s.stop()


def test_user_connection_limit():
    s = Server(cfg(None, user_connection_limit=2))
    a1 = s.client(token("ann"))
    a2 = s.client(token("ann"))
    w = s.ws()
    r = w.connect(token("ann"))
    eq("the third connection of a user: 106", err(r), 106)
    code, _ = w.wait_close()
    eq("closed with 3508", code, 3508)
    bob = s.client(token("bob"))
    a1.close()
    time.sleep(0.3)
    a3 = s.client(token("ann"))
    check("a place freed by a disconnect is taken again",
          a3.user == "ann", a3.user)
    eq("metric", s.metrics().get(
        "herald_user_connection_limit_refusals_total"), 1.0)
    a2.close()
    bob.close()
    s.stop()


def test_idempotent_publish():
    s = Server(cfg(None, idempotency_window=2, idempotency_max_keys=3,
                   anonymous=True))
    w = s.client()
    w.call("subscribe", {"channel": "pub:i"})
    r1 = w.call("publish", {"channel": "pub:i", "data": 1,
                            "idempotency_key": "k1"})
    r2 = w.call("publish", {"channel": "pub:i", "data": 2,
                            "idempotency_key": "k1"})
    eq("the same key: the first result", r2.get("result"), r1.get("result"))
    st, js, _ = s.api("POST", "/api/publish", {"channel": "pub:i", "data": 3,
                                               "idempotency_key": "k1"})
    eq("over the API too", js.get("result"), r1.get("result"))
    st, js, _ = s.api("POST", "/api/publish", {"channel": "pub:j", "data": 3,
                                               "idempotency_key": "k1"})
    check("another channel is another key", st == 200, short(js))
    eq("one publication", [p["data"] for p in w.pubs("pub:i", 1)], [1])
    w.sync()
    check("and no second one", not any("push" in m for m in w.pending),
          short(w.pending))
    r = w.call("publish", {"channel": "pub:i", "data": 1,
                           "idempotency_key": "bad key"})
    eq("a key with a space: 107", err(r), 107)
    st, _, _ = s.api("POST", "/api/publish", {"channel": "pub:i", "data": 1,
                                              "idempotency_key": "x" * 65})
    eq("a key over 64 bytes: 400", st, 400)
    time.sleep(2.2)
    r3 = w.call("publish", {"channel": "pub:i", "data": 4,
                            "idempotency_key": "k1"})
    check("after the window the key publishes again",
          r3["result"]["offset"] == r1["result"]["offset"] + 1, short(r3))
    for k in ("a", "b", "c", "d"):
        w.call("publish", {"channel": "pub:i", "data": 5,
                           "idempotency_key": k})
    m = s.metrics()
    eq("past idempotency_max_keys the oldest are forgotten (counted)",
       m.get("herald_idempotency_evictions_total") >= 1, True)
    eq("duplicates counted", m.get("herald_idempotent_duplicates_total"), 2.0)
    s.stop()


# --------------------------------------------------------------------------
# Webhooks
# --------------------------------------------------------------------------


def hooks_cfg(b, events=None, **kw):
    c = cfg(None, anonymous=True)
    c["webhooks"] = {"url": b.url("hook"), "secret": HOOK_SECRET,
                     "events": events or ["connect", "disconnect",
                                          "channel_occupied",
                                          "channel_vacated", "join", "leave",
                                          "publish"]}
    c["webhooks"].update(kw)
    return c


def test_webhooks_delivered_and_signed():
    b = Backend()
    s = Server(hooks_cfg(b))
    w = s.client(token("ann"))
    w.call("subscribe", {"channel": "pub:h"})
    w.call("publish", {"channel": "pub:h", "data": {"x": 1}})
    w.call("unsubscribe", {"channel": "pub:h"})
    w.close()
    names = ["connect", "channel_occupied", "join", "publish", "leave",
             "channel_vacated", "disconnect"]
    got = b.wait_events(lambda e: e["event"] == "disconnect")
    evs = b.events()
    eq("every event, in order", [e["event"] for e in evs], names)
    e = {x["event"]: x for x in evs}
    eq("connect event", (e["connect"]["user"], e["connect"]["client"]),
       ("ann", w.client_id))
    eq("publish event", (e["publish"]["channel"], e["publish"]["data"],
                         e["publish"]["offset"]), ("pub:h", {"x": 1}, 1))
    eq("occupied names the channel", e["channel_occupied"]["channel"], "pub:h")
    check("disconnect has a code and reason",
          "code" in e["disconnect"] and "reason" in e["disconnect"],
          short(e["disconnect"]))
    ok = True
    for body, sig in b.hooks:
        want = hmac.new(HOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
        ok = ok and sig == want
    check("every batch is signed (X-Herald-Signature, HMAC-SHA256 hex)", ok,
          short(b.hooks[:1]))
    check("events were batched", len(b.hooks) < len(evs), len(b.hooks))
    s.stop()
    b.close()


def test_webhooks_retried_while_down():
    b = Backend()
    b.hook_status = 503
    s = Server(hooks_cfg(b, ["connect"]))
    for i in range(3):
        s.client(token(f"u{i}"))
    time.sleep(1.0)
    eq("nothing delivered while the receiver fails", len(b.events()), 0)
    m = s.metrics()
    check("failed requests counted",
          m.get("herald_webhook_failed_requests_total", 0) >= 2, short(m))
    check("retries counted", m.get("herald_webhook_retries_total", 0) >= 1)
    eq("the events wait in the queue", m.get("herald_webhook_queue"), 3.0)
    with b.lock:
        b.hook_status = 200
    got = b.wait_events(lambda e: e["event"] == "connect", 3, timeout=8)
    eq("delivered once the receiver is back", sorted(e["user"] for e in got),
       ["u0", "u1", "u2"])
    s.stop()
    b.close()


def test_webhooks_receiver_not_listening_and_bound():
    port = free_port()
    c = cfg(None, anonymous=True)
    c["webhooks"] = {"url": f"http://127.0.0.1:{port}/hook",
                     "events": ["connect"], "max_queue": 3}
    s = Server(c)
    for i in range(5):
        s.client(token(f"u{i}"))
    time.sleep(0.5)
    m = s.metrics()
    eq("the queue holds max_queue", m.get("herald_webhook_queue"), 3.0)
    eq("the rest is dropped and counted",
       m.get("herald_webhook_events_dropped_total"), 2.0)
    check("and logged", "ev=webhook_queue_full" in s.stderr(),
          s.stderr()[-500:])
    b = Backend(port=port)
    got = b.wait_events(lambda e: e["event"] == "connect", 3, timeout=10)
    eq("the queued ones arrive when it listens", len(got), 3)
    s.stop()
    b.close()


def test_config_errors():
    for bad, needle in (({"proxy": {"connect_url": "ftp://x"}}, "connect_url"),
                        ({"proxy": {"headers": ["Bad Header"]}}, "headers"),
                        ({"webhooks": {"url": "http://x/",
                                       "events": ["nope"]}}, "unknown event"),
                        ({"webhooks": {"secret": "abc"}}, "webhooks.secret"),
                        ({"proxy": {"max_in_flight": 0}}, "max_in_flight"),
                        ({"idempotency_window": 0}, "idempotency_window"),
                        ({"namespaces": [{"name": "a",
                                          "publish_proxy_url": "x"}]},
                         "publish_proxy_url")):
        try:
            s = Server(cfg(None, anonymous=True, **bad))
            s.stop()
            check(f"refused: {bad}", False, "it started")
        except RuntimeError as e:
            check(f"refused: {bad}", needle in str(e), str(e)[-300:])


def test_herald_token():
    import subprocess

    def mint(*args):
        p = subprocess.run([lib.HERALD, "token", *args], capture_output=True,
                           text=True, timeout=10)
        return p.returncode, p.stdout.strip(), p.stderr

    rc, tok, _ = mint("--secret", SECRET, "--sub", "ann", "--exp", "2m",
                      "--subs", "pub:t1", "--info", '{"n":1}')
    eq("herald token mints", rc, 0)
    s = Server(cfg(None))
    w = s.client(tok)
    eq("the server takes it", w.user, "ann")
    eq("with its subs", w.push(lambda p: "subscribe" in p).get("channel"),
       "pub:t1")
    rc, stok, _ = mint("--secret", SECRET, "--sub", "ann", "--channel",
                       "priv:z")
    r = w.call("subscribe", {"channel": "priv:z", "token": stok})
    check("a subscription token (--channel)", "result" in r, short(r))
    rc, tok, _ = mint("--secret", "another-secret-0123456789abcdef01",
                      "--sub", "ann")
    eq("signed with another secret: refused", lib.WS(s.port).connect(tok)
       .get("error", {}).get("code"), 101)
    for bad in (["--sub", "x"], ["--secret", "k"], ["--secret", "k", "--sub",
                "x", "--exp", "soon"], ["--secret", "k", "--sub", "x",
                "--info", "{bad"], ["--secret", "k", "--sub", "x",
                "--channels", "a b"], ["--bogus"]):
        rc, _, errtext = mint(*bad)
        check(f"herald token {' '.join(bad)}: exit 2 with a message",
              rc == 2 and errtext.strip() != "", (rc, errtext))
    s.stop()


TESTS = [test_herald_token, test_connect_proxy_allows, test_connect_proxy_refuses_and_disconnects,
         test_connect_proxy_unavailable, test_connect_proxy_refused_connection,
         test_connect_proxy_in_flight_limit, test_subscribe_proxy,
         test_publish_proxy, test_rpc, test_refresh_over_a_long_connection,
         test_expiry_without_refresh, test_sub_refresh, test_refresh_proxy,
         test_token_subs_and_api_subscribe, test_user_connection_limit,
         test_idempotent_publish, test_webhooks_delivered_and_signed,
         test_webhooks_retried_while_down,
         test_webhooks_receiver_not_listening_and_bound, test_config_errors]


def main():
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return 2
    lib.HERALD = os.path.abspath(args[0])
    only = args[2::2] if len(args) > 2 and args[1] == "-k" else []

    def on_alarm(signum, frame):
        print("FAIL the whole suite took over 280 s", flush=True)
        lib.kill_all()
        os._exit(1)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(280)
    t0 = time.monotonic()
    try:
        for t in TESTS:
            if only and not any(o in t.__name__ for o in only):
                continue
            lib.run_test(t)
    finally:
        lib.kill_all()
    print(f"{R.passed} passed, {R.failed} failed "
          f"({time.monotonic() - t0:.1f}s)")
    for f in R.failures:
        print(f"  {f}")
    return 1 if R.failed else 0


if __name__ == "__main__":
    sys.exit(main())
