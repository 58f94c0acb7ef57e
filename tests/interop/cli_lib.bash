# Shared helpers of the keel CLI interop tests (tests/interop/cli_*.sh); sourced, not a test.
# Each test: `source cli_lib.bash "$@"` gives KEEL (absolute), a private temp dir $T that is the
# working directory and is removed on exit, a time limit, and the helpers below. Every helper
# prints what it checks and exits non-zero with a clear message on the first mismatch.

KEEL=$(realpath "${1:?usage: $0 /path/to/keel}")
[ -x "$KEEL" ] || { echo "FAIL: $KEEL is not executable" >&2; exit 1; }
# One bound for the whole script: a hang is a failure, not a stuck ctest.
if [ -z "${KEEL_CLI_TEST_BOUNDED:-}" ]; then
  export KEEL_CLI_TEST_BOUNDED=1
  exec timeout -k 5 "${KEEL_CLI_TEST_TIMEOUT:-170}" bash "$0" "$@"
fi
export LC_ALL=C TZ=UTC
source "$(dirname "${BASH_SOURCE[0]}")/qemu_luks.bash"
source "$(dirname "${BASH_SOURCE[0]}")/proc_lib.bash"  # before the cd: the path may be relative
T=$(mktemp -d "/tmp/keel-$(basename "$0" .sh).XXXXXX")
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1

CHECKS=0
FAILURES=0
# Stops at the first mismatch; KEEL_CLI_KEEP_GOING=1 reports every mismatch and fails at the end.
fail() {
  echo "FAIL: $*" >&2
  [ -n "${KEEL_CLI_KEEP_GOING:-}" ] || exit 1
  FAILURES=$((FAILURES + 1))
}
say() { echo "== $*"; }
pass() { CHECKS=$((CHECKS + 1)); }
finish() {
  if [ "$FAILURES" -ne 0 ]; then
    echo "FAILED: $(basename "$0" .sh): $FAILURES mismatches, $CHECKS checks passed" >&2
    exit 1
  fi
  echo "PASS: $(basename "$0" .sh): $CHECKS checks"
}

# run_ok DESCRIPTION CMD...: CMD must exit 0 (its output is kept in $T/last.out/.err).
run_ok() {
  local what=$1 rc=0; shift
  "$@" >"$T/last.out" 2>"$T/last.err" || rc=$?
  if [ $rc -ne 0 ]; then
    echo "--- stdout:" >&2; cat "$T/last.out" >&2
    echo "--- stderr:" >&2; cat "$T/last.err" >&2
    fail "$what: '$*' exited $rc"
    return 0
  fi
  pass
}

# same_file DESCRIPTION A B: byte-identical files.
same_file() {
  cmp -s "$2" "$3" || { diff -u "$2" "$3" | head -40 >&2 || true; fail "$1: $2 and $3 differ"; }
  pass
}

# same_text DESCRIPTION EXPECTED ACTUAL (strings)
same_text() {
  [ "$2" == "$3" ] || {
    diff -u <(printf '%s\n' "$2") <(printf '%s\n' "$3") >&2 || true
    fail "$1"
  }
  pass
}

# qemu-io's timing line varies run to run; keep everything else.
normalize_io() { sed -E 's/^(.*, [0-9]+ ops;) .*$/\1 <timing>/'; }

# qcheck IMAGE: qemu-img check must find no errors and no leaks.
qcheck() {
  local out rc=0
  out=$(qemu-img check "$1" 2>&1) || rc=$?
  [ $rc -eq 0 ] || fail "qemu-img check $1 exited $rc: $out"
  grep -q "No errors were found on the image." <<<"$out" || fail "qemu-img check $1: $out"
  pass
}

# qcompare A B: qemu-img compare must say identical.
qcompare() {
  local out rc=0
  out=$(qemu-img compare "$@" 2>&1) || rc=$?
  [ $rc -eq 0 ] || fail "qemu-img compare $*: rc=$rc $out"
  pass
}

# raw_same_as_qemu IMAGE [convert args...]: keel convert -O raw == qemu-img convert -O raw.
raw_same_as_qemu() {
  local img=$1; shift
  rm -f "$T/q.raw" "$T/k.raw"
  run_ok "qemu-img convert $img" qemu-img convert -U "$@" -O raw "$img" "$T/q.raw"
  run_ok "keel convert $img" "$KEEL" convert -U "$@" -O raw "$img" "$T/k.raw"
  same_file "guest bytes of $img (keel convert vs qemu-img convert)" "$T/q.raw" "$T/k.raw"
}

