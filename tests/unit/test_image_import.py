"""Import into the store: verification, atomicity, dedupe, names, rm/prune (no FUSE)."""
import json
import os
import stat
import subprocess
import sys

import pytest

from unionfs.image import extract
from unionfs.image.describe import history_rows
from unionfs.image.errors import ImageError
from unionfs.image.importer import import_archive
from unionfs.image.store import Store
from tests.mountutil import REPO, load_script

ENV = dict(os.environ, PYTHONPATH=REPO)


fx = load_script("build_image_fixtures")
E = fx.E
DEVICES = os.geteuid() == 0


def cli(store, *args):
    return subprocess.run([sys.executable, "-m", "unionfs"] + [str(a) for a in args] +
                          ["--store", str(store)], env=ENV, capture_output=True, text=True,
                          timeout=60)


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    return fx.build_all(str(tmp_path_factory.mktemp("fx")), devices=DEVICES)


def state(root):
    """Everything in a store directory except the lock file: (path, type, size)."""
    out = set()
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(d, n)
            rel = os.path.relpath(p, root)
            if rel == "lock":
                continue
            st = os.lstat(p)
            out.add((rel, stat.S_IFMT(st.st_mode), st.st_size if stat.S_ISREG(st.st_mode) else 0))
    return out


def test_every_format_gives_the_same_layers(archives, tmp_path):
    store = Store(str(tmp_path / "s"))
    ids = set()
    for name in ("docker-classic", "docker-new", "oci-dir", "oci-tar", "oci-mixed"):
        (image_id, tags), = import_archive(store, archives[name])
        ids.add(image_id)
        assert tags == ["localhost/sample:1.0"]
    assert len(ids) == 1
    img = store.get("localhost/sample:1.0")
    assert len(store.layer_ids()) == 3          # each layer once, by DiffID
    for diff_id, t in zip(img.layers, fx.sample_image(devices=DEVICES).tars):
        with open(store.layer_tar(diff_id), "rb") as f:
            assert f.read() == t                # byte-exact for save
        assert os.path.isdir(store.layer_root(diff_id))
    assert os.listdir(store.path("tmp")) == []


def test_names_and_ids(archives, tmp_path):
    store = Store(str(tmp_path / "s"))
    (image_id, _), = import_archive(store, archives["docker-new"], tags=["other:2", "plain"])
    for ref in ("localhost/sample:1.0", "sample:1.0", "other:2", "plain", "plain:latest",
                image_id, image_id[7:], image_id[7:19], image_id[7:12]):
        assert store.resolve(ref) == image_id, ref
    for ref in ("sample", "nope:1", "sample:2", "zzz"):
        with pytest.raises(ImageError, match="no such image"):
            store.resolve(ref)


