"""Exec credential provider plugins: run, decode, cache (KEP-2133).

Models ``pkg/credentialprovider/plugin/plugin.go``:

- a plugin is asked only for images one of its ``matchImages`` globs covers (keyring URL rules);
- it runs as ``<bin-dir>/<name> args...`` with the kubelet's environment plus ``env`` (later
  names win), gets ``{"kind":"CredentialProviderRequest","apiVersion":...,"image":...}`` on stdin
  and must print a ``CredentialProviderResponse`` of the same apiVersion within 1 minute;
- a non-zero exit, a timeout or an undecodable answer gives no credentials (the image is pulled as
  if the plugin had said nothing), a warning log and ``plugin_errors_total`` for exec failures;
  the plugin's output is never logged: it may hold credentials;
- answers are cached by ``cacheKeyType``: ``Image`` (the repository), ``Registry`` (the host) or
  ``Global``, for ``cacheDuration`` (absent: ``defaultCacheDuration``; 0: not cached); lookups
  try image, registry, then global; expired entries are purged at most every 15 minutes;
- identical concurrent requests share one exec (``singleflight``, keyed by image; here
  :class:`~kubelet_sim.core.singleflight.SingleFlight`). Upstream runs the shared exec under
  ``context.Background()``, so no caller's cancellation reaches the others; here a caller that is
  cancelled while its exec runs kills that exec, and one of the waiters execs the plugin itself.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from subprocess import PIPE
from typing import Protocol

import anyio
import anyio.abc
import structlog

from kubelet_sim.core.durations import parse_go_duration
from kubelet_sim.core.singleflight import SingleFlight
from kubelet_sim.credentials.dockerconfig import DockerConfig, DockerConfigEntry
from kubelet_sim.credentials.keyring import urls_match
from kubelet_sim.credentials.plugin_config import CredentialProvider, plugin_executable

__all__ = ["EXEC_TIMEOUT", "PluginMetrics", "PluginProvider"]

log = structlog.get_logger(__name__)

EXEC_TIMEOUT = 60.0  # plugin.go: context.WithTimeout(ctx, 1*time.Minute)
CACHE_PURGE_INTERVAL = 15 * 60.0
GLOBAL_CACHE_KEY = "global"
MAX_STDOUT = 1024 * 1024
MAX_STDERR = 64 * 1024
_CACHE_KEY_TYPES = ("Image", "Registry", "Global")
_RESPONSE_FIELDS = frozenset({"kind", "apiVersion", "cacheKeyType", "cacheDuration", "auth"})


class PluginMetrics(Protocol):
    """What a plugin reports (:class:`~kubelet_sim.credentials.metrics.CredentialMetrics`)."""

    def plugin_error(self, plugin: str) -> None: ...

    def plugin_duration(self, plugin: str, seconds: float) -> None: ...


class _PluginFailed(Exception):
    """Internal: the plugin gave no usable answer (the message is safe to log)."""


@dataclass(frozen=True, slots=True)
class _Response:
    cache_key_type: str
    cache_duration: float | None
    auth: dict[str, DockerConfigEntry] = field(repr=False)


def registry_of(image: str) -> str:
    """``parseRegistry``: the image's first path component (host[:port])."""
    return image.split("/")[0]


