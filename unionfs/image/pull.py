"""``unionfs image pull``: a registry image into the store, its layers as the blobs they are.

Order: resolve the reference, fetch the manifest (an index is narrowed to one platform as import
does, archive.choose), fetch and verify the config, download every layer blob the store lacks by
DiffID (several at once, each verified, resumable: remotes.py) and, as soon as a blob is whole,
make its layer in a work directory of the pull's, outside the store lock, while the other
downloads go on: a packed layer (the blob, hard-linked: store.py), whose tree is built and whose
DiffID is checked at its first use (unpack.py), or with ``--unpack`` the whole layer as an
import builds it (importer.fetch_layer: blob digest, DiffID and caps checked, extracted). Then
importer.import_archive, under the lock, renames the layers into place and registers the image
atomically. A layer the store already has is not downloaded: a pull of a stored image transfers
the manifest and the config only. An interrupted pull leaves finished blobs and partial ones in
STORE/registry/downloads for the next pull, and never a registered half image.

Why packed by default: a pull is then what ``skopeo copy`` is, a download (docs/images.md, pull
speed), and the work of unpacking is done once, when and if a layer is used.
"""
import concurrent.futures
import fcntl
import json
import os
import re
import sys
import threading
import time

from . import archive, reference, registries_conf, remotes
from .errors import ImageError
from .files import write_json_atomic
from .importer import Prepared, fetch_layer, import_archive, verify_only
from .store import now_iso
from ..messages import human
from .progress import Progress, on_terminal
from .registry import DOCKER_LIST, OCI_INDEX, Client, RegistryError
from .shortnames import candidates

LAYER_TYPES_OK = ("tar", "tar+gzip", "tar+zstd", "diff.tar.gzip", "diff.tar.zstd", "diff.tar")
JOBS = 3   # docker's max-concurrent-downloads


class Board:
    """docker's per-layer lines (``abc123def456: Downloading  1.2 MB/4.5 MB``), redrawn in place
    on a terminal; nothing otherwise."""

    def __init__(self, stream=None, enabled=None):
        self.stream = stream or sys.stderr
        self.enabled = on_terminal(self.stream, enabled)
        self.order, self.lines = [], {}
        self.drawn = 0
        self.lock = threading.Lock()
        self.last = 0.0

    def set(self, key, text, force=True):
        if not self.enabled:
            return
        with self.lock:
            if key not in self.lines:
                self.order.append(key)
            self.lines[key] = text
            now = time.monotonic()
            if force or now - self.last >= 0.1:
                self.last = now
                self._draw()

    def _draw(self):
        out = ["\033[%dA" % self.drawn] if self.drawn else []
        for k in self.order:
            out.append("\r\033[K%s: %s\n" % (k, self.lines[k]))
        self.drawn = len(self.order)
        self.stream.write("".join(out))
        self.stream.flush()

    def say(self, line):
        if self.enabled:
            self.stream.write(line + "\n")
            self.stream.flush()


class ExtractProgress:
    """The importer's Progress interface, shown as the layer's 'Extracting' line on the board."""

    _HEX = re.compile(r"\(([0-9a-f]{64})\)")

    def __init__(self, board, stop=None):
        self.board, self.key, self.n, self.total = board, None, 0, None
        self.stop = stop

    def start(self, label, total=None):
        m = self._HEX.search(label)
        self.key = m.group(1)[:12] if m else None
        self.n, self.total = 0, total
        if self.key:
            self.board.set(self.key, "Extracting")

    def add(self, n):
        if self.stop is not None and self.stop.is_set():
            raise _Stopped()
        self.n += n
        if self.key:
            self.board.set(self.key, "Extracting  %s/%s" % (human(self.n), human(self.total or 0)),
                           force=False)

    def done(self, line=None):
        if self.key:
            self.board.set(self.key, "Pull complete")
        self.key = None


class _Stopped(Exception):
    """Raised in a download thread when the pull is abandoned."""


class _StoredLayer:
    """Stand-in source of a layer the store already has: the importer never opens it unless the
    layer vanished meanwhile (a concurrent prune)."""

    name = "the store"

    def open(self, rel):
        raise ImageError("layer %s left the store during the pull (a prune?): pull again" % rel)

    def size(self, rel):
        return 0


