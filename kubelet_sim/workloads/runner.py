"""Run a workload: many simulated nodes in one process, sharing only the registry.

Each node is a real :class:`~kubelet_sim.node.builder.Node` built by
:func:`~kubelet_sim.node.builder.open_node`, the same builder the daemon and the pull command use,
with its own store (``store_root/NODE/store``), registry client (its own connection pool),
KubeletConfiguration, metrics registry and event recorder. With faults (or
``run.proxy``) the nodes pull through a :class:`~kubelet_sim.sim.faultproxy.FaultProxy` in front of the
registry. Pre-pulled images and warm caches are pulled before time zero, outside the figures.
Pods are submitted at their planned arrival times; the run ends when every pod's images are ready
or can never be (``InvalidImageName``, ``ErrImageNeverPull``), or at ``run.timeout``.
"""

from __future__ import annotations

import base64
import gc
import json
import resource
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import structlog
from prometheus_client import CollectorRegistry

from kubelet_sim.core.credentials import Credentials
from kubelet_sim.core.platforms import parse_platform
from kubelet_sim.core.pods import PodSpec
from kubelet_sim.core.reference import parse_normalized
from kubelet_sim.engine.workers import EngineSettings, PodState
from kubelet_sim.errors import KubeletSimError, PullReason, first_error
from kubelet_sim.k8s.admission import ALWAYS_PULL_IMAGES
from kubelet_sim.k8s.objects import DOCKER_CONFIG_JSON_KEY, Secret, SecretType, stable_uid
from kubelet_sim.node.builder import (
    RUNTIME_CLASS_GATE,
    Node,
    NodeOptions,
    NodeParts,
    open_node,
    quiet_image_service,
)
from kubelet_sim.node.paths import NodePaths
from kubelet_sim.registry.client import ClientSettings
from kubelet_sim.registry.transport import Transport
from kubelet_sim.runtime.hooks import HookRunner, lifecycle_http_client
from kubelet_sim.runtime.images import ImageService
from kubelet_sim.sim.faultproxy import FaultProxy
from kubelet_sim.sim.model import ModelTransport, RegistryView
from kubelet_sim.telemetry.metrics import PullMetrics
from kubelet_sim.workloads.churn import ChurnRunner
from kubelet_sim.workloads.generate import SeedReport
from kubelet_sim.workloads.health import LoopLagMonitor
from kubelet_sim.workloads.observe import (
    BytesTimeline,
    CountingRecorder,
    NodeObserver,
    RequestTimeline,
)
from kubelet_sim.workloads.schedule import PlannedPod, plan_pods
from kubelet_sim.workloads.spec import CacheState, NodeGroup, PodTemplate, Workload

log = structlog.get_logger(__name__)

HOPELESS = frozenset({PullReason.INVALID_IMAGE_NAME, PullReason.ERR_IMAGE_NEVER_PULL})
PREPULL_CONCURRENCY = 8


