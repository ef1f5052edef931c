"""fuse/nodes.py: the node table (`Nodes`: ids, paths, forget, remove, rename, exchange,
hidden names, the read/write name locks)."""
import re
import threading

import pytest

from unionfs.fuse import nodes as nodes_module
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
    assert nodes.lookups(a) == 2
    assert nodes.lookups(b) == 1
    sub = nodes.looked_up(a, "sub")
    assert nodes.path(a) == "/a"
    assert nodes.path(sub) == "/a/sub"
    assert nodes.child_path(sub, "x") == "/a/sub/x"
    assert nodes.child(a, "sub") == sub
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
    assert a not in nodes and nodes.lookups(a) == 0
    assert nodes.path(a) is None
    assert nodes.by_path("/a") is None
    assert nodes.child(ROOT, "a") is None
    b = nodes.looked_up(ROOT, "b")
    assert b == a  # a forgotten id is given out again: the kernel no longer knows it
    assert nodes.path(b) == "/b" and nodes.lookups(b) == 1
    assert nodes.by_path("/a") is None
    nodes.forget(10 ** 6, 1)  # an id never given out is ignored
    nodes.forget(2 ** 64 - 1, 1)
    assert nodes.path(b) == "/b"


def test_lookup_count_past_32_bits():
    """The kernel's count is 64 bits; the array's 32: a count past it is kept aside."""
    nodes = Nodes()
    a = nodes.looked_up(ROOT, "a")
    nodes._nlookup[a] = 2 ** 32 - 1  # as if looked up that often
    assert nodes.looked_up(ROOT, "a") == a and nodes.looked_up(ROOT, "a") == a
    assert nodes.lookups(a) == 2 ** 32 + 1
    nodes.forget(a, 2)
    assert nodes.lookups(a) == 2 ** 32 - 1 and nodes.path(a) == "/a"
    nodes.looked_up(ROOT, "a")
    nodes.forget(a, 2 ** 32 - 1)
    assert nodes.lookups(a) == 1 and nodes.path(a) == "/a"
    nodes.forget(a, 1)
    assert a not in nodes


def test_forget_more_than_held_drops():
    nodes = Nodes()
    a = nodes.looked_up(ROOT, "a")
    nodes.forget(a, 5)
    assert a not in nodes and nodes.lookups(a) == 0


def test_forget_never_drops_root():
    nodes = Nodes()
    nodes.forget(ROOT, 1)
    nodes.forget(ROOT, 100)
    assert nodes.path(ROOT) == "/"
    assert nodes.looked_up(ROOT, "a") in nodes


def test_removed_detaches_but_keeps_id_until_forgotten():
    nodes = Nodes()
    ids = _tree(nodes, "/d/f", "/d/sub/g")
    f, d, g = ids["/d/f"], ids["/d"], ids["/d/sub/g"]
    nodes.removed(d, "f")
    assert f in nodes
    assert nodes.path(f) is None
    assert nodes.child_path(f, "x") is None
    assert nodes.by_path("/d/f") is None
    assert nodes.child(d, "f") is None
    node, path = nodes.read_lock(f)  # it still serves handles, with no path
    assert node == f and path is None
    nodes.read_unlock(node)
    # a new file of the same name is a new node; forgetting the old one leaves it alone
    f2 = nodes.looked_up(d, "f")
    assert f2 != f and nodes.path(f2) == "/d/f"
    nodes.forget(f, 1)
    assert f not in nodes
    assert nodes.by_path("/d/f") == f2
    # removing a directory takes its subtree's paths
    nodes.removed(ROOT, "d")
    assert nodes.path(d) is None
    assert nodes.path(g) is None
    assert nodes.path(ids["/d/sub"]) is None
    assert nodes.path(f2) is None
    assert nodes.by_path("/d/sub/g") is None
    assert g in nodes


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
    assert nodes.child(ids["/dst"], "moved") == src
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
        assert ids[p] in nodes
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
    nodes.hide(f, alias)
    assert f in nodes.hidden
    assert nodes.path(f) == alias
    assert nodes.by_path("/d/f") is None and nodes.child(d, "f") is None
    assert nodes.by_path("/d/.fuse_hidden0000000100000002") == shaped
    assert nodes.write_lock((d, "f")) == []  # a new file of the old name is not this node
    nodes.forget(f, 1)
    assert f not in nodes and nodes.path(shaped) == "/d/.fuse_hidden0000000100000002"


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
    assert path == "/f" and nodes._locks[f] == 1  # one reader
    t, done, out = _start(lambda: nodes.write_lock((ROOT, "f")))
    try:
        assert not done.wait(0.2)  # held by the reader
    finally:
        nodes.read_unlock(node)
    assert done.wait(5)
    held = out[0]
    assert held == [f]
    assert nodes._locks[f] == -1  # held for removing or renaming
    nodes.write_unlock(held)
    assert f not in nodes._locks
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
    assert held == [f]
    t, done, out = _start(lambda: nodes.read_lock(f))
    try:
        assert not done.wait(0.2)
        nodes.moved(ROOT, "f", ROOT, "g")
    finally:
        nodes.write_unlock(held)
    assert done.wait(5)
    node, path = out[0]
    assert node == f and path == "/g"
    nodes.read_unlock(node)
    assert f not in nodes._locks
    t.join(5)


