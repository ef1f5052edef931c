"""history, find, versions, the tree with badges, the diffs and the waste of the inspect fixture
image (every expected answer worked out by hand from scripts/build_image_fixtures.inspect_layers),
plus a kernel-format upper and a hostile layer."""
import os

import pytest

from unionfs.image.importer import import_archive
from unionfs.image.store import Store
from unionfs.inspect import analysis, stack as stackmod
from unionfs.inspect.layerindex import InspectError, LayerIndex
from unionfs.inspect.waste import waste
from tests.mountutil import load_script
from tests.unit.helpers import mkdir, needs_root, whiteout, write, xset

fx = load_script("build_image_fixtures")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    base = tmp_path_factory.mktemp("inspect")
    s = Store(str(base / "store"))
    import_archive(s, fx.docker_archive(str(base / "a.tar"), fx.inspect_images(), "new"))
    return s


@pytest.fixture(scope="module")
def st(store):
    return stackmod.from_image(store, "inspect:1")


def events(h):
    return [(e["layer"], e["event"], e["size"]) for e in h["events"]]


def test_layers_carry_created_by(st):
    ls = analysis.layers(st)
    assert [l["number"] for l in ls] == [1, 2, 3]
    assert [l["created_by"] for l in ls] == fx.INSPECT_CREATED_BY
    assert [l["whiteouts"] for l in ls] == [0, 1, 1]
    assert all(l["diff_id"].startswith("sha256:") for l in ls)


def test_history_added_changed_whited_out(st):
    h = analysis.history(st, "/app/big")
    assert events(h) == [(1, "added", 1000), (2, "changed", 1200), (3, "whiteout", 0)]
    assert h["visible"] is False and h["origin_layer"] is None
    assert h["events"][1]["created_by"] == "RUN build && chmod +x /app/blob"
    assert h["events"][1]["detail"] == "content changed (1000 -> 1200 bytes)"


def test_history_metadata_only_change_copied_the_file(st):
    h = analysis.history(st, "app/blob")
    assert events(h) == [(1, "added", 5000), (2, "metadata-only", 5000)]
    assert h["events"][1]["detail"] == ("metadata only: mode 0644 -> 0755 "
                                        "(the whole file, 5000 bytes, shipped again)")
    assert h["visible"] and h["origin_layer"] == 2


def test_history_parent_made_opaque_and_duplicate(st):
    h = analysis.history(st, "/cache/x")
    assert events(h) == [(1, "added", 200), (3, "opaque", 0)]
    assert h["events"][1]["via"] == "/cache"
    assert events(analysis.history(st, "/cache")) == [(1, "added", 0), (3, "opaque", 0)]
    assert events(analysis.history(st, "/etc/motd")) == [(1, "added", 80), (2, "duplicate", 80)]
    assert analysis.history(st, "/nowhere") == {"path": "/nowhere", "visible": False,
                                                "origin_layer": None, "events": []}
    with pytest.raises(InspectError):
        analysis.history(st, "/etc/../../x")


def test_find_visible_and_all_layers(st):
    assert [(m["path"], m["layer"]) for m in analysis.find(st, "big")] == []
    assert analysis.find(st, "big", all_layers=True) == [
        {"path": "/app/big", "layer": 1, "type": "file", "size": 1000, "status": "overwritten",
         "hidden_by": 2},
        {"path": "/app/big", "layer": 2, "type": "file", "size": 1200, "status": "deleted",
         "hidden_by": 3}]
    assert [(m["path"], m["layer"]) for m in analysis.find(st, "/cache/*")] == [("/cache/z", 3)]
    assert [(m["path"], m["status"]) for m in analysis.find(st, "/cache/*", True)] == [
        ("/cache/x", "deleted"), ("/cache/y", "deleted"), ("/cache/z", "visible")]


