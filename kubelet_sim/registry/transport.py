"""One registry request, done properly: auth challenges, redirects, retries, timeouts, typed errors.

Every call the client makes goes through :meth:`Transport.open`. It

- sends a cached ``Authorization`` for the registry's own origin only, answers a 401 challenge once
  through :func:`~kubelet_sim.registry.auth.send_authorized` (the one 401 path) and fails with
  :class:`~kubelet_sim.errors.RegistryAuthError` on a second 401 instead of looping;
- follows up to 10 redirects by hand, dropping ``Authorization`` whenever the origin changes (a
  registry's 307 to blob storage) while keeping ``Range`` and ``Accept``;
- retries connection errors and 408/429/500/502/503/504 with bounded exponential backoff, honouring
  ``Retry-After`` (seconds or an HTTP date, capped), and never retries auth or not-found answers;
- turns error answers into the typed errors of :mod:`kubelet_sim.errors`, reading at most 64 KiB of
  the body and parsing the OCI ``{"errors": [...]}`` document, and httpx failures into
  :class:`~kubelet_sim.errors.RegistryTransportError` (both through
  :mod:`~kubelet_sim.registry.boundary`).

Timeouts: httpx's per-read timeout is the stall timeout (no bytes for N seconds); the overall deadline
of a request that is not a blob body is enforced with ``anyio.fail_after``.
"""

from __future__ import annotations

import email.utils
import json
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import SplitResult, urljoin, urlsplit

import anyio
import httpx
import structlog

from kubelet_sim.core.credentials import Credentials
from kubelet_sim.errors import (
    RegistryAuthError,
    RegistryError,
    RegistryNotFoundError,
    RegistryTransportError,
)
from kubelet_sim.registry.auth import AuthManager, send_authorized
from kubelet_sim.registry.boundary import (
    HTTPX_ERRORS,
    read_error_body,
    translate_errors,
    transport_error,
)
from kubelet_sim.registry.hosts import RegistryHost

log = structlog.get_logger(__name__)

MAX_REDIRECTS = 10
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
NOT_FOUND_CODES = frozenset({"MANIFEST_UNKNOWN", "BLOB_UNKNOWN", "NAME_UNKNOWN"})
AUTH_CODES = frozenset({"UNAUTHORIZED", "DENIED"})


@dataclass(frozen=True, slots=True)
class TransportSettings:
    """Timeouts, retry and connection-pool settings of the shared HTTP client."""

    connect_timeout: float = 30.0
    stall_timeout: float = 30.0
    request_deadline: float = 120.0
    max_attempts: int = 4
    backoff_initial: float = 0.5
    backoff_factor: float = 2.0
    backoff_max: float = 10.0
    retry_after_max: float = 60.0
    max_connections: int = 100
    max_keepalive: int = 20
    user_agent: str = "kubelet-sim/0.1"


class RequestObserver(Protocol):
    """Told about every registry answer (for metrics); must not block."""

    def registry_response(self, method: str, status: int | None, duration: float) -> None: ...

    def registry_retry(self, reason: str) -> None: ...


class _NullObserver:
    def registry_response(self, method: str, status: int | None, duration: float) -> None:
        pass

    def registry_retry(self, reason: str) -> None:
        pass


@dataclass(slots=True)
class _ClientPool:
    """The shared ``httpx.AsyncClient`` plus one per distinct TLS setting (custom CA, client cert)."""

    settings: TransportSettings
    default: httpx.AsyncClient
    by_tls: dict[tuple[object, ...], httpx.AsyncClient] = field(default_factory=dict)

    def for_host(self, host: RegistryHost) -> httpx.AsyncClient:
        if not host.ca_files and not host.client_certs and not host.skip_verify:
            return self.default
        key: tuple[object, ...] = (host.ca_files, host.client_certs, host.skip_verify)
        client = self.by_tls.get(key)
        if client is None:
            client = make_http_client(self.settings, verify=_ssl_context(host))
            self.by_tls[key] = client
        return client

    async def aclose(self) -> None:
        await self.default.aclose()
        for client in self.by_tls.values():
            await client.aclose()
        self.by_tls.clear()


