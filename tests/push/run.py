#!/usr/bin/python3
"""Black-box tests of `herald serve` (docs/protocol.md is the contract).

usage: run.py PATH/TO/herald [-k SUBSTRING ...] [--threads N]

--threads N runs every server that can (no Pusher apps) on
N loops: the same guarantees must hold across threads.

Every test group starts its own server(s) on 127.0.0.1:0 with a config file
in a temporary directory and stops them with SIGTERM, checking exit status 0
(and, for a sanitizer build, a clean stderr). Prints one line per check and
a final "N passed, N failed"; exits 1 when anything failed.
"""

import asyncio
import json
import os
import random
import signal
import socket
import sys
import threading
import time
import urllib.parse

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lib  # noqa: E402
from lib import (R, SSE, WS, Closed, Refused, Server, check, eq,  # noqa: E402
                 http_req, jwt_es256, jwt_hs256, jwt_none, jwt_rs256, now,
                 parse_metrics, short)

SECRET = "s3cret-for-tests"
KEYS = None  # lib.Keys, made in main()


def err_code(reply):
    return (reply.get("error") or {}).get("code")


def is_error(reply, code):
    e = reply.get("error") or {}
    return e.get("code") == code and isinstance(e.get("message"), str) and \
        e.get("temporary") is False


def disconnect_of(msgs):
    for m in msgs:
        if isinstance(m, dict) and "push" in m and "disconnect" in m["push"]:
            return m["push"]["disconnect"]
    return None


def expect_refusal(w, code, close, what):
    """A reply with error `code`, then the disconnect push and close frame
    with `close`."""
    rcode, msgs = w.wait_close(5)
    replies = [m for m in msgs if isinstance(m, dict) and "error" in m]
    check(f"{what}: error {code}", replies and is_error(replies[0], code),
          short(msgs))
    d = disconnect_of(msgs)
    check(f"{what}: disconnect push {close} (reconnect={close < 3500})",
          d is not None and d.get("code") == close and
          d.get("reconnect") is (close < 3500), short(msgs))
    eq(f"{what}: close code", rcode, close)


def no_push(w, channel, what):
    """After a ping round trip nothing for `channel` is pending."""
    w.sync()
    got = [m for m in w.pending if "push" in m and
           m["push"].get("channel") == channel]
    check(what, not got, short(got))
    return got


COMMON_NS = [
    {"name": "pub", "publish": True, "presence": True, "join_leave": True,
     "history_size": 100, "history_ttl": 300},
    {"name": "nojl", "publish": True, "presence": True, "join_leave": False,
     "history_size": 10, "history_ttl": 300},
    {"name": "quiet", "publish": True, "presence": False, "history_size": 0},
    {"name": "priv", "private": True, "presence": True, "history_size": 10},
    {"name": "small", "publish": True, "history_size": 5,
     "history_ttl": 300},
    {"name": "ttl", "publish": True, "history_size": 100, "history_ttl": 1},
]


# ==========================================================================
# Commands and their errors
# ==========================================================================


def test_commands():
    s = Server({"namespaces": COMMON_NS, "max_channels": 4,
                "max_command_bytes": 4096, "ping_interval": 20,
                "jwt": {"hmac_secret": SECRET}})

    # connect
    w = WS(s.port)
    r = w.connect()
    res = r.get("result", {})
    check("connect: result has client, user, version, ping",
          isinstance(res.get("client"), str) and res.get("client") and
          res.get("user") == "" and isinstance(res.get("version"), str) and
          res.get("ping") == 20, short(r))
    eq("connect: reply echoes the id", r.get("id"), 1)
    r = w.call("connect", {})
    check("connect twice is an error (107), connection stays",
          err_code(r) == 107, short(r))
    w.sync()

    # ping
    r = w.call("ping")
    eq("ping: result {}", r.get("result"), {})

    # subscribe without since on a fresh channel
    r = w.call("subscribe", {"channel": "pub:c1"})
    res = r.get("result", {})
    check("subscribe: epoch and offset 0 on a new channel",
          isinstance(res.get("epoch"), str) and res.get("epoch") and
          res.get("offset") == 0 and "recovered" not in res and
          "publications" not in res, short(r))
    epoch = res.get("epoch")
    for i in range(3):
        s.publish("pub:c1", {"n": i})
    pubs = w.pubs("pub:c1", 3)
    eq("subscribe: pushes arrive with offsets 1..3",
       [p["offset"] for p in pubs], [1, 2, 3])
    eq("subscribe: push data", [p["data"] for p in pubs],
       [{"n": 0}, {"n": 1}, {"n": 2}])
    check("subscribe: API publications carry no info",
          all("info" not in p for p in pubs), short(pubs))

    # a second subscriber starts at the current position
    w2 = s.client()
    r = w2.call("subscribe", {"channel": "pub:c1"})
    eq("subscribe: later subscriber starts at the current offset",
       (r.get("result") or {}).get("offset"), 3)
    eq("subscribe: same epoch", (r.get("result") or {}).get("epoch"), epoch)

    # subscribe with since (recovery, more in test_recovery)
    w3 = s.client()
    r = w3.call("subscribe", {"channel": "pub:c1",
                              "since": {"epoch": epoch, "offset": 1}})
    res = r.get("result", {})
    check("subscribe with since: recovered true with offsets 2,3",
          res.get("recovered") is True and
          [p["offset"] for p in res.get("publications", [])] == [2, 3],
          short(r))

    # publish from a client, JSON embedded as is
    raw = '{"text":  "hi",\t"list": [1,2 ,3], "u": "\\u00e9"}'
    cid = w.next_id
    w.next_id += 1
    w.send_text('{"id": %d, "publish": {"channel": "pub:c1", "data": %s}}'
                % (cid, raw))
    r = w.reply(cid)
    res = r.get("result", {})
    eq("publish: result epoch/offset", (res.get("epoch"), res.get("offset")),
       (epoch, 4))
    w2.sync()
    frames = []
    while True:
        p = w2.push(lambda p: "pub" in p, 2)
        frames.append(w2.last_raw)
        if p["pub"]["offset"] == 4:
            break
    check("publish: data embedded byte for byte (never re-encoded)",
          raw.encode() in frames[-1], short(frames[-1]))
    p = json.loads(frames[-1])["push"]["pub"]
    eq("publish: pub info names the publishing client",
       p.get("info"), {"client": w.client_id, "user": ""})
    # b64
    r = w.call("publish", {"channel": "pub:c1", "b64": "AAEC/w=="})
    check("publish b64: ok", "result" in r, short(r))
    p = w2.push(lambda p: "pub" in p and p["pub"]["offset"] == 5)
    check("publish b64: subscriber gets b64, no data",
          p["pub"].get("b64") == "AAEC/w==" and "data" not in p["pub"],
          short(p))
    r = w.call("publish", {"channel": "pub:c1", "b64": "not base64!"})
    eq("publish bad b64: 107", err_code(r), 107)

    # unsubscribe
    r = w2.call("unsubscribe", {"channel": "pub:c1"})
    eq("unsubscribe: result {}", r.get("result"), {})
    w2.pending.clear()
    s.publish("pub:c1", {"after": "unsubscribe"})
    no_push(w2, "pub:c1", "unsubscribe: no more pushes after it")
    r = w2.call("unsubscribe", {"channel": "pub:c1"})
    check("111 not subscribed (unsubscribe twice)", is_error(r, 111),
          short(r))

    # presence
    r = w.call("presence", {"channel": "pub:c1"})
    clients = (r.get("result") or {}).get("clients", {})
    check("presence: lists the subscribers by client id",
          w.client_id in clients and w3.client_id in clients and
          w2.client_id not in clients and
          clients.get(w.client_id, {}).get("user") == "", short(r))

    # history
    r = w.call("history", {"channel": "pub:c1"})
    res = r.get("result", {})
    eq("history: all publications in order",
       [p["offset"] for p in res.get("publications", [])], [1, 2, 3, 4, 5, 6])
    eq("history: epoch/offset", (res.get("epoch"), res.get("offset")),
       (epoch, 6))
    r = w.call("history", {"channel": "pub:c1", "limit": 2})
    offs = [p["offset"] for p in (r.get("result") or {}).get("publications",
                                                              [])]
    check("history limit 2: two contiguous publications in order",
          len(offs) == 2 and offs[1] == offs[0] + 1, short(r))
    r = w.call("history", {"channel": "pub:c1",
                           "since": {"epoch": epoch, "offset": 4}})
    res = r.get("result", {})
    check("history since 4: offsets 5,6, recovered true",
          [p["offset"] for p in res.get("publications", [])] == [5, 6] and
          res.get("recovered") is True, short(r))

    # errors
    r = w.call("subscribe", {"channel": "pub:c1"})
    check("105 already subscribed", is_error(r, 105), short(r))
    r = w.call("subscribe", {"channel": "nosuch:x"})
    check("102 unknown namespace (subscribe)", is_error(r, 102), short(r))
    r = w.call("publish", {"channel": "nosuch:x", "data": 1})
    check("102 unknown namespace (publish)", is_error(r, 102), short(r))
    r = w.call("publish", {"channel": "dflt", "data": 1})
    check("103 publish not allowed in the namespace", is_error(r, 103),
          short(r))
    r = w.call("subscribe", {"channel": "priv:room"})
    check("103 private channel without token", is_error(r, 103), short(r))
    cid = w.next_id
    w.next_id += 1
    w.send_json({"id": cid, "frobnicate": {}})
    r = w.reply(cid)
    check("104 unknown method", is_error(r, 104), short(r))
    w.sync()
    w.pending.clear()
    w.send_text('{"id": 99, "subscribe": ')
    r = w.next()
    while "push" in r:
        r = w.next()
    check("107 malformed JSON (connection stays open)", is_error(r, 107),
          short(r))
    r = w.call("subscribe", {})
    check("107 missing channel", is_error(r, 107), short(r))
    r = w.call("subscribe", {"channel": "bad channel!"})
    check("107 bad channel name", is_error(r, 107), short(r))
    r = w.call("subscribe", {"channel": "x" * 256})
    check("107 channel name over 255 bytes", is_error(r, 107), short(r))
    r = w.call("publish", {"channel": "pub:c1", "data": 1, "b64": "AA=="})
    check("107 both data and b64", is_error(r, 107), short(r))
    r = w.call("publish", {"channel": "pub:c1"})
    check("107 publish without data or b64", is_error(r, 107), short(r))
    r = w.call("presence", {"channel": "quiet:x"})
    check("108 presence off", is_error(r, 108), short(r))
    r = w.call("history", {"channel": "quiet:x"})
    check("108 history off", is_error(r, 108), short(r))
    # 106: max_channels 4 (w holds pub:c1)
    rs = [w.call("subscribe", {"channel": f"pub:m{i}"}) for i in range(4)]
    check("106 too many channels (max_channels 4)",
          all("result" in x for x in rs[:3]) and is_error(rs[3], 106),
          short(rs))
    w.sync()

    # several commands in one frame
    w5 = WS(s.port)
    w5.send_text('{"id":1,"connect":{}}\n{"id":2,"ping":{}}\r\n\n'
                 '{"id":3,"subscribe":{"channel":"pub:multi"}}\n'
                 '{"id":4,"presence":{"channel":"pub:multi"}}\n')
    got = [w5.reply(i) for i in (1, 2, 3, 4)]
    check("several commands in one frame: each answered",
          all("result" in g for g in got), short(got))
    w5.send_text('{"id":5,"ping":{}}\n{"id":6,"bogus":{}}\n{"id":7,"ping":{}}')
    got = [w5.reply(i) for i in (5, 6, 7)]
    check("several commands: a bad one does not stop the others",
          "result" in got[0] and err_code(got[1]) == 104 and
          "result" in got[2], short(got))
    w5.close()

    # 101 before connect -> close 3501
    w6 = WS(s.port)
    w6.send_json({"id": 1, "subscribe": {"channel": "pub:c1"}})
    expect_refusal(w6, 101, 3501, "command before connect")

    # binary frame -> 3501
    w7 = s.client()
    w7.send_frame(2, b'{"id":2,"ping":{}}')
    code, msgs = w7.wait_close()
    eq("binary frame: close 3501", code, 3501)
    check("binary frame: disconnect push 3501",
          (disconnect_of(msgs) or {}).get("code") == 3501, short(msgs))

    # over max_command_bytes -> 1009
    w8 = s.client()
    w8.send_text('{"id":2,"publish":{"channel":"pub:big","data":"%s"}}'
                 % ("x" * 5000))
    code, msgs = w8.wait_close()
    eq("message over max_command_bytes: close 1009", code, 1009)
    w9 = s.client()
    w9.send_frame(1, '{"id":2,"publish":{"channel":"pub:big","data":"',
                  fin=False)
    w9.send_frame(0, "y" * 3000, fin=False)
    w9.send_frame(0, "y" * 3000 + '"}}', fin=True)
    code, msgs = w9.wait_close()
    eq("fragmented message over max_command_bytes: close 1009", code, 1009)

    # everyone else is still fine
    for c in (w, w2, w3):
        c.sync()
    check("other clients unaffected", True)
    for c in (w, w2, w3):
        c.close()
    s.stop()


