"""The case catalogue and the verdict rules.

The catalogue follows the numbering and intent of the Autobahn|Testsuite
sections 1-7, 9 and 10, and 12 and 13 (permessage-deflate, RFC 7692: the
runner compresses and decompresses with Python's zlib).  Every case is data: an id, a title, a small function that sends
octets through a session.Session, what the peer must send back (the
"events": echoed messages and pongs), and how the connection must end:

  close="normal"  the peer must stay open; the runner then starts the closing
                  handshake (unless the case sent a close frame itself) and
                  the peer must answer with one of `codes` (an empty close
                  payload is accepted too).
  close="fail"    the peer must fail the connection: a close frame with one
                  of `codes`, or just closing TCP.

judge() turns what a session observed into one of the verdicts below; the
rules are documented in README.md next to this file.
"""

from dataclasses import dataclass, field
from typing import Callable, Optional

from session import F
import struct

from wire import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT,
                  close_payload)

OK = "OK"
NON_STRICT = "NON-STRICT"
INFORMATIONAL = "INFORMATIONAL"
UNIMPLEMENTED = "UNIMPLEMENTED"
FAILED = "FAILED"
VERDICTS = [OK, NON_STRICT, INFORMATIONAL, UNIMPLEMENTED, FAILED]
PASSING = {OK, NON_STRICT, INFORMATIONAL}
_RANK = {OK: 0, INFORMATIONAL: 1, NON_STRICT: 2, UNIMPLEMENTED: 3, FAILED: 4}

PROTOCOL_ERROR = 1002
INVALID_PAYLOAD = 1007

SECTIONS = {
    "1": "Framing",
    "2": "Pings/Pongs",
    "3": "Reserved Bits",
    "4": "Opcodes",
    "5": "Fragmentation",
    "6": "UTF-8 Handling",
    "7": "Close Handling",
    "9": "Limits/Performance",
    "10": "Misc (auto-fragmentation)",
    "12": "WebSocket Compression (different payloads)",
    "13": "WebSocket Compression (different parameters)",
}

FAIL_FAST_WAIT = 1.0   # pause between the parts of a 6.4.x message
DELAY = 0.5            # pause between the frames of 5.19/5.20


@dataclass
class Case:
    id: str
    title: str
    run: Callable
    ok: list = field(default_factory=list)     # expected events
    non_strict: object = None  # list of alternative event lists, or callable
    close: str = "normal"      # "normal" or "fail"
    codes: tuple = (1000,)     # acceptable close codes from the peer
    ns_codes: tuple = ()       # close codes that give NON-STRICT
    fail_fast: bool = False    # must fail before the last write (6.4.x)
    info: bool = False         # outcome is INFORMATIONAL by design
    quick: bool = True         # part of the --quick subset
    timeout: Optional[float] = None  # None: the default for its section
    # permessage-deflate (sections 12, 13)
    offer: tuple = ()          # server mode: our Sec-WebSocket-Extensions
    response: Optional[str] = None  # client mode: our answer to its offer
    expect_pmd: bool = True    # the peer must agree to compress
    full: bool = False         # only with --deflate-full

    @property
    def section(self):
        return self.id.split(".")[0]

    def key(self):
        return tuple(int(p) for p in self.id.split("."))


def text(payload, fin=True, rsv=0):
    return F(OP_TEXT, _b(payload), fin, rsv)


def binary(payload, fin=True, rsv=0):
    return F(OP_BINARY, _b(payload), fin, rsv)


def cont(payload, fin=True):
    return F(OP_CONT, _b(payload), fin)


def ping(payload=b"", fin=True, rsv=0):
    return F(OP_PING, _b(payload), fin, rsv)


def pong(payload=b"", fin=True):
    return F(OP_PONG, _b(payload), fin)


def close(code=None, reason=b"", rsv=0):
    return F(OP_CLOSE, close_payload(code, _b(reason)), True, rsv)


def _b(x):
    return x.encode("utf-8") if isinstance(x, str) else bytes(x)


def sender(frames, chop=None, pace=0.0):
    """A case body that sends `frames` in one go (or chopped)."""
    def run(s):
        s.send(frames, chop=chop, pace=pace)
    return run


def fragments(opcode, payload, size):
    """payload as a fragmented message of frames of `size` octets."""
    parts = [payload[i:i + size] for i in range(0, len(payload), size)]
    parts = parts or [b""]
    out = []
    for i, part in enumerate(parts):
        op = opcode if i == 0 else OP_CONT
        out.append(F(op, part, i == len(parts) - 1))
    return out


CATALOGUE = []


def add(*args, **kw):
    CATALOGUE.append(Case(*args, **kw))


def fail(cid, title, frames, chop=None, ok=(), code=PROTOCOL_ERROR, **kw):
    """A case where the peer must fail the connection.  If `ok` lists events
    that should come before the failure, missing them is NON-STRICT (the
    peer may fail before it processed the earlier valid frames)."""
    ok = list(ok)
    ns = [[]] if ok else None
    add(cid, title, sender(frames, chop), ok=ok, non_strict=ns, close="fail",
        codes=(code,), **kw)


def echo(cid, title, frames, ok, chop=None, **kw):
    add(cid, title, sender(frames, chop), ok=ok, **kw)


