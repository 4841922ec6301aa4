#!/usr/bin/python3
"""Black-box tests of `herald serve`'s limits and hostile-input answers:
rate limits (commands, publishes, subscribes, connections per IP), the
node's channel cap, token expiry on open connections, the API's b64 check,
NUL bytes in query strings, a bad Last-Event-ID, and log lines a peer
cannot forge.

usage: limits.py PATH/TO/herald [-k SUBSTRING ...]
Prints one line per check and "N passed, N failed"; exits 1 on a failure.
"""

import os
import re
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lib  # noqa: E402
from lib import (SSE, Refused, Server, check, eq,  # noqa: E402
                 jwt_hs256, now, short)

SECRET = "s3cret-for-limit-tests-0123456789"
NS = [{"name": "pub", "publish": True, "presence": True, "join_leave": True,
       "history_size": 10, "history_ttl": 60}]
OFF = {"per_s": 0}


def cfg(**kw):
    c = {"anonymous": True, "namespaces": NS,
         "rate_limits": {"commands": OFF, "publishes": OFF,
                         "subscribes": OFF, "connections_per_ip": OFF}}
    rl = kw.pop("rate_limits", {})
    c["rate_limits"].update(rl)
    c.update(kw)
    return c


def err_code(m):
    return (m.get("error") or {}).get("code")


def replies(w, ids, timeout=5):
    return [w.reply(i, timeout) for i in ids]


def test_command_rate():
    s = Server(cfg(rate_limits={"commands": {"per_s": 10, "burst": 20}}))
    w = s.client()  # the connect took one token
    ids = [w.cmd("ping") for _ in range(40)]
    rs = replies(w, ids)
    ok = sum(1 for r in rs if "result" in r)
    limited = [r for r in rs if err_code(r) == 110]
    check("a burst past commands.burst: the burst is served", 18 <= ok <= 21,
          f"ok={ok}")
    eq("the rest is answered 110", len(limited), 40 - ok)
    check("110 says it is temporary",
          limited and limited[0]["error"].get("temporary") is True,
          short(limited[:1]))
    time.sleep(1.2)
    r = w.call("ping")
    check("after a second the rate allows commands again", "result" in r,
          short(r))
    m = s.metrics()
    eq("herald_rate_limited_commands_total counts them",
       m.get("herald_rate_limited_commands_total"), 40.0 - ok)
    s.stop()


def test_publish_and_subscribe_rate():
    s = Server(cfg(rate_limits={"publishes": {"per_s": 5, "burst": 5},
                                "subscribes": {"per_s": 4, "burst": 8}}))
    w = s.client()
    ids = [w.cmd("publish", {"channel": "pub:a", "data": {"n": i}})
           for i in range(10)]
    rs = replies(w, ids)
    eq("publishes past the burst: 5 served",
       sum(1 for r in rs if "result" in r), 5)
    eq("publishes past the burst: 5 answered 110",
       sum(1 for r in rs if err_code(r) == 110), 5)
    ids = []
    for i in range(10):
        ids.append(w.cmd("subscribe", {"channel": "pub:t"}))
        ids.append(w.cmd("unsubscribe", {"channel": "pub:t"}))
    rs = replies(w, ids)
    eq("subscribe/unsubscribe toggles past the burst: 8 served",
       sum(1 for r in rs if "result" in r), 8)
    eq("... and 12 answered 110", sum(1 for r in rs if err_code(r) == 110),
       12)
    m = s.metrics()
    eq("herald_rate_limited_publishes_total",
       m.get("herald_rate_limited_publishes_total"), 5.0)
    eq("herald_rate_limited_subscribes_total",
       m.get("herald_rate_limited_subscribes_total"), 12.0)
    s.stop()


