"""Registry host configuration: containerd ``hosts.toml`` mirrors, TLS and per-host settings.

Models ``containerd/core/remotes/docker/config/hosts.go`` (``ConfigureHosts``, ``parseHostsFile``,
``loadCertFiles``) and ``docs/hosts.md``. For a registry ``myregistry.io:5000`` the folders
``myregistry.io_5000_``, ``myregistry.io:5000`` and ``_default`` under the hosts directory are
tried in that order. The host list is the ``[host."..."]`` tables in file order, then ``server``
(or the registry's own upstream), always last. A folder without ``hosts.toml`` is read with
Docker's certificate layout (``*.crt`` CAs, ``*.cert``/``*.key`` client pairs).

Unlike containerd, which logs a malformed ``hosts.toml`` and carries on without it, a malformed
file raises :class:`~kubelet_sim.errors.ConfigError` naming the file and the key: silently
skipping a mirror or a CA is worse than failing loudly.
"""

from __future__ import annotations

import functools
import ipaddress
import posixpath
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

import structlog

from kubelet_sim.core.durations import parse_go_duration
from kubelet_sim.errors import ConfigError

log = structlog.get_logger(__name__)

PULL = "pull"
RESOLVE = "resolve"
PUSH = "push"
REFERRERS = "referrers"
DEFAULT_CAPABILITIES = frozenset({PULL, RESOLVE, PUSH})
# Newer containerd also accepts "referrers"; kept when listed, never added by default.
KNOWN_CAPABILITIES = DEFAULT_CAPABILITIES | {REFERRERS}

DOCKER_HUB = "docker.io"
DOCKER_HUB_API_HOST = "registry-1.docker.io"
DEFAULT_FOLDER = "_default"
HOSTS_FILE = "hosts.toml"

# fail(key, message) -> ConfigError naming the file and the full dotted key.
_Fail = Callable[[str, str], ConfigError]


@dataclass(frozen=True, slots=True)
class RegistryHost:
    """One endpoint to try for a registry, with what it may be trusted to do."""

    host: str  # host[:port], no userinfo
    scheme: str = "https"
    path: str = "/v2"
    capabilities: frozenset[str] = DEFAULT_CAPABILITIES
    ca_files: tuple[Path, ...] = ()
    client_certs: tuple[tuple[Path, Path | None], ...] = ()
    skip_verify: bool = False
    # Header values may carry credentials: kept out of repr.
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    override_path: bool = False
    # Retry over plain HTTP when HTTPS fails (containerd NewHTTPFallback).
    allow_http_fallback: bool = False
    dial_timeout: float | None = None  # seconds; None = the transport's default

    def base_url(self) -> str:
        """``scheme://host/path``, e.g. ``https://registry-1.docker.io/v2``."""
        return f"{self.scheme}://{self.host}{self.path}"


@dataclass(frozen=True, slots=True)
class _HostConfig:
    """hosts.go ``hostConfig``: a parsed entry before the defaults are filled in."""

    scheme: str = ""
    host: str = ""
    path: str = ""
    capabilities: frozenset[str] = DEFAULT_CAPABILITIES
    ca_files: tuple[Path, ...] | None = None
    client_certs: tuple[tuple[Path, Path | None], ...] | None = None
    skip_verify: bool | None = None
    headers: tuple[tuple[str, str], ...] = ()
    override_path: bool = False
    dial_timeout: float | None = None


def registry_hosts(registry: str, hosts_dir: Path | None) -> list[RegistryHost]:
    """The ordered endpoints to try for ``registry`` (containerd ``ConfigureHosts``).

    Args:
        registry: the registry host namespace, ``host[:port]`` as in the image reference.
        hosts_dir: the ``certs.d``-style directory; ``None`` or missing means defaults only.

    Raises:
        ConfigError: a malformed ``hosts.toml`` (names the file and the key), or an unreadable file.
    """
    if hosts_dir is None:
        return list(_default_hosts(registry))
    folder = _host_folder(registry, hosts_dir)
    configs = [_HostConfig()] if folder is None else _load_folder(folder)
    if configs and not configs[-1].host:
        configs[-1] = _default_upstream(registry, configs[-1])
    if folder is not None:
        log.debug(
            "registry_hosts_loaded", registry=registry, folder=str(folder), hosts=len(configs)
        )
    return [_finish(c) for c in configs]


