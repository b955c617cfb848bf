"""One registry request, done properly: auth challenges, redirects, retries, deadlines, typed errors.

Every call the client makes goes through :meth:`Transport.open` (a streamed answer) or
:meth:`Transport.read` (a small body read whole). A request

- sends a cached ``Authorization`` for the registry's own origin only, answers a 401 challenge once
  through :func:`~kubelet_sim.registry.auth.send_authorized` (the one 401 path) and fails with
  :class:`~kubelet_sim.errors.RegistryAuthError` on a second 401 instead of looping;
- follows up to 10 redirects by hand, dropping ``Authorization`` whenever the origin changes (a
  registry's 307 to blob storage) while keeping ``Range`` and ``Accept``;
- on the last host only (``last_host``), retries answers cut off mid-way (reset, EOF, a broken
  body) and 408/429/500/502/503/504 with bounded exponential backoff, honouring ``Retry-After``
  (seconds or an HTTP date, capped); a mirror that fails is left for the next host at once, as
  containerd does (``resolver.go: doWithRetries(ctx, lastHost)``);
- never retries auth or not-found answers, a refused connection (Go's wording:
  ``dial tcp 127.0.0.1:5000: connect: connection refused``) or a host that does not answer;
- turns error answers into the typed errors of :mod:`kubelet_sim.errors` (through
  :mod:`~kubelet_sim.registry.boundary`).

Timeouts (:class:`TransportSettings`): ``connect_timeout`` (a hosts.toml ``dial_timeout`` overrides it
per host) and ``header_timeout`` (containerd's ``ResponseHeaderTimeout``) bound each attempt, and a
host that lets either pass gave *no answer*: that is reported naming the host and the step, never
retried. ``request_deadline`` bounds one logical request, every attempt and backoff included, and
its body too unless the caller streams a layer (``whole=False``): a layer's body is governed by
``stall_timeout`` (no byte for that long), the no-progress rule of the client. When the deadline
ends a request that got error answers, the last answer is what is reported (a 503 stays a 503).
"""

from __future__ import annotations

import contextlib
import functools
import math
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol
from urllib.parse import urljoin, urlsplit

import anyio
import httpx
import structlog

from kubelet_sim.core.credentials import Credentials
from kubelet_sim.errors import RegistryError, RegistryTransportError
from kubelet_sim.registry.auth import AuthManager, send_authorized
from kubelet_sim.registry.boundary import (
    HTTPX_ERRORS,
    ClientPool,
    dial_failure,
    error_from_response,
    make_http_client,
    parse_retry_after,
    read_capped,
    read_error_body,
    redact_url,
    translate_errors,
    transport_error,
    url_port,
)
from kubelet_sim.registry.hosts import RegistryHost

log = structlog.get_logger(__name__)

__all__ = [
    "MAX_REDIRECTS",
    "RETRYABLE_STATUS",
    "Answer",
    "RequestObserver",
    "RetryPolicy",
    "Transport",
    "TransportSettings",
    "error_from_response",
    "make_http_client",
    "parse_retry_after",
    "redact_url",
]

MAX_REDIRECTS = 10
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
CONTAINERD_AT_ONCE = frozenset({408, 429})
"""containerd retries these at once, without a sleep and without Retry-After."""
CONTAINERD_ONCE_MORE = frozenset({500, 503, 504})
"""containerd repeats these once, on the last host, when the previous answer was another one."""
CONTAINERD_TRANSPORT_DELAY = 0.05
"""containerd's pause before resending after a transient transport error (last host only)."""


class RetryPolicy(StrEnum):
    """How failed requests are retried: ``backoff`` (kubelet-sim's: exponential backoff,
    ``Retry-After`` honoured) or ``containerd`` (``core/remotes/docker/resolver.go``)."""

    BACKOFF = "backoff"
    CONTAINERD = "containerd"


