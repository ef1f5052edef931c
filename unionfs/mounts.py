"""Live unionfs mounts, their daemons and their layers, from sources a local user cannot forge.

Nothing here reads a process's command line: anyone can start a process whose argv names any
layers and any mountpoint (``python3 - _daemon -o lowerdir=/root /mnt/x``). Instead:

* the mount table (``/proc/self/mountinfo``, written by the kernel) gives each mount's device
  number and its owner, ``user_id=`` (fusermount3 sets it to the user who mounted);
* a mount's layers come from its control directory, ``MNT/.unionfs/stats`` (unionfs/control.py),
  which only the daemon holding the mount's FUSE connection can answer. A control file is
  opened through the mountpoint and refused unless it lies on the mount's device, so a path
  swapped meanwhile (a symlink, another directory mounted over MNT) is not believed;
* a mount's daemon is the process holding ``/dev/fuse`` open on the mount's connection. The
  kernel names the connection of such an fd in ``/proc/PID/fdinfo/FD`` (``fuse_connection:``;
  6.18 does) and it is the minor of the mount's device number. Where fdinfo does not say, the
  pid the stats give is taken only if that process holds ``/dev/fuse`` and runs as the owner.

What the daemon of another user's mount says is that user's word: ``layers_of`` refuses such a
mount (root's mounts and the caller's own are read), so no command indexes directories on the
say-so of someone else's daemon.
"""
import errno
import json
import os
import re
import stat
import threading
from dataclasses import dataclass

from . import control
from .errors import UnionfsError

_OCTAL = re.compile(rb"\\([0-7]{3})")
# what stat(2) of a FUSE mount whose daemon is gone returns (ECONNABORTED after a sysfs abort)
DEAD_ERRNOS = (errno.ENOTCONN, errno.ECONNABORTED)


class MountsError(UnionfsError):
    """A one-line failure about a mount (cli.main prints it as ``unionfs: ...``)."""


@dataclass(frozen=True)
class Mount:
    """One line of the mount table."""
    mountpoint: str
    fstype: str
    source: str
    dev: int            # st_dev of every file on the mount
    owner: int = None   # the user_id= option of a FUSE mount (None elsewhere)

    @property
    def connection(self):
        """The FUSE connection id (/sys/fs/fuse/connections/N)."""
        return os.minor(self.dev)

    @property
    def is_unionfs(self):
        return is_unionfs_mount(self.fstype, self.source)


def _mountinfo_path(field):
    """A path as /proc/self/mountinfo writes it (space, tab, newline, backslash as \\ooo)."""
    return os.fsdecode(_OCTAL.sub(lambda m: bytes([int(m.group(1), 8)]), os.fsencode(field)))


def is_unionfs_mount(fstype, source):
    return fstype in ("fuse.unionfs", "fuseblk.unionfs") or (
        fstype.startswith("fuse") and source == "unionfs")


def mount_table():
    """[Mount] in /proc/self/mountinfo order (a later mount on a path is on top)."""
    out = []
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            fields = line.rstrip(b"\n").split(b" ")
            try:
                sep = fields.index(b"-", 6)
                major, minor = (int(n) for n in fields[2].split(b":"))
            except ValueError:
                continue
            opts = fields[sep + 3].split(b",") if len(fields) > sep + 3 else []
            owner = next((int(o[8:]) for o in opts if o.startswith(b"user_id=")
                          and o[8:].isdigit()), None)
            out.append(Mount(_mountinfo_path(fields[4]), os.fsdecode(fields[sep + 1]),
                             os.fsdecode(fields[sep + 2]), os.makedev(major, minor), owner))
    return out


def unionfs_mounts():
    """[Mount] of every unionfs mount, the topmost one per mountpoint, in table order."""
    top = {}
    for m in mount_table():
        top[m.mountpoint] = m
    return [m for m in top.values() if m.is_unionfs]


def mounted_paths():
    """Every mountpoint (of any filesystem)."""
    return {m.mountpoint for m in mount_table()}


