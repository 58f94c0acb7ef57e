#!/usr/bin/env bash
# Proves keel serve's FUSE export (--fuse FILE, --export type=fuse,...) with plain programs:
# cmp against qemu-img convert -O raw, lseek SEEK_DATA/SEEK_HOLE, fio crc32c verify on the
# mounted file, fallocate punch hole reads zeros, fsync then SIGKILL loses nothing fsynced and
# leaves a clean image, SIGTERM and fusermount3 -u end the server cleanly, an NBD and a FUSE export of one image in one process
# see each other's writes, and qemu-storage-daemon's errors for a missing file, a directory and
# a read-only image exported writable (qemu-storage-daemon is the oracle for the messages).
# Needs /dev/fuse and root (or fusermount3); skipped (exit 0 with a note) where FUSE cannot mount.
# Usage: bash fuse_export.sh /path/to/keel
set -euo pipefail
KEEL=$(realpath "${1:?usage: $0 /path/to/keel}")
T=$(mktemp -d /tmp/keel-fuse.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  # (a mount whose server was killed fails stat, so go by /proc/mounts)
  awk -v t="$T/" 'index($2, t) == 1 { print $2 }' /proc/mounts | while read -r m; do
    fusermount3 -u -z "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
  rm -rf "$T"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  [ -s "$T/serve.log" ] && sed 's/^/  serve.log: /' "$T/serve.log" >&2
  exit 1
}
mounted() { grep -q " $1 fuse" /proc/mounts; }
# start MNT ARGS...: keel serve in the background; returns once MNT is mounted.
start() {
  local mnt=$1; shift
  "$KEEL" serve --pid-file "$mnt.pid" "$@" 2>>"$T/serve.log" &
  PIDS+=("$!")
  for _ in $(seq 200); do mounted "$mnt" && [ -s "$mnt.pid" ] && return 0; sleep 0.05; done
  fail "keel serve $* did not mount $mnt"
}
wait_exit() {  # wait_exit PID: the server must exit 0 within 30 s
  local pid=$1 rc=0
  for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && fail "server $pid did not exit"
  wait "$pid" || rc=$?
  [ "$rc" -eq 0 ] || fail "server exited with $rc"
}

if [ ! -c /dev/fuse ] || ! command -v fusermount3 >/dev/null; then
  echo "SKIP: no /dev/fuse or fusermount3"; exit 0
fi
IMG=$T/a.qcow2
qemu-img create -q -f qcow2 "$IMG" 64M
qemu-io -f qcow2 -c 'write -q -P 0xab 0 1M' -c 'write -q -P 0xcd 32M 64k' -c 'write -q -z 40M 1M' \
  "$IMG" >/dev/null
M=$T/a.mnt
touch "$M"
# Probe: can this machine mount FUSE at all?
"$KEEL" serve --pid-file "$M.pid" --fuse "$M" -f qcow2 "$IMG" 2>"$T/probe.log" &
PROBE=$!
PIDS+=("$PROBE")
for _ in $(seq 100); do mounted "$M" && break; kill -0 "$PROBE" 2>/dev/null || break; sleep 0.05; done
if ! mounted "$M"; then
  grep -q "Failed to mount FUSE" "$T/probe.log" && { echo "SKIP: FUSE cannot mount here"; exit 0; }
  fail "keel serve --fuse: $(cat "$T/probe.log")"
fi

echo "== the mounted file is the guest view"
[ "$(stat -c %s "$M")" = $((64 << 20)) ] || fail "size $(stat -c %s "$M")"
qemu-img convert -U -f qcow2 -O raw "$IMG" "$T/a.raw"
cmp "$M" "$T/a.raw" || fail "mounted file differs from qemu-img convert -O raw"

# SEEK_HOLE / SEEK_DATA follow the allocation: data at 0..1M and 32M..32M+64k, zeros at 40M.
/usr/bin/python3 - "$M" <<'EOF' || fail "lseek SEEK_DATA/SEEK_HOLE"
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
assert os.lseek(fd, 0, os.SEEK_HOLE) == 1 << 20, os.lseek(fd, 0, os.SEEK_HOLE)
assert os.lseek(fd, 1 << 20, os.SEEK_DATA) == 32 << 20, os.lseek(fd, 1 << 20, os.SEEK_DATA)
assert os.lseek(fd, 40 << 20, os.SEEK_HOLE) == 40 << 20
EOF

echo "== fio crc32c verify on the mounted file"
fio --name=fuse --filename="$M" --rw=randwrite --bs=4k --size=16M --offset=8M --ioengine=psync \
  --verify=crc32c --verify_fatal=1 --do_verify=1 --randrepeat=1 --fallocate=none --verify_state_save=0 \
  --output="$T/fio.out" >/dev/null 2>&1 || fail "fio: $(tail -20 "$T/fio.out")"
fio --name=fuse --filename="$M" --rw=randwrite --bs=4k --size=16M --offset=8M --ioengine=psync \
  --verify=crc32c --verify_fatal=1 --verify_only=1 --randrepeat=1 --fallocate=none --verify_state_save=0 \
  --output="$T/fio2.out" >/dev/null 2>&1 ||
  fail "fio verify_only: $(tail -20 "$T/fio2.out")"

