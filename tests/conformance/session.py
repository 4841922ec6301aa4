"""One WebSocket connection driven by a test case, after the opening handshake.

A Session sends exactly the octets a case asks for (whole frames, several
frames in one write, one frame across many writes, with pauses in between)
and meanwhile reads and checks everything the peer sends.  What it saw is
kept on the session (events, close frames, who closed, protocol violations)
for the verdict rules in cases.py.

The session plays either side: role "client" (we test a server: our frames
are masked, the peer's must not be) or "server" (we test a client: our frames
are unmasked, the peer's must be masked).
"""

import errno
import select
import time
from collections import deque, namedtuple

import wire
from wire import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT


class CaseTimeout(Exception):
    """The case's own time limit ran out."""


# One frame to send.  payload is bytes; rsv is the 3-bit RSV field.
F = namedtuple("F", "opcode payload fin rsv", defaults=(b"", True, 0))

READ_SIZE = 1 << 20
WRITE_SIZE = 1 << 20
TRACE_HEAD, TRACE_TAIL = 200, 60
SYNC_PAUSE = 0.05  # pause after each write in "frame-wise" sends


class Session:
    def __init__(self, sock, leftover, role, deadline, tcp_wait=2.0):
        self.sock = sock
        self.sock.setblocking(False)
        self.role = role
        self.mask = role == "client"
        self.deadline = deadline
        self.tcp_wait = tcp_wait
        self.parser = wire.FrameParser()
        self.t0 = time.monotonic()

        self.events = []        # ("text"|"binary"|"pong", payload)
        self.violations = []    # protocol errors committed by the peer
        self.notes = []         # other things worth reporting
        self.trace = []         # short log of the conversation
        self._trace_tail = deque(maxlen=TRACE_TAIL)
        self._trace_omitted = 0

        self.sent_close = None  # (code, reason) of the first close we sent
        self.peer_close = None  # (code, reason) of the peer's close frame
        self.close_first = None  # "runner" or "peer": first close frame
        self.eof = False        # the peer closed the TCP connection
        self.reset = False      # ... or it was reset / a write failed
        self.t_peer_closed = None  # when the peer's close frame or EOF came
        self.dropped_by_runner = False
        self.timed_out = False
        self.lingered = False   # server kept TCP open after the handshake

        self.sends = 0          # send steps performed
        self.skipped = 0        # send steps not performed: peer had closed
        self.t_last_send = None

        self._msg_op = None
        self._msg_parts = []
        self._msg_comp = False
        # permessage-deflate (wire.Deflate) when the handshake agreed it
        self.deflate = None
        self.compressed_in = 0  # peer's messages that came compressed
        self._pending = []      # control frames to write between steps
        self._dropped = False

        if leftover:
            self._feed(leftover)

    # ------------------------------------------------------------------
    # state

    def now(self):
        return time.monotonic() - self.t0

    def log(self, text):
        line = "%7.3f %s" % (self.now(), text)
        if len(self.trace) < TRACE_HEAD:
            self.trace.append(line)
        else:
            self._trace_omitted += 1
            self._trace_tail.append(line)

    def full_trace(self):
        """The conversation log; long ones lose their middle."""
        tail = list(self._trace_tail)
        omitted = self._trace_omitted - len(tail)
        mid = ["... %d lines omitted ..." % omitted] if omitted > 0 else []
        return self.trace + mid + tail

    def remaining(self):
        """Seconds left before the case's time limit."""
        return max(0.0, self.deadline - time.monotonic())

    def peer_gone(self):
        """The peer has closed (close frame or TCP): we stop sending."""
        return self.peer_close is not None or self.eof or self.reset

    def _check_deadline(self):
        if time.monotonic() >= self.deadline:
            self.timed_out = True
            raise CaseTimeout()

    # ------------------------------------------------------------------
    # sending

    def build(self, frames):
        """Bytes of one F or a list of F, masked if we are the client."""
        if isinstance(frames, F):
            frames = [frames]
        out = []
        for f in frames:
            out.append(wire.build_frame(f.opcode, f.payload, f.fin, f.rsv,
                                        mask=self.mask))
            if f.opcode == OP_CLOSE and self.sent_close is None:
                code, reason, _ = wire.parse_close_payload(f.payload)
                self.sent_close = (code, reason)
                if self.close_first is None:
                    self.close_first = "runner"
        return b"".join(out)

    def send(self, frames, chop=None, pace=0.0):
        """Send one F or a list of F.

        chop=None: all frames in a single write.
        chop="frame": one write per frame, with a short pause after each.
        chop=N: the octets of all frames in writes of N octets, pausing
        `pace` seconds between writes.

        A write is skipped when the peer has already closed; skipped writes
        are counted (fail-fast cases look at that).  Returns True if
        everything was written."""
        if isinstance(frames, F):
            frames = [frames]
        if chop == "frame":
            for f in frames:
                if not self.send(f):
                    return False
                self.sleep(SYNC_PAUSE)
            return True
        self.pump(0)
        if self.peer_gone():
            self.skipped += 1
            self.log("skip send: peer has closed")
            return False
        data = self.build(frames)
        self._describe_send(frames, chop)
        if chop is None:
            return self._send_chunks([data])
        chunks = [data[i:i + chop] for i in range(0, len(data), chop)]
        return self._send_chunks(chunks, pace)

    def send_writes(self, writes, pace=0.0):
        """Send prepared octets (see build()) as separate writes, pausing
        `pace` seconds between them; stops when the peer closes."""
        self.log("send %d octets in %d writes, %.1fs apart"
                 % (sum(map(len, writes)), len(writes), pace))
        return self._send_chunks(writes, pace)

    def _describe_send(self, frames, chop):
        if len(frames) <= 4:
            desc = ", ".join("%s%s%s(%d)" % (
                wire.opname(f.opcode), "" if f.fin else "[fin=0]",
                "[rsv=%d]" % f.rsv if f.rsv else "", len(f.payload))
                for f in frames)
        else:
            desc = "%d frames, %d payload octets" % (
                len(frames), sum(len(f.payload) for f in frames))
        if chop is not None:
            desc += " in chops of %s" % chop
        self.log("send " + desc)

    def _send_chunks(self, chunks, pace=0.0):
        for i, chunk in enumerate(chunks):
            if i > 0 and pace:
                self.sleep(pace)
            if self.peer_gone():
                self.skipped += 1
                self.log("skip send: peer has closed")
                return False
            if not self._write(chunk):
                return False
            self.pump(0)
        self.sends += 1
        self.t_last_send = self.now()
        return True

    def _write(self, data):
        """Write all of data while reading whatever the peer sends (so that a
        peer echoing a large message cannot deadlock us).  Stops early, and
        returns False, if the peer closes meanwhile."""
        view = memoryview(data)
        while view:
            self._check_deadline()
            if self.peer_gone():
                self.skipped += 1
                self.log("abandon write: peer has closed (%d octets unsent)"
                         % len(view))
                return False
            left = max(0.0, self.deadline - time.monotonic())
            try:
                r, w, _ = select.select([self.sock], [self.sock], [],
                                        min(left, 1.0))
            except (OSError, ValueError):
                self._broken("select failed")
                return False
            if r:
                self._read_some()
            if w and not self.peer_gone():
                try:
                    n = self.sock.send(view[:WRITE_SIZE])
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as e:
                    self._broken("write failed: %s" % errno.errorcode.get(
                        e.errno, e))
                    return False
                view = view[n:]
        return True

    def _flush_pending(self):
        while self._pending and not self.eof and not self.reset:
            data = self._pending.pop(0)
            view = memoryview(data)
            while view:
                try:
                    n = self.sock.send(view)
                    view = view[n:]
                except (BlockingIOError, InterruptedError):
                    select.select([], [self.sock], [], 0.1)
                    self._check_deadline()
                except OSError as e:
                    self._broken("write failed: %s" % errno.errorcode.get(
                        e.errno, e))
                    return

    # ------------------------------------------------------------------
    # receiving

    def pump(self, timeout, stop_on_read=False):
        """Flush queued control frames, then read for up to timeout seconds
        (or until something was read, with stop_on_read).  With timeout 0,
        read whatever is already there without waiting."""
        self._flush_pending()
        end = time.monotonic() + timeout
        while True:
            self._check_deadline()
            if self.eof or self.reset:
                return
            left = max(0.0, min(end, self.deadline) - time.monotonic())
            try:
                r, _, _ = select.select([self.sock], [], [], left)
            except (OSError, ValueError):
                self._broken("select failed")
                return
            if r:
                self._read_some()
                self._flush_pending()
                if stop_on_read and timeout > 0:
                    return
                if timeout == 0 or time.monotonic() < end:
                    continue
            if time.monotonic() >= end:
                return

    def sleep(self, seconds):
        self.pump(seconds)

    def wait_until(self, predicate, timeout):
        end = time.monotonic() + timeout
        while not predicate():
            left = end - time.monotonic()
            if left <= 0 or self.eof or self.reset:
                return predicate()
            self.pump(min(left, 0.25), stop_on_read=True)
        return True

    def wait_events(self, n, timeout):
        """Wait until n events arrived (or the peer closed)."""
        return self.wait_until(
            lambda: len(self.events) >= n or self.peer_gone(), timeout)

    def _read_some(self):
        try:
            data = self.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._broken("read failed: %s" % errno.errorcode.get(e.errno, e))
            return
        if not data:
            self.eof = True
            if self.t_peer_closed is None:
                self.t_peer_closed = self.now()
            self.log("peer closed TCP")
            if self.parser.buffered():
                self.notes.append("%d octets of an incomplete frame before "
                                  "TCP close" % self.parser.buffered())
            return
        self._feed(data)

    def _broken(self, why):
        if not self.reset and not self.eof:
            self.log(why)
            if self.t_peer_closed is None:
                self.t_peer_closed = self.now()
        self.reset = True

    def _feed(self, data):
        self.parser.feed(data)
        while True:
            f = self.parser.next_frame()
            if f is None:
                return
            self._on_frame(f)

    def _violation(self, text):
        self.log("VIOLATION " + text)
        if text not in self.violations:
            self.violations.append(text)

    def _on_frame(self, f):
        for p in f.problems:
            self._violation(p)
        if self.mask and f.masked:
            self._violation("server sent a masked frame")
        if not self.mask and not f.masked:
            self._violation("client sent an unmasked frame")
        if self.peer_close is not None:
            self._violation("%s frame after its close frame"
                            % wire.opname(f.opcode))
            return
        # RSV1 marks a compressed message, on its first frame only (RFC
        # 7692 6.1); anything else is a violation.
        rsv = f.rsv
        if (rsv == 4 and self.deflate is not None and
                f.opcode in (OP_TEXT, OP_BINARY)):
            rsv = 0
        if rsv:
            self._violation("%s frame with RSV=%d" % (wire.opname(f.opcode),
                                                      f.rsv))
        if f.opcode >= 8:
            self._on_control(f)
        else:
            self._on_data(f)

    def _on_control(self, f):
        if not f.fin:
            self._violation("fragmented %s frame" % wire.opname(f.opcode))
        if len(f.payload) > 125:
            self._violation("%s frame with %d-octet payload"
                            % (wire.opname(f.opcode), len(f.payload)))
        if f.opcode == OP_CLOSE:
            code, reason, problem = wire.parse_close_payload(f.payload)
            if problem:
                self._violation(problem)
            self.peer_close = (code, reason)
            if self.t_peer_closed is None:
                self.t_peer_closed = self.now()
            self.log("recv close %s %r" % (code, reason[:40]))
            if self.sent_close is None:
                self.close_first = "peer"
                # Answer with the same code (none if it was unusable).
                reply = wire.close_payload(code if not problem else None)
                self._pending.append(self.build(F(OP_CLOSE, reply)))
        elif f.opcode == OP_PING:
            self.log("recv ping(%d), answering" % len(f.payload))
            if self.sent_close is None:
                self._pending.append(self.build(F(OP_PONG, f.payload)))
        elif f.opcode == OP_PONG:
            self.log("recv pong(%d)" % len(f.payload))
            self.events.append(("pong", f.payload))
        else:
            self._violation("reserved control opcode %d" % f.opcode)

    def _on_data(self, f):
        if f.opcode == OP_CONT:
            if self._msg_op is None:
                self._violation("continuation frame without a message")
                return
            self._msg_parts.append(f.payload)
        elif f.opcode in (OP_TEXT, OP_BINARY):
            if self._msg_op is not None:
                self._violation("new %s message inside a fragmented message"
                                % wire.opname(f.opcode))
            self._msg_op = f.opcode
            self._msg_parts = [f.payload]
            self._msg_comp = bool(f.rsv & 4) and self.deflate is not None
        else:
            self._violation("reserved data opcode %d" % f.opcode)
            return
        if f.fin:
            payload = b"".join(self._msg_parts)
            kind = wire.opname(self._msg_op)
            self._msg_op, self._msg_parts = None, []
            if self._msg_comp:
                self.compressed_in += 1
                try:
                    payload = self.deflate.decompress(payload)
                except Exception as e:  # zlib.error
                    self._violation("invalid compressed data: %s" % e)
                    return
            if kind == "text" and not wire.is_valid_utf8(payload):
                self._violation("text message that is not valid UTF-8")
            self.log("recv %s message(%d)" % (kind, len(payload)))
            self.events.append((kind, payload))

    # ------------------------------------------------------------------
    # ending

    def close(self, code=1000, reason=b""):
        """Start the closing handshake (unless a close was already sent or
        the peer has gone)."""
        if self.sent_close is None and not self.peer_gone():
            self.send(F(OP_CLOSE, wire.close_payload(code, reason)))

    def await_close(self, timeout):
        """Wait for the peer's close frame or the end of TCP."""
        return self.wait_until(
            lambda: self.peer_close is not None or self.eof or self.reset,
            timeout)

    def finish_tcp(self):
        """After the close frames: as the client, give the server tcp_wait
        seconds to close TCP first; as the server, close it ourselves."""
        if self.role == "client" and not (self.eof or self.reset):
            self.wait_until(lambda: self.eof or self.reset, self.tcp_wait)
            if not (self.eof or self.reset):
                self.lingered = True
                self.log("server kept TCP open %.1fs after the close "
                         "handshake" % self.tcp_wait)
        self.drop()

    def drop(self):
        if self._dropped:
            return
        self._dropped = True
        if not (self.eof or self.reset):
            self.dropped_by_runner = True
            self.log("runner drops TCP")
        try:
            self.sock.close()
        except OSError:
            pass
