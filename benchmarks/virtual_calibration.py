"""Calibration of ``bench --virtual``: one workload against a real registry and against its model.

1. Starts the CNCF distribution registry on loopback and seeds the workload's images.
2. Measures that registry as the nodes see it, through the fault proxy without faults: the time
   to the headers of every request of repeated pulls made by the engine's own client (median
   and p99), the rate of one blob body read and hashed as the client does (median of several),
   and the total rate of several bodies at once.
3. Runs the workload for real (``run_workload``, asyncio, every byte moved and hashed), then with
   ``--virtual`` (``run_virtual``: trio's MockClock, the modelled registry) with the measured
   latency and bandwidth as its ``virtual.registry`` model.
4. Prints makespan and the time-to-ready percentiles of both and how far apart they are
   (target: within 15 %), and the wall time of each run.

    .venv/bin/python benchmarks/virtual_calibration.py [--nodes 10] [--pods 200] [--rate 5]

Only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import anyio
import httpx

from kubelet_sim.cli.main import configure_logging
from kubelet_sim.core.platforms import host_platform
from kubelet_sim.core.reference import parse_normalized
from kubelet_sim.registry.client import RegistryClient
from kubelet_sim.registry.transport import Transport
from kubelet_sim.runtime.images import ImageService
from kubelet_sim.sim.faultproxy import FaultPlan, FaultProxy
from kubelet_sim.sim.model import MODEL_HOST, Latency, ModelTransport, RegistryModel
from kubelet_sim.sim.registry import RegistryConfig, RegistryProcess
from kubelet_sim.store import MemoryStore
from kubelet_sim.workloads import build_report, parse_workload, run_workload, seed_workload
from kubelet_sim.workloads.spec import Workload
from kubelet_sim.workloads.virtual import model_catalogue, run_virtual

WORKLOAD = """
apiVersion: kubelet-sim.dev/v1alpha1
kind: Workload
name: calibration
description: >
  {nodes} nodes (kubelet defaults: serial pulls, QPS 5 / burst 10), {pods} pods at {rate}/s,
  each with its own image on a shared 2 MiB base, 10 ms (+-5 ms) between nodes and registry
seed: 21
bases:
  - {{name: base, layers: [1536KiB, 512KiB]}}
images:
  - repository: "cal/app-{{i}}"
    count: {pods}
    tags: ["1"]
    base: base
    layers: [{{count: 2, size: {{uniform: [256KiB, 1MiB]}}}}]
nodes:
  - {{name: node, count: {nodes}}}
pods:
  - name: app
    count: {pods}
    spec: {{containers: [{{name: app, image: "cal/app-{{i}}:1"}}]}}
    arrival: {{rate: {rate}}}
faults:
  windows:
    - {{kind: latency, delay: 10ms, jitter: 5ms}}
run: {{timeout: 300s}}
"""


@dataclass(slots=True)
class _Timings:
    """A transport observer keeping each answer's time to headers."""

    seconds: list[float] = field(default_factory=list)

    def registry_response(self, method: str, status: int | None, duration: float) -> None:
        self.seconds.append(duration)

    def registry_retry(self, reason: str) -> None:
        pass


@dataclass(slots=True)
class Measured:
    """What :func:`measure` saw: answer times, isolated pull times, body rates."""

    answers: list[float]
    pulls: list[list[float]]  # per round, the seconds of each image's pull
    per_connection: float
    total: float


