#!/usr/bin/env bash
# Proves nbdcopy moves data both ways through `keel serve` byte for byte: into a qcow2 export
# (one connection, then four with multi-conn and --flush) and out of a read-only export, with
# sparse random data; the served images stay clean.
# Usage: bash nbd_copy.sh /path/to/keel
set -euo pipefail
KEEL=$(realpath "${1:?usage: $0 /path/to/keel}")
source "$(dirname "$(realpath "$0")")/nbd_lib.bash"
nbd_setup copy
start_server() {  # start_server SOCKET ARGS...
  local sock=$1; shift
  timeout 30 "$KEEL" serve --fork --pid-file "$sock.pid" -k "$sock" "$@" 2>>"$T/serve.log" ||
    fail "keel serve $* did not start"
  PIDS+=("$(cat "$sock.pid")")
}
wait_exit() {  # wait_exit SOCKET: the server (not persistent) ends once its clients have left
  local pid
  pid=$(cat "$1.pid" 2>/dev/null) || return 0
  for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  fail "server $pid did not exit after its last client"
}
uri() { echo "nbd+unix:///?socket=$1"; }

SIZE=$((48 << 20))
SRC=$T/src.raw
truncate -s $SIZE "$SRC"
# Random data in a few places, holes elsewhere, one unaligned island.
for spec in "0 2048" "4096 1024" "20480 4096" "49000 3"; do
  set -- $spec
  dd if=/dev/urandom of="$SRC" bs=1k seek="$1" count="$2" conv=notrunc status=none
done
printf 'unaligned' | dd of="$SRC" bs=1 seek=$((30 << 20 | 777)) conv=notrunc status=none

echo "== nbdcopy file -> keel serve (qcow2)"
qemu-img create -q -f qcow2 "$T/a.qcow2" $SIZE
start_server "$T/a.sock" -f qcow2 "$T/a.qcow2"
timeout 120 nbdcopy "$SRC" "$(uri "$T/a.sock")" || fail "nbdcopy into the export"
wait_exit "$T/a.sock"
qemu-img compare -q -f raw -F qcow2 "$SRC" "$T/a.qcow2" || fail "copied image differs"
qemu-img check -q "$T/a.qcow2" || fail "qemu-img check a.qcow2"

echo "== nbdcopy keel serve -> file (read-only export)"
start_server "$T/a.sock" -r -f qcow2 "$T/a.qcow2"
timeout 120 nbdcopy "$(uri "$T/a.sock")" "$T/out.raw" || fail "nbdcopy out of the export"
wait_exit "$T/a.sock"
cmp "$SRC" "$T/out.raw" || fail "data read back differs"

echo "== nbdcopy with 4 connections (-e 4, multi-conn) and --flush"
qemu-img create -q -f qcow2 "$T/b.qcow2" $SIZE
start_server "$T/b.sock" -e 4 -f qcow2 "$T/b.qcow2"
timeout 120 nbdcopy -C 4 --flush "$SRC" "$(uri "$T/b.sock")" || fail "nbdcopy -C 4"
wait_exit "$T/b.sock"
qemu-img compare -q -f raw -F qcow2 "$SRC" "$T/b.qcow2" || fail "multi-conn copy differs"
qemu-img check -q "$T/b.qcow2" || fail "qemu-img check b.qcow2"

echo "== nbdcopy export -> export (raw image)"
truncate -s $SIZE "$T/c.raw"
start_server "$T/b.sock" -r -f qcow2 "$T/b.qcow2"
start_server "$T/c.sock" -f raw "$T/c.raw"
timeout 120 nbdcopy "$(uri "$T/b.sock")" "$(uri "$T/c.sock")" || fail "nbdcopy export to export"
wait_exit "$T/b.sock"
wait_exit "$T/c.sock"
cmp "$SRC" "$T/c.raw" || fail "export-to-export copy differs"
echo PASS
