#!/usr/bin/env bash
# Proves Keel survives SIGKILL at random moments: `keel selftest kill-driver` runs journaled guest
# writes, FUA writes, write-zeroes, discards and flushes on a real qcow2 file and is killed with
# kill -9 after a random delay; after each kill `keel selftest kill-verify` checks every flushed
# write reads back and no sector holds foreign data (Keel's check before and after its open), and
# `qemu-img check` must find no corruption. KEEL_KILLS kills (default 200); KEEL_SEED to replay.
# KEEL_KILL_LUKS=1 (kill_sigkill_luks.sh): the images are LUKS-encrypted qcow2 made by qemu-img
# with the proof's passphrase; qemu-img check gets the key, and kill-verify --qemu also judges
# qemu-img's decryption of the killed image against the journal.
set -euo pipefail
KEEL=${1:?usage: kill_sigkill.sh /path/to/keel}
KILLS=${KEEL_KILLS:-200}
SEED=${KEEL_SEED:-$(( (RANDOM << 15) | RANDOM ))}
echo "kill_sigkill: $KILLS kills, seed $SEED (replay: ${KEEL_KILL_LUKS:+KEEL_KILL_LUKS=1 }KEEL_KILLS=$KILLS KEEL_SEED=$SEED bash $0 $KEEL)"
dir=$(mktemp -d "${TMPDIR:-/tmp}/keel-kill-XXXXXX")
trap 'rm -rf "$dir"' EXIT
LUKS=${KEEL_KILL_LUKS:-}
QSEC=() VERIFY=()
if [ -n "$LUKS" ]; then
  source "$(dirname "$(realpath "$0")")/qemu_luks.bash"
  QSEC=(--object secret,id=keelproof,data=keel-proof)
  VERIFY=(--qemu)
fi
# qimg FILE: the image argument of qemu-img (with the key for LUKS images).
qimg() { if [ -n "$LUKS" ]; then echo "--image-opts driver=qcow2,file.filename=$1,encrypt.key-secret=keelproof"; else echo "-f qcow2 $1"; fi; }
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
  if [ -n "$LUKS" ]; then
    # One image per option set (qemu-img's PBKDF2 timing is slow), copied for each kill.
    tmpl="$dir/tmpl-$((i % 4)).qcow2"
    [ -f "$tmpl" ] || qemu_img_create_luks -q -f qcow2 "${QSEC[@]}" \
      -o "$opts,encrypt.format=luks,encrypt.key-secret=keelproof,encrypt.iter-time=10" "$tmpl" 64M
    cp "$tmpl" "$img"
  else
    qemu-img create -q -f qcow2 -o "$opts" "$img" 64M
  fi
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
  dirty=$(qemu-img info --output=json -f qcow2 "$img" | grep -c '"dirty-flag": true' || true)
  if [ "$dirty" = 0 ]; then
    # QEMU's view of the image exactly as the kill left it (a dirty lazy-refcounts image is
    # repaired by the next read-write open, so it is checked after kill-verify's open instead).
    # shellcheck disable=SC2046
    rc=0; out=$(qemu-img check "${QSEC[@]}" $(qimg "$img") 2>&1) || rc=$?
    if [ $rc -ne 0 ] && [ $rc -ne 3 ]; then
      echo "kill $i ($opts, seed $seed): qemu-img check on the killed image: exit $rc"; echo "$out"; corrupt=$((corrupt + 1)); fail=1
    fi
    [ $rc -eq 3 ] && leaks=$((leaks + 1))
  fi
  if ! out=$("$KEEL" selftest kill-verify "$img" --journal "$journal" "${VERIFY[@]}" 2>&1); then
    echo "kill $i ($opts, seed $seed): $out"; lost=$((lost + 1)); fail=1
  fi
  # shellcheck disable=SC2046
  rc=0; out=$(qemu-img check "${QSEC[@]}" $(qimg "$img") 2>&1) || rc=$?
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
