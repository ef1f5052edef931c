"""What the core tells whoever observes it, and which request caused it.

The core calls an `Observer`'s hooks at its change points with plain arguments and never knows who
listens (the kernel's tracepoints). This class is the interface and the default: every hook does
nothing, so a union nobody observes pays one method call per change. The recorder that counts
and keeps the event stream (unionfs/observe.py) implements it outside core.

`OPERATION` is the request being served, ``(op, path, to)``, set by the caller of the union (the
FUSE server, per request, while someone traces) so that an event carries its cause; `operation`
sets it for a block. A context variable, not a thread attribute: it follows the request into any
task or thread started with its context.
"""
import contextlib
import contextvars

OPERATION = contextvars.ContextVar("unionfs_operation", default=(None, None, None))


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

    def whiteout(self, path):
        """A whiteout now hides the lower entries of `path`."""

    def opaque(self, path, hides):
        """The new directory `path` was made opaque (`hides`: over a whiteout)."""

    def moved_opaque(self, to_parent, to_name):
        """A pure upper directory was made opaque as it moves to `to_name` in the node
        `to_parent`."""

    def redirected(self, node, to_parent, to_name):
        """The directory `node` got a redirect as it moves to `to_name` in `to_parent`."""
