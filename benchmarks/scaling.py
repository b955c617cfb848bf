"""Scaling benchmark: the same rollout on 1, 10 and 100 simulated nodes; serial vs parallel pulls.

Starts one distribution registry on loopback, then runs ``kubelet-sim bench`` as a child process
(wall time and peak RSS measured from outside, as ``pull_vs_skopeo.py`` does) for:

A. nodes:       1, 10, 100 nodes, kubelet defaults (serial pulls, QPS 5/burst 10); on every node an
                agent pod and two web pods arrive at t=0 (agent and web share a 4 MiB base; about
                9 MiB per node). Ideal scaling keeps makespan and per-pod latency flat.
B. parallelism: 1 node, 16 pods with 16 distinct images (2 MiB base + 2 x 1 MiB each) at t=0,
                +100 ms on every registry request through the fault proxy, QPS limit off;
                serial vs ``maxParallelImagePulls`` 2, 4, 8. Speed-up = serial makespan / makespan,
                against the ideal (the limit: N pulls overlap completely) and against a floor:
                the same 16 pulls' requests by curl through the same proxy, N images at a time
                (per image one curl for HEAD and manifest in a row, one for its config and
                layers 3 at a time; a layer two images share fetched by the first only), so the
                registry's own answer time under N pulls on this machine shows in the floor's
                speed-up too. The pulls that overlap the shared base's download take a round
                trip more than those after it, which no limit overlaps away: the ideal is out of
                reach by the workload's shape (the floor shows how far).
B'. the same:   16 images of the same bytes (2 MiB + 2 x 1 MiB) sharing nothing, so every pull
                is as long as the next and N at once can be N times as fast.

    .venv/bin/python benchmarks/scaling.py [--nodes 1,10,100] [--parallel 2,4,8] [--latency-ms 100]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio.from_thread
import httpx
from pull_vs_skopeo import run_measured

from kubelet_sim.cli.main import configure_logging
from kubelet_sim.registry import mediatypes as mt
from kubelet_sim.registry.client import ClientSettings
from kubelet_sim.sim.faultproxy import FaultKind, FaultPlan, FaultProxy, FaultWindow
from kubelet_sim.sim.registry import RegistryConfig, RegistryProcess

KSIM = [sys.executable, "-m", "kubelet_sim"]

NODES_WORKLOAD = """
apiVersion: kubelet-sim.dev/v1alpha1
kind: Workload
name: scale-{nodes}
description: "{nodes} nodes, kubelet defaults: agent + 2 web pods per node at t=0"
seed: 42
bases:
  - {{name: distroless, layers: [3MiB, 1MiB]}}
images:
  - {{repository: scale/agent, tags: ["1.0"], base: distroless, layers: [1MiB]}}
  - repository: scale/web
    tags: ["1.0"]
    base: distroless
    layers: [{{count: 3, size: 1MiB}}]
nodes:
  - {{name: node, count: {nodes}}}
pods:
  - name: agent
    spec: {{containers: [{{name: agent, image: "scale/agent:1.0"}}]}}
    placement: every-node
  - name: web
    count: {web}
    spec: {{containers: [{{name: web, image: "scale/web:1.0"}}]}}
run: {{timeout: 600s}}
"""

PARALLEL_WORKLOAD = """
apiVersion: kubelet-sim.dev/v1alpha1
kind: Workload
name: parallel-{prefix}-{label}
description: "1 node, 16 distinct images at t=0, +{latency} ms per request, {label}"
seed: 43
{images}
nodes:
  - name: node
    kubelet: {kubelet}
pods:
  - name: app
    count: 16
    spec: {{containers: [{{name: app, image: "{prefix}/app-{{i}}:1.0"}}]}}
faults:
  windows: [{{kind: latency, delay: {latency}ms}}]
run: {{timeout: 600s}}
"""

PARALLEL_IMAGES = {
    # B: the 16 images share a 2 MiB base, as a node's images do: the pulls that overlap its
    # download take a round trip longer than those after it, which no limit overlaps away.
    "par": """bases:
  - {name: base, layers: [2MiB]}
