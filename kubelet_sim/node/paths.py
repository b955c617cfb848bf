"""Where a node keeps its state: one ``--root`` folder with one meaning for every command.

``run``, ``pull``, ``images``, ``rmi``, ``fsck``, ``gc`` and ``demo`` all take ``--root DIR`` and
build a :class:`NodePaths` from it, so images pulled by ``kubelet-sim run --root D`` are the images
``kubelet-sim images --root D`` lists. Only ``run``, ``pull`` and ``demo`` create a store; the
commands that look at or change images refuse a root without one (a mistyped ``--root``) instead
of starting an empty store there. The layout under the root::

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

from kubelet_sim.errors import ConfigError

__all__ = ["NodePaths", "default_root"]

STORE_DB = "store.db"
"""The store's database file (``Store``'s ``DB_NAME``; the CLI's start-up must not load sqlite3)."""
LEGACY_STORE_DB = STORE_DB
"""The store's database file, which sat directly in the root before ``DIR/store``."""


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

    def check_layout(self) -> None:
        """Refuse a root that holds a store of the layout before ``DIR/store`` existed.

        Raises:
            ConfigError: naming the root and what to move, instead of silently starting an empty
                store beside the old one.
        """
        legacy = self.root / LEGACY_STORE_DB
        if legacy.exists() and not self.store.exists():
            raise ConfigError(
                str(self.root),
                "--root",
                f"holds an image store in the old layout ({legacy}); images now live in "
                f"{self.store}: move blobs/, {LEGACY_STORE_DB}*, tmp/, quarantine/ and lock there",
            )

    def existing_store(self) -> Path:
        """The image store's folder, which must hold a store already.

        Raises:
            ConfigError: naming the root, when it holds no store (nothing was created), or a
                store of the old layout.
        """
        self.check_layout()
        if not (self.store / STORE_DB).is_file():
            raise ConfigError(
                str(self.root),
                "--root",
                f"holds no image store ({self.store / STORE_DB} does not exist): nothing was "
                "pulled with this --root; check the folder",
            )
        return self.store

    @property
    def containers(self) -> Path:
        """The runc handler's bundles, snapshots and logs (``DIR/containers/HANDLER``)."""
        return self.root / "containers"

    @property
    def docker_config_dir(self) -> Path:
        """Searched first for a node ``config.json`` (the kubelet searches its root dir first)."""
        return self.root

    @property
    def manifest_drafts(self) -> Path:
        """Where ``manifest create`` keeps lists until they are pushed."""
        return self.root / "manifests"
