import errno
import os
import stat

import pytest

from unionfs.core.layers import Layer, LowerLayer
from unionfs.core.namei import check_name, lower_positive, resolve_child, resolve_root
from tests.unit.helpers import mkdir, needs_root, read, whiteout, write, xset


def stack(tmp_path, n_lowers=2, upper=True):
    """[upper?, lower0, lower1, ...] directories and Layer objects (top first)."""
    dirs = []
    objs = []
    if upper:
        dirs.append(mkdir(tmp_path / "U"))
        objs.append(Layer(dirs[-1], 0))
    for i in range(n_lowers):
        dirs.append(mkdir(tmp_path / ("L%d" % i)))
        objs.append(LowerLayer(dirs[-1], len(objs)))
    return dirs, objs


def resolve(layers, path):
    node = resolve_root(layers)
    for name in [p for p in path.split("/") if p]:
        if node is None:
            return None
        node = resolve_child(layers, node, name)
    return node


def serving(node):
    layer, rel, _hit = node.top
    return read(layer.real(rel))


def test_root_merges_every_layer(tmp_path):
    dirs, layers = stack(tmp_path)
    root = resolve_root(layers)
    assert root.is_dir
    assert [c[0].index for c in root.comps] == [0, 1, 2]
    assert root.in_upper and root.has_lower


def test_top_layer_wins(tmp_path):
    dirs, layers = stack(tmp_path)
    write(dirs[2] + "/f", b"bottom")
    write(dirs[1] + "/f", b"middle")
    assert serving(resolve(layers, "/f")) == b"middle"
    write(dirs[0] + "/f", b"upper")
    n = resolve(layers, "/f")
    assert serving(n) == b"upper"
    assert n.in_upper and len(n.comps) == 1   # a non-directory is served alone
    assert not n.has_lower


def test_missing_name(tmp_path):
    dirs, layers = stack(tmp_path)
    assert resolve(layers, "/nothing") is None


@needs_root
def test_whiteout_hides_lower(tmp_path):
    dirs, layers = stack(tmp_path)
    write(dirs[2] + "/f", b"bottom")
    whiteout(dirs[1] + "/f")
    assert resolve(layers, "/f") is None
    mkdir(dirs[2] + "/d/x")
    whiteout(dirs[0] + "/d")
    assert resolve(layers, "/d") is None


def test_oci_whiteout_hides_lower(tmp_path):
    dirs, layers = stack(tmp_path)
    write(dirs[2] + "/f", b"bottom")
    write(dirs[1] + "/.wh.f")
    assert resolve(layers, "/f") is None
    assert resolve(layers, "/.wh.f") is None


def test_directories_merge_top_down(tmp_path):
    dirs, layers = stack(tmp_path)
    write(dirs[0] + "/d/a", b"U")
    write(dirs[1] + "/d/b", b"L0")
    write(dirs[2] + "/d/c", b"L1")
    n = resolve(layers, "/d")
    assert n.is_dir and [c[0].index for c in n.comps] == [0, 1, 2]
    assert n.rel_in(1) == "d" and n.rel_in(2) == "d"
    assert n.first_lower()[0].index == 1
    for name, data in (("a", b"U"), ("b", b"L0"), ("c", b"L1")):
        assert serving(resolve(layers, "/d/" + name)) == data


@needs_root
def test_opaque_stops_merge(tmp_path):
    dirs, layers = stack(tmp_path)
    write(dirs[1] + "/d/a")
    write(dirs[2] + "/d/b")
    xset(dirs[1] + "/d", "trusted.overlay.opaque", b"y")
    n = resolve(layers, "/d")
    assert [c[0].index for c in n.comps] == [1]
    assert resolve(layers, "/d/b") is None
    assert resolve(layers, "/d/a") is not None


def test_oci_opaque_stops_merge(tmp_path):
    dirs, layers = stack(tmp_path)
    write(dirs[1] + "/d/a")
    write(dirs[1] + "/d/.wh..wh..opq")
    write(dirs[2] + "/d/b")
    assert [c[0].index for c in resolve(layers, "/d").comps] == [1]
    assert resolve(layers, "/d/b") is None


def test_non_dir_over_dir_stops(tmp_path):
    dirs, layers = stack(tmp_path)
    write(dirs[1] + "/x", b"file")
    write(dirs[2] + "/x/inner")
    n = resolve(layers, "/x")
    assert not n.is_dir and len(n.comps) == 1 and n.top[0].index == 1


