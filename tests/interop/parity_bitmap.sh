#!/usr/bin/env bash
# Proves `keel bitmap` and keel's persistent dirty bitmaps behave like QEMU's. On twins of
# QEMU-made images of several shapes, qemu-img bitmap and keel bitmap run the same add / merge /
# clear / disable / enable / remove sequence with the same output and exit codes; after each step
# qemu-img check finds keel's image clean, qemu-img info --output=json agrees on both twins, and
# keel info prints exactly what qemu-img info prints. The dirty bits are compared through QEMU's
# own export: qemu-nbd -B NAME serves qemu:dirty-bitmap:NAME and nbdinfo --map prints it. Both
# directions: qemu-io writes tracked in keel's bitmaps, keel io writes tracked in QEMU's bitmaps,
# each compared with the other tool doing the same writes. Then bitmaps left in use by a killed
# writer (qemu-io or keel io, sigraise 9), bitmaps in images with a backing file (the header
# extension is added and removed around the backing file name), resize, merge from another image,
# and usage errors.
# Usage: bash parity_bitmap.sh /path/to/keel
set -euo pipefail
: "${KEEL_CLI_TEST_TIMEOUT:=600}"
export KEEL_CLI_TEST_TIMEOUT
HERE=$(dirname "$(realpath "$0")")
source "$HERE/cli_lib.bash"
source "$HERE/parity_lib.bash"

# qemu-img names its internal node ("#block1NN", random digits) where keel names the file.
node_norm() { sed -E -e "s/persistent in '[^']*'/persistent in NODE/" -e 's/bitmaps to [^:]*:/bitmaps to NODE:/'; }

# bm_run DESC ARGS...: twin_run of `bitmap ARGS`, stderr read through node_norm.
bm_run() {
  local desc=$1; shift
  local qrc=0 krc=0
  (cd "$T/q" && qemu-img bitmap "$@") >"$T/q.out" 2>"$T/q.err.raw" || qrc=$?
  (cd "$T/k" && "$KEEL" bitmap "$@") >"$T/k.out" 2>"$T/k.err.raw" || krc=$?
  as_keel <"$T/q.err.raw" | node_norm >"$T/q.err"
  node_norm <"$T/k.err.raw" >"$T/k.err"
  [ $qrc -eq $krc ] || {
    echo "--- qemu-img bitmap $*:" >&2; cat "$T/q.out" "$T/q.err" >&2
    echo "--- keel bitmap $*:" >&2; cat "$T/k.out" "$T/k.err" >&2
    fail "$desc: qemu-img bitmap exited $qrc, keel $krc"
  }
  same_file "$desc: stdout of 'bitmap $*'" "$T/q.out" "$T/k.out"
  same_file "$desc: stderr of 'bitmap $*'" "$T/q.err" "$T/k.err"
}

# keel_info_same DESC IMAGE: keel info (JSON and human) of k/IMAGE prints what qemu-img does.
keel_info_same() {
  (cd "$T/k" && info_same_as_qemu "$2")
  pass
}

# after DESC IMAGE: keel's twin is clean, the twins' info agree, keel info matches qemu-img.
after() {
  clean "$1" "$2"
  same_info "$1" "$2"
  keel_info_same "$1" "$2"
}

OPTS=""
BACKING=0
make_image() {
  local b=()
  if [ "$BACKING" = 1 ]; then
    qemu-img create -q -f qcow2 base.qcow2 8M
    qemu-io -c 'write -P 0x5a 0 8M' base.qcow2
    b=(-b base.qcow2 -F qcow2)
  fi
  qemu-img create -q -f qcow2 ${OPTS:+-o "$OPTS"} "${b[@]}" a.qcow2 8M
  qemu-io -c 'write -P 0x11 0 1M' -c 'write -P 0x12 1500k 3k' a.qcow2
}

# The same writes through qemu-io (q/) and keel io (k/), and the other way round.
WRITES1=(-c 'write -P 0x21 0 64k' -c 'write -P 0x22 3000k 5k' -c 'write -z 4M 128k' -c 'discard 5M 1M'
         -c 'write -P 0x23 8388096 512')
WRITES2=(-c 'write -P 0x31 1M 4k' -c 'write -z -u 6M 64k' -c 'write -P 0x32 7M 1')

