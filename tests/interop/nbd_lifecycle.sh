#!/usr/bin/env bash
# Proves the life cycle of `keel serve`: SIGTERM and SIGINT with requests in flight answer them,
# exit 0 and leave a clean image (no dirty flag, data durable); without -t it exits after its
# last client; -s/--snapshot throws its writes away and leaves no file behind; the image is
# locked against QEMU while served; a client killed mid-request does no harm; TCP on loopback
# with -p 0; the pid file.
# Usage: bash nbd_lifecycle.sh /path/to/keel
set -euo pipefail
KEEL=$(realpath "${1:?usage: $0 /path/to/keel}")
PY=/usr/bin/python3
source "$(dirname "$(realpath "$0")")/nbd_lib.bash"
nbd_setup life
fail() {
  echo "FAIL: $*" >&2
  [ -s "$T/serve.log" ] && tail -40 "$T/serve.log" | sed 's/^/  serve.log: /' >&2
  exit 1
}
# serve_bg PIDFILE ARGS...: runs keel serve as a child of this shell (so `wait` gives its exit
# code) and returns once it listens (it writes the pid file after listening).
serve_bg() {
  local pidfile=$1; shift
  rm -f "$pidfile"
  "$KEEL" serve --pid-file "$pidfile" "$@" 2>>"$T/serve.log" &
  SPID=$!
  PIDS+=("$SPID")
  for _ in $(seq 300); do
    [ -s "$pidfile" ] && return 0
    kill -0 "$SPID" 2>/dev/null || fail "keel serve $* exited early"
    sleep 0.05
  done
  fail "keel serve $* did not start"
}
wait_rc() {  # wait_rc PID SECONDS: sets RC to the exit code of our child PID
  local pid=$1 secs=$2
  for _ in $(seq $((secs * 10))); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$pid" 2>/dev/null && fail "server $pid still running after ${secs}s"
  RC=0
  wait "$pid" || RC=$?
}
clean_image() {  # clean_image IMG: qemu-img check passes and the dirty flag is clear
  qemu-img check -q "$1" || fail "qemu-img check $1"
  qemu-img info --output=json "$1" | "$PY" -c \
    'import json,sys; sys.exit(1 if json.load(sys.stdin).get("dirty-flag") else 0)' ||
    fail "$1 is dirty"
}

# A raw-socket client: pipelines N writes of 1 MiB (pattern i), signals the server once they
# are sent, then collects every reply; all must succeed, then the server must close.
cat >"$T/inflight.py" <<'EOF'
import os, signal, socket, struct, sys, time
sock, pid, sig, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def rx(s, k):
    b = b""
    while len(b) < k:
        c = s.recv(k - len(b))
        if not c:
            raise EOFError(len(b))
        b += c
    return b
def opt(s, o, d):
    s.sendall(struct.pack(">QII", 0x49484156454F5054, o, len(d)) + d)
    while True:
        _, _, t, l = struct.unpack(">QIII", rx(s, 20)); rx(s, l)
        if t == 1 or t & 0x80000000:
            return t
s = socket.socket(socket.AF_UNIX); s.settimeout(30); s.connect(sock)
rx(s, 18); s.sendall(struct.pack(">I", 3))
assert opt(s, 8, b"") == 1
assert opt(s, 7, struct.pack(">IH", 0, 0)) == 1
for i in range(n):
    s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 1, i, i << 20, 1 << 20) + bytes([i + 1]) * (1 << 20))
time.sleep(0.3)  # let the server read them all
os.kill(pid, sig)
got = set()
for _ in range(n):
    magic, err, cookie = struct.unpack(">IIQ", rx(s, 16))
    assert magic == 0x67446698 and err == 0, (hex(magic), err)
    got.add(cookie)
assert got == set(range(n)), got
assert s.recv(1) == b"", "expected the server to close"
print("all %d replies received, then closed" % n)
EOF

IMG=$T/a.qcow2
qemu-img create -q -f qcow2 "$IMG" 64M

for sig in TERM INT; do
  echo "== SIG$sig with 32 writes in flight"
  serve_bg "$T/pid" -t -e 2 -k "$T/s.sock" -f qcow2 "$IMG"
  timeout 60 "$PY" "$T/inflight.py" "$T/s.sock" "$SPID" "$(kill -l "$sig")" 32 ||
    fail "in-flight client (SIG$sig)"
  wait_rc "$SPID" 30
  [ "$RC" = 0 ] || fail "exit code $RC after SIG$sig"
  [ ! -e "$T/pid" ] && [ ! -e "$T/s.sock" ] || fail "pid file or socket left behind"
  clean_image "$IMG"
  for i in 0 13 31; do
    qemu-io -f qcow2 -c "read -q -P $((i + 1)) $((i << 20)) 1M" "$IMG" | grep -q failed &&
      fail "write $i lost after SIG$sig"
  done
  qemu-img create -q -f qcow2 "$IMG" 64M
