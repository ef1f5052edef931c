"""FUSE over io_uring (kernel 6.14+, protocol 7.42): requests taken from, and replies given to,
the entries of an io_uring instead of one read() and one writev() on /dev/fuse each.

The kernel keeps one queue per possible CPU; a request goes to the queue of the CPU its process
runs on, into an entry the daemon registered (FUSE_IO_URING_CMD_REGISTER: a header buffer and a
payload buffer of the largest request). The daemon answers into the same buffers and hands the
entry back with FUSE_IO_URING_CMD_COMMIT_AND_FETCH, which delivers the reply and waits for the
next request: one io_uring_enter per request. FORGET and INTERRUPT still come through /dev/fuse
(the kernel queues them there), as do notifications (the ring carries none): the server's
/dev/fuse readers stay.

One thread owns the ring (SINGLE_ISSUER | DEFER_TASKRUN: the kernel copies a request into its
entry only while that thread waits in io_uring_enter, so no other thread is woken for it) and
serves the entries of every queue. It answers most requests itself, as the /dev/fuse reader
does; a request the server hands on (fuse/server.py: it may copy up, flush or wait) goes to a
helper thread, whose reply the ring thread commits when an eventfd read in the ring wakes it.

Fallback: `Ring.create` returns None and says why (a log line, and the stats' transport) where
io_uring cannot be set up (ENOSYS, EPERM under kernel.io_uring_disabled, not x86-64); the server
then does not ask for FUSE_OVER_IO_URING, as where the kernel does not offer it (the fuse module's
enable_uring parameter is N). If the kernel refuses an entry's registration it drops io_uring on
the connection itself, and requests keep coming through /dev/fuse.

The rings' heads and tails are plain 32-bit loads and stores, which x86-64's memory ordering
makes acquire and release; other architectures would need barriers, so they fall back.
"""
import collections
import ctypes
import errno
import logging
import mmap
import os
import platform
import queue
import struct
import threading

from . import proto as P

log = logging.getLogger("unionfs")

_SYS_SETUP, _SYS_ENTER = 425, 426  # one number on every architecture
_SETUP_SQE128, _SETUP_SINGLE_ISSUER, _SETUP_DEFER_TASKRUN = 1 << 10, 1 << 12, 1 << 13
_ENTER_GETEVENTS = 1
_FEAT_SINGLE_MMAP = 1
_OFF_SQES = 0x10000000
_OP_READ, _OP_URING_CMD = 22, 46
_SQE_SIZE, _CQE_SIZE = 128, 16
# struct io_uring_params: 7 u32 and 3 reserved, then io_sqring_offsets, io_cqring_offsets
_PARAMS = struct.Struct("=IIIIIII12x" + "IIIIIIII8x" + "IIIIIIII8x")
_SQE = struct.Struct("=BBHiIIQIIQHHi")  # up to the 80-byte command area (SQE128)
_CQE = struct.Struct("=Qi")
_WAKE = 1 << 32     # user_data of the eventfd read; entries are numbered from 0
_PAYLOAD = 4096     # the payload's offset in an entry's mapping, after the header buffer
_GONE = (errno.ENOTCONN, errno.ECANCELED, errno.ECONNABORTED)  # the connection ended

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall  # CDLL: the GIL is released while the ring thread waits in it
_syscall.restype = ctypes.c_long
_syscall.argtypes = [ctypes.c_long] * 7


def possible_cpus():
    """How many queues the kernel keeps: one per possible CPU (num_possible_cpus)."""
    try:
        with open("/sys/devices/system/cpu/possible") as f:
            spans = f.read().strip().split(",")
    except OSError:
        return os.cpu_count() or 1
    n = 0
    for span in spans:
        lo, _, hi = span.partition("-")
        n += int(hi or lo) - int(lo) + 1
    return n


class _Entry:
    """One ring entry: header buffer at 0, payload at _PAYLOAD, in one anonymous mapping."""
    __slots__ = ("index", "qid", "mm", "view", "iov", "commit_id")

    def __init__(self, index, qid):
        self.index, self.qid, self.commit_id = index, qid, 0
        self.mm = mmap.mmap(-1, _PAYLOAD + P.MAX_WRITE)
        self.view = memoryview(self.mm)
        base = ctypes.addressof(ctypes.c_char.from_buffer(self.mm))
        # the iovecs REGISTER names: header, payload
        self.iov = (ctypes.c_uint64 * 4)(base, P.URING_HEADER_SIZE, base + _PAYLOAD, P.MAX_WRITE)


