# Shared helpers of the qemu-img parity tests (tests/interop/parity_*.sh); sourced after
# cli_lib.bash, not a test itself.
#
# The tests work on twins: the same setup function runs in $T/q and $T/k (so both start from
# byte-identical images made by qemu-img and qemu-io), then qemu-img runs a subcommand in q/ and
# keel the same subcommand with the same arguments in k/. The exit status, stdout and stderr
# must match (with "keel" read for "qemu-img"), and the images keel changed are then checked
# with QEMU's own tools against the ones qemu-img changed.

mkdir -p "$T/q" "$T/k"
# A time limit (TERM) or ^C still removes $T: exit through cli_lib's EXIT trap.
trap 'exit 143' TERM INT

# twin_setup FN: fresh q/ and k/ directories, FN run in each (its output is discarded).
twin_setup() {
  local fn=$1 d
  for d in q k; do
    rm -rf "${T:?}/$d"
    mkdir "$T/$d"
    (cd "$T/$d" && "$fn") >/dev/null 2>"$T/setup.err" || {
      cat "$T/setup.err" >&2
      fail "setup $fn in $d/ failed"
    }
  done
}

# Reads qemu-img's messages as keel's.
as_keel() { sed -e 's/^qemu-img: /keel: /' -e "s/'qemu-img --help'/'keel --help'/"; }

# twin_run DESC SUBCOMMAND ARGS...: qemu-img SUBCOMMAND ARGS in q/, keel in k/; the exit status,
# stdout and stderr must be the same. The outputs stay in $T/{q,k}.{out,err}. If TWIN_NORM names
# a filter function, both stdouts go through it first.
twin_run() {
  local desc=$1 sub=$2; shift 2
  local qrc=0 krc=0
  (cd "$T/q" && qemu-img "$sub" "$@") >"$T/q.out" 2>"$T/q.err.raw" || qrc=$?
  (cd "$T/k" && "$KEEL" "$sub" "$@") >"$T/k.out" 2>"$T/k.err" || krc=$?
  as_keel <"$T/q.err.raw" >"$T/q.err"
  cp "$T/k.out" "$T/k.out.raw"
  if [ -n "${TWIN_NORM:-}" ]; then
    "$TWIN_NORM" <"$T/q.out" >"$T/q.out.n" && mv "$T/q.out.n" "$T/q.out"
    "$TWIN_NORM" <"$T/k.out" >"$T/k.out.n" && mv "$T/k.out.n" "$T/k.out"
  fi
  [ $qrc -eq $krc ] || {
    echo "--- qemu-img $sub $*:" >&2; cat "$T/q.out" "$T/q.err" >&2
    echo "--- keel $sub $*:" >&2; cat "$T/k.out" "$T/k.err" >&2
    fail "$desc: qemu-img $sub exited $qrc, keel $krc"
  }
  same_file "$desc: stdout of '$sub $*'" "$T/q.out" "$T/k.out"
  same_file "$desc: stderr of '$sub $*'" "$T/q.err" "$T/k.err"
}

# twin_rc DESC SUBCOMMAND ARGS...: like twin_run, but only the exit status must match (for
# messages that embed texts keel words differently, e.g. the reason an open failed).
twin_rc() {
  local desc=$1 sub=$2; shift 2
  local qrc=0 krc=0
  (cd "$T/q" && qemu-img "$sub" "$@") >"$T/q.out" 2>"$T/q.err" || qrc=$?
  (cd "$T/k" && "$KEEL" "$sub" "$@") >"$T/k.out" 2>"$T/k.err" || krc=$?
  [ $qrc -eq $krc ] || {
    cat "$T/q.err" "$T/k.err" >&2
    fail "$desc: qemu-img $sub exited $qrc, keel $krc"
  }
  pass
}

# both_do CMD...: runs CMD (a QEMU tool) in q/ and in k/, e.g. to write the same data twice.
both_do() {
  local d
  for d in q k; do
    (cd "$T/$d" && "$@") >/dev/null 2>"$T/both.err" || {
      cat "$T/both.err" >&2
      fail "'$*' failed in $d/"
    }
  done
  pass
}

# info_norm IMAGE: qemu-img info --output=json without what depends on timing or on where
# clusters landed: actual-size and the snapshot dates.
info_norm() {
  qemu-img info -U --output=json "$@" | grep -v -E '"(actual-size|date-sec|date-nsec)":'
}

# snaptable_norm: a snapshot table (stdin) with the DATE column blanked.
snaptable_norm() {
  sed -E 's/ [0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}/ <date>/'
}

