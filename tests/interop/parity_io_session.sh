#!/usr/bin/env bash
# Proves `keel io` handles the image like qemu-io 7.2 (issue 16): starting without a file, the
# open [-rsnkU] [-t] [-d] [-o driver=,file.filename=,...] [path], close, reopen [-r|-w] [-c] [-o], and
# truncate commands, -s (writes to a throw-away overlay), write -s FILE's pattern file (its
# errors in qemu-io's words, a short file repeated) and aio_write -z -P; on twins of a QEMU-made image,
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

say "reopen -o: the options qcow2's reopen may change"
io_twin "reopen -o accepted" a.qcow2 -c "reopen -o lazy-refcounts=on" -c "write -P 0x77 0 64k" \
  -c "reopen -o lazy-refcounts=off,pass-discard-request=on,pass-discard-other=off" \
  -c "reopen -o l2-cache-size=1M" -c "reopen -o cache-size=2M" -c "reopen -o refcount-cache-size=256k" \
  -c "reopen -o cache-clean-interval=10" -c "reopen -o overlap-check=none" \
  -c "reopen -o overlap-check.template=all" -c "reopen -o discard=unmap,cache.no-flush=on" \
  -c "reopen -o auto-read-only=on,pass-discard-snapshot=off" -c "reopen -o cache.no-flush=off" \
  -c "write -P 0x78 64k 64k" -c "read -P 0x77 0 64k" -c "read -P 0x78 64k 64k"
io_twin "reopen -o refused" a.qcow2 -c "reopen -o lazy-refcounts=maybe" -c "reopen -o discard=foo" \
  -c "reopen -o cache.direct=foo" -c "reopen -o overlap-check=foo" -c "reopen -o pass-discard-other=foo" \
  -c "reopen -o l2-cache-size=1M,refcount-cache-size=1M,cache-size=1M" -c "reopen -o l2-cache-size=foo" \
  -c "reopen -o l2-cache-entry-size=3k" -c "reopen -o cache-clean-interval=-1" \
  -c "reopen -o overlap-check.l1=off" -c "reopen -o node-name=x" -c "reopen -o file.locking=off" \
  -c "reopen -o driver=raw" -c "write -P 0x79 0 4k" -c "read -P 0x79 0 4k"
same_content "after reopen -o" a.qcow2
clean "after reopen -o" a.qcow2
v2_image() {
  qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 1M
  qemu-io -c "write -P 0x11 0 64k" v2.qcow2
}
twin_setup v2_image
io_twin "reopen -o lazy-refcounts on a v2 image" v2.qcow2 -c "reopen -o lazy-refcounts=on" \
  -c "reopen -o lazy-refcounts=off" -c "write -P 0x22 0 4k" -c "read -P 0x22 0 4k"
same_content "v2 after reopen -o" v2.qcow2
same_info "v2 after reopen -o" v2.qcow2
clean "v2 after reopen -o" v2.qcow2
twin_setup image

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

say "write -s FILE (a pattern file) and aio_write -z -P, as qemu-io"
files() {
  image
  printf 'abc' >short
  : >empty
  mkdir dir
}
twin_setup files
io_twin "write -s: missing, empty, a directory, a short file repeated" a.qcow2 -c "write -s /missing/f 0 512" \
  -c "write -s empty 0 512" -c "write -s dir 0 512" -c "write -s short 0 1000" -c "read -v 0 1000" \
  -c "write -s a.qcow2 64k 4k" -c "write -s short -P 1 0 512"
io_twin "aio_write -z -P writes zeros" a.qcow2 -c "aio_write -z -P 0x11 0 512" -c "aio_flush" \
  -c "read -P 0 0 512" -c "aio_write -P 5 -z 512 512" -c "aio_flush" -c "read -P 0 0 1k"
same_content "after write -s and aio_write -z -P" a.qcow2
clean "after write -s and aio_write -z -P" a.qcow2
finish
