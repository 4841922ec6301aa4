#!/usr/bin/env python3
"""The interactive `herald client`, driven in a real terminal under tmux
(send-keys to type, capture-pane to read the screen), against
`herald echo`: the banner, "> " and "< " markers, a two-line message
shown as one, history recall with the Up key, /ping with its round-trip time, an unknown
command, and /close 4000 bye with the exit status; then the history file.

    term.py path/to/herald

Exit 0 when all pass, 1 on a failure, 77 when tmux is not installed.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERALD = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else "herald"
SOCK = "herald-term-test-%d" % os.getpid()  # a tmux server of our own


def tmux(*args, check=True):
    return subprocess.run(["tmux", "-L", SOCK] + list(args), check=check,
                          capture_output=True, text=True, timeout=10)


def screen():
    return tmux("capture-pane", "-p", "-t", "t").stdout


def wait_for(pattern, timeout=8):
    deadline = time.time() + timeout
    while time.time() < deadline:
        s = screen()
        if re.search(pattern, s, re.M):
            return s
        time.sleep(0.1)
    raise AssertionError("no %r on the screen:\n%s" % (pattern, screen()))


def keys(*k):
    tmux("send-keys", "-t", "t", *k)


def main():
    if shutil.which("tmux") is None:
        print("SKIPPED: tmux is not installed (apt-get install tmux)")
        return 77
    home = tempfile.mkdtemp(prefix="herald-term-")
    echo = subprocess.Popen([HERALD, "echo", "--listen", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    passed = failed = 0
    try:
        # herald echo may say other things first (its io backend).
        line = ""
        for _ in range(10):
            line = echo.stdout.readline()
            if "listening on" in line or not line:
                break
        port = int(line.strip().rsplit(":", 1)[1].split()[0])
        status = os.path.join(home, "status")
        cmd = ("HOME=%s %s client ws://127.0.0.1:%d/; echo \"exit=$?\" > %s; "
               "sleep 30" % (home, HERALD, port, status))
        tmux("new-session", "-d", "-s", "t", "-x", "120", "-y", "30", cmd)
        steps = []

        def step(name, fn):
            steps.append((name, fn))

        step("banner", lambda: wait_for(
            r"connected to ws://127\.0\.0\.1:\d+/; /help for commands"))

        def typed():
            keys("hello", "Enter")
            wait_for(r"^< hello$")
            keys("second line", "Enter")
            wait_for(r"^< second line$")
            s = screen()
            assert "> hello" in s and "> second line" in s, s
        step("lines are sent and echoes shown behind < ", typed)

        def history():
            keys("Up", "Up", "Enter")
            s = wait_for(r"(?s)< hello.*< second line.*> hello\n< hello")
            assert s.count("< hello") == 2, s
        step("Up Up recalls the first line from the history", history)

        def editing():
            keys("abc", "Left", "Left", "X", "Enter")
            wait_for(r"^< aXbc$")
        step("line editing: the cursor moves before inserting", editing)

        def ping():
            keys("/ping", "Enter")
            wait_for(r"^< pong: \d+\.\d{3} ms$")
        step("/ping shows the round-trip time", ping)

        def unknown():
            keys("/nope", "Enter")
            wait_for(r"unknown command /nope")
        step("an unknown command is named", unknown)

        def close():
            keys("/close 4000 bye", "Enter")
            wait_for(r"closed: 4000")
            deadline = time.time() + 5
            while not os.path.exists(status) and time.time() < deadline:
                time.sleep(0.1)
            with open(status) as f:
                got = f.read().strip()
            assert got == "exit=0", "status %r\n%s" % (got, screen())
        step("/close 4000 bye closes with 4000 and exits 0", close)

        def hist_file():
            with open(os.path.join(home, ".herald_history")) as f:
                text = f.read()
            # libedit writes spaces as \040 (vis(3) encoding).
            assert "aXbc" in text and "/close\\0404000\\040bye" in text, text
        step("the history is kept in ~/.herald_history", hist_file)

        def multiline():
            tmux("new-window", "-t", "t", "-n", "m",
                 "%s client -x \"$(printf 'a\\nb')\" ws://127.0.0.1:%d/; "
                 "sleep 30" % (HERALD, port))
            deadline = time.time() + 8
            out = ""
            while time.time() < deadline:
                out = tmux("capture-pane", "-p", "-t", "t:m").stdout
                if "< a\n  b" in out:
                    return
                time.sleep(0.1)
            raise AssertionError("no '< a' then '  b':\n" + out)
        step("a message of two lines is shown as one, indented", multiline)

        for name, fn in steps:
            try:
                fn()
                passed += 1
                print("ok %s" % name, flush=True)
            except Exception as e:  # report and go on
                failed += 1
                print("FAIL %s: %s" % (name, e), flush=True)
    finally:
        tmux("kill-server", check=False)
        echo.terminate()
        echo.wait(timeout=10)
        shutil.rmtree(home, ignore_errors=True)
    print("%d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