def test_write_lock_other_names_do_not_wait():
    nodes = Nodes()
    f = nodes.looked_up(ROOT, "f")
    g = nodes.looked_up(ROOT, "g")
    node, _ = nodes.read_lock(f)
    t, done, out = _start(lambda: nodes.write_lock((ROOT, "g"), (ROOT, "missing")))
    try:
        assert done.wait(5)
        assert out[0] == [g]
    finally:
        nodes.read_unlock(node)
    nodes.write_unlock(out[0])
    t.join(5)


def test_write_lock_same_node_twice_in_one_call():
    nodes = Nodes()
    f = nodes.looked_up(ROOT, "f")
    held = nodes.write_lock((ROOT, "f"), (ROOT, "f"))  # rename onto itself: no self-deadlock
    assert held == [f]
    nodes.write_unlock(held)


def test_read_unlock_none_is_noop():
    Nodes().read_unlock(None)


# ---- Nodes: slots, many children, forgotten parents, detached nodes -------------------------

def test_forgotten_slot_is_given_out_again_only_when_nothing_refers_to_it():
    nodes = Nodes()
    a, b, c = (nodes.looked_up(ROOT, n) for n in "abc")
    nodes.opened(b)
    held, _ = nodes.read_lock(c)
    for nid in (a, b, c):
        nodes.forget(nid, 1)
        assert nid not in nodes and nodes.path(nid) is None
    assert nodes.looked_up(ROOT, "x") == a  # nothing refers to a: its slot again
    fresh = {nodes.looked_up(ROOT, "y"), nodes.looked_up(ROOT, "z")}
    assert not fresh & {b, c}  # an open handle and a lock keep theirs
    assert nodes.closed(b) is None  # the last handle: b's slot is free now
    nodes.read_unlock(held)          # and c's
    assert {nodes.looked_up(ROOT, "v"), nodes.looked_up(ROOT, "w")} == {b, c}
    assert nodes.path(b) in ("/v", "/w") and nodes.by_path("/x") == a


def test_a_million_lookups_and_forgets_reuse_slots():
    nodes = Nodes()
    d = nodes.looked_up(ROOT, "d")
    ids = [nodes.looked_up(d, "f%d" % i) for i in range(20000)]
    assert len(set(ids)) == 20000
    for nid in ids:
        nodes.forget(nid, 1)
    again = [nodes.looked_up(d, "g%d" % i) for i in range(20000)]
    assert set(again) == set(ids)  # no slot left behind
    assert nodes.by_path("/d/f7") is None and nodes.path(again[7]) == "/d/g7"
    assert all(nodes.by_path("/d/g%d" % i) == nid for i, nid in enumerate(again))


