#!/usr/bin/env bash
# Proves the C ABI promise of keel.h (see abi_c99.c): compiles abi_c99.c as strict C99 with
# warnings as errors, with only include/ on the include path, links it with the shared libkeel
# and runs it. The compiler is the build's C++ driver in C mode (-x c), so sanitizer builds link
# the same runtime as libkeel.  usage: abi_c99.sh COMPILER INCLUDE_DIR LIBKEEL_SO [SANITIZERS]
set -euo pipefail
cc=$1 inc=$2 lib=$3 san=${4:-}
flags=()
[ -n "$san" ] && flags=(-fsanitize="$san")
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
src=$(dirname "$0")/abi_c99.c
"$cc" -x c -std=c99 -pedantic -Wall -Wextra -Werror -I"$inc" -c "$src" -o "$dir/abi_c99.o"
"$cc" "${flags[@]}" "$dir/abi_c99.o" -o "$dir/abi_c99" "$lib" -Wl,-rpath,"$(dirname "$lib")"
"$dir/abi_c99" "$dir/image.qcow2"
