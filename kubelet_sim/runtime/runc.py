"""The runc runtime handler: real containers from an image's snapshot, run by Debian's ``runc``.

Layout under the state root (one handler per root)::

    runc/                  runc --root: runc's own state (state.json per running container)
    snapshots/             unpacked images (kubelet_sim.runtime.rootfs.Snapshotter)
    sandboxes/<id>/        sandbox.json: the pod's identity, hostname and IP
    containers/<id>/       the OCI bundle: config.json, rootfs (+ rootfs.upper, rootfs.work with
                           overlay), container.log (stdout and stderr), runc.log, pid

Choices, and what upstream does instead:

- **A sandbox is bookkeeping only** (a folder and a record), not a pause container. Containers
  share the **host's network namespace** (as ``hostNetwork: true`` pods do): the pod IP is the
  node's, and loopback HTTP between a container and the node (or a test) works with no CNI.
  Each container has its own pid, mount, ipc and uts namespace; the hostname is the config's.
- **Start** runs ``runc run`` in the foreground (no terminal) as the container's parent, its
  stdio going to ``container.log``. It returns once runc has written ``--pid-file`` (the
  process was started); runc failing before that is a ContainerRuntimeError carrying runc's
  logged error, and the container counts as exited with 128 (containerd's ``StartError``). runc
  forwards signals and exits with the container's status, 128+N for signal N, which
  :meth:`RuncHandler.wait_container` returns. A start that is cancelled kills and deletes what it
  started (shielded), so no container is left running.
- **Stop** is ``runc kill TERM``, up to ``timeout`` seconds, then ``runc kill KILL``. PID 1 of a
  pid namespace receives no signal it has no handler for: a bare ``sleep`` ignores TERM and is
  killed after the timeout (137).
- **ExecSync** is ``runc exec`` (the container's env and cwd) with stdout and stderr together
  (their interleaving is runc's), capped at :data:`EXEC_OUTPUT_LIMIT`; on timeout the exec'd
  process is SIGKILLed and the exit code is runc's (137).
- **Remove** kills a running container, ``runc delete --force``, unmounts and deletes its rootfs,
  then the bundle; the image snapshot stays for the next container.

Not modelled: resource limits (runc's default cgroup, under this process's), seccomp and
AppArmor profiles, user namespaces, the managed ``/etc/hosts`` and ``/etc/resolv.conf``, and
containers surviving this process (the handler's records are in memory; :meth:`RuncHandler.aclose`
removes what it made).

Errors name the container and carry runc's own words; the container's environment is never in
an error, a log line or ``sandbox.json`` (it may hold Secret values). The runtime spec is
built by :mod:`~kubelet_sim.runtime.runcspec`; ``runc exec``, runc's error log and exit codes are
:mod:`~kubelet_sim.runtime.runcproc`'s.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import count
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import structlog

from kubelet_sim.errors import ContainerRuntimeError, RootfsError
from kubelet_sim.runtime.port import (
    ContainerConfig,
    ExecResult,
    HandlerKind,
    ImageConfig,
    SandboxConfig,
)
from kubelet_sim.runtime.rootfs import (
    ContainerRootfs,
    ImageContent,
    RootfsMode,
    Snapshotter,
)
from kubelet_sim.runtime.runcproc import (
    EXEC_OUTPUT_LIMIT,
    EXEC_PID_WAIT,
    STDERR_LIMIT,
    exit_status,
    run_exec,
    runc_errors,
    stderr_text,
)
from kubelet_sim.runtime.runcspec import (
    CAPABILITIES,
    MASKED_PATHS,
    MOUNTS,
    NAMESPACES,
    READONLY_PATHS,
    check_env,
    resolve_user,
    runtime_spec,
)

__all__ = [
    "CAPABILITIES",
    "EXEC_OUTPUT_LIMIT",
    "EXEC_PID_WAIT",
    "MASKED_PATHS",
    "MOUNTS",
    "NAMESPACES",
    "READONLY_PATHS",
    "STDERR_LIMIT",
    "ContainerState",
    "RuncHandler",
    "RuncStatistics",
    "new_container_id",
    "runtime_spec",
]

log = structlog.get_logger(__name__)

START_TIMEOUT = 60.0
KILL_WAIT = 30.0  # after SIGKILL, how long a process may take to be reaped


class ContainerState(StrEnum):
    CREATED = "created"
    RUNNING = "running"
    EXITED = "exited"


@dataclass(frozen=True, slots=True)
class RuncStatistics:
    sandboxes: int
    """Sandboxes run and not stopped."""
    containers: int
    """Containers created and not removed (any state)."""
    running: int


@dataclass(slots=True, eq=False)
class _Container:
    id: str
    sandbox_id: str
    config: ContainerConfig = field(repr=False)  # holds the env: never logged
    bundle: Path
    rootfs: ContainerRootfs
    state: ContainerState = ContainerState.CREATED
    process: anyio.abc.Process | None = None
    exit_code: int | None = None


@dataclass(slots=True, eq=False)
class _Sandbox:
    id: str
    config: SandboxConfig
    folder: Path
    containers: set[str] = field(default_factory=set)
    stopped: bool = False


_ID_UNSAFE = re.compile(r"[^a-z0-9.-]+")


def _slug(text: str, limit: int) -> str:
    return _ID_UNSAFE.sub("-", text.lower()).strip("-.")[:limit].strip("-.") or "x"


def new_container_id(config: ContainerConfig) -> str:
    """``ks-<pod>-<container>-<attempt>-<random>``: unique, and valid for runc (``[\\w+-.]+``)."""
    pod, name = _slug(config.pod.name, 24), _slug(config.name, 24)
    return f"ks-{pod}-{name}-{config.attempt}-{secrets.token_hex(4)}"


class RuncHandler:
    """A :class:`~kubelet_sim.runtime.port.RuntimeHandler` running real containers with runc."""

    def __init__(
        self,
        name: str,
        state_root: Path,
        content: ImageContent,
        *,
        runc: str | Path = "runc",
        rootfs_mode: RootfsMode | None = None,
        start_timeout: float = START_TIMEOUT,
        geteuid: Callable[[], int] = os.geteuid,
    ) -> None:
        """Args:
        name: the handler's name (a RuntimeClass ``handler``); images are looked up with it.
        state_root: the folder of everything this handler makes (module docstring).
        content: the store the images were pulled into.
        runc: the runc binary, a path or a name looked up on ``PATH``.
        rootfs_mode: overlay or copy (default: overlay when root and available).
        """
        self._name = name
        self.state_root = Path(state_root)
        self._runc_wanted = str(runc)
        self._runc = shutil.which(self._runc_wanted)
        self._geteuid = geteuid
        self.start_timeout = start_timeout
        self.snapshotter = Snapshotter(
            self.state_root,
            content,
            mode=rootfs_mode,
            runtime_handler=name,
        )
        self._sandboxes: dict[str, _Sandbox] = {}
        self._containers: dict[str, _Container] = {}
        self._execs = count(1)

    @property
    def name(self) -> str:
        return self._name

    @property
    def kind(self) -> HandlerKind:
        return HandlerKind.RUNC

    def unavailable_reason(self) -> str | None:
        """Why this handler cannot run containers here (no root, no runc binary), or None."""
        if self._geteuid() != 0:
            return "runc handler needs root"
        if self._runc is None:
            return (
                f"runc binary {self._runc_wanted!r} not found (install runc: scripts/bootstrap.sh)"
            )
        return None

    def statistics(self) -> RuncStatistics:
        running = sum(c.state is ContainerState.RUNNING for c in self._containers.values())
        ready = sum(not s.stopped for s in self._sandboxes.values())
        return RuncStatistics(ready, len(self._containers), running)

    def log_path(self, container_id: str) -> Path:
        """The file a container's stdout and stderr go to (raw bytes, not the CRI log format)."""
        return self._get(container_id).bundle / "container.log"

    # -- sandboxes ---------------------------------------------------------------------------

    async def run_sandbox(self, config: SandboxConfig) -> str:
        """Record the pod's sandbox (a folder, no process, the host network); returns its id."""
        self._require(str(config.pod))
        sandbox_id = f"ks-sb-{_slug(config.pod.name, 32)}-{secrets.token_hex(4)}"
        folder = self.state_root / "sandboxes" / sandbox_id
        doc = {
            "id": sandbox_id,
            "pod": {
                "namespace": config.pod.namespace,
                "name": config.pod.name,
                "uid": config.pod.uid,
            },
            "hostname": config.hostname,
            "pod_ip": config.pod_ip,
        }
        await anyio.to_thread.run_sync(_write_json, folder / "sandbox.json", doc)
        self._sandboxes[sandbox_id] = _Sandbox(sandbox_id, config, folder)
        log.info("runc.sandbox_ready", pod=str(config.pod), sandbox=sandbox_id)
        return sandbox_id

    async def stop_sandbox(self, sandbox_id: str) -> None:
        """Kill the sandbox's running containers (CRI: forcibly) and drop its folder; idempotent."""
        sandbox = self._sandboxes.get(sandbox_id)
        if sandbox is None or sandbox.stopped:
            return
        for container_id in sorted(sandbox.containers):
            await self.stop_container(container_id, 0)
        sandbox.stopped = True
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(_remove_tree, sandbox.folder)
        self._sandboxes.pop(sandbox_id, None)  # later calls on this id find no sandbox
        log.info("runc.sandbox_stopped", pod=str(sandbox.config.pod), sandbox=sandbox_id)

    # -- containers --------------------------------------------------------------------------

    async def create_container(
        self, sandbox_id: str, config: ContainerConfig, image: ImageConfig
    ) -> str:
        """Make the bundle: the container's rootfs over the image's snapshot and config.json.

        Raises:
            RootfsError: the image cannot be unpacked (names the container, layer and entry).
            ContainerRuntimeError: no such sandbox, no command, a bad env name, an unknown user.
        """
        container_id = new_container_id(config)
        self._require(container_id)
        sandbox = self._sandboxes.get(sandbox_id)
        if sandbox is None or sandbox.stopped:
            raise ContainerRuntimeError(container_id, f"sandbox {sandbox_id} is not ready")
        if not config.argv:
            raise ContainerRuntimeError(container_id, "no command specified")
        check_env(container_id, config.env)
        cwd = config.working_dir or image.working_dir or "/"
        if not cwd.startswith("/"):
            raise ContainerRuntimeError(container_id, f"working dir {cwd!r} is not absolute")
        bundle = self.state_root / "containers" / container_id
        try:
            try:
                rootfs = await self.snapshotter.prepare(
                    config.image_id, bundle / "rootfs", config.image_handler
                )
            except RootfsError as exc:
                raise RootfsError(container_id, f"image {config.image_id}: {exc.message}") from exc
            user = await anyio.to_thread.run_sync(resolve_user, rootfs.path, image.user)
            if isinstance(user, str):
                raise ContainerRuntimeError(container_id, user)
            spec = runtime_spec(config, image, rootfs.path, user)
            await anyio.to_thread.run_sync(_write_json, bundle / "config.json", spec)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.snapshotter.discard(bundle / "rootfs")
                await anyio.to_thread.run_sync(_remove_tree, bundle)
            raise
        self._containers[container_id] = _Container(
            container_id, sandbox_id, config, bundle, rootfs
        )
        sandbox.containers.add(container_id)
        log.info(
            "runc.container_created",
            pod=str(config.pod),
            container=config.name,
            attempt=config.attempt,
            id=container_id,
            rootfs=str(rootfs.mode),
        )
        return container_id

    async def start_container(self, container_id: str) -> None:
        """``runc run`` the container; returns once its process was started.

        Raises:
            ContainerRuntimeError: not a created container, or runc failed to start it (runc's
                error, from its log).
        """
        container = self._get(container_id)
        if container.state is not ContainerState.CREATED:
            raise ContainerRuntimeError(container_id, f"cannot start a {container.state} container")
        container.state = ContainerState.RUNNING
        bundle = container.bundle
        command = self._command(
            "--log",
            str(bundle / "runc.log"),
            "--log-format",
            "json",
            "run",
            "--bundle",
            str(bundle),
            "--pid-file",
            str(bundle / "pid"),
            container_id,
        )
        # Shielded: a process spawned must be known, to be killed if this start is cancelled.
        with anyio.CancelScope(shield=True):
            try:
                output = await anyio.to_thread.run_sync(_open_append, bundle / "container.log")
                try:
                    container.process = await anyio.open_process(
                        command,
                        stdin=subprocess.DEVNULL,
                        stdout=output,
                        stderr=output,
                        start_new_session=True,  # the terminal's ^C is not the container's
                    )
                finally:
                    output.close()
            except OSError as exc:
                container.state, container.exit_code = ContainerState.EXITED, 128
                raise ContainerRuntimeError(container_id, f"cannot run runc: {exc}") from exc
        try:
            await self._wait_started(container)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._kill(container)
            raise
        log.info("runc.container_started", pod=str(container.config.pod), id=container_id)

    async def _wait_started(self, container: _Container) -> None:
        process = container.process
        assert process is not None
        pid_file = container.bundle / "pid"
        deadline = anyio.current_time() + self.start_timeout
        delay = 0.001
        while not await anyio.to_thread.run_sync(pid_file.exists):
            if process.returncode is not None:
                status = exit_status(await process.wait())
                container.state, container.exit_code = ContainerState.EXITED, 128
                problem = await anyio.to_thread.run_sync(runc_errors, container.bundle / "runc.log")
                raise ContainerRuntimeError(
                    container.id,
                    f"runc run failed (exit {status}): {problem or 'no error logged'}",
                )
            if anyio.current_time() >= deadline:
                raise ContainerRuntimeError(
                    container.id, f"runc run did not start it within {self.start_timeout:g}s"
                )
            await anyio.sleep(delay)
            delay = min(delay * 2, 0.05)

    async def wait_container(self, container_id: str) -> int:
        """Wait for the container's process to exit; its exit code (128+N for signal N).

        Raises:
            ContainerRuntimeError: the container was never started.
        """
        container = self._get(container_id)
        if container.exit_code is not None:
            return container.exit_code
        if container.process is None:
            raise ContainerRuntimeError(container_id, "the container was never started")
        return self._exited(container, await container.process.wait())

    def _exited(self, container: _Container, returncode: int) -> int:
        if container.exit_code is None:
            container.exit_code = exit_status(returncode)
            log.info(
                "runc.container_exited",
                pod=str(container.config.pod),
                id=container.id,
                exit_code=container.exit_code,
            )
        container.state = ContainerState.EXITED
        return container.exit_code

    async def stop_container(self, container_id: str, timeout: float) -> None:  # noqa: ASYNC109
        """SIGTERM, SIGKILL after ``timeout`` s (at once when it is 0); returns once it exited.

        Raises:
            ContainerRuntimeError: runc could not signal it, or it outlived SIGKILL.
        """
        container = self._get(container_id)
        if container.state is not ContainerState.RUNNING or container.process is None:
            return
        if timeout > 0:
            await self._signal(container, "TERM")
            with anyio.move_on_after(timeout):
                await self.wait_container(container_id)
                return
            log.info("runc.stop_timeout", id=container_id, timeout=timeout)
        await self._signal(container, "KILL")
        with anyio.move_on_after(KILL_WAIT):
            await self.wait_container(container_id)
            return
        raise ContainerRuntimeError(container_id, f"still running {KILL_WAIT:g}s after SIGKILL")

    async def _signal(self, container: _Container, name: str) -> None:
        process = container.process
        assert process is not None
        result = await self._runc_run(container.id, "kill", container.id, name)
        if result.returncode == 0:
            return
        with anyio.move_on_after(1):  # it may have exited between our look and runc's
            self._exited(container, await process.wait())
            return
        raise ContainerRuntimeError(
            container.id, f"runc kill {name} failed: {stderr_text(result.stderr)}"
        )

    async def exec_sync(
        self,
        container_id: str,
        argv: tuple[str, ...],
        timeout: float,  # noqa: ASYNC109 - the port's signature (CRI ExecSync's timeout)
    ) -> ExecResult:
        """``runc exec`` ``argv`` in the running container, for at most ``timeout`` s.

        Returns:
            The exit code (137 when killed for the timeout) and the output, stdout and stderr
            together, capped (runc copies each through a pipe of its own, so how lines of the
            two interleave is not kept).

        Raises:
            ContainerRuntimeError: the container is not running, or runc could not exec (a
                missing binary, say: runc's error).
        """
        container = self._get(container_id)
        process = container.process
        if container.state is not ContainerState.RUNNING or process is None:
            raise ContainerRuntimeError(
                container_id, f"cannot exec in a {container.state} container"
            )
        if process.returncode is not None:
            self._exited(container, await process.wait())
            raise ContainerRuntimeError(container_id, "cannot exec in an exited container")
        if not argv:
            raise ContainerRuntimeError(container_id, "exec: no command specified")
        n = next(self._execs)
        pid_file = container.bundle / f"exec-{n}.pid"
        runc_log = container.bundle / f"exec-{n}.log"
        command = self._command(
            "--log",
            str(runc_log),
            "--log-format",
            "json",
            "exec",
            "--pid-file",
            str(pid_file),
            container_id,
            *argv,
        )
        return await run_exec(container_id, command, argv, pid_file, runc_log, timeout)

    async def remove_container(self, container_id: str) -> None:
        """Kill it if running, delete runc's state, its rootfs and bundle; idempotent.

        Raises:
            ContainerRuntimeError: runc kept its state, or the rootfs could not be removed.
        """
        container = self._containers.get(container_id)
        if container is None:
            return
        with anyio.CancelScope(shield=True):
            await self._kill(container)
            if container.process is not None:
                await container.process.aclose()
            await self.snapshotter.remove(container.rootfs)
            await anyio.to_thread.run_sync(_remove_tree, container.bundle)
        self._containers.pop(container_id, None)  # another removal may have finished first
        sandbox = self._sandboxes.get(container.sandbox_id)
        if sandbox is not None:
            sandbox.containers.discard(container_id)
        log.info("runc.container_removed", pod=str(container.config.pod), id=container_id)

    async def aclose(self) -> None:
        """Remove every container and stop every sandbox this handler knows (shielded)."""
        with anyio.CancelScope(shield=True):
            for container_id in list(self._containers):
                await self.remove_container(container_id)
            for sandbox_id in list(self._sandboxes):
                await self.stop_sandbox(sandbox_id)
            self._sandboxes.clear()

    # -- helpers -----------------------------------------------------------------------------

    def _get(self, container_id: str) -> _Container:
        container = self._containers.get(container_id)
        if container is None:
            raise ContainerRuntimeError(container_id, "no such container")
        return container

    def _require(self, what: str) -> None:
        reason = self.unavailable_reason()
        if reason is not None:
            raise ContainerRuntimeError(what, reason)

    def _command(self, *args: str) -> list[str]:
        assert self._runc is not None
        return [self._runc, "--root", str(self.state_root / "runc"), *args]

    async def _runc_run(self, container_id: str, *args: str) -> subprocess.CompletedProcess[bytes]:
        """``runc <args>`` to completion (its output captured), for ``container_id``."""
        try:
            return await anyio.run_process(
                self._command(*args), check=False, stdin=subprocess.DEVNULL
            )
        except OSError as exc:
            raise ContainerRuntimeError(container_id, f"cannot run {self._runc}: {exc}") from exc

    async def _kill(self, container: _Container) -> None:
        """Make sure nothing of the container runs and runc forgot it (for remove and for a
        failed or cancelled start); call shielded."""
        process = container.process
        if process is not None and process.returncode is None:
            await self._runc_run(container.id, "kill", container.id, "KILL")
            with anyio.move_on_after(KILL_WAIT):
                await process.wait()
            if process.returncode is None:  # runc itself is stuck: the delete below kills
                process.kill()
            self._exited(container, await process.wait())
        elif process is not None:
            self._exited(container, await process.wait())
        result = await self._runc_run(container.id, "delete", "--force", container.id)
        state = self.state_root / "runc" / container.id
        if result.returncode != 0 and await anyio.to_thread.run_sync(state.exists):
            raise ContainerRuntimeError(
                container.id, f"runc delete failed: {stderr_text(result.stderr)}"
            )


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(json.dumps(doc, indent=1))
    os.replace(temp, path)


def _open_append(path: Path) -> io.BufferedWriter:
    return path.open("ab")


def _remove_tree(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path)
