#!/usr/bin/env bash
# Writes the seed corpora of the fuzz targets into OUT/<target>/: small qcow2 images made with
# qemu-img and qemu-io (512 B to 16 KiB clusters, v2 and v3, every refcount width class, extended
# L2, zstd, compressed clusters, snapshots, bitmaps, a backing file, lazy refcounts, a dirty
# image, an external data file), the write target's images with an operation script appended,
# and NBD client transcripts (handshakes, options and requests). Nothing here is committed: the
# seeds are rebuilt at fuzz time.
# Usage: make_corpus.sh OUT
set -euo pipefail
OUT=$(realpath -m "${1:?usage: $0 OUT}")
HERE=$(dirname "$(realpath "$0")")
W=$(mktemp -d /tmp/keel-corpus.XXXXXX)
trap 'rm -rf "$W"' EXIT
cd "$W"
mkdir -p "$OUT"/{open_info,check,read,write,nbd,luks_header}

img() {  # img NAME SIZE CREATE-OPTIONS [qemu-io commands...]
  local name=$1 size=$2 opts=$3; shift 3
  qemu-img create -q -f qcow2 -o "$opts" "$name.qcow2" "$size"
  local c args=()
  for c in "$@"; do args+=(-c "$c"); done
  [ ${#args[@]} -eq 0 ] || qemu-io -f qcow2 "${args[@]}" "$name.qcow2" >/dev/null
}
fill="write -P 0x11 0 3k"
more="write -P 0x22 40k 2k"
img v3_512 1M cluster_size=512 "$fill" "$more" "discard 1k 512" "write -z 2k 512"
img v2_512 1M cluster_size=512,compat=0.10 "$fill" "$more" "write -z 40k 512"
img v3_4k 2M cluster_size=4096 "$fill" "$more" "write -P 0x33 1M 8k"
img rc1 1M cluster_size=512,refcount_bits=1 "$fill" "$more"
img rc8 1M cluster_size=1024,refcount_bits=8 "$fill"
img rc64 1M cluster_size=512,refcount_bits=64 "$fill" "$more"
img lazy 1M cluster_size=512,lazy_refcounts=on "$fill"
img extl2 1M cluster_size=16k,extended_l2=on "write -P 0x44 0 3k" "write -P 0x55 20k 1k" "write -z 24k 2k"
img zstd 1M cluster_size=4096,compression_type=zstd "write -c -P 0x66 0 4k" "$more"
img zlib 1M cluster_size=4096 "write -c -P 0x77 0 4k" "write -c -P 0x78 8k 4k" "$more"
img empty 64k cluster_size=512
img big_l1 64M cluster_size=512 "write -P 0x12 63M 1k"
head -c 65536 /dev/zero | tr '\0' '\1' >base.raw
qemu-img create -q -f qcow2 -o cluster_size=512 -b base.raw -F raw backed.qcow2 64k
qemu-io -f qcow2 -c "write -P 0x21 1k 1k" backed.qcow2 >/dev/null
img snap 1M cluster_size=512 "$fill"
qemu-img snapshot -c first snap.qcow2
qemu-io -f qcow2 -c "write -P 0x31 0 1k" snap.qcow2 >/dev/null
qemu-img snapshot -c second snap.qcow2
img bitmap 1M cluster_size=4096 "$fill"
qemu-img bitmap --add bitmap.qcow2 b0
qemu-img bitmap --add -g 65536 bitmap.qcow2 b1
qemu-img create -q -f qcow2 -o cluster_size=4096,data_file=base.raw datafile.qcow2 64k
qemu-io -f qcow2 -c "write -P 0x41 0 4k" datafile.qcow2 >/dev/null
# A dirty image: lazy refcounts and a write that was never flushed on close.
img dirty 1M cluster_size=512,lazy_refcounts=on
(qemu-io -f qcow2 -c "write -P 0x51 0 2k" -c "abort" dirty.qcow2 >/dev/null 2>&1 || true) 2>/dev/null
# A leaked cluster and a bad refcount, for check.
cp v3_512.qcow2 leak.qcow2
python3 - leak.qcow2 <<'PY'
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(0, 2); f.write(b"\0" * 512)   # a cluster nobody references
PY

# Damaged images (issue 13): a metadata cluster's refcount at 0, an L2 entry pointed at
# metadata, a zeroed refcount table entry; the write target must never put guest data there.
DAMAGE="python3 $HERE/../interop/overlap_damage.py"
for kind in main-header active-l1 refcount-table refcount-block active-l2; do
  cp v3_512.qcow2 "dmg_rc0_$kind.qcow2"; $DAMAGE "dmg_rc0_$kind.qcow2" refcount0 $kind >/dev/null
  cp rc64.qcow2 "dmg64_rc0_$kind.qcow2"; $DAMAGE "dmg64_rc0_$kind.qcow2" refcount0 $kind >/dev/null
  cp rc1.qcow2 "dmg1_rc0_$kind.qcow2"; $DAMAGE "dmg1_rc0_$kind.qcow2" refcount0 $kind >/dev/null
done
for kind in active-l1 refcount-table refcount-block; do
  cp v3_512.qcow2 "dmg_l2_$kind.qcow2"; $DAMAGE "dmg_l2_$kind.qcow2" l2point $kind 0 >/dev/null
done
for kind in snapshot-table inactive-l1 inactive-l2; do
  cp snap.qcow2 "dmg_snap_$kind.qcow2"; $DAMAGE "dmg_snap_$kind.qcow2" refcount0 $kind >/dev/null
done
cp bitmap.qcow2 dmg_bitmap_dir.qcow2; $DAMAGE dmg_bitmap_dir.qcow2 refcount0 bitmap-directory >/dev/null
cp v3_512.qcow2 dmg_reftable0.qcow2; $DAMAGE dmg_reftable0.qcow2 reftable0 >/dev/null

for f in *.qcow2; do
  for t in open_info check read; do cp "$f" "$OUT/$t/$f"; done
done
# The write target: each image followed by 32 bytes of operations (kind, length, u16 position),
# two seeds per image. One python3 for all of them (a start per seed cost ~10 CPU-s in all).
python3 - "$OUT/write" *.qcow2 <<'PY'
import random, sys
out = sys.argv[1]
for f in sys.argv[2:]:
    image = open(f, "rb").read()
    for s in "12":
        r = random.Random(f + s)
        with open(f"{out}/{f}.{s}", "wb") as w:
            w.write(image + bytes(r.randrange(256) for _ in range(32)))
PY

python3 "$HERE/nbd_seeds.py" "$OUT/nbd"
echo "corpus: $(find "$OUT" -type f | wc -l) files in $OUT"

# luks_header: the LUKS regions of qemu-img-made encrypted images (two cipher setups). When
# qemu-img cannot calibrate PBKDF2 on this machine (qemu_luks.bash) the seed is left out, with a
# warning: the target still starts from its saved findings and the dictionary.
source "$HERE/../interop/qemu_luks.bash"
for c in "" ",encrypt.cipher-alg=aes-128,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv,encrypt.hash-alg=sha1"; do
  rm -f luks.qcow2
  if ! qemu_img_create_luks -q -f qcow2 --object secret,id=s,data=fuzz \
      -o "encrypt.format=luks,encrypt.key-secret=s,encrypt.iter-time=10$c" luks.qcow2 1M; then
    echo "make_corpus: warning: no LUKS seed for '$c' (qemu-img create failed)" >&2
    continue
  fi
  python3 - "$OUT/luks_header/region$(echo "$c" | cksum | cut -c1-8)" <<'PY'
import struct, sys
d = open("luks.qcow2", "rb").read()
off = struct.unpack_from(">I", d, 100)[0]  # header_length: the extensions follow
while True:
    t, n = struct.unpack_from(">II", d, off)
    if t in (0, 0x0537BE77):
        break
    off += 8 + (n + 7) // 8 * 8
o, n = struct.unpack_from(">QQ", d, off + 8)
open(sys.argv[1], "wb").write(d[o:o + n])
PY
done
