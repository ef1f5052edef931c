"""Verified, atomic import of an image archive into the store.

For every layer: the blob is read once, hashed as stored (checked against the manifest's digest and
size when the archive gives them), decompressed by magic bytes into ``layer.tar`` while hashed again
(checked against the config's DiffID) and checked against the import's Limits while it is
written (targuard.py: size, entries, header sizes), then extracted safely (extract.py). All of it
happens in a private directory under ``STORE/tmp``; only when every layer of every image in the
archive has passed are the new layers, then the images, then the tags renamed/written into place.
A failure or an interrupt (Ctrl-C, SIGTERM) before that point leaves the store as it was; one
during it undoes what it had added.

A registry pull builds its layers with fetch_layer as their blobs arrive, outside the store lock,
in a work directory of its own on the store's filesystem (pull.py), and hands them over as
Prepared layers: the import then only renames them into place under the lock.
"""
import os

from . import archive, compression
from .digest import HashingReader, HashingWriter
from .errors import ImageError, LimitError
from .progress import Progress
from .store import now_iso, normalize_ref, rmtree, write_json_atomic


class Prepared:
    """A layer fetch_layer already built and verified in dest (a directory of the caller's on the
    store's filesystem): the import renames it into place. Nothing is left to read, so
    verify_only has nothing to check when the store got the layer meanwhile."""

    blob_digest = None
    size = None

    def __init__(self, dest, path):
        self.dest = dest
        self.path = path


def _layer_name(rec_index, nrec, i, n, lref):
    pre = "image %d: " % (rec_index + 1) if nrec > 1 else ""
    return "%slayer %d/%d (%s)" % (pre, i + 1, n, lref.path)


def _verify_blob(lref, hr, what):
    if lref.blob_digest is not None and hr.digest() != lref.blob_digest:
        raise ImageError("%s: blob digest mismatch: expected %s, got %s" % (
            what, lref.blob_digest, hr.digest()))
    if lref.size is not None and hr.n != lref.size:
        raise ImageError("%s: blob size %d does not match the manifest's %d" % (what, hr.n, lref.size))


def _drain(f):
    while f.read(1 << 20):
        pass


class _VerifiedReader(HashingReader):
    """A blob this process has just verified (a registry download, pull.py): counted, not hashed
    a second time."""

    def __init__(self, f, on_read, blob_digest):
        super().__init__(f, on_read)
        self.blob_digest = blob_digest

    def read(self, size=-1):
        data = self.f.read(size)
        if data:
            self.n += len(data)
            if self.on_read:
                self.on_read(len(data))
        return data

    def digest(self):
        return self.blob_digest


def fetch_layer(lref, diff_id, dest, what, progress, limits=None, blob_verified=False):
    """Build dest/{layer.tar, root/, meta.json} for one layer, verifying everything.
    blob_verified: the caller has just checked the blob against lref.blob_digest (and keeps
    it from changing), so it is not hashed again; its size and DiffID still are checked."""
    # here, not at the top: a pull, which imports this module, builds no layer (unpack.py)
    # and starts ~15 ms sooner without them
    from . import extract
    from .targuard import Limits, TarGuard
    limits = limits or Limits()
    os.mkdir(dest, 0o700)
    tar_path = os.path.join(dest, "layer.tar")
    total = None
    try:
        total = lref.size if lref.size is not None else lref.blob_size()
    except (OSError, ImageError):
        pass
    progress.start(what, total)
    src = lref.open()
    try:
        hr = (_VerifiedReader(src, progress.add, lref.blob_digest)
              if blob_verified and lref.blob_digest else HashingReader(src, progress.add))
        with open(tar_path, "wb") as out:
            hw = HashingWriter(out)
            guard = TarGuard(hw, what, limits, max_size=limits.max_layer_size)
            try:
                kind = compression.decompress(hr, guard, what=what)
            except LimitError:
                raise               # over a cap: reading on is what the cap is there to stop
            except ImageError:
                _drain(hr)          # a bad digest explains a corrupt stream better
                _verify_blob(lref, hr, what)
                raise
            out.flush()
            os.fsync(out.fileno())
    finally:
        src.close()
    _verify_blob(lref, hr, what)
    if hw.digest() != diff_id:
        raise ImageError("%s: DiffID mismatch: the config says %s, the layer is %s" % (
            what, diff_id, hw.digest()))
    root = os.path.join(dest, "root")
    os.mkdir(root, 0o755)
    res = extract.extract_tar(tar_path, root, what=what)
    write_json_atomic(os.path.join(dest, "meta.json"), {
        "diff_id": diff_id, "size": res.size, "tar_size": hw.n, "entries": res.entries,
        "compression": kind or "none", "blob_digest": hr.digest(), "added": now_iso(),
        "owners": res.owners})
    progress.done()
    return res


