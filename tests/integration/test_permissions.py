"""Permissions seen by another user through an ``allow_other`` mount, against the kernel.

unionfs is mounted as root with ``-o allow_other`` and the kernel's overlayfs over the same
lowers; the same operations then run as uid/gid 65534 (``setpriv --reuid 65534 --regid 65534
--clear-groups``, no user account needed) on both, and outcomes and resulting attributes must
match: a 0600 root file cannot be read, a root-owned 0755 directory cannot be written into, a
non-owner's write to a world-writable setuid/setgid file clears those bits as the kernel does,
and the rest of the everyday rules (sticky directories, chmod/chown/utime by non-owners, group
inheritance in setgid directories, ownership of new files in the upper).

The test directories live under a fresh 0755 directory in /tmp (pytest's own tmp dirs are 0700,
so another user could not reach the mounts); it is removed at the end, after every mount on it is
gone.
"""
import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile

import pytest

from tests.mountutil import (is_mounted, kernel_overlay_mount, requires_fuse, requires_overlay,
                             unionfs_mount)
from tests.integration.conftest import requires_daemon

NOBODY = 65534
SETPRIV = shutil.which("setpriv")

pytestmark = [requires_fuse, requires_overlay, requires_daemon, pytest.mark.overlay,
              pytest.mark.skipif(SETPRIV is None, reason="needs setpriv (util-linux)")]


@contextlib.contextmanager
def public_tmp(prefix="unionfs-perm-"):
    """A 0755 directory in /tmp that other users can traverse; removed afterwards (never while
    something is still mounted below it)."""
    base = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    os.chmod(base, 0o755)
    try:
        yield base
    finally:
        with open("/proc/self/mountinfo") as f:
            left = [l.split()[4] for l in f if l.split()[4].startswith(base + "/")]
        if not left:
            shutil.rmtree(base, ignore_errors=True)