def test_any_version_can_be_read(st):
    idx, e = analysis.version(st, "/app/big", layer=2)
    assert idx.read_bytes(e.path) == b"b" * 1200          # deleted by layer 3, still readable
    idx, e = analysis.version(st, "/etc/config")
    assert idx.read_bytes(e.path) == b"a\nB\nc\n"
    with pytest.raises(InspectError, match="copies in layers 1, 2"):
        analysis.version(st, "/app/big", layer=3)
    with pytest.raises(InspectError, match="no layer 4"):
        analysis.version(st, "/app/big", layer=4)
    with pytest.raises(InspectError, match="not in"):
        analysis.version(st, "/app/big")
    with pytest.raises(InspectError, match="symlink to /etc/passwd"):
        analysis.version(st, "/evil")
    with pytest.raises(InspectError, match="not in"):
        analysis.version(st, "/evildir/passwd")
    assert [v["layer"] for v in analysis.versions(st, "/app/big")] == [1, 2]


def test_tree_badges(st):
    t = {(r["path"], r["badge"]): r for r in analysis.tree(st, layer=3)}
    assert t[("/cache/z", "added")]["layer"] == 3
    assert t[("/cache/x", "deleted")]["cause"] == "opaque"
    assert t[("/app/big", "deleted")]["cause"] == "whiteout"
    assert t[("/etc/config", "changed")]["layer"] == 3
    assert t[("/cache", "unchanged")]["opaque"] is True
    assert t[("/keep", "unchanged")]["layer"] == 1
    t2 = {(r["path"], r["badge"]) for r in analysis.tree(st, layer=2)}
    assert ("/app/blob", "metadata-only") in t2 and ("/data/tmp", "deleted") in t2


def test_fixture_image_waste_by_hand(st):
    # layer 1: big 1000, blob 5000, tmp 300, config 6, motd 80, cache/x 200, cache/y 100,
    #          keep 700, lib/a 400 (lib/b is a hard link: once), bin/tool 64
    # layer 2: big 1200, blob 5000, lib/a 10, motd 80;  layer 3: config 6, cache/z 50, tool 64
    assert [i.size for i in st.infos] == [7850, 6290, 120]
    r = waste(st)
    assert r["total_bytes"] == 14260 and r["user_bytes"] == 6410
    assert r["by_cause"] == {"overwritten": 1000 + 6 + 64, "metadata-only": 5000,
                             "duplicate": 80, "deleted": 1200 + 300 + 200 + 100}
    assert r["wasted_bytes"] == 7950 and r["visible_bytes"] == 6310
    assert r["efficiency"] == pytest.approx(6310 / 14260)
    assert r["user_wasted_percent"] == pytest.approx(7950 / 6410)
    assert [(p["path"], p["wasted_bytes"]) for p in r["paths"][:2]] == [
        ("/app/blob", 5000), ("/app/big", 2200)]
    assert st.infos[1].created_by == "RUN build && chmod +x /app/blob"   # empty_layer skipped


def changes(recs):
    return [(c["change"][0].upper(), c["path"]) for c in recs]


def test_layer_changes(st):
    assert changes(analysis.layer_changes(st, 2)) == [
        ("C", "/app/big"), ("C", "/app/blob"), ("D", "/data/tmp"), ("C", "/lib/a")]
    recs = analysis.layer_changes(st, 3)
    assert changes(recs) == [("D", "/app/big"), ("C", "/bin/tool"), ("D", "/cache/x"),
                             ("D", "/cache/y"), ("A", "/cache/z"), ("C", "/etc/config")]
    by = {c["path"]: c for c in recs}
    assert analysis.unified_diff(by["/etc/config"]) == (
        "--- a/etc/config\n+++ b/etc/config\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n")
    assert analysis.unified_diff(by["/bin/tool"]) == (
        "Binary files a/bin/tool and b/bin/tool differ\n")
    # added and deleted files against /dev/null, as diff -N shows them
    assert analysis.unified_diff(by["/cache/z"]) == (
        "--- /dev/null\n+++ b/cache/z\n@@ -0,0 +1 @@\n+" + "z" * 50
        + "\n\\ No newline at end of file\n")
    assert analysis.unified_diff(by["/cache/y"]).startswith(
        "--- a/cache/y\n+++ /dev/null\n@@ -1 +0,0 @@\n-yyy")
    assert "_sides" not in analysis.public(recs)[0]
    by1 = {c["path"]: c for c in analysis.layer_changes(st, 1)}
    assert analysis.unified_diff(by1["/bin/tool"]) == (
        "Binary files /dev/null and b/bin/tool differ\n")
    assert analysis.unified_diff(by1["/app"]) == ""                  # a directory