@dataclass(frozen=True, slots=True)
class TransportSettings:
    """Timeouts, retry and connection-pool settings of the shared HTTP client (seconds).

    A deadline or timeout of 0 means none.
    """

    connect_timeout: float = 30.0  # containerd's dial timeout
    header_timeout: float = 30.0  # containerd's ResponseHeaderTimeout: status line and headers
    stall_timeout: float = 30.0  # no byte of a body for this long
    request_deadline: float = 60.0  # one request, all attempts, headers and (not a layer's) body
    max_attempts: int = 4
    backoff_initial: float = 0.5
    backoff_factor: float = 2.0
    backoff_max: float = 10.0
    retry_after_max: float = 60.0
    max_connections: int = 100
    max_keepalive: int = 20
    user_agent: str = "kubelet-sim/0.1"
    retry_policy: RetryPolicy = RetryPolicy.BACKOFF
    """``containerd`` puts containerd's own traffic on a registry under faults: 408/429 again at
    once, 500/503/504 once more on the last host, transport errors after 50 ms, no
    ``Retry-After``; ``max_attempts`` still bounds every request."""
    auth_per_pull: bool = True
    """containerd's: every pull meets the registry's 401 challenge and fetches its own token (a
    resolver and authorizer per ``PullImage``); False caches auth for every pull of the node."""


class RequestObserver(Protocol):
    """Told about every registry answer (for metrics); must not block."""

    def registry_response(self, method: str, status: int | None, duration: float) -> None: ...

    def registry_retry(self, reason: str) -> None: ...


class _NullObserver:
    def registry_response(self, method: str, status: int | None, duration: float) -> None:
        pass

    def registry_retry(self, reason: str) -> None:
        pass


def _origin(url: str | httpx.URL) -> tuple[str, str, int | None]:
    parts = urlsplit(str(url))
    return (parts.scheme, (parts.hostname or "").lower(), url_port(parts))


