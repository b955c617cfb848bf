"""The OCI pull path: resolve a reference, pick a platform, stream verified blobs.

Models containerd's resolver and fetcher (``core/remotes/docker/resolver.go``, ``fetcher.go``,
``httpreadseeker.go``): a tag is resolved once with ``HEAD`` (trusting ``Docker-Content-Digest`` only
when ``Content-Length`` is present, else ``GET`` and hash), and everything after that is fetched by
digest. Manifests are size-capped and verified; blobs stream into a :class:`~kubelet_sim.core.sinks.BlobSink`
with bounded memory, stop at the descriptor's size, resume with closed ``Range`` requests and are
verified by the sink before it commits.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import anyio
import httpx
import structlog

from kubelet_sim.core.credentials import Credentials
from kubelet_sim.core.digest import Digest
from kubelet_sim.core.platforms import Platform, host_platform, select_manifest
from kubelet_sim.core.reference import ImageReference
from kubelet_sim.core.sinks import BlobSink, MemorySink
from kubelet_sim.errors import (
    DigestMismatchError,
    InvalidDigestError,
    ManifestError,
    RegistryAuthError,
    RegistryError,
    RegistryNotFoundError,
    RegistryTransportError,
    first_error,
)
from kubelet_sim.registry import mediatypes as mt
from kubelet_sim.registry.auth import scope_for
from kubelet_sim.registry.boundary import read_capped, translate_errors
from kubelet_sim.registry.hosts import RegistryHost, hosts_for, registry_hosts
from kubelet_sim.registry.manifests import (
    Descriptor,
    ImageIndex,
    ImageManifest,
    clean_media_type,
    parse_manifest,
    verify_content,
)
from kubelet_sim.registry.transport import Transport, redact_url

log = structlog.get_logger(__name__)

T = TypeVar("T")

ProgressFn = Callable[[Descriptor, int], None]
"""Called with a blob's descriptor and the bytes received so far."""

MAX_INDEX_DEPTH = 4
MAX_CONFIG_SIZE = 8 * 1024 * 1024
MAX_NO_PROGRESS_RETRIES = 3


@dataclass(frozen=True, slots=True)
class ResolvedImage:
    """A reference resolved down to one platform's manifest and config."""

    reference: ImageReference
    descriptor: Descriptor
    manifest_descriptor: Descriptor
    manifest: ImageManifest
    config: bytes = field(repr=False)
    platform: Platform | None
    index: ImageIndex | None = None

    @property
    def repo_digest(self) -> str:
        """``name@digest`` of what the reference resolved to (index or manifest)."""
        return f"{self.reference.name}@{self.descriptor.digest}"

    @property
    def image_id(self) -> Digest:
        """The image ID: the config digest."""
        return self.manifest.config.digest

    @property
    def size(self) -> int:
        return self.manifest.size


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """Pull-path settings; the defaults are containerd's."""

    max_concurrent_downloads: int = 3
    max_manifest_size: int = mt.MAX_MANIFEST_SIZE
    read_chunk_size: int = 1024 * 1024