def test_dir_over_non_dir_stops(tmp_path):
    dirs, layers = stack(tmp_path)
    write(dirs[0] + "/x/a")
    write(dirs[1] + "/x", b"file")
    write(dirs[2] + "/x/b")           # below the non-directory: never merged
    n = resolve(layers, "/x")
    assert n.is_dir and [c[0].index for c in n.comps] == [0]
    assert resolve(layers, "/x/b") is None


def test_symlink_over_dir_is_served_alone(tmp_path):
    dirs, layers = stack(tmp_path)
    os.symlink("/etc", dirs[1] + "/etc")
    write(dirs[2] + "/etc/x")
    n = resolve(layers, "/etc")
    assert not n.is_dir and stat.S_ISLNK(n.top[2].st.st_mode)


@needs_root
def test_relative_redirect(tmp_path):
    dirs, layers = stack(tmp_path, n_lowers=1)
    write(dirs[1] + "/orig/f", b"lower")
    write(dirs[1] + "/new/g", b"unrelated")     # what is at the new name below is not merged
    d = mkdir(dirs[0] + "/new")
    xset(d, "trusted.overlay.redirect", b"orig")
    n = resolve(layers, "/new")
    assert [(c[0].index, c[1]) for c in n.comps] == [(0, "new"), (1, "orig")]
    assert serving(resolve(layers, "/new/f")) == b"lower"
    assert resolve(layers, "/new/g") is None


@needs_root
def test_relative_redirect_in_subdir(tmp_path):
    dirs, layers = stack(tmp_path, n_lowers=1)
    write(dirs[1] + "/p/orig/f", b"lower")
    d = mkdir(dirs[0] + "/p/new")
    xset(d, "trusted.overlay.redirect", b"orig")
    assert [(c[0].index, c[1]) for c in resolve(layers, "/p/new").comps] == [(0, "p/new"), (1, "p/orig")]
    assert serving(resolve(layers, "/p/new/f")) == b"lower"


@needs_root
def test_absolute_redirect(tmp_path):
    dirs, layers = stack(tmp_path, n_lowers=2)
    write(dirs[1] + "/a/b/f", b"L0")
    write(dirs[2] + "/a/b/g", b"L1")
    d = mkdir(dirs[0] + "/x/y")
    xset(d, "trusted.overlay.redirect", b"/a/b")
    n = resolve(layers, "/x/y")
    assert [(c[0].index, c[1]) for c in n.comps] == [(0, "x/y"), (1, "a/b"), (2, "a/b")]
    assert serving(resolve(layers, "/x/y/f")) == b"L0"
    assert serving(resolve(layers, "/x/y/g")) == b"L1"


@needs_root
def test_absolute_redirect_stops_at_intermediate_whiteout(tmp_path):
    dirs, layers = stack(tmp_path, n_lowers=2)
    whiteout(dirs[1] + "/a")
    write(dirs[2] + "/a/b/g", b"L1")
    d = mkdir(dirs[0] + "/x")
    xset(d, "trusted.overlay.redirect", b"/a/b")
    n = resolve(layers, "/x")
    assert [c[0].index for c in n.comps] == [0]


@needs_root
def test_absolute_redirect_stops_below_intermediate_opaque(tmp_path):
    dirs, layers = stack(tmp_path, n_lowers=2)
    write(dirs[1] + "/a/b/f", b"L0")
    xset(dirs[1] + "/a", "trusted.overlay.opaque", b"y")
    write(dirs[2] + "/a/b/g", b"L1")
    d = mkdir(dirs[0] + "/x")
    xset(d, "trusted.overlay.redirect", b"/a/b")
    n = resolve(layers, "/x")
    assert [c[0].index for c in n.comps] == [0, 1]
    assert resolve(layers, "/x/g") is None


@needs_root
def test_relative_redirect_in_a_lower_reached_through_an_absolute_redirect(tmp_path):
    """As in the kernel's ovl_check_redirect: a relative redirect found while following an
    absolute path replaces the last component of that path for the layers below."""
    dirs, layers = stack(tmp_path, n_lowers=2)
    write(dirs[2] + "/a/c/deep", b"L1")          # the original directory, in the bottom layer
    write(dirs[1] + "/a/b/mid", b"L0")           # L0 renamed /a/c to /a/b
    xset(dirs[1] + "/a/b", "trusted.overlay.redirect", b"c")
    d = mkdir(dirs[0] + "/x")                    # the upper moved /a/b to /x
    xset(d, "trusted.overlay.redirect", b"/a/b")
    n = resolve(layers, "/x")
    assert [(c[0].index, c[1]) for c in n.comps] == [(0, "x"), (1, "a/b"), (2, "a/c")]
    assert serving(resolve(layers, "/x/deep")) == b"L1"


