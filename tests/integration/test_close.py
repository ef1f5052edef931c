"""close(2) through the mount: the caller waits for FLUSH, so a close that has nothing to flush
(a descriptor opened read-only) is answered by the kernel alone (FOPEN_NOFLUSH); one opened for
writing still reaches the daemon, which brings a hard link's other names up to date there."""
import json
import os

from tests.integration.conftest import requires_daemon
from tests.mountutil import requires_fuse, unionfs_mount

pytestmark = [requires_fuse, requires_daemon]


def _flushes(mnt):
    with open(os.path.join(mnt, ".unionfs", "stats"), "rb") as f:
        return json.loads(f.read())["ops"].get("flush", {"count": 0})["count"]


def test_closing_read_only_descriptors_sends_no_flush(stack):
    (stack.lower / "lower.txt").write_bytes(b"from below\n")
    with unionfs_mount([stack.lower], stack.upper, stack.work, stack.mnt) as mnt:
        with open(os.path.join(mnt, "upper.txt"), "wb") as f:
            f.write(b"made here\n")
        before = _flushes(mnt)
        for _ in range(20):
            for name, data in (("lower.txt", b"from below\n"), ("upper.txt", b"made here\n")):
                with open(os.path.join(mnt, name), "rb") as f:
                    assert f.read() == data
        assert _flushes(mnt) == before  # nor does reading the stats file flush


def test_closing_a_written_descriptor_flushes_and_updates_the_other_name(stack):
    (stack.lower / "a").write_bytes(b"1")
    with unionfs_mount([stack.lower], stack.upper, stack.work, stack.mnt,
                       options=("nopassthrough",)) as mnt:
        a, b = os.path.join(mnt, "a"), os.path.join(mnt, "b")
        os.link(a, b)
        assert os.stat(b).st_size == 1
        before = _flushes(mnt)
        with open(a, "ab") as f:
            f.write(b"23")
        assert _flushes(mnt) == before + 1
        assert os.stat(b).st_size == 3
        with open(b, "rb") as f:
            assert f.read() == b"123"
