"""A node's runtime handlers, configured like containerd's CRI ``runtimes`` table.

Reads the part of containerd's ``config.toml`` that names runtime handlers::

    [plugins."io.containerd.grpc.v1.cri".containerd]
      default_runtime_name = "sim"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.sim]
      runtime_type = "io.kubelet-sim.sim.v1"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"

Two kinds exist: ``io.kubelet-sim.sim.v1`` (no processes) and ``io.containerd.runc.v2`` (real
containers run by ``runc``; ``options.BinaryName`` defaults to ``runc`` on ``PATH`` or
``/usr/sbin/runc``). containerd 2's plugin id ``io.containerd.cri.v1.runtime`` is read too.
Without a file a node has ``sim`` (the default) and ``runc``. Errors name the file and the
TOML key.
"""

from __future__ import annotations

import shutil
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from kubelet_sim.errors import ConfigError

__all__ = [
    "RUNC_RUNTIME_TYPE",
    "SIM_RUNTIME_TYPE",
    "RuntimeEntry",
    "RuntimesConfig",
    "default_runc_binary",
    "load_runtimes",
    "parse_runtimes",
]

SIM_RUNTIME_TYPE = "io.kubelet-sim.sim.v1"
RUNC_RUNTIME_TYPE = "io.containerd.runc.v2"
_KINDS = {SIM_RUNTIME_TYPE: "sim", RUNC_RUNTIME_TYPE: "runc"}
_PLUGIN_IDS = ("io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime")
_MAX_FILE = 1 << 20


def default_runc_binary() -> str:
    """``runc`` on PATH, else Debian's ``/usr/sbin/runc`` (not on a user's PATH), else ``runc``."""
    return shutil.which("runc") or ("/usr/sbin/runc" if Path("/usr/sbin/runc").exists() else "runc")


@dataclass(frozen=True, slots=True)
class RuntimeEntry:
    """One handler: its name, kind (``sim`` or ``runc``) and, for runc, the binary."""

    name: str
    kind: str
    binary: str = ""


@dataclass(frozen=True, slots=True)
class RuntimesConfig:
    """The node's handlers by name and the one pods without a RuntimeClass use."""

    default: str
    entries: Mapping[str, RuntimeEntry] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )

    @classmethod
    def builtin(cls) -> RuntimesConfig:
        """``sim`` (the default) and ``runc``."""
        return cls(
            "sim",
            MappingProxyType(
                {
                    "sim": RuntimeEntry("sim", "sim"),
                    "runc": RuntimeEntry("runc", "runc", default_runc_binary()),
                }
            ),
        )


def load_runtimes(path: Path) -> RuntimesConfig:
    """Read a containerd-style runtimes file.

    Raises:
        ConfigError: unreadable, not TOML, or a bad key (named).
    """
    try:
        with path.open("rb") as f:
            data = f.read(_MAX_FILE + 1)
    except OSError as exc:
        raise ConfigError(str(path), None, f"cannot read: {exc.strerror}") from None
    if len(data) > _MAX_FILE:
        raise ConfigError(str(path), None, f"larger than {_MAX_FILE} bytes")
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise ConfigError(str(path), None, "not UTF-8 text") from None
    return parse_runtimes(text, source=str(path))


def _table(value: Any, source: str, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(source, key, "expected a table")
    return value


def parse_runtimes(text: str, *, source: str) -> RuntimesConfig:
    """Parse the runtimes table from TOML text (see the module docstring)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, None, f"not valid TOML: {exc}") from None
    plugins = _table(doc.get("plugins", {}), source, "plugins")
    found = [pid for pid in _PLUGIN_IDS if pid in plugins]
    if not found:
        raise ConfigError(source, "plugins", f'no [plugins."{_PLUGIN_IDS[0]}".containerd] table')
    pid = found[0]
    base = f'plugins."{pid}".containerd'
    cri = _table(plugins[pid], source, f'plugins."{pid}"')
    containerd = _table(cri.get("containerd", {}), source, base)
    runtimes = _table(containerd.get("runtimes", {}), source, f"{base}.runtimes")
    if not runtimes:
        raise ConfigError(source, f"{base}.runtimes", "Required value: no runtime is configured")
    entries: dict[str, RuntimeEntry] = {}
    for name, raw in runtimes.items():
        key = f"{base}.runtimes.{name}"
        table = _table(raw, source, key)
        runtime_type = table.get("runtime_type")
        if not isinstance(runtime_type, str) or runtime_type not in _KINDS:
            raise ConfigError(
                source,
                f"{key}.runtime_type",
                f"unsupported runtime_type {runtime_type!r}; supported: "
                + ", ".join(sorted(_KINDS)),
            )
        kind = _KINDS[runtime_type]
        binary = ""
        if kind == "runc":
            options = _table(table.get("options", {}), source, f"{key}.options")
            named = options.get("BinaryName", "")
            if not isinstance(named, str):
                raise ConfigError(source, f"{key}.options.BinaryName", "expected a string")
            binary = named or default_runc_binary()
        entries[name] = RuntimeEntry(name, kind, binary)
    default = containerd.get("default_runtime_name", "runc")
    if not isinstance(default, str) or default not in entries:
        raise ConfigError(
            source,
            f"{base}.default_runtime_name",
            f"{default!r} is not one of the configured runtimes ({', '.join(sorted(entries))})",
        )
    return RuntimesConfig(default, MappingProxyType(entries))
