"""Peer benchmark: kubelet-sim pulls vs skopeo, a curl floor and containerd, same registry, same run.

Starts a distribution registry on loopback, seeds large images of incompressible layers (default
256 MiB in 4 layers and 1 GiB in 8) and many small images (default 200 images x 3 layers, as
tags of one repository), then times, each side as its own process, fresh root or folder per run,
the median of ``--runs``:

- large: ``kubelet-sim pull`` (engine + store: every digest verified, every blob fsynced), with
  containerd's default of 3 layers at once and with every layer at once
  (``--max-concurrent-downloads N``), vs ``skopeo copy docker://... dir:DIR`` (up to 6 at once),
  vs a floor of one ``curl | tee FILE | sha256sum`` per layer all at once, and vs
  ``ctr content fetch`` where containerd is installed (``apt-get install containerd``: the
  benchmark starts a daemon of its own with an empty store each round; ctr's memory column is
  the client's, the daemon that writes the content is not counted);
- small: kubelet-sim pulling every tag (8 in parallel) vs ``skopeo sync --src docker --dest dir``,
  vs a floor of the same requests by one ``curl --parallel`` (24 at once, none waiting for another),
  every body hashed and the folder synced, and vs the same requests by httpx alone in
  kubelet-sim's order (what its HTTP library costs before anything is hashed or stored).

Each round runs every side once, in turn, so a machine that slows down slows them all alike.
kubelet-sim's modules are byte-compiled before any timing, as an installed copy's are.

Wall time and peak RSS (``VmHWM``) are printed with the ratio kubelet-sim / peer (below 1.0 means
kubelet-sim is faster or smaller). Run it by hand:

    .venv/bin/python benchmarks/pull_vs_skopeo.py [--large 256:4,1024:8] [--runs 5] [--small 200]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

import kubelet_sim
from kubelet_sim.cli.main import configure_logging
from kubelet_sim.core.reference import parse_normalized
from kubelet_sim.registry import mediatypes as mt
from kubelet_sim.registry.client import ClientSettings, RegistryClient
from kubelet_sim.registry.push import Pusher
from kubelet_sim.sim.images import (
    Blob,
    Image,
    build_image,
    canonical_json,
    random_bytes,
    tar_with_file,
)
from kubelet_sim.sim.registry import RegistryConfig, RegistryProcess
from kubelet_sim.sim.seed import push_image

KSIM = [sys.executable, "-m", "kubelet_sim"]


CHILD_ENV: dict[str, str] = dict(os.environ)
"""The environment of every timed process (see :func:`as_installed`)."""


def as_installed(pycache: Path) -> None:
    """Run kubelet-sim as an installed copy runs: its modules byte-compiled once, up front.

    An editable install compiles nothing at install time, and with ``PYTHONDONTWRITEBYTECODE``
    set (as it is on some CI machines) every run compiled every module it imported again, a
    tenth of a large pull's time spent on start-up no installed wheel pays. The children get
    a bytecode cache of their own (``PYTHONPYCACHEPREFIX``), filled here with kubelet-sim's
    modules; each case's untimed warm-up run (:func:`warm_up`) fills in the libraries' (the
    prefix holds every module's bytecode, the standard library's too).
    """
    CHILD_ENV.pop("PYTHONDONTWRITEBYTECODE", None)
    CHILD_ENV["PYTHONPYCACHEPREFIX"] = str(pycache)
    package = Path(kubelet_sim.__file__).parent
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(package)], env=CHILD_ENV, check=True
    )


class Containerd:
    """A containerd daemon of the benchmark's own (its root, state and socket under ``folder``;
    no CRI plugin), for ``ctr content fetch`` into an empty content store: a fetch of content
    the store already has returns at once. The system's containerd, if any, is left alone."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.socket = folder / "containerd.sock"
        self._proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def installed() -> bool:
        return shutil.which("containerd") is not None and shutil.which("ctr") is not None

    def ctr(self, *args: str) -> list[str]:
        return ["ctr", "--address", str(self.socket), *args]

    def start(self) -> Containerd:
        self.folder.mkdir(parents=True)
        config = self.folder / "config.toml"
        config.write_text(
            "version = 2\n"
            f'root = "{self.folder / "root"}"\n'
            f'state = "{self.folder / "state"}"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\n  address = "{self.socket}"\n'
        )
        with (self.folder / "containerd.log").open("wb") as log:
            self._proc = subprocess.Popen(
                ["containerd", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 30
        while subprocess.run(self.ctr("version"), capture_output=True).returncode != 0:
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = (self.folder / "containerd.log").read_text(errors="replace")[-2000:]
                raise SystemExit(f"containerd did not start: {tail}")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


def warm_up(argv: list[str], folder: Path) -> None:
    """Run ``argv`` once, untimed, then remove ``folder`` (what it wrote)."""
    run_measured(argv)
    shutil.rmtree(folder, ignore_errors=True)


def run_measured(argv: list[str]) -> tuple[float, int, str]:
    """Run ``argv``; return (seconds, peak RSS in MiB, stdout).

    Peak RSS is the child's ``VmHWM`` (its high-water mark since exec), sampled until it exits.
    """
    started = time.perf_counter()
    # Files, not pipes: a child must never block on a full pipe while we sample its memory.
    with tempfile.TemporaryFile("w+") as out_file, tempfile.TemporaryFile("w+") as err_file:
        proc = subprocess.Popen(argv, stdout=out_file, stderr=err_file, text=True, env=CHILD_ENV)
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


async def seed_small(host: str, count: int) -> list[tuple[str, Image]]:
    """Push ``count`` images of three 16 KiB layers as tags of one repository."""
    seeded = []
    async with RegistryClient() as client:
        for i in range(count):
            ref = f"{host}/bench/small:t{i:04d}"
            image = build_image(f"small-{i}", "linux/amd64", (16_384, 16_384, 16_384))
            await push_image(client, ref, image)
            seeded.append((ref, image))
    return seeded


def small_requests(host: str, seeded: list[tuple[str, Image]]) -> list[dict[str, Any]]:
    """The requests kubelet-sim makes for each small image, as containerd does: the HEAD of the
    tag, then the manifest, config and layers by digest (one entry of URLs per image)."""
    plan = []
    for ref, image in seeded:
        repository, tag = ref.split("/", 1)[1].rsplit(":", 1)
        base = f"http://{host}/v2/{repository}"
        plan.append(
            {
                "tag": f"{base}/manifests/{tag}",
                "manifest": f"{base}/manifests/{image.manifest.digest}",
                "config": f"{base}/blobs/{image.config.digest}",
                "layers": [f"{base}/blobs/{layer.digest}" for layer in image.layers],
            }
        )
    return plan


def small_floor(plan: list[dict[str, Any]], folder: Path) -> Path:
    """A floor for the small images: a ``curl`` config file of the ``plan``'s requests, every
    body to a file of ``folder``. Run with ``--parallel``, it makes them all in no order, with
    no request waiting for the answer it would need first: less than any client can do."""
    accept = f"Accept: {mt.OCI_MANIFEST}, {mt.DOCKER_MANIFEST}"
    entries = []
    for number, image in enumerate(plan):
        entries.append(f'url = "{image["tag"]}"\nhead\nheader = "{accept}"\n')
        entries.append(
            f'url = "{image["manifest"]}"\nheader = "{accept}"\n'
            f'output = "{folder / f"{number}.m"}"\n'
        )
        for index, url in enumerate([image["config"], *image["layers"]]):
            entries.append(f'url = "{url}"\noutput = "{folder / f"{number}.{index}"}"\n')
    config = folder.with_name(f"{folder.name}.curlrc")
    # "next" between entries: each request with its own options; -Z makes them in parallel.
    config.write_text("next\n".join(f"silent\nfail\n{entry}" for entry in entries))
    return config


HTTPX_MANY = """
import anyio, json, sys
from kubelet_sim.registry.boundary import make_http_client
from kubelet_sim.registry.transport import TransportSettings

ACCEPT = {"Accept": sys.argv[3]}

async def main(plan, parallel):
    async with make_http_client(TransportSettings()) as client:
        limiter = anyio.CapacityLimiter(parallel)

        async def get(url, headers=None):
            async with client.stream("GET", url, headers=headers) as answer:
                answer.raise_for_status()
                async for _ in answer.aiter_raw():
                    pass

        async def one(image):
            async with limiter:
                (await client.head(image["tag"], headers=ACCEPT)).raise_for_status()
                await get(image["manifest"], ACCEPT)
                children = anyio.CapacityLimiter(3)  # containerd's max_concurrent_downloads

                async def child(url):
                    async with children:
                        await get(url)

                async with anyio.create_task_group() as tg:
                    for url in [image["config"], *image["layers"]]:
                        tg.start_soon(child, url)

        async with anyio.create_task_group() as tg:
            for image in plan:
                tg.start_soon(one, image)

anyio.run(main, json.loads(open(sys.argv[1]).read()), int(sys.argv[2]))
"""
"""The small images' requests by httpx alone, in kubelet-sim's order (per image the HEAD of the
tag, the manifest, then its config and layers 3 at a time; ``parallel`` images at a time; the
URLs of :func:`small_requests` from the JSON file its first argument names), bodies
read and dropped: what the HTTP library costs before any hashing or storing. The client is
kubelet-sim's (``make_http_client``: its limits, timeouts and httpcore settings)."""


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


def ratio_line(
    name: str,
    ksim: tuple[float, int],
    peer: tuple[float, int],
    peer_name: str,
    *,
    memory: bool = True,
) -> str:
    """One comparison; without ``memory`` (a shell pipeline, whose ``VmHWM`` is the shell's
    alone) no memory figure for the peer."""
    line = f"{name:<28} kubelet-sim {ksim[0]:7.2f}s {ksim[1]:5d} MiB | {peer_name} {peer[0]:7.2f}s "
    if not memory:
        return line + f"        | time ratio {ksim[0] / peer[0]:.2f}"
    return (
        line + f"{peer[1]:5d} MiB | time ratio {ksim[0] / peer[0]:.2f} | "
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


def medians(
    runs: int,
    sides: dict[str, Callable[[int], list[str]]],
    cleanup: Callable[[int], None] = lambda i: None,
    prepare: Callable[[int], None] = lambda i: None,
) -> dict[str, tuple[float, int]]:
    """Each side's median wall time and median peak RSS over ``runs`` rounds.

    A round runs every side once, in turn (after ``prepare(round)``, then ``cleanup(round)``,
    both untimed), so a machine that slows down for a while slows every side alike instead of
    the one measured then.
    """
    results: dict[str, list[tuple[float, int]]] = {name: [] for name in sides}
    for i in range(runs):
        prepare(i)
        try:
            for name, argv_for in sides.items():
                results[name].append(run_measured(argv_for(i))[:2])
        finally:
            cleanup(i)
    return {
        name: (
            statistics.median(r[0] for r in rounds),
            int(statistics.median(r[1] for r in rounds)),
        )
        for name, rounds in results.items()
    }


def large_case(work: Path, host: str, number: int, mib: int, layers: int, runs: int) -> list[str]:
    """One large image against skopeo, the curl floor and ctr: the printed lines.

    kubelet-sim runs twice a round: with containerd's default of 3 layers at once, and with as
    many at once as the image has layers, as the floor fetches them (skopeo takes up to 6).
    """
    repository = f"bench/large{number}"
    large, digests = anyio.run(seed_large, host, mib, layers, repository)
    default = ClientSettings().max_concurrent_downloads

    def ksim(at_once: int) -> Callable[[int], list[str]]:
        return lambda i: [
            *KSIM, "pull", large, "--root", str(work / f"ksim{at_once}-{number}-{i}"),
            "--output", "json", "--max-concurrent-downloads", str(at_once),
        ]  # fmt: skip

    def skopeo(i: int) -> list[str]:
        folder = work / f"skopeo-{number}-{i}"
        return ["skopeo", "copy", "--src-tls-verify=false", f"docker://{large}", f"dir:{folder}"]

    sides = {
        "ksim": ksim(default),
        "skopeo": skopeo,
        "curl": lambda i: curl_floor(host, repository, digests, work / f"curl-{number}-{i}"),
    }
    if layers > default:  # else the same run twice
        sides["ksim-all"] = ksim(layers)
    daemons: dict[int, Containerd] = {}
    if Containerd.installed():
        sides["ctr"] = lambda i: daemons[i].ctr("content", "fetch", "--plain-http", large)

    warm_up(ksim(default)(-1), work / f"ksim{default}-{number}--1")

    def prepare(i: int) -> None:  # containerd: a daemon of its own, with an empty store
        if "ctr" in sides:
            daemons[i] = Containerd(work / f"ctr-{number}-{i}").start()

    def cleanup(i: int) -> None:  # the next round's copies need the disk
        if i in daemons:
            daemons.pop(i).stop()
        for side in (f"ksim{default}", f"ksim{layers}", "skopeo", "curl", "ctr"):
            shutil.rmtree(work / f"{side}-{number}-{i}", ignore_errors=True)

    figures = medians(runs, sides, cleanup, prepare)
    lines = []
    for key, at_once in (("ksim", default), ("ksim-all", layers)):
        if key not in figures:
            continue
        name = f"{mib} MiB/{layers} layers, {at_once} at once"
        lines.append(ratio_line(name, figures[key], figures["skopeo"], "skopeo copy"))
        lines.append(ratio_line(name, figures[key], figures["curl"], "curl floor ", memory=False))
        if "ctr" in figures:
            lines.append(ratio_line(name, figures[key], figures["ctr"], "ctr fetch  "))
    if "ctr" not in figures:
        lines.append(
            f"{mib} MiB/{layers} layers: containerd not installed here (apt-get install "
            "containerd), no ctr comparison"
        )
    return lines


def small_case(work: Path, host: str, args: argparse.Namespace) -> list[str]:
    """Many small images, kubelet-sim vs ``skopeo sync`` and the curl floor: the printed lines.

    The floor is one ``curl --parallel`` process making kubelet-sim's requests, as many at once
    as kubelet-sim can have in flight (``--parallel`` images with three layers each), then one
    ``sha256sum`` of every body and a sync of the folder. "httpx alone" makes the same requests
    in kubelet-sim's order with kubelet-sim's HTTP client, and nothing else (:data:`HTTPX_MANY`).
    """
    seeded = anyio.run(seed_small, host, args.small)
    small = [ref for ref, _ in seeded]
    warmed = work / "ksim-small-warm-up"
    warm_up([sys.executable, "-c", PULL_MANY, str(warmed), str(args.parallel), *small[:3]], warmed)

    requests = small_requests(host, seeded)
    in_flight = args.parallel * 3  # kubelet-sim's most: every image's three layers at once

    def floor(i: int) -> list[str]:
        folder = work / f"curl-small-{i}"
        folder.mkdir()
        config = small_floor(requests, folder)
        return [
            "bash", "-c",
            f"curl --parallel --parallel-immediate --parallel-max {in_flight} --config {config} "
            f"&& sha256sum {folder}/* > /dev/null && sync --file-system {folder}",
        ]  # fmt: skip

    def cleanup(i: int) -> None:
        for side in ("ksim", "skopeo", "curl"):
            shutil.rmtree(work / f"{side}-small-{i}", ignore_errors=True)

    plan = work / "httpx-small.json"
    plan.write_text(json.dumps(requests))
    accept = f"{mt.OCI_MANIFEST}, {mt.DOCKER_MANIFEST}"
    httpx_side = [sys.executable, "-c", HTTPX_MANY, str(plan), str(args.parallel), accept]

    figures = medians(
        args.small_runs,
        {
            "ksim": lambda i: [
                sys.executable, "-c", PULL_MANY, str(work / f"ksim-small-{i}"),
                str(args.parallel), *small,
            ],
            "skopeo": lambda i: [
                "skopeo", "sync", "--src-tls-verify=false", "--src", "docker", "--dest",
                "dir", f"{host}/bench/small", str(work / f"skopeo-small-{i}"),
            ],
            "curl": floor,
            "httpx": lambda i: httpx_side,
        },
        cleanup,
    )  # fmt: skip
    ksim, peer = figures["ksim"], figures["skopeo"]
    curl, alone = figures["curl"], figures["httpx"]
    name = f"{args.small} small images x3 layers"
    return [
        ratio_line(name, ksim, peer, "skopeo sync"),
        ratio_line(name, ksim, curl, "curl floor ", memory=False),
        ratio_line(name, ksim, alone, "httpx alone"),
        f"{name}: of skopeo sync, the curl floor is {curl[0] / peer[0]:.2f}, httpx alone "
        f"{alone[0] / peer[0]:.2f}",
    ]


def large_cases(text: str) -> list[tuple[int, int]]:
    """``--large``: MIB:LAYERS pairs, comma-separated, each a positive whole number; '' is none."""
    cases = []
    for case in filter(None, (part.strip() for part in text.split(","))):
        mib, sep, layers = case.partition(":")
        if not (sep and mib.isdigit() and layers.isdigit() and int(mib) > 0 and int(layers) > 0):
            raise argparse.ArgumentTypeError(
                f"{case!r} is not MIB:LAYERS with two positive whole numbers (e.g. 256:4)"
            )
        cases.append((int(mib), int(layers)))
    return cases


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--large",
        type=large_cases,
        default="256:4,1024:8",
        help="large images as MIB:LAYERS, comma-separated (default 256:4,1024:8; '' for none)",
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
    cases: list[tuple[int, int]] = args.large
    with tempfile.TemporaryDirectory(prefix="ksim-bench-") as tmp:
        work = Path(tmp)
        as_installed(work / "pycache")
        registry = RegistryProcess(RegistryConfig(storage_dir=work / "registry"), work).start()
        try:
            lines = [
                f"median of {args.runs} runs each, fresh root/folder per run; ratios are "
                "kubelet-sim / peer"
            ]
            for number, (mib, layers) in enumerate(cases):
                lines.extend(large_case(work, registry.host, number, mib, layers, args.runs))
            if args.small:  # none: skopeo sync would fail on the empty repository (404)
                lines.extend(small_case(work, registry.host, args))
            print("\n".join(lines))
        finally:
            registry.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
