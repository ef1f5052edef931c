"""Inspection of layers whose paths are thousands of levels deep (far past PATH_MAX): the walk,
waste, find, history, reading a file and its xattrs, and the store removing such a layer."""
import json
import os
import subprocess
import sys

import pytest

from unionfs.image.importer import import_archive
from unionfs.image.store import Store, rmtree
from unionfs.inspect import analysis, stack as stackmod
from unionfs.inspect.waste import waste
from tests.mountutil import ENV, load_script

fx = load_script("build_image_fixtures")
E = fx.E
LEVELS = 3000
DEEP = "/".join(["d"] * LEVELS)          # 6000 bytes: past PATH_MAX (4096)


@pytest.fixture
def tmp_path(tmp_path):
    """tmp_path, emptied afterwards by a remover that can (pytest's cannot: it recurses)."""
    yield tmp_path
    for name in os.listdir(str(tmp_path)):
        rmtree(str(tmp_path / name))


def deep_layer(root, files):
    """A layer directory with files {name: (bytes, mode)} in DEEP, made through dir fds."""
    os.makedirs(root)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(LEVELS):
            try:
                os.mkdir("d", dir_fd=fd)
            except FileExistsError:
                pass
            nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nfd
        for name, (data, mode) in files.items():
            if data == "wh":
                name, data = ".wh." + name, b""
            f = os.open(name, os.O_WRONLY | os.O_CREAT, mode, dir_fd=fd)
            os.write(f, data)
            os.utime(f, ns=(10**18, 10**18))
            os.close(f)
    finally:
        os.close(fd)
    return root


def test_deep_layers_waste_find_history_read(tmp_path):
    low = deep_layer(str(tmp_path / "l1"), {"f": (b"1" * 100, 0o644), "g": (b"g" * 10, 0o644),
                                            "o": (b"o" * 40, 0o644)})
    up = deep_layer(str(tmp_path / "l2"), {"f": (b"1" * 100, 0o755), "g": ("wh", 0),
                                           "o": (b"O" * 40, 0o644), "h": (b"hi\n", 0o644)})
    st = stackmod.from_dirs([low, up])
    assert st.infos[0].entries == LEVELS + 3 and st.infos[1].whiteouts == 1
    r = waste(st)
    assert r["by_cause"] == {"overwritten": 40, "metadata-only": 100, "duplicate": 0,
                             "deleted": 10}
    assert {c["path"] for c in r["copies"]} == {"/%s/%s" % (DEEP, n) for n in "fgo"}
    found = analysis.find(st, "?", all_layers=True)
    assert [(m["path"].rpartition("/")[2], m["layer"], m["status"]) for m in found
            if m["type"] == "file"] == [("f", 1, "metadata-only"), ("f", 2, "visible"),
                                        ("g", 1, "deleted"), ("h", 2, "visible"),
                                        ("o", 1, "overwritten"), ("o", 2, "visible")]
    h = analysis.history(st, "/%s/f" % DEEP)
    assert [(e["layer"], e["event"]) for e in h["events"]] == [(1, "added"), (2, "metadata-only")]
    idx, e = analysis.version(st, "/%s/o" % DEEP, layer=1)
    assert idx.read_bytes(e.path) == b"o" * 40
    assert idx.xattrs(e.path) == {}
    assert len(idx.real(e.path)) < 4096


def test_deep_image_through_the_cli_and_removed_from_the_store(tmp_path):
    store = Store(str(tmp_path / "s"))
    l1 = fx.layer_tar([E(DEEP + "/f", data=b"1" * 100), E(DEEP + "/g", data=b"g" * 10)])
    l2 = fx.layer_tar([E(DEEP + "/f", data=b"2" * 100), E(DEEP + "/g", "whiteout")])
    import_archive(store, fx.docker_archive(str(tmp_path / "a.tar"),
                                            [fx.Img([l1, l2], tags=["deep:1"])], "new"))

    def cli(*args):
        r = subprocess.run([sys.executable, "-m", "unionfs"] + list(args) +
                           ["--store", store.root], env=ENV, capture_output=True, text=True,
                           timeout=100)
        assert r.returncode == 0 and r.stderr == "", r.stderr[-2000:]
        return r.stdout
    w = json.loads(cli("waste", "--json", "deep:1"))
    assert (w["wasted_bytes"], w["by_cause"]["overwritten"], w["by_cause"]["deleted"]) == \
        (110, 100, 10)
    f = json.loads(cli("find", "--json", "--all-layers", "deep:1", "f"))
    assert [(m["path"], m["layer"], m["status"]) for m in f["matches"]] == [
        ("/%s/f" % DEEP, 1, "overwritten"), ("/%s/f" % DEEP, 2, "visible")]
    assert cli("cat", "deep:1", "/%s/f" % DEEP) == "2" * 100
    cli("image", "rm", "deep:1")
    assert store.layer_ids() == [] and os.listdir(store.path("tmp")) == []


def test_rmtree_removes_deep_and_read_only_trees(tmp_path):
    root = deep_layer(str(tmp_path / "t"), {"f": (b"x", 0o444)})
    os.makedirs(str(tmp_path / "t" / "ro" / "sub"))
    os.symlink("/", str(tmp_path / "t" / "link"))
    os.chmod(str(tmp_path / "t" / "ro"), 0o555)
    rmtree(root)
    assert not os.path.lexists(root)
    assert os.path.isdir("/etc")


def test_whiteout_and_opaque_over_a_deep_tree(tmp_path):
    low = deep_layer(str(tmp_path / "l1"), {"f": (b"1" * 100, 0o644)})
    os.makedirs(str(tmp_path / "l2"))
    open(str(tmp_path / "l2" / ".wh.d"), "wb").close()
    r = waste(stackmod.from_dirs([low, str(tmp_path / "l2")]))
    assert r["by_cause"]["deleted"] == 100
    os.makedirs(str(tmp_path / "l3" / "d"))
    open(str(tmp_path / "l3" / "d" / ".wh..wh..opq"), "wb").close()
    st = stackmod.from_dirs([low, str(tmp_path / "l3")])
    assert waste(st)["by_cause"]["deleted"] == 100
    h = analysis.history(st, "/%s/f" % DEEP)
    assert [(e["layer"], e["event"], e["via"]) for e in h["events"]] == [
        (1, "added", None), (2, "opaque", "/d")]
