"""Import limits, and the check of a tar stream's headers before tarfile reads it.

``tarfile`` reads a PAX header, a GNU long name or a GNU 1.0 sparse map into memory whole, and
recurses once per chained header, so a hostile tar can cost gigabytes of memory (or a
RecursionError) before anything can refuse it. ``TarGuard`` watches the bytes of a tar as they
are written (a layer being decompressed into the store's ``tmp/``) or reads a tar file's
headers, seeking over the data, and refuses with a one-line LimitError, before tarfile sees them:

* more than ``max_size`` bytes in all (a decompression bomb stops at the cap);
* more than ``max_entries`` entries;
* a PAX header (``x``, ``g``, ``X``), a GNU long name/link (``L``, ``K``) or a sparse map
  (old GNU ``S`` extension blocks, the PAX 1.0 map at the start of the data) of more than
  ``max_header`` bytes; more than one PAX header, or more than four such headers, for one entry;
* PAX records tarfile cannot parse (numbers it would choke on), ``size`` or ``GNU.sparse.*``
  in a global header, and a PAX ``size`` together with a sparse size.

The walk mirrors tarfile's (``_proc_builtin``/``_proc_pax``/``_proc_sparse`` in CPython 3.8 to
3.13): data follows regular files and unknown types only; a PAX ``size`` replaces the header's;
the first all-zero block or invalid header ends the archive, as it ends tarfile's reading.
"""
import re
import tarfile

from .errors import LimitError

BLOCK = 512
KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
_EXT = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE,
        tarfile.SOLARIS_XHDTYPE)
_PAX = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)
_MAX_PREFIXES = 4
_RECORD = re.compile(br"(\d+) ([^=]+)=")
_NUMBER = re.compile(r"^[0-9]{1,19}$")
_MAP01 = re.compile(r"^[0-9]{1,19}(,[0-9]{1,19})*$")
_NUMERIC_KEYS = ("size", "GNU.sparse.size", "GNU.sparse.realsize", "GNU.sparse.offset",
                 "GNU.sparse.numbytes", "GNU.sparse.numblocks", "GNU.sparse.major",
                 "GNU.sparse.minor")
_NEED, _SKIP = "need", "skip"


class Limits:
    """Caps of one import (README "Container images"; ``unionfs image import --max-*``). A
    plain class, not a dataclass: every image command builds one for its help, and importing
    dataclasses cost them 6 ms."""

    def __init__(self, max_layer_size=32 * GiB, max_entries=1_000_000, max_header_size=1 * MiB,
                 max_archive_size=64 * GiB):
        self.max_layer_size = max_layer_size        # bytes of one uncompressed layer tar
        self.max_entries = max_entries              # entries of one layer tar (or the archive's)
        self.max_header_size = max_header_size      # one PAX header, GNU long name/link, sparse map
        self.max_archive_size = max_archive_size    # the uncompressed copy of a compressed archive


def _block(n):
    return (n + BLOCK - 1) // BLOCK * BLOCK


def _records(body, fail):
    """{key: value} of a PAX header, read as tarfile reads it; numbers it cannot parse fail."""
    out = {}
    pos = 0
    while True:
        m = _RECORD.match(body, pos)
        if not m:
            return out
        if len(m.group(1)) > 19 or int(m.group(1)) == 0:
            fail("a PAX record with a bad length")
        length = int(m.group(1))
        key = m.group(2).decode("utf-8", "surrogateescape")
        value = body[m.end(2) + 1:m.start(1) + length - 1].decode("utf-8", "surrogateescape")
        if key in _NUMERIC_KEYS and not _NUMBER.match(value):
            fail("PAX record %s=%.40r is not a number" % (key, value))
        if key == "GNU.sparse.map" and not _MAP01.match(value):
            fail("PAX record GNU.sparse.map is not a list of numbers")
        out[key] = value
        pos += length