async def measure(registry: str, images: list[str], plan: FaultPlan, rounds: int = 40) -> Measured:
    """The registry as this machine's client sees it, through the fault proxy as the nodes do.

    ``rounds`` times, ``images`` are pulled one after another into an empty light store by the
    engine's own registry client: through a proxy without faults, keeping the time to the
    headers of every answer (the registry's spread), then through one applying ``plan`` (the
    workload's latency), keeping each pull's duration. Bandwidth (without faults): one layer
    body read and hashed alone (median of 5), and 8 at once.
    """
    timings = _Timings()
    pulls: list[list[float]] = []
    async with anyio.create_task_group() as tg:
        proxy = FaultProxy(registry, plan)
        await tg.start(proxy.run)
        plain = FaultProxy(registry)  # the registry's own spread, and bodies, without the plan
        await tg.start(plain.run)
        for host, observer in ((plain.host, timings), (proxy.host, None)):
            async with RegistryClient(Transport(observer=observer)) as client:
                for _ in range(rounds):
                    service = ImageService(client, MemoryStore(), platform=host_platform())
                    durations = []
                    for image in images:
                        started = time.perf_counter()
                        await service.pull_image(parse_normalized(f"{host}/{image}"))
                        durations.append(time.perf_counter() - started)
                    if observer is None:
                        pulls.append(durations)
        accept = "application/vnd.oci.image.manifest.v1+json"
        repository, _, tag = images[0].rpartition(":")
        base = f"http://{plain.host}/v2/{repository}"
        async with httpx.AsyncClient(timeout=30) as http:
            answer = await http.get(f"{base}/manifests/{tag}", headers={"Accept": accept})
            layer = max(answer.json()["layers"], key=lambda d: d["size"])
            url = f"{base}/blobs/{layer['digest']}"

            async def body() -> int:
                hasher = hashlib.sha256()
                n = 0
                async with http.stream("GET", url) as r:
                    async for chunk in r.aiter_raw():
                        hasher.update(chunk)
                        n += len(chunk)
                return n

            single = []
            for _ in range(5):
                started = time.perf_counter()
                n = await body()
                single.append(n / (time.perf_counter() - started))
            sizes: list[int] = []

            async def one() -> None:
                sizes.append(await body())

            started = time.perf_counter()
            async with anyio.create_task_group() as bodies:
                for _ in range(8):
                    bodies.start_soon(one)
            total = sum(sizes) / (time.perf_counter() - started)
        tg.cancel_scope.cancel()
    return Measured(timings.seconds, pulls, statistics.median(single), total)


def modelled_pulls(
    workload: Workload, model: RegistryModel, images: list[str], rounds: int
) -> list[list[float]]:
    """Per round, the seconds each of ``images`` takes to pull in turn into an empty store from
    the modelled registry with the workload's faults, on a virtual clock (what :func:`measure`
    timed for real)."""
    from trio.testing import MockClock

    catalogue, _ = model_catalogue(workload)

    async def main() -> list[list[float]]:
        transport = ModelTransport(catalogue, model, workload.faults, seed=workload.seed)
        transport.start_schedule()  # the faults (the workload's latency) apply from now
        out = []
        async with httpx.AsyncClient(transport=transport) as http:
            client = RegistryClient(Transport(http=http))
            for _ in range(rounds):
                store = MemoryStore(hash_layers=False)
                service = ImageService(client, store, platform=host_platform())
                durations = []
                for image in images:
                    started = anyio.current_time()
                    await service.pull_image(parse_normalized(f"{MODEL_HOST}/{image}"))
                    durations.append(anyio.current_time() - started)
                out.append(durations)
        return out

    clock = MockClock(autojump_threshold=0)
    result: list[list[float]] = anyio.run(main, backend="trio", backend_options={"clock": clock})
    return result


def _medians(rounds: list[list[float]]) -> float:
    """The sum over images of each image's median pull time."""
    return sum(statistics.median(r[i] for r in rounds) for i in range(len(rounds[0])))


