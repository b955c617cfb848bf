"""The sim runtime handler's rule (``runtime/sim.py``): commands, exits, execs, stops, annotations.

Time-dependent cases run on trio's MockClock (virtual time): a 30 s grace period takes no real
time, and the elapsed times asserted are exact. A few cases also run on asyncio.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import anyio
import pytest
import trio.testing

from kubelet_sim.core.pods import PodRef
from kubelet_sim.errors import ContainerRuntimeError
from kubelet_sim.runtime.port import (
    ContainerConfig,
    ExecResult,
    HandlerKind,
    ImageConfig,
    RuntimeHandler,
    SandboxConfig,
)
from kubelet_sim.runtime.sim import EXIT_SIGKILL, EXIT_SIGTERM, Outcome, SimHandler, interpret

pytestmark = pytest.mark.anyio

POD = PodRef("default", "web", "uid-1")
EXIT = "sim.kubelet-sim.io/exit.app"
EXEC = "sim.kubelet-sim.io/exec.app"
IGNORE = "sim.kubelet-sim.io/ignore-sigterm.app"
ASYNCIO = pytest.mark.parametrize("anyio_backend", ["asyncio"])


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    """Virtual time: trio's MockClock jumps to the next deadline whenever every task waits."""
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})


def config(
    argv: tuple[str, ...] = ("nginx",),
    annotations: Mapping[str, str] | None = None,
    *,
    name: str = "app",
) -> ContainerConfig:
    return ContainerConfig(
        pod=POD,
        name=name,
        attempt=0,
        image_id="sha256:" + "0" * 64,
        argv=argv,
        env=(("SECRET", "hunter2"),),
        hostname="web",
        annotations=MappingProxyType(dict(annotations or {})),
    )


async def started(
    handler: SimHandler,
    argv: tuple[str, ...] = ("nginx",),
    annotations: Mapping[str, str] | None = None,
) -> str:
    sandbox = await handler.run_sandbox(SandboxConfig(pod=POD, hostname="web"))
    container = await handler.create_container(sandbox, config(argv, annotations), ImageConfig())
    await handler.start_container(container)
    return container


def test_sim_handler_is_a_runtime_handler() -> None:
    handler: RuntimeHandler = SimHandler("fast")  # mypy checks the Protocol here
    assert handler.name == "fast"
    assert handler.kind is HandlerKind.SIM
    assert handler.unavailable_reason() is None


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        pytest.param(("true",), Outcome(0), id="true"),
        pytest.param(("/bin/true", "--ignored"), Outcome(0), id="true-path-args"),
        pytest.param(("false",), Outcome(1), id="false"),
        pytest.param(("/usr/bin/false",), Outcome(1), id="false-path"),
        pytest.param(("sh", "-c", "exit 3"), Outcome(3), id="sh-exit"),
        pytest.param(("/bin/sh", "-c", " exit 7 "), Outcome(7), id="sh-path-exit-spaces"),
        pytest.param(("bash", "-c", "exit 300"), Outcome(44), id="exit-mod-256"),
        pytest.param(("dash", "-c", "exit"), Outcome(0), id="bare-exit"),
        pytest.param(("sh", "-c", "exit -1"), None, id="exit-negative"),
        pytest.param(("sh", "-c", "exit 1; echo"), None, id="exit-then-more"),
        pytest.param(("sh", "-c", "exit foo"), None, id="exit-word"),
        pytest.param(("sleep", "5"), Outcome(0, 5.0), id="sleep"),
        pytest.param(("/bin/sleep", "1.5"), Outcome(0, 1.5), id="sleep-decimal"),
        pytest.param(("sleep", "2m"), Outcome(0, 120.0), id="sleep-minutes"),
        pytest.param(("sleep", "1h"), Outcome(0, 3600.0), id="sleep-hours"),
        pytest.param(("sleep", "1d"), Outcome(0, 86400.0), id="sleep-days"),
        pytest.param(("sleep", "infinity"), Outcome(0, None), id="sleep-infinity"),
        pytest.param(("sleep",), Outcome(1), id="sleep-missing-operand"),
        pytest.param(("sleep", "soon"), Outcome(1), id="sleep-bad-operand"),
        pytest.param(("sleep", "-1"), Outcome(1), id="sleep-negative"),
        pytest.param(("sh", "-c", "sleep 5"), Outcome(0, 5.0), id="sh-sleep"),
        pytest.param(("sh", "-c", "true"), Outcome(0), id="sh-true"),
        pytest.param(("ash", "-c", "false"), Outcome(1), id="sh-false"),
        pytest.param(("sh", "-x", "exit 1"), None, id="sh-without-c"),
        pytest.param(("sh", "-c"), None, id="sh-without-script"),
        pytest.param(("python3", "-c", "exit 1"), None, id="not-a-shell"),
        pytest.param(("nginx", "-g", "daemon off;"), None, id="server"),
        pytest.param((), None, id="empty"),
    ],
)
def test_command_rule(argv: tuple[str, ...], expected: Outcome | None) -> None:
    assert interpret(argv) == expected


