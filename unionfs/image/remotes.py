"""What the store remembers about registries, beside the store proper (store.py's layout)::

    STORE/registry/blobs.json         {DiffID: [{"registry", "repository", "digest", "size",
                                        "mediaType"}]}: where a layer is known to live as a blob
    STORE/registry/downloads/<hex>    verified blobs of a pull in progress; <hex>.part a partial
                                      one, resumed with an HTTP Range request by the next pull
    STORE/registry/work/<name>/       layers a pull or an unpack is extracting, outside the store
                                      lock, until they are renamed into place; the pull holds an
                                      flock on the directory, so prune removes only dead ones

blobs.json lets a push skip uploading a layer the target registry already has (HEAD) or can link
from another repository (cross-repository mount), without recompressing it. It is a cache: losing
it costs only uploads. It is written under the store lock.
"""
import contextlib
import fcntl
import os
import tempfile

from .store import read_json, rmtree, write_json_atomic

MAX_PER_LAYER = 16


def _dir(store, *parts):
    return store.path("registry", *parts)


def downloads_dir(store):
    d = _dir(store, "downloads")
    os.makedirs(d, mode=0o700, exist_ok=True)
    return d


@contextlib.contextmanager
def workspace(store, prefix="pull-"):
    """A private directory on the store's filesystem for the layers a pull (or an unpack,
    unpack.py) builds, flock'ed while it runs and removed after it."""
    parent = _dir(store, "work")
    with store.lock():      # prune (under the lock) never sees it unlocked
        os.makedirs(parent, mode=0o700, exist_ok=True)
        d = tempfile.mkdtemp(dir=parent, prefix=prefix)
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield d
    finally:
        rmtree(d)
        os.close(fd)


def known_blobs(store, diff_id):
    return list((read_json(_dir(store, "blobs.json"), {}) or {}).get(diff_id) or [])


def remember(store, entries):
    """entries: [(diff_id, {"registry", "repository", "digest", "size", "mediaType"})]; call
    with the store lock held."""
    if not entries:
        return
    os.makedirs(_dir(store), mode=0o700, exist_ok=True)
    path = _dir(store, "blobs.json")
    data = read_json(path, {}) or {}
    for diff_id, rec in entries:
        lst = [r for r in data.get(diff_id) or []
               if (r.get("registry"), r.get("repository"), r.get("digest"))
               != (rec["registry"], rec["repository"], rec["digest"])]
        data[diff_id] = ([rec] + lst)[:MAX_PER_LAYER]
    write_json_atomic(path, data)


def _unused(path):
    """Whether no pull holds path (a download being written or imported, a work directory):
    every pull keeps an flock on what it is using."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def _size(path):
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
            except OSError:
                pass
    return total


def prune(store):
    """Leftovers of interrupted pulls: downloads and work directories no running pull holds,
    and blobs.json entries of layers the store no longer has. Call with the store lock held.
    Returns the bytes reclaimed."""
    total = 0
    for sub in ("downloads", "work"):
        d = _dir(store, sub)
        try:
            names = os.listdir(d)
        except FileNotFoundError:
            continue
        for n in names:
            p = os.path.join(d, n)
            if _unused(p):
                total += os.lstat(p).st_size if sub == "downloads" else _size(p)
                rmtree(p)
    path = _dir(store, "blobs.json")
    data = read_json(path, {}) or {}
    kept = {k: v for k, v in data.items() if store.has_layer(k)}
    if kept != data:
        write_json_atomic(path, kept)
    return total
