"""RFC 6455 on the wire: frame building and parsing, masking, the opening
handshake (both sides) and close payloads.

Everything here works on bytes and has no notion of test cases, so the case
runner can build frames that a normal WebSocket library would refuse to
produce (reserved bits, reserved opcodes, oversized control frames, broken
UTF-8, ...).  Standard library only.
"""

import base64
import hashlib
import os
import struct
import zlib

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

OP_NAMES = {OP_CONT: "continuation", OP_TEXT: "text", OP_BINARY: "binary",
            OP_CLOSE: "close", OP_PING: "ping", OP_PONG: "pong"}

# Close codes a peer may put on the wire (RFC 6455 7.4.1, plus the later
# IANA registrations 1012-1014); 3000-4999 are always allowed.
WIRE_CLOSE_CODES = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011,
                    1012, 1013, 1014}


def opname(op):
    return OP_NAMES.get(op, "opcode %d" % op)


# --------------------------------------------------------------------------
# masking

def apply_mask(key, data):
    """XOR data with the 4-byte key (the same operation masks and unmasks).

    Done as one big-integer XOR so that megabytes take milliseconds."""
    n = len(data)
    if n == 0:
        return b""
    reps = key * (n // 4 + 1)
    x = int.from_bytes(data, "big") ^ int.from_bytes(reps[:n], "big")
    return x.to_bytes(n, "big")


# --------------------------------------------------------------------------
# frames

def frame_header(opcode, length, fin=True, rsv=0, mask_key=None):
    """The header of one frame: FIN/RSV/opcode byte, length, masking key."""
    b0 = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0xF)
    mbit = 0x80 if mask_key is not None else 0
    if length < 126:
        head = struct.pack("!BB", b0, mbit | length)
    elif length < 65536:
        head = struct.pack("!BBH", b0, mbit | 126, length)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, length)
    if mask_key is not None:
        head += mask_key
    return head


def build_frame(opcode, payload=b"", fin=True, rsv=0, mask=True,
                mask_key=None):
    """A complete frame as bytes.  With mask=True a random key is used unless
    mask_key is given."""
    payload = bytes(payload)
    if mask and mask_key is None:
        mask_key = os.urandom(4)
    if not mask:
        mask_key = None
    head = frame_header(opcode, len(payload), fin, rsv, mask_key)
    if mask_key is None:
        return head + payload
    return head + apply_mask(mask_key, payload)


def close_payload(code=None, reason=b""):
    if code is None:
        return b""
    return struct.pack("!H", code) + reason


def parse_close_payload(payload):
    """(code or None, reason bytes, problem or None) for a close frame body."""
    if len(payload) == 0:
        return None, b"", None
    if len(payload) == 1:
        return None, b"", "close payload of 1 byte"
    code = struct.unpack("!H", payload[:2])[0]
    reason = bytes(payload[2:])
    problem = None
    if not (code in WIRE_CLOSE_CODES or 3000 <= code <= 4999):
        problem = "close code %d may not be sent" % code
    elif not is_valid_utf8(reason):
        problem = "close reason is not valid UTF-8"
    return code, reason, problem


def is_valid_utf8(data):
    # Python's strict codec rejects overlongs, surrogates, code points above
    # U+10FFFF and truncated sequences, and accepts noncharacters: exactly
    # the UTF-8 that RFC 3629 (and so RFC 6455) requires.
    try:
        bytes(data).decode("utf-8", "strict")
        return True
    except UnicodeDecodeError:
        return False


class Frame:
    __slots__ = ("fin", "rsv", "opcode", "masked", "payload", "problems")

    def __init__(self, fin, rsv, opcode, masked, payload, problems):
        self.fin = fin
        self.rsv = rsv
        self.opcode = opcode
        self.masked = masked
        self.payload = payload
        self.problems = problems  # header-level protocol violations

    def __repr__(self):
        return "<%s fin=%d rsv=%d len=%d>" % (opname(self.opcode), self.fin,
                                              self.rsv, len(self.payload))


