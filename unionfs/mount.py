"""Mounting and unmounting: builds the Union from a spec, runs FUSE, reports readiness.

`mount()` returns once the kernel has initialised the FUSE connection: the daemon is a child in a
new session that signals readiness through a pipe; if it dies first, its last error line becomes
ours. SIGTERM/SIGINT/SIGHUP unmount (fuse.server.Server.stop) and the daemon exits.

A mountpoint whose daemon died (SIGKILL, OOM killer, crash) keeps a dead FUSE mount that answers
every access with ENOTCONN ("Transport endpoint is not connected") until it is detached. `mount()`
on such a mountpoint (found by `spec.validate`) detaches it first and says so in one line;
`umount()` clears it too. A live mount is never touched.
"""
import os
import resource
import select
import subprocess
import sys
import time

from .fuse.proto import MountError, fusermount as _fusermount
from .mounts import dead_fuse_mount, is_unionfs_mount, mounted_paths
from .spec import SpecError

READY_TIMEOUT = 60.0


def fuse_options(spec):
    kw = {"fsname": "unionfs", "subtype": "unionfs", "default_permissions": True}
    for opt in ("nodev", "nosuid"):
        if opt[2:] not in spec.fuse:
            kw[opt] = True
    kw.update(spec.fuse)
    if spec.upper is None:
        kw["ro"] = True
    if kw.get("allow_root"):
        kw["allow_other"] = True  # the server refuses all but root and the owner
    return kw


def run_daemon(spec, ready_fd=None, layer_name=None):
    """Serve the mount in this process until it is unmounted; `layer_name` names layer
    directories in its events and reports (observe.Recorder)."""
    from .core.ids import IdMapper
    from .core.union import Union
    from .fuse.server import Server
    from .observe import Recorder

    os.umask(0)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ids = IdMapper(spec.uidmap, spec.gidmap, spec.squash_uid, spec.squash_gid,
                   spec.xattr_permissions)
    union = Union(spec.lowers, spec.upper, spec.work, redirect_dir=spec.redirect_dir,
                  sync=spec.sync, userxattr=spec.userxattr, ids=ids)
    union.observer = Recorder(union, layer_name)

    def ready():
        if ready_fd is not None:
            devnull = os.open(os.devnull, os.O_RDWR)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            os.close(devnull)
            os.write(ready_fd, b"ok")
            os.close(ready_fd)

    opts = fuse_options(spec)
    timeouts = {name: float(opts[name]) for name in
                ("entry_timeout", "attr_timeout", "negative_timeout") if name in opts}
    try:
        server = Server(union, spec.mountpoint, opts, on_ready=ready,
                        threads=int(opts.get("max_idle_threads", 0)) or None,
                        allow_root=bool(opts.get("allow_root")), debug=spec.debug,
                        passthrough=os.geteuid() == 0 and not opts.get("nopassthrough"),
                        uring=bool(opts.get("uring")), **timeouts)
    except MountError as e:
        raise SpecError(str(e))
    server.serve()


def _detach(fm, mnt, lazy):
    cmd = [fm, "-u", "-z", mnt] if lazy else [fm, "-u", mnt]
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    return proc.returncode == 0, (proc.stderr.strip().splitlines() or ["fusermount failed"])[-1]


def recover_dead_mount(mountpoint):
    """Detach the dead unionfs mount(s) on mountpoint, then check it is a free directory again.

    Only dead mounts are detached (a lazy unmount: a process still inside the dead mount cannot
    block it); what is below them must be a plain directory, not another (live) mount."""
    mnt = os.path.realpath(mountpoint)
    fm = _fusermount()
    if fm is None:
        raise SpecError("mountpoint %s holds a dead mount and fusermount3 is missing: "
                        "install fuse3" % mnt)
    detached = 0
    for _ in range(16):  # dead mounts stacked on one path
        dead = dead_fuse_mount(mnt)
        if dead is None:
            break
        if not is_unionfs_mount(*dead):
            raise SpecError("mountpoint %s holds a dead %s mount (its daemon is gone), not a "
                            "unionfs one: detach it with fusermount3 -u -z %s" % (mnt, dead[0], mnt))
        ok, msg = _detach(fm, mnt, lazy=True)
        if not ok:
            raise SpecError("cannot detach the dead mount at %s: %s" % (mnt, msg))
        detached += 1
    else:
        raise SpecError("cannot detach the dead mounts at %s" % mnt)
    if detached:
        print("unionfs: recovered dead mount at %s" % mnt, file=sys.stderr, flush=True)
    if mnt in mounted_paths():
        raise SpecError("mountpoint %s is already mounted" % mnt)
    try:
        if not os.path.isdir(mnt):
            raise SpecError("mountpoint %s: not a directory" % mnt)
    except OSError as e:
        raise SpecError("mountpoint %s: %s" % (mnt, e.strerror))
    return mnt


def mount(spec, layer_name=None):
    """Mount in the background and return once the mount answers; raises SpecError on failure.
    `layer_name`: as for run_daemon, for a mount served in this process (foreground, debug); a
    daemon of its own is started through cli, which names layers as the image store does."""
    if spec.dead_mount:
        spec.mountpoint = recover_dead_mount(spec.mountpoint)
        spec.dead_mount = False
    if spec.foreground or spec.debug:
        run_daemon(spec, layer_name=layer_name)
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
    dead = dead_fuse_mount(mnt) is not None
    ok, msg = _detach(fm, mnt, lazy=False)
    if not ok and dead:
        # a dead mount (daemon gone) that something still uses: nothing can be lost by
        # detaching it lazily, and it must not stay in the way
        ok, msg = _detach(fm, mnt, lazy=True)
    if not ok:
        raise SpecError("cannot unmount %s: %s" % (mnt, msg))
