"""Safety: the daemon never resolves a path through a symlink found in a layer, and a copy-up
interrupted by SIGKILL leaves nothing half-done visible.

Symlinks *in the merged view* are followed by the kernel's VFS like on any filesystem; that is
normal. What must never happen is the daemon itself following a symlink stored in a layer (or
a tampered work/upper dir) and so reading or modifying files outside the layers.
"""
import errno
import hashlib
import os
import signal
import stat
import subprocess
import sys

import pytest

from tests.mountutil import requires_fuse, requires_root, snapshot, unionfs_mount, wait_for
from tests.integration.conftest import Stack, daemon_pid, lazy_unmount, requires_daemon

pytestmark = [requires_fuse, requires_root]  # chown to other users, trusted.* xattrs

MiB = 1 << 20


def write(path, data=b""):
    os.makedirs(os.path.dirname(os.fspath(path)), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def host_state(path):
    """Everything about a host tree we promise not to touch, incl. ctime (any chown/chmod/xattr
    change bumps it, even a no-op one)."""
    snap = snapshot(path, with_times=True)
    ctimes = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for n in [""] + dirnames + filenames:
            p = os.path.join(dirpath, n)
            ctimes[os.path.relpath(p, path)] = os.lstat(p).st_ctime_ns
    return snap, ctimes


def make_host(tmp_path):
    host = tmp_path / "host_etc"
    write(host / "secret", b"top secret\n")
    write(host / "sub" / "deeper", b"deeper secret\n")
    os.setxattr(host / "secret", "user.mark", b"host")
    os.chmod(host, 0o750)
    return host


def test_lower_dir_symlink_to_host_is_not_followed_by_daemon(tmp_path):
    s = Stack(tmp_path)
    host = make_host(tmp_path)
    os.symlink(str(host), s.lower / "etc")
    os.symlink(str(host), s.lower / "d")
    write(s.lower / "plain", b"p")
    before = host_state(host)
    with s.mount():
        m = s.mnt
        # the merged view shows the symlinks as symlinks
        for name in ("etc", "d"):
            assert os.path.islink(m / name)
            assert stat.S_ISLNK(os.lstat(m / name).st_mode)
            assert os.readlink(m / name) == str(host)
        # listing works only because the kernel follows the (absolute) symlink
        assert sorted(os.listdir(m / "d")) == sorted(os.listdir(host))
        # operations the daemon resolves itself, on the symlink (not through it)
        os.chown(m / "d", 1234, 1234, follow_symlinks=False)
        os.setxattr(m / "etc", "trusted.mark", b"on-the-link", follow_symlinks=False)
        os.utime(m / "etc", ns=(1, 1), follow_symlinks=False)
        assert os.lstat(m / "d").st_uid == 1234
        assert os.path.islink(m / "d")
        assert os.getxattr(m / "etc", "trusted.mark", follow_symlinks=False) == b"on-the-link"
        assert os.lstat(m / "etc").st_mtime_ns == 1
    # copied up as symlinks, nothing created or changed in the host dir
    for name in ("etc", "d"):
        assert os.path.islink(s.upper / name)
        assert os.readlink(s.upper / name) == str(host)
    assert os.lstat(s.upper / "d").st_uid == 1234
    assert host_state(host) == before
    assert os.stat(host).st_uid == 0 and stat.S_IMODE(os.stat(host).st_mode) == 0o750
    with pytest.raises(OSError):
        os.getxattr(host, "trusted.mark")


def test_symlink_in_lower_layer_below_a_dir_is_not_merged(tmp_path):
    """top lower has dir `a`, the middle lower has `a` -> host dir, the bottom has dir `a/`.
    A non-directory stops the merge: `a` shows only the top dir's entries. A daemon that
    resolved `middle/a/...` would leak (and write into) the host dir."""
    s = Stack(tmp_path, nlower=3)
    host = make_host(tmp_path)
    write(s.lowers[0] / "a" / "from_top", b"t")
    os.symlink(str(host), s.lowers[1] / "a")
    write(s.lowers[2] / "a" / "from_bottom", b"b")
    before = host_state(host)
    with s.mount():
        m = s.mnt
        assert not os.path.islink(m / "a")
        assert sorted(os.listdir(m / "a")) == ["from_top"]
        for name in ("secret", "sub", "from_bottom"):
            assert not os.path.lexists(m / "a" / name)
        write(m / "a" / "secret", b"must land in the upper")
        os.mkdir(m / "a" / "sub")
        os.chmod(m / "a", 0o700)
        assert sorted(os.listdir(m / "a")) == ["from_top", "secret", "sub"]
    assert host_state(host) == before
    assert (s.upper / "a" / "secret").read_bytes() == b"must land in the upper"


def test_escaping_and_looping_symlinks_copy_up_safely(tmp_path):
    s = Stack(tmp_path)
    host = make_host(tmp_path)
    up = "../" * 24
    links = {
        "passwd": up + "etc/passwd",                           # the real /etc/passwd
        "escape": up + str(host / "secret").lstrip("/"),        # our host file, relative
        "escape_abs": str(host / "secret"),
        "loop1": "loop2",
        "loop2": "loop1",
        "self": "self",
        "deep/inner": "../../" * 12 + str(host).lstrip("/"),
    }
    os.makedirs(s.lower / "deep")
    for name, target in links.items():
        os.symlink(target, s.lower / name)
    before = host_state(host)
    pw = os.stat("/etc/passwd")
    with s.mount():
        m = s.mnt
        os.chown(m / "passwd", pw.st_uid, pw.st_gid, follow_symlinks=False)  # no-op owner
        for name in links:
            if name != "passwd":
                os.chown(m / name, 4242, 4242, follow_symlinks=False)
        for name, target in links.items():
            assert os.readlink(m / name) == target
        for name in ("loop1", "self"):
            with pytest.raises(OSError) as ei:
                open(m / name, "rb")
            assert ei.value.errno == errno.ELOOP
        assert (m / "escape").read_bytes() == b"top secret\n"  # the kernel follows it
    for name, target in links.items():
        assert os.path.islink(s.upper / name), name
        assert os.readlink(s.upper / name) == target
    assert os.lstat(s.upper / "escape").st_uid == 4242
    assert host_state(host) == before
    after = os.stat("/etc/passwd")
    assert (after.st_ctime_ns, after.st_uid, after.st_mode) == (pw.st_ctime_ns, pw.st_uid,
                                                                pw.st_mode)


def test_tampered_upper_symlink_over_lower_dir(tmp_path):
    """The upper (tampered on disk) holds `d` -> host dir where the lower has a dir `d/`:
    `d` is a symlink in the merged view (the upper wins), never a merged directory."""
    s = Stack(tmp_path)
    host = make_host(tmp_path)
    write(s.lower / "d" / "lowerfile", b"l")
    os.symlink(str(host), s.upper / "d")
    before = host_state(host)
    with s.mount():
        m = s.mnt
        assert os.path.islink(m / "d")
        assert sorted(os.listdir(m / "d")) == sorted(os.listdir(host))
        assert not os.path.exists(host / "lowerfile")
        os.chown(m / "d", 99, 99, follow_symlinks=False)
    assert host_state(host) == before
    assert os.path.islink(s.upper / "d")


def test_tampered_work_dir_symlink(tmp_path):
    """WORK/work replaced on disk by a symlink to a host dir: copy-ups must not put temp
    files into the host dir (the kernel replaces work/work by a real dir at mount)."""
    s = Stack(tmp_path)
    host = make_host(tmp_path)
    write(s.lower / "f", b"x" * 100000)
    (s.lower / "dir").mkdir()
    os.symlink(str(host), s.work / "work")
    before = host_state(host)
    with s.mount():
        m = s.mnt
        with open(m / "f", "ab") as fh:
            fh.write(b"y")
        os.chmod(m / "dir", 0o700)
        os.mkdir(m / "newdir")
        os.unlink(m / "f")
        os.rename(m / "dir", m / "dir2")
        assert sorted(os.listdir(m)) == ["dir2", "newdir"]
    assert host_state(host) == before


# ------------------------------------------------------------------------- crash safety

def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(4 * MiB), b""):
            h.update(chunk)
    return h.hexdigest()


