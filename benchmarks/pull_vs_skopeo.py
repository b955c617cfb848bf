"""Peer benchmark: kubelet-sim pulls vs `skopeo copy` / `skopeo sync` from the same registry, same run.

Starts a distribution registry on loopback, seeds (1) one large image (default 1 GiB in 8 layers) and
(2) many small images (default 200 images x 3 layers, as tags of one repository), then times:

- large:  `kubelet-sim pull` (engine + store, fresh root)     vs `skopeo copy docker://... oci:DIR`
- small:  kubelet-sim pulling every tag (8 in parallel)        vs `skopeo sync --src docker --dest dir`

Each side runs as its own process; wall time and peak RSS (from wait4) are printed with the ratio
kubelet-sim / skopeo (below 1.0 means kubelet-sim is faster or smaller). Run it by hand:

    .venv/bin/python benchmarks/pull_vs_skopeo.py [--large-mib 1024] [--layers 8] [--small 200]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

from kubelet_sim.cli.main import configure_logging
from kubelet_sim.core.reference import parse_normalized
from kubelet_sim.registry import mediatypes as mt
from kubelet_sim.registry.client import RegistryClient
from kubelet_sim.registry.push import Pusher
from kubelet_sim.sim.images import (
    Blob,
    build_image,
    canonical_json,
    random_bytes,
    tar_with_file,
)
from kubelet_sim.sim.registry import RegistryConfig, RegistryProcess
from kubelet_sim.sim.seed import push_image

KSIM = [sys.executable, "-m", "kubelet_sim"]


def run_measured(argv: list[str]) -> tuple[float, int, str]:
    """Run ``argv``; return (seconds, peak RSS in MiB, stdout).

    Peak RSS is the child's ``VmHWM`` (its high-water mark since exec), sampled until it exits.
    """
    started = time.perf_counter()
    # Files, not pipes: a child must never block on a full pipe while we sample its memory.
    with tempfile.TemporaryFile("w+") as out_file, tempfile.TemporaryFile("w+") as err_file:
        proc = subprocess.Popen(argv, stdout=out_file, stderr=err_file, text=True)
        peak_kib = 0
        status_file = Path(f"/proc/{proc.pid}/status")
        while proc.poll() is None:
            try:
                for line in status_file.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak_kib = max(peak_kib, int(line.split()[1]))
            except (OSError, ValueError):
                pass
            time.sleep(0.01)
        elapsed = time.perf_counter() - started
        out_file.seek(0)
        err_file.seek(0)
        out, err = out_file.read(), err_file.read()
    if proc.returncode != 0:
        raise SystemExit(f"{argv[:4]} failed ({proc.returncode}): {err[-2000:]}")
    return elapsed, peak_kib // 1024, out


async def seed_large(host: str, total_mib: int, layers: int) -> str:
    ref = f"{host}/bench/large:v1"
    per_layer = total_mib * 1024 * 1024 // layers
    async with RegistryClient() as client:
        pusher = Pusher(client, parse_normalized(ref), chunk_size=16 * 1024 * 1024)
        descs = []
        diff_ids = []
        for i in range(layers):
            tar = tar_with_file(f"data/{i}.bin", random_bytes(f"large-{i}", per_layer))
            blob = Blob(mt.OCI_LAYER, tar)
            await pusher.push_blob(blob.data, blob.digest, blob.size)
            descs.append(blob.descriptor())
            diff_ids.append(str(blob.digest))
            del tar, blob
        config = Blob(
            mt.OCI_CONFIG,
            canonical_json(
                {
                    "os": "linux",
                    "architecture": "amd64",
                    "rootfs": {"type": "layers", "diff_ids": diff_ids},
                }
            ),
        )
        await pusher.push_blob(config.data, config.digest, config.size)
        manifest = canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": mt.OCI_MANIFEST,
                "config": config.descriptor(),
                "layers": descs,
            }
        )
        await pusher.push_manifest(manifest, mt.OCI_MANIFEST, "v1")
    return ref


async def seed_small(host: str, count: int) -> list[str]:
    refs = []
    async with RegistryClient() as client:
        for i in range(count):
            ref = f"{host}/bench/small:t{i:04d}"
            await push_image(
                client, ref, build_image(f"small-{i}", "linux/amd64", (16_384, 16_384, 16_384))
            )
            refs.append(ref)
    return refs


PULL_MANY = """
import anyio, sys
from pathlib import Path
from kubelet_sim.runtime.images import ImageService
from kubelet_sim.core.platforms import parse_platform
from kubelet_sim.core.reference import parse_normalized
from kubelet_sim.registry.client import RegistryClient
from kubelet_sim.store import Store
from kubelet_sim.cli.main import configure_logging

