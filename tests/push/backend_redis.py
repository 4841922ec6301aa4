#!/usr/bin/python3
"""The backend features that act on the whole cluster, with two
`herald serve` nodes over a real redis-server (docs/backend.md, "Several
nodes"): idempotent publishing across nodes, /api/disconnect and
/api/subscribe reaching a user's connections on the other node,
user_connection_limit counted across nodes, and channel_occupied /
channel_vacated sent once for the cluster.

usage: backend_redis.py PATH/TO/herald [--threads N] [-k SUBSTRING ...]
Exits 77 (skipped) when redis-server is not installed.
"""

import os
import signal
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lib  # noqa: E402
from lib import R, check, eq, jwt_hs256, now, short  # noqa: E402
import redis as rtest  # noqa: E402  (tests/push/redis.py)
import backend as btest  # noqa: E402  (tests/push/backend.py)

SECRET = btest.SECRET


def token(sub):
    return jwt_hs256({"sub": sub, "exp": now() + 3600}, SECRET)


# None: one redis-server of our own per test. tests/push/redis_ha.py sets
# it to a function giving the "redis" section of a Redis Cluster, and runs
# these tests again over it.
CLUSTER = None


def cluster_node(name, ex):
    cfg = {"engine": "redis",
           "redis": dict(CLUSTER(), presence_ttl=3, ping_timeout_ms=1000)}
    cfg.update(ex)
    return lib.Server(cfg, args=["--node-name", name], name=f"node {name}")


def two_nodes(extra=None):
    ex = {"anonymous": False, "jwt": {"hmac_secret": SECRET},
          "namespaces": btest.NS}
    ex.update(extra or {})
    if CLUSTER is not None:
        a, b = cluster_node("a", ex), cluster_node("b", ex)
        check("both nodes healthy", rtest.wait_healthy(a, 200, 20) and
              rtest.wait_healthy(b, 200, 20))
        return None, a, b
    r = rtest.Redis()
    a = rtest.node([r], "a", ex)
    b = rtest.node([r], "b", ex)
    check("both nodes healthy", rtest.wait_healthy(a) and
          rtest.wait_healthy(b))
    return r, a, b


def test_idempotency_across_nodes():
    r, a, b = two_nodes()
    w = b.client(token("ann"))
    w.call("subscribe", {"channel": "pub:i"})
    st1, js1, _ = a.api("POST", "/api/publish", {"channel": "pub:i",
                                                 "data": 1,
                                                 "idempotency_key": "k"})
    st2, js2, _ = b.api("POST", "/api/publish", {"channel": "pub:i",
                                                 "data": 2,
                                                 "idempotency_key": "k"})
    eq("node a publishes", st1, 200)
    eq("node b answers the same key with a's result", js2.get("result"),
       js1.get("result"))
    c = a.client(token("ann"))
    r3 = c.call("publish", {"channel": "pub:i", "data": 3,
                            "idempotency_key": "k"})
    eq("over WebSocket too", r3.get("result"), js1.get("result"))
    eq("one publication reached the subscriber",
       [p["data"] for p in w.pubs("pub:i", 1)], [1])
    w.sync()
    time.sleep(0.2)
    w.sync()
    check("and only one", not any("push" in m for m in w.pending),
          short(w.pending))
    st, js, _ = b.api("POST", "/api/publish", {"channel": "pub:i", "data": 4,
                                               "idempotency_key": "k2"})
    eq("another key publishes", js["result"]["offset"], 2)
    a.stop()
    b.stop()


def test_user_disconnect_and_subscribe_across_nodes():
    r, a, b = two_nodes()
    wa = a.client(token("ann"))
    wb = b.client(token("ann"))
    other = b.client(token("bob"))
    st, js, _ = a.api("POST", "/api/subscribe", {"user": "ann",
                                                 "channel": "pub:x"})
    eq("/api/subscribe on a", st, 200)
    p = wb.push(lambda p: "subscribe" in p)
    eq("the user's connection on b is subscribed", p.get("channel"), "pub:x")
    wa.push(lambda p: "subscribe" in p)
    a.publish("pub:x", {"n": 1})
    eq("and gets the publication", wb.pubs("pub:x", 1)[0]["data"], {"n": 1})
    st, js, _ = b.api("POST", "/api/unsubscribe", {"user": "ann",
                                                   "channel": "pub:x"})
    p = wa.push(lambda p: "unsubscribe" in p)
    eq("/api/unsubscribe on b reaches a", p.get("channel"), "pub:x")
    st, js, _ = a.api("POST", "/api/disconnect", {"user": "ann",
                                                  "code": 4100})
    eq("/api/disconnect on a", st, 200)
    code_b, _ = wb.wait_close()
    eq("the user's connection on b is closed with the code", code_b, 4100)
    code_a, _ = wa.wait_close()
    eq("and the one on a", code_a, 4100)
    eq("another user stays", other.call("ping").get("result"), {})
    a.stop()
    b.stop()


