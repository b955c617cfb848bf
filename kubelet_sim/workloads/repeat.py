"""``bench --repeat N``: one workload run N times, and the *repeat report* built from the runs.

Identical runs of a real bench differ by 10-15 % (scheduling, the registry's disk, the machine's
other work), so one run against another cannot tell a change from noise. A repeat report has the
same shape as one run's report (thresholds, ``--output json`` and every reader keep working), and
each figure in it is the **median over the runs** of that run's figure: the median of the runs'
p99s, not the p99 of all runs' pods pooled. What is not a figure (the per-pod, per-pull and
per-node lists, the registry view, the plots) is the *median run*'s: the run whose time to ready
p50 is the median (the lower middle one for an even N). Its ``repeat`` section holds, for every
headline figure :func:`~kubelet_sim.workloads.compare.compare_reports` shows, the N values, their
median, min, max, quartiles and interquartile range.

The spread is the **interquartile range** (IQR = Q3 - Q1, the quartiles interpolated linearly
between order statistics as the report's percentiles are), rather than the median absolute
deviation, because:

- it is the box plot's measure, the one people already read;
- it gives compare a documented significance rule for medians, the box plot's notches (McGill,
  Tukey and Larsen, 1978; R's ``boxplot.stats``): two medians differ when
  ``|median B - median A| > 1.58 * (IQR_A / sqrt(n_A) + IQR_B / sqrt(n_B))``. With the MAD,
  the "change larger than the spread" half of the rule below would follow from the "ranges do
  not overlap" half and add nothing (for every sample, MAD <= max - median and
  MAD <= median - min).

A value that is missing (``null``: a percentile that fell among pods that never became ready, a
makespan with pods not ready) counts as slower than every number, as in the report's own
percentiles: a median whose rank falls among them is ``null``, and so is the max.

:func:`noise_verdict` is compare's rule (see its docstring).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kubelet_sim.errors import ConfigError
from kubelet_sim.workloads.health import quantile
from kubelet_sim.workloads.report import check_thresholds
from kubelet_sim.workloads.thresholds import COUNTS

__all__ = [
    "MAX_REPEAT",
    "NOTCH",
    "aggregate_reports",
    "figure_stats",
    "median",
    "noise_band",
    "noise_verdict",
    "parse_repeat",
    "relative_iqr",
    "repeat_markdown",
    "save_repeat",
]

MAX_REPEAT = 100
"""The most runs ``--repeat`` accepts."""
NOTCH = 1.58
"""The box plot notch's factor: median +- 1.58 IQR / sqrt(n) is a ~95 % interval for the median."""


def parse_repeat(text: object) -> int:
    """``--repeat``'s value: a whole number of runs from 1 to :data:`MAX_REPEAT`.

    Raises:
        ConfigError: naming ``--repeat``.
    """
    value = str(text).strip()
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_REPEAT:
        raise ConfigError(
            None,
            "--repeat",
            f"expected a whole number of runs from 1 to {MAX_REPEAT}, got {text!r}",
        )
    return int(value)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _tidy(value: float | None, like: Sequence[object]) -> float | int | None:
    """A statistic as the report writes it: an int when every input was one and it is whole."""
    if value is None:
        return None
    if all(isinstance(v, int) for v in like if v is not None) and float(value).is_integer():
        return int(value)
    return round(value, 6)


def median(values: Sequence[float | None]) -> float | int | None:
    """The median of ``values`` (the mean of the middle two for an even count); ``None`` values
    count as slower than every number, so a median that falls among them is ``None``."""
    numbers = sorted(v for v in values if v is not None)
    return _tidy(quantile(numbers, 0.5, len(values)), values)


def figure_stats(values: Sequence[float | None]) -> dict[str, Any]:
    """One figure over the runs: its ``values`` in run order, ``median``, ``min``, ``max``,
    quartiles ``q1``/``q3`` and ``iqr`` (``q3 - q1``); a statistic whose rank falls among the
    ``None`` values is ``None``."""
    numbers = sorted(v for v in values if v is not None)
    total = len(values)
    q1 = quantile(numbers, 0.25, total)
    q3 = quantile(numbers, 0.75, total)
    return {
        "values": list(values),
        "median": median(values),
        "min": _tidy(numbers[0], values) if numbers else None,
        "max": _tidy(numbers[-1], values) if numbers and len(numbers) == total else None,
        "q1": _tidy(q1, values),
        "q3": _tidy(q3, values),
        "iqr": None if q1 is None or q3 is None else _tidy(q3 - q1, values),
    }


def noise_band(a: Sequence[float | None], b: Sequence[float | None]) -> float | None:
    """How far apart two medians must be to differ: ``1.58 * (IQR_A/sqrt(n_A) + IQR_B/sqrt(n_B))``
    (the box plot notches' half-widths added); ``None`` if either side lacks a value or a run."""
    if len(a) < 2 or len(b) < 2 or not all(_is_number(v) for v in (*a, *b)):
        return None
    iqr_a, iqr_b = float(figure_stats(a)["iqr"]), float(figure_stats(b)["iqr"])
    return NOTCH * (iqr_a / math.sqrt(len(a)) + iqr_b / math.sqrt(len(b)))


