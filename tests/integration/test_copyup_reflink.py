"""Copy-up on a filesystem that can share extents: lower, upper and work on one small xfs made
with reflink=1 on a loop device, a real mount, and the upper's copy sharing the lower's extents
(FIEMAP's shared flag, as `filefrag -v` shows it). The end result only: copy_file_range shares
extents too within one xfs, and that a clone goes unflushed is tests/unit/test_copyup.py's.
Skipped where mkfs.xfs (package xfsprogs) is missing or no loop device can be made."""
import os
import shutil
import subprocess

import pytest

from tests.mountutil import requires_fuse, requires_root
from tests.integration.conftest import requires_daemon, union

pytestmark = [requires_fuse, requires_root, requires_daemon]

MiB = 1 << 20


def _run(*cmd):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


@pytest.fixture
def xfs(tmp_path):
    """A mounted 300 MiB xfs with reflink (a sparse image on a loop device): its path."""
    if not shutil.which("mkfs.xfs"):
        pytest.skip("mkfs.xfs missing (apt-get install xfsprogs)")
    img, mnt = tmp_path / "xfs.img", tmp_path / "xfs"
    mnt.mkdir()
    with open(img, "wb") as f:
        f.truncate(300 * MiB)          # mkfs.xfs's smallest size
    p = _run("mkfs.xfs", "-q", "-m", "reflink=1", str(img))
    if p.returncode:
        pytest.skip("mkfs.xfs -m reflink=1 failed: %s" % p.stderr.strip())
    p = _run("losetup", "--find", "--show", str(img))
    if p.returncode:
        pytest.skip("no loop device: %s" % p.stderr.strip())
    loop = p.stdout.strip()
    try:
        p = _run("mount", "-t", "xfs", loop, str(mnt))
        if p.returncode:
            pytest.skip("cannot mount xfs: %s" % p.stderr.strip())
        try:
            yield mnt
        finally:
            if _run("umount", str(mnt)).returncode:
                _run("umount", "-l", str(mnt))
    finally:
        _run("losetup", "-d", loop)


def shared_extents(path):
    """(extents, shared extents) of a file, from `filefrag -v`."""
    out = _run("filefrag", "-v", str(path)).stdout.splitlines()
    rows = [l for l in out if l.strip()[:1].isdigit() and ":" in l]
    return len(rows), sum(1 for l in rows if "shared" in l.split()[-1])


@pytest.mark.timeout(30)
def test_copy_up_on_xfs_shares_the_lower_extents(xfs, tmp_path):
    lower, upper, work = xfs / "lower", xfs / "upper", xfs / "work"
    for d in (lower, upper, work):
        d.mkdir()
    data = os.urandom(4 * MiB)
    (lower / "f").write_bytes(data)
    with open(lower / "sparse", "wb") as f:      # 1 GiB, one byte of data
        f.truncate(1 << 30)
        f.seek(512 * MiB)
        f.write(b"Z")
    os.sync()
    with union([lower], upper, work, tmp_path / "mnt") as m:
        os.chmod(os.path.join(m, "f"), 0o600)            # a copy-up with all the data
        os.chmod(os.path.join(m, "sparse"), 0o600)
        with open(os.path.join(m, "f"), "rb") as f:
            assert f.read() == data
    up = upper / "f"
    assert up.read_bytes() == data
    n, shared = shared_extents(up)
    assert n >= 1 and shared == n, _run("filefrag", "-v", str(up)).stdout
    sp = os.stat(upper / "sparse")
    assert sp.st_size == 1 << 30
    assert sp.st_blocks * 512 <= MiB, "the copy allocates %d bytes" % (sp.st_blocks * 512)
    with open(upper / "sparse", "rb") as f:
        assert os.pread(f.fileno(), 2, 512 * MiB - 1) == b"\0Z"
