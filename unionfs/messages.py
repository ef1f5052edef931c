"""The one way a command tells the user about an error: one line on stderr, `unionfs: ...`.

A path in a message can hold any byte but '/' and NUL, newlines included: control characters are
shown escaped, so every message stays one line whatever the path."""
import sys


def human(n, binary=False):
    """A byte count for people: decimal units as docker prints them (512 B, 4.1 kB, 1.0 MB), or
    with binary, as du -h and ls -h do (4.0 KiB, 1.0 MiB)."""
    step, units = (1024.0, ("B", "KiB", "MiB", "GiB", "TiB")) if binary else (
        1000.0, ("B", "kB", "MB", "GB", "TB"))
    n = float(n)
    for unit in units:
        if abs(n) < step or unit == units[-1]:
            return ("%d %s" % (n, unit)) if unit == "B" else ("%.1f %s" % (n, unit))
        n /= step
    return "%d B" % n


def one_line(text):
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def error(text):
    print("unionfs: " + one_line(text), file=sys.stderr)
