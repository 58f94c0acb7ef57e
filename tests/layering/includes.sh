#!/bin/bash
# Proves the layers of docs/architecture.md hold in the includes: libkeel's folders never reach
# up (into the command, the server or the test harness), and the command (src/cli), the server
# (src/nbd) and the FUSE export (src/fuse) use libkeel only through its public headers
# (include/keel/) — never format/, check/, engine/, report/, crypto/, capi/ or io/ internals. The
# command may use the targets it links besides libkeel: keel_nbd (nbd/), keelfuse (fuse/) and
# keel_testing (proof/, and the io/ files that CMakeLists.txt lists in KEEL_TESTING_SOURCES).
# Usage: includes.sh SOURCE_DIR
set -u
src=${1:?usage: includes.sh SOURCE_DIR}
cd "$src" || exit 1

# The io/ headers of keel_testing, from CMakeLists.txt's list (src/io/X.cpp -> io/X.h).
testing_io=$(sed -n '/^set(KEEL_TESTING_SOURCES/,/^)/p' CMakeLists.txt |
  sed -n 's|^ *src/io/\([a-z_]*\)\.cpp$|io/\1.h|p' | tr '\n' ' ')
[ -n "$testing_io" ] || { echo "FAIL: no src/io/*.cpp in KEEL_TESTING_SOURCES (CMakeLists.txt changed?)"; exit 1; }

# folder: the include prefixes its files may use ("io-testing": keel_testing's io/ headers only).
declare -A allowed=(
  [format]="format keel"
  [io]="io keel"
  [crypto]="crypto format keel"
  [engine]="engine format crypto keel"
  [check]="check format keel"
  [report]="report keel"
  [capi]="capi keel"
  [nbd]="nbd keel"
  [fuse]="fuse keel proof io-testing"
  [cli]="cli keel nbd fuse proof io-testing"
)

violations=0 files=0 includes=0
for dir in "${!allowed[@]}"; do
  for f in $(find "src/$dir" -name '*.cpp' -o -name '*.h' | sort); do
    files=$((files + 1))
    while IFS=: read -r line inc; do
      includes=$((includes + 1))
      prefix=${inc%%/*}
      ok=0
      for a in ${allowed[$dir]}; do
        if [ "$a" = "$prefix" ]; then ok=1; fi
        if [ "$a" = io-testing ] && [ "$prefix" = io ] && [[ " $testing_io " == *" $inc "* ]]; then ok=1; fi
      done
      if [ $ok = 0 ]; then
        echo "FAIL: $f:$line includes \"$inc\": src/$dir may include only: ${allowed[$dir]/io-testing/$testing_io}"
        violations=$((violations + 1))
      fi
    done < <(grep -n '^#include "' "$f" | sed 's|^\([0-9]*\):#include "\([^"]*\)".*|\1:\2|')
  done
done
# The grep of issue 18's "Done when", kept literally.
if grep -rn '#include "\(format\|check\|engine\|report\|crypto\|capi\)/' src/cli src/nbd; then
  echo "FAIL: src/cli or src/nbd includes a libkeel internal (above)"
  violations=$((violations + 1))
fi
echo "layering: $files files, $includes project includes checked, $violations violation(s)"
[ $violations = 0 ]
