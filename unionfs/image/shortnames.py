"""Short names (no registry: ``alpine``, ``team/app:1``) to the references a pull tries, as
podman resolves them from registries.conf (registries_conf.py):

1. an ``[aliases]`` entry for the name without its tag or digest wins outright: ``"app" =
   "host:5000/team/app"`` makes ``app:1`` ``host:5000/team/app:1``; no search registry is asked;
2. else each of ``unqualified-search-registries``, in order; unionfs never prompts, so with
   ``short-name-mode = "enforcing"`` (the default here) more than one is an error listing the
   candidates, and ``permissive``/``disabled`` try them in order;
3. else docker.io (``library/`` for a one-component name), as docker does.

A name with a registry is itself. Aliases recorded by podman's prompt
(``short-name-aliases.conf``) are not read.
"""
from . import reference, registries_conf
from .errors import ImageError


def _strip(text):
    """(name, tag, digest) of a short reference, the name as written (no library/ added)."""
    body, _, digest = text.partition("@")
    head, sep, last = body.rpartition("/")
    last, _, tag = last.partition(":")
    return head + sep + last, tag or None, digest or None


def resolve_alias(text, conf=None):
    """The Reference an [aliases] entry makes of short-name text, or None."""
    name, tag, digest = _strip(text)
    target = registries_conf.alias(name, conf)
    if target is None:
        return None
    return reference.parse(target + (":" + tag if tag else "") + ("@" + digest if digest else ""))


def candidates(text):
    """The references to try, in order, for text (see the module's docstring)."""
    if not reference.is_short(text):
        return [reference.parse(text)]
    reference.parse(text)               # a bad name fails as itself, before any lookup
    conf = registries_conf.load()
    aliased = resolve_alias(text, conf)
    if aliased is not None:
        return [aliased]
    regs = registries_conf.search_registries(conf)
    if not regs:
        return [reference.parse(text)]
    refs = [reference.parse(text, registry=reference.parse_registry(r)) for r in regs]
    if len(refs) > 1 and registries_conf.short_name_mode(conf) == "enforcing":
        raise ImageError("%s is a short name and registries.conf lists %d search registries "
                         "(short-name-mode enforcing, no prompt): name one of %s, or give it an "
                         "[aliases] entry" % (text, len(refs), ", ".join(str(r) for r in refs)))
    return refs
