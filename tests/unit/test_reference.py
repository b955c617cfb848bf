"""Image references: distribution/reference v0.6.0 cases (normalize_test.go, reference_test.go),
the cases in kubelet-images.md §1, the kubelet's applyDefaultImageTag, and grammar properties."""

from __future__ import annotations

import pytest
from hypothesis import given, reject
from hypothesis import strategies as st

from kubelet_sim.core.digest import Digest
from kubelet_sim.core.reference import (
    ANCHORED_IDENTIFIER,
    ANCHORED_NAME,
    ANCHORED_REFERENCE,
    ANCHORED_TAG,
    REPOSITORY_NAME_TOTAL_LENGTH_MAX,
    ImageReference,
    apply_default_image_tag,
    go_quote,
    image_name_error_text,
    is_normalized,
    parse,
    parse_docker_ref,
    parse_image_name,
    parse_named,
    parse_normalized,
)
from kubelet_sim.errors import InvalidImageNameError, PullReason

F64 = "f" * 64
D256 = "sha256:" + F64
D384 = "sha384:" + "e" * 96
D512 = "sha512:" + "f" * 128
BUSY = "sha256:86e0e091d0da6bde2456dbb48306f3956bbeb2eae1b5b9a43045843f69fe4aaa"
REDIS = "sha256:dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c"
HEX64 = "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a"
SONG = "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev"
LONG_NS = "_".join(["this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255"] * 4)
A255 = "a/" * 127 + "a"
FMT = "invalid reference format"
UPPER = "repository name must be lowercase"
TOO_LONG = "repository name must not be more than 255 characters"


def lower_err(remote: str) -> str:
    return f"invalid reference format: repository name ({remote}) must be lowercase"


# (input, domain, path, tag, digest, familiar)
def V(
    value: str,
    domain: str,
    path: str,
    tag: str | None = None,
    digest: str | None = None,
    familiar: str | None = None,
) -> object:
    """One valid case; ``familiar`` defaults to the input itself."""
    row = (value, domain, path, tag, digest, value if familiar is None else familiar)
    return pytest.param(*row, id=repr(value)[:60])


