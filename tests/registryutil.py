"""A real registry for tests: Debian's ``docker-registry`` (the CNCF distribution registry) on
127.0.0.1 at a free port, storage in a temp dir, started and stopped by PID; optionally behind
htpasswd basic auth or token auth (the token server is TokenServer here: it signs RS256 JWTs
with a throwaway key whose certificate the registry trusts). Also: small OCI layouts to push
with skopeo. Nothing here leaves loopback.
"""
import base64
import gzip
import hashlib
import http.server
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import threading
import time
import urllib.parse
import warnings

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt   # bcrypt htpasswd lines (glibc's libxcrypt); the module leaves Python in 3.13

REGISTRY = shutil.which("docker-registry")
SKOPEO = shutil.which("skopeo")
OPENSSL = shutil.which("openssl")

needs_registry = pytest.mark.skipif(REGISTRY is None, reason="docker-registry is not installed "
                                    "(apt: docker-registry; make deps installs it)")
needs_skopeo = pytest.mark.skipif(SKOPEO is None, reason="skopeo is not installed (apt: skopeo)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry:
    """docker-registry serve CONFIG; .host is '127.0.0.1:PORT'."""

    def __init__(self, base, htpasswd=None, token=None):
        self.base = base
        self.port = free_port()
        self.host = "127.0.0.1:%d" % self.port
        storage = os.path.join(base, "storage")
        os.makedirs(storage, exist_ok=True)
        conf = ["version: 0.1", "log:", "  level: error", "  accesslog:", "    disabled: true",
                "storage:", "  filesystem:", "    rootdirectory: " + storage,
                "  delete:", "    enabled: true", "http:", "  addr: " + self.host]
        if htpasswd:
            path = os.path.join(base, "htpasswd")
            with open(path, "w") as f:
                for user, pw in htpasswd.items():
                    f.write("%s:%s\n" % (user, crypt.crypt(pw, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))))
            conf += ["auth:", "  htpasswd:", "    realm: test", "    path: " + path]
        if token:
            conf += ["auth:", "  token:", "    realm: " + token.realm, "    service: test-registry",
                     "    issuer: test-issuer", "    rootcertbundle: " + token.cert]
        self.config = os.path.join(base, "config.yml")
        with open(self.config, "w") as f:
            f.write("\n".join(conf) + "\n")
        self.log = open(os.path.join(base, "registry.log"), "wb")
        self.proc = subprocess.Popen([REGISTRY, "serve", self.config], stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    with open(os.path.join(base, "registry.log"), "rb") as f:
                        raise RuntimeError("docker-registry did not start: %s" % f.read()[-500:])
                time.sleep(0.05)

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()


def _b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


class TokenServer:
    """A minimal token server (docker's token auth spec) on 127.0.0.1: grants the scope asked for
    to users in `users` (basic auth), pull-only scopes to anonymous callers when anonymous_pull."""

    def __init__(self, base, users, anonymous_pull=False):
        self.key = os.path.join(base, "token.key")
        self.cert = os.path.join(base, "token.crt")
        subprocess.run([OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", self.key,
                        "-out", self.cert, "-days", "2", "-subj", "/CN=test-issuer"],
                       check=True, capture_output=True, timeout=60)
        der = subprocess.run([OPENSSL, "x509", "-in", self.cert, "-outform", "DER"], check=True,
                             capture_output=True, timeout=30).stdout
        self.x5c = base64.b64encode(der).decode()
        self.users, self.anonymous_pull = users, anonymous_pull
        self.requests = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                user = None
                h = self.headers.get("Authorization") or ""
                if h.startswith("Basic "):
                    u, _, p = base64.b64decode(h[6:]).decode().partition(":")
                    if server.users.get(u) != p:
                        self.send_response(401)
                        self.end_headers()
                        return
                    user = u
                server.requests.append((user, q.get("scope", [])))
                access = []
                for scope in q.get("scope", []):
                    typ, name, actions = scope.split(":")[0], ":".join(scope.split(":")[1:-1]), \
                        scope.split(":")[-1].split(",")
                    if user is None:
                        actions = [a for a in actions if a == "pull"] if server.anonymous_pull else []
                    access.append({"type": typ, "name": name, "actions": actions})
                body = json.dumps({"token": server.sign(user or "", access)}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = "http://127.0.0.1:%d/token" % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def sign(self, sub, access):
        now = int(time.time())
        header = {"alg": "RS256", "typ": "JWT", "x5c": [self.x5c]}
        claims = {"iss": "test-issuer", "sub": sub, "aud": "test-registry", "exp": now + 300,
                  "nbf": now - 10, "iat": now, "jti": os.urandom(8).hex(), "access": access}
        signing_input = (_b64url(json.dumps(header).encode()) + "." +
                         _b64url(json.dumps(claims).encode())).encode()
        sig = subprocess.run([OPENSSL, "dgst", "-sha256", "-sign", self.key], input=signing_input,
                             capture_output=True, check=True, timeout=30).stdout
        return signing_input.decode() + "." + _b64url(sig)

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# ---- images to push with skopeo ----------------------------------------------------------------

def _tar(files):
    """files: {path: bytes | None (a directory) | ('symlink', target)}."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name in sorted(files):
            data = files[name]
            ti = tarfile.TarInfo(name)
            ti.mtime = 1600000000
            if data is None:
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                t.addfile(ti)
            elif isinstance(data, tuple):
                ti.type, ti.linkname = tarfile.SYMTYPE, data[1]
                t.addfile(ti)
            else:
                ti.size, ti.mode = len(data), 0o644
                t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def oci_layout(path, layers, tag="latest", config_extra=None):
    """An OCI layout directory with one image of gzip layers (each a files dict for _tar)."""
    os.makedirs(os.path.join(path, "blobs", "sha256"), exist_ok=True)

    def blob(data):
        d = hashlib.sha256(data).hexdigest()
        with open(os.path.join(path, "blobs", "sha256", d), "wb") as f:
            f.write(data)
        return "sha256:" + d

    descs, diff_ids = [], []
    for files in layers:
        raw = _tar(files)
        gz = gzip.compress(raw, mtime=0)
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                      "digest": blob(gz), "size": len(gz)})
    cfg = {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
           "rootfs": {"type": "layers", "diff_ids": diff_ids},
           "history": [{"created_by": "layer %d" % i} for i in range(len(layers))]}
    cfg.update(config_extra or {})
    cfgb = json.dumps(cfg).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": blob(cfgb), "size": len(cfgb)},
                           "layers": descs}).encode()
    md = blob(manifest)
    with open(os.path.join(path, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion": "1.0.0"}')
    with open(os.path.join(path, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md,
            "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": tag}}]}, f)
    return {"manifest": md, "config": "sha256:" + hashlib.sha256(cfgb).hexdigest(),
            "diff_ids": diff_ids, "blobs": [d["digest"] for d in descs]}


def oci_index_layout(path, images, tag="latest"):
    """An OCI layout whose tag names an image index: images is {"os/arch": layers}."""
    infos, descs = {}, []
    for plat, layers in images.items():
        osname, arch = plat.split("/")
        info = oci_layout(path, layers, tag=tag, config_extra={"os": osname, "architecture": arch})
        mpath = os.path.join(path, "blobs", "sha256", info["manifest"][7:])
        descs.append({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                      "digest": info["manifest"], "size": os.path.getsize(mpath),
                      "platform": {"os": osname, "architecture": arch}})
        infos[plat] = info
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                        "manifests": descs}).encode()
    d = hashlib.sha256(index).hexdigest()
    with open(os.path.join(path, "blobs", "sha256", d), "wb") as f:
        f.write(index)
    with open(os.path.join(path, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json", "digest": "sha256:" + d,
            "size": len(index), "annotations": {"org.opencontainers.image.ref.name": tag}}]}, f)
    infos["index"] = "sha256:" + d
    return infos


def skopeo_push(layout, tag, dest, creds=None):
    cmd = [SKOPEO, "copy", "--all", "--quiet", "--dest-tls-verify=false"]
    if creds:
        cmd += ["--dest-creds", "%s:%s" % creds]
    cmd += ["oci:%s:%s" % (layout, tag), "docker://" + dest]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


# ---- a docker credential helper ----------------------------------------------------------------

_HELPER = '''#!/usr/bin/env python3
import json, os, sys
here = os.path.dirname(os.path.abspath(__file__))
db = os.path.join(here, "%(name)s.db")
verb, data = sys.argv[1], sys.stdin.read()
with open(os.path.join(here, "%(name)s.calls"), "a") as f:
    f.write(json.dumps([verb, data]) + "\\n")
if os.path.exists(os.path.join(here, "%(name)s.broken")):
    print("the keyring is locked", file=sys.stderr)
    sys.exit(3)
creds = json.load(open(db)) if os.path.exists(db) else {}
if verb == "store":
    body = json.loads(data)
    creds[body["ServerURL"]] = [body["Username"], body["Secret"]]
elif data not in creds:
    print("credentials not found in native keychain")
    sys.exit(1)
elif verb == "get":
    print(json.dumps({"ServerURL": data, "Username": creds[data][0], "Secret": creds[data][1]}))
elif verb == "erase":
    del creds[data]
with open(db, "w") as f:
    json.dump(creds, f)
'''


class CredentialHelper:
    """docker-credential-NAME in directory d (put d on PATH), speaking docker's protocol and
    keeping its secrets in d/NAME.db; .calls() lists [verb, stdin] of every run; .broken(True)
    makes it fail as a locked keyring does."""

    def __init__(self, d, name, creds=None):
        self.d, self.name = str(d), name
        os.makedirs(self.d, exist_ok=True)
        path = os.path.join(self.d, "docker-credential-" + name)
        with open(path, "w") as f:
            f.write(_HELPER % {"name": name})
        os.chmod(path, 0o755)
        with open(os.path.join(self.d, name + ".db"), "w") as f:
            json.dump(creds or {}, f)

    def creds(self):
        with open(os.path.join(self.d, self.name + ".db")) as f:
            return json.load(f)

    def calls(self):
        try:
            with open(os.path.join(self.d, self.name + ".calls")) as f:
                return [json.loads(line) for line in f]
        except FileNotFoundError:
            return []

    def broken(self, on=True):
        p = os.path.join(self.d, self.name + ".broken")
        if on:
            open(p, "w").close()
        elif os.path.exists(p):
            os.unlink(p)
