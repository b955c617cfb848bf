"""The container runtime's image service: CRI ``PullImage``/``ImageStatus`` over registry and store.

This is what containerd does below the kubelet: resolve the reference for the node's platform,
download the blobs the store does not have (once per digest however many pulls want it), and record
the image in one transaction so it is present only when whole. Identical pulls in flight at the same
time (same image, runtime handler and credentials) share one registry pull and its result
(:class:`~kubelet_sim.core.singleflight.SingleFlight`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import partial

import structlog

from kubelet_sim.core.credentials import Credentials
from kubelet_sim.core.digest import Digest
from kubelet_sim.core.platforms import Platform, host_platform
from kubelet_sim.core.pods import PulledImage
from kubelet_sim.core.reference import ImageReference
from kubelet_sim.core.singleflight import SingleFlight
from kubelet_sim.core.sinks import BlobSink
from kubelet_sim.engine.ports import ProgressFn, ResolvedHook
from kubelet_sim.errors import PlatformError, RegistryError
from kubelet_sim.registry.client import RegistryClient, ResolvedImage, for_each_layer
from kubelet_sim.registry.manifests import Descriptor
from kubelet_sim.store import ImageRecord, Store

log = structlog.get_logger(__name__)

DedupKey = tuple[str, str, str]
"""(image reference, runtime handler, credential fingerprint)."""


class ImageService:
    """Pulls images into a store through a registry client, for one node (one platform)."""

    def __init__(
        self,
        client: RegistryClient,
        store: Store,
        *,
        platform: Platform | None = None,
        bytes_observer: Callable[[int], None] | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.platform = platform or host_platform()
        self._bytes_observer = bytes_observer
        self._pulls: SingleFlight[DedupKey, PulledImage] = SingleFlight()
        self.registry_pulls = 0

    @property
    def shared_pulls(self) -> int:
        """Pulls that waited for an identical one in flight instead of pulling themselves."""
        return self._pulls.statistics().joined

    async def image_status(self, image: str, runtime_handler: str = "") -> ImageRecord | None:
        """CRI ``ImageStatus``: the present image ``image`` names, or None."""
        return await self.store.lookup(image, runtime_handler)

    async def mark_in_use(self, image_id: str, runtime_handler: str = "") -> None:
        """A (simulated) container now runs ``image_id``: GC must not remove it."""
        await self.store.mark_in_use(image_id, runtime_handler)

    def release(self, image_id: str, runtime_handler: str = "") -> None:
        self.store.release(image_id, runtime_handler)

    async def pull_image(
        self,
        ref: ImageReference,
        *,
        runtime_handler: str = "",
        credentials: Sequence[Credentials] = (),
        progress: ProgressFn | None = None,
        on_resolved: ResolvedHook | None = None,
    ) -> PulledImage:
        """CRI ``PullImage`` with the kubelet's credential loop (``pkg/kubelet/images/puller.go``).

        Each matching credential is tried in turn until one works; with none, the pull is anonymous.
        Once credentials matched and all failed there is no anonymous fall-back.
        """
        if not credentials:
            return await self._pull_shared(ref, runtime_handler, None, progress, on_resolved)
        last: RegistryError | None = None
        for creds in credentials:
            try:
                return await self._pull_shared(ref, runtime_handler, creds, progress, on_resolved)
            except RegistryError as exc:
                # Upstream tries the next credential whatever the error: a registry may answer
                # 404/NAME_UNKNOWN instead of 401 to a login without access.
                last = exc
                log.info("pull.credential_failed", image=str(ref), status=exc.status, code=exc.code)
        assert last is not None
        raise last

    async def _pull_shared(
        self,
        ref: ImageReference,
        runtime_handler: str,
        creds: Credentials | None,
        progress: ProgressFn | None,
        on_resolved: ResolvedHook | None,
    ) -> PulledImage:
        key: DedupKey = (str(ref), runtime_handler, creds.fingerprint() if creds else "")
        pull = partial(self._pull, ref, runtime_handler, creds, progress, on_resolved)
        outcome = await self._pulls.run_shared(key, pull)
        pulled = outcome.value
        if outcome.shared and on_resolved is not None:
            # The same credentials, maybe another pod's secret: record this pod's access too.
            await on_resolved(pulled.image_ref, pulled.credential_fingerprint)
        return pulled

    async def _pull(
        self,
        ref: ImageReference,
        runtime_handler: str,
        creds: Credentials | None,
        progress: ProgressFn | None,
        on_resolved: ResolvedHook | None = None,
    ) -> PulledImage:
        self.registry_pulls += 1
        downloaded = 0
        async with self.store.lease():
            resolved = await self.client.resolve_image(ref, self.platform, creds)
            if on_resolved is not None:
                # Resolving with these credentials proved access: record it before the image
                # can be present, so it is never present without a record (no "preloaded" gap).
                await on_resolved(str(resolved.image_id), creds.fingerprint() if creds else "")
            extra: list[Digest] = []
            if resolved.index is not None:
                await self.store.put_blob(resolved.index.raw, resolved.index.digest)
                extra.append(resolved.index.digest)
            await self.store.put_blob(resolved.manifest.raw, resolved.manifest.digest)
            await self.store.put_blob(resolved.config, resolved.manifest.config.digest)

            async def one(layer: Descriptor) -> None:
                nonlocal downloaded

                async def fetch(sink: BlobSink) -> None:
                    nonlocal downloaded

                    def on_progress(desc: Descriptor, received: int) -> None:
                        if progress is not None:
                            progress(str(ref), desc, received)

                    await self.client.fetch_blob(ref, layer, sink, creds, on_progress)
                    downloaded += layer.size
                    if self._bytes_observer is not None:
                        self._bytes_observer(layer.size)

                await self.store.ensure_blob(layer.digest, layer.size, fetch)

            limit = self.client.settings.max_concurrent_downloads
            await for_each_layer(resolved.manifest.layers, limit, one)
            record = await self.store.commit_image(
                resolved.manifest.digest,
                resolved.manifest.config.digest,
                resolved.manifest.layers,
                repo_tag=f"{ref.name}:{ref.tag}" if ref.tag else None,
                repo_digest=resolved.repo_digest,
                platform=_platform_string(resolved, self.platform),
                runtime_handler=runtime_handler,
                extra_blobs=extra,
            )
        return PulledImage(
            image_ref=record.image_id,
            repo_digest=resolved.repo_digest,
            manifest_digest=str(resolved.manifest.digest),
            platform=record.platform,
            size=record.size,
            bytes_downloaded=downloaded,
            credential_fingerprint=creds.fingerprint() if creds else "",
            layers=tuple(str(layer.digest) for layer in resolved.manifest.layers),
        )


def _platform_string(resolved: ResolvedImage, wanted: Platform) -> str:
    """The chosen index entry's platform, else the one the image config declares."""
    if resolved.platform is not None:
        return str(resolved.platform)
    try:
        doc = json.loads(resolved.config)
        declared = Platform.from_oci(doc) if isinstance(doc, dict) else None
    except (ValueError, PlatformError):
        declared = None
    return str(declared or wanted)
