"""kubelet-sim: the kubelet's image-pull subsystem as a standalone async engine.

The curated public API is re-exported here; everything else is internal.
"""

from kubelet_sim.core.digest import Digest
from kubelet_sim.errors import (
    ConfigError,
    InvalidImageNameError,
    KubeletSimError,
    PullError,
    PullReason,
    RegistryError,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "Digest",
    "InvalidImageNameError",
    "KubeletSimError",
    "PullError",
    "PullReason",
    "RegistryError",
    "__version__",
]
