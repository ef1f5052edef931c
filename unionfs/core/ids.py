"""Owners as the mount shows them and as the layers store them: uid/gid mapping, squashing, and
ownership kept in an xattr where the daemon may not chown.

The option names and their meaning are fuse-overlayfs's, so container storage can pass the same
strings to either:

* ``uidmapping=A:B:N[:A2:B2:N2...]`` (``gidmapping`` alike): an id ``A+k`` on disk (k < N) is
  shown through the mount as ``B+k``; an id ``B+k`` written through the mount (chown, the owner
  of a new file) is stored as ``A+k``. An id no range covers is shown, or stored, as the
  overflow id (65534, ``/proc/sys/kernel/overflowuid``).
* ``squash_to_root``, ``squash_to_uid=N``, ``squash_to_gid=N``: every entry is shown owned by 0
  (or N); chown through the mount succeeds and changes what is stored, as in fuse-overlayfs.
* ``xattr_permissions=2`` (``1``: the ``security.`` namespace, ``0``: off): owner and mode live in
  ``user.containers.override_stat`` = ``uid:gid:mode`` (mode in octal, ids as stored), the form
  fuse-overlayfs and container storage write, read back on every stat. unionfs turns it on by
  itself when the daemon is not root, and then uses it only where the real chown fails with
  EPERM (a file copied up from another owner, a chown to another user); everything the daemon
  may do for real is done for real. The xattr is not visible through the mount.

The override may carry the entry's type, fuse-overlayfs's and container storage's
``uid:gid:mode:type`` (type ``file``, ``dir``, ``symlink``, ``pipe``, ``socket``,
``char-MAJ-MIN``, ``block-MAJ-MIN``): what a user without root cannot create is stored as an empty
regular file (a device node, a FIFO) or as a regular file holding the link's target (a symlink,
whose inode can carry no ``user.*`` xattr), and is shown as the type it records: ``st_mode``,
``st_rdev``, the listing's type, ``readlink``. A type is honoured on regular files only; on
anything else it must match the entry's own. A file capability that may not be set
(``security.capability`` needs CAP_SETFCAP) is kept in ``user.unionfs.security.capability`` and
shown as ``security.capability``. No storage name is ever visible through the mount, in any
mode, nor may it be set or removed there (the override names are refused by the union,
``user.unionfs.*``, the which-report namespace, by control.py), so only the daemon and the import
write them. unionfs writes them when it imports an image without root (image/extract.py, which
drops any copy a layer tar brings); whoever can write a store's layers can make its files say
anything anyway, so trusting these xattrs there trusts nobody but the store's owner.
"""
import errno
import os
import stat
from collections import namedtuple

from . import whiteout as wo
from .sysutil import lchmod

# the storage names live with every other on-disk name, in whiteout.py
OVERRIDE = wo.OVERRIDE_XATTRS
CAP = "security.capability"
CAP_STORE = wo.CAP_STORE
HIDDEN_XATTRS = frozenset(OVERRIDE.values()) | {CAP_STORE}
_NOATTR = (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP)
_KINDS = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK,
          "pipe": stat.S_IFIFO, "socket": stat.S_IFSOCK}
_NAMES = {v: k for k, v in _KINDS.items()}
_DEVICES = {"char": stat.S_IFCHR, "block": stat.S_IFBLK}
LINK_MAX = 4096  # a symlink kept as a file holds at most PATH_MAX bytes of target

# what an override records: ids as stored, permission bits, and the type (an S_IFMT value, None
# when not recorded) with its device number (0 but for char and block devices)
Override = namedtuple("Override", "uid gid mode fmt rdev")


def parse_override(value):
    """Override of an xattr value 'uid:gid:mode[:type]', or None if it is not one. An unknown
    type is left out (the owner and mode still count)."""
    try:
        fields = value.decode("ascii").split(":")
        uid, gid, mode = int(fields[0]), int(fields[1]), int(fields[2], 8) & 0o7777
    except (UnicodeDecodeError, ValueError, IndexError):
        return None
    if uid < 0 or gid < 0:
        return None
    fmt, rdev = None, 0
    kind = fields[3] if len(fields) > 3 else ""
    if kind in _KINDS:
        fmt = _KINDS[kind]
    else:
        dev = kind.split("-")
        if len(dev) == 3 and dev[0] in _DEVICES and dev[1].isdigit() and dev[2].isdigit():
            try:
                fmt, rdev = _DEVICES[dev[0]], os.makedev(int(dev[1]), int(dev[2]))
            except (OverflowError, ValueError):
                fmt, rdev = None, 0
    return Override(uid, gid, mode, fmt, rdev)


def format_override(uid, gid, mode, fmt=None, rdev=0):
    """The xattr value for an Override's fields (the type only where one is given)."""
    value = b"%d:%d:%o" % (uid, gid, stat.S_IMODE(mode))
    if fmt in (stat.S_IFCHR, stat.S_IFBLK):
        value += b":%s-%d-%d" % (b"char" if fmt == stat.S_IFCHR else b"block",
                                 os.major(rdev), os.minor(rdev))
    elif fmt is not None:
        value += b":" + _NAMES[fmt].encode()
    return value


