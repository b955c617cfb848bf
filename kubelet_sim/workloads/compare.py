"""``bench --compare A.json B.json``: two reports side by side, with the change and the ratio B/A.

Rows cover the headline figures and, for node groups present in both, each group's latency
figures. A ratio below 1 means B is lower (faster, fewer bytes, less CPU) than A.

When both reports are repeat reports (``bench --repeat N``, see :mod:`.repeat`), each row also
shows the two spreads (interquartile ranges of the runs) and a verdict: ``~`` within noise, or
``slower``/``faster``, ``more``/``fewer``/``less`` when the runs' ranges do not overlap *and* the
medians moved by more than the combined spread (:func:`~.repeat.noise_verdict`). With a single
run on either side the table is as it always was, with a note that the noise is unknown.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubelet_sim.errors import ConfigError
from kubelet_sim.workloads.repeat import MAX_REPEAT, figure_stats, median, noise_band, noise_verdict
from kubelet_sim.workloads.report import SCHEMA

COMPARABLE = ("kubelet-sim/bench-report/v1", SCHEMA)  # v2 added health and shards


@dataclass(frozen=True, slots=True)
class CompareRow:
    """One figure of A and B; ``a_runs``/``b_runs`` are its values over the runs of each side
    when both are repeat reports of at least 2 runs (else None: the noise is unknown)."""

    figure: str
    a: float | None
    b: float | None
    unit: str = ""
    a_runs: tuple[float | None, ...] | None = None
    b_runs: tuple[float | None, ...] | None = None

    @property
    def change(self) -> float | None:
        if self.a is None or self.b is None:
            return None
        change = self.b - self.a
        if isinstance(change, int) and abs(change) > sys.float_info.max:
            return float(self.b) - float(self.a)  # two ints a float can hold: inf, not a crash
        return change

    @property
    def ratio(self) -> float | None:
        if self.a is None or self.b is None or self.a == 0:
            return None
        return self.b / self.a

    @property
    def verdict(self) -> str | None:
        """``~`` within noise, a word saying how B changed outside it (``slower``, ``more``...),
        ``?`` when a run has no value for the figure; None when the noise is unknown."""
        if self.a_runs is None or self.b_runs is None:
            return None
        sign = noise_verdict(self.a_runs, self.b_runs)
        if sign is None:
            return "?"
        return "~" if sign == 0 else _words(self.figure, self.unit)[sign > 0]

    @property
    def noise(self) -> float | None:
        """The combined spread the medians' change is held against (None: unknown)."""
        if self.a_runs is None or self.b_runs is None:
            return None
        return noise_band(self.a_runs, self.b_runs)

    def to_dict(self) -> dict[str, object]:
        def runs(values: tuple[float | None, ...] | None) -> dict[str, Any] | None:
            return figure_stats(values) if values else None

        return {"figure": self.figure, "a": self.a, "b": self.b, "unit": self.unit,
                "change": self.change, "ratio": self.ratio, "verdict": self.verdict,
                "noise": self.noise, "a_runs": runs(self.a_runs),
                "b_runs": runs(self.b_runs)}  # fmt: skip


def _words(figure: str, unit: str) -> tuple[str, str]:
    """How to say B is (lower, higher) than A for a figure."""
    if unit == "s" and figure != "CPU":
        return "faster", "slower"
    if unit in ("B", "MiB") or figure == "CPU":
        return "less", "more"
    return "fewer", "more"


MAX_REPORT_BYTES = 256 * 1024 * 1024  # a 1,000,000-pod report stays well below


