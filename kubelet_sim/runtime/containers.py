"""The container half of a node's runtime: sandboxes, container configs, hooks and kills.

Models ``pkg/kubelet/kuberuntime`` (``kuberuntime_sandbox.go``, ``kuberuntime_container.go``)
over the node's runtime handlers (:mod:`kubelet_sim.runtime.port`), satisfying the engine's
:class:`~kubelet_sim.engine.ports.ContainerRuntime`:

* **sandbox**: the pod's RuntimeClass handler (resolved at admission; ``""`` is the node's
  default handler) must be configured and usable, else ``FailedCreatePodSandBox`` with
  containerd's message; the hostname comes from ``spec.hostname``/``subdomain``/
  ``setHostnameAsFQDN``; the pod IP from the node's ``podCIDR`` (a sim pod), or the node's own
  address (a runc pod shares the host network);
* **start** (``startContainer``): the kubelet's environment (:mod:`kubelet_sim.k8s.envvars`;
  a missing ConfigMap, Secret or key is ``CreateContainerConfigError``), the process from
  ``command``/``args`` over the image's Entrypoint/Cmd, the image's ``Env`` merged under the
  container's with ``HOSTNAME``; then ``CreateContainer`` (``Created``), ``StartContainer``
  (``Started``) and the postStart hook: a failed hook is ``FailedPostStartHook`` (upstream's fixed
  text; hook output never reaches events) and the container is killed (``Killing``
  ``FailedPostStartHook``);
* **kill** (``killContainer``): ``Killing`` ``Stopping container NAME``, the preStop hook within
  the grace period (``FailedPreStopHook``), then a stop with what is left of it (at least 2 s):
  SIGTERM, then SIGKILL.

What each container was started with (its final environment, hostname and pod IP) is kept for
the node's API; Secret-sourced values are marked so views can hide them.
"""

from __future__ import annotations

import ipaddress
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

import anyio
import structlog

from kubelet_sim.core.digest import Digest
from kubelet_sim.core.pods import ContainerKind, PodSpec, PullRequest, StartOutcome
from kubelet_sim.engine.ports import EventSink
from kubelet_sim.errors import (
    ContainerConfigError,
    ContainerRuntimeError,
    KubeletSimError,
)
from kubelet_sim.k8s.cluster import RuntimeClass
from kubelet_sim.k8s.envvars import (
    EnvObjects,
    EnvValue,
    PodNetwork,
    command_and_args,
    make_environment,
    runtime_environment,
)
from kubelet_sim.k8s.hostname import pod_hostname
from kubelet_sim.k8s.objects import Container, Pod
from kubelet_sim.runtime.hooks import (
    KILLING_MESSAGE_FAILED_POST_START,
    MINIMUM_GRACE_PERIOD,
    POST_START_HOOK_ERROR,
    HookKind,
    HookRunner,
    PreStopOutcome,
    execute_pre_stop_hook,
    failed_hook_event,
    hook_timeout,
    stop_timeout_after_pre_stop,
)
from kubelet_sim.runtime.port import (
    ContainerConfig,
    HandlerKind,
    ImageConfig,
    RuntimeHandler,
    SandboxConfig,
)
from kubelet_sim.store.records import ImageRecord
from kubelet_sim.telemetry.events import ContainerSection, EventReason, EventType, ObjectRef

__all__ = [
    "DEFAULT_POD_CIDR",
    "ContainerManager",
    "ImageConfigSource",
    "NodeInfo",
    "StartedContainer",
    "read_image_config",
]

log = structlog.get_logger(__name__)

DEFAULT_POD_CIDR = "10.244.0.0/16"
"""The node's ``podCIDR`` when its KubeletConfiguration sets none."""
CREATE_CONTAINER_CONFIG_ERROR = "CreateContainerConfigError"
CREATE_CONTAINER_ERROR = "CreateContainerError"
RUN_CONTAINER_ERROR = "RunContainerError"
CREATE_POD_SANDBOX_ERROR = "CreatePodSandboxError"


class ImageConfigSource(Protocol):
    """Where a present image's config is read (both node stores)."""

    async def lookup(self, ref: str, runtime_handler: str = "") -> ImageRecord | None: ...

    async def read_blob(self, digest: Digest, *, max_size: int = ...) -> bytes: ...


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What the container half needs to know about its node."""

    name: str
    address: str = "127.0.0.1"
    """``status.hostIP``; a runc pod's IP (it shares the host network)."""
    pod_cidr: str = DEFAULT_POD_CIDR
    cluster_domain: str = "cluster.local"
    allocatable: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType(
            {"cpu": "2", "memory": "8Gi", "ephemeral-storage": "100Gi"}
        )
    )