def _hold(path, held):
    """Take a shared flock on a downloaded blob until the import is done, so a concurrent pull
    that finishes first does not delete it from under this one (_remove_unused). False when
    the blob is already gone."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    fcntl.flock(fd, fcntl.LOCK_SH)
    if os.fstat(fd).st_nlink == 0:      # deleted between the open and the lock
        os.close(fd)
        return False
    held.append(fd)
    return True


def _remove_unused(path):
    """Delete a download nobody holds (another pull may still be importing from it, or still
    writing it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fd).st_nlink:
            os.unlink(path)
    except BlockingIOError:
        pass
    finally:
        os.close(fd)


def _media_ok(mt):
    return mt is None or any(mt.endswith(s) for s in LAYER_TYPES_OK) and "foreign" not in mt


def _stage_packed(lref, diff_id, dest, what, verified):
    """dest: a packed layer (store.py) holding the downloaded blob, hard-linked. A blob an
    earlier pull left (not verified by this one) is hashed again first."""
    if not verified:
        verify_only(lref, what, Progress(enabled=False))
    os.mkdir(dest, 0o700)
    blob = os.path.join(dest, "blob")
    os.link(os.path.join(lref.source.root, lref.path), blob)
    write_json_atomic(os.path.join(dest, "meta.json"), {
        "diff_id": diff_id, "packed": True, "blob_digest": lref.blob_digest,
        "blob_size": os.stat(blob).st_size, "media_type": lref.media_type, "added": now_iso()})


def _fetch_layers(store, client, ref, need, dl, work, board, jobs, builders=None, unpack=False):
    """Download the blobs of need ({DiffID: descriptor}) into dl, `jobs` at once, and, as soon
    as a blob is whole, make its layer in work while the other downloads go on, all outside the
    store lock: a packed layer (_stage_packed), or with unpack the whole layer
    (importer.fetch_layer: blob digest, DiffID and caps checked, extracted), `builders`
    (default: one per CPU) at once. Returns {DiffID: layer directory in work}, minus layers the
    store got meanwhile.

    Builders are threads, not processes: zlib and hashlib, most of a build's time, release the
    GIL, and measured on this 2-core machine threads built the layers as fast as a process
    pool or faster, without the fork. Downloads have threads of their own, so that they run ahead of the builds instead
    of waiting for them (docs/images.md)."""
    stop = threading.Event()   # set when the pull fails or is interrupted: workers give up
    n = len(need)
    order = {d: i for i, d in enumerate(need)}
    builders = builders or os.cpu_count() or 2

    def download(diff_id, ld):
        """(fds holding the blob (see _hold), whether download_blob verified it in this
        pull), or None when the store got the layer."""
        key = ld["digest"][7:19]
        dest = os.path.join(dl, ld["digest"][7:])
        size = ld.get("size") if isinstance(ld.get("size"), int) else None

        def prog(done, total):
            if stop.is_set():
                raise _Stopped()
            board.set(key, "Downloading  %s/%s" % (human(done), human(total or 0)), force=False)
        for _ in range(2):    # again if a prune or a concurrent pull removed it meanwhile
            if stop.is_set():
                raise _Stopped()
            verified = not os.path.exists(dest)   # else left by an earlier pull: hashed again
            if not verified:
                board.set(key, "Download complete")
            else:
                client.download_blob(ref.repository, ld["digest"], dest, size, prog)
                board.set(key, "Verifying Checksum")
                board.set(key, "Download complete")
            held = []
            if _hold(dest, held):
                return held, verified
            if store.has_layer(diff_id):
                return None
        raise ImageError("blob %s left %s during the pull: pull again" % (ld["digest"], dl))

    def build(diff_id, ld, held, verified):
        try:
            if store.has_layer(diff_id):
                return None
            hexd = ld["digest"][7:]
            size = ld.get("size") if isinstance(ld.get("size"), int) else None
            lref = archive.LayerRef(archive.DirSource(dl), hexd, blob_digest=ld["digest"],
                                    size=size, media_type=ld.get("mediaType"))
            what = "layer %d/%d (%s)" % (order[diff_id] + 1, n, hexd)
            layer = os.path.join(work, "layer-" + diff_id[7:])
            if unpack:
                fetch_layer(lref, diff_id, layer, what, ExtractProgress(board, stop),
                            blob_verified=verified)
            else:
                _stage_packed(lref, diff_id, layer, what, verified)
                board.set(hexd[:12], "Pull complete")
            return layer
        finally:
            for fd in held:
                os.close(fd)

    prepared = {}
    if not need:
        return prepared
    dex = concurrent.futures.ThreadPoolExecutor(max(1, jobs))
    bex = concurrent.futures.ThreadPoolExecutor(max(1, builders))
    downloads = {dex.submit(download, d, ld): d for d, ld in need.items()}
    builds, handed = {}, set()    # handed: downloads whose fds a build owns
    try:
        # wait() in short steps: the main thread stays interruptible (Ctrl-C, SIGTERM)
        pending = set(downloads)
        while pending:
            done, pending = concurrent.futures.wait(pending, timeout=0.2,
                                                    return_when=concurrent.futures.FIRST_COMPLETED)
            for f in done:
                if f in downloads:
                    got = f.result()
                    if got is not None:
                        d, (held, verified) = downloads[f], got
                        handed.add(f)
                        try:
                            fut = bex.submit(build, d, need[d], held, verified)
                        except BaseException:
                            for fd in held:
                                os.close(fd)
                            raise
                        builds[fut] = d
                        pending.add(fut)
                else:
                    layer = f.result()
                    if layer is not None:
                        prepared[builds[f]] = layer
    except BaseException:
        stop.set()     # downloaded blobs stay for the next pull to resume from
        raise
    finally:
        dex.shutdown(wait=True, cancel_futures=True)
        bex.shutdown(wait=True, cancel_futures=False)   # a queued build owns its blob's fds
        for f in downloads:     # finished downloads no build took over (the pull failed)
            if f not in handed and f.done() and not f.cancelled() and f.exception() is None \
                    and f.result() is not None:
                for fd in f.result()[0]:
                    os.close(fd)
    return prepared


