#!/usr/bin/env bash
# Proves malformed images are refused cleanly: for each corruption (truncated header, L1 and
# refcount table offsets past EOF or misaligned, table sizes over QEMU's limits, bad cluster
# bits, refcount order, header length, version, unknown incompatible feature bits, an unknown encryption method,
# backing name offset/length, snapshot count, misaligned L1 entry, backing chain loops), keel
# info / map / convert / io each exit 1 (like qemu-img) within a time bound, print exactly one
# "keel: ..." line that names the offending field, never crash, and never modify the image, even
# when opened for writing.
# Usage: bash cli_badinput.sh /path/to/keel
set -euo pipefail
source "$(dirname "$(realpath "$0")")/cli_lib.bash"

PY=/usr/bin/python3
run_ok "create good image" qemu-img create -q -f qcow2 good.qcow2 8M
run_ok "fill good image" qemu-io -c "write -P 1 0 1M" good.qcow2

# bad NAME OFFSET STRUCT-FORMAT VALUE: a copy of good.qcow2 with one big-endian field replaced.
bad() {
  "$PY" - "$1" "$2" "$3" "$4" <<'EOF'
import shutil, struct, sys
name, off, fmt, val = sys.argv[1], int(sys.argv[2], 0), sys.argv[3], int(sys.argv[4], 0)
shutil.copy("good.qcow2", name)
with open(name, "r+b") as f:
    f.seek(off)
    f.write(struct.pack(fmt, val))
EOF
}
head -c 50 good.qcow2 >trunc50.qcow2
head -c 72 good.qcow2 >trunc72.qcow2
bad l1_past_eof.qcow2 40 ">Q" 0x10000000000
bad l1_misaligned.qcow2 40 ">Q" 0x30001
bad l1_huge.qcow2 36 ">I" 0x7fffffff
bad l1_small.qcow2 36 ">I" 0
bad incompat_bit5.qcow2 72 ">Q" 0x20
bad incompat_bit63.qcow2 72 ">Q" 0x8000000000000000
bad cluster_bits30.qcow2 20 ">I" 30
bad cluster_bits8.qcow2 20 ">I" 8
bad version4.qcow2 4 ">I" 4
bad size_huge.qcow2 24 ">Q" 0x7fffffffffffffff
bad reftable_past_eof.qcow2 48 ">Q" 0x10000000000
bad reftable_misaligned.qcow2 48 ">Q" 0x10008
bad reftable_huge.qcow2 56 ">I" 0x7fffffff
bad refcount_order.qcow2 96 ">I" 7
bad header_length.qcow2 100 ">I" 50
bad backing_offset.qcow2 8 ">Q" 0x10000000000
bad nb_snapshots.qcow2 60 ">I" 0x7fffffff
bad crypt.qcow2 32 ">I" 3  # 1 (AES) and 2 (LUKS) are supported: crypt_luks.sh
L1=$("$PY" -c "import struct;print(struct.unpack('>Q', open('good.qcow2','rb').read()[40:48])[0])")
bad l1_entry_misaligned.qcow2 "$L1" ">Q" 0x8000000000050001
run_ok "loop a" qemu-img create -q -f qcow2 -u -b loop_b.qcow2 -F qcow2 loop_a.qcow2 1M
run_ok "loop b" qemu-img create -q -f qcow2 -u -b loop_a.qcow2 -F qcow2 loop_b.qcow2 1M
run_ok "self loop" qemu-img create -q -f qcow2 -u -b ./self.qcow2 -F qcow2 self.qcow2 1M

