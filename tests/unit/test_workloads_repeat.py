"""``bench --repeat``: the median and spread of each figure over runs, the repeat report built from
run reports, compare's noise verdict, and load_report's refusal of a malformed repeat section."""

from __future__ import annotations

import argparse
import copy
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from kubelet_sim.cli.commands import bench as bench_command
from kubelet_sim.errors import ConfigError
from kubelet_sim.workloads import build_report, parse_workload
from kubelet_sim.workloads.compare import (
    compare_columns,
    compare_markdown,
    compare_reports,
    load_report,
    noise_note,
    render_compare,
    report_figures,
    verdict_summary,
)
from kubelet_sim.workloads.markdown import render_markdown
from kubelet_sim.workloads.outputs import check_writable
from kubelet_sim.workloads.repeat import (
    aggregate_reports,
    figure_stats,
    median,
    noise_band,
    noise_verdict,
    parse_repeat,
    repeat_markdown,
    save_repeat,
)
from kubelet_sim.workloads.report import SCHEMA
from kubelet_sim.workloads.virtual import run_virtual

# -- the statistics -----------------------------------------------------------------------------


def test_median_odd_and_even_counts() -> None:
    assert median([3, 1, 2]) == 2
    assert isinstance(median([3, 1, 2]), int)  # counts stay counts
    assert median([4, 1, 3, 2]) == 2.5  # the mean of the middle two
    assert median([0.3, 0.1, 0.2, 0.4, 10.0]) == 0.3  # one outlying run moves nothing
    assert median([7]) == 7


def test_missing_values_count_as_slowest() -> None:
    assert median([1.0, None, 3.0]) == 3.0  # the middle of 1, 3, not ready
    assert median([1.0, None, None]) is None  # the middle is not ready
    assert median([1.0, None]) is None  # the middle two are 1 and not ready
    stats = figure_stats([2.0, None, 1.0])
    assert (stats["min"], stats["max"], stats["median"]) == (1.0, None, 2.0)
    assert stats["iqr"] is None  # Q3 falls among the not ready


def test_figure_stats_odd_count() -> None:
    # Quartiles interpolated linearly between order statistics: Q1 halfway from 10 to 11, Q3
    # halfway from 11 to 15.
    assert figure_stats([15, 10, 11]) == {
        "values": [15, 10, 11], "median": 11, "min": 10, "max": 15, "q1": 10.5, "q3": 13,
        "iqr": 2.5,
    }  # fmt: skip


def test_figure_stats_even_count() -> None:
    stats = figure_stats([1.0, 4.0, 2.0, 3.0])
    # positions (n-1)p: Q1 at 0.75 (1 + 0.75), median at 1.5, Q3 at 2.25 (3 + 0.25)
    assert stats == {"values": [1.0, 4.0, 2.0, 3.0], "median": 2.5, "min": 1.0, "max": 4.0,
                     "q1": 1.75, "q3": 3.25, "iqr": 1.5}  # fmt: skip


def test_noise_band_is_the_notches_added() -> None:
    # IQR 0.05 on each side, 3 runs each: 1.58 * 2 * 0.05 / sqrt(3)
    band = noise_band([1.0, 1.05, 1.1], [2.0, 2.05, 2.1])
    assert band == pytest.approx(1.58 * 2 * 0.05 / math.sqrt(3))
    assert noise_band([1.0], [1.0, 2.0]) is None  # one run: no spread
    assert noise_band([1.0, None], [1.0, 2.0]) is None


