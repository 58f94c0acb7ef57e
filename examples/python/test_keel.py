"""Proves that the ctypes module (keel.py) reaches libkeel's C API correctly: create, write,
flush, read back, zeroes, block status, info and check agree with what was written and with
qemu-img (the oracle), and failures raise KeelError with the C API's code and errno."""
import errno
import subprocess

import pytest

import keel


def test_write_flush_read_check(tmp_path):
    path = str(tmp_path / "a.qcow2")
    keel.create(path, 16 << 20)
    with keel.Image(path) as img:
        assert img.size == 16 << 20
        img.write(65536, b"\x5a" * 131072)
        img.write(8 << 20, b"fua!" * 1024, fua=True)
        img.flush()
        assert img.read(65536, 131072) == b"\x5a" * 131072
        assert img.read(0, 4096) == bytes(4096)
        img.write_zeroes(65536, 65536, may_unmap=True)
        ext = img.block_status(65536, 16 << 20)
        assert ext["zero"] and not ext["data"] and ext["length"] == 65536
        ext = img.block_status(131072, 16 << 20)
        assert ext["data"] and ext["depth"] == 1
        info = img.info()
        assert info["format"] == "qcow2" and info["virtual-size"] == 16 << 20
    assert keel.check(path)["corruptions"] == 0
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "read -P 0 64k 64k", "-c",
                    "read -P 0x5a 128k 64k", path], check=True, capture_output=True)
    subprocess.run(["qemu-img", "check", "-q", path], check=True)


def test_errors_raise_with_code_and_errno(tmp_path):
    with pytest.raises(keel.KeelError) as e:
        keel.Image(str(tmp_path / "missing.qcow2"))
    assert e.value.errno == errno.ENOENT
    assert e.value.kind == "Not found"
    assert "missing.qcow2" in str(e.value)
    path = str(tmp_path / "b.qcow2")
    keel.create(path, 1 << 20)
    with keel.Image(path, read_only=True) as img:
        with pytest.raises(keel.KeelError) as e:
            img.write(0, b"x" * 512)
        assert e.value.code == 5  # KEEL_E_READ_ONLY
        with pytest.raises(keel.KeelError) as e:
            img.read(1 << 20, 512)
        assert e.value.errno == errno.EINVAL


def test_version():
    assert keel.version().count(".") == 2
