#!/usr/bin/env bash
# Proves `keel compare` behaves like `qemu-img compare`: over a set of QEMU-made images (qcow2
# and raw twins of the same content, images that differ in one byte, in one sector, past the
# end of a shorter image, in allocation only (zero clusters, compressed clusters, a backing
# file), and images of different sizes), keel compare and qemu-img compare print the same
# message and exit the same way (0 identical, 1 different, 2 open error) for every ordered pair,
# with and without -s (strict), -q, and -f/-F; keel also compares the results of other keel
# commands the way qemu-img does.
# Usage: bash parity_compare.sh /path/to/keel
set -euo pipefail
: "${KEEL_CLI_TEST_TIMEOUT:=400}"
export KEEL_CLI_TEST_TIMEOUT
HERE=$(dirname "$(realpath "$0")")
source "$HERE/cli_lib.bash"
source "$HERE/parity_lib.bash"

# Every write either fills whole clusters or lands in allocated ones: a copy-on-write that leaves
# holes in the image file makes qemu-img's block status (and so its strict mode) depend on the
# host file's sparseness, which keel does not look at (docs/cli.md).
make_set() {
  qemu-img create -q -f qcow2 a.qcow2 4M
  qemu-io -c 'write -P 0x11 0 1M' -c 'write -P 0x12 2M 128k' a.qcow2
  qemu-img convert -O raw a.qcow2 a.raw
  qemu-img convert -O qcow2 -o cluster_size=4k a.qcow2 a4k.qcow2
  qemu-img convert -c -O qcow2 a.qcow2 comp.qcow2
  cp a.qcow2 byte.qcow2; qemu-io -c 'write -P 0x77 1025000 1' byte.qcow2
  cp a.qcow2 sec0.qcow2; qemu-io -c 'write -P 0x33 300 1' sec0.qcow2
  cp a.qcow2 zero.qcow2; qemu-io -c 'write -z 3M 64k' zero.qcow2
  cp a.qcow2 zeroed.qcow2; qemu-io -c 'write -z 0 64k' zeroed.qcow2
  qemu-img create -q -f qcow2 big.qcow2 8M; qemu-io -c 'write -P 0x11 0 1M' -c 'write -P 0x12 2M 128k' big.qcow2
  cp big.qcow2 bigtail.qcow2; qemu-io -c 'write -P 0 5963776 64k' -c 'write -P 0x44 6000000 1' bigtail.qcow2
  cp big.qcow2 bigzero.qcow2; qemu-io -c 'write -z 5M 1M' bigzero.qcow2
  qemu-img create -q -f qcow2 -b a.qcow2 -F qcow2 over.qcow2; qemu-io -c 'write -P 0x11 0 64k' over.qcow2
  qemu-img create -q -f qcow2 -b a.qcow2 -F qcow2 overdiff.qcow2; qemu-io -c 'write -P 0 3M 64k' -c 'write -P 0x55 3146000 1' overdiff.qcow2
  qemu-img create -q -f qcow2 empty.qcow2 4M
  qemu-img create -q -f raw empty.raw 4M
  qemu-img create -q -f qcow2 zeros.qcow2 4M; qemu-io -c 'write -z 0 4M' zeros.qcow2
}

IMAGES=(a.qcow2 a.raw a4k.qcow2 comp.qcow2 byte.qcow2 sec0.qcow2 zero.qcow2 zeroed.qcow2 big.qcow2
        bigtail.qcow2 bigzero.qcow2 over.qcow2 overdiff.qcow2 empty.qcow2 empty.raw zeros.qcow2)

twin_setup make_set
say "every ordered pair of ${#IMAGES[@]} images, normal and strict"
for x in "${IMAGES[@]}"; do
  for y in "${IMAGES[@]}"; do
    twin_run "compare $x $y" compare "$x" "$y"
    twin_run "compare -s $x $y" compare -s "$x" "$y"
  done
done

say "options"
twin_run "quiet, different" compare -q a.qcow2 byte.qcow2
twin_run "quiet, identical" compare -q a.qcow2 a.raw
twin_run "quiet strict" compare -s -q a.qcow2 big.qcow2
twin_run "-f raw reads the qcow2 file as raw" compare -f raw a.qcow2 a.raw
twin_run "-f/-F right" compare -f qcow2 -F raw a.qcow2 a.raw
twin_run "-U" compare -U a.qcow2 a.raw
twin_run "-T none" compare -T none a.qcow2 a.raw
twin_run_progress "-p" compare -p a.qcow2 big.qcow2
TWIN_NORM=progress_norm twin_run "-p, different" compare -p a.qcow2 bigtail.qcow2

say "errors: exit 2 when an image cannot be opened, 1 on usage errors"
twin_rc "first image missing" compare missing.qcow2 a.qcow2
twin_rc "second image missing" compare a.qcow2 missing.qcow2
twin_rc "-F qcow2 on a raw image" compare -F qcow2 a.qcow2 a.raw
twin_run "unknown format" compare -f foo a.qcow2 a.raw
twin_run "one file" compare a.qcow2
twin_run "three files" compare a.qcow2 a.raw a.qcow2
finish
