#!/usr/bin/env bash
# Proves `keel convert` copies by block status like `qemu-img convert`: -c of an empty 256 GiB
# image finishes at once (before, keel read every unallocated cluster: minutes), and -c, -m N and
# -W (parallel requests, out-of-order writes) give targets that qemu-img compare finds equal to
# the source, qemu-img check finds clean and qemu-img map maps like qemu-img's own target; the -m
# bounds give qemu-img's error and exit code.
# Usage: bash parity_convert_status.sh /path/to/keel
set -euo pipefail
HERE=$(dirname "$(realpath "$0")")
source "$HERE/cli_lib.bash"
source "$HERE/parity_lib.bash"

empty_image() { qemu-img create -q -f qcow2 e.qcow2 256G; }
# Data, zeros written over data, holes, a backing file, an odd size (not a cluster multiple).
mixed_image() {
  qemu-img create -q -f qcow2 base.qcow2 13000k
  qemu-io -c "write -P 0x21 0 2M" -c "write -P 0x22 9M 1M" base.qcow2
  qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 m.qcow2
  qemu-io -c "write -P 0x31 64k 192k" -c "write -z 1M 512k" -c "write -P 0x32 5M 3000k" \
    -c "write -P 0x33 12900k 100k" m.qcow2
}

say "convert -c of an empty 256 GiB image: block status, no reads (bug 6)"
twin_setup empty_image
start=$(date +%s)
run_ok "keel convert -c (bounded)" timeout 20 "$KEEL" convert -c -O qcow2 "$T/k/e.qcow2" "$T/k/c.qcow2"
secs=$(( $(date +%s) - start ))
[ "$secs" -le 10 ] || fail "keel convert -c of an empty 256G image took ${secs}s"
pass
run_ok "qemu-img convert -c" qemu-img convert -c -O qcow2 "$T/q/e.qcow2" "$T/q/c.qcow2"
same_map "empty -c target" c.qcow2
same_info "empty -c target" c.qcow2
clean "empty -c target" c.qcow2
twin_run "uncompressed convert of the empty image" convert -O qcow2 e.qcow2 u.qcow2
same_map "empty target" u.qcow2
clean "empty target" u.qcow2

say "convert of a mixed chain: -c, -m 1, -m 16 -W, -S 0, raw"
twin_setup mixed_image
run_ok "source as raw" qemu-img convert -O raw "$T/q/m.qcow2" "$T/src.raw"
for args in "-c" "-c -m 1" "-c -m 16 -W" "-m 1" "-m 16 -W" "-m 3" "-S 0 -m 5 -W"; do
  # shellcheck disable=SC2086
  twin_run "convert $args" convert $args -O qcow2 m.qcow2 o.qcow2
  qcompare -f qcow2 -F raw "$T/k/o.qcow2" "$T/src.raw"
  clean "convert $args" o.qcow2
  same_map "convert $args" o.qcow2
done
twin_run "convert -m 4 -W to raw" convert -m 4 -W -O raw m.qcow2 o.raw
same_file "raw target" "$T/q/o.raw" "$T/k/o.raw"
say "concatenated sources, compressed"
twin_run "convert -c of two sources" convert -c -m 4 -O qcow2 m.qcow2 base.qcow2 cat.qcow2
clean "concatenated" cat.qcow2
same_content "concatenated" cat.qcow2
same_map "concatenated" cat.qcow2

say "-B: a backing file for the target; what the source's top layer does not allocate stays with it"
chain() {
  qemu-img create -q -f qcow2 bb.qcow2 4M
  qemu-io -c "write -P 1 0 4M" bb.qcow2
  qemu-img create -q -f qcow2 -b bb.qcow2 -F qcow2 ov.qcow2
  qemu-io -c "write -P 2 1M 64k" -c "write -z 2M 128k" -c "write -P 0 3M 64k" -c "write -P 3 3500k 10k" ov.qcow2
}
twin_setup chain
for args in "" "-c" "-m 1" "-W -m 16"; do
  # shellcheck disable=SC2086
  twin_run "convert $args -B" convert $args -O qcow2 -B bb.qcow2 -F qcow2 ov.qcow2 out.qcow2
  same_map "convert $args -B" out.qcow2
  same_info "convert $args -B" out.qcow2
  same_content "convert $args -B" out.qcow2
  clean "convert $args -B" out.qcow2
  rm -f "$T/q/out.qcow2" "$T/k/out.qcow2"
done
twin_run "convert -o backing_file" convert -O qcow2 -o backing_file=bb.qcow2,backing_fmt=qcow2 ov.qcow2 o2.qcow2
same_map "convert -o backing_file" o2.qcow2
twin_run "-B without -F" convert -O qcow2 -B bb.qcow2 ov.qcow2 o3.qcow2
twin_run "-B to raw" convert -O raw -B bb.qcow2 ov.qcow2 o3.raw
twin_run "-F without -B" convert -O qcow2 -F qcow2 ov.qcow2 o4.qcow2

say "-o encryption=off is accepted"
twin_run "convert -o encryption=off" convert -O qcow2 -o encryption=off ov.qcow2 o5.qcow2
same_info "convert -o encryption=off" o5.qcow2
twin_rc "convert -o encryption=on" convert -O qcow2 -o encryption=on ov.qcow2 o6.qcow2

say "-m bounds"
twin_run "-m 0" convert -m 0 -O qcow2 m.qcow2 bad.qcow2
twin_run "-m 17" convert -m 17 -O qcow2 m.qcow2 bad.qcow2
finish
