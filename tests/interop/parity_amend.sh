#!/usr/bin/env bash
# Proves `keel amend` behaves like `qemu-img amend`: on twins of QEMU-made images, keel and
# qemu-img switch v3 -> v2 -> v3 (with data, zero clusters, snapshots, lazy refcounts, a backing
# file), turn lazy refcounts on and off, grow and shrink with size=, and refuse what qemu-img
# refuses (unknown and creation-only options, backing file changes, data file options, lazy
# refcounts on v2, downgrades of extended-L2 / data-file / non-16-bit-refcount images) with the
# same output and exit codes. After each change qemu-img check finds keel's image clean,
# qemu-img compare finds the twins identical and qemu-img info --output=json agrees; QEMU then
# writes to keel's amended image, and keel amends images QEMU amended before.
# refcount_bits is changed to every width (qemu-img check and info agree, then both tools write
# into the result), refused where a refcount does not fit or on v2; downgrades expand zero
# clusters (with a backing file, in tables shared with snapshots), switch zstd images without
# compressed clusters to zlib, and refuse snapshots of another size.
# Usage: bash parity_amend.sh /path/to/keel
set -euo pipefail
: "${KEEL_CLI_TEST_TIMEOUT:=850}"
export KEEL_CLI_TEST_TIMEOUT
HERE=$(dirname "$(realpath "$0")")
source "$HERE/cli_lib.bash"
source "$HERE/parity_lib.bash"

OPTS=""
make_image() {
  qemu-img create -q -f qcow2 -o "$OPTS" a.qcow2 4M
  qemu-io -c 'write -P 0x11 0 1M' -c 'write -P 0x12 1500k 3k' -c 'write -P 0x13 3M 64k' a.qcow2
  if [[ $OPTS != *0.10* ]]; then qemu-io -c 'write -z 2M 64k' -c 'write -z -u 3M 64k' a.qcow2; fi
}

after() {
  clean "$1" a.qcow2
  same_content "$1" a.qcow2
  same_info "$1" a.qcow2
}

for OPTS in compat=1.1 lazy_refcounts=on cluster_size=4k refcount_bits=16,cluster_size=512; do
  say "$OPTS: compat down and up, lazy refcounts, size"
  twin_setup make_image
  twin_run "$OPTS: compat=0.10" amend -o compat=0.10 a.qcow2
  after "$OPTS: after compat=0.10"
  twin_run "$OPTS: lazy refcounts need v3" amend -o lazy_refcounts=on a.qcow2
  twin_run "$OPTS: compat=v3 and lazy refcounts" amend -o compat=v3,lazy_refcounts=on a.qcow2
  after "$OPTS: after compat=v3,lazy_refcounts=on"
  both_do qemu-io -c 'write -P 0x21 64k 64k' -c 'write -z 1M 64k' -c 'write -z 960k 64k' a.qcow2
  twin_run "$OPTS: lazy_refcounts=off" amend -o lazy_refcounts=off a.qcow2
  after "$OPTS: after lazy_refcounts=off"
  twin_run "$OPTS: grow with size=" amend -o size=8M a.qcow2
  after "$OPTS: after size=8M"
  twin_run "$OPTS: shrink with size=" amend -o size=6M a.qcow2
  after "$OPTS: after size=6M"
  twin_run "$OPTS: size=0 changes nothing" amend -o size=0 a.qcow2
  twin_run "$OPTS: same values" amend -o compat=1.1,lazy_refcounts=off,refcount_bits=16 a.qcow2
  after "$OPTS: after same values"
  twin_run "$OPTS: v2 again, in two -o" amend -o compat=v2 -o size=4M a.qcow2
  after "$OPTS: after compat=v2,size=4M"
  reads_pattern "$OPTS: QEMU reads the data back" a.qcow2 0x21 64k 64k
  twin_run_progress "$OPTS: compat=1.1 -p" amend -p -o compat=1.1 a.qcow2
  after "$OPTS: after compat=1.1 with -p"
