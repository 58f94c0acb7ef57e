#!/usr/bin/env python3
"""Builds the qcow2 CVE-class images of cve_images.sh in the current directory.

Each image is a small qemu-img-made image with one field (or one structure) overwritten with a
hostile value: the classes QEMU fixed in 2014 (CVE-2014-0143 integer overflows, -0144 missing
header validation, -0145 snapshot L1 overflow, -0146/-0147 error paths) and later ones (bitmaps,
compressed descriptors, extensions). cli_badinput.sh covers the first, simplest values of some
fields; these go to the edges: just over each limit, 32- and 64-bit wrap-arounds.
Prints one line per image: NAME, FIELD-REGEX (what the one-line error must match when keel refuses
the image), DESCRIPTION, keel info's and keel check's expected exit status ("qemu": the same as
qemu-img's) and, where keel deliberately differs from qemu-img, why; tab-separated, "-" for empty."""
import shutil
import struct
import subprocess
import sys


def run(*cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def be(fmt, v):
    return struct.pack(">" + fmt, v)


def field(data, off, fmt):
    return struct.unpack_from(">" + fmt, data, off)[0]


def base_images():
    run("qemu-img", "create", "-q", "-f", "qcow2", "plain.qcow2", "8M")
    run("qemu-io", "-c", "write -P 0x11 0 128k", "-c", "write -P 0x22 4M 64k", "plain.qcow2")
    shutil.copy("plain.qcow2", "snap.qcow2")
    run("qemu-img", "snapshot", "-c", "s1", "snap.qcow2")
    shutil.copy("plain.qcow2", "bitmap.qcow2")
    run("qemu-img", "bitmap", "--add", "bitmap.qcow2", "b0")
    run("qemu-img", "create", "-q", "-f", "qcow2", "comp.qcow2", "8M")
    run("qemu-io", "-c", "write -c -P 0x33 0 64k", "-c", "write -P 0x44 64k 64k", "comp.qcow2")
    # LUKS-encrypted (qemu-img's PBKDF2 calibration sometimes fails: retried).
    for _ in range(4):
        r = subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "--object", "secret,id=s,data=pw", "-o",
                            "encrypt.format=luks,encrypt.key-secret=s,encrypt.iter-time=10", "luks.qcow2", "8M"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if r.returncode == 0:
            break
    else:
        raise SystemExit("qemu-img create of a LUKS image failed")


IMAGES = []


def image(name, src, regex, what):
    """Decorator: the function gets the bytes of `src` and returns the patched bytes."""
    def wrap(fn):
        IMAGES.append((name, src, regex, what, fn))
        return fn
    return wrap


def patch(data, off, fmt, v):
    b = bytearray(data)
    struct.pack_into(">" + fmt, b, off, v)
    return bytes(b)


def header_patch(name, off, fmt, v, regex, what, src="plain.qcow2"):
    image(name, src, regex, what)(lambda d: patch(d, off, fmt, v))


def ext_at_112(ext_type, length, payload=b""):
    """Replaces the header extensions with one extension of the given (claimed) length."""
    def fn(d):
        b = bytearray(d)
        b[112:4096] = bytes(4096 - 112)
        struct.pack_into(">II", b, 112, ext_type, length)
        b[120:120 + len(payload)] = payload
        return bytes(b)
    return fn


# ---- header fields ---------------------------------------------------------------------------
header_patch("cluster_bits_22", 20, "I", 22, r"cluster size: 2\^22", "cluster_bits one over QEMU's 21")
header_patch("cluster_bits_63", 20, "I", 63, r"cluster size: 2\^63", "cluster_bits 63 (shift overflow)")
header_patch("cluster_bits_u32max", 20, "I", 0xFFFFFFFF, r"cluster size: 2\^4294967295", "cluster_bits 2^32-1")
header_patch("header_length_huge", 100, "I", 0xFFFFFFF8, r"header_length.*4294967288", "header_length 2^32-8")
header_patch("header_length_u32max", 100, "I", 0xFFFFFFFF, r"header_length.*4294967295", "header_length 2^32-1")
header_patch("header_length_cluster", 100, "I", 65536 + 8, r"header_length.*65544", "header_length past cluster 0")
header_patch("refcount_order_u32max", 96, "I", 0xFFFFFFFF, r"refcount_order.*4294967295", "refcount_order 2^32-1")
header_patch("size_u64max", 24, "Q", 0xFFFFFFFFFFFFFFFF, r"size.*18446744073709551615", "virtual size 2^64-1")


@image("backing_name_len_u32max", "plain.qcow2", r"backing_file_size.*4294967295", "backing name length 2^32-1")
def _(d):
    return patch(patch(d, 8, "Q", 1024), 16, "I", 0xFFFFFFFF)


@image("backing_name_len_1024", "plain.qcow2", r"backing_file_size.*1024", "backing name length 1024 (> 1023)")
def _(d):
    d = patch(patch(d, 8, "Q", 1024), 16, "I", 1024)
    return d[:1024] + b"b" * 1024 + d[2048:]


@image("backing_offset_wrap", "plain.qcow2", r"backing_file_offset.*18446744073709551600",
       "backing name offset + length wraps 2^64")
def _(d):
    return patch(patch(d, 8, "Q", 0xFFFFFFFFFFFFFFF0), 16, "I", 32)


image("ext_len_u32max", "plain.qcow2", r"header_extension_length.*4294967288",
      "unknown header extension of length 2^32-8")(ext_at_112(0x12345678, 0xFFFFFFF8))
image("ext_len_past_cluster", "plain.qcow2", r"header_extension_length.*65536",
      "header extension longer than cluster 0")(ext_at_112(0x12345678, 65536))
image("backing_format_ext_u32max", "plain.qcow2", r"header_extension_length.*4294967295",
      "backing format extension of length 2^32-1")(ext_at_112(0xE2792ACA, 0xFFFFFFFF))
image("feature_table_ext_huge", "plain.qcow2", r"header_extension_length.*4294967280",
      "feature name table of length 2^32-16")(ext_at_112(0x6803F857, 0xFFFFFFF0))
image("bitmaps_ext_len_u32max", "plain.qcow2", r"header_extension_length.*4294967295",
      "bitmaps extension of length 2^32-1")(ext_at_112(0x23852875, 0xFFFFFFFF))

# ---- L1 table --------------------------------------------------------------------------------
header_patch("l1_size_over_32M", 36, "I", 0x400001, r"l1_size.*4194305", "L1 one entry over QEMU's 32 MiB")
header_patch("l1_size_wrap32", 36, "I", 0x20000000, r"l1_size.*536870912", "l1_size * 8 wraps 32 bits")
header_patch("l1_offset_wrap64", 40, "Q", 0xFFFFFFFFFFFF0000, r"l1_table_offset.*18446744073709486080",
             "L1 offset + size wraps 2^64")
header_patch("l1_offset_2p56", 40, "Q", 1 << 56, r"l1_table_offset.*72057594037927936", "L1 at 2^56")

# ---- refcount table --------------------------------------------------------------------------
header_patch("reftable_clusters_u32max", 56, "I", 0xFFFFFFFF, r"refcount_table_clusters.*4294967295",
             "refcount table of 2^32-1 clusters (size wraps 32 and 48 bits)")
header_patch("reftable_clusters_over_8M", 56, "I", 129, r"refcount_table_clusters.*129",
             "refcount table one cluster over QEMU's 8 MiB")
header_patch("reftable_overlaps_header", 48, "Q", 0, r"refcount_table_offset.*0", "refcount table at offset 0")
header_patch("reftable_offset_wrap64", 48, "Q", 0xFFFFFFFFFFFF0000,
             r"refcount_table_offset.*18446744073709486080", "refcount table offset + size wraps 2^64")

# ---- snapshot table --------------------------------------------------------------------------
header_patch("nb_snapshots_over", 60, "I", 65537, r"nb_snapshots.*65537", "65537 snapshots", src="snap.qcow2")
header_patch("nb_snapshots_u32max", 60, "I", 0xFFFFFFFF, r"nb_snapshots.*4294967295", "2^32-1 snapshots",
             src="snap.qcow2")
header_patch("snapshots_offset_wrap64", 64, "Q", 0xFFFFFFFFFFFF0000, r"snapshots_offset.*18446744073709486080",
             "snapshot table offset wraps 2^64", src="snap.qcow2")


def snap_entry_patch(name, rel, fmt, v, regex, what):
    def fn(d):
        return patch(d, field(d, 64, "Q") + rel, fmt, v)
    image(name, "snap.qcow2", regex, what)(fn)


snap_entry_patch("snap_l1_size_over_32M", 8, "I", 0x400001, r"l1_size.*4194305", "snapshot L1 over 32 MiB")
snap_entry_patch("snap_l1_size_u32max", 8, "I", 0xFFFFFFFF, r"l1_size.*4294967295", "snapshot L1 size 2^32-1")
snap_entry_patch("snap_l1_offset_wrap64", 0, "Q", 0xFFFFFFFFFFFF0000, r"l1_table_offset.*0xffffffffffff0000",
                 "snapshot L1 offset wraps 2^64")
snap_entry_patch("snap_extra_1025", 36, "I", 1025, r"extra_data_size.*1025", "snapshot extra data 1025 bytes")
snap_entry_patch("snap_extra_u32max", 36, "I", 0xFFFFFFFF, r"extra_data_size.*4294967295",
                 "snapshot extra data 2^32-1 bytes")
snap_entry_patch("snap_id_len_huge", 12, "H", 0xFFFF, r"id_str_size = 65535", "snapshot id of 65535 bytes past the end")

# ---- persistent bitmaps ----------------------------------------------------------------------


def bitmaps_ext(d):
    off = 112
    while True:
        t, n = struct.unpack_from(">II", d, off)
        if t == 0:
            raise SystemExit("no bitmaps extension")
        if t == 0x23852875:
            return off + 8
        off += 8 + (n + 7) // 8 * 8


def bitmap_ext_patch(name, rel, fmt, v, regex, what):
    image(name, "bitmap.qcow2", regex, what)(lambda d: patch(d, bitmaps_ext(d) + rel, fmt, v))


bitmap_ext_patch("bitmap_dir_size_u64max", 8, "Q", 0xFFFFFFFFFFFFFFFF, r"bitmap_directory_size.*18446744073709551615",
                 "bitmap directory of 2^64-1 bytes")
bitmap_ext_patch("bitmap_dir_size_over", 8, "Q", 1024 * 65535 + 8, r"bitmap_directory_size.*67107848",
                 "bitmap directory just over QEMU's limit")
bitmap_ext_patch("nb_bitmaps_over", 0, "I", 65536, r"nb_bitmaps.*65536", "65536 bitmaps")
bitmap_ext_patch("bitmap_dir_offset_wrap64", 16, "Q", 0xFFFFFFFFFFFF0000, r"bitmap.*directory",
                 "bitmap directory offset wraps 2^64")


def bitmap_entry_patch(name, rel, fmt, v, regex, what):
    def fn(d):
        return patch(d, field(d, bitmaps_ext(d) + 16, "Q") + rel, fmt, v)
    image(name, "bitmap.qcow2", regex, what)(fn)


bitmap_entry_patch("bitmap_table_size_over", 8, "I", 0x8000001, r"bitmap_table_size.*134217729",
                   "bitmap table one entry over QEMU's limit")
bitmap_entry_patch("bitmap_name_size_huge", 18, "H", 0xFFFF, r"name_size.*65535", "bitmap name of 65535 bytes")
bitmap_entry_patch("bitmap_extra_u32max", 20, "I", 0xFFFFFFFF, r"bitmap.*directory",
                   "bitmap entry extra data 2^32-1 bytes")

# ---- compressed clusters ---------------------------------------------------------------------


def first_l2_entry(d):
    l1 = field(d, 40, "Q")
    l2 = field(d, l1, "Q") & 0x00FFFFFFFFFFFE00
    return l2


@image("compressed_past_eof", "comp.qcow2", r"", "compressed cluster far past the end of the file")
def _(d):
    x = 62 - (16 - 8)
    return patch(d, first_l2_entry(d), "Q", (1 << 62) | (0xFF << x) | ((1 << 40) + 77))


@image("compressed_max_sectors", "comp.qcow2", r"", "compressed descriptor with the largest sector count")
def _(d):
    x = 62 - (16 - 8)
    entry = field(d, first_l2_entry(d), "Q")
    off = entry & ((1 << x) - 1)
    return patch(d, first_l2_entry(d), "Q", (1 << 62) | (0xFF << x) | off)


# ---- LUKS (crypt_method 2): the header pointer extension and the LUKS1 header it names -------
def crypto_ext(d):
    """Offset of the crypto header pointer extension's payload (offset, length)."""
    off = field(d, 100, "I")
    while True:
        t, n = struct.unpack_from(">II", d, off)
        if t == 0x0537BE77:
            return off + 8
        if t == 0:
            raise SystemExit("no crypto header extension")
        off += 8 + (n + 7) // 8 * 8


def luks_patch(name, rel, fmt, v, regex, what):
    image(name, "luks.qcow2", regex, what)(lambda d: patch(d, field(d, crypto_ext(d), "Q") + rel, fmt, v))


def crypto_ext_patch(name, rel, v, regex, what):
    image(name, "luks.qcow2", regex, what)(lambda d: patch(d, crypto_ext(d) + rel, "Q", v))


crypto_ext_patch("luks_region_len_u64max", 8, 0xFFFFFFFFFFFFFFFF, r"crypto_header_length.*18446744073709551615",
                 "LUKS region length 2^64-1")
crypto_ext_patch("luks_region_offset_wrap64", 0, 0xFFFFFFFFFFFF0000, r"crypto_header_offset.*18446744073709486080",
                 "LUKS region offset + length wraps 2^64")
luks_patch("luks_magic", 0, "I", 0x4C554B54, r"LUKS format", "LUKS magic damaged")
luks_patch("luks_key_bytes_u32max", 108, "I", 0xFFFFFFFF, r"key_bytes.*4294967295", "LUKS key_bytes 2^32-1")
luks_patch("luks_mk_iters_zero", 164, "I", 0, r"mk_digest_iterations.*0", "LUKS master key digest of 0 iterations")
luks_patch("luks_stripes_u32max", 208 + 44, "I", 0xFFFFFFFF, r"stripes.*4294967295", "LUKS slot 0 of 2^32-1 stripes")
luks_patch("luks_key_offset_u32max", 208 + 40, "I", 0xFFFFFFFF, r"key_offset.*4294967295",
           "LUKS slot 0 key material at sector 2^32-1")
luks_patch("luks_slots_overlap", 208 + 48 + 40, "I", 8, r"overlaps key slot 0", "LUKS slot 1 key material on slot 0's")

# Where keel deliberately differs from qemu-img 7.2: (keel info exit, keel check exit, why).
# Everywhere else keel must exit exactly as qemu-img does.
DEVIATIONS = {
    "l1_offset_2p56": (1, 1, "keel refuses table offsets >= 2^56 (not representable in 56-bit entries); "
                             "QEMU opens and reads the L1 as zeros past EOF"),
    "reftable_overlaps_header": (1, 1, "keel refuses a refcount table overlapping the header at open; "
                                       "QEMU opens it and finds garbage refcounts"),
    "snap_l1_size_over_32M": (1, 2, "keel validates every snapshot entry at open; QEMU only when the snapshot is used"),
    "snap_l1_size_u32max": (1, 2, "keel validates every snapshot entry at open; QEMU only when the snapshot is used"),
    "snap_id_len_huge": (1, 2, "keel refuses a snapshot entry that runs past the end of the file at open"),
    "snap_l1_offset_wrap64": (0, 2, "qemu-img check fails with ENOMEM (exit 1); keel check reports the corruption"),
    **{n: ("qemu", 0, "keel check validates the qcow2 metadata without the key (the LUKS region counts as "
                      "header clusters); qemu-img check must unlock the image and fails without a secret")
       for n in ("luks_magic", "luks_key_bytes_u32max", "luks_mk_iters_zero", "luks_stripes_u32max",
                 "luks_slots_overlap")},
    "luks_key_offset_u32max": (1, 0, "keel refuses slot key material past the LUKS region at open (qemu-img "
                                     "info accepts it); keel check does not need the key"),
    "luks_region_len_u64max": (1, "qemu", "keel bounds the LUKS region (64 MiB) when it decodes the header; "
                                          "qemu-img info does not read the region"),
    "bitmap_dir_offset_wrap64": (1, 2, "qemu-img check cannot open the image (exit 1); keel check reports "
                                       "the corruption and can repair it"),
}


def main():
    base_images()
    for name, src, regex, what, fn in IMAGES:
        with open(src, "rb") as f:
            data = f.read()
        with open(name + ".qcow2", "wb") as f:
            f.write(fn(data))
        info, check, why = DEVIATIONS.get(name, ("qemu", "qemu", ""))
        print(f"{name}.qcow2\t{regex or '-'}\t{what}\t{info}\t{check}\t{why or '-'}")


if __name__ == "__main__":
    sys.exit(main())