# info_same_as_qemu IMAGE [info args...]: keel info --output=json prints what qemu-img does.
info_same_as_qemu() {
  local img=$1; shift
  qemu-img info -U --output=json "$@" "$img" >"$T/q.json" 2>&1 || fail "qemu-img info $img failed"
  "$KEEL" info -U --output=json "$@" "$img" >"$T/k.json" 2>&1 || {
    cat "$T/k.json" >&2
    fail "keel info $img failed"
  }
  same_file "info --output=json $* of $img" "$T/q.json" "$T/k.json"
  qemu-img info -U "$@" "$img" >"$T/q.txt" 2>&1
  "$KEEL" info -U "$@" "$img" >"$T/k.txt" 2>&1
  same_file "info (human) $* of $img" "$T/q.txt" "$T/k.txt"
}

# map_same_as_qemu IMAGE: keel map --output=json and human print what qemu-img map does
# (stdout and stderr compared separately; "qemu-img:" read as "keel:"), with the same exit code.
map_same_as_qemu() {
  local img=$1 fmt
  for fmt in json human; do
    local qrc=0 krc=0
    qemu-img map -U --output=$fmt "$img" >"$T/q.map" 2>"$T/q.map.err" || qrc=$?
    "$KEEL" map -U --output=$fmt "$img" >"$T/k.map" 2>"$T/k.map.err" || krc=$?
    sed -i 's/^qemu-img: /keel: /' "$T/q.map.err"
    [ $qrc -eq $krc ] || {
      cat "$T/k.map.err" >&2
      fail "map --output=$fmt $img: qemu-img exited $qrc, keel $krc"
    }
    same_file "map --output=$fmt of $img" "$T/q.map" "$T/k.map"
    same_file "map --output=$fmt of $img (stderr)" "$T/q.map.err" "$T/k.map.err"
  done
}

# The image shapes every test covers: NAME|qcow2 create options|size.
SHAPES=(
  "v2|compat=0.10|8388608"
  "v3|compat=1.1|8388608"
  "c512|cluster_size=512|8388608"
  "c4k|cluster_size=4k|8388608"
  "c64k|cluster_size=64k|8388608"
  "c2M|cluster_size=2M|33554432"
  "rc1|refcount_bits=1|8388608"
  "rc2|refcount_bits=2|8388608"
  "rc4|refcount_bits=4|8388608"
  "rc8|refcount_bits=8|8388608"
  "rc16|refcount_bits=16|8388608"
  "rc32|refcount_bits=32|8388608"
  "rc64|refcount_bits=64|8388608"
  "lazy|lazy_refcounts=on|8388608"
  "el2_64k|extended_l2=on,cluster_size=64k|8388608"
  "el2_128k|extended_l2=on,cluster_size=128k|8388608"
  "zstd|compression_type=zstd|8388608"
  "v2_c4k|compat=0.10,cluster_size=4k|8388608"
  "datafile|data_file=@.data|8388608"
  "datafile_raw|data_file=@.data,data_file_raw=on|8388608"
)

# shape_opts NAME OPTS: the options with '@' replaced by NAME (data file names). QEMU 7.2 opens
# a relative data file name relative to its working directory, so tests either run QEMU from the
# image's directory or pass an absolute NAME.
shape_opts() { echo "${2//@/$1}"; }

# A guest workload as qemu-io -c arguments (one per line) that fits in 8 MiB: aligned and
# unaligned writes, writes across cluster boundaries, zero writes with and without unmap,
# discards of whole and partial clusters, overwrites, the last bytes of the disk, and flushes.
workload() {
  local size=$1
  cat <<EOF
write -P 0x11 0 64k
write -P 0x22 100k 300k
write -P 0x33 1M 4k
write -P 0x34 1028k 1k
write -z 1030k 3k
write -P 0x44 2M 1M
write -z -u 2304k 256k
discard 2560k 256k
discard 2900k 10k
write -P 0x55 5119k 2k
write -f -P 0x66 6M 513
write -P 0x77 $((size - 65536)) 64k
write -z $((size - 1024)) 512
flush
write -P 0x88 64k 8k
writev -P 0x99 7M 4k 512 1k
EOF
}

# Verification reads for the workload above (qemu-io -P checks).
workload_checks() {
  local size=$1
  cat <<EOF
read -P 0x11 0 64k
read -P 0x22 100k 300k
read -P 0x33 1M 4k
read -P 0x34 1028k 1k
read -P 0 1030k 3k
read -P 0x44 2M 256k
read -P 0x55 5119k 2k
read -P 0x66 6M 513
read -P 0x77 $((size - 65536)) 64512
read -P 0 $((size - 1024)) 512
read -P 0x88 64k 8k
EOF
}

# as_c_args: turn lines on stdin into an array of -c arguments in the named array.
as_c_args() {
  local -n _c_args_out=$1
  _c_args_out=()
  local line
  while IFS= read -r line; do
    [ -n "$line" ] && _c_args_out+=(-c "$line")
  done
  return 0
}
