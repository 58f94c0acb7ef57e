#!/usr/bin/env bash
# Proves `keel bench` behaves like `qemu-img bench` (7.2): on twin images, the same arguments give
# the same output lines (the elapsed time aside) and exit codes — defaults, -c/-d/-s/-S/-o,
# --flush-interval with and without --no-drain, cache and aio modes, -U, -f raw — and the same
# messages for every bad flag; a request past the end fails as in QEMU ("Failed request:
# Input/output error"). The data keel's write tests leave is checked with QEMU's tools: the same
# bytes as qemu-img's (qemu-img compare, so the offsets stepped and wrapped alike), the pattern
# reads back in qemu-io, and qemu-img check finds the images clean.
# Not compared: -d 0 (qemu-img waits forever; keel refuses it) and an empty image (qemu-img 7.2
# dies of a division by zero).
# Usage: bash cli_bench.sh /path/to/keel
set -euo pipefail
: "${KEEL_CLI_TEST_TIMEOUT:=400}"
export KEEL_CLI_TEST_TIMEOUT
HERE=$(dirname "$(realpath "$0")")
source "$HERE/cli_lib.bash"
source "$HERE/parity_lib.bash"

# The elapsed time is the only part of the output allowed to differ.
time_norm() { sed -E 's/^Run completed in [0-9]+\.[0-9]{3} seconds\.$/Run completed in T seconds./'; }
TWIN_NORM=time_norm

# bench_run DESC ARGS...: twin_run of `bench ARGS`, and keel must have printed its result line.
bench_run() {
  local desc=$1; shift
  twin_run "$desc" bench "$@"
  if grep -q "^Sending" "$T/k.out" && ! grep -q "Failed" "$T/k.err"; then
    grep -qE '^Run completed in [0-9]+\.[0-9]{3} seconds\.$' "$T/k.out.raw" ||
      fail "$desc: no 'Run completed' line: $(cat "$T/k.out.raw")"
  fi
  pass
}

make_images() {
  qemu-img create -q -f qcow2 a.qcow2 64M
  qemu-img create -q -f qcow2 -o cluster_size=4096 small.qcow2 1M
  qemu-img create -q -f qcow2 odd.qcow2 260096
  qemu-img create -q -f raw r.raw 8M
  qemu-io -c 'write -P 0x11 0 1M' small.qcow2
  qemu-io -c 'write -P 0x22 0 8M' -f raw r.raw
}
twin_setup make_images

say "output lines of read tests"
bench_run "defaults: 75000 requests of 4 KiB, depth 64" a.qcow2
bench_run "-c -d" -c 1000 -d 8 a.qcow2
bench_run "hex and signed numbers" -c 0x100 -d +4 a.qcow2
bench_run "-s -S -o" -c 500 -d 3 -s 1k -S 3k -o 0x1000 a.qcow2
bench_run "sizes with suffixes" -c 10 -s 1.5k -S 64k -o 1M a.qcow2
bench_run "-S 0: the same offset" -c 100 -d 2 -S 0 a.qcow2
bench_run "-s 0" -c 10 -s 0 a.qcow2
bench_run "-c 0" -c 0 a.qcow2
bench_run "-c 0 -d 0" -c 0 -d 0 a.qcow2
bench_run "fewer requests than depth" -c 5 -d 64 a.qcow2
bench_run "requests wrap at the end of the image" -c 600 -d 7 -S 5000 small.qcow2
bench_run "-q prints the result lines anyway" -q -c 10 a.qcow2
bench_run "-t none" -c 100 -d 4 -t none a.qcow2
bench_run "-t none -n" -c 100 -t none -n a.qcow2
bench_run "-t directsync -i native" -c 100 -t directsync -i native a.qcow2
bench_run "-i io_uring" -c 100 -i io_uring a.qcow2
bench_run "-i threads" -c 100 -i threads a.qcow2
bench_run "-t writethrough / unsafe / off" -c 10 -t writethrough -t unsafe -t off a.qcow2
bench_run "-U" -U -c 100 a.qcow2
bench_run "-f raw" -f raw -c 100 r.raw
bench_run "-f raw on a qcow2 file" -f raw -c 10 a.qcow2
bench_run "options after the file name" a.qcow2 -c 20 -d 2
bench_run "options glued to their values" -c20 -d2 -s512 a.qcow2
bench_run "-- ends the options" -c 20 -- a.qcow2
bench_run "last -c wins" -c 1 -c 30 a.qcow2