@functools.lru_cache(maxsize=1024)
def _default_hosts(registry: str) -> tuple[RegistryHost, ...]:
    """The endpoints of ``registry`` without a hosts folder: a pure function of the name,
    computed once (every pull of every simulated node asks for them)."""
    return (_finish(_default_upstream(registry, _HostConfig())),)


def hosts_for(capability: str, hosts: list[RegistryHost]) -> list[RegistryHost]:
    """The hosts trusted with ``capability`` (``pull``, ``resolve``, ``push``), order kept."""
    return [h for h in hosts if capability in h.capabilities]


@functools.lru_cache(maxsize=1024)
def is_localhost(host: str) -> bool:
    """``localhost`` or a loopback IP, with or without a port (``docker.IsLocalhost``)."""
    name, _ = _split_host_port(host)
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_directory(host: str) -> str:
    """Folder name without a colon: ``host:port`` -> ``host_port_`` (hosts.go ``hostDirectory``)."""
    idx = host.rfind(":")
    return f"{host[:idx]}_{host[idx + 1 :]}_" if idx > 0 else host


def _host_folder(registry: str, hosts_dir: Path) -> Path | None:
    # models config_unix.go: hostPaths + hosts.go: HostDirFromRoot
    if not registry or registry in (".", "..") or "/" in registry or "\\" in registry:
        raise ConfigError(str(hosts_dir), "registry", f"not a registry host name: {registry!r}")
    names = [host_directory(registry)] if host_directory(registry) != registry else []
    for name in [*names, registry, DEFAULT_FOLDER]:
        candidate = hosts_dir / name
        try:
            if candidate.is_dir():
                return candidate
        except OSError as exc:
            # containerd's HostDirFromRoot returns any os.Stat error but "not exist": a domain of
            # 256+ characters (the reference grammar has no length bound) is ENAMETOOLONG.
            shown = registry if len(registry) <= 100 else f"{registry[:100]}..."
            raise ConfigError(
                str(hosts_dir),
                "registry",
                f"cannot look up the hosts folder for {shown!r}: {exc.strerror or exc}",
            ) from None
    return None


def _load_folder(folder: Path) -> list[_HostConfig]:
    # models hosts.go: loadHostDir
    file = folder / HOSTS_FILE
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raw = b""
    except OSError as exc:
        raise ConfigError(str(file), None, f"cannot read: {exc.strerror or exc}") from exc
    if not raw:
        return _load_cert_files(folder)
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(str(file), None, "not UTF-8 text") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(file), None, f"invalid TOML: {exc}") from exc
    except RecursionError:  # tomllib recurses once per nested array or table
        raise ConfigError(str(file), None, "invalid TOML: nested too deeply") from None
    except ValueError:  # int() of more digits than sys.int_max_str_digits (not a TOMLDecodeError)
        message = f"invalid TOML: a number has more than {sys.get_int_max_str_digits()} digits"
        raise ConfigError(str(file), None, message) from None
    return _parse_hosts_file(file, data)


def _load_cert_files(folder: Path) -> list[_HostConfig]:
    # models hosts.go: loadCertFiles (Docker's certs.d layout)
    try:
        files = sorted(p for p in folder.iterdir() if not p.is_dir())
    except OSError as exc:
        raise ConfigError(str(folder), None, f"cannot list: {exc.strerror or exc}") from exc
    cas = tuple(p for p in files if p.name.endswith(".crt"))
    pairs: list[tuple[Path, Path | None]] = []
    for cert in (p for p in files if p.name.endswith(".cert")):
        key = cert.with_name(cert.name.removesuffix(".cert") + ".key")
        pairs.append((cert, key if key.exists() else None))
    return [_HostConfig(ca_files=cas or None, client_certs=tuple(pairs) or None)]