HUB, LIB = "docker.io", "library/"
VALID = [
    V("busybox", HUB, LIB + "busybox"),
    V("busybox:1.32.0", HUB, LIB + "busybox", "1.32.0"),
    V(
        "docker.io/library/busybox:1.32.0",
        HUB,
        LIB + "busybox",
        "1.32.0",
        familiar="busybox:1.32.0",
    ),
    V("index.docker.io/library/busybox", HUB, LIB + "busybox", familiar="busybox"),
    V("docker/docker", HUB, "docker/docker"),
    V("library/debian", HUB, LIB + "debian", familiar="debian"),
    V("debian", HUB, LIB + "debian"),
    V("docker.io/docker/docker", HUB, "docker/docker", familiar="docker/docker"),
    V("docker.io/library/debian", HUB, LIB + "debian", familiar="debian"),
    V("docker.io/debian", HUB, LIB + "debian", familiar="debian"),
    V("index.docker.io/docker/docker", HUB, "docker/docker", familiar="docker/docker"),
    V("index.docker.io/library/debian", HUB, LIB + "debian", familiar="debian"),
    V("index.docker.io/debian", HUB, LIB + "debian", familiar="debian"),
    V("127.0.0.1:5000/docker/docker", "127.0.0.1:5000", "docker/docker"),
    V("127.0.0.1:5000/library/debian", "127.0.0.1:5000", LIB + "debian"),
    V("127.0.0.1:5000/debian", "127.0.0.1:5000", "debian"),
    V("192.168.0.1", HUB, LIB + "192.168.0.1"),
    V("192.168.0.1:80", HUB, LIB + "192.168.0.1", "80"),
    V("192.168.0.1:8/debian", "192.168.0.1:8", "debian"),
    V("192.168.0.2:25000/debian", "192.168.0.2:25000", "debian"),
    V(SONG, HUB, LIB + SONG),
    V("[fc00::1]:5000/docker", "[fc00::1]:5000", "docker"),
    V("[fc00::1]:5000/docker/docker", "[fc00::1]:5000", "docker/docker"),
    V("[fc00:1:2:3:4:5:6:7]:5000/library/debian", "[fc00:1:2:3:4:5:6:7]:5000", LIB + "debian"),
    V("[::1]:5000/foo", "[::1]:5000", "foo"),
    V("[2001:db8::1]/repo", "[2001:db8::1]", "repo"),
    V("[2001:db8::]:5000/repo:tag@" + D256, "[2001:db8::]:5000", "repo", "tag", D256),
    # A 64-hex name is fine with a domain; its familiar form is not (see test below).
    V("docker.io/" + HEX64, HUB, LIB + HEX64, familiar=HEX64),
    V("Docker/docker", "Docker", "docker"),
    V("DOCKER/docker", "DOCKER", "docker"),
    V("Foo/bar", "Foo", "bar"),
    V("FOO/bar", "FOO", "bar"),
    V("docker-rules/docker", HUB, "docker-rules/docker"),
    V("docker---rules/docker", HUB, "docker---rules/docker"),
    V("doc/docker", HUB, "doc/docker"),
    V("d/docker", HUB, "d/docker"),
    V("jess/t", HUB, "jess/t"),
    V("dock__er/docker", HUB, "dock__er/docker"),
    V("fooo/bar", HUB, "fooo/bar"),
    V("index.docker.io/fooo/bar", HUB, "fooo/bar", familiar="fooo/bar"),
    V("nonlibrary/ubuntu", HUB, "nonlibrary/ubuntu"),
    V("other/library", HUB, "other/library"),
    V("127.0.0.1:8000/private/moonbase", "127.0.0.1:8000", "private/moonbase"),
    V("example.com/privatebase", "example.com", "privatebase"),
    V("example.com:8000/private/moonbase", "example.com:8000", "private/moonbase"),
    V(
        "index.docker.io/library/ubuntu-12.04-base",
        HUB,
        LIB + "ubuntu-12.04-base",
        familiar="ubuntu-12.04-base",
    ),
    V("library/foo/bar", HUB, "library/foo/bar"),
    V("store/foo/bar", HUB, "store/foo/bar"),
    V("test.com/foo", "test.com", "foo"),
    V("test_com/foo", HUB, "test_com/foo"),
    V("test.com:8080/foo", "test.com:8080", "foo"),
    V("test-com:8080/foo", "test-com:8080", "foo"),
    V("xn--n3h.com:18080/foo", "xn--n3h.com:18080", "foo"),
    V("docker.io/library/foo/bar", HUB, "library/foo/bar", familiar="library/foo/bar"),
    V("busybox:latest@" + BUSY, HUB, LIB + "busybox", "latest", BUSY),
    V("redis@" + REDIS, HUB, LIB + "redis", None, REDIS),
    V("dmcgowan/myapp:latest", HUB, "dmcgowan/myapp", "latest"),
    V(HEX64[:63], HUB, LIB + HEX64[:63]),
    V("dbcc1", HUB, LIB + "dbcc1"),
    # Names without "/" are always Docker Hub names (upstream FIXME), even host-like ones.
    V("localhost:5000", HUB, LIB + "localhost", "5000"),
    V("localhost", HUB, LIB + "localhost"),
    V("example.com", HUB, LIB + "example.com"),
    V("foo_bar.com:8080", HUB, LIB + "foo_bar.com", "8080"),
    V("localhost/foo", "localhost", "foo"),
    V("localhost:5000/foo:1", "localhost:5000", "foo", "1"),
    V("LOCALHOST/foo", "LOCALHOST", "foo"),
    V("index.docker.io:443/foo", "index.docker.io:443", "foo"),
    V("docker.io:5000/foo", "docker.io:5000", "foo"),
    V(
        "b.gcr.io/test.example.com/my-app:test.example.com",
        "b.gcr.io",
        "test.example.com/my-app",
        "test.example.com",
    ),
    V("xn--7o8h.com/myimage:xn--7o8h.com@" + D512, "xn--7o8h.com", "myimage", "xn--7o8h.com", D512),
    V(
        "sub-dom1.foo.com/bar/baz/quux:some-long-tag",
        "sub-dom1.foo.com",
        "bar/baz/quux",
        "some-long-tag",
    ),
    V("192.168.1.1:5000/repo:5050", "192.168.1.1:5000", "repo", "5050"),
    V("lowercase:Uppercase", HUB, LIB + "lowercase", "Uppercase"),
    V("busybox@" + D384, HUB, LIB + "busybox", None, D384),
    V("busybox:_x", HUB, LIB + "busybox", "_x"),
    V("busybox:" + "t" * 128, HUB, LIB + "busybox", "t" * 128),
    # The 255 limit counts the path only: the library/ prefix counts, the domain does not.
    V(A255 + ":tag-puts-this-over-max", HUB, A255, "tag-puts-this-over-max"),
    V("a" * 247, HUB, LIB + "a" * 247),
    V("example.com/" + "b" * 255, "example.com", "b" * 255),
    # The combined string is re-split by the name grammar: "a.b_c" is no domain, so none.
    V("a.b_c/foo", "", "a.b_c/foo"),
]


