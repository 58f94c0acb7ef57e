#!/usr/bin/env bash
# Proves keel refuses the images and locks QEMU refuses with QEMU 7.2's words (issue 16): unknown
# incompatible feature bits named from the image's own feature-name table or as a hex mask
# ("Unsupported qcow2 feature(s): ..."), the header fields whose QEMU message names the value
# (cluster size, encryption method, compression type and its bit, version), and an image another
# process holds ('Failed to get "write" lock' / 'Is another process using the image'). On twins,
# qemu-img/qemu-io and keel print the same lines with the same exit code, and neither changes
# the image.
# Usage: bash parity_open_errors.sh /path/to/keel
set -euo pipefail
HERE=$(dirname "$(realpath "$0")")
source "$HERE/cli_lib.bash"
source "$HERE/parity_lib.bash"

# patch IMAGE OFFSET STRUCT-FORMAT VALUE: one big-endian header field replaced.
patch() {
  python3 - "$@" <<'PY'
import struct, sys
with open(sys.argv[1], "r+b") as f:
    f.seek(int(sys.argv[2], 0))
    f.write(struct.pack(sys.argv[3], int(sys.argv[4], 0)))
PY
}
# set_incompat IMAGE MASK: the header's incompatible_features field set to MASK (v3).
set_incompat() { patch "$1" 72 ">Q" "$2"; }

# name_bits IMAGE BIT=NAME...: appends incompatible-feature entries to the image's feature-name
# table extension (QEMU writes one in every v3 image with 64 KiB clusters; no backing file here).
name_bits() {
  python3 - "$@" <<'PY'
import struct, sys
path, specs = sys.argv[1], sys.argv[2:]
with open(path, "r+b") as f:
    c0 = bytearray(f.read(65536))
    off = struct.unpack(">I", c0[100:104])[0]
    out = bytearray(c0[:off])
    while True:
        t, n = struct.unpack(">II", c0[off:off + 8])
        if t == 0:
            break
        data = bytes(c0[off + 8:off + 8 + n])
        if t == 0x6803f857:
            for s in specs:
                bit, name = s.split("=", 1)
                data += struct.pack(">BB46s", 0, int(bit), name.encode())
        out += struct.pack(">II", t, len(data)) + data + b"\0" * (-len(data) % 8)
        off += 8 + (n + 7) // 8 * 8
    out += b"\0" * 8
    assert len(out) <= 65536
    f.seek(0)
    f.write(out + b"\0" * (65536 - len(out)))
PY
}

image() {
  qemu-img create -q -f qcow2 a.qcow2 1M
  qemu-io -c "write -P 0x11 0 64k" a.qcow2
  cp a.qcow2 bit5.qcow2 && set_incompat bit5.qcow2 0x20
  cp a.qcow2 bit63.qcow2 && set_incompat bit63.qcow2 0x8000000000000000
  cp a.qcow2 multi.qcow2 && set_incompat multi.qcow2 0x8000000000000060
  cp a.qcow2 named.qcow2 && name_bits named.qcow2 "6=future feature" && set_incompat named.qcow2 0x40
  cp a.qcow2 named2.qcow2 && name_bits named2.qcow2 "9=nine" "5=five" &&
    set_incompat named2.qcow2 0x8000000000000220
  cp a.qcow2 cbits30.qcow2 && patch cbits30.qcow2 20 ">I" 30
  cp a.qcow2 cbits8.qcow2 && patch cbits8.qcow2 20 ">I" 8
  cp a.qcow2 crypt3.qcow2 && patch crypt3.qcow2 32 ">I" 3
  cp a.qcow2 ctype2.qcow2 && patch ctype2.qcow2 104 ">B" 2
  cp a.qcow2 ctype1.qcow2 && patch ctype1.qcow2 104 ">B" 1
  cp a.qcow2 ctbit.qcow2 && set_incompat ctbit.qcow2 8
  cp a.qcow2 version4.qcow2 && patch version4.qcow2 4 ">I" 4
  md5sum ./*.qcow2 >sums
}

# unchanged DESC: every image in k/ is as setup left it (q/ too: the oracle changed nothing).
unchanged() {
  (cd "$T/q" && md5sum -c --quiet sums) || fail "$1: qemu's tools changed an image"
  (cd "$T/k" && md5sum -c --quiet sums) || fail "$1: keel changed an image"
  pass
}

say "unknown incompatible feature bits"
twin_setup image
for img in bit5 bit63 multi named named2; do
  twin_run "info $img" info "$img.qcow2"
  twin_run "info --output=json $img" info --output=json "$img.qcow2"
  twin_run "map $img" map "$img.qcow2"
  twin_run "check $img" check "$img.qcow2"
  io_twin "io read $img" -c "read 0 512" "$img.qcow2"
  io_twin "io -r read $img" -r -c "read 0 512" "$img.qcow2"
done
unchanged "after the refused opens"

say "header fields QEMU's message names"
for img in cbits30 cbits8 crypt3 ctype2 ctype1 ctbit version4; do
  twin_run "info $img" info "$img.qcow2"
  twin_run "check $img" check "$img.qcow2"
  io_twin "io read $img" -c "read 0 512" "$img.qcow2"
done
unchanged "after the refused opens"

say "an image another process holds"
twin_setup image
holders=()
# Each holder reads a sector and then sleeps: once its "read" line is out (stdout line-buffered),
# its open, with the permissions and locks it keeps, is complete. (Polling for a failing
# `qemu-img info` alone could catch a holder between the lock steps of its open.)
for d in q k; do
  (cd "$T/$d" && exec stdbuf -oL qemu-io -c "read 0 512" -c "sleep 60000" a.qcow2) >"$T/$d.holder" 2>&1 &
  holders+=($!)
done
for _ in $(seq 600); do
  grep -q "^read 512/512" "$T/q.holder" && grep -q "^read 512/512" "$T/k.holder" && break
  sleep 0.1
done
busy=0
for d in q k; do
  grep -q "^read 512/512" "$T/$d.holder" || fail "holder in $d/ did not open the image: $(cat "$T/$d.holder")"
  (cd "$T/$d" && qemu-img info a.qcow2) >/dev/null 2>&1 || busy=$((busy + 1))
done
[ $busy = 2 ] || fail "the holders did not take the image's lock"
twin_run "info while held" info a.qcow2
twin_run "check while held" check a.qcow2
twin_run "map while held" map a.qcow2
twin_run "info -U while held" info -U a.qcow2
io_twin "io write while held" -c "write 0 512" a.qcow2
io_twin "io -r read while held" -r -c "read 0 512" a.qcow2
io_twin "io -r -U read while held" -r -U -c "read -P 0x11 0 512" a.qcow2
twin_run "resize while held" resize a.qcow2 2M
for p in "${holders[@]}"; do kill "$p" 2>/dev/null || true; done
wait "${holders[@]}" 2>/dev/null || true
unchanged "after the refused opens"
finish
