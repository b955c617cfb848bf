"""The registry's HTTP boundary: capped body reads and the one httpx → RegistryError translation.

Every request path in :mod:`kubelet_sim.registry` (token fetches, registry requests, manifest and
blob bodies, error documents) reads bodies with :func:`read_capped` and turns httpx failures into
:class:`~kubelet_sim.errors.RegistryTransportError` with :func:`transport_error` (or the
:func:`translate_errors` block around it). That covers failures while sending and failures while a
body streams: ``RemoteProtocolError``, ``ReadError``, ``ReadTimeout`` and ``DecodingError`` during
``aiter_bytes``/``aiter_raw``/``aread`` surface as the same typed error as a refused connection.
A connection that could not be made at all reads as Go's dialer words it
(``dial tcp 127.0.0.1:5000: connect: connection refused``, :func:`dial_failure`). Error answers
become typed errors in :func:`error_from_response`; URLs in messages go through :func:`redact_url`.
"""

from __future__ import annotations

import email.utils
import errno
import functools
import json
import re
import socket
import ssl
import time
import zlib
from collections.abc import AsyncGenerator, Iterator
from contextlib import aclosing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, cast
from urllib.parse import SplitResult, urlsplit

import httpx

from kubelet_sim.errors import (
    RegistryAuthError,
    RegistryError,
    RegistryNotFoundError,
    RegistryTransportError,
)

if TYPE_CHECKING:
    from kubelet_sim.registry.hosts import RegistryHost
    from kubelet_sim.registry.transport import TransportSettings

__all__ = [
    "HTTPX_ERRORS",
    "MAX_ERROR_BODY",
    "ClientPool",
    "dial_failure",
    "error_from_response",
    "exception_chain",
    "make_http_client",
    "parse_retry_after",
    "read_capped",
    "read_error_body",
    "redact_url",
    "ssl_context",
    "translate_errors",
    "transport_error",
]

NOT_FOUND_CODES = frozenset({"MANIFEST_UNKNOWN", "BLOB_UNKNOWN", "NAME_UNKNOWN"})
AUTH_CODES = frozenset({"UNAUTHORIZED", "DENIED"})

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


# --- URLs and error answers ------------------------------------------------------------------


def url_port(parts: SplitResult) -> int | None:
    """The URL's port, defaulted by scheme; -1 for a port that is not a number."""
    try:
        return parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return -1  # an invalid port: an origin of its own, refused when the request is built


def redact_url(url: str | httpx.URL) -> str:
    """The URL without query string or userinfo (pre-signed storage URLs carry secrets there)."""
    parts = urlsplit(str(url))
    host = parts.hostname or ""
    port = url_port(parts)
    if port not in (None, -1, {"http": 80, "https": 443}.get(parts.scheme)):
        host = f"{host}:{port}"
    return f"{parts.scheme}://{host}{parts.path}"


_DELTA_SECONDS = re.compile(r"[0-9]+", re.ASCII)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), or None.

    A value that is neither (``²`` passes ``str.isdigit``; a date past year 9999) is ignored, as
    containerd ignores it, never an error.
    """
    if not value:
        return None
    value = value.strip()
    if _DELTA_SECONDS.fullmatch(value):
        return float(value)  # float() has no digit limit: 10**400 is inf, capped by the caller
    try:
        when = email.utils.parsedate_to_datetime(value)
        current = time.time() if now is None else now
        return max(0.0, when.timestamp() - current)
    except (TypeError, ValueError, OverflowError, OSError):  # year out of range, mktime failing
        return None


def error_from_response(
    method: str, url: str | httpx.URL, status: int, body: bytes, *, note: str = ""
) -> RegistryError:
    """The typed error for an error answer, from its status and (capped) OCI error body.

    ``note`` is appended to the message (why retrying stopped, for instance).
    """
    code: str | None = None
    message = ""
    detail: object = None
    try:
        doc = json.loads(body) if body else None
    except (ValueError, RecursionError):  # 64 KiB of brackets nest past the recursion limit
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("errors"), list) and doc["errors"]:
        first = doc["errors"][0]
        if isinstance(first, dict):
            code = str(first.get("code") or "") or None
            message = str(first.get("message") or "")
            detail = first.get("detail")
    where = f"{method} {redact_url(url)}"
    text = f"{where}: {message}" if message else f"{where}: HTTP {status}"
    if note:
        text = f"{text} ({note})"
    cls: type[RegistryError] = RegistryError
    if status in (401, 403) or code in AUTH_CODES:
        cls = RegistryAuthError
    elif status == 404 or code in NOT_FOUND_CODES:
        cls = RegistryNotFoundError
    return cls(text, code=code, status=status, detail=detail)


# --- connections that could not be made ------------------------------------------------------

# Go's syscall error texts, as its dialer prints them after "connect: ".
_DIAL_ERRNOS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ENETUNREACH: "network is unreachable",
    errno.EHOSTUNREACH: "no route to host",
    errno.EADDRNOTAVAIL: "cannot assign requested address",
}


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and everything behind it: causes, contexts and (trio) exception group members."""
    stack, seen = [exc], set()
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            stack.extend(current.exceptions)
        for nxt in (current.__cause__, current.__context__):
            if nxt is not None:
                stack.append(nxt)


