"""``kubelet-sim explain image IMAGE``: would a kubelet pull this image here, and if not, why.

A preflight (:mod:`kubelet_sim.node.preflight`): it resolves the image through the mirrors of
``--hosts-dir`` in order, tries each matching credential (``--secret`` files as the pod's pull
secrets, then ``--docker-config`` as the node's), chooses the platform and HEADs every layer,
without downloading any. It prints each step, each host tried with its answer and duration, and
a verdict with the fix; ``--output json`` for scripts. Exit status 0 when the pull would work,
1 when it would not (2 for bad arguments).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
from pathlib import Path
from typing import Any

import anyio

from kubelet_sim.cli.daemonapi import (
    DEFAULT_SERVER,
    daemon_client,
    get_json,
    host_line,
    waiting_line,
)
from kubelet_sim.config.kubelet import load_kubelet_config
from kubelet_sim.core.platforms import host_platform, parse_platform
from kubelet_sim.credentials.dockerconfig import read_docker_config_file
from kubelet_sim.credentials.keyring import SecretSource
from kubelet_sim.credentials.secrets import docker_config_of
from kubelet_sim.errors import ConfigError, KubeletSimError
from kubelet_sim.k8s import Secret, parse_manifests
from kubelet_sim.k8s.objects import DEFAULT_NAMESPACE
from kubelet_sim.node.preflight import CredentialSource, Preflight, preflight


def register(subparsers: Any) -> None:
    """Add the ``explain`` subcommand."""
    parser = subparsers.add_parser(
        "explain",
        help="explain whether and why an image would pull here (a preflight, no layers fetched)",
        description=(
            "explain image IMAGE: resolve through the mirrors, check every credential, choose "
            "the platform and check the layers exist, as a kubelet's pull would, without "
            "downloading a layer; then say whether the pull would work and what to fix."
        ),
    )
    sub = parser.add_subparsers(dest="what", metavar="WHAT", required=True)
    pod = sub.add_parser(
        "pod",
        help="explain a pod's image pulls on a running daemon",
        description=(
            "explain pod NAMESPACE/NAME: from a running daemon, each container's image pull "
            "step by step (policy, presence, credentials, the puller's queue and QPS, the last "
            "pulls with every host asked, the backoff) and a verdict with the fix."
        ),
    )
    pod.add_argument("target", metavar="NAMESPACE/NAME")
    pod.add_argument("--server", default=DEFAULT_SERVER, help="daemon API URL")
    pod.add_argument("--output", "-o", choices=["text", "json"], default="text")
    pod.set_defaults(func=run_pod)
    image = sub.add_parser("image", help="preflight one image")
    image.add_argument("image", metavar="IMAGE")
    image.add_argument("--platform", help="node platform os/arch[/variant] (default: this host)")
    image.add_argument("--hosts-dir", type=Path, help="containerd certs.d folder (hosts.toml)")
    image.add_argument(
        "--docker-config",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="a node config.json (repeatable; tried after the secrets, as the kubelet does)",
    )
    image.add_argument(
        "--secret",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="a docker-registry Secret manifest, as the pod's pull secret (repeatable)",
    )
    image.add_argument(
        "--namespace",
        "-n",
        default=DEFAULT_NAMESPACE,
        help="the pod's namespace: secrets of other namespaces cannot be used (default: default)",
    )
    image.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="the node's KubeletConfiguration: its pull settings (serial or parallel, QPS) are "
        "reported with the verdict",
    )
    image.add_argument(
        "--timeout",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="give up on a registry that does not answer after this long (default 30)",
    )
    image.add_argument("--output", "-o", choices=["text", "json"], default="text")
    image.set_defaults(func=run)


def _sources(args: argparse.Namespace, notes: list[str]) -> list[CredentialSource]:
    """Pull secrets first, then the node's docker config, as the kubelet's keyring orders them.

    Raises:
        ConfigError: a file that does not parse (never quoting a secret's data).
    """
    out: list[CredentialSource] = []
    for file in args.secret:
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise ConfigError(str(file), None, exc.strerror or "cannot be read") from None
        for manifest in parse_manifests(data, source=str(file)):
            secret = manifest.object
            if not isinstance(secret, Secret):
                notes.append(f"{file}: {secret.kind} {secret.name} is not a Secret; ignored")
                continue
            label = f"secret {secret.namespace}/{secret.name}"
            if secret.namespace != args.namespace:
                notes.append(
                    f"the {label} is in namespace {secret.namespace}; a pod in "
                    f"{args.namespace} can only use secrets of its own namespace"
                )
                continue
            entries = docker_config_of(secret)
            if entries is None:
                notes.append(f"the {label} is of type {secret.type}, not a docker-registry one")
                continue
            source = SecretSource(secret.namespace, secret.name, secret.uid)
            out.append(CredentialSource(label, entries, source))
    for file in args.docker_config:
        try:
            entries = read_docker_config_file(file)
        except OSError as exc:
            raise ConfigError(str(file), None, exc.strerror or "cannot be read") from None
        out.append(CredentialSource(f"docker config {file}", entries))
    return out


def _print(report: Preflight, notes: list[str]) -> None:
    print(f"image: {report.image}")
    for note in notes:
        print(f"  note: {note}")
    for name, text in report.steps:
        print(f"  {name}: {text}")
    if report.attempts:
        print("requests:")
        for a in report.attempts:
            print(
                f"  {a.step:<8} {a.role:<8} {a.host:<28} {a.credential:<40} "
                f"{a.seconds * 1000:7.1f} ms  {a.outcome}"
            )
    print(f"verdict: {'pulls' if report.pulls else report.reason}: {report.verdict}")
    if report.fix:
        print(f"fix: {report.fix}")
    if report.pulls:
        print(
            f"cost: {report.bytes} bytes; this preflight made {report.requests} requests (a pull "
            "makes as many, with a GET where it HEADs a layer)"
        )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"want a positive number of seconds, got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    notes: list[str] = []
    sources = _sources(args, notes)
    platform = parse_platform(args.platform) if args.platform else host_platform()
    config = load_kubelet_config(args.config) if args.config is not None else None
    report = anyio.run(
        lambda: preflight(
            args.image,
            platform=platform,
            hosts_dir=args.hosts_dir,
            sources=sources,
            timeout=args.timeout,
            config=config,
        )
    )
    if args.output == "json":
        print(json.dumps({**report.to_json(), "notes": notes}, indent=2))
    else:
        _print(report, notes)
    sys.stdout.flush()
    return 0 if report.pulls else 1


def run_pod(args: argparse.Namespace) -> int:
    namespace, sep, name = args.target.partition("/")
    if not sep or not namespace or not name:
        raise KubeletSimError(f"want NAMESPACE/NAME, got {args.target!r}")
    with daemon_client(args.server) as client:
        account = get_json(client, f"/pods/{namespace}/{name}/explain")
        text = json.dumps(account, indent=2) if args.output == "json" else render_pod(account)
        ok = bool(account["ok"])
    print(text)
    sys.stdout.flush()
    return 0 if ok else 1


def render_pod(account: dict[str, Any]) -> str:
    """The text of ``explain pod``."""
    lines = [f"pod: {account['namespace']}/{account['name']} (uid {account['uid']})"]
    for c in account["containers"]:
        lines.append(f"container {c['container']} ({c['kind']}): {c['image']}")
        lines.extend(f"  {s['step']}: {s['text']}" for s in c["steps"])
        current = c.get("pullInProgress")
        if current:
            lines.append(f"  now: {current['step']} for {current['forSeconds']:.1f}s")
            if current.get("waitingOn"):
                lines.append(f"    {waiting_line(current['waitingOn'])}")
        if c.get("pulls"):
            lines.append("  recent pulls (oldest first):")
            for p in c["pulls"]:
                how = p["result"] if not p["cause"] else f"{p['result']} ({p['cause']})"
                lines.append(
                    f"    {_clock(p['startedAt'])} waited {p['waitedSeconds']:.1f}s, took "
                    f"{p['seconds']:.1f}s, ended {p['step'] or 'pulled'}: {how}"
                )
                if p["message"]:
                    lines.append(f"      {p['message']}")
                for h in p["hosts"]:
                    creds = "with credentials" if h["withCredentials"] else "anonymously"
                    lines.append(f"      {host_line(h)} ({creds})")
        verdict = c["reason"] + ": " if c["reason"] else ""
        lines.append(f"  verdict: {verdict}{c['verdict']}")
        if c["fix"]:
            lines.append(f"  fix: {c['fix']}")
    return "\n".join(lines)


def _clock(stamp: float | None) -> str:
    if stamp is None:
        return "--:--:--"
    return datetime.datetime.fromtimestamp(stamp).strftime("%H:%M:%S")