def noise_verdict(a: Sequence[float | None], b: Sequence[float | None]) -> int | None:
    """Compare's verdict on one figure measured ``a`` (runs of A) and ``b`` (runs of B).

    B **changed** when both hold:

    1. the runs' ranges do not overlap: ``max(A) < min(B)`` or ``max(B) < min(A)`` (every run of
       one side beat every run of the other: with 5 runs a side, chance alone does that 1 time in
       126; with 3, 1 in 10);
    2. the change of the medians is larger than the combined spread:
       ``|median B - median A| > 1.58 * (IQR_A / sqrt(n_A) + IQR_B / sqrt(n_B))`` (the box-plot
       notches do not overlap: a skewed side, one outlying run, widens it).

    A missing value (``None``: not ready) counts as slower than every number: a figure no run of
    either side has is unchanged, one every run of A has and no run of B has (or the reverse)
    changed; a figure some runs have and others not cannot be judged.

    Returns ``0`` within noise, ``1`` when B is higher, ``-1`` when lower, ``None`` when it cannot
    tell (fewer than 2 runs on a side, or a figure only some runs have).
    """
    if len(a) < 2 or len(b) < 2:
        return None
    missing_a, missing_b = (sum(v is None for v in side) for side in (a, b))
    if missing_a or missing_b:
        if missing_a == len(a) and missing_b == len(b):
            return 0
        if missing_a == len(a) and not missing_b:
            return -1
        if missing_b == len(b) and not missing_a:
            return 1
        return None
    band = noise_band(a, b)
    if band is None:
        return None
    numbers_a = [float(v) for v in a if v is not None]
    numbers_b = [float(v) for v in b if v is not None]
    apart = max(numbers_a) < min(numbers_b) or max(numbers_b) < min(numbers_a)
    change = float(median(numbers_b) or 0.0) - float(median(numbers_a) or 0.0)
    if not apart or abs(change) <= band:
        return 0
    return 1 if change > 0 else -1


# -- aggregation --------------------------------------------------------------------------------

_MISSING = object()


def _median_tree(values: list[Any], base: int, counts: bool = False) -> Any:
    """``values`` (one per run, the same place in each report) as the repeat report holds it:
    numbers (or ``None``) by their median, objects key by key, anything else as the median run's.
    In a count by key (``COUNTS``), a key some run never saw counts zero there."""
    mine = values[base]
    if all(v is None or _is_number(v) for v in values):
        return median(values) if any(v is not None for v in values) else None
    if isinstance(mine, dict) and all(isinstance(v, dict) for v in values):
        keys = list(mine)
        for v in values:
            keys += [k for k in v if k not in keys]
        out: dict[str, Any] = {}
        for key in keys:
            if counts:
                column = [v.get(key, 0) for v in values]
            elif key in mine:
                column = [v.get(key, _MISSING) for v in values]
                if any(c is _MISSING for c in column):
                    out[key] = mine[key]  # not in every run: the median run's
                    continue
            else:
                continue
            out[key] = _median_tree(column, base, counts=key in COUNTS)
        return out
    return mine


