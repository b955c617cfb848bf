"""``bench --compare A.json B.json``: two reports side by side, with the change and the ratio B/A.

Rows cover the headline figures and, for node groups present in both, each group's latency
figures. A ratio below 1 means B is lower (faster, fewer bytes, less CPU) than A.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubelet_sim.errors import ConfigError
from kubelet_sim.workloads.report import SCHEMA

COMPARABLE = ("kubelet-sim/bench-report/v1", SCHEMA)  # v2 added health and shards


@dataclass(frozen=True, slots=True)
class CompareRow:
    figure: str
    a: float | None
    b: float | None
    unit: str = ""

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

    def to_dict(self) -> dict[str, object]:
        return {"figure": self.figure, "a": self.a, "b": self.b, "unit": self.unit,
                "change": self.change, "ratio": self.ratio}  # fmt: skip


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


def compare_reports(a: dict[str, Any], b: dict[str, Any]) -> list[CompareRow]:
    rows = [
        CompareRow(name, get(a["summary"]), get(b["summary"]), unit) for name, unit, get in _SUMMARY
    ]
    for group in a["groups"]:
        if group in b["groups"]:
            ga, gb = a["groups"][group], b["groups"][group]
            for key in ("p50", "p99"):
                rows.append(CompareRow(f"{group}: time to ready {key}", ga["time_to_ready"][key],
                                       gb["time_to_ready"][key], "s"))  # fmt: skip
            rows.append(CompareRow(f"{group}: makespan", ga["makespan"], gb["makespan"], "s"))
    return rows


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "–"
    if unit == "B":
        return f"{value / 1048576:,.1f} MiB"
    if unit == "s":
        return f"{value:.3f} s"
    if unit:
        return f"{value:,.1f} {unit}"
    return f"{int(value):,}" if float(value).is_integer() else f"{value:.3f}"


def render_compare(a: dict[str, Any], b: dict[str, Any], rows: list[CompareRow]) -> list[list[str]]:
    """Table rows as text: figure, A, B, change, B/A."""
    out = []
    for row in rows:
        change = row.change
        sign = "+" if change is not None and change > 0 else ""
        out.append([
            row.figure,
            _fmt(row.a, row.unit),
            _fmt(row.b, row.unit),
            "–" if change is None else sign + _fmt(change, row.unit),
            "–" if row.ratio is None else f"{row.ratio:.2f}",
        ])  # fmt: skip
    return out


def compare_markdown(a: dict[str, Any], b: dict[str, Any]) -> str:
    rows = render_compare(a, b, compare_reports(a, b))
    na, nb = workload_name(a), workload_name(b)
    lines = [f"# Compare: A = {na}, B = {nb}", "", "| figure | A | B | change | B/A |",
             "|---|---|---|---|---|"]  # fmt: skip
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"
