#!/usr/bin/python3
"""Checks the checker of the soak (bench/soak/soak.py, analyze) on made-up
streams: it must count a silent loss, a duplicate, a gap, a reordering or a
misplaced publication wherever there is one, and call a loss "told" only
when a notice (recovered false, 3010, SSE unrecovered) stands where the
publication is missing - including when a Redis restarted from an older
snapshot hands the same offsets out again.

usage: soak_check.py        (no server needed; runs in well under a second)
"""

import os
import sys

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "bench", "soak"))
import lib  # noqa: E402
import soak  # noqa: E402
from lib import R, eq  # noqa: E402

CH = "soak:x"


class FakeShard:
    def __init__(self, restarts=()):
        self.spawns = [0.0] + list(restarts)


def ack(epoch, offset, ident, t, pub="h0", seq=None):
    seq = seq if seq is not None else int(ident.split(":")[1])
    soak.SENT[ident] = t
    soak.ACKS.append((CH, epoch, offset, ident, pub, seq, t, t + 0.01,
                      "http"))


def scenario(name, setup, want, restarts=()):
    """setup(track) fills ACKS and the track; want: the counters that must
    have these values (every other checked counter must be 0)."""
    soak.ACKS.clear()
    soak.SENT.clear()
    t = soak.Track("sub", CH)
    setup(t)
    out, ev = soak.analyze([CH], [t], {CH: 0}, [FakeShard(restarts)])
    for k in ("silent losses", "duplicates", "told losses",
              "unannounced gaps", "order violations", "misplaced",
              "publisher order violations"):
        eq(f"{name}: {k}", out[k], want.get(k, 0))
    for k, v in want.items():
        if k not in ("silent losses", "duplicates", "told losses",
                     "unannounced gaps", "order violations", "misplaced",
                     "publisher order violations"):
            eq(f"{name}: {k}", out[k], v)
    return out, ev


def plain(n, epoch="E1", t0=1.0, pub="h0"):
    for i in range(1, n + 1):
        ack(epoch, i, f"{pub}:{i}", t0 + i * 0.01, pub)


