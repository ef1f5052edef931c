"""The registry client without a registry: reference parsing (the docker.io defaults are only
ever parsed, never contacted), credential files, registries.conf, and the HTTP behaviour that a
real registry will not show on demand (429 with Retry-After, retries, bearer challenges), against
a scripted server on 127.0.0.1."""
import base64
import http.server
import json
import os
import threading
import time

import pytest

from unionfs.image import auth, reference, registries_conf
from unionfs.image.errors import ImageError
from unionfs.image.registry import Client, RegistryError, _challenge


@pytest.mark.parametrize("text,registry,repo,tag,digest", [
    ("busybox", "docker.io", "library/busybox", "latest", None),
    ("nginx:1.20", "docker.io", "library/nginx", "1.20", None),
    ("docker.io/library/nginx:1.20", "docker.io", "library/nginx", "1.20", None),
    ("index.docker.io/foo/bar", "docker.io", "foo/bar", "latest", None),
    ("user/app:v1", "docker.io", "user/app", "v1", None),
    ("localhost/app", "localhost", "app", "latest", None),
    ("localhost:5000/a/b/c:t", "localhost:5000", "a/b/c", "t", None),
    ("quay.io/podman/hello", "quay.io", "podman/hello", "latest", None),
    ("127.0.0.1:5000/x@sha256:" + "a" * 64, "127.0.0.1:5000", "x", None, "sha256:" + "a" * 64),
    ("host.example:443/x:t@sha256:" + "b" * 64, "host.example:443", "x", "t", "sha256:" + "b" * 64),
])
def test_reference_parsing(text, registry, repo, tag, digest):
    r = reference.parse(text)
    assert (r.registry, r.repository, r.tag, r.digest) == (registry, repo, tag, digest)
    assert r.reference == (digest or tag)


def test_reference_api_host_and_store_tag():
    r = reference.parse("busybox")
    assert r.api_host == "registry-1.docker.io"
    assert r.tagged() == "docker.io/library/busybox:latest"
    assert reference.parse("x@sha256:" + "c" * 64).tagged() is None
    assert reference.parse("127.0.0.1:5000/x").api_host == "127.0.0.1:5000"


@pytest.mark.parametrize("bad", ["", "UPPER/case", "x:bad tag", "x@sha256:short", "a//b",
                                 "x@md5:" + "a" * 32, " x", "-x", "x:" + "t" * 200])
def test_bad_references_are_one_line_errors(bad):
    with pytest.raises(ImageError) as e:
        reference.parse(bad)
    assert "\n" not in str(e.value)


def test_parse_registry():
    assert reference.parse_registry("https://index.docker.io/v1/") == "docker.io"
    assert reference.parse_registry("127.0.0.1:5000") == "127.0.0.1:5000"
    with pytest.raises(ImageError):
        reference.parse_registry("a/b")


def test_challenge_parsing():
    s, p = _challenge('Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull"')
    assert s == "bearer" and p == {"realm": "https://auth.example/token", "service": "reg",
                                   "scope": "repository:a/b:pull"}
    assert _challenge('Basic realm="x"') == ("basic", {"realm": "x"})


@pytest.fixture
def authenv(tmp_path, monkeypatch):
    for k in ("REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "DOCKER_CONFIG"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    return tmp_path


def _auth(u, p):
    return base64.b64encode(("%s:%s" % (u, p)).encode()).decode()


def test_credentials_from_docker_config_and_containers_auth(authenv):
    os.makedirs(authenv / "home" / ".docker")
    with open(authenv / "home" / ".docker" / "config.json", "w") as f:
        json.dump({"auths": {"https://index.docker.io/v1/": {"auth": _auth("hub", "pw1")},
                             "reg.example:5000": {"auth": _auth("d", "pw:with:colons")}}}, f)
    assert auth.credentials("docker.io") == ("hub", "pw1")
    assert auth.credentials("reg.example:5000") == ("d", "pw:with:colons")
    assert auth.credentials("other.example") is None
    # login writes ${XDG_RUNTIME_DIR}/containers/auth.json, which is read first
    path = auth.store_credentials("reg.example:5000", "c", "pw2")
    assert path == str(authenv / "run" / "containers" / "auth.json")
    assert os.stat(path).st_mode & 0o077 == 0
    assert json.load(open(path)) == {"auths": {"reg.example:5000": {"auth": _auth("c", "pw2")}}}
    assert auth.credentials("reg.example:5000") == ("c", "pw2")
    assert auth.remove_credentials("reg.example:5000")
    assert not auth.remove_credentials("reg.example:5000")
    assert auth.credentials("reg.example:5000") == ("d", "pw:with:colons")


def test_registry_auth_file_wins(authenv, monkeypatch):
    f = authenv / "custom.json"
    f.write_text(json.dumps({"auths": {"r.example": {"auth": _auth("a", "b")}}}))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(f))
    assert auth.credentials("r.example") == ("a", "b")
    assert auth.containers_auth_file() == str(f)


