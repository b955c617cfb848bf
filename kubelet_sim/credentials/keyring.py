"""Docker keyrings: which credentials match an image, in the order the kubelet tries them.

Models ``pkg/credentialprovider/keyring.go``:

- ``BasicDockerKeyring.Add``: each key gets ``https://`` unless it has an ``http(s)://`` scheme, is
  parsed as a URL (unparsable keys are skipped), loses a leading ``/v1`` or ``/v2`` path segment,
  and becomes ``host[:port]`` plus the path when that is neither empty nor ``/``. The index is
  de-duplicated and sorted in reverse lexicographic order, so ``quay.io/coreos`` is tried before
  ``quay.io`` and literal names before ``*`` globs;
- ``Lookup``: every key that ``URLsMatch`` the image contributes all its credentials, in insertion
  order; when none does and the image is on Docker Hub, the ``index.docker.io`` credentials apply;
- ``URLsMatch``: ports equal as strings, the same number of host labels each matching with Go's
  ``filepath.Match`` (``*`` is one label or part of one), and the glob's path a string prefix of
  the image's path;
- ``UnionDockerKeyring`` concatenates its keyrings' answers.

The credentials carry where they came from (:class:`SecretSource`), which KEP-2535 records need.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from kubelet_sim.core.credentials import Credentials
from kubelet_sim.credentials.dockerconfig import DockerConfigEntry, redact_userinfo
from kubelet_sim.store.records import hash_credentials

__all__ = [
    "DEFAULT_REGISTRY_HOST",
    "BasicKeyring",
    "Keyring",
    "SecretSource",
    "SourcedCredentials",
    "UnionKeyring",
    "go_path_match",
    "is_default_registry_match",
    "keyring_key",
    "urls_match",
]

log = structlog.get_logger(__name__)

DEFAULT_REGISTRY_HOST = "index.docker.io"
_HEX = "0123456789abcdefABCDEF"
# Go's shouldEscape(c, encodeHost) is false for these besides alphanumerics.
_HOST_CHARS = frozenset("-_.~!$&'()*+,;=:[]<>\"")


@dataclass(frozen=True, slots=True)
class SecretSource:
    """The pull secret a credential came from (``credentialprovider.SecretCoordinates``)."""

    namespace: str
    name: str
    uid: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True, repr=False)
class SourcedCredentials(Credentials):
    """Registry credentials plus their email and source; repr is the redacted parent one."""

    email: str = ""
    source: SecretSource | None = None

    @property
    def credential_hash(self) -> str:
        """The KEP-2535 ``AuthConfigHash`` of these credentials (hex sha256, never the secret)."""
        return hash_credentials(
            username=self.username,
            password=self.password,
            email=self.email,
            identity_token=self.identity_token,
            registry_token=self.registry_token,
        )


class Keyring(Protocol):
    """Anything that answers ``Lookup(image)``."""

    def lookup(self, image: str) -> list[SourcedCredentials]: ...


# -- Go URL parsing, as far as keyrings need it -------------------------------------------------


@dataclass(frozen=True, slots=True)
class _URL:
    host: str  # host[:port], as Go's URL.Host
    path: str


def _valid_optional_port(port: str) -> bool:
    return (
        port == "" or (port[0] == ":" and port[1:].isascii() and port[1:].isdigit()) or port == ":"
    )


def _unescape(text: str, *, host: bool) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "%":
            pair = text[i + 1 : i + 3]
            if len(pair) < 2 or any(c not in _HEX for c in pair):
                raise ValueError(f"invalid URL escape {text[i : i + 3]!r}")
            if host and int(pair, 16) < 0x80 and pair != "25":
                raise ValueError(f"invalid URL escape {text[i : i + 3]!r}")
            out.append(chr(int(pair, 16)))
            i += 3
            continue
        if host and ord(char) < 0x80 and not char.isalnum() and char not in _HOST_CHARS:
            raise ValueError(f"invalid character {char!r} in host name")
        out.append(char)
        i += 1
    return "".join(out)


def parse_url(raw: str) -> _URL:
    """Go's ``url.Parse`` reduced to host and path.

    Raises:
        ValueError: what ``url.Parse`` refuses (control characters, bad port, bad escapes).
    """
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in raw):
        raise ValueError("invalid control character in URL")
    rest = raw.partition("#")[0]
    match = re.match(r"[A-Za-z][A-Za-z0-9+.\-]*:", rest)
    if rest.startswith(":"):
        raise ValueError("missing protocol scheme")
    if match:
        rest = rest[match.end() :]
    rest = rest.partition("?")[0]
    if not rest.startswith("//"):
        return _URL("", _unescape(rest, host=False))
    authority, slash, path = rest[2:].partition("/")
    host = authority.rpartition("@")[2]
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            raise ValueError("missing ']' in host")
        port = host[end + 1 :]
    else:
        colon = host.rfind(":")
        port = host[colon:] if colon >= 0 else ""
    if not _valid_optional_port(port):
        raise ValueError(f"invalid port {port!r} after host")
    return _URL(_unescape(host, host=True), _unescape(slash + path, host=False))


def _split_host_port(hostport: str) -> tuple[str, str]:
    """``net.SplitHostPort``, falling back to ``(hostport, "")`` on its errors."""
    if hostport.startswith("["):
        end = hostport.find("]")
        rest = hostport[end + 1 :] if end >= 0 else ""
        if end < 0 or not rest.startswith(":") or ":" in rest[1:]:
            return hostport, ""
        return hostport[1:end], rest[1:]
    colon = hostport.rfind(":")
    if colon < 0 or ":" in hostport[:colon]:
        return hostport, ""
    return hostport[:colon], hostport[colon + 1 :]


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Go ``filepath.Match`` syntax as a regex; ValueError for ``ErrBadPattern``."""

    def escaped(i: int) -> tuple[str, int]:  # getEsc
        if i >= len(pattern) or pattern[i] in "-]":
            raise ValueError("syntax error in pattern")
        if pattern[i] == "\\":
            i += 1
            if i >= len(pattern):
                raise ValueError("syntax error in pattern")
        if i + 1 >= len(pattern):
            raise ValueError("syntax error in pattern")
        return pattern[i], i + 1

    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "*":
            out.append("[^/]*")
            i += 1
        elif char == "?":
            out.append("[^/]")
            i += 1
        elif char == "\\":
            if i + 1 >= len(pattern):
                raise ValueError("syntax error in pattern")
            out.append(re.escape(pattern[i + 1]))
            i += 2
        elif char == "[":
            i += 1
            negated = i < len(pattern) and pattern[i] == "^"
            i += negated
            ranges: list[tuple[str, str]] = []
            while not (i < len(pattern) and pattern[i] == "]" and ranges):
                lo, i = escaped(i)
                hi = lo
                if pattern[i] == "-":
                    hi, i = escaped(i + 1)
                ranges.append((lo, hi))
            i += 1
            body = "".join(f"{re.escape(lo)}-{re.escape(hi)}" for lo, hi in ranges if lo <= hi)
            if not body:
                out.append("." if negated else "(?!)")
            else:
                out.append(f"[{'^' if negated else ''}{body}]")
        else:
            out.append(re.escape(char))
            i += 1
    return re.compile("".join(out), re.DOTALL)


