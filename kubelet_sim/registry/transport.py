"""One registry request, done properly: auth challenges, redirects, retries, timeouts, typed errors.

Every call the client makes goes through :meth:`Transport.open`. It

- sends a cached ``Authorization`` for the registry's own origin only, answers a 401 challenge once
  through :class:`~kubelet_sim.registry.auth.AuthManager` and fails with
  :class:`~kubelet_sim.errors.RegistryAuthError` on a second 401 instead of looping;
- follows up to 10 redirects by hand, dropping ``Authorization`` whenever the origin changes (a
  registry's 307 to blob storage) while keeping ``Range`` and ``Accept``;
- retries connection errors and 408/429/500/502/503/504 with bounded exponential backoff, honouring
  ``Retry-After`` (seconds or an HTTP date, capped), and never retries auth or not-found answers;
- turns error answers into the typed errors of :mod:`kubelet_sim.errors`, reading at most 64 KiB of
  the body and parsing the OCI ``{"errors": [...]}`` document.

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
from kubelet_sim.registry.auth import AuthManager
from kubelet_sim.registry.hosts import RegistryHost

log = structlog.get_logger(__name__)

MAX_ERROR_BODY = 64 * 1024
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


async def read_capped(response: httpx.Response, limit: int = MAX_ERROR_BODY) -> bytes:
    """At most ``limit`` bytes of a streamed response body; the rest is not read."""
    chunks: list[bytes] = []
    total = 0
    try:
        async for chunk in response.aiter_bytes():
            chunks.append(chunk)
            total += len(chunk)
            if total >= limit:
                break
    except httpx.HTTPError:
        pass
    return b"".join(chunks)[:limit]


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
        an absolute URL (an upload ``Location``). The response is closed when the block exits.

        Raises:
            RegistryError: typed by status and OCI error code, after retries.
        """
        limit = self.settings.request_deadline if deadline is None else deadline
        try:
            with anyio.fail_after(limit or None):
                response = await self._send(
                    method, host, path, scope, creds, dict(headers or {}), content, params, ok
                )
        except TimeoutError as exc:
            where = path if "://" in path else self.base_url(host) + path
            raise RegistryTransportError(
                f"{method} {redact_url(where)}: no answer within the {limit:g}s request deadline"
            ) from exc
        try:
            yield response
        finally:
            await response.aclose()

    async def _send(
        self,
        method: str,
        host: RegistryHost,
        path: str,
        scope: str,
        creds: Credentials | None,
        headers: dict[str, str],
        content: bytes | None,
        params: Mapping[str, str] | None,
        ok: frozenset[int],
    ) -> httpx.Response:
        auth_header = self.auth.header_for(host.host, scope, creds)
        used_fresh_auth = False
        plain_http = False
        attempt = 0
        while True:
            attempt += 1
            base = self.base_url(host)
            if plain_http and base.startswith("https://"):
                base = "http://" + base[len("https://") :]
            url = path if "://" in path else base + path
            try:
                response = await self._follow(
                    method, host, url, headers, auth_header, content, params, _origin(base)
                )
            except (httpx.TransportError, ssl.SSLError) as exc:
                if not plain_http and self._may_fall_back(host, url, exc):
                    # Docker's rule for loopback registries: HTTPS first, then plain HTTP.
                    plain_http = True
                    attempt -= 1
                    continue
                if attempt >= self.settings.max_attempts or _is_permanent(exc):
                    raise RegistryTransportError(
                        f"{method} {redact_url(url)}: {type(exc).__name__}: {exc}"
                    ) from exc
                self.observer.registry_retry(type(exc).__name__)
                await anyio.sleep(self._backoff(attempt, None))
                continue
            if plain_http:
                self._scheme_for[host.host] = "http"
                log.info("registry.http_fallback", host=host.host)
            status = response.status_code
            if status in ok:
                return response
            if status == 401 and _origin(response.url) == _origin(url):
                challenges = response.headers.get_list("www-authenticate")
                await response.aclose()
                if used_fresh_auth or not challenges:
                    raise RegistryAuthError(
                        f"{method} {redact_url(url)}: unauthorized after authenticating",
                        code="UNAUTHORIZED",
                        status=401,
                    )
                if auth_header is not None:
                    self.auth.invalidate(host.host, scope, creds, rejected=auth_header)
                auth_header = await self.auth.authorize(host.host, scope, challenges, creds)
                used_fresh_auth = True
                continue
            if status in RETRYABLE_STATUS and attempt < self.settings.max_attempts:
                retry_after = parse_retry_after(response.headers.get("retry-after"))
                await response.aclose()
                self.observer.registry_retry(str(status))
                delay = self._backoff(attempt, retry_after)
                log.info(
                    "registry.retry",
                    method=method,
                    url=redact_url(url),
                    status=status,
                    attempt=attempt,
                    delay=delay,
                )
                await anyio.sleep(delay)
                continue
            body = await read_capped(response)
            await response.aclose()
            raise error_from_response(method, response.url, status, body)

    async def _follow(
        self,
        method: str,
        host: RegistryHost,
        url: str,
        headers: dict[str, str],
        auth_header: str | None,
        content: bytes | None,
        params: Mapping[str, str] | None,
        registry_origin: tuple[str, str, int | None],
    ) -> httpx.Response:
        client = self._pool.for_host(host)
        # Authorization and hosts.toml headers go to the registry's own origin only: never to
        # blob storage a redirect points at, nor to an upload Location on another host.
        for _ in range(MAX_REDIRECTS + 1):
            request_headers = dict(headers)
            if _origin(url) == registry_origin:
                for name, value in host.headers:
                    request_headers.setdefault(name, value)
                if auth_header is not None:
                    request_headers["Authorization"] = auth_header
            try:
                request = client.build_request(
                    method, url, headers=request_headers, content=content, params=params
                )
            except httpx.InvalidURL:
                raise RegistryTransportError(
                    f"{method}: the registry sent an unusable URL ({redact_url(url)})"
                ) from None
            started = anyio.current_time()
            response = await client.send(request, stream=True)
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