# ==========================================================================
# 1 Framing

SIZES = [0, 125, 126, 127, 128, 65535, 65536]

for i, n in enumerate(SIZES, 1):
    p = b"*" * n
    echo("1.1.%d" % i, "Text message, payload length %d" % n, text(p),
         [("text", p)])
p = b"*" * 65536
echo("1.1.8", "Text message, payload length 65536, sent in chops of 997 "
     "octets", text(p), [("text", p)], chop=997)

for i, n in enumerate(SIZES, 1):
    p = b"\xfe" * n
    echo("1.2.%d" % i, "Binary message, payload length %d" % n, binary(p),
         [("binary", p)])
p = b"\xfe" * 65536
echo("1.2.8", "Binary message, payload length 65536, sent in chops of 997 "
     "octets", binary(p), [("binary", p)], chop=997)

# ==========================================================================
# 2 Pings/Pongs

HELLO = b"Hello, world!"
BIN8 = b"\x00\xff\xfe\xfd\xfc\xfb\x00\xff"

echo("2.1", "Ping without payload", ping(), [("pong", b"")])
echo("2.2", "Ping with small text payload", ping(HELLO), [("pong", HELLO)])
echo("2.3", "Ping with small binary (non UTF-8) payload", ping(BIN8),
     [("pong", BIN8)])
echo("2.4", "Ping with payload of 125 octets", ping(b"\xfe" * 125),
     [("pong", b"\xfe" * 125)])
fail("2.5", "Ping with payload of 126 octets (control frame too long)",
     ping(b"\xfe" * 126))
echo("2.6", "Ping with payload of 125 octets, sent in chops of 1 octet",
     ping(b"\xfe" * 125), [("pong", b"\xfe" * 125)], chop=1)
echo("2.7", "Unsolicited pong without payload (must be ignored)", pong(), [])
echo("2.8", "Unsolicited pong with payload (must be ignored)",
     pong(b"unsolicited pong payload"), [])
echo("2.9", "Unsolicited pong with payload, then ping with payload",
     [pong(b"unsolicited pong payload"), ping(b"ping payload")],
     [("pong", b"ping payload")])


def pongs_subset(expected):
    """RFC 6455 5.5.3: a peer may answer only the most recent of several
    pings.  Pongs that are an in-order subset ending with the last one are
    NON-STRICT."""
    def check(events):
        if not events or events[-1] != expected[-1]:
            return False
        it = iter(expected)
        return all(e in it for e in events)
    return check


def ten_pings(chop):
    payloads = [b"payload-%d" % i for i in range(10)]

    def run(s):
        for p in payloads:
            s.send(ping(p), chop=chop)
    return run, [("pong", p) for p in payloads]


for cid, chop, how in (("2.10", None, ""), ("2.11", 1, ", each in chops of "
                                                         "1 octet")):
    run, ok = ten_pings(chop)
    add(cid, "10 pings with payload" + how, run, ok=ok,
        non_strict=pongs_subset(ok))

# ==========================================================================
# 3 Reserved bits

fail("3.1", "Text message with RSV=1", text(HELLO, rsv=1))
fail("3.2", "Text message, then text message with RSV=2, then ping",
     [text(HELLO), text(HELLO, rsv=2), ping(HELLO)], ok=[("text", HELLO)])
fail("3.3", "Text message, then text message with RSV=3, then ping; "
     "frame-wise writes", [text(HELLO), text(HELLO, rsv=3), ping(HELLO)],
     chop="frame", ok=[("text", HELLO)])
fail("3.4", "Text message, then text message with RSV=4, then ping; "
     "octet-wise writes", [text(HELLO), text(HELLO, rsv=4), ping(HELLO)],
     chop=1, ok=[("text", HELLO)])
fail("3.5", "Binary message with RSV=5", binary(BIN8, rsv=5))
fail("3.6", "Ping with RSV=6", ping(HELLO, rsv=6))
fail("3.7", "Close with RSV=7", close(1000, rsv=7))

# ==========================================================================
# 4 Opcodes

RESERVED_PAYLOAD = b"reserved opcode payload"
for group, ops in (("1", (3, 4, 5, 6, 7)), ("2", (11, 12, 13, 14, 15))):
    kind = "non-control" if group == "1" else "control"
    for i, op in enumerate(ops, 1):
        cid = "4.%s.%d" % (group, i)
        payload = b"" if i in (1, 3) else RESERVED_PAYLOAD
        with_pl = " with payload" if payload else ""
        if i <= 2:
            fail(cid, "Frame with reserved %s opcode %d%s" % (kind, op,
                                                              with_pl),
                 F(op, payload))
        else:
            fail(cid, "Text message, then frame with reserved %s opcode %d%s,"
                 " then ping" % (kind, op, with_pl),
                 [text(HELLO), F(op, payload), ping(HELLO)],
                 ok=[("text", HELLO)])

# ==========================================================================
# 5 Fragmentation

FRAG1, FRAG2 = b"fragment1", b"fragment2"
fail("5.1", "Ping fragmented into 2 frames",
     [ping(FRAG1, fin=False), cont(FRAG2)])