def _parse_hosts_file(file: Path, data: Mapping[str, object]) -> list[_HostConfig]:
    # models hosts.go: parseHostsFile — mirrors in file order, then the server, always last.
    server = data.get("server", "")
    if not isinstance(server, str):
        raise ConfigError(str(file), "server", f"must be a string, got {_type(server)}")
    tables = data.get("host", {})
    if not isinstance(tables, Mapping):
        raise ConfigError(str(file), "host", f'must be tables [host."<url>"], got {_type(tables)}')
    hosts: list[_HostConfig] = []
    for url, table in tables.items():
        where = f'host."{_without_userinfo(url)}"'
        if not isinstance(table, Mapping):
            raise ConfigError(str(file), where, f"must be a table, got {_type(table)}")
        hosts.append(_parse_host_config(file, where + ".", url, table))
    hosts.append(_parse_host_config(file, "", server, data))
    return hosts


_KNOWN_KEYS = frozenset(
    {"capabilities", "ca", "client", "skip_verify", "header", "override_path", "dial_timeout"}
)


def _parse_host_config(
    file: Path, prefix: str, server: str, table: Mapping[str, object]
) -> _HostConfig:
    # models hosts.go: parseHostConfig
    def fail(key: str, message: str) -> ConfigError:
        return ConfigError(str(file), prefix + key if key else prefix.rstrip("."), message)

    base = file.parent
    override_path = _bool(table, "override_path", fail) or False
    result = _HostConfig(override_path=override_path, skip_verify=_bool(table, "skip_verify", fail))
    if server:
        # The root's URL lives under "server"; a mirror's is its table name.
        result = _parse_server(server, "" if prefix else "server", override_path, result, fail)
    unknown = sorted(k for k in table if k not in _KNOWN_KEYS and k not in ("server", "host"))
    if unknown:
        log.debug("hosts_toml_keys_ignored", file=str(file), keys=[prefix + k for k in unknown])

    caps = table.get("capabilities")
    if caps is not None:
        names = _strings(caps, "capabilities", fail)
        bad = [c for c in names if c.lower() not in KNOWN_CAPABILITIES]
        if bad:
            raise fail("capabilities", f"unknown capability {bad[0]!r}")
        if names:
            result = replace(result, capabilities=frozenset(c.lower() for c in names))

    ca = table.get("ca")
    if ca is not None:
        paths = [ca] if isinstance(ca, str) else _strings(ca, "ca", fail)
        result = replace(result, ca_files=tuple(_abs_path(p, base, "ca", fail) for p in paths))

    client = table.get("client")
    if client is not None:
        result = replace(result, client_certs=_client_pairs(client, base, fail))

    header = table.get("header")
    if header is not None:
        result = replace(result, headers=_headers(header, fail))

    timeout = table.get("dial_timeout")
    if timeout is not None:
        if not isinstance(timeout, str):
            raise fail("dial_timeout", f'must be a duration string like "3s", got {_type(timeout)}')
        try:
            seconds = parse_go_duration(timeout)
        except ValueError as exc:
            raise fail("dial_timeout", str(exc)) from exc
        if seconds < 0:
            raise fail("dial_timeout", f"must not be negative, got {timeout!r}")
        result = replace(result, dial_timeout=seconds)
    return result


def _parse_server(
    server: str, key: str, override_path: bool, result: _HostConfig, fail: _Fail
) -> _HostConfig:
    if not server.startswith("http") and "://" not in server:
        server = "https://" + server
    try:
        parts = urlsplit(server)
    except ValueError:  # "http://[::1": an unclosed IPv6 literal
        raise fail(key, f"not an http(s) URL: {_without_userinfo(server)!r}") from None
    netloc = _without_userinfo(parts.netloc)
    try:
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port that is not a number
        valid = False
    if not valid:
        raise fail(key, f"not an http(s) URL: {_without_userinfo(server)!r}")
    path = parts.path
    if path:
        path = "/" + posixpath.normpath(path).lstrip("/")
        if path == "/":
            path = ""
    if path:
        if not path.endswith("/v2") and not override_path:
            path += "/v2"
    elif not override_path:
        path = "/v2"
    return replace(result, scheme=parts.scheme, host=netloc, path=path)


