#!/usr/bin/env bash
# keel bench vs qemu-img bench on the same qcow2 images (64 KiB clusters), with qemu-img bench
# -f raw on a preallocated raw file of the same size as the physical limit (the same requests
# with no mapping and no allocation at all). Workloads on fresh images also run qemu-img bench on a
# fallocated raw file ("raw-falloc"): blocks allocated but never written, as the new clusters of a
# growing image are, so the file system's unwritten-extent conversion is in that limit too. Every
# workload runs in both cache
# modes (none, writeback) and at the depths listed; the three tools run interleaved, in an order
# that rotates every round, for BENCH_ROUNDS rounds. Prints one table: the median seconds of each
# tool and keel's speed-up over qemu-img and over the raw file (see bench/summarize.py).
#
#   bench/img_bench.sh [KEEL_BINARY]            (default build/keel; one command, ~5 min)
#
# Workloads (4 KiB requests unless said; "fresh" = a newly created image for every run,
# "prealloc" = an image created once with preallocation=full, so every cluster is allocated):
#   alloc-cluster   fresh     -w -s 4k -S 64k: every write allocates a new cluster
#   alloc-seq       fresh     -w -s 64k: sequential allocating writes of whole clusters
#   alloc-seq1m     fresh     -w -s 1M: sequential allocating writes of 16 clusters each
#   overwrite       prealloc  -w -s 4k -S 64k: overwrites of allocated clusters
#   read            prealloc  -s 4k -S 64k: reads of allocated clusters
#   flush1          fresh     alloc-cluster with --flush-interval=1 (a flush after each write), depth 1
#   flush16         fresh     alloc-cluster with --flush-interval=16, depths 1 and 16
#   flush32-nodrain fresh     alloc-cluster with --flush-interval=32 --no-drain, depth 32
# (qemu-img bench refuses a flush interval smaller than the depth, hence 16 and 32 at depth.)
#
# Environment:
#   BENCH_SIZE         virtual size of every image                       [1G]
#   BENCH_COUNT        requests per run of the 4 KiB workloads           [2048]
#   BENCH_SEQ_COUNT    requests per alloc-seq run (64 KiB each)          [1024]
#   BENCH_SEQ1M_COUNT  requests per alloc-seq1m run (1 MiB each)         [128]
#   BENCH_FLUSH_COUNT  requests per run of the flush workloads           [256]
#   BENCH_CACHES       cache modes                                       ["none writeback"]
#   BENCH_DEPTHS       depths of the workloads without a flush interval  ["1 32"]
#   BENCH_WORKLOADS    a subset of the workloads above                   [all]
#   BENCH_ROUNDS       rounds                                            [3]
#   BENCH_DIR          scratch directory (images)                        [/tmp/keel-bench]
#   BENCH_OUT          where img_bench.csv goes                          [$BENCH_DIR/results]
# The requests of one run must fit in the image: BENCH_COUNT * 64 KiB <= BENCH_SIZE (the stepping
# wraps around at the end, which would turn allocating writes into overwrites).
# The counts are small because deleting a used fresh image is slow where the file system
# discards freed blocks (ext4 -o discard: ~4 ms per extent, and qemu-img's fresh images have one
# extent per written cluster): used images are moved aside and deleted after each round, outside
# the timed runs, so their deletion never overlaps a measurement.
set -euo pipefail
source "$(dirname "$0")/bench_lib.bash"
bench_init img_bench "${1:-}"

SIZE=${BENCH_SIZE:-1G}
COUNT=${BENCH_COUNT:-2048}
SEQ_COUNT=${BENCH_SEQ_COUNT:-1024}
SEQ1M_COUNT=${BENCH_SEQ1M_COUNT:-128}
FLUSH_COUNT=${BENCH_FLUSH_COUNT:-256}
CACHES=${BENCH_CACHES:-none writeback}
DEPTHS=${BENCH_DEPTHS:-1 32}
WORKLOADS=${BENCH_WORKLOADS:-alloc-cluster alloc-seq alloc-seq1m overwrite read flush1 flush16 flush32-nodrain}
size_bytes=$(numfmt --from=iec "$SIZE")
for n in "$COUNT" "$SEQ_COUNT" "$FLUSH_COUNT"; do
  ((n * 65536 <= size_bytes)) || { echo "img_bench: $n requests 64 KiB apart do not fit in $SIZE" >&2; exit 1; }
