"""Pulled layers made into trees at their first use.

A pull stores each layer it downloads as the blob the registry served, its digest and size
checked (pull.py, store.py's "packed" layer), and registers the image: what ``skopeo copy`` or
containerd's content fetch do, so that a pull costs a download. The first thing that needs the
layer's files (a mount, a diff or commit on the image, an inspection, a save, ``image pull
--unpack``) unpacks it here with importer.fetch_layer, exactly as an import builds a layer: the
DiffID, the caps and every tar entry are checked, layer.tar and root/ written. A layer whose
content does not match its config's DiffID fails there, in one line, and stays packed.

Layers build in parallel in a workspace beside the store (remotes.workspace), outside the store
lock. Each then takes the place of its packed directory with one renameat2(RENAME_EXCHANGE) under
the lock: a reader finds the packed layer or the unpacked one, never half of either, and a crash
leaves one of them. An flock on the packed directory makes a second first use wait for the build
under way instead of repeating it.
"""
import concurrent.futures
import errno
import fcntl
import os
import threading

from . import archive, remotes
from ..core import sysutil
from .errors import ImageError
from .files import rmtree
from .importer import fetch_layer
from .progress import Progress


class _Total:
    """One progress line for builds running at once: fetch_layer's per-layer start and done
    calls are folded into one count of blob bytes read."""

    def __init__(self, progress, label, total):
        self.progress = progress
        self.lock = threading.Lock()
        progress.start(label, total)

    def start(self, label, total=None):
        pass

    def add(self, n):
        with self.lock:
            self.progress.add(n)

    def done(self, line=None):
        pass


def unpack(store, diff_ids, progress=None, jobs=None):
    """Unpack the packed layers among diff_ids (a no-op when none is). Returns the DiffIDs
    this call unpacked."""
    metas = {d: store.layer_meta(d) for d in dict.fromkeys(diff_ids)}
    packed = [d for d, m in metas.items() if m.get("packed") is True]   # store.layer_packed
    if not packed:
        return []
    progress = progress or Progress()
    total = sum(metas[d].get("blob_size") or 0 for d in packed)
    shown = _Total(progress, "Unpacking %d layer%s" % (len(packed), "s" if len(packed) > 1 else ""),
                   total)
    jobs = max(1, min(len(packed), jobs or os.cpu_count() or 2))
    try:
        with remotes.workspace(store, prefix="unpack-") as work:
            with concurrent.futures.ThreadPoolExecutor(jobs) as ex:
                futures = [ex.submit(_one, store, d, work, shown) for d in packed]
                made = [f.result() for f in futures]
    finally:
        progress.done()
    return [d for d, m in zip(packed, made) if m]


def _one(store, diff_id, work, progress):
    """Build one packed layer in work and swap it in; False when another process did first."""
    layer = store.layer_dir(diff_id)
    try:
        fd = os.open(layer, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ImageError("layer %s left the store (a prune?)" % diff_id) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)       # a concurrent first use finishes before this one looks
        meta = store.layer_meta(diff_id)
        if meta.get("packed") is not True:
            return False
        if os.fstat(fd).st_ino != os.stat(layer).st_ino:
            return False                     # swapped while this waited: already unpacked
        dest = os.path.join(work, "layer-" + diff_id[7:])
        lref = archive.LayerRef(archive.DirSource(layer), "blob", blob_digest=meta.get("blob_digest"),
                                size=meta.get("blob_size"), media_type=meta.get("media_type"))
        # the blob was hashed as it downloaded and has been in the store (mode 0700) since; its
        # size is checked again, its DiffID for the first time
        fetch_layer(lref, diff_id, dest, "layer %s" % diff_id, progress, blob_verified=True)
        with store.lock():
            try:
                st = os.stat(layer)
            except FileNotFoundError:
                raise ImageError("layer %s left the store while it was unpacked (a prune?)"
                                 % diff_id) from None
            if st.st_ino != os.fstat(fd).st_ino:
                return False
            _swap(dest, layer)
        rmtree(dest)                         # what is left of the packed directory
        return True
    finally:
        os.close(fd)


def _swap(dest, layer):
    """Put the unpacked layer built in dest in place of the packed one at layer; the packed
    one's remains end up in dest."""
    try:
        sysutil.renameat2(dest, layer, sysutil.RENAME_EXCHANGE)
        return
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
    # a filesystem without RENAME_EXCHANGE (NFS): the tree and the tar move in beside the blob,
    # then meta.json, whose rename is the moment the layer stops being packed. Before it, a
    # crash leaves a packed layer whose next unpack replaces the stale root/ and layer.tar.
    for name in ("root", "layer.tar"):
        path = os.path.join(layer, name)
        if os.path.lexists(path):
            os.rename(path, os.path.join(dest, "stale-" + name))
        os.rename(os.path.join(dest, name), path)
    os.rename(os.path.join(dest, "meta.json"), os.path.join(layer, "meta.json"))
    os.rename(os.path.join(layer, "blob"), os.path.join(dest, "blob"))
