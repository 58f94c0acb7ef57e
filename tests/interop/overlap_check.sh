#!/usr/bin/env bash
# Proves keel io refuses to write guest data over metadata exactly as qemu-io 7.2 does: on
# identical damaged copies (a metadata cluster's refcount at 0, an L2 entry pointed at a metadata
# cluster, a zeroed refcount table entry), keel and qemu-io print the same "qcow2: Marking image
# as corrupt: ..." line and the same result line, exit with the same status, both images still
# open in qemu-img info as qcow2 with the corrupt bit, no metadata cluster holds guest data, the
# overlap-check options (--image-opts) act as QEMU's, and keel check -r all makes the image
# writable again.
# Usage: bash overlap_check.sh /path/to/keel
set -euo pipefail
HERE=$(dirname "$(realpath "$0")")
source "$HERE/cli_lib.bash"
DAMAGE="/usr/bin/python3 $HERE/overlap_damage.py"

# Base images made by QEMU: 64 KiB clusters, data in [0, 1M), a snapshot, then [0, 64k) rewritten
# (so guest cluster 0 is this tree's own); and one with a persistent bitmap instead.
qemu-img create -q -f qcow2 snap.qcow2 4M
qemu-io -c 'write -P 0x11 0 1M' snap.qcow2 >/dev/null
qemu-img snapshot -c s1 snap.qcow2
qemu-io -c 'write -P 0x22 0 64k' snap.qcow2 >/dev/null
qemu-img create -q -f qcow2 bm.qcow2 4M
qemu-io -c 'write -P 0x11 0 1M' bm.qcow2 >/dev/null
qemu-img bitmap --add bm.qcow2 bm0

# no_guest_data IMAGE: no metadata cluster of IMAGE holds a run of the guest pattern 0xa5.
no_guest_data() {
  local kind off
  while read -r kind off; do
    if dd if="$1" bs=65536 skip=$((off / 65536)) count=1 status=none | od -An -v -tx1 | tr -d ' \n' |
      grep -q 'a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5'; then
      fail "$1: guest data in the $kind at $off"
    fi
  done < <($DAMAGE "$1" list)
  pass
}

# result_lines OUT: qemu-io's output without the timing lines (they differ run to run).
result_lines() { grep -v '^[0-9.]* [KMG]i\?B, ' "$1" || true; }

# compare BASE DAMAGE-ARGS IO-CMD [QEMU-OPTS [MATCH-LINES]]: damage two copies, run qemu-io and
# keel io, compare. QEMU-OPTS: extra --image-opts options for both (e.g. overlap-check=all).
# MATCH-LINES: 'all' (default) compares stdout and stderr whole; 'marking' only the marking line;
# 'refused' only that both printed one (a documented difference of wording).
compare() {
  local base=$1 dmg=$2 cmd=$3 extra=${4:-} match=${5:-all} q=0 k=0
  cp "$base" q.qcow2
  $DAMAGE q.qcow2 $dmg >/dev/null || { echo "   (no such structure)"; return 0; }
  cp q.qcow2 k.qcow2
  say "$base, $dmg, '$cmd'${extra:+ ($extra)}"
  if [ -n "$extra" ]; then
    qemu-io --image-opts -c "$cmd" "driver=qcow2,file.filename=q.qcow2,$extra" >q.out 2>q.err || q=$?
    "$KEEL" io --image-opts -c "$cmd" "driver=qcow2,file.filename=k.qcow2,$extra" >k.out 2>k.err || k=$?
  else
    qemu-io -c "$cmd" q.qcow2 >q.out 2>q.err || q=$?
    "$KEEL" io -c "$cmd" k.qcow2 >k.out 2>k.err || k=$?
  fi
  [ "$q" = "$k" ] || fail "exit status: qemu-io $q, keel $k"
  pass
  if [ "$match" = refused ]; then
    grep -q 'Marking image as corrupt' q.err && grep -q 'Marking image as corrupt' k.err ||
      fail "both should refuse: qemu-io '$(cat q.err)', keel '$(cat k.err)'"
    pass
  else
    same_text "marking line" "$(grep 'Marking image' q.err || true)" "$(grep 'Marking image' k.err || true)"
  fi
  if [ "$match" = all ]; then
    same_text "stderr" "$(cat q.err)" "$(cat k.err)"
    same_text "result line" "$(result_lines q.out)" "$(result_lines k.out)"
  fi
  local qi ki
  qi=$(qemu-img info --output=json q.qcow2 | grep -E '"format"|"corrupt"' | tr -d ' \n')
  ki=$(qemu-img info --output=json k.qcow2 | grep -E '"format"|"corrupt"' | tr -d ' \n')
  same_text "qemu-img info after keel (format, corrupt)" "$qi" "$ki"
  grep -q '"format":"qcow2"' <<<"$ki" || fail "qemu-img info does not open keel's image as qcow2: $ki"
  no_guest_data k.qcow2
  if grep -q 'Marking image' k.err; then
    # A second write: both refuse to open the corrupt image read/write.
    q=0 k=0
    qemu-io -c "$cmd" q.qcow2 >/dev/null 2>&1 || q=$?
    "$KEEL" io -c "$cmd" k.qcow2 >/dev/null 2>&1 || k=$?
    [ "$q" = "$k" ] || fail "second write: qemu-io $q, keel $k"
    pass
  fi
}

