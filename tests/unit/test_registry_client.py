"""Registry client edge cases a real registry cannot produce on demand.

Scripted answers go through ``httpx.MockTransport``; requests routed by host, path or method go
through a ``respx.Router`` (every request must match a route).
"""

from __future__ import annotations

import itertools
import ssl
from collections.abc import AsyncIterator, Callable

import anyio
import httpx
import pytest
import respx
import trio.testing

from kubelet_sim.core.credentials import Credentials
from kubelet_sim.core.digest import Digest
from kubelet_sim.core.platforms import Platform, parse_platform
from kubelet_sim.core.reference import parse_normalized
from kubelet_sim.core.sinks import MemorySink
from kubelet_sim.errors import (
    DigestMismatchError,
    ManifestError,
    NoMatchingPlatformError,
    RegistryAuthError,
    RegistryError,
    RegistryNotFoundError,
    RegistryTransportError,
)
from kubelet_sim.registry import boundary
from kubelet_sim.registry import mediatypes as mt
from kubelet_sim.registry.auth import AuthManager
from kubelet_sim.registry.client import RegistryClient, for_each_child, run_limited
from kubelet_sim.registry.manifests import Descriptor, ImageManifest, parse_manifest
from kubelet_sim.registry.transport import Transport, TransportSettings, parse_retry_after
from kubelet_sim.sim.images import (
    Blob,
    Image,
    build_image,
    build_layer,
    canonical_json,
    random_bytes,
)

pytestmark = pytest.mark.anyio

REF = parse_normalized("registry.test/team/app:v1")
FAST = TransportSettings(backoff_initial=0.001, backoff_max=0.01, max_attempts=4)

Handler = Callable[[httpx.Request], httpx.Response]


def client_for(handler: Handler, settings: TransportSettings = FAST) -> RegistryClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler), follow_redirects=False)
    return RegistryClient(Transport(settings=settings, http=http))


def routed(router: respx.Router, settings: TransportSettings = FAST) -> RegistryClient:
    """A client whose every request must match one of ``router``'s routes."""
    http = httpx.AsyncClient(transport=httpx.MockTransport(router.async_handler))
    return RegistryClient(Transport(settings=settings, http=http))


class BrokenStream(httpx.AsyncByteStream):
    """Yields ``data`` then fails with a read error, like a connection reset mid-body."""

    def __init__(self, data: bytes, *, fail: bool = True) -> None:
        self.data = data
        self.fail = fail

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data
        if self.fail:
            raise httpx.ReadError("connection reset by peer")


def blob_descriptor(data: bytes) -> Descriptor:
    return Descriptor(mt.OCI_LAYER, Digest.from_bytes(data), len(data))


async def test_reset_mid_blob_resumes_with_closed_range() -> None:
    data = random_bytes("resume", 300_000)
    seen_ranges: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        rng = request.headers.get("range")
        seen_ranges.append(rng)
        if rng is None:
            return httpx.Response(200, stream=BrokenStream(data[:100_000]))
        start, end = (int(x) for x in rng.removeprefix("bytes=").split("-"))
        body = data[start : end + 1]
        return httpx.Response(
            206,
            headers={"Content-Range": f"bytes {start}-{end}/{len(data)}"},
            stream=BrokenStream(body, fail=False),
        )

    sink = MemorySink()
    async with client_for(handler) as client:
        await client.fetch_blob(REF, blob_descriptor(data), sink)
    assert sink.data == data
    assert seen_ranges == [None, f"bytes=100000-{len(data) - 1}"]


async def test_range_ignored_restarts_cleanly_from_zero() -> None:
    data = random_bytes("restart", 50_000)
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return httpx.Response(200, stream=BrokenStream(data[:20_000]))
        # A server that ignores Range and sends the whole body with 200.
        return httpx.Response(200, stream=BrokenStream(data, fail=False))

    sink = MemorySink()
    async with client_for(handler) as client:
        await client.fetch_blob(REF, blob_descriptor(data), sink)
    assert sink.data == data
    assert calls == 2


async def test_206_starting_elsewhere_is_refused_then_restarted() -> None:
    data = random_bytes("wrong-range", 40_000)
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return httpx.Response(200, stream=BrokenStream(data[:10_000]))
        if calls == 2:
            return httpx.Response(
                206,
                headers={"Content-Range": f"bytes 0-999/{len(data)}"},
                stream=BrokenStream(data[:1000], fail=False),
            )
        return httpx.Response(200, stream=BrokenStream(data, fail=False))

    sink = MemorySink()
    async with client_for(handler) as client:
        await client.fetch_blob(REF, blob_descriptor(data), sink)
    assert sink.data == data
    assert calls == 3


async def test_no_progress_three_times_gives_up_and_aborts_sink() -> None:
    data = random_bytes("stuck", 10_000)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=BrokenStream(b""))

    sink = MemorySink()
    async with client_for(handler) as client:
        with pytest.raises(RegistryTransportError, match="without progress"):
            await client.fetch_blob(REF, blob_descriptor(data), sink)
    assert sink.written == 0
    assert sink.data is None