# map_norm IMAGE: qemu-img map --output=json without the host offsets (they depend on where
# clusters landed) and without "zero" for allocated data (whether the host file has a hole
# there, not what the image says).
map_norm() {
  qemu-img map -U --output=json "$1" | python3 -c '
import json, sys
out = []
for e in json.load(sys.stdin):
    e.pop("offset", None)
    if e["data"]:
        e.pop("zero", None)
    key = {k: v for k, v in e.items() if k not in ("start", "length")}
    if out and out[-1][1] == key and out[-1][0]["start"] + out[-1][0]["length"] == e["start"]:
        out[-1][0]["length"] += e["length"]
    else:
        out.append((e, key))
for e, _ in out:
    print(json.dumps(e, sort_keys=True))
'
}

# same_map DESC IMAGE: qemu-img map of q/IMAGE and k/IMAGE agree (normalized): the same ranges
# are allocated, zero, or read from the same layer of the chain.
same_map() {
  (cd "$T/q" && map_norm "$2") >"$T/q.map" 2>&1 || fail "$1: qemu-img map q/$2 failed"
  (cd "$T/k" && map_norm "$2") >"$T/k.map" 2>&1 || fail "$1: qemu-img map k/$2 failed"
  same_file "$1: qemu-img map --output=json of $2" "$T/q.map" "$T/k.map"
}

# same_layer_map DESC IMAGE: like same_map, for the qcow2 IMAGE alone (its backing file not
# opened): what the image itself stores.
same_layer_map() {
  local alone="json:{\"driver\":\"qcow2\",\"file\":{\"driver\":\"file\",\"filename\":\"$2\"},\"backing\":null}"
  (cd "$T/q" && map_norm "$alone") >"$T/q.map" 2>&1 || fail "$1: qemu-img map q/$2 failed"
  (cd "$T/k" && map_norm "$alone") >"$T/k.map" 2>&1 || fail "$1: qemu-img map k/$2 failed"
  same_file "$1: qemu-img map --output=json of $2 alone" "$T/q.map" "$T/k.map"
}

# snaplist_norm IMAGE: qemu-img snapshot -l, normalized by snaptable_norm.
snaplist_norm() { qemu-img snapshot -U -l "$1" | snaptable_norm; }

# same_info DESC IMAGE [info args]: qemu-img info of q/IMAGE and k/IMAGE agree (normalized).
same_info() {
  local desc=$1 img=$2; shift 2
  (cd "$T/q" && info_norm "$@" "$img") >"$T/q.info" 2>&1 || fail "$desc: qemu-img info q/$img failed"
  (cd "$T/k" && info_norm "$@" "$img") >"$T/k.info" 2>&1 || fail "$desc: qemu-img info k/$img failed"
  same_file "$desc: qemu-img info --output=json of $img" "$T/q.info" "$T/k.info"
}

# same_snapshots DESC IMAGE: qemu-img snapshot -l of q/IMAGE and k/IMAGE agree (normalized).
same_snapshots() {
  (cd "$T/q" && snaplist_norm "$2") >"$T/q.snap" 2>&1 || fail "$1: qemu-img snapshot -l q/$2 failed"
  (cd "$T/k" && snaplist_norm "$2") >"$T/k.snap" 2>&1 || fail "$1: qemu-img snapshot -l k/$2 failed"
  same_file "$1: qemu-img snapshot -l of $2" "$T/q.snap" "$T/k.snap"
}

# same_content DESC IMAGE [OTHER]: qemu-img compare finds q/IMAGE and k/OTHER (default IMAGE)
# identical.
same_content() {
  local out rc=0
  out=$(qemu-img compare -U "$T/q/$2" "$T/k/${3:-$2}" 2>&1) || rc=$?
  [ $rc -eq 0 ] || fail "$1: qemu-img compare q/$2 k/${3:-$2}: rc=$rc $out"
  pass
}

# clean DESC IMAGE: qemu-img check finds no errors and no leaks in k/IMAGE.
clean() {
  local out rc=0
  out=$(cd "$T/k" && qemu-img check -U "$2" 2>&1) || rc=$?
  [ $rc -eq 0 ] && grep -q "No errors were found on the image." <<<"$out" ||
    fail "$1: qemu-img check k/$2 exited $rc: $out"
  pass
}

# same_check_rc DESC IMAGE: qemu-img check exits the same way on q/IMAGE and k/IMAGE.
same_check_rc() {
  local qrc=0 krc=0
  (cd "$T/q" && qemu-img check -U "$2") >/dev/null 2>&1 || qrc=$?
  (cd "$T/k" && qemu-img check -U "$2") >"$T/k.check" 2>&1 || krc=$?
  [ $qrc -eq $krc ] || { cat "$T/k.check" >&2; fail "$1: qemu-img check $2: q/ exited $qrc, k/ $krc"; }
  pass
}

