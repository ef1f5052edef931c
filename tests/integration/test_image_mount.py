"""Images through real mounts: import every archive format, mount, and see exactly the tree the
layers make; --rw, diff, commit, save, import elsewhere, mount again: the same changed tree."""
import json
import os
import stat

import pytest

from tests.mountutil import load_script, is_mounted, requires_fuse, run_unionfs, snapshot, unmount

pytestmark = [requires_fuse, pytest.mark.fuse]
ROOT = os.geteuid() == 0


fx = load_script("build_image_fixtures")


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    return fx.build_all(str(tmp_path_factory.mktemp("fx")), devices=ROOT)


def uf(store, *args, ok=True):
    r = run_unionfs(*(list(args) + ["--store", store]))
    if ok:
        assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r


class Mounts:
    def __init__(self):
        self.mnts = []

    def add(self, mnt):
        self.mnts.append(str(mnt))
        return str(mnt)

    def close(self):
        for m in reversed(self.mnts):
            unmount(m)


@pytest.fixture
def mounts():
    m = Mounts()
    try:
        yield m
    finally:
        m.close()


def no_times_for_dirs(snap):
    for rec in snap.values():
        if rec["type"] == stat.S_IFDIR:
            rec.pop("mtime_ns", None)
    return snap


@pytest.mark.parametrize("name", ["docker-classic", "docker-new", "oci-dir", "oci-tar", "oci-mixed"])
def test_mounted_image_is_the_layers_merged(archives, tmp_path, mounts, name):
    store = str(tmp_path / "store")
    uf(store, "image", "import", archives[name])
    mnt = mounts.add(tmp_path / "mnt")
    os.makedirs(mnt)
    uf(store, "image", "mount", "sample:1.0", mnt)
    tree = fx.apply_layers(fx.sample_layers(devices=ROOT))
    want = fx.expected_snapshot(tree)
    if not ROOT:
        for rec in want.values():
            rec["uid"], rec["gid"] = os.getuid(), os.getgid()
            rec.get("xattrs", {}).pop("security.capability", None)
            if not rec.get("xattrs", True):
                rec.pop("xattrs")
    got = snapshot(mnt)
    assert got == want
    # times to the nanosecond, hard links as one inode
    for path, e in tree.items():
        if e["kind"] != "dir":
            assert os.lstat(os.path.join(mnt, path)).st_mtime_ns == e["mtime_ns"], path
    assert os.lstat(os.path.join(mnt, "data/new")).st_ino == \
        os.lstat(os.path.join(mnt, "data/new-link")).st_ino
    with pytest.raises(OSError):
        open(os.path.join(mnt, "etc/new"), "w")           # read-only
    uf(store, "image", "umount", mnt)
    assert not is_mounted(mnt)


def test_many_mounts_share_layers(archives, tmp_path, mounts):
    store = str(tmp_path / "store")
    uf(store, "image", "import", archives["oci-dir"])
    snaps = []
    for i in range(3):
        mnt = mounts.add(tmp_path / ("m%d" % i))
        os.makedirs(mnt)
        uf(store, "image", "mount", "localhost/sample:1.0", mnt, *(["--rw"] if i else []))
        snaps.append(snapshot(mnt))
    assert snaps[0] == snaps[1] == snaps[2]
    with open(os.path.join(mounts.mnts[1], "etc/passwd"), "a") as f:
        f.write("only in mount 1\n")
    assert open(os.path.join(mounts.mnts[2], "etc/passwd")).read().count("only in") == 0
    # an image in use is untagged but kept
    r = uf(store, "image", "rm", "sample:1.0")
    assert "kept" in r.stderr
    assert snapshot(mounts.mnts[0]) == snaps[0]
    for m in mounts.mnts:
        uf(store, "image", "umount", m)
    uppers = uf(store, "image", "uppers").stdout.splitlines()
    assert len(uppers) == 3
    uf(store, "image", "rm-upper", *[l.split()[0] for l in uppers[1:]])
    r = uf(store, "image", "prune")
    assert "Deleted: sha256:" in r.stdout


def change_things(mnt):
    p = lambda r: os.path.join(mnt, r)  # noqa: E731
    with open(p("etc/passwd"), "a") as f:
        f.write("new:x:1001:1001::/:/bin/sh\n")
    with open(p("etc/created"), "w") as f:
        f.write("created in the container\n")
    os.chmod(p("etc/created"), 0o640)
    os.remove(p("etc/precise"))
    os.rename(p("usr/lib"), p("usr/lib64"))          # a lower dir renamed: a redirect
    os.makedirs(p("srv/www/html"))
    with open(p("srv/www/html/index.html"), "w") as f:
        f.write("<h1>hi</h1>\n")
    os.link(p("srv/www/html/index.html"), p("srv/www/index.html"))
    os.symlink("www/html", p("srv/site"))
    import shutil
    shutil.rmtree(p("opt/old"))
    os.makedirs(p("opt/old"))                         # rmdir+mkdir: opaque
    with open(p("opt/old/fresh"), "w") as f:
        f.write("fresh\n")
    os.setxattr(p("etc/created"), "user.origin", b"container")
    os.chmod(p("bin/su"), 0o755)


