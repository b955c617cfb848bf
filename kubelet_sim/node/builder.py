"""One simulated node: the engine's parts built from a KubeletConfiguration and run together.

The pull CLI, the daemon and the bench runner all build nodes here, so the wiring (throttle before
puller, serial vs parallel, metrics and events injected) exists once. A node owns a task group that
runs the serial puller's worker and the engine's dispatcher; leaving :meth:`Node.running` cancels
both, and every in-flight pull with them (the store aborts its temp files).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

import anyio

from kubelet_sim.config.kubelet import KubeletConfiguration
from kubelet_sim.core.backoff import Backoff
from kubelet_sim.core.ratelimit import TokenBucket
from kubelet_sim.engine.manager import (
    CredentialLookup,
    ImageManager,
    PulledImageVerifier,
    anonymous,
)
from kubelet_sim.engine.pullers import (
    ImagePuller,
    ParallelPuller,
    PullObserver,
    PullRunner,
    SerialPuller,
)
from kubelet_sim.engine.workers import EngineSettings, PullEngine
from kubelet_sim.runtime.images import ProgressFn, RuntimeImageService
from kubelet_sim.telemetry.events import EventRecorder

IMAGE_BACKOFF_PERIOD = 10.0  # pkg/kubelet/kubelet.go imageBackOffPeriod
MAX_IMAGE_BACKOFF = 300.0  # pkg/kubelet/kubelet.go MaxImageBackOff


class NodeMetrics(PullObserver, Protocol):
    """Everything a node reports (:class:`kubelet_sim.telemetry.metrics.PullMetrics` satisfies it)."""

    def ensure_image_request(
        self, policy: str, present: bool | None, pull_required: bool | None
    ) -> None: ...

    def image_pull_duration(self, seconds: float, size: int) -> None: ...

    def cache_hit(self) -> None: ...

    def set_backoff_entries(self, n: int) -> None: ...


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

    @classmethod
    def build(
        cls,
        config: KubeletConfiguration,
        service: RuntimeImageService,
        recorder: EventRecorder,
        metrics: NodeMetrics,
        *,
        credentials: CredentialLookup = anonymous,
        verifier: PulledImageVerifier | None = None,
        settings: EngineSettings | None = None,
        progress: ProgressFn | None = None,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = anyio.current_time,
    ) -> Node:
        """Wire a node as ``NewImageManager`` does: throttle first, then the puller."""
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
        engine = PullEngine(manager, recorder, settings=settings, clock=clock)
        return cls(config, service, recorder, metrics, runner, puller, manager, engine)

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

    @property
    def peak_in_flight(self) -> int:
        return self.runner.peak_in_flight