def _median_run(reports: Sequence[dict[str, Any]]) -> int:
    """The index of the run whose time to ready p50 is the (lower) median; not ready is slowest."""

    def p50(i: int) -> tuple[bool, float]:
        value = reports[i]["summary"]["time_to_ready"].get("p50")
        return (value is None, 0.0 if value is None else float(value))

    order = sorted(range(len(reports)), key=lambda i: (p50(i), i))
    return order[(len(order) - 1) // 2]


def _warnings(reports: Sequence[dict[str, Any]]) -> list[str]:
    """Every run's simulator warnings, each once, saying in which runs it appeared."""
    seen: dict[str, list[int]] = {}
    for k, report in enumerate(reports, 1):
        for warning in report["summary"].get("health", {}).get("warnings", []):
            seen.setdefault(str(warning), []).append(k)
    n = len(reports)
    return [
        f"{text} (run{'s' if len(runs) > 1 else ''} {', '.join(map(str, runs))} of {n})"
        for text, runs in seen.items()
    ]


def aggregate_reports(
    reports: Sequence[dict[str, Any]],
    run_dirs: Sequence[str],
    *,
    planned: int | None = None,
    interrupted: bool = False,
) -> dict[str, Any]:
    """The repeat report of ``reports`` (each run's ``report.json``, in run order, kept in
    ``run_dirs`` relative to the repeat report): see the module docstring. The workload's
    thresholds are checked against it. ``planned`` is the runs asked for (more than ran when
    ``interrupted``).

    Raises:
        ConfigError: no runs, or runs of different workload files.
    """
    from kubelet_sim.workloads.compare import report_figures

    if not reports:
        raise ConfigError(None, "--repeat", "no run finished: nothing to report")
    digests = {r["workload"].get("sha256") for r in reports}
    if len(digests) > 1:
        raise ConfigError(None, "workload.sha256", "the runs ran different workload files")
    base = _median_run(reports)
    out = copy.deepcopy(reports[base])
    for part in ("summary", "groups", "templates"):
        out[part] = _median_tree([r[part] for r in reports], base)
    if isinstance(out["summary"].get("health"), dict):
        out["summary"]["health"]["warnings"] = _warnings(reports)
    run = out["run"] = _median_tree([r["run"] for r in reports], base)
    run["timed_out"] = any(r["run"].get("timed_out") for r in reports)
    run["interrupted"] = interrupted or any(r["run"].get("interrupted") for r in reports)
    run["partial"] = any(r["run"].get("partial") for r in reports) or run["interrupted"]
    if out.get("plots"):
        out["plots"] = [f"{run_dirs[base]}/{name}" for name in out["plots"]]
    names: dict[str, tuple[str, list[Any]]] = {}
    for k, report in enumerate(reports):
        for name, unit, value in report_figures(report):
            names.setdefault(name, (unit, [_MISSING] * len(reports)))[1][k] = value
    figures = {
        name: {"unit": unit, **figure_stats([None if v is _MISSING else v for v in values])}
        for name, (unit, values) in names.items()
    }
    out["repeat"] = {
        "runs": len(reports),
        "planned": planned if planned is not None else len(reports),
        "interrupted": run["interrupted"],
        "statistic": "median",
        "spread": "iqr",
        "median_run": base + 1,
        "run_dirs": list(run_dirs),
        "figures": figures,
    }
    out["summary"]["thresholds"] = _thresholds(out)
    return out


def _thresholds(report: dict[str, Any]) -> list[dict[str, Any]]:
    return check_thresholds(report, str(report["workload"].get("file")))


# -- report.md ----------------------------------------------------------------------------------


def relative_iqr(stats: dict[str, Any]) -> str:
    """The IQR as a share of the median (``–`` without one)."""
    iqr, mid = stats.get("iqr"), stats.get("median")
    if iqr is None or not mid:
        return "–"
    return f"{abs(iqr / mid):.0%}"


def repeat_markdown(report: dict[str, Any], rendered: str) -> str:
    """``report.md`` of a repeat report: ``rendered`` (the one-run markdown of ``report``) with a
    section on the runs and each headline figure's spread before the headline figures, and the
    plots linked in the median run's folder."""
    from kubelet_sim.workloads.compare import format_figure as _cell

    rep = report["repeat"]
    n, dirs = rep["runs"], rep["run_dirs"]
    base = dirs[rep["median_run"] - 1]
    stopped = (
        f" **Interrupted** after {n} of {rep['planned']} runs (the last one partial or dropped)."
        if rep["interrupted"]
        else ""
    )
    lines = [
        f"## Repeat: median of {n} runs",
        "",
        f"This is a repeat report: the workload ran {n} times (`{dirs[0]}` … `{dirs[-1]}`, each "
        "with its own report). Every figure below is the median over the runs of that run's "
        "figure; the per-node and per-pod detail, the registry view and the plots are those of "
        f"`{base}`, the median run by time to ready p50. Thresholds are checked against the "
        f"medians.{stopped}",
        "",
        "Spread: IQR is the interquartile range (Q3 − Q1) of the runs' values; "
        "`bench --compare` of two repeat reports flags a change only outside it.",
        "",
        "| figure | median | min | max | IQR | IQR/median | runs |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, stats in rep["figures"].items():
        unit = stats["unit"]
        values = ", ".join(_cell(v, unit) for v in stats["values"])
        lines.append(
            f"| {name} | {_cell(stats['median'], unit)} | {_cell(stats['min'], unit)} | "
            f"{_cell(stats['max'], unit)} | {_cell(stats['iqr'], unit)} | {relative_iqr(stats)} "
            f"| {values} |"
        )
    section = "\n".join(lines) + "\n\n"
    text = rendered
    for name in report.get("plots", []):
        file = name.rsplit("/", 1)[-1]
        text = text.replace(f"]({file})", f"]({base}/{file})")
    marker = "## Headline figures"
    if marker in text:
        return text.replace(marker, section + marker, 1)
    return text + "\n" + section


def save_repeat(report: dict[str, Any], out: Path) -> None:
    """Write the repeat report's ``report.json`` and ``report.md`` to ``out``, in place of any
    earlier report or plots there (the repeat's plots are its median run's, in ``run-K``)."""
    import json

    from kubelet_sim.workloads.markdown import render_markdown
    from kubelet_sim.workloads.outputs import staged_outputs

    with staged_outputs(out) as staging:
        (staging / "report.json").write_text(json.dumps(report, indent=1) + "\n")
        (staging / "report.md").write_text(repeat_markdown(report, render_markdown(report)))