def _overflow(kind):
    try:
        with open("/proc/sys/kernel/overflow%s" % kind) as f:
            return int(f.read())
    except (OSError, ValueError):
        return 65534


def parse_mapping(value):
    """'A:B:N[:A:B:N...]' -> [(A, B, N)]; ValueError with a message on anything else. Empty
    fields are skipped, as fuse-overlayfs does: container storage writes ':0:100000:65536'."""
    fields = [f for f in value.split(":") if f]
    if len(fields) % 3 or not fields:
        raise ValueError("needs groups of three numbers A:B:N, not %r" % value)
    try:
        nums = [int(f) for f in fields]
    except ValueError:
        raise ValueError("needs numbers, not %r" % value)
    if any(n < 0 for n in nums) or any(nums[i + 2] == 0 for i in range(0, len(nums), 3)):
        raise ValueError("needs non-negative ids and non-zero lengths, not %r" % value)
    return [tuple(nums[i:i + 3]) for i in range(0, len(nums), 3)]


def stored_view(real, st):
    """(S_IFMT, mode bits, uid, gid, rdev) of the entry at real path real (lstat st) as a layer
    made from it must record it: its override xattr, if any, wins (for commit and inspection,
    which read layers and uppers without a mount)."""
    fmt, mode, uid, gid, rdev = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid,
                                 st.st_gid, st.st_rdev)
    if fmt in (stat.S_IFREG, stat.S_IFDIR):   # the only types that carry user.* xattrs
        for name in (OVERRIDE[2], OVERRIDE[1]):
            try:
                ov = parse_override(os.getxattr(real, name, follow_symlinks=False))
            except OSError:
                continue
            if ov is not None:
                uid, gid, mode = ov.uid, ov.gid, ov.mode
                if ov.fmt is not None and fmt == stat.S_IFREG:
                    fmt, rdev = ov.fmt, ov.rdev
                break
    return fmt, mode, uid, gid, rdev


def recorded_xattrs(real):
    """{name: value} of the xattrs of the entry at real path `real` as a layer made from it
    records them: overlay markers and storage names left out, a stored capability as
    security.capability (for commit and inspection)."""
    try:
        names = os.listxattr(real, follow_symlinks=False)
    except OSError:
        return {}
    out = {}
    for n in sorted(names):
        if wo.is_private_xattr(n):
            continue
        try:
            out[n] = os.getxattr(real, n, follow_symlinks=False)
        except OSError:
            continue
    return stored_xattrs(out)


def stored_xattrs(xattrs):
    """{name: value} of an entry's xattrs as a layer must record them: storage names left out,
    a stored capability as security.capability."""
    out = {k: v for k, v in xattrs.items() if k not in HIDDEN_XATTRS}
    if CAP_STORE in xattrs:
        out.setdefault(CAP, xattrs[CAP_STORE])
    return out


class _Map:
    def __init__(self, ranges, overflow):
        self.ranges = list(ranges)
        self.overflow = overflow

    def shown(self, disk_id):
        if not self.ranges:
            return disk_id
        for disk, shown, n in self.ranges:
            if disk <= disk_id < disk + n:
                return shown + disk_id - disk
        return self.overflow

    def stored(self, shown_id):
        if not self.ranges or shown_id == -1:
            return shown_id
        for disk, shown, n in self.ranges:
            if shown <= shown_id < shown + n:
                return disk + shown_id - shown
        return self.overflow


class Shown:
    """A stat result with owner, mode (type included) and device number as the mount shows
    them (other fields as on disk)."""
    __slots__ = ("st_mode", "st_uid", "st_gid", "st_rdev", "_st")
    # not the wrapped packed stat's all-fields unpack (layers.Stat.fields), which __getattr__
    # would hand out: it would show the owner and mode on disk
    fields = None

    def __init__(self, st, uid, gid, mode, rdev=None):
        self._st = st
        self.st_uid = uid
        self.st_gid = gid
        self.st_mode = mode
        self.st_rdev = st.st_rdev if rdev is None else rdev

    def __getattr__(self, name):
        return getattr(self._st, name)


