"""Readers for image archives: what images an archive holds and where their blobs are.

Formats (detected by their files, never by the archive's name):

* ``docker save`` output, classic (``manifest.json``, ``repositories``, ``<id>/layer.tar``,
  ``<id>/json``, ``<id>/VERSION``, ``<config>.json``) and the newer layout (``blobs/sha256/...``
  beside ``manifest.json``, ``index.json`` and ``oci-layout``); ``manifest.json`` wins when both
  are present because it carries the tags;
* an OCI image layout (``oci-layout``, ``index.json``, ``blobs/<alg>/<hex>``), as written by
  ``podman save --format oci-archive`` or ``skopeo copy ... oci:DIR``.

An archive is a directory, a tar file or a gzip/zstd-compressed tar file. Every path a manifest
names is resolved inside the archive (symlinks and hard links in the archive are followed only
within it); one that leads outside or to nothing is an ImageError. Every blob with a known digest
(manifests, configs, layer blobs) is verified by the importer as it is read; configs are verified
here. A tar archive's headers are checked against the import's Limits before tarfile reads them
(targuard.py), and JSON nested deeper than MAX_DEPTH is refused before it is parsed. Nothing here
writes anywhere but the scratch copy of a compressed archive.

Over 400 lines, for now: it holds two halves, the archive as a source of files (DirSource,
TarSource, the JSON guards) and the manifests read from it (docker-save, OCI indexes, the platform
choice), and they would split along that line; but pull.py reads registry manifests through this
module's ImageRecord, Platform and choose, and a split means changing pull.py as well.
"""
import json
import os
import platform as pyplatform
import posixpath
import re
import stat
import tarfile

from . import compression, digest
from .errors import ImageError

MAX_JSON = 16 << 20  # manifests, indexes and configs larger than this are refused
MAX_DEPTH = 64       # nor those nested deeper (real ones nest 5 or 6 levels)
_JSON_SKIP = re.compile(rb'"(?:[^"\\]+|\\.)*"|[^\[\]{}"]+')

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)


def normpath(rel, what="manifest"):
    """A path named inside an archive, normalised; one that leaves the archive is an error."""
    if not isinstance(rel, str) or not rel or "\0" in rel:
        raise ImageError("%s names an invalid path: %r" % (what, rel))
    if rel.startswith("/"):
        raise ImageError("%s points outside the archive: %s" % (what, rel))
    n = posixpath.normpath(rel)
    if n == ".." or n.startswith("../"):
        raise ImageError("%s points outside the archive: %s" % (what, rel))
    return n


class LayerRef:
    """One layer of an image as the archive holds it."""

    def __init__(self, source, path, blob_digest=None, size=None, media_type=None):
        self.source = source
        self.path = path
        self.blob_digest = blob_digest   # sha256 of the blob as stored, when the archive says
        self.size = size
        self.media_type = media_type

    def open(self):
        return self.source.open(self.path)

    def blob_size(self):
        return self.source.size(self.path)


class ImageRecord:
    """One image found in an archive: its config (verified), layers bottom first, tags."""

    def __init__(self, config_bytes, layers, tags):
        self.config_bytes = config_bytes
        self.config_digest = digest.of_bytes(config_bytes)
        self.layers = layers
        self.tags = tags
        self.config = parse_json(config_bytes, "image config %s" % digest.short(self.config_digest))
        if not isinstance(self.config, dict):
            raise ImageError("image config %s is not a JSON object" % digest.short(self.config_digest))
        rootfs = self.config.get("rootfs") or {}
        diff_ids = rootfs.get("diff_ids")
        if not isinstance(diff_ids, list):
            raise ImageError("image config %s has no rootfs.diff_ids" % digest.short(self.config_digest))
        for d in diff_ids:
            digest.parse(d, "DiffID in config %s" % digest.short(self.config_digest))
        if len(diff_ids) != len(layers):
            raise ImageError("image %s: the manifest lists %d layers, the config %d DiffIDs" % (
                digest.short(self.config_digest), len(layers), len(diff_ids)))
        self.diff_ids = list(diff_ids)


