"""sha256 digests: parsing ``sha256:<hex>`` strings and hashing while reading or writing."""
import hashlib
import re

from .errors import ImageError

_DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")


def parse(digest, what="digest"):
    """The hex part of a ``sha256:<64 hex>`` digest; anything else is an ImageError."""
    if not isinstance(digest, str):
        raise ImageError("%s is not a string: %r" % (what, digest))
    m = _DIGEST.match(digest)
    if not m:
        raise ImageError("%s %r is not a sha256 digest" % (what, digest[:80]))
    return m.group(1)


def of_bytes(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def short(digest, n=12):
    """The first n hex digits of a digest (for messages and listings)."""
    return digest.split(":", 1)[-1][:n]


class HashingReader:
    """Wraps a binary file object; hashes and counts every byte read through it."""

    def __init__(self, f, on_read=None):
        self.f = f
        self.h = hashlib.sha256()
        self.n = 0
        self.on_read = on_read

    def read(self, size=-1):
        data = self.f.read(size)
        if data:
            self.h.update(data)
            self.n += len(data)
            if self.on_read:
                self.on_read(len(data))
        return data

    def digest(self):
        return "sha256:" + self.h.hexdigest()


class HashingWriter:
    """Wraps a binary file object; hashes and counts every byte written through it."""

    def __init__(self, f):
        self.f = f
        self.h = hashlib.sha256()
        self.n = 0

    def write(self, data):
        self.h.update(data)
        self.n += len(data)
        return self.f.write(data)

    def tell(self):
        return self.n

    def digest(self):
        return "sha256:" + self.h.hexdigest()