@dataclass(slots=True)
class SimNode:
    """One simulated node and everything it recorded."""

    name: str
    group: NodeGroup
    node: Node
    observer: NodeObserver
    recorder: CountingRecorder
    registry: CollectorRegistry
    pods: int = 0
    http: httpx.AsyncClient | None = None
    """The HTTP client of a virtual run's node (its way into the modelled registry)."""
    boot: Callable[[], Awaitable[tuple[Node, AsyncExitStack]]] | None = None
    """Opens the node's kubelet again on the same store (a restart)."""
    closer: AsyncExitStack | None = None
    """What closes the running kubelet (and not the store a restart keeps)."""
    serving: anyio.CancelScope | None = None
    served: anyio.Event | None = None
    restarts: int = 0
    down: bool = False
    """Its kubelet is restarting: pods bound to it now wait for it (:attr:`parked`)."""
    parked: list[PodSpec] = field(default_factory=list)
    restarting: anyio.Lock = field(default_factory=anyio.Lock)
    kept_ready: int = 0
    """Ready pods a restart left running (no longer in the new kubelet's engine)."""
    _before: tuple[int, int, int] = (0, 0, 0)
    """Registry pulls, shared pulls and peak pulls in flight of the kubelets before a restart."""

    @property
    def image_service(self) -> ImageService:
        """The node's runtime image service (its registry/shared pull counters)."""
        service = self.node.service
        assert isinstance(service, ImageService)
        return service

    @property
    def registry_pulls(self) -> int:
        return self._before[0] + self.image_service.registry_pulls

    @property
    def shared_pulls(self) -> int:
        return self._before[1] + self.image_service.shared_pulls

    @property
    def peak_in_flight(self) -> int:
        return max(self._before[2], self.node.peak_in_flight)

    async def restart(self, serving: anyio.abc.TaskGroup, downtime: float) -> list[PodState]:
        """Stop the kubelet (its pulls are cancelled, its backoffs and pod workers gone), wait
        ``downtime``, open it again on the same store; the pods it had, for re-applying."""
        assert self.boot is not None
        # A kubelet that fails to come back (its store cannot be reopened) stays down: the pods
        # bound to it wait, as on a node whose kubelet does not start, and the action says why.
        async with self.restarting:  # two restarts of one node: the second waits
            assert self.serving is not None
            assert self.served is not None
            self.down = True
            states = list(self.node.engine.pods())
            self.serving.cancel()
            await self.served.wait()
            await self.close()
            self._before = (self.registry_pulls, self.shared_pulls, self.peak_in_flight)
            self.restarts += 1
            await anyio.sleep(downtime)
            self.node, self.closer = await self.boot()
            await serving.start(self.serve)
            self.down = False
            return states

    async def close(self) -> None:
        """Close the current kubelet (a memory store outlives it; a restart opens another)."""
        if self.closer is not None:
            await self.closer.aclose()

    async def serve(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """:meth:`Node.serve` under a scope of this node's own, so a restart can stop it."""
        scope, done = self.serving, self.served = anyio.CancelScope(), anyio.Event()
        try:
            with scope:
                await self.node.serve(task_status=task_status)
        finally:
            done.set()


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The run's state for a progress display."""

    elapsed: float
    pods_total: int
    submitted: int
    ready: int
    pulls_in_flight: int
    pulls_done: int
    pull_errors: int
    bytes: int
    backoffs: int
    groups: dict[str, tuple[int, int]]  # group -> (ready, planned)


@dataclass(slots=True)
class PodOutcome:
    """A pod's life in the run, in seconds since time zero (None: never happened)."""

    planned: PlannedPod
    group: str
    submitted: float | None = None
    ready: float | None = None
    containers: list[dict[str, object]] = field(default_factory=list)
    deleted: float | None = None
    """When churn deleted the pod (a rollout's old pod, a delete action)."""

    @property
    def seconds(self) -> float | None:
        if self.submitted is None or self.ready is None:
            return None
        return self.ready - self.submitted


@dataclass(slots=True)
class BenchResult:
    """Everything a report is made from."""

    workload: Workload
    registry: str
    target: str
    nodes: list[SimNode]
    pods: list[PodOutcome]
    timeline: BytesTimeline
    stopped_at: float
    timed_out: bool
    resources: dict[str, float]
    started_at: float
    proxy: FaultProxy | None = None
    seed: SeedReport | None = None
    shard: tuple[int, int] = (0, 1)
    agreed_start: float | None = None
    store_kind: str = "memory"
    loop_lag: list[float] = field(default_factory=list)
    model: ModelTransport | None = None
    """The modelled registry of a virtual run (None: a real registry)."""
    interrupted: bool = False
    """Stopped early on request (Ctrl-C): the report is partial."""
    churn: list[dict[str, Any]] = field(default_factory=list)
    """What each churn action did (:meth:`ChurnRunner.to_list`)."""
    requests: RequestTimeline = field(default_factory=RequestTimeline)
    """Registry answers per second of the run, over every node."""


def _secrets(workload: Workload, host: str) -> dict[tuple[str, str], Secret]:
    out = {}
    for spec in workload.secrets:
        auth = base64.b64encode(f"{spec.username}:{spec.password}".encode()).decode()
        doc = {
            "auths": {host: {"username": spec.username, "password": spec.password, "auth": auth}}
        }
        uid = stable_uid("Secret", spec.namespace, spec.name)
        data = {DOCKER_CONFIG_JSON_KEY: json.dumps(doc).encode()}
        secret = Secret(spec.namespace, spec.name, uid, SecretType.DOCKER_CONFIG_JSON, data)
        out[(spec.namespace, spec.name)] = secret
    return out


@dataclass(frozen=True, slots=True)
class _SecretTable:
    secrets: dict[tuple[str, str], Secret]

    def get_secret(self, namespace: str, name: str) -> Secret | None:
        return self.secrets.get((namespace, name))


async def _open_node(
    stack: AsyncExitStack,
    group: NodeGroup,
    name: str,
    index: int,
    root: Path,
    timeline: BytesTimeline,
    secrets: _SecretTable | None,
    store: str,
    http: httpx.AsyncClient | None = None,
    clock: Callable[[], float] = anyio.current_time,
    hooks: HookRunner | None = None,
) -> SimNode:
    """One simulated kubelet, built by the node builder with the bench's parts swapped in: an
    observing recorder and metrics, the group's transport and download settings, no node docker
    config (credentials come only from the workload's pull secrets), and with ``store`` "memory"
    the light node store instead of a durable one. ``http``: the HTTP client every node's
    transport sends through (a virtual run's modelled registry), instead of the node's own."""
    registry = CollectorRegistry()
    observer = NodeObserver(PullMetrics(registry), clock, timeline)
    recorder = CountingRecorder(source_host=name)
    timing = group.timing
    options = NodeOptions(
        platform=parse_platform(group.platform),
        node_docker_config=False,
        engine=EngineSettings(timing.resync_period, timing.resync_jitter, seed=index),
        backoff=(timing.backoff_initial, timing.backoff_max),
        transport=group.transport,
        client=ClientSettings(max_concurrent_downloads=group.max_concurrent_downloads),
        node_name=name,
        hosts_dir=group.hosts_dir,
    )
    light = None
    if store == "memory":
        from kubelet_sim.store import MemoryStore

        light = await stack.enter_async_context(
            MemoryStore(
                runtime_class_in_image_cri_api=group.kubelet.feature_enabled(RUNTIME_CLASS_GATE),
                hash_layers=http is None,  # a virtual run's layers are stubs: sized, not built
            )
        )

    async def boot() -> tuple[Node, AsyncExitStack]:
        transport = None
        if http is not None:
            transport = Transport(settings=group.transport, http=http, observer=observer)
        parts = NodeParts(
            recorder=recorder,
            metrics=observer,
            metrics_registry=registry,
            secrets=secrets,
            progress=observer.progress,
            store=light,
            transport=transport,
            clock=clock,
            hooks=hooks,
        )
        closer = AsyncExitStack()
        node = await closer.enter_async_context(
            open_node(group.kubelet, NodePaths(root / name), options, parts)
        )
        return node, closer

    node, closer = await boot()
    sim = SimNode(name, group, node, observer, recorder, registry, http=http, boot=boot)
    sim.closer = closer
    stack.push_async_callback(sim.close)  # whichever kubelet the node runs by then
    return sim


async def _prepull(nodes: list[SimNode], workload: Workload, target: str) -> None:
    """Pull warm caches and pre-pulled images outside the measured run (no events or metrics)."""
    limiter = anyio.CapacityLimiter(PREPULL_CONCURRENCY)

    async def one(sim: SimNode, refs: list[str]) -> None:
        async with limiter, quiet_image_service(sim.node, sim.http) as service:
            for ref in refs:
                await service.pull_image(parse_normalized(f"{target}/{ref}"))

    async with anyio.create_task_group() as tg:
        for sim in nodes:
            refs = list(sim.group.pre_pulled)
            if sim.group.cache is CacheState.WARM:
                refs = [
                    ref
                    for spec in workload.images
                    if sim.group.platform in spec.platforms
                    for ref in spec.references()
                ]
            if refs:
                tg.start_soon(one, sim, refs)


def _settled(state: PodState) -> bool:
    """Ready (its ready time recorded by the engine), or waiting for what can never come.

    A pod whose containers all report ready is not settled until the engine has recorded its
    ready time: ending the run in between would lose the pod from every figure.
    """
    if state.is_ready:
        return True
    containers = state.containers.values()
    return any(c.reason in HOPELESS for c in containers) and all(
        c.ready or c.reason in HOPELESS for c in containers
    )


def _snapshot(
    nodes: list[SimNode], plan: list[PlannedPod], submitted: int, elapsed: float
) -> Snapshot:
    ready = 0
    groups: dict[str, list[int]] = {}
    for sim in nodes:
        counts = groups.setdefault(sim.group.name, [0, 0])
        counts[1] += sim.pods
        done = sim.kept_ready + sum(1 for s in sim.node.engine.pods() if s.is_ready)
        counts[0] += done
        ready += done
    spans = [span for sim in nodes for span in sim.observer.spans]
    return Snapshot(
        elapsed=elapsed,
        pods_total=len(plan),
        submitted=submitted,
        ready=ready,
        pulls_in_flight=sum(sim.node.runner.in_flight for sim in nodes),
        pulls_done=len(spans),
        pull_errors=sum(1 for span in spans if span.error),
        bytes=sum(sim.observer.received for sim in nodes),
        backoffs=sum(sim.recorder.emitted["BackOff"] for sim in nodes),
        groups={name: (c[0], c[1]) for name, c in groups.items()},
    )


GC_THRESHOLD = 100_000
"""Allocations between young-generation collections during a run (CPython's default: 700)."""


@contextmanager
def _frozen_heap() -> Iterator[None]:
    """Keep the garbage collector off the nodes during the measured run.

    A thousand nodes are millions of long-lived objects (engines, clients, metric families);
    every full collection walks them all and stops the event loop for seconds, which the
    report would then show as registry latency (measured: 1,000 nodes' median time-to-ready
    52 s with the default thresholds, 23 s without collections). The heap built so far is
    frozen (never scanned again) and young collections run 100 times less often; both are
    undone when the run ends.
    """
    gc.collect()
    gc.freeze()
    before = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD, before[1], before[2])
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


