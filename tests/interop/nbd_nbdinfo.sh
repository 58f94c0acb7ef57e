#!/usr/bin/env bash
# Proves what libnbd's nbdinfo sees of `keel serve` (started through socket activation and on a
# unix socket): qemu-nbd 7.2's flags and block sizes, -r / -e / -x / -D, LIST, the allocation
# map of a qcow2 image written by qemu-io, and a clean image afterwards.
# Usage: bash nbd_nbdinfo.sh /path/to/keel
set -euo pipefail
KEEL=$(realpath "${1:?usage: $0 /path/to/keel}")
PY=/usr/bin/python3
source "$(dirname "$(realpath "$0")")/nbd_lib.bash"
nbd_setup info
start_server() {  # start_server SOCKET ARGS... (background, ready when this returns)
  local sock=$1; shift
  timeout 30 "$KEEL" serve --fork --pid-file "$sock.pid" -k "$sock" "$@" 2>>"$T/serve.log" ||
    fail "keel serve $* did not start"
  PIDS+=("$(cat "$sock.pid")")
}
# json_check FILE PYTHON-EXPR: asserts the expression over `j` (the parsed JSON) is true.
json_check() {
  "$PY" - "$1" "$2" <<'EOF' || fail "json check failed: $2 on $(cat "$1")"
import json, sys
j = json.load(open(sys.argv[1]))
sys.exit(0 if eval(sys.argv[2]) else 1)
EOF
}

IMG=$T/a.qcow2
qemu-img create -q -f qcow2 "$IMG" 64M
qemu-io -f qcow2 -c 'write -q -P 0xab 0 1M' -c 'write -q -P 0xcd 32M 64k' -c 'write -q -z 40M 1M' "$IMG" >/dev/null

echo "== socket activation, nbdinfo --json"
timeout 60 nbdinfo --json -- [ "$KEEL" serve -f qcow2 "$IMG" ] >"$T/info.json" 2>>"$T/serve.log" ||
  fail "nbdinfo --json failed"
E='j["exports"][0]'
json_check "$T/info.json" 'j["protocol"] == "newstyle-fixed" and j["structured"] is True'
json_check "$T/info.json" "$E['export-name'] == '' and $E['export-size'] == 64 << 20"
json_check "$T/info.json" "'base:allocation' in $E['contexts']"
for k in can_cache can_df can_fast_zero can_flush can_fua can_trim can_zero; do
  json_check "$T/info.json" "$E['$k'] is True"
done
json_check "$T/info.json" "$E['can_multi_conn'] is False and $E['is_read_only'] is False"
json_check "$T/info.json" "$E['is_rotational'] is False"
json_check "$T/info.json" \
  "($E['block_size_minimum'], $E['block_size_preferred'], $E['block_size_maximum']) == (1, 4096, 33554432)"

echo "== nbdinfo --map matches the image"
timeout 60 nbdinfo --map --json -- [ "$KEEL" serve -f qcow2 "$IMG" ] >"$T/map.json" 2>>"$T/serve.log" ||
  fail "nbdinfo --map failed"
json_check "$T/map.json" 'sum(e["length"] for e in j) == 64 << 20'
json_check "$T/map.json" '[(e["offset"], e["length"], e["type"]) for e in j] == [(0, 1 << 20, 0), (1 << 20, 31 << 20, 3), (32 << 20, 65536, 0), ((32 << 20) + 65536, (32 << 20) - 65536, 3)]'
timeout 60 nbdinfo --map --totals -- [ "$KEEL" serve -f qcow2 "$IMG" ] >"$T/totals" 2>>"$T/serve.log" ||
  fail "nbdinfo --map --totals failed"
grep -Eq "^ *$(((1 << 20) + 65536)) +[0-9.]+% +0 +data" "$T/totals" || fail "totals: $(cat "$T/totals")"

echo "== read-only (-r)"
timeout 60 nbdinfo --json -- [ "$KEEL" serve -r -f qcow2 "$IMG" ] >"$T/ro.json" 2>>"$T/serve.log" ||
  fail "nbdinfo -r failed"
json_check "$T/ro.json" "$E['is_read_only'] is True and $E['can_trim'] is False and $E['can_zero'] is False"
json_check "$T/ro.json" "$E['can_flush'] is True and $E['can_fua'] is True and $E['can_df'] is True"
timeout 60 nbdinfo --is read-only -- [ "$KEEL" serve -r "$IMG" ] 2>>"$T/serve.log" || fail "--is read-only"
rc=0
timeout 60 nbdinfo --is read-only -- [ "$KEEL" serve "$IMG" ] 2>>"$T/serve.log" || rc=$?
[ "$rc" = 2 ] || fail "writable export reported read-only (rc $rc)"

echo "== multi-conn only with -e N > 1"
timeout 60 nbdinfo --can multi-conn -- [ "$KEEL" serve -e 4 "$IMG" ] 2>>"$T/serve.log" || fail "-e 4: no multi-conn"
rc=0
timeout 60 nbdinfo --can multi-conn -- [ "$KEEL" serve "$IMG" ] 2>>"$T/serve.log" || rc=$?
[ "$rc" = 2 ] || fail "-e 1 advertised multi-conn (rc $rc)"

echo "== export name, description, LIST on a unix socket"
S=$T/s.sock
start_server "$S" -t -x disk0 -D "demo disk" -f qcow2 "$IMG"
timeout 60 nbdinfo --list --json "nbd+unix:///?socket=$S" >"$T/list.json" || fail "nbdinfo --list"
json_check "$T/list.json" "len(j['exports']) == 1 and $E['export-name'] == 'disk0' and $E['description'] == 'demo disk'"
timeout 60 nbdinfo --size "nbd+unix:///disk0?socket=$S" >"$T/size" || fail "nbdinfo --size"
[ "$(cat "$T/size")" = $((64 << 20)) ] || fail "size $(cat "$T/size")"
if timeout 60 nbdinfo "nbd+unix:///nope?socket=$S" >/dev/null 2>"$T/err"; then
  fail "unknown export accepted"
fi
grep -q "GO: export 'nope' not present" "$T/serve.log" || fail "unknown export not logged"
stop_server "$S"
[ ! -e "$S" ] || fail "socket file left behind"
[ ! -e "$S.pid" ] || fail "pid file left behind"

echo "== the image is clean"
qemu-img check -q "$IMG" || fail "qemu-img check"
qemu-img info --output=json "$IMG" >"$T/qinfo.json"
json_check "$T/qinfo.json" 'j.get("dirty-flag", False) is False'
qemu-io -f qcow2 -c 'read -q -P 0xab 0 1M' -c 'read -q -P 0xcd 32M 64k' -c 'read -q -P 0 40M 1M' "$IMG" ||
  fail "data changed"
echo PASS