# ==========================================================================
# Authentication
# ==========================================================================


def test_auth():
    s = Server({
        "anonymous": False,
        "jwt": {"hmac_secret": SECRET, "rsa_public_key_file": KEYS.rsa_pub,
                "ec_public_key_file": KEYS.ec_pub},
        "allowed_origins": ["https://good.example"],
        "namespaces": [
            {"name": "priv", "private": True, "presence": True,
             "history_size": 10},
            {"name": "chat", "publish": True, "presence": True,
             "join_leave": True},
        ],
    })
    t = now()
    good = {"sub": "alice", "exp": t + 600}

    def try_token(token, what, code=None, close=None, user="alice"):
        w = WS(s.port)
        r = w.connect(token)
        if code is None:
            check(f"{what}: accepted as {user!r}",
                  (r.get("result") or {}).get("user") == user, short(r))
            return w
        w.pending.appendleft(r)
        expect_refusal(w, code, close, what)
        return None

    failures0 = s.metrics().get("herald_auth_failures_total", 0)
    w = WS(s.port)
    r = w.connect()
    w.pending.appendleft(r)
    expect_refusal(w, 101, 3500, "anonymous off, no token")
    try_token(jwt_hs256(good, SECRET), "HS256 valid").close()
    try_token(jwt_rs256(good, KEYS.rsa), "RS256 valid").close()
    try_token(jwt_es256(good, KEYS.ec), "ES256 valid").close()
    try_token(jwt_hs256(good, "another secret"), "HS256 forged signature",
              101, 3500)
    tok = jwt_hs256(good, SECRET)
    h, p, sig = tok.split(".")
    forged = h + "." + lib.b64u(json.dumps({"sub": "root",
                                            "exp": t + 600})) + "." + sig
    try_token(forged, "HS256 payload changed after signing", 101, 3500)
    try_token(jwt_rs256(good, KEYS.rsa2), "RS256 wrong key", 101, 3500)
    try_token(jwt_es256(good, KEYS.ec2), "ES256 wrong key", 101, 3500)
    try_token(jwt_none(good), "alg none", 101, 3500)
    with open(KEYS.rsa_pub, "rb") as f:
        pem = f.read()
    try_token(jwt_hs256(good, pem), "HS256 with the RSA public key as secret",
              101, 3500)
    try_token("not.a.jwt", "malformed token", 101, 3500)
    try_token(jwt_hs256({"sub": "alice", "exp": t - 10}, SECRET),
              "expired token", 109, 3006)
    try_token(jwt_rs256({"sub": "alice", "exp": t - 10}, KEYS.rsa),
              "expired RS256 token", 109, 3006)
    try_token(jwt_hs256({"sub": "alice"}, SECRET), "no exp when required",
              101, 3500)
    failures1 = s.metrics().get("herald_auth_failures_total", 0)
    check("metrics count auth failures", failures1 - failures0 == 11,
          f"{failures0} -> {failures1}")

    # private channels
    w = try_token(jwt_hs256({"sub": "alice", "exp": t + 600,
                             "info": {"name": "Alice"}}, SECRET),
                  "token with info")

    def sub(w, channel, claims, secret=SECRET):
        p = {"channel": channel}
        if claims is not None:
            p["token"] = jwt_hs256(claims, secret)
        return w.call("subscribe", p)

    r = sub(w, "priv:r1", {"sub": "alice", "channel": "priv:r1",
                           "exp": t + 600})
    check("private channel: good subscription token", "result" in r,
          short(r))
    r = sub(w, "priv:r2", {"sub": "alice", "channel": "priv:r1",
                           "exp": t + 600})
    check("private channel: token for another channel -> 103",
          is_error(r, 103), short(r))
    r = sub(w, "priv:r2", {"sub": "bob", "channel": "priv:r2",
                           "exp": t + 600})
    check("private channel: token for another user -> 103", is_error(r, 103),
          short(r))
    r = sub(w, "priv:r2", None)
    check("private channel: no token -> 103", is_error(r, 103), short(r))
    r = sub(w, "priv:r2", {"sub": "alice", "channel": "priv:r2",
                           "exp": t - 5})
    check("private channel: expired subscription token -> 103",
          is_error(r, 103), short(r))
    r = sub(w, "priv:r2", {"sub": "alice", "channel": "priv:r2"})
    check("private channel: subscription token without exp -> 103",
          is_error(r, 103), short(r))
    r = sub(w, "priv:r2", {"sub": "alice", "channel": "priv:r2",
                           "exp": t + 600}, "wrong secret")
    check("private channel: forged subscription token -> 103",
          is_error(r, 103), short(r))
    r = w.call("presence", {"channel": "priv:r2"})
    check("private channel: presence without subscribing -> 103",
          is_error(r, 103), short(r))
    r = w.call("presence", {"channel": "priv:r1"})
    cl = (r.get("result") or {}).get("clients", {})
    check("presence shows the token's info",
          cl.get(w.client_id) == {"user": "alice", "info": {"name": "Alice"}},
          short(r))
    w.sync()
    w.close()
    w = try_token(jwt_hs256({"sub": "alice", "exp": t + 600,
                             "channels": ["priv:vip"]}, SECRET),
                  "token with a channels claim")
    r = w.call("subscribe", {"channel": "priv:vip"})
    check("channels claim allows a private channel without a token",
          "result" in r, short(r))
    r = w.call("subscribe", {"channel": "priv:other"})
    check("channels claim does not allow other private channels",
          is_error(r, 103), short(r))
    w.close()

    # origins
    try:
        WS(s.port, origin="https://evil.example")
        check("WebSocket with a disallowed Origin: HTTP 403", False,
              "handshake accepted")
    except Refused as e:
        eq("WebSocket with a disallowed Origin: HTTP 403", e.status, 403)
    for origin, what in (("https://good.example", "listed Origin"),
                         (f"http://127.0.0.1:{s.port}", "same Origin"),
                         (None, "no Origin")):
        try:
            w = WS(s.port, origin=origin)
            check(f"WebSocket with {what}: accepted", True)
            w.close()
        except Refused as e:
            check(f"WebSocket with {what}: accepted", False, e.head)
    try:
        WS(s.port, origin=f"http://127.0.0.1:{s.port}.evil.example")
        check("Origin that extends the host: 403", False, "accepted")
    except Refused as e:
        eq("Origin that extends the host: 403", e.status, 403)
    e = SSE(s.port, "channel=chat:a&token=" + jwt_hs256(good, SECRET),
            origin="https://evil.example")
    eq("SSE with a disallowed Origin: HTTP 403", e.status, 403)
    e.close()
    e = SSE(s.port, "channel=chat:a")
    eq("SSE without token when anonymous is off: 401", e.status, 401)
    e.close()
    e = SSE(s.port, "channel=chat:a&token=" + jwt_hs256(
        {"sub": "a", "exp": t - 1}, SECRET))
    eq("SSE with an expired token: 401", e.status, 401)
    e.close()
    e = SSE(s.port, "channel=chat:a&token=" + jwt_hs256(good, SECRET))
    eq("SSE with a valid token: 200", e.status, 200)
    e.close()
    e = SSE(s.port, "channel=priv:x&token=" + jwt_hs256(good, SECRET))
    eq("SSE on a private channel without permission: 403", e.status, 403)
    e.close()

    # API key
    st, js, _ = http_req(s.port, "GET", "/api/info")
    check("API without key: 401 with a JSON error",
          st == 401 and isinstance(js, dict) and
          js.get("error", {}).get("code") is not None, short((st, js)))
    st, js, _ = http_req(s.port, "GET", "/api/info", key="wrong")
    eq("API with a wrong key: 401", st, 401)
    st, js, _ = http_req(s.port, "GET", "/api/info", key="KK")
    eq("API with a longer wrong key: 401", st, 401)
    st, js, _ = http_req(s.port, "POST", "/api/publish",
                         {"channel": "chat:a", "data": 1},
                         headers={"Authorization": "Bearer K"})
    eq("API with another scheme: 401", st, 401)
    st, js, _ = http_req(s.port, "GET", "/api/info", key="K")
    eq("API with the key: 200", st, 200)
    s.stop()

    # a server without an API key refuses every API request
    s2 = Server({}, api_key=None, name="server without api_key")
    st, js, _ = http_req(s2.port, "GET", "/api/info", key="")
    eq("API with no key configured: 401", st, 401)
    s2.stop()

    # require_exp false
    s3 = Server({"anonymous": False, "jwt": {"hmac_secret": SECRET,
                                             "require_exp": False}},
                name="server with require_exp false")
    w = WS(s3.port)
    r = w.connect(jwt_hs256({"sub": "carol"}, SECRET))
    eq("require_exp false: token without exp accepted",
       (r.get("result") or {}).get("user"), "carol")
    w.close()
    w = WS(s3.port)
    r = w.connect(jwt_hs256({"sub": "carol", "exp": now() - 1}, SECRET))
    w.pending.appendleft(r)
    expect_refusal(w, 109, 3006, "require_exp false: expired still refused")
    s3.stop()

    # --jwt-hmac and --no-anonymous flags
    s4 = Server({}, args=["--no-anonymous", "--jwt-hmac", "flagsecret",
                          "--api-key", "FLAGKEY"], name="server from flags")
    w = WS(s4.port)
    r = w.connect(jwt_hs256({"sub": "dave", "exp": now() + 60},
                            "flagsecret"))
    eq("--jwt-hmac: token accepted", (r.get("result") or {}).get("user"),
       "dave")
    w.close()
    w = WS(s4.port)
    r = w.connect()
    eq("--no-anonymous: no token -> 101", err_code(r), 101)
    w.close()
    st, _, _ = http_req(s4.port, "GET", "/api/info", key="FLAGKEY")
    eq("--api-key overrides the config key", st, 200)
    s4.stop()


# ==========================================================================
# HTTP API
# ==========================================================================