@dataclass(frozen=True, slots=True)
class StartedContainer:
    """What a container was started with, for ``GET /pods/NS/NAME``."""

    container_id: str
    env: tuple[tuple[str, str], ...]
    secret_names: frozenset[str]
    hostname: str
    argv: tuple[str, ...]


@dataclass(slots=True)
class _PodRecord:
    handler: RuntimeHandler
    sandbox_id: str
    hostname: str
    pod_ip: str
    pod: Pod
    ip_allocated: bool = False
    containers: dict[str, str] = field(default_factory=dict)
    """container id -> container name, for everything created and not yet removed."""
    started: dict[str, StartedContainer] = field(default_factory=dict)


async def read_image_config(store: ImageConfigSource, image_id: str, handler: str) -> ImageConfig:
    """The OCI config of a present image: Entrypoint, Cmd, Env, WorkingDir, User.

    Raises:
        ContainerRuntimeError: the image is not present, or its config is not an image config.
    """
    record = await store.lookup(image_id, handler)
    if record is None:
        raise ContainerRuntimeError(image_id, "image not found")
    try:
        doc = json.loads(await store.read_blob(record.config_digest))
    except (ValueError, RecursionError):
        doc = None
    section = doc.get("config") if isinstance(doc, dict) else None
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise ContainerRuntimeError(image_id, "image config's config is not an object")

    def strings(key: str) -> tuple[str, ...]:
        value = section.get(key)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ContainerRuntimeError(image_id, f"image config's {key} is not a list of strings")
        return tuple(value)

    def text(key: str) -> str:
        value = section.get(key) or ""
        if not isinstance(value, str):
            raise ContainerRuntimeError(image_id, f"image config's {key} is not a string")
        return value

    return ImageConfig(
        entrypoint=strings("Entrypoint"),
        cmd=strings("Cmd"),
        env=strings("Env"),
        working_dir=text("WorkingDir"),
        user=text("User"),
    )


def _minimal_pod(spec: PodSpec) -> Pod:
    """A Pod for a spec made without one (image-only tests, hand-made specs)."""

    def container(r: PullRequest) -> Container:
        return Container(r.container, r.image, r.policy, r.kind)

    return Pod(
        namespace=spec.ref.namespace,
        name=spec.ref.name,
        uid=spec.ref.uid,
        containers=tuple(container(r) for r in spec.containers),
        init_containers=tuple(container(r) for r in spec.init_containers),
    )