@pytest.mark.parametrize(
    ("a", "b", "verdict"),
    [
        pytest.param([1.0, 1.1, 1.2], [1.15, 1.25, 1.35], 0, id="ranges-overlap"),
        pytest.param([1.0, 1.1, 1.2], [1.0, 1.1, 1.2], 0, id="identical"),
        pytest.param([1.0, 1.05, 1.1], [1.11, 1.16, 1.21], 1, id="apart-and-beyond-the-notches"),
        pytest.param([1.11, 1.16, 1.21], [1.0, 1.05, 1.1], -1, id="lower"),
        # Every run of B beats every run of A, but A is skewed (one fast run): the medians moved
        # 0.052, less than the notches' 0.114.
        pytest.param([1.0, 1.05, 1.1], [1.101, 1.102, 1.25], 0, id="apart-within-the-notches"),
        pytest.param([2.0, 2.0, 2.0, 2.0], [2.5, 2.5, 2.5, 2.5], 1, id="deterministic-runs"),
        pytest.param([1.0, 2.0], [3.0, 4.0], 1, id="two-runs-each"),
        pytest.param([1.0], [3.0, 4.0], None, id="one-run-no-spread"),
        pytest.param([1.0, None, 2.0], [1.0, 2.0, 3.0], None, id="some-not-ready"),
        pytest.param([None, None], [None, None], 0, id="never-ready-either-side"),
        pytest.param([1.0, 2.0], [None, None], 1, id="B-never-ready-is-slower"),
        pytest.param([None, None], [1.0, 2.0], -1, id="A-never-ready"),
    ],
)
def test_noise_verdict(a: list[float | None], b: list[float | None], verdict: int | None) -> None:
    assert noise_verdict(a, b) == verdict


