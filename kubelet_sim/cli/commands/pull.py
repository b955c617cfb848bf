"""``kubelet-sim pull IMAGE``: one ``EnsureImageExists`` through the real engine and store.

Prints what the kubelet would record (events) and what the runtime now holds; ``--output json``
gives the keys ``image, ref, repo_digest, manifest_digest, image_id, platform, size, pulled,
events`` (and ``reason``/``message`` with exit status 1 on failure). On a terminal each layer gets a
progress bar (bytes, rate, ETA).

Node credentials: ``--docker-config PATH`` reads a ``config.json`` (or a ``.dockercfg``, or a folder
holding one) instead of the kubelet's search paths; ``--image-credential-provider-config`` and
``--image-credential-provider-bin-dir`` add exec credential provider plugins, as the kubelet's flags.
Without these the pull is anonymous.

``--max-concurrent-downloads N`` (containerd's ``max_concurrent_downloads``, ``ctr pull``'s flag)
downloads up to N layers of the image at once; the default is containerd's 3.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from kubelet_sim.cli.args import add_root
from kubelet_sim.config.kubelet import KubeletConfiguration, load_kubelet_config
from kubelet_sim.core.digest import short_digest
from kubelet_sim.core.platforms import Platform, host_platform, parse_platform
from kubelet_sim.core.pods import PodRef, PullRequest
from kubelet_sim.core.policy import PullPolicy, default_pull_policy, parse_pull_policy
from kubelet_sim.core.reference import parse_normalized
from kubelet_sim.credentials import DockerConfigSearch
from kubelet_sim.engine.ports import ProgressFn
from kubelet_sim.errors import ConfigError, InvalidImageNameError
from kubelet_sim.node.builder import NodeOptions, NodeParts, open_node
from kubelet_sim.node.paths import NodePaths
from kubelet_sim.registry.client import ClientSettings
from kubelet_sim.registry.transport import TransportSettings
from kubelet_sim.telemetry.events import EventRecorder

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("pull", help="ensure one image exists, as the kubelet would")
    parser.add_argument("image")
    add_root(parser)
    parser.add_argument("--platform", help="node platform os/arch[/variant] (default: this host)")
    parser.add_argument("--policy", help="Always, IfNotPresent or Never (default: by tag)")
    parser.add_argument("--config", type=Path, help="KubeletConfiguration YAML")
    parser.add_argument("--hosts-dir", type=Path, help="containerd hosts.toml folder (certs.d)")
    parser.add_argument("--runtime-handler", default="", help="runtime handler (RuntimeClass)")
    parser.add_argument("--output", choices=["json", "text"], default="text")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--max-concurrent-downloads",
        type=_download_count,
        default=ClientSettings().max_concurrent_downloads,
        metavar="N",
        help="layers downloaded at once (default: %(default)s, containerd's; ctr's flag)",
    )
    parser.add_argument(
        "--docker-config",
        type=Path,
        help="node credentials: a docker config.json / .dockercfg file (or a folder holding one)",
    )
    parser.add_argument(
        "--image-credential-provider-config",
        type=Path,
        help="CredentialProviderConfig file or folder (exec credential provider plugins)",
    )
    parser.add_argument(
        "--image-credential-provider-bin-dir",
        type=Path,
        help="folder holding the credential provider plugin executables",
    )
    parser.set_defaults(func=_pull, exit_at_once=True)


def _download_count(text: str) -> int:
    """Layers at once: 1 up to the connections a node keeps to registries (more would wait for
    a connection, then time out); argparse names the flag when this refuses ``text``."""
    most = TransportSettings().max_connections
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= most:
        raise argparse.ArgumentTypeError(f"want a whole number from 1 to {most}, got {text!r}")
    return value


def _node_options(args: argparse.Namespace, platform: Platform) -> NodeOptions:
    """The node's flags; node credentials only from ``--docker-config`` and provider plugins."""
    if args.docker_config is not None and not args.docker_config.exists():
        raise ConfigError(str(args.docker_config), "--docker-config", "no such file or folder")
    return NodeOptions(
        platform=platform,
        hosts_dir=args.hosts_dir,
        docker_config=DockerConfigSearch.only(args.docker_config) if args.docker_config else None,
        node_docker_config=args.docker_config is not None,
        image_credential_provider_config=args.image_credential_provider_config,
        image_credential_provider_bin_dir=args.image_credential_provider_bin_dir,
        containers=False,  # a one-shot pull starts no container
        client=ClientSettings(max_concurrent_downloads=args.max_concurrent_downloads),
    )


