"""Docker credential helpers: the ``docker-credential-NAME`` programs that ``credsStore`` and
``credHelpers`` name in ~/.docker/config.json and containers auth.json (pass, secretservice,
ecr-login, gcloud, ...), run with docker's protocol:

    docker-credential-NAME get     stdin: the server URL     stdout: {"ServerURL", "Username", "Secret"}
    docker-credential-NAME store   stdin: {"ServerURL", "Username", "Secret"}
    docker-credential-NAME erase   stdin: the server URL

A helper that has nothing for the server exits non-zero saying "credentials not found" (its
exact words vary): that is anonymous, not an error. Any other failure is one ImageError line
naming the helper. The server URL is the registry's host[:port], and docker's
``https://index.docker.io/v1/`` for Docker Hub, as docker passes them.
"""
import json
import shutil
import subprocess

from .errors import ImageError

DOCKER_HUB_URL = "https://index.docker.io/v1/"
TIMEOUT = 120      # a helper may unlock a keyring (pinentry); a hung one must not hang a pull
IDENTITY_TOKEN_USER = "<token>"


def server_url(registry):
    return DOCKER_HUB_URL if registry == "docker.io" else registry


def _not_found(text):
    return "credentials not found" in text.lower() or "no credentials" in text.lower()


def _run(name, verb, data):
    """(exit status, stdout, stderr) of docker-credential-NAME VERB fed data."""
    prog = "docker-credential-" + name
    path = shutil.which(prog)
    if path is None:
        raise ImageError("credential helper %s is not installed (not on PATH)" % prog)
    try:
        r = subprocess.run([path, verb], input=data, capture_output=True, text=True,
                           timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        raise ImageError("credential helper %s %s did not answer in %d s" % (prog, verb, TIMEOUT))
    except OSError as e:
        raise ImageError("credential helper %s: %s" % (prog, e.strerror or e))
    return r.returncode, r.stdout, r.stderr


def _failure(name, verb, out, err):
    said = (err.strip() or out.strip() or "no message").splitlines()[-1][:200]
    return ImageError("credential helper docker-credential-%s %s failed: %s" % (name, verb, said))


def get(name, registry):
    """(user, secret) the helper keeps for registry, or None when it has none."""
    rc, out, err = _run(name, "get", server_url(registry))
    if rc != 0:
        if _not_found(out + err):
            return None
        raise _failure(name, "get", out, err)
    try:
        body = json.loads(out)
        user, secret = body.get("Username"), body.get("Secret")
    except (ValueError, AttributeError):
        raise ImageError("credential helper docker-credential-%s get: the answer is not "
                         "docker's JSON" % name)
    if not isinstance(user, str) or not isinstance(secret, str) or not (user or secret):
        return None
    if user == IDENTITY_TOKEN_USER:
        raise ImageError("credential helper docker-credential-%s gave an identity token for %s; "
                         "unionfs needs a user name and password" % (name, registry))
    return user, secret


def store(name, registry, user, secret):
    body = json.dumps({"ServerURL": server_url(registry), "Username": user, "Secret": secret})
    rc, out, err = _run(name, "store", body)
    if rc != 0:
        raise _failure(name, "store", out, err)


def erase(name, registry):
    """Forget registry in the helper; False when it had nothing for it."""
    rc, out, err = _run(name, "erase", server_url(registry))
    if rc != 0:
        if _not_found(out + err):
            return False
        raise _failure(name, "erase", out, err)
    return True
