#!/usr/bin/env python3
"""Herald's WebSocket conformance runner (Autobahn|Testsuite-style).

Server mode (default): we are the client and test an echo server.
    python3 tests/conformance/run.py --url ws://127.0.0.1:9001/

Client mode: we are the server and test a client that echoes everything.
    python3 tests/conformance/run.py \
        --client-cmd 'build/herald client --echo {url}'

See README.md in this directory for the options and the verdict rules.
"""

import argparse
import fnmatch
import json
import os
import select
import shlex
import socket
import subprocess
import sys
import threading
import time
import traceback
from urllib.parse import urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cases  # noqa: E402
import wire  # noqa: E402
from cases import FAILED, OK, PASSING, VERDICTS  # noqa: E402
from session import CaseTimeout, Session  # noqa: E402


class HandshakeFailed(Exception):
    pass


# --------------------------------------------------------------------------
# the two ways to get a connection for a case

def read_head(sock, deadline, what):
    """Read an HTTP head; returns (head, octets after it)."""
    buf = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise HandshakeFailed("timed out waiting for the %s" % what)
        r, _, _ = select.select([sock], [], [], left)
        if not r:
            continue
        try:
            data = sock.recv(65536)
        except OSError as e:
            raise HandshakeFailed("%s: %s" % (what, e))
        if not data:
            raise HandshakeFailed("connection closed before the %s was "
                                  "complete" % what)
        buf += data
        got = wire.split_head(buf)
        if got:
            return got
        if len(buf) > 65536:
            raise HandshakeFailed("%s larger than 64 KiB" % what)


class ServerUnderTest:
    """We are the client; each case is a new TCP connection to --url."""

    role = "client"

    def __init__(self, url, tcp_wait):
        u = urlsplit(url)
        if u.scheme != "ws" or not u.hostname:
            sys.exit("run.py: --url must look like ws://HOST:PORT/PATH")
        self.host, self.port = u.hostname, u.port or 80
        self.path = (u.path or "/") + ("?" + u.query if u.query else "")
        self.tcp_wait = tcp_wait

    def describe(self):
        return "server at ws://%s:%d%s" % (self.host, self.port, self.path)

    def open(self, case, number, deadline):
        try:
            sock = socket.create_connection(
                (self.host, self.port),
                timeout=max(0.1, deadline - time.monotonic()))
        except OSError as e:
            raise HandshakeFailed("cannot connect: %s" % e)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            key = wire.new_key()
            sock.sendall(wire.client_request(self.host, self.port, self.path,
                                             key, case.offer))
            head, rest = read_head(sock, deadline, "handshake response")
            problem = wire.check_response(head, key, bool(case.offer))
            if problem:
                raise HandshakeFailed(problem)
            deflate = None
            if case.offer:
                deflate = accepted_deflate(head)
        except (HandshakeFailed, OSError) as e:
            sock.close()
            raise HandshakeFailed(str(e))
        s = Session(sock, rest, "client", deadline, self.tcp_wait)
        s.deflate = deflate
        if deflate is not None:
            s.log("permessage-deflate agreed: %r" % (deflate.params,))
        return s

    def after(self, case, session):
        return []

    def close(self):
        pass


def accepted_deflate(head):
    """Server mode: the wire.Deflate the server's response agreed to, or
    None; HandshakeFailed when its extension answer is invalid (RFC 7692 5:
    one permessage-deflate, valid parameters)."""
    _, headers = wire.parse_head(head)
    try:
        exts = wire.parse_extensions(headers.get("sec-websocket-extensions",
                                                 []))
    except ValueError as e:
        raise HandshakeFailed("malformed Sec-WebSocket-Extensions: %s" % e)
    if not exts:
        return None
    if len(exts) != 1 or exts[0][0] != "permessage-deflate":
        raise HandshakeFailed("server accepted %r" % [n for n, _ in exts])
    problem = wire.pmd_problem(exts[0][1])
    if problem:
        raise HandshakeFailed("permessage-deflate answer: " + problem)
    return wire.Deflate(exts[0][1], "client")