say "write tests: output and data"
bench_run "-w --pattern" -w --pattern=0xab -c 200 -d 16 -s 4k -S 64k -o 64k a.qcow2
same_content "-w --pattern: same bytes as qemu-img's" a.qcow2
clean "-w --pattern: clean" a.qcow2
reads_pattern "-w --pattern: first request" a.qcow2 0xab 64k 4k
reads_pattern "-w --pattern: last request" a.qcow2 0xab $((65536 * 200)) 4k
reads_pattern "-w --pattern: between requests untouched" a.qcow2 0 $((65536 + 4096)) 60k
bench_run "-w wraps around" -w --pattern=0x5c -c 700 -d 9 -s 3000 -S 12288 -o 8k small.qcow2
same_content "-w wraps around: same bytes" small.qcow2
clean "-w wraps around: clean" small.qcow2
bench_run "-w --pattern 7 (separate argument)" -w --pattern 7 -c 64 -d 1 -S 128k a.qcow2
same_content "--pattern 7: same bytes" a.qcow2
reads_pattern "--pattern 7 reads back" a.qcow2 7 $((63 * 131072)) 4k
bench_run "--flush-interval=1 -d 1" -w --flush-interval=1 -d 1 -c 50 -S 64k --pattern=1 a.qcow2
bench_run "--flush-interval 16 -d 16" -w --flush-interval 16 -d 16 -c 100 -o 8M --pattern=2 a.qcow2
bench_run "--flush-interval=32 -d 32 --no-drain" -w --flush-interval=32 -d 32 --no-drain -c 1000 \
  -S 8k --pattern=3 -o 16M a.qcow2
bench_run "--no (abbreviated --no-drain)" -w --flush-interval=8 -d 4 --no -c 40 -o 32M a.qcow2
bench_run "--no-drain without --flush-interval" -w --no-drain -c 40 -o 40M a.qcow2
same_content "flush intervals: same bytes" a.qcow2
clean "flush intervals: clean" a.qcow2
reads_pattern "--no-drain data reads back" a.qcow2 3 $((16 * 1048576 + 999 * 8192)) 4k
bench_run "-w -t none -s 64k" -w -t none -c 100 -d 8 -s 64k --pattern=0x44 -o 48M a.qcow2
reads_pattern "-t none data reads back" a.qcow2 0x44 48M $((100 * 65536))
bench_run "-w -f raw" -w -f raw --pattern=0x33 -c 100 -d 4 -S 8k r.raw
same_file "-w -f raw: same bytes" "$T/q/r.raw" "$T/k/r.raw"
clean "after all writes: clean" a.qcow2

say "failed requests"
bench_run "image size not a multiple of the request size" -c 100 -d 1 odd.qcow2
bench_run "... at depth 64" -c 100 odd.qcow2
bench_run "offset past the end" -c 10 -o 1G a.qcow2
bench_run "offset at the end, 0-byte requests" -c 1 -d 1 -o 64M -s 0 a.qcow2
bench_run "offset past the end, 0-byte requests" -c 1 -d 1 -o 65M -s 0 a.qcow2
bench_run "request larger than the image" -c 1 -s 128M a.qcow2
bench_run "last request crosses the end" -w -c 2 -d 1 -s 32M -o 48M a.qcow2

say "bad arguments"
bench_run "no file" -c 1
bench_run "two files" -c 1 a.qcow2 b.qcow2
bench_run "-c without value" a.qcow2 -c
bench_run "--flush-interval without value" a.qcow2 --flush-interval
bench_run "--pattern without value" a.qcow2 --pattern
bench_run "-t without value" a.qcow2 -t
for bad in "-c x" "-c -1" "-c 2147483648" "-c 1k" "-c ''" "-d x" "-d 2k" "-d 2147483648" \
           "-s x" "-s 3G" "-s -1" "-S x" "-S 2G" "-o -1" "-o x" "-o 9E" "-t foo" "-i foo" \
           "-i" "--pattern=256" "--pattern=x" "--pattern=-1" "-w --flush-interval=x" \
           "-w --flush-interval=-1" "-x" "--foo" "-wx" "--no-drain=1" "-f foo" "-w -f foo -U"; do
  eval "set -- $bad"
  bench_run "bad: $bad" -c 1 "$@" a.qcow2
done
bench_run "unrecognized option after the file name" -c 1 a.qcow2 -xw
bench_run "--flush-interval in a read test" --flush-interval=4 -c 1 a.qcow2
bench_run "--flush-interval smaller than depth" -w --flush-interval=4 -c 1 a.qcow2
bench_run "--flush-interval=0 is no interval" -w --flush-interval=0 -c 1 -o 56M a.qcow2
bench_run "-w -U" -w -U -c 1 a.qcow2
bench_run "-w -U -n" -w -U -n -c 1 a.qcow2
bench_run "-n -f foo" -n -f foo -c 1 a.qcow2
bench_run "-n without cache=none" -n -c 1 a.qcow2
bench_run "-i native without cache=none" -i native -c 1 a.qcow2
bench_run "-U -n -f raw" -U -n -f raw -c 1 r.raw
twin_rc "missing file" bench -c 1 missing.qcow2

say "keel only"
run_ok "keel bench --help" "$KEEL" bench --help
grep -q -- "--flush-interval" "$T/last.out" || fail "keel bench --help does not list --flush-interval"
rc=0
timeout 20 "$KEEL" bench -c 10 -d 0 "$T/k/a.qcow2" >"$T/d0.out" 2>"$T/d0.err" || rc=$?
[ $rc -eq 1 ] && grep -q "Invalid queue depth specified" "$T/d0.err" ||
  fail "-d 0 with requests: rc=$rc $(cat "$T/d0.err")"
pass
finish