def _cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def _reset_peak_rss() -> bool:
    """Reset this process's ``VmHWM`` to its current RSS (Linux ``clear_refs``)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Fleet:
    """The run's nodes and pods as churn sees them (:class:`~kubelet_sim.workloads.churn.Fleet`)."""

    def __init__(
        self,
        workload: Workload,
        plan: list[PlannedPod],
        by_name: dict[str, SimNode],
        specs: dict[str, PodSpec],
        submitted_at: dict[str, float],
        t0: float,
        target: str,
        serving: anyio.abc.TaskGroup,
        retagger: Callable[[str, str, str], Awaitable[dict[str, Any]]],
    ) -> None:
        self.workload = workload
        self.plan = plan
        self.by_name = by_name
        self.specs = specs
        self.submitted_at = submitted_at
        self.t0 = t0
        self.target = target
        self.serving = serving
        self._retagger = retagger
        self.always = ALWAYS_PULL_IMAGES in workload.admission_plugins
        self.removed: dict[str, tuple[float, PodState | None]] = {}
        self.kept: dict[str, PodState] = {}
        """Ready pods a kubelet restart left running: their state as the old kubelet had it."""

    def now(self) -> float:
        return anyio.current_time() - self.t0

    def state(self, pod: PlannedPod) -> PodState | None:
        removed = self.removed.get(pod.uid)
        if removed is not None:
            return removed[1]
        kept = self.kept.get(pod.uid)
        if kept is not None:
            return kept
        return self.by_name[pod.node].node.engine.pod(pod.uid)

    def live(self, template: str) -> list[PlannedPod]:
        pods = [
            p
            for p in self.plan
            if p.template.name == template and p.uid in self.submitted_at
            and p.uid not in self.removed
        ]  # fmt: skip
        return sorted(pods, key=lambda p: (p.index, p.at))

    def deleted(self, pod: PlannedPod) -> bool:
        return pod.uid in self.removed

    def ready(self, pod: PlannedPod) -> bool:
        state = self.state(pod)
        return state is not None and state.is_ready

    async def delete(self, pod: PlannedPod) -> None:
        if pod.uid in self.removed:
            return
        state = self.state(pod)
        self.removed[pod.uid] = (self.now(), state)
        sim = self.by_name[pod.node]
        if self.kept.pop(pod.uid, None) is not None:
            sim.kept_ready -= 1
            return  # its kubelet was restarted: the new one never had it
        if sim.down:
            return  # the restarting kubelet: the new one skips it (a removed pod is not re-applied)
        await sim.node.engine.remove(pod.uid)

    async def submit(self, sim: SimNode, spec: PodSpec) -> None:
        """Hand a pod to its node's kubelet; while that kubelet restarts, when it is back."""
        if sim.down:
            sim.parked.append(spec)
            return
        engine = sim.node.engine
        try:
            engine.submit_nowait(spec)
        except anyio.WouldBlock:
            await engine.submit(spec)

    async def create(self, pod: PlannedPod) -> None:
        sim = self.by_name[pod.node]
        self.plan.append(pod)
        sim.pods += 1
        spec = self.specs[pod.uid] = pod.spec(self.target, always_pull_images=self.always)
        self.submitted_at[pod.uid] = self.now()
        await self.submit(sim, spec)

    def retemplate(self, template: PodTemplate) -> int:
        pending = [p for p in self.plan
                   if p.template.name == template.name and p.uid not in self.submitted_at]  # fmt: skip
        for pod in pending:
            changed = PlannedPod(template, pod.index, pod.name, pod.uid, pod.node, pod.at)
            self.specs[pod.uid] = changed.spec(self.target, always_pull_images=self.always)
        return len(pending)

    def nodes_of(self, group: str) -> list[str]:
        return [name for name, sim in self.by_name.items() if sim.group.name == group]

    async def restart(self, node: str, downtime: float) -> tuple[int, int]:
        sim = self.by_name[node]
        states = await sim.restart(self.serving, downtime)
        reapplied = 0
        parked, sim.parked = sim.parked, []
        for spec in parked:  # bound to the node while its kubelet was down
            if spec.ref.uid not in self.removed:
                await self.submit(sim, spec)
                reapplied += 1
        for state in states:
            uid = state.spec.ref.uid
            if uid in self.removed:
                continue
            if state.is_ready:
                # A restarted kubelet finds running containers running and pulls nothing for
                # them: the pod stays ready as it was.
                self.kept[uid] = state
                sim.kept_ready += 1
            else:
                await self.submit(sim, state.spec)  # its backoff starts afresh
                reapplied += 1
        # every ready pod on the node, those an earlier restart left running too
        return reapplied, sim.kept_ready

    async def retag(self, repository: str, tag: str, to: str) -> dict[str, Any]:
        return await self._retagger(repository, tag, to)


