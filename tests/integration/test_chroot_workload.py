"""A package-manager-like workload run by busybox inside `chroot MNT`, on a busybox rootfs as the
single lower layer. The same script runs on the kernel's overlayfs over the same lower; the two
merged trees must be equal, and the lower must be byte-identical afterwards."""
import hashlib
import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile

import pytest

from tests.mountutil import (REPO, have_kernel_overlay, kernel_overlay_mount, load_script,
                             requires_fuse, requires_root, snapshot)
from tests.integration.conftest import union

requires_busybox = pytest.mark.skipif(
    not any(os.path.isfile(p) for p in ("/bin/busybox", "/usr/bin/busybox")),
    reason="needs busybox-static")


def _load_build_rootfs():
    return load_script("build_rootfs").build_rootfs


TOOL = b"#!/bin/sh\necho pkg tool 1.0\n"
LIBPKG = bytes(range(256)) * 64


def _pkg_tar():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        def add(name, data=None, mode=0o644, kind=tarfile.REGTYPE, linkname="", uid=0):
            ti = tarfile.TarInfo(name)
            ti.mode, ti.type, ti.linkname, ti.uid, ti.gid = mode, kind, linkname, uid, uid
            ti.mtime = 1_650_000_000
            if data is not None:
                ti.size = len(data)
                tar.addfile(ti, io.BytesIO(data))
            else:
                tar.addfile(ti)
        add("bin", mode=0o755, kind=tarfile.DIRTYPE)
        add("bin/tool", TOOL, mode=0o755)
        add("bin/tool-alias", kind=tarfile.LNKTYPE, linkname="bin/tool")
        add("bin/tool-link", kind=tarfile.SYMTYPE, linkname="tool", mode=0o777)
        add("lib", mode=0o755, kind=tarfile.DIRTYPE)
        add("lib/libpkg.so", LIBPKG, mode=0o755)
        add("private", mode=0o700, kind=tarfile.DIRTYPE, uid=1000)
        add("private/key", b"k", mode=0o600, uid=1000)
        add("doc/README", b"pkg readme\n")
    return buf.getvalue()


SCRIPT = r"""
set -e
cd /
mkdir -p /usr/share/pkg
tar -x -f /tmp/pkg.tar -C /usr/share/pkg
rm /tmp/pkg.tar

# new config replaces the shipped (lower) one by rename-over
echo "new config v2" > /etc/app.conf.dpkg-new
mv /etc/app.conf.dpkg-new /etc/app.conf

# upgrade a lower file: copy, modify, rename over the original
cp /usr/lib/oldpkg/lib1.so /usr/lib/oldpkg/lib1.so.tmp
echo patched >> /usr/lib/oldpkg/lib1.so.tmp
mv /usr/lib/oldpkg/lib1.so.tmp /usr/lib/oldpkg/lib1.so

# hard links: to a new file and to a lower file
ln /usr/share/pkg/bin/tool /usr/bin/tool
ln /etc/hosts /etc/hosts.hardlink

# rename a lower directory, then reuse its old name for a fresh one
mv /usr/lib/oldpkg /usr/lib/newpkg
mkdir /usr/lib/oldpkg
echo fresh > /usr/lib/oldpkg/NEW

# delete a lower directory tree
rm -rf /opt/legacy

# rewrite the package database in place and by rename
echo "pkg 1.0 installed" >> /var/lib/pkgdb/status
cp /etc/passwd /etc/passwd.new
echo "pkg:x:999:999::/nonexistent:/bin/false" >> /etc/passwd.new
mv /etc/passwd.new /etc/passwd
sync
sync /var/lib/pkgdb/status /etc/passwd

sha256sum /usr/share/pkg/bin/tool /usr/lib/newpkg/lib1.so /etc/passwd > /var/lib/pkgdb/sums
find /usr/lib /usr/share/pkg /opt | sort > /var/lib/pkgdb/files
test ! -e /opt/legacy
test ! -e /usr/lib/oldpkg/lib1.so
test -f /usr/lib/newpkg/data/deeper/y
echo workload-done
"""