@pytest.mark.parametrize("text", ["0", "101", "x", "-1", "2.5", "", "٣", "1e2"])
def test_repeat_count_is_refused_naming_the_flag(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_repeat(text)
    assert info.value.field == "--repeat"
    assert "from 1 to 100" in str(info.value)


def test_repeat_count_accepted() -> None:
    assert [parse_repeat(t) for t in ("1", "5", "100", " 3 ")] == [1, 5, 100, 3]


# -- compare's verdict on constructed reports ---------------------------------------------------


def _report(name: str, p50: float, pulls: int, cpu: float) -> dict[str, Any]:
    ttr = {"p50": p50, "p90": p50 * 2, "p99": p50 * 3, "max": p50 * 4}
    summary = {
        "nodes": 2, "pods_ready": 4, "time_to_ready": ttr, "makespan": p50 * 5, "pulls": pulls,
        "pull_errors": 0, "cache_hits": 1, "bytes_pulled": 2**20, "registry_requests": 10,
        "registry_retries": 0, "backoffs": 0, "peak_pulls_in_flight_max": 1,
        "resources": {"cpu_seconds": cpu, "peak_rss_mib": 80.0},
    }  # fmt: skip
    return {
        "schema": SCHEMA,
        "workload": {"name": name},
        "summary": summary,
        "groups": {"g": {"time_to_ready": dict(ttr), "makespan": p50 * 5}},
    }


def _repeat(name: str, p50s: list[float], pulls: list[int], cpus: list[float]) -> dict[str, Any]:
    """A repeat report as aggregate_reports writes one: each figure the median of the runs'."""
    runs = [_report(name, p, n, c) for p, n, c in zip(p50s, pulls, cpus, strict=True)]
    figures: dict[str, dict[str, Any]] = {}
    for run in runs:
        for figure, unit, value in report_figures(run):
            figures.setdefault(figure, {"unit": unit, "values": []})["values"].append(value)
    out = _report(name, 0.0, 0, 0.0)
    ttr = out["summary"]["time_to_ready"]
    for key, factor in (("p50", 1), ("p90", 2), ("p99", 3), ("max", 4)):
        ttr[key] = median([p * factor for p in p50s])
    out["summary"]["makespan"] = median([p * 5 for p in p50s])
    out["groups"]["g"] = {"time_to_ready": dict(ttr), "makespan": out["summary"]["makespan"]}
    out["summary"]["pulls"] = median(pulls)
    out["summary"]["resources"]["cpu_seconds"] = median(cpus)
    out["repeat"] = {"runs": len(runs), "figures": {k: v | figure_stats(v["values"])
                                                    for k, v in figures.items()}}  # fmt: skip
    return out


def test_within_noise_every_row_is_a_tilde() -> None:
    a = _repeat("a", [1.0, 1.1, 1.2], [8, 8, 8], [0.5, 0.6, 0.7])
    b = _repeat("b", [1.05, 1.15, 1.25], [8, 8, 8], [0.55, 0.65, 0.75])  # ranges overlap
    rows = compare_reports(a, b)
    assert {r.verdict for r in rows} == {"~"}
    assert rows[0].to_dict()["a_runs"] == figure_stats([2, 2, 2])
    assert verdict_summary(rows) == f"0 of {len(rows)} figures changed beyond noise"
    assert noise_note(a, b) is None


def test_outside_noise_says_how_b_moved() -> None:
    a = _repeat("a", [1.0, 1.05, 1.1], [8, 8, 8], [0.5, 0.6, 0.7])
    b = _repeat("b", [2.0, 2.05, 2.1], [12, 12, 13], [0.2, 0.21, 0.22])
    rows = {r.figure: r for r in compare_reports(a, b)}
    assert rows["time to ready p50"].verdict == "slower"
    assert rows["g: makespan"].verdict == "slower"
    assert rows["pulls"].verdict == "more"
    assert rows["CPU"].verdict == "less"
    assert rows["bytes pulled"].verdict == "~"
    assert rows["time to ready p50"].noise == pytest.approx(1.58 * 2 * 0.05 / math.sqrt(3))
    text = render_compare(a, b, list(rows.values()))
    assert compare_columns(a, b) == ["figure", "A median", "A IQR", "B median", "B IQR",
                                     "change", "B/A", "verdict"]  # fmt: skip
    p50 = next(r for r in text if r[0] == "time to ready p50")
    assert p50 == ["time to ready p50", "1.050 s", "0.050 s", "2.050 s", "0.050 s", "+1.000 s",
                   "1.95", "slower"]  # fmt: skip
    summary = verdict_summary(list(rows.values()))
    assert summary.startswith(f"10 of {len(rows)} figures changed beyond noise: time to ready p50")
    md = compare_markdown(a, b)
    assert "| figure | A median | A IQR | B median | B IQR | change | B/A | verdict |" in md
    assert "| pulls | 8 | 0 | 12 | 0.500 | +4 | 1.50 | more |" in md
    assert "Medians of 3 runs (A) and 3 runs (B)." in md


def test_one_side_single_run_behaves_as_before_with_a_note() -> None:
    a = _report("a", 1.0, 8, 0.5)
    b = _repeat("b", [2.0, 2.05, 2.1], [12, 12, 13], [0.2, 0.21, 0.22])
    rows = compare_reports(a, b)
    assert all(r.verdict is None and r.noise is None for r in rows)
    assert compare_columns(a, b) == ["figure", "A", "B", "change", "B/A"]
    assert ["time to ready p50", "1.000 s", "2.050 s", "+1.050 s", "2.05"] in render_compare(
        a, b, rows
    )
    note = noise_note(a, b)
    assert note is not None
    assert "A is a single run, B is a repeat report of 3 runs" in note
    assert "--repeat 5" in note
    assert note in compare_markdown(a, b)
    one = _repeat("c", [1.0], [8], [0.5])  # --repeat 1: a repeat report, but no spread
    assert "A is a repeat report of 1 run," in (noise_note(one, b) or "")
    assert all(r.verdict is None for r in compare_reports(one, b))


def test_a_figure_missing_from_a_repeat_section_is_a_question_mark() -> None:
    a = _repeat("a", [1.0, 1.05, 1.1], [8, 8, 8], [0.5, 0.6, 0.7])
    b = _repeat("b", [2.0, 2.05, 2.1], [8, 8, 8], [0.5, 0.6, 0.7])
    del b["repeat"]["figures"]["pulls"]
    rows = {r.figure: r for r in compare_reports(a, b)}
    assert rows["pulls"].verdict == "?"
    assert rows["pulls"].to_dict()["a_runs"] is None


# -- load_report --------------------------------------------------------------------------------


def _write(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / "r.json"
    path.write_text(json.dumps(doc))
    return path


def test_a_well_formed_repeat_report_loads(tmp_path: Path) -> None:
    doc = _repeat("a", [1.0, 1.05, 1.1], [8, 8, 9], [0.5, 0.6, 0.7])
    assert load_report(_write(tmp_path, doc))["repeat"]["runs"] == 3


def _values(name: str, values: Any) -> Any:
    def change(doc: dict[str, Any]) -> None:
        doc["repeat"]["figures"][name]["values"] = values

    return change


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        pytest.param(lambda d: d.update(repeat=[3]), "repeat", "not an object", id="list"),
        pytest.param(
            lambda d: d["repeat"].update(runs="3"),
            "repeat.runs",
            "expected a whole number from 1 to 100, got '3'",
            id="runs-string",
        ),
        pytest.param(
            lambda d: d["repeat"].update(runs=True), "repeat.runs", "got True", id="runs-bool"
        ),
        pytest.param(lambda d: d["repeat"].update(runs=0), "repeat.runs", "got 0", id="runs-0"),
        pytest.param(
            lambda d: d["repeat"].update(runs=10**400), "repeat.runs", "...", id="runs-huge"
        ),
        pytest.param(lambda d: d["repeat"].pop("runs"), "repeat.runs", "got None", id="no-runs"),
        pytest.param(
            lambda d: d["repeat"].update(figures=None),
            "repeat.figures",
            "missing or not an object",
            id="figures-null",
        ),
        pytest.param(
            lambda d: d["repeat"]["figures"].update(pulls=5),
            "repeat.figures.pulls",
            "not an object",
            id="figure-number",
        ),
        pytest.param(
            _values("pulls", [8, 8]),
            "repeat.figures.pulls.values",
            "expected 3 numbers (or null), one per run",
            id="too-few-values",
        ),
        pytest.param(
            _values("pulls", [8, "8", 9]),
            "repeat.figures.pulls.values",
            "expected 3 numbers",
            id="value-string",
        ),
        pytest.param(
            _values("pulls", "889"),
            "repeat.figures.pulls.values",
            "expected 3 numbers",
            id="values-string",
        ),
        pytest.param(
            _values("pulls", [8, 10**400, 9]),
            "repeat.figures.pulls.values",
            "expected 3 numbers",
            id="value-huge",
        ),
        pytest.param(
            lambda d: d["repeat"]["figures"]["pulls"].update(iqr="wide"),
            "repeat.figures.pulls.iqr",
            "not a number",
            id="iqr-string",
        ),
        # Values edited without the figure: the verdict and the table would disagree.
        pytest.param(
            _values("pulls", [80, 80, 90]),
            "repeat.figures.pulls.values",
            "their median (80) is not the report's figure (8)",
            id="median-mismatch",
        ),
    ],
)
def test_a_malformed_repeat_section_is_refused_naming_the_field(
    tmp_path: Path, change: Any, field: str, message: str
) -> None:
    doc = _repeat("a", [1.0, 1.05, 1.1], [8, 8, 9], [0.5, 0.6, 0.7])
    change(doc)
    path = _write(tmp_path, doc)
    with pytest.raises(ConfigError) as info:
        load_report(path)
    assert (info.value.file, info.value.field) == (str(path), field)
    assert message in info.value.message


