"""A client of the OCI distribution API (``/v2/``): manifests, blobs, tags, catalog, auth.

HTTP is requests' (README "Registries" says why). Everything here returns bytes or writes files
and raises RegistryError, an ImageError whose one line names the registry's error code
(MANIFEST_UNKNOWN, NAME_UNKNOWN, DENIED, ...) or what failed after how many attempts.

Auth is the registries' own flow: a request answered 401 carries ``WWW-Authenticate``; for
``Bearer realm=...,service=...,scope=...`` a token is fetched from the realm (anonymously, or
with the user's credentials as basic auth) and the request repeated with it; for ``Basic`` the
credentials are sent. Connection failures, 5xx and 429 are retried with exponential backoff
(429's ``Retry-After`` is honoured); other answers are final.

Transport: https with verified TLS; for a registry the user marked insecure (``--tls-verify=false``
or registries.conf) https without verification, falling back to plain http, as podman does.

Why one module of ~480 lines: it is one class whose verbs share one connection state (base URL,
tokens, basic auth, lazily read credentials); split, that state would be passed between modules.
"""
import fcntl
import hashlib
import json
import os
import re
import threading
import time
import urllib.parse

import requests
import urllib3

from . import auth, registries_conf
from .errors import ImageError

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_TYPES = (OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST)
MAX_MANIFEST = 4 << 20
CHUNK = 1 << 20

_PARAM = re.compile(r'(\w+)="([^"]*)"')


class RegistryError(ImageError):
    """One line about what the registry answered (or did not)."""

    def __init__(self, msg, status=None, code=None):
        super().__init__(msg)
        self.status = status
        self.code = code


def _challenge(header):
    """('bearer'|'basic', {realm, service, scope}) from a WWW-Authenticate header."""
    scheme, _, rest = (header or "").strip().partition(" ")
    return scheme.lower(), dict(_PARAM.findall(rest))


def _errors(r):
    """'CODE: message' of a registry's JSON error body, or ''."""
    try:
        body = r.json()
        errs = body.get("errors") or []
        return "; ".join("%s: %s" % (e.get("code", "?"), e.get("message", "")) for e in errs), \
            (errs[0].get("code") if errs else None)
    except (ValueError, AttributeError, TypeError):
        return "", None


def _pieces(raw):
    """A response body as it arrives: each piece what one read returned, up to CHUNK. Not
    fixed 64 KiB reads: their per-read cost (a loop turn, a write, a hash update) made a
    137 MB pull on loopback ~25% slower (docs/images.md). Not fixed 1 MiB reads either: those
    wait for a whole MiB, so on a slow link nothing reached the disk (to resume from) or the
    progress line, and a cancel waited, for a MiB at a time."""
    read1 = getattr(raw, "read1", None)       # urllib3 >= 2
    if read1 is None:
        yield from raw.stream(1 << 16, decode_content=False)
        return
    while True:
        b = read1(CHUNK, decode_content=False)
        if not b:
            return
        yield b


