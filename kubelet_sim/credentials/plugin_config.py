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

The file is read with :mod:`kubelet_sim.config.yamlsafe`: nesting deeper than
:data:`MAX_NESTING_DEPTH`, aliases that expand past go-yaml's limits ("billion laughs") or refer
to their own anchor, and values PyYAML's constructors cannot build (``!!bool x``, ``2001-13-01``,
an integer wider than 64 bits) are all a :class:`~kubelet_sim.errors.ConfigError` with the line
and column; messages never quote what was written (``env`` values are secrets).

``tokenAttributes`` (service-account-token mode) is refused: kubelet-sim has no TokenRequest API.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
MAX_CONFIG_BYTES = 10 * 1024 * 1024
"""Largest config file read (real ones are a few hundred bytes)."""
MAX_NESTING_DEPTH = 64
"""Deepest collection nesting accepted, aliases expanded (a provider config is 4 levels deep)."""
_SHOWN_LENGTH = 100


def _shown(value: Any) -> str:
    """A value for a message: a short string quoted, anything else by its type only."""
    if isinstance(value, str) and len(value) <= _SHOWN_LENGTH and value.isprintable():
        return json.dumps(value)
    if isinstance(value, str):
        return f"<a string of {len(value)} characters>"
    return f"<{_type_name(value)}>"


