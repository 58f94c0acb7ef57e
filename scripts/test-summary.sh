#!/usr/bin/env bash
# Prints what the integrity proof did in the last ctest run of a build directory (ctest shows the
# output of failing tests only): crash states explored and violations per workload and guarantee,
# the fault sweep's runs, the SIGKILL tests' counts. Usage: test-summary.sh BUILD_DIR
set -uo pipefail
log="${1:-build}/Testing/Temporary/LastTest.log"
[ -f "$log" ] || { echo "test-summary: no $log"; exit 0; }
echo
echo "== Integrity proof in this run =="
awk '$1 == "PROOF" && $2 == "cost" { cost = cost sprintf("  %-15s %-10s guest writes %4d flushes %3d   syncs per flush %s   metadata writes per guest write %s\n", $3, $4, $6, $8, $10, $12); next }
     $1 == "PROOF" {
       kind = $2; n = $7; total[kind] += n; runs[kind]++
       line = sprintf("  %-7s %-15s seed %-10s %s %7d  ", kind, $3, $5, (kind == "explore" ? "states" : "runs  "), n)
       for (i = 9; i <= NF; i++) { split($i, kv, "="); v[kind, kv[1]] += kv[2]; line = line " " $i }
       print line
     }
     END {
       if (cost != "") printf "-- cost of integrity (fdatasync per guest flush, metadata writes per guest write):\n%s", cost
       for (k in total) {
         printf "%s: %d workload runs, %d %s; violations:", (k == "explore" ? "crash-state exploration" : "fault sweep"),
                runs[k], total[k], (k == "explore" ? "crash states" : "fault runs")
         for (g = 1; g <= 6; g++) printf " G%d=%d", g, v[k, "G" g]
         printf "\n"
       }
     }' "$log"
grep -hE '^(kill_sigkill|nbd_sigkill): ' "$log"
