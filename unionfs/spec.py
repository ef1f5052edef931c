"""Mount options and spec files: declared once, parsed and validated before anything is mounted.

Every problem is reported as a SpecError whose message is one line naming the bad path or option.
"""
import os
from dataclasses import dataclass, field

from .errors import UnionfsError
from .core.ids import parse_mapping
from .mounts import dead_fuse_mount, is_unionfs_mount, mounted_paths

# FUSE and mount options (name -> takes a value), for the FUSE server (unionfs/mount.py)
FUSE_OPTIONS = {
    "allow_other": False, "allow_root": False, "default_permissions": False,
    "dev": False, "nodev": False, "suid": False, "nosuid": False, "exec": False, "noexec": False,
    "atime": False, "noatime": False, "relatime": False, "norelatime": False,
    "strictatime": False, "nostrictatime": False, "sync": False, "async": False,
    "dirsync": False, "max_read": True, "fsname": True, "subtype": True,
    "entry_timeout": True, "attr_timeout": True, "negative_timeout": True,
    "kernel_cache": False, "auto_cache": False, "max_idle_threads": True,
    "uring": False, "nopassthrough": False,
}
# accepted for compatibility with the kernel's and container tools' option strings, no effect
IGNORED_OPTIONS = {
    "rw", "context", "fscontext", "defcontext", "rootcontext", "xino", "index", "metacopy",
    "nfs_export", "_netdev", "nofail", "auto", "noauto", "user", "nouser", "users", "default",
    # fuse-overlayfs's tuning options, which container storage may pass
    "static_nlink", "noacl", "threaded", "writeback", "timeout", "plugins", "debug",
}
SAFE_DEFAULTS = ("nodev", "nosuid")
# option -> (type, smallest value), checked before mounting, not inside the daemon
_NUMERIC_OPTIONS = {"max_read": (int, 0), "max_idle_threads": (int, 1),
                    "entry_timeout": (float, 0), "attr_timeout": (float, 0),
                    "negative_timeout": (float, 0), "squash_to_uid": (int, 0),
                    "squash_to_gid": (int, 0), "xattr_permissions": (int, 0)}


def _check_number(name, value):
    kind, least = _NUMERIC_OPTIONS[name]
    try:
        ok = kind(value) >= least
    except ValueError:
        ok = False
    if not ok:
        raise SpecError("option %s needs a %s of at least %s, not %r" % (
            name, "whole number" if kind is int else "number", least, value))


class SpecError(UnionfsError):
    """A one-line, user-facing error about the mount request."""


@dataclass
class MountSpec:
    lowers: list
    mountpoint: str
    upper: str = None
    work: str = None
    redirect_dir: bool = True
    sync: bool = True
    read_only: bool = False
    fuse: dict = field(default_factory=dict)
    foreground: bool = False
    debug: bool = False
    # the upper's xattrs in the user.overlay.* namespace (the kernel's userxattr option)
    userxattr: bool = False
    # fuse-overlayfs's ownership options (ids.py): [(disk, shown, count)], squash ids, and
    # where owners live when the daemon may not chown (None: automatic)
    uidmap: list = field(default_factory=list)
    gidmap: list = field(default_factory=list)
    squash_uid: int = None
    squash_gid: int = None
    xattr_permissions: int = None
    # set by validate(): the mountpoint holds a dead unionfs FUSE mount (its daemon is gone) that
    # mount() detaches before mounting again
    dead_mount: bool = False

    def to_argv(self):
        """Arguments that re-create this spec in the daemon process."""
        opts = ["lowerdir=" + ":".join(escape_colon(l) for l in self.lowers)]
        if self.upper:
            opts += ["upperdir=" + escape_colon(self.upper), "workdir=" + escape_colon(self.work)]
        opts.append("redirect_dir=" + ("on" if self.redirect_dir else "off"))
        if not self.sync:
            opts.append("volatile")
        if self.read_only:
            opts.append("ro")
        if self.userxattr:
            opts.append("userxattr")
        for name, ranges in (("uidmapping", self.uidmap), ("gidmapping", self.gidmap)):
            if ranges:
                opts.append(name + "=" + ":".join("%d:%d:%d" % r for r in ranges))
        for name, value in (("squash_to_uid", self.squash_uid), ("squash_to_gid", self.squash_gid),
                            ("xattr_permissions", self.xattr_permissions)):
            if value is not None:
                opts.append("%s=%d" % (name, value))
        for k, v in self.fuse.items():
            opts.append(k if v is True else "%s=%s" % (k, v))
        return ["-o", ",".join(opts), self.mountpoint]


