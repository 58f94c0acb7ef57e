#!/usr/bin/env python3
"""A tiny NBD client that prints what a server answers to meta-context haggling and BLOCK_STATUS.

Used by nbd_meta.sh to run the same script against qemu-nbd and keel serve and diff the output
(error replies print their type, not their message, which differs between servers).

Usage: nbd_meta_probe.py SOCKET STEP...
  STEP: sr                       NBD_OPT_STRUCTURED_REPLY
        list:Q1,Q2 | set:Q1,Q2   LIST/SET_META_CONTEXT with these queries ('list:' = none)
        listx:NAME:Q             ... for export NAME
        go                       NBD_OPT_GO (then the transmission phase)
        bs:OFF:LEN[:reqone]      NBD_CMD_BLOCK_STATUS
        read:OFF:LEN:FILE        NBD_CMD_READ (structured replies), the bytes written into FILE
                                 at OFF (how a backup tool copies the dirty extents)
"""
import socket
import struct
import sys

OPT_MAGIC = 0x49484156454F5054
REP_MAGIC = 0x0003E889045565A9
OPTS = {"sr": 8, "list": 9, "set": 10, "go": 7}
REPS = {1: "ACK", 2: "SERVER", 3: "INFO", 4: "META_CONTEXT"}
ERRS = {1: "ERR_UNSUP", 2: "ERR_POLICY", 3: "ERR_INVALID", 4: "ERR_PLATFORM", 5: "ERR_TLS_REQD",
        6: "ERR_UNKNOWN", 7: "ERR_SHUTDOWN", 8: "ERR_BLOCK_SIZE_REQD", 9: "ERR_TOO_BIG"}


def recv_exact(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError("server closed the connection")
        b += c
    return b


def send_opt(s, opt, data=b""):
    s.sendall(struct.pack(">QII", OPT_MAGIC, opt, len(data)) + data)


def read_replies(s, label):
    """Reads option replies until a final one; prints one line per reply."""
    while True:
        magic, _opt, typ, length = struct.unpack(">QIII", recv_exact(s, 20))
        assert magic == REP_MAGIC, hex(magic)
        data = recv_exact(s, length)
        if typ & 0x80000000:
            print(f"{label} -> {ERRS.get(typ & 0x7FFFFFFF, hex(typ))}")
            return False
        if typ == 4:
            cid = struct.unpack(">I", data[:4])[0]
            print(f"{label} -> META_CONTEXT id={cid} {data[4:].decode()}")
        elif typ == 3:
            pass  # INFO replies: covered by the other suites
        else:
            print(f"{label} -> {REPS.get(typ, typ)}")
        if typ == 1:
            return True


def meta_request(name, queries):
    q = b"".join(struct.pack(">I", len(x)) + x.encode() for x in queries)
    return struct.pack(">I", len(name)) + name.encode() + struct.pack(">I", len(queries)) + q


def block_status(s, off, length, flags, cookie):
    s.sendall(struct.pack(">IHHQQI", 0x25609513, flags, 7, cookie, off, length))
    while True:
        magic = struct.unpack(">I", recv_exact(s, 4))[0]
        if magic == 0x67446698:  # simple reply
            err, _c = struct.unpack(">IQ", recv_exact(s, 12))
            print(f"  simple error={err}")
            return
        assert magic == 0x668E33EF, hex(magic)
        flags_, typ, _c, length = struct.unpack(">HHQI", recv_exact(s, 16))
        data = recv_exact(s, length)
        if typ == 5:
            cid = struct.unpack(">I", data[:4])[0]
            ext = [struct.unpack(">II", data[i:i + 8]) for i in range(4, len(data), 8)]
            print(f"  BLOCK_STATUS id={cid} done={flags_ & 1} " +
                  " ".join(f"{a}:{b}" for a, b in ext))
        elif typ & 0x8000:
            print(f"  ERROR type={typ:#x} error={struct.unpack('>I', data[:4])[0]}")
        else:
            print(f"  chunk type={typ} done={flags_ & 1}")
        if flags_ & 1:
            return


def read_into(s, off, length, path, cookie):
    s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 0, cookie, off, length))
    with open(path, "r+b") as f:
        while True:
            magic, flags_, typ, _c, clen = struct.unpack(">IHHQI", recv_exact(s, 20))
            assert magic == 0x668E33EF, hex(magic)
            data = recv_exact(s, clen)
            if typ == 1:  # OFFSET_DATA
                f.seek(struct.unpack(">Q", data[:8])[0])
                f.write(data[8:])
            elif typ == 2:  # OFFSET_HOLE
                hoff, hlen = struct.unpack(">QI", data)
                f.seek(hoff)
                f.write(bytes(hlen))
            elif typ & 0x8000:
                raise SystemExit(f"read {off}+{length}: error {struct.unpack('>I', data[:4])[0]}")
            if flags_ & 1:
                return


def main():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sys.argv[1])
    magic, opt_magic, _flags = struct.unpack(">QQH", recv_exact(s, 18))
    assert magic == 0x4E42444D41474943 and opt_magic == OPT_MAGIC
    s.sendall(struct.pack(">I", 3))  # FIXED_NEWSTYLE | NO_ZEROES
    cookie = 1
    for step in sys.argv[2:]:
        parts = step.split(":", 1)
        kind = parts[0]
        if kind == "sr":
            send_opt(s, OPTS["sr"])
            read_replies(s, step)
        elif kind in ("list", "set"):
            qs = [q for q in parts[1].split(",") if q] if len(parts) > 1 else []
            send_opt(s, OPTS[kind], meta_request("", qs))
            read_replies(s, step)
        elif kind == "listx":
            name, q = parts[1].split(":", 1)
            send_opt(s, OPTS["list"], meta_request(name, [q]))
            read_replies(s, step)
        elif kind == "go":
            send_opt(s, OPTS["go"], struct.pack(">IH", 0, 0))
            if not read_replies(s, step):
                return
        elif kind == "bs":
            f = step.split(":")
            flags = 8 if len(f) > 3 and f[3] == "reqone" else 0
            print(step)
            block_status(s, int(f[1]), int(f[2]), flags, cookie)
            cookie += 1
        elif kind == "read":
            f = step.split(":", 3)
            read_into(s, int(f[1]), int(f[2]), f[3], cookie)
            cookie += 1
    if "go" in sys.argv[2:]:
        s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 2, cookie, 0, 0))  # DISC
    else:
        send_opt(s, 2)  # ABORT
        read_replies(s, "abort")
    s.close()


if __name__ == "__main__":
    main()
