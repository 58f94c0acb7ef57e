#!/usr/bin/env bash
# Proves `keel create -o encrypt.format=luks` and `keel convert` to and from LUKS-encrypted
# qcow2 make images QEMU opens: keel prints qemu-img's "Formatting" line; qemu-img info shows the
# chosen cipher; qemu-io's writes to a keel-made image read back through keel and keel io's
# writes through qemu-img; qemu-img check is clean; converted images (plain -> encrypted,
# encrypted -> plain, encrypted -> encrypted with another cipher) decrypt to the source's bytes;
# a missing key-secret, an unknown secret, -c with encryption and legacy AES give errors;
# convert -n --target-image-opts writes into an encrypted image qemu-img made; preallocation
# (metadata, falloc, full) lays out the image as qemu-img does (same qemu-img map, file length and
# check; the preallocated clusters read as the decryption of the file's zeros, the same bytes
# through keel and qemu-img), and written data reads back through QEMU.
# Usage: bash crypt_luks_create.sh /path/to/keel
set -euo pipefail
source "$(dirname "$(realpath "$0")")/cli_lib.bash"

SEC=(--object secret,id=sec0,data=pa55)
opts() { echo "driver=qcow2,file.filename=$1,encrypt.key-secret=sec0"; }
qraw() { run_ok "qemu-img convert $1" qemu-img convert "${SEC[@]}" --image-opts "$(opts "$1")" -O raw "$2"; }
qclean() {
  local out
  out=$(qemu-img check "${SEC[@]}" --image-opts "$(opts "$1")" 2>&1) || fail "qemu-img check $1: $out"
  grep -q "No errors were found on the image." <<<"$out" || fail "qemu-img check $1: $out"
  pass
}
EO=encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10

say "create: the Formatting line, then QEMU opens the image"
run_ok "keel create" "$KEEL" create -f qcow2 "${SEC[@]}" -o "$EO" k.qcow2 8M
kline=$(cat "$T/last.out")
qemu_img_create_luks -f qcow2 "${SEC[@]}" -o "$EO" q.qcow2 8M >q.line 2>q.err || fail "qemu-img create: $(cat q.err)"
same_text "Formatting line" "$(sed 's/q.qcow2/k.qcow2/' q.line)" "$kline"
qemu-img info k.qcow2 >info.txt || fail "qemu-img info of a keel-made LUKS image"
grep -q "cipher alg: aes-256" info.txt && grep -q "cipher mode: xts" info.txt && grep -q "encrypted: yes" info.txt ||
  fail "qemu-img info: $(cat info.txt)"
pass
qclean k.qcow2
run_ok "qemu-io writes into the keel-made image" qemu-io "${SEC[@]}" --image-opts "$(opts k.qcow2)" \
  -c "write -P 0x42 0 300k" -c "write -P 0x43 5M 1000"
run_ok "keel io writes into it too" "$KEEL" io "${SEC[@]}" --image-opts "$(opts k.qcow2)" \
  -c "write -P 0x44 100k 20k" -c "write -P 0x45 7M 64k"
run_ok "reference" qemu-img create -q -f qcow2 p.qcow2 8M
run_ok "reference writes" qemu-io -c "write -P 0x42 0 300k" -c "write -P 0x43 5M 1000" \
  -c "write -P 0x44 100k 20k" -c "write -P 0x45 7M 64k" p.qcow2
run_ok "reference raw" qemu-img convert -O raw p.qcow2 p.raw
qraw k.qcow2 k.raw
same_file "keel-made LUKS image after qemu-io and keel io writes" p.raw k.raw
run_ok "keel reads it" "$KEEL" convert "${SEC[@]}" --image-opts "$(opts k.qcow2)" -O raw kk.raw
same_file "keel reads its own LUKS image" p.raw kk.raw
qclean k.qcow2

