"""What ``unionfs commit`` would write, without writing anything: the layer tar is produced by
the commit code itself (``image.commit.write_layer``) into a pipe and read back as it streams,
so the entries, DiffID and sizes are exactly those a commit would store."""
import os
import tarfile
import threading

from ..core import whiteout as wo

_TYPES = {tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink", tarfile.LNKTYPE: "hardlink",
          tarfile.CHRTYPE: "char", tarfile.BLKTYPE: "block", tarfile.FIFOTYPE: "fifo"}


def entry_type(ti):
    target = wo.oci_whiteout_target(ti.name.rpartition("/")[2])
    if target == "":
        return "opaque"
    if target is not None:
        return "whiteout"
    return _TYPES.get(ti.type, "file")


def plan(changes, store=None):
    """{"diff_id", "tar_bytes", "content_bytes", "layer_exists", "entries": [{"name", "type",
    "size", "mode", "link"}]} of the layer that committing changes (image.changes.Changes)
    would add."""
    from ..image.commit import write_layer
    rfd, wfd = os.pipe()
    result = {}

    def produce():
        try:
            with open(wfd, "wb") as w:
                result["layer"] = write_layer(changes.layer_entries(), w)
        except BaseException as e:   # reported by the reader
            result["error"] = e

    t = threading.Thread(target=produce, daemon=True)
    t.start()
    entries = []
    with open(rfd, "rb") as r:
        with tarfile.open(fileobj=r, mode="r|", encoding="utf-8", errors="surrogateescape") as tar:
            for ti in tar:
                entries.append({"name": ti.name, "type": entry_type(ti), "size": ti.size,
                                "mode": ti.mode, "link": ti.linkname or None})
        while r.read(1 << 16):   # the end-of-archive blocks
            pass
    t.join()
    if "error" in result:
        raise result["error"]
    diff_id, tar_bytes, _skipped = result["layer"]
    return {"diff_id": diff_id, "tar_bytes": tar_bytes,
            "content_bytes": sum(e["size"] for e in entries),
            "layer_exists": bool(store and store.has_layer(diff_id)), "entries": entries}
