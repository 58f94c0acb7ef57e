#!/usr/bin/env bash
# Encrypted images (issue 20): keel vs QEMU on the same LUKS-encrypted qcow2 images (aes-256-xts,
# 64 KiB clusters, made by qemu-img), interleaved rounds, medians and keel's speed-up (see
# bench/summarize.py), the load average printed at start and end. A benchmark, not a test: the
# lead runs it on a quiet machine.
#
#   bench/crypt_bench.sh [KEEL_BINARY]            (default build/keel)
#
# Workloads ("fresh" = a copy of a newly created encrypted image for every run, "filled" = a copy
# of an image whose every cluster is allocated):
#   alloc      fresh   -w -s 4k -S 64k: every write allocates a cluster (encrypted CoW fill)
#   alloc-seq  fresh   -w -s 64k: sequential allocating writes of whole clusters
#   overwrite  filled  -w -s 4k -S 64k: in-place encrypted overwrites
#   read       filled  -s 4k -S 64k: decrypting reads
# Tools: qemu-img bench --object/--image-opts; keel bench the same way when it accepts them (the
# --object/--image-opts of bench are issue 16's); otherwise the keel column is `keel io` and the
# qemu column `qemu-io`, each doing the workload as ONE request of COUNT * size bytes
# ("-io" workloads: sequential, whole range; a throughput comparison, not bench's request mix).
#
# Environment: BENCH_SIZE [256M], BENCH_COUNT [2048], BENCH_DEPTHS ["1 32"], BENCH_CACHES
# ["none writeback"], BENCH_ROUNDS [3], BENCH_WORKLOADS [all], BENCH_DIR, BENCH_OUT (bench_lib).
set -euo pipefail
source "$(dirname "$0")/bench_lib.bash"
source "$(dirname "$0")/../tests/interop/qemu_luks.bash"
bench_init crypt_bench "${1:-}"

SIZE=${BENCH_SIZE:-256M}
COUNT=${BENCH_COUNT:-2048}
DEPTHS=${BENCH_DEPTHS:-1 32}
CACHES=${BENCH_CACHES:-none writeback}
WORKLOADS=${BENCH_WORKLOADS:-alloc alloc-seq overwrite read}
SEC=(--object secret,id=sec0,data=bench-pass)
size_bytes=$(numfmt --from=iec "$SIZE")
((COUNT * 65536 <= size_bytes)) || { echo "crypt_bench: $COUNT requests 64 KiB apart do not fit in $SIZE" >&2; exit 1; }
# (cache mode: -t for keel; cache.direct in the options for QEMU, whose -t does not apply to --image-opts)
opts() { echo "driver=qcow2,file.filename=$1,encrypt.key-secret=sec0${2:+,cache.direct=$2}"; }
# The bench mode needs both tools to open an encrypted image: keel bench with --image-opts, and a
# qemu-img bench that takes --object (QEMU 7.2's does not: "unrecognized option '--object'").
KEEL_BENCH_OPTS=0
grep -q -- --image-opts <<<"$("$KEEL" bench --help 2>&1)" && KEEL_BENCH_OPTS=1  # (read whole: under pipefail grep -q could SIGPIPE the writer)
probe=$(qemu-img bench --object secret,id=probe,data=x 2>&1 || true)
grep -q "unrecognized option" <<<"$probe" && KEEL_BENCH_OPTS=0