# -- aggregation of real run reports ------------------------------------------------------------

TINY = """\
apiVersion: kubelet-sim.dev/v1alpha1
kind: Workload
name: repeat-unit
images:
  - {repository: a/b, tags: ["1"], layers: [64KiB]}
nodes:
  - {name: pool, count: 2}
pods:
  - name: web
    count: 4
    spec: {containers: [{name: c, image: "a/b:1"}]}
run: {timeout: 60s}
thresholds: ["time_to_ready.p50 < 6s", "registry_requests_by_status.503 <= 1"]
"""


@pytest.fixture(scope="module")
def one_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The report of one real (virtual-time) run: the shape every run report has."""
    workload = parse_workload(TINY, "w.yaml")
    return build_report(run_virtual(workload, tmp_path_factory.mktemp("stores")))


def _runs(one_run: dict[str, Any], p50s: list[float | None]) -> list[dict[str, Any]]:
    """Copies of ``one_run`` with their time to ready p50 (and one count) changed."""
    runs = []
    for k, p50 in enumerate(p50s):
        run = copy.deepcopy(one_run)
        run["summary"]["time_to_ready"]["p50"] = p50
        run["groups"]["pool"]["time_to_ready"]["p50"] = p50
        run["summary"]["pulls"] = 10 + k
        run["summary"]["health"]["warnings"] = ["loop lag p99 60 ms"] if k != 1 else []
        run["pods"] = [{"marker": k}]
        if k == 2:  # only this run saw 503s: the others count zero there
            run["summary"]["registry_requests_by_status"]["503"] = 6
        runs.append(run)
    return runs


def test_aggregate_takes_each_figures_median_and_the_median_runs_detail(
    one_run: dict[str, Any],
) -> None:
    runs = _runs(one_run, [9.0, 1.0, 5.0])
    report = aggregate_reports(runs, ["run-1", "run-2", "run-3"])
    s = report["summary"]
    assert s["time_to_ready"]["p50"] == 5.0
    assert report["groups"]["pool"]["time_to_ready"]["p50"] == 5.0
    assert s["pulls"] == 11
    assert s["registry_requests_by_status"]["503"] == 0  # median of 0, 0, 6
    assert report["pods"] == [{"marker": 2}]  # run-3's: its p50 is the median
    rep = report["repeat"]
    assert (rep["runs"], rep["planned"], rep["median_run"], rep["interrupted"]) == (3, 3, 3, False)
    assert (rep["statistic"], rep["spread"]) == ("median", "iqr")
    assert rep["figures"]["time to ready p50"] == {"unit": "s", **figure_stats([9.0, 1.0, 5.0])}
    assert rep["figures"]["pool: time to ready p50"]["iqr"] == 4.0
    assert list(rep["figures"]) == [name for name, _, _ in report_figures(report)]
    assert s["health"]["warnings"] == ["loop lag p99 60 ms (runs 1, 3 of 3)"]


def test_thresholds_are_checked_on_the_medians(one_run: dict[str, Any]) -> None:
    # One run of three breaks both thresholds (p50 9 s, 6 answers 503): the medians pass.
    assert [t["passed"] for t in one_run["summary"]["thresholds"]] == [True, True]
    slow = _runs(one_run, [9.0, 1.0, 5.0])
    slow[0]["summary"]["registry_requests_by_status"]["503"] = 6
    report = aggregate_reports(slow, ["run-1", "run-2", "run-3"])
    assert [(t["value"], t["passed"]) for t in report["summary"]["thresholds"]] == [
        (5.0, True), (6.0, False)  # 503s: median of 6, 0, 6
    ]  # fmt: skip
    fast = aggregate_reports(_runs(one_run, [9.0, 1.0, 2.0]), ["run-1", "run-2", "run-3"])
    assert fast["summary"]["thresholds"][0] == {
        "threshold": "time_to_ready.p50 < 6s", "value": 2.0, "passed": True
    }  # fmt: skip


def test_aggregate_even_runs_and_not_ready(one_run: dict[str, Any]) -> None:
    report = aggregate_reports(_runs(one_run, [4.0, 1.0, None, 2.0]), [f"run-{k}" for k in "1234"])
    # sorted: 1, 2, 4, not ready: the mean of the middle two; the median run is the lower one.
    assert report["summary"]["time_to_ready"]["p50"] == 3.0
    assert report["repeat"]["median_run"] == 4
    assert report["summary"]["pulls"] == 11.5
    stats = report["repeat"]["figures"]["time to ready p50"]
    assert (stats["min"], stats["max"]) == (1.0, None)


def test_an_interrupted_repeat_is_marked_partial(one_run: dict[str, Any]) -> None:
    runs = _runs(one_run, [1.0, 2.0])
    runs[1]["run"]["interrupted"] = True
    report = aggregate_reports(runs, ["run-1", "run-2"], planned=5)
    assert report["run"]["interrupted"] is True
    assert report["run"]["partial"] is True
    assert (report["repeat"]["runs"], report["repeat"]["planned"]) == (2, 5)
    assert report["repeat"]["interrupted"] is True


def test_runs_of_different_workloads_are_refused(one_run: dict[str, Any]) -> None:
    runs = _runs(one_run, [1.0, 2.0])
    runs[1]["workload"]["sha256"] = "0" * 64
    with pytest.raises(ConfigError, match="different workload files"):
        aggregate_reports(runs, ["run-1", "run-2"])


def test_the_repeat_report_is_loadable_and_its_markdown_says_so(
    one_run: dict[str, Any], tmp_path: Path
) -> None:
    runs = _runs(one_run, [9.0, 1.0, 5.0])
    runs[2]["plots"] = ["pull-timeline.png"]
    report = aggregate_reports(runs, ["run-1", "run-2", "run-3"])
    assert report["plots"] == ["run-3/pull-timeline.png"]
    assert load_report(_write(tmp_path, report))["repeat"]["runs"] == 3
    text = repeat_markdown(report, "# title\n\n## Headline figures\n\n![p](pull-timeline.png)\n")
    assert text.index("## Repeat: median of 3 runs") < text.index("## Headline figures")
    assert "![p](run-3/pull-timeline.png)" in text
    assert "| time to ready p50 | 5.000 s | 1.000 s | 9.000 s | 4.000 s | 80% |" in text


# -- bench's loop over the runs -----------------------------------------------------------------


def _console() -> Console:
    return Console(file=io.StringIO(), width=200)


def _said(console: Console) -> str:
    file = console.file
    assert isinstance(file, io.StringIO)
    return file.getvalue()


def test_ctrl_c_before_a_run_wrote_its_report_drops_only_that_run(
    one_run: dict[str, Any], tmp_path: Path
) -> None:
    calls: list[str] = []

    def run_once(out: Path) -> dict[str, Any]:
        calls.append(out.name)
        if len(calls) == 3:
            raise KeyboardInterrupt  # e.g. while seeding, or a virtual run
        return copy.deepcopy(one_run)

    (tmp_path / "run-7").mkdir()  # from an earlier --repeat 7
    console = _console()
    reports, interrupted = bench_command._repeat_runs(console, tmp_path, 5, run_once)
    assert (len(reports), interrupted) == (2, True)
    assert calls == ["run-1", "run-2", "run-3"]
    assert not (tmp_path / "run-3").exists()  # empty: removed
    assert "interrupted: run 3 is dropped (it wrote no report)" in _said(console)
    args = argparse.Namespace(output="text")
    bench_command._emit_repeat(args, console, tmp_path, 5, reports, True)
    # named once the repeat report of runs 1-2 is in place, and the report not as an earlier one
    said = _said(console)
    assert f"note: run-7 in {tmp_path} are from an earlier repeat, not this one" in said
    assert load_report(tmp_path / "report.json")["repeat"]["runs"] == 2
    console = _console()
    assert bench_command._emit_repeat(args, console, tmp_path, 5, [], True) == 130
    assert "interrupted before any run wrote its report: no repeat report" in _said(console)


def test_a_run_ctrl_c_ended_with_a_partial_report_is_kept_and_ends_the_repeat(
    one_run: dict[str, Any], tmp_path: Path
) -> None:
    def run_once(out: Path) -> dict[str, Any]:
        report = copy.deepcopy(one_run)
        report["run"]["interrupted"] = out.name == "run-2"
        return report

    reports, interrupted = bench_command._repeat_runs(_console(), tmp_path, 4, run_once)
    assert (len(reports), interrupted) == (2, True)
    assert reports[1]["run"]["interrupted"] is True
    assert not (tmp_path / "run-3").exists()


# -- a report folder holds one run's files ------------------------------------------------------


def _earlier_run(folder: Path) -> None:
    """What an earlier run left in ``folder``: its report and two of its plots."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("report.json", "report.md", "pull-timeline.png", "registry-view.png"):
        (folder / name).write_text(f"earlier {name}")


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_repeat_that_fails_leaves_the_earlier_repeats_folders_as_they_were_and_names_them(
    one_run: dict[str, Any], tmp_path: Path
) -> None:
    _earlier_run(tmp_path / "run-2")  # from an earlier --repeat 3
    _earlier_run(tmp_path / "run-3")
    _earlier_run(tmp_path)  # and its repeat report

    def run_once(out: Path) -> dict[str, Any]:
        if out.name == "run-2":
            raise ConfigError(None, "--registry", "not reachable")  # before anything ran
        return copy.deepcopy(one_run)

    console = _console()
    with pytest.raises(ConfigError, match="not reachable"):
        bench_command._repeat_runs(console, tmp_path, 3, run_once)
    assert _files(tmp_path / "run-2") == _files(tmp_path / "run-3") == [
        "pull-timeline.png", "registry-view.png", "report.json", "report.md"
    ]  # fmt: skip
    assert (tmp_path / "run-2" / "report.json").read_text() == "earlier report.json"
    assert (tmp_path / "report.json").read_text() == "earlier report.json"
    said = _said(console)
    assert (
        f"note: report.json, report.md, run-2, run-3 in {tmp_path} are from an earlier repeat, "
        "not this one"
    ) in said


