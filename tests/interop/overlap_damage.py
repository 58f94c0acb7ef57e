#!/usr/bin/env python3
"""Damages a qcow2 image the way a bad disk or a buggy tool does, for overlap_check.sh.

Usage:
  overlap_damage.py IMAGE list                 -> one line per metadata cluster: KIND HOSTOFFSET
  overlap_damage.py IMAGE refcount0 KIND       -> sets the refcount of the first cluster of KIND to 0
  overlap_damage.py IMAGE l2point KIND GUEST   -> points the L2 entry of guest offset GUEST
                                                  (allocated, own) at the first cluster of KIND
  overlap_damage.py IMAGE reftable0            -> refcount table entry 0 -> 0 (points at the header)
  overlap_damage.py IMAGE reftable-unaligned   -> refcount table entry 0 moved 512 bytes (not cluster aligned)
Prints the damaged host offset (hex) on stdout; exits 2 when the image has no cluster of KIND.
"""
import struct
import sys

COPIED = 1 << 63
OFFSET_MASK = 0x00FFFFFFFFFFFE00


def be64(b, o):
    return struct.unpack_from(">Q", b, o)[0]


def be32(b, o):
    return struct.unpack_from(">I", b, o)[0]


class Image:
    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            self.data = bytearray(f.read())
        d = self.data
        self.version = be32(d, 4)
        self.cbits = be32(d, 20)
        self.cs = 1 << self.cbits
        self.l1_size = be32(d, 36)
        self.l1_off = be64(d, 40)
        self.rt_off = be64(d, 48)
        self.rt_clusters = be32(d, 56)
        self.nb_snap = be32(d, 60)
        self.snap_off = be64(d, 64)
        self.rc_order = be32(d, 96) if self.version >= 3 else 4
        self.incompat = be64(d, 72) if self.version >= 3 else 0
        self.ext_l2 = bool(self.incompat & (1 << 4))
        self.hdr_len = be32(d, 100) if self.version >= 3 else 72

    def save(self):
        with open(self.path, "r+b") as f:
            f.write(self.data)

    def reftable(self):
        n = self.rt_clusters * self.cs // 8
        return [be64(self.data, self.rt_off + 8 * i) for i in range(n)]

    def l1(self, off, n):
        return [be64(self.data, off + 8 * i) & OFFSET_MASK for i in range(n)]

    def snapshots(self):
        out, p = [], self.snap_off
        for _ in range(self.nb_snap):
            l1_off, l1_size = be64(self.data, p), be32(self.data, p + 8)
            id_len, name_len = struct.unpack_from(">HH", self.data, p + 12)
            extra = be32(self.data, p + 36)
            size = 40 + extra + id_len + name_len
            out.append((l1_off, l1_size))
            p += (size + 7) & ~7
        return out, p - self.snap_off

    def bitmaps(self):
        p = 72 if self.version < 3 else self.hdr_len
        while p + 8 <= self.cs:
            magic, ln = be32(self.data, p), be32(self.data, p + 4)
            if magic == 0:
                break
            if magic == 0x23852875:
                nb, _, dsize, doff = struct.unpack_from(">IIQQ", self.data, p + 8)
                tables, q = [], doff
                for _ in range(nb):
                    toff, tsize = be64(self.data, q), be32(self.data, q + 8)
                    name_size, ext_size = struct.unpack_from(">H", self.data, q + 18)[0], be32(self.data, q + 20)
                    tables.append((toff, tsize))
                    q += (24 + ext_size + name_size + 7) & ~7
                return doff, dsize, tables
            p += 8 + ((ln + 7) & ~7)
        return None, 0, []

    def metadata(self):
        """[(kind, host offset of each cluster)] in QEMU's overlap-check vocabulary."""
        cs, m = self.cs, []
        m.append(("main-header", 0))
        for c in range((self.l1_size * 8 + cs - 1) // cs):
            m.append(("active-l1", self.l1_off + c * cs))
        for c in range(self.rt_clusters):
            m.append(("refcount-table", self.rt_off + c * cs))
        for e in self.reftable():
            if e:
                m.append(("refcount-block", e & ~(cs - 1)))
        for e in self.l1(self.l1_off, self.l1_size):
            if e:
                m.append(("active-l2", e))
        snaps, snap_bytes = self.snapshots()
        for c in range((snap_bytes + cs - 1) // cs):
            m.append(("snapshot-table", self.snap_off + c * cs))
        active = {e for e in self.l1(self.l1_off, self.l1_size) if e}
        for l1_off, l1_size in snaps:
            for c in range((l1_size * 8 + cs - 1) // cs):
                m.append(("inactive-l1", l1_off + c * cs))
            for e in self.l1(l1_off, l1_size):
                if e and e not in active:
                    m.append(("inactive-l2", e))
        doff, dsize, tables = self.bitmaps()
        if doff:
            for c in range((dsize + cs - 1) // cs):
                m.append(("bitmap-directory", doff + c * cs))
            for toff, tsize in tables:
                for c in range((tsize * 8 + cs - 1) // cs):
                    m.append(("bitmap-table", toff + c * cs))
        return m

    def set_refcount(self, cluster, value):
        bits = 1 << self.rc_order
        per_block = self.cs * 8 // bits
        rb = self.reftable()[cluster // per_block] & ~(self.cs - 1)
        idx = cluster % per_block
        if bits >= 8:
            w = bits // 8
            self.data[rb + idx * w: rb + idx * w + w] = value.to_bytes(w, "big")
        else:
            byte, shift = rb + idx * bits // 8, (idx * bits) % 8
            mask = ((1 << bits) - 1) << shift
            self.data[byte] = (self.data[byte] & ~mask) | ((value << shift) & mask)

    def l2_entry_pos(self, guest):
        l2_entries = self.cs // (16 if self.ext_l2 else 8)
        gc = guest // self.cs
        l2 = be64(self.data, self.l1_off + 8 * (gc // l2_entries)) & OFFSET_MASK
        if not l2:
            return None
        return l2 + (gc % l2_entries) * (16 if self.ext_l2 else 8)


def first_of(img, kind):
    for k, off in img.metadata():
        if k == kind:
            return off
    sys.exit(2)


def main():
    img = Image(sys.argv[1])
    cmd = sys.argv[2]
    if cmd == "list":
        for k, off in img.metadata():
            print(k, hex(off))
        return
    if cmd == "refcount0":
        off = first_of(img, sys.argv[3])
        img.set_refcount(off // img.cs, 0)
    elif cmd == "l2point":
        off = first_of(img, sys.argv[3])
        pos = img.l2_entry_pos(int(sys.argv[4], 0))
        if pos is None:
            sys.exit(2)
        struct.pack_into(">Q", img.data, pos, off | COPIED)
        if img.ext_l2:
            struct.pack_into(">Q", img.data, pos + 8, 0xFFFFFFFF)
    elif cmd == "reftable0":
        struct.pack_into(">Q", img.data, img.rt_off, 0)
        off = 0
    elif cmd == "reftable-unaligned":
        off = be64(img.data, img.rt_off) + 512
        struct.pack_into(">Q", img.data, img.rt_off, off)
    else:
        sys.exit("unknown command " + cmd)
    img.save()
    print(hex(off))


if __name__ == "__main__":
    main()
