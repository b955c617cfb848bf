"""Peer benchmark: kubelet-sim pulls vs skopeo, a curl floor and containerd, same registry, same run.

Starts a distribution registry on loopback, seeds large images of incompressible layers (default
256 MiB in 4 layers and 1 GiB in 8) and many small images (default 200 images x 3 layers, as
tags of one repository), then times, each side as its own process, fresh root or folder per run,
the median of ``--runs``:

- large: ``kubelet-sim pull`` (engine + store: every digest verified, every blob fsynced)
  vs ``skopeo copy docker://... dir:DIR``, vs a floor of one ``curl | tee FILE | sha256sum`` per
  layer all at once, and vs ``ctr content fetch`` where containerd's ``ctr`` is installed;
- small: kubelet-sim pulling every tag (8 in parallel) vs ``skopeo sync --src docker --dest dir``.

Wall time and peak RSS (``VmHWM``) are printed with the ratio kubelet-sim / peer (below 1.0 means
kubelet-sim is faster or smaller). Run it by hand:

    .venv/bin/python benchmarks/pull_vs_skopeo.py [--large 256:4,1024:8] [--runs 5] [--small 200]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
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


async def seed_large(
    host: str, total_mib: int, layers: int, repository: str = "bench/large"
) -> tuple[str, list[str]]:
    """Push one image of ``layers`` incompressible layers; its reference and layer digests."""
    ref = f"{host}/{repository}:v1"
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
    return ref, diff_ids


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


def curl_floor(host: str, repository: str, digests: list[str], folder: Path) -> list[str]:
    """A practical floor: every layer fetched at once by ``curl | tee FILE | sha256sum`` (the
    bytes read, written and hashed, nothing else)."""
    folder.mkdir(parents=True, exist_ok=True)
    parts = [
        f"(curl -sf http://{host}/v2/{repository}/blobs/{digest} | tee {folder / str(i)} "
        f"| sha256sum > {folder / f'{i}.sha256'}) &"
        for i, digest in enumerate(digests)
    ]
    return ["bash", "-c", " ".join([*parts, "wait"])]


def median_of(runs: int, argv_for: Callable[[int], list[str]]) -> tuple[float, int]:
    """The median wall time and median peak RSS of ``runs`` runs (each its own fresh paths)."""
    results = [run_measured(argv_for(i))[:2] for i in range(runs)]
    return (
        statistics.median(r[0] for r in results),
        int(statistics.median(r[1] for r in results)),
    )


def large_case(work: Path, host: str, number: int, mib: int, layers: int, runs: int) -> list[str]:
    """One large image against skopeo, the curl floor and ctr: the printed lines."""
    repository = f"bench/large{number}"
    large, digests = anyio.run(seed_large, host, mib, layers, repository)
    ksim = median_of(
        runs,
        lambda i: [
            *KSIM, "pull", large, "--root", str(work / f"ksim-{number}-{i}"), "--output", "json",
        ],
    )  # fmt: skip
    skopeo = median_of(
        runs,
        lambda i: [
            "skopeo", "copy", "--src-tls-verify=false", f"docker://{large}",
            f"dir:{work / f'skopeo-{number}-{i}'}",
        ],
    )  # fmt: skip
    floor = median_of(
        runs, lambda i: curl_floor(host, repository, digests, work / f"curl-{number}-{i}")
    )
    name = f"large {mib} MiB/{layers} layers"
    lines = [
        ratio_line(name, ksim, skopeo, "skopeo copy"),
        ratio_line(name, ksim, floor, "curl floor "),
    ]
    if shutil.which("ctr") is not None:
        ctr = median_of(runs, lambda i: ["ctr", "content", "fetch", "--plain-http", large])
        lines.append(ratio_line(name, ksim, ctr, "ctr fetch  "))
    else:
        lines.append(f"{name:<28} ctr: not installed here, no containerd comparison")
    for i in range(runs):  # the next case's copies need the disk
        for side in ("ksim", "skopeo", "curl"):
            shutil.rmtree(work / f"{side}-{number}-{i}", ignore_errors=True)
    return lines


def small_case(work: Path, host: str, args: argparse.Namespace) -> str:
    """Many small images, kubelet-sim vs ``skopeo sync``: the printed line."""
    small = anyio.run(seed_small, host, args.small)
    ksim = median_of(
        args.small_runs,
        lambda i: [
            sys.executable, "-c", PULL_MANY, str(work / f"ksim-small-{i}"),
            str(args.parallel), *small,
        ],
    )  # fmt: skip
    peer = median_of(
        args.small_runs,
        lambda i: [
            "skopeo", "sync", "--src-tls-verify=false", "--src", "docker", "--dest",
            "dir", f"{host}/bench/small", str(work / f"skopeo-small-{i}"),
        ],
    )  # fmt: skip
    return ratio_line(f"{args.small} small images x3 layers", ksim, peer, "skopeo sync")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--large",
        default="256:4,1024:8",
        help="large images as MIB:LAYERS, comma-separated (default 256:4,1024:8)",
    )
    parser.add_argument("--runs", type=int, default=5, help="runs per side, the median printed")
    parser.add_argument(
        "--small", type=int, default=200, help="small images (0: no small-image case)"
    )
    parser.add_argument("--small-runs", type=int, default=3)
    parser.add_argument("--parallel", type=int, default=8)
    args = parser.parse_args()
    configure_logging("warning")
    if shutil.which("skopeo") is None:
        raise SystemExit(
            "skopeo is not installed: sudo apt-get install -y skopeo (or scripts/bootstrap.sh)"
        )
    cases = [tuple(int(n) for n in case.split(":")) for case in args.large.split(",")]
    with tempfile.TemporaryDirectory(prefix="ksim-bench-") as tmp:
        work = Path(tmp)
        registry = RegistryProcess(RegistryConfig(storage_dir=work / "registry"), work).start()
        try:
            lines = [
                f"median of {args.runs} runs each, fresh root/folder per run; ratios are "
                "kubelet-sim / peer"
            ]
            for number, (mib, layers) in enumerate(cases):
                lines.extend(large_case(work, registry.host, number, mib, layers, args.runs))
            if args.small:  # none: skopeo sync would fail on the empty repository (404)
                lines.append(small_case(work, registry.host, args))
            print("\n".join(lines))
        finally:
            registry.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