done

say "snapshots survive a downgrade and an upgrade"
make_snap() { OPTS=compat=1.1 make_image; qemu-img snapshot -c s1 a.qcow2; qemu-io -c 'write -P 0x31 0 64k' a.qcow2; }
twin_setup make_snap
twin_run "snap: compat=0.10" amend -o compat=0.10 a.qcow2
after "snap: after compat=0.10"
same_snapshots "snap: after compat=0.10" a.qcow2
twin_run "snap: v2 with snapshots cannot change size" amend -o size=8M a.qcow2
twin_run "snap: compat=1.1" amend -o compat=1.1 a.qcow2
after "snap: after compat=1.1"
(cd "$T/k" && run_ok "qemu-img snapshot -a on keel's amended image" qemu-img snapshot -a s1 a.qcow2)
reads_pattern "snap: snapshot data after the round trip" a.qcow2 0x11 0 64k

say "overlay: the backing file stays, and cannot be changed here"
make_overlay() {
  qemu-img create -q -f qcow2 base.qcow2 4M
  qemu-io -c 'write -P 0x41 0 4M' base.qcow2
  qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 a.qcow2
  qemu-io -c 'write -P 0x42 1M 64k' a.qcow2
}
twin_setup make_overlay
twin_run "overlay: the same backing file and format" amend -o backing_file=base.qcow2,backing_fmt=qcow2 a.qcow2
twin_run "overlay: only the backing file" amend -o backing_file=base.qcow2 a.qcow2
twin_run "overlay: another backing file" amend -o backing_file=other.qcow2,backing_fmt=qcow2 a.qcow2
twin_run "overlay: another backing format" amend -o backing_fmt=raw a.qcow2
twin_run "overlay: compat=0.10" amend -o compat=0.10 a.qcow2
after "overlay: after compat=0.10"
twin_run "overlay: lazy_refcounts=on on v3" amend -o compat=1.1,lazy_refcounts=on a.qcow2
after "overlay: after compat=1.1,lazy_refcounts=on"

say "refusals"
OPTS=compat=1.1
twin_setup make_image
for o in foo=bar cluster_size=4k preallocation=full compression_type=zstd extended_l2=on \
         compat=2 lazy_refcounts=maybe refcount_bits=3 refcount_bits=x size=1000 size=abc \
         data_file=x.data data_file_raw=on; do
  twin_run "refuses -o $o" amend -o "$o" a.qcow2
done
twin_run "no -o" amend a.qcow2
twin_run "no file" amend -o compat=1.1
twin_run "two files" amend -o compat=1.1 a.qcow2 a.qcow2
twin_run "-o help" amend -o help -f raw
twin_rc "-o help with a file" amend -o help a.qcow2
twin_rc "missing file" amend -o compat=1.1 nonexistent.qcow2
after "refusals changed nothing"
make_shape() { qemu-img create -q -f qcow2 -o "$OPTS" a.qcow2 4M; }
for OPTS in extended_l2=on data_file=a.data refcount_bits=8; do
  twin_setup make_shape
  twin_run "$OPTS: downgrade refused" amend -o compat=0.10 a.qcow2
done
OPTS=compression_type=zstd
make_zstd() { make_shape; qemu-io -c 'write -c -P 0x51 0 64k' a.qcow2; }
twin_setup make_zstd
twin_run "zstd with compressed clusters: downgrade refused" amend -o compat=0.10 a.qcow2
make_raw() { qemu-img create -q -f raw r.raw 1M; }
twin_setup make_raw
twin_run "raw: no amendment" amend -f raw -o compat=1.1 r.raw

