#!/usr/bin/env python3
"""Test helper of parity_qemu_tools.sh (not a test itself): edits and prints qcow2 v2 header
extensions and snapshot tables, to make the images QEMU's tools never write but accept, and to
compare what keel and qemu-img leave behind.

  qcow2_hdr.py add-ext IMAGE TYPE HEXDATA   add a header extension before the end marker (v2)
  qcow2_hdr.py exts IMAGE                   print the extension chain and the backing file name
  qcow2_hdr.py short-extra IMAGE N          cut every snapshot entry's extra data to N bytes
  qcow2_hdr.py snapshots IMAGE              print the snapshot entries (without their dates)
"""
import struct
import sys

ENTRY = '>QIHHIIQII'  # l1 offset, l1 size, id len, name len, date s, date ns, vm clock, vm state, extra


def header(f):
    f.seek(0)
    h = f.read(104)
    version, = struct.unpack('>I', h[4:8])
    cluster_bits, = struct.unpack('>I', h[20:24])
    hlen = 72 if version == 2 else struct.unpack('>I', h[100:104])[0]
    return version, 1 << cluster_bits, hlen


def ext_chain(c0, hlen):
    """[(type, data)], and the offset of the end marker."""
    boff, = struct.unpack('>Q', c0[8:16])
    end = boff if boff else len(c0)
    out, off = [], hlen
    while off + 8 <= end:
        t, n = struct.unpack('>II', c0[off:off + 8])
        if t == 0:
            return out, off
        out.append((t, c0[off + 8:off + 8 + n]))
        off += 8 + (n + 7) // 8 * 8
    return out, off


def add_ext(path, ext_type, data):
    with open(path, 'r+b') as f:
        _, cs, hlen = header(f)
        f.seek(0)
        c0 = bytearray(f.read(cs))
        exts, _ = ext_chain(c0, hlen)
        boff, = struct.unpack('>Q', c0[8:16])
        bsize, = struct.unpack('>I', c0[16:20])
        name = bytes(c0[boff:boff + bsize]) if boff else b''
        exts.append((ext_type, data))
        out = bytearray(c0[:hlen])
        for t, d in exts:
            out += struct.pack('>II', t, len(d)) + d + b'\0' * ((-len(d)) % 8)
        out += b'\0' * 8
        if name:
            struct.pack_into('>Q', out, 8, len(out))
            out += name
        out += b'\0' * (cs - len(out))
        f.seek(0)
        f.write(out)


def print_exts(path):
    with open(path, 'rb') as f:
        _, cs, hlen = header(f)
        f.seek(0)
        c0 = f.read(cs)
    exts, _ = ext_chain(c0, hlen)
    for t, d in exts:
        print(f'ext {t:#010x} {d.hex()}')
    boff, = struct.unpack('>Q', c0[8:16])
    bsize, = struct.unpack('>I', c0[16:20])
    print('backing', c0[boff:boff + bsize].decode() if boff else '-')


def entries(f):
    f.seek(60)
    nb, off = struct.unpack('>IQ', f.read(12))
    f.seek(off)
    data = f.read(1 << 20)
    p = 0
    for _ in range(nb):
        fields = struct.unpack(ENTRY, data[p:p + 40])
        extra_len, id_len, name_len = fields[8], fields[2], fields[3]
        extra = data[p + 40:p + 40 + extra_len]
        ident = data[p + 40 + extra_len:p + 40 + extra_len + id_len]
        name = data[p + 40 + extra_len + id_len:p + 40 + extra_len + id_len + name_len]
        yield fields, extra, ident, name
        p += 40 + extra_len + id_len + name_len
        p += (-p) % 8
    return off


def short_extra(path, n):
    with open(path, 'r+b') as f:
        out = b''
        for fields, extra, ident, name in list(entries(f)):
            fields = fields[:8] + (n,)
            e = struct.pack(ENTRY, *fields) + extra[:n] + ident + name
            out += e + b'\0' * ((-len(e)) % 8)
        f.seek(64)
        off, = struct.unpack('>Q', f.read(8))
        f.seek(off)
        f.write(out)


def print_snapshots(path):
    with open(path, 'rb') as f:
        for fields, extra, ident, name in entries(f):
            print(f'snapshot id={ident.decode()} name={name.decode()} l1_size={fields[1]} '
                  f'vm_state={fields[7]} extra={extra.hex()}')


if __name__ == '__main__':
    cmd, img = sys.argv[1], sys.argv[2]
    if cmd == 'add-ext':
        add_ext(img, int(sys.argv[3], 0), bytes.fromhex(sys.argv[4]))
    elif cmd == 'exts':
        print_exts(img)
    elif cmd == 'short-extra':
        short_extra(img, int(sys.argv[3]))
    elif cmd == 'snapshots':
        print_snapshots(img)
    else:
        sys.exit(f'unknown command {cmd}')
