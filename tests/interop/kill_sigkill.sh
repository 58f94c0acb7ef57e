#!/usr/bin/env bash
# Proves Keel survives SIGKILL at random moments: `keel selftest kill-driver` runs journaled guest
# writes, FUA writes, write-zeroes, discards and flushes on a real qcow2 file and is killed with
# kill -9 after a random delay; after each kill `keel selftest kill-verify` checks every flushed
# write reads back and no sector holds foreign data (Keel's check before and after its open), and
# `qemu-img check` must find no corruption. KEEL_KILLS kills (default 200); KEEL_SEED to replay.
set -euo pipefail
KEEL=${1:?usage: kill_sigkill.sh /path/to/keel}
KILLS=${KEEL_KILLS:-200}
SEED=${KEEL_SEED:-$(( (RANDOM << 15) | RANDOM ))}
echo "kill_sigkill: $KILLS kills, seed $SEED (replay: KEEL_SEED=$SEED bash $0 $KEEL)"
dir=$(mktemp -d "${TMPDIR:-/tmp}/keel-kill-XXXXXX")
trap 'rm -rf "$dir"' EXIT
RANDOM=$SEED
fail=0 corrupt=0 lost=0 leaks=0
for i in $(seq 1 "$KILLS"); do
  img=$dir/k.qcow2 journal=$dir/journal
  rm -f "$img" "$journal"
  case $((i % 4)) in
    0) opts="cluster_size=65536" ;;
    1) opts="cluster_size=4096" ;;
    2) opts="cluster_size=65536,lazy_refcounts=on" ;;
    3) opts="cluster_size=512,refcount_bits=1" ;;
  esac
  qemu-img create -q -f qcow2 -o "$opts" "$img" 64M
  seed=$((SEED + i))
  "$KEEL" selftest kill-driver "$img" --journal "$journal" --seed "$seed" 2>"$dir/driver.err" &
  pid=$!
  # 5..400 ms: early kills land in the first allocations, late ones in overwrites and reuse.
  sleep "0.$(printf '%03d' $((5 + RANDOM % 396)))"
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  if [ -s "$dir/driver.err" ]; then
    echo "kill $i ($opts, seed $seed): driver reported errors before the kill:"; cat "$dir/driver.err"; fail=1
  fi
  dirty=$(qemu-img info --output=json "$img" | grep -c '"dirty-flag": true' || true)
  if [ "$dirty" = 0 ]; then
    # QEMU's view of the image exactly as the kill left it (a dirty lazy-refcounts image is
    # repaired by the next read-write open, so it is checked after kill-verify's open instead).
    rc=0; out=$(qemu-img check -f qcow2 "$img" 2>&1) || rc=$?
    if [ $rc -ne 0 ] && [ $rc -ne 3 ]; then
      echo "kill $i ($opts, seed $seed): qemu-img check on the killed image: exit $rc"; echo "$out"; corrupt=$((corrupt + 1)); fail=1
    fi
    [ $rc -eq 3 ] && leaks=$((leaks + 1))
  fi
  if ! out=$("$KEEL" selftest kill-verify "$img" --journal "$journal" 2>&1); then
    echo "kill $i ($opts, seed $seed): $out"; lost=$((lost + 1)); fail=1
  fi
  rc=0; out=$(qemu-img check -f qcow2 "$img" 2>&1) || rc=$?
  if [ $rc -ne 0 ] && [ $rc -ne 3 ]; then
    echo "kill $i ($opts, seed $seed): qemu-img check after keel reopened it: exit $rc"; echo "$out"; corrupt=$((corrupt + 1)); fail=1
  fi
  if [ $fail -ne 0 ]; then
    cp "$img" "${TMPDIR:-/tmp}/keel-kill-failed-$seed.qcow2" 2>/dev/null || true
    cp "$journal" "${TMPDIR:-/tmp}/keel-kill-failed-$seed.journal" 2>/dev/null || true
    echo "kept: ${TMPDIR:-/tmp}/keel-kill-failed-$seed.{qcow2,journal}"
    break
  fi
done
echo "kill_sigkill: $i kills, $corrupt corrupted, $lost with lost or foreign data, $leaks with leaks only (allowed)"
exit $fail
