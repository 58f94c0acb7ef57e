#!/usr/bin/env bash
# Proves `keel commit` behaves like `qemu-img commit`: on twins of QEMU-made backing chains
# (qcow2 over qcow2 of several shapes, qcow2 over raw, three-layer chains, a base smaller than
# the overlay), keel and qemu-img commit with the same output and exit codes (default base,
# -b with the immediate or a deeper base, -d, -p, -q, errors). Afterwards qemu-img check finds
# every image keel wrote clean, the base keel committed into is identical (qemu-img compare) to
# the base qemu-img committed into and to the overlay's content before the commit, the overlay
# still shows that content, and qemu-img info agrees on the base.
# After a default commit both tools have emptied the overlay: qemu-img map of the overlay alone
# agrees (it stores nothing), and keel's overlay file is no larger than qemu-img's.
# Usage: bash parity_commit.sh /path/to/keel
set -euo pipefail
: "${KEEL_CLI_TEST_TIMEOUT:=400}"
export KEEL_CLI_TEST_TIMEOUT
HERE=$(dirname "$(realpath "$0")")
source "$HERE/cli_lib.bash"
source "$HERE/parity_lib.bash"

OPTS=""
# base.qcow2 <- top.qcow2, with data, zero clusters, a discard, partial clusters and a
# compressed cluster in the overlay; before.raw is the overlay's content before the commit.
make_chain() {
  qemu-img create -q -f qcow2 -o "$OPTS" base.qcow2 4M
  qemu-io -c 'write -P 0x11 0 2M' -c 'write -P 0x12 3M 512k' base.qcow2
  qemu-img create -q -f qcow2 -o "$OPTS" -b base.qcow2 -F qcow2 top.qcow2
  qemu-io -c 'write -P 0x21 1M 64k' -c 'write -P 0x22 100k 3k' -c 'write -P 0x23 3900k 4k' top.qcow2
  qemu-io -c 'write -c -P 0x24 2M 64k' top.qcow2
  if [[ $OPTS != *0.10* ]]; then qemu-io -c 'write -z 3M 64k' -c 'discard 0 64k' top.qcow2; fi
  qemu-img convert -O raw top.qcow2 before.raw
}

# committed DESC: both bases and overlays show the overlay's old content; keel's images are clean.
committed() {
  same_content "$1: base" base.qcow2
  same_content "$1: base has the overlay's content" before.raw base.qcow2
  same_content "$1: overlay shows the same content" before.raw top.qcow2
  clean "$1: base" base.qcow2
  clean "$1: overlay" top.qcow2
  same_info "$1: base" base.qcow2
  same_layer_map "$1: overlay" top.qcow2
  same_info "$1: overlay" top.qcow2
}

# emptied DESC IMAGE: keel's emptied overlay file is no larger than qemu-img's.
emptied() {
  local qs ks
  qs=$(stat -c %s "$T/q/$2") ks=$(stat -c %s "$T/k/$2")
  [ "$ks" -le "$qs" ] || fail "$1: keel's $2 is $ks bytes, qemu-img's $qs"
  pass
}

for OPTS in compat=1.1 compat=0.10 cluster_size=4k extended_l2=on refcount_bits=1 lazy_refcounts=on; do
  say "$OPTS: commit into the backing file"
  twin_setup make_chain
  twin_run "$OPTS: commit" commit top.qcow2
  committed "$OPTS: after commit"
  emptied "$OPTS: after commit" top.qcow2
  both_do qemu-io -c 'write -P 0x31 512k 64k' top.qcow2
  both_do qemu-img convert -O raw top.qcow2 before.raw
  twin_run "$OPTS: commit -d -q" commit -d -q top.qcow2
  committed "$OPTS: after commit -d"
  twin_run "$OPTS: commit -b base" commit -b base.qcow2 top.qcow2
  committed "$OPTS: after commit -b"
  twin_run_progress "$OPTS: commit -p" commit -p -f qcow2 -t none top.qcow2
  committed "$OPTS: after commit -p"
  twin_run "$OPTS: the base has no backing file" commit base.qcow2
done

