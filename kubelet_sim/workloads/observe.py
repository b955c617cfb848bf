"""What the bench records per simulated node, next to the node's own Prometheus metrics and events.

:class:`NodeObserver` is the node's metrics sink (it forwards every call to the node's
:class:`~kubelet_sim.telemetry.metrics.PullMetrics`) and also keeps the run's raw observations: each pull's
start, end, size and outcome, registry answers by status, and bytes received over time.
:class:`CountingRecorder` is the node's :class:`~kubelet_sim.telemetry.events.EventRecorder` that also counts
every event the kubelet emitted by reason, including those the spam filter then dropped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from kubelet_sim.core import trace as core_trace
from kubelet_sim.engine.ports import Layer
from kubelet_sim.telemetry.events import Event, EventReason, EventRecorder, EventType, ObjectRef
from kubelet_sim.telemetry.metrics import PullMetrics
from kubelet_sim.workloads.health import CURRENT_PULL, PullTrace

SLOT = 0.1  # seconds per bin of the bytes-over-time series


@dataclass(frozen=True, slots=True)
class PullSpan:
    """One runtime ``PullImage`` call, in seconds since the run's time zero."""

    start: float
    end: float
    size: int
    error: bool
    dispatch: float | None = None  # seconds from the start to the first registry request
    requests: int = 0  # registry requests the pull made
    request_seconds: float = 0.0  # their durations, summed (request sent to answer's headers)
    image: str = ""  # the pod's image reference


@dataclass(slots=True)
class RequestTimeline:
    """Registry answers per whole second since time zero (shared by the nodes of a run):
    requests, errors (429 and 5xx) and requests without an answer (resets, timeouts)."""

    slots: dict[int, list[int]] = field(default_factory=dict)

    def add(self, t: float, status: int | None) -> None:
        slot = self.slots.get(second := max(0, int(t)))
        if slot is None:
            slot = self.slots[second] = [0, 0, 0]
        slot[0] += 1
        if status is None:
            slot[2] += 1
        elif status == 429 or status >= 500:
            slot[1] += 1

    def series(self) -> list[list[int]]:
        """``[second, requests, errors, no answer]`` for each second that had a request."""
        return [[second, *self.slots[second]] for second in sorted(self.slots)]


@dataclass(slots=True)
class BytesTimeline:
    """Bytes received per :data:`SLOT` since time zero (shared by the nodes of a run)."""

    slots: Counter[int] = field(default_factory=Counter)

    def add(self, t: float, n: int) -> None:
        if n > 0:
            self.slots[max(0, int(t / SLOT))] += n

    def series(self) -> list[tuple[float, int]]:
        """``(time, bytes in that slot)`` for every slot up to the last one with bytes."""
        if not self.slots:
            return []
        last = max(self.slots)
        return [(round(i * SLOT, 3), self.slots.get(i, 0)) for i in range(last + 1)]


class NodeObserver:
    """A node's metrics sink and transport observer that also records the bench's observations."""

    def __init__(
        self,
        metrics: PullMetrics,
        clock: Callable[[], float],
        timeline: BytesTimeline,
        *,
        t0: float = 0.0,
    ) -> None:
        self.metrics = metrics
        self.clock = clock
        self.timeline = timeline
        self.t0 = t0
        self.spans: list[PullSpan] = []
        self.cache_hits = 0
        self.ensure_requests = 0
        self.bytes = 0
        self.received = 0
        self.responses: Counter[tuple[str, str]] = Counter()
        self.retries: Counter[str] = Counter()
        self.causes: Counter[str] = Counter()
        """Pulls that failed, by :class:`~kubelet_sim.errors.Cause` (QPS refusals too)."""
        self.requests: RequestTimeline | None = None
        """Where answers are counted over time (set by the runner; shared by its nodes)."""
        self._layer_seen: dict[str, int] = {}

    def now(self) -> float:
        return self.clock() - self.t0

    # -- NodeMetrics -----------------------------------------------------------------------

    def ensure_image_request(
        self, policy: str, present: bool | None, pull_required: bool | None
    ) -> None:
        self.ensure_requests += 1
        self.metrics.ensure_image_request(policy, present, pull_required)

    def image_pull_duration(self, seconds: float, size: int) -> None:
        self.metrics.image_pull_duration(seconds, size)

    def cache_hit(self) -> None:
        self.cache_hits += 1
        self.metrics.cache_hit()

    def set_backoff_entries(self, n: int) -> None:
        self.metrics.set_backoff_entries(n)

    def runtime_operation(self, operation_type: str, duration: float, error: bool) -> None:
        self.metrics.runtime_operation(operation_type, duration, error)

    def pull_attempted(self, image: str, seconds: float, cause: str) -> None:
        if cause:
            self.causes[cause] += 1

    def pull_started(self) -> None:
        # The pull runs in this task from here on: its requests find the trace (health.py).
        engine_trace = core_trace.CURRENT.get()
        image = engine_trace.image if engine_trace is not None else ""
        CURRENT_PULL.set(PullTrace(self.clock(), image=image))
        self.metrics.pull_started()

    def pull_finished(self, duration: float, size: int, error: bool) -> None:
        end = self.now()
        trace = CURRENT_PULL.get()
        CURRENT_PULL.set(None)
        if trace is None:
            span = PullSpan(end - duration, end, size, error)
        else:
            span = PullSpan(end - duration, end, size, error, trace.dispatch, trace.requests,
                            trace.request_seconds, trace.image)  # fmt: skip
        self.spans.append(span)
        self.metrics.pull_finished(duration, size, error)

    def set_queue_depth(self, n: int) -> None:
        self.metrics.set_queue_depth(n)

    # -- the transport's RequestObserver, the bytes observer, the progress callback ---------

    def registry_response(self, method: str, status: int | None, duration: float) -> None:
        trace = CURRENT_PULL.get()
        if trace is not None:
            trace.requests += 1
            trace.request_seconds += duration
            if trace.first_request is None:
                trace.first_request = self.clock() - duration
        self.responses[(method.upper(), "none" if status is None else str(status))] += 1
        if self.requests is not None:
            self.requests.add(self.now(), status)
        self.metrics.registry_response(method, status, duration)

    def registry_retry(self, reason: str) -> None:
        self.retries[reason] += 1
        self.metrics.registry_retry(reason)

    def bytes_pulled(self, n: int) -> None:
        self.bytes += n
        self.metrics.bytes_pulled(n)

    def progress(self, image: str, desc: Layer, received: int) -> None:
        """Per-layer cumulative progress; a restart from zero counts its bytes again."""
        key = str(desc.digest)
        last = self._layer_seen.get(key, 0)
        delta = received - last if received >= last else received
        self._layer_seen[key] = received
        self.received += delta
        self.timeline.add(self.now(), delta)


class CountingRecorder(EventRecorder):
    """An :class:`EventRecorder` that counts every emitted event by reason."""

    def __init__(self, *, source_host: str = "", spam_filter: bool = True) -> None:
        super().__init__(source_host=source_host, spam_filter=spam_filter)
        self.emitted: Counter[str] = Counter()

    def event(
        self, obj: ObjectRef, type_: EventType, reason: EventReason, message: str
    ) -> Event | None:
        self.emitted[str(reason)] += 1
        return super().event(obj, type_, reason, message)

    def stored_by_reason(self) -> Counter[str]:
        """Events as stored (``kubectl get events``), each weighted by its count."""
        out: Counter[str] = Counter()
        for e in self.events():
            out[str(e.reason)] += e.count
        return out
