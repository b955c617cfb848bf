"""containerd hosts.toml semantics: mirrors, capabilities, TLS files, defaults and errors."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from kubelet_sim.core.reference import parse_normalized
from kubelet_sim.errors import ConfigError, RegistryNotFoundError
from kubelet_sim.registry.client import HostOutcome, RegistryClient
from kubelet_sim.registry.hosts import (
    DEFAULT_CAPABILITIES,
    RegistryHost,
    host_directory,
    hosts_for,
    is_localhost,
    registry_hosts,
)
from kubelet_sim.registry.manifests import Descriptor
from kubelet_sim.registry.transport import Transport, TransportSettings

ALL = DEFAULT_CAPABILITIES
PULL = frozenset({"pull"})
PULL_RESOLVE = frozenset({"pull", "resolve"})


def write_hosts(root: Path, folder: str, text: str) -> Path:
    directory = root / folder
    directory.mkdir(parents=True, exist_ok=True)
    file = directory / "hosts.toml"
    file.write_text(text)
    return directory


# --- defaults without configuration (hosts_test.go: TestDefaultHosts, TestHTTPFallback) -----


@pytest.mark.parametrize(
    ("registry", "expected"),
    [
        pytest.param("docker.io", RegistryHost("registry-1.docker.io"), id="docker.io"),
        pytest.param("quay.io", RegistryHost("quay.io"), id="quay.io"),
        pytest.param("example.com:5000", RegistryHost("example.com:5000"), id="port-not-loopback"),
        pytest.param(
            "localhost:5000",
            RegistryHost("localhost:5000", skip_verify=True, allow_http_fallback=True),
            id="localhost-port",
        ),
        pytest.param(
            "127.0.0.254:5000",
            RegistryHost("127.0.0.254:5000", skip_verify=True, allow_http_fallback=True),
            id="127/8-port",
        ),
        pytest.param(
            "[::1]:5000",
            RegistryHost("[::1]:5000", skip_verify=True, allow_http_fallback=True),
            id="ipv6-loopback-port",
        ),
        pytest.param("localhost", RegistryHost("localhost", skip_verify=True), id="localhost"),
        pytest.param("127.0.0.254", RegistryHost("127.0.0.254", skip_verify=True), id="127/8"),
        pytest.param(
            "localhost:443", RegistryHost("localhost:443", skip_verify=True), id="localhost-443"
        ),
        pytest.param(
            "localhost:80", RegistryHost("localhost:80", scheme="http"), id="localhost-80"
        ),
    ],
)
def test_default_hosts(registry: str, expected: RegistryHost, tmp_path: Path) -> None:
    assert registry_hosts(registry, None) == [expected]
    assert registry_hosts(registry, tmp_path / "missing") == [expected]
    assert registry_hosts(registry, tmp_path) == [expected]  # no folder for it


def test_base_url() -> None:
    assert RegistryHost("registry-1.docker.io").base_url() == "https://registry-1.docker.io/v2"
    assert RegistryHost("m:8080", scheme="http", path="").base_url() == "http://m:8080"


# --- hosts.toml examples (hosts_test.go: TestParseHostFile, docs/hosts.md) -------------------

CONTAINERD_TEST_TOML = """
server = "https://test-default.registry"
ca = "/etc/path/default"
[header]
  x-custom-1 = "custom header"

[host."https://mirror.registry"]
  capabilities = ["pull"]
  ca = "/etc/certs/mirror.pem"
  skip_verify = false
  [host."https://mirror.registry".header]
    x-custom-2 = ["value1", "value2"]

[host."https://mirror-bak.registry/us"]
  capabilities = ["pull"]
  skip_verify = true

[host."http://mirror.registry"]
  capabilities = ["pull"]

[host."https://test-1.registry"]
  capabilities = ["pull", "resolve", "push"]
  ca = ["/etc/certs/test-1-ca.pem", "/etc/certs/special.pem"]
  client = [["/etc/certs/client.cert", "/etc/certs/client.key"],["/etc/certs/client.pem", ""]]

