"""fuse/nodes.py: the node table (`Nodes`: ids, paths, forget, remove, rename, exchange,
hidden names, the read/write name locks)."""
import re
import threading

from unionfs.fuse.nodes import ROOT, Nodes


# ---- Nodes ----------------------------------------------------------------------------------

def _tree(nodes, *paths):
    """Look up every component of each path once per path; {path: id}."""
    ids = {}
    for p in paths:
        nid = ROOT
        parts = p.strip("/").split("/")
        for i, part in enumerate(parts):
            nid = nodes.looked_up(nid, part)
            ids["/" + "/".join(parts[:i + 1])] = nid
    return ids


def test_root():
    nodes = Nodes()
    assert nodes.path(ROOT) == "/"
    assert nodes.by_path("/") == ROOT
    assert nodes.by_path("") == ROOT
    assert nodes.child_path(ROOT, "a") == "/a"


def test_looked_up_same_name_same_id():
    nodes = Nodes()
    a = nodes.looked_up(ROOT, "a")
    b = nodes.looked_up(ROOT, "b")
    assert a != b and ROOT not in (a, b)
    assert nodes.looked_up(ROOT, "a") == a
    assert nodes.by_id[a].nlookup == 2
    assert nodes.by_id[b].nlookup == 1
    sub = nodes.looked_up(a, "sub")
    assert nodes.path(a) == "/a"
    assert nodes.path(sub) == "/a/sub"
    assert nodes.child_path(sub, "x") == "/a/sub/x"
    assert nodes.child(a, "sub").id == sub
    assert nodes.child(b, "sub") is None
    assert nodes.by_path("/a/sub") == sub
    assert nodes.by_path("/a/sub/") == sub
    assert nodes.by_path("/a/none") is None
    assert nodes.by_path("/b/sub") is None


def test_path_of_unknown_ids():
    nodes = Nodes()
    assert nodes.path(12345) is None
    assert nodes.child_path(12345, "x") is None
    assert nodes.read_lock(12345) == (None, None)


def test_forget_drops_only_at_zero():
    nodes = Nodes()
    a = nodes.looked_up(ROOT, "a")
    nodes.looked_up(ROOT, "a")
    nodes.looked_up(ROOT, "a")
    nodes.forget(a, 2)
    assert nodes.path(a) == "/a"
    assert nodes.by_path("/a") == a
    nodes.forget(a, 1)
    assert a not in nodes.by_id
    assert nodes.path(a) is None
    assert nodes.by_path("/a") is None
    assert nodes.child(ROOT, "a") is None
    b = nodes.looked_up(ROOT, "b")
    assert b == a  # a forgotten id is given out again: the kernel no longer knows it
    assert nodes.path(b) == "/b" and nodes.by_id[b].nlookup == 1
    assert nodes.by_path("/a") is None
    nodes.forget(10 ** 6, 1)  # an id never given out is ignored
    nodes.forget(2 ** 64 - 1, 1)
    assert nodes.path(b) == "/b"


def test_forget_more_than_held_drops():
    nodes = Nodes()
    a = nodes.looked_up(ROOT, "a")
    nodes.forget(a, 5)
    assert a not in nodes.by_id


def test_forget_never_drops_root():
    nodes = Nodes()
    nodes.forget(ROOT, 1)
    nodes.forget(ROOT, 100)
    assert nodes.path(ROOT) == "/"
    assert nodes.looked_up(ROOT, "a") in nodes.by_id


def test_removed_detaches_but_keeps_id_until_forgotten():
    nodes = Nodes()
    ids = _tree(nodes, "/d/f", "/d/sub/g")
    f, d, g = ids["/d/f"], ids["/d"], ids["/d/sub/g"]
    nodes.removed(d, "f")
    assert f in nodes.by_id
    assert nodes.path(f) is None
    assert nodes.child_path(f, "x") is None
    assert nodes.by_path("/d/f") is None
    assert nodes.child(d, "f") is None
    node, path = nodes.read_lock(f)  # it still serves handles, with no path
    assert node.id == f and path is None
    nodes.read_unlock(node)
    # a new file of the same name is a new node; forgetting the old one leaves it alone
    f2 = nodes.looked_up(d, "f")
    assert f2 != f and nodes.path(f2) == "/d/f"
    nodes.forget(f, 1)
    assert f not in nodes.by_id
    assert nodes.by_path("/d/f") == f2
    # removing a directory takes its subtree's paths
    nodes.removed(ROOT, "d")
    assert nodes.path(d) is None
    assert nodes.path(g) is None
    assert nodes.path(ids["/d/sub"]) is None
    assert nodes.path(f2) is None
    assert nodes.by_path("/d/sub/g") is None
    assert g in nodes.by_id


def test_removed_unknown_name_is_noop():
    nodes = Nodes()
    a = nodes.looked_up(ROOT, "a")
    nodes.removed(ROOT, "b")
    nodes.removed(a, "x")
    assert nodes.path(a) == "/a"


