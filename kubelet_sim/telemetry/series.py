"""Prometheus counters, gauges and histograms for the event loop's hot paths.

prometheus_client's metric objects take a lock and check the metric's state on every update
(``inc`` is five calls deep), which every cache-hit decision paid about ten times. These keep a
plain float per series: every update is made by the one event-loop thread that owns the node, so
there is nothing to lock, and a scrape from another thread (``start_http_server``) reads floats
the GIL hands over whole. A family is exposed through :class:`SeriesCollector`, registered into a
``CollectorRegistry``, as the same samples prometheus_client would give minus its ``*_created``
ones: counters as ``NAME_total``, histograms as cumulative ``NAME_bucket{le=...}`` (``le`` spelled
by prometheus_client's own ``floatToGoString``), ``NAME_count`` and ``NAME_sum``.
"""

from __future__ import annotations

import bisect
import functools
import math
import re
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric


@functools.cache
def _prometheus() -> tuple[type[Metric], Callable[[float], str]]:
    """prometheus_client's ``Metric`` and ``floatToGoString``, imported when series are first
    registered (a ``CollectorRegistry`` describes what it registers) or scraped, not with this
    module: a one-shot pull keeps its series but never exposes them, and the import (its HTTP
    server modules with it) was 20 ms and 1.5 MiB of the pull's start-up."""
    from prometheus_client.metrics_core import Metric
    from prometheus_client.utils import floatToGoString

    return Metric, floatToGoString  # floatToGoString is untyped upstream: float in, str out


__all__ = [
    "Counter",
    "CounterChild",
    "Gauge",
    "GaugeChild",
    "Histogram",
    "HistogramChild",
    "SeriesCollector",
]


class CounterChild:
    """One counter series: ``value`` only goes up."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount``.

        Raises:
            ValueError: a negative amount (a counter never goes down).
        """
        if amount < 0:
            raise ValueError(
                f"counters can only be incremented by non-negative amounts, got {amount}"
            )
        self.value += amount


class GaugeChild:
    """One gauge series."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def set(self, value: float) -> None:
        self.value = float(value)

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount


class HistogramChild:
    """One histogram series: a count per bucket (not cumulative) and the sum."""

    __slots__ = ("_bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0.0] * len(bounds)
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        """Count ``amount`` into the first bucket whose upper bound is >= it."""
        self.sum += amount
        if amount == amount:  # NaN is in no bucket (prometheus_client's ``amount <= bound``)
            self.counts[bisect.bisect_left(self._bounds, amount)] += 1.0


C = TypeVar("C", CounterChild, GaugeChild, HistogramChild)
V = TypeVar("V", CounterChild, GaugeChild)

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


class _Family(Generic[C]):
    """A named family of series, one per tuple of label values, in the order they were made."""

    _type = ""
    _reserved: frozenset[str] = frozenset()

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        if not _METRIC_NAME.fullmatch(name):
            raise ValueError(f"invalid metric name {name!r}")
        for label in labelnames:
            if not _LABEL_NAME.fullmatch(label) or label.startswith("__"):
                raise ValueError(f"{name}: invalid label name {label!r}")
            if label in self._reserved:
                raise ValueError(f"{name}: label name {label!r} is reserved for this type")
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], C] = {}
        if not self.labelnames:
            self._children[()] = self._new_child()

    def _new_child(self) -> C:
        raise NotImplementedError

    def labels(self, *values: str) -> C:
        """The series for ``values`` (one per label name), made on first use.

        Raises:
            ValueError: the wrong number of values.
        """
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self.labelnames) or not values:
                raise ValueError(
                    f"{self.name} takes {len(self.labelnames)} label values "
                    f"{self.labelnames}, got {values!r}"
                )
            key = tuple(str(v) for v in values)  # as prometheus_client: the value's str()
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = self._new_child()
        elif not values:
            raise ValueError(f"{self.name} has no labels: use only")
        return child

    @property
    def only(self) -> C:
        """The one series of a family without labels.

        Raises:
            ValueError: the family has labels.
        """
        if self.labelnames:
            raise ValueError(f"{self.name} has labels {self.labelnames}: use labels()")
        return self._children[()]

    def _metric(self) -> Metric:
        return _prometheus()[0](self.name, self.documentation, self._type)

    def collect(self) -> Metric:
        raise NotImplementedError


class _ValueFamily(_Family[V]):
    """A family whose series are one value each, exposed as ``NAME`` + :attr:`_suffix`."""

    _suffix = ""

    def collect(self) -> Metric:
        metric = self._metric()
        name = self.name + self._suffix
        for values, child in dict.copy(self._children).items():
            metric.add_sample(name, dict(zip(self.labelnames, values, strict=True)), child.value)
        return metric


class Counter(_ValueFamily[CounterChild]):
    """A counter family; ``name`` is given without or with ``_total`` (exposed with it)."""

    _type = "counter"
    _suffix = "_total"

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name.removesuffix("_total"), documentation, labelnames)

    def _new_child(self) -> CounterChild:
        return CounterChild()


class Gauge(_ValueFamily[GaugeChild]):
    _type = "gauge"

    def _new_child(self) -> GaugeChild:
        return GaugeChild()


class Histogram(_Family[HistogramChild]):
    """A histogram family over sorted ``buckets`` (``+Inf`` is added when missing).

    Raises:
        ValueError: buckets out of order, or fewer than two with ``+Inf``.
    """

    _type = "histogram"
    _reserved = frozenset({"le"})

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Iterable[float],
    ) -> None:
        bounds = [float(b) for b in buckets]
        if bounds != sorted(bounds):
            raise ValueError(f"{name}: buckets not in sorted order: {bounds}")
        if not bounds or bounds[-1] != math.inf:
            bounds.append(math.inf)
        if len(bounds) < 2:
            raise ValueError(f"{name}: a histogram needs at least two buckets")
        self._bounds = tuple(bounds)
        self._le: tuple[str, ...] = ()  # the bounds as exposed, spelled when first collected
        super().__init__(name, documentation, labelnames)

    def _new_child(self) -> HistogramChild:
        return HistogramChild(self._bounds)

    def collect(self) -> Metric:
        metric = self._metric()
        if not self._le:
            self._le = tuple(_prometheus()[1](b) for b in self._bounds)
        for values, child in dict.copy(self._children).items():
            labels = dict(zip(self.labelnames, values, strict=True))
            counts, total = list(child.counts), child.sum  # one observation may land between
            acc = 0.0
            for le, n in zip(self._le, counts, strict=True):
                acc += n
                metric.add_sample(self.name + "_bucket", {**labels, "le": le}, acc)
            metric.add_sample(self.name + "_count", labels, acc)
            if self._bounds[0] >= 0:  # as prometheus_client: no sum with a negative bucket
                metric.add_sample(self.name + "_sum", labels, total)
        return metric


Family = Counter | Gauge | Histogram


class SeriesCollector:
    """Exposes families in a ``CollectorRegistry``, in the order given."""

    def __init__(self, families: Iterable[Family]) -> None:
        self._families = tuple(families)
        names = [f.name for f in self._families]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"series named twice: {', '.join(duplicates)}")

    def collect(self) -> Iterable[Metric]:
        return [family.collect() for family in self._families]

    def describe(self) -> Iterable[Metric]:
        return [family._metric() for family in self._families]

    def register(self, registry: CollectorRegistry) -> None:
        """Register into ``registry``.

        Raises:
            ValueError: ``registry`` already holds one of these series.
        """
        registry.register(self)
