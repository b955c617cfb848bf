"""Thresholds: k6-style pass/fail criteria on a bench report, and bench's exit status 99."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from test_workloads_parse import MINIMAL

from kubelet_sim.cli.main import main
from kubelet_sim.errors import ConfigError
from kubelet_sim.workloads import parse_workload
from kubelet_sim.workloads.thresholds import THRESHOLDS_FAILED, evaluate, parse_threshold


@pytest.mark.parametrize(
    ("text", "metric", "op", "value"),
    [
        ("time_to_ready.p99 < 30s", "time_to_ready.p99", "<", 30.0),
        ("pods_not_ready == 0", "pods_not_ready", "==", 0.0),
        ("registry_errors_rate<0.01", "registry_errors_rate", "<", 0.01),
        ("  makespan <= 1m30s ", "makespan", "<=", 90.0),
        ("time_to_ready.p50 >= 250ms", "time_to_ready.p50", ">=", 0.25),
        ("bytes_pulled > 64MiB", "bytes_pulled", ">", 64 * 2**20),
        ("resources.peak_rss_mib != 1e3", "resources.peak_rss_mib", "!=", 1000.0),
        ("groups.pool.time_to_ready.p90 < 2s", "groups.pool.time_to_ready.p90", "<", 2.0),
        ("templates.web-a.time_to_ready.max < 5", "templates.web-a.time_to_ready.max", "<", 5.0),
    ],
)
def test_a_threshold_reads_metric_op_and_value(
    text: str, metric: str, op: str, value: float
) -> None:
    t = parse_threshold(text, groups=["pool"], templates=["web-a"])
    assert (t.metric, t.op, t.value) == (metric, op, value)
    assert t.text == text.strip()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("time_to_ready.p99", "is not METRIC OP VALUE"),
        ("time_to_ready.p99 =< 3s", "is not METRIC OP VALUE"),
        ("latency.p99 < 3s", "'latency.p99' is not a report metric"),
        ("time_to_ready.p99 < fast", "'fast' is not a number, a duration"),
        ("time_to_ready.p99 < nan", "is not a finite number"),
        ("groups.other.time_to_ready.p99 < 1s", "node groups (pool)"),
        ("templates.web < 1s", "as templates.NAME.time_to_ready.p99"),
        (42, "expected a string"),
    ],
)
def test_a_bad_threshold_says_what_is_wrong(text: Any, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_threshold(text, groups=["pool"], templates=["web"])


REPORT: dict[str, Any] = {
    "summary": {
        "pods": 10,
        "pods_ready": 9,
        "pods_not_ready": 1,
        "pulls": 20,
        "pull_errors": 2,
        "time_to_ready": {"p50": 1.5, "p99": None},
        "registry_requests_by_status": {"200": 90, "401": 5, "503": 3, "429": 1, "none": 1},
        "events_by_reason": {"Pulled": 9},
        "resources": {"peak_rss_mib": 80.0},
    },
    "groups": {"pool": {"time_to_ready": {"p90": 1.9}}},
    "templates": {},
}


def test_thresholds_are_checked_against_the_report() -> None:
    texts = [
        "time_to_ready.p50 < 2s",
        "time_to_ready.p99 < 30s",  # null: a pod never became ready
        "pods_not_ready == 0",
        "registry_errors_rate < 0.01",  # 503, 429 and no answer; the 401 challenge is not one
        "pull_errors_rate <= 0.1",
        "ready_rate >= 0.9",
        "groups.pool.time_to_ready.p90 < 2s",
        "resources.peak_rss_mib < 64MiB",  # the metric counts MiB: 80 is not under 64
        "resources.peak_rss_mib < 0.1GiB",
        "events_by_reason.BackOff == 0",  # never seen: counted zero times
    ]
    results = evaluate([parse_threshold(t, groups=["pool"]) for t in texts], REPORT)
    assert [(r["threshold"], r["passed"]) for r in results] == [
        ("time_to_ready.p50 < 2s", True),
        ("time_to_ready.p99 < 30s", False),
        ("pods_not_ready == 0", False),
        ("registry_errors_rate < 0.01", False),
        ("pull_errors_rate <= 0.1", True),
        ("ready_rate >= 0.9", True),
        ("groups.pool.time_to_ready.p90 < 2s", True),
        ("resources.peak_rss_mib < 64MiB", False),
        ("resources.peak_rss_mib < 0.1GiB", True),
        ("events_by_reason.BackOff == 0", True),
    ]
    assert results[1]["value"] is None
    assert "never became ready" in results[1]["note"]
    assert results[3]["value"] == pytest.approx(5 / 100)


def test_a_metric_the_report_lacks_fails_with_a_note() -> None:
    (result,) = evaluate([parse_threshold("time_to_ready.p90 < 1s")], REPORT)
    assert result == {
        "threshold": "time_to_ready.p90 < 1s",
        "value": None,
        "passed": False,
        "note": "the report has no time_to_ready.p90",
    }
    (result,) = evaluate([parse_threshold("time_to_ready < 1s")], REPORT)
    assert result["note"] == "time_to_ready is not a number in the report"


def test_the_workload_names_the_line_of_a_bad_threshold() -> None:
    text = MINIMAL + 'thresholds:\n  - "pods_not_ready == 0"\n  - "p99 < 3s"\n'
    with pytest.raises(ConfigError) as caught:
        parse_workload(text, "w.yaml")
    message = str(caught.value)
    assert "w.yaml:" in message
    assert "thresholds[1]" in message
    assert "'p99' is not a report metric" in message
    workload = parse_workload(MINIMAL + 'thresholds: ["templates.p.time_to_ready.p99 < 9s"]\n')
    assert [t.metric for t in workload.thresholds] == ["templates.p.time_to_ready.p99"]


TINY = """\
apiVersion: kubelet-sim.dev/v1alpha1
kind: Workload
name: gate
images:
  - {repository: a/b, tags: ["1"], layers: [64KiB]}