def test_http_api():
    s = Server({"namespaces": COMMON_NS, "max_http_body": 2048,
                "jwt": {"hmac_secret": SECRET}})
    t = now()
    m0 = s.metrics()

    w = s.client()
    w.call("subscribe", {"channel": "pub:a"})
    wb = s.client()
    wb.call("subscribe", {"channel": "pub:b"})
    st, js, hd = s.api("POST", "/api/publish",
                       {"channel": "pub:a", "data": {"k": [1, 2]}})
    res = (js or {}).get("result", {}) if isinstance(js, dict) else {}
    check("POST /api/publish: 200 {result:{epoch,offset:1}}",
          st == 200 and res.get("offset") == 1 and
          isinstance(res.get("epoch"), str), short((st, js)))
    check("API answers are application/json",
          hd.get("content-type", "").startswith("application/json"),
          short(hd))
    p = w.push(lambda p: "pub" in p)
    eq("publish: subscriber gets data", p["pub"].get("data"), {"k": [1, 2]})
    st, js, _ = s.api("POST", "/api/publish", {"channel": "pub:a",
                                               "b64": "aGVsbG8="})
    eq("POST /api/publish b64: 200", st, 200)
    p = w.push(lambda p: "pub" in p)
    eq("publish b64: subscriber gets b64", p["pub"].get("b64"), "aGVsbG8=")
    st, js, _ = s.api("POST", "/api/publish", {"channel": "pub:a",
                                               "data": 1, "b64": "AA=="})
    eq("publish with data and b64: 400", st, 400)
    st, js, _ = s.api("POST", "/api/publish", {"channel": "pub:a"})
    eq("publish without data: 400", st, 400)
    st, js, _ = s.api("POST", "/api/publish", {"data": 1})
    eq("publish without channel: 400", st, 400)
    st, js, _ = s.api("POST", "/api/publish", {"channel": "a b", "data": 1})
    check("publish to a bad channel name: 400 code 107",
          st == 400 and js.get("error", {}).get("code") == 107,
          short((st, js)))
    st, js, _ = s.api("POST", "/api/publish", {"channel": "zz:a", "data": 1})
    check("publish to an unknown namespace: 4xx code 102",
          400 <= st < 500 and js.get("error", {}).get("code") == 102,
          short((st, js)))
    st, js, _ = s.api("POST", "/api/publish",
                      {"channel": "pub:a", "data": 1},
                      headers={"Authorization": "APIKEY K"})
    eq("apikey scheme is case-insensitive", st, 200)
    w.pubs("pub:a", 1)

    # broadcast
    st, js, _ = s.api("POST", "/api/broadcast",
                      {"channels": ["pub:a", "pub:b", "bad chan", "zz:q",
                                    "pub:c"], "data": {"all": True}})
    resp = ((js or {}).get("result") or {}).get("responses", []) \
        if isinstance(js, dict) else []
    check("POST /api/broadcast: one response per channel, errors inline",
          st == 200 and len(resp) == 5 and resp[0].get("offset") == 4 and
          resp[1].get("offset") == 1 and
          resp[2].get("error", {}).get("code") == 107 and
          resp[3].get("error", {}).get("code") == 102 and
          resp[4].get("offset") == 1, short((st, js)))
    pa = w.pubs("pub:a", 1)[0]
    pb = wb.pubs("pub:b", 1)[0]
    check("broadcast: both subscribers get it",
          pa.get("data") == {"all": True} and pb.get("data") == {"all": True},
          short((pa, pb)))
    st, js, _ = s.api("POST", "/api/broadcast", {"channels": "pub:a",
                                                 "data": 1})
    eq("broadcast with channels not an array: 400", st, 400)

    # presence, history, channels, info
    st, js, _ = s.api("GET", "/api/presence?channel=pub:a")
    cl = ((js or {}).get("result") or {}).get("clients", {})
    check("GET /api/presence: the subscriber is listed",
          st == 200 and w.client_id in cl and
          cl[w.client_id].get("user") == "", short((st, js)))
    st, js, _ = s.api("GET", "/api/presence")
    eq("GET /api/presence without channel: 400", st, 400)
    st, js, _ = s.api("GET", "/api/presence?channel=zz:a")
    check("GET /api/presence unknown namespace: 4xx", 400 <= st < 500,
          short((st, js)))
    for i in range(6):
        s.publish("pub:h", {"i": i})
    st, js, _ = s.api("GET", "/api/history?channel=pub:h")
    res = (js or {}).get("result", {})
    check("GET /api/history: all, in order, with epoch and offset",
          st == 200 and [p["offset"] for p in res.get("publications", [])] ==
          [1, 2, 3, 4, 5, 6] and res.get("offset") == 6 and
          isinstance(res.get("epoch"), str), short((st, js)))
    check("GET /api/history: data intact",
          [p.get("data") for p in res.get("publications", [])] ==
          [{"i": i} for i in range(6)], short(js))
    st, js, _ = s.api("GET", "/api/history?channel=pub:h&limit=3")
    offs = [p["offset"] for p in
            ((js or {}).get("result") or {}).get("publications", [])]
    check("GET /api/history limit=3: three contiguous publications",
          st == 200 and len(offs) == 3 and offs == sorted(offs) and
          offs[2] - offs[0] == 2, short((st, js)))
    st, js, _ = s.api("GET", "/api/history?channel=pub:h&limit=x")
    eq("GET /api/history bad limit: 400", st, 400)
    st, js, _ = s.api("GET", "/api/channels")
    chans = ((js or {}).get("result") or {}).get("channels", {})
    check("GET /api/channels: subscribed channels with counts",
          st == 200 and chans.get("pub:a", {}).get("subscribers") == 1 and
          chans.get("pub:b", {}).get("subscribers") == 1, short((st, js)))
    st, js, _ = s.api("GET", "/api/info")
    nodes = ((js or {}).get("result") or {}).get("nodes", [])
    check("GET /api/info: a node with name, connections, subscriptions, "
          "uptime", st == 200 and len(nodes) == 1 and
          all(k in nodes[0] for k in ("name", "connections", "subscriptions",
                                      "uptime")) and
          nodes[0]["connections"] == 2 and nodes[0]["subscriptions"] == 2,
          short((st, js)))

    # disconnect
    tok = jwt_hs256({"sub": "u1", "exp": t + 600}, SECRET)
    u1a, u1b = s.client(tok), s.client(tok)
    u2 = s.client(jwt_hs256({"sub": "u2", "exp": t + 600}, SECRET))
    st, js, _ = s.api("POST", "/api/disconnect", {"user": "u1"})
    eq("POST /api/disconnect by user: disconnected 2",
       (st, ((js or {}).get("result") or {}).get("disconnected")), (200, 2))
    for c, n in ((u1a, "first"), (u1b, "second")):
        code, msgs = c.wait_close()
        d = disconnect_of(msgs) or {}
        check(f"disconnect by user: {n} connection gets push 3502 "
              "reconnect false", d.get("code") == 3502 and
              d.get("reconnect") is False, short(msgs))
        eq(f"disconnect by user: {n} connection closes with 3502", code, 3502)
    u2.sync()
    check("disconnect by user: other users stay", True)
    st, js, _ = s.api("POST", "/api/disconnect", {"client": u2.client_id})
    eq("POST /api/disconnect by client: disconnected 1",
       (st, ((js or {}).get("result") or {}).get("disconnected")), (200, 1))
    code, msgs = u2.wait_close()
    check("disconnect by client: push 3502 and close 3502",
          code == 3502 and (disconnect_of(msgs) or {}).get("code") == 3502,
          short((code, msgs)))
    u3 = s.client()
    st, js, _ = s.api("POST", "/api/disconnect",
                      {"client": u3.client_id, "code": 3000})
    code, msgs = u3.wait_close()
    d = disconnect_of(msgs) or {}
    check("disconnect with code 3000: push says reconnect, close 3000",
          code == 3000 and d.get("code") == 3000 and
          d.get("reconnect") is True, short((code, msgs)))
    st, js, _ = s.api("POST", "/api/disconnect", {"client": "c999999"})
    eq("disconnect of an unknown client: 0",
       ((js or {}).get("result") or {}).get("disconnected"), 0)
    st, js, _ = s.api("POST", "/api/disconnect", {})
    eq("disconnect without user or client: 400", st, 400)
    st, js, _ = s.api("POST", "/api/disconnect", {"user": "u1",
                                                  "code": 1000})
    eq("disconnect with a code outside 3000-4999: 400", st, 400)

    # health, metrics
    st, js, _ = http_req(s.port, "GET", "/health")
    eq("GET /health: 200 {status: ok}", (st, js), (200, {"status": "ok"}))
    st, text, hd = http_req(s.port, "GET", "/metrics", raw_text=True)
    vals, bad = parse_metrics(text)
    check("GET /metrics: 200 text/plain", st == 200 and
          hd.get("content-type", "").startswith("text/plain"), short(hd))
    check("GET /metrics: every line is `name{labels} value`", not bad,
          short(bad))
    need = ["herald_connections", "herald_subscriptions",
            "herald_messages_in_total", "herald_messages_out_total",
            "herald_bytes_in_total", "herald_bytes_out_total",
            "herald_drops_total", "herald_slow_consumer_disconnects_total",
            "herald_partial_message_bytes",
            "herald_partial_message_refusals_total",
            "herald_delivery_latency_seconds_count",
            "herald_io_recv_pool_bytes", "herald_io_recv_pool_waits_total",
            "herald_io_recv_placed_total"]
    check("GET /metrics: connections, subscriptions, messages, bytes, drops,"
          " slow consumers, latency histogram",
          all(k in vals for k in need) and
          any(k.startswith("herald_delivery_latency_seconds_bucket{")
              for k in vals), short(sorted(vals)))
    types = {}
    for line in text.split("\n"):
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ", 3)
            types[name] = typ
    check("GET /metrics: every family has a # TYPE",
          all(k.split("{")[0].rsplit("_bucket", 1)[0].rsplit("_sum", 1)[0]
              .rsplit("_count", 1)[0] in types or k.split("{")[0] in types
              for k in vals), short(types))
    check("GET /metrics: histogram buckets are cumulative and end at +Inf "
          "= count",
          vals.get('herald_delivery_latency_seconds_bucket{le="+Inf"}') ==
          vals.get("herald_delivery_latency_seconds_count"), short(vals))
    # The loop's receive pool exists on io_uring only (64 KiB at least).
    uring = os.environ.get("HERALD_IO_BACKEND") == "io_uring"
    pool = vals.get("herald_io_recv_pool_bytes", -1)
    check("GET /metrics: herald_io_recv_pool_bytes is %s on %s" %
          (">= 64 KiB" if uring else "0", "io_uring" if uring else "epoll"),
          pool >= 65536 if uring else pool == 0, short(pool))
    pub0 = vals.get("herald_publications_total", 0)
    out0 = vals.get("herald_messages_out_total", 0)
    check("metrics: counters grew since start",
          vals.get("herald_publications_total", 0) >
          m0.get("herald_publications_total", 0), short((m0, vals)))
    for i in range(5):
        s.publish("pub:a", {"m": i})
    w.pubs("pub:a", 5)
    vals2 = s.metrics()
    check("metrics: publications_total +5 after 5 publishes",
          vals2.get("herald_publications_total", 0) - pub0 == 5,
          short((pub0, vals2.get("herald_publications_total"))))
    check("metrics: messages_out_total +5 or more",
          vals2.get("herald_messages_out_total", 0) - out0 >= 5,
          short((out0, vals2.get("herald_messages_out_total"))))

    # HTTP errors
    st, js, _ = s.api("GET", "/api/publish")
    check("GET /api/publish: 405 with a JSON error",
          st == 405 and isinstance(js, dict) and "error" in js,
          short((st, js)))
    st, js, _ = s.api("POST", "/api/info", {})
    eq("POST /api/info: 405", st, 405)
    st, js, _ = s.api("DELETE", "/api/channels")
    eq("DELETE /api/channels: 405", st, 405)
    st, js, _ = s.api("GET", "/api/nosuch")
    check("GET /api/nosuch: 404 with a JSON error",
          st == 404 and isinstance(js, dict) and "error" in js,
          short((st, js)))
    st, js, _ = http_req(s.port, "GET", "/no/such/file")
    eq("GET /no/such/file: 404", st, 404)
    st, js, _ = s.api("POST", "/api/publish", raw_body=b'{"channel": "pub:a"',
                      headers={"Content-Type": "application/json"})
    check("bad JSON body: 400 with a JSON error",
          st == 400 and isinstance(js, dict) and "error" in js,
          short((st, js)))
    st, js, _ = s.api("POST", "/api/publish", raw_body=b'[1,2]')
    eq("JSON body that is not an object: 400", st, 400)
    st, js, _ = s.api("POST", "/api/publish",
                      {"channel": "pub:a", "data": "x" * 4000})
    eq("body over max_http_body: 413", st, 413)
    st, js, _ = s.api("POST", "/api/publish",
                      {"channel": "pub:a", "data": "x" * 1500})
    eq("body under max_http_body: 200", st, 200)

    # static files: the demo page only with the demo
    st, text, hd = http_req(s.port, "GET", "/", raw_text=True)
    eq("GET / without demo: 404", st, 404)
    st, text, hd = http_req(s.port, "GET", "/herald.js", raw_text=True)
    eq("GET /herald.js without demo: 404", st, 404)
    w.close()
    wb.close()
    s.stop()
    d = Server({"demo": True}, name="demo server")
    st, text, hd = http_req(d.port, "GET", "/", raw_text=True)
    check("GET / with demo: HTML", st == 200 and
          hd.get("content-type", "").startswith("text/html") and
          "<html" in text.lower(), short((st, hd)))
    st, text, hd = http_req(d.port, "GET", "/herald.js", raw_text=True)
    check("GET /herald.js with demo: JavaScript", st == 200 and
          "javascript" in hd.get("content-type", "") and "Herald" in text,
          short((st, hd)))
    d.stop()