def _type_name(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _field_name(key: Any) -> str:
    """A mapping key as a field name, as sigs.k8s.io/yaml turns YAML keys into JSON ones."""
    if isinstance(key, str):
        return key if len(key) <= _SHOWN_LENGTH and key.isprintable() else _shown(key)
    if isinstance(key, bool) or key is None:
        return json.dumps(key)
    if isinstance(key, float) or (isinstance(key, int) and key.bit_length() <= 64):
        return str(key)
    return f"<{_type_name(key)} key>"


def _text_problem(value: str) -> str | None:
    """Why ``value`` cannot go into an argv or environment, or None (never quotes it)."""
    if "\0" in value:
        return "must not contain a NUL byte"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode text (a lone surrogate escape)"
    return None


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
    for index, item in enumerate(value):
        problem = _text_problem(item)
        if problem is not None:
            raise _fail(source, f"{path}[{index}]", problem)
    return tuple(value)


def _provider(raw: Any, source: str, path: str) -> CredentialProvider:
    if not isinstance(raw, dict):
        raise _fail(source, path, "expected an object")
    for key in raw:
        if key not in _PROVIDER_FIELDS:
            unknown = _field_name(key)
            raise _fail(
                source, f"{path}.{unknown}", f'strict decoding error: unknown field "{unknown}"'
            )
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
            raise _fail(
                source, f"{path}.name", f"Invalid value: {_shown(name)}: provider name {why}"
            )
    if name in (".", ".."):
        raise _fail(
            source, f"{path}.name", f'Invalid value: "{name}": provider name cannot be {name!r}'
        )
    problem = _text_problem(name)
    if problem is not None:
        raise _fail(source, f"{path}.name", f"Invalid value: provider name {problem}")
    api_version = raw.get("apiVersion")
    if not isinstance(api_version, str) or not api_version:
        raise _fail(source, f"{path}.apiVersion", "Required value")
    if api_version not in PLUGIN_API_VERSIONS:
        supported = ", ".join(f'"{v}"' for v in sorted(PLUGIN_API_VERSIONS))
        raise _fail(
            source,
            f"{path}.apiVersion",
            f"Unsupported value: {_shown(api_version)}: supported values: {supported}",
        )
    matches = _strings(raw.get("matchImages"), source, f"{path}.matchImages")
    if not matches:
        raise _fail(source, f"{path}.matchImages", "at least 1 item in matchImages is required")
    duration = raw.get("defaultCacheDuration")
    if duration is None:
        raise _fail(source, f"{path}.defaultCacheDuration", "Required value")
    try:
        seconds = parse_go_duration(duration) if isinstance(duration, str) else None
    except (ValueError, OverflowError) as exc:
        raise _fail(source, f"{path}.defaultCacheDuration", str(exc)) from None
    if seconds is None:
        raise _fail(source, f"{path}.defaultCacheDuration", "expected a duration string like 12h")
    if seconds < 0:
        raise _fail(source, f"{path}.defaultCacheDuration", "must be greater than or equal to 0")
    raw_env = raw.get("env")
    if raw_env is not None and not isinstance(raw_env, list):
        raise _fail(source, f"{path}.env", "expected a list of {name, value} objects")
    env = []
    for index, item in enumerate(raw_env or []):
        where = f"{path}.env[{index}]"
        if not isinstance(item, dict) or any(k not in ("name", "value") for k in item):
            raise _fail(source, where, "expected an object with name and value")
        env_name, value = item.get("name"), item.get("value", "")
        if value is None:
            value = ""
        if not isinstance(env_name, str) or not env_name or not isinstance(value, str):
            raise _fail(source, where, "name and value must be strings, name non-empty")
        problem = _text_problem(env_name) or ("must not contain '='" if "=" in env_name else None)
        if problem is not None:
            raise _fail(source, f"{where}.name", problem)
        problem = _text_problem(value)
        if problem is not None:  # the value itself is never shown: it may be a secret
            raise _fail(source, f"{where}.value", problem)
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
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(source, None, "cannot parse as YAML or JSON: not UTF-8 text") from None
    from kubelet_sim.config import yamlsafe  # PyYAML only when a file is read

    doc = yamlsafe.load_one(
        text, source, max_depth=MAX_NESTING_DEPTH, what="cannot parse as YAML or JSON"
    )
    if not isinstance(doc, dict):
        raise ConfigError(source, None, "expected a CredentialProviderConfig object")
    for key in doc:
        if key not in ("apiVersion", "kind", "providers"):
            name = _field_name(key)
            raise ConfigError(source, name, f'strict decoding error: unknown field "{name}"')
    kind = doc.get("kind")
    if kind != "CredentialProviderConfig":
        raise ConfigError(source, "kind", f"failed to decode {_shown(kind)} (wrong Kind)")
    api_version = doc.get("apiVersion")
    if not isinstance(api_version, str) or api_version not in CONFIG_API_VERSIONS:
        raise ConfigError(
            source,
            "apiVersion",
            "failed to decode CredentialProviderConfig, unexpected apiVersion: "
            + _shown(api_version),
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
    try:
        if path.is_dir():
            files = sorted(
                p for p in path.iterdir() if p.is_file() and p.suffix in (".json", ".yaml", ".yml")
            )
            if not files:
                raise ConfigError(str(path), None, "no configuration files found in directory")
        else:
            files = [path]
    except OSError as exc:
        raise ConfigError(str(path), None, f"unable to read: {exc.strerror or exc}") from None
    hasher = hashlib.sha256()
    providers: list[CredentialProvider] = []
    seen: set[str] = set()
    for file in files:
        try:
            with file.open("rb") as handle:
                data = handle.read(MAX_CONFIG_BYTES + 1)
        except OSError as exc:
            raise ConfigError(str(file), None, f"unable to read file: {exc.strerror}") from None
        except ValueError:  # a NUL byte or a lone surrogate in the path
            raise ConfigError(str(file), None, "unable to read file: not a valid path") from None
        if len(data) > MAX_CONFIG_BYTES:
            raise ConfigError(str(file), None, f"larger than {MAX_CONFIG_BYTES} bytes")
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
    binary = bin_dir / name
    try:
        if not bin_dir.is_dir():
            raise ConfigError(str(bin_dir), None, "plugin binary directory did not exist")
        if not binary.is_file() or not os.access(binary, os.X_OK):
            raise ConfigError(str(binary), None, "plugin binary executable did not exist")
    except (OSError, ValueError) as exc:  # ENAMETOOLONG, EACCES; NUL or a lone surrogate
        why = exc.strerror if isinstance(exc, OSError) else "not a valid path"
        raise ConfigError(str(binary), None, f"plugin binary executable: {why}") from None
    return binary
