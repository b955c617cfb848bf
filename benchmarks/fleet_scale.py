"""Fleet scale: the rollout of issue 13 on 100 / 1,000 / 10,000 simulated nodes, and shards.

One distribution registry on loopback; a 768 KiB base shared by two images; on every node an
agent pod at t=0, and as many web pods as nodes arriving at nodes/5 per second, spread
round-robin (kubelet defaults: serial pulls, QPS 5 / burst 10). Each run is ``kubelet-sim bench``
as a child process (wall time and peak RSS measured from outside; with shards, the whole
process tree) and prints, per run:

- pods counted vs pods applied (every pod must be in the report, ready or not),
- wall seconds, CPU seconds, peak RSS, registry requests per second of the run,
- p50 / p99 time-to-ready, and the simulator-health figures (loop lag, dispatch delay, client
  share) with the report's verdict on whether the simulator dominated the latency.

Then the same 1,000-node rollout with ``--shards 2`` against ``--shards 1``, and with
``--executor ray`` against ``--shards 2`` (when the ray extra is installed). The peer: ApacheBench
(``ab``, from apache2-utils) fetching the same manifest and blobs from the same registry with 16
keep-alive connections, which is what the registry itself can serve on this machine; the bench's
requests per second are printed against that ceiling.

    .venv/bin/python benchmarks/fleet_scale.py [--nodes 100,1000,10000] [--shards 2] [--no-ray]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kubelet_sim.cli.main import configure_logging
from kubelet_sim.sim.registry import RegistryConfig, RegistryProcess

KSIM = [sys.executable, "-m", "kubelet_sim"]

FLEET = """
apiVersion: kubelet-sim.dev/v1alpha1
kind: Workload
name: fleet-{nodes}
description: "{nodes} nodes: an agent pod per node at t=0, {nodes} web pods at {rate}/s"
seed: 13
bases:
  - {{name: base, layers: [512KiB, 256KiB]}}
images:
  - {{repository: fleet/agent, tags: ["1.0"], base: base, layers: [64KiB]}}
  - {{repository: fleet/web, tags: ["1.0"], base: base, layers: [64KiB, 64KiB]}}
nodes:
  - {{name: node, count: {nodes}}}
pods:
  - name: agent
    spec: {{containers: [{{name: agent, image: "fleet/agent:1.0"}}]}}
    placement: every-node
  - name: web
    count: {nodes}
    spec: {{containers: [{{name: web, image: "fleet/web:1.0"}}]}}
    arrival: {{rate: {rate}}}
run: {{timeout: 900s}}
"""


def _tree_rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` and all its descendants, in KiB (``/proc``)."""
    total = 0
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except (OSError, ValueError):
            continue
        stack.extend(int(c) for c in children)
    return total


