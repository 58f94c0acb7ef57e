#!/usr/bin/env bash
# Proves keel serve's -B (qemu:dirty-bitmap:NAME) and -A (qemu:allocation-depth) contexts against
# qemu-nbd 7.2 as the oracle, each run on an identical copy of the image: the LIST/SET replies and
# BLOCK_STATUS chunks byte for byte (ids, order, REQ_ONE, DONE), an incremental backup as a backup
# tool does it (bitmap, writes through the server, dirty extents from nbdinfo --map and from
# qemu-img map x-dirty-bitmap, only those copied onto the last full copy, qemu-img compare),
# allocation depth on a 3-layer chain, and qemu-nbd's errors for a missing or inconsistent bitmap.
# Usage: bash nbd_meta.sh /path/to/keel
set -euo pipefail
KEEL=$(realpath "${1:?usage: $0 /path/to/keel}")
HERE=$(dirname "$(realpath "$0")")
PROBE="/usr/bin/python3 $HERE/nbd_meta_probe.py"
source "$(dirname "$(realpath "$0")")/nbd_lib.bash"
nbd_setup meta
uri() { echo "nbd+unix:///?socket=$1"; }
# start SERVER SOCKET ARGS...: SERVER is keel or qemu; returns once the socket accepts.
start() {
  local which=$1 sock=$2; shift 2
  rm -f "$sock"
  if [ "$which" = keel ]; then
    serve_fork "$sock.pid" "$KEEL" serve -k "$sock" "$@"
  else
    serve_fork "$sock.pid" qemu-nbd -k "$sock" "$@"
  fi
}
qio() {  # qio SOCKET COMMANDS...
  local sock=$1; shift
  local args=()
  for c in "$@"; do args+=(-c "$c"); done
  timeout 120 qemu-io -f raw "${args[@]}" "$(uri "$sock")" >"$T/qio.out" 2>&1 ||
    fail "qemu-io $*: $(cat "$T/qio.out")"
  if grep -q -i "fail\|error" "$T/qio.out"; then fail "qemu-io $*: $(cat "$T/qio.out")"; fi
}
# same WHAT: $T/WHAT.qemu (from qemu-nbd) and $T/WHAT.keel (from keel serve) must be identical.
same() {
  local what=$1
  diff -u "$T/$what.qemu" "$T/$what.keel" >"$T/diff" || fail "$what differs from qemu-nbd: $(cat "$T/diff")"
}

echo "== LIST/SET_META_CONTEXT and BLOCK_STATUS replies, compared with qemu-nbd"
qemu-img create -q -f qcow2 "$T/p.qcow2" 64M
qemu-img bitmap --add "$T/p.qcow2" b0
qemu-img bitmap --add --disable "$T/p.qcow2" b1
# Whole clusters only: for a partly written cluster qemu-nbd's base:allocation reports the
# unwritten tail as zero (a hole in its host file), keel the whole cluster as data.
qemu-io -f qcow2 -c 'write -q 1M 64k' -c 'write -q 3M 192k' -c 'write -q -z 8M 128k' \
  -c 'write -q 0 64k' "$T/p.qcow2" >/dev/null
STEPS=(list: sr list: list:base: list:qemu: list:qemu:dirty-bitmap: list:qemu:dirty-bitmap:b1
  list:qemu:allocation-depth list:qemu:foo list:base:allocation listx:foo:base: set:qemu:
  set:qemu:dirty-bitmap:b0 set:qemu:dirty-bitmap:b0,base:allocation,qemu:allocation-depth,qemu:dirty-bitmap:b1
  go bs:0:8388608 bs:1048576:100000:reqone bs:1000:1000 bs:0:67108864 bs:3200000:10 bs:66000000:2000000)
for s in qemu keel; do
  cp "$T/p.qcow2" "$T/p-$s.qcow2"
  start "$s" "$T/p-$s.sock" -f qcow2 -B b0 -B b1 -A "$T/p-$s.qcow2"
  $PROBE "$T/p-$s.sock" "${STEPS[@]}" >"$T/probe.$s" || fail "probe of $s"
  stop_server "$T/p-$s.sock"
