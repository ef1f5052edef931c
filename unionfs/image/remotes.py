"""What the store remembers about registries, beside the store proper (store.py's layout)::

    STORE/registry/blobs.json         {DiffID: [{"registry", "repository", "digest", "size",
                                        "mediaType"}]}: where a layer is known to live as a blob
    STORE/registry/downloads/<hex>    verified blobs of a pull in progress; <hex>.part a partial
                                      one, resumed with an HTTP Range request by the next pull

blobs.json lets a push skip uploading a layer the target registry already has (HEAD) or can link
from another repository (cross-repository mount), without recompressing it. It is a cache: losing
it costs only uploads. It is written under the store lock.
"""
import os

from .store import read_json, write_json_atomic

MAX_PER_LAYER = 16


def _dir(store, *parts):
    return store.path("registry", *parts)


def downloads_dir(store):
    d = _dir(store, "downloads")
    os.makedirs(d, mode=0o700, exist_ok=True)
    return d


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