def test_registries_conf_insecure(tmp_path, monkeypatch):
    conf = tmp_path / "registries.conf"
    conf.write_text('[[registry]]\nlocation = "127.0.0.1:5999"\ninsecure = true\n'
                    '[[registry]]\nlocation = "secure.example"\n')
    monkeypatch.setenv("CONTAINERS_REGISTRIES_CONF", str(conf))
    monkeypatch.setenv("CONTAINERS_REGISTRIES_CONF_DIR", str(tmp_path / "no-drop-ins"))
    assert registries_conf.is_insecure("127.0.0.1:5999")
    assert not registries_conf.is_insecure("secure.example")
    assert not Client("127.0.0.1:5999", credentials=()).tls_verify
    assert Client("secure.example", credentials=()).tls_verify
    conf.write_text("not [toml")
    with pytest.raises(ImageError):
        registries_conf.is_insecure("x")


class Scripted:
    """An HTTP server on 127.0.0.1 answering from a list of (status, headers, body) per path."""

    def __init__(self, script):
        self.script, self.seen = script, []
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _answer(self):
                outer.seen.append((self.command, self.path, self.headers.get("Authorization"),
                                   time.monotonic()))
                key = self.path.split("?")[0]
                status, headers, body = outer.script[key].pop(0) if len(outer.script[key]) > 1 \
                    else outer.script[key][0]
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            do_GET = do_HEAD = _answer

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.host = "127.0.0.1:%d" % self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def scripted():
    servers = []

    def make(script):
        s = Scripted(script)
        servers.append(s)
        return s
    yield make
    for s in servers:
        s.close()


def test_429_retry_after_is_respected(scripted):
    tags = json.dumps({"name": "a", "tags": ["x"]}).encode()
    s = scripted({"/v2/a/tags/list": [(429, {"Retry-After": "1"}, b""), (200, {}, tags)]})
    c = Client(s.host, tls_verify=False, credentials=(), backoff=0.01)
    assert c.tags("a") == ["x"]
    (t1, t2) = [t for (_, p, _, t) in s.seen if p.startswith("/v2/a/tags")]
    assert t2 - t1 >= 0.9     # waited as long as Retry-After said, not the 10 ms backoff


def test_rate_limit_and_5xx_give_up_with_one_line(scripted):
    s = scripted({"/v2/a/tags/list": [(429, {"Retry-After": "0"}, b"")],
                  "/v2/b/tags/list": [(503, {}, b"")]})
    c = Client(s.host, tls_verify=False, credentials=(), backoff=0.0, retries=2)
    with pytest.raises(RegistryError) as e:
        c.tags("a")
    assert "rate limited" in str(e.value) and "3 attempts" in str(e.value)
    with pytest.raises(RegistryError) as e:
        c.tags("b")
    assert "HTTP 503" in str(e.value)
    assert len([1 for (_, p, _, _) in s.seen if p.startswith("/v2/b/")]) == 3


def test_connection_refused_after_retries(scripted):
    s = scripted({})
    host = s.host
    s.close()
    c = Client(host, tls_verify=False, credentials=(), backoff=0.0, retries=1)
    c._base = "http://" + host
    with pytest.raises(RegistryError) as e:
        c.tags("a")
    assert "Connection refused" in str(e.value) and "2 attempts" in str(e.value)


def test_bearer_challenge_then_token(scripted):
    tok = scripted({"/token": [(200, {}, json.dumps({"token": "T0K"}).encode())]})
    tags = json.dumps({"tags": ["1", "2"]}).encode()
    chal = 'Bearer realm="http://%s/token",service="svc",scope="repository:a:pull"' % tok.host
    s = scripted({"/v2/a/tags/list": [(401, {"WWW-Authenticate": chal},
                                       b'{"errors":[{"code":"UNAUTHORIZED","message":"x"}]}'),
                                      (200, {}, tags)]})
    c = Client(s.host, tls_verify=False, credentials=(), backoff=0)
    assert c.tags("a") == ["1", "2"]
    assert "scope=repository%3Aa%3Apull" in tok.seen[0][1] and "service=svc" in tok.seen[0][1]
    assert s.seen[-1][2] == "Bearer T0K"


