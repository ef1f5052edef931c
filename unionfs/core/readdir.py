"""Merged directory listings: each name once, top layer first, whiteouts removed; the walk of a
merged tree (`walk`); and the
union's listing of a directory with each entry's inode number and attributes (`ReaddirOps`), and
the snapshots readers continue by offset (`Listings`).

A listing is taken whole when a reader starts and served from that snapshot (`Listings`), so
offsets are stable for seekdir/telldir and a program may delete entries while it iterates. The
components of a merged directory already stop at the first opaque layer (namei.py), so opaque
directories need no special case here.
"""
import collections
import errno
import itertools
import stat
import threading

from .cache import NEGATIVE
from .layers import WH, join
from .namei import err, resolve_child, split

LISTINGS_KEPT = 200_000  # directory entries kept for listings a reader may continue


def merged_entries(node):
    """[(name, S_IFMT code)] of a merged directory, in layer order."""
    seen = set()
    out = []
    for layer, rel, _hit in node.comps:
        for name, code in layer.list(rel):
            if name in seen:
                continue
            seen.add(name)
            if code != WH:
                out.append((name, code))
    return out


def walk(layers, node, rel=""):
    """(relative path, Node, parent Node) of every name below the merged directory node,
    parents first."""
    for name, _code in sorted(merged_entries(node)):
        child = resolve_child(layers, node, name)
        if child is None:
            continue
        crel = join(rel, name)
        yield crel, child, node
        if child.is_dir:
            yield from walk(layers, child, crel)


def is_empty(node):
    """True when the merged directory shows no entry (whiteouts do not count)."""
    seen = set()
    for layer, rel, _hit in node.comps:
        for name, code in layer.list(rel):
            if name in seen:
                continue
            if code != WH:
                return False
            seen.add(name)
    return True


class ReaddirOps:
    """The merged listing with per-entry attributes, a mixin of `union.Union` (why: union.py's
    docstring); listings are cached by the union's resolution cache."""

    def listdir(self, path, plus=False):
        """[(name, S_IFMT, st_ino, full)] of a merged directory, '.' and '..' first; with plus,
        full is what getattr would return for the entry (readdirplus), else None."""
        node = self.resolve(path)
        if not node.is_dir:
            raise err(errno.ENOTDIR, path)
        parent = self.lookup(split(path)[0]) if path != "/" else node
        out = [(".", stat.S_IFDIR, self.ino_of(node), None),
               ("..", stat.S_IFDIR, self.ino_of(parent), None)]
        base = "" if path == "/" else path
        children = self.cache.get_listing(path)
        if children is None:
            gen = self.cache.generation
            children = []
            for name, code in merged_entries(node):
                # d_ino must equal st_ino: resolve each entry
                child = self._listed(base + "/" + name, node, name, gen)
                if child is None:
                    continue
                # what a lower layer serves cannot change while the listing is cached (a
                # copy-up or removal drops it): its attributes are taken once, and its entry
                # kept as a listing with plus serves it, so the listings share it
                fixed = None if child.in_upper else self._stat(base + "/" + name, child)
                if code == stat.S_IFREG and self.ids.override:  # maybe a device (ids.py)
                    shown = fixed or self._stat(base + "/" + name, child)
                    code = stat.S_IFMT(shown[0].st_mode)
                children.append((name, code, child, None) if fixed is None else
                                (name, code, fixed[1], fixed))
            self.cache.put_listing(path, children, gen)
        for entry in children:
            name, code, child, full = entry
            if full is not None:  # a lower entry: child is its st_ino
                out.append(entry if plus else (name, code, child, None))
                continue
            if plus:
                try:
                    full = self._stat(base + "/" + name, child)
                except FileNotFoundError:
                    continue  # removed while we listed
            out.append((name, code, self.ino_of(child), full if plus else None))
        return out

    def _listed(self, path, parent, name, gen):
        """The Node of an entry a listing shows (None: gone meanwhile). Directories and upper
        entries are cached as a lookup caches them; a lower non-directory is not: its listing
        entry keeps what is served of it (st_ino, attributes), and a walk of a million such
        paths kept a resolution each (~380 bytes) that only a later open could use, where
        resolving it again costs one lstat."""
        child = self.cache.get(path)
        if child is not None:
            return None if child is NEGATIVE else child
        child = resolve_child(self.layers, parent, name)
        self.observer.resolved(child)
        if child is not None and (child.is_dir or child.in_upper):
            self.cache.put(path, child, gen)
        return child


class Listings:
    """Listing snapshots, each named by a generation, for readers that hold no handle.

    A listing is taken whole when a reader starts at offset 0, and each entry's offset,
    (generation << 32) | (index + 1), names the listing it came from. A reader thus goes on
    with the same listing (stable for telldir/seekdir, and while it deletes entries as it
    goes), also one that another reader began (the FUSE server opens no directory: its
    `opendir` says why)."""

    def __init__(self):
        self._gens = itertools.count(1)
        self._listings = collections.OrderedDict()  # generation -> (gen, entries, plus)
        self._kept = 0
        self._lock = threading.Lock()

    def __len__(self):
        return len(self._listings)

    def at(self, offset, plus, take):
        """(generation, entries) of the listing an offset continues; `take()` makes a new one
        (offset 0, a generation no longer kept, or a plain listing continued with plus)."""
        listing = self._listing(offset >> 32) if offset else None
        if listing is None or (plus and not listing[2]):
            listing = (next(self._gens), take(), plus)
            self._keep(listing)
        return listing[:2]

    def _listing(self, gen):
        with self._lock:
            listing = self._listings.get(gen)
            if listing is not None:
                self._listings.move_to_end(gen)
            return listing

    def _keep(self, listing):
        """Listings stay findable by generation while a reader may go on with them; the least
        recently read go first beyond LISTINGS_KEPT entries in all (a reader whose listing went
        continues, by index, in a new one)."""
        with self._lock:
            self._listings[listing[0]] = listing
            self._kept += len(listing[1])
            while self._kept > LISTINGS_KEPT and len(self._listings) > 1:
                _gen, old = self._listings.popitem(last=False)
                self._kept -= len(old[1])
