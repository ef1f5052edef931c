"""What the user configured for registries, without a registry: credential helpers (a real
docker-credential-* program written by the test, on PATH), registries.conf with its drop-ins,
and short-name aliases."""
import json
import os

import pytest

from tests.registryutil import CredentialHelper
from unionfs.image import auth, registries_conf, shortnames
from unionfs.image.errors import ImageError
from unionfs.image.registry import Client


@pytest.fixture
def home(tmp_path, monkeypatch):
    """Credential files and registries.conf in tmp_path only; a helper directory on PATH."""
    for k in ("REGISTRY_AUTH_FILE", "DOCKER_CONFIG", "CONTAINERS_REGISTRIES_CONF",
              "CONTAINERS_REGISTRIES_CONF_DIR"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("CONTAINERS_REGISTRIES_CONF", str(tmp_path / "registries.conf"))
    monkeypatch.setenv("CONTAINERS_REGISTRIES_CONF_DIR", str(tmp_path / "registries.conf.d"))
    (tmp_path / "registries.conf").write_text("")
    monkeypatch.setenv("PATH", str(tmp_path / "bin") + os.pathsep + os.environ["PATH"])
    return tmp_path


def _json(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f)


def _docker(home):
    return str(home / "home" / ".docker" / "config.json")


def _containers(home):
    return str(home / "run" / "containers" / "auth.json")


INLINE = {"auth": "aW5saW5lOnB3"}       # inline:pw


# ---- credential helpers -----------------------------------------------------------------------

def test_creds_store_is_asked_first_and_the_file_is_the_fallback(home):
    h = CredentialHelper(home / "bin", "vault", {"reg.example:5000": ["alice", "s3cret"],
                                                "https://index.docker.io/v1/": ["hub", "t"]})
    _json(_docker(home), {"credsStore": "vault", "auths": {
        "reg.example:5000": {}, "other.example": INLINE}})
    assert auth.credentials("reg.example:5000") == ("alice", "s3cret")
    assert auth.credentials("docker.io") == ("hub", "t")        # docker's server URL for the Hub
    assert auth.credentials("other.example") == ("inline", "pw")  # the helper has none
    assert auth.credentials("none.example") is None
    assert ["get", "reg.example:5000"] in h.calls() and ["get", "https://index.docker.io/v1/"] in h.calls()


def test_cred_helpers_entry_decides_alone_and_wins_over_creds_store(home):
    CredentialHelper(home / "bin", "store", {"a.example": ["from-store", "1"]})
    CredentialHelper(home / "bin", "ecr", {"b.example": ["from-ecr", "2"]})
    _json(_docker(home), {"credsStore": "store", "credHelpers": {"b.example": "ecr",
                                                                 "c.example": "ecr"},
                          "auths": {"c.example": INLINE}})
    assert auth.credentials("a.example") == ("from-store", "1")
    assert auth.credentials("b.example") == ("from-ecr", "2")
    assert auth.credentials("c.example") is None      # its helper has none: anonymous
    # containers auth.json's credHelpers, read first
    CredentialHelper(home / "bin", "pod", {"a.example": ["from-pod", "3"]})
    _json(_containers(home), {"credHelpers": {"a.example": "pod"}})
    assert auth.credentials("a.example") == ("from-pod", "3")


def test_a_failing_or_missing_helper_is_one_line(home):
    h = CredentialHelper(home / "bin", "vault", {"reg.example": ["a", "b"]})
    _json(_docker(home), {"credHelpers": {"reg.example": "vault", "gone.example": "nosuch"}})
    h.broken()
    with pytest.raises(ImageError) as e:
        auth.credentials("reg.example")
    assert str(e.value) == ("credential helper docker-credential-vault get failed: "
                            "the keyring is locked")
    with pytest.raises(ImageError) as e:
        auth.credentials("gone.example")
    assert "docker-credential-nosuch is not installed" in str(e.value) and "\n" not in str(e.value)


def test_the_client_runs_the_helper_only_when_the_registry_asks(home):
    h = CredentialHelper(home / "bin", "vault", {"reg.example": ["a", "b"]})
    _json(_docker(home), {"credsStore": "vault"})
    c = Client("reg.example")
    assert h.calls() == []
    assert c.creds == ("a", "b") and c.creds == ("a", "b")
    assert h.calls() == [["get", "reg.example"]]


def test_login_stores_through_creds_store_and_logout_erases(home):
    h = CredentialHelper(home / "bin", "vault")
    _json(_docker(home), {"credsStore": "vault", "currentContext": "x",
                          "auths": {"reg.example:5000": INLINE}})
    _json(_containers(home), {"auths": {"reg.example:5000": INLINE}})   # stale: would win
    assert auth.store_credentials("reg.example:5000", "alice", "pw") == _docker(home)
    assert h.creds() == {"reg.example:5000": ["alice", "pw"]}
    assert h.calls()[0] == ["store", json.dumps({"ServerURL": "reg.example:5000",
                                                 "Username": "alice", "Secret": "pw"})]
    docker = json.load(open(_docker(home)))
    assert docker == {"credsStore": "vault", "currentContext": "x",
                      "auths": {"reg.example:5000": {}}}      # no secret left in the file
    assert json.load(open(_containers(home)))["auths"] == {}
    assert auth.credentials("reg.example:5000") == ("alice", "pw")
    assert auth.remove_credentials("reg.example:5000")
    assert h.creds() == {} and json.load(open(_docker(home)))["auths"] == {}
    assert auth.credentials("reg.example:5000") is None
    assert not auth.remove_credentials("reg.example:5000")


def test_login_without_a_helper_writes_the_containers_file(home):
    assert auth.store_credentials("reg.example", "u", "p") == _containers(home)
    assert auth.credentials("reg.example") == ("u", "p")
    assert not os.path.exists(_docker(home))


# ---- registries.conf and its drop-ins ----------------------------------------------------------

def test_drop_ins_override_in_name_order(home):
    (home / "registries.conf").write_text(
        'unqualified-search-registries = ["a.example"]\nshort-name-mode = "permissive"\n'
        '[aliases]\n"app" = "a.example/app"\n"old" = "a.example/old"\n'
        '[[registry]]\nlocation = "a.example"\ninsecure = true\n'
        '[[registry]]\nlocation = "b.example"\ninsecure = true\n')
    d = home / "registries.conf.d"
    d.mkdir()
    (d / "10-first.conf").write_text('[aliases]\n"app" = "b.example/team/app"\n"old" = ""\n'
                                     '[[registry]]\nlocation = "b.example"\n')
    (d / "20-second.conf").write_text('unqualified-search-registries = ["c.example", "d.example"]\n'
                                      '[aliases]\n"new" = "docker.io/new"\n')
    (d / "30-ignored.txt").write_text('[aliases]\n"app" = "x.example/app"\n')
    conf = registries_conf.load()
    assert registries_conf.search_registries(conf) == ["c.example", "d.example"]
    assert registries_conf.short_name_mode(conf) == "permissive"
    assert registries_conf.alias("app", conf) == "b.example/team/app"
    assert registries_conf.alias("old", conf) is None         # erased by ""
    assert registries_conf.alias("new", conf) == "docker.io/new"
    assert registries_conf.is_insecure("a.example")
    assert not registries_conf.is_insecure("b.example")      # the drop-in's table replaced it


def test_which_files_are_read(home, monkeypatch):
    monkeypatch.delenv("CONTAINERS_REGISTRIES_CONF")
    monkeypatch.delenv("CONTAINERS_REGISTRIES_CONF_DIR")
    user = str(home / "home" / ".config" / "containers")
    assert registries_conf.sources() == ("/etc/containers/registries.conf", [
        "/etc/containers/registries.conf.d", user + "/registries.conf.d"])
    os.makedirs(user)
    open(user + "/registries.conf", "w").close()
    assert registries_conf.sources() == (user + "/registries.conf", [user + "/registries.conf.d"])
    monkeypatch.setenv("CONTAINERS_REGISTRIES_CONF_DIR", "/x")
    assert registries_conf.sources() == (user + "/registries.conf", ["/x"])


@pytest.mark.parametrize("line,words", [
    ('"app:1" = "a.example/app"', "short name without tag"),
    ('"a.example/app" = "b.example/app"', "short name without tag"),
    ('"app" = "a.example/app:1"', "without tag or digest"),
    ('"app" = "team/app"', "REGISTRY/REPOSITORY"),
    ('"app" = "a.example/App"', "invalid image reference"),
])
def test_bad_aliases_are_one_line_errors_naming_the_file(home, line, words):
    (home / "registries.conf").write_text("[aliases]\n" + line + "\n")
    with pytest.raises(ImageError) as e:
        registries_conf.load()
    assert words in str(e.value) and str(home / "registries.conf") in str(e.value)
    assert "\n" not in str(e.value)


def test_an_alias_wins_over_the_search_registries(home):
    (home / "registries.conf").write_text(
        'unqualified-search-registries = ["a.example", "b.example"]\n'     # enforcing: ambiguous
        '[aliases]\n"app" = "host.example:5000/team/app"\n"team/tool" = "docker.io/tool"\n')
    assert [str(r) for r in shortnames.candidates("app")] == ["host.example:5000/team/app:latest"]
    assert [str(r) for r in shortnames.candidates("app:2")] == ["host.example:5000/team/app:2"]
    d = "sha256:" + "a" * 64
    assert [str(r) for r in shortnames.candidates("app@" + d)] == ["host.example:5000/team/app@" + d]
    assert [str(r) for r in shortnames.candidates("team/tool:1")] == ["docker.io/library/tool:1"]
    with pytest.raises(ImageError, match="a.example/other:latest, b.example/other:latest"):
        shortnames.candidates("other")
    assert [str(r) for r in shortnames.candidates("c.example/app")] == ["c.example/app:latest"]
