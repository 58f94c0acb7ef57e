#!/usr/bin/env bash
# Proves encrypted backing files work as in QEMU: a LUKS image as the backing file of another
# (LUKS or plain) image, each with its own secret, the backing file's given as QEMU's
# backing.encrypt.key-secret (and backing.backing.encrypt.key-secret two levels down): keel
# convert reads the chain as qemu-img convert does; keel io's partial-cluster writes into the top
# copy-on-write from the encrypted backing file and read back identically through qemu-img;
# qemu-img check is clean; a missing or wrong backing secret fails with qemu-io's reason and exit
# code.
# Usage: bash crypt_luks_backing.sh /path/to/keel
set -euo pipefail
source "$(dirname "$(realpath "$0")")/cli_lib.bash"

SEC=(--object secret,id=s0,data=top-pass --object secret,id=s1,data=base-pass --object secret,id=s2,data=root-pass)
IT=encrypt.iter-time=10
luks() {  # luks FILE SECRET [create args...]
  local f=$1 s=$2; shift 2
  qemu_img_create_luks -q -f qcow2 "${SEC[@]}" -o "encrypt.format=luks,encrypt.key-secret=$s,$IT" "$@" "$f" 4M \
    2>c.err || fail "qemu-img create $f: $(cat c.err)"
}

say "a LUKS top over a LUKS backing file"
luks b.qcow2 s1
run_ok "base data" qemu-io "${SEC[@]}" --image-opts "driver=qcow2,file.filename=b.qcow2,encrypt.key-secret=s1" \
  -c "write -P 0x11 0 1M" -c "write -P 0x12 2M 70000"
luks t.qcow2 s0 -b b.qcow2 -F qcow2
T_OPTS="driver=qcow2,file.filename=t.qcow2,encrypt.key-secret=s0,backing.encrypt.key-secret=s1"
run_ok "qemu-io writes into the top (copy-on-write)" qemu-io "${SEC[@]}" --image-opts "$T_OPTS" -c "write -P 0x21 512k 4k"
run_ok "qemu-img convert" qemu-img convert "${SEC[@]}" --image-opts "$T_OPTS" -O raw q.raw
run_ok "keel convert" "$KEEL" convert "${SEC[@]}" --image-opts "$T_OPTS" -O raw k.raw
same_file "keel reads the encrypted chain as qemu-img does" q.raw k.raw
run_ok "keel io writes into the top (partial clusters: copy-on-write from the encrypted base)" \
  "$KEEL" io "${SEC[@]}" --image-opts "$T_OPTS" -c "write -P 0x31 2M 4096" -c "write -P 0x32 100k 1000"
run_ok "reference chain (plain)" qemu-img create -q -f raw r.raw 4M
run_ok "reference writes" qemu-io -f raw -c "write -P 0x11 0 1M" -c "write -P 0x12 2M 70000" -c "write -P 0x21 512k 4k" \
  -c "write -P 0x31 2M 4096" -c "write -P 0x32 100k 1000" r.raw
run_ok "qemu-img convert after keel's writes" qemu-img convert "${SEC[@]}" --image-opts "$T_OPTS" -O raw q2.raw
same_file "qemu-img reads keel's copy-on-write over the encrypted base" r.raw q2.raw
out=$(qemu-img check "${SEC[@]}" --image-opts "$T_OPTS" 2>&1) && grep -q "No errors were found" <<<"$out" ||
  fail "qemu-img check: $out"
pass

say "a plain top over a LUKS backing file; two levels of encrypted backing files"
run_ok "plain top" qemu-img create -q -f qcow2 -b b.qcow2 -F qcow2 p.qcow2 4M
P_OPTS="driver=qcow2,file.filename=p.qcow2,backing.encrypt.key-secret=s1"
run_ok "keel io writes into the plain top" "$KEEL" io "${SEC[@]}" --image-opts "$P_OPTS" -c "write -P 0x41 1536k 512"
run_ok "qemu-img convert" qemu-img convert "${SEC[@]}" --image-opts "$P_OPTS" -O raw q3.raw
run_ok "keel convert" "$KEEL" convert "${SEC[@]}" --image-opts "$P_OPTS" -O raw k3.raw
same_file "plain top over an encrypted base" q3.raw k3.raw
luks r.qcow2 s2
run_ok "root data" qemu-io "${SEC[@]}" --image-opts "driver=qcow2,file.filename=r.qcow2,encrypt.key-secret=s2" \
  -c "write -P 0x51 3M 64k"
luks m.qcow2 s1 -b r.qcow2 -F qcow2
luks u.qcow2 s0 -b m.qcow2 -F qcow2
U_OPTS="driver=qcow2,file.filename=u.qcow2,encrypt.key-secret=s0,backing.encrypt.key-secret=s1,backing.backing.encrypt.key-secret=s2"
run_ok "keel io writes over two encrypted layers" "$KEEL" io "${SEC[@]}" --image-opts "$U_OPTS" -c "write -P 0x52 3M 512"
run_ok "qemu-img convert" qemu-img convert "${SEC[@]}" --image-opts "$U_OPTS" -O raw q4.raw
run_ok "keel convert" "$KEEL" convert "${SEC[@]}" --image-opts "$U_OPTS" -O raw k4.raw
same_file "three encrypted layers" q4.raw k4.raw

say "a missing or wrong backing secret: qemu-io's error"
for o in "driver=qcow2,file.filename=t.qcow2,encrypt.key-secret=s0" \
         "driver=qcow2,file.filename=t.qcow2,encrypt.key-secret=s0,backing.encrypt.key-secret=s2"; do
  qrc=0; qemu-io "${SEC[@]}" --image-opts "$o" -c "read 0 512" >/dev/null 2>q.err || qrc=$?
  krc=0; "$KEEL" io "${SEC[@]}" --image-opts "$o" -c "read 0 512" >/dev/null 2>k.err || krc=$?
  # The reason is QEMU's; the prefix is keel io's for any backing file that fails to open
  # ("can't open device T: Could not open 'T': Could not open 'B': ..." where qemu-io says
  # "can't open: Could not open backing file: ...").
  same_text "keel io $o: reason" "$(sed 's/.*: //' q.err)" "$(sed 's/.*: //' k.err)"
  same_text "keel io $o: exit code" "$qrc" "$krc"
done
finish
