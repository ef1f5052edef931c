"""`unionfs serve` in a real headless browser (Debian's chromium, driven by Playwright over the
DevTools protocol): the inspect fixture image's page (badge counts, a file's origin layer, what a
layer changed, the waste figure), and a live unionfs mount whose whiteout appears on the page as
a file is deleted. Expected answers are worked out by hand from
build_image_fixtures.inspect_layers. Servers and browsers are ours, stopped by PID; the mount is
unmounted in finally."""
import json
import os
import shutil
import stat
import subprocess
import tempfile
import urllib.parse

import pytest

from tests.integration.test_inspect_cli import store  # noqa: F401  (the inspect image, imported)
from tests.mountutil import load_script, requires_fuse, requires_root, unionfs_mount

fx = load_script("build_image_fixtures")
bs = load_script("bench_serve")
_ok, _why = bs.have_browser()
requires_browser = pytest.mark.skipif(not _ok, reason=_why or "")


@pytest.fixture(scope="module")
def page():
    if not _ok:
        pytest.skip(_why)
    with bs.chromium() as p:
        yield p


def counts(page):
    return {b: int(page.inner_text('#counts [data-badge="%s"] .count' % b))
            for b in ("added", "changed", "metadata-only", "deleted", "whiteout", "opaque")}


def open_dir(page, path):
    page.click('#tree tr[data-state="visible"][data-path="%s"] td.name' % path)


def row(page, path, state="visible"):
    return '#tree tr[data-state="%s"][data-path="%s"]' % (state, path)


def load(page, url):
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']")


@requires_browser
def test_image_page_layers_badges_origin(store, page):
    with bs.serving("inspect:1", "--store", store) as (url, _proc):
        load(page, url)
        assert page.locator("#stack .layer").count() == 3
        assert page.inner_text('#stack .layer[data-n="3"] .by') == fx.INSPECT_CREATED_BY[2]
        assert counts(page) == {"added": 1, "changed": 2, "metadata-only": 0, "deleted": 3,
                                "whiteout": 1, "opaque": 1}
        assert page.inner_text(row(page, "/cache") + " .badges") == "opaque"
        open_dir(page, "/app")
        page.wait_for_selector(row(page, "/app/big", "deleted") + " .badge.whiteout")
        assert page.inner_text(row(page, "/app/blob") + " td.origin") == "L2"
        page.wait_for_selector("#wasted-bytes[data-bytes='7950']")

        page.click('#stack .layer[data-n="2"]')
        page.wait_for_selector('#stack .layer.selected[data-n="2"]')
        page.wait_for_function("document.querySelector('#changes-layer').textContent === '2'")
        assert counts(page) == {"added": 0, "changed": 2, "metadata-only": 1, "deleted": 1,
                                "whiteout": 1, "opaque": 0}
        page.wait_for_selector(row(page, "/app/blob") + " .badge.metadata-only")
        assert page.inner_text(row(page, "/app/blob") + " td.origin") == "L2"
        assert page.inner_text(row(page, "/app/big") + " .badges") == "changed"
        changes = page.eval_on_selector_all("#changes li", "ls => ls.map(l => "
                                            "[l.dataset.change, l.dataset.path])")
        assert changes == [["changed", "/app/big"], ["changed", "/app/blob"],
                           ["deleted", "/data/tmp"], ["changed", "/lib/a"]]

        page.click(row(page, "/app/blob") + " td.name")
        page.wait_for_selector("#detail-panel:not([hidden])")
        assert "visible, from layer 2" in page.inner_text("#detail")