# ==========================================================================
# History and recovery
# ==========================================================================


def test_recovery():
    s = Server({"namespaces": COMMON_NS + [
        {"name": "rec", "history_size": 50, "history_ttl": 300}]})
    w = s.client()
    r = w.call("subscribe", {"channel": "rec:a"})
    epoch = r["result"]["epoch"]
    for i in range(1, 21):
        s.publish("rec:a", {"seq": i})
    seen = w.pubs("rec:a", 8)
    last = seen[-1]["offset"]
    eq("first 8 seen live", [p["offset"] for p in seen], list(range(1, 9)))
    w.abort()
    w = s.client()
    r = w.call("subscribe", {"channel": "rec:a",
                             "since": {"epoch": epoch, "offset": last}})
    res = r.get("result", {})
    pubs = res.get("publications", [])
    check("reconnect with since: recovered true", res.get("recovered") is True,
          short(r))
    eq("reconnect with since: exactly the missed ones, in order",
       [(p["offset"], p["data"]["seq"]) for p in pubs],
       [(i, i) for i in range(9, 21)])
    eq("reconnect with since: result position is the current one",
       (res.get("epoch"), res.get("offset")), (epoch, 20))
    s.publish("rec:a", {"seq": 21})
    p = w.pubs("rec:a", 1)[0]
    eq("after recovery the next push is 21 (no duplicate, no gap)",
       p["offset"], 21)
    no_push(w, "rec:a", "nothing else is pushed")

    r = w.call("subscribe", {"channel": "rec:b",
                             "since": {"epoch": "nope", "offset": 0}})
    res = r.get("result", {})
    check("since on a channel that never existed: recovered false",
          res.get("recovered") is False and "publications" not in res,
          short(r))

    # since == current position: nothing missed
    w2 = s.client()
    r = w2.call("subscribe", {"channel": "rec:a",
                              "since": {"epoch": epoch, "offset": 21}})
    res = r.get("result", {})
    check("since at the current offset: recovered true, no publications",
          res.get("recovered") is True and not res.get("publications"),
          short(r))
    w2.close()

    # beyond history_size (small: 5)
    for i in range(1, 11):
        s.publish("small:a", {"seq": i})
    st, js, _ = s.api("GET", "/api/history?channel=small:a")
    res = js["result"]
    eq("history_size 5 keeps the last 5",
       [p["offset"] for p in res["publications"]], [6, 7, 8, 9, 10])
    sepoch = res["epoch"]
    w3 = s.client()
    r = w3.call("subscribe", {"channel": "small:a",
                              "since": {"epoch": sepoch, "offset": 2}})
    res = r.get("result", {})
    check("since beyond history_size: recovered false, current position, "
          "no publications",
          res.get("recovered") is False and res.get("offset") == 10 and
          res.get("epoch") == sepoch and not res.get("publications"),
          short(r))
    s.publish("small:a", {"seq": 11})
    eq("unrecovered subscriber still gets live pushes",
       w3.pubs("small:a", 1)[0]["offset"], 11)
    w4 = s.client()
    r = w4.call("subscribe", {"channel": "small:a",
                              "since": {"epoch": sepoch, "offset": 6}})
    res = r.get("result", {})
    check("since at the edge of history_size: recovered true, 7..11",
          res.get("recovered") is True and
          [p["offset"] for p in res.get("publications", [])] ==
          [7, 8, 9, 10, 11], short(r))
    # wrong epoch
    wrong = ("b" if sepoch[0] == "a" else "a") + sepoch[1:]
    w5 = s.client()
    r = w5.call("subscribe", {"channel": "small:a",
                              "since": {"epoch": wrong, "offset": 10}})
    res = r.get("result", {})
    check("wrong epoch: recovered false with the real epoch",
          res.get("recovered") is False and res.get("epoch") == sepoch and
          not res.get("publications"), short(r))
    w6 = s.client()
    r = w6.call("subscribe", {"channel": "small:a",
                              "since": {"epoch": sepoch, "offset": 99}})
    check("since ahead of the stream: recovered false",
          (r.get("result") or {}).get("recovered") is False, short(r))
    r = w6.call("history", {"channel": "small:a",
                            "since": {"epoch": sepoch, "offset": 1}})
    res = r.get("result", {})
    check("history since beyond history_size: recovered false, no pubs",
          res.get("recovered") is False and not res.get("publications"),
          short(r))
    r = w6.call("subscribe", {"channel": "rec:x", "since": {"offset": 1}})
    check("since without epoch: 107", is_error(r, 107), short(r))
    r = w6.call("subscribe", {"channel": "rec:x",
                              "since": {"epoch": "e", "offset": -1}})
    check("since with a negative offset: 107", is_error(r, 107), short(r))

    # TTL
    for i in range(1, 4):
        s.publish("ttl:a", {"seq": i})
    st, js, _ = s.api("GET", "/api/history?channel=ttl:a")
    tepoch = js["result"]["epoch"]
    w7 = s.client()
    r = w7.call("subscribe", {"channel": "ttl:a",
                              "since": {"epoch": tepoch, "offset": 1}})
    check("before history_ttl: recovered true",
          (r.get("result") or {}).get("recovered") is True, short(r))
    w7.close()
    time.sleep(2.5)
    w8 = s.client()
    r = w8.call("subscribe", {"channel": "ttl:a",
                              "since": {"epoch": tepoch, "offset": 1}})
    res = r.get("result", {})
    check("after history_ttl (1 s, waited 2.5 s): recovered false",
          res.get("recovered") is False and not res.get("publications"),
          short(r))
    st, js, _ = s.api("GET", "/api/history?channel=ttl:a")
    check("after history_ttl: history is empty",
          not js["result"]["publications"], short(js))
    for c in (w, w3, w4, w5, w6, w8):
        c.close()
    s.stop()


# ==========================================================================
# Presence, join and leave
# ==========================================================================


def test_presence():
    s = Server({"namespaces": COMMON_NS, "jwt": {"hmac_secret": SECRET}})
    a = s.client(jwt_hs256({"sub": "ann", "exp": now() + 600}, SECRET))
    a.call("subscribe", {"channel": "pub:room"})
    a.sync()
    a.pending.clear()
    b = s.client(jwt_hs256({"sub": "bob", "exp": now() + 600,
                            "info": {"color": "red"}}, SECRET))
    b.call("subscribe", {"channel": "pub:room"})
    # a's own join may come after its subscribe reply (with several loops
    # or nodes it travels through the channel's owner): look for bob's.
    j = a.push(lambda p: "join" in p and p["join"].get("user") == "bob")
    check("join push with client, user and info",
          j.get("channel") == "pub:room" and
          j["join"] == {"client": b.client_id, "user": "bob",
                        "info": {"color": "red"}}, short(j))
    r = a.call("presence", {"channel": "pub:room"})
    cl = (r.get("result") or {}).get("clients", {})
    check("presence lists both, with info",
          cl.get(a.client_id, {}).get("user") == "ann" and
          cl.get(b.client_id) == {"user": "bob", "info": {"color": "red"}},
          short(r))
    b.call("unsubscribe", {"channel": "pub:room"})
    lv = a.push(lambda p: "leave" in p)
    check("leave push on unsubscribe",
          lv["leave"].get("client") == b.client_id and
          lv["leave"].get("user") == "bob" and "info" not in lv["leave"],
          short(lv))
    b.call("subscribe", {"channel": "pub:room"})
    a.push(lambda p: "join" in p and p["join"].get("user") == "bob")
    bid = b.client_id
    b.abort()
    lv = a.push(lambda p: "leave" in p, 5)
    eq("leave push when the connection drops", lv["leave"].get("client"), bid)
    r = a.call("presence", {"channel": "pub:room"})
    eq("presence after leave: only ann",
       list((r.get("result") or {}).get("clients", {}).keys()), [a.client_id])

    # join_leave off
    a.call("subscribe", {"channel": "nojl:room"})
    c = s.client()
    c.call("subscribe", {"channel": "nojl:room"})
    no_push(a, "nojl:room", "no join push where join_leave is off")
    r = a.call("presence", {"channel": "nojl:room"})
    check("presence still works where join_leave is off",
          c.client_id in (r.get("result") or {}).get("clients", {}), short(r))
    c.close()
    time.sleep(0.2)
    no_push(a, "nojl:room", "no leave push where join_leave is off")
    a.close()
    s.stop()


# ==========================================================================
# SSE
# ==========================================================================


def sse_offset(ev):
    """The offset of an SSE publication event, from either shape."""
    d = json.loads(ev["data"])
    return d.get("offset", (d.get("pub") or {}).get("offset"))


def sse_data(ev):
    d = json.loads(ev["data"])
    return d["data"] if "data" in d else (d.get("pub") or {}).get("data")