def test_connection_rate_per_ip():
    s = Server(cfg(rate_limits={"connections_per_ip": {"per_s": 1,
                                                       "burst": 3}}))
    held = [s.ws() for _ in range(3)]
    try:
        s.ws()
        check("the 4th upgrade in a burst is refused", False, "accepted")
    except Refused as e:
        eq("the 4th upgrade in a burst is refused with 429", e.status, 429)
    time.sleep(1.1)
    held.append(s.ws())
    check("a second later one more is allowed", True)
    eq("herald_rate_limited_connections_total",
       s.metrics().get("herald_rate_limited_connections_total"), 1.0)
    for w in held:
        w.close()
    s.stop()


def test_channels_total():
    s = Server(cfg(max_channels_total=3))
    w = s.client()
    for i in range(3):
        r = w.call("subscribe", {"channel": f"pub:c{i}"})
        check(f"subscribe {i + 1} of 3 channels", "result" in r, short(r))
    r = w.call("subscribe", {"channel": "pub:c3"})
    eq("a 4th channel on the node is refused with 106", err_code(r), 106)
    r = w.call("publish", {"channel": "pub:new", "data": 1})
    eq("publishing to a new channel past the cap: 106", err_code(r), 106)
    r = w.call("publish", {"channel": "pub:c0", "data": 1})
    check("publishing to an existing channel still works", "result" in r,
          short(r))
    st, js, _ = s.api("POST", "/api/publish",
                      {"channel": "pub:other", "data": 1})
    eq("API publish to a new channel past the cap: 503", st, 503)
    eq("... with code 106", (js.get("error") or {}).get("code"), 106)
    eq("herald_channel_limit_refusals_total",
       s.metrics().get("herald_channel_limit_refusals_total"), 3.0)
    s.stop()


def test_history_bytes():
    cap = 40000
    s = Server(cfg(max_history_bytes=cap))
    first = s.publish("pub:old", {"n": 0})
    for i in range(1, 400):
        s.publish(f"pub:h{i % 200}", {"pad": "x" * 100, "n": i})
    m = s.metrics()
    check("history bytes stay under max_history_bytes",
          0 < m.get("herald_history_bytes", 0) <= cap, short(m))
    check("the oldest entries were evicted and counted",
          m.get("herald_history_evictions_total", 0) > 0, short(m))
    w = s.client()
    r = w.call("subscribe", {"channel": "pub:old",
                             "since": {"epoch": first["epoch"],
                                       "offset": 0}})
    check("recovering across an evicted entry: recovered false",
          r.get("result", {}).get("recovered") is False, short(r))
    s.stop()


def test_token_expiry():
    s = Server(cfg(anonymous=False, jwt={"hmac_secret": SECRET}))
    w = s.ws()
    tok = jwt_hs256({"sub": "ann", "exp": now() + 2}, SECRET)
    r = w.connect(tok)
    check("a token valid for 2 s connects", "result" in r, short(r))
    t0 = time.monotonic()
    code, msgs = w.wait_close(6)
    eq("the connection is closed with 3006 when the token expires", code,
       3006)
    check("... within a second or two of exp",
          time.monotonic() - t0 < 4.5, f"{time.monotonic() - t0:.1f}s")
    d = [m for m in msgs if "push" in m and "disconnect" in m["push"]]
    check("... after a disconnect push that says reconnect",
          d and d[0]["push"]["disconnect"].get("reconnect") is True,
          short(msgs))
    tok = jwt_hs256({"sub": "bob", "exp": now() + 3600}, SECRET)
    w2 = s.client(tok)
    time.sleep(1.5)
    check("a long-lived token is not cut off", "result" in w2.call("ping"))
    eq("herald_tokens_expired_total",
       s.metrics().get("herald_tokens_expired_total"), 1.0)
    s.stop()


