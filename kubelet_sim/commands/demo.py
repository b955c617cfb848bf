"""``kubelet-sim demo``: the main job on a built-in default, end to end on this machine.

Starts the real distribution registry on a loopback port, seeds it with synthetic multi-arch images
through the project's own push client, then runs a node (the real engine and store) with
``config/kubelet.yaml`` over a handful of pods that show the interesting cases: a multi-arch image
with an init container, an ``Always`` image, a bad name, ``Never`` with an absent image, and a
missing tag that ends in ``ImagePullBackOff``. It prints container states, events, the node's
images and a few metrics, runs the pods again on the same store to show the cache, and stops
everything cleanly.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import anyio
from prometheus_client import CollectorRegistry
from rich.console import Console
from rich.table import Table

from kubelet_sim.config import KubeletConfiguration, load_kubelet_config
from kubelet_sim.digest import short_digest
from kubelet_sim.engine.engine import EngineSettings, PodSpec
from kubelet_sim.engine.node import Node
from kubelet_sim.engine.runtime import ImageService
from kubelet_sim.engine.types import ContainerKind, PodRef, PullRequest
from kubelet_sim.events import EventRecorder
from kubelet_sim.metrics import PullMetrics
from kubelet_sim.platforms import Platform, host_platform, parse_platform
from kubelet_sim.policy import PullPolicy, default_pull_policy
from kubelet_sim.registry.client import RegistryClient
from kubelet_sim.store import ImageRecord, Store
from kubelet_sim.testing.images import build_image, build_multiarch
from kubelet_sim.testing.registry import RegistryConfig, RegistryProcess
from kubelet_sim.testing.seed import push_image, push_index

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "config" / "kubelet.yaml"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "demo", help="run the built-in demo: local registry, synthetic images, a node, pods"
    )
    parser.add_argument(
        "--config", type=Path, help="KubeletConfiguration (default: config/kubelet.yaml)"
    )
    parser.add_argument("--workdir", type=Path, help="keep registry and store here (default: temp)")
    parser.add_argument("--platform", help="node platform (default: this host)")
    parser.add_argument("--seconds", type=float, default=25.0, help="how long pods may sync")
    parser.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    console = Console(width=None if sys.stdout.isatty() else 160)
    config_path = args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
    config = load_kubelet_config(config_path) if config_path else KubeletConfiguration.default()
    platform = parse_platform(args.platform) if args.platform else host_platform()
    with tempfile.TemporaryDirectory(prefix="kubelet-sim-demo-") as tmp:
        workdir = args.workdir or Path(tmp)
        registry = RegistryProcess(RegistryConfig(storage_dir=workdir / "registry"), workdir)
        console.rule("[bold]1. Registry")
        registry.start()
        try:
            console.print(f"distribution registry on http://{registry.host} (storage {workdir})")
            anyio.run(_seed, registry.host, console)
            console.rule(f"[bold]2. Node ({platform}) with {config_path or 'default config'}")
            anyio.run(_run_node, registry.host, workdir / "store", config, platform, args, console)
        finally:
            registry.stop()
    console.rule("[bold]Done")
    return 0


async def _seed(host: str, console: Console) -> None:
    started = time.monotonic()
    async with RegistryClient() as client:
        web = build_multiarch("demo-web", layer_sizes=(200_000, 600_000, 1_200_000))
        await push_index(client, f"{host}/demo/web:1.0", web)
        init = build_multiarch("demo-init", layer_sizes=(50_000,))
        await push_index(client, f"{host}/demo/init:1.0", init)
        api = build_image("demo-api", str(host_platform()), (300_000, 300_000))
        await push_image(client, f"{host}/demo/api:latest", api)
    console.print(
        f"seeded demo/web:1.0 and demo/init:1.0 ({', '.join(i.platform_string for i in web.images)}) "
        f"and demo/api:latest in {time.monotonic() - started:.1f}s"
    )


def demo_pods(host: str) -> list[PodSpec]:
    """The demo's pods; each shows one behaviour of the image manager."""

    def pod(name: str, images: list[tuple[str, str, PullPolicy | None]], init: str = "") -> PodSpec:
        ref = PodRef("demo", name, f"demo-{name}")

        def req(
            container: str, image: str, policy: PullPolicy | None, kind: ContainerKind
        ) -> PullRequest:
            return PullRequest(
                ref, container, image, policy or default_pull_policy(image), kind=kind
            )

        return PodSpec(
            ref,
            init_containers=(req("init", init, None, ContainerKind.INIT),) if init else (),
            containers=tuple(req(c, i, p, ContainerKind.APP) for c, i, p in images),
        )

    return [
        pod("web", [("web", f"{host}/demo/web:1.0", None)], init=f"{host}/demo/init:1.0"),
        pod("api", [("api", f"{host}/demo/api:latest", None)]),
        pod("bad-name", [("app", f"{host}/Demo/UPPER:case", None)]),
        pod("never", [("app", f"{host}/demo/not-here:1.0", PullPolicy.NEVER)]),
        pod("missing", [("app", f"{host}/demo/web:does-not-exist", None)]),
    ]