class FrameParser:
    """Incremental parser: feed() bytes, then take frames with next_frame().

    It never rejects anything; header-level violations (non-minimal length,
    64-bit length with the top bit set) are attached to the frame so that the
    runner can report them."""

    def __init__(self):
        self.buf = bytearray()

    def feed(self, data):
        self.buf += data

    def buffered(self):
        return len(self.buf)

    def next_frame(self):
        buf = self.buf
        if len(buf) < 2:
            return None
        b0, b1 = buf[0], buf[1]
        masked = bool(b1 & 0x80)
        n = b1 & 0x7F
        pos = 2
        problems = []
        if n == 126:
            if len(buf) < 4:
                return None
            n = struct.unpack_from("!H", buf, 2)[0]
            pos = 4
            if n < 126:
                problems.append("non-minimal 16-bit length %d" % n)
        elif n == 127:
            if len(buf) < 10:
                return None
            n = struct.unpack_from("!Q", buf, 2)[0]
            pos = 10
            if n >> 63:
                problems.append("64-bit length with the top bit set")
            elif n < 65536:
                problems.append("non-minimal 64-bit length %d" % n)
        key = None
        if masked:
            if len(buf) < pos + 4:
                return None
            key = bytes(buf[pos:pos + 4])
            pos += 4
        if len(buf) < pos + n:
            return None
        payload = bytes(buf[pos:pos + n])
        del buf[:pos + n]
        if key is not None:
            payload = apply_mask(key, payload)
        return Frame(bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0xF, masked,
                     payload, problems)


# --------------------------------------------------------------------------
# opening handshake

def new_key():
    return base64.b64encode(os.urandom(16)).decode("ascii")


def accept_for(key):
    digest = hashlib.sha1(key.encode("ascii") + GUID).digest()
    return base64.b64encode(digest).decode("ascii")


def client_request(host, port, path, key, extensions=()):
    """extensions: Sec-WebSocket-Extensions values, one header line each."""
    ext = "".join("Sec-WebSocket-Extensions: %s\r\n" % e for e in extensions)
    return ("GET %s HTTP/1.1\r\n"
            "Host: %s:%d\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            "Sec-WebSocket-Key: %s\r\n"
            "Sec-WebSocket-Version: 13\r\n"
            "%s"
            "User-Agent: herald-conformance\r\n"
            "\r\n" % (path, host, port, key, ext)).encode("ascii")


def server_response(key, extension=None):
    ext = ("Sec-WebSocket-Extensions: %s\r\n" % extension
           if extension else "")
    return ("HTTP/1.1 101 Switching Protocols\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            "Sec-WebSocket-Accept: %s\r\n"
            "%s"
            "\r\n" % (accept_for(key), ext)).encode("ascii")


def split_head(buf):
    """(head, rest) once buf holds a full HTTP head, else None."""
    i = buf.find(b"\r\n\r\n")
    if i < 0:
        return None
    return bytes(buf[:i]), bytes(buf[i + 4:])


def parse_head(head):
    """(start line, {lower-case name: [values]}) of an HTTP head."""
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if ":" not in line:
            continue
        name, value = line.split(":", 1)
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return lines[0], headers


def _tokens(headers, name):
    out = []
    for value in headers.get(name, []):
        out += [t.strip().lower() for t in value.split(",") if t.strip()]
    return out


def check_response(head, key, allow_extensions=False):
    """None if head is a valid 101 answer to our key, else what is wrong."""
    start, headers = parse_head(head)
    parts = start.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.1"):
        return "bad status line %r" % start
    if parts[1] != "101":
        return "status %s instead of 101 (%r)" % (parts[1], start)
    if "websocket" not in _tokens(headers, "upgrade"):
        return "missing 'Upgrade: websocket'"
    if "upgrade" not in _tokens(headers, "connection"):
        return "missing 'Connection: Upgrade'"
    got = headers.get("sec-websocket-accept", [""])
    if got != [accept_for(key)]:
        return "wrong Sec-WebSocket-Accept %r" % got
    if headers.get("sec-websocket-extensions") and not allow_extensions:
        return "server chose extensions we did not offer: %r" % (
            headers["sec-websocket-extensions"],)
    if headers.get("sec-websocket-protocol"):
        return "server chose a subprotocol we did not offer"
    return None


def check_request(head):
    """(path, key, None) for a valid client opening handshake, else
    (path or None, None, what is wrong)."""
    start, headers = parse_head(head)
    parts = start.split(" ")
    if len(parts) != 3 or parts[0] != "GET" or parts[2] != "HTTP/1.1":
        return None, None, "bad request line %r" % start
    path = parts[1]
    if not headers.get("host"):
        return path, None, "missing Host"
    if "websocket" not in _tokens(headers, "upgrade"):
        return path, None, "missing 'Upgrade: websocket'"
    if "upgrade" not in _tokens(headers, "connection"):
        return path, None, "missing 'Connection: Upgrade'"
    if headers.get("sec-websocket-version") != ["13"]:
        return path, None, "Sec-WebSocket-Version is %r" % (
            headers.get("sec-websocket-version"),)
    keys = headers.get("sec-websocket-key", [])
    if len(keys) != 1:
        return path, None, "no single Sec-WebSocket-Key"
    try:
        raw = base64.b64decode(keys[0], validate=True)
    except ValueError:
        raw = b""
    if len(raw) != 16:
        return path, None, "Sec-WebSocket-Key is not 16 bytes in base64"
    return path, keys[0], None