@pytest.mark.parametrize(
    ("argv", "annotations", "code", "seconds"),
    [
        pytest.param(("true",), {}, 0, 0.0, id="true"),
        pytest.param(("false",), {}, 1, 0.0, id="false"),
        pytest.param(("sh", "-c", "exit 4"), {}, 4, 0.0, id="sh-exit"),
        pytest.param(("sleep", "5"), {}, 0, 5.0, id="sleep"),
        pytest.param(("nginx",), {EXIT: "code=1,after=5"}, 1, 5.0, id="annotation"),
        pytest.param(("sleep", "100"), {EXIT: "code=3"}, 3, 0.0, id="annotation-code-only"),
        pytest.param(("false",), {EXIT: "after=2.5"}, 0, 2.5, id="annotation-after-only"),
        pytest.param(("true",), {EXIT: " after = 1 , code = 9 "}, 9, 1.0, id="annotation-spaces"),
        pytest.param(
            ("true",), {"sim.kubelet-sim.io/exit.other": "code=5"}, 0, 0.0, id="other-container"
        ),
    ],
)
async def test_main_process_exits_by_the_rule(
    argv: tuple[str, ...], annotations: dict[str, str], code: int, seconds: float
) -> None:
    handler = SimHandler()
    start = anyio.current_time()
    container = await started(handler, argv, annotations)
    assert await handler.wait_container(container) == code
    assert anyio.current_time() - start == pytest.approx(seconds)


async def test_a_command_without_a_rule_runs_until_stopped() -> None:
    handler = SimHandler()
    container = await started(handler, ("nginx",))
    with anyio.move_on_after(10_000):
        await handler.wait_container(container)
        pytest.fail("the process exited by itself")
    start = anyio.current_time()
    await handler.stop_container(container, 30)
    assert await handler.wait_container(container) == EXIT_SIGTERM
    assert anyio.current_time() == start


@pytest.mark.parametrize(
    ("argv", "annotations", "limit", "code", "seconds"),
    [
        pytest.param(("nginx",), {}, 30, EXIT_SIGTERM, 0.0, id="sigterm-honoured"),
        pytest.param(("nginx",), {IGNORE: "false"}, 30, EXIT_SIGTERM, 0.0, id="ignore-false"),
        pytest.param(("nginx",), {IGNORE: "true"}, 30, EXIT_SIGKILL, 30.0, id="sigterm-ignored"),
        pytest.param(("nginx",), {}, 0, EXIT_SIGKILL, 0.0, id="no-grace-sigkill"),
        pytest.param(("nginx",), {IGNORE: "true"}, 0, EXIT_SIGKILL, 0.0, id="ignored-no-grace"),
        pytest.param(("sleep", "10"), {IGNORE: "true"}, 30, 0, 10.0, id="exits-before-kill"),
        pytest.param(
            ("nginx",), {IGNORE: "true", EXIT: "code=5,after=3"}, 30, 5, 3.0, id="rule-first"
        ),
        pytest.param(
            ("nginx",), {IGNORE: "true", EXIT: "code=5,after=30"}, 30, 5, 30.0, id="tie-rule-wins"
        ),
    ],
)
async def test_stop(
    argv: tuple[str, ...],
    annotations: dict[str, str],
    limit: float,
    code: int,
    seconds: float,
) -> None:
    handler = SimHandler()
    container = await started(handler, argv, annotations)
    codes: list[int] = []

    async def wait() -> None:
        codes.append(await handler.wait_container(container))

    start = anyio.current_time()
    async with anyio.create_task_group() as tg:
        tg.start_soon(wait)
        await handler.stop_container(container, limit)
        assert anyio.current_time() - start == pytest.approx(seconds)
    assert codes == [code]
    assert await handler.wait_container(container) == code