def dead_fuse_mount(path):
    """(fstype, source) of the FUSE mount on `path` if it is dead (its daemon is gone: statfs or
    stat fail with ENOTCONN), else None. Only a path that is itself a FUSE mountpoint is probed."""
    mnt = os.path.realpath(path)  # a dead mount's own lstat fails; realpath keeps the name as is
    top = None
    for m in mount_table():
        if m.mountpoint == mnt:
            top = (m.fstype, m.source)  # the last mount on a path is the one on top
    if top is None or not top[0].startswith("fuse"):
        return None
    # statfs always reaches the daemon; stat may be answered from the kernel's attribute cache
    # for up to attr_timeout after the daemon died
    for probe in (os.statvfs, os.stat):
        try:
            probe(mnt)
        except OSError as e:
            if e.errno in DEAD_ERRNOS:
                return top
    return None


def mount_at(path):
    """The unionfs Mount on top at path (resolved), or None."""
    real = os.path.realpath(path)
    return next((m for m in unionfs_mounts() if m.mountpoint == real), None)


def find_mount(path):
    """(mountpoint, path inside it with a leading '/') of a path inside a unionfs mount; the last
    component is not followed if it is a symlink."""
    a = os.path.abspath(path)
    parent, name = os.path.split(a)
    a = os.path.join(os.path.realpath(parent), name) if name else os.path.realpath(a)
    best = None
    for mp in (m.mountpoint for m in unionfs_mounts()):
        if (a == mp or a.startswith(mp.rstrip("/") + "/")) and (best is None or len(mp) > len(best)):
            best = mp
    if best is None:
        raise MountsError("%s: not inside a unionfs mount" % path)
    rel = "/" + a[len(best):].strip("/")
    return best, rel


def _mount(mnt):
    m = mnt if isinstance(mnt, Mount) else mount_at(mnt)
    if m is None:
        raise MountsError("%s: not a unionfs mountpoint" % mnt)
    return m


# ---- the control directory ---------------------------------------------------------------

