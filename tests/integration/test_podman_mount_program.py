"""unionfs as containers-storage's ``mount_program`` (issue 7), with real podman containers.

Private podman stores are built from the same busybox root filesystem: the reference, root
podman on the kernel's overlayfs, and stores whose overlay driver mounts through unionfs
(``[storage.options.overlay] mount_program``), used by root podman and by rootless podman. Each
runs the same ``podman build`` (a RUN step that installs files, deletes and renames directories
of a lower layer, replaces a directory, hard-links, chmods and chowns) and the same ``podman
run`` + ``podman commit``; the layers and exported trees of each unionfs store's results must
describe the same changes as the reference's. Skipped where podman, root or the kernel's
overlayfs are missing.

Rootless podman runs as a user the test makes (useradd, with /etc/subuid and /etc/subgid ranges)
and removes afterwards. Its mount program is a script that runs the system's Python 3 over the
checkout (the venv's interpreter may be unreachable for other users), and /dev/fuse is opened to
users while it runs (some machines make it 0600), its mode put back afterwards. unionfs then runs
as root of podman's user namespace: trusted.* is refused there, so it writes user.overlay.*
markers and 0/0 device whiteouts.

Each store lives in a tmp dir named by its own storage.conf (``CONTAINERS_STORAGE_CONF``):
``podman --root`` would make podman drop the driver options of storage.conf, mount_program
included. podman's engine tmp dir is private too, so nothing touches the host's podman state.
"""
import contextlib
import hashlib
import json
import os
import pwd
import shlex
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile

import psutil
import pytest

from unionfs.mounts import mount_table
from tests.integration.conftest import daemon_pid
from tests.integration.test_image_podman import CONF
from tests.integration.test_rootless import PYTHON, USER_ENV, fuse_open_to_users
from tests.mountutil import (ENV, load_script, requires_fuse, requires_overlay, unmount,
                             wait_for)

PODMAN = shutil.which("podman")
# the console script `make venv` installs: one executable path, as mount_program must be
MOUNT_PROGRAM = os.path.join(os.path.dirname(sys.executable), "unionfs")
pytestmark = [requires_fuse, requires_overlay, pytest.mark.fuse, pytest.mark.overlay,
              pytest.mark.skipif(PODMAN is None, reason="podman is not installed"),
              pytest.mark.skipif(not os.access(MOUNT_PROGRAM, os.X_OK),
                                 reason="no unionfs console script next to %s (make venv)"
                                 % sys.executable)]

CONTAINERFILE = """\
FROM localhost/base:1
RUN mkdir -p /usr/local/app/lib && echo 'echo app' > /usr/local/app/run \\
 && chmod 755 /usr/local/app/run && echo lib > /usr/local/app/lib/libapp.so \\
 && ln /usr/local/app/lib/libapp.so /usr/local/app/lib/libapp.so.1 \\
 && ln -s ../run /usr/local/app/lib/run-link \\
 && rm -rf /usr/lib/oldpkg && mv /usr/share/doc /usr/share/doc-renamed \\
 && rm -rf /opt/legacy && mkdir /opt/legacy && echo new > /opt/legacy/new \\
 && echo appended >> /var/lib/pkgdb/status && chmod 600 /etc/hosts && chown 1:1 /etc/hostname \\
 && rm /etc/app.conf && test -f /usr/share/doc-renamed/base/README
RUN mv /usr/share/doc-renamed /usr/share/doc-again && mv /opt/keep /opt/kept \\
 && echo more > /usr/share/doc-again/base/NEW && rm /usr/share/doc-again/base/copyright
CMD ["/bin/sh"]
"""
# what `podman run` changes before `podman commit`
RUN_CHANGES = ("echo changed > /etc/os-release && rm -rf /var/lib/pkgdb && mv /opt/legacy /opt/old"
               " && mkdir -p /srv/data && echo d > /srv/data/f && rm /opt/old/b/e"
               " && test ! -e /opt/legacy && cat /opt/old/b/c/d")