def test_sse():
    s = Server({"namespaces": COMMON_NS, "sse_keepalive": 1})
    e = SSE(s.port, "channel=pub:s")
    check("GET /sse: 200 text/event-stream", e.status == 200 and
          e.headers.get("content-type", "").startswith("text/event-stream"),
          e.head)
    time.sleep(0.1)
    pos = [s.publish("pub:s", {"i": i}) for i in range(3)]
    epoch = pos[0]["epoch"]
    evs = [e.event() for _ in range(3)]
    eq("SSE ids are epoch:offset", [ev["id"] for ev in evs],
       [f"{epoch}:{i}" for i in (1, 2, 3)])
    d = json.loads(evs[0]["data"])
    check("SSE data is {channel, pub: {offset, data}} as in protocol.md",
          d == {"channel": "pub:s", "pub": {"offset": 1, "data": {"i": 0}}},
          short(evs[0]["data"]))
    eq("SSE data carries the publications (any shape)",
       [sse_data(ev) for ev in evs], [{"i": i} for i in range(3)])
    # JSON with newlines inside
    st, js, _ = s.api("POST", "/api/publish", raw_body=(
        b'{"channel": "pub:s", "data": {\n"a":\n1\r\n}}'))
    eq("publish JSON with newlines: 200", st, 200)
    ev = e.event()
    check("SSE: JSON with newlines split over data lines parses",
          sse_data(ev) == {"a": 1}, short(ev))
    ev = e.event(timeout=4, comments=True)
    check("SSE keepalive comment within sse_keepalive",
          "ping" in ev["comments"], short(ev))
    e.close()

    # Last-Event-ID resume
    for i in range(3, 6):
        s.publish("pub:s", {"i": i})
    e = SSE(s.port, "channel=pub:s", last_event_id=f"{epoch}:2")
    evs = [e.event() for _ in range(5)]
    eq("Last-Event-ID epoch:2: resumes with 3..7",
       [sse_offset(ev) for ev in evs], [3, 4, 5, 6, 7])
    eq("Last-Event-ID: ids continue", evs[-1]["id"], f"{epoch}:7")
    s.publish("pub:s", {"i": "live"})
    ev = e.event()
    eq("after resuming, live events follow", (sse_offset(ev), sse_data(ev)),
       (8, {"i": "live"}))
    e.close()
    e = SSE(s.port, "channel=pub:s", last_event_id=f"{epoch}:8")
    s.publish("pub:s", {"i": 9})
    ev = e.event()
    eq("Last-Event-ID at the end: next is the live one", sse_offset(ev), 9)
    e.close()

    # unknown epoch
    e = SSE(s.port, "channel=pub:s", last_event_id="bogusepoch:3")
    ev = e.event()
    check("unknown Last-Event-ID epoch: first event is unrecovered with the "
          "current position", ev["event"] == "unrecovered" and
          ev["id"] == f"{epoch}:9", short(ev))
    s.publish("pub:s", {"i": 10})
    ev = e.event()
    eq("after unrecovered, the live stream", sse_offset(ev), 10)
    e.close()
    e = SSE(s.port, "channel=small:z", last_event_id="x:1")
    ev = e.event()
    eq("Last-Event-ID on a new channel: unrecovered", ev["event"],
       "unrecovered")
    e.close()

    # errors
    e = SSE(s.port, "nochannel=1")
    eq("SSE without channel: 400", e.status, 400)
    e.close()
    e = SSE(s.port, "channel=zz:a")
    eq("SSE unknown namespace: 404", e.status, 404)
    e.close()
    e = SSE(s.port, "channel=priv:a")
    eq("SSE private channel: 403", e.status, 403)
    e.close()
    # SSE counted as a connection, and gone when it closes
    e = SSE(s.port, "channel=pub:count")
    time.sleep(0.2)
    st, js, _ = s.api("GET", "/api/channels")
    eq("SSE subscriber counted in /api/channels",
       js["result"]["channels"].get("pub:count", {}).get("subscribers"), 1)
    e.close()
    time.sleep(0.3)
    s.publish("pub:count", 1)
    st, js, _ = s.api("GET", "/api/channels")
    check("closed SSE subscriber removed",
          js["result"]["channels"].get("pub:count", {}).get("subscribers", 0)
          == 0, short(js))
    s.stop()


def sse_ids(id_):
    """{channel: (epoch, offset)} of a several-channel event id."""
    out = {}
    for item in id_.split(";"):
        ch, _, pos = item.rpartition("@")
        epoch, _, off = pos.rpartition(":")
        out[ch] = (epoch, int(off))
    return out


def sse_error(e):
    """(status, error message) of a refused SSE request (the connection
    stays open: read until the JSON body is whole)."""
    msg = None
    for _ in range(40):
        body = e.body_all(timeout=0.05)
        try:
            msg = json.loads(body)["error"]["message"]
            break
        except (ValueError, KeyError, TypeError):
            msg = body
    e.close()
    return e.status, msg


def test_sse_channels():
    s = Server({"namespaces": COMMON_NS, "max_sse_channels": 3})
    q = "channel=pub:m1&channel=pub:m2&channel=small:m3"
    e = SSE(s.port, q)
    eq("three channels on one stream: 200", e.status, 200)
    time.sleep(0.1)
    e1 = s.publish("pub:m1", {"a": 1})["epoch"]
    e2 = s.publish("pub:m2", {"b": 1})["epoch"]
    e3 = s.publish("small:m3", {"c": 1})["epoch"]
    s.publish("pub:m1", {"a": 2})
    evs = [e.event() for _ in range(4)]
    # Order is promised within a channel, not across channels (with
    # --threads 2 the channels may live on different loops).
    chans = [json.loads(ev["data"])["channel"] for ev in evs]
    eq("every event names its channel", sorted(chans),
       ["pub:m1", "pub:m1", "pub:m2", "small:m3"])
    eq("each channel's publications in order",
       {c: [sse_data(ev) for ev, ch in zip(evs, chans) if ch == c]
        for c in ("pub:m1", "pub:m2", "small:m3")},
       {"pub:m1": [{"a": 1}, {"a": 2}], "pub:m2": [{"b": 1}],
        "small:m3": [{"c": 1}]})
    first = {"pub:m1": 0, "pub:m2": 0, "small:m3": 0}
    first[chans[0]] = 1
    eq("the first id holds every channel's position", evs[0]["id"],
       f"pub:m1@{e1}:{first['pub:m1']};pub:m2@{e2}:{first['pub:m2']};"
       f"small:m3@{e3}:{first['small:m3']}")
    eq("the last id: the position of each after its last event",
       sse_ids(evs[-1]["id"]),
       {"pub:m1": (e1, 2), "pub:m2": (e2, 1), "small:m3": (e3, 1)})
    last = evs[-1]["id"]
    e.close()

    # Missed while away: two on m1, one on m2, none on m3.
    s.publish("pub:m1", {"a": 3})
    s.publish("pub:m2", {"b": 2})
    s.publish("pub:m1", {"a": 4})
    e = SSE(s.port, q, last_event_id=last)
    evs = [e.event() for _ in range(3)]
    got = [(json.loads(ev["data"])["channel"], sse_offset(ev)) for ev in evs]
    eq("Last-Event-ID of three: each channel recovers what it missed",
       sorted(got), [("pub:m1", 3), ("pub:m1", 4), ("pub:m2", 2)])
    eq("and in order within the channel",
       [o for c, o in got if c == "pub:m1"], [3, 4])
    check("no unrecovered event when every position holds",
          all(ev["event"] is None for ev in evs), short(evs))
    s.publish("small:m3", {"c": 2})
    ev = e.event()
    eq("then live, the id moved on for every channel", sse_ids(ev["id"]),
       {"pub:m1": (e1, 4), "pub:m2": (e2, 2), "small:m3": (e3, 2)})
    last = ev["id"]
    e.close()

    # The same through ?last_event_id= (a new EventSource cannot set the
    # header).
    s.publish("pub:m2", {"b": 3})
    e = SSE(s.port, q + "&last_event_id=" + urllib.parse.quote(last))
    ev = e.event()
    eq("?last_event_id= resumes as the header does",
       (json.loads(ev["data"])["channel"], sse_offset(ev), ev["event"]),
       ("pub:m2", 3, None))
    e.close()
    e = SSE(s.port, q + "&last_event_id=bogus", last_event_id=last)
    s.publish("pub:m1", {"a": 5})
    evs = [e.event() for _ in range(2)]
    eq("the header wins over ?last_event_id=",
       [(json.loads(ev["data"])["channel"], sse_offset(ev), ev["event"])
        for ev in evs], [("pub:m2", 3, None), ("pub:m1", 5, None)])
    e.close()

    # A bad position for one channel: unrecovered for that one only.
    lei = (f"pub:m1@{e1}:5;pub:m2@nonsense;small:m3@{e3}:2")
    s.publish("pub:m1", {"a": 6})
    e = SSE(s.port, q, last_event_id=lei)
    ev = e.event()
    check("a malformed item: unrecovered for its channel, with its present",
          ev["event"] == "unrecovered" and json.loads(ev["data"]) ==
          {"channel": "pub:m2", "epoch": e2, "offset": 3}, short(ev))
    ev = e.event()
    eq("the other channels recover", (json.loads(ev["data"])["channel"],
                                      sse_offset(ev), ev["event"]),
       ("pub:m1", 6, None))
    e.close()
    e = SSE(s.port, q, last_event_id=f"pub:m1@{e1}:6;pub:m2@wrongepoch:1;"
            f"small:m3@{e3}:2")
    ev = e.event()
    check("an unknown epoch: unrecovered for that channel",
          ev["event"] == "unrecovered" and
          json.loads(ev["data"])["channel"] == "pub:m2", short(ev))
    s.publish("small:m3", {"c": 3})
    ev = e.event()
    check("and nothing else before the live stream",
          ev["event"] is None and json.loads(ev["data"])["channel"] ==
          "small:m3", short(ev))
    e.close()
    # small:m3 keeps 5: a position 6 back is gone, pub:m1's is not.
    for i in range(6):
        s.publish("small:m3", {"c": 10 + i})
    e = SSE(s.port, q, last_event_id=f"pub:m1@{e1}:5;pub:m2@{e2}:3;"
            f"small:m3@{e3}:3")
    evs = [e.event() for _ in range(2)]
    check("beyond one channel's history: unrecovered for it, first",
          evs[0]["event"] == "unrecovered" and
          json.loads(evs[0]["data"]) ==
          {"channel": "small:m3", "epoch": e3, "offset": 9}, short(evs[0]))
    eq("the unrecovered event's id already holds the channel's present",
       sse_ids(evs[0]["id"])["small:m3"], (e3, 9))
    eq("while the others recover", (json.loads(evs[1]["data"])["channel"],
                                    sse_offset(evs[1])), ("pub:m1", 6))
    e.close()
    # Positions for some channels only: the others start live.
    s.publish("pub:m2", {"b": 4})
    e = SSE(s.port, q, last_event_id=f"pub:m2@{e2}:3;pub:other@{e2}:1")
    ev = e.event()
    eq("a channel without an item starts live, items of other channels are "
       "ignored", (json.loads(ev["data"])["channel"], sse_offset(ev),
                   ev["event"]), ("pub:m2", 4, None))
    e.close()
    # Garbage that names no channel: none can be vouched for.
    for lei in ("garbage", f"{e1}:6"):
        e = SSE(s.port, q, last_event_id=lei)
        evs = [e.event() for _ in range(3)]
        eq(f"Last-Event-ID {lei!r} on a stream of three: unrecovered for "
           "each", [(ev["event"], json.loads(ev["data"])["channel"])
                    for ev in evs],
           [("unrecovered", "pub:m1"), ("unrecovered", "pub:m2"),
            ("unrecovered", "small:m3")])
        e.close()
    # Malformed items, each for pub:m1 only: its channel is unrecovered,
    # pub:m2 (a good item) is not.
    for junk in ("pub:m1@", "pub:m1@:5", f"pub:m1@{e1}:", f"pub:m1@{e1}:x",
                 f"pub:m1@{e1}:99999999999999999999999",
                 f"pub:m1@{'e' * 17}:1", f"pub:m1@{e1}:-1",
                 f"pub:m1@{e1} :1"):
        e = SSE(s.port, q, last_event_id=f";;{junk};pub:m2@{e2}:4;;")
        ev = e.event()
        check(f"Last-Event-ID item {junk[:30]!r}: unrecovered for pub:m1 "
              "only", ev["event"] == "unrecovered" and
              json.loads(ev["data"])["channel"] == "pub:m1", short(ev))
        s.publish("pub:m2", {"b": "probe"})
        ev = e.event()
        check("  and pub:m2 goes on", ev["event"] is None and
              json.loads(ev["data"])["channel"] == "pub:m2", short(ev))
        e.close()
    # Items that name no channel of the stream ("pub:m1@" is a channel
    # name), none at all, garbage: a stream all the same.
    for junk in ("@", ";;;", "@e:1", "pub:m1@@:1", "x" * 7000):
        e = SSE(s.port, q, last_event_id=junk)
        s.publish("pub:m1", {"a": "probe"})
        evs = [e.event()]
        while evs[-1]["event"] == "unrecovered":
            evs.append(e.event())
        check(f"Last-Event-ID {junk[:12]!r}: a stream, then the live one",
              e.status == 200 and
              json.loads(evs[-1]["data"])["channel"] == "pub:m1" and
              len(evs) in (1, 4), (e.status, short(evs)))
        e.close()
    e = SSE(s.port, q, last_event_id=f"pub:m1@{e1}:3;pub:m1@{e1}:4")
    ev = e.event()
    check("a channel given twice in Last-Event-ID: unrecovered for it",
          ev["event"] == "unrecovered" and
          json.loads(ev["data"])["channel"] == "pub:m1", short(ev))
    e.close()

    # One channel: the original id form, and the new one accepted.
    e = SSE(s.port, "channel=pub:m2", last_event_id=f"pub:m2@{e2}:3")
    ev = e.event()
    eq("one channel: ids stay epoch:offset, ch@epoch:offset is understood",
       (ev["id"], sse_offset(ev)), (f"{e2}:4", 4))
    e.close()

    # Subscribers counted on every channel, gone with the stream.
    e = SSE(s.port, "channel=pub:c1&channel=pub:c2")
    time.sleep(0.2)
    st, js, _ = s.api("GET", "/api/channels")
    chans = js["result"]["channels"]
    eq("one stream counts as a subscriber of each of its channels",
       [chans.get(c, {}).get("subscribers") for c in ("pub:c1", "pub:c2")],
       [1, 1])
    e.close()
    time.sleep(0.3)
    st, js, _ = s.api("GET", "/api/channels")
    chans = js["result"]["channels"]
    check("and removed from each when it closes",
          all(chans.get(c, {}).get("subscribers", 0) == 0
              for c in ("pub:c1", "pub:c2")), short(chans))

    # Refusals, each naming what is wrong.
    st, msg = sse_error(SSE(s.port, q + "&channel=pub:m4"))
    check("over max_sse_channels: 400 naming the limit",
          st == 400 and "max_sse_channels" in msg and "at most 3" in msg,
          (st, msg))
    st, msg = sse_error(SSE(s.port, "channel=pub:a&channel=pub:a"))
    check("a channel given twice: 400", st == 400 and "pub:a" in msg and
          "twice" in msg, (st, msg))
    st, msg = sse_error(SSE(s.port, "channel=pub:a&channel=bad%20name"))
    check("a bad channel name among several: 400 saying which",
          st == 400 and "channel 2" in msg, (st, msg))
    st, msg = sse_error(SSE(s.port, "channel=pub:a&channel="))
    eq("an empty channel=: 400", st, 400)
    st, msg = sse_error(SSE(s.port, "channel=pub:a&channel=zz:b"))
    check("an unknown namespace among several: 404 naming the channel",
          st == 404 and "zz:b" in msg, (st, msg))
    st, msg = sse_error(SSE(s.port, "channel=pub:a&channel=priv:b"))
    check("a private channel among several: 403 naming it",
          st == 403 and "priv:b" in msg, (st, msg))
    st, msg = sse_error(SSE(s.port, q.replace("small:m3", "pub:x") +
                            "&last_event_id=%00"))
    check("?last_event_id= with %00: 400", st == 400 and
          "last_event_id" in msg, (st, msg))
    time.sleep(0.2)
    st, js, _ = s.api("GET", "/api/channels")
    check("refused streams leave no subscriber behind",
          all(v.get("subscribers", 0) == 0 for k, v in
              js["result"]["channels"].items() if k.startswith("pub:a") or
              k.startswith("priv:")), short(js))
    s.stop()

    # The default limit is 32.
    s = Server({"namespaces": COMMON_NS})
    q32 = "&".join(f"channel=pub:n{i}" for i in range(32))
    e = SSE(s.port, q32)
    eq("32 channels on one stream by default: 200", e.status, 200)
    e.close()
    st, msg = sse_error(SSE(s.port, q32 + "&channel=pub:n32"))
    check("33: 400 naming max_sse_channels",
          st == 400 and "max_sse_channels" in msg and "at most 32" in msg,
          (st, msg))
    # 31 channels (under the limit) of 254 bytes: a head over 8 KiB.
    long_q = "&".join(f"channel=pub:{'x' * 248}{i:02d}" for i in range(31))
    e = SSE(s.port, long_q)
    eq("a query over the 8 KiB request head: 431", e.status, 431)
    e.close()
    s.stop()


