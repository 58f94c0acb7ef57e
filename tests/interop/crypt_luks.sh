#!/usr/bin/env bash
# Proves Keel reads and writes LUKS-encrypted qcow2 images as QEMU does: images qemu-img makes
# (with the IV sector taken from the host offset, as QEMU does for LUKS) convert to the same raw
# bytes through keel and qemu-img; keel io writes (partial sectors, copy-on-write into new
# clusters, over a backing file) read back identically through qemu-img and leave `qemu-img
# check` clean; a wrong passphrase, a missing secret object and a missing key-secret give
# qemu-img's message and exit code. Legacy AES-CBC images (crypt_method 1, IV from the guest
# offset) read, write, print info and convert to LUKS as through QEMU.
# Usage: bash crypt_luks.sh /path/to/keel
set -euo pipefail
source "$(dirname "$(realpath "$0")")/cli_lib.bash"

qcreate_luks() {
  qemu_img_create_luks "$@" 2>"$T/create.err" >/dev/null && { pass; return 0; }
  fail "qemu-img create $*: $(cat "$T/create.err")"
}

SEC=(--object secret,id=sec0,data=hunter2)
opts() { echo "driver=qcow2,file.filename=$1,encrypt.key-secret=sec0"; }
# qraw IMG OUT: the guest bytes as qemu-img decrypts them.
qraw() { run_ok "qemu-img convert $1" qemu-img convert "${SEC[@]}" --image-opts "$(opts "$1")" -O raw "$2"; }
kraw() { run_ok "keel convert $1" "$KEEL" convert "${SEC[@]}" --image-opts "$(opts "$1")" -O raw "$2"; }

# lcreate NAME SIZE [extra -o options]: a LUKS qcow2 made by qemu-img (short iter-time: fast unlock).
lcreate() {
  qcreate_luks -q -f qcow2 "${SEC[@]}" \
    -o "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10${3:+,$3}" "$1" "$2"
}

say "read: qemu-img writes, keel converts to raw"
lcreate a.qcow2 8M
run_ok "qemu-io fill" qemu-io "${SEC[@]}" --image-opts "$(opts a.qcow2)" \
  -c "write -P 0x11 0 100k" -c "write -P 0x22 1M 4k" -c "write -P 0x33 3000 1000" -c "write -P 0x44 7M 1M"
qraw a.qcow2 q.raw
kraw a.qcow2 k.raw
same_file "LUKS image: keel convert -O raw equals qemu-img convert -O raw" q.raw k.raw
[ "$(od -An -tx1 -j 1048576 -N 1 k.raw | tr -d ' ')" = 22 ] || fail "decrypted byte at 1M is not 0x22"
pass

say "errors: wrong passphrase, unknown secret, no key-secret"
errs_same() {  # errs_same WHAT ARGS...: same stderr (qemu-img: -> keel:) and exit code for convert
  local what=$1 qrc=0 krc=0; shift
  qemu-img convert "$@" -O raw e1.raw 2>q.err >/dev/null || qrc=$?
  "$KEEL" convert "$@" -O raw e2.raw 2>k.err >/dev/null || krc=$?
  sed -i 's/^qemu-img: /keel: /' q.err
  [ $qrc -eq $krc ] || fail "$what: qemu-img exited $qrc, keel $krc"
  same_file "$what (stderr)" q.err k.err
}
errs_same "wrong passphrase" --object secret,id=sec0,data=wrong --image-opts "$(opts a.qcow2)"
errs_same "no such secret" --image-opts "$(opts a.qcow2)"
errs_same "no key-secret" a.qcow2
errs_same "base64 secret, right key" --object secret,id=sec0,data=aHVudGVyMg==,format=base64 --image-opts "$(opts a.qcow2)"
printf hunter2 > pw.txt
run_ok "secret from a file" "$KEEL" convert --object secret,id=sec0,file=pw.txt --image-opts "$(opts a.qcow2)" -O raw f.raw
same_file "secret file=" q.raw f.raw

say "write: keel io writes, qemu-img reads back"
lcreate w.qcow2 8M
run_ok "qemu-io base data" qemu-io "${SEC[@]}" --image-opts "$(opts w.qcow2)" -c "write -P 0x55 0 256k"
run_ok "keel io writes" "$KEEL" io "${SEC[@]}" --image-opts "$(opts w.qcow2)" \
  -c "write -P 0x66 4096 8192" -c "write -P 0x77 100000 3" -c "write -P 0x88 2M 200k" \
  -c "write -P 0x99 5M 64k" -c "write -z 6M 4k" -c "write -P 0xaa 6M 700"
run_ok "qemu-io same writes on a plain image" qemu-img create -q -f qcow2 p.qcow2 8M
run_ok "plain fill" qemu-io -c "write -P 0x55 0 256k" -c "write -P 0x66 4096 8192" -c "write -P 0x77 100000 3" \
  -c "write -P 0x88 2M 200k" -c "write -P 0x99 5M 64k" -c "write -z 6M 4k" -c "write -P 0xaa 6M 700" p.qcow2
run_ok "plain as raw" qemu-img convert -O raw p.qcow2 p.raw
qraw w.qcow2 w.raw
same_file "keel-written LUKS image as qemu-img decrypts it" p.raw w.raw
out=$(qemu-img check "${SEC[@]}" --image-opts "$(opts w.qcow2)" 2>&1) || fail "qemu-img check: $out"
grep -q "No errors were found on the image." <<<"$out" || fail "qemu-img check: $out"
pass

