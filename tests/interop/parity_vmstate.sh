#!/usr/bin/env bash
# Proves keel io's `read -b` / `write -b` (the VM state area) behave as qemu-io 7.2's on twins of
# QEMU-made images: the same lines and exit codes (messages, alignment checks, raw's ENOTSUP,
# -r's refusal), the same image afterwards (qemu-img check clean, info and map equal, the L1
# table grown to the same size), and VM state written by either tool read back by the other,
# also across internal snapshots (copy-on-write of the area, snapshot -a) and with 512-byte
# clusters, where the L1 table must grow several times.
# Usage: bash parity_vmstate.sh /path/to/keel
set -euo pipefail
HERE=$(dirname "$(realpath "$0")")
source "$HERE/cli_lib.bash"
source "$HERE/parity_lib.bash"

# l1_size IMAGE: the header's l1_size field.
l1_size() { python3 -c 'import struct,sys; print(struct.unpack(">I", open(sys.argv[1],"rb").read()[36:40])[0])' "$1"; }

# same_l1 DESC IMAGE: q/IMAGE and k/IMAGE have L1 tables of the same size (QEMU's growth rule).
same_l1() {
  local q k
  q=$(l1_size "$T/q/$2") k=$(l1_size "$T/k/$2")
  [ "$q" = "$k" ] || fail "$1: l1_size of $2: qemu-io $q, keel io $k"
  pass
}

# cross_read DESC IMAGE CMD...: qemu-io runs the read commands CMD on k/IMAGE and keel io on
# q/IMAGE: each tool reads what the other wrote, without a failure.
cross_read() {
  local desc=$1 img=$2 out; shift 2
  local args=() c
  for c in "$@"; do args+=(-c "$c"); done
  out=$(cd "$T/k" && qemu-io -r "${args[@]}" "$img" 2>&1) || fail "$desc: qemu-io on k/$img: $out"
  ! grep -q -i "fail\|error\|not" <<<"$out" || fail "$desc: qemu-io on k/$img: $out"
  out=$(cd "$T/q" && "$KEEL" io -r "${args[@]}" "$img" 2>&1) || fail "$desc: keel io on q/$img: $out"
  ! grep -q -i "fail\|error\|not" <<<"$out" || fail "$desc: keel io on q/$img: $out"
  pass
}

# same_check_out DESC IMAGE: qemu-img check prints the same lines for q/IMAGE and k/IMAGE
# (allocated clusters, image end offset: the area's clusters lie where QEMU put them). With
# SAME_FRAG=0 the fragmentation figure is left out: with 512-byte clusters keel allocates the
# area's clusters one at a time where QEMU takes a run (one cluster in 385 lies elsewhere).
same_check_out() {
  local mask='s/^$//'
  [ "${SAME_FRAG:-1}" = 1 ] || mask='s/[0-9.]+% fragmented/<frag> fragmented/'
  (cd "$T/q" && qemu-img check -U "$2") 2>&1 | sed -E "$mask" >"$T/q.check" || true
  (cd "$T/k" && qemu-img check -U "$2") 2>&1 | sed -E "$mask" >"$T/k.check" || true
  same_file "$1: qemu-img check of $2" "$T/q.check" "$T/k.check"
}

# after DESC IMAGE: both images clean, the same check output, info, map and L1 size.
after() {
  clean "$1" "$2"
  same_check_rc "$1" "$2"
  same_check_out "$1" "$2"
  same_info "$1" "$2"
  same_map "$1" "$2"
  same_l1 "$1" "$2"
}

image() {
  qemu-img create -q -f qcow2 a.qcow2 1M
  qemu-io -c "write -P 0x11 0 64k" a.qcow2
}

say "write -b / read -b on a 1 MiB image (64 KiB clusters): the L1 table grows past the disk"
twin_setup image
io_twin "vmstate writes and reads" a.qcow2 -c "write -b -P 0xab 0 64k" -c "read -b -P 0xab 0 64k" \
  -c "write -b -P 0xcd 100k 8k" -c "read -b -P 0xab 0 64k" -c "read -b -P 0 64k 36k" \
  -c "read -b -P 0xcd 100k 8k" -c "read -b -P 0 108k 20k" -c "read -P 0x11 0 64k" -c "read -P 0 64k 960k"
after "vmstate written" a.qcow2
same_file "vmstate written: the two files are byte for byte the same" "$T/q/a.qcow2" "$T/k/a.qcow2"
cross_read "each reads the other's" a.qcow2 "read -b -P 0xab 0 64k" "read -b -P 0xcd 100k 8k" \
  "read -b -P 0 128k 64k" "read -P 0x11 0 64k"

say "the options and checks of read -b and write -b"
io_twin "alignment, -z, -f, -l, -s, -q, -v" a.qcow2 -c "write -b 512 513" -c "read -b 1 512" \
  -c "read -b -v 0 16" -c "write -b 1 512" -c "write -b -z 0 512" -c "write -b -f 0 512" \
  -c "read -b -l 512 0 512" -c "read -b -q -P 0xab 0 512" -c "write -b -q -P 0x5a 1024 512" \
  -c "read -b -v 1024 512" -c "read -b -P 0xff 0 512" -c "read -b -P 0xab -s 512 -l 1024 0 2048"
