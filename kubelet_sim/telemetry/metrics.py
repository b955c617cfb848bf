"""Prometheus metrics of the pull engine: the kubelet's own series, plus ``kubelet_sim_`` ones.

Upstream series keep their names, help texts (with component-base's ``[ALPHA]`` prefix), labels
and buckets: ``pkg/kubelet/metrics/metrics.go`` (``image_pull_duration_seconds``,
``runtime_operations_*``, ``GetImageSizeBucket``), ``pkg/kubelet/images/metrics.go``
(``image_manager_ensure_image_requests_total``) and ``kuberuntime/instrumented_services.go``
(one ``runtime_operations`` sample per CRI call, an ``errors`` sample when it failed).

Everything is registered into an injected ``CollectorRegistry``, never the global one, as the
lock-free series of :mod:`kubelet_sim.telemetry.series` (one event-loop thread updates them; a
cache-hit decision makes five updates), without prometheus_client's ``*_created`` samples, so the
exposition has exactly the upstream families. Label values are low-cardinality by construction:
no image, pod or registry name ever becomes a label; methods, status codes and retry reasons
come from fixed sets and anything else is ``other``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from kubelet_sim.core.durations import MILLISECOND, seconds_to_ns
from kubelet_sim.telemetry.series import (
    Counter,
    CounterChild,
    Gauge,
    Histogram,
    HistogramChild,
    SeriesCollector,
)

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = [
    "IMAGE_PULL_DURATION_BUCKETS",
    "IMAGE_SIZE_BUCKETS",
    "RUNTIME_OPERATIONS",
    "RUNTIME_OPERATION_BUCKETS",
    "PullMetrics",
    "exponential_buckets",
    "image_size_bucket",
]

IMAGE_PULL_DURATION_BUCKETS: Final = (
    1.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 180.0, 240.0, 300.0,
    360.0, 480.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0,
)  # fmt: skip
"""``imagePullDurationBuckets``."""

_MI: Final = 1024 * 1024
_GI: Final = 1024 * _MI
IMAGE_SIZE_BUCKETS: Final = (
    (0, "0-10MB"),
    (10 * _MI, "10MB-100MB"),
    (100 * _MI, "100MB-500MB"),
    (500 * _MI, "500MB-1GB"),
    (1 * _GI, "1GB-5GB"),
    (5 * _GI, "5GB-10GB"),
    (10 * _GI, "10GB-20GB"),
    (20 * _GI, "20GB-30GB"),
    (30 * _GI, "30GB-40GB"),
    (40 * _GI, "40GB-60GB"),
    (60 * _GI, "60GB-100GB"),
    (100 * _GI, "GT100GB"),
)
"""``imageSizeBuckets``: (lower bound in bytes, exclusive; label)."""


def exponential_buckets(start: float, factor: float, count: int) -> tuple[float, ...]:
    """``metrics.ExponentialBuckets``, multiplying step by step as Go does (same float values)."""
    if count < 1 or start <= 0 or factor <= 1:
        raise ValueError(
            f"invalid exponential buckets: start={start}, factor={factor}, count={count}"
        )
    out = []
    for _ in range(count):
        out.append(start)
        start *= factor
    return tuple(out)


RUNTIME_OPERATION_BUCKETS: Final = exponential_buckets(0.005, 2.5, 14)
"""``runtime_operations_duration_seconds`` buckets: ``ExponentialBuckets(.005, 2.5, 14)``."""

RUNTIME_OPERATIONS: Final = frozenset(
    {"pull_image", "image_status", "list_images", "remove_image", "image_fs_info"}
)
"""The image-service ``operation_type`` values of ``instrumented_services.go``."""

_PULL_POLICIES: Final = frozenset({"always", "ifnotpresent", "never"})
_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"})
_STATUS_CODES: Final = frozenset(
    {200, 201, 202, 204, 206, 301, 302, 303, 307, 308, 400, 401, 403, 404, 405, 408, 409, 413,
     416, 429, 500, 502, 503, 504}
)  # fmt: skip
# The transport reports retryable statuses as their code and transport errors by class name.
_RETRY_REASONS: Final = frozenset(
    {"408", "429", "500", "502", "503", "504", "ConnectError", "ConnectTimeout", "ReadError",
     "ReadTimeout", "WriteError", "WriteTimeout", "PoolTimeout", "CloseError", "NetworkError",
     "TimeoutException", "RemoteProtocolError", "LocalProtocolError", "ProtocolError",
     "ProxyError", "SSLError", "SSLEOFError", "SSLZeroReturnError"}
)  # fmt: skip
OTHER: Final = "other"

_REGISTRY_DURATION_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
)  # fmt: skip
_THROUGHPUT_BUCKETS: Final = exponential_buckets(64 * 1024, 4.0, 10)  # 64 KiB/s .. 16 GiB/s


def image_size_bucket(size: int) -> str:
    """``GetImageSizeBucket``: ``N/A`` for 0, else the last bucket whose lower bound is < ``size``.

    Raises:
        ValueError: a negative size (upstream's is a ``uint64``).
    """
    if size < 0:
        raise ValueError(f"image size must not be negative, got {size}")
    if size == 0:
        return "N/A"
    for lower, label in reversed(IMAGE_SIZE_BUCKETS):
        if size > lower:
            return label
    raise AssertionError("unreachable: every positive size is above the 0 bound")


def _bool_label(value: bool | None) -> str:
    """``strconv.FormatBool`` of a ``*bool``, ``unknown`` for nil."""
    return "unknown" if value is None else str(value).lower()


def _truncated_ms(seconds: float) -> float:
    ns = seconds_to_ns(max(seconds, 0.0))
    return (ns - ns % MILLISECOND) / 1e9


class PullMetrics:
    """Everything the pull engine observes, as Prometheus series in ``registry``.

    It is also the registry transport's ``RequestObserver`` (``registry_response`` and
    ``registry_retry``).

    Without a ``registry`` the series are kept but exposed nowhere (a one-shot pull, which
    nothing scrapes, then never imports prometheus_client).

    Raises:
        ValueError: at construction, when ``registry`` already holds these series.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        alpha = "[ALPHA] "
        self._image_pull_duration = Histogram(
            "kubelet_image_pull_duration_seconds",
            alpha + "Duration in seconds to pull an image.",
            ["image_size_in_bytes"],
            buckets=IMAGE_PULL_DURATION_BUCKETS,
        )
        self._ensure_requests = Counter(
            "kubelet_image_manager_ensure_image_requests_total",
            alpha + "Number of ensure-image requests processed by the kubelet.",
            ["pull_policy", "present_locally", "pull_required"],
        )
        self._runtime_ops = Counter(
            "kubelet_runtime_operations_total",
            alpha + "Cumulative number of runtime operations by operation type.",
            ["operation_type"],
        )
        self._runtime_errors = Counter(
            "kubelet_runtime_operations_errors_total",
            alpha + "Cumulative number of runtime operation errors by operation type.",
            ["operation_type"],
        )
        self._runtime_duration = Histogram(
            "kubelet_runtime_operations_duration_seconds",
            alpha + "Duration in seconds of runtime operations. Broken down by operation type.",
            ["operation_type"],
            buckets=RUNTIME_OPERATION_BUCKETS,
        )
        self._queue_depth = Gauge(
            "kubelet_sim_pull_queue_depth",
            "Pull requests waiting for a puller (the serial puller's channel, or the semaphore).",
        )
        self._in_flight = Gauge("kubelet_sim_pulls_in_flight", "Image pulls currently running.")
        self._bytes = Counter(
            "kubelet_sim_pull_bytes_total",
            "Bytes downloaded from registries (blobs and manifests).",
        )
        self._requests = Counter(
            "kubelet_sim_registry_requests_total",
            "Registry HTTP responses by method, status code and status class.",
            ["method", "code", "class"],
        )
        self._request_duration = Histogram(
            "kubelet_sim_registry_request_duration_seconds",
            "Time from sending a registry request to its response headers.",
            ["method"],
            buckets=_REGISTRY_DURATION_BUCKETS,
        )
        self._retries = Counter(
            "kubelet_sim_registry_retries_total",
            "Registry requests retried, by reason (status code or transport error).",
            ["reason"],
        )
        self._images_collected = Counter(
            "kubelet_image_garbage_collected_total",
            alpha + "Total number of images garbage collected by the kubelet, "
            "whether through disk usage or image age.",
            ["reason"],
        )
        self._cache_hits = Counter(
            "kubelet_sim_image_cache_hits_total",
            "Ensure-image requests answered by an image already present and accessible.",
        )
        self._backoff_entries = Gauge(
            "kubelet_sim_backoff_entries", "Keys held by the image-pull backoff."
        )
        self._throughput = Histogram(
            "kubelet_sim_pull_throughput_bytes_per_second",
            "Image size divided by pull duration, for successful pulls of a known size.",
            buckets=_THROUGHPUT_BUCKETS,
        )
        self._registry = registry
        self._collector = SeriesCollector(
            (
                self._image_pull_duration,
                self._ensure_requests,
                self._runtime_ops,
                self._runtime_errors,
                self._runtime_duration,
                self._queue_depth,
                self._in_flight,
                self._bytes,
                self._requests,
                self._request_duration,
                self._retries,
                self._images_collected,
                self._cache_hits,
                self._backoff_entries,
                self._throughput,
            )
        )
        if registry is not None:
            self._collector.register(registry)
        # The hot paths' series, found by their callers' own arguments (validated once each).
        self._ensure_children: dict[tuple[str, bool | None, bool | None], CounterChild] = {}
        self._operation_children: dict[
            str, tuple[CounterChild, HistogramChild, CounterChild | None]
        ] = {}
        self._response_children: dict[
            tuple[str, int | None], tuple[CounterChild, HistogramChild]
        ] = {}
        self._hits = self._cache_hits.only
        self._backoff_gauge = self._backoff_entries.only
        self._in_flight_gauge = self._in_flight.only
        self._queue_gauge = self._queue_depth.only
        self._bytes_counter = self._bytes.only

    def unregister(self) -> None:
        """Remove these series from the registry (a daemon restart, a test)."""
        if self._registry is not None:
            self._registry.unregister(self._collector)

    # -- the kubelet's own series ------------------------------------------------------------

    def ensure_image_request(
        self, policy: str, present: bool | None, pull_required: bool | None
    ) -> None:
        """One ``EnsureImageExists`` call (``recordEnsureImageRequest``); None means ``unknown``.

        Raises:
            ValueError: ``policy`` is not Always, IfNotPresent or Never (any case).
        """
        key = (policy, present, pull_required)
        child = self._ensure_children.get(key)
        if child is None:
            lowered = policy.lower()
            if lowered not in _PULL_POLICIES:
                raise ValueError(f"unknown pull policy {policy!r} for the ensure-image metric")
            child = self._ensure_children[key] = self._ensure_requests.labels(
                lowered, _bool_label(present), _bool_label(pull_required)
            )
        child.value += 1.0

    def image_garbage_collected(self, reason: str) -> None:
        """One image freed by image GC (``reason``: ``age`` or ``space``).

        Raises:
            ValueError: another reason.
        """
        if reason not in ("age", "space"):
            raise ValueError(f"unknown image GC reason {reason!r}")
        self._images_collected.labels(reason).inc()

    def image_pull_duration(self, seconds: float, size: int) -> None:
        """A successful pull: total time including queueing, truncated to ms as upstream does."""
        self._image_pull_duration.labels(image_size_bucket(size)).observe(_truncated_ms(seconds))

    def runtime_operation(self, operation_type: str, duration: float, error: bool) -> None:
        """One image-service call (``recordOperation`` plus ``recordError``).

        Raises:
            ValueError: an ``operation_type`` outside :data:`RUNTIME_OPERATIONS`.
        """
        children = self._operation_children.get(operation_type)
        if children is None:
            if operation_type not in RUNTIME_OPERATIONS:
                raise ValueError(f"unknown runtime operation_type {operation_type!r}")
            children = self._operation_children[operation_type] = (
                self._runtime_ops.labels(operation_type),
                self._runtime_duration.labels(operation_type),
                None,
            )
        children[0].value += 1.0
        children[1].observe(max(duration, 0.0))
        if error:
            errors = children[2]
            if errors is None:  # made at the first error: no zero series before one happened
                errors = self._runtime_errors.labels(operation_type)
                self._operation_children[operation_type] = (children[0], children[1], errors)
            errors.value += 1.0

    # -- pulls -------------------------------------------------------------------------------

    def pull_started(self) -> None:
        """A ``PullImage`` call begins (one per credential tried)."""
        self._in_flight_gauge.value += 1.0

    def pull_finished(self, duration: float, size: int, error: bool) -> None:
        """The ``PullImage`` call begun by :meth:`pull_started` ended after ``duration`` seconds.

        Counts a ``pull_image`` runtime operation, and on success with a known size observes the
        throughput.
        """
        self._in_flight_gauge.value -= 1.0
        self.runtime_operation("pull_image", duration, error)
        if not error and size > 0 and duration > 0:
            self._throughput.only.observe(size / duration)

    def bytes_pulled(self, n: int) -> None:
        if n > 0:
            self._bytes_counter.value += n

    def set_queue_depth(self, n: int) -> None:
        self._queue_gauge.value = float(n)

    def set_backoff_entries(self, n: int) -> None:
        self._backoff_gauge.value = float(n)

    def pull_attempted(self, image: str, seconds: float, cause: str) -> None:
        """Nothing: an image name is no label (one series per image would be unbounded); the
        bench counts failed pulls by cause (``workloads.observe``)."""

    def cache_hit(self) -> None:
        self._hits.value += 1.0

    # -- the registry transport's RequestObserver --------------------------------------------

    def registry_response(self, method: str, status: int | None, duration: float) -> None:
        """One registry answer; ``status`` None means no answer at all."""
        key = (method, status)
        children = self._response_children.get(key)
        if children is None:
            upper = method.upper() if method.upper() in _METHODS else OTHER
            if status is None:
                code = status_class = "none"
            else:
                code = str(status) if status in _STATUS_CODES else OTHER
                status_class = f"{status // 100}xx" if 100 <= status <= 599 else OTHER
            children = self._response_children[key] = (
                self._requests.labels(upper, code, status_class),
                self._request_duration.labels(upper),
            )
        children[0].value += 1.0
        children[1].observe(max(duration, 0.0))

    def registry_retry(self, reason: str) -> None:
        """A registry request is about to be retried for ``reason``."""
        self._retries.labels(reason if reason in _RETRY_REASONS else OTHER).inc()
