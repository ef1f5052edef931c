"""``unionfs image push``: an image of the store to a registry.

Layers go up ``jobs`` (3) at once, as pull's downloads do; for each, cheapest first: a blob
the target repository already has (HEAD of a digest remembered in remotes.py, or of the freshly
compressed layer); a cross-repository mount from another repository of the same registry known
to hold it; else a packed layer's gzip blob as it was pulled, or the layer's tar,
gzip-compressed deterministically (save.py's compressor, so the same layer always gives the
same digest), is uploaded (one PUT, or PATCH chunks for large layers). The first failure stops the others (at
their next chunk; their upload sessions are cancelled) and is the one line reported. Then, when
every layer is there, the config, then the manifest, OCI (default) or Docker schema 2
(``--format v2s2``), whose digest is returned.
"""
import concurrent.futures
import json
import os
import sys
import tempfile
import threading

from . import compression, reference, remotes
from .errors import ImageError
from ..messages import human
from .registry import DOCKER_MANIFEST, OCI_MANIFEST, Client
from .save import _compress, _file_digest
from .unpack import unpack

FORMATS = {
    "oci": (OCI_MANIFEST, "application/vnd.oci.image.config.v1+json",
            "application/vnd.oci.image.layer.v1.tar+gzip"),
    "v2s2": (DOCKER_MANIFEST, "application/vnd.docker.container.image.v1+json",
             "application/vnd.docker.image.rootfs.diff.tar.gzip"),
}
GZIP_TYPES = ("application/vnd.oci.image.layer.v1.tar+gzip",
              "application/vnd.docker.image.rootfs.diff.tar.gzip")
CHUNK_SIZE = 32 << 20
JOBS = 3


class _Stopped(Exception):
    """Another layer's upload failed: this one gives up."""


def _terminal_lines(quiet):
    """docker's push lines, on a terminal only (quiet otherwise, as pull is)."""
    if quiet or not sys.stderr.isatty():
        return lambda msg: None
    return lambda msg: print(msg, file=sys.stderr)


def _reuse(client, ref, diff_id, known):
    """A descriptor of a blob already in (or mountable into) the target repository, or None."""
    for rec in known:
        if rec.get("registry") != ref.registry or rec.get("mediaType") not in GZIP_TYPES \
                or not isinstance(rec.get("size"), int):
            continue
        if rec.get("repository") == ref.repository:
            if client.blob_exists(ref.repository, rec["digest"]):
                return rec, "Layer already exists"
    for rec in known:
        if rec.get("registry") != ref.registry or rec.get("mediaType") not in GZIP_TYPES \
                or not isinstance(rec.get("size"), int) or rec.get("repository") == ref.repository:
            continue
        if client.blob_exists(ref.repository, rec["digest"]):
            return rec, "Layer already exists"
        if client.mount_blob(ref.repository, rec["digest"], rec["repository"]):
            return rec, "Mounted from %s" % rec["repository"]
    return None, None


def _packed_gzip(store, diff_id, tmp):
    """(a hard link in tmp of the blob of a packed layer (store.py), its digest) when the blob
    is gzip, which every manifest format takes as it is: pushed without unpacking or compressing
    again; else None. The link keeps the blob while a first use unpacks the layer meanwhile."""
    meta = store.layer_meta(diff_id)
    if meta.get("packed") is not True:
        return None
    link = os.path.join(tmp, diff_id[7:] + ".blob")
    try:
        os.link(store.layer_blob(diff_id), link)
    except FileNotFoundError:        # unpacked since
        return None
    with open(link, "rb") as f:
        if compression.detect(f.read(6)) == "gzip":
            return link, meta["blob_digest"]
    os.unlink(link)
    return None


