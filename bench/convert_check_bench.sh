#!/usr/bin/env bash
# keel convert vs qemu-img convert, and keel check vs qemu-img check, interleaved rounds, median
# wall-clock seconds and ratios (bench/summarize.py).
#   - convert: a mixed qcow2 image (per 16 MiB: 6 MiB of data in 1 MiB writes, 1 MiB of zero
#     clusters, one compressed cluster, 16 scattered 4 KiB writes, the rest unallocated) to a new
#     qcow2 image and to a raw file, both tools with their default options (-f qcow2 -O fmt).
#   - convert: a 4 GiB mostly empty qcow2 image (16 MiB of data, seven scattered 1 MiB writes) to
#     qcow2 and raw, where block status decides the cost.
#   - check: the mixed image, then a large sparse image (bench/check_bench.sh: 1 TiB
#     virtual, BENCH_CHECK_EXTENTS extents of 1 MiB spread over it), whose own table (wall, CPU,
#     memory) is printed too.
#
#   bench/convert_check_bench.sh [KEEL_BINARY]  (default build/keel; one command, ~2 min)
#
# Environment:
#   BENCH_CONVERT_SIZE    virtual size of the mixed image (the issue's figure: 8G)    [1G]
#   BENCH_CHECK_EXTENTS   1 MiB extents of the large check image                     [2048]
#   BENCH_ROUNDS, BENCH_DIR, BENCH_OUT  as in img_bench.sh
set -euo pipefail
source "$(dirname "$0")/bench_lib.bash"
bench_init convert_check_bench "${1:-}"

SIZE=${BENCH_CONVERT_SIZE:-1G}
EXTENTS=${BENCH_CHECK_EXTENTS:-2048}
size_bytes=$(numfmt --from=iec "$SIZE")
MIXED=$DIR/mixed.qcow2
cleanup() { rm -f "$MIXED" "$DIR/empty4g.qcow2" "$DIR"/out.*; rm -rf "$DIR/check"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

machine_header
echo "creating the mixed image ($SIZE)..." >&2
qemu-img create -q -f qcow2 "$MIXED" "$SIZE"
region=$((16 << 20))
{
  for ((base = 0; base + region <= size_bytes; base += region)); do
    p=$(((base / region) % 250 + 1))
    for ((m = 0; m < 6; m++)); do echo "write -P $p $((base + m * 1048576)) 1M"; done
    echo "write -z $((base + 6 * 1048576)) 1M"
    echo "write -c -P $((p ^ 0x55)) $((base + 7 * 1048576)) 64k"
    for ((j = 0; j < 16; j++)); do echo "write -P $((p ^ 0xaa)) $((base + 8 * 1048576 + j * 65536 + 4096)) 4k"; done
  done
  echo quit
} | qemu-io -t unsafe "$MIXED" >/dev/null
qemu-img check -q "$MIXED" || { echo "convert_check_bench: the mixed image is not clean" >&2; exit 1; }
echo "mixed image: $SIZE virtual, $(du -m "$MIXED" | cut -f1) MiB allocated"
# The issue-15 second case: a 4 GiB image that is mostly empty (16 MiB of data at the start, one
# 1 MiB write every 512 MiB), where block status decides the cost.
EMPTY=$DIR/empty4g.qcow2
qemu-img create -q -f qcow2 "$EMPTY" 4G
empty_cmds=(-c "write -P 7 0 16M")
for ((g = 1; g < 8; g++)); do empty_cmds+=(-c "write -P $g $((g * 512))M 1M"); done
qemu-io -t unsafe "${empty_cmds[@]}" "$EMPTY" >/dev/null

# settle: removes the last output and lets the file system finish with it (sync, 1 s) before the
# next timed run, so no run pays for the deletion of the one before. (In the session-7 runs the
# 1 GiB converts still took anywhere from 0.33 to 0.99 s from one run to the next, for both tools
# alike and with or without this: the machine's spread, which 3 rounds do not average out.)
settle() {
  rm -f "$DIR/out.qcow2" "$DIR/out.raw"
  sync
  sleep 1
}

for ((round = 1; round <= ROUNDS; round++)); do
  echo "round $round/$ROUNDS (load $(cut -d' ' -f1 /proc/loadavg))" >&2
  for fmt in qcow2 raw; do
    for tool in $(rotated "$round" keel qemu); do
      settle
      if [ "$tool" = keel ]; then cmd=("$KEEL" convert); else cmd=(qemu-img convert); fi
      s=$(wall_seconds "${cmd[@]}" -f qcow2 -O "$fmt" "$MIXED" "$DIR/out.$fmt")
      record "convert $SIZE mixed -> $fmt" "$round" "$tool" "$s"
    done
    # Both tools must have produced the same guest content (checked once, outside the timing).
    if [ "$round" = 1 ]; then
      rm -f "$DIR/out.q.$fmt"
      qemu-img convert -f qcow2 -O "$fmt" "$MIXED" "$DIR/out.q.$fmt"
      "$KEEL" convert -f qcow2 -O "$fmt" "$MIXED" "$DIR/out.$fmt"
      qemu-img compare -q "$DIR/out.q.$fmt" "$DIR/out.$fmt" ||
        { echo "convert_check_bench: keel's and qemu-img's $fmt outputs differ" >&2; exit 1; }
      rm -f "$DIR/out.q.$fmt"
    fi
  done
  for fmt in qcow2 raw; do
    for tool in $(rotated "$round" keel qemu); do
      settle
      if [ "$tool" = keel ]; then cmd=("$KEEL" convert); else cmd=(qemu-img convert); fi
      s=$(wall_seconds "${cmd[@]}" -f qcow2 -O "$fmt" "$EMPTY" "$DIR/out.$fmt")
      record "convert 4G mostly empty -> $fmt" "$round" "$tool" "$s"
    done
  done
  for tool in $(rotated "$round" keel qemu); do
    if [ "$tool" = keel ]; then cmd=("$KEEL" check); else cmd=(qemu-img check); fi
    s=$(wall_seconds "${cmd[@]}" "$MIXED")
    record "check $SIZE mixed" "$round" "$tool" "$s"
  done
done

echo
echo "large sparse image: bench/check_bench.sh (1 TiB virtual, $EXTENTS MiB allocated)"
BENCH_DIR=$DIR/check BENCH_EXTENTS=$EXTENTS BENCH_CSV=$CSV \
  bash "$BENCH_HERE/check_bench.sh" "$KEEL" "$ROUNDS"
echo
summary
