"""kubelet-sim: the kubelet's image-pull subsystem as a standalone async engine.

The curated public API is re-exported here; everything else is internal.
"""

import importlib as _importlib
import importlib.abc as _abc
import importlib.machinery as _machinery
import importlib.util as _util
import sys as _sys
import types as _types
from collections.abc import Callable as _Callable


class _Lean(_abc.MetaPathFinder):
    """Loads each library of ``pending`` with its optional extra hidden (see
    :func:`_lean_imports`); once each, and out of the way once all are loaded."""

    def __init__(self, pending: dict[str, str]) -> None:
        self._pending = pending  # library -> the extra kept out while it loads

    def find_spec(
        self, name: str, path: object = None, target: object = None
    ) -> _machinery.ModuleSpec | None:
        extra = self._pending.pop(name, None)
        if extra is None:
            return None
        if not self._pending:
            _sys.meta_path.remove(self)
        spec = _util.find_spec(name)  # by the finders after this one
        if spec is None or spec.loader is None or extra in _sys.modules:
            return spec
        if _util.find_spec(extra) is None:  # not installed: nothing to keep out
            return spec
        spec.loader = _Without(spec.loader, extra, _AFTER.get(name))
        return spec


class _Without(_abc.Loader):
    def __init__(
        self,
        loader: _abc.Loader,
        extra: str,
        after: _Callable[[_types.ModuleType], None] | None,
    ) -> None:
        self._loader = loader
        self._extra = extra
        self._after = after

    def create_module(self, spec: _machinery.ModuleSpec) -> _types.ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: _types.ModuleType) -> None:
        if self._extra in _sys.modules:  # loaded meanwhile (another thread): nothing to keep out
            self._loader.exec_module(module)
            return
        # "import EXTRA" fails while the library loads: it takes the extra as not installed.
        _sys.modules[self._extra] = None  # type: ignore[assignment]
        try:
            self._loader.exec_module(module)
        finally:
            if _sys.modules.get(self._extra, 0) is None:
                del _sys.modules[self._extra]
        if self._after is not None:
            self._after(module)

    def __getattr__(self, name: str) -> object:
        return getattr(self._loader, name)  # get_data, get_resource_reader, ... as before


class _OnDemand:
    """Stands for a module in another module's globals: the first attribute read imports it and
    puts the module there in its place."""

    def __init__(self, owner: _types.ModuleType, name: str) -> None:
        self._owner = owner
        self._name = name

    def __getattr__(self, attr: str) -> object:
        module = _importlib.import_module(self._name)
        vars(self._owner)[self._name] = module
        return getattr(module, attr)


def _trio_on_demand(httpcore: _types.ModuleType) -> None:
    """httpcore loaded without trio: its locks import trio when they first run under trio, and
    ``httpcore.TrioBackend`` is its real class again, imported on first access."""
    sync = _sys.modules.get("httpcore._synchronization")
    if sync is not None and vars(sync).get("trio", 0) is None:
        vars(sync)["trio"] = _OnDemand(sync, "trio")
    if "TrioBackend" in vars(httpcore) and "httpcore._backends.trio" not in _sys.modules:
        del vars(httpcore)["TrioBackend"]  # httpcore's stand-in saying trio is not installed
        vars(httpcore)["__getattr__"] = _httpcore_getattr


def _httpcore_getattr(name: str) -> object:
    """``httpcore.TrioBackend`` (a module ``__getattr__``, PEP 562), imported on first access."""
    if name != "TrioBackend":
        raise AttributeError(f"module 'httpcore' has no attribute {name!r}")
    from httpcore._backends.trio import TrioBackend

    vars(_sys.modules["httpcore"])[name] = TrioBackend
    return TrioBackend


_HIDDEN = {"structlog": "rich", "httpcore": "trio"}  # library -> the extra kept out of its load
_AFTER: dict[str, _Callable[[_types.ModuleType], None]] = {"httpcore": _trio_on_demand}


def _lean_imports() -> None:
    """Keep three libraries' optional extras out of every process that imports kubelet-sim before
    them (measured: 4.7 MiB less peak RSS in ``kubelet-sim pull`` for the first two, 3.5 MiB for
    trio, and less start-up); a library user gets httpx's stub ``httpx.main`` and structlog's
    plain tracebacks.

    - httpx imports its own command-line client (click, rich, pygments) whenever click is
      installed, as Ray installs it; kubelet-sim never runs that client. A ``None`` entry in
      ``sys.modules`` makes that import fail, and httpx then defines a stub in its place.
    - structlog's dev and traceback modules import rich, when it is there, only to offer rich
      tracebacks; kubelet-sim's logs print plain ones (``cli/logs.py``). rich is hidden while
      structlog loads (whenever that is: short commands never load it) and visible after, for
      the commands that draw tables with it.
    - httpcore imports trio, when it is there (virtual time runs on it), for its locks under trio
      and its ``TrioBackend``; under asyncio neither is ever used. trio is hidden while httpcore
      loads; its locks import trio when they first run under trio (loaded by then), and
      ``httpcore.TrioBackend`` imports it on first access (:func:`_trio_on_demand`).
    """
    _sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    pending = {
        library: extra
        for library, extra in _HIDDEN.items()
        if library not in _sys.modules and extra not in _sys.modules
    }
    if pending:
        _sys.meta_path.insert(0, _Lean(pending))


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