def resolve_manifest(client, ref, platform=None):
    """(manifest dict, manifest digest, digest the reference resolved to, media type)."""
    data, mt, top = client.get_manifest(ref.repository, ref.reference, what=str(ref))
    m = json.loads(data)
    if not isinstance(m, dict):
        raise RegistryError("%s: the manifest is not a JSON object" % ref)
    if m.get("schemaVersion") == 1 or "signed" in (mt or ""):
        raise RegistryError("%s: docker schema 1 manifests are not supported" % ref)
    mdigest = top
    if mt in (OCI_INDEX, DOCKER_LIST) or ("manifests" in m and "layers" not in m):
        subs = m.get("manifests")
        if not isinstance(subs, list) or not subs:
            raise RegistryError("%s: the index lists no manifests" % ref)
        chosen = archive.choose(subs, str(ref), platform)
        mdigest = chosen.get("digest")
        if not isinstance(mdigest, str):
            raise RegistryError("%s: an index entry has no digest" % ref)
        data, mt, _ = client.get_manifest(ref.repository, mdigest, what="%s@%s" % (ref.name, mdigest))
        m = json.loads(data)
        if not isinstance(m, dict) or "layers" not in m:
            raise RegistryError("%s: %s is not an image manifest" % (ref, mdigest))
    elif platform is not None:
        archive.Platform.parse(platform)
    if not isinstance(m.get("config"), dict) or not isinstance(m.get("layers"), list):
        raise RegistryError("%s: the manifest has no config or layers" % ref)
    return m, mdigest, top, mt


def fetch_record(client, ref, platform=None):
    """(ImageRecord with layers not yet attached, manifest, manifest digest, top digest)."""
    m, mdigest, top, _ = resolve_manifest(client, ref, platform)
    cd = m["config"]
    if not isinstance(cd.get("digest"), str) or not cd["digest"].startswith("sha256:"):
        raise RegistryError("%s: the config descriptor has no sha256 digest" % ref)
    cfg = client.get_blob_bytes(ref.repository, cd["digest"])
    layers = m["layers"]
    for ld in layers:
        if not isinstance(ld, dict) or not isinstance(ld.get("digest"), str) \
                or not ld["digest"].startswith("sha256:") or len(ld["digest"]) != 71:
            raise RegistryError("%s: a layer descriptor has no sha256 digest" % ref)
        if not _media_ok(ld.get("mediaType")):
            raise RegistryError("%s: layer %s has unsupported media type %s" % (
                ref, ld["digest"], ld.get("mediaType")))
    placeholders = [None] * len(layers)
    rec = archive.ImageRecord(cfg, placeholders, [])
    if platform is not None and mdigest == top:    # a single image: its config must agree
        want = archive.Platform.parse(platform)
        have = archive.Platform(str(rec.config.get("os")), str(rec.config.get("architecture")),
                                rec.config.get("variant") if isinstance(rec.config.get("variant"), str) else None)
        if not want.matches(have, any_variant=want.variant is None):
            raise RegistryError("%s: no image for %s (the image is %s)" % (ref, want, have))
    return rec, m, mdigest, top


