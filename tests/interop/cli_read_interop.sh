#!/usr/bin/env bash
# Proves keel reads every image shape QEMU writes exactly as QEMU does: for each shape (v2/v3,
# cluster sizes 512..2M, refcount widths 1..64, lazy refcounts, extended L2, zstd, external data
# files, compressed clusters, backing chains with qcow2/raw/relative/shorter backing files,
# internal snapshots), qemu-io writes a workload, then `keel convert -O raw` must equal
# `qemu-img convert -O raw` byte for byte, `keel info` and `keel map` must print what qemu-img
# prints (JSON and human), and `keel io -r` must verify the written patterns.
# Usage: bash cli_read_interop.sh /path/to/keel
set -euo pipefail
source "$(dirname "$(realpath "$0")")/cli_lib.bash"

# check_image IMAGE SIZE: every comparison for an image qemu wrote.
check_image() {
  local img=$1 size=$2
  raw_same_as_qemu "$img"
  info_same_as_qemu "$img"
  map_same_as_qemu "$img"
  local checks
  as_c_args checks < <(workload_checks "$size")
  run_ok "keel io -r pattern checks on $img" "$KEEL" io -r "${checks[@]}" "$img"
  ! grep -q "verification failed" "$T/last.out" || fail "keel io -r on $img: $(cat "$T/last.out")"
}

for shape in "${SHAPES[@]}"; do
  IFS='|' read -r name opts size <<<"$shape"
  say "shape $name ($(shape_opts "$name" "$opts"), $size): qemu-io writes, keel reads"
  run_ok "qemu-img create $name" qemu-img create -q -f qcow2 -o "$(shape_opts "$name" "$opts")" "$name.qcow2" "$size"
  as_c_args wl < <(workload "$size")
  run_ok "qemu-io workload on $name" qemu-io "${wl[@]}" "$name.qcow2"
  check_image "$name.qcow2" "$size"
done

for ctype in zlib zstd; do
  for cs in 4k 64k; do
    say "compressed clusters ($ctype, cluster_size=$cs) written by qemu-img convert -c"
    run_ok "qemu-img convert -c" qemu-img convert -c -O qcow2 -o "compression_type=$ctype,cluster_size=$cs" v3.qcow2 "comp_${ctype}_$cs.qcow2"
    check_image "comp_${ctype}_$cs.qcow2" 8388608
  done
done
say "compressed clusters partly overwritten by qemu-io (copy-on-write of a compressed cluster)"
run_ok "qemu-io overwrite" qemu-io -c "write -P 0x12 70k 1k" -c "write -z 1M 64k" comp_zstd_64k.qcow2
raw_same_as_qemu comp_zstd_64k.qcow2
map_same_as_qemu comp_zstd_64k.qcow2

say "backing chain: qcow2 base <- qcow2 overlay (partial-cluster writes over backing data)"
run_ok "create base" qemu-img create -q -f qcow2 base.qcow2 8M
as_c_args wl < <(workload 8388608)
run_ok "qemu-io base" qemu-io "${wl[@]}" base.qcow2
run_ok "create top" qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
run_ok "qemu-io top" qemu-io -c "write -P 0xa1 96k 2k" -c "write -z 1M 8k" -c "discard 2M 64k" \
  -c "write -P 0xa2 6M 64k" top.qcow2
raw_same_as_qemu top.qcow2
info_same_as_qemu top.qcow2
info_same_as_qemu top.qcow2 --backing-chain
map_same_as_qemu top.qcow2

say "backing chain: v2 overlay (discard makes clusters unallocated, reads come from backing)"
run_ok "create v2 top" qemu-img create -q -f qcow2 -o compat=0.10 -b base.qcow2 -F qcow2 top_v2.qcow2
run_ok "qemu-io v2 top" qemu-io -c "write -P 0xb1 0 128k" -c "discard 0 64k" -c "write -z 2M 64k" top_v2.qcow2
raw_same_as_qemu top_v2.qcow2
info_same_as_qemu top_v2.qcow2 --backing-chain
map_same_as_qemu top_v2.qcow2

say "backing chain: raw backing file"
run_ok "create raw base" qemu-img create -q -f raw base.raw 8M
run_ok "qemu-io raw base" qemu-io -f raw -c "write -P 0xc1 0 1M" -c "write -P 0xc2 5M 100k" base.raw
run_ok "create top over raw" qemu-img create -q -f qcow2 -b base.raw -F raw top_raw.qcow2
run_ok "qemu-io top over raw" qemu-io -c "write -P 0xc3 512k 3k" -c "write -z 5M 4k" top_raw.qcow2
raw_same_as_qemu top_raw.qcow2
info_same_as_qemu top_raw.qcow2 --backing-chain
map_same_as_qemu top_raw.qcow2

