"""Archive writing: ``image save`` as a docker-archive (``docker load``/``podman load``) or an
OCI image layout tar (``podman load``, ``skopeo copy oci-archive:``).

Layers are written uncompressed, byte for byte as they were imported or committed (the stored
``layer.tar``), so each layer's digest is its DiffID; or, with ``compress`` ('gzip' or 'zstd'),
compressed (deterministically: gzip without a name or time) into a scratch directory beside FILE,
the OCI descriptors then carrying the compressed blob's digest, size and media type. The config is written byte for byte, so
the image id is kept. Tags are recorded in ``manifest.json``/``repositories`` (docker) or as
``org.opencontainers.image.ref.name`` and ``io.containerd.image.name`` annotations (OCI). The
archive is written to a temporary name beside FILE and renamed when complete.
"""
import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile

from .compression import CHUNK, _zstd
from .errors import ImageError
from .store import SEARCH_PREFIXES, normalize_ref, split_ref
from .unpack import unpack

LAYER_MT = "application/vnd.oci.image.layer.v1.tar"
CONFIG_MT = "application/vnd.oci.image.config.v1+json"
MANIFEST_MT = "application/vnd.oci.image.manifest.v1+json"
INDEX_MT = "application/vnd.oci.image.index.v1+json"


COMPRESSIONS = ("gzip", "zstd")


class _Writer:
    def __init__(self, tar, store, compress=None, scratch=None):
        self.tar = tar
        self.done = set()
        self.store = store
        self.compress = compress
        self.scratch = scratch
        self._blobs = {}

    def layer(self, diff_id):
        """(file, digest, size, media type) of a layer's blob as the archive holds it."""
        b = self._blobs.get(diff_id)
        if b is None:
            tar = self.store.layer_tar(diff_id)
            if self.compress is None:
                b = (tar, diff_id, os.path.getsize(tar), LAYER_MT)
            else:
                path = os.path.join(self.scratch, diff_id[7:])
                _compress(tar, path, self.compress)
                b = (path, _file_digest(path), os.path.getsize(path),
                     LAYER_MT + "+" + self.compress)
            self._blobs[diff_id] = b
        return b

    def _ti(self, name, kind=tarfile.REGTYPE, size=0):
        ti = tarfile.TarInfo(name)
        ti.type = kind
        ti.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
        ti.mtime = 0
        ti.uname = ti.gname = ""
        ti.size = size
        return ti

    def dir(self, name):
        if name not in self.done:
            self.done.add(name)
            self.tar.addfile(self._ti(name, tarfile.DIRTYPE))

    def data(self, name, data):
        if name not in self.done:
            self.done.add(name)
            self.tar.addfile(self._ti(name, size=len(data)), io.BytesIO(data))

    def file(self, name, path):
        if name not in self.done:
            self.done.add(name)
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                self.tar.addfile(self._ti(name, size=size), f)


def _compress(src, dst, kind):
    with open(src, "rb") as fin, open(dst, "wb") as raw:
        if kind == "gzip":
            out = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0)
        else:
            out = _zstd().ZstdCompressor(level=3).stream_writer(raw, closefd=False)
        with out:
            shutil.copyfileobj(fin, out, CHUNK)


def _file_digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _json(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


def _docker(w, store, images):
    manifest = []
    repos = {}
    for img, tags in images:
        parent = ""
        layers = []
        for i, diff_id in enumerate(img.layers):
            lid = hashlib.sha256(("%s %s" % (parent, diff_id)).encode()).hexdigest()
            w.dir(lid)
            w.data(lid + "/VERSION", b"1.0")
            v1 = {"id": lid, "created": img.created or "1970-01-01T00:00:00Z",
                  "os": img.config.get("os", "linux")}
            if parent:
                v1["parent"] = parent
            if i == len(img.layers) - 1:
                for k in ("architecture", "config", "author"):
                    if k in img.config:
                        v1[k] = img.config[k]
            w.data(lid + "/json", _json(v1))
            w.file(lid + "/layer.tar", w.layer(diff_id)[0])
            layers.append(lid + "/layer.tar")
            parent = lid
        cfg_name = img.hex + ".json"
        w.data(cfg_name, img.config_bytes)
        manifest.append({"Config": cfg_name, "RepoTags": tags or None, "Layers": layers})
        for t in tags:
            repo, tag = split_ref(t)
            if parent:
                repos.setdefault(repo, {})[tag] = parent
    w.data("manifest.json", _json(manifest))
    w.data("repositories", _json(repos))


def _oci(w, store, images):
    w.dir("blobs")
    w.dir("blobs/sha256")
    w.data("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    index = {"schemaVersion": 2, "mediaType": INDEX_MT, "manifests": []}
    for img, tags in images:
        layers = []
        for diff_id in img.layers:
            path, blob_digest, size, media_type = w.layer(diff_id)
            w.file("blobs/sha256/" + blob_digest[7:], path)
            layers.append({"mediaType": media_type, "digest": blob_digest, "size": size})
        w.data("blobs/sha256/" + img.hex, img.config_bytes)
        m = _json({"schemaVersion": 2, "mediaType": MANIFEST_MT,
                   "config": {"mediaType": CONFIG_MT, "digest": img.id,
                              "size": len(img.config_bytes)},
                   "layers": layers})
        mdigest = "sha256:" + hashlib.sha256(m).hexdigest()
        w.data("blobs/sha256/" + mdigest[7:], m)
        for t in tags or [None]:
            desc = {"mediaType": MANIFEST_MT, "digest": mdigest, "size": len(m)}
            if t:
                desc["annotations"] = {"io.containerd.image.name": t,
                                       "org.opencontainers.image.ref.name": t}
            index["manifests"].append(desc)
    w.data("index.json", _json(index))


def save(store, refs, out, fmt="docker", compress=None):
    """Write the images named by refs (names keep their tag; ids are written untagged), the
    layers compressed with compress ('gzip', 'zstd') or not (None)."""
    if fmt not in ("docker", "oci"):
        raise ImageError("unknown format %r (docker or oci)" % fmt)
    if compress not in (None,) + COMPRESSIONS:
        raise ImageError("unknown compression %r (gzip or zstd)" % compress)
    if compress == "zstd":
        _zstd()
    chosen = {}
    order = []
    for ref in refs:
        image_id = store.resolve(ref)
        tags = [t for t, i in store.tags().items() if i == image_id]
        named = []
        try:
            full = normalize_ref(ref)
            for cand in [full] + [p + full for p in SEARCH_PREFIXES]:
                if cand in tags:
                    named = [cand]
                    break
            else:
                named = [t for t in tags if t.endswith("/" + full)][:1]
        except ImageError:
            pass
        if image_id not in chosen:
            chosen[image_id] = []
            order.append(image_id)
        for t in named:
            if t not in chosen[image_id]:
                chosen[image_id].append(t)
    images = [(store.image(i), chosen[i]) for i in order]
    unpack(store, [lid for img, _ in images for lid in img.layers])   # an archive holds tars
    d = os.path.dirname(os.path.abspath(out))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".%s.tmp-" % os.path.basename(out))
    scratch = tempfile.mkdtemp(dir=d, prefix=".%s.blobs-" % os.path.basename(out)) \
        if compress else None
    try:
        with os.fdopen(fd, "wb") as f:
            with tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
                w = _Writer(tar, store, compress, scratch)
                (_docker if fmt == "docker" else _oci)(w, store, images)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.rename(tmp, out)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    return images