async def test_more_bytes_than_descriptor_is_refused() -> None:
    data = random_bytes("long", 1000)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=BrokenStream(data + b"extra", fail=False))

    sink = MemorySink()
    async with client_for(handler) as client:
        with pytest.raises(DigestMismatchError, match="more bytes"):
            await client.fetch_blob(REF, blob_descriptor(data), sink)
    assert sink.data is None


async def test_lying_content_length_larger_than_descriptor_is_refused() -> None:
    data = random_bytes("liar", 1000)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, headers={"Content-Length": "999999"}, stream=BrokenStream(data, fail=False)
        )

    async with client_for(handler) as client:
        with pytest.raises(DigestMismatchError, match="Content-Length 999999"):
            await client.fetch_blob(REF, blob_descriptor(data), MemorySink())


async def test_wrong_content_is_never_committed() -> None:
    data = random_bytes("good", 1000)
    evil = random_bytes("evil", 1000)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=BrokenStream(evil, fail=False))

    sink = MemorySink()
    async with client_for(handler) as client:
        with pytest.raises(DigestMismatchError, match=str(Digest.from_bytes(data))):
            await client.fetch_blob(REF, blob_descriptor(data), sink)
    assert sink.data is None


@pytest.mark.parametrize(
    ("algorithm"), [pytest.param("sha384", id="sha384"), pytest.param("sha512", id="sha512")]
)
async def test_sha384_and_sha512_blobs_are_verified(algorithm: str) -> None:
    data = random_bytes(algorithm, 5000)
    digest = Digest.from_bytes(data, algorithm)

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path.endswith(str(digest))
        return httpx.Response(200, stream=BrokenStream(data, fail=False))

    sink = MemorySink(algorithm)
    async with client_for(handler) as client:
        await client.fetch_blob(REF, Descriptor(mt.OCI_LAYER, digest, len(data)), sink)
    assert sink.data == data


async def test_429_with_retry_after_is_honoured_in_virtual_time() -> None:
    calls: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(anyio.current_time())
        if len(calls) == 1:
            return httpx.Response(429, headers={"Retry-After": "7"})
        return httpx.Response(200, stream=BrokenStream(b"ok", fail=False))

    data = b"ok"
    async with client_for(handler, TransportSettings()) as client:
        await client.fetch_blob(REF, blob_descriptor(data), MemorySink())
    assert len(calls) == 2
    assert calls[1] - calls[0] == pytest.approx(7, abs=0.01)


@pytest.mark.parametrize(
    ("status", "retried"),
    [
        pytest.param(500, True, id="500"),
        pytest.param(502, True, id="502"),
        pytest.param(503, True, id="503"),
        pytest.param(504, True, id="504"),
        pytest.param(408, True, id="408"),
        pytest.param(404, False, id="404-never"),
        pytest.param(403, False, id="403-never"),
        pytest.param(400, False, id="400-never"),
    ],
)
async def test_retry_only_transient_statuses(status: int, retried: bool) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return httpx.Response(status, json={"errors": [{"code": "X", "message": "boom"}]})
        return httpx.Response(200, stream=BrokenStream(b"ok", fail=False))

    async with client_for(handler) as client:
        if retried:
            await client.fetch_blob(REF, blob_descriptor(b"ok"), MemorySink())
            assert calls == 2
        else:
            with pytest.raises(RegistryError) as info:
                await client.fetch_blob(REF, blob_descriptor(b"ok"), MemorySink())
            assert info.value.status == status
            assert calls == 1


async def test_retries_are_bounded() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(503)

    async with client_for(handler) as client:
        with pytest.raises(RegistryError) as info:
            await client.fetch_blob(REF, blob_descriptor(b"ok"), MemorySink())
    assert info.value.status == 503
    assert calls == FAST.max_attempts