def test_all():
    def clean(t):
        t.begin("E1", 0)
        plain(10)
        for i in range(1, 11):
            t.recv("E1", i, f"h0:{i}")
    scenario("everything once, in order", clean, {"deliveries": 10})

    def hole(t):
        t.begin("E1", 0)
        plain(10)
        for i in list(range(1, 5)) + list(range(6, 11)):
            t.recv("E1", i, f"h0:{i}")
    _, ev = scenario("one missing, nothing said", hole,
                     {"silent losses": 1, "unannounced gaps": 1})
    eq("... evidence names it", ev["silent"][0]["first_missing"]["offset"],
       5)

    def told(t):
        t.begin("E1", 0)
        plain(10)
        for i in range(1, 5):
            t.recv("E1", i, f"h0:{i}")
        t.notice("recovered false", ("E1", 7))
        for i in range(8, 11):
            t.recv("E1", i, f"h0:{i}")
    scenario("three missing after recovered false", told,
             {"told losses": 3, "told gaps": 1})

    def past_notice(t):
        t.begin("E1", 0)
        plain(10)
        for i in range(1, 5):
            t.recv("E1", i, f"h0:{i}")
        t.notice("recovered false", ("E1", 7))
        for i in range(9, 11):
            t.recv("E1", i, f"h0:{i}")
    scenario("told up to 7, then 8 skipped without a word", past_notice,
             {"told losses": 3, "silent losses": 1, "unannounced gaps": 1})

    def dup(t):
        t.begin("E1", 0)
        plain(10)
        for i in [1, 2, 3, 4, 5, 5, 6, 7, 8, 9, 10]:
            t.recv("E1", i, f"h0:{i}")
    scenario("one twice", dup, {"duplicates": 1})

    def tail(t):
        t.begin("E1", 0)
        plain(10)
        for i in range(1, 9):
            t.recv("E1", i, f"h0:{i}")
    scenario("the last two never came", tail, {"silent losses": 2})

    def tail_told(t):
        t.begin("E1", 0)
        plain(10)
        for i in range(1, 9):
            t.recv("E1", i, f"h0:{i}")
        t.notice("unrecovered", ("E1", 10))
    scenario("the last two, told (SSE unrecovered)", tail_told,
             {"told losses": 2})

    def head(t):
        t.begin("E1", 0)
        plain(10)
        for i in range(3, 11):
            t.recv("E1", i, f"h0:{i}")
    scenario("the first two never came", head,
             {"silent losses": 2, "unannounced gaps": 1})

    def new_epoch_told(t):
        t.begin("E1", 0)
        plain(6)
        for i in range(1, 4):
            ack("E2", i, f"h1:{i}", 5.0 + i * 0.01, "h1")
        for i in range(1, 6):
            t.recv("E1", i, f"h0:{i}")
        t.notice("3010", None)
        t.notice("recovered false", ("E2", 1))
        for i in (2, 3):
            t.recv("E2", i, f"h1:{i}")
    scenario("Redis lost its data: 3010 then recovered false",
             new_epoch_told, {"told losses": 2, "told gaps": 1})

    def new_epoch_silent(t):
        t.begin("E1", 0)
        plain(6)
        for i in range(1, 4):
            ack("E2", i, f"h1:{i}", 5.0 + i * 0.01, "h1")
        for i in range(1, 6):
            t.recv("E1", i, f"h0:{i}")
        for i in (2, 3):
            t.recv("E2", i, f"h1:{i}")
    scenario("a new epoch without a word", new_epoch_silent,
             {"silent losses": 2, "unannounced gaps": 1})

    # Redis back from an older snapshot gave offsets 4-8 again (restart at
    # t=10); the subscriber had old 1-6, got a 3010, resubscribed from 6
    # and was answered recovered: true with the new 7 and 8. The new 4-6
    # are missing; only the 3010 said so.
    def only_3010(t):
        t.begin("E1", 0)
        for i in range(1, 7):
            ack("E1", i, f"h0:{i}", 1.0 + i)
        for k, i in enumerate(range(4, 9)):
            ack("E1", i, f"h1:{k + 1}", 11.0 + k, "h1")
        for i in range(1, 7):
            t.recv("E1", i, f"h0:{i}")
        t.notice("3010", None)
        for i in (7, 8):
            t.recv("E1", i, f"h1:{i - 3}")
    scenario("a 3010 counts as told, and is counted apart", only_3010,
             {"told losses": 3, "told losses covered only by a 3010": 3,
              "acked positions taken twice": 3}, restarts=[10.0])

    # A Redis back from an older snapshot: offsets 4-6 are handed out again
    # (restart at t=10); the subscriber was away and resumes at old 3.
    def snapshot(t, told):
        t.begin("E1", 0)
        for i in range(1, 7):
            ack("E1", i, f"h0:{i}", 1.0 + i)
        for k, i in enumerate(range(4, 9)):
            ack("E1", i, f"h1:{k + 1}", 11.0 + k, "h1")
        if not told:
            for i in range(1, 4):
                t.recv("E1", i, f"h0:{i}")
            for k, i in enumerate(range(4, 9)):
                t.recv("E1", i, f"h1:{k + 1}")
        else:
            for i in range(1, 7):
                t.recv("E1", i, f"h0:{i}")
            t.notice("3010", None)
            t.notice("recovered false", ("E1", 5))
            for k, i in enumerate(range(6, 9)):
                t.recv("E1", i, f"h1:{k + 3}")
    scenario("older snapshot, resumed without a word (offsets look fine)",
             lambda t: snapshot(t, False),
             {"silent losses": 3, "acked positions taken twice": 3,
              "channels ordered by Redis incarnation": 1},
             restarts=[10.0])
    scenario("older snapshot, told", lambda t: snapshot(t, True),
             {"told losses": 2, "acked positions taken twice": 3},
             restarts=[10.0])

    def misplaced(t):
        t.begin("E1", 0)
        plain(5)
        for i in range(1, 6):
            t.recv("E1", i, f"h0:{6 - i if i in (2, 4) else i}")
    scenario("delivered at another offset than acknowledged", misplaced,
             {"misplaced": 2, "order violations": 0})

    def backwards(t):
        t.begin("E1", 0)
        plain(6)
        for i in (1, 2, 5):
            t.recv("E1", i, f"h0:{i}")
        t.notice("recovered false", ("E1", 5))
        for i in (3, 4, 6):
            t.recv("E1", i, f"h0:{i}")
    scenario("going back after a notice", backwards,
             {"order violations": 1, "unannounced gaps": 3})

    def pub_order(t):
        t.begin("E1", 0)
        ack("E1", 1, "h0:2", 1.0)
        ack("E1", 2, "h0:1", 1.1)
        t.recv("E1", 1, "h0:2")
        t.recv("E1", 2, "h0:1")
    scenario("a publisher's publications out of order", pub_order,
             {"publisher order violations": 1})

    def unacked(t):
        t.begin("E1", 0)
        ack("E1", 1, "h0:1", 1.0)
        ack("E1", 2, "h0:2", 1.1)
        soak.SENT["h0:3"] = 1.2  # its reply was lost: not acknowledged
        ack("E1", 4, "h0:4", 1.3)
        for i in range(1, 5):
            t.recv("E1", i, f"h0:{i}")
    scenario("an unacknowledged publication delivered too", unacked,
             {"deliveries": 4})

    def shifted(t):
        t.begin("E1", 0)
        plain(3)
        for i, ident in enumerate(["h0:1", "h0:2", "h0:9", "h0:3"]):
            t.recv("E1", i + 1, ident)
    scenario("an acknowledged publication delivered one offset later",
             shifted, {"misplaced": 1})


def main():
    lib.run_test(test_all)
    print(f"{R.passed} passed, {R.failed} failed")
    return 1 if R.failed else 0


if __name__ == "__main__":
    sys.exit(main())
