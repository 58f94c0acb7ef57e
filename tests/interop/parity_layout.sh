#!/usr/bin/env bash
# Proves keel lays out and zeroes images as QEMU 7.2 does, with qemu-img/qemu-io as the oracle on
# twin inputs: `create` makes byte-identical files (196,616 bytes for a one-entry L1, refcount
# blocks after the L1 table with small clusters, data-file-raw preallocated), `map --output=json`
# prints qemu-img's lines for preallocated clusters whose host range is a hole ("zero": true),
# `io write -z` of part of a cluster that otherwise reads as zeros leaves a zero cluster (zero
# subclusters with extended L2, where QEMU's subcluster rules decide what is written as data), and
# `commit` unmaps the base's clusters under zero ranges; every image stays clean for qemu-img check.
# Usage: bash parity_layout.sh /path/to/keel
set -euo pipefail
HERE=$(dirname "$(realpath "$0")")
source "$HERE/cli_lib.bash"
source "$HERE/parity_lib.bash"

# map_shape IMAGE: qemu-img map --output=json with each host offset replaced by "<off>": whether
# an extent has a host offset (a zero cluster that keeps its allocation) shows, where it lies not.
map_shape() { qemu-img map -U --output=json "$1" | sed -E 's/"offset": [0-9]+/"offset": "<off>"/'; }
same_shape() {
  (cd "$T/q" && map_shape "$2") >"$T/q.shape" 2>&1 || fail "$1: qemu-img map q/$2 failed"
  (cd "$T/k" && map_shape "$2") >"$T/k.shape" 2>&1 || fail "$1: qemu-img map k/$2 failed"
  same_file "$1: qemu-img map of $2 (host offsets as <off>)" "$T/q.shape" "$T/k.shape"
}

say "create: the same file as qemu-img create, byte for byte"
for args in "1G" "100M" "0" "64T" "513M" "-o compat=0.10 1G" "-o extended_l2=on 1G" \
  "-o cluster_size=512 1G" "-o cluster_size=512,refcount_bits=64 300M" "-o cluster_size=2M 1G" \
  "-o cluster_size=4096 1T" "-o refcount_bits=1,cluster_size=512 4G" "-o lazy_refcounts=on 20G" \
  "-o data_file=d.raw 1G" "-o preallocation=metadata 100M" "-o cluster_size=4k,preallocation=metadata 6M"; do
  rm -f "$T"/{q,k}/{c.qcow2,d.raw}
  # shellcheck disable=SC2086
  (cd "$T/q" && qemu-img create -q -f qcow2 c.qcow2 $args) || fail "qemu-img create $args"
  # shellcheck disable=SC2086
  (cd "$T/k" && "$KEEL" create -q -f qcow2 c.qcow2 $args) || fail "keel create $args"
  same_file "create $args" "$T/q/c.qcow2" "$T/k/c.qcow2"
  clean "create $args" c.qcow2
done
say "create with preallocation that crosses refcount blocks, falloc, full: same size and map (docs/cli.md)"
for args in "-o cluster_size=1k,preallocation=metadata 30M" "-o preallocation=falloc 10M" "-o preallocation=full 5M"; do
  rm -f "$T"/{q,k}/c.qcow2
  # shellcheck disable=SC2086
  (cd "$T/q" && qemu-img create -q -f qcow2 c.qcow2 $args) || fail "qemu-img create $args"
  # shellcheck disable=SC2086
  (cd "$T/k" && "$KEEL" create -q -f qcow2 c.qcow2 $args) || fail "keel create $args"
  same_text "create $args: file size" "$(stat -c %s "$T/q/c.qcow2")" "$(stat -c %s "$T/k/c.qcow2")"
  same_map "create $args" c.qcow2
  same_info "create $args" c.qcow2
  clean "create $args" c.qcow2
done
say "create -o data_file_raw=on: metadata preallocated, as qemu-img does"
rm -f "$T"/{q,k}/{c.qcow2,d.raw}
(cd "$T/q" && qemu-img create -q -f qcow2 -o data_file=d.raw,data_file_raw=on c.qcow2 1G)
(cd "$T/k" && "$KEEL" create -q -f qcow2 -o data_file=d.raw,data_file_raw=on c.qcow2 1G)
same_file "create data_file_raw" "$T/q/c.qcow2" "$T/k/c.qcow2"
twin_run "map of a data_file_raw image" map --output=json c.qcow2
clean "create data_file_raw" c.qcow2

