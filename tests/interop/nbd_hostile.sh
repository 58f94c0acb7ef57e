#!/usr/bin/env bash
# Proves `keel serve` survives hostile and broken clients (raw sockets from /usr/bin/python3):
# garbage, bad magics and flags, oversized and unknown options, requests past the end or over
# 32 MiB, writes to a read-only export, half requests then close or stall, a stalled handshake,
# a client that floods reads and never reads the replies. Each gets the spec's error or a
# disconnect, the events are logged, memory stays bounded, and other clients keep being served.
# Usage: bash nbd_hostile.sh /path/to/keel
set -euo pipefail
KEEL=$(realpath "${1:?usage: $0 /path/to/keel}")
PY=/usr/bin/python3
source "$(dirname "$(realpath "$0")")/nbd_lib.bash"
nbd_setup hostile
fail() {
  echo "FAIL: $*" >&2
  [ -s "$T/serve.log" ] && tail -60 "$T/serve.log" | sed 's/^/  serve.log: /' >&2
  exit 1
}
start_server() {  # start_server SOCKET ARGS...
  local sock=$1; shift
  timeout 30 "$KEEL" serve --fork --pid-file "$sock.pid" -k "$sock" "$@" 2>>"$T/serve.log" ||
    fail "keel serve $* did not start"
  PIDS+=("$(cat "$sock.pid")")
}
alive() { kill -0 "$(cat "$1.pid")" 2>/dev/null || fail "server on $1 died"; }

IMG=$T/a.qcow2
qemu-img create -q -f qcow2 "$IMG" 64M
RO=$T/ro.qcow2
qemu-img create -q -f qcow2 "$RO" 16M
S=$T/s.sock
R=$T/r.sock
start_server "$S" -t -e 16 --handshake-limit 2 -f qcow2 "$IMG"
start_server "$R" -t -e 4 -r -f qcow2 "$RO"

cat >"$T/hostile.py" <<'EOF'
import os, random, socket, struct, sys, time

SOCK, RO_SOCK, PIDFILE = sys.argv[1], sys.argv[2], sys.argv[3]
NBDMAGIC, IHAVEOPT, REPLY_MAGIC = 0x4e42444d41474943, 0x49484156454F5054, 0x3e889045565a9
REQ_MAGIC, SIMPLE_MAGIC, CHUNK_MAGIC = 0x25609513, 0x67446698, 0x668e33ef
OPT_GO, OPT_SR, OPT_SET_META, OPT_STARTTLS = 7, 8, 10, 5
REP_ACK, ERR_UNSUP, ERR_POLICY, ERR_TOO_BIG = 1, 0x80000001, 0x80000002, 0x80000009
CMD_READ, CMD_WRITE, CMD_DISC, CMD_TRIM, CMD_WZ, CMD_BS = 0, 1, 2, 4, 6, 7
EPERM, EINVAL, ENOSPC = 1, 22, 28
failures = []
T0 = time.time()

def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what + " [%.1fs]" % (time.time() - T0), flush=True)
    if not cond:
        failures.append(what)

def connect(path=SOCK):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    return s