def dial_failure(
    where: str, url: str | httpx.URL, exc: BaseException
) -> RegistryTransportError | None:
    """The error for a connection that was refused or could not be routed, else None.

    Such a failure is not retried (containerd retries only timeouts and cut-off answers), and
    reads as Go's dialer words it: ``dial tcp 127.0.0.1:25999: connect: connection refused``.
    """
    if not isinstance(exc, httpx.ConnectError):
        return None
    parts = urlsplit(str(url))
    name = parts.hostname or ""
    port = url_port(parts)
    address = f"[{name}]:{port}" if ":" in name else f"{name}:{port}"
    for cause in exception_chain(exc):
        if isinstance(cause, socket.gaierror):
            return RegistryTransportError(f"{where}: dial tcp: lookup {name}: no such host")
        if isinstance(cause, OSError) and cause.errno in _DIAL_ERRNOS:
            text = _DIAL_ERRNOS[cause.errno]
            return RegistryTransportError(f"{where}: dial tcp {address}: connect: {text}")
    return None


# --- HTTP clients ---------------------------------------------------------------------------


class ClientPool:
    """The shared ``httpx.AsyncClient`` plus one per distinct TLS setting (custom CA, client cert).

    The shared client is made on first use, not up front: it verifies against the system's CA
    bundle, whose loading was a tenth of a one-shot pull's start-up, and a pull from a loopback
    registry (TLS not verified, or plain HTTP after the fallback) never needs it.
    """

    def __init__(
        self, settings: TransportSettings, default: httpx.AsyncClient | None = None
    ) -> None:
        self.settings = settings
        self._default = default
        self.by_tls: dict[tuple[object, ...], httpx.AsyncClient] = {}
        self._closed = False

    @property
    def default(self) -> httpx.AsyncClient:
        """The client for hosts with the system's trust store (made now if it was not yet).

        Raises:
            RuntimeError: the pool is closed (no client is made that nothing would close).
        """
        if self._default is None:
            self._check_open()
            self._default = make_http_client(self.settings)
        return self._default

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the registry HTTP client pool is closed")

    def for_host(self, host: RegistryHost) -> httpx.AsyncClient:
        if not host.ca_files and not host.client_certs and not host.skip_verify:
            return self.default
        key: tuple[object, ...] = (host.ca_files, host.client_certs, host.skip_verify)
        client = self.by_tls.get(key)
        if client is None:
            self._check_open()
            client = make_http_client(self.settings, verify=ssl_context(host))
            self.by_tls[key] = client
        return client

    async def aclose(self, *, default: bool = True) -> None:
        """Close the clients (``default``: the shared one too, unless the caller owns it)."""
        self._closed = True
        if default and self._default is not None:
            await self._default.aclose()
        for client in self.by_tls.values():
            await client.aclose()
        self.by_tls.clear()


def ssl_context(host: RegistryHost) -> ssl.SSLContext:
    """The TLS context for a host's hosts.toml ``ca``, ``client`` and ``skip_verify``.

    Contexts are shared by every client with the same settings and unchanged files (a fleet of
    simulated nodes builds thousands of clients; loading trust stores costs ~20 ms each).
    """
    files = [*host.ca_files, *(f for pair in host.client_certs for f in pair if f)]
    stamps = tuple(_mtime(f) for f in files)
    return _ssl_context(host.ca_files, host.client_certs, host.skip_verify, stamps)


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return -1  # loading it will raise the useful error


