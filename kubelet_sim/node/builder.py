"""THE composition root: one function builds a node from (config, paths, options, parts).

Every command that runs a node builds it here: ``run`` (the daemon), ``pull``, ``demo`` (through
the daemon) and ``bench`` (one node per simulated kubelet). So the wiring exists once:

* :func:`open_node` opens the real adapters (the image store under :class:`NodePaths`, a registry
  client with ``hosts.toml``, node credentials and the KEP-2535 verifier) and hands them to
* :meth:`Node.build`, which wires the engine as ``NewImageManager`` does: throttle before the
  puller, serial or parallel puller, image manager, pod workers; metrics and events injected.

What a caller may swap is a :class:`NodeParts` field (event recorder, metrics, clock, an already
open store, durable or a :class:`~kubelet_sim.store.MemoryStore`, the registry transport, the
object store the pull secrets come from); what it may tune is a :class:`NodeOptions` field (the
kubelet's flags). The bench and virtual time swap parts; they never wire a second node. A node
owns a task group that runs the serial puller's worker and the engine's dispatcher; leaving
:meth:`Node.running` cancels both, and every in-flight pull with them (the store aborts its temp
files).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import anyio
import anyio.abc
import httpx

from kubelet_sim.config.kubelet import KubeletConfiguration
from kubelet_sim.config.runtimes import RuntimesConfig
from kubelet_sim.core.backoff import Backoff
from kubelet_sim.core.platforms import Platform, host_platform
from kubelet_sim.core.ratelimit import TokenBucket
from kubelet_sim.credentials.dockerconfig import DockerConfigSearch
from kubelet_sim.credentials.metrics import CredentialMetrics
from kubelet_sim.credentials.plugins import EXEC_TIMEOUT
from kubelet_sim.credentials.resolver import CredentialResolver, build_node_credentials
from kubelet_sim.credentials.secrets import SecretGetter
from kubelet_sim.engine.manager import ImageManager, anonymous
from kubelet_sim.engine.ports import (
    ContainerRuntime,
    CredentialLookup,
    ManagerMetrics,
    PodSyncHook,
    ProgressFn,
    PulledImageVerifier,
    PullObserver,
    RuntimeImageService,
)
from kubelet_sim.engine.pullers import ImagePuller, ParallelPuller, PullRunner, SerialPuller
from kubelet_sim.engine.workers import EngineSettings, PullEngine
from kubelet_sim.node.paths import NodePaths
from kubelet_sim.registry.client import ClientSettings, RegistryClient
from kubelet_sim.registry.transport import RequestObserver, Transport, TransportSettings
from kubelet_sim.runtime.images import ImageService
from kubelet_sim.store import NodeStore, Store
from kubelet_sim.telemetry.events import EventReason, EventRecorder, EventType, ObjectRef
from kubelet_sim.telemetry.metrics import PullMetrics

if TYPE_CHECKING:
    # prometheus_client: only where a node exposes its metrics (the daemon, the bench). The
    # container half: imported when a node runs containers (_container_manager).
    from prometheus_client import CollectorRegistry

    from kubelet_sim.k8s.cluster import RuntimeClass
    from kubelet_sim.k8s.envvars import EnvObjects
    from kubelet_sim.k8s.objects import Pod
    from kubelet_sim.runtime.containers import ContainerManager
    from kubelet_sim.runtime.hooks import HookRunner
    from kubelet_sim.runtime.port import RuntimeHandler

__all__ = ["Node", "NodeMetrics", "NodeOptions", "NodeParts", "NodePaths", "open_node"]

IMAGE_BACKOFF_PERIOD = 10.0  # pkg/kubelet/kubelet.go imageBackOffPeriod
MAX_IMAGE_BACKOFF = 300.0  # pkg/kubelet/kubelet.go MaxImageBackOff
RUNTIME_CLASS_GATE = "RuntimeClassInImageCriApi"


class NodeMetrics(ManagerMetrics, PullObserver, RequestObserver, Protocol):
    """Everything a node reports (:class:`kubelet_sim.telemetry.metrics.PullMetrics` satisfies it)."""

    def bytes_pulled(self, n: int) -> None: ...


@dataclass(frozen=True, slots=True)
class NodeOptions:
    """What the kubelet takes as flags besides its KubeletConfiguration."""

    platform: Platform | None = None
    """The node's os/arch (``--node-platform``; default: this host's)."""
    hosts_dir: Path | None = None
    """containerd's ``hosts.toml`` folder (``config_path``, ``certs.d``)."""
    docker_config: DockerConfigSearch | None = None
    """Where the node's ``config.json`` is searched (None: the kubelet's paths under the root)."""
    node_docker_config: bool = True
    """False: no node docker config at all (an anonymous CLI pull, a bench node)."""
    image_credential_provider_config: Path | None = None
    image_credential_provider_bin_dir: Path | None = None
    credential_plugin_timeout: float = EXEC_TIMEOUT
    """Longest one exec of a credential provider plugin may run."""
    engine: EngineSettings = field(default_factory=EngineSettings)
    """Pod-worker resync timing (the daemon uses the kubelet's 10 s with 0.5 jitter)."""
    backoff: tuple[float, float] = (IMAGE_BACKOFF_PERIOD, MAX_IMAGE_BACKOFF)
    """Image pull backoff: initial and maximum seconds."""
    transport: TransportSettings | None = None
    client: ClientSettings | None = None
    containers: bool = True
    """False: an image-only node (``kubelet-sim pull``): a container counts as running once its
    image is ready, and no runtime handler is made."""
    runtimes: RuntimesConfig = field(default_factory=RuntimesConfig.builtin)
    """The node's runtime handlers (containerd's ``runtimes`` table; default ``sim`` + ``runc``)."""
    node_name: str = "node"
    node_address: str = "127.0.0.1"


