"""The CRI-like seam under a node's containers: what a runtime handler (sim or runc) must do.

Models the part of the CRI ``RuntimeService`` the kubelet's ``kuberuntime`` manager uses for a
pod: ``RunPodSandbox``/``StopPodSandbox``, ``CreateContainer``/``StartContainer``,
``ExecSync`` (exec lifecycle hooks), ``StopContainer`` (SIGTERM, then SIGKILL after the timeout)
and ``RemoveContainer``; :meth:`RuntimeHandler.wait_container` stands for the PLEG noticing that
the container's process exited. A node holds handlers by name, as containerd's ``runtimes`` table
does; a pod's RuntimeClass ``handler`` picks one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Protocol

from kubelet_sim.core.pods import PodRef

__all__ = [
    "ContainerConfig",
    "ExecResult",
    "HandlerKind",
    "ImageConfig",
    "RuntimeHandler",
    "SandboxConfig",
]


class HandlerKind(StrEnum):
    SIM = "sim"
    """No processes: exec outcomes follow the documented rule in :mod:`kubelet_sim.runtime.sim`."""
    RUNC = "runc"
    """Real containers: the image unpacked into a snapshot, run by Debian's ``runc``."""


@dataclass(frozen=True, slots=True)
class ImageConfig:
    """What a container takes from its image's OCI config (``config`` of the config blob)."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    """``KEY=value`` strings, in the image's order."""
    working_dir: str = ""
    user: str = ""


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    """``PodSandboxConfig``: the pod's identity, hostname and (display) IP."""

    pod: PodRef
    hostname: str
    pod_ip: str = ""
    annotations: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class ContainerConfig:
    """``ContainerConfig`` after the kubelet and the runtime have resolved it.

    ``argv`` is the process to run (``command``/``args`` over the image's ``Entrypoint``/``Cmd``,
    with ``$(VAR)`` expanded); ``env`` is the final environment, the image's ``Env`` merged under
    the container's and ``HOSTNAME`` set, in the order the process sees it.
    """

    pod: PodRef
    name: str
    attempt: int
    image_id: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    hostname: str
    working_dir: str = ""
    annotations: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    init: bool = False
    """An init container (it must run to completion before the next one starts)."""
    image_handler: str = ""
    """The runtime handler the image was pulled and kept for (``RuntimeClassInImageCriApi``:
    ``""`` for a pod without RuntimeClass, whichever handler runs it)."""


@dataclass(frozen=True, slots=True)
class ExecResult:
    """``ExecSyncResponse``: the exit code and the combined output (never put in an event)."""

    exit_code: int
    output: bytes = b""


class RuntimeHandler(Protocol):
    """One configured runtime handler. Ids are opaque strings the handler hands out.

    Errors are :class:`~kubelet_sim.errors.ContainerRuntimeError` (or subclasses) naming the container; none
    of them may carry the container's environment (it can hold Secret values).
    """

    @property
    def name(self) -> str:
        """The handler's name in the node's ``runtimes`` table (a RuntimeClass ``handler``)."""
        ...

    @property
    def kind(self) -> HandlerKind: ...

    def unavailable_reason(self) -> str | None:
        """Why this handler cannot run containers on this machine (no root, no runc), or None."""
        ...

    async def run_sandbox(self, config: SandboxConfig) -> str:
        """Create the pod's sandbox; returns its id."""
        ...

    async def stop_sandbox(self, sandbox_id: str) -> None: ...

    async def create_container(
        self, sandbox_id: str, config: ContainerConfig, image: ImageConfig
    ) -> str:
        """Create (not start) a container from a present image; returns its id."""
        ...

    async def start_container(self, container_id: str) -> None: ...

    async def exec_sync(
        self,
        container_id: str,
        argv: tuple[str, ...],
        timeout: float,  # noqa: ASYNC109 - CRI's ExecSync carries its own timeout
    ) -> ExecResult:
        """Run ``argv`` in the running container and wait for it (at most ``timeout`` s)."""
        ...

    async def wait_container(self, container_id: str) -> int:
        """Wait until the container's process exits; its exit code (128+N for signal N)."""
        ...

    async def stop_container(self, container_id: str, timeout: float) -> None:  # noqa: ASYNC109
        """SIGTERM the process, SIGKILL it after ``timeout`` s; returns once it has exited."""
        ...

    async def remove_container(self, container_id: str) -> None: ...
