"""Prometheus metrics of the pull engine: the kubelet's own series, plus ``kubelet_sim_`` ones.

Upstream series keep their names, help texts (with component-base's ``[ALPHA]`` prefix), labels
and buckets: ``pkg/kubelet/metrics/metrics.go`` (``image_pull_duration_seconds``,
``runtime_operations_*``, ``GetImageSizeBucket``), ``pkg/kubelet/images/metrics.go``
(``image_manager_ensure_image_requests_total``) and ``kuberuntime/instrumented_services.go``
(one ``runtime_operations`` sample per CRI call, an ``errors`` sample when it failed).

Everything is registered into an injected ``CollectorRegistry``, never the global one, through a
collector that leaves out prometheus_client's ``*_created`` series so the exposition has exactly
the upstream families. Label values are low-cardinality by construction: no image, pod or
registry name ever becomes a label; methods, status codes and retry reasons come from fixed sets
and anything else is ``other``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric

from kubelet_sim.core.durations import MILLISECOND, seconds_to_ns

__all__ = [
    "IMAGE_PULL_DURATION_BUCKETS",
    "IMAGE_SIZE_BUCKETS",
    "RUNTIME_OPERATIONS",
    "RUNTIME_OPERATION_BUCKETS",
    "PullMetrics",
    "WithoutCreated",
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


class WithoutCreated:
    """Exposes a private registry's families minus prometheus_client's ``*_created`` samples.

    Register it into the shared registry (``registry.register(WithoutCreated(inner))``) so the
    exposition has exactly the upstream families.
    """

    def __init__(self, inner: CollectorRegistry) -> None:
        self._inner = inner

    def collect(self) -> Iterable[Metric]:
        for family in self._inner.collect():
            out = Metric(family.name, family.documentation, family.type, family.unit)
            out.samples = [s for s in family.samples if not s.name.endswith("_created")]
            yield out

    def describe(self) -> Iterable[Metric]:
        return self.collect()


class PullMetrics:
    """Everything the pull engine observes, as Prometheus series in ``registry``.

    It is also the registry transport's ``RequestObserver`` (``registry_response`` and
    ``registry_retry``).

    Raises:
        ValueError: at construction, when ``registry`` already holds these series.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        inner = CollectorRegistry()
        # (family, label values) -> child: ``labels()`` takes a lock and validates its values on
        # every call, which a fleet of simulated nodes pays millions of times.
        self._children: dict[tuple[object, tuple[str, ...]], Any] = {}
        alpha = "[ALPHA] "
        self._image_pull_duration = Histogram(
            "kubelet_image_pull_duration_seconds",
            alpha + "Duration in seconds to pull an image.",
            ["image_size_in_bytes"],
            buckets=IMAGE_PULL_DURATION_BUCKETS,
            registry=inner,
        )
        self._ensure_requests = Counter(
            "kubelet_image_manager_ensure_image_requests_total",
            alpha + "Number of ensure-image requests processed by the kubelet.",
            ["pull_policy", "present_locally", "pull_required"],
            registry=inner,
        )
        self._runtime_ops = Counter(
            "kubelet_runtime_operations_total",
            alpha + "Cumulative number of runtime operations by operation type.",
            ["operation_type"],
            registry=inner,
        )
        self._runtime_errors = Counter(
            "kubelet_runtime_operations_errors_total",
            alpha + "Cumulative number of runtime operation errors by operation type.",
            ["operation_type"],
            registry=inner,
        )
        self._runtime_duration = Histogram(
            "kubelet_runtime_operations_duration_seconds",
            alpha + "Duration in seconds of runtime operations. Broken down by operation type.",
            ["operation_type"],
            buckets=RUNTIME_OPERATION_BUCKETS,
            registry=inner,
        )
        self._queue_depth = Gauge(
            "kubelet_sim_pull_queue_depth",
            "Pull requests waiting for a puller (the serial puller's channel, or the semaphore).",
            registry=inner,
        )
        self._in_flight = Gauge(
            "kubelet_sim_pulls_in_flight", "Image pulls currently running.", registry=inner
        )
        self._bytes = Counter(
            "kubelet_sim_pull_bytes_total",
            "Bytes downloaded from registries (blobs and manifests).",
            registry=inner,
        )
        self._requests = Counter(
            "kubelet_sim_registry_requests_total",
            "Registry HTTP responses by method, status code and status class.",
            ["method", "code", "class"],
            registry=inner,
        )
        self._request_duration = Histogram(
            "kubelet_sim_registry_request_duration_seconds",
            "Time from sending a registry request to its response headers.",
            ["method"],
            buckets=_REGISTRY_DURATION_BUCKETS,
            registry=inner,
        )
        self._retries = Counter(
            "kubelet_sim_registry_retries_total",
            "Registry requests retried, by reason (status code or transport error).",
            ["reason"],
            registry=inner,
        )
        self._images_collected = Counter(
            "kubelet_image_garbage_collected_total",
            alpha + "Total number of images garbage collected by the kubelet, "
            "whether through disk usage or image age.",
            ["reason"],
            registry=inner,
        )
        self._cache_hits = Counter(
            "kubelet_sim_image_cache_hits_total",
            "Ensure-image requests answered by an image already present and accessible.",
            registry=inner,
        )
        self._backoff_entries = Gauge(
            "kubelet_sim_backoff_entries", "Keys held by the image-pull backoff.", registry=inner
        )
        self._throughput = Histogram(
            "kubelet_sim_pull_throughput_bytes_per_second",
            "Image size divided by pull duration, for successful pulls of a known size.",
            buckets=_THROUGHPUT_BUCKETS,
            registry=inner,
        )
        self._registry = registry
        self._collector = WithoutCreated(inner)
        registry.register(self._collector)

    def _child(self, family: MetricWrapperBase, *values: str) -> Any:
        """``family.labels(*values)``, made once per label set."""
        key = (family, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = family.labels(*values)
        return child

    def unregister(self) -> None:
        """Remove these series from the registry (a daemon restart, a test)."""
        self._registry.unregister(self._collector)

    # -- the kubelet's own series ------------------------------------------------------------

    def ensure_image_request(
        self, policy: str, present: bool | None, pull_required: bool | None
    ) -> None:
        """One ``EnsureImageExists`` call (``recordEnsureImageRequest``); None means ``unknown``.

        Raises:
            ValueError: ``policy`` is not Always, IfNotPresent or Never (any case).
        """
        lowered = policy.lower()
        if lowered not in _PULL_POLICIES:
            raise ValueError(f"unknown pull policy {policy!r} for the ensure-image metric")
        self._child(
            self._ensure_requests, lowered, _bool_label(present), _bool_label(pull_required)
        ).inc()

    def image_garbage_collected(self, reason: str) -> None:
        """One image freed by image GC (``reason``: ``age`` or ``space``).

        Raises:
            ValueError: another reason.
        """
        if reason not in ("age", "space"):
            raise ValueError(f"unknown image GC reason {reason!r}")
        self._child(self._images_collected, reason).inc()

    def image_pull_duration(self, seconds: float, size: int) -> None:
        """A successful pull: total time including queueing, truncated to ms as upstream does."""
        self._child(self._image_pull_duration, image_size_bucket(size)).observe(
            _truncated_ms(seconds)
        )

    def runtime_operation(self, operation_type: str, duration: float, error: bool) -> None:
        """One image-service call (``recordOperation`` plus ``recordError``).

        Raises:
            ValueError: an ``operation_type`` outside :data:`RUNTIME_OPERATIONS`.
        """
        if operation_type not in RUNTIME_OPERATIONS:
            raise ValueError(f"unknown runtime operation_type {operation_type!r}")
        self._child(self._runtime_ops, operation_type).inc()
        self._child(self._runtime_duration, operation_type).observe(max(duration, 0.0))
        if error:
            self._child(self._runtime_errors, operation_type).inc()

    # -- pulls -------------------------------------------------------------------------------

    def pull_started(self) -> None:
        """A ``PullImage`` call begins (one per credential tried)."""
        self._in_flight.inc()

    def pull_finished(self, duration: float, size: int, error: bool) -> None:
        """The ``PullImage`` call begun by :meth:`pull_started` ended after ``duration`` seconds.

        Counts a ``pull_image`` runtime operation, and on success with a known size observes the
        throughput.
        """
        self._in_flight.dec()
        self.runtime_operation("pull_image", duration, error)
        if not error and size > 0 and duration > 0:
            self._throughput.observe(size / duration)

    def bytes_pulled(self, n: int) -> None:
        if n > 0:
            self._bytes.inc(n)

    def set_queue_depth(self, n: int) -> None:
        self._queue_depth.set(n)

    def set_backoff_entries(self, n: int) -> None:
        self._backoff_entries.set(n)

    def pull_attempted(self, image: str, seconds: float, cause: str) -> None:
        """Nothing: an image name is no label (one series per image would be unbounded); the
        bench counts failed pulls by cause (``workloads.observe``)."""

    def cache_hit(self) -> None:
        self._cache_hits.inc()

    # -- the registry transport's RequestObserver --------------------------------------------

    def registry_response(self, method: str, status: int | None, duration: float) -> None:
        """One registry answer; ``status`` None means no answer at all."""
        method = method.upper() if method.upper() in _METHODS else OTHER
        if status is None:
            code = status_class = "none"
        else:
            code = str(status) if status in _STATUS_CODES else OTHER
            status_class = f"{status // 100}xx" if 100 <= status <= 599 else OTHER
        self._child(self._requests, method, code, status_class).inc()
        self._child(self._request_duration, method).observe(max(duration, 0.0))

    def registry_retry(self, reason: str) -> None:
        """A registry request is about to be retried for ``reason``."""
        self._child(self._retries, reason if reason in _RETRY_REASONS else OTHER).inc()
