"""The one error type users are told about: a failure that is a message, not a bug.

Every module raises a subclass of UnionfsError for a mistake or condition the user can act on
(a bad path, a damaged archive, a mount that is gone); ``cli.main`` prints it once, as one line
(``unionfs: ...``, messages.py), and exits 1. Anything else reaching cli.main is an OSError (also
printed as one line) or a bug (a traceback).
"""


class UnionfsError(Exception):
    """A one-line, user-facing failure."""


class ObserveError(UnionfsError):
    """A one-line failure reading a live mount from outside (which, trace, stats, status)."""