def test_denied_is_one_line(scripted):
    body = b'{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}'
    s = scripted({"/v2/a/tags/list": [(403, {}, body)]})
    with pytest.raises(RegistryError) as e:
        Client(s.host, tls_verify=False, credentials=()).tags("a")
    assert str(e.value).endswith("denied: DENIED: requested access to the resource is denied")


def test_registries_conf_mirrors(tmp_path, monkeypatch):
    conf = tmp_path / "registries.conf"
    conf.write_text('[[registry]]\nlocation = "docker.io"\n'
                    '[[registry.mirror]]\nlocation = "m1.example/hub"\n'
                    '[[registry.mirror]]\nlocation = "m2.example:5000"\ninsecure = true\n'
                    '[[registry]]\nprefix = "docker.io/private"\nlocation = "docker.io/private"\n'
                    'mirror-by-digest-only = true\n'
                    '[[registry.mirror]]\nlocation = "m3.example"\n')
    monkeypatch.setenv("CONTAINERS_REGISTRIES_CONF", str(conf))
    monkeypatch.setenv("CONTAINERS_REGISTRIES_CONF_DIR", str(tmp_path / "no-drop-ins"))
    assert registries_conf.mirrors("docker.io/library/busybox", False) == [
        ("m1.example/hub/library/busybox", False), ("m2.example:5000/library/busybox", True)]
    assert registries_conf.mirrors("docker.io/private/x", False) == []          # by digest only
    assert registries_conf.mirrors("docker.io/private/x", True) == [("m3.example/x", False)]
    assert registries_conf.mirrors("quay.io/x", False) == []
    assert registries_conf.is_insecure("m2.example:5000") and not registries_conf.is_insecure("m1.example")


def _conf(tmp_path, monkeypatch, text):
    conf = tmp_path / "registries.conf"
    conf.write_text(text)
    monkeypatch.setenv("CONTAINERS_REGISTRIES_CONF", str(conf))
    monkeypatch.setenv("CONTAINERS_REGISTRIES_CONF_DIR", str(tmp_path / "no-drop-ins"))


def test_short_names_resolve_through_unqualified_search_registries(tmp_path, monkeypatch):
    from unionfs.image.pull import candidates
    _conf(tmp_path, monkeypatch, "")
    assert [str(r) for r in candidates("busybox")] == ["docker.io/library/busybox:latest"]
    _conf(tmp_path, monkeypatch, 'unqualified-search-registries = ["a.example", "b.example:5000"]\n'
                                 'short-name-mode = "permissive"\n')
    assert [str(r) for r in candidates("app:1")] == ["a.example/app:1", "b.example:5000/app:1"]
    assert [str(r) for r in candidates("ns/app")] == ["a.example/ns/app:latest",
                                                      "b.example:5000/ns/app:latest"]
    assert [str(r) for r in candidates("quay.io/x:2")] == ["quay.io/x:2"]      # qualified
    assert [str(r) for r in candidates("localhost/x")] == ["localhost/x:latest"]
    _conf(tmp_path, monkeypatch, 'unqualified-search-registries = ["a.example", "b.example:5000"]\n')
    with pytest.raises(ImageError) as e:        # enforcing by default, and unionfs never prompts
        candidates("app:1")
    assert "\n" not in str(e.value) and "a.example/app:1, b.example:5000/app:1" in str(e.value)
    assert [str(r) for r in candidates("c.example/app:1")] == ["c.example/app:1"]
    _conf(tmp_path, monkeypatch, 'unqualified-search-registries = ["a.example"]\n'
                                 'short-name-mode = "enforcing"\n')
    assert [str(r) for r in candidates("app")] == ["a.example/app:latest"]    # one: no ambiguity
    _conf(tmp_path, monkeypatch, 'short-name-mode = "sometimes"\n'
                                 'unqualified-search-registries = ["a.example", "b.example"]\n')
    with pytest.raises(ImageError, match="short-name-mode"):
        candidates("app")
    _conf(tmp_path, monkeypatch, 'unqualified-search-registries = ["a.example/ns"]\n')
    with pytest.raises(ImageError, match="invalid registry"):
        candidates("app")