echo "== fallocate punch hole reads zeros; fsync is durable across SIGKILL"
fallocate -p -o 100000 -l 300000 "$M" || fail "fallocate --punch-hole"
cmp -n 300000 -i 100000:0 "$M" /dev/zero || fail "punched range does not read zeros"
cmp -n 100000 "$M" "$T/a.raw" || fail "data before the punched range changed"
head -c 1M /dev/urandom >"$T/pat"
dd if="$T/pat" of="$M" bs=64k seek=$((48 << 4)) conv=notrunc,fsync status=none || fail "dd conv=fsync"
kill -9 "$(cat "$M.pid")"
wait "$PROBE" 2>/dev/null || true
fusermount3 -u -z "$M" 2>/dev/null || umount -l "$M" || true
qemu-img check -q "$IMG" || fail "qemu-img check after SIGKILL"
qemu-img convert -f qcow2 -O raw "$IMG" "$T/after.raw"
cmp -n $((1 << 20)) -i $((48 << 20)):0 "$T/after.raw" "$T/pat" || fail "fsynced bytes lost after SIGKILL"
cmp -n 300000 -i 100000:0 "$T/after.raw" /dev/zero || fail "punched range lost after SIGKILL"

echo "== SIGTERM and fusermount3 -u end the server cleanly"
start "$M" --fuse "$M" -f qcow2 "$IMG"
PID=$(cat "$M.pid")
kill -TERM "$PID"
wait_exit "$PID"
mounted "$M" && fail "still mounted after SIGTERM"
qemu-img check -q "$IMG" || fail "qemu-img check after SIGTERM"
start "$M" --export "type=fuse,id=e0,node-name=disk,mountpoint=$M,writable=on" -f qcow2 "$IMG"
PID=$(cat "$M.pid")
printf 'hello' | dd of="$M" bs=1 seek=$((60 << 20)) conv=notrunc status=none || fail "write"
fusermount3 -u "$M" || fail "fusermount3 -u"
wait_exit "$PID"
qemu-img info --output=json "$IMG" | grep -q '"dirty-flag": true' && fail "image left dirty"
qemu-io -f qcow2 -c 'read -v 60M 5' "$IMG" | grep -q "68 65 6c 6c 6f" ||
  fail "write through --export lost: $(qemu-io -f qcow2 -c 'read -v 60M 5' "$IMG")"

echo "== read-only exports refuse writes"
start "$M" --export "type=fuse,id=e0,mountpoint=$M" -f qcow2 "$IMG"
[ "$(stat -c %a "$M")" = 400 ] || fail "read-only mode $(stat -c %a "$M")"
printf 'x' | dd of="$M" bs=1 conv=notrunc status=none 2>/dev/null && fail "write to a read-only export succeeded"
cmp -n 4096 "$M" "$T/after.raw" || fail "read-only export reads"
PID=$(cat "$M.pid")
kill -TERM "$PID"
wait_exit "$PID"

echo "== NBD and FUSE exports of one image in one process"
S=$T/n.sock
start "$M" -t -k "$S" --fuse "$M" -f qcow2 "$IMG"
qemu-io -f raw -c 'write -q -P 0x5a 4M 64k' "nbd+unix:///?socket=$S" >/dev/null || fail "NBD write"
cmp -n 65536 -i $((4 << 20)):0 "$M" <(head -c 65536 /dev/zero | tr '\0' '\132') ||
  fail "FUSE does not see the NBD write"
printf 'fuse' | dd of="$M" bs=1 seek=$((5 << 20)) conv=notrunc,fsync status=none
qemu-io -f raw -c 'read -q -P 0x66 5M 1' "nbd+unix:///?socket=$S" | grep -q "fail" &&
  fail "NBD does not see the FUSE write"
PID=$(cat "$M.pid")
kill -TERM "$PID"
wait_exit "$PID"
mounted "$M" && fail "still mounted after SIGTERM (NBD + FUSE)"
qemu-img check -q "$IMG" || fail "qemu-img check after NBD + FUSE"

echo "== errors: qemu-storage-daemon's messages"
QSD=$(command -v qemu-storage-daemon || true)
qsd_err() {  # qsd_err MOUNTPOINT READONLY(on|off) WRITABLE(on|off)
  "$QSD" --blockdev "driver=file,node-name=f,filename=$IMG,read-only=$2" \
    --blockdev "driver=qcow2,node-name=q,file=f,read-only=$2" \
    --export "type=fuse,id=e,node-name=q,mountpoint=$1,writable=$3" 2>&1 >/dev/null |
    sed -e 's/^qemu-storage-daemon: --export [^ ]*: //' || true
}
keel_err() {  # keel_err MOUNTPOINT READONLY WRITABLE
  local ro=()
  [ "$2" = on ] && ro=(-r)
  timeout 30 "$KEEL" serve "${ro[@]}" --export "type=fuse,id=e,mountpoint=$1,writable=$3" \
    -f qcow2 "$IMG" 2>&1 >/dev/null | sed -e 's/^keel: //' || true
}
mkdir "$T/dir"
for c in "$T/missing off off" "$T/dir off off" "$M on on"; do
  read -r mp ro w <<<"$c"
  k=$(keel_err "$mp" "$ro" "$w")
  if [ -n "$QSD" ]; then
    q=$(qsd_err "$mp" "$ro" "$w")
    [ "$k" = "$q" ] || fail "error for $c: keel '$k', qemu-storage-daemon '$q'"
  fi
  [ -n "$k" ] || fail "no error for $c"
  echo "  $k"
done
[ "$(keel_err "$T/missing" off off)" = "Failed to stat '$T/missing': No such file or directory" ] ||
  fail "missing mountpoint message"
echo PASS