async def test_oci_error_body_becomes_typed_error_and_is_capped() -> None:
    router = respx.Router()
    huge = router.route(host="registry.test", path="/v2/team/app/manifests/huge").respond(
        404, content=b"x" * (1024 * 1024)
    )
    known = router.route(host="registry.test", path="/v2/team/app/manifests/v1").respond(
        404, json={"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}
    )

    async with routed(router) as client:
        with pytest.raises(RegistryNotFoundError) as info:
            await client.resolve(REF)
        assert info.value.code == "MANIFEST_UNKNOWN"
        assert info.value.status == 404
        assert info.value.message.endswith(": manifest unknown")
        with pytest.raises(RegistryNotFoundError) as huge_info:
            await client.resolve(parse_normalized("registry.test/team/app:huge"))
        assert (huge_info.value.status, huge_info.value.code) == (404, None)
    # HEAD has no body to read the error from: GET once to surface it (containerd), never more
    assert [c.request.method for c in known.calls] == ["HEAD", "GET"]
    assert [c.request.method for c in huge.calls] == ["HEAD", "GET"]


async def test_head_without_content_length_falls_back_to_get_and_hash() -> None:
    image = build_image("head", "linux/amd64", (64,))
    raw = image.manifest.data
    url = "https://registry.test/v2/team/app/manifests/v1"
    headers = {"Content-Type": mt.OCI_MANIFEST}
    router = respx.Router()
    # A digest header without Content-Length must not be trusted.
    head = router.head(url).respond(
        200, headers={**headers, "Docker-Content-Digest": "sha256:" + "0" * 64}
    )
    get = router.get(url).respond(200, headers=headers, content=raw)

    async with routed(router) as client:
        desc = await client.resolve(REF)
    assert desc.digest == image.manifest.digest
    assert desc.size == len(raw)
    assert (head.call_count, get.call_count) == (1, 1)
    assert mt.OCI_INDEX in get.calls.last.request.headers["accept"]


@pytest.mark.parametrize(
    ("registry", "loads_trust_store"),
    [("127.0.0.1:5999", False), ("localhost:5999", False), ("registry.test", True)],
)
async def test_the_system_trust_store_is_loaded_only_for_a_host_that_needs_it(
    monkeypatch: pytest.MonkeyPatch, registry: str, loads_trust_store: bool
) -> None:
    # A loopback registry is not verified (containerd): loading the CA bundle for it was a tenth
    # of a one-shot pull's start-up, spent for nothing.
    loads: list[int] = []
    real = boundary.default_ssl_context

    def counted() -> ssl.SSLContext:
        loads.append(1)
        return real()

    monkeypatch.setattr(boundary, "default_ssl_context", counted)
    image = build_image("trust", "linux/amd64", (64,))
    raw = image.manifest.data
    headers = {
        "Content-Type": mt.OCI_MANIFEST,
        "Content-Length": str(len(raw)),
        "Docker-Content-Digest": str(image.manifest.digest),
    }
    with respx.mock(assert_all_mocked=True) as router:
        router.head(f"https://{registry}/v2/team/app/manifests/v1").respond(200, headers=headers)
        async with RegistryClient(Transport(settings=FAST)) as client:
            desc = await client.resolve(parse_normalized(f"{registry}/team/app:v1"))
    assert desc.digest == image.manifest.digest
    assert loads == ([1] if loads_trust_store else [])


async def test_a_closed_transport_makes_no_client_it_would_not_close() -> None:
    made: list[int] = []
    transport = Transport(settings=FAST)
    await transport.aclose()  # before any request: no client was made yet
    real = boundary.make_http_client

    def counted(*args: object, **kwargs: object) -> httpx.AsyncClient:
        made.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(boundary, "make_http_client", counted)
        with pytest.raises(RuntimeError, match="closed"):
            await RegistryClient(transport).resolve(REF)  # the shared client: system CAs
        with pytest.raises(RuntimeError, match="closed"):
            await RegistryClient(transport).resolve(parse_normalized("127.0.0.1:5999/a/b:1"))
    assert made == []


async def test_oversized_manifest_is_refused() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        size = mt.MAX_MANIFEST_SIZE + 1
        return httpx.Response(
            200,
            headers={
                "Content-Type": mt.OCI_MANIFEST,
                "Content-Length": str(size),
                "Docker-Content-Digest": "sha256:" + "1" * 64,
            },
            content=b"" if request.method == "HEAD" else b"{" * size,
        )

    async with client_for(handler) as client:
        with pytest.raises(ManifestError, match="byte manifest"):
            await client.resolve(REF)


async def test_content_type_and_body_media_type_must_agree() -> None:
    image = build_image("mismatch", "linux/amd64", (64,))
    raw = image.manifest.data

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Type": mt.OCI_INDEX}, content=raw)

    desc = Descriptor(mt.OCI_MANIFEST, image.manifest.digest, len(raw))
    async with client_for(handler) as client:
        with pytest.raises(ManifestError, match="does not match Content-Type"):
            await client.fetch_manifest(REF, desc)


async def test_manifest_by_digest_with_wrong_bytes_is_refused() -> None:
    image = build_image("tamper", "linux/amd64", (64,))

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, headers={"Content-Type": mt.OCI_MANIFEST}, content=image.manifest.data + b" "
        )

    desc = Descriptor(mt.OCI_MANIFEST, image.manifest.digest, image.manifest.size + 1)
    async with client_for(handler) as client:
        with pytest.raises(DigestMismatchError):
            await client.fetch_manifest(REF, desc)


def basic_registry(request: httpx.Request, location: str) -> httpx.Response:
    """registry.test: a Basic challenge without credentials, else a redirect to ``location``."""
    if "authorization" not in request.headers:
        return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
    return httpx.Response(307, headers={"Location": location})


