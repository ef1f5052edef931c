"""The writable uppers kept in the store: listing them, claiming one for an image mount,
removing them, and finding the upper a diff or commit names (an image mount, a stored upper's
name, a mount of any unionfs, or an upper directory)."""
import os

from .. import mounts
from ..spec import split_escaped
from . import digest
from .errors import ImageError
from .files import rmtree


def upper_records(store):
    """[{name, image, tags, created, mounted_on}] of every stored upper."""
    live = {r.get("upper"): m for m, r in store.live_mounts().items() if r.get("upper")}
    records = []
    for name, meta in store.uppers().items():
        tags = []
        try:
            tags = store.image(meta["image"]).tags()
        except (ImageError, OSError, KeyError):
            pass
        records.append({"name": name, "image": meta.get("image"), "tags": tags,
                        "created": meta.get("created"), "mounted_on": live.get(name)})
    return records


def claim_upper(store, img, name):
    """The directory of upper name for a mount of img: (dir, True) if made now, (dir, False) if
    it exists, belongs to img and is not mounted."""
    with store.lock():
        d = store.upper_dir(name)
        if not os.path.isdir(d):
            store.create_upper(name, img.id)
            return d, True
        meta = store.uppers().get(name) or {}
        if meta.get("image") != img.id:
            raise ImageError("upper %s belongs to image %s, not %s" % (
                name, digest.short(meta.get("image") or "?"), digest.short(img.id)))
        for mnt, rec in store.live_mounts().items():
            if rec.get("upper") == name:
                raise ImageError("upper %s is already mounted on %s" % (name, mnt))
        return d, False


def remove_uppers(store, names):
    """Remove stored uppers that no mount uses; yields each name as it is removed."""
    with store.lock():
        live = {r.get("upper"): m for m, r in store.live_mounts().items()}
        for name in names:
            d = store.upper_dir(name)
            if not os.path.isdir(d):
                raise ImageError("no such upper: %s" % name)
            if name in live:
                raise ImageError("upper %s is mounted on %s: unmount it first" % (name, live[name]))
            tmp = store.mkdtemp("rm-")
            os.rename(d, os.path.join(tmp, "upper"))
            rmtree(tmp)
            yield name


class Target:
    """What a diff or commit works on: the upper dir, the lower dirs top first, the base Image
    (or None) and the stored upper's name (or None)."""

    def __init__(self, upper, lowers, image=None, name=None):
        self.upper, self.lowers, self.image, self.name = upper, lowers, image, name


def resolve_target(store, arg, lower=None, image_ref=None):
    """The Target of MNT | upper NAME | UPPER dir (lower, image_ref: for a bare upper dir)."""
    uppers = store.uppers()
    real = os.path.realpath(arg) if os.path.exists(arg) else None

    def from_upper(name):
        meta = uppers[name]
        img = store.image(meta["image"])
        return Target(os.path.join(store.upper_dir(name), "upper"), img.lower_dirs(), img, name)

    if real is not None and real in mounts.mounted_paths():
        rec = store.live_mounts().get(real)
        if rec is not None:
            if not rec.get("upper"):
                raise ImageError("%s is a read-only image mount: it has no changes" % real)
            return from_upper(rec["upper"])
        upper, lowers = mounts.upper_and_lowers(real)
        if upper is None:
            raise ImageError("%s is a read-only mount: it has no changes" % real)
        img = store.get(image_ref) if image_ref else None
        return Target(upper, lowers, img)
    if real is None and "/" not in arg and arg in uppers:
        return from_upper(arg)
    if real is None or not os.path.isdir(real):
        raise ImageError("%s: not a mountpoint, stored upper or directory" % arg)
    for name in uppers:
        d = os.path.realpath(store.upper_dir(name))
        if real in (d, os.path.join(d, "upper")):
            return from_upper(name)
    img = store.get(image_ref) if image_ref else None
    if lower:
        lowers = split_escaped(lower, ":")
    elif img is not None:
        lowers = img.lower_dirs()
    else:
        lowers = []
    return Target(real, lowers, img)
