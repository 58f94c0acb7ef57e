#!/usr/bin/env bash
# Proves `keel convert --salvage` behaves as qemu-img 7.2's: on twins, a source whose reads fail
# (blkdebug read_aio errors, a compressed cluster with damaged data) converts with exit 0, one
# "warning: error while reading offset N: Input/output error" per unreadable 512-byte sector
# (in order with -m 1; the same set with the default 8 requests, whose order depends on timing),
# a target that reads zeros exactly there (qemu-img compare of the two targets) and that qemu-img
# check finds clean; -q leaves the warnings out; without --salvage both fail with exit 1.
# Usage: bash parity_convert_salvage.sh /path/to/keel
set -euo pipefail
HERE=$(dirname "$(realpath "$0")")
source "$HERE/cli_lib.bash"
source "$HERE/parity_lib.bash"

images() {
  qemu-img create -q -f qcow2 a.qcow2 1M
  qemu-io -c 'write -P 0x11 0 128k' -c 'write -P 0x12 512k 4k' a.qcow2
  printf '[inject-error]\nevent = "read_aio"\nerrno = "5"\n' >always.conf
  printf '[inject-error]\nevent = "read_aio"\nerrno = "5"\nonce = "on"\n' >once.conf
  # A compressed image whose third cluster's compressed bytes are damaged: reads of it fail.
  python3 -c "open('src.raw','wb').write(b''.join(bytes([0x40 + i]) * 65536 for i in range(16)))"
  qemu-img convert -c -O qcow2 src.raw c.qcow2
  python3 - <<'EOF'
import struct
with open("c.qcow2", "r+b") as f:
    h = f.read(104)
    cluster_bits = struct.unpack(">I", h[20:24])[0]
    l1 = struct.unpack(">Q", h[40:48])[0]
    f.seek(l1)
    l2 = struct.unpack(">Q", f.read(8))[0] & 0x00FFFFFFFFFFFE00
    f.seek(l2 + 8 * 2)
    entry = struct.unpack(">Q", f.read(8))[0]
    assert entry >> 62 & 1, "cluster 2 is not compressed"
    f.seek(entry & ((1 << (62 - (cluster_bits - 8))) - 1))
    f.write(b"\xff" * 32)
EOF
}

# sorted_err: both stderrs sorted (the requests of -m 8 fail in an order that depends on timing).
sorted_err() {
  local qrc=0 krc=0
  (cd "$T/q" && qemu-img "$@") >"$T/q.out" 2>"$T/q.err" || qrc=$?
  (cd "$T/k" && "$KEEL" "$@") >"$T/k.out" 2>"$T/k.err" || krc=$?
  [ $qrc -eq $krc ] || fail "$*: qemu-img exited $qrc, keel $krc"
  as_keel <"$T/q.err" | sort >"$T/q.err.s"
  sort <"$T/k.err" >"$T/k.err.s"
  same_file "$*: stderr (sorted)" "$T/q.err.s" "$T/k.err.s"
  same_file "$*: stdout" "$T/q.out" "$T/k.out"
}

twin_setup images
say "blkdebug: every data read fails"
twin_run "salvage, -m 1" convert --salvage -m 1 -O qcow2 blkdebug:always.conf:a.qcow2 o.qcow2
[ "$(grep -c 'warning: error while reading offset' "$T/k.err")" -eq 384 ] || fail "expected 384 warnings (three allocated clusters)"
pass
same_content "salvage, -m 1" o.qcow2
clean "salvage, -m 1" o.qcow2
rm -f "$T"/{q,k}/o.qcow2
sorted_err convert --salvage -O qcow2 blkdebug:always.conf:a.qcow2 o.qcow2
same_content "salvage, -m 8" o.qcow2
twin_run "salvage -q" convert -q --salvage -O raw blkdebug:always.conf:a.qcow2 o.raw
same_file "salvage -q: raw targets" "$T/q/o.raw" "$T/k/o.raw"
twin_run "salvage, raw target, -m 1" convert --salvage -m 1 -O raw blkdebug:always.conf:a.qcow2 o.raw
same_file "salvage: raw targets" "$T/q/o.raw" "$T/k/o.raw"
twin_rc "no salvage: the read error ends it" convert -O qcow2 blkdebug:always.conf:a.qcow2 n.qcow2

say "blkdebug: the first read fails once; the sector-by-sector retry reads everything"
twin_run "salvage, once" convert --salvage -m 1 -O qcow2 blkdebug:once.conf:a.qcow2 p.qcow2
same_content "salvage, once: the whole source" p.qcow2 a.qcow2
same_content "salvage, once" p.qcow2

say "a damaged compressed cluster"
twin_run "salvage of a damaged image" convert --salvage -m 1 -O qcow2 c.qcow2 d.qcow2
[ "$(grep -c 'warning' "$T/k.err")" -eq 128 ] || fail "expected 128 warnings (one cluster)"
pass
same_content "damaged: targets" d.qcow2
clean "damaged: target" d.qcow2
twin_run "salvage of a damaged image, -c" convert --salvage -m 1 -c -O qcow2 c.qcow2 e.qcow2
same_content "damaged -c: targets" e.qcow2
twin_rc "damaged, no salvage" convert -O qcow2 c.qcow2 f.qcow2

finish
