#!/usr/bin/env bash
# Cost per allocation as the image grows (issue 14: flat within 1.5x from 1k to 1M allocated
# clusters). For each fill level N: a fresh qcow2 image with 4 KiB clusters gets N clusters
# allocated (keel bench, writeback, untimed), then the next BENCH_COUNT allocating writes are
# timed with keel bench and with qemu-img bench on an identical copy. Prints microseconds per
# allocation and the ratio to the smallest level.
#   bench/alloc_scaling.sh [KEEL_BINARY]       (default build/keel; ~2 min)
set -euo pipefail
KEEL=$(realpath "${1:-build/keel}")
LEVELS=${BENCH_LEVELS:-1000 10000 100000 1000000}
COUNT=${BENCH_COUNT:-8192}
DIR=$(mktemp -d /tmp/keel-scaling.XXXXXX)
trap 'rm -rf "$DIR"' EXIT
secs() { "$@" | sed -n 's/Run completed in \([0-9.]*\) seconds./\1/p'; }
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%10s %12s %12s %10s\n' allocated keel_us qemu_us keel_rel
base=""
for n in $LEVELS; do
  img=$DIR/s.qcow2
  rm -f "$img"
  qemu-img create -q -f qcow2 -o cluster_size=4k "$img" $(((n + COUNT) * 4096 + 1048576))
  "$KEEL" bench -q -f qcow2 -t writeback -d 32 -w -s 4k -c "$n" "$img" >/dev/null
  cp --sparse=always "$img" "$DIR/q.qcow2"
  # Settle: the fill and the copy leave up to 2 x 4 GiB dirty in the page cache at 1M clusters;
  # without this the timed runs share the disk with its write-back.
  sync
  k=$(secs "$KEEL" bench -f qcow2 -t writeback -d 32 -w -s 4k -c "$COUNT" -o $((n * 4096)) "$img")
  qm=$(secs qemu-img bench -f qcow2 -t writeback -d 32 -w -s 4k -c "$COUNT" -o $((n * 4096)) "$DIR/q.qcow2")
  ku=$(python3 -c "print(round($k * 1e6 / $COUNT, 2))")
  qu=$(python3 -c "print(round($qm * 1e6 / $COUNT, 2))")
  [ -z "$base" ] && base=$ku
  printf '%10s %12s %12s %10s\n' "$n" "$ku" "$qu" "$(python3 -c "print(round($ku / $base, 2))")"
  rm -f "$img" "$DIR/q.qcow2"
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
