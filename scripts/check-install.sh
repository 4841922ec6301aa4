#!/usr/bin/env bash
# Checks what users get from an installed Herald, not from the build tree:
#   1. `cmake --install` into a temporary prefix installs every promised file,
#      and every version (herald --version, herald/version.h, soname,
#      pkg-config, CMake package) is the one of project() in CMakeLists.txt;
#   2. libherald.so and libherald-core.so export only herald_* symbols, and
#      libherald-core needs nothing but zlib, ISA-L and libc;
#   3. examples/echo_server.c and echo_client.c build out of tree against the
#      installed library, through pkg-config and through find_package(herald),
#      and the client talks to the server;
#   4. the man pages pass `groff -man -ww -z` without a warning;
#   5. (root on Debian only) scripts/build-debs.sh builds libherald0,
#      libherald-dev and herald with lintian reporting no error; apt installs
#      all three; the system user and the config's mode (0640 root:herald)
#      are checked, the unit passes systemd-analyze verify (where systemd
#      can say), its ExecStart command line runs as the unit's user and
#      serves GET /health, programs build against the installed -dev
#      package; then all three are purged and nothing of them is left.
# Uses the release build in $BUILD (default build), building it if needed.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD:-build}
jobs=$(nproc)
work=$(mktemp -d "${TMPDIR:-/tmp}/herald-install.XXXXXX")
prefix=$work/prefix
pids=()
pkg_installed_here=0

