"""Lifecycle hooks (``runtime/hooks.py``) against upstream's texts and behaviour.

httpGet hooks go to a real HTTP server on loopback (``http.server`` in a thread, plain and TLS);
exec hooks run in the sim runtime handler; sleep hooks and the preStop grace period run on trio's
MockClock (virtual time). Messages are compared whole: they are upstream's format strings from
``pkg/kubelet/lifecycle/handlers.go``.
"""

from __future__ import annotations

import math
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import MappingProxyType
from typing import Any

import anyio
import pytest
import trio.testing
from structlog.testing import capture_logs

from kubelet_sim.core.pods import PodRef
from kubelet_sim.core.policy import PullPolicy
from kubelet_sim.k8s.objects import Container, Pod
from kubelet_sim.k8s.podspec import (
    ContainerPort,
    ExecAction,
    HTTPGetAction,
    HTTPHeader,
    LifecycleHandler,
    SleepAction,
    TCPSocketAction,
)
from kubelet_sim.runtime.hooks import (
    POST_START_HOOK_FAILED,
    PRE_STOP_HOOK_FAILED,
    USER_AGENT,
    HookKind,
    HookRunner,
    execute_pre_stop_hook,
    failed_hook_event,
    format_pod_name,
    hook_timeout,
    http_fallback_message,
    lifecycle_http_client,
    resolve_container_port,
    stop_timeout_after_pre_stop,
)
from kubelet_sim.runtime.port import ContainerConfig, ExecResult, ImageConfig, SandboxConfig
from kubelet_sim.runtime.sim import SimHandler
from kubelet_sim.sim.tls import make_tls_material
from kubelet_sim.telemetry.events import EventReason, EventType

pytestmark = pytest.mark.anyio

SECRET = "s3cr3t-t0ken-value"
PREFIX = 'for Container "app" in Pod "web_default(uid-1)" failed - error: '


def virtual() -> pytest.MarkDecorator:
    """A trio run on a fresh MockClock: sleeps and grace periods take no real time."""
    return pytest.mark.parametrize(
        "anyio_backend",
        [
            pytest.param(
                ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}), id="trio"
            )
        ],
    )


def make_pod(*ports: ContainerPort) -> tuple[Pod, Container]:
    container = Container(
        name="app", image="registry.test/app:v1", image_pull_policy=PullPolicy.ALWAYS, ports=ports
    )
    return Pod(namespace="default", name="web", uid="uid-1", containers=(container,)), container


@dataclass
class Seen:
    path: str
    headers: dict[str, list[str]]


@dataclass
class Server:
    port: int
    requests: list[Seen] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


class _Handler(BaseHTTPRequestHandler):
    server: _Recording

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        headers: dict[str, list[str]] = {}
        for name, value in self.headers.items():
            headers.setdefault(name.lower(), []).append(value)
        state = self.server.state
        state.requests.append(Seen(self.path, headers))
        route = self.path.partition("?")[0]
        if route == "/close":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if route == "/hang":
            state.release.wait(10)
            return
        status, location, body = 200, "", b"ok"
        if route == "/fail":
            status, body = 500, b"internal error"
        elif route == "/big":
            body = b"x" * (1 << 20)
        elif route == "/redirect-same":
            status, location = 302, "/ok"
        elif route == "/redirect-loop":
            status, location = 302, "/redirect-loop"
        elif route == "/redirect-other":
            status, location = 302, f"http://localhost:{state.port}/ok"
        self.send_response(status)
        if location:
            self.send_header("Location", location)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Recording(ThreadingHTTPServer):
    daemon_threads = True
    state: Server