TMPL_FRESH=$DIR/fresh.tmpl.qcow2
TMPL_FILLED=$DIR/filled.tmpl.qcow2
IMG=$DIR/run.qcow2
cleanup() { rm -f "$TMPL_FRESH" "$TMPL_FILLED" "$IMG"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

machine_header
echo "images: $SIZE, qcow2 cluster_size=64k, LUKS aes-256-xts (qemu-img create, iter-time=100)"
if [ $KEEL_BENCH_OPTS = 1 ]; then
  echo "keel bench and qemu-img bench, --object/--image-opts; $COUNT requests"
else
  echo "keel bench or qemu-img bench cannot open encrypted images here: keel io vs qemu-io, one request of the workload's bytes"
fi
rm -f "$TMPL_FRESH" "$TMPL_FILLED"
qemu_img_create_luks -q -f qcow2 "${SEC[@]}" -o cluster_size=64k,encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=100 \
  "$TMPL_FRESH" "$SIZE"
cp "$TMPL_FRESH" "$TMPL_FILLED"
qemu-io "${SEC[@]}" --image-opts "$(opts "$TMPL_FILLED" off)" -c "write -P 0x33 0 $SIZE" >/dev/null

# workload NAME -> "template|depths|bench args|io command"
workload() {
  local range=$((COUNT * 65536))  # the io fallback: the whole range in one request (alloc = alloc-seq)
  case $1 in
    alloc)     echo "$TMPL_FRESH|$DEPTHS|-w -s 4k -S 64k -c $COUNT|" ;;
    alloc-seq) echo "$TMPL_FRESH|$DEPTHS|-w -s 64k -c $COUNT|write -P 0x5a 0 $range" ;;
    overwrite) echo "$TMPL_FILLED|$DEPTHS|-w -s 4k -S 64k -c $COUNT|write -P 0x5b 0 $range" ;;
    read)      echo "$TMPL_FILLED|$DEPTHS|-s 4k -S 64k -c $COUNT|read 0 $range" ;;
    *) echo "crypt_bench: unknown workload $1" >&2; exit 1 ;;
  esac
}
for w in $WORKLOADS; do workload "$w" >/dev/null; done

# run_tool TOOL TEMPLATE CACHE DEPTH ARGS IOCMD: one timed run on a fresh copy; prints seconds.
run_tool() {
  local tool=$1 tmpl=$2 cache=$3 depth=$4 args=$5 iocmd=$6 direct=off
  [ "$cache" = none ] && direct=on
  cp --sparse=always "$tmpl" "$IMG"
  if [ $KEEL_BENCH_OPTS = 1 ]; then
    local cmd=(qemu-img bench)
    [ "$tool" = keel ] && cmd=("$KEEL" bench)
    # shellcheck disable=SC2206
    if [ "$tool" = keel ]; then
      cmd+=("${SEC[@]}" --image-opts -t "$cache" -d "$depth" $args "$(opts "$IMG")")
    else
      cmd+=("${SEC[@]}" --image-opts -t "$cache" -d "$depth" $args "$(opts "$IMG" "$direct")")
    fi
    bench_seconds "${cmd[@]}"
  elif [ "$tool" = keel ]; then
    wall_seconds "$KEEL" io "${SEC[@]}" -t "$cache" --image-opts "$(opts "$IMG")" -c "$iocmd"
  else
    wall_seconds qemu-io "${SEC[@]}" -t "$cache" --image-opts "$(opts "$IMG" "$direct")" -c "$iocmd"
  fi
  rm -f "$IMG"
}

for ((round = 1; round <= ROUNDS; round++)); do
  echo "round $round/$ROUNDS (load $(cut -d' ' -f1 /proc/loadavg))" >&2
  for w in $WORKLOADS; do
    IFS='|' read -r tmpl depths args iocmd <<<"$(workload "$w")"
    if [ $KEEL_BENCH_OPTS = 0 ]; then
      [ -n "$iocmd" ] || continue  # no one-request form
      depths=1                     # one request: the depth does not apply
    fi
    for cache in $CACHES; do
      for depth in $depths; do
        name="$w d$depth $cache"
        [ $KEEL_BENCH_OPTS = 1 ] || name="$w-io $cache"
        for tool in $(rotated "$round" keel qemu); do
          s=$(run_tool "$tool" "$tmpl" "$cache" "$depth" "$args" "$iocmd")
          record "$name" "$round" "$tool" "$s" "$COUNT"
        done
      done
    done
  done
done

summary
