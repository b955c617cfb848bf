"""``kubelet-sim bench WORKLOAD``: seed, run every simulated node, write the report and plots.

Every node of the workload runs as its own engine with its own store and settings inside this one
process; they share only the registry (``--registry HOST:PORT``, else a local one started for the
run). Writes ``report.json``, ``report.md`` and the PNG plots to ``--out`` (default
``bench-results/<workload name>``). Node stores live in a temporary folder unless
``--keep-stores``. ``kubelet-sim bench --compare A.json B.json`` prints two reports side by side.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from rich.console import Console
from rich.table import Table

from kubelet_sim.cli.commands.seed import add_registry_args, registry_for
from kubelet_sim.errors import ConfigError

if TYPE_CHECKING:  # the workloads package is imported when the command runs, not at start-up
    from kubelet_sim.workloads import BenchResult, Workload


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "bench",
        help="run a scripted workload over many simulated nodes; report with plots",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("workload", type=Path, nargs="?", help="workload file (YAML)")
    add_registry_args(parser)
    parser.add_argument("--out", type=Path, metavar="DIR", help="report folder")
    parser.add_argument("--keep-stores", action="store_true", help="keep node stores in --out")
    parser.add_argument("--timeout", type=float, help="override the workload's run.timeout (s)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--quiet", action="store_true", help="no live progress display")
    parser.add_argument(
        "--compare", nargs=2, type=Path, metavar=("A.json", "B.json"), help="compare two reports"
    )
    parser.add_argument("--output", choices=["text", "json", "markdown"], default="text")
    parser.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    if args.compare:
        if args.workload is not None:
            raise ConfigError(None, "--compare", "give either a workload or --compare, not both")
        return _compare(args)
    if args.workload is None:
        raise ConfigError(None, "WORKLOAD", "a workload file is required (or --compare A B)")
    from kubelet_sim.workloads import load_workload

    workload = load_workload(args.workload)
    if args.timeout is not None:
        workload = replace(workload, run=replace(workload.run, timeout=args.timeout))
    tty = sys.stdout.isatty()
    console = Console(width=None if tty else 160)
    out: Path = args.out or Path("bench-results") / workload.name
    out.mkdir(parents=True, exist_ok=True)
    with registry_for(args, console) as host, tempfile.TemporaryDirectory(prefix="ksim-") as tmp:
        stores = (
            Path(tempfile.mkdtemp(prefix="stores-", dir=out)) if args.keep_stores else Path(tmp)
        )
        result = anyio.run(_run, workload, host, stores, console, tty and not args.quiet)
        report = _write(result, out, plots=not args.no_plots)
    if args.output == "json":
        print(json.dumps(report["summary"], indent=2))
    else:
        _print_summary(console, report, out)
    return 0


async def _run(
    workload: Workload, host: str, stores: Path, console: Console, live: bool
) -> BenchResult:
    from kubelet_sim.workloads import run_workload, seed_workload
    from kubelet_sim.workloads.progress import LiveProgress

    seed = await seed_workload(workload, host)
    console.print(
        f"seeded {seed.images} images ({seed.blobs_uploaded} blobs uploaded, "
        f"{seed.blobs_skipped} already present) in {seed.seconds:.1f}s; running "
        f"{workload.node_count} nodes, {sum(t.count for t in workload.pods)} pods"
    )
    if not live:
        return await run_workload(workload, host, stores, seed=seed)
    with LiveProgress(console, workload) as progress:
        return await run_workload(workload, host, stores, seed=seed, on_tick=progress)


def _write(result: BenchResult, out: Path, *, plots: bool) -> dict[str, Any]:
    from kubelet_sim.workloads import build_report, render_markdown

    report = build_report(result)
    if plots:
        from kubelet_sim.workloads.plots import write_plots

        report["plots"] = [p.name for p in write_plots(report, out)]
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "report.md").write_text(render_markdown(report))
    return report


def _print_summary(console: Console, report: dict[str, Any], out: Path) -> None:
    s = report["summary"]
    t = s["time_to_ready"]

    def sec(v: float | None) -> str:
        return "–" if v is None else f"{v:.3f}s"

    table = Table(title=f"{report['workload']['name']}: {s['pods_ready']}/{s['pods']} pods ready")
    for column in ("group", "nodes", "p50", "p90", "p99", "max", "makespan", "pulls", "failed",
                   "cache hits", "MiB", "peak in flight"):  # fmt: skip
        table.add_column(column, justify="right" if column != "group" else "left")
    for name, g in report["groups"].items():
        gt = g["time_to_ready"]
        table.add_row(
            name, str(g["nodes"]), sec(gt["p50"]), sec(gt["p90"]), sec(gt["p99"]), sec(gt["max"]),
            sec(g["makespan"]), str(g["pulls"]), str(g["pull_errors"]), str(g["cache_hits"]),
            f"{g['bytes_pulled'] / 1048576:.1f}", str(g["peak_pulls_in_flight_max"]),
        )  # fmt: skip
    console.print(table)
    res = s["resources"]
    console.print(
        f"all pods: p50 {sec(t['p50'])}, p99 {sec(t['p99'])}, makespan {sec(s['makespan'])}; "
        f"registry requests {s['registry_requests']} {s['registry_requests_by_status']}; "
        f"backoffs {s['backoffs']}; CPU {res['cpu_seconds']:.1f}s, peak RSS "
        f"{res['peak_rss_mib']:.0f} MiB"
    )
    if report["run"]["timed_out"]:
        console.print(f"[yellow]stopped at the timeout: {s['pods_not_ready']} pods not ready")
    console.print(f"report: {out / 'report.md'} (and report.json, plots)")


def _compare(args: argparse.Namespace) -> int:
    from kubelet_sim.workloads import compare_markdown, compare_reports, load_report
    from kubelet_sim.workloads.compare import render_compare

    a, b = (load_report(p) for p in args.compare)
    rows = compare_reports(a, b)
    if args.output == "json":
        print(json.dumps([r.to_dict() for r in rows], indent=2))
        return 0
    if args.output == "markdown":
        print(compare_markdown(a, b), end="")
        return 0
    console = Console(width=None if sys.stdout.isatty() else 160)
    table = Table(title=f"A = {a['workload']['name']} ({args.compare[0]}), "
                  f"B = {b['workload']['name']} ({args.compare[1]})")  # fmt: skip
    for column in ("figure", "A", "B", "change", "B/A"):
        table.add_column(column, justify="left" if column == "figure" else "right")
    for row in render_compare(a, b, rows):
        table.add_row(*row)
    console.print(table)
    return 0
