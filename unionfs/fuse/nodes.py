"""The node table: every node the kernel holds, by id, with its parent and name.

The kernel names files by node id; the union by path. `Nodes` keeps, for every node the kernel
holds (its lookup count above zero), its parent and name; a node's path is built from them
when asked, and renames and removals move and detach nodes as the kernel's dentries move. Each
name is its own node (as in libfuse's high-level API, whose behaviour the differential tests
were written against). A file unlinked or renamed over while open is detached (`Nodes.hide`):
its node leaves every directory and is known by a path under DETACHED, which no user can name,
until its last close. The table also holds the name locks that keep a request by node id and a
request that removes or moves that node's name apart.

A walk of a million paths holds a million nodes, so a node is no object: it is an index into
parallel arrays of 4-byte ints (parent id, lookup count, children count) and a list of names, and a
directory's children are found through one open-addressed table of node ids keyed by (parent
id, name), not a dictionary per directory. An object, its id's int and a dictionary slot cost
~146 bytes a node; this ~30 (docs/performance.md, "Memory"). Locks, open counts and
detached nodes are few at a time: dictionaries and a set keyed by id.
"""
import itertools
import threading
from array import array

ROOT = 1
# The paths the node table gives files unlinked while open (Nodes.hide): no user's path can
# begin so (a NUL is in no name), and a system call given one fails rather than reach a file.
DETACHED = "/\0detached-"

# the table's first size: 32 KiB, room for 5,000 nodes before it first grows
_MIN_TABLE = 1 << 13
# Growing rehashes in Python, ~1,500 instructions a node: done at once, the doubling at 700,000
# nodes held the table lock (every request) for 0.35 s. So the old table is moved over a few
# slots at a time: this many per name added (the move is over once a 128th more of the new
# table has filled, long before it must grow again), and an entry asked for is moved first.
_MOVE = 64
_GONE = 0xFFFFFFFF  # an old table's slot whose entry was moved first: probes pass over it