say "refcount_bits: the refcount structures rebuilt at every width"
make_rc() {
  qemu-img create -q -f qcow2 -o "$OPTS" a.qcow2 4M
  qemu-io -c 'write -P 0x11 0 1M' -c 'write -P 0x12 3M 64k' -c 'write -c -P 0x13 2M 64k' a.qcow2
  if [[ $OPTS != *0.10* ]]; then qemu-io -c 'write -z 1M 64k' a.qcow2; fi
}
# Keel's image takes writes, discards and more writes after each change; QEMU writes the same
# into its twin, and QEMU then writes into keel's image too.
keel_and_qemu_write() {
  (cd "$T/k" && run_ok "$1: keel io writes" "$KEEL" io -c "write -P $2 512k 192k" -c 'discard 3M 64k' \
    -c "write -P $2 3200k 64k" a.qcow2)
  (cd "$T/q" && run_ok "$1: qemu-io writes" qemu-io -c "write -P $2 512k 192k" -c 'discard 3M 64k' \
    -c "write -P $2 3200k 64k" a.qcow2)
  both_do qemu-io -c "write -P $2 1536k 128k" a.qcow2
  after "$1: after writes"
}
# KEEL_AMEND_RC_CLUSTER (the sanitizer runs set 4k, docs/ci.md): the cluster size of the two
# default-cluster images below. At 64k QEMU's refcount-order change walks every entry the refcount
# table can address: 20-50 s of qemu-img per width, ~3/4 of this test's CPU; make test keeps 64k.
rc_cs=${KEEL_AMEND_RC_CLUSTER:-64k}
for OPTS in compat=1.1,cluster_size=$rc_cs cluster_size=512 cluster_size=4k,refcount_bits=64 \
    lazy_refcounts=on,refcount_bits=1,cluster_size=$rc_cs; do
  twin_setup make_rc
  for bits in 1 2 4 8 32 64 16; do
    twin_run "$OPTS: refcount_bits=$bits" amend -o refcount_bits=$bits a.qcow2
    after "$OPTS: after refcount_bits=$bits"
  done
  keel_and_qemu_write "$OPTS" 0x61
  twin_run "$OPTS: refcount_bits=2 again" amend -o refcount_bits=2 a.qcow2
  after "$OPTS: after refcount_bits=2 again"
  keel_and_qemu_write "$OPTS: 2 bits" 0x62
  twin_run_progress "$OPTS: refcount_bits=16 -p" amend -p -o refcount_bits=16 a.qcow2
  after "$OPTS: after refcount_bits=16 -p"
done

# qemu-img needs minutes per width change of a 2M-cluster image (blocks of up to 16M entries):
# keel alone, checked by qemu-img check and qemu-io.
say "refcount_bits: 2M clusters (keel only)"
OPTS=cluster_size=2M,refcount_bits=64
twin_setup make_rc
for bits in 16 1 8; do
  (cd "$T/k" && run_ok "2M: keel amend -o refcount_bits=$bits" "$KEEL" amend -o refcount_bits=$bits a.qcow2)
  clean "2M: after refcount_bits=$bits" a.qcow2
  same_content "2M: after refcount_bits=$bits" a.qcow2
done
(cd "$T/k" && qemu-img info a.qcow2) | grep -q "refcount bits: 8" || fail "2M: qemu-img info shows no refcount bits: 8"
pass

say "refcount_bits: a large refcount table (512-byte clusters, every cluster used)"
make_full() { qemu-img create -q -f qcow2 -o cluster_size=512 a.qcow2 4M; qemu-io -c 'write -P 0x71 0 4M' a.qcow2; }
twin_setup make_full
for bits in 64 1 8; do
  twin_run "full: refcount_bits=$bits" amend -o refcount_bits=$bits a.qcow2
  after "full: after refcount_bits=$bits"
done
keel_and_qemu_write "full" 0x72