def _hostile_archives(tmp_path):
    good = fx.layer_tar([E("a", data=b"a")])
    out = {}

    def arch(name, tars, comp=None, config=None, layout="new", hook=None):
        img = fx.Img(tars, comp, tags=["evil:1"], config=config)
        out[name] = fx.docker_archive(str(tmp_path / (name + ".tar")), [img], layout, hook)

    arch("diffid-mismatch", [good], config=fx.make_config(["sha256:" + "2" * 64]))
    bad_gz = fx.compress(fx.layer_tar([E("b", data=os.urandom(200_000))]), "gzip")
    img = fx.Img([good], "gzip", tags=["evil:1"])
    img.blobs = [bad_gz[: len(bad_gz) // 2]]  # truncated, digest in the name matches
    out["truncated-gzip"] = fx.docker_archive(str(tmp_path / "tg.tar"), [img], "new")
    img = fx.Img([good], "zstd", tags=["evil:1"])
    z = bytearray(img.blobs[0])
    z[-6:] = b"\x00" * 6
    img.blobs = [bytes(z)]
    out["corrupt-zstd"] = fx.docker_archive(str(tmp_path / "cz.tar"), [img], "new")

    def outside(m):
        m[0]["Layers"] = ["../outside/layer.tar"]
    arch("manifest-outside", [good], hook=outside)
    # OCI: layer blob that does not match its digest
    img = fx.Img([good], None, tags=["evil:1"])
    files = fx.oci_files([img])
    files = [(n, (d + b"\0" * 512) if n.endswith(fx.sha(good)[7:]) else d) for n, d in files]
    out["blob-digest-mismatch"] = fx.write_tar(str(tmp_path / "bd.tar"), files)
    for case, entries in (("dotdot", [E("../x", data=b"x")]),
                          ("through-symlink", [E("l", "symlink", link="/"), E("l/x", data=b"x")]),
                          ("hardlink-outside", [E("h", "hardlink", link="/etc/passwd")]),
                          ("duplicate", [E("f", data=b"1"), E("f", data=b"2")]),
                          ("bare-whiteout", [E("d", "dir"), E("d/.wh.", data=b"")])):
        # a good first layer goes first: a failure in a later layer must undo it too
        arch("entry-" + case, [fx.layer_tar([E("first", data=b"1")]), fx.layer_tar(entries)])
    return out


def test_hostile_archives_leave_the_store_unchanged(archives, tmp_path):
    store = Store(str(tmp_path / "s"))
    import_archive(store, archives["docker-classic"])
    before = state(store.root)
    tags = store.tags()
    expected = {"diffid-mismatch": "DiffID mismatch", "truncated-gzip": "truncated gzip",
                "corrupt-zstd": "zstd", "manifest-outside": "outside the archive",
                "blob-digest-mismatch": "digest mismatch", "entry-dotdot": "'..'",
                "entry-through-symlink": "not a directory", "entry-hardlink-outside": "absolute",
                "entry-duplicate": "duplicate", "entry-bare-whiteout": "bare whiteout"}
    hostile = _hostile_archives(tmp_path)
    assert set(hostile) == set(expected)
    for name, path in sorted(hostile.items()):
        r = cli(store.root, "image", "import", path)
        assert r.returncode == 1, (name, r.stdout, r.stderr)
        err = r.stderr.strip()
        assert err.startswith("unionfs: ") and "\n" not in err, (name, err)
        assert expected[name] in err, (name, err)
        assert state(store.root) == before, name
        assert store.tags() == tags
    assert not os.path.exists(str(tmp_path / "x")) and not os.path.exists(str(tmp_path / "outside"))


def test_interrupted_import_registers_nothing(archives, tmp_path, monkeypatch):
    store = Store(str(tmp_path / "s"))
    store.ensure()
    before = state(store.root)
    real = extract.extract_tar
    calls = []

    def flaky(tar, root, what="layer"):
        calls.append(what)
        if len(calls) == 2:
            # half of this layer is on disk when the interrupt comes
            with open(os.path.join(root, "partial"), "w") as f:
                f.write("x")
            raise KeyboardInterrupt
        return real(tar, root, what)
    monkeypatch.setattr(extract, "extract_tar", flaky)
    with pytest.raises(KeyboardInterrupt):
        import_archive(store, archives["oci-tar"])
    assert state(store.root) == before
    assert store.layer_ids() == [] and store.image_ids() == [] and store.tags() == {}


def test_reimport_is_idempotent_and_still_verifies(archives, tmp_path):
    store = Store(str(tmp_path / "s"))
    import_archive(store, archives["docker-new"])
    before = state(store.root)
    import_archive(store, archives["oci-dir"])
    assert {p for p in state(store.root) if not p[0].startswith("repositories")} == \
        {p for p in before if not p[0].startswith("repositories")}
    # the same layers again, but one blob corrupt: refused although the layer is stored
    img = fx.sample_image("gzip", devices=DEVICES)
    files = fx.oci_files([img])
    target = fx.sha(img.blobs[1])[7:]
    files = [(n, d + b"junk" if n.endswith(target) else d) for n, d in files]
    p = fx.write_tar(str(tmp_path / "bad.tar"), files)
    with pytest.raises(ImageError, match="digest mismatch"):
        import_archive(store, p)


def test_ls_history_inspect_rm_prune(archives, tmp_path):
    s = tmp_path / "s"
    r = cli(s, "image", "import", archives["docker-new"])
    assert r.returncode == 0 and r.stderr == "", r.stderr   # no progress when not a TTY
    r = cli(s, "image", "ls")
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert lines[1].split()[:2] == ["localhost/sample", "1.0"]
    r = cli(s, "image", "history", "sample:1.0")
    rows = r.stdout.splitlines()
    assert "fixture layer 2" in rows[1] and "fixture layer 0" in rows[3] and "<missing>" in rows[2]
    r = cli(s, "image", "inspect", "sample:1.0")
    info = json.loads(r.stdout)[0]
    assert info["Config"]["Cmd"] == ["/bin/sh"]
    assert info["Config"]["Labels"] == {"org.example.fixture": "yes"}
    assert info["Config"]["Env"][0].startswith("PATH=")
    assert len(info["RootFS"]["Layers"]) == 3 and info["RepoTags"] == ["localhost/sample:1.0"]
    assert cli(s, "image", "tag", "sample:1.0", "copy:1").returncode == 0
    r = cli(s, "image", "rm", "copy:1")
    assert r.returncode == 0 and "Untagged: copy:1" in r.stdout and "Deleted" not in r.stdout
    r = cli(s, "image", "rm", "sample:1.0")
    assert r.returncode == 0 and "Deleted: sha256:" in r.stdout
    assert Store(str(s)).layer_ids() == [] and Store(str(s)).image_ids() == []
    r = cli(s, "image", "inspect", "sample:1.0")
    assert r.returncode == 1 and r.stderr.strip() == "unionfs: no such image: sample:1.0"
    # prune: an untagged image and leftovers of an interrupted run
    cli(s, "image", "import", archives["docker-new"])
    st = Store(str(s))
    st.set_tags({})
    os.makedirs(st.path("tmp", "import-debris", "layer"))
    r = cli(s, "image", "prune")
    assert r.returncode == 0 and "Deleted: sha256:" in r.stdout
    assert st.image_ids() == [] and st.layer_ids() == [] and os.listdir(st.path("tmp")) == []


def test_ls_history_uppers_as_json_and_csv(archives, tmp_path):
    """The listings in versioned JSON (raw values: full ids, bytes) and CSV, same content."""
    s = tmp_path / "s"
    assert cli(s, "image", "import", archives["docker-new"]).returncode == 0
    img = Store(str(s)).get("sample:1.0")
    doc = json.loads(cli(s, "image", "ls", "--json").stdout)
    assert doc["version"] == 1 and doc["command"] == "image ls"
    assert doc["images"] == [{"repository": "localhost/sample", "tag": "1.0", "id": img.id,
                              "created": img.created, "size": img.size()}]
    rows = cli(s, "image", "ls", "--csv").stdout.splitlines()
    assert rows == ["repository,tag,id,created,size",
                    "localhost/sample,1.0,%s,%s,%d" % (img.id, img.created or "", img.size())]
    hist = json.loads(cli(s, "image", "history", "sample:1.0", "--json").stdout)["history"]
    assert [h["created_by"] for h in hist] == [r[2] for r in history_rows(img)]
    assert sum(h["size"] for h in hist) == sum(img.layer_sizes())
    assert hist[0]["id"] == img.id and all(h["id"] is None for h in hist[1:])
    doc = json.loads(cli(s, "image", "uppers", "--json").stdout)
    assert doc == {"version": 1, "command": "image uppers", "uppers": []}
    r = cli(s, "image", "ls", "--json", "--csv")
    assert r.returncode == 1 and r.stderr.count("\n") == 1


def test_store_default_location(tmp_path, monkeypatch):
    from unionfs.image.store import default_root
    monkeypatch.setenv("UNIONFS_STORE", str(tmp_path / "env"))
    assert default_root() == str(tmp_path / "env")
    monkeypatch.delenv("UNIONFS_STORE")
    expect = "/var/lib/unionfs" if os.geteuid() == 0 else \
        os.path.join(os.path.expanduser("~"), ".local", "share", "unionfs")
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    assert default_root() == expect


# ---- multi-platform images --------------------------------------------------------------------

PLATFORMS = ["linux/amd64", "linux/arm64/v8", "linux/arm/v7"]


def platform_images():
    """One image per platform of PLATFORMS: a layer whose /arch says which, a config that does."""
    out = []
    for p in PLATFORMS:
        t = fx.layer_tar([E("arch", data=p.encode())])
        cfg = fx.make_config([fx.sha(t)])
        cfg["os"], cfg["architecture"] = p.split("/")[:2]
        out.append(fx.Img([t], config=cfg))
    return out


@pytest.mark.parametrize("kind,as_tar", [("oci", False), ("docker", True), ("flat", False)])
def test_platform_of_a_multi_platform_image(tmp_path, kind, as_tar, monkeypatch):
    imgs = platform_images()
    path = fx.write_layout(str(tmp_path / "multi"), fx.platform_files(
        imgs, PLATFORMS, "localhost/multi:1", kind), as_tar)
    layer_of = {p: fx.sha(img.tars[0]) for p, img in zip(PLATFORMS, imgs)}
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    for i, (wanted, got) in enumerate([(None, "linux/amd64"), ("linux/arm64", "linux/arm64/v8"),
                                       ("linux/arm64/v8", "linux/arm64/v8"),
                                       ("linux/arm", "linux/arm/v7")]):
        store = Store(str(tmp_path / ("s%d" % i)))
        [(image_id, names)] = import_archive(store, path, platform=wanted)
        img = store.get("multi:1")
        assert names == ["localhost/multi:1"] and img.layers == [layer_of[got]], wanted
        with open(os.path.join(store.layer_root(img.layers[0]), "arch"), "rb") as f:
            assert f.read() == got.encode()
    monkeypatch.setattr("platform.machine", lambda: "aarch64")     # the host's platform
    store = Store(str(tmp_path / "arm"))
    import_archive(store, path)
    assert store.get("multi:1").layers == [layer_of["linux/arm64/v8"]]
    with pytest.raises(ImageError, match=r": no image for linux/s390x \(available: linux/amd64, "
                       r"linux/arm64, linux/arm/v7\)$"):
        import_archive(store, path, platform="linux/s390x")
    monkeypatch.setattr("platform.machine", lambda: "riscv64")
    with pytest.raises(ImageError, match=r"no image for linux/riscv64 \(.*\); choose one with "
                       "--platform$"):
        import_archive(store, path)


def test_host_platform_from_uname(monkeypatch):
    from unionfs.image.archive import host_platform
    for machine, want in [("x86_64", "linux/amd64"), ("aarch64", "linux/arm64"),
                          ("armv7l", "linux/arm/v7"), ("armv6l", "linux/arm/v6"),
                          ("i686", "linux/386"), ("ppc64le", "linux/ppc64le"),
                          ("s390x", "linux/s390x")]:
        monkeypatch.setattr("platform.machine", lambda m=machine: m)
        assert str(host_platform()) == want


def test_platform_option_on_the_command_line(tmp_path, archives):
    path = fx.write_layout(str(tmp_path / "multi.tar"), fx.platform_files(
        platform_images(), PLATFORMS, "localhost/multi:1"), as_tar=True)
    r = cli(tmp_path / "s", "image", "import", path, "--platform", "linux/arm/v7", "-q")
    assert r.returncode == 0, r.stderr
    r = cli(tmp_path / "s", "image", "inspect", "multi:1")
    assert json.loads(r.stdout)[0]["Architecture"] == "arm"
    r = cli(tmp_path / "s", "image", "import", path, "--platform", "windows/amd64")
    idx = fx.sha(fx.platform_files(platform_images(), PLATFORMS, "x")[2][1])
    assert r.returncode == 1 and r.stderr == (
        "unionfs: index %s: no image for windows/amd64 (available: linux/amd64, linux/arm64, "
        "linux/arm/v7)\n" % idx[7:19])
    r = cli(tmp_path / "s", "image", "import", path, "--platform", "amd64")
    assert r.returncode == 1 and r.stderr == (
        "unionfs: --platform amd64: expected OS/ARCH[/VARIANT] (e.g. linux/amd64)\n")
    # a single-platform archive imports as before, whatever the host
    r = cli(tmp_path / "s", "image", "import", archives["oci-dir"], "-q")
    assert r.returncode == 0, r.stderr