nodes:
  - {name: pool, count: 2}
pods:
  - name: web
    count: 4
    spec: {containers: [{name: c, image: "a/b:1"}]}
  - name: typo
    count: 1
    spec: {containers: [{name: c, image: "a/b:nope"}]}
run: {timeout: 60s}
"""


def bench(tmp_path: Path, thresholds: list[str], *flags: str) -> int:
    path = tmp_path / "w.yaml"
    path.write_text(TINY + "thresholds:\n" + "".join(f'  - "{t}"\n' for t in thresholds))
    out = tmp_path / "out"
    return main(["bench", str(path), "--virtual", "--quiet", "--no-plots", "--out", str(out),
                 *flags])  # fmt: skip


def test_bench_passes_when_every_threshold_holds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = bench(tmp_path, ["templates.web.time_to_ready.p99 < 5m", "pods_ready == 4"])
    text = capsys.readouterr().out
    assert status == 0
    assert "threshold pass: templates.web.time_to_ready.p99 < 5m" in text
    assert "threshold pass: pods_ready == 4  (is 4)" in text
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [t["passed"] for t in report["summary"]["thresholds"]] == [True, True]
    assert "## Thresholds" in (tmp_path / "out" / "report.md").read_text()


def test_bench_exits_99_and_says_which_threshold_failed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = bench(tmp_path, ["pods_not_ready == 0", "time_to_ready.p50 < 5m"])
    text = capsys.readouterr().out
    assert status == THRESHOLDS_FAILED == 99
    assert "threshold FAIL: pods_not_ready == 0  (is 1)" in text
    assert "threshold pass: time_to_ready.p50 < 5m" in text
    assert "1 of 2 thresholds failed: exit status 99" in text


def test_bench_json_output_carries_the_thresholds_and_the_exit_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = bench(tmp_path, ["pods_not_ready == 0"], "--output", "json")
    out = capsys.readouterr().out
    summary = json.loads(out)  # stdout is the one JSON document, nothing else
    assert status == 99
    assert summary["thresholds"] == [
        {"threshold": "pods_not_ready == 0", "value": 1.0, "passed": False}
    ]
