#!/usr/bin/env bash
# Does an engine change alter what the crash explorer explores? The explorer is deterministic per
# workload and seed, so rerunning seeds of a saved long run (keel selftest crash --seconds ... -q,
# its output kept in LOG) with another binary and comparing each workload run's report line
# (guest ops, file ops, crash points, states explored/enumerated, qemu-img samples, probes; not
# the time) tells whether the file-operation sequences and crash states are still the same.
#   [QEMU=5] scripts/crash-rerun-compare.sh KEEL LOG FIRST_SEED LAST_SEED
# QEMU must be the --qemu of the long run (its samples are part of each line).
# Exits 0 when every rerun line is identical to the log's, 1 and prints the diff otherwise.
set -euo pipefail
KEEL=${1:?usage: crash-rerun-compare.sh KEEL LOG FIRST_SEED LAST_SEED}
LOG=${2:?}
FIRST=${3:?}
LAST=${4:?}
strip() { sed -E 's/ +[0-9.]+s( \(time limit\))?$//'; }
old=$(mktemp) new=$(mktemp)
trap 'rm -f "$old" "$new"' EXIT
for s in $(seq "$FIRST" "$LAST"); do
  grep -E "^[a-z0-9-]+ +seed $s " "$LOG" | strip >>"$old" || true
done
# The workloads the log ran for those seeds, in its order.
mapfile -t workloads < <(awk '{print $1}' "$old" | awk '!seen[$0]++')
[ "${#workloads[@]}" -gt 0 ] || { echo "crash-rerun-compare: no runs of seeds $FIRST..$LAST in $LOG" >&2; exit 2; }
args=()
for w in "${workloads[@]}"; do args+=(-w "$w"); done
for s in $(seq "$FIRST" "$LAST"); do
  "$KEEL" selftest crash "${args[@]}" --seed "$s" --qemu "${QEMU:-5}" 2>&1 |
    grep -E "^[a-z0-9-]+ +seed $s " | strip >>"$new" || true
done
sort -o "$old" "$old"
sort -o "$new" "$new"
if diff "$old" "$new"; then
  echo "crash-rerun-compare: $(wc -l <"$new") workload runs (seeds $FIRST..$LAST) identical to $LOG"
else
  echo "crash-rerun-compare: the rerun differs from $LOG (above: < log, > rerun)"
  exit 1
fi
