"""``bench --repeat N`` end to end: real ``kubelet-sim bench`` processes write N run reports and the
repeat report; thresholds on the medians decide the exit status; ``--compare`` of two repeat
reports gives each figure a verdict against the runs' noise. The real-registry tests measure
genuine run-to-run noise and judge shifts built from it."""

from __future__ import annotations

import copy
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from kubelet_sim.sim.registry import RegistryProcess
from kubelet_sim.workloads import report_figures
from kubelet_sim.workloads.repeat import figure_stats, median

VIRTUAL = """\
apiVersion: kubelet-sim.dev/v1alpha1
kind: Workload
name: repeat-virtual
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

REAL = """\
apiVersion: kubelet-sim.dev/v1alpha1
kind: Workload
name: {name}
seed: 21
bases:
  - {{name: base, layers: [300KiB]}}
images:
  - repository: {prefix}/web
    tags: ["1.0"]
    base: base
    layers: [{{count: 2, size: {{uniform: [100KiB, 200KiB]}}}}]
  - {{repository: "{prefix}/job-{{i}}", count: 3, tags: ["1"], base: base, layers: [80KiB]}}
nodes:
  - name: serial
    kubelet: {{registryPullQPS: 0}}
    timing: {{resyncPeriod: 200ms, backoffInitial: 300ms, backoffMax: 600ms}}
  - name: parallel
    kubelet: {{serializeImagePulls: false, maxParallelImagePulls: 3, registryPullQPS: 0}}
    timing: {{resyncPeriod: 200ms, backoffInitial: 300ms, backoffMax: 600ms}}
pods:
  - name: web
    count: 4
    spec: {{containers: [{{name: web, image: "{prefix}/web:1.0"}}]}}
    arrival: {{rate: 20}}
  - name: jobs
    count: 6
    spec: {{containers: [{{name: job, image: "{prefix}/job-{{i%3}}:1"}}]}}
{extra}
run: {{timeout: {timeout}}}
"""


def bench(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kubelet_sim", "bench", *argv],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def virtual_workload(tmp_path: Path, thresholds: list[str]) -> Path:
    path = tmp_path / "w.yaml"
    path.write_text(VIRTUAL + "thresholds:\n" + "".join(f'  - "{t}"\n' for t in thresholds))
    return path


def read(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def shifted(report: dict[str, Any], figure: str, by: list[float], path: Path) -> Path:
    """A copy of a repeat report with ``figure``'s run values moved by ``by`` (one per run), and
    the report's figure set to their median as aggregation would (a consistent hand edit)."""
    doc = copy.deepcopy(report)
    stats = doc["repeat"]["figures"][figure]
    values = [v + d for v, d in zip(stats["values"], by, strict=True)]
    stats.update(figure_stats(values))
    if figure.startswith("time to ready "):
        doc["summary"]["time_to_ready"][figure.rsplit(" ", 1)[1]] = median(values)
    else:
        group, _, key = figure.partition(": time to ready ")
        doc["groups"][group]["time_to_ready"][key] = median(values)
    path.write_text(json.dumps(doc))
    return path


def verdicts(*argv: str) -> dict[str, dict[str, Any]]:
    done = bench("--compare", *argv, "--output", "json")
    assert done.returncode == 0, done.stderr
    return {row["figure"]: row for row in json.loads(done.stdout)}


# -- virtual: the run folders, the repeat section, thresholds on the medians ----------------------


def test_virtual_repeat_writes_every_run_and_the_repeat_report(tmp_path: Path) -> None:
    path = virtual_workload(tmp_path, ["pods_not_ready == 0", "time_to_ready.p50 < 5m"])
    out = tmp_path / "out"
    done = bench(str(path), "--virtual", "--repeat", "3", "--out", str(out), "--quiet")
    assert done.returncode == 99, done.stderr  # the typo pod: the median run has 1 not ready
    assert "Traceback" not in done.stderr
    for k in (1, 2, 3):
        run = out / f"run-{k}"
        for name in ("report.json", "report.md", "pull-timeline.png", "time-to-ready-cdf.png"):
            assert (run / name).stat().st_size > 500, (k, name)
        assert read(run / "report.json")["summary"]["pods_not_ready"] == 1
    report = read(out / "report.json")
    rep = report["repeat"]
    assert (rep["runs"], rep["planned"], rep["interrupted"]) == (3, 3, False)
    assert rep["run_dirs"] == ["run-1", "run-2", "run-3"]
    assert rep["spread"] == "iqr"
    runs = [read(out / f"run-{k}" / "report.json") for k in (1, 2, 3)]
    for name, unit, value in report_figures(report):
        stats = rep["figures"][name]
        column = [dict((n, v) for n, _, v in report_figures(r))[name] for r in runs]
        assert stats == {"unit": unit, **figure_stats(column)}, name
        assert value == stats["median"], name
    # Virtual time is deterministic for a seed: the same figures in every run; only the process's
    # own CPU and memory differ.
    assert rep["figures"]["time to ready p50"]["iqr"] == 0
    assert report["summary"]["thresholds"] == [
        {"threshold": "pods_not_ready == 0", "value": 1.0, "passed": False},
        {"threshold": "time_to_ready.p50 < 5m", "value": 0.012, "passed": True},
    ]
    assert "threshold FAIL: pods_not_ready == 0  (is 1)" in done.stdout
    assert "3 runs: median, range and interquartile range (IQR)" in done.stdout
    md = (out / "report.md").read_text()
    assert "## Repeat: median of 3 runs" in md
    base = rep["run_dirs"][rep["median_run"] - 1]
    assert f"![Pull timeline per node]({base}/pull-timeline.png)" in md
    assert (out / base / "pull-timeline.png").exists()