async def _run_node(
    host: str,
    root: Path,
    config: KubeletConfiguration,
    platform: Platform,
    args: argparse.Namespace,
    console: Console,
) -> None:
    for round_no in (1, 2):
        registry = CollectorRegistry()
        metrics = PullMetrics(registry)
        recorder = EventRecorder()
        async with await Store.open(root) as store, RegistryClient() as client:
            client.transport.observer = metrics
            service = ImageService(
                client, store, platform=platform, bytes_observer=metrics.bytes_pulled
            )
            node = Node.build(
                config, service, recorder, metrics, settings=EngineSettings(resync_period=2.0)
            )
            pods = demo_pods(host)
            started = anyio.current_time()
            async with node.running():
                for spec in pods:
                    await node.engine.submit(spec)
                with anyio.move_on_after(args.seconds if round_no == 1 else 6):
                    for spec in pods[:2]:
                        await node.engine.wait_ready(spec.ref.uid)
                    await anyio.sleep(6)  # let the failing pods show their backoff
            elapsed = anyio.current_time() - started
            console.print(f"[bold]round {round_no}[/bold]: {elapsed:.1f}s")
            _print_states(console, node)
            _print_events(console, recorder)
            if round_no == 1:
                _print_images(console, await store.list_images())
            _print_metrics(console, registry)


def _print_states(console: Console, node: Node) -> None:
    table = Table(title="containers", show_lines=False)
    for column in ("pod", "container", "state", "reason", "attempts", "image id / message"):
        table.add_column(column, overflow="fold")
    for state in node.engine.pods():
        for c in state.containers.values():
            detail = short_digest(c.image_id) if c.ready else c.message
            table.add_row(
                str(state.spec.ref), c.container, str(c.phase), c.reason, str(c.attempts), detail
            )
    console.print(table)


def _print_events(console: Console, recorder: EventRecorder) -> None:
    table = Table(title="events (kubectl get events)")
    for column in ("type", "reason", "object", "count", "message"):
        table.add_column(column, overflow="fold")
    for e in recorder.events():
        obj = f"{e.involved_object.name}/{e.involved_object.field_path}"
        table.add_row(str(e.type), str(e.reason), obj, str(e.count), e.message)
    console.print(table)


def _print_images(console: Console, images: Sequence[ImageRecord]) -> None:
    table = Table(title="node images (crictl images)")
    for column in ("repository:tag", "image id", "platform", "size"):
        table.add_column(column)
    for image in images:
        tags = ", ".join(image.repo_tags) or "<none>"
        table.add_row(tags, short_digest(image.image_id), image.platform, f"{image.size:,}")
    console.print(table)


def _print_metrics(console: Console, registry: CollectorRegistry) -> None:
    sample = registry.get_sample_value
    rows = [
        (
            "pulls (kubelet_runtime_operations_total)",
            sample("kubelet_runtime_operations_total", {"operation_type": "pull_image"}),
        ),
        (
            "pull errors",
            sample("kubelet_runtime_operations_errors_total", {"operation_type": "pull_image"}),
        ),
        ("bytes pulled", sample("kubelet_sim_pull_bytes_total")),
        ("cache hits", sample("kubelet_sim_image_cache_hits_total")),
    ]
    console.print("metrics: " + ", ".join(f"{name}={int(value or 0)}" for name, value in rows))
