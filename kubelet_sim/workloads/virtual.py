"""Virtual-time runs (``bench --virtual``): the same nodes on trio's MockClock, a modelled registry.

:func:`run_virtual` runs :func:`~kubelet_sim.workloads.runner.run_workload` (the same nodes, built
by the same node builder, with the same engine, pullers, QPS bucket, backoff, pod-worker resyncs,
events and metrics) on ``trio.testing.MockClock(autojump_threshold=0)``: whenever every task is
waiting, the clock jumps to the next deadline, so wall time is spent only on computation. The
registry is :class:`~kubelet_sim.sim.model.ModelTransport` under every node's HTTP client, holding
the workload's images as its seed builds them (real manifests and configs, stub layers of the
same sizes) and applying the workload's ``virtual.registry`` model and fault plan.

:func:`registry_view` is the report's view from the registry over simulated time: requests,
bytes, errors and tokens per second, the peaks in flight, and for each outage the retry spike
when it ends (the thundering herd).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from kubelet_sim.sim.faults import FaultKind
from kubelet_sim.sim.model import MODEL_HOST, Catalogue, ModelTransport
from kubelet_sim.workloads.generate import ImageBuilder, SeedReport
from kubelet_sim.workloads.runner import BenchResult, Snapshot, run_workload
from kubelet_sim.workloads.spec import Workload

__all__ = ["MAX_SERIES_POINTS", "model_catalogue", "model_for", "registry_view", "run_virtual"]

MAX_SERIES_POINTS = 1200
"""At most this many points in the report's registry series (seconds are summed into steps)."""
HERD_WINDOW = 600
"""Seconds after an outage ends in which its retry spike is looked for."""
TICK = 1.0
"""Virtual seconds between checks whether every pod has settled (cheap: the clock jumps)."""


def model_catalogue(workload: Workload) -> tuple[Catalogue, SeedReport]:
    """The workload's images as the modelled registry holds them, and what "seeding" them is."""
    catalogue = Catalogue()
    seed = SeedReport()
    for built in ImageBuilder(workload, stub=True):
        blobs = list(built.blobs())
        if built.index is None:
            top, manifests = built.images[0].manifest, []
        else:
            top, manifests = built.index.index, [image.manifest for image in built.images]
        catalogue.add(built.repository, built.tag, top, manifests, blobs)
        seed.images += 1
        seed.sizes[built.reference] = {
            image.platform_string: built.size_for(image.platform_string) for image in built.images
        }
    return catalogue, seed


def model_for(workload: Workload) -> tuple[ModelTransport, SeedReport]:
    """A modelled registry holding ``workload``'s images, with its model and fault plan."""
    catalogue, seed = model_catalogue(workload)
    model = ModelTransport(catalogue, workload.virtual, workload.faults, seed=workload.seed)
    return model, seed


def run_virtual(
    workload: Workload,
    store_root: Path,
    *,
    on_tick: Callable[[Snapshot], None] | None = None,
) -> BenchResult:
    """Run ``workload`` on a virtual clock against its modelled registry (blocks; own event loop).

    Raises:
        KubeletSimError: as :func:`~kubelet_sim.workloads.runner.run_workload`.
    """
    from trio.testing import MockClock

    model, seed = model_for(workload)

    async def main() -> BenchResult:
        return await run_workload(
            workload, MODEL_HOST, store_root, seed=seed, model=model, on_tick=on_tick, tick=TICK
        )

    result: BenchResult = anyio.run(
        main, backend="trio", backend_options={"clock": MockClock(autojump_threshold=0)}
    )
    return result


def registry_view(model: ModelTransport, workload: Workload, stopped_at: float) -> dict[str, Any]:
    """The registry's side of a virtual run (see the module docstring)."""
    view = model.view
    last = max(int(stopped_at), max((*view.requests, 0)))
    step = max(1, math.ceil((last + 1) / MAX_SERIES_POINTS))
    return {
        "model": model.model.to_dict(),
        "totals": view.to_dict(),
        "peak_requests_per_second": max(view.requests.values(), default=0),
        "peak_bytes_per_second": max(view.bytes.values(), default=0),
        "step_seconds": step,
        "columns": ["t", "requests", "bytes", "errors", "tokens", "peak_in_flight", "peak_bodies"],
        "series": view.series(step),
        "outages": _outages(model, workload),
    }


def _outages(model: ModelTransport, workload: Workload) -> list[dict[str, Any]]:
    """For each outage window that ended: the traffic before, during and the spike after."""
    view = model.view
    out = []
    for window in workload.faults.windows:
        if window.kind is not FaultKind.OUTAGE or window.end is None:
            continue
        start, end = int(window.start), int(window.end)
        before = [view.requests.get(s, 0) for s in range(max(0, start - 60), start)]
        after = {s: view.requests.get(s, 0) for s in range(end, end + HERD_WINDOW)}
        peak_at = max(after, key=lambda s: (after[s], -s)) if after else end
        baseline = sum(before) / len(before) if before else 0.0
        out.append(
            {
                "start": window.start,
                "end": window.end,
                "requests_during": sum(view.requests.get(s, 0) for s in range(start, end)),
                "resets_during": sum(view.errors.get(s, 0) for s in range(start, end)),
                "requests_per_second_before": round(baseline, 2),
                "peak_requests_per_second_after": after.get(peak_at, 0),
                "peak_seconds_after_end": peak_at - end,
                "requests_first_60s_after": sum(
                    view.requests.get(s, 0) for s in range(end, end + 60)
                ),
                "peak_over_before": round(after.get(peak_at, 0) / baseline, 2)
                if baseline
                else None,
            }
        )
    return out