async def test_redirect_to_other_origin_drops_authorization_keeps_range() -> None:
    data = random_bytes("redirect", 20_000)
    creds = Credentials(username="u", password="redirect-secret")
    router = respx.Router()
    registry = router.route(host="registry.test").mock(
        side_effect=lambda request: basic_registry(request, "https://storage.test/blob?sig=abc")
    )
    storage = router.route(host="storage.test", path="/blob").mock(
        side_effect=lambda request: httpx.Response(200, stream=BrokenStream(data, fail=False))
    )

    sink = MemorySink()
    async with routed(router) as client:
        await client.fetch_blob(REF, blob_descriptor(data), sink, creds)
    assert sink.data == data
    assert registry.call_count == 2  # the challenge, then the authorized request
    assert storage.call_count == 1
    storage_headers = [call.request.headers for call in storage.calls]
    assert all("authorization" not in h for h in storage_headers)
    assert all(h.get("accept-encoding") == "identity" for h in storage_headers)
    assert storage.calls.last.request.url.params["sig"] == "abc"


async def test_a_401_from_blob_storage_is_not_answered_with_registry_credentials() -> None:
    """Only the registry's own 401 is a challenge; storage's fails without another request."""
    creds = Credentials(username="u", password="storage-secret")
    router = respx.Router()
    registry = router.route(host="registry.test").mock(
        side_effect=lambda request: basic_registry(request, "https://storage.test/blob?sig=abc")
    )
    storage = router.route(host="storage.test").respond(
        401, headers={"WWW-Authenticate": 'Basic realm="storage"'}
    )

    async with routed(router) as client:
        with pytest.raises(RegistryAuthError) as info:
            await client.fetch_blob(REF, blob_descriptor(b"x"), MemorySink(), creds)
    assert info.value.status == 401
    assert (registry.call_count, storage.call_count) == (2, 1)
    assert "authorization" not in storage.calls.last.request.headers
    assert "sig=abc" not in str(info.value)
    assert "storage-secret" not in str(info.value)


async def test_second_401_fails_with_auth_error_instead_of_looping() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})

    async with client_for(handler) as client:
        with pytest.raises(RegistryAuthError) as info:
            await client.fetch_blob(
                REF, blob_descriptor(b"x"), MemorySink(), Credentials(username="u", password="p")
            )
    assert calls == 2
    # the one 401 path (send_authorized) answered: no OCI code in the body reads as UNAUTHORIZED
    assert (info.value.status, info.value.code) == (401, "UNAUTHORIZED")
    assert "refused the credentials" in info.value.message


REALM = "https://auth.test/token"
BEARER = f'Bearer realm="{REALM}",service="registry.test"'


def bearer_registry(valid: set[str], error: str = "invalid_token") -> respx.Router:
    """registry.test wants ``Bearer <one of valid>`` (read per request); auth.test issues tok-1,
    tok-2, ..."""
    router = respx.Router()
    issued = 0

    def token(request: httpx.Request) -> httpx.Response:
        nonlocal issued
        issued += 1
        return httpx.Response(200, json={"token": f"tok-{issued}", "expires_in": 300})

    def registry(request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") in valid:
            return httpx.Response(200, stream=BrokenStream(b"ok", fail=False))
        said = f',error="{error}"' if "authorization" in request.headers else ""
        return httpx.Response(
            401,
            headers={"WWW-Authenticate": BEARER + said},
            json={"errors": [{"code": "DENIED", "message": "requested access is denied"}]},
        )

    router.get(REALM, name="token").mock(side_effect=token)
    router.route(host="registry.test", name="registry").mock(side_effect=registry)
    return router


def auth_of(client: RegistryClient) -> AuthManager:
    return client.transport.auth


async def test_bearer_challenge_is_answered_once_and_the_token_reused() -> None:
    router = bearer_registry({"Bearer tok-1"})
    async with routed(router) as client:
        for _ in range(2):
            await client.fetch_blob(REF, blob_descriptor(b"ok"), MemorySink())
        assert auth_of(client).statistics().token_fetches == 1
    token, registry = router.routes["token"], router.routes["registry"]
    assert token.call_count == 1
    assert token.calls.last.request.url.params["scope"] == "repository:team/app:pull"
    seen = [c.request.headers.get("authorization") for c in registry.calls]
    assert seen == [None, "Bearer tok-1", "Bearer tok-1"]
    # credentials and tokens go to their own origins only
    assert "authorization" not in token.calls.last.request.headers


async def test_a_rejected_cached_token_is_refreshed_once() -> None:
    valid = {"Bearer tok-1"}
    router = bearer_registry(valid)
    async with routed(router) as client:
        await client.fetch_blob(REF, blob_descriptor(b"ok"), MemorySink())
        valid.clear()
        valid.add("Bearer tok-2")  # the registry revoked tok-1
        await client.fetch_blob(REF, blob_descriptor(b"ok"), MemorySink())
    seen = [c.request.headers.get("authorization") for c in router.routes["registry"].calls]
    assert seen == [None, "Bearer tok-1", "Bearer tok-1", "Bearer tok-2"]
    assert router.routes["token"].call_count == 2


async def test_a_fresh_token_that_is_refused_fails_with_the_registrys_code() -> None:
    router = bearer_registry(set(), error="insufficient_scope")
    async with routed(router) as client:
        with pytest.raises(RegistryAuthError) as info:
            await client.fetch_blob(REF, blob_descriptor(b"ok"), MemorySink())
        assert auth_of(client).header_for("registry.test", "repository:team/app:pull", None) is None
    assert (info.value.status, info.value.code) == (401, "DENIED")
    assert "(server said insufficient_scope)" in info.value.message
    assert "tok-1" not in str(info.value)
    assert router.routes["registry"].call_count == 2  # no loop
    assert router.routes["token"].call_count == 1


BODY_FAILURES = [
    pytest.param(httpx.ReadError("connection reset by peer"), id="ReadError"),
    pytest.param(httpx.RemoteProtocolError("peer closed connection"), id="RemoteProtocolError"),
    pytest.param(httpx.ReadTimeout("timed out"), id="ReadTimeout"),
    pytest.param(httpx.DecodingError("incorrect header check"), id="DecodingError"),
]


class FailingStream(httpx.AsyncByteStream):
    """Yields ``data`` then raises ``failure`` (any httpx error a body can end with)."""

    def __init__(self, data: bytes, failure: Exception) -> None:
        self.data = data
        self.failure = failure

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data
        raise self.failure


@pytest.mark.parametrize("failure", BODY_FAILURES)
async def test_a_manifest_body_failing_mid_stream_is_a_transport_error(failure: Exception) -> None:
    image = build_image("cut", "linux/amd64", (64,))
    desc = Descriptor(mt.OCI_MANIFEST, image.manifest.digest, image.manifest.size)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            headers={"Content-Type": mt.OCI_MANIFEST},
            stream=FailingStream(image.manifest.data[:10], failure),
        )

    async with client_for(handler) as client:
        with pytest.raises(RegistryTransportError) as info:
            await client.fetch_manifest(REF, desc)
    assert info.value.__cause__ is failure
    assert type(failure).__name__ in info.value.message


