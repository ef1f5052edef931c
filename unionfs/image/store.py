"""The image store on disk: layers by DiffID, images by config digest, tags, writable uppers.

Where: ``--store DIR``, else ``$UNIONFS_STORE``, else ``/var/lib/unionfs`` for root and
``$XDG_DATA_HOME/unionfs`` (``~/.local/share/unionfs``) for other users.

Layout::

    STORE/
      lock                       flock(2): every change to the store holds it exclusively
      repositories.json          {"name:tag": "sha256:<image id>"}
      layers/<hex>/root/         the extracted layer, used as a unionfs lower layer as it is
      layers/<hex>/layer.tar     the uncompressed layer tar, byte for byte (its sha256 is <hex>)
      layers/<hex>/meta.json     {"diff_id", "size" (file content bytes), "tar_size", "owners":
                                 "xattr" if extracted without root: owners, modes, device nodes
                                 in override xattrs (image/extract.py), else "real"}
      layers/<hex>/blob          a pulled layer not used yet ("packed"): the blob as the registry
                                 served it, its digest and size checked; meta.json is then
                                 {"diff_id", "packed": true, "blob_digest", "blob_size",
                                 "media_type", "added"}. Its first use unpacks it (unpack.py)
                                 into the three entries above, DiffID and entries checked
      images/<hex>/config.json   the image config, byte for byte (the image id is its sha256)
      images/<hex>/meta.json     {"layers": [DiffIDs bottom first], "added"}
      uppers/<name>/upper, work  writable container layers (``image mount --rw``)
      uppers/<name>/meta.json    {"image", "created"}
      mounts.json                live image mounts {mountpoint: {"image", "upper", "pid"}}
      tmp/                       imports and commits in progress (renamed into place when done)
      registry/                  what pulls and pushes keep beside the store (remotes.py):
                                 blobs.json, downloads/ (resumable blobs), work/ (layers a pull
                                 is building outside the lock); ``image prune`` removes what no
                                 running pull holds

Everything is created in ``tmp/`` and renamed into place, so a reader never sees half a layer or
half an image; whatever ``tmp/`` holds when the lock is free is debris of an interrupted run and
is removed by the next import, commit or prune.
"""
import contextlib
import datetime
import fcntl
import json
import os
import re
import tempfile

from . import digest
from .errors import ImageError
from .files import read_json, rmtree, write_json_atomic

_ID_PREFIX = re.compile(r"^(sha256:)?([0-9a-f]{3,64})$")
_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:-]*$")
_UPPER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
SEARCH_PREFIXES = ("localhost/", "docker.io/library/", "docker.io/")
_LAYER_ROOT = re.compile(r".*/layers/([0-9a-f]{64})/root")


def default_root():
    env = os.environ.get("UNIONFS_STORE")
    if env:
        return env
    if os.geteuid() == 0:
        return "/var/lib/unionfs"
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "unionfs")


def layer_source(root):
    """How reports name a layer directory: the DiffID of a store layer (any
    STORE/layers/<hex>/root), else the directory (given to a mount's observer)."""
    m = _LAYER_ROOT.fullmatch(os.path.normpath(root))
    return "sha256:" + m.group(1) if m else root


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def normalize_ref(ref):
    """'name' -> 'name:latest'; digests (name@sha256:...) are not supported."""
    if not isinstance(ref, str) or not ref or "@" in ref or not _REF.match(ref):
        raise ImageError("invalid image name %r (expected NAME[:TAG])" % (ref,))
    last = ref.rpartition("/")[2]
    if ":" not in last:
        ref += ":latest"
    elif last.endswith(":"):
        raise ImageError("invalid image name %r: empty tag" % ref)
    return ref


def split_ref(ref):
    repo, _, tag = ref.rpartition(":")
    return repo, tag


def _layer_size(meta):
    return meta.get("size", meta.get("blob_size", 0))