say "refcount_bits: refcounts that do not fit, v2 images, and with compat"
make_snap_rc() { OPTS=compat=1.1 make_rc; qemu-img snapshot -c s1 a.qcow2; qemu-io -c 'write -P 0x81 0 64k' a.qcow2; }
twin_setup make_snap_rc
twin_run "snapshot: refcount 2 does not fit 1 bit" amend -o refcount_bits=1 a.qcow2
after "snapshot: after the refused refcount_bits=1"
twin_run "snapshot: 2 bits" amend -o refcount_bits=2 a.qcow2
after "snapshot: after refcount_bits=2"
same_snapshots "snapshot: after refcount_bits=2" a.qcow2
twin_run "snapshot: another snapshot needs 3 references" snapshot -c s2 a.qcow2
twin_run "snapshot: 64 bits" amend -o refcount_bits=64 a.qcow2
after "snapshot: after refcount_bits=64"
(cd "$T/k" && run_ok "qemu-img snapshot -a on keel's rebuilt image" qemu-img snapshot -a s1 a.qcow2)
(cd "$T/q" && run_ok "qemu-img snapshot -a s1 (q)" qemu-img snapshot -a s1 a.qcow2)
after "snapshot: QEMU applied s1 on keel's image"
make_c512() { qemu-img create -q -f qcow2 -o cluster_size=512 a.qcow2 1M; qemu-io -c 'write -c -P 0x91 0 64k' a.qcow2; }
twin_setup make_c512
twin_run "packed compressed clusters do not fit 1 bit" amend -o refcount_bits=1 a.qcow2
after "packed compressed: after the refused refcount_bits=1"
OPTS=compat=0.10
twin_setup make_rc
twin_run "v2: refcount_bits=8 needs compat=1.1" amend -o refcount_bits=8 a.qcow2
twin_run "v2: refcount_bits=16 is no change" amend -o refcount_bits=16 a.qcow2
twin_run "v2: compat=1.1,refcount_bits=8" amend -o compat=1.1,refcount_bits=8 a.qcow2
after "v2: after compat=1.1,refcount_bits=8"
twin_run "v3/8: compat=0.10 alone" amend -o compat=0.10 a.qcow2
twin_run "v3/8: compat=0.10,refcount_bits=4" amend -o compat=0.10,refcount_bits=4 a.qcow2
twin_run "v3/8: compat=0.10,refcount_bits=16" amend -o compat=0.10,refcount_bits=16 a.qcow2
after "v3/8: after compat=0.10,refcount_bits=16"
twin_run "v2: compat=1.1,refcount_bits=2,lazy_refcounts=on" amend -o compat=1.1,refcount_bits=2,lazy_refcounts=on a.qcow2
after "v2: after compat=1.1,refcount_bits=2,lazy_refcounts=on"

say "downgrade: zero clusters are expanded (with a backing file, in snapshots)"
make_zero_overlay() {
  qemu-img create -q -f qcow2 base.qcow2 4M
  qemu-io -c 'write -P 0x41 0 4M' base.qcow2
  qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 a.qcow2
  qemu-io -c 'write -z 0 64k' -c 'write -z -u 1M 64k' -c 'write -P 0x42 2M 128k' -c 'write -z 2M 64k' \
    -c 'write -P 0x43 3M 64k' a.qcow2
}
twin_setup make_zero_overlay
twin_run "overlay with zero clusters: compat=0.10" amend -o compat=0.10 a.qcow2
after "overlay with zero clusters: after compat=0.10"
same_map "overlay with zero clusters: after compat=0.10" a.qcow2
reads_pattern "overlay: expanded zero clusters read zeros" a.qcow2 0 2M 64k
reads_pattern "overlay: backing data still shows" a.qcow2 0x41 64k 64k
make_zero_snap() {
  qemu-img create -q -f qcow2 -o "$OPTS" a.qcow2 4M
  qemu-io -c 'write -P 0x11 0 1M' -c 'write -z 0 64k' -c 'write -z -u 128k 64k' -c 'write -z 2M 64k' a.qcow2
  qemu-img snapshot -c s1 a.qcow2
  # With 4k clusters this copies the second L2 table only; the first stays shared.
  if [[ $OPTS == *4k* ]]; then qemu-io -c 'write -P 0x12 3M 64k' -c 'write -z 3200k 64k' a.qcow2; fi
}
for OPTS in compat=1.1 cluster_size=4k; do
  twin_setup make_zero_snap
  twin_run "$OPTS: zero clusters shared with a snapshot: compat=0.10" amend -o compat=0.10 a.qcow2
  after "$OPTS: shared zero clusters: after compat=0.10"
  same_map "$OPTS: shared zero clusters: after compat=0.10" a.qcow2
  same_snapshots "$OPTS: shared zero clusters: after compat=0.10" a.qcow2
  for d in q k; do (cd "$T/$d" && run_ok "convert -l s1 ($d)" qemu-img convert -l s1 -O raw a.qcow2 s1.raw); done
  same_file "$OPTS: the snapshot's content" "$T/q/s1.raw" "$T/k/s1.raw"
  twin_run "$OPTS: apply s1 on v2" snapshot -a s1 a.qcow2
  after "$OPTS: after applying s1 on v2"
