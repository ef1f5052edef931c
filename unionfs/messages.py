"""The one way a command tells the user about an error: one line on stderr, `unionfs: ...`.

A path in a message can hold any byte but '/' and NUL, newlines included: control characters are
shown escaped, so every message stays one line whatever the path."""
import sys


def one_line(text):
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def error(text):
    print("unionfs: " + one_line(text), file=sys.stderr)
