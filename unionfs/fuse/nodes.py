"""The node table: every node the kernel holds, by id, with its parent and name.

The kernel names files by node id; the union by path. `Nodes` keeps, for every node the kernel
holds (its lookup count above zero), its parent and name; a node's path is built from them
when asked (no string per node: a walk of a million paths holds a million nodes), and renames
and removals move and detach nodes as the kernel's dentries move. Each name is its own node (as
in libfuse's high-level API, whose behaviour the differential tests were written against). A
file unlinked or renamed over while open is detached (`Nodes.hide`): its node leaves every
directory and is known by a path under DETACHED, which no user can name, until its last close.
The table also holds the name locks that keep a request by node id and a request that removes
or moves that node's name apart.
"""
import itertools
import threading

ROOT = 1
# The paths the node table gives files unlinked while open (Nodes.hide): no user's path can
# begin so (a NUL is in no name), and a system call given one fails rather than reach a file.
DETACHED = "/\0detached-"


class Node:
    """One node the kernel holds. Its path is built from its parents when asked (a walk holds a
    node per path the kernel keeps, so a million of them: no path string kept per node)."""
    __slots__ = ("id", "parent", "name", "nlookup", "children", "lock")

    def __init__(self, nid, parent, name):
        self.id = nid
        self.parent = parent    # None: the root, or a node whose name is gone
        self.name = name
        self.nlookup = 0
        self.children = None
        self.lock = 0           # readers holding it, or -1: held for removing or renaming it

    @property
    def path(self):
        """The node's path, or None once its name (or an ancestor's) is gone."""
        parts = []
        node = self
        while node.parent is not None:
            parts.append(node.name)
            node = node.parent
        if node.id != ROOT:
            return None
        return "/" + "/".join(reversed(parts))


class _Ids:
    """Node id -> Node: a list whose slots are reused after FORGET (no dict entry or int object
    per node; the kernel may be given a forgotten id again)."""
    __slots__ = ("_slots", "_free")

    def __init__(self, root):
        self._slots = [None, root]  # id 0 is never a node
        self._free = []

    def get(self, nid):
        try:
            return self._slots[nid]
        except IndexError:
            return None

    def __getitem__(self, nid):
        node = self.get(nid)
        if node is None:
            raise KeyError(nid)
        return node

    def __contains__(self, nid):
        return self.get(nid) is not None

    def new_id(self):
        if self._free:
            return self._free.pop()
        self._slots.append(None)
        return len(self._slots) - 1

    def __setitem__(self, nid, node):
        self._slots[nid] = node

    def __delitem__(self, nid):
        self._slots[nid] = None
        self._free.append(nid)


class Nodes:
    """Node id -> Node, and each node's named children; every method holds the table lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self._cond = threading.Condition(self.lock)
        root = Node(ROOT, None, "")
        root.nlookup = 1
        self.by_id = _Ids(root)
        self.opens = {}      # Node -> handles open on it
        self.hidden = set()  # Nodes whose name was removed while open (hide())
        self._hide = itertools.count()

    # Requests by node id and requests that remove or move the node's name exclude each other
    # (libfuse's path API locked its nodes the same way): an operation never runs on a path
    # that another request has meanwhile given to a different file.

    def read_lock(self, nid):
        """The node, held against removal and renaming, and its path (None: name gone)."""
        with self.lock:
            node = self.by_id.get(nid)
            if node is None:
                return None, None
            while node.lock < 0:
                self._cond.wait()
            node.lock += 1
            return node, node.path

    def read_unlock(self, node):
        if node is not None:
            with self.lock:
                node.lock -= 1
                if node.lock == 0:
                    self._cond.notify_all()

    def write_lock(self, *named):
        """The nodes of (directory id, name) pairs that the kernel holds, held exclusively."""
        with self.lock:
            nodes = sorted({n.id: n for n in (self.child(nid, name) for nid, name in named)
                            if n is not None}.values(), key=lambda n: n.id)
            for node in nodes:
                while node.lock:
                    self._cond.wait()
                node.lock = -1
            return nodes

    def write_unlock(self, nodes):
        with self.lock:
            for node in nodes:
                node.lock = 0
            self._cond.notify_all()

    def path(self, nid):
        """The path of a node, or None for one whose name is gone."""
        with self.lock:
            node = self.by_id.get(nid)
            return None if node is None else node.path

    def child_path(self, nid, name):
        with self.lock:
            parent = self.by_id.get(nid)
            path = None if parent is None else parent.path
        if path is None:
            return None
        return ("/" if path == "/" else path + "/") + name

    def child(self, nid, name):
        parent = self.by_id.get(nid)
        if parent is not None and parent.children:
            return parent.children.get(name)
        return None

    def looked_up(self, nid, name):
        """The node id for name in directory nid, its lookup count raised by one."""
        with self.lock:
            parent = self.by_id[nid]
            kids = parent.children
            if kids is None:
                kids = parent.children = {}
            node = kids.get(name)
            if node is None:
                node = Node(self.by_id.new_id(), parent, name)
                kids[name] = node
                self.by_id[node.id] = node
            node.nlookup += 1
            return node.id

    def forget(self, nid, n):
        with self.lock:
            node = self.by_id.get(nid)
            if node is None or nid == ROOT:
                return
            node.nlookup -= n
            if node.nlookup <= 0:
                del self.by_id[nid]
                self._drop_name(node)  # a new lookup makes a new node

    @staticmethod
    def _drop_name(node):
        """Take the node out of its parent's children (if it is still the one named there)."""
        parent = node.parent
        if parent is not None and parent.children and parent.children.get(node.name) is node:
            del parent.children[node.name]

    def _unlink(self, node):
        self._drop_name(node)
        node.parent = None

    def removed(self, nid, name):
        """The name is gone (unlink, rmdir, rename over it): its node keeps serving handles."""
        with self.lock:
            node = self.child(nid, name)
            if node is not None:
                self._unlink(node)  # no parent: no path, for it and what is below it

    def moved(self, nid, name, new_nid, new_name, exchange=False):
        with self.lock:
            node = self.child(nid, name)
            other = self.child(new_nid, new_name)
            if other is not None:
                self._unlink(other)
                if exchange:
                    self._attach(other, self.by_id[nid], name)
            if node is not None:
                self._unlink(node)
                self._attach(node, self.by_id[new_nid], new_name)

    def _attach(self, node, parent, name):
        if parent.children is None:
            parent.children = {}
        parent.children[name] = node
        node.parent, node.name = parent, name  # what is below it follows: paths are built

    def hidden_name(self, nid):
        """A name for the file open(O_TMPFILE) makes before it is detached."""
        return ".fuse_hidden%08x%08x" % (nid & 0xFFFFFFFF, next(self._hide) & 0xFFFFFFFF)

    def hidden_path(self):
        """The path a detached node is known by: the NUL in it is in no name a user can give
        (nor can any system call take it), so it never collides with a user's name, and no
        lookup, listing or rename reaches it."""
        return "%s%x" % (DETACHED, next(self._hide))

    def hide(self, node, path):
        """The node's name is gone while the node stays open: it takes `path`, outside every
        directory's children."""
        with self.lock:
            self._unlink(node)
            node.parent, node.name = self.by_id[ROOT], path[1:]
            self.hidden.add(node)

    def by_path(self, path):
        """The node the kernel holds for a path, if any."""
        with self.lock:
            node = self.by_id[ROOT]
            for part in path.split("/"):
                if part:
                    node = node.children.get(part) if node.children else None
                    if node is None:
                        return None
            return node.id