def open_control(mnt, name):
    """A file descriptor of MNT/.unionfs/NAME that the mount's own daemon serves (MountsError
    if the path leads anywhere else; OSError as the open fails, ENOTCONN for a dead mount)."""
    m = _mount(mnt)
    path = os.path.join(m.mountpoint, control.NAME, name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise MountsError("%s: no %s/%s (a unionfs older than this command?)"
                          % (m.mountpoint, control.NAME, name))
    st = os.fstat(fd)
    if st.st_dev != m.dev or not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise MountsError("%s: %s is not the mount's own control file (the path changed?)"
                          % (m.mountpoint, path))
    return fd


def read_stats(mnt, timeout=None):
    """The stats document the mount's daemon serves (unionfs/control.py). With a timeout, a
    daemon that does not answer in time is a TimeoutError (ETIMEDOUT); the reading thread is
    left blocked in the kernel and dies with the process."""
    m = _mount(mnt)
    if timeout is None:
        return _read_stats(m)
    box = []

    def read():
        try:
            box.append((_read_stats(m), None))
        except Exception as e:
            box.append((None, e))
    t = threading.Thread(target=read, daemon=True, name="unionfs-stats")
    t.start()
    t.join(timeout)
    if not box:
        raise TimeoutError(errno.ETIMEDOUT, "its daemon did not answer within %g s" % timeout,
                           m.mountpoint)
    doc, err = box[0]
    if err is not None:
        raise err
    return doc


def _read_stats(m):
    with os.fdopen(open_control(m, "stats"), "rb") as f:
        data = f.read()
    try:
        return json.loads(data)
    except ValueError:
        raise MountsError("%s: its %s/stats is not JSON" % (m.mountpoint, control.NAME))


def layers_of(mnt):
    """The mount's layers as its daemon serves them, top first: [{"index", "role", "dir"}]
    (role "upper" or "lower"). MountsError for another user's mount (module docstring)."""
    m = _mount(mnt)
    if m.owner not in (None, 0, os.geteuid()):
        raise MountsError("%s is uid %d's mount: its layers are only that user's daemon's word "
                          "(run this as that user)" % (m.mountpoint, m.owner))
    try:
        doc = read_stats(m)
    except OSError as e:
        raise MountsError("%s: cannot ask its daemon for its layers: %s"
                          % (m.mountpoint, e.strerror or e))
    layers = doc.get("layers")
    if not isinstance(layers, list) or not all(
            isinstance(l, dict) and isinstance(l.get("dir"), str) for l in layers):
        raise MountsError("%s: its %s/stats names no layers" % (m.mountpoint, control.NAME))
    return layers


def upper_and_lowers(mnt):
    """(upper dir or None, [lower dirs top first]) of the mount, from layers_of."""
    layers = layers_of(mnt)
    upper = next((l["dir"] for l in layers if l.get("role") == "upper"), None)
    return upper, [l["dir"] for l in layers if l.get("role") != "upper"]


# ---- the daemon --------------------------------------------------------------------------

def _fdinfo(path):
    """{key: value} of a /proc/PID/fdinfo/FD file (bytes)."""
    with open(path, "rb") as f:
        return dict(line.split(b":", 1) for line in f.read().splitlines() if b":" in line)


def _dev_fuse():
    """(mnt_id, ino) of /dev/fuse, as fdinfo shows them: from an O_PATH fd of our own (which
    opens no FUSE device)."""
    fd = os.open("/dev/fuse", os.O_PATH | os.O_CLOEXEC)
    try:
        info = _fdinfo("/proc/self/fdinfo/%d" % fd)
        return info[b"mnt_id"].strip(), info[b"ino"].strip()
    finally:
        os.close(fd)


def _fuse_fds(pid, dev_fuse):
    """{fd: connection id or None} of the /dev/fuse fds process pid holds (None: fdinfo names
    no connection: not mounted yet, or an older kernel); {} if the process is gone or not ours
    to look at. An fd is never followed (a stat of another process's open file may wait on a
    hung FUSE daemon): its name, then its fdinfo (the FUSE device's own line, or the mount id
    and inode of /dev/fuse) decide."""
    out = {}
    base = "/proc/%d" % pid
    try:
        fds = os.listdir(base + "/fd")
    except OSError:
        return out
    for fd in fds:
        try:
            if os.readlink("%s/fd/%s" % (base, fd)) != "/dev/fuse":
                continue
            info = _fdinfo("%s/fdinfo/%s" % (base, fd))
        except OSError:
            continue
        conn = info.get(b"fuse_connection")
        if conn is not None:
            out[int(fd)] = int(conn)
        elif (info.get(b"mnt_id", b"").strip(), info.get(b"ino", b"").strip()) == dev_fuse:
            out[int(fd)] = None
    return out


def fuse_holders():
    """{pid: {fd: connection id or None}} of every process holding /dev/fuse open that this
    process may look at (all of them for root)."""
    out = {}
    try:
        dev_fuse = _dev_fuse()
    except (OSError, KeyError):
        dev_fuse = None
    for name in os.listdir("/proc"):
        if name.isdigit():
            fds = _fuse_fds(int(name), dev_fuse)
            if fds:
                out[int(name)] = fds
    return out


def process_uid(pid):
    """The effective uid of a process, or None if it is gone."""
    try:
        with open("/proc/%d/status" % pid, "rb") as f:
            for line in f:
                if line.startswith(b"Uid:"):
                    return int(line.split()[2])
    except (OSError, ValueError, IndexError):
        pass
    return None


def daemon_of(mnt, claimed=None, holders=None):
    """The pid of the process serving the mount's FUSE connection, or None. `claimed` (the pid
    the stats give) counts only where the kernel does not name connections: it must hold
    /dev/fuse and run as the mount's owner. `holders`: a fuse_holders() result to reuse."""
    m = _mount(mnt)
    holders = fuse_holders() if holders is None else holders
    on_conn = sorted(pid for pid, fds in holders.items() if m.connection in fds.values())
    if on_conn:
        return on_conn[0]
    fds = holders.get(claimed, {})
    if fds and None in fds.values() and process_uid(claimed) == (m.owner or 0):
        return claimed
    return None