@requires_browser
@requires_fuse
def test_mount_page_shows_a_whiteout_as_it_happens(tmp_path, page):
    lower, upper, work, mnt = (tmp_path / n for n in ("lower", "upper", "work", "mnt"))
    for d in (upper, work):
        d.mkdir()
    (lower / "etc").mkdir(parents=True)
    (lower / "etc" / "motd").write_bytes(b"m" * 9)
    (lower / "etc" / "keep").write_bytes(b"k")
    with unionfs_mount([lower], upper, work, str(mnt)):
        with bs.serving(mnt) as (url, proc):
            load(page, url)
            page.wait_for_selector("#live.trace")
            open_dir(page, "/etc")
            page.wait_for_selector(row(page, "/etc/motd"))
            assert page.inner_text(row(page, "/etc/motd") + " td.origin") == "L1"
            os.unlink(mnt / "etc" / "motd")
            page.wait_for_selector(row(page, "/etc/motd", "deleted") + " .badge.whiteout")
            page.wait_for_selector('#events li[data-event="whiteout"][data-path="/etc/motd"]')
            page.wait_for_selector('#events li[data-event="copyup"][data-path="/etc"]')
            assert "/etc/motd" in page.inner_text('#stack .layer[data-n="2"] .chips')
            page.wait_for_function("document.querySelector('#counts [data-badge=whiteout] "
                                   ".count').textContent === '1'")
            proc.terminate()
            assert proc.wait(10) == 0


NOBODY = 65534


def curl_as_nobody(url, *args):
    """The HTTP status of a GET of url by uid 65534 (another local user) with curl."""
    r = subprocess.run(["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY,
                        "--clear-groups", "--", "curl", "-s", "-o", "/dev/null", "-w",
                        "%{http_code}", "--max-time", "10"] + list(args) + [url],
                       capture_output=True, text=True, timeout=30, cwd="/")
    return r.stdout


@requires_root
@pytest.mark.skipif(not (shutil.which("setpriv") and shutil.which("curl")),
                    reason="needs setpriv and curl")
def test_another_local_user_needs_the_token(store):
    """root serves an image on loopback: uid 65534 can connect, but without the printed URL's
    token it gets 403 from every route; with it, 200."""
    with bs.serving("inspect:1", "--store", store) as (url, _proc):
        u = urllib.parse.urlsplit(url)
        base = "%s://%s" % (u.scheme, u.netloc)
        for path in ("/", "/api/summary", "/api/tree?path=/etc", "/static/app.js"):
            assert curl_as_nobody(base + path) == "403", path
        token = urllib.parse.parse_qs(u.query)["token"][0]
        assert curl_as_nobody(base + "/api/events?token=" + token[:-1] + "x") == "403"
        assert curl_as_nobody(url) == "200"
        assert curl_as_nobody(base + "/api/tree?path=/etc&token=" + token) == "200"
        assert curl_as_nobody(base + "/api/summary", "-H", "Authorization: token " + token) \
            == "200"


@requires_root
@pytest.mark.skipif(not (shutil.which("setpriv") and shutil.which("curl")),
                    reason="needs setpriv and curl")
def test_unix_socket_is_the_starting_users_only(store):
    d = tempfile.mkdtemp(prefix="unionfs-serve-", dir="/tmp")
    os.chmod(d, 0o755)          # others may reach the directory: the socket's mode must stop them
    sock = os.path.join(d, "serve.sock")
    proc = subprocess.Popen(bs.UNIONFS + ["serve", "inspect:1", "--store", store,
                                          "--unix-socket", sock], env=bs.ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        assert bs._read_line(proc, r"at unix:(\S+)", 60) == sock
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
        r = subprocess.run(["curl", "-s", "--max-time", "10", "--unix-socket", sock,
                            "http://localhost/api/summary"], capture_output=True, timeout=30)
        assert json.loads(r.stdout)["top"] == 3
        r = subprocess.run(["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY,
                            "--clear-groups", "--", "curl", "-s", "--max-time", "10",
                            "--unix-socket", sock, "http://localhost/api/summary"],
                           capture_output=True, timeout=30, cwd="/")
        assert r.returncode == 7 and r.stdout == b""    # 7: could not connect
        proc.terminate()
        assert proc.wait(10) == 0
        assert not os.path.exists(sock)
    finally:
        bs._stop(proc)
        shutil.rmtree(d, ignore_errors=True)