@dataclass(slots=True)
class NodeParts:
    """The parts a caller may swap: the seams of the bench and of virtual time."""

    recorder: EventRecorder = field(default_factory=EventRecorder)
    metrics: NodeMetrics | None = None
    """Default: :class:`PullMetrics` on :attr:`metrics_registry`."""
    metrics_registry: CollectorRegistry | None = None
    """Where the default metrics are exposed; none: nowhere (a one-shot pull)."""
    credential_metrics: CredentialMetrics | None = None
    store: NodeStore | None = None
    """An open store to use, durable or in memory (the caller closes it); default: open the
    durable store at ``paths.store``."""
    transport: Transport | None = None
    """The registry transport, closed with the node (default: a new one observed by the metrics)."""
    secrets: SecretGetter | None = None
    """Where pull secrets are looked up (the daemon's object store)."""
    objects: EnvObjects | None = None
    """Where containers' ConfigMaps, Secrets and Services are looked up (the daemon's object
    store); None: none exist."""
    handlers: dict[str, RuntimeHandler] | None = None
    """Runtime handlers to use instead of those :attr:`NodeOptions.runtimes` configures."""
    hooks: HookRunner | None = None
    """A lifecycle hook runner shared by many nodes (a bench); default: one per node."""
    runtime_classes: Callable[[str], RuntimeClass | None] | None = None
    """Where the node looks RuntimeClasses up (the daemon's object store)."""
    progress: ProgressFn | None = None
    clock: Callable[[], float] = anyio.current_time


