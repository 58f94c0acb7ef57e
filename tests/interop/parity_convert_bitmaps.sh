#!/usr/bin/env bash
# Proves `keel convert --bitmaps [--skip-broken-bitmaps]` copies persistent bitmaps as qemu-img
# 7.2 does: on twins, the target lists the same bitmaps (names, granularity, enabled or not, in
# the same order: qemu-img info) with the same dirty bits (qemu-nbd -B, nbdinfo --map), is clean
# for qemu-img check, and every refusal (raw or v2 target, raw or v2 source, several sources, an
# in-use bitmap, a name the -n target already has, --skip-broken-bitmaps alone) gives qemu-img's
# message and exit code.
# Usage: bash parity_convert_bitmaps.sh /path/to/keel
set -euo pipefail
HERE=$(dirname "$(realpath "$0")")
source "$HERE/cli_lib.bash"
source "$HERE/parity_lib.bash"

images() {
  qemu-img create -q -f qcow2 s.qcow2 4M
  qemu-io -c "write -P 1 0 64k" s.qcow2
  qemu-img bitmap --add s.qcow2 b1
  qemu-img bitmap --add -g 128k --disable s.qcow2 b2
  qemu-io -c "write -P 2 1M 64k" -c "write -P 3 3M 4k" s.qcow2
  qemu-img bitmap --add -g 512k s.qcow2 b3
  qemu-io -c "write -P 4 2M 64k" s.qcow2
  qemu-img create -q -f raw r.raw 4M
  qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 4M
  qemu-img create -q -f qcow2 n.qcow2 4M
  qemu-img bitmap --add n.qcow2 b2
  # b1 left in use, as by a writer killed while it tracked writes
  cp s.qcow2 bad.qcow2
  python3 - <<'EOF'
import struct
with open("bad.qcow2", "r+b") as f:
    h = f.read(4096)
    off = struct.unpack(">I", h[100:104])[0]
    while True:
        t, l = struct.unpack(">II", h[off:off + 8])
        assert t != 0, "no bitmaps extension"
        if t == 0x23852875:
            _, _, _, dir_off = struct.unpack(">IIQQ", h[off + 8:off + 32])
            break
        off += 8 + ((l + 7) & ~7)
    f.seek(dir_off + 12)
    flags = struct.unpack(">I", f.read(4))[0]
    f.seek(dir_off + 12)
    f.write(struct.pack(">I", flags | 1))
EOF
}

twin_setup images
say "the bitmaps of a qcow2 source reach the target"
for args in "-O qcow2" "-O qcow2 -c" "-O qcow2 -o cluster_size=4k" "-O qcow2 -m 1"; do
  rm -f "$T"/{q,k}/t.qcow2
  # shellcheck disable=SC2086
  twin_run "convert --bitmaps $args" convert --bitmaps $args s.qcow2 t.qcow2
  same_info "convert --bitmaps $args" t.qcow2
  same_bits "convert --bitmaps $args" t.qcow2 b1 b2 b3
  same_content "convert --bitmaps $args" t.qcow2 s.qcow2
  clean "convert --bitmaps $args" t.qcow2
done

say "refusals"
twin_run "raw target" convert --bitmaps -O raw s.qcow2 t.raw
twin_run "v2 target" convert --bitmaps -O qcow2 -o compat=0.10 s.qcow2 t2.qcow2
twin_run "raw source" convert --bitmaps -O qcow2 r.raw t3.qcow2
twin_run "v2 source" convert --bitmaps -O qcow2 v2.qcow2 t3.qcow2
twin_run "two sources" convert --bitmaps -O qcow2 s.qcow2 s.qcow2 t3.qcow2
twin_run "skip-broken alone" convert --skip-broken-bitmaps -O qcow2 s.qcow2 t3.qcow2
twin_run "in-use bitmap" convert --bitmaps -O qcow2 bad.qcow2 t4.qcow2
[ ! -e "$T/k/t4.qcow2" ] || fail "in-use bitmap: keel created the target"
pass
twin_run "-n into a target that has b2" convert -n --bitmaps -O qcow2 s.qcow2 n.qcow2
same_info "-n into a target that has b2" n.qcow2
clean "-n target" n.qcow2

say "--skip-broken-bitmaps: the in-use bitmap is left out with a warning"
twin_run "skip broken" convert --bitmaps --skip-broken-bitmaps -O qcow2 bad.qcow2 t5.qcow2
same_info "skip broken" t5.qcow2
same_bits "skip broken" t5.qcow2 b2 b3
clean "skip broken" t5.qcow2

finish
