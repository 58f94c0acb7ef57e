#!/usr/bin/env bash
# Proves `keel measure` computes what `qemu-img measure` computes: for new images of many sizes
# (--size, 0 to 10T) and every qcow2 layout option that changes the metadata size (cluster sizes
# 512..2M, refcount widths 1..64, extended L2, compat, preallocation, backing file), and for
# QEMU-made source images (qcow2 v2/v3, with a backing file, with compressed and zero clusters,
# with persistent bitmaps, an internal snapshot via -l, raw), keel prints the same "required
# size" / "fully allocated size" / "bitmaps size" lines, the same --output=json, and the same
# errors with the same exit codes. Then it creates images keel measured and checks that
# qemu-img convert of the source into a qcow2 of that layout fits "required" (so the numbers are
# not only equal but right).
# Usage: bash parity_measure.sh /path/to/keel
set -euo pipefail
: "${KEEL_CLI_TEST_TIMEOUT:=400}"
export KEEL_CLI_TEST_TIMEOUT
HERE=$(dirname "$(realpath "$0")")
source "$HERE/cli_lib.bash"
source "$HERE/parity_lib.bash"

# Source images. Writes fill whole 64k clusters: qemu-img counts the zero tail of a partly
# written cluster as free when the image file has a hole there, keel counts the cluster
# (docs/cli.md).
make_sources() {
  qemu-img create -q -f qcow2 src.qcow2 64M
  qemu-io -c 'write -P 0x11 0 1M' -c 'write -P 0x12 5M 192k' -c 'write -z 8M 1M' src.qcow2
  qemu-io -c 'write -c -P 0x13 20M 64k' -c 'write -P 0x14 63M 1M' src.qcow2
  qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 16M
  qemu-io -c 'write -P 0x21 1M 2M' v2.qcow2
  qemu-img create -q -f qcow2 -b src.qcow2 -F qcow2 over.qcow2
  qemu-io -c 'write -P 0x31 2M 128k' over.qcow2
  qemu-img create -q -f qcow2 bm.qcow2 5M
  qemu-io -c 'write -P 0x41 0 1M' bm.qcow2
  qemu-img bitmap --add -g 4096 bm.qcow2 fine
  qemu-img bitmap --add bm.qcow2 "a longer bitmap name"
  cp src.qcow2 snap.qcow2
  qemu-img snapshot -c s1 snap.qcow2
  qemu-io -c 'write -P 0x51 30M 4M' snap.qcow2
  qemu-img convert -O raw src.qcow2 src.raw
}
twin_setup make_sources

say "new images (--size) in every layout"
for size in 0 512 1000 64k 1M 1G 100G 10T; do
  twin_run "raw --size $size" measure --size "$size"
  for o in "" cluster_size=512 cluster_size=4k cluster_size=2M refcount_bits=1 refcount_bits=64 \
           extended_l2=on extended_l2=on,cluster_size=2M compat=0.10 preallocation=metadata \
           preallocation=falloc preallocation=full backing_file=x.qcow2 lazy_refcounts=on; do
    if [ "$size" = 10T ] && [[ $o == cluster_size=512 || $o == cluster_size=4k ]]; then
      twin_run "qcow2 --size $size -o $o (too large)" measure -O qcow2 ${o:+-o "$o"} --size "$size"
      continue
    fi
    twin_run "qcow2 --size $size ${o:+-o $o}" measure -O qcow2 ${o:+-o "$o"} --size "$size"
  done
done
twin_run "json, qcow2" measure --output=json -O qcow2 --size 1G
twin_run "json, raw" measure --output=json -O raw --size 1G
twin_run "two -o" measure -O qcow2 -o cluster_size=4k -o refcount_bits=8 --size 1G
twin_run "--size given twice" measure -O qcow2 --size 1G --size 2G

say "existing images"
for src in src.qcow2 v2.qcow2 over.qcow2 bm.qcow2 src.raw; do
  for o in "" cluster_size=4k cluster_size=512 cluster_size=2M compat=0.10 refcount_bits=64 \
           extended_l2=on preallocation=full backing_file=x.qcow2; do
    twin_run "$src -o $o" measure -O qcow2 ${o:+-o "$o"} "$src"
  done
  twin_run "$src to raw" measure "$src"
  twin_run "$src, json" measure --output=json -O qcow2 "$src"
  twin_run "$src -U" measure -U -O qcow2 "$src"
done
twin_run "raw read as raw" measure -f raw -O qcow2 src.raw
twin_run "snapshot -l s1" measure -l s1 -O qcow2 snap.qcow2
twin_run "active layer with a snapshot" measure -O qcow2 snap.qcow2

say "the numbers are right: qemu-img convert fits 'required'"
for o in "" cluster_size=4k refcount_bits=1 extended_l2=on; do
  (cd "$T/k" && "$KEEL" measure --output=json -O qcow2 ${o:+-o "$o"} src.qcow2) >"$T/k.json" ||
    fail "keel measure src.qcow2 -o $o failed"
  required=$(sed -n 's/.*"required": \([0-9]*\).*/\1/p' "$T/k.json")
  rm -f "$T/k/conv.qcow2"
  (cd "$T/k" && run_ok "qemu-img convert -o $o" qemu-img convert -O qcow2 ${o:+-o "$o"} src.qcow2 conv.qcow2)
  used=$(stat -c %s "$T/k/conv.qcow2")
  [ "$used" -le "$required" ] || fail "-o $o: converted file is $used bytes, keel measured $required"
  pass
done

say "errors"
twin_run "neither --size nor a file" measure -O qcow2
twin_run "--size and a file" measure --size 1G src.qcow2
twin_run "two files" measure src.qcow2 src.qcow2
twin_run "-f without a file" measure -f qcow2 --size 1G
twin_run "-l without a file" measure -l s1 --size 1G
twin_run "unknown target format" measure -O foo --size 1G
twin_run "bad --output" measure --output=xml --size 1G
twin_run "bad size" measure --size abc
twin_run "negative size" measure --size -1
twin_run "size too large" measure --size 9E
twin_run "image too large for its clusters" measure -O qcow2 -o cluster_size=512 --size 1T
for o in foo=bar help cluster_size=3k refcount_bits=3 compat=2 compat=0.10,refcount_bits=8 \
         extended_l2=on,cluster_size=4k preallocation=xx lazy_refcounts=x cluster_size=abc; do
  twin_run "qcow2 -o $o" measure -O qcow2 -o "$o" --size 1G
done
twin_run "raw -o foo=1" measure -O raw -o foo=1 --size 1G
twin_run "missing snapshot" measure -l nope -O qcow2 snap.qcow2
twin_rc "missing file" measure -O qcow2 missing.qcow2
finish