def test_thresholds_on_the_median_pass_and_json_is_one_document(tmp_path: Path) -> None:
    path = virtual_workload(tmp_path, ["pods_ready == 4", "time_to_ready.p50 < 1s"])
    done = bench(str(path), "--virtual", "--repeat", "2", "--out", str(tmp_path / "out"),
                 "--quiet", "--no-plots", "--output", "json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)  # stdout holds the summary alone, with its repeat section
    assert summary["pods_ready"] == 4
    assert summary["repeat"]["runs"] == 2
    assert [t["passed"] for t in summary["thresholds"]] == [True, True]
    assert "run 2 of 2" in done.stderr


def test_virtual_repeat_over_shards(tmp_path: Path) -> None:
    path = virtual_workload(tmp_path, [])
    out = tmp_path / "out"
    done = bench(str(path), "--virtual", "--shards", "2", "--repeat", "2", "--out", str(out),
                 "--quiet", "--no-plots")  # fmt: skip
    assert done.returncode == 0, done.stderr
    for k in (1, 2):
        assert read(out / f"run-{k}" / "report.json")["run"]["shards"] == 2
    report = read(out / "report.json")
    assert report["repeat"]["runs"] == 2
    assert report["summary"]["resources"]["processes"] == 2


def test_compare_of_two_repeat_reports_prints_the_verdicts(tmp_path: Path) -> None:
    path = virtual_workload(tmp_path, [])
    out = tmp_path / "out"
    assert bench(str(path), "--virtual", "--repeat", "3", "--out", str(out), "--quiet",
                 "--no-plots").returncode == 0  # fmt: skip
    a = out / "report.json"
    report = read(a)
    # Twice as slow in every run: the (deterministic) runs' ranges are apart.
    p50 = report["repeat"]["figures"]["time to ready p50"]["values"]
    b = shifted(report, "time to ready p50", p50, tmp_path / "slower.json")
    rows = verdicts(str(a), str(b))
    assert rows["time to ready p50"]["verdict"] == "slower"
    assert rows["time to ready p50"]["ratio"] == pytest.approx(2.0)
    assert rows["time to ready p50"]["a_runs"]["values"] == p50
    assert rows["time to ready p50"]["noise"] == 0.0
    assert rows["pods ready"]["verdict"] == "~"
    assert rows["makespan"]["verdict"] == "~"  # not ready in every run of both
    done = bench("--compare", str(a), str(b))
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "verdict" in text
    assert "A IQR" in text
    line = next(x for x in text.splitlines() if "│ time to ready p50" in x)
    assert line.rstrip(" │").endswith("slower"), line
    assert "1 of 21 figures changed beyond noise: time to ready p50 (slower)" in text
    md = bench("--compare", str(a), str(b), "--output", "markdown").stdout
    row = "| time to ready p50 | 0.012 s | 0.000 s | 0.024 s | 0.000 s | +0.012 s | 2.00 | slower |"
    assert row in md
    assert "Medians of 3 runs (A) and 3 runs (B)." in md
    # Against one run of the same workload: as before, with a note.
    single = bench("--compare", str(out / "run-1" / "report.json"), str(b))
    assert single.returncode == 0
    assert "A IQR" not in single.stdout  # the five columns of a single-run compare
    assert "noise unknown: A is a single run, B is a repeat report of 3 runs" in single.stdout
    as_json = bench("--compare", str(out / "run-1" / "report.json"), str(b), "--output", "json")
    assert all(row["verdict"] is None for row in json.loads(as_json.stdout))
    assert "noise unknown" in as_json.stderr


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--repeat", "0"], "--repeat: expected a whole number of runs from 1 to 100, got '0'"),
        (["--repeat", "x"], "--repeat: expected a whole number of runs from 1 to 100, got 'x'"),
        (["--repeat", "101"], "--repeat: expected a whole number of runs from 1 to 100"),
        (["--repeat", "2", "--shard", "0/2"], "--repeat: not with --shard"),
        (["--repeat", "2", "--shards", "0"], "--shards: must be between 1 and 256"),
    ],
)
def test_bad_repeat_flags_are_named(tmp_path: Path, flags: list[str], message: str) -> None:
    path = virtual_workload(tmp_path, [])
    out = tmp_path / "out"
    done = bench(str(path), "--virtual", "--out", str(out), "--quiet", "--no-plots", *flags)
    assert done.returncode == 1
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert not (out / "run-1").exists()