def _run_workload(mnt):
    (mnt / "tmp" / "pkg.tar").write_bytes(_pkg_tar())
    proc = subprocess.run([shutil.which("chroot") or "/usr/sbin/chroot", str(mnt), "/bin/sh", "-c", SCRIPT],
                          env={"PATH": "/bin:/usr/bin", "HOME": "/root"},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, "workload failed (%d):\n%s%s" % (
        proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout.strip().endswith("workload-done")
    return snapshot(mnt)


def _check_merged(m, lower):
    assert (m / "usr/share/pkg/bin/tool").read_bytes() == TOOL
    assert stat.S_IMODE(os.stat(m / "usr/share/pkg/bin/tool").st_mode) == 0o755
    assert (m / "usr/share/pkg/lib/libpkg.so").read_bytes() == LIBPKG
    assert os.readlink(m / "usr/share/pkg/bin/tool-link") == "tool"
    assert os.stat(m / "usr/share/pkg/private/key").st_uid == 1000
    assert not os.path.exists(m / "tmp/pkg.tar")

    assert (m / "etc/app.conf").read_bytes() == b"new config v2\n"
    assert sorted(os.listdir(m / "etc")) == sorted(os.listdir(lower / "etc") +
                                                   ["hosts.hardlink"])

    # hard links: tar's hard link + ln = 3 names for one inode; the lower file's link = 2
    tool = [os.stat(m / p) for p in ("usr/share/pkg/bin/tool", "usr/share/pkg/bin/tool-alias",
                                     "usr/bin/tool")]
    assert len({st.st_ino for st in tool}) == 1 and all(st.st_nlink == 3 for st in tool)
    hosts = [os.stat(m / p) for p in ("etc/hosts", "etc/hosts.hardlink")]
    assert hosts[0].st_ino == hosts[1].st_ino and hosts[0].st_nlink == 2
    assert (m / "etc/hosts.hardlink").read_bytes() == (lower / "etc/hosts").read_bytes()

    # renamed lower dir keeps all its (partly modified) content; its old name is a fresh dir
    lib1 = (lower / "usr/lib/oldpkg/lib1.so").read_bytes() + b"patched\n"
    assert (m / "usr/lib/newpkg/lib1.so").read_bytes() == lib1
    assert (m / "usr/lib/newpkg/data/x").read_bytes() == b"oldpkg data\n"
    assert (m / "usr/lib/newpkg/data/deeper/y").read_bytes() == b"deeper data\n"
    assert os.readlink(m / "usr/lib/newpkg/current") == "lib1.so"
    assert os.listdir(m / "usr/lib/oldpkg") == ["NEW"]

    # deleted lower tree
    assert not os.path.lexists(m / "opt/legacy")
    assert os.listdir(m / "opt") == ["keep"]

    assert (m / "var/lib/pkgdb/status").read_bytes().endswith(b"pkg 1.0 installed\n")
    assert (m / "etc/passwd").read_bytes().endswith(b"pkg:x:999:999::/nonexistent:/bin/false\n")
    sums = dict(reversed(line.split()) for line in
                (m / "var/lib/pkgdb/sums").read_text().splitlines())
    for path, digest in sums.items():
        assert hashlib.sha256((m / path.lstrip("/")).read_bytes()).hexdigest() == digest


@requires_fuse
@requires_root
@requires_busybox
@pytest.mark.timeout(120)
def test_chroot_package_workload(tmp_path):
    lower = tmp_path / "rootfs"
    _load_build_rootfs()(lower)
    before = snapshot(lower, with_times=True)
    upper, work, mnt = tmp_path / "upper", tmp_path / "work", tmp_path / "mnt"
    for d in (upper, work, mnt):
        d.mkdir()

    with union([lower], upper, work, mnt):
        merged = _run_workload(mnt)
        _check_merged(mnt, lower)
    assert snapshot(lower, with_times=True) == before, "the lower layer was modified"

    if have_kernel_overlay():
        kup, kwork, kmnt = tmp_path / "kupper", tmp_path / "kwork", tmp_path / "kmnt"
        for d in (kup, kwork, kmnt):
            d.mkdir()
        with kernel_overlay_mount([str(lower)], str(kup), str(kwork), str(kmnt)):
            reference = _run_workload(kmnt)
            _check_merged(kmnt, lower)
        assert snapshot(lower, with_times=True) == before
        diff = {k: (merged.get(k), reference.get(k)) for k in set(merged) | set(reference)
                if merged.get(k) != reference.get(k)}
        assert not diff, "unionfs vs kernel overlayfs differ: %r" % diff


@requires_busybox
def test_build_rootfs_cli(tmp_path):
    out = tmp_path / "rf"
    proc = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "build_rootfs.py"),
                           str(out)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    again = tmp_path / "rf2"
    _load_build_rootfs()(again)
    assert snapshot(out, with_times=True) == snapshot(again, with_times=True)
    assert os.readlink(out / "bin" / "sh") == "busybox"
    assert os.access(out / "bin" / "busybox", os.X_OK)
    proc = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "build_rootfs.py"),
                           str(out)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0  # refuses a non-empty dir
