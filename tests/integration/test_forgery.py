"""State the daemon trusts cannot be forged by a local user through the mount or the work dir.

- The owner-override xattrs (``user.containers.override_stat``, and its ``security.`` twin) are
  what a mount with ``xattr_permissions`` shows as a file's owner and mode. A user who could set
  one through a mount without that option could make a later mount with it show their binary as
  setuid root. They are refused, and hidden, in every mode, like the overlay markers.
- ``WORK/unionfs.format`` records the upper's format; it is the daemon's, 0600, whatever the
  umask of whoever mounts.
- A layer file the daemon resolved as a regular file and that a user replaces with a FIFO does
  not hang the daemon's open.
"""
import errno
import os
import shutil
import stat
import subprocess
import sys
import textwrap

import pytest

from tests.integration.test_permissions import public_tmp
from tests.mountutil import requires_fuse, requires_root, unionfs_mount

NOBODY = 65534
SETPRIV = shutil.which("setpriv")
pytestmark = [requires_fuse, requires_root,
              pytest.mark.skipif(SETPRIV is None, reason="needs setpriv (util-linux)")]

OVERRIDES = ("user.containers.override_stat", "security.containers.override_stat")


@pytest.fixture
def base():
    with public_tmp("unionfs-forge-") as d:
        yield d


def _dirs(base):
    paths = [os.path.join(base, n) for n in ("lower", "upper", "work", "mnt")]
    for d in paths:
        os.makedirs(d, exist_ok=True)
    return paths


def _as_nobody(code, *args):
    return subprocess.run([SETPRIV, "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY,
                           "--clear-groups", sys.executable, "-c", textwrap.dedent(code)]
                          + list(args), capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("options", [[], ["xattr_permissions=2"], ["xattr_permissions=1"]],
                         ids=["plain", "xattr_permissions=2", "xattr_permissions=1"])
def test_override_xattrs_cannot_be_set_or_seen_through_the_mount(base, options):
    lower, upper, work, mnt = _dirs(base)
    with unionfs_mount([lower], upper, work, mnt, options=["allow_other"] + options):
        os.chmod(mnt, 0o1777)
        proc = _as_nobody("""
            import os, sys
            p = os.path.join(sys.argv[1], "mine")
            with open(p, "wb") as f:
                f.write(b"#!/bin/sh\\n")
            os.chmod(p, 0o755)
            for name in sys.argv[2:]:
                try:
                    os.setxattr(p, name, b"0:0:4755")
                    print(name, "set")
                except OSError as e:
                    print(name, "errno", e.errno)
        """, mnt, *OVERRIDES)
        assert proc.returncode == 0, proc.stderr
        # refused for the user (and for root: nobody may write what the daemon interprets)
        for line in proc.stdout.splitlines():
            assert line.split()[1] == "errno", line
        p = os.path.join(mnt, "mine")
        for name in OVERRIDES:
            with pytest.raises(OSError) as e:
                os.setxattr(p, name, b"0:0:4755")
            assert e.value.errno in (errno.EOPNOTSUPP, errno.EPERM)
            with pytest.raises(OSError):
                os.getxattr(p, name)
            assert name not in os.listxattr(p)
        st = os.stat(p)
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (NOBODY, 0o755)
    # what the upper stores: no override the user chose
    real = os.path.join(upper, "mine")
    for name in OVERRIDES:
        try:
            value = os.getxattr(real, name)
        except OSError:
            continue
        assert value != b"0:0:4755"
    # and a later mount that honours overrides shows the user's file as theirs, not setuid root
    with unionfs_mount([lower], upper, work, mnt, options=["xattr_permissions=2"]):
        st = os.stat(os.path.join(mnt, "mine"))
        assert st.st_uid == NOBODY and not st.st_mode & stat.S_ISUID


def test_format_record_is_private_whatever_the_umask(base):
    lower, upper, work, mnt = _dirs(base)
    old = os.umask(0)
    try:
        with unionfs_mount([lower], upper, work, mnt):
            pass
    finally:
        os.umask(old)
    st = os.lstat(os.path.join(work, "unionfs.format"))
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0
    # a record left group/world-writable by an older version is replaced, not kept so
    os.chmod(os.path.join(work, "unionfs.format"), 0o666)
    with unionfs_mount([lower], upper, work, mnt):
        pass
    assert stat.S_IMODE(os.lstat(os.path.join(work, "unionfs.format")).st_mode) == 0o600


def test_a_file_swapped_for_a_fifo_does_not_hang_the_daemon(base):
    lower, upper, work, mnt = _dirs(base)
    os.chmod(lower, 0o777)
    with open(os.path.join(lower, "f"), "wb") as f:
        f.write(b"data\n")
    with unionfs_mount([lower], upper, work, mnt, options=["allow_other"]):
        p = os.path.join(mnt, "f")
        assert os.stat(p).st_size == 5          # resolved and cached as a regular file
        os.unlink(os.path.join(lower, "f"))
        os.mkfifo(os.path.join(lower, "f"))     # nobody ever opens its other end
        for flags in (os.O_RDONLY, os.O_RDWR):  # a plain open, and one that copies up
            proc = subprocess.run([sys.executable, "-c",
                                   "import os,sys; os.open(sys.argv[1], %d)" % flags, p],
                                  capture_output=True, text=True, timeout=30)
            assert proc.returncode != 0 and "OSError" in proc.stderr, proc.stderr
        assert os.listdir(mnt) == ["f"]         # the mount still answers
