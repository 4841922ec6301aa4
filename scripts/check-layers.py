#!/usr/bin/python3
"""check-layers.py - the layer rules of the source tree, checked on its
#include lines. Python 3 standard library only.

usage: scripts/check-layers.py [ROOT]      (ROOT: the source tree, default
                                            the one this script is in)

Layers, lowest first; each may include only the public headers of the
layers below it (include/herald/*.h) and its own headers:

  core   src/core, include/herald/core.h: the sans-I/O protocol core.
         System headers from an allow-list only: the C17 library, a few
         POSIX headers that do no I/O (strings.h, sys/types.h, sys/uio.h
         for struct iovec, sys/random.h for getrandom), compiler intrinsics
         and zlib.h; in src/core/zstream.c also ISA-L's isa-l/igzip_lib.h.
         Quoted: "core/*" and "herald/core.h".
  rt     src/rt, include/herald/rt.h: the runtime. System headers: the C
         library, POSIX and Linux, libuv and OpenSSL, and in src/rt
         liburing. Quoted: "rt/*",
         "herald/core.h", "herald/rt.h"; never the core's private "core/*".
  push   src/push: the push server's modules. System headers: as rt, plus
         hiredis and libcurl. Quoted: public "herald/*.h" and its own
         "push/*"; never "core/*", "rt/*" or "app/*".
  app    src/app: the herald program. Anything.

Public headers (include/herald/*.h) include no private header (src/), and
herald/core.h none of a higher layer. Quoted includes are resolved against
the including file's directory, include/ and src/, as the build does; one
that resolves nowhere is an error (herald/version.h is generated from
cmake/version.h.in).

No include cycles between modules: a module is a .c file, the .h of the
same name and its private header NAME_int.h (src/push/redis.c,
src/push/redis.h and src/push/redis_int.h are src/push/redis), and
module A depends on module B when a file of A includes a header of B. A
cycle (A -> B -> A, or longer) is reported with the #include line of every
step.

tests/, fuzz/, bench/ and examples/ are exempt: tests may include private
headers to test them. Only src/ and include/ are checked.

Every violation is printed as FILE:LINE: #include X: why. Exit status 0
when the tree keeps the rules, 1 when it does not, 2 for a usage error.
"""

import os
import re
import sys

# ---- system headers -------------------------------------------------------

C17 = {
    "assert.h", "complex.h", "ctype.h", "errno.h", "fenv.h", "float.h",
    "inttypes.h", "iso646.h", "limits.h", "locale.h", "math.h", "setjmp.h",
    "signal.h", "stdalign.h", "stdarg.h", "stdatomic.h", "stdbool.h",
    "stddef.h", "stdint.h", "stdio.h", "stdlib.h", "stdnoreturn.h",
    "string.h", "tgmath.h", "threads.h", "time.h", "uchar.h", "wchar.h",
    "wctype.h",
}

# POSIX headers that neither do I/O nor name sockets, files or threads:
# what a sans-I/O core may use.
CORE_POSIX = {"strings.h", "sys/types.h", "sys/uio.h", "sys/random.h",
              "endian.h", "byteswap.h"}

# POSIX and Linux (glibc) headers, for the layers that do I/O.
POSIX = CORE_POSIX | {
    "aio.h", "arpa/inet.h", "cpio.h", "dirent.h", "dlfcn.h", "execinfo.h",
    "fcntl.h", "fnmatch.h", "getopt.h", "glob.h", "grp.h", "iconv.h",
    "ifaddrs.h", "langinfo.h", "libgen.h", "malloc.h", "monetary.h",
    "mqueue.h", "net/if.h", "netdb.h", "netinet/in.h", "netinet/ip.h",
    "netinet/tcp.h", "nl_types.h", "poll.h", "pthread.h", "pwd.h", "regex.h",
    "sched.h", "search.h", "semaphore.h", "spawn.h", "syslog.h", "tar.h",
    "termios.h", "ulimit.h", "unistd.h", "utime.h", "utmpx.h", "wordexp.h",
}
POSIX_DIRS = ("sys/", "linux/", "asm/")


def is_intrinsics(h):
    return re.fullmatch(r"[a-z0-9]*intrin\.h|arm_neon\.h|cpuid\.h", h) is not None


def is_posix(h):
    return h in POSIX or h.startswith(POSIX_DIRS)


