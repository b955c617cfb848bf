"""The report's PNG plots: the pure helpers behind them and the files ``write_plots`` draws."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pytest
from matplotlib.axes import Axes
from matplotlib.container import BarContainer
from matplotlib.figure import Figure
from matplotlib.patches import StepPatch

from kubelet_sim.cli.main import main
from kubelet_sim.workloads import plots
from kubelet_sim.workloads.plots import (
    IMAGE_COLORS,
    MAX_LEGEND_IMAGES,
    UNKNOWN_IMAGE,
    cdf_points,
    cumulative_mib,
    image_palette,
    lanes,
    latency_by_image,
    mib_per_second,
    pull_bars,
    request_rates,
    stair_edges,
    write_plots,
)

PNG = b"\x89PNG\r\n\x1a\n"
MIB = 1024 * 1024


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (after checking the signature)."""
    data = path.read_bytes()
    assert data.startswith(PNG), path
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def floats(data: Any) -> list[float]:
    """A matplotlib array (typed as ArrayLike) as plain floats."""
    return [float(v) for v in data]


def legend_texts(ax: Axes) -> list[str]:
    legend = ax.get_legend()
    assert legend is not None
    return [t.get_text() for t in legend.get_texts()]


def pull(node: str, start: float, end: float, image: str = "a/b:1", *, error: bool = False,
         size: int = 1000) -> dict[str, Any]:  # fmt: skip
    return {"node": node, "start": start, "end": end, "size": 0 if error else size,
            "error": error, "dispatch": None, "requests": 3, "request_seconds": 0.01,
            "image": image}  # fmt: skip


def serial(node: str, n: int, each: float, images: list[str] | None = None) -> list[dict[str, Any]]:
    names = images or [f"app/app-{i}:1.0" for i in range(n)]
    return [pull(node, i * each, (i + 1) * each, names[i % len(names)]) for i in range(n)]


def report(**fields: Any) -> dict[str, Any]:
    """A small bench report as ``report.json`` holds it; ``fields`` replace the top-level keys."""
    pulls = [*serial("n-0", 8, 0.3), pull("n-1", 0.0, 1.0, "app/app-0:1.0"),
             pull("n-1", 0.2, 0.9, "app/app-1:1.0", error=True),
             pull("n-1", 1.0, 1.5, "app/app-1:1.0")]  # fmt: skip
    base: dict[str, Any] = {
        "run": {"stopped_at": 3.0},
        "summary": {"time_to_ready": {"p50": 1.0, "p99": 2.4}},
        "faults": {"plan": [{"kind": "latency", "start": 0.0, "end": None, "delay": 0.05},
                            {"kind": "outage", "start": 0.1, "end": 0.8},
                            {"kind": "errors", "start": 1.0, "end": None, "share": 0.5}]},
        "nodes": [{"name": "n-0"}, {"name": "n-1"}],
        "pods": [{"name": f"p-{i}", "group": "pool", "template": "web", "submitted": 0.0,
                  "seconds": 0.3 * (i + 1) if i < 9 else None, "deleted": None,
                  "containers": [{"image": "registry:5000/app/app-0:1.0"}]} for i in range(10)],
        "pulls": pulls,
        "bytes_timeline": [[round(i * 0.1, 3), (i % 4) * 100_000] for i in range(25)],
        "request_timeline": [[0, 40, 2, 1], [1, 12, 6, 0], [2, 3, 0, 3]],
    }  # fmt: skip
    return base | fields


# Pure helpers ---------------------------------------------------------------------------------


def test_back_to_back_pulls_stay_in_one_lane_as_separate_bars() -> None:
    # 8 serial pulls of 0.3 s: one lane, eight bars, each ending before the next one starts.
    bars = pull_bars(serial("n", 8, 0.3), gap=0.02, min_width=0.001)
    assert len(bars) == 8
    assert {(b.lane, b.lanes) for b in bars} == {(0, 1)}
    assert [b.x for b in bars] == pytest.approx([i * 0.3 for i in range(8)])
    for before, after in pairwise(bars):
        assert before.x + before.width == pytest.approx(after.x - 0.02)  # the gap, exactly
    assert all(b.width == pytest.approx(0.28) for b in bars[:-1])
    assert bars[-1].width == pytest.approx(0.3)  # nothing follows the last one: full width
    assert [b.image for b in bars] == [f"app/app-{i}:1.0" for i in range(8)]


def test_a_gap_takes_at_most_a_quarter_of_a_short_bar() -> None:
    bars = pull_bars(serial("n", 3, 0.04), gap=0.05)
    assert [b.width for b in bars] == pytest.approx([0.03, 0.03, 0.04])
    assert bars[0].x + bars[0].width < bars[1].x


