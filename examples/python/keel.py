"""libkeel from Python through its C API (keel/keel.h) with ctypes: no compiled binding.

The library is found through $KEEL_LIBRARY (a path to libkeel.so.N), else the linker's search
path (ctypes.util.find_library("keel")).

    import keel
    keel.create("a.qcow2", 64 << 20)
    with keel.Image("a.qcow2") as img:
        img.write(0, b"hello")
        img.flush()
        assert img.read(0, 5) == b"hello"
    assert keel.check("a.qcow2")["corruptions"] == 0
"""
import ctypes
import ctypes.util
import json
import os

_path = os.environ.get("KEEL_LIBRARY") or ctypes.util.find_library("keel")
if not _path:
    raise ImportError("libkeel not found: set KEEL_LIBRARY to the path of libkeel.so")
_lib = ctypes.CDLL(_path)

WRITE_FUA = 1
ZERO_MAY_UNMAP = 2
ZERO_FAST_ONLY = 4
CACHE_MODES = {"writeback": 0, "writethrough": 1, "none": 2, "directsync": 3, "unsafe": 4}
REPAIR_MODES = {None: 0, "leaks": 1, "all": 2}


class _Error(ctypes.Structure):
    _fields_ = [("code", ctypes.c_int), ("err", ctypes.c_int), ("message", ctypes.c_char * 512)]


class _OpenOptions(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("format", ctypes.c_char_p),
                ("read_only", ctypes.c_int), ("cache", ctypes.c_int),
                ("force_share", ctypes.c_int), ("no_backing", ctypes.c_int),
                ("log", ctypes.c_void_p), ("log_context", ctypes.c_void_p)]


class _CreateOptions(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("format", ctypes.c_char_p),
                ("size", ctypes.c_uint64), ("cluster_size", ctypes.c_uint32),
                ("version", ctypes.c_int), ("lazy_refcounts", ctypes.c_int),
                ("backing_file", ctypes.c_char_p), ("backing_format", ctypes.c_char_p)]


class _Extent(ctypes.Structure):
    _fields_ = [("offset", ctypes.c_uint64), ("length", ctypes.c_uint64), ("data", ctypes.c_int),
                ("zero", ctypes.c_int), ("depth", ctypes.c_int), ("compressed", ctypes.c_int),
                ("has_host_offset", ctypes.c_int), ("host_offset", ctypes.c_uint64)]


_CHECK_FIELDS = ["corruptions", "leaks", "check_errors", "corruptions_fixed", "leaks_fixed",
                 "image_end_offset", "total_clusters", "allocated_clusters",
                 "fragmented_clusters", "compressed_clusters"]


class _CheckResult(ctypes.Structure):
    _fields_ = [(f, ctypes.c_uint64) for f in _CHECK_FIELDS]


_P = ctypes.c_void_p
_ERR = ctypes.POINTER(_Error)
for name, args in {
        "keel_open": [ctypes.c_char_p, ctypes.POINTER(_OpenOptions), ctypes.POINTER(_P), _ERR],
        "keel_create": [ctypes.c_char_p, ctypes.POINTER(_CreateOptions), _ERR],
        "keel_close": [_P, _ERR],
        "keel_read": [_P, ctypes.c_uint64, ctypes.c_void_p, ctypes.c_size_t, _ERR],
        "keel_write": [_P, ctypes.c_uint64, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, _ERR],
        "keel_write_zeroes": [_P, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint, _ERR],
        "keel_discard": [_P, ctypes.c_uint64, ctypes.c_uint64, _ERR],
        "keel_flush": [_P, _ERR],
        "keel_block_status": [_P, ctypes.c_uint64, ctypes.c_uint64, ctypes.POINTER(_Extent), _ERR],
        "keel_info_json": [_P, ctypes.POINTER(ctypes.c_void_p), _ERR],
        "keel_check": [ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(_CheckResult), _ERR]}.items():
    fn = getattr(_lib, name)
    fn.argtypes = args
    fn.restype = ctypes.c_int
