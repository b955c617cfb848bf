"""Hostile registries with the DEFAULT transport settings: how long a pull is held, and what it says.

Measures, with ``TransportSettings()`` as shipped (no injected deadlines):

- ``never-answering``: seconds until a pull from a registry that accepts TCP and never answers fails;
- ``dripping-manifest``: seconds until a pull whose manifest arrives 1 byte per 5 s fails;
- ``dead-mirror`` / ``503-mirror``: seconds a hosts.toml mirror that refuses connections, or answers
  every request with ``503`` (``Retry-After: 5``), adds to a pull of a 3-layer image from a real
  distribution registry (median of ``--runs`` pulls, against the same pull without the mirror).

The hostile hosts are :mod:`kubelet_sim.testing.hostile` servers on loopback; the registry is the
real ``docker-registry`` started with :class:`~kubelet_sim.sim.registry.RegistryProcess`. Run it by
hand (about 1.5 minutes, most of it waiting for the two hostile cases to fail):

    .venv/bin/python benchmarks/hostile_registry.py [--runs 5] [--cases never,drip,mirrors]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

from kubelet_sim.cli.main import configure_logging
from kubelet_sim.core.reference import ImageReference, parse_normalized
from kubelet_sim.core.sinks import BlobSink, MemorySink
from kubelet_sim.errors import RegistryError
from kubelet_sim.registry import mediatypes as mt
from kubelet_sim.registry.client import RegistryClient
from kubelet_sim.registry.manifests import Descriptor
from kubelet_sim.registry.transport import Transport, TransportSettings
from kubelet_sim.sim.images import build_image
from kubelet_sim.sim.registry import RegistryConfig, RegistryProcess
from kubelet_sim.sim.seed import push_image
from kubelet_sim.testing.hostile import (
    answer,
    by_path,
    drip,
    never_answer,
    refusing_port,
    serve,
)

IMAGE = build_image("hostile-bench", "linux/amd64", (256 * 1024, 256 * 1024, 256 * 1024))
CAP = 400.0  # seconds: a measurement that reaches it is reported as "> CAP"


async def pull(client: RegistryClient, ref: ImageReference) -> None:
    async def sink_for(desc: Descriptor) -> BlobSink:
        return MemorySink(desc.digest.algorithm)

    await client.pull(ref, sink_for)


async def time_failure(run: Callable[[], Awaitable[object]]) -> tuple[float, str]:
    """Seconds until ``run`` fails, and what it said (or that it did not fail / hit the cap)."""
    started = time.perf_counter()
    outcome = "succeeded (unexpected)"
    with anyio.move_on_after(CAP):
        try:
            await run()
        except RegistryError as exc:
            outcome = f"{type(exc).__name__}: {exc}"
    elapsed = time.perf_counter() - started
    return elapsed, outcome if elapsed < CAP else f"still running at the {CAP:g}s cap"


async def never_answering() -> tuple[float, str]:
    async with (
        serve(never_answer(), lifetime=CAP) as server,
        RegistryClient(Transport(settings=TransportSettings())) as client,
    ):
        return await time_failure(lambda: pull(client, parse_normalized(f"{server.host}/a/b:v1")))


async def dripping_manifest() -> tuple[float, str]:
    manifest = IMAGE.manifest
    headers = {"Content-Type": mt.OCI_MANIFEST, "Docker-Content-Digest": str(manifest.digest)}
    behaviour = by_path(
        [("HEAD", "/manifests/", answer(200, manifest.data, headers))],
        drip(manifest.data, interval=5.0, headers={"Content-Type": mt.OCI_MANIFEST}),
    )
    async with (
        serve(behaviour, lifetime=CAP) as server,
        RegistryClient(Transport(settings=TransportSettings())) as client,
    ):
        return await time_failure(lambda: pull(client, parse_normalized(f"{server.host}/a/b:v1")))


def write_hosts(root: Path, registry: str, mirror: str | None) -> Path:
    folder = root / registry
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f'server = "http://{registry}"']
    if mirror is not None:
        lines += [f'[host."http://{mirror}"]', '  capabilities = ["pull", "resolve"]']
    (folder / "hosts.toml").write_text("\n".join(lines) + "\n")
    return root


async def median_pull(hosts: Path, ref: ImageReference, runs: int) -> float:
    times = []
    for _ in range(runs):
        async with RegistryClient(Transport(settings=TransportSettings()), hosts_dir=hosts) as c:
            started = time.perf_counter()
            with anyio.fail_after(CAP):
                await pull(c, ref)
            times.append(time.perf_counter() - started)
    return statistics.median(times)


async def mirrors(registry: RegistryProcess, work: Path, runs: int) -> dict[str, float]:
    ref = parse_normalized(f"{registry.host}/bench/hostile:v1")
    async with RegistryClient() as client:
        await push_image(client, ref, IMAGE)
    base = await median_pull(write_hosts(work / "plain.d", registry.host, None), ref, runs)
    with refusing_port() as port:
        hosts = write_hosts(work / "dead.d", registry.host, f"127.0.0.1:{port}")
        dead = await median_pull(hosts, ref, runs)
    async with serve(answer(503, b"", {"Retry-After": "5"})) as unavailable:
        hosts = write_hosts(work / "503.d", registry.host, unavailable.host)
        busy = await median_pull(hosts, ref, runs)
        asked = unavailable.count() / runs
    return {"base": base, "dead": dead - base, "503": busy - base, "503-asked": asked}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5, help="pulls per mirror case (median)")
    parser.add_argument("--cases", default="never,drip,mirrors", help="comma-separated subset")
    args = parser.parse_args()
    cases = set(args.cases.split(","))
    configure_logging("error")
    settings = TransportSettings()
    print(
        f"defaults: connect {settings.connect_timeout:g}s, response headers "
        f"{settings.header_timeout:g}s, stall {settings.stall_timeout:g}s, request deadline "
        f"{settings.request_deadline:g}s, {settings.max_attempts} attempts"
    )
    if "never" in cases:
        seconds, said = anyio.run(never_answering)
        print(f"never-answering host   fails after {seconds:7.2f}s  {said}")
    if "drip" in cases:
        seconds, said = anyio.run(dripping_manifest)
        print(f"dripping manifest      fails after {seconds:7.2f}s  {said}")
    if "mirrors" in cases:
        with tempfile.TemporaryDirectory(prefix="ksim-hostile-") as tmp:
            work = Path(tmp)
            registry = RegistryProcess(RegistryConfig(storage_dir=work / "registry"), work).start()
            try:
                figures = anyio.run(mirrors, registry, work, args.runs)
            finally:
                registry.stop()
        print(f"3-layer pull, no mirror       {figures['base']:7.3f}s (median of {args.runs})")
        print(f"dead mirror adds              {figures['dead']:7.3f}s")
        print(
            f"503 mirror adds               {figures['503']:7.3f}s "
            f"({figures['503-asked']:g} requests to the mirror per pull)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