def test_pull_tries_the_search_registries_in_order(scripted, tmp_path, monkeypatch):
    from unionfs.image.pull import pull
    from unionfs.image.store import Store
    unknown = (404, {}, b'{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known"}]}')
    first = scripted({"/v2/app/manifests/1": [unknown]})
    second = scripted({"/v2/app/manifests/1": [unknown]})
    _conf(tmp_path, monkeypatch, 'unqualified-search-registries = ["%s", "%s"]\n'
                                 'short-name-mode = "permissive"\n' % (first.host, second.host))
    with pytest.raises(RegistryError) as e:
        pull(Store(str(tmp_path / "store")), "app:1", tls_verify=False, quiet=True)
    msg = str(e.value)
    assert "\n" not in msg and "not found in any search registry" in msg
    assert msg.index(first.host) < msg.index(second.host) and msg.count("NAME_UNKNOWN") == 2
    assert [p for (_, p, _, _) in first.seen] == ["/v2/app/manifests/1"] == \
        [p for (_, p, _, _) in second.seen if p != "/v2/"]
    assert first.seen[-1][3] < second.seen[0][3]


def test_prune_removes_what_no_pull_holds_and_stale_blobs_json(tmp_path):
    import fcntl
    import subprocess
    import sys

    from unionfs.image import remotes
    from unionfs.image.store import Store, write_json_atomic
    store = Store(str(tmp_path / "s"))
    store.ensure()
    dl = remotes.downloads_dir(store)
    for n in ("a" * 64, "b" * 64 + ".part", "c" * 64 + ".part"):
        with open(os.path.join(dl, n), "wb") as f:
            f.write(b"x" * 1000)
    busy = os.open(os.path.join(dl, "c" * 64 + ".part"), os.O_RDONLY)
    fcntl.flock(busy, fcntl.LOCK_EX)          # a running pull is writing this one
    with remotes.workspace(store) as live:
        dead = store.path("registry", "work", "pull-dead")
        os.makedirs(os.path.join(dead, "layer-x", "root"))
        kept = "sha256:" + "d" * 64
        os.makedirs(store.layer_dir(kept))
        write_json_atomic(os.path.join(store.layer_dir(kept), "meta.json"), {"diff_id": kept})
        image_id = store.add_image(json.dumps({"os": "linux", "architecture": "amd64", "rootfs": {
            "type": "layers", "diff_ids": [kept]}}).encode())
        store.set_tags({"localhost/x:1": image_id})   # so prune keeps the layer
        rec = {"registry": "r", "repository": "x", "digest": "sha256:" + "e" * 64}
        with store.lock():
            remotes.remember(store, [(kept, rec), ("sha256:" + "f" * 64, rec)])
        r = subprocess.run([sys.executable, "-m", "unionfs", "image", "prune", "--store",
                            store.root], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert sorted(os.listdir(dl)) == ["c" * 64 + ".part"]
        assert os.listdir(store.path("registry", "work")) == [os.path.basename(live)]
        assert list(json.load(open(store.path("registry", "blobs.json")))) == [kept]
    os.close(busy)
    assert os.listdir(store.path("registry", "work")) == []


@pytest.mark.parametrize("verb", ["pull", "push"])
def test_jobs_reaches_the_transfer_and_is_checked(verb, tmp_path, monkeypatch, capsys):
    """`image pull|push --jobs N` hands N to the transfer; 0 is refused by the parser."""
    from unionfs import cli
    from unionfs.image import pull, push
    seen = {}

    def fake(*args, **kw):
        seen.update(kw)
        return ("sha256:" + "0" * 64, None, None) if verb == "pull" else "sha256:" + "1" * 64
    monkeypatch.setattr(pull if verb == "pull" else push, verb, fake)
    args = ["image", verb, "--store", str(tmp_path), "--jobs", "5"] + (
        ["reg.example/a:1"] if verb == "pull" else ["img", "reg.example/a:1"])
    assert cli.main(args) == 0
    assert seen["jobs"] == 5
    with pytest.raises(SystemExit) as e:
        cli.main(args[:5] + ["0"] + args[6:])
    assert e.value.code == 2 and "must be 1 or more" in capsys.readouterr().err