say "three layers: commit into the middle, and -b into the bottom"
make_three() {
  qemu-img create -q -f qcow2 base.qcow2 4M
  qemu-io -c 'write -P 0x11 0 2M' base.qcow2
  qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2
  qemu-io -c 'write -P 0x12 1M 1M' -c 'write -z 0 64k' mid.qcow2
  qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2
  qemu-io -c 'write -P 0x13 1536k 64k' -c 'write -P 0x14 3M 512' top.qcow2
  qemu-img convert -O raw top.qcow2 before.raw
}
twin_setup make_three
twin_run "three: commit -b base (a deeper base)" commit -b base.qcow2 top.qcow2
same_content "three: base" base.qcow2
same_content "three: base has the overlay's content" before.raw base.qcow2
same_content "three: middle (reads through to the new base)" mid.qcow2
clean "three: base" base.qcow2
twin_setup make_three
twin_run "three: commit -b ./mid.qcow2 (relative spelling)" commit -b ./mid.qcow2 top.qcow2
same_content "three: middle" mid.qcow2
same_content "three: middle has the overlay's content" before.raw mid.qcow2
clean "three: middle" mid.qcow2
twin_run "three: commit the middle" commit mid.qcow2
same_content "three: base after committing the middle" base.qcow2
clean "three: base after committing the middle" base.qcow2
same_layer_map "three: the middle is empty" mid.qcow2
same_content "three: the top reads the same" top.qcow2
same_content "three: the top still shows its content" before.raw top.qcow2
twin_run "three: -b not in the chain" commit -b other.qcow2 top.qcow2
twin_run "three: -b names the image itself" commit -b top.qcow2 top.qcow2

say "qcow2 over raw, and a base smaller than the overlay"
make_raw_base() {
  qemu-img create -q -f raw base.raw 4M
  qemu-io -f raw -c 'write -P 0x11 0 2M' base.raw
  qemu-img create -q -f qcow2 -b base.raw -F raw top.qcow2
  qemu-io -c 'write -P 0x21 1M 64k' -c 'write -z 0 64k' -c 'write -P 0x22 3M 3k' top.qcow2
  qemu-img convert -O raw top.qcow2 before.raw
}
twin_setup make_raw_base
twin_run "raw base: commit" commit top.qcow2
same_file "raw base: the raw base files" "$T/q/base.raw" "$T/k/base.raw"
same_content "raw base: overlay content" before.raw top.qcow2
make_small_base() {
  qemu-img create -q -f qcow2 base.qcow2 1M
  qemu-io -c 'write -P 0x11 0 1M' base.qcow2
  qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2 4M
  qemu-io -c 'write -P 0x21 3M 64k' -c 'write -P 0x22 512k 4k' top.qcow2
  qemu-img convert -O raw top.qcow2 before.raw
}
twin_setup make_small_base
twin_run "small base: commit grows the base" commit top.qcow2
committed "small base: after commit"

say "an overlay with internal snapshots: emptying keeps the snapshots' data"
make_snap_chain() {
  OPTS=compat=1.1 make_chain
  qemu-img snapshot -c s1 top.qcow2
  qemu-io -c 'write -P 0x25 1M 128k' top.qcow2
  qemu-img convert -O raw top.qcow2 before.raw
}
twin_setup make_snap_chain
twin_run "snapshots: commit" commit top.qcow2
committed "snapshots: after commit"
same_snapshots "snapshots: after commit" top.qcow2
for d in q k; do (cd "$T/$d" && run_ok "convert -l s1 ($d)" qemu-img convert -l s1 -O raw top.qcow2 s1.raw); done
same_file "snapshots: the snapshot's content" "$T/q/s1.raw" "$T/k/s1.raw"
both_do qemu-io -c 'write -P 0x26 0 64k' top.qcow2
clean "snapshots: QEMU writes into keel's emptied overlay" top.qcow2
reads_pattern "snapshots: QEMU's write" top.qcow2 0x26 0 64k

say "usage errors"
twin_setup make_three
twin_run "no file" commit
twin_run "two files" commit top.qcow2 mid.qcow2
twin_rc "missing file" commit nonexistent.qcow2
twin_run "unknown format" commit -f foo top.qcow2
twin_run "bad cache mode" commit -t foo top.qcow2
finish
