#!/usr/bin/env bash
# Proves QEMU's blkdebug fault-injection names (blkdebug:CONFIG:IMAGE and json: driver=blkdebug
# with inject-error / set-state) run unchanged under keel io, mapped onto keel's fault rules: on
# twins, qemu-io in q/ and keel io in k/ fail the same operations with the same errno (same
# stdout, exit code), refuse the same bad rules with the same message, and leave images that
# qemu-img check finds clean and compare finds identical.
# Usage: bash parity_blkdebug.sh /path/to/keel
set -euo pipefail
HERE=$(dirname "$(realpath "$0")")
source "$HERE/cli_lib.bash"
source "$HERE/parity_lib.bash"
IO_STDERR=0  # io_twin compares stderr only where it says IO_STDERR=1 (blkdebug's messages are QEMU's own)

images() {
  qemu-img create -q -f qcow2 a.qcow2 1M
  qemu-io -c 'write -P 0x11 0 128k' a.qcow2
  printf '[inject-error]\nevent = "read_aio"\nerrno = "5"\nonce = "on"\n' >read_once.conf
  printf '[inject-error]\nevent = "write_aio"\nerrno = "28"\n' >write_enospc.conf
  printf '[set-state]\nevent = "read_aio"\nstate = "1"\nnew_state = "2"\n\n[inject-error]\nevent = "read_aio"\nstate = "2"\nerrno = "5"\nonce = "on"\n' >states.conf
  printf '[inject-error]\nevent = "bogus"\n' >bad_event.conf
  printf '[inject-error]\nevent = "read_aio"\nsector = "0"\n' >sector.conf
}

say "inject-error on read_aio, once: the first read fails with EIO, the next succeeds"
twin_setup images
io_twin "read_aio once" -c 'read -P 0x11 0 4k' -c 'read -P 0x11 0 4k' blkdebug:read_once.conf:a.qcow2
io_twin "read_aio once (json:)" -c 'read -P 0x11 0 4k' -c 'read -P 0x11 64k 4k' \
  'json:{"driver":"qcow2","file":{"driver":"blkdebug","image":{"driver":"file","filename":"a.qcow2"},"inject-error":[{"event":"read_aio","errno":5,"once":true}]}}'
io_twin "read_aio once (--image-opts)" --image-opts -c 'read -P 0x11 0 4k' -c 'read -P 0x11 4k 4k' \
  'driver=qcow2,file.driver=blkdebug,file.image.filename=a.qcow2,file.inject-error.0.event=read_aio,file.inject-error.0.once=on'

say "set-state: the rule of state 2 fires only after the state moved"
io_twin "set-state" -c 'read -P 0x11 0 4k' -c 'read -P 0x11 0 4k' -c 'read -P 0x11 0 4k' blkdebug:states.conf:a.qcow2

say "inject-error on write_aio, forever, ENOSPC: writes and later reads fail"
io_twin "write_aio forever" -c 'write -P 0x22 0 4k' -c 'read -P 0x11 0 4k' blkdebug:write_enospc.conf:a.qcow2
for d in q k; do
  out=$(qemu-img check "$T/$d/a.qcow2" 2>&1) || fail "qemu-img check $d/a.qcow2 after the failed write: $out"
done
pass
same_content "after the failed write" a.qcow2

say "the same refusals"
IO_STDERR=1 io_twin "unknown event" -c 'read 0 4k' blkdebug:bad_event.conf:a.qcow2
IO_STDERR=1 io_twin "missing config" -c 'read 0 4k' blkdebug:nope.conf:a.qcow2
IO_STDERR=1 io_twin "no image part" -c 'read 0 4k' blkdebug:read_once.conf
rc=0; "$KEEL" io -c 'read 0 4k' "blkdebug:$T/k/sector.conf:$T/k/a.qcow2" 2>"$T/k.err" || rc=$?
[ $rc -eq 1 ] && grep -q "no blkdebug 'sector' filter" "$T/k.err" || fail "sector: rc=$rc $(cat "$T/k.err")"
pass

finish
