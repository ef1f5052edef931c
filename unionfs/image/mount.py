"""Mounting a stored image: its layers as the lowers (read-only), or over a writable upper kept
in the store; the mount recorded in the store; an image the store lacks pulled first when its
name says its registry; and unmounting."""
import os
import uuid

from .. import mount as mountmod
from ..spec import MountSpec, parse_options, validate
from . import digest, reference
from .errors import ImageError
from .files import rmtree
from .store import layer_source
from .uppers import claim_upper


def pull_if_missing(store, ref, tls_verify=None):
    """ref, or the tag (else id) of the image pulled for it when the store lacks it. Only a name
    that says its registry is pulled: a short name the store lacks stays an error rather than a
    surprise download from docker.io."""
    try:
        store.resolve(ref)
        return ref
    except ImageError:
        first, sep, _ = ref.partition("/")
        if not (sep and reference.is_domain(first)):
            raise
    from .pull import pull
    image_id, tag, _ = pull(store, ref, None, tls_verify, quiet=False)
    return tag or image_id


def mount_image(store, ref, mountpoint, options=(), rw=False, upper=None):
    """Mount image ref on mountpoint (-o options as for `unionfs mount`). With rw or an upper
    name, over that writable upper kept in the store (a new one named after the image unless
    named); returns the upper's name, or None for a read-only mount."""
    img = store.get(ref)
    lowers = img.lower_dirs()
    if not lowers:
        empty = store.path("empty")
        os.makedirs(empty, exist_ok=True)
        lowers = [empty]
    spec = MountSpec(lowers=lowers, mountpoint=mountpoint)
    parse_options(list(options), spec)
    _stored_owners(img, spec)
    name = created = None
    if rw or upper:
        name = upper or "%s-%s" % (img.hex[:12], uuid.uuid4().hex[:8])
        d, made = claim_upper(store, img, name)
        created = d if made else None
        spec.upper, spec.work = os.path.join(d, "upper"), os.path.join(d, "work")
    try:
        spec = validate(spec)
        pid = mountmod.mount(spec, layer_source)
    except BaseException:
        if created:   # an upper made for this mount only: not left behind by a failed mount
            rmtree(created)
        raise
    with store.lock():
        store.record_mount(spec.mountpoint, {"image": img.id, "upper": name, "pid": pid})
    return name


def _stored_owners(img, spec):
    """An image imported without root keeps owners, modes and device nodes in override xattrs
    (image/extract.py): its mounts read them (xattr_permissions=2, unless -o says otherwise), for
    root too. They are what the importing user wrote, so root may not mount such an image with
    suid or dev: a setuid-root file or a device node there is only as trusted as that user."""
    if not img.owners_in_xattrs():
        return
    if spec.xattr_permissions is None:
        spec.xattr_permissions = 2
    unsafe = sorted(o for o in ("suid", "dev") if o in spec.fuse)
    if unsafe:
        raise ImageError("image %s was imported without root (its owners and device nodes are "
                         "xattrs its importer wrote): -o %s refused" % (
                             digest.short(img.id), ",".join(unsafe)))


def umount_image(store, mountpoint):
    """Unmount an image mount and forget the store's records of mounts that are gone."""
    mountmod.umount(mountpoint)
    with store.lock():
        store.forget_stale_mounts()