class Ring:
    """The ring thread and its entries; `send` is where every reply goes (RingChannel)."""

    @classmethod
    def create(cls, channel, answer, handed, depth):
        """A ring set up by its thread, waiting for start(); or (None, why)."""
        if platform.machine() not in ("x86_64", "AMD64"):
            return None, "io_uring rings are read without barriers, x86-64 only"
        ring = cls(channel, answer, handed, depth)
        if ring.failure:
            return None, ring.failure
        return ring, None

    def __init__(self, channel, answer, handed, depth):
        self.channel = channel          # the /dev/fuse channel: its fd, and what the ring skips
        self._answer, self._handed = answer, handed
        self.queues = possible_cpus()
        self.entries = [_Entry(i, i // depth) for i in range(self.queues * depth)]
        self.helpers = depth
        self.requests = 0               # requests taken from the ring
        self.failure = None
        self._by_unique = {}            # unique of a request in userspace -> its entry
        self._done = collections.deque()   # entries answered by helpers, to commit
        self._work = queue.SimpleQueue()   # handed requests, for the helpers
        self._efd = os.eventfd(0, os.EFD_CLOEXEC)
        self._wake_buf = ctypes.c_uint64(0)
        self._pending = 0               # SQEs queued, not yet submitted
        self._go = threading.Event()
        self._set_up = threading.Event()
        self._ident = None
        self._thread = threading.Thread(target=self._run, name="fuse-uring", daemon=True)
        self._thread.start()
        self._set_up.wait()

    def start(self):
        """Register the entries (the kernel has the INIT reply): requests come here from now."""
        for i in range(self.helpers):
            threading.Thread(target=self._help, name="fuse-uring-%d" % i, daemon=True).start()
        self._go.set()

    # -- the ring

    def _setup(self):
        n = 1
        while n < len(self.entries) + 1:  # every entry's SQE and the eventfd read fit at once
            n *= 2
        params = bytearray(_PARAMS.size)
        struct.pack_into("=I", params, 8,
                         _SETUP_SQE128 | _SETUP_SINGLE_ISSUER | _SETUP_DEFER_TASKRUN)
        buf = (ctypes.c_char * len(params)).from_buffer(params)
        fd = _syscall(_SYS_SETUP, n, ctypes.addressof(buf), 0, 0, 0, 0)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "io_uring_setup")
        del buf
        (sq_n, cq_n, _fl, _cpu, _idle, features, _wq, sq_head, sq_tail, sq_mask, _sq_ent,
         _sq_flags, _dropped, sq_array, _r1, cq_head, cq_tail, cq_mask, _cq_ent, _ovf, cqes,
         _cq_flags, _r2) = _PARAMS.unpack(params)
        if not features & _FEAT_SINGLE_MMAP:
            os.close(fd)
            raise OSError(errno.ENOTSUP, "io_uring without a single mapping (kernel < 5.4)")
        size = max(sq_array + 4 * sq_n, cqes + _CQE_SIZE * cq_n)
        size += -size % 4
        prot = mmap.PROT_READ | mmap.PROT_WRITE
        self._fd = fd
        self._mm = mmap.mmap(fd, size, mmap.MAP_SHARED | mmap.MAP_POPULATE, prot, offset=0)
        self._sqes = mmap.mmap(fd, _SQE_SIZE * sq_n, mmap.MAP_SHARED | mmap.MAP_POPULATE,
                               prot, offset=_OFF_SQES)
        self._u32 = memoryview(self._mm).cast("I")
        for i in range(sq_n):  # SQE i always sits in slot i of the array
            self._u32[sq_array // 4 + i] = i
        self._sq_tail_at, self._sq_mask = sq_tail // 4, self._u32[sq_mask // 4]
        self._sq_tail = self._u32[self._sq_tail_at]
        self._cq_head_at, self._cq_tail_at = cq_head // 4, cq_tail // 4
        self._cq_mask, self._cqes = self._u32[cq_mask // 4], cqes

    def _push(self, user_data, opcode, fd, cmd_op, addr, length, cmd=(0, 0, 0)):
        """Queue one SQE (ring thread only); the next wait submits it."""
        tail = self._sq_tail
        off = (tail & self._sq_mask) * _SQE_SIZE
        _SQE.pack_into(self._sqes, off, opcode, 0, 0, fd, cmd_op & 0xFFFFFFFF, cmd_op >> 32,
                       addr, length, 0, user_data, 0, 0, 0)
        P.URING_CMD_REQ.pack_into(self._sqes, off + 48, *cmd)
        self._sq_tail = tail = (tail + 1) & 0xFFFFFFFF
        self._u32[self._sq_tail_at] = tail
        self._pending += 1

    def _commit(self, ent):
        self._push(ent.index, _OP_URING_CMD, self.channel.fd, P.URING_CMD_COMMIT_AND_FETCH, 0,
                   0, (0, ent.commit_id, ent.qid))

    def _arm_wake(self):
        self._push(_WAKE, _OP_READ, self._efd, (1 << 64) - 1,  # offset -1: the file's own
                   ctypes.addressof(self._wake_buf), 8)

    def _next(self):
        """(user_data, res) of the next completion, submitting what is queued on the way."""
        u32 = self._u32
        while True:
            head = u32[self._cq_head_at]
            ready = head != u32[self._cq_tail_at]
            if self._pending or not ready:
                r = _syscall(_SYS_ENTER, self._fd, self._pending, 0 if ready else 1,
                             _ENTER_GETEVENTS, 0, 0)
                if r < 0:
                    e = ctypes.get_errno()
                    if e not in (errno.EINTR, errno.EAGAIN, errno.EBUSY):
                        raise OSError(e, "io_uring_enter")
                else:
                    self._pending -= r
                if not ready:
                    continue
            user_data, res = _CQE.unpack_from(self._mm, self._cqes +
                                              (head & self._cq_mask) * _CQE_SIZE)
            u32[self._cq_head_at] = (head + 1) & 0xFFFFFFFF
            return user_data, res

    def _run(self):
        self._ident = threading.get_ident()
        try:
            self._setup()
        except OSError as e:
            self.failure = "io_uring_setup: %s" % os.strerror(e.errno)
        self._set_up.set()
        if self.failure:
            return
        self._go.wait()
        for ent in self.entries:
            self._push(ent.index, _OP_URING_CMD, self.channel.fd, P.URING_CMD_REGISTER,
                       ctypes.addressof(ent.iov), 2, (0, 0, ent.qid))
        self._arm_wake()
        live = len(self.entries)
        try:
            while live:
                user_data, res = self._next()
                if user_data == _WAKE:
                    while self._done:
                        self._commit(self._done.popleft())
                    self._arm_wake()
                elif res < 0:
                    live -= 1  # this entry is out of the ring
                    if -res not in _GONE and self.failure is None:
                        self.failure = "entry %d: %s" % (user_data, os.strerror(-res))
                        log.warning("FUSE over io_uring: %s; /dev/fuse serves", self.failure)
                else:
                    self._take(self.entries[user_data])
        except OSError as e:
            log.error("FUSE over io_uring: %s", e)
            self.failure = str(e)

    def _take(self, ent):
        """Lay the request out as /dev/fuse gives it (header, opcode header, payload: the two
        headers are copied in front of the payload) and answer it, or hand it on."""
        mm = ent.mm
        length, op, unique = P.IN_HEADER.unpack_from(mm)[:3]
        _flags, ent.commit_id, size = P.URING_ENT.unpack_from(mm, P.URING_ENT_IN_OUT)
        own = length - P.IN_HEADER.size - size  # the opcode's header (its first argument)
        start = _PAYLOAD - P.IN_HEADER.size - own
        mm[start:start + P.IN_HEADER.size] = mm[:P.IN_HEADER.size]
        if own:
            mm[_PAYLOAD - own:_PAYLOAD] = mm[P.URING_OP_IN:P.URING_OP_IN + own]
        req = ent.view[start:_PAYLOAD + size]
        self.requests += 1
        self._by_unique[unique] = ent
        if self._handed(op, req):
            self._work.put(req)
        else:
            self._answer(req)

    def _help(self):
        while True:
            self._answer(self._work.get())

    # -- replies

    def send(self, parts):
        """A reply (out header first) into its request's entry, committed by the ring thread;
        anything else (a request read from /dev/fuse) is written there."""
        ent = self._by_unique.pop(P.U64.unpack_from(parts[0], 8)[0], None)
        if ent is None:
            self.channel.send(parts)
            return
        mm = ent.mm
        first = parts[0]
        mm[:P.OUT_HEADER.size] = first[:P.OUT_HEADER.size]
        pos = _PAYLOAD
        for p in (first[P.OUT_HEADER.size:], *parts[1:]):
            n = len(p)
            mm[pos:pos + n] = p
            pos += n
        P.U32.pack_into(mm, P.URING_ENT_IN_OUT + 16, pos - _PAYLOAD)
        if threading.get_ident() == self._ident:
            self._commit(ent)
        else:
            self._done.append(ent)
            os.eventfd_write(self._efd, 1)


class RingChannel:
    """The server's channel while the ring serves: replies go to the ring, the rest (reading
    /dev/fuse, notifications, passthrough ioctls, unmounting) to the /dev/fuse channel."""

    def __init__(self, channel, ring):
        self._channel, self.ring = channel, ring
        self.send = ring.send

    def reply(self, unique, payload=b""):
        self.send([P.OUT_HEADER.pack(16 + len(payload), 0, unique), payload])

    def reply_error(self, unique, err):
        self.send([P.OUT_HEADER.pack(16, -err, unique)])

    def __getattr__(self, name):
        return getattr(self._channel, name)
