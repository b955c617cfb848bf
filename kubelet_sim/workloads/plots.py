"""The report's PNG plots, drawn with matplotlib's non-interactive Agg backend from ``report.json``.

- ``pull-timeline.png``: per node, each pull as a bar from start to end (parallel pulls in lanes);
- ``time-to-ready-cdf.png``: the pods' time to images ready as a CDF per node group;
- ``bytes-over-time.png``: bytes received per second and cumulatively, fault windows shaded;
- ``registry-view.png`` (virtual runs): what the modelled registry saw per second of simulated
  time: requests and errors, bytes, requests in flight; fault windows shaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window; chosen before pyplot is imported

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

MAX_TIMELINE_NODES = 60
_OK, _FAILED = "#3b75af", "#d62728"
_FAULT_COLORS = {
    "outage": "#d62728",
    "errors": "#ff7f0e",
    "resets": "#9467bd",
    "latency": "#bcbd22",
}


def write_plots(report: dict[str, Any], out: Path) -> list[Path]:
    """Draw every plot of ``report`` into ``out``; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    files = [
        _timeline(report, out / "pull-timeline.png"),
        _cdf(report, out / "time-to-ready-cdf.png"),
        _bytes(report, out / "bytes-over-time.png"),
    ]
    if "registry_view" in report:
        files.append(_registry(report, out / "registry-view.png"))
    return files


