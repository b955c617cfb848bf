"""Serial and parallel image pullers behind one interface (``pkg/kubelet/images/puller.go``).

- :class:`SerialPuller`: a queue of capacity 10 (``maxImagePullRequests``) drained by one worker in
  strict FIFO order; callers block when it is full.
- :class:`ParallelPuller`: every request pulls at once, at most ``max_parallel`` at a time when set.

Both take a registry token from the throttle when the pull actually starts (after queueing), as the
kubelet's ``throttledImageService`` does: no token means the pull fails at once with
``pull QPS exceeded``. ``duration`` is measured from when the pull starts (dequeued).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import anyio
import anyio.abc
import structlog

from kubelet_sim.core.credentials import Credentials
from kubelet_sim.core.pods import PulledImage, PullRequest
from kubelet_sim.core.ratelimit import QPS_EXCEEDED, TokenBucket
from kubelet_sim.core.reference import ImageReference
from kubelet_sim.core.trace import CURRENT, PullTrace
from kubelet_sim.engine.ports import ProgressFn, PullObserver, ResolvedHook, RuntimeImageService
from kubelet_sim.errors import Cause, KubeletSimError, PullError, PullReason

log = structlog.get_logger(__name__)

MAX_IMAGE_PULL_REQUESTS = 10  # the serial puller's channel capacity upstream


@dataclass(frozen=True, slots=True)
class PullJob:
    """One pull handed to a puller."""

    request: PullRequest
    ref: ImageReference
    credentials: tuple[Credentials, ...] = ()
    on_resolved: ResolvedHook | None = None
    trace: PullTrace | None = None
    """What the pull is doing: told when it leaves the queue, made :data:`CURRENT` for the
    runtime call so the layers below fill it in."""


@dataclass(frozen=True, slots=True)
class PullOutcome:
    """What a puller reports back: the pulled image or the error, and the pull's own duration."""

    pulled: PulledImage | None = None
    error: BaseException | None = None
    duration: float = 0.0


class ImagePuller(Protocol):
    """Pulls one image; returns when the pull finished (successfully or not)."""

    async def pull(self, job: PullJob) -> PullOutcome: ...


@dataclass(slots=True)
class PullRunner:
    """The throttled runtime call shared by both pullers; counts pulls in flight."""

    service: RuntimeImageService
    throttle: TokenBucket | None
    observer: PullObserver
    clock: Callable[[], float]
    progress: ProgressFn | None = None
    in_flight: int = 0
    peak_in_flight: int = 0

    async def run(self, job: PullJob) -> PullOutcome:
        start = self.clock()
        if self.throttle is not None and not self.throttle.try_accept(start):
            refused = PullError(PullReason.ERR_IMAGE_PULL, QPS_EXCEEDED, cause=Cause.QPS)
            return PullOutcome(error=refused)
        if job.trace is not None:
            job.trace.started(start)
        token = CURRENT.set(job.trace)
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        self.observer.pull_started()
        pulled: PulledImage | None = None
        error: BaseException | None = None
        try:
            pulled = await self.service.pull_image(
                job.ref,
                runtime_handler=job.request.runtime_handler,
                credentials=job.credentials,
                progress=self.progress,
                on_resolved=job.on_resolved,
            )
        except (KubeletSimError, OSError) as exc:
            error = exc
        except Exception as exc:
            # A bug below must fail this pull, not kill the puller's worker for every pod.
            log.exception("pull.unexpected_error", image=str(job.ref))
            error = exc
        finally:
            CURRENT.reset(token)
            self.in_flight -= 1
            duration = self.clock() - start
            # A cancelled pull (pulled is None without an error) counts as a failed operation.
            self.observer.pull_finished(duration, pulled.size if pulled else 0, pulled is None)
        return PullOutcome(pulled=pulled, error=error, duration=duration)


class ParallelPuller:
    """Pulls in the caller's task, at most ``max_parallel`` at once (None = unlimited)."""

    def __init__(self, runner: PullRunner, max_parallel: int | None = None) -> None:
        self._runner = runner
        self.max_parallel = max_parallel
        self._limiter = anyio.CapacityLimiter(max_parallel if max_parallel else math.inf)
        self.waiting = 0

    async def pull(self, job: PullJob) -> PullOutcome:
        self.waiting += 1
        self._runner.observer.set_queue_depth(self.waiting)
        try:
            await self._limiter.acquire()
        finally:
            self.waiting -= 1
            self._runner.observer.set_queue_depth(self.waiting)
        try:
            return await self._runner.run(job)
        finally:
            self._limiter.release()

    @property
    def queue_depth(self) -> int:
        return self.waiting

    @property
    def in_flight(self) -> int:
        return self._runner.in_flight

    @property
    def peak_in_flight(self) -> int:
        return self._runner.peak_in_flight


@dataclass(slots=True)
class _Queued:
    job: PullJob
    done: anyio.Event = field(default_factory=anyio.Event)
    outcome: PullOutcome | None = None


class SerialPuller:
    """One worker, strict FIFO, a bounded queue; start it with :meth:`run` in a task group."""

    def __init__(self, runner: PullRunner, capacity: int = MAX_IMAGE_PULL_REQUESTS) -> None:
        self._runner = runner
        self._send, self._receive = anyio.create_memory_object_stream[_Queued](capacity)
        self._started = False

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """The worker loop; returns when :meth:`aclose` closes the queue."""
        self._started = True
        task_status.started()
        async with self._receive:
            async for item in self._receive:
                self._runner.observer.set_queue_depth(self.queue_depth)
                try:
                    item.outcome = await self._runner.run(item.job)
                finally:
                    item.done.set()

    async def pull(self, job: PullJob) -> PullOutcome:
        if not self._started:
            raise RuntimeError("SerialPuller.run() must be started before pulling")
        item = _Queued(job)
        await self._send.send(item)
        self._runner.observer.set_queue_depth(self.queue_depth)
        await item.done.wait()
        if item.outcome is None:
            cancelled = PullError(
                PullReason.ERR_IMAGE_PULL, "pull was cancelled", cause=Cause.CANCELLED
            )
            return PullOutcome(error=cancelled)
        return item.outcome

    async def aclose(self) -> None:
        await self._send.aclose()

    @property
    def queue_depth(self) -> int:
        return self._send.statistics().current_buffer_used

    @property
    def in_flight(self) -> int:
        return self._runner.in_flight

    @property
    def peak_in_flight(self) -> int:
        return self._runner.peak_in_flight