@pytest.mark.parametrize("failure", BODY_FAILURES)
async def test_a_blob_body_failing_mid_stream_resumes(failure: Exception) -> None:
    data = random_bytes("cut-blob", 50_000)
    seen_ranges: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        rng = request.headers.get("range")
        seen_ranges.append(rng)
        if rng is None:
            return httpx.Response(200, stream=FailingStream(data[:20_000], failure))
        start = int(rng.removeprefix("bytes=").split("-")[0])
        return httpx.Response(
            206,
            headers={"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"},
            stream=BrokenStream(data[start:], fail=False),
        )

    sink = MemorySink()
    async with client_for(handler) as client:
        await client.fetch_blob(REF, blob_descriptor(data), sink)
    assert sink.data == data
    assert seen_ranges == [None, f"bytes=20000-{len(data) - 1}"]


@pytest.mark.parametrize("failure", BODY_FAILURES)
async def test_a_blob_body_that_always_fails_gives_up_typed(failure: Exception) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=FailingStream(b"", failure))

    sink = MemorySink()
    async with client_for(handler) as client:
        with pytest.raises(RegistryTransportError, match="without progress") as info:
            await client.fetch_blob(REF, blob_descriptor(b"never"), sink)
    assert type(failure).__name__ in info.value.message
    assert sink.data is None


@pytest.mark.parametrize("failure", BODY_FAILURES)
async def test_an_error_body_failing_mid_stream_keeps_the_status_type(failure: Exception) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, stream=FailingStream(b'{"errors": [', failure))

    async with client_for(handler) as client:
        with pytest.raises(RegistryNotFoundError) as info:
            await client.fetch_blob(REF, blob_descriptor(b"gone"), MemorySink())
    assert (info.value.status, info.value.code) == (404, None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("5", 5.0, id="seconds"),
        pytest.param("", None, id="empty"),
        pytest.param("soon", None, id="garbage"),
        pytest.param("Wed, 21 Oct 2015 07:28:00 GMT", 10.0, id="http-date"),
    ],
)
def test_parse_retry_after(value: str, expected: float | None) -> None:
    now = 1445412470.0  # 10 s before the date above
    assert parse_retry_after(value, now) == expected


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    """Virtual time: backoff and Retry-After sleeps take no real time."""
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})