say "other ciphers, as QEMU reads them"
for c in "encrypt.cipher-alg=serpent-256,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv,encrypt.ivgen-hash-alg=sha256,encrypt.hash-alg=sha512" \
         "encrypt.cipher-alg=twofish-128,encrypt.cipher-mode=ctr,encrypt.ivgen-alg=plain,encrypt.hash-alg=sha1" \
         "encrypt.cipher-alg=cast5-128,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=plain64,encrypt.hash-alg=ripemd160"; do
  rm -f c.qcow2
  run_ok "keel create ($c)" "$KEEL" create -q -f qcow2 "${SEC[@]}" -o "$EO,$c" c.qcow2 4M
  run_ok "keel io" "$KEEL" io "${SEC[@]}" --image-opts "$(opts c.qcow2)" -c "write -P 0x61 4000 70000"
  run_ok "qemu-io verifies" qemu-io "${SEC[@]}" --image-opts "$(opts c.qcow2)" -c "read -P 0x61 4000 70000" -c "read -P 0 0 4000"
  grep -q "Pattern verification failed" "$T/last.out" && fail "$c: qemu-io read other bytes: $(cat "$T/last.out")"
  qclean c.qcow2
done

say "convert: plain -> encrypted -> plain, encrypted -> another cipher"
run_ok "plain -> LUKS" "$KEEL" convert "${SEC[@]}" -f raw -O qcow2 -o "$EO" p.raw e1.qcow2
qraw e1.qcow2 e1.raw
same_file "raw -> LUKS qcow2" p.raw e1.raw
qclean e1.qcow2
run_ok "LUKS -> plain qcow2" "$KEEL" convert "${SEC[@]}" --image-opts "$(opts e1.qcow2)" -O qcow2 d.qcow2
run_ok "d raw" qemu-img convert -O raw d.qcow2 d.raw
same_file "LUKS -> plain qcow2" p.raw d.raw
run_ok "LUKS -> LUKS (cbc-essiv)" "$KEEL" convert "${SEC[@]}" --image-opts "$(opts e1.qcow2)" -O qcow2 \
  -o "$EO,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv" e2.qcow2
qraw e2.qcow2 e2.raw
same_file "LUKS -> LUKS" p.raw e2.raw

say "convert -n --target-image-opts: an encrypted target qemu-img made"
qemu_img_create_luks -q -f qcow2 "${SEC[@]}" -o "$EO" t.qcow2 "$(stat -c %s p.raw)" 2>c.err ||
  fail "qemu-img create: $(cat c.err)"
run_ok "keel convert -n --target-image-opts" "$KEEL" convert -n "${SEC[@]}" -f raw p.raw --target-image-opts "$(opts t.qcow2)"
qraw t.qcow2 t.raw
same_file "convert into an encrypted --target-image-opts target" p.raw t.raw
qclean t.qcow2
qrc=0 krc=0
qemu-img convert "${SEC[@]}" -f raw p.raw --target-image-opts "$(opts t.qcow2)" 2>q.err || qrc=$?
"$KEEL" convert "${SEC[@]}" -f raw p.raw --target-image-opts "$(opts t.qcow2)" 2>k.err || krc=$?
sed -i 's/^qemu-img: /keel: /' q.err
same_text "--target-image-opts without -n: exit code" "$qrc" "$krc"
same_text "--target-image-opts without -n: message" "$(cat q.err)" "$(cat k.err)"
krc=0
"$KEEL" convert -n --object secret,id=sec0,data=wrong -f raw p.raw --target-image-opts "$(opts t.qcow2)" 2>k.err || krc=$?
[ $krc = 1 ] && grep -q "Invalid password, cannot unlock any keyslot" k.err || fail "wrong target secret: rc $krc $(cat k.err)"
pass

