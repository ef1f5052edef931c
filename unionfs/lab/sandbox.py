"""The lab directory and its mount: ``lower/ upper/ work/ merged/`` in a fresh temp dir.

``Sandbox`` builds the lower layer, mounts ``merged/`` through the public mount API (as
``unionfs mount`` does), and reads back the real state of each directory: ``entry()`` says what
is on disk at a path (whiteouts, opaque and redirect markers recognised by ``whiteout.py``),
``render()`` lists a whole directory the way ``ls -l`` and ``getfattr`` would show it.

The mount and the removal run with SIGINT, SIGTERM and SIGHUP held off (a signal that arrives
meanwhile is raised as KeyboardInterrupt right after), so Ctrl-C at any moment leaves neither a
mount nor the directory behind. ``close()`` unmounts (lazily if the mount is busy) and removes
the directory, never through a live mount.
"""
import contextlib
import hashlib
import os
import shutil
import signal
import stat
import subprocess
import tempfile

from .. import mount as mountmod
from ..core import whiteout as wo
from ..messages import human
from ..mounts import mounted_paths
from ..spec import MountSpec, SpecError, validate

DIRS = ("lower", "upper", "work", "merged")
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_KINDS = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
          stat.S_IFCHR: "char", stat.S_IFBLK: "block", stat.S_IFIFO: "fifo",
          stat.S_IFSOCK: "socket"}


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


@contextlib.contextmanager
def _handling(signals, handler):
    old = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def interruptible():
    """SIGTERM and SIGHUP (a closed terminal) end the lab like Ctrl-C: cleanly."""
    return _handling(SIGNALS[1:], _raise_interrupt)


@contextlib.contextmanager
def held_signals():
    """Run the body without interruption; a signal that came meanwhile is raised afterwards."""
    got = []
    with _handling(SIGNALS, lambda signum, frame: got.append(signum)):
        yield
    if got:
        raise KeyboardInterrupt


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _overlay_xattrs(path):
    """The overlay markers on a real path: {name: value}, as `getfattr -d -m -` shows them."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out = {}
    for name in sorted(n for n in names if wo.is_private_xattr(n)):
        try:
            out[name] = os.fsdecode(os.getxattr(path, name, follow_symlinks=False))
        except OSError:
            continue
    return out


def entry(path):
    """What is really at path (no symlink followed): type, mode, sizes and overlay markers."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return {"exists": False}
    kind = _KINDS.get(stat.S_IFMT(st.st_mode), "other")
    rec = {"exists": True, "type": kind, "mode": "%04o" % stat.S_IMODE(st.st_mode),
           "ls": stat.filemode(st.st_mode),
           "size": st.st_size, "allocated": st.st_blocks * 512,
           "whiteout": wo.is_whiteout_stat(st),
           "oci_whiteout": wo.oci_whiteout_target(os.path.basename(path)) is not None}
    if kind in ("char", "block"):
        rec["rdev"] = [os.major(st.st_rdev), os.minor(st.st_rdev)]
    if kind == "dir":
        rec["opaque"], rec["redirect"], _ = wo.dir_markers(path)
    if kind == "file":
        rec["sha256"] = _sha256(path)
    rec["xattrs"] = _overlay_xattrs(path)
    return rec


def walk(root):
    """[(relative path, entry)] of everything under root, sorted, parents first."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = os.path.join(dirpath, name)
            out.append((os.path.relpath(p, root), entry(p)))
    return sorted(out, key=lambda kv: kv[0].split("/"))


def usage(root):
    """{entries, bytes (apparent size of files), allocated (what du counts, directories aside)}."""
    tree = walk(root)
    return {"entries": len(tree),
            "bytes": sum(e["size"] for _, e in tree if e["type"] == "file"),
            "allocated": sum(e["allocated"] for _, e in tree if e["type"] != "dir")}


def _note(rec):
    notes = []
    if rec["whiteout"]:
        notes.append("whiteout (char 0/0)")
    if rec["oci_whiteout"]:
        notes.append("OCI whiteout marker")
    notes += ["%s=%s" % kv for kv in rec["xattrs"].items()]
    return "  ".join(notes)


def render(root, label):
    """Lines like `ls -lR` with overlay markers, plus a du-style total, for the directory root."""
    tree = walk(root)
    u = usage(root)
    lines = ["%s/  (%d entr%s; file data on disk: %s)" % (
        label, u["entries"], "y" if u["entries"] == 1 else "ies", human(u["allocated"], binary=True))]
    for rel, rec in tree:
        size = "%d, %d" % tuple(rec["rdev"]) if "rdev" in rec else (
            "" if rec["type"] == "dir" else str(rec["size"]))
        name = rel + ("/" if rec["type"] == "dir" else "")
        lines.append(("    %s %9s  %-24s %s" % (rec["ls"], size, name, _note(rec))).rstrip())
    if not tree:
        lines.append("    (empty)")
    return lines


class Sandbox:
    """A temp dir with lower/, upper/, work/ and merged/; merged/ mounted by mount()."""

    def __init__(self, tmpdir=None):
        self.base = tempfile.mkdtemp(prefix="unionfs-lab-", dir=tmpdir)
        for d in DIRS:
            os.mkdir(os.path.join(self.base, d))
        self.lower_digest = None

    def path(self, *parts):
        return os.path.join(self.base, *parts)

    def build_lower(self, files):
        """files: {relative path: (bytes, mode)}; the lower layer's fingerprint is kept."""
        for rel, (data, mode) in files.items():
            p = self.path("lower", rel)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "wb") as f:
                f.write(data)
            os.chmod(p, mode)
        self.lower_digest = self.fingerprint("lower")

    def fingerprint(self, d):
        """A digest of everything under d (names, types, modes, contents, markers)."""
        return hashlib.sha256(repr(walk(self.path(d))).encode()).hexdigest()

    def mount_command(self):
        return "unionfs mount --lower lower --upper upper --work work merged"

    def mount(self):
        spec = MountSpec(lowers=[self.path("lower")], mountpoint=self.path("merged"),
                         upper=self.path("upper"), work=self.path("work"))
        with held_signals():
            mountmod.mount(validate(spec))

    def is_mounted(self):
        return os.path.realpath(self.path("merged")) in mounted_paths()

    def _unmount(self):
        try:
            mountmod.umount(self.path("merged"))
        except SpecError:
            # busy (a shell still inside merged/, say): detach it, it is ours and goes away
            fm = shutil.which("fusermount3") or shutil.which("fusermount")
            if fm:
                subprocess.run([fm, "-u", "-z", self.path("merged")], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def close(self):
        """Unmount and remove the lab directory. Returns False if the mount would not go."""
        with held_signals():
            if self.is_mounted():
                self._unmount()
            if self.is_mounted():
                return False
            shutil.rmtree(self.base, ignore_errors=True)
            return True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if not self.close():
            raise SpecError("could not unmount %s; left %s in place" % (
                self.path("merged"), self.base))
