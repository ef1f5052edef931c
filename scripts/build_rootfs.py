#!/usr/bin/env python3
"""Build a small, deterministic root filesystem from busybox-static.

    python scripts/build_rootfs.py OUTDIR [--busybox /bin/busybox]

or, from Python::

    from scripts.build_rootfs import build_rootfs
    build_rootfs("/tmp/rootfs")

The tree holds bin/busybox with applet symlinks, an etc/ with passwd/group/hosts and a config
file, and a few directories shaped like a package-managed system (usr/lib/oldpkg,
usr/share/doc, opt/legacy, var/lib/pkgdb) that the chroot workload renames, deletes and
rewrites. Every mtime is fixed, so two builds are identical.
"""
import argparse
import os
import shutil
import sys

APPLETS = ["sh", "ls", "cat", "mv", "ln", "tar", "mkdir", "rm", "rmdir", "sync", "cp",
           "sha256sum", "find", "echo", "test", "[", "chmod", "touch", "sort", "wc", "grep",
           "stat", "true", "false", "head", "readlink", "sleep"]

FIXED_MTIME_NS = 1_600_000_000_000_000_000

FILES = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\n"
                  "daemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
                  "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    "etc/group": "root:x:0:\ndaemon:x:1:\nnogroup:x:65534:\n",
    "etc/hosts": "127.0.0.1 localhost\n::1 localhost ip6-localhost\n",
    "etc/hostname": "rootfs\n",
    "etc/app.conf": "# shipped config, version 1\nlisten = 127.0.0.1\n",
    "etc/os-release": 'NAME="unionfs test rootfs"\nID=unionfs-test\n',
    "usr/lib/oldpkg/lib1.so": "\x7fELF fake shared object 1\n" * 64,
    "usr/lib/oldpkg/data/x": "oldpkg data\n",
    "usr/lib/oldpkg/data/deeper/y": "deeper data\n",
    "usr/share/doc/base/README": "base system documentation\n" * 20,
    "usr/share/doc/base/copyright": "public domain\n",
    "opt/legacy/a": "legacy a\n",
    "opt/legacy/b/c/d": "legacy d\n",
    "opt/legacy/b/e": "legacy e\n",
    "opt/keep/file": "kept\n",
    "var/lib/pkgdb/status": "base 1.0 installed\noldpkg 0.9 installed\n",
    "root/.profile": "export PATH=/bin:/usr/bin\n",
}

DIRS = {"dev": 0o755, "proc": 0o555, "tmp": 0o1777, "usr/bin": 0o755, "var/tmp": 0o1777,
        "root": 0o700, "home": 0o755}

SYMLINKS = {"usr/lib/oldpkg/current": "lib1.so", "etc/mtab": "/proc/self/mounts",
            "opt/legacy/link": "../keep/file"}


def _find_busybox():
    for cand in ("/bin/busybox", "/usr/bin/busybox", shutil.which("busybox") or ""):
        if cand and os.path.isfile(cand):
            return cand
    raise FileNotFoundError("busybox not found (install busybox-static)")


def build_rootfs(out, busybox=None):
    """Create the root filesystem under ``out`` (created if needed; must be empty)."""
    out = os.path.abspath(os.fspath(out))
    os.makedirs(out, exist_ok=True)
    if os.listdir(out):
        raise FileExistsError("%s is not empty" % out)
    busybox = busybox or _find_busybox()

    os.makedirs(os.path.join(out, "bin"))
    dst = os.path.join(out, "bin", "busybox")
    shutil.copyfile(busybox, dst)
    os.chmod(dst, 0o755)
    for applet in APPLETS:
        os.symlink("busybox", os.path.join(out, "bin", applet))

    for rel, mode in DIRS.items():
        p = os.path.join(out, rel)
        os.makedirs(p, exist_ok=True)
        os.chmod(p, mode)
    for rel, text in FILES.items():
        p = os.path.join(out, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write(text)
        os.chmod(p, 0o644)
    os.chmod(os.path.join(out, "usr/lib/oldpkg/lib1.so"), 0o755)
    for rel, target in SYMLINKS.items():
        os.symlink(target, os.path.join(out, rel))

    # fixed times, deepest first so that setting a child's time doesn't disturb its parent
    paths = []
    for dirpath, dirnames, filenames in os.walk(out):
        for n in dirnames + filenames:
            paths.append(os.path.join(dirpath, n))
    paths.sort(key=lambda p: -p.count(os.sep))
    for p in paths + [out]:
        os.utime(p, ns=(FIXED_MTIME_NS, FIXED_MTIME_NS), follow_symlinks=False)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("outdir", help="directory to create the root filesystem in (empty)")
    ap.add_argument("--busybox", help="busybox-static binary (default: /bin/busybox)")
    args = ap.parse_args(argv)
    try:
        path = build_rootfs(args.outdir, args.busybox)
    except OSError as e:
        print("build_rootfs: %s" % e, file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
