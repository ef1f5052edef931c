"""The FUSE kernel protocol (linux/fuse.h, 7.31) and the /dev/fuse channel that speaks it.

unionfs answers the kernel itself instead of going through libfuse: one read of /dev/fuse per
request, one writev per reply, structs packed with `struct`. Measured against libfuse's
high-level API through ctypes (scripts/bench_floor.py): a null request costs 8.5 us of daemon
CPU here against 12-14 us, and the inode-level protocol lets the kernel keep directory listings
(FOPEN_CACHE_DIR), which libfuse 3.14's path API drops.

`Channel` owns the mount: mount(2) with the /dev/fuse descriptor as root, else fusermount3 hands
a descriptor over a socket (what libfuse does); unmounting is lazy, as libfuse's. It also
registers open files for FUSE passthrough (7.40), which read-only mounts use.
"""
import ctypes
import errno
import fcntl
import os
import socket
import struct
import subprocess

# -- opcodes (enum fuse_opcode)
LOOKUP, FORGET, GETATTR, SETATTR, READLINK, SYMLINK = 1, 2, 3, 4, 5, 6
MKNOD, MKDIR, UNLINK, RMDIR, RENAME, LINK, OPEN, READ, WRITE, STATFS, RELEASE = range(8, 19)
FSYNC, SETXATTR, GETXATTR, LISTXATTR, REMOVEXATTR, FLUSH, INIT = range(20, 27)
OPENDIR, READDIR, RELEASEDIR, FSYNCDIR, GETLK, SETLK, SETLKW, ACCESS, CREATE = range(27, 36)
INTERRUPT, BMAP, DESTROY, IOCTL, POLL, NOTIFY_REPLY, BATCH_FORGET, FALLOCATE = range(36, 44)
READDIRPLUS, RENAME2, LSEEK, COPY_FILE_RANGE = range(44, 48)
TMPFILE = 51

# -- FUSE_INIT flags
ASYNC_READ = 1 << 0
ATOMIC_O_TRUNC = 1 << 3
BIG_WRITES = 1 << 5
AUTO_INVAL_DATA = 1 << 12
DO_READDIRPLUS = 1 << 13
ASYNC_DIO = 1 << 15
PARALLEL_DIROPS = 1 << 18
MAX_PAGES = 1 << 22
INIT_EXT = 1 << 30
PASSTHROUGH_FLAGS2 = 1 << 5  # FUSE_PASSTHROUGH (1 << 37), in flags2
OVER_IO_URING_FLAGS2 = 1 << 9  # FUSE_OVER_IO_URING (1 << 41), in flags2

# -- open reply flags
FOPEN_DIRECT_IO, FOPEN_KEEP_CACHE, FOPEN_CACHE_DIR, FOPEN_PASSTHROUGH = 1, 2, 8, 128
FOPEN_NOFLUSH = 32  # the kernel answers close() itself (7.35; honoured by older minors too)

# -- setattr valid bits
FATTR_MODE, FATTR_UID, FATTR_GID, FATTR_SIZE = 1, 2, 4, 8
FATTR_ATIME, FATTR_MTIME, FATTR_FH, FATTR_ATIME_NOW, FATTR_MTIME_NOW = 16, 32, 64, 128, 256

GETATTR_FH = 1
FSYNC_FDATASYNC = 1
NOTIFY_INVAL_INODE = 2

MINOR = 31          # the protocol version spoken: every struct below has its 7.31 size
PASSTHROUGH_MINOR = 40  # spoken instead when the kernel reads files directly (7.40: flags2,
                        # max_stack_depth and open_out.backing_id; requests keep their sizes)
URING_MINOR = 42    # spoken when requests come through io_uring (fuse/uring.py); the structs
                    # of 7.31 keep their sizes: what grew since is behind flags not asked for
MAX_WRITE = 1 << 20  # bytes per WRITE request (MAX_PAGES: 256 pages)
BUFSIZE = MAX_WRITE + 4096  # a request's header and arguments fit beside the data

