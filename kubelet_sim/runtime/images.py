"""The container runtime's image service: CRI ``PullImage``/``ImageStatus`` over registry and store.

This is what containerd does below the kubelet: resolve the reference for the node's platform,
download the blobs the store does not have (once per digest however many pulls want it), and record
the image in one transaction so it is present only when whole. Identical pulls in flight at the same
time (same image, runtime handler and credentials) share one registry pull and its result
(:class:`~kubelet_sim.core.singleflight.SingleFlight`).

As containerd's CRI ``PullImage``:

- the reference is normalised with ``ParseDockerRef``: in ``name:tag@digest`` the digest wins and
  the tag is dropped, so such a pull records the repo digest only, never the tag;
- the registry is asked what the reference points to (a ``HEAD``), and the manifests and config
  of that digest come from the store when it has them (``Always`` with the image present costs
  one request); layers already committed are never fetched, and a layer an earlier attempt or
  process left half-downloaded is resumed with a ``Range`` request;
- the config is fetched beside the layers, first of the manifest's children and under the same
  limit (``max_concurrent_downloads``), as containerd's ``images.Dispatch`` fetches them; a
  layer commits only once the config shows an image to run (a pull that shares another's
  download of a layer waits for that pull's config too);
- what is not a container image (an OCI artifact: a config of another media type, an
  ``artifactType``, a rootfs that does not list the layers) is refused, what the manifest shows
  before anything is fetched, what only the config shows before any layer is stored, and the
  partial downloads of its layers are removed (containerd fails to unpack it: ``mismatched
  image rootfs and manifest layers``).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from functools import partial
from typing import Generic

import anyio
import structlog

from kubelet_sim.core.credentials import Credentials
from kubelet_sim.core.platforms import Platform, host_platform
from kubelet_sim.core.pods import PulledImage
from kubelet_sim.core.reference import ImageReference, parse_docker_ref
from kubelet_sim.core.singleflight import SingleFlight
from kubelet_sim.core.sinks import BlobSink
from kubelet_sim.core.trace import CURRENT, PullTrace, Step
from kubelet_sim.engine.manager import cri_error_message
from kubelet_sim.engine.ports import ProgressFn, ResolvedHook
from kubelet_sim.errors import (
    BlobCorruptError,
    NotAnImageError,
    PlatformError,
    PullError,
    PullReason,
    RegistryError,
    StoreError,
)
from kubelet_sim.registry import mediatypes as mt
from kubelet_sim.registry.client import RegistryClient, ResolvedImage, for_each_child
from kubelet_sim.registry.manifests import Descriptor, ImageIndex, ImageManifest
from kubelet_sim.store import ImageRecord, NodeStore, Store

if sys.version_info >= (3, 13):
    from typing import TypeVar
else:  # PEP 696 type-variable defaults (typing_extensions comes with anyio before 3.13)
    from typing_extensions import TypeVar

log = structlog.get_logger(__name__)

StoreT = TypeVar("StoreT", bound=NodeStore, default=Store)
"""The store an :class:`ImageService` pulls into: the durable :class:`Store` unless told
otherwise (``ImageService[NodeStore]`` for a node that may run on a ``MemoryStore``)."""

DedupKey = tuple[str, str, str]
"""(image reference, runtime handler, credential fingerprint)."""


class CredentialsFailedError(PullError):
    """Every matching credential failed; ``errors`` holds each one's typed error, in order.

    The message is the kubelet's (``kuberuntime_image.go: PullImage`` returns
    ``utilerrors.NewAggregate(pullErrs)``): each credential's CRI error text, duplicates dropped,
    as ``[e1, e2]``.
    """

    def __init__(self, message: str, errors: Sequence[RegistryError]) -> None:
        super().__init__(PullReason.ERR_IMAGE_PULL, message)
        self.errors = tuple(errors)


STORED_READ_LIMIT = 16 << 20  # above every manifest and config the client accepts


class StoreFirstClient(RegistryClient):
    """The node's registry client, taking manifests and configs from the store when it has them.

    containerd resolves a reference with the registry and then fetches each descriptor through
    handlers that look in its content store first (``core/remotes/handlers.go``); this view does
    the same for the manifests and the config. Stored content is handed to the client as the
    descriptor's embedded ``data``, so it goes through the client's own size, digest and media
    type checks, exactly as content from the registry does.
    """

    def __init__(self, client: RegistryClient, store: NodeStore) -> None:
        super().__init__(client.transport, hosts_dir=client.hosts_dir, settings=client.settings)
        self._store = store

    async def fetch_manifest(
        self, ref: ImageReference, desc: Descriptor, creds: Credentials | None = None
    ) -> ImageManifest | ImageIndex:
        """The manifest or index ``desc`` names, from the store if there, else the registry; a
        manifest's config descriptor carries the config when the store has that too."""
        parsed = await super().fetch_manifest(ref, await self._stored(desc), creds)
        if isinstance(parsed, ImageManifest):
            config = await self._stored(parsed.config)
            if config is not parsed.config:
                parsed = dataclasses.replace(parsed, config=config)
        return parsed

    async def _stored(self, desc: Descriptor) -> Descriptor:
        """``desc`` with the store's copy of its content as ``data``, or unchanged."""
        if desc.data is not None or desc.size > STORED_READ_LIMIT:
            return desc
        if await self._store.blob_size(desc.digest) != desc.size:
            return desc
        try:
            data = await self._store.read_blob(desc.digest, max_size=STORED_READ_LIMIT)
        except BlobCorruptError:
            log.warning("store.blob_corrupt", digest=str(desc.digest))  # fsck quarantines it
            return desc
        return dataclasses.replace(desc, data=data)