say "copy-on-write over a backing file"
run_ok "backing" qemu-img create -q -f qcow2 b.qcow2 8M
run_ok "fill backing" qemu-io -c "write -P 0x5a 0 8M" b.qcow2
lcreate t.qcow2 8M "backing_file=b.qcow2,backing_fmt=qcow2"
run_ok "keel io into the overlay" "$KEEL" io "${SEC[@]}" --image-opts "$(opts t.qcow2)" \
  -c "write -P 0x01 70000 5000" -c "write -P 0x02 3M 512"
run_ok "the same on qemu" qemu-img create -q -f qcow2 -b b.qcow2 -F qcow2 tp.qcow2 8M
run_ok "fill" qemu-io -c "write -P 0x01 70000 5000" -c "write -P 0x02 3M 512" tp.qcow2
run_ok "tp raw" qemu-img convert -O raw tp.qcow2 tp.raw
qraw t.qcow2 t.raw
same_file "encrypted overlay over a plain backing file" tp.raw t.raw

say "amend compat=0.10 of a LUKS image: zero clusters become encrypted zeros"
qcreate_luks -q -f qcow2 "${SEC[@]}" -o encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10 am.qcow2 4M
run_ok "qemu-io fill + zero" qemu-io "${SEC[@]}" --image-opts "$(opts am.qcow2)" -c "write -P 0x11 0 256k" -c "write -z 64k 64k"
run_ok "keel amend compat=0.10" "$KEEL" amend "${SEC[@]}" --image-opts "$(opts am.qcow2)" -o compat=0.10
run_ok "qemu-io reads back" qemu-io "${SEC[@]}" --image-opts "$(opts am.qcow2)" -c "read -P 0 64k 64k" \
  -c "read -P 0x11 0 64k" -c "read -P 0x11 128k 128k"
grep -q "Pattern verification failed" "$T/last.out" && fail "after amend: $(cat "$T/last.out")"
pass
out=$(qemu-img check "${SEC[@]}" --image-opts "$(opts am.qcow2)" 2>&1) || fail "qemu-img check after amend: $out"
pass

say "legacy AES-CBC (crypt_method 1): read, write, info, convert to LUKS"
run_ok "qemu-img create aes" qemu-img create -q -f qcow2 "${SEC[@]}" -o encrypt.format=aes,encrypt.key-secret=sec0 aes.qcow2 4M
run_ok "qemu-io fill aes" qemu-io "${SEC[@]}" --image-opts "$(opts aes.qcow2)" -c "write -P 0x3c 1000 300k" -c "write -P 0x11 2M 64k"
run_ok "keel io writes aes" "$KEEL" io "${SEC[@]}" --image-opts "$(opts aes.qcow2)" -c "write -P 0x22 2M 1000" -c "write -P 0x33 3M 70000"
run_ok "plain aes reference" qemu-img create -q -f qcow2 pa.qcow2 4M
run_ok "plain aes writes" qemu-io -c "write -P 0x3c 1000 300k" -c "write -P 0x11 2M 64k" -c "write -P 0x22 2M 1000" \
  -c "write -P 0x33 3M 70000" pa.qcow2
run_ok "pa raw" qemu-img convert -O raw pa.qcow2 pa.raw
qraw aes.qcow2 aes_q.raw
kraw aes.qcow2 aes_k.raw
same_file "AES image as qemu-img decrypts it" pa.raw aes_q.raw
same_file "AES image as keel decrypts it" pa.raw aes_k.raw
info_same_as_qemu aes.qcow2
run_ok "AES -> LUKS" "$KEEL" convert "${SEC[@]}" --image-opts "$(opts aes.qcow2)" -O qcow2 \
  -o encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10 aes2luks.qcow2
qraw aes2luks.qcow2 aes2luks.raw
same_file "AES -> LUKS convert" pa.raw aes2luks.raw


say "key material stays out of core dumps: keel makes itself non-dumpable once it reads a secret"
# /proc/PID's files belong to root while a process is non-dumpable, to its user otherwise: run
# keel io as an unprivileged user (root can switch; skipped otherwise) and look at the owner.
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
  chmod 755 "$T"; chmod 644 a.qcow2
  owner_of_keel_io() {  # IMAGE ARGS...: the owner uid of /proc/PID/status of `keel io ARGS -c
    # "sleep 3000"`, read once keel has IMAGE open (so it has read its secret, if any, before)
    local img=$1; shift
    setpriv --reuid=65534 --regid=65534 --clear-groups "$KEEL" io "$@" -c "sleep 3000" >/dev/null 2>&1 &
    local pid=$! uid=""
    for _ in $(seq 100); do
      if ls -l "/proc/$pid/fd" 2>/dev/null | grep -q "/$img\$"; then break; fi
      sleep 0.1
    done
    uid=$(stat -c %u "/proc/$pid/status" 2>/dev/null || echo gone)
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    echo "$uid"
  }
  u=$(owner_of_keel_io a.qcow2 -r "${SEC[@]}" --image-opts "$(opts a.qcow2)")
  [ "$u" = 0 ] || fail "keel io with a secret: /proc/PID/status owned by $u, expected 0 (non-dumpable)"
  u=$(owner_of_keel_io pa.qcow2 -r -f qcow2 pa.qcow2)
  [ "$u" = 65534 ] || fail "keel io without a secret: /proc/PID/status owned by $u, expected 65534 (dumpable)"
  pass
else
  say "(skipped: needs root and setpriv)"
fi

finish