fail("5.2", "Pong fragmented into 2 frames",
     [pong(FRAG1, fin=False), cont(FRAG2)])
for cid, chop, how in (("5.3", None, ""), ("5.4", "frame", "; frame-wise "
                                                          "writes"),
                       ("5.5", 1, "; octet-wise writes")):
    echo(cid, "Text message in 2 fragments" + how,
         [text(FRAG1, fin=False), cont(FRAG2)], [("text", FRAG1 + FRAG2)],
         chop=chop)
PINGPL = b"ping payload"
for cid, chop, how in (("5.6", None, ""), ("5.7", "frame", "; frame-wise "
                                                          "writes"),
                       ("5.8", 1, "; octet-wise writes")):
    echo(cid, "Text message in 2 fragments with a ping in between" + how,
         [text(FRAG1, fin=False), ping(PINGPL), cont(FRAG2)],
         [("pong", PINGPL), ("text", FRAG1 + FRAG2)], chop=chop)
NC = b"non-continuation payload"
for n, fin in ((9, True), (12, False)):
    for j, (chop, how) in enumerate(((None, "one write"),
                                     ("frame", "frame-wise writes"),
                                     (1, "octet-wise writes"))):
        fail("5.%d" % (n + j), "Continuation frame with FIN=%d and nothing to"
             " continue, then text message; %s" % (int(fin), how),
             [cont(NC, fin=fin), text(HELLO)], chop=chop)
fail("5.15", "Text in 2 fragments, then continuation FIN=0 with nothing to "
     "continue, then text message",
     [text(FRAG1, fin=False), cont(FRAG2), cont(b"fragment3", fin=False),
      text(b"fragment4")], ok=[("text", FRAG1 + FRAG2)])
fail("5.16", "2x: continuation FIN=0 with nothing to continue, then text in"
     " 2 fragments",
     [cont(b"fragment1", fin=False), text(b"fragment2", fin=False),
      cont(b"fragment3")] * 2)
fail("5.17", "2x: continuation FIN=1 with nothing to continue, then text in"
     " 2 fragments",
     [cont(b"fragment1"), text(b"fragment2", fin=False),
      cont(b"fragment3")] * 2)
fail("5.18", "Text in 2 fragments, both with opcode text",
     [text(FRAG1, fin=False), text(FRAG2)])


def slow_fragments(chop):
    steps = [text(b"fragment1", fin=False), cont(b"fragment2", fin=False),
             ping(b"pongme 1!"), cont(b"fragment3", fin=False),
             cont(b"fragment4", fin=False), ping(b"pongme 2!"),
             cont(b"fragment5")]

    def run(s):
        for i, f in enumerate(steps):
            if i:
                s.sleep(DELAY)
            s.send(f, chop=chop)
    return run


FIVE = [("pong", b"pongme 1!"), ("pong", b"pongme 2!"),
        ("text", b"fragment1fragment2fragment3fragment4fragment5")]
add("5.19", "Text in 5 fragments with 2 pings in between, %.1fs between "
    "frames" % DELAY, slow_fragments(None), ok=FIVE)
add("5.20", "As 5.19, each frame written in chops of 1 octet",
    slow_fragments(1), ok=FIVE)

# ==========================================================================
# 6 UTF-8

add("6.1.1", "Text message of length 0", sender(text(b"")),
    ok=[("text", b"")])
add("6.1.2", "Text message in 3 fragments, all empty",
    sender([text(b"", fin=False), cont(b"", fin=False), cont(b"")]),
    ok=[("text", b"")])
MID = b"middle frame payload"
add("6.1.3", "Text message in 3 fragments, first and last empty",
    sender([text(b"", fin=False), cont(MID, fin=False), cont(b"")]),
    ok=[("text", MID)])

HELLO_UTF8 = "Hello-µ@ßöäüàá-UTF-8!!".encode("utf-8")
# "κόσμε" with U+1F79 (not U+03CC) as in the Kuhn test file: 11 octets in
# code points of 2, 3, 2, 2, 2 octets.
KOSME = bytes.fromhex("ce ba e1 bd b9 cf 83 ce bc ce b5")
split = len("Hello-µ@ßöä".encode("utf-8"))
echo("6.2.1", "Valid UTF-8 text message in one frame", text(HELLO_UTF8),
     [("text", HELLO_UTF8)])
echo("6.2.2", "Valid UTF-8 in 2 fragments split at a code point boundary",
     [text(HELLO_UTF8[:split], fin=False), cont(HELLO_UTF8[split:])],
     [("text", HELLO_UTF8)])
echo("6.2.3", "Valid UTF-8 in 1-octet fragments (frames end inside code "
     "points)", fragments(OP_TEXT, HELLO_UTF8, 1), [("text", HELLO_UTF8)])
echo("6.2.4", "Valid UTF-8 'κόσμε' (U+1F79) in 1-octet fragments",
     fragments(OP_TEXT, KOSME, 1), [("text", KOSME)])

BAD = KOSME + b"\xed\xa0\x80" + b"edited"   # contains U+D800
fail("6.3.1", "Invalid UTF-8 (a surrogate) in one frame", text(BAD),
     code=INVALID_PAYLOAD)
