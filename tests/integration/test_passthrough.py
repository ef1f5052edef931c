"""FUSE passthrough on read-only mounts (root, a kernel with FUSE_PASSTHROUGH): the kernel reads
the layers' files itself, so no READ reaches the daemon; contents, mmap, seeks and the files of
several layers read exactly as on disk. Read-write mounts keep every read in the daemon."""
import json
import mmap
import os

import pytest

from tests.integration.conftest import requires_daemon
from tests.mountutil import requires_fuse, unionfs_mount

pytestmark = [requires_fuse, requires_daemon]


def _ops(mnt):
    with open(os.path.join(mnt, ".unionfs", "stats"), "rb") as f:
        return json.loads(f.read())["ops"]


def _count(doc, op):
    return doc.get(op, {"count": 0})["count"]


def _kernel_passes_through():
    try:
        with open("/proc/config.gz", "rb") as f:
            import gzip
            return b"CONFIG_FUSE_PASSTHROUGH=y" in gzip.decompress(f.read())
    except OSError:
        return None


needs_passthrough = pytest.mark.skipif(
    os.geteuid() != 0 or _kernel_passes_through() is False,
    reason="FUSE passthrough needs root and a kernel built with CONFIG_FUSE_PASSTHROUGH")


@needs_passthrough
def test_read_only_mount_reads_without_the_daemon(stack2):
    l0, l1 = stack2.lowers
    data = os.urandom(3 * 1024 * 1024 + 17)
    (l1 / "big").write_bytes(data)
    (l0 / "top").write_bytes(b"upper layer wins")
    (l1 / "top").write_bytes(b"hidden")
    with unionfs_mount(stack2.lowers, None, None, stack2.mnt) as mnt:
        # reading the stats file is itself counted (its open and reads): measure that first
        first, before = _ops(mnt), _ops(mnt)
        per_stats = {k: _count(before, k) - _count(first, k) for k in ("open", "read")}
        with open(os.path.join(mnt, "big"), "rb") as f:
            assert f.read() == data
            f.seek(1024 * 1024 + 5)
            assert f.read(100) == data[1024 * 1024 + 5:1024 * 1024 + 105]
            with mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
                assert m[-17:] == data[-17:]
        with open(os.path.join(mnt, "top"), "rb") as f:
            assert f.read() == b"upper layer wins"
        after = _ops(mnt)
        assert _count(after, "open") - _count(before, "open") == per_stats["open"] + 2
        # no READ for either file: every byte came from the kernel reading the layer
        assert _count(after, "read") - _count(before, "read") == per_stats["read"]


@needs_passthrough
def test_read_write_mount_serves_reads_itself(stack):
    data = os.urandom(200_000)
    (stack.lower / "f").write_bytes(data)
    with unionfs_mount([stack.lower], stack.upper, stack.work, stack.mnt) as mnt:
        first, before = _ops(mnt), _ops(mnt)
        per_stats = _count(before, "read") - _count(first, "read")
        with open(os.path.join(mnt, "f"), "rb") as f:
            assert f.read() == data
        # the file's reads reach the daemon (copy-up and tracing need it to see them)
        assert _count(_ops(mnt), "read") - _count(before, "read") > per_stats