IN_HEADER = struct.Struct("=IIQQIIIHH")  # len, opcode, unique, nodeid, uid, gid, pid, extlen, pad
OUT_HEADER = struct.Struct("=IiQ")       # len, error, unique
ATTR = struct.Struct("=QQQQQQIIIIIIIIII")  # fuse_attr
ENTRY = struct.Struct("=QQQQII")         # fuse_entry_out before its fuse_attr
ATTR_OUT = struct.Struct("=QII")         # fuse_attr_out before its fuse_attr
OPEN_OUT = struct.Struct("=QIi")          # fh, open_flags, backing_id
DIRENT = struct.Struct("=QQII")          # ino, off, namelen, type; name padded to 8 bytes
INIT_IN = struct.Struct("=IIII")
INIT_OUT = struct.Struct("=IIIIHHIIHHII24x")  # ..., flags2, max_stack_depth
GETATTR_IN = struct.Struct("=IIQ")
SETATTR_IN = struct.Struct("=IIQQQQQQIIIIIIII")
OPEN_IN = struct.Struct("=II")
CREATE_IN = struct.Struct("=IIII")
MKNOD_IN = struct.Struct("=IIII")
MKDIR_IN = struct.Struct("=II")
RENAME2_IN = struct.Struct("=QII")
RW_IN = struct.Struct("=QQIIQII")        # fuse_read_in / fuse_write_in: fh, offset, size, ...
WRITE_OUT = struct.Struct("=II")
RELEASE_IN = struct.Struct("=QIIQ")
FSYNC_IN = struct.Struct("=QII")
XATTR_IN = struct.Struct("=II")           # fuse_getxattr_in / fuse_setxattr_in (no ext)
FALLOCATE_IN = struct.Struct("=QQQII")
LSEEK_IN = struct.Struct("=QQII")
U64 = struct.Struct("=Q")
U32 = struct.Struct("=I")
FORGET_ONE = struct.Struct("=QQ")
KSTATFS = struct.Struct("=QQQQQIIII24x")
NOTIFY_INVAL = struct.Struct("=Qqq")

# -- FUSE over io_uring (7.42): each ring entry is a header buffer (struct fuse_uring_req_header:
# the in/out header, the opcode's own header, struct fuse_uring_ent_in_out) and a payload buffer
URING_HEADER_SIZE = 288
URING_OP_IN = 128         # offset of the opcode's header (its first argument) in the buffer
URING_ENT_IN_OUT = 256    # offset of fuse_uring_ent_in_out: flags, commit_id, payload_sz
URING_ENT = struct.Struct("=QQI")
URING_CMD_REGISTER, URING_CMD_COMMIT_AND_FETCH = 1, 2
URING_CMD_REQ = struct.Struct("=QQH6x")  # fuse_uring_cmd_req, in the SQE's command area


def attr(st, ino, nlink):
    """A fuse_attr from an os.stat_result or the core's packed stat, with the union's inode
    number and link count."""
    fields = getattr(st, "fields", None)
    if fields is not None:  # core.layers.Stat: one unpack instead of one per field read
        mode, _, _, _, uid, gid, size, a, m, c, blocks, blksize, rdev = fields()
    else:
        mode, uid, gid, size, blocks, blksize, rdev = (
            st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_blocks, st.st_blksize,
            st.st_rdev)
        a, m, c = st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns
    return ATTR.pack(ino, size, blocks, a // 1_000_000_000, m // 1_000_000_000,
                     c // 1_000_000_000, a % 1_000_000_000, m % 1_000_000_000,
                     c % 1_000_000_000, mode, nlink, uid, gid, rdev & 0xFFFFFFFF, blksize, 0)


def bare_attr(ino, mode):
    return ATTR.pack(ino, 0, 0, 0, 0, 0, 0, 0, 0, mode, 0, 0, 0, 0, 0, 0)


def valid(seconds):
    """(whole seconds, nanoseconds) of a cache timeout."""
    s = int(seconds)
    return s, int((seconds - s) * 1e9)


def dirent(ino, off, name, mode):
    n = len(name)
    return DIRENT.pack(ino, off, n, (mode >> 12) & 0xF) + name + bytes(-n % 8)


# names cross the protocol as bytes; the union takes them as str, a name that is not UTF-8
# carried as surrogate escapes (os.fsencode gives the bytes back)
UTF8 = ("utf-8", "surrogateescape")


def name(data, start=0):
    """The NUL-terminated name at data[start:] of a request, and the offset after it."""
    raw = data[start:].tobytes()
    end = raw.index(0)
    return raw[:end].decode(*UTF8), start + end + 1


# -- mounting ---------------------------------------------------------------------------------

# mount(2) flags for the generic mount options
_MS = {"ro": 1, "nosuid": 2, "nodev": 4, "noexec": 8, "sync": 16, "dirsync": 128,
       "noatime": 1024, "relatime": 1 << 21, "strictatime": 1 << 24}
_MS_OFF = {"rw": "ro", "suid": "nosuid", "dev": "nodev", "exec": "noexec", "async": "sync",
           "atime": "noatime", "norelatime": "relatime", "nostrictatime": "strictatime"}
_KERNEL_OPTS = ("default_permissions", "allow_other", "max_read")
_MNT_DETACH = 2
# ioctls on /dev/fuse (linux/fuse.h): register / drop an open file the kernel reads directly
_BACKING_OPEN = 0x4010E501   # _IOW(229, 1, struct fuse_backing_map {s32 fd, u32 flags, u64})
_BACKING_CLOSE = 0x4004E502  # _IOW(229, 2, u32)

_libc = ctypes.CDLL(None, use_errno=True)


class MountError(Exception):
    pass


