"""Deterministic image generation, size distributions, arrival schedules, placement, report maths."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from kubelet_sim.errors import ConfigError
from kubelet_sim.workloads import ImageBuilder, load_report, parse_workload, percentiles, plan_pods
from kubelet_sim.workloads.compare import compare_markdown, compare_reports, render_compare
from kubelet_sim.workloads.schedule import PlannedPod, expand_image, template_images
from kubelet_sim.workloads.spec import SizeDistribution, SizeKind, Workload

WORKLOAD = """\
apiVersion: kubelet-sim.dev/v1alpha1
kind: Workload
name: gen
seed: {seed}
bases:
  - {{name: base, layers: [64KiB, 32KiB]}}
images:
  - repository: app/svc-{{i}}
    count: 3
    tags: ["1", "2"]
    base: base
    platforms: [linux/amd64, linux/arm64]
    layers: [{{count: 2, size: {{uniform: [1KiB, 8KiB]}}}}]
  - {{repository: app/solo, layers: [{{count: 1, size: {{choice: [3KiB, 5KiB]}}}}]}}
nodes:
  - {{name: a, count: 2}}
  - {{name: b, count: 3}}
pods:
  - name: rr
    count: 7
    spec: {{containers: [{{name: c, image: "app/svc-{{i%3}}:1"}}]}}
    arrival: {{rate: 2}}
  - name: rnd
    count: 6
    spec: {{containers: [{{name: c, image: "app/solo:latest"}}]}}
    arrival: {{bursts: {{size: 4, every: 3s}}, start: 1s}}
    placement: {{kind: random, nodes: [b]}}
  - name: ds
    spec: {{containers: [{{name: c, image: "app/solo:latest"}}]}}
    placement: every-node