# ==========================================================================
# A real client library: python3-websockets (with permessage-deflate)
# ==========================================================================


def test_websockets_library():
    try:
        import websockets
    except ImportError:
        check("python3-websockets installed (skipped)", True)
        return
    s = Server({"namespaces": COMMON_NS,
                "allowed_origins": ["https://app.example"]})

    async def main():
        url = f"ws://127.0.0.1:{s.port}/connection/websocket"
        async with websockets.connect(url, origin="https://app.example") as ws:
            await ws.send(json.dumps({"id": 1, "connect": {}}))
            r = json.loads(await asyncio.wait_for(ws.recv(), 5))
            check("websockets: connect", "result" in r, short(r))
            await ws.send(json.dumps(
                {"id": 2, "subscribe": {"channel": "pub:lib"}}))
            r = json.loads(await asyncio.wait_for(ws.recv(), 5))
            check("websockets: subscribe", "result" in r, short(r))
            big = "z" * 100000
            await asyncio.get_running_loop().run_in_executor(
                None, s.publish, "pub:lib", {"big": big})
            while True:
                m = json.loads(await asyncio.wait_for(ws.recv(), 5))
                if "push" in m and "pub" in m["push"]:
                    break
            check("websockets: a 100 kB publication arrives intact",
                  m["push"]["pub"]["data"] == {"big": big}, "")
        try:
            async with websockets.connect(url, origin="https://bad.example"):
                check("websockets: bad origin refused", False, "accepted")
        except websockets.exceptions.InvalidStatusCode as e:
            eq("websockets: bad origin refused with 403", e.status_code, 403)

    asyncio.run(asyncio.wait_for(main(), 30))
    s.stop()


# ==========================================================================
# Reconnect under continuous publishing
# ==========================================================================


class Publisher(threading.Thread):
    """Posts n sequence-numbered messages as fast as it can over one
    keep-alive connection."""

    def __init__(self, port, channel, n, pad=0):
        super().__init__(daemon=True)
        self.port, self.channel, self.n, self.pad = port, channel, n, pad
        self.last = None
        self.error = None
        self.done_at = None

    def run(self):
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            for i in range(self.n):
                data = {"seq": i}
                if self.pad:
                    data["pad"] = "p" * self.pad
                st, js, _ = http_req(self.port, "POST", "/api/publish",
                                     {"channel": self.channel, "data": data},
                                     key="K", conn=conn)
                if st != 200:
                    raise RuntimeError(f"publish {i}: {st} {js}")
                self.last = js["result"]
        except Exception as e:  # noqa: BLE001
            self.error = e
        finally:
            self.done_at = time.monotonic()
            conn.close()


def reconnect_run(s, channel, n, reconnects, interval, pause):
    """A subscriber that reconnects with since every `interval` seconds (at
    most `reconnects` times) while n messages are published, staying away
    up to `pause` seconds each time. Returns (received seqs with None where
    it was told recovered:false, recovered-false count, problems,
    reconnects, reconnects made while the publisher was running)."""
    rnd = random.Random(42)
    w = s.client()
    r = w.call("subscribe", {"channel": channel})
    epoch, offset = r["result"]["epoch"], r["result"]["offset"]
    pub = Publisher(s.port, channel, n)
    pub.start()
    seqs, unrecovered, problems = [], 0, []
    done, during = 0, 0
    last_connect = progress = time.monotonic()
    deadline = time.monotonic() + 60

    def take(p):
        nonlocal offset
        if p["offset"] != offset + 1:
            problems.append(f"offset {p['offset']} after {offset}")
        offset = p["offset"]
        seqs.append(p["data"]["seq"])

    while time.monotonic() < deadline:
        if pub.done_at is not None and pub.last is not None and \
                pub.last["offset"] == offset:
            break
        if pub.error:
            problems.append(f"publisher: {pub.error}")
            break
        if done < reconnects and \
                time.monotonic() - last_connect >= interval:
            if done % 2:
                w.abort()  # TCP gone, no close handshake
            else:
                w.close()
            if pub.done_at is None:
                during += 1
            done += 1
            time.sleep(pause * rnd.random())
            w = s.client()
            last_connect = time.monotonic()
            r = w.call("subscribe", {"channel": channel, "since":
                                     {"epoch": epoch, "offset": offset}})
            res = r.get("result")
            if res is None:
                problems.append(f"resubscribe: {r}")
                break
            if res.get("recovered") is True:
                for p in res.get("publications", []):
                    take(p)
                if res["offset"] != offset:
                    problems.append(f"result offset {res['offset']} but "
                                    f"publications end at {offset}")
            else:
                unrecovered += 1
                seqs.append(None)  # the explicit signal: a gap may follow
                epoch, offset = res["epoch"], res["offset"]
            continue
        try:
            p = w.push(lambda p: "pub" in p, 0.5)
        except TimeoutError:
            # The publisher may still be waiting for its last answer.
            if time.monotonic() - progress > 10:
                problems.append("stalled: no publication for 10 s")
                break
            continue
        progress = time.monotonic()
        take(p["pub"])
    pub.join(30)
    w.close()
    return seqs, unrecovered, problems, done, during


def check_sequence(seqs, n, what):
    """No duplicates, in order; gaps only right after a None marker."""
    got = [x for x in seqs if x is not None]
    check(f"{what}: no duplicates", len(got) == len(set(got)),
          f"{len(got) - len(set(got))} duplicates")
    check(f"{what}: in order", got == sorted(got), "")
    silent = []
    prev = -1
    after_marker = False
    for x in seqs:
        if x is None:
            after_marker = True
            continue
        if x != prev + 1 and not after_marker:
            silent.append((prev, x))
        prev, after_marker = x, False
    check(f"{what}: no silent gaps", not silent, short(silent))
    return got


def test_reconnect_under_publishing():
    n = 4000
    s = Server({"namespaces": [
        {"name": "seq", "history_size": 5000, "history_ttl": 300},
        {"name": "tiny", "history_size": 5, "history_ttl": 300}]})
    t0 = time.monotonic()
    seqs, unrec, problems, k, during = reconnect_run(s, "seq:a", n, 12,
                                                     0.06, 0.03)
    print(f"     ({k} reconnects, {during} while publishing, "
          f"{time.monotonic() - t0:.2f}s)")
    check("reconnected at least 5 times while the publisher was running",
          during >= 5, f"{during} of {k}")
    check("no protocol problems", not problems, short(problems))
    got = check_sequence(seqs, n, "history 5000")
    check("every sequence number exactly once, in order (history holds "
          "them all, so no recovered:false)",
          unrec == 0 and got == list(range(n)),
          f"unrecovered={unrec} got {len(got)}")
    # A history too small for the pauses: what is missing must come with
    # an explicit recovered:false, never as a silent gap or a duplicate.
    seqs, unrec, problems, k, during = reconnect_run(s, "tiny:a", n, 6,
                                                     0.1, 0.2)
    check("tiny history: reconnected while publishing", during >= 2,
          f"{during} of {k}")
    check("tiny history: no protocol problems", not problems, short(problems))
    got = check_sequence(seqs, n, "history 5")
    missing = n - len(got)
    check("tiny history: every missing message is covered by an explicit "
          "recovered:false", missing == 0 or unrec > 0,
          f"missing={missing} unrecovered={unrec}")
    check("tiny history: ends with the last message or with a "
          "recovered:false", (got and got[-1] == n - 1) or seqs[-1] is None,
          short(seqs[-5:]))
    print(f"     (tiny history: {unrec} recovered:false, {missing} missed)")
    s.stop()


# ==========================================================================
# Slow consumer
# ==========================================================================


