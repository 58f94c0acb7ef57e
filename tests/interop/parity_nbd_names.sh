#!/usr/bin/env bash
# Proves keel takes NBD exports as images as qemu-img and qemu-io do (nbd+unix://, nbd://,
# nbd:unix:, nbd:HOST:PORT and json: driver=nbd names, through libnbd): info, map, compare,
# convert, measure and io on the same qemu-nbd export print the same lines and exit codes, writes
# land in the export; and that keel serve -L lists exports as qemu-nbd -L does and keel serve
# --offset exports a raw image from an offset as qemu-nbd --offset does.
# Usage: bash parity_nbd_names.sh /path/to/keel
set -euo pipefail
HERE=$(dirname "$(realpath "$0")")
source "$HERE/cli_lib.bash"
source "$HERE/parity_lib.bash"

PIDS=()
cleanup_servers() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$T"
}
trap cleanup_servers EXIT

# serve NAME CMD...: starts an NBD server (qemu-nbd or keel serve, with --fork --pid-file) and
# remembers its pid.
serve() {
  local name=$1; shift
  "$@" --fork --pid-file "$T/$name.pid" || fail "cannot start $name: $*"
  PIDS+=("$(cat "$T/$name.pid")")
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

qemu-img create -q -f qcow2 "$T/a.qcow2" 4M
qemu-io -c 'write -P 0x11 0 64k' -c 'write -z 1M 64k' -c 'write -P 0x22 3M 8k' "$T/a.qcow2" >/dev/null
S=$T/ro.sock
serve ro qemu-nbd -r -t -e 8 -f qcow2 -k "$S" -x exp "$T/a.qcow2"
PORT=$(free_port)
serve tcp qemu-nbd -r -t -e 8 -f qcow2 -b 127.0.0.1 -p "$PORT" "$T/a.qcow2"

say "reading an NBD export: info, map, compare, measure, convert"
for name in "nbd+unix:///exp?socket=$S" "nbd:unix:$S:exportname=exp" "nbd://127.0.0.1:$PORT" \
            "nbd:127.0.0.1:$PORT" "json:{\"driver\":\"nbd\",\"server\":{\"type\":\"unix\",\"path\":\"$S\"},\"export\":\"exp\"}"; do
  twin_run "info $name" info "$name"
  twin_run "info --output=json $name" info --output=json "$name"
  twin_run "map $name" map "$name"
  twin_run "map --output=json $name" map --output=json "$name"
  twin_run "compare $name" compare "$name" "$T/a.qcow2"
  twin_run "measure $name" measure -O qcow2 "$name"
done
twin_run "--image-opts driver=nbd" info --image-opts "driver=nbd,server.type=unix,server.path=$S,export=exp"
twin_run "convert from NBD" convert -O raw "nbd+unix:///exp?socket=$S" c.raw
same_content "convert from NBD" c.raw
twin_run "compare two NBD exports" compare "nbd+unix:///exp?socket=$S" "nbd://127.0.0.1:$PORT"

say "the same errors"
twin_run "no such socket" info "nbd+unix:///?socket=$T/nope.sock"
twin_run "no such socket (legacy)" info "nbd:unix:$T/nope.sock"
twin_run "nbd+unix without socket" info "nbd+unix:///exp"
twin_run "query on nbd://" info "nbd://127.0.0.1:$PORT/x?socket=/x"
twin_rc "no such export" info "nbd+unix:///nope?socket=$S"

say "qemu-io on NBD"
io_twin "read" -r -c 'read -P 0x11 0 64k' -c 'read -P 0 1M 64k' "nbd+unix:///exp?socket=$S"
io_twin "read (json:)" -r -c 'read -P 0x22 3M 8k' "json:{\"driver\":\"nbd\",\"server\":{\"type\":\"unix\",\"path\":\"$S\"},\"export\":\"exp\"}"
io_twin "map" -r -c 'map' "nbd:unix:$S:exportname=exp"
cp "$T/a.qcow2" "$T/q/w.qcow2"
cp "$T/a.qcow2" "$T/k/w.qcow2"
serve wq qemu-nbd -t -f qcow2 -k "$T/wq.sock" "$T/q/w.qcow2"
serve wk qemu-nbd -t -f qcow2 -k "$T/wk.sock" "$T/k/w.qcow2"
qemu-io -c 'write -P 0x55 4k 100k' -c 'write -z 2M 4k' -c flush "nbd+unix:///?socket=$T/wq.sock" >/dev/null ||
  fail "qemu-io write over NBD"
run_ok "keel io writes over NBD" "$KEEL" io -c 'write -P 0x55 4k 100k' -c 'write -z 2M 4k' -c flush "nbd+unix:///?socket=$T/wk.sock"
stop_pid "${PIDS[-1]}" && stop_pid "${PIDS[-2]}" || fail "qemu-nbd did not exit after SIGTERM"
same_content "writes over NBD" w.qcow2

say "keel serve -L and qemu-nbd -L"
list_twin() {
  local desc=$1; shift
  local qrc=0 krc=0
  qemu-nbd -L "$@" >"$T/q.out" 2>"$T/q.err" || qrc=$?
  "$KEEL" serve -L "$@" >"$T/k.out" 2>"$T/k.err" || krc=$?
  [ $qrc -eq $krc ] || { cat "$T/q.err" "$T/k.err" >&2; fail "$desc: qemu-nbd -L exited $qrc, keel serve -L $krc"; }
  sed -i 's/^qemu-nbd: /keel: /' "$T/q.err"
  same_file "$desc: stdout" "$T/q.out" "$T/k.out"
  same_file "$desc: stderr" "$T/q.err" "$T/k.err"
}
list_twin "-L of a qemu-nbd server (unix)" -k "$S"
list_twin "-L of a qemu-nbd server (tcp)" -b 127.0.0.1 -p "$PORT"
serve ks "$KEEL" serve -r -t -e 4 -f qcow2 -k "$T/ks.sock" -x kexp -D "a keel export" "$T/a.qcow2"
list_twin "-L of a keel server" -k "$T/ks.sock"
list_twin "-L, nothing listening" -k "$T/nope.sock"
list_twin "-L with a file" -k "$S" "$T/a.qcow2"
list_twin "-L with an export name" -k "$S" -x foo

say "--offset on a raw image"
qemu-img convert -O raw "$T/a.qcow2" "$T/r.raw"
serve oq qemu-nbd -r -t -f raw -o 1048576 -k "$T/oq.sock" "$T/r.raw"
serve ok "$KEEL" serve -r -t -f raw -o 1048576 -k "$T/ok.sock" "$T/r.raw"
qemu-img info --output=json "nbd+unix:///?socket=$T/oq.sock" >"$T/oq.info"
qemu-img info --output=json "nbd+unix:///?socket=$T/ok.sock" | sed "s|ok.sock|oq.sock|" >"$T/ok.info"
same_file "--offset: the export's size" "$T/oq.info" "$T/ok.info"
qemu-img convert -O raw "nbd+unix:///?socket=$T/oq.sock" "$T/oq.raw"
qemu-img convert -O raw "nbd+unix:///?socket=$T/ok.sock" "$T/ok.raw"
same_file "--offset: the export's bytes" "$T/oq.raw" "$T/ok.raw"
qrc=0; krc=0
qemu-nbd -o 1M -k "$T/y.sock" "$T/r.raw" 2>"$T/q.err" || qrc=$?
"$KEEL" serve -o 1M -k "$T/y.sock" "$T/r.raw" 2>"$T/k.err" || krc=$?
sed -i 's/^qemu-nbd: /keel: /' "$T/q.err"
[ $qrc -eq $krc ] || fail "--offset 1M: qemu-nbd exited $qrc, keel serve $krc"
same_file "--offset 1M: the message" "$T/q.err" "$T/k.err"
rc=0; "$KEEL" serve -o 1048576 -k "$T/x.sock" "$T/a.qcow2" 2>"$T/k.err" || rc=$?
[ $rc -eq 1 ] && grep -q "supports --offset for raw images only" "$T/k.err" || fail "--offset on qcow2: rc=$rc $(cat "$T/k.err")"
pass

finish
