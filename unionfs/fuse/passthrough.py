"""Which opens the kernel serves without the daemon (FUSE passthrough, Linux 6.9+; root), and
the backing files it reads and writes them through: one per inode.

The kernel's rules (fs/fuse/iomode.c) shape this. Every passthrough open of one inode must name
the same backing file (fuse_inode_uncached_io_start: -EBUSY otherwise); an inode with opens
through the page cache refuses a passthrough open (-ETXTBSY), and an inode with passthrough opens
refuses a cached one (fuse_file_cached_io_open); the opener sees either refusal as EIO. So the
backing id is kept per node, counted by its opens, and dropped at the last release; and an
inode's mode only changes once all its opens of the other mode are closed.

Which files pass through:
- every file of a read-only mount: its data never moves.
- on a read-write mount, a file whose data is in the upper layer (made there or copied up). Not
  a lower file: copy-up moves its data, and a passthrough open keeps the backing file it was
  opened with until it closes (fuse_passthrough_open takes a reference; no request swaps it), so
  a reader would go on reading the lower copy after a writer changed the upper one, where the
  kernel's overlayfs moves the reader to the upper copy (ovl_real_fdget). Refusing the write
  until the readers close, or giving it a direct-I/O open beside them, is no better.
- not setuid or setgid files, nor write opens by a user outside the file's group (not root):
  the daemon applies the rule for clearing setgid on such a write (core/file.py, first_write),
  which a write the daemon never sees would skip, also once a chmod made the file setgid while
  it stayed open. (The kernel's FUSE client clears setuid, and setgid with group execute, on a
  passthrough write itself.) An inode already passing through passes such an open through too
  (below); docs/security.md names that case.
- not while someone traces or watches the mount (the trace, the explorer): new opens are served
  by the daemon so that their writes are events. An inode already passing through keeps doing so
  for new opens (it cannot mix modes); writes through those are not in the trace.
A file that would pass through but cannot (the inode has cached opens, the kernel refuses the
backing file) is opened through the page cache; a cached open of an upper file does not keep
the page cache (no FOPEN_KEEP_CACHE), as passthrough writes may have bypassed it.
"""
import os
import stat
import threading

from . import proto as P

_SET_ID = stat.S_ISUID | stat.S_ISGID
_WRITING = os.O_ACCMODE | os.O_TRUNC


class Passthrough:
    """The open mode of each inode with opens, and its backing id."""

    def __init__(self, channel, read_only):
        self.channel = channel
        self.read_only = read_only
        self.on = False     # negotiated at INIT
        self._lock = threading.Lock()
        self._nodes = {}    # node id -> [backing id or 0 (cached opens), open count]
        self._fhs = {}      # file handle -> node id

    def __len__(self):
        """Inodes with passthrough opens (for the control dir's stats)."""
        return sum(1 for b, _ in self._nodes.values() if b)

    def open(self, nid, fh, handle, flags, listening, outsider=None):
        """(FOPEN flags, backing id) for the reply to an open of `handle` (the union's) as file
        handle `fh` of node `nid`; `flags` the open's, `listening` whether events are wanted,
        `outsider(st)` whether the opener is outside the group of the file whose stat is st."""
        if not self.on:
            return P.FOPEN_KEEP_CACHE, 0
        want = self.read_only
        if not want and not handle.lower and not listening:
            st = os.fstat(fh)
            want = not (st.st_mode & _SET_ID or (flags & _WRITING and outsider is not None
                                                 and outsider(st)))
        with self._lock:
            state = self._nodes.get(nid)
            if state is None:
                state = self._nodes[nid] = [0, 0]
            elif state[0]:
                want = True  # the inode passes through: so does every open of it
            elif state[1]:
                want = False  # cached opens: until they all close
            if want and not state[0]:
                try:
                    state[0] = self.channel.backing_open(fh)
                except OSError:  # e.g. a layer on a stacked filesystem: served by the daemon
                    want = False
            state[1] += 1
            self._fhs[fh] = nid
            backing = state[0]
        if want:
            if flags & _WRITING:
                handle.written = True  # flush tells the file's other names (core/file.py)
            return P.FOPEN_PASSTHROUGH, backing
        return (P.FOPEN_KEEP_CACHE if self.read_only or handle.lower else 0), 0

    def release(self, fh):
        """The kernel closed `fh`: the node's backing id goes with its last open."""
        with self._lock:
            nid = self._fhs.pop(fh, None)
            if nid is None:
                return
            state = self._nodes[nid]
            state[1] -= 1
            if state[1]:
                return
            del self._nodes[nid]
            backing = state[0]
        if backing:
            # the kernel released its files of the inode before sending this RELEASE
            self.channel.backing_close(backing)