BM_SHAPES=(
  "v3|compat=1.1|0"
  "c512|cluster_size=512|0"
  "c4k|cluster_size=4k|0"
  "c2M|cluster_size=2M|0"
  "rc1|refcount_bits=1|0"
  "el2|extended_l2=on,cluster_size=128k|0"
  "zstd|compression_type=zstd|0"
  "lazy|lazy_refcounts=on|0"
  "backing|compat=1.1|1"
  "backing_c4k|cluster_size=4k|1"
)

for shape in "${BM_SHAPES[@]}"; do
  IFS='|' read -r name OPTS BACKING <<<"$shape"
  say "shape $name ($OPTS, backing=$BACKING): add, track, merge, clear, disable, enable, remove"
  twin_setup make_image
  bm_run "$name: add b1 (default granularity)" --add a.qcow2 b1
  after "$name: after add b1" a.qcow2
  bm_run "$name: add b2 disabled, 4k" --add -g 4k --disable a.qcow2 b2
  bm_run "$name: add b3 at 1M" --add -g 1M a.qcow2 b3
  bm_run "$name: add an existing name" --add a.qcow2 b1
  after "$name: after three adds" a.qcow2
  # Writes: QEMU into both twins' bitmaps, then keel io in k/ against qemu-io in q/.
  both_do qemu-io "${WRITES1[@]}" a.qcow2
  (cd "$T/q" && run_ok "$name: qemu-io writes" qemu-io "${WRITES2[@]}" a.qcow2)
  (cd "$T/k" && run_ok "$name: keel io writes" "$KEEL" io "${WRITES2[@]}" a.qcow2)
  after "$name: after writes" a.qcow2
  same_bits "$name: after writes" a.qcow2 b1 b2 b3
  same_content "$name: after writes" a.qcow2
  bm_run "$name: merge b3 into b2 (coarser into finer)" --merge b3 a.qcow2 b2
  bm_run "$name: merge b2 into b1" --merge b2 a.qcow2 b1
  same_bits "$name: after merges" a.qcow2 b1 b2 b3
  after "$name: after merges" a.qcow2
  bm_run "$name: clear b3, disable b1, enable b2" --clear --disable a.qcow2 b3
  bm_run "$name: disable b1" --disable a.qcow2 b1
  bm_run "$name: enable b2" --enable a.qcow2 b2
  (cd "$T/q" && run_ok "$name: qemu-io writes" qemu-io -c 'write -P 0x41 2M 70k' a.qcow2)
  (cd "$T/k" && run_ok "$name: keel io writes" "$KEEL" io -c 'write -P 0x41 2M 70k' a.qcow2)
  same_bits "$name: after enable/disable and writes" a.qcow2 b1 b2 b3
  after "$name: after clear, disable, enable" a.qcow2
  bm_run "$name: several actions in one call" --add --disable --merge b2 --enable a.qcow2 b4
  same_bits "$name: b4" a.qcow2 b4
  bm_run "$name: remove b1" --remove a.qcow2 b1
  bm_run "$name: remove a missing bitmap" --remove a.qcow2 b1
  after "$name: after remove" a.qcow2
  bm_run "$name: remove b2" --remove a.qcow2 b2
  bm_run "$name: remove b3" --remove a.qcow2 b3
  bm_run "$name: remove b4 (the last)" --remove a.qcow2 b4
  after "$name: no bitmaps left" a.qcow2
  same_content "$name: content after everything" a.qcow2
  if [ "$BACKING" = 1 ]; then
    reads_pattern "$name: the backing file still shows through" a.qcow2 0x5a 2200k 64k
  fi
  # QEMU's warnings (stale extension, leaked clusters) must not appear on keel's image.
  (cd "$T/k" && qemu-img info a.qcow2 2>&1 >/dev/null) | grep -q . && fail "$name: qemu-img info warns on keel's image"
  pass

  say "shape $name: keel changes QEMU's bitmaps, QEMU changes keel's"
  twin_setup make_image
  (cd "$T/q" && run_ok "qemu-img adds q1" qemu-img bitmap --add a.qcow2 q1)
  (cd "$T/k" && run_ok "qemu-img adds q1 (k)" qemu-img bitmap --add a.qcow2 q1)
  (cd "$T/q" && run_ok "qemu-img adds k1" qemu-img bitmap --add -g 8k a.qcow2 k1)
  (cd "$T/k" && run_ok "keel adds k1" "$KEEL" bitmap --add -g 8k a.qcow2 k1)
  both_do qemu-io "${WRITES2[@]}" a.qcow2
  (cd "$T/q" && run_ok "qemu-img merges" qemu-img bitmap --merge q1 a.qcow2 k1)
  (cd "$T/k" && run_ok "keel merges QEMU's bitmap" "$KEEL" bitmap --merge q1 a.qcow2 k1)
  (cd "$T/q" && run_ok "qemu-img clears" qemu-img bitmap --clear a.qcow2 q1)
  (cd "$T/k" && run_ok "keel clears QEMU's bitmap" "$KEEL" bitmap --clear a.qcow2 q1)
  (cd "$T/k" && run_ok "keel io writes into QEMU's bitmap" "$KEEL" io "${WRITES1[@]}" a.qcow2)
  (cd "$T/q" && run_ok "qemu-io writes" qemu-io "${WRITES1[@]}" a.qcow2)
  same_bits "$name: mixed" a.qcow2 q1 k1
  after "$name: mixed" a.qcow2
  (cd "$T/k" && run_ok "qemu-img removes keel's bitmap" qemu-img bitmap --remove a.qcow2 k1)
  (cd "$T/q" && run_ok "qemu-img removes k1" qemu-img bitmap --remove a.qcow2 k1)
  after "$name: QEMU removed keel's bitmap" a.qcow2
