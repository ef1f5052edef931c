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
"""
import errno
import os
import stat

from . import whiteout as wo
from .sysutil import lchmod

OVERRIDE = wo.OVERRIDE_XATTRS
_NOATTR = (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP)


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
    """A stat result with owner and mode as the mount shows them (other fields as on disk)."""
    __slots__ = ("st_mode", "st_uid", "st_gid", "_st")

    def __init__(self, st, uid, gid, mode):
        self._st = st
        self.st_uid = uid
        self.st_gid = gid
        self.st_mode = mode

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
        """(uid, gid, mode bits) stored in the override xattr of a path or fd, or None."""
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
        try:
            uid, gid, mode = v.split(b":")[:3]
            return int(uid), int(gid), int(mode, 8) & 0o7777
        except ValueError:
            return None

    def show(self, st, target):
        """st as the mount shows it; target (real path or fd) is read for an override."""
        uid, gid, mode = st.st_uid, st.st_gid, st.st_mode
        ov = self.read_override(target) if self.override else None
        if ov is not None:
            uid, gid = ov[0], ov[1]
            mode = stat.S_IFMT(mode) | ov[2]
        uid = self.squash_uid if self.squash_uid is not None else self.uids.shown(uid)
        gid = self.squash_gid if self.squash_gid is not None else self.gids.shown(gid)
        return Shown(st, uid, gid, mode)

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
        cur_uid, cur_gid, cur_mode = ov if ov is not None else (
            st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))
        uid = cur_uid if uid == -1 else uid
        gid = cur_gid if gid == -1 else gid
        mode = cur_mode if mode is None else stat.S_IMODE(mode)
        os.setxattr(real, self.override, b"%d:%d:%o" % (uid, gid, mode), follow_symlinks=False)
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
