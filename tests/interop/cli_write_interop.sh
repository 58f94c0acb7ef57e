#!/usr/bin/env bash
# Proves images keel writes are images QEMU accepts: for each shape (v2/v3, cluster sizes
# 512..2M, refcount widths 1..64, lazy refcounts, extended L2, zstd, external data files, backing
# chains with qcow2/raw/relative backing files, raw images), the same qemu-io command sequence
# runs through qemu-io on one twin and `keel io` on the other. keel io must print the same lines
# (timings aside) and exit the same way, its image must pass `qemu-img check` with no errors and
# no leaks, `qemu-img compare` must find the twins identical, and qemu-io must read back every
# pattern from keel's image.
# Usage: bash cli_write_interop.sh /path/to/keel
set -euo pipefail
source "$(dirname "$(realpath "$0")")/cli_lib.bash"

# twin_run NAME FORMAT CMDS-ARRAY-NAME: runs the commands with qemu-io on q/NAME and keel io
# on k/NAME; compares output, exit status, content, and checks keel's image.
twin_run() {
  local name=$1 fmt=$2
  local -n _twin_cmds=$3
  local qrc=0 krc=0
  [ ${#_twin_cmds[@]} -gt 0 ] || fail "$name: no commands"
  (cd q && qemu-io -f "$fmt" "${_twin_cmds[@]}" "$name") >"$T/q.io" 2>"$T/q.io.err" || qrc=$?
  (cd k && "$KEEL" io -f "$fmt" "${_twin_cmds[@]}" "$name") >"$T/k.io" 2>"$T/k.io.err" || krc=$?
  [ $qrc -eq $krc ] || { cat "$T/k.io" "$T/k.io.err" >&2; fail "$name: qemu-io exited $qrc, keel io $krc"; }
  # Data file names are absolute and differ only in the twin's directory.
  normalize_io <"$T/q.io" | sed "s#$T/[qk]/#DIR/#g" >"$T/q.io.n"
  normalize_io <"$T/k.io" | sed "s#$T/[qk]/#DIR/#g" >"$T/k.io.n"
  same_file "$name: keel io output (stdout) equals qemu-io's" "$T/q.io.n" "$T/k.io.n"
  sed -i 's/^qemu-io: /keel: /' "$T/q.io.err"
  same_file "$name: keel io messages (stderr) equal qemu-io's" "$T/q.io.err" "$T/k.io.err"
  if [ "$fmt" = qcow2 ]; then (cd k && qcheck "$name"); fi
  qcompare -f "$fmt" -F "$fmt" "$T/q/$name" "$T/k/$name"
}

# verify_with_qemu NAME FORMAT SIZE: qemu-io reads the workload's patterns back from keel's image.
verify_with_qemu() {
  local checks
  as_c_args checks < <(workload_checks "$3")
  run_ok "qemu-io pattern checks on k/$1" qemu-io -r -f "$2" "${checks[@]}" "k/$1"
  ! grep -q "verification failed" "$T/last.out" || fail "qemu-io -r on k/$1: $(cat "$T/last.out")"
}

mkdir q k
for shape in "${SHAPES[@]}"; do
  IFS='|' read -r name opts size <<<"$shape"
  img="$name.qcow2"
  say "shape $name ($(shape_opts "$name" "$opts"), $size): keel io and qemu-io run the same commands"
  (cd q && run_ok "qemu-img create q/$img" qemu-img create -q -f qcow2 -o "$(shape_opts "$T/q/$name" "$opts")" "$img" "$size")
  (cd k && run_ok "qemu-img create k/$img" qemu-img create -q -f qcow2 -o "$(shape_opts "$T/k/$name" "$opts")" "$img" "$size")
  # Compressed clusters first (into unallocated clusters), then the mixed workload over them.
  cs=$(qemu-img info --output=json "q/$img" | sed -n 's/.*"cluster-size": \([0-9]*\).*/\1/p')
  half=$((size / 2))
  as_c_args cmds < <(
    echo "write -c -P 0x5a $half $((2 * cs))"
    echo "write -c -P 0x5b $((half + 4 * cs)) $cs"
    echo "read -P 0x5a $half $((2 * cs))"
    echo "write -P 0x5c $((half + 512)) 1k"
    echo "read -P 0x5a $half 512"
    echo "read -P 0x5c $((half + 512)) 1k"
    workload "$size"
    echo "info"
    echo "length"
    workload_checks "$size")
  twin_run "$img" qcow2 cmds
  verify_with_qemu "$img" qcow2 "$size"
done

say "keel-created images: keel create + keel io, checked and compared by QEMU"
for shape in v2 v3 c512 c2M rc1 rc64 lazy el2_128k zstd datafile_raw; do
  for s in "${SHAPES[@]}"; do [[ $s == "$shape|"* ]] && IFS='|' read -r name opts size <<<"$s"; done
  (cd k && run_ok "keel create kc_$name" "$KEEL" create -q -f qcow2 -o "$(shape_opts "$T/k/kc_$name" "$opts")" "kc_$name.qcow2" "$size")
  as_c_args wl < <(workload "$size")
  (cd k && run_ok "keel io workload on kc_$name" "$KEEL" io "${wl[@]}" "kc_$name.qcow2")
  (cd k && qcheck "kc_$name.qcow2")
  verify_with_qemu "kc_$name.qcow2" qcow2 "$size"
done

say "lazy refcounts: killed after writes (sigraise 9), then repaired by qemu-img check -r all"
for d in q k; do (cd $d && run_ok "create lazy" qemu-img create -q -f qcow2 -o lazy_refcounts=on lazy_kill.qcow2 8M); done
as_c_args cmds < <(workload 8388608; echo "sigraise 9")
qrc=0; krc=0
(cd q && qemu-io "${cmds[@]}" lazy_kill.qcow2) >"$T/q.io" 2>&1 || qrc=$?
(cd k && "$KEEL" io "${cmds[@]}" lazy_kill.qcow2) >"$T/k.io" 2>&1 || krc=$?
if [ $qrc -ne 137 ] || [ $krc -ne 137 ]; then fail "sigraise 9: qemu-io exited $qrc, keel io $krc"; fi
pass
normalize_io <"$T/q.io" >"$T/q.io.n"; normalize_io <"$T/k.io" >"$T/k.io.n"
same_file "output up to the kill" "$T/q.io.n" "$T/k.io.n"
# A dirty image may have stale refcounts (QEMU's check then wants -r); a clean one must be exact.
if ! grep -q '"dirty-flag": true' <(qemu-img info -U --output=json k/lazy_kill.qcow2); then
  qcheck k/lazy_kill.qcow2
fi
for d in q k; do
  rc=0; qemu-img check -r all "$d/lazy_kill.qcow2" >"$T/$d.check" 2>&1 || rc=$?
  [ $rc -eq 0 ] || fail "qemu-img check -r all $d/lazy_kill.qcow2 exited $rc: $(cat "$T/$d.check")"
  pass
done
qcheck k/lazy_kill.qcow2
qcompare q/lazy_kill.qcow2 k/lazy_kill.qcow2

say "raw images"
for d in q k; do (cd $d && run_ok "create raw" qemu-img create -q -f raw r.raw 8M); done
as_c_args cmds < <(workload 8388608; echo "length"; echo "info"; workload_checks 8388608)
twin_run r.raw raw cmds

say "backing chains: qcow2 base written by qemu-io, overlays written by both"
for d in q k; do
  (cd $d && run_ok "create base" qemu-img create -q -f qcow2 base.qcow2 8M)
  (cd $d && run_ok "fill base" qemu-io -c "write -P 0xb0 0 8M" base.qcow2)
  (cd $d && run_ok "create raw base" qemu-img create -q -f raw base.raw 6M)
  (cd $d && run_ok "fill raw base" qemu-io -f raw -c "write -P 0xb1 0 3M" base.raw)
  (cd $d && run_ok "create v3 top" qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top_v3.qcow2)
  (cd $d && run_ok "create v2 top" qemu-img create -q -f qcow2 -o compat=0.10 -b base.qcow2 -F qcow2 top_v2.qcow2)
  (cd $d && run_ok "create el2 top" qemu-img create -q -f qcow2 -o extended_l2=on -b base.qcow2 -F qcow2 top_el2.qcow2)
  (cd $d && run_ok "create raw-backed top" qemu-img create -q -f qcow2 -b base.raw -F raw top_raw.qcow2 8M)
  mkdir -p $d/sub
  (cd $d && run_ok "create relative top" qemu-img create -q -f qcow2 -b ../base.qcow2 -F qcow2 sub/top_rel.qcow2)
done
cat >"$T/overlay.cmds" <<'EOF2'
write -P 0x71 1k 2k
write -P 0x72 65000 1000
write -z 128k 4k
write -z -u 192k 64k
discard 256k 64k
discard 320k 1k
write -P 0x73 5M 1M
read -P 0xb0 2k 60k
read -P 0 192k 64k
read -P 0x71 1k 2k
read -P 0x72 65000 1000
read -P 0x73 5M 1M
flush
EOF2
as_c_args cmds <"$T/overlay.cmds"
for top in top_v3.qcow2 top_v2.qcow2 top_el2.qcow2 top_raw.qcow2 sub/top_rel.qcow2; do
  say "overlay $top"
  twin_run "$top" qcow2 cmds
done

finish
