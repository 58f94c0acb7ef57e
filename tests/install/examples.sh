#!/usr/bin/env bash
# Proves that libkeel works as an installed library: `cmake --install` into a temporary prefix,
# then the examples are built against that prefix only — the C one through pkg-config, the C++
# and C ones through find_package(keel CONFIG) — and run (each creates, writes, flushes, reads
# back and checks an image, which qemu-img check confirms), and the Python ctypes module's pytest
# test runs against the installed libkeel.so. Also checks the SONAME, `keel --version`, and that
# the installed headers include no third-party header.
#   usage: examples.sh BUILD_DIR SOURCE_DIR CMAKE
set -euo pipefail
build=$(realpath "$1") src=$(realpath "$2") cmake=${3:-cmake}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
fail() { echo "examples.sh: FAIL: $*" >&2; exit 1; }

"$cmake" --install "$build" --prefix "$prefix" >"$tmp/install.log" || { cat "$tmp/install.log"; fail "cmake --install"; }
libdir=$(dirname "$(find "$prefix" -name 'keel.pc' -path '*pkgconfig*' | head -n 1)")/..
libdir=$(realpath "$libdir")
version=$(sed -n 's/^#define KEEL_VERSION_STRING "\(.*\)"/\1/p' "$prefix/include/keel/version.h")
[ -n "$version" ] || fail "no KEEL_VERSION_STRING in the installed keel/version.h"
for f in include/keel/keel.h include/keel/image.h; do [ -f "$prefix/$f" ] || fail "$f not installed"; done
[ -f "$libdir/libkeel.a" ] || fail "libkeel.a (the static twin) not installed"
# The public headers carry no third-party type: they include only the C and C++ standard libraries.
if grep -rnE '#include <(tl|nlohmann|fmt|zstd|zlib|gnutls|nettle)[/.]' "$prefix/include/keel"; then
  fail "an installed header includes a third-party header"
fi
soname=$(objdump -p "$libdir/libkeel.so" | awk '/SONAME/ {print $2}')
[ "$soname" = "libkeel.so.${version%%.*}" ] || fail "SONAME is '$soname', expected libkeel.so.${version%%.*}"
[ "$("$prefix/bin/keel" --version)" = "keel $version" ] || fail "keel --version: $("$prefix/bin/keel" --version)"
echo "installed libkeel $version ($soname) in $prefix"

# 1. C through pkg-config.
export PKG_CONFIG_PATH=$libdir/pkgconfig
[ "$(pkg-config --modversion keel)" = "$version" ] || fail "pkg-config --modversion keel"
# shellcheck disable=SC2046
cc -std=c99 -Wall -Werror "$src/examples/c/keel_example.c" -o "$tmp/c_pkgconfig" \
  $(pkg-config --cflags --libs keel) -Wl,-rpath,"$libdir"
"$tmp/c_pkgconfig" "$tmp/c_pkgconfig.qcow2"
qemu-img check -q "$tmp/c_pkgconfig.qcow2" || fail "qemu-img check of the C example's image"

# 2. C++ and C through find_package(keel CONFIG).
"$cmake" -S "$src/examples" -B "$tmp/build" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release \
  >"$tmp/configure.log" || { cat "$tmp/configure.log"; fail "configuring examples/ with find_package"; }
"$cmake" --build "$tmp/build" -j 2 >"$tmp/build.log" || { cat "$tmp/build.log"; fail "building examples/"; }
"$tmp/build/keel_example_cpp" "$tmp/cpp.qcow2"
"$tmp/build/keel_example_c" "$tmp/c_cmake.qcow2"
qemu-img check -q "$tmp/cpp.qcow2" || fail "qemu-img check of the C++ example's image"
qemu-img check -q "$tmp/c_cmake.qcow2" || fail "qemu-img check of the C example's image"
# The examples must use the installed library, not the build tree's.
# (ldd's output read whole first: with pipefail, `ldd | grep -q` fails when grep's early exit
# makes ldd die of SIGPIPE, which happened once in a clean-clone make test.)
deps=$(ldd "$tmp/build/keel_example_cpp")
grep -q "$libdir/libkeel.so" <<<"$deps" || fail "keel_example_cpp does not load $libdir/libkeel.so"

# 3. Python through ctypes (Debian's python3 and python3-pytest).
KEEL_LIBRARY=$libdir/libkeel.so.${version%%.*} PYTHONDONTWRITEBYTECODE=1 \
  /usr/bin/python3 -m pytest -q -p no:cacheprovider "$src/examples/python" \
  || fail "pytest examples/python"
echo "examples.sh: all three examples pass against the installed library"