def _serve(tls: ssl.SSLContext | None = None) -> Iterator[Server]:
    httpd = _Recording(("127.0.0.1", 0), _Handler)
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    httpd.state = Server(port=httpd.server_address[1])
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield httpd.state
    finally:
        httpd.state.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def server() -> Iterator[Server]:
    yield from _serve()


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[Server]:
    material = make_tls_material(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(material.server_cert, material.server_key)
    yield from _serve(context)


@pytest.fixture
async def runner() -> AsyncIterator[HookRunner]:
    async with lifecycle_http_client() as http:
        yield HookRunner(http)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def http_hook(
    runner: HookRunner,
    action: HTTPGetAction,
    *ports: ContainerPort,
    pod_ip: str = "127.0.0.1",
    limit: float = 10.0,
) -> str | None:
    pod, container = make_pod(*ports)
    return await runner.run(
        LifecycleHandler(http_get=action),
        runtime=SimHandler(),
        container_id="",
        pod=pod,
        container=container,
        pod_ip=pod_ip,
        timeout=limit,
    )


@pytest.mark.parametrize(
    ("path", "seen"),
    [
        pytest.param("/ok", "/ok", id="absolute"),
        pytest.param("ok", "/ok", id="relative-gets-a-slash"),
        pytest.param("", "/", id="empty"),
        pytest.param("/ok?probe=1", "/ok?probe=1", id="query"),
        pytest.param("/ok#frag", "/ok", id="fragment-not-sent"),
        pytest.param("/fail", "/fail", id="500-does-not-fail"),  # kubernetes#56963
        pytest.param("/big", "/big", id="long-body-not-read"),
        pytest.param("/redirect-same", "/ok", id="redirect-same-host-followed"),
        pytest.param("/redirect-other", "/redirect-other", id="redirect-other-host-not-followed"),
    ],
)
async def test_http_get_succeeds_on_any_answer(
    runner: HookRunner, server: Server, path: str, seen: str
) -> None:
    assert await http_hook(runner, HTTPGetAction(port=server.port, path=path)) is None
    assert server.requests[-1].path == seen
    request = server.requests[0]
    assert request.headers["user-agent"] == [USER_AGENT]
    assert request.headers["accept"] == ["*/*"]
    assert request.headers["host"] == [f"127.0.0.1:{server.port}"]


async def test_http_get_host_defaults_to_the_pod_ip(runner: HookRunner, server: Server) -> None:
    action = HTTPGetAction(port=server.port, path="/ok", host="")
    assert await http_hook(runner, action, pod_ip="127.0.0.1") is None
    action_with_host = HTTPGetAction(port=server.port, host="127.0.0.1")
    assert await http_hook(runner, action_with_host, pod_ip="") is None
    assert len(server.requests) == 2
    no_ip = await http_hook(runner, action, pod_ip="")
    assert no_ip == "HTTP lifecycle hook (/ok) " + PREFIX + (
        "failed to find networking container: the pod has no IP"
    )


@pytest.mark.parametrize(
    "named", [pytest.param(True, id="by-name"), pytest.param(False, id="number-as-string")]
)
async def test_http_get_named_port(runner: HookRunner, server: Server, named: bool) -> None:
    ref = "web" if named else str(server.port)
    ports = (ContainerPort(1, name="admin"), ContainerPort(server.port, name="web"))
    assert await http_hook(runner, HTTPGetAction(port=ref, path="/ok"), *ports) is None
    assert server.requests[0].path == "/ok"


@pytest.mark.parametrize(
    ("port", "error"),
    [
        pytest.param("metrics", 'strconv.Atoi: parsing "metrics": invalid syntax', id="unknown"),
        pytest.param("", 'strconv.Atoi: parsing "": invalid syntax', id="empty-name"),
        pytest.param(
            "99999999999999999999",
            'strconv.Atoi: parsing "99999999999999999999": value out of range',
            id="atoi-range",
        ),
        pytest.param(70000, "invalid port number: 70000", id="too-big"),
        pytest.param(0, "invalid port number: 0", id="zero"),
        pytest.param("-5", "invalid port number: -5", id="negative-string"),
    ],
)
async def test_http_get_bad_port_fails_with_upstreams_error(
    runner: HookRunner, server: Server, port: int | str, error: str
) -> None:
    ports = (ContainerPort(8080, name="http"),)
    message = await http_hook(runner, HTTPGetAction(port=port, path="/ok"), *ports)
    assert message == "HTTP lifecycle hook (/ok) " + PREFIX + error
    assert server.requests == []


@pytest.mark.parametrize(
    ("port", "expected"),
    [
        pytest.param(8080, 8080, id="int"),
        pytest.param("web", 9000, id="name"),
        pytest.param("+81", 81, id="atoi-sign"),
        pytest.param(" 81", 'strconv.Atoi: parsing " 81": invalid syntax', id="atoi-space"),
        pytest.param(65536, "invalid port number: 65536", id="range"),
        pytest.param("", 8443, id="empty-matches-an-unnamed-port"),  # findPortByName("")
    ],
)
def test_resolve_container_port(port: int | str, expected: int | str) -> None:
    _, container = make_pod(ContainerPort(9000, name="web"), ContainerPort(8443))
    assert resolve_container_port(port, container) == expected


async def test_http_get_sends_the_actions_headers(runner: HookRunner, server: Server) -> None:
    action = HTTPGetAction(
        port=server.port,
        path="/ok",
        headers=(
            HTTPHeader("x-custom-header", "one"),
            HTTPHeader("X-Custom-Header", "two"),
            HTTPHeader("Authorization", f"Bearer {SECRET}"),
            HTTPHeader("User-Agent", "my-agent/1"),
            HTTPHeader("Accept", ""),
            HTTPHeader("Host", "app.example.test"),
        ),
    )
    assert await http_hook(runner, action) is None
    headers = server.requests[0].headers
    assert headers["x-custom-header"] == ["one", "two"]  # canonical key, both values
    assert headers["authorization"] == [f"Bearer {SECRET}"]
    assert headers["user-agent"] == ["my-agent/1"]
    assert "accept" not in headers  # an empty Accept removes the default
    assert headers["host"] == ["app.example.test"]  # req.Host


async def test_http_get_empty_user_agent_sends_none(runner: HookRunner, server: Server) -> None:
    action = HTTPGetAction(port=server.port, headers=(HTTPHeader("User-Agent", ""),))
    assert await http_hook(runner, action) is None
    assert "user-agent" not in server.requests[0].headers


async def test_http_get_connection_refused(runner: HookRunner) -> None:
    port = free_port()
    message = await http_hook(runner, HTTPGetAction(port=port, path="/ok"))
    url = f"http://127.0.0.1:{port}/ok"
    assert message == (
        "HTTP lifecycle hook (/ok) "
        + PREFIX
        + f'Get "{url}": dial tcp 127.0.0.1:{port}: connect: connection refused'
    )


async def test_http_get_closed_without_an_answer(runner: HookRunner, server: Server) -> None:
    message = await http_hook(runner, HTTPGetAction(port=server.port, path="/close"))
    url = f"http://127.0.0.1:{server.port}/close"
    assert message == "HTTP lifecycle hook (/close) " + PREFIX + f'Get "{url}": EOF'


async def test_http_get_stops_after_10_redirects(runner: HookRunner, server: Server) -> None:
    message = await http_hook(runner, HTTPGetAction(port=server.port, path="/redirect-loop"))
    assert message == (
        "HTTP lifecycle hook (/redirect-loop) "
        + PREFIX
        + 'Get "/redirect-loop": stopped after 10 redirects'
    )
    assert len(server.requests) == 10


async def test_http_get_times_out_with_its_context(runner: HookRunner, server: Server) -> None:
    message = await http_hook(runner, HTTPGetAction(port=server.port, path="/hang"), limit=0.2)
    url = f"http://127.0.0.1:{server.port}/hang"
    assert message == (
        "HTTP lifecycle hook (/hang) " + PREFIX + f'Get "{url}": context deadline exceeded'
    )


@pytest.mark.parametrize(
    ("header", "error"),
    [
        pytest.param(
            HTTPHeader("X-Token", f"{SECRET}\r\nX-Injected: 1"),
            'net/http: invalid header field value for "X-Token"',
            id="bad-value",
        ),
        pytest.param(
            HTTPHeader("X Token", SECRET),
            'net/http: invalid header field name "X Token"',
            id="bad-name",
        ),
        pytest.param(HTTPHeader("Host", f"{SECRET} x"), "http: invalid Host header", id="host"),
    ],
)
async def test_invalid_headers_fail_naming_the_header_never_its_value(
    runner: HookRunner, server: Server, header: HTTPHeader, error: str
) -> None:
    with capture_logs() as logs:
        message = await http_hook(runner, HTTPGetAction(port=server.port, headers=(header,)))
    url = f"http://127.0.0.1:{server.port}"
    assert message == "HTTP lifecycle hook () " + PREFIX + f'Get "{url}": {error}'
    assert SECRET not in repr(logs)
    assert server.requests == []


async def test_header_values_stay_out_of_messages_and_logs(runner: HookRunner) -> None:
    action = HTTPGetAction(
        port=free_port(),
        path="/ok",
        headers=(HTTPHeader("Authorization", SECRET), HTTPHeader("Host", "secret-host.test")),
    )
    with capture_logs() as logs:
        message = await http_hook(runner, action)
    assert message is not None
    assert "connection refused" in message
    assert SECRET not in message
    assert "secret-host" not in message
    assert logs
    assert SECRET not in repr(logs)
    assert "secret-host" not in repr(logs)


async def test_https_answered_in_plain_http_falls_back_to_http(server: Server) -> None:
    fallbacks: list[tuple[str, str]] = []
    async with lifecycle_http_client() as http:
        runner = HookRunner(
            http, on_http_fallback=lambda pod, msg: fallbacks.append((pod.name, msg))
        )
        action = HTTPGetAction(
            port=server.port,
            path="/ok",
            scheme="HTTPS",
            headers=(HTTPHeader("Authorization", SECRET), HTTPHeader("X-Kept", "yes")),
        )
        assert await http_hook(runner, action) is None
    assert fallbacks == [("web", http_fallback_message(f"127.0.0.1:{server.port}"))]
    assert fallbacks[0][1] == (
        f"request to HTTPS lifecycle hook 127.0.0.1:{server.port} got HTTP response, "
        "retry with HTTP succeeded"
    )
    assert runner.statistics().http_fallbacks == 1
    [retry] = server.requests  # the TLS attempt never reached do_GET
    assert retry.path == "/ok"
    assert "authorization" not in retry.headers  # dropped on the HTTP retry
    assert retry.headers["x-kept"] == ["yes"]


async def test_https_skips_certificate_verification(runner: HookRunner, tls_server: Server) -> None:
    action = HTTPGetAction(
        port=tls_server.port,
        path="/ok",
        scheme="HTTPS",
        headers=(HTTPHeader("Authorization", "t"),),
    )
    assert await http_hook(runner, action) is None
    assert tls_server.requests[0].headers["authorization"] == ["t"]
    assert runner.statistics().http_fallbacks == 0


async def test_unsupported_scheme(runner: HookRunner, server: Server) -> None:
    message = await http_hook(runner, HTTPGetAction(port=server.port, path="/ok", scheme="FTP"))
    url = f"ftp://127.0.0.1:{server.port}/ok"
    assert message == (
        "HTTP lifecycle hook (/ok) " + PREFIX + f'Get "{url}": unsupported protocol scheme "ftp"'
    )


async def started(
    handler: SimHandler, annotations: dict[str, str] | None = None, argv: tuple[str, ...] = ()
) -> str:
    pod = PodRef("default", "web", "uid-1")
    sandbox = await handler.run_sandbox(SandboxConfig(pod=pod, hostname="web"))
    config = ContainerConfig(
        pod=pod,
        name="app",
        attempt=0,
        image_id="sha256:" + "0" * 64,
        argv=argv,
        env=(),
        hostname="web",
        annotations=MappingProxyType(annotations or {}),
    )
    container = await handler.create_container(sandbox, config, ImageConfig())
    await handler.start_container(container)
    return container


async def exec_hook(
    runner: HookRunner, handler: SimHandler, container_id: str, command: tuple[str, ...]
) -> str | None:
    pod, container = make_pod()
    return await runner.run(
        LifecycleHandler(exec=ExecAction(command)),
        runtime=handler,
        container_id=container_id,
        pod=pod,
        container=container,
        pod_ip="10.0.0.1",
        timeout=10,
    )


@virtual()
@pytest.mark.parametrize(
    ("command", "annotations", "expected", "seconds"),
    [
        pytest.param(("true",), {}, None, 0.0, id="success"),
        pytest.param(("sh", "-c", "sleep 3"), {}, None, 3.0, id="success-after-3s"),
        pytest.param(
            ("sh", "-c", "exit 3"),
            {},
            "Exec lifecycle hook ([sh -c exit 3]) "
            + PREFIX
            + "command 'sh -c exit 3' exited with 3: , message: \"\"",
            0.0,
            id="non-zero-exit",
        ),
        pytest.param(
            ("/hooks/notify", "--url", "http://x"),
            {"sim.kubelet-sim.io/exec.app": "code=2,seconds=1"},
            "Exec lifecycle hook ([/hooks/notify --url http://x]) "
            + PREFIX
            + "command '/hooks/notify --url http://x' exited with 2: , message: \"\"",
            1.0,
            id="annotation",
        ),
        pytest.param(
            ("sleep", "30"),
            {},
            "Exec lifecycle hook ([sleep 30]) "
            + PREFIX
            + 'command "sleep 30" timed out, message: ""',
            10.0,
            id="timeout",
        ),
    ],
)
async def test_exec_hook(
    runner: HookRunner,
    command: tuple[str, ...],
    annotations: dict[str, str],
    expected: str | None,
    seconds: float,
) -> None:
    handler = SimHandler()
    container_id = await started(handler, annotations)
    start = anyio.current_time()
    assert await exec_hook(runner, handler, container_id, command) == expected
    assert anyio.current_time() - start == pytest.approx(seconds)


class _Noisy(SimHandler):
    """A handler whose execs fail with output (the sim's output is always empty)."""

    async def exec_sync(
        self,
        container_id: str,
        argv: tuple[str, ...],
        timeout: float,  # noqa: ASYNC109 - the port's signature
    ) -> ExecResult:
        return ExecResult(1, 'boom\n\tπ "quoted" '.encode() + b"\xff")


@virtual()
async def test_exec_hook_message_quotes_the_output_as_go_does(runner: HookRunner) -> None:
    message = await exec_hook(runner, _Noisy(), "any", ("notify",))
    assert message == (
        "Exec lifecycle hook ([notify]) "
        + PREFIX
        + "command 'notify' exited with 1: , message: "
        + '"boom\\n\\tπ \\"quoted\\" \\xff"'
    )


@virtual()
async def test_exec_hook_in_an_exited_container(runner: HookRunner) -> None:
    handler = SimHandler()
    container_id = await started(handler, argv=("true",))
    assert await exec_hook(runner, handler, container_id, ("true",)) == (
        "Exec lifecycle hook ([true]) "
        + PREFIX
        + 'container is in CONTAINER_EXITED state, message: ""'
    )


@virtual()
@pytest.mark.parametrize(
    ("seconds", "limit", "failed", "elapsed"),
    [
        pytest.param(5, math.inf, False, 5.0, id="completes"),
        pytest.param(0, 1.0, False, 0.0, id="zero"),
        pytest.param(10, 10.0, False, 10.0, id="exactly-the-timeout"),
        pytest.param(300, 30.0, True, 30.0, id="cut-short"),
    ],
)
async def test_sleep_hook(
    runner: HookRunner, seconds: int, limit: float, failed: bool, elapsed: float
) -> None:
    pod, container = make_pod()
    start = anyio.current_time()
    message = await runner.run(
        LifecycleHandler(sleep=SleepAction(seconds)),
        runtime=SimHandler(),
        container_id="",
        pod=pod,
        container=container,
        pod_ip="",
        timeout=limit,
    )
    assert anyio.current_time() - start == pytest.approx(elapsed)
    if failed:
        assert message == (
            f"Sleep lifecycle hook ({seconds}) "
            + PREFIX
            + "container terminated before sleep hook finished"
        )
        assert runner.statistics().sleeps_terminated == 1
    else:
        assert message is None


@pytest.mark.parametrize(
    ("handler", "printed"),
    [
        pytest.param(LifecycleHandler(), "&{<nil> <nil> <nil> <nil>}", id="no-action"),
        pytest.param(
            LifecycleHandler(tcp_socket=TCPSocketAction(port=8080)),
            "&{<nil> <nil> 0xc000010000 <nil>}",
            id="tcp-socket-is-never-run",
        ),
    ],
)
async def test_a_handler_the_kubelet_cannot_run(
    runner: HookRunner, handler: LifecycleHandler, printed: str
) -> None:
    pod, container = make_pod()
    message = await runner.run(
        handler,
        runtime=SimHandler(),
        container_id="",
        pod=pod,
        container=container,
        pod_ip="",
        timeout=1,
    )
    assert message == f"Cannot run handler: invalid handler: {printed}"
    assert runner.statistics().runs == 1
    assert runner.statistics().failures == 1


def test_event_texts_and_timeouts() -> None:
    assert failed_hook_event(HookKind.POST_START) == (
        EventType.WARNING,
        EventReason.FAILED_POST_START_HOOK,
        "PostStartHook failed",
    )
    assert failed_hook_event(HookKind.PRE_STOP) == (
        EventType.WARNING,
        EventReason.FAILED_PRE_STOP_HOOK,
        "PreStopHook failed",
    )
    assert (POST_START_HOOK_FAILED, PRE_STOP_HOOK_FAILED) == (
        "PostStartHook failed",
        "PreStopHook failed",
    )
    assert hook_timeout(HookKind.POST_START, 30) == math.inf
    assert hook_timeout(HookKind.PRE_STOP, 30) == 30
    assert format_pod_name(make_pod()[0]) == "web_default(uid-1)"


@pytest.mark.parametrize(
    ("grace", "elapsed", "expected"),
    [
        pytest.param(30, 12, 18, id="what-is-left"),
        pytest.param(30, 0, 30, id="instant-hook"),
        pytest.param(10, 30, 2, id="overran"),
        pytest.param(30, 29, 2, id="minimum-2s"),
    ],
)
def test_stop_timeout_after_pre_stop(grace: int, elapsed: int, expected: int) -> None:
    assert stop_timeout_after_pre_stop(grace, elapsed) == expected


@virtual()
@pytest.mark.parametrize(
    ("handler", "grace", "seconds", "completed", "failed"),
    [
        pytest.param(LifecycleHandler(sleep=SleepAction(5)), 30, 5, True, False, id="in-time"),
        pytest.param(LifecycleHandler(sleep=SleepAction(60)), 30, 30, False, False, id="overran"),
        pytest.param(
            LifecycleHandler(exec=ExecAction(("sh", "-c", "sleep 7.9"))),
            30,
            7,
            True,
            False,
            id="whole-seconds",
        ),
        pytest.param(LifecycleHandler(exec=ExecAction(("false",))), 30, 0, True, True, id="fail"),
    ],
)
async def test_execute_pre_stop_hook(
    runner: HookRunner,
    handler: LifecycleHandler,
    grace: int,
    seconds: int,
    completed: bool,
    failed: bool,
) -> None:
    sim = SimHandler()
    container_id = await started(sim)
    pod, container = make_pod()
    start = anyio.current_time()
    outcome = await execute_pre_stop_hook(
        runner,
        handler,
        runtime=sim,
        container_id=container_id,
        pod=pod,
        container=container,
        pod_ip="10.0.0.1",
        grace_period=grace,
    )
    assert (outcome.seconds, outcome.completed) == (seconds, completed)
    assert (outcome.message is not None) == failed
    assert anyio.current_time() - start <= grace
