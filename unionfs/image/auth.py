"""What the user has configured for registries: credentials and insecure registries.

Credentials are read from the files the ecosystem already uses, first hit wins:
``$REGISTRY_AUTH_FILE``, ``${XDG_RUNTIME_DIR}/containers/auth.json`` (or
``/run/containers/<uid>/auth.json`` when XDG_RUNTIME_DIR is unset), ``~/.config/containers/auth.json``,
``~/.docker/config.json`` (``$DOCKER_CONFIG/config.json``). All share the form
``{"auths": {"HOST[:PORT]": {"auth": base64("user:password")}}}``; credential helpers and
``credsStore`` are not run. ``unionfs login``/``logout`` write the first of the containers files
(podman's form), created 0600.

Insecure registries (plain HTTP or unverified TLS) and pull mirrors come from ``registries.conf``
(``$CONTAINERS_REGISTRIES_CONF``, else ``/etc/containers/registries.conf``): a ``[[registry]]``
table with ``location`` (or ``prefix``), ``insecure = true``, and ``[[registry.mirror]]`` tables
(``location``, ``insecure``), tried in order before the registry itself; with
``mirror-by-digest-only = true`` only for references pinned by digest. Short names are resolved
with its ``unqualified-search-registries`` and ``short-name-mode`` (pull.candidates).
"""
import base64
import json
import os
import tempfile
import tomllib

from .errors import ImageError

DOCKER_HUB_KEYS = ("docker.io", "https://index.docker.io/v1/", "index.docker.io",
                   "registry-1.docker.io")


def containers_auth_file():
    """Where login writes: $REGISTRY_AUTH_FILE, else the runtime dir's containers/auth.json."""
    env = os.environ.get("REGISTRY_AUTH_FILE")
    if env:
        return env
    run = os.environ.get("XDG_RUNTIME_DIR")
    if run:
        return os.path.join(run, "containers", "auth.json")
    if os.geteuid() == 0 or os.path.isdir("/run/containers/%d" % os.geteuid()):
        return "/run/containers/%d/auth.json" % os.geteuid()
    return os.path.join(os.path.expanduser("~"), ".config", "containers", "auth.json")


def auth_files():
    files = [containers_auth_file()]
    files.append(os.path.join(os.path.expanduser("~"), ".config", "containers", "auth.json"))
    docker = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    files.append(os.path.join(docker, "config.json"))
    seen, out = set(), []
    for f in files:
        if f not in seen:
            seen.add(f)
            out.append(f)
    return out


def _read(path):
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise ImageError("%s: cannot read credentials (%s)" % (path, e))
    return data if isinstance(data, dict) else {}


def _keys(registry):
    return DOCKER_HUB_KEYS if registry in DOCKER_HUB_KEYS else (
        registry, "https://" + registry, "http://" + registry)


def _decode(entry, path):
    raw = entry.get("auth") if isinstance(entry, dict) else None
    if not raw:
        return None
    try:
        user, sep, password = base64.b64decode(raw).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        raise ImageError("%s: malformed credentials" % path)
    return (user, password) if sep else None


def credentials(registry):
    """(user, password) for registry from the first auth file that names it, or None."""
    for path in auth_files():
        auths = _read(path).get("auths") or {}
        for key in _keys(registry):
            cred = _decode(auths.get(key), path)
            if cred:
                return cred
    return None


def _write(path, data):
    d = os.path.dirname(path) or "."
    os.makedirs(d, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".auth-")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent="\t")
            f.write("\n")
        os.rename(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def store_credentials(registry, user, password):
    path = containers_auth_file()
    data = _read(path)
    data.setdefault("auths", {})[registry] = {
        "auth": base64.b64encode(("%s:%s" % (user, password)).encode()).decode()}
    _write(path, data)
    return path


def remove_credentials(registry):
    """Forget registry in the containers auth file; False when it was not there."""
    path = containers_auth_file()
    data = _read(path)
    auths = data.get("auths") or {}
    hit = [k for k in _keys(registry) if k in auths]
    for k in hit:
        del auths[k]
    if hit:
        _write(path, data)
    return bool(hit)


# ---- registries.conf ----------------------------------------------------------------------------

def registries_conf():
    path = os.environ.get("CONTAINERS_REGISTRIES_CONF") or "/etc/containers/registries.conf"
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ImageError("%s: cannot read (%s)" % (path, e))


def _entries():
    for entry in registries_conf().get("registry") or []:
        if isinstance(entry, dict):
            loc = entry.get("prefix") or entry.get("location") or ""
            if isinstance(loc, str) and loc:
                yield loc, entry


def is_insecure(registry):
    """Whether registries.conf marks registry insecure (itself, or as a mirror)."""
    for loc, entry in _entries():
        if entry.get("insecure") and registry == loc.split("/")[0]:
            return True
        for m in entry.get("mirror") or []:
            if isinstance(m, dict) and m.get("insecure") \
                    and registry == str(m.get("location") or "").split("/")[0]:
                return True
    return False


def mirrors(name, by_digest):
    """[(mirror's 'host[/path]' name for `name`, insecure)] for a 'registry/repository' name, from
    the registries.conf entry with the longest matching prefix."""
    best = None
    for loc, entry in _entries():
        if (name == loc or name.startswith(loc + "/")) and (best is None or len(loc) > len(best[0])):
            best = (loc, entry)
    if best is None:
        return []
    loc, entry = best
    if entry.get("mirror-by-digest-only") and not by_digest:
        return []
    out = []
    for m in entry.get("mirror") or []:
        if isinstance(m, dict) and isinstance(m.get("location"), str) and m["location"]:
            out.append((m["location"].rstrip("/") + name[len(loc):], bool(m.get("insecure"))))
    return out


SHORT_NAME_MODES = ("enforcing", "permissive", "disabled")


def search_registries():
    """registries.conf's unqualified-search-registries, in order ([] when unset)."""
    conf = registries_conf()
    regs = conf.get("unqualified-search-registries") or []
    if not isinstance(regs, list) or not all(isinstance(r, str) and r for r in regs):
        raise ImageError("registries.conf: unqualified-search-registries must be a list of "
                         "registry names")
    return regs


def short_name_mode():
    """registries.conf's short-name-mode ('enforcing' when unset, as podman has it)."""
    mode = registries_conf().get("short-name-mode") or "enforcing"
    if mode not in SHORT_NAME_MODES:
        raise ImageError("registries.conf: short-name-mode %r is not one of %s" % (
            mode, ", ".join(SHORT_NAME_MODES)))
    return mode
