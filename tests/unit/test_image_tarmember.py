"""Copying a member's data out of a layer tar: in the kernel, else pread/pwrite (no FUSE)."""
import errno
import io
import os

import pytest

from unionfs.image import tarmember
from unionfs.image.errors import ImageError
from unionfs.image.extract import extract_tar
from tests.mountutil import load_script

fx = load_script("build_image_fixtures")
E = fx.E


def _segments_copy(tmp_path, fileobj, start, segments):
    out = os.open(tmp_path / "out", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        n = tarmember.DataCopier(fileobj).copy(start, out, segments)
        return n, os.pread(out, 1 << 20, 0)
    finally:
        os.close(out)


def test_copy_in_kernel_then_fallback(tmp_path, monkeypatch):
    data = bytes(range(256)) * 400
    (tmp_path / "t").write_bytes(data)
    calls = []
    real = os.copy_file_range

    def refusing(*a):
        calls.append(a)
        if len(calls) > 1:
            raise OSError(errno.EXDEV, "cross-device")
        return real(a[0], a[1], min(a[2], 1000), *a[3:])
    monkeypatch.setattr(os, "copy_file_range", refusing)
    with open(tmp_path / "t", "rb") as f:
        n, got = _segments_copy(tmp_path, f, 100, [(0, 5000), (8000, 3000)])
    assert n == 8000 and len(calls) == 2
    assert got[:5000] == data[100:5100] and got[8000:11000] == data[5100:8100]
    assert got[5000:8000] == b"\0" * 3000


def test_copy_from_memory_and_short_tar(tmp_path):
    data = os.urandom(4096)
    n, got = _segments_copy(tmp_path, io.BytesIO(data), 96, [(0, 10_000)])
    assert n == 4000 and got == data[96:]


@pytest.mark.parametrize("in_kernel", [True, False])
def test_extracted_data_either_way(tmp_path, monkeypatch, in_kernel):
    if not in_kernel:
        def refuse(*a):
            raise OSError(errno.ENOSYS, "no copy_file_range")
        monkeypatch.setattr(os, "copy_file_range", refuse)
    big, small = os.urandom(3 << 20), b"x" * 700
    tar = tmp_path / "layer.tar"
    tar.write_bytes(fx.layer_tar([E("d/big", data=big), E("d/small", data=small)]))
    root = tmp_path / "root"
    root.mkdir()
    res = extract_tar(str(tar), str(root))
    assert (root / "d/big").read_bytes() == big and (root / "d/small").read_bytes() == small
    assert res.data == len(big) + len(small)
    # the same tar cut inside the big member's data
    cut = tmp_path / "cut.tar"
    cut.write_bytes(tar.read_bytes()[:2 << 20])
    root2 = tmp_path / "root2"
    root2.mkdir()
    with pytest.raises(ImageError, match="truncated file data|corrupt tar|unexpected end"):
        extract_tar(str(cut), str(root2))