say "create with LUKS: the same layout (header fields, sizes) as qemu-img create"
for args in "1G" "-o cluster_size=512 64M"; do
  rm -f "$T"/{q,k}/c.qcow2
  # shellcheck disable=SC2086
  (cd "$T/q" && qemu_img_create_luks -q -f qcow2 --object secret,id=s,data=pw \
    -o encrypt.format=luks,encrypt.key-secret=s,encrypt.iter-time=10 c.qcow2 $args) || fail "qemu-img create luks $args"
  # shellcheck disable=SC2086
  (cd "$T/k" && "$KEEL" create -q -f qcow2 --object secret,id=s,data=pw \
    -o encrypt.format=luks,encrypt.key-secret=s,encrypt.iter-time=10 c.qcow2 $args) || fail "keel create luks $args"
  same_text "luks $args: file size" "$(stat -c %s "$T/q/c.qcow2")" "$(stat -c %s "$T/k/c.qcow2")"
  # Everything but the salts and digests: the header cluster up to the LUKS header, the tables.
  same_text "luks $args: header" "$(head -c 512 "$T/q/c.qcow2" | od -An -tx1)" "$(head -c 512 "$T/k/c.qcow2" | od -An -tx1)"
  # info without what LUKS randomizes or calibrates (the UUID, PBKDF2 iteration counts)
  for d in q k; do
    (cd "$T/$d" && info_norm c.qcow2 | grep -v -E '"(uuid|iters|master-key-iters)":') >"$T/$d.info"
  done
  same_file "luks $args: qemu-img info" "$T/q.info" "$T/k.info"
  out=$(cd "$T/k" && qemu-img check --object secret,id=s,data=pw --image-opts \
    driver=qcow2,file.filename=c.qcow2,encrypt.key-secret=s 2>&1) || fail "luks $args: qemu-img check: $out"
  pass
done

say "map: preallocated clusters over holes of the file read \"zero\": true, as qemu-img map says"
prealloc_chain() {
  qemu-img create -q -f qcow2 -o preallocation=metadata base.qcow2 10M
  qemu-io -c "write -P 1 1M 64k" -c "write -P 2 3M 100k" base.qcow2
  qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
  qemu-io -c "write -P 3 3M 4k" top.qcow2
  qemu-img create -q -f qcow2 -o preallocation=falloc fa.qcow2 2M
  qemu-io -c "write -P 4 64k 64k" fa.qcow2
}
twin_setup prealloc_chain
for img in base.qcow2 top.qcow2 fa.qcow2; do
  twin_run "map --output=json $img" map --output=json "$img"
  twin_run "map $img" map "$img"
done
twin_run "map -s 1M -l 5M base.qcow2" map --output=json -s 1M -l 5M base.qcow2

# One write -z case on fresh twins made by SETUP: keel io's output, the image's shape and content
# as qemu-io's, and both images clean.
zero_twin() {
  local setup=$1 img=$2 cmd=$3
  twin_setup "$setup"
  IO_STDERR=1 io_twin "$img: $cmd" -c "$cmd" "$img"
  same_shape "$img after $cmd" "$img"
  same_content "$img after $cmd" "$img"
  clean "$img after $cmd" "$img"
}
say "write -z of part of a cluster: a zero cluster where the rest reads as zeros (qemu-io)"
zero_chain() {
  qemu-img create -q -f qcow2 b.qcow2 1M
  qemu-io -c "write -P 1 0 64k" -c "write -z 256k 64k" b.qcow2
  qemu-img create -q -f qcow2 -b b.qcow2 -F qcow2 o.qcow2
  qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 1M
  qemu-io -c "write -P 1 0 64k" v2.qcow2
  qemu-img create -q -f qcow2 plain.qcow2 1000k
  qemu-io -c "write -P 5 64k 64k" -c "write -z 128k 64k" plain.qcow2
}
for img in o.qcow2 v2.qcow2 plain.qcow2; do
  for cmd in "write -z 64k 4k" "write -z 128k 32k" "write -z 4k 4k" "write -z 260k 8k" "write -z -u 260k 8k" \
    "write -z 70k 1k" "write -z 996k 4k" "write -z 960k 10k"; do
    zero_twin zero_chain "$img" "$cmd"
  done
done

say "write -z of part of a cluster with extended L2: zero subclusters as qemu-io makes them"
zero_ext() {
  qemu-img create -q -f qcow2 b.qcow2 1M
  qemu-io -c "write -P 1 0 64k" b.qcow2
  qemu-img create -q -f qcow2 -o extended_l2=on x.qcow2 1M
  qemu-io -c "write -P 5 64k 64k" -c "write -z 128k 64k" -c "write -c -P 7 512k 64k" x.qcow2
  qemu-img create -q -f qcow2 -o extended_l2=on -b b.qcow2 -F qcow2 xb.qcow2 1M
}
for img in x.qcow2 xb.qcow2; do
  for cmd in "write -z 64k 4k" "write -z 65k 1k" "write -z 300k 1k" "write -z 70k 3k" "write -z 514k 4k" \
    "write -z 1k 2k" "write -z 4k 4k" "write -z 63k 66k" "write -z -u 1022k 2k"; do
    zero_twin zero_ext "$img" "$cmd"
  done
done

say "commit: zero ranges of the top unmap the base's clusters (qemu-img commit)"
commit_chain() {
  qemu-img create -q -f qcow2 b.qcow2 1M
  qemu-io -c "write -P 1 0 256k" b.qcow2
  qemu-img create -q -f qcow2 -b b.qcow2 -F qcow2 o.qcow2
  qemu-io -c "write -z 0 64k" -c "write -z -u 64k 64k" -c "write -P 0 128k 64k" \
    -c "write -z 512k 64k" -c "discard 192k 64k" o.qcow2
}
twin_setup commit_chain
twin_run "commit" commit o.qcow2
same_shape "base after commit" b.qcow2
same_content "base after commit" b.qcow2
clean "base after commit" b.qcow2

finish
