"""Docker config files: ``config.json`` ``auths``, legacy ``.dockercfg``, and the node's lookup paths.

Models ``pkg/credentialprovider/config.go`` and ``provider.go``:

- an entry has ``username``, ``password``, ``email`` and ``auth`` (base64 of ``user:pass``, padded
  when it ends in ``=``, raw otherwise); ``auth`` overrides username and password and must contain
  ``:``. Field names match case-insensitively, the last one in the document winning, as Go's
  ``encoding/json`` does. kubelet-sim also reads ``identitytoken`` and ``registrytoken`` (Docker's
  OAuth refresh token and bearer token), which the kubelet's own entry type ignores;
- ``config.json`` is ``{"auths": {...}}`` (``HttpHeaders``, ``credHelpers`` and ``credsStore`` are
  ignored); ``.dockercfg`` is the bare map;
- the node looks for ``config.json`` in the kubelet root dir, the working dir, ``~/.docker`` and
  ``/.docker``, then for ``.dockercfg`` in the root dir, the working dir, ``~`` and ``/``; the first
  file that parses wins (no merging), and the answer is cached for 5 minutes, empty answers too.

Errors are :class:`~kubelet_sim.errors.ConfigError` naming the source and the entry; they never
include a credential.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import structlog

from kubelet_sim.errors import ConfigError

__all__ = [
    "CACHE_LIFETIME",
    "DockerConfig",
    "DockerConfigEntry",
    "DockerConfigSearch",
    "NodeDockerConfig",
    "decode_auth_field",
    "parse_config_json",
    "parse_dockercfg",
    "read_docker_config_file",
    "redact_userinfo",
]

log = structlog.get_logger(__name__)

CACHE_LIFETIME = 300.0  # provider.go: CachingDockerConfigProvider{Lifetime: 5 * time.Minute}
MAX_CONFIG_BYTES = 10 * 1024 * 1024
CONFIG_JSON = "config.json"
DOCKERCFG = ".dockercfg"
_AUTH_FORMAT = "unable to parse auth field, must be formatted as base64(username:password)"
_NOT_TEXT = "not valid Unicode text (a lone surrogate escape such as \\ud800)"


def redact_userinfo(location: str) -> str:
    """A config key fit for logs: everything up to its last ``@`` (a ``user:password@``) cut.

    Keys may be written as URLs with userinfo, which Go's URL parser drops; cutting at the last
    ``@`` removes it even when the password holds ``/``, ``#`` or ``?``, and only over-redacts.
    """
    scheme = next((s for s in ("https://", "http://") if location.startswith(s)), "")
    rest = location[len(scheme) :]
    if "@" not in rest:
        return location
    return f"{scheme}<redacted>@{rest.rpartition('@')[2]}"


@dataclass(frozen=True, slots=True)
class DockerConfigEntry:
    """One registry's credentials from a docker config (secrets never in repr)."""

    username: str = ""
    password: str = field(default="", repr=False)
    email: str = ""
    identity_token: str = field(default="", repr=False)
    registry_token: str = field(default="", repr=False)


DockerConfig = Mapping[str, DockerConfigEntry]
"""Registry key (``host[:port][/path]``, optionally with scheme, globs allowed) -> entry."""

_ENTRY_FIELDS = {
    "username": "username",
    "password": "password",
    "email": "email",
    "auth": "auth",
    "identitytoken": "identity_token",
    "registrytoken": "registry_token",
}


