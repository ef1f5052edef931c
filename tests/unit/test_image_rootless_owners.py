"""Owners, modes, device nodes and capabilities of layers extracted without root (no FUSE): the
override xattr format with its type field, what extraction stores, and the union showing exactly
what the layer tars say."""
import hashlib
import os
import stat
import tarfile

import pytest

from unionfs.core import ids
from unionfs.core import whiteout as wo
from unionfs.core.ids import IdMapper, Override, format_override, parse_override
from unionfs.image.extract import Extractor, extract_tar
from tests.mountutil import load_script
from tests.unit.helpers import make_union

fx = load_script("build_image_fixtures")
E = fx.E
OV = ids.OVERRIDE[2]
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, security.*)")


@pytest.mark.parametrize("value, want", [
    (b"0:0:644", Override(0, 0, 0o644, None, 0)),
    (b"0:0:04755", Override(0, 0, 0o4755, None, 0)),          # container storage's leading 0
    (b"1000:5:640:file", Override(1000, 5, 0o640, stat.S_IFREG, 0)),
    (b"0:0:666:char-1-3", Override(0, 0, 0o666, stat.S_IFCHR, os.makedev(1, 3))),
    (b"0:6:660:block-8-16", Override(0, 6, 0o660, stat.S_IFBLK, os.makedev(8, 16))),
    (b"33:33:620:pipe", Override(33, 33, 0o620, stat.S_IFIFO, 0)),
    (b"0:0:777:symlink", Override(0, 0, 0o777, stat.S_IFLNK, 0)),
    (b"0:0:755:dir", Override(0, 0, 0o755, stat.S_IFDIR, 0)),
    (b"0:0:644:gizmo", Override(0, 0, 0o644, None, 0)),          # unknown type: owner still counts
    (b"0:0:644:char-1", Override(0, 0, 0o644, None, 0)),
    (b"0:0", None), (b"a:0:644", None), (b"0:0:9", None), (b"-1:0:644", None), (b"\xff", None),
])
def test_override_parse(value, want):
    assert parse_override(value) == want


@pytest.mark.parametrize("fields", [
    (0, 0, 0o644, None, 0), (1, 2, 0o4755, stat.S_IFCHR, os.makedev(4095, 1048575)),
    (0, 6, 0o660, stat.S_IFBLK, os.makedev(8, 0)), (9, 9, 0o600, stat.S_IFIFO, 0),
    (0, 0, 0o777, stat.S_IFLNK, 0)])
def test_override_round_trip(fields):
    assert parse_override(format_override(*fields)) == Override(*fields)


def test_storage_names_hidden_in_every_mode():
    for mode in (0, 1, 2):
        m = IdMapper(xattr_permissions=mode)
        for name in (ids.OVERRIDE[1], ids.OVERRIDE[2], ids.CAP_STORE):
            assert wo.is_interpreted_xattr(name)
        assert not wo.is_interpreted_xattr(ids.CAP)
        assert m.listxattr([OV, ids.CAP_STORE, "user.x"]) == (
            ["user.x", ids.CAP] if mode else ["user.x"])


@needs_root
def test_rewritten_override_keeps_the_type(tmp_path):
    f = tmp_path / "dev"
    f.write_bytes(b"")
    os.setxattr(f, OV, b"0:0:666:char-1-3")
    m = IdMapper(xattr_permissions=2)
    m.chown(str(f), 5, -1)
    assert os.getxattr(f, OV) == b"5:0:666:char-1-3"
    m.chmod(str(f), 0o600)
    assert os.getxattr(f, OV) == b"5:0:600:char-1-3"
    shown = m.show(os.lstat(f), str(f))
    assert (shown.st_mode, shown.st_uid, shown.st_rdev) == (stat.S_IFCHR | 0o600, 5,
                                                            os.makedev(1, 3))


def extract_as_user(tmp_path, name, entries):
    """Extract a layer the way a user without root does (the test itself may be root)."""
    tar = tmp_path / (name + ".tar")
    tar.write_bytes(fx.layer_tar(entries))
    root = tmp_path / name
    root.mkdir()
    ex = Extractor(str(root), name, as_root=False)
    try:
        with tarfile.open(tar) as t:
            for ti in t:
                ex.add(t, ti)
        ex.finish()
        return ex.result, str(root)
    finally:
        ex.close()


