#!/usr/bin/env bash
# Proves `keel snapshot` behaves like `qemu-img snapshot`: on twins of QEMU-made images of
# several shapes (v2, v3, 4k clusters, 1-bit refcounts, lazy refcounts, extended L2, zstd with
# compressed clusters), keel and qemu-img run the same create / list / apply / delete sequence
# with the same output and exit codes; after each step qemu-img check finds keel's image clean,
# qemu-img compare finds the twins identical, and qemu-img info --output=json and snapshot -l
# agree (dates aside; icount included). Then both directions are mixed: QEMU applies and deletes
# snapshots keel created, keel applies snapshots QEMU created, and qemu-img convert -l reads
# keel's snapshots. Empty, 300-byte and UTF-8 names behave as in qemu-img, and usage errors
# match.
# Usage: bash parity_snapshot.sh /path/to/keel
set -euo pipefail
: "${KEEL_CLI_TEST_TIMEOUT:=400}"
export KEEL_CLI_TEST_TIMEOUT
HERE=$(dirname "$(realpath "$0")")
source "$HERE/cli_lib.bash"
source "$HERE/parity_lib.bash"
TWIN_NORM=snaptable_norm  # snapshot dates differ

SNAP_SHAPES=(
  "v3|compat=1.1"
  "v2|compat=0.10"
  "c4k|cluster_size=4k"
  "lazy|lazy_refcounts=on"
  "el2|extended_l2=on,cluster_size=128k"
  "zstd|compression_type=zstd"
  "rc8|refcount_bits=8"
)

OPTS=""
make_image() {
  qemu-img create -q -f qcow2 -o "$OPTS" a.qcow2 4M
  qemu-io -c 'write -P 0x11 0 1M' -c 'write -P 0x12 1500k 3k' -c 'write -z 2M 64k' a.qcow2
  if [[ $OPTS == *zstd* ]]; then qemu-io -c 'write -c -P 0x13 3M 64k' a.qcow2; fi
}

# after STEP: keel's image is clean and the twins agree in content, info and snapshot list.
after() {
  clean "$1" a.qcow2
  same_content "$1" a.qcow2
  same_info "$1" a.qcow2
  same_snapshots "$1" a.qcow2
}

for shape in "${SNAP_SHAPES[@]}"; do
  IFS='|' read -r name OPTS <<<"$shape"
  say "shape $name ($OPTS): create, list, apply, delete"
  twin_setup make_image
  twin_run "$name: list without snapshots" snapshot -l a.qcow2
  twin_run "$name: create s1" snapshot -c s1 a.qcow2
  after "$name: after -c s1"
  both_do qemu-io -c 'write -P 0x21 0 64k' -c 'write -P 0x22 3500k 1k' a.qcow2
  twin_run "$name: create s2" snapshot -q -c s2 a.qcow2
  twin_run "$name: create a duplicate name" snapshot -c s1 a.qcow2
  twin_run "$name: create a long name" snapshot -c "a name longer than the tag column" a.qcow2
  after "$name: after three more creates"
  both_do qemu-io -c 'write -P 0x31 64k 64k' -c 'discard 1M 64k' a.qcow2
  twin_run "$name: list" snapshot -l a.qcow2
  [ -s "$T/k.out" ] || fail "$name: keel snapshot -l printed nothing"
  twin_run "$name: list with -U" snapshot -U -l a.qcow2
  twin_run "$name: apply s1 by name" snapshot -a s1 a.qcow2
  after "$name: after -a s1"
  reads_pattern "$name: s1's data is back" a.qcow2 0x11 0 64k
  twin_run "$name: apply by ID 2" snapshot -a 2 a.qcow2
  after "$name: after -a 2"
  reads_pattern "$name: snapshot 2's data is back" a.qcow2 0x21 0 64k
  twin_run "$name: apply a missing snapshot" snapshot -a nope a.qcow2
  twin_run "$name: delete by name (the first s1)" snapshot -d s1 a.qcow2
  after "$name: after -d s1"
  twin_run "$name: delete by ID is 'not found'" snapshot -d 2 a.qcow2
  twin_run "$name: delete a missing snapshot" snapshot -d nope a.qcow2
  twin_run "$name: delete the duplicate" snapshot -d s1 a.qcow2
  twin_run "$name: delete the long name" snapshot -d "a name longer than the tag column" a.qcow2
  after "$name: after deleting three"
  twin_run "$name: no action opens only" snapshot a.qcow2
  after "$name: after no action"

  say "shape $name: QEMU works on keel's snapshots and keel on QEMU's"
  twin_setup make_image
  (cd "$T/k" && run_ok "keel snapshot -c k1" "$KEEL" snapshot -c k1 a.qcow2)
  (cd "$T/q" && run_ok "qemu-img snapshot -c k1" qemu-img snapshot -c k1 a.qcow2)
  both_do qemu-io -c 'write -P 0x41 0 1M' a.qcow2
  rm -f "$T/q/s.raw" "$T/k/s.raw"
  (cd "$T/q" && run_ok "qemu-img convert -l k1 (q)" qemu-img convert -l k1 -O raw a.qcow2 s.raw)
  (cd "$T/k" && run_ok "qemu-img convert -l k1 of keel's snapshot" qemu-img convert -l k1 -O raw a.qcow2 s.raw)
  same_file "$name: qemu-img convert -l of keel's snapshot" "$T/q/s.raw" "$T/k/s.raw"
  (cd "$T/k" && run_ok "qemu-img snapshot -a on keel's snapshot" qemu-img snapshot -a k1 a.qcow2)
  (cd "$T/q" && run_ok "qemu-img snapshot -a (q)" qemu-img snapshot -a k1 a.qcow2)
  after "$name: QEMU applied keel's snapshot"
  (cd "$T/k" && run_ok "qemu-img snapshot -c q1 on keel's image" qemu-img snapshot -c q1 a.qcow2)
  (cd "$T/q" && run_ok "qemu-img snapshot -c q1 (q)" qemu-img snapshot -c q1 a.qcow2)
  both_do qemu-io -c 'write -P 0x42 0 64k' a.qcow2
  (cd "$T/k" && run_ok "keel snapshot -a on QEMU's snapshot" "$KEEL" snapshot -a q1 a.qcow2)
  (cd "$T/q" && run_ok "qemu-img snapshot -a q1 (q)" qemu-img snapshot -a q1 a.qcow2)
  after "$name: keel applied QEMU's snapshot"
  (cd "$T/k" && run_ok "qemu-img snapshot -d on keel's snapshot" qemu-img snapshot -d k1 a.qcow2)
  (cd "$T/q" && run_ok "qemu-img snapshot -d k1 (q)" qemu-img snapshot -d k1 a.qcow2)
  (cd "$T/k" && run_ok "keel snapshot -d on QEMU's snapshot" "$KEEL" snapshot -d q1 a.qcow2)
  (cd "$T/q" && run_ok "qemu-img snapshot -d q1 (q)" qemu-img snapshot -d q1 a.qcow2)
  after "$name: both deleted the other's snapshot"