def test_parallel_pulls_open_lanes_and_a_freed_lane_is_reused() -> None:
    spans = [pull("n", 0.0, 1.0), pull("n", 0.5, 2.0), pull("n", 1.0, 1.5, error=True)]
    placed = lanes(spans)
    assert [(s["start"], lane, n) for s, lane, n in placed] == [(0.0, 0, 2), (0.5, 1, 2),
                                                                (1.0, 0, 2)]  # fmt: skip
    bars = pull_bars(spans, gap=0.01)
    assert [(b.x, b.lane, b.failed) for b in bars] == [(0.0, 0, False), (0.5, 1, False),
                                                       (1.0, 0, True)]  # fmt: skip
    assert bars[0].width == pytest.approx(0.99)  # back to back with the failed pull in lane 0
    assert bars[1].width == pytest.approx(1.5)  # nothing follows it in lane 1


def test_a_tiny_pull_is_widened_to_stay_visible_but_not_into_the_next() -> None:
    alone = pull_bars([pull("n", 1.0, 1.0001)], gap=0.01, min_width=0.02)
    assert alone[0].width == pytest.approx(0.02)
    squeezed = pull_bars([pull("n", 1.0, 1.001), pull("n", 1.005, 1.5)], gap=0.01, min_width=0.02)
    assert squeezed[0].x + squeezed[0].width <= squeezed[1].x
    assert pull_bars([], gap=0.01) == []


def test_the_palette_names_the_twelve_most_pulled_images_and_the_rest_are_other() -> None:
    counts = {f"app/app-{i}:1.0": 1 for i in range(16)} | {"big/one:1": 9, "big/two:1": 5}
    palette = image_palette(counts)
    assert MAX_LEGEND_IMAGES == 12
    assert list(palette.colors) == ["big/one:1", "big/two:1"] + [
        f"app/app-{i}:1.0"
        for i in range(10)  # ties in natural order: app-2 before app-10
    ]
    assert list(palette.colors.values()) == list(IMAGE_COLORS[:12])
    assert palette.other == tuple(f"app/app-{i}:1.0" for i in range(10, 16))
    legend = palette.legend()
    assert len(legend) == 13
    assert legend[-1] == ("other (6 images)", palette.color("app/app-15:1.0"))
    assert palette.color("app/app-15:1.0") not in IMAGE_COLORS
    assert palette.color("big/one:1") == IMAGE_COLORS[0]


def test_a_small_palette_has_no_other_and_names_an_unrecorded_image() -> None:
    palette = image_palette({"a:1": 2, UNKNOWN_IMAGE: 1})
    assert palette.other == ()
    assert palette.legend() == [("a:1", IMAGE_COLORS[0]), ("(image not recorded)", IMAGE_COLORS[1])]
    assert image_palette({"x": 1}, cap=0).legend()[-1][0] == "other (1 image)"


def test_the_last_slot_of_a_series_keeps_its_width() -> None:
    series = [[0.0, 10], [0.1, 0], [0.2, 30]]
    edges, values = stair_edges(series)
    assert edges == pytest.approx([0.0, 0.1, 0.2, 0.3])  # the closing edge of the last slot
    assert values == [10.0, 0.0, 30.0]
    assert stair_edges([]) == ([], [])
    assert stair_edges([[4.0, 1]]) == ([4.0, pytest.approx(4.1)], [1.0])  # one slot: 0.1 s
    assert stair_edges([[0, 1], [1, 2]]) == ([0.0, 1.0, 2.0], [1.0, 2.0])


def test_bytes_per_slot_become_mib_per_second_for_the_slot_size() -> None:
    edges, rates = mib_per_second([[0.0, MIB], [0.1, 2 * MIB], [0.2, 0]])
    assert rates == pytest.approx([10.0, 20.0, 0.0])  # 1 MiB in 0.1 s is 10 MiB/s
    assert edges[-1] == pytest.approx(0.3)
    _, per_second = mib_per_second([[0, MIB], [1, 3 * MIB]])
    assert per_second == pytest.approx([1.0, 3.0])
    edges, total = cumulative_mib([[0.0, MIB], [0.1, 0], [0.2, 2 * MIB]])
    assert edges == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert total == pytest.approx([0.0, 1.0, 1.0, 3.0])  # from 0 at the start to all by the end


def test_cdf_points_rise_from_zero_to_one_in_steps() -> None:
    xs, ys = cdf_points([0.3, 0.1, 0.2, 0.2])
    assert xs == [0.1, 0.1, 0.2, 0.2, 0.3]
    assert ys == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    assert cdf_points([]) == ([], [])


def test_request_rates_fill_the_seconds_without_requests() -> None:
    rates = request_rates([[0, 5, 1, 0], [3, 7, 2, 4], [3, 1, 0, 1]])
    assert rates.edges == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert rates.requests == [5.0, 0.0, 0.0, 8.0]
    assert rates.errors == [1.0, 0.0, 0.0, 2.0]
    assert rates.no_answer == [0.0, 0.0, 0.0, 5.0]
    empty = request_rates([])
    assert (empty.edges, empty.requests) == ([], [])


