"""The top-down walk: which layers hold a merged name, as one resolution record (a Node).

Rules (those of the kernel's fs/overlayfs/namei.c):

* layers are searched top-down; the first that holds the name decides its type;
* a whiteout stops the search: the name does not exist below it;
* a non-directory is served alone: it is not merged with anything below, and a non-directory
  found below a directory stops the merge;
* a directory merges with the directories of the same name below it until one is opaque;
* a directory carrying a redirect is continued in lower layers at the redirected path: a relative
  redirect is a name in the parent's lower directories, an absolute one a path from each lower
  layer's root.
"""
import errno
import os

from .layers import WHITEOUT, Hit, join

NAME_MAX = 255
# A directory merged from this many lower layers or more gets an index of which of them hold
# each name, so a lookup there costs the layers that have the name, not all of them.
INDEX_MIN = 4


class Node:
    """A resolved merged path: the (layer, relpath, hit) components that make it, top first.
    One is cached per path resolved: the components are a tuple (a list of one component
    costs 40 bytes more), as they never change once resolved."""
    __slots__ = ("comps", "is_dir", "ino", "_map", "_names")

    def __init__(self, comps):
        self.comps = tuple(comps)
        self.is_dir = comps[0][2].is_dir
        self.ino = None
        self._map = None
        self._names = None

    @property
    def top(self):
        return self.comps[0]

    @property
    def in_upper(self):
        return self.comps[0][0].writable

    @property
    def has_lower(self):
        return any(not c[0].writable for c in self.comps)

    def first_lower(self):
        for c in self.comps:
            if not c[0].writable:
                return c
        return None

    def lower_names(self):
        """{name: (index of each lower layer whose directory lists it, whiteouts included)}
        for a directory merged from INDEX_MIN lower layers or more, else None. Built once:
        lower layers do not change under a mount, and the upper is not in it."""
        names = self._names
        if names is None:
            lowers = [c for c in self.comps if not c[0].writable]
            if len(lowers) < INDEX_MIN:
                names = False
            else:
                names = {}
                for layer, rel, _hit in lowers:
                    # a tuple, the same for every name only this layer lists (most names):
                    # a list per name cost ~90 bytes each
                    only = (layer.index,)
                    for n, _code in layer.list(rel):
                        held = names.get(n)
                        names[n] = only if held is None else held + only
            self._names = names
        return names or None

    def rel_in(self, index):
        """This directory's relative path in layer `index`, or None if the layer is not merged."""
        m = self._map
        if m is None:
            m = self._map = {c[0].index: c[1] for c in self.comps}
        return m.get(index)


def err(code, path=None):
    return OSError(code, os.strerror(code), path)


def split(path):
    parent, _, name = path.rpartition("/")
    return parent or "/", name


def check_name(name):
    if len(os.fsencode(name)) > NAME_MAX:
        raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), name)


def resolve_root(layers):
    """The root merges every layer (opaque markers on layer roots are ignored, as the kernel does)."""
    comps = []
    for layer in layers:
        st = layer.lstat("")
        comps.append((layer, "", Hit(st)))
    return Node(comps)


def probe(layer, prel, name, abs_path):
    """(rel, hit, stop): what one layer holds where the walk stands, at prel/name, or at
    abs_path once an absolute redirect was followed (stop: the walk met a whiteout, a
    non-directory or an opaque directory on the way, so layers below have nothing there)."""
    if abs_path is None:
        return join(prel, name), layer.find(prel, name), False
    hit, stop = layer.walk(abs_path)
    return abs_path, hit, stop


def resolve_child(layers, parent, name):
    """Node for `name` in the merged directory `parent`, or None when no layer has it."""
    comps = []
    cur_name = name
    abs_path = None
    first = parent.comps[0][0].index
    seq = layers[first:]
    index = parent.lower_names() if parent.is_dir else None
    if index is not None:
        # only the layers that list the name (and the upper, read live) can hold it
        seq = [layers[0]] if first == 0 and layers[0].writable else []
        seq += [layers[i] for i in index.get(name, ())]
    i = 0
    while i < len(seq):
        layer = seq[i]
        i += 1
        prel = parent.rel_in(layer.index) if abs_path is None else None
        if prel is None and abs_path is None:
            continue
        rel, hit, stop = probe(layer, prel, cur_name, abs_path)
        if hit is None:
            if stop:
                break
            continue
        if hit is WHITEOUT:
            break
        if not hit.is_dir:
            if not comps:
                comps.append((layer, rel, hit))
            break
        comps.append((layer, rel, hit))
        if hit.opaque or stop:
            break
        if hit.redirect:
            cur_name, abs_path = follow_redirect(hit.redirect, cur_name, abs_path)
            if index is not None:  # another name below: every layer again
                seq, i, index = layers[layer.index + 1:], 0, None
    return Node(comps) if comps else None


def follow_redirect(r, cur_name, abs_path):
    """(cur_name, abs_path) to search the layers below a directory whose redirect is r."""
    if r.startswith("/"):
        return cur_name, r.strip("/")
    if "/" not in r:
        if abs_path is None:
            return r, None
        # relative to where the absolute redirect led (ovl_check_redirect)
        return cur_name, join(abs_path.rpartition("/")[0], r)
    return cur_name, abs_path


def lower_entry(layers, parent, name):
    """(layer, hit) of the first lower layer (below the upper) of `parent` that still shows
    `name`, or None: what a whiteout of the name hides. Decides whiteouts."""
    index = parent.lower_names()
    if index is not None:
        for i in index.get(name, ()):
            hit = layers[i].find(parent.rel_in(i), name)
            if hit is not None:
                return None if hit is WHITEOUT else (layers[i], hit)
        return None
    for layer, prel, _hit in parent.comps:
        if layer.writable:
            continue
        hit = layer.find(prel, name)
        if hit is None:
            continue
        return None if hit is WHITEOUT else (layer, hit)
    return None


def lower_positive(layers, parent, name):
    """Does a lower layer (below the upper) of `parent` still show `name`?"""
    return lower_entry(layers, parent, name) is not None
