"""Lifecycle hooks: run a postStart or preStop handler (exec, httpGet, sleep) as the kubelet does.

Models ``pkg/kubelet/lifecycle/handlers.go`` (``handlerRunner.Run``) with the request building of
``pkg/probe/http/request.go`` and the port lookup of ``pkg/probe/util.go``, and the event texts
and preStop timing of ``pkg/kubelet/kuberuntime/kuberuntime_container.go``:

- **exec**: ``ExecSync`` in the container. A non-zero exit fails with the CRI client's error
  ``command '<argv>' exited with N: <stderr>`` and the output quoted after ``message:``; a runtime
  error (a timeout: ``command "<argv>" timed out``) fails with its text.
- **httpGet**: one GET to ``scheme://host:port/path`` (host defaults to the pod IP; a named port
  is looked up in the container's ports, then read as a number). No status code fails the hook:
  upstream checks only that a response came (kubernetes/kubernetes#56963). The body is read up to
  10 KiB and discarded. Redirects are followed to the same host name only, at most 9. HTTPS skips
  certificate verification; an HTTPS request answered in plain HTTP is retried once over HTTP
  without ``Authorization`` and, if that works, counts as a success with a
  ``LifecycleHTTPFallback`` event.
- **sleep**: waits ``seconds``; cut short by the hook's context it fails.

The runner's failure message is upstream's (``format.Pod`` names the pod ``name_namespace(uid)``).
It is what ``startContainer`` returns with ``PostStartHookError`` (the container's waiting
message) and what the kubelet logs; the **events** carry fixed texts (``PostStartHook failed``,
``PreStopHook failed``) "so that secrets won't leak from the server". Header values never appear
in a message or a log line.

Upstream gives hooks no timeout of their own: exec runs with ``ExecSync`` timeout 0, the HTTP
client has none, and postStart blocks the pod worker until the hook returns. The only bound is
preStop's: ``killContainer`` waits at most the grace period for it (``executePreStopHook``),
then stops the container with what is left of the grace period, at least 2 s. :func:`hook_timeout`
and :func:`execute_pre_stop_hook` model that.
"""

from __future__ import annotations

import contextlib
import errno as errno_codes
import math
import os
import re
import socket
import ssl
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Final, cast
from urllib.parse import urljoin, urlsplit

import anyio
import h11
import httpx
import structlog

from kubelet_sim.core.pods import PodRef
from kubelet_sim.core.reference import go_quote
from kubelet_sim.engine.workers import format_pod
from kubelet_sim.errors import ContainerRuntimeError
from kubelet_sim.k8s.objects import Container, Pod
from kubelet_sim.k8s.podspec import ExecAction, HTTPGetAction, HTTPHeader, LifecycleHandler
from kubelet_sim.runtime.port import RuntimeHandler
from kubelet_sim.telemetry.events import EventReason, EventType

__all__ = [
    "CRI_REQUEST_TIMEOUT",
    "KILLING_MESSAGE_FAILED_POST_START",
    "LIFECYCLE_HTTP_FALLBACK",
    "MAX_RESPONSE_BODY",
    "MINIMUM_GRACE_PERIOD",
    "POST_START_HOOK_ERROR",
    "POST_START_HOOK_FAILED",
    "PRE_STOP_HOOK_FAILED",
    "USER_AGENT",
    "HookKind",
    "HookRunner",
    "HookRunnerStatistics",
    "PreStopOutcome",
    "execute_pre_stop_hook",
    "failed_hook_event",
    "format_pod_name",
    "hook_timeout",
    "http_fallback_message",
    "lifecycle_http_client",
    "resolve_container_port",
    "stop_timeout_after_pre_stop",
]

log = structlog.get_logger(__name__)

