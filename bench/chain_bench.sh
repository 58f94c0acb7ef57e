#!/usr/bin/env bash
# Reads through a deep backing chain: keel bench vs qemu-img bench on the top of a chain of
# BENCH_CHAIN_DEPTH qcow2 layers (default 100; clouds keep chains of hundreds of layers, and the
# cost of a read that falls through grows with the depth). Every layer writes a few clusters at
# random places (seeded, so the chain is the same every time); the reads are 4 KiB requests
# scattered over the whole disk (-S = an odd number of 4 KiB blocks, so request i reads block
# i * step mod the number of blocks: every block once, in a scrambled order), so most of them
# fall through every layer and the rest stop at the layer that wrote the cluster.
# Interleaved rounds, medians and ratios as in bench/img_bench.sh.
#
#   bench/chain_bench.sh [KEEL_BINARY]          (default build/keel; one command, ~1-2 min)
#
# Environment:
#   BENCH_CHAIN_DEPTH     layers, the base included                    [100]
#   BENCH_CHAIN_WRITES    clusters each layer writes                    [4]
#   BENCH_SIZE            virtual size                                  [1G]
#   BENCH_CHAIN_COUNT     read requests per run                         [20000]
#   BENCH_DEPTHS          request depths                                ["1 32"]
#   BENCH_CACHES          cache modes                                   ["writeback none"]
#   BENCH_ROUNDS, BENCH_DIR, BENCH_OUT  as in img_bench.sh
set -euo pipefail
source "$(dirname "$0")/bench_lib.bash"
bench_init chain_bench "${1:-}"

LAYERS=${BENCH_CHAIN_DEPTH:-100}
WRITES=${BENCH_CHAIN_WRITES:-4}
SIZE=${BENCH_SIZE:-1G}
COUNT=${BENCH_CHAIN_COUNT:-20000}
DEPTHS=${BENCH_DEPTHS:-1 32}
CACHES=${BENCH_CACHES:-writeback none}
size_bytes=$(numfmt --from=iec "$SIZE")
clusters=$((size_bytes / 65536))
# 100003 is prime, so it is coprime with the (power-of-two) number of 4 KiB blocks.
STEP=$((100003 * 4096))

CHAIN=$DIR/chain
cleanup() { rm -rf "$CHAIN"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

machine_header
echo "chain: $LAYERS layers of $SIZE (cluster_size=64k), $WRITES random 64 KiB clusters written" \
  "per layer; $COUNT reads of 4 KiB, step $STEP bytes"

echo "creating the chain..." >&2
rm -rf "$CHAIN"
mkdir -p "$CHAIN"
RANDOM=42
prev=""
for ((i = 0; i < LAYERS; i++)); do
  img=$CHAIN/layer$i.qcow2
  if [ -z "$prev" ]; then
    qemu-img create -q -f qcow2 -o cluster_size=64k "$img" "$SIZE"
  else
    qemu-img create -q -f qcow2 -o cluster_size=64k -b "layer$((i - 1)).qcow2" -F qcow2 "$img"
  fi
  cmds=()
  for ((k = 0; k < WRITES; k++)); do
    c=$(((RANDOM * 32768 + RANDOM) % clusters))
    cmds+=(-c "write -P $(((i % 250) + 1)) $((c * 65536)) 64k")
  done
  qemu-io "${cmds[@]}" "$img" >/dev/null
  prev=$img
done
TOP=$prev
n=$(qemu-img info --backing-chain "$TOP" | grep -c '^image:')
[ "$n" -eq "$LAYERS" ] || { echo "chain_bench: the chain has $n layers, not $LAYERS" >&2; exit 1; }

for ((round = 1; round <= ROUNDS; round++)); do
  echo "round $round/$ROUNDS (load $(cut -d' ' -f1 /proc/loadavg))" >&2
  for cache in $CACHES; do
    for depth in $DEPTHS; do
      name="chain$LAYERS read d$depth $cache"
      for tool in $(rotated "$round" keel qemu); do
        if [ "$tool" = keel ]; then cmd=("$KEEL" bench); else cmd=(qemu-img bench); fi
        s=$(bench_seconds "${cmd[@]}" -f qcow2 -t "$cache" -d "$depth" -c "$COUNT" -s 4k \
          -S "$STEP" "$TOP")
        record "$name" "$round" "$tool" "$s" "$COUNT"
      done
    done
  done
done

summary