# reads_pattern DESC IMAGE PATTERN OFFSET LENGTH: qemu-io reads PATTERN back from k/IMAGE.
reads_pattern() {
  local out
  out=$(cd "$T/k" && qemu-io -r -U -c "read -P $3 $4 $5" "$2" 2>&1) || fail "$1: qemu-io read k/$2: $out"
  ! grep -q -i "fail\|error" <<<"$out" || fail "$1: qemu-io read -P $3 $4 $5 on k/$2: $out"
  pass
}

# progress_norm: output (stdin) without qemu-img's progress lines ("    (NN.NN/100%)\r"), whose
# number of steps depends on how the work was split.
progress_norm() { sed -E 's/ *\([0-9]+\.[0-9]+\/100%\)\r?//g' | sed '/^$/d'; }

# twin_run_progress DESC SUBCOMMAND ARGS...: twin_run for a command given -p. The progress
# lines are left out of the comparison; keel must have printed the final "(100.00/100%)".
twin_run_progress() {
  local saved=${TWIN_NORM:-}
  TWIN_NORM=progress_norm
  twin_run "$@"
  TWIN_NORM=$saved
  grep -q "(100.00/100%)" "$T/k.out.raw" || fail "$1: keel printed no final progress line"
  pass
}

# io_twin DESC ARGS...: qemu-io ARGS in q/, keel io ARGS in k/: same exit code, stdout (timings
# left out) and stderr (with "keel" for "qemu-io"); IO_STDERR=0 leaves stderr out.
io_twin() {
  local desc=$1; shift
  local qrc=0 krc=0
  (cd "$T/q" && qemu-io "$@") >"$T/q.io" 2>"$T/q.io.err" || qrc=$?
  (cd "$T/k" && "$KEEL" io "$@") >"$T/k.io" 2>"$T/k.io.err" || krc=$?
  [ $qrc -eq $krc ] || { cat "$T/q.io" "$T/q.io.err" "$T/k.io" "$T/k.io.err" >&2; fail "$desc: qemu-io exited $qrc, keel io $krc"; }
  normalize_io <"$T/q.io" >"$T/q.io.n"
  normalize_io <"$T/k.io" >"$T/k.io.n"
  same_file "$desc: stdout" "$T/q.io.n" "$T/k.io.n"
  if [ "${IO_STDERR:-1}" != 0 ]; then
    sed -i 's/^qemu-io: /keel: /' "$T/q.io.err"
    same_file "$desc: stderr" "$T/q.io.err" "$T/k.io.err"
  fi
}

# dirty_map DIR IMAGE BITMAP: the bitmap as qemu-nbd exports it (nbdinfo --map).
DIRTY_MAP_N=0
dirty_map() {
  # A socket path of its own per call, and the server stopped and gone before the next one
  # starts: qemu-nbd unlinks its socket path as it exits, whoever's file is there by then.
  DIRTY_MAP_N=$((DIRTY_MAP_N + 1))
  local sock="$T/nbd.$$.$DIRTY_MAP_N.sock" pid out rc=0
  rm -f "$sock" "$sock.pid"
  # --fork returns once the server accepts (the socket file exists from bind(), before listen()).
  (cd "$T/$1" && timeout 60 qemu-nbd -r -f qcow2 -B "$3" -k "$sock" --fork --pid-file "$sock.pid" "$2") \
    2>"$T/nbd.err" || { cat "$T/nbd.err" >&2; return 1; }
  pid=$(cat "$sock.pid")
  out=$(nbdinfo --map="qemu:dirty-bitmap:$3" "nbd+unix:///?socket=$sock" 2>&1) || rc=$?
  stop_pid "$pid" || { echo "qemu-nbd $pid did not exit after SIGTERM" >&2; return 1; }
  [ $rc -eq 0 ] || { cat "$T/nbd.err" >&2; echo "$out" >&2; return 1; }
  echo "$out"
}

# same_bits DESC IMAGE BITMAP...: QEMU exports the same dirty bits from q/IMAGE and k/IMAGE.
same_bits() {
  local desc=$1 img=$2 b; shift 2
  for b in "$@"; do
    dirty_map q "$img" "$b" >"$T/q.map" || fail "$desc: qemu-nbd -B $b on q/$img failed"
    dirty_map k "$img" "$b" >"$T/k.map" || fail "$desc: qemu-nbd -B $b on k/$img failed"
    same_file "$desc: dirty bits of $b" "$T/q.map" "$T/k.map"
  done
}
