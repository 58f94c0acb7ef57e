#!/usr/bin/env bash
# Proves fio's nbd engine at iodepth 32 runs against `keel serve` without a single verify error
# (crc32c on every block, random offsets, mixed block sizes), that a mixed read/write load with
# flushes completes, and that the qcow2 image is clean afterwards.
# Usage: bash nbd_fio.sh /path/to/keel
set -euo pipefail
KEEL=$(realpath "${1:?usage: $0 /path/to/keel}")
source "$(dirname "$(realpath "$0")")/nbd_lib.bash"
nbd_setup fio
fail() {
  echo "FAIL: $*" >&2
  [ -s "$T/fio.out" ] && tail -30 "$T/fio.out" | sed 's/^/  fio: /' >&2
  [ -s "$T/serve.log" ] && sed 's/^/  serve.log: /' "$T/serve.log" >&2
  exit 1
}
start_server() {  # start_server SOCKET ARGS...
  local sock=$1; shift
  timeout 30 "$KEEL" serve --fork --pid-file "$sock.pid" -k "$sock" "$@" 2>>"$T/serve.log" ||
    fail "keel serve $* did not start"
  PIDS+=("$(cat "$sock.pid")")
}

cd "$T"  # fio leaves verify state files in the working directory
fio --enghelp=nbd >/dev/null 2>&1 || fail "this fio has no nbd engine"
IMG=$T/a.qcow2
qemu-img create -q -f qcow2 "$IMG" 256M
S=$T/s.sock
start_server "$S" -t -f qcow2 "$IMG"
URI="nbd+unix:///?socket=$S"

echo "== random writes, iodepth 32, verify=crc32c"
timeout 300 fio --name=verify --ioengine=nbd --uri="$URI" --rw=randwrite --bs=4k \
  --iodepth=32 --size=64m --verify=crc32c --do_verify=1 --verify_fatal=1 \
  --randrepeat=1 --output="$T/fio.out" || fail "fio verify (4k)"
grep -q "err= 0" "$T/fio.out" || fail "fio reported errors"

echo "== mixed block sizes 512..256k at an offset, iodepth 32, verify=crc32c"
timeout 300 fio --name=mixed --ioengine=nbd --uri="$URI" --rw=randwrite --bsrange=512-256k \
  --iodepth=32 --offset=64m --size=96m --verify=crc32c --do_verify=1 --verify_fatal=1 \
  --output="$T/fio.out" || fail "fio verify (mixed sizes)"
grep -q "err= 0" "$T/fio.out" || fail "fio reported errors"

echo "== mixed read/write with flushes, iodepth 32"
timeout 300 fio --name=rw --ioengine=nbd --uri="$URI" --rw=randrw --bs=4k --iodepth=32 \
  --offset=160m --size=96m --fsync=64 --time_based --runtime=5 --output="$T/fio.out" || fail "fio randrw"
grep -q "err= 0" "$T/fio.out" || fail "fio reported errors"

echo "== the first job's data is still intact after the others"
timeout 300 fio --name=verify --ioengine=nbd --uri="$URI" --rw=randwrite --bs=4k \
  --iodepth=32 --size=64m --verify=crc32c --verify_only=1 --verify_fatal=1 \
  --randrepeat=1 --output="$T/fio.out" || fail "fio verify_only after the other jobs"

stop_server "$S"
qemu-img check -q "$IMG" || fail "qemu-img check"
echo PASS