async def test_upload_location_on_another_host_gets_no_authorization() -> None:
    from kubelet_sim.registry.push import Pusher

    def registry(request: httpx.Request) -> httpx.Response:
        if "authorization" not in request.headers:
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        if request.method == "HEAD":
            return httpx.Response(404)
        return httpx.Response(202, headers={"Location": "https://uploads.test/session/1"})

    router = respx.Router()
    router.route(host="registry.test").mock(side_effect=registry)
    upload = router.put(host="uploads.test", path="/session/1").respond(201)

    async with routed(router) as client:
        pusher = Pusher(client, REF, Credentials(username="u", password="upload-secret"))
        await pusher.push_blob(b"data", Digest.from_bytes(b"data"), 4)
    seen = {f"{c.request.method} {c.request.url.host}": c.request.headers for c in router.calls}
    assert "authorization" in seen["POST registry.test"]
    assert upload.call_count == 1
    assert "authorization" not in seen["PUT uploads.test"]
    assert upload.calls.last.request.url.params["digest"] == str(Digest.from_bytes(b"data"))


async def test_hosts_toml_headers_stay_on_the_registry_origin(tmp_path: object) -> None:
    from pathlib import Path

    hosts = Path(str(tmp_path)) / "certs.d" / "registry.test"
    hosts.mkdir(parents=True)
    (hosts / "hosts.toml").write_text(
        'server = "https://registry.test"\n[header]\n  x-registry-key = "header-secret"\n'
    )
    data = b"layer-bytes"
    router = respx.Router()
    registry = router.route(host="registry.test").respond(
        307, headers={"Location": "https://storage.test/blob"}
    )
    storage = router.route(host="storage.test").mock(
        side_effect=lambda request: httpx.Response(200, stream=BrokenStream(data, fail=False))
    )

    http = httpx.AsyncClient(transport=httpx.MockTransport(router.async_handler))
    async with RegistryClient(
        Transport(settings=FAST, http=http), hosts_dir=hosts.parent
    ) as client:
        await client.fetch_blob(REF, blob_descriptor(data), MemorySink())
    assert [c.request.headers.get("x-registry-key") for c in registry.calls] == ["header-secret"]
    assert [c.request.headers.get("x-registry-key") for c in storage.calls] == [None]


async def test_request_deadline_becomes_a_transport_error() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(1000)
        return httpx.Response(200)

    settings = TransportSettings(request_deadline=30, max_attempts=1)
    async with client_for(handler, settings) as client:  # type: ignore[arg-type]
        with pytest.raises(RegistryTransportError, match="30s request deadline"):
            await client.resolve(REF)


async def test_unusable_redirect_location_is_a_typed_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(307, headers={"Location": "https://[::1/blob?sig=s3cr3t"})

    async with client_for(handler) as client:
        with pytest.raises(RegistryTransportError) as info:
            await client.fetch_blob(REF, blob_descriptor(b"x"), MemorySink())
    assert "s3cr3t" not in str(info.value)


# --- platform walk (core/images/image.go: Manifest) and foreign layers (fetcher.go) ---------


def serving(blobs: dict[str, tuple[str, bytes]], seen: list[httpx.Request]) -> Handler:
    """A registry that serves ``path suffix -> (media type, bytes)``; anything else is a 404."""

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        for suffix, (media_type, data) in blobs.items():
            if request.url.path.endswith(suffix):
                headers = {
                    "Content-Type": media_type,
                    "Docker-Content-Digest": str(Digest.from_bytes(data)),
                }
                return httpx.Response(200, headers=headers, content=data)
        return httpx.Response(404)

    return handler


def publish(*blobs: Blob, tag: Blob | None = None) -> dict[str, tuple[str, bytes]]:
    served = {f"/{b.digest}": (b.media_type, b.data) for b in blobs}
    if tag is not None:
        served["/manifests/v1"] = (tag.media_type, tag.data)
    return served


