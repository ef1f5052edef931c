"""Who the user is to a registry: credentials, read and written where docker and podman keep them.

Files, first hit wins: ``$REGISTRY_AUTH_FILE``, ``${XDG_RUNTIME_DIR}/containers/auth.json`` (or
``/run/containers/<uid>/auth.json`` when XDG_RUNTIME_DIR is unset), ``~/.config/containers/auth.json``,
``~/.docker/config.json`` (``$DOCKER_CONFIG/config.json``). All share the form
``{"auths": {"HOST[:PORT]": {"auth": base64("user:password")}}, "credHelpers": {"HOST": "NAME"},
"credsStore": "NAME"}``. In each file, as docker reads its config.json: a ``credHelpers`` entry
for the registry decides alone (its helper's answer, or anonymous); else ``credsStore``'s helper
is asked, and the file's ``auths`` entry is the fallback; else the ``auths`` entry. Helpers are
the ``docker-credential-NAME`` programs (credhelpers.py).

``unionfs login`` stores through a helper when the containers auth file, else docker's
config.json, names one for the registry (``credHelpers``, then ``credsStore``), leaving
``"auths": {"HOST": {}}`` in that file as docker does; otherwise it writes the containers file
(podman's form), created 0600. ``logout`` erases through the same helper and removes the entries.
"""
import base64
import json
import os
import tempfile

from . import credhelpers
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


def docker_config():
    docker = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    return os.path.join(docker, "config.json")


def auth_files():
    files = [containers_auth_file(),
             os.path.join(os.path.expanduser("~"), ".config", "containers", "auth.json"),
             docker_config()]
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


def _helper(data, registry):
    """(helper name, whether it decides alone) a file names for registry: its credHelpers entry
    (alone), else its credsStore; (None, False) when neither."""
    helpers = data.get("credHelpers")
    if isinstance(helpers, dict):
        for key in _keys(registry):
            if isinstance(helpers.get(key), str) and helpers[key]:
                return helpers[key], True
    store = data.get("credsStore")
    if isinstance(store, str) and store:
        return store, False
    return None, False


def credentials(registry):
    """(user, password) for registry from the first auth file that has some, or None."""
    for path in auth_files():
        data = _read(path)
        helper, alone = _helper(data, registry)
        if helper:
            cred = credhelpers.get(helper, registry)
            if cred or alone:
                return cred
        auths = data.get("auths") or {}
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


def _drop(path, registry, keep=None):
    """Remove registry's auths entries from the file at path (then set auths[registry] = keep
    unless keep is None); True when there was one."""
    data = _read(path)
    auths = data.get("auths") if isinstance(data.get("auths"), dict) else {}
    hit = [k for k in _keys(registry) if k in auths]
    for k in hit:
        del auths[k]
    if keep is not None:
        auths[registry] = keep
    if hit or keep is not None:
        data["auths"] = auths
        _write(path, data)
    return bool(hit)


def _login_helper(registry):
    """(file, helper) login stores registry's credentials through: the containers auth file's,
    else docker's config.json's credHelpers entry or credsStore; (None, None) when neither."""
    for path in (containers_auth_file(), docker_config()):
        helper, _ = _helper(_read(path), registry)
        if helper:
            return path, helper
    return None, None


def store_credentials(registry, user, password):
    """Store through the configured helper, else in the containers auth file; returns the
    file that now names the registry."""
    path, helper = _login_helper(registry)
    if helper:
        credhelpers.store(helper, registry, user, password)
        own = containers_auth_file()
        if path != own and os.path.exists(own):     # a stale inline entry there would win
            _drop(own, registry)
        _drop(path, registry, keep={})         # docker's marker: logged in, secret elsewhere
        return path
    path = containers_auth_file()
    _drop(path, registry, keep={
        "auth": base64.b64encode(("%s:%s" % (user, password)).encode()).decode()})
    return path


def remove_credentials(registry):
    """Forget registry: in the helper login would use and in the containers auth file; False
    when neither had it."""
    removed = False
    path, helper = _login_helper(registry)
    if helper:
        removed = credhelpers.erase(helper, registry)
        removed = _drop(path, registry) or removed
    if os.path.exists(containers_auth_file()):
        removed = _drop(containers_auth_file(), registry) or removed
    return removed