LIBS = {
    "zlib": lambda h: h == "zlib.h",
    "ISA-L": lambda h: h.startswith("isa-l/") or h == "isa-l.h",
    "libuv": lambda h: h == "uv.h" or h.startswith("uv/"),
    "liburing": lambda h: h == "liburing.h" or h.startswith("liburing/"),
    "OpenSSL": lambda h: h.startswith("openssl/"),
    "hiredis": lambda h: h.startswith("hiredis/"),
    "libcurl": lambda h: h.startswith("curl/"),
}


def system_allowed(layer, h, rel=""):
    """Whether layer may include <h>; returns (ok, what it is)."""
    if h in C17 or is_intrinsics(h):
        return True, "the C library"
    lib = next((name for name, test in LIBS.items() if test(h)), None)
    if layer == "core":
        if h in CORE_POSIX or lib == "zlib":
            return True, ""
        if lib == "ISA-L" and rel == "src/core/zstream.c":
            return True, ""  # igzip for large messages, private to zstream.c
        if is_posix(h):
            return False, "the core is sans-I/O: libc and zlib only, and " \
                          "of POSIX only " + ", ".join(sorted(CORE_POSIX))
        return False, "the core depends on libc, zlib and (zstream.c " \
                      "only) ISA-L only" + \
            (" (this is %s)" % lib if lib else "")
    if layer == "rt" and lib == "liburing":
        return True, ""  # the io_uring backend, private to src/rt
    if layer in ("rt", "public"):
        if is_posix(h) or lib in ("libuv", "OpenSSL"):
            return True, ""
        return False, "the runtime depends on libc, POSIX, libuv, " \
                      "OpenSSL and (src/rt only) liburing only" + (" (this is %s)" % lib if lib else "")
    if layer == "push":
        if is_posix(h) or lib in ("libuv", "OpenSSL", "hiredis", "libcurl"):
            return True, ""
        return False, "push depends on libc, POSIX, libuv, OpenSSL, " \
                      "hiredis and libcurl only" + \
            (" (this is %s)" % lib if lib else "")
    return True, ""  # app


# ---- the tree -------------------------------------------------------------

GENERATED = {"include/herald/version.h": "cmake/version.h.in"}


def layer_of(rel):
    """The layer of a checked file (a path relative to the root)."""
    parts = rel.split("/")
    if parts[0] == "src" and len(parts) > 2:
        return parts[1] if parts[1] in ("core", "rt", "push", "app") else None
    if rel == "include/herald/core.h":
        return "core"
    if rel == "include/herald/rt.h":
        return "rt"
    if parts[0] == "include":
        return "public"
    return None


ORDER = ["core", "rt", "push", "app"]
PUBLIC_HEADER = {"core": '"herald/core.h"', "rt": '"herald/rt.h"'}


def quoted_allowed(layer, src_rel, target_rel):
    """Whether a file of layer may include the file target_rel; returns
    (ok, why not)."""
    public = target_rel.startswith("include/")
    if src_rel.startswith("include/") and not public:
        return False, "a public header includes no private header"
    tparts = target_rel.split("/")
    own = tparts[0] == "src" and len(tparts) > 2 and tparts[1] == layer
    if layer == "app":
        return True, ""
    if layer == "core":
        if own or target_rel == "include/herald/core.h":
            return True, ""
        if public:
            return False, "the core is the lowest layer: of the public " \
                          "headers only herald/core.h"
    elif layer == "rt":
        if own or target_rel in ("include/herald/core.h",
                                 "include/herald/rt.h"):
            return True, ""
        if public:
            return False, "the runtime includes herald/core.h and " \
                          "herald/rt.h only of the public headers"
    elif layer == "push":
        if own or public:
            return True, ""
    elif layer == "public":
        if public:
            return True, ""
    if tparts[0] == "src" and len(tparts) > 2 and tparts[1] in ORDER:
        other = tparts[1]
        if layer in ORDER and ORDER.index(other) > ORDER.index(layer):
            return False, "%s is below %s and includes nothing of it" % (
                layer, other)
        return False, "%s's headers are private to it: use %s" % (
            other, PUBLIC_HEADER.get(other, "its public header"))
    return False, "%s may not include this file" % layer


INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*([<"])([^>"]*)[>"]')


def strip_comments(text):
    """The text with comments blanked, newlines kept (so line numbers stay)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("".join(c if c == "\n" else " " for c in text[i:j]))
            i = j
        elif text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text[i] == '"':
            # A string literal (may hold "/*"); includes start lines anyway.
            j = i + 1
            while j < n and text[j] not in '"\n':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def includes_of(path):
    """[(line number, '<' or '"', name)] of a file."""
    with open(path, encoding="utf-8", errors="replace") as f:
        text = strip_comments(f.read())
    found = []
    for no, line in enumerate(text.split("\n"), 1):
        m = INCLUDE.match(line)
        if m:
            found.append((no, m.group(1), m.group(2)))
    return found


def resolve(root, src_rel, name):
    """The file a quoted include names, relative to root, or None."""
    here = os.path.dirname(src_rel)
    for base in (here, "include", "src"):
        rel = os.path.normpath(os.path.join(base, name)).replace(os.sep, "/")
        if rel in GENERATED or os.path.isfile(os.path.join(root, rel)):
            return rel
    return None


def checked_files(root):
    files = []
    for top in ("src", "include"):
        for d, dirs, names in os.walk(os.path.join(root, top)):
            dirs.sort()
            for name in sorted(names):
                if name.endswith((".c", ".h")):
                    full = os.path.join(d, name)
                    files.append(os.path.relpath(full, root).replace(os.sep, "/"))
    return files


def module_of(rel):
    base = rel[:-2] if rel.endswith((".c", ".h")) else rel
    # A module's private header (NAME_int.h) belongs to the module: it may
    # include the module's public header, as the .c files do.
    return base[:-4] if rel.endswith("_int.h") else base


def find_cycles(edges):
    """Strongly connected components of more than one module (Tarjan),
    each as a list of modules."""
    index, low, on, stack, comps = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        # Iterative, so that a long chain cannot exhaust Python's stack.
        work = [(v, iter(sorted(edges.get(v, {}))))]
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        while work:
            node, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges.get(w, {})))))
                    advanced = True
                    break
                if w in on:
                    low[node] = min(low[node], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                if len(comp) > 1:
                    comps.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return comps


def cycle_path(edges, comp):
    """One cycle through the first module of comp, inside comp."""
    members = set(comp)
    start = comp[0]
    # Breadth-first from start back to start, within the component.
    prev = {}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(edges.get(v, {})):
            if w not in members:
                continue
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(prev[path[-1]])
                return list(reversed(path)) + [start]
            if w not in prev:
                prev[w] = v
                queue.append(w)
    return comp + [start]


def check(root):
    errors = []
    edges = {}  # module -> {module: [(file, line, name)]}
    files = checked_files(root)
    for rel in files:
        layer = layer_of(rel)
        if layer is None:
            continue
        for no, kind, name in includes_of(os.path.join(root, rel)):
            where = "%s:%d: #include %s" % (
                rel, no, "<%s>" % name if kind == "<" else '"%s"' % name)
            if kind == "<":
                ok, why = system_allowed(layer, name, rel)
                if not ok:
                    errors.append("%s: %s" % (where, why))
                continue
            target = resolve(root, rel, name)
            if target is None:
                errors.append("%s: no such file under the file's directory, "
                              "include/ or src/" % where)
                continue
            ok, why = quoted_allowed(layer, rel, target)
            if not ok:
                errors.append("%s: %s" % (where, why))
            a, b = module_of(rel), module_of(target)
            if a != b:
                edges.setdefault(a, {}).setdefault(b, []).append(
                    (rel, no, name))
    for comp in find_cycles(edges):
        path = cycle_path(edges, comp)
        lines = ["include cycle between modules: " + " -> ".join(path)]
        for a, b in zip(path, path[1:]):
            for f, no, name in edges[a][b]:
                lines.append('  %s:%d: #include "%s"' % (f, no, name))
        errors.append("\n".join(lines))
    return files, errors


def main(argv):
    if len(argv) > 2 or (len(argv) == 2 and argv[1].startswith("-")):
        sys.stderr.write(__doc__.split("\n\n")[1] + "\n")
        return 2
    root = argv[1] if len(argv) == 2 else \
        os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.isdir(os.path.join(root, "src")):
        sys.stderr.write("check-layers: %s has no src/\n" % root)
        return 2
    files, errors = check(root)
    for e in errors:
        print(e)
    if errors:
        print("check-layers: %d violation%s of the layer rules in %d files "
              "(rules: scripts/check-layers.py)" %
              (len(errors), "" if len(errors) == 1 else "s", len(files)))
        return 1
    print("check-layers: %d files keep the layer rules" % len(files))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
