"""diff and commit from an upper in the kernel's format, without FUSE: the A/C/D list, the layer
tar (OCI whiteouts, opaque markers, redirects written out), determinism, and the property that
the committed layer over the image reads exactly like the upper over the image."""
import hashlib
import io
import os
import stat
import tarfile

import pytest

from unionfs.image.changes import Changes
from unionfs.image.commit import write_layer
from unionfs.image.importer import import_archive
from unionfs.image.store import Store
from unionfs.image.extract import extract_tar
from unionfs.core.union import Union
from tests.mountutil import load_script

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (char 0/0, trusted.* xattrs)")


fx = load_script("build_image_fixtures")
T = 1_700_000_000_000_000_000


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    base = tmp_path_factory.mktemp("img")
    p = fx.docker_archive(str(base / "a.tar"), [fx.sample_image()], "new")
    store = Store(str(base / "store"))
    import_archive(store, p)
    return store.get("sample:1.0")


def w(root, rel, data=b"", mode=0o644):
    p = os.path.join(root, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(data)
    os.chmod(p, mode)
    os.utime(p, ns=(T, T))
    return p


def wh(root, rel):
    p = os.path.join(root, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    os.mknod(p, stat.S_IFCHR, os.makedev(0, 0))


def make_upper(root):
    """What a container's session might leave in its upper (kernel format)."""
    os.makedirs(root)
    w(root, "etc/new", b"new file\n")
    w(root, "etc/app.conf", b"changed\n", 0o600)
    os.setxattr(os.path.join(root, "etc/app.conf"), "trusted.overlay.unionfs.ino", b"1234")
    os.setxattr(os.path.join(root, "etc/app.conf"), "user.note", b"kept")
    wh(root, "etc/passwd")
    wh(root, "etc/never-existed")
    # rm -rf usr/lib; mkdir usr/lib; add z
    os.makedirs(os.path.join(root, "usr/lib"))
    os.setxattr(os.path.join(root, "usr/lib"), "trusted.overlay.opaque", b"y")
    w(root, "usr/lib/z", b"z\n")
    # mv opt/old opt/moved; touch opt/moved/extra
    os.makedirs(os.path.join(root, "opt/moved"))
    os.setxattr(os.path.join(root, "opt/moved"), "trusted.overlay.redirect", b"/opt/old")
    w(root, "opt/moved/extra", b"extra\n")
    wh(root, "opt/old")
    # a new dir with hard links and a symlink
    w(root, "newdir/a", b"linked\n")
    os.link(os.path.join(root, "newdir/a"), os.path.join(root, "newdir/b"))
    os.symlink("a", os.path.join(root, "newdir/s"))
    os.utime(os.path.join(root, "newdir/s"), ns=(T, T), follow_symlinks=False)
    w(root, "bin/tool", b"#!/bin/sh\necho new tool\n", 0o755)
    os.setxattr(os.path.join(root, "bin/tool"), "security.capability", fx.CAP)
    for d in ("etc", "usr", "usr/lib", "opt", "opt/moved", "newdir", "bin", ""):
        os.utime(os.path.join(root, d), ns=(T, T))
    return root


def test_diff_lines(image, tmp_path):
    up = make_upper(str(tmp_path / "upper"))
    lines = Changes(up, image.lower_dirs()).diff_lines()
    assert lines == [
        "C /bin", "C /bin/tool",
        "C /etc", "C /etc/app.conf", "A /etc/new", "D /etc/passwd",
        "A /newdir", "A /newdir/a", "A /newdir/b", "A /newdir/s",
        "C /opt", "A /opt/moved", "A /opt/moved/extra", "A /opt/moved/new", "D /opt/old",
        "C /usr", "C /usr/lib", "D /usr/lib/libx.so.1", "A /usr/lib/z",
    ]


def _entries(tar_bytes):
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as t:
        return [(m.name, m.type, m.linkname, m.uname, m.gname, dict(m.pax_headers)) for m in t]


def test_layer_tar(image, tmp_path):
    up = make_upper(str(tmp_path / "upper"))
    buf = io.BytesIO()
    diff_id, n, _ = write_layer(Changes(up, image.lower_dirs()).layer_entries(), buf)
    data = buf.getvalue()
    assert diff_id == "sha256:" + hashlib.sha256(data).hexdigest() and n == len(data)
    ents = _entries(data)
    names = [e[0] for e in ents]
    assert names == sorted(names, key=lambda p: p.split("/"))
    byname = {e[0]: e for e in ents}
    assert byname["etc/.wh.passwd"][1] == tarfile.REGTYPE
    assert "etc/.wh.never-existed" not in byname          # a whiteout of nothing is no change
    assert "usr/lib/.wh..wh..opq" in byname
    assert "opt/.wh.old" in byname
    assert "opt/moved/.wh..wh..opq" in byname               # written in full
    assert "opt/moved/new" in byname and "opt/moved/extra" in byname
    assert byname["newdir/b"][1] == tarfile.LNKTYPE and byname["newdir/b"][2] == "newdir/a"
    assert "newdir/.wh..wh..opq" not in byname               # nothing below it to hide
    assert all(e[3] == "" and e[4] == "" for e in ents)
    pax = byname["etc/app.conf"][5]
    assert pax.get("SCHILY.xattr.user.note") == "kept"
    assert not any(k.startswith("SCHILY.xattr.trusted.overlay") for e in ents for k in e[5])
    assert byname["bin/tool"][5]["SCHILY.xattr.security.capability"].encode(
        "utf-8", "surrogateescape") == fx.CAP


def test_same_change_same_diff_id(image, tmp_path):
    ids = set()
    for i in range(2):
        up = make_upper(str(tmp_path / ("upper%d" % i)))
        buf = io.BytesIO()
        ids.add(write_layer(Changes(up, image.lower_dirs()).layer_entries(), buf)[0])
    assert len(ids) == 1


def union_view(u, path="/"):
    """{path: (type, mode, uid, gid, content/target, user-visible xattrs)} through a Union."""
    out = {}
    for name, _code, _ino, _full in u.listdir(path):
        if name in (".", ".."):
            continue
        p = path.rstrip("/") + "/" + name
        node = u.resolve(p)
        real = u.real(node)
        st = os.lstat(real)
        if stat.S_ISREG(st.st_mode):
            body = open(real, "rb").read()
        elif stat.S_ISLNK(st.st_mode):
            body = os.readlink(real)
        elif stat.S_ISCHR(st.st_mode):
            body = st.st_rdev
        else:
            body = None
        out[p] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, body,
                  sorted(u.listxattr(p)))
        if node.is_dir:
            out.update(union_view(u, p))
    return out


def test_committed_layer_reads_like_the_upper(image, tmp_path):
    up = make_upper(str(tmp_path / "upper"))
    lowers = image.lower_dirs()
    tar = tmp_path / "layer.tar"
    with open(tar, "wb") as f:
        write_layer(Changes(up, lowers).layer_entries(), f)
    root = tmp_path / "layer"
    root.mkdir()
    extract_tar(str(tar), str(root))
    want = union_view(Union([up] + lowers))
    got = union_view(Union([str(root)] + lowers))
    assert got == want
    assert "/opt/old" not in got and "/opt/moved/new" in got and "/etc/passwd" not in got


def test_diff_of_bare_upper_without_lowers(tmp_path):
    up = str(tmp_path / "upper")
    w(up, "a/new", b"x")
    wh(up, "a/gone")
    # without the lowers a directory cannot be told new: it holds a whiteout, so it is changed
    assert Changes(up, []).diff_lines() == ["C /a", "D /a/gone", "A /a/new"]


def _convert(root, form):
    """Rewrite a kernel-format upper in another form an upper can have: 'user' (the userxattr
    mode: user.overlay.*), 'oci' (also '.wh.' files instead of devices, as written by a daemon
    that may not make them; the opaque marker as a file)."""
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames + ([""] if dirpath == root else []):
            p = os.path.join(dirpath, n) if n else dirpath
            st = os.lstat(p)
            if stat.S_ISCHR(st.st_mode) and form == "oci":
                os.unlink(p)
                open(os.path.join(dirpath, ".wh." + n), "wb").close()
                continue
            for x in os.listxattr(p, follow_symlinks=False):
                if x.startswith("trusted.overlay."):
                    v = os.getxattr(p, x, follow_symlinks=False)
                    os.removexattr(p, x, follow_symlinks=False)
                    if form == "oci" and x == "trusted.overlay.opaque":
                        open(os.path.join(p, ".wh..wh..opq"), "wb").close()
                        os.utime(p, ns=(T, T))
                    else:
                        os.setxattr(p, "user.overlay." + x[len("trusted.overlay."):], v)
    for dirpath, dirnames, filenames in os.walk(root):
        os.utime(dirpath, ns=(T, T))


@pytest.mark.parametrize("form", ["user", "oci"])
def test_other_upper_forms_give_the_same_diff_and_layer(image, tmp_path, form):
    kernel = make_upper(str(tmp_path / "kernel"))
    other = make_upper(str(tmp_path / form))
    _convert(other, form)
    lowers = image.lower_dirs()
    assert Changes(other, lowers).diff_lines() == Changes(kernel, lowers).diff_lines()
    a, b = io.BytesIO(), io.BytesIO()
    write_layer(Changes(kernel, lowers).layer_entries(), a)
    write_layer(Changes(other, lowers).layer_entries(), b)
    assert _entries(b.getvalue()) == _entries(a.getvalue())