done

say "bitmaps left in use by a killed writer"
OPTS=compat=1.1
BACKING=0
make_in_use() {
  make_image
  qemu-img bitmap --add a.qcow2 u1
  qemu-img bitmap --add --disable a.qcow2 u2
  qemu-img bitmap --add a.qcow2 ok
  qemu-io -c 'write 0 64k' -c 'sigraise 9' a.qcow2 || true
  qemu-img bitmap --remove a.qcow2 ok  # leaves ok removed, u1 and u2 in use
}
twin_setup make_in_use
grep -q in-use <(cd "$T/k" && qemu-img info a.qcow2) || fail "setup left no bitmap in use"
after "in use: as found" a.qcow2
bm_run "in use: clear" --clear a.qcow2 u1
bm_run "in use: enable" --enable a.qcow2 u1
bm_run "in use: disable" --disable a.qcow2 u2
bm_run "in use: merge into" --merge u2 a.qcow2 u1
bm_run "in use: add the same name" --add a.qcow2 u1
bm_run "in use: add another" --add a.qcow2 fresh
bm_run "in use: merge from" --merge u1 a.qcow2 fresh
both_do qemu-io -c 'write 1M 64k' a.qcow2
(cd "$T/k" && run_ok "keel io writes" "$KEEL" io -c 'write 2M 64k' a.qcow2)
(cd "$T/q" && run_ok "qemu-io writes" qemu-io -c 'write 2M 64k' a.qcow2)
after "in use: after writes" a.qcow2
same_bits "in use: the consistent bitmap tracked the writes" a.qcow2 fresh
bm_run "in use: remove" --remove a.qcow2 u1
after "in use: after remove" a.qcow2

say "keel io killed while tracking: the bitmap is in use, never silently wrong"
twin_setup make_image
(cd "$T/k" && run_ok "keel adds t" "$KEEL" bitmap --add a.qcow2 t)
(cd "$T/k" && "$KEEL" io -c 'write 0 64k' -c 'sigraise 9' a.qcow2 >/dev/null 2>&1) || true
(cd "$T/k" && qemu-img info --output=json a.qcow2) | grep -q '"in-use"' || fail "keel io killed: bitmap t not in use"
pass
clean "keel io killed: clean" a.qcow2
(cd "$T/k" && info_same_as_qemu a.qcow2)
(cd "$T/k" && run_ok "keel removes the in-use bitmap" "$KEEL" bitmap --remove a.qcow2 t)
clean "keel io killed: after remove" a.qcow2