class Image:
    """An image in the store."""

    def __init__(self, store, hexid):
        self.store = store
        self.hex = hexid
        self.id = "sha256:" + hexid
        self.dir = os.path.join(store.root, "images", hexid)
        with open(os.path.join(self.dir, "config.json"), "rb") as f:
            self.config_bytes = f.read()
        self.config = json.loads(self.config_bytes)
        self.layers = list((self.config.get("rootfs") or {}).get("diff_ids") or [])

    @property
    def created(self):
        return self.config.get("created")

    def tags(self):
        return sorted(r for r, i in self.store.tags().items() if i == self.id)

    def layer_sizes(self):
        """File content bytes of each layer; of a packed layer (store.layer_packed), whose
        content is not known until it is unpacked, its compressed size."""
        return [_layer_size(self.store.layer_meta(d)) for d in self.layers]

    def size(self):
        return sum(self.layer_sizes())

    def owners_in_xattrs(self):
        """True if a layer was extracted without root: a mount must read its override xattrs."""
        return any(self.store.layer_meta(d).get("owners") == "xattr" for d in self.layers)

    def lower_dirs(self, progress=None):
        """The layer directories as unionfs lowers, top first; layers still packed (pulled,
        never used) are unpacked first (unpack.py)."""
        from .unpack import unpack
        unpack(self.store, self.layers, progress)
        return [self.store.layer_root(d) for d in reversed(self.layers)]


