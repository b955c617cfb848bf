"""Pass/fail criteria on a bench report, as k6's ``thresholds``: what makes a CI job fail.

A workload lists them as ``thresholds: ["time_to_ready.p99 < 30s", "pods_not_ready == 0"]``.
Each is ``METRIC OP VALUE``:

- ``METRIC`` is a dotted path into the report's ``summary`` (``time_to_ready.p99``,
  ``pods_not_ready``, ``registry_retries``, ``resources.peak_rss_mib``...), into one node group
  or pod template (``groups.pool.time_to_ready.p90``, ``templates.web.time_to_ready.p50``), or one
  of the rates derived here: ``registry_errors_rate`` (answers that are 429 or 5xx, or no answer
  at all, over all registry requests: a 401 challenge is the auth flow, not an error),
  ``pull_errors_rate`` (failed pulls over pulls) and ``ready_rate`` (ready pods over pods);
- ``OP`` is ``<``, ``<=``, ``>``, ``>=``, ``==`` or ``!=``;
- ``VALUE`` is a number, a duration (``30s``, ``1m30s``, ``250ms``: seconds) or a size
  (``64MiB``: bytes).

A metric without a value (a percentile that falls among pods that never became ready) fails
its threshold: a run cannot pass by losing its slowest pods. ``bench`` prints each threshold
with its value and exits with status 99 (k6's) when one fails.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubelet_sim.core.durations import parse_go_duration

__all__ = ["THRESHOLDS_FAILED", "Threshold", "evaluate", "parse_threshold"]

THRESHOLDS_FAILED = 99
"""``bench``'s exit status when a threshold fails (k6 uses the same)."""

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
}
_EXPRESSION = re.compile(
    r"\s*(?P<metric>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_-]+)*)\s*"
    r"(?P<op><=|>=|==|!=|<|>)\s*(?P<value>\S+)\s*"
)
_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(B|k|KB|Ki|KiB|M|MB|Mi|MiB|G|GB|Gi|GiB)")
_SIZE_UNITS = {
    "B": 1, "k": 10**3, "KB": 10**3, "Ki": 2**10, "KiB": 2**10, "M": 10**6, "MB": 10**6,
    "Mi": 2**20, "MiB": 2**20, "G": 10**9, "GB": 10**9, "Gi": 2**30, "GiB": 2**30,
}  # fmt: skip
DERIVED = ("registry_errors_rate", "pull_errors_rate", "ready_rate")
SUMMARY = (
    "nodes", "pods", "pods_ready", "pods_not_ready", "time_to_ready", "arrival_lag", "makespan",
    "last_ready", "pulls", "pull_errors", "registry_pulls", "shared_pulls", "cache_hits",
    "bytes_pulled", "bytes_received", "registry_requests", "registry_requests_by_status",
    "registry_retries", "backoffs", "events_by_reason", "peak_pulls_in_flight_max", "resources",
    "waiting_reasons", "pods_deleted", "pods_deleted_unready", "churn",
)  # fmt: skip
"""The first words a metric may start with (the report summary's keys)."""
COUNTS = frozenset({
    "registry_requests_by_status", "registry_requests_by_method_status", "events_by_reason",
    "waiting_reasons",
})  # fmt: skip
"""Counts by key: a key the run never saw is zero, not missing."""


@dataclass(frozen=True, slots=True)
class Threshold:
    """One criterion: ``metric op value``, as written (``text``)."""

    text: str
    metric: str
    op: str
    value: float

    def check(self, actual: float | None) -> bool:
        return actual is not None and _OPS[self.op](actual, self.value)