say "preallocation of encrypted images, as qemu-img lays them out"
for mode in metadata falloc full; do
  rm -f "pk-$mode.qcow2" "pq-$mode.qcow2"
  run_ok "keel create preallocation=$mode" "$KEEL" create -q -f qcow2 "${SEC[@]}" -o "$EO,preallocation=$mode" "pk-$mode.qcow2" 3M
  qemu_img_create_luks -q -f qcow2 "${SEC[@]}" -o "$EO,preallocation=$mode" "pq-$mode.qcow2" 3M 2>c.err ||
    fail "qemu-img create preallocation=$mode: $(cat c.err)"
  for f in pk pq; do
    qemu-img map --output=json "${SEC[@]}" --image-opts "$(opts "$f-$mode.qcow2")" >"$f.map" || fail "qemu-img map $f-$mode"
  done
  same_file "qemu-img map of a preallocation=$mode image (keel vs qemu-img made)" pq.map pk.map
  same_text "file length, preallocation=$mode" "$(stat -c %s "pq-$mode.qcow2")" "$(stat -c %s "pk-$mode.qcow2")"
  qclean "pk-$mode.qcow2"
  qraw "pk-$mode.qcow2" kq.raw
  run_ok "keel convert pk-$mode" "$KEEL" convert "${SEC[@]}" --image-opts "$(opts "pk-$mode.qcow2")" -O raw pk.raw
  same_file "preallocated clusters read the same through keel and qemu-img ($mode)" kq.raw pk.raw
  run_ok "keel io writes into pk-$mode" "$KEEL" io "${SEC[@]}" --image-opts "$(opts "pk-$mode.qcow2")" \
    -c "write -P 0x44 65536 70000" -c "write -P 0x45 1048576 4096"
  run_ok "qemu-io reads keel's writes ($mode)" qemu-io "${SEC[@]}" --image-opts "$(opts "pk-$mode.qcow2")" \
    -c "read -P 0x44 65536 70000" -c "read -P 0x45 1048576 4096"
  grep -q "Pattern verification failed" "$T/last.out" && fail "qemu-io reads other bytes ($mode)"
  pass
  qclean "pk-$mode.qcow2"
done

say "errors"
errs_same() {  # errs_same WHAT ARGS...: qemu-img create and keel create: same stderr and exit code
  local what=$1 qrc=0 krc=0; shift
  rm -f x.qcow2
  qemu-img create -q -f qcow2 "$@" x.qcow2 1M 2>q.err >/dev/null || qrc=$?
  rm -f x.qcow2
  "$KEEL" create -q -f qcow2 "$@" x.qcow2 1M 2>k.err >/dev/null || krc=$?
  sed -i 's/^qemu-img: /keel: /' q.err
  [ $qrc -eq $krc ] || fail "$what: qemu-img exited $qrc, keel $krc"
  same_file "$what (stderr)" q.err k.err
}
errs_same "no key-secret" -o encrypt.format=luks
errs_same "unknown secret" "${SEC[@]}" -o encrypt.format=luks,encrypt.key-secret=nope
errs_same "bad cipher" "${SEC[@]}" -o encrypt.format=luks,encrypt.key-secret=sec0,encrypt.cipher-alg=foo
qrc=0; krc=0
qemu-img convert -c -O qcow2 "${SEC[@]}" -o "$EO" p.raw qc.qcow2 2>q.err || qrc=$?
"$KEEL" convert -c -O qcow2 "${SEC[@]}" -o "$EO" p.raw kc.qcow2 2>k.err || krc=$?
sed -i 's/^qemu-img: /keel: /' q.err
[ $qrc -eq 1 ] && [ $krc -eq 1 ] || fail "-c with encryption: qemu-img $qrc, keel $krc"
same_file "-c with encryption (stderr)" q.err k.err
[ ! -e kc.qcow2 ] || fail "-c with encryption created the target"
if "$KEEL" create -q -f qcow2 "${SEC[@]}" -o encrypt.format=aes,encrypt.key-secret=sec0 aes.qcow2 1M 2>k.err; then
  fail "keel created a legacy AES image"
fi
grep -q "AES-CBC encrypted qcow2 images is no longer supported" k.err || fail "AES create message: $(cat k.err)"
pass
finish