def _pull(args: argparse.Namespace) -> int:
    config = load_kubelet_config(args.config) if args.config else KubeletConfiguration.default()
    policy = parse_pull_policy(args.policy) if args.policy else default_pull_policy(args.image)
    platform = parse_platform(args.platform) if args.platform else host_platform()
    show_progress = sys.stderr.isatty() and not args.no_progress and args.output == "text"
    options = _node_options(args, platform)
    result = anyio.run(_run, args, config, policy, options, show_progress)
    if args.output == "json":
        print(json.dumps(result, indent=2))
    else:
        for event in result["events"]:
            print(f"{event['type']:<8} {event['reason']:<18} {event['message']}")
        if "reason" in result:
            print(f"{result['reason']}: {result['message']}", file=sys.stderr)
        else:
            print(
                f"{result['ref']}  {short_digest(result['image_id'])}  {result['platform']}  "
                f"{result['size']} bytes  {'pulled' if result['pulled'] else 'present'}"
            )
    return 1 if "reason" in result else 0


async def _run(
    args: argparse.Namespace,
    config: KubeletConfiguration,
    policy: PullPolicy,
    options: NodeOptions,
    show_progress: bool,
) -> dict[str, Any]:
    recorder = EventRecorder()
    with _progress(show_progress) as progress:
        parts = NodeParts(recorder=recorder, progress=progress)
        async with open_node(config, NodePaths(args.root), options, parts) as node:
            assert node.store is not None
            request = PullRequest(
                pod=PodRef("default", "kubelet-sim-pull", "kubelet-sim-pull"),
                container="pull",
                image=args.image,
                policy=policy,
                runtime_handler=args.runtime_handler,
            )
            async with node.running():
                outcome = await node.manager.ensure_image(request)
            record = (
                await node.store.lookup(outcome.image_ref, args.runtime_handler)
                if outcome.ok
                else None
            )
    events = [
        {"type": str(e.type), "reason": str(e.reason), "message": e.message, "count": e.count}
        for e in recorder.events()
    ]
    result: dict[str, Any] = {"image": args.image, "events": events}
    try:
        result["ref"] = str(parse_normalized(args.image).with_default_tag())
    except InvalidImageNameError:
        result["ref"] = None  # reported through reason and message
    if not outcome.ok or record is None:
        result["reason"] = str(outcome.reason)
        result["message"] = outcome.message
        return result
    result.update(
        repo_digest=outcome.repo_digest,
        manifest_digest=str(record.manifest_digest),
        image_id=record.image_id,
        platform=record.platform,
        size=record.size,
        pulled=outcome.pulled is not None,
    )
    return result


@contextmanager
def _progress(enabled: bool) -> Iterator[ProgressFn | None]:
    if not enabled:
        with nullcontext():
            yield None
        return
    from rich.console import Console  # only for the bars: a --output json pull never loads rich

    bars, on_progress = progress_bars(Console(stderr=True))
    with bars:
        yield on_progress


def progress_bars(console: Console) -> tuple[Progress, ProgressFn]:
    """One bar per blob: bytes, live rate and time left, all in decimal units as crictl prints.

    The registry client reports a blob's progress at least 20 times a second while bytes
    arrive, so the rate is live from the first report, not ``?`` until the blob ends.
    """
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=False),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        speed_estimate_period=5.0,
    )
    tasks: dict[str, TaskID] = {}

    def on_progress(image: str, desc: Any, received: int) -> None:
        key = str(desc.digest)
        if key not in tasks:
            tasks[key] = bars.add_task(short_digest(key), total=desc.size)
        bars.update(tasks[key], completed=received)

    return bars, on_progress