class TarGuard:
    """Checks a tar stream against Limits; raises LimitError("<what>: ...").

    As a writer, ``TarGuard(f, ...)`` checks every chunk, then writes it to f; ``check_file(f)``
    reads only the headers of a tar file."""

    def __init__(self, f, what, limits, max_size=None, cap="--max-layer-size"):
        self.f = f
        self.what = what
        self.limits = limits
        self.max_size = max_size
        self.cap = cap
        self.total = 0
        self.entries = 0
        self.done = False
        self._buf = bytearray()
        self._gen = self._scan()
        self._want = next(self._gen)

    def fail(self, msg):
        raise LimitError("%s: %s" % (self.what, msg))

    def write(self, data):
        self.total += len(data)
        if self.max_size is not None and self.total > self.max_size:
            self.fail("more than %d bytes uncompressed (the cap: %s)" % (self.max_size, self.cap))
        self._feed(memoryview(data))
        return self.f.write(data)

    def _feed(self, mv):
        while mv and not self.done:
            kind, n = self._want
            if kind == _SKIP:
                k = min(n, len(mv))
                mv = mv[k:]
                if k < n:
                    self._want = (_SKIP, n - k)
                    return
                self._send(None)
            else:
                k = min(n - len(self._buf), len(mv))
                self._buf += mv[:k]
                mv = mv[k:]
                if len(self._buf) == n:
                    data = bytes(self._buf)
                    self._buf.clear()
                    self._send(data)

    def _send(self, value):
        try:
            self._want = self._gen.send(value)
        except StopIteration:
            self.done = True

    def check_file(self, f):
        """Check the headers of the tar file f (seekable), from its current offset."""
        pos = f.tell()
        end = f.seek(0, 2)
        f.seek(pos)
        while not self.done:
            kind, n = self._want
            if kind == _SKIP:
                if f.tell() + n > end:
                    return      # truncated: tarfile says so
                f.seek(n, 1)
                self._send(None)
            else:
                data = f.read(n)
                if len(data) < n:
                    return      # truncated: tarfile says so
                self._send(data)

    def _scan(self):
        lim = self.limits
        glob = {}
        while True:
            local, prefixes, pax = {}, 0, False
            while True:
                hdr = yield (_NEED, BLOCK)
                if hdr.count(0) == BLOCK:
                    return          # the end-of-archive block: tarfile stops here
                try:
                    if tarfile.nti(hdr[148:156]) not in tarfile.calc_chksums(hdr):
                        return      # tarfile ends the archive (or fails) at an invalid header
                    size = tarfile.nti(hdr[124:136])
                except (tarfile.HeaderError, ValueError):
                    return
                if size < 0:            # base-256 allows it; tarfile would seek backwards
                    self.fail("tar entry %d has a negative size" % (self.entries + 1))
                kind = hdr[156:157]
                if kind not in _EXT:
                    break
                prefixes += 1
                n = self.entries + 1
                if prefixes > _MAX_PREFIXES:
                    self.fail("tar entry %d has more than %d extended headers" % (n, _MAX_PREFIXES))
                if size > lim.max_header_size:
                    self.fail("tar entry %d has a %s of %d bytes (more than --max-header-size %d)"
                              % (n, "PAX header" if kind in _PAX else "GNU long name", size,
                                 lim.max_header_size))
                body = yield (_NEED, _block(size))
                if kind not in _PAX:
                    continue
                recs = _records(body[:size], lambda m: self.fail("tar entry %d: %s" % (n, m)))
                if kind == tarfile.XGLTYPE:
                    if any(k == "size" or k.startswith("GNU.sparse.") for k in recs):
                        self.fail("a global PAX header sets a size or a sparse map")
                    glob.update(recs)
                    continue
                if pax:
                    self.fail("tar entry %d has two PAX headers" % n)
                pax, local = True, recs
            self.entries += 1
            if self.entries > lim.max_entries:
                self.fail("more than %d entries (the cap: --max-entries)" % lim.max_entries)
            eff = dict(glob, **local) if pax else {}
            if "size" in local:
                if "GNU.sparse.size" in eff or "GNU.sparse.realsize" in eff:
                    self.fail("tar entry %d: a PAX size and a sparse size" % self.entries)
                size = int(local["size"])
            sparse10 = eff.get("GNU.sparse.major") == "1" and eff.get("GNU.sparse.minor") == "0" \
                and "GNU.sparse.map" not in eff and "GNU.sparse.size" not in eff
            if sparse10 and "size" in local:
                self.fail("tar entry %d: a PAX size on a sparse 1.0 file" % self.entries)
            if kind == tarfile.GNUTYPE_SPARSE:
                more, nblocks = hdr[482], 0
                while more:
                    nblocks += 1
                    if nblocks * BLOCK > lim.max_header_size:
                        self.fail("tar entry %d: a sparse map of more than --max-header-size %d "
                                  "bytes" % (self.entries, lim.max_header_size))
                    more = (yield (_NEED, BLOCK))[504]
            elif kind == tarfile.AREGTYPE and hdr[:100].split(b"\0", 1)[0].endswith(b"/"):
                continue            # an old-style directory: no data
            elif kind in tarfile.SUPPORTED_TYPES and kind not in tarfile.REGULAR_TYPES:
                continue            # links, directories, devices: no data, whatever size says
            if sparse10:
                used = yield from self._map10(size)
                size -= used
            if size > 0:
                yield (_SKIP, _block(size))

    def _map10(self, size):
        """Read a PAX 1.0 sparse map (decimal lines: a count, then offset/size pairs) at the
        start of an entry's data; returns the bytes it takes (whole blocks)."""
        text = b""
        used = 0
        numbers = []
        want = None
        while want is None or len(numbers) < want:
            while b"\n" not in text:
                used += BLOCK
                if used > min(size, self.limits.max_header_size):
                    self.fail("tar entry %d: a sparse map larger than its data or than "
                              "--max-header-size %d" % (self.entries, self.limits.max_header_size))
                text += yield (_NEED, BLOCK)
            line, text = text.split(b"\n", 1)
            if not re.match(br"^[0-9]{1,19}$", line):
                self.fail("tar entry %d: a sparse map with a bad number" % self.entries)
            if want is None:
                want = 2 * int(line)
            else:
                numbers.append(int(line))
        return used