class Nodes:
    """Node id -> parent, name and lookup count, and (parent, name) -> node id; every method
    holds the table lock.

    A node the kernel forgot keeps its slot while something still refers to it by id: a node
    below it (whose path is built through it), an open file, a name lock. Its slot is given out
    again only once nothing does, so no stale reference reaches the node that reuses it."""

    def __init__(self):
        self.lock = threading.Lock()
        self._cond = threading.Condition(self.lock)
        # id 0 is no node: a parent of 0 means no parent (the root, or a name gone)
        self._parent = array("I", (0, 0))
        self._name = [None, ""]             # None: a free slot
        self._nlookup = array("I", (0, 1))  # the kernel's count; 0: forgotten
        self._over = {}                     # id -> its count past the array's 2**32 - 1
        self._kids = array("I", (0, 0))     # nodes whose parent this is
        self._free = array("I")
        # (parent, name) -> id, open addressing with linear probing; 0 is an empty slot
        self._table = array("I", (0,)) * _MIN_TABLE
        self._mask = _MIN_TABLE - 1
        self._named = 0
        self._old = None     # while growing: the table being moved over (_grow)
        self._moved = 0      # its slots below this are moved
        self._locks = {}     # id -> readers holding it, or -1: held for removing or renaming
        self.opens = {}      # id -> handles open on it
        self.hidden = set()  # ids whose name was removed while open (hide())
        self._hide = itertools.count()

    def __contains__(self, nid):
        """Does the kernel hold node nid (looked up and not forgotten)?"""
        return 0 < nid < len(self._nlookup) and self._nlookup[nid] > 0

    def lookups(self, nid):
        """The kernel's lookup count of node nid (0: unknown or forgotten)."""
        with self.lock:
            if not 0 < nid < len(self._nlookup):
                return 0
            return self._nlookup[nid] + self._over.get(nid, 0)

    # Requests by node id and requests that remove or move the node's name exclude each other
    # (libfuse's path API locked its nodes the same way): an operation never runs on a path
    # that another request has meanwhile given to a different file.

    def read_lock(self, nid):
        """The node, held against removal and renaming, and its path (None: name gone)."""
        with self.lock:
            locks = self._locks
            while True:
                if nid not in self:  # also after a wait: forgotten meanwhile
                    return None, None
                held = locks.get(nid, 0)
                if held >= 0:
                    break
                self._cond.wait()
            locks[nid] = held + 1
            return nid, self._path(nid)

    def read_unlock(self, nid):
        if nid is not None:
            with self.lock:
                left = self._locks[nid] - 1
                if left:
                    self._locks[nid] = left
                else:
                    del self._locks[nid]
                    self._cond.notify_all()
                    self._release(nid)

    def write_lock(self, *named):
        """The nodes of (directory id, name) pairs that the kernel holds, held exclusively."""
        with self.lock:
            held = sorted({c for c in (self._child(nid, name) for nid, name in named)
                           if c is not None})
            locks = self._locks
            for nid in held:
                while locks.get(nid, 0):
                    self._cond.wait()
                locks[nid] = -1
            return held

    def write_unlock(self, held):
        with self.lock:
            for nid in held:
                self._locks.pop(nid, None)
            self._cond.notify_all()
            for nid in held:
                self._release(nid)

    def path(self, nid):
        """The path of a node, or None for one whose name is gone."""
        with self.lock:
            return self._path(nid) if nid in self else None

    def child_path(self, nid, name):
        with self.lock:
            nlookup = self._nlookup
            path = self._path(nid) if 0 < nid < len(nlookup) and nlookup[nid] else None
        if path is None:
            return None
        return ("/" if path == "/" else path + "/") + name

    def child(self, nid, name):
        """The id of the node named name in directory nid, if the kernel holds one."""
        with self.lock:
            return self._child(nid, name)

    def looked_up(self, nid, name):
        """The node id for name in directory nid, its lookup count raised by one."""
        with self.lock:
            nlookup = self._nlookup
            if not (0 < nid < len(nlookup) and nlookup[nid]):
                raise KeyError(nid)
            if self._old is not None:
                self._pull(nid, name)
            table, mask, parent, names = self._table, self._mask, self._parent, self._name
            i = hash((nid, name)) & mask
            while True:
                cid = table[i]
                if not cid:
                    break
                if parent[cid] == nid and names[cid] == name:
                    try:
                        nlookup[cid] += 1
                    except OverflowError:  # 4 bytes a node, a bigger count aside
                        self._over[cid] = self._over.get(cid, 0) + 1
                    return cid
                i = (i + 1) & mask
            # a new node (inline: this is every first LOOKUP's path)
            if self._free:
                cid = self._free.pop()
                names[cid] = name
                nlookup[cid] = 1
                parent[cid] = nid
            else:
                cid = len(names)
                names.append(name)
                parent.append(nid)
                nlookup.append(1)
                self._kids.append(0)
            self._kids[nid] += 1
            table[i] = cid
            self._named += 1
            if self._old is not None or self._named * 3 > mask * 2:
                self._added()
            return cid

    def forget(self, nid, n):
        with self.lock:
            if nid == ROOT or nid not in self:
                return
            left = self._nlookup[nid] + self._over.pop(nid, 0) - n
            if left > 0:
                self._nlookup[nid] = min(left, 0xFFFFFFFF)
                if left > 0xFFFFFFFF:
                    self._over[nid] = left - 0xFFFFFFFF
                return
            self._nlookup[nid] = 0
            # a new lookup makes a new node; what is below keeps its path through this one
            # (as the kernel forgets children first, only until their FORGETs are served)
            self._unname(nid)
            self._release(nid)

    def removed(self, nid, name):
        """The name is gone (unlink, rmdir, rename over it): its node keeps serving handles."""
        with self.lock:
            cid = self._child(nid, name)
            if cid is not None:
                self._detach(cid)  # no parent: no path, for it and what is below it

    def moved(self, nid, name, new_nid, new_name, exchange=False):
        with self.lock:
            node = self._child(nid, name)
            other = self._child(new_nid, new_name)
            if other is not None:
                self._detach(other)
            if node is not None:
                self._detach(node)
            if other is not None and exchange:
                self._attach(other, nid, name)
            if node is not None:
                self._attach(node, new_nid, new_name)  # what is below it follows its id

    def opened(self, nid):
        """One more handle open on node nid."""
        with self.lock:
            if 0 < nid < len(self._name) and self._name[nid] is not None:
                self.opens[nid] = self.opens.get(nid, 0) + 1

    def is_open(self, nid):
        return bool(self.opens.get(nid))

    def closed(self, nid):
        """One handle on node nid closed. Returns the path to remove when it was the last one
        of a detached node (hide()), else None."""
        with self.lock:
            if not 0 < nid < len(self._name):
                return None
            left = self.opens.get(nid, 1) - 1
            if left > 0:
                self.opens[nid] = left
                return None
            self.opens.pop(nid, None)
            path = None
            if nid in self.hidden:
                self.hidden.discard(nid)
                path = self._path(nid)
                self._set_parent(nid, 0)  # no path any more: a request by id finds no file
            self._release(nid)
            return path

    def hidden_name(self, nid):
        """A name for the file open(O_TMPFILE) makes before it is detached."""
        return ".fuse_hidden%08x%08x" % (nid & 0xFFFFFFFF, next(self._hide) & 0xFFFFFFFF)

    def hidden_path(self):
        """The path a detached node is known by: the NUL in it is in no name a user can give
        (nor can any system call take it), so it never collides with a user's name, and no
        lookup, listing or rename reaches it."""
        return "%s%x" % (DETACHED, next(self._hide))

    def hide(self, nid, path):
        """The node's name is gone while the node stays open: it takes `path`, outside every
        directory's children."""
        with self.lock:
            self._detach(nid)
            self._name[nid] = path[1:]
            self._set_parent(nid, ROOT)
            self.hidden.add(nid)

    def by_path(self, path):
        """The node the kernel holds for a path, if any."""
        with self.lock:
            nid = ROOT
            for part in path.split("/"):
                if part:
                    nid = self._child(nid, part)
                    if nid is None:
                        return None
            return nid

    # -- under the lock

    def _path(self, nid):
        """The node's path, or None once its name (or an ancestor's) is gone."""
        parent, names = self._parent, self._name
        parts = []
        while nid != ROOT:
            parts.append(names[nid])
            nid = parent[nid]
            if not nid:
                return None
        return "/" + "/".join(reversed(parts))

    def _slot(self, nid, name):
        """The table index holding (nid, name), or of the empty slot where it would go."""
        if self._old is not None:
            self._pull(nid, name)
        table, mask, parent, names = self._table, self._mask, self._parent, self._name
        i = hash((nid, name)) & mask
        while True:
            cid = table[i]
            if not cid or (parent[cid] == nid and names[cid] == name):
                return i
            i = (i + 1) & mask

    def _child(self, nid, name):
        if not 0 < nid < len(self._name):
            return None
        return self._table[self._slot(nid, name)] or None

    def _set_parent(self, cid, nid):
        old = self._parent[cid]
        self._parent[cid] = nid
        if nid:
            self._kids[nid] += 1
        if old:
            self._kids[old] -= 1
            self._release(old)

    def _release(self, nid):
        """Give node nid's slot back if nothing refers to it any more (see the class), and so
        up the parents that it alone kept."""
        while (nid != ROOT and not self._nlookup[nid] and not self._kids[nid]
               and nid not in self._locks and nid not in self.opens and nid not in self.hidden
               and self._name[nid] is not None):
            self._unname(nid)
            up = self._parent[nid]
            self._parent[nid] = 0
            self._name[nid] = None
            self._free.append(nid)
            if not up:
                return
            self._kids[up] -= 1
            nid = up

    def _unname(self, cid):
        """Take node cid out of the table (if it is the one named there)."""
        nid = self._parent[cid]
        if not nid:
            return
        table = self._table
        i = self._slot(nid, self._name[cid])
        if table[i] != cid:
            return
        # backward-shift deletion: what a probe for a later entry passed over moves into the
        # hole, so no probe ever stops short of its key
        mask, parent, names = self._mask, self._parent, self._name
        j = i
        while True:
            j = (j + 1) & mask
            other = table[j]
            if not other:
                break
            home = hash((parent[other], names[other])) & mask
            if (j - home) & mask >= (j - i) & mask:
                table[i] = other
                i = j
        table[i] = 0
        self._named -= 1

    def _detach(self, cid):
        self._unname(cid)
        self._set_parent(cid, 0)

    def _attach(self, cid, nid, name):
        if not 0 < nid < len(self._name) or self._name[nid] is None:
            return  # no such directory: the node stays detached
        self._name[cid] = name
        self._set_parent(cid, nid)
        i = self._slot(nid, name)
        if not self._table[i]:
            self._named += 1
        self._table[i] = cid
        self._added()

    def _added(self):
        """A name went into the table: move some of the old one over, or start growing."""
        if self._old is not None:
            self._move(_MOVE)
        if self._named * 3 > self._mask * 2:
            if self._old is not None:  # not reached at _MOVE's pace; kept correct anyway
                self._move(len(self._old))
            self._grow()

    def _grow(self):
        """Double the table: a new, empty one takes every new name, and the old one's entries
        move over as names are added (_added) or looked for (_pull)."""
        size = (self._mask + 1) * 2
        self._old, self._moved = self._table, 0
        self._table, self._mask = array("I", (0,)) * size, size - 1

    def _put(self, cid):
        """Enter node cid, absent from the table, at its (parent, name)."""
        table, mask = self._table, self._mask
        i = hash((self._parent[cid], self._name[cid])) & mask
        while table[i]:
            i = (i + 1) & mask
        table[i] = cid

    def _move(self, n):
        """Move the old table's next n slots over; drop the old table once all are."""
        old, table, mask, parent, names = (self._old, self._table, self._mask, self._parent,
                                           self._name)
        start = self._moved
        end = min(start + n, len(old))
        # slots below _moved count as gone (_pull passes over them): nothing is written back
        for cid in old[start:end]:
            if cid and cid != _GONE:
                j = hash((parent[cid], names[cid])) & mask  # _put, inline: every entry's path
                while table[j]:
                    j = (j + 1) & mask
                table[j] = cid
        self._moved = end
        if end == len(old):
            self._old = None

    def _pull(self, nid, name):
        """Move (nid, name) over from the old table if it is still there."""
        old, parent, names, moved = self._old, self._parent, self._name, self._moved
        mask = len(old) - 1
        i = hash((nid, name)) & mask
        while True:
            cid = old[i]
            if not cid:
                return
            if i >= moved and cid != _GONE and parent[cid] == nid and names[cid] == name:
                old[i] = _GONE
                self._put(cid)
                return
            i = (i + 1) & mask
