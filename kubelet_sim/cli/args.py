"""Arguments several commands share, so each means the same everywhere."""

from __future__ import annotations

import argparse
from pathlib import Path

from kubelet_sim.node.paths import NodePaths, default_root

__all__ = ["add_root", "node_paths"]


def add_root(parser: argparse.ArgumentParser) -> None:
    """``--root DIR``: the node's state folder (images in ``DIR/store``), default shown in help."""
    root = default_root()
    parser.add_argument(
        "--root",
        type=Path,
        default=root,
        metavar="DIR",
        help=f"node state folder; images live in DIR/store (default: {root})",
    )


def node_paths(args: argparse.Namespace) -> NodePaths:
    """The :class:`NodePaths` of a command's ``--root``.

    Raises:
        ConfigError: the root holds a store of the old layout.
    """
    paths = NodePaths(args.root)
    paths.check_layout()
    return paths
