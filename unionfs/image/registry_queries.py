"""What the registry verbs other than pull and push ask of a registry: a repository's tags, the
catalog, a remote image's manifest and config (``image inspect --remote``), and login (the
credentials checked against the registry, then stored) and logout."""
from . import auth, reference
from .errors import ImageError


def _client(registry, api_host, tls_verify, credentials=None):
    from .registry import Client
    return Client(registry, api_host=api_host, tls_verify=tls_verify, credentials=credentials)


def _api_host(registry):
    return reference.Reference(registry, "x").api_host


def tags(ref_text, tls_verify=None):
    """The tags of the repository [REGISTRY/]NAME."""
    ref = reference.parse(ref_text, default_tag=False)
    return _client(ref.registry, ref.api_host, tls_verify).tags(ref.repository)


def catalog(registry, tls_verify=None):
    """The repositories of a registry."""
    reg = reference.parse_registry(registry)
    return _client(reg, _api_host(reg), tls_verify).catalog()


def remote_inspect(ref_texts, platform=None, tls_verify=None):
    """[the inspect record of each remote image], read from its registry; nothing is pulled."""
    from .pull import fetch_record
    out = []
    for text in ref_texts:
        ref = reference.parse(text)
        rec, m, mdigest, top = fetch_record(_client(ref.registry, ref.api_host, tls_verify),
                                            ref, platform)
        cfg = rec.config
        out.append({"Name": ref.name, "Tag": ref.tag, "Digest": top, "ManifestDigest": mdigest,
                    "Id": rec.config_digest, "Created": cfg.get("created"),
                    "Architecture": cfg.get("architecture", ""), "Os": cfg.get("os", ""),
                    "Config": cfg.get("config") or {},
                    "Layers": [ld["digest"] for ld in m["layers"]],
                    "LayerSizes": [ld.get("size") for ld in m["layers"]],
                    "DiffIDs": rec.diff_ids, "Manifest": m})
    return out


def login(reg, user, password, tls_verify=None):
    """Check the credentials against registry reg (reference.parse_registry's), then store them
    (containers auth.json)."""
    _client(reg, _api_host(reg), tls_verify, credentials=(user, password)).ping()
    auth.store_credentials(reg, user, password)


def logout(registry):
    """Remove the credentials stored for a registry; returns its normalized name."""
    reg = reference.parse_registry(registry)
    if not auth.remove_credentials(reg):
        raise ImageError("logout: not logged in to %s" % reg)
    return reg
