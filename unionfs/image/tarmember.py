"""What one member of a layer tar says, read off its tarfile.TarInfo, and its data copied out.

Names are normalised and checked here (no absolute paths, no ``..``, no NUL); PAX records give
nanosecond mtimes and ``SCHILY.xattr.*`` xattrs. copy_data puts a member's bytes into the file
made for it: in the kernel with copy_file_range(2) from the tar file (no pass through Python's
buffers, half the CPU of read and pwrite on a layer of large files: docs/images.md, pull speed),
or by pread/pwrite where the kernel refuses (another filesystem on old kernels, a tar on a
filesystem without it). extract.py decides what to make; this module only reads members.
"""
import errno
import os

from .errors import ImageError

XATTR_PAX = "SCHILY.xattr."
CHUNK = 1 << 20
_NO_COPY_RANGE = (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF,
                  errno.ETXTBSY, errno.EPERM)


def normalize(name, what="entry"):
    """Normalised relative name of a tar entry ('' for the root); refuses absolute paths and '..'."""
    if "\0" in name:
        raise ImageError("%s %r: NUL in name" % (what, name))
    if name.startswith("/"):
        raise ImageError("%s %s: absolute path" % (what, name))
    parts = []
    for p in name.split("/"):
        if p in ("", "."):
            continue
        if p == "..":
            raise ImageError("%s %s: '..' in path" % (what, name))
        parts.append(p)
    return "/".join(parts)


def pax_ns(tarinfo, key):
    """A PAX time record as integer nanoseconds, or None."""
    v = tarinfo.pax_headers.get(key)
    if not v:
        return None
    try:
        neg = v.startswith("-")
        sec, _, frac = v.lstrip("-").partition(".")
        ns = int(sec or "0") * 1_000_000_000 + int((frac + "000000000")[:9] or "0")
        return -ns if neg else ns
    except ValueError:
        return None


def mtime_ns(tarinfo):
    ns = pax_ns(tarinfo, "mtime")
    if ns is not None:
        return ns
    return int(tarinfo.mtime) * 1_000_000_000


def xattrs_of(tarinfo):
    """{name: bytes} from SCHILY.xattr.* PAX records (binary values round-trip)."""
    out = {}
    for k, v in tarinfo.pax_headers.items():
        if k.startswith(XATTR_PAX):
            name = k[len(XATTR_PAX):]
            if name:
                out[name] = v.encode("utf-8", "surrogateescape") if isinstance(v, str) else v
    return out


class DataCopier:
    """Copies member data out of one tar (tarfile's fileobj); in the kernel until it refuses
    once, then with pread/pwrite for the rest of the tar (seek and read for a tar in memory)."""

    def __init__(self, fileobj):
        self.f = fileobj
        try:
            self.tarfd = fileobj.fileno()
        except (AttributeError, OSError, ValueError):   # io.UnsupportedOperation: in memory
            self.tarfd = None
        self.in_kernel = self.tarfd is not None

    def copy(self, start, fd, segments):
        """Write the member data stored at byte `start` of the tar, one segment after another,
        to the (offset, length) segments of fd. Returns the bytes written: fewer than the
        segments' sum only when the tar ends first (a truncated member)."""
        done = 0
        for offset, n in segments:
            while n > 0:
                k = self._step(start + done, fd, offset, n)
                if k == 0:
                    return done
                done += k
                offset += k
                n -= k
        return done

    def _step(self, src, fd, dst, n):
        if self.in_kernel:
            try:
                return os.copy_file_range(self.tarfd, fd, n, src, dst)
            except OSError as e:
                if e.errno not in _NO_COPY_RANGE:
                    raise
                self.in_kernel = False
        if self.tarfd is not None:
            chunk = os.pread(self.tarfd, min(CHUNK, n), src)
        else:
            self.f.seek(src)    # tarfile seeks back to the next header itself
            chunk = self.f.read(min(CHUNK, n))
        if chunk:
            pwrite_all(fd, chunk, dst)
        return len(chunk)


def pwrite_all(fd, data, offset):
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n