def test_user_connection_limit_across_nodes():
    r, a, b = two_nodes({"user_connection_limit": 2})
    keep = a.client(token("ann"))
    wb = b.client(token("ann"))
    w = a.ws()
    rr = w.connect(token("ann"))
    eq("the third connection, on either node: 106",
       (rr.get("error") or {}).get("code"), 106)
    code, _ = w.wait_close()
    eq("closed 3508", code, 3508)
    wb.close()
    time.sleep(0.5)
    w = a.client(token("ann"))
    eq("a place freed on b is taken on a", w.user, "ann")
    keep.close()
    # A user name with braces: in a Redis Cluster the key's hash tag ends
    # at its first '}', and the node must send the key where Redis wants it.
    for user in ("x}y{z", "{}", "}{a}"):
        keep = [a.client(token(user)), b.client(token(user))]
        w = b.ws()
        rr = w.connect(token(user))
        eq(f"user {user!r}: the third connection refused (106)",
           (rr.get("error") or {}).get("code"), 106)
        for k in keep:
            k.close()
    a.stop()
    b.stop()


def test_occupied_vacated_once():
    hook = btest.Backend()
    ex = {"webhooks": {"url": hook.url("hook"), "secret": "s",
                       "events": ["channel_occupied", "channel_vacated"]}}
    r, a, b = two_nodes(ex)
    wa = a.client(token("ann"))
    wb = b.client(token("bob"))
    wa.call("subscribe", {"channel": "pub:o"})
    wb.call("subscribe", {"channel": "pub:o"})
    got = hook.wait_events(lambda e: e["event"] == "channel_occupied")
    time.sleep(0.5)
    eq("occupied once for the cluster",
       len([e for e in hook.events() if e["event"] == "channel_occupied"]), 1)
    wa.call("unsubscribe", {"channel": "pub:o"})
    time.sleep(0.5)
    eq("not vacated while b has a subscriber",
       [e for e in hook.events() if e["event"] == "channel_vacated"], [])
    wb.call("unsubscribe", {"channel": "pub:o"})
    got = hook.wait_events(lambda e: e["event"] == "channel_vacated")
    eq("vacated once, when the last node's last subscriber left",
       [(e["channel"], e["node"]) for e in got], [("pub:o", "b")])
    a.stop()
    b.stop()
    hook.close()


TESTS = [test_idempotency_across_nodes,
         test_user_disconnect_and_subscribe_across_nodes,
         test_user_connection_limit_across_nodes, test_occupied_vacated_once]


def main():
    args = lib.take_threads(sys.argv[1:])
    if not args:
        print(__doc__)
        return 2
    lib.HERALD = os.path.abspath(args[0])
    only = args[2::2] if len(args) > 2 and args[1] == "-k" else []
    if not os.access(rtest.REDIS_BIN, os.X_OK):
        print("redis-server not found: skipped")
        return 77
    signal.signal(signal.SIGALRM, lambda *a: (print("FAIL over 200 s"),
                                              lib.kill_all(),
                                              rtest.stop_redises(),
                                              os._exit(1)))
    signal.alarm(200)
    t0 = time.monotonic()
    try:
        for t in TESTS:
            if only and not any(o in t.__name__ for o in only):
                continue
            try:
                lib.run_test(t)
            finally:
                rtest.stop_redises()
    finally:
        lib.kill_all()
        rtest.stop_redises()
    print(f"{R.passed} passed, {R.failed} failed "
          f"({time.monotonic() - t0:.1f}s)")
    for f in R.failures:
        print(f"  {f}")
    return 1 if R.failed else 0


if __name__ == "__main__":
    sys.exit(main())
