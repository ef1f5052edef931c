"""Layer compression, detected by magic bytes (never by media type): gzip, zstd, bzip2, xz or none.

``decompress(src, dst)`` streams one blob into its uncompressed tar and reports a truncated or
corrupt stream as a one-line ImageError. zstd needs the ``zstandard`` package, imported only when
a zstd blob is met. gzip is inflated by ISA-L (the ``isal`` package) when it is installed, else by
zlib: same streams, same checks (CRC and length), about 3.5 times less CPU on image layers
(docs/images.md, pull speed); it is most of what a pull spends beyond downloading.

Memory stays bounded whatever the ratio: gzip, bzip2 and xz are asked for at most CHUNK bytes
of output at a time; zstd's decompressor takes no output limit, so it is fed ZSTD_IN bytes at a
time (a zstd block of 128 KiB can be coded in 4 bytes: at most 64 MiB out per step). dst sees
every chunk before the next is made, so a cap on dst (targuard.TarGuard) stops a bomb early.
"""
import bz2
import lzma
import zlib

from .errors import ImageError

try:
    from isal import isal_zlib as _inflate
except ImportError:     # isal is a dependency, but an install without it still pulls
    _inflate = zlib

CHUNK = 1 << 20
ZSTD_IN = 2048
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
BZIP2_MAGIC = b"BZh"
XZ_MAGIC = b"\xfd7zXZ\x00"


def detect(head):
    """'gzip', 'zstd', 'bzip2', 'xz' or None (uncompressed) from the first bytes of a blob."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    if head.startswith(BZIP2_MAGIC):
        return "bzip2"
    if head.startswith(XZ_MAGIC):
        return "xz"
    return None


def _zstd():
    try:
        import zstandard
    except ImportError:
        raise ImageError("a layer is zstd-compressed: install the 'zstandard' package")
    return zstandard


def _new(kind):
    if kind == "gzip":
        return _inflate.decompressobj(16 + zlib.MAX_WBITS)
    if kind == "zstd":
        return _zstd().ZstdDecompressor().decompressobj()
    if kind == "bzip2":
        return bz2.BZ2Decompressor()
    if kind == "xz":
        return lzma.LZMADecompressor()
    raise AssertionError(kind)


def _errors():
    errs = [zlib.error, _inflate.error, OSError, EOFError, lzma.LZMAError, ValueError]
    try:
        import zstandard
        errs.append(zstandard.ZstdError)
    except ImportError:
        pass
    return tuple(errs)


def _outputs(dec, kind, data):
    """The output of dec for input data, in pieces of at most CHUNK bytes (zstd: unbounded,
    the caller feeds it little input)."""
    if kind == "gzip":
        while data:
            out = dec.decompress(data, CHUNK)
            data = dec.unconsumed_tail
            yield out
        while not dec.eof:     # output still held for input already consumed
            out = dec.decompress(b"", CHUNK)
            if not out:
                return
            yield out
    elif kind in ("bzip2", "xz"):
        yield dec.decompress(data, CHUNK)
        while not dec.eof and not dec.needs_input:
            yield dec.decompress(b"", CHUNK)
    else:
        yield dec.decompress(data)


def decompress(src, dst, what="layer"):
    """Copy the blob read from src into dst uncompressed. Concatenated streams (several gzip
    members or zstd frames) are read in turn; zero padding after the last one is ignored."""
    head = src.read(6)
    kind = detect(head)
    if kind is None:
        dst.write(head)
        while True:
            chunk = src.read(CHUNK)
            if not chunk:
                return None
            dst.write(chunk)
    errors = _errors()
    dec = _new(kind)
    pending = head
    step = ZSTD_IN if kind == "zstd" else CHUNK
    try:
        while True:
            data = pending or src.read(step)
            pending = b""
            if not data:
                break
            while data:
                for out in _outputs(dec, kind, data):
                    if out:
                        dst.write(out)
                if not dec.eof:
                    break
                rest = dec.unused_data
                if not rest.strip(b"\0"):
                    # end of the last stream: anything after it must be padding
                    tail = src.read(CHUNK)
                    while tail:
                        if tail.strip(b"\0"):
                            raise ImageError("%s: data after the end of the %s stream" % (what, kind))
                        tail = src.read(CHUNK)
                    return kind
                if len(rest) < 6:
                    rest += src.read(6 - len(rest))
                if detect(rest) != kind:
                    raise ImageError("%s: data after the end of the %s stream" % (what, kind))
                dec = _new(kind)
                data = rest
    except ImageError:
        raise
    except errors as e:
        raise ImageError("%s: corrupt %s stream (%s)" % (what, kind, str(e).splitlines()[0] if str(e) else type(e).__name__))
    if not dec.eof:
        raise ImageError("%s: truncated %s stream" % (what, kind))
    return kind
