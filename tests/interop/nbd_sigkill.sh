#!/usr/bin/env bash
# Proves that SIGKILL of `keel serve` at random moments, while a client pipelines writes,
# write-zeroes, trims, FUA writes and flushes, never corrupts the qcow2 image and never loses a
# write whose flush (or FUA) was acknowledged: after each kill `qemu-img check` finds no
# corruption (leaks are allowed), and on restart every 4 KiB block reads back as its last
# durable value or one of the values written after it (rocksdb-style expected state). The
# client speaks NBD over raw sockets (/usr/bin/python3) and keeps the expected state itself.
# Usage: bash nbd_sigkill.sh /path/to/keel   (KEEL_NBD_KILLS=N kills, default 100; KEEL_SEED)
set -euo pipefail
KEEL=$(realpath "${1:?usage: $0 /path/to/keel}")
PY=/usr/bin/python3
KILLS=${KEEL_NBD_KILLS:-100}
SEED=${KEEL_SEED:-$RANDOM$RANDOM}
T=$(mktemp -d /tmp/keel-nbd-kill.XXXXXX)
cleanup() {
  [ -s "$T/pid" ] && kill -9 "$(cat "$T/pid")" 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT
echo "seed $SEED (replay with KEEL_SEED=$SEED), $KILLS kills"

IMG=$T/a.qcow2
qemu-img create -q -f qcow2 "$IMG" 64M

cat >"$T/kill.py" <<'EOF'
import hashlib, os, random, signal, socket, struct, subprocess, sys, threading, time

KEEL, IMG, DIR, KILLS, SEED = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
SOCK, PIDFILE, LOG = DIR + "/s.sock", DIR + "/pid", DIR + "/serve.log"
BLOCK, NBLOCKS = 4096, 8192          # the test region: the first 32 MiB
rng = random.Random(SEED)

def content(wid, blk):
    if wid == 0:
        return bytes(BLOCK)
    head = struct.pack(">QQ", wid, blk)
    body = hashlib.sha256(b"%d:%d" % (wid, blk)).digest() * (BLOCK // 32)
    return head + body[: BLOCK - 16]

# Values are write ids; 0 is all zeros; ANY is "any value this block ever held": TRIM is
# advisory (a qcow2 engine keeps partial clusters), so a trimmed block may keep old data.
ANY = -1
durable = [0] * NBLOCKS              # value as of the last acknowledged flush / FUA
pending = [set() for _ in range(NBLOCKS)]  # values written after it, maybe persisted

class Gone(Exception):
    pass

def rx(s, n):
    b = b""
    while len(b) < n:
        try:
            c = s.recv(n - len(b))
        except (ConnectionResetError, socket.timeout, OSError):
            raise Gone()
        if not c:
            raise Gone()
        b += c
    return b

def tx(s, b):
    try:
        s.sendall(b)
    except (BrokenPipeError, ConnectionResetError, OSError):
        raise Gone()

def opt(s, o, d):
    tx(s, struct.pack(">QII", 0x49484156454F5054, o, len(d)) + d)
    while True:
        _, _, t, l = struct.unpack(">QIII", rx(s, 20)); rx(s, l)
        if t == 1 or t & 0x80000000:
            return t

def start_server():
    if os.path.exists(PIDFILE):
        os.unlink(PIDFILE)
    p = subprocess.Popen([KEEL, "serve", "-t", "--discard=unmap", "-k", SOCK, "--pid-file", PIDFILE,
                          "-f", "qcow2", IMG], stderr=open(LOG, "a"))
    for _ in range(600):
        if os.path.exists(PIDFILE) and open(PIDFILE).read().strip():
            break
        if p.poll() is not None:
            sys.exit("server exited early with %s; see %s" % (p.returncode, LOG))
        time.sleep(0.01)
    else:
        sys.exit("server did not start")
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(60)
    s.connect(SOCK)
    rx(s, 18); tx(s, struct.pack(">I", 3))
    assert opt(s, 8, b"") == 1
    assert opt(s, 7, struct.pack(">IH", 0, 0)) == 1
    return p, s

cookie = [0]
def send(s, typ, off, ln, flags=0, payload=b""):
    cookie[0] += 1
    tx(s, struct.pack(">IHHQQI", 0x25609513, flags, typ, cookie[0], off, ln) + payload)
    return cookie[0]

def reply(s):
    """(cookie, error, data) for one reply; READ data comes as structured chunks."""
    data, err = {}, 0
    while True:
        magic = struct.unpack(">I", rx(s, 4))[0]
        if magic == 0x67446698:
            e, c = struct.unpack(">IQ", rx(s, 12))
            return c, e, None
        assert magic == 0x668e33ef, hex(magic)
        fl, ty, c, ln = struct.unpack(">HHQI", rx(s, 16))
        p = rx(s, ln)
        if ty == 1:
            data[struct.unpack(">Q", p[:8])[0]] = p[8:]
        elif ty == 2:
            off, hl = struct.unpack(">QI", p)
            data[off] = bytes(hl)
        elif ty & 0x8000:
            err = struct.unpack(">I", p[:4])[0]
        if fl & 1:
            return c, err, data

def verify(s, it):
    """Every block must read as its durable value or a value written after it."""
    bad = 0
    for mb in range(NBLOCKS * BLOCK >> 20):
        c = send(s, 0, mb << 20, 1 << 20)
        rc, err, data = reply(s)
        assert rc == c and err == 0, (rc, c, err)
        buf = b"".join(data[k] for k in sorted(data))
        assert len(buf) == 1 << 20
        for i in range(256):
            blk = (mb << 8) + i
            got = buf[i * BLOCK:(i + 1) * BLOCK]
            wid = 0 if got == bytes(BLOCK) else struct.unpack(">Q", got[:8])[0]
            allowed = {durable[blk]} | pending[blk]
            intact = got == content(wid, blk)
            if not intact or (wid not in allowed and ANY not in allowed):
                bad += 1
                if bad <= 5:
                    print("iteration %d: block %d holds value %d, allowed %s%s" % (
                        it, blk, wid, sorted(allowed), "" if intact else " (torn)"))
            else:
                durable[blk], pending[blk] = wid, set()
    return bad

next_id = [1]
def workload(s, p, deadline):
    """Batches of non-overlapping writes/zeroes/trims, each batch then flushed, until killed."""
    while True:
        batch, used = [], set()
        for _ in range(rng.randint(1, 32)):
            n = rng.randint(1, 16)
            start = rng.randrange(0, NBLOCKS - n)
            blocks = range(start, start + n)
            if used.intersection(blocks):
                continue
            used.update(blocks)
            kind = rng.choices(["write", "zero", "trim"], [8, 1, 1])[0]
            fua = rng.random() < 0.2
            wid = {"write": next_id[0], "zero": 0, "trim": ANY}[kind]
            next_id[0] += 1
            for b in blocks:
                pending[b].add(wid)
            off, ln = start * BLOCK, n * BLOCK
            if kind == "write":
                c = send(s, 1, off, ln, 1 if fua else 0, b"".join(content(wid, b) for b in blocks))
            elif kind == "zero":
                c = send(s, 6, off, ln, (1 if fua else 0) | (2 if rng.random() < 0.5 else 0))
            else:
                c = send(s, 4, off, ln, 1 if fua else 0)
            batch.append((c, blocks, wid, fua))
        acked = {}
        for _ in batch:
            c, err, _ = reply(s)
            assert err == 0, "request failed with %d" % err
            acked[c] = True
        for c, blocks, wid, fua in batch:
            if fua:  # durable on its own acknowledgement
                for b in blocks:
                    durable[b] = wid
                    pending[b].discard(wid)
        c = send(s, 3, 0, 0)
        rc, err, _ = reply(s)
        assert rc == c and err == 0
        for _, blocks, wid, _ in batch:
            for b in blocks:
                durable[b] = wid
                pending[b] = set()

corrupt = lost = 0
for it in range(KILLS):
    p, s = start_server()
    lost += verify(s, it)
    delay = rng.uniform(0.02, 0.4)
    killer = threading.Timer(delay, lambda: os.kill(p.pid, signal.SIGKILL))
    killer.start()
    try:
        workload(s, p, time.time() + delay)
    except Gone:
        pass
    killer.join()
    p.wait()
    s.close()
    # The kernel releases a killed process's io_uring (and with it its reference to the image
    # file, which holds the OFD lock) in a worker after the process is reaped: wait for the lock.
    for _ in range(100):
        chk = subprocess.run(["qemu-img", "check", "-f", "qcow2", IMG], capture_output=True, text=True)
        if "Failed to get shared" not in chk.stderr:
            break
        time.sleep(0.1)
    if chk.returncode not in (0, 3):  # 3: leaked clusters only
        corrupt += 1
        print("iteration %d: qemu-img check rc %d\n%s%s" % (it, chk.returncode, chk.stdout, chk.stderr))
    if (it + 1) % 10 == 0:
        print("%d kills, %d corrupt, %d blocks lost" % (it + 1, corrupt, lost), flush=True)

# A last clean round: verify, then SIGTERM must leave a clean image.
p, s = start_server()
lost += verify(s, KILLS)
send(s, 2, 0, 0)
s.close()
p.send_signal(signal.SIGTERM)
p.wait(timeout=60)
chk = subprocess.run(["qemu-img", "check", "-f", "qcow2", IMG], capture_output=True, text=True)
if chk.returncode not in (0, 3) or p.returncode != 0:
    corrupt += 1
    print("final: server rc %s, qemu-img check rc %d\n%s" % (p.returncode, chk.returncode, chk.stdout))
print("done: %d kills, %d corrupt, %d blocks lost or wrong" % (KILLS, corrupt, lost))
sys.exit(1 if corrupt or lost else 0)
EOF

if ! timeout 1200 "$PY" "$T/kill.py" "$KEEL" "$IMG" "$T" "$KILLS" "$SEED"; then
  echo "FAIL (seed $SEED)" >&2
  [ -s "$T/serve.log" ] && tail -30 "$T/serve.log" | sed 's/^/  serve.log: /' >&2
  exit 1
fi
echo "nbd_sigkill: $KILLS kills through keel serve, 0 corrupted, 0 with lost flushed writes (PASS)"
