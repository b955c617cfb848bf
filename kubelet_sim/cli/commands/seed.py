"""``kubelet-sim seed WORKLOAD``: build a workload's synthetic images and push them (idempotent).

With ``--registry HOST:PORT`` the images go to that registry; otherwise a local distribution
registry is started on loopback for the command (keep its storage with ``--registry-dir`` so a
later ``kubelet-sim bench --registry-dir`` finds the images already there). Blobs the registry has
are skipped, so seeding again uploads nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
from rich.console import Console

from kubelet_sim.sim.faultproxy import loopback_address, split_host_port
from kubelet_sim.sim.registry import RegistryConfig, RegistryProcess


def add_registry_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--registry", metavar="HOST:PORT", help="use this registry (default: start a local one)"
    )
    group.add_argument(
        "--registry-dir",
        type=Path,
        metavar="DIR",
        help="start the local registry with its storage in DIR, kept between runs",
    )
    parser.add_argument(
        "--allow-remote-registry",
        action="store_true",
        help="let --registry name a host that is not loopback (you are load-testing it)",
    )
    parser.add_argument(
        "--docker-config",
        type=Path,
        metavar="FILE",
        help="push with this config.json's credentials for the registry (default: the "
        "workload's first pull secret, if any)",
    )


@contextmanager
def registry_for(args: argparse.Namespace, console: Console) -> Iterator[str]:
    """The registry ``HOST:PORT`` to use: ``--registry``, or a local one for the command."""
    if args.registry:
        host, _ = split_host_port(args.registry, "--registry")
        if not args.allow_remote_registry:
            loopback_address(host, "--registry")  # no load on other hosts by accident
        yield args.registry
        return
    with tempfile.TemporaryDirectory(prefix="kubelet-sim-registry-") as tmp:
        storage = args.registry_dir or Path(tmp)
        registry = RegistryProcess(RegistryConfig(storage_dir=storage / "storage"), storage)
        registry.start()
        try:
            console.print(
                f"local distribution registry on http://{registry.host} (storage {storage})"
            )
            yield registry.host
        finally:
            registry.stop()


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "seed", help="build a workload's synthetic images and push them (skips existing blobs)"
    )
    parser.add_argument("workload", type=Path, help="workload file (YAML)")
    add_registry_args(parser)
    parser.add_argument("--output", choices=["text", "json"], default="text")
    parser.set_defaults(func=_seed)


def _seed(args: argparse.Namespace) -> int:
    from kubelet_sim.workloads import BuiltImage, SeedReport, load_workload, seed_workload
    from kubelet_sim.workloads.target import push_credentials

    workload = load_workload(args.workload)
    console = Console(stderr=args.output == "json", width=None if sys.stdout.isatty() else 160)

    def on_image(built: BuiltImage, report: SeedReport) -> None:
        if args.output == "text":
            console.print(
                f"  {built.reference}  ({len(built.images)} platform(s))", highlight=False
            )

    with registry_for(args, console) as host:
        creds = push_credentials(workload, host, args.docker_config)
        report = anyio.run(lambda: seed_workload(workload, host, on_image=on_image, creds=creds))
    summary = {"workload": workload.name, "registry": host, **report.to_dict()}
    if args.output == "json":
        print(json.dumps(summary, indent=2))
    else:
        console.print(
            f"seeded {report.images} images to {host} in {report.seconds:.1f}s: "
            f"{report.blobs_uploaded} blobs uploaded ({report.bytes_uploaded:,} bytes), "
            f"{report.blobs_skipped} already there, {report.blobs_mounted} mounted"
        )
    return 0