def recv_exact(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError("closed after %d of %d bytes" % (len(b), n))
        b += c
    return b

def closed_by_server(s, timeout=10):
    """True once the server closes the connection (reading and dropping what it sends)."""
    s.settimeout(timeout)
    try:
        while True:
            if not s.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False

def greeting(s):
    g = recv_exact(s, 18)
    magic, opt, flags = struct.unpack(">QQH", g)
    return magic == NBDMAGIC and opt == IHAVEOPT, flags

def option(s, opt, data):
    s.sendall(struct.pack(">QII", IHAVEOPT, opt, len(data)) + data)
    replies = []
    while True:
        magic, o, typ, ln = struct.unpack(">QIII", recv_exact(s, 20))
        assert magic == REPLY_MAGIC, hex(magic)
        replies.append((typ, recv_exact(s, ln)))
        if typ == REP_ACK or typ & 0x80000000:
            return replies

def go_data(name=b""):
    return struct.pack(">I", len(name)) + name + struct.pack(">H", 0)

def handshake(path=SOCK, meta=True):
    s = connect(path)
    greeting(s)
    s.sendall(struct.pack(">I", 3))
    assert option(s, OPT_SR, b"")[-1][0] == REP_ACK
    if meta:
        q = b"base:allocation"
        d = struct.pack(">I", 0) + struct.pack(">I", 1) + struct.pack(">I", len(q)) + q
        assert option(s, OPT_SET_META, d)[-1][0] == REP_ACK
    assert option(s, OPT_GO, go_data())[-1][0] == REP_ACK
    return s

cookie = [0]
def request(s, typ, off, ln, flags=0, payload=b""):
    cookie[0] += 1
    s.sendall(struct.pack(">IHHQQI", REQ_MAGIC, flags, typ, cookie[0], off, ln) + payload)
    return cookie[0]

def reply(s):
    """Reads one complete reply; returns (cookie, error, data bytes received)."""
    err, got = 0, 0
    while True:
        magic = struct.unpack(">I", recv_exact(s, 4))[0]
        if magic == SIMPLE_MAGIC:
            e, c = struct.unpack(">IQ", recv_exact(s, 12))
            return c, e, 0
        assert magic == CHUNK_MAGIC, hex(magic)
        flags, typ, c, ln = struct.unpack(">HHQI", recv_exact(s, 16))
        payload = recv_exact(s, ln)
        if typ & 0x8000 and not err:
            err = struct.unpack(">I", payload[:4])[0]
        if typ == 1:
            got += ln - 8
        if flags & 1:
            return c, err, got

def roundtrip(s, typ, off, ln, flags=0, payload=b""):
    c = request(s, typ, off, ln, flags, payload)
    rc, err, got = reply(s)
    assert rc == c, (rc, c)
    return err, got

def served():
    s = handshake()
    data = bytes(random.getrandbits(8) for _ in range(4096))
    e1, _ = roundtrip(s, CMD_WRITE, 8 << 20, 4096, payload=data)
    e2, got = roundtrip(s, CMD_READ, 8 << 20, 4096)
    request(s, CMD_DISC, 0, 0)
    s.close()
    return e1 == 0 and e2 == 0 and got == 4096

def rss_kib():
    pid = open(PIDFILE).read().strip()
    for line in open("/proc/%s/status" % pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0

random.seed(int(os.environ.get("KEEL_SEED", "1")))
print("seed", os.environ.get("KEEL_SEED", "1"))

# A client that stays connected through everything below and must keep working.
steady = handshake()

# --- handshake phase ---
s = connect()
ok, flags = greeting(s)
check(ok and flags == 3, "greeting has both magics and FIXED_NEWSTYLE|NO_ZEROES")
s.sendall(os.urandom(65536))
check(closed_by_server(s), "garbage instead of client flags: disconnected")

s = connect(); greeting(s); s.sendall(struct.pack(">I", 0xffffffff))
check(closed_by_server(s), "unknown client flags: disconnected")

s = connect(); greeting(s); s.sendall(struct.pack(">I", 3) + b"NOTMAGIC" + os.urandom(200))
check(closed_by_server(s), "bad option magic: disconnected")

s = connect(); greeting(s); s.sendall(struct.pack(">I", 3))
r = option(s, OPT_GO, b"\0" * (1 << 20))
check(r[-1][0] == ERR_TOO_BIG, "1 MiB option: ERR_TOO_BIG")
r = option(s, 0x1234, b"whatever")
check(r[-1][0] == ERR_UNSUP, "unknown option: ERR_UNSUP")
r = option(s, OPT_STARTTLS, b"")
check(r[-1][0] == ERR_POLICY, "STARTTLS without TLS: ERR_POLICY")
r = option(s, OPT_GO, struct.pack(">I", 1 << 30))
check(r[-1][0] & 0x80000000 != 0, "GO with a name length past the option: error")
r = option(s, OPT_GO, go_data())
check(r[-1][0] == REP_ACK, "haggling goes on after errors: GO acked")
s.close()

s = connect(); greeting(s); s.sendall(struct.pack(">I", 3))
s.sendall(struct.pack(">QII", IHAVEOPT, OPT_GO, 0xffffffff) + b"x" * 1000)
s.close()
check(True, "option announcing 4 GiB, then close")

s = connect(); greeting(s)
t0 = time.time()
check(closed_by_server(s, 15) and time.time() - t0 < 10, "silent client: cut at the handshake limit")

# --- transmission phase ---
s = handshake()
check(roundtrip(s, CMD_READ, 64 << 20, 1)[0] == EINVAL, "read past EOF: EINVAL")
check(roundtrip(s, CMD_READ, (1 << 64) - 512, 1024)[0] == EINVAL, "read at 2^64-512 (overflow): EINVAL")
check(roundtrip(s, CMD_WRITE, (64 << 20) - 100, 200, payload=b"z" * 200)[0] == ENOSPC, "write past EOF: ENOSPC")
check(roundtrip(s, CMD_WZ, 64 << 20, 4096)[0] == ENOSPC, "write zeroes past EOF: ENOSPC")
check(roundtrip(s, CMD_TRIM, 64 << 20, 4096)[0] == EINVAL, "trim past EOF: EINVAL")
check(roundtrip(s, CMD_READ, 0, (32 << 20) + 1)[0] == EINVAL, "read over 32 MiB: EINVAL")
big = (33 << 20)
check(roundtrip(s, CMD_WRITE, 0, big, payload=b"\x01" * big)[0] == EINVAL, "33 MiB write: EINVAL, payload skipped")
check(roundtrip(s, 42, 0, 0)[0] == EINVAL, "unknown command: EINVAL")
check(roundtrip(s, CMD_READ, 0, 512, flags=0x8000)[0] == EINVAL, "unknown flag: EINVAL")
check(roundtrip(s, CMD_WRITE, 0, 512, flags=4, payload=b"\0" * 512)[0] == EINVAL, "DF on a write: EINVAL")
e, got = roundtrip(s, CMD_READ, 0, 4096)
check(e == 0, "the connection still works after all those errors")
s.sendall(b"\x99" * 28)
check(closed_by_server(s), "bad request magic: disconnected")

s = handshake(meta=False)
check(roundtrip(s, CMD_BS, 0, 4096)[0] == EINVAL, "block status without a meta context: EINVAL")
s.close()

s = handshake()
s.sendall(struct.pack(">IHHQQI", REQ_MAGIC, 0, CMD_WRITE, 1, 0, 65536)[:17])
s.close()
s = handshake()
s.sendall(struct.pack(">IHHQQI", REQ_MAGIC, 0, CMD_WRITE, 1, 0, 65536) + b"y" * 3000)
s.close()
check(True, "half a header / half a payload, then close")
stalled = handshake()
stalled.sendall(struct.pack(">IHHQQI", REQ_MAGIC, 0, CMD_WRITE, 1, 0, 65536) + b"y" * 3000)
check(served(), "others are served while a client stalls mid-request")

ro = handshake(RO_SOCK)
check(roundtrip(ro, CMD_WRITE, 0, 512, payload=b"w" * 512)[0] == EPERM, "write to read-only export: EPERM")
check(roundtrip(ro, CMD_WZ, 0, 512)[0] == EPERM, "write zeroes to read-only export: EPERM")
check(roundtrip(ro, CMD_TRIM, 0, 512)[0] == EPERM, "trim on read-only export: EPERM")
check(roundtrip(ro, CMD_READ, 0, 512)[0] == 0, "read-only export still reads")
ro.close()

# Fill 32 MiB with data, then flood 32 MiB reads and never read a reply; then vanish.
s = handshake()
chunk = os.urandom(1 << 20)
fill_ok = all(roundtrip(s, CMD_WRITE, i << 20, 1 << 20, payload=chunk)[0] == 0 for i in range(32))
check(fill_ok, "filled 32 MiB with data")
s.setblocking(False)
sent = 0
for i in range(200):
    try:
        s.send(struct.pack(">IHHQQI", REQ_MAGIC, 0, CMD_READ, 1000 + i, 0, 32 << 20))
        sent += 1
    except BlockingIOError:
        break
time.sleep(1.0)
rss = rss_kib()
check(rss < 512 * 1024, "memory stays bounded under a read flood (VmRSS %d KiB)" % rss)
check(served(), "others are served during the flood")
s.close()
time.sleep(0.5)
check(served(), "served after the flooding client vanished")

e, _ = roundtrip(steady, CMD_READ, 0, 4096)
check(e == 0, "the first client was never disturbed")
request(steady, CMD_DISC, 0, 0)
check(closed_by_server(steady), "DISC closes the connection")
stalled.close()
sys.exit(1 if failures else 0)
EOF

echo "== hostile clients"
timeout 300 "$PY" "$T/hostile.py" "$S" "$R" "$S.pid" || fail "hostile client checks"
alive "$S"
alive "$R"

echo "== real clients still work"
timeout 60 qemu-io -f raw -c 'write -P 0x5a 1M 64k' -c 'read -P 0x5a 1M 64k' "nbd+unix:///?socket=$S" \
  >"$T/qio" 2>&1 || fail "qemu-io after the hostile clients: $(cat "$T/qio")"
grep -q "verification failed" "$T/qio" && fail "qemu-io pattern: $(cat "$T/qio")"
timeout 60 nbdinfo "nbd+unix:///?socket=$S" >/dev/null || fail "nbdinfo after the hostile clients"

echo "== bad input was logged"
for msg in "unknown client flags" "bad option magic" "exceeds the limit" "Unsupported option" \
  "handshake time limit" "operation past EOF" "exceeds the maximum" "bad request magic" \
  "export is read-only" "connection lost inside a WRITE payload"; do
  grep -q "$msg" "$T/serve.log" || fail "not logged: $msg"
done

for sock in "$S" "$R"; do stop_server "$sock"; done
qemu-img check -q "$IMG" || fail "qemu-img check"
echo PASS