class StartedServer:
    """--server-cmd: start the server under test, learn its address from the
    line 'listening on HOST:PORT' it prints, stop it (by PID) at the end."""

    def __init__(self, cmd, wait=10.0):
        self.cmd = cmd
        self.proc = subprocess.Popen(shlex.split(cmd),
                                     stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + wait
        self.address = None
        buf = b""
        while self.address is None:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self.stop()
                sys.exit("run.py: %r did not print 'listening on HOST:PORT'"
                         " (output: %r)" % (cmd, buf[-300:]))
            r, _, _ = select.select([self.proc.stdout], [], [], min(left, 0.1))
            if r:
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                buf += chunk
                for line in buf.decode("utf-8", "replace").splitlines():
                    if line.startswith("listening on "):
                        self.address = line.split()[2]
                        break
        # Keep draining its output so that it never blocks on a full pipe.
        self.drain = threading.Thread(target=self._drain, daemon=True)
        self.drain.start()

    def _drain(self):
        try:
            while self.proc.stdout.read(65536):
                pass
        except (OSError, ValueError):
            pass

    def status(self):
        code = self.proc.poll()
        return None if code is None else "server exited with status %d" % code

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=3.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class ClientUnderTest:
    """We are the server; for each case we start --client-cmd with {url}
    pointing at /case/N and wait for it to connect."""

    role = "server"

    def __init__(self, cmd, listen, tcp_wait, exit_wait, log_path):
        host, _, port = listen.rpartition(":")
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((host or "127.0.0.1", int(port or 0)))
        self.lsock.listen(8)
        self.host, self.port = self.lsock.getsockname()
        self.cmd = cmd
        self.tcp_wait = tcp_wait
        self.exit_wait = exit_wait
        self.log = open(log_path, "ab") if log_path else None
        self.proc = None

    def describe(self):
        return "client command %r (runner listening on %s:%d)" % (
            self.cmd, self.host, self.port)

    def url(self, number):
        return "ws://%s:%d/case/%d" % (self.host, self.port, number)

    def open(self, case, number, deadline):
        url = self.url(number)
        argv = shlex.split(self.cmd.replace("{url}", url))
        if self.log:
            self.log.write(("\n=== case %s: %s\n" % (case.id, " ".join(
                argv))).encode())
            self.log.flush()
        out = self.log or subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=out)
        except OSError as e:
            raise HandshakeFailed("cannot start the client: %s" % e)
        want = "/case/%d" % number
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise HandshakeFailed("client did not connect")
            r, _, _ = select.select([self.lsock], [], [], min(left, 0.1))
            if not r:
                code = self.proc.poll()
                if code is not None:
                    raise HandshakeFailed("client exited with status %d "
                                          "without connecting" % code)
                continue
            sock, _ = self.lsock.accept()
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                head, rest = read_head(sock, deadline, "opening handshake")
            except HandshakeFailed:
                sock.close()
                raise
            path, key, problem = wire.check_request(head)
            if path is not None and path != want and not problem:
                # A stray connection (e.g. from an earlier case): refuse it.
                sock.sendall(b"HTTP/1.1 404 Not Found\r\n"
                             b"Content-Length: 0\r\n\r\n")
                sock.close()
                continue
            if problem:
                sock.sendall(b"HTTP/1.1 400 Bad Request\r\n"
                             b"Content-Length: 0\r\n\r\n")
                sock.close()
                raise HandshakeFailed("bad opening handshake: " + problem)
            answer, deflate = None, None
            if case.response:
                _, headers = wire.parse_head(head)
                try:
                    offers = wire.parse_extensions(
                        headers.get("sec-websocket-extensions", []))
                except ValueError:
                    offers = []
                pmd = [p for n, p in offers if n == "permessage-deflate" and
                       wire.pmd_problem(p, response=False) is None]
                if pmd:
                    answer = case.response
                    deflate = wire.Deflate(
                        wire.parse_extensions([answer])[0][1], "server")
            sock.sendall(wire.server_response(key, answer))
            s = Session(sock, rest, "server", deadline, self.tcp_wait)
            s.deflate = deflate
            if deflate is not None:
                s.log("permessage-deflate agreed: %s" % answer)
            return s

    def after(self, case, session):
        """Reap the client; kill it (by its PID) if it outlives the case."""
        notes = []
        proc, self.proc = self.proc, None
        if proc is None:
            return notes
        try:
            proc.wait(timeout=self.exit_wait)
        except subprocess.TimeoutExpired:
            notes.append("client still running %.0fs after the case; "
                         "killed" % self.exit_wait)
            proc.terminate()
            try:
                proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return notes

    def close(self):
        if self.proc is not None:
            self.after(None, None)
        self.lsock.close()
        if self.log:
            self.log.close()


# --------------------------------------------------------------------------
# running cases

