#!/usr/bin/env bash
# Proves keel behaves like QEMU's tools where issue 16 found it did not, each case on twins (the
# same QEMU-made image in q/ and k/; qemu-img or qemu-io in q/, keel in k/: same output lines,
# exit code and image afterwards): amend compat=1.1 of a v2 image with short snapshot extra data
# rewrites the table (bug 1); rebase -u -b "" of a v2 image keeps unknown header extensions
# (bug 2); create -b '' is refused (bug 3); io's alloc clamps at the end of the image (bug 4);
# discard on a v2 overlay never brings the backing data back (bug 5).
# Usage: bash parity_qemu_tools.sh /path/to/keel
set -euo pipefail
HERE=$(dirname "$(realpath "$0")")
source "$HERE/cli_lib.bash"
source "$HERE/parity_lib.bash"
HDR="python3 $HERE/qcow2_hdr.py"

# io_twin DESC IMAGE ARGS...: qemu-io ARGS IMAGE in q/, keel io ARGS IMAGE in k/: same exit
# code, stdout (timings left out) and stderr (with "keel" for "qemu-io").
io_twin() {
  local desc=$1 img=$2; shift 2
  local qrc=0 krc=0
  (cd "$T/q" && qemu-io "$@" "$img") >"$T/q.io" 2>"$T/q.io.err" || qrc=$?
  (cd "$T/k" && "$KEEL" io "$@" "$img") >"$T/k.io" 2>"$T/k.io.err" || krc=$?
  [ $qrc -eq $krc ] || { cat "$T/q.io" "$T/k.io" "$T/k.io.err" >&2; fail "$desc: qemu-io exited $qrc, keel io $krc"; }
  normalize_io <"$T/q.io" >"$T/q.io.n"
  normalize_io <"$T/k.io" >"$T/k.io.n"
  same_file "$desc: stdout" "$T/q.io.n" "$T/k.io.n"
  sed -i 's/^qemu-io: /keel: /' "$T/q.io.err"
  same_file "$desc: stderr" "$T/q.io.err" "$T/k.io.err"
}

# same_dump DESC IMAGE WHAT: qcow2_hdr.py WHAT prints the same for q/IMAGE and k/IMAGE.
same_dump() {
  (cd "$T/q" && $HDR "$3" "$2") >"$T/q.dump" || fail "$1: $3 of q/$2"
  (cd "$T/k" && $HDR "$3" "$2") >"$T/k.dump" || fail "$1: $3 of k/$2"
  same_file "$1: $3 of $2" "$T/q.dump" "$T/k.dump"
}

say "bug 1: amend -o compat=1.1 of a v2 image whose snapshots carry less than 16 bytes of extra data"
v2_short_extra() {
  qemu-img create -q -f qcow2 -o compat=0.10 s.qcow2 1M
  qemu-io -c "write -P 0x41 0 128k" s.qcow2
  qemu-img snapshot -c one s.qcow2
  qemu-io -c "write -P 0x42 64k 128k" s.qcow2
  qemu-img snapshot -c two s.qcow2
  $HDR short-extra s.qcow2 "$EXTRA"
}
for EXTRA in 0 8; do
  twin_setup v2_short_extra
  twin_run "amend compat=1.1 (extra $EXTRA)" amend -o compat=1.1 s.qcow2
  clean "amend compat=1.1 (extra $EXTRA)" s.qcow2
  same_dump "amend compat=1.1 (extra $EXTRA)" s.qcow2 snapshots
  same_info "amend compat=1.1 (extra $EXTRA)" s.qcow2
  same_content "amend compat=1.1 (extra $EXTRA)" s.qcow2
done

say "bug 2: rebase -u -b '' of a v2 image keeps unknown header extensions"
v2_unknown_ext() {
  qemu-img create -q -f qcow2 -o compat=0.10 b.qcow2 1M
  qemu-img create -q -f qcow2 -o compat=0.10 -b b.qcow2 -F qcow2 o.qcow2
  $HDR add-ext o.qcow2 0x12345678 0102030405
}
twin_setup v2_unknown_ext
same_dump "crafted" o.qcow2 exts
twin_run "rebase -u -b ''" rebase -u -b "" o.qcow2
same_dump "rebase -u -b ''" o.qcow2 exts
clean "rebase -u -b ''" o.qcow2
twin_setup v2_unknown_ext
twin_run "rebase -u -b other" rebase -u -b other.qcow2 -F raw o.qcow2
same_dump "rebase -u -b other" o.qcow2 exts

say "bug 3: create -b '' is refused"
nothing() { :; }
twin_setup nothing
twin_run "create -b ''" create -f qcow2 -b '' t.qcow2 1M
twin_run "create -F qcow2 -b ''" create -f qcow2 -F qcow2 -b '' t.qcow2 1M
twin_run "create -o backing_file=" create -f qcow2 -o backing_file= t.qcow2 1M
twin_run "create -f raw -b ''" create -f raw -b '' t.raw 1M
[ ! -e "$T/k/t.qcow2" ] && [ ! -e "$T/k/t.raw" ] || fail "create -b '' left an image"
pass

say "bug 4: io alloc clamps at the end of the image"
small_image() {
  qemu-img create -q -f qcow2 a.qcow2 1M
  qemu-io -c "write 0 64k" a.qcow2
}
twin_setup small_image
io_twin "alloc" a.qcow2 -c "alloc 1M" -c "alloc 2M" -c "alloc 960k 128k" -c "alloc 0 2M" \
  -c "alloc 4M 512" -c "alloc 0 64k"

say "bug 5: discard on a v2 overlay never resurrects backing data"
v2_overlay() {
  qemu-img create -q -f qcow2 -o compat=0.10 b.qcow2 1M
  qemu-io -c "write -P 0x55 0 1M" b.qcow2
  qemu-img create -q -f qcow2 -o compat=0.10 -b b.qcow2 -F qcow2 o.qcow2
  qemu-io -c "write -P 0x66 0 192k" o.qcow2
}
twin_setup v2_overlay
io_twin "discard on v2 overlay" o.qcow2 -c "discard 0 128k" -c "discard 0 1M" -c "read -P 0x66 0 192k"
same_content "discard on v2 overlay" o.qcow2
same_map "discard on v2 overlay" o.qcow2
clean "discard on v2 overlay" o.qcow2

finish