def _model_retagger(
    model: ModelTransport,
) -> Callable[[str, str, str], Awaitable[dict[str, Any]]]:
    async def retag(repository: str, tag: str, to: str) -> dict[str, Any]:
        tags = model.catalogue.tags
        before, after = tags[(repository, tag)], tags[(repository, to)]
        tags[(repository, tag)] = after
        return {"image": f"{repository}:{tag}", "from": str(before.digest),
                "to": str(after.digest)}  # fmt: skip

    return retag


def _registry_retagger(
    workload: Workload, registry: str, shard: int, creds: Credentials | None
) -> Callable[[str, str, str], Awaitable[dict[str, Any]]]:
    """Moves a tag on the real registry (not through the fault proxy: the move is the
    operator's, not a kubelet's); only shard 0 does, every shard records it."""

    async def retag(repository: str, tag: str, to: str) -> dict[str, Any]:
        from kubelet_sim.registry.client import RegistryClient
        from kubelet_sim.registry.push import Pusher

        moved: dict[str, Any] = {"image": f"{repository}:{tag}"}
        if shard != 0:
            moved["by_shard"] = 0
            return moved
        moving = parse_normalized(f"{registry}/{repository}:{tag}")
        source = parse_normalized(f"{registry}/{repository}:{to}")
        async with RegistryClient(hosts_dir=workload.hosts_dir) as client:
            old = await client.resolve(moving, creds)
            desc = await client.resolve(source, creds)
            manifest = await client.fetch_manifest(source, desc, creds)
            await Pusher(client, moving, creds).push_manifest(
                manifest.raw, manifest.media_type, tag
            )
        moved.update({"from": str(old.digest), "to": str(desc.digest)})
        return moved

    return retag