POST_START_HOOK_FAILED: Final = "PostStartHook failed"
"""The ``FailedPostStartHook`` event's message (the runner's message is not put in the event)."""
PRE_STOP_HOOK_FAILED: Final = "PreStopHook failed"
"""The ``FailedPreStopHook`` event's message."""
POST_START_HOOK_ERROR: Final = "PostStartHookError"
"""``ErrPostStartHook``: the sync result's error after a failed postStart (a waiting reason)."""
KILLING_MESSAGE_FAILED_POST_START: Final = "FailedPostStartHook"
"""The ``Killing`` event's message when a failed postStart kills the container."""
LIFECYCLE_HTTP_FALLBACK: Final = "LifecycleHTTPFallback"
"""Warning event reason: an HTTPS hook got an HTTP answer and the HTTP retry worked."""
MINIMUM_GRACE_PERIOD: Final = 2
"""``minimumGracePeriodInSeconds``: the least a container gets between SIGTERM and SIGKILL."""
MAX_RESPONSE_BODY: Final = 10 << 10
"""``maxRespBodyLength``: how much of a hook's response body is read (and discarded)."""
USER_AGENT: Final = "kube-lifecycle/1.35"
"""``kube-<purpose>/<major>.<minor>`` of the kubelet line kubelet-sim models (v1.35)."""
CRI_REQUEST_TIMEOUT: Final = 120.0
"""The CRI client's request timeout, added to an exec's own (``r.timeout + timeout``)."""