def _push_layers(store, client, ref, image, layers, tmp, chunk_size, say, jobs):
    """{DiffID: blob record} for layers, each reused or uploaded, `jobs` at once."""
    stop = threading.Event()

    def check(*_):
        if stop.is_set():
            raise _Stopped()

    def one(diff_id):
        check()
        short = diff_id[7:19]
        rec, how = _reuse(client, ref, diff_id, remotes.known_blobs(store, diff_id))
        if rec is None:
            packed = _packed_gzip(store, diff_id, tmp)
            if packed is None:
                unpack(store, [diff_id])     # a packed zstd or plain tar layer: gzip'd below
                tar = store.layer_tar(diff_id)
                if not os.path.isfile(tar):
                    raise ImageError("layer %s of %s has no layer.tar in the store" % (short, image))
                blob = os.path.join(tmp, diff_id[7:] + ".gz")
                say("%s: Preparing" % short)
                _compress(tar, blob, "gzip")
                check()
                d = _file_digest(blob)
            else:
                blob, d = packed
            size = os.path.getsize(blob)
            rec = {"registry": ref.registry, "repository": ref.repository, "digest": d,
                   "size": size, "mediaType": GZIP_TYPES[0]}
            if client.blob_exists(ref.repository, d):
                how = "Layer already exists"
            else:
                client.upload_blob(ref.repository, d, blob, chunk_size, progress=check)
                how = "Pushed  %s" % human(size)
            os.unlink(blob)
        say("%s: %s" % (short, how))
        return rec

    ex = concurrent.futures.ThreadPoolExecutor(max(1, jobs))
    futures = {ex.submit(one, d): d for d in dict.fromkeys(layers)}   # a layer twice: once
    recs = {}
    try:
        # wait() in short steps: the main thread stays interruptible (Ctrl-C, SIGTERM)
        pending = set(futures)
        while pending:
            done, pending = concurrent.futures.wait(
                pending, timeout=0.2, return_when=concurrent.futures.FIRST_EXCEPTION)
            for f in done:
                recs[futures[f]] = f.result()      # the first failure ends the push
    except BaseException:
        stop.set()
        raise
    finally:
        ex.shutdown(wait=True, cancel_futures=True)
    return recs


def push(store, image, dest, fmt="oci", tls_verify=None, quiet=False, chunk_size=CHUNK_SIZE,
         client=None, say=None, jobs=JOBS):
    """Push the stored image to dest ('[REGISTRY/]REPO[:TAG]'); returns the manifest digest.
    say(line) gets docker's progress lines (default: stderr, when it is a terminal)."""
    say = say or _terminal_lines(quiet)
    if fmt not in FORMATS:
        raise ImageError("--format %s: expected oci or v2s2" % fmt)
    ref = reference.parse(dest)
    if ref.digest:
        raise ImageError("%s: push to a tag, not a digest" % dest)
    img = store.get(image)
    client = client or Client(ref.registry, api_host=ref.api_host, tls_verify=tls_verify)
    manifest_type, config_type, layer_type = FORMATS[fmt]
    say("The push refers to repository [%s]" % ref.name)
    with tempfile.TemporaryDirectory(prefix="push-", dir=_scratch(store)) as tmp:
        recs = _push_layers(store, client, ref, image, img.layers, tmp, chunk_size, say, jobs)
        cfg = img.config_bytes
        cfg_digest = img.id
        if not client.blob_exists(ref.repository, cfg_digest):
            path = os.path.join(tmp, "config.json")
            with open(path, "wb") as f:
                f.write(cfg)
            client.upload_blob(ref.repository, cfg_digest, path, chunk_size)
    descs = [{"mediaType": layer_type, "digest": recs[d]["digest"], "size": recs[d]["size"]}
             for d in img.layers]
    learned = [(d, dict(rec, registry=ref.registry, repository=ref.repository,
                        mediaType=GZIP_TYPES[0])) for d, rec in recs.items()]
    manifest = {"schemaVersion": 2, "mediaType": manifest_type,
                "config": {"mediaType": config_type, "digest": cfg_digest, "size": len(cfg)},
                "layers": descs}
    data = json.dumps(manifest, indent=3).encode()
    digest = client.put_manifest(ref.repository, ref.tag, data, manifest_type)
    with store.lock():
        remotes.remember(store, learned)
    say("%s: digest: %s size: %d" % (ref.tag, digest, len(data)))
    return digest


def _scratch(store):
    d = store.path("registry", "push")
    os.makedirs(d, mode=0o700, exist_ok=True)
    return d
