"""The layers of what is inspected, bottom first, with what the image config says of each.

A stack comes from an image in the store (``from_image``), from a mount (``from_mount``: an image
mount recorded in the store, with its writable upper as the top layer, or any unionfs mount whose
daemon names its layers), or from plain layer directories (``from_dirs``); ``open_target`` takes
a command's IMAGE|MNT argument. Layers are numbered from 1 (the base) upwards, as ``--layer N``
takes them.
"""
import os
from dataclasses import dataclass, field

from .. import mounts
from .layerindex import InspectError, LayerIndex


@dataclass
class LayerInfo:
    """One layer of a stack (the JSON ``layers[]`` record)."""
    number: int               # 1 = the base layer
    diff_id: str = None       # sha256:... for an image layer; None for a directory or an upper
    created_by: str = ""
    created: str = None
    comment: str = ""
    size: int = 0             # regular-file content bytes (hard links once)
    entries: int = 0          # names shipped (whiteouts and markers not counted)
    whiteouts: int = 0
    dir: str = ""
    upper: bool = False       # the writable layer of a mount (uncommitted changes)

    def to_dict(self):
        return {"number": self.number, "diff_id": self.diff_id, "created_by": self.created_by,
                "created": self.created, "comment": self.comment, "size": self.size,
                "entries": self.entries, "whiteouts": self.whiteouts, "dir": self.dir,
                "upper": self.upper}


@dataclass
class Stack:
    """Layers bottom first: infos[i] describes indexes[i]."""
    name: str
    image_id: str = None
    infos: list = field(default_factory=list)
    indexes: list = field(default_factory=list)
    cache: dict = None        # root -> LayerIndex, shared by stacks that share layers

    def add(self, root, **info):
        idx = self.cache.get(root) if self.cache is not None else None
        if idx is None:
            idx = LayerIndex.read(root)
            if self.cache is not None:
                self.cache[root] = idx
        n = len(self.infos) + 1
        self.infos.append(LayerInfo(number=n, size=idx.content_bytes(), entries=len(idx.entries),
                                    whiteouts=len(idx.whiteouts), dir=root, **info))
        self.indexes.append(idx)

    def __len__(self):
        return len(self.indexes)

    def check_layer(self, n):
        """The 0-based index of layer number n (1-based), or InspectError."""
        if not isinstance(n, int) or not 1 <= n <= len(self.indexes):
            raise InspectError("%s has no layer %s (layers are 1 to %d, the base is 1)"
                               % (self.name, n, len(self.indexes)))
        return n - 1


def layer_history(config, nlayers):
    """For each of the nlayers layers (bottom first), the image config's history entry that made
    it (entries marked empty_layer made no layer); {} where the history does not say."""
    hist = [h for h in (config.get("history") or []) if not h.get("empty_layer")]
    return [hist[i] if i < len(hist) else {} for i in range(nlayers)]


def from_image(store, ref, cache=None):
    """The stack of an image in the store (ref: name, id or id prefix). Stacks given the same
    cache dict read a layer they share once."""
    img = store.get(ref)
    from ..image.unpack import unpack
    unpack(store, img.layers)
    tags = img.tags()
    st = Stack(name=tags[0] if tags else img.hex[:12], image_id=img.id, cache=cache)
    for diff_id, h in zip(img.layers, layer_history(img.config, len(img.layers))):
        st.add(store.layer_root(diff_id), diff_id=diff_id, created_by=h.get("created_by", ""),
               created=h.get("created"), comment=h.get("comment", ""))
    return st


def from_dirs(dirs, name="layers", upper=None):
    """A stack of plain layer directories, bottom first (+ an upper in the kernel's format)."""
    st = Stack(name=name)
    for d in dirs:
        st.add(d)
    if upper:
        st.add(upper, upper=True, created_by="(uncommitted changes)")
    return st


def open_target(store, target, cache=None):
    """The stack of an image mount (a mountpoint) or of an image in the store."""
    if os.path.isdir(target):
        real = os.path.realpath(target)
        if real in unionfs_mounts():
            return from_mount(store, real)
    return from_image(store, target, cache)


def unionfs_mounts():
    """The mountpoints of every live unionfs mount."""
    return {m.mountpoint for m in mounts.unionfs_mounts()}


def mount_of(path, mounts):
    """(mountpoint, path inside it with a leading '/') for a path under one of mounts, or
    (None, None)."""
    p = os.path.abspath(path)
    rest = []
    while True:
        # a symlink inside a mount may point at another mount: only real directories count
        real = None if os.path.islink(p) else os.path.realpath(p)
        if real in mounts:
            return real, "/" + "/".join(reversed(rest))
        parent, base = os.path.split(p)
        if parent == p:
            return None, None
        rest.append(base)
        p = parent


def from_mount(store, mnt):
    """The stack a mount shows: an image mount (image layers + its upper) or a unionfs mount
    whose daemon names its layers in its control directory (unionfs/mounts.py)."""
    rec = store.live_mounts().get(mnt)
    if rec is not None:
        st = from_image(store, rec["image"])
        if rec.get("upper"):
            upper = os.path.join(store.upper_dir(rec["upper"]), "upper")
            st.add(upper, upper=True, created_by="(uncommitted changes in upper %s)" % rec["upper"])
        return st
    try:
        upper, lowers = mounts.upper_and_lowers(mnt)
    except mounts.MountsError as e:
        raise InspectError(str(e))
    return from_dirs(list(reversed(lowers)), name=mnt, upper=upper)