_lib.keel_size.argtypes = [_P]
_lib.keel_size.restype = ctypes.c_uint64
_lib.keel_strerror.argtypes = [ctypes.c_int]
_lib.keel_strerror.restype = ctypes.c_char_p
_lib.keel_version.restype = ctypes.c_char_p
_lib.keel_free.argtypes = [ctypes.c_void_p]
_lib.keel_open_options_init.argtypes = [ctypes.POINTER(_OpenOptions)]
_lib.keel_create_options_init.argtypes = [ctypes.POINTER(_CreateOptions)]


class KeelError(OSError):
    """A failed libkeel call: .code is the keel_status value, .errno the errno, str() the message."""

    def __init__(self, err):
        super().__init__(err.err, err.message.decode(errors="replace"))
        self.code = err.code
        self.kind = _lib.keel_strerror(err.code).decode()


def _call(fn, *args):
    err = _Error()
    if fn(*args, ctypes.byref(err)) != 0:
        raise KeelError(err)


def version():
    return _lib.keel_version().decode()


def create(path, size, fmt="qcow2", cluster_size=65536, backing_file=None, backing_format=None):
    o = _CreateOptions()
    _lib.keel_create_options_init(ctypes.byref(o))
    o.format = fmt.encode()
    o.size = size
    o.cluster_size = cluster_size
    o.backing_file = backing_file.encode() if backing_file else None
    o.backing_format = backing_format.encode() if backing_format else None
    _call(_lib.keel_create, os.fsencode(path), ctypes.byref(o))


def check(path, repair=None):
    """qemu-img check's counts as a dict; repair is None, "leaks" or "all"."""
    r = _CheckResult()
    _call(_lib.keel_check, os.fsencode(path), REPAIR_MODES[repair], ctypes.byref(r))
    return {f: getattr(r, f) for f in _CHECK_FIELDS}


class Image:
    """An open image. Usable from several threads at once, except close()."""

    def __init__(self, path, fmt=None, read_only=False, cache="writeback", no_backing=False):
        o = _OpenOptions()
        _lib.keel_open_options_init(ctypes.byref(o))
        o.format = fmt.encode() if fmt else None
        o.read_only = int(read_only)
        o.cache = CACHE_MODES[cache]
        o.no_backing = int(no_backing)
        self._h = _P()
        _call(_lib.keel_open, os.fsencode(path), ctypes.byref(o), ctypes.byref(self._h))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self._h:
            h, self._h = self._h, _P()
            _call(_lib.keel_close, h)

    @property
    def size(self):
        return _lib.keel_size(self._h)

    def read(self, offset, length):
        buf = ctypes.create_string_buffer(length)
        _call(_lib.keel_read, self._h, offset, buf, length)
        return buf.raw

    def write(self, offset, data, fua=False):
        _call(_lib.keel_write, self._h, offset, data, len(data), WRITE_FUA if fua else 0)

    def write_zeroes(self, offset, length, may_unmap=False, fua=False):
        flags = (ZERO_MAY_UNMAP if may_unmap else 0) | (WRITE_FUA if fua else 0)
        _call(_lib.keel_write_zeroes, self._h, offset, length, flags)

    def discard(self, offset, length):
        _call(_lib.keel_discard, self._h, offset, length)

    def flush(self):
        _call(_lib.keel_flush, self._h)

    def block_status(self, offset, max_length):
        e = _Extent()
        _call(_lib.keel_block_status, self._h, offset, max_length, ctypes.byref(e))
        return {"offset": e.offset, "length": e.length, "data": bool(e.data),
                "zero": bool(e.zero), "depth": e.depth, "compressed": bool(e.compressed),
                "host_offset": e.host_offset if e.has_host_offset else None}

    def info(self):
        p = ctypes.c_void_p()
        _call(_lib.keel_info_json, self._h, ctypes.byref(p))
        try:
            return json.loads(ctypes.string_at(p).decode())
        finally:
            _lib.keel_free(p)
