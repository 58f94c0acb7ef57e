#!/usr/bin/env bash
# keel bench's two request engines side by side (issue 15: "-i io_uring >= -i threads"): 4 KiB
# random-ish reads and overwrites at depth 32 on a fully written qcow2 image, cache=none.
#   keel     = keel bench -i io_uring: one io_uring loop through Image::map_direct, as keel serve
#              --aio=io_uring does it (src/cli/bench_uring.cpp)
#   threads  = keel bench -i threads: the same requests through Image::read/write on threads
#   qemu     = qemu-img bench -i io_uring on the same image, for reference
# plus reads of an empty (all holes) image, which the io_uring path answers without I/O.
# The ratio column "keel vs X" is X's seconds / keel's: above 1, io_uring is faster.
#
#   bench/aio_bench.sh [KEEL_BINARY]   (~1 min)
# Environment: BENCH_AIO_SIZE [1G], BENCH_AIO_COUNT requests per run [100000], BENCH_ROUNDS,
# BENCH_DIR, BENCH_OUT as in img_bench.sh.
set -euo pipefail
source "$(dirname "$0")/bench_lib.bash"
bench_init aio_bench "${1:-}"

SIZE=${BENCH_AIO_SIZE:-1G}
COUNT=${BENCH_AIO_COUNT:-100000}
FULL=$DIR/full.qcow2
EMPTY=$DIR/empty.qcow2
trap 'rm -f "$FULL" "$EMPTY"' EXIT
trap 'exit 130' INT TERM

machine_header
echo "images: $SIZE, 64 KiB clusters; $COUNT requests of 4 KiB per run, depth 32, cache=none; step 68 KiB (every request in another cluster)"
qemu-img create -q -f qcow2 "$FULL" "$SIZE"
qemu-io -t none -c "write -P 0x5a 0 $SIZE" "$FULL" >/dev/null
qemu-img create -q -f qcow2 "$EMPTY" "$SIZE"

# Step 68 KiB: consecutive requests land in different clusters and wrap around the image.
common=(-f qcow2 -t none -c "$COUNT" -d 32 -s 4096 -S 69632)
for ((round = 1; round <= ROUNDS; round++)); do
  echo "round $round/$ROUNDS (load $(cut -d' ' -f1 /proc/loadavg))" >&2
  for wl in read overwrite holes; do
    img=$FULL; extra=()
    [ "$wl" = overwrite ] && extra=(-w)
    [ "$wl" = holes ] && img=$EMPTY
    for tool in $(rotated "$round" keel threads qemu); do
      case $tool in
        keel) cmd=("$KEEL" bench -i io_uring) ;;
        threads) cmd=("$KEEL" bench -i threads) ;;
        qemu) cmd=(qemu-img bench -i io_uring) ;;
      esac
      s=$(bench_seconds "${cmd[@]}" "${common[@]}" "${extra[@]}" "$img")
      record "$wl 4k d32 none" "$round" "$tool" "$s" "$COUNT"
    done
  done
done
echo
summary
