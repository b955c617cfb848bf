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
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx
import structlog
from prometheus_client import CollectorRegistry

from kubelet_sim.core.platforms import parse_platform
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
from kubelet_sim.workloads.generate import SeedReport
from kubelet_sim.workloads.health import LoopLagMonitor
from kubelet_sim.workloads.observe import BytesTimeline, CountingRecorder, NodeObserver
from kubelet_sim.workloads.schedule import PlannedPod, plan_pods
from kubelet_sim.workloads.spec import CacheState, NodeGroup, Workload

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

    @property
    def image_service(self) -> ImageService:
        """The node's runtime image service (its registry/shared pull counters)."""
        service = self.node.service
        assert isinstance(service, ImageService)
        return service


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
    node = await stack.enter_async_context(
        open_node(group.kubelet, NodePaths(root / name), options, parts)
    )
    return SimNode(name, group, node, observer, recorder, registry, http=http)


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
        done = sum(1 for s in sim.node.engine.pods() if s.is_ready)
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

    Raises:
        KubeletSimError: a store cannot be opened, or a pre-pull failed.
    """
    failure: BaseException | None = None
    try:
        return await _run(
            workload, registry, store_root, on_tick, tick, seed, shard, start_at, store, model,
            clock, stop, on_nodes,
        )  # fmt: skip
    except* KubeletSimError as group:
        failure = first_error(group)  # raised below: see registry.client.for_each_layer
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
            await serving.start(sim.node.serve)
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
        for sim in nodes:
            sim.observer.t0 = t0
        if proxy is not None:
            proxy.start_schedule(t0)
        if model is not None:
            model.view = RegistryView()  # what the registry saw of the run, not of pre-pulls
            model.start_schedule(t0)
        real0 = time.perf_counter()
        peak_reset = _reset_peak_rss()
        cpu0 = _cpu()
        submitted_at: dict[str, float] = {}
        monitor = LoopLagMonitor()

        async def arrivals() -> None:
            # Every pod that is due is submitted without yielding in between: on a busy event
            # loop each await would let hundreds of tasks run and make later pods arrive late.
            for pod in plan:
                delay = t0 + pod.at - anyio.current_time()
                if delay > 0:
                    await anyio.sleep(delay)
                engine = by_name[pod.node].node.engine
                try:
                    engine.submit_nowait(specs[pod.uid])
                except anyio.WouldBlock:
                    await engine.submit(specs[pod.uid])
                submitted_at[pod.uid] = anyio.current_time() - t0

        settled = 0  # plan[:settled] have settled, and a settled pod stays settled

        def all_settled() -> bool:
            nonlocal settled
            while settled < len(plan):
                pod = plan[settled]
                state = by_name[pod.node].node.engine.pod(pod.uid)
                if state is None or not _settled(state):
                    return False
                settled += 1
            return True

        timed_out = interrupted = False
        async with anyio.create_task_group() as run_tg:
            run_tg.start_soon(arrivals)
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
        pods = _outcomes(plan, by_name, submitted_at, t0)
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
        )


def _outcomes(
    plan: list[PlannedPod], nodes: dict[str, SimNode], submitted: dict[str, float], t0: float
) -> list[PodOutcome]:
    out = []
    for pod in plan:
        sim = nodes[pod.node]
        outcome = PodOutcome(pod, sim.group.name)
        state = sim.node.engine.pod(pod.uid)
        if state is not None:
            outcome.submitted = round(state.submitted_at - t0, 6)
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