def _first_source(ref, platform, tls_verify):
    """(client, reference, fetch_record(...)) of the first of the registries.conf mirrors, then
    the registry itself, that serves the manifest and config; else the registry's error."""
    for name, insecure in registries_conf.mirrors(ref.name, ref.digest is not None):
        host, _, prefix = name.partition("/")
        src = reference.Reference(host, prefix, ref.tag, ref.digest)
        client = Client(host, tls_verify=False if insecure else tls_verify, retries=1)
        try:
            return client, src, fetch_record(client, src, platform)
        except RegistryError:
            continue
    client = Client(ref.registry, api_host=ref.api_host, tls_verify=tls_verify)
    return client, ref, fetch_record(client, ref, platform)


def pull(store, text, platform=None, tls_verify=None, quiet=False, jobs=JOBS, board=None,
         client=None, unpack=False):
    """Pull text into store; returns (image id, tag or None, manifest digest). The layers stay
    packed until their first use (unpack.py), unless unpack: then they are unpacked (and their
    DiffIDs checked) before the image is registered, as an import does."""
    refs = [reference.parse(text)] if client is not None else candidates(text)
    board = board or Board(enabled=None if not quiet else False)
    if client is None:
        errors = []
        for ref in refs:
            if ref.tag and not ref.digest:
                board.say("%s: Pulling from %s" % (ref.tag, ref.repository))
            try:
                client, src, (rec, m, mdigest, top) = _first_source(ref, platform, tls_verify)
                break
            except RegistryError as e:
                if len(refs) == 1:
                    raise
                errors.append(str(e))
        else:
            raise RegistryError("%s: not found in any search registry (%s)" % (
                text, "; ".join(errors)))
    else:
        ref = refs[0]
        if ref.tag and not ref.digest:
            board.say("%s: Pulling from %s" % (ref.tag, ref.repository))
        src = ref
        rec, m, mdigest, top = fetch_record(client, ref, platform)
    ref, tag = src, ref.tagged()    # blobs come from src; the store names the image as asked
    dl = remotes.downloads_dir(store)
    need = {}   # DiffID -> descriptor, for layers the store lacks
    for ld, diff_id in zip(m["layers"], rec.diff_ids):
        key = ld["digest"][7:19]
        if store.has_layer(diff_id):
            board.set(key, "Already exists")
        else:
            need.setdefault(diff_id, ld)
            board.set(key, "Pulling fs layer")
    with remotes.workspace(store) as work:
        prepared = _fetch_layers(store, client, ref, need, dl, work, board, jobs, unpack=unpack)
        layers = []
        for i, (ld, diff_id) in enumerate(zip(m["layers"], rec.diff_ids)):
            if diff_id in prepared:
                layers.append(Prepared(prepared[diff_id], ld["digest"][7:]))
            elif diff_id in need and not store.has_layer(diff_id):
                raise ImageError("layer %s left the store during the pull: pull again" % diff_id)
            else:   # stored, or stored by a concurrent pull of the same blob meanwhile
                layers.append(archive.LayerRef(_StoredLayer(), ld["digest"][7:]))
        rec.layers = layers
        rec.tags = [tag] if tag else []
        if unpack:      # layers an earlier pull left packed: checked before the image is registered
            from .unpack import unpack as unpack_layers
            unpack_layers(store, [d for d in rec.diff_ids if d not in prepared],
                          Progress(enabled=False if quiet else None))
        results = import_archive(store, None, records=[rec])
    image_id = results[0][0]
    with store.lock():
        remotes.remember(store, [(diff_id, {
            "registry": ref.registry, "repository": ref.repository, "digest": ld["digest"],
            "size": ld.get("size"), "mediaType": ld.get("mediaType")})
            for ld, diff_id in zip(m["layers"], rec.diff_ids)])
    for ld in need.values():
        for p in (os.path.join(dl, ld["digest"][7:]), os.path.join(dl, ld["digest"][7:] + ".part")):
            _remove_unused(p)
    board.say("Digest: %s" % top)
    board.say("Status: %s %s" % ("Downloaded newer image for" if need else "Image is up to date for",
                                 tag or "%s@%s" % (ref.name, top)))
    return image_id, tag, top