# ---- sources ------------------------------------------------------------------------------------

class DirSource:
    """An archive unpacked in a directory (an OCI layout directory)."""

    def __init__(self, root):
        self.root = os.path.realpath(root)
        self.name = root

    def _real(self, rel):
        rel = normpath(rel)
        real = os.path.realpath(os.path.join(self.root, rel))
        if real != self.root and not real.startswith(self.root + "/"):
            raise ImageError("manifest points outside the archive: %s" % rel)
        return real

    def exists(self, rel):
        try:
            return os.path.isfile(self._real(rel))
        except ImageError:
            return False

    def open(self, rel):
        real = self._real(rel)
        try:
            st = os.stat(real)
            if not stat.S_ISREG(st.st_mode):
                raise ImageError("%s in %s is not a regular file" % (rel, self.name))
            return open(real, "rb")
        except FileNotFoundError:
            raise ImageError("%s: missing from the archive %s" % (rel, self.name))

    def size(self, rel):
        return os.stat(self._real(rel)).st_size

    def close(self):
        pass


class TarSource:
    """An archive in a (possibly compressed) tar file. Member names are normalised; links
    inside the archive are resolved within it only."""

    MAX_LINKS = 40

    def __init__(self, path, scratch=None, limits=None):
        self.name = path
        self._tmp = None
        self.f = open(path, "rb")
        try:
            self._open(path, scratch, limits)
        except BaseException:
            self.close()
            raise

    def _open(self, path, scratch, limits):
        # imported here: a registry pull reads no archive file and starts sooner without it
        from .targuard import Limits, TarGuard
        limits = limits or Limits()
        kind = compression.detect(self.f.read(6))
        self.f.seek(0)
        if kind is not None:
            if scratch is None:
                raise ImageError("%s is %s-compressed: no scratch space to unpack it" % (path, kind))
            import tempfile
            fd, self._tmp = tempfile.mkstemp(dir=scratch, prefix="archive-", suffix=".tar")
            with os.fdopen(fd, "wb") as out:
                compression.decompress(self.f, TarGuard(out, path, limits, limits.max_archive_size,
                                                        "--max-archive-size"), what=path)
            self.f.close()
            self.f = open(self._tmp, "rb")
        else:
            TarGuard(None, path, limits).check_file(self.f)
            self.f.seek(0)
        try:
            self.tar = tarfile.open(fileobj=self.f, mode="r:")
            members = self.tar.getmembers()
        except (tarfile.TarError, EOFError, ValueError, OverflowError, RecursionError) as e:
            raise ImageError("%s: not a readable tar archive (%s)" % (path, e))
        self.members = {}
        for m in members:
            try:
                n = normpath(m.name, "archive member")
            except ImageError:
                continue  # a member nobody can name from inside is never used
            self.members[n] = m

    def _resolve(self, rel, depth=0):
        if depth > self.MAX_LINKS:
            raise ImageError("%s: too many levels of links in the archive" % rel)
        m = self.members.get(rel)
        if m is None:
            # an intermediate directory may be a symlink inside the archive
            parts = rel.split("/")
            for i in range(1, len(parts)):
                pm = self.members.get("/".join(parts[:i]))
                if pm is not None and pm.issym():
                    base = posixpath.dirname("/".join(parts[:i]))
                    target = normpath(posixpath.join(base, pm.linkname), "archive symlink")
                    return self._resolve(posixpath.join(target, *parts[i:]), depth + 1)
            raise ImageError("%s: missing from the archive %s" % (rel, self.name))
        if m.issym():
            target = normpath(posixpath.join(posixpath.dirname(rel), m.linkname), "archive symlink")
            return self._resolve(target, depth + 1)
        if m.islnk():
            return self._resolve(normpath(m.linkname, "archive hard link"), depth + 1)
        if not m.isreg():
            raise ImageError("%s in %s is not a regular file" % (rel, self.name))
        return m

    def exists(self, rel):
        try:
            self._resolve(normpath(rel))
            return True
        except ImageError:
            return False

    def open(self, rel):
        return self.tar.extractfile(self._resolve(normpath(rel)))

    def size(self, rel):
        return self._resolve(normpath(rel)).size

    def close(self):
        try:
            self.f.close()
        finally:
            if self._tmp:
                try:
                    os.unlink(self._tmp)
                except OSError:
                    pass


