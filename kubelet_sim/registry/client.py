"""The OCI pull path: resolve a reference, pick a platform, stream verified blobs.

Models containerd's resolver and fetcher (``core/remotes/docker/resolver.go``, ``fetcher.go``,
``httpreadseeker.go``): a tag is resolved once with ``HEAD`` (trusting ``Docker-Content-Digest`` only
when ``Content-Length`` is present, else ``GET`` and hash), and everything after that is fetched by
digest. Manifests and the config are size-capped, read whole within the request deadline and
verified; layers stream into a :class:`~kubelet_sim.core.sinks.BlobSink` with bounded memory, stop at
the descriptor's size, resume with closed ``Range`` requests and are verified by the sink before it
commits. A layer with ``urls`` (a foreign / non-distributable layer) is fetched from those first.

Hosts (hosts.toml mirrors, then the upstream) are tried in order; only the last one retries
transient failures, so a mirror that refuses or fails is left at once. When every host fails, the
most useful error is raised: containerd's priority (transport < not found < any other answer), the
first one of the highest priority.

The platform walk is ``core/images/image.go: Manifest``: index children without ``platform`` sort
last, the best child is followed (a nested index too), and a chosen manifest without ``platform``
is accepted only if its config's platform matches.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import anyio
import httpx
import structlog

from kubelet_sim.core.credentials import Credentials
from kubelet_sim.core.digest import Digest
from kubelet_sim.core.platforms import (
    Platform,
    host_platform,
    node_matcher,
    normalize,
    select_manifest,
)
from kubelet_sim.core.reference import ImageReference
from kubelet_sim.core.sinks import BlobSink
from kubelet_sim.core.trace import CURRENT, HostTry
from kubelet_sim.errors import (
    BlobNotFoundError,
    DigestMismatchError,
    InvalidDigestError,
    ManifestError,
    NoMatchingPlatformError,
    PlatformError,
    RegistryAuthError,
    RegistryError,
    RegistryNotFoundError,
    RegistryTransportError,
    first_error,
)
from kubelet_sim.registry import mediatypes as mt
from kubelet_sim.registry.auth import scope_for
from kubelet_sim.registry.hosts import RegistryHost, hosts_for, registry_hosts
from kubelet_sim.registry.layers import HostCall, LayerStreamer, ProgressFn, Target
from kubelet_sim.registry.manifests import (
    Descriptor,
    ImageIndex,
    ImageManifest,
    clean_media_type,
    parse_manifest,
    verify_content,
)
from kubelet_sim.registry.transport import RETRYABLE_STATUS, Transport

log = structlog.get_logger(__name__)

T = TypeVar("T")


MAX_INDEX_DEPTH = 4
MAX_CONFIG_SIZE = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolvedManifest:
    """A reference resolved down to one platform's manifest, before its config is fetched.

    ``config`` is there when choosing the manifest needed it (an index entry without a platform
    runs only if its config's does); otherwise the config is fetched beside the layers, as
    containerd fetches a manifest's children (:meth:`RegistryClient.image_config`).
    """

    reference: ImageReference
    descriptor: Descriptor
    manifest_descriptor: Descriptor
    manifest: ImageManifest
    platform: Platform | None
    index: ImageIndex | None = None
    config: bytes | None = field(default=None, repr=False)

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

    def with_config(self, config: bytes) -> ResolvedImage:
        """The whole resolution, with the manifest's (verified) config."""
        return ResolvedImage(
            reference=self.reference,
            descriptor=self.descriptor,
            manifest_descriptor=self.manifest_descriptor,
            manifest=self.manifest,
            platform=self.platform,
            index=self.index,
            config=config,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolvedImage(ResolvedManifest):
    """A reference resolved down to one platform's manifest and config."""

    config: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class HostOutcome:
    """One host tried for one request: for what (``resolve``, ``manifest``, ``config``,
    ``layer``), which host, whether credentials went with it, how long it took, and the error
    (None: it answered)."""

    what: str
    host: RegistryHost
    upstream: bool
    with_credentials: bool
    seconds: float
    error: RegistryError | None


HostObserver = Callable[[HostOutcome], None]


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """Pull-path settings; the defaults are containerd's."""

    max_concurrent_downloads: int = 3
    max_manifest_size: int = mt.MAX_MANIFEST_SIZE


class RegistryClient:
    """Async OCI distribution client for pulls (push lives in :mod:`kubelet_sim.registry.push`)."""

    def __init__(
        self,
        transport: Transport | None = None,
        *,
        hosts_dir: Path | None = None,
        settings: ClientSettings | None = None,
        observer: HostObserver | None = None,
    ) -> None:
        self.transport = transport or Transport()
        self.hosts_dir = hosts_dir
        self.settings = settings or ClientSettings()
        self.observer = observer
        """Told of every host tried, its outcome and how long it took (``explain image``)."""
        self._layers = LayerStreamer(self.transport)

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
        call: HostCall[T],
        *,
        what: str = "",
    ) -> T:
        """Run ``call`` on each host in turn until one succeeds (containerd's host fallback).

        Upstream credentials go to the upstream host only; mirrors get ``ns=<registry>``. Only the
        last host retries. When all fail, the first error of the highest :func:`_rank` is raised.
        """
        all_hosts = registry_hosts(ref.domain, self.hosts_dir)
        upstream = all_hosts[-1].host if all_hosts else ""
        candidates = hosts_for(capability, all_hosts)
        if not candidates:
            raise RegistryError(f"no host for {ref.domain} has the {capability!r} capability")
        best: RegistryError | None = None
        for host in candidates:
            is_upstream = host.host == upstream
            target = Target(
                host,
                creds if is_upstream else None,
                {} if is_upstream else {"ns": ref.domain},
                last=host is candidates[-1],
            )
            started = anyio.current_time()
            trace = CURRENT.get()
            key = trace.trying(what, host.host, started) if trace is not None else None
            try:
                result = await call(target)
            except ManifestError as exc:
                self._observe(what, target, is_upstream, started, exc, key)
                raise
            except RegistryError as exc:
                self._observe(what, target, is_upstream, started, exc, key)
                if best is None or _rank(exc) > _rank(best):
                    best = exc
                if not target.last:
                    log.info("registry.next_host", host=host.host, error=str(exc))
            else:
                self._observe(what, target, is_upstream, started, None, key)
                return result
        assert best is not None
        raise best

    def _observe(
        self,
        what: str,
        target: Target,
        upstream: bool,
        started: float,
        error: RegistryError | None,
        key: int | None,
    ) -> None:
        seconds = anyio.current_time() - started
        with_creds = target.creds is not None
        if self.observer is not None:
            self.observer(HostOutcome(what, target.host, upstream, with_creds, seconds, error))
        trace = CURRENT.get()
        if trace is not None and key is not None:
            trace.tried(
                HostTry(
                    what,
                    target.host.host,
                    "upstream" if upstream else "mirror",
                    with_creds,
                    seconds,
                    error.status if error is not None else None,
                    error.message if error is not None else "",
                ),
                key,
            )

    async def blob_size(
        self, ref: ImageReference, desc: Descriptor, creds: Credentials | None = None
    ) -> int:
        """``HEAD`` a blob: its size as the registry answers it (a preflight's check that a
        layer is there, without fetching it).

        Raises:
            BlobNotFoundError: the registry does not have it.
        """
        scope = scope_for(ref.repository, ("pull",))
        path = f"/{ref.repository}/blobs/{desc.digest}"

        async def on_host(target: Target) -> int:
            async with self.transport.open(
                "HEAD",
                target.host,
                path,
                scope=scope,
                creds=target.creds,
                params=target.params,
                last_host=target.last,
            ) as response:
                length = response.headers.get("content-length", "")
                return int(length) if length.isascii() and length.isdigit() else desc.size

        try:
            return await self._on_hosts(ref, "pull", creds, on_host, what="layer")
        except RegistryNotFoundError as exc:
            raise _blob_not_found(desc, exc) from exc

    async def resolve(self, ref: ImageReference, creds: Credentials | None = None) -> Descriptor:
        """Resolve ``ref`` to the descriptor of its manifest or index."""
        scope = scope_for(ref.repository, ("pull",))
        path = f"/{ref.repository}/manifests/{ref.identifier}"

        async def on_host(target: Target) -> Descriptor:
            try:
                async with self.transport.open(
                    "HEAD",
                    target.host,
                    path,
                    scope=scope,
                    creds=target.creds,
                    headers={"Accept": mt.ACCEPT_HEADER},
                    params=target.params,
                    last_host=target.last,
                ) as response:
                    desc = self._descriptor_from_head(ref, response)
                if desc is not None:
                    return desc
            except (RegistryAuthError, RegistryTransportError, ManifestError):
                raise  # no answer, no access or too large: a GET would only say so again
            except RegistryError as exc:
                if exc.status in RETRYABLE_STATUS:
                    raise  # retried already (on the last host); the status says it all
                # HEAD answers have no body: GET to surface the error document (containerd).
                log.debug("registry.head_failed", error=str(exc))
            raw, content_type = await self._get_manifest(target, path, scope)
            expected = ref.digest or Digest.from_bytes(raw)
            verify_content(raw, expected, what=f"manifest {ref}")
            media_type = clean_media_type(content_type) or _sniff_media_type(raw)
            return Descriptor(media_type=media_type, digest=expected, size=len(raw))

        return await self._on_hosts(ref, "resolve", creds, on_host, what="resolve")

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

    async def _get_manifest(self, target: Target, path: str, scope: str) -> tuple[bytes, str]:
        """GET a manifest whole (headers and body within the request deadline), size-capped."""
        answer = await self.transport.read(
            "GET",
            target.host,
            path,
            scope=scope,
            limit=self.settings.max_manifest_size,
            what=f"manifest {path}",
            error=ManifestError,
            creds=target.creds,
            headers={"Accept": mt.ACCEPT_HEADER},
            params=target.params,
            last_host=target.last,
        )
        return answer.body, answer.content_type

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

        async def on_host(target: Target) -> tuple[bytes, str]:
            return await self._get_manifest(target, path, scope)

        if desc.data is not None and len(desc.data) == desc.size:
            raw, content_type = desc.data, desc.media_type
        else:
            raw, content_type = await self._on_hosts(ref, "pull", creds, on_host, what="manifest")
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
        resolved = await self.resolve_manifest(ref, platform, creds)
        return resolved.with_config(await self.image_config(resolved, creds))

    async def resolve_manifest(
        self,
        ref: ImageReference,
        platform: Platform | None = None,
        creds: Credentials | None = None,
    ) -> ResolvedManifest:
        """Resolve ``ref`` for ``platform`` (default: this host's) down to one manifest; its
        config is fetched only when an index entry without a platform makes it decide.

        Raises:
            NoMatchingPlatformError: the index offers no manifest for the platform.
        """
        wanted = platform or host_platform()
        matcher = node_matcher(wanted)
        top = await self.resolve(ref, creds)
        current = top
        parsed = await self.fetch_manifest(ref, top, creds)
        first_index = parsed if isinstance(parsed, ImageIndex) else None
        depth = 0
        while isinstance(parsed, ImageIndex):
            depth += 1
            if depth > MAX_INDEX_DEPTH:
                raise ManifestError(f"index {top.digest}: nested deeper than {MAX_INDEX_DEPTH}")
            # Children of unknown media types are never chosen (image-spec: not an error).
            children = [d for d in parsed.manifests if d.is_manifest or d.is_index]
            index = select_manifest(matcher, [d.platform for d in children])
            current = children[index]
            log.debug(
                "platform_selected",
                image=str(ref),
                wanted=str(wanted),
                chosen=str(current.platform),
                index=index,
            )
            parsed = await self.fetch_manifest(ref, current, creds)
        config = None
        if first_index is not None and current.platform is None:
            # image.go: a child manifest without platform runs only if its config's does.
            config = await self._fetch_config(ref, parsed.config, creds)
            declared = _config_platform(config, parsed.config.digest)
            if not matcher.match(declared):
                raise NoMatchingPlatformError(str(wanted), [str(declared)])
        return ResolvedManifest(
            reference=ref,
            descriptor=top,
            manifest_descriptor=current,
            manifest=parsed,
            platform=current.platform,
            index=first_index,
            config=config,
        )

    async def image_config(self, resolved: ResolvedManifest, creds: Credentials | None) -> bytes:
        """The resolved manifest's config, verified: the copy resolving it read, if any."""
        if resolved.config is not None:
            return resolved.config
        return await self._fetch_config(resolved.reference, resolved.manifest.config, creds)

    async def _fetch_config(
        self, ref: ImageReference, desc: Descriptor, creds: Credentials | None
    ) -> bytes:
        """The image config, read whole within the request deadline and verified."""
        if desc.size > MAX_CONFIG_SIZE:
            raise ManifestError(f"config {desc.digest} is larger than {MAX_CONFIG_SIZE}")
        if desc.data is not None and len(desc.data) == desc.size:
            raw = desc.data
        else:
            scope = scope_for(ref.repository, ("pull",))
            path = f"/{ref.repository}/blobs/{desc.digest}"

            async def on_host(target: Target) -> bytes:
                answer = await self.transport.read(
                    "GET",
                    target.host,
                    path,
                    scope=scope,
                    limit=desc.size,
                    what=f"config {desc.digest}",
                    error=RegistryError,
                    creds=target.creds,
                    # A blob is addressed by the digest of its stored bytes: no re-encoding.
                    headers={"Accept": f"{desc.media_type}, */*", "Accept-Encoding": "identity"},
                    params=target.params,
                    last_host=target.last,
                )
                return answer.body

            try:
                raw = await self._on_hosts(ref, "pull", creds, on_host, what="config")
            except RegistryNotFoundError as exc:
                raise _blob_not_found(desc, exc) from exc
        if len(raw) != desc.size:
            raise DigestMismatchError(
                f"size {desc.size}", f"size {len(raw)}", what=f"config {desc.digest}"
            )
        verify_content(raw, desc.digest, what=f"config {desc.digest}")
        return raw

    async def fetch_blob(
        self,
        ref: ImageReference,
        desc: Descriptor,
        sink: BlobSink,
        creds: Credentials | None = None,
        progress: ProgressFn | None = None,
        *,
        before_commit: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Stream the layer ``desc`` into ``sink`` and commit it once size and digest check out
        (after awaiting ``before_commit``, when given).

        The layer's ``urls`` (http/https) are tried first, without credentials; a 404 there moves
        to the next one, any other failure fails the fetch (containerd ``fetcher.go``). Then the
        registry hosts. Resumes an interrupted download with a closed ``Range`` request,
        accepting only a ``206`` whose ``Content-Range`` starts at the offset; anything else
        restarts from zero. Three failures in a row without progress give up (one on a mirror).
        The sink is aborted on every failure.
        """
        try:
            if desc.data is not None and len(desc.data) == desc.size:
                await sink.write(desc.data)
            elif desc.size > 0 and not await self._layers.fetch_foreign(desc, sink, progress):
                scope = scope_for(ref.repository, ("pull",))
                path = f"/{ref.repository}/blobs/{desc.digest}"
                try:
                    await self._on_hosts(
                        ref,
                        "pull",
                        creds,
                        lambda target: self._layers.stream(
                            target, path, scope, desc, sink, progress
                        ),
                        what="layer",
                    )
                except RegistryNotFoundError as exc:
                    raise _blob_not_found(desc, exc) from exc
            if before_commit is not None:
                await before_commit()
            await sink.commit(desc.digest, desc.size)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await sink.abort()
            raise

    async def pull(
        self,
        ref: ImageReference,
        sink_for: Callable[[Descriptor], Awaitable[BlobSink | None]],
        *,
        platform: Platform | None = None,
        creds: Credentials | None = None,
        progress: ProgressFn | None = None,
        resolved: ResolvedManifest | None = None,
    ) -> ResolvedImage:
        """Resolve ``ref``, then fetch its config and download every layer into the sink
        ``sink_for`` returns.

        ``sink_for`` returns None for a blob that is already present (it is then skipped). The
        config and the layers are fetched concurrently, at most ``max_concurrent_downloads`` at
        a time (:func:`for_each_child`).
        """
        head = resolved or await self.resolve_manifest(ref, platform, creds)
        config = b""

        async def fetch_config(desc: Descriptor) -> None:
            nonlocal config
            config = await self.image_config(head, creds)

        async def one(layer: Descriptor) -> None:
            sink = await sink_for(layer)
            if sink is not None:
                await self.fetch_blob(ref, layer, sink, creds, progress)

        limit = self.settings.max_concurrent_downloads
        await for_each_child(head.manifest, limit, fetch_config, one)
        return head if isinstance(head, ResolvedImage) else head.with_config(config)


async def for_each_child(
    manifest: ImageManifest,
    limit: int,
    config: Callable[[Descriptor], Awaitable[None]],
    layer: Callable[[Descriptor], Awaitable[None]],
) -> None:
    """Run ``config`` on the manifest's config and ``layer`` on each distinct layer, concurrently
    and at most ``limit`` at once, the config first.

    containerd fetches a manifest's children (``images.Children``: the config, then the layers)
    side by side under one ``MaxConcurrentDownloads`` limiter (``images.Dispatch``), so the
    config costs no round trip of its own before the layers start.
    """
    calls: list[tuple[Callable[[Descriptor], Awaitable[None]], Descriptor]] = [
        (config, manifest.config)
    ]
    seen: set[Digest] = set()
    for desc in manifest.layers:
        if desc.digest not in seen:
            seen.add(desc.digest)
            calls.append((layer, desc))
    await run_limited(calls, limit)


async def run_limited(
    calls: Sequence[tuple[Callable[[Descriptor], Awaitable[None]], Descriptor]], limit: int
) -> None:
    """Run each ``fn(desc)`` of ``calls`` concurrently, at most ``limit`` at once, each taking
    its place in the order given (containerd's ``Dispatch`` acquires the limiter before it
    starts each child, whatever order a scheduler would run them in); the first failure
    cancels the rest and is raised as itself."""
    places = anyio.Semaphore(limit)

    async def one(fn: Callable[[Descriptor], Awaitable[None]], desc: Descriptor) -> None:
        try:
            await fn(desc)
        finally:
            places.release()

    failure: BaseException | None = None
    try:
        async with anyio.create_task_group() as tg:
            for fn, desc in calls:
                await places.acquire()
                tg.start_soon(one, fn, desc)
    except* Exception as group:
        # Raised after the handler, not in it: Python before 3.11.4 (Debian 12's 3.11.2) wraps
        # an exception raised inside ``except*`` in a new group.
        failure = first_error(group)
    if failure is not None:
        raise failure from None


def _config_platform(config: bytes, digest: Digest) -> Platform:
    """The normalised platform an image config declares (containerd ``images.ConfigPlatform``).

    Raises:
        ManifestError: the config is not a JSON object with string platform fields.
    """
    try:
        doc = json.loads(config)
    except (ValueError, RecursionError) as exc:
        raise ManifestError(f"config {digest} is not valid JSON") from exc
    if not isinstance(doc, dict):
        raise ManifestError(f"config {digest} is not a JSON object")
    try:
        declared = Platform.from_oci(doc)
    except PlatformError as exc:
        raise ManifestError(f"config {digest}: {exc}") from exc
    assert declared is not None
    return normalize(declared)


def _rank(exc: RegistryError) -> int:
    """containerd's error priority across hosts (``resolver.go``): transport < not found < other."""
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


def _blob_not_found(desc: Descriptor, exc: RegistryNotFoundError) -> BlobNotFoundError:
    """containerd's words for a listed blob that no host serves (``remotes/docker/fetcher.go``)."""
    return BlobNotFoundError(
        f"could not fetch content descriptor {desc.digest} ({desc.media_type}) "
        f"from remote: not found: {exc.message}",
        code=exc.code,
        status=exc.status,
    )