images:
  - {repository: "par/app-{i}", count: 16, tags: ["1.0"], base: base, layers: [1MiB, 1MiB]}""",
    # B', the same bytes with nothing shared: every pull the same length, so N pulls at once
    # can be N times as fast (the limit's own ideal, which B's shared base rules out).
    "solo": """images:
  - {repository: "solo/app-{i}", count: 16, tags: ["1.0"], layers: [2MiB, 1MiB, 1MiB]}""",
}


def bench(workload: str, work: Path, host: str, name: str) -> dict[str, Any]:
    path = work / f"{name}.yaml"
    path.write_text(workload)
    out = work / name
    seconds, rss, _ = run_measured([*KSIM, "seed", str(path), "--registry", host])
    argv = [*KSIM, "bench", str(path), "--registry", host, "--out", str(out), "--quiet",
            "--no-plots", "--output", "json"]  # fmt: skip
    seconds, rss, _ = run_measured(argv)
    report = json.loads((out / "report.json").read_text())
    summary = report["summary"]
    return {
        "name": name,
        "process_seconds": round(seconds, 2),
        "process_peak_rss_mib": rss,
        "makespan": summary["makespan"],
        "ttr": summary["time_to_ready"],
        "pulls": summary["pulls"],
        "bytes": summary["bytes_pulled"],
        "cpu": summary["resources"]["cpu_seconds"],
        "peak_in_flight": summary["peak_pulls_in_flight_max"],
    }


class CurlFloor:
    """Part B's floor: each image's requests by curl, ``limit`` images at a time, through a
    fault proxy of its own adding the same latency to every request.

    Per image, as kubelet-sim (and containerd) pulls it: one curl for the HEAD of the tag and
    the manifest, in a row (each needs the one before it), then one for the config and the
    image's layers, 3 at a time (containerd's ``max_concurrent_downloads``). A layer several images
    share is fetched by the first of them only, as a node fetches it once, and the others do
    not wait for it as a node's pulls do: the floor errs on the fast side.
    """

    def __init__(self, registry: str, repositories: list[str], latency_ms: int, work: Path):
        self.registry = registry
        self.latency = latency_ms / 1000
        self.work = work
        self.images: list[tuple[str, str, str, list[str]]] = []  # repo, manifest, config, layers
        seen: set[str] = set()
        accept = f"{mt.OCI_MANIFEST}, {mt.DOCKER_MANIFEST}"
        with httpx.Client(base_url=f"http://{registry}/v2") as client:
            for repository in repositories:
                answer = client.get(f"/{repository}/manifests/1.0", headers={"Accept": accept})
                answer.raise_for_status()
                doc = answer.json()
                layers = [d["digest"] for d in doc["layers"] if d["digest"] not in seen]
                seen.update(layers)
                digest = answer.headers["Docker-Content-Digest"]
                self.images.append((repository, digest, doc["config"]["digest"], layers))

    def makespan(self, proxy: str, limit: int) -> float:
        """Seconds from the first request to the last answer, ``limit`` images at a time."""
        folder = self.work / f"floor-{limit}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        started = time.perf_counter()
        with ThreadPoolExecutor(limit) as pool:
            for failure in pool.map(
                lambda n: self._chain(proxy, folder, n), range(len(self.images))
            ):
                if failure:
                    raise SystemExit(f"curl floor: {failure}")
        elapsed = time.perf_counter() - started
        shutil.rmtree(folder)
        return elapsed

    def _chain(self, proxy: str, folder: Path, number: int) -> str:
        repository, manifest, config, layers = self.images[number]
        base = f"http://{proxy}/v2/{repository}"
        accept = f"Accept: {mt.OCI_MANIFEST}, {mt.DOCKER_MANIFEST}"
        first = [
            "curl", "-sf", "--head", "-o", "/dev/null", "-H", accept, f"{base}/manifests/1.0",
            "--next", "-sf", "-o", str(folder / f"{number}.m"), "-H", accept,
            f"{base}/manifests/{manifest}",
        ]  # fmt: skip
        at_once = str(ClientSettings().max_concurrent_downloads)  # containerd's 3, as the node
        second = ["curl", "-sf", "--parallel", "--parallel-immediate", "--parallel-max", at_once]
        second += ["-o", str(folder / f"{number}.c"), f"{base}/blobs/{config}"]
        for index, layer in enumerate(layers):
            second += ["-o", str(folder / f"{number}.{index}"), f"{base}/blobs/{layer}"]
        for argv in (first, second):
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                return f"{repository}: curl exited {done.returncode}: {done.stderr.strip()}"
        return ""

    def run(self, limits: list[int]) -> dict[int, float]:
        """The floor's makespan for each of ``limits``, all through one proxy."""
        plan = FaultPlan((FaultWindow(FaultKind.LATENCY, delay=self.latency),))
        proxy = FaultProxy(self.registry, plan)
        with anyio.from_thread.start_blocking_portal() as portal:
            future, _ = portal.start_task(proxy.run)
            try:
                return {limit: self.makespan(proxy.host, limit) for limit in limits}
            finally:
                future.cancel()


