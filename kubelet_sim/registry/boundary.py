"""The registry's HTTP boundary: capped body reads and the one httpx → RegistryError translation.

Every request path in :mod:`kubelet_sim.registry` (token fetches, registry requests, manifest and
blob bodies, error documents) reads bodies with :func:`read_capped` and turns httpx failures into
:class:`~kubelet_sim.errors.RegistryTransportError` with :func:`transport_error` (or the
:func:`translate_errors` block around it). That covers failures while sending and failures while a
body streams: ``RemoteProtocolError``, ``ReadError``, ``ReadTimeout`` and ``DecodingError`` during
``aiter_bytes``/``aiter_raw``/``aread`` surface as the same typed error as a refused connection.
"""

from __future__ import annotations

import ssl
import zlib
from collections.abc import AsyncGenerator, Iterator
from contextlib import aclosing, contextmanager
from typing import cast

import httpx

from kubelet_sim.errors import RegistryError, RegistryTransportError

__all__ = [
    "HTTPX_ERRORS",
    "MAX_ERROR_BODY",
    "read_capped",
    "read_error_body",
    "translate_errors",
    "transport_error",
]

MAX_ERROR_BODY = 64 * 1024
"""Error documents larger than this are not read (their status still types the error)."""

HTTPX_ERRORS: tuple[type[Exception], ...] = (httpx.RequestError, ssl.SSLError)
"""What httpx raises for a failed exchange: ``TransportError`` (connect, read, write, timeouts,
protocol errors), ``DecodingError`` (a body that does not decode) and TLS failures."""

_INFLATED = ("gzip", "x-gzip", "deflate")


def transport_error(where: str, exc: BaseException) -> RegistryTransportError:
    """The typed error for an httpx failure; ``where`` says what was being done (no secrets).

    The exception's class and text are kept (``ReadError: connection reset by peer``); neither
    holds a URL's query string or a header.
    """
    detail = str(exc)
    text = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    return RegistryTransportError(f"{where}: {text}")


@contextmanager
def translate_errors(where: str) -> Iterator[None]:
    """Raise :func:`transport_error` for any httpx failure inside the block (sending or reading).

    Raises:
        RegistryTransportError: chained to the httpx exception.
    """
    try:
        yield
    except HTTPX_ERRORS as exc:
        raise transport_error(where, exc) from exc


async def read_capped(
    response: httpx.Response,
    *,
    limit: int,
    what: str,
    error: type[RegistryError] = RegistryError,
) -> bytes:
    """Read at most ``limit`` decoded bytes of a (streamed) body, then stop.

    A declared ``Content-Length`` over the limit is refused before anything is read. Raw chunks
    are read under ``aclosing`` (nothing is left for the GC on trio) and gzip/deflate are inflated
    here, bounded by ``limit``, so a compression bomb stops at ``limit + 1`` bytes.

    Args:
        what: names the body in messages (``"token answer from https://auth.example/token"``).
        error: the class raised for a body over the limit or badly encoded.

    Raises:
        error: the body is larger than ``limit``, uses another content-encoding, or does not
            inflate; ``status`` is the response's.
        RegistryTransportError: the body failed while streaming.
    """
    status = response.status_code
    too_large = error(f"{what} was too large (over {limit} bytes)", status=status)
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    if response.is_stream_consumed:  # httpx already holds the (decoded) body
        if len(response.content) > limit:
            raise too_large
        return response.content
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity" and encoding not in _INFLATED:
        raise error(f"{what} used an unsupported content-encoding", status=status)
    inflate = None if encoding == "identity" else zlib.decompressobj(zlib.MAX_WBITS | 32)
    raw = cast("AsyncGenerator[bytes, None]", response.aiter_raw())  # it is one in httpx
    try:
        with translate_errors(f"reading {what}"):
            return await _read_bounded(raw, inflate, limit, too_large)
    except zlib.error:
        raise error(f"{what} is not valid {encoding} data", status=status) from None


async def _read_bounded(
    raw: AsyncGenerator[bytes, None],
    inflate: zlib._Decompress | None,
    limit: int,
    too_large: RegistryError,
) -> bytes:
    """Collect raw chunks (inflated when ``inflate`` is given) until they pass ``limit``."""
    body = bytearray()
    async with aclosing(raw) as chunks:
        async for chunk in chunks:
            body += chunk if inflate is None else inflate.decompress(chunk, limit + 1 - len(body))
            if len(body) > limit:
                raise too_large
    return bytes(body)


async def read_error_body(response: httpx.Response, *, what: str) -> bytes:
    """Best effort: an error answer's body for its OCI error code, or ``b""``.

    An error document over :data:`MAX_ERROR_BODY`, badly encoded or cut short tells nothing
    reliable; the answer's status still types the error.
    """
    try:
        return await read_capped(response, limit=MAX_ERROR_BODY, what=what)
    except RegistryError:
        return b""
