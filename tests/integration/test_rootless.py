"""An ordinary user mounts, changes and remounts unionfs through fusermount3 (no root, no setuid
of ours). Such a user may neither set trusted.* xattrs nor chown to another user, so the upper
is written in the kernel's userxattr form (user.overlay.*; whiteouts as 0/0 devices,
which Linux lets any user make since 5.8, else '.wh.' files), owners of copied-up files another
user owns are kept in user.containers.override_stat, and all of it reads back the same way.

The test runs as root only to build the layers and to become the user (setpriv). Where
/dev/fuse is not open to other users (some container images make it 0600), it is opened for the
test and its mode put back afterwards.
"""
import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile

import pytest

from tests.mountutil import (ENV, REPO, have_kernel_overlay, is_mounted, kernel_overlay_mount,
                             requires_fuse, requires_root, unmount)

pytestmark = [requires_fuse, requires_root,
              pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv")]

UID = GID = 65534  # nobody
# The test's own interpreter may live where other users cannot reach (a venv made from a
# Python under /root): the user runs the system's Python 3 over the same packages.
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
USER_ENV = dict(ENV, HOME="/", PYTHONPATH=os.pathsep.join(
    [REPO, sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]))


def as_user(*cmd, check=True):
    proc = subprocess.run(["setpriv", "--reuid=%d" % UID, "--regid=%d" % GID, "--clear-groups",
                           "--"] + list(cmd), env=USER_ENV, capture_output=True,
                          text=True, timeout=60, cwd="/")
    if check and proc.returncode != 0:
        raise AssertionError("%s failed (%d): %s%s" % (cmd, proc.returncode, proc.stdout,
                                                       proc.stderr))
    return proc


def unionfs_as_user(*args, check=True):
    return as_user(PYTHON, "-m", "unionfs", *args, check=check)


def py_as_user(code, *args):
    return json.loads(as_user(PYTHON, "-c", code, *args).stdout)


@contextlib.contextmanager
def fuse_open_to_users():
    mode = stat.S_IMODE(os.stat("/dev/fuse").st_mode)
    if mode & 0o006 != 0o006:
        os.chmod("/dev/fuse", mode | 0o666)
    try:
        yield
    finally:
        os.chmod("/dev/fuse", mode)


@pytest.fixture
def tree():
    base = tempfile.mkdtemp(prefix="unionfs-rootless-", dir="/tmp")
    os.chmod(base, 0o755)
    try:
        proc = as_user(PYTHON, "-c", "import unionfs.fuse.server, unionfs.core.union; import os; "
                       "os.listdir(%r)" % REPO, check=False)
        if proc.returncode != 0:
            pytest.skip("the test's Python or checkout is not usable by uid %d: %s"
                        % (UID, proc.stderr.strip().splitlines()[-1:]))
        lower = base + "/lower"
        os.makedirs(lower + "/d/sub")
        os.makedirs(lower + "/gone")
        for rel, data in (("d/a", b"A"), ("d/sub/b", b"B"), ("f", b"F"), ("gone/x", b"X"),
                          ("keep", b"K")):
            with open(lower + "/" + rel, "wb") as f:
                f.write(data)
        with open(lower + "/d/rootfile", "wb") as f:   # another owner's file
            f.write(b"R")
        os.chmod(lower + "/d/rootfile", 0o640)
        for dirpath, dirnames, filenames in os.walk(lower):
            for n in dirnames + filenames + [""]:
                p = os.path.join(dirpath, n) if n else dirpath
                if not p.endswith("rootfile"):
                    os.chown(p, UID, GID)
        os.chmod(lower + "/d/rootfile", 0o644)
        for d in ("upper", "work", "mnt"):
            os.mkdir(base + "/" + d)
            os.chown(base + "/" + d, UID, GID)
        with fuse_open_to_users():
            yield base
    finally:
        if is_mounted(base + "/mnt"):
            unmount(base + "/mnt")
        shutil.rmtree(base, ignore_errors=True)


CHANGES = r"""
import errno, json, os, sys
m = sys.argv[1]
out = {}
def attempt(fn, *a):
    try:
        fn(*a)
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]
with open(m + "/d/a", "ab") as f:
    f.write(b"+")
out["unlink"] = attempt(os.unlink, m + "/f")
out["rmtree"] = [attempt(os.unlink, m + "/gone/x"), attempt(os.rmdir, m + "/gone"),
                 attempt(os.mkdir, m + "/gone")]
out["rename"] = attempt(os.rename, m + "/d", m + "/e")
out["new"] = attempt(lambda: open(m + "/e/new", "w").write("N"))
out["chown_other"] = attempt(os.chown, m + "/keep", 0, 0)
out["write_rootfile"] = attempt(lambda: open(m + "/e/rootfile", "a"))
out["mknod_dev"] = attempt(os.mknod, m + "/dev", 0o20644, os.makedev(1, 3))
st = os.stat(m + "/e/rootfile")
out["rootfile"] = [st.st_uid, st.st_gid, oct(st.st_mode & 0o7777), open(m + "/e/rootfile").read()]
print(json.dumps(out))
"""

SNAPSHOT = r"""
import json, os, sys
m = sys.argv[1]
out = {}
for d, dirs, files in os.walk(m):
    for n in dirs + files:
        p = os.path.join(d, n)
        st = os.lstat(p)
        data = open(p).read() if os.path.isfile(p) else None
        out[os.path.relpath(p, m)] = [st.st_uid, st.st_gid, oct(st.st_mode), data]
print(json.dumps(out, sort_keys=True))
"""


def test_ordinary_user_mounts_changes_and_remounts(tree):
    lower, upper, work, mnt = (tree + "/" + n for n in ("lower", "upper", "work", "mnt"))
    mount_args = ("mount", "--lower", lower, "--upper", upper, "--work", work, mnt)
    unionfs_as_user(*mount_args)
    try:
        assert is_mounted(mnt)
        out = py_as_user(CHANGES, mnt)
        before = py_as_user(SNAPSHOT, mnt)
    finally:
        unionfs_as_user("umount", mnt, check=False)
    assert not is_mounted(mnt)
    # the kernel's answers for what the user may not do; everything else works
    assert out == {"unlink": "ok", "rmtree": ["ok", "ok", "ok"], "rename": "ok", "new": "ok",
                   "chown_other": "EPERM", "write_rootfile": "EACCES", "mknod_dev": "EPERM",
                   "rootfile": [0, 0, "0o644", "R"]}
    assert sorted(before) == ["e", "e/a", "e/new", "e/rootfile", "e/sub", "e/sub/b", "gone",
                              "keep"]
    assert before["e/a"][3] == "A+" and before["keep"][:2] == [UID, GID]

    # the upper, in the fallback form, describes every change on its own
    # whiteouts are 0/0 devices where the user may make them (Linux 5.8 and later allow it
    # without privilege), '.wh.' files where not; markers go to user.overlay.* either way
    with open(work + "/unionfs.format") as f:
        xattr, form = f.read().split()
    assert xattr == "xattr=user"
    if form == "whiteout=chr":
        assert sorted(os.listdir(upper)) == ["d", "e", "f", "gone"]
        for wh in ("d", "f"):
            st = os.lstat(upper + "/" + wh)
            assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
        assert os.getxattr(upper + "/gone", "user.overlay.opaque") == b"y"
    else:
        assert form == "whiteout=oci"
        assert sorted(os.listdir(upper)) == [".wh.d", ".wh.f", "e", "gone"]
        assert ".wh..wh..opq" in os.listdir(upper + "/gone")
        st = os.lstat(upper + "/.wh.f")
        assert stat.S_ISREG(st.st_mode) and st.st_size == 0
    assert sorted(os.listdir(upper + "/e")) == ["a", "new", "rootfile", "sub"]
    rootfile = upper + "/e/rootfile"
    assert os.stat(rootfile).st_uid == UID            # the user could not chown it ...
    assert os.getxattr(rootfile, "user.containers.override_stat") == b"0:0:644"  # ... kept here
    assert not any(n.startswith("trusted.") for n in os.listxattr(upper + "/e"))
    assert open(lower + "/d/a").read() == "A" and os.path.exists(lower + "/f")

    # a remount by the user reads the same tree back
    unionfs_as_user(*mount_args)
    try:
        after = py_as_user(SNAPSHOT, mnt)
        hidden = as_user("getfattr", "-d", "-m", "-", mnt + "/e/rootfile", check=False).stdout
    finally:
        unionfs_as_user("umount", mnt, check=False)
    assert after == before
    assert "override_stat" not in hidden            # not visible through the mount
    if have_kernel_overlay():
        # the kernel, mounted with userxattr, reads the user's upper the same (owners aside:
        # the kernel knows nothing of override_stat)
        os.mkdir(tree + "/kwork")
        with kernel_overlay_mount([lower], upper, tree + "/kwork", tree + "/kmnt",
                                  extra_opts=("userxattr",)) as k:
            kernel = json.loads(subprocess.run([sys.executable, "-c", SNAPSHOT, k], check=True,
                                               capture_output=True, text=True).stdout)
        assert {p: v[3] for p, v in kernel.items()} == {p: v[3] for p, v in before.items()}
