"""kubelet-sim: the kubelet's image-pull subsystem as a standalone async engine.

The curated public API is re-exported here; everything else is internal.
"""

import importlib.abc as _abc
import importlib.machinery as _machinery
import importlib.util as _util
import sys as _sys
import types as _types


class _LeanStructlog(_abc.MetaPathFinder):
    """Hides rich from structlog while structlog loads (see :func:`_lean_imports`); once."""

    def find_spec(
        self, name: str, path: object = None, target: object = None
    ) -> _machinery.ModuleSpec | None:
        if name != "structlog":
            return None
        _sys.meta_path.remove(self)
        spec = _util.find_spec(name)  # by the finders after this one
        if spec is None or spec.loader is None or "rich" in _sys.modules:
            return spec
        spec.loader = _WithoutRich(spec.loader)
        return spec


class _WithoutRich(_abc.Loader):
    def __init__(self, loader: _abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: _machinery.ModuleSpec) -> _types.ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: _types.ModuleType) -> None:
        if "rich" in _sys.modules:  # loaded meanwhile (another thread): nothing to keep out
            self._loader.exec_module(module)
            return
        _sys.modules["rich"] = None  # type: ignore[assignment]  # "import rich" fails: structlog
        try:  # takes rich as not installed
            self._loader.exec_module(module)
        finally:
            if _sys.modules.get("rich", 0) is None:
                del _sys.modules["rich"]

    def __getattr__(self, name: str) -> object:
        return getattr(self._loader, name)  # get_data, get_resource_reader, ... as before


def _lean_imports() -> None:
    """Keep two libraries' optional extras out of every process that imports kubelet-sim before
    them (measured: 4.7 MiB less peak RSS in ``kubelet-sim pull``, and less start-up); a library
    user gets httpx's stub ``httpx.main`` and structlog's plain tracebacks.

    - httpx imports its own command-line client (click, rich, pygments) whenever click is
      installed, as Ray installs it; kubelet-sim never runs that client. A ``None`` entry in
      ``sys.modules`` makes that import fail, and httpx then defines a stub in its place.
    - structlog's dev and traceback modules import rich, when it is there, only to offer rich
      tracebacks; kubelet-sim's logs print plain ones (``cli/logs.py``). rich is hidden while
      structlog loads (whenever that is: short commands never load it) and visible after, for
      the commands that draw tables with it.
    """
    _sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    if "structlog" not in _sys.modules and "rich" not in _sys.modules:
        _sys.meta_path.insert(0, _LeanStructlog())


_lean_imports()

from kubelet_sim.core.digest import Digest  # noqa: E402
from kubelet_sim.errors import (  # noqa: E402
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