@dataclass(slots=True)
class Node:
    """The wired parts of one node."""

    config: KubeletConfiguration
    service: RuntimeImageService
    recorder: EventRecorder
    metrics: NodeMetrics
    runner: PullRunner
    puller: ImagePuller
    manager: ImageManager
    engine: PullEngine
    store: Store | None = None
    """The durable store, when the node runs on one (what the daemon's GC and listing use)."""
    client: RegistryClient | None = None
    platform: Platform | None = None
    image_store: NodeStore | None = None
    """The store the node pulls into: :attr:`store`, or a memory store (a bench node)."""
    containers: ContainerManager | None = None
    """The container half (None on an image-only node)."""
    resolver: CredentialResolver | None = None
    """Where the node's credentials come from (``explain`` reads its sources)."""

    @classmethod
    def build(
        cls,
        config: KubeletConfiguration,
        service: RuntimeImageService,
        recorder: EventRecorder,
        metrics: NodeMetrics,
        *,
        store: NodeStore | None = None,
        client: RegistryClient | None = None,
        platform: Platform | None = None,
        credentials: CredentialLookup = anonymous,
        verifier: PulledImageVerifier | None = None,
        on_sync: PodSyncHook | None = None,
        settings: EngineSettings | None = None,
        progress: ProgressFn | None = None,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = anyio.current_time,
        containers: ContainerManager | None = None,
        runtime: ContainerRuntime | None = None,
    ) -> Node:
        """Wire the engine over its ports as ``NewImageManager`` does: throttle, then the puller.

        :func:`open_node` calls this with the real adapters; unit tests call it with fakes.
        """
        throttle = None
        if config.registry_pull_qps > 0:
            throttle = TokenBucket(config.registry_pull_qps, config.registry_burst)
        runner = PullRunner(service, throttle, metrics, clock, progress)
        puller: ImagePuller
        if config.serialize_image_pulls:
            puller = SerialPuller(runner)
        else:
            puller = ParallelPuller(runner, config.max_parallel_image_pulls)
        manager = ImageManager(
            service,
            puller,
            recorder,
            metrics,
            backoff=Backoff(IMAGE_BACKOFF_PERIOD, MAX_IMAGE_BACKOFF)
            if backoff is None
            else backoff,
            credentials=credentials,
            verifier=verifier,
            clock=clock,
        )
        engine = PullEngine(
            manager,
            recorder,
            settings=settings,
            clock=clock,
            on_sync=on_sync,
            runtime=runtime if runtime is not None else containers,
        )
        durable = store if isinstance(store, Store) else None
        return cls(
            config, service, recorder, metrics, runner, puller, manager, engine,
            durable, client, platform, store, containers,
        )  # fmt: skip

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Node]:
        """Run the puller worker and the engine dispatcher until the block exits."""
        async with anyio.create_task_group() as tg:
            if isinstance(self.puller, SerialPuller):
                await tg.start(self.puller.run)
            await tg.start(self.engine.run)
            try:
                yield self
            finally:
                tg.cancel_scope.cancel()

    async def serve(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the puller worker and the engine dispatcher as one task, until cancelled.

        For many nodes in one event loop: started side by side in one task group, each node's
        tasks sit two cancel scopes deep. Entering :meth:`running` for node after node nests
        every node's scopes inside the previous one's, and each checkpoint walks that chain
        (quadratic in the number of nodes: at 1,000 nodes most of the CPU).
        """
        async with anyio.create_task_group() as tg:
            if isinstance(self.puller, SerialPuller):
                await tg.start(self.puller.run)
            await tg.start(self.engine.run)
            task_status.started()
            await anyio.sleep_forever()

    @property
    def peak_in_flight(self) -> int:
        return self.runner.peak_in_flight


def _loop_clock() -> Callable[[], float]:
    """``anyio.current_time`` without its backend lookup on every call (a clock read is on every
    cache-hit decision): the running asyncio loop's own ``time``; anyio's otherwise."""
    import asyncio

    try:
        return asyncio.get_running_loop().time
    except RuntimeError:  # not asyncio (trio): anyio's dispatch
        return anyio.current_time


@asynccontextmanager
async def open_node(
    config: KubeletConfiguration,
    paths: NodePaths,
    options: NodeOptions | None = None,
    parts: NodeParts | None = None,
) -> AsyncIterator[Node]:
    """Open a node's adapters and wire its engine; closes what it opened on exit.

    Raises:
        StoreError: the store cannot be opened (locked by another process, damaged beyond repair).
        ConfigError: the credential provider configuration is invalid, or the root holds a store
            of the old layout.
    """
    options = options or NodeOptions()
    parts = parts or NodeParts()
    if parts.clock is anyio.current_time:
        parts = replace(parts, clock=_loop_clock())
    metrics = parts.metrics or PullMetrics(parts.metrics_registry)
    platform = options.platform or host_platform()
    async with AsyncExitStack() as stack:
        store: NodeStore | None = parts.store
        if store is None:
            paths.check_layout()
            store = await stack.enter_async_context(
                await Store.open(
                    paths.store,
                    runtime_class_in_image_cri_api=config.feature_enabled(RUNTIME_CLASS_GATE),
                )
            )
        transport = parts.transport or Transport(settings=options.transport, observer=metrics)
        client = RegistryClient(transport, hosts_dir=options.hosts_dir, settings=options.client)
        stack.push_async_callback(client.aclose)
        service = ImageService(
            client, store, platform=platform, bytes_observer=metrics.bytes_pulled
        )
        creds = build_node_credentials(
            config,
            pull_records=store,
            secrets=parts.secrets,
            recorder=parts.recorder,
            docker_config=options.docker_config
            or DockerConfigSearch(preferred=paths.docker_config_dir),
            node_docker_config=options.node_docker_config,
            provider_config=options.image_credential_provider_config,
            provider_bin_dir=options.image_credential_provider_bin_dir,
            metrics=parts.credential_metrics,
            plugin_timeout=options.credential_plugin_timeout,
        )
        containers = (
            _container_manager(config, paths, options, parts, store, stack)
            if options.containers
            else None
        )
        node = Node.build(
            config,
            service,
            parts.recorder,
            metrics,
            containers=containers,
            store=store,
            client=client,
            platform=platform,
            credentials=creds.resolver.lookup,
            verifier=creds.verifier,
            on_sync=creds.resolver.pod_synced,
            settings=options.engine,
            progress=parts.progress,
            backoff=Backoff(*options.backoff),
            clock=parts.clock,
        )
        node.resolver = creds.resolver
        yield node


def _container_manager(
    config: KubeletConfiguration,
    paths: NodePaths,
    options: NodeOptions,
    parts: NodeParts,
    store: NodeStore,
    stack: AsyncExitStack,
) -> ContainerManager:
    """The container half of a node: runtime handlers, lifecycle hooks, the kubelet's container
    environment. Imported here, when a node runs containers: an image-only node (``kubelet-sim
    pull``) never loads them, nor the Kubernetes object model behind them (measured: 1.7 MiB
    less peak RSS in a pull)."""
    from kubelet_sim.runtime.containers import DEFAULT_POD_CIDR, ContainerManager, NodeInfo
    from kubelet_sim.runtime.hooks import HookRunner, lifecycle_http_client
    from kubelet_sim.runtime.runc import RuncHandler

    hooks = parts.hooks
    if hooks is None:
        http = lifecycle_http_client()
        stack.push_async_callback(http.aclose)
        hooks = HookRunner(http, on_http_fallback=_fallback_event(parts.recorder))
    handlers = parts.handlers
    if handlers is None:
        handlers = _handlers(options.runtimes, paths, store)
        for handler in handlers.values():
            if isinstance(handler, RuncHandler):
                stack.push_async_callback(handler.aclose)
    return ContainerManager(
        handlers,
        default_handler=options.runtimes.default
        if options.runtimes.default in handlers
        else next(iter(handlers)),
        images=store,
        objects=parts.objects,
        hooks=hooks,
        recorder=parts.recorder,
        node=NodeInfo(
            name=options.node_name,
            address=options.node_address,
            pod_cidr=config.pod_cidr or DEFAULT_POD_CIDR,
            cluster_domain=config.cluster_domain or "cluster.local",
        ),
        clock=parts.clock,
        runtime_classes=parts.runtime_classes,
    )


def _fallback_event(recorder: EventRecorder) -> Callable[[Pod, str], None]:
    """``LifecycleHTTPFallback``: a Warning on the pod (``handlers.go`` ``Eventf(pod, ...)``)."""

    def record(pod: Pod, message: str) -> None:
        recorder.event(
            ObjectRef(pod.namespace, pod.name, pod.uid),
            EventType.WARNING,
            EventReason.LIFECYCLE_HTTP_FALLBACK,
            message,
        )

    return record


def _handlers(
    runtimes: RuntimesConfig, paths: NodePaths, store: NodeStore
) -> dict[str, RuntimeHandler]:
    """The configured handlers; runc ones only over a durable store (they unpack its blobs)."""
    from kubelet_sim.runtime.runc import RuncHandler
    from kubelet_sim.runtime.sim import SimHandler

    handlers: dict[str, RuntimeHandler] = {}
    for name, entry in runtimes.entries.items():
        if entry.kind == "sim":
            handlers[name] = SimHandler(name)
        elif isinstance(store, Store):
            handlers[name] = RuncHandler(
                name, paths.containers / name, store, runc=entry.binary or "runc"
            )
    if not handlers:
        handlers["sim"] = SimHandler("sim")
    return handlers


@asynccontextmanager
async def quiet_image_service(
    node: Node, http: httpx.AsyncClient | None = None
) -> AsyncIterator[ImageService[NodeStore]]:
    """The node's image service without its metrics, events or progress (pre-pulls before a
    measured run): the same store, platform, ``hosts.toml`` and client settings; ``http``: the
    HTTP client to send through (default: a new one)."""
    if node.image_store is None or node.client is None:
        raise TypeError("quiet_image_service needs a node built by open_node")
    settings = node.client.transport.settings
    transport = Transport(settings=settings, http=http) if http is not None else None
    client = RegistryClient(
        transport, hosts_dir=node.client.hosts_dir, settings=node.client.settings
    )
    async with client:
        yield ImageService(client, node.image_store, platform=node.platform or host_platform())
