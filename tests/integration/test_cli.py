"""The unionfs command line: argument validation, mount forms, unmounting, daemon lifecycle."""
import errno
import os
import signal
import stat
import subprocess
import time

import psutil
import pytest

from tests.mountutil import (ENV, UNIONFS, is_mounted, requires_fuse, requires_root,
                             run_unionfs, unionfs_mount, unmount, wait_for)
from tests.integration.conftest import daemon_pid, mount_count, mount_options, requires_daemon

pytestmark = [requires_fuse, requires_daemon]


def write(path, data=b""):
    os.makedirs(os.path.dirname(os.fspath(path)), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def read(path):
    with open(path, "rb") as f:
        return f.read()


@pytest.fixture
def dirs(tmp_path):
    d = {n: tmp_path / n for n in ("lower", "lower2", "upper", "work", "mnt")}
    for p in d.values():
        p.mkdir()
    write(d["lower"] / "hello", b"from lower\n")
    write(d["lower2"] / "bottom", b"from lower2\n")
    return d


# ------------------------------------------------------------------------------ bad input

def _bad(tmp_path, d, case, tmpfs):
    """-> (argv, paths the message may name, mountpoint)."""
    L, U, W, M = d["lower"], d["upper"], d["work"], d["mnt"]
    if case == "missing_lower":
        missing = tmp_path / "no-such-lower"
        return ["--lower", "%s:%s" % (L, missing), "--upper", U, "--work", W], [missing], M
    if case == "lower_is_file":
        f = tmp_path / "afile"
        write(f, b"x")
        return ["--lower", "%s:%s" % (L, f), "--upper", U, "--work", W], [f], M
    if case == "upper_inside_lower":
        up = L / "up"
        up.mkdir()
        return ["--lower", L, "--upper", up, "--work", W], [up, L], M
    if case == "lower_inside_upper":
        low = U / "low"
        low.mkdir()
        return ["--lower", "%s:%s" % (L, low), "--upper", U, "--work", W], [low, U], M
    if case == "work_inside_upper":
        w = U / "w"
        w.mkdir()
        return ["--lower", L, "--upper", U, "--work", w], [w, U], M
    if case == "upper_inside_work":
        up = W / "up"
        up.mkdir()
        return ["--lower", L, "--upper", up, "--work", W], [up, W], M
    if case == "work_on_other_fs":
        w = tmp_path / "tmpfs-work"
        w.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(w)], check=True)
        tmpfs.append(w)
        return ["--lower", L, "--upper", U, "--work", w], [w, U], M
    if case == "mountpoint_missing":
        m = tmp_path / "no-such-mnt"
        return ["--lower", L, "--upper", U, "--work", W], [m], m
    if case == "mountpoint_already_mounted":
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(M)], check=True)
        tmpfs.append(M)
        return ["--lower", L, "--upper", U, "--work", W], [M], M
    if case == "work_without_upper":
        return ["--lower", L, "--work", W], [W, "--upper"], M
    raise AssertionError(case)


