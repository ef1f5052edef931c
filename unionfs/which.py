"""Which layers make a merged path, FUSE-free: the report behind ``unionfs which`` and the
``user.unionfs.*`` xattrs the daemon serves (``xattr``) and commands read (``read_report``).

The walk is the union's own (lookup.resolve_child: top-down, whiteouts, opaque directories,
non-directories stopping the merge, relative and absolute redirects), except that it does not stop:
what a stop hides is reported as ``hidden`` instead of left out. Each layer is searched at the name
the merged parent has there, so a path under a renamed (redirected) directory is followed into the
lower layers at the old name, exactly as the union serves it.

States of a layer entry (``state``): ``serves`` (what the path shows), ``merged`` (a lower
directory merged into it), ``whiteout`` (deleted here: hides every layer below), ``hidden`` (a copy
or marker that nothing shows, under a whiteout, an opaque directory or a non-directory).
``hides_below`` is true on the entry that ends the merge when something below it is hidden.

Virtual xattrs, read through the mount (never listed, never stored, not settable):
``user.unionfs.source`` (the serving layer as the union's observer names it: its directory, or
``sha256:<DiffID>`` for a layer of the image store) and ``user.unionfs.layers`` (the JSON report). ``NAME:child`` forms, read on a
directory, report its entry ``child`` even if it is deleted or is a symlink (the kernel allows
``user.*`` xattrs on regular files and directories only).
"""
import errno
import json
import os
import stat

from .core.layers import WHITEOUT, join
from .core.namei import follow_redirect, probe
from .errors import ObserveError

VERSION = 1
XATTR_PREFIX = "user.unionfs."
SOURCE = XATTR_PREFIX + "source"
LAYERS = XATTR_PREFIX + "layers"
XATTR_SIZE_MAX = 65536
_TYPES = {stat.S_IFDIR: "dir", stat.S_IFREG: "file", stat.S_IFLNK: "symlink",
          stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket", stat.S_IFCHR: "chardev",
          stat.S_IFBLK: "blockdev"}


def _err(code, path=None):
    return OSError(code, os.strerror(code), path)


def _walk_child(layers, parent, parent_rels, name):
    """[(layer, rel, hit, state, stops)] for `name` under a merged directory, and the child's
    directory rel in each layer that has one (hidden ones included).

    `parent` is the union's Node of the directory (None if it is not visible); `parent_rels` the
    directory's rel in layers where it exists but is hidden."""
    out, rels = [], {}
    cur_name, abs_path = name, None
    stopped = served = False
    for layer in layers:
        idx = layer.index
        walk_stop = False
        hidden = stopped
        prel = None
        if abs_path is None:
            prel = parent.rel_in(idx) if parent is not None else None
            if prel is None:
                prel = parent_rels.get(idx)
                hidden = True  # the parent is not merged from this layer
            if prel is None:
                continue
        rel, hit, walk_stop = probe(layer, prel, cur_name, abs_path)
        if hit is None:
            stopped = stopped or walk_stop
            continue
        stops = False
        if hidden:
            state = "hidden"
        elif hit is WHITEOUT:
            state, stops = "whiteout", True
        elif not hit.is_dir:
            state = "hidden" if served else "serves"
            stops = not served
            served = True
        else:
            state = "merged" if served else "serves"
            served = True
            stops = hit.opaque or walk_stop
            if hit.redirect:
                cur_name, abs_path = follow_redirect(hit.redirect, cur_name, abs_path)
        if hit is not WHITEOUT and hit.is_dir:
            rels[idx] = rel
        stopped = stopped or stops or state == "hidden" and not hidden
        out.append((layer, rel, hit, state, stops))
    return out, rels


def _lookup(union, path):
    try:
        return union.lookup(path)
    except OSError:
        return None


def layer_entries(union, path):
    """[(layer, rel, hit, state, stops)] for every layer with something at merged `path`."""
    node = union.root
    if path == "/":
        return [(l, rel, hit, "serves" if i == 0 else "merged", False)
                for i, (l, rel, hit) in enumerate(node.comps)]
    rels = {}
    parts = path.strip("/").split("/")
    cur = ""
    for i, name in enumerate(parts):
        entries, child_rels = _walk_child(union.layers, node, rels, name)
        if i == len(parts) - 1:
            return entries
        cur += "/" + name
        node = _lookup(union, cur)
        if node is not None and not node.is_dir:
            node = None
        rels = child_rels
    return []


def _type(hit):
    if hit is WHITEOUT:
        return "whiteout"
    return _TYPES.get(stat.S_IFMT(hit.st.st_mode), "unknown")


def report(union, path):
    """The ``which`` document (version 1) of a merged path."""
    entries = layer_entries(union, path)
    layers = []
    for n, (layer, rel, hit, state, stops) in enumerate(entries):
        e = {"index": layer.index, "role": "upper" if layer.writable else "lower",
             "dir": layer.root, "source": union.observer.layer_name(layer.root), "rel": rel,
             "state": state, "type": _type(hit), "hides_below": stops and n + 1 < len(entries)}
        if hit is not WHITEOUT:
            if e["type"] == "file":
                e["size"] = hit.st.st_size
            if hit.is_dir and hit.opaque:
                e["opaque"] = True
            if hit.is_dir and hit.redirect:
                e["redirect"] = hit.redirect
        layers.append(e)
    serving = next((e for e in layers if e["state"] == "serves"), None)
    return {"v": VERSION, "path": path, "source": serving["source"] if serving else None,
            "layer": serving["index"] if serving else None, "layers": layers}


def xattr(union, path, name):
    """Value of a ``user.unionfs.*`` xattr of a merged path (ENODATA for any other name)."""
    attr, sep, child = name.partition(":")
    if sep:
        if not child or "/" in child or child in (".", ".."):
            raise _err(errno.ENODATA, path)
        path = join(path.rstrip("/"), child) if path != "/" else "/" + child
    if attr not in (SOURCE, LAYERS):
        raise _err(errno.ENODATA, path)
    if not sep:
        union.resolve(path)  # ENOENT for a name that is not there
    doc = report(union, path)
    if attr == SOURCE:
        if doc["source"] is None:
            raise _err(errno.ENODATA, path)
        return os.fsencode(doc["source"])
    data = _dumps(doc)
    while len(data) > XATTR_SIZE_MAX and doc["layers"]:
        del doc["layers"][len(doc["layers"]) // 2:]
        doc["truncated"] = True
        data = _dumps(doc)
    return data


def _dumps(doc):
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8", "surrogateescape")


def read_report(full):
    """The report of a path, read through its mount's xattrs (what ``xattr`` above serves).
    Regular files and directories carry them; for anything else (symlinks, devices, deleted
    names) the parent is asked."""
    try:
        st = os.lstat(full)
        direct = (st.st_mode & 0o170000) in (0o100000, 0o040000)
    except FileNotFoundError:
        direct = False
    parent, name = os.path.split(full)
    try:
        if direct:
            data = os.getxattr(full, LAYERS, follow_symlinks=False)
        else:
            data = os.getxattr(parent, LAYERS + ":" + name)
    except OSError as e:
        if e.errno in (errno.ENODATA, errno.ENOTSUP):
            raise ObserveError("%s: the mount does not answer %s (not a unionfs mount, or an "
                               "older one)" % (full, LAYERS))
        raise
    return json.loads(data)
