#!/usr/bin/env bash
# keel check vs qemu-img check on a large sparse image: 1 TiB virtual, several GiB allocated in
# 1 MiB extents spread over the whole disk (one L2 table per extent, as a long-lived sparse VM disk
# has). Runs the two tools interleaved (so machine load hits both alike) and prints the median
# wall-clock time, CPU time (user+sys) and peak memory of each, and the ratios.
#
#   bench/check_bench.sh [KEEL_BINARY] [ROUNDS]
# Environment: BENCH_DIR (where the image is kept; default /tmp/keel-check-bench),
#   BENCH_EXTENTS (number of 1 MiB extents; default 4096 = 4 GiB allocated),
#   BENCH_VIRTUAL (virtual size; default 1T), BENCH_COLD=1 (drop the page cache before each run;
#   needs root, and slows down everything else on the machine), BENCH_CSV (also append one line
#   per run, "check_bench,<workload>,<round>,<tool>,<seconds>," — the format of the other bench/
#   scripts; bench/convert_check_bench.sh uses it).
# Both tools read the image from the page cache unless BENCH_COLD=1: the numbers then measure
# the checking work itself, not the disk.
set -euo pipefail

KEEL=${1:-$(dirname "$0")/../build/keel}
ROUNDS=${2:-7}
DIR=${BENCH_DIR:-/tmp/keel-check-bench}
EXTENTS=${BENCH_EXTENTS:-4096}
VIRTUAL=${BENCH_VIRTUAL:-1T}
IMG=$DIR/sparse-$VIRTUAL-$EXTENTS.qcow2

command -v qemu-img >/dev/null || { echo "qemu-img not found" >&2; exit 1; }
[ -x "$KEEL" ] || { echo "keel binary not found: $KEEL" >&2; exit 1; }
mkdir -p "$DIR"

if [ ! -f "$IMG" ]; then
  echo "creating $IMG ($EXTENTS MiB allocated over $VIRTUAL)..." >&2
  qemu-img create -q -f qcow2 "$IMG.tmp" "$VIRTUAL"
  virtual_mib=$(qemu-img info --output=json "$IMG.tmp" | sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p')
  virtual_mib=$((virtual_mib / 1048576))
  stride=$((virtual_mib / EXTENTS))
  { for ((i = 0; i < EXTENTS; i++)); do echo "write -P $((i % 251 + 1)) $((i * stride))M 1M"; done; echo quit; } |
    qemu-io -t unsafe "$IMG.tmp" >/dev/null
  mv "$IMG.tmp" "$IMG"
fi

qemu-img check "$IMG" >/dev/null || { echo "qemu-img check does not find the image clean" >&2; exit 1; }
"$KEEL" check "$IMG" >/dev/null || { echo "keel check does not find the image clean" >&2; exit 1; }

TIMES=$(mktemp)
trap 'rm -f "$TIMES"' EXIT

measure() {  # tool label, command...
  local label=$1; shift
  if [ "${BENCH_COLD:-0}" = 1 ]; then sync; echo 3 > /proc/sys/vm/drop_caches; fi
  /usr/bin/time -f "$label %e %U %S %M" -a -o "$TIMES" "$@" >/dev/null 2>&1
  if [ -n "${BENCH_CSV:-}" ]; then
    echo "check_bench,check $VIRTUAL/$EXTENTS MiB,$r,$label,$(tail -1 "$TIMES" | cut -d' ' -f2)," >>"$BENCH_CSV"
  fi
}

for ((r = 1; r <= ROUNDS; r++)); do
  if ((r % 2)); then
    measure keel "$KEEL" check "$IMG"
    measure qemu qemu-img check "$IMG"
  else
    measure qemu qemu-img check "$IMG"
    measure keel "$KEEL" check "$IMG"
  fi
done

median() {  # label column ("cpu" = user+sys) [printf format]
  awk -v l="$1" -v c="$2" '$1 == l { print (c == "cpu") ? $3 + $4 : $c }' "$TIMES" | sort -g |
    awk -v f="${3:-%.3f}" '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf f, m }'
}

size=$(stat -c %s "$IMG")
alloc=$(du -k "$IMG" | cut -f1)
echo "image: $IMG"
echo "  virtual $VIRTUAL, file $((size / 1048576)) MiB ($((alloc / 1024)) MiB on disk), $EXTENTS extents of 1 MiB"
echo "  $ROUNDS rounds, interleaved; page cache: $([ "${BENCH_COLD:-0}" = 1 ] && echo cold || echo warm)"
echo "  load average: $(cut -d' ' -f1-3 /proc/loadavg)"
printf "%-10s %12s %12s %14s\n" tool "wall (s)" "cpu (s)" "max RSS (KiB)"
for t in keel qemu; do
  printf "%-10s %12s %12s %14s\n" "$t" "$(median $t 2)" "$(median $t cpu)" "$(median $t 5 %d)"
done
kw=$(median keel 2); qw=$(median qemu 2); kc=$(median keel cpu); qc=$(median qemu cpu)
awk -v kw="$kw" -v qw="$qw" -v kc="$kc" -v qc="$qc" 'BEGIN {
  printf "speed-up of keel over qemu-img: %.2fx wall-clock, %.2fx cpu\n", (kw > 0 ? qw / kw : 0), (kc > 0 ? qc / kc : 0) }'