def verify_only(lref, what, progress):
    """A layer the store already has: still check the archive's blob is what it claims."""
    if lref.blob_digest is None and lref.size is None:
        return
    progress.start(what + " (already stored)")
    src = lref.open()
    try:
        hr = HashingReader(src, progress.add)
        _drain(hr)
    finally:
        src.close()
    _verify_blob(lref, hr, what)
    progress.done()


def import_archive(store, path, tags=(), progress=None, log=None, platform=None, limits=None,
                   records=None):
    """Import every image in the archive at path (of a multi-platform image, the one for
    platform, 'OS/ARCH[/VARIANT]', default this host's), within limits (targuard.Limits).
    Returns [(image id, [tags])]. records: [archive.ImageRecord] read elsewhere (a registry
    pull) instead of path's."""
    from .targuard import Limits
    progress = progress or Progress()
    limits = limits or Limits()
    extra_tags = [normalize_ref(t) for t in tags]
    with store.lock():
        store.clean_tmp()
        work = store.mkdtemp("import-")
        added = []   # what was renamed into place, for undo
        try:
            source = (archive.open_source(path, scratch=work, limits=limits)
                      if records is None else None)
            try:
                if source is not None:
                    records = archive.read_images(source, platform)
                if extra_tags and len(records) != 1:
                    raise ImageError("--tag needs an archive with one image (%s has %d)" % (
                        path, len(records)))
                new_layers = {}
                for ri, rec in enumerate(records):
                    for i, (lref, diff_id) in enumerate(zip(rec.layers, rec.diff_ids)):
                        what = _layer_name(ri, len(records), i, len(rec.layers), lref)
                        if store.has_layer(diff_id) or diff_id in new_layers:
                            verify_only(lref, what, progress)
                            continue
                        if isinstance(lref, Prepared):
                            new_layers[diff_id] = lref.dest
                            continue
                        dest = os.path.join(work, "layer-" + diff_id[7:])
                        fetch_layer(lref, diff_id, dest, what, progress, limits)
                        new_layers[diff_id] = dest
            finally:
                if source is not None:
                    source.close()
            # everything verified: put it in place
            for diff_id, dest in new_layers.items():
                final = store.layer_dir(diff_id)
                os.rename(dest, final)
                added.append(final)
            results = []
            tagmap = store.tags()
            for rec in records:
                existed = store.has_image(rec.config_digest)
                image_id = store.add_image(rec.config_bytes)
                if not existed:
                    added.append(store.path("images", image_id[7:]))
                names = [normalize_ref(t) for t in rec.tags] + extra_tags
                for t in names:
                    tagmap[t] = image_id
                results.append((image_id, names))
            store.set_tags(tagmap)
            added = []
            if log:
                for image_id, names in results:
                    log("imported %s%s" % (image_id, (" as " + ", ".join(names)) if names else ""))
            return results
        except BaseException:
            progress.done()
            for p in reversed(added):
                rmtree(p)
            raise
        finally:
            rmtree(work)
