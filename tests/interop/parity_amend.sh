#!/usr/bin/env bash
# Proves `keel amend` behaves like `qemu-img amend`: on twins of QEMU-made images, keel and
# qemu-img switch v3 -> v2 -> v3 (with data, zero clusters, snapshots, lazy refcounts, a backing
# file), turn lazy refcounts on and off, grow and shrink with size=, and refuse what qemu-img
# refuses (unknown and creation-only options, backing file changes, data file options, lazy
# refcounts on v2, downgrades of extended-L2 / data-file / non-16-bit-refcount images) with the
# same output and exit codes. After each change qemu-img check finds keel's image clean,
# qemu-img compare finds the twins identical and qemu-img info --output=json agrees; QEMU then
# writes to keel's amended image, and keel amends images QEMU amended before.
# Known differences (docs/cli.md) are checked as such: changing refcount_bits is refused by keel.
# Usage: bash parity_amend.sh /path/to/keel
set -euo pipefail
: "${KEEL_CLI_TEST_TIMEOUT:=400}"
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

say "known difference: refcount_bits changes are refused by keel"
OPTS=compat=1.1
twin_setup make_image
rc=0
(cd "$T/k" && "$KEEL" amend -o refcount_bits=8 a.qcow2) >"$T/k.out" 2>"$T/k.err" || rc=$?
[ $rc -eq 1 ] && grep -q "not supported yet" "$T/k.err" || fail "refcount_bits=8: keel exited $rc: $(cat "$T/k.err")"
pass
after "refcount_bits refusal changed nothing"
finish