async def test_a_cancelled_stop_still_kills_at_its_deadline() -> None:
    handler = SimHandler()
    container = await started(handler, annotations={IGNORE: "true"})
    start = anyio.current_time()
    async with anyio.create_task_group() as tg:

        async def wait() -> None:
            assert await handler.wait_container(container) == EXIT_SIGKILL
            assert anyio.current_time() - start == pytest.approx(30.0)

        tg.start_soon(wait)
        with anyio.move_on_after(5):
            await handler.stop_container(container, 30)
        assert anyio.current_time() - start == pytest.approx(5.0)


async def test_a_second_stop_with_less_time_kills_sooner() -> None:
    handler = SimHandler()
    container = await started(handler, annotations={IGNORE: "true"})
    start = anyio.current_time()
    async with anyio.create_task_group() as tg:
        tg.start_soon(handler.stop_container, container, 60)
        await anyio.sleep(1)
        await handler.stop_container(container, 2)
    assert await handler.wait_container(container) == EXIT_SIGKILL
    assert anyio.current_time() - start == pytest.approx(3.0)


async def test_stopping_a_container_that_is_not_running_changes_nothing() -> None:
    handler = SimHandler()
    exited = await started(handler, ("false",))
    await handler.stop_container(exited, 30)
    assert await handler.wait_container(exited) == 1
    sandbox = await handler.run_sandbox(SandboxConfig(pod=POD, hostname="web"))
    created = await handler.create_container(sandbox, config(), ImageConfig())
    await handler.stop_container(created, 30)
    await handler.start_container(created)  # still CREATED, so it can start
    await handler.stop_container(created, 30)
    assert await handler.wait_container(created) == EXIT_SIGTERM


@pytest.mark.parametrize(
    ("argv", "annotations", "limit", "code", "seconds"),
    [
        pytest.param(("true",), {}, 10, 0, 0.0, id="true"),
        pytest.param(("/bin/false",), {}, 10, 1, 0.0, id="false"),
        pytest.param(("sh", "-c", "exit 2"), {}, 10, 2, 0.0, id="sh-exit"),
        pytest.param(("sleep", "3"), {}, 10, 0, 3.0, id="sleep-within-timeout"),
        pytest.param(("sleep", "10"), {}, 10, 0, 10.0, id="sleep-equal-to-timeout"),
        pytest.param(("cat", "/etc/hosts"), {}, 10, 0, 0.0, id="anything-else-succeeds"),
        pytest.param((), {}, 10, 0, 0.0, id="empty"),
        pytest.param(("true",), {EXEC: "code=2,seconds=1"}, 10, 2, 1.0, id="annotation"),
        pytest.param(("false",), {EXEC: "seconds=4"}, 10, 0, 4.0, id="annotation-seconds"),
        pytest.param(("sleep", "30"), {}, 0, 0, 30.0, id="timeout-zero-is-none"),
        pytest.param(("sleep", "30"), {}, math.inf, 0, 30.0, id="timeout-infinite"),
    ],
)
async def test_exec(
    argv: tuple[str, ...],
    annotations: dict[str, str],
    limit: float,
    code: int,
    seconds: float,
) -> None:
    handler = SimHandler()
    container = await started(handler, annotations=annotations)
    start = anyio.current_time()
    assert await handler.exec_sync(container, argv, limit) == ExecResult(code, b"")
    assert anyio.current_time() - start == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("argv", "annotations"),
    [
        pytest.param(("sleep", "30"), {}, id="sleep"),
        pytest.param(("sh", "-c", "sleep infinity"), {}, id="forever"),
        pytest.param(("true",), {EXEC: "code=0,seconds=20"}, id="annotation"),
    ],
)
async def test_an_exec_past_its_timeout_fails_as_the_cri_client_reports_it(
    argv: tuple[str, ...], annotations: dict[str, str]
) -> None:
    handler = SimHandler()
    container = await started(handler, annotations=annotations)
    start = anyio.current_time()
    with pytest.raises(ContainerRuntimeError) as caught:
        await handler.exec_sync(container, argv, 5)
    assert caught.value.container == "app"
    assert caught.value.message == f'command "{" ".join(argv)}" timed out'
    assert anyio.current_time() - start == pytest.approx(5.0)