# refused IMAGE FIELD-REGEX: every command fails with one short "keel:" line naming the field.
refused() {
  local img=$1 field=$2 before after
  before=$(md5sum "$img" | cut -d' ' -f1)
  local -a cmds=(
    "info $img"
    "map --output=json $img"
    "convert -O raw $img $T/out.raw"
    "io -r -c read 0 512 $img"
    "io -c write 0 512 $img"
  )
  [[ $img == loop* || $img == self* ]] && cmds[0]="info --backing-chain $img"
  local c rc
  for c in "${cmds[@]}"; do
    rc=0
    # shellcheck disable=SC2086  # the commands are split on purpose (none has spaces in args
    # except io's -c, handled below)
    if [[ $c == io* ]]; then
      local io_cmd=${c#io -r -c }; io_cmd=${io_cmd#io -c }; io_cmd=${io_cmd% *}
      local ro=(); [[ $c == "io -r"* ]] && ro=(-r)
      timeout 20 "$KEEL" io "${ro[@]}" -c "$io_cmd" "$img" >"$T/out" 2>"$T/err" || rc=$?
    else
      timeout 20 "$KEEL" $c >"$T/out" 2>"$T/err" || rc=$?
    fi
    local why=""
    if [ $rc -eq 124 ]; then why="timed out"
    elif [ $rc -ge 128 ]; then why="killed by signal $((rc - 128))"
    elif [ $rc -ne 1 ]; then why="exit status $rc, expected 1"
    elif [ "$(wc -l <"$T/err")" -ne 1 ]; then why="expected one line on stderr"
    elif ! grep -q '^keel: ' "$T/err"; then why="message does not start with 'keel: '"
    elif [ "$(wc -c <"$T/err")" -gt 400 ]; then why="message of $(wc -c <"$T/err") bytes (at most 400)"
    elif ! grep -Eqi -- "$field" "$T/err"; then why="message does not name '$field'"
    fi
    if [ -n "$why" ]; then
      fail "keel $c: $why; stderr: $(head -c 300 "$T/err")"
      continue
    fi
    pass
  done
  after=$(md5sum "$img" | cut -d' ' -f1)
  [ "$before" = "$after" ] || fail "$img was modified by keel"
  pass
}

say "truncated header";                   refused trunc50.qcow2 'header'
say "header cut inside the v3 fields";    refused trunc72.qcow2 'header'
say "L1 table past the end of the file";  refused l1_past_eof.qcow2 'l1_table_offset'
say "L1 table offset misaligned";         refused l1_misaligned.qcow2 'l1_table_offset'
say "L1 table over QEMU's 32 MiB limit";  refused l1_huge.qcow2 'l1_size'
say "L1 table too small for the disk";    refused l1_small.qcow2 'l1_size'
say "unknown incompatible feature bit 5"; refused incompat_bit5.qcow2 'incompatible'
say "unknown incompatible feature bit 63"; refused incompat_bit63.qcow2 'incompatible'
say "cluster_bits 30";                    refused cluster_bits30.qcow2 'cluster_bits|cluster size'
say "cluster_bits 8";                     refused cluster_bits8.qcow2 'cluster_bits|cluster size'
say "version 4";                          refused version4.qcow2 'version'
say "virtual size 2^63-1";                refused size_huge.qcow2 'size'
say "refcount table past EOF";            refused reftable_past_eof.qcow2 'refcount_table_offset'
say "refcount table misaligned";          refused reftable_misaligned.qcow2 'refcount_table_offset'
say "refcount table over QEMU's limit";   refused reftable_huge.qcow2 'refcount_table_clusters'
say "refcount_order 7";                   refused refcount_order.qcow2 'refcount_order'
say "header_length 50";                   refused header_length.qcow2 'header_length'
say "backing file name past cluster 0";   refused backing_offset.qcow2 'backing_file_offset'
say "nb_snapshots 2^31-1";                refused nb_snapshots.qcow2 'nb_snapshots'
say "unknown crypt_method 3";            refused crypt.qcow2 'crypt_method|encrypt'
say "misaligned L2 offset in an L1 entry"; refused l1_entry_misaligned.qcow2 'L1 entry|l2'
say "backing chain loop a -> b -> a";     refused loop_a.qcow2 'loop'
say "image that is its own backing file"; refused self.qcow2 'loop'

say "an L2 table past EOF reads as zeros, as with QEMU (no crash)"
bad l2_past_eof.qcow2 "$L1" ">Q" 0x8000010000000000
raw_same_as_qemu l2_past_eof.qcow2

finish
