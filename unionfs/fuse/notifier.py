"""The notifier thread: the kernel's page invalidations of nodes, sent off the request path.

Dropping a node's pages can wait on the very request loop that would answer the READ holding
them (fuse/server.py, `Server._invalidate`, says what is sent where); go-fuse and libfuse send
their notifications outside the request path for the same reason.
"""
import logging
import threading
import time

log = logging.getLogger("unionfs")


class Notifier:
    """Sends the kernel the page invalidations of nodes, from a thread of its own.

    Dropping a node's pages waits for every page a read has locked while its READ is in
    flight; a request thread may hold the reader's turn, the only thread that would read that
    READ, so it must never wait there (Server._invalidate says what is sent where). Nodes
    queued again before their turn are sent once."""

    def __init__(self, channel):
        self.channel = channel
        self._pending = {}       # node id -> None: a set in queue order
        self._cond = threading.Condition()
        self._send = threading.Lock()   # held while a notification is being written
        self._stopping = False
        self.sent = 0
        self._thread = threading.Thread(target=self._run, name="fuse-notify", daemon=True)

    def start(self):
        self._thread.start()

    def pages(self, nid):
        with self._cond:
            self._pending[nid] = None
            self._cond.notify()

    def idle(self, timeout):
        """True once nothing is queued or being sent (tests)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._cond:
                if not self._pending and not self._send.locked():
                    return True
            time.sleep(0.01)
        return False

    def stop(self, timeout=5.0):
        """True once the thread has ended: no notification can be written after it (the
        channel may then be closed, its descriptor number reused)."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self):
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                nid = next(iter(self._pending))  # one at a time: the rest may coalesce
                del self._pending[nid]
                self._send.acquire()
            try:
                self.channel.inval_inode(nid, 0, 0)
                self.sent += 1
            except OSError as e:
                log.warning("invalidating the pages of node %d: %s", nid, e)
            finally:
                self._send.release()