async def test_an_exec_ends_with_137_when_the_container_exits() -> None:
    handler = SimHandler()
    container = await started(handler, ("sleep", "5"))
    start = anyio.current_time()
    assert await handler.exec_sync(container, ("sleep", "100"), 60) == ExecResult(EXIT_SIGKILL)
    assert anyio.current_time() - start == pytest.approx(5.0)


async def test_an_exec_ends_with_137_when_the_container_is_stopped() -> None:
    handler = SimHandler()
    container = await started(handler)
    results: list[ExecResult] = []

    async def run_exec() -> None:
        results.append(await handler.exec_sync(container, ("sleep", "100"), math.inf))

    start = anyio.current_time()
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_exec)
        await anyio.sleep(2)
        await handler.stop_container(container, 30)
    assert results == [ExecResult(EXIT_SIGKILL)]
    assert anyio.current_time() - start == pytest.approx(2.0)


async def test_exec_needs_a_running_container() -> None:
    handler = SimHandler()
    exited = await started(handler, ("true",))
    with pytest.raises(ContainerRuntimeError, match="CONTAINER_EXITED"):
        await handler.exec_sync(exited, ("true",), 10)
    sandbox = await handler.run_sandbox(SandboxConfig(pod=POD, hostname="web"))
    created = await handler.create_container(sandbox, config(), ImageConfig())
    with pytest.raises(ContainerRuntimeError, match="CONTAINER_CREATED"):
        await handler.exec_sync(created, ("true",), 10)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        pytest.param(EXIT, "code=x", id="exit-code-word"),
        pytest.param(EXIT, "code=256", id="exit-code-too-big"),
        pytest.param(EXIT, "code=-1", id="exit-code-negative"),
        pytest.param(EXIT, "after=-1", id="exit-after-negative"),
        pytest.param(EXIT, "after=1e3", id="exit-after-exponent"),
        pytest.param(EXIT, "after=inf", id="exit-after-inf"),
        pytest.param(EXIT, "foo=1", id="exit-unknown-field"),
        pytest.param(EXIT, "seconds=1", id="exit-exec-field"),
        pytest.param(EXIT, "code=1,code=2", id="exit-repeated"),
        pytest.param(EXIT, "code=1;after=2", id="exit-semicolon"),
        pytest.param(EXIT, "", id="exit-empty"),
        pytest.param(EXIT, "code=1,", id="exit-trailing-comma"),
        pytest.param(EXEC, "seconds=abc", id="exec-seconds-word"),
        pytest.param(EXEC, "code=1,after=2", id="exec-exit-field"),
        pytest.param(EXEC, "code", id="exec-no-value"),
        pytest.param(IGNORE, "yes", id="ignore-yes"),
        pytest.param(IGNORE, "True", id="ignore-capital"),
        pytest.param(IGNORE, "", id="ignore-empty"),
    ],
)
async def test_a_bad_annotation_fails_the_create_naming_its_key(key: str, value: str) -> None:
    handler = SimHandler()
    sandbox = await handler.run_sandbox(SandboxConfig(pod=POD, hostname="web"))
    with pytest.raises(ContainerRuntimeError) as caught:
        await handler.create_container(sandbox, config(annotations={key: value}), ImageConfig())
    assert caught.value.container == "app"
    assert key in caught.value.message
    assert "hunter2" not in str(caught.value)  # the environment never shows
    assert handler.statistics().containers == 0


