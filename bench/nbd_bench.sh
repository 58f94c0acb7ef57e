#!/usr/bin/env bash
# keel serve vs qemu-nbd through fio's nbd engine, with fio io_uring direct on a raw file as the
# physical limit. Runs the shared comparison script ../shared/bench/nbd-compare.sh (beside this
# repository; see its header and README): both servers get the same cache and aio modes, fresh
# images for the allocating workloads, interleaved repetitions, medians and ratios. Its markdown
# table is printed as it is; its per-run numbers are also written to $BENCH_OUT/nbd_bench.csv
# (bench/plot.sh plots them).
#
#   bench/nbd_bench.sh [KEEL_BINARY]            (default build/keel; one command, ~10 min)
#
# Workloads (nbd-compare.sh's names): randwrite 4k on a fresh image at depth 1 and 32
# (rw-alloc-qd1/qd32) and on a fully written one at depth 32 (rw-full-qd32), randread 4k depth 32
# (rr-qd32), sequential 1M writes (sw-1m), randwrite with a flush every 16 writes at depth 32
# (rw-alloc-fsync16-qd32). The issue's other cases are one variable away:
# BENCH_NBD_WORKLOADS="... rw-full-qd1 rw-alloc-fsync16-qd1" (each adds ~1 min). nbd-compare.sh
# has no fsync=1 workload: a flush after every write is measured by bench/img_bench.sh (flush1).
#
# Environment:
#   NBD_CACHE          --cache of both servers                      [none]
#   NBD_AIO            --aio of both servers                        [io_uring]
#   BENCH_SIZE         image size                                   [256M]
#   BENCH_NBD_SW_SIZE  image size of sw-1m (one pass over it)       [2G]
#   BENCH_NBD_RUNTIME  seconds per fio run                          [3]
#   BENCH_ROUNDS       repetitions                                  [3]
#   BENCH_NBD_WORKLOADS  a subset (nbd-compare.sh names)            [the list above]
#   BENCH_NBD_PHYS     1: also fio on a raw file                    [1]
#   DROP_CACHES        passed on (1 drops the page cache before every run: root only, and it
#                      slows down everyone else on the machine)    [0]
#   BENCH_DIR, BENCH_OUT  as in img_bench.sh
set -euo pipefail
source "$(dirname "$0")/bench_lib.bash"
bench_init nbd_bench "${1:-}"

COMPARE=$REPO/../shared/bench/nbd-compare.sh
[ -f "$COMPARE" ] || {
  echo "nbd_bench: $COMPARE not found: this script runs the shared NBD comparison script," \
    "expected at ../shared/bench/nbd-compare.sh beside the repository" >&2
  exit 1
}
command -v fio >/dev/null || { echo "nbd_bench: fio not found (make deps)" >&2; exit 1; }
command -v qemu-nbd >/dev/null || { echo "nbd_bench: qemu-nbd not found (make deps)" >&2; exit 1; }
command -v nbdinfo >/dev/null || { echo "nbd_bench: nbdinfo not found (make deps)" >&2; exit 1; }
fio --enghelp=nbd >/dev/null 2>&1 || { echo "nbd_bench: this fio has no nbd engine" >&2; exit 1; }

CACHE=${NBD_CACHE:-none}
AIO=${NBD_AIO:-io_uring}
WL=${BENCH_NBD_WORKLOADS:-rw-alloc-qd1 rw-alloc-qd32 rw-full-qd1 rw-full-qd32 rr-qd1 rr-qd32 sw-1m rw-alloc-fsync16-qd32}
SIZE=${BENCH_SIZE:-256M}
RUNTIME=${BENCH_NBD_RUNTIME:-3}
RES=$OUT/nbd-compare
rm -rf "$RES" "$RES-sw"

# sw-1m is one pass over the image: on the BENCH_SIZE image that is 256 writes in ~0.2 s, and
# its ratio swung 0.56-1.28 between repetitions. It runs on its own, larger image.
SW_SIZE=${BENCH_NBD_SW_SIZE:-2G}
WL_MAIN=() WL_SW=()
for w in $WL; do if [ "$w" = sw-1m ]; then WL_SW+=("$w"); else WL_MAIN+=("$w"); fi; done

machine_header
echo "servers: --cache=$CACHE --aio=$AIO; size $SIZE (sw-1m: $SW_SIZE); $RUNTIME s per fio run"
# compare RESULTS SIZE WORKLOADS...: one nbd-compare.sh run.
compare() {
  local res=$1 size=$2; shift 2
  # $SOCK and $IMG stay literal: nbd-compare.sh fills them in for every run.
  # shellcheck disable=SC2016
  SERVER_A="'$KEEL'"' serve -f qcow2 --cache='"$CACHE"' --aio='"$AIO"' -t -k $SOCK $IMG' \
  SERVER_B='qemu-nbd -f qcow2 --cache='"$CACHE"' --aio='"$AIO"' -t -k $SOCK $IMG' \
  LABEL_A=keel LABEL_B=qemu-nbd FMT_A=qcow2 FMT_B=qcow2 PHYS=${BENCH_NBD_PHYS:-1} \
  SIZE=$size RUNTIME=$RUNTIME REPS=$ROUNDS WORKLOADS="$*" \
  DROP_CACHES=${DROP_CACHES:-0} WORKDIR=$DIR RESULTS=$res KEEP_RESULTS=1 \
    bash "$COMPARE"
}
results=()
if [ ${#WL_MAIN[@]} -gt 0 ]; then compare "$RES" "$SIZE" "${WL_MAIN[@]}"; results+=("$RES/results.csv"); fi
if [ ${#WL_SW[@]} -gt 0 ]; then
  echo "sw-1m on a $SW_SIZE image (load average before: $(cut -d' ' -f1-3 /proc/loadavg)):"
  compare "$RES-sw" "$SW_SIZE" "${WL_SW[@]}"
  results+=("$RES-sw/results.csv")
fi

# Per-run IOPS in the common CSV format (A = keel, B = qemu-nbd, P = the raw file).
python3 - "${results[@]}" >>"$CSV" <<'PY'
import csv, sys
names = {"A": "keel", "B": "qemu", "P": "raw"}
for path in sys.argv[1:]:
    for r in csv.DictReader(open(path)):
        print(f'nbd_bench,nbd {r["workload"]},{r["rep"]},{names[r["side"]]},,{r["iops"]}')
PY
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "(raw data: $CSV and $RES)"
