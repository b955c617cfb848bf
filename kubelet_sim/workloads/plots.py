"""The report's PNG plots, drawn with matplotlib's non-interactive Agg backend from ``report.json``.

- ``pull-timeline.png``: per node, each pull as a bar from its start to its end, coloured by image
  (a legend of the most pulled images, the rest as "other"), failed pulls hatched with a red
  outline; parallel pulls share a node's row in lanes, back-to-back pulls in a lane are separate
  bars with a gap between them; wide bars carry their image's name; fault windows shaded;
- ``time-to-ready-cdf.png``: the pods' time to images ready as a CDF per node group;
- ``pull-latency-cdf.png``: the duration of the successful pulls as a CDF per image (the most
  pulled images), with each image's pull count and median in the legend;
- ``bytes-over-time.png``: MiB per second the nodes received per 0.1 s slot (every slot its full
  width, the last one included) and cumulatively; fault windows shaded;
- ``registry-requests.png``: the nodes' registry requests per second, stacked by outcome (answered,
  error answers 429 and 5xx, no answer: resets and timeouts), and the errors alone on their own
  scale; fault windows shaded;
- ``registry-view.png`` (virtual runs): what the modelled registry saw per second of simulated
  time: requests and errors, bytes, requests in flight; fault windows shaded.

Reports written before a field existed (a pull's ``image``, ``request_timeline``) still plot: the
image is "(image not recorded)", the request plot says there were no requests to draw.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from statistics import median
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window; chosen before pyplot is imported

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.colors import to_rgb
from matplotlib.patches import Patch

from kubelet_sim.workloads.outputs import PLOT_FILES

MAX_TIMELINE_NODES = 60
"""Rows of the pull timeline: larger runs show an even sample of their nodes."""
MAX_LEGEND_IMAGES = 12
"""Images with their own colour (the most pulled); the others are drawn as "other"."""
BYTES_SLOT = 0.1
"""Seconds per bin of ``bytes_timeline`` when a series is too short to tell (a single slot)."""

UNKNOWN_IMAGE = "?"  # a pull without an image, as the report's summary.by_image keys it
_OK, _FAILED = "#3b75af", "#d62728"
_OTHER = "#b0b0b0"
_NO_ANSWER = "#9467bd"
_ERROR = "#ff7f0e"
# Twelve distinguishable colours without red (failed pulls) and grey ("other").
IMAGE_COLORS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2",
    "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#c5b0d5",
)  # fmt: skip
_FAULT_COLORS = {
    "outage": "#d62728",
    "errors": "#ff7f0e",
    "resets": "#9467bd",
    "latency": "#bcbd22",
}
MIB = 1024 * 1024
_MAX_BAR_LABELS = 400  # text objects are slow to draw; the legend names every colour anyway


def write_plots(report: dict[str, Any], out: Path) -> list[Path]:
    """Draw every plot of ``report`` into ``out``; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    files = [
        _timeline(report, out / PLOT_FILES["timeline"]),
        _cdf(report, out / PLOT_FILES["time_to_ready"]),
        _latency_cdf(report, out / PLOT_FILES["pull_latency"]),
        _bytes(report, out / PLOT_FILES["bytes"]),
        _requests(report, out / PLOT_FILES["requests"]),
    ]
    if "registry_view" in report:
        files.append(_registry(report, out / PLOT_FILES["registry_view"]))
    return files


# Pure helpers (tested on their own) ---------------------------------------------------------


def image_of(pull: Mapping[str, Any]) -> str:
    """The pull's image reference; :data:`UNKNOWN_IMAGE` for reports that did not record it."""
    image = pull.get("image")
    return image if isinstance(image, str) and image else UNKNOWN_IMAGE


def image_label(image: str) -> str:
    return "(image not recorded)" if image == UNKNOWN_IMAGE else image


@dataclass(frozen=True, slots=True)
class Palette:
    """Colours of the ``MAX_LEGEND_IMAGES`` most pulled images; every other image is "other"."""

    colors: dict[str, str]  # most pulled first
    other: tuple[str, ...]  # the images drawn in the "other" colour, most pulled first

    def color(self, image: str) -> str:
        return self.colors.get(image, _OTHER)

    def legend(self) -> list[tuple[str, str]]:
        """``(label, colour)`` per legend entry: the named images, then "other" if any."""
        entries = [(image_label(image), color) for image, color in self.colors.items()]
        if self.other:
            n = len(self.other)
            entries.append((f"other ({n} image{'s' if n != 1 else ''})", _OTHER))
        return entries


