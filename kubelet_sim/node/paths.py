"""Where a node keeps its state: one ``--root`` folder with one meaning for every command.

``run``, ``pull``, ``images``, ``rmi``, ``fsck``, ``gc`` and ``demo`` all take ``--root DIR`` and
build a :class:`NodePaths` from it, so images pulled by ``kubelet-sim run --root D`` are the images
``kubelet-sim images --root D`` lists. The layout under the root::

    DIR/store/            the content-addressed image store (blobs, metadata database, lock)
    DIR/config.json       optional node docker config, searched first (the kubelet's --root-dir)
    DIR/manifests/        ``kubelet-sim manifest create`` drafts

The default root is ``$KUBELET_SIM_ROOT``, else ``$XDG_DATA_HOME/kubelet-sim``, else
``~/.local/share/kubelet-sim``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["NodePaths", "default_root"]


def default_root() -> Path:
    """The default root: ``$KUBELET_SIM_ROOT`` or a user-writable data folder."""
    env = os.environ.get("KUBELET_SIM_ROOT")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "kubelet-sim"


@dataclass(frozen=True, slots=True)
class NodePaths:
    """The folders of one node, all under :attr:`root`."""

    root: Path

    @classmethod
    def default(cls) -> NodePaths:
        return cls(default_root())

    @property
    def store(self) -> Path:
        """The image store's folder."""
        return self.root / "store"

    @property
    def docker_config_dir(self) -> Path:
        """Searched first for a node ``config.json`` (the kubelet searches its root dir first)."""
        return self.root

    @property
    def manifest_drafts(self) -> Path:
        """Where ``manifest create`` keeps lists until they are pushed."""
        return self.root / "manifests"
