"""``CredentialProviderConfig``: which exec plugins give credentials for which images.

Models ``pkg/credentialprovider/plugin/config.go`` (``readCredentialProviderConfig``, ``decode``,
``validateCredentialProviderConfig``) and ``KL:config/v1/types.go``:

- ``--image-credential-provider-config`` names a file, or a folder whose ``*.json``, ``*.yaml`` and
  ``*.yml`` files are read in lexical order and merged (provider names unique across files);
- decoding is strict (unknown fields are errors); ``apiVersion`` is ``kubelet.config.k8s.io/v1``,
  ``v1beta1`` or ``v1alpha1``, ``kind`` is ``CredentialProviderConfig``;
- each provider needs a ``name`` (the executable in ``--image-credential-provider-bin-dir``: no
  ``/``, no space, not ``.``/``..``), ``matchImages`` (at least one), ``defaultCacheDuration``
  (a Go duration, at least 0) and an ``apiVersion`` of ``credentialprovider.kubelet.k8s.io``;
  ``args`` and ``env`` are optional;
- the config hash for ``kubelet_credential_provider_config_info`` runs over each file's length
  (uint64 big-endian) followed by its bytes.

``tokenAttributes`` (service-account-token mode) is refused: kubelet-sim has no TokenRequest API.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kubelet_sim.core.durations import parse_go_duration
from kubelet_sim.errors import ConfigError

__all__ = [
    "CONFIG_API_VERSIONS",
    "PLUGIN_API_VERSIONS",
    "CredentialProvider",
    "CredentialProviderConfig",
    "ExecEnvVar",
    "load_credential_provider_config",
    "parse_credential_provider_config",
]

CONFIG_API_VERSIONS = frozenset(
    {"kubelet.config.k8s.io/v1", "kubelet.config.k8s.io/v1beta1", "kubelet.config.k8s.io/v1alpha1"}
)
PLUGIN_API_VERSIONS = (
    "credentialprovider.kubelet.k8s.io/v1",
    "credentialprovider.kubelet.k8s.io/v1alpha1",
    "credentialprovider.kubelet.k8s.io/v1beta1",
)
_PROVIDER_FIELDS = frozenset(
    {"name", "matchImages", "defaultCacheDuration", "apiVersion", "args", "env", "tokenAttributes"}
)


@dataclass(frozen=True, slots=True)
class ExecEnvVar:
    """An environment variable for the plugin (values may be sensitive: not in repr)."""

    name: str
    value: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class CredentialProvider:
    """One ``providers[]`` entry."""

    name: str
    match_images: tuple[str, ...]
    default_cache_duration: float
    api_version: str
    args: tuple[str, ...] = ()
    env: tuple[ExecEnvVar, ...] = ()


@dataclass(frozen=True, slots=True)
class CredentialProviderConfig:
    """The merged providers of every config file, and the ``sha256:`` hash of those files."""

    providers: tuple[CredentialProvider, ...]
    config_hash: str
    source: str


def _fail(source: str, path: str, message: str) -> ConfigError:
    return ConfigError(source, path, message)


def _strings(value: Any, source: str, path: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(source, path, "expected a list of strings")
    return tuple(value)


def _provider(raw: Any, source: str, path: str) -> CredentialProvider:
    if not isinstance(raw, dict):
        raise _fail(source, path, "expected an object")
    for key in raw:
        if key not in _PROVIDER_FIELDS:
            raise _fail(source, f"{path}.{key}", f'strict decoding error: unknown field "{key}"')
    if raw.get("tokenAttributes") is not None:
        raise _fail(
            source,
            f"{path}.tokenAttributes",
            "service account token mode is not supported by kubelet-sim (no TokenRequest API)",
        )
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise _fail(source, f"{path}.name", "Required value")
    for bad, why in (("/", "cannot contain '/'"), (" ", "cannot contain spaces")):
        if bad in name:
            raise _fail(source, f"{path}.name", f'Invalid value: "{name}": provider name {why}')
    if name in (".", ".."):
        raise _fail(
            source, f"{path}.name", f'Invalid value: "{name}": provider name cannot be {name!r}'
        )
    api_version = raw.get("apiVersion")
    if not isinstance(api_version, str) or not api_version:
        raise _fail(source, f"{path}.apiVersion", "Required value")
    if api_version not in PLUGIN_API_VERSIONS:
        supported = ", ".join(f'"{v}"' for v in sorted(PLUGIN_API_VERSIONS))
        raise _fail(
            source,
            f"{path}.apiVersion",
            f'Unsupported value: "{api_version}": supported values: {supported}',
        )
    matches = _strings(raw.get("matchImages"), source, f"{path}.matchImages")
    if not matches:
        raise _fail(source, f"{path}.matchImages", "at least 1 item in matchImages is required")
    duration = raw.get("defaultCacheDuration")
    if duration is None:
        raise _fail(source, f"{path}.defaultCacheDuration", "Required value")
    try:
        seconds = parse_go_duration(duration) if isinstance(duration, str) else None
    except ValueError as exc:
        raise _fail(source, f"{path}.defaultCacheDuration", str(exc)) from None
    if seconds is None:
        raise _fail(source, f"{path}.defaultCacheDuration", "expected a duration string like 12h")
    if seconds < 0:
        raise _fail(source, f"{path}.defaultCacheDuration", "must be greater than or equal to 0")
    env = []
    for index, item in enumerate(raw.get("env") or []):
        where = f"{path}.env[{index}]"
        if not isinstance(item, dict) or set(item) - {"name", "value"}:
            raise _fail(source, where, "expected an object with name and value")
        env_name, value = item.get("name"), item.get("value", "")
        if not isinstance(env_name, str) or not env_name or not isinstance(value, str):
            raise _fail(source, where, "name and value must be strings, name non-empty")
        env.append(ExecEnvVar(env_name, value))
    return CredentialProvider(
        name=name,
        match_images=matches,
        default_cache_duration=seconds,
        api_version=api_version,
        args=_strings(raw.get("args"), source, f"{path}.args"),
        env=tuple(env),
    )


def parse_credential_provider_config(data: bytes, *, source: str) -> list[CredentialProvider]:
    """The providers of one file (YAML or JSON).

    Raises:
        ConfigError: naming the file and the field.
    """
    try:
        doc = yaml.safe_load(data.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError):
        raise ConfigError(source, None, "cannot parse as YAML or JSON") from None
    if not isinstance(doc, dict):
        raise ConfigError(source, None, "expected a CredentialProviderConfig object")
    for key in doc:
        if key not in ("apiVersion", "kind", "providers"):
            raise ConfigError(source, key, f'strict decoding error: unknown field "{key}"')
    kind = doc.get("kind")
    if kind != "CredentialProviderConfig":
        raise ConfigError(source, "kind", f"failed to decode {json.dumps(kind)} (wrong Kind)")
    if doc.get("apiVersion") not in CONFIG_API_VERSIONS:
        raise ConfigError(
            source,
            "apiVersion",
            f"failed to decode CredentialProviderConfig, unexpected apiVersion: {doc.get('apiVersion')}",
        )
    providers = doc.get("providers") or []
    if not isinstance(providers, list):
        raise ConfigError(source, "providers", "expected a list")
    return [_provider(p, source, f"providers[{i}]") for i, p in enumerate(providers)]


def load_credential_provider_config(path: Path) -> CredentialProviderConfig:
    """Read a config file, or every ``*.json``/``*.yaml``/``*.yml`` file of a folder, and validate.

    Raises:
        ConfigError: unreadable, undecodable or invalid, a duplicate provider name, or no provider.
    """
    if path.is_dir():
        files = sorted(
            p for p in path.iterdir() if p.is_file() and p.suffix in (".json", ".yaml", ".yml")
        )
        if not files:
            raise ConfigError(str(path), None, "no configuration files found in directory")
    else:
        files = [path]
    hasher = hashlib.sha256()
    providers: list[CredentialProvider] = []
    seen: set[str] = set()
    for file in files:
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise ConfigError(str(file), None, f"unable to read file: {exc.strerror}") from None
        hasher.update(len(data).to_bytes(8, "big"))
        hasher.update(data)
        for provider in parse_credential_provider_config(data, source=str(file)):
            if provider.name in seen:
                raise ConfigError(
                    str(file),
                    "providers.name",
                    f'duplicate provider name "{provider.name}" found in configuration file(s)',
                )
            seen.add(provider.name)
            providers.append(provider)
    if not providers:
        raise ConfigError(str(path), "providers", "at least 1 item in plugins is required")
    return CredentialProviderConfig(tuple(providers), f"sha256:{hasher.hexdigest()}", str(path))


def plugin_executable(bin_dir: Path, name: str) -> Path:
    """The provider's executable (``exec.LookPath(filepath.Join(binDir, name))``).

    Raises:
        ConfigError: the folder or the executable is missing.
    """
    if not bin_dir.is_dir():
        raise ConfigError(str(bin_dir), None, "plugin binary directory did not exist")
    binary = bin_dir / name
    if not binary.is_file() or not os.access(binary, os.X_OK):
        raise ConfigError(str(binary), None, "plugin binary executable did not exist")
    return binary