def _is_permanent(exc: BaseException) -> bool:
    """Failures that a retry cannot fix: a certificate that does not verify."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class _Step(StrEnum):
    """What a request is waiting for; a deadline error names it."""

    HEADERS = "response headers"
    TOKEN = "token request"  # noqa: S105 - a step, not a secret
    BACKOFF = "backoff before a retry"
    BODY = "body"


class _NoAnswer(Exception):
    """The host let the connect or the response-header timeout pass (internal; never escapes)."""

    def __init__(self, step: str, seconds: float) -> None:
        super().__init__(step)
        self.step = step
        self.seconds = seconds


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
    authorize: bool = True


@dataclass(slots=True)
class _Attempts:
    """State of one logical request, shared by its resend after a 401 and its body retries."""

    retry: bool  # the last host: transient failures are retried
    limit: float  # the request deadline in seconds (0: none), for messages
    until: float  # anyio time at which the deadline ends
    count: int = 0
    plain_http: bool = False
    step: _Step = _Step.HEADERS
    url: str = ""  # the URL of the latest attempt
    answer: RegistryError | None = field(default=None, repr=False)  # latest retried error answer
    last_status: int | None = None  # the previous error answer's status (containerd's rule)

    def time_left(self) -> float:
        return self.until - anyio.current_time()


@dataclass(frozen=True, slots=True)
class Answer:
    """A small answer read whole by :meth:`Transport.read`."""

    body: bytes = field(repr=False)
    content_type: str
    url: str


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
        self._pool = ClientPool(self.settings, http)
        self.auth = auth or AuthManager(
            lambda: self._pool.default, per_pull=self.settings.auth_per_pull
        )
        self.observer: RequestObserver = observer or _NullObserver()
        # Loopback registries without settings: "https" or "http" once we know which one answers.
        self._scheme_for: dict[str, str] = {}

    async def aclose(self) -> None:
        """Close the HTTP clients this transport created."""
        await self._pool.aclose(default=self._owns_http)

    def base_url(self, host: RegistryHost) -> str:
        """The host's base URL (``scheme://host/v2``), after any plain-HTTP fallback was learned."""
        url = host.base_url()
        scheme = self._scheme_for.get(host.host)
        if scheme and not url.startswith(f"{scheme}://"):
            url = f"{scheme}://{url.split('://', 1)[1]}"
        return url

    def _attempts(self, last_host: bool, deadline: float | None) -> _Attempts:
        limit = self.settings.request_deadline if deadline is None else deadline
        until = anyio.current_time() + limit if limit > 0 else math.inf
        return _Attempts(retry=last_host, limit=limit, until=until)

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
        whole: bool = True,
        last_host: bool = True,
        authorize: bool = True,
    ) -> AsyncIterator[httpx.Response]:
        """Send one logical request and yield the streamed answer (status in ``ok``).

        ``path`` is relative to the host's base URL (e.g. ``/library/busybox/manifests/latest``) or
        an absolute URL (an upload ``Location``, a layer's foreign URL). The response is closed when
        the block exits; an httpx failure while the block reads the body is raised as
        ``RegistryTransportError``.

        Args:
            deadline: seconds for the whole request (default ``request_deadline``; 0: none).
            whole: the deadline also covers reading the body in the block (False for a layer,
                whose body is bounded by the stall timeout and the client's no-progress rule).
            last_host: retry transient failures; False for a mirror, which is left at once.
            authorize: answer a 401 challenge (False: a 401 is an error, e.g. a foreign URL).

        Raises:
            RegistryError: typed by status and OCI error code, after retries.
        """
        request = _Request(
            method, host, path, scope, creds, dict(headers or {}), content, params, ok, authorize
        )
        state = self._attempts(last_host, deadline)
        async with self._exchange(request, state, whole=whole) as response:
            yield response

    async def read(
        self,
        method: str,
        host: RegistryHost,
        path: str,
        *,
        scope: str,
        limit: int,
        what: str,
        error: type[RegistryError] = RegistryError,
        creds: Credentials | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        last_host: bool = True,
    ) -> Answer:
        """One request whose answer, headers and body, is read whole within the request deadline.

        For manifests and configs (at most ``limit`` bytes, see
        :func:`~kubelet_sim.registry.boundary.read_capped`). A body that breaks off (reset, EOF,
        bad framing) is fetched again on the last host while attempts and deadline last.

        Raises:
            error: the body is over ``limit`` or badly encoded.
            RegistryError: as :meth:`open`.
        """
        request = _Request(
            method, host, path, scope, creds, dict(headers or {}), None, params, frozenset({200})
        )
        state = self._attempts(last_host, None)
        while True:
            try:
                async with self._exchange(request, state, whole=True) as response:
                    body = await read_capped(
                        response, limit=limit, what=f"{what} from {host.host}", error=error
                    )
                    return Answer(body, response.headers.get("content-type", ""), str(response.url))
            except RegistryTransportError as exc:
                delay = self._backoff(state.count, None)
                broken_body = state.step is _Step.BODY and state.time_left() > delay
                if not (broken_body and state.retry and state.count < self.settings.max_attempts):
                    raise
                self.observer.registry_retry(type(exc.__cause__ or exc).__name__)
                log.info("registry.retry", method=method, url=redact_url(state.url), error=str(exc))
                await anyio.sleep(delay)

    @asynccontextmanager
    async def _exchange(
        self, request: _Request, state: _Attempts, *, whole: bool
    ) -> AsyncIterator[httpx.Response]:
        """Send within the deadline and yield the answer, closing it afterwards (see :meth:`open`)."""
        state.step = _Step.HEADERS
        with anyio.CancelScope(deadline=state.until) as scope:
            response = await self._send(request, state)
            if whole:
                state.step = _Step.BODY
                async with _answer(response):
                    yield response
        if scope.cancelled_caught:
            raise self._deadline_error(request, state)
        if not whole:
            async with _answer(response):
                yield response

    def _deadline_error(self, request: _Request, state: _Attempts) -> RegistryError:
        """The request deadline passed: the last error answer if there was one, else the step."""
        limit = f"{state.limit:g}s request deadline"
        if state.answer is not None:
            answer = state.answer
            return type(answer)(
                f"{answer.message} (still failing at the {limit})",
                code=answer.code,
                status=answer.status,
                detail=answer.detail,
            )
        where = f"{request.method} {redact_url(state.url or self._url_for(request, state))}"
        host = request.host.host
        text = {
            _Step.HEADERS: f"no answer from {host} within the {limit} (waiting for response headers)",
            _Step.TOKEN: f"the token request for {host} did not finish within the {limit}",
            _Step.BACKOFF: f"{host} kept failing until the {limit}",
            _Step.BODY: f"the body from {host} was not complete within the {limit}",
        }[state.step]
        return RegistryTransportError(f"{where}: {text}")

    def _url_for(self, request: _Request, state: _Attempts) -> str:
        base = self._attempt_base(request.host, state)
        return request.path if "://" in request.path else base + request.path

    async def _send(self, request: _Request, state: _Attempts) -> httpx.Response:
        """Send until an answer in ``ok``; a 401 challenge is answered by :func:`send_authorized`.

        Both sends :func:`send_authorized` may make share one :class:`_Attempts`, so the retry
        bound and a learnt plain-HTTP fallback hold for the logical request as a whole.
        """

        async def send(authorization: str | None) -> httpx.Response:
            state.step = _Step.HEADERS
            response = await self._send_retrying(request, authorization, state)
            if response.status_code == 401:
                state.step = _Step.TOKEN  # send_authorized now fetches a token
            return response

        if not request.authorize:
            return await send(None)
        return await send_authorized(
            self.auth, request.host.host, request.scope, request.creds, send
        )

    async def _send_retrying(
        self, request: _Request, authorization: str | None, state: _Attempts
    ) -> httpx.Response:
        """Retry failed sends and transient statuses; return an answer in ``ok`` or a challenge.

        A challenge is a 401 from the origin the request was sent to (when ``authorize``); any
        other answer that is not in ``ok`` raises its typed error once retries are spent.
        """
        while True:
            state.count += 1
            base = self._attempt_base(request.host, state)
            url = state.url = self._url_for(request, state)
            try:
                response = await self._follow(request, url, authorization, _origin(base))
            except _NoAnswer as exc:
                raise RegistryTransportError(
                    f"{request.method} {redact_url(url)}: no answer from {request.host.host}: "
                    f"no {exc.step} within {exc.seconds:g}s"
                ) from exc.__cause__
            except HTTPX_ERRORS as exc:
                await self._after_send_error(request, url, exc, state)
                continue
            if state.plain_http:
                self._scheme_for[request.host.host] = "http"
                log.info("registry.http_fallback", host=request.host.host)
            status = response.status_code
            challenge = status == 401 and request.authorize
            if status in request.ok or (challenge and _origin(response.url) == _origin(url)):
                return response
            await self._after_error_answer(request, url, response, state)

    def _attempt_base(self, host: RegistryHost, state: _Attempts) -> str:
        """The base URL for this attempt: plain HTTP once the HTTPS attempt fell back."""
        base = self.base_url(host)
        if state.plain_http and base.startswith("https://"):
            base = "http://" + base[len("https://") :]
        return base

    async def _after_send_error(
        self, request: _Request, url: str, exc: Exception, state: _Attempts
    ) -> None:
        """Fall back to plain HTTP or back off for the next attempt; raise when none is left.

        Raises:
            RegistryTransportError: not the last host, the attempts are spent, the failure is
                permanent (a refused connection, a certificate) or the deadline is too near.
        """
        if not state.plain_http and self._may_fall_back(request.host, url, exc):
            # Docker's rule for loopback registries: HTTPS first, then plain HTTP.
            state.plain_http = True
            state.count -= 1
            return
        where = f"{request.method} {redact_url(url)}"
        dialled = dial_failure(where, url, exc)
        if dialled is not None:
            raise dialled from exc
        delay = self._backoff(state.count, None)
        if self.settings.retry_policy is RetryPolicy.CONTAINERD:
            delay = CONTAINERD_TRANSPORT_DELAY
        if (
            not state.retry
            or state.count >= self.settings.max_attempts
            or _is_permanent(exc)
            or delay >= state.time_left()
        ):
            raise transport_error(where, exc) from exc
        self.observer.registry_retry(type(exc).__name__)
        state.step = _Step.BACKOFF
        await anyio.sleep(delay)

    async def _after_error_answer(
        self, request: _Request, url: str, response: httpx.Response, state: _Attempts
    ) -> None:
        """Close an error answer and back off before a retry of a transient status.

        Raises:
            RegistryError: typed from the status and the (capped) OCI error body, when the status
                is not transient, this is not the last host, the attempts are spent, or the wait
                the registry asks for would pass the request deadline.
        """
        status = response.status_code
        note = ""
        if self.settings.retry_policy is RetryPolicy.CONTAINERD:
            delay = 0.0
            retry = state.count < self.settings.max_attempts and (
                status in CONTAINERD_AT_ONCE
                or (status in CONTAINERD_ONCE_MORE and state.retry and state.last_status != status)
            )
        else:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            delay = self._backoff(state.count, retry_after)
            retry = (
                status in RETRYABLE_STATUS
                and state.retry
                and state.count < self.settings.max_attempts
            )
        state.last_status = status
        if retry and delay >= state.time_left():
            retry = False
            note = f"retrying in {delay:g}s would pass the {state.limit:g}s request deadline"
        if not retry:
            try:
                body = await read_error_body(
                    response, what=f"error answer from {request.host.host}"
                )
            finally:
                await response.aclose()
            raise error_from_response(request.method, response.url, status, body, note=note)
        state.answer = error_from_response(request.method, response.url, status, b"")
        await response.aclose()
        self.observer.registry_retry(str(status))
        log.info(
            "registry.retry",
            method=request.method,
            url=redact_url(url),
            status=status,
            attempt=state.count,
            delay=delay,
        )
        state.step = _Step.BACKOFF
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
                    method,
                    _parsed(url),
                    headers=request_headers,
                    content=content,
                    params=params or None,  # httpx parses the URL again for any params, even {}
                    timeout=self._timeout_for(request.host),
                )
            except httpx.InvalidURL:
                raise RegistryTransportError(
                    f"{method}: the registry sent an unusable URL ({redact_url(url)})"
                ) from None
            started = anyio.current_time()
            response = await self._send_once(client, sent, request.host)
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

    async def _send_once(
        self, client: httpx.AsyncClient, sent: httpx.Request, host: RegistryHost
    ) -> httpx.Response:
        """One exchange up to the response headers, bounded by the header timeout.

        Raises:
            _NoAnswer: the connect or the response-header timeout passed.
        """
        settings = self.settings
        limit = settings.header_timeout if settings.header_timeout > 0 else math.inf
        with anyio.move_on_after(limit) as waiting:
            try:
                return await client.send(sent, stream=True)
            except httpx.ConnectTimeout as exc:
                raise _NoAnswer(
                    "connection", host.dial_timeout or settings.connect_timeout
                ) from exc
            except (httpx.ReadTimeout, httpx.WriteTimeout) as exc:
                raise _NoAnswer("response headers", settings.stall_timeout) from exc
        assert waiting.cancelled_caught
        raise _NoAnswer("response headers", limit)

    def _timeout_for(self, host: RegistryHost) -> httpx.Timeout | httpx._client.UseClientDefault:
        """A host's hosts.toml ``dial_timeout`` replaces the connect timeout for its requests."""
        if host.dial_timeout is None:
            return httpx.USE_CLIENT_DEFAULT
        settings = self.settings
        return httpx.Timeout(
            connect=host.dial_timeout or None,
            read=settings.stall_timeout or None,
            write=settings.stall_timeout or None,
            pool=settings.connect_timeout or None,
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


@functools.lru_cache(maxsize=4096)
def _parsed(url: str) -> httpx.URL:
    """``httpx.URL(url)``, parsed once: a fleet's nodes send the same few URLs all the time
    (URLs are immutable; a bad one raises ``InvalidURL`` every time, it is never cached)."""
    return httpx.URL(url)


@asynccontextmanager
async def _answer(response: httpx.Response) -> AsyncIterator[httpx.Response]:
    """Yield an open answer; httpx failures while its body is read become typed; close it after."""
    try:
        with translate_errors(f"{response.request.method} {redact_url(response.url)}"):
            yield response
    finally:
        # Shielded: a body read that the deadline cancelled still releases its connection.
        with anyio.move_on_after(5, shield=True):
            head = response.request.method == "HEAD"
            if head and not response.is_stream_consumed and not response.is_closed:
                # No body, but until it is read h11 has not seen the message end, and closing
                # the answer unread closes its connection: every resolve opened a new one. (h11
                # frames a HEAD answer as empty: this never waits on the socket. Bytes a server
                # wrongly sends after it fail the connection's next request, which is retried.)
                with contextlib.suppress(httpx.HTTPError):
                    await response.aread()
            await response.aclose()