def parse_threshold(
    text: object,
    *,
    groups: Sequence[str] = (),
    templates: Sequence[str] = (),
    churn: Sequence[str] | None = None,
) -> Threshold:
    """One threshold from its text; ``groups``, ``templates`` and ``churn`` (the churn actions;
    None: not checked) are the names a metric may use.

    Raises:
        ValueError: with a message saying what is wrong (the caller names the field).
    """
    if not isinstance(text, str):
        raise ValueError(f"expected a string such as 'time_to_ready.p99 < 30s', got {text!r}")
    match = _EXPRESSION.fullmatch(text)
    if match is None:
        raise ValueError(
            f"{text!r} is not METRIC OP VALUE (for example 'time_to_ready.p99 < 30s', "
            "'pods_not_ready == 0'); OP is one of < <= > >= == !="
        )
    metric, op = match.group("metric"), match.group("op")
    raw_value = match.group("value")
    parts = metric.split(".")
    head = parts[0]
    if head in ("groups", "templates"):
        known = groups if head == "groups" else templates
        if len(parts) < 3 or parts[1] not in known:
            raise ValueError(
                f"{metric!r}: {head} are named after the workload's "
                f"{'node groups' if head == 'groups' else 'pods'} "
                f"({', '.join(known) or 'none'}), as {head}.NAME.time_to_ready.p99"
            )
    elif head == "churn" and churn is not None and (len(parts) < 3 or parts[1] not in churn):
        raise ValueError(
            f"{metric!r}: churn figures are named after the workload's churn actions "
            f"({', '.join(churn) or 'none'}), as churn.NAME.seconds"
        )
    elif head not in DERIVED and head not in SUMMARY:
        raise ValueError(
            f"{metric!r} is not a report metric: use one of {', '.join(DERIVED)}, a summary "
            f"figure ({', '.join(SUMMARY[:8])}, ...), groups.NAME.... or templates.NAME...."
        )
    value = _value(raw_value)
    if metric.endswith("_mib") and _SIZE.fullmatch(raw_value):
        value /= 2**20  # the metric counts MiB: a size is compared in its unit
    return Threshold(text.strip(), metric, op, value)


def _value(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        size = _SIZE.fullmatch(text)
        if size is not None:
            return float(size.group(1)) * _SIZE_UNITS[size.group(2)]
        try:
            return parse_go_duration(text)
        except ValueError:
            raise ValueError(
                f"{text!r} is not a number, a duration (30s, 250ms) or a size (64MiB)"
            ) from None
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    return value


def evaluate(thresholds: Sequence[Threshold], report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each threshold with the value it was checked against and whether it passed."""
    out = []
    for threshold in thresholds:
        actual, note = _lookup(report, threshold.metric)
        entry: dict[str, Any] = {
            "threshold": threshold.text,
            "value": actual,
            "passed": threshold.check(actual),
        }
        if note:
            entry["note"] = note
        out.append(entry)
    return out


def _lookup(report: Mapping[str, Any], metric: str) -> tuple[float | None, str]:
    summary = report.get("summary", {})
    if metric in DERIVED:
        return _derived(summary, metric)
    parts = metric.split(".")
    node: Any = report if parts[0] in ("groups", "templates") else summary
    for i, part in enumerate(parts):
        if i and isinstance(node, Mapping) and part not in node and parts[i - 1] in COUNTS:
            return 0.0, ""  # a status, reason or event the run never saw: counted zero times
        if not isinstance(node, Mapping) or part not in node:
            return None, f"the report has no {metric}"
        node = node[part]
    if node is None:
        if parts[0] == "churn":
            return None, "no value: the action had not finished when the run stopped"
        return None, "no value: pods that never became ready fall there"
    if isinstance(node, bool) or not isinstance(node, int | float):
        return None, f"{metric} is not a number in the report"
    return float(node), ""


def _derived(summary: Mapping[str, Any], metric: str) -> tuple[float | None, str]:
    if metric == "ready_rate":
        pods = summary.get("pods", 0)
        return (summary.get("pods_ready", 0) / pods if pods else None), ""
    if metric == "pull_errors_rate":
        pulls = summary.get("pulls", 0)
        return (summary.get("pull_errors", 0) / pulls if pulls else 0.0), ""
    by_status: Mapping[str, int] = summary.get("registry_requests_by_status", {})
    total = sum(by_status.values())
    errors = sum(n for status, n in by_status.items() if _is_error(status))
    return (errors / total if total else 0.0), ""


def _is_error(status: str) -> bool:
    """429, 5xx, or no answer (a connection reset or timeout is counted without a status)."""
    if not status.isdigit():
        return True
    code = int(status)
    return code == 429 or code >= 500
