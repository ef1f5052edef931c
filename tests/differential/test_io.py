"""Open flags on lower files (O_APPEND, O_EXCL, O_TRUNC), fsync, fallocate, sparse copy-up,
statfs."""
import os

import pytest

from tests.differential._diff import (DIFFERENTIAL, File, attempt, layers, ls, P, read,
                                      run_differential, st, write)

pytestmark = DIFFERENTIAL

DATA = b"0123456789" * 10
LOWER = layers({"f": File(DATA, mode=0o644, xattrs={"user.k": b"v"}), "g": b"gg"})


def _open_write_close(p, flags, data=b"", seek=None):
    fd = os.open(p, flags, 0o600)
    try:
        if seek is not None:
            os.lseek(fd, seek, os.SEEK_SET)
        n = os.write(fd, data) if data else 0
        return n, os.fstat(fd).st_size
    finally:
        os.close(fd)


@pytest.mark.parametrize("mode", ["append", "append_after_seek", "trunc_wronly", "trunc_rdonly",
                                  "trunc_rdwr_write", "excl_creat", "creat_no_excl", "rdwr_seek",
                                  "excl_without_creat"])
def test_open_flags_on_lower_file(tmp_path, mode):
    flags, data, seek = {
        "append": (os.O_WRONLY | os.O_APPEND, b"APP", None),
        "append_after_seek": (os.O_RDWR | os.O_APPEND, b"APP", 0),     # append ignores seek
        "trunc_wronly": (os.O_WRONLY | os.O_TRUNC, b"", None),
        "trunc_rdonly": (os.O_RDONLY | os.O_TRUNC, b"", None),
        "trunc_rdwr_write": (os.O_RDWR | os.O_TRUNC, b"new", None),
        "excl_creat": (os.O_WRONLY | os.O_CREAT | os.O_EXCL, b"x", None),
        "creat_no_excl": (os.O_WRONLY | os.O_CREAT, b"XY", None),
        "rdwr_seek": (os.O_RDWR, b"MID", 50),
        "excl_without_creat": (os.O_WRONLY | os.O_EXCL, b"Z", None),
    }[mode]

    def scenario(mnt):
        p = P(mnt, "f")
        return [attempt(_open_write_close, p, flags, data, seek), attempt(read, p), st(p),
                attempt(os.getxattr, p, "user.k")]

    res = run_differential(tmp_path, LOWER, scenario)
    if mode == "append":
        assert res.kernel.outcomes[1] == DATA + b"APP"
    if mode == "excl_creat":
        assert res.kernel.outcomes[0] == "EEXIST"