async def run_workload(
    workload: Workload,
    registry: str,
    store_root: Path,
    *,
    on_tick: Callable[[Snapshot], None] | None = None,
    tick: float = 0.25,
    seed: SeedReport | None = None,
    shard: tuple[int, int] = (0, 1),
    start_at: float | None = None,
    store: str = "memory",
    model: ModelTransport | None = None,
    clock: Callable[[], float] = anyio.current_time,
    stop: anyio.Event | None = None,
    on_nodes: Callable[[list[SimNode]], None] | None = None,
    push_creds: Credentials | None = None,
) -> BenchResult:
    """Run ``workload`` (or shard ``shard[0]`` of ``shard[1]``) against ``registry`` (``HOST:PORT``).

    A shard runs every node whose index (in declaration order) is ``shard[0]`` modulo
    ``shard[1]``, and the pods placed on them; the plan is the whole workload's, so shards of
    one workload together run exactly the unsharded run. ``start_at`` (a Unix time) is the
    instant shards agreed to start: time zero waits for it after the nodes are built.
    ``store``: ``memory`` (the light node store: every byte received and verified, nothing
    written) or ``disk`` (each node's durable store under ``store_root``). ``model``: a virtual
    run: every node sends through this modelled registry (``registry`` is then its name, and the
    caller runs this on a virtual clock, :mod:`kubelet_sim.workloads.virtual`). ``clock``: the
    nodes' monotonic clock (the event loop's time; a virtual run passes its loop's own
    ``current_time``, cheaper than anyio's dispatch to it). ``stop``: once set, the run ends
    at its next tick as at a timeout, and its result says it was interrupted. ``on_nodes`` is
    called with the nodes once they are built (``bench --listen`` serves their metrics).
    ``push_creds``: what a ``retag`` churn action pushes with (default: what seeding would use
    without a docker config, the workload's first pull secret).

    Raises:
        KubeletSimError: a store cannot be opened, or a pre-pull failed.
    """
    failure: BaseException | None = None
    try:
        return await _run(
            workload, registry, store_root, on_tick, tick, seed, shard, start_at, store, model,
            clock, stop, on_nodes, push_creds,
        )  # fmt: skip
    except* KubeletSimError as group:
        failure = first_error(group)  # raised below: see registry.client.run_limited
    assert failure is not None
    raise failure from None