def index_of(*entries: dict[str, object]) -> Blob:
    return Blob(
        mt.OCI_INDEX,
        canonical_json({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": list(entries)}),
    )


AMD64 = build_image("walk", "linux/amd64", (32,))
ARM64 = build_image("walk", "linux/arm64", (32,))


def image_blobs(*images: Image) -> list[Blob]:
    return [blob for image in images for blob in (image.manifest, *image.blobs())]


async def test_a_nested_index_without_platform_is_followed() -> None:
    inner = index_of(
        AMD64.manifest.descriptor(platform=AMD64.platform),
        ARM64.manifest.descriptor(platform=ARM64.platform),
    )
    outer = index_of(inner.descriptor())
    seen: list[httpx.Request] = []
    served = publish(inner, outer, *image_blobs(AMD64, ARM64), tag=outer)
    async with client_for(serving(served, seen)) as client:
        resolved = await client.resolve_image(REF, parse_platform("linux/arm64"))
    assert resolved.manifest.digest == ARM64.manifest.digest
    assert resolved.platform == Platform("linux", "arm64")


@pytest.mark.parametrize(
    ("wanted", "chosen"),
    [
        pytest.param("linux/amd64", AMD64, id="config-matches"),
        pytest.param("linux/arm64", ARM64, id="a-platformed-match-wins"),
    ],
)
async def test_a_manifest_without_platform_is_checked_against_its_config(
    wanted: str, chosen: Image
) -> None:
    top = index_of(AMD64.manifest.descriptor(), ARM64.manifest.descriptor(platform=ARM64.platform))
    served = publish(top, *image_blobs(AMD64, ARM64), tag=top)
    async with client_for(serving(served, [])) as client:
        resolved = await client.resolve_image(REF, parse_platform(wanted))
    assert resolved.manifest.digest == chosen.manifest.digest


async def test_a_manifest_without_platform_whose_config_differs_is_no_match() -> None:
    top = index_of(ARM64.manifest.descriptor(), AMD64.manifest.descriptor())
    served = publish(top, *image_blobs(AMD64, ARM64), tag=top)
    async with client_for(serving(served, [])) as client:
        # As containerd: only the first entry without platform is looked at.
        with pytest.raises(NoMatchingPlatformError) as info:
            await client.resolve_image(REF, parse_platform("linux/amd64"))
    assert info.value.offered == ["linux/arm64"]


FOREIGN = build_layer("foreign", 2048)


def foreign_layer(*urls: str) -> Descriptor:
    return Descriptor(mt.OCI_LAYER_GZIP, FOREIGN.digest, FOREIGN.size, urls=urls)


async def test_a_foreign_layer_comes_from_its_urls_without_credentials() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "foreign.test":
            if request.url.path == "/gone":
                return httpx.Response(404)
            return httpx.Response(200, content=FOREIGN.data)
        return httpx.Response(404)

    urls = (
        "ftp://foreign.test/skipped",
        "https://user:pw@foreign.test/gone",
        "https://foreign.test/l?sig=1",
    )
    sink = MemorySink()
    async with client_for(handler) as client:
        await client.fetch_blob(REF, foreign_layer(*urls), sink, Credentials("alice", "pw-SECRET"))
    assert sink.data == FOREIGN.data
    assert [(r.url.host, r.url.path) for r in seen] == [
        ("foreign.test", "/gone"),
        ("foreign.test", "/l"),
    ]
    assert all("authorization" not in r.headers for r in seen)


async def test_a_foreign_layer_not_at_its_urls_comes_from_the_registry() -> None:
    seen: list[httpx.Request] = []
    served = publish(FOREIGN)
    async with client_for(serving(served, seen)) as client:
        sink = MemorySink()
        await client.fetch_blob(REF, foreign_layer("https://foreign.test/missing"), sink)
    assert sink.data == FOREIGN.data
    assert [r.url.host for r in seen] == ["foreign.test", "registry.test"]


async def test_a_failing_foreign_url_fails_the_layer_as_containerd_does() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            500 if request.url.host == "foreign.test" else 200, content=FOREIGN.data
        )

    async with client_for(handler) as client:
        with pytest.raises(RegistryError) as info:
            await client.fetch_blob(REF, foreign_layer("https://foreign.test/l"), MemorySink())
    assert info.value.status == 500
    assert [r.url.host for r in seen] == ["foreign.test"]  # a mirror-like URL: not retried


async def test_a_layer_missing_everywhere_says_so_in_containerd_words() -> None:
    async with client_for(serving({}, [])) as client:
        with pytest.raises(
            RegistryNotFoundError, match="could not fetch content descriptor"
        ) as info:
            await client.fetch_blob(REF, blob_descriptor(b"nowhere"), MemorySink())
    assert info.value.status == 404


class DrippingStream(httpx.AsyncByteStream):
    """Yields ``data`` in ``piece``-byte chunks ``every`` seconds apart: a slow layer."""

    def __init__(self, data: bytes, piece: int, every: float) -> None:
        self.data, self.piece, self.every = data, piece, every

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self.data), self.piece):
            await anyio.sleep(self.every)
            yield self.data[start : start + self.piece]


async def test_a_slow_layer_reports_progress_more_than_ten_times_a_second() -> None:
    # 48 KiB a second: far below one large write (1 MiB), so progress once per write would
    # not move at all until the layer ends.
    data = random_bytes("drip", 48 * 1024)
    reports: list[tuple[float, int]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=DrippingStream(data, 1024, 1 / 48))

    sink = MemorySink()
    async with client_for(handler) as client:
        await client.fetch_blob(
            REF,
            blob_descriptor(data),
            sink,
            progress=lambda _desc, got: reports.append((anyio.current_time(), got)),
        )
    assert sink.data == data
    received = [got for _, got in reports]
    assert received == sorted(received)
    assert received[-1] == len(data)
    span = reports[-1][0] - reports[0][0]
    assert len(reports) >= 10 * span
    assert len(reports) >= 10
    assert max(b - a for (a, _), (b, _) in itertools.pairwise(reports)) < 0.2


