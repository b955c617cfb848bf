"""The ``sim`` runtime handler: containers without processes, whose exits follow a fixed rule.

:class:`SimHandler` implements :class:`~kubelet_sim.runtime.port.RuntimeHandler` with no
process, thread or task behind a container: a container is a few numbers (when it started, when
its "process" will exit and with which code), and every wait is an ``anyio`` wait on the
monotonic clock, so the same rule runs under asyncio in the daemon and under trio's
``MockClock`` (virtual time) in the bench and the tests.

The rule
--------

**Commands.** A command (the container's ``argv``, or an exec's) is read by the basename of its
first word (``/bin/false`` is ``false``):

=================================  =====================================================
``true``                           exits 0 at once (arguments are ignored)
``false``                          exits 1 at once
``sh -c 'exit N'``                 exits ``N`` mod 256 at once (``exit`` alone: 0)
``sleep N``                        exits 0 after ``N`` seconds: a decimal number with an
                                   optional ``s``/``m``/``h``/``d`` suffix; ``sleep
                                   infinity`` never exits; a missing or bad operand exits 1
                                   at once, as ``sleep`` does
``sh -c '<one of the above>'``     the same as the command itself (``sh -c 'sleep 5'``)
anything else                      no rule (below)
=================================  =====================================================

``sh`` is ``sh``, ``bash``, ``ash`` or ``dash``, with ``-c`` as its first argument; the script
must be exactly one of the commands above (no ``;``, ``&&``, pipes or variables).

**Main process** (``ContainerConfig.argv``): follows the command rule from the moment
:meth:`~SimHandler.start_container` returns. A command with no rule, and an empty ``argv``,
runs until it is stopped; in an init container (``ContainerConfig.init``) it exits 0 at once,
so a pod's init containers complete the way a setup step does.

**Exec** (:meth:`~SimHandler.exec_sync`, which lifecycle hooks use): follows the command rule;
a command with no rule exits 0 at once. The output is always empty (``b""``). An exec that would
run past its ``timeout`` is ended at the timeout with
:class:`~kubelet_sim.errors.ContainerRuntimeError` ``command "<argv>" timed out``: what the
kubelet's CRI client makes of the runtime's ``DeadlineExceeded`` (containerd kills the exec
process and returns no exit code). ``timeout`` 0, negative or infinite means none, as
``ExecSyncRequest.timeout`` 0 does. An exec still running when the container exits ends then
with exit code 137 (the exec process dies with the container's PID namespace).

**Stop** (:meth:`~SimHandler.stop_container`, SIGTERM then SIGKILL after ``timeout``): the
process honours SIGTERM and exits at once with 143. With ``timeout`` 0 or less there is no
SIGTERM: it is killed at once with 137 (containerd's ``StopContainer``). A container whose
process ignores SIGTERM keeps running until its rule ends it or ``timeout`` passes, when it is
killed with 137. :meth:`~SimHandler.stop_sandbox` and :meth:`~SimHandler.remove_container` kill
a running container at once (137), as containerd does. A stop that is cancelled while it waits
still kills the process at its deadline.

**Annotations** (the pod's, in ``ContainerConfig.annotations``; ``<c>`` is the container name):

- ``sim.kubelet-sim.io/exit.<c>: "code=1,after=5"``: the main process exits with ``code``
  (0-255, default 0) ``after`` seconds (default 0), whatever its ``argv``;
- ``sim.kubelet-sim.io/exec.<c>: "code=2,seconds=1"``: every exec in the container exits with
  ``code`` after ``seconds`` (the timeout still applies);
- ``sim.kubelet-sim.io/ignore-sigterm.<c>: "true"`` (or ``"false"``): the process ignores SIGTERM.

A value that cannot be read (an unknown or repeated field, a code outside 0-255, a negative or
non-decimal number, a boolean other than ``true``/``false``) makes
:meth:`~SimHandler.create_container` fail with a
:class:`~kubelet_sim.errors.ContainerRuntimeError` that names the annotation key; no value is
ever ignored.

Exit codes follow the ``128 + signal`` convention: 143 is SIGTERM, 137 SIGKILL. Time is
``anyio.current_time()``; a rule's ``after`` is counted from the start, not from a wait.
"""

