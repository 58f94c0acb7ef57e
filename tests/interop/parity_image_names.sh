#!/usr/bin/env bash
# Proves every keel subcommand that qemu-img gives --image-opts / --object takes them, and QEMU's
# pseudo-filenames json:{...}, file:PATH and null-co://, as qemu-img 7.2 and qemu-io do: on twins
# (the same QEMU-made images in q/ and k/; qemu-img or qemu-io in q/, keel in k/) the output
# lines, exit code and the image afterwards are the same, errors included.
# Usage: bash parity_image_names.sh /path/to/keel
set -euo pipefail
HERE=$(dirname "$(realpath "$0")")
source "$HERE/cli_lib.bash"
source "$HERE/parity_lib.bash"

opts() { echo "driver=qcow2,file.filename=$1${2:+,$2}"; }
json() { echo "json:{\"driver\":\"qcow2\",\"file\":{\"driver\":\"file\",\"filename\":\"$1\"}${2:+,$2}}"; }

images() {
  qemu-img create -q -f qcow2 a.qcow2 4M
  qemu-io -c 'write -P 0x11 0 64k' -c 'write -z 1M 64k' -c 'write -P 0x22 3M 8k' a.qcow2
  cp a.qcow2 b.qcow2
  qemu-io -c 'write -P 0x33 2M 4k' b.qcow2
  qemu-img create -q -f qcow2 -b a.qcow2 -F qcow2 o.qcow2
  qemu-io -c 'write -P 0x44 64k 64k' o.qcow2
  qemu-img create -q -f raw r.raw 4M
}

say "info, map, check, measure, compare read json:, file:, --image-opts names"
twin_setup images
for name in "$(json a.qcow2)" "file:a.qcow2" "json:{\"file\":{\"filename\":\"a.qcow2\"}}" \
            "json:{\"driver\":\"qcow2\",\"file.filename\":\"a.qcow2\",\"cache-size\":1048576}"; do
  twin_run "info $name" info "$name"
  twin_run "info --output=json $name" info --output=json "$name"
  twin_run "map $name" map "$name"
  twin_run "map --output=json $name" map --output=json "$name"
  twin_run "check $name" check "$name"
  twin_run "measure $name" measure -O qcow2 "$name"
  twin_run "compare $name" compare "$name" b.qcow2
done
twin_run "info --backing-chain of a json: overlay" info --backing-chain "$(json o.qcow2)"
twin_run "info of a json: name with backing:null" info "$(json o.qcow2 '"backing":null')"
twin_run "info --image-opts" info --image-opts "$(opts a.qcow2)"
twin_run "info --image-opts, options" info --image-opts "$(opts a.qcow2 overlap-check=all,l2-cache-size=1M,file.locking=off)"
twin_run "map --image-opts" map --output=json --image-opts "$(opts o.qcow2)"
twin_run "check --image-opts" check --output=json --image-opts "$(opts a.qcow2)"
twin_run "measure --image-opts" measure -O qcow2 --image-opts "$(opts o.qcow2)"
twin_run "compare --image-opts" compare --image-opts "$(opts a.qcow2)" "$(opts b.qcow2)"
twin_run "compare -s --image-opts" compare -s --image-opts "$(opts a.qcow2)" "$(opts a.qcow2)"
twin_run "info null-co://" info null-co://
twin_run "info -f raw file:" info -f raw file:r.raw

say "the same errors"
twin_run "-f with --image-opts" info -f qcow2 --image-opts "$(opts a.qcow2)"
twin_run "unknown format option" info --image-opts "$(opts a.qcow2 bogus=1)"
twin_run "unknown json option" info "$(json a.qcow2 '"bogus":1')"
twin_run "unknown protocol option" info --image-opts "$(opts a.qcow2 file.bogus=1)"
twin_run "file as a node name" info --image-opts driver=qcow2,file=a.qcow2
twin_run "file as a node name (json)" info 'json:{"driver":"qcow2","file":"a.qcow2"}'
twin_run "no file" info 'json:{"driver":"qcow2"}'
twin_run "not an object" info 'json:[1]'
twin_run "missing file, json:" info "$(json nope.qcow2)"
twin_run "missing file, file:" info file:nope
twin_run "missing file, --image-opts" map --image-opts "$(opts nope.qcow2)"
twin_run "bad cache-size" info "$(json a.qcow2 '"cache-size":"abc"')"
twin_run "bad overlap-check" info --image-opts "$(opts a.qcow2 overlap-check=bogus)"
twin_run "not qcow2" info --image-opts "$(opts r.raw)"
twin_run "not qcow2 (plain name)" info -f qcow2 r.raw
qrc=0; krc=0
qemu-img info 'json:{bad' >/dev/null 2>"$T/q.err" || qrc=$?
"$KEEL" info 'json:{bad' >/dev/null 2>"$T/k.err" || krc=$?
[ $qrc -eq 1 ] && [ $krc -eq 1 ] || fail "bad JSON: qemu-img exited $qrc, keel $krc"
grep -q "^keel: Could not open 'json:{bad': Could not parse the JSON options: JSON parse error" "$T/k.err" ||
  fail "bad JSON: $(cat "$T/k.err")"