def escape_colon(path):
    return path.replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")


def split_escaped(s, sep, keep_escapes=False):
    """Split on sep, honouring backslash escapes (the kernel's lowerdir syntax: '\\:' is ':').

    With keep_escapes the escapes stay in each field, for a second, per-field split."""
    parts, cur, i = [], [], 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            cur.append(s[i:i + 2] if keep_escapes else s[i + 1])
            i += 2
            continue
        if c == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    parts.append("".join(cur))
    return parts


def parse_options(optstrings, spec):
    """Apply -o option strings (comma separated, possibly repeated) to spec."""
    for optstring in optstrings:
        for opt in split_escaped(optstring, ",", keep_escapes=True):
            if not opt:
                continue
            name, eq, value = opt.partition("=")
            if name == "lowerdir":
                spec.lowers = [p for p in split_escaped(value, ":")]
                if any(not p for p in spec.lowers):
                    raise SpecError("lowerdir has an empty layer path: %r" % value)
            elif name == "upperdir":
                spec.upper = unescape(value)
            elif name == "workdir":
                spec.work = unescape(value)
            elif name == "redirect_dir":
                if value not in ("on", "off", "follow", "nofollow"):
                    raise SpecError("redirect_dir must be on, off, follow or nofollow, not %r" % value)
                spec.redirect_dir = value in ("on", "follow")
            elif name == "volatile" or (name == "fsync" and value == "0"):
                spec.sync = False
            elif name == "fsync" and value == "1":
                spec.sync = True
            elif name == "userxattr":
                spec.userxattr = True
            elif name in ("uidmapping", "gidmapping"):
                try:
                    ranges = parse_mapping(unescape(value))
                except ValueError as e:
                    raise SpecError("option %s %s" % (name, e))
                setattr(spec, "uidmap" if name[0] == "u" else "gidmap", ranges)
            elif name == "squash_to_root":
                spec.squash_uid = 0 if spec.squash_uid is None else spec.squash_uid
                spec.squash_gid = 0 if spec.squash_gid is None else spec.squash_gid
            elif name in ("squash_to_uid", "squash_to_gid", "xattr_permissions"):
                _check_number(name, value)
                number = int(value)
                if name == "xattr_permissions":
                    if number not in (0, 1, 2):
                        raise SpecError("option xattr_permissions must be 0, 1 or 2, not %r" % value)
                    spec.xattr_permissions = number
                else:
                    setattr(spec, "squash_uid" if name[-3] == "u" else "squash_gid", number)
            elif name == "ro":
                spec.read_only = True
            elif name in FUSE_OPTIONS:
                if FUSE_OPTIONS[name] and not eq:
                    raise SpecError("option %s needs a value (%s=...)" % (name, name))
                if eq and name in _NUMERIC_OPTIONS:
                    _check_number(name, value)
                spec.fuse[name] = value if eq else True
            elif name in IGNORED_OPTIONS or name.startswith("x-"):
                continue
            else:
                raise SpecError("unknown mount option: %s" % name)


def unescape(s):
    return split_escaped(s, "\0")[0]