fail("6.3.2", "Invalid UTF-8 (a surrogate) in 1-octet fragments",
     fragments(OP_TEXT, BAD, 1), code=INVALID_PAYLOAD)


def three_parts(parts, as_frames):
    """Send a text message in 3 parts with pauses: as 3 frames, or as 3
    writes of a single frame.  A fail-fast peer closes after part 2."""
    def run(s):
        if as_frames:
            writes = [s.build(text(parts[0], fin=False)),
                      s.build(cont(parts[1], fin=False)),
                      s.build(cont(parts[2]))]
        else:
            whole = s.build(text(b"".join(parts)))
            cut1 = len(whole) - len(parts[1]) - len(parts[2])
            cut2 = len(whole) - len(parts[2])
            writes = [whole[:cut1], whole[cut1:cut2], whole[cut2:]]
        s.send_writes(writes, pace=FAIL_FAST_WAIT)
        s.sleep(FAIL_FAST_WAIT)
    return run


P641 = (KOSME, b"\xf4\x90\x80\x80", b"edited")
P642 = (KOSME + b"\xf4", b"\x90", b"\x80\x80edited")
for cid, parts, frames, what in (
        ("6.4.1", P641, True, "3 frames; frame 2 holds U+110000"),
        ("6.4.2", P642, True, "3 frames; frame 2 holds the 2nd octet of "
                              "U+110000"),
        ("6.4.3", P641, False, "1 frame written in 3 parts; part 2 holds "
                               "U+110000"),
        ("6.4.4", P642, False, "1 frame written in 3 parts; part 2 holds "
                               "the 2nd octet of U+110000")):
    add(cid, "Fail fast on invalid UTF-8: " + what,
        three_parts(parts, frames), close="fail", codes=(INVALID_PAYLOAD,),
        fail_fast=True)


def _seq(hexes):
    return bytes.fromhex(hexes.replace(" ", ""))


# The UTF-8 decoder stress test catalogue (after Markus Kuhn), 6.5 - 6.23.
# Each entry: (title, [(valid, payload), ...]).
UTF8_GROUPS = [
    ("Some valid UTF-8 sequences", [
        (True, KOSME), (True, b"hello$world"),
        (True, "hello\u00a2world".encode()),
        (True, "hello\u20acworld".encode()),
        (True, "hello\U00024b62world".encode())]),
    ("All prefixes of a valid UTF-8 string with multi-octet code points",
     [(n in (2, 5, 7, 9, 11), KOSME[:n]) for n in range(1, 12)]),
    ("First possible sequence of a certain length", [
        (True, _seq("00")), (True, _seq("c2 80")), (True, _seq("e0 a0 80")),
        (True, _seq("f0 90 80 80"))]),
    ("First possible sequence of length 5/6 (invalid code points)", [
        (False, _seq("f8 88 80 80 80")), (False, _seq("fc 84 80 80 80 80"))]),
    ("Last possible sequence of a certain length", [
        (True, _seq("7f")), (True, _seq("df bf")), (True, _seq("ef bf bf")),
        (True, _seq("f4 8f bf bf"))]),
    ("Last possible sequence of length 4/5/6 (invalid code points)", [
        (False, _seq("f7 bf bf bf")), (False, _seq("fb bf bf bf bf")),
        (False, _seq("fd bf bf bf bf bf"))]),
    ("Other boundary conditions", [
        (True, _seq("ed 9f bf")), (True, _seq("ee 80 80")),
        (True, _seq("ef bf bd")), (True, _seq("f4 8f bf bf")),
        (False, _seq("f4 90 80 80"))]),
    ("Unexpected continuation octets", [
        (False, _seq("80")), (False, _seq("bf")), (False, _seq("80 bf")),
        (False, _seq("80 bf 80")), (False, _seq("80 bf 80 bf")),
        (False, _seq("80 bf 80 bf 80")), (False, _seq("80 bf 80 bf 80 bf")),
        (False, bytes(range(0x80, 0xc0)))]),
    ("Lonely start octets, each followed by a space", [
        (False, b"".join(bytes([c, 0x20]) for c in range(lo, hi + 1)))
        for lo, hi in ((0xc0, 0xdf), (0xe0, 0xef), (0xf0, 0xf7),
                       (0xf8, 0xfb), (0xfc, 0xfd))]),
    ("Sequences with the last continuation octet missing", [
        (False, _seq(h)) for h in (
            "c0", "e0 80", "f0 80 80", "f8 80 80 80", "fc 80 80 80 80",
            "df", "ef bf", "f7 bf bf", "fb bf bf bf", "fd bf bf bf bf")]),
    ("Concatenation of incomplete sequences", [
        (False, _seq("c0 e0 80 f0 80 80 f8 80 80 80 fc 80 80 80 80 df ef bf"
                     " f7 bf bf fb bf bf bf fd bf bf bf bf"))]),
    ("Impossible octets", [
        (False, _seq("fe")), (False, _seq("ff")),
        (False, _seq("fe fe ff ff"))]),
    ("Overlong encodings of '/'", [
        (False, _seq(h)) for h in ("c0 af", "e0 80 af", "f0 80 80 af",
                                   "f8 80 80 80 af", "fc 80 80 80 80 af")]),
    ("Maximum overlong sequences", [
        (False, _seq(h)) for h in ("c1 bf", "e0 9f bf", "f0 8f bf bf",
                                   "f8 87 bf bf bf", "fc 83 bf bf bf bf")]),
    ("Overlong encodings of NUL", [
        (False, _seq(h)) for h in ("c0 80", "e0 80 80", "f0 80 80 80",
                                   "f8 80 80 80 80", "fc 80 80 80 80 80")]),
    ("Single UTF-16 surrogates", [
        (False, _seq(h)) for h in ("ed a0 80", "ed ad bf", "ed ae 80",
                                   "ed af bf", "ed b0 80", "ed be 80",
                                   "ed bf bf")]),
    ("Paired UTF-16 surrogates", [
        (False, _seq(h)) for h in (
            "ed a0 80 ed b0 80", "ed a0 80 ed bf bf", "ed ad bf ed b0 80",
            "ed ad bf ed bf bf", "ed ae 80 ed b0 80", "ed ae 80 ed bf bf",
            "ed af bf ed b0 80", "ed af bf ed bf bf")]),
    ("Noncharacter code points (valid UTF-8)", [
        (True, chr(plane * 0x10000 + low).encode("utf-8"))
        for plane in range(17) for low in (0xfffe, 0xffff)]),
    ("Specials U+FFF9..U+FFFF (valid UTF-8)", [
        (True, chr(c).encode("utf-8")) for c in range(0xfff9, 0x10000)]),
]