class Channel:
    """One mount's /dev/fuse descriptor: requests in, replies and notifications out."""

    def __init__(self, mountpoint, options, fsname="unionfs", subtype="unionfs"):
        """options: {name: value or True} of the generic and FUSE mount options."""
        self.mountpoint = mountpoint
        self.fd = None
        flags, data = 0, []
        for name, value in options.items():
            if name in _MS:
                flags |= _MS[name]
            elif name in _MS_OFF:
                flags &= ~_MS[_MS_OFF[name]]
            elif name in _KERNEL_OPTS:
                data.append(name if value is True else "%s=%s" % (name, value))
        self._flags, self._data = flags, data
        self._fsname, self._subtype = fsname, subtype
        if os.geteuid() == 0:
            self._mount_root()
        else:
            self._mount_fusermount(options)

    def _mount_root(self):
        self.fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
        st = os.stat(self.mountpoint)
        data = ["fd=%d" % self.fd, "rootmode=%o" % (st.st_mode & 0o170000),
                "user_id=%d" % os.getuid(), "group_id=%d" % os.getgid()] + self._data
        if _libc.mount(os.fsencode(self._fsname), os.fsencode(self.mountpoint),
                       os.fsencode("fuse." + self._subtype), self._flags,
                       ",".join(data).encode()) != 0:
            e = ctypes.get_errno()
            os.close(self.fd)
            self.fd = None
            raise MountError("mount %s: %s" % (self.mountpoint, os.strerror(e)))

    def _mount_fusermount(self, options):
        opts = ["fsname=" + self._fsname, "subtype=" + self._subtype] + self._data
        opts += [n for n in options if n in _MS or n in _MS_OFF]
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            proc = subprocess.run(
                [_fusermount(), "-o", ",".join(opts), "--", self.mountpoint],
                env=dict(os.environ, _FUSE_COMMFD=str(theirs.fileno())),
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            theirs.close()
            if proc.returncode != 0:
                raise MountError((proc.stderr.strip().splitlines() or ["fusermount3 failed"])[-1])
            _msg, fds, _flags, _addr = socket.recv_fds(ours, 1, 1)
            if not fds:
                raise MountError("fusermount3 passed no /dev/fuse descriptor")
            self.fd = fds[0]
            os.set_inheritable(self.fd, False)
        finally:
            ours.close()
            if theirs.fileno() >= 0:
                theirs.close()

    def read_into(self, buf):
        """The length of the next request, read into buf; None once the mount is gone."""
        while True:
            try:
                return os.readv(self.fd, [buf])
            except OSError as e:
                if e.errno in (errno.EINTR, errno.EAGAIN, errno.ENOENT):
                    continue  # ENOENT: the request was interrupted before it was read
                if e.errno == errno.ENODEV:
                    return None  # unmounted
                raise

    def send(self, parts):
        try:
            os.writev(self.fd, parts)
        except OSError as e:
            if e.errno != errno.ENOENT:  # the kernel gave the request up (interrupted)
                raise

    def reply(self, unique, payload=b""):
        self.send([OUT_HEADER.pack(16 + len(payload), 0, unique), payload])

    def reply_error(self, unique, err):
        self.send([OUT_HEADER.pack(16, -err, unique)])

    def inval_inode(self, nodeid, offset=-1, length=0):
        """Have the kernel drop a node's cached attributes; with offset >= 0 also its cached
        pages from offset on (length 0: to the end). Only the attribute form never waits on
        the daemon: the page form waits for pages locked by reads in flight (fuse/server.py)."""
        self._notify(NOTIFY_INVAL_INODE, NOTIFY_INVAL.pack(nodeid, offset, length))

    def _notify(self, code, payload):
        try:
            os.writev(self.fd, [OUT_HEADER.pack(16 + len(payload), code, 0), payload])
        except OSError as e:
            if e.errno not in (errno.ENOENT, errno.ENODEV):  # node forgotten; unmounted
                raise

    def backing_open(self, fd):
        """A backing id for an open file the kernel may then read without the daemon (FUSE
        passthrough; root only)."""
        # a mutable buffer makes ioctl() return the call's result: the id
        return fcntl.ioctl(self.fd, _BACKING_OPEN, bytearray(struct.pack("=iIQ", fd, 0, 0)), True)

    def backing_close(self, backing_id):
        """Drop the id; files already opened with it keep their backing file."""
        fcntl.ioctl(self.fd, _BACKING_CLOSE, bytearray(struct.pack("=I", backing_id)), True)

    def unmount(self):
        """Detach the mount (lazily, as libfuse does); the readers then see ENODEV."""
        if os.geteuid() == 0:
            _libc.umount2(os.fsencode(self.mountpoint), _MNT_DETACH)
        else:
            subprocess.run([_fusermount(), "-u", "-q", "-z", "--", self.mountpoint],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def fusermount():
    """The path of fusermount3 (or libfuse 2's fusermount), or None."""
    for name in ("fusermount3", "fusermount"):
        for d in os.environ.get("PATH", "/usr/bin:/bin").split(":") + ["/usr/bin", "/bin"]:
            p = os.path.join(d, name)
            if os.access(p, os.X_OK):
                return p
    return None


def _fusermount():
    p = fusermount()
    if p is None:
        raise MountError("fusermount3 not found: install fuse3")
    return p
