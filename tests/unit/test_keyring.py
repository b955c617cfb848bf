"""Keyring matching, table-driven over upstream ``pkg/credentialprovider/keyring_test.go``."""

from __future__ import annotations

import base64

import pytest
from structlog.testing import capture_logs

from kubelet_sim.credentials.dockerconfig import DockerConfigEntry, parse_dockercfg
from kubelet_sim.credentials.keyring import (
    BasicKeyring,
    SecretSource,
    SourcedCredentials,
    UnionKeyring,
    go_path_match,
    is_default_registry_match,
    keyring_key,
    parse_url,
    urls_match,
)

EMAIL, USER, PASSWORD = "foo@bar.baz", "foo", "bar"
AUTH = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


def keyring_for(location: str) -> BasicKeyring:
    """A keyring from the upstream tests' sample dockercfg: one entry with email and auth."""
    sample = f'{{"{location}": {{"email": "{EMAIL}", "auth": "{AUTH}"}}}}'.encode()
    keyring = BasicKeyring()
    keyring.add(None, parse_dockercfg(sample))
    return keyring


@pytest.mark.parametrize(
    ("glob", "target", "expected"),
    [
        # TestUrlsMatch: match when there is no path component
        pytest.param("*.kubernetes.io", "prefix.kubernetes.io", True, id="star-first-label"),
        pytest.param("prefix.*.io", "prefix.kubernetes.io", True, id="star-middle-label"),
        pytest.param("prefix.kubernetes.*", "prefix.kubernetes.io", True, id="star-last-label"),
        pytest.param("*-good.kubernetes.io", "prefix-good.kubernetes.io", True, id="star-in-label"),
        # match with path components
        pytest.param("*.kubernetes.io/blah", "prefix.kubernetes.io/blah", True, id="path"),
        pytest.param("prefix.*.io/foo", "prefix.kubernetes.io/foo/bar", True, id="path-prefix"),
        # match with path components and ports
        pytest.param(
            "*.kubernetes.io:1111/blah", "prefix.kubernetes.io:1111/blah", True, id="port-path"
        ),
        pytest.param(
            "prefix.*.io:1111/foo", "prefix.kubernetes.io:1111/foo/bar", True, id="port-path-prefix"
        ),
        # no match when number of parts mismatch
        pytest.param("*.kubernetes.io", "kubernetes.io", False, id="fewer-labels"),
        pytest.param("*.*.kubernetes.io", "prefix.kubernetes.io", False, id="two-stars-one-label"),
        pytest.param("*.*.kubernetes.io", "kubernetes.io", False, id="two-stars-no-label"),
        # no match when some parts mismatch
        pytest.param("kubernetes.io", "kubernetes.com", False, id="tld-differs"),
        pytest.param("k*.io", "quay.io", False, id="glob-label-differs"),
        # no match when ports mismatch
        pytest.param(
            "*.kubernetes.io:1234/blah", "prefix.kubernetes.io:1111/blah", False, id="port-differs"
        ),
        pytest.param(
            "prefix.*.io/foo", "prefix.kubernetes.io:1111/foo/bar", False, id="port-vs-no-port"
        ),
        # beyond upstream's table: path is a string prefix; malformed globs match nothing
        pytest.param("registry.io/foo", "registry.io/foobar", True, id="path-string-prefix"),
        pytest.param("registry.io/foo/bar", "registry.io/foo", False, id="longer-glob-path"),
        pytest.param("registry.io:5000", "registry.io:5000/app", True, id="port-only"),
        pytest.param("registry.io", "registry.io:5000/app", False, id="no-port-vs-port"),
        pytest.param("reg[a-c]stry.io", "regbstry.io", True, id="char-class"),
        pytest.param("reg[^a-c]stry.io", "regbstry.io", False, id="negated-class"),
        # '?' starts the URL query in url.Parse, so it never reaches filepath.Match
        pytest.param("reg?stry.io", "regxstry.io", False, id="question-mark-is-a-query"),
        pytest.param("reg[stry.io", "reg[stry.io", False, id="bad-pattern"),
        pytest.param("registry.io:abc", "registry.io:abc", False, id="bad-port-unparsable"),
    ],
)
def test_urls_match(glob: str, target: str, expected: bool) -> None:
    assert urls_match(glob, target) is expected