def load_report(path: Path) -> dict[str, Any]:
    """Read a ``report.json``.

    Raises:
        ConfigError: missing, not JSON, or not a bench report.
    """
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_REPORT_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(str(path), None, "report does not exist") from None
    except OSError as exc:
        raise ConfigError(str(path), None, f"cannot read the report: {exc.strerror}") from None
    if len(data) > MAX_REPORT_BYTES:
        raise ConfigError(str(path), None, f"larger than {MAX_REPORT_BYTES} bytes: not a report")
    try:
        doc = json.loads(data)
    except RecursionError:
        raise ConfigError(str(path), None, "not a bench report: JSON nested too deeply") from None
    except ValueError as exc:
        raise ConfigError(str(path), None, f"not a readable JSON report: {exc}") from None
    if not isinstance(doc, dict) or doc.get("schema") not in COMPARABLE:
        raise ConfigError(str(path), "schema", f"not a kubelet-sim bench report ({SCHEMA})")
    _check_figures(doc, str(path))
    _check_repeat(doc, str(path))
    return doc


def _number(value: Any) -> bool:
    """None, a float, or an int a float can hold (the change and ratio are float arithmetic)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) <= sys.float_info.max
    return value is None or isinstance(value, float)


def workload_name(report: dict[str, Any]) -> str:
    """The name of the workload a report (checked by :func:`load_report`) measured."""
    workload = report.get("workload")
    name = workload.get("name") if isinstance(workload, dict) else None
    return name if isinstance(name, str) else "?"


def _check_figures(doc: dict[str, Any], source: str) -> None:
    """Every figure compared is there and a number (or null), so comparing cannot crash."""
    summary = doc.get("summary")
    if not isinstance(summary, dict):
        raise ConfigError(source, "summary", "missing or not an object")
    for name, _, get in _SUMMARY:
        try:
            value = get(summary)
        except (KeyError, TypeError, AttributeError, IndexError):
            value = "missing"
        if not _number(value):
            raise ConfigError(source, f"summary ({name})", "missing or not a number")
    groups = doc.get("groups")
    if not isinstance(groups, dict):
        raise ConfigError(source, "groups", "missing or not an object")
    for group, figures in groups.items():
        try:
            values = [figures["time_to_ready"][k] for k in ("p50", "p99")] + [figures["makespan"]]
        except (KeyError, TypeError, IndexError):
            values = ["missing"]
        if not all(_number(v) for v in values):
            raise ConfigError(
                source, f"groups.{group}", "needs time_to_ready.p50/p99 and makespan numbers"
            )
    workload = doc.get("workload")  # its name heads the comparison
    if not isinstance(workload, dict) or not isinstance(workload.get("name"), str):
        raise ConfigError(source, "workload.name", "missing or not a string")


def _check_repeat(doc: dict[str, Any], source: str) -> None:
    """A repeat report's ``repeat`` section: a run count, and for each figure one value per run
    whose median is the report's figure (compare's verdict reads the values)."""
    if "repeat" not in doc:
        return
    rep = doc["repeat"]
    if not isinstance(rep, dict):
        raise ConfigError(source, "repeat", "not an object (a repeat report's runs and figures)")
    runs = rep.get("runs")
    if isinstance(runs, bool) or not isinstance(runs, int) or not 1 <= runs <= MAX_REPEAT:
        raise ConfigError(
            source, "repeat.runs", f"expected a whole number from 1 to {MAX_REPEAT}, got "
            f"{_short(runs)}"
        )  # fmt: skip
    figures = rep.get("figures")
    if not isinstance(figures, dict):
        raise ConfigError(source, "repeat.figures", "missing or not an object")
    shown = {name: value for name, _, value in report_figures(doc)}
    for name, stats in figures.items():
        field = f"repeat.figures.{name}"
        if not isinstance(stats, dict):
            raise ConfigError(source, field, "not an object")
        values = stats.get("values")
        if (not isinstance(values, list) or len(values) != runs
                or not all(_number(v) for v in values)):  # fmt: skip
            raise ConfigError(
                source, f"{field}.values", f"expected {runs} numbers (or null), one per run"
            )
        for key in ("median", "min", "max", "q1", "q3", "iqr"):
            if key in stats and not _number(stats[key]):
                raise ConfigError(source, f"{field}.{key}", "not a number")
        if name in shown and not _same(median(values), shown[name]):
            raise ConfigError(
                source, f"{field}.values", f"their median ({_short(median(values))}) is not the "
                f"report's figure ({_short(shown[name])}): edit both or neither"
            )  # fmt: skip


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _same(x: float | None, y: float | None) -> bool:
    if x is None or y is None:
        return x is y
    return math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9)


_Get = Callable[[dict[str, Any]], Any]
_SUMMARY: tuple[tuple[str, str, _Get], ...] = (
    ("nodes", "", lambda s: s["nodes"]),
    ("pods ready", "", lambda s: s["pods_ready"]),
    ("time to ready p50", "s", lambda s: s["time_to_ready"]["p50"]),
    ("time to ready p90", "s", lambda s: s["time_to_ready"]["p90"]),
    ("time to ready p99", "s", lambda s: s["time_to_ready"]["p99"]),
    ("time to ready max", "s", lambda s: s["time_to_ready"]["max"]),
    ("makespan", "s", lambda s: s["makespan"]),
    ("arrival lag max", "s", lambda s: s.get("arrival_lag", {}).get("max")),
    ("pulls", "", lambda s: s["pulls"]),
    ("failed pulls", "", lambda s: s["pull_errors"]),
    ("cache hits", "", lambda s: s["cache_hits"]),
    ("bytes pulled", "B", lambda s: s["bytes_pulled"]),
    ("registry requests", "", lambda s: s["registry_requests"]),
    ("registry retries", "", lambda s: s["registry_retries"]),
    ("backoffs", "", lambda s: s["backoffs"]),
    ("peak pulls in flight", "", lambda s: s["peak_pulls_in_flight_max"]),
    ("CPU", "s", lambda s: s["resources"]["cpu_seconds"]),
    ("peak memory", "MiB", lambda s: s["resources"]["peak_rss_mib"]),
)


def report_figures(report: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """Every figure compare shows, as (name, unit, value): the headline figures, then each node
    group's time to ready p50 and p99 and makespan. A repeat report's spreads are of these."""
    summary = report["summary"]
    figures = [(name, unit, get(summary)) for name, unit, get in _SUMMARY]
    for group, g in report["groups"].items():
        for key in ("p50", "p99"):
            figures.append((f"{group}: time to ready {key}", "s", g["time_to_ready"][key]))
        figures.append((f"{group}: makespan", "s", g["makespan"]))
    return figures


def runs_of(report: dict[str, Any]) -> int:
    """How many runs a report's figures come from: a repeat report's ``repeat.runs``, else 1."""
    rep = report.get("repeat")
    return rep["runs"] if isinstance(rep, dict) else 1


def noise_known(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Both reports are repeat reports of at least 2 runs: each figure has a spread."""
    return runs_of(a) >= 2 and runs_of(b) >= 2