class Reader(threading.Thread):
    def __init__(self, s, channel):
        super().__init__(daemon=True)
        self.w = s.client(timeout=15)
        self.w.call("subscribe", {"channel": channel})
        self.channel = channel
        self.offsets = []
        self.times = []
        self.stop_at = None
        self.error = None
        self.want = None

    def run(self):
        try:
            while self.want is None or len(self.offsets) < self.want:
                p = self.w.push(lambda p: "pub" in p, 15)
                self.offsets.append(p["pub"]["offset"])
                self.times.append(time.monotonic())
        except Exception as e:  # noqa: BLE001
            self.error = e


def start_readers(s, channel, k, n):
    """k subscribed Readers of channel, each waiting for n publications."""
    readers = [Reader(s, channel) for _ in range(k)]
    for r in readers:
        r.want = n
        r.start()
    return readers


def check_readers(readers, n, what):
    """Joins the readers; each must have got offsets 1..n, in order."""
    for r in readers:
        r.join(30)
    for i, r in enumerate(readers):
        check(f"{what} {i}: every message, in order",
              r.offsets == list(range(1, n + 1)) and r.error is None,
              f"got {len(r.offsets)} error={r.error}")


def test_slow_consumer():
    cap = 256 * 1024
    s = Server({"namespaces": [{"name": "fire", "history_size": 10,
                                "history_ttl": 60}],
                "client_output_cap": cap})
    ch = "fire:hose"
    slow = WS(s.port, rcvbuf=4096, timeout=10)
    slow.connect()
    slow.call("subscribe", {"channel": ch})
    slow_id = slow.client_id
    n, pad = 2500, 2000  # about 5 MB
    readers = start_readers(s, ch, 3, n)
    t0 = time.monotonic()
    pub = Publisher(s.port, ch, n, pad=pad)
    pub.run()
    t_pub = time.monotonic() - t0
    check("publisher finished", pub.error is None, short(pub.error))
    check_readers(readers, n, "normal subscriber")
    for i, r in enumerate(readers):
        lag = (r.times[-1] - pub.done_at) if r.times else None
        check(f"normal subscriber {i}: keeps up (last message within 3 s of "
              "the last publish)", lag is not None and lag < 3.0,
              f"lag={lag}")
    m = s.metrics()
    check("metrics count a slow-consumer disconnect",
          m.get("herald_slow_consumer_disconnects_total", 0) >= 1, short(m))
    check("metrics count drops", m.get("herald_drops_total", 0) >= 1,
          short(m))
    # Cut off means unsubscribed at the latest when the close handshake or
    # the close grace (3 s) ends.
    deadline = time.monotonic() + 5
    while True:
        st, js, _ = s.api("GET", "/api/channels")
        subs = js["result"]["channels"].get(ch, {}).get("subscribers")
        if subs == 3 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    eq("the slow subscriber is unsubscribed within the close grace", subs, 3)
    # What the slow one can still read: a prefix of the stream, in order,
    # then the 3004 close (if the server's close grace has not run out) or
    # the end of the connection; never a gap followed by more messages.
    offs, code = [], None
    slow.pending.clear()
    try:
        while True:
            m2 = slow.recv_json(10)
            if "push" in m2 and "pub" in m2["push"]:
                offs.append(m2["push"]["pub"]["offset"])
            elif "push" in m2 and "disconnect" in m2["push"]:
                code = m2["push"]["disconnect"]["code"]
    except Closed as e:
        code = e.code if e.code is not None else code
    except (TimeoutError, OSError) as e:
        code = f"{type(e).__name__}"
    check("slow subscriber: cut off with 3004 or its TCP closed",
          code in (3004, None), f"code={code}")
    # At least the first publication: it reached the kernel's buffers
    # before anything was queued, so an empty list means nothing arrived.
    check("slow subscriber: got a gapless prefix from offset 1, not "
          "everything",
          len(offs) >= 1 and offs == list(range(1, len(offs) + 1)) and
          len(offs) < n,
          f"{len(offs)} messages, first {offs[:3]} last {offs[-3:]}")
    print(f"     (publishing took {t_pub:.2f}s; slow one read {len(offs)} "
          f"messages before the cut, close={code}, client {slow_id})")
    slow.close()
    for r in readers:
        r.w.close()
    s.stop()


def test_fanout_burst():
    """A burst of publish commands whose pushes are several times the fan-out
    a loop pass may queue (8 MiB at least): the server pauses the publisher
    between passes, and every subscriber still gets every publication once,
    in order, and the publisher every reply."""
    n, pad, nreaders = 300, 16000, 6  # 4.8 MB of commands, 29 MB of pushes
    s = Server({"namespaces": [{"name": "burst", "publish": True,
                                "history_size": 10, "history_ttl": 60}],
                "client_output_cap": 64 << 20})
    ch = "burst:x"
    readers = start_readers(s, ch, nreaders, n)
    w = s.client(timeout=30)
    ids = [w.cmd("publish", {"channel": ch,
                             "data": {"seq": i, "pad": "p" * pad}})
           for i in range(n)]
    replies = [w.reply(cid, 30) for cid in ids]
    check("publisher: every publish answered with its offset, in order",
          [r.get("result", {}).get("offset") for r in replies] ==
          list(range(1, n + 1)), short(replies[:2]))
    check_readers(readers, n, "subscriber")
    w.close()
    for r in readers:
        r.w.close()
    s.stop()