def run_as(uid, code, *args, gid=None, timeout=60):
    """Run python code as uid (with gid, no supplementary groups); returns what it prints as
    JSON on its last line."""
    gid = uid if gid is None else gid
    proc = subprocess.run([SETPRIV, "--reuid", str(uid), "--regid", str(gid), "--clear-groups",
                           sys.executable, "-c", code] + [str(a) for a in args],
                          capture_output=True, text=True, timeout=timeout, cwd="/")
    assert proc.returncode == 0, "as uid %d: %s" % (uid, proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


# The operations, run as the other user, one outcome (value or errno name) each.
USER_OPS = r'''
import errno, json, os, stat, sys
m = sys.argv[1]
out = {}
def attempt(name, fn, *a):
    try:
        r = fn(*a)
        out[name] = r if isinstance(r, (int, str, list, type(None))) else repr(r)
    except OSError as e:
        out[name] = errno.errorcode.get(e.errno, str(e.errno))
def rd(p):
    with open(p, "rb") as f:
        return f.read().decode()
def wr(p, data=b"by nobody", flags=os.O_WRONLY | os.O_CREAT | os.O_TRUNC):
    fd = os.open(p, flags, 0o644)
    try:
        return os.write(fd, data)
    finally:
        os.close(fd)
def app(p):
    fd = os.open(p, os.O_WRONLY | os.O_APPEND)
    try:
        return os.write(fd, b"+nobody")
    finally:
        os.close(fd)
P = lambda *x: os.path.join(m, *x)
attempt("read_0600_root_file", rd, P("secret0600"))
attempt("read_0600_root_file_upper", rd, P("upper_secret0600"))
attempt("read_0644_root_file", rd, P("public0644"))
attempt("write_0644_root_file", wr, P("public0644"))
attempt("create_in_root_0755_dir", wr, P("rootdir", "new"))
attempt("mkdir_in_root_0755_dir", os.mkdir, P("rootdir", "newdir"))
attempt("unlink_in_root_0755_dir", os.unlink, P("rootdir", "child"))
attempt("rename_in_root_0755_dir", os.rename, P("rootdir", "child"), P("rootdir", "child2"))
attempt("list_0711_dir", os.listdir, P("dir0711"))
attempt("stat_in_0711_dir", lambda p: os.stat(p).st_size, P("dir0711", "known"))
attempt("list_0700_dir", os.listdir, P("dir0700"))
attempt("stat_in_0700_dir", lambda p: os.stat(p).st_size, P("dir0700", "inside"))
attempt("append_setuid_lower", app, P("suid_lower"))
attempt("append_setuid_upper", app, P("suid_upper"))
attempt("append_setgid_lower", app, P("sgid_lower"))
attempt("append_setgid_noexec_lower", app, P("sgid_noexec_lower"))
attempt("trunc_setuid_lower", wr, P("suid_trunc_lower"), b"", os.O_WRONLY | os.O_TRUNC)
attempt("truncate_setuid_upper", os.truncate, P("suid_truncate_upper"), 1)
attempt("chmod_not_owner", os.chmod, P("public0644"), 0o666)
attempt("chown_to_self", os.chown, P("worldwritable"), os.getuid(), os.getgid())
attempt("utime_set_not_owner", os.utime, P("worldwritable"), (1, 1))
attempt("utime_now_not_owner_writable", os.utime, P("worldwritable"), None)
attempt("utime_now_not_owner_readonly", os.utime, P("public0644"), None)
attempt("truncate_readonly", os.truncate, P("public0644"), 0)
attempt("create_in_world_writable_lower_dir", wr, P("tmpdir", "mine"))
attempt("mkdir_in_world_writable_lower_dir", os.mkdir, P("tmpdir", "mydir"))
attempt("unlink_root_file_in_sticky_dir", os.unlink, P("tmpdir", "roots"))
attempt("rename_root_file_in_sticky_dir", os.rename, P("tmpdir", "roots"), P("tmpdir", "x"))
attempt("unlink_own_file_in_sticky_dir", os.unlink, P("tmpdir", "mine"))
attempt("create_in_setgid_dir", wr, P("sgiddir", "f"))
attempt("mkdir_in_setgid_dir", os.mkdir, P("sgiddir", "d"))
attempt("setxattr_user_not_owner", os.setxattr, P("worldwritable"), "user.x", b"1")
attempt("setxattr_trusted_as_user", os.setxattr, P("worldwritable"), "trusted.x", b"1")
attempt("link_to_root_file", os.link, P("public0644"), P("tmpdir", "hardlink"))
attempt("access_rw_0600", os.access, P("secret0600"), os.R_OK)
print(json.dumps(out))
'''


def _build_lower(lower):
    def f(rel, mode, data=b"data\n", uid=0, gid=0):
        p = os.path.join(lower, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as fh:
            fh.write(data)
        os.chown(p, uid, gid)
        os.chmod(p, mode)

    def d(rel, mode, uid=0, gid=0):
        p = os.path.join(lower, rel)
        os.makedirs(p, exist_ok=True)
        os.chown(p, uid, gid)
        os.chmod(p, mode)
    d("", 0o755)
    f("secret0600", 0o600, b"secret\n")
    f("public0644", 0o644, b"public\n")
    d("rootdir", 0o755)
    f("rootdir/child", 0o644)
    d("dir0711", 0o711)
    f("dir0711/known", 0o644)
    d("dir0700", 0o700)
    f("dir0700/inside", 0o644)
    f("suid_lower", 0o6777, b"#!/bin/sh\n")
    f("sgid_lower", 0o2777, b"#!/bin/sh\n", gid=50)
    f("sgid_noexec_lower", 0o2666, b"mandatory locking style\n", gid=50)
    f("suid_trunc_lower", 0o4777, b"will be truncated\n")
    f("worldwritable", 0o666)
    d("tmpdir", 0o1777)
    f("tmpdir/roots", 0o666)
    d("sgiddir", 0o2777, gid=50)


def _prepare_upper_side(mnt):
    """As root, through the mount: files that live in the upper before the user comes."""
    def f(rel, mode, data=b"#!/bin/sh\n"):
        p = os.path.join(mnt, rel)
        with open(p, "wb") as fh:
            fh.write(data)
        os.chmod(p, mode)
    f("upper_secret0600", 0o600, b"secret\n")
    f("suid_upper", 0o6777)
    f("suid_truncate_upper", 0o4777)


def _attrs(mnt):
    out = {}
    for dirpath, dirnames, filenames in os.walk(mnt):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            out[os.path.relpath(p, mnt)] = (oct(st.st_mode), st.st_uid, st.st_gid,
                                            st.st_size)
    return out


def _side_mount(kind, base, lower, options=()):
    """(upper, mnt, mount context) of one side under base/kind, every directory 0755 so the
    other user can reach it: the kernel's overlayfs, or unionfs with allow_other."""
    upper, work, mnt = (os.path.join(base, kind, n) for n in ("upper", "work", "mnt"))
    for p in (upper, work, mnt):
        os.makedirs(p)
        os.chmod(p, 0o755)
    os.chmod(os.path.join(base, kind), 0o755)
    cm = (kernel_overlay_mount([lower], upper, work, mnt) if kind == "kernel" else
          unionfs_mount([lower], upper, work, mnt, options=("allow_other",) + options))
    return upper, mnt, cm


def _run_side(kind, base, lower):
    upper, mnt, cm = _side_mount(kind, base, lower)
    with cm:
        _prepare_upper_side(mnt)
        outcomes = run_as(NOBODY, USER_OPS, mnt)
        attrs = _attrs(mnt)
    upper_attrs = {}
    for rel in ("tmpdir/mine", "tmpdir/mydir", "sgiddir/f", "sgiddir/d", "suid_lower",
                "sgid_lower", "sgid_noexec_lower", "suid_upper", "suid_trunc_lower"):
        p = os.path.join(upper, rel)
        if os.path.lexists(p):
            st = os.lstat(p)
            upper_attrs[rel] = (oct(st.st_mode), st.st_uid, st.st_gid)
    return outcomes, attrs, upper_attrs


@pytest.fixture(scope="module")
def sides():
    """The scenario on the kernel's overlayfs and on unionfs: {kind: (outcomes, attributes
    through the mount afterwards, owners/modes in the upper)}."""
    with public_tmp() as base:
        lower = os.path.join(base, "lower")
        _build_lower(lower)
        yield {kind: _run_side(kind, base, lower) for kind in ("kernel", "unionfs")}


@pytest.mark.timeout(120)
def test_other_user_outcomes_match_kernel(sides):
    ko, uo = sides["kernel"][0], sides["unionfs"][0]
    # the rules themselves, on the reference (so the scenario cannot silently test nothing)
    assert ko["read_0600_root_file"] == "EACCES"
    assert ko["create_in_root_0755_dir"] == "EACCES"
    diffs = {n: (ko[n], uo.get(n)) for n in ko if ko[n] != uo.get(n)}
    assert not diffs, "outcomes as uid %d differ (kernel, unionfs): %r" % (NOBODY, diffs)
    assert uo["read_0600_root_file"] == uo["read_0600_root_file_upper"] == "EACCES"
    assert uo["create_in_root_0755_dir"] == uo["mkdir_in_root_0755_dir"] == "EACCES"
    assert uo["unlink_root_file_in_sticky_dir"] == "EPERM"


def test_other_user_attributes_match_kernel(sides):
    (_, ka, kup), (_, ua, uup) = sides["kernel"], sides["unionfs"]
    adiffs = {p: (ka.get(p), ua.get(p)) for p in set(ka) | set(ua) if ka.get(p) != ua.get(p)}
    assert not adiffs, "attributes afterwards differ (kernel, unionfs): %r" % adiffs
    assert kup == uup, "owners/modes in the uppers differ: kernel %r, unionfs %r" % (kup, uup)
    # a non-owner's write clears setuid and setgid (with group exec), lower and upper files
    for name in ("suid_lower", "suid_upper", "sgid_lower", "suid_truncate_upper"):
        assert not int(ua[name][0], 8) & (stat.S_ISUID | stat.S_ISGID), (name, ua[name])
    assert ka["suid_lower"][0] == oct(stat.S_IFREG | 0o777), ka["suid_lower"]
    # new entries belong to the user, and a setgid directory passes its group on
    assert uup["tmpdir/mydir"][1:] == (NOBODY, NOBODY)
    assert uup["sgiddir/f"][1:] == (NOBODY, 50)
    assert uup["sgiddir/d"] == (oct(stat.S_IFDIR | stat.S_ISGID | 0o755), NOBODY, 50)


def test_open_trunc_by_non_owner_clears_setuid(sides):
    """With FUSE's atomic_o_trunc the kernel leaves the kill-suid of open(O_TRUNC) to the
    daemon, which truncates as root: unionfs applies the rule itself (Union.open)."""
    assert sides["kernel"][1]["suid_trunc_lower"][0] == oct(stat.S_IFREG | 0o777)
    assert sides["unionfs"][1]["suid_trunc_lower"] == sides["kernel"][1]["suid_trunc_lower"]


def test_write_to_setgid_file_without_group_exec(sides):
    """A write by a user outside the file's group to a setgid file WITHOUT group exec (02666)
    clears S_ISGID on the kernel's overlayfs (VFS rule since Linux 6.2); the kernel's FUSE
    client leaves that case to the filesystem (Union.first_write)."""
    assert sides["kernel"][1]["sgid_noexec_lower"][0] == oct(stat.S_IFREG | 0o666)
    assert sides["unionfs"][1]["sgid_noexec_lower"] == sides["kernel"][1]["sgid_noexec_lower"]


@pytest.mark.timeout(60)
def test_without_allow_other_other_users_are_refused():
    """The default: another user (even with permission bits allowing it) gets EACCES on
    every access to the mount, as FUSE does without allow_other."""
    code = r'''
import errno, json, os, sys
try:
    os.listdir(sys.argv[1]); r = "ok"
except OSError as e:
    r = errno.errorcode[e.errno]
print(json.dumps(r))
'''
    with public_tmp() as base:
        dirs = [os.path.join(base, n) for n in ("lower", "upper", "work", "mnt")]
        for p in dirs:
            os.makedirs(p)
            os.chmod(p, 0o755)
        with unionfs_mount([dirs[0]], dirs[1], dirs[2], dirs[3]):
            assert run_as(NOBODY, code, dirs[3]) == "EACCES"
        assert not is_mounted(dirs[3])


_WRITE_TWICE = r'''
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)
os.write(fd, b"one\n")
print("written", flush=True)
sys.stdin.readline()
os.write(fd, b"two\n")
os.close(fd)
print("done", flush=True)
'''


def _setgid_made_while_open(kind, base, lower, options=()):
    """A file without group execute is opened and written by a user outside its group; its
    owner (root) then makes it setgid, and the user writes again: (mode after the chmod, mode
    after the second write)."""
    _upper, mnt, cm = _side_mount(kind, base, lower, options)
    with cm:
        f = os.path.join(mnt, "f")
        proc = subprocess.Popen([SETPRIV, "--reuid", str(NOBODY), "--regid", str(NOBODY),
                                 "--clear-groups", sys.executable, "-c", _WRITE_TWICE, f],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                cwd="/")
        try:
            assert proc.stdout.readline().strip() == "written"
            os.chmod(f, 0o2666)
            after_chmod = os.stat(f).st_mode
            proc.stdin.write("\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip() == "done"
        finally:
            proc.stdin.close()
            proc.wait(timeout=30)
        return after_chmod, os.stat(f).st_mode


@pytest.mark.timeout(120)
@pytest.mark.parametrize("options", [(), ("nopassthrough",)])
def test_setgid_made_while_a_writer_holds_the_file_is_cleared_by_its_next_write(options):
    """The setgid rule is applied again after a chmod made the file setgid, not only at a
    handle's first write (it was: the bit stayed); with passthrough, the writer outside the
    file's group is served by the daemon, so its writes are seen."""
    with public_tmp() as base:
        lower = os.path.join(base, "lower")
        os.makedirs(lower)
        os.chmod(lower, 0o755)
        with open(os.path.join(lower, "f"), "w") as fh:
            fh.write("x\n")
        os.chown(os.path.join(lower, "f"), 0, 50)
        os.chmod(os.path.join(lower, "f"), 0o666)
        kernel = _setgid_made_while_open("kernel", base, lower)
        ours = _setgid_made_while_open("unionfs", base, lower, options)
    assert kernel == (stat.S_IFREG | 0o2666, stat.S_IFREG | 0o666)
    assert ours == kernel
