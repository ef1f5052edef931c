"""Progress lines on stderr, only when stderr is a TTY (never in logs or pipes)."""
import sys
import time

from ..messages import human


def on_terminal(stream, enabled=None):
    """Whether to draw progress on stream: as told, else only where it is a terminal."""
    if enabled is not None:
        return enabled
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    def __init__(self, stream=None, enabled=None):
        self.stream = stream or sys.stderr
        self.enabled = on_terminal(self.stream, enabled)
        self.label = ""
        self.bytes = 0
        self.total = None
        self._last = 0.0

    def start(self, label, total=None):
        self.label, self.bytes, self.total = label, 0, total
        self._draw(force=True)

    def add(self, n):
        self.bytes += n
        self._draw()

    def _draw(self, force=False):
        if not self.enabled:
            return
        t = time.monotonic()
        if not force and t - self._last < 0.1:
            return
        self._last = t
        amount = human(self.bytes)
        if self.total:
            amount += " / " + human(self.total)
        self.stream.write("\r\033[K%s  %s" % (self.label, amount))
        self.stream.flush()

    def done(self, line=None):
        if not self.enabled:
            return
        self.stream.write("\r\033[K" + (line + "\n" if line else ""))
        self.stream.flush()
