"""Container start cost: kubelet-sim's runc handler against bare ``runc run``, same image, same run.

Pushes the busybox-static image to a local registry, pulls it into a durable store, then runs a
container whose process is ``true`` to completion N times, two ways:

- **kubelet-sim**: :class:`~kubelet_sim.runtime.runc.RuncHandler` ``create_container`` (rootfs
  from the image's snapshot, OCI spec), ``start_container``, ``wait_container``,
  ``remove_container`` (rootfs and bundle gone);
- **floor**: ``runc run`` of a bundle prepared once by hand (a copy of the same snapshot and a
  ``runc spec`` config running ``true``), which is what any runc-based runtime pays at least.

Prints the median and p90 per container for both and the ratio, and the one-off cost of unpacking
the image's snapshot. Needs root, ``runc`` and ``/bin/busybox`` (``scripts/bootstrap.sh``).

    .venv/bin/python benchmarks/containers.py [--runs 20]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

from kubelet_sim.cli.main import configure_logging
from kubelet_sim.config.runtimes import default_runc_binary
from kubelet_sim.core.pods import PodRef
from kubelet_sim.core.reference import parse_normalized
from kubelet_sim.registry.client import RegistryClient
from kubelet_sim.runtime.images import ImageService
from kubelet_sim.runtime.port import ContainerConfig, SandboxConfig
from kubelet_sim.runtime.runc import RuncHandler
from kubelet_sim.sim.registry import RegistryConfig, RegistryProcess
from kubelet_sim.sim.runnable import image_config, push_busybox_image
from kubelet_sim.store import Store

POD = PodRef("bench", "containers", "uid-bench")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def floor_runs(snapshot: Path, work: Path, runc: str, runs: int) -> list[float]:
    """``runc run`` of a hand-made bundle over a copy of the same snapshot, ``runs`` times."""
    bundle = work / "floor-bundle"
    shutil.copytree(snapshot, bundle / "rootfs", symlinks=True)
    subprocess.run([runc, "spec"], cwd=bundle, check=True)
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["true"]
    spec["root"]["readonly"] = False
    (bundle / "config.json").write_text(json.dumps(spec))
    state = work / "floor-state"
    times = []
    for i in range(runs):
        started = time.perf_counter()
        subprocess.run(
            [runc, "--root", str(state), "run", "--bundle", str(bundle), f"floor-{i}"],
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        times.append(time.perf_counter() - started)
    return times


async def kubelet_sim_runs(
    registry: str, work: Path, runc: str, runs: int
) -> tuple[list[float], float, Path]:
    ref = f"{registry}/bench/busybox:1"
    async with RegistryClient() as client:
        image = await push_busybox_image(client, ref)
    async with await Store.open(work / "store") as store, RegistryClient() as client:
        pulled = await ImageService(client, store).pull_image(parse_normalized(ref))
        handler = RuncHandler("runc", work / "rt", store, runc=runc)
        reason = handler.unavailable_reason()
        if reason is not None:
            sys.exit(f"containers.py: {reason} (run scripts/bootstrap.sh as root)")
        try:
            sandbox = await handler.run_sandbox(SandboxConfig(POD, "bench"))
            started = time.perf_counter()
            snapshot = await handler.snapshotter.snapshot(pulled.image_ref)
            unpack = time.perf_counter() - started
            times = []
            for i in range(runs):
                config = ContainerConfig(
                    pod=POD,
                    name="c",
                    attempt=i,
                    image_id=pulled.image_ref,
                    argv=("true",),
                    env=(("PATH", "/bin"),),
                    hostname="bench",
                )
                started = time.perf_counter()
                cid = await handler.create_container(sandbox, config, image_config(image))
                await handler.start_container(cid)
                code = await handler.wait_container(cid)
                await handler.remove_container(cid)
                times.append(time.perf_counter() - started)
                if code != 0:
                    sys.exit(f"containers.py: `true` exited with {code}")
        finally:
            await handler.aclose()
    return times, unpack, snapshot


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    configure_logging("warning", json_lines=False)
    runc = default_runc_binary()
    with tempfile.TemporaryDirectory(prefix="ks-containers-") as tmp:
        work = Path(tmp)
        registry = RegistryProcess(RegistryConfig(storage_dir=work / "registry"), work / "reg")
        registry.start()
        try:
            ours, unpack, snapshot = anyio.run(
                kubelet_sim_runs, registry.host, work, runc, args.runs
            )
            floor = floor_runs(snapshot, work, runc, args.runs)
        finally:
            registry.stop()
    print(f"container lifecycle of `true` (busybox-static image), {args.runs} runs each")
    print(f"  snapshot unpack (once per image): {unpack * 1000:.0f} ms")
    for name, values in (("kubelet-sim runc handler", ours), ("bare runc run (floor)", floor)):
        print(
            f"  {name:<26} median {statistics.median(values) * 1000:6.1f} ms"
            f"  p90 {percentile(values, 0.9) * 1000:6.1f} ms"
        )
    print(
        f"  ratio kubelet-sim / floor (median): {statistics.median(ours) / statistics.median(floor):.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
