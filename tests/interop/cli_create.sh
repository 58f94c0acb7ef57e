#!/usr/bin/env bash
# Proves `keel create` behaves like `qemu-img create`: for every image shape and preallocation
# mode it prints the same "Formatting ..." line, the image passes `qemu-img check`, reads as
# zeros, and `qemu-img info` shows the same fields as for QEMU's own image; `keel info` on it
# prints exactly what qemu-img info prints; backing files (size taken from the backing file,
# -u, relative names, raw backing) work; and every option, size and usage error gives qemu-img's
# message (with "keel" for "qemu-img") and exit code.
# Usage: bash cli_create.sh /path/to/keel
set -euo pipefail
source "$(dirname "$(realpath "$0")")/cli_lib.bash"

# both_create NAME ARGS...: qemu-img create in q/, keel create in k/, same stdout and status.
both_create() {
  local name=$1; shift
  local qrc=0 krc=0
  (cd q && qemu-img create "$@") >"$T/q.out" 2>"$T/q.err" || qrc=$?
  (cd k && "$KEEL" create "$@") >"$T/k.out" 2>"$T/k.err" || krc=$?
  [ $qrc -eq 0 ] || fail "$name: qemu-img create $* failed: $(cat "$T/q.err")"
  [ $krc -eq 0 ] || fail "$name: keel create $* failed: $(cat "$T/k.err")"
  same_file "$name: 'Formatting' line of create $*" "$T/q.out" "$T/k.out"
}

# info_fields_match IMG: qemu-img info of keel's image equals that of QEMU's (actual-size aside).
info_fields_match() {
  (cd q && qemu-img info --output=json "$1") | grep -v '"actual-size"' >"$T/q.info"
  (cd k && qemu-img info --output=json "$1") | grep -v '"actual-size"' >"$T/k.info"
  same_file "$1: qemu-img info of keel's image vs QEMU's image" "$T/q.info" "$T/k.info"
  (cd k && info_same_as_qemu "$1")
}

mkdir q k
for shape in "${SHAPES[@]}"; do
  IFS='|' read -r name opts size <<<"$shape"
  say "create shape $name ($(shape_opts "$name" "$opts"))"
  both_create "$name" -f qcow2 -o "$(shape_opts "$name" "$opts")" "$name.qcow2" "$size"
  (cd k && qcheck "$name.qcow2")
  info_fields_match "$name.qcow2"
  (cd q && qcompare "$name.qcow2" "$T/k/$name.qcow2")
done

say "preallocation modes"
for p in off metadata falloc full; do
  both_create "prealloc_$p" -f qcow2 -o preallocation=$p "pre_$p.qcow2" 3M
  (cd k && qcheck "pre_$p.qcow2")
  info_fields_match "pre_$p.qcow2"
  qcompare "$T/q/pre_$p.qcow2" "$T/k/pre_$p.qcow2"
  both_create "prealloc_el2_$p" -f qcow2 -o preallocation=$p,extended_l2=on,cluster_size=128k "pre_el2_$p.qcow2" 3M
  (cd k && qcheck "pre_el2_$p.qcow2")
done
for p in off falloc full; do
  both_create "raw_$p" -f raw -o preallocation=$p "pre_$p.raw" 1M
  same_file "raw image with preallocation=$p" "q/pre_$p.raw" "k/pre_$p.raw"
done

say "sizes: suffixes, fractions, hex, rounding to 512"
for s in 0 513 1b 1.3k 2.5G 0x100000 1.0 007 " 5" +5 1.k 4T; do
  both_create "size '$s'" -f qcow2 "sz.qcow2" "$s"
  info_fields_match sz.qcow2
done
both_create "raw size 513" -f raw r513.raw 513
same_text "raw image of 513 bytes is rounded up to 1024" "1024" "$(stat -c %s k/r513.raw)"

say "backing files"
for d in q k; do
  (cd $d && qemu-img create -q -f qcow2 base.qcow2 5M && qemu-img create -q -f raw base.raw 3M)
  mkdir -p $d/sub
  (cd $d && qemu-img create -q -f qcow2 sub/base.qcow2 2M)
done
both_create "size from backing" -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
both_create "explicit size over backing" -f qcow2 -b base.qcow2 -F qcow2 top_big.qcow2 8M
both_create "raw backing" -f qcow2 -b base.raw -F raw top_raw.qcow2
both_create "relative backing in a subdirectory" -f qcow2 -b base.qcow2 -F qcow2 sub/top.qcow2
both_create "-u with a missing backing file" -f qcow2 -u -b missing.qcow2 -F qcow2 top_u.qcow2 1M
both_create "backing via -o" -f qcow2 -o backing_file=base.qcow2,backing_fmt=qcow2 top_o.qcow2
both_create "backing with v2" -f qcow2 -o compat=0.10 -b base.qcow2 -F qcow2 top_v2.qcow2
both_create "backing with metadata preallocation and extended L2" -f qcow2 \
  -o preallocation=metadata,extended_l2=on -b base.qcow2 -F qcow2 top_pre.qcow2