cleanup() {
  for pid in "${pids[@]+"${pids[@]}"}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "$pkg_installed_here" = 1 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq herald libherald-dev \
      libherald0 >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

fail() {
  echo "check-install: $*" >&2
  exit 1
}
say() { printf -- "-- check-install: %s\n" "$*"; }

# port_busy PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_for_line FILE TEXT PID: wait (10 s at most) until FILE contains TEXT;
# fails early if PID exits.
wait_for_line() {
  for _ in $(seq 100); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# stop PID: SIGTERM, then wait for it; its exit status goes to $status.
stop() {
  status=0
  kill -TERM "$1"
  wait "$1" || status=$?
  local keep=()
  for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  pids=("${keep[@]+"${keep[@]}"}")
}

# http_status PORT PATH: the status code of GET PATH on 127.0.0.1:PORT.
http_status() {
  local line
  exec 3<>"/dev/tcp/127.0.0.1/$1"
  printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n' \
    "$2" "$1" >&3
  IFS= read -r -t 5 line <&3 || true
  exec 3<&- 3>&-
  line=${line%$'\r'}
  echo "${line#HTTP/1.1 }" | cut -d' ' -f1
}

version=$(sed -n 's/^project(herald VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
[ -n "$version" ] || fail "no project(herald VERSION x.y.z) in CMakeLists.txt"
major=${version%%.*}

# ---- 1. install into a temporary prefix ------------------------------------
say "install into $prefix"
if [ ! -f "$build/build.ninja" ] && [ ! -f "$build/Makefile" ]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build "$build" -j "$jobs" >/dev/null
cmake --install "$build" --prefix "$prefix" >/dev/null
pcfile=$(find "$prefix" -name herald.pc -path '*/pkgconfig/*' | head -1)
[ -n "$pcfile" ] || fail "no herald.pc under $prefix"
libdir=$(dirname "$(dirname "$pcfile")")
for f in include/herald/core.h include/herald/rt.h include/herald/herald.h \
  include/herald/version.h bin/herald share/man/man1/herald.1 \
  share/man/man3/herald.3 share/doc/herald/herald.service \
  share/doc/herald/herald.json; do
  [ -f "$prefix/$f" ] || fail "missing $f"
done
for f in libherald.so "libherald.so.$major" "libherald.so.$version" \
  libherald.a libherald-core.so "libherald-core.so.$major" \
  "libherald-core.so.$version" libherald-core.a pkgconfig/herald.pc \
  pkgconfig/herald-core.pc cmake/herald/heraldConfig.cmake \
  cmake/herald/heraldConfigVersion.cmake; do
  [ -e "$libdir/$f" ] || fail "missing ${libdir#"$prefix"/}/$f"
done
# A plain install writes nothing outside its prefix (the unit and /etc are
# for the package only).
outside=$(grep -v "^$prefix/" "$build/install_manifest.txt" || true)
[ -z "$outside" ] || fail "cmake --install wrote outside the prefix: $outside"

export PKG_CONFIG_PATH=$libdir/pkgconfig
got=$("$prefix/bin/herald" --version)
[ "$got" = "herald $version" ] || fail "herald --version says '$got'"
got=$(sed -n 's/^#define HERALD_VERSION_STRING "\(.*\)"/\1/p' \
  "$prefix/include/herald/version.h")
[ "$got" = "$version" ] || fail "version.h says '$got'"
for pc in herald herald-core; do
  got=$(pkg-config --modversion "$pc")
  [ "$got" = "$version" ] || fail "$pc.pc says '$got'"
done
for lib in libherald libherald-core; do
  got=$(readelf -d "$libdir/$lib.so" | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')
  [ "$got" = "$lib.so.$major" ] || fail "$lib.so has soname '$got'"
done
echo "files in place; version $version everywhere, soname .so.$major"

# ---- 2. exported symbols ------------------------------------------------------
say "exported symbols"
for lib in libherald libherald-core; do
  syms=$(nm -D --defined-only "$libdir/$lib.so" | awk '{print $NF}')
  bad=$(echo "$syms" | grep -v '^herald_' || true)
  internal=$(echo "$syms" | grep '^herald__' || true)
  if [ -n "$bad$internal" ]; then
    echo "$bad" "$internal" | sed 's/^/  /' >&2
    fail "$lib.so exports symbols other than herald_*"
  fi
  echo "$lib.so: $(echo "$syms" | grep -c .) symbols, all herald_*"
done
# Every HERALD_API function of the headers is exported by libherald.
declared=$(grep -h -A3 '^HERALD_API' "$prefix"/include/herald/{core,rt}.h |
  tr '\n' ' ' | grep -o 'herald_[a-z0-9_]* *(' | tr -d ' (' | sort -u)
missing=$(comm -23 <(echo "$declared") \
  <(nm -D --defined-only "$libdir/libherald.so" | awk '{print $NF}' | sort -u))
[ -z "$missing" ] || fail "declared but not exported: $missing"
needed=$(readelf -d "$libdir/libherald-core.so" |
  sed -n 's/.*NEEDED.*\[\(.*\)\]/\1/p' | grep -vE '^(libz|libisal|libc|ld-linux.*)\.so' || true)
[ -z "$needed" ] || fail "libherald-core.so needs $needed (only zlib and ISA-L allowed)"
echo "every HERALD_API function exported; libherald-core needs only zlib and ISA-L"

# ---- 3. out-of-tree builds against the installed library -------------------
say "out-of-tree build: pkg-config"
out=$work/consumer
mkdir -p "$out/pc" "$out/cm"
cp examples/echo_server.c examples/echo_client.c "$out/"
cat >"$out/core_only.c" <<'EOF'
/* Links with herald-core alone and checks the version macros. */
#include <herald/herald.h>
#include <stdio.h>
#include <string.h>

int main(void) {
  char key[29];
  herald_accept_key("dGhlIHNhbXBsZSBub25jZQ==", 24, key);
  if (strcmp(key, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") != 0) {
    return 1;
  }
  if (HERALD_VERSION_NUMBER !=
      HERALD_VERSION_ENCODE(HERALD_VERSION_MAJOR, HERALD_VERSION_MINOR,
                            HERALD_VERSION_PATCH)) {
    return 1;
  }
  printf("%s\n", HERALD_VERSION_STRING);
  return 0;
}
EOF
cc=${CC:-cc}
cflags=(-std=c17 -Wall -Wextra -Werror -O2)
for ex in echo_server echo_client; do
  # shellcheck disable=SC2046
  $cc "${cflags[@]}" "$out/$ex.c" -o "$out/pc/$ex" \
    $(pkg-config --cflags --libs herald) -Wl,-rpath,"$libdir"
done
# shellcheck disable=SC2046
$cc "${cflags[@]}" "$out/core_only.c" -o "$out/pc/core_only" \
  $(pkg-config --cflags herald) $(pkg-config --libs herald-core) \
  -Wl,-rpath,"$libdir"
# Static: the archive plus the private requirements pkg-config lists.
# shellcheck disable=SC2046
$cc "${cflags[@]}" "$out/echo_client.c" -o "$out/pc/echo_client_static" \
  $(pkg-config --cflags herald) "$libdir/libherald.a" \
  $(pkg-config --static --libs libuv liburing openssl zlib libisal) -pthread
for bin in echo_server echo_client core_only; do
  grep -q "$libdir/libherald" <<<"$(ldd "$out/pc/$bin")" ||
    fail "$bin is not linked with the installed library"
done
! grep -q libherald <<<"$(ldd "$out/pc/echo_client_static")" ||
  fail "echo_client_static links libherald dynamically"
[ "$("$out/pc/core_only")" = "$version" ] || fail "core_only failed"
echo "built echo_server, echo_client, core_only (herald-core) and a static client"

say "out-of-tree build: find_package(herald)"
cat >"$out/cm/CMakeLists.txt" <<EOF
cmake_minimum_required(VERSION 3.20)
project(herald_consumer LANGUAGES C)
set(CMAKE_C_STANDARD 17)
find_package(herald $version REQUIRED)
if(NOT herald_VERSION VERSION_EQUAL "$version")
  message(FATAL_ERROR "find_package(herald) found \${herald_VERSION}")
endif()
add_compile_options(-Wall -Wextra -Werror)
add_executable(echo_server "$out/echo_server.c")
target_link_libraries(echo_server PRIVATE herald::herald)
add_executable(echo_client "$out/echo_client.c")
target_link_libraries(echo_client PRIVATE herald::herald)
add_executable(core_only "$out/core_only.c")
target_link_libraries(core_only PRIVATE herald::core)
if(TARGET herald::herald_static)
  add_executable(echo_client_static "$out/echo_client.c")
  target_link_libraries(echo_client_static PRIVATE herald::herald_static)
else()
  message(FATAL_ERROR "herald::herald_static is missing")
endif()
EOF
cmake -S "$out/cm" -B "$out/cm/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$prefix" >"$out/cm.log" 2>&1 ||
  { cat "$out/cm.log" >&2; fail "find_package(herald) project does not configure"; }
cmake --build "$out/cm/build" >"$out/cm.log" 2>&1 ||
  { cat "$out/cm.log" >&2; fail "find_package(herald) project does not build"; }
for bin in echo_server echo_client core_only; do
  grep -q "$libdir/libherald" <<<"$(ldd "$out/cm/build/$bin")" ||
    fail "$bin (CMake) is not linked with the installed library"
done
[ "$("$out/cm/build/core_only")" = "$version" ] || fail "core_only (CMake) failed"
echo "built echo_server, echo_client, core_only and echo_client_static"

say "run: echo_client against echo_server (127.0.0.1:9001)"
if port_busy 9001; then
  echo "SKIPPED: 127.0.0.1:9001 is in use; not running the examples"
else
  "$out/pc/echo_server" >"$work/server.log" 2>&1 &
  pids+=($!)
  server=$!
  for _ in $(seq 50); do
    port_busy 9001 && break
    kill -0 "$server" 2>/dev/null || break
    sleep 0.1
  done
  port_busy 9001 || { cat "$work/server.log" >&2; fail "echo_server did not start"; }
  for client in "$out/cm/build/echo_client" "$out/pc/echo_client_static"; do
    got=$(timeout 10 "$client" ws://127.0.0.1:9001/ "hello from check-install") ||
      fail "$(basename "$client") failed"
    [ "$got" = "hello from check-install" ] || fail "echo_client got '$got'"
  done
  stop "$server"
  [ "$status" = 0 ] || { cat "$work/server.log" >&2; fail "echo_server exit $status"; }
  grep -q '^close 1000' "$work/server.log" || fail "server saw no close 1000"
  echo "echo_client (find_package) and the static client got their echo;" \
    "echo_server (pkg-config) stopped cleanly"
fi

# ---- 4. man pages -----------------------------------------------------------
say "man pages"
command -v groff >/dev/null || scripts/deps.sh
command -v groff >/dev/null || fail "groff is missing (scripts/deps.sh installs groff-base)"
for page in "$prefix/share/man/man1/herald.1" "$prefix/share/man/man3/herald.3"; do
  warnings=$(groff -man -ww -z "$page" 2>&1) || fail "groff failed on $page"
  [ -z "$warnings" ] || { echo "$warnings" >&2; fail "groff warns on $(basename "$page")"; }
done
# Every option of every subcommand's --help is in its section of herald(1)
# (.SS "herald CMD ..." up to the next .SS or .SH).
page=$(sed 's/\\-/-/g' "$prefix/share/man/man1/herald.1")
for cmd in serve echo client bench; do
  section=$(awk -v cmd="$cmd" '
    /^\.S[SH] / { on = ($0 ~ "^\\.SS \"herald " cmd " ") }
    on' <<<"$page")
  [ -n "$section" ] || fail "herald(1) has no section for herald $cmd"
  for opt in $("$prefix/bin/herald" "$cmd" --help | grep -o -- '--[a-z][a-z-]*' | sort -u); do
    grep -qF -- "$opt" <<<"$section" || fail "herald $cmd $opt is not in herald(1)"
  done
done
echo "herald.1 and herald.3: no groff warnings; herald.1 names every option"

# ---- 5. the Debian packages -------------------------------------------------
say "Debian packages"
if [ "$(id -u)" -ne 0 ]; then
  echo "SKIPPED: not root; the .debs are built, installed and started only as root"
  exit 0
fi
if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
  echo "SKIPPED: no apt-get/dpkg-deb: not a Debian system"
  exit 0
fi
for p in herald libherald0 libherald-dev; do
  if grep -q "ok installed" <<<"$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)"; then
    echo "SKIPPED: a $p package is already installed; not replacing it"
    exit 0
  fi
done
command -v lintian >/dev/null || scripts/deps.sh
out=$(scripts/build-debs.sh "$build/debs" 2>&1) ||
  { echo "$out" >&2; fail "scripts/build-debs.sh failed"; }
grep '^lintian' <<<"$out" | grep -v 'running with root privileges' || true
read -r -a debs <<<"$(tail -1 <<<"$out")"
[ "${#debs[@]}" = 3 ] || fail "expected three .debs, got: ${debs[*]}"
debver="$version-1"
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)
for deb in "${debs[@]}"; do
  info=$(dpkg-deb -f "$deb")
  for want in "Version: $debver" "Maintainer: " "Description: "; do
    grep -q "^$want" <<<"$info" || fail "$(basename "$deb"): control lacks '$want'"
  done
  pkg=$(dpkg-deb -f "$deb" Package)
  contents=$(dpkg-deb -c "$deb" | awk '{print $6}')
  for f in "./usr/share/doc/$pkg/copyright" "./usr/share/doc/$pkg/changelog.Debian.gz"; do
    grep -qx -- "$f" <<<"$contents" || fail "$pkg lacks $f"
  done
  case $pkg in
  libherald0)
    for f in "libherald.so.$version" "libherald-core.so.$version"; do
      grep -qx -- "./usr/lib/$multiarch/$f" <<<"$contents" ||
        fail "libherald0 lacks /usr/lib/$multiarch/$f"
    done
    shlibs=$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./shlibs)
    grep -q "^libherald $major libherald0" <<<"$shlibs" ||
      fail "libherald0 has no shlibs entry for libherald"
    ;;
  libherald-dev)
    for f in ./usr/include/herald/rt.h "./usr/lib/$multiarch/libherald.a" \
      "./usr/lib/$multiarch/pkgconfig/herald.pc" \
      "./usr/lib/$multiarch/cmake/herald/heraldConfig.cmake" \
      ./usr/share/man/man3/herald.3.gz; do
      grep -qx -- "$f" <<<"$contents" || fail "libherald-dev lacks $f"
    done
    ;;
  herald)
    for f in ./usr/bin/herald ./lib/systemd/system/herald.service \
      ./etc/herald/herald.json ./usr/share/man/man1/herald.1.gz \
      ./usr/share/doc/herald/protocol.md; do
      grep -qx -- "$f" <<<"$contents" || fail "herald lacks $f"
    done
    # Whole outputs into variables: grep -q closing a pipe early would
    # fail the pipeline (pipefail).
    conffiles=$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles)
    grep -qx /etc/herald/herald.json <<<"$conffiles" ||
      fail "/etc/herald/herald.json is not a conffile"
    control=$(dpkg-deb --ctrl-tarfile "$deb" | tar -t)
    for s in postinst prerm postrm; do
      grep -qx "./$s" <<<"$control" || fail "herald has no $s"
    done
    ;;
  esac
  echo "$(basename "$deb"): Depends: $(dpkg-deb -f "$deb" Depends)"
done

export DEBIAN_FRONTEND=noninteractive
pkg_installed_here=1
apt-get install -y -qq --no-install-recommends "${debs[@]}" >"$work/apt.log" 2>&1 ||
  { cat "$work/apt.log" >&2; fail "apt-get install of the three .debs failed"; }
got=$(/usr/bin/herald --version)
[ "$got" = "herald $version" ] || fail "/usr/bin/herald --version says '$got'"
getent passwd herald >/dev/null || fail "postinst made no user herald"
mode=$(stat -c '%a %U:%G' /etc/herald/herald.json)
[ "$mode" = "640 root:herald" ] || fail "/etc/herald/herald.json is $mode, not 640 root:herald"
echo "installed with apt; herald --version: $got; user herald; herald.json $mode"

# The -dev package: programs build against it through pkg-config and
# find_package, and run with libherald0 (the system paths only: forget the
# temporary prefix of step 1).
unset PKG_CONFIG_PATH CMAKE_PREFIX_PATH
cc=${CC:-cc}
# shellcheck disable=SC2046
$cc -std=c17 -Wall -Werror examples/echo_client.c -o "$work/echo_client_deb" \
  $(pkg-config --cflags --libs herald) || fail "cannot build against libherald-dev"
# (/lib is /usr/lib on a merged-/usr system: ldd may name either.)
grep -qE "libherald.so.$major => (/usr)?/lib/$multiarch/libherald.so.$major" \
  <<<"$(ldd "$work/echo_client_deb")" ||
  fail "echo_client is not linked with /usr/lib/$multiarch/libherald.so.$major"
mkdir -p "$work/cmdeb"
printf '%s\n' 'cmake_minimum_required(VERSION 3.20)' \
  'project(deb_consumer LANGUAGES C)' "find_package(herald $version REQUIRED)" \
  "add_executable(core_only \"$work/consumer/core_only.c\")" \
  'target_link_libraries(core_only PRIVATE herald::core)' >"$work/cmdeb/CMakeLists.txt"
{ cmake -S "$work/cmdeb" -B "$work/cmdeb/build" && cmake --build "$work/cmdeb/build"; } \
  >"$work/cm.log" 2>&1 ||
  { cat "$work/cm.log" >&2; fail "find_package(herald) fails against libherald-dev"; }
[ "$("$work/cmdeb/build/core_only")" = "$version" ] || fail "core_only (deb) failed"
echo "built against libherald-dev: pkg-config (echo_client) and find_package (core_only)"

unit=/lib/systemd/system/herald.service
if command -v systemd-analyze >/dev/null; then
  if systemd-analyze verify "$unit" >"$work/verify.log" 2>&1; then
    echo "systemd-analyze verify $unit: ok"
  else
    # Without a running systemd some checks cannot be made; show what it said.
    echo "note: systemd-analyze verify: $(tr '\n' ' ' <"$work/verify.log")"
  fi
fi
execstart=$(sed -n 's/^ExecStart=//p' "$unit")
[ "$execstart" = "/usr/bin/herald serve --config /etc/herald/herald.json" ] ||
  fail "unexpected ExecStart: $execstart"
unit_user=$(sed -n 's/^User=//p' "$unit")
[ "$unit_user" = herald ] || fail "the unit runs as '$unit_user', not herald"
# An administrator sets real secrets before starting (herald serve may
# refuse the placeholders); dpkg then keeps the edited conffile as it is.
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
sed -i "s/CHANGE-ME-api-key/api-$secret/; s/CHANGE-ME-hs256-secret-at-least-32-bytes/jwt-$secret/" \
  /etc/herald/herald.json
port=$(sed -n 's/.*"listen": *\["[^"]*:\([0-9]*\)".*/\1/p' /etc/herald/herald.json)
if port_busy "$port"; then
  echo "SKIPPED: 127.0.0.1:$port is in use; not starting the unit's command"
else
  # systemd does not run in this container: run the unit's command line as
  # the unit's user and group, as systemd would.
  # shellcheck disable=SC2086
  setpriv --reuid=herald --regid=herald --init-groups $execstart >"$work/serve.log" 2>&1 &
  pids+=($!)
  server=$!
  wait_for_line "$work/serve.log" "listening on" "$server" ||
    { cat "$work/serve.log" >&2; fail "herald serve did not start as user herald"; }
  got=$(http_status "$port" /health)
  [ "$got" = 200 ] || fail "GET /health returned '$got'"
  runner=$(ps -o user= -p "$server")
  [ "$runner" = herald ] || fail "herald serve runs as '$runner'"
  stop "$server"
  [ "$status" = 0 ] || { cat "$work/serve.log" >&2; fail "herald serve exit $status"; }
  echo "ExecStart as user herald (config 0640 root:herald):" \
    "listening on 127.0.0.1:$port, GET /health 200, SIGTERM exit 0"
fi

apt-get purge -y -qq herald libherald-dev libherald0 >"$work/apt.log" 2>&1 ||
  { cat "$work/apt.log" >&2; fail "apt-get purge failed"; }
pkg_installed_here=0
for f in /usr/bin/herald /etc/herald "$unit" /usr/include/herald \
  /usr/share/doc/herald /usr/share/man/man1/herald.1.gz \
  "/usr/lib/$multiarch/libherald.so.$major" "/usr/lib/$multiarch/libherald.a" \
  "/usr/lib/$multiarch/pkgconfig/herald.pc" "/usr/lib/$multiarch/cmake/herald"; do
  [ ! -e "$f" ] || fail "$f is left after purging the packages"
done
left=$(dpkg-query -W -f='${Package} ${Status}\n' herald libherald0 libherald-dev 2>/dev/null |
  grep -v "not-installed" || true)
[ -z "$left" ] || fail "dpkg still knows: $left"
echo "all three purged: no file of theirs left (the system user herald stays," \
  "as Debian does; deluser --system herald removes it)"