done

# workload NAME -> "image depths args"
workload() {
  local stride="-w -s 4k -S 64k"
  case $1 in
    alloc-cluster)   echo "fresh|$DEPTHS|$stride -c $COUNT" ;;
    alloc-seq)       echo "fresh|$DEPTHS|-w -s 64k -c $SEQ_COUNT" ;;
    alloc-seq1m)     echo "fresh|$DEPTHS|-w -s 1M -c $SEQ1M_COUNT" ;;
    overwrite)       echo "prealloc|$DEPTHS|$stride -c $COUNT" ;;
    read)            echo "prealloc|$DEPTHS|-s 4k -S 64k -c $COUNT" ;;
    flush1)          echo "fresh|1|$stride --flush-interval=1 -c $FLUSH_COUNT" ;;
    flush16)         echo "fresh|1 16|$stride --flush-interval=16 -c $FLUSH_COUNT" ;;
    flush32-nodrain) echo "fresh|32|$stride --flush-interval=32 --no-drain -c $FLUSH_COUNT" ;;
    *) echo "img_bench: unknown workload $1" >&2; exit 1 ;;
  esac
}
for w in $WORKLOADS; do workload "$w" >/dev/null; done

PRE_Q=$DIR/prealloc.qcow2
PRE_R=$DIR/prealloc.raw
TRASH=$DIR/used
cleanup() { rm -rf "$TRASH" "$PRE_Q" "$PRE_R"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

machine_header
echo "images: $SIZE, qcow2 cluster_size=64k (made by qemu-img create); requests: $COUNT x 4 KiB," \
  "$SEQ_COUNT x 64 KiB (alloc-seq), $FLUSH_COUNT (flush workloads)"
echo "creating the preallocated images ($SIZE each)..." >&2
if grep -qw prealloc <<<"$(for w in $WORKLOADS; do workload "$w"; done)"; then
  qemu-img create -q -f qcow2 -o cluster_size=64k,preallocation=full "$PRE_Q" "$SIZE"
fi
qemu-img create -q -f raw -o preallocation=full "$PRE_R" "$SIZE"
mkdir -p "$TRASH"

# run_tool TOOL IMAGE CACHE DEPTH ARGS: one timed run; prints the seconds.
run_tool() {
  local tool=$1 image=$2 cache=$3 depth=$4 args=$5 img fmt=qcow2
  if [ "$tool" = raw ]; then
    fmt=raw
    img=$PRE_R
  elif [ "$tool" = raw-falloc ]; then
    # The physical limit for allocating writes: a raw file whose blocks are allocated but
    # never written (fallocate), as new clusters of a growing image are.
    fmt=raw
    img=$DIR/falloc.raw
    rm -f "$img"
    fallocate -l "$SIZE" "$img"
  elif [ "$image" = fresh ]; then
    img=$DIR/fresh.qcow2
    qemu-img create -q -f qcow2 -o cluster_size=64k "$img" "$SIZE"
  else
    img=$PRE_Q
  fi
  local cmd
  case $tool in
    keel) cmd=("$KEEL" bench) ;;
    *) cmd=(qemu-img bench) ;;
  esac
  # shellcheck disable=SC2206
  cmd+=(-f "$fmt" -t "$cache" -d "$depth" $args "$img")
  bench_seconds "${cmd[@]}"
  [ "$img" = "$DIR/fresh.qcow2" ] && mv "$img" "$(mktemp -u "$TRASH/used.XXXXXX")"
  return 0
}

for ((round = 1; round <= ROUNDS; round++)); do
  echo "round $round/$ROUNDS (load $(cut -d' ' -f1 /proc/loadavg))" >&2
  for w in $WORKLOADS; do
    IFS='|' read -r image depths args <<<"$(workload "$w")"
    for cache in $CACHES; do
      for depth in $depths; do
        name="$w d$depth $cache"
        tools="keel qemu raw"
        [ "$image" = fresh ] && tools="keel qemu raw raw-falloc"
        for tool in $(rotated "$round" $tools); do
          s=$(run_tool "$tool" "$image" "$cache" "$depth" "$args")
          count=$(sed -n 's/.*-c \([0-9]*\).*/\1/p' <<<"$args")
          record "$name" "$round" "$tool" "$s" "$count"
        done
      done
    done
  done
  rm -rf "$TRASH" && mkdir -p "$TRASH"
done

summary