class Result:
    def __init__(self, case, verdict, reasons, observed, duration,
                 trace=()):
        self.case = case
        self.verdict = verdict
        self.reasons = reasons
        self.observed = observed
        self.duration = duration
        self.trace = list(trace)

    def as_dict(self):
        return {"id": self.case.id, "title": self.case.title,
                "verdict": self.verdict, "reasons": self.reasons,
                "observed": self.observed,
                "duration": round(self.duration, 4), "trace": self.trace}


def case_timeout(case, opts):
    if case.timeout:
        return case.timeout
    return opts.timeout_9 if case.section == "9" else opts.timeout


def finish(case, s, opts):
    """After the case body: end the connection the way the case expects."""
    if case.close == "normal":
        if not s.peer_gone():
            settle = s.remaining() if case.section in ("9", "10", "12", "13") \
                else opts.settle
            s.wait_events(len(case.ok), min(settle, s.remaining()))
            s.close(1000)
        s.await_close(min(opts.close_wait, s.remaining()))
        if s.peer_close is not None:
            s.finish_tcp()
    else:
        s.await_close(min(opts.fail_wait, s.remaining()))
        if s.peer_close is not None and s.close_first == "peer":
            s.finish_tcp()
    s.drop()


def run_case(target, case, number, opts):
    start = time.monotonic()
    deadline = start + case_timeout(case, opts)
    try:
        s = target.open(case, number, deadline)
    except HandshakeFailed as e:
        duration = time.monotonic() - start
        notes = target.after(case, None)
        return Result(case, FAILED, ["FAILED: opening handshake: %s" % e],
                      "; ".join(["no WebSocket connection"] + notes),
                      duration)
    error = None
    try:
        case.run(s)
        finish(case, s, opts)
    except CaseTimeout:
        pass
    except Exception:  # a bug in the runner: report it, go on
        error = traceback.format_exc()
    finally:
        s.drop()
    duration = time.monotonic() - start
    s.notes += target.after(case, s)
    verdict, reasons = cases.judge(case, s)
    if s.timed_out:
        reasons = [r.replace("case timed out", "case timed out after %.0fs"
                             % case_timeout(case, opts)) for r in reasons]
    if error:
        verdict = FAILED
        reasons.append("FAILED: runner error: " + error.strip().splitlines()
                       [-1])
    return Result(case, verdict, reasons, cases.observed(s), duration,
                  s.full_trace() + ([error] if error else []))


def select_cases(patterns, excludes, quick, deflate_full=False):
    chosen = []
    for number, case in enumerate(cases.CATALOGUE, 1):
        if case.full and not deflate_full:
            continue
        if patterns and not any(_match(case.id, p) for p in patterns):
            continue
        if any(_match(case.id, p) for p in excludes):
            continue
        if quick and not case.quick:
            continue
        chosen.append((number, case))
    return chosen


def _match(cid, pattern):
    pattern = pattern.strip()
    if not pattern:
        return False
    if any(ch in pattern for ch in "*?["):
        return fnmatch.fnmatchcase(cid, pattern)
    return cid == pattern or cid.startswith(pattern + ".")


# --------------------------------------------------------------------------
# output

def counts_by_section(results):
    table = {}
    for r in results:
        row = table.setdefault(r.case.section, dict.fromkeys(VERDICTS, 0))
        row[r.verdict] += 1
    return table


def totals(results):
    total = dict.fromkeys(VERDICTS, 0)
    for r in results:
        total[r.verdict] += 1
    return total


def summary_line(results):
    t = totals(results)
    passed = sum(t[v] for v in PASSING)
    per = ", ".join("%s %d" % (v, t[v]) for v in VERDICTS)
    return "conformance: %d passed, %d failed (%s)" % (passed, t[FAILED], per)


def print_results(results, verbose, out=sys.stdout):
    table = counts_by_section(results)
    out.write("\n%-4s %-26s" % ("sec", "name") + "".join(
        "%15s" % v for v in VERDICTS) + "\n")
    for sec in sorted(table, key=int):
        out.write("%-4s %-26s" % (sec, cases.SECTIONS.get(sec, "")) + "".join(
            "%15d" % table[sec][v] for v in VERDICTS) + "\n")
    slow = sorted((r for r in results if r.case.section == "9"),
                  key=lambda r: r.case.key())
    if slow and verbose:
        out.write("\nsection 9 timings:\n")
        for r in slow:
            out.write("  %-8s %7.3fs  %s\n" % (r.case.id, r.duration,
                                               r.case.title))
    out.write("\n" + summary_line(results) + "\n")


def md_escape(text):
    return text.replace("|", "\\|").replace("\n", " ")


