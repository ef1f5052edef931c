"""A local user's fake daemon cannot make root's commands read root's files (issue 12).

The attacker, uid 65534, starts a process whose command line looks like a unionfs daemon of
root's mount MNT but names a root-only directory as its layers, before root mounts MNT (so it
comes first in /proc). ``serve``, ``diff`` and ``status`` must take MNT's layers and daemon from
the mount itself (its control directory, the /dev/fuse holder), never from that command line.
Processes started here are stopped by PID; the mount is unmounted in finally."""
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import urllib.parse
import urllib.request

import pytest

from tests.mountutil import (load_script, requires_fuse, requires_root, run_unionfs,
                             unionfs_mount, wait_for)

pytestmark = [requires_fuse, requires_root,
              pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv")]

bs = load_script("bench_serve")
NOBODY = 65534
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else "python3"


@contextlib.contextmanager
def fake_daemon(secret, mnt):
    """uid 65534 running `python3 .../unionfs _daemon -o lowerdir=SECRET,... MNT`."""
    d = tempfile.mkdtemp(prefix="unionfs-fake-", dir="/tmp")
    os.chmod(d, 0o755)
    script = os.path.join(d, "unionfs")
    with open(script, "w") as f:
        f.write("import time\ntime.sleep(100)\n")
    os.chmod(script, 0o644)
    opts = "lowerdir=%s,upperdir=%s,workdir=%s" % (secret, secret, secret)
    proc = subprocess.Popen(["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY,
                             "--clear-groups", "--", PYTHON, script, "_daemon", "--ready-fd", "4",
                             "-o", opts, str(mnt)], cwd="/", stdin=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: _argv(proc.pid)[-1:] == [str(mnt)], 10)
        yield proc.pid
    finally:
        proc.kill()
        proc.wait(10)
        shutil.rmtree(d, ignore_errors=True)


def _argv(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return [os.fsdecode(a) for a in f.read().split(b"\0") if a]
    except OSError:
        return []


@pytest.fixture
def tree(tmp_path):
    secret = tmp_path / "secret"
    secret.mkdir(mode=0o700)
    (secret / "root-only-key").write_bytes(b"k")
    lower, upper, work, mnt, store = (tmp_path / n for n in ("lower", "upper", "work", "mnt",
                                                             "store"))
    for p in (lower, upper, work, store):
        p.mkdir()
    (lower / "public").write_bytes(b"p")
    return secret, lower, upper, work, mnt, str(store)


def get(url, path):
    """GET path on the server at url (the URL serve printed, its token kept), as JSON."""
    u = urllib.parse.urlsplit(url)
    q = urllib.parse.parse_qs(u.query)
    full = "%s://%s%s" % (u.scheme, u.netloc, path)
    if "token" in q:
        full += ("&" if "?" in path else "?") + "token=" + q["token"][0]
    with urllib.request.urlopen(full, timeout=10) as r:
        return json.loads(r.read())


def test_serve_and_diff_take_the_layers_from_the_mount(tree):
    secret, lower, upper, work, mnt, store = tree
    with fake_daemon(secret, mnt) as fake:
        with unionfs_mount([lower], upper, work, str(mnt)):
            daemon = json.loads((mnt / ".unionfs" / "stats").read_bytes())["pid"]
            assert fake < daemon   # the fake one is found first in /proc
            (mnt / "new").write_bytes(b"n")
            with bs.serving(mnt, "--store", store) as (url, _proc):
                dirs = [l["dir"] for l in get(url, "/api/summary")["layers"]]
                assert dirs == [str(lower), str(upper)]
                names = [e["name"] for e in get(url, "/api/tree?path=/")["entries"]]
                assert names == ["new", "public"]
            r = run_unionfs("diff", mnt, "--store", store)
            assert r.returncode == 0, r.stderr
            assert r.stdout == "A /new\n"
            r = run_unionfs("history", str(mnt / "public"), "--json", "--store", store)
            assert r.returncode == 0, r.stderr
            assert [l["dir"] for l in json.loads(r.stdout)["layers"]] == [str(lower), str(upper)]


def test_status_of_a_dead_mount_names_no_fake_daemon(tree):
    secret, lower, upper, work, mnt, store = tree
    with fake_daemon(secret, mnt) as fake:
        with unionfs_mount([lower], upper, work, str(mnt)):
            doc = json.loads(run_unionfs("status", "--json").stdout)
            rec = next(r for r in doc["mounts"] if r["mount"] == str(mnt))
            daemon = rec["pid"]
            assert rec["state"] == "ok" and daemon not in (None, fake)
            assert daemon == json.loads((mnt / ".unionfs" / "stats").read_bytes())["pid"]
            os.kill(daemon, signal.SIGKILL)   # the daemon our mount started
            assert wait_for(lambda: not os.path.exists("/proc/%d" % daemon), 10)
            doc = json.loads(run_unionfs("status", "--json").stdout)
            rec = next(r for r in doc["mounts"] if r["mount"] == str(mnt))
            assert rec["state"] == "dead"
            assert rec["pid"] is None and rec["layers"] == []


def test_status_does_not_wait_on_a_stopped_daemon(tree):
    """status asks every mount's daemon; one that does not answer (stopped here) is reported as
    `no answer` after a few seconds instead of hanging the command, and its pid is still known
    from the /dev/fuse it holds."""
    _secret, lower, upper, work, mnt, _store = tree
    with unionfs_mount([lower], upper, work, str(mnt)):
        daemon = json.loads((mnt / ".unionfs" / "stats").read_bytes())["pid"]
        os.kill(daemon, signal.SIGSTOP)
        try:
            r = run_unionfs("status", "--json", timeout=30)
        finally:
            os.kill(daemon, signal.SIGCONT)
        rec = next(r for r in json.loads(r.stdout)["mounts"] if r["mount"] == str(mnt))
        assert rec["state"] == "no answer" and rec["pid"] == daemon