def open_source(path, scratch=None, limits=None):
    if os.path.isdir(path):
        return DirSource(path)
    if not os.path.exists(path):
        raise ImageError("%s: no such file or directory" % path)
    return TarSource(path, scratch, limits)


# ---- reading ------------------------------------------------------------------------------------

def read_small(source, rel, what, expect=None, size=None):
    """Read a JSON-sized blob; verify its digest (and size) when known."""
    if size is not None and (not isinstance(size, int) or size < 0 or size > MAX_JSON):
        raise ImageError("%s %s: bad size %r" % (what, rel, size))
    f = source.open(rel)
    try:
        data = f.read(MAX_JSON + 1)
    finally:
        f.close()
    if len(data) > MAX_JSON:
        raise ImageError("%s %s is larger than %d bytes" % (what, rel, MAX_JSON))
    if expect is not None:
        got = digest.of_bytes(data)
        if got != expect:
            raise ImageError("%s %s: digest mismatch: expected %s, got %s" % (what, rel, expect, got))
    if size is not None and len(data) != size:
        raise ImageError("%s %s: size %d does not match the descriptor's %d" % (what, rel, len(data), size))
    return data


def json_depth(data):
    """How deeply the arrays and objects of JSON text nest (strings skipped unparsed)."""
    depth = deepest = 0
    for c in _JSON_SKIP.sub(b"", data):
        if c in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def parse_json(data, what):
    """JSON text (bytes) parsed; bad or too deeply nested text is a one-line ImageError."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    if json_depth(data) > MAX_DEPTH:
        raise ImageError("%s is nested more than %d levels deep" % (what, MAX_DEPTH))
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as e:
        raise ImageError("%s is not valid JSON (%s)" % (what, e))



def _blob_path(d, what):
    alg, _, hexpart = d.partition(":") if isinstance(d, str) else ("", "", "")
    if alg != "sha256":
        raise ImageError("%s: unsupported digest %r (only sha256)" % (what, d))
    digest.parse(d, what)
    return "blobs/sha256/" + hexpart


def _digest_from_path(rel):
    """blobs/sha256/<hex> or <hex>.json or <hex>/layer.tar style names carry no promise except
    the blobs form, which is content-addressed."""
    parts = rel.split("/")
    if len(parts) == 3 and parts[0] == "blobs" and parts[1] == "sha256" and len(parts[2]) == 64:
        return "sha256:" + parts[2]
    return None


def read_docker(source):
    data = read_small(source, "manifest.json", "manifest")
    manifest = parse_json(data, "manifest.json")
    if not isinstance(manifest, list) or not manifest:
        raise ImageError("manifest.json: expected a non-empty list of images")
    out = []
    for i, entry in enumerate(manifest):
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str) \
                or not isinstance(entry.get("Layers", []), list):
            raise ImageError("manifest.json: entry %d lacks Config or Layers" % i)
        cfg_path = normpath(entry["Config"])
        expect = _digest_from_path(cfg_path)
        base = posixpath.basename(cfg_path)
        if expect is None and base.endswith(".json") and len(base) == 69:
            expect = "sha256:" + base[:-5]
        cfg = read_small(source, cfg_path, "config", expect=expect)
        layers = []
        for lp in entry.get("Layers") or []:
            rel = normpath(lp)
            if not source.exists(rel):
                raise ImageError("manifest.json: layer %s is missing from the archive" % lp)
            layers.append(LayerRef(source, rel, blob_digest=_digest_from_path(rel)))
        tags = entry.get("RepoTags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ImageError("manifest.json: entry %d: RepoTags is not a list of names" % i)
        out.append(ImageRecord(cfg, layers, list(tags)))
    return out


# ---- platforms ----------------------------------------------------------------------------------

# `uname -m` -> (GOARCH, variant), as container tools name the host's platform
_MACHINES = {"x86_64": ("amd64", None), "amd64": ("amd64", None), "aarch64": ("arm64", None),
             "arm64": ("arm64", None), "armv8l": ("arm", "v8"), "armv7l": ("arm", "v7"),
             "armv6l": ("arm", "v6"), "armv5tel": ("arm", "v5"), "armv5tejl": ("arm", "v5"),
             "i386": ("386", None), "i486": ("386", None), "i586": ("386", None),
             "i686": ("386", None), "ppc64le": ("ppc64le", None), "ppc64": ("ppc64", None),
             "s390x": ("s390x", None), "riscv64": ("riscv64", None), "mips64": ("mips64", None),
             "loongarch64": ("loong64", None)}
# architecture names others use, as the OCI spec names them
_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "i386": "386",
                 "i686": "386", "armhf": "arm", "armel": "arm"}


class Platform:
    """OS/ARCH[/VARIANT] of an image, normalised as containerd does: arm64's default variant v8
    is the same as none, and arm without a variant means v7."""

    def __init__(self, os_name, arch, variant=None):
        self.os = os_name
        self.arch = _ARCH_ALIASES.get(arch, arch)
        variant = variant or None
        if self.arch == "arm64" and variant == "v8":
            variant = None
        if self.arch == "arm" and variant is None:
            variant = "v7"
        self.variant = variant

    @classmethod
    def parse(cls, text):
        parts = text.split("/") if isinstance(text, str) else []
        if len(parts) not in (2, 3) or not all(parts):
            raise ImageError("--platform %s: expected OS/ARCH[/VARIANT] (e.g. linux/amd64)" % text)
        return cls(*parts)

    @classmethod
    def of(cls, desc):
        """The platform a descriptor declares, or None."""
        p = desc.get("platform") if isinstance(desc, dict) else None
        if not isinstance(p, dict) or not isinstance(p.get("os"), str) \
                or not isinstance(p.get("architecture"), str):
            return None
        v = p.get("variant")
        return cls(p["os"], p["architecture"], v if isinstance(v, str) else None)

    def matches(self, other, any_variant=False):
        return (self.os, self.arch) == (other.os, other.arch) and (
            any_variant or self.variant == other.variant)

    def __str__(self):
        return "/".join([self.os, self.arch] + ([self.variant] if self.variant else []))


def host_platform():
    """This host's platform (linux/amd64 on x86_64, linux/arm/v7 on armv7l, ...)."""
    m = pyplatform.machine()
    arch, variant = _MACHINES.get(m, (m, None))
    return Platform("linux", arch, variant)