def report_section(results, title, target_desc, elapsed, quick, crash=None):
    lines = []
    t = totals(results)
    lines.append("### %s" % title)
    lines.append("")
    if crash:
        lines.append("**The %s during the run.**" % crash)
        lines.append("")
    lines.append("Run %s against %s; %d cases%s in %.0f s." % (
        time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), target_desc,
        len(results), " (--quick)" if quick else "", elapsed))
    lines.append("")
    lines.append("`%s`" % summary_line(results))
    lines.append("")
    lines.append("| section | name | " + " | ".join(VERDICTS) + " |")
    lines.append("|---|---|" + "---:|" * len(VERDICTS))
    table = counts_by_section(results)
    for sec in sorted(table, key=int):
        lines.append("| %s | %s | " % (sec, cases.SECTIONS.get(sec, "")) +
                     " | ".join(str(table[sec][v]) for v in VERDICTS) + " |")
    lines.append("| | **total** | " + " | ".join(
        "**%d**" % t[v] for v in VERDICTS) + " |")
    lines.append("")
    odd = [r for r in results if r.verdict != OK]
    if not odd:
        lines.append("Every case is OK.")
    else:
        lines.append("Cases that are not OK:")
        lines.append("")
        lines.append("| case | verdict | what it does | why | observed |")
        lines.append("|---|---|---|---|---|")
        for r in odd:
            why = "; ".join(x.split(": ", 1)[1] if ": " in x else x
                            for x in r.reasons if not x.startswith(OK))
            lines.append("| %s | %s | %s | %s | %s |" % (
                r.case.id, r.verdict, md_escape(r.case.title),
                md_escape(why), md_escape(r.observed)))
    return "\n".join(lines) + "\n"


REPORT_INTRO = """# WebSocket conformance

Results of `tests/conformance/run.py`, Herald's own Autobahn|Testsuite-style
case runner (sections 1-7, 9, 10, 12 and 13 of the Autobahn catalogue;
12 and 13 are permessage-deflate).  How to run it and the verdict rules are in
`tests/conformance/README.md`.  Each section below is written by
`run.py --report docs/conformance.md --title TITLE` and replaced on the next
run with the same title.
"""


def write_report(path, title, body):
    begin = "<!-- conformance:%s:begin -->" % title
    end = "<!-- conformance:%s:end -->" % title
    block = "%s\n%s%s" % (begin, body, end)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            text = f.read()
    else:
        text = REPORT_INTRO
    i, j = text.find(begin), text.find(end)
    if i >= 0 and j > i:
        text = text[:i] + block + text[j + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    d = os.path.dirname(path)
    if d:
        os.makedirs(d, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


# --------------------------------------------------------------------------

def parse_args(argv):
    ap = argparse.ArgumentParser(
        description="Autobahn-style WebSocket conformance runner.")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--url", help="test the echo server at this ws:// URL "
                      "(server mode, the default)")
    mode.add_argument("--server-cmd", help="start this echo server, read "
                      "'listening on HOST:PORT' from its output, test it, "
                      "stop it (e.g. 'build/herald echo --listen "
                      "127.0.0.1:0')")
    mode.add_argument("--client-cmd", help="test a client: command to run "
                      "per case; {url} is replaced by ws://HOST:PORT/case/N")
    ap.add_argument("--listen", default="127.0.0.1:0",
                    help="client mode: where to listen (default %(default)s)")
    ap.add_argument("--cases", default="", help="comma-separated case ids or "
                    "patterns (1.*, 6.4, 7.7.3); default all")
    ap.add_argument("--exclude", default="", help="patterns to leave out")
    ap.add_argument("--quick", action="store_true",
                    help="a smaller section 9 (messages up to 1 MiB)")
    ap.add_argument("--deflate-full", action="store_true",
                    help="sections 12 and 13 in full (18 cases per "
                    "subsection, 1000 messages each) instead of the quick "
                    "form (5 per subsection, 50 messages)")
    ap.add_argument("--list", action="store_true",
                    help="print the catalogue and exit")
    ap.add_argument("--report", metavar="FILE",
                    help="write/update a Markdown section in FILE")
    ap.add_argument("--title", default="results",
                    help="section title for --report (default %(default)s)")
    ap.add_argument("--json", metavar="FILE",
                    help="write every result, with traces, as JSON")
    ap.add_argument("--client-log", metavar="FILE",
                    help="client mode: append the client's output here")
    ap.add_argument("--timeout", type=float, default=10.0,
                    help="seconds per case (default %(default)s)")
    ap.add_argument("--timeout-9", type=float, default=30.0,
                    help="seconds per section-9 case (default %(default)s)")
    ap.add_argument("--max-time", type=float, default=1800.0,
                    help="limit for the whole run; cases not started by then "
                    "are FAILED (default %(default)s)")
    ap.add_argument("--fail-wait", type=float, default=2.0,
                    help="how long a peer gets to fail the connection "
                    "(default %(default)s)")
    ap.add_argument("--settle", type=float, default=2.0,
                    help="how long to wait for expected replies before "
                    "closing (default %(default)s)")
    ap.add_argument("--close-wait", type=float, default=5.0,
                    help="how long to wait for the close reply "
                    "(default %(default)s)")
    ap.add_argument("--tcp-wait", type=float, default=2.0,
                    help="how long a server gets to close TCP after the "
                    "closing handshake (default %(default)s)")
    ap.add_argument("--client-exit-wait", type=float, default=2.0,
                    help="client mode: how long the client gets to exit "
                    "after a case before it is killed (default %(default)s)")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="a line per case, traces of cases that are not OK")
    return ap.parse_args(argv)


