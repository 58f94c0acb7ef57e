#!/usr/bin/env bash
# Proves `keel resize` behaves like `qemu-img resize`: on twins of QEMU-made qcow2 images of
# several shapes (v2, v3, 512-byte and 2M clusters, 1-bit and 64-bit refcounts, extended L2, an
# overlay with a backing file) and on raw images, keel and qemu-img grow (absolute and +N, past
# the L1 table's first cluster so that it must move), shrink (-N with and without "--", needs
# --shrink, also with internal snapshots) and preallocate with the same output and exit codes,
# shrinking deallocates and growing over a longer backing file zeroes like qemu-img (qemu-img map
# agrees), and 512-byte-cluster images grow to 3G; qemu-img check finds keel's
# image clean, qemu-img compare finds the twins identical and qemu-img info agrees. QEMU then
# writes to keel's resized image and reads everything back. Size and usage errors must match.
# Usage: bash parity_resize.sh /path/to/keel
set -euo pipefail
: "${KEEL_CLI_TEST_TIMEOUT:=850}"
export KEEL_CLI_TEST_TIMEOUT
HERE=$(dirname "$(realpath "$0")")
source "$HERE/cli_lib.bash"
source "$HERE/parity_lib.bash"

# NAME|create options|a large size in MiB to grow to (the L1 table must grow past its first cluster).
# 512-byte clusters stay at 256M here: qemu-img needs minutes to shrink them back from 2G. Their
# growth to 2G is tested below.
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

say "512-byte clusters grow to 2G (an L1 table of 1024 clusters, over several refcount blocks)"
# (Once "cluster allocation did not converge" in keel.) The shrink back is keel's alone: qemu-img
# takes minutes for it.
for OPTS in cluster_size=512 cluster_size=512,refcount_bits=1 cluster_size=512,refcount_bits=64; do
  twin_setup make_image
  twin_run "$OPTS: grow to 2G" resize a.qcow2 2G
  after "$OPTS: after growing to 2G"
  twin_run "$OPTS: grow to 3G" resize a.qcow2 3G
  after "$OPTS: after growing to 3G"
  both_do qemu-io -c 'write -P 0x21 3071M 1M' -c 'write -P 0x22 1G 64k' a.qcow2
  clean "$OPTS: QEMU writes into keel's grown image" a.qcow2
  reads_pattern "$OPTS: QEMU's write at the end" a.qcow2 0x21 3071M 1M
  (cd "$T/k" && run_ok "$OPTS: keel shrinks to 8M" "$KEEL" resize --shrink a.qcow2 8M)
  clean "$OPTS: after keel's shrink to 8M" a.qcow2
  reads_pattern "$OPTS: data before the end kept" a.qcow2 0x11 0 1M
  reads_pattern "$OPTS: zeros before the end kept" a.qcow2 0 2M 64k
done

say "v2 with a snapshot cannot be resized; v3 with a snapshot can grow and shrink"
make_snap() { qemu-img create -q -f qcow2 -o "$OPTS" a.qcow2 4M; qemu-img snapshot -c s a.qcow2; }
OPTS=compat=0.10
twin_setup make_snap
twin_run "v2 with snapshot" resize a.qcow2 8M
twin_run "v2 with snapshot: shrink" resize --shrink a.qcow2 2M
OPTS=compat=1.1
twin_setup make_snap
twin_run "v3 with snapshot: grow" resize a.qcow2 8M
after "v3 with snapshot: after growing"
make_snap_data() {
  qemu-img create -q -f qcow2 -o "$OPTS" a.qcow2 4M
  qemu-io -c 'write -P 0x51 0 4M' a.qcow2
  qemu-img snapshot -c s1 a.qcow2
  qemu-io -c 'write -P 0x52 1M 64k' -c 'write -P 0x53 3M 64k' a.qcow2
}
for OPTS in compat=1.1 cluster_size=4k extended_l2=on; do
  twin_setup make_snap_data
  twin_run "$OPTS with snapshot: shrink" resize --shrink a.qcow2 1M
  after "$OPTS with snapshot: after shrinking"
  same_map "$OPTS with snapshot: after shrinking" a.qcow2
  same_snapshots "$OPTS with snapshot: after shrinking" a.qcow2
  twin_run "$OPTS with snapshot: grow again" resize a.qcow2 6M
  after "$OPTS with snapshot: after growing again"
  same_map "$OPTS with snapshot: after growing again" a.qcow2
  reads_pattern "$OPTS with snapshot: the grown area is zeros" a.qcow2 0 1M 5M
  twin_run "$OPTS with snapshot: apply the 4M snapshot" snapshot -a s1 a.qcow2
  after "$OPTS with snapshot: after applying s1"
  reads_pattern "$OPTS with snapshot: the snapshot's data is back" a.qcow2 0x51 0 4M
done

say "shrink and grow map like qemu-img: the clusters past the end are deallocated"
OPTS=compat=1.1
twin_setup make_image
twin_run "shrink to 1M" resize --shrink a.qcow2 1M
same_map "after shrinking to 1M" a.qcow2
twin_run "grow to 6M" resize a.qcow2 6M
after "after growing to 6M"
same_map "after growing to 6M" a.qcow2

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

say "overlay: growing over a longer backing file zeroes the new area (v2 cannot)"
make_short_overlay() {
  qemu-img create -q -f qcow2 base.qcow2 4M
  qemu-io -c 'write -P 0x31 0 4M' base.qcow2
  qemu-img create -q -f qcow2 -o "$OPTS" -b base.qcow2 -F qcow2 a.qcow2 1M
  qemu-io -c 'write -P 0x32 512k 64k' a.qcow2
}
for OPTS in compat=1.1 cluster_size=4k extended_l2=on; do
  twin_setup make_short_overlay
  twin_run "$OPTS short overlay: grow" resize a.qcow2 3M
  after "$OPTS short overlay: after growing"
  same_map "$OPTS short overlay: after growing" a.qcow2
  reads_pattern "$OPTS short overlay: the new area is zeros" a.qcow2 0 1M 2M
  twin_run "$OPTS short overlay: shrink to an odd size" resize --shrink a.qcow2 1500k
  after "$OPTS short overlay: after shrinking"
  twin_run "$OPTS short overlay: grow past the backing file" resize a.qcow2 6M
  after "$OPTS short overlay: after growing past the backing file"
  reads_pattern "$OPTS short overlay: the new area is zeros again" a.qcow2 0 1536000 4755456
done
OPTS=compat=0.10
twin_setup make_short_overlay
twin_run "v2 short overlay: grow is refused" resize a.qcow2 3M
after "v2 short overlay: after the refused grow"

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