def compare_reports(a: dict[str, Any], b: dict[str, Any]) -> list[CompareRow]:
    """A row for each figure of :func:`report_figures` both reports have (groups in both)."""
    in_b = {name: value for name, _, value in report_figures(b)}
    known = noise_known(a, b)
    rows = []
    for name, unit, value in report_figures(a):
        if name not in in_b:
            continue
        runs_a = runs_b = None
        if known:
            runs_a, runs_b = _values(a, name), _values(b, name)
            if runs_a is None or runs_b is None:
                runs_a = runs_b = ()  # a figure without its runs: "?"
        rows.append(CompareRow(name, value, in_b[name], unit, runs_a, runs_b))
    return rows


def _values(report: dict[str, Any], name: str) -> tuple[float | None, ...] | None:
    stats = report["repeat"]["figures"].get(name)
    return None if stats is None else tuple(stats["values"])


NOISE_RULE = (
    "verdict: ~ within noise; a word (slower, more, ...) only when every run of one side beat "
    "every run of the other (the ranges do not overlap) and the medians moved by more than "
    "1.58 × (IQR_A/√n_A + IQR_B/√n_B), the box-plot notches; not ready counts as slowest; "
    "? when only some runs have a value"
)
"""How compare's verdict is decided, as printed under the table."""


