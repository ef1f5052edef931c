"""The FUSE server: dispatch of each request to its handler, and the worker threads. Requests
name nodes; the node table
(fuse/nodes.py) gives their paths, and the handlers call the union with them; requests that
name an open file go through the open-file table (fuse/handles.py). What is the control
directory's (control.owns, owns_handle, owns_xattr) goes to it (unionfs/control.py).

Threads take turns as the reader of /dev/fuse, and the reader answers most requests itself
before reading the next: no hand-over between threads under the GIL per request
(scripts/bench_floor.py: 6.5 us of daemon CPU per null request on one thread, 12 us when every
request wakes another). A request that may copy a file up (opening for writing, setattr, link,
rename, xattr changes), flush to disk (fsync, fallocate) or wait for events (reads of the
control directory's trace) first passes the reader's turn on, so it holds only its own thread.
Requests that wait on the union's lock behind such a copy-up hold the reader until it ends, as
every request waits in a single-threaded daemon (fuse-overlayfs's default).

What the kernel caches stays true: when the union changes an entry the request did not name
(another name of a hard link, an ancestor copied up), the node's attributes are invalidated
before the reply, its pages by the notifier thread (fuse/notifier.py; `Server._invalidate` says
why).

Why one module of ~820 lines: it is the dispatch table and one short handler per FUSE opcode
(about forty: decode, call, encode), with the reader loop beside them; split by concern, the
opcode table and the turn-passing rules it depends on would stand apart from the handlers they
govern. What is not per-opcode lives elsewhere (proto.py, nodes.py, handles.py, notifier.py, and
uring.py: the io_uring transport, of which only the choice of transport is here).
"""
import errno
import logging
import mmap
import os
import signal
import stat
import threading
import time

from .. import control
from ..core.observe import CHANGING, OPERATION
from ..core.readdir import Listings
from . import proto as P
from .handles import Files
from .nodes import Nodes
from .notifier import Notifier
from .passthrough import Passthrough

log = logging.getLogger("unionfs")

THREADS = 8
# requests whose thread hands the reader's turn on (see the module docstring)
_HANDED = frozenset((P.SETATTR, P.RENAME, P.RENAME2, P.LINK, P.SETXATTR, P.REMOVEXATTR,
                     P.FSYNC, P.FSYNCDIR, P.FALLOCATE, P.TMPFILE))
_WRITE_OPEN = os.O_ACCMODE | os.O_TRUNC
# not counted as requests served through /dev/fuse: the kernel sends these there, ring or not
_NOT_COUNTED = frozenset((P.INIT, P.FORGET, P.BATCH_FORGET, P.INTERRUPT))


def _handed(op, data):
    if op == P.OPEN:
        return bool(P.U32.unpack_from(data, 40)[0] & _WRITE_OPEN)
    if op == P.READ or op == P.WRITE:
        return P.U64.unpack_from(data, 40)[0] >= control.FH_BASE
    return op in _HANDED


# Seconds the kernel may keep entries, attributes and missing names. Every change reaches the
# layers through this mount (changing them behind its back is unsupported, as for the kernel's
# overlayfs), and the union has the kernel drop what it changes under another name (hard links,
# ancestors copied up: Union.on_invalidate).
CACHE_TIMEOUT = 3600.0