def test_image_changes(store, st):
    base = stackmod.from_image(store, "inspect:base")
    recs = analysis.image_changes(base, st)
    assert changes(recs) == [
        ("D", "/app/big"), ("C", "/app/blob"), ("C", "/bin/tool"), ("D", "/cache/x"),
        ("D", "/cache/y"), ("A", "/cache/z"), ("D", "/data/tmp"), ("C", "/etc/config"),
        ("C", "/lib/a")]
    by = {c["path"]: c for c in recs}
    assert by["/app/blob"]["detail"] == "metadata only: mode 0644 -> 0755"
    assert analysis.unified_diff(by["/lib/a"]).endswith(
        "+0123456789\n\\ No newline at end of file\n")
    assert analysis.image_changes(st, st) == []


def test_hostile_layer_is_never_left(tmp_path):
    """Symlinks in a layer are recorded, never followed: not to list, not to read."""
    outside = mkdir(tmp_path / "outside")
    write(os.path.join(outside, "secret"), b"secret")
    root = mkdir(tmp_path / "layer")
    os.symlink(outside, os.path.join(root, "d"))
    os.symlink(os.path.join(outside, "secret"), os.path.join(root, "f"))
    idx = LayerIndex.read(root)
    assert set(idx.entries) == {"d", "f"} and idx.entries["d"].kind == "symlink"
    for rel in ("f", "d/secret"):
        with pytest.raises(InspectError):
            idx.read_bytes(rel)


@needs_root
def test_kernel_format_upper_on_top(tmp_path):
    """An upper in the kernel's format (char 0/0, trusted.overlay.opaque) as the top layer."""
    low = mkdir(tmp_path / "low")
    write(os.path.join(low, "d/a"), b"a" * 10)
    write(os.path.join(low, "gone"), b"g" * 7)
    up = mkdir(tmp_path / "up")
    whiteout(os.path.join(up, "gone"))
    mkdir(os.path.join(up, "d"))
    xset(os.path.join(up, "d"), "trusted.overlay.opaque", b"y")
    write(os.path.join(up, "d/b"), b"b")
    st = stackmod.from_dirs([low], upper=up)
    assert st.infos[1].upper and st.infos[1].whiteouts == 1
    assert events(analysis.history(st, "/gone")) == [(1, "added", 7), (2, "whiteout", 0)]
    assert events(analysis.history(st, "/d/a")) == [(1, "added", 10), (2, "opaque", 0)]
    assert changes(analysis.layer_changes(st, 2)) == [("D", "/d/a"), ("A", "/d/b"),
                                                      ("D", "/gone")]


def renamed_stack(tmp_path):
    """Two lowers and a kernel-format upper that renamed directories, as the union writes it:
    /d -> /newd (relative redirect 'd', a whiteout at /d, newd/a copied up), inside it
    newd/sub -> newd/s2 (relative 'sub', resolved in the renamed parent's lower: d/sub), and
    /p/q -> /x/q2 (absolute redirect '/p/q')."""
    l1, l2, up = (mkdir(tmp_path / n) for n in ("l1", "l2", "up"))
    write(os.path.join(l1, "d/a"), b"a\n")
    write(os.path.join(l1, "d/sub/s"), b"s\n")
    write(os.path.join(l1, "p/q/f"), b"q\n")
    write(os.path.join(l2, "d/b"), b"bb\n")
    whiteout(os.path.join(up, "d"))
    write(os.path.join(up, "newd/a"), b"a+\n")
    xset(os.path.join(up, "newd"), "trusted.overlay.redirect", b"d")
    mkdir(os.path.join(up, "newd/s2"))
    xset(os.path.join(up, "newd/s2"), "trusted.overlay.redirect", b"sub")
    whiteout(os.path.join(up, "newd/sub"))
    whiteout(os.path.join(up, "p/q"))
    mkdir(os.path.join(up, "x/q2"))
    xset(os.path.join(up, "x/q2"), "user.overlay.redirect", b"/p/q")   # either namespace
    return stackmod.from_dirs([l1, l2], upper=up), up, [l2, l1]