def _is_text(value: str) -> bool:
    """Encodable as UTF-8: JSON's ``\\ud800`` escapes decode to lone surrogates, which are not."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def decode_response(stdout: bytes, api_version: str) -> _Response:
    """Check and decode a plugin's answer (strict: unknown fields are errors).

    Raises:
        _PluginFailed: with a message that never quotes the answer.
    """
    try:
        doc = json.loads(stdout)
    except (ValueError, RecursionError):  # not UTF-8/JSON, too many digits, brackets too deep
        raise _PluginFailed("error reading GVK from response: not JSON") from None
    if not isinstance(doc, dict):
        raise _PluginFailed("error reading GVK from response: not a JSON object")
    actual = doc.get("apiVersion")
    if actual != api_version:
        shown = "<invalid>"
        if isinstance(actual, str) and len(actual) < 100 and actual.isascii():
            shown = actual if actual.isprintable() else shown
        raise _PluginFailed(
            "apiVersion from credential plugin response did not match expected "
            f"apiVersion:{api_version}, actual apiVersion:{shown}"
        )
    decode_error = _PluginFailed("error decoding credential provider plugin response from stdout")
    if doc.get("kind") != "CredentialProviderResponse" or set(doc) - _RESPONSE_FIELDS:
        raise decode_error
    key_type = doc.get("cacheKeyType", "")
    if not isinstance(key_type, str):
        raise decode_error
    duration: float | None = None
    if doc.get("cacheDuration") is not None:
        if not isinstance(doc["cacheDuration"], str):
            raise decode_error
        try:
            duration = parse_go_duration(doc["cacheDuration"])
        except ValueError:
            raise decode_error from None
    auth: dict[str, DockerConfigEntry] = {}
    raw_auth = doc.get("auth") or {}
    if not isinstance(raw_auth, dict):
        raise decode_error
    for key, value in raw_auth.items():
        if not isinstance(value, dict) or set(value) - {"username", "password"}:
            raise decode_error
        username, password = value.get("username", ""), value.get("password", "")
        if not isinstance(username, str) or not isinstance(password, str):
            raise decode_error
        if not (_is_text(key) and _is_text(username) and _is_text(password)):
            raise decode_error  # a lone surrogate escape ("\ud800") cannot be sent to a registry
        auth[key] = DockerConfigEntry(username=username, password=password)
    if key_type not in _CACHE_KEY_TYPES:
        shown = key_type if len(key_type) < 100 and _is_text(key_type) else "<invalid>"
        raise _PluginFailed(
            f"credential provider plugin did not return a valid cacheKeyType: {json.dumps(shown)}"
        )
    return _Response(key_type, duration, auth)


async def _run(argv: list[str], request: bytes, env: Mapping[str, str]) -> tuple[int, bytes, int]:
    """Run the plugin; (exit status, capped stdout, stderr size). Killed when cancelled."""
    out = bytearray()
    err_size = 0

    async def drain(stream: anyio.abc.ByteReceiveStream, keep: bool) -> None:
        nonlocal err_size
        async for chunk in stream:
            if keep:
                out.extend(chunk[: max(0, MAX_STDOUT + 1 - len(out))])
            else:
                err_size += len(chunk)

    process = await anyio.open_process(argv, stdin=PIPE, stdout=PIPE, stderr=PIPE, env=dict(env))
    try:
        async with process:
            assert process.stdin is not None
            assert process.stdout is not None
            assert process.stderr is not None
            async with anyio.create_task_group() as tg:
                tg.start_soon(drain, process.stdout, True)
                tg.start_soon(drain, process.stderr, False)
                with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                    await process.stdin.send(request)
                await process.stdin.aclose()
                status = await process.wait()
    except BaseException:
        with anyio.CancelScope(shield=True), suppress(ProcessLookupError):
            process.kill()
            await process.wait()
        raise
    return status, bytes(out), err_size


class PluginProvider:
    """One configured plugin: match, cache, single-flight, exec (``pluginProvider``)."""

    def __init__(
        self,
        provider: CredentialProvider,
        bin_dir: Path,
        *,
        timeout: float = EXEC_TIMEOUT,
        clock: Callable[[], float] = anyio.current_time,
        metrics: PluginMetrics | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        """Raises ConfigError when the executable is missing (``RegisterCredentialProviderPlugins``)."""
        self.provider = provider
        self.executable = plugin_executable(bin_dir, provider.name)
        self.timeout = timeout
        self.clock = clock
        self.metrics = metrics
        self._environ = dict(os.environ if environ is None else environ)
        self._cache: dict[str, tuple[DockerConfig, float]] = {}
        self._last_purge = clock()
        self._execs: SingleFlight[str, DockerConfig] = SingleFlight()
        self.execs = 0

    @property
    def name(self) -> str:
        return self.provider.name

    def matches(self, image: str) -> bool:
        """``isImageAllowed``: some ``matchImages`` glob covers ``image``."""
        return any(urls_match(glob, image) for glob in self.provider.match_images)

    def _cached(self, image: str) -> DockerConfig | None:
        now = self.clock()
        if now > self._last_purge + CACHE_PURGE_INTERVAL:
            self._cache = {k: v for k, v in self._cache.items() if now <= v[1]}
            self._last_purge = now
        for key in (image, registry_of(image), GLOBAL_CACHE_KEY):
            entry = self._cache.get(key)
            if entry is None:
                continue
            if now > entry[1]:
                del self._cache[key]
                continue
            return entry[0]
        return None

    async def provide(self, image: str) -> DockerConfig:
        """The plugin's registries for ``image`` (a repository name); empty on any failure."""
        if not self.matches(image):
            return {}
        cached = self._cached(image)
        if cached is not None:
            return cached
        return await self._execs.run(image, partial(self._provide, image))

    async def _provide(self, image: str) -> DockerConfig:
        try:
            response = await self._exec(image)
        except _PluginFailed as exc:
            log.warning("credential_provider.failed", plugin=self.name, image=image, error=str(exc))
            return {}
        key = {"Image": image, "Registry": registry_of(image), "Global": GLOBAL_CACHE_KEY}[
            response.cache_key_type
        ]
        duration = response.cache_duration
        if duration is None:
            duration = self.provider.default_cache_duration
        if duration > 0:
            self._cache[key] = (response.auth, self.clock() + duration)
        log.info(
            "credential_provider.answered",
            plugin=self.name,
            image=image,
            registries=sorted(response.auth),
            cache_key_type=response.cache_key_type,
            cache_seconds=duration,
        )
        return response.auth

    async def _exec(self, image: str) -> _Response:
        request = json.dumps(
            {
                "kind": "CredentialProviderRequest",
                "apiVersion": self.provider.api_version,
                "image": image,
            },
            separators=(",", ":"),
        ).encode()
        env = {**self._environ, **{v.name: v.value for v in self.provider.env}}
        argv = [str(self.executable), *self.provider.args]
        what = f"error execing credential provider plugin {self.name} for image {image}"
        self.execs += 1
        started = anyio.current_time()
        try:
            with anyio.fail_after(self.timeout):
                status, stdout, stderr_size = await _run(argv, request + b"\n", env)
        except TimeoutError:
            self._error()
            raise _PluginFailed(f"{what}: context deadline exceeded") from None
        except OSError as exc:
            self._error()
            raise _PluginFailed(f"{what}: {exc.strerror or type(exc).__name__}") from None
        except ValueError:  # an argv or environment entry the OS cannot take (NUL, "=")
            self._error()
            raise _PluginFailed(f"{what}: invalid argument") from None
        finally:
            if self.metrics is not None:
                self.metrics.plugin_duration(self.name, anyio.current_time() - started)
        if status != 0:
            self._error()
            # stderr is not quoted: a plugin may print credentials there.
            raise _PluginFailed(f"{what}: exit status {status} ({stderr_size} bytes on stderr)")
        if len(stdout) > MAX_STDOUT:
            raise _PluginFailed(f"{what}: more than {MAX_STDOUT} bytes on stdout")
        return decode_response(stdout, self.provider.api_version)

    def _error(self) -> None:
        if self.metrics is not None:
            self.metrics.plugin_error(self.name)
