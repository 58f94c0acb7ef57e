#!/usr/bin/env bash
# Runs the libFuzzer targets one after another (or FUZZ_JOBS at a time), each for SECONDS, and
# prints one line per target (runs, executions, exec/s, corpus size, findings). Exits non-zero if
# any target found a crash, a leak, a timeout or an out-of-memory input; the inputs are kept in
# BUILD/findings/<target>/.
# The working corpus BUILD/corpus/<target>/ grows across runs; it starts from the seeds of
# make_corpus.sh and the saved findings in tests/fuzz/regress/<target>/. Every run is appended
# to BUILD/fuzz-stats.tsv (the totals in docs/security.md come from there).
# FUZZ_JOBS=N runs N targets at a time (default 1; `make fuzz-ci` uses 2: each target runs
# single-threaded, so one at a time leaves a core idle); each still gets SECONDS of its own.
# Usage: run_fuzz.sh BUILD SECONDS [TARGET...]   (default: every target)
set -uo pipefail
BUILD=$(realpath "${1:?usage: $0 BUILD SECONDS [TARGET...]}")
SECONDS_PER_TARGET=${2:?usage: $0 BUILD SECONDS [TARGET...]}
shift 2
HERE=$(dirname "$(realpath "$0")")
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(open_info check read write nbd luks_header)
STATS=$BUILD/fuzz-stats.tsv
[ -f "$STATS" ] || printf 'date\ttarget\tseconds\texecs\tstatus\tfindings\n' >"$STATS"

if [ ! -d "$BUILD/corpus/seeds" ]; then
  # A seed builder that fails part way (a QEMU tool missing or misbehaving) still leaves the seeds
  # it made; the targets run from those, their saved findings and the dictionaries.
  bash "$HERE/make_corpus.sh" "$BUILD/corpus/seeds.tmp" >/dev/null ||
    echo "run_fuzz: warning: make_corpus.sh failed; fuzzing from the seeds it made" >&2
  mkdir -p "$BUILD/corpus/seeds.tmp"
  mv "$BUILD/corpus/seeds.tmp" "$BUILD/corpus/seeds"
fi

# fuzz_one TARGET: one bounded run; prints its summary line (and the first lines of a finding)
# into BUILD/fuzz-TARGET.summary; exits non-zero on a failure or a finding.
fuzz_one() {
  local t=$1
  local bin=$BUILD/tests/fuzz/fuzz_$t
  local corpus=$BUILD/corpus/$t findings=$BUILD/findings/$t log=$BUILD/fuzz-$t.log out=$BUILD/fuzz-$t.summary
  mkdir -p "$corpus" "$findings"
  local dirs=("$corpus")
  [ -d "$BUILD/corpus/seeds/$t" ] && dirs+=("$BUILD/corpus/seeds/$t")
  [ -d "$HERE/regress/$t" ] && dirs+=("$HERE/regress/$t")
  local dict=$HERE/qcow2.dict; [ "$t" = nbd ] && dict=$HERE/nbd.dict
  local before start rc secs execs rate found size line
  before=$(find "$findings" -type f | wc -l)
  # -close_fd_mask=2: the NBD server logs every client error on stderr; libFuzzer keeps its own
  # output and the sanitizer reports on a duplicate of stderr.
  start=$(date +%s)
  nice -n 10 "$bin" -max_total_time="$SECONDS_PER_TARGET" -timeout=30 -rss_limit_mb=2560 \
    -print_final_stats=1 -dict="$dict" -artifact_prefix="$findings/" -close_fd_mask=2 \
    "${dirs[@]}" >"$log" 2>&1
  rc=$?
  secs=$(( $(date +%s) - start ))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  found=$(( $(find "$findings" -type f | wc -l) - before ))
  size=$(find "$corpus" -type f | wc -l)
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$t" "$secs" "${execs:-0}" "$rc" "$found" >>"$STATS"
  line=$(printf '%-10s %5ss  %10s execs  %6s exec/s  corpus %5s  findings %s' "$t" "$secs" "${execs:-0}" \
    "${rate:-0}" "$size" "$found")
  if [ $rc -ne 0 ] || [ "$found" -ne 0 ]; then
    echo "$line  FAILED (exit $rc, see $log and $findings)" >"$out"
    grep -E '^(==[0-9]+==ERROR|SUMMARY:|.*runtime error:)' "$log" | head -5 | sed 's/^/    /' >>"$out"
    return 1
  fi
  echo "$line" >"$out"
}

for t in "${TARGETS[@]}"; do
  [ -x "$BUILD/tests/fuzz/fuzz_$t" ] || { echo "run_fuzz: $BUILD/tests/fuzz/fuzz_$t not built (make fuzz-build)" >&2; exit 2; }
  rm -f "$BUILD/fuzz-$t.summary"
done
JOBS=${FUZZ_JOBS:-1}
failed=0
running=0
for t in "${TARGETS[@]}"; do
  if [ "$running" -ge "$JOBS" ]; then
    wait -n || failed=1
    running=$((running - 1))
  fi
  fuzz_one "$t" &
  running=$((running + 1))
done
while [ "$running" -gt 0 ]; do
  wait -n || failed=1
  running=$((running - 1))
done
summary=()
for t in "${TARGETS[@]}"; do
  if [ -s "$BUILD/fuzz-$t.summary" ]; then
    cat "$BUILD/fuzz-$t.summary"
    summary+=("$(head -1 "$BUILD/fuzz-$t.summary")")
  else
    summary+=("$t: no result (the run was interrupted)")
    failed=1
  fi
done
echo "== fuzz summary ($SECONDS_PER_TARGET s per target)"
printf '%s\n' "${summary[@]}"
exit $failed
