"""The lock-free series expose exactly what prometheus_client's own metrics would, minus ``_created``.

Each test makes the same family twice, once with prometheus_client and once with
:mod:`kubelet_sim.telemetry.series`, applies the same updates, and compares the text expositions
line by line after dropping prometheus_client's ``*_created`` lines.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

import prometheus_client
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from kubelet_sim.telemetry import series

BUCKETS = (0.005, 0.0125, 0.03125, 0.078125, 0.5, 1.0, 10.0)
LABELS = st.sampled_from(["a", "b", "image_status", "pull_image"])
AMOUNTS = st.floats(min_value=0.0, max_value=1e6, allow_nan=False) | st.sampled_from(
    [0.0, 0.005, 0.0125, 1.0, 10.0, math.inf]
)


def _exposition(registry: CollectorRegistry) -> list[str]:
    text = generate_latest(registry).decode()
    return [
        line
        for line in text.splitlines()
        if not line.split("{")[0].split(" ")[0].endswith("_created")
        and not (line.startswith("# ") and line.split(" ")[2].endswith("_created"))
    ]


def _pair() -> tuple[CollectorRegistry, CollectorRegistry]:
    return CollectorRegistry(), CollectorRegistry()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(LABELS, AMOUNTS), max_size=30))
def test_counter_matches_prometheus_client(updates: list[tuple[str, float]]) -> None:
    upstream, ours = _pair()
    theirs = prometheus_client.Counter("demo_total", "A demo.", ["kind"], registry=upstream)
    mine = series.Counter("demo_total", "A demo.", ["kind"])
    series.SeriesCollector([mine]).register(ours)
    for label, amount in updates:
        theirs.labels(label).inc(amount)
        mine.labels(label).inc(amount)
    assert _exposition(ours) == _exposition(upstream)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(LABELS, AMOUNTS), max_size=30))
def test_histogram_matches_prometheus_client(updates: list[tuple[str, float]]) -> None:
    upstream, ours = _pair()
    theirs = prometheus_client.Histogram(
        "demo_seconds", "A demo.", ["op"], buckets=BUCKETS, registry=upstream
    )
    mine = series.Histogram("demo_seconds", "A demo.", ["op"], buckets=BUCKETS)
    series.SeriesCollector([mine]).register(ours)
    for label, amount in updates:
        theirs.labels(label).observe(amount)
        mine.labels(label).observe(amount)
    assert _exposition(ours) == _exposition(upstream)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["set", "inc", "dec"]), AMOUNTS), max_size=30))
def test_unlabelled_gauge_matches_prometheus_client(updates: list[tuple[str, float]]) -> None:
    upstream, ours = _pair()
    theirs = prometheus_client.Gauge("demo_depth", "A demo.", registry=upstream)
    mine = series.Gauge("demo_depth", "A demo.")
    series.SeriesCollector([mine]).register(ours)
    for op, amount in updates:
        getattr(theirs, op)(amount)
        getattr(mine.only, op)(amount)
    assert _exposition(ours) == _exposition(upstream)


def test_an_unlabelled_family_shows_zero_before_any_update_a_labelled_one_nothing() -> None:
    upstream, ours = _pair()
    prometheus_client.Counter("plain_total", "Plain.", registry=upstream)
    prometheus_client.Counter("split_total", "Split.", ["kind"], registry=upstream)
    prometheus_client.Histogram("lat_seconds", "Latency.", buckets=BUCKETS, registry=upstream)
    series.SeriesCollector(
        [
            series.Counter("plain_total", "Plain."),
            series.Counter("split_total", "Split.", ["kind"]),
            series.Histogram("lat_seconds", "Latency.", buckets=BUCKETS),
        ]
    ).register(ours)
    assert _exposition(ours) == _exposition(upstream)
    assert ours.get_sample_value("plain_total") == 0.0
    assert ours.get_sample_value("split_total", {"kind": "a"}) is None


def test_nan_goes_into_the_sum_and_no_bucket_as_in_prometheus_client() -> None:
    upstream, ours = _pair()
    theirs = prometheus_client.Histogram("h_seconds", "H.", buckets=BUCKETS, registry=upstream)
    mine = series.Histogram("h_seconds", "H.", buckets=BUCKETS)
    series.SeriesCollector([mine]).register(ours)
    for value in (0.001, math.nan, 2.0):
        theirs.observe(value)
        mine.only.observe(value)
    assert _exposition(ours) == _exposition(upstream)


def test_bad_uses_are_refused_with_the_family_named() -> None:
    counter = series.Counter("c_total", "C.", ["kind"])
    with pytest.raises(ValueError, match="non-negative"):
        counter.labels("a").inc(-1)
    with pytest.raises(ValueError, match=r"c takes 1 label values \('kind',\), got \('a', 'b'\)"):
        counter.labels("a", "b")
    with pytest.raises(ValueError, match="c has labels"):
        _ = counter.only
    with pytest.raises(ValueError, match="takes 0 label values"):
        series.Counter("plain", "P.").labels("x")
    with pytest.raises(ValueError, match="h: buckets not in sorted order"):
        series.Histogram("h", "H.", buckets=(1.0, 0.5))
    with pytest.raises(ValueError, match="at least two buckets"):
        series.Histogram("h", "H.", buckets=(math.inf,))
    with pytest.raises(ValueError, match="series named twice: c"):
        series.SeriesCollector([counter, series.Counter("c", "again")])


def test_registering_twice_in_one_registry_is_refused() -> None:
    registry = CollectorRegistry()
    family = series.Counter("once_total", "Once.")
    series.SeriesCollector([family]).register(registry)
    with pytest.raises(ValueError, match="Duplicated"):
        series.SeriesCollector([series.Counter("once_total", "Again.")]).register(registry)


def test_a_scrape_from_another_thread_while_the_loop_adds_series() -> None:
    """The daemon's scrape runs beside the event loop: new series appear while it iterates."""
    registry = CollectorRegistry()
    family = series.Counter("busy_total", "Busy.", ["n"])
    series.SeriesCollector([family]).register(registry)
    stop = threading.Event()
    errors: list[BaseException] = []

    def scrape() -> None:
        while not stop.is_set():
            try:
                generate_latest(registry)
            except BaseException as exc:  # the assertion below reports it
                errors.append(exc)
                return

    thread = threading.Thread(target=scrape)
    thread.start()
    try:
        for i in range(20_000):
            family.labels(str(i % 5_000)).inc()
    finally:
        stop.set()
        thread.join()
    assert errors == []
    assert registry.get_sample_value("busy_total", {"n": "4999"}) == 4.0