class Store:
    def __init__(self, root=None):
        self.root = os.path.abspath(root or default_root())

    def path(self, *parts):
        return os.path.join(self.root, *parts)

    def ensure(self):
        for d in ("", "layers", "images", "uppers", "tmp"):
            os.makedirs(self.path(d), exist_ok=True)
        os.chmod(self.root, 0o700)

    @contextlib.contextmanager
    def lock(self, shared=False):
        self.ensure()
        fd = os.open(self.path("lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def clean_tmp(self):
        """Debris of interrupted imports/commits (call with the lock held)."""
        tmp = self.path("tmp")
        for n in os.listdir(tmp):
            rmtree(os.path.join(tmp, n))

    def mkdtemp(self, prefix="op-"):
        return tempfile.mkdtemp(dir=self.path("tmp"), prefix=prefix)

    # ---- layers -------------------------------------------------------------------------------

    def layer_dir(self, diff_id):
        return self.path("layers", digest.parse(diff_id, "DiffID"))

    def layer_root(self, diff_id):
        return os.path.join(self.layer_dir(diff_id), "root")

    def layer_tar(self, diff_id):
        return os.path.join(self.layer_dir(diff_id), "layer.tar")

    def layer_blob(self, diff_id):
        return os.path.join(self.layer_dir(diff_id), "blob")

    def layer_packed(self, diff_id):
        """Whether the layer is a pulled blob not unpacked yet (it has no root/ or layer.tar)."""
        return self.layer_meta(diff_id).get("packed") is True

    def has_layer(self, diff_id):
        return os.path.isfile(os.path.join(self.layer_dir(diff_id), "meta.json"))

    def layer_meta(self, diff_id):
        return read_json(os.path.join(self.layer_dir(diff_id), "meta.json"), {})

    def layer_ids(self):
        d = self.path("layers")
        if not os.path.isdir(d):
            return []
        return ["sha256:" + n for n in sorted(os.listdir(d)) if len(n) == 64]

    # ---- images and tags ----------------------------------------------------------------------

    def tags(self):
        return read_json(self.path("repositories.json"), {}) or {}

    def set_tags(self, tags):
        self.ensure()
        write_json_atomic(self.path("repositories.json"), tags)

    def image_ids(self):
        d = self.path("images")
        if not os.path.isdir(d):
            return []
        return ["sha256:" + n for n in sorted(os.listdir(d))
                if len(n) == 64 and os.path.isfile(os.path.join(d, n, "config.json"))]

    def image(self, image_id):
        return Image(self, digest.parse(image_id, "image id"))

    def images(self):
        return [self.image(i) for i in self.image_ids()]

    def has_image(self, image_id):
        return os.path.isfile(self.path("images", digest.parse(image_id), "config.json"))

    def resolve(self, ref):
        """Image id for a name[:tag], a full id or a unique id prefix."""
        tags = self.tags()
        if "@" not in ref and _REF.match(ref or ""):
            full = normalize_ref(ref)
            if full in tags:
                return tags[full]
            for p in SEARCH_PREFIXES:
                if p + full in tags:
                    return tags[p + full]
            hits = sorted({i for r, i in tags.items() if r.endswith("/" + full)})
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                raise ImageError("image name %s is ambiguous: %s" % (ref, ", ".join(
                    sorted(r for r, i in tags.items() if r.endswith("/" + full)))))
        m = _ID_PREFIX.match(ref or "")
        if m:
            hits = [i for i in self.image_ids() if i[7:].startswith(m.group(2))]
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                raise ImageError("image id prefix %s is ambiguous" % ref)
        raise ImageError("no such image: %s" % ref)

    def get(self, ref):
        return self.image(self.resolve(ref))

    def add_image(self, config_bytes, src_dir=None):
        """Register an image config (its layers must be in the store). Returns the id."""
        image_id = digest.of_bytes(config_bytes)
        dest = self.path("images", image_id[7:])
        if os.path.isdir(dest):
            return image_id
        tmp = src_dir or self.mkdtemp("image-")
        with open(os.path.join(tmp, "config.json"), "wb") as f:
            f.write(config_bytes)
            f.flush()
            os.fsync(f.fileno())
        write_json_atomic(os.path.join(tmp, "meta.json"), {"added": now_iso()})
        os.rename(tmp, dest)
        return image_id

    def tag(self, ref, image_id):
        tags = self.tags()
        tags[normalize_ref(ref)] = image_id
        self.set_tags(tags)

    # ---- uppers and mounts ----------------------------------------------------------------------

    def upper_dir(self, name):
        if not _UPPER_NAME.match(name or ""):
            raise ImageError("invalid upper name %r (letters, digits, '_', '.', '-')" % (name,))
        return self.path("uppers", name)

    def uppers(self):
        d = self.path("uppers")
        if not os.path.isdir(d):
            return {}
        out = {}
        for n in sorted(os.listdir(d)):
            meta = read_json(os.path.join(d, n, "meta.json"))
            if meta:
                out[n] = meta
        return out

    def create_upper(self, name, image_id):
        d = self.upper_dir(name)
        if os.path.exists(d):
            raise ImageError("upper %s already exists" % name)
        tmp = self.mkdtemp("upper-")
        os.mkdir(os.path.join(tmp, "upper"), 0o755)
        os.mkdir(os.path.join(tmp, "work"), 0o700)
        write_json_atomic(os.path.join(tmp, "meta.json"), {"image": image_id, "created": now_iso()})
        os.rename(tmp, d)
        return d

    def live_mounts(self):
        """{mountpoint: record} of image mounts that are still mounted."""
        from ..mounts import mounted_paths
        recs = read_json(self.path("mounts.json"), {}) or {}
        mounted = mounted_paths()
        return {m: r for m, r in recs.items() if m in mounted}

    def record_mount(self, mountpoint, record):
        recs = self.live_mounts()
        recs[mountpoint] = record
        write_json_atomic(self.path("mounts.json"), recs)

    def forget_stale_mounts(self):
        write_json_atomic(self.path("mounts.json"), self.live_mounts())

    def images_in_use(self):
        """{image id: reason} for images that live mounts or uppers use."""
        used = {}
        for mnt, r in self.live_mounts().items():
            used.setdefault(r.get("image"), "mounted on %s" % mnt)
        for name, meta in self.uppers().items():
            used.setdefault(meta.get("image"), "used by upper %s" % name)
        return used

    # ---- removal ------------------------------------------------------------------------------

    def remove_image(self, image_id):
        d = self.path("images", digest.parse(image_id))
        tmp = self.mkdtemp("rm-")
        os.rename(d, os.path.join(tmp, "image"))
        rmtree(tmp)

    def gc_layers(self):
        """Remove layers no image uses. Returns [(diff_id, bytes)]."""
        used = set()
        for img in self.images():
            used.update(img.layers)
        removed = []
        for lid in self.layer_ids():
            if lid not in used:
                size = _layer_size(self.layer_meta(lid))
                tmp = self.mkdtemp("rm-")
                os.rename(self.layer_dir(lid), os.path.join(tmp, "layer"))
                rmtree(tmp)
                removed.append((lid, size))
        return removed