class ImageService(Generic[StoreT]):
    """Pulls images into a store through a registry client, for one node (one platform)."""

    def __init__(
        self,
        client: RegistryClient,
        store: StoreT,
        *,
        platform: Platform | None = None,
        bytes_observer: Callable[[int], None] | None = None,
    ) -> None:
        self.client = client
        self.store: StoreT = store
        self.platform = platform or host_platform()
        self._bytes_observer = bytes_observer
        self._pulls: SingleFlight[DedupKey, PulledImage] = SingleFlight()
        self._leaders: dict[DedupKey, PullTrace] = {}
        """The trace of the pull running for each key (what a pull sharing it reports)."""
        self._resolver: StoreFirstClient | None = None
        self.registry_pulls = 0

    @property
    def resolver(self) -> StoreFirstClient:
        """The client that resolves pulls: the node's, with manifests and configs from the store."""
        if self._resolver is None:
            self._resolver = StoreFirstClient(self.client, self.store)
        return self._resolver

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
        Once credentials matched and all failed there is no anonymous fall-back. ``ref`` is
        normalised first as containerd's ``ParseDockerRef`` does (a digest drops the tag).
        """
        ref = parse_docker_ref(str(ref))
        if not credentials:
            return await self._pull_shared(ref, runtime_handler, None, progress, on_resolved)
        failed: list[RegistryError] = []
        trace = CURRENT.get()
        for number, creds in enumerate(credentials, start=1):
            if trace is not None:
                trace.credential = number
            try:
                return await self._pull_shared(ref, runtime_handler, creds, progress, on_resolved)
            except RegistryError as exc:
                # Upstream tries the next credential whatever the error: a registry may answer
                # 404/NAME_UNKNOWN instead of 401 to a login without access.
                failed.append(exc)
                log.info("pull.credential_failed", image=str(ref), status=exc.status, code=exc.code)
        # utilerrors.NewAggregate: one distinct message reads as itself, several as [e1, e2].
        texts = list(dict.fromkeys(cri_error_message(ref, exc) for exc in failed))
        if len(texts) == 1:
            raise failed[-1]
        raise CredentialsFailedError(f"[{', '.join(texts)}]", failed) from failed[-1]

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

        async def lead() -> PulledImage:
            # Run by the first caller, or by a waiter taking over from a cancelled one: its
            # trace is the pull's own from here on.
            mine = CURRENT.get()
            if mine is not None:
                mine.step, mine.leader = Step.RESOLVING, None
                self._leaders[key] = mine
            try:
                return await pull()
            finally:
                if mine is not None and self._leaders.get(key) is mine:
                    del self._leaders[key]

        trace = CURRENT.get()
        if trace is not None and key in self._pulls:
            # The leader's trace shows its layers and hosts, and whether it is stuck.
            trace.step, trace.leader = Step.SHARING, self._leaders.get(key)
        outcome = await self._pulls.run_shared(key, lead)
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
            head = await self.resolver.resolve_manifest(ref, self.platform, creds)
            check_manifest(head.manifest)
            extra = [head.index.digest] if head.index is not None else []
            trace = CURRENT.get()
            if trace is not None:
                sizes = {str(la.digest): la.size for la in head.manifest.layers}
                trace.downloading(sizes, config=head.config is None)

            # The config is fetched beside the layers, as containerd dispatches a manifest's
            # children. Nothing is stored, and no layer committed, before it shows an image.
            configs: list[bytes] = []
            checked = anyio.Event()
            refused: list[NotAnImageError] = []

            async def config(desc: Descriptor) -> None:
                raw = await self.resolver.image_config(head, creds)
                try:
                    check_config(head.manifest, raw)
                except NotAnImageError as exc:
                    refused.append(exc)
                    raise
                if on_resolved is not None:
                    # Resolving with these credentials proved access: record it before the
                    # image can be present, so it is never present without a record.
                    await on_resolved(str(head.image_id), creds.fingerprint() if creds else "")
                # The verdict before the puts: a layer of the same digest as the config (or as
                # another pull's config) may be the download these puts wait for.
                checked.set()
                if trace is not None:
                    trace.config_checked()
                if head.index is not None:
                    await self.store.put_blob(head.index.raw, head.index.digest)
                await self.store.put_blob(head.manifest.raw, head.manifest.digest)
                await self.store.put_blob(raw, desc.digest)
                configs.append(raw)

            async def one(layer: Descriptor) -> None:
                nonlocal downloaded

                async def fetch(sink: BlobSink) -> None:
                    nonlocal downloaded

                    def on_progress(desc: Descriptor, received: int) -> None:
                        if trace is not None:
                            trace.received(str(desc.digest), received, anyio.current_time())
                        if progress is not None:
                            progress(str(ref), desc, received)

                    resumed_at = sink.written  # what an earlier attempt's ingest already holds
                    await self.client.fetch_blob(
                        ref, layer, sink, creds, on_progress, before_commit=checked.wait
                    )
                    downloaded += layer.size - resumed_at
                    if self._bytes_observer is not None:
                        self._bytes_observer(layer.size - resumed_at)

                await self.store.ensure_blob(
                    layer.digest, layer.size, fetch, resumable=layer.data is None
                )
                if trace is not None:  # fetched, or already in the store
                    trace.received(str(layer.digest), layer.size, anyio.current_time())
                    trace.layer_done()

            limit = self.client.settings.max_concurrent_downloads
            try:
                await for_each_child(head.manifest, limit, config, one)
            except Exception:
                if not refused:
                    raise
                # Nobody will resume a refused image's layers: keep nothing of them, and say
                # why it failed even if a layer failed first.
                try:
                    await self.store.discard_ingests([la.digest for la in head.manifest.layers])
                except StoreError as exc:  # the refusal is the pull's error; expiry cleans up
                    log.warning("store.discard_failed", image=str(ref), error=str(exc))
                raise refused[0] from None
            resolved = head.with_config(configs[0])
            if trace is not None:
                trace.committing()
            record = await self.store.commit_image(
                resolved.manifest.digest,
                resolved.manifest.config.digest,
                resolved.manifest.layers,
                repo_tag=f"{ref.name}:{ref.tag}" if ref.tag and ref.digest is None else None,
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


def check_manifest(manifest: ImageManifest) -> None:
    """Refuse a manifest that says it is not a container image, before anything is fetched.

    containerd unpacks a pulled image's layers into a rootfs from its config's ``diff_ids``; an
    OCI artifact (the empty config ``application/vnd.oci.empty.v1+json``, any other non-image
    config, an ``artifactType``) has no such rootfs and fails with ``mismatched image rootfs and
    manifest layers`` (``client/image.go: getLayers``). What the manifest alone shows is refused
    here, before its config or any layer is downloaded; :func:`check_config` reads the config.

    Raises:
        NotAnImageError: naming the manifest and what makes it an artifact.
    """
    digest = str(manifest.digest)
    if manifest.artifact_type is not None:
        raise NotAnImageError(digest, f"it is an OCI artifact of type {manifest.artifact_type!r}")
    config_type = manifest.config.media_type
    if config_type not in mt.CONFIG_TYPES:
        raise NotAnImageError(digest, f"it is an OCI artifact: config mediaType {config_type!r}")


def check_config(manifest: ImageManifest, config: bytes) -> None:
    """Refuse an image whose config has no rootfs for its layers: not a JSON object, or a count
    of ``rootfs.diff_ids`` other than the manifest's layers (containerd's ``getLayers``).

    Raises:
        NotAnImageError: naming the manifest and the config's problem.
    """
    digest = str(manifest.digest)
    try:
        doc = json.loads(config)
    except (ValueError, RecursionError):
        doc = None
    if not isinstance(doc, dict):
        raise NotAnImageError(digest, f"config {manifest.config.digest} is not a JSON object")
    # An image without layers may say "diff_ids": null, which Go reads as none.
    rootfs = doc.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    count = len(diff_ids) if isinstance(diff_ids, list) else 0
    if count != len(manifest.layers):
        raise NotAnImageError(
            digest,
            f"config {manifest.config.digest} lists {count} rootfs.diff_ids for "
            f"{len(manifest.layers)} layers",
        )


def _platform_string(resolved: ResolvedImage, wanted: Platform) -> str:
    """The chosen index entry's platform, else the one the image config declares."""
    if resolved.platform is not None:
        return str(resolved.platform)
    try:
        doc = json.loads(resolved.config)
        declared = Platform.from_oci(doc) if isinstance(doc, dict) else None
    except (ValueError, RecursionError, PlatformError):
        declared = None
    return str(declared or wanted)