done
# QEMU writes zeros into a cluster it still shares with a snapshot (a zero cluster that kept
# its host cluster after the snapshot), which changes the snapshot and leaves OFLAG_COPIED
# errors; keel drops its reference instead. Same active content; keel's snapshot intact.
make_zero_shared() {
  qemu-img create -q -f qcow2 a.qcow2 4M
  qemu-io -c 'write -P 0x11 0 1M' a.qcow2
  qemu-img snapshot -c s1 a.qcow2
  qemu-io -c 'write -z 256k 64k' -c 'write -z -u 384k 64k' a.qcow2
  qemu-img convert -l s1 -O raw a.qcow2 s1.before.raw
}
twin_setup make_zero_shared
twin_run "zero cluster sharing a snapshot's data: compat=0.10" amend -o compat=0.10 a.qcow2
clean "zero cluster sharing a snapshot's data: keel's image" a.qcow2
same_content "zero cluster sharing a snapshot's data: active content" a.qcow2
(cd "$T/k" && run_ok "convert -l s1 of keel's image" qemu-img convert -l s1 -O raw a.qcow2 s1.raw)
same_file "keel kept the snapshot's data" "$T/k/s1.before.raw" "$T/k/s1.raw"

say "downgrade: zstd without compressed clusters, snapshots of another size"
make_zstd_plain() { qemu-img create -q -f qcow2 -o compression_type=zstd a.qcow2 4M; qemu-io -c 'write -P 0x51 0 64k' a.qcow2; }
twin_setup make_zstd_plain
twin_run "zstd without compressed clusters: compat=0.10" amend -o compat=0.10 a.qcow2
after "zstd without compressed clusters: after compat=0.10"
make_zstd_snap() { make_zstd_plain; qemu-io -c 'write -c -P 0x52 1M 64k' a.qcow2; qemu-img snapshot -c s a.qcow2; qemu-io -c 'write -P 0x53 1M 64k' a.qcow2; }
twin_setup make_zstd_snap
rc=0
(cd "$T/k" && "$KEEL" amend -o compat=0.10 a.qcow2) >"$T/k.out" 2>"$T/k.err" || rc=$?
[ $rc -eq 1 ] && grep -q "zstd compression type and existing compressed clusters" "$T/k.err" ||
  fail "zstd clusters in a snapshot only: keel exited $rc: $(cat "$T/k.err")"
pass
clean "zstd clusters in a snapshot only: keel's image unchanged" a.qcow2
make_snap_size() { qemu-img create -q -f qcow2 a.qcow2 4M; qemu-img snapshot -c s a.qcow2; qemu-img resize -q a.qcow2 8M; }
twin_setup make_snap_size
twin_run "a snapshot of another size prevents the downgrade" amend -o compat=0.10 a.qcow2
after "after the refused downgrade"
twin_run "shrinking back to the snapshot's size allows it" amend -o compat=0.10,size=4M a.qcow2
after "after compat=0.10,size=4M"
same_snapshots "after compat=0.10,size=4M" a.qcow2
finish
