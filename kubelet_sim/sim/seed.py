"""Push synthetic images (:mod:`kubelet_sim.sim.images`) through the project's own push client."""

from __future__ import annotations

from kubelet_sim.core.credentials import Credentials
from kubelet_sim.core.reference import ImageReference, parse_normalized
from kubelet_sim.registry.client import RegistryClient
from kubelet_sim.registry.push import Pusher
from kubelet_sim.sim.images import Blob, Image, Index, all_blobs


async def push_image(
    client: RegistryClient,
    ref: str | ImageReference,
    image: Image,
    *,
    creds: Credentials | None = None,
    tag: bool = True,
) -> Pusher:
    """Push one single-platform image (blobs, then manifest under the tag or by digest)."""
    reference = parse_normalized(ref) if isinstance(ref, str) else ref
    pusher = Pusher(client, reference, creds)
    for blob in image.blobs():
        await pusher.push_blob(blob.data, blob.digest, blob.size)
    await _put(pusher, reference, image.manifest, tag)
    return pusher


async def push_index(
    client: RegistryClient,
    ref: str | ImageReference,
    index: Index,
    *,
    creds: Credentials | None = None,
) -> Pusher:
    """Push a multi-platform image: every blob, every child manifest by digest, the index by tag."""
    reference = parse_normalized(ref) if isinstance(ref, str) else ref
    pusher = Pusher(client, reference, creds)
    for blob in all_blobs(index):
        await pusher.push_blob(blob.data, blob.digest, blob.size)
    for image in index.images:
        await pusher.push_manifest(
            image.manifest.data, image.manifest.media_type, str(image.manifest.digest)
        )
    for extra in index.extra_manifests:
        await pusher.push_manifest(extra.data, extra.media_type, str(extra.digest))
    await _put(pusher, reference, index.index, True)
    return pusher


async def _put(pusher: Pusher, ref: ImageReference, manifest: Blob, tag: bool) -> None:
    target = ref.tag if tag and ref.tag else str(manifest.digest)
    await pusher.push_manifest(manifest.data, manifest.media_type, target)
