"""``kubelet-sim kubeconfig``: a kubeconfig for a running daemon, so kubectl needs no flags.

``kubelet-sim kubeconfig --server http://127.0.0.1:10255 > kc && KUBECONFIG=kc kubectl get pods``.
The daemon's API has no authentication (it listens on loopback unless told otherwise), so the
user entry is empty; the context sets the namespace.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any
from urllib.parse import urlsplit

from kubelet_sim.errors import ConfigError
from kubelet_sim.k8s.fields import FieldReader

DEFAULT_SERVER = "http://127.0.0.1:10255"
_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")


def register(subparsers: Any) -> None:
    """Add the ``kubeconfig`` subcommand."""
    parser = subparsers.add_parser(
        "kubeconfig",
        help="print a kubeconfig for a running daemon (KUBECONFIG=... kubectl get pods)",
        description=(
            "Print a kubeconfig whose current context points kubectl at the daemon's API "
            "(kubelet-sim run --listen). Save it and set KUBECONFIG to use it."
        ),
    )
    parser.add_argument(
        "--server",
        default=DEFAULT_SERVER,
        help=f"the daemon's URL (default: {DEFAULT_SERVER}, run's default --listen)",
    )
    parser.add_argument(
        "--name",
        default="kubelet-sim",
        help="cluster, user and context name (default: kubelet-sim)",
    )
    parser.add_argument(
        "--namespace", "-n", default="default", help="the context's namespace (default: default)"
    )
    parser.set_defaults(func=run)


def kubeconfig(server: str, *, name: str = "kubelet-sim", namespace: str = "default") -> str:
    """The kubeconfig text.

    Raises:
        ConfigError: naming the flag with a bad value.
    """
    parts = urlsplit(server)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
        shown = server if len(server) <= 100 else f"{server[:100]}..."
        raise ConfigError(None, "--server", f"want http://HOST:PORT, got {shown!r}")
    if parts.path.strip("/") or parts.query or parts.fragment or parts.username:
        raise ConfigError(None, "--server", "want only scheme, host and port, no path or user")
    if not _NAME.fullmatch(name):
        raise ConfigError(
            None, "--name", f"want letters, digits, '-', '_' or '.', got {name[:100]!r}"
        )
    FieldReader("", "").name(namespace, "--namespace", label=True)  # the API's namespace rule
    q = json.dumps  # a JSON string is a YAML scalar, whatever it holds
    return "\n".join(
        [
            "apiVersion: v1",
            "kind: Config",
            "clusters:",
            f"- name: {q(name)}",
            "  cluster:",
            f"    server: {q(server.rstrip('/'))}",
            "users:",
            f"- name: {q(name)}",
            "  user: {}",
            "contexts:",
            f"- name: {q(name)}",
            "  context:",
            f"    cluster: {q(name)}",
            f"    user: {q(name)}",
            f"    namespace: {q(namespace)}",
            f"current-context: {q(name)}",
            "preferences: {}",
            "",
        ]
    )


def run(args: argparse.Namespace) -> int:
    sys.stdout.write(kubeconfig(args.server, name=args.name, namespace=args.namespace))
    return 0