def _client_pairs(value: object, base: Path, fail: _Fail) -> tuple[tuple[Path, Path | None], ...]:
    # string | [string] | [[cert, key]] where an empty key means "key in the cert file"
    if isinstance(value, str):
        return ((_abs_path(value, base, "client", fail), None),)
    if not isinstance(value, list):
        raise fail(
            "client", f"must be a path, a list of paths or [cert, key] pairs, got {_type(value)}"
        )
    pairs: list[tuple[Path, Path | None]] = []
    for item in value:
        if isinstance(item, str):
            pairs.append((_abs_path(item, base, "client", fail), None))
            continue
        pair = _strings(item, "client", fail)
        if len(pair) != 2:
            raise fail("client", f"a [cert, key] pair needs 2 paths, got {len(pair)}")
        key = _abs_path(pair[1], base, "client", fail) if pair[1] else None
        pairs.append((_abs_path(pair[0], base, "client", fail), key))
    return tuple(pairs)


def _headers(value: object, fail: _Fail) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, Mapping):
        raise fail("header", f"must be a table of name = value, got {_type(value)}")
    out: list[tuple[str, str]] = []
    for name, raw in value.items():
        # Values are never echoed: a header may carry a credential.
        values = [raw] if isinstance(raw, str) else _strings(raw, f"header.{name}", fail)
        if any("\r" in v or "\n" in v for v in values):
            raise fail(f"header.{name}", "header values must not contain line breaks")
        out += [(name, v) for v in values]
    return tuple(out)


def _default_upstream(registry: str, config: _HostConfig) -> _HostConfig:
    # models hosts.go: ConfigureHosts, the defaulted last host (no DefaultScheme set)
    if registry == DOCKER_HUB:
        config = replace(config, scheme="https", host=DOCKER_HUB_API_HOST)
    elif is_localhost(registry):
        _, port = _split_host_port(registry)
        config = replace(config, host=registry, scheme="https" if port in ("", "443") else "http")
        if port != "80":  # the protocol is ambiguous: trust a self-signed local registry
            config = replace(config, skip_verify=True)
    else:
        config = replace(config, host=registry, scheme="https")
    return replace(config, path="/v2", capabilities=DEFAULT_CAPABILITIES)


def _finish(config: _HostConfig) -> RegistryHost:
    # An http host with TLS settings tries HTTPS first, then plain HTTP (hosts.go NewHTTPFallback).
    explicit_tls = (
        config.ca_files is not None
        or config.client_certs is not None
        or config.skip_verify is not None
    )
    scheme, fallback = config.scheme, False
    if scheme == "http" and explicit_tls and _split_host_port(config.host)[1] != "80":
        scheme, fallback = "https", True
    return RegistryHost(
        host=config.host,
        scheme=scheme,
        path=config.path,
        capabilities=config.capabilities,
        ca_files=config.ca_files or (),
        client_certs=config.client_certs or (),
        skip_verify=bool(config.skip_verify),
        headers=config.headers,
        override_path=config.override_path,
        allow_http_fallback=fallback,
        dial_timeout=config.dial_timeout,
    )


# --- small helpers ---------------------------------------------------------------------------


def _type(value: object) -> str:
    return type(value).__name__


def _bool(table: Mapping[str, object], key: str, fail: _Fail) -> bool | None:
    value = table.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise fail(key, f"must be true or false, got {_type(value)}")


def _strings(value: object, key: str, fail: _Fail) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise fail(key, f"must be a string or a list of strings, got {_type(value)}")
    return list(value)


def _abs_path(value: str, base: Path, key: str, fail: _Fail) -> Path:
    # hosts.go makeAbsPath: relative paths are relative to the hosts.toml folder.
    if not value:
        raise fail(key, "empty path")
    path = Path(value)
    return path if path.is_absolute() else base / path


def _without_userinfo(url: str) -> str:
    scheme, sep, rest = url.rpartition("://")
    netloc, slash, tail = rest.partition("/")
    return f"{scheme}{sep}{netloc.rpartition('@')[2]}{slash}{tail}"


def _split_host_port(host: str) -> tuple[str, str]:
    """``net.SplitHostPort`` leniently: ``("::1", "")`` for a bare IPv6, brackets removed."""
    if host.startswith("["):
        end = host.find("]")
        if end > 0:
            rest = host[end + 1 :]
            return host[1:end], rest[1:] if rest.startswith(":") else ""
    if host.count(":") == 1:
        name, _, port = host.partition(":")
        return name, port
    return host, ""
