"""The kubelet's image backoff in a virtual run: the exact pull and retry times of a failing pod.

A pod on one node (kubelet defaults: pod-worker resync 10 s without jitter, image backoff 10 s
doubling to 300 s) runs for 30 virtual minutes against the modelled registry with no latency, so
every time is exact. Upstream's rule (``flowcontrol.Backoff.IsInBackOffSinceUpdate``): a sync
pulls again once ``now - last failure >= backoff``; each failure doubles the backoff (capped).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kubelet_sim.workloads import build_report, parse_workload
from kubelet_sim.workloads.virtual import run_virtual

WORKLOAD = """
apiVersion: kubelet-sim.dev/v1alpha1
kind: Workload
name: backoff
seed: 1
images:
  - {{repository: team/app, tags: ["1"], layers: [1MiB]}}
nodes:
  - {{name: node, count: 1{transport}}}
pods:
  - name: app
    count: 1
    spec: {{containers: [{{name: app, image: "team/app:{tag}"}}]}}
{faults}
virtual:
  registry: {{latency: 0s}}
run: {{timeout: 30m}}
"""


def run(
    tmp_path: Path, tag: str, faults: str = "", transport: str = ""
) -> tuple[dict[str, Any], Any]:
    text = WORKLOAD.format(tag=tag, faults=faults, transport=transport)
    result = run_virtual(parse_workload(text), tmp_path)
    return build_report(result), result


def expected_retries(first: float, took: float, until: float) -> list[float]:
    """Pull start times by the upstream rule: resync every 10 s after a sync ends; pull when
    the time since the last failure reaches the backoff (10 s, doubling, at most 300 s)."""
    starts, backoff, start = [], 10.0, first
    while start <= until:
        starts.append(start)
        failed = start + took
        sync = failed + 10.0
        while sync - failed < backoff:
            sync += 10.0
        start = sync
        backoff = min(2 * backoff, 300.0)
    return starts


def test_a_missing_tag_is_retried_on_the_kubelet_backoff_schedule(tmp_path: Path) -> None:
    report, result = run(tmp_path, tag="2")  # never pushed: 404 MANIFEST_UNKNOWN
    starts = [p["start"] for p in report["pulls"]]
    assert starts == [0.0, 10.0, 30.0, 70.0, 150.0, 310.0, 610.0, 910.0, 1210.0, 1510.0]
    assert starts == expected_retries(0.0, 0.0, 1800.0)
    assert all(p["error"] and p["end"] == p["start"] for p in report["pulls"])
    # containerd's resolver: a HEAD, then a GET when the HEAD fails; nothing else, no retries.
    assert sorted(result.model.view.requests.items()) == [(int(t), 2) for t in starts]
    assert report["registry_view"]["totals"]["answers"] == {"GET 404": 10, "HEAD 404": 10}
    # One sync every 10 s from 0 to 1800 s: 181; each not pulling emits BackOff, and every
    # sync "Error: <reason>"; each failed pull adds "Failed to pull image".
    assert report["summary"]["events_by_reason"] == {"BackOff": 171, "Failed": 191, "Pulling": 10}
    pod = report["pods"][0]
    assert pod["ready"] is None
    assert pod["containers"][0]["reason"] == "ImagePullBackOff"
    assert pod["containers"][0]["attempts"] == 10
    assert report["summary"]["waiting_reasons"] == {"ImagePullBackOff": 1}


def test_an_outage_is_retried_through_the_transport_then_the_kubelet_backoff(
    tmp_path: Path,
) -> None:
    faults = "faults: {windows: [{kind: outage, start: 0s, end: 1000s}]}"
    transport = ", transport: {retryPolicy: backoff}"  # kubelet-sim's own: exact times
    report, result = run(tmp_path, tag="1", faults=faults, transport=transport)
    pulls = [(p["start"], p["end"], p["error"]) for p in report["pulls"]]
    # Each failed pull is 4 transport attempts of the HEAD, reset by the outage, with 0.5, 1
    # and 2 s between them (3.5 s); the backoff counts from the failure, on the resync grid.
    failed = expected_retries(0.0, 3.5, 1000.0)
    assert failed == [0.0, 13.5, 37.0, 80.5, 164.0, 327.5, 631.0, 934.5]
    assert pulls == [(t, t + 3.5, True) for t in failed] + [(1238.0, 1238.0, False)]
    assert report["pods"][0]["ready"] == 1238.0
    answers = report["registry_view"]["totals"]["answers"]
    assert answers == {"HEAD reset": 4 * len(failed), "HEAD 200": 1, "GET 200": 3}
    outage = report["registry_view"]["outages"][0]
    assert (outage["start"], outage["end"]) == (0.0, 1000.0)
    assert outage["requests_during"] == outage["resets_during"] == 4 * len(failed)
    assert outage["peak_seconds_after_end"] == 238  # the first retry after the registry is back
    assert report["summary"]["events_by_reason"]["Pulled"] == 1
    assert result.model.view.to_dict()["errors"] == 4 * len(failed)


def test_a_bench_node_retries_an_outage_as_containerd_does(tmp_path: Path) -> None:
    # The default for bench nodes: 5 attempts of a reset request, 50 ms apart, no backoff.
    faults = "faults: {windows: [{kind: outage, start: 0s, end: 1000s}]}"
    report, result = run(tmp_path, tag="1", faults=faults)
    failed = [p for p in report["pulls"] if p["error"]]
    assert [round(p["end"] - p["start"], 4) for p in failed] == [0.2] * len(failed)
    assert len(failed) == len(expected_retries(0.0, 0.2, 1000.0))  # the kubelet's backoff
    answers = report["registry_view"]["totals"]["answers"]
    assert answers["HEAD reset"] == 5 * len(failed)
    assert report["pods"][0]["ready"] is not None
    assert result.model.view.to_dict()["errors"] == 5 * len(failed)


@pytest.mark.parametrize(
    ("first", "took", "until", "starts"),
    [
        pytest.param(0.0, 0.0, 100.0, [0.0, 10.0, 30.0, 70.0], id="instant-failures"),
        pytest.param(0.0, 3.5, 100.0, [0.0, 13.5, 37.0, 80.5], id="failures-take-3.5s"),
        pytest.param(
            5.0,
            0.0,
            2000.0,
            [5.0, 15.0, 35.0, 75.0, 155.0, 315.0, 615.0, 915.0, 1215.0, 1515.0, 1815.0],
            id="capped-at-300s",
        ),
    ],
)
def test_expected_retries_follows_the_upstream_rule(
    first: float, took: float, until: float, starts: list[float]
) -> None:
    assert expected_retries(first, took, until) == starts
