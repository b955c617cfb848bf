"""The report's breakdowns: pulls by image, slowest nodes, failures by cause (QPS refusals too),
time to first byte and pull duration by size from the nodes' histograms, requests per second."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kubelet_sim.cli.main import main
from kubelet_sim.workloads.observe import RequestTimeline
from kubelet_sim.workloads.report import _merge_requests, histogram_quantile

INF = "+Inf"


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        # linear inside the bucket that holds the rank, as Prometheus' histogram_quantile
        (0.5, {"1.0": 10, "2.0": 20, INF: 20}, 1.0),
        (0.75, {"1.0": 10, "2.0": 20, INF: 20}, 1.5),
        (0.25, {"1.0": 10, "2.0": 20, INF: 20}, 0.5),  # the first bucket starts at 0
        (0.99, {"1.0": 10, "2.0": 10, INF: 20}, 2.0),  # in +Inf: the largest finite bound
        (0.5, {"0.5": 0, "1.0": 0, INF: 0}, None),  # no observations
        (0.5, {}, None),
    ],
)
def test_histogram_quantile_reads_buckets_as_prometheus_does(
    q: float, buckets: dict[str, int], expected: float | None
) -> None:
    assert histogram_quantile(q, buckets) == expected


def test_the_request_timeline_counts_errors_and_unanswered_requests_per_second() -> None:
    timeline = RequestTimeline()
    for t, status in ((0.1, 200), (0.9, 503), (1.0, 429), (1.5, None), (3.2, 401), (3.3, 404)):
        timeline.add(t, status)
    assert timeline.series() == [[0, 2, 1, 0], [1, 2, 1, 1], [3, 2, 0, 0]]


def _run(tmp_path: Path, text: str) -> dict[str, Any]:
    path = tmp_path / "w.yaml"
    path.write_text(text)
    out = tmp_path / "out"
    assert main(["bench", str(path), "--virtual", "--quiet", "--no-plots", "--out", str(out)]) == 0
    return dict(json.loads((out / "report.json").read_text()))


THROTTLED = """\
apiVersion: kubelet-sim.dev/v1alpha1
kind: Workload
name: throttled
seed: 2
images:
  - {repository: "app/svc-{i}", count: 6, tags: ["1"], layers: [2MiB]}
  - {repository: app/big, tags: ["1"], layers: [30MiB]}
nodes:
  - name: slow
    kubelet: {serializeImagePulls: false, registryPullQPS: 1, registryBurst: 2}
    timing: {resyncPeriod: 1s, backoffInitial: 1s, backoffMax: 2s}
  - name: fast
    kubelet: {serializeImagePulls: false, registryPullQPS: 0}
pods:
  - name: svc
    count: 6
    spec: {containers: [{name: c, image: "app/svc-{i}:1"}]}
    placement: {kind: round-robin, nodes: [slow]}
  - name: big
    count: 1
    spec: {containers: [{name: c, image: "app/big:1"}]}
    placement: {kind: round-robin, nodes: [fast]}
  - name: typo
    count: 1
    spec: {containers: [{name: c, image: "app/none:1"}]}
    placement: {kind: round-robin, nodes: [fast]}
virtual:
  registry: {latency: 10ms, bandwidth: {perConnection: 10MiB/s, total: 1GiB/s}}
run: {timeout: 20s}
"""


def test_a_run_says_where_its_time_went(tmp_path: Path) -> None:
    report = _run(tmp_path, THROTTLED)
    s = report["summary"]
    # failed pulls by cause: the slow node's throttle refused pulls; the typo was not found
    causes = s["failure_causes"]
    assert causes["qps"] >= 3
    assert causes["not-found"] >= 1
    assert set(causes) == {"qps", "not-found"}
    # pulls by image: every image of the run, its bytes and durations
    by_image = s["by_image"]
    assert set(by_image) == {f"app/svc-{i}:1" for i in range(6)} | {"app/big:1", "app/none:1"}
    big = by_image["app/big:1"]
    assert (big["pulls"], big["failed"]) == (1, 0)
    assert 30 * 2**20 <= big["bytes"] < 31 * 2**20  # the layer, the config and the manifest
    assert big["seconds"]["p50"] >= 3.0  # 30 MiB at 10 MiB/s
    assert by_image["app/none:1"]["failed"] == by_image["app/none:1"]["pulls"] >= 1
    assert by_image["app/none:1"]["seconds"]["count"] == 0
    # the slowest nodes: the fast node holds the pod that never became ready, so it comes first
    first = s["slowest_nodes"][0]
    assert (first["node"], first["not_ready"]) == ("fast-000", 1)
    assert [n["node"] for n in s["slowest_nodes"]] == ["fast-000", "slow-000"]
    # the nodes' own histograms: every request answered has a time to first byte
    ttfb = s["registry_ttfb"]
    assert ttfb["count"] == s["registry_requests"]
    assert 0.005 <= ttfb["p50"] <= 0.025  # buckets 0.005 / 0.01 / 0.025 around 10 ms
    sizes = s["pull_duration_by_size"]
    assert set(sizes) == {"0-10MB", "10MB-100MB"}
    assert sizes["10MB-100MB"]["count"] == 1
    assert sum(h["count"] for h in sizes.values()) == 7  # the successful pulls
    # requests per second, over the run
    series = report["request_timeline"]
    assert sum(row[1] for row in series) == s["registry_requests"]
    assert s["registry_peak_requests_per_second"] == max(row[1] for row in series)
    md = (tmp_path / "out" / "report.md").read_text()
    for heading in ("## Pulls by image", "## Slowest nodes", "## Failed pulls by cause",
                    "## The registry as the nodes saw it"):  # fmt: skip
        assert heading in md
    assert "| qps |" in md


def test_shards_request_timelines_add_up_by_second() -> None:
    one = [[0, 3, 1, 0], [2, 1, 0, 1]]
    two = [[0, 1, 0, 0], [1, 5, 0, 0]]
    assert _merge_requests([one, two]) == [[0, 4, 1, 0], [1, 5, 0, 0], [2, 1, 0, 1]]
    assert _merge_requests([]) == []