def _ssl_context(host: RegistryHost) -> ssl.SSLContext:
    context = ssl.create_default_context()
    for ca in host.ca_files:
        context.load_verify_locations(cafile=str(ca))
    for cert, key in host.client_certs:
        context.load_cert_chain(str(cert), str(key) if key else None)
    if host.skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def make_http_client(
    settings: TransportSettings, *, verify: ssl.SSLContext | bool = True
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` with explicit timeouts and limits; redirects are ours to follow."""
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


def _port(parts: SplitResult) -> int | None:
    try:
        return parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return -1  # an invalid port: an origin of its own, refused when the request is built


def _origin(url: str | httpx.URL) -> tuple[str, str, int | None]:
    parts = urlsplit(str(url))
    return (parts.scheme, (parts.hostname or "").lower(), _port(parts))


def _is_permanent(exc: BaseException) -> bool:
    """Failures that a retry cannot fix: a certificate that does not verify."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def redact_url(url: str | httpx.URL) -> str:
    """The URL without query string or userinfo (pre-signed storage URLs carry secrets there)."""
    parts = urlsplit(str(url))
    host = parts.hostname or ""
    port = _port(parts)
    if port not in (None, -1, {"http": 80, "https": 443}.get(parts.scheme)):
        host = f"{host}:{port}"
    return f"{parts.scheme}://{host}{parts.path}"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def error_from_response(
    method: str, url: str | httpx.URL, status: int, body: bytes
) -> RegistryError:
    """The typed error for an error answer, from its status and (capped) OCI error body."""
    code: str | None = None
    message = ""
    detail: object = None
    try:
        doc = json.loads(body) if body else None
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("errors"), list) and doc["errors"]:
        first = doc["errors"][0]
        if isinstance(first, dict):
            code = str(first.get("code") or "") or None
            message = str(first.get("message") or "")
            detail = first.get("detail")
    where = f"{method} {redact_url(url)}"
    text = f"{where}: {message}" if message else f"{where}: HTTP {status}"
    cls: type[RegistryError] = RegistryError
    if status in (401, 403) or code in AUTH_CODES:
        cls = RegistryAuthError
    elif status == 404 or code in NOT_FOUND_CODES:
        cls = RegistryNotFoundError
    return cls(text, code=code, status=status, detail=detail)


@dataclass(frozen=True, slots=True)
class _Request:
    """One logical request, as :meth:`Transport.open` was asked for it."""

    method: str
    host: RegistryHost
    path: str
    scope: str
    creds: Credentials | None = field(repr=False)
    headers: dict[str, str] = field(repr=False)
    content: bytes | None = field(repr=False)
    params: Mapping[str, str] | None
    ok: frozenset[int]


@dataclass(slots=True)
class _Attempts:
    """Retry state of one logical request, shared by its resend after a 401."""

    count: int = 0
    plain_http: bool = False


class Transport:
    """Registry requests over a shared HTTP client pool, with auth, redirects and retries."""

    def __init__(
        self,
        *,
        settings: TransportSettings | None = None,
        http: httpx.AsyncClient | None = None,
        auth: AuthManager | None = None,
        observer: RequestObserver | None = None,
    ) -> None:
        self.settings = settings or TransportSettings()
        self._owns_http = http is None
        default = http or make_http_client(self.settings)
        self._pool = _ClientPool(self.settings, default)
        self.auth = auth or AuthManager(default)
        self.observer: RequestObserver = observer or _NullObserver()
        # Loopback registries without settings: "https" or "http" once we know which one answers.
        self._scheme_for: dict[str, str] = {}

    async def aclose(self) -> None:
        """Close the HTTP clients this transport created."""
        if self._owns_http:
            await self._pool.aclose()
        else:
            for client in self._pool.by_tls.values():
                await client.aclose()

    def base_url(self, host: RegistryHost) -> str:
        """The host's base URL (``scheme://host/v2``), after any plain-HTTP fallback was learned."""
        url = host.base_url()
        scheme = self._scheme_for.get(host.host)
        if scheme and not url.startswith(f"{scheme}://"):
            url = f"{scheme}://{url.split('://', 1)[1]}"
        return url

    @asynccontextmanager
    async def open(
        self,
        method: str,
        host: RegistryHost,
        path: str,
        *,
        scope: str,
        creds: Credentials | None = None,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        params: Mapping[str, str] | None = None,
        ok: frozenset[int] = frozenset({200}),
        deadline: float | None = None,
    ) -> AsyncIterator[httpx.Response]:
        """Send one logical request and yield the streamed answer (status in ``ok``).

        ``path`` is relative to the host's base URL (e.g. ``/library/busybox/manifests/latest``) or
        an absolute URL (an upload ``Location``). The response is closed when the block exits; an
        httpx failure while the block reads the body is raised as ``RegistryTransportError``.

        Raises:
            RegistryError: typed by status and OCI error code, after retries.
        """
        request = _Request(
            method, host, path, scope, creds, dict(headers or {}), content, params, ok
        )
        limit = self.settings.request_deadline if deadline is None else deadline
        try:
            with anyio.fail_after(limit or None):
                response = await self._send(request)
        except TimeoutError as exc:
            where = path if "://" in path else self.base_url(host) + path
            raise RegistryTransportError(
                f"{method} {redact_url(where)}: no answer within the {limit:g}s request deadline"
            ) from exc
        try:
            with translate_errors(f"{method} {redact_url(response.url)}"):
                yield response
        finally:
            await response.aclose()

    async def _send(self, request: _Request) -> httpx.Response:
        """Send until an answer in ``ok``; a 401 challenge is answered by :func:`send_authorized`.

        Both sends :func:`send_authorized` may make share one :class:`_Attempts`, so the retry
        bound and a learnt plain-HTTP fallback hold for the logical request as a whole.
        """
        attempts = _Attempts()

        async def send(authorization: str | None) -> httpx.Response:
            return await self._send_retrying(request, authorization, attempts)

        return await send_authorized(
            self.auth, request.host.host, request.scope, request.creds, send
        )

    async def _send_retrying(
        self, request: _Request, authorization: str | None, attempts: _Attempts
    ) -> httpx.Response:
        """Retry failed sends and transient statuses; return an answer in ``ok`` or a challenge.

        A challenge is a 401 from the origin the request was sent to; any other answer that is
        not in ``ok`` raises its typed error once retries are spent.
        """
        while True:
            attempts.count += 1
            base = self._attempt_base(request.host, attempts)
            url = request.path if "://" in request.path else base + request.path
            try:
                response = await self._follow(request, url, authorization, _origin(base))
            except HTTPX_ERRORS as exc:
                await self._after_send_error(request, url, exc, attempts)
                continue
            if attempts.plain_http:
                self._scheme_for[request.host.host] = "http"
                log.info("registry.http_fallback", host=request.host.host)
            status = response.status_code
            if status in request.ok or (status == 401 and _origin(response.url) == _origin(url)):
                return response
            await self._after_error_answer(request, url, response, attempts)

    def _attempt_base(self, host: RegistryHost, attempts: _Attempts) -> str:
        """The base URL for this attempt: plain HTTP once the HTTPS attempt fell back."""
        base = self.base_url(host)
        if attempts.plain_http and base.startswith("https://"):
            base = "http://" + base[len("https://") :]
        return base

    async def _after_send_error(
        self, request: _Request, url: str, exc: Exception, attempts: _Attempts
    ) -> None:
        """Fall back to plain HTTP or back off for the next attempt; raise when none is left.

        Raises:
            RegistryTransportError: the attempts are spent or the failure is permanent.
        """
        if not attempts.plain_http and self._may_fall_back(request.host, url, exc):
            # Docker's rule for loopback registries: HTTPS first, then plain HTTP.
            attempts.plain_http = True
            attempts.count -= 1
            return
        if attempts.count >= self.settings.max_attempts or _is_permanent(exc):
            raise transport_error(f"{request.method} {redact_url(url)}", exc) from exc
        self.observer.registry_retry(type(exc).__name__)
        await anyio.sleep(self._backoff(attempts.count, None))

    async def _after_error_answer(
        self, request: _Request, url: str, response: httpx.Response, attempts: _Attempts
    ) -> None:
        """Close an error answer and back off before a retry of a transient status.

        Raises:
            RegistryError: typed from the status and the (capped) OCI error body, when the status
                is not transient or the attempts are spent.
        """
        status = response.status_code
        if status not in RETRYABLE_STATUS or attempts.count >= self.settings.max_attempts:
            try:
                body = await read_error_body(
                    response, what=f"error answer from {request.host.host}"
                )
            finally:
                await response.aclose()
            raise error_from_response(request.method, response.url, status, body)
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        await response.aclose()
        self.observer.registry_retry(str(status))
        delay = self._backoff(attempts.count, retry_after)
        log.info(
            "registry.retry",
            method=request.method,
            url=redact_url(url),
            status=status,
            attempt=attempts.count,
            delay=delay,
        )
        await anyio.sleep(delay)

    async def _follow(
        self,
        request: _Request,
        url: str,
        auth_header: str | None,
        registry_origin: tuple[str, str, int | None],
    ) -> httpx.Response:
        """Send once, following up to :data:`MAX_REDIRECTS` redirects by hand."""
        client = self._pool.for_host(request.host)
        method, content, params = request.method, request.content, request.params
        # Authorization and hosts.toml headers go to the registry's own origin only: never to
        # blob storage a redirect points at, nor to an upload Location on another host.
        for _ in range(MAX_REDIRECTS + 1):
            request_headers = dict(request.headers)
            if _origin(url) == registry_origin:
                for name, value in request.host.headers:
                    request_headers.setdefault(name, value)
                if auth_header is not None:
                    request_headers["Authorization"] = auth_header
            try:
                sent = client.build_request(
                    method, url, headers=request_headers, content=content, params=params
                )
            except httpx.InvalidURL:
                raise RegistryTransportError(
                    f"{method}: the registry sent an unusable URL ({redact_url(url)})"
                ) from None
            started = anyio.current_time()
            response = await client.send(sent, stream=True)
            self.observer.registry_response(
                method, response.status_code, anyio.current_time() - started
            )
            location = response.headers.get("location")
            if response.status_code in (301, 302, 303, 307, 308) and location:
                await response.aclose()
                url = urljoin(str(response.url), location)
                params = None
                if response.status_code == 303:
                    method, content = "GET", None
                continue
            return response
        raise RegistryTransportError(
            f"{method} {redact_url(url)}: more than {MAX_REDIRECTS} redirects"
        )

    def _may_fall_back(self, host: RegistryHost, url: str, exc: Exception) -> bool:
        """True when a loopback registry without settings failed over HTTPS (as Docker retries)."""
        return (
            host.allow_http_fallback
            and url.startswith("https://")
            and isinstance(exc, httpx.ConnectError | ssl.SSLError)
        )

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.settings.retry_after_max)
        delay = self.settings.backoff_initial * self.settings.backoff_factor ** (attempt - 1)
        return float(min(delay, self.settings.backoff_max))
