#!/usr/bin/env bash
# Proves `keel io` handles the image like qemu-io 7.2 (issue 16): starting without a file, the
# open [-rsnkU] [-t] [-d] [-o driver=,file.filename=,...] [path], close, reopen [-r|-w] [-c], and
# truncate commands, and -s (writes to a throw-away overlay); on twins of a QEMU-made image,
# qemu-io and keel io print the same lines and exit codes, and leave the same image (qemu-img
# compare, check, info).
# Usage: bash parity_io_session.sh /path/to/keel
set -euo pipefail
HERE=$(dirname "$(realpath "$0")")
source "$HERE/cli_lib.bash"
source "$HERE/parity_lib.bash"

image() {
  qemu-img create -q -f qcow2 a.qcow2 1M
  qemu-io -c "write -P 0x11 0 64k" a.qcow2
  cp a.qcow2 orig.qcow2
}

say "no file: only open, help, quit, sleep"
twin_setup image
io_twin "read without a file" -c "read 0 512"
io_twin "commands without a file" -c "sleep 1" -c "length" -c "info" -c "map" -c "close" -c "alloc 0" -c "quit"
io_twin "help of the new commands" -c "help open" -c "help close" -c "help reopen" -c "help truncate"

say "open and close"
io_twin "open -r, read, open again, close twice" -c "open -r a.qcow2" -c "read -P 0x11 0 64k" \
  -c "write 0 512" -c "open a.qcow2" -c "close" -c "close" -c "read 0 512"
io_twin "open errors" -c "open nonexist" -c "open -x a.qcow2" -c "open a.qcow2 b.qcow2" -c "open" \
  -c "open -t bogus a.qcow2" -c "open -d bogus a.qcow2"
io_twin "open -o driver=qcow2, writes" -c "open -o driver=qcow2 a.qcow2" -c "write -P 0x22 64k 64k" \
  -c "close" -c "open -U a.qcow2" -c "open -r -U -t writeback -d unmap a.qcow2" \
  -c "read -P 0x22 64k 64k" -c "length"
io_twin "open -o file.filename" -c "open -o driver=qcow2,file.filename=a.qcow2" -c "read -P 0x11 0 64k"
io_twin "open -o driver=raw" -c "open -r -o driver=raw a.qcow2" -c "length"
same_content "after open/write" a.qcow2
clean "after open/write" a.qcow2

say "reopen"
io_twin "reopen -r / -w" a.qcow2 -c "reopen -r" -c "write 0 512" -c "read -P 0x11 0 512" \
  -c "reopen -w" -c "write -P 0x33 0 512" -c "reopen -c writeback" -c "read -P 0x33 0 512"
io_twin "reopen errors" a.qcow2 -c "reopen -r -w" -c "reopen -o foo=bar" -c "reopen -c bogus" \
  -c "reopen x" -c "reopen -y"
same_content "after reopen" a.qcow2
clean "after reopen" a.qcow2

say "truncate"
io_twin "truncate grow and shrink" a.qcow2 -c "truncate 2M" -c "length" -c "write -P 0x44 1536k 64k" \
  -c "truncate 3M" -c "read -P 0x44 1536k 64k" -c "truncate 1M" -c "length" -c "truncate -m off 1536k"
io_twin "truncate errors" a.qcow2 -c "truncate" -c "truncate abc" -c "truncate -m bogus 2M" \
  -c "truncate 1 2 3 4"
io_twin "truncate read-only" -r a.qcow2 -c "truncate 4M" -c "length"
same_content "after truncate" a.qcow2
same_info "after truncate" a.qcow2
clean "after truncate" a.qcow2

say "-s: writes go to a throw-away overlay"
twin_setup image
io_twin "io -s" -s a.qcow2 -c "write -P 0x55 0 128k" -c "read -P 0x55 0 128k" -c "length"
io_twin "open -s" -c "open -s a.qcow2" -c "write -P 0x66 0 64k" -c "read -P 0x66 0 64k" -c "close" \
  -c "open -r a.qcow2" -c "read -P 0x11 0 64k"
same_content "after -s" a.qcow2
same_content "-s left the image as it was" a.qcow2 orig.qcow2
finish