async def main(root, refs, parallel):
    async with await Store.open(Path(root)) as store, RegistryClient() as client:
        service = ImageService(client, store, platform=parse_platform("linux/amd64"))
        limiter = anyio.CapacityLimiter(parallel)
        async def one(ref):
            async with limiter:
                await service.pull_image(parse_normalized(ref))
        async with anyio.create_task_group() as tg:
            for ref in refs:
                tg.start_soon(one, ref)

configure_logging("warning")
anyio.run(main, sys.argv[1], sys.argv[3:], int(sys.argv[2]))
"""


def ratio_line(name: str, ksim: tuple[float, int], peer: tuple[float, int], peer_name: str) -> str:
    return (
        f"{name:<28} kubelet-sim {ksim[0]:7.2f}s {ksim[1]:5d} MiB | {peer_name} {peer[0]:7.2f}s "
        f"{peer[1]:5d} MiB | time ratio {ksim[0] / peer[0]:.2f} | "
        f"memory ratio {ksim[1] / max(peer[1], 1):.2f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--large-mib", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--parallel", type=int, default=8)
    args = parser.parse_args()
    configure_logging("warning")
    if shutil.which("skopeo") is None:
        raise SystemExit(
            "skopeo is not installed: sudo apt-get install -y skopeo (or scripts/bootstrap.sh)"
        )
    with tempfile.TemporaryDirectory(prefix="ksim-bench-") as tmp:
        work = Path(tmp)
        registry = RegistryProcess(RegistryConfig(storage_dir=work / "registry"), work).start()
        try:
            t = time.perf_counter()
            large = anyio.run(seed_large, registry.host, args.large_mib, args.layers)
            small = anyio.run(seed_small, registry.host, args.small)
            print(
                f"seeded {args.large_mib} MiB in {args.layers} layers and {args.small} small images "
                f"in {time.perf_counter() - t:.1f}s on {registry.url}"
            )
            lines = []
            ksim = run_measured(
                [*KSIM, "pull", large, "--root", str(work / "ksim-large"), "--output", "json"]
            )
            peer = run_measured(
                [
                    "skopeo",
                    "copy",
                    "--src-tls-verify=false",
                    f"docker://{large}",
                    f"oci:{work / 'skopeo-large'}:v1",
                ]
            )
            lines.append(
                ratio_line(
                    f"large {args.large_mib} MiB/{args.layers} layers",
                    ksim[:2],
                    peer[:2],
                    "skopeo copy",
                )
            )
            ksim = run_measured(
                [
                    sys.executable,
                    "-c",
                    PULL_MANY,
                    str(work / "ksim-small"),
                    str(args.parallel),
                    *small,
                ]
            )
            peer = run_measured(
                [
                    "skopeo",
                    "sync",
                    "--src-tls-verify=false",
                    "--src",
                    "docker",
                    "--dest",
                    "dir",
                    f"{registry.host}/bench/small",
                    str(work / "skopeo-small"),
                ]
            )
            lines.append(
                ratio_line(
                    f"{args.small} small images x3 layers", ksim[:2], peer[:2], "skopeo sync"
                )
            )
            print("\n".join(lines))
        finally:
            registry.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