done
same probe
grep -q "id=3 done=1" "$T/probe.keel" || fail "no bitmap extents in $(cat "$T/probe.keel")"
# A SET that matches nothing: BLOCK_STATUS is refused (EINVAL) by both.
for s in qemu keel; do
  start "$s" "$T/p-$s.sock" -f qcow2 -B b0 "$T/p-$s.qcow2"
  $PROBE "$T/p-$s.sock" sr set:qemu:allocation-depth go bs:0:4096 >"$T/none.$s" || fail "probe of $s"
  stop_server "$T/p-$s.sock"
done
same none

echo "== incremental backup through keel serve, as qemu-nbd does it"
qemu-img create -q -f qcow2 "$T/d.qcow2" 64M
qemu-io -f qcow2 -c 'write -q -P 0x11 0 8M' -c 'write -q -P 0x22 20M 4M' "$T/d.qcow2" >/dev/null
# The full backup, and the bitmap that records what changes after it.
qemu-img convert -f qcow2 -O raw "$T/d.qcow2" "$T/full.raw"
qemu-img bitmap --add "$T/d.qcow2" inc
qemu-img bitmap --add --disable "$T/d.qcow2" off
WRITES=('write -P 0x33 1M 64k' 'write -P 0x44 5000 3000' 'write -P 0x55 21M 1M' 'write -z 30M 2M'
  'write -P 0x66 63M 1M' 'flush')