def test_rename_of_a_directory_with_many_children():
    nodes = Nodes()
    src, dst = nodes.looked_up(ROOT, "src"), nodes.looked_up(ROOT, "dst")
    kids = {nodes.looked_up(src, "f%05d" % i): "f%05d" % i for i in range(5000)}
    sub = nodes.looked_up(src, "sub")
    deep = nodes.looked_up(sub, "deep")
    nodes.moved(ROOT, "src", dst, "moved")
    for nid, name in kids.items():
        assert nodes.path(nid) == "/dst/moved/" + name
        assert nodes.by_path("/dst/moved/" + name) == nid
        assert nodes.by_path("/src/" + name) is None
    assert nodes.path(deep) == "/dst/moved/sub/deep"
    # the children are the same nodes, found by name under the same directory id
    assert nodes.looked_up(src, "f00042") == next(n for n, m in kids.items() if m == "f00042")
    nodes.moved(dst, "moved", ROOT, "back", exchange=False)
    assert nodes.path(deep) == "/back/sub/deep" and nodes.by_path("/dst/moved") is None


def test_forget_of_a_directory_with_children():
    """The kernel forgets children first, but FORGETs are served by several threads: a
    directory may go before its children. They keep their paths (through it) until forgotten,
    no lookup finds them by name, and its id is not given out while they refer to it."""
    nodes = Nodes()
    d = nodes.looked_up(ROOT, "d")
    sub = nodes.looked_up(d, "sub")
    f = nodes.looked_up(sub, "f")
    nodes.forget(d, 1)
    nodes.forget(sub, 1)
    assert d not in nodes and sub not in nodes
    assert nodes.path(f) == "/d/sub/f"
    assert nodes.by_path("/d") is None and nodes.child(ROOT, "d") is None
    d2 = nodes.looked_up(ROOT, "d")  # a new lookup: a new node
    assert d2 not in (d, sub, f)
    assert nodes.looked_up(d2, "sub") not in (d, sub, f)
    nodes.forget(f, 1)  # the last child: both slots come free
    assert {nodes.looked_up(ROOT, "n1"), nodes.looked_up(ROOT, "n2"), nodes.looked_up(ROOT, "n3")} \
        == {d, sub, f}
    assert nodes.path(d2) == "/d"


def test_removed_directory_then_forgotten_frees_its_subtree():
    nodes = Nodes()
    d = nodes.looked_up(ROOT, "d")
    f = nodes.looked_up(d, "f")
    nodes.removed(ROOT, "d")
    assert nodes.path(f) is None and nodes.child(d, "f") == f
    nodes.forget(d, 1)
    assert nodes.lookups(f) == 1  # still the kernel's
    nodes.forget(f, 1)
    assert {nodes.looked_up(ROOT, "x"), nodes.looked_up(ROOT, "y")} == {d, f}


def test_detached_node_lives_until_its_last_close():
    nodes = Nodes()
    d = nodes.looked_up(ROOT, "d")
    f = nodes.looked_up(d, "f")
    nodes.opened(f)
    nodes.opened(f)
    alias = nodes.hidden_path()
    nodes.hide(f, alias)
    assert nodes.path(f) == alias and nodes.is_open(f)
    assert nodes.by_path("/d/f") is None and nodes.looked_up(d, "f") != f
    nodes.forget(f, 1)  # the kernel forgets it before the handles are released
    assert nodes.closed(f) is None  # a handle left
    assert nodes.looked_up(ROOT, "x") != f
    assert nodes.closed(f) == alias  # the last one: the caller removes the file
    assert f not in nodes.hidden and not nodes.is_open(f)
    assert nodes.looked_up(ROOT, "y") == f  # and the slot is free again
    assert nodes.closed(10 ** 9) is None  # never given out: nothing to do


@pytest.mark.parametrize("first_table,move,n_names", [(8, None, 6), (None, None, 6),
                                                      (8, 1, 40), (8, None, 40)])