def fit(workload: Workload, seen: Measured, images: list[str]) -> RegistryModel:
    """The model of the measured registry.

    Bandwidth is what was measured. The latency's spread (p99 over median) is that of the
    answers' times to headers without faults; its median is found by bisection so that modelled
    isolated pulls (with the workload's faults, as measured) take as long as the real ones did
    (the sum of each image's median): the registry's time to the first byte plus the client's
    own time per request (sending, reading a small body, parsing), which a virtual clock does
    not spend.
    """
    bandwidth = RegistryModel(per_connection=seen.per_connection, total=seen.total)
    answers = sorted(seen.answers)
    ratio = max(1.0, answers[int(0.99 * (len(answers) - 1))] / statistics.median(answers))
    target = _medians(seen.pulls)
    rounds = len(seen.pulls)
    low, high = 0.0, 0.1
    for _ in range(14):
        median = (low + high) / 2
        model = replace(bandwidth, latency=Latency(median, median * ratio))
        if _medians(modelled_pulls(workload, model, images, rounds)) < target:
            low = median
        else:
            high = median
    median = (low + high) / 2
    return replace(bandwidth, latency=Latency(median, median * ratio))


def figures(report: dict[str, Any]) -> dict[str, float | None]:
    s = report["summary"]
    t = s["time_to_ready"]
    return {
        "makespan": s["makespan"],
        "p50": t["p50"],
        "p90": t["p90"],
        "p99": t["p99"],
        "mean": t["mean"],
        "pods_ready": s["pods_ready"],
        "wall": s["resources"]["wall_seconds"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--pods", type=int, default=200)
    parser.add_argument("--rate", type=float, default=5.0)
    args = parser.parse_args()
    configure_logging("error")
    text = WORKLOAD.format(nodes=args.nodes, pods=args.pods, rate=args.rate)
    workload: Workload = parse_workload(text, "<calibration>")
    with tempfile.TemporaryDirectory(prefix="ksim-cal-") as tmp:
        work = Path(tmp)
        registry = RegistryProcess(RegistryConfig(storage_dir=work / "registry"), work).start()
        try:
            anyio.run(seed_workload, workload, registry.host)
            probes = workload.references()[:3]
            seen = anyio.run(measure, registry.host, probes, workload.faults)
            model = fit(workload, seen, probes)
            answers = sorted(seen.answers)
            print(
                f"registry measured: time to headers median "
                f"{statistics.median(answers) * 1000:.2f} ms, p99 "
                f"{answers[int(0.99 * (len(answers) - 1))] * 1000:.2f} ms; one body "
                f"{model.per_connection / 2**20:.0f} MiB/s, 8 bodies "
                f"{model.total / 2**20:.0f} MiB/s\nmodel: latency {model.latency.describe()} "
                "(fitted to the isolated pulls' median duration)"
            )
            started = time.perf_counter()
            real = anyio.run(run_workload, workload, registry.host, work / "stores")
            real_wall = time.perf_counter() - started
        finally:
            registry.stop()
        virtual_workload = dataclasses.replace(workload, virtual=model)
        started = time.perf_counter()
        virtual = run_virtual(virtual_workload, work / "vstores")
        virtual_wall = time.perf_counter() - started
    a, b = figures(build_report(real)), figures(build_report(virtual))
    print(f"\n{workload.description}")
    print(f"{'figure':<12}{'real':>10}{'virtual':>10}{'diff':>9}")
    worst = 0.0
    for key in ("makespan", "p50", "p90", "p99", "mean"):
        x, y = a[key], b[key]
        if x is None or y is None:
            print(f"{key:<12}{x!s:>10}{y!s:>10}{'n/a':>9}")
            continue
        diff = (y - x) / x if x else 0.0
        worst = max(worst, abs(diff))
        print(f"{key + ' (s)':<12}{x:>10.3f}{y:>10.3f}{diff:>+9.1%}")
    print(f"{'pods ready':<12}{a['pods_ready']!s:>10}{b['pods_ready']!s:>10}")
    print(f"{'wall (s)':<12}{real_wall:>10.2f}{virtual_wall:>10.2f}")
    verdict = "within" if worst <= 0.15 else "OUTSIDE"
    print(f"\nlargest difference {worst:.1%}: {verdict} the 15 % target")
    return 0 if worst <= 0.15 else 1


if __name__ == "__main__":
    sys.exit(main())