@needs_root
def test_renamed_directories_in_an_upper(tmp_path):
    st, up, lowers = renamed_stack(tmp_path)
    rows = {r["path"]: (r["badge"], r["layer"], r["cause"]) for r in analysis.tree(st)}
    assert {p: v for p, v in rows.items() if p.startswith(("/d", "/newd", "/p/", "/x/"))} == {
        "/d": ("deleted", 2, "renamed"), "/d/a": ("deleted", 1, "renamed"),
        "/d/b": ("deleted", 2, "renamed"), "/d/sub": ("deleted", 1, "renamed"),
        "/d/sub/s": ("deleted", 1, "renamed"),
        "/newd": ("added", 3, None), "/newd/a": ("added", 3, None),
        "/newd/b": ("added", 2, None), "/newd/s2": ("added", 3, None),
        "/newd/s2/s": ("added", 1, None),
        "/p/q": ("deleted", 1, "renamed"), "/p/q/f": ("deleted", 1, "renamed"),
        "/x/q2": ("added", 3, None), "/x/q2/f": ("added", 1, None)}
    h = analysis.history(st, "/newd/b")
    assert h["visible"] and h["origin_layer"] == 2
    assert [(e["layer"], e["event"], e["detail"]) for e in h["events"]] == [
        (3, "added", "renamed from /d/b")]
    assert [(e["layer"], e["event"], e["detail"]) for e in analysis.history(st, "/d")["events"]] \
        == [(1, "added", ""), (3, "renamed", "renamed to /newd")]
    assert [e["detail"] for e in analysis.history(st, "/d/sub/s")["events"]] == [
        "", "removed: parent /d renamed to /newd"]
    recs = analysis.layer_changes(st, 3)
    assert changes(recs) == [
        ("D", "/d"), ("D", "/d/a"), ("D", "/d/b"), ("D", "/d/sub"), ("D", "/d/sub/s"),
        ("A", "/newd"), ("A", "/newd/a"), ("A", "/newd/b"), ("A", "/newd/s2"),
        ("A", "/newd/s2/s"), ("D", "/p/q"), ("D", "/p/q/f"), ("A", "/x"), ("A", "/x/q2"),
        ("A", "/x/q2/f")]
    by = {c["path"]: c for c in recs}
    assert analysis.unified_diff(by["/newd/b"]) == "--- /dev/null\n+++ b/newd/b\n@@ -0,0 +1 @@\n+bb\n"
    # what the lower layers ship is still visible (at the new path): not wasted; the copy of
    # d/a the upper replaced is
    assert [(c["path"], c["cause"]) for c in waste(st)["copies"]] == [("/d/a", "deleted")]
    assert [(v["path"], v["layer"], v["status"]) for v in analysis.find(st, "s", True)] == [
        ("/d/sub/s", 1, "deleted"), ("/newd/s2/s", 1, "visible")]
    assert analysis.version(st, "/x/q2/f")[0].read_bytes("p/q/f") == b"q\n"
    # unionfs diff of the upper (image/changes.py) agrees on the renamed paths
    from unionfs.image.changes import Changes
    assert Changes(up, lowers).diff_lines() == [
        "D /d", "A /newd", "A /newd/a", "A /newd/b", "A /newd/s2", "A /newd/s2/s",
        "C /p", "D /p/q", "A /x", "A /x/q2", "A /x/q2/f"]