def test_moved_repaths_subtree():
    nodes = Nodes()
    ids = _tree(nodes, "/src/d/e/f", "/src/d/g", "/dst/keep")
    nodes.moved(ROOT, "src", ids["/dst"], "moved")
    src = ids["/src"]
    assert nodes.path(src) == "/dst/moved"
    assert nodes.path(ids["/src/d"]) == "/dst/moved/d"
    assert nodes.path(ids["/src/d/e"]) == "/dst/moved/d/e"
    assert nodes.path(ids["/src/d/e/f"]) == "/dst/moved/d/e/f"
    assert nodes.path(ids["/src/d/g"]) == "/dst/moved/d/g"
    assert nodes.path(ids["/dst/keep"]) == "/dst/keep"
    assert nodes.by_path("/src") is None
    assert nodes.by_path("/dst/moved/d/e/f") == ids["/src/d/e/f"]
    assert nodes.child(ROOT, "src") is None
    node = nodes.by_id[src]
    assert node.name == "moved" and node.parent is nodes.by_id[ids["/dst"]]
    assert nodes.child_path(ids["/src/d/e"], "new") == "/dst/moved/d/e/new"
    # forgetting the moved node takes it out of its new parent, not the old one
    nodes.forget(ids["/src/d/g"], 1)
    assert nodes.by_path("/dst/moved/d/g") is None
    assert nodes.path(ids["/src/d/e/f"]) == "/dst/moved/d/e/f"


def test_moved_within_directory_and_to_root():
    nodes = Nodes()
    ids = _tree(nodes, "/a/b/c")
    nodes.moved(ids["/a"], "b", ids["/a"], "B")
    assert nodes.path(ids["/a/b/c"]) == "/a/B/c"
    nodes.moved(ids["/a"], "B", ROOT, "top")
    assert nodes.path(ids["/a/b"]) == "/top"
    assert nodes.path(ids["/a/b/c"]) == "/top/c"
    assert nodes.by_path("/a/B") is None and nodes.by_path("/top/c") == ids["/a/b/c"]


def test_moved_replaces_and_detaches_target():
    nodes = Nodes()
    ids = _tree(nodes, "/old/x", "/new/y/z")
    nodes.moved(ROOT, "old", ROOT, "new")
    assert nodes.path(ids["/old"]) == "/new"
    assert nodes.path(ids["/old/x"]) == "/new/x"
    # the replaced node and its subtree lose their paths but keep their ids
    for p in ("/new", "/new/y", "/new/y/z"):
        assert ids[p] in nodes.by_id
        assert nodes.path(ids[p]) is None
    assert nodes.by_path("/new") == ids["/old"]
    assert nodes.by_path("/new/y") is None
    assert nodes.by_path("/old") is None
    # forgetting the replaced node does not take the name from its new owner
    nodes.forget(ids["/new"], 1)
    assert nodes.by_path("/new") == ids["/old"]


def test_moved_unknown_source_still_detaches_target():
    nodes = Nodes()
    t = nodes.looked_up(ROOT, "t")
    nodes.moved(ROOT, "never-looked-up", ROOT, "t")
    assert nodes.path(t) is None
    assert nodes.by_path("/t") is None


def test_moved_onto_itself_keeps_path():
    nodes = Nodes()
    ids = _tree(nodes, "/a/b")
    nodes.moved(ROOT, "a", ROOT, "a")
    assert nodes.path(ids["/a"]) == "/a"
    assert nodes.path(ids["/a/b"]) == "/a/b"
    assert nodes.by_path("/a/b") == ids["/a/b"]


def test_moved_exchange_swaps():
    nodes = Nodes()
    ids = _tree(nodes, "/p/one/x/deep", "/q/two/y")
    nodes.moved(ids["/p"], "one", ids["/q"], "two", exchange=True)
    assert nodes.path(ids["/p/one"]) == "/q/two"
    assert nodes.path(ids["/p/one/x"]) == "/q/two/x"
    assert nodes.path(ids["/p/one/x/deep"]) == "/q/two/x/deep"
    assert nodes.path(ids["/q/two"]) == "/p/one"
    assert nodes.path(ids["/q/two/y"]) == "/p/one/y"
    assert nodes.by_path("/p/one") == ids["/q/two"]
    assert nodes.by_path("/q/two") == ids["/p/one"]
    assert nodes.by_path("/p/one/y") == ids["/q/two/y"]
    assert nodes.by_path("/q/two/x/deep") == ids["/p/one/x/deep"]
    # swap back within one directory
    nodes.moved(ids["/q"], "two", ids["/p"], "one", exchange=True)
    assert nodes.path(ids["/p/one/x/deep"]) == "/p/one/x/deep"
    assert nodes.path(ids["/q/two/y"]) == "/q/two/y"


