"""Lifecycle hooks: run a postStart or preStop handler (exec, httpGet, sleep) as the kubelet does.

Models ``pkg/kubelet/lifecycle/handlers.go`` (``handlerRunner.Run``), and the event texts and
preStop timing of ``pkg/kubelet/kuberuntime/kuberuntime_container.go``:

- **exec**: ``ExecSync`` in the container. A non-zero exit fails with the CRI client's error
  ``command '<argv>' exited with N: <stderr>`` and the output quoted after ``message:``; a runtime
  error (a timeout: ``command "<argv>" timed out``) fails with its text.
- **httpGet**: one GET to ``scheme://host:port/path`` (host defaults to the pod IP), made as
  :mod:`kubelet_sim.runtime.hookhttp` describes. No status code fails the hook. An HTTPS request
  answered in plain HTTP is retried once over HTTP without ``Authorization`` and, if that works,
  counts as a success with a ``LifecycleHTTPFallback`` event.
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

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import anyio
import httpx
import structlog

from kubelet_sim.core.pods import PodRef
from kubelet_sim.core.reference import go_quote
from kubelet_sim.engine.workers import format_pod
from kubelet_sim.errors import ContainerRuntimeError
from kubelet_sim.k8s.objects import Container, Pod
from kubelet_sim.k8s.podspec import ExecAction, HTTPGetAction, LifecycleHandler
from kubelet_sim.runtime.hookhttp import (
    MAX_RESPONSE_BODY,
    USER_AGENT,
    HTTPFailure,
    RequestHeaders,
    do_get,
    format_url,
    join_host_port,
    lifecycle_http_client,
    resolve_container_port,
)
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
CRI_REQUEST_TIMEOUT: Final = 120.0
"""The CRI client's request timeout, added to an exec's own (``r.timeout + timeout``)."""

_SLEEP_TERMINATED: Final = "container terminated before sleep hook finished"
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
    ) -> HTTPFailure | None:
        host = action.host or pod_ip
        if not host:
            return HTTPFailure("failed to find networking container: the pod has no IP")
        port = resolve_container_port(action.port, container)
        if isinstance(port, str):
            return HTTPFailure(port)
        scheme = (action.scheme or "HTTP").lower()
        try:
            url = format_url(scheme, host, port, action.path)
        except ValueError as exc:
            return HTTPFailure(f"parse {go_quote(action.path)}: {exc}")
        headers = RequestHeaders.from_action(action.headers)
        with anyio.move_on_after(limit) as scope:
            failure = await do_get(self._http, url, headers)
            if failure is not None and failure.http_response_to_https:
                log.info(
                    "HTTPS request to lifecycle hook got HTTP response, retrying with HTTP",
                    pod=f"{pod.namespace}/{pod.name}",
                    host=join_host_port(host, port),
                )
                fallback = "http" + url[len("https") :]
                if await do_get(self._http, fallback, headers.without("Authorization")) is None:
                    self._http_fallbacks += 1
                    if self._on_http_fallback is not None:
                        self._on_http_fallback(
                            pod, http_fallback_message(join_host_port(host, port))
                        )
                    return None
            return failure
        assert scope.cancelled_caught
        return HTTPFailure(f"Get {go_quote(url)}: context deadline exceeded")


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