say "resize keeps bitmaps usable"
twin_setup make_image
bm_run "resize: add" --add -g 4k a.qcow2 r
both_do qemu-io -c 'write 7M 1M' a.qcow2
twin_run "resize: grow" resize a.qcow2 12M
(cd "$T/q" && run_ok "qemu-io writes past the old end" qemu-io -c 'write 10M 8k' a.qcow2)
(cd "$T/k" && run_ok "keel io writes past the old end" "$KEEL" io -c 'write 10M 8k' a.qcow2)
same_bits "resize: after grow" a.qcow2 r
after "resize: after grow" a.qcow2
twin_run "resize: shrink" resize --shrink a.qcow2 6M
same_bits "resize: after shrink" a.qcow2 r
after "resize: after shrink" a.qcow2

say "merge from another image (-b, -F)"
make_two() {
  make_image
  qemu-img create -q -f qcow2 other.qcow2 8M
  qemu-img create -q -f qcow2 small.qcow2 4M
  qemu-img bitmap --add -g 512 other.qcow2 o
  qemu-img bitmap --add small.qcow2 s
  qemu-io -c 'write 3M 1k' -c 'write 5M 65k' other.qcow2
  qemu-img bitmap --add -g 64k --disable a.qcow2 dst
}
twin_setup make_two
bm_run "merge: from another image" --merge o -b other.qcow2 a.qcow2 dst
bm_run "merge: -F qcow2" --merge o -b other.qcow2 -F qcow2 a.qcow2 dst
bm_run "merge: -F raw finds no bitmap" --merge o -b other.qcow2 -F raw a.qcow2 dst
bm_run "merge: different sizes" --merge s -b small.qcow2 a.qcow2 dst
bm_run "merge: missing source" --merge nope -b other.qcow2 a.qcow2 dst
bm_run "merge: missing target" --merge o -b other.qcow2 a.qcow2 nope
same_bits "merge: from another image" a.qcow2 dst
after "merge: from another image" a.qcow2

say "usage errors, bad names and granularities, v2 and raw images"
twin_setup make_image
bm_run "no action" a.qcow2 b
bm_run "no action, no file" 
bm_run "-g without --add" -g 64k --remove a.qcow2 b
bm_run "-g 0 without --add is accepted" -g 0 --remove a.qcow2 b
bm_run "-F without -b" -F qcow2 --remove a.qcow2 b
bm_run "-b without --merge" -b x --remove a.qcow2 b
bm_run "one positional" --remove a.qcow2
bm_run "three positionals" --remove a.qcow2 b c
bm_run "empty name" --add a.qcow2 ""
bm_run "granularity not a power of two" --add -g 1000 a.qcow2 b
bm_run "granularity 256" --add -g 256 a.qcow2 b
bm_run "granularity 4G (0 as uint32)" --add -g 4G a.qcow2 b
bm_run "granularity 2G" --add -g 2G a.qcow2 big
bm_run "granularity with junk" --add -g 4G+512 a.qcow2 b
bm_run "negative granularity" --add -g -1 a.qcow2 b
bm_run "-g 0 means the default" --add -g 0 a.qcow2 dflt
bm_run "name of 1024 bytes" --add a.qcow2 "$(printf 'x%.0s' $(seq 1024))"
bm_run "name of 1023 bytes" --add a.qcow2 "$(printf 'y%.0s' $(seq 1023))"
bm_run "options after the file" --add a.qcow2 late --disable
bm_run "remove, clear, enable, disable of a missing bitmap" --clear a.qcow2 nope
bm_run "enable missing" --enable a.qcow2 nope
bm_run "disable missing" --disable a.qcow2 nope
bm_run "merge missing into missing" --merge nope a.qcow2 nope2
after "after the errors" a.qcow2
twin_rc "missing file" bitmap --add nonexistent.qcow2 b
make_big() { qemu-img create -q -f qcow2 big.qcow2 4T; }
twin_setup make_big
bm_run "too much space at 512 bytes per bit" --add -g 512 big.qcow2 b
bm_run "1k granularity fits" --add -g 1k big.qcow2 b
after "big image" big.qcow2
make_v2() { qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 8M; }
twin_setup make_v2
bm_run "v2 image" --add v2.qcow2 b
bm_run "v2 image: remove" --remove v2.qcow2 b
make_raw() { qemu-img create -q -f raw r.raw 1M; }
twin_setup make_raw
bm_run "raw: add" --add -f raw r.raw b
bm_run "raw: remove" --remove -f raw r.raw b
finish