@pytest.mark.parametrize(("value", "domain", "path", "tag", "digest", "familiar"), VALID)
def test_parse_normalized_valid(
    value: str, domain: str, path: str, tag: str | None, digest: str | None, familiar: str
) -> None:
    ref = parse_normalized(value)
    assert (ref.domain, ref.path, ref.tag) == (domain, path, tag)
    assert ref.digest == (Digest.parse(digest) if digest else None)
    assert ref.name == (f"{domain}/{path}" if domain else path)
    assert ref.repository == path
    expected = ref.name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
    assert str(ref) == expected
    assert ref.familiar() == familiar
    assert ref.familiar_name() == familiar.split("@")[0].removesuffix(f":{tag}")


# (input, upstream message)
INVALID = [
    ("", FMT),
    (":justtag", FMT),
    ("@" + D256, FMT),
    ("https://github.com/docker/docker", FMT),
    ("docker/Docker", lower_err("docker/Docker")),
    ("docker.io/docker/Docker", lower_err("docker/Docker")),
    ("Uppercase:tag", lower_err("library/Uppercase")),
    ("ACTOKEY", lower_err("library/ACTOKEY")),
    ("Bad Name", lower_err("library/Bad Name")),
    ("test:5000/Uppercase/lowercase:tag", lower_err("Uppercase/lowercase")),
    ("repo@SHA256:" + F64, lower_err("library/repo@SHA256")),
    ("-docker", FMT),
    ("-docker/docker", FMT),
    ("-docker.io/docker/docker", FMT),
    ("docker///docker", FMT),
    ("docker.io/docker///docker", FMT),
    ("[fc00::1]", FMT),
    ("[fc00::1]:5000", FMT),
    ("fc00::1:5000/debian", FMT),
    ("[fe80::1%eth0]:5000/debian", FMT),
    ("[fe80::1%@invalidzone]:5000/repo", FMT),
    ("[2001:db8:3:4::192.0.2.33]:5000/debian", FMT),
    (HEX64, f"invalid repository name ({HEX64}), cannot specify 64-byte hexadecimal strings"),
    (F64, f"invalid repository name ({F64}), cannot specify 64-byte hexadecimal strings"),
    ("docker-/docker", FMT),
    ("-docker-/docker", FMT),
    ("____/____", FMT),
    ("_docker/_docker", FMT),
    ("dock..er/docker", FMT),
    ("dock_.er/docker", FMT),
    ("dock-.er/docker", FMT),
    ("docker/", FMT),
    ("localhost:5000/", FMT),
    ("aa/asdf$$^/aa", FMT),
    ("foo/bar:tag/baz", FMT),
    ("ko://github.com/tektoncd/operator/cmd/kubernetes/webhook", FMT),
    ("${REGISTRY_URL}/rp_status:latest", FMT),
    ("busybox\n", FMT),
    (" busybox", FMT),
    ("busybox:", FMT),
    ("busybox:.x", FMT),
    ("busybox:-x", FMT),
    ("busybox:" + "t" * 129, FMT),
    ("busybox@sha256:" + "f" * 31, FMT),
    (LONG_NS + "/docker", TOO_LONG),
    ("a/" * 128 + "a:tag", TOO_LONG),
    ("a" * 248, TOO_LONG),
    ("repo@sha256:" + "f" * 34, "invalid checksum digest length"),
    ("repo@sha384:" + F64, "invalid checksum digest length"),
    ("repo@sha512:" + F64, "invalid checksum digest length"),
    ("repo@sha256:" + "F" * 64, "invalid checksum digest format"),
    ("repo:tag@SHA256:" + F64, "invalid checksum digest format"),
    ("validname@invaliddigest:" + F64, "unsupported digest algorithm"),
    ("repo@md5:" + "f" * 32, "unsupported digest algorithm"),
    ("repo@sha256+b64:" + F64, "unsupported digest algorithm"),
    # Parse's own lowercase check: the lowered string is valid where the input is not.
    ("A_B/c", UPPER),
    ("busybox:\u212a", UPPER),  # KELVIN SIGN lowercases to ASCII "k"
    ("\u0130.com/x", UPPER),  # Go lowercases U+0130 to "i"
]