class ContainerManager:
    """The node's ``kuberuntime`` container half over its named runtime handlers.

    Args:
        handlers: the node's ``runtimes`` table by name.
        default_handler: the handler a pod without RuntimeClass runs on.
        images: the node's store (image configs).
        objects: ConfigMaps, Secrets and Services for the environment (None: none exist).
        runtime_classes: looks a RuntimeClass up by name (the kubelet's RuntimeClass manager);
            None: pods' handlers are taken as resolved.
        hooks: the lifecycle hook runner.
        recorder: where container events go.
        node: the node's name, address, podCIDR, cluster domain and allocatable resources.
    """

    def __init__(
        self,
        handlers: Mapping[str, RuntimeHandler],
        *,
        default_handler: str,
        images: ImageConfigSource,
        objects: EnvObjects | None,
        hooks: HookRunner,
        recorder: EventSink,
        node: NodeInfo,
        clock: Callable[[], float] = anyio.current_time,
        runtime_classes: Callable[[str], RuntimeClass | None] | None = None,
    ) -> None:
        if default_handler not in handlers:
            raise ValueError(f"default runtime handler {default_handler!r} is not configured")
        self.handlers = dict(handlers)
        self.default_handler = default_handler
        self.images = images
        self.objects = objects
        self.hooks = hooks
        self.recorder = recorder
        self.node = node
        self.clock = clock
        self.runtime_classes = runtime_classes
        self._network = ipaddress.ip_network(node.pod_cidr, strict=False)
        self._ips_used: set[str] = set()
        self._ip_cursor = 0
        self._pods: dict[str, _PodRecord] = {}

    # -- queries (the node's API) -------------------------------------------------------------

    def started(self, uid: str, container: str) -> StartedContainer | None:
        record = self._pods.get(uid)
        return None if record is None else record.started.get(container)

    def pod_ip(self, uid: str) -> str:
        record = self._pods.get(uid)
        return "" if record is None else record.pod_ip

    def hostname(self, uid: str) -> str:
        record = self._pods.get(uid)
        return "" if record is None else record.hostname

    # -- sandbox ----------------------------------------------------------------------------

    def _pod(self, spec: PodSpec) -> Pod:
        return spec.source if isinstance(spec.source, Pod) else _minimal_pod(spec)

    def _handler_name(self, spec: PodSpec) -> str:
        for request in spec.requests():
            return request.runtime_handler or self.default_handler
        return self.default_handler

    async def run_sandbox(self, pod: PodSpec) -> StartOutcome:
        """``RunPodSandbox`` with the pod's handler; a failure is ``FailedCreatePodSandBox``."""
        if pod.ref.uid in self._pods:
            return StartOutcome(container_id=self._pods[pod.ref.uid].sandbox_id)
        k8s_pod = self._pod(pod)
        name = self._handler_name(pod)
        handler = self.handlers.get(name)
        try:
            class_name = k8s_pod.runtime_class_name
            lookup = self.runtime_classes
            if class_name and lookup is not None and lookup(class_name) is None:
                # LookupRuntimeHandler: the class went away after the pod was admitted
                raise _SandboxError(f'RuntimeClass "{class_name}" not found')
            if handler is None:
                raise _SandboxError(
                    f"failed to get sandbox runtime: no runtime for {name!r} is configured".replace(
                        "'", '"'
                    )
                )
            reason = handler.unavailable_reason()
            if reason is not None:
                raise _SandboxError(f"runtime handler {name!r} cannot run pods: {reason}")
            try:
                hostname, _domain = pod_hostname(k8s_pod, self.node.cluster_domain)
            except ContainerConfigError as exc:
                raise _SandboxError(exc.message) from None
            allocated = handler.kind is HandlerKind.SIM  # a runc pod has the node's address
            pod_ip = self._allocate_ip(pod) if allocated else self.node.address
            try:
                sandbox_id = await handler.run_sandbox(
                    SandboxConfig(pod.ref, hostname, pod_ip, k8s_pod.annotations)
                )
            except BaseException as exc:
                if allocated:  # failed or cancelled: the address goes back
                    self._ips_used.discard(pod_ip)
                if isinstance(exc, ContainerRuntimeError):
                    raise _SandboxError(exc.message) from None
                raise
        except _SandboxError as exc:
            message = f"Failed to create pod sandbox: rpc error: code = Unknown desc = {exc}"
            self.recorder.event(
                ObjectRef(pod.ref.namespace, pod.ref.name, pod.ref.uid),
                EventType.WARNING,
                EventReason.FAILED_CREATE_POD_SANDBOX,
                message,
            )
            return StartOutcome(reason=CREATE_POD_SANDBOX_ERROR, message=message)
        self._pods[pod.ref.uid] = _PodRecord(
            handler, sandbox_id, hostname, pod_ip, k8s_pod, ip_allocated=allocated
        )
        log.info("sandbox.created", handler=name, pod_ip=pod_ip)
        return StartOutcome(container_id=sandbox_id)

    def _allocate_ip(self, spec: PodSpec) -> str:
        """The next free address of the podCIDR after the last one given (host-local IPAM's
        round robin), skipping the network, the bridge's ``.1`` and the broadcast address."""
        network = self._network
        first = int(network.network_address) + 2
        last = int(network.broadcast_address) - (1 if network.version == 4 else 0)
        size = last - first + 1
        for step in range(max(size, 0)):
            candidate = first + (self._ip_cursor + step) % size
            text = str(ipaddress.ip_address(candidate))
            if text not in self._ips_used:
                self._ip_cursor = candidate - first + 1
                self._ips_used.add(text)
                return text
        raise _SandboxError(
            f'plugin type="host-local" failed (add): failed to allocate for range 0: '
            f"no IP addresses available in range set: {self.node.pod_cidr}"
        )

    async def remove_pod(self, pod: PodSpec) -> None:
        """``StopPodSandbox`` + ``RemovePodSandbox``: whatever still runs is killed at once."""
        record = self._pods.pop(pod.ref.uid, None)
        if record is None:
            return
        with anyio.CancelScope(shield=True):
            for container_id in list(record.containers):
                await self._remove(record, container_id, stop=True)
            try:
                await record.handler.stop_sandbox(record.sandbox_id)
            except ContainerRuntimeError as exc:
                log.warning("sandbox.stop_failed", error=exc.message)
        if record.ip_allocated:
            self._ips_used.discard(record.pod_ip)

    async def _remove(self, record: _PodRecord, container_id: str, *, stop: bool) -> None:
        try:
            if stop:
                await record.handler.stop_container(container_id, 0)
            await record.handler.remove_container(container_id)
        except ContainerRuntimeError as exc:
            log.warning("container.remove_failed", error=exc.message)
        finally:
            record.containers.pop(container_id, None)

    # -- containers -------------------------------------------------------------------------

    def _event(
        self, request: PullRequest, type_: EventType, reason: EventReason, message: str
    ) -> None:
        ref = ObjectRef.container(
            request.pod.namespace,
            request.pod.name,
            request.pod.uid,
            request.container,
            ContainerSection(str(request.kind)),
        )
        self.recorder.event(ref, type_, reason, message)

    def _failed(self, request: PullRequest, reason: str, message: str) -> StartOutcome:
        log.info(
            "container.start_failed", container=request.container, reason=reason, error=message
        )
        self._event(request, EventType.WARNING, EventReason.FAILED, f"Error: {message}")
        return StartOutcome(reason=reason, message=message)

    async def start_container(
        self, pod: PodSpec, request: PullRequest, image_ref: str, attempt: int
    ) -> StartOutcome:
        """``startContainer`` after the image is present: config, create, start, postStart."""
        record = self._pods.get(pod.ref.uid)
        if record is None:
            return StartOutcome(reason=RUN_CONTAINER_ERROR, message="pod sandbox not found")
        container = _find(record.pod, request.container)
        objects = self.objects
        try:
            environment = make_environment(
                record.pod,
                container,
                objects if objects is not None else _NoObjects(),
                node_name=self.node.name,
                network=PodNetwork(
                    pod_ips=(record.pod_ip,) if record.pod_ip else (),
                    host_ips=(self.node.address,),
                ),
                allocatable=self.node.allocatable,
            )
        except ContainerConfigError as exc:
            return self._failed(request, CREATE_CONTAINER_CONFIG_ERROR, exc.message)
        for warning in environment.warnings:
            self._event(
                request,
                EventType.WARNING,
                EventReason.INVALID_ENVIRONMENT_VARIABLE_NAMES,
                warning,
            )
        handler = record.handler
        try:
            image = await read_image_config(self.images, image_ref, request.runtime_handler)
            argv = _argv(container, image, environment.values, handler.kind)
        except ContainerRuntimeError as exc:
            return self._failed(request, CREATE_CONTAINER_ERROR, exc.message)
        except KubeletSimError as exc:
            return self._failed(request, CREATE_CONTAINER_ERROR, str(exc))
        env = runtime_environment(image.env, environment.values, record.hostname)
        config = ContainerConfig(
            pod=pod.ref,
            name=container.name,
            attempt=attempt,
            image_id=image_ref,
            argv=argv,
            env=env,
            hostname=record.hostname,
            working_dir=container.working_dir or image.working_dir,
            annotations=record.pod.annotations,
            init=request.kind is ContainerKind.INIT,
            image_handler=request.runtime_handler,
        )
        try:
            container_id = await handler.create_container(record.sandbox_id, config, image)
        except ContainerRuntimeError as exc:
            return self._failed(request, CREATE_CONTAINER_ERROR, exc.message)
        record.containers[container_id] = container.name
        self._event(
            request, EventType.NORMAL, EventReason.CREATED, f"Created container {container.name}"
        )
        try:
            await handler.start_container(container_id)
        except ContainerRuntimeError as exc:
            await self._remove(record, container_id, stop=False)
            return self._failed(request, RUN_CONTAINER_ERROR, exc.message)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._remove(record, container_id, stop=True)
            raise
        self._event(
            request, EventType.NORMAL, EventReason.STARTED, f"Started container {container.name}"
        )
        record.started[container.name] = StartedContainer(
            container_id,
            env,
            _secret_names(environment.values),
            record.hostname,
            argv,
        )
        hook = container.lifecycle.post_start
        if hook is None:
            return StartOutcome(container_id=container_id)
        try:
            message = await self.hooks.run(
                hook,
                runtime=handler,
                container_id=container_id,
                pod=record.pod,
                container=container,
                pod_ip=record.pod_ip,
                timeout=hook_timeout(HookKind.POST_START, pod.grace_period),
            )
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._remove(record, container_id, stop=True)
            raise
        if message is None:
            return StartOutcome(container_id=container_id)
        log.info("container.post_start_failed", container=container.name)
        type_, reason, text = failed_hook_event(HookKind.POST_START)
        self._event(request, type_, reason, text)
        code = await self._kill(
            record, request, container, container_id, pod.grace_period,
            KILLING_MESSAGE_FAILED_POST_START,
        )  # fmt: skip
        return StartOutcome(
            container_id=container_id,
            reason=POST_START_HOOK_ERROR,
            message=message,
            exit_code=code,
        )

    async def wait_container(self, pod: PodSpec, request: PullRequest, container_id: str) -> int:
        """Wait for the container's process to exit; the exited container is then removed."""
        record = self._pods.get(pod.ref.uid)
        if record is None or container_id not in record.containers:
            await anyio.sleep_forever()
            raise AssertionError("unreachable")
        code = await record.handler.wait_container(container_id)
        with anyio.CancelScope(shield=True):
            await self._remove(record, container_id, stop=False)
        return code

    async def kill_container(
        self,
        pod: PodSpec,
        request: PullRequest,
        container_id: str,
        grace: float,
        *,
        message: str = "",
    ) -> None:
        """``killContainer``: preStop within the grace period, then stop and remove."""
        record = self._pods.get(pod.ref.uid)
        if record is None or container_id not in record.containers:
            return
        container = _find(record.pod, request.container)
        # KillPod: a grace period below minimumGracePeriodInSeconds becomes that minimum.
        grace = max(grace, MINIMUM_GRACE_PERIOD)
        await self._kill(record, request, container, container_id, grace, message)

    async def _kill(
        self,
        record: _PodRecord,
        request: PullRequest,
        container: Container,
        container_id: str,
        grace: float,
        message: str,
    ) -> int | None:
        """Kill one container; its exit code when the handler reported it."""
        self._event(
            request,
            EventType.NORMAL,
            EventReason.KILLING,
            message or f"Stopping container {container.name}",
        )
        grace_seconds = max(0, math.ceil(grace))
        hook = container.lifecycle.pre_stop
        if hook is not None and grace_seconds > 0:
            try:
                outcome = await execute_pre_stop_hook(
                    self.hooks,
                    hook,
                    runtime=record.handler,
                    container_id=container_id,
                    pod=record.pod,
                    container=container,
                    pod_ip=record.pod_ip,
                    grace_period=grace_seconds,
                )
            except Exception:
                # A hook that breaks (not one that fails) must never skip the stop below.
                log.exception("container.pre_stop_crashed", container=container.name)
                outcome = PreStopOutcome(seconds=0, completed=True, message="preStop crashed")
            if outcome.message is not None:
                type_, reason, text = failed_hook_event(HookKind.PRE_STOP)
                self._event(request, type_, reason, text)
            if not outcome.completed:
                log.info("container.pre_stop_not_completed", container=container.name)
            grace_seconds = stop_timeout_after_pre_stop(grace_seconds, outcome.seconds)
        # "always give containers a minimal shutdown window to avoid unnecessary SIGKILLs"
        grace_seconds = max(grace_seconds, MINIMUM_GRACE_PERIOD)
        code: int | None = None
        try:
            # Cancellable: a node shutting down does not wait out a pod's grace period.
            await record.handler.stop_container(container_id, grace_seconds)
            with anyio.move_on_after(1):
                code = await record.handler.wait_container(container_id)
        except ContainerRuntimeError as exc:
            log.warning("container.stop_failed", container=container.name, error=exc.message)
        finally:
            with anyio.CancelScope(shield=True):  # SIGKILL if still running, then remove
                await self._remove(record, container_id, stop=True)
        return code