done

say "names qemu-img accepts: empty, long (cut to 255 bytes), UTF-8"
OPTS=compat=1.1
twin_setup make_image
long=$(printf 'n%.0s' $(seq 300))
twin_run "create with an empty name" snapshot -c "" a.qcow2
twin_run "create with a 300-byte name" snapshot -c "$long" a.qcow2
twin_run "create with a UTF-8 name" snapshot -c "ü名 x" a.qcow2
after "after the odd names"
twin_run "list" snapshot -l a.qcow2
both_do qemu-io -c 'write -P 0x51 0 64k' a.qcow2
twin_run "apply the empty name" snapshot -a "" a.qcow2
after "after applying the empty name"
reads_pattern "the empty-named snapshot's data" a.qcow2 0x11 0 64k
twin_run "delete by the 300-byte name: not found" snapshot -d "$long" a.qcow2
twin_run "apply by the 300-byte name: not found" snapshot -a "$long" a.qcow2
twin_run "delete by the stored 255 bytes" snapshot -d "${long:0:255}" a.qcow2
twin_run "delete the empty name" snapshot -d "" a.qcow2
twin_run "delete the UTF-8 name" snapshot -d "ü名 x" a.qcow2
after "after deleting the odd names"

say "icount: keel records 0 like qemu-img, on v2 too (compared above through info and -l)"
for OPTS in compat=0.10 compat=1.1; do
  twin_setup make_image
  twin_run "$OPTS: create" snapshot -c s a.qcow2
  (cd "$T/k" && qemu-img info --output=json a.qcow2) | grep -q '"icount": 0' || fail "$OPTS: keel's snapshot has no icount 0"
  pass
  same_info "$OPTS: after create" a.qcow2
done

say "refcount overflow: 1-bit refcounts cannot take a snapshot"
OPTS=refcount_bits=1
twin_setup make_image
twin_run "rc1: create fails like qemu-img's" snapshot -c s a.qcow2
same_content "rc1: content unchanged" a.qcow2
same_check_rc "rc1: qemu-img check after the failed create" a.qcow2

say "usage errors and raw images"
OPTS=compat=1.1
twin_setup make_image
twin_run "mixed actions" snapshot -l -c x a.qcow2
twin_run "mixed actions (other order)" snapshot -a x -d y a.qcow2
twin_run "no file" snapshot -l
twin_run "two files" snapshot -l a.qcow2 a.qcow2
twin_run "-U with -c" snapshot -U -c x a.qcow2
twin_rc "missing file" snapshot -l nonexistent.qcow2
make_raw() { qemu-img create -q -f raw r.raw 1M; }
twin_setup make_raw
twin_run "raw: list" snapshot -l r.raw
twin_rc "raw: create" snapshot -c x r.raw
twin_rc "raw: apply" snapshot -a x r.raw
twin_rc "raw: delete" snapshot -d x r.raw
finish