async def _run(
    workload: Workload,
    registry: str,
    store_root: Path,
    on_tick: Callable[[Snapshot], None] | None,
    tick: float,
    seed: SeedReport | None,
    shard: tuple[int, int],
    start_at: float | None,
    store: str,
    model: ModelTransport | None = None,
    clock: Callable[[], float] = anyio.current_time,
    stop: anyio.Event | None = None,
    on_nodes: Callable[[list[SimNode]], None] | None = None,
    push_creds: Credentials | None = None,
) -> BenchResult:
    index, count = shard
    plan = plan_pods(workload)
    timeline = BytesTimeline()
    async with AsyncExitStack() as stack:
        tg = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(tg.cancel_scope.cancel)  # on exit, after the nodes stopped: the proxy
        proxy: FaultProxy | None = None
        target = registry
        if model is None and workload.uses_proxy:
            proxy = FaultProxy(registry, workload.faults)
            await tg.start(proxy.run)
            target = proxy.host
        needs_secrets = workload.secrets or any(t.pull_secrets for t in workload.pods)
        secrets = _SecretTable(_secrets(workload, target)) if needs_secrets else None
        nodes: list[SimNode] = []
        position = 0
        # One lifecycle-hook client for every node (a client per node would cost a TLS context
        # each; hooks are rare next to pulls).
        hooks_http = lifecycle_http_client()
        stack.push_async_callback(hooks_http.aclose)
        hooks = HookRunner(hooks_http)
        for group in workload.nodes:
            for name in group.node_names():
                if position % count == index:
                    http = None
                    if model is not None:  # each node's own way into the modelled registry
                        http = httpx.AsyncClient(transport=model.for_node(name))
                        stack.push_async_callback(http.aclose)
                    sim = await _open_node(
                        stack, group, name, position, store_root, timeline, secrets, store, http,
                        clock, hooks,
                    )  # fmt: skip
                    nodes.append(sim)
                position += 1
        by_name = {sim.name: sim for sim in nodes}
        plan = [pod for pod in plan if pod.node in by_name]
        for pod in plan:
            by_name[pod.node].pods += 1
        if on_nodes is not None:
            on_nodes(nodes)
        await _prepull(nodes, workload, target)
        # Side by side in one task group (Node.serve), never nested: see there why.
        serving = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(serving.cancel_scope.cancel)
        for sim in nodes:
            await serving.start(sim.serve)
        if start_at is not None:
            late = time.time() - start_at
            if late > 0:
                log.warning("bench.shard_started_late", shard=f"{index}/{count}", seconds=late)
            else:
                await anyio.sleep(-late)

        always = ALWAYS_PULL_IMAGES in workload.admission_plugins
        # built now, not on arrival
        specs = {pod.uid: pod.spec(target, always_pull_images=always) for pod in plan}
        stack.enter_context(_frozen_heap())
        started_at = time.time()
        t0 = anyio.current_time()
        requests = RequestTimeline()  # from time zero: pre-pulls are not the run's traffic
        for sim in nodes:
            sim.observer.t0 = t0
            sim.observer.requests = requests
        if proxy is not None:
            proxy.start_schedule(t0)
        if model is not None:
            model.view = RegistryView()  # what the registry saw of the run, not of pre-pulls
            model.start_schedule(t0)
        real0 = time.perf_counter()
        peak_reset = _reset_peak_rss()
        cpu0 = _cpu()
        submitted_at: dict[str, float] = {}
        arriving = list(plan)
        monitor = LoopLagMonitor()
        if model is not None:
            retagger = _model_retagger(model)
        else:
            creds = push_creds
            if creds is None:
                from kubelet_sim.workloads.target import push_credentials

                creds = push_credentials(workload, registry)
            retagger = _registry_retagger(workload, registry, index, creds)
        fleet = _Fleet(workload, plan, by_name, specs, submitted_at, t0, target, serving, retagger)
        churn = ChurnRunner(workload, fleet)

        async def arrivals() -> None:
            # Every pod that is due is submitted without yielding in between: on a busy event
            # loop each await would let hundreds of tasks run and make later pods arrive late.
            for pod in arriving:  # not the pods a rollout adds to the plan as it goes
                delay = t0 + pod.at - anyio.current_time()
                if delay > 0:
                    await anyio.sleep(delay)
                await fleet.submit(by_name[pod.node], specs[pod.uid])
                submitted_at[pod.uid] = anyio.current_time() - t0

        settled = 0  # plan[:settled] have settled, and a settled pod stays settled

        def all_settled() -> bool:
            nonlocal settled
            while settled < len(plan):
                pod = plan[settled]
                if pod.uid not in fleet.removed:  # a deleted pod is settled
                    state = fleet.state(pod)
                    if state is None or not _settled(state):
                        return False
                settled += 1
            return churn.done

        timed_out = interrupted = False
        async with anyio.create_task_group() as run_tg:
            run_tg.start_soon(arrivals)
            if churn.actions:
                run_tg.start_soon(churn.run, t0)
            if model is None:  # on a virtual clock a sleep is never late: nothing to measure
                run_tg.start_soon(monitor.run)
            deadline = t0 + workload.run.timeout
            while True:
                now = anyio.current_time()
                if on_tick is not None:
                    on_tick(_snapshot(nodes, plan, len(submitted_at), now - t0))
                if len(submitted_at) == len(plan) and all_settled():
                    break
                if now >= deadline:
                    timed_out = True
                    break
                if stop is not None and stop.is_set():
                    interrupted = True  # what was measured so far becomes a partial report
                    break
                await anyio.sleep(min(tick, deadline - now))  # never past the deadline
            run_tg.cancel_scope.cancel()
        stopped_at = anyio.current_time() - t0
        cpu1 = _cpu()
        if on_tick is not None:
            on_tick(_snapshot(nodes, plan, len(submitted_at), stopped_at))
        pods = _outcomes(plan, fleet, t0)
        wall = stopped_at if model is None else time.perf_counter() - real0
        resources = {
            "wall_seconds": round(wall, 3),
            "cpu_user_seconds": round(cpu1[0] - cpu0[0], 3),
            "cpu_system_seconds": round(cpu1[1] - cpu0[1], 3),
            "cpu_seconds": round(cpu1[0] - cpu0[0] + cpu1[1] - cpu0[1], 3),
            "peak_rss_mib": round(peak_rss_mib(), 1),
            "peak_rss_reset_at_start": float(peak_reset),
        }
        return BenchResult(
            workload=workload,
            registry=registry,
            target=target,
            nodes=nodes,
            pods=pods,
            timeline=timeline,
            stopped_at=stopped_at,
            timed_out=timed_out,
            resources=resources,
            started_at=started_at,
            proxy=proxy,
            seed=seed,
            shard=shard,
            agreed_start=start_at,
            store_kind=store,
            loop_lag=monitor.samples,
            model=model,
            interrupted=interrupted,
            churn=churn.to_list(),
            requests=requests,
        )


def _outcomes(plan: list[PlannedPod], fleet: _Fleet, t0: float) -> list[PodOutcome]:
    out = []
    for pod in plan:
        sim = fleet.by_name[pod.node]
        outcome = PodOutcome(pod, sim.group.name)
        removed = fleet.removed.get(pod.uid)
        if removed is not None:
            outcome.deleted = round(removed[0], 6)
        state = fleet.state(pod)
        if state is None and pod.uid in fleet.submitted_at:  # parked for a kubelet still down
            outcome.submitted = round(fleet.submitted_at[pod.uid], 6)
        if state is not None:
            # When the run handed it over: a pod bound to a restarting kubelet, or re-applied by
            # the restarted one, counts from then, not from when that kubelet took it.
            submitted = fleet.submitted_at.get(pod.uid, state.submitted_at - t0)
            outcome.submitted = round(submitted, 6)
            if state.ready_at is not None:
                outcome.ready = round(state.ready_at - t0, 6)
            outcome.containers = [
                {
                    "name": c.container,
                    "image": c.image,
                    "ready": c.ready,
                    "reason": c.reason,
                    "attempts": c.attempts,
                    "image_id": c.image_id,
                }
                for c in state.containers.values()
            ]
        out.append(outcome)
    return out