for g, (title, seqs) in enumerate(UTF8_GROUPS, 5):
    for i, (valid, payload) in enumerate(seqs, 1):
        cid = "6.%d.%d" % (g, i)
        name = "%s: %s (%s)" % (title, payload[:24].hex(" ") +
                                (" ..." if len(payload) > 24 else ""),
                                "valid" if valid else "invalid")
        if valid:
            echo(cid, name, text(payload), [("text", payload)])
        else:
            fail(cid, name, text(payload), code=INVALID_PAYLOAD)

# ==========================================================================
# 7 Close

HW = b"Hello World!"
echo("7.1.1", "Text message, then close", [text(HW), close(1000)],
     [("text", HW)])
echo("7.1.2", "Two close frames", [close(1000), close(1000)], [])
echo("7.1.3", "Close, then ping (must not be answered)",
     [close(1000), ping(HW)], [])
echo("7.1.4", "Close, then text message (must not be echoed)",
     [close(1000), text(HW)], [])
echo("7.1.5", "First fragment of a text message, close, then the last "
     "fragment (must not be echoed)",
     [text(FRAG1, fin=False), close(1000), cont(FRAG2)], [])
BIG = (b"BAsd7&jh23" * 26215)[:262144]
add("7.1.6", "256 KiB text message, close and ping in one write "
    "(the echo may or may not come)",
    sender([text(BIG), close(1000), ping(HW)]), info=True)

echo("7.3.1", "Close with an empty payload", close(), [])
fail("7.3.2", "Close with a 1-octet payload", F(OP_CLOSE, b"a"))
echo("7.3.3", "Close with code 1000 and no reason", close(1000), [])
echo("7.3.4", "Close with code 1000 and a reason", close(1000, HW), [])
echo("7.3.5", "Close with code 1000 and a 123-octet reason",
     close(1000, b"*" * 123), [])
fail("7.3.6", "Close with code 1000 and a 124-octet reason (payload 126)",
     close(1000, b"*" * 124))
fail("7.5.1", "Close with a reason that is not valid UTF-8",
     close(1000, BAD), code=INVALID_PAYLOAD)

VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000,
               3999, 4000, 4999]
for i, code in enumerate(VALID_CODES, 1):
    echo("7.7.%d" % i, "Close with valid code %d" % code, close(code, HW), [],
         codes=(1000, code))
# Registered with IANA after RFC 6455; rejecting them is NON-STRICT.
for i, code in enumerate((1012, 1013, 1014), len(VALID_CODES) + 1):
    echo("7.7.%d" % i, "Close with IANA-registered code %d" % code,
         close(code, HW), [], codes=(1000, code), ns_codes=(PROTOCOL_ERROR,))
INVALID_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999]
for i, code in enumerate(INVALID_CODES, 1):
    fail("7.9.%d" % i, "Close with invalid code %d" % code, close(code, HW))
# Above 4999 RFC 6455 defines nothing; Autobahn grades these informational.
# We want 1002, and accept an echo as NON-STRICT.
for i, code in enumerate((5000, 65535), 1):
    fail("7.13.%d" % i, "Close with out-of-range code %d" % code,
         close(code, HW), ns_codes=(1000, code))

# ==========================================================================
# 9 Limits/Performance