@pytest.mark.parametrize("server_closes", [False, True], ids=["kept-open", "closed-by-server"])
async def test_an_idle_pooled_connection_is_reused_until_the_server_closes_it(
    server_closes: bool,
) -> None:
    """httpcore checks an idle connection's socket before reusing it (kubelet-sim makes that
    check cheaper): a connection the server keeps open serves the next request, one it closed
    while idle is replaced, without an error."""
    accepted: list[int] = []
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)

    async def serve(stream: anyio.abc.SocketStream) -> None:
        accepted.append(1)
        async with stream:
            while True:
                request = b""
                while b"\r\n\r\n" not in request:
                    try:
                        request += await stream.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        return
                await stream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                if server_closes:
                    return  # closes the kept-alive connection while the client holds it idle

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve)
        async with boundary.make_http_client(TransportSettings()) as http:
            for _ in range(3):
                answer = await http.get(f"http://127.0.0.1:{port}/v2/")
                assert (answer.status_code, answer.text) == (200, "ok")
                await anyio.sleep(0.05)  # the server's FIN arrives while the connection is idle
        tg.cancel_scope.cancel()
    assert len(accepted) == (3 if server_closes else 1)


def test_the_cheaper_idle_check_is_installed_once() -> None:
    from httpcore._backends.anyio import AnyIOStream

    boundary.make_http_client(TransportSettings())
    installed = AnyIOStream.get_extra_info
    boundary.make_http_client(TransportSettings())
    assert AnyIOStream.get_extra_info is installed
    assert getattr(installed, "kubelet_sim", False)


async def test_the_cheaper_idle_check_answers_as_httpcores_own() -> None:
    """Each stream looks its own socket up once: not readable while its server keeps the idle
    connection open, readable once the server closed it (httpcore then drops the connection),
    and no socket left after the client closed it (treated as gone, as httpcore does)."""
    import httpcore

    boundary.make_http_client(TransportSettings())
    close_first, gone = anyio.Event(), anyio.Event()
    served: list[anyio.abc.SocketStream] = []
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)

    async def serve(stream: anyio.abc.SocketStream) -> None:
        served.append(stream)
        if len(served) == 1:
            await close_first.wait()
            await stream.aclose()  # on loopback the FIN is there when close returns
            gone.set()
        else:
            await anyio.sleep_forever()

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve)
        backend = httpcore.AnyIOBackend()
        first = await backend.connect_tcp("127.0.0.1", port)
        second = await backend.connect_tcp("127.0.0.1", port)
        for stream in (first, second):
            assert stream.get_extra_info("is_readable") is False
            cached = stream.__dict__["_kubelet_sim_socket"]  # the cheap path: looked up once
            assert cached is stream.get_extra_info("socket")
        assert first.__dict__["_kubelet_sim_socket"] is not second.__dict__["_kubelet_sim_socket"]
        close_first.set()
        with anyio.fail_after(5):
            await gone.wait()
        assert first.get_extra_info("is_readable") is True
        assert second.get_extra_info("is_readable") is False  # its own socket, still open
        await first.aclose()
        assert first.get_extra_info("is_readable") is True
        await second.aclose()
        tg.cancel_scope.cancel()


def _children(layers: int) -> ImageManifest:
    image = build_image("children", "linux/amd64", tuple(1000 + i for i in range(layers)))
    parsed = parse_manifest(image.manifest.data, mt.OCI_MANIFEST, image.manifest.digest)
    assert isinstance(parsed, ImageManifest)
    return parsed


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_the_config_takes_its_place_first_whatever_order_the_scheduler_runs_tasks(
    backend: str,
) -> None:
    """Layers that wait for the config while holding their places must not take them all:
    the config is placed first, as containerd's ``Dispatch`` acquires before it starts a child
    (trio runs new tasks in a random order, so this ran into a deadlock one time in two)."""
    manifest = _children(3)

    async def main() -> list[str]:
        order: list[str] = []
        config_done = anyio.Event()

        async def config(desc: Descriptor) -> None:
            order.append("config")
            await anyio.sleep(0.001)
            config_done.set()

        async def layer(desc: Descriptor) -> None:
            order.append(str(desc.digest))
            await config_done.wait()

        with anyio.fail_after(5):
            await for_each_child(manifest, 3, config, layer)
        return order

    for _ in range(20):
        order = anyio.run(main, backend=backend)
        assert order[0] == "config"
        assert sorted(order[1:]) == sorted(str(la.digest) for la in manifest.layers)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_run_limited_keeps_the_limit_and_raises_the_first_failure(backend: str) -> None:
    manifest = _children(6)
    calls_in_flight: list[int] = []

    async def main() -> None:
        running = 0

        async def fn(desc: Descriptor) -> None:
            nonlocal running
            running += 1
            calls_in_flight.append(running)
            await anyio.sleep(0.001)
            running -= 1
            if desc.digest == manifest.layers[3].digest:
                raise ManifestError("the fourth failed")

        await run_limited([(fn, desc) for desc in manifest.layers], 2)

    with pytest.raises(ManifestError, match="the fourth failed"):
        anyio.run(main, backend=backend)
    assert max(calls_in_flight) == 2
