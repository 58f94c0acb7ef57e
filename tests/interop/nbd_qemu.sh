#!/usr/bin/env bash
# Proves QEMU's own NBD client works against `keel serve`: qemu-img convert into and out of an
# export and compare over nbd+unix://, qemu-io reads and writes with patterns (FUA, unaligned,
# write -z with and without -u, discard, flush), qemu-img map through BLOCK_STATUS, and
# --discard=unmap really deallocating; checked afterwards on the image file itself.
# Usage: bash nbd_qemu.sh /path/to/keel
set -euo pipefail
KEEL=$(realpath "${1:?usage: $0 /path/to/keel}")
PY=/usr/bin/python3
source "$(dirname "$(realpath "$0")")/nbd_lib.bash"
nbd_setup qemu
start_server() {  # start_server SOCKET ARGS...
  local sock=$1; shift
  timeout 30 "$KEEL" serve --fork --pid-file "$sock.pid" -k "$sock" "$@" 2>>"$T/serve.log" ||
    fail "keel serve $* did not start"
  PIDS+=("$(cat "$sock.pid")")
}
uri() { echo "nbd+unix:///?socket=$1"; }
qio() {  # qio SOCKET COMMANDS...: qemu-io -f raw on the export, failing on any error
  local sock=$1; shift
  local args=()
  for c in "$@"; do args+=(-c "$c"); done
  timeout 120 qemu-io -f raw "${args[@]}" "$(uri "$sock")" >"$T/qio.out" 2>&1 ||
    fail "qemu-io $*: $(cat "$T/qio.out")"
  if grep -Eq "Pattern verification failed|error|failed" "$T/qio.out"; then
    fail "qemu-io $*: $(cat "$T/qio.out")"
  fi
}

SIZE=$((32 << 20))
SRC=$T/src.raw
truncate -s $SIZE "$SRC"
for spec in "0 1024" "5000 77" "16384 2048" "32000 768"; do
  set -- $spec
  dd if=/dev/urandom of="$SRC" bs=1k seek="$1" count="$2" conv=notrunc status=none
done

echo "== qemu-img convert into an export, compare over NBD"
IMG=$T/a.qcow2
qemu-img create -q -f qcow2 "$IMG" $SIZE
S=$T/a.sock
start_server "$S" -t -e 2 -f qcow2 "$IMG"
timeout 120 qemu-img convert -n -f raw -O raw "$SRC" "$(uri "$S")" || fail "convert into the export"
timeout 120 qemu-img compare -f raw -F raw "$SRC" "$(uri "$S")" >/dev/null || fail "compare over NBD"
timeout 120 qemu-img convert -f raw -O qcow2 "$(uri "$S")" "$T/back.qcow2" || fail "convert out"
qemu-img compare -q -f raw -F qcow2 "$SRC" "$T/back.qcow2" || fail "converted-out image differs"
stop_server "$S"
qemu-img compare -q -f raw -F qcow2 "$SRC" "$IMG" || fail "served image differs"
qemu-img check -q "$IMG" || fail "qemu-img check after convert"

echo "== qemu-io patterns over NBD"
B=$T/b.qcow2
qemu-img create -q -f qcow2 "$B" 64M
S=$T/b.sock
start_server "$S" -t -f qcow2 "$B"
qio "$S" 'write -P 0x11 0 64k' 'write -f -P 0x22 1M 1M' 'write -P 0x33 1000 3000' \
  'write -P 0x44 8M 4M' 'write -z 9M 1M' 'write -z -u 10M 1M' 'discard 11M 512k' \
  'write -P 0x55 33554431 1' 'flush'
qio "$S" 'read -P 0x11 0 1000' 'read -P 0x33 1000 3000' 'read -P 0x11 4000 61536' \
  'read -P 0x22 1M 1M' 'read -P 0x44 8M 1M' 'read -P 0 9M 1M' 'read -P 0 10M 1M' \
  'read -P 0x44 11776k 256k' 'read -P 0x55 33554431 1' 'read -P 0 33554432 1M'
# Several requests in flight at once from one qemu-io (aio), then read back.
qio "$S" 'aio_write -P 0x66 20M 1M' 'aio_write -P 0x67 21M 1M' 'aio_write -P 0x68 22M 1M' \
  'aio_flush' 'aio_read -P 0x66 20M 1M' 'aio_read -P 0x67 21M 1M' 'aio_read -P 0x68 22M 1M' 'aio_flush'
# qemu-img map goes through BLOCK_STATUS with REQ_ONE.
timeout 60 qemu-img map --output=json -f raw "$(uri "$S")" >"$T/map.json" || fail "qemu-img map over NBD"
"$PY" - "$T/map.json" <<'EOF' || fail "map over NBD: $(cat "$T/map.json")"
import json, sys
m = json.load(open(sys.argv[1]))
def data_at(off):
    return next(e["data"] for e in m if e["start"] <= off < e["start"] + e["length"])
assert sum(e["length"] for e in m) == 64 << 20
assert data_at(0) and data_at(1 << 20) and data_at(8 << 20) and data_at(20 << 20)
assert not data_at(30 << 20) and not data_at(60 << 20)
assert not data_at(10 << 20)  # write -z -u may leave it unallocated; reads zero either way
EOF
stop_server "$S"
qemu-img check -q "$B" || fail "qemu-img check after qemu-io"
qemu-io -f qcow2 -c 'read -q -P 0x22 1M 1M' -c 'read -q -P 0x33 1000 3000' -c 'read -q -P 0 9M 1M' \
  -c 'read -q -P 0x68 22M 1M' "$B" >"$T/qio.out" 2>&1 || fail "file check: $(cat "$T/qio.out")"
grep -q "failed" "$T/qio.out" && fail "file check: $(cat "$T/qio.out")"

echo "== --discard=unmap deallocates"
C=$T/c.qcow2
qemu-img create -q -f qcow2 "$C" 16M
qemu-io -f qcow2 -c 'write -q -P 0x77 0 8M' "$C" >/dev/null
S=$T/c.sock
start_server "$S" -t --discard=unmap -f qcow2 "$C"
qio "$S" 'discard 2M 4M' 'read -P 0x77 0 2M' 'read -P 0x77 6M 2M'
stop_server "$S"
qemu-img map --output=json "$C" >"$T/cmap.json"
"$PY" - "$T/cmap.json" <<'EOF' || fail "discard=unmap did not deallocate: $(cat "$T/cmap.json")"
import json, sys
m = json.load(open(sys.argv[1]))
for e in m:
    lo, hi = e["start"], e["start"] + e["length"]
    if lo < (6 << 20) and hi > (2 << 20):
        assert not e["data"], e
EOF
qemu-img check -q "$C" || fail "qemu-img check after discard"

echo "== --discard=ignore (default) keeps the data allocated"
start_server "$S" -t -f qcow2 "$C"
qio "$S" 'discard 0 2M' 'read -P 0x77 0 2M'
stop_server "$S"
echo PASS