class Store:
    """One private podman store (graph root, run root, engine tmp dir) named by a storage.conf,
    used by root or, rootless, by an ordinary user (``runuser``)."""

    def __init__(self, base, name, mount_program=None, user=None):
        self.dir = os.path.join(base, name)
        # conmon's socket paths must stay short: the run root and tmp dir go under /tmp
        self.run = tempfile.mkdtemp(prefix="ufmp-", dir="/tmp")
        self.user = user
        os.makedirs(self.dir)
        root = os.path.join(self.dir, "root")
        conf = os.path.join(self.dir, "storage.conf")
        with open(conf, "w") as f:
            f.write('[storage]\ndriver = "overlay"\ngraphroot = "%s"\nrunroot = "%s"\n'
                    'rootless_storage_path = "%s"\n[storage.options.overlay]\n'
                    % (root, os.path.join(self.run, "run"), root))
            if mount_program:
                f.write('mount_program = "%s"\n' % mount_program)
        engine = os.path.join(self.dir, "containers.conf")
        with open(engine, "w") as f:
            f.write(CONF + 'tmp_dir = "%s"\n' % os.path.join(self.run, "tmp"))
        self.env = dict(ENV, CONTAINERS_CONF=engine, CONTAINERS_STORAGE_CONF=conf)
        self.prefix = []
        if user:
            pw = pwd.getpwnam(user)
            xdg = os.path.join(self.run, "xdg")
            os.mkdir(xdg, 0o700)
            for d in (self.dir, self.run, xdg):
                os.chown(d, pw.pw_uid, pw.pw_gid)
            self.env.update(HOME=pw.pw_dir, XDG_RUNTIME_DIR=xdg)
            self.prefix = ["runuser", "-u", user, "--"]

    def __call__(self, *args, check=True, timeout=90):
        r = subprocess.run(self.prefix + [PODMAN] + list(args), env=self.env,
                           capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL, cwd=self.dir)
        if check and r.returncode != 0:
            raise AssertionError("podman %s failed (%d): %s" % (
                " ".join(args), r.returncode, r.stderr.strip()))
        return r

    def _archive(self, image, kind):
        """Where an archive of image goes, and whether it is already there (the reference
        store serves both the root and the rootless tests)."""
        out = os.path.join(self.dir, "%s-%s.tar" % (image.replace("/", "_").replace(":", "_"),
                                                   kind))
        return out, os.path.exists(out)

    def save(self, image):
        out, done = self._archive(image, "save")
        if not done:
            self("save", "-q", "-o", out, image)
        return out

    def export(self, image):
        out, done = self._archive(image, "export")
        if not done:
            cid = self("create", image).stdout.strip()
            try:
                self("export", "-o", out, cid)
            finally:
                self("rm", "-f", cid, check=False)
        return out

    def close(self):
        """Remove containers and images, stop a rootless podman's pause process (it holds the
        user and mount namespaces), unmount what podman left mounted; never raises."""
        for args in (("rm", "-af", "-t", "0"), ("rmi", "-af")):
            try:
                self(*args, check=False)
            except subprocess.TimeoutExpired:
                pass
        if self.user:
            try:  # podman keeps its pause.pid in the engine tmp dir
                with open(os.path.join(self.run, "tmp", "pause.pid")) as f:
                    pause = psutil.Process(int(f.read()))
                if pause.username() == self.user:
                    pause.kill()
            except (OSError, ValueError, psutil.Error):
                pass
        for d in (self.dir, self.run):
            prefix = os.path.realpath(d) + os.sep
            for mp, fstype in [(m.mountpoint, m.fstype) for m in reversed(mount_table())]:
                if (mp + os.sep).startswith(prefix):
                    unmount(mp, fuse=fstype.startswith("fuse"))
            shutil.rmtree(d, ignore_errors=True)


SUBID_FILES = ("/etc/subuid", "/etc/subgid")


def _subids(path, user=None):
    """[(start, count)] of the subordinate id ranges in path (of one user, or of everyone)."""
    try:
        with open(path) as f:
            rows = [line.strip().split(":") for line in f if line.count(":") == 2]
    except FileNotFoundError:
        return []
    return [(int(a), int(n)) for u, a, n in rows if user in (None, u)]


def _user_mount_program(base):
    """The mount program an ordinary user can run: the venv's interpreter may live where other
    users cannot reach (a venv made from a Python under /root), so a small script runs the
    system's Python 3 over the checkout and the venv's packages (test_rootless does the same)."""
    path = os.path.join(base, "unionfs-mount-program")
    with open(path, "w") as f:
        f.write('#!/bin/sh\nPYTHONPATH=%s\nexport PYTHONPATH\nexec %s -m unionfs "$@"\n'
                % (shlex.quote(USER_ENV["PYTHONPATH"]), shlex.quote(PYTHON)))
    os.chmod(path, 0o755)
    return path


