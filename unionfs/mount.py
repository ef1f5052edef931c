"""Mounting and unmounting: builds the Union from a spec, runs FUSE, reports readiness.

`mount()` returns once the kernel has initialised the FUSE connection: the daemon is a child in a
new session that signals readiness through a pipe; if it dies first, its last error line becomes
ours. SIGTERM/SIGINT/SIGHUP make libfuse leave its loop and unmount.
"""
import os
import resource
import select
import subprocess
import sys
import time

from .spec import SpecError, mounted_paths

READY_TIMEOUT = 60.0


def _fusermount():
    for name in ("fusermount3", "fusermount"):
        for d in os.environ.get("PATH", "/usr/bin:/bin").split(":") + ["/usr/bin", "/bin"]:
            p = os.path.join(d, name)
            if os.access(p, os.X_OK):
                return p
    return None


def fuse_kwargs(spec):
    kw = {"fsname": "unionfs", "subtype": "unionfs", "default_permissions": True,
          "use_ino": True}
    for opt in ("nodev", "nosuid"):
        if opt[2:] not in spec.fuse:
            kw[opt] = True
    kw.update(spec.fuse)
    if spec.upper is None:
        kw["ro"] = True
    return kw


def run_daemon(spec, ready_fd=None):
    """Serve the mount in this process until it is unmounted."""
    from .fuseops import FuseOps, _FUSE
    from .union import Union

    os.umask(0)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    union = Union(spec.lowers, spec.upper, spec.work, redirect_dir=spec.redirect_dir,
                  sync=spec.sync)

    def ready():
        if ready_fd is not None:
            devnull = os.open(os.devnull, os.O_RDWR)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            os.close(devnull)
            os.write(ready_fd, b"ok")
            os.close(ready_fd)

    _FUSE(FuseOps(union, ready), spec.mountpoint, foreground=True, debug=spec.debug,
          nothreads=False, **fuse_kwargs(spec))


def mount(spec):
    """Mount in the background and return once the mount answers; raises SpecError on failure."""
    if spec.foreground or spec.debug:
        run_daemon(spec)
        return None
    r, w = os.pipe()
    cmd = [sys.executable, "-m", "unionfs", "_daemon", "--ready-fd", str(w)] + spec.to_argv()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, pass_fds=(w,), start_new_session=True,
                            env=dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p)))
    os.close(w)
    deadline = time.monotonic() + READY_TIMEOUT
    try:
        msg = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([r], [], [], left)[0]:
                break
            chunk = os.read(r, 16)
            if not chunk:
                break
            msg += chunk
        if msg == b"ok":
            proc.stderr.close()
            return proc.pid
    finally:
        os.close(r)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()  # our own child, which never became ready
        proc.wait()
    err = proc.stderr.read().decode(errors="replace")
    lines = [l for l in err.splitlines() if l.strip()]
    raise SpecError(lines[-1].removeprefix("unionfs: ") if lines else
                    "the daemon exited (status %s) before the mount was ready" % proc.returncode)


def umount(mountpoint):
    mnt = os.path.realpath(mountpoint)
    if mnt not in mounted_paths():
        raise SpecError("%s is not mounted" % mnt)
    fm = _fusermount()
    if fm is None:
        raise SpecError("fusermount3 not found: install fuse3")
    proc = subprocess.run([fm, "-u", mnt], capture_output=True, text=True)
    if proc.returncode != 0:
        msg = (proc.stderr.strip().splitlines() or ["fusermount failed"])[-1]
        raise SpecError("cannot unmount %s: %s" % (mnt, msg))