def _tag_from_annotations(ann):
    if not isinstance(ann, dict):
        return None
    full = ann.get("io.containerd.image.name")
    if isinstance(full, str) and full:
        return full
    ref = ann.get("org.opencontainers.image.ref.name")
    if isinstance(ref, str) and ("/" in ref or ":" in ref):
        return ref
    return None  # a bare tag ("latest") without a repository names nothing


def choose(descs, what, wanted=None):
    """From an index's manifests, the one for the wanted platform (default: this host's).

    A list of one is taken as it is unless a platform was asked for and it declares another.
    A variant asked for (or the host's, or arm's default v7) must match; without one, a
    manifest without a variant is preferred, then any."""
    explicit = wanted is not None
    if len(descs) == 1 and (not explicit or Platform.of(descs[0]) is None):
        return descs[0]
    want = Platform.parse(wanted) if explicit else host_platform()
    for any_variant in (False, True) if want.variant is None else (False,):
        for d in descs:
            p = Platform.of(d)
            if p is not None and want.matches(p, any_variant):
                return d
    have = [str(p) for p in map(Platform.of, descs) if p is not None]
    raise ImageError("%s: no image for %s (available: %s)%s" % (
        what, want, ", ".join(have) or "no platform named",
        "" if explicit else "; choose one with --platform"))