for s in qemu keel; do
  cp "$T/d.qcow2" "$T/d-$s.qcow2"
  S=$T/d-$s.sock
  start "$s" "$S" -t -f qcow2 -B inc -B off "$T/d-$s.qcow2"
  qio "$S" "${WRITES[@]}"
  timeout 60 nbdinfo --map=qemu:dirty-bitmap:inc --json "$(uri "$S")" >"$T/inc.$s" ||
    fail "nbdinfo --map=qemu:dirty-bitmap:inc on $s"
  timeout 60 nbdinfo --map=qemu:dirty-bitmap:off "$(uri "$S")" >"$T/off.$s" ||
    fail "nbdinfo --map=qemu:dirty-bitmap:off on $s"
  timeout 60 qemu-img map --output=json --image-opts \
    "driver=nbd,server.type=unix,server.path=$S,x-dirty-bitmap=qemu:dirty-bitmap:inc" \
    >"$T/map.$s" || fail "qemu-img map x-dirty-bitmap on $s"
  # The backup tool: copy only the dirty extents, read through the export, onto the full copy.
  cp "$T/full.raw" "$T/inc-$s.raw"
  mapfile -t READS < <(/usr/bin/python3 -c '
import json, sys
for e in json.load(open(sys.argv[1])):
    if e["type"] & 1:
        print("read:%d:%d:%s" % (e["offset"], e["length"], sys.argv[2]))' "$T/inc.$s" "$T/inc-$s.raw")
  [ "${#READS[@]}" -gt 0 ] || fail "no dirty extent on $s: $(cat "$T/inc.$s")"
  $PROBE "$S" sr go "${READS[@]}" >/dev/null || fail "reading the dirty extents from $s"
  stop_server "$S"
  qemu-img compare -q -f raw -F qcow2 "$T/inc-$s.raw" "$T/d-$s.qcow2" ||
    fail "full copy + dirty extents differs from the image served by $s"
  qemu-img check -q "$T/d-$s.qcow2" || fail "qemu-img check after serving with $s"
done
same inc
same off
same map
grep -q dirty "$T/off.keel" && fail "the disabled bitmap tracked writes: $(cat "$T/off.keel")"
# The tracked bits were stored at exit: qemu-nbd reads the same extents from keel's image, and
# the bitmap is consistent (no in-use flag).
qemu-img info --output=json "$T/d-keel.qcow2" | grep -q '"in-use"' && fail "bitmap left in-use"
start qemu "$T/r.sock" -r -f qcow2 -B inc "$T/d-keel.qcow2"
timeout 60 nbdinfo --map=qemu:dirty-bitmap:inc --json "$(uri "$T/r.sock")" >"$T/inc.persisted" ||
  fail "nbdinfo on the persisted bitmap"
stop_server "$T/r.sock"
diff -u "$T/inc.keel" "$T/inc.persisted" >"$T/diff" || fail "persisted bitmap differs: $(cat "$T/diff")"

echo "== qemu:allocation-depth on a 3-layer chain, compared with qemu-nbd"
qemu-img create -q -f qcow2 "$T/base.qcow2" 32M
qemu-io -f qcow2 -c 'write -q 0 1M' -c 'write -q 8M 1M' -c 'write -q 30M 2M' "$T/base.qcow2" >/dev/null
qemu-img create -q -f qcow2 -b "$T/base.qcow2" -F qcow2 "$T/mid.qcow2" 48M
qemu-io -f qcow2 -c 'write -q 512k 1M' -c 'write -q -z 8M 64k' -c 'write -q 40M 1M' "$T/mid.qcow2" >/dev/null
qemu-img create -q -f qcow2 -b "$T/mid.qcow2" -F qcow2 "$T/top.qcow2" 64M
qemu-io -f qcow2 -c 'write -q 2M 64k' -c 'write -q -z 0 64k' -c 'write -q 8256k 64k' \
  -c 'write -q 60M 100k' "$T/top.qcow2" >/dev/null
for s in qemu keel; do
  start "$s" "$T/c-$s.sock" -r -f qcow2 -A "$T/top.qcow2"
  timeout 60 nbdinfo --map=qemu:allocation-depth "$(uri "$T/c-$s.sock")" >"$T/depth.$s" ||
    fail "nbdinfo --map=qemu:allocation-depth on $s"
  stop_server "$T/c-$s.sock"
done
same depth
grep -q "backing depth 3" "$T/depth.keel" || fail "no extent from the base: $(cat "$T/depth.keel")"

echo "== bad bitmaps: qemu-nbd's errors"
err_of() {  # err_of SERVER ARGS...: the server's one-line error, without the program name
  local which=$1; shift
  if [ "$which" = keel ]; then
    timeout 30 "$KEEL" serve -k "$T/e.sock" "$@" 2>"$T/err" && fail "keel serve $* started"
  else
    timeout 30 qemu-nbd -k "$T/e.sock" "$@" 2>"$T/err" && fail "qemu-nbd $* started"
  fi
  sed -e 's/^keel: //' -e 's/^qemu-nbd: //' "$T/err"
}
for s in qemu keel; do err_of "$s" -f qcow2 -B nope "$T/p.qcow2" >"$T/missing.$s"; done
same missing
grep -qx "Bitmap 'nope' is not found" "$T/missing.keel" || fail "missing: $(cat "$T/missing.keel")"
# A bitmap left in-use by a server killed while it tracked writes.
cp "$T/p.qcow2" "$T/u.qcow2"
start keel "$T/u.sock" -t -f qcow2 -B b0 "$T/u.qcow2"
qio "$T/u.sock" 'write -P 0xcd 0 64k' 'flush'
kill9_wait "$(cat "$T/u.sock.pid")" || fail "server did not exit after SIGKILL"
wait_unlocked "$T/u.qcow2" || fail "the image stayed locked after SIGKILL"
qemu-img info -U --output=json "$T/u.qcow2" | grep -q '"in-use"' || fail "bitmap not in-use after SIGKILL"
for s in qemu keel; do err_of "$s" -f qcow2 -B b0 "$T/u.qcow2" >"$T/inuse.$s"; done
same inuse
grep -qx "Bitmap 'b0' is inconsistent and cannot be used" "$T/inuse.keel" || fail "in-use: $(cat "$T/inuse.keel")"
# The SIGKILL left the image consistent and the flushed write in place.
qemu-img check -q "$T/u.qcow2" || fail "qemu-img check after SIGKILL while tracking"
qemu-io -f qcow2 -c 'read -q -P 0xcd 0 64k' "$T/u.qcow2" | grep -q -i fail &&
  fail "flushed write lost after SIGKILL while tracking"
echo PASS