def test_api_b64():
    s = Server(cfg())
    for bad in ({"evil": 1}, 12345, "!!!", "YWJj=", True, [1]):
        st, js, _ = s.api("POST", "/api/publish",
                          {"channel": "pub:b", "b64": bad})
        eq(f"API publish with b64 {bad!r}: 400", st, 400)
    st, js, _ = s.api("POST", "/api/publish",
                      {"channel": "pub:b", "b64": "aGVsbG8="})
    eq("API publish with valid b64: 200", st, 200)
    st, js, _ = s.api("POST", "/api/broadcast",
                      {"channels": ["pub:b"], "b64": {"x": 1}})
    eq("API broadcast with b64 an object: 400", st, 400)
    st, js, _ = s.api("GET", "/api/history?channel=pub:b")
    pubs = js["result"]["publications"]
    eq("only the valid publication was made", len(pubs), 1)
    s.stop()


def test_query_nul():
    s = Server(cfg())
    s.publish("pub:x", 1)
    st, js, _ = s.api("GET", "/api/history?channel=pub:x%00junk")
    eq("%00 in a channel name over the API: 400", st, 400)
    sse = SSE(s.port, "channel=pub:x%00junk")
    eq("%00 in an SSE channel name: 400", sse.status, 400)
    sse.close()
    s.stop()


def test_bad_last_event_id():
    s = Server(cfg())
    s.publish("pub:e", 1)
    for bad in ("garbage", "abc:xyz", ":5", "e:1:", "x" * 80):
        sse = SSE(s.port, "channel=pub:e", last_event_id=bad)
        ev = sse.event(3)
        check(f"Last-Event-ID {bad[:12]!r}: an unrecovered event first",
              ev is not None and ev.get("event") == "unrecovered", short(ev))
        sse.close()
    s.stop()


def logfmt(line):
    """[(key, value)] of a log line, or None when it does not parse: values
    are bare words or double-quoted with backslash escapes."""
    out, i, n = [], 0, len(line)
    while i < n:
        m = re.match(r'([a-z_]+)=', line[i:])
        if not m:
            return None
        k, i = m.group(1), i + m.end()
        if i < n and line[i] == '"':
            j, v = i + 1, []
            while j < n and line[j] != '"':
                if line[j] == "\\" and j + 1 < n:
                    j += 1
                v.append(line[j])
                j += 1
            if j >= n:
                return None
            out.append((k, "".join(v)))
            i = j + 1
        else:
            j = line.find(" ", i)
            j = n if j < 0 else j
            out.append((k, line[i:j]))
            i = j
        while i < n and line[i] == " ":
            i += 1
    return out


def test_log_escaping():
    s = Server(cfg(anonymous=False, jwt={"hmac_secret": SECRET},
                   allowed_origins=["https://ok.example"]))
    evil = 'x" admin="1\nts=forged level=error ev=forged'
    w = s.client(jwt_hs256({"sub": evil, "exp": now() + 60}, SECRET))
    w.close()
    try:
        s.ws(origin='https://bad"\nev=forged2')
    except (Refused, ConnectionError, OSError):
        pass
    time.sleep(0.3)
    err = s.stderr()  # before stop(), which removes the logs of a clean run
    s.stop()
    lines = err.splitlines()
    check("the log was read", any("ev=connect" in ln for ln in lines),
          err[-300:])
    parsed = [logfmt(ln) for ln in lines]
    check("every log line parses as key=value pairs starting with ts=",
          all(p is not None and p and p[0][0] == "ts" for p in parsed),
          [ln for ln, p in zip(lines, parsed) if not p or p[0][0] != "ts"])
    check("no log line was forged by a token's sub or an Origin",
          not any(k == "ev" and v.startswith("forged")
                  for p in parsed if p for k, v in p), err[-800:])
    check("the sub is logged escaped, quote and newline included",
          'user="x\\" admin=\\"1\\x0ats=forged' in err,
          [ln for ln in lines if "user=" in ln][-2:])


TESTS = [test_command_rate, test_publish_and_subscribe_rate,
         test_connection_rate_per_ip, test_channels_total, test_history_bytes,
         test_token_expiry,
         test_api_b64, test_query_nul, test_bad_last_event_id,
         test_log_escaping]


if __name__ == "__main__":
    sys.exit(lib.main(TESTS, __doc__, 240))