def decode_auth_field(value: str) -> tuple[str, str]:
    """Split the ``auth`` field into username and password (``decodeDockerConfigFieldAuth``).

    Raises:
        ValueError: not base64, not UTF-8, or no ``:`` (message without the value).
    """
    # Padded or not is decided on the trimmed text (strings.TrimSpace), but the text decoded is
    # the field itself, where Go's base64 skips only \r and \n (wrapped `base64` output); any
    # other whitespace is illegal data.
    padded = value.strip().endswith("=")
    text = value.replace("\r", "").replace("\n", "")
    try:
        if padded:
            decoded = base64.b64decode(text, validate=True)
        else:  # RawStdEncoding: no padding allowed, none needed
            if len(text) % 4 == 1 or "=" in text:
                raise ValueError("illegal base64 data")
            decoded = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        plain = decoded.decode("utf-8")
    except (binascii.Error, ValueError):
        raise ValueError(f"illegal base64 data in auth field; {_AUTH_FORMAT}") from None
    username, sep, password = plain.partition(":")
    if not sep:
        raise ValueError(_AUTH_FORMAT)
    return username, password


def _entry(value: Any, *, source: str, where: str) -> DockerConfigEntry:
    if value is None:
        return DockerConfigEntry()
    if not isinstance(value, dict):
        raise ConfigError(source, where, "expected an object")
    found: dict[str, str] = {}
    for key, item in value.items():
        name = _ENTRY_FIELDS.get(key.lower())
        if name is None:
            continue  # unknown fields are ignored, as encoding/json does
        if item is None:
            item = ""
        if not isinstance(item, str):
            raise ConfigError(source, f"{where}.{key}", "expected a string")
        if not _is_text(item):  # the value is never shown: it may be a password
            raise ConfigError(source, f"{where}.{key}", _NOT_TEXT)
        found[name] = item
    auth = found.pop("auth", "")
    if auth:
        try:
            found["username"], found["password"] = decode_auth_field(auth)
        except ValueError as exc:
            raise ConfigError(source, f"{where}.auth", str(exc)) from None
    return DockerConfigEntry(**found)


def _is_text(value: str) -> bool:
    """Encodable as UTF-8: JSON's ``\\ud800`` escapes decode to lone surrogates, which are not
    (Go's decoder turns them into U+FFFD; a credential silently changed is worse than an error)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_int(text: str) -> int | float:
    """A JSON integer; one with more digits than ``int()`` converts (``sys.int_max_str_digits``)
    becomes a float, as Go's decoder skips it in an ignored field and refuses it in a string one."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def _load_json(data: bytes, source: str) -> Any:
    try:
        return json.loads(data, parse_int=_json_int)
    except UnicodeDecodeError:
        raise ConfigError(source, None, "not valid UTF-8") from None
    except json.JSONDecodeError as exc:
        message = f"error occurred while trying to unmarshal json: {exc.msg} at line {exc.lineno}"
        raise ConfigError(source, None, message) from None
    except RecursionError:
        raise ConfigError(source, None, "cannot parse JSON: nested too deeply") from None


def _entries(doc: Any, *, source: str, prefix: str) -> dict[str, DockerConfigEntry]:
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(source, prefix or None, "expected an object of registries")
    return {
        key: _entry(value, source=source, where=f"{prefix}[{json.dumps(key)}]")
        for key, value in doc.items()
    }


def parse_config_json(data: bytes, *, source: str = "config.json") -> dict[str, DockerConfigEntry]:
    """The ``auths`` of a ``config.json`` / ``.dockerconfigjson`` document.

    Raises:
        ConfigError: not JSON, or an entry is malformed (naming ``auths["host"].field``).
    """
    doc = _load_json(data, source)
    if not isinstance(doc, dict):
        raise ConfigError(source, None, "expected a JSON object")
    auths: Any = None
    for key, value in doc.items():
        if key.lower() == "auths":
            auths = value
    return _entries(auths, source=source, prefix="auths")


def parse_dockercfg(data: bytes, *, source: str = ".dockercfg") -> dict[str, DockerConfigEntry]:
    """A legacy ``.dockercfg`` document: a bare map of registry to entry.

    Raises:
        ConfigError: not JSON, or an entry is malformed.
    """
    return _entries(_load_json(data, source), source=source, prefix="")