@pytest.mark.parametrize(
    ("value", "message"), [pytest.param(v, m, id=repr(v)[:60]) for v, m in INVALID]
)
def test_parse_normalized_invalid(value: str, message: str) -> None:
    with pytest.raises(InvalidImageNameError) as info:
        parse_normalized(value)
    assert info.value.message == message
    assert info.value.value == value
    assert info.value.reason is PullReason.INVALID_IMAGE_NAME
    assert not is_normalized(value)


# reference.Parse, no normalisation: (input, domain, path, tag, digest) or (input, error)
RAW = [
    ("test_com", "", "test_com", None, None),
    ("test.com:tag", "", "test.com", "tag", None),
    ("test.com:5000", "", "test.com", "5000", None),
    ("test.com/repo:tag", "test.com", "repo", "tag", None),
    ("test:5000/repo", "test:5000", "repo", None, None),
    ("test:5000/repo@" + D256, "test:5000", "repo", None, D256),
    ("test:5000/repo:tag@" + D256, "test:5000", "repo", "tag", D256),
    ("foo/foo_bar.com:8080", "foo", "foo_bar.com", "8080", None),
    ("192.168.1.1", "", "192.168.1.1", None, None),
    ("192.168.1.1:tag", "", "192.168.1.1", "tag", None),
    ("192.168.1.1/repo", "192.168.1.1", "repo", None, None),
    ("[2001:db8:1:2:3:4:5:6]/repo:tag", "[2001:db8:1:2:3:4:5:6]", "repo", "tag", None),
    ("[2001:db8::1]:5000/repo:tag@" + D256, "[2001:db8::1]:5000", "repo", "tag", D256),
    (A255 + ":tag-puts-this-over-max", "a", "a/" * 126 + "a", "tag-puts-this-over-max", None),
    # v0.6.0 counts the path only: v0.5.0 rejected this one (whole name 257 characters).
    ("a/" * 128 + "a:tag", "a", A255, "tag", None),
    ("example.com/" + "a" * 255 + ":tag", "example.com", "a" * 255, "tag", None),
]
RAW_INVALID = [
    ("", "repository name must have at least one component"),
    (":justtag", FMT),
    ("@" + D256, FMT),
    ("repo@sha256:" + "f" * 34, "invalid checksum digest length"),
    ("validname@invaliddigest:" + F64, "unsupported digest algorithm"),
    ("Uppercase:tag", UPPER),
    ("test:5000/Uppercase/lowercase:tag", UPPER),
    ("domain/" + "a" * 256 + ":tag", TOO_LONG),
    ("aa/asdf$$^/aa", FMT),
    ("[2001:db8::1]", FMT),
    ("[2001:db8::1]:5000", FMT),
    ("[2001:db8::1]:tag", FMT),
    ("[fe80::1%eth0]:5000/repo", FMT),
]