def run_tree(argv: list[str]) -> tuple[float, int]:
    """Run ``argv``; (seconds, peak RSS of its whole process tree in MiB, sampled every 50 ms)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, text=True)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, _tree_rss_kib(proc.pid))
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        if proc.returncode != 0:
            err.seek(0)
            raise SystemExit(f"{argv[3:6]} failed ({proc.returncode}): {err.read()[-3000:]}")
    return seconds, peak // 1024


def bench(work: Path, host: str, nodes: int, name: str, *extra: str) -> dict[str, Any]:
    path = work / f"fleet-{nodes}.yaml"
    path.write_text(FLEET.format(nodes=nodes, rate=max(1, nodes // 5)))
    out = work / name
    argv = [*KSIM, "bench", str(path), "--registry", host, "--out", str(out), "--quiet",
            "--no-plots", "--no-seed", *extra]  # fmt: skip
    seconds, rss = run_tree(argv)
    report = json.loads((out / "report.json").read_text())
    s = report["summary"]
    wall = s["resources"]["wall_seconds"]
    return {
        "name": name,
        "nodes": nodes,
        "pods_applied": len(report["pods"]),
        "pods_planned": sum(t["pods"] for t in report["templates"].values()),
        "pods_ready": s["pods_ready"],
        "process_seconds": round(seconds, 1),
        "run_seconds": wall,
        "cpu_seconds": s["resources"]["cpu_seconds"],
        "peak_rss_mib": rss,
        "requests": s["registry_requests"],
        "req_per_s": round(s["registry_requests"] / wall, 1) if wall else None,
        "ttr": s["time_to_ready"],
        "health": s["health"],
    }


def registry_ceiling(host: str) -> dict[str, float]:
    """Requests/s the registry serves to ``ab -c 16 -k`` for each request of a pull."""
    accept = "Accept: application/vnd.oci.image.manifest.v1+json"
    manifest_url = f"http://{host}/v2/fleet/web/manifests/1.0"
    raw = subprocess.run(["curl", "-sf", "-H", accept, manifest_url],
                         check=True, capture_output=True, text=True).stdout  # fmt: skip
    manifest = json.loads(raw)
    urls = {
        "HEAD manifest": ["-i", "-H", accept, manifest_url],
        "GET config": [f"http://{host}/v2/fleet/web/blobs/{manifest['config']['digest']}"],
        "GET 512 KiB layer": [
            f"http://{host}/v2/fleet/web/blobs/{manifest['layers'][0]['digest']}"
        ],
        "GET 64 KiB layer": [
            f"http://{host}/v2/fleet/web/blobs/{manifest['layers'][-1]['digest']}"
        ],
    }
    out = {}
    for name, args in urls.items():
        text = subprocess.run(["ab", "-q", "-n", "3000", "-c", "16", "-k", *args],
                              check=True, capture_output=True, text=True).stdout  # fmt: skip
        line = next(x for x in text.splitlines() if x.startswith("Requests per second"))
        out[name] = float(line.split()[3])
    return out


def show(r: dict[str, Any]) -> None:
    t, h = r["ttr"], r["health"]
    counted = f"{r['pods_ready']}/{r['pods_applied']}/{r['pods_planned']}"
    p50 = "n/r" if t["p50"] is None else f"{t['p50']:.2f}"
    p99 = "n/r" if t["p99"] is None else f"{t['p99']:.2f}"
    print(
        f"{r['name']:>14} {counted:>17} {r['process_seconds']:>7.1f} {r['run_seconds']:>7.1f} "
        f"{r['cpu_seconds']:>7.1f} {r['peak_rss_mib']:>7} {r['req_per_s']:>7} {p50:>6} {p99:>6} "
        f"{h['loop_lag']['p99_ms']:>8} {h['dispatch_delay']['p50_ms']:>8} "
        f"{(h['client_wait_share'] or 0):>6.1%} {'YES' if h['dominated_by_simulator'] else 'no':>5}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", default="100,1000,10000")
    parser.add_argument("--shards", type=int, default=2, help="shards to compare at 1,000 nodes")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray comparison")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    configure_logging("warning")
    results = []
    with tempfile.TemporaryDirectory(prefix="ksim-fleet-") as tmp:
        work = Path(tmp)
        registry = RegistryProcess(RegistryConfig(storage_dir=work / "registry"), work).start()
        try:
            seed_file = work / "seed.yaml"
            seed_file.write_text(FLEET.format(nodes=1, rate=1))
            subprocess.run([*KSIM, "seed", str(seed_file), "--registry", registry.host],
                           check=True, stdout=subprocess.DEVNULL)  # fmt: skip
            ceiling = registry_ceiling(registry.host)
            print("registry ceiling (ab -c 16 -k, requests/s): "
                  + ", ".join(f"{k} {v:.0f}" for k, v in ceiling.items()))  # fmt: skip
            # A pull is 1 HEAD + 1 GET manifest + 1 GET config + layers: weigh by the mix.
            per_pull = [ceiling["HEAD manifest"], ceiling["HEAD manifest"], ceiling["GET config"],
                        *[ceiling["GET 512 KiB layer"]] * 2, ceiling["GET 64 KiB layer"]]  # fmt: skip
            mix = len(per_pull) / sum(1 / x for x in per_pull)
            print(f"registry ceiling for the rollout's request mix: {mix:.0f} requests/s\n")
            print(f"{'run':>14} {'ready/counted/all':>17} {'proc s':>7} {'run s':>7} "
                  f"{'CPU s':>7} {'RSS MiB':>7} {'req/s':>7} {'p50':>6} {'p99':>6} "
                  f"{'lag p99':>8} {'disp p50':>8} {'client':>6} {'sim?':>5}")  # fmt: skip
            for n in (int(x) for x in args.nodes.split(",")):
                results.append(bench(work, registry.host, n, f"{n} nodes"))
                show(results[-1])
            base = 1000
            one = next((r for r in results if r["nodes"] == base), None)
            if one is None:
                one = bench(work, registry.host, base, f"{base} nodes")
                results.append(one)
                show(one)
            sharded = bench(work, registry.host, base, f"--shards {args.shards}",
                            "--shards", str(args.shards))  # fmt: skip
            results.append(sharded)
            show(sharded)
            ray = None
            if not args.no_ray and importlib.util.find_spec("ray") is not None:
                ray = bench(work, registry.host, base, f"ray x{args.shards}",
                            "--shards", str(args.shards), "--executor", "ray")  # fmt: skip
                results.append(ray)
                show(ray)
            for r in results:
                print(f"{r['name']:>14}: {r['req_per_s'] / mix:.0%} of the registry's ceiling")
            print(f"\n{base} nodes, --shards {args.shards} vs 1: run time "
                  f"{one['run_seconds'] / sharded['run_seconds']:.2f}x faster, req/s "
                  f"{sharded['req_per_s'] / one['req_per_s']:.2f}x")  # fmt: skip
            if ray is not None:
                print(f"{base} nodes, ray x{args.shards} vs --shards {args.shards}: process time "
                      f"{ray['process_seconds'] / sharded['process_seconds']:.2f}x, run time "
                      f"{ray['run_seconds'] / sharded['run_seconds']:.2f}x")  # fmt: skip
        finally:
            registry.stop()
    if args.json:
        args.json.write_text(
            json.dumps({"ceiling": ceiling, "mix": mix, "runs": results}, indent=1) + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
