"""FUSE over io_uring (-o uring, fuse/uring.py): with the fuse module's enable_uring=Y every
request but INIT and FORGET comes through the ring and a workload reads as without it; with N
the mount falls back to /dev/fuse, says why in its stats, and works. The parameter is restored
to what it was in `finally`."""
import contextlib
import json
import os

import pytest

from tests.integration.conftest import requires_daemon
from tests.mountutil import requires_fuse, unionfs_mount

PARAM = "/sys/module/fuse/parameters/enable_uring"

pytestmark = [requires_fuse, requires_daemon, pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists(PARAM),
    reason="needs root and a fuse module with FUSE over io_uring (kernel 6.14+)")]


@contextlib.contextmanager
def enable_uring(value):
    with open(PARAM) as f:
        before = f.read().strip()
    try:
        with open(PARAM, "w") as f:
            f.write(value)
        yield
    finally:
        with open(PARAM, "w") as f:
            f.write(before)


def _transport(mnt):
    with open(os.path.join(mnt, ".unionfs", "stats"), "rb") as f:
        return json.loads(f.read())["transport"]


def _workload(mnt):
    """create, write, read, rename (handed on to a helper thread), unlink, a large write and
    read, listing; returns what a user sees."""
    seen = {}
    with open(os.path.join(mnt, "new"), "wb") as f:
        f.write(b"hello")
    os.rename(os.path.join(mnt, "new"), os.path.join(mnt, "moved"))
    with open(os.path.join(mnt, "moved"), "rb") as f:
        seen["moved"] = f.read()
    big = bytes(range(256)) * 9000  # more than one request's payload
    with open(os.path.join(mnt, "big"), "wb") as f:
        f.write(big)
    with open(os.path.join(mnt, "big"), "rb") as f:
        seen["big"] = f.read() == big
    with open(os.path.join(mnt, "lower-file"), "ab") as f:  # copy-up
        f.write(b" appended")
    with open(os.path.join(mnt, "lower-file"), "rb") as f:
        seen["lower-file"] = f.read()
    os.mkdir(os.path.join(mnt, "d"))
    for n in ("x", "y"):
        open(os.path.join(mnt, "d", n), "w").close()
    os.unlink(os.path.join(mnt, "d", "x"))
    seen["d"] = sorted(os.listdir(os.path.join(mnt, "d")))
    os.unlink(os.path.join(mnt, "moved"))
    seen["root"] = sorted(n for n in os.listdir(mnt) if n != ".unionfs")
    return seen


EXPECTED = {"moved": b"hello", "big": True, "lower-file": b"from lower appended",
            "d": ["y"], "root": ["big", "d", "lower-file"]}


def _run(stack, enable):
    """The workload on a -o uring mount made while enable_uring is `enable`; its transport."""
    (stack.lower / "lower-file").write_bytes(b"from lower")
    with enable_uring(enable):
        with unionfs_mount([stack.lower], stack.upper, stack.work, stack.mnt,
                           options=["uring"]) as mnt:
            assert _workload(mnt) == EXPECTED
            t = _transport(mnt)
    assert (stack.upper / "lower-file").read_bytes() == b"from lower appended"
    return t


def test_requests_come_through_the_ring(stack):
    t = _run(stack, "Y")
    assert t["uring"] and t["fallback"] is None
    assert t["ring_requests"] > 20
    assert t["dev_requests"] == 0  # nothing but INIT and FORGETs read from /dev/fuse


def test_falls_back_to_dev_fuse_when_the_kernel_does_not_offer_it(stack):
    t = _run(stack, "N")
    assert not t["uring"] and "enable_uring" in t["fallback"]
    assert t["ring_requests"] == 0 and t["dev_requests"] > 20