@pytest.mark.parametrize(
    ("value", "domain", "path", "tag", "digest"),
    [pytest.param(*case, id=case[0][:60]) for case in RAW],
)
def test_parse_raw(value: str, domain: str, path: str, tag: str | None, digest: str | None) -> None:
    ref = parse(value)
    assert (ref.domain, ref.path, ref.tag) == (domain, path, tag)
    assert (str(ref.digest) if ref.digest else None) == digest
    assert str(ref) == value


@pytest.mark.parametrize(
    ("value", "message"), [pytest.param(*c, id=c[0][:60]) for c in RAW_INVALID]
)
def test_parse_raw_invalid(value: str, message: str) -> None:
    with pytest.raises(InvalidImageNameError) as info:
        parse(value)
    assert (info.value.value, info.value.message) == (value, message)


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        pytest.param("busybox", "busybox:latest", id="untagged-not-normalised"),
        pytest.param("busybox:1.36", "busybox:1.36", id="tagged"),
        pytest.param("busybox:latest", "busybox:latest", id="latest"),
        pytest.param("busybox@" + D256, "busybox@" + D256, id="digest"),
        pytest.param("busybox:latest@" + D256, "busybox:latest@" + D256, id="tag-and-digest"),
        pytest.param("docker.io/library/busybox", "docker.io/library/busybox:latest", id="full"),
        pytest.param("index.docker.io/busybox", "index.docker.io/busybox:latest", id="legacy"),
        pytest.param("localhost:5000/foo", "localhost:5000/foo:latest", id="registry-port"),
        pytest.param("localhost:5000", "localhost:5000", id="port-is-a-tag"),
        pytest.param("[::1]:5000/foo", "[::1]:5000/foo:latest", id="ipv6"),
        pytest.param("Foo/bar", "Foo/bar:latest", id="uppercase-domain"),
    ],
)
def test_apply_default_image_tag(image: str, expected: str) -> None:
    assert apply_default_image_tag(image) == expected


@pytest.mark.parametrize("image", ["", "Bad Name", "busybox:", HEX64, "a" * 248])
def test_apply_default_image_tag_invalid(image: str) -> None:
    with pytest.raises(InvalidImageNameError) as info:
        apply_default_image_tag(image)
    assert info.value.value == image


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        pytest.param("busybox", ("docker.io/library/busybox", "latest", ""), id="default-tag"),
        pytest.param("busybox:1", ("docker.io/library/busybox", "1", ""), id="tag"),
        pytest.param("busybox@" + D256, ("docker.io/library/busybox", "", D256), id="digest"),
        pytest.param("a:1@" + D256, ("docker.io/library/a", "1", D256), id="both"),
    ],
)
def test_parse_image_name(image: str, expected: tuple[str, str, str]) -> None:
    assert parse_image_name(image) == expected