done

echo "== the image is locked while served"
serve_bg "$T/pid" -t -k "$T/s.sock" -f qcow2 "$IMG"
[ "$(cat "$T/pid")" = "$SPID" ] || fail "pid file holds $(cat "$T/pid"), not $SPID"
if qemu-io -f qcow2 -c 'read 0 512' "$IMG" >/dev/null 2>&1; then fail "qemu-io opened a served image"; fi
if timeout 10 "$KEEL" serve -k "$T/t.sock" "$IMG" 2>/dev/null; then fail "second server started"; fi
qemu-img info -U "$IMG" >/dev/null || fail "qemu-img info -U should work"

echo "== a client killed mid-request does no harm"
timeout 60 qemu-io -f raw -c 'write -P 0x42 0 32M' -c 'write -P 0x43 0 32M' -c 'write -P 0x44 0 32M' \
  "nbd+unix:///?socket=$T/s.sock" >/dev/null 2>&1 &
QPID=$!
sleep 0.3
kill -9 "$QPID" 2>/dev/null || true
wait "$QPID" 2>/dev/null || true
timeout 60 qemu-io -f raw -c 'write -P 0x45 1M 1M' -c 'read -P 0x45 1M 1M' "nbd+unix:///?socket=$T/s.sock" \
  >"$T/qio" 2>&1 || fail "server unusable after a client was killed: $(cat "$T/qio")"
grep -q failed "$T/qio" && fail "$(cat "$T/qio")"
kill -TERM "$SPID"
wait_rc "$SPID" 30
[ "$RC" = 0 ] || fail "exit code $RC"
clean_image "$IMG"

echo "== without -t the server exits after its last client"
serve_bg "$T/pid" -k "$T/s.sock" -f qcow2 "$IMG"
timeout 60 qemu-io -f raw -c 'write -P 0x46 2M 64k' "nbd+unix:///?socket=$T/s.sock" >/dev/null ||
  fail "qemu-io"
wait_rc "$SPID" 30
[ "$RC" = 0 ] || fail "exit code $RC"
clean_image "$IMG"
qemu-io -f qcow2 -c 'read -q -P 0x46 2M 64k' "$IMG" | grep -q failed && fail "write lost"

echo "== --snapshot throws the writes away"
sum_before=$(md5sum <"$IMG")
mkdir "$T/tmp"
TMPDIR=$T/tmp serve_bg "$T/pid" -s -k "$T/s.sock" -f qcow2 "$IMG"
ls "$T/tmp" | grep -q . || fail "no overlay in TMPDIR"
timeout 60 qemu-io -f raw -c 'write -P 0x99 0 1M' -c 'read -P 0x99 0 1M' -c 'read -P 0x46 2M 64k' \
  "nbd+unix:///?socket=$T/s.sock" >"$T/qio" 2>&1 || fail "qemu-io on the snapshot: $(cat "$T/qio")"
grep -q failed "$T/qio" && fail "snapshot reads: $(cat "$T/qio")"
wait_rc "$SPID" 30
[ "$RC" = 0 ] || fail "exit code $RC"
[ "$(md5sum <"$IMG")" = "$sum_before" ] || fail "--snapshot changed the image"
[ -z "$(ls "$T/tmp")" ] || fail "overlay left behind: $(ls "$T/tmp")"

echo "== TCP on 127.0.0.1 with -p 0"
: >"$T/serve.log.tcp"
"$KEEL" serve -t -p 0 -f qcow2 "$IMG" 2>"$T/serve.log.tcp" &
SPID=$!
PIDS+=("$SPID")
port=""
for _ in $(seq 100); do
  port=$(sed -n 's/.*listening on 127.0.0.1 port \([0-9]*\).*/\1/p' "$T/serve.log.tcp")
  [ -n "$port" ] && break
  sleep 0.05
done
[ -n "$port" ] || fail "no port logged: $(cat "$T/serve.log.tcp")"
timeout 60 nbdinfo --size "nbd://127.0.0.1:$port" | grep -qx $((64 << 20)) || fail "nbdinfo over TCP"
timeout 60 qemu-io -f raw -c 'read -P 0x46 2M 64k' "nbd://127.0.0.1:$port" | grep -q failed &&
  fail "qemu-io over TCP"
kill -INT "$SPID"
wait_rc "$SPID" 30
[ "$RC" = 0 ] || fail "exit code $RC"
clean_image "$IMG"

echo "== bad arguments are refused"
for args in "-k $T/x.sock -p 1234" "--discard=sometimes" "--detect-zeroes=unmap" "-e 0" "--cache=bogus"; do
  # shellcheck disable=SC2086
  if timeout 10 "$KEEL" serve $args "$IMG" 2>/dev/null; then fail "accepted: $args"; fi
done
echo PASS