def test_label_values_are_their_str_as_in_prometheus_client() -> None:
    upstream, ours = _pair()
    theirs = prometheus_client.Counter("codes_total", "Codes.", ["code"], registry=upstream)
    mine = series.Counter("codes_total", "Codes.", ["code"])
    series.SeriesCollector([mine]).register(ours)
    for value in (200, 200, "200", 404):
        theirs.labels(value).inc()
        mine.labels(value).inc()  # type: ignore[arg-type]  # what a careless caller passes
    assert mine.labels(200) is mine.labels("200")  # type: ignore[arg-type]
    assert _exposition(ours) == _exposition(upstream)
    assert ours.get_sample_value("codes_total", {"code": "200"}) == 3.0


def test_a_histogram_with_a_negative_bucket_has_no_sum_as_in_prometheus_client() -> None:
    upstream, ours = _pair()
    buckets = (-1.0, 0.0, 1.0)
    theirs = prometheus_client.Histogram("delta", "D.", buckets=buckets, registry=upstream)
    mine = series.Histogram("delta", "D.", buckets=buckets)
    series.SeriesCollector([mine]).register(ours)
    for value in (-0.5, 0.5, 3.0):
        theirs.observe(value)
        mine.only.observe(value)
    assert _exposition(ours) == _exposition(upstream)
    assert ours.get_sample_value("delta_sum") is None


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: series.Counter("bad name", "B."), "invalid metric name 'bad name'"),
        (lambda: series.Counter("c", "C.", ["bad-label"]), "invalid label name 'bad-label'"),
        (lambda: series.Counter("c", "C.", ["__reserved"]), "invalid label name '__reserved'"),
        (
            lambda: series.Histogram("h", "H.", ["le"], buckets=(1.0,)),
            "label name 'le' is reserved",
        ),
        (lambda: series.Counter("c", "C.", ["kind"]).labels(), r"takes 1 label values"),
        (lambda: series.Counter("plain", "P.").labels(), "has no labels: use only"),
    ],
)
def test_names_and_label_use_are_checked_as_in_prometheus_client(
    make: Callable[[], object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        make()