@pytest.mark.parametrize(
    ("image", "text"),
    [
        pytest.param(
            "ACTOKEY",
            'couldn\'t parse image name "ACTOKEY": ' + lower_err("library/ACTOKEY"),
            id="lowercase",
        ),
        pytest.param(
            "a\tb", 'couldn\'t parse image name "a\\tb": invalid reference format', id="tab"
        ),
    ],
)
def test_image_name_error_text(image: str, text: str) -> None:
    with pytest.raises(InvalidImageNameError) as info:
        parse_image_name(image)
    assert image_name_error_text(info.value) == text


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        pytest.param("busybox", '"busybox"', id="plain"),
        pytest.param('a"b\\c', '"a\\"b\\\\c"', id="escapes"),
        pytest.param("a\nb\x01", '"a\\nb\\x01"', id="control"),
        pytest.param("é\u200b", '"é\\u200b"', id="unicode"),
    ],
)
def test_go_quote(value: str, quoted: str) -> None:
    assert go_quote(value) == quoted


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("busybox", "docker.io/library/busybox:latest", id="default-tag"),
        pytest.param("busybox:1", "docker.io/library/busybox:1", id="tag"),
        pytest.param(
            "busybox:latest@" + D256, "docker.io/library/busybox@" + D256, id="digest-wins"
        ),
        pytest.param("busybox@" + D256, "docker.io/library/busybox@" + D256, id="digest"),
    ],
)
def test_parse_docker_ref(value: str, expected: str) -> None:
    assert str(parse_docker_ref(value)) == expected


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        pytest.param("docker.io/library/busybox:1", True, id="canonical"),
        pytest.param("example.com/a@" + D256, True, id="canonical-digest"),
        pytest.param("busybox", False, id="familiar"),
        pytest.param("docker.io/busybox", False, id="no-library"),
        pytest.param("index.docker.io/library/busybox", False, id="legacy-domain"),
    ],
)
def test_parse_named(value: str, ok: bool) -> None:
    if ok:
        assert str(parse_named(value)) == value
    else:
        with pytest.raises(InvalidImageNameError, match="repository name must be canonical"):
            parse_named(value)


@pytest.mark.parametrize(
    ("value", "defaulted", "identifier"),
    [
        pytest.param("busybox", "docker.io/library/busybox:latest", "latest", id="none"),
        pytest.param("busybox:1", "docker.io/library/busybox:1", "1", id="tag"),
        pytest.param("busybox@" + D256, "docker.io/library/busybox@" + D256, D256, id="digest"),
        pytest.param("busybox:1@" + D256, "docker.io/library/busybox:1@" + D256, D256, id="both"),
    ],
)
def test_with_default_tag_and_identifier(value: str, defaulted: str, identifier: str) -> None:
    ref = parse_normalized(value)
    assert str(ref.with_default_tag()) == defaulted
    assert ref.identifier == identifier
    assert str(ref.trimmed()) == ref.name


@pytest.mark.parametrize(
    ("domain", "path", "tag"),
    [
        pytest.param("bad_domain", "foo", None, id="domain"),
        pytest.param("docker.io", "Foo", None, id="path-uppercase"),
        pytest.param("docker.io", "a" * 256, None, id="path-too-long"),
        pytest.param("docker.io", "foo", "-bad", id="tag"),
    ],
)
def test_image_reference_validates_its_fields(domain: str, path: str, tag: str | None) -> None:
    with pytest.raises(InvalidImageNameError):
        ImageReference(domain, path, tag)


def test_familiar_forms_that_do_not_reparse_upstream() -> None:
    # FamiliarString is lossy in two corners, as upstream: a bare 64-hex name, and a Docker Hub
    # namespace that looks like a domain.
    with pytest.raises(InvalidImageNameError, match="64-byte hexadecimal"):
        parse_normalized(parse_normalized("docker.io/" + HEX64).familiar())
    ref = parse_normalized("docker.io/example.com/app")
    assert ref.familiar() == "example.com/app"
    assert parse_normalized(ref.familiar()).domain == "example.com"


