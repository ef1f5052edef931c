"""An image keeps what it is whoever imports it: setuid-root files, file capabilities, device nodes
and other owners' files show through `unionfs image mount` exactly as `podman export` of the image
gives them (and as the layer tars say), imported by root or by an ordinary user (owners in
xattrs), and mounted by the importer or, a user's store, by root.

podman runs as root with the vfs driver (as in test_image_podman.py); where it is not installed
the reference is the tar listing alone (the layers merged by the fixtures' oracle), which the
podman export is also checked against.
"""
import hashlib
import json
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile

import pytest

from tests.integration.test_rootless import (GID, PYTHON, UID, as_user, fuse_open_to_users)
from tests.mountutil import (REPO, is_mounted, load_script, requires_fuse, requires_root,
                             run_unionfs, unmount)

pytestmark = [requires_fuse, requires_root, pytest.mark.fuse,
              pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv")]

fx = load_script("build_image_fixtures")
PODMAN = shutil.which("podman")
CAP = "security.capability"

# what the user who mounted sees: lstat, the listing's type, the capability, the data's hash
WALK = r"""
import errno, hashlib, json, os, stat, sys
m = sys.argv[1]
out, denied = {}, []
def rec(p, d_type_ok):
    st = os.lstat(p)
    fmt = stat.S_IFMT(st.st_mode)
    r = {"type": fmt, "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid,
         "listed_as_type": d_type_ok}
    if fmt == stat.S_IFREG:
        r["size"] = st.st_size
        try:
            with open(p, "rb") as f:
                r["sha256"] = hashlib.sha256(f.read()).hexdigest()
        except PermissionError:
            pass
    elif fmt == stat.S_IFLNK:
        r["target"] = os.readlink(p)
    elif fmt in (stat.S_IFCHR, stat.S_IFBLK):
        r["rdev"] = [os.major(st.st_rdev), os.minor(st.st_rdev)]
    try:
        r["cap"] = os.getxattr(p, "security.capability", follow_symlinks=False).hex()
    except OSError as e:
        if e.errno not in (errno.ENODATA, errno.EOPNOTSUPP):
            raise
    return r
stack = [""]
while stack:
    d = stack.pop()
    try:
        entries = list(os.scandir(os.path.join(m, d)))
    except PermissionError:
        denied.append(d)
        continue
    for e in entries:
        rel = os.path.join(d, e.name)
        r = rec(e.path, None)
        # DirEntry answers from the listing's d_type (no stat) where the listing gives one
        listed = {stat.S_IFDIR: e.is_dir(follow_symlinks=False),
                  stat.S_IFLNK: e.is_symlink(), stat.S_IFREG: e.is_file(follow_symlinks=False)}
        r["listed_as_type"] = listed.get(r["type"], not any(listed.values()))
        out[rel] = r
        if r["type"] == stat.S_IFDIR:
            stack.append(rel)
try:
    open(os.path.join(m, "dev/null"), "rb").close()
    dev = "opened"
except OSError as e:
    dev = errno.errorcode[e.errno]
print(json.dumps({"tree": out, "denied": sorted(denied), "dev_null": dev}))
"""


def tar_records(path):
    """{path: record} of an image's filesystem as a tar gives it (podman export)."""
    out, data = {}, {}
    with tarfile.open(path) as t:
        for ti in t:
            name = ti.name.rstrip("/").removeprefix("./")
            if not name:
                continue
            if ti.islnk():
                out[name] = dict(out[ti.linkname.rstrip("/").removeprefix("./")])
                continue
            fmt = {tarfile.DIRTYPE: stat.S_IFDIR, tarfile.SYMTYPE: stat.S_IFLNK,
                   tarfile.CHRTYPE: stat.S_IFCHR, tarfile.BLKTYPE: stat.S_IFBLK,
                   tarfile.FIFOTYPE: stat.S_IFIFO}.get(ti.type, stat.S_IFREG)
            r = {"type": fmt, "mode": ti.mode & 0o7777, "uid": ti.uid, "gid": ti.gid}
            if fmt == stat.S_IFREG:
                r["size"] = ti.size
                r["sha256"] = hashlib.sha256(t.extractfile(ti).read()).hexdigest()
            elif fmt == stat.S_IFLNK:
                r["target"] = ti.linkname
            elif fmt in (stat.S_IFCHR, stat.S_IFBLK):
                r["rdev"] = [ti.devmajor, ti.devminor]
            cap = ti.pax_headers.get("SCHILY.xattr." + CAP)
            if cap is not None:
                r["cap"] = cap.encode("utf-8", "surrogateescape").hex()
            out[name] = r
    return out


def oracle_records():
    """The same, from the layer tars merged by the fixtures' oracle (whiteouts applied)."""
    out = {}
    for path, r in fx.expected_snapshot(fx.apply_layers(fx.owners_layers())).items():
        if path == ".":
            continue
        rec = {k: r[k] for k in ("type", "mode", "uid", "gid") }
        if "size" in r:
            rec["size"], rec["sha256"] = r["size"], r["sha256"]
        if "target" in r:
            rec["target"] = r["target"]
        if "rdev" in r:
            rec["rdev"] = list(r["rdev"])
        if CAP in r.get("xattrs", {}):
            rec["cap"] = r["xattrs"][CAP].hex()
        out[path] = rec
    return out


def podman_export(archive, base):
    """{path: record} of `podman export` of the image (podman as root, vfs storage)."""
    with open(os.path.join(REPO, "mounts", "podman", "containers.conf")) as f:
        conf = f.read()
    confp = os.path.join(base, "containers.conf")
    tmpdir = os.path.join(base, "ptmp")
    os.makedirs(tmpdir)
    with open(confp, "w") as f:
        f.write(conf + '\ntmp_dir = "%s"\n' % tmpdir if "[engine]" in conf else conf)
    run = tempfile.mkdtemp(prefix="ufow-", dir="/tmp")   # podman's runroot must be short
    env = dict(os.environ, CONTAINERS_CONF=confp)
    pm = [PODMAN, "--root", os.path.join(base, "proot"), "--runroot", run, "--storage-driver",
          "vfs"]

    def podman(*args):
        r = subprocess.run(pm + list(args), env=env, capture_output=True, text=True, timeout=90)
        assert r.returncode == 0, (args, r.stderr)
        return r.stdout.strip()
    try:
        podman("load", "-i", archive)
        cid = podman("create", "localhost/owners:1").splitlines()[-1]
        podman("export", cid, "-o", os.path.join(base, "export.tar"))
        podman("rm", cid)
        return tar_records(os.path.join(base, "export.tar"))
    finally:
        subprocess.run(pm + ["system", "reset", "-f"], env=env, capture_output=True, timeout=90)
        shutil.rmtree(run, ignore_errors=True)


@pytest.fixture(scope="module")
def work():
    """A tmp dir others may enter, the owners archive in it, and the reference records."""
    base = tempfile.mkdtemp(prefix="unionfs-owners-", dir="/tmp")
    os.chmod(base, 0o755)
    try:
        archive = os.path.join(base, "owners.tar")
        fx.docker_archive(archive, [fx.owners_image()], "classic")
        os.chmod(archive, 0o644)
        want = oracle_records()
        exported = None
        if PODMAN is not None:
            exported = podman_export(archive, os.path.join(base, "podman"))
        yield base, archive, want, exported
    finally:
        for d, _dirs, _files in os.walk(base):
            if is_mounted(d):
                unmount(d)
        shutil.rmtree(base, ignore_errors=True)


def uf(*args, user=False):
    if user:
        return as_user(PYTHON, "-m", "unionfs", *args, check=False)
    return run_unionfs(*args)


def mounted_tree(store, mnt, user=False, image="owners:1"):
    """Mount the store's image on mnt (as the user or root), walk it as that user, unmount."""
    r = uf("image", "mount", image, mnt, "--store", store, user=user)
    assert r.returncode == 0, r.stderr
    try:
        if user:
            out = as_user(PYTHON, "-c", WALK, mnt).stdout
        else:
            out = subprocess.run([PYTHON, "-c", WALK, mnt], capture_output=True, text=True,
                                 check=True, timeout=60).stdout
    finally:
        r = uf("image", "umount", mnt, "--store", store, user=user)
        if is_mounted(mnt):
            unmount(mnt)
    assert not is_mounted(mnt)
    return json.loads(out)


def compare(got, want, denied=()):
    """got (a walk) against want (records); entries under denied directories were not seen,
    nor were the data of files the walker may not read."""
    tree = got["tree"]
    for path, r in tree.items():
        assert r.pop("listed_as_type"), path       # the listing's type is the entry's
        if "sha256" not in r and "sha256" in want.get(path, {}):
            r["sha256"] = want[path]["sha256"]      # unreadable for this user: size compared
    hidden = {p for p in want if any(p.startswith(d + "/") for d in denied)}
    assert {p: want[p] for p in want if p not in hidden} == tree


def test_podman_export_is_the_tar_listing(work):
    _base, _archive, want, exported = work
    if exported is None:
        pytest.skip("podman is not installed: the reference is the tar listing alone")
    assert exported == want


def test_imported_by_root(work):
    base, archive, want, _ = work
    store, mnt = os.path.join(base, "root-store"), os.path.join(base, "root-mnt")
    os.mkdir(mnt)
    assert uf("image", "import", archive, "--store", store).returncode == 0
    got = mounted_tree(store, mnt)
    compare(got, want)
    assert got["dev_null"] == "EACCES"          # nodev, the image mount's default


def user_import(base, name, archive):
    """The user imports archive into a store in their own home BASE/NAME: (store, mountpoint,
    the import's CompletedProcess)."""
    home = os.path.join(base, name)
    os.mkdir(home)
    os.chown(home, UID, GID)
    store, mnt = home + "/store", home + "/mnt"
    as_user("mkdir", mnt)
    r = uf("image", "import", archive, "--store", store, user=True)
    assert r.returncode == 0, r.stderr
    return store, mnt, r


def test_imported_by_a_user_mounted_by_the_user_and_by_root(work):
    base, archive, want, _ = work
    store, mnt, r = user_import(base, "home", archive)
    assert "skipped" not in r.stderr and "warning" not in r.stderr
    for meta in os.listdir(store + "/layers"):
        with open(os.path.join(store, "layers", meta, "meta.json")) as f:
            assert json.load(f)["owners"] == "xattr"
    with fuse_open_to_users():
        got = mounted_tree(store, mnt, user=True)
    # what the user may not enter (0750 1000:1000, 0700 root) stays closed, as on any mount
    assert got["denied"] == ["home/u", "root"]
    compare(got, want, got["denied"])
    assert got["dev_null"] == "EACCES"
    # root mounting the user's store sees the real owners too, every entry
    rootmnt = os.path.join(base, "root-of-user-mnt")
    os.mkdir(rootmnt)
    got = mounted_tree(store, rootmnt)
    assert got["denied"] == []
    compare(got, want)
    # ... but never with suid or dev: those owners and devices are the user's word
    r = uf("image", "mount", "owners:1", rootmnt, "--store", store, "-o", "dev")
    assert r.returncode == 1 and "imported without root" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not is_mounted(rootmnt)


CHANGE = r"""
import os, sys
m = sys.argv[1]
with open(m + "/srv/nobody", "ab") as f:
    f.write(b"appended\n")
with open(m + "/tmp/new", "wb") as f:
    f.write(b"new\n")
os.chmod(m + "/tmp/new", 0o640)
os.symlink("new", m + "/tmp/new-link")
"""


def test_a_users_commit_keeps_the_owners(work):
    """A user's --rw mount, changed and committed: the new image is the old one, owners and
    all, plus the user's changes, as root sees it."""
    base, archive, want, _ = work
    store, mnt, _ = user_import(base, "home2", archive)
    with fuse_open_to_users():
        r = uf("image", "mount", "owners:1", mnt, "--upper", "s", "--store", store, user=True)
        assert r.returncode == 0, r.stderr
        try:
            as_user(PYTHON, "-c", CHANGE, mnt)
        finally:
            uf("image", "umount", mnt, "--store", store, user=True)
            if is_mounted(mnt):
                unmount(mnt)
    r = uf("commit", "s", "owners:2", "--store", store, user=True)
    assert r.returncode == 0, r.stderr
    rootmnt = os.path.join(base, "root-of-commit-mnt")
    os.mkdir(rootmnt)
    got = mounted_tree(store, rootmnt, image="owners:2")
    data = b"the importer's own\nappended\n"
    want = dict(want)
    want["srv/nobody"] = dict(want["srv/nobody"], size=len(data),
                              sha256=hashlib.sha256(data).hexdigest())
    want["tmp/new"] = {"type": stat.S_IFREG, "mode": 0o640, "uid": UID, "gid": GID, "size": 4,
                       "sha256": hashlib.sha256(b"new\n").hexdigest()}
    want["tmp/new-link"] = {"type": stat.S_IFLNK, "mode": 0o777, "uid": UID, "gid": GID,
                            "target": "new"}
    compare(got, want)