def _empty(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")


def _lanes(spans: list[dict[str, Any]]) -> list[tuple[dict[str, Any], int, int]]:
    """Assign overlapping spans to lanes (greedy interval partitioning): (span, lane, lanes)."""
    ends: list[float] = []
    placed = []
    for span in sorted(spans, key=lambda s: s["start"]):
        lane = next((i for i, end in enumerate(ends) if end <= span["start"]), len(ends))
        if lane == len(ends):
            ends.append(span["end"])
        else:
            ends[lane] = span["end"]
        placed.append((span, lane))
    return [(span, lane, len(ends)) for span, lane in placed]


def _sample_nodes(names: list[str]) -> list[str]:
    if len(names) <= MAX_TIMELINE_NODES:
        return names
    step = len(names) / MAX_TIMELINE_NODES
    return [names[int(i * step)] for i in range(MAX_TIMELINE_NODES)]


def _timeline(report: dict[str, Any], path: Path) -> Path:
    all_nodes = [n["name"] for n in report["nodes"]]
    nodes = _sample_nodes(all_nodes)
    height = min(14.0, 1.5 + 0.28 * len(nodes))
    fig, ax = plt.subplots(figsize=(11, height), dpi=100)
    by_node: dict[str, list[dict[str, Any]]] = {n: [] for n in nodes}
    for span in report["pulls"]:
        if span["node"] in by_node:
            by_node[span["node"]].append(span)
    for row, name in enumerate(nodes):
        for span, lane, lanes in _lanes(by_node[name]):
            h = 0.8 / lanes
            y = row - 0.4 + lane * h
            color = _FAILED if span["error"] else _OK
            ax.broken_barh([(span["start"], max(span["end"] - span["start"], 0.002))], (y, h * 0.9),
                           facecolors=color)  # fmt: skip
    arrivals = [p["submitted"] for p in report["pods"] if p["submitted"] is not None]
    if arrivals:
        ax.axvline(min(arrivals), color="0.6", lw=0.8, ls=":")
    ax.set_yticks(range(len(nodes)))
    ax.set_yticklabels(nodes, fontsize=7 if len(nodes) > 20 else 9)
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the run started")
    shown = "" if len(nodes) == len(all_nodes) else f" ({len(nodes)} of {len(all_nodes)} nodes)"
    ax.set_title(f"Image pulls per node{shown}: blue = succeeded, red = failed")
    if not report["pulls"]:
        _empty(ax, "no pulls in this run (every image was already present)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _cdf(report: dict[str, Any], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=100)
    groups: dict[str, list[float]] = {}
    for pod in report["pods"]:
        if pod["seconds"] is not None:
            groups.setdefault(pod["group"], []).append(pod["seconds"])
    for name, values in groups.items():
        values.sort()
        total = sum(1 for p in report["pods"] if p["group"] == name)
        ys = [(i + 1) / total for i in range(len(values))]
        ax.step(
            [0.0, *values], [0.0, *ys], where="post", label=f"{name} ({len(values)}/{total} ready)"
        )
    ttr = report["summary"]["time_to_ready"]
    for key in ("p50", "p99"):
        if ttr[key] is not None:
            ax.axvline(ttr[key], color="0.4", ls=":", lw=1)
            ax.text(ttr[key], 1.02, key, ha="center", fontsize=8, color="0.3")
    ax.set_ylim(0, 1.06)
    ax.set_xlabel("seconds from pod arrival until all its images were ready")
    ax.set_ylabel("share of pods")
    ax.set_title("Pod time to images ready (CDF)")
    if groups:
        ax.legend(loc="lower right")
    else:
        _empty(ax, "no pod had its images ready")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _bytes(report: dict[str, Any], path: Path) -> Path:
    fig, (rate_ax, total_ax) = plt.subplots(2, 1, figsize=(10, 6.5), dpi=100, sharex=True)
    series = report["bytes_timeline"]
    mib = 1024 * 1024
    if series:
        slot = series[1][0] - series[0][0] if len(series) > 1 else 0.1
        xs = [t for t, _ in series]
        rate_ax.step(xs, [n / slot / mib for _, n in series], where="post", lw=1,
                     label="received by the nodes")  # fmt: skip
        cumulative = 0.0
        ys = []
        for _, n in series:
            cumulative += n
            ys.append(cumulative / mib)
        total_ax.step(xs, ys, where="post", lw=1.5)
        served = report["faults"].get("served_timeline")
        if served:
            rate_ax.step([t for t, _ in served], [n / 0.1 / mib for _, n in served], where="post",
                         lw=0.8, alpha=0.7, label="sent by the fault proxy")  # fmt: skip
        rate_ax.legend(loc="upper right", fontsize=8)
    else:
        _empty(rate_ax, "no bytes were transferred")
    plan = report["faults"]["plan"]
    latency = [f"+{w['delay'] * 1000:g} ms latency" for w in plan if w["kind"] == "latency"]
    shaded = [w for w in plan if w["kind"] != "latency"]
    for i, window in enumerate(shaded):
        end = window.get("end") or report["run"]["stopped_at"]
        color = _FAULT_COLORS.get(window["kind"], "0.5")
        for ax in (rate_ax, total_ax):
            ax.axvspan(window.get("start", 0.0), end, color=color, alpha=0.12)
        top = rate_ax.get_ylim()[1]
        rate_ax.text(window.get("start", 0.0), top * (0.95 - 0.08 * (i % 3)), f" {window['kind']}",
                     fontsize=8, color=color, va="top")  # fmt: skip
    title = "Bytes served to the nodes over time"
    if latency:
        title += " (" + ", ".join(latency) + ")"
    rate_ax.set_title(title)
    rate_ax.set_ylabel("MiB/s")
    total_ax.set_ylabel("cumulative MiB")
    total_ax.set_xlabel("seconds since the run started")
    for ax in (rate_ax, total_ax):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _registry(report: dict[str, Any], path: Path) -> Path:
    """Requests and errors, bytes and requests in flight per second, as the registry saw them."""
    view = report["registry_view"]
    step = view["step_seconds"]
    rows = view["series"]
    fig, (req_ax, bytes_ax, flight_ax) = plt.subplots(3, 1, figsize=(10, 8), dpi=100, sharex=True)
    xs = [row[0] for row in rows]
    req_ax.step(xs, [row[1] / step for row in rows], where="post", lw=1, label="requests")
    req_ax.step(xs, [row[3] / step for row in rows], where="post", lw=1, color=_FAILED,
                label="errors and resets")  # fmt: skip
    req_ax.step(xs, [row[4] / step for row in rows], where="post", lw=0.8, alpha=0.7,
                label="tokens issued")  # fmt: skip
    req_ax.legend(loc="upper right", fontsize=8)
    mib = 1024 * 1024
    bytes_ax.step(xs, [row[2] / step / mib for row in rows], where="post", lw=1)
    flight_ax.step(xs, [row[5] for row in rows], where="post", lw=1, label="requests")
    flight_ax.step(xs, [row[6] for row in rows], where="post", lw=1, label="bodies")
    flight_ax.legend(loc="upper right", fontsize=8)
    for window in report["faults"]["plan"]:
        if window["kind"] == "latency":
            continue
        end = window.get("end") or report["run"]["stopped_at"]
        for ax in (req_ax, bytes_ax, flight_ax):
            ax.axvspan(window.get("start", 0.0), end, alpha=0.12,
                       color=_FAULT_COLORS.get(window["kind"], "0.5"))  # fmt: skip
    per = "per second" if step == 1 else f"per second (averaged over {step} s)"
    req_ax.set_title(f"What the modelled registry saw, {per} of simulated time")
    req_ax.set_ylabel("per second")
    bytes_ax.set_ylabel("MiB/s")
    flight_ax.set_ylabel("in flight (peak)")
    flight_ax.set_xlabel("simulated seconds since the run started")
    for ax in (req_ax, bytes_ax, flight_ax):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
