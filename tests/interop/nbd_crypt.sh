#!/usr/bin/env bash
# Proves `keel serve` exports a LUKS-encrypted qcow2 image (--object secret + --image-opts
# encrypt.key-secret): data qemu-img writes through the export, in whole and unaligned pieces,
# reads back over NBD, and after the server stops qemu-img itself decrypts the same bytes from
# the image file and finds it clean. Run also with KEEL_SERVE_AIO=io_uring, whose direct I/O
# path must leave encrypted images to the engine. Then an image whose backing file is encrypted
# with another secret, given as backing.encrypt.key-secret in --image-opts as qemu-nbd takes it:
# reads over NBD equal qemu-img's reading of the chain, a partial-cluster write copies on write
# from the encrypted base and qemu-img reads it back; a missing backing secret fails at startup.
# Usage: bash nbd_crypt.sh /path/to/keel
set -euo pipefail
KEEL=$(realpath "${1:?usage: $0 /path/to/keel}")
source "$(dirname "$(realpath "$0")")/nbd_lib.bash"
nbd_setup crypt
SEC=(--object secret,id=sec0,data=s3cret)
uri() { echo "nbd+unix:///?socket=$1"; }

SIZE=$((8 << 20))
SRC=$T/src.raw
truncate -s $SIZE "$SRC"
for spec in "0 1024" "3000 77" "5000 1500"; do
  set -- $spec
  dd if=/dev/urandom of="$SRC" bs=1k seek="$1" count="$2" conv=notrunc status=none
done
IMG=$T/e.qcow2
OPTS="driver=qcow2,file.filename=$IMG,encrypt.key-secret=sec0"
qemu_img_create_luks -q -f qcow2 "${SEC[@]}" -o encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10 \
  "$IMG" $SIZE 2>"$T/create.err" || fail "qemu-img create: $(cat "$T/create.err")"

echo "== a wrong secret is refused at startup"
if "$KEEL" serve -k "$T/x.sock" --object secret,id=sec0,data=nope --image-opts "$OPTS" 2>"$T/err.txt"; then
  fail "keel serve started with a wrong passphrase"
fi
grep -q "Invalid password, cannot unlock any keyslot" "$T/err.txt" || fail "wrong-passphrase message: $(cat "$T/err.txt")"

echo "== qemu-img writes through the export"
S=$T/a.sock
timeout 30 "$KEEL" serve --fork --pid-file "$S.pid" -k "$S" -t "${SEC[@]}" --image-opts "$OPTS" \
  2>>"$T/serve.log" || fail "keel serve did not start"
PIDS+=("$(cat "$S.pid")")
timeout 120 qemu-img convert -n -f raw -O raw "$SRC" "$(uri "$S")" || fail "convert into the export"
timeout 120 qemu-io -f raw -c "write -P 0x7e 1234567 4321" "$(uri "$S")" >/dev/null || fail "unaligned write"
printf '\x7e%.0s' $(seq 4321) | dd of="$SRC" bs=1 seek=1234567 conv=notrunc status=none
timeout 120 qemu-img compare -f raw -F raw "$SRC" "$(uri "$S")" >/dev/null || fail "compare over NBD"
stop_server "$S"

echo "== qemu-img decrypts the image file"
qemu-img convert "${SEC[@]}" --image-opts "$OPTS" -O raw "$T/out.raw" || fail "qemu-img convert"
cmp -s "$SRC" "$T/out.raw" || fail "qemu-img reads other bytes than were written over NBD"
out=$(qemu-img check "${SEC[@]}" --image-opts "$OPTS" 2>&1) || fail "qemu-img check: $out"
grep -q "No errors were found" <<<"$out" || fail "qemu-img check: $out"

echo "== an encrypted backing file: backing.encrypt.key-secret"
SEC2=("${SEC[@]}" --object secret,id=sec1,data=base-pass)
BASE=$T/base.qcow2 TOP=$T/top.qcow2
qemu_img_create_luks -q -f qcow2 "${SEC2[@]}" -o encrypt.format=luks,encrypt.key-secret=sec1,encrypt.iter-time=10 \
  "$BASE" $SIZE 2>"$T/create.err" || fail "qemu-img create base: $(cat "$T/create.err")"
BOPTS="driver=qcow2,file.filename=$BASE,encrypt.key-secret=sec1"
qemu-img convert -n "${SEC2[@]}" -f raw "$SRC" --target-image-opts "$BOPTS" || fail "fill the base"
qemu_img_create_luks -q -f qcow2 "${SEC2[@]}" -o encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10 \
  -b "$BASE" -F qcow2 "$TOP" 2>"$T/create.err" || fail "qemu-img create top: $(cat "$T/create.err")"
TOPTS="driver=qcow2,file.filename=$TOP,encrypt.key-secret=sec0,backing.encrypt.key-secret=sec1"
if "$KEEL" serve -k "$T/y.sock" "${SEC2[@]}" --image-opts "driver=qcow2,file.filename=$TOP,encrypt.key-secret=sec0" \
  2>"$T/err.txt"; then
  fail "keel serve started without the backing file's secret"
fi
grep -q "Parameter 'encrypt.key-secret' is required for cipher" "$T/err.txt" ||
  fail "missing backing secret message: $(cat "$T/err.txt")"
S=$T/b.sock
timeout 30 "$KEEL" serve --fork --pid-file "$S.pid" -k "$S" -t "${SEC2[@]}" --image-opts "$TOPTS" \
  2>>"$T/serve.log" || fail "keel serve of the chain did not start"
PIDS+=("$(cat "$S.pid")")
timeout 120 qemu-img compare -f raw -F raw "$SRC" "$(uri "$S")" >/dev/null || fail "the encrypted base over NBD"
timeout 120 qemu-io -f raw -c "write -P 0x6d 3100000 5000" "$(uri "$S")" >/dev/null || fail "partial-cluster write"
printf '\x6d%.0s' $(seq 5000) | dd of="$SRC" bs=1 seek=3100000 conv=notrunc status=none
timeout 120 qemu-img compare -f raw -F raw "$SRC" "$(uri "$S")" >/dev/null || fail "compare after the write"
stop_server "$S"
qemu-img convert "${SEC2[@]}" --image-opts "$TOPTS" -O raw "$T/out2.raw" || fail "qemu-img convert of the chain"
cmp -s "$SRC" "$T/out2.raw" || fail "qemu-img reads other bytes from the chain than were written over NBD"
out=$(qemu-img check "${SEC2[@]}" --image-opts "$TOPTS" 2>&1) || fail "qemu-img check of the top: $out"
grep -q "No errors were found" <<<"$out" || fail "qemu-img check of the top: $out"
echo "PASS: nbd_crypt"
