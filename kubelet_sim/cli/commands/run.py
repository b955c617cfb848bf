"""``kubelet-sim run``: the long-running node agent driven by a KubeletConfiguration."""

from __future__ import annotations

import argparse
import dataclasses
import re
import signal
from pathlib import Path

import anyio
import structlog

from kubelet_sim.cli.args import add_root
from kubelet_sim.cli.main import configure_logging
from kubelet_sim.config.kubelet import load_kubelet_config
from kubelet_sim.config.runtimes import load_runtimes
from kubelet_sim.core.platforms import parse_platform
from kubelet_sim.core.reference import parse_normalized
from kubelet_sim.errors import ConfigError, InvalidImageNameError, KubeletSimError, first_error
from kubelet_sim.k8s.admission import parse_admission_plugins
from kubelet_sim.node.daemon import (
    Daemon,
    DaemonOptions,
    parse_node_labels,
    raise_open_file_limit,
)
from kubelet_sim.node.httpserver import parse_listen

log = structlog.get_logger(__name__)

_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("run", help="run the node agent (static pods, HTTP API, /metrics)")
    parser.add_argument("--config", type=Path, required=True, help="KubeletConfiguration YAML")
    add_root(parser)
    parser.add_argument("--listen", default="127.0.0.1:10255", help="API address HOST:PORT")
    parser.add_argument("--hosts-dir", type=Path, help="containerd hosts.toml folder (certs.d)")
    parser.add_argument("--node-platform", help="os/arch[/variant] of the simulated node")
    parser.add_argument(
        "--pinned-image",
        action="append",
        default=[],
        metavar="IMAGE",
        help="an image image GC never frees (repeatable), as containerd pins its sandbox image",
    )
    parser.add_argument(
        "--hostname-override",
        metavar="NAME",
        help="the node's name (default: this host's name, lower-cased); static pods are named "
        "NAME-NODENAME",
    )
    parser.add_argument("--image-credential-provider-config", type=Path)
    parser.add_argument("--image-credential-provider-bin-dir", type=Path)
    parser.add_argument(
        "--enable-admission-plugins",
        action="append",
        default=[],
        metavar="NAMES",
        help="admission plugins to turn on, comma-separated, as kube-apiserver's flag: "
        "AlwaysPullImages (ServiceAccount and RuntimeClass are always on)",
    )
    parser.add_argument(
        "--runtime-config",
        type=Path,
        metavar="FILE",
        help="containerd-style config.toml naming the node's runtime handlers "
        "(default: sim, the default handler, and runc)",
    )
    parser.add_argument(
        "--node-labels",
        action="append",
        default=[],
        metavar="K=V,...",
        help="labels of the node besides kubernetes.io/hostname, os and arch (the kubelet's "
        "flag); RuntimeClass nodeSelectors must match them",
    )
    parser.add_argument(
        "--log-format",
        choices=["auto", "json", "console"],
        default="auto",
        help="JSON lines off a terminal, readable console output on one (default: auto)",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.log_format != "auto":
        configure_logging(args.log_level, json_lines=args.log_format == "json")
    elif args.log_level == "warning":
        configure_logging("info")  # a daemon says what it does unless told otherwise
    host, port = parse_listen(args.listen)
    config = load_kubelet_config(args.config)
    if config.strict_errors:
        # kubeletconfig/util/codec: "Using lenient decoding as strict decoding failed"
        log.warning(
            "kubelet_config.lenient_decoding",
            file=str(args.config),
            reason="strict decoding failed; unknown fields dropped, the last duplicate key wins",
            errors=list(config.strict_errors),
        )
    options = DaemonOptions(
        config=config,
        root=args.root,
        listen_host=host,
        listen_port=port,
        hosts_dir=args.hosts_dir,
        node_platform=parse_platform(args.node_platform) if args.node_platform else None,
        image_credential_provider_config=args.image_credential_provider_config,
        image_credential_provider_bin_dir=args.image_credential_provider_bin_dir,
        pinned_images=tuple(_pinned(ref) for ref in args.pinned_image),
        admission_plugins=parse_admission_plugins(
            args.enable_admission_plugins, field="--enable-admission-plugins"
        ),
        runtimes=load_runtimes(args.runtime_config) if args.runtime_config else None,
        node_labels=parse_node_labels(args.node_labels, field="--node-labels"),
    )
    if args.hostname_override:
        options = dataclasses.replace(options, node_name=_node_name(args.hostname_override))
    before, after = raise_open_file_limit()
    log.info("daemon.file_limit", soft_before=before, soft=after)
    try:
        anyio.run(_serve, options)
    except BaseExceptionGroup as group:
        _raise_startup_error(first_error(group))
    except OSError as exc:
        _raise_startup_error(exc)
    return 0


def _pinned(value: str) -> str:
    """A ``--pinned-image`` as the store names images (normalised, default tag).

    Raises:
        ConfigError: not an image reference.
    """
    try:
        return str(parse_normalized(value).with_default_tag())
    except InvalidImageNameError as exc:
        raise ConfigError(None, "--pinned-image", f"{value!r}: {exc.message}") from None


def _node_name(value: str) -> str:
    """``--hostname-override``, lower-cased and trimmed as the kubelet's ``GetHostname``.

    Raises:
        ConfigError: empty, or not a DNS-1123 subdomain.
    """
    name = value.strip().lower()
    if not _SUBDOMAIN.fullmatch(name) or len(name) > 253:
        raise ConfigError(None, "--hostname-override", f"not a valid node name: {value!r}")
    return name


def _raise_startup_error(exc: BaseException) -> None:
    """Report a failed start (port taken, store locked, bad provider config) in one line."""
    if isinstance(exc, KubeletSimError):
        raise exc from None
    if isinstance(exc, OSError):
        raise KubeletSimError(f"cannot start the daemon: {exc.strerror or exc}") from None
    raise exc


async def _serve(options: DaemonOptions) -> None:
    daemon = Daemon(options)
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with anyio.create_task_group() as tg:
            await tg.start(daemon.run)
            async for received in signals:
                log.info("daemon.signal", signal=signal.Signals(received).name)
                tg.cancel_scope.cancel()
                break