_MAX_REDIRECTS: Final = 10  # RedirectChecker: "stopped after 10 redirects"
_REDIRECT_CODES: Final = frozenset({301, 302, 303, 307, 308})
_SLEEP_TERMINATED: Final = "container terminated before sleep hook finished"
# OpenSSL's reasons for a first record that is not TLS: what a plain HTTP answer produces. Go
# recognises the answer itself ("server gave HTTP response to HTTPS client"); a server that
# speaks neither fails the HTTP retry too, so the outcome is upstream's either way.
_NOT_TLS_REASONS: Final = frozenset(
    {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG", "UNKNOWN_PROTOCOL"}
)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # httpguts.ValidHeaderFieldName
_HOST_HEADER = re.compile(r"[!$%&'()*+,\-.0-9:;=A-Z\[\]_a-z~]*")  # httpguts.ValidHostHeader
_GO_INT = re.compile(r"[+-]?[0-9]+")  # strconv.Atoi's syntax
_INT64_MAX: Final = (1 << 63) - 1
_GO_POINTER: Final = "0xc000010000"


class HookKind(StrEnum):
    POST_START = "PostStart"
    PRE_STOP = "PreStop"


def hook_timeout(kind: HookKind, grace_period: float) -> float:
    """How long the kubelet waits for a hook: postStart without bound, preStop the grace period.

    Upstream passes ``ExecSync`` timeout 0 and uses an HTTP client without a timeout, so
    postStart holds the pod worker until it returns (``math.inf``, the ``timeout`` to give
    :meth:`HookRunner.run`). ``executePreStopHook`` stops *waiting* after ``grace_period``
    seconds without cancelling the hook's context and records no event then: run preStop with
    :func:`execute_pre_stop_hook`, which models that, rather than with this as ``timeout``.
    """
    return math.inf if kind is HookKind.POST_START else max(grace_period, 0.0)


def stop_timeout_after_pre_stop(grace_period: int, pre_stop_seconds: int) -> int:
    """The ``StopContainer`` timeout once preStop took ``pre_stop_seconds`` (whole seconds)."""
    return max(grace_period - pre_stop_seconds, MINIMUM_GRACE_PERIOD)


def failed_hook_event(kind: HookKind) -> tuple[EventType, EventReason, str]:
    """The Warning event ``kuberuntime`` records for a failed hook: type, reason, message."""
    if kind is HookKind.POST_START:
        return EventType.WARNING, EventReason.FAILED_POST_START_HOOK, POST_START_HOOK_FAILED
    return EventType.WARNING, EventReason.FAILED_PRE_STOP_HOOK, PRE_STOP_HOOK_FAILED


def http_fallback_message(host: str) -> str:
    """The ``LifecycleHTTPFallback`` event's message; ``host`` is ``host:port``."""
    return f"request to HTTPS lifecycle hook {host} got HTTP response, retry with HTTP succeeded"


def format_pod_name(pod: Pod) -> str:
    """``format.Pod``: ``name_namespace(uid)``."""
    return format_pod(PodRef(namespace=pod.namespace, name=pod.name, uid=pod.uid))


def lifecycle_http_client(
    *, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """The client hooks need (``insecureContainerLifecycleHTTPClient``).

    No certificate verification (the kubelet has nothing to verify a pod's certificate with), no
    proxy or ``.netrc`` from the environment, no cookie jar and no automatic redirects; the
    runner's requests carry no timeout of their own. The runner follows redirects itself, as
    ``RedirectChecker(false)`` does. Like upstream's, the client must never be given credentials.
    """
    return httpx.AsyncClient(
        verify=False,  # noqa: S501 - upstream's InsecureSkipVerify: pods' certificates are unknown
        trust_env=False,
        follow_redirects=False,
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
        transport=transport,
    )


@dataclass(frozen=True, slots=True)
class _Failure:
    """An error's text, as Go's ``%v`` would print it."""

    text: str
    http_response_to_https: bool = False


def resolve_container_port(port: int | str, container: Container) -> int | str:
    """``probe.ResolveContainerPort``: the port number, or upstream's error text.

    A name is looked up in the container's ports first, then read as a number (``strconv.Atoi``);
    the number must be 1-65535.
    """
    if isinstance(port, int):
        number = port
    else:
        found = next((p.container_port for p in container.ports if p.name == port), None)
        if found is not None:
            number = found
        elif not _GO_INT.fullmatch(port):
            return f"strconv.Atoi: parsing {go_quote(port)}: invalid syntax"
        elif abs(int(port)) > _INT64_MAX:
            return f"strconv.Atoi: parsing {go_quote(port)}: value out of range"
        else:
            number = int(port)
    if 0 < number < 65536:
        return number
    return f"invalid port number: {number}"


@dataclass(frozen=True, slots=True)
class HookRunnerStatistics:
    """Counters since the runner was made (upstream's ``lifecycle_handler_*`` metrics and more)."""

    runs: int
    failures: int
    http_fallbacks: int
    """``kubelet_lifecycle_handler_http_fallbacks_total``."""
    sleeps_terminated: int
    """``kubelet_lifecycle_handler_sleep_terminated_total``."""


class HookRunner:
    """Runs lifecycle handlers (``handlerRunner``).

    Args:
        http: the client for httpGet hooks; make it with :func:`lifecycle_http_client` (HTTPS
            without verification, nothing from the environment).
        on_http_fallback: called with the pod and the ``LifecycleHTTPFallback`` message when an
            HTTPS hook succeeded over HTTP (the caller records the Warning event on the pod).
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        on_http_fallback: Callable[[Pod, str], None] | None = None,
    ) -> None:
        self._http = http
        self._on_http_fallback = on_http_fallback
        self._runs = 0
        self._failures = 0
        self._http_fallbacks = 0
        self._sleeps_terminated = 0

    def statistics(self) -> HookRunnerStatistics:
        return HookRunnerStatistics(
            runs=self._runs,
            failures=self._failures,
            http_fallbacks=self._http_fallbacks,
            sleeps_terminated=self._sleeps_terminated,
        )

    async def run(
        self,
        handler: LifecycleHandler,
        *,
        runtime: RuntimeHandler,
        container_id: str,
        pod: Pod,
        container: Container,
        pod_ip: str,
        timeout: float,  # noqa: ASYNC109 - passed on as ExecSync's timeout (RuntimeHandler port)
    ) -> str | None:
        """Run ``handler``; None when it succeeded, else upstream's failure message.

        Args:
            timeout: the hook's context: when it ends first, the hook is cut short as a cancelled
                context cuts it upstream (exec gets it as its ``ExecSync`` timeout). ``math.inf``
                for none; see :func:`hook_timeout`.
        """
        self._runs += 1
        if handler.exec is not None:
            action = "exec"
            message = await self._exec(handler.exec, runtime, container_id, pod, container, timeout)
        elif handler.http_get is not None:
            action = "httpGet"
            message = await self._http_get(handler.http_get, pod, container, pod_ip, timeout)
        elif handler.sleep is not None:
            action = "sleep"
            message = await self._sleep(handler.sleep.seconds, pod, container, timeout)
        else:
            action = "invalid"
            # Go's %v of the handler: Exec, HTTPGet, TCPSocket, Sleep; a set pointer prints as an
            # address, a fixed one here so the message stays the same between runs.
            tcp = "<nil>" if handler.tcp_socket is None else _GO_POINTER
            message = f"Cannot run handler: invalid handler: &{{<nil> <nil> {tcp} <nil>}}"
        if message is not None:
            self._failures += 1
            # The message stays out of the log line: an exec's output can hold anything.
            log.info(
                "lifecycle hook failed",
                pod=f"{pod.namespace}/{pod.name}",
                container=container.name,
                action=action,
            )
        return message

    async def _exec(
        self,
        action: ExecAction,
        runtime: RuntimeHandler,
        container_id: str,
        pod: Pod,
        container: Container,
        limit: float,
    ) -> str | None:
        command = action.command
        output = b""
        error = ""
        with anyio.move_on_after(limit + CRI_REQUEST_TIMEOUT) as scope:
            try:
                result = await runtime.exec_sync(container_id, command, limit)
            except ContainerRuntimeError as err:
                error = err.message
            else:
                if result.exit_code == 0:
                    return None
                output = result.output
                # ExecResult carries one combined output, so the CRI client's "<stderr>" part is
                # left empty and the whole output goes where upstream quotes stdout+stderr.
                error = f"command '{' '.join(command)}' exited with {result.exit_code}: "
        if scope.cancelled_caught:
            error = f"command {go_quote(' '.join(command))} timed out"  # DeadlineExceeded
        return (
            f"Exec lifecycle hook ([{' '.join(command)}]) for Container {go_quote(container.name)}"
            f" in Pod {go_quote(format_pod_name(pod))} failed - error: {error}, message: "
            f"{_go_quote_bytes(output)}"
        )

    async def _sleep(
        self, seconds: int, pod: Pod, container: Container, limit: float
    ) -> str | None:
        wait = max(seconds, 0)
        if wait <= limit:
            await anyio.sleep(wait)
            return None
        await anyio.sleep(limit)
        self._sleeps_terminated += 1
        return (
            f"Sleep lifecycle hook ({seconds}) for Container {go_quote(container.name)} in Pod "
            f"{go_quote(format_pod_name(pod))} failed - error: {_SLEEP_TERMINATED}"
        )

    async def _http_get(
        self, action: HTTPGetAction, pod: Pod, container: Container, pod_ip: str, limit: float
    ) -> str | None:
        failure = await self._http_get_error(action, pod, container, pod_ip, limit)
        if failure is None:
            return None
        return (
            f"HTTP lifecycle hook ({action.path}) for Container {go_quote(container.name)} in Pod "
            f"{go_quote(format_pod_name(pod))} failed - error: {failure.text}"
        )

    async def _http_get_error(
        self, action: HTTPGetAction, pod: Pod, container: Container, pod_ip: str, limit: float
    ) -> _Failure | None:
        host = action.host or pod_ip
        if not host:
            return _Failure("failed to find networking container: the pod has no IP")
        port = resolve_container_port(action.port, container)
        if isinstance(port, str):
            return _Failure(port)
        scheme = (action.scheme or "HTTP").lower()
        url = _format_url(scheme, host, port, action.path)
        headers = _Headers.from_action(action.headers)
        with anyio.move_on_after(limit) as scope:
            failure = await self._do(url, headers)
            if failure is not None and failure.http_response_to_https:
                log.info(
                    "HTTPS request to lifecycle hook got HTTP response, retrying with HTTP",
                    pod=f"{pod.namespace}/{pod.name}",
                    host=_host_port(host, port),
                )
                fallback = "http" + url[len("https") :]
                if await self._do(fallback, headers.without("Authorization")) is None:
                    self._http_fallbacks += 1
                    if self._on_http_fallback is not None:
                        self._on_http_fallback(pod, http_fallback_message(_host_port(host, port)))
                    return None
            return failure
        assert scope.cancelled_caught
        return _Failure(f"Get {go_quote(url)}: context deadline exceeded")

    async def _do(self, url: str, headers: _Headers) -> _Failure | None:
        """``client.Do``: one GET with the lifecycle client's redirect policy; None on any answer."""
        original_host = urlsplit(url).hostname
        for redirects in range(_MAX_REDIRECTS + 1):
            scheme = urlsplit(url).scheme
            if scheme not in ("http", "https"):
                return _Failure(
                    f"Get {go_quote(url)}: unsupported protocol scheme {go_quote(scheme)}"
                )
            invalid = headers.invalid()
            if invalid is not None:
                return _Failure(f"Get {go_quote(url)}: {invalid}")
            request = self._http.build_request("GET", url.partition("#")[0], timeout=None)
            request.headers = headers.wire(request.url.netloc.decode("ascii"))
            try:
                response = await self._http.send(request, stream=True, follow_redirects=False)
            except httpx.HTTPError as err:
                return _transport_failure(url, err)
            location = response.headers.get("location")
            await _discard_body(response)
            if response.status_code not in _REDIRECT_CODES or location is None:
                return None
            target = urljoin(url, location)
            if urlsplit(target).hostname != original_host:
                return None  # http.ErrUseLastResponse: the redirect response is the answer
            if redirects + 1 >= _MAX_REDIRECTS:
                return _Failure(f"Get {go_quote(location)}: stopped after 10 redirects")
            headers = headers.for_redirect(relative=not urlsplit(location).scheme)
            url = target
        return None  # not reached: the loop returns at the last redirect


async def _discard_body(response: httpx.Response) -> None:
    """``discardHTTPRespBody``: read at most 10 KiB (nothing when longer), then close."""
    try:
        length = int(response.headers.get("content-length", "-1"))
    except ValueError:
        length = -1
    try:
        if length <= MAX_RESPONSE_BODY:
            read = 0
            chunks = cast(AsyncGenerator[bytes, None], response.aiter_raw())
            async with contextlib.aclosing(chunks):
                async for chunk in chunks:
                    read += len(chunk)
                    if read >= MAX_RESPONSE_BODY:
                        break
    except httpx.HTTPError:
        pass  # upstream ignores the copy's error: the answer has come
    finally:
        with anyio.CancelScope(shield=True):
            await response.aclose()


def _transport_failure(url: str, err: httpx.HTTPError) -> _Failure:
    """Go's ``*url.Error`` text for a request that got no answer (never a header value)."""
    prefix = f"Get {go_quote(url)}: "
    parts = urlsplit(url)
    host_port = parts.netloc
    causes = list(_causes(err))
    if isinstance(err, httpx.TimeoutException):
        return _Failure(prefix + "context deadline exceeded")
    for cause in causes:
        if isinstance(cause, ssl.SSLError):
            if cause.reason in _NOT_TLS_REASONS and parts.scheme == "https":
                return _Failure(prefix + "http: server gave HTTP response to HTTPS client", True)
            reason = (cause.reason or "handshake failure").lower().replace("_", " ")
            return _Failure(prefix + f"tls: {reason}")
    for cause in causes:
        if isinstance(cause, socket.gaierror):
            return _Failure(prefix + f"dial tcp: lookup {parts.hostname}: no such host")
    for cause in causes:
        if isinstance(cause, OSError) and cause.errno is not None:
            strerror = os.strerror(cause.errno).lower()
            if isinstance(err, httpx.ConnectError):
                return _Failure(prefix + f"dial tcp {host_port}: connect: {strerror}")
            if cause.errno in (errno_codes.ECONNRESET, errno_codes.EPIPE):
                return _Failure(prefix + f"read tcp {host_port}: {strerror}")
    if isinstance(err, httpx.RemoteProtocolError):
        if any(isinstance(cause, h11.RemoteProtocolError) for cause in causes):
            return _Failure(
                prefix + "net/http: HTTP/1.x transport connection broken: malformed HTTP response"
            )
        return _Failure(prefix + "EOF")  # closed without an answer
    if isinstance(err, httpx.ConnectError):
        return _Failure(prefix + f"dial tcp {host_port}: connect: connection failed")
    return _Failure(prefix + "EOF")


def _causes(err: BaseException) -> Iterator[BaseException]:
    """``err``, its causes and contexts, and the members of exception groups among them."""
    seen: set[int] = set()
    pending: list[BaseException] = [err]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                pending.append(linked)


def _host_port(host: str, port: int) -> str:
    """``net.JoinHostPort``."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _format_url(scheme: str, host: str, port: int, path: str) -> str:
    """``formatURL``: the path parsed as a URL reference, its scheme and host replaced."""
    parts = urlsplit(path)
    url_path = parts.path
    if url_path and not url_path.startswith("/"):
        url_path = "/" + url_path  # url.URL.String() with a host
    text = f"{scheme}://{_host_port(host, port)}{url_path}"
    if parts.query:
        text += f"?{parts.query}"
    if parts.fragment:
        text += f"#{parts.fragment}"
    return text


def _canonical_header_key(name: str) -> str:
    """``textproto.CanonicalMIMEHeaderKey`` (a name with invalid bytes is left as it is)."""
    if not _TOKEN.fullmatch(name):
        return name
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


class _Headers:
    """The request's ``http.Header`` (canonical keys, values in order) and its ``req.Host``."""

    __slots__ = ("host", "values")

    def __init__(self, values: dict[str, list[str]], host: str) -> None:
        self.values = values
        self.host = host

    @classmethod
    def from_action(cls, headers: tuple[HTTPHeader, ...]) -> _Headers:
        """``v1HeaderToHTTPHeader`` and ``newProbeRequest``'s defaults."""
        values: dict[str, list[str]] = {}
        for header in headers:
            values.setdefault(_canonical_header_key(header.name), []).append(header.value)
        if "User-Agent" not in values:
            values["User-Agent"] = [USER_AGENT]
        if "Accept" not in values:
            values["Accept"] = ["*/*"]
        elif values["Accept"][0] == "":
            del values["Accept"]
        return cls(values, values.get("Host", [""])[0])

    def without(self, name: str) -> _Headers:
        return _Headers({k: v for k, v in self.values.items() if k != name}, self.host)

    def for_redirect(self, *, relative: bool) -> _Headers:
        """A custom Host survives a redirect only to a relative location (``Client.do``)."""
        return self if relative else _Headers(self.values, "")

    def invalid(self) -> str | None:
        """The transport's header checks; the message names a header, never shows its value."""
        for name, values in self.values.items():
            if not _TOKEN.fullmatch(name):
                return f"net/http: invalid header field name {go_quote(name)}"
            if any(not _valid_header_value(v) for v in values):
                return f"net/http: invalid header field value for {go_quote(name)}"
        if not _HOST_HEADER.fullmatch(self.host):
            return "http: invalid Host header"
        return None

    def wire(self, url_host: str) -> httpx.Headers:
        """What goes on the wire: Host (``req.Host`` or the URL's), the first User-Agent (none
        when empty), every other header, and ``Accept-Encoding: gzip`` as Go's transport adds."""
        items: list[tuple[bytes, bytes]] = [(b"Host", (self.host or url_host).encode())]
        user_agent = self.values.get("User-Agent", [""])[0]
        if user_agent:
            items.append((b"User-Agent", user_agent.encode()))
        for name, values in self.values.items():
            if name in ("Host", "User-Agent"):
                continue
            items.extend((name.encode(), value.encode()) for value in values)
        if "Accept-Encoding" not in self.values:
            items.append((b"Accept-Encoding", b"gzip"))
        return httpx.Headers(items)


def _valid_header_value(value: str) -> bool:
    """``httpguts.ValidHeaderFieldValue``: no control bytes other than tab."""
    return not any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in value)


_SURROGATE_ESCAPES = re.compile("([\udc80-\udcff]+)")


def _go_quote_bytes(data: bytes) -> str:
    """Go's ``%q`` of ``string(data)``: invalid UTF-8 bytes become ``\\xNN``."""
    text = data.decode("utf-8", errors="surrogateescape")
    out: list[str] = []
    for index, chunk in enumerate(_SURROGATE_ESCAPES.split(text)):
        if index % 2:
            out.extend(f"\\x{ord(c) - 0xDC00:02x}" for c in chunk)
        elif chunk:
            out.append(go_quote(chunk)[1:-1])
    return '"' + "".join(out) + '"'


@dataclass(frozen=True, slots=True)
class PreStopOutcome:
    """What ``executePreStopHook`` found: how long it waited and how the hook ended."""

    seconds: int
    """Whole seconds the kubelet waited (``int64(time.Since(start).Seconds())``)."""
    completed: bool
    """False: the grace period ran out first ("PreStop hook not completed in grace period")."""
    message: str | None
    """The runner's failure message when the hook completed and failed (for logs; the event
    says :data:`PRE_STOP_HOOK_FAILED`)."""


async def execute_pre_stop_hook(
    runner: HookRunner,
    handler: LifecycleHandler,
    *,
    runtime: RuntimeHandler,
    container_id: str,
    pod: Pod,
    container: Container,
    pod_ip: str,
    grace_period: int,
) -> PreStopOutcome:
    """Run a preStop hook for at most ``grace_period`` seconds (``executePreStopHook``).

    The caller records ``FailedPreStopHook`` when ``message`` is set, then stops the container
    with :func:`stop_timeout_after_pre_stop`. Upstream leaves an unfinished hook running in a
    goroutine after the grace period; here it is cancelled (nothing is left behind).
    """
    start = anyio.current_time()
    message: str | None = None
    with anyio.move_on_after(max(grace_period, 0)) as scope:
        message = await runner.run(
            handler,
            runtime=runtime,
            container_id=container_id,
            pod=pod,
            container=container,
            pod_ip=pod_ip,
            timeout=math.inf,
        )
    seconds = int(anyio.current_time() - start)
    if scope.cancelled_caught:
        return PreStopOutcome(seconds=seconds, completed=False, message=None)
    return PreStopOutcome(seconds=seconds, completed=True, message=message)