def test_moved_exchange_same_directory():
    nodes = Nodes()
    ids = _tree(nodes, "/a/1", "/b/2")
    nodes.moved(ROOT, "a", ROOT, "b", exchange=True)
    assert nodes.path(ids["/a"]) == "/b"
    assert nodes.path(ids["/a/1"]) == "/b/1"
    assert nodes.path(ids["/b"]) == "/a"
    assert nodes.path(ids["/b/2"]) == "/a/2"
    assert nodes.by_path("/a") == ids["/b"] and nodes.by_path("/b") == ids["/a"]


def test_hidden_names_differ():
    nodes = Nodes()
    a = nodes.looked_up(ROOT, "a")
    names = [nodes.hidden_name(a) for _ in range(3)] + [nodes.hidden_name(ROOT)]
    assert len(set(names)) == 4
    assert re.fullmatch(r"\.fuse_hidden[0-9a-f]{16}", nodes.hidden_name(2**40 + 3))


def test_hide_takes_a_node_out_of_every_name():
    """A file unlinked while open is tracked by its node under a path no user can name: no
    lookup, rename or listing by name reaches it, whatever the names users give."""
    nodes = Nodes()
    d = nodes.looked_up(ROOT, "d")
    f = nodes.looked_up(d, "f")
    shaped = nodes.looked_up(d, ".fuse_hidden0000000100000002")  # a user's own name
    alias = nodes.hidden_path()
    assert "\0" in alias and alias.startswith("/") and alias != nodes.hidden_path()
    node = nodes.by_id[f]
    nodes.hide(node, alias)
    assert node in nodes.hidden
    assert nodes.path(f) == alias
    assert nodes.by_path("/d/f") is None and nodes.child(d, "f") is None
    assert nodes.by_path("/d/.fuse_hidden0000000100000002") == shaped
    assert nodes.write_lock((d, "f")) == []  # a new file of the old name is not this node
    nodes.forget(f, 1)
    assert f not in nodes.by_id and nodes.path(shaped) == "/d/.fuse_hidden0000000100000002"


# ---- Nodes: the name locks ------------------------------------------------------------------

def _start(fn):
    """fn in a daemon thread (so a failing test cannot hang the run); an Event set on return."""
    done, out = threading.Event(), []

    def run():
        out.append(fn())
        done.set()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, done, out


def test_write_lock_waits_for_reader():
    nodes = Nodes()
    f = nodes.looked_up(ROOT, "f")
    node, path = nodes.read_lock(f)
    assert path == "/f" and node.lock == 1  # one reader
    t, done, out = _start(lambda: nodes.write_lock((ROOT, "f")))
    try:
        assert not done.wait(0.2)  # held by the reader
    finally:
        nodes.read_unlock(node)
    assert done.wait(5)
    held = out[0]
    assert [n.id for n in held] == [f]
    assert held[0].lock == -1  # held for removing or renaming
    nodes.write_unlock(held)
    assert held[0].lock == 0
    t.join(5)


def test_write_lock_waits_for_every_reader():
    nodes = Nodes()
    f = nodes.looked_up(ROOT, "f")
    r1, _ = nodes.read_lock(f)
    r2, _ = nodes.read_lock(f)
    t, done, out = _start(lambda: nodes.write_lock((ROOT, "f")))
    try:
        nodes.read_unlock(r1)
        assert not done.wait(0.2)  # one reader left
    finally:
        nodes.read_unlock(r2)
    assert done.wait(5)
    nodes.write_unlock(out[0])
    t.join(5)


def test_reader_waits_for_writer_and_sees_new_path():
    nodes = Nodes()
    f = nodes.looked_up(ROOT, "f")
    held = nodes.write_lock((ROOT, "f"), (ROOT, "g"))  # g unknown: not held
    assert [n.id for n in held] == [f]
    t, done, out = _start(lambda: nodes.read_lock(f))
    try:
        assert not done.wait(0.2)
        nodes.moved(ROOT, "f", ROOT, "g")
    finally:
        nodes.write_unlock(held)
    assert done.wait(5)
    node, path = out[0]
    assert node.id == f and path == "/g"
    nodes.read_unlock(node)
    assert node.lock == 0
    t.join(5)


def test_write_lock_other_names_do_not_wait():
    nodes = Nodes()
    f = nodes.looked_up(ROOT, "f")
    g = nodes.looked_up(ROOT, "g")
    node, _ = nodes.read_lock(f)
    t, done, out = _start(lambda: nodes.write_lock((ROOT, "g"), (ROOT, "missing")))
    try:
        assert done.wait(5)
        assert [n.id for n in out[0]] == [g]
    finally:
        nodes.read_unlock(node)
    nodes.write_unlock(out[0])
    t.join(5)


def test_write_lock_same_node_twice_in_one_call():
    nodes = Nodes()
    f = nodes.looked_up(ROOT, "f")
    held = nodes.write_lock((ROOT, "f"), (ROOT, "f"))  # rename onto itself: no self-deadlock
    assert [n.id for n in held] == [f]
    nodes.write_unlock(held)


def test_read_unlock_none_is_noop():
    Nodes().read_unlock(None)
