#!/usr/bin/env bash
# Runs every benchmark of bench/ one after the other (make bench; ~20 min on 2 cores), keeps each
# one's output in $BENCH_OUT/<name>.txt, then draws the IOPS plot (bench/plot.sh).
#
#   bench/run_all.sh [KEEL_BINARY]          (default build/keel)
#
# Each script's environment variables (see their headers) pass through, e.g. BENCH_ROUNDS=5.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
KEEL=$(realpath "${1:-$HERE/../build/keel}")
OUT=${BENCH_OUT:-${BENCH_DIR:-/tmp/keel-bench}/results}
mkdir -p "$OUT"
for name in img_bench alloc_scaling chain_bench convert_check_bench aio_bench nbd_bench serve_rss; do
  echo "=== $name (load average $(cut -d' ' -f1-3 /proc/loadavg))"
  bash "$HERE/$name.sh" "$KEEL" 2>&1 | tee "$OUT/$name.txt"
done
bash "$HERE/plot.sh"
echo "outputs: $OUT"
