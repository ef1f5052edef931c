"""A hostile local user must not be able to stop the mount (issue 12, point 2).

Several processes run as uid 65534 on a root daemon's ``allow_other`` mount: readers of one name
of a hard-linked file that drop its pages before each read, writers through the other name,
and processes that make, link, rename, read and unlink their own names and aliases of the
shared file. A daemon that sends a page invalidation from the thread that holds the reader's
turn waits for a READ only that thread could read: every access to the mount then hangs.

The watchdog fails the test when a worker outlives its run by ``HANG`` seconds: it aborts the
FUSE connection (umount2 MNT_FORCE: the kernel's fuse_umount_begin), kills the daemon by its
PID, and the mount is lazily unmounted, so a hang fails this test, not the run.
``scripts/soak.py --only notify`` runs the same for minutes.
"""
import ctypes
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from tests.integration.conftest import daemon_pid, requires_daemon
from tests.integration.test_permissions import NOBODY, SETPRIV, public_tmp
from tests.mountutil import is_mounted, requires_fuse, requires_root, unionfs_mount

pytestmark = [requires_fuse, requires_root, requires_daemon,
              pytest.mark.skipif(SETPRIV is None, reason="needs setpriv (util-linux)")]

SECONDS = float(os.environ.get("UNIONFS_STRESS_SECONDS", "12"))
HANG = 20.0          # a worker this late past its run is hung
SIZE = 256 * 1024    # the shared file: many pages, so a read holds locked pages for a while
ROLES = ("reader", "reader", "writer", "writer", "churn", "churn")

WORKER = r'''
import errno, json, os, sys, time
role, d, seconds, idx = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
A, B = os.path.join(d, "A"), os.path.join(d, "B")
own = os.path.join(d, "w%d-" % idx)
end = time.monotonic() + seconds
n, errors = 0, {}

def read_dropping(p):
    fd = os.open(p, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        while os.read(fd, 1 << 16):
            pass
    finally:
        os.close(fd)

def write_byte(p, off, flags=os.O_WRONLY):
    fd = os.open(p, flags, 0o666)
    try:
        os.pwrite(fd, b"%d" % (off % 10), off)
    finally:
        os.close(fd)

while time.monotonic() < end:
    try:
        if role == "reader":
            read_dropping(B)
        elif role == "writer":
            write_byte(A, (n * 4099) % %(size)d)
        else:
            x, y, z, alias = own + "x", own + "y", own + "z", own + "alias"
            write_byte(x, 0, os.O_WRONLY | os.O_CREAT)
            os.link(x, y)
            read_dropping(y)
            write_byte(x, 4096)
            os.rename(y, z)
            os.unlink(x)
            read_dropping(z)
            os.unlink(z)
            os.link(A, alias)          # an alias of the shared file: A's and B's nlink change
            read_dropping(alias)
            os.rename(alias, own + "moved")
            os.unlink(own + "moved")
    except OSError as e:
        name = errno.errorcode.get(e.errno, str(e.errno))
        errors[name] = errors.get(name, 0) + 1
    n += 1
print(json.dumps({"role": role, "ops": n, "errors": errors}))
'''.replace("%(size)d", str(SIZE))

_libc = ctypes.CDLL(None, use_errno=True)
_MNT_FORCE, _MNT_DETACH = 1, 2


def _state(pid):
    """The process state letter (D: waiting uninterruptibly, here for the daemon)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rpartition(")")[2].split()[0]
    except OSError:
        return "gone"


def _abort(mnt, daemon):
    """End a hung mount without touching it: abort the connection, kill the daemon by PID,
    detach the mount. Each step in a thread of its own, none waited on for long."""
    def force():
        _libc.umount2(os.fsencode(mnt), _MNT_FORCE)  # fuse_umount_begin aborts the connection
    t = threading.Thread(target=force, daemon=True)
    t.start()
    t.join(5)
    try:
        os.kill(daemon, 9)
    except ProcessLookupError:
        pass
    t = threading.Thread(target=lambda: _libc.umount2(os.fsencode(mnt), _MNT_DETACH),
                         daemon=True)
    t.start()
    t.join(5)


def run_stress(base, seconds, roles=ROLES, log=None):
    """Run the workers as uid 65534 for `seconds` on a fresh allow_other mount under base (a
    directory other users can traverse). Returns the workers' reports; raises AssertionError
    on a hang (after ending the mount) or on a worker's failure."""
    low, up, wk, m = (os.path.join(base, n) for n in ("lower", "upper", "work", "mnt"))
    for p in (low, up, wk, m):
        os.makedirs(p)
        os.chmod(p, 0o755)
    os.makedirs(os.path.join(low, "d"))
    os.chmod(os.path.join(low, "d"), 0o777)
    with open(os.path.join(low, "d", "A"), "wb") as f:
        f.write(os.urandom(SIZE))
    os.chmod(os.path.join(low, "d", "A"), 0o666)
    with unionfs_mount([low], up, wk, m, options=("allow_other",)):
        d = os.path.join(m, "d")
        os.link(os.path.join(d, "A"), os.path.join(d, "B"))  # copied up: one inode, two names
        daemon = daemon_pid(m)
        procs = [subprocess.Popen(
            [SETPRIV, "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups",
             sys.executable, "-c", WORKER, role, d, str(seconds), str(i)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")
            for i, role in enumerate(roles)]
        deadline = time.monotonic() + seconds + HANG
        while time.monotonic() < deadline and any(p.poll() is None for p in procs):
            time.sleep(0.2)
        hung = [(p.pid, roles[i], _state(p.pid)) for i, p in enumerate(procs)
                if p.poll() is None]
        if hung:
            _abort(m, daemon)
            for p in procs:
                if p.poll() is None:
                    p.kill()
            for p in procs:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    pass
            raise AssertionError(
                "the mount hung: workers (pid, role, state) %r still running %.0f s after "
                "their %.0f s run; connection aborted, daemon %d killed" % (
                    hung, HANG, seconds, daemon))
        reports = []
        for i, p in enumerate(procs):
            out, err = p.communicate()
            assert p.returncode == 0, "worker %s failed: %s" % (roles[i], err[-2000:])
            reports.append(json.loads(out.strip().splitlines()[-1]))
        # the mount still answers, and the shared file is one inode under both names
        sa, sb = os.stat(os.path.join(d, "A")), os.stat(os.path.join(d, "B"))
        assert (sa.st_ino, sa.st_nlink, sa.st_size) == (sb.st_ino, sb.st_nlink, sb.st_size)
        assert sa.st_nlink == 2, sa
        with open(os.path.join(d, "A"), "rb") as fa, open(os.path.join(d, "B"), "rb") as fb:
            assert fa.read() == fb.read()
    assert not is_mounted(m)
    if log is not None:
        for r in reports:
            log("notify: %(role)s: %(ops)d rounds, errors %(errors)r" % r)
    return reports


@pytest.mark.timeout(SECONDS + HANG + 60)
def test_hard_link_readers_and_writers_cannot_stop_the_mount():
    with public_tmp("unionfs-notify-") as base:
        reports = run_stress(base, SECONDS)
    for r in reports:
        assert r["ops"] > 0, r
        assert not r["errors"], "a worker saw errors: %r" % (reports,)