# TestDockerKeyringForGlob: every glob finds the credentials for target + "/foo/bar".
@pytest.mark.parametrize(
    ("glob", "target"),
    [
        ("https://hello.kubernetes.io", "hello.kubernetes.io"),
        ("https://*.docker.io", "prefix.docker.io"),
        ("https://prefix.*.io", "prefix.docker.io"),
        ("https://prefix.docker.*", "prefix.docker.io"),
        ("https://*.docker.io/path", "prefix.docker.io/path"),
        ("https://prefix.*.io/path", "prefix.docker.io/path/subpath"),
        ("https://prefix.docker.*/path", "prefix.docker.io/path"),
        ("https://*.docker.io:8888", "prefix.docker.io:8888"),
        ("https://prefix.*.io:8888", "prefix.docker.io:8888"),
        ("https://prefix.docker.*:8888", "prefix.docker.io:8888"),
        ("https://*.docker.io/path:1111", "prefix.docker.io/path:1111"),
        ("https://*.docker.io/v1/", "prefix.docker.io/path:1111"),
        ("https://*.docker.io/v2/", "prefix.docker.io/path:1111"),
        ("https://prefix.docker.*/path:1111", "prefix.docker.io/path:1111"),
        ("prefix.docker.io:1111", "prefix.docker.io:1111/path"),
        ("*.docker.io:1111", "prefix.docker.io:1111/path"),
    ],
)
def test_keyring_for_glob(glob: str, target: str) -> None:
    found = keyring_for(glob).lookup(target + "/foo/bar")
    assert found
    assert (found[0].username, found[0].password, found[0].email) == (USER, PASSWORD, EMAIL)


# TestKeyringMiss
@pytest.mark.parametrize(
    ("glob", "lookup"),
    [
        ("https://hello.kubernetes.io", "world.mesos.org/foo/bar"),
        ("https://*.docker.com", "prefix.docker.io"),
        ("https://suffix.*.io", "prefix.docker.io"),
        ("https://prefix.docker.c*", "prefix.docker.io"),
        ("https://prefix.*.io/path:1111", "prefix.docker.io/path/subpath:1111"),
        ("suffix.*.io", "prefix.docker.io"),
    ],
)
def test_keyring_miss(glob: str, lookup: str) -> None:
    assert keyring_for(glob).lookup(lookup + "/foo/bar") == []


@pytest.mark.parametrize(
    ("image", "hits"),
    [
        pytest.param("world.mesos.org/foo/bar", 0, id="miss-with-docker-hub-credentials"),
        pytest.param("google/docker-registry", 1, id="hit-unqualified-docker-hub"),
        pytest.param("jenkins", 1, id="hit-unqualified-library"),
        pytest.param("index.docker.io/v1//google/docker-registry", 1, id="hit-qualified"),
        pytest.param("docker.io/library/nginx", 1, id="hit-normalised-docker-io"),
    ],
)
def test_docker_hub_credentials(image: str, hits: int) -> None:
    keyring = keyring_for("https://index.docker.io/v1/")
    found = keyring.lookup(image)
    assert len(found) == hits
    if hits:
        assert (found[0].username, found[0].password) == (USER, PASSWORD)


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("foo/bar", True),
        ("docker.io/foo/bar", True),
        ("index.docker.io/foo/bar", True),
        ("foo", True),
        ("", False),
        ("registry.tld/foo/bar", False),
        ("registry:5000/foo/bar", False),
        ("myhostdocker.io/foo/bar", False),
    ],
)
def test_is_default_registry_match(image: str, expected: bool) -> None:
    assert is_default_registry_match(image) is expected


ADA = ("ada", "smash", "ada@example.com")
GRACE = ("grace", "squash", "grace@example.com")


def _entry(who: tuple[str, str, str]) -> DockerConfigEntry:
    return DockerConfigEntry(username=who[0], password=who[1], email=who[2])


# TestDockerKeyringLookup: deeper paths first, every matching key contributes.
@pytest.mark.parametrize(
    ("image", "expected"),
    [
        pytest.param("bar.example.com", [ADA], id="direct-match"),
        pytest.param("bar.example.com/pong", [GRACE, ADA], id="deeper-first"),
        pytest.param("bar.example.com/ping", [ADA], id="deeper-path-ignored"),
        pytest.param("bar.example.com/pongz", [GRACE, ADA], id="path-token-prefix"),
        pytest.param("bar.example.com/pong/pang", [GRACE, ADA], id="sub-path"),
        pytest.param("example.com", [], id="no-host-match"),
        pytest.param("foo.example.com", [], id="other-host"),
    ],
)
def test_docker_keyring_lookup(image: str, expected: list[tuple[str, str, str]]) -> None:
    keyring = BasicKeyring()
    keyring.add(None, {"bar.example.com/pong": _entry(GRACE), "bar.example.com": _entry(ADA)})
    found = [(c.username, c.password, c.email) for c in keyring.lookup(image)]
    assert found == expected