def test_latency_by_image_keeps_successful_pulls_of_the_most_pulled_images() -> None:
    pulls = [pull("n", 0, 2.0, "a:1"), pull("n", 0, 1.0, "a:1"), pull("n", 0, 9.0, "a:1", error=True),
             pull("n", 0, 0.5, "b:1"), {"node": "n", "start": 1.0, "end": 1.25, "error": False}]  # fmt: skip
    rows, more = latency_by_image(pulls)
    assert more == 0
    assert [(r.image, r.seconds, r.pulls, r.failed) for r in rows] == [
        ("a:1", [1.0, 2.0], 3, 1),
        (UNKNOWN_IMAGE, [0.25], 1, 0),  # an old report's pull without an image
        ("b:1", [0.5], 1, 0),
    ]
    many = [pull("n", 0, 1.0, f"img-{i}:1") for i in range(15) for _ in range(i + 1)]
    rows, more = latency_by_image(many)
    assert len(rows) == 12
    assert more == 3
    assert rows[0].image == "img-14:1"
    assert rows[0].pulls == 15


# What is drawn --------------------------------------------------------------------------------


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Figure]]:
    """Every figure ``write_plots`` draws, by file name, kept open to look inside."""
    kept: dict[str, Figure] = {}
    save = plots._save

    def keep(fig: Figure, path: Path) -> Path:
        kept[path.name] = fig
        fig.savefig(path)
        return path

    monkeypatch.setattr(plots, "_save", keep)
    yield kept
    monkeypatch.setattr(plots, "_save", save)
    for fig in kept.values():
        plt.close(fig)


def test_the_timeline_draws_every_pull_separately_with_legend_and_labels(
    tmp_path: Path, figures: dict[str, Figure]
) -> None:
    write_plots(report(), tmp_path)
    ax = figures["pull-timeline.png"].axes[0]
    bars = [bar for c in ax.containers if isinstance(c, BarContainer) for bar in c]
    assert len(bars) == 11  # every pull its own bar
    row0 = sorted((b for b in bars if b.get_y() < 0), key=lambda b: b.get_x())  # node n-0's row
    assert len(row0) == 8
    for before, after in pairwise(row0):
        assert before.get_x() + before.get_width() < after.get_x()  # a visible gap
    hatched = [b for b in bars if b.get_hatch()]
    assert len(hatched) == 1  # the failed pull
    legend = legend_texts(ax)
    assert legend[:2] == ["app/app-1:1.0", "app/app-0:1.0"]  # the most pulled (3, 2) first
    assert "failed" in legend
    assert "outage window" in legend
    assert "errors window" in legend
    labels = {t.get_text() for t in ax.texts}
    assert "app/app-0:1.0" in labels  # n-1's 1 s pull is wide enough for its name
    assert "+50 ms latency" in ax.get_title()


