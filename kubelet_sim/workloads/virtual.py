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
import random
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio

from kubelet_sim.sim.faults import FaultKind
from kubelet_sim.sim.model import (
    MODEL_HOST,
    SERIES_COLUMNS,
    Catalogue,
    ModelTransport,
    series,
    totals,
)
from kubelet_sim.workloads.generate import ImageBuilder, SeedReport
from kubelet_sim.workloads.runner import BenchResult, Snapshot, run_workload
from kubelet_sim.workloads.spec import Workload

__all__ = [
    "MAX_SERIES_POINTS",
    "merge_views",
    "model_catalogue",
    "model_for",
    "registry_view",
    "run_virtual",
    "view_record",
]

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


def model_for(workload: Workload, *, shards: int = 1) -> tuple[ModelTransport, SeedReport]:
    """A modelled registry holding ``workload``'s images, with its model and fault plan.

    ``shards``: this process runs one of that many shards of the nodes, so it models that share
    of the registry: ``1/shards`` of its egress and of its concurrency (at least one slot),
    counting only shards that have nodes. With
    the shards' nodes alike and the pods spread evenly (round-robin), that is the registry all
    shards share: a fair share of a link is the same whether the others' bodies are counted in
    this process or another. Latency, per-body bandwidth and faults are the registry's own.
    """
    catalogue, seed = model_catalogue(workload)
    model = workload.virtual
    shards = min(shards, max(1, workload.node_count))  # shards without nodes model nothing
    if shards > 1:
        model = replace(
            model,
            total=model.total / shards,
            concurrency=math.ceil(model.concurrency / shards) if model.concurrency else 0,
        )
    transport = ModelTransport(catalogue, model, workload.faults, seed=workload.seed)
    return transport, seed


def run_virtual(
    workload: Workload,
    store_root: Path,
    *,
    on_tick: Callable[[Snapshot], None] | None = None,
    shard: tuple[int, int] = (0, 1),
) -> BenchResult:
    """Run ``workload`` (or shard ``shard[0]`` of ``shard[1]``, against its share of the
    registry: :func:`model_for`) on a virtual clock against its modelled registry (blocks; own
    event loop).

    Raises:
        KubeletSimError: as :func:`~kubelet_sim.workloads.runner.run_workload`.
    """
    import trio
    from trio.testing import MockClock

    model, seed = model_for(workload, shards=shard[1])

    async def main() -> BenchResult:
        return await run_workload(
            workload, MODEL_HOST, store_root, seed=seed, model=model, on_tick=on_tick, tick=TICK,
            shard=shard, clock=trio.current_time,
        )  # fmt: skip

    with _seeded_scheduler(f"kubelet-sim:{workload.seed}:{shard[0]}/{shard[1]}"):
        try:
            result: BenchResult = anyio.run(
                main, backend="trio", backend_options={"clock": MockClock(autojump_threshold=0)}
            )
        except BaseExceptionGroup as group:
            # Ctrl-C reaches trio's tasks, whose task groups hand it on wrapped: give it back
            # as the KeyboardInterrupt it is, which every caller handles (bench's --repeat
            # drops the run, the CLI exits 130), not a traceback.
            if group.split(KeyboardInterrupt)[1] is None:
                raise KeyboardInterrupt from None
            raise
    return result


@contextmanager
def _seeded_scheduler(seed: str) -> Iterator[None]:
    """Make trio's scheduling order repeatable for the block (restored after).

    trio runs each batch of ready tasks in a random order, from its own generator; that order
    decides which request takes which fault or latency draw and who gets a slot or an egress turn
    first, so an unseeded run is not reproducible. trio seeds that generator itself to make
    Hypothesis examples repeatable; so does a virtual run, from the workload's seed.
    """
    import trio._core._run as trio_run

    generator = getattr(trio_run, "_r", None)
    if not isinstance(generator, random.Random):  # another trio: runs stay correct, not repeatable
        yield
        return
    state = generator.getstate()
    generator.seed(seed)
    try:
        yield
    finally:
        generator.setstate(state)


_SECONDS = SERIES_COLUMNS[1:]


def view_record(model: ModelTransport, workload: Workload) -> dict[str, Any]:
    """What the registry saw, raw, for a shard record (:meth:`RegistryView.raw`), with the
    workload's (unscaled) model."""
    return {"model": workload.virtual.to_dict(), **model.view.raw()}


def merge_views(raws: list[dict[str, Any]]) -> dict[str, Any]:
    """The shards' raw views as one registry's: counts summed second by second (peaks too: the
    peaks of the parts, summed, bound the peak of the whole)."""
    length = max((len(r["seconds"]["requests"]) for r in raws), default=0)
    seconds = {k: [0] * length for k in _SECONDS}
    answers: Counter[str] = Counter()
    for raw in raws:
        for key in _SECONDS:
            for i, n in enumerate(raw["seconds"][key]):
                seconds[key][i] += n
        answers.update(raw["answers"])
    return {
        "model": raws[0]["model"],
        "seconds": seconds,
        "answers": dict(sorted(answers.items())),
        "queued": sum(r["queued"] for r in raws),
    }


def registry_view(
    raw: dict[str, Any], plan: list[dict[str, Any]], stopped_at: float, *, shards: int = 1
) -> dict[str, Any]:
    """The report's view from the registry (see the module docstring) from a raw view
    (:func:`view_record`, or :func:`merge_views` of the shards') and the fault plan."""
    sec = raw["seconds"]
    last = max(int(stopped_at), len(sec["requests"]) - 1)
    step = max(1, math.ceil((last + 1) / MAX_SERIES_POINTS))
    return {
        "model": raw["model"],
        "shards": shards,
        "totals": totals(raw),
        "peak_requests_per_second": max(sec["requests"], default=0),
        "peak_bytes_per_second": max(sec["bytes"], default=0),
        "step_seconds": step,
        "columns": list(SERIES_COLUMNS),
        "series": series(sec, step, last),
        "outages": _outages(sec, plan),
    }


def _outages(sec: dict[str, list[int]], plan: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each outage window that ended: the traffic before, during and the spike after."""

    def requests(lo: int, hi: int) -> list[int]:
        values = sec["requests"]
        return [values[i] if i < len(values) else 0 for i in range(max(0, lo), hi)]

    out = []
    for window in plan:
        if window["kind"] != str(FaultKind.OUTAGE) or window.get("end") is None:
            continue
        start, end = int(window["start"]), int(window["end"])
        before = requests(start - 60, start)
        after = requests(end, end + HERD_WINDOW)
        peak = max(after, default=0)
        peak_at = after.index(peak) if after else 0
        baseline = sum(before) / len(before) if before else 0.0
        errors = sec["errors"]
        out.append(
            {
                "start": window["start"],
                "end": window["end"],
                "requests_during": sum(requests(start, end)),
                "resets_during": sum(errors[i] for i in range(start, min(end, len(errors)))),
                "requests_per_second_before": round(baseline, 2),
                "peak_requests_per_second_after": peak,
                "peak_seconds_after_end": peak_at,
                "requests_first_60s_after": sum(after[:60]),
                "peak_over_before": round(peak / baseline, 2) if baseline else None,
            }
        )
    return out
