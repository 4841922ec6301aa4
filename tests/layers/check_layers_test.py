#!/usr/bin/python3
"""check_layers_test.py - the test of scripts/check-layers.py.

usage: check_layers_test.py CHECKER SOURCE_ROOT

Runs the checker on small trees written to a temporary directory: a clean
one must pass, and each planted violation must fail the run and be named in
the output with its file, line and include. Then plants a violation in a
copy of the real tree (src/, include/, cmake/ of SOURCE_ROOT) and checks
that it is reported. Whether the real tree itself passes is the CTest test
layer_check, not this one. Python 3 standard library only.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import unittest

CHECKER = None
SOURCE_ROOT = None

# A tree that keeps every rule, one file or two per layer.
CLEAN = {
    "include/herald/core.h": "#include <stddef.h>\n#include <sys/uio.h>\n",
    "include/herald/rt.h": '#include <stdint.h>\n#include "herald/core.h"\n',
    "include/herald/herald.h":
        '#include "herald/core.h"\n#include "herald/rt.h"\n'
        '#include "herald/version.h"\n',
    "cmake/version.h.in": "#define HERALD_VERSION_STRING \"@x@\"\n",
    "src/core/a.h": "#include <stdint.h>\n",
    "src/core/a.c": '#include "core/a.h"\n\n#include <string.h>\n'
                    '#include <zlib.h>\n#include <immintrin.h>\n'
                    '#include <sys/random.h>\n#include "herald/core.h"\n',
    "src/rt/internal.h": '#include <uv.h>\n#include "herald/rt.h"\n',
    "src/rt/loop.c": '#include <sys/epoll.h>\n#include <openssl/ssl.h>\n'
                     '#include <pthread.h>\n#include "rt/internal.h"\n',
    "src/push/push.h": "#include <stddef.h>\n",
    "src/push/hub.c": '#include "push/push.h"\n#include <hiredis/hiredis.h>\n'
                      '#include "herald/core.h"\n#include "herald/rt.h"\n',
    "src/app/cli.h": "#include <stdio.h>\n",
    "src/app/main.c": '#include "app/cli.h"\n#include "push/push.h"\n'
                      '#include "rt/internal.h"\n#include "core/a.h"\n'
                      '#include <termios.h>\n#include <curl/curl.h>\n',
    # Exempt directories include what they like.
    "tests/unit/a_test.c": '#include "core/a.h"\n#include "rt/internal.h"\n',
    "fuzz/fuzz_a.c": '#include "core/a.c"\n#include <uv.h>\n',
    "bench/a_bench.c": '#include "core/a.h"\n#include "app/cli.h"\n',
    "examples/x.c": '#include "rt/internal.h"\n',
}


def write_tree(root, files):
    for rel, text in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)


def run_checker(root):
    p = subprocess.run([sys.executable, CHECKER, root], capture_output=True,
                       text=True, timeout=60)
    return p.returncode, p.stdout + p.stderr


class Planted(unittest.TestCase):
    def run_tree(self, changes):
        """Runs the checker on CLEAN with changes (path -> text, or None to
        delete) applied; returns (status, output)."""
        files = dict(CLEAN)
        for rel, text in changes.items():
            if text is None:
                files.pop(rel, None)
            else:
                files[rel] = text
        with tempfile.TemporaryDirectory(prefix="check-layers.") as root:
            write_tree(root, files)
            return run_checker(root)

    def assert_fails(self, changes, *needles):
        status, out = self.run_tree(changes)
        self.assertEqual(status, 1, "the checker passed:\n" + out)
        for needle in needles:
            self.assertIn(needle, out)
        return out

    def test_clean_tree_passes(self):
        status, out = self.run_tree({})
        self.assertEqual(status, 0, out)
        self.assertIn("keep the layer rules", out)

    def test_push_includes_core_private(self):
        self.assert_fails(
            {"src/push/jwt.c": '#include "push/push.h"\n\n'
                               '#include "core/a.h"\n'},
            'src/push/jwt.c:3: #include "core/a.h"', '"herald/core.h"')

    def test_push_includes_rt_and_app(self):
        out = self.assert_fails(
            {"src/push/server.c": '#include "rt/internal.h"\n'
                                  '#include "app/cli.h"\n'},
            'src/push/server.c:1: #include "rt/internal.h"',
            'src/push/server.c:2: #include "app/cli.h"')
        self.assertIn("2 violations", out)

    def test_cycle_of_two_headers(self):
        out = self.assert_fails(
            {"src/push/a.h": '#include "push/b.h"\n',
             "src/push/b.h": '#include <stdint.h>\n#include "push/a.h"\n'},
            "include cycle between modules: "
            "src/push/a -> src/push/b -> src/push/a",
            'src/push/a.h:1: #include "push/b.h"',
            'src/push/b.h:2: #include "push/a.h"')
        self.assertEqual(out.count("include cycle"), 1)

    def test_cycle_through_c_files_and_three_modules(self):
        # redis.c -> server.h -> web.h -> redis.h: modules, not files, close
        # the cycle (redis.c and redis.h are one module).
        self.assert_fails(
            {"src/push/redis.h": "#include <stddef.h>\n",
             "src/push/redis.c": '#include "push/redis.h"\n'
                                 '#include "push/server.h"\n',
             "src/push/server.h": '#include "push/web.h"\n',
             "src/push/web.h": '#include "push/redis.h"\n'},
            "src/push/redis -> src/push/server -> src/push/web -> "
            "src/push/redis",
            'src/push/redis.c:2: #include "push/server.h"',
            'src/push/web.h:1: #include "push/redis.h"')

    def test_private_header_belongs_to_its_module(self):
        # srv_int.h may include srv.h (one module); a cycle that passes
        # through a private header is still one.
        status, out = self.run_tree(
            {"src/push/srv.h": "#include <stddef.h>\n",
             "src/push/srv_int.h": '#include "push/srv.h"\n',
             "src/push/srv.c": '#include "push/srv.h"\n'
                               '#include "push/srv_int.h"\n',
             "src/push/other.c": '#include "push/srv_int.h"\n'})
        self.assertEqual(status, 0, out)
        self.assert_fails(
            {"src/push/srv.h": "#include <stddef.h>\n",
             "src/push/srv_int.h": '#include "push/b.h"\n',
             "src/push/b.h": '#include "push/srv.h"\n'},
            "include cycle between modules: "
            "src/push/b -> src/push/srv -> src/push/b",
            'src/push/srv_int.h:1: #include "push/b.h"')

    def test_core_system_headers(self):
        self.assert_fails({"src/core/b.c": "#include <uv.h>\n"},
                          "src/core/b.c:1: #include <uv.h>", "libuv")
        self.assert_fails({"src/core/b.c": "#include <sys/socket.h>\n"},
                          "src/core/b.c:1: #include <sys/socket.h>",
                          "sans-I/O")
        self.assert_fails({"src/core/b.c": "\n#include <openssl/sha.h>\n"},
                          "src/core/b.c:2: #include <openssl/sha.h>")
        self.assert_fails({"src/core/b.c": "#include <unistd.h>\n"},
                          "src/core/b.c:1: #include <unistd.h>")
        self.assert_fails({"include/herald/core.h": "#include <uv.h>\n"},
                          "include/herald/core.h:1: #include <uv.h>")
        # ISA-L: zstream.c only, not the rest of the core nor the header.
        self.assert_fails({"src/core/b.c": "#include <isa-l/igzip_lib.h>\n"},
                          "src/core/b.c:1: #include <isa-l/igzip_lib.h>",
                          "ISA-L")
        self.assert_fails(
            {"include/herald/core.h": "#include <isa-l/igzip_lib.h>\n"},
            "include/herald/core.h:1: #include <isa-l/igzip_lib.h>")
        status, out = self.run_tree(
            {"src/core/zstream.c": "#include <isa-l/igzip_lib.h>\n"})
        self.assertEqual(status, 0, out)

    def test_core_includes_upward(self):
        self.assert_fails({"src/core/b.c": '#include "herald/rt.h"\n'},
                          'src/core/b.c:1: #include "herald/rt.h"')
        self.assert_fails({"src/core/b.c": '#include "rt/internal.h"\n'},
                          'src/core/b.c:1: #include "rt/internal.h"',
                          "core is below rt")
        self.assert_fails(
            {"include/herald/core.h": '#include "herald/rt.h"\n'},
            'include/herald/core.h:1: #include "herald/rt.h"')

    def test_rt_rules(self):
        self.assert_fails({"src/rt/ws.c": '#include "core/a.h"\n'},
                          'src/rt/ws.c:1: #include "core/a.h"')
        self.assert_fails({"src/rt/ws.c": "#include <hiredis/hiredis.h>\n"},
                          "src/rt/ws.c:1: #include <hiredis/hiredis.h>")
        self.assert_fails({"src/rt/ws.c": '#include "push/push.h"\n'},
                          'src/rt/ws.c:1: #include "push/push.h"')

    def test_push_system_headers(self):
        # libcurl (the backend proxy, webhooks) is allowed in push...
        status, out = self.run_tree(
            {"src/push/x.c": "#include <curl/curl.h>\n"})
        self.assertEqual(status, 0, out)
        # ...and still refused below it: the core and the runtime.
        self.assert_fails({"src/rt/ws.c": "#include <curl/curl.h>\n"},
                          "src/rt/ws.c:1: #include <curl/curl.h>",
                          "this is libcurl")
        self.assert_fails({"src/core/a.c": "#include <curl/curl.h>\n"},
                          "src/core/a.c:1: #include <curl/curl.h>")
        # A library push has no business with stays refused.
        self.assert_fails({"src/push/x.c": "#include <sqlite3.h>\n"},
                          "src/push/x.c:1: #include <sqlite3.h>")

    def test_public_header_includes_private(self):
        self.assert_fails({"include/herald/rt.h": '#include "rt/internal.h"\n'},
                          'include/herald/rt.h:1: #include "rt/internal.h"',
                          "public header")

    def test_unresolved_include(self):
        self.assert_fails({"src/push/x.c": '#include "push/nowhere.h"\n'},
                          'src/push/x.c:1: #include "push/nowhere.h"',
                          "no such file")

    def test_comments_are_not_includes(self):
        status, out = self.run_tree(
            {"src/core/b.c": '/* #include <uv.h>\n#include "rt/x.h" */\n'
                             '// #include <openssl/ssl.h>\n'
                             '#include <stdint.h> /* not <uv.h> */\n'})
        self.assertEqual(status, 0, out)

    def test_exempt_directories(self):
        # CLEAN's tests/, fuzz/, bench/ and examples/ break every rule; the
        # clean run passing proves they are exempt. Make sure they were
        # really there to be skipped.
        self.assertIn('"core/a.h"', CLEAN["tests/unit/a_test.c"])
        status, out = self.run_tree(
            {"tests/push/b_test.c": '#include "push/../core/a.h"\n'})
        self.assertEqual(status, 0, out)


class RealTree(unittest.TestCase):
    def test_planted_in_a_copy_of_the_real_tree(self):
        with tempfile.TemporaryDirectory(prefix="check-layers.") as root:
            for d in ("src", "include", "cmake"):
                shutil.copytree(os.path.join(SOURCE_ROOT, d),
                                os.path.join(root, d))
            jwt = os.path.join(root, "src/push/jwt.c")
            with open(jwt) as f:
                text = f.read()
            # At the end, where no comment can hide it.
            if not text.endswith("\n"):
                text += "\n"
            line = text.count("\n") + 1
            with open(jwt, "w") as f:
                f.write(text + '#include "core/sha1.h"\n')
            status, out = run_checker(root)
            self.assertEqual(status, 1, out)
            self.assertIn('src/push/jwt.c:%d: #include "core/sha1.h"' % line,
                          out)


def main():
    global CHECKER, SOURCE_ROOT
    if len(sys.argv) != 3:
        sys.stderr.write(__doc__.split("\n\n")[1] + "\n")
        return 2
    CHECKER, SOURCE_ROOT = sys.argv[1], sys.argv[2]
    prog = unittest.main(argv=[sys.argv[0], "-v"], exit=False)
    return 0 if prog.result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