def test_random_operations_agree_with_a_model(monkeypatch, first_table, move, n_names):
    """Lookups, forgets, removals, renames and exchanges over few names, checked against a
    model of parent links; from a table of 8 slots, every probe collides and it grows often;
    moving one old slot per name added, every operation also meets a table half moved."""
    import random
    if first_table:
        monkeypatch.setattr(nodes_module, "_MIN_TABLE", first_table)
    if move:
        monkeypatch.setattr(nodes_module, "_MOVE", move)
    rnd = random.Random(7)
    nodes = Nodes()
    growing = 0
    parent, name, count = {ROOT: None}, {ROOT: ""}, {ROOT: 1}
    named = {}  # (parent, name) -> id

    def path(nid):
        parts = []
        while nid != ROOT:
            if parent[nid] is None:
                return None
            parts.append(name[nid])
            nid = parent[nid]
        return "/" + "/".join(reversed(parts))

    def by_path(p):
        nid = ROOT
        for part in p.strip("/").split("/"):
            nid = named.get((nid, part))
            if nid is None:
                return None
        return nid

    def unname(nid):
        if named.get((parent[nid], name[nid])) == nid:
            del named[(parent[nid], name[nid])]

    def moves_under_itself(node, target):
        while node is not None and target is not None:
            if target == node:
                return True
            target = parent.get(target)
        return False

    names = ["n%d" % i for i in range(n_names)]
    for step in range(6000):
        growing += nodes._old is not None
        live = [n for n in count if count[n] > 0]
        op = rnd.random()
        p, nm = rnd.choice(live), rnd.choice(names)
        if op < 0.5:
            cid = nodes.looked_up(p, nm)
            if (p, nm) in named:
                assert cid == named[(p, nm)]
            else:
                # a new node never takes the id of one something still refers to
                assert cid not in parent or (count[cid] == 0 and cid not in parent.values())
                named[(p, nm)] = cid
                parent[cid], name[cid], count[cid] = p, nm, 0
            count[cid] += 1
        elif op < 0.75:
            victim = rnd.choice(live)
            n = rnd.choice((1, 1, 2))
            nodes.forget(victim, n)
            if victim != ROOT:
                count[victim] -= n
                if count[victim] <= 0:
                    count[victim] = 0
                    unname(victim)
        elif op < 0.85:
            nodes.removed(p, nm)
            cid = named.pop((p, nm), None)
            if cid is not None:
                parent[cid] = None
        else:
            q, nm2 = rnd.choice(live), rnd.choice(names)
            exchange = op > 0.95
            if moves_under_itself(named.get((p, nm)), q) or (
                    exchange and moves_under_itself(named.get((q, nm2)), p)):
                continue  # a directory into its own subtree: the kernel refuses it (EINVAL)
            nodes.moved(p, nm, q, nm2, exchange=exchange)
            node, other = named.get((p, nm)), named.get((q, nm2))
            for c in (other, node):
                if c is not None:
                    unname(c)
                    parent[c] = None
            if other is not None and exchange:
                parent[other], name[other] = p, nm
                named[(p, nm)] = other
            if node is not None:
                parent[node], name[node] = q, nm2
                named[(q, nm2)] = node
        # forgotten nodes nothing refers to leave the model as their slots come free
        while True:
            referred = set(parent.values())
            free = [n for n in count if count[n] == 0 and n not in referred]
            if not free:
                break
            for nid in free:
                del parent[nid], name[nid], count[nid]
        if step % 50 == 0 or step > 5900:
            for nid in count:
                if count[nid]:
                    assert nodes.path(nid) == path(nid), (step, nid)
                    assert nodes.lookups(nid) == count[nid]
            for (p, nm), cid in named.items():
                assert nodes.child(p, nm) == cid
                if path(cid) is not None:
                    assert nodes.by_path(path(cid)) == by_path(path(cid))
    if move:
        assert growing > 1000  # the operations above met a table part moved
