"""What the core tells whoever observes it, and which request caused it.

The core calls an `Observer`'s hooks at its change points with plain arguments and never knows who
listens (the kernel's tracepoints). This class is the interface and the default: every hook does
nothing, so a union nobody observes pays one method call per change. The recorder that counts
and keeps the event stream (unionfs/observe.py) implements it outside core. A hook is given all
its event says (the upper's real path, what a whiteout hides, a redirect's value): the observer
formats and counts, and never asks the union back. What costs the core work to find only for an
event is found while `tracing` is true.

`OPERATION` is the request being served, ``(op, path, to)``, set by the caller of the union (the
FUSE server, per request, while someone traces) so that an event carries its cause; `operation`
sets it for a block. A context variable, not a thread attribute: it follows the request into any
task or thread started with its context.
"""
import contextlib
import contextvars

OPERATION = contextvars.ContextVar("unionfs_operation", default=(None, None, None))
# the requests that change the tree: the ones traced as they return (op events)
CHANGING = frozenset((
    "write", "create", "mkdir", "mknod", "symlink", "link", "unlink", "rmdir", "rename",
    "chmod", "chown", "truncate", "utimens", "setxattr", "removexattr", "fallocate"))


@contextlib.contextmanager
def operation(op, path=None, to=None):
    """Run a block as the request `op` on `path` (and `to`: a rename's or link's target)."""
    token = OPERATION.set((op, path, to))
    try:
        yield
    finally:
        OPERATION.reset(token)


class Observer:
    """The hooks the core calls; this default ignores them all."""

    tracing = False  # someone reads the events now (a property of an observer that has them)

    def layer_name(self, root):
        """How reports name a layer directory (an image layer by its DiffID, say)."""
        return root

    @staticmethod
    def clock():
        """A start time for `copied_up` (the default measures nothing)."""
        return 0

    def resolved(self, node):
        """A lookup that missed the resolution cache was answered: `node`, or None."""

    def copied_up(self, path, layer, hit, data, t0):
        """`path` was copied up from `layer` (its entry `hit`; `data`: with its content), begun
        at clock() `t0`."""

    def whiteout(self, path, upper, layer, hit):
        """A whiteout at `path` (`upper`: its real path, for people) now hides `hit`, the entry
        of the first lower `layer` that shows the name."""

    def opaque(self, path, upper, hides):
        """The directory `path` (`upper`: its real path) was made opaque, as it was made or
        moved into a merged directory (`hides`: over lower content; found while `tracing`
        only where it takes a lookup)."""

    def redirected(self, path, upper, value):
        """The directory now at `path` (`upper`: its real path) got or kept the redirect
        `value` as it moved."""
