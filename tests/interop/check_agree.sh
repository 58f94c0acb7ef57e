#!/usr/bin/env bash
# keel check and qemu-img check agree, byte for byte in JSON and by exit code, on images written
# by keel's own engine and by QEMU (several cluster sizes, refcount widths, extended L2, snapshots,
# compressed clusters, bitmaps, discards and zero writes); and on the repair recipes of
# qemu-qcow2-facts (c): after `keel check -r all`, qemu-img check finds every image clean.
#   bash tests/interop/check_agree.sh /path/to/keel
set -u
KEEL=${1:?usage: check_agree.sh /path/to/keel}
command -v qemu-img >/dev/null || { echo "SKIP: qemu-img not installed"; exit 0; }
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
cd "$DIR" || exit 1
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

same_check() {  # image, expected exit code [, "rc" to compare only exit codes]
  local img=$1 want=$2 k q krc qrc
  k=$("$KEEL" check --output=json "$img" 2>/dev/null); krc=$?
  q=$(qemu-img check --output=json "$img" 2>/dev/null); qrc=$?
  [ "$krc" = "$qrc" ] || fail "$img: keel check exit $krc, qemu-img check exit $qrc"
  [ "$krc" = "$want" ] || fail "$img: keel check exit $krc, expected $want"
  [ "${3:-json}" = rc ] || [ "$k" = "$q" ] || fail "$img: JSON differs: keel: $k  qemu-img: $q"
}

io_cmds=(-c "write -P 0xa1 0 192k" -c "write -P 0xa2 1M 64k" -c "write -P 0xa3 3M 8k"
         -c "write -z 4M 128k" -c "discard 64k 64k" -c "write -P 0xa4 7M 4k")

# Images written by keel.
n=0
for opts in "" "-o cluster_size=4096" "-o cluster_size=512,refcount_bits=1" "-o refcount_bits=64" \
            "-o cluster_size=32k,extended_l2=on" "-o compat=0.10" "-o lazy_refcounts=on"; do
  n=$((n + 1)); img=keel$n.qcow2
  "$KEEL" create -q -f qcow2 $opts "$img" 8M >/dev/null 2>&1 || { fail "keel create $opts"; continue; }
  "$KEEL" io "${io_cmds[@]}" "$img" >/dev/null 2>&1 || fail "keel io on $img ($opts)"
  same_check "$img" 0
done
# Snapshots by keel.
img=keel-snap.qcow2
"$KEEL" create -q -f qcow2 "$img" 8M >/dev/null 2>&1
"$KEEL" io -c "write -P 0xb1 0 1M" "$img" >/dev/null 2>&1
if "$KEEL" snapshot -c s1 "$img" >/dev/null 2>&1; then
  "$KEEL" io -c "write -P 0xb2 64k 64k" -c "write -P 0xb3 5M 64k" "$img" >/dev/null 2>&1
  same_check "$img" 0
else
  echo "note: keel snapshot -c not available; skipped"
fi
# Compressed clusters written by keel convert -c.
if "$KEEL" convert -c -O qcow2 keel2.qcow2 keel-comp.qcow2 >/dev/null 2>&1; then
  same_check keel-comp.qcow2 0
else
  echo "note: keel convert -c not available; skipped"
fi

# Images written by QEMU.
n=0
for opts in "" "-o cluster_size=4096" "-o cluster_size=512,refcount_bits=1" "-o cluster_size=32k,extended_l2=on" \
            "-o compat=0.10" "-o compression_type=zstd"; do
  n=$((n + 1)); img=qemu$n.qcow2
  qemu-img create -q -f qcow2 $opts "$img" 8M
  qemu-io "${io_cmds[@]}" "$img" >/dev/null
  same_check "$img" 0
done
qemu-img snapshot -c s1 qemu1.qcow2 && qemu-io -c "write -P 0xc1 0 64k" qemu1.qcow2 >/dev/null && same_check qemu1.qcow2 0
qemu-img bitmap --add qemu2.qcow2 b0 && qemu-io -c "write -P 0xc2 2M 64k" qemu2.qcow2 >/dev/null && same_check qemu2.qcow2 0
qemu-img convert -c -O qcow2 qemu2.qcow2 qemu-comp.qcow2 && same_check qemu-comp.qcow2 0

# The recipes of qemu-qcow2-facts (c), and what -r all makes of them.
poke() { printf "$3" | dd of="$1" bs=1 seek=$(($2)) conv=notrunc status=none; }
base() { rm -f "$1"; qemu-img create -q -f qcow2 "$1" 64M; qemu-io -c "write -P 0xaa 0 128k" -c "write -P 0xbb 1M 64k" "$1" >/dev/null; }
recipe() {  # name, expected exit code, poke offset, bytes
  local img=$1.qcow2
  base "$img"; poke "$img" "$3" "$4"
  same_check "$img" "$2" rc  # the counts may differ where keel names the damage itself
  "$KEEL" check -r all "$img" >/dev/null 2>&1 || fail "$1: keel check -r all did not end clean"
  qemu-img check "$img" >/dev/null 2>&1 || fail "$1: qemu-img check after keel's repair: $(qemu-img check "$img" 2>&1 | head -3)"
  qemu-io -c "read -P 0xaa 0 128k" "$img" | grep -q "Pattern verification failed" && fail "$1: guest 0..128k changed"
}
recipe leak 3 0x40080 '\0\0\0\0\0\0\0\0'
recipe refcount-zero 2 0x2000a '\0\0'
recipe double-reference 2 0x40080 '\x80\0\0\0\0\x05\0\0'
recipe points-at-l1 2 0x40080 '\x80\0\0\0\0\x03\0\0'
recipe past-eof 2 0x40080 '\x80\0\0\0\x01\0\0\0'

# A lazy-refcounts image left dirty by a crash: 6 corruptions, repaired in place.
rm -f lazy.qcow2
qemu-img create -q -f qcow2 -o lazy_refcounts=on lazy.qcow2 64M
( qemu-io -c "write -P 0x5a 0 512" -c "write -P 0x5b 2M 128k" -c "sigraise 9" lazy.qcow2; true ) >/dev/null 2>&1
same_check lazy.qcow2 2 rc
"$KEEL" check -r all lazy.qcow2 >/dev/null 2>&1 || fail "lazy: keel check -r all"
same_check lazy.qcow2 0
qemu-img info --output=json lazy.qcow2 | grep -q '"dirty-flag": false' || fail "lazy: dirty flag still set"

if [ "$failures" -gt 0 ]; then
  echo "$failures failure(s)"
  exit 1
fi
echo "PASS: keel check agrees with qemu-img check"
