"""registries.conf, read as podman reads it (containers-registries.conf(5) and .conf.d(5)).

The main file is ``$CONTAINERS_REGISTRIES_CONF``, else ``~/.config/containers/registries.conf``
when it exists, else ``/etc/containers/registries.conf``. Drop-ins (``*.conf``, in name order)
come from ``$CONTAINERS_REGISTRIES_CONF_DIR`` alone when set; else, with the user's main file,
from ``~/.config/containers/registries.conf.d``; else from ``/etc/containers/registries.conf.d``
then the user's. Each drop-in overrides what it sets: ``unqualified-search-registries`` and
``short-name-mode`` whole, ``[[registry]]`` tables by prefix, ``[aliases]`` name by name (an
empty value erases an alias).

What unionfs takes from it: ``[[registry]]`` tables (``prefix``/``location``, ``insecure``,
``[[registry.mirror]]`` with ``location`` and ``insecure``, ``mirror-by-digest-only``),
``unqualified-search-registries``, ``short-name-mode`` and ``[aliases]`` (short name -> fully
qualified repository; shortnames.py resolves with them). The v1 format (``[registries.search]``)
is not read.
"""
import os
import tomllib

from . import reference
from .errors import ImageError

SYSTEM_CONF = "/etc/containers/registries.conf"
SYSTEM_DIR = "/etc/containers/registries.conf.d"
SHORT_NAME_MODES = ("enforcing", "permissive", "disabled")


def _user(name):
    return os.path.join(os.path.expanduser("~"), ".config", "containers", name)


def sources():
    """(main file, [drop-in directories]) in the order podman reads them."""
    env = os.environ.get("CONTAINERS_REGISTRIES_CONF")
    env_dir = os.environ.get("CONTAINERS_REGISTRIES_CONF_DIR")
    user = _user("registries.conf")
    if not env and os.path.exists(user):
        return user, [env_dir] if env_dir else [_user("registries.conf.d")]
    return env or SYSTEM_CONF, [env_dir] if env_dir else [SYSTEM_DIR, _user("registries.conf.d")]


def _load(path, missing_ok):
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        if missing_ok:
            return {}
        raise ImageError("%s: cannot read (no such file)" % path)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ImageError("%s: cannot read (%s)" % (path, e))
    aliases = data.get("aliases", {})
    if not isinstance(aliases, dict) or not all(isinstance(v, str) for v in aliases.values()):
        raise ImageError("%s: [aliases] must map short names to strings" % path)
    for name, value in aliases.items():
        _check_alias(path, name, value)
    return data


def _check_alias(path, name, value):
    """As podman checks them: the name a short repository name, the value a repository with a
    registry, neither with a tag or digest."""
    bad = None
    if "@" in name or ":" in name.rpartition("/")[2] or not reference.is_short(name):
        bad = "the name must be a short name without tag or digest"
    elif value and ("@" in value or ":" in value.rpartition("/")[2]
                    or reference.is_short(value)):
        bad = "the value must be REGISTRY/REPOSITORY, without tag or digest"
    else:
        try:
            reference.parse(name)
            if value:
                reference.parse(value)
        except ImageError as e:
            bad = str(e)
    if bad:
        raise ImageError("%s: alias %r = %r: %s" % (path, name, value, bad))


def _prefix(entry):
    loc = entry.get("prefix") or entry.get("location") or ""
    return loc if isinstance(loc, str) else ""


def _merge(conf, drop):
    for key in ("unqualified-search-registries", "short-name-mode"):
        if key in drop:
            conf[key] = drop[key]
    if "registry" in drop:
        by_prefix = {_prefix(e): e for e in conf.get("registry") or [] if isinstance(e, dict)}
        for e in drop.get("registry") or []:
            if isinstance(e, dict):
                by_prefix[_prefix(e)] = e
        conf["registry"] = list(by_prefix.values())
    conf["aliases"] = dict(conf.get("aliases") or {}, **(drop.get("aliases") or {}))


def load():
    """The merged configuration, a dict in the file's own keys ({} when there is none)."""
    main, dirs = sources()
    conf = _load(main, missing_ok=main == SYSTEM_CONF or main == _user("registries.conf"))
    for d in dirs:
        try:
            names = sorted(n for n in os.listdir(d) if n.endswith(".conf"))
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as e:
            raise ImageError("%s: cannot read (%s)" % (d, e.strerror))
        for n in names:
            if os.path.isfile(os.path.join(d, n)):
                _merge(conf, _load(os.path.join(d, n), missing_ok=True))
    return conf


def _entries(conf=None):
    for entry in (conf if conf is not None else load()).get("registry") or []:
        if isinstance(entry, dict) and _prefix(entry):
            yield _prefix(entry), entry


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


def search_registries(conf=None):
    """unqualified-search-registries, in order ([] when unset)."""
    regs = (conf if conf is not None else load()).get("unqualified-search-registries") or []
    if not isinstance(regs, list) or not all(isinstance(r, str) and r for r in regs):
        raise ImageError("registries.conf: unqualified-search-registries must be a list of "
                         "registry names")
    return regs


def short_name_mode(conf=None):
    """short-name-mode; 'enforcing' when unset (unionfs never prompts, so an ambiguous short name
    is an error rather than a guess; c/image's own default is 'permissive')."""
    mode = (conf if conf is not None else load()).get("short-name-mode") or "enforcing"
    if mode not in SHORT_NAME_MODES:
        raise ImageError("registries.conf: short-name-mode %r is not one of %s" % (
            mode, ", ".join(SHORT_NAME_MODES)))
    return mode


def alias(name, conf=None):
    """The fully qualified repository [aliases] gives for a short name (no tag or digest), or
    None (also when a drop-in erased it with "")."""
    value = ((conf if conf is not None else load()).get("aliases") or {}).get(name)
    return value or None