"""


def workload(seed: int = 1) -> Workload:
    return parse_workload(WORKLOAD.format(seed=seed), "gen.yaml")


def digests(seed: int) -> list[tuple[str, str, list[str]]]:
    w = workload(seed)
    return [
        (b.reference, image.platform_string, [str(layer.digest) for layer in image.layers])
        for b in ImageBuilder(w)
        for image in b.images
    ]


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    first, again, other = digests(1), digests(1), digests(2)
    assert first == again
    assert [d[2] for d in first] != [d[2] for d in other]
    assert [d[0] for d in first] == [
        f"app/svc-{i}:{tag}" for i in range(3) for tag in ("1", "2") for _ in range(2)
    ] + ["app/solo:latest"]


def test_base_layers_are_shared_per_platform_and_images_differ_above_them() -> None:
    built = list(ImageBuilder(workload()))
    amd = [b.images[0] for b in built[:6]]
    arm = [b.images[1] for b in built[:6]]
    assert {i.platform_string for i in amd} == {"linux/amd64"}
    assert {i.platform_string for i in arm} == {"linux/arm64"}
    assert len({tuple(i.layers[:2]) for i in amd}) == 1  # one base, shared by every image
    assert amd[0].layers[:2] != arm[0].layers[:2]  # a base per platform
    assert len({i.layers[2].digest for i in amd}) == 6  # own layers differ
    for b in built[:6]:
        assert b.index is not None
        doc = json.loads(b.index.index.data)
        assert [m["platform"]["architecture"] for m in doc["manifests"]] == ["amd64", "arm64"]
        sizes = [layer.size for layer in b.images[0].layers[2:]]
        assert len(sizes) == 2
    solo = built[-1]
    assert solo.index is None
    assert solo.size_for("linux/amd64") == solo.images[0].config.size + sum(
        layer.size for layer in solo.images[0].layers
    )


@pytest.mark.parametrize(
    ("dist", "low", "high"),
    [
        pytest.param(SizeDistribution(SizeKind.FIXED, value=100), 100, 100, id="fixed"),
        pytest.param(SizeDistribution(SizeKind.UNIFORM, low=10, high=20), 10, 20, id="uniform"),
        pytest.param(
            SizeDistribution(SizeKind.LOGNORMAL, median=1000, sigma=2.0, low=500, high=3000),
            500,
            3000,
            id="lognormal-clamped",
        ),
        pytest.param(SizeDistribution(SizeKind.CHOICE, choices=(7, 9)), 7, 9, id="choice"),
    ],
)
def test_size_distributions_stay_in_bounds_and_repeat(
    dist: SizeDistribution, low: int, high: int
) -> None:
    draws = [dist.sample(random.Random(f"s{i}")) for i in range(300)]
    assert all(low <= d <= high for d in draws)
    assert draws == [dist.sample(random.Random(f"s{i}")) for i in range(300)]
    if dist.kind is SizeKind.LOGNORMAL:
        middle = sorted(draws)[150]
        assert 700 < middle < 1400  # the median holds
        assert draws.count(500) > 10  # clamped at both ends with sigma 2
        assert draws.count(3000) > 10


def test_plan_arrivals_and_placement() -> None:
    plan = plan_pods(workload())
    by_template: dict[str, list[PlannedPod]] = {}
    for pod in plan:
        by_template.setdefault(pod.template.name, []).append(pod)
    rr = sorted(by_template["rr"], key=lambda p: p.index)
    assert [p.at for p in rr] == [0, 0.5, 1, 1.5, 2, 2.5, 3]
    # round-robin over both groups in declaration order
    assert [p.node for p in rr] == ["a-000", "a-001", "b-000", "b-001", "b-002", "a-000", "a-001"]
    rnd = sorted(by_template["rnd"], key=lambda p: p.index)
    assert [p.at for p in rnd] == [1, 1, 1, 1, 4, 4]
    assert {p.node for p in rnd} <= {"b-000", "b-001", "b-002"}
    again = [p for p in plan_pods(workload()) if p.template.name == "rnd"]
    assert [p.node for p in rnd] == [p.node for p in sorted(again, key=lambda p: p.index)]
    ds = by_template["ds"]
    assert sorted(p.node for p in ds) == ["a-000", "a-001", "b-000", "b-001", "b-002"]
    assert [p.at for p in plan] == sorted(p.at for p in plan)
    assert len({p.uid for p in plan}) == len(plan)
    spec = rr[4].spec("127.0.0.1:5000")
    assert spec.containers[0].image == "127.0.0.1:5000/app/svc-1:1"
    assert spec.ref.name == "rr-004"


def test_image_placeholders() -> None:
    assert expand_image("a/s-{i}:{i%4}", 9) == "a/s-9:1"
    template = workload().pods[0]
    assert template_images(template) == {"app/svc-0:1", "app/svc-1:1", "app/svc-2:1"}


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param([], {"count": 0, "p50": None, "max": None}, id="empty"),
        pytest.param([3.0], {"count": 1, "p50": 3.0, "p99": 3.0, "max": 3.0}, id="one"),
        pytest.param(
            [float(i) for i in range(1, 101)],
            {"count": 100, "min": 1.0, "p50": 50.5, "p90": 90.1, "p99": 99.01, "max": 100.0},
            id="1-to-100",
        ),
    ],
)
def test_percentiles(values: list[float], expected: dict[str, object]) -> None:
    result = percentiles(values)
    for key, value in expected.items():
        assert result[key] == value, key


def _report(name: str, p50: float, pulls: int) -> dict[str, object]:
    ttr = {"p50": p50, "p90": p50 * 2, "p99": p50 * 3, "max": p50 * 4}
    summary = {
        "nodes": 2, "pods_ready": 4, "time_to_ready": ttr, "makespan": p50 * 5, "pulls": pulls,
        "pull_errors": 0, "cache_hits": 1, "bytes_pulled": 2**20, "registry_requests": 10,
        "registry_retries": 0, "backoffs": 0, "peak_pulls_in_flight_max": 1,
        "resources": {"cpu_seconds": 1.0, "peak_rss_mib": 80.0},
    }  # fmt: skip
    return {
        "workload": {"name": name},
        "summary": summary,
        "groups": {"g": {"time_to_ready": ttr, "makespan": p50 * 5}},
    }


def test_compare_reports_change_and_ratio() -> None:
    a, b = _report("serial", 2.0, 8), _report("parallel", 0.5, 8)
    rows = {r.figure: r for r in compare_reports(a, b)}
    assert rows["time to ready p50"].ratio == 0.25
    assert rows["time to ready p50"].change == -1.5
    assert rows["pulls"].ratio == 1.0
    assert rows["g: makespan"].a == 10.0
    text = render_compare(a, b, list(rows.values()))
    assert ["time to ready p50", "2.000 s", "0.500 s", "-1.500 s", "0.25"] in text
    md = compare_markdown(a, b)
    assert md.startswith("# Compare: A = serial, B = parallel")
    assert "| bytes pulled | 1.0 MiB | 1.0 MiB |" in md


def test_report_schema_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"schema": "something/else"}))
    with pytest.raises(ConfigError, match="not a kubelet-sim bench report"):
        load_report(path)
    path.write_text("{")
    with pytest.raises(ConfigError, match="not a readable JSON report"):
        load_report(path)
