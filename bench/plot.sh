#!/usr/bin/env bash
# Draws the IOPS per workload (median over the rounds) of Keel, QEMU and the raw file from the
# CSV files the bench/ scripts wrote (img_bench.csv, chain_bench.csv, nbd_bench.csv in
# $BENCH_OUT), one panel per script, log scale, into a PNG.
#
#   bench/plot.sh [OUT.png]                 (default docs/performance-iops.png)
#
# Needs gnuplot (make bench-deps). Environment: BENCH_OUT, BENCH_DIR as in bench/img_bench.sh.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PNG=${1:-$(cd "$HERE/.." && pwd)/docs/performance-iops.png}
RESULTS=${BENCH_OUT:-${BENCH_DIR:-/tmp/keel-bench}/results}
command -v gnuplot >/dev/null || { echo "plot: gnuplot not found (make bench-deps)" >&2; exit 1; }

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
panels=()
titles=()
for name in img_bench chain_bench nbd_bench; do
  csv=$RESULTS/$name.csv
  [ -f "$csv" ] || continue
  # One line per workload: "name" keel qemu raw (median IOPS; NaN when not measured).
  python3 - "$csv" >"$WORK/$name.dat" <<'EOF'
import csv, statistics, sys
from collections import OrderedDict, defaultdict
iops = OrderedDict()
for r in csv.DictReader(open(sys.argv[1])):
    if r["iops"]:
        iops.setdefault(r["workload"], defaultdict(list))[r["tool"]].append(float(r["iops"]))
for w, tools in iops.items():
    cells = [f'{statistics.median(tools[t]):.0f}' if tools.get(t) else "NaN" for t in ("keel", "qemu", "raw")]
    print(f'"{w}" ' + " ".join(cells))
EOF
  [ -s "$WORK/$name.dat" ] || continue
  panels+=("$WORK/$name.dat")
  case $name in
    img_bench) titles+=("keel bench vs qemu-img bench (raw: qemu-img bench -f raw on a preallocated raw file)") ;;
    chain_bench) titles+=("reads through a deep backing chain: keel bench vs qemu-img bench") ;;
    nbd_bench) titles+=("NBD, fio nbd engine: keel serve vs qemu-nbd (raw: fio io_uring direct on a raw file)") ;;
  esac
done
[ ${#panels[@]} -gt 0 ] || { echo "plot: no results in $RESULTS (run make bench first)" >&2; exit 1; }

{
  echo "set terminal pngcairo size 1600,$((480 * ${#panels[@]})) font ',10'"
  echo "set termoption noenhanced"
  echo "set rmargin 10"
  echo "set output '$PNG'"
  echo "set multiplot layout ${#panels[@]},1"
  echo "set style data histograms"
  echo "set style histogram clustered gap 1"
  echo "set style fill solid 0.85 border -1"
  echo "set logscale y"
  echo "set grid ytics"
  echo "set ylabel 'IOPS (median)'"
  echo "set xtics rotate by -30 left nomirror"
  echo "set bmargin 9"
  echo "set key top right"
  names=("" "" Keel QEMU "raw file")
  colors=("" "" "#1f77b4" "#d62728" "#7f7f7f")
  for i in "${!panels[@]}"; do
    echo "set title \"${titles[$i]}\""
    # Only the columns with numbers (the chain has no raw file): gnuplot refuses an empty one.
    series=()
    for col in 2 3 4; do
      awk -v c="$col" '{ n = split($0, f, "\" "); split(f[n], v, " "); if (v[c - 1] != "NaN") found = 1 }
                       END { exit !found }' "${panels[$i]}" || continue
      series+=("'${panels[$i]}' using $col:xtic(1) title '${names[$col]}' lc rgb '${colors[$col]}'")
    done
    (IFS=,; echo "plot ${series[*]}")
  done
  echo "unset multiplot"
} >"$WORK/plot.gp"
gnuplot "$WORK/plot.gp"
echo "plot: $PNG"