io_twin "write -b -c writes plain VM state, -s takes a file" a.qcow2 -c "write -b -c -P 0x77 64k 64k" \
  -c "read -b -P 0x77 64k 64k" -c "write -b -s a.qcow2 192k 4k" -c "read -b -v 192k 512"
io_twin "read -b far past the area, write -b past 1 GiB" a.qcow2 -c "read -b -P 0 1T 512" \
  -c "write -b -P 0x42 1G 512" -c "read -b -P 0x42 1G 512"
after "after the options" a.qcow2
io_twin "read-only: write -b refused, read -b works" -r a.qcow2 -c "write -b 0 512" -c "read -b -P 0xab 0 512"

say "VM state and internal snapshots"
twin_setup image
both_do qemu-io -c "write -b -P 0x21 0 64k" a.qcow2
both_do qemu-img snapshot -c s1 a.qcow2
io_twin "copy-on-write of the area after snapshot -c" a.qcow2 -c "write -b -P 0x22 4k 4k" \
  -c "read -b -P 0x21 0 4k" -c "read -b -P 0x22 4k 4k" -c "read -b -P 0x21 8k 56k"
after "vmstate after a snapshot" a.qcow2
same_snapshots "snapshot list" a.qcow2
both_do qemu-img snapshot -a s1 a.qcow2
io_twin "snapshot -a brings the snapshot's VM state back" a.qcow2 -c "read -b -P 0x21 0 64k"
cross_read "each reads the other's after snapshot -a" a.qcow2 "read -b -P 0x21 0 64k"
both_do qemu-img snapshot -d s1 a.qcow2
after "after snapshot -d" a.qcow2

# A snapshot taken before the area existed: snapshot -a drops the area in both tools. QEMU keeps
# the grown L1 table (zeroed past the snapshot's entries, written in place); keel switches to a
# table of the snapshot's size in fresh clusters, so l1_size and the file's end differ (docs/cli.md).
twin_setup image
both_do qemu-img snapshot -c s0 a.qcow2
io_twin "VM state written after the snapshot" a.qcow2 -c "write -b -P 0x23 0 64k"
both_do qemu-img snapshot -a s0 a.qcow2
io_twin "snapshot -a of an older snapshot: the area reads zeros" a.qcow2 -c "read -b -P 0 0 64k" -c "read -P 0x11 0 64k"
clean "after snapshot -a of an older snapshot" a.qcow2
same_info "after snapshot -a of an older snapshot" a.qcow2
same_map "after snapshot -a of an older snapshot" a.qcow2

say "512-byte clusters: the L1 table grows several times; extended L2; compat=0.10"
small() {
  qemu-img create -q -f qcow2 -o cluster_size=512 a.qcow2 1M
  qemu-img create -q -f qcow2 -o extended_l2=on a2.qcow2 1M
  qemu-img create -q -f qcow2 -o compat=0.10 a3.qcow2 1M
}
twin_setup small
io_twin "512-byte clusters" a.qcow2 -c "write -b -P 0x31 0 64k" -c "write -b -P 0x32 1M 128k" \
  -c "write -b -P 0x33 8M 512" -c "read -b -P 0x31 0 64k" -c "read -b -P 0x32 1M 128k" -c "read -b -P 0x33 8M 512"
SAME_FRAG=0 after "512-byte clusters" a.qcow2
io_twin "extended L2: a partial subcluster write" a2.qcow2 -c "write -b -P 0x41 2k 1k" \
  -c "read -b -P 0 0 2k" -c "read -b -P 0x41 2k 1k" -c "read -b -P 0 3k 61k"
after "extended L2" a2.qcow2
io_twin "compat=0.10" a3.qcow2 -c "write -b -P 0x51 0 4k" -c "read -b -P 0x51 0 4k"
after "compat=0.10" a3.qcow2
cross_read "512-byte clusters, extended L2" a.qcow2 "read -b -P 0x32 1M 128k" "read -b -P 0x33 8M 512"
cross_read "extended L2" a2.qcow2 "read -b -P 0x41 2k 1k" "read -b -P 0 3k 61k"

say "a backing file: the area never reads the backing file's data"
chain() {
  qemu-img create -q -f qcow2 base.qcow2 2M
  qemu-io -c "write -P 0x61 0 2M" base.qcow2
  qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2 1M
}
twin_setup chain
io_twin "vmstate over a longer backing file" top.qcow2 -c "read -b -P 0 0 64k" -c "write -b -P 0x62 4k 4k" \
  -c "read -b -P 0 0 4k" -c "read -b -P 0x62 4k 4k" -c "read -b -P 0 8k 56k" -c "read -P 0x61 0 1M"
after "over a backing file" top.qcow2

say "raw images: ENOTSUP, as QEMU's raw and file drivers"
raw() { qemu-img create -q -f raw r.raw 1M; }
twin_setup raw
io_twin "raw" -f raw r.raw -c "write -b 0 512" -c "read -b 0 512" -c "read -b 1 512"
same_content "raw image untouched" r.raw

finish