for img in top.qcow2 top_big.qcow2 top_raw.qcow2 sub/top.qcow2 top_u.qcow2 top_o.qcow2 top_v2.qcow2 top_pre.qcow2; do
  [ "$img" = top_u.qcow2 ] || (cd k && qcheck "$img")  # its backing file does not exist
  info_fields_match "$img"
done
(cd k && info_same_as_qemu sub/top.qcow2 --backing-chain)
(cd k && info_same_as_qemu top_raw.qcow2 --backing-chain)
qcompare "$T/q/top_pre.qcow2" "$T/k/top_pre.qcow2"

say "errors: same messages (qemu-img -> keel) and exit codes as qemu-img"
# both_fail DESCRIPTION ARGS...: both tools refuse with the same stdout, stderr and status.
both_fail() {
  local what=$1; shift
  local qrc=0 krc=0
  (cd q && qemu-img create "$@") >"$T/q.out" 2>"$T/q.err" || qrc=$?
  (cd k && "$KEEL" create "$@") >"$T/k.out" 2>"$T/k.err" || krc=$?
  [ $qrc -ne 0 ] || fail "$what: qemu-img create $* unexpectedly succeeded"
  [ $qrc -eq $krc ] || fail "$what: qemu-img exited $qrc, keel $krc ($(cat "$T/k.err"))"
  same_file "$what: stdout of create $*" "$T/q.out" "$T/k.out"
  # qemu-img leaves some hints without a final newline; compare lines.
  sed -e 's/qemu-img/keel/g' -e '$a\' "$T/q.err" >"$T/q.err.n"
  sed -e '$a\' "$T/k.err" >"$T/k.err.n"
  same_file "$what: stderr of create $*" "$T/q.err.n" "$T/k.err.n"
}
for o in cluster_size=1000 cluster_size=4M cluster_size=abc foo=bar preallocation=x refcount_bits=3 \
  refcount_bits=128 refcount_bits=x compat=2 lazy_refcounts=maybe "lazy_refcounts=on,," \
  compression_type=lz4 compat=0.10,lazy_refcounts=on compat=0.10,compression_type=zstd \
  data_file_raw=on compat=0.10,data_file=x.d compat=0.10,extended_l2=on compat=0.10,refcount_bits=8 \
  cluster_size=4k,extended_l2=on cluster_size=1000,extended_l2=on \
  compat=0.10,extended_l2=on,cluster_size=1k cluster_size=1k,compat=0.10,refcount_bits=3 \
  compat=0.10,lazy_refcounts=on,data_file=x.d compat=v2,compression_type=zstd,data_file=x \
  backing_fmt=qcow2 size=2M "backing_file=" backing_file=e.qcow2,backing_fmt=qcow2 \
  data_file=z.d,data_file_raw=on,backing_file=base.qcow2,backing_fmt=qcow2 \
  preallocation=metadata,backing_file=base.qcow2,backing_fmt=qcow2; do
  both_fail "-o $o" -f qcow2 -o "$o" e.qcow2 1M
done
for s in 1.5 1KiB 1e6 16E 8E "5 " 1.5b .5k 0x1.5k k ""; do
  both_fail "size '$s'" -f raw e.raw "$s"
done
both_fail "size needing too large an L1 table" -f qcow2 e.qcow2 1E
both_fail "size needing too large an L1 table (512-byte clusters)" -f qcow2 -o cluster_size=512 e.qcow2 1T
both_fail "missing size" -f qcow2 e.qcow2
both_fail "missing file name" -f qcow2
both_fail "unknown format" -f vmdk2 e.img 1M
both_fail "backing without its format" -f qcow2 -b base.qcow2 e.qcow2
both_fail "-u backing without its format" -f qcow2 -u -b base.qcow2 e.qcow2 1M
both_fail "-u without a size" -f qcow2 -u -b base.qcow2 -F qcow2 e.qcow2
both_fail "-F without -b" -f qcow2 -F qcow2 e.qcow2 1M
both_fail "backing on raw" -f raw -b base.qcow2 -F qcow2 e.raw 1M

say "-o help"
(qemu-img create -f qcow2 -o help; true) >"$T/q.help"
"$KEEL" create -f qcow2 -o help >"$T/k.help" || fail "keel create -o help exited $?"
for key in backing_file backing_fmt cluster_size compat compression_type data_file data_file_raw \
  extended_l2 lazy_refcounts preallocation refcount_bits size; do
  grep -q "^  $key=" "$T/k.help" || fail "keel create -o help does not list $key"
  pass
done

finish
