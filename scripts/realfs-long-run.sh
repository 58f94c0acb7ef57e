#!/usr/bin/env bash
# The long run of the crash proof below real file systems (docs/integrity.md, issue 19): every
# workload x cache none/writeback, Keel and qemu-io, every enumerated state of each run, on FS,
# one seed after another from SEED until SECONDS have passed; the device log of a run that found a
# violation of Keel's is kept (--save-log) so its states replay exactly (qemu-io's column is not
# judged: rerun those with --save-log). Run one per file system at once to use both cores.
#   [WORKLOADS="resize snapshots"] scripts/realfs-long-run.sh KEEL FS SEED SECONDS OUTDIR
# (WORKLOADS: only those, in that order; a slow file system reaches a seed's later workloads late.)
# Appends the reports to OUTDIR/FS.log; scripts/realfs-long-run.sh --summary OUTDIR/*.log sums them
# per file system, engine and workload.
set -uo pipefail
if [ "${1:-}" = --summary ]; then
  shift
  awk '/^(keel|qemu-io|keel-nbd) +[a-z0-9]+ +(none|writeback)/ {
         key = $2 " " $1 " " $4; split($0, a, "states +"); split(a[2], b, "/"); st[key] += b[1]
         split($0, u, "unmountable "); split(u[2], u2, " "); um[key] += u2[1]; last = key }
       /^ +violations:/ { for (i = 2; i <= NF; i++) { split($i, g, "="); if (g[2] > 0) v[last] = v[last] " " $i } }
       END { for (k in st) printf "%-32s states %8d  unmountable %4d  violations:%s\n", k, st[k], um[k], (k in v) ? v[k] : " none" }' "$@" | sort
  exit 0
fi
KEEL=${1:?usage: realfs-long-run.sh KEEL FS SEED SECONDS OUTDIR}
FS=${2:?}
SEED=${3:?}
SECONDS_LEFT=${4:?}
OUT=${5:?}
mkdir -p "$OUT"
end=$(($(date +%s) + SECONDS_LEFT))
seed=$SEED
while [ "$(date +%s)" -lt "$end" ]; do
  for w in ${WORKLOADS:-alloc alloc-falloc discard-reuse l2-tables reftable-grow resize snapshots check-repair}; do
    for cache in none writeback; do
      for engine in keel qemu-io; do
        [ "$(date +%s)" -lt "$end" ] || break 4
        [ "$engine" = qemu-io ] && [ "$w" = check-repair ] && continue
        [ "$engine" = keel ] && [ "$w" = check-repair ] && [ "$cache" = writeback ] && continue
        log="$OUT/$FS-$engine-$cache-$w-$seed.devlog"
        # --seconds: a run stops exploring when the whole run's time is up (its line says "time limit").
        "$KEEL" selftest crash --fs "$FS" --engine "$engine" --cache "$cache" -w "$w" --seed "$seed" \
          --qemu 5 --save-log "$log" --seconds $((end - $(date +%s) + 1)) >>"$OUT/$FS.log" 2>&1
        [ $? -eq 1 ] || rm -f "$log"  # keep the logs of runs with a violation
      done
    done
  done
  seed=$((seed + 1))
done
echo "done: seeds $SEED..$((seed - 1)) on $FS" >>"$OUT/$FS.log"
