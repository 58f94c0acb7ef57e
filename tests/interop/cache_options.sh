#!/usr/bin/env bash
# Proves: QEMU's qcow2 cache options (cache-size, l2-cache-size, refcount-cache-size,
# l2-cache-entry-size, cache-clean-interval) given through --image-opts are accepted and refused
# by `keel io` exactly where qemu-io accepts and refuses them, with qemu-io's message; and that
# caches far smaller than the image's metadata (every request an L2 miss, refcount blocks
# evicted) still write what qemu-io reads back, with qemu-img check clean.
source "$(dirname "$0")/cli_lib.bash" "$@"

qemu-img create -q -f qcow2 -o cluster_size=4k c.qcow2 256M

say "option sets: same acceptance, same message as qemu-io"
while IFS= read -r o; do
  [ -z "$o" ] && continue
  spec="driver=qcow2,file.filename=c.qcow2,$o"
  q=$(qemu-io --image-opts -c 'read 0 4k' "$spec" 2>&1)
  k=$("$KEEL" io --image-opts -c 'read 0 4k' "$spec" 2>&1)
  qok=0; grep -q "^read 4096/4096" <<<"$q" && qok=1
  kok=0; grep -q "^read 4096/4096" <<<"$k" && kok=1
  [ $qok = $kok ] || fail "$o: qemu-io ok=$qok, keel ok=$kok: qemu: $q / keel: $k"
  if [ $qok = 0 ]; then
    # The reason: the first line after "can't open: " (both tools print that form since keel io
    # stopped adding "Could not open 'F': "), and the lines after it.
    want=$(sed -n '1s/^qemu-io: can.t open: //p; 2,$p' <<<"$q")
    got=$(sed -n '1s/^keel: can.t open: //p; 2,$p' <<<"$k")
    [ "$want" = "$got" ] || fail "$o: qemu-io says '$want', keel says '$got'"
  fi
  pass
done <<'OPTS'
l2-cache-size=1M
cache-size=1M
cache-size=64k
refcount-cache-size=8k,l2-cache-size=8k
cache-size=1M,l2-cache-size=2M
cache-size=1M,refcount-cache-size=2M
cache-size=1M,l2-cache-size=512k,refcount-cache-size=512k
cache-size=1M,l2-cache-size=512k
l2-cache-entry-size=512
l2-cache-entry-size=4k
l2-cache-entry-size=1000
l2-cache-entry-size=8k
l2-cache-size=abc
l2-cache-size=1.5M
l2-cache-size=-1
cache-clean-interval=0
cache-clean-interval=1
cache-clean-interval=x
cache-clean-interval=-1
cache-clean-interval=5000000000
OPTS

say "tiny caches: writes over 64 L2 tables, read back by qemu-io, qemu-img check clean"
cmds=()
for i in $(seq 0 63); do cmds+=(-c "write -P $((i + 1)) $((i * 4))M 8k"); done
run_ok "keel io with 8 KiB caches" "$KEEL" io --image-opts "${cmds[@]}" \
  driver=qcow2,file.filename=c.qcow2,l2-cache-size=8k,refcount-cache-size=8k,cache-clean-interval=1
reads=()
for i in $(seq 0 63); do reads+=(-c "read -P $((i + 1)) $((i * 4))M 8k"); done
out=$(qemu-io -r "${reads[@]}" c.qcow2 2>&1)
grep -q "Pattern verification failed" <<<"$out" && fail "qemu-io read back other data: $out"
pass
run_ok "qemu-img check" qemu-img check c.qcow2
pass
finish
