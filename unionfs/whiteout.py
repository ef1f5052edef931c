"""Every whiteout, opaque and redirect encoding unionfs reads or writes, in one place.

Formats read (in lower layers; the upper is read in the kernel's format only):

* **Kernel whiteout**: a character device with device number 0/0 at the deleted name.
* **Kernel xattr whiteout** (Linux 6.7+): a zero-size regular file carrying ``<ns>overlay.whiteout``
  inside a directory marked with ``<ns>overlay.opaque = "x"`` (or ``<ns>overlay.whiteouts``), which says
  "this directory is not opaque but contains xattr whiteouts".
* **Opaque directory**: ``<ns>overlay.opaque = "y"`` on the directory: nothing below it is merged.
* **Redirect**: ``<ns>overlay.redirect`` on a renamed directory: lower layers are searched at this
  path instead of the directory's own name. A value starting with ``/`` is absolute from the layer
  root; otherwise it is a single name in the parent's lower directories.
* **OCI / aufs**: a file ``.wh.<name>`` hides ``<name>`` in lower layers; ``.wh..wh..opq`` makes its
  directory opaque. Both are invisible through the mount.

``<ns>`` is ``trusted.`` (the kernel's default, needs CAP_SYS_ADMIN) or ``user.`` (the kernel's
``userxattr`` mode); lowers are read in both.

Formats written (in the upper, always the kernel's, so the kernel can mount what unionfs wrote):
char 0/0 whiteouts, ``<ns>overlay.opaque=y``, ``<ns>overlay.redirect``. unionfs also keeps its own
bookkeeping under ``<ns>overlay.unionfs.*`` (the original inode number of a copied-up file); the kernel
ignores names it does not know, and both hide every ``<ns>overlay.*`` xattr from users.

Names beginning with ``.wh.`` cannot be created through the mount (EINVAL): such a file would read as a
whiteout once the upper is used as an image layer.
"""
import errno
import os
import stat

WH_PREFIX = ".wh."
WH_OPAQUE = ".wh..wh..opq"

TRUSTED = "trusted.overlay."
USER = "user.overlay."
READ_PREFIXES = (TRUSTED, USER)

_NOATTR = (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM)


def is_whiteout_stat(st):
    """A kernel whiteout: character device 0/0."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_reserved_name(name):
    """Names a user may not create: they would read as OCI whiteouts in a layer."""
    return name.startswith(WH_PREFIX)


def oci_whiteout_target(name):
    """For '.wh.x' return 'x'; for the opaque marker return ''; else None."""
    if not name.startswith(WH_PREFIX):
        return None
    if name == WH_OPAQUE:
        return ""
    return name[len(WH_PREFIX):]


def is_private_xattr(name, prefixes=READ_PREFIXES):
    return name.startswith(prefixes)


def _get(path, name):
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError as e:
        if e.errno in _NOATTR:
            return None
        raise


def dir_markers(path, prefixes=READ_PREFIXES):
    """(opaque, redirect, has_xattr_whiteouts) for the real directory at path."""
    opaque = False
    redirect = None
    xwh = False
    try:
        # one listxattr answers "no markers" for almost every directory
        present = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno in _NOATTR:
            return opaque, redirect, xwh
        raise
    if not any(name.startswith(prefixes) for name in present):
        return opaque, redirect, xwh
    for ns in prefixes:
        v = _get(path, ns + "opaque")
        if v == b"y":
            opaque = True
        elif v == b"x":
            xwh = True
        if _get(path, ns + "whiteouts") is not None:
            xwh = True
        if redirect is None:
            r = _get(path, ns + "redirect")
            if r:
                redirect = os.fsdecode(r)
    return opaque, redirect, xwh


def is_xattr_whiteout(path, st, prefixes=READ_PREFIXES):
    """A zero-size regular file (or fifo) marked <ns>overlay.whiteout, in a directory that allows them."""
    if not (stat.S_ISREG(st.st_mode) and st.st_size == 0) and not stat.S_ISFIFO(st.st_mode):
        return False
    return any(_get(path, ns + "whiteout") is not None for ns in prefixes)


class Writer:
    """Writes the kernel's format into the upper layer under one xattr namespace."""

    def __init__(self, prefix=TRUSTED):
        self.prefix = prefix
        self.opaque_name = prefix + "opaque"
        self.redirect_name = prefix + "redirect"
        self.ino_name = prefix + "unionfs.ino"

    @staticmethod
    def make_whiteout(path):
        os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))

    def set_opaque(self, path):
        os.setxattr(path, self.opaque_name, b"y", follow_symlinks=False)

    def set_redirect(self, path, value):
        os.setxattr(path, self.redirect_name, os.fsencode(value), follow_symlinks=False)

    def get_redirect(self, path):
        v = _get(path, self.redirect_name)
        return os.fsdecode(v) if v else None

    def set_origin_ino(self, path, ino):
        os.setxattr(path, self.ino_name, b"%d" % ino, follow_symlinks=False)

    def get_origin_ino(self, path):
        v = _get(path, self.ino_name)
        try:
            return int(v) if v else None
        except ValueError:
            return None
