#!/usr/bin/env bash
# Proves `keel dd` behaves like `qemu-img dd`: from QEMU-made qcow2 and raw inputs (with a
# backing file, compressed and zero clusters), keel and qemu-img copy with the same block sizes,
# counts and skips (including odd block sizes, suffixes, a skip past the end, count before skip)
# into raw and qcow2 outputs, with the same messages and exit codes. The outputs must be
# byte-identical (raw) or identical in content and info (qcow2), pass qemu-img check, and read
# back in QEMU; operand and usage errors must match.
# Usage: bash parity_dd.sh /path/to/keel
set -euo pipefail
: "${KEEL_CLI_TEST_TIMEOUT:=400}"
export KEEL_CLI_TEST_TIMEOUT
HERE=$(dirname "$(realpath "$0")")
source "$HERE/cli_lib.bash"
source "$HERE/parity_lib.bash"

make_inputs() {
  qemu-img create -q -f qcow2 base.qcow2 4M
  qemu-io -c 'write -P 0x11 0 2M' base.qcow2
  qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 in.qcow2
  qemu-io -c 'write -P 0x21 1M 100k' -c 'write -z 1536k 64k' -c 'write -c -P 0x22 3M 64k' in.qcow2
  qemu-io -c 'write -P 0x23 4193000 1296' in.qcow2
  qemu-img convert -O raw in.qcow2 in.raw
}
twin_setup make_inputs

# copied DESC OUT FMT: the outputs agree (bytes for raw; content, info and check for qcow2).
copied() {
  if [ "$3" = raw ]; then
    same_file "$1" "$T/q/$2" "$T/k/$2"
  else
    same_content "$1" "$2"
    same_info "$1" "$2"
    clean "$1" "$2"
  fi
}

say "copies"
n=0
for input in in.qcow2 in.raw; do
  for ops in "" "bs=64k" "bs=1000" "bs=1M count=2" "bs=64k count=10" "bs=64k skip=40" \
             "bs=4k count=1.5k" "bs=1k count=1k skip=1k" "count=0" "skip=100" "bs=3 count=5 skip=7" \
             "bs=2M skip=1" "bs=1M count=2 skip=3" "skip=1E" "count=1E" "bs=512 bs=1k count=3"; do
    for fmt in raw qcow2; do
      n=$((n + 1))
      out=out$n.$fmt
      # shellcheck disable=SC2086
      twin_run "dd $ops if=$input -O $fmt" dd -O "$fmt" $ops "if=$input" "of=$out"
      copied "dd $ops if=$input -O $fmt" "$out" "$fmt"
    done
  done
done
twin_run "dd -f raw of a qcow2 file copies the file" dd -f raw if=in.qcow2 of=file.raw
copied "dd -f raw of a qcow2 file" file.raw raw
twin_run "dd -U" dd -U if=in.qcow2 of=u.raw
copied "dd -U" u.raw raw
twin_run "dd over an existing output" dd bs=64k count=3 if=in.qcow2 of=u.raw
copied "dd over an existing output" u.raw raw
(cd "$T/k" && run_ok "qemu-io reads keel's dd output" qemu-io -r -f qcow2 -c 'read -P 0x21 1M 100k' out2.qcow2)
! grep -q "fail" "$T/last.out" || fail "qemu-io: $(cat "$T/last.out")"

say "errors"
twin_run "no of=" dd if=in.qcow2
twin_run "no if=" dd of=x.raw
twin_run "unknown operand" dd foo=1 if=in.qcow2 of=x.raw
twin_run "operand without =" dd if=in.qcow2 of=x.raw extra
twin_run "empty operand name" dd =5 if=in.qcow2 of=x.raw
twin_run "bs=0" dd bs=0 if=in.qcow2 of=x.raw
twin_run "bs too large" dd bs=3G if=in.qcow2 of=x.raw
twin_run "bs not a number" dd bs=abc if=in.qcow2 of=x.raw
twin_run "empty bs" dd bs= if=in.qcow2 of=x.raw
twin_run "negative count" dd count=-1 if=in.qcow2 of=x.raw
twin_run "bad skip" dd skip=1x if=in.qcow2 of=x.raw
twin_run "unknown output format" dd -O foo if=in.qcow2 of=x.raw
twin_run "unknown input format" dd -f foo if=in.qcow2 of=x.raw
twin_rc "missing input" dd if=missing.qcow2 of=x.raw
finish