class Server:
    """Serves one mount: negotiates, runs the worker threads, dispatches each request."""

    def __init__(self, union, mountpoint, options, entry_timeout=None, attr_timeout=None,
                 negative_timeout=None, threads=None, on_ready=None, allow_root=False,
                 debug=False, passthrough=False, uring=False):
        self.union = union
        self.nodes = Nodes()
        self.listings = Listings()  # the directory listings being read (core/readdir.py)
        self.control = control.ControlDir(union, lambda: {
            "open_files": len(self.files), "listings": len(self.listings),
            "transport": self.transport()})
        self.files = Files(union, self.control)
        self.entry_valid = P.valid(CACHE_TIMEOUT if entry_timeout is None else entry_timeout)
        self.attr_valid = P.valid(CACHE_TIMEOUT if attr_timeout is None else attr_timeout)
        neg = P.valid(CACHE_TIMEOUT if negative_timeout is None else negative_timeout)
        # a name found missing is remembered by the kernel as long as an entry (node id 0)
        self.negative = (P.ENTRY.pack(0, 0, neg[0], 0, neg[1], 0) + P.bare_attr(0, 0)
                         if neg != (0, 0) else None)
        self.threads = threads or THREADS
        # root: the kernel reads and writes files straight from the layers (fuse/passthrough.py)
        self.passthrough_wanted = passthrough
        self.uring_wanted = uring  # requests through io_uring, where the kernel offers it
        self.ring = None
        self.uring_fallback = None  # why /dev/fuse serves though the ring was asked for
        self.dev_requests = 0       # requests read from /dev/fuse (_NOT_COUNTED aside)
        self.debug = debug
        self.on_ready = on_ready
        self.allow_root = allow_root
        self.owner = os.getuid()
        self.local = threading.local()
        self.channel = P.Channel(mountpoint, options, options.get("fsname", "unionfs"),
                                 options.get("subtype", "unionfs"))
        observer = union.observer
        self.stats = observer.ops
        self.bus = observer.bus
        self.observer = observer
        self._slots = {}
        self._stopping = False
        self._turn = threading.Lock()  # held by the thread reading /dev/fuse
        self.notifier = Notifier(self.channel)
        self.passthrough = Passthrough(self.channel, union.upper is None)
        self._handlers = {
            P.LOOKUP: self.lookup, P.FORGET: self.forget, P.BATCH_FORGET: self.batch_forget,
            P.GETATTR: self.getattr, P.SETATTR: self.setattr, P.READLINK: self.readlink,
            P.SYMLINK: self.symlink, P.MKNOD: self.mknod, P.MKDIR: self.mkdir,
            P.UNLINK: self.unlink, P.RMDIR: self.rmdir, P.RENAME: self.rename,
            P.RENAME2: self.rename2, P.LINK: self.link, P.OPEN: self.open, P.READ: self.read,
            P.WRITE: self.write, P.STATFS: self.statfs, P.RELEASE: self.release,
            P.FSYNC: self.fsync, P.SETXATTR: self.setxattr, P.GETXATTR: self.getxattr,
            P.LISTXATTR: self.listxattr, P.REMOVEXATTR: self.removexattr, P.FLUSH: self.flush,
            P.INIT: self.init, P.OPENDIR: self.opendir, P.READDIR: self.readdir,
            P.READDIRPLUS: self.readdirplus_, P.RELEASEDIR: self.ok,
            P.FSYNCDIR: self.ok, P.CREATE: self.create, P.INTERRUPT: None,
            P.DESTROY: self.ok, P.FALLOCATE: self.fallocate, P.LSEEK: self.lseek,
            P.TMPFILE: self.tmpfile,
        }

    # -- running

    def serve(self):
        """Run until unmounted; SIGTERM, SIGINT and SIGHUP unmount."""
        self.union.on_invalidate = self._invalidate
        self.union.observer.context = lambda: self.local.ctx[2]
        workers = [threading.Thread(target=self._worker, name="fuse-%d" % i, daemon=True)
                   for i in range(self.threads)]
        done = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, lambda *_: self.stop())
        self.notifier.start()
        for w in workers:
            w.start()

        def watch():
            for w in workers:
                w.join()
            done.set()
        threading.Thread(target=watch, daemon=True).start()
        while not done.wait(1.0):
            pass
        self.files.close_all()
        if self.notifier.stop():
            self.channel.close()  # else a notification is stuck in the kernel: left to exit

    def stop(self):
        if not self._stopping:
            self._stopping = True
            self.channel.unmount()

    def _worker(self):
        # anonymous mappings: only the pages a request fills count in the daemon's memory
        buf = mmap.mmap(-1, P.BUFSIZE)
        view = memoryview(buf)
        channel = self.channel
        answer = self.answer
        turn = self._turn
        turn.acquire()
        while True:
            try:
                n = channel.read_into(buf)
            except OSError as e:
                log.error("reading /dev/fuse: %s", e)
                n = None
            if n is None:
                turn.release()  # the next thread sees the end too
                return
            op = P.U32.unpack_from(buf, 4)[0]
            if op not in _NOT_COUNTED:
                self.dev_requests += 1
            handed = _handed(op, buf)
            if handed:
                turn.release()
            answer(view[:n])
            if handed:
                turn.acquire()

    def answer(self, req):
        """Answer one request, its header and arguments as /dev/fuse gives them (read there,
        or laid out so by fuse/uring.py), on this thread."""
        _len, op, unique, nid, uid, gid, pid, _ext, _pad = P.IN_HEADER.unpack_from(req)
        self.local.ctx = (uid, gid, pid)
        if self.debug:
            log.warning("request %d: opcode %d, node %d, pid %d", unique, op, nid, pid)
        handler = self._handlers.get(op, self.enosys)
        if handler is None:
            return  # INTERRUPT: requests run to their end
        if self.allow_root and uid not in (0, self.owner) and op != P.INIT:
            self.channel.reply_error(unique, errno.EACCES)
            return
        try:
            handler(unique, nid, req[40:])
        except OSError as e:
            self.channel.reply_error(unique, e.errno or errno.EIO)
        except Exception:  # a bug: answer EIO, keep serving
            log.exception("FUSE request %d failed", op)
            self.channel.reply_error(unique, errno.EIO)

    # -- helpers

    def _call(self, name, fn, *args, paths=(), cause=None, guard=()):
        """Run one call of the union (or of the open-file table, or of the control directory),
        timed into the stats and, for a change, traced. While someone traces, the union's
        events name the request as their cause (core.observe.OPERATION): (name, *paths), or
        `cause`, (op, path, to), where the union's operation differs. A path of `guard` in the
        control directory fails the call (EPERM), timed and traced as any failure."""
        token = (OPERATION.set(cause or (name, *paths, None, None)[:3])
                 if self.bus.subscribers else None)
        t = time.perf_counter_ns()
        try:
            for p in guard:
                if control.owns(p):
                    control.refuse(p)
            r = fn(*args)
        except OSError as e:
            self._record(name, t, -(e.errno or errno.EIO), paths)
            raise
        finally:
            if token is not None:
                OPERATION.reset(token)
        self._record(name, t, r, paths)
        return r

    def _record(self, name, t, r, paths):
        dt = time.perf_counter_ns() - t
        s = self._slots.get(name)
        if s is None:
            count, lat = self.stats.slot(name)
            s = self._slots[name] = (count.__next__, lat.append)
        s[0]()
        s[1](dt)
        if self.bus.subscribers and name in CHANGING and paths:
            self.observer.request(name, [p.encode(*P.UTF8) for p in paths if p is not None],
                                  r if isinstance(r, int) else 0, *P.UTF8)

    def _hold(self, nid, fh=None):
        """(node, path) of a request's node, read-locked; the caller unlocks. A node whose
        name is gone serves only requests that carry a file handle."""
        node, path = self.nodes.read_lock(nid)
        if path is None and fh is None:
            self.nodes.read_unlock(node)
            raise OSError(errno.ESTALE, "stale node")
        return node, path

    def _owner(self):
        """(uid, gid) of the process whose request this thread serves: the owner of what it
        makes."""
        return self.local.ctx[:2]

    def _child(self, nid, name):
        path = self.nodes.child_path(nid, name)
        if path is None:
            raise OSError(errno.ESTALE, "stale node")
        return path

    def _stat(self, path, fh=None):
        """(stat_result, st_ino, st_nlink) of a path, or of the open file `fh`."""
        if control.owns(path):
            return self.control.stat(path)
        h = self.files.get(fh)
        return self.union.getattr(path) if h is None else self.union.fgetattr(h)

    def _entry(self, nid, name, path):
        """The fuse_entry_out of a name just found or made; the kernel now holds its node."""
        st, ino, nlink = self._stat(path)
        return self._entry_of(self.nodes.looked_up(nid, name), st, ino, nlink)

    def _entry_of(self, node_id, st, ino, nlink):
        ev, av = self.entry_valid, self.attr_valid
        return P.ENTRY.pack(node_id, 0, ev[0], av[0], ev[1], av[1]) + P.attr(st, ino, nlink)

    def _attr(self, path, fh=None, counted=True):
        """The fuse_attr_out of a path; counted as a getattr in the stats only when a GETATTR
        asked for it (a SETATTR's answer is part of that request)."""
        st, ino, nlink = (self._call("getattr", self._stat, path, fh) if counted
                          else self._stat(path, fh))
        return P.ATTR_OUT.pack(self.attr_valid[0], self.attr_valid[1], 0) + P.attr(st, ino, nlink)

    def _invalidate(self, paths, pages=True):
        """The union changed what the kernel caches for `paths`, names the request did not
        give (hard-link aliases, ancestors copied up, a directory become merged), or gave
        without the kernel expecting a change (a file copied up on open).

        Attributes are dropped here, before the reply, so every answer is true when the
        request returns: the attribute-only notification takes spinlocks only (and the
        superblock's teardown lock, held for writing only at unmount), so it never waits on
        this daemon, also from a thread holding the reader's turn. It also raises the node's
        attribute version, so a GETATTR answered meanwhile with the old attributes is not
        cached. Pages (`pages`: the data may have changed) go to the notifier thread, never
        sent from a request thread: dropping them waits for pages locked by a read whose READ
        may be queued behind this very request (go-fuse and libfuse send notifications
        outside the request path for the same reason). Until the notifier has sent them, a
        reader whose attributes show a new size or mtime has them dropped by the kernel itself
        (auto_inval_data); the notifier covers writes that keep both."""
        for p in paths:
            nid = self.nodes.by_path(p)
            if nid is not None:
                self.channel.inval_inode(nid)
                if pages:
                    self.notifier.pages(nid)

    def ok(self, unique, nid, data):
        self.channel.reply(unique)

    def enosys(self, unique, nid, data):
        self.channel.reply_error(unique, errno.ENOSYS)

    # -- lifecycle

    def init(self, unique, nid, data):
        major, minor, readahead, flags = P.INIT_IN.unpack_from(data)
        if major != 7:
            self.channel.reply(unique, P.INIT_OUT.pack(7, P.MINOR, *[0] * 10))
            return
        # what libfuse 3.14 asked for, and readdirplus for every chunk of a listing (the
        # attributes are at hand, and each saves the kernel a LOOKUP); not HANDLE_KILLPRIV:
        # the kernel clears setuid and setgid bits itself
        want = flags & (P.ASYNC_READ | P.ATOMIC_O_TRUNC | P.BIG_WRITES | P.AUTO_INVAL_DATA |
                        P.ASYNC_DIO | P.PARALLEL_DIROPS | P.MAX_PAGES | P.DO_READDIRPLUS)
        offered2 = P.U32.unpack_from(data, 16)[0] if minor >= 36 and len(data) >= 20 else 0
        flags2, speak, depth = 0, min(minor, P.MINOR), 0
        if (self.passthrough_wanted and minor >= P.PASSTHROUGH_MINOR and flags & P.INIT_EXT
                and offered2 & P.PASSTHROUGH_FLAGS2):
            # FUSE passthrough: the kernel reads and writes the layers' files itself, which
            # ones fuse/passthrough.py decides. A stack depth of 1 keeps the mount usable as a
            # layer of the kernel's overlayfs.
            want |= P.INIT_EXT
            flags2, speak, depth = P.PASSTHROUGH_FLAGS2, P.PASSTHROUGH_MINOR, 1
            self.passthrough.on = True
        if self._uring_offer(minor, flags, offered2):
            want |= P.INIT_EXT
            flags2 |= P.OVER_IO_URING_FLAGS2
            speak = P.URING_MINOR
        self.channel.reply(unique, P.INIT_OUT.pack(
            7, speak, readahead, want, 0, 0, P.MAX_WRITE, 1, P.MAX_WRITE // 4096, 0, flags2,
            depth))
        if self.ring is not None:
            self.ring.start()
        if self.on_ready is not None:
            self.on_ready()

    # -- FUSE over io_uring (fuse/uring.py): where requests come from and replies go

    def _uring_offer(self, minor, flags, offered2):
        """True once a ring is set up and self.channel sends replies to it; else why not is
        kept (self.uring_fallback) and logged in one line."""
        if not self.uring_wanted:
            return False
        if minor < P.URING_MINOR or not flags & P.INIT_EXT or not offered2 & P.OVER_IO_URING_FLAGS2:
            why = "the kernel does not offer it (fuse module parameter enable_uring=N?)"
        else:
            from . import uring
            ring, why = uring.Ring.create(self.channel, self.answer, _handed, self.threads)
            if ring is not None:
                self.ring = ring
                self.channel = uring.RingChannel(self.channel, ring)
                return True
        self.uring_fallback = why
        log.warning("FUSE over io_uring: %s; serving /dev/fuse", why)
        return False

    def transport(self):
        """Where requests came from, for the stats document."""
        ring = self.ring
        return {"uring": ring is not None and ring.failure is None,
                "ring_requests": ring.requests if ring else 0,
                "dev_requests": self.dev_requests,
                "fallback": self.uring_fallback or (ring.failure if ring else None)}

    # -- names

    def lookup(self, unique, nid, data):
        name, _ = P.name(data)
        path = self._child(nid, name)
        try:
            st, ino, nlink = self._call("lookup", self._stat, path)
        except OSError as e:
            if e.errno == errno.ENOENT and self.negative is not None:
                self.channel.reply(unique, self.negative)
                return
            raise
        self.channel.reply(unique, self._entry_of(self.nodes.looked_up(nid, name), st, ino,
                                                  nlink))

    def forget(self, unique, nid, data):
        self.nodes.forget(nid, P.U64.unpack_from(data)[0])

    def batch_forget(self, unique, nid, data):
        count = P.U32.unpack_from(data)[0]
        for i in range(count):
            fnid, n = P.FORGET_ONE.unpack_from(data, 8 + 16 * i)
            self.nodes.forget(fnid, n)

    def getattr(self, unique, nid, data):
        flags, _, fh = P.GETATTR_IN.unpack_from(data)
        fh = fh if flags & P.GETATTR_FH else None
        node, path = self._hold(nid, fh)
        try:
            out = self._attr(path, fh)
        finally:
            self.nodes.read_unlock(node)
        self.channel.reply(unique, out)

    def setattr(self, unique, nid, data):
        (valid, _, fh, size, _lo, atime, mtime, _ct, atimens, mtimens, _ctns, mode, _u4, uid,
         gid, _u5) = P.SETATTR_IN.unpack_from(data)
        fh = fh if valid & P.FATTR_FH else None
        node, path = self._hold(nid, fh)
        try:
            out = self._setattr(path, fh, valid, size, atime, atimens, mtime, mtimens, mode,
                                uid, gid)
        finally:
            self.nodes.read_unlock(node)
        self.channel.reply(unique, out)

    def _setattr(self, path, fh, valid, size, atime, atimens, mtime, mtimens, mode, uid, gid):
        u, on = self.union, (path,)
        h = self.files.get(fh)  # a truncate with a handle goes through it
        gone = h if path is None else None  # a file with no name left: every change does
        if valid & P.FATTR_MODE:
            self._call("chmod", *((u.fchmod, gone) if gone else (u.chmod, path)), mode,
                       paths=on, guard=on)
            if mode & stat.S_ISGID:
                self.files.setgid_set()  # a writer that has written before checks again
        if valid & (P.FATTR_UID | P.FATTR_GID):
            self._call("chown", *((u.fchown, gone) if gone else (u.chown, path)),
                       uid if valid & P.FATTR_UID else -1, gid if valid & P.FATTR_GID else -1,
                       paths=on, guard=on)
        if valid & P.FATTR_SIZE:
            self._call("truncate", *((u.ftruncate, h) if h else (u.truncate, path)), size,
                       paths=on, guard=on)
        if valid & (P.FATTR_ATIME | P.FATTR_MTIME):
            now = time.time_ns()
            a = (now if valid & P.FATTR_ATIME_NOW else atime * 1_000_000_000 + atimens) \
                if valid & P.FATTR_ATIME else None
            m = (now if valid & P.FATTR_MTIME_NOW else mtime * 1_000_000_000 + mtimens) \
                if valid & P.FATTR_MTIME else None
            self._call("utimens", *((u.futimens, gone) if gone else (u.utimens, path)), a, m,
                       paths=on, guard=on)
        return self._attr(path, fh, counted=False)

    def readlink(self, unique, nid, data):
        node, path = self._hold(nid)
        try:
            target = self._call("readlink", self.union.readlink, path)
        finally:
            self.nodes.read_unlock(node)
        self.channel.reply(unique, target.encode(*P.UTF8))

    def symlink(self, unique, nid, data):
        name, end = P.name(data)
        target, _ = P.name(data, end)
        path = self._child(nid, name)
        self._call("symlink", self.union.symlink, path, target, self._owner(),
                   paths=(path, target), guard=(path,))
        self.channel.reply(unique, self._entry(nid, name, path))

    def mknod(self, unique, nid, data):
        mode, rdev, _umask, _ = P.MKNOD_IN.unpack_from(data)
        name, _ = P.name(data, P.MKNOD_IN.size)
        path = self._child(nid, name)
        self._call("mknod", self.union.mknod, path, mode, rdev, self._owner(), paths=(path,),
                   guard=(path,))
        self.channel.reply(unique, self._entry(nid, name, path))

    def mkdir(self, unique, nid, data):
        mode, _umask = P.MKDIR_IN.unpack_from(data)
        name, _ = P.name(data, P.MKDIR_IN.size)
        path = self._child(nid, name)
        self._call("mkdir", self.union.mkdir, path, mode, self._owner(), paths=(path,),
                   guard=(path,))
        self.channel.reply(unique, self._entry(nid, name, path))

    def _hide_if_open(self, nid, name, path):
        """A file still open keeps its data: its name goes as on unlink, and its node is
        detached (Nodes.hide), tracked by the node itself, never by a name's shape."""
        node = self.nodes.child(nid, name)
        if node is None or not self.nodes.is_open(node):
            return False
        alias = self.nodes.hidden_path()
        self._call("unlink", self.union.detach, path, alias, paths=(path,),
                   cause=("unlink", path, alias), guard=(path,))
        self.nodes.hide(node, alias)
        return True

    def unlink(self, unique, nid, data):
        name, _ = P.name(data)
        held = self.nodes.write_lock((nid, name))
        try:
            path = self._child(nid, name)
            if not self._hide_if_open(nid, name, path):
                self._call("unlink", self.union.unlink, path, paths=(path,), guard=(path,))
                self.nodes.removed(nid, name)
        finally:
            self.nodes.write_unlock(held)
        self.channel.reply(unique)

    def rmdir(self, unique, nid, data):
        name, _ = P.name(data)
        held = self.nodes.write_lock((nid, name))
        try:
            path = self._child(nid, name)
            self._call("rmdir", self.union.rmdir, path, paths=(path,), guard=(path,))
            self.nodes.removed(nid, name)
        finally:
            self.nodes.write_unlock(held)
        self.channel.reply(unique)

    def _rename(self, unique, nid, name, new_nid, new_name, flags):
        held = self.nodes.write_lock((nid, name), (new_nid, new_name))
        try:
            old, new = self._child(nid, name), self._child(new_nid, new_name)
            if not flags & 2:  # not RENAME_EXCHANGE: an open target keeps its data
                self._hide_if_open(new_nid, new_name, new)
            self._call("rename", self.union.rename, old, new, flags, paths=(old, new),
                       guard=(old, new))
            self.nodes.moved(nid, name, new_nid, new_name, exchange=bool(flags & 2))
        finally:
            self.nodes.write_unlock(held)
        self.channel.reply(unique)

    def rename(self, unique, nid, data):
        new_nid = P.U64.unpack_from(data)[0]
        name, end = P.name(data, 8)
        new_name, _ = P.name(data, end)
        self._rename(unique, nid, name, new_nid, new_name, 0)

    def rename2(self, unique, nid, data):
        new_nid, flags, _ = P.RENAME2_IN.unpack_from(data)
        name, end = P.name(data, P.RENAME2_IN.size)
        new_name, _ = P.name(data, end)
        self._rename(unique, nid, name, new_nid, new_name, flags)

    def link(self, unique, nid, data):
        old_nid = P.U64.unpack_from(data)[0]
        name, _ = P.name(data, 8)
        node, old = self._hold(old_nid)
        try:
            new = self._child(nid, name)
            self._call("link", self.union.link, old, new, paths=(old, new), guard=(new, old))
            out = self._entry(nid, name, new)
        finally:
            self.nodes.read_unlock(node)
        self.channel.reply(unique, out)

    # -- files

    def _opened(self, nid, fh, flags):
        """fuse_open_out of a file just opened: the kernel's or the daemon's to serve."""
        self.nodes.opened(nid)
        # close() waits for a FLUSH, which only a descriptor that may have written needs
        # (flush brings a hard link's other names up to date): none for a read-only one
        noflush = P.FOPEN_NOFLUSH if flags & os.O_ACCMODE == os.O_RDONLY else 0
        if fh >= control.FH_BASE:
            return P.OPEN_OUT.pack(fh, P.FOPEN_DIRECT_IO | noflush, 0)
        # a writer outside the file's group is served by the daemon (the setgid rule,
        # core/file.py), as is every open while someone traces
        ctx = self.local.ctx
        mode, backing = self.passthrough.open(
            nid, fh, self.files.get(fh), flags, bool(self.bus.subscribers),
            lambda st: self.union.outside_group(st, *ctx))
        return P.OPEN_OUT.pack(fh, mode | noflush, backing)

    def open(self, unique, nid, data):
        flags, _ = P.OPEN_IN.unpack_from(data)
        node, path = self._hold(nid)
        try:
            fh = self._call("open", self.files.open, path, flags, self.local.ctx[0],
                            cause=("open", path, None))
            out = self._opened(nid, fh, flags)
        finally:
            self.nodes.read_unlock(node)
        self.channel.reply(unique, out)

    def create(self, unique, nid, data):
        flags, mode, _umask, _ = P.CREATE_IN.unpack_from(data)
        name, _ = P.name(data, P.CREATE_IN.size)
        path = self._child(nid, name)
        fh = self._call("create", self.files.create, path, mode, flags, self._owner(),
                        paths=(path,), guard=(path,))
        self.channel.reply(unique, self._created(nid, name, path, fh, flags))

    def _created(self, nid, name, path, fh, flags):
        """fuse_entry_out + fuse_open_out of a file just made and opened (closed again if its
        attributes cannot be read)."""
        try:
            st, ino, nlink = self._stat(path, fh)
        except OSError:
            self.files.release(fh)
            raise
        node_id = self.nodes.looked_up(nid, name)
        return self._entry_of(node_id, st, ino, nlink) + self._opened(node_id, fh, flags)

    def tmpfile(self, unique, nid, data):
        """open(O_TMPFILE): a file made under a hidden name, then unlinked while open (as any
        such file: it lives in the work dir until its last close, and linkat can name it)."""
        flags, mode, _umask, _ = P.CREATE_IN.unpack_from(data)
        flags &= ~(os.O_TMPFILE | os.O_CREAT | os.O_EXCL)
        for _ in range(8):  # a name a user already has is left alone: another one
            name = self.nodes.hidden_name(nid)
            path = self._child(nid, name)
            try:
                fh = self._call("tmpfile", self.files.create, path, mode,
                                flags | os.O_CREAT | os.O_EXCL, self._owner(),
                                cause=("create", path, None), guard=(path,))
                break
            except FileExistsError:
                continue
        else:
            raise OSError(errno.EEXIST, "no free name")
        out = self._created(nid, name, path, fh, flags)  # nlink 1: the kernel drops it to 0
        try:
            held = self.nodes.write_lock((nid, name))
            try:
                self._hide_if_open(nid, name, path)
            finally:
                self.nodes.write_unlock(held)
        except BaseException:
            self.passthrough.release(fh)
            self.files.release(fh)
            raise
        self.channel.reply(unique, out)

    def read(self, unique, nid, data):
        fh, offset, size, *_ = P.RW_IN.unpack_from(data)
        local = self.local
        out = getattr(local, "out", None)
        if out is None or len(out) < size + 16:
            out = local.out = mmap.mmap(-1, max(size, P.MAX_WRITE) + 16)
        view = memoryview(out)
        n = self._call("read", self.files.readinto, fh, view[16:16 + size], offset)
        P.OUT_HEADER.pack_into(out, 0, 16 + n, 0, unique)
        self.channel.send([view[:16 + n]])

    def write(self, unique, nid, data):
        fh, offset, size, *_ = P.RW_IN.unpack_from(data)
        payload = data[P.RW_IN.size:P.RW_IN.size + size]
        path = self.nodes.path(nid) if self.bus.subscribers else None
        n = self._call("write", self.files.write, fh, payload, offset, self.local.ctx,
                       paths=(path,))
        self.channel.reply(unique, P.WRITE_OUT.pack(n, 0))

    def release(self, unique, nid, data):
        fh = P.RELEASE_IN.unpack_from(data)[0]
        self.passthrough.release(fh)
        self._call("release", self.files.release, fh)
        path = self.nodes.closed(nid)
        if path is not None:
            # a file unlinked while open goes with its last close
            try:
                self.union.unlink(path)
            except OSError:
                pass
        self.channel.reply(unique)

    def flush(self, unique, nid, data):
        """close(): the caller waits for this reply (not for RELEASE), so the other names of
        a hard link written through this file are brought up to date here."""
        self._call("flush", self.files.flush, P.U64.unpack_from(data)[0])
        self.channel.reply(unique)

    def fsync(self, unique, nid, data):
        fh, flags, _ = P.FSYNC_IN.unpack_from(data)
        self._call("fsync", self.files.fsync, fh, flags & P.FSYNC_FDATASYNC)
        self.channel.reply(unique)

    def fallocate(self, unique, nid, data):
        fh, offset, length, mode, _ = P.FALLOCATE_IN.unpack_from(data)
        path = self.nodes.path(nid)
        self._call("fallocate", self.files.fallocate, fh, mode, offset, length, paths=(path,))
        self.channel.reply(unique)

    def lseek(self, unique, nid, data):
        fh, offset, whence, _ = P.LSEEK_IN.unpack_from(data)
        pos = self._call("lseek", self.files.lseek, fh, offset, whence)
        self.channel.reply(unique, P.U64.pack(pos))

    def statfs(self, unique, nid, data):
        s = self._call("statfs", self.union.statfs)
        self.channel.reply(unique, P.KSTATFS.pack(
            s.f_blocks, s.f_bfree, s.f_bavail, s.f_files, s.f_ffree, s.f_bsize,
            s.f_namemax, s.f_frsize, 0))

    # -- extended attributes

    def _xattr_reply(self, unique, size, value):
        if size == 0:
            self.channel.reply(unique, P.XATTR_IN.pack(len(value), 0))
        elif len(value) > size:
            self.channel.reply_error(unique, errno.ERANGE)
        else:
            self.channel.reply(unique, value)

    def getxattr(self, unique, nid, data):
        size, _ = P.XATTR_IN.unpack_from(data)
        name, _ = P.name(data, P.XATTR_IN.size)
        node, path = self._hold(nid)
        try:
            ours = control.owns_xattr(path, name)
            value = self._call("getxattr", self.control.getxattr if ours else self.union.getxattr,
                               path, name)
        finally:
            self.nodes.read_unlock(node)
        self._xattr_reply(unique, size, bytes(value))

    def listxattr(self, unique, nid, data):
        size, _ = P.XATTR_IN.unpack_from(data)
        node, path = self._hold(nid)
        try:
            names = self._call("listxattr", self.control.listxattr if control.owns(path)
                               else self.union.listxattr, path)
        finally:
            self.nodes.read_unlock(node)
        self._xattr_reply(unique, size, b"".join(n.encode(*P.UTF8) + b"\0" for n in names))

    def setxattr(self, unique, nid, data):
        size, flags = P.XATTR_IN.unpack_from(data)
        name, end = P.name(data, P.XATTR_IN.size)
        node, path = self._hold(nid)
        try:
            ours = control.owns_xattr(path, name)
            self._call("setxattr", control.refuse if ours else self.union.setxattr, path, name,
                       bytes(data[end:end + size]), flags, paths=(path,),
                       cause=("setxattr", path, name))
        finally:
            self.nodes.read_unlock(node)
        self.channel.reply(unique)

    def removexattr(self, unique, nid, data):
        name, _ = P.name(data)
        node, path = self._hold(nid)
        try:
            ours = control.owns_xattr(path, name)
            self._call("removexattr", control.refuse if ours else self.union.removexattr, path,
                       name, paths=(path,), cause=("removexattr", path, name))
        finally:
            self.nodes.read_unlock(node)
        self.channel.reply(unique)

    # -- directories

    def opendir(self, unique, nid, data):
        """Not implemented on purpose: after the first ENOSYS the kernel sends no OPENDIR or
        RELEASEDIR again and keeps every listing (FOPEN_CACHE_DIR | FOPEN_KEEP_CACHE, its
        default without opendir) until a change through the mount alters the directory. A
        listing needs no handle: its offsets name it (core.readdir.Listings)."""
        self.channel.reply_error(unique, errno.ENOSYS)

    def readdir(self, unique, nid, data):
        self._list(unique, nid, data, False)

    def readdirplus_(self, unique, nid, data):
        self._list(unique, nid, data, True)

    def _snapshot(self, path, offset, plus):
        """(generation, entries) of the listing served from `offset` on (core.readdir.Listings);
        the control directory's is generation 0, made anew for every read."""
        if control.owns(path):
            return 0, self.control.listdir(path, plus)

        def take():
            entries = self.union.listdir(path, plus)
            return self.control.shadow(entries, plus) if path == "/" else entries
        return self.listings.at(offset, plus, take)

    def _list(self, unique, nid, data, plus):
        """Entries from offset on, as many as fit; each entry's offset names its listing and
        its index in it (core.readdir.Listings). With plus, each entry but . and .. hands the kernel
        a node."""
        _fh, offset, size, *_ = P.RW_IN.unpack_from(data)
        path = self.nodes.path(nid)
        if path is None:  # a removed directory still open: nothing left in it
            self.channel.reply(unique)
            return
        gen, entries = self._call("readdir", self._snapshot, path, offset, plus)
        parts, used = [], 0
        base = gen << 32
        for i in range(offset & 0xFFFFFFFF, len(entries)):
            name, code, ino, full = entries[i]
            raw = name.encode(*P.UTF8)
            ent = P.dirent(ino, base | (i + 1), raw, code)
            if plus:
                need = len(ent) + P.ENTRY.size + P.ATTR.size
                if used + need > size:
                    break
                if full is not None and name not in (".", ".."):
                    ent = self._entry_of(self.nodes.looked_up(nid, name), *full) + ent
                else:
                    ent = P.ENTRY.pack(0, 0, 0, 0, 0, 0) + P.bare_attr(ino, code) + ent
            elif used + len(ent) > size:
                break
            parts.append(ent)
            used += len(ent)
        self.channel.reply(unique, b"".join(parts))