class Client:
    """One registry. Safe to share between threads (each has its own HTTP session)."""

    def __init__(self, registry, api_host=None, tls_verify=None, credentials=None, retries=4,
                 backoff=0.5, timeout=60, max_wait=60):
        self.registry = registry
        self.host = api_host or registry
        if tls_verify is None:
            tls_verify = not registries_conf.is_insecure(registry)
        self.tls_verify = tls_verify
        self._creds = credentials    # None: read (and run any credential helper) on first need
        self.retries, self.backoff, self.timeout, self.max_wait = retries, backoff, timeout, max_wait
        self._local = threading.local()
        self._lock = threading.Lock()
        self._base = None
        self._tokens = {}        # scope string -> bearer token
        self._basic = False      # the registry asked for basic auth
        if not tls_verify:
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

    @property
    def creds(self):
        """(user, password) or None/(): looked up when a registry first asks for them, so a
        credential helper runs only for registries that challenge, once per client."""
        if self._creds is None:
            with self._lock:
                if self._creds is None:
                    self._creds = auth.credentials(self.registry) or ()
        return self._creds

    # ---- transport ------------------------------------------------------------------------------

    def _session(self):
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
            s.headers["User-Agent"] = "unionfs"
            s.verify = self.tls_verify
        return s

    def base(self):
        """https://host, or for an insecure registry the first of https/http that answers."""
        if self._base is None:
            if self.tls_verify:
                self._base = "https://" + self.host
            else:
                try:
                    self._session().get("https://%s/v2/" % self.host, timeout=5)
                    self._base = "https://" + self.host
                except requests.RequestException:
                    self._base = "http://" + self.host
        return self._base

    def _auth_header(self, scope):
        with self._lock:
            tok = self._tokens.get(scope)
        return {"Authorization": "Bearer " + tok} if tok else {}

    def _fetch_token(self, params, scope):
        realm = params.get("realm")
        if not realm:
            raise RegistryError("%s: bearer challenge without a realm" % self.registry)
        q = {}
        if params.get("service"):
            q["service"] = params["service"]
        scopes = scope.split(" ") if scope else ([params["scope"]] if params.get("scope") else [])
        q["scope"] = scopes
        try:
            r = self._session().get(realm, params=q, auth=self.creds or None, timeout=self.timeout)
        except requests.RequestException as e:
            raise RegistryError("%s: token server %s: %s" % (self.registry, realm, _reason(e)))
        if r.status_code in (401, 403):
            raise RegistryError("%s: denied: the token server refused %s" % (
                self.registry, "these credentials" if self.creds else "anonymous access"),
                r.status_code, "DENIED")
        if r.status_code != 200:
            raise RegistryError("%s: token server %s answered %d" % (self.registry, realm, r.status_code))
        try:
            body = r.json()
            tok = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            tok = None
        if not tok:
            raise RegistryError("%s: token server %s gave no token" % (self.registry, realm))
        with self._lock:
            self._tokens[scope] = tok

    def _authenticate(self, r, scope, sent_basic):
        scheme, params = _challenge(r.headers.get("WWW-Authenticate"))
        if scheme == "bearer":
            self._fetch_token(params, scope)
            return True
        # not "not self._basic": a request of another thread may have switched it on meanwhile
        if scheme == "basic" and self.creds and not sent_basic:
            self._basic = True
            return True
        return False

    def request(self, method, path, scope="", ok=(200,), what=None, headers=None, **kw):
        """A request that authenticates, retries and raises RegistryError unless the status is
        in ok. path is '/v2/...' or an absolute URL (upload locations)."""
        url = path if path.startswith(("http://", "https://")) else self.base() + path
        what = what or self.registry
        authed = False
        attempt = 0
        while True:
            h = dict(headers or {})
            h.update(self._auth_header(scope))
            if kw.get("data") is not None and hasattr(kw["data"], "seek"):
                kw["data"].seek(0)
            basic = self.creds if (self._basic and self.creds) else None
            try:
                r = self._session().request(method, url, headers=h, timeout=self.timeout,
                                            auth=basic, **kw)
            except requests.exceptions.SSLError as e:   # not transient: no retries
                hint = "; a plain-HTTP registry needs --tls-verify=false" \
                    if "WRONG_VERSION_NUMBER" in str(e) or "wrong version number" in str(e) else ""
                raise RegistryError("%s: TLS: %s%s" % (what, _reason(e), hint))
            except requests.RequestException as e:
                if attempt >= self.retries:
                    raise RegistryError("%s: %s (after %d attempts)" % (what, _reason(e), attempt + 1))
                time.sleep(self.backoff * 2 ** attempt)
                attempt += 1
                continue
            if r.status_code == 401 and not authed:
                authed = True
                if self._authenticate(r, scope, bool(basic)):
                    r.close()
                    continue
            if r.status_code == 429 or r.status_code in (500, 502, 503, 504):
                if attempt < self.retries:
                    wait = self.backoff * 2 ** attempt
                    ra = r.headers.get("Retry-After")
                    if r.status_code == 429 and ra and ra.strip().isdigit():
                        wait = max(wait, float(ra))
                    r.close()
                    time.sleep(min(wait, self.max_wait))
                    attempt += 1
                    continue
            if r.status_code in ok:
                return r
            raise self._error(r, what)

    def _error(self, r, what):
        detail, code = _errors(r)
        r.close()
        s = r.status_code
        if s == 429:
            return RegistryError("%s: rate limited (429 Too Many Requests) after %d attempts" % (
                what, self.retries + 1), s, "TOOMANYREQUESTS")
        if s == 401:
            return RegistryError("%s: unauthorized: %s" % (
                what, detail or ("authentication required" if not self.creds else "bad credentials")),
                s, code or "UNAUTHORIZED")
        if s == 403:
            return RegistryError("%s: denied: %s" % (what, detail or "access denied"), s, code or "DENIED")
        if s == 404 and not detail:
            detail = "not found"
        return RegistryError("%s: %s" % (what, detail or "HTTP %d" % s), s, code)

    # ---- the API --------------------------------------------------------------------------------

    @staticmethod
    def scope(repo, actions="pull"):
        return "repository:%s:%s" % (repo, actions)

    def ping(self):
        """GET /v2/ with authentication (login checks credentials with it)."""
        r = self.request("GET", "/v2/", ok=(200,), what=self.registry)
        r.close()

    def get_manifest(self, repo, reference, what=None):
        """(bytes, media type, digest) of a manifest or index; a digest reference is verified."""
        what = what or "%s/%s:%s" % (self.registry, repo, reference)
        r = self.request("GET", "/v2/%s/manifests/%s" % (repo, reference), self.scope(repo),
                         what=what, headers={"Accept": ", ".join(MANIFEST_TYPES)}, stream=True)
        data = _read(r, MAX_MANIFEST + 1, what, decode=True)
        if len(data) > MAX_MANIFEST:
            raise RegistryError("%s: manifest larger than %d bytes" % (what, MAX_MANIFEST))
        got = "sha256:" + hashlib.sha256(data).hexdigest()
        if reference.startswith("sha256:") and got != reference:
            raise RegistryError("%s: manifest digest mismatch: asked for %s, got %s" % (what, reference, got))
        header = r.headers.get("Docker-Content-Digest")
        if header and header.startswith("sha256:") and header != got:
            raise RegistryError("%s: manifest digest mismatch: the registry says %s, the bytes are %s"
                                % (what, header, got))
        mt = (r.headers.get("Content-Type") or "").split(";")[0].strip()
        try:
            mt = json.loads(data).get("mediaType") or mt
        except (ValueError, AttributeError):
            raise RegistryError("%s: the manifest is not JSON" % what)
        return data, mt, got

    def head_manifest(self, repo, reference):
        r = self.request("HEAD", "/v2/%s/manifests/%s" % (repo, reference), self.scope(repo),
                         ok=(200, 404), what="%s/%s:%s" % (self.registry, repo, reference), headers={"Accept": ", ".join(MANIFEST_TYPES)})
        r.close()
        return r.headers.get("Docker-Content-Digest") if r.status_code == 200 else None

    def get_blob_bytes(self, repo, digest, limit=MAX_MANIFEST * 4):
        r = self.request("GET", "/v2/%s/blobs/%s" % (repo, digest), self.scope(repo), stream=True,
                         what="%s/%s@%s" % (self.registry, repo, digest))
        data = _read(r, limit + 1, "%s/%s@%s" % (self.registry, repo, digest))
        if len(data) > limit:
            raise RegistryError("blob %s is larger than %d bytes" % (digest, limit))
        got = "sha256:" + hashlib.sha256(data).hexdigest()
        if got != digest:
            raise RegistryError("blob %s: digest mismatch: got %s" % (digest, got), code="DIGEST_INVALID")
        return data

    def download_blob(self, repo, digest, dest, size=None, progress=None):
        """Download a blob to dest, resuming from dest + '.part' with a Range request; verified
        against digest (and size) before it is renamed to dest. progress(done, total). The
        partial file is flock'ed, so two pulls of one blob take turns instead of interleaving."""
        part = dest + ".part"
        what = "%s/%s@%s" % (self.registry, repo, digest)
        fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.path.exists(dest):          # another pull finished it meanwhile
                st = os.fstat(fd)
                try:
                    if st.st_size == 0 and os.stat(part).st_ino == st.st_ino:
                        os.unlink(part)       # the empty one this call created
                except FileNotFoundError:
                    pass
                return os.path.getsize(dest)
            h, have = hashlib.sha256(), 0
            while True:
                b = os.read(fd, CHUNK)
                if not b:
                    break
                h.update(b)
                have += len(b)
            if size is not None and have > size:
                os.ftruncate(fd, 0)
                h, have = hashlib.sha256(), 0
            if size is None or have < size:
                h = self._fetch_into(fd, repo, digest, what, h, have, size, progress)
                have = os.fstat(fd).st_size
            got = "sha256:" + h.hexdigest()
            if got != digest or (size is not None and have != size):
                os.unlink(part)
                if got != digest:
                    raise RegistryError("%s: blob digest mismatch: got %s" % (what, got),
                                        code="DIGEST_INVALID")
                raise RegistryError("%s: blob is %d bytes, the manifest says %d" % (what, have, size))
            os.fsync(fd)
            os.rename(part, dest)
            return have
        finally:
            os.close(fd)

    def _fetch_into(self, fd, repo, digest, what, h, have, size, progress):
        """Append the blob from byte `have` to fd, hashing into h (restarting from 0 when the
        server will not resume); returns the hash of the whole file."""
        headers = {"Range": "bytes=%d-" % have} if have else {}
        r = self.request("GET", "/v2/%s/blobs/%s" % (repo, digest), self.scope(repo), stream=True,
                         ok=(200, 206, 416), what=what, headers=headers)
        try:
            if r.status_code == 416:          # nothing after `have`: the partial file is whole
                return h
            start = 0
            if r.status_code == 206:
                m = re.match(r"bytes (\d+)-", r.headers.get("Content-Range") or "")
                start = int(m.group(1)) if m else -1
            if start != have:                 # the server ignored the Range (or answered oddly)
                if start != 0:
                    raise RegistryError("%s: the registry resumed at the wrong offset" % what)
                os.ftruncate(fd, 0)
                h, have = hashlib.sha256(), 0
            os.lseek(fd, have, os.SEEK_SET)
            if progress:
                progress(have, size)
            for b in _pieces(r.raw):
                os.write(fd, b)
                h.update(b)
                have += len(b)
                if progress:
                    progress(have, size)
            return h
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as e:
            raise RegistryError("%s: download interrupted at %d bytes (%s); pull again to resume" % (
                what, have, _reason(e)))
        finally:
            r.close()

    def blob_exists(self, repo, digest):
        r = self.request("HEAD", "/v2/%s/blobs/%s" % (repo, digest), self.scope(repo, "pull,push"),
                         ok=(200, 404), what="%s/%s" % (self.registry, repo))
        r.close()
        return r.status_code == 200

    def _location(self, r):
        loc = r.headers.get("Location")
        if not loc:
            raise RegistryError("%s: upload answered without a Location" % self.registry)
        return urllib.parse.urljoin(self.base() + "/", loc)

    @staticmethod
    def _with_query(url, **q):
        parts = urllib.parse.urlsplit(url)
        query = urllib.parse.parse_qsl(parts.query) + list(q.items())
        return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))

    def mount_blob(self, repo, digest, from_repo):
        """Cross-repository mount; True when the registry linked it, False when it did not
        (the upload it opened instead is cancelled)."""
        scope = "%s %s" % (self.scope(repo, "pull,push"), self.scope(from_repo, "pull"))
        r = self.request("POST", "/v2/%s/blobs/uploads/?%s" % (repo, urllib.parse.urlencode(
            {"mount": digest, "from": from_repo})), scope, ok=(201, 202),
            what="push to %s/%s" % (self.registry, repo))
        r.close()
        if r.status_code == 201:
            return True
        try:
            self.request("DELETE", self._location(r), scope, ok=(200, 202, 204, 404)).close()
        except RegistryError:
            pass
        return False

    def upload_blob(self, repo, digest, path, chunk_size=16 << 20, progress=None):
        """Upload the file at path as digest: one PUT when it fits in a chunk, else PATCH
        chunks (Content-Range) and a closing PUT. progress(done, total) is called before the
        first request and after each; whatever it raises (a cancelled push) ends the upload,
        and the registry's upload session is cancelled (DELETE), as on any failure."""
        scope = self.scope(repo, "pull,push")
        size = os.path.getsize(path)
        r = self.request("POST", "/v2/%s/blobs/uploads/" % repo, scope, ok=(202,),
                         what="push to %s/%s" % (self.registry, repo))
        r.close()
        loc = self._location(r)
        what = "upload of %s to %s/%s" % (digest, self.registry, repo)
        try:
            if progress:
                progress(0, size)
            with open(path, "rb") as f:
                off = 0
                while size > chunk_size and off < size:
                    data = f.read(chunk_size)
                    r = self.request("PATCH", loc, scope, ok=(202,), what=what, data=data, headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Range": "%d-%d" % (off, off + len(data) - 1)})
                    r.close()
                    loc = self._location(r)
                    off += len(data)
                    if progress:
                        progress(off, size)
                r = self.request("PUT", self._with_query(loc, digest=digest), scope, ok=(201,),
                                 what=what, data=f.read() if off < size else b"",
                                 headers={"Content-Type": "application/octet-stream"})
                r.close()
        except BaseException:
            self._cancel_upload(loc, scope)
            raise
        if progress:
            progress(size, size)

    def _cancel_upload(self, loc, scope):
        """DELETE an upload session, once and best effort: the push is failing already."""
        try:
            self._session().delete(loc, headers=self._auth_header(scope), timeout=10,
                                   auth=self.creds if (self._basic and self.creds) else None).close()
        except (requests.RequestException, ImageError):
            pass

    def put_manifest(self, repo, reference, data, media_type):
        r = self.request("PUT", "/v2/%s/manifests/%s" % (repo, reference), self.scope(repo, "pull,push"),
                         ok=(201,), data=data, headers={"Content-Type": media_type},
                         what="%s/%s:%s" % (self.registry, repo, reference))
        r.close()
        return "sha256:" + hashlib.sha256(data).hexdigest()

    def _paged(self, path, key, scope, what):
        out = []
        url = path
        while url:
            r = self.request("GET", url, scope, what=what)
            try:
                body = r.json()
            except ValueError:
                raise RegistryError("%s: the answer is not JSON" % what)
            finally:
                r.close()
            out.extend((body or {}).get(key) or [])
            nxt = r.links.get("next", {}).get("url")
            url = urllib.parse.urljoin(self.base() + "/", nxt) if nxt else None
        return out

    def tags(self, repo):
        return self._paged("/v2/%s/tags/list" % repo, "tags", self.scope(repo),
                           "%s/%s" % (self.registry, repo))

    def catalog(self):
        return self._paged("/v2/_catalog", "repositories", "registry:catalog:*", self.registry)


def _read(r, limit, what, decode=False):
    """Up to limit bytes of a streamed body; a connection lost meanwhile is a RegistryError."""
    try:
        return r.raw.read(limit, decode_content=decode)
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as e:
        raise RegistryError("%s: %s" % (what, _reason(e)))
    finally:
        r.close()


def _reason(e):
    """The last line of a requests exception, which carries the cause."""
    s = str(e) or e.__class__.__name__
    m = re.search(r"(Connection refused|Name or service not known|timed out|wrong version number|"
                  r"certificate verify failed[^)'\"]*|Temporary failure in name resolution)", s)
    return m.group(1) if m else s.splitlines()[-1][:200]

