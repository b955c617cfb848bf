"""Scripted workloads: a YAML description of images, nodes, pods and faults, seeded and benchmarked.

::

    workload = load_workload("benchmarks/workloads/smoke.yaml")
    seed = await seed_workload(workload, "127.0.0.1:5000")
    result = await run_workload(workload, "127.0.0.1:5000", store_root, seed=seed)
    report = build_report(result)      # report.json; render_markdown(report) for report.md
    plots.write_plots(report, out)      # PNGs (kubelet_sim.workloads.plots imports matplotlib)

Modules: :mod:`.source` (YAML with line numbers), :mod:`.spec` (the values), :mod:`.parse` and
:mod:`.parse_pods` (validation), :mod:`.generate` (deterministic images, seeding),
:mod:`.schedule` (arrivals and placement), :mod:`.runner` (the nodes), :mod:`.observe`,
:mod:`.report`, :mod:`.markdown`, :mod:`.plots`, :mod:`.compare`, :mod:`.repeat` (``--repeat``:
medians and spreads over runs), :mod:`.progress`.
"""

from kubelet_sim.workloads.compare import (
    compare_markdown,
    compare_reports,
    load_report,
    report_figures,
)
from kubelet_sim.workloads.generate import BuiltImage, ImageBuilder, SeedReport, seed_workload
from kubelet_sim.workloads.markdown import render_markdown
from kubelet_sim.workloads.parse import load_workload, parse_workload
from kubelet_sim.workloads.parse_pods import read_trace
from kubelet_sim.workloads.repeat import aggregate_reports, figure_stats, noise_verdict
from kubelet_sim.workloads.report import SCHEMA, build_report, percentiles
from kubelet_sim.workloads.runner import BenchResult, Snapshot, run_workload
from kubelet_sim.workloads.schedule import PlannedPod, plan_pods
from kubelet_sim.workloads.spec import Workload

__all__ = [
    "SCHEMA",
    "BenchResult",
    "BuiltImage",
    "ImageBuilder",
    "PlannedPod",
    "SeedReport",
    "Snapshot",
    "Workload",
    "aggregate_reports",
    "build_report",
    "compare_markdown",
    "compare_reports",
    "figure_stats",
    "load_report",
    "load_workload",
    "noise_verdict",
    "parse_workload",
    "percentiles",
    "plan_pods",
    "read_trace",
    "render_markdown",
    "report_figures",
    "run_workload",
    "seed_workload",
]
