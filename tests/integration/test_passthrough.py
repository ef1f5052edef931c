"""FUSE passthrough (root, a kernel with FUSE_PASSTHROUGH): the kernel reads the files of a
read-only mount, and reads and writes the upper files of a read-write one, itself, so no READ or
WRITE reaches the daemon; contents, mmap, seeks, attributes after writes, several opens of one
file, copy-up under a reader and setuid clearing behave as without it and as on the kernel's
overlayfs. Lower files of a read-write mount, and files opened while someone traces, are served
by the daemon (fuse/passthrough.py says why)."""
import json
import mmap
import os
import pathlib
import subprocess
import threading
import time

import pytest

from tests.integration.conftest import requires_daemon
from tests.mountutil import (have_kernel_overlay, kernel_overlay_mount, requires_fuse,
                             unionfs_mount)

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


def _delta(mnt, before, *ops):
    after = _ops(mnt)
    return {op: _count(after, op) - _count(before, op) for op in ops}


def _stats_cost(mnt):
    """What reading the stats file itself adds to the counts (its open, reads, release)."""
    first, before = _ops(mnt), _ops(mnt)
    return {op: _count(before, op) - _count(first, op) for op in ("open", "read", "release")}


@needs_passthrough
def test_read_only_mount_opens_one_file_many_times_at_once(stack):
    """The kernel wants one backing file per inode: a second open while the first is held got
    EIO when each open registered its own."""
    data = os.urandom(300_000)
    (stack.lower / "lib.so").write_bytes(data)
    with unionfs_mount([stack.lower], None, None, stack.mnt) as mnt:
        path = os.path.join(mnt, "lib.so")
        held = [open(path, "rb") for _ in range(3)]
        try:
            assert [f.read() for f in held] == [data] * 3
        finally:
            for f in held:
                f.close()
        errors = []

        def reader():
            try:
                for _ in range(150):
                    with open(path, "rb") as f:
                        if f.read(4096) != data[:4096]:
                            errors.append("bad data")
            except OSError as e:
                errors.append(e)

        threads = [threading.Thread(target=reader) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []


@needs_passthrough
def test_read_write_mount_passes_upper_files_through(stack):
    (stack.lower / "low").write_bytes(b"lower data " * 1000)
    with unionfs_mount([stack.lower], stack.upper, stack.work, stack.mnt) as mnt:
        cost = _stats_cost(mnt)
        before = _ops(mnt)
        new = os.path.join(mnt, "new")
        data = os.urandom(1024 * 1024 + 3)
        with open(new, "wb") as f:          # made in the upper: passes through
            f.write(data)
        st = os.stat(new)
        assert st.st_size == len(data)
        with open(os.path.join(mnt, "low"), "r+b") as f:   # copied up at open: passes through
            f.write(b"LOWER")
        with open(new, "rb") as f:
            assert f.read() == data
            with mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
                assert m[-3:] == data[-3:]
        with open(os.path.join(mnt, "low"), "rb") as f:
            assert f.read(11) == b"LOWER data "
        d = _delta(mnt, before, "write", "read", "open")
        assert d["write"] == 0 and d["read"] == cost["read"]  # none for the files
        assert d["open"] == cost["open"] + 3  # and one create
        assert (stack.upper / "new").read_bytes() == data
        assert (stack.upper / "low").read_bytes()[:11] == b"LOWER data "
        assert (stack.lower / "low").read_bytes()[:5] == b"lower"


@needs_passthrough
def test_read_write_mount_serves_lower_files_itself(stack):
    data = os.urandom(200_000)
    (stack.lower / "f").write_bytes(data)
    with unionfs_mount([stack.lower], stack.upper, stack.work, stack.mnt) as mnt:
        cost = _stats_cost(mnt)
        before = _ops(mnt)
        with open(os.path.join(mnt, "f"), "rb") as f:
            assert f.read() == data
        # a lower file's reads reach the daemon: a copy-up would move its data under a reader
        assert _delta(mnt, before, "read")["read"] > cost["read"]


@needs_passthrough
def test_without_passthrough_every_write_reaches_the_daemon(stack):
    with unionfs_mount([stack.lower], stack.upper, stack.work, stack.mnt,
                       options=("nopassthrough",)) as mnt:
        before = _ops(mnt)
        with open(os.path.join(mnt, "new"), "wb") as f:
            f.write(b"x" * 10000)
        assert _delta(mnt, before, "write")["write"] >= 1


def _attributes_follow_writes(mnt):
    """(size, mtime moved, content) as a program sees them after writes through an open file."""
    path = os.path.join(mnt, "grow")
    with open(path, "wb") as f:
        f.write(b"a" * 100)
    st0 = os.stat(path)
    time.sleep(0.02)
    seen = []
    with open(path, "r+b") as f:
        f.seek(0, 2)
        f.write(b"b" * 5000)
        f.flush()
        seen.append(os.stat(path).st_size)     # while open, through another name lookup
        os.ftruncate(f.fileno(), 3000)
        seen.append(os.fstat(f.fileno()).st_size)
    st1 = os.stat(path)
    with open(path, "rb") as f:
        body = f.read()
    return seen + [st1.st_size, st1.st_mtime_ns > st0.st_mtime_ns, body]


def _both(tmp_path, lowers_setup, scenario):
    """`scenario(mnt)` on unionfs and on the kernel's overlayfs over the same lower tree, in
    directories other users may traverse: (ours, the kernel's)."""
    out = []
    for name in ("unionfs", "kernel"):
        base = pathlib.Path(tmp_path) / name
        lower, upper, work, mnt = (base / d for d in ("lower", "upper", "work", "mnt"))
        for d in (base, lower, upper, work, mnt):
            d.mkdir()
            os.chmod(d, 0o755)
        lowers_setup(lower)
        if name == "unionfs":
            mount = unionfs_mount([lower], upper, work, mnt, options=("allow_other",))
        else:
            mount = kernel_overlay_mount([lower], upper, work, mnt)
        with mount as m:
            out.append(scenario(str(m)))
    return out


needs_kernel_overlay = pytest.mark.skipif(not have_kernel_overlay(),
                                          reason="the kernel's overlayfs is not available")


@needs_passthrough
@needs_kernel_overlay
def test_attributes_after_passthrough_writes_match_the_kernel(tmp_path):
    ours, kernel = _both(tmp_path, lambda lower: None, _attributes_follow_writes)
    assert ours == kernel
    assert ours[:3] == [5100, 3000, 3000] and ours[3] is True


def _reader_across_copy_up(mnt):
    """A reader opened on a lower file, then a writer copies it up: what the reader reads."""
    path = os.path.join(mnt, "f")
    with open(path, "rb", buffering=0) as reader:
        first = reader.read(5)
        with open(path, "r+b") as writer:
            writer.write(b"WRITE")
        reader.seek(0)
        after = reader.read(5)
        with open(path, "rb") as late:
            late_read = late.read(5)
    return first, after, late_read


@needs_passthrough
@needs_kernel_overlay
def test_reader_opened_before_copy_up_sees_the_write_as_on_the_kernel(tmp_path):
    ours, kernel = _both(tmp_path, lambda lower: (lower / "f").write_bytes(b"lower text"),
                         _reader_across_copy_up)
    assert ours == kernel == (b"lower", b"WRITE", b"WRITE")


def _setid_cleared_by_write(mnt):
    """Modes of set-id files after a write by an unprivileged user (nobody), among them one
    made set-id while that user held it open for writing."""
    os.chmod(mnt, 0o777)
    names = {"suid": 0o4777, "sgid": 0o2777, "plain": 0o0777}
    for name, mode in names.items():
        p = os.path.join(mnt, name)
        with open(p, "wb") as f:
            f.write(b"0123")
        os.chmod(p, mode)
    held = os.path.join(mnt, "held")
    with open(held, "wb") as f:
        f.write(b"0123")
    os.chmod(held, 0o777)
    script = ("import os, sys, time\n"
              "fd = os.open(sys.argv[1], os.O_WRONLY)\n"
              "print('open', flush=True); sys.stdin.readline()\n"
              "os.pwrite(fd, b'x', 0); os.close(fd)\n"
              "for p in sys.argv[2:]:\n"
              "    with open(p, 'r+b') as f: f.write(b'x')\n")
    proc = subprocess.Popen(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3",
         "-c", script, held] + [os.path.join(mnt, n) for n in names],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "open\n"
        os.chmod(held, 0o4777)          # set-uid while the writer holds it open
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    return {n: oct(os.stat(os.path.join(mnt, n)).st_mode & 0o7777)
            for n in list(names) + ["held"]}


@needs_passthrough
@needs_kernel_overlay
def test_writes_by_others_clear_setuid_as_on_the_kernel():
    from tests.integration.test_permissions import public_tmp
    with public_tmp("unionfs-pt-") as base:
        ours, kernel = _both(base, lambda lower: None, _setid_cleared_by_write)
    assert ours == kernel
    assert ours == {"suid": "0o777", "sgid": "0o777", "plain": "0o777", "held": "0o777"}


def _hard_link_sizes(mnt):
    a, b = os.path.join(mnt, "a"), os.path.join(mnt, "b")
    with open(a, "wb") as f:
        f.write(b"1")
    os.link(a, b)
    os.stat(b)  # its attributes are now cached under the second name
    with open(a, "ab") as f:
        f.write(b"2" * 999)
    return os.stat(b).st_size, os.stat(a).st_size, open(b, "rb").read()[-3:]


@needs_passthrough
@needs_kernel_overlay
def test_hard_link_written_through_one_name_shows_under_the_other(tmp_path):
    ours, kernel = _both(tmp_path, lambda lower: None, _hard_link_sizes)
    assert ours == kernel == (1000, 1000, b"222")


@needs_passthrough
def test_writes_are_traced_while_someone_traces(stack):
    """The daemon sees writes of files opened while the trace is read; once nobody traces,
    the kernel writes them itself."""
    with unionfs_mount([stack.lower], stack.upper, stack.work, stack.mnt) as mnt:
        path = os.path.join(mnt, "t")
        with open(path, "wb") as f:
            f.write(b"x")
        trace = os.open(os.path.join(mnt, ".unionfs", "trace"), os.O_RDONLY)
        try:
            before = _ops(mnt)
            with open(path, "ab") as f:
                f.write(b"traced")
            assert _delta(mnt, before, "write")["write"] == 1
        finally:
            os.close(trace)
        _wait_untraced(mnt)
        before = _ops(mnt)
        with open(path, "ab") as f:
            f.write(b"not traced")
        assert _delta(mnt, before, "write")["write"] == 0
        assert (stack.upper / "t").read_bytes() == b"xtracednot traced"


@needs_passthrough
def test_page_cache_does_not_outlive_passthrough_writes(stack):
    """A file read through the page cache (while traced), then written by the kernel itself
    (nobody traces), then read through the page cache again: the second read sees the write."""
    trace_path = os.path.join(str(stack.mnt), ".unionfs", "trace")
    with unionfs_mount([stack.lower], stack.upper, stack.work, stack.mnt) as mnt:
        path = os.path.join(mnt, "f")
        with open(path, "wb") as f:
            f.write(b"A" * 8192)
        trace = os.open(trace_path, os.O_RDONLY)
        try:
            with open(path, "rb", buffering=0) as f:
                assert f.read() == b"A" * 8192      # now in the page cache
        finally:
            os.close(trace)
        _wait_untraced(mnt)
        with open(path, "r+b", buffering=0) as f:
            f.write(b"B" * 4096)
            with mmap.mmap(f.fileno(), 8192) as m:   # shared writable map of the backing file
                m[8000:8005] = b"MMAPD"
                m.flush()
        trace = os.open(trace_path, os.O_RDONLY)
        try:
            with open(path, "rb", buffering=0) as f:
                body = f.read()
        finally:
            os.close(trace)
        assert body == b"B" * 4096 + b"A" * 3904 + b"MMAPD" + b"A" * 187
        assert (stack.upper / "f").read_bytes() == body


@needs_passthrough
def test_lower_file_readers_then_writers_then_passthrough(stack):
    """Opens of an inode served through the page cache (a lower file's reader, a writer copying
    it up under it) keep it there until all close; the next open passes through; no open fails."""
    (stack.lower / "f").write_bytes(b"lower")
    with unionfs_mount([stack.lower], stack.upper, stack.work, stack.mnt) as mnt:
        path = os.path.join(mnt, "f")
        reader = open(path, "rb", buffering=0)
        before = _ops(mnt)
        with open(path, "r+b", buffering=0) as w:     # copy-up; the inode has a cached open
            w.write(b"UPPER")
        assert _delta(mnt, before, "write")["write"] == 1
        assert reader.read() == b"UPPER"
        reader.close()
        before = _ops(mnt)
        with open(path, "r+b", buffering=0) as w:     # alone now: the kernel writes it
            w.write(b"again")
        assert _delta(mnt, before, "write")["write"] == 0
        with open(path, "rb") as f:
            assert f.read() == b"again"


def _wait_untraced(mnt):
    deadline = time.monotonic() + 10
    while _subscribers(mnt) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _subscribers(mnt) == 0


def _subscribers(mnt):
    with open(os.path.join(mnt, ".unionfs", "stats"), "rb") as f:
        return json.loads(f.read())["events"]["subscribers"]