# --- properties -----------------------------------------------------------------------------
_alnum = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=6)
_component = st.builds(
    lambda first, rest: first + "".join(s + a for s, a in rest),
    _alnum,
    st.lists(st.tuples(st.sampled_from([".", "_", "__", "-", "--"]), _alnum), max_size=3),
)
_path = st.lists(_component, min_size=1, max_size=4).map("/".join)
_label = st.from_regex(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,6}[a-zA-Z0-9])?", fullmatch=True)
_host = st.one_of(
    st.just("localhost"),
    st.lists(_label, min_size=2, max_size=3).map(".".join),
    st.from_regex(r"[A-Z][a-zA-Z0-9]{0,5}", fullmatch=True),
    st.from_regex(r"\[[a-fA-F0-9:]{1,12}\]", fullmatch=True),
    st.just("index.docker.io"),
    st.just("docker.io"),
)
_domain = st.one_of(
    st.none(),
    st.builds(
        lambda h, p: h + (f":{p}" if p is not None else ""),
        _host,
        st.none() | st.integers(0, 65535),
    ),
)
_tag = st.none() | st.from_regex(ANCHORED_TAG, fullmatch=True)
_digest = st.none() | st.sampled_from([("sha256", 64), ("sha384", 96), ("sha512", 128)]).flatmap(
    lambda a: st.text("0123456789abcdef", min_size=a[1], max_size=a[1]).map(lambda h: f"{a[0]}:{h}")
)
_structured = st.builds(
    lambda d, p, t, g: (f"{d}/" if d else "") + p + (f":{t}" if t else "") + (f"@{g}" if g else ""),
    _domain,
    _path,
    _tag,
    _digest,
)
_fuzz = st.text("abAB09:/@._-[]\u212a", max_size=24)
_any_input = st.one_of(_structured, _fuzz, st.from_regex(ANCHORED_REFERENCE, fullmatch=True))


def _parsed(value: str) -> ImageReference:
    try:
        return parse_normalized(value)
    except InvalidImageNameError:
        reject()


# The four round-trip properties share one draw: generating references from the grammar's regex
# is the slow part, so each of the examples (hypothesis' default 100, as each property had alone)
# is checked against all four.
@given(_any_input)
def test_property_reference_round_trips(value: str) -> None:
    ref = _parsed(value)
    _parse_str_parse_is_stable(ref)
    _normalised_name_matches_the_grammar(ref)
    _familiar_parses_back(ref)
    _runtime_image_parses_to_the_defaulted_reference(value, ref)


def _parse_str_parse_is_stable(ref: ImageReference) -> None:
    again = parse_normalized(str(ref))
    assert again == ref
    assert str(again) == str(ref)
    assert is_normalized(str(ref))


def _normalised_name_matches_the_grammar(ref: ImageReference) -> None:
    assert ANCHORED_REFERENCE.fullmatch(str(ref))
    name = ANCHORED_NAME.fullmatch(ref.name)
    assert name is not None
    assert (name.group(1) or "", name.group(2)) == (ref.domain, ref.path)
    assert len(ref.path) <= REPOSITORY_NAME_TOTAL_LENGTH_MAX
    assert ref.domain != "index.docker.io"
    if ref.domain == "docker.io":
        assert "/" in ref.path


def _familiar_parses_back(ref: ImageReference) -> None:
    familiar = ref.familiar()
    first, slash, _ = ref.familiar_name().partition("/")
    ambiguous = ANCHORED_IDENTIFIER.fullmatch(familiar) or (
        ref.domain == "docker.io" and slash and ("." in first or first == "localhost")
    )
    if not ambiguous:
        assert parse_normalized(familiar) == ref


def _runtime_image_parses_to_the_defaulted_reference(value: str, ref: ImageReference) -> None:
    runtime = apply_default_image_tag(value)
    assert parse_normalized(runtime) == ref.with_default_tag()
    assert runtime == value or runtime == value + ":latest"


@given(st.text(max_size=40))
def test_property_arbitrary_text_raises_only_invalid_image_name(value: str) -> None:
    failure: InvalidImageNameError | None = None
    try:
        ref = parse_normalized(value)
    except InvalidImageNameError as exc:
        failure = exc
    if failure is not None:
        assert failure.value == value
    else:
        assert parse_normalized(str(ref)) == ref
