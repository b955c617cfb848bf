"""The daemon: the one composition root. Builds the real parts from a KubeletConfiguration and owns
the task group that runs the node, the static-pod watcher and the HTTP API.

Lifecycle: the store is opened (and recovered) first, then the static pods are applied and the API
starts answering ``/readyz``. Cancelling :meth:`Daemon.run` (SIGTERM/SIGINT in ``kubelet-sim run``)
stops intake, cancels in-flight pulls (the store aborts their temp files) and closes the store.
A restart on the same root reopens the store, re-applies the static pods, finds present images
present and starts every backoff fresh, as a kubelet restart does.
"""

from __future__ import annotations

import functools
import os
import resource
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import anyio
import anyio.abc
import structlog
from prometheus_client import CollectorRegistry, generate_latest

from kubelet_sim.config.kubelet import KubeletConfiguration
from kubelet_sim.config.runtimes import RuntimesConfig
from kubelet_sim.core.platforms import Platform, host_platform
from kubelet_sim.credentials.metrics import CredentialMetrics
from kubelet_sim.credentials.verify import ImageAccessVerifier
from kubelet_sim.engine.workers import EngineSettings
from kubelet_sim.errors import ConfigError, KubeletSimError
from kubelet_sim.k8s import ObjectStore, parse_manifests, pod_spec
from kubelet_sim.k8s.admission import Admission
from kubelet_sim.k8s.fields import FieldReader
from kubelet_sim.k8s.objects import Kind, Pod
from kubelet_sim.node import views
from kubelet_sim.node.api import API
from kubelet_sim.node.builder import Node, NodeOptions, NodeParts, open_node
from kubelet_sim.node.explain import NodeFacts, explain_pod
from kubelet_sim.node.httpserver import HTTPServer
from kubelet_sim.node.kubeapi import KubeAPI
from kubelet_sim.node.kubeapi.events import event_document
from kubelet_sim.node.paths import NodePaths
from kubelet_sim.node.podstatus import StatusWriter
from kubelet_sim.node.static import StaticPods, mirror_manifest, read_folder
from kubelet_sim.store import GCPolicy, GCResult, Store, garbage_collect
from kubelet_sim.telemetry.events import EventReason, EventRecorder, EventType, ObjectRef
from kubelet_sim.telemetry.metrics import PullMetrics

log = structlog.get_logger(__name__)

T = TypeVar("T")

PARSE_CONCURRENCY = 2
"""Request bodies parsed at the same time (each in a worker thread)."""
GC_PERIOD = 300.0  # pkg/kubelet/kubelet.go ImageGCPeriod (5 minutes)
STATUS_PERIOD = 0.5
"""How often pod statuses are compared with what the API shows, and written when they changed
(the kubelet's status manager writes on change, checking every 10 s besides)."""
STATUS_COALESCE = 0.05
"""After a write, the status manager waits this long, so a burst of writes costs one pass."""


@dataclass(frozen=True, slots=True)
class DaemonOptions:
    """``kubelet-sim run`` flags (the last two named as the kubelet's)."""

    config: KubeletConfiguration
    root: Path
    listen_host: str = "127.0.0.1"
    listen_port: int = 10255
    hosts_dir: Path | None = None
    node_platform: Platform | None = None
    image_credential_provider_config: Path | None = None
    image_credential_provider_bin_dir: Path | None = None
    node_name: str = field(default_factory=lambda: socket.gethostname().strip().lower())
    """The node's name (``--hostname-override``; default: the host name, lower-cased, as the
    kubelet's): static pods are named NAME-NODENAME."""
    static_poll_interval: float = 1.0
    gc_period: float = GC_PERIOD
    gc_capacity_bytes: int | None = None
    """A simulated image filesystem of this size (default: measure the store's filesystem)."""
    pinned_images: tuple[str, ...] = ()
    """Images image GC never frees (``run --pinned-image``; containerd pins the sandbox image)."""
    admission_plugins: frozenset[str] = frozenset()
    """``--enable-admission-plugins`` (AlwaysPullImages)."""
    runtimes: RuntimesConfig | None = None
    """The node's runtime handlers (``--runtime-config``); None: sim (default) and runc."""
    node_labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """``--node-labels``, besides the well-known ones the kubelet sets itself."""

    def labels(self, platform: Platform) -> dict[str, str]:
        """The node's labels: ``kubernetes.io/hostname``, ``os``, ``arch``, then ``--node-labels``."""
        return {
            "kubernetes.io/hostname": self.node_name,
            "kubernetes.io/os": platform.os,
            "kubernetes.io/arch": platform.architecture,
            **self.node_labels,
        }