def test_slow_sse_consumer():
    """An SSE subscriber that never reads is cut off too."""
    s = Server({"namespaces": [{"name": "fire", "history_size": 10}],
                "client_output_cap": 128 * 1024})
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", s.port))
    sock.sendall(b"GET /sse?channel=fire:sse HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.2)
    pub = Publisher(s.port, "fire:sse", 3000, pad=2000)
    pub.run()
    m = s.metrics()
    check("slow SSE subscriber: counted as slow consumer",
          m.get("herald_slow_consumer_disconnects_total", 0) >= 1, short(m))
    st, js, _ = s.api("GET", "/api/channels")
    check("slow SSE subscriber: unsubscribed",
          js["result"]["channels"].get("fire:sse", {}).get("subscribers", 0)
          == 0, short(js))
    sock.close()
    s.stop()


# ==========================================================================
# Output cap on replies and replays; ping timeout
# ==========================================================================


def test_big_replies():
    """Recovery answers bigger than client_output_cap: the client must get
    its answer or be told it was cut off (3004); never silence. The server
    must survive an SSE replay that runs over the cap."""
    s = Server({"namespaces": [{"name": "h", "history_size": 200,
                                "history_ttl": 300}],
                "client_output_cap": 64 * 1024})
    for i in range(150):
        s.publish("h:a", {"i": i, "pad": "x" * 2000})  # about 300 kB
    st, js, _ = s.api("GET", "/api/history?channel=h:a&limit=1")
    epoch = js["result"]["epoch"]
    for method in ("subscribe", "history"):
        w = s.client()
        cid = w.cmd(method, {"channel": "h:a",
                             "since": {"epoch": epoch, "offset": 0}})
        try:
            r = w.reply(cid, 3)
            res = r.get("result") or {}
            outcome = ("reply", res.get("recovered"),
                       len(res.get("publications", [])))
        except Closed as e:
            outcome = ("closed", e.code)
        except TimeoutError:
            outcome = ("silence",)
        check(f"{method} since with 300 kB to recover over a 64 kB cap: a "
              "reply or close 3004, not silence",
              outcome[0] == "reply" or outcome == ("closed", 3004),
              short(outcome))
        if method == "subscribe" and outcome == ("silence",):
            s.publish("h:a", {"i": "next"})
            try:
                m = w.next(2)
            except (TimeoutError, Closed) as e:
                m = repr(e)
            check("no push for a subscription whose reply was lost (a "
                  "silent gap)", not (isinstance(m, dict) and "push" in m),
                  short(m, 160))
        w.close()
    # SSE replay over the cap
    e = SSE(s.port, "channel=h:a", last_event_id=f"{epoch}:0")
    offs = []
    try:
        while True:
            ev = e.event(timeout=5)
            if ev is None:
                break
            offs.append(sse_offset(ev))
    except (TimeoutError, OSError):
        pass
    e.close()
    # The replay starts at offset 1 and the first events fit under the cap
    # (about 31 of these 2 kB ones in 64 kB): no event at all is a failure.
    check("SSE replay over the cap: a gapless prefix from offset 1",
          len(offs) >= 1 and offs == list(range(1, len(offs) + 1)),
          f"{len(offs)} events, first {offs[:3]} last {offs[-3:]}")
    time.sleep(0.3)
    check("SSE replay over the cap: the server is still running",
          s.alive(), f"server exited with {s.proc.returncode} (its stderr "
          "is checked below)")
    if s.alive():
        st, js, _ = http_req(s.port, "GET", "/health")
        eq("SSE replay over the cap: /health still answers", st, 200)
    s.stop()


def test_ping_timeout():
    s = Server({"ping_interval": 1, "pong_timeout": 1})
    mute = s.client(auto_pong=False)
    live = s.client()
    syncs = [0]

    def keep_reading():
        end = time.monotonic() + 4
        while time.monotonic() < end:
            live.sync()
            syncs[0] += 1
            time.sleep(0.2)

    t = threading.Thread(target=keep_reading, daemon=True)
    t.start()
    t0 = time.monotonic()
    code, msgs = mute.wait_close(6)
    took = time.monotonic() - t0
    t.join(10)
    check("server pings (connect said ping 1)", mute.pings >= 1,
          f"pings={mute.pings}")
    check("a client that never answers pings is dropped within "
          "ping_interval + pong_timeout + 1 s", took < 3.5, f"{took:.1f}s")
    check("a client that answers pings stays connected",
          syncs[0] >= 15 and not live.closed, f"syncs={syncs[0]}")
    check("the unresponsive client is cut off without a close handshake "
          "(protocol.md: a peer that answers no ping is taken for gone)",
          code in (None, 1006) and disconnect_of(msgs) is None,
          f"close={code} messages={short(msgs)}")
    live.close()
    s.stop()


# ==========================================================================
# Graceful shutdown
# ==========================================================================


def test_shutdown():
    s = Server({"namespaces": COMMON_NS, "shutdown_grace": 5})
    ws = [s.client() for _ in range(3)]
    for w in ws:
        w.call("subscribe", {"channel": "pub:bye"})
    e = SSE(s.port, "channel=pub:bye")
    time.sleep(0.2)
    t0 = time.monotonic()
    s.sigterm()
    for i, w in enumerate(ws):
        code, msgs = w.wait_close(5)
        d = disconnect_of(msgs) or {}
        check(f"client {i}: disconnect push 3001 with reconnect true",
              d.get("code") == 3001 and d.get("reconnect") is True,
              short(msgs))
        eq(f"client {i}: close 3001", code, 3001)
    try:
        ev = e.event(timeout=5)
        check("SSE stream ends", ev is None, short(ev))
    except TimeoutError:
        check("SSE stream ends", False, "still open after 5 s")
    try:
        rc = s.proc.wait(timeout=10)
    except Exception:  # noqa: BLE001
        rc = "timeout"
    eq("server exits 0 after SIGTERM", rc, 0)
    check("and within the grace period", time.monotonic() - t0 < 6.0,
          f"{time.monotonic() - t0:.1f}s")
    s.stop("server (after shutdown test)")
    # The server answered all, with close 3001 before the exit: a second
    # run with an idle (not connected) client and no clients at all.
    s = Server({})
    idle = WS(s.port)  # handshake done, no connect
    s.sigterm()
    try:
        code, _ = idle.wait_close(6)
    except (TimeoutError, OSError) as ex:
        code = type(ex).__name__
    check("a client that never sent connect is closed too",
          code in (3001, 1001, None), f"code={code}")
    s.stop("server with an idle client")
    s = Server({}, args=["--log-level", "debug", "--listen", "127.0.0.1:0"])
    w = s.client()
    w.call("subscribe", {"channel": "dbg"})
    check("--log-level debug logs subscribe events",
          "ev=subscribe" in s.stderr(), short(s.stderr()[-500:]))
    w.close()
    s.stop("server with --log-level debug")


# ==========================================================================
# HTTP framing (RFC 9112 6.3): no request smuggling
# ==========================================================================


def raw_http(port, data, timeout=5):
    """Sends data on a new connection and reads until the server closes it
    (or timeout). Returns (bytes received, closed by the server)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    got = b""
    closed = False
    try:
        sock.sendall(data)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            got += chunk
    finally:
        sock.close()
    return got, closed


def test_http_framing():
    s = Server({"namespaces": COMMON_NS})
    w = s.client()
    w.call("subscribe", {"channel": "nojl:smuggle"})

    def publish_req(body, framing):
        return (b"POST /api/publish HTTP/1.1\r\nHost: t\r\n"
                b"Authorization: apikey K\r\n"
                b"Content-Type: application/json\r\n" + framing +
                b"\r\n" + body)

    first = b'{"channel":"nojl:smuggle","data":"first"}'
    body2 = b'{"channel":"nojl:smuggle","data":"smuggled"}'
    inner = publish_req(body2, f"Content-Length: {len(body2)}\r\n".encode())
    n1, n2 = len(first), len(first) + len(inner)
    probes = [
        ("two different Content-Length",
         f"Content-Length: {n1}\r\nContent-Length: {n2}\r\n".encode()),
        ("two different Content-Length, longer first",
         f"Content-Length: {n2}\r\nContent-Length: {n1}\r\n".encode()),
        ("the same Content-Length twice",
         f"Content-Length: {n1}\r\ncontent-length: {n1}\r\n".encode()),
        ("a Content-Length list",
         f"Content-Length: {n1}, {n1}\r\n".encode()),
        ("a Content-Length that is not a number",
         f"Content-Length: +{n1}\r\n".encode()),
        ("a Content-Length over 64 bits",
         b"Content-Length: 18446744073709551616\r\n"),
        ("Transfer-Encoding with Content-Length",
         f"Transfer-Encoding: chunked\r\nContent-Length: {n1}\r\n".encode()),
        ("Content-Length with Transfer-Encoding",
         f"Content-Length: {n1}\r\nTransfer-Encoding: chunked\r\n".encode()),
        ("Transfer-Encoding alone", b"Transfer-Encoding: chunked\r\n"),
    ]
    for what, framing in probes:
        got, closed = raw_http(s.port, publish_req(first + inner, framing))
        check(f"{what}: 400", got.startswith(b"HTTP/1.1 400 "), short(got))
        check(f"{what}: the connection is closed", closed, short(got))
        eq(f"{what}: one response, no second request",
           got.count(b"HTTP/1.1 "), 1)
    no_push(w, "nojl:smuggle", "nothing was published by the refused requests")
    # The server still serves well-framed requests on the same port.
    got, closed = raw_http(s.port, publish_req(
        first, f"Content-Length: {n1}\r\nConnection: close\r\n".encode()))
    check("a single Content-Length is served (200)",
          got.startswith(b"HTTP/1.1 200 "), short(got))
    eq("and published once", w.pubs("nojl:smuggle", 1)[0].get("data"), "first")
    # An upgrade announcing a body is refused before any frame is read.
    got, closed = raw_http(
        s.port,
        b"GET /connection/websocket HTTP/1.1\r\nHost: t\r\n"
        b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\nContent-Length: 5\r\n\r\nhello")
    check("an upgrade with a body: 400 and closed",
          got.startswith(b"HTTP/1.1 400 ") and closed, short(got))
    w.close()
    s.stop()


# ==========================================================================
# Duplicate JSON member names
# ==========================================================================


def test_duplicate_keys():
    import hashlib
    import hmac
    import subprocess
    import tempfile

    s = Server({"namespaces": COMMON_NS, "anonymous": True,
                "jwt": {"hmac_secret": SECRET}})
    w = s.client()
    w.call("subscribe", {"channel": "nojl:dup"})
    w.sync()
    w.pending.clear()
    bad = [
        ("the id twice", '{"id":7,"id":8,"ping":{}}'),
        ("the same id twice", '{"id":7,"id":7,"ping":{}}'),
        ("the method twice", '{"id":7,"ping":{},"ping":{}}'),
        ("a param twice",
         '{"id":7,"publish":{"channel":"nojl:dup","channel":"nojl:x",'
         '"data":1}}'),
        ("data twice", '{"id":7,"publish":{"channel":"nojl:dup","data":1,'
         '"data":2}}'),
        ("a key twice inside published data",
         '{"id":7,"publish":{"channel":"nojl:dup","data":{"a":[{"b":1,'
         '"b":2}]}}}'),
        ("the same key spelled with an escape",
         '{"id":7,"publish":{"channel":"nojl:dup","data":{"a":1,'
         '"\\u0061":2}}}'),
    ]
    for what, text in bad:
        w.send_text(text)
        r = w.next()
        while "push" in r:
            r = w.next()
        check(f"command with {what}: 107 (id 0: the id is not trusted)",
              is_error(r, 107) and r.get("id") == 0, short(r))
        check(f"command with {what}: the message says so",
              "duplicate" in (r.get("error") or {}).get("message", ""),
              short(r))
    r = w.call("ping")
    eq("the connection stays open", r.get("result"), {})
    no_push(w, "nojl:dup", "nothing was published by the refused commands")
    r = w.call("publish", {"channel": "nojl:dup", "data": {"a": 1, "A": 2}})
    check("names that differ only in case are distinct", "result" in r,
          short(r))
    eq("and published", w.pubs("nojl:dup", 1)[0].get("data"),
       {"a": 1, "A": 2})

    # Before connect a bad command ends the connection, as any other.
    w2 = WS(s.port)
    w2.send_text('{"id":1,"connect":{},"connect":{}}')
    expect_refusal(w2, 107, 3501, "duplicate key before connect")

    # HTTP API bodies.
    for what, body in [
        ("the channel twice",
         b'{"channel":"nojl:dup","channel":"nojl:x","data":1}'),
        ("data twice", b'{"channel":"nojl:dup","data":1,"data":2}'),
        ("a key twice inside data",
         b'{"channel":"nojl:dup","data":{"k":{"z":1,"z":1}}}'),
    ]:
        st, js, _ = s.api("POST", "/api/publish", raw_body=body,
                          headers={"Content-Type": "application/json"})
        check(f"POST /api/publish with {what}: 400 code 107",
              st == 400 and isinstance(js, dict) and
              js.get("error", {}).get("code") == 107, short((st, js)))
    st, js, _ = s.api("POST", "/api/broadcast",
                      raw_body=b'{"channels":["nojl:dup"],"data":1,'
                               b'"channels":["nojl:x"]}')
    eq("POST /api/broadcast with the channels twice: 400", st, 400)
    st, js, _ = s.api("POST", "/api/disconnect",
                      raw_body=b'{"user":"a","user":"b"}')
    eq("POST /api/disconnect with the user twice: 400", st, 400)
    no_push(w, "nojl:dup", "nothing was published by the refused bodies")

    # A token with a repeated claim is an invalid token (RFC 7519 section
    # 4), even with a valid signature.
    si = (lib.b64u('{"alg":"HS256","typ":"JWT"}') + "." +
          lib.b64u('{"sub":"alice","sub":"root","exp":%d}' % (now() + 600)))
    tok = si + "." + lib.b64u(hmac.new(SECRET.encode(), si.encode(),
                                       hashlib.sha256).digest())
    w3 = WS(s.port)
    r = w3.connect(tok)
    w3.pending.appendleft(r)
    expect_refusal(w3, 101, 3500, "token with sub twice")
    w.close()
    s.stop()

    # A configuration file with a key twice does not start.
    d = tempfile.mkdtemp(prefix="herald-push-test-")
    path = os.path.join(d, "config.json")
    with open(path, "w") as f:
        f.write('{"listen":["127.0.0.1:0"],"anonymous":false,'
                '"anonymous":true}')
    try:
        p = subprocess.run([lib.HERALD, "serve", "--config", path],
                           stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=20)
        check("a config with a repeated key is refused at start",
              p.returncode not in (0, None) and b"listening" not in p.stdout
              and p.stderr.strip(), short((p.returncode, p.stderr)))
    finally:
        os.unlink(path)
        os.rmdir(d)


# ==========================================================================
# JWT nbf (RFC 7519 4.1.5)
# ==========================================================================


def test_jwt_nbf():
    s = Server({"anonymous": False, "jwt": {"hmac_secret": SECRET},
                "namespaces": [{"name": "chat", "publish": True},
                               {"name": "priv", "private": True}]})
    t = now()
    future = jwt_hs256({"sub": "alice", "nbf": t + 3600, "exp": t + 7200},
                       SECRET)
    w = WS(s.port)
    r = w.connect(future)
    w.pending.appendleft(r)
    expect_refusal(w, 101, 3500, "connect with nbf an hour ahead")
    w = WS(s.port)
    r = w.connect(jwt_hs256({"sub": "alice", "nbf": t - 60, "exp": t + 600},
                            SECRET))
    check("connect with nbf in the past: accepted",
          (r.get("result") or {}).get("user") == "alice", short(r))
    r = w.call("subscribe", {"channel": "priv:x", "token": jwt_hs256(
        {"sub": "alice", "channel": "priv:x", "nbf": t + 3600,
         "exp": t + 7200}, SECRET)})
    check("subscription token with nbf ahead: 103", is_error(r, 103),
          short(r))
    r = w.call("subscribe", {"channel": "priv:x", "token": jwt_hs256(
        {"sub": "alice", "channel": "priv:x", "nbf": t - 5,
         "exp": t + 600}, SECRET)})
    check("subscription token with nbf past: subscribed", "result" in r,
          short(r))
    w.close()
    e = SSE(s.port, "channel=chat:x&token=" + future)
    eq("SSE with nbf ahead: 401", e.status, 401)
    e.close()
    s.stop()


TESTS = [test_commands, test_auth, test_http_api, test_recovery,
         test_presence, test_sse, test_sse_channels,
         test_websockets_library,
         test_reconnect_under_publishing, test_slow_consumer,
         test_fanout_burst, test_slow_sse_consumer, test_big_replies, test_ping_timeout,
         test_shutdown, test_http_framing, test_duplicate_keys,
         test_jwt_nbf]


def main():
    global KEYS
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return 2
    lib.HERALD = os.path.abspath(args[0])
    only = []
    i = 1
    while i < len(args):
        if args[i] == "-k" and i + 1 < len(args):
            only.append(args[i + 1])
            i += 2
        elif args[i] == "--threads" and i + 1 < len(args):
            lib.THREADS = int(args[i + 1])
            i += 2
        else:
            print(f"unknown argument {args[i]}")
            return 2
    if not os.access(lib.HERALD, os.X_OK):
        print(f"not an executable: {lib.HERALD}")
        return 2

    def on_alarm(signum, frame):
        print("FAIL the whole suite took over 540 s", flush=True)
        lib.kill_all()
        os._exit(1)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(540)
    t0 = time.monotonic()
    KEYS = lib.Keys()
    try:
        for t in TESTS:
            if only and not any(o in t.__name__ for o in only):
                continue
            lib.run_test(t)
    finally:
        lib.kill_all()
        KEYS.cleanup()
    print(f"{R.passed} passed, {R.failed} failed "
          f"({time.monotonic() - t0:.1f}s)")
    if R.failed:
        print("failed:")
        for f in R.failures:
            print(f"  {f}")
    return 1 if R.failed else 0


if __name__ == "__main__":
    sys.exit(main())
