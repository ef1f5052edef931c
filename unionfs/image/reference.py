"""Image references as registries name them: ``[REGISTRY/][NAMESPACE/]NAME[:TAG][@sha256:HEX]``.

The first component is a registry when it has a '.' or a ':' or is ``localhost``; otherwise the
registry is ``docker.io`` and a one-component name is under ``library/`` (``busybox`` is
``docker.io/library/busybox:latest``), as docker does; ``image pull`` first tries a short name
in registries.conf's search registries when it lists any (shortnames.candidates). Without a tag or
digest the tag is ``latest``; with a digest the tag is only a label and the digest is what is
fetched.
"""
import re

from .errors import ImageError

DEFAULT_REGISTRY = "docker.io"
DEFAULT_TAG = "latest"
# docker.io is a name; the API lives elsewhere
_API_HOSTS = {"docker.io": "registry-1.docker.io", "index.docker.io": "registry-1.docker.io"}

_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_DOMAIN = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.?)+(?::[0-9]+)?$|^\[[0-9a-fA-F:]+\](?::[0-9]+)?$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


class Reference:
    """registry ('docker.io', 'host:5000'), repository ('library/busybox'), tag, digest."""

    def __init__(self, registry, repository, tag=None, digest=None):
        self.registry = registry
        self.repository = repository
        self.tag = tag
        self.digest = digest

    @property
    def api_host(self):
        return _API_HOSTS.get(self.registry, self.registry)

    @property
    def name(self):
        return "%s/%s" % (self.registry, self.repository)

    @property
    def reference(self):
        """What the manifest URL names: the digest when pinned, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def tagged(self):
        """'registry/repo:tag' as the store records it, or None for a digest-only reference."""
        if self.tag is None and self.digest is not None:
            return None
        return "%s:%s" % (self.name, self.tag or DEFAULT_TAG)

    def with_tag(self, tag):
        return Reference(self.registry, self.repository, tag, None)

    def __str__(self):
        s = self.name
        if self.tag:
            s += ":" + self.tag
        if self.digest:
            s += "@" + self.digest
        if not self.tag and not self.digest:
            s += ":" + DEFAULT_TAG
        return s


def is_domain(part):
    return part == "localhost" or (("." in part or ":" in part) and bool(_DOMAIN.match(part)))


def is_short(text):
    """Whether text names no registry (``busybox``, ``user/app:v1``): a short name, which
    registries.conf's unqualified-search-registries may resolve (shortnames.candidates)."""
    first, sep, _ = text.partition("@")[0].partition("/")
    return not (sep and is_domain(first))


def parse(text, default_tag=True, registry=None):
    """A Reference from text; an ImageError names what is wrong. registry: where a short name
    lives (default docker.io, where a one-component name is under library/)."""
    if not isinstance(text, str) or not text or text != text.strip():
        raise ImageError("invalid image reference %r" % (text,))
    rest, digest = text, None
    if "@" in rest:
        rest, _, digest = rest.partition("@")
        if not _DIGEST.match(digest):
            raise ImageError("invalid image reference %s: bad digest %r (expected sha256:<64 hex>)"
                             % (text, digest))
    registry = registry or DEFAULT_REGISTRY
    first, sep, remainder = rest.partition("/")
    if sep and is_domain(first):
        registry, rest = first, remainder
    if registry == "index.docker.io":
        registry = DEFAULT_REGISTRY
    tag = None
    last = rest.rpartition("/")[2]
    if ":" in last:
        rest, _, tag = rest.rpartition(":")
        if not _TAG.match(tag):
            raise ImageError("invalid image reference %s: bad tag %r" % (text, tag))
    parts = rest.split("/")
    if not rest or not all(_COMPONENT.match(p) for p in parts):
        raise ImageError("invalid image reference %s: repository names are lowercase letters, "
                         "digits and separators (. _ __ -)" % text)
    if registry == DEFAULT_REGISTRY and len(parts) == 1:
        rest = "library/" + rest
    if tag is None and digest is None and default_tag:
        tag = DEFAULT_TAG
    return Reference(registry, rest, tag, digest)


def parse_registry(text):
    """'host[:port]' for catalog/login; also accepts a URL-ish 'https://host/'."""
    t = (text or "").strip()
    for prefix in ("https://", "http://"):
        if t.startswith(prefix):
            t = t[len(prefix):]
    t = t.rstrip("/")
    for suffix in ("/v1", "/v2"):
        if t.endswith(suffix):
            t = t[:-3]
    if t == "index.docker.io":
        t = DEFAULT_REGISTRY
    if not t or "/" in t or not (is_domain(t) or t == DEFAULT_REGISTRY):
        raise ImageError("invalid registry %r (expected HOST[:PORT])" % (text,))
    return t
