#!/usr/bin/env python3
"""How fast `unionfs serve` shows its first screen for a large image, in a real headless browser.

    scripts/bench_serve.py [--files 100000] [--workdir DIR]

Builds an image of N files (three layers: a base of N files in directories of 1,000, a layer
that rewrites 1% of them and deletes 0.5%, a small top layer), imports it into a temporary store,
starts `unionfs serve`, and loads the page in Debian's chromium driven by Playwright over the
DevTools protocol. Prints the server's indexing time, the first screen (navigation start to the
layer stack, root listing and badge counts on screen: `performance.now()` when the page marks
itself ready), opening a directory of 1,000 entries, and switching to a lower layer.

Also the helpers the browser test (tests/integration/test_serve.py) uses: ``chromium()`` (a
headless chromium we start and stop by PID, with a fresh profile, and a Playwright page on it)
and ``serving()`` (a `unionfs serve` process on a free port).
"""
import argparse
import contextlib
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--window-size=1400,900"]
UNIONFS = [sys.executable, "-m", "unionfs"]
ENV = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
sys.path.insert(0, os.path.join(REPO, "scripts"))
import build_image_fixtures as fx  # noqa: E402  (the fixture builders, beside this script)


def have_browser():
    """(True, None) when chromium and Playwright are here, else (False, why)."""
    if not os.access(CHROMIUM, os.X_OK):
        return False, "needs %s (apt-get install chromium)" % CHROMIUM
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False, "needs the playwright package (pip install playwright)"
    return True, None


def _stop(proc, timeout=5):
    """Stop a process we started (and the children it leaves in its process group)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)   # its own group (start_new_session): renderers


def _read_line(proc, pattern, timeout):
    """The first line of proc's stdout matching pattern (a regex), within timeout seconds."""
    deadline = time.monotonic() + timeout
    buf = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.1)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
            m = re.search(pattern.encode(), buf)
            if m:
                return m.group(1).decode()
        elif proc.poll() is not None:
            break
    raise RuntimeError("no %r from %s; output: %r" % (pattern, proc.args, buf[-2000:]))


@contextlib.contextmanager
def serving(*args, timeout=120):
    """`unionfs serve ARGS --port 0`: yields (url, Popen); stopped (by its PID) on exit."""
    proc = subprocess.Popen(UNIONFS + ["serve"] + [str(a) for a in args] + ["--port", "0"],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        yield _read_line(proc, r"at (http://\S+)", timeout), proc
    finally:
        _stop(proc)


@contextlib.contextmanager
def chromium(timeout=30):
    """A headless chromium with a fresh profile; yields a Playwright page connected to it over
    the DevTools protocol. The browser is ours: stopped by its PID on exit."""
    from playwright.sync_api import sync_playwright
    profile = tempfile.mkdtemp(prefix="unionfs-chromium-")
    proc = subprocess.Popen(
        [CHROMIUM] + CHROMIUM_FLAGS + ["--user-data-dir=" + profile, "--remote-debugging-port=0",
                                       "--remote-debugging-address=127.0.0.1", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    proc.stdout = proc.stderr   # _read_line reads "DevTools listening on ws://..." from stderr
    try:
        ws = _read_line(proc, r"DevTools listening on (ws://\S+)", timeout)
        with sync_playwright() as pw:
            browser = pw.chromium.connect_over_cdp(ws)
            try:
                ctx = browser.contexts[0] if browser.contexts else browser.new_context()
                page = ctx.new_page()
                page.set_default_timeout(timeout * 1000)
                yield page
            finally:
                browser.close()
    finally:
        _stop(proc)
        shutil.rmtree(profile, ignore_errors=True)


# ---- the benchmark ----------------------------------------------------------------------------

def big_image(nfiles):
    """An Img of about nfiles files (see the module docstring)."""
    E = fx.E
    per_dir = 1000
    base = []
    for d in range(max(1, nfiles // per_dir)):
        base.append(E("d%03d" % d, "dir"))
        base += [E("d%03d/f%04d" % (d, i), data=b"%d" % i) for i in range(per_dir)]
    change = [E("d%03d" % d, "dir") for d in range(0, nfiles // per_dir, 10)]
    for d in range(0, nfiles // per_dir, 10):
        change += [E("d%03d/f%04d" % (d, i), data=b"new %d" % i) for i in range(100)]
        change += [E("d%03d/f%04d" % (d, i), "whiteout") for i in range(100, 150)]
    top = [E("app", "dir")] + [E("app/x%d" % i, data=b"x" * 100) for i in range(100)]
    tars = [fx.layer_tar(l) for l in (base, change, top)]
    hist = [{"created_by": c} for c in ("ADD big.tar /", "RUN rewrite some", "COPY app /app")]
    return fx.Img(tars, None, ("localhost/big:1",), fx.make_config([fx.sha(t) for t in tars],
                                                                     history=hist))


def bench(workdir, nfiles):
    store = os.path.join(workdir, "store")
    archive = os.path.join(workdir, "big.tar")
    t0 = time.monotonic()
    fx.docker_archive(archive, [big_image(nfiles)], "new")
    subprocess.run(UNIONFS + ["image", "import", archive, "--store", store], env=ENV, check=True,
                   stdout=subprocess.DEVNULL)
    print("built and imported %d files in %.1f s" % (nfiles, time.monotonic() - t0))
    t0 = time.monotonic()
    with serving("big:1", "--store", store) as (url, _proc):
        print("server up (image indexed, top tree built) in %.2f s" % (time.monotonic() - t0))
        with chromium() as page:
            for run in range(3):
                t0 = time.perf_counter()
                page.goto(url)
                page.wait_for_selector("body[data-ready='1']")
                wall = (time.perf_counter() - t0) * 1000
                nav = float(page.get_attribute("body", "data-ready-ms"))
                rows = page.locator("#tree tbody tr").count()
                print("first screen, load %d: %.0f ms after navigation start (%.0f ms wall, "
                      "%d rows)" % (run + 1, nav, wall, rows))
            t0 = time.perf_counter()
            page.click('#tree tr[data-path="/d010"] td.name')
            page.wait_for_selector('#tree tr[data-path="/d010/f0499"]')
            print("open a directory of 1000 entries (500 shown): %.0f ms"
                  % ((time.perf_counter() - t0) * 1000))
            t0 = time.perf_counter()
            page.click('#stack .layer[data-n="2"]')
            page.wait_for_function("document.querySelector('#tree-layer').textContent"
                                   ".startsWith('2') && document.querySelector("
                                   "'#counts [data-badge=deleted] .count')?.textContent === "
                                   "'%d'" % (50 * len(range(0, nfiles // 1000, 10))))
            print("switch to layer 2 (its tree built in the background or on demand): %.0f ms"
                  % ((time.perf_counter() - t0) * 1000))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=100_000)
    p.add_argument("--workdir", help="keep the image and store here (default: a temp dir)")
    args = p.parse_args(argv)
    ok, why = have_browser()
    if not ok:
        print("bench_serve: " + why, file=sys.stderr)
        return 1
    workdir = args.workdir or tempfile.mkdtemp(prefix="unionfs-bench-serve-")
    os.makedirs(workdir, exist_ok=True)
    try:
        bench(workdir, args.files)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