def read_docker_config_file(path: Path) -> dict[str, DockerConfigEntry]:
    """Read one file: ``.dockercfg`` format when it is named so, ``config.json`` format otherwise.

    Raises:
        OSError: the file cannot be read.
        ConfigError: it does not parse.
    """
    with path.open("rb") as handle:
        data = handle.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(str(path), None, f"larger than {MAX_CONFIG_BYTES} bytes")
    if path.name.endswith(DOCKERCFG):
        return parse_dockercfg(data, source=str(path))
    return parse_config_json(data, source=str(path))


@dataclass(frozen=True, slots=True)
class DockerConfigSearch:
    """The kubelet's search paths (``DefaultDockerConfigJSONPaths`` / ``DefaultDockercfgPaths``).

    ``preferred`` is the kubelet's ``--root-dir`` (``SetPreferredDockercfgPath``); ``working_dir``
    and ``home`` default to the process's when None; ``root`` is ``/``. ``files``, when given,
    replaces the search with an explicit list (``kubelet-sim pull --docker-config``).
    """

    preferred: Path | None = Path("/var/lib/kubelet")
    working_dir: Path | None = None
    home: Path | None = None
    root: Path = Path("/")
    files: tuple[Path, ...] | None = None

    @classmethod
    def only(cls, *files: Path) -> DockerConfigSearch:
        """Search exactly these files, in order (a folder means its config.json, then .dockercfg)."""
        expanded: list[Path] = []
        for path in files:
            expanded.extend([path / CONFIG_JSON, path / DOCKERCFG] if path.is_dir() else [path])
        return cls(files=tuple(expanded))

    def candidates(self) -> list[Path]:
        """Every file to try, in the kubelet's order: all config.json paths, then .dockercfg."""
        if self.files is not None:
            return list(self.files)
        cwd = self.working_dir or Path(os.getcwd())
        home = self.home or Path.home()
        first = self.preferred if self.preferred is not None else cwd
        json_dirs = [first, cwd, home / ".docker", self.root / ".docker"]
        cfg_dirs = [first, cwd, home, self.root]
        return [d / CONFIG_JSON for d in json_dirs] + [d / DOCKERCFG for d in cfg_dirs]

    def read(self) -> tuple[dict[str, DockerConfigEntry], Path | None]:
        """The first valid file's entries and its path; ``({}, None)`` when none is valid."""
        for path in self.candidates():
            try:
                entries = read_docker_config_file(path)
            except FileNotFoundError:
                continue
            except (OSError, ConfigError) as exc:
                detail = exc.message if isinstance(exc, ConfigError) else exc.strerror
                log.info("docker_config.invalid", path=str(path), error=detail)
                continue
            registries = sorted(redact_userinfo(key) for key in entries)
            log.debug("docker_config.found", path=str(path), registries=registries)
            return entries, path
        return {}, None


class NodeDockerConfig:
    """The node's docker config credentials, re-read at most every ``lifetime`` seconds.

    Models ``CachingDockerConfigProvider`` over ``defaultDockerConfigProvider``: an empty answer is
    cached as well. ``clock`` is monotonic seconds (virtual time in tests).
    """

    def __init__(
        self,
        search: DockerConfigSearch | None = None,
        *,
        lifetime: float = CACHE_LIFETIME,
        clock: Callable[[], float] = anyio.current_time,
    ) -> None:
        self.search = search or DockerConfigSearch()
        self.lifetime = lifetime
        self.clock = clock
        self._cached: dict[str, DockerConfigEntry] = {}
        self._expires: float | None = None
        self.path: Path | None = None
        self.reads = 0

    async def provide(self) -> DockerConfig:
        """The cached entries, refreshed from disk when older than the lifetime."""
        now = self.clock()
        if self._expires is not None and now < self._expires:
            return self._cached
        entries, path = await anyio.to_thread.run_sync(self.search.read)
        self.reads += 1
        self._cached, self.path, self._expires = entries, path, now + self.lifetime
        return self._cached

    def invalidate(self) -> None:
        """Forget the cached answer (the next lookup reads the files again)."""
        self._expires = None