def _read_manifest(source, desc, what, platform=None, depth=0):
    if depth > 4:
        raise ImageError("%s: indexes nested too deeply" % what)
    if not isinstance(desc, dict):
        raise ImageError("%s: a descriptor is not an object" % what)
    rel = _blob_path(desc.get("digest"), what)
    data = read_small(source, rel, "manifest", expect=desc.get("digest"), size=desc.get("size"))
    m = parse_json(data, "manifest " + desc["digest"])
    if not isinstance(m, dict):
        raise ImageError("manifest %s is not a JSON object" % desc["digest"])
    mt = m.get("mediaType") or desc.get("mediaType")
    if mt in INDEX_TYPES or ("manifests" in m and "layers" not in m):
        subs = m.get("manifests")
        if not isinstance(subs, list) or not subs:
            raise ImageError("index %s lists no manifests" % desc["digest"])
        chosen = choose(subs, "index " + digest.short(desc["digest"]), platform)
        return _read_manifest(source, chosen, what, platform, depth + 1)
    cfg_desc = m.get("config")
    if not isinstance(cfg_desc, dict):
        raise ImageError("manifest %s has no config" % desc["digest"])
    cfg = read_small(source, _blob_path(cfg_desc.get("digest"), "config"), "config",
                     expect=cfg_desc.get("digest"), size=cfg_desc.get("size"))
    layers = []
    for ld in m.get("layers") or []:
        if not isinstance(ld, dict):
            raise ImageError("manifest %s: a layer descriptor is not an object" % desc["digest"])
        lrel = _blob_path(ld.get("digest"), "layer")
        if not source.exists(lrel):
            raise ImageError("layer %s is missing from the archive" % ld.get("digest"))
        size = ld.get("size")
        if size is not None and not isinstance(size, int):
            raise ImageError("layer %s: bad size %r" % (ld.get("digest"), size))
        layers.append(LayerRef(source, lrel, blob_digest=ld["digest"], size=size,
                               media_type=ld.get("mediaType")))
    return cfg, layers


def _platform_groups(descs, platform):
    """The descriptors of index.json, those that name a platform narrowed to one per image
    name (an index.json may itself list an image's platforms)."""
    groups = {}
    for d in descs:
        if not isinstance(d, dict):
            raise ImageError("index.json: a descriptor is not an object")
        if Platform.of(d) is not None:
            groups.setdefault(_tag_from_annotations(d.get("annotations")), []).append(d)
    keep = {id(choose(g, "index.json", platform)) for g in groups.values() if len(g) > 1}
    drop = {id(d) for g in groups.values() if len(g) > 1 for d in g} - keep
    return [d for d in descs if id(d) not in drop]


def read_oci(source, platform=None):
    if source.exists("oci-layout"):
        layout = parse_json(read_small(source, "oci-layout", "oci-layout"), "oci-layout")
        if not isinstance(layout, dict) or layout.get("imageLayoutVersion") != "1.0.0":
            raise ImageError("oci-layout: unsupported imageLayoutVersion")
    index = parse_json(read_small(source, "index.json", "index"), "index.json")
    if not isinstance(index, dict) or not isinstance(index.get("manifests"), list) \
            or not index["manifests"]:
        raise ImageError("index.json lists no manifests")
    by_config = {}
    order = []
    for desc in _platform_groups(index["manifests"], platform):
        cfg, layers = _read_manifest(source, desc, "index.json", platform)
        tag = _tag_from_annotations(desc.get("annotations"))
        key = digest.of_bytes(cfg)
        if key not in by_config:
            by_config[key] = ImageRecord(cfg, layers, [])
            order.append(key)
        if tag and tag not in by_config[key].tags:
            by_config[key].tags.append(tag)
    return [by_config[k] for k in order]


def read_images(source, platform=None):
    """[ImageRecord] for every image in the archive; of a multi-platform image, the one for
    platform ('OS/ARCH[/VARIANT]', default: this host's)."""
    if platform is not None:
        Platform.parse(platform)
    if source.exists("manifest.json"):
        return read_docker(source)
    if source.exists("index.json"):
        return read_oci(source, platform)
    raise ImageError("%s: not an image archive (no manifest.json or index.json)" % source.name)