def _all_entries(root):
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            out[os.path.relpath(p, root)] = os.lstat(p)
    return out


@requires_root
@requires_daemon
@pytest.mark.timeout(150)
def test_sigkill_during_copy_up(tmp_path):
    s = Stack(tmp_path)
    big = s.lower / "big"
    block = os.urandom(MiB)
    with open(big, "wb") as f:
        for i in range(512):
            f.write(block[i:] + block[:i])  # no holes, no repeated blocks
    write(s.lower / "small", b"s")
    lower_sum = _sha256(big)
    lower_snap = snapshot(s.lower, with_times=True)
    subprocess.run(["sync"])
    with open("/proc/sys/vm/drop_caches", "w") as f:  # make the copy read from disk
        f.write("1")
    opener = None
    try:
        with unionfs_mount([s.lower], s.upper, s.work, s.mnt):
            pid = daemon_pid(s.mnt)
            existing = set(_all_entries(s.upper)) | {"w/" + k for k in _all_entries(s.work)}
            # the open(O_APPEND) triggers the copy-up; it runs in a child so that a dead
            # mount cannot hang the test
            opener = subprocess.Popen(
                [sys.executable, "-c",
                 "import sys; f = open(sys.argv[1], 'ab'); f.write(b'APPENDED'); f.close()",
                 str(s.mnt / "big")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

            def copy_up_started():
                now = set(_all_entries(s.upper)) | {"w/" + k for k in _all_entries(s.work)}
                return bool(now - existing) or opener.poll() is not None
            assert wait_for(copy_up_started, timeout=30, interval=0.001)
            os.kill(pid, signal.SIGKILL)
            assert opener.poll() is None, (
                "the copy-up of 512 MiB finished before the daemon could be killed")
            opener.wait(30)
            assert lazy_unmount(s.mnt)
    finally:
        if opener is not None and opener.poll() is None:
            opener.kill()
            opener.wait()
        lazy_unmount(s.mnt)

    # the upper holds either nothing or the complete lower file at that path
    if os.path.lexists(s.upper / "big"):
        st = os.lstat(s.upper / "big")
        assert st.st_size == 512 * MiB and _sha256(s.upper / "big") == lower_sum, (
            "partial copy-up left in the upper (%d bytes)" % st.st_size)

    with unionfs_mount([s.lower], s.upper, s.work, s.mnt):
        m = s.mnt
        assert sorted(os.listdir(m)) == ["big", "small"]  # nothing from the work dir
        assert os.stat(m / "big").st_size == 512 * MiB
        assert _sha256(m / "big") == lower_sum
        # leftovers of the interrupted copy-up are gone from the work dir
        left = _all_entries(s.work)
        temps = [p for p in left if os.path.basename(p).startswith("#")]
        assert not temps, "temp files left in the work dir: %r" % temps
        big_left = {p: st.st_size for p, st in left.items()
                    if stat.S_ISREG(st.st_mode) and st.st_size > MiB}
        assert not big_left, "partial copies left in the work dir: %r" % big_left
        # and the file is usable: a new copy-up now completes
        with open(m / "big", "ab") as f:
            f.write(b"APPENDED")
        assert os.stat(m / "big").st_size == 512 * MiB + 8
    assert snapshot(s.lower, with_times=True) == lower_snap
