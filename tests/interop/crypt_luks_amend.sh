#!/usr/bin/env bash
# Proves `keel amend -o encrypt.state=...` changes LUKS key slots as `qemu-img amend` does, both
# ways: after keel adds a slot qemu-io opens the image with the new secret (and the data reads
# back), after keel erases one qemu-io refuses the removed secret; after qemu-img adds and erases
# slots keel io opens with the new secret and refuses the removed one; --force overwrites an
# active slot; slots 6 and 7 (slot 6's entry spans two header sectors) work; qemu-img check is
# clean and keel info lists the same active slots as qemu-img info; every refusal (bad keyslot,
# missing or extra secret, the last slot, a wrong old secret, no encryption) is qemu-img's
# message and exit code on the same image.
# Usage: bash crypt_luks_amend.sh /path/to/keel
set -euo pipefail
source "$(dirname "$(realpath "$0")")/cli_lib.bash"

SEC=(--object secret,id=s0,data=pw-zero --object secret,id=s1,data=pw-one --object secret,id=s2,data=pw-two
     --object secret,id=s3,data=pw-three)
opts() { echo "driver=qcow2,file.filename=$1,encrypt.key-secret=${2:-s0}"; }
IT=encrypt.iter-time=10

# opens IMG SECRET_ID [qemu|keel]: the image opens with that secret and reads the pattern back.
opens() {
  local out
  if [ "${3:-qemu}" = qemu ]; then
    out=$(qemu-io "${SEC[@]}" --image-opts "$(opts "$1" "$2")" -c "read -P 0x5a 64k 128k" 2>&1) ||
      fail "qemu-io cannot open $1 with $2: $out"
  else
    out=$("$KEEL" io "${SEC[@]}" --image-opts "$(opts "$1" "$2")" -c "read -P 0x5a 64k 128k" 2>&1) ||
      fail "keel io cannot open $1 with $2: $out"
  fi
  grep -q "Pattern verification failed" <<<"$out" && fail "$1 with $2 read other bytes: $out"
  pass
}
# refuses IMG SECRET_ID [qemu|keel]: the open fails with QEMU's wrong-password message.
refuses() {
  local out rc=0
  if [ "${3:-qemu}" = qemu ]; then
    out=$(qemu-io "${SEC[@]}" --image-opts "$(opts "$1" "$2")" -c "read 0 512" 2>&1) || rc=$?
  else
    out=$("$KEEL" io "${SEC[@]}" --image-opts "$(opts "$1" "$2")" -c "read 0 512" 2>&1) || rc=$?
  fi
  [ $rc -ne 0 ] && grep -q "Invalid password, cannot unlock any keyslot" <<<"$out" ||
    fail "${3:-qemu} opened $1 with the removed secret $2 (rc $rc): $out"
  pass
}
qclean() {
  local out
  out=$(qemu-img check "${SEC[@]}" --image-opts "$(opts "$1" "$2")" 2>&1) || fail "qemu-img check $1: $out"
  grep -q "No errors were found on the image." <<<"$out" || fail "qemu-img check $1: $out"
  pass
}
# slots IMG: the active flags of qemu-img info, one line ("0:true 1:false ..."); and keel's the same.
slots() { qemu-img info --output=json "$1" | python3 -c '
import json,sys
print(" ".join("%d:%s" % (i, s["active"]) for i, s in enumerate(json.load(sys.stdin)["format-specific"]["data"]["encrypt"]["slots"])))'; }
same_slots() {
  local q k
  q=$(slots "$1")
  k=$("$KEEL" info --output=json "$1" | python3 -c '
import json,sys
print(" ".join("%d:%s" % (i, s["active"]) for i, s in enumerate(json.load(sys.stdin)["format-specific"]["data"]["encrypt"]["slots"])))')
  same_text "keel info and qemu-img info list the same slots of $1" "$q" "$k"
  same_text "slots of $1" "$2" "$q"
}
kamend() { run_ok "keel amend $*" "$KEEL" amend "${SEC[@]}" --image-opts "$(opts "$IMG" "$KEY")" "$@"; }
qamend() { run_ok "qemu-img amend $*" qemu-img amend "${SEC[@]}" --image-opts "$(opts "$IMG" "$KEY")" "$@"; }

say "keel adds and erases slots; QEMU opens with the new secret and refuses the removed one"
run_ok "keel create" "$KEEL" create -q -f qcow2 --object secret,id=s0,data=pw-zero \
  -o "encrypt.format=luks,encrypt.key-secret=s0,$IT" k.qcow2 4M
run_ok "data" qemu-io "${SEC[@]}" --image-opts "$(opts k.qcow2)" -c "write -P 0x5a 64k 128k"
IMG=k.qcow2 KEY=s0
kamend -o "encrypt.state=active,encrypt.new-secret=s1,$IT"
same_slots k.qcow2 "0:True 1:True 2:False 3:False 4:False 5:False 6:False 7:False"
opens k.qcow2 s1; opens k.qcow2 s0; qclean k.qcow2 s1
kamend -o "encrypt.state=active,encrypt.new-secret=s2,encrypt.keyslot=6,$IT"
kamend -o "encrypt.state=active,encrypt.new-secret=s3,encrypt.keyslot=7,$IT"
same_slots k.qcow2 "0:True 1:True 2:False 3:False 4:False 5:False 6:True 7:True"
opens k.qcow2 s2; opens k.qcow2 s3
kamend -o "encrypt.state=inactive,encrypt.old-secret=s0"
same_slots k.qcow2 "0:False 1:True 2:False 3:False 4:False 5:False 6:True 7:True"
refuses k.qcow2 s0; opens k.qcow2 s1
KEY=s1 kamend -o "encrypt.state=inactive,encrypt.keyslot=6"
refuses k.qcow2 s2; opens k.qcow2 s3; qclean k.qcow2 s3
KEY=s1 kamend --force -o "encrypt.state=active,encrypt.new-secret=s0,encrypt.keyslot=7,$IT"
refuses k.qcow2 s3; opens k.qcow2 s0
same_slots k.qcow2 "0:False 1:True 2:False 3:False 4:False 5:False 6:False 7:True"
run_ok "keel reads it all" "$KEEL" convert "${SEC[@]}" --image-opts "$(opts k.qcow2 s1)" -O raw k.raw
run_ok "qemu reads it all" qemu-img convert "${SEC[@]}" --image-opts "$(opts k.qcow2 s0)" -O raw q.raw
same_file "data after the slot changes" q.raw k.raw

say "qemu-img adds and erases slots; keel opens with the new secret and refuses the removed one"
qemu_img_create_luks -q -f qcow2 --object secret,id=s0,data=pw-zero -o "encrypt.format=luks,encrypt.key-secret=s0,$IT" \
  q.qcow2 4M 2>q.err || fail "qemu-img create: $(cat q.err)"
run_ok "data" qemu-io "${SEC[@]}" --image-opts "$(opts q.qcow2)" -c "write -P 0x5a 64k 128k"
IMG=q.qcow2 KEY=s0
qamend -o "encrypt.state=active,encrypt.new-secret=s1,encrypt.keyslot=3,$IT"
opens q.qcow2 s1 keel
qamend -o "encrypt.state=inactive,encrypt.keyslot=0"
refuses q.qcow2 s0 keel; opens q.qcow2 s1 keel
same_slots q.qcow2 "0:False 1:False 2:False 3:True 4:False 5:False 6:False 7:False"
KEY=s1 kamend -o "encrypt.state=active,encrypt.new-secret=s2,$IT"
opens q.qcow2 s2; qclean q.qcow2 s2

say "refusals: qemu-img's messages and exit codes on the same image"
run_ok "plain image" qemu-img create -q -f qcow2 p.qcow2 1M
run_ok "one-slot image" "$KEEL" create -q -f qcow2 --object secret,id=s0,data=pw-zero \
  -o "encrypt.format=luks,encrypt.key-secret=s0,$IT" one.qcow2 1M
cmp_err() {  # cmp_err IMAGE KEY OPTIONS: keel amend and qemu-img amend fail alike, the image unchanged
  local qrc=0 krc=0
  cp "$1" before.qcow2
  qemu-img amend "${SEC[@]}" --image-opts "$(opts "$1" "$2")" -o "$3" >/dev/null 2>q.err || qrc=$?
  "$KEEL" amend "${SEC[@]}" --image-opts "$(opts "$1" "$2")" -o "$3" >/dev/null 2>k.err || krc=$?
  sed -i 's/^qemu-img: /keel: /' q.err
  same_text "amend -o $3: stderr" "$(cat q.err)" "$(cat k.err)"
  same_text "amend -o $3: exit code" "$qrc" "$krc"
  [ "$qrc" -ne 0 ] || fail "amend -o $3 was expected to fail"
  cmp -s "$1" before.qcow2 || fail "amend -o $3 changed the image"
}
# q.qcow2 now: slot 0 opens with s2, slot 3 with s1.
for o in "encrypt.state=active,$IT" \
         "encrypt.state=active,encrypt.new-secret=s3,encrypt.old-secret=s1" \
         "encrypt.state=active,encrypt.new-secret=s3,encrypt.keyslot=8" \
         "encrypt.state=active,encrypt.new-secret=s3,encrypt.keyslot=-1" \
         "encrypt.state=active,encrypt.new-secret=s3,encrypt.keyslot=3" \
         "encrypt.state=active,encrypt.new-secret=nosuch" \
         "encrypt.state=inactive" \
         "encrypt.state=inactive,encrypt.new-secret=s2" \
         "encrypt.state=inactive,encrypt.keyslot=1,$IT" \
         "encrypt.state=inactive,encrypt.keyslot=-2" \
         "encrypt.state=inactive,encrypt.keyslot=5" \
         "encrypt.state=inactive,encrypt.keyslot=3,encrypt.old-secret=s0" \
         "encrypt.state=inactive,encrypt.old-secret=s0" \
         "encrypt.state=bogus" \
         "encrypt.keyslot=x" \
         "encrypt.iter-time=y,encrypt.state=active" \
         "encrypt.new-secret=s1"; do
  cmp_err q.qcow2 s1 "$o"
done
cmp_err one.qcow2 s0 "encrypt.state=inactive,encrypt.keyslot=0"
cmp_err one.qcow2 s0 "encrypt.state=inactive,encrypt.old-secret=s0"
cp p.qcow2 p0.qcow2
qrc=0; qemu-img amend "${SEC[@]}" -o encrypt.state=active,encrypt.new-secret=s1 p.qcow2 2>q.err || qrc=$?
krc=0; "$KEEL" amend "${SEC[@]}" -o encrypt.state=active,encrypt.new-secret=s1 p.qcow2 2>k.err || krc=$?
sed -i 's/^qemu-img: /keel: /' q.err
same_text "amend of an unencrypted image" "$(cat q.err) $qrc" "$(cat k.err) $krc"
cmp -s p.qcow2 p0.qcow2 || fail "amend of an unencrypted image changed it"
qemu-img create -q -f qcow2 "${SEC[@]}" -o encrypt.format=aes,encrypt.key-secret=s0 aes.qcow2 1M
cp aes.qcow2 aes0.qcow2
qrc=0; qemu-img amend "${SEC[@]}" --image-opts "$(opts aes.qcow2)" -o encrypt.state=active,encrypt.new-secret=s1 2>q.err || qrc=$?
krc=0; "$KEEL" amend "${SEC[@]}" --image-opts "$(opts aes.qcow2)" -o encrypt.state=active,encrypt.new-secret=s1 2>k.err || krc=$?
sed -i 's/^qemu-img: /keel: /' q.err
same_text "amend of a legacy AES image" "$(cat q.err) $qrc" "$(cat k.err) $krc"
cmp -s aes.qcow2 aes0.qcow2 || fail "amend of a legacy AES image changed it"
q=$(qemu-img amend -f qcow2 -o help | grep encrypt); k=$("$KEEL" amend -f qcow2 -o help | grep encrypt)
same_text "amend -o help lists the encrypt options" "$q" "$k"
finish
