"""Virtual-time scale: the outage-during-rollout what-if at 1,000 and 10,000 nodes, wall time.

The workload is ``benchmarks/workloads/outage-virtual.yaml`` scaled to N nodes: an agent pod per
node at t=0, N web pods at N/500 per second, the kubelet's defaults (serial pulls, QPS 5 / burst
10, pod-worker resync 10 s, image backoff 10 s doubling to 300 s), and the registry down from
t=5 min to t=65 min, against the modelled registry (latency median 4 ms / p99 40 ms, 100 MiB/s
per body, 10 GiB/s egress, 2,000 requests at once, token auth). Each run is
``kubelet-sim bench --virtual`` as a child process, measured from outside, and prints:

- wall seconds, CPU seconds, peak RSS (``resource`` of the child processes), with 1 and 2 shards (each shard
  models half the registry's egress and concurrency);
- simulated seconds and the speed-up over real time;
- pods counted and ready, the time-to-ready p50 / p99 and when the last pod became ready;
- the backoff ladder: BackOff events, pull attempts and failed pulls, the pod-worker syncs
  (engine work) per wall second;
- the registry side: requests during the outage, the retry spike after it (peak requests per
  second, how long after the end) against the rate before.

    .venv/bin/python benchmarks/virtual_scale.py [--nodes 1000,10000] [--shards 1,2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

KSIM = [sys.executable, "-m", "kubelet_sim"]
WORKLOAD = Path(__file__).parent / "workloads" / "outage-virtual.yaml"


def scaled(nodes: int, work: Path) -> Path:
    """The example workload with ``nodes`` nodes and as many web pods at nodes/500 per second."""
    doc = yaml.safe_load(WORKLOAD.read_text())
    doc["name"] = f"outage-virtual-{nodes}"
    doc["nodes"][0]["count"] = nodes
    for pod in doc["pods"]:
        if pod["name"] == "web":
            pod["count"] = nodes
            pod["arrival"] = {"rate": nodes / 500}
    path = work / f"outage-{nodes}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run(nodes: int, work: Path, shards: int) -> dict[str, Any]:
    out = work / f"out-{nodes}-{shards}"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    cmd = [*KSIM, "bench", str(scaled(nodes, work)), "--virtual", "--out", str(out), "--quiet",
           "--no-plots", "--output", "json", "--shards", str(shards)]  # fmt: skip
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    report = json.loads((out / "report.json").read_text())
    s = report["summary"]
    view = report["registry_view"]
    outage = view["outages"][0]
    pulls = s["pulls"]
    syncs = s["events_by_reason"].get("BackOff", 0) + pulls  # every sync pulls or backs off
    return {
        "nodes": nodes,
        "shards": shards,
        "pods": f"{s['pods_ready']}/{s['pods']}",
        "wall": wall,
        "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "rss": after.ru_maxrss / 1024,
        "simulated": report["run"]["stopped_at"],
        "p50": s["time_to_ready"]["p50"],
        "p99": s["time_to_ready"]["p99"],
        "last": s["last_ready"],
        "backoffs": s["backoffs"],
        "pulls": pulls,
        "failed": s["pull_errors"],
        "syncs_per_s": syncs / wall,
        "during": outage["requests_during"],
        "before": outage["requests_per_second_before"],
        "peak": outage["peak_requests_per_second_after"],
        "peak_at": outage["peak_seconds_after_end"],
        "requests": view["totals"]["requests"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", default="1000,10000")
    parser.add_argument("--shards", default="1,2", help="shard counts to run each size with")
    args = parser.parse_args()
    counts = [int(n) for n in args.nodes.split(",")]
    shard_counts = [int(n) for n in args.shards.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="ksim-vscale-") as tmp:
        for n, shards in ((n, k) for n in counts for k in shard_counts):
            row = run(n, Path(tmp), shards)
            rows.append(row)
            print(
                f"{n:>6} nodes, {shards} shard(s): {row['pods']} pods ready; wall {row['wall']:.1f} s, CPU "
                f"{row['cpu']:.1f} s, peak RSS {row['rss']:.0f} MiB (largest process); simulated "
                f"{row['simulated']:.0f} s ({row['simulated'] / row['wall']:.0f}x real time)",
                flush=True,
            )
            print(
                f"        time-to-ready p50 {row['p50']} s, p99 {row['p99']} s, last pod ready "
                f"at {row['last']} s; {row['backoffs']} BackOff events, {row['pulls']} pulls "
                f"({row['failed']} failed), {row['syncs_per_s']:.0f} pod syncs per wall second",
                flush=True,
            )
            print(
                f"        registry: {row['requests']} requests, {row['during']} during the "
                f"outage; after it a peak of {row['peak']} req/s at +{row['peak_at']} s "
                f"(before: {row['before']}/s)",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
