#!/usr/bin/env python3
"""Writes NBD client transcripts (what a client sends on one connection) as fuzz seeds.

Usage: nbd_seeds.py OUTDIR. Each file: client flags, options (fixed newstyle), then requests and
write payloads, as qemu-nbd's clients (qemu-img, nbdinfo, the kernel) send them."""
import os
import struct
import sys

OPT_MAGIC = b"IHAVEOPT"
REQ_MAGIC = 0x25609513
EXPORT_NAME, ABORT, LIST, STARTTLS, INFO, GO, STRUCTURED, LIST_META, SET_META = 1, 2, 3, 5, 6, 7, 8, 9, 10
READ, WRITE, DISC, FLUSH, TRIM, CACHE, WZ, BS = 0, 1, 2, 3, 4, 5, 6, 7
FUA, NO_HOLE, DF, REQ_ONE, FAST_ZERO = 1, 2, 4, 8, 16


def opt(code, data=b""):
    return OPT_MAGIC + struct.pack(">II", code, len(data)) + data


def info_req(name=b"", infos=(3,)):
    return struct.pack(">I", len(name)) + name + struct.pack(">H", len(infos)) + b"".join(
        struct.pack(">H", i) for i in infos)


def meta_req(name=b"", queries=(b"base:allocation",)):
    out = struct.pack(">I", len(name)) + name + struct.pack(">I", len(queries))
    for q in queries:
        out += struct.pack(">I", len(q)) + q
    return out


cookie = 0


def req(typ, offset=0, length=0, flags=0, payload=b""):
    global cookie
    cookie += 1
    return struct.pack(">IHHQQI", REQ_MAGIC, flags, typ, cookie, offset, length) + payload


def write(offset, length, flags=0, byte=0xab):
    return req(WRITE, offset, length, flags, bytes([byte]) * length)


flags = struct.pack(">I", 3)  # FIXED_NEWSTYLE | NO_ZEROES
go = opt(STRUCTURED) + opt(SET_META, meta_req()) + opt(GO, info_req(b"", (3, 1, 2)))
io = (write(0, 4096) + write(6000, 700, FUA) + req(READ, 0, 8192) + req(READ, 4096, 4096, DF) +
      req(BS, 0, 1 << 20) + req(BS, 0, 1 << 20, REQ_ONE) + req(TRIM, 8192, 4096) +
      req(WZ, 16384, 8192) + req(WZ, 65536, 4096, NO_HOLE) + req(WZ, 0, 4096, FAST_ZERO) +
      req(CACHE, 0, 4096) + req(FLUSH) + req(READ, 0, 65536))
seeds = {
    "structured_go": flags + go + io + req(DISC),
    "export_name": flags + opt(EXPORT_NAME) + write(512, 512) + req(READ, 0, 2048) + req(FLUSH) +
                   req(TRIM, 0, 4096) + req(DISC),
    "simple_go": flags + opt(GO, info_req(b"", ())) + io,
    "info_list_abort": flags + opt(LIST) + opt(INFO, info_req(b"", (0, 1, 2, 3))) +
                       opt(INFO, info_req(b"nope")) + opt(ABORT),
    "meta_list": flags + opt(STRUCTURED) + opt(LIST_META, meta_req(b"", ())) +
                 opt(LIST_META, meta_req(b"", (b"base:", b"qemu:dirty-bitmap:x"))) +
                 opt(SET_META, meta_req(b"", (b"base:allocation", b"x:y"))) + opt(GO, info_req()) +
                 req(BS, 0, 4 << 20) + req(BS, 4 << 20, 1) + req(DISC),
    "bad_options": flags + opt(STARTTLS) + opt(99) + opt(STRUCTURED, b"x") + opt(LIST, b"junk") +
                   opt(GO, b"\0\0\0\x10") + opt(EXPORT_NAME, b"other"),
    "bad_requests": flags + opt(STRUCTURED) + opt(GO, info_req()) +
                    req(READ, 4 << 20, 1) + req(READ, 0, 64 << 20) + req(WRITE, 0, 0) +
                    req(99) + req(READ, 0, 512, 0x80) + req(TRIM, 1, 1, FUA) + req(BS, 0, 0) +
                    struct.pack(">I", 0xdeadbeef) + b"\0" * 24,
    "oversized_option": flags + opt(LIST, b"\0" * (64 * 1024 + 1)) + opt(GO, info_req()) + req(READ, 0, 512),
    "no_zeroes_old": struct.pack(">I", 1) + opt(EXPORT_NAME) + req(READ, 0, 512) + req(DISC),
}
# The harness serves a damaged image (metadata refcounts at 0) when the input length is 3 mod 4:
# a copy of every seed padded to such a length (issue 13: its writes must not reach metadata).
for name in list(seeds):
    data = seeds[name]
    seeds[name + "_damaged"] = data + b"\0" * ((3 - len(data)) % 4)
os.makedirs(sys.argv[1], exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(sys.argv[1], name), "wb") as f:
        f.write(data)