def test_the_bytes_plot_draws_the_last_slot_full_width(
    tmp_path: Path, figures: dict[str, Figure]
) -> None:
    write_plots(report(bytes_timeline=[[0.0, MIB], [0.1, 0], [0.2, MIB // 2]]), tmp_path)
    rate_ax, total_ax = figures["bytes-over-time.png"].axes
    steps = [p for p in rate_ax.patches if isinstance(p, StepPatch)]
    assert steps
    values, edges, _ = steps[0].get_data()
    assert floats(edges) == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert floats(values) == pytest.approx([10.0, 0.0, 5.0])  # MiB/s over 0.1 s slots
    assert "0.1 s slot" in rate_ax.get_ylabel()
    line = total_ax.lines[0]
    assert floats(line.get_xdata()) == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert floats(line.get_ydata()) == pytest.approx([0.0, 1.0, 1.0, 1.5])


def test_the_request_plot_stacks_outcomes_and_says_when_there_were_none(
    tmp_path: Path, figures: dict[str, Figure]
) -> None:
    write_plots(report(), tmp_path)
    req_ax, err_ax = figures["registry-requests.png"].axes
    tops = [floats(p.get_data()[0]) for p in req_ax.patches if isinstance(p, StepPatch)]
    assert [40.0, 12.0, 3.0] in tops  # requests per second
    assert [3.0, 6.0, 3.0] in tops  # errors and no answer, stacked
    legend = legend_texts(req_ax)
    assert legend == ["answered, not 429/5xx: 43 (78.2%)", "error answers (429, 5xx): 8 (14.5%)",
                      "no answer (reset, timeout): 4 (7.3%)"]  # fmt: skip
    assert len([p for p in err_ax.patches if isinstance(p, StepPatch)]) == 2

    figures.clear()
    write_plots(report(request_timeline=[]), tmp_path / "none")
    req_ax, _ = figures["registry-requests.png"].axes
    assert any(t.get_text().startswith("no registry requests") for t in req_ax.texts)


def test_the_latency_cdf_has_one_curve_per_image_with_its_count(
    tmp_path: Path, figures: dict[str, Figure]
) -> None:
    write_plots(report(), tmp_path)
    ax = figures["pull-latency-cdf.png"].axes[0]
    legend = legend_texts(ax)
    assert legend[0] == "app/app-1:1.0: 2 pulls ok, 1 failed, p50 400 ms"  # of 0.3 s and 0.5 s
    assert legend[1] == "app/app-0:1.0: 2 pulls, p50 650 ms"  # of 0.3 s and 1 s
    assert len(ax.lines) == 8  # the eight images pulled
    assert floats(ax.lines[0].get_ydata())[-1] == pytest.approx(1.0)

    figures.clear()
    write_plots(report(pulls=[pull("n-0", 0, 1, error=True)]), tmp_path / "failed")
    ax = figures["pull-latency-cdf.png"].axes[0]
    assert [t.get_text() for t in ax.texts] == ["no pull succeeded"]


# The files ----------------------------------------------------------------------------------


ALL = ["pull-timeline.png", "time-to-ready-cdf.png", "pull-latency-cdf.png",
       "bytes-over-time.png", "registry-requests.png"]  # fmt: skip


def test_write_plots_writes_every_plot_as_a_png(tmp_path: Path) -> None:
    view = {"step_seconds": 1, "series": [[0, 5, 1000, 1, 1, 2, 1], [1, 3, 500, 0, 0, 1, 1]]}
    files = write_plots(report(registry_view=view), tmp_path / "out")
    assert [f.name for f in files] == [*ALL, "registry-view.png"]
    for f in files:
        assert f.parent == tmp_path / "out"
        assert f.stat().st_size > 10_000
        width, height = png_size(f)
        assert width >= 900
        assert height >= 300


def test_an_old_report_without_the_new_fields_still_plots(tmp_path: Path) -> None:
    old = report(request_timeline=None)
    del old["request_timeline"]
    for span in old["pulls"]:
        del span["image"]
    old["pulls"][0]["image"] = ""
    files = write_plots(old, tmp_path)
    assert [f.name for f in files] == ALL
    assert all(png_size(f)[0] > 0 for f in files)


def test_a_report_without_pulls_bytes_or_requests_plots_empty_states(tmp_path: Path) -> None:
    empty = report(pulls=[], bytes_timeline=[], request_timeline=[],
                   pods=[], faults={"plan": []}, summary={"time_to_ready": {"p50": None}})  # fmt: skip
    files = write_plots(empty, tmp_path)
    assert [f.name for f in files] == ALL
    assert all(f.read_bytes().startswith(PNG) for f in files)


def test_many_nodes_are_sampled_in_the_timeline(tmp_path: Path, figures: dict[str, Figure]) -> None:
    nodes = [{"name": f"node-{i:03}"} for i in range(150)]
    pulls = [pull(n["name"], 0.0, 1.0) for n in nodes]
    write_plots(report(nodes=nodes, pulls=pulls), tmp_path)
    ax = figures["pull-timeline.png"].axes[0]
    assert len(ax.get_yticks()) == plots.MAX_TIMELINE_NODES
    assert "(60 of 150 nodes)" in ax.get_title()
    drawn = sum(len(c) for c in ax.containers if isinstance(c, BarContainer))
    assert drawn == plots.MAX_TIMELINE_NODES


TINY = """\
apiVersion: kubelet-sim.dev/v1alpha1
kind: Workload
name: plots
images:
  - {repository: a/b, tags: ["1", "2"], layers: [64KiB, 128KiB]}
nodes:
  - {name: pool, count: 2, kubelet: {serializeImagePulls: true}}
pods:
  - name: one
    count: 2
    spec: {containers: [{name: c, image: "a/b:1"}]}
  - name: two
    count: 2
    spec: {containers: [{name: c, image: "a/b:2"}]}
run: {timeout: 60s}
"""


def test_a_virtual_bench_writes_the_new_plots(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_text(TINY)
    out = tmp_path / "out"
    assert main(["bench", str(path), "--virtual", "--quiet", "--out", str(out)]) == 0
    written = json.loads((out / "report.json").read_text())
    assert set(written["plots"]) == {*ALL, "registry-view.png"}
    assert {p["image"] for p in written["pulls"]} == {"a/b:1", "a/b:2"}
    assert written["request_timeline"]
    for name in written["plots"]:
        assert (out / name).stat().st_size > 10_000
        assert png_size(out / name)[0] > 0