for kind in main-header active-l1 refcount-table refcount-block active-l2 snapshot-table inactive-l1; do
  compare snap.qcow2 "refcount0 $kind" 'write -P 0xa5 2M 64k'
done
for kind in active-l1 refcount-table refcount-block active-l2 snapshot-table inactive-l1; do
  compare snap.qcow2 "l2point $kind 0" 'write -P 0xa5 0 4k'
  compare snap.qcow2 "l2point $kind 0" 'write -z 0 4k'
done
# Refcount table entry 0 zeroed: both refuse. QEMU takes cluster 0 for the data first, then
# tries the refcount block at cluster 1 ("overlaps with refcount table"); keel places the block
# first and names it ("Preventing invalid allocation of refcount block at offset 0").
compare snap.qcow2 reftable0 'write -P 0xa5 2M 64k' '' refused
# Refcount table entry 0 not cluster aligned: the image opens in both, reads and an overwrite of
# an allocated cluster work (they need no refcount), the first allocation is refused with QEMU's
# "Refblock offset ... unaligned" corruption event; then a read-only open reads the image.
compare snap.qcow2 reftable-unaligned 'read -P 0x22 0 64k'
compare snap.qcow2 reftable-unaligned 'write -P 0x33 0 4k'
compare snap.qcow2 reftable-unaligned 'write -P 0xa5 2M 64k'
# After the corruption event the node is dead in both (qemu's bs->drv = NULL): every later
# command on the image fails with "No medium found" under its own name (aio requests reported
# when the event loop next polls, newest first), map and truncate on stderr, info and flush
# silent; close is silent and the file can be opened again. An aio write that meets the event
# kills the node only after the command that polled it.
dead_session() {  # dead_session DESC CMD...: both tools on fresh damaged copies, same output
  local desc=$1 q=0 k=0 args=() c; shift
  for c in "$@"; do args+=(-c "$c"); done
  cp snap.qcow2 q.qcow2
  $DAMAGE q.qcow2 reftable-unaligned >/dev/null
  cp q.qcow2 k.qcow2
  say "reftable-unaligned, the node after the event: $desc"
  qemu-io "${args[@]}" q.qcow2 >q.out 2>q.err || q=$?
  "$KEEL" io "${args[@]}" k.qcow2 >k.out 2>k.err || k=$?
  [ "$q" = "$k" ] || fail "exit status: qemu-io $q, keel $k"
  same_text "stdout" "$(result_lines q.out)" "$(result_lines k.out)"
  same_text "stderr" "$(sed 's/^qemu-io: /keel: /' q.err)" "$(cat k.err)"
  cmp -s q.qcow2 k.qcow2 || fail "$desc: the images differ afterwards"
  pass
}
dead_session "synchronous commands" 'write -P 0xa5 2M 64k' 'read -P 0x22 0 4k' 'readv 0 4k' \
  'write -P 1 0 4k' 'writev 0 4k' 'write -z 0 4k' 'write -c 0 64k' 'write -b 0 4k' 'read -b 0 4k' \
  'discard 0 4k' 'alloc 0 4k' 'length' 'map' 'info' 'flush' 'truncate 8M' 'help length' 'open snap.qcow2'
dead_session "aio requests, reported at aio_flush" 'write -P 0xa5 2M 64k' 'aio_read 0 4k' \
  'aio_write -P 1 0 4k' 'length' 'aio_write -z 0 4k' 'aio_flush' 'read 0 4k'