say "backing chain: relative backing names resolved against the image's directory, 3 levels"
mkdir -p sub/deeper
run_ok "create sub/deeper/l0" qemu-img create -q -f qcow2 sub/deeper/l0.qcow2 4M
run_ok "qemu-io l0" qemu-io -c "write -P 0xd0 0 4M" sub/deeper/l0.qcow2
run_ok "create sub/l1 -> deeper/l0" qemu-img create -q -f qcow2 -o compat=0.10 -b deeper/l0.qcow2 -F qcow2 sub/l1.qcow2 6M
run_ok "qemu-io l1" qemu-io -c "write -P 0xd1 1M 1M" sub/l1.qcow2
run_ok "create sub/l2 -> l1" qemu-img create -q -f qcow2 -b l1.qcow2 -F qcow2 sub/l2.qcow2 8M
run_ok "qemu-io l2" qemu-io -c "write -P 0xd2 1536k 100k" -c "write -P 0xd3 7M 4k" sub/l2.qcow2
raw_same_as_qemu sub/l2.qcow2
info_same_as_qemu sub/l2.qcow2 --backing-chain
map_same_as_qemu sub/l2.qcow2
(cd sub && raw_same_as_qemu l2.qcow2)

say "lazy refcounts left dirty by a killed qemu-io (dirty flag, reads without repair)"
run_ok "create dirty" qemu-img create -q -f qcow2 -o lazy_refcounts=on dirty.qcow2 8M
qemu-io -c "write -P 0xf1 0 1M" -c "write -P 0xf2 5M 64k" -c "sigraise 9" dirty.qcow2 >/dev/null 2>&1 || true
grep -q '"dirty-flag": true' <(qemu-img info -U --output=json dirty.qcow2) || fail "test setup: image is not dirty"
raw_same_as_qemu dirty.qcow2
info_same_as_qemu dirty.qcow2
map_same_as_qemu dirty.qcow2

say "persistent dirty bitmaps listed by info"
run_ok "create bitmaps" qemu-img create -q -f qcow2 bitmaps.qcow2 8M
run_ok "bitmap b0" qemu-img bitmap --add bitmaps.qcow2 b0
run_ok "bitmap b1" qemu-img bitmap --add -g 128k --disable bitmaps.qcow2 b1
info_same_as_qemu bitmaps.qcow2

say "external data file named relative to the image, image in a subdirectory"
mkdir -p dsub
(cd dsub && run_ok "create" qemu-img create -q -f qcow2 -o data_file=rel.data rel.qcow2 8M)
(cd dsub && run_ok "qemu-io" qemu-io -c "write -P 0xf3 0 1M" -c "write -z 512k 64k" rel.qcow2)
(cd dsub && qemu-img convert -O raw rel.qcow2 "$T/rel_q.raw")
run_ok "keel convert from the parent directory" "$KEEL" convert -O raw dsub/rel.qcow2 rel_k.raw
same_file "data file found next to the image" rel_q.raw rel_k.raw
(cd dsub && info_same_as_qemu rel.qcow2)

say "internal snapshots read with convert -l"
run_ok "create snap" qemu-img create -q -f qcow2 snap.qcow2 8M
run_ok "qemu-io snap 1" qemu-io -c "write -P 0xe1 0 1M" -c "write -P 0xe2 3M 64k" snap.qcow2
run_ok "snapshot s1" qemu-img snapshot -c s1 snap.qcow2
run_ok "qemu-io snap 2" qemu-io -c "write -P 0xe3 512k 1M" -c "discard 3M 64k" snap.qcow2
run_ok "snapshot s2" qemu-img snapshot -c s2 snap.qcow2
run_ok "qemu-io snap 3" qemu-io -c "write -z 0 2M" -c "write -P 0xe4 7M 4k" snap.qcow2
raw_same_as_qemu snap.qcow2
raw_same_as_qemu snap.qcow2 -l snapshot.name=s1
raw_same_as_qemu snap.qcow2 -l snapshot.id=2
raw_same_as_qemu snap.qcow2 -l s1
info_same_as_qemu snap.qcow2

finish