def noise_note(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """What compare says when a side is a single run (no verdict possible); None otherwise."""
    if noise_known(a, b):
        return None

    def side(label: str, report: dict[str, Any]) -> str:
        n = runs_of(report)
        if "repeat" not in report:
            return f"{label} is a single run"
        return f"{label} is a repeat report of {n} run{'s' if n != 1 else ''}"

    return (
        f"noise unknown: {side('A', a)}, {side('B', b)}; identical runs differ by 10-15 %, so a "
        "change here may be noise. Run each side with `kubelet-sim bench WORKLOAD --repeat 5` "
        "and compare the two repeat reports for a verdict."
    )


def verdict_summary(rows: list[CompareRow]) -> str:
    """One line: how many figures changed beyond noise, and which."""
    changed = [r for r in rows if r.verdict not in (None, "~", "?")]
    unknown = sum(1 for r in rows if r.verdict == "?")
    text = f"{len(changed)} of {len(rows)} figures changed beyond noise"
    if changed:
        text += ": " + ", ".join(f"{r.figure} ({r.verdict})" for r in changed)
    if unknown:
        text += f"; {unknown} with a value in only some runs (?)"
    return text


def format_figure(value: float | None, unit: str) -> str:
    """A figure as compare and the repeat tables show it (``–`` without a value)."""
    if value is None:
        return "–"
    if unit == "B":
        return f"{value / 1048576:,.1f} MiB"
    if unit == "s":
        return f"{value:.3f} s"
    if unit:
        return f"{value:,.1f} {unit}"
    return f"{int(value):,}" if float(value).is_integer() else f"{value:.3f}"


def compare_columns(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The table's header: with both sides' noise known, medians, spreads and the verdict."""
    if noise_known(a, b):
        return ["figure", "A median", "A IQR", "B median", "B IQR", "change", "B/A", "verdict"]
    return ["figure", "A", "B", "change", "B/A"]


def render_compare(a: dict[str, Any], b: dict[str, Any], rows: list[CompareRow]) -> list[list[str]]:
    """Table rows as text: figure, A, B, change, B/A; with the noise known, figure, A median,
    A IQR, B median, B IQR, change, B/A, verdict."""
    known = noise_known(a, b)
    out = []
    for row in rows:
        change = row.change
        sign = "+" if change is not None and change > 0 else ""
        cells = [
            row.figure,
            format_figure(row.a, row.unit),
            format_figure(row.b, row.unit),
            "–" if change is None else sign + format_figure(change, row.unit),
            "–" if row.ratio is None else f"{row.ratio:.2f}",
        ]  # fmt: skip
        if known:
            spread_a, spread_b = (
                format_figure(figure_stats(v)["iqr"], row.unit) if v else "–"
                for v in (row.a_runs, row.b_runs)
            )
            cells = [cells[0], cells[1], spread_a, cells[2], spread_b, cells[3], cells[4],
                     row.verdict or "–"]  # fmt: skip
        out.append(cells)
    return out


def compare_markdown(a: dict[str, Any], b: dict[str, Any]) -> str:
    table = compare_reports(a, b)
    rows = render_compare(a, b, table)
    na, nb = workload_name(a), workload_name(b)
    columns = compare_columns(a, b)
    lines = [f"# Compare: A = {na}, B = {nb}", ""]
    if noise_known(a, b):
        lines += [f"Medians of {runs_of(a)} runs (A) and {runs_of(b)} runs (B).", ""]
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    note = noise_note(a, b)
    lines += ["", note] if note else ["", verdict_summary(table) + ".", "", NOISE_RULE + "."]
    return "\n".join(lines) + "\n"