dead_session "aio reported at sleep, at close; open again" 'write -P 0xa5 2M 64k' 'aio_read 0 4k' \
  'sleep 1' 'aio_read 0 8k' 'close' 'open -r snap.qcow2' 'read -P 0x22 0 4k' 'length'
dead_session "aio write meets the event" 'aio_write -P 0xa5 2M 64k' 'read -P 0x22 0 4k' 'read 0 4k'
say "reftable-unaligned: info before, and a read-only read after the corruption event, as QEMU's"
cp snap.qcow2 q.qcow2
$DAMAGE q.qcow2 reftable-unaligned >/dev/null
same_text "info of the damaged image" "$(qemu-img info q.qcow2 2>&1)" "$("$KEEL" info q.qcow2 2>&1)"
qemu-io -c 'write -P 0xa5 2M 64k' q.qcow2 >/dev/null 2>&1 || true
[ "$(qemu-img info --output=json q.qcow2 | grep -c '"corrupt": true')" = 1 ] || fail "qemu-io did not mark it corrupt"
same_text "json info of the corrupt image" "$(qemu-img info --output=json q.qcow2 2>&1)" \
  "$("$KEEL" info --output=json q.qcow2 2>&1)"
q=0 k=0
qemu-io -r -c 'read -P 0x22 0 64k' q.qcow2 >q.out 2>&1 || q=$?
"$KEEL" io -r -c 'read -P 0x22 0 64k' q.qcow2 >k.out 2>&1 || k=$?
[ "$q.$k" = 0.0 ] || fail "read-only read of the corrupt image: qemu-io $q, keel $k: $(cat k.out)"
same_text "read-only read" "$(result_lines q.out)" "$(result_lines k.out)"
q=0 k=0
qemu-io -c 'read 0 4k' q.qcow2 >q.out 2>&1 || q=$?
"$KEEL" io -c 'read 0 4k' q.qcow2 >k.out 2>&1 || k=$?
[ "$q" = "$k" ] || fail "read/write open of the corrupt image: qemu-io $q, keel $k"
same_text "read/write open refused" "$(sed 's/^qemu-io: //' q.out)" "$(sed 's/^keel: //' k.out)"
# Inactive L2 tables: QEMU checks them only with overlap-check=all; keel always does.
compare snap.qcow2 "refcount0 inactive-l2" 'write -P 0xa5 2M 64k' overlap-check=all
compare snap.qcow2 "l2point inactive-l2 0" 'write -P 0xa5 0 4k' overlap-check=all
# With a bitmap, QEMU also reports the bitmaps it could not store at close: compare the marking line.
compare bm.qcow2 "refcount0 bitmap-directory" 'write -P 0xa5 2M 64k' '' marking
compare bm.qcow2 "l2point bitmap-directory 0" 'write -P 0xa5 0 4k' '' marking
# The options: constant leaves L2 tables unchecked in both; a per-kind switch turns one back on.
compare snap.qcow2 "l2point refcount-table 0" 'write -P 0xa5 0 4k' overlap-check=constant
compare snap.qcow2 "l2point refcount-table 0" 'write -P 0xa5 0 4k' overlap-check=none,overlap-check.refcount-table=on

say "overlap-check=none: the write goes through in both (the damage QEMU allows)"
cp snap.qcow2 k.qcow2
$DAMAGE k.qcow2 l2point active-l1 0 >/dev/null
"$KEEL" io --image-opts -c 'write -P 0xa5 0 4k' driver=qcow2,file.filename=k.qcow2,overlap-check=none >k.out 2>&1 ||
  fail "overlap-check=none: keel refused: $(cat k.out)"
pass
rc=0; "$KEEL" io --image-opts -c 'read 0 4k' driver=qcow2,file.filename=k.qcow2,overlap-check=bogus >k.out 2>&1 || rc=$?
[ $rc = 1 ] && grep -q "overlap-check" k.out || fail "a bad overlap-check value: exit $rc: $(cat k.out)"
pass

say "keel check -r all repairs the refcount; the image is writable again"
cp snap.qcow2 k.qcow2
$DAMAGE k.qcow2 refcount0 refcount-block >/dev/null
"$KEEL" io -c 'write -P 0xa5 2M 64k' k.qcow2 >/dev/null 2>&1 && fail "damaged write succeeded"
"$KEEL" check -r all k.qcow2 >/dev/null 2>&1 || true
run_ok "write after repair" "$KEEL" io -c 'write -P 0xa5 2M 64k' k.qcow2
run_ok "qemu-img check after repair" qemu-img check k.qcow2
no_guest_data k.qcow2
finish
