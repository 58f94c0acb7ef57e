#!/usr/bin/env bash
# Proves keel behaves like QEMU's tools where issue 16 found it did not, each case on twins (the
# same QEMU-made image in q/ and k/; qemu-img or qemu-io in q/, keel in k/: same output lines,
# exit code and image afterwards): amend compat=1.1 of a v2 image with short snapshot extra data
# rewrites the table (bug 1); rebase -u -b "" of a v2 image keeps unknown header extensions
# (bug 2); create -b '' is refused (bug 3); io's alloc clamps at the end of the image (bug 4);
# discard on a v2 overlay never brings the backing data back (bug 5); repeated options take the
# last value (-f, -O, -t, -F, --cache).
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

say "repeated options take the last value"
twin_setup small_image
twin_run "create -f raw -f qcow2" create -f raw -f qcow2 r.qcow2 1M
same_info "create -f raw -f qcow2" r.qcow2
twin_run "create -F raw -F qcow2" create -f qcow2 -b a.qcow2 -F raw -F qcow2 ov.qcow2
same_info "create -F raw -F qcow2" ov.qcow2
twin_run "check -f raw -f qcow2" check -f raw -f qcow2 a.qcow2
twin_run "convert -O raw -O qcow2 -t none -t unsafe" convert -f raw -f qcow2 -O raw -O qcow2 \
  -t none -t unsafe a.qcow2 c.qcow2
same_info "convert -O raw -O qcow2" c.qcow2
same_content "convert -O raw -O qcow2" c.qcow2
io_twin "io -f raw -f qcow2 --cache" a.qcow2 -f raw -f qcow2 -t writethrough -t writeback -c "read -P 0xcd 0 64k"

say "invoked as qemu-img / qemu-io / qemu-nbd through a symlink: that tool, with its name"
mkdir -p "$T/bin"
for tool in qemu-img qemu-io qemu-nbd; do ln -sf "$KEEL" "$T/bin/$tool"; done
# as_tool DESC TOOL ARGS...: the real TOOL and the symlink print the same (no renaming).
as_tool() {
  local desc=$1 tool=$2; shift 2
  local qrc=0 krc=0
  (cd "$T/q" && "$tool" "$@") >"$T/q.out" 2>"$T/q.err" || qrc=$?
  (cd "$T/k" && "$T/bin/$tool" "$@") >"$T/k.out" 2>"$T/k.err" || krc=$?
  [ $qrc -eq $krc ] || { cat "$T/q.err" "$T/k.err" >&2; fail "$desc: $tool exited $qrc, keel as $tool $krc"; }
  normalize_io <"$T/q.out" >"$T/q.out.n"
  normalize_io <"$T/k.out" >"$T/k.out.n"
  same_file "$desc: stdout" "$T/q.out.n" "$T/k.out.n"
  same_file "$desc: stderr" "$T/q.err" "$T/k.err"
}
twin_setup small_image
as_tool "qemu-img create -b ''" qemu-img create -f qcow2 -b '' t.qcow2 1M
as_tool "qemu-img usage error" qemu-img create -f qcow2
as_tool "qemu-img info" qemu-img info --output=json -f raw -f qcow2 a.qcow2
as_tool "qemu-io read" qemu-io -c "read -P 0xcd 0 64k" a.qcow2
as_tool "qemu-io without a file" qemu-io -c "read 0 512"
as_tool "qemu-io open failure" qemu-io -c "read 0 512" nonexist.qcow2
krc=0
(cd "$T/k" && "$T/bin/qemu-nbd" -f qcow2 nonexist.qcow2) >/dev/null 2>"$T/k.err" || krc=$?
[ $krc -ne 0 ] && grep -q '^qemu-nbd: ' "$T/k.err" || fail "keel as qemu-nbd: exit $krc, $(cat "$T/k.err")"
pass

say "keel --help lists the supported formats as qemu-img does"
"$KEEL" --help >"$T/help.out" 2>&1 || true
grep -qx 'Supported formats: qcow2 raw' "$T/help.out" || fail "keel --help has no 'Supported formats:' line"
pass
finish