def parse_node_labels(values: list[str], *, field: str) -> Mapping[str, str]:
    """``--node-labels k=v,k2=v2`` (repeatable).

    Raises:
        ConfigError: naming the flag and the malformed label.
    """
    labels: dict[str, str] = {}
    for value in values:
        for item in value.split(","):
            if not item:
                continue
            key, eq, val = item.partition("=")
            if not eq or not key:
                raise ConfigError(None, field, f'invalid label "{item}": expected key=value')
            labels[key] = val
    # The API's own label rules (ValidateLabels), as for a pod's or a selector's labels.
    return FieldReader("", "").labels(labels, field)


class Daemon:
    """A running node agent; :meth:`run` until cancelled."""

    def __init__(self, options: DaemonOptions) -> None:
        self.options = options
        self.config = options.config
        self.registry = CollectorRegistry()
        self.metrics = PullMetrics(self.registry)
        self.credential_metrics = CredentialMetrics(self.registry)
        self.recorder = EventRecorder(source_host=options.node_name)
        self.objects = ObjectStore(
            admission=Admission.from_plugins(options.admission_plugins),
            node_name=options.node_name,
        )
        self.labels = options.labels(options.node_platform or host_platform())
        self.rejected: dict[str, tuple[str, str]] = {}
        """Pods the kubelet's admission refused (uid -> reason, message), e.g. NodeAffinity."""
        self.platform = options.node_platform or host_platform()
        self.store: Store | None = None
        self.node: Node | None = None
        self.port: int | None = None
        self._ready = False
        self.static = StaticPods(options.node_name)
        self._lock = anyio.Lock()
        self._parse_limiter = anyio.CapacityLimiter(PARSE_CONCURRENCY)
        self._tasks: anyio.abc.TaskGroup | None = None
        self._wall_offset = 0.0
        self._status_due: anyio.Event | None = None
        self._statuses = StatusWriter(self.objects)
        """Wall clock minus the engine's clock, taken once when the node starts."""

    # -- NodeView (the API's seam) -------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._ready

    def metrics_text(self) -> bytes:
        return generate_latest(self.registry)

    async def apply(self, body: bytes, content_type: str) -> list[dict[str, Any]]:
        # Parsing is pure CPU (and large bodies take a while): off the event loop, and at most
        # PARSE_CONCURRENCY bodies at once, so a burst of big bodies cannot take every thread.
        manifests = await anyio.to_thread.run_sync(
            functools.partial(parse_manifests, body, source="request body"),
            limiter=self._parse_limiter,
        )
        # Admission may refuse a later document after earlier ones were applied.
        results = await self.write(lambda store: store.apply_all(manifests))
        return [
            {
                "kind": str(r.kind),
                "namespace": r.namespace,
                "name": r.name,
                "result": str(r.action),
                "warnings": list(r.warnings),
            }
            for r in results
        ]

    async def write(self, change: Callable[[ObjectStore], T]) -> T:
        """Run ``change`` on the object store under the node's lock, then submit new or changed
        pods to the engine and remove the ones that went (also when ``change`` raised after
        earlier writes), and write the statuses that changed."""
        async with self._lock:
            before = self._pod_keys()
            try:
                return change(self.objects)
            finally:
                await self._sync_pods(before)
                self._status_soon()

    async def delete_pod(
        self, namespace: str, name: str, *, grace: int | None = None
    ) -> dict[str, Any] | None:
        """A graceful deletion: the pod shows ``deletionTimestamp`` at once, its containers get
        preStop and a stop within ``grace`` (default: its ``terminationGracePeriodSeconds``),
        and it leaves the store once they stopped. None when there is no such pod.

        Raises:
            ConfigError: a static pod (its file owns it).
        """
        async with self._lock:
            if self.static.get(namespace, name) is not None:
                raise ConfigError(
                    f"pod {namespace}/{name}",
                    None,
                    "is a static pod: remove or edit its file in staticPodPath "
                    f"({self.config.static_pod_path}); deleting its mirror pod does not stop it",
                )
            pod = self.objects.get_pod(namespace, name)
            if pod is None:
                return None
            if self.objects.deleting(Kind.POD, namespace, name):
                document = self.objects.document(Kind.POD, namespace, name)
                if grace == 0:  # --force: the object goes now, the stop goes on behind it
                    self.objects.delete(Kind.POD, namespace, name)
                return document
            period = pod.termination_grace_period_seconds if grace is None else grace
            document = self.objects.mark_deleting(Kind.POD, namespace, name, period)
            self.rejected.pop(pod.uid, None)
            assert self.node is not None
            assert self._tasks is not None
            await self.node.engine.remove(pod.uid, grace_period=float(period))
            if grace == 0:
                # kubectl sends 0 only with --force: the API server removes the object at
                # once, and the kubelet stops what is left without waiting on anyone.
                self.objects.delete(Kind.POD, namespace, name)
            else:
                self._tasks.start_soon(
                    self._finish_deletion, pod, name=f"delete pod {namespace}/{name}"
                )
            return document

    async def _finish_deletion(self, pod: Pod) -> None:
        """Once the pod's containers stopped, the pod leaves the store (a DELETED change)."""
        assert self.node is not None
        await self.node.engine.wait_terminated(pod.uid)
        async with self._lock:
            current = self.objects.get_pod(pod.namespace, pod.name)
            if current is not None and current.uid == pod.uid:
                self.objects.delete(Kind.POD, pod.namespace, pod.name)
        log.info("pod.deleted", pod=f"{pod.namespace}/{pod.name}")

    def event_documents(self, namespace: str | None) -> list[dict[str, Any]]:
        """The recorder's events as ``v1 Event`` objects (``kubectl get events``, ``describe``)."""
        version = str(self.objects.revision)
        return [
            event_document(e, resource_version=version) for e in self.recorder.events(namespace)
        ]

    def sync_statuses(self) -> None:
        """The status manager: each API pod's and mirror pod's status, written to the store when
        it changed (a terminating pod keeps the last one, with its deletionTimestamp)."""
        if self.node is None:
            return
        # the node's address: the one it listens on, unless that is every address
        host = self.options.listen_host
        host_ip = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104
        pods = {(p.namespace, p.name): p for p in self.objects.pods()}
        # a static pod shadows an API pod of its name, as in _pod_keys; it runs as always_pull
        pods.update(
            (k, self.objects.admission.always_pull(p)) for k, p in self.static.pods().items()
        )
        self._statuses.sync(
            [p for p in pods.values() if not self.objects.deleting(Kind.POD, p.namespace, p.name)],
            self._pod_state,
            self.rejected,
            containers=self.node.containers,
            offset=self._wall_offset,
            host_ip=host_ip,
        )

    def _status_soon(self) -> None:
        """Wake the status manager: it runs next, once for a burst of writes."""
        if self._status_due is not None:
            self._status_due.set()

    async def _status_manager(self) -> None:
        while True:
            due = self._status_due = anyio.Event()
            with anyio.move_on_after(STATUS_PERIOD):
                await due.wait()
                await anyio.sleep(STATUS_COALESCE)  # a burst of writes: one pass after it
            self.sync_statuses()

    def pods(self) -> list[dict[str, Any]]:
        return [
            views.pod_summary(
                p,
                self._pod_state(p),
                self.rejected.get(p.uid),
                wall=time.time(),
                offset=self._wall_offset,
            )
            for p in self._pod_keys().values()
        ]

    def _as_run(self, namespace: str, name: str) -> tuple[Pod, bool] | None:
        """The pod ``namespace/name`` as the node runs it, and whether it is a static pod (one
        is shown with AlwaysPullImages applied, as _sync_pods runs it)."""
        static = self.static.get(namespace, name)
        if static is not None:
            return self.objects.admission.always_pull(static), True
        pod = self.objects.get_pod(namespace, name)
        return None if pod is None else (pod, False)

    def pod(self, namespace: str, name: str, *, reveal: bool = False) -> dict[str, Any] | None:
        found = self._as_run(namespace, name)
        if found is None:
            return None
        pod = found[0]
        assert self.node is not None
        return views.pod_detail(
            pod,
            self._pod_state(pod),
            anyio.current_time(),
            containers=self.node.containers,
            history=self.node.manager,
            reveal=reveal,
            rejected=self.rejected.get(pod.uid),
        )

    async def explain(self, namespace: str, name: str) -> dict[str, Any] | None:
        """``explain pod``: the account of a pod's image pulls (None: no such pod)."""
        found = self._as_run(namespace, name)
        if found is None or self.node is None:
            return None
        pod, static = found
        node = self.node
        spec = pod_spec(pod, static=static, runtime_handler=self._runtime_handler(pod))
        state = node.engine.pod(pod.uid)
        by_uid = {p.uid: f"{p.namespace}/{p.name}" for p in self._pod_keys().values()}
        resolver = node.resolver
        verifier = node.manager.verifier
        now = anyio.current_time()
        facts = NodeFacts(
            config=self.config,
            manager=node.manager,
            images=node.service,
            throttle=node.runner.throttle,
            secrets=self.objects,
            node_config=resolver.node if resolver is not None else None,
            plugins=resolver.plugins if resolver is not None else (),
            verifier=verifier if isinstance(verifier, ImageAccessVerifier) else None,
            credentials=node.manager.credentials,
            hosts_dir=self.options.hosts_dir,
            pod_name=lambda uid: by_uid.get(uid, uid),
            now=now,
        )
        containers = dict(state.containers) if state is not None else {}
        return await explain_pod(spec, containers, facts, rejected=self.rejected.get(pod.uid))

    async def images(self) -> list[dict[str, Any]]:
        assert self.store is not None
        return [views.image_row(r) for r in await self.store.list_images()]

    def events(self, namespace: str | None, name: str | None) -> list[dict[str, Any]]:
        return [views.event_row(e) for e in self.recorder.events(namespace, name)]

    def _pod_state(self, pod: Pod) -> Any:
        return self.node.engine.pod(pod.uid) if self.node is not None else None

    # -- pods ----------------------------------------------------------------------------

    def _pod_keys(self) -> dict[tuple[str, str], Pod]:
        """API pods and static pods (named NAME-NODENAME; a static pod shadows an API pod of
        the same name, as the kubelet's own source does)."""
        pods = {(p.namespace, p.name): p for p in self.objects.pods()}
        pods.update(self.static.pods())
        return pods

    async def _sync_pods(self, before: dict[tuple[str, str], Pod]) -> None:
        """Submit new or changed pods to the engine and remove the ones that went away."""
        assert self.node is not None
        after = self._pod_keys()
        for key, pod in after.items():
            old = before.get(key)
            if old is not None and old.uid != pod.uid:
                await self.node.engine.remove(old.uid)
            if old is not None and old.uid == pod.uid and _metadata_only(old, pod):
                continue  # labels and annotations: the API's, never a reason to restart
            if self.objects.deleting(Kind.POD, *key):
                continue  # an update of a terminating pod does not start it again
            if old != pod:
                static = self.static.get(*key) is pod
                if static:
                    pod = self.objects.admission.always_pull(pod)
                if self._rejects(pod):
                    if old is not None and old.uid == pod.uid:
                        await self.node.engine.remove(pod.uid)  # an update made it unfit here
                    continue
                handler = self._runtime_handler(pod)
                await self.node.engine.submit(pod_spec(pod, static=static, runtime_handler=handler))
        for key, pod in before.items():
            if key not in after:
                self.rejected.pop(pod.uid, None)
                await self.node.engine.remove(pod.uid)

    def _runtime_handler(self, pod: Pod) -> str:
        """``LookupRuntimeHandler``: the handler the pod's RuntimeClass names ("" without one;
        a class missing here leaves the name, and the sandbox fails naming it)."""
        if not pod.runtime_class_name:
            return ""
        cls = self.objects.get_runtime_class(pod.runtime_class_name)
        return cls.handler if cls is not None else pod.runtime_class_name

    def _rejects(self, pod: Pod) -> bool:
        """The kubelet's ``NodeAffinity`` admission: the pod's nodeSelector must match the
        node's labels, else the pod fails (``Predicate NodeAffinity failed``) and never runs."""
        if all(self.labels.get(k) == v for k, v in pod.node_selector.items()):
            self.rejected.pop(pod.uid, None)
            return False
        if pod.uid not in self.rejected:
            message = "Pod was rejected: Predicate NodeAffinity failed"
            self.rejected[pod.uid] = ("NodeAffinity", message)
            self.recorder.event(
                ObjectRef(pod.namespace, pod.name, pod.uid),
                EventType.WARNING,
                EventReason.NODE_AFFINITY,
                "Predicate NodeAffinity failed",
            )
            log.info("pod.rejected", pod=f"{pod.namespace}/{pod.name}", reason="NodeAffinity")
        return True

    # -- static pods ---------------------------------------------------------------------

    async def _watch_static(self) -> None:
        while True:
            await self.scan_static_pods()
            await anyio.sleep(self.options.static_poll_interval)

    async def scan_static_pods(self) -> None:
        """Take the current files of ``staticPodPath``: pods added, changed or removed."""
        folder = self.config.static_pod_path
        if not folder:
            return
        contents = await anyio.to_thread.run_sync(read_folder, Path(folder))
        async with self._lock:
            before = self._pod_keys()
            if self.static.update(contents):
                await self._sync_pods(before)
                mirrors = {
                    key: mirror_manifest(self.objects.admission.always_pull(pod))
                    for key, pod in self.static.pods().items()
                }
                self.objects.set_mirror_pods(mirrors)
                self._status_soon()

    # -- image GC ------------------------------------------------------------------------

    async def _image_gc(self) -> None:
        """Run image GC every 5 minutes against the store filesystem's capacity."""
        while True:
            await anyio.sleep(self.options.gc_period)
            await self.run_image_gc()

    async def run_image_gc(self) -> GCResult | None:
        """One GC pass (``imageGCHighThresholdPercent`` etc.) against the image filesystem.

        Failures are Warning events on the Node (``ImageGCFailed``, ``FreeDiskSpaceFailed``, as
        the kubelet records them), never fatal; every freed image counts in
        ``kubelet_image_garbage_collected_total{reason}`` and as a ``remove_image`` operation.
        """
        assert self.store is not None
        store = self.store
        started = anyio.current_time()
        try:
            for ref in self.options.pinned_images:
                await store.pin(ref)  # containerd's pinned label (the sandbox image)
            capacity, other = await self._image_fs(store)
            policy = GCPolicy.from_config(self.config, capacity, other)
            result = await garbage_collect(store, policy)
        except KubeletSimError as exc:
            log.warning("image_gc.failed", error=str(exc))
            self._node_event(EventReason.IMAGE_GC_FAILED, f"Image garbage collection failed: {exc}")
            return None
        per_image = (anyio.current_time() - started) / max(1, len(result.freed))
        for freed in result.freed:
            self.metrics.image_garbage_collected(str(freed.reason))
            self.metrics.runtime_operation("remove_image", per_image, False)
        for event in result.events:
            self._node_event(EventReason(event.reason), event.message)
        if result.freed:
            log.info("image_gc.freed", images=len(result.freed), bytes=result.bytes_freed)
        return result

    async def _image_fs(self, store: Store) -> tuple[int, int]:
        """Capacity of the image filesystem and the bytes on it used by anything but the store.

        With ``gc_capacity_bytes`` the store is a simulated imagefs of that size, used only by
        it; otherwise the filesystem the store lives on is measured (``ImageFsInfo``): usage is
        what statvfs says is used, not just the images.
        """
        if self.options.gc_capacity_bytes is not None:
            return self.options.gc_capacity_bytes, 0
        stat = await anyio.to_thread.run_sync(os.statvfs, str(store.root))
        capacity = stat.f_blocks * stat.f_frsize
        used = capacity - stat.f_bavail * stat.f_frsize
        return capacity, max(0, used - await store.usage())

    def _node_event(self, reason: EventReason, message: str) -> None:
        node = ObjectRef("", self.options.node_name, self.options.node_name, kind="Node")
        self.recorder.event(node, EventType.WARNING, reason, message)

    # -- lifecycle -----------------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Run until cancelled; ``task_status`` gets the API port once ready."""
        opts = self.options
        listener = await anyio.create_tcp_listener(
            local_host=opts.listen_host, local_port=opts.listen_port, reuse_port=False
        )
        self.port = int(listener.extra(anyio.abc.SocketAttribute.local_port))
        node_options = NodeOptions(
            platform=self.platform,
            hosts_dir=opts.hosts_dir,
            image_credential_provider_config=opts.image_credential_provider_config,
            image_credential_provider_bin_dir=opts.image_credential_provider_bin_dir,
            # backOffPeriod 10 s jittered by 0.5, as the kubelet's pod workers requeue
            engine=EngineSettings(resync_period=10.0, resync_jitter=0.5),
            node_name=opts.node_name,
        )
        if opts.runtimes is not None:
            node_options = replace(node_options, runtimes=opts.runtimes)
        parts = NodeParts(
            recorder=self.recorder,
            metrics=self.metrics,
            credential_metrics=self.credential_metrics,
            secrets=self.objects,
            objects=self.objects,
            runtime_classes=self.objects.get_runtime_class,
        )
        static = self.config.static_pod_path
        if static and not await anyio.Path(static).exists():
            # As the kubelet: not fatal; the folder is watched and picked up once it appears.
            log.warning("static.path_missing", static_pod_path=static)
        async with open_node(self.config, NodePaths(opts.root), node_options, parts) as node:
            assert node.store is not None
            self.store = node.store
            self.node = node
            async with self.node.running(), anyio.create_task_group() as tg:
                self._tasks = tg
                self._wall_offset = time.time() - anyio.current_time()
                await self.scan_static_pods()
                tg.start_soon(self._watch_static)
                tg.start_soon(self._image_gc)
                tg.start_soon(self._status_manager)
                api = API(self, kube=KubeAPI(self, clock=time.time))
                tg.start_soon(HTTPServer(api).serve, listener)
                self._ready = True
                log.info(
                    "daemon.ready",
                    listen=f"{opts.listen_host}:{self.port}",
                    root=str(opts.root),
                    platform=str(self.platform),
                    static_pod_path=self.config.static_pod_path,
                )
                task_status.started(self.port)
                try:
                    await anyio.sleep_forever()
                finally:
                    self._ready = False
                    self._tasks = None
                    tg.cancel_scope.cancel()
        log.info("daemon.stopped")


def _metadata_only(old: Pod, new: Pod) -> bool:
    """The two differ in labels or annotations only (``kubectl label``, ``annotate``)."""
    empty: dict[str, str] = {}
    return replace(old, labels=empty, annotations=empty) == replace(
        new, labels=empty, annotations=empty
    )


def raise_open_file_limit() -> tuple[int, int]:
    """Raise this process's soft limit on open files to its hard limit, as daemons do (the
    default soft limit of 1024 is ~1,000 idle API connections); returns (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.warning("daemon.file_limit_unchanged", soft=soft, hard=hard, error=str(exc))
            return soft, soft
        return soft, hard
    return soft, soft