def _natural(text: str) -> list[Any]:
    """A sort key that puts ``app-2`` before ``app-10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def most_pulled(counts: Mapping[str, int]) -> list[str]:
    """Images by pulls, most first; ties in natural order of their names."""
    return sorted(counts, key=lambda image: (-counts[image], _natural(image)))


def image_palette(counts: Mapping[str, int], cap: int = MAX_LEGEND_IMAGES) -> Palette:
    """A colour for each of the ``cap`` images with the most pulls (ties by name), the rest other."""
    ranked = most_pulled(counts)
    named = ranked[:cap]
    return Palette(
        colors={image: IMAGE_COLORS[i % len(IMAGE_COLORS)] for i, image in enumerate(named)},
        other=tuple(ranked[cap:]),
    )


def lanes(spans: Iterable[Mapping[str, Any]]) -> list[tuple[Mapping[str, Any], int, int]]:
    """Assign overlapping spans to lanes (greedy interval partitioning): (span, lane, lanes).

    A span that starts when (or after) a lane's last span ended reuses that lane, so one node's
    serial pulls stay in one lane and only parallel pulls open more."""
    ends: list[float] = []
    placed = []
    for span in sorted(spans, key=lambda s: (s["start"], s["end"])):
        lane = next((i for i, end in enumerate(ends) if end <= span["start"]), len(ends))
        if lane == len(ends):
            ends.append(span["end"])
        else:
            ends[lane] = span["end"]
        placed.append((span, lane))
    return [(span, lane, len(ends)) for span, lane in placed]


@dataclass(frozen=True, slots=True)
class Bar:
    """One pull as drawn in its node's row: from ``x`` to ``x + width`` in lane ``lane``."""

    x: float
    width: float
    lane: int
    lanes: int
    image: str
    failed: bool


def pull_bars(
    spans: Iterable[Mapping[str, Any]], *, gap: float, min_width: float = 0.0
) -> list[Bar]:
    """One node's pulls as bars: lanes for parallel pulls and a gap of ``gap`` seconds before a
    pull that starts right where the previous one in its lane ended, so back-to-back pulls are
    separate bars rather than one long one. A bar is at least ``min_width`` wide (to stay
    visible) unless the next bar in its lane starts sooner, and gives up at most a quarter of its
    width to the gap."""
    placed = lanes(spans)
    by_lane: dict[int, list[Mapping[str, Any]]] = {}
    for span, lane, _ in placed:
        by_lane.setdefault(lane, []).append(span)
    count = placed[0][2] if placed else 0
    bars = []
    for lane, mine in by_lane.items():
        for i, span in enumerate(mine):
            start = float(span["start"])
            end = max(float(span["end"]), start)
            following = float(mine[i + 1]["start"]) if i + 1 < len(mine) else math.inf
            right = min(max(end, start + min_width), following)
            if following - right < gap:
                right = min(right, max(following - gap, start + (right - start) * 0.75))
            failed = bool(span.get("error"))
            bars.append(Bar(start, right - start, lane, count, image_of(span), failed))
    bars.sort(key=lambda b: (b.x, b.lane))
    return bars


def cdf_points(values: Iterable[float]) -> tuple[list[float], list[float]]:
    """Points of the empirical CDF as a post-step line: it starts at 0 at the smallest value and
    rises by 1/n at each value (to 1 at the largest)."""
    xs = sorted(values)
    if not xs:
        return [], []
    n = len(xs)
    return [xs[0], *xs], [0.0, *((i + 1) / n for i in range(n))]


def slot_of(series: Sequence[Sequence[float]]) -> float:
    """Seconds per bin of a ``[[t, n], ...]`` series: the smallest step between its times."""
    steps = [b[0] - a[0] for a, b in pairwise(series) if b[0] > a[0]]
    return round(min(steps), 6) if steps else BYTES_SLOT


def stair_edges(
    series: Sequence[Sequence[float]], slot: float | None = None
) -> tuple[list[float], list[float]]:
    """``(edges, values)`` of a ``[[t, n], ...]`` series binned every ``slot`` seconds: one edge
    more than values, the last slot closed at ``t + slot``, so it is drawn its full width."""
    if not series:
        return [], []
    width = slot if slot is not None else slot_of(series)
    edges = [float(t) for t, _ in series]
    return [*edges, edges[-1] + width], [float(n) for _, n in series]