def main(argv=None):
    opts = parse_args(argv)
    patterns = [p for p in opts.cases.split(",") if p.strip()]
    excludes = [p for p in opts.exclude.split(",") if p.strip()]
    chosen = select_cases(patterns, excludes, opts.quick, opts.deflate_full)
    if opts.deflate_full:
        cases.PMD_COUNT[0] = cases.PMD_FULL_COUNT

    if opts.list:
        for number, case in chosen:
            extra = [] if case.quick else ["not in --quick"]
            if case.close == "fail":
                extra.insert(0, "must fail: %s" % "/".join(
                    map(str, case.codes)))
            print("%4d  %-8s %s%s" % (number, case.id, case.title,
                                      " [%s]" % ", ".join(extra)
                                      if extra else ""))
        print("%d cases" % len(chosen))
        return 0
    if not chosen:
        sys.exit("run.py: no case matches --cases/--exclude")

    started = None
    if opts.server_cmd:
        started = StartedServer(opts.server_cmd)
        opts.url = "ws://%s/" % started.address
    if opts.client_cmd:
        target = ClientUnderTest(opts.client_cmd, opts.listen, opts.tcp_wait,
                                 opts.client_exit_wait, opts.client_log)
    else:
        target = ServerUnderTest(opts.url or "ws://127.0.0.1:9001/",
                                 opts.tcp_wait)
    print("testing %s: %d cases" % (target.describe(), len(chosen)),
          flush=True)

    results = []
    t0 = time.monotonic()
    section = None
    try:
        for number, case in chosen:
            if case.section != section:
                section = case.section
                print("section %s: %s" % (section, cases.SECTIONS.get(
                    section, "")), flush=True)
            if time.monotonic() - t0 > opts.max_time:
                results.append(Result(case, FAILED, [
                    "FAILED: not run, --max-time %.0fs reached"
                    % opts.max_time], "not run", 0.0))
                continue
            r = run_case(target, case, number, opts)
            results.append(r)
            if opts.verbose or r.verdict != OK:
                print("  %-8s %-13s %6.2fs  %s" % (
                    case.id, r.verdict, r.duration, case.title), flush=True)
                if r.verdict != OK:
                    if started and started.status():
                        r.observed += "; " + started.status()
                    for reason in r.reasons:
                        print("           " + reason)
                    print("           observed: " + r.observed)
                    if opts.verbose:
                        for line in r.trace:
                            print("           | " + line.rstrip())
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    finally:
        target.close()
        crashed = started.status() if started else None
        if started:
            started.stop()
    elapsed = time.monotonic() - t0
    if crashed:
        # The server must survive everything the catalogue throws at it.
        print("FAILED: the %s" % crashed)

    print_results(results, opts.verbose)
    print("run time %.1fs" % elapsed)
    if opts.report:
        if opts.client_cmd:
            desc = "client command `%s`" % opts.client_cmd
        elif opts.server_cmd:
            desc = "server command `%s`" % opts.server_cmd
        else:
            desc = target.describe()
        write_report(opts.report, opts.title,
                     report_section(results, opts.title, desc, elapsed,
                                    opts.quick, crashed))
        print("report: %s (section %r)" % (opts.report, opts.title))
    if opts.json:
        with open(opts.json, "w", encoding="utf-8") as f:
            json.dump([r.as_dict() for r in results], f, indent=1)
    return 1 if crashed or any(r.verdict == FAILED for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
