#!/usr/bin/env bash
# Proves keel io's aio_read / aio_write are asynchronous requests on keel serve's data path
# (src/cli/async_image_io.h) and report like qemu-io 7.2's: on twins of a QEMU-made image, keel io
# and qemu-io print the same report lines (sorted: requests in flight together complete in any
# order) and exit with the same status for batches of overlapping aio writes, aio_flush and
# verifying aio reads, a pattern mismatch, a request past the end, -z, -f and -q, with -i threads
# and -i io_uring, cache none and writeback, and leave identical, clean images; with -i io_uring
# the reads and overwrites went by direct I/O (KEEL_DEBUG's count), with -i threads none did;
# every report of a batch is printed before the next synchronous command's.
# Usage: bash io_aio.sh /path/to/keel
set -euo pipefail
HERE=$(dirname "$(realpath "$0")")
source "$HERE/cli_lib.bash"
source "$HERE/parity_lib.bash"

image() {
  qemu-img create -q -f qcow2 a.qcow2 16M
  qemu-io -c "write -P 0x11 0 4M" a.qcow2 >/dev/null
}

# aio_twin DESC ARGS...: qemu-io and keel io with ARGS; same exit status, same sorted stdout.
aio_twin() {
  local desc=$1; shift
  local qrc=0 krc=0
  (cd "$T/q" && qemu-io "$@") >"$T/q.io" 2>"$T/q.io.err" || qrc=$?
  (cd "$T/k" && KEEL_DEBUG=1 "$KEEL" io "$@") >"$T/k.io" 2>"$T/k.io.err" || krc=$?
  [ $qrc -eq $krc ] || { cat "$T/q.io" "$T/q.io.err" "$T/k.io" "$T/k.io.err" >&2; fail "$desc: qemu-io exited $qrc, keel io $krc"; }
  normalize_io <"$T/q.io" | sort >"$T/q.io.n"
  normalize_io <"$T/k.io" | sort >"$T/k.io.n"
  same_file "$desc: stdout" "$T/q.io.n" "$T/k.io.n"
}

# direct_count: the "N by direct I/O" of keel io's last run.
direct_count() { sed -n 's/.*aio: [0-9]* requests, \([0-9]*\) by direct I\/O.*/\1/p' "$T/k.io.err" | tail -n 1; }

batch=()
for i in 0 1 2 3 4 5 6 7; do batch+=(-c "aio_write -P 0x$((20 + i)) $((i * 64))k 64k"); done
batch+=(-c "aio_write -P 0x30 2M 1M" -c "aio_write -P 0x31 3M 512k")  # overwrites of 0x11 data
batch+=(-c "aio_flush")
for i in 0 1 2 3 4 5 6 7; do batch+=(-c "aio_read -P 0x$((20 + i)) $((i * 64))k 64k"); done
batch+=(-c "aio_read -P 0x30 2M 1M" -c "aio_read -P 0x31 3M 512k" -c "aio_read -P 0x11 3584k 512k")

for aio in threads io_uring; do
  for cache in none writeback; do
    say "-i $aio -t $cache"
    twin_setup image
    aio_twin "$aio/$cache: writes, flush, verifying reads" -i "$aio" -t "$cache" "${batch[@]}" a.qcow2
    n=$(direct_count)
    if [ "$aio" = io_uring ]; then
      # 10 overwrites of the 0x11 data and 11 reads of allocated data: at least the reads.
      [ "${n:-0}" -ge 11 ] || { cat "$T/k.io.err" >&2; fail "$aio/$cache: only ${n:-0} requests by direct I/O"; }
    else
      [ "${n:-x}" = 0 ] || { cat "$T/k.io.err" >&2; fail "$aio/$cache: $n requests by direct I/O (expected 0)"; }
    fi
    pass
    same_content "$aio/$cache: images after the batch" a.qcow2
    clean "$aio/$cache: keel's image" a.qcow2
    aio_twin "$aio/$cache: mismatch, past the end, -q, -z, -f" -i "$aio" -t "$cache" \
      -c "aio_read -P 0x99 0 64k" -c "aio_read 16M 64k" -c "aio_write 16M 512" \
      -c "aio_write -q -P 0x40 8M 64k" -c "aio_write -z 9M 64k" -c "aio_write -f -P 0x41 10M 4k" \
      -c "aio_flush" -c "aio_read -v 10M 32" -c "aio_flush" -c "read -P 0x40 8M 64k" \
      -c "read -P 0 9M 64k" a.qcow2
    same_content "$aio/$cache: images after the errors" a.qcow2
  done
done

say "reports of a batch come before the next command's own report"
twin_setup image
(cd "$T/k" && "$KEEL" io -i io_uring -t none -c "aio_write -P 0x51 0 64k" -c "aio_write -P 0x52 64k 64k" \
  -c "read -P 0x52 64k 64k" a.qcow2) >"$T/order.out"
normalize_io <"$T/order.out" >"$T/order.n"
[ "$(sed -n 5p "$T/order.n")" = "read 65536/65536 bytes at offset 65536" ] ||
  { cat "$T/order.n" >&2; fail "the read's report is not after both aio_write reports"; }
pass

say "aio_read and aio_write: $CHECKS checks passed"