def text_payload(n):
    return (b"BAsd7&jh23" * (n // 10 + 1))[:n]


def binary_payload(n):
    return b"\xfe" * n


KiB, MiB = 1024, 1024 * 1024


def big_case(cid, title, kind, payload, frame_size=None, chop=None,
             quick=True):
    opcode = OP_TEXT if kind == "text" else OP_BINARY

    def run(s):
        if frame_size:
            s.send(fragments(opcode, payload, frame_size))
        else:
            s.send(F(opcode, payload), chop=chop)
        s.wait_events(1, s.remaining())
    add(cid, title, run, ok=[(kind, payload)], quick=quick)


def size_name(n):
    return "%d MiB" % (n // MiB) if n >= MiB else "%d KiB" % (n // KiB) \
        if n >= KiB else "%d octets" % n


for sub, kind, make in (("1", "text", text_payload),
                        ("2", "binary", binary_payload)):
    for i, n in enumerate((64 * KiB, 256 * KiB, MiB, 4 * MiB, 8 * MiB,
                           16 * MiB), 1):
        big_case("9.%s.%d" % (sub, i), "%s message of %s in one frame"
                 % (kind.capitalize(), size_name(n)), kind, make(n),
                 quick=n <= MiB)
for sub, kind, make in (("3", "text", text_payload),
                        ("4", "binary", binary_payload)):
    for i, fs in enumerate((64, 256, KiB, 4 * KiB, 16 * KiB, 64 * KiB,
                            256 * KiB, MiB, 4 * MiB), 1):
        big_case("9.%s.%d" % (sub, i), "%s message of 4 MiB in frames of %s"
                 % (kind.capitalize(), size_name(fs)), kind, make(4 * MiB),
                 frame_size=fs, quick=fs in (KiB, 64 * KiB))
for sub, kind, make in (("5", "text", text_payload),
                        ("6", "binary", binary_payload)):
    for i, ch in enumerate((64, 128, 256, 512, 1024, 2048), 1):
        big_case("9.%s.%d" % (sub, i), "%s message of 1 MiB in one frame, "
                 "written in chops of %d octets" % (kind.capitalize(), ch),
                 kind, make(MiB), chop=ch, quick=ch == 2048)


def round_trips(kind, n, count=1000):
    payload = (text_payload if kind == "text" else binary_payload)(n)
    opcode = OP_TEXT if kind == "text" else OP_BINARY

    def run(s):
        for i in range(count):
            if not s.send(F(opcode, payload)):
                return
            s.wait_events(i + 1, s.remaining())
    return run, [(kind, payload)] * count


for sub, kind in (("7", "text"), ("8", "binary")):
    for i, n in enumerate((0, 16, 64, 256, 1024, 4096), 1):
        run, ok = round_trips(kind, n)
        add("9.%s.%d" % (sub, i), "1000 %s messages of %d octets, one at a "
            "time (round-trip latency)" % (kind, n), run, ok=ok,
            quick=n in (0, 4096))

# ==========================================================================
# 10 Misc

p = text_payload(65536)
big = fragments(OP_TEXT, p, 1300)
add("10.1.1", "Text message of 64 KiB in frames of 1300 octets",
    sender(big), ok=[("text", p)])

# --------------------------------------------------------------------------
# 12, 13: permessage-deflate (RFC 7692).  Each case opens a connection that
# agrees on compression (server mode: we offer case.offer; client mode: we
# answer the client's offer with case.response), sends `count` compressed
# messages and expects them back.  The quick form (default) runs a subset
# with 50 messages; --deflate-full runs every size with 1000 messages, as
# Autobahn does.

PMD = "permessage-deflate"
PMD_SIZES = [16, 64, 256, 1024, 4096, 8192, 16384, 32768, 65536, 131072]
PMD_FRAG = 256        # frame size of the fragmented variants (x.y.11-18)
PMD_QUICK = {1, 4, 7, 10, 14}
PMD_QUICK_COUNT = 50
PMD_FULL_COUNT = 1000


def _corpus(kind):
    """256 KiB of one payload kind (deterministic)."""
    import hashlib
    import json
    out = bytearray()
    i = 0
    while len(out) < 1 << 18:
        if kind == "json":
            out += json.dumps({"id": i, "channel": "room-%d" % (i % 17),
                               "user": {"name": ["ada", "bob", "cy"][i % 3],
                                        "score": i * 37 % 1000},
                               "tags": ["a", "bb", "ccc"][:i % 4],
                               "ok": i % 2 == 0}).encode() + b"\n"
        elif kind == "records":
            out += struct.pack("!IHHQd", i, i % 7, 0xBEEF, i * i, i / 3.0)
        elif kind == "html":
            out += ('<tr class="row%d"><td><a href="/item/%d">Item %d</a>'
                    '</td><td>%d.%02d</td></tr>\n'
                    % (i % 2, i, i, i % 100, i % 97)).encode()
        elif kind == "random":
            out += hashlib.sha256(b"%d" % i).digest()
        i += 1
    return bytes(out)


_GERMAN = ("Habe nun, ach! Philosophie, Juristerei und Medizin, und leider "
           "auch Theologie durchaus studiert, mit heißem Bemühn. Da steh ich "
           "nun, ich armer Tor! Und bin so klug als wie zuvor; heiße Magister"
           ", heiße Doktor gar. Straße, Größe, Übermut, Äpfel, Öl. ")


def pmd_payload(kind, size, i):
    """Message i of `size` octets of kind."""
    if kind == "prose":
        text = _GERMAN * (size // 40 + 2)
        start = (i * 13) % len(_GERMAN)
        data = text[start:].encode("utf-8")[:size]
        # Cut on a character boundary, pad with ASCII to the exact size.
        data = data.decode("utf-8", "ignore").encode("utf-8")
        return data + b"." * (size - len(data))
    if kind not in _CORPORA:
        _CORPORA[kind] = _corpus(kind)
    base = _CORPORA[kind]
    off = (i * 7919) % (len(base) - size)
    return base[off:off + size]


_CORPORA = {}
PMD_KINDS = [  # (section 12 subsection, kind, opcode, description)
    (1, "json", OP_TEXT, "JSON text"),
    (2, "records", OP_BINARY, "binary records"),
    (3, "prose", OP_TEXT, "UTF-8 prose (German)"),
    (4, "html", OP_TEXT, "HTML text"),
    (5, "random", OP_BINARY, "random binary (incompressible)"),
]


# Messages per case: run.py sets PMD_COUNT[0] = PMD_FULL_COUNT for
# --deflate-full.
PMD_COUNT = [PMD_QUICK_COUNT]


class PmdEvents:
    """The expected events of a compression case, made on demand (1000
    messages of 128 KiB should not sit in memory for every case)."""

    def __init__(self, kind, op, size):
        self.args = (kind, op, size)

    def _list(self):
        kind, op, size = self.args
        name = "text" if op == OP_TEXT else "binary"
        return [(name, pmd_payload(kind, size, i)) for i in range(len(self))]

    def __len__(self):
        return PMD_COUNT[0]

    def __iter__(self):
        return iter(self._list())

    def __getitem__(self, i):
        return self._list()[i]

    def __eq__(self, other):
        return self._list() == list(other)

    def __ne__(self, other):
        return not self.__eq__(other)


def pmd_sender(kind, op, size, frag):
    def run(s):
        frames = []
        for i in range(PMD_COUNT[0]):
            m = pmd_payload(kind, size, i)
            if s.deflate is not None and s.deflate.can_compress():
                c = s.deflate.compress(m)
                if frag and len(c) > frag:
                    parts = [c[j:j + frag] for j in range(0, len(c), frag)]
                    for j, part in enumerate(parts):
                        frames.append(F(op if j == 0 else OP_CONT, part,
                                        j == len(parts) - 1, 4 if j == 0
                                        else 0))
                else:
                    frames.append(F(op, c, True, 4))
            else:
                frames.append(F(op, m))
            if len(frames) >= 64:
                s.send(frames)
                frames = []
        if frames:
            s.send(frames)
    return run


def pmd_cases(section, sub, title, kind, op, offer, response,
              expect_pmd=True):
    for y in range(1, 19):
        if y <= 10:
            size, frag = PMD_SIZES[y - 1], None
            how = ""
        else:
            size, frag = PMD_SIZES[y - 9], PMD_FRAG
            how = ", compressed data in %d-octet frames" % frag
        add("%d.%d.%d" % (section, sub, y),
            "%s: compressed messages of %d octets%s" % (title, size, how),
            pmd_sender(kind, op, size, frag), PmdEvents(kind, op, size),
            offer=offer, response=response, expect_pmd=expect_pmd,
            full=y not in PMD_QUICK, timeout=120.0)


for _sub, _kind, _op, _desc in PMD_KINDS:
    pmd_cases(12, _sub, _desc, _kind, _op, (PMD + "; client_max_window_bits",),
              PMD)

# Section 13: the parameters.  (server-mode offer lines, client-mode answer)
PMD_PARAMS = [
    (1, (PMD,), PMD),
    (2, (PMD + "; client_no_context_takeover; client_max_window_bits",),
     PMD + "; client_no_context_takeover"),
    (3, (PMD + "; server_max_window_bits=9",),
     PMD + "; server_max_window_bits=9"),
    (4, (PMD + "; server_max_window_bits=15",),
     PMD + "; server_max_window_bits=15"),
    (5, (PMD + "; server_no_context_takeover; server_max_window_bits=9",),
     PMD + "; server_no_context_takeover; server_max_window_bits=9"),
    (6, (PMD + "; server_no_context_takeover; server_max_window_bits=15",),
     PMD + "; server_no_context_takeover; server_max_window_bits=15"),
    (7, (PMD + "; server_no_context_takeover; server_max_window_bits=9, "
         + PMD + "; server_no_context_takeover, " + PMD,),
     PMD + "; server_no_context_takeover; client_no_context_takeover"),
    (8, (PMD + "; client_max_window_bits=9",),
     PMD + "; client_max_window_bits=9"),
    (9, (PMD + "; server_no_context_takeover; client_no_context_takeover; "
         "server_max_window_bits=10; client_max_window_bits",),
     PMD + "; server_no_context_takeover; client_no_context_takeover; "
     "server_max_window_bits=10; client_max_window_bits=10"),
    (10, ("x-unknown-extension; a=1", PMD + "; server_max_window_bits=12; "
          "client_max_window_bits=\"12\""),
     PMD + "; server_max_window_bits=12; client_max_window_bits=12"),
]
for _sub, _offer, _resp in PMD_PARAMS:
    pmd_cases(13, _sub, "offer %s" % " / ".join(_offer), "json", OP_TEXT,
              _offer, _resp)

CATALOGUE.sort(key=Case.key)
BY_ID = {c.id: c for c in CATALOGUE}
assert len(BY_ID) == len(CATALOGUE), "duplicate case ids"


# ==========================================================================
# verdicts

def worst(a, b):
    return a if _RANK[a] >= _RANK[b] else b


def describe_events(events):
    """Short text for a list of events: 'text(13) pong(0) ...'."""
    if not events:
        return "nothing"
    out, prev, count = [], None, 0
    for kind, payload in events:
        item = "%s(%d)" % (kind, len(payload))
        if item == prev:
            count += 1
            continue
        if prev is not None:
            out.append(prev if count == 1 else "%d x %s" % (count, prev))
        prev, count = item, 1
    out.append(prev if count == 1 else "%d x %s" % (count, prev))
    return " ".join(out)


def _diff(expected, got):
    if len(expected) == len(got):
        for i, (e, g) in enumerate(zip(expected, got)):
            if e != g:
                what = "payload differs" if e[0] == g[0] else "kind differs"
                return "event %d: %s (expected %s, got %s)" % (
                    i + 1, what, describe_events([e]), describe_events([g]))
    return "expected %s, got %s" % (describe_events(expected),
                                    describe_events(got))


def _code(code):
    return "no status code" if code is None else str(code)


def judge(case, s):
    """(verdict, [reasons]) for what session s observed running case."""
    verdict, reasons = OK, []

    def note(v, text):
        nonlocal verdict
        verdict = worst(verdict, v)
        reasons.append("%s: %s" % (v, text))

    for v in s.violations:
        note(FAILED, "peer protocol violation: " + v)
    if case.offer or case.response:
        if s.deflate is None and case.expect_pmd:
            note(UNIMPLEMENTED, "permessage-deflate was not agreed")
        elif s.deflate is not None and not case.expect_pmd:
            note(FAILED, "permessage-deflate agreed where it must not be")
    if s.timed_out:
        note(FAILED, "case timed out")

    # What came back: echoed messages and pongs.
    if case.info:
        note(INFORMATIONAL, "received %s" % describe_events(s.events))
    elif s.events != case.ok:
        ns = case.non_strict
        if callable(ns) and ns(s.events) or \
                isinstance(ns, list) and s.events in ns:
            note(NON_STRICT, "received %s, expected %s" % (
                describe_events(s.events), describe_events(case.ok)))
        else:
            note(FAILED, _diff(case.ok, s.events))

    # How the connection ended.
    code = s.peer_close[0] if s.peer_close else None
    if case.close == "normal":
        if s.close_first == "peer":
            note(FAILED, "peer failed the connection (close %s)" % _code(code))
        elif s.peer_close is None:
            if s.eof or s.reset:
                note(FAILED, "peer closed TCP without a close frame")
            elif not s.timed_out:
                note(FAILED, "peer never answered the close frame")
        elif code is None or code in case.codes:
            pass
        elif code in case.ns_codes:
            note(NON_STRICT, "peer answered close with %d" % code)
        else:
            note(FAILED, "peer answered close with %d, expected %s" % (
                code, " or ".join(map(str, case.codes))))
        if s.lingered:
            note(NON_STRICT, "server did not close TCP after the closing "
                 "handshake")
    else:
        if s.peer_close is None and not (s.eof or s.reset):
            if not s.timed_out:
                note(FAILED, "peer did not fail the connection")
        elif s.peer_close is None:
            pass  # failing by just closing TCP is allowed (RFC 6455 7.1.7)
        elif code is None:
            note(NON_STRICT, "peer failed with a close frame without status "
                 "code, expected %s" % " or ".join(map(str, case.codes)))
        elif code in case.codes:
            pass
        elif code in case.ns_codes:
            note(NON_STRICT, "peer closed with %d instead of failing" % code)
        else:
            note(FAILED, "peer closed with %d, expected %s" % (
                code, " or ".join(map(str, case.codes))))
        if case.fail_fast and s.skipped == 0 and (s.peer_close is not None
                                                 or s.eof or s.reset):
            note(NON_STRICT, "peer failed only after the whole message was "
                 "sent (not fail-fast)")
    return verdict, reasons


def observed(s):
    """One line on what happened, for reports."""
    parts = ["received " + describe_events(s.events)]
    if s.close_first == "peer":
        code, reason = s.peer_close
        parts.append("peer sent close %s%s first" % (
            _code(code), " %r" % reason.decode("utf-8", "replace")[:60]
            if reason else ""))
    elif s.close_first == "runner":
        if s.peer_close:
            code, reason = s.peer_close
            parts.append("peer answered our close with %s%s" % (
                _code(code), " %r" % reason.decode("utf-8", "replace")[:60]
                if reason else ""))
        else:
            parts.append("peer sent no close frame")
    else:
        parts.append("no close frames")
    if s.eof:
        parts.append("peer closed TCP at %.3fs" % s.t_peer_closed)
    elif s.reset:
        parts.append("connection reset/broken at %.3fs" % s.t_peer_closed)
    elif s.dropped_by_runner:
        parts.append("runner dropped TCP")
    if s.skipped:
        parts.append("%d write(s) not sent: peer had closed" % s.skipped)
    parts += s.notes
    return "; ".join(parts)