def test_rw_diff_commit_save_import_mount(archives, tmp_path, mounts):
    store = str(tmp_path / "store")
    uf(store, "image", "import", archives["docker-classic"])
    mnt = mounts.add(tmp_path / "mnt")
    os.makedirs(mnt)
    name = uf(store, "image", "mount", "sample:1.0", mnt, "--rw").stdout.strip()
    change_things(mnt)
    want = no_times_for_dirs(snapshot(mnt, with_times=True))
    diff = uf(store, "diff", mnt).stdout.splitlines()
    assert diff == [
        "C /bin", "C /bin/su",
        "C /etc", "A /etc/created", "C /etc/passwd", "D /etc/precise",
        "C /opt", "C /opt/old", "A /opt/old/fresh", "D /opt/old/new",
        "A /srv", "A /srv/site", "A /srv/www", "A /srv/www/html", "A /srv/www/html/index.html",
        "A /srv/www/index.html",
        "C /usr", "D /usr/lib", "A /usr/lib64", "A /usr/lib64/libx.so.1",
    ]
    assert uf(store, "diff", name).stdout.splitlines() == diff        # by upper name
    r = uf(store, "commit", mnt, "changed:1", "-m", "my changes", "-a", "Tester <t@example.com>")
    image_id = r.stdout.strip()
    hist = uf(store, "image", "history", "changed:1").stdout.splitlines()
    assert "unionfs commit" in hist[1] and "my changes" in hist[1] and image_id[7:19] in hist[1]
    info = json.loads(uf(store, "image", "inspect", "changed:1").stdout)[0]
    assert info["Author"] == "Tester <t@example.com>" and len(info["RootFS"]["Layers"]) == 4
    uf(store, "image", "umount", mnt)
    # the upper is kept and reusable by name
    uf(store, "image", "mount", "sample:1.0", mnt, "--upper", name)
    assert no_times_for_dirs(snapshot(mnt, with_times=True)) == want
    uf(store, "image", "umount", mnt)
    for fmt in ("docker", "oci"):
        out = str(tmp_path / ("saved-%s.tar" % fmt))
        uf(store, "image", "save", "changed:1", "-o", out, "--format", fmt)
        store2 = str(tmp_path / ("store2-" + fmt))
        r = uf(store2, "image", "import", out)
        assert image_id in r.stdout and "changed:1" in r.stdout
        mnt2 = mounts.add(tmp_path / ("mnt2-" + fmt))
        os.makedirs(mnt2)
        uf(store2, "image", "mount", "changed:1", mnt2)
        got = no_times_for_dirs(snapshot(mnt2, with_times=True))
        got.pop("."), want.pop(".", None)
        assert got == want
        assert os.lstat(os.path.join(mnt2, "srv/www/index.html")).st_ino == \
            os.lstat(os.path.join(mnt2, "srv/www/html/index.html")).st_ino
        uf(store2, "image", "umount", mnt2)


def test_commit_is_deterministic(archives, tmp_path, mounts):
    store = str(tmp_path / "store")
    uf(store, "image", "import", archives["oci-tar"])
    diff_ids = []
    for i in range(2):
        mnt = mounts.add(tmp_path / ("m%d" % i))
        os.makedirs(mnt)
        uf(store, "image", "mount", "sample:1.0", mnt, "--rw")
        with open(os.path.join(mnt, "etc/app.conf"), "w") as f:
            f.write("same change\n")
        os.remove(os.path.join(mnt, "etc/passwd"))
        for p in ("etc/app.conf", "etc"):
            os.utime(os.path.join(mnt, p), ns=(10**18, 10**18))
        uf(store, "commit", mnt, "c:%d" % i)
        info = json.loads(uf(store, "image", "inspect", "c:%d" % i).stdout)[0]
        diff_ids.append(info["RootFS"]["Layers"][-1])
        uf(store, "image", "umount", mnt)
    assert diff_ids[0] == diff_ids[1]


def test_mount_errors_are_one_line(archives, tmp_path):
    store = str(tmp_path / "store")
    r = uf(store, "image", "mount", "nothing:1", str(tmp_path), ok=False)
    assert r.returncode == 1 and r.stderr == "unionfs: no such image: nothing:1\n"
    uf(store, "image", "import", archives["oci-dir"])
    r = uf(store, "image", "mount", "sample:1.0", str(tmp_path / "missing"), ok=False)
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1 and "missing" in r.stderr
    r = uf(store, "image", "mount", "sample:1.0", str(tmp_path / "missing"), "--rw", ok=False)
    assert r.returncode == 1 and os.listdir(os.path.join(store, "uppers")) == []
    r = uf(store, "diff", str(tmp_path / "nothing-here"), ok=False)
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1