@functools.lru_cache(maxsize=64)
def _ssl_context(
    ca_files: tuple[Path, ...],
    client_certs: tuple[tuple[Path, Path | None], ...],
    skip_verify: bool,
    stamps: tuple[int, ...],
) -> ssl.SSLContext:
    if skip_verify and not ca_files:
        # Nothing is verified: the system's CA bundle (tens of ms to load) would go unused.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    else:
        context = ssl.create_default_context()
    for ca in ca_files:
        context.load_verify_locations(cafile=str(ca))
    for cert, key in client_certs:
        context.load_cert_chain(str(cert), str(key) if key else None)
    if skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


@functools.cache
def default_ssl_context() -> ssl.SSLContext:
    """The system's trust store as one shared context (what ``verify=True`` builds each time).

    Loading the CA bundle costs ~40 ms; a fleet of simulated nodes, each with its own client,
    would otherwise spend 40 s of one core per 1,000 nodes before its first request. A context
    is safe to share between clients and connections once configured.
    """
    return httpx.create_ssl_context()


READ_SIZE = 1 << 20
"""Bytes asked of the socket per read of an HTTP/1.1 body (httpcore's default is 64 KiB).

A layer streams through the event loop in reads: at 64 KiB, 256 MiB is over 4,000 receive
events, each through anyio, httpcore and h11, about a third of the pull's main-thread time. A
read returns what the socket has, so a larger one costs nothing when less has arrived."""


def _larger_reads() -> None:
    """Make httpcore's HTTP/1.1 connections read up to :data:`READ_SIZE` at a time (its class
    attribute ``READ_NUM_BYTES``, the only knob it has; set once, for every client)."""
    from httpcore._async.http11 import AsyncHTTP11Connection

    if AsyncHTTP11Connection.READ_NUM_BYTES < READ_SIZE:
        AsyncHTTP11Connection.READ_NUM_BYTES = READ_SIZE


def _cheaper_idle_checks() -> None:
    """Make httpcore's check of an idle pooled connection cost one ``poll`` (set once).

    Before every request it assigns, and after every answer it closes, httpcore's pool asks
    each idle connection whether its socket is readable (a server that closed it). Its anyio
    stream finds the socket through anyio's typed attributes each time, which builds every
    attribute of the socket anew, ``getpeername`` included: with 8 pulls at once, 19 such lookups
    a request and a fifth of the time httpx spends per request. The stream's socket never
    changes, so it is looked up once per stream; the readiness test is httpcore's own. An
    httpcore without these (private) names keeps its own check.
    """
    try:
        from httpcore._backends.anyio import AnyIOStream
        from httpcore._utils import is_socket_readable
    except ImportError:  # pragma: no cover - the locked httpcore has both
        return

    original = AnyIOStream.get_extra_info
    if getattr(original, "kubelet_sim", False):
        return

    def get_extra_info(self: AnyIOStream, info: str) -> object:
        if info != "is_readable":
            return original(self, info)
        try:
            sock = self.__dict__["_kubelet_sim_socket"]
        except KeyError:
            sock = self.__dict__["_kubelet_sim_socket"] = original(self, "socket")
        return is_socket_readable(sock)

    get_extra_info.kubelet_sim = True  # type: ignore[attr-defined]
    AnyIOStream.get_extra_info = get_extra_info  # type: ignore[method-assign]


def make_http_client(
    settings: TransportSettings, *, verify: ssl.SSLContext | bool = True
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` with explicit timeouts and limits; redirects are ours to follow."""
    _larger_reads()
    _cheaper_idle_checks()
    if verify is True:
        verify = default_ssl_context()
    return httpx.AsyncClient(
        timeout=httpx.Timeout(
            connect=settings.connect_timeout,
            read=settings.stall_timeout,
            write=settings.stall_timeout,
            pool=settings.connect_timeout,
        ),
        limits=httpx.Limits(
            max_connections=settings.max_connections,
            max_keepalive_connections=settings.max_keepalive,
        ),
        follow_redirects=False,
        verify=verify,
        headers={"User-Agent": settings.user_agent},
        trust_env=False,
    )
