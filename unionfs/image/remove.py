"""Removing from the store: ``image rm`` (untag, then remove what no tag or mount keeps) and
``image prune`` (untagged unused images, unused layers, debris). Each is a generator of what it
did, so the command prints every step as it happens and an error stops it there."""
from . import digest, remotes
from .errors import ImageError
from .store import SEARCH_PREFIXES, normalize_ref


def _named_tag(ref, mine):
    """Which of the image's tags (mine) the user named with ref; None: removed by id."""
    try:
        full = normalize_ref(ref)
    except ImageError:
        return None
    for cand in [full] + [p + full for p in SEARCH_PREFIXES]:
        if cand in mine:
            return cand
    hits = [t for t in mine if t.endswith("/" + full)]
    return hits[0] if len(hits) == 1 else None


def remove(store, refs, force=False):
    """Untag and remove images. Yields ("untagged", tag), ("deleted", image_id),
    ("kept", image_id, why) for an untagged image a mount uses, ("deleted_layer", diff_id, size)."""
    with store.lock():
        for ref in refs:
            image_id = store.resolve(ref)
            tags = store.tags()
            mine = [t for t, i in tags.items() if i == image_id]
            named = _named_tag(ref, mine)
            if named is None and len(mine) > 1 and not force:
                raise ImageError("image %s has several tags (%s): remove them by name, or use -f"
                                 % (digest.short(image_id), ", ".join(sorted(mine))))
            gone = [named] if named else mine
            for t in gone:
                del tags[t]
                yield "untagged", t
            store.set_tags(tags)
            if any(i == image_id for i in tags.values()):
                continue
            used = store.images_in_use().get(image_id)
            if used:
                yield "kept", image_id, used
                continue
            store.remove_image(image_id)
            yield "deleted", image_id
        for lid, size in store.gc_layers():
            yield "deleted_layer", lid, size


def prune(store):
    """Remove untagged unused images, unused layers and debris. Yields ("deleted", image_id),
    ("deleted_layer", diff_id, size), and last ("reclaimed", bytes)."""
    with store.lock():
        store.clean_tmp()
        tagged = set(store.tags().values())
        used = store.images_in_use()
        for img in store.images():
            if img.id not in tagged and img.id not in used:
                store.remove_image(img.id)
                yield "deleted", img.id
        total = 0
        for lid, size in store.gc_layers():
            yield "deleted_layer", lid, size
            total += size
        total += remotes.prune(store)     # after the layers: their blobs.json entries go too
        yield "reclaimed", total