def shown_tree(union):
    """The union's tree in the form of fx.expected_snapshot (what users see, no times)."""
    out = {}

    def record(path, code=None):
        st = union.getattr(path)[0]
        fmt = stat.S_IFMT(st.st_mode)
        if code is not None:
            assert code == fmt, (path, code, fmt)   # the listing's type is the entry's
        rec = {"type": fmt, "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}
        if fmt == stat.S_IFREG:
            h = union.open(path, os.O_RDONLY)
            try:
                data = union.read(h, 1 << 20, 0)
            finally:
                union.release(h)
            rec["size"], rec["sha256"] = st.st_size, hashlib.sha256(data).hexdigest()
        elif fmt == stat.S_IFLNK:
            rec["target"] = union.readlink(path)
            assert st.st_size == len(os.fsencode(rec["target"]))
        elif fmt in (stat.S_IFCHR, stat.S_IFBLK):
            rec["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
        x = {n: union.getxattr(path, n) for n in sorted(union.listxattr(path))}
        if x:
            rec["xattrs"] = x
        return rec

    out["."] = record("/")
    stack = ["/"]
    while stack:
        d = stack.pop()
        for name, code, _ino, _full in union.listdir(d)[2:]:
            p = (d.rstrip("/") + "/" + name)
            out[p[1:]] = record(p, code)
            if code == stat.S_IFDIR:
                stack.append(p)
    return out


@pytest.fixture
def user_layers(tmp_path):
    layers = fx.owners_layers()
    roots = []
    for i, entries in enumerate(layers):
        res, root = extract_as_user(tmp_path, "layer%d" % i, entries)
        assert res.owners == "xattr"
        roots.append(root)
    return layers, roots


def test_extracted_without_root_nothing_privileged_on_disk(user_layers):
    _layers, roots = user_layers
    me = (os.geteuid(), os.getegid())
    base = roots[0]
    for d, dirs, files in os.walk(base):
        for n in dirs + files + ([""] if d == base else []):
            p = os.path.join(d, n) if n else d
            st = os.lstat(p)
            assert (st.st_uid, st.st_gid) == me, p
            assert not st.st_mode & 0o7000, p            # no setuid file of the user's
            if stat.S_ISLNK(st.st_mode):                 # only the importer's own links
                continue
            assert stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode), p
            assert st.st_mode & 0o600 == 0o600, p        # the daemon reads what it serves
            assert parse_override(os.getxattr(p, OV)) is not None, p
            assert ids.CAP not in os.listxattr(p), p
    # a device node is an empty file that records its type; a capability its own name
    assert os.getxattr(base + "/dev/null", OV) == b"0:0:666:char-1-3"
    assert os.getxattr(base + "/dev/sda", OV) == b"0:6:660:block-8-0"
    assert os.getxattr(base + "/usr/bin/passwd", OV) == b"0:0:4755"
    assert os.getxattr(base + "/home/u/link", OV) == b"1000:1000:777:symlink"
    assert open(base + "/home/u/link").read() == "file"
    assert os.getxattr(base + "/usr/bin/ping", ids.CAP_STORE) == fx.CAP
    assert os.getxattr(base + "/opt", OV) == b"0:0:755"          # implied: as root makes it
    assert os.getxattr(base, OV) == b"0:0:755"


def test_union_shows_what_the_tars_say(user_layers):
    layers, roots = user_layers
    want = fx.expected_snapshot(fx.apply_layers(layers))
    u = make_union(list(reversed(roots)), None, None, ids=IdMapper(xattr_permissions=2))
    assert shown_tree(u) == want
    # without the override read (the raw store): what the importer wrote, storage names hidden
    raw = shown_tree(make_union(list(reversed(roots)), None, None,
                                ids=IdMapper(xattr_permissions=0)))
    assert raw["dev/null"]["type"] == stat.S_IFREG and "xattrs" not in raw["usr/bin/ping"]


def test_union_readlink_of_a_plain_file_is_einval(user_layers):
    _layers, roots = user_layers
    u = make_union(list(reversed(roots)), None, None, ids=IdMapper(xattr_permissions=2))
    with pytest.raises(OSError) as e:
        u.readlink("/etc/shadow")
    assert e.value.errno == 22


def test_tar_cannot_plant_the_storage_names(tmp_path):
    """Only the import writes override and capability storage: a layer's own copies go."""
    planted = {OV: b"0:0:4755:char-1-1", ids.OVERRIDE[1]: b"0:0:4755",
               ids.CAP_STORE: fx.CAP, "user.keep": b"1"}
    entries = [E("f", data=b"x", mode=0o644, uid=os.geteuid(), gid=os.getegid(), xattrs=planted)]
    res, root = extract_as_user(tmp_path, "l", entries)
    assert res.dropped_xattrs == 3
    assert parse_override(os.getxattr(root + "/f", OV)) == Override(
        os.geteuid(), os.getegid(), 0o644, None, 0)
    assert sorted(os.listxattr(root + "/f")) == [OV, "user.keep"]
    tar = tmp_path / "l2.tar"
    tar.write_bytes(fx.layer_tar(entries))
    os.mkdir(tmp_path / "r2")
    res = extract_tar(str(tar), str(tmp_path / "r2"))
    assert res.dropped_xattrs == 3
    names = os.listxattr(tmp_path / "r2" / "f")
    assert OV not in names and ids.CAP_STORE not in names


def test_commit_of_an_upper_written_without_root(user_layers, tmp_path):
    """An upper a daemon without root wrote (owners, types and capabilities in xattrs) is
    committed as the entries it shows: a layer tar says what the mount said."""
    import io
    from unionfs.image.changes import Changes
    from unionfs.image.commit import write_layer
    _layers, roots = user_layers
    up = tmp_path / "upper"
    for rel, data, ov in (("dev/zero", b"", b"0:0:666:char-1-5"),
                          ("etc/shadow", b"changed\n", b"0:42:640"),
                          ("home/u/link2", b"file", b"1000:1000:777:symlink"),
                          ("srv/pipe2", b"", b"33:33:620:pipe"),
                          ("usr/bin/ping", b"ping v3\n", b"0:0:755")):
        p = up / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        os.setxattr(p, OV, ov)
    os.setxattr(up / "usr/bin/ping", ids.CAP_STORE, fx.CAP)
    buf = io.BytesIO()
    write_layer(Changes(str(up), list(reversed(roots))).layer_entries(), buf)
    buf.seek(0)
    got = {}
    with tarfile.open(fileobj=buf) as t:
        for ti in t:
            got[ti.name] = (ti.type, ti.mode, ti.uid, ti.gid, ti.linkname, ti.devmajor,
                            ti.devminor, ti.size, sorted(k for k in ti.pax_headers
                                                         if k.startswith("SCHILY.")))
    assert got["dev/zero"] == (tarfile.CHRTYPE, 0o666, 0, 0, "", 1, 5, 0, [])
    assert got["etc/shadow"] == (tarfile.REGTYPE, 0o640, 0, 42, "", 0, 0, 8, [])
    assert got["home/u/link2"] == (tarfile.SYMTYPE, 0o777, 1000, 1000, "file", 0, 0, 0, [])
    assert got["srv/pipe2"] == (tarfile.FIFOTYPE, 0o620, 33, 33, "", 0, 0, 0, [])
    assert got["usr/bin/ping"] == (tarfile.REGTYPE, 0o755, 0, 0, "", 0, 0, 8,
                                   ["SCHILY.xattr." + ids.CAP])



def test_readlink_of_a_fifo_put_in_a_links_place_does_not_block(tmp_path, monkeypatch):
    """A layer's owner may swap files under a mount, between the xattr read and the open:
    readlink must answer EINVAL, not wait for a writer."""
    p = str(tmp_path / "link")
    os.mkfifo(p)
    m = IdMapper(xattr_permissions=2)
    monkeypatch.setattr(m, "read_override", lambda real: Override(0, 0, 0o777, stat.S_IFLNK, 0))
    with pytest.raises(OSError) as e:
        m.readlink(p)
    assert e.value.errno == 22


def test_storage_names_refused_and_capability_removable_through_the_union(user_layers,
                                                                          tmp_path):
    """Nobody may forge an override or a stored capability through the mount, in any mode;
    a stored capability the mount shows can be removed through it."""
    _layers, roots = user_layers
    for mode in (0, 2):
        up, work = tmp_path / ("up%d" % mode), tmp_path / ("work%d" % mode)
        up.mkdir()
        work.mkdir()
        u = make_union(list(reversed(roots)), str(up), str(work),
                       ids=IdMapper(xattr_permissions=mode))
        for name in (OV, ids.OVERRIDE[1], ids.CAP_STORE):
            with pytest.raises(OSError):
                u.setxattr("/etc/shadow", name, b"0:0:4755", 0)
            assert name not in u.listxattr("/usr/bin/ping")
        assert os.listdir(up) == []                      # refused before any copy-up
    assert ids.CAP in u.listxattr("/usr/bin/ping")
    u.removexattr("/usr/bin/ping", ids.CAP)
    assert ids.CAP not in u.listxattr("/usr/bin/ping")
    with pytest.raises(OSError):
        u.getxattr("/usr/bin/ping", ids.CAP)
    assert u.getattr("/usr/bin/ping")[0].st_uid == 0   # the owner stayed


def test_inspection_reads_a_rootless_layer_as_the_tar_has_it(user_layers, tmp_path):
    """history/find/waste read layers without a mount: the owners, modes and types a layer
    imported without root keeps in xattrs are what they report, as for a root import."""
    from unionfs.inspect.layerindex import LayerIndex
    layers, roots = user_layers
    as_root = tmp_path / "as-root"
    as_root.mkdir()
    ex = Extractor(str(as_root), "root", as_root=True)
    try:
        with tarfile.open(fileobj=__import__("io").BytesIO(fx.layer_tar(layers[0]))) as t:
            for ti in t:
                ex.add(t, ti)
        ex.finish()
    finally:
        ex.close()

    def facts(root):
        idx = LayerIndex.read(root)
        return {p: (e.kind, e.mode, e.uid, e.gid, e.target, e.rdev, idx.xattrs(p).get(ids.CAP))
                for p, e in idx.entries.items()}
    user, real = facts(roots[0]), facts(str(as_root))
    assert user["dev/null"][:4] == ("char", 0o666, 0, 0) and user["dev/null"][5] == (1, 3)
    assert user["usr/bin/passwd"][:4] == ("file", 0o4755, 0, 0)
    assert user["home/u/link"][0] == "symlink" and user["home/u/link"][4] == "file"
    assert user["usr/bin/ping"][6] == fx.CAP
    assert user == real
