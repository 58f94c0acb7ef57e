#!/usr/bin/env bash
# Proves the qcow2 CVE-class images (cve_images.py: QEMU's CVE-2014-0143..0147 classes and later
# ones, each field pushed just over its limit or to a 32/64-bit wrap-around) fail cleanly: keel
# info and keel check exit with qemu-img's exit status (or the documented deviation), a refused
# image gives exactly one "keel: ..." line naming the field and value, nothing crashes or hangs,
# memory stays under 1 GiB (ulimit -v; ASan builds: the allocator's limits), the image is never
# modified, convert agrees with qemu-img convert, and a repair on a copy terminates. The saved
# fuzz findings in tests/fuzz/regress/ get the same no-crash treatment.
# Usage: bash cve_images.sh /path/to/keel
set -euo pipefail
export KEEL_CLI_TEST_TIMEOUT=${KEEL_CLI_TEST_TIMEOUT:-600}
HERE=$(dirname "$(realpath "$0")")
source "$HERE/cli_lib.bash"
PY=/usr/bin/python3
MEM_KB=$((1024 * 1024))

# A sanitizer build reserves terabytes of address space, so ulimit -v cannot apply; bound the
# allocator instead (an allocation over 1 GiB then aborts, which this test counts as a crash).
if (ulimit -v $MEM_KB; "$KEEL" --version) >/dev/null 2>&1; then
  LIMIT=(ulimit -v $MEM_KB)
else
  LIMIT=(true)
  export ASAN_OPTIONS="max_allocation_size_mb=1024:hard_rss_limit_mb=1024:detect_leaks=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
  echo "note: sanitizer build; memory bounded through ASAN_OPTIONS=$ASAN_OPTIONS"
fi

# bounded OUT ERR CMD...: runs CMD under the memory limit and 20 s; prints its exit status.
bounded() {
  local out=$1 err=$2 rc=0; shift 2
  ("${LIMIT[@]}"; exec timeout 20 "$@") >"$out" 2>"$err" || rc=$?
  echo $rc
}
# crashed RC: non-empty (a reason) if RC means a crash or a hang.
crashed() {
  if [ "$1" -eq 124 ]; then echo "timed out"
  elif [ "$1" -ge 128 ]; then echo "killed by signal $(($1 - 128))"
  elif [ "$1" -gt 3 ] && [ "$1" -ne 63 ]; then echo "exit status $1"
  fi
}
# one_line ERRFILE REGEX: non-empty (a reason) unless ERRFILE is one short "keel: " line matching REGEX.
one_line() {
  if [ "$(wc -l <"$1")" -ne 1 ]; then echo "expected one line on stderr, got $(wc -l <"$1")"
  elif ! grep -q '^keel: ' "$1"; then echo "message does not start with 'keel: '"
  elif [ "$(wc -c <"$1")" -gt 400 ]; then echo "message of $(wc -c <"$1") bytes (at most 400)"
  elif [ -n "$2" ] && ! grep -Eqi -- "$2" "$1"; then echo "message does not match '$2'"
  fi
}

"$PY" "$HERE/cve_images.py" >manifest.tsv
say "$(wc -l <manifest.tsv) CVE-class images"
while IFS=$'\t' read -r img regex what want_info want_check why; do
  [ "$regex" = - ] && regex=""
  [ "$why" = - ] && why=""
  say "$img: $what${why:+ (deviation: $why)}"
  before=$(md5sum "$img" | cut -d' ' -f1)
  qi=0; qemu-img info "$img" >/dev/null 2>&1 || qi=$?
  qc=0; qemu-img check "$img" >/dev/null 2>&1 || qc=$?
  [ "$want_info" = qemu ] && want_info=$qi
  [ "$want_check" = qemu ] && want_check=$qc

  rc=$(bounded info.out info.err "$KEEL" info "$img")
  why_bad=$(crashed "$rc")
  [ -z "$why_bad" ] && [ "$rc" -ne "$want_info" ] && why_bad="exit status $rc, expected $want_info (qemu-img: $qi)"
  [ -z "$why_bad" ] && [ "$rc" -ne 0 ] && why_bad=$(one_line info.err "$regex")
  [ -z "$why_bad" ] || fail "keel info $img: $why_bad; stderr: $(head -c 300 info.err)"
  pass

  rc=$(bounded check.out check.err "$KEEL" check "$img")
  why_bad=$(crashed "$rc")
  [ -z "$why_bad" ] && [ "$rc" -ne "$want_check" ] && why_bad="exit status $rc, expected $want_check (qemu-img: $qc)"
  # A check that cannot open the image ends with one "keel:" line naming the field (detail
  # lines "ERROR ..." may come first, as with qemu-img).
  if [ -z "$why_bad" ] && [ "$rc" -eq 1 ]; then
    grep '^keel: ' check.err >check.keel || true
    why_bad=$(one_line check.keel "")
  fi
  [ -z "$why_bad" ] || fail "keel check $img: $why_bad; stderr: $(head -c 300 check.err)"
  pass

  after=$(md5sum "$img" | cut -d' ' -f1)
  [ "$before" = "$after" ] || fail "$img was modified by keel info/check"
  pass

  if [ "$want_info" -eq 0 ]; then
    qv=0; qemu-img convert -O raw "$img" q.raw >/dev/null 2>&1 || qv=$?
    rc=$(bounded conv.out conv.err "$KEEL" convert -O raw "$img" k.raw)
    why_bad=$(crashed "$rc")
    [ -z "$why_bad" ] && [ "$rc" -ne "$qv" ] && why_bad="exit status $rc, qemu-img convert: $qv"
    [ -z "$why_bad" ] && [ "$rc" -ne 0 ] && why_bad=$(one_line conv.err "")
    [ -z "$why_bad" ] || fail "keel convert $img: $why_bad; stderr: $(head -c 300 conv.err)"
    pass
  fi

  cp "$img" repair.qcow2
  rc=$(bounded repair.out repair.err "$KEEL" check -r all repair.qcow2)
  why_bad=$(crashed "$rc")
  [ -z "$why_bad" ] || fail "keel check -r all (copy of $img): $why_bad; stderr: $(head -c 300 repair.err)"
  pass
done <manifest.tsv

# The fuzzers' saved findings: no crash, no hang, bounded memory, whatever the verdict.
shopt -s nullglob
for f in "$HERE"/../fuzz/regress/{open_info,check,read,write}/*; do
  say "fuzz finding $(basename "$(dirname "$f")")/$(basename "$f")"
  cp "$f" finding.qcow2
  for c in info check; do
    rc=$(bounded f.out f.err "$KEEL" "$c" -f qcow2 finding.qcow2)
    why_bad=$(crashed "$rc")
    [ -z "$why_bad" ] && [ "$rc" -eq 1 ] && [ "$c" = info ] && why_bad=$(one_line f.err "")
    [ -z "$why_bad" ] || fail "keel $c on $f: $why_bad; stderr: $(head -c 300 f.err)"
    pass
  done
done

finish