def test_append_from_two_descriptors(tmp_path):
    def scenario(mnt):
        p = P(mnt, "f")
        a = os.open(p, os.O_WRONLY | os.O_APPEND)
        b = os.open(p, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(a, b"A")
            os.write(b, b"B")
            os.write(a, b"C")
        finally:
            os.close(a)
            os.close(b)
        return [read(p)]

    res = run_differential(tmp_path, LOWER, scenario)
    assert res.kernel.outcomes == [DATA + b"ABC"]


def test_read_fd_opened_before_copy_up(tmp_path):
    """An fd opened read-only on the lower file before another fd copies it up: what each sees
    (the kernel keeps the old fd on the lower file)."""
    def scenario(mnt):
        p = P(mnt, "f")
        r = os.open(p, os.O_RDONLY)
        try:
            w = os.open(p, os.O_WRONLY)
            try:
                os.write(w, b"CHANGED")
            finally:
                os.close(w)
            os.lseek(r, 0, os.SEEK_SET)
            old_view = os.read(r, 10)
        finally:
            os.close(r)
        return [old_view, read(p)[:10]]

    run_differential(tmp_path, LOWER, scenario)


def test_fsync_and_fdatasync(tmp_path):
    def scenario(mnt):
        out = []
        for name in ("f", "new"):
            fd = os.open(P(mnt, name), os.O_RDWR | os.O_CREAT, 0o644)
            try:
                os.write(fd, b"synced")
                out += [attempt(os.fsync, fd), attempt(os.fdatasync, fd)]
            finally:
                os.close(fd)
        d = os.open(P(mnt), os.O_RDONLY | os.O_DIRECTORY)
        try:
            out.append(attempt(os.fsync, d))
        finally:
            os.close(d)
        out += [read(P(mnt, "f")), read(P(mnt, "new"))]
        return out

    res = run_differential(tmp_path, LOWER, scenario)
    assert res.kernel.outcomes[:4] == [None] * 4


@pytest.mark.parametrize("target", ["lower", "new"])
def test_posix_fallocate(tmp_path, target):
    def scenario(mnt):
        p = P(mnt, "f" if target == "lower" else "new")
        fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            out = [attempt(os.posix_fallocate, fd, 0, 1 << 20), os.fstat(fd).st_size]
            out.append(attempt(os.posix_fallocate, fd, 4 << 20, 4096))
            out.append(os.fstat(fd).st_size)
            s = os.fstat(fd)
            out.append(s.st_blocks * 512 >= (1 << 20))          # really allocated
        finally:
            os.close(fd)
        data = read(p)
        out += [len(data), data[:len(DATA)] == DATA, data[-4096:] == b"\0" * 4096]
        return out

    res = run_differential(tmp_path, LOWER, scenario)
    assert res.kernel.outcomes[0] is None


def test_sparse_lower_file_stays_sparse_after_copy_up(tmp_path):
    off = 64 << 20
    build = layers({"sparse": File(b"Z", sparse_at=off)})

    def scenario(mnt):
        p = P(mnt, "sparse")
        s0 = os.stat(p)
        out = [s0.st_size, s0.st_blocks * 512 < (1 << 20)]
        out.append(attempt(write, p, b"!", os.O_WRONLY | os.O_APPEND))
        s1 = os.stat(p)
        out += [s1.st_size, s1.st_blocks * 512 < (1 << 20)]
        with open(p, "rb") as f:
            f.seek(off - 2)
            out.append(f.read())
            f.seek(1234567)
            out.append(f.read(8))
        return out

    res = run_differential(tmp_path, build, scenario)
    for side in (res.kernel, res.unionfs):
        assert side.outcomes[3] == off + 2
        assert side.outcomes[4] is True, side.name + ": copy-up filled the holes"


def test_statfs(tmp_path):
    def scenario(mnt):
        v = os.statvfs(mnt)
        v2 = os.statvfs(P(mnt, "f"))
        return [v.f_bsize > 0, v.f_frsize > 0, v.f_blocks > 0, 0 <= v.f_bfree <= v.f_blocks,
                0 <= v.f_bavail <= v.f_blocks, v.f_files >= 0, v.f_namemax,
                v2.f_blocks == v.f_blocks]

    res = run_differential(tmp_path, LOWER, scenario)
    assert res.unionfs.outcomes[:6] == [True] * 6


def test_write_at_offsets_and_read_back(tmp_path):
    def scenario(mnt):
        p = P(mnt, "f")
        out = [attempt(_open_write_close, p, os.O_WRONLY, b"hole-after", 200)]
        out.append(read(p))
        with open(p, "r+b") as f:
            f.seek(5)
            f.write(b"__")
            f.flush()
            f.seek(0)
            out.append(f.read(12))
        out.append(st(p))
        return out

    run_differential(tmp_path, LOWER, scenario)


def test_mmap_write_copies_up(tmp_path):
    import mmap

    def scenario(mnt):
        p = P(mnt, "f")
        fd = os.open(p, os.O_RDWR)
        try:
            mm = mmap.mmap(fd, 0)
            mm[0:4] = b"MMAP"
            mm.flush()
            mm.close()
        finally:
            os.close(fd)
        return [read(p)[:10], ls(P(mnt))]

    res = run_differential(tmp_path, LOWER, scenario)
    assert res.kernel.outcomes[0] == b"MMAP456789"
