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

Owners, modes and types kept in ``user.containers.override_stat`` (``uid:gid:mode[:type]``) and file
capabilities kept in ``user.unionfs.security.capability``, which an image import without root
writes and mounts that honour stored owners read, are ids.py's; neither is ever visible through
the mount.

Names beginning with ``.wh.`` cannot be created through the mount (EINVAL): such a file would read as a
whiteout once the upper is used as an image layer.

Over 400 lines on purpose: every on-disk name and check, the writers and the upper's recorded
format live in this one module, so the formats are documented and changed in one place.
"""
import errno
import os
import shutil
import stat
import threading

from .sysutil import O_PATH, RENAME_EXCHANGE, RENAME_WHITEOUT, open_beneath, renameat2

# a filesystem (or a policy) that will not hard-link a whiteout: each gets its own inode
_NO_LINK = (errno.EPERM, errno.EACCES, errno.EXDEV, errno.EOPNOTSUPP, errno.EINVAL)

WH_PREFIX = ".wh."
WH_OPAQUE = ".wh..wh..opq"
WH_META = ".wh..wh."   # aufs metadata names (.wh..wh.plnk ...): only the opaque marker is one

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


def has_opaque_marker(where, dir_fd=None, beneath=False):
    """Does the directory at where (a path, relative to dir_fd if given) hold the OCI opaque
    marker ``.wh..wh..opq``? Any entry there counts. With beneath, where is reached with no
    symlink and never above dir_fd (openat2): a layer's writer may have swapped the directory for
    a symlink since it was looked at."""
    marker = os.path.join(where, WH_OPAQUE)
    try:
        if beneath:
            os.close(open_beneath(dir_fd, marker, O_PATH | os.O_NOFOLLOW))
        else:
            os.lstat(marker, dir_fd=dir_fd)
        return True
    except OSError:
        return False


def is_private_xattr(name, prefixes=READ_PREFIXES):
    return name.startswith(prefixes)


# Owner and mode kept for entries the daemon may not chown (fuse-overlayfs's form; ids.py):
# by namespace, as the xattr_permissions option numbers them.
OVERRIDE_XATTRS = {1: "security.containers.override_stat", 2: "user.containers.override_stat"}
# a file capability kept by a daemon that may not set security.capability (a rootless import)
CAP_STORE = "user.unionfs.security.capability"
_INTERPRETED = frozenset(OVERRIDE_XATTRS.values()) | {CAP_STORE}


def is_interpreted_xattr(name):
    """Is this an xattr the daemon reads as state (overlay markers, owner overrides)? Such a
    name is never read, listed, set or removed through the mount, whatever the options: a user
    who could set one could make a later mount show a setuid-root file or revive a deleted one."""
    return name.startswith(READ_PREFIXES) or name in _INTERPRETED


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


def _mknod_whiteout(path):
    os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))


class Writer:
    """Writes markers into the upper layer in one format: whiteouts as character devices 0/0
    (the kernel's), opaque/redirect/origin markers as xattrs under one namespace (``prefix``:
    ``trusted.overlay.``, or ``user.overlay.`` for the kernel's ``userxattr`` mode; None where
    the upper takes no xattrs, and then nothing is recorded that needs one).

    The methods that change names keep each step atomic: a name is never missing in between."""
    form = "chr"

    def __init__(self, prefix=TRUSTED):
        self.prefix = prefix
        self.opaque_name = (prefix or "") + "opaque"
        self.redirect_name = (prefix or "") + "redirect"
        self.ino_name = (prefix or "") + "unionfs.ino"
        self._temp = None     # names a new entry in the work dir, once whiteouts are shared
        self._shared = None   # (O_PATH fd, work-dir name) of the whiteout new ones link to
        self._share_lock = threading.Lock()
        self._proc_fds = None  # /proc/self/fd, whose entries the links are made from

    @property
    def prefixes(self):
        """Namespaces the upper is read in: both, so an upper written in either mode reads right."""
        return READ_PREFIXES

    @property
    def can_redirect(self):
        # the kernel follows no redirect in userxattr mode (it forces redirect_dir=nofollow),
        # so an upper in that mode must describe renamed directories without one
        return self.prefix == TRUSTED

    def share_whiteouts(self, temp):
        """Make whiteouts from now on as hard links to one whiteout inode kept in the work dir
        (`temp()` names a new entry there), as the kernel's overlayfs does (ovl_whiteout): a
        link allocates no inode, and on a full ext4 a mknod's inode allocation costs 30 to 600
        us (the whole of an unlink of a lower file)."""
        self._temp = temp

    @property
    def shared_whiteout(self):
        """The work-dir path of the whiteout new ones are linked to, or None: the one entry the
        work dir keeps while mounted (the next mount's clean-up removes it)."""
        shared = self._shared
        return shared[1] if shared is not None else None

    def make_whiteout(self, path):
        if self._temp is not None:
            try:
                self._link_whiteout(path)
                return
            except OSError as e:
                # what says the filesystem will not link a device: one inode each from now on,
                # as the kernel falls back (no_shared_whiteout); other errors are the name's
                if e.errno not in _NO_LINK:
                    raise
                self._temp = None
        _mknod_whiteout(path)

    def _link_whiteout(self, path):
        with self._share_lock:
            for _ in range(2):
                if self._shared is None:
                    tmp = self._temp()
                    _mknod_whiteout(tmp)
                    # linked through its fd: the work-dir name may change, the inode cannot
                    fd = os.open(tmp, O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
                    self._shared = (fd, tmp)
                if self._proc_fds is None:
                    self._proc_fds = os.open("/proc/self/fd", O_PATH | os.O_DIRECTORY
                                             | os.O_CLOEXEC)
                try:
                    # linkat(AT_SYMLINK_FOLLOW) of the fd's magic link: the inode itself
                    # (os.link with no dir fd calls link(2), which would not follow it)
                    os.link(str(self._shared[0]), path, src_dir_fd=self._proc_fds,
                            follow_symlinks=True)
                    return
                except OSError as e:
                    # EMLINK: the inode has all the links it may; ENOENT from a source whose
                    # work-dir name was removed (none left to link): start another
                    if e.errno not in (errno.EMLINK, errno.ENOENT):
                        raise
                    fd, tmp = self._shared
                    self._shared = None
                    os.close(fd)
                    try:
                        os.unlink(tmp)
                    except FileNotFoundError:
                        pass
                    last = e
            raise last

    def has_whiteout(self, path):
        """Is the name at real path `path` whited out in the upper?"""
        try:
            return is_whiteout_stat(os.lstat(path))
        except FileNotFoundError:
            return False

    def whiteout_entry(self, path, temp, is_dir):
        """Replace the upper entry at `path` (a file, or a directory holding only whiteouts)
        with a whiteout, atomically: the whiteout is made aside and swapped in."""
        self.make_whiteout(temp)
        if is_dir:
            renameat2(temp, path, RENAME_EXCHANGE)
            self.clear_dir(temp)
            os.rmdir(temp)
        else:
            os.rename(temp, path)

    def move_leaving_whiteout(self, src, dst, dst_whiteout, is_dir):
        """rename(src, dst) that leaves a whiteout at src (dst_whiteout: dst is one now)."""
        if dst_whiteout:
            renameat2(src, dst, RENAME_EXCHANGE)  # the whiteout lands where src was
            return
        try:
            renameat2(src, dst, RENAME_WHITEOUT)
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.ENOSYS, errno.EPERM, errno.EOPNOTSUPP):
                raise
            os.rename(src, dst)
            self.make_whiteout(src)

    def move_onto_whiteout(self, src, dst, is_dir):
        """rename(src, dst) where dst is a whiteout and src needs none left behind."""
        if is_dir:
            renameat2(src, dst, RENAME_EXCHANGE)  # rename(2) will not put a dir over a device
            os.unlink(src)
        else:
            os.rename(src, dst)

    def clear_dir(self, path):
        """Remove the whiteouts (and opaque marker files) in an upper directory that shows no
        entries, so that rmdir(2) or rename(2) over it can succeed."""
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            with os.scandir(fd) as it:
                for e in it:
                    if self._is_marker(e):
                        os.unlink(e.name, dir_fd=fd)
        finally:
            os.close(fd)

    @staticmethod
    def _is_marker(entry):
        return not entry.is_dir(follow_symlinks=False) and is_whiteout_stat(
            entry.stat(follow_symlinks=False))

    def set_opaque(self, path):
        os.setxattr(path, self.opaque_name, b"y", follow_symlinks=False)

    def set_redirect(self, path, value):
        os.setxattr(path, self.redirect_name, os.fsencode(value), follow_symlinks=False)

    def get_redirect(self, path):
        if self.prefix is None:
            return None
        v = _get(path, self.redirect_name)
        return os.fsdecode(v) if v else None

    def set_origin_ino(self, path, ino):
        if self.prefix is None:
            return
        try:
            os.setxattr(path, self.ino_name, b"%d" % ino, follow_symlinks=False)
        except OSError as e:
            # user.* xattrs are not allowed on symlinks and special files: the inode number of
            # such an entry may change with its copy-up
            if e.errno not in _NOATTR or self.prefix == TRUSTED:
                raise

    def get_origin_ino(self, path):
        if self.prefix is None:
            return None
        v = _get(path, self.ino_name)
        try:
            return int(v) if v else None
        except ValueError:
            return None


class OciWriter(Writer):
    """The fallback where the upper's owner may not create device nodes (an ordinary user outside
    a user namespace): whiteouts are empty files ``.wh.<name>`` beside the name and opaque
    directories hold ``.wh..wh..opq``, the OCI image-layer form (which fuse-overlayfs writes in
    the same case and container storage copies into layers as is). Lookup reads them back from
    the upper. Each change makes the whiteout before it removes the entry (and the entry before
    it removes the whiteout): a crash in between leaves both, and the entry wins."""
    form = "oci"

    @staticmethod
    def _wh(path):
        d, _, name = path.rpartition("/")
        return d + "/" + WH_PREFIX + name

    def make_whiteout(self, path):
        _touch(self._wh(path))

    def has_whiteout(self, path):
        return os.path.lexists(self._wh(path))

    def _drop_whiteout(self, path):
        try:
            os.unlink(self._wh(path))
        except FileNotFoundError:
            pass

    def whiteout_entry(self, path, temp, is_dir):
        self.make_whiteout(path)
        if is_dir:
            self.clear_dir(path)
            os.rmdir(path)
        else:
            os.unlink(path)

    def move_leaving_whiteout(self, src, dst, dst_whiteout, is_dir):
        self.make_whiteout(src)
        os.rename(src, dst)
        if dst_whiteout:
            self._drop_whiteout(dst)

    def move_onto_whiteout(self, src, dst, is_dir):
        os.rename(src, dst)
        self._drop_whiteout(dst)

    @staticmethod
    def _is_marker(entry):
        return entry.name.startswith(WH_PREFIX) or Writer._is_marker(entry)

    def set_opaque(self, path):
        fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            _touch(WH_OPAQUE, fd)
        finally:
            os.close(fd)


def _touch(path, dir_fd=None):
    """An empty marker file (never through a symlink planted at its name)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=dir_fd))


# ---- which format an upper is written in -------------------------------------------------------

FORMAT_FILE = "unionfs.format"
FORMAT_XATTR = "unionfs.format"  # after the upper's namespace prefix, on the upper's root
_NS_NAMES = {TRUSTED: "trusted", USER: "user", None: "none"}


def _probe(path, prefix=None):
    """May this process set xattrs under prefix (or, without one, make a whiteout device)?"""
    try:
        if prefix is None:
            _mknod_whiteout(path + "/wh")
        else:
            os.setxattr(path, prefix + "unionfs.probe", b"1", follow_symlinks=False)
        return True
    except OSError as e:
        if e.errno in _NOATTR or e.errno in (errno.EACCES, errno.EOPNOTSUPP):
            return False
        raise


def _parse_format(text):
    fields = dict(kv.split("=", 1) for kv in text.split() if "=" in kv)
    ns = {"trusted": TRUSTED, "user": USER, "none": None}.get(fields.get("xattr"), TRUSTED)
    return ns, "oci" if fields.get("whiteout") == "oci" else "chr"


def _recorded_in_upper(upper):
    """The format recorded on the upper's root (an xattr), or found in its content: a '.wh.'
    name means the OCI form. None for an upper that says nothing (empty, or all plain files)."""
    for ns in READ_PREFIXES:
        v = _get(upper, ns + FORMAT_XATTR)
        if v:
            return _parse_format(os.fsdecode(v))
    for _dirpath, dirnames, filenames, dfd in os.fwalk(upper, follow_symlinks=False):
        if any(n.startswith(WH_PREFIX) for n in dirnames + filenames):
            return USER, "oci"
        if any(is_whiteout_stat(os.lstat(n, dir_fd=dfd)) for n in filenames):
            return TRUSTED, "chr"
    return None


def choose_writer(workdir, upper, userxattr=False):
    """The Writer for an upper: the format recorded by an earlier mount (WORK/unionfs.format,
    or the upper root's <ns>overlay.unionfs.format xattr, or what the upper holds); for a new
    upper, what this process may do: 0/0 devices (root, or root in a user namespace) or else
    '.wh.' files; trusted.* xattrs (root), or user.* (the kernel's userxattr mode, also asked
    for with the userxattr option), or none. The choice is recorded, so a later mount, by root
    or not, with this work dir or another, writes the same format."""
    record = os.path.join(workdir, FORMAT_FILE)
    probe_dir = os.path.join(workdir, "unionfs.probe.%d" % os.getpid())
    os.mkdir(probe_dir, 0o700)
    try:
        try:
            with open(record) as f:
                found = _parse_format(f.read())
        except FileNotFoundError:
            found = _recorded_in_upper(upper)
        if found is not None:
            ns, form = found
            if ns == TRUSTED and userxattr:
                ns = USER
            if ns is not None and not _probe(probe_dir, ns):
                if ns == TRUSTED:
                    raise PermissionError(errno.EPERM, "this upper is written with "
                                          "trusted.overlay.* xattrs, which only root may "
                                          "write: mount it as root", upper)
                ns = None
        else:
            ns = next((p for p in ((USER,) if userxattr else (TRUSTED, USER))
                       if _probe(probe_dir, p)), None)
            form = "chr" if _probe(probe_dir) else "oci"
    finally:
        shutil.rmtree(probe_dir, ignore_errors=True)
    text = "xattr=%s whiteout=%s\n" % (_NS_NAMES[ns], form)
    tmp = record + ".tmp"
    # 0600 whatever the umask: another user who could rewrite it could make a later mount
    # write (or the kernel read) the upper in another format and bring deleted files back
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(fd, 0o600)
        f.write(text)
    os.rename(tmp, record)
    if ns is not None:
        os.setxattr(upper, ns + FORMAT_XATTR, text.strip().encode(), follow_symlinks=False)
    return (OciWriter if form == "oci" else Writer)(ns)