def test_repeat_with_compare_or_merge_is_refused(tmp_path: Path) -> None:
    done = bench("--compare", "a.json", "b.json", "--repeat", "3")
    assert done.returncode == 1
    assert "--repeat: runs a workload; --compare reads two reports" in done.stderr
    done = bench("merge", str(tmp_path), "--repeat", "3")
    assert done.returncode == 1
    assert "--repeat: not with bench merge" in done.stderr


def test_compare_refuses_a_malformed_repeat_report(tmp_path: Path) -> None:
    path = virtual_workload(tmp_path, [])
    out = tmp_path / "out"
    assert bench(str(path), "--virtual", "--repeat", "2", "--out", str(out), "--quiet",
                 "--no-plots").returncode == 0  # fmt: skip
    doc = read(out / "report.json")
    doc["repeat"]["runs"] = "two"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    done = bench("--compare", str(out / "report.json"), str(bad))
    assert done.returncode == 1
    assert f"{bad}: repeat.runs: expected a whole number from 1 to 100, got 'two'" in done.stderr
    assert "Traceback" not in done.stderr


# -- real runs against the CNCF registry: genuine noise ------------------------------------------


@pytest.mark.registry
def test_real_repeat_measures_noise_and_compare_judges_shifts_against_it(
    registry: RegistryProcess, tmp_path: Path
) -> None:
    path = tmp_path / "real.yaml"
    path.write_text(REAL.format(name="repeat-real", prefix="bench-repeat", timeout="20s", extra=""))
    out = tmp_path / "out"
    done = bench(str(path), "--registry", registry.host, "--repeat", "3", "--out", str(out),
                 "--quiet", "--no-plots")  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = read(out / "report.json")
    figures = report["repeat"]["figures"]
    runs = [read(out / f"run-{k}" / "report.json") for k in (1, 2, 3)]
    assert all(r["summary"]["pods_ready"] == 10 for r in runs)
    for name, _, value in report_figures(report):
        column = [dict((n, v) for n, _, v in report_figures(r))[name] for r in runs]
        assert figures[name]["values"] == column, name
        assert value == median(column), name
    # Real runs are not identical: the time figures spread.
    times = {
        name: stats for name, stats in figures.items()
        if name.startswith(("time to ready", "serial: time", "parallel: time"))
    }  # fmt: skip
    noisy = max(times, key=lambda name: times[name]["max"] - times[name]["min"])
    stats = times[noisy]
    spread = stats["max"] - stats["min"]
    assert spread > 0, times
    a = out / "report.json"
    # The same runs on both sides: every figure within noise.
    assert {row["verdict"] for row in verdicts(str(a), str(a)).values()} == {"~"}
    # Moved by less than the runs' range (every value by the same amount): the ranges overlap.
    within = shifted(report, noisy, [spread / 2] * 3, tmp_path / "within.json")
    assert verdicts(str(a), str(within))[noisy]["verdict"] == "~"
    # Moved far beyond it: slower, and the change is larger than the combined spread.
    beyond = shifted(report, noisy, [10 * spread + 1.0] * 3, tmp_path / "beyond.json")
    row = verdicts(str(a), str(beyond))[noisy]
    assert row["verdict"] == "slower"
    assert row["noise"] > 0
    assert row["change"] > row["noise"]
    assert verdicts(str(beyond), str(a))[noisy]["verdict"] == "faster"


@pytest.mark.registry
def test_ctrl_c_in_the_second_run_keeps_the_first_and_the_partial_one(
    registry: RegistryProcess, tmp_path: Path
) -> None:
    # The missing tag keeps two pods backing off until the 4 s timeout ends each run.
    extra = """\
  - name: missing
    count: 2
    spec: {containers: [{name: app, image: "bench-repeat-int/web:no-such-tag"}]}"""
    path = tmp_path / "int.yaml"
    path.write_text(REAL.format(name="repeat-int", prefix="bench-repeat-int", timeout="4s",
                                extra=extra))  # fmt: skip
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "kubelet_sim", "bench", str(path), "--registry", registry.host,
            "--repeat", "3", "--out", str(out), "--quiet", "--no-plots"]  # fmt: skip
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            deadline = time.monotonic() + 90
            started = 0
            while started < 2:
                line = proc.stdout.readline() if proc.stdout else ""
                started += "run started" in line
                assert line or proc.poll() is None, "bench ended early"
                assert time.monotonic() < deadline, "the second run never started"
            time.sleep(1)  # pulling; the missing tag backing off
            proc.send_signal(signal.SIGINT)
            stdout, stderr = proc.communicate(timeout=60)
        finally:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "partial report (interrupted)" in stdout
    report = read(out / "report.json")
    rep = report["repeat"]
    assert (rep["runs"], rep["planned"], rep["interrupted"]) == (2, 3, True)
    assert report["run"]["interrupted"] is True
    assert read(out / "run-1" / "report.json")["run"]["timed_out"] is True
    assert read(out / "run-2" / "report.json")["run"]["interrupted"] is True
    assert not (out / "run-3").exists()
    assert "**Interrupted** after 2 of 3 runs" in (out / "report.md").read_text()
