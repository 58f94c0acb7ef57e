#!/usr/bin/env bash
# Peak RSS of an NBD server serving a fresh 1 TiB qcow2 image under fio randwrite 4k QD32 (issue
# 14's memory target), keel serve and qemu-nbd side by side, interleaved, with the load average.
#   bench/serve_rss.sh [KEEL_BINARY] [SECONDS]       (defaults: build/keel, 20)
# Prints one line per server and round: peak RSS (VmHWM) in MiB and fio's IOPS.
set -euo pipefail
source "$(dirname "$0")/../tests/interop/proc_lib.bash"
KEEL=$(realpath "${1:-build/keel}")
SECS=${2:-20}
ROUNDS=${BENCH_ROUNDS:-2}
DIR=$(mktemp -d /tmp/keel-rss.XXXXXX)
trap 'kill ${pid:-} $(jobs -p) 2>/dev/null || true; rm -rf "$DIR"' EXIT
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-10s %6s %10s %8s\n' server round peak_MiB iops
for ((r = 1; r <= ROUNDS; r++)); do
  for server in keel qemu-nbd; do
    img=$DIR/t.qcow2 sock=$DIR/s.sock
    rm -f "$img" "$sock"
    qemu-img create -q -f qcow2 "$img" 1T
    srv=("$KEEL" serve)
    [ $server = keel ] || srv=(qemu-nbd)
    # --fork returns once the server accepts (the socket file exists from bind(), before listen()).
    rm -f "$sock.pid"
    "${srv[@]}" -f qcow2 --cache=none --aio=io_uring -t -k "$sock" --fork --pid-file "$sock.pid" "$img" \
      2>"$DIR/server.log"
    pid=$(cat "$sock.pid")
    iops=$(fio --name=rss --ioengine=nbd --uri="nbd+unix:///?socket=$sock" --rw=randwrite --bs=4k --iodepth=32 \
      --time_based --runtime="$SECS" --size=1T --output-format=json 2>/dev/null | sed -n '/^{/,$p' |
      python3 -c 'import json,sys; print(int(json.load(sys.stdin)["jobs"][0]["write"]["iops"]))')
    peak=$(awk '/VmHWM/ {printf "%.1f", $2/1024}' /proc/$pid/status)
    stop_pid "$pid"  # gone before the next round serves on the same socket path
    printf '%-10s %6s %10s %8s\n' $server $r "$peak" "$iops"
  done
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