pass

say "writing subcommands: same image afterwards"
twin_setup images
twin_run "resize --image-opts" resize --image-opts "$(opts a.qcow2)" 8M
same_info "resize --image-opts" a.qcow2
twin_run "resize json:" resize "$(json b.qcow2)" 6M
same_info "resize json:" b.qcow2
twin_run "snapshot -c --image-opts" snapshot -c s1 --image-opts "$(opts a.qcow2)"
TWIN_NORM=snaptable_norm twin_run "snapshot -l json:" snapshot -l "$(json a.qcow2)"
TWIN_NORM=snaptable_norm twin_run "snapshot -l --image-opts" snapshot -l --image-opts "$(opts a.qcow2)"
same_snapshots "snapshot -c --image-opts" a.qcow2
twin_run "amend --image-opts" amend -o lazy_refcounts=on --image-opts "$(opts b.qcow2)"
same_info "amend --image-opts" b.qcow2
twin_run "commit --image-opts" commit --image-opts "$(opts o.qcow2)"
same_content "commit --image-opts: the base" a.qcow2
same_map "commit --image-opts: the overlay" o.qcow2
twin_setup images
twin_run "commit json:" commit -d "$(json o.qcow2)"
same_content "commit json:: the base" a.qcow2
twin_run "rebase -u --image-opts" rebase -u -b '' --image-opts "$(opts o.qcow2)"
same_info "rebase -u --image-opts" o.qcow2
twin_setup images
twin_run "rebase json:" rebase -b b.qcow2 -F qcow2 "$(json o.qcow2)"
same_content "rebase json:" o.qcow2
same_layer_map "rebase json:: what the overlay stores" o.qcow2
twin_run "create with a json: backing" create -f qcow2 -b "$(json a.qcow2)" -F qcow2 n.qcow2
same_info "create with a json: backing" n.qcow2
twin_run "dd --image-opts" dd --image-opts if="$(opts a.qcow2)" of=d.raw bs=64k count=8
same_content "dd --image-opts" d.raw
twin_rc "bench --image-opts" bench -c 4 --image-opts "$(opts a.qcow2)"
twin_rc "bitmap --image-opts" bitmap --add --image-opts "$(opts a.qcow2)" bm0
same_info "bitmap --image-opts" a.qcow2

say "keel io / qemu-io"
twin_setup images
io_twin "io --image-opts" --image-opts -c 'read -P 0x11 0 64k' "$(opts a.qcow2)"
io_twin "io json:" -c 'read -P 0x44 64k 64k' -c 'write -P 0x55 0 4k' "$(json o.qcow2)"
same_content "io json: write" o.qcow2
io_twin "io file:" -c 'read -P 0x22 3M 8k' file:a.qcow2
io_twin "io open json:" -c "open $(json a.qcow2)" -c 'read -P 0x11 0 4k'
io_twin "io --image-opts with -f" -f qcow2 --image-opts -c 'read 0 1' "$(opts a.qcow2)"
io_twin "io --image-opts, missing file" --image-opts -c 'read 0 1' "$(opts nope)"
io_twin "io json:, missing file" -c 'read 0 1' "$(json nope)"
io_twin "io --image-opts, unknown option" --image-opts -c 'read 0 1' "$(opts a.qcow2 foo=1)"
io_twin "io null-co:// writes" -f raw -c 'write -P 0x66 0 64k' -c 'flush' null-co://

say "--object secret with --image-opts (LUKS)"
# One LUKS image (its header is random), copied into q/ and k/.
qemu_img_create_luks -q -f qcow2 --object secret,id=s0,data=pw \
  -o encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10 "$T/e.qcow2" 2M || fail "LUKS create"
qemu-io --object secret,id=s0,data=pw --image-opts -c 'write -P 0x77 0 64k' "$(opts "$T/e.qcow2" encrypt.key-secret=s0)" >/dev/null
luks() { cp "$T/e.qcow2" e.qcow2; }
twin_setup luks
SEC=(--object secret,id=s0,data=pw)
twin_run "map of LUKS, --object + --image-opts" map --output=json "${SEC[@]}" --image-opts "$(opts e.qcow2 encrypt.key-secret=s0)"
twin_run "compare of LUKS, json: + --object" compare "${SEC[@]}" "$(json e.qcow2 '"encrypt.key-secret":"s0"')" "$(json e.qcow2 '"encrypt.key-secret":"s0"')"
twin_run "LUKS with a wrong secret id" compare "${SEC[@]}" "$(json e.qcow2 '"encrypt.key-secret":"nope"')" "$(json e.qcow2 '"encrypt.key-secret":"s0"')"
twin_run "resize LUKS --image-opts" resize "${SEC[@]}" --image-opts "$(opts e.qcow2 encrypt.key-secret=s0)" 4M
same_info "resize LUKS" e.qcow2

finish