# TestIssue3797: a key with scheme and /v1/ path matches by host.
@pytest.mark.parametrize("image", ["quay.io", "quay.io/foo", "quay.io/foo/bar"])
def test_issue_3797(image: str) -> None:
    keyring = BasicKeyring()
    rex = DockerConfigEntry(username="rex", password="tiny arms", email="rex@example.com")
    keyring.add(None, {"https://quay.io/v1/": rex})
    assert [(c.username, c.password) for c in keyring.lookup(image)] == [("rex", "tiny arms")]


@pytest.mark.parametrize(
    ("location", "key"),
    [
        ("https://index.docker.io/v1/", "index.docker.io"),
        ("index.docker.io", "index.docker.io"),
        ("http://registry.local:5000", "registry.local:5000"),
        ("https://quay.io/v2/coreos", "quay.io/coreos"),
        ("registry.io/team/", "registry.io/team/"),
        ("registry.io/", "registry.io"),
        ("user@registry.io", "registry.io"),
        ("registry.io/a%2Fb", "registry.io/a/b"),
        ("registry.io:port", None),
        ("registry.io/%zz", None),
        ("reg istry.io", None),
    ],
)
def test_keyring_key(location: str, key: str | None) -> None:
    assert keyring_key(location) == key


@pytest.mark.parametrize(
    ("location", "shown"),
    [
        pytest.param("user:s3cret@registry.io:port", "<redacted>@registry.io:port", id="bad-port"),
        pytest.param(
            "https://user:s3cret@registry.io/%zz",
            "https://<redacted>@registry.io/%zz",
            id="bad-escape-with-scheme",
        ),
        # The '/' ends Go's authority early, so the parser reads "user:s3cret" as host:port.
        pytest.param("user:s3cret/x@registry.io", "<redacted>@registry.io", id="slash-in-password"),
        pytest.param("u:s3cret#x@reg istry.io", "<redacted>@reg istry.io", id="hash-in-password"),
    ],
)
def test_unparsable_keys_are_logged_without_their_userinfo(location: str, shown: str) -> None:
    with capture_logs() as logs:
        assert keyring_key(location) is None
    (event,) = logs
    assert event["event"] == "keyring.entry_invalid"
    assert event["entry"] == shown
    assert "s3cret" not in repr(logs)
    assert "user" not in repr(logs)


def test_unparsable_keys_without_userinfo_are_logged_as_they_are() -> None:
    with capture_logs() as logs:
        assert keyring_key("registry.io:port") is None
    assert [(e["entry"], e["error"]) for e in logs] == [
        ("registry.io:port", "invalid port ':port' after host")
    ]


def test_reverse_lexicographic_order_and_insertion_order_within_a_key() -> None:
    keyring = BasicKeyring()
    one = DockerConfigEntry(username="one", password="1")
    two = DockerConfigEntry(username="two", password="2")
    glob = DockerConfigEntry(username="glob", password="g")
    keyring.add(SecretSource("ns", "first", "uid-1"), {"*.example.com": glob, "a.example.com": one})
    keyring.add(SecretSource("ns", "second", "uid-2"), {"https://a.example.com/v2/": two})
    # "a.example.com" sorts after "*.example.com" ('*' < letters), so reversed it comes first.
    assert keyring.keys() == ["a.example.com", "*.example.com"]
    found = keyring.lookup("a.example.com/app")
    assert [c.username for c in found] == ["one", "two", "glob"]
    assert [c.source.name if c.source else None for c in found] == ["first", "second", "first"]


def test_union_concatenates_in_order() -> None:
    first, second = BasicKeyring(), BasicKeyring()
    first.add(None, {"r.io": DockerConfigEntry(username="a", password="1")})
    second.add(None, {"r.io": DockerConfigEntry(username="b", password="2")})
    assert [c.username for c in UnionKeyring([first, second]).lookup("r.io/x")] == ["a", "b"]


def test_sourced_credentials_never_show_secrets() -> None:
    creds = SourcedCredentials(
        username="u",
        password="pw-SECRET",
        identity_token="idt-SECRET",
        email="e@x",
        source=SecretSource("ns", "s", "uid"),
    )
    text = repr(creds) + str(creds) + repr([creds])
    assert "SECRET" not in text
    assert len(creds.credential_hash) == 64
    assert (
        creds.fingerprint()
        == SourcedCredentials(
            username="u", password="pw-SECRET", identity_token="idt-SECRET"
        ).fingerprint()
    )


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("*", "anything", True),
        ("a*c", "abc", True),
        ("a*c", "ab/c", False),
        ("[a-", "a", False),
        ("[]a]", "a", False),
        ("\\*", "*", True),
        ("[z-a]", "m", False),
    ],
)
def test_go_path_match(pattern: str, name: str, expected: bool) -> None:
    assert go_path_match(pattern, name) is expected


def test_parse_url_rejects_control_characters() -> None:
    with pytest.raises(ValueError, match="control character"):
        parse_url("https://registry.io/\n")
