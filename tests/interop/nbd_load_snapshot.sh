#!/usr/bin/env bash
# Proves `keel serve -l` exports an internal snapshot read-only as `qemu-nbd -l` does: the same
# guest bytes through qemu-img over nbd+unix:// for both spellings (a bare name or id, and
# snapshot.id=/snapshot.name=), a write refused, and the same exit code for a missing snapshot or
# a bad parameter, with qemu-nbd's message. The image itself is not changed.
# Usage: bash nbd_load_snapshot.sh /path/to/keel
set -euo pipefail
KEEL=$(realpath "${1:?usage: $0 /path/to/keel}")
source "$(dirname "$(realpath "$0")")/nbd_lib.bash"
nbd_setup load_snapshot
cd "$T"
qemu-img create -q -f qcow2 i.qcow2 8M
qemu-io -c 'write -P 0x11 0 1M' -c 'write -P 0x44 6M 64k' i.qcow2 >/dev/null
qemu-img snapshot -c s1 i.qcow2
qemu-io -c 'write -P 0x22 0 512k' -c 'write -P 0x33 2M 1M' i.qcow2 >/dev/null
qemu-img snapshot -c s2 i.qcow2
qemu-io -c 'write -P 0x55 4M 1M' i.qcow2 >/dev/null
sum_before=$(md5sum <i.qcow2)

serve() {  # serve TOOL SOCKET ARGS...
  local tool=$1 sock=$2; shift 2
  if [ "$tool" = keel ]; then serve_fork "$sock.pid" "$KEEL" serve -k "$sock" "$@"
  else serve_fork "$sock.pid" qemu-nbd -k "$sock" "$@"; fi
}
checks=0
for spec in s1 1 snapshot.name=s2 snapshot.id=2; do
  serve qemu "$T/q.sock" -t -f qcow2 -l "$spec" i.qcow2
  serve keel "$T/k.sock" -t -f qcow2 -l "$spec" i.qcow2
  qemu-img convert -f raw -O raw "nbd+unix:///?socket=$T/q.sock" q.raw
  qemu-img convert -f raw -O raw "nbd+unix:///?socket=$T/k.sock" k.raw
  cmp -s q.raw k.raw || fail "-l $spec: keel exported other bytes than qemu-nbd"
  # The snapshot's content, not the active image's.
  case $spec in s1|1) want=0x11 ;; *) want=0x22 ;; esac
  out=$(qemu-io -f raw -r -c "read -P $want 0 64k" "nbd+unix:///?socket=$T/k.sock" 2>&1)
  grep -q "Pattern verification failed" <<<"$out" && fail "-l $spec: not the snapshot's data: $out"
  # Read-only: a write is refused.
  if qemu-io -f raw -c 'write -P 0x99 0 4k' "nbd+unix:///?socket=$T/k.sock" 2>&1 | grep -q "^wrote"; then
    fail "-l $spec: a write to the export succeeded"
  fi
  # Gone before the next round serves on the same socket paths (an exiting server unlinks its path).
  for p in "${PIDS[@]}"; do stop_pid "$p" || fail "server $p did not exit after SIGTERM"; done
  PIDS=()
  checks=$((checks + 1))
done
[ "$(md5sum <i.qcow2)" = "$sum_before" ] || fail "the image changed"

# Errors: the same exit code and qemu-nbd's message.
for spec in nosuch snapshot.foo=1; do
  qrc=0; qemu-nbd -l "$spec" -k "$T/q.sock" i.qcow2 >q.err 2>&1 || qrc=$?
  krc=0; timeout 10 "$KEEL" serve -l "$spec" -k "$T/k.sock" i.qcow2 >k.err 2>&1 || krc=$?
  [ "$qrc" = "$krc" ] || fail "-l $spec: exit $krc, qemu-nbd $qrc"
  diff <(sed 's/^qemu-nbd: //' q.err) <(sed 's/^keel: //' k.err) >/dev/null ||
    fail "-l $spec: messages differ: qemu-nbd: $(cat q.err) / keel: $(cat k.err)"
  checks=$((checks + 1))
done
echo "PASS: nbd_load_snapshot: $checks checks"