def mib_per_second(series: Sequence[Sequence[float]]) -> tuple[list[float], list[float]]:
    """``(edges, MiB/s)`` of a bytes-per-slot series: each slot's bytes over the slot's width."""
    slot = slot_of(series)
    edges, values = stair_edges(series, slot)
    return edges, [n / slot / MIB for n in values]


def cumulative_mib(series: Sequence[Sequence[float]]) -> tuple[list[float], list[float]]:
    """Cumulative MiB received by the end of each slot, from 0 at the first slot's start (the
    bytes of a slot counted by its closing edge, not its opening one)."""
    edges, values = stair_edges(series)
    total, ys = 0.0, [0.0]
    for n in values:
        total += n
        ys.append(total / MIB)
    return edges, ys


@dataclass(frozen=True, slots=True)
class RequestRates:
    """Per whole second from 0 to the last second with a request (zeros where there was none)."""

    edges: list[float]
    requests: list[float]
    errors: list[float]  # 429 and 5xx answers
    no_answer: list[float]  # resets, timeouts


def request_rates(rows: Iterable[Sequence[int]]) -> RequestRates:
    """The report's sparse ``request_timeline`` rows ``[second, requests, errors, no answer]``
    as dense per-second series (requests per second, since each row is one second)."""
    seconds: dict[int, tuple[int, int, int]] = {}
    for row in rows:
        second, requests, errors, no_answer = (int(v) for v in row[:4])
        old = seconds.get(second, (0, 0, 0))
        seconds[second] = (old[0] + requests, old[1] + errors, old[2] + no_answer)
    if not seconds:
        return RequestRates([], [], [], [])
    span = range(0, max(seconds) + 1)
    rows3 = [seconds.get(s, (0, 0, 0)) for s in span]
    return RequestRates(
        edges=[float(s) for s in range(0, max(seconds) + 2)],
        requests=[float(r[0]) for r in rows3],
        errors=[float(r[1]) for r in rows3],
        no_answer=[float(r[2]) for r in rows3],
    )


@dataclass(frozen=True, slots=True)
class ImageLatency:
    image: str
    seconds: list[float]  # the successful pulls' durations, sorted
    pulls: int
    failed: int


def latency_by_image(
    pulls: Iterable[Mapping[str, Any]], cap: int = MAX_LEGEND_IMAGES
) -> tuple[list[ImageLatency], int]:
    """The durations of the successful pulls of the ``cap`` most pulled images (most pulled
    first, ties by name) and how many more images there were."""
    counts: Counter[str] = Counter()
    done: dict[str, list[float]] = {}
    failed: Counter[str] = Counter()
    for pull in pulls:
        image = image_of(pull)
        counts[image] += 1
        if pull.get("error"):
            failed[image] += 1
        else:
            done.setdefault(image, []).append(max(0.0, pull["end"] - pull["start"]))
    ranked = most_pulled(counts)
    rows = [
        ImageLatency(image, sorted(done.get(image, [])), counts[image], failed[image])
        for image in ranked[:cap]
    ]
    return rows, max(0, len(ranked) - cap)


# Drawing ------------------------------------------------------------------------------------


def _empty(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path)
    plt.close(fig)
    return path


def _stop(report: Mapping[str, Any]) -> float | None:
    stopped = report.get("run", {}).get("stopped_at")
    return float(stopped) if isinstance(stopped, int | float) else None


