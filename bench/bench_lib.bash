# Shared helpers of the bench/ scripts; sourced, not run. Each script records one line per timed
# run in a CSV file ($CSV: bench,workload,round,tool,seconds,iops) and prints, at the end, a
# table of medians and ratios made by bench/summarize.py from that file.
#
# Conventions: tools run interleaved (the order rotates every round, so machine load drifts onto
# every tool alike); the page cache is not dropped (the machine is shared), but `sync` runs before
# every timed run so one run's dirty pages are not written back during the next.

BENCH_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_HERE/.." && pwd)

# bench_init NAME [KEEL]: sets KEEL, DIR (scratch), OUT (results), CSV; checks the tools.
bench_init() {
  local name=$1
  KEEL=${2:-${KEEL:-$REPO/build/keel}}
  KEEL=$(realpath "$KEEL" 2>/dev/null || echo "$KEEL")
  [ -x "$KEEL" ] || { echo "$name: keel binary not found: $KEEL (build it: make build)" >&2; exit 1; }
  command -v qemu-img >/dev/null || { echo "$name: qemu-img not found (make deps)" >&2; exit 1; }
  command -v python3 >/dev/null || { echo "$name: python3 not found (make deps)" >&2; exit 1; }
  ROUNDS=${BENCH_ROUNDS:-3}
  [ "$ROUNDS" -ge 1 ] 2>/dev/null || { echo "$name: BENCH_ROUNDS must be a number >= 1" >&2; exit 1; }
  DIR=${BENCH_DIR:-/tmp/keel-bench}/$name
  OUT=${BENCH_OUT:-${BENCH_DIR:-/tmp/keel-bench}/results}
  mkdir -p "$DIR" "$OUT"
  CSV=$OUT/$name.csv
  echo "bench,workload,round,tool,seconds,iops" >"$CSV"
  BENCH_NAME=$name
}

# machine_header: what the numbers were measured on, and how busy it was.
machine_header() {
  echo "machine: $(nproc) cpus ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), $(free -g | awk '/^Mem:/ {print $2}') GiB RAM, kernel $(uname -r)"
  echo "storage: $(df -h "$DIR" | awk 'NR == 2 {print $1 " (" $6 ")"}'), filesystem $(findmnt -no FSTYPE -T "$DIR")"
  echo "tools: $(qemu-img --version | head -1); keel: $KEEL"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg); rounds: $ROUNDS (interleaved)"
}

# rotated ROUND TOOL...: the tools in the order of this round (round 1: as given, then rotated).
rotated() {
  local round=$1; shift
  local tools=("$@") n=$# i
  for ((i = 0; i < n; i++)); do printf '%s ' "${tools[$(((i + round - 1) % n))]}"; done
}

# record WORKLOAD ROUND TOOL SECONDS [OPS]: one CSV line; iops = OPS / SECONDS when OPS is given.
record() {
  local iops=""
  if [ -n "${5:-}" ] && [ "$4" != nan ]; then
    iops=$(awk -v n="$5" -v s="$4" 'BEGIN { if (s > 0) printf "%.0f", n / s }')
  fi
  echo "$BENCH_NAME,$1,$2,$3,$4,$iops" >>"$CSV"
}

# bench_seconds CMD...: runs a `keel bench` / `qemu-img bench` command line and prints the
# seconds of its "Run completed in X seconds." line, or "nan" (and its output on stderr) if it
# failed.
bench_seconds() {
  local out rc=0
  sync
  out=$("$@" 2>&1) || rc=$?
  local s
  s=$(sed -n 's/^Run completed in \([0-9.]*\) seconds\.$/\1/p' <<<"$out")
  if [ $rc -ne 0 ] || [ -z "$s" ]; then
    echo "FAILED ($rc): $*" >&2
    echo "$out" >&2
    echo nan
    return 0
  fi
  echo "$s"
}

# wall_seconds CMD...: the wall-clock seconds of CMD (its output discarded), or "nan".
wall_seconds() {
  local t0 t1 rc=0
  sync
  t0=$(date +%s.%N)
  "$@" >/dev/null 2>"$DIR/wall.err" || rc=$?
  t1=$(date +%s.%N)
  if [ $rc -ne 0 ]; then
    echo "FAILED ($rc): $*" >&2
    cat "$DIR/wall.err" >&2
    echo nan
    return 0
  fi
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'
}

# summary [ARGS]: the table of medians and ratios of this script's CSV (bench/summarize.py).
summary() {
  echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
  python3 "$BENCH_HERE/summarize.py" "$CSV" "$@"
  echo "(raw data: $CSV)"
}