class IdMapper:
    def __init__(self, uidmap=(), gidmap=(), squash_uid=None, squash_gid=None,
                 xattr_permissions=None):
        self.uids = _Map(uidmap, _overflow("uid"))
        self.gids = _Map(gidmap, _overflow("gid"))
        self.squash_uid = squash_uid
        self.squash_gid = squash_gid
        if xattr_permissions is None:
            xattr_permissions = 2 if os.geteuid() != 0 else 0
        self.override = OVERRIDE.get(xattr_permissions)
        # nothing to rewrite: stat results pass through untouched (the usual, fast case)
        self.active = bool(uidmap or gidmap or squash_uid is not None or squash_gid is not None
                           or self.override)

    @property
    def squashing(self):
        return self.squash_uid is not None or self.squash_gid is not None

    # ---- reading ----------------------------------------------------------------------------

    def read_override(self, target):
        """The Override stored in the override xattr of a path or fd, or None."""
        if self.override is None:
            return None
        try:
            if isinstance(target, int):
                v = os.getxattr(target, self.override)
            else:
                v = os.getxattr(target, self.override, follow_symlinks=False)
        except OSError as e:
            if e.errno in _NOATTR or e.errno in (errno.EPERM, errno.EACCES):
                return None
            raise
        return parse_override(v)

    def show(self, st, target):
        """st as the mount shows it; target (real path or fd) is read for an override."""
        uid, gid, mode = st.st_uid, st.st_gid, st.st_mode
        rdev = None
        ov = self.read_override(target) if self.override else None
        if ov is not None:
            uid, gid = ov.uid, ov.gid
            fmt = stat.S_IFMT(mode)
            if ov.fmt is not None and fmt == stat.S_IFREG:
                fmt, rdev = ov.fmt, ov.rdev   # kept as a regular file (a device, FIFO, link)
            mode = fmt | ov.mode
        uid = self.squash_uid if self.squash_uid is not None else self.uids.shown(uid)
        gid = self.squash_gid if self.squash_gid is not None else self.gids.shown(gid)
        return Shown(st, uid, gid, mode, rdev)

    def readlink(self, real):
        """The target of a symlink kept as a regular file; EINVAL for anything else, as
        readlink(2) answers for what is not a symlink."""
        ov = self.read_override(real)
        if ov is None or ov.fmt != stat.S_IFLNK:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), real)
        # O_NONBLOCK: a FIFO put in the file's place must not hold the daemon
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), real)
            return os.fsdecode(os.pread(fd, LINK_MAX, 0))
        finally:
            os.close(fd)

    def getxattr(self, real, name):
        """An xattr of the real entry; security.capability falls back to where a daemon
        without CAP_SETFCAP keeps it, when the mount honours stored owners."""
        try:
            return os.getxattr(real, name, follow_symlinks=False)
        except OSError as e:
            if name != CAP or self.override is None or e.errno not in _NOATTR:
                raise
            try:
                return os.getxattr(real, CAP_STORE, follow_symlinks=False)
            except OSError:
                raise e from None

    def removexattr(self, real, name):
        """removexattr; the capability goes from where getxattr finds it, both places."""
        try:
            os.removexattr(real, name, follow_symlinks=False)
        except OSError as e:
            if name != CAP or self.override is None or e.errno not in _NOATTR:
                raise
            try:
                os.removexattr(real, CAP_STORE, follow_symlinks=False)
            except OSError:
                raise e from None
            return
        if name == CAP and self.override is not None:
            try:
                os.removexattr(real, CAP_STORE, follow_symlinks=False)
            except OSError as e:
                if e.errno not in _NOATTR:
                    raise

    def listxattr(self, names):
        """The names of listxattr(2) as the mount shows them: every name the daemon interprets
        hidden (whiteout.is_interpreted_xattr), a stored capability listed as
        security.capability."""
        shown = [n for n in names if not wo.is_interpreted_xattr(n)]
        if self.override is not None and CAP_STORE in names and CAP not in names:
            shown.append(CAP)
        return shown

    # ---- writing ----------------------------------------------------------------------------

    def stored(self, uid, gid):
        return self.uids.stored(uid), self.gids.stored(gid)

    def chown(self, real, uid, gid, mode=None):
        """Store owner (uid, gid as stored; -1 keeps one) on the entry at real path `real`.
        Where the daemon may not chown, the override xattr records it (with `mode`, or the
        entry's current mode)."""
        try:
            os.chown(real, uid, gid, follow_symlinks=False)
            ov = self.read_override(real) if self.override is not None else None
            if ov is not None:
                self._write_override(real, uid, gid, mode, ov)  # an older override would win
        except PermissionError:
            if self.override is None or stat.S_ISLNK(os.lstat(real).st_mode):
                if self.squashing:
                    return  # fuse-overlayfs reports success when squashing
                raise
            self._write_override(real, uid, gid, mode)
        except OSError:
            if not self.squashing:
                raise

    def _write_override(self, real, uid, gid, mode, ov=None):
        """Store uid, gid (-1: keep) and mode (None: keep) in the override xattr; ov is the
        override already read, if any."""
        st = os.lstat(real)
        if ov is None:
            ov = self.read_override(real)
        if ov is None:
            ov = Override(st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), None, 0)
        uid = ov.uid if uid == -1 else uid
        gid = ov.gid if gid == -1 else gid
        mode = ov.mode if mode is None else stat.S_IMODE(mode)
        # the recorded type stays: the entry is still the device, FIFO or link it stands for
        os.setxattr(real, self.override, format_override(uid, gid, mode, ov.fmt, ov.rdev),
                    follow_symlinks=False)
        # the daemon itself must still read and write what it stores for others
        owner_bits = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
        if stat.S_IMODE(st.st_mode) & owner_bits != owner_bits:
            lchmod(real, stat.S_IMODE(st.st_mode) | owner_bits)

    def chmod(self, real, mode):
        """chmod; where the entry's owner lives in the override xattr, its mode does too."""
        ov = self.read_override(real) if self.override is not None else None
        if ov is not None:
            self._write_override(real, -1, -1, mode, ov)
        else:
            lchmod(real, stat.S_IMODE(mode))
