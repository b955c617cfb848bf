"""A fake container runtime and node builder for engine tests in virtual time (no threads, no I/O)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import anyio
from prometheus_client import CollectorRegistry

from kubelet_sim.config.kubelet import KubeletConfiguration
from kubelet_sim.core.credentials import Credentials
from kubelet_sim.core.pods import ContainerKind, PodRef, PodSpec, PulledImage, PullRequest
from kubelet_sim.core.policy import PullPolicy, default_pull_policy
from kubelet_sim.core.reference import ImageReference
from kubelet_sim.engine.ports import ProgressFn, ResolvedHook
from kubelet_sim.engine.workers import EngineSettings
from kubelet_sim.errors import RegistryError
from kubelet_sim.node.builder import Node
from kubelet_sim.telemetry.events import Event, EventRecorder
from kubelet_sim.telemetry.metrics import PullMetrics


@dataclass(frozen=True, slots=True)
class FakeStatus:
    image_id: str
    repo_digests: tuple[str, ...]
    size: int


@dataclass
class FakeRuntime:
    """Pulls take ``pull_seconds`` of virtual time; ``failing`` images fail ``fail_times`` times."""

    pull_seconds: float = 2.0
    size: int = 1234
    failing: dict[str, int] = field(default_factory=dict)
    images: dict[tuple[str, str], FakeStatus] = field(default_factory=dict)
    calls: list[tuple[float, str]] = field(default_factory=list)
    finished: list[tuple[float, str]] = field(default_factory=list)
    in_flight: int = 0
    peak: int = 0
    in_use: dict[tuple[str, str], int] = field(default_factory=dict)

    def add(self, ref: str, handler: str = "", image_id: str = "") -> FakeStatus:
        status = FakeStatus(image_id or f"sha256:{abs(hash(ref)):064d}"[:71], (f"{ref}@x",), 99)
        self.images[(ref, handler)] = status
        return status

    async def image_status(self, image: str, runtime_handler: str = "") -> FakeStatus | None:
        return self.images.get((image, runtime_handler))

    async def pull_image(
        self,
        ref: ImageReference,
        *,
        runtime_handler: str = "",
        credentials: Sequence[Credentials] = (),
        progress: ProgressFn | None = None,
        on_resolved: ResolvedHook | None = None,
    ) -> PulledImage:
        name = str(ref)
        self.calls.append((anyio.current_time(), name))
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await anyio.sleep(self.pull_seconds)
        finally:
            self.in_flight -= 1
        self.finished.append((anyio.current_time(), name))
        remaining = self.failing.get(name, 0)
        if remaining:
            self.failing[name] = remaining - 1
            raise RegistryError(f"{name}: not found", code="MANIFEST_UNKNOWN", status=404)
        status = self.add(name, runtime_handler)
        if on_resolved is not None:
            await on_resolved(status.image_id, "")
        return PulledImage(
            image_ref=status.image_id,
            repo_digest=status.repo_digests[0],
            manifest_digest="sha256:" + "0" * 64,
            platform="linux/amd64",
            size=self.size,
        )

    async def mark_in_use(self, image_id: str, runtime_handler: str = "") -> None:
        key = (image_id, runtime_handler)
        self.in_use[key] = self.in_use.get(key, 0) + 1

    def release(self, image_id: str, runtime_handler: str = "") -> None:
        self.in_use[(image_id, runtime_handler)] -= 1


@dataclass
class Harness:
    node: Node
    runtime: FakeRuntime
    registry: CollectorRegistry
    emitted: list[tuple[float, str, str, str]]

    def reasons(self, field_path: str | None = None) -> list[str]:
        return [r for _, path, r, _ in self.emitted if field_path in (None, path)]


def make_node(
    runtime: FakeRuntime | None = None,
    *,
    config: KubeletConfiguration | None = None,
    settings: EngineSettings | None = None,
) -> Harness:
    runtime = runtime or FakeRuntime()
    registry = CollectorRegistry()
    recorder = EventRecorder(clock=anyio.current_time, spam_filter=False)
    emitted: list[tuple[float, str, str, str]] = []

    def on_event(event: Event) -> None:
        emitted.append(
            (
                anyio.current_time(),
                event.involved_object.field_path,
                str(event.reason),
                event.message,
            )
        )

    recorder.subscribe(on_event)
    node = Node.build(
        config or KubeletConfiguration.default(),
        runtime,
        recorder,
        PullMetrics(registry),
        settings=settings or EngineSettings(),
    )
    return Harness(node, runtime, registry, emitted)


def pod(
    name: str,
    *images: str,
    init: Sequence[str] = (),
    policy: PullPolicy | None = None,
    namespace: str = "default",
) -> PodSpec:
    ref = PodRef(namespace, name, f"uid-{name}")

    def request(i: int, image: str, kind: ContainerKind) -> PullRequest:
        prefix = "init" if kind is ContainerKind.INIT else "c"
        return PullRequest(
            pod=ref,
            container=f"{prefix}{i}",
            image=image,
            policy=policy or default_pull_policy(image),
            kind=kind,
        )

    return PodSpec(
        ref=ref,
        init_containers=tuple(request(i, im, ContainerKind.INIT) for i, im in enumerate(init)),
        containers=tuple(request(i, im, ContainerKind.APP) for i, im in enumerate(images)),
    )