def _plan(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    plan = report.get("faults", {}).get("plan", [])
    return [w for w in plan if isinstance(w, dict) and "kind" in w]


def _shade_faults(
    report: Mapping[str, Any], axes: Sequence[Axes], label_ax: Axes | None = None
) -> list[str]:
    """Shade the fault windows other than latency on ``axes`` (their kind written at the top of
    ``label_ax``); returns the latency windows as text for a title."""
    plan = _plan(report)
    stop = _stop(report)
    latency = [f"+{w.get('delay', 0) * 1000:g} ms latency" for w in plan if w["kind"] == "latency"]
    shaded = [w for w in plan if w["kind"] != "latency"]
    for i, window in enumerate(shaded):
        start = window.get("start") or 0.0
        end = window.get("end") or stop
        if end is None:
            continue
        color = _FAULT_COLORS.get(window["kind"], "0.5")
        for ax in axes:
            ax.axvspan(start, end, color=color, alpha=0.12, lw=0)
        if label_ax is not None:
            label_ax.text(start, 0.97 - 0.08 * (i % 3), f" {window['kind']}", fontsize=8,
                          color=color, va="top", transform=label_ax.get_xaxis_transform())  # fmt: skip
    return latency


def _with_latency(title: str, latency: list[str]) -> str:
    return f"{title} ({', '.join(latency)})" if latency else title


def _text_color(face: str) -> str:
    r, g, b = to_rgb(face)
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.55 else "white"


def _sample_nodes(names: list[str]) -> list[str]:
    if len(names) <= MAX_TIMELINE_NODES:
        return names
    step = len(names) / MAX_TIMELINE_NODES
    return [names[int(i * step)] for i in range(MAX_TIMELINE_NODES)]


def _short_labels(image: str) -> list[str]:
    """The labels to try on a bar, longest first: the image, then without its repository path."""
    label = image_label(image)
    short = label.rsplit("/", 1)[-1]
    return [label] if short == label else [label, short]


def _timeline(report: dict[str, Any], path: Path) -> Path:
    all_nodes = [n["name"] for n in report.get("nodes", [])]
    nodes = _sample_nodes(all_nodes)
    pulls = report.get("pulls", [])
    palette = image_palette(Counter(image_of(p) for p in pulls))
    any_failed = any(p.get("error") for p in pulls)
    legend_rows = len(palette.legend()) + any_failed + len(_plan(report))
    height = min(14.0, max(1.5 + 0.28 * len(nodes), 1.4 + 0.24 * legend_rows))
    fig, ax = plt.subplots(figsize=(13, height), dpi=100)
    by_node: dict[str, list[dict[str, Any]]] = {n: [] for n in nodes}
    for span in pulls:
        if span["node"] in by_node:
            by_node[span["node"]].append(span)
    shown = [s for spans in by_node.values() for s in spans]
    right = max([s["end"] for s in shown] or [_stop(report) or 1.0])
    left = min([s["start"] for s in shown] + [0.0])
    right = max(right, left + 1e-3)
    px = (right - left) / 900  # seconds per pixel, near enough, of the ~900 px wide axes
    rows: list[tuple[int, Bar]] = []
    for row, name in enumerate(nodes):
        rows += [(row, bar) for bar in pull_bars(by_node[name], gap=2.5 * px, min_width=1.5 * px)]

    def geometry(row: int, bar: Bar) -> tuple[float, float]:
        h = 0.8 / bar.lanes
        return row - 0.4 + bar.lane * h, h * 0.92

    for failed in (False, True):
        mine = [(row, bar) for row, bar in rows if bar.failed == failed]
        if not mine:
            continue
        ys, hs = zip(*(geometry(row, bar) for row, bar in mine), strict=True)
        ax.barh(list(ys), [b.width for _, b in mine], height=list(hs), left=[b.x for _, b in mine],
                align="edge", color=[palette.color(b.image) for _, b in mine],
                edgecolor=_FAILED if failed else "none", linewidth=1.0 if failed else 0,
                hatch="////" if failed else None)  # fmt: skip
    arrivals = [p["submitted"] for p in report.get("pods", []) if p.get("submitted") is not None]
    if arrivals:
        ax.axvline(min(arrivals), color="0.6", lw=0.8, ls=":")
    latency = _shade_faults(report, [ax])
    ax.set_xlim(left, right + (right - left) * 0.01)
    ax.set_ylim(max(len(nodes), 1) - 0.5, -0.5)  # first node on top
    ax.set_yticks(range(len(nodes)))
    ax.set_yticklabels(nodes, fontsize=7 if len(nodes) > 20 else 9)
    ax.set_xlabel("seconds since the run started")
    sampled = "" if len(nodes) == len(all_nodes) else f" ({len(nodes)} of {len(all_nodes)} nodes)"
    ax.set_title(_with_latency(f"Image pulls per node{sampled}", latency))
    handles = [Patch(facecolor=color, label=label) for label, color in palette.legend()]
    if any_failed:
        handles.append(Patch(facecolor="white", edgecolor=_FAILED, hatch="////", label="failed"))
    for window in _plan(report):
        if window["kind"] != "latency":
            handles.append(Patch(facecolor=_FAULT_COLORS.get(window["kind"], "0.5"), alpha=0.12,
                                 label=f"{window['kind']} window"))  # fmt: skip
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8,
                  title="image", title_fontsize=8, frameon=False)  # fmt: skip
    if not pulls:
        _empty(ax, "no pulls in this run (every image was already present)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    _label_bars(fig, ax, rows, geometry, palette)
    return _save(fig, path)


def _label_bars(
    fig: Any, ax: Axes, rows: list[tuple[int, Bar]], geometry: Any, palette: Palette
) -> None:
    """Write the image on each bar wide and tall enough for it (after the layout is final)."""
    box = ax.get_window_extent(fig.canvas.get_renderer())
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    x_px, y_px = box.width / (x1 - x0), box.height / abs(y1 - y0)
    char_px = 7 * fig.dpi / 72 * 0.58  # a 7 pt character, roughly
    written = 0
    for row, bar in sorted(rows, key=lambda rb: -rb[1].width):
        y, h = geometry(row, bar)
        if written >= _MAX_BAR_LABELS:
            break
        if h * y_px < 9:  # lanes too thin for 7 pt text
            continue
        width_px = bar.width * x_px
        text = next((t for t in _short_labels(bar.image) if len(t) * char_px + 4 <= width_px), None)
        if text is None:
            continue
        face = palette.color(bar.image)
        ax.text(bar.x + bar.width / 2, y + h / 2, text, ha="center", va="center", fontsize=7,
                color=_text_color(face), clip_on=True)  # fmt: skip
        written += 1


def _cdf(report: dict[str, Any], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=100)
    pods = report.get("pods", [])
    groups: dict[str, list[float]] = {}
    for pod in pods:
        if pod.get("seconds") is not None:
            groups.setdefault(pod["group"], []).append(pod["seconds"])
    for name, values in groups.items():
        values.sort()
        total = sum(1 for p in pods if p["group"] == name)
        ys = [(i + 1) / total for i in range(len(values))]
        ax.step(
            [0.0, *values], [0.0, *ys], where="post", label=f"{name} ({len(values)}/{total} ready)"
        )
    ttr = report.get("summary", {}).get("time_to_ready", {})
    for key in ("p50", "p99"):
        if ttr.get(key) is not None:
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
    return _save(fig, path)


def _seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _latency_cdf(report: dict[str, Any], path: Path) -> Path:
    """The successful pulls' durations as a CDF per image, the most pulled images only."""
    pulls = report.get("pulls", [])
    rows, more = latency_by_image(pulls)
    palette = image_palette(Counter(image_of(p) for p in pulls))
    fig, ax = plt.subplots(figsize=(10, 5.5), dpi=100)
    drawn = [r for r in rows if r.seconds]
    for r in drawn:
        xs, ys = cdf_points(r.seconds)
        count = f"{len(r.seconds)} pulls ok, {r.failed} failed" if r.failed else f"{r.pulls} pulls"
        ax.step(xs, ys, where="post", lw=1.5, color=palette.color(r.image),
                label=f"{image_label(r.image)}: {count}, p50 {_seconds(median(r.seconds))}")  # fmt: skip
    positive = [x for r in drawn for x in r.seconds if x > 0]
    if positive and max(positive) / min(positive) > 30:
        ax.set_xscale("log")  # durations over more than an order of magnitude or two
    elif positive:
        ax.set_xlim(0, max(positive) * 1.08)  # room right of the slowest pull, even if all equal
    ax.set_ylim(0, 1.04)
    ax.set_xlabel("seconds from the pull's start to its end (successful pulls)")
    ax.set_ylabel("share of the image's successful pulls")
    title = "Pull duration per image (CDF)"
    if more:
        title += f": the {len(rows)} most pulled images, {more} more not shown"
    ax.set_title(title)
    if drawn:
        ax.legend(loc="lower right", fontsize=8)
    elif pulls:
        _empty(ax, "no pull succeeded")
    else:
        _empty(ax, "no pulls in this run (every image was already present)")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return _save(fig, path)


def _bytes(report: dict[str, Any], path: Path) -> Path:
    fig, (rate_ax, total_ax) = plt.subplots(2, 1, figsize=(10, 6.5), dpi=100, sharex=True)
    series = report.get("bytes_timeline", [])
    if series:
        slot = slot_of(series)
        edges, rates = mib_per_second(series)
        rate_ax.stairs(rates, edges, lw=1, label="received by the nodes", fill=True, alpha=0.5,
                       color=_OK)  # fmt: skip
        rate_ax.stairs(rates, edges, lw=1, color=_OK)
        served = report.get("faults", {}).get("served_timeline")
        if served:
            s_edges, s_rates = mib_per_second(served)
            rate_ax.stairs(s_rates, s_edges, lw=0.8, alpha=0.8, color=_ERROR,
                           label="sent by the fault proxy")  # fmt: skip
        edges, totals = cumulative_mib(series)
        total_ax.plot(edges, totals, lw=1.5, color=_OK)
        total_ax.annotate(f"{totals[-1]:.1f} MiB", (edges[-1], totals[-1]), fontsize=8,
                          xytext=(-4, 4), textcoords="offset points", ha="right")  # fmt: skip
        rate_ax.legend(loc="upper right", fontsize=8)
        per = f"per {slot:g} s slot" if slot != 1 else "per second"
        rate_ax.set_ylabel(f"MiB/s ({per})")
        rate_ax.set_ylim(bottom=0)
        total_ax.set_ylim(bottom=0)
    else:
        rate_ax.set_ylabel("MiB/s")
        _empty(rate_ax, "no bytes were transferred")
    latency = _shade_faults(report, [rate_ax, total_ax], rate_ax)
    rate_ax.set_xlim(left=0)
    rate_ax.set_title(_with_latency("Bytes received by the nodes over time", latency))
    total_ax.set_ylabel("cumulative MiB")
    total_ax.set_xlabel("seconds since the run started")
    for ax in (rate_ax, total_ax):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def _requests(report: dict[str, Any], path: Path) -> Path:
    """The nodes' registry requests per second by outcome, and the errors on their own scale."""
    rates = request_rates(report.get("request_timeline") or [])
    fig, (req_ax, err_ax) = plt.subplots(
        2, 1, figsize=(10, 6.5), dpi=100, sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    total = sum(rates.requests)
    if total:
        errors, no_answer = sum(rates.errors), sum(rates.no_answer)
        failed = [e + n for e, n in zip(rates.errors, rates.no_answer, strict=True)]

        def share(n: float) -> str:
            return f"{n:g} ({n / total:.1%})"

        # Stacked: no answer at the bottom, error answers on it, the other answers on top.
        answered = share(total - errors - no_answer)
        req_ax.stairs(rates.requests, rates.edges, baseline=failed, fill=True, color=_OK,
                      alpha=0.75, label=f"answered, not 429/5xx: {answered}")  # fmt: skip
        req_ax.stairs(failed, rates.edges, baseline=rates.no_answer, fill=True, color=_ERROR,
                      label=f"error answers (429, 5xx): {share(errors)}")  # fmt: skip
        req_ax.stairs(rates.no_answer, rates.edges, fill=True, color=_NO_ANSWER,
                      label=f"no answer (reset, timeout): {share(no_answer)}")  # fmt: skip
        req_ax.stairs(rates.requests, rates.edges, color="0.25", lw=0.8)
        req_ax.legend(loc="upper right", fontsize=8, title=f"{total:g} requests",
                      title_fontsize=8)  # fmt: skip
        if errors or no_answer:
            err_ax.stairs(rates.errors, rates.edges, color=_ERROR, lw=1.2,
                          label="error answers (429, 5xx)")  # fmt: skip
            err_ax.stairs(rates.no_answer, rates.edges, color=_NO_ANSWER, lw=1.2,
                          label="no answer (reset, timeout)")  # fmt: skip
            err_ax.legend(loc="upper right", fontsize=8)
        else:
            _empty(err_ax, "no error answers, resets or timeouts")
        req_ax.set_ylim(bottom=0)
        err_ax.set_ylim(bottom=0)
    else:
        _empty(req_ax, "no registry requests in this run (or a report without request_timeline)")
    latency = _shade_faults(report, [req_ax, err_ax], req_ax)
    req_ax.set_xlim(left=0)
    req_ax.set_title(_with_latency("Registry requests per second, all nodes", latency))
    req_ax.set_ylabel("requests/s")
    err_ax.set_ylabel("failed requests/s")
    err_ax.set_xlabel("seconds since the run started (each bar one whole second)")
    for ax in (req_ax, err_ax):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


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
    bytes_ax.step(xs, [row[2] / step / MIB for row in rows], where="post", lw=1)
    flight_ax.step(xs, [row[5] for row in rows], where="post", lw=1, label="requests")
    flight_ax.step(xs, [row[6] for row in rows], where="post", lw=1, label="bodies")
    flight_ax.legend(loc="upper right", fontsize=8)
    _shade_faults(report, [req_ax, bytes_ax, flight_ax])
    per = "per second" if step == 1 else f"per second (averaged over {step} s)"
    req_ax.set_title(f"What the modelled registry saw, {per} of simulated time")
    req_ax.set_ylabel("per second")
    bytes_ax.set_ylabel("MiB/s")
    flight_ax.set_ylabel("in flight (peak)")
    flight_ax.set_xlabel("simulated seconds since the run started")
    for ax in (req_ax, bytes_ax, flight_ax):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)