class RegistryClient:
    """Async OCI distribution client for pulls (push lives in :mod:`kubelet_sim.registry.push`)."""

    def __init__(
        self,
        transport: Transport | None = None,
        *,
        hosts_dir: Path | None = None,
        settings: ClientSettings | None = None,
    ) -> None:
        self.transport = transport or Transport()
        self.hosts_dir = hosts_dir
        self.settings = settings or ClientSettings()

    async def aclose(self) -> None:
        await self.transport.aclose()

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def hosts(self, ref: ImageReference, capability: str) -> list[RegistryHost]:
        """Hosts to try for ``ref`` with ``capability``, mirrors first, upstream last."""
        return hosts_for(capability, registry_hosts(ref.domain, self.hosts_dir))

    async def _on_hosts(
        self,
        ref: ImageReference,
        capability: str,
        creds: Credentials | None,
        call: Callable[[RegistryHost, Credentials | None, dict[str, str]], Awaitable[T]],
    ) -> T:
        """Run ``call`` on each host in turn until one succeeds (containerd's host fallback).

        Upstream credentials go to the upstream host only; mirrors get ``ns=<registry>``.
        """
        all_hosts = registry_hosts(ref.domain, self.hosts_dir)
        upstream = all_hosts[-1].host if all_hosts else ""
        candidates = hosts_for(capability, all_hosts)
        if not candidates:
            raise RegistryError(f"no host for {ref.domain} has the {capability!r} capability")
        best: RegistryError | None = None
        for host in candidates:
            is_upstream = host.host == upstream
            params = {} if is_upstream else {"ns": ref.domain}
            try:
                return await call(host, creds if is_upstream else None, params)
            except (RegistryNotFoundError, RegistryTransportError, RegistryAuthError) as exc:
                if host is candidates[-1] or best is None or _rank(exc) >= _rank(best):
                    best = exc
                log.info("registry.next_host", host=host.host, error=str(exc))
            except ManifestError:
                raise
            except RegistryError as exc:
                best = exc
                log.info("registry.next_host", host=host.host, error=str(exc))
        assert best is not None
        raise best

    async def resolve(self, ref: ImageReference, creds: Credentials | None = None) -> Descriptor:
        """Resolve ``ref`` to the descriptor of its manifest or index."""
        scope = scope_for(ref.repository, ("pull",))
        path = f"/{ref.repository}/manifests/{ref.identifier}"

        async def on_host(
            host: RegistryHost, host_creds: Credentials | None, params: dict[str, str]
        ) -> Descriptor:
            headers = {"Accept": mt.ACCEPT_HEADER}
            try:
                async with self.transport.open(
                    "HEAD",
                    host,
                    path,
                    scope=scope,
                    creds=host_creds,
                    headers=headers,
                    params=params,
                ) as response:
                    desc = self._descriptor_from_head(ref, response)
                if desc is not None:
                    return desc
            except RegistryAuthError:
                raise
            except RegistryError as exc:
                # HEAD answers have no body: GET to surface the error document (containerd).
                log.debug("registry.head_failed", error=str(exc))
            raw, content_type = await self._get_manifest(host, host_creds, params, path, scope)
            expected = ref.digest or Digest.from_bytes(raw)
            verify_content(raw, expected, what=f"manifest {ref}")
            media_type = clean_media_type(content_type) or _sniff_media_type(raw)
            return Descriptor(media_type=media_type, digest=expected, size=len(raw))

        return await self._on_hosts(ref, "resolve", creds, on_host)

    def _descriptor_from_head(
        self, ref: ImageReference, response: httpx.Response
    ) -> Descriptor | None:
        length = response.headers.get("content-length")
        dcd = response.headers.get("docker-content-digest")
        if length is None or dcd is None:
            return None
        try:
            digest = Digest.parse(dcd)
            size = int(length)
        except (InvalidDigestError, ValueError):
            return None
        if size > self.settings.max_manifest_size:
            raise ManifestError(f"rejecting {size} byte manifest for {ref}: over the size limit")
        if ref.digest is not None and digest != ref.digest:
            raise DigestMismatchError(str(ref.digest), str(digest), what=f"manifest {ref}")
        media_type = clean_media_type(response.headers.get("content-type"))
        return Descriptor(media_type=media_type, digest=digest, size=size)

    async def _get_manifest(
        self,
        host: RegistryHost,
        creds: Credentials | None,
        params: dict[str, str],
        path: str,
        scope: str,
    ) -> tuple[bytes, str]:
        limit = self.settings.max_manifest_size
        async with self.transport.open(
            "GET",
            host,
            path,
            scope=scope,
            creds=creds,
            headers={"Accept": mt.ACCEPT_HEADER},
            params=params,
        ) as response:
            length = response.headers.get("content-length", "")
            if length.isdigit() and int(length) > limit:
                raise ManifestError(
                    f"rejecting {length} byte manifest: over the {limit} byte limit"
                )
            raw = await read_capped(
                response, limit=limit, what=f"manifest {path}", error=ManifestError
            )
            return raw, response.headers.get("content-type", "")

    async def fetch_manifest(
        self, ref: ImageReference, desc: Descriptor, creds: Credentials | None = None
    ) -> ImageManifest | ImageIndex:
        """Fetch the manifest or index ``desc`` names, by digest, verified."""
        if desc.size > self.settings.max_manifest_size:
            raise ManifestError(
                f"rejecting {desc.size} byte manifest {desc.digest}: over the limit"
            )
        scope = scope_for(ref.repository, ("pull",))
        path = f"/{ref.repository}/manifests/{desc.digest}"

        async def on_host(
            host: RegistryHost, host_creds: Credentials | None, params: dict[str, str]
        ) -> tuple[bytes, str]:
            return await self._get_manifest(host, host_creds, params, path, scope)

        if desc.data is not None and len(desc.data) == desc.size:
            raw, content_type = desc.data, desc.media_type
        else:
            raw, content_type = await self._on_hosts(ref, "pull", creds, on_host)
        if len(raw) != desc.size and desc.size:
            raise DigestMismatchError(
                f"size {desc.size}", f"size {len(raw)}", what=f"manifest {desc.digest}"
            )
        verify_content(raw, desc.digest, what=f"manifest {desc.digest}")
        parsed = parse_manifest(raw, content_type or desc.media_type, desc.digest)
        if desc.media_type and desc.media_type in (mt.INDEX_TYPES | mt.MANIFEST_TYPES):
            kind_ok = (desc.media_type in mt.INDEX_TYPES) == isinstance(parsed, ImageIndex)
            if not kind_ok:
                raise ManifestError(
                    f"manifest {desc.digest}: descriptor says {desc.media_type} "
                    f"but the content is {parsed.media_type}"
                )
        return parsed

    async def resolve_image(
        self,
        ref: ImageReference,
        platform: Platform | None = None,
        creds: Credentials | None = None,
    ) -> ResolvedImage:
        """Resolve ``ref`` for ``platform`` (default: this host's) down to manifest and config.

        Raises:
            NoMatchingPlatformError: the index offers no manifest for the platform.
        """
        wanted = platform or host_platform()
        top = await self.resolve(ref, creds)
        current = top
        parsed = await self.fetch_manifest(ref, top, creds)
        first_index = parsed if isinstance(parsed, ImageIndex) else None
        chosen_platform: Platform | None = None
        depth = 0
        while isinstance(parsed, ImageIndex):
            depth += 1
            if depth > MAX_INDEX_DEPTH:
                raise ManifestError(f"index {top.digest}: nested deeper than {MAX_INDEX_DEPTH}")
            usable = [
                d.platform if (d.is_manifest or d.is_index) else None for d in parsed.manifests
            ]
            index = select_manifest(wanted, usable)
            current = parsed.manifests[index]
            chosen_platform = current.platform
            log.debug(
                "platform_selected",
                image=str(ref),
                wanted=str(wanted),
                chosen=str(chosen_platform),
                index=index,
            )
            parsed = await self.fetch_manifest(ref, current, creds)
        config_sink = MemorySink(parsed.config.digest.algorithm)
        if parsed.config.size > MAX_CONFIG_SIZE:
            raise ManifestError(f"config {parsed.config.digest} is larger than {MAX_CONFIG_SIZE}")
        await self.fetch_blob(ref, parsed.config, config_sink, creds)
        assert config_sink.data is not None
        return ResolvedImage(
            reference=ref,
            descriptor=top,
            manifest_descriptor=current,
            manifest=parsed,
            config=config_sink.data,
            platform=chosen_platform,
            index=first_index,
        )

    async def fetch_blob(
        self,
        ref: ImageReference,
        desc: Descriptor,
        sink: BlobSink,
        creds: Credentials | None = None,
        progress: ProgressFn | None = None,
    ) -> None:
        """Stream the blob ``desc`` into ``sink`` and commit it once size and digest check out.

        Resumes an interrupted download with a closed ``Range`` request, accepting only a ``206``
        whose ``Content-Range`` starts at the offset; anything else restarts from zero. Three
        failures in a row without progress give up. The sink is aborted on every failure.
        """
        try:
            if desc.data is not None and len(desc.data) == desc.size:
                await sink.write(desc.data)
            elif desc.size > 0:
                await self._on_hosts(
                    ref,
                    "pull",
                    creds,
                    lambda host, host_creds, params: self._stream_blob(
                        ref, host, host_creds, params, desc, sink, progress
                    ),
                )
            await sink.commit(desc.digest, desc.size)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await sink.abort()
            raise

    async def _stream_blob(
        self,
        ref: ImageReference,
        host: RegistryHost,
        creds: Credentials | None,
        params: dict[str, str],
        desc: Descriptor,
        sink: BlobSink,
        progress: ProgressFn | None,
    ) -> None:
        """Fetch the blob from one host, resuming where each failed attempt stopped."""
        scope = scope_for(ref.repository, ("pull",))
        path = f"/{ref.repository}/blobs/{desc.digest}"
        failures = 0
        while sink.written < desc.size:
            offset = sink.written
            pending = bytearray()
            try:
                await self._fetch_from(
                    host, path, scope, creds, params, desc, sink, pending, progress
                )
            except RegistryTransportError as exc:
                # What arrived before the failure is a valid prefix: keep it for the resume.
                await self._flush(pending, sink, desc, progress)
                failures = 0 if sink.written > offset else failures + 1
                if failures >= MAX_NO_PROGRESS_RETRIES:
                    raise RegistryTransportError(
                        f"GET {redact_url(self.transport.base_url(host) + path)}: "
                        f"{failures} failures without progress at byte {sink.written}: {exc}"
                    ) from exc
                log.info(
                    "registry.blob_resume",
                    digest=str(desc.digest),
                    offset=sink.written,
                    size=desc.size,
                    error=type(exc.__cause__ or exc).__name__,
                )
                continue
            if sink.written < desc.size:
                # The body ended early without a transport error (a lying Content-Length).
                failures += 1
            if failures >= MAX_NO_PROGRESS_RETRIES:
                raise DigestMismatchError(
                    f"size {desc.size}", f"size {sink.written}", what=f"blob {desc.digest}"
                )

    async def _fetch_from(
        self,
        host: RegistryHost,
        path: str,
        scope: str,
        creds: Credentials | None,
        params: dict[str, str],
        desc: Descriptor,
        sink: BlobSink,
        pending: bytearray,
        progress: ProgressFn | None,
    ) -> None:
        """One GET of the blob from ``sink.written`` on: a closed ``Range`` request when resuming.

        Bytes received but not yet handed to the sink are in ``pending`` when this raises.
        """
        offset = sink.written
        headers = {"Accept-Encoding": "identity", "Accept": f"{desc.media_type}, */*"}
        if offset:
            headers["Range"] = f"bytes={offset}-{desc.size - 1}"
        async with self.transport.open(
            "GET",
            host,
            path,
            scope=scope,
            creds=creds,
            headers=headers,
            params=params,
            ok=frozenset({200, 206}),
        ) as response:
            await self._check_blob_response(response, desc, sink, offset)
            await self._copy_body(response, desc, sink, pending, progress)

    async def _copy_body(
        self,
        response: httpx.Response,
        desc: Descriptor,
        sink: BlobSink,
        pending: bytearray,
        progress: ProgressFn | None,
    ) -> None:
        """Stream the body into ``sink`` in large writes, never past the descriptor's size.

        Raises:
            DigestMismatchError: the body holds more bytes than the descriptor's size.
            RegistryTransportError: the body failed while streaming.
        """
        encoded = response.headers.get("content-encoding", "identity") != "identity"
        with translate_errors(f"GET {redact_url(response.url)}"):
            async for chunk in response.aiter_bytes() if encoded else response.aiter_raw():
                if len(chunk) > desc.size - sink.written - len(pending):
                    raise DigestMismatchError(
                        f"size {desc.size}",
                        "more bytes than the descriptor's size",
                        what=f"blob {desc.digest}",
                    )
                pending += chunk
                if len(pending) >= self.settings.read_chunk_size:
                    await self._flush(pending, sink, desc, progress)
        await self._flush(pending, sink, desc, progress)

    @staticmethod
    async def _flush(
        pending: bytearray, sink: BlobSink, desc: Descriptor, progress: ProgressFn | None
    ) -> None:
        """Hand the bytes received so far to the sink in one large write (few thread hops)."""
        if pending:
            await sink.write(bytes(pending))
            pending.clear()
            if progress is not None:
                progress(desc, sink.written)

    @staticmethod
    async def _check_blob_response(
        response: httpx.Response, desc: Descriptor, sink: BlobSink, offset: int
    ) -> None:
        """Accept a ranged answer only if it starts at ``offset``; otherwise restart from zero."""
        if offset:
            content_range = response.headers.get("content-range", "")
            if response.status_code == 206 and content_range.startswith(f"bytes {offset}-"):
                return
            log.info("registry.range_not_honoured", status=response.status_code)
            await sink.reset()
            if response.status_code == 206:
                raise RegistryTransportError(
                    f"range answer {content_range!r} does not start at byte {offset}"
                )
        length = response.headers.get("content-length")
        too_long = length is not None and length.isdigit() and int(length) > desc.size
        if response.status_code == 200 and too_long:
            raise DigestMismatchError(
                f"size {desc.size}", f"Content-Length {length}", what=f"blob {desc.digest}"
            )

    async def pull(
        self,
        ref: ImageReference,
        sink_for: Callable[[Descriptor], Awaitable[BlobSink | None]],
        *,
        platform: Platform | None = None,
        creds: Credentials | None = None,
        progress: ProgressFn | None = None,
        resolved: ResolvedImage | None = None,
    ) -> ResolvedImage:
        """Resolve ``ref`` and download every layer into the sink ``sink_for`` returns.

        ``sink_for`` returns None for a blob that is already present (it is then skipped). Layers
        download concurrently, at most ``max_concurrent_downloads`` at a time.
        """
        image = resolved or await self.resolve_image(ref, platform, creds)

        async def one(layer: Descriptor) -> None:
            sink = await sink_for(layer)
            if sink is not None:
                await self.fetch_blob(ref, layer, sink, creds, progress)

        await for_each_layer(image.manifest.layers, self.settings.max_concurrent_downloads, one)
        return image


async def for_each_layer(
    layers: Sequence[Descriptor], limit: int, fn: Callable[[Descriptor], Awaitable[None]]
) -> None:
    """Run ``fn`` on each distinct layer, at most ``limit`` at once (containerd's
    ``MaxConcurrentDownloads``); the first failure cancels the rest and is raised as itself."""
    limiter = anyio.CapacityLimiter(limit)

    async def one(layer: Descriptor) -> None:
        async with limiter:
            await fn(layer)

    seen: set[Digest] = set()
    try:
        async with anyio.create_task_group() as tg:
            for layer in layers:
                if layer.digest not in seen:
                    seen.add(layer.digest)
                    tg.start_soon(one, layer)
    except* Exception as group:
        raise first_error(group) from None


def _rank(exc: RegistryError) -> int:
    """containerd's error priority across hosts: transport < not found < other."""
    if isinstance(exc, RegistryTransportError):
        return 1
    if isinstance(exc, RegistryNotFoundError):
        return 2
    return 3


def _sniff_media_type(raw: bytes) -> str:
    try:
        return parse_manifest(raw, None, Digest.from_bytes(raw)).media_type
    except RegistryError:
        return ""