async def test_annotations_for_other_containers_are_not_read() -> None:
    handler = SimHandler()
    container = await started(
        handler, ("true",), {"sim.kubelet-sim.io/exit.sidecar": "garbage", EXEC + "x": "bad"}
    )
    assert await handler.wait_container(container) == 0


async def test_ids_are_unique_and_removal_frees_everything() -> None:
    handler = SimHandler()
    ids: set[str] = set()
    for _ in range(50):
        sandbox = await handler.run_sandbox(SandboxConfig(pod=POD, hostname="web"))
        ids.add(sandbox)
        for name in ("a", "b"):
            container = await handler.create_container(sandbox, config(name=name), ImageConfig())
            ids.add(container)
            await handler.start_container(container)
    assert len(ids) == 150
    assert handler.statistics().containers == 100
    for sandbox in [i for i in ids if "sandbox" in i]:
        await handler.stop_sandbox(sandbox)
    assert handler.statistics().sandboxes == 50  # their exited containers are still there
    for container in [i for i in ids if "sandbox" not in i]:
        assert await handler.wait_container(container) == EXIT_SIGKILL
        await handler.remove_container(container)
    assert handler.statistics().sandboxes == 0
    assert handler.statistics().containers == 0


async def test_remove_kills_a_running_container_and_is_idempotent() -> None:
    handler = SimHandler()
    container = await started(handler)
    codes: list[int] = []

    async def wait() -> None:
        codes.append(await handler.wait_container(container))

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait)
        await anyio.sleep(1)
        await handler.remove_container(container)
    assert codes == [EXIT_SIGKILL]
    await handler.remove_container(container)
    await handler.stop_sandbox("sim-sandbox-999")  # unknown: reclaimed already, not an error
    for call in (
        handler.wait_container(container),
        handler.start_container(container),
        handler.stop_container(container, 1),
        handler.exec_sync(container, ("true",), 1),
    ):
        with pytest.raises(ContainerRuntimeError, match="not found"):
            await call


async def test_sandbox_rules() -> None:
    handler = SimHandler()
    with pytest.raises(ContainerRuntimeError, match="not found"):
        await handler.create_container("nope", config(), ImageConfig())
    sandbox = await handler.run_sandbox(SandboxConfig(pod=POD, hostname="web"))
    container = await handler.create_container(sandbox, config(), ImageConfig())
    with pytest.raises(ContainerRuntimeError, match="has not been started"):
        await handler.wait_container(container)
    await handler.start_container(container)
    with pytest.raises(ContainerRuntimeError, match="CONTAINER_RUNNING"):
        await handler.start_container(container)
    await handler.stop_sandbox(sandbox)
    await handler.stop_sandbox(sandbox)
    assert await handler.wait_container(container) == EXIT_SIGKILL
    with pytest.raises(ContainerRuntimeError, match="is not running"):
        await handler.create_container(sandbox, config(name="late"), ImageConfig())


@ASYNCIO
async def test_on_asyncio(anyio_backend: Any) -> None:
    handler = SimHandler()
    assert await handler.wait_container(await started(handler, ("sh", "-c", "exit 6"))) == 6
    running = await started(handler)
    assert await handler.exec_sync(running, ("false",), 5) == ExecResult(1)
    assert await handler.exec_sync(running, ("sleep", "0.01"), 5) == ExecResult(0)
    with pytest.raises(ContainerRuntimeError, match="timed out"):
        await handler.exec_sync(running, ("sleep", "5"), 0.01)
    await handler.stop_container(running, 30)
    assert await handler.wait_container(running) == EXIT_SIGTERM
    killed = await started(handler, annotations={IGNORE: "true"})
    await handler.stop_container(killed, 0.01)
    assert await handler.wait_container(killed) == EXIT_SIGKILL