[host."https://test-2.registry"]
  client = "/etc/certs/client.pem"

[host."https://test-3.registry"]
  client = ["/etc/certs/client-1.pem", "/etc/certs/client-2.pem"]

[host."https://noncompliantmirror.registry/v2/namespaceprefix"]
  capabilities = ["pull"]
  override_path = true

[host."https://noprefixnoncompliant.registry"]
  override_path = true

[host."https://onlyheader.registry".header]
  x-custom-1 = "justaheader"

[host."https://dial-timeout.registry"]
  dial_timeout = "3s"
"""

E = Path("/etc/certs")
CONTAINERD_TEST_EXPECTED = [
    RegistryHost(
        "mirror.registry",
        capabilities=PULL,
        ca_files=(E / "mirror.pem",),
        headers=(("x-custom-2", "value1"), ("x-custom-2", "value2")),
    ),
    RegistryHost("mirror-bak.registry", path="/us/v2", capabilities=PULL, skip_verify=True),
    RegistryHost("mirror.registry", scheme="http", capabilities=PULL),
    RegistryHost(
        "test-1.registry",
        ca_files=(E / "test-1-ca.pem", E / "special.pem"),
        client_certs=((E / "client.cert", E / "client.key"), (E / "client.pem", None)),
    ),
    RegistryHost("test-2.registry", client_certs=((E / "client.pem", None),)),
    RegistryHost(
        "test-3.registry", client_certs=((E / "client-1.pem", None), (E / "client-2.pem", None))
    ),
    RegistryHost(
        "noncompliantmirror.registry",
        path="/v2/namespaceprefix",
        capabilities=PULL,
        override_path=True,
    ),
    RegistryHost("noprefixnoncompliant.registry", path="", override_path=True),
    RegistryHost("onlyheader.registry", headers=(("x-custom-1", "justaheader"),)),
    RegistryHost("dial-timeout.registry", dial_timeout=3.0),
    RegistryHost(
        "test-default.registry",
        ca_files=(Path("/etc/path/default"),),
        headers=(("x-custom-1", "custom header"),),
    ),
]


def test_containerd_parse_host_file(tmp_path: Path) -> None:
    write_hosts(tmp_path, "test.registry", CONTAINERD_TEST_TOML)
    hosts = registry_hosts("test.registry", tmp_path)
    assert hosts == CONTAINERD_TEST_EXPECTED
    assert [h.headers for h in hosts] == [h.headers for h in CONTAINERD_TEST_EXPECTED]
    assert hosts[-1].base_url() == "https://test-default.registry/v2"
    assert hosts[6].base_url() == "https://noncompliantmirror.registry/v2/namespaceprefix"
    assert hosts[7].base_url() == "https://noprefixnoncompliant.registry"


DOCS_CASES = [
    (
        "docker.io",
        "docker.io",
        'server = "https://docker.io"\n'
        '[host."https://registry-1.docker.io"]\n  capabilities = ["pull", "resolve"]\n',
        [
            RegistryHost("registry-1.docker.io", capabilities=PULL_RESOLVE),
            RegistryHost("docker.io"),
        ],
        "simple-docker",
    ),
    (
        "docker.io",
        "docker.io",
        'server = "https://registry-1.docker.io"\n'
        '[host."https://public-mirror.example.com"]\n  capabilities = ["pull"]\n'
        '[host."https://docker-mirror.internal"]\n  capabilities = ["pull", "resolve"]\n'
        '  ca = "docker-mirror.crt"\n',
        [
            RegistryHost("public-mirror.example.com", capabilities=PULL),
            RegistryHost(
                "docker-mirror.internal",
                capabilities=PULL_RESOLVE,
                ca_files=(Path("<dir>/docker-mirror.crt"),),
            ),
            RegistryHost("registry-1.docker.io"),
        ],
        "local-mirror-relative-ca",
    ),
    (
        "ghcr.io",
        "_default",
        '[host."https://registry.example.com"]\n  capabilities = ["pull", "resolve"]\n',
        [RegistryHost("registry.example.com", capabilities=PULL_RESOLVE), RegistryHost("ghcr.io")],
        "default-folder-mirror-then-upstream",
    ),
    (
        "ghcr.io",
        "_default",
        'server = "https://registry.example.com"\n',
        [RegistryHost("registry.example.com")],
        "default-folder-mirror-only",
    ),
    (
        "docker.io",
        "docker.io",
        'server = "https://registry-1.docker.io"\n'
        '[host."http://192.168.31.250:5000"]\n  capabilities = ["pull", "resolve", "push"]\n'
        "  skip_verify = true\n",
        [
            RegistryHost("192.168.31.250:5000", skip_verify=True, allow_http_fallback=True),
            RegistryHost("registry-1.docker.io"),
        ],
        "bypass-tls-http-mirror-tries-https-first",
    ),
    (
        "docker.io",
        "docker.io",
        '[host."https://mirror.example"]\n  capabilities = ["pull"]\n',
        [RegistryHost("mirror.example", capabilities=PULL), RegistryHost("registry-1.docker.io")],
        "docker.io-upstream-appended",
    ),
    (
        "localhost:5000",
        "localhost:5000",
        '[host."http://mirror.local:8080"]\n  capabilities = ["pull"]\n',
        [
            RegistryHost("mirror.local:8080", scheme="http", capabilities=PULL),
            RegistryHost("localhost:5000", skip_verify=True, allow_http_fallback=True),
        ],
        "loopback-upstream-after-plain-http-mirror",
    ),
    (
        "my.registry",
        "my.registry",
        'ca = "ca.pem"\nskip_verify = false\n',
        [RegistryHost("my.registry", ca_files=(Path("<dir>/ca.pem"),))],
        "root-settings-apply-to-defaulted-upstream",
    ),
    (
        "my.registry",
        "my.registry",
        'server = "http://my.registry:80"\nskip_verify = true\n',
        [RegistryHost("my.registry:80", scheme="http", skip_verify=True)],
        "http-port-80-stays-http",
    ),
    (
        "my.registry",
        "my.registry",
        'server = "http://my.registry:5000"\nskip_verify = false\n',
        [RegistryHost("my.registry:5000", allow_http_fallback=True)],
        "explicit-skip-verify-false-still-means-tls",
    ),
    (
        "my.registry",
        "my.registry",
        'server = "my.registry:5000/"\n',
        [RegistryHost("my.registry:5000")],
        "server-without-scheme-and-trailing-slash",
    ),
    (
        "my.registry",
        "my.registry",
        '[host."https://user:secret@mirror.example/v2/"]\n',
        [RegistryHost("mirror.example"), RegistryHost("my.registry")],
        "userinfo-dropped-v2-kept",
    ),
    (
        "my.registry",
        "my.registry",
        '[host."https://m.example"]\n  capabilities = []\n[host."https://r.example"]\n'
        '  capabilities = ["PULL", "referrers"]\n',
        [
            RegistryHost("m.example"),
            RegistryHost("r.example", capabilities=frozenset({"pull", "referrers"})),
            RegistryHost("my.registry"),
        ],
        "empty-capabilities-default-and-case",
    ),
    (
        "my.registry",
        "my.registry",
        '[host."https://m.example"]\n  client = [["certs/c.pem", "/abs/k.pem"], "both.pem"]\n'
        '  dial_timeout = "1m30s"\n  proxy = "http://ignored:8080"\n',
        [
            RegistryHost(
                "m.example",
                client_certs=(
                    (Path("<dir>/certs/c.pem"), Path("/abs/k.pem")),
                    (Path("<dir>/both.pem"), None),
                ),
                dial_timeout=90.0,
            ),
            RegistryHost("my.registry"),
        ],
        "relative-client-pairs-and-ignored-keys",
    ),
]


def _resolve_dir(host: RegistryHost, directory: Path) -> RegistryHost:
    def fix(p: Path) -> Path:
        return directory / p.relative_to("<dir>") if p.parts and p.parts[0] == "<dir>" else p

    return replace(
        host,
        ca_files=tuple(fix(p) for p in host.ca_files),
        client_certs=tuple((fix(c), fix(k) if k else None) for c, k in host.client_certs),
    )


@pytest.mark.parametrize(
    ("registry", "folder", "text", "expected"),
    [pytest.param(r, f, t, e, id=i) for r, f, t, e, i in DOCS_CASES],
)
def test_hosts_toml_examples(
    registry: str, folder: str, text: str, expected: list[RegistryHost], tmp_path: Path
) -> None:
    directory = write_hosts(tmp_path, folder, text)
    assert registry_hosts(registry, tmp_path) == [_resolve_dir(h, directory) for h in expected]


# --- folder lookup and Docker certs.d layout -------------------------------------------------


@pytest.mark.parametrize(
    ("folders", "chosen"),
    [
        pytest.param(
            ["myregistry.io_5000_", "myregistry.io:5000", "_default"],
            "myregistry.io_5000_",
            id="underscore-first",
        ),
        pytest.param(["myregistry.io:5000", "_default"], "myregistry.io:5000", id="colon-second"),
        pytest.param(["_default", "myregistry.io"], "_default", id="default-last-port-matters"),
    ],
)
def test_folder_lookup_order(folders: list[str], chosen: str, tmp_path: Path) -> None:
    for name in folders:
        write_hosts(tmp_path, name, f'server = "https://{name.replace(":", "-")}.example"\n')
    hosts = registry_hosts("myregistry.io:5000", tmp_path)
    assert [h.host for h in hosts] == [f"{chosen.replace(':', '-')}.example"]


def test_host_directory() -> None:
    assert host_directory("myregistry.io:5000") == "myregistry.io_5000_"
    assert host_directory("docker.io") == "docker.io"


@pytest.mark.parametrize(
    "hosts_toml", [pytest.param(None, id="no-hosts-toml"), pytest.param("", id="empty-hosts-toml")]
)
def test_docker_cert_files_layout(hosts_toml: str | None, tmp_path: Path) -> None:
    directory = tmp_path / "localhost:5000"
    directory.mkdir()
    for name in ("ca.crt", "b.crt", "client.cert", "client.key", "solo.cert", "notes.txt"):
        (directory / name).write_text("x")
    (directory / "sub.crt").mkdir()
    if hosts_toml is not None:
        (directory / "hosts.toml").write_text(hosts_toml)
    assert registry_hosts("localhost:5000", tmp_path) == [
        RegistryHost(
            "localhost:5000",
            ca_files=(directory / "b.crt", directory / "ca.crt"),
            client_certs=(
                (directory / "client.cert", directory / "client.key"),
                (directory / "solo.cert", None),
            ),
            skip_verify=True,
            allow_http_fallback=True,
        )
    ]


def test_hosts_for_keeps_order(tmp_path: Path) -> None:
    write_hosts(
        tmp_path,
        "docker.io",
        '[host."https://a"]\n  capabilities = ["pull"]\n'
        '[host."https://b"]\n  capabilities = ["pull", "resolve"]\n',
    )
    hosts = registry_hosts("docker.io", tmp_path)
    assert [h.host for h in hosts_for("pull", hosts)] == ["a", "b", "registry-1.docker.io"]
    assert [h.host for h in hosts_for("resolve", hosts)] == ["b", "registry-1.docker.io"]
    assert [h.host for h in hosts_for("push", hosts)] == ["registry-1.docker.io"]


def test_header_values_stay_out_of_repr(tmp_path: Path) -> None:
    write_hosts(tmp_path, "r.example", '[header]\n  Authorization = "Bearer s3cr3t"\n')
    (host,) = registry_hosts("r.example", tmp_path)
    assert host.headers == (("Authorization", "Bearer s3cr3t"),)
    assert "s3cr3t" not in repr(host)


# --- malformed files name the file and the key -----------------------------------------------

MALFORMED = [
    (
        '[host."https://m"]\n  capabilities = ["pull", "fetch"]\n',
        'host."https://m".capabilities',
        "fetch",
    ),
    ('capabilities = "pull"\n', "capabilities", "list of strings"),
    ('[host."https://m"]\n  ca = 5\n', 'host."https://m".ca', "int"),
    ('ca = ""\n', "ca", "empty path"),
    ('[host."https://m"]\n  client = [["only-cert.pem"]]\n', 'host."https://m".client', "2 paths"),
    ("client = [1]\n", "client", "int"),
    ("client = true\n", "client", "bool"),
    ('skip_verify = "yes"\n', "skip_verify", "true or false"),
    (
        '[host."https://m"]\n  override_path = 1\n',
        'host."https://m".override_path',
        "true or false",
    ),
    ("[header]\n  x-one = 1\n", "header.x-one", "int"),
    ('header = "x"\n', "header", "table"),
    (
        '[host."https://m".header]\n  x-two = "a\\nb"\n',
        'host."https://m".header.x-two',
        "line breaks",
    ),
    ("server = 5\n", "server", "string"),
    ('server = "ftp://x.example"\n', "server", "http(s) URL"),
    ('server = "https://"\n', "server", "http(s) URL"),
    ('server = "https://m.example:port"\n', "server", "http(s) URL"),
    ('[host."ftp://m"]\n', 'host."ftp://m"', "http(s) URL"),
    ('host = "https://m"\n', "host", "tables"),
    ('[host]\n  "https://m" = 3\n', 'host."https://m"', "table"),
    (
        '[host."https://m"]\n  dial_timeout = "3 seconds"\n',
        'host."https://m".dial_timeout',
        "unknown unit",
    ),
    ('dial_timeout = "-1s"\n', "dial_timeout", "negative"),
    ('dial_timeout = "3"\n', "dial_timeout", "missing unit"),
    ("dial_timeout = 3\n", "dial_timeout", "duration string"),
    ("server = \n", None, "invalid TOML"),
    ('server = "http://[::1"\n', "server", "not an http(s) URL"),
    ('[host."http://[::1"]\n  capabilities = ["pull"]\n', 'host."http://[::1"', "not an http"),
    ("x = " + "[" * 3000 + "]" * 3000 + "\n", None, "invalid TOML: nested too deeply"),
]


@pytest.mark.parametrize(
    ("text", "field", "message"), [pytest.param(t, f, m, id=f"{f}:{m}") for t, f, m in MALFORMED]
)
def test_malformed_hosts_toml(text: str, field: str | None, message: str, tmp_path: Path) -> None:
    directory = write_hosts(tmp_path, "bad.example", text)
    with pytest.raises(ConfigError) as info:
        registry_hosts("bad.example", tmp_path)
    assert info.value.file == str(directory / "hosts.toml")
    assert info.value.field == field
    assert message in info.value.message
    assert str(directory / "hosts.toml") in str(info.value)


def test_errors_never_echo_header_values_or_url_credentials(tmp_path: Path) -> None:
    write_hosts(tmp_path, "a.example", '[header]\n  Authorization = ["Bearer s3cr3t\\nX: y"]\n')
    with pytest.raises(ConfigError) as info:
        registry_hosts("a.example", tmp_path)
    assert "s3cr3t" not in str(info.value)
    write_hosts(tmp_path, "b.example", '[host."https://user:hunter2@m.example"]\n  ca = 1\n')
    with pytest.raises(ConfigError) as info:
        registry_hosts("b.example", tmp_path)
    assert info.value.field == 'host."https://m.example".ca'
    assert "hunter2" not in str(info.value)


def test_non_utf8_hosts_toml(tmp_path: Path) -> None:
    directory = tmp_path / "x.example"
    directory.mkdir()
    (directory / "hosts.toml").write_bytes(b'server = "\xff"\n')
    with pytest.raises(ConfigError, match="UTF-8"):
        registry_hosts("x.example", tmp_path)


@pytest.mark.parametrize("registry", ["../etc", "a/b", "..", ""])
def test_registry_names_cannot_escape_hosts_dir(registry: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        registry_hosts(registry, tmp_path)
    assert info.value.field == "registry"


# --- helpers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("3s", 3.0, id="3s"),
        pytest.param("500ms", 0.5, id="500ms"),
        pytest.param("1m30s", 90.0, id="1m30s"),
        pytest.param("0", 0.0, id="zero"),
    ],
)
def test_dial_timeout_go_durations(text: str, seconds: float, tmp_path: Path) -> None:
    write_hosts(tmp_path, "r.example", f'dial_timeout = "{text}"\n')
    (host,) = registry_hosts("r.example", tmp_path)
    assert host.dial_timeout == pytest.approx(seconds)


@pytest.mark.anyio
async def test_dial_timeout_is_the_connect_timeout_of_that_host_only(tmp_path: Path) -> None:
    # docs/hosts.md: "dial_timeout ... a shorter timeout speeds up the fallback to the next host".
    write_hosts(
        tmp_path,
        "r.example",
        'server = "https://r.example"\n[host."https://mirror.example"]\n  dial_timeout = "2s"\n',
    )
    connect: dict[str, float | None] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        connect.setdefault(request.url.host, request.extensions["timeout"]["connect"])
        return httpx.Response(404)

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler), timeout=30.0)
    async with RegistryClient(Transport(http=http), hosts_dir=tmp_path) as client:
        with pytest.raises(RegistryNotFoundError):
            await client.resolve(parse_normalized("r.example/app:v1"))
    assert connect == {"mirror.example": 2.0, "r.example": 30.0}


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        pytest.param("localhost", True, id="localhost"),
        pytest.param("LOCALHOST:5000", True, id="localhost-port-case"),
        pytest.param("127.0.0.1", True, id="127.0.0.1"),
        pytest.param("127.255.0.9:80", True, id="127/8"),
        pytest.param("[::1]:5000", True, id="ipv6-port"),
        pytest.param("::1", True, id="ipv6"),
        pytest.param("10.0.0.1:5000", False, id="private"),
        pytest.param("localhost.example.com", False, id="suffix"),
        pytest.param("docker.io", False, id="docker.io"),
    ],
)
def test_is_localhost(host: str, expected: bool) -> None:
    assert is_localhost(host) is expected


@pytest.mark.anyio
async def test_the_observer_is_told_of_every_host_tried_with_its_outcome(tmp_path: Path) -> None:
    # What `explain image` reports: the mirror that failed, then the upstream that answered.
    write_hosts(
        tmp_path, "r.example", 'server = "https://r.example"\n[host."https://mirror.example"]\n'
    )
    digest = "sha256:" + "a" * 64

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "mirror.example":
            return httpx.Response(503)
        if request.method == "HEAD" and "/blobs/" in request.url.path:
            return httpx.Response(200, headers={"Content-Length": "1234"})
        return httpx.Response(
            200,
            headers={
                "Docker-Content-Digest": digest,
                "Content-Type": "application/vnd.oci.image.manifest.v1+json",
                "Content-Length": "7",
            },
        )

    seen: list[HostOutcome] = []
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    settings = TransportSettings(backoff_initial=0.0, backoff_max=0.0, max_attempts=1)
    async with RegistryClient(
        Transport(http=http, settings=settings), hosts_dir=tmp_path, observer=seen.append
    ) as client:
        ref = parse_normalized("r.example/app:v1")
        desc = await client.resolve(ref)
        size = await client.blob_size(ref, Descriptor("application/octet-stream", desc.digest, 1))
    assert size == 1234
    assert [(o.what, o.host.host, o.upstream) for o in seen] == [
        ("resolve", "mirror.example", False),
        ("resolve", "r.example", True),
        ("layer", "mirror.example", False),
        ("layer", "r.example", True),
    ]
    assert [o.error is None for o in seen] == [False, True, False, True]
    assert seen[0].error is not None
    assert seen[0].error.status == 503