def load_spec_file(path):
    """Read a TOML mount spec: lower (list, top first), upper, work, options. Paths are relative
    to the spec file's directory."""
    import tomllib  # here: a mount's daemon reads no spec file, and tomllib costs it 1.3 MiB
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise SpecError("spec file %s: no such file" % path)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise SpecError("spec file %s: %s" % (path, str(e).splitlines()[0]))
    base = os.path.dirname(os.path.abspath(path))
    known = {"lower", "upper", "work", "options"}
    extra = set(data) - known
    if extra:
        raise SpecError("spec file %s: unknown key %s" % (path, sorted(extra)[0]))
    lower = data.get("lower")
    if isinstance(lower, str):
        lower = [lower]
    if not lower or not all(isinstance(l, str) for l in lower):
        raise SpecError("spec file %s: 'lower' must be a non-empty list of paths" % path)
    out = {"lower": [os.path.join(base, l) for l in lower]}
    for key in ("upper", "work"):
        if key in data:
            out[key] = os.path.join(base, data[key])
    opts = data.get("options", [])
    if isinstance(opts, str):
        opts = [opts]
    out["options"] = list(opts)
    return out


def _inside(a, b):
    """a is b or below b (both real paths)."""
    return a == b or a.startswith(b.rstrip("/") + "/")


def _dir(kind, path):
    if not os.path.lexists(path):
        raise SpecError("%s %s: no such directory" % (kind, path))
    if not os.path.isdir(path):
        raise SpecError("%s %s: not a directory" % (kind, path))
    return os.path.realpath(path)


def validate(spec, check_mountpoint=True):
    """Check every path and their relations; make paths absolute. Raises SpecError."""
    if not spec.lowers:
        raise SpecError("no lower layer given (--lower or -o lowerdir=)")
    if spec.upper is not None and spec.work is None:
        raise SpecError("upper dir %s given without a work dir (--work)" % spec.upper)
    if spec.work is not None and spec.upper is None:
        raise SpecError("work dir %s given without an upper dir (--upper)" % spec.work)
    lowers = [_dir("lower layer", l) for l in spec.lowers]
    layers = [("lower layer", l) for l in lowers]
    if spec.read_only:
        spec.upper = spec.work = None
    if spec.upper is not None:
        upper = _dir("upper dir", spec.upper)
        work = _dir("work dir", spec.work)
        for _, l in layers:
            if _inside(upper, l) or _inside(l, upper):
                raise SpecError("upper dir %s and lower layer %s overlap" % (upper, l))
            if _inside(work, l) or _inside(l, work):
                raise SpecError("work dir %s and lower layer %s overlap" % (work, l))
        if _inside(work, upper) or _inside(upper, work):
            raise SpecError("work dir %s and upper dir %s overlap" % (work, upper))
        if os.stat(work).st_dev != os.stat(upper).st_dev:
            raise SpecError("work dir %s is not on the upper dir's filesystem (%s)" % (work, upper))
        if not os.access(upper, os.W_OK) or not os.access(work, os.W_OK):
            raise SpecError("upper dir %s or work dir %s is not writable" % (upper, work))
        spec.upper, spec.work = upper, work
        layers += [("upper dir", upper), ("work dir", work)]
    spec.lowers = lowers
    dead = dead_fuse_mount(spec.mountpoint) if check_mountpoint else None
    if dead is not None:
        # stat of the mountpoint fails (ENOTCONN), so _dir() would call it missing: the dead
        # mount is checked like any mountpoint here and detached by mount.mount()
        mnt = os.path.realpath(spec.mountpoint)
        if not is_unionfs_mount(*dead):
            raise SpecError("mountpoint %s holds a dead %s mount (its daemon is gone), not a "
                            "unionfs one: detach it with fusermount3 -u -z %s" % (mnt, dead[0], mnt))
    else:
        mnt = _dir("mountpoint", spec.mountpoint)
    for kind, p in layers:
        if _inside(p, mnt) or _inside(mnt, p):
            raise SpecError("mountpoint %s and %s %s overlap" % (mnt, kind, p))
    if check_mountpoint and dead is None and mnt in mounted_paths():
        raise SpecError("mountpoint %s is already mounted" % mnt)
    spec.dead_mount = dead is not None
    spec.mountpoint = mnt
    return spec