@needs_root
def test_redirect_with_a_slash_but_not_absolute_is_ignored(tmp_path):
    dirs, layers = stack(tmp_path, n_lowers=1)
    write(dirs[1] + "/a/b/f")
    write(dirs[1] + "/new/own")
    d = mkdir(dirs[0] + "/new")
    xset(d, "trusted.overlay.redirect", b"a/b")
    n = resolve(layers, "/new")
    assert [(c[0].index, c[1]) for c in n.comps] == [(0, "new"), (1, "new")]


def test_name_max():
    check_name("a" * 255)
    check_name("é" * 127)                  # 254 bytes
    with pytest.raises(OSError) as e:
        check_name("a" * 256)
    assert e.value.errno == errno.ENAMETOOLONG
    with pytest.raises(OSError) as e:
        check_name("é" * 128)              # 128 characters, 256 bytes
    assert e.value.errno == errno.ENAMETOOLONG


@needs_root
def test_lower_positive(tmp_path):
    dirs, layers = stack(tmp_path, n_lowers=2)
    write(dirs[2] + "/d/deep")
    write(dirs[2] + "/d/hidden")
    whiteout(dirs[1] + "/d/hidden")
    write(dirs[1] + "/d/mid")
    write(dirs[0] + "/d/up")
    whiteout(dirs[0] + "/d/deep")            # the upper's own whiteout does not count
    d = resolve(layers, "/d")
    assert lower_positive(layers, d, "deep") is True
    assert lower_positive(layers, d, "mid") is True
    assert lower_positive(layers, d, "hidden") is False   # a lower whiteout decides
    assert lower_positive(layers, d, "up") is False       # only in the upper
    assert lower_positive(layers, d, "none") is False


@needs_root
def test_lower_positive_respects_opaque(tmp_path):
    dirs, layers = stack(tmp_path, n_lowers=1)
    write(dirs[1] + "/d/f")
    d = mkdir(dirs[0] + "/d")
    xset(d, "trusted.overlay.opaque", b"y")
    assert lower_positive(layers, resolve(layers, "/d"), "f") is False


def _describe(layers, node, path, out):
    """{path: (serving layer, rel, [component layers])} for the whole merged tree below node."""
    out[path] = (node.top[0].index, node.top[1], [c[0].index for c in node.comps])
    if node.is_dir:
        from unionfs.core.readdir import merged_entries
        for name, _code in merged_entries(node):
            child = resolve_child(layers, node, name)
            if child is not None:
                _describe(layers, child, path.rstrip("/") + "/" + name, out)
    return out


@needs_root
@pytest.mark.parametrize("seed", range(6))
def test_name_index_of_deep_stacks_resolves_like_the_full_walk(tmp_path, seed, monkeypatch):
    """Directories merged from INDEX_MIN lower layers or more are looked up through an index
    of the names each layer lists; every path must resolve exactly as the plain top-down walk
    does: whiteouts, opaque directories, files over directories, relative and absolute
    redirects, names in only some layers."""
    import random
    import unionfs.core.namei as namei
    rnd = random.Random(seed)
    dirs, layers = stack(tmp_path, n_lowers=7)
    names = ["a", "b", "c", "d", "e"]
    for li, d in enumerate(dirs):
        for top in names:
            r = rnd.random()
            p = os.path.join(d, top)
            if r < 0.35:
                for sub in names[:3]:
                    if rnd.random() < 0.5:
                        write(os.path.join(p, sub), b"%d/%s/%s" % (li, top.encode(), sub.encode()))
                mkdir(p)
                if rnd.random() < 0.15:
                    xset(p, "trusted.overlay.opaque", b"y")
                elif rnd.random() < 0.15:
                    xset(p, "trusted.overlay.redirect", rnd.choice([b"b", b"/c", b"/a"]))
            elif r < 0.5:
                write(p, b"file %d" % li)
            elif r < 0.6:
                whiteout(p)
    indexed = _describe(layers, resolve_root(layers), "/", {})
    monkeypatch.setattr(namei, "INDEX_MIN", 10 ** 9)
    plain = _describe(layers, resolve_root(layers), "/", {})
    assert indexed == plain
    assert resolve_root(layers).lower_names() is None     # the switch really switched
    monkeypatch.undo()
    root = resolve_root(layers)
    assert root.lower_names() is not None
    for name in names:
        # the first lower layer that has anything at the name decides
        first = next((h for h in (layers[j].find("", name) for j in range(1, 8))
                      if h is not None), None)
        assert lower_positive(layers, root, name) == (first is not None
                                                      and first is not namei.WHITEOUT)
