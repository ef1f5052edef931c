"""fuse/server.py and fuse/notifier.py: the invalidations (attributes at once, pages from the
notifier thread)."""
import threading
import time

from unionfs.fuse.nodes import ROOT, Nodes
from unionfs.fuse.notifier import Notifier
from unionfs.fuse.server import Server


# ---- invalidations: attributes at once, pages from the notifier thread ----------------------

class _Channel:
    """Records notifications; the page form blocks until released, as the kernel's does while
    a read holds a page locked waiting for a READ."""

    def __init__(self):
        self.calls = []
        self.blocked = threading.Event()
        self.go = threading.Event()

    def inval_inode(self, nid, offset=-1, length=0):
        self.calls.append((threading.current_thread().name, nid, offset >= 0))
        if offset >= 0:
            self.blocked.set()
            assert self.go.wait(10)


def _server():
    srv = Server.__new__(Server)  # no mount: what _invalidate uses
    srv.nodes = Nodes()
    srv.channel = _Channel()
    srv.notifier = Notifier(srv.channel)
    return srv


def test_invalidate_sends_attributes_before_returning_and_pages_from_the_notifier():
    srv = _server()
    a = srv.nodes.looked_up(ROOT, "a")
    b = srv.nodes.looked_up(ROOT, "b")
    ch = srv.channel
    srv.notifier.start()
    try:
        srv._invalidate(["/a", "/b", "/unknown"])
        assert ch.blocked.wait(5)  # the notifier is stuck on /a's pages ...
        t = time.monotonic()
        srv._invalidate(["/b"])    # ... and a request thread still never waits
        srv._invalidate(["/a"], pages=False)
        assert time.monotonic() - t < 1
        me = threading.current_thread().name
        assert [c for c in ch.calls if not c[2]] == [(me, a, False), (me, b, False),
                                                     (me, b, False), (me, a, False)]
        assert not srv.notifier.idle(0.2)
    finally:
        ch.go.set()
    assert srv.notifier.idle(5)
    assert srv.notifier.stop(5)
    # pages: from the notifier thread only, /b once though asked twice while it waited
    assert [c for c in ch.calls if c[2]] == [("fuse-notify", a, True),
                                             ("fuse-notify", b, True)]


def test_notifier_idle_and_stop_when_nothing_is_stuck():
    srv = _server()
    srv.channel.go.set()
    n = srv.nodes.looked_up(ROOT, "n")
    srv.notifier.start()
    srv._invalidate(["/n"])
    assert srv.notifier.idle(5)
    assert srv.notifier.sent == 1
    assert srv.notifier.stop(5)
    srv.notifier.pages(n)  # after stop: never sent
    time.sleep(0.1)
    assert srv.notifier.sent == 1


def test_notifier_stuck_in_the_kernel_does_not_stop():
    """serve() closes the channel only once the notifier has ended (a descriptor closed under
    a write still in the kernel could be reused before the next one)."""
    srv = _server()
    srv.nodes.looked_up(ROOT, "n")
    srv.notifier.start()
    try:
        srv._invalidate(["/n"])
        assert srv.channel.blocked.wait(5)
        assert not srv.notifier.stop(0.2)
    finally:
        srv.channel.go.set()
    assert srv.notifier.stop(5)
