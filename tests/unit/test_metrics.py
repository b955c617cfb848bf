"""Pull metrics: upstream names, labels and buckets; bounded labels; a valid exposition."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import prometheus_client
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from kubelet_sim.credentials.metrics import CredentialMetrics
from kubelet_sim.registry.transport import RequestObserver
from kubelet_sim.telemetry.metrics import (
    IMAGE_PULL_DURATION_BUCKETS,
    RUNTIME_OPERATION_BUCKETS,
    PullMetrics,
    exponential_buckets,
    image_size_bucket,
)
from kubelet_sim.telemetry.series import SeriesCollector

MI = 1024 * 1024
GI = 1024 * MI
PROMTOOL_SKIP_ENV = "KUBELET_SIM_SKIP_PROMTOOL"
PROMTOOL_HINT = (
    "promtool is not installed: `apt-get install -y --no-install-recommends prometheus` "
    f"(or set {PROMTOOL_SKIP_ENV}=1 to skip this check explicitly)"
)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> PullMetrics:
    return PullMetrics(registry)


@pytest.mark.parametrize(
    ("size", "label"),
    [
        pytest.param(0, "N/A", id="zero-is-NA"),
        pytest.param(1, "0-10MB", id="one-byte"),
        pytest.param(10 * MI, "0-10MB", id="exactly-10MiB-stays-below"),
        pytest.param(10 * MI + 1, "10MB-100MB", id="10MiB-plus-1"),
        pytest.param(100 * MI, "10MB-100MB", id="exactly-100MiB"),
        pytest.param(100 * MI + 1, "100MB-500MB", id="100MiB-plus-1"),
        pytest.param(500 * MI, "100MB-500MB", id="exactly-500MiB"),
        pytest.param(500 * MI + 1, "500MB-1GB", id="500MiB-plus-1"),
        pytest.param(GI, "500MB-1GB", id="exactly-1GiB"),
        pytest.param(GI + 1, "1GB-5GB", id="1GiB-plus-1"),
        pytest.param(5 * GI, "1GB-5GB", id="exactly-5GiB"),
        pytest.param(5 * GI + 1, "5GB-10GB", id="5GiB-plus-1"),
        pytest.param(10 * GI, "5GB-10GB", id="exactly-10GiB"),
        pytest.param(10 * GI + 1, "10GB-20GB", id="10GiB-plus-1"),
        pytest.param(20 * GI, "10GB-20GB", id="exactly-20GiB"),
        pytest.param(20 * GI + 1, "20GB-30GB", id="20GiB-plus-1"),
        pytest.param(30 * GI, "20GB-30GB", id="exactly-30GiB"),
        pytest.param(30 * GI + 1, "30GB-40GB", id="30GiB-plus-1"),
        pytest.param(40 * GI, "30GB-40GB", id="exactly-40GiB"),
        pytest.param(40 * GI + 1, "40GB-60GB", id="40GiB-plus-1"),
        pytest.param(60 * GI, "40GB-60GB", id="exactly-60GiB"),
        pytest.param(60 * GI + 1, "60GB-100GB", id="60GiB-plus-1"),
        pytest.param(100 * GI, "60GB-100GB", id="exactly-100GiB"),
        pytest.param(100 * GI + 1, "GT100GB", id="100GiB-plus-1"),
        pytest.param(2**64 - 1, "GT100GB", id="max-uint64"),
        pytest.param(10_000_000, "0-10MB", id="decimal-10MB-is-below-10MiB"),
    ],
)
def test_image_size_bucket(size: int, label: str) -> None:
    assert image_size_bucket(size) == label


def test_image_size_bucket_rejects_negative() -> None:
    with pytest.raises(ValueError, match="-1"):
        image_size_bucket(-1)


def test_bucket_constants_are_upstreams() -> None:
    assert IMAGE_PULL_DURATION_BUCKETS == (
        1, 5, 10, 20, 30, 60, 120, 180, 240, 300, 360, 480, 600, 900, 1200, 1800, 2700, 3600,
    )  # fmt: skip
    assert len(RUNTIME_OPERATION_BUCKETS) == 14
    assert pytest.approx(RUNTIME_OPERATION_BUCKETS) == [0.005 * 2.5**i for i in range(14)]
    assert RUNTIME_OPERATION_BUCKETS[-1] == pytest.approx(745.0580596923828)


@pytest.mark.parametrize(
    ("start", "factor", "count"),
    [
        pytest.param(0.0, 2.0, 3, id="zero-start"),
        pytest.param(1.0, 1.0, 3, id="factor-one"),
        pytest.param(1.0, 2.0, 0, id="no-buckets"),
    ],
)
def test_exponential_buckets_rejects_nonsense(start: float, factor: float, count: int) -> None:
    with pytest.raises(ValueError, match="invalid exponential buckets"):
        exponential_buckets(start, factor, count)


ENSURE = "kubelet_image_manager_ensure_image_requests_total"


@pytest.mark.parametrize(
    ("policy", "present", "pull_required", "labels"),
    [
        pytest.param("Always", None, True, ("always", "unknown", "true"), id="always-pulls"),
        pytest.param(
            "IfNotPresent", True, False, ("ifnotpresent", "true", "false"), id="cache-hit"
        ),
        pytest.param(
            "IfNotPresent", False, True, ("ifnotpresent", "false", "true"), id="absent-pulls"
        ),
        pytest.param("Never", False, False, ("never", "false", "false"), id="never-absent"),
        pytest.param("Never", None, None, ("never", "unknown", "unknown"), id="error-before"),
    ],
)
def test_ensure_image_request_labels(
    registry: CollectorRegistry,
    metrics: PullMetrics,
    policy: str,
    present: bool | None,
    pull_required: bool | None,
    labels: tuple[str, str, str],
) -> None:
    metrics.ensure_image_request(policy, present, pull_required)
    metrics.ensure_image_request(policy, present, pull_required)
    names = ("pull_policy", "present_locally", "pull_required")
    assert registry.get_sample_value(ENSURE, dict(zip(names, labels, strict=True))) == 2.0


def test_ensure_image_request_rejects_unknown_policy(metrics: PullMetrics) -> None:
    with pytest.raises(ValueError, match="'Sometimes'"):
        metrics.ensure_image_request("Sometimes", None, None)


def test_image_pull_duration_is_truncated_to_ms_and_bucketed_by_size(
    registry: CollectorRegistry, metrics: PullMetrics
) -> None:
    metrics.image_pull_duration(4.9999, 61822408)
    metrics.image_pull_duration(1.2345678, 61822408)
    labels = {"image_size_in_bytes": "10MB-100MB"}
    name = "kubelet_image_pull_duration_seconds"
    assert registry.get_sample_value(f"{name}_count", labels) == 2.0
    assert registry.get_sample_value(f"{name}_sum", labels) == pytest.approx(4.999 + 1.234)
    assert registry.get_sample_value(f"{name}_bucket", {**labels, "le": "1.0"}) == 0.0
    assert registry.get_sample_value(f"{name}_bucket", {**labels, "le": "5.0"}) == 2.0
    assert registry.get_sample_value(f"{name}_bucket", {**labels, "le": "3600.0"}) == 2.0


def test_pull_started_and_finished(registry: CollectorRegistry, metrics: PullMetrics) -> None:
    op = {"operation_type": "pull_image"}
    metrics.pull_started()
    metrics.pull_started()
    assert registry.get_sample_value("kubelet_sim_pulls_in_flight") == 2.0
    metrics.pull_finished(2.0, 8 * MI, error=False)
    metrics.pull_finished(0.3, 0, error=True)
    assert registry.get_sample_value("kubelet_sim_pulls_in_flight") == 0.0
    assert registry.get_sample_value("kubelet_runtime_operations_total", op) == 2.0
    assert registry.get_sample_value("kubelet_runtime_operations_errors_total", op) == 1.0
    assert registry.get_sample_value("kubelet_runtime_operations_duration_seconds_count", op) == 2.0
    assert registry.get_sample_value(
        "kubelet_runtime_operations_duration_seconds_sum", op
    ) == pytest.approx(2.3)
    assert registry.get_sample_value(
        "kubelet_runtime_operations_duration_seconds_bucket", {**op, "le": "0.48828125"}
    ) == pytest.approx(1.0)
    name = "kubelet_sim_pull_throughput_bytes_per_second"
    assert registry.get_sample_value(f"{name}_count") == 1.0  # failures are not throughput
    assert registry.get_sample_value(f"{name}_sum") == 4 * MI


def test_runtime_operation_other_types(registry: CollectorRegistry, metrics: PullMetrics) -> None:
    metrics.runtime_operation("image_status", 0.01, error=False)
    assert (
        registry.get_sample_value(
            "kubelet_runtime_operations_total", {"operation_type": "image_status"}
        )
        == 1.0
    )
    assert (
        registry.get_sample_value(
            "kubelet_runtime_operations_errors_total", {"operation_type": "image_status"}
        )
        is None
    )
    with pytest.raises(ValueError, match=re.escape("'docker.io/library/busybox'")):
        metrics.runtime_operation("docker.io/library/busybox", 0.01, error=False)


def test_simple_counters_and_gauges(registry: CollectorRegistry, metrics: PullMetrics) -> None:
    metrics.bytes_pulled(1000)
    metrics.bytes_pulled(0)
    metrics.bytes_pulled(24)
    metrics.set_queue_depth(7)
    metrics.set_backoff_entries(3)
    metrics.cache_hit()
    metrics.cache_hit()
    assert registry.get_sample_value("kubelet_sim_pull_bytes_total") == 1024.0
    assert registry.get_sample_value("kubelet_sim_pull_queue_depth") == 7.0
    assert registry.get_sample_value("kubelet_sim_backoff_entries") == 3.0
    assert registry.get_sample_value("kubelet_sim_image_cache_hits_total") == 2.0


@pytest.mark.parametrize(
    ("method", "status", "labels"),
    [
        pytest.param("GET", 200, ("GET", "200", "2xx"), id="ok"),
        pytest.param("head", 404, ("HEAD", "404", "4xx"), id="lowercase-method"),
        pytest.param("GET", 307, ("GET", "307", "3xx"), id="redirect"),
        pytest.param("GET", 429, ("GET", "429", "4xx"), id="rate-limited"),
        pytest.param("GET", 418, ("GET", "other", "4xx"), id="unlisted-code"),
        pytest.param("BREW", 200, ("other", "200", "2xx"), id="unlisted-method"),
        pytest.param("GET", None, ("GET", "none", "none"), id="no-response"),
        pytest.param("GET", 999, ("GET", "other", "other"), id="nonsense-status"),
    ],
)
def test_registry_response_labels(
    registry: CollectorRegistry,
    metrics: PullMetrics,
    method: str,
    status: int | None,
    labels: tuple[str, str, str],
) -> None:
    metrics.registry_response(method, status, 0.02)
    names = ("method", "code", "class")
    sample = dict(zip(names, labels, strict=True))
    assert registry.get_sample_value("kubelet_sim_registry_requests_total", sample) == 1.0
    duration = "kubelet_sim_registry_request_duration_seconds_count"
    assert registry.get_sample_value(duration, {"method": labels[0]}) == 1.0


@pytest.mark.parametrize(
    ("reason", "label"),
    [
        pytest.param("503", "503", id="status"),
        pytest.param("429", "429", id="throttled"),
        pytest.param("ConnectError", "ConnectError", id="transport-error"),
        pytest.param("ReadTimeout", "ReadTimeout", id="timeout"),
        pytest.param("registry.example.com refused", "other", id="free-text-is-other"),
        pytest.param("404", "other", id="non-retryable-status-is-other"),
    ],
)
def test_registry_retry_reasons(
    registry: CollectorRegistry, metrics: PullMetrics, reason: str, label: str
) -> None:
    metrics.registry_retry(reason)
    value = registry.get_sample_value("kubelet_sim_registry_retries_total", {"reason": label})
    assert value == 1.0


def test_is_a_transport_request_observer(metrics: PullMetrics) -> None:
    observer: RequestObserver = metrics  # mypy checks the Protocol; the calls check behaviour
    observer.registry_response("GET", 200, 0.1)
    observer.registry_retry("502")


@settings(max_examples=200, deadline=None)
@given(
    calls=st.lists(
        st.tuples(st.text(max_size=12), st.one_of(st.none(), st.integers(-5, 2000)), st.text()),
        max_size=30,
    )
)
def test_label_values_stay_bounded(calls: list[tuple[str, int | None, str]]) -> None:
    registry = CollectorRegistry()
    metrics = PullMetrics(registry)
    for method, status, reason in calls:
        metrics.registry_response(method, status, 0.01)
        metrics.registry_retry(reason)
    allowed_methods = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "other"}
    for family in registry.collect():
        for sample in family.samples:
            if "method" in sample.labels:
                assert sample.labels["method"] in allowed_methods
            if "code" in sample.labels:
                code = sample.labels["code"]
                assert code in {"other", "none"} or (code.isdigit() and len(code) == 3)
            if "class" in sample.labels:
                assert sample.labels["class"] in {
                    "1xx",
                    "2xx",
                    "3xx",
                    "4xx",
                    "5xx",
                    "other",
                    "none",
                }
            if "reason" in sample.labels:
                reason = sample.labels["reason"]
                assert reason == "other" or reason.isdigit() or reason.isidentifier()


def _populated(registry: CollectorRegistry) -> str:
    metrics = PullMetrics(registry)
    metrics.ensure_image_request("IfNotPresent", False, True)
    metrics.image_pull_duration(12.5, 300 * MI)
    metrics.pull_started()
    metrics.pull_finished(12.0, 300 * MI, error=False)
    metrics.runtime_operation("image_status", 0.002, error=True)
    metrics.bytes_pulled(300 * MI)
    metrics.set_queue_depth(1)
    metrics.set_backoff_entries(2)
    metrics.cache_hit()
    metrics.registry_response("GET", 200, 0.05)
    metrics.registry_retry("503")
    return generate_latest(registry).decode()


UPSTREAM_TYPES = [
    "# TYPE kubelet_image_pull_duration_seconds histogram",
    "# TYPE kubelet_image_manager_ensure_image_requests_total counter",
    "# TYPE kubelet_runtime_operations_total counter",
    "# TYPE kubelet_runtime_operations_errors_total counter",
    "# TYPE kubelet_runtime_operations_duration_seconds histogram",
]


def test_exposition_has_exact_upstream_families(registry: CollectorRegistry) -> None:
    text = _populated(registry)
    lines = text.splitlines()
    for type_line in UPSTREAM_TYPES:
        assert type_line in lines
    assert (
        "# HELP kubelet_runtime_operations_total "
        "[ALPHA] Cumulative number of runtime operations by operation type."
    ) in lines
    assert (
        'kubelet_image_manager_ensure_image_requests_total{present_locally="false",'
        'pull_policy="ifnotpresent",pull_required="true"} 1.0'
    ) in lines
    assert (
        'kubelet_image_pull_duration_seconds_count{image_size_in_bytes="100MB-500MB"} 1.0' in lines
    )
    assert "_created" not in text  # prometheus_client's extra series are left out
    own = {line.split()[2] for line in lines if line.startswith("# TYPE kubelet_sim_")}
    assert own == {
        "kubelet_sim_pull_queue_depth",
        "kubelet_sim_pulls_in_flight",
        "kubelet_sim_pull_bytes_total",
        "kubelet_sim_registry_requests_total",
        "kubelet_sim_registry_request_duration_seconds",
        "kubelet_sim_registry_retries_total",
        "kubelet_sim_image_cache_hits_total",
        "kubelet_sim_backoff_entries",
        "kubelet_sim_pull_throughput_bytes_per_second",
    }


def test_never_touches_the_global_registry(metrics: PullMetrics) -> None:
    metrics.runtime_operation("pull_image", 1.0, error=False)
    default = prometheus_client.REGISTRY.get_sample_value(
        "kubelet_runtime_operations_total", {"operation_type": "pull_image"}
    )
    assert default is None


def test_registering_twice_in_one_registry_fails_until_unregistered(
    registry: CollectorRegistry, metrics: PullMetrics
) -> None:
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        PullMetrics(registry)
    metrics.unregister()
    again = PullMetrics(registry)
    again.cache_hit()
    assert registry.get_sample_value("kubelet_sim_image_cache_hits_total") == 1.0


def test_promtool_accepts_the_exposition(registry: CollectorRegistry) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get(PROMTOOL_SKIP_ENV) == "1":
            pytest.skip(PROMTOOL_HINT)
        pytest.fail(PROMTOOL_HINT, pytrace=False)
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=_populated(registry),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_credential_metrics_share_the_collector() -> None:
    registry = CollectorRegistry()
    collector = CredentialMetrics(registry)._collector
    assert isinstance(collector, SeriesCollector)
    assert b"_created" not in generate_latest(registry)
