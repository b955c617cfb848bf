"""The registry's HTTP boundary: the one capped read and the one httpx → RegistryError mapping."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import AsyncIterator, Callable

import anyio
import httpx
import pytest

from kubelet_sim.errors import (
    ManifestError,
    RegistryAuthError,
    RegistryError,
    RegistryTransportError,
)
from kubelet_sim.registry.boundary import (
    MAX_ERROR_BODY,
    read_capped,
    read_error_body,
    translate_errors,
    transport_error,
)

pytestmark = pytest.mark.anyio

LIMIT = 1000
REQUEST = httpx.Request("GET", "https://registry.test/v2/app/manifests/v1?sig=s3cr3t")


class Body(httpx.AsyncByteStream):
    """Yields ``chunks``, then raises ``fail`` (a connection that breaks mid-body)."""

    def __init__(self, *chunks: bytes, fail: Exception | None = None) -> None:
        self.chunks = chunks
        self.fail = fail

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        if self.fail is not None:
            raise self.fail

    async def aclose(self) -> None:
        pass


def streamed(
    *chunks: bytes, status: int = 200, fail: Exception | None = None, **headers: str
) -> httpx.Response:
    return httpx.Response(
        status,
        headers={k.replace("_", "-"): v for k, v in headers.items()},
        stream=Body(*chunks, fail=fail),
        request=REQUEST,
    )


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        pytest.param(streamed(b"a" * LIMIT), b"a" * LIMIT, id="exactly-the-limit"),
        pytest.param(streamed(b"ab", b"cd"), b"abcd", id="several-chunks"),
        pytest.param(streamed(), b"", id="empty"),
        pytest.param(
            streamed(gzip.compress(b"x" * 900), content_encoding="gzip"), b"x" * 900, id="gzip"
        ),
        pytest.param(
            streamed(zlib.compress(b"y" * 10), content_encoding="deflate"), b"y" * 10, id="deflate"
        ),
        pytest.param(
            httpx.Response(200, content=b"already read", request=REQUEST),
            b"already read",
            id="already-read",
        ),
    ],
)
async def test_read_capped_returns_the_body(response: httpx.Response, expected: bytes) -> None:
    assert await read_capped(response, limit=LIMIT, what="a body") == expected


@pytest.mark.parametrize(
    ("make", "match"),
    [
        pytest.param(lambda: streamed(b"a" * (LIMIT + 1)), "was too large", id="streamed-over"),
        pytest.param(
            lambda: streamed(b"a", content_length="1001"), "was too large", id="declared-over"
        ),
        pytest.param(
            lambda: httpx.Response(200, content=b"a" * (LIMIT + 1), request=REQUEST),
            "was too large",
            id="already-read-over",
        ),
        pytest.param(
            lambda: streamed(gzip.compress(b"x" * (LIMIT * 1000)), content_encoding="gzip"),
            "was too large",
            id="gzip-bomb",
        ),
        pytest.param(
            lambda: streamed(b"\x8b\x00", content_encoding="br"),
            "unsupported content-encoding",
            id="brotli",
        ),
        pytest.param(
            lambda: streamed(b"not gzip", content_encoding="gzip"),
            "not valid gzip data",
            id="bad-gzip",
        ),
    ],
)
@pytest.mark.parametrize("error", [RegistryError, RegistryAuthError, ManifestError])
async def test_read_capped_refuses_with_the_callers_error_class(
    make: Callable[[], httpx.Response], match: str, error: type[RegistryError]
) -> None:
    with pytest.raises(error, match=match) as info:
        await read_capped(make(), limit=LIMIT, what="a body", error=error)
    assert type(info.value) is error
    assert info.value.status == 200
    assert info.value.message.startswith("a body ")


async def test_a_gzip_bomb_is_not_inflated_past_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    produced: list[int] = []
    real = zlib.decompressobj

    class Counting:
        def __init__(self, wbits: int) -> None:
            self._inner = real(wbits)

        def decompress(self, data: bytes, max_length: int = 0) -> bytes:
            out = self._inner.decompress(data, max_length)
            produced.append(len(out))
            return out

    monkeypatch.setattr(zlib, "decompressobj", Counting)
    bomb = gzip.compress(b"x" * (LIMIT * 10_000))
    with pytest.raises(RegistryError, match="was too large"):
        await read_capped(
            streamed(bomb[:100], bomb[100:], content_encoding="gzip"), limit=LIMIT, what="bomb"
        )
    assert sum(produced) == LIMIT + 1


STREAM_FAILURES = [
    pytest.param(httpx.ReadError("connection reset by peer"), id="ReadError"),
    pytest.param(httpx.RemoteProtocolError("peer closed connection"), id="RemoteProtocolError"),
    pytest.param(httpx.ReadTimeout("timed out"), id="ReadTimeout"),
    pytest.param(httpx.DecodingError("bad gzip data"), id="DecodingError"),
]


@pytest.mark.parametrize("failure", STREAM_FAILURES)
async def test_a_body_failing_mid_stream_is_a_transport_error(failure: Exception) -> None:
    with pytest.raises(RegistryTransportError) as info:
        await read_capped(streamed(b"half", fail=failure), limit=LIMIT, what="a manifest")
    assert info.value.__cause__ is failure
    assert info.value.message.startswith("reading a manifest: ")
    assert type(failure).__name__ in info.value.message


@pytest.mark.parametrize("failure", STREAM_FAILURES)
async def test_translate_errors_covers_reading_a_body(failure: Exception) -> None:
    response = streamed(b"half", fail=failure)

    async def drain() -> None:
        with translate_errors("GET https://registry.test/v2/app/blobs/x"):
            async for _ in response.aiter_bytes():
                pass

    with pytest.raises(RegistryTransportError, match=type(failure).__name__) as info:
        await drain()
    assert info.value.__cause__ is failure
    assert info.value.status is None


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(httpx.ConnectError("connection refused"), id="ConnectError"),
        pytest.param(httpx.ConnectTimeout(""), id="ConnectTimeout"),
        pytest.param(httpx.WriteError("broken pipe"), id="WriteError"),
        pytest.param(httpx.PoolTimeout("no connection"), id="PoolTimeout"),
        pytest.param(httpx.UnsupportedProtocol("ftp"), id="UnsupportedProtocol"),
    ],
)
def test_translate_errors_covers_sending(failure: Exception) -> None:
    with pytest.raises(RegistryTransportError) as info, translate_errors("GET https://r/v2/"):
        raise failure
    assert info.value.__cause__ is failure
    assert info.value.message.startswith(f"GET https://r/v2/: {type(failure).__name__}")


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(ValueError("not ours"), id="ValueError"),
        pytest.param(RegistryError("already typed"), id="RegistryError"),
        pytest.param(httpx.InvalidURL("bad url"), id="InvalidURL"),
    ],
)
def test_translate_errors_leaves_everything_else_alone(other: Exception) -> None:
    with pytest.raises(type(other)) as info, translate_errors("GET x"):
        raise other
    assert info.value is other


async def test_translate_errors_never_swallows_cancellation() -> None:
    with anyio.move_on_after(0.01) as scope:
        with translate_errors("GET x"):
            await anyio.sleep(10)
    assert scope.cancelled_caught


def test_transport_error_names_the_class_even_without_a_message() -> None:
    assert transport_error("GET x", httpx.ReadTimeout("")).message == "GET x: ReadTimeout"
    assert transport_error("GET x", httpx.ReadError("reset")).message == "GET x: ReadError: reset"


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        pytest.param(streamed(b'{"errors":[]}', status=404), b'{"errors":[]}', id="small"),
        pytest.param(streamed(b"x" * (MAX_ERROR_BODY + 1), status=404), b"", id="too-large"),
        pytest.param(
            streamed(b"{", status=500, fail=httpx.ReadError("reset")), b"", id="cut-short"
        ),
        pytest.param(
            streamed(b"junk", status=500, content_encoding="gzip"), b"", id="bad-encoding"
        ),
    ],
)
async def test_read_error_body_is_best_effort(response: httpx.Response, expected: bytes) -> None:
    assert await read_error_body(response, what="error answer") == expected