@contextlib.contextmanager
def _rootless_user(base):
    """A new ordinary user with /etc/subuid and /etc/subgid ranges (what rootless podman needs)
    and its home under base, who may open /dev/fuse while it exists; on exit every process left
    running as it is killed, the user (and its ranges) removed and /dev/fuse's mode restored."""
    for tool, package in (("useradd", "passwd"), ("userdel", "passwd"), ("newuidmap", "uidmap"),
                          ("newgidmap", "uidmap"), ("runuser", "util-linux")):
        if not shutil.which(tool):
            pytest.skip("rootless podman: %s is missing (apt-get install %s)" % (tool, package))
    name, home = "ufmp%d" % os.getpid(), os.path.join(base, "home")
    r = subprocess.run(["useradd", "-M", "-U", "-d", home, "-s", "/bin/sh", name],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("rootless podman: useradd %s failed: %s" % (name, r.stderr.strip()))
    uid = pwd.getpwnam(name).pw_uid
    try:
        os.mkdir(home, 0o700)
        os.chown(home, uid, pwd.getpwnam(name).pw_gid)
        if not all(_subids(f, name) for f in SUBID_FILES):  # login.defs without SUB_UID_COUNT
            first = max([100000] + [a + n for f in SUBID_FILES for a, n in _subids(f)])
            ids = "%d-%d" % (first, first + 65535)
            subprocess.run(["usermod", "--add-subuids", ids, "--add-subgids", ids, name],
                           check=True, capture_output=True)
        with fuse_open_to_users():
            yield name
    finally:
        left = [p for p in psutil.process_iter(["uids"])
                if p.info["uids"] and uid in (p.info["uids"].real, p.info["uids"].effective)]
        for p in left:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(left, timeout=10)
        subprocess.run(["userdel", name], capture_output=True)


def _build(s, base):
    """Import base:1 into a store, build built:1 and commit committed:1 (a container that
    changed the image); skips where podman cannot import at all."""
    r = s("import", "-q", os.path.join(base, "rootfs.tar"), "localhost/base:1", check=False)
    if r.returncode != 0:
        pytest.skip("podman%s cannot work here: %s" % (
            " as %s (rootless)" % s.user if s.user else "", r.stderr.strip().splitlines()[-1:]))
    # no network for RUN steps: rootless podman would set up slirp4netns, which needs /dev/net/tun
    s("build", "-q", "--network", "none", "-t", "localhost/built:1",
      "-f", os.path.join(base, "Containerfile"), base, timeout=120)
    s("run", "--name", "changer", "localhost/base:1", "sh", "-c", RUN_CHANGES)
    s("commit", "-q", "changer", "localhost/committed:1")
    s("rm", "changer")


@pytest.fixture(scope="module")
def base():
    """A world-readable dir with the busybox rootfs tar and the Containerfile (a rootless user
    reads them)."""
    base = tempfile.mkdtemp(prefix="ufmp-base-", dir="/tmp")
    os.chmod(base, 0o755)
    try:
        rootfs = os.path.join(base, "rootfs")
        load_script("build_rootfs").build_rootfs(rootfs)
        with tarfile.open(os.path.join(base, "rootfs.tar"), "w") as t:
            t.add(rootfs, arcname=".")
        with open(os.path.join(base, "Containerfile"), "w") as f:
            f.write(CONTAINERFILE)
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def reference(base):
    """The reference: root podman on the kernel's overlayfs, images built by _build."""
    s = Store(base, "kernel")
    try:
        _build(s, base)
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module", params=["root", "rootless"])
def stores(request, base, reference):
    """{"unionfs": Store, "kernel": reference}: the same images built with unionfs as mount
    program by root podman, or by rootless podman (a user made for the test, the mount program
    a script it can run)."""
    with contextlib.ExitStack() as stack:
        if request.param == "root":
            s = Store(base, "unionfs", MOUNT_PROGRAM)
        else:
            user = stack.enter_context(_rootless_user(base))
            program = _user_mount_program(base)
            r = subprocess.run(["runuser", "-u", user, "--", program, "--version"],
                               capture_output=True, text=True, env=ENV, cwd="/")
            if r.returncode != 0:
                pytest.skip("rootless podman: a new user cannot run unionfs with %s over %s: %s"
                            % (PYTHON, USER_ENV["PYTHONPATH"], r.stderr.strip()[-300:]))
            s = Store(base, "unionfs-" + user, program, user)
        stack.callback(s.close)
        _build(s, base)
        yield {"unionfs": s, "kernel": reference}


# --- what an image's layers say, independent of how each storage driver wrote them ----------

def _record(tar, member):
    """Type, mode, owner, content and xattrs of one tar entry (no mtime: builds differ)."""
    rec = {"mode": stat.S_IMODE(member.mode), "uid": member.uid, "gid": member.gid,
           "xattrs": {k: v for k, v in member.pax_headers.items() if k.startswith("SCHILY.xattr.")}}
    if member.isdir():
        rec["type"] = "dir"
    elif member.issym():
        rec.update(type="symlink", target=member.linkname)
    elif member.ischr() or member.isblk() or member.isfifo():
        rec.update(type="device" if not member.isfifo() else "fifo",
                   rdev=(member.devmajor, member.devminor))
    else:
        rec.update(type="file", size=member.size,
                   sha256=hashlib.sha256(tar.extractfile(member).read()).hexdigest())
    return rec


def _path(name):
    """A tar member name as a path relative to the root ('' for the root itself)."""
    p = os.path.normpath(name).lstrip("/")
    return "" if p == "." else p


class Tree:
    """A root filesystem built by applying layer tars in order, the way podman unpacks them:
    ``.wh.NAME`` deletes NAME, ``.wh..wh..opq`` empties its directory of what lower layers
    put there, a hard link shares its target's entry."""

    def __init__(self):
        self.entries = {}
        self.links = {}  # path -> set of the names hard-linked to it (one shared set)

    def _delete(self, path):
        for p in [p for p in self.entries if p == path or p.startswith(path + "/")]:
            del self.entries[p]
            self.links.pop(p, {p}).discard(p)

    def apply(self, tar):
        """Apply one layer; returns the stray whiteouts (naming nothing below) it holds."""
        stray = []
        members = [m for m in tar if _path(m.name)]
        for m in members:
            path = _path(m.name)
            parent, name = os.path.split(path)
            if name == ".wh..wh..opq":
                for p in [p for p in self.entries if p.startswith(parent + "/")]:
                    self._delete(p)
            elif name.startswith(".wh."):
                gone = os.path.join(parent, name[len(".wh."):])
                if gone not in self.entries:
                    stray.append(path)
                self._delete(gone)
        for m in members:
            path = _path(m.name)
            if os.path.basename(path).startswith(".wh."):
                continue
            if m.islnk():
                target = _path(m.linkname)
                self._delete(path)
                self.entries[path] = self.entries[target]
                group = self.links.setdefault(target, {target})
                group.add(path)
                self.links[path] = group
            else:
                if not m.isdir() or self.entries.get(path, {}).get("type") != "dir":
                    self._delete(path)
                self.entries[path] = _record(tar, m)
        return stray

    def snapshot(self):
        return {p: dict(rec, links=sorted(self.links.get(p, {p})))
                for p, rec in self.entries.items()}


def layer_changes(archive):
    """[(deleted paths, {path: entry added or changed}, stray whiteouts)] per layer of a
    `podman save` archive, and the final tree. Which form a deletion takes (one whiteout per
    name or an opaque directory) is the storage driver's choice; what it deletes is not."""
    tree, out = Tree(), []
    with tarfile.open(archive) as t:
        for name in json.load(t.extractfile("manifest.json"))[0]["Layers"]:
            before = tree.snapshot()
            with tarfile.open(fileobj=t.extractfile(name)) as layer:
                stray = tree.apply(layer)
            after = tree.snapshot()
            out.append((sorted(set(before) - set(after)),
                        {p: e for p, e in after.items() if before.get(p) != e}, stray))
    return out, tree.snapshot()


def exported_tree(archive):
    tree = Tree()
    with tarfile.open(archive) as t:
        tree.apply(t)
    return tree.snapshot()


def _assert_same(ours, kernel, what):
    diffs = {k: (ours.get(k), kernel.get(k)) for k in set(ours) | set(kernel)
             if ours.get(k) != kernel.get(k)}
    assert not diffs, "%s differs from the kernel's:\n%s" % (what, "\n".join(
        "  %s: unionfs %r, kernel %r" % (k, a, b) for k, (a, b) in sorted(diffs.items())))


def _assert_images_match(stores, image):
    ours, ours_tree = layer_changes(stores["unionfs"].save(image))
    ref, ref_tree = layer_changes(stores["kernel"].save(image))
    assert len(ours) == len(ref), "%s: %d layers on unionfs, %d on the kernel" % (
        image, len(ours), len(ref))
    for i, ((deleted, changed, stray), (rdeleted, rchanged, rstray)) in enumerate(zip(ours, ref)):
        assert not stray and not rstray, "layer %d of %s: stray whiteouts %r / %r" % (
            i, image, stray, rstray)
        assert deleted == rdeleted, "layer %d of %s deletes %r on unionfs, %r on the kernel" % (
            i, image, deleted, rdeleted)
        _assert_same(changed, rchanged, "layer %d of %s" % (i, image))
    _assert_same(ours_tree, ref_tree, "the merged tree of %s" % image)
    _assert_same(exported_tree(stores["unionfs"].export(image)),
                 exported_tree(stores["kernel"].export(image)), "podman export of %s" % image)
    return ours


# --- tests ----------------------------------------------------------------------------------

def test_container_root_is_served_by_unionfs(stores):
    s = stores["unionfs"]
    r = s("run", "--rm", "localhost/base:1", "sh", "-c",
          "grep ' / ' /proc/self/mounts; echo hi > /etc/new && rm -rf /usr/lib/oldpkg"
          " && mv /usr/share/doc /usr/share/doc2 && cat /etc/new /usr/share/doc2/base/copyright"
          " && ls /usr/lib /usr/share")
    lines = r.stdout.splitlines()
    assert lines[0].split()[:3] == ["unionfs", "/", "fuse.unionfs"], r.stdout
    assert lines[1:3] == ["hi", "public domain"]
    assert "oldpkg" not in lines and "doc" not in lines and "doc2" in lines, r.stdout


def test_live_container_mount_and_unmount(stores):
    """While a container runs, its rootfs is a unionfs mount served by our daemon; removing the
    container unmounts it (containers-storage runs fusermount -u) and the daemon exits."""
    s = stores["unionfs"]
    s("run", "-d", "--name", "live", "localhost/base:1", "sleep", "60")
    try:
        merged = s("inspect", "--format", "{{.GraphDriver.Data.MergedDir}}", "live").stdout.strip()
        if s.user is None:  # a rootless podman mounts in its own mount namespace
            assert [m.fstype for m in mount_table() if m.mountpoint == merged] == ["fuse.unionfs"]
        pid = daemon_pid(merged)
        cmdline = " ".join(psutil.Process(pid).cmdline())
        assert "lowerdir=" in cmdline and "upperdir=" in cmdline, cmdline
        s("exec", "live", "sh", "-c", "echo x > /tmp/t && mv /opt/legacy /opt/moved"
          " && rm -rf /usr/lib/oldpkg && mkdir /usr/lib/oldpkg")
        upper, work = s("inspect", "--format", "{{.GraphDriver.Data.UpperDir}} "
                        "{{.GraphDriver.Data.WorkDir}}", "live").stdout.split()
        assert open(os.path.join(upper, "tmp/t")).read() == "x\n"
        # where the daemon recorded the deletion: a 0/0 character device, as the kernel does
        # (root of a rootless podman's user namespace may make one too)
        assert stat.S_ISCHR(os.lstat(os.path.join(upper, "opt/legacy")).st_mode)
        # ... and the opaque directory: trusted.overlay.*, which only the host's root may
        # write, or else the kernel's userxattr form
        ns = "user" if s.user else "trusted"
        with open(os.path.join(work, "unionfs.format")) as f:
            assert f.read().split() == ["xattr=" + ns, "whiteout=chr"]
        opaque = os.path.join(upper, "usr/lib/oldpkg")
        assert os.getxattr(opaque, ns + ".overlay.opaque", follow_symlinks=False) == b"y"
    finally:
        s("rm", "-f", "-t", "0", "live")
    assert wait_for(lambda: not psutil.pid_exists(pid))
    assert merged not in {m.mountpoint for m in mount_table()}


def test_build_layers_match_kernel(stores):
    layers = _assert_images_match(stores, "localhost/built:1")
    deleted, changed, _ = layers[1]
    assert "usr/lib/oldpkg/lib1.so" in deleted and "usr/share/doc" in deleted
    assert changed["usr/share/doc-renamed/base/README"]["type"] == "file"
    assert changed["usr/local/app/lib/libapp.so.1"]["links"] == [
        "usr/local/app/lib/libapp.so", "usr/local/app/lib/libapp.so.1"]
    deleted, changed, _ = layers[2]
    assert "usr/share/doc-renamed/base/README" in deleted
    assert "usr/share/doc-again/base/README" in changed
    assert "usr/share/doc-again/base/copyright" not in changed


def test_commit_layer_matches_kernel(stores):
    layers = _assert_images_match(stores, "localhost/committed:1")
    deleted, changed, _ = layers[-1]
    assert "var/lib/pkgdb/status" in deleted and "opt/legacy/b/c/d" in deleted
    assert changed["opt/old/b/c/d"]["type"] == "file" and "opt/old/b/e" not in changed
    assert changed["etc/os-release"]["size"] == len("changed\n")
