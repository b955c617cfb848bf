"""The registry client against hostile loopback registries (kubelet_sim.testing.hostile).

Registries that accept TCP and never answer, drip a manifest, cut bodies short, reset, break the
chunked framing, answer 503 with a long Retry-After, refuse connections, and mirrors that do all of
that in front of a healthy upstream. Deadlines are injected (TransportSettings) so every test ends
in a second or two; ``benchmarks/hostile_registry.py`` measures the same with the defaults.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
import httpx
import pytest

from kubelet_sim.core.digest import Digest
from kubelet_sim.core.reference import ImageReference, parse_normalized
from kubelet_sim.core.sinks import BlobSink, MemorySink
from kubelet_sim.errors import (
    ManifestError,
    RegistryAuthError,
    RegistryError,
    RegistryNotFoundError,
    RegistryTransportError,
)
from kubelet_sim.registry import mediatypes as mt
from kubelet_sim.registry.client import RegistryClient
from kubelet_sim.registry.manifests import Descriptor
from kubelet_sim.registry.transport import RetryPolicy, Transport, TransportSettings
from kubelet_sim.sim.images import build_image
from kubelet_sim.testing.hostile import (
    Behaviour,
    answer,
    bad_chunking,
    drip,
    manifest_answer,
    never_answer,
    refusing_port,
    registry_of,
    reset,
    sequence,
    serve,
    truncate,
)

pytestmark = pytest.mark.anyio

IMAGE = build_image("hostile", "linux/amd64", (64, 64, 64))
FAST = TransportSettings(backoff_initial=0.01, backoff_max=0.05)


def client_for(settings: TransportSettings = FAST) -> RegistryClient:
    return RegistryClient(Transport(settings=settings))


def ref_on(host: str, tag: str = "v1") -> ImageReference:
    return parse_normalized(f"{host}/team/app:{tag}")


def elapsed_since(start: float) -> float:
    return anyio.current_time() - start


async def pull_all(client: RegistryClient, ref: ImageReference) -> list[MemorySink]:
    sinks: list[MemorySink] = []

    async def sink_for(desc: Descriptor) -> BlobSink:
        sink = MemorySink(desc.digest.algorithm)
        sinks.append(sink)
        return sink

    await client.pull(ref, sink_for)
    return sinks


# --- item 2: no answer, 503, refused -------------------------------------------------------


async def test_a_silent_host_gives_one_answerless_attempt_and_no_get_fallback() -> None:
    settings = TransportSettings(request_deadline=1.0)  # header timeout: the default 30 s
    async with serve(never_answer()) as server, client_for(settings) as client:
        start = anyio.current_time()
        with anyio.fail_after(10), pytest.raises(RegistryTransportError) as info:
            await client.resolve(ref_on(server.host))
    assert elapsed_since(start) < 1.5
    assert server.host in info.value.message
    assert "response headers" in info.value.message
    assert server.count("GET") == 0  # a HEAD that got no answer is not asked again as GET


async def test_a_silent_host_fails_at_the_header_timeout_and_is_not_retried() -> None:
    settings = TransportSettings(header_timeout=0.5, request_deadline=5.0)
    async with serve(never_answer()) as server, client_for(settings) as client:
        start = anyio.current_time()
        with anyio.fail_after(10), pytest.raises(RegistryTransportError) as info:
            await client.resolve_image(ref_on(server.host))
    assert elapsed_since(start) < 1.0
    assert info.value.message == (
        f"HEAD http://{server.host}/v2/team/app/manifests/v1: no answer from {server.host}: "
        "no response headers within 0.5s"
    )
    assert server.count() == 1


@pytest.mark.parametrize("retry_after", ["120", "Wed, 21 Oct 2099 07:28:00 GMT"])
async def test_a_503_with_a_long_retry_after_is_reported_as_a_503(retry_after: str) -> None:
    unavailable = answer(503, b"", {"Retry-After": retry_after})
    async with (
        serve(unavailable) as server,
        client_for(TransportSettings(request_deadline=2.0)) as client,
    ):
        start = anyio.current_time()
        with anyio.fail_after(10), pytest.raises(RegistryError) as info:
            await client.resolve(ref_on(server.host))
    assert elapsed_since(start) < 1.0
    assert not isinstance(info.value, RegistryTransportError)
    assert info.value.status == 503
    assert "no answer" not in str(info.value)
    assert "request deadline" in info.value.message  # why it stopped retrying


async def test_a_503_that_lasts_past_the_deadline_stays_a_503() -> None:
    unavailable = answer(503, b"", {"Retry-After": "1"})
    settings = TransportSettings(request_deadline=2.5, max_attempts=10)
    async with serve(unavailable) as server, client_for(settings) as client:
        with anyio.fail_after(10), pytest.raises(RegistryError) as info:
            await client.resolve(ref_on(server.host))
    assert info.value.status == 503
    assert server.count("HEAD") == 3  # at 0, 1 and 2 s; a retry at 3 s would pass the deadline


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_refused_connection_fails_at_once_in_gos_words() -> None:
    with refusing_port() as port:
        host = f"127.0.0.1:{port}"
        async with RegistryClient(Transport()) as client:  # default backoff: 0.5 s, 1 s, 2 s
            start = anyio.current_time()
            with anyio.fail_after(10), pytest.raises(RegistryTransportError) as info:
                await client.resolve_image(ref_on(host))
    assert elapsed_since(start) < 0.5
    assert info.value.message == (
        f"HEAD http://{host}/v2/team/app/manifests/v1: dial tcp {host}: connect: connection refused"
    )


# --- item 3: the request deadline covers manifest and config bodies ------------------------


async def test_a_dripping_manifest_is_cut_at_the_request_deadline() -> None:
    dripping = drip(IMAGE.manifest.data, interval=0.1, headers={"Content-Type": mt.OCI_MANIFEST})
    async with (
        serve(registry_of(IMAGE, manifest=dripping)) as server,
        client_for(TransportSettings(request_deadline=1.0)) as client,
    ):
        start = anyio.current_time()
        with anyio.fail_after(10), pytest.raises(RegistryTransportError) as info:
            await client.resolve_image(ref_on(server.host))
    assert elapsed_since(start) < 1.5
    assert info.value.message == (
        f"GET http://{server.host}/v2/team/app/manifests/{IMAGE.manifest.digest}: the body from "
        f"{server.host} was not complete within the 1s request deadline"
    )


async def test_a_dripping_config_is_cut_at_the_request_deadline() -> None:
    dripping = drip(IMAGE.config.data, interval=0.1)
    async with (
        serve(registry_of(IMAGE, config=dripping)) as server,
        client_for(TransportSettings(request_deadline=1.0)) as client,
    ):
        start = anyio.current_time()
        with anyio.fail_after(10), pytest.raises(RegistryTransportError, match="body") as info:
            await client.resolve_image(ref_on(server.host))
    assert elapsed_since(start) < 1.5
    assert str(IMAGE.config.digest) in info.value.message
    assert server.count("GET", str(IMAGE.config.digest)) == 1


async def test_a_slow_but_moving_layer_is_not_cut_by_the_request_deadline() -> None:
    layer = IMAGE.layers[0]
    slow = drip(layer.data, interval=0.02, chunk=4)  # 16 writes: about 0.3 s
    async with (
        serve(registry_of(IMAGE, layer=slow)) as server,
        client_for(TransportSettings(request_deadline=0.15)) as client,
    ):
        sink = MemorySink()
        await client.fetch_blob(ref_on(server.host), _descriptor(layer.data), sink)
    assert sink.data == layer.data


def _descriptor(data: bytes) -> Descriptor:
    return Descriptor(mt.OCI_LAYER_GZIP, Digest.from_bytes(data), len(data))


# --- item 7: broken manifest bodies are typed, retried on the last host, left on a mirror ----


BROKEN_BODIES = [
    pytest.param(truncate(IMAGE.manifest.data, keep=10), id="cut-short"),
    pytest.param(reset(b'HTTP/1.1 200 OK\r\nContent-Length: 900\r\n\r\n{"schema'), id="reset"),
    pytest.param(bad_chunking(), id="bad-chunking"),
]


@pytest.mark.parametrize("broken", BROKEN_BODIES)
async def test_a_broken_manifest_body_is_a_typed_error_after_a_retry(broken: Behaviour) -> None:
    desc = Descriptor(mt.OCI_MANIFEST, IMAGE.manifest.digest, IMAGE.manifest.size)
    settings = TransportSettings(backoff_initial=0.01, max_attempts=2, request_deadline=2.0)
    async with serve(registry_of(IMAGE, manifest=broken)) as server, client_for(settings) as client:
        with anyio.fail_after(10), pytest.raises(RegistryTransportError) as info:
            await client.fetch_manifest(ref_on(server.host), desc)
    assert info.value.message.startswith(
        f"reading manifest /team/app/manifests/{IMAGE.manifest.digest} from {server.host}: "
    )
    assert server.count("GET") == 2


@pytest.mark.parametrize("broken", BROKEN_BODIES)
async def test_a_manifest_that_breaks_once_is_fetched_again(broken: Behaviour) -> None:
    async with (
        serve(registry_of(IMAGE, manifest=sequence(broken, manifest_answer(IMAGE)))) as server,
        client_for() as client,
    ):
        with anyio.fail_after(10):
            by_digest = parse_normalized(f"{server.host}/team/app@{IMAGE.manifest.digest}")
            resolved = await client.resolve_image(by_digest)
    assert resolved.manifest.digest == IMAGE.manifest.digest


async def test_a_mirror_with_a_broken_body_is_left_for_the_upstream(tmp_path: Path) -> None:
    async with (
        serve(registry_of(IMAGE, manifest=truncate(IMAGE.manifest.data, keep=10))) as mirror,
        serve(registry_of(IMAGE)) as upstream,
    ):
        hosts = hosts_dir(tmp_path, upstream.host, mirror.host)
        async with RegistryClient(Transport(settings=FAST), hosts_dir=hosts) as client:
            with anyio.fail_after(10):
                resolved = await client.resolve_image(ref_on("registry.test"))
    assert resolved.manifest.digest == IMAGE.manifest.digest
    assert mirror.count("GET", "/manifests/") == 1


DEEP = b"[" * 100_000 + b"]" * 100_000


async def test_a_manifest_nested_100000_deep_is_a_manifest_error() -> None:
    body = (
        b'{"schemaVersion": 2, "mediaType": "'
        + mt.OCI_MANIFEST.encode()
        + b'", "x": '
        + DEEP
        + b"}"
    )
    desc = Descriptor(mt.OCI_MANIFEST, Digest.from_bytes(body), len(body))
    async with (
        serve(answer(200, body, {"Content-Type": mt.OCI_MANIFEST})) as server,
        client_for() as client,
    ):
        with pytest.raises(ManifestError, match="nested too deeply"):
            await client.fetch_manifest(ref_on(server.host), desc)


async def test_a_tag_whose_manifest_nests_100000_deep_is_a_manifest_error() -> None:
    # No Docker-Content-Digest: the tag is resolved by GET and hashing, then parsed.
    async with (
        serve(answer(200, DEEP, {"Content-Type": "application/json"})) as server,
        client_for() as client,
    ):
        with pytest.raises(ManifestError, match="nested too deeply"):
            await client.resolve_image(ref_on(server.host))


async def test_an_error_document_nested_100000_deep_keeps_its_status_type() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, content=DEEP[:30_000] + DEEP[-30_000:])

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    async with RegistryClient(Transport(settings=FAST, http=http)) as client:
        with pytest.raises(RegistryNotFoundError) as info:
            await client.resolve(parse_normalized("registry.test/team/app:v1"))
    assert (info.value.status, info.value.code) == (404, None)


# --- item 5: a mirror that refuses or fails is left at once --------------------------------


def hosts_dir(tmp_path: Path, upstream: str, *mirrors: str) -> Path:
    folder = tmp_path / "certs.d" / "registry.test"
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f'server = "http://{upstream}"']
    for mirror in mirrors:
        lines += [f'[host."http://{mirror}"]', '  capabilities = ["pull", "resolve"]']
    (folder / "hosts.toml").write_text("\n".join(lines) + "\n")
    return tmp_path / "certs.d"


ONE_PULL_REQUESTS = 6  # HEAD the tag, GET the manifest by digest, GET the config and 3 layers


async def test_a_dead_mirror_adds_no_time_to_a_pull(tmp_path: Path) -> None:
    with refusing_port() as port:
        async with serve(registry_of(IMAGE)) as upstream:
            hosts = hosts_dir(tmp_path, upstream.host, f"127.0.0.1:{port}")
            # The default backoff (0.5 s, 1 s, 2 s): none of it may be spent on the mirror.
            async with RegistryClient(Transport(), hosts_dir=hosts) as client:
                start = anyio.current_time()
                with anyio.fail_after(15):
                    sinks = await pull_all(client, ref_on("registry.test"))
    assert elapsed_since(start) < 1.0
    assert sorted(s.data or b"" for s in sinks) == sorted(layer.data for layer in IMAGE.layers)


async def test_a_503_mirror_is_asked_once_per_request(tmp_path: Path) -> None:
    async with (
        serve(answer(503, b"", {"Retry-After": "5"})) as mirror,
        serve(registry_of(IMAGE)) as upstream,
    ):
        hosts = hosts_dir(tmp_path, upstream.host, mirror.host)
        async with RegistryClient(Transport(), hosts_dir=hosts) as client:
            start = anyio.current_time()
            with anyio.fail_after(15):
                await pull_all(client, ref_on("registry.test"))
    assert elapsed_since(start) < 1.0
    assert mirror.count() == ONE_PULL_REQUESTS
    assert all("ns=registry.test" in r.path for r in mirror.requests)


async def test_a_silent_mirror_costs_one_header_timeout_per_request(tmp_path: Path) -> None:
    settings = TransportSettings(header_timeout=0.2)
    async with serve(never_answer()) as mirror, serve(registry_of(IMAGE)) as upstream:
        hosts = hosts_dir(tmp_path, upstream.host, mirror.host)
        async with RegistryClient(Transport(settings=settings), hosts_dir=hosts) as client:
            with anyio.fail_after(15):
                resolved = await client.resolve_image(ref_on("registry.test"))
    assert resolved.manifest.digest == IMAGE.manifest.digest
    assert mirror.count() == 3  # HEAD, manifest, config: once each, never retried


async def test_the_last_host_still_retries_a_503() -> None:
    flaky = sequence(answer(503), answer(503), manifest_answer(IMAGE))
    async with serve(registry_of(IMAGE, head=flaky)) as server, client_for() as client:
        resolved = await client.resolve_image(ref_on(server.host))
    assert resolved.manifest.digest == IMAGE.manifest.digest
    assert server.count("HEAD") == 3


# --- item 6: the most useful error across hosts --------------------------------------------


def _refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")


def _status(status: int) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(status)


PRIORITY_CASES = [
    # (mirror, upstream, expected type, expected status): transport < not found < other; the
    # first of the highest priority wins (containerd resolver.go firstErrPriority).
    ("401-then-tls-failure", _status(401), _refused, RegistryAuthError, 401),
    ("404-then-tls-failure", _status(404), _refused, RegistryNotFoundError, 404),
    ("tls-failure-then-404", _refused, _status(404), RegistryNotFoundError, 404),
    ("401-then-403", _status(401), _status(403), RegistryAuthError, 401),
    ("404-then-500", _status(404), _status(500), RegistryError, 500),
    ("500-then-404", _status(500), _status(404), RegistryError, 500),
]


@pytest.mark.parametrize(
    ("mirror", "upstream", "expected", "status"),
    [pytest.param(*case[1:], id=case[0]) for case in PRIORITY_CASES],
)
async def test_host_fallback_keeps_the_most_useful_error(
    tmp_path: Path,
    mirror: Callable[[httpx.Request], httpx.Response],
    upstream: Callable[[httpx.Request], httpx.Response],
    expected: type[RegistryError],
    status: int,
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return (mirror if request.url.host == "mirror.test" else upstream)(request)

    hosts = hosts_dir(tmp_path, "upstream.test", "mirror.test")
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    async with RegistryClient(Transport(settings=FAST, http=http), hosts_dir=hosts) as client:
        with pytest.raises(RegistryError) as info:
            await client.resolve_image(ref_on("registry.test"))
    assert type(info.value) is expected
    assert info.value.status == status


# --- containerd's retry policy (bench nodes' default) ---------------------------------------

CONTAINERD = TransportSettings(retry_policy=RetryPolicy.CONTAINERD, max_attempts=5)


async def test_containerd_repeats_a_503_once_and_not_the_same_503_again() -> None:
    twice = sequence(answer(503), answer(503), manifest_answer(IMAGE))
    async with serve(registry_of(IMAGE, head=twice)) as server, client_for(CONTAINERD) as client:
        with pytest.raises(RegistryError) as caught:
            await client.resolve_image(ref_on(server.host))
    assert caught.value.status == 503
    assert server.count("HEAD") == 2  # containerd: one repeat, then the same status ends it
    once = sequence(answer(503), manifest_answer(IMAGE))
    async with serve(registry_of(IMAGE, head=once)) as server, client_for(CONTAINERD) as client:
        resolved = await client.resolve_image(ref_on(server.host))
    assert resolved.manifest.digest == IMAGE.manifest.digest
    assert server.count("HEAD") == 2


async def test_containerd_retries_a_429_at_once_ignoring_retry_after() -> None:
    limited = answer(429, b"", {"Retry-After": "30"})
    flaky = sequence(limited, limited, limited, manifest_answer(IMAGE))
    async with serve(registry_of(IMAGE, head=flaky)) as server, client_for(CONTAINERD) as client:
        started = anyio.current_time()
        resolved = await client.resolve_image(ref_on(server.host))
    assert resolved.manifest.digest == IMAGE.manifest.digest
    assert server.count("HEAD") == 4
    assert elapsed_since(started) < 5  # no 30 s waits, no backoff


async def test_containerd_does_not_retry_a_502() -> None:
    async with serve(registry_of(IMAGE, head=answer(502))) as server, client_for(CONTAINERD) as c:
        with pytest.raises(RegistryError) as caught:
            await c.resolve_image(ref_on(server.host))
    assert caught.value.status == 502
    assert server.count("HEAD") == 1