from __future__ import annotations

import itertools
import math
import posixpath
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import anyio
import anyio.lowlevel

from kubelet_sim.core.reference import go_quote
from kubelet_sim.errors import ContainerRuntimeError
from kubelet_sim.runtime.port import (
    ContainerConfig,
    ExecResult,
    HandlerKind,
    ImageConfig,
    SandboxConfig,
)

__all__ = [
    "ANNOTATION_PREFIX",
    "EXIT_SIGKILL",
    "EXIT_SIGTERM",
    "Outcome",
    "SimHandler",
    "SimStatistics",
    "exec_outcome",
    "interpret",
    "main_outcome",
]

ANNOTATION_PREFIX: Final = "sim.kubelet-sim.io/"
EXIT_SIGTERM: Final = 143
"""128 + SIGTERM (15)."""
EXIT_SIGKILL: Final = 137
"""128 + SIGKILL (9)."""

_SHELLS: Final = frozenset({"sh", "bash", "ash", "dash"})
_EXIT_CODE = re.compile(r"[0-9]+")
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_SLEEP_OPERAND = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)([smhd]?)")
_SLEEP_UNITS: Final = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_INFINITY: Final = frozenset({"inf", "infinity"})


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a command does: exits with ``exit_code`` after ``after`` seconds (None: never)."""

    exit_code: int
    after: float | None = 0.0


_NEVER: Final = Outcome(0, None)


def interpret(argv: tuple[str, ...]) -> Outcome | None:
    """The command rule (module docstring): the outcome of ``argv``, or None when no rule applies."""
    if not argv:
        return None
    name = posixpath.basename(argv[0])
    if name == "true":
        return Outcome(0)
    if name == "false":
        return Outcome(1)
    if name == "sleep":
        return _sleep(argv[1:])
    if name in _SHELLS and len(argv) == 3 and argv[1] == "-c":
        words = tuple(argv[2].split())
        if words and words[0] == "exit":
            if len(words) == 1:
                return Outcome(0)
            if len(words) == 2 and _EXIT_CODE.fullmatch(words[1]):
                return Outcome(int(words[1][-8:]) % 256)  # 10**8 is a multiple of 256
            return None
        if words and words[0] in ("true", "false", "sleep"):
            return interpret(words)
    return None


def _sleep(operands: tuple[str, ...]) -> Outcome:
    if len(operands) != 1:
        return Outcome(1)  # sleep: missing operand (several operands: not in the subset)
    operand = operands[0]
    if operand.lower() in _INFINITY:
        return _NEVER
    match = _SLEEP_OPERAND.fullmatch(operand)
    if match is None:
        return Outcome(1)  # sleep: invalid time interval
    return Outcome(0, float(match.group(1)) * _SLEEP_UNITS[match.group(2)])


def main_outcome(config: ContainerConfig) -> Outcome:
    """What the container's main process does: the ``exit`` annotation, else the command rule.

    Raises:
        ContainerRuntimeError: the annotation's value cannot be read (names the key).
    """
    override = _fields_annotation(config, "exit", ("code", "after"))
    if override is not None:
        return override
    return interpret(config.argv) or (Outcome(0) if config.init else _NEVER)


def exec_outcome(config: ContainerConfig) -> Outcome | None:
    """The container's ``exec`` annotation (every exec's outcome), or None when it has none.

    Raises:
        ContainerRuntimeError: the annotation's value cannot be read (names the key).
    """
    return _fields_annotation(config, "exec", ("code", "seconds"))


def ignores_sigterm(config: ContainerConfig) -> bool:
    """The container's ``ignore-sigterm`` annotation (False when absent).

    Raises:
        ContainerRuntimeError: the value is neither ``true`` nor ``false`` (names the key).
    """
    key = f"{ANNOTATION_PREFIX}ignore-sigterm.{config.name}"
    value = config.annotations.get(key)
    if value is None or value == "false":
        return False
    if value == "true":
        return True
    raise _bad_annotation(config.name, key, value, 'must be "true" or "false"')


def _fields_annotation(
    config: ContainerConfig, kind: str, fields: tuple[str, str]
) -> Outcome | None:
    key = f"{ANNOTATION_PREFIX}{kind}.{config.name}"
    value = config.annotations.get(key)
    if value is None:
        return None
    code_field, seconds_field = fields
    seen: dict[str, str] = {}
    for item in value.split(","):
        name, sep, text = (part.strip() for part in item.partition("="))
        if not sep or name not in fields:
            expected = f"{code_field}=N,{seconds_field}=S"
            raise _bad_annotation(config.name, key, value, f"expected {expected}")
        if name in seen:
            raise _bad_annotation(config.name, key, value, f"{name} is given twice")
        seen[name] = text
    code_text = seen.get(code_field, "0")
    digits = code_text.lstrip("0") or "0"
    if not _EXIT_CODE.fullmatch(code_text) or len(digits) > 3 or int(digits) > 255:
        raise _bad_annotation(config.name, key, value, f"{code_field} must be an integer 0-255")
    seconds_text = seen.get(seconds_field, "0")
    if not _DECIMAL.fullmatch(seconds_text):
        raise _bad_annotation(
            config.name, key, value, f"{seconds_field} must be a non-negative decimal number"
        )
    return Outcome(int(code_text), float(seconds_text))


def _bad_annotation(container: str, key: str, value: str, problem: str) -> ContainerRuntimeError:
    return ContainerRuntimeError(
        container, f"annotation {key}: invalid value {go_quote(value)}: {problem}"
    )


class _State(StrEnum):
    """CRI ``ContainerState`` names (what containerd's errors say)."""

    CREATED = "CONTAINER_CREATED"
    RUNNING = "CONTAINER_RUNNING"
    EXITED = "CONTAINER_EXITED"


class _Container:
    """One container: its rule's numbers and its state; no process, no task."""

    __slots__ = (
        "exec_override",
        "exit_at",
        "exit_code",
        "finished_at",
        "id",
        "ignore_sigterm",
        "kill_at",
        "main",
        "name",
        "sandbox_id",
        "state",
        "wake",
    )

    def __init__(
        self,
        container_id: str,
        name: str,
        sandbox_id: str,
        main: Outcome,
        exec_override: Outcome | None,
        ignore_sigterm: bool,
    ) -> None:
        self.id = container_id
        self.name = name
        self.sandbox_id = sandbox_id
        self.main = main
        self.exec_override = exec_override
        self.ignore_sigterm = ignore_sigterm
        self.state = _State.CREATED
        self.exit_at = math.inf
        """When the main process exits by its rule (set at start)."""
        self.kill_at = math.inf
        """When a stop's SIGKILL lands (set by a stop of a process that ignores SIGTERM)."""
        self.exit_code = -1
        self.finished_at = math.nan
        self.wake: anyio.Event | None = None
        """What waiters wait on, made by the first of them: set (and dropped) when the process
        exits or ``kill_at`` moves, so waiters look again. Nobody waiting, no event."""


class _Sandbox:
    __slots__ = ("containers", "stopped")

    def __init__(self) -> None:
        self.containers: set[str] = set()
        self.stopped = False


@dataclass(frozen=True, slots=True)
class SimStatistics:
    """What a :class:`SimHandler` holds: sandboxes and containers not yet removed."""

    sandboxes: int
    containers: int


class SimHandler:
    """A runtime handler with no processes: container exits follow the module's rule.

    Args:
        name: the handler's name in the node's ``runtimes`` table (a RuntimeClass ``handler``).
    """

    def __init__(self, name: str = "sim") -> None:
        self._name = name
        self._ids = itertools.count(1)
        self._sandboxes: dict[str, _Sandbox] = {}
        self._containers: dict[str, _Container] = {}

    @property
    def name(self) -> str:
        return self._name

    @property
    def kind(self) -> HandlerKind:
        return HandlerKind.SIM

    def unavailable_reason(self) -> str | None:
        return None

    def statistics(self) -> SimStatistics:
        return SimStatistics(sandboxes=len(self._sandboxes), containers=len(self._containers))

    async def run_sandbox(self, config: SandboxConfig) -> str:
        await anyio.lowlevel.checkpoint()
        sandbox_id = f"{self._name}-sandbox-{next(self._ids)}"
        self._sandboxes[sandbox_id] = _Sandbox()
        return sandbox_id

    async def stop_sandbox(self, sandbox_id: str) -> None:
        """Kill the sandbox's running containers at once (137); idempotent, as CRI's is."""
        await anyio.lowlevel.checkpoint()
        sandbox = self._sandboxes.get(sandbox_id)
        if sandbox is None:
            return  # already reclaimed: StopPodSandbox must not fail then
        sandbox.stopped = True
        now = anyio.current_time()
        for container_id in sandbox.containers:
            self._kill_now(self._containers[container_id], now)
        self._forget_sandbox_if_done(sandbox_id, sandbox)

    async def create_container(
        self, sandbox_id: str, config: ContainerConfig, image: ImageConfig
    ) -> str:
        await anyio.lowlevel.checkpoint()
        sandbox = self._sandboxes.get(sandbox_id)
        if sandbox is None:
            raise ContainerRuntimeError(config.name, f"sandbox {sandbox_id} not found")
        if sandbox.stopped:
            raise ContainerRuntimeError(
                config.name, f"sandbox container {go_quote(sandbox_id)} is not running"
            )
        container = _Container(
            f"{self._name}-{next(self._ids)}",
            config.name,
            sandbox_id,
            main_outcome(config),
            exec_outcome(config),
            ignores_sigterm(config),
        )
        self._containers[container.id] = container
        sandbox.containers.add(container.id)
        return container.id

    async def start_container(self, container_id: str) -> None:
        await anyio.lowlevel.checkpoint()
        container = self._get(container_id)
        if container.state is not _State.CREATED:
            raise ContainerRuntimeError(container.name, f"container is in {container.state} state")
        now = anyio.current_time()
        container.state = _State.RUNNING
        after = container.main.after
        container.exit_at = math.inf if after is None else now + after
        self._settle(container, now)

    async def exec_sync(
        self,
        container_id: str,
        argv: tuple[str, ...],
        timeout: float,  # noqa: ASYNC109 - the RuntimeHandler port's ExecSync timeout
    ) -> ExecResult:
        """Run ``argv`` by the command rule (or the ``exec`` annotation), within ``timeout``.

        Raises:
            ContainerRuntimeError: the container is not running, or the exec timed out.
        """
        await anyio.lowlevel.checkpoint()
        container = self._get(container_id)
        now = anyio.current_time()
        self._settle(container, now)
        if container.state is not _State.RUNNING:
            raise ContainerRuntimeError(container.name, f"container is in {container.state} state")
        outcome = container.exec_override or interpret(argv) or Outcome(0)
        end = math.inf if outcome.after is None else now + outcome.after
        limit = math.inf if timeout <= 0 or math.isinf(timeout) else now + timeout
        until = min(end, limit)
        if await self._wait_exit(container, until) and container.finished_at < until:
            return ExecResult(EXIT_SIGKILL)
        if end > limit:
            raise ContainerRuntimeError(
                container.name, f"command {go_quote(' '.join(argv))} timed out"
            )
        return ExecResult(outcome.exit_code)

    async def wait_container(self, container_id: str) -> int:
        await anyio.lowlevel.checkpoint()
        container = self._get(container_id)
        if container.state is _State.CREATED:
            raise ContainerRuntimeError(container.name, "container has not been started")
        await self._wait_exit(container, math.inf)
        return container.exit_code

    async def stop_container(
        self,
        container_id: str,
        timeout: float,  # noqa: ASYNC109 - the RuntimeHandler port's StopContainer timeout
    ) -> None:
        """SIGTERM (143 at once) unless ignored, SIGKILL (137) after ``timeout``; returns on exit.

        A container that is not running is left as it is (CRI's ``StopContainer`` is idempotent).
        """
        await anyio.lowlevel.checkpoint()
        container = self._get(container_id)
        now = anyio.current_time()
        self._settle(container, now)
        if container.state is not _State.RUNNING:
            return
        if timeout <= 0:
            self._kill_now(container, now)
            return
        if not container.ignore_sigterm:
            self._exit(container, EXIT_SIGTERM, now)
            return
        if now + timeout < container.kill_at:
            container.kill_at = now + timeout
            self._wake(container)
        await self._wait_exit(container, math.inf)

    async def remove_container(self, container_id: str) -> None:
        """Remove the container, killing it first if it runs (137); idempotent, as CRI's is."""
        await anyio.lowlevel.checkpoint()
        container = self._containers.pop(container_id, None)
        if container is None:
            return
        self._kill_now(container, anyio.current_time())
        sandbox = self._sandboxes.get(container.sandbox_id)
        if sandbox is not None:
            sandbox.containers.discard(container_id)
            self._forget_sandbox_if_done(container.sandbox_id, sandbox)

    def _get(self, container_id: str) -> _Container:
        container = self._containers.get(container_id)
        if container is None:
            raise ContainerRuntimeError(container_id, "container not found")
        return container

    def _forget_sandbox_if_done(self, sandbox_id: str, sandbox: _Sandbox) -> None:
        # A stopped, empty sandbox holds nothing a later call needs (StopPodSandbox on an unknown
        # id is a no-op), so it is dropped: memory stays flat under pod churn.
        if sandbox.stopped and not sandbox.containers:
            del self._sandboxes[sandbox_id]

    def _settle(self, container: _Container, at: float) -> None:
        """Apply the rule up to time ``at``: the natural exit or the kill, whichever came first."""
        if container.state is not _State.RUNNING:
            return
        if container.exit_at <= at and container.exit_at <= container.kill_at:
            self._exit(container, container.main.exit_code, container.exit_at)
        elif container.kill_at <= at:
            self._exit(container, EXIT_SIGKILL, container.kill_at)

    def _kill_now(self, container: _Container, now: float) -> None:
        self._settle(container, now)
        if container.state is _State.RUNNING:
            self._exit(container, EXIT_SIGKILL, now)

    @staticmethod
    def _exit(container: _Container, code: int, at: float) -> None:
        container.state = _State.EXITED
        container.exit_code = code
        container.finished_at = at
        SimHandler._wake(container)

    @staticmethod
    def _wake(container: _Container) -> None:
        if container.wake is not None:
            container.wake.set()
            container.wake = None

    async def _wait_exit(self, container: _Container, until: float) -> bool:
        """Wait until the container has exited (True) or ``until`` has come (False)."""
        while not self._exited_by(container, anyio.current_time()):
            deadline = min(until, container.exit_at, container.kill_at)
            if deadline <= anyio.current_time() and deadline >= until:
                return False
            if container.wake is None:
                container.wake = anyio.Event()
            wake = container.wake
            with anyio.move_on_at(deadline) as scope:
                await wake.wait()
            if scope.cancelled_caught:
                # The timer fired: settle at the deadline itself (asyncio may wake a hair early).
                if self._exited_by(container, deadline):
                    return True
                if deadline >= until:
                    return False
        return True

    def _exited_by(self, container: _Container, at: float) -> bool:
        self._settle(container, at)
        return container.state is _State.EXITED