def test_ctrl_c_in_a_reused_run_folder_drops_the_run_and_names_the_folder_as_earlier(
    one_run: dict[str, Any], tmp_path: Path
) -> None:
    _earlier_run(tmp_path / "run-2")

    def run_once(out: Path) -> dict[str, Any]:
        if out.name == "run-2":
            raise KeyboardInterrupt
        return copy.deepcopy(one_run)

    console = _console()
    reports, interrupted = bench_command._repeat_runs(console, tmp_path, 3, run_once)
    assert (len(reports), interrupted) == (1, True)
    assert _files(tmp_path) == ["run-1", "run-2"]  # run 3 never started
    said = _said(console)
    assert "interrupted: run 2 is dropped (it wrote no report)" in said
    assert "note:" not in said  # not yet: once the repeat report of run 1 is in
    bench_command._emit_repeat(argparse.Namespace(output="text"), console, tmp_path, 3, reports,
                               interrupted)  # fmt: skip
    assert f"note: run-2 in {tmp_path} are from an earlier repeat, not this one" in _said(console)


def test_a_report_saved_without_plots_takes_the_earlier_runs_plots_and_links_away(
    one_run: dict[str, Any], tmp_path: Path
) -> None:
    _earlier_run(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    report = bench_command._save(copy.deepcopy(one_run), tmp_path, plots=False)
    assert _files(tmp_path) == ["notes.txt", "report.json", "report.md"]  # no staging left
    assert json.loads((tmp_path / "report.json").read_text()) == json.loads(json.dumps(report))
    markdown = (tmp_path / "report.md").read_text()
    assert ".png" not in markdown
    assert "None drawn for this report (`--no-plots`)." in markdown


def test_a_report_lists_only_the_plots_drawn_for_it(one_run: dict[str, Any]) -> None:
    report = copy.deepcopy(one_run)
    report["plots"] = ["pull-timeline.png", "bytes-over-time.png"]
    markdown = render_markdown(report)
    assert "![Pull timeline per node](pull-timeline.png)" in markdown
    assert "![Bytes served over time](bytes-over-time.png)" in markdown
    assert markdown.count(".png)") == 2


def test_a_report_stopped_while_it_is_written_leaves_the_earlier_one_whole(
    one_run: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _earlier_run(tmp_path)

    def stopped(report: dict[str, Any], out: Path) -> list[Path]:
        (out / "pull-timeline.png").write_text("half of this run's plots")
        raise KeyboardInterrupt

    monkeypatch.setattr("kubelet_sim.workloads.plots.write_plots", stopped)
    with pytest.raises(KeyboardInterrupt):
        bench_command._save(copy.deepcopy(one_run), tmp_path, plots=True)
    assert _files(tmp_path) == ["pull-timeline.png", "registry-view.png", "report.json",
                                "report.md"]  # fmt: skip
    assert {(tmp_path / name).read_text() for name in _files(tmp_path)} == {
        f"earlier {name}" for name in _files(tmp_path)
    }


def test_a_repeat_report_replaces_an_earlier_single_runs_report_and_plots(
    one_run: dict[str, Any], tmp_path: Path
) -> None:
    _earlier_run(tmp_path)
    report = aggregate_reports(_runs(one_run, [1.0, 2.0]), ["run-1", "run-2"])
    save_repeat(report, tmp_path)
    assert _files(tmp_path) == ["report.json", "report.md"]
    assert load_report(tmp_path / "report.json")["repeat"]["runs"] == 2


def test_a_report_folder_that_cannot_be_written_is_named_before_the_run(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    for out in (tmp_path / "a-file", tmp_path / "a-file" / "sub"):
        with pytest.raises(ConfigError, match=rf"--out.*cannot write into {out}"):
            check_writable(out)
    check_writable(tmp_path / "new" / "folder")  # made, and left empty
    assert _files(tmp_path / "new" / "folder") == []


def test_a_report_file_that_cannot_be_put_in_place_is_named_and_nothing_is_half_done(
    one_run: dict[str, Any], tmp_path: Path
) -> None:
    _earlier_run(tmp_path)
    (tmp_path / "report.md").unlink()
    (tmp_path / "report.md").mkdir()  # in the way: a file cannot be renamed over a folder
    with pytest.raises(ConfigError, match=r"--out.*cannot put .*report\.md in place: it is a"):
        bench_command._save(copy.deepcopy(one_run), tmp_path, plots=False)
    # checked before anything moved: the earlier run's files as they were, no staging left
    assert _files(tmp_path) == ["pull-timeline.png", "registry-view.png", "report.json",
                                "report.md"]  # fmt: skip
    assert (tmp_path / "report.json").read_text() == "earlier report.json"


def test_report_json_goes_in_last_and_the_earlier_runs_leftovers_go_after_it(
    one_run: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _earlier_run(tmp_path)
    moves: list[str] = []
    replace = os.replace

    def recorded(src: Path, dst: Path) -> None:
        moves.append(Path(dst).name)
        replace(src, dst)

    unlink = Path.unlink

    def removed(path: Path, missing_ok: bool = False) -> None:
        moves.append(f"-{path.name}")
        unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr("kubelet_sim.workloads.outputs.os.replace", recorded)
    monkeypatch.setattr(Path, "unlink", removed)
    bench_command._save(copy.deepcopy(one_run), tmp_path, plots=False)
    assert moves[:2] == ["report.md", "report.json"]
    assert sorted(moves[2:]) == ["-pull-timeline.png", "-registry-view.png"]  # what was there


def test_a_repeat_report_that_cannot_be_saved_names_the_earlier_one_left_in_its_place(
    one_run: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _earlier_run(tmp_path)  # an earlier repeat's report
    (tmp_path / "run-3").mkdir()  # and its third run
    (tmp_path / "run-4").write_text("a file, not a run folder")

    def refused(report: dict[str, Any], out: Path) -> None:
        raise ConfigError(None, "--out", "cannot write the report")

    monkeypatch.setattr("kubelet_sim.workloads.repeat.save_repeat", refused)
    console = _console()
    runs = _runs(one_run, [1.0, 2.0])
    with pytest.raises(ConfigError, match="cannot write the report"):
        bench_command._emit_repeat(argparse.Namespace(output="text"), console, tmp_path, 2, runs,
                                   False)  # fmt: skip
    assert (
        f"note: report.json, report.md, run-3 in {tmp_path} are from an earlier repeat, "
        "not this one"
    ) in _said(console)


def test_a_killed_runs_private_folder_is_swept_and_a_live_ones_kept(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    (tmp_path / f".report-{dead.stdout.strip()}-abc123").mkdir()  # its process is gone
    (tmp_path / f".report-{os.getpid()}-def456").mkdir()  # this process: still writing
    kept = [".report-notes", ".report-0-x", ".report-99999999999999999999-x"]  # not a bench's
    for name in kept:
        (tmp_path / name).mkdir()
    check_writable(tmp_path)
    assert _files(tmp_path) == sorted([*kept, f".report-{os.getpid()}-def456"])


def test_a_folder_of_a_plots_name_is_not_an_earlier_runs_file(
    one_run: dict[str, Any], tmp_path: Path
) -> None:
    (tmp_path / "registry-view.png").mkdir()  # somebody's folder, not a plot
    bench_command._save(copy.deepcopy(one_run), tmp_path, plots=False)
    assert _files(tmp_path) == ["registry-view.png", "report.json", "report.md"]
