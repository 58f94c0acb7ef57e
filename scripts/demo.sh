#!/usr/bin/env bash
# make run: create a demo qcow2 image, serve it over NBD with `keel serve` on a unix socket,
# show with nbdinfo that it works, print how to connect with nbdinfo, qemu-io, qemu-img and
# qemu-system, then keep serving in the foreground until Ctrl-C (which stops the server
# cleanly: requests in flight finish, the image is flushed and closed).
# KEEL_DEMO_SECONDS=N serves for N seconds instead of until Ctrl-C (for unattended runs).
set -euo pipefail
cd "$(dirname "$0")/.."
K=$PWD/build/keel
D=$(mktemp -d /tmp/keel-demo.XXXXXX)
IMG=$D/demo.qcow2
SOCK=$D/nbd.sock
URI="nbd+unix:///?socket=$SOCK"

echo "== creating $IMG (1 GiB, 1 MiB of 0xab at 0, 64 KiB of 0xcd at 64 MiB)"
$K create -q -f qcow2 "$IMG" 1G
$K io -c "write -P 0xab 0 1M" -c "write -P 0xcd 64M 64k" "$IMG" >/dev/null
$K info "$IMG"

echo
echo "== starting: keel serve -t -e 4 -f qcow2 -k $SOCK $IMG"
$K serve -t -e 4 -f qcow2 -k "$SOCK" --pid-file "$D/serve.pid" "$IMG" &
SERVER=$!
stop() {
  trap - EXIT INT TERM
  if kill -0 "$SERVER" 2>/dev/null; then
    kill -TERM "$SERVER" 2>/dev/null || true
    wait "$SERVER" 2>/dev/null || true
  fi
  echo
  echo "server stopped; the image is still at $IMG"
}
trap stop EXIT
trap 'exit 0' INT TERM
for _ in $(seq 100); do
  [ -s "$D/serve.pid" ] && break
  kill -0 "$SERVER" 2>/dev/null || { echo "keel serve failed to start" >&2; exit 1; }
  sleep 0.05
done

if command -v nbdinfo >/dev/null; then
  echo
  echo "== nbdinfo $URI"
  timeout 30 nbdinfo "$URI"
  echo
  echo "== nbdinfo --map $URI"
  timeout 30 nbdinfo --map "$URI"
fi
if command -v qemu-io >/dev/null; then
  echo
  echo "== qemu-io: check the pattern over NBD"
  timeout 30 qemu-io -f raw -c 'read -P 0xab 0 1M' -c 'read -P 0xcd 64M 64k' "$URI"
fi

cat <<EOF

Keel is serving $IMG over NBD on $SOCK.
Connect with:
  nbdinfo --map '$URI'
  nbdcopy '$URI' copy.raw
  qemu-io -f raw -c 'read -P 0xab 0 1M' -c 'write -P 0x11 2M 4k' '$URI'
  qemu-img info -f raw '$URI'
  qemu-img convert -f raw -O qcow2 '$URI' copy.qcow2
  qemu-system-x86_64 -accel tcg -m 512 -nographic \\
      -drive file=nbd:unix:$SOCK,format=raw,if=virtio,cache=none ...
(See docs/serve.md for booting a VM from keel serve.)
EOF

if [ -n "${KEEL_DEMO_SECONDS:-}" ]; then
  echo "Serving for $KEEL_DEMO_SECONDS seconds."
  sleep "$KEEL_DEMO_SECONDS"
  exit 0
fi
echo "Serving until Ctrl-C."
wait "$SERVER"