BAD_CASES = ["missing_lower", "lower_is_file", "upper_inside_lower", "lower_inside_upper",
             "work_inside_upper", "upper_inside_work", "work_on_other_fs", "mountpoint_missing",
             "mountpoint_already_mounted", "work_without_upper"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_fails_before_mounting(tmp_path, dirs, case):
    if case in ("work_on_other_fs", "mountpoint_already_mounted") and os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    tmpfs = []
    try:
        args, names, mnt = _bad(tmp_path, dirs, case, tmpfs)
        before = mount_count(mnt) if os.path.exists(mnt) else 0
        proc = run_unionfs("mount", *args, mnt, timeout=30)
        try:
            assert proc.returncode != 0, "accepted bad input %s: %s" % (case, proc.stdout)
            assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
            lines = proc.stderr.strip("\n").splitlines()
            assert len(lines) == 1, "expected one line on stderr, got %r" % proc.stderr
            assert any(str(n) in lines[0] for n in names), (
                "message %r does not name %s" % (lines[0], " or ".join(map(str, names))))
            after = mount_count(mnt) if os.path.exists(mnt) else 0
            assert after == before, "something was mounted on %s" % mnt
        finally:
            if os.path.exists(mnt) and mount_count(mnt) > before:
                unmount(str(mnt))
    finally:
        for m in reversed(tmpfs):
            unmount(str(m), fuse=False)


def test_bad_input_kernel_option_form(tmp_path, dirs):
    missing = tmp_path / "nope"
    opts = "lowerdir=%s:%s,upperdir=%s,workdir=%s" % (dirs["lower"], missing, dirs["upper"],
                                                       dirs["work"])
    proc = run_unionfs("-o", opts, dirs["mnt"], timeout=30)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip("\n").splitlines()
    assert len(lines) == 1 and str(missing) in lines[0], proc.stderr
    assert not is_mounted(dirs["mnt"])


# ------------------------------------------------------------------------ mount / umount

def test_mount_umount_round_trip(dirs):
    d = dirs
    try:
        proc = run_unionfs("mount", "--lower", "%s:%s" % (d["lower"], d["lower2"]),
                           "--upper", d["upper"], "--work", d["work"], d["mnt"])
        assert proc.returncode == 0, proc.stderr
        assert is_mounted(d["mnt"]), "mount returned before the mount was ready"
        assert sorted(os.listdir(d["mnt"])) == ["bottom", "hello"]
        assert read(d["mnt"] / "hello") == b"from lower\n"
        write(d["mnt"] / "new", b"written")
        proc = run_unionfs("umount", d["mnt"])
        assert proc.returncode == 0, proc.stderr
        assert not is_mounted(d["mnt"])
    finally:
        unmount(str(d["mnt"]))
    assert read(d["upper"] / "new") == b"written"
    assert os.listdir(d["mnt"]) == []
    # and a second mount of the same dirs sees the data
    with unionfs_mount([d["lower"], d["lower2"]], d["upper"], d["work"], d["mnt"]):
        assert read(d["mnt"] / "new") == b"written"


def test_kernel_style_option_form_with_escaped_colon(tmp_path, dirs):
    d = dirs
    colon = tmp_path / "lay:er"  # a lower whose path contains a colon
    write(colon / "in_colon_layer", b"colon\n")
    write(colon / "hello", b"shadowed by the top layer\n")
    esc = str(colon).replace(":", "\\:")
    opts = "lowerdir=%s:%s,upperdir=%s,workdir=%s" % (d["lower"], esc, d["upper"], d["work"])
    try:
        proc = run_unionfs("-o", opts, d["mnt"])
        assert proc.returncode == 0, proc.stderr
        assert is_mounted(d["mnt"])
        m = d["mnt"]
        assert sorted(os.listdir(m)) == ["hello", "in_colon_layer"]
        assert read(m / "in_colon_layer") == b"colon\n"
        assert read(m / "hello") == b"from lower\n"
        write(m / "in_colon_layer", b"changed\n")
        assert read(d["upper"] / "in_colon_layer") == b"changed\n"
        assert read(colon / "in_colon_layer") == b"colon\n"
    finally:
        run_unionfs("umount", d["mnt"])
        unmount(str(d["mnt"]))
    assert not is_mounted(d["mnt"])


def _spec_layout(tmp_path):
    spec = tmp_path / "spec"
    write(spec / "layers" / "top" / "shared", b"top\n")
    write(spec / "layers" / "bottom" / "shared", b"bottom\n")
    write(spec / "layers" / "bottom" / "only_bottom", b"b\n")
    (spec / "rw" / "upper").mkdir(parents=True)
    (spec / "rw" / "work").mkdir(parents=True)
    (spec / "stack.toml").write_text(
        'lower = ["layers/top", "layers/bottom"]\n'
        'upper = "rw/upper"\n'
        'work = "rw/work"\n'
        'options = ["allow_other"]\n')
    mnt = tmp_path / "mnt-spec"
    mnt.mkdir()
    return spec, mnt


def test_spec_file_with_relative_paths(tmp_path):
    spec, mnt = _spec_layout(tmp_path)
    try:
        proc = run_unionfs("mount", "--spec", spec / "stack.toml", mnt, cwd="/")
        assert proc.returncode == 0, proc.stderr
        assert is_mounted(mnt)
        assert sorted(os.listdir(mnt)) == ["only_bottom", "shared"]
        assert read(mnt / "shared") == b"top\n"
        write(mnt / "created", b"c")
        assert "allow_other" in _super_options(mnt)
    finally:
        unmount(str(mnt))
    assert read(spec / "rw" / "upper" / "created") == b"c"


def test_spec_upper_work_overridden_on_command_line(tmp_path):
    spec, mnt = _spec_layout(tmp_path)
    up, wk = tmp_path / "other-upper", tmp_path / "other-work"
    up.mkdir()
    wk.mkdir()
    try:
        proc = run_unionfs("mount", "--spec", spec / "stack.toml", "--upper", up, "--work", wk,
                           mnt, cwd="/")
        assert proc.returncode == 0, proc.stderr
        write(mnt / "created", b"c")
        assert read(mnt / "shared") == b"top\n"
    finally:
        unmount(str(mnt))
    assert read(up / "created") == b"c"
    assert not (spec / "rw" / "upper" / "created").exists()


def _super_options(mnt):
    mnt = os.path.realpath(mnt)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == mnt:
                return set(fields[fields.index("-") + 3].split(","))
    return set()


def test_readonly_mount_without_upper(dirs):
    d = dirs
    with unionfs_mount([d["lower"], d["lower2"]], None, None, d["mnt"]):
        m = d["mnt"]
        assert read(m / "hello") == b"from lower\n"
        assert read(m / "bottom") == b"from lower2\n"
        for fn, args in [(os.open, (m / "new", os.O_CREAT | os.O_WRONLY, 0o644)),
                         (os.mkdir, (m / "newdir",)),
                         (os.chmod, (m / "hello", 0o600)),
                         (os.unlink, (m / "hello",)),
                         (os.open, (m / "hello", os.O_WRONLY))]:
            with pytest.raises(OSError) as ei:
                fn(*args)
            assert ei.value.errno == errno.EROFS, (fn.__name__, args, ei.value)
    assert os.listdir(d["lower"]) == ["hello"]
    assert read(d["lower"] / "hello") == b"from lower\n"


# ---------------------------------------------------------------------- daemon lifecycle

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_to_daemon_unmounts(dirs, sig):
    d = dirs
    with unionfs_mount([d["lower"]], d["upper"], d["work"], d["mnt"]):
        pid = daemon_pid(d["mnt"])
        write(d["mnt"] / "before-signal", b"x" * 100000)
        os.kill(pid, sig)
        assert wait_for(lambda: not is_mounted(d["mnt"]), timeout=15), \
            "still mounted after %s to the daemon" % sig.name
        try:
            psutil.Process(pid).wait(15)
        except psutil.NoSuchProcess:
            pass
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
    assert read(d["upper"] / "before-signal") == b"x" * 100000


def test_foreground_mode(dirs):
    d = dirs
    cmd = UNIONFS + ["mount", "--lower", str(d["lower"]), "--upper", str(d["upper"]),
                     "--work", str(d["work"]), "-f", str(d["mnt"])]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: is_mounted(d["mnt"]) or proc.poll() is not None, timeout=20)
        assert proc.poll() is None, "foreground mount exited: %r" % (proc.communicate(),)
        assert is_mounted(d["mnt"])
        assert read(d["mnt"] / "hello") == b"from lower\n"
        write(d["mnt"] / "fg", b"foreground")
        time.sleep(0.5)
        assert proc.poll() is None, "-f returned although the mount is up"
        proc.terminate()  # SIGTERM to the PID we started
        proc.wait(15)
        assert wait_for(lambda: not is_mounted(d["mnt"]), timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        unmount(str(d["mnt"]))
    assert read(d["upper"] / "fg") == b"foreground"


@pytest.mark.timeout(120)
def test_500_lower_layers(tmp_path):
    n = 500
    base = tmp_path / "l"
    lowers = []
    for i in range(n):
        layer = base / str(i)
        layer.mkdir(parents=True)
        (layer / ("f%d" % i)).write_bytes(b"layer %d\n" % i)
        (layer / "common").write_bytes(b"common from %d\n" % i)
        lowers.append(layer)
    upper, work, mnt = tmp_path / "u", tmp_path / "w", tmp_path / "m"
    for p in (upper, work, mnt):
        p.mkdir()
    t0 = time.monotonic()
    with unionfs_mount(lowers, upper, work, mnt):
        t1 = time.monotonic()
        assert read(mnt / ("f%d" % (n - 1))) == b"layer %d\n" % (n - 1)
        t2 = time.monotonic()
        assert read(mnt / "common") == b"common from 0\n"
        names = os.listdir(mnt)
        t3 = time.monotonic()
        assert len(names) == n + 1
        with open(mnt / ("f%d" % (n - 1)), "ab") as f:  # copy-up from the bottom layer
            f.write(b"appended\n")
        assert read(upper / ("f%d" % (n - 1))) == b"layer %d\nappended\n" % (n - 1)
    print("500 layers: mount %.2fs, read bottom file %.3fs, readdir %.3fs"
          % (t1 - t0, t2 - t1, t3 - t2))


# ------------------------------------------------------------------------ mount options

@requires_root
def test_default_nodev_nosuid(tmp_path, dirs):
    d = dirs
    os.mknod(d["lower"] / "zero", stat.S_IFCHR | 0o666, os.makedev(1, 5))
    with unionfs_mount([d["lower"]], d["upper"], d["work"], d["mnt"]):
        opts = mount_options(d["mnt"])
        assert {"nodev", "nosuid"} <= opts, opts
        with pytest.raises(OSError) as ei:
            open(d["mnt"] / "zero", "rb")
        assert ei.value.errno == errno.EACCES
    with unionfs_mount([d["lower"]], d["upper"], d["work"], d["mnt"], options=("dev", "suid")):
        opts = mount_options(d["mnt"])
        assert "nodev" not in opts and "nosuid" not in opts, opts
        with open(d["mnt"] / "zero", "rb") as f:
            assert f.read(16) == b"\0" * 16