def go_path_match(pattern: str, name: str) -> bool:
    """Go's ``filepath.Match(pattern, name)``; a malformed pattern matches nothing."""
    try:
        return _glob_regex(pattern).fullmatch(name) is not None
    except ValueError:
        return False


def urls_match(glob: str, target: str) -> bool:
    """``URLsMatchStr``: does the keyring key (or ``matchImages`` entry) ``glob`` cover ``target``?"""
    try:
        glob_url = parse_url("https://" + glob)
        target_url = parse_url("https://" + target)
    except ValueError:
        return False
    glob_host, glob_port = _split_host_port(glob_url.host)
    target_host, target_port = _split_host_port(target_url.host)
    if glob_port != target_port:
        return False
    glob_parts, target_parts = glob_host.split("."), target_host.split(".")
    if len(glob_parts) != len(target_parts):
        return False
    if not target_url.path.startswith(glob_url.path):
        return False
    return all(go_path_match(g, t) for g, t in zip(glob_parts, target_parts, strict=True))


def is_default_registry_match(image: str) -> bool:
    """``isDefaultRegistryMatch``: would ``image`` be pulled from Docker Hub?"""
    first, sep, _ = image.partition("/")
    if not first:
        return False
    if not sep or first in ("docker.io", DEFAULT_REGISTRY_HOST):
        return True
    return not any(c in first for c in ".:")


def keyring_key(location: str) -> str | None:
    """The index key ``BasicDockerKeyring.Add`` derives from a config key; None if unparsable."""
    value = location if location.startswith(("https://", "http://")) else "https://" + location
    try:
        parsed = parse_url(value)
    except ValueError as exc:
        shown = redact_userinfo(location)
        # The parser's message may quote part of a userinfo it misread as host or port.
        error = str(exc) if shown == location else "invalid URL"
        log.warning("keyring.entry_invalid", entry=shown, error=error)
        return None
    path = parsed.path
    if path.startswith(("/v2/", "/v1/")):
        path = path[3:]
    return parsed.host + path if path and path != "/" else parsed.host


class BasicKeyring:
    """``BasicDockerKeyring``: a reverse-sorted index of keys, each with its credentials."""

    def __init__(self) -> None:
        self._index: list[str] = []
        self._creds: dict[str, list[SourcedCredentials]] = {}

    def add(self, source: SecretSource | None, config: Mapping[str, DockerConfigEntry]) -> None:
        """Add every entry of ``config``, tagged with ``source`` (None: node or plugin)."""
        for location, entry in config.items():
            key = keyring_key(location)
            if key is None:
                continue
            creds = SourcedCredentials(
                username=entry.username,
                password=entry.password,
                identity_token=entry.identity_token,
                registry_token=entry.registry_token,
                email=entry.email,
                source=source,
            )
            self._creds.setdefault(key, []).append(creds)
        self._index = sorted(self._creds, reverse=True)

    def keys(self) -> list[str]:
        """The index, in lookup order."""
        return list(self._index)

    def lookup(self, image: str) -> list[SourcedCredentials]:
        """Every credential whose key matches ``image`` (a repository without tag or digest)."""
        found: list[SourcedCredentials] = []
        for key in self._index:
            if urls_match(key, image):
                found.extend(self._creds[key])
        if not found and is_default_registry_match(image):
            found.extend(self._creds.get(DEFAULT_REGISTRY_HOST, ()))
        return found

    def __len__(self) -> int:
        return len(self._index)


@dataclass(frozen=True, slots=True)
class UnionKeyring:
    """``UnionDockerKeyring``: the answers of several keyrings, concatenated in order."""

    keyrings: Sequence[Keyring]

    def lookup(self, image: str) -> list[SourcedCredentials]:
        return [creds for keyring in self.keyrings for creds in keyring.lookup(image)]