def repositories(registry: str, prefix: str) -> list[str]:
    """The registry's repositories that start with ``prefix``, in catalogue order."""
    with httpx.Client() as client:
        answer = client.get(f"http://{registry}/v2/_catalog", params={"n": 1000})
        answer.raise_for_status()
        return [r for r in answer.json()["repositories"] if r.startswith(prefix)]


def parallel_case(
    work: Path, host: str, prefix: str, limits: list[int], args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Part B (or B'): serial, then each of ``limits`` at once, against the curl floor; the
    table printed, the rows returned."""
    rows = []
    for limit in limits:
        if limit == 1:
            label, kubelet = "serial", "{serializeImagePulls: true, registryPullQPS: 0}"
        else:
            label = f"max-{limit}"
            kubelet = (f"{{serializeImagePulls: false, maxParallelImagePulls: {limit}, "
                       "registryPullQPS: 0}")  # fmt: skip
        text = PARALLEL_WORKLOAD.format(
            prefix=prefix, images=PARALLEL_IMAGES[prefix], label=label, kubelet=kubelet,
            latency=args.latency_ms,
        )  # fmt: skip
        r = bench(text, work, host, f"{prefix}-{label}")
        r["limit"] = limit
        rows.append(r)
    floor = CurlFloor(host, repositories(host, f"{prefix}/"), args.latency_ms, work).run(limits)
    print(f"{'setting':>10} {'makespan':>9} {'p50':>7} {'p99':>7} {'in flight':>9} "
          f"{'speed-up':>8} {'ideal':>6} {'efficiency':>10} | {'curl floor':>10} "
          f"{'speed-up':>8} {'efficiency':>10} | {'of floor':>8}")  # fmt: skip
    serial, floor_serial = rows[0]["makespan"], floor[1]
    for r in rows:
        limit, makespan = r["limit"], r["makespan"]
        label = "serial" if limit == 1 else f"max-{limit}"
        r["speedup"] = round(serial / makespan, 2)
        r["ideal"] = min(limit, 16)
        r["floor_makespan"] = round(floor[limit], 3)
        r["floor_speedup"] = round(floor_serial / floor[limit], 2)
        t = r["ttr"]
        print(f"{label:>10} {makespan:>8.2f}s {t['p50']:>6.2f}s {t['p99']:>6.2f}s "
              f"{r['peak_in_flight']:>9} {r['speedup']:>7.2f}x {r['ideal']:>5}x "
              f"{r['speedup'] / r['ideal']:>9.0%} | {floor[limit]:>9.2f}s "
              f"{r['floor_speedup']:>7.2f}x {r['floor_speedup'] / r['ideal']:>9.0%} | "
              f"{r['speedup'] / r['floor_speedup']:>7.0%}")  # fmt: skip
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", default="1,10,100", help="node counts for A (empty: no A)")
    parser.add_argument("--parallel", default="2,4,8")
    parser.add_argument("--latency-ms", type=int, default=100)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    configure_logging("warning")
    results: dict[str, list[dict[str, Any]]] = {"nodes": []}
    with tempfile.TemporaryDirectory(prefix="ksim-scaling-") as tmp:
        work = Path(tmp)
        registry = RegistryProcess(RegistryConfig(storage_dir=work / "registry"), work).start()
        try:
            counts = [int(x) for x in args.nodes.split(",") if x.strip()]
            if counts:
                print("A. same rollout per node, kubelet defaults (serial pulls)")
                print(f"{'nodes':>6} {'makespan':>9} {'p50':>7} {'p90':>7} {'p99':>7} "
                      f"{'max':>7} {'pulls':>6} {'MiB':>7} {'CPU s':>6} {'RSS MiB':>8}")  # fmt: skip
            for n in counts:
                text = NODES_WORKLOAD.format(nodes=n, web=2 * n)
                r = bench(text, work, registry.host, f"nodes-{n}")
                results["nodes"].append(r)
                t = r["ttr"]
                print(f"{n:>6} {r['makespan']:>8.2f}s {t['p50']:>6.2f}s {t['p90']:>6.2f}s "
                      f"{t['p99']:>6.2f}s {t['max']:>6.2f}s {r['pulls']:>6} "
                      f"{r['bytes'] / 2**20:>7.0f} {r['cpu']:>6.1f} "
                      f"{r['process_peak_rss_mib']:>8}")  # fmt: skip
            limits = [1, *(int(x) for x in args.parallel.split(",") if x.strip())]
            for key, prefix, title in (
                ("parallel", "par", "B. 1 node, 16 images sharing a base at once"),
                ("parallel_unshared", "solo", "B'. 1 node, 16 images sharing nothing at once"),
            ):
                print(f"\n{title}, +{args.latency_ms} ms per registry request")
                results[key] = parallel_case(work, registry.host, prefix, limits, args)
        finally:
            registry.stop()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
