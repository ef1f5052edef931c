"""Test harness: real mounts of unionfs and of the kernel's overlayfs, and tree snapshots.

It also imports the fixture builders in scripts/ (``load_script``). Every mount made here is
unmounted in ``finally`` (``fusermount3 -u``, then ``-z``), so a failing
test never leaves a mount behind. Snapshots describe a tree the way a user sees it (type, mode,
owner, size, content hash, symlink target, device number, user-visible xattrs), so the same
scenario on two filesystems can be compared with ``==``.
"""
import contextlib
import hashlib
import importlib.util
import os
import shutil
import stat
import subprocess
import sys
import time

import pytest

from unionfs.mounts import mounted_paths

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNIONFS = [sys.executable, "-m", "unionfs"]
ENV = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))


def load_script(name):
    """Import scripts/<name>.py (the fixture builders) as a module."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "scripts", name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _fusermount():
    return shutil.which("fusermount3") or shutil.which("fusermount")


def have_fuse():
    return os.path.exists("/dev/fuse") and _fusermount() is not None


def have_kernel_overlay():
    if os.geteuid() != 0:
        return False
    try:
        with open("/proc/filesystems") as f:
            return any(line.split()[-1] == "overlay" for line in f if line.strip())
    except OSError:
        return False


requires_fuse = pytest.mark.skipif(not have_fuse(), reason="needs /dev/fuse and fusermount3")
requires_overlay = pytest.mark.skipif(
    not have_kernel_overlay(), reason="needs root and the kernel's overlayfs (the reference)")
requires_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def is_mounted(mnt):
    return os.path.realpath(mnt) in mounted_paths()


def unmount(mnt, fuse=True):
    """Unmount, politely first, then lazily. Never raises."""
    if not is_mounted(mnt):
        return
    if fuse and _fusermount():
        cmds = [[_fusermount(), "-u", mnt], [_fusermount(), "-u", "-z", mnt]]
    else:
        cmds = [["umount", mnt], ["umount", "-l", mnt]]
    for cmd in cmds:
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not is_mounted(mnt):
            return


def run_unionfs(*args, check=False, timeout=60, **kw):
    """Run the unionfs CLI; returns CompletedProcess with text output."""
    return subprocess.run(UNIONFS + [str(a) for a in args], env=ENV, capture_output=True,
                          text=True, timeout=timeout, check=check, **kw)


@contextlib.contextmanager
def unionfs_mount(lowers, upper, work, mnt, options=(), extra_args=()):
    """Mount unionfs with the CLI (which returns once the mount is ready) and unmount after."""
    os.makedirs(mnt, exist_ok=True)
    args = ["mount", "--lower", ":".join(str(l).replace(":", "\\:") for l in lowers)]
    if upper is not None:
        args += ["--upper", upper, "--work", work]
    if options:
        args += ["-o", ",".join(options)]
    args += list(extra_args) + [mnt]
    try:
        proc = run_unionfs(*args)
        if proc.returncode != 0:
            raise RuntimeError("unionfs mount failed (%d): %s%s" % (
                proc.returncode, proc.stdout, proc.stderr))
        assert is_mounted(mnt), "unionfs mount returned 0 but %s is not mounted" % mnt
        yield mnt
    finally:
        unmount(mnt, fuse=True)


@contextlib.contextmanager
def kernel_overlay_mount(lowers, upper, work, mnt, extra_opts=("redirect_dir=on",)):
    """Mount the kernel's overlayfs (the reference) and unmount after."""
    os.makedirs(mnt, exist_ok=True)
    opts = ["lowerdir=" + ":".join(str(l).replace(":", "\\:") for l in lowers)]
    if upper is not None:
        opts += ["upperdir=" + str(upper), "workdir=" + str(work)]
    opts += list(extra_opts)
    try:
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o", ",".join(opts), mnt],
                       check=True, capture_output=True)
        yield mnt
    finally:
        unmount(mnt, fuse=False)


def _xattrs(path):
    out = {}
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return out
    for name in sorted(names):
        try:
            out[name] = os.getxattr(path, name, follow_symlinks=False)
        except OSError as e:
            out[name] = "error:%d" % e.errno
    return out


def entry(path, with_times=False, with_xattrs=True):
    """One entry as a user sees it through a mount."""
    st = os.lstat(path)
    fmt = stat.S_IFMT(st.st_mode)
    rec = {"type": fmt, "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}
    if stat.S_ISREG(fmt):
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        rec["size"] = st.st_size
        rec["sha256"] = h.hexdigest()
    elif stat.S_ISLNK(fmt):
        rec["target"] = os.readlink(path)
    elif stat.S_ISCHR(fmt) or stat.S_ISBLK(fmt):
        rec["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
    if with_times:
        rec["mtime_ns"] = st.st_mtime_ns
    if with_xattrs:
        x = _xattrs(path)
        if x:
            rec["xattrs"] = x
    return rec


def snapshot(root, with_times=False, with_xattrs=True):
    """{relative path: entry} for the whole tree under root (the root itself as '.')."""
    out = {".": entry(root, with_times, with_xattrs)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            out[os.path.relpath(p, root)] = entry(p, with_times, with_xattrs)
    return out


def wait_for(cond, timeout=10.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(interval)
    return cond()