class _SandboxError(Exception):
    """Internal: why a sandbox could not be made (becomes FailedCreatePodSandBox)."""


class _NoObjects:
    """No ConfigMaps, Secrets or Services (a node without an object store)."""

    def get_config_map(self, namespace: str, name: str) -> Any:
        return None

    def get_secret(self, namespace: str, name: str) -> Any:
        return None

    def services(self, namespace: str | None = None) -> list[Any]:
        return []


def _argv(
    container: Container, image: ImageConfig, env: tuple[EnvValue, ...], kind: HandlerKind
) -> tuple[str, ...]:
    """The process to run; a sim container may have none (the bench's generated images have no
    Cmd; the sim's rule runs such a container until it is stopped)."""
    if kind is HandlerKind.SIM and not (
        container.command or container.args or image.entrypoint or image.cmd
    ):
        return ()
    return command_and_args(container, image.entrypoint, image.cmd, env)


def _find(pod: Pod, name: str) -> Container:
    for container in pod.all_containers():
        if container.name == name:
            return container
    raise ContainerRuntimeError(name, f"no container {name!r} in pod {pod.namespace}/{pod.name}")


def _secret_names(values: tuple[EnvValue, ...]) -> frozenset[str]:
    last: dict[str, bool] = {}
    for value in values:  # the last definition of a name is the one the process gets
        last[value.name] = value.secret
    return frozenset(name for name, secret in last.items() if secret)
