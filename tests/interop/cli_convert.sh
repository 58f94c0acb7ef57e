#!/usr/bin/env bash
# Proves `keel convert` copies images like `qemu-img convert`: raw->qcow2, qcow2->raw,
# qcow2->qcow2 with target options, whole backing chains flattened, concatenated sources, -n into
# an existing image, -S sparse detection (and -S 0 full allocation), -c compressed output with
# zlib and zstd, internal snapshots (-l), the -p progress line; every qcow2 result passes
# `qemu-img check` and `qemu-img compare` equals the source; errors match qemu-img's.
# Usage: bash cli_convert.sh /path/to/keel
set -euo pipefail
source "$(dirname "$(realpath "$0")")/cli_lib.bash"

# A source with data, zeros, holes and a backing file.
run_ok "create base" qemu-img create -q -f qcow2 base.qcow2 12M
run_ok "fill base" qemu-io -c "write -P 0x21 0 2M" -c "write -P 0x22 9M 1M" base.qcow2
run_ok "create src" qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 src.qcow2
as_c_args wl < <(workload 12582912)
run_ok "fill src" qemu-io "${wl[@]}" src.qcow2
run_ok "src as raw (qemu-img)" qemu-img convert -O raw src.qcow2 src.raw

# converted IMG FMT: the target reads like the source; qcow2 targets also pass check.
converted() {
  qcompare -f "$2" -F raw "$1" src.raw
  if [ "$2" = qcow2 ]; then qcheck "$1"; fi
}

say "qcow2 (with backing chain) -> raw"
run_ok "keel convert -> raw" "$KEEL" convert -O raw src.qcow2 out.raw
same_file "keel convert -O raw equals qemu-img convert -O raw" src.raw out.raw
say "raw -> qcow2 -> raw round trip"
run_ok "keel convert raw -> qcow2" "$KEEL" convert -f raw -O qcow2 src.raw rt.qcow2
converted rt.qcow2 qcow2
run_ok "keel convert qcow2 -> raw" "$KEEL" convert -O raw rt.qcow2 rt.raw
same_file "round trip" src.raw rt.raw

say "sparse output: zero ranges are not allocated (compare allocation with qemu-img's output)"
run_ok "qemu-img convert -> qcow2" qemu-img convert -O qcow2 src.qcow2 q_sparse.qcow2
run_ok "keel convert -> qcow2" "$KEEL" convert -O qcow2 src.qcow2 k_sparse.qcow2
converted k_sparse.qcow2 qcow2
q_alloc=$(qemu-img map --output=json q_sparse.qcow2 | grep -c '"data": true' || true)
k_alloc=$(qemu-img map --output=json k_sparse.qcow2 | grep -c '"data": true' || true)
[ "$k_alloc" -le "$((q_alloc + 4))" ] || fail "keel's target has $k_alloc data extents, qemu-img's $q_alloc"
pass
q_used=$(qemu-img check --output=json q_sparse.qcow2 | sed -n 's/.*"allocated-clusters": \([0-9]*\).*/\1/p')
k_used=$(qemu-img check --output=json k_sparse.qcow2 | sed -n 's/.*"allocated-clusters": \([0-9]*\).*/\1/p')
[ "$k_used" -le "$q_used" ] || fail "keel's target allocates $k_used clusters, qemu-img's $q_used"
pass
run_ok "keel convert -> sparse raw" "$KEEL" convert -O raw src.qcow2 sparse.raw
[ "$(du -k sparse.raw | cut -f1)" -lt 12288 ] || fail "raw target is not sparse: $(du -k sparse.raw)"
pass

say "-S 0 fully allocates; -S 64k still equal"
run_ok "keel convert -S 0" "$KEEL" convert -S 0 -O qcow2 src.qcow2 full.qcow2
converted full.qcow2 qcow2
if qemu-img map --output=json full.qcow2 | grep -q '"data": false'; then
  fail "-S 0 target has unallocated ranges: $(qemu-img map --output=json full.qcow2 | head -3)"
fi
pass
run_ok "keel convert -S 64k" "$KEEL" convert -S 64k -O qcow2 src.qcow2 s64.qcow2
converted s64.qcow2 qcow2

say "target options (-o, repeated) and shapes"
for o in "compat=0.10" "cluster_size=512" "cluster_size=2M" "refcount_bits=1" "extended_l2=on" \
  "lazy_refcounts=on" "data_file=out_df.data,data_file_raw=on" "preallocation=metadata"; do
  rm -f o.qcow2
  run_ok "keel convert -o $o" "$KEEL" convert -O qcow2 -o "$o" -o compression_type=zlib src.qcow2 o.qcow2
  converted o.qcow2 qcow2
done

say "-c: compressed clusters with zlib and zstd"
for ct in zlib zstd; do
  for cs in 4k 64k 2M; do
    rm -f c.qcow2
    run_ok "keel convert -c $ct $cs" "$KEEL" convert -c -O qcow2 -o "compression_type=$ct,cluster_size=$cs" src.qcow2 c.qcow2
    converted c.qcow2 qcow2
    pct=$(qemu-img check c.qcow2 | sed -n 's/.* \([0-9.]*\)% compressed clusters/\1/p')
    [ "${pct%%.*}" -ge 50 ] || fail "-c $ct $cs: only $pct% of clusters are compressed"
    pass
    grep -q "\"compression-type\": \"$ct\"" <(qemu-img info --output=json c.qcow2) || fail "-c: not $ct"
    pass
  done