# --------------------------------------------------------------------------
# permessage-deflate (RFC 7692)

def parse_extensions(values):
    """[(name, {param: value or True})] from Sec-WebSocket-Extensions header
    values (a list, one per header line).  Raises ValueError when malformed.
    Quoted-string values are unquoted; repeated parameters raise."""
    out = []
    for value in values:
        i, n = 0, len(value)

        def token():
            nonlocal i
            j = i
            while i < n and (value[i].isalnum() or value[i] in
                             "!#$%&'*+-.^_`|~"):
                i += 1
            if i == j:
                raise ValueError("expected a token at %r" % value[j:])
            return value[j:i]

        def ows():
            nonlocal i
            while i < n and value[i] in " \t":
                i += 1

        while True:
            ows()
            while i < n and value[i] == ",":
                i += 1
                ows()
            if i >= n:
                break
            name = token().lower()
            params = {}
            while True:
                ows()
                if i >= n or value[i] == ",":
                    break
                if value[i] != ";":
                    raise ValueError("expected ';' in %r" % value)
                i += 1
                ows()
                pname = token().lower()
                ows()
                pval = True
                if i < n and value[i] == "=":
                    i += 1
                    ows()
                    if i < n and value[i] == '"':
                        j = value.index('"', i + 1)
                        pval = value[i + 1:j].replace("\\", "")
                        i = j + 1
                    else:
                        pval = token()
                if pname in params:
                    raise ValueError("repeated parameter %s" % pname)
                params[pname] = pval
            out.append((name, params))
    return out


PMD_PARAMS = {"server_no_context_takeover", "client_no_context_takeover",
              "server_max_window_bits", "client_max_window_bits"}


def pmd_problem(params, response=True):
    """None if params are valid for permessage-deflate, else why."""
    for k, v in params.items():
        if k not in PMD_PARAMS:
            return "unknown parameter %s" % k
        if k.endswith("no_context_takeover") and v is not True:
            return "%s with a value" % k
        if k.endswith("max_window_bits"):
            if v is True:
                if k == "server_max_window_bits" or response:
                    return "%s without a value" % k
                continue
            if not v.isdigit() or v != str(int(v)) or not 8 <= int(v) <= 15:
                return "%s=%s is not 8..15" % (k, v)
    return None


class Deflate:
    """One connection's permessage-deflate state.  role: the side *we* play
    ("client" or "server"); params: the agreed (response) parameters."""

    def __init__(self, params, role):
        snct = "server_no_context_takeover" in params
        cnct = "client_no_context_takeover" in params
        sbits = int(params.get("server_max_window_bits", 15))
        cbits = params.get("client_max_window_bits", 15)
        cbits = 15 if cbits is True else int(cbits)
        self.params = params
        if role == "client":
            self.tx_bits, self.tx_reset = cbits, cnct
            self.rx_bits, self.rx_reset = sbits, snct
        else:
            self.tx_bits, self.tx_reset = sbits, snct
            self.rx_bits, self.rx_reset = cbits, cnct
        self._c = None
        self._d = None

    def can_compress(self):
        return self.tx_bits >= 9  # zlib cannot deflate with an 8-bit window

    def compress(self, data):
        """One whole message, compressed (RFC 7692 7.2.1)."""
        if self._c is None or self.tx_reset:
            self._c = zlib.compressobj(6, zlib.DEFLATED, -self.tx_bits)
        out = self._c.compress(bytes(data)) + self._c.flush(zlib.Z_SYNC_FLUSH)
        assert out.endswith(b"\x00\x00\xff\xff")
        return out[:-4]

    def decompress(self, data):
        """One whole compressed message (RFC 7692 7.2.2), inflated with the
        agreed window (9 when 8 was agreed), so that a peer overshooting it
        is caught.  Raises zlib.error on bad data."""
        if self._d is None or self.rx_reset:
            self._d = zlib.decompressobj(-max(9, self.rx_bits))
        return self._d.decompress(bytes(data) + b"\x00\x00\xff\xff")