done
run_ok "keel convert -c, odd size" qemu-img create -q -f raw odd.raw 1000k
run_ok "fill odd" qemu-io -f raw -c "write -P 0x31 0 1000k" odd.raw
run_ok "keel convert -c odd" "$KEEL" convert -c -f raw -O qcow2 odd.raw odd.qcow2
qcheck odd.qcow2
qcompare -f qcow2 -F raw odd.qcow2 odd.raw

say "-n into existing images, --target-is-zero"
run_ok "existing raw" qemu-img create -q -f raw exist.raw 12M
run_ok "dirty it" qemu-io -f raw -c "write -P 0x77 0 12M" exist.raw
run_ok "keel convert -n" "$KEEL" convert -n -O raw src.qcow2 exist.raw
same_file "-n into a dirty raw image writes zeros too" src.raw exist.raw
run_ok "existing qcow2" qemu-img create -q -f qcow2 exist.qcow2 12M
run_ok "keel convert -n --target-is-zero" "$KEEL" convert -n --target-is-zero -O qcow2 src.qcow2 exist.qcow2
converted exist.qcow2 qcow2

say "concatenated sources"
run_ok "part 2" qemu-img create -q -f qcow2 part2.qcow2 3M
run_ok "fill part 2" qemu-io -c "write -P 0x41 1M 1M" part2.qcow2
run_ok "qemu-img concat" qemu-img convert -O raw src.qcow2 part2.qcow2 cat_q.raw
run_ok "keel concat" "$KEEL" convert -O raw src.qcow2 part2.qcow2 cat_k.raw
same_file "concatenation" cat_q.raw cat_k.raw
run_ok "keel concat -c" "$KEEL" convert -c -O qcow2 src.qcow2 part2.qcow2 cat_k.qcow2
qcheck cat_k.qcow2
qcompare -f qcow2 -F raw cat_k.qcow2 cat_q.raw

say "internal snapshots (-l)"
run_ok "create snap" qemu-img create -q -f qcow2 snap.qcow2 4M
run_ok "fill snap" qemu-io -c "write -P 0x51 0 1M" snap.qcow2
run_ok "snapshot" qemu-img snapshot -c one snap.qcow2
run_ok "change snap" qemu-io -c "write -P 0x52 512k 1M" snap.qcow2
for l in snapshot.name=one snapshot.id=1 one; do
  rm -f s_q.qcow2 s_k.qcow2
  run_ok "qemu-img -l $l" qemu-img convert -l "$l" -O qcow2 snap.qcow2 s_q.qcow2
  run_ok "keel -l $l" "$KEEL" convert -l "$l" -O qcow2 snap.qcow2 s_k.qcow2
  qcheck s_k.qcow2
  qcompare s_q.qcow2 s_k.qcow2
done

say "-p progress line"
run_ok "keel convert -p" "$KEEL" convert -p -O raw src.qcow2 p.raw
tr '\r' '\n' <"$T/last.out" | grep -v '^$' >"$T/progress"
grep -Evq '^    \(([0-9]{1,3})\.[0-9]{2}/100%\)$' "$T/progress" &&
  fail "unexpected progress output: $(head -3 "$T/progress")"
pass
head -1 "$T/progress" | grep -q '(0.00/100%)' || fail "progress does not start at 0.00"
tail -1 "$T/progress" | grep -q '(100.00/100%)' || fail "progress does not end at 100.00"
[ "$(tail -c 1 "$T/last.out" | od -An -c | tr -d ' ')" = '\n' ] || fail "progress does not end with a newline"
pass
run_ok "keel convert -p -q" "$KEEL" convert -p -q -O raw src.qcow2 p2.raw
[ ! -s "$T/last.out" ] || fail "-q still printed progress"
pass

say "errors: same messages (qemu-img -> keel) and exit codes"
both_fail() {
  local what=$1; shift
  local qrc=0 krc=0
  qemu-img convert "$@" >"$T/q.out" 2>"$T/q.err" || qrc=$?
  "$KEEL" convert "$@" >"$T/k.out" 2>"$T/k.err" || krc=$?
  [ $qrc -ne 0 ] || fail "$what: qemu-img convert $* unexpectedly succeeded"
  [ $qrc -eq $krc ] || fail "$what: qemu-img exited $qrc, keel $krc ($(cat "$T/k.err"))"
  sed -e 's/qemu-img/keel/g' -e '$a\' "$T/q.err" >"$T/q.err.n"
  sed -e '$a\' "$T/k.err" >"$T/k.err.n"
  same_file "$what: stderr of convert $*" "$T/q.err.n" "$T/k.err.n"
}
both_fail "-c to raw" -c -O raw src.qcow2 e.raw
both_fail "bad -S" -S 1000 -O raw src.qcow2 e.raw
both_fail "bad -S value" -S x -O raw src.qcow2 e.raw
both_fail "unknown -O" -O vmdk2 src.qcow2 e.img
both_fail "-n with -o" -n -o cluster_size=4k -O raw src.qcow2 exist.raw
both_fail "-n into a smaller image" -n -O raw src.qcow2 odd.raw
both_fail "missing target" -O raw src.qcow2
both_fail "-l with two sources" -l one -O raw snap.qcow2 src.qcow2 e.raw
both_fail "unknown snapshot" -l snapshot.name=nope -O raw snap.qcow2 e.raw
both_fail "bad snapshot option" -l snapshot.foo=1 -O raw snap.qcow2 e.raw
both_fail "--target-is-zero without -n" --target-is-zero -O raw src.qcow2 e.raw
both_fail "bad target option" -O qcow2 -o foo=bar src.qcow2 e.qcow2
both_fail "bad cluster size" -O qcow2 -o cluster_size=1000 src.qcow2 e.qcow2

finish
